/**
 * The `ipsec-over-gre` transport: every tunnelled packet is first sealed as an ESP tunnel-mode
 * packet (RFC 4303, AES-256-GCM per RFC 4106), and that packet is then carried in GRE (the
 * core's GRE codec; over UDP by default, so it crosses NATs). NAT rewrites only the outer
 * UDP/IP, never the ESP packet, which is why the design notes prefer it to GRE-over-IPsec.
 *
 * Security associations: one per direction per client, each with the SPI its receiver chose
 * (the node's inbound SPI from the node's id space, which is also the GRE key that finds the
 * session; the client's at random) and a key exported from the control channel's TLS 1.3
 * session (RFC 8446 7.5): keys never come from config files and are never written anywhere.
 * The ESP outer header runs between the two tunnel addresses, which NAT never sees.
 *
 * Rekeying is make-before-break, on `rekeySeconds` or after 2^40 packets under one key (see
 * IpsecOverGreSession). Key epochs come from the same TLS session: rekeying limits how much
 * one key protects; it does not add forward secrecy.
 */
import {randomInt} from 'node:crypto'
import type {
  CarrierSpec,
  CoreApi,
  Drop,
  FastCodec,
  NodeSession,
  Session,
  SessionContext,
  SessionParams,
  Span,
  Transport,
  TransportHookOptions,
  TransportOptions,
} from '../../../src/core/transport/contract.js'
import type {GreCodec, GreFlags, GreHeader} from '../../../src/core/codecs/gre/index.js'
import {ESP_HEADROOM, ESP_KEY_MATERIAL_LENGTH, ESP_MAX_OVERHEAD, ESP_MAX_TAILROOM, EspOpener, EspSa, EspSealer, ipv4ToUint32} from './esp.js'
import {ReplayWindow} from './replay.js'

export const DEFAULT_PORT = 4754
const IPPROTO_GRE = 47
const KEEPALIVE_SECONDS = 15
/** GRE carries only the key: ESP has its own integrity and replay protection. */
const GRE_FLAGS: GreFlags = {checksum: false, sequence: false}
const DEFAULT_REKEY_SECONDS = 3600

function rekeyMs(options: TransportOptions): number {
  return (typeof options.rekeySeconds === 'number' ? options.rekeySeconds : DEFAULT_REKEY_SECONDS) * 1000
}

interface Direction {
  spi: number
  key: Buffer
}

/** How long an old inbound SA still opens packets after a rekey: reordering, packets in flight. */
export const REKEY_OVERLAP_MS = 10_000
/** Rekey before 2^40 packets under one key (ESN makes 2^64 the hard limit; AES-GCM wants far less). */
const REKEY_AFTER_PACKETS = 1n << 40n

/** The exporter context of key epoch n: both ends derive the same keys for the same epoch. */
function epochContext(epoch: number): Buffer {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(epoch)
  return b
}

const C2S = 'esp c2s'
const S2C = 'esp s2c'

/**
 * Rekeying, make-before-break, driven by the node on `rekeySeconds` or a packet count:
 *   node:   new inbound SPI (allocated, bound) and SA for the next epoch; tells the client
 *           {rekey: epoch, spi}. Its old inbound SA keeps opening packets.
 *   client: new inbound SA on an SPI of its own; seals with the node's new SPI and key from
 *           now on; answers {ack: epoch, spi}.
 *   node:   seals with the client's new SPI and key. After REKEY_OVERLAP_MS both ends drop
 *           their old inbound SA (the node unbinds its old SPI).
 * Traffic never waits for a rekey: each end keeps sealing under the old key until it has the new.
 */
class IpsecOverGreSession implements NodeSession {
  readonly headroom: number
  readonly tailroom = ESP_MAX_TAILROOM
  readonly params: SessionParams
  private readonly header: GreHeader
  private readonly esp: Span = {offset: 0, length: 0}
  private sealer: EspSealer | null = null
  /** Inbound SAs by SPI (which is also the GRE key the packets carry): the current and, during a rekey, the previous. */
  private readonly openers = new Map<number, EspOpener>()
  private current: number
  private txKey = 0
  private epoch = 0
  private epochStarted = Date.now()
  private pendingEpoch: number | null = null
  private retire: {spi: number; at: number} | null = null
  private fast: FastCodec | undefined = undefined

