import type {ChildProcess, SpawnOptions} from 'node:child_process'
import type {ExecOptions, ExecResult} from './run.js'

export interface TestbedOptions {
  /** Namespace name prefix; letters, digits, _; must not end in a digit. Default `tb`. */
  prefix?: string
  /** Clients behind the home NAT (192.168.77.11, .12, ...). Default 2, at most 40. */
  clients?: number
  /**
   * Clients without NAT, directly on the node's wan link (198.51.100.50, .51, ...).
   * `true` means one. Default none.
   */
  publicClients?: number | boolean
  /**
   * Proxy nodes on the wan switch, each with its own public address and its own egress link to
   * the target (see addresses.ts). Default 1, at most 8. names.node, addr.nodeWan... are node 1.
   */
  nodes?: number
  /** Add the `ctl` namespace on the wan switch (198.51.100.200) for fleet services such as etcd. Default no. */
  ctl?: boolean
  /** Keep IPv6 on. Off by default so captures hold only the IPv4 traffic a test makes. */
  ipv6?: boolean
}

export interface TestbedNames {
  /** Namespaces of the clients behind the NAT: client[0] is "client1". */
  client: string[]
  /** Namespaces of the clients on the wan link (no NAT). */
  publicClient: string[]
  /** The home router: bridge for the clients, MASQUERADE out of its wan. */
  nat: string
  /** An L2 switch (bridge only, no addresses) joining nat, node and public clients on 198.51.100.0/24. */
  wan: string
  /** The proxy node: node 1, nodes[0]. */
  node: string
  /** Every node's namespace, node 1 first (namespace roles node, node2, node3...). */
  nodes: string[]
  /** The fleet-services namespace on the wan switch, when TestbedOptions.ctl. */
  ctl?: string
  /** The destination ("game server"). */
  target: string
  /** Every namespace of this testbed. */
  all: string[]
}

export interface TestbedAddresses {
  lanSubnet: string
  /** The NAT's address on the clients' LAN, their default gateway. */
  natLan: string
  /** One per entry of names.client. */
  client: string[]
  wanSubnet: string
  /** Node 1's public address, where clients connect. */
  nodeWan: string
  /** Every node's public address, one per entry of names.nodes. */
  nodesWan: string[]
  /** The NAT's public address: what the node sees as the NATed clients' source. */
  natWan: string
  /** One per entry of names.publicClient. */
  publicClient: string[]
  /** The ctl namespace's address on the wan switch, when TestbedOptions.ctl. */
  ctl?: string
  egressSubnet: string
  /** The node's address towards the target: the source the target sees after the node's SNAT. */
  nodeEgress: string
  /** Every node's egress address (node k: 203.0.113.k), one per entry of names.nodes. */
  nodesEgress: string[]
  target: string
  /** Second address of the target, for tests that route one destination and not another. */
  target2: string
}

/** Interface names inside the namespaces (each namespace has its own, so they repeat). */
export interface TestbedInterfaces {
  client: string
  publicClient: string
  natLan: string
  natWan: string
  nodeWan: string
  nodeEgress: string
  /** The target's bridge, holding its addresses; the nodes' egress links are its ports. */
  target: string
  ctl: string
}

export interface Testbed {
  /** `<prefix><pid>-<seq>`: every namespace name starts with it. */
  readonly id: string
  readonly names: TestbedNames
  readonly addr: TestbedAddresses
  readonly ifaces: TestbedInterfaces
  /** Scratch directory for configs, keys and logs; removed by destroy(). */
  readonly dir: string
  /**
   * A scratch subdirectory for one namespace (created on first use). Useful because
   * `ip netns exec` shares the filesystem: two agents in two namespaces writing /run/agent
   * would overwrite each other's files.
   */
  nsDir(ns: string): string
  /** Run a command in one of this testbed's namespaces; resolves with its exit code, rejects only with `check`. */
  exec(ns: string, cmd: string, args?: readonly string[], opts?: ExecOptions): Promise<ExecResult>
  /**
   * Start a long-running command in a namespace (`ip netns exec`, which execs the command, so
   * child.pid is the command's own pid). Tracked: destroy() kills it if still running.
   */
  spawn(ns: string, cmd: string, args?: readonly string[], opts?: SpawnOptions): ChildProcess
  /** SIGTERM, then SIGKILL after timeoutMs (default 3000); resolves once the process has exited. */
  stop(child: ChildProcess, timeoutMs?: number): Promise<void>
  /** `sysctl -w` in a namespace, e.g. sysctl(names.node, {'net.ipv4.ip_forward': 1}). */
  sysctl(ns: string, settings: Readonly<Record<string, string | number>>): Promise<void>
  /** Conntrack UDP timeouts in the NAT: unreplied flows and, unless given apart, assured ("stream") flows. */
  setNatUdpTimeout(seconds: number, streamSeconds?: number): Promise<void>
  /** Forget every NAT mapping, as a home router reboot would. */
  flushNatConntrack(): Promise<void>
  /** Kill tracked processes and whatever else runs in the namespaces, delete the namespaces and dir. Idempotent. */
  destroy(): Promise<void>
}

export type {ExecOptions, ExecResult}
