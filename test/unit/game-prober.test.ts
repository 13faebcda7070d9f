import net from 'node:net'
import {afterEach, describe, expect, it, vi} from 'vitest'
import {GameProber, type GameProberOptions, MAX_EXAMINED, MAX_IN_FLIGHT, MAX_PROBES_PER_SECOND, WINDOW} from '../../src/core/probe/game-prober.js'

// Traffic only on 127.0.0.1. Everything else goes through a fake connect that sends nothing: a
// socket that is never connected, which answers (or fails) only when the test says so.

const BASE: GameProberOptions = {
  method: 'tcp',
  port: 443,
  intervalMs: 2000,
  timeoutMs: 1000,
  maxPerClient: 8,
  maxDestinations: 1024,
  refuse: () => null,
}

type Behaviour = 'silent' | 'refused' | 'EHOSTUNREACH' | 'EMFILE'

/** A connect that records each call and makes the socket behave as `how` says for that call. */
function fakeConnect(how: (n: number, host: string) => Behaviour = () => 'silent') {
  const calls: {host: string; port: number; at: number; socket: net.Socket}[] = []
  const connect = (o: net.TcpNetConnectOpts): net.Socket => {
    const socket = new net.Socket()
    const host = o.host!
    calls.push({host, port: o.port, at: Date.now(), socket})
    const b = how(calls.length - 1, host)
    if (b !== 'silent') socket.destroy(Object.assign(new Error(b), {code: b === 'refused' ? 'ECONNREFUSED' : b}))
    return socket
  }
  return {calls, connect}
}

/** n distinct addresses in 198.18.0.0/15 (never sent to: the connect is fake). */
function addresses(n: number, from = 0): string[] {
  return Array.from({length: n}, (_, i) => from + i).map((k) => `198.${18 + (k >> 16)}.${(k >> 8) & 255}.${k & 255}`)
}

const probers: GameProber[] = []
function prober(o: Partial<GameProberOptions>): GameProber {
  const p = new GameProber({...BASE, ...o})
  probers.push(p)
  return p
}

async function until(cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting')
    await new Promise((r) => setTimeout(r, 5))
  }
}

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)))
}

afterEach(() => {
  for (const p of probers.splice(0)) p.close()
  vi.useRealTimers()
})

describe('GameProber options', () => {
  it('refuses icmp with a clear error, and options out of range', () => {
    expect(() => new GameProber({...BASE, method: 'icmp'})).toThrow(/icmp.*not supported/)
    expect(() => new GameProber({...BASE, method: 'udp' as 'tcp'})).toThrow(/unknown method/)
    expect(() => new GameProber({...BASE, port: 0})).toThrow(/port/)
    expect(() => new GameProber({...BASE, intervalMs: 10})).toThrow(/intervalMs/)
    expect(() => new GameProber({...BASE, timeoutMs: Number.NaN})).toThrow(/timeoutMs/)
    expect(() => new GameProber({...BASE, maxPerClient: 10_000})).toThrow(/maxPerClient/)
    expect(() => new GameProber({...BASE, maxDestinations: 1e9})).toThrow(/maxDestinations/)
  })
})

