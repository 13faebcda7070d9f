/**
 * The `gre` transport: GRE (RFC 2784, with the key and sequence extensions of RFC 2890) done in
 * user space on both ends, the design notes' answer to Windows having no GRE.
 *
 * Carriers: `udp` (default), GRE-in-UDP per RFC 8086 on port 4754, which crosses home NATs;
 * `ip`, bare IP protocol 47, for ends with public addresses and nothing rewriting between them.
 * The node gives each client its own 32-bit key at the handshake; all clients share one socket
 * and the key picks the session. GRE is NOT encrypted: use tls or ipsec-over-gre on untrusted
 * paths.
 */
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

export const GRE_IN_UDP_PORT = 4754
export const IPPROTO_GRE = 47
const KEEPALIVE_SECONDS = 15

function flagsOf(options: TransportOptions): GreFlags {
  return {checksum: options.checksum === true, sequence: options.sequence === true}
}

class GreSession implements NodeSession {
  readonly headroom: number
  readonly tailroom = 0
  readonly params: SessionParams
  /** Checksums and sequence numbers are JavaScript's work; a plain keyed header is the core's. */
  readonly fastPath: FastCodec | undefined
  private readonly header: GreHeader
  private readonly tx: InstanceType<GreCodec['SequenceCounter']>
  private readonly rx: InstanceType<GreCodec['SequenceWindow']>

  constructor(
    private readonly gre: GreCodec,
    readonly id: number,
    private readonly flags: GreFlags,
    private readonly maxPayload: number,
  ) {
    this.headroom = gre.GRE_MAX_HEADER_LENGTH
    this.header = gre.createGreHeader()
    this.tx = new gre.SequenceCounter(0)
    this.rx = new gre.SequenceWindow()
    this.params = {key: id, checksum: flags.checksum, sequence: flags.sequence}
    this.fastPath = flags.checksum || flags.sequence ? undefined : {kind: 'gre', key: id}
  }

  encap(buf: Buffer, offset: number, length: number, out: Span): boolean {
    const start = this.gre.writeGreHeader(buf, offset, length, this.id, this.flags, this.flags.sequence ? this.tx.next() : 0)
    if (start < 0) return false
    out.offset = start
    out.length = offset - start + length
    return true
  }

  decap(buf: Buffer, offset: number, length: number, out: Span): Drop | null {
    return this.open(buf, offset, length, out, true)
  }

  /** From an endpoint not proven yet: the sequence number must be there, but moves nothing. */
  peek(buf: Buffer, offset: number, length: number, out: Span): Drop | null {
    return this.open(buf, offset, length, out, false)
  }

  private open(buf: Buffer, offset: number, length: number, out: Span, commit: boolean): Drop | null {
    const h = this.header
    const bad = this.gre.parseGre(buf, offset, length, this.maxPayload, h)
    if (bad !== null) return bad
    if (h.key !== this.id) return 'unknown-session'
    // RFC 2890 2.2: in order or not at all (no reordering buffer: games prefer loss to delay).
    if (this.flags.sequence && (!h.hasSequence || (commit && !this.rx.accept(h.sequence)))) return 'replay'
    out.offset = offset + h.headerLength
    out.length = length - h.headerLength
    return null
  }

  close(): void {}
}

/** The gre transport, on the GRE codec the core hands over. */
export function createGreTransport(core: CoreApi): Transport {
  const gre = core.gre
  return {
    name: 'gre',
    description: 'GRE (RFC 2784/2890) over UDP (RFC 8086, default port 4754) or IP protocol 47; not encrypted',
    carrier(options: TransportOptions): CarrierSpec {
      const flags = flagsOf(options)
      const fastCodec = flags.checksum || flags.sequence ? undefined : ('gre' as const) // as GreSession.fastPath
      return options.carrier === 'ip'
        ? {kind: 'ip', ipProtocol: IPPROTO_GRE, fastCodec}
        : {kind: 'udp', port: typeof options.port === 'number' ? options.port : GRE_IN_UDP_PORT, fastCodec}
    },
    overhead(options: TransportOptions): number {
      return gre.greHeaderLength(flagsOf(options))
    },
    nat: {keepaliveSeconds: KEEPALIVE_SECONDS},
    openNodeSession(ctx: SessionContext): NodeSession {
      return new GreSession(gre, ctx.allocateId(), flagsOf(ctx.options), ctx.mtu)
    },
    openClientSession(ctx: SessionContext, params: SessionParams): Session {
      if (typeof params.key !== 'number') throw new Error('the node sent no GRE key')
      return new GreSession(gre, params.key, {checksum: params.checksum === true, sequence: params.sequence === true}, ctx.mtu)
    },
    sessionIdOf: gre.peekGreKey,
  }
}

/** The `agent:transport` oclif hook: the core runs it on every plugin to discover transports. */
export default async function discover(opts: TransportHookOptions): Promise<Transport> {
  return createGreTransport(opts.core)
}
