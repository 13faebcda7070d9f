/**
 * Control messages as an authenticated client might garble them: transport messages with any
 * SPI, ack or rekey, long and many-keyed bodies, hello and welcome again, other types, damaged
 * and truncated JSON; on a datagram session's control connection also Data and Ping frames and
 * raw bytes. A calm session says only what the node should take without ending the connection.
 */
import type {TLSSocket} from 'node:tls'
import {FrameType, encodeFrame} from '../../core/control/framing.js'
import {PROTOCOL_VERSION} from '../../core/control/messages.js'
import {mutateBytes} from './packets.js'
import type {Rng} from './rng.js'
import {count} from './session.js'

/** A control message as an authenticated client might garble it. */
export function controlFuzz(rng: Rng, calm: boolean): Buffer {
  const spi = rng.pick([0, 1, 255, 256, 0xffffffff, rng.u32()])
  const messages: unknown[] = [
    {type: 'transport', body: {hello: true, spi}},
    {type: 'transport', body: {ack: rng.int(5), spi}},
    {type: 'transport', body: {rekey: rng.int(5), spi}},
    {type: 'transport', body: {spi: rng.u32() * 1000, x: 'y'.repeat(rng.int(2000))}},
    {type: 'transport', body: Object.fromEntries(Array.from({length: rng.int(200)}, (_, i) => [`k${i}`, rng.u32()]))},
    {type: 'hello', version: PROTOCOL_VERSION, transport: rng.pick(['tls', 'gre', 'ipip', 'ipsec-over-gre', ''])},
    {type: 'welcome', version: 1},
    {type: 'refused', reason: 'x'},
    {type: 'transport', body: {nested: {a: 1}}},
    {type: rng.u32()},
    [1, 2, 3],
  ]
  // A calm session says only what a node should take without ending the connection: transport
  // messages, well formed, whatever they ask (so it lives long enough to see rekeys).
  let text = JSON.stringify(calm ? messages[rng.int(5)] : rng.pick(messages))
  if (calm) return Buffer.from(text)
  if (rng.chance(0.3)) {
    // Byte damage to the JSON itself.
    const b = Buffer.from(text)
    return b.subarray(0, mutateBytes(b, 0, b.length, b.length, rng))
  }
  if (rng.chance(0.1)) text = text.slice(0, rng.int(text.length))
  return Buffer.from(text)
}

/** Over Node's TLS (datagram transports' control connection). */
export function sendControlFuzz(socket: TLSSocket, rng: Rng, kinds: Record<string, number>, calm: boolean): void {
  const r = calm ? 0 : rng.int(10)
  if (r < 7) {
    count(kinds, 'control')
    socket.write(encodeFrame(FrameType.Control, controlFuzz(rng, calm)))
  } else if (r < 8) {
    count(kinds, 'control-ping')
    socket.write(encodeFrame(FrameType.Ping))
  } else if (r < 9) {
    // A Data frame on a datagram session's control connection.
    count(kinds, 'control-data')
    const b = Buffer.alloc(rng.int(1500))
    rng.fill(b)
    socket.write(encodeFrame(FrameType.Data, b))
  } else {
    count(kinds, 'control-raw')
    const b = Buffer.alloc(1 + rng.int(64))
    rng.fill(b)
    socket.write(b)
  }
}