describe('GameProber.want: what a client may have probed', () => {
  it('accepts dotted-quad unicast the node would forward; refuses the malformed, the denied and the non-unicast, saying why', () => {
    const {connect} = fakeConnect()
    const asked: string[] = []
    const p = prober({connect, refuse: (d) => (asked.push(d), d.startsWith('10.') ? 'egress.deny 10.0.0.0/8' : null)})
    const hostile = [
      '198.51.100.7',
      '',
      '1.2.3',
      '1.2.3.4.5',
      '01.2.3.4',
      '1.2.3.256',
      ' 1.2.3.4',
      '1.2.3.4/32',
      '0x7f.0.0.1',
      '::1',
      'x'.repeat(10_000_000),
      42,
      null,
      {toString: () => '1.2.3.4'},
      ['1.2.3.4'],
      '10.1.2.3',
      '0.0.0.0',
      '224.0.0.1',
      '255.255.255.255',
      '198.51.100.7',
    ] as unknown as string[]
    const r = p.want('alice', hostile)
    expect(r.accepted).toEqual(['198.51.100.7'])
    expect(r.refused).toHaveLength(hostile.length - 1)
    const reasons = Object.fromEntries(r.refused.map((x) => [x.dest, x.reason]))
    expect(reasons['1.2.3']).toBe('not a dotted-quad IPv4 address')
    expect(reasons['(number)']).toBe('not a dotted-quad IPv4 address')
    expect(reasons['(null)']).toBe('not a dotted-quad IPv4 address')
    expect(reasons['10.1.2.3']).toBe('egress.deny 10.0.0.0/8')
    expect(reasons['0.0.0.0']).toBe('not a unicast address')
    expect(reasons['224.0.0.1']).toBe('not a unicast address')
    expect(reasons['255.255.255.255']).toBe('not a unicast address')
    expect(reasons['198.51.100.7']).toBe('listed twice')
    // The huge string is echoed back short; refuse() only ever sees well-formed unicast.
    expect(Math.max(...r.refused.map((x) => x.dest.length))).toBeLessThanOrEqual(41)
    expect(asked).toEqual(['198.51.100.7', '10.1.2.3'])
    expect(p.size).toBe(1)
    // Not a list at all: nothing accepted, no throw.
    expect(p.want('bob', 'nope' as unknown as string[])).toEqual({accepted: [], refused: [{dest: '', reason: 'not a list of destinations'}]})
  })

  it('looks at only the first MAX_EXAMINED entries of a huge list, cheaply', () => {
    const {connect} = fakeConnect()
    const p = prober({connect})
    const list = ['198.51.100.1', ...Array.from({length: 200_000}, (_, i) => `junk${i}`)]
    // Counts the entries want() reads: its cost is bounded by what it reads, not by a clock.
    let read = 0
    const counted = new Proxy(list, {get: (t, k, r) => (typeof k === 'string' && /^\d+$/.test(k) && read++, Reflect.get(t, k, r))})
    const r = p.want('alice', counted)
    expect(read).toBeLessThanOrEqual(MAX_EXAMINED + 1)
    expect(r.accepted).toEqual(['198.51.100.1'])
    expect(r.refused).toHaveLength(MAX_EXAMINED)
    expect(r.refused.at(-1)).toEqual({dest: `(${list.length - MAX_EXAMINED} more)`, reason: expect.stringMatching(/not examined/)})
  })

  it('caps each client at maxPerClient and the node at maxDestinations', () => {
    const {connect} = fakeConnect()
    const p = prober({connect, maxPerClient: 3, maxDestinations: 4})
    const [a, b, c, d, e] = addresses(5)
    expect(p.want('alice', [a, b, c, d])).toEqual({accepted: [a, b, c], refused: [{dest: d, reason: 'over the limit of 3 destinations per client'}]})
    // bob shares b (no room needed), adds d (the last room), and e finds the node full.
    expect(p.want('bob', [b, d, e])).toEqual({
      accepted: [b, d],
      refused: [{dest: e, reason: 'the node is probing as many destinations as it will (4)'}],
    })
    expect(p.size).toBe(4)
    // alice drops a: room for bob's e.
    p.want('alice', [b, c])
    expect(p.want('bob', [b, d, e]).accepted).toEqual([b, d, e])
    expect(p.size).toBe(4)
  })

  it('probes a destination wanted by several clients once, keeps it while any wants it, and stops it with the last', async () => {
    vi.useFakeTimers()
    const {calls, connect} = fakeConnect(() => 'refused')
    const p = prober({connect})
    const [a, b, c] = addresses(3)
    p.want('alice', [a, b])
    p.want('bob', [b, c])
    p.want('carol', [b])
    expect(p.size).toBe(3)
    await vi.advanceTimersByTimeAsync(10_000)
    const perDest = (d: string) => calls.filter((x) => x.host === d).length
    // Every 2 s ± 20 %, however many clients want it: 5 or 6 in 10 s (the first one at once).
    for (const d of [a, b, c]) expect(perDest(d)).toBeGreaterThanOrEqual(5)
    for (const d of [a, b, c]) expect(perDest(d)).toBeLessThanOrEqual(7)
    const bTimes = calls.filter((x) => x.host === b).map((x) => x.at)
    for (let i = 1; i < bTimes.length; i++) {
      expect(bTimes[i] - bTimes[i - 1]).toBeGreaterThanOrEqual(1600)
      expect(bTimes[i] - bTimes[i - 1]).toBeLessThanOrEqual(2400)
    }
    p.forget('bob')
    expect(p.size).toBe(2) // c was bob's alone
    expect(p.result(c)).toBeUndefined()
    p.forget('alice')
    expect(p.size).toBe(1) // carol still wants b
    expect(p.result(b)?.state).toBe('ok')
    p.forget('carol')
    p.forget('nobody')
    expect(p.size).toBe(0)
    expect(p.result(b)).toBeUndefined()
    const before = calls.length
    await vi.advanceTimersByTimeAsync(10_000)
    expect(calls.length).toBe(before)
  })

  it('keeps the window of a destination a client keeps when it replaces its set', async () => {
    vi.useFakeTimers()
    const {connect} = fakeConnect(() => 'refused')
    const p = prober({connect})
    const [a, b, c] = addresses(3)
    p.want('alice', [a, b])
    await vi.advanceTimersByTimeAsync(5000)
    const samples = p.result(b)!.samples
    expect(samples).toBeGreaterThanOrEqual(2)
    expect(p.want('alice', [b, c]).accepted).toEqual([b, c])
    expect(p.result(a)).toBeUndefined()
    expect(p.result(b)!.samples).toBe(samples)
    expect(p.result(c)).toMatchObject({samples: 0, state: 'measuring', rttMs: null})
  })

  it('lets a client bring in only so many new destinations a minute: swapping sets cannot sweep a range', async () => {
    let t = 1_000_000
    const {calls, connect} = fakeConnect()
    const p = prober({connect, maxPerClient: 4, now: () => t})
    // A burst of twice maxPerClient, then maxPerClient a minute.
    expect(p.want('mallory', addresses(4, 0)).accepted).toHaveLength(4)
    expect(p.want('mallory', addresses(4, 4)).accepted).toHaveLength(4)
    const r = p.want('mallory', addresses(4, 8))
    expect(r.accepted).toEqual([])
    expect(r.refused[0].reason).toMatch(/too many new destinations/)
    // Emptying the set does not refill it; keeping what it has costs nothing.
    p.want('mallory', [])
    expect(p.want('mallory', addresses(4, 8)).accepted).toEqual([])
    t += 30_000
    expect(p.want('mallory', addresses(4, 8)).accepted).toEqual(addresses(2, 8))
    expect(p.want('mallory', addresses(2, 8)).accepted).toEqual(addresses(2, 8))
    // A hostile loop of fresh sets, a second apart: state stays within maxPerClient, and over
    // the ~2.8 h it spans, the additions within the burst plus maxPerClient a minute.
    let added = 0
    for (let i = 0; i < 10_000; i++) {
      t += 1000
      added += p.want('mallory', addresses(8, 1000 + 8 * i)).accepted.length
      expect(p.size).toBeLessThanOrEqual(4)
    }
    expect(added).toBeGreaterThan(600)
    expect(added).toBeLessThanOrEqual(8 + (4 * 10_000) / 60)
    await new Promise((r) => setTimeout(r, 20))
    expect(calls.length).toBeLessThanOrEqual(4) // only what is wanted when the loop lets go is probed
    // forget() drops the client's state, and its set.
    p.forget('mallory')
    expect(p.size).toBe(0)
  })
})

