#!/usr/bin/env node
// What probes cost a node (issue #16), in-process on the node's own code (no network):
//
//   node --expose-gc bench/probes.mjs [--tickets 10000] [--probes 200000]
//
// - CPU per probe through ProbeTickets.answer (src/core/probe/probe-tickets.ts), with --tickets
//   clients holding a ticket: a genuine probe (lookup, HMAC check, HMAC'd reply with one game
//   server), a stranger's with an unknown ticket, one with a known ticket and a bad MAC, and one
//   over its ticket's budget (no HMAC). Probes are built before the clock starts: the figure is
//   the node's work only.
// - memory per ticket: heap used by --tickets tickets, each with one game server.
import {randomBytes} from 'node:crypto'
import {parseArgs} from 'node:util'
import {ProbeTickets} from '../dist/core/probe/probe-tickets.js'
import {makeProbe, PROBE_BYTES, ProbeKind} from '../dist/core/probe/probe-packet.js'

const {values: flags} = parseArgs({options: {tickets: {type: 'string'}, probes: {type: 'string'}}})
const ticketCount = Number(flags.tickets ?? 10_000)
const probes = Number(flags.probes ?? 200_000)
if (!(ticketCount >= 100 && ticketCount <= 1_000_000) || !(probes >= 1000 && probes <= 2_000_000)) throw new Error('--tickets 100..1e6, --probes 1e3..2e6')

const game = {want: (_c, d) => ({accepted: [...d], refused: []}), forget: () => {}, result: () => ({rttMs: 12.5, loss: 0, state: 'ok'})}

function setup() {
  const t = new ProbeTickets({game})
  const held = Array.from({length: ticketCount}, (_, i) => {
    const key = randomBytes(32)
    return {key, id: Buffer.from(t.grant(`client-${i}`, key, ['203.0.113.10'], () => true).ticket, 'hex'), counter: 0n, source: 0x0a000000 + i}
  })
  return {t, held}
}

function time(label, t, list) {
  const t0 = process.hrtime.bigint()
  let answered = 0
  for (const [p, source] of list) if (t.answer(p, 0, PROBE_BYTES, source) !== null) answered++
  const us = Number(process.hrtime.bigint() - t0) / 1000 / list.length
  return {label, us: Number(us.toFixed(2)), answered, of: list.length}
}

const results = []
{
  // Round-robin over the tickets: each gets probes/tickets, within its budget (20/s, 40 at once).
  const {t, held} = setup()
  const per = Math.min(40, Math.ceil(probes / ticketCount))
  const list = []
  for (let r = 0; r < per; r++) for (const h of held) list.push([makeProbe({kind: ProbeKind.Request, ticket: h.id, counter: ++h.counter, game: []}, h.key), h.source])
  results.push(time('genuine', t, list))
}
{
  const {t} = setup()
  const key = randomBytes(32)
  const list = Array.from({length: probes}, (_, i) => [makeProbe({kind: ProbeKind.Request, ticket: randomBytes(8), counter: 1n, game: []}, key), i])
  results.push(time('unknown ticket (a stranger)', t, list))
}
{
  const {t, held} = setup()
  const wrong = randomBytes(32)
  const list = []
  for (let r = 0; r < 40; r++) for (const h of held) list.push([makeProbe({kind: ProbeKind.Request, ticket: h.id, counter: BigInt(r + 1), game: []}, wrong), h.source])
  results.push(time('known ticket, bad MAC (within its budget)', t, list.slice(0, probes)))
}
{
  const {t, held} = setup()
  const h = held[0]
  const bad = makeProbe({kind: ProbeKind.Request, ticket: h.id, counter: 1n, game: []}, randomBytes(32))
  for (let i = 0; i < 50; i++) t.answer(bad, 0, PROBE_BYTES, h.source)
  results.push(time("over its ticket's budget", t, Array.from({length: probes}, () => [bad, h.source])))
}

global.gc?.()
const before = process.memoryUsage().heapUsed
const {t: many} = setup()
global.gc?.()
const perTicket = (process.memoryUsage().heapUsed - before) / ticketCount
void many

console.log('| probe | µs per probe | answered |')
console.log('|---|---|---|')
for (const r of results) console.log(`| ${r.label} | ${r.us} | ${r.answered} of ${r.of} |`)
console.log(`\nheap per ticket: ${Math.round(perTicket)} bytes with ${ticketCount} tickets${global.gc ? '' : ' (run with --expose-gc for a steadier figure)'}`)
console.log(JSON.stringify({bench: 'probes', tickets: ticketCount, results, heapPerTicketBytes: Math.round(perTicket)}))
