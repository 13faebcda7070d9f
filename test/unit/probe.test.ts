/**
 * Probes (probe-packet.ts), the node's tickets (probe-tickets.ts) and which destinations a node
 * measures (game-targets.ts): what a stranger can send gets nothing, what a client sends gets a
 * reply only it can read.
 */
import {randomBytes} from 'node:crypto'
import {describe, expect, it} from 'vitest'
import {looksLikeProbe, makeProbe, PROBE_BYTES, ProbeKind, readProbe} from '../../src/core/probe/probe-packet.js'
import {type GameMeasure, type ProbeGrant, ProbeTickets} from '../../src/core/probe/probe-tickets.js'
import {gameTargetRefusal} from '../../src/core/probe/game-targets.js'

const key = randomBytes(32)
const ticket = Buffer.from('0123456789abcdef', 'hex')
const SRC = 0xc6336407 // 198.51.100.7

describe('probe packets', () => {
  it('round-trips a reply with game entries, all of a fixed size', () => {
    const game = [
      {rttMs: 12.345, loss: 0.25, state: 'ok' as const},
      {rttMs: null, loss: 1, state: 'unreachable' as const},
    ]
    const buf = makeProbe({kind: ProbeKind.Reply, ticket, counter: 7n, game}, key)
    expect(buf.length).toBe(PROBE_BYTES)
    expect(looksLikeProbe(buf, 0, buf.length)).toBe(true)
    expect(readProbe(buf, 0, key, ProbeKind.Reply, 0n)).toEqual({kind: ProbeKind.Reply, ticket, counter: 7n, game})
    // A request is exactly as long: a forged source gets no more bytes than it sent.
    expect(makeProbe({kind: ProbeKind.Request, ticket, counter: 1n, game: []}, key).length).toBe(PROBE_BYTES)
  })

  it('refuses a wrong key, a flipped bit, the other kind, a replayed counter, a bad state', () => {
    const buf = makeProbe({kind: ProbeKind.Request, ticket, counter: 5n, game: []}, key)
    expect(readProbe(buf, 0, randomBytes(32), ProbeKind.Request, 0n)).toBeNull()
    expect(readProbe(buf, 0, key, ProbeKind.Reply, 0n)).toBeNull()
    expect(readProbe(buf, 0, key, ProbeKind.Request, 5n)).toBeNull()
    for (const at of [0, 4, 8, 16, 30, 90]) {
      const bad = Buffer.from(buf)
      bad[at] ^= 1
      expect(readProbe(bad, 0, key, ProbeKind.Request, 0n), `bit at ${at}`).toBeNull()
    }
    expect(looksLikeProbe(buf, 0, PROBE_BYTES - 1)).toBe(false)
    expect(() => makeProbe({kind: ProbeKind.Reply, ticket, counter: 1n, game: Array(9).fill({rttMs: 1, loss: 0, state: 'ok'})}, key)).toThrow(/at most 8/)
  })
})

function fakeGame(): GameMeasure & {wanted: Map<string, readonly string[]>} {
  const wanted = new Map<string, readonly string[]>()
  return {
    wanted,
    want: (client, dests) => {
      wanted.set(client, dests)
      return {accepted: dests.filter((d) => d !== '10.0.0.1'), refused: dests.filter((d) => d === '10.0.0.1').map((dest) => ({dest, reason: 'denied'}))}
    },
    forget: (client) => void wanted.delete(client),
    result: (dest) => (dest === '203.0.113.10' ? {rttMs: 30, loss: 0.1, state: 'ok'} : undefined),
  }
}

