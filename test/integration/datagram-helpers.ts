/**
 * What the datagram-transport tests (gre, ipip) share: peer status, a tshark capture, a ping
 * check, and a sender of hand-made packets that claim a client's tunnel address.
 */
import {expect} from 'vitest'
import type {Fleet} from '../../src/testbed/index.js'
import {waitForOutput} from '../../src/testbed/process.js'

export interface PeerStatus {
  name: string
  address: string
  endpoint: string
  sessionId?: number
  rxPackets: number
  drops: Record<string, number>
}

export async function peers(fleet: Fleet, ns: string): Promise<PeerStatus[]> {
  const r = await fleet.cli(ns, ['status', '--json'])
  expect(r.code, r.stderr).toBe(0)
  return JSON.parse(r.stdout)[0].peers
}

/**
 * Capture on `iface` in `ns` for `seconds`, printing the given tshark fields per packet.
 * Resolves once tshark says it is capturing (a fixed wait before the traffic was not always
 * enough on a busy machine); `lines` then settles when the capture ends.
 */
export async function capture(fleet: Fleet, ns: string, iface: string, filter: string, fields: string[], seconds: number, extra: string[] = []): Promise<{lines: Promise<string[]>}> {
  const args = ['-i', iface, '-f', filter, '-a', `duration:${seconds}`, '-l', ...extra, '-T', 'fields', ...fields.flatMap((f) => ['-e', f])]
  const child = fleet.tb.spawn(ns, 'tshark', args, {stdio: ['ignore', 'pipe', 'pipe']})
  let out = ''
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()))
  const lines = new Promise<string[]>((resolve, reject) => {
    const killer = setTimeout(() => child.kill('SIGKILL'), (seconds + 20) * 1000)
    child.once('exit', (code) => {
      clearTimeout(killer)
      if (code === 0) resolve(out.trim().split('\n').filter(Boolean))
      else reject(new Error(`tshark exited ${code}: ${out}`))
    })
  })
  lines.catch(() => {}) // awaited by the caller; never an unhandled rejection meanwhile
  try {
    await waitForOutput(child, /Capturing on/, 20_000)
  } catch (e) {
    child.kill('SIGKILL')
    throw e
  }
  return {lines}
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

export async function pingOk(fleet: Fleet, ns: string, count = 3): Promise<void> {
  const r = await fleet.tb.exec(ns, 'ping', ['-c', String(count), '-i', '0.2', '-W', '2', fleet.tb.addr.target])
  expect(r.code, r.stdout + r.stderr).toBe(0)
}

/**
 * From namespace `ns`, send `rounds` pairs of datagrams to the node's UDP `port`: an ordinary
 * UDP packet from `src` (a client's tunnel address) to the target, and a keepalive-shaped one
 * to the node's tunnel address with a made-up MAC. `header` (hex) goes before each inner
 * packet: a GRE header with the client's key, or nothing for IPIP.
 */
export async function sendSpoofed(fleet: Fleet, ns: string, opts: {port: number; src: string; header?: string; rounds?: number}): Promise<void> {
  const {tb} = fleet
  const script = `
    const dgram = require('node:dgram')
    const [host, port, src, dst, gateway, header, rounds] = process.argv.slice(1)
    const ip = (a) => Buffer.from(a.split('.').map(Number))
    function inner(proto, payload, to) {
      const b = Buffer.alloc(20 + payload.length); b[0] = 0x45; b.writeUInt16BE(b.length, 2); b[8] = 64; b[9] = proto
      ip(src).copy(b, 12); ip(to).copy(b, 16); payload.copy(b, 20)
      let s = 0; for (let i = 0; i < 20; i += 2) s += b.readUInt16BE(i); while (s > 0xffff) s = (s & 0xffff) + (s >>> 16); b.writeUInt16BE(~s & 0xffff, 10)
      return Buffer.concat([Buffer.from(header, 'hex'), b])
    }
    const udp = Buffer.alloc(13); udp.writeUInt16BE(5555, 0); udp.writeUInt16BE(7777, 2); udp.writeUInt16BE(13, 4)
    const forged = Buffer.alloc(32); forged.writeUInt32BE(0x41474b41, 0); forged[4] = 1; forged.writeBigUInt64BE(1n << 40n, 8)
    const s = dgram.createSocket('udp4')
    let n = 0; const send = (p) => s.send(p, +port, host, () => { if (++n === 2 * rounds) s.close() })
    for (let i = 0; i < rounds; i++) { send(inner(17, udp, dst)); send(inner(253, forged, gateway)) }
  `
  const args = [tb.addr.nodeWan, String(opts.port), opts.src, tb.addr.target, '10.99.0.1', opts.header ?? '', String(opts.rounds ?? 5)]
  await tb.exec(ns, process.execPath, ['-e', script, ...args], {check: true})
}

/** A GRE header (RFC 2890) with the key bit and this key, protocol IPv4, as hex. */
export function greHeaderHex(key: number): string {
  const h = Buffer.alloc(8)
  h.writeUInt16BE(0x2000, 0)
  h.writeUInt16BE(0x0800, 2)
  h.writeUInt32BE(key, 4)
  return h.toString('hex')
}
