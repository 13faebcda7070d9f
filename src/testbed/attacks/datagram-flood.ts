/**
 * A stranger sending forged datagrams at a node's carrier port, for the hostile tests and the
 * benchmark. Runs inside a testbed namespace:
 *
 *   node dist/testbed/attacks/datagram-flood.js KIND HOST PORT --pps N --seconds S [options]
 *
 *   keepalive  IPIP-in-UDP keepalive-shaped packets (IP protocol 253 to the node's tunnel
 *              address --node-address) from every address of --pool A-B in turn, with a MAC
 *              that does not verify: what someone who knows the tunnel pool can send
 *   esp        ESP in GRE-in-UDP (ipsec-over-gre's wire format) with the genuine --spi and
 *              --node-address CLIENT,NODE (tunnel addresses), rising sequence numbers and random
 *              ciphertext: what someone who saw one packet can send
 *   gre        one GRE-in-UDP packet with --key and sequence number --seq (a far-ahead one)
 *   probe      probe-shaped packets (probe-packet.ts) with random tickets and MACs, to the
 *              node's UDP port; --tcp sends each as the first bytes of a TCP connection (to the
 *              control port). Replies are counted: a stranger must get none
 *
 * Bounded by --pps and --seconds; prints one JSON line (what it sent) when it ends.
 */
import {createSocket} from 'node:dgram'
import {randomFillSync} from 'node:crypto'
import {parseArgs} from 'node:util'
import {internetChecksum} from '../../core/net/checksum.js'
import {ipv4ToNumber} from '../../core/net/ipv4.js'
import {KEEPALIVE_MAGIC, KEEPALIVE_PACKET, KEEPALIVE_PROTOCOL} from '../../core/nat/keepalive.js'
import {connect as tcpConnect} from 'node:net'
import {PROBE_BYTES, PROBE_MAGIC, PROBE_VERSION, ProbeKind} from '../../core/probe/probe-packet.js'

const {positionals, values} = parseArgs({
  allowPositionals: true,
  options: {
    pps: {type: 'string', default: '1000'},
    seconds: {type: 'string', default: '10'},
    pool: {type: 'string'},
    'node-address': {type: 'string'},
    spi: {type: 'string'},
    key: {type: 'string'},
    seq: {type: 'string', default: '2147483000'},
    size: {type: 'string', default: '100'},
    tcp: {type: 'boolean', default: false},
  },
})
const [kind, host, portText] = positionals
const port = Number(portText)
const pps = Number(values.pps)
const seconds = Number(values.seconds)
function fail(msg: string): never {
  process.stderr.write(`datagram-flood: ${msg}\n`)
  process.exit(2)
}
if (!(port > 0) || !(pps > 0 && pps <= 200_000) || !(seconds > 0 && seconds <= 120)) fail('usage: KIND HOST PORT --pps N (<= 200000) --seconds S (<= 120)')