describe('probe tickets', () => {
  it('answers a probe of its ticket once, with the game servers it measures, and nothing else', () => {
    const game = fakeGame()
    const t = new ProbeTickets({game, udpPort: 4754})
    const k = randomBytes(32)
    const grant = t.grant('alice', k, ['203.0.113.10/32', '10.0.0.1/32', '192.0.2.0/24'], () => true) as ProbeGrant
    expect(grant).toMatchObject({udp: 4754, game: ['203.0.113.10'], expires: 600})
    expect(grant.refused).toEqual([
      {dest: '192.0.2.0/24', reason: 'not a single host (/32)'},
      {dest: '10.0.0.1', reason: 'denied'},
    ])
    const id = Buffer.from(grant.ticket, 'hex')
    const req = makeProbe({kind: ProbeKind.Request, ticket: id, counter: 1n, game: []}, k)
    const reply = t.answer(req, 0, req.length, SRC)!
    expect(readProbe(reply, 0, k, ProbeKind.Reply, 0n)).toMatchObject({counter: 1n, game: [{rttMs: 30, loss: 0.1, state: 'ok'}]})
    // The same request again (a replay from anywhere) gets nothing.
    expect(t.answer(req, 0, req.length, SRC)).toBeNull()
    // Another key, an unknown ticket, random bytes: nothing.
    const forged = makeProbe({kind: ProbeKind.Request, ticket: id, counter: 2n, game: []}, randomBytes(32))
    expect(t.answer(forged, 0, forged.length, SRC)).toBeNull()
    const unknown = makeProbe({kind: ProbeKind.Request, ticket: randomBytes(8), counter: 2n, game: []}, k)
    expect(t.answer(unknown, 0, unknown.length, SRC)).toBeNull()
    expect(t.answer(randomBytes(PROBE_BYTES), 0, PROBE_BYTES, SRC)).toBeNull()
    expect(t.counters).toMatchObject({probesAnswered: 1, probesRefused: 3})
  })

  it('stops answering a client the roster no longer admits, or whose ticket expired; sweep forgets it', () => {
    let now = 1_000_000
    let admitted = true
    const game = fakeGame()
    const t = new ProbeTickets({game, ttlSeconds: 10, now: () => now})
    const k = randomBytes(32)
    const id = Buffer.from((t.grant('bob', k, ['203.0.113.10'], () => admitted) as ProbeGrant).ticket, 'hex')
    const probe = (n: bigint) => makeProbe({kind: ProbeKind.Request, ticket: id, counter: n, game: []}, k)
    expect(t.answer(probe(1n), 0, PROBE_BYTES, SRC)).not.toBeNull()
    admitted = false
    expect(t.answer(probe(2n), 0, PROBE_BYTES, SRC)).toBeNull()
    admitted = true
    now += 11_000
    expect(t.answer(probe(3n), 0, PROBE_BYTES, SRC)).toBeNull()
    t.sweep()
    expect(t.size).toBe(0)
    expect(game.wanted.has('bob')).toBe(false)
  })

  it('one ticket per client: a new grant replaces the old, at most every 2 s, keeping the game servers', () => {
    let now = 2_000_000
    const game = fakeGame()
    const t = new ProbeTickets({game, now: () => now})
    const k = randomBytes(32)
    const first = t.grant('carol', k, ['203.0.113.10'], () => true)
    if (typeof first === 'string') throw new Error(first)
    expect(t.grant('carol', k, ['203.0.113.10'], () => true)).toMatch(/ask at most every 2 s/)
    now += 2000
    expect(typeof t.grant('carol', k, ['203.0.113.10'], () => true)).toBe('object')
    expect(t.size).toBe(1)
    const old = makeProbe({kind: ProbeKind.Request, ticket: Buffer.from(first.ticket, 'hex'), counter: 1n, game: []}, k)
    expect(t.answer(old, 0, PROBE_BYTES, SRC)).toBeNull()
    // A renewal does not make the prober forget the client (its measurements, its limits).
    expect(game.wanted.get('carol')).toEqual(['203.0.113.10'])
    // Without a game prober, the routes are refused with the reason.
    expect(new ProbeTickets({game: null}).grant('dave', k, ['203.0.113.10/32'], () => true)).toMatchObject({
      refused: [{dest: '203.0.113.10', reason: 'this node does not measure game servers'}],
    })
  })

  it("checks a MAC only for a ticket it gave out, and only within that ticket's budget", () => {
    const now = 5_000_000
    const t = new ProbeTickets({game: null, now: () => now})
    const k = randomBytes(32)
    const id = Buffer.from((t.grant('erin', k, [], () => true) as ProbeGrant).ticket, 'hex')
    // A stranger's random tickets: refused on the lookup, never over any budget.
    const junk = makeProbe({kind: ProbeKind.Request, ticket: randomBytes(8), counter: 1n, game: []}, key)
    for (let i = 0; i < 1000; i++) t.answer(junk, 0, PROBE_BYTES, SRC)
    expect(t.counters).toMatchObject({probesRefused: 1000, probesOverRate: 0})
    // erin probes from her address; someone who saw her ticket id sends bad MACs from another:
    // they spend the ticket's budget for strangers, not hers.
    expect(t.answer(makeProbe({kind: ProbeKind.Request, ticket: id, counter: 1n, game: []}, k), 0, PROBE_BYTES, SRC)).not.toBeNull()
    const bad = makeProbe({kind: ProbeKind.Request, ticket: id, counter: 9n, game: []}, randomBytes(32))
    for (let i = 0; i < 100; i++) t.answer(bad, 0, PROBE_BYTES, SRC + 1)
    expect(t.counters.probesOverRate).toBe(60)
    for (let n = 2n; n < 12n; n++) expect(t.answer(makeProbe({kind: ProbeKind.Request, ticket: id, counter: n, game: []}, k), 0, PROBE_BYTES, SRC)).not.toBeNull()
  })
})

describe('game targets', () => {
  const rules = {deny: ['169.254.0.0/16', '10.0.0.0/8'], subnet: '10.99.0.0/24', nodeAddresses: ['198.51.100.1', '0.0.0.0']}
  it('measures only where the node would forward', () => {
    expect(gameTargetRefusal('203.0.113.10', rules)).toBeNull()
    expect(gameTargetRefusal('169.254.169.254', rules)).toMatch(/egress.deny \(169.254.0.0\/16\)/)
    expect(gameTargetRefusal('10.1.2.3', rules)).toMatch(/egress.deny/)
    expect(gameTargetRefusal('127.0.0.1', rules)).toBe('loopback')
    expect(gameTargetRefusal('0.1.2.3', rules)).toBe('not a destination')
    expect(gameTargetRefusal('239.1.1.1', rules)).toBe('not unicast')
    expect(gameTargetRefusal('198.51.100.1', rules)).toBe("the node's own address")
    expect(gameTargetRefusal('10.99.0.5', {...rules, deny: []})).toBe('inside the tunnel subnet')
  })
})