  constructor(
    private readonly gre: GreCodec,
    private readonly ctx: SessionContext,
    inboundSpi: number,
    private readonly maxPayload: number,
    private readonly rekeyMs: number,
  ) {
    this.headroom = gre.GRE_MAX_HEADER_LENGTH + ESP_HEADROOM
    this.header = gre.createGreHeader()
    this.current = inboundSpi
    this.params = {spi: inboundSpi}
    this.addInbound(inboundSpi, 0)
  }

  /**
   * The core carries the common packet natively with these very SAs (and their counter and
   * replay windows, which are shared, not copied). Rebuilt whenever an SA comes or goes.
   */
  get fastPath(): FastCodec | undefined {
    return this.fast
  }

  private fastPathChanged(): void {
    const s = this.sealer
    this.fast = {
      kind: 'esp-gcm-in-gre',
      outbound: s === null ? null : {spi: s.sa.spi, keyMaterial: s.sa.keyMaterial, counter: s.counter, src: s.src, dst: s.dst},
      inbound: [...this.openers.values()].map((o) => ({spi: o.sa.spi, keyMaterial: o.sa.keyMaterial, window: o.replay.state, windowSize: o.replay.size})),
    }
    this.ctx.fastPathChanged()
  }

  /** The SPI this end receives on now (shown by `agent status`). */
  get id(): number {
    return this.current
  }

  private get inboundLabel(): string {
    return this.ctx.role === 'node' ? C2S : S2C
  }

  private get outboundLabel(): string {
    return this.ctx.role === 'node' ? S2C : C2S
  }

  private addInbound(spi: number, epoch: number): void {
    const key = this.ctx.exportKey(this.inboundLabel, ESP_KEY_MATERIAL_LENGTH, epochContext(epoch))
    this.openers.set(spi, new EspOpener(new EspSa({spi, key, esn: true}), new ReplayWindow()))
    key.fill(0)
    this.fastPathChanged()
  }

  /** Seal towards the other end's SPI, under the key of `epoch`. */
  sendTo(spi: number, epoch: number): void {
    const key = this.ctx.exportKey(this.outboundLabel, ESP_KEY_MATERIAL_LENGTH, epochContext(epoch))
    const [local, remote] = this.ctx.role === 'node' ? [this.ctx.nodeAddress, this.ctx.tunnelAddress] : [this.ctx.tunnelAddress, this.ctx.nodeAddress]
    this.sealer = new EspSealer(new EspSa({spi, key, esn: true}), ipv4ToUint32(local), ipv4ToUint32(remote))
    key.fill(0)
    this.txKey = spi
    this.fastPathChanged()
  }

  encap(buf: Buffer, offset: number, length: number, out: Span): boolean {
    const esp = this.esp
    if (this.sealer === null || !this.sealer.seal(buf, offset, length, esp)) return false
    const start = this.gre.writeGreHeader(buf, esp.offset, esp.length, this.txKey, GRE_FLAGS, 0)
    if (start < 0) return false
    out.offset = start
    out.length = esp.offset - start + esp.length
    return true
  }

  decap(buf: Buffer, offset: number, length: number, out: Span): Drop | null {
    const h = this.header
    const bad = this.gre.parseGre(buf, offset, length, this.maxPayload + ESP_MAX_OVERHEAD, h)
    if (bad !== null) return bad
    const opener = this.openers.get(h.key)
    if (opener === undefined) return 'unknown-session'
    return opener.open(buf, offset + h.headerLength, length - h.headerLength, out)
  }

