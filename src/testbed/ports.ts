/**
 * Which local ports a namespace hands out. The node steers each client endpoint to one of its
 * n workers by (source address ^ source port) % n (net.c's steer, laneFor); clients behind the
 * testbed's one NAT share its address and keep their ports through it, so leaving a client's
 * namespace only the ports that steer to a chosen worker puts that client there in every run.
 */
import {laneFor} from '../core/carrier/datagram.js'
import {ipv4ToNumber} from '../core/net/ipv4.js'
import type {Testbed} from './types.js'

/** Ports per namespace: each gets its own range, so two never collide at the NAT (which would remap one). */
const SPAN = 200
const FIRST = 40000

/**
 * From now on namespace `ns` (the `index`th client: its own port range) picks its local ports
 * only among those whose datagrams, from the NAT's address, a node of `lanes` workers steers
 * to worker `lane`.
 */
export async function useLocalPortsForLane(tb: Testbed, ns: string, index: number, lane: number, lanes: number): Promise<void> {
  const low = FIRST + index * SPAN
  const high = low + SPAN - 1
  const nat = ipv4ToNumber(tb.addr.natWan)
  const reserved: number[] = []
  for (let p = low; p <= high; p++) if (laneFor(nat, p, lanes) !== lane) reserved.push(p)
  await tb.exec(ns, 'sysctl', ['-w', `net.ipv4.ip_local_port_range=${low} ${high}`], {check: true})
  await tb.exec(ns, 'sysctl', ['-w', `net.ipv4.ip_local_reserved_ports=${reserved.join(',')}`], {check: true})
}

/** Ports from `first` on that a node of `lanes` workers steers to `lane`, from the NAT's address. */
export function portsForLane(tb: Testbed, lane: number, lanes: number, count: number, first = 41000): number[] {
  const nat = ipv4ToNumber(tb.addr.natWan)
  const out: number[] = []
  for (let p = first; out.length < count; p++) if (laneFor(nat, p, lanes) === lane) out.push(p)
  return out
}
