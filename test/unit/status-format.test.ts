import {describe, expect, it} from 'vitest'
import {formatStatus} from '../../src/core/status/collect.js'
import type {PeerReport, StatusReport} from '../../src/core/status/report.js'

const peer = (name: string, address: string, path: PeerReport['path'], drops: Record<string, number> = {}): PeerReport => ({
  name,
  address,
  endpoint: '198.51.100.2:40000',
  connectedAt: new Date(0).toISOString(),
  lastSeen: new Date(Date.now() - 3000).toISOString(),
  rxBytes: 2048,
  txBytes: 0,
  rxPackets: 2,
  txPackets: 0,
  drops,
  path,
})

const node = (peers: PeerReport[], counters: Record<string, number> = {}): StatusReport => ({
  name: 'node1',
  role: 'node',
  pid: 42,
  transport: 'tls',
  interface: 'agtun0',
  address: '10.99.0.1',
  mtu: 1500,
  startedAt: new Date(0).toISOString(),
  endpoint: '0.0.0.0:443',
  state: 'running',
  peers,
  counters,
})

describe('agent status, as text', () => {
  it('lists each peer with the path that carries it and its drops', () => {
    const text = formatStatus([node([peer('alice', '10.99.0.2', 'native'), peer('bob', '10.99.0.3', 'javascript', {source: 5})], {fastPathSessions: 1, noPeer: 0})])
    const lines = text.split('\n').map((l) => l.trim())
    expect(lines[0]).toBe('node node1 (pid 42) running, transport tls')
    // Only counters that moved are shown.
    expect(text).toContain('counters fastPathSessions=1')
    expect(text).not.toContain('noPeer')
    const header = lines.find((l) => l.startsWith('peer'))!
    expect(header.split(/\s{2,}/)).toEqual(['peer', 'tunnel address', 'endpoint', 'received', 'sent', 'last seen', 'path', 'drops'])
    const alice = lines.find((l) => l.startsWith('alice'))!.split(/\s{2,}/)
    const bob = lines.find((l) => l.startsWith('bob'))!.split(/\s{2,}/)
    expect(alice[6]).toBe('native')
    expect(alice[7]).toBe('-')
    expect(bob[6]).toBe('javascript')
    expect(bob[7]).toBe('source=5')
  })

  it('shows each worker of a node and the worker each peer is steered to', () => {
    const lane = (rx: number, tx: number, handedOff = 0, handoffDrops = 0) => ({
      rxPackets: rx,
      txPackets: tx,
      sendDrops: 0,
      tunWriteDrops: 0,
      tunGsoPackets: 0,
      tunGsoSegments: 0,
      handedOff,
      handoffDrops,
    })
    const report = {...node([{...peer('alice', '10.99.0.2', 'native'), worker: 0}, {...peer('bob', '10.99.0.3', 'native'), worker: 1}]), workers: [lane(10, 9), lane(20, 19, 3, 1)]}
    const lines = formatStatus([report]).split('\n').map((l) => l.trim())
    expect(lines).toContain('workers 2 (packets) main: rx 10 tx 9, 1: rx 20 tx 19 handed off 3 dropped 1')
    expect(lines.find((l) => l.startsWith('alice'))!.split(/\s{2,}/)[6]).toBe('native w0')
    expect(lines.find((l) => l.startsWith('bob'))!.split(/\s{2,}/)[6]).toBe('native w1')
  })

  it('shows the totals since start and the events, only the counts that moved', () => {
    const report: StatusReport = {
      ...node([]),
      totals: {rxPackets: 10, rxBytes: 4096, txPackets: 7, txBytes: 700, drops: {authentication: 3, noPeer: 0}},
      events: {handshakes: {ok: 2, refused: 0, failed: 5}, reloads: {}, revocations: 1},
    }
    const lines = formatStatus([report]).split('\n').map((l) => l.trim())
    expect(lines).toContain('since start: received 10 packets (4.0 KiB), sent 7 (700 B); drops authentication=3')
    expect(lines).toContain('handshakes ok=2 failed=5; revocations 1')
    expect(formatStatus([node([])])).not.toContain('since start')
    // Nothing happened yet: no events line at all.
    const quiet = formatStatus([{...node([]), events: {handshakes: {ok: 0}, reloads: {}, revocations: 0}}])
    expect(quiet).not.toMatch(/handshakes|reloads|revocations/)
  })

  it('says when nothing is connected, and when nothing runs', () => {
    expect(formatStatus([node([])])).toContain('no client connected')
    expect(formatStatus([])).toBe('no agent is running')
  })
})