/** The packets to send, in turn. */
function packets(): Buffer[] {
  if (kind === 'keepalive') {
    const [start, end] = (values.pool ?? fail('keepalive needs --pool A-B')).split('-').map(ipv4ToNumber)
    const dst = ipv4ToNumber(values['node-address'] ?? fail('keepalive needs --node-address'))
    const out: Buffer[] = []
    for (let src = start; src <= end; src++) {
      const b = Buffer.alloc(KEEPALIVE_PACKET)
      b[0] = 0x45
      b.writeUInt16BE(KEEPALIVE_PACKET, 2)
      b[8] = 64
      b[9] = KEEPALIVE_PROTOCOL
      b.writeUInt32BE(src, 12)
      b.writeUInt32BE(dst, 16)
      b.writeUInt16BE(internetChecksum(b, 0, 20), 10)
      b.writeUInt32BE(KEEPALIVE_MAGIC, 20)
      b[24] = 1 // a request
      b.writeBigUInt64BE(BigInt(Date.now()) * 1000n, 28) // a counter above any genuine one
      randomFillSync(b, 36, 16) // a MAC that does not verify
      out.push(b)
    }
    return out
  }
  if (kind === 'esp') {
    // GRE keyed with the SPI, the outer IPv4 header between the tunnel addresses, ESP: every
    // check before the ICV passes, so only the MAC can tell it is forged (docs/esp-wire.md).
    const spi = Number(values.spi ?? fail('esp needs --spi'))
    const [src, dst] = (values['node-address'] ?? fail('esp needs --node-address CLIENT,NODE (tunnel addresses)')).split(',').map(ipv4ToNumber)
    const ct = Math.max(4, Math.ceil(Number(values.size) / 4) * 4)
    return Array.from({length: 64}, () => {
      const outer = 20 + 8 + 8 + ct + 16
      const b = Buffer.alloc(8 + outer)
      b.writeUInt16BE(0x2000, 0) // GRE, key present
      b.writeUInt16BE(0x0800, 2)
      b.writeUInt32BE(spi, 4)
      b[8] = 0x45
      b.writeUInt16BE(outer, 10)
      b[14] = 0x40 // DF
      b[16] = 64
      b[17] = 50 // ESP
      b.writeUInt32BE(src, 20)
      b.writeUInt32BE(dst, 24)
      b.writeUInt16BE(internetChecksum(b, 8, 28), 18)
      b.writeUInt32BE(spi, 28) // ESP SPI; the sequence number at 32 is set per packet
      randomFillSync(b, 36) // IV, ciphertext, ICV: random
      return b
    })
  }
  if (kind === 'gre') {
    const b = Buffer.alloc(12 + 28)
    b.writeUInt16BE(0x3000, 0) // key and sequence present
    b.writeUInt16BE(0x0800, 2)
    b.writeUInt32BE(Number(values.key ?? fail('gre needs --key')), 4)
    b.writeUInt32BE(Number(values.seq) >>> 0, 8)
    b[12] = 0x45 // a small IPv4 packet inside; its contents do not matter
    b.writeUInt16BE(28, 14)
    return [b]
  }
  if (kind === 'probe') {
    return Array.from({length: 64}, () => {
      const b = Buffer.alloc(PROBE_BYTES)
      randomFillSync(b) // ticket, counter, entries and MAC: random
      b.writeUInt32BE(PROBE_MAGIC, 0)
      b[4] = ProbeKind.Request
      b[5] = PROBE_VERSION
      b[6] = 0
      return b
    })
  }
  fail(`unknown kind ${JSON.stringify(kind)}: keepalive, esp, gre or probe`)
}

const list = packets()
const total = kind === 'gre' ? 1 : Math.round(pps * seconds)
const socket = createSocket('udp4')
let replies = 0
socket.on('message', () => replies++)
if (kind === 'probe' && values.tcp && pps > 500) fail('probe --tcp: at most 500 connections a second')
/** One TCP connection per probe (--tcp): its first bytes, then whatever comes back is a reply. */
function sendTcp(p: Buffer): void {
  const c = tcpConnect({host, port}, () => c.write(p))
  c.on('data', () => replies++)
  c.on('error', () => {})
  c.setTimeout(2000, () => c.destroy())
}
let sent = 0
let seq = 1 << 24
const started = Date.now()
const TICK_MS = 10

function done(): void {
  socket.close()
  process.stdout.write(`${JSON.stringify({kind, sent, replies, seconds: (Date.now() - started) / 1000})}\n`)
}

// Paced in 10 ms ticks: as many as the rate owes by now, never more than `total`.
const timer = setInterval(() => {
  const owed = Math.min(total, Math.floor(((Date.now() - started) / 1000) * pps) + 1)
  while (sent < owed) {
    const p = list[sent % list.length]
    if (kind === 'esp') p.writeUInt32BE(seq++, 32) // rising ESP sequence numbers, far above a genuine one
    if (values.tcp) sendTcp(p)
    else socket.send(p, port, host)
    sent++
  }
  if (sent >= total || Date.now() - started > seconds * 1000 + 1000) {
    clearInterval(timer)
    // Let the last sends leave, and any reply come, before closing.
    setTimeout(done, values.tcp ? 2100 : 300)
  }
}, TICK_MS)
