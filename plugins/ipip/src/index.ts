/**
 * The `ipip` transport: IP-in-IP (RFC 2003) done in user space on both ends.
 *
 * Carriers: `udp` (default, port 4755), the inner packet as a UDP payload like Linux `fou`,
 * which crosses home NATs; `ip`, bare IP protocol 4, for ends with public addresses and
 * nothing rewriting between them.
 *
 * IPIP has no key: the node tells clients apart by their public endpoint, which only an
 * authenticated keepalive can set or move (see docs/nat-traversal.md), and by the inner source,
 * which must be the client's own tunnel address. IPIP is NOT encrypted and proves nothing on
 * its own: use tls or ipsec-over-gre on untrusted paths.
 */
import type {
  CarrierSpec,
  Drop,
  FastCodec,
  NodeSession,
  Session,
  SessionContext,
  Span,
  Transport,
  TransportHookOptions,
  TransportOptions,
} from '../../../src/core/transport/contract.js'
import {IPPROTO_IPIP, checkInner} from './codec.js'

export const IPIP_IN_UDP_PORT = 4755
const KEEPALIVE_SECONDS = 15

class IpipSession implements NodeSession {
  readonly headroom = 0
  readonly tailroom = 0
  readonly params = {}
  /** The payload is the inner packet: the core carries it natively as is. */
  readonly fastPath: FastCodec = {kind: 'identity'}

  constructor(private readonly maxPayload: number) {}

  encap(_buf: Buffer, offset: number, length: number, out: Span): boolean {
    out.offset = offset
    out.length = length
    return true
  }

  decap(buf: Buffer, offset: number, length: number, out: Span): Drop | null {
    const bad = checkInner(buf, offset, length, this.maxPayload)
    if (bad !== null) return bad
    out.offset = offset
    out.length = length
    return null
  }

  close(): void {}
}

export const ipipTransport: Transport = {
  name: 'ipip',
  description: 'IP-in-IP (RFC 2003) over UDP (default port 4755) or IP protocol 4; not encrypted',
  carrier(options: TransportOptions): CarrierSpec {
    return options.carrier === 'ip'
      ? {kind: 'ip', ipProtocol: IPPROTO_IPIP, copyDfFromInner: true, fastCodec: 'identity'}
      : {kind: 'udp', port: typeof options.port === 'number' ? options.port : IPIP_IN_UDP_PORT, fastCodec: 'identity'}
  },
  overhead(): number {
    return 0
  },
  nat: {keepaliveSeconds: KEEPALIVE_SECONDS},
  openNodeSession(ctx: SessionContext): NodeSession {
    return new IpipSession(ctx.mtu)
  },
  openClientSession(ctx: SessionContext): Session {
    return new IpipSession(ctx.mtu)
  },
  innerOf(buf: Buffer, offset: number, length: number, out: Span): boolean {
    if (length < 20 || buf[offset] >> 4 !== 4) return false
    out.offset = offset
    out.length = length
    return true
  },
}

/** The `agent:transport` oclif hook: the core runs it on every plugin to discover transports. */
export default async function discover(_opts: TransportHookOptions): Promise<Transport> {
  return ipipTransport
}
