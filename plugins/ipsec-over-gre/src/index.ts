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
 * Not yet: rekeying (make-before-break on rekeySeconds or before the sequence number wraps).
 * Until then a session's SAs last as long as its control connection; ESN is on, so the
 * 64-bit sequence number cannot wrap in practice.
 */
import {randomInt} from 'node:crypto'
import type {
  CarrierSpec,
  CoreApi,
  Drop,
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
/** The exporter context of the first (and, until rekeying lands, only) key epoch. */
const EPOCH_0 = Buffer.alloc(4)

interface Direction {
  spi: number
  key: Buffer
}

class IpsecOverGreSession implements NodeSession {
  readonly headroom: number
  readonly tailroom = ESP_MAX_TAILROOM
  readonly params: SessionParams
  private readonly header: GreHeader
  private readonly esp: Span = {offset: 0, length: 0}
  private sealer: EspSealer | null = null
  private opener: EspOpener | null = null
  private txKey = 0

  constructor(
    private readonly gre: GreCodec,
    private readonly ctx: SessionContext,
    /** The SPI of the SA this end receives on; also the GRE key of packets to this end. */
    readonly id: number,
    private readonly inbound: Direction,
    private readonly maxPayload: number,
  ) {
    this.headroom = gre.GRE_MAX_HEADER_LENGTH + ESP_HEADROOM
    this.header = gre.createGreHeader()
    this.params = {spi: id}
    this.opener = new EspOpener(new EspSa({spi: inbound.spi, key: inbound.key, esn: true}), new ReplayWindow())
    inbound.key.fill(0)
  }

  /** The other end's SPI is known: seal towards it. */
  sendTo(outbound: Direction, local: string, remote: string): void {
    this.sealer = new EspSealer(new EspSa({spi: outbound.spi, key: outbound.key, esn: true}), ipv4ToUint32(local), ipv4ToUint32(remote))
    outbound.key.fill(0)
    this.txKey = outbound.spi
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
    if (h.key !== this.id || this.opener === null) return 'unknown-session'
    return this.opener.open(buf, offset + h.headerLength, length - h.headerLength, out)
  }

  onControl(message: SessionParams): void {
    // The node learns the client's inbound SPI, which the client chose.
    if (this.ctx.role === 'node' && this.sealer === null && typeof message.spi === 'number') {
      this.sendTo({spi: message.spi, key: this.ctx.exportKey('esp s2c', ESP_KEY_MATERIAL_LENGTH, EPOCH_0)}, this.ctx.nodeAddress, this.ctx.tunnelAddress)
    }
  }

  close(): void {
    this.sealer = null
    this.opener = null
  }
}

function carrierOf(options: TransportOptions): CarrierSpec {
  return options.carrier === 'ip'
    ? {kind: 'ip', ipProtocol: IPPROTO_GRE}
    : {kind: 'udp', port: typeof options.port === 'number' ? options.port : DEFAULT_PORT}
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
      const spi = ctx.allocateId()
      const inbound = {spi, key: ctx.exportKey('esp c2s', ESP_KEY_MATERIAL_LENGTH, EPOCH_0)}
      return new IpsecOverGreSession(gre, ctx, spi, inbound, ctx.mtu)
    },
    openClientSession(ctx: SessionContext, params: SessionParams): Session {
      if (typeof params.spi !== 'number') throw new Error('the node sent no SPI')
      // The client receives on an SPI of its own choosing and tells the node.
      const mine = randomInt(256, 0xffffffff) // 1-255 are reserved (RFC 4303 2.1)
      const session = new IpsecOverGreSession(gre, ctx, mine, {spi: mine, key: ctx.exportKey('esp s2c', ESP_KEY_MATERIAL_LENGTH, EPOCH_0)}, ctx.mtu)
      session.sendTo({spi: params.spi, key: ctx.exportKey('esp c2s', ESP_KEY_MATERIAL_LENGTH, EPOCH_0)}, ctx.tunnelAddress, ctx.nodeAddress)
      ctx.sendControl({spi: mine})
      return session
    },
    sessionIdOf: gre.peekGreKey,
  }
}

/** The `agent:transport` oclif hook: the core runs it on every plugin to discover transports. */
export default async function discover(opts: TransportHookOptions): Promise<Transport> {
  return createIpsecOverGreTransport(opts.core)
}
