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
import {type GreFlags, type GreHeader, GRE_MAX_HEADER_LENGTH, createGreHeader, greHeaderLength, parseGre, peekGreKey, writeGreHeader} from './codec.js'
import {SequenceCounter, SequenceWindow} from './sequence.js'

export const GRE_IN_UDP_PORT = 4754
export const IPPROTO_GRE = 47
const KEEPALIVE_SECONDS = 15

function flagsOf(options: TransportOptions): GreFlags {
  return {checksum: options.checksum === true, sequence: options.sequence === true}
}

class GreSession implements NodeSession {
  readonly headroom = GRE_MAX_HEADER_LENGTH
  readonly tailroom = 0
  readonly params: SessionParams
  private readonly header: GreHeader = createGreHeader()
  private readonly tx = new SequenceCounter(0)
  private readonly rx = new SequenceWindow()

  constructor(
    readonly id: number,
    private readonly flags: GreFlags,
    private readonly maxPayload: number,
  ) {
    this.params = {key: id, checksum: flags.checksum, sequence: flags.sequence}
  }

  encap(buf: Buffer, offset: number, length: number, out: Span): boolean {
    const start = writeGreHeader(buf, offset, length, this.id, this.flags, this.flags.sequence ? this.tx.next() : 0)
    if (start < 0) return false
    out.offset = start
    out.length = offset - start + length
    return true
  }

  decap(buf: Buffer, offset: number, length: number, out: Span): Drop | null {
    const h = this.header
    const bad = parseGre(buf, offset, length, this.maxPayload, h)
    if (bad !== null) return bad
    if (h.key !== this.id) return 'unknown-session'
    // RFC 2890 2.2: in order or not at all (no reordering buffer: games prefer loss to delay).
    if (this.flags.sequence && (!h.hasSequence || !this.rx.accept(h.sequence))) return 'replay'
    out.offset = offset + h.headerLength
    out.length = length - h.headerLength
    return null
  }

  close(): void {}
}

export const greTransport: Transport = {
  name: 'gre',
  description: 'GRE (RFC 2784/2890) over UDP (RFC 8086, default port 4754) or IP protocol 47; not encrypted',
  carrier(options: TransportOptions): CarrierSpec {
    return options.carrier === 'ip'
      ? {kind: 'ip', ipProtocol: IPPROTO_GRE}
      : {kind: 'udp', port: typeof options.port === 'number' ? options.port : GRE_IN_UDP_PORT}
  },
  overhead(options: TransportOptions): number {
    return greHeaderLength(flagsOf(options))
  },
  nat: {keepaliveSeconds: KEEPALIVE_SECONDS},
  openNodeSession(ctx: SessionContext): NodeSession {
    return new GreSession(ctx.allocateId(), flagsOf(ctx.options), ctx.mtu)
  },
  openClientSession(ctx: SessionContext, params: SessionParams): Session {
    if (typeof params.key !== 'number') throw new Error('the node sent no GRE key')
    return new GreSession(params.key, {checksum: params.checksum === true, sequence: params.sequence === true}, ctx.mtu)
  },
  sessionIdOf: peekGreKey,
}

/** The `agent:transport` oclif hook: the core runs it on every plugin to discover transports. */
export default async function discover(_opts: TransportHookOptions): Promise<Transport> {
  return greTransport
}
