/**
 * Counters of the native fast path that closes (a client changing carrier or socket) are kept:
 * the totals that status and the metrics serve (drops by reason, agent_fastpath_*, agent_lane_*)
 * never go back when a new fast path starts again from 0. The addon is replaced by a fake whose
 * counts the test sets.
 */
import {describe, expect, it, vi} from 'vitest'
import type {FastPathStats} from '../../src/core/device/fast-path.js'

interface FakeHandle {
  stats: FastPathStats
  closed: boolean
}

const handles: FakeHandle[] = []

vi.mock('../../src/core/native/addon.js', () => ({
  loadAgentNative: () => ({
    fast: {
      create: () => {
        const h: FakeHandle = {stats: stats(0), closed: false}
        handles.push(h)
        return h
      },
      attach: () => {},
      set: () => {},
      setEsp: () => {},
      setStream: () => {},
      remove: () => {},
      take: () => false,
      stats: (h: FakeHandle) => {
        if (h.closed) throw new Error('stats of a closed fast path')
        return structuredClone(h.stats)
      },
      close: (h: FakeHandle) => {
        h.closed = true
      },
      addWorker: () => {},
    },
  }),
}))

const {DataPath} = await import('../../src/core/device/datapath.js')
const {totalsReport} = await import('../../src/core/device/report.js')
const {AgentEvents, AgentMetrics} = await import('../../src/core/metrics/index.js')

function stats(n: number, lanes = 1): FastPathStats {
  const lane = (i: number) => ({txPackets: n + i, rxPackets: n + i, sendDrops: n, tunWriteDrops: n, tunGsoPackets: n, tunGsoSegments: 2 * n, handedOff: n, handoffDrops: n})
  return {sessions: 1, txPackets: 10 * n, rxPackets: 20 * n, sendDrops: n, tunWriteDrops: 2 * n, tunGsoPackets: 3 * n, tunGsoSegments: 6 * n, workers: Array.from({length: lanes}, (_, i) => lane(i))}
}

const tun = {name: 'fake0', start() {}, write: () => true, close() {}, nativeHandle: () => ({})}
const socket = {nativeHandle: () => ({})} as unknown as Parameters<InstanceType<typeof DataPath>['enableFastPath']>[0]

describe('fast path counters across carrier changes', () => {
  it('keeps a closed fast path\'s counts in the totals, drops and metrics', async () => {
    delete process.env.AGENT_FAST_PATH
    const dp = new DataPath(tun, 'client')
    expect(dp.fastPathTotals()).toBeNull()
    dp.enableFastPath(socket, 1400)
    handles[0].stats = stats(5, 2)
    const before = totalsReport(dp).drops
    expect(before).toEqual({'tun-write': 10, send: 5, handoff: 10})

    // The client moves to another socket: the old fast path closes, a new one starts at 0.
    dp.disableFastPath()
    expect(handles[0].closed).toBe(true)
    dp.enableFastPath(socket, 1400)
    expect(handles).toHaveLength(2)
    expect(dp.fastPathStats()?.txPackets).toBe(0)
    handles[1].stats = stats(1)
    const totals = dp.fastPathTotals()!
    expect(totals.sessions).toBe(1)
    expect(totals.txPackets).toBe(60)
    expect(totals.sendDrops).toBe(6)
    expect(totals.workers.map((w) => w.txPackets)).toEqual([5 + 1, 6])
    expect(totalsReport(dp).drops).toEqual({'tun-write': 12, send: 6, handoff: 11})

    // The metrics' counters go on from there too.
    const metrics = new AgentMetrics({role: 'client', transport: 'gre', version: '0', events: new AgentEvents(), datapath: () => dp, extraDrops: () => ({}), sessions: () => 1, rtts: () => [], switches: () => 0}, false)
    const text = await metrics.render()
    expect(text).toMatch(/^agent_drops_total\{reason="send"\} 6$/m)
    expect(text).toMatch(/^agent_fastpath_tx_packets_total 60$/m)
    expect(text).toMatch(/^agent_lane_handoff_drops_total\{lane="1"\} 5$/m)
    expect(text).toMatch(/^agent_fastpath_sessions 1$/m)

    // No fast path now (a stream carrier without one): the counters stay, the sessions gauge goes.
    dp.disableFastPath()
    expect(dp.fastPathTotals()!.txPackets).toBe(60)
    expect(dp.fastPathTotals()!.sessions).toBe(0)
    const after = await metrics.render()
    expect(after).toMatch(/^agent_fastpath_tx_packets_total 60$/m)
    expect(after).not.toMatch(/^agent_fastpath_sessions /m)
    expect(totalsReport(dp).drops).toEqual({'tun-write': 12, send: 6, handoff: 11})
  })
})
