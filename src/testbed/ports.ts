/**
 * Which local ports a namespace hands out. The node steers each client endpoint to one of its
 * workers by (source address ^ source port) % n (net.c's steer); clients behind the testbed's
 * one NAT share its address and keep their ports through it, so giving each client's namespace
 * ports of one parity decides, in every run, which of 2 workers it lands on.
 */
import type {Testbed} from './types.js'

const LOW = 40000
const HIGH = 40199

/** From now on `ns` picks its local (ephemeral) ports among even (0) or odd (1) ones only. */
export async function useLocalPortParity(tb: Testbed, ns: string, parity: 0 | 1): Promise<void> {
  const reserved: number[] = []
  for (let p = LOW; p <= HIGH; p++) if (p % 2 !== parity) reserved.push(p)
  await tb.exec(ns, 'sysctl', ['-w', `net.ipv4.ip_local_port_range=${LOW} ${HIGH}`], {check: true})
  await tb.exec(ns, 'sysctl', ['-w', `net.ipv4.ip_local_reserved_ports=${reserved.join(',')}`], {check: true})
}