describe('GameProber measurements', () => {
  it('measures the RTT on loopback to an open port (SYN-ACK, reset at once) and a closed one (RST)', async () => {
    const server = net.createServer()
    const resets: string[] = []
    let connections = 0
    server.on('connection', (s) => {
      connections++
      s.on('error', (e: NodeJS.ErrnoException) => resets.push(e.code ?? '?'))
    })
    const open = await listen(server)
    const closedServer = net.createServer()
    const closed = await listen(closedServer)
    await new Promise((r) => closedServer.close(r))
    try {
      const p1 = prober({port: open, intervalMs: 500})
      const p2 = prober({port: closed, intervalMs: 500})
      const t0 = performance.now()
      p1.want('alice', ['127.0.0.1'])
      p2.want('alice', ['127.0.0.1'])
      await until(() => p1.result('127.0.0.1')!.samples >= 1 && p2.result('127.0.0.1')!.samples >= 1)
      // The first probe goes out at once, not after an interval (0.8 x 500 ms at the earliest).
      expect(performance.now() - t0).toBeLessThan(400)
      await until(() => p1.result('127.0.0.1')!.samples >= 3 && p2.result('127.0.0.1')!.samples >= 3, 5000)
      for (const p of [p1, p2]) {
        const r = p.result('127.0.0.1')!
        expect(r).toMatchObject({dest: '127.0.0.1', loss: 0, state: 'ok'})
        expect(r.rttMs).toBeGreaterThan(0)
        expect(r.rttMs).toBeLessThan(BASE.timeoutMs) // a measured answer, not a timeout
      }
      // The server saw each probe's connection reset, none left open.
      await until(() => resets.length >= 3)
      expect(new Set(resets)).toEqual(new Set(['ECONNRESET']))
      p1.close()
      const seen = connections
      await new Promise((r) => setTimeout(r, 300))
      expect(connections).toBe(seen) // close() stopped the loop
    } finally {
      await new Promise((r) => server.close(r))
    }
  })

  it('counts an unanswered probe as lost at timeoutMs: unreachable, then the window mixes answers and losses', async () => {
    vi.useFakeTimers()
    // Silent on even calls, a RST on odd ones.
    const {calls, connect} = fakeConnect((n) => (n % 2 === 0 ? 'silent' : 'refused'))
    const p = prober({connect, intervalMs: 1000, timeoutMs: 500})
    const [a] = addresses(1)
    p.want('alice', [a])
    expect(p.result(a)).toEqual({dest: a, rttMs: null, loss: 0, samples: 0, state: 'measuring'})
    await vi.advanceTimersByTimeAsync(499)
    expect(p.result(a)!.state).toBe('measuring')
    await vi.advanceTimersByTimeAsync(2)
    expect(p.result(a)).toEqual({dest: a, rttMs: null, loss: 1, samples: 1, state: 'unreachable'})
    expect(calls[0].socket.destroyed).toBe(true) // the timed-out connect is not left pending
    await vi.advanceTimersByTimeAsync(30_000)
    const r = p.result(a)!
    expect(r.samples).toBe(WINDOW)
    expect(r.loss).toBe(0.5)
    expect(r.state).toBe('ok')
    expect(r.rttMs).not.toBeNull()
  })

  it('counts ICMP errors as lost and the node\'s own shortage (EMFILE) as no sample', async () => {
    vi.useFakeTimers()
    const {connect} = fakeConnect((_, host) => (host.endsWith('.1') ? 'EHOSTUNREACH' : 'EMFILE'))
    const p = prober({connect})
    const [, unreach, full] = addresses(3)
    p.want('alice', [unreach, full])
    await vi.advanceTimersByTimeAsync(5000)
    expect(p.result(unreach)).toMatchObject({state: 'unreachable', loss: 1, rttMs: null})
    expect(p.result(full)).toMatchObject({state: 'measuring', samples: 0})
  })

  it('holds the node-wide rate and in-flight caps whatever maxDestinations and intervalMs say', async () => {
    vi.useFakeTimers()
    const answering = fakeConnect(() => 'refused')
    const p = prober({connect: answering.connect, intervalMs: 100, maxPerClient: 256, maxDestinations: 1024})
    for (let c = 0; c < 4; c++) expect(p.want(`c${c}`, addresses(256, 256 * c)).accepted).toHaveLength(256)
    expect(p.size).toBe(1024)
    await vi.advanceTimersByTimeAsync(10_000)
    // 1024 destinations every 100 ms would be ~100,000 probes; the cap allows 500/s plus a burst.
    expect(answering.calls.length).toBeLessThanOrEqual(10 * MAX_PROBES_PER_SECOND + 50)
    expect(answering.calls.length).toBeGreaterThan(9 * MAX_PROBES_PER_SECOND)
    // Every destination gets its turn (oldest turn first), none starves.
    expect(new Set(answering.calls.map((x) => x.host)).size).toBe(1024)
    p.close()

    const silent = fakeConnect()
    const q = prober({connect: silent.connect, timeoutMs: 60_000, maxPerClient: 256})
    for (let c = 0; c < 2; c++) q.want(`c${c}`, addresses(256, 256 * c))
    await vi.advanceTimersByTimeAsync(5000)
    expect(silent.calls.length).toBe(MAX_IN_FLIGHT)
    await vi.advanceTimersByTimeAsync(60_000)
    expect(silent.calls.length).toBeGreaterThan(MAX_IN_FLIGHT)
  })

  it('close() stops every timer and socket, and refuses later wants', async () => {
    vi.useFakeTimers()
    const {calls, connect} = fakeConnect((n) => (n < 5 ? 'refused' : 'silent'))
    const p = prober({connect, timeoutMs: 5000})
    p.want('alice', addresses(8))
    p.want('bob', addresses(8, 4))
    await vi.advanceTimersByTimeAsync(2500) // some waiting for their turn, some in flight
    expect(calls.length).toBeGreaterThan(12)
    p.close()
    expect(vi.getTimerCount()).toBe(0)
    expect(calls.every((x) => x.socket.destroyed)).toBe(true)
    expect(p.size).toBe(0)
    const n = calls.length
    await vi.advanceTimersByTimeAsync(60_000)
    expect(calls.length).toBe(n)
    expect(p.want('alice', addresses(1))).toEqual({accepted: [], refused: [{dest: addresses(1)[0], reason: 'the prober is closed'}]})
    p.close()
  })
})
