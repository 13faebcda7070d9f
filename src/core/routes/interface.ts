/**
 * Gives a freshly created TUN device its address and MTU and brings it up, with iproute2.
 */
import {parseIpv4} from '../net/ipv4.js'
import {assertInterfaceName} from '../sys/ifname.js'
import {run, type Runner} from '../sys/run.js'

export type InterfaceAddress =
  /**
   * A subnet on the link: the node's side, 10.8.0.1/24. With noPrefixRoute the kernel adds no
   * route for the subnet (a client's side: it routes only what it chose, welcome-address.ts).
   */
  | {address: string; prefix: number; peer?: undefined; noPrefixRoute?: boolean; mtu: number}
  /** Point-to-point: local address and the other end, e.g. a client's 10.8.0.2 peer 10.8.0.1. */
  | {address: string; peer: string; prefix?: undefined; noPrefixRoute?: undefined; mtu: number}

export interface IpOptions {
  /** How to run `ip`; tests pass netnsRunner(ns). */
  runner?: Runner
}

export async function configureInterface(name: string, cfg: InterfaceAddress, opts: IpOptions = {}): Promise<void> {
  const runner = opts.runner ?? run
  assertInterfaceName(name)
  if (parseIpv4(cfg.address) === undefined) throw new Error(`invalid address ${JSON.stringify(cfg.address)} for ${name}`)
  if (!Number.isInteger(cfg.mtu) || cfg.mtu < 68 || cfg.mtu > 65535) throw new Error(`invalid MTU ${cfg.mtu} for ${name}: expected 68..65535`)
  let local: string[]
  if (cfg.peer !== undefined) {
    if (parseIpv4(cfg.peer) === undefined) throw new Error(`invalid peer address ${JSON.stringify(cfg.peer)} for ${name}`)
    local = [cfg.address, 'peer', cfg.peer]
  } else {
    if (!Number.isInteger(cfg.prefix) || cfg.prefix < 0 || cfg.prefix > 32) throw new Error(`invalid prefix length ${cfg.prefix} for ${name}`)
    local = [`${cfg.address}/${cfg.prefix}`, ...(cfg.noPrefixRoute === true ? ['noprefixroute'] : [])]
  }
  // "replace", not "add": the same address already being there (a restart that reuses a
  // persistent device) is success, not "Address already assigned".
  await runner('ip', ['address', 'replace', ...local, 'dev', name])
  // The tunnel carries IPv4 only and the FORWARD rules are IPv4 rules: with IPv6 off on the
  // link nothing can bypass them, and the kernel sends no router solicitations into it.
  // Best effort: a kernel without IPv6 has no such knob, which is just as good.
  await runner('sysctl', ['-q', '-w', `net.ipv6.conf.${name.replace(/\./g, '/')}.disable_ipv6=1`], {allowFail: true})
  await runner('ip', ['link', 'set', 'dev', name, 'mtu', String(cfg.mtu), 'up'])
}
