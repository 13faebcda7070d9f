/**
 * The `tls` transport: inner IP packets travel as DATA frames inside the control channel's own
 * TLS 1.3 connection (TCP, port 443 by default), as OpenVPN does in TCP mode. TLS gives
 * confidentiality, integrity and replay protection; TCP gives NAT traversal for free, since the
 * client opens the connection and keepalive pings keep the mapping warm.
 *
 * So the transport itself adds no header: the core's stream framing delimits packets and the
 * TLS record layer protects them. Encap and decap only hand the span through, which the
 * session declares (fastPath identity) so the core's native records can skip them.
 */
import type {
  CarrierSpec,
  Drop,
  NodeSession,
  Session,
  SessionContext,
  Span,
  Transport,
  TransportHookOptions,
  TransportOptions,
} from '../../../src/core/transport/contract.js'

const DEFAULT_KEEPALIVE_SECONDS = 10

class PassThroughSession implements NodeSession {
  readonly headroom = 0
  readonly tailroom = 0
  readonly params = {}
  /** Encap and decap are the identity: the core may carry the packets without calling them. */
  readonly fastPath = {kind: 'identity'} as const

  encap(_buf: Buffer, offset: number, length: number, out: Span): boolean {
    out.offset = offset
    out.length = length
    return true
  }

  decap(_buf: Buffer, offset: number, length: number, out: Span): Drop | null {
    out.offset = offset
    out.length = length
    return null
  }

  close(): void {}
}

export const tlsTransport: Transport = {
  name: 'tls',
  description: 'IP over TLS 1.3 on TCP, sharing the control connection (default port 443)',
  carrier(_options: TransportOptions): CarrierSpec {
    return {kind: 'stream'}
  },
  overhead(): number {
    return 0
  },
  nat: {keepaliveSeconds: DEFAULT_KEEPALIVE_SECONDS},
  openNodeSession(_ctx: SessionContext): NodeSession {
    return new PassThroughSession()
  },
  openClientSession(_ctx: SessionContext): Session {
    return new PassThroughSession()
  },
}

/** The `agent:transport` oclif hook: the core runs it on every plugin to discover transports. */
export default async function discover(_opts: TransportHookOptions): Promise<Transport> {
  return tlsTransport
}
