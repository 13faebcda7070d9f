/**
 * Probes (probe-packet.ts), the node's tickets (probe-tickets.ts) and which destinations a node
 * measures (game-targets.ts): what a stranger can send gets nothing, what a client sends gets a
 * reply only it can read.
 */
import {randomBytes} from 'node:crypto'
import {describe, expect, it} from 'vitest'
import {looksLikeProbe, makeProbe, PROBE_BYTES, ProbeKind, readProbe} from '../../src/core/probe/probe-packet.js'
import {type GameMeasure, ProbeTickets} from '../../src/core/probe/probe-tickets.js'
import {gameTargetRefusal} from '../../src/core/probe/game-targets.js'

const key = randomBytes(32)
const ticket = Buffer.from('0123456789abcdef', 'hex')

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
    const grant = t.grant('alice', k, ['203.0.113.10/32', '10.0.0.1/32', '192.0.2.0/24'], () => true)
    expect(grant).toMatchObject({udp: 4754, game: ['203.0.113.10'], expires: 600})
    expect(grant.refused).toEqual([
      {dest: '192.0.2.0/24', reason: 'not a single host (/32)'},
      {dest: '10.0.0.1', reason: 'denied'},
    ])
    const id = Buffer.from(grant.ticket, 'hex')
    const req = makeProbe({kind: ProbeKind.Request, ticket: id, counter: 1n, game: []}, k)
    const reply = t.answer(req, 0, req.length)!
    expect(readProbe(reply, 0, k, ProbeKind.Reply, 0n)).toMatchObject({counter: 1n, game: [{rttMs: 30, loss: 0.1, state: 'ok'}]})
    // The same request again (a replay from anywhere) gets nothing.
    expect(t.answer(req, 0, req.length)).toBeNull()
    // Another key, an unknown ticket, random bytes: nothing.
    const forged = makeProbe({kind: ProbeKind.Request, ticket: id, counter: 2n, game: []}, randomBytes(32))
    expect(t.answer(forged, 0, forged.length)).toBeNull()
    const unknown = makeProbe({kind: ProbeKind.Request, ticket: randomBytes(8), counter: 2n, game: []}, k)
    expect(t.answer(unknown, 0, unknown.length)).toBeNull()
    expect(t.answer(randomBytes(PROBE_BYTES), 0, PROBE_BYTES)).toBeNull()
    expect(t.counters).toMatchObject({probesAnswered: 1, probesRefused: 3})
  })

  it('stops answering a client the roster no longer admits, or whose ticket expired; sweep forgets it', () => {
    let now = 1_000_000
    let admitted = true
    const game = fakeGame()
    const t = new ProbeTickets({game, ttlSeconds: 10, now: () => now})
    const k = randomBytes(32)
    const id = Buffer.from(t.grant('bob', k, ['203.0.113.10'], () => admitted).ticket, 'hex')
    const probe = (n: bigint) => makeProbe({kind: ProbeKind.Request, ticket: id, counter: n, game: []}, k)
    expect(t.answer(probe(1n), 0, PROBE_BYTES)).not.toBeNull()
    admitted = false
    expect(t.answer(probe(2n), 0, PROBE_BYTES)).toBeNull()
    admitted = true
    now += 11_000
    expect(t.answer(probe(3n), 0, PROBE_BYTES)).toBeNull()
    t.sweep()
    expect(t.size).toBe(0)
    expect(game.wanted.has('bob')).toBe(false)
  })

  it('one ticket per client: a new grant replaces the old', () => {
    const t = new ProbeTickets({game: null})
    const k = randomBytes(32)
    const first = Buffer.from(t.grant('carol', k, [], () => true).ticket, 'hex')
    t.grant('carol', k, [], () => true)
    expect(t.size).toBe(1)
    const old = makeProbe({kind: ProbeKind.Request, ticket: first, counter: 1n, game: []}, k)
    expect(t.answer(old, 0, PROBE_BYTES)).toBeNull()
    // Without a game prober, the routes are refused with the reason.
    expect(t.grant('dave', k, ['203.0.113.10/32'], () => true).refused).toEqual([{dest: '203.0.113.10', reason: 'this node does not measure game servers'}])
  })

  it("checks a MAC only for a ticket it gave out, and only within that ticket's budget", () => {
    let now = 5_000_000
    const t = new ProbeTickets({game: null, now: () => now})
    const k = randomBytes(32)
    const id = Buffer.from(t.grant('erin', k, [], () => true).ticket, 'hex')
    // A stranger's random tickets: refused on the lookup, never over any budget.
    const junk = makeProbe({kind: ProbeKind.Request, ticket: randomBytes(8), counter: 1n, game: []}, key)
    for (let i = 0; i < 1000; i++) t.answer(junk, 0, PROBE_BYTES)
    expect(t.counters).toMatchObject({probesRefused: 1000, probesOverRate: 0})
    // Someone who saw erin's ticket id sends bad MACs: 40 at once cost HMACs, the rest nothing.
    const bad = makeProbe({kind: ProbeKind.Request, ticket: id, counter: 9n, game: []}, randomBytes(32))
    for (let i = 0; i < 100; i++) t.answer(bad, 0, PROBE_BYTES)
    expect(t.counters.probesOverRate).toBe(60)
    // A second later the ticket has 20 more: erin's own probe is answered.
    now += 1000
    expect(t.answer(makeProbe({kind: ProbeKind.Request, ticket: id, counter: 1n, game: []}, k), 0, PROBE_BYTES)).not.toBeNull()
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
