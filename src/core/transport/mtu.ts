/**
 * The tunnel MTU, derived from what the carrier and the transport add, so that no
 * encapsulated packet needs fragmenting on a 1500-byte path.
 *
 * A stream carrier (TLS over TCP) is segmented by TCP, so the outer path never fragments it;
 * the limit there is the path the inner packet takes after the node, taken as 1500 too.
 */
import type {CarrierKind, Transport, TransportOptions} from './contract.js'

export const PATH_MTU = 1500

/** Outer headers the core's carrier adds: IPv4 (20) plus UDP (8) for udp, IPv4 alone for ip. */
export const CARRIER_HEADER: Record<CarrierKind, number> = {stream: 0, udp: 28, ip: 20}

export function tunnelMtu(transport: Transport, options: TransportOptions, pathMtu = PATH_MTU): number {
  const carrier = transport.carrier(options)
  if (carrier.kind === 'stream') return pathMtu
  return pathMtu - CARRIER_HEADER[carrier.kind] - transport.overhead(options)
}