  tick(now: number): void {
    if (this.retire !== null && now >= this.retire.at) {
      this.openers.get(this.retire.spi)?.sa.destroy()
      this.openers.delete(this.retire.spi)
      if (this.ctx.role === 'node') this.ctx.unbindId(this.retire.spi)
      this.retire = null
      this.fastPathChanged()
    }
    if (this.ctx.role !== 'node' || this.pendingEpoch !== null || this.retire !== null || this.sealer === null) return
    const due = now - this.epochStarted >= this.rekeyMs || (this.sealer.sequence ?? 0n) >= REKEY_AFTER_PACKETS
    if (!due) return
    const epoch = this.epoch + 1
    const spi = this.ctx.allocateId()
    this.ctx.bindId(spi)
    this.addInbound(spi, epoch)
    this.pendingEpoch = epoch
    this.retire = null
    this.previous = this.current
    this.current = spi
    this.ctx.sendControl({rekey: epoch, spi})
  }

  private previous = 0

  onControl(message: SessionParams): void {
    const {spi} = message
    if (typeof spi !== 'number') return
    if (this.ctx.role === 'node') {
      if (message.hello === true && this.sealer === null) {
        // The client's first inbound SPI, which it chose.
        this.sendTo(spi, 0)
      } else if (message.ack === this.pendingEpoch && this.pendingEpoch !== null) {
        this.sendTo(spi, this.pendingEpoch)
        this.epoch = this.pendingEpoch
        this.pendingEpoch = null
        this.epochStarted = Date.now()
        this.retire = {spi: this.previous, at: Date.now() + REKEY_OVERLAP_MS}
      }
    } else if (typeof message.rekey === 'number' && message.rekey === this.epoch + 1) {
      const epoch = message.rekey
      const mine = randomSpi()
      this.addInbound(mine, epoch)
      this.retire = {spi: this.current, at: Date.now() + REKEY_OVERLAP_MS}
      this.current = mine
      this.sendTo(spi, epoch)
      this.epoch = epoch
      this.ctx.sendControl({ack: epoch, spi: mine})
    }
  }

  close(): void {
    this.sealer?.sa.destroy()
    this.sealer = null
    for (const o of this.openers.values()) o.sa.destroy()
    this.openers.clear()
    this.fast = undefined
    this.ctx.fastPathChanged()
  }
}

/** 1-255 are reserved SPI values (RFC 4303 2.1). */
function randomSpi(): number {
  return randomInt(256, 0xffffffff)
}

function carrierOf(options: TransportOptions): CarrierSpec {
  return options.carrier === 'ip'
    ? {kind: 'ip', ipProtocol: IPPROTO_GRE, fastCodec: 'esp-gcm-in-gre'}
    : {kind: 'udp', port: typeof options.port === 'number' ? options.port : DEFAULT_PORT, fastCodec: 'esp-gcm-in-gre'}
}

/** The ipsec-over-gre transport, on the GRE codec the core hands over. */
export function createIpsecOverGreTransport(core: CoreApi): Transport {
  const gre = core.gre
  return {
    name: 'ipsec-over-gre',
    description: 'IPsec ESP with AES-256-GCM, carried in GRE over UDP (default port 4754) or IP protocol 47',
    carrier: carrierOf,
    overhead(): number {
      return gre.greHeaderLength(GRE_FLAGS) + ESP_MAX_OVERHEAD
    },
    nat: {keepaliveSeconds: KEEPALIVE_SECONDS},
    openNodeSession(ctx: SessionContext): NodeSession {
      return new IpsecOverGreSession(gre, ctx, ctx.allocateId(), ctx.mtu, rekeyMs(ctx.options))
    },
    openClientSession(ctx: SessionContext, params: SessionParams): Session {
      if (typeof params.spi !== 'number') throw new Error('the node sent no SPI')
      // The client receives on an SPI of its own choosing and tells the node.
      const mine = randomSpi()
      const session = new IpsecOverGreSession(gre, ctx, mine, ctx.mtu, rekeyMs(ctx.options))
      session.sendTo(params.spi, 0)
      ctx.sendControl({hello: true, spi: mine})
      return session
    },
    sessionIdOf: gre.peekGreKey,
  }
}

/** The `agent:transport` oclif hook: the core runs it on every plugin to discover transports. */
export default async function discover(opts: TransportHookOptions): Promise<Transport> {
  return createIpsecOverGreTransport(opts.core)
}
