/**
 * The namespace testbed:
 *
 *   client1..N (192.168.77.11.., gw .1) ── bridge `lan` in nat (192.168.77.1/24)
 *   nat: wan 198.51.100.2/24, default via .1, MASQUERADE out of wan, ip_forward=1
 *   wan: an L2 switch (bridge `sw`) joining nat, the nodes, public clients (198.51.100.50..) and ctl
 *   node (node1), node2..: wan 198.51.100.1/24 (.3, .4.. for node2..), egress 203.0.113.k/24;
 *     no forwarding, no NAT (the agent's job)
 *   target: bridge `eth0` with 203.0.113.10/24 + .20/24, one port per node's egress link, no
 *     default route (replies need the node's SNAT; each node's SNAT source is its own .k)
 *   ctl (optional): eth0 198.51.100.200/24 on the wan switch, for fleet services (etcd)
 *
 * Every link is created from inside a namespace with its peer placed straight into another
 * (`ip -n A link add ... peer ... netns B`), so the root namespace never sees a link, route or
 * rule of ours.
 */
import type {ChildProcess, SpawnOptions} from 'node:child_process'
import {spawn} from 'node:child_process'
import {mkdirSync, mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {addressPlan, INTERFACES, MAX_CLIENTS, MAX_NODES} from './addresses.js'
import {registerCleanup} from './cleanup.js'
import {checkPrefix, nsName} from './names.js'
import {addNamespace, deleteNamespace, deleteNamespaceSync, listNamespaces} from './netns.js'
import {stopProcess} from './process.js'
import {run, type ExecOptions, type ExecResult} from './run.js'
import type {Testbed, TestbedAddresses, TestbedInterfaces, TestbedNames, TestbedOptions} from './types.js'

/** Parent of every testbed's scratch dir, so cleanupStale only ever looks in here. */
export const SCRATCH_ROOT = join(tmpdir(), 'agent-testbed')

// On globalThis, not in module scope: a test runner that re-evaluates this module in the same
// process must not hand out a sequence number twice.
const SEQ = Symbol.for('agent.testbed.seq')
const g = globalThis as {[SEQ]?: number}
const takeSeq = (): number => (g[SEQ] = (g[SEQ] ?? 0) + 1)

const prefixLen = (cidr: string) => cidr.split('/')[1]

class NsTestbed implements Testbed {
  readonly id: string
  readonly names: TestbedNames
  readonly addr: TestbedAddresses
  readonly ifaces: TestbedInterfaces = INTERFACES
  readonly dir: string
  private readonly roles = new Map<string, string>()
  private readonly children = new Set<ChildProcess>()
  private destroying: Promise<void> | undefined
  private readonly unregister: () => void

  constructor(prefix: string, clients: number, publicClients: number, nodeCount: number, withCtl: boolean) {
    const seq = takeSeq()
    this.id = `${prefix}${process.pid}-${seq}`
    const name = (role: string) => {
      const n = nsName(prefix, process.pid, seq, role)
      this.roles.set(n, role)
      return n
    }
    const client = Array.from({length: clients}, (_, i) => name(`c${i + 1}`))
    const publicClient = Array.from({length: publicClients}, (_, i) => name(`p${i + 1}`))
    const nat = name('nat')
    const wan = name('wan')
    // Node 1 keeps the role `node` (and so its nsDir) whatever the count.
    const nodes = Array.from({length: nodeCount}, (_, i) => name(i === 0 ? 'node' : `node${i + 1}`))
    const target = name('tgt')
    const ctl = withCtl ? name('ctl') : undefined
    this.names = {
      client,
      publicClient,
      nat,
      wan,
      node: nodes[0],
      nodes,
      ...(ctl ? {ctl} : {}),
      target,
      all: [wan, nat, ...nodes, target, ...client, ...publicClient, ...(ctl ? [ctl] : [])],
    }
    this.addr = addressPlan(clients, publicClients, nodeCount, withCtl)
    mkdirSync(SCRATCH_ROOT, {recursive: true})
    this.dir = mkdtempSync(join(SCRATCH_ROOT, `${this.id}-`))
    // Registered before the first namespace exists, so even a crash mid-build cleans up.
    this.unregister = registerCleanup(() => this.destroySync())
  }

  nsDir(ns: string): string {
    const role = this.role(ns)
    const d = join(this.dir, role)
    mkdirSync(d, {recursive: true})
    return d
  }

  exec(ns: string, cmd: string, args: readonly string[] = [], opts?: ExecOptions): Promise<ExecResult> {
    this.role(ns)
    return run('ip', ['netns', 'exec', ns, cmd, ...args], opts)
  }

  spawn(ns: string, cmd: string, args: readonly string[] = [], opts: SpawnOptions = {}): ChildProcess {
    this.role(ns)
    if (this.destroying) throw new Error(`testbed ${this.id} is being destroyed`)
    const child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], opts)
    this.children.add(child)
    child.once('exit', () => this.children.delete(child))
    // Without a listener a failed spawn would throw from an event; exec errors show as exit anyway.
    child.on('error', () => {})
    return child
  }

  stop(child: ChildProcess, timeoutMs?: number): Promise<void> {
    return stopProcess(child, timeoutMs)
  }

  async sysctl(ns: string, settings: Readonly<Record<string, string | number>>): Promise<void> {
    const kv = Object.entries(settings).map(([k, v]) => `${k}=${v}`)
    if (kv.length) await this.exec(ns, 'sysctl', ['-q', '-w', ...kv], {check: true})
  }

  async setNatUdpTimeout(seconds: number, streamSeconds = seconds): Promise<void> {
    await this.sysctl(this.names.nat, {
      'net.netfilter.nf_conntrack_udp_timeout': seconds,
      'net.netfilter.nf_conntrack_udp_timeout_stream': streamSeconds,
    })
  }

  async flushNatConntrack(): Promise<void> {
    const r = await this.exec(this.names.nat, 'conntrack', ['-F'])
    // conntrack -F says "0 flow entries have been deleted" on stderr and may exit 1 on an empty table.
    if (r.code !== 0 && !/flow entries have been deleted/.test(r.stderr)) {
      throw new Error(`conntrack -F in ${this.names.nat}: ${r.stderr.trim()}`)
    }
  }

  destroy(): Promise<void> {
    this.destroying ??= this.doDestroy()
    return this.destroying
  }

  private async doDestroy(): Promise<void> {
    await Promise.all([...this.children].map((c) => stopProcess(c, 2000)))
    const errors: unknown[] = []
    for (const ns of this.names.all) await deleteNamespace(ns).catch((e) => errors.push(e))
    rmSync(this.dir, {recursive: true, force: true})
    this.unregister()
    if (errors.length) throw new AggregateError(errors, `testbed ${this.id}: some namespaces were not deleted`)
  }

  /** For exit and signal handlers: nothing asynchronous runs there. */
  private destroySync(): void {
    for (const c of this.children) {
      try {
        if (c.pid !== undefined) process.kill(c.pid, 'SIGKILL')
      } catch {
        // Already gone.
      }
    }
    for (const ns of this.names.all) deleteNamespaceSync(ns)
    rmSync(this.dir, {recursive: true, force: true})
  }

  /** Guard: commands only ever run in our own namespaces, never by mistake in the root one. */
  private role(ns: string): string {
    const r = this.roles.get(ns)
    if (r === undefined) throw new Error(`${JSON.stringify(ns)} is not a namespace of testbed ${this.id}`)
    return r
  }

  private ipBatch(ns: string, lines: string[]): Promise<ExecResult> {
    return run('ip', ['-n', ns, '-batch', '-'], {input: lines.join('\n') + '\n', check: true})
  }

  async build(ipv6: boolean): Promise<void> {
    const {names: n, addr: a, ifaces: i} = this
    // A name with our pid and seq that already exists was left by a dead process that had our pid.
    const existing = new Set(await listNamespaces())
    for (const ns of n.all) {
      if (existing.has(ns)) await deleteNamespace(ns)
      await addNamespace(ns)
    }

    // Known starting state whatever the host has: a new namespace copies the root one's
    // ipv4 "all" settings (net.core.devconf_inherit_init_net=0), forwarding and rp_filter included.
    const base: Record<string, number> = {
      'net.ipv4.ip_forward': 0,
      'net.ipv4.conf.all.rp_filter': 0,
      'net.ipv4.conf.default.rp_filter': 0,
    }
    if (!ipv6) Object.assign(base, {'net.ipv6.conf.all.disable_ipv6': 1, 'net.ipv6.conf.default.disable_ipv6': 1})
    await Promise.all(n.all.map((ns) => this.sysctl(ns, ns === n.nat ? {...base, 'net.ipv4.ip_forward': 1} : base)))
    // Bridged frames should not go through iptables (br_netfilter may be built in); best effort,
    // as the keys exist only where br_netfilter is.
    const noBrNf = ['net.bridge.bridge-nf-call-iptables=0', 'net.bridge.bridge-nf-call-ip6tables=0', 'net.bridge.bridge-nf-call-arptables=0']
    await Promise.all([n.nat, n.wan, n.target].map((ns) => this.exec(ns, 'sysctl', ['-q', '-e', '-w', ...noBrNf])))

    await this.ipBatch(n.wan, ['link set dev lo up', 'link add name sw type bridge', 'link set dev sw up'])

    const lanLen = prefixLen(a.lanSubnet)
    const wanLen = prefixLen(a.wanSubnet)
    const egressLen = prefixLen(a.egressSubnet)
    await this.ipBatch(n.nat, [
      'link set dev lo up',
      `link add name ${i.natWan} type veth peer name nat netns ${n.wan}`,
      `link add name ${i.natLan} type bridge`,
      `addr add ${a.natWan}/${wanLen} dev ${i.natWan}`,
      `addr add ${a.natLan}/${lanLen} dev ${i.natLan}`,
      `link set dev ${i.natWan} up`,
      `link set dev ${i.natLan} up`,
      `route add default via ${a.nodeWan}`,
      ...n.client.flatMap((ns, k) => [
        `link add name c${k + 1} type veth peer name ${i.client} netns ${ns}`,
        `link set dev c${k + 1} master ${i.natLan}`,
        `link set dev c${k + 1} up`,
      ]),
    ])
    // The target's interface is a bridge, so any number of nodes share one egress segment and
    // the target answers each on the link its own address lives on.
    await this.ipBatch(n.target, ['link set dev lo up', `link add name ${i.target} type bridge`, `link set dev ${i.target} up`])
    // Switch port names: `node` for node 1 (as it always was), `node2`.. for the others.
    const nodePort = (k: number) => (k === 0 ? 'node' : `node${k + 1}`)
    for (const [k, ns] of n.nodes.entries()) {
      await this.ipBatch(ns, [
        'link set dev lo up',
        `link add name ${i.nodeWan} type veth peer name ${nodePort(k)} netns ${n.wan}`,
        `link add name ${i.nodeEgress} type veth peer name n${k + 1} netns ${n.target}`,
        `addr add ${a.nodesWan[k]}/${wanLen} dev ${i.nodeWan}`,
        `addr add ${a.nodesEgress[k]}/${egressLen} dev ${i.nodeEgress}`,
        `link set dev ${i.nodeWan} up`,
        `link set dev ${i.nodeEgress} up`,
      ])
    }
    await this.ipBatch(
      n.target,
      n.nodes.flatMap((_, k) => [`link set dev n${k + 1} master ${i.target}`, `link set dev n${k + 1} up`]),
    )
    if (n.ctl && a.ctl) {
      await this.ipBatch(n.ctl, [
        'link set dev lo up',
        `link add name ${i.ctl} type veth peer name ctl netns ${n.wan}`,
        `addr add ${a.ctl}/${wanLen} dev ${i.ctl}`,
        `link set dev ${i.ctl} up`,
      ])
    }
    for (const [k, ns] of n.publicClient.entries()) {
      await this.ipBatch(ns, [
        'link set dev lo up',
        `link add name ${i.publicClient} type veth peer name p${k + 1} netns ${n.wan}`,
        `addr add ${a.publicClient[k]}/${wanLen} dev ${i.publicClient}`,
        `link set dev ${i.publicClient} up`,
        `route add default via ${a.nodeWan}`,
      ])
    }
    const ports = ['nat', ...n.nodes.map((_, k) => nodePort(k)), ...n.publicClient.map((_, k) => `p${k + 1}`), ...(n.ctl ? ['ctl'] : [])]
    await this.ipBatch(
      n.wan,
      ports.flatMap((p) => [`link set dev ${p} master sw`, `link set dev ${p} up`]),
    )

    await Promise.all([
      ...n.client.map((ns, k) =>
        this.ipBatch(ns, [
          'link set dev lo up',
          `addr add ${a.client[k]}/${lanLen} dev ${i.client}`,
          `link set dev ${i.client} up`,
          `route add default via ${a.natLan}`,
        ]),
      ),
      this.ipBatch(n.target, [
        `addr add ${a.target}/${egressLen} dev ${i.target}`,
        `addr add ${a.target2}/${egressLen} dev ${i.target}`,
      ]),
      this.exec(n.nat, 'iptables', ['-w', '-t', 'nat', '-A', 'POSTROUTING', '-o', i.natWan, '-j', 'MASQUERADE'], {check: true}),
    ])
  }
}

/** Build a testbed (see the module comment for the topology). Needs root, iproute2, iptables, procps. */
export async function createTestbed(opts: TestbedOptions = {}): Promise<Testbed> {
  const prefix = opts.prefix ?? 'tb'
  checkPrefix(prefix)
  const clients = opts.clients ?? 2
  const publicClients = opts.publicClients === true ? 1 : opts.publicClients === false ? 0 : (opts.publicClients ?? 0)
  for (const [what, v] of [['clients', clients], ['publicClients', publicClients]] as const) {
    if (!Number.isInteger(v) || v < 0 || v > MAX_CLIENTS) throw new Error(`testbed ${what}: an integer 0..${MAX_CLIENTS}, got ${v}`)
  }
  const nodes = opts.nodes ?? 1
  if (!Number.isInteger(nodes) || nodes < 1 || nodes > MAX_NODES) throw new Error(`testbed nodes: an integer 1..${MAX_NODES}, got ${nodes}`)
  const tb = new NsTestbed(prefix, clients, publicClients, nodes, opts.ctl ?? false)
  try {
    await tb.build(opts.ipv6 ?? false)
  } catch (e) {
    await tb.destroy().catch(() => {})
    throw e
  }
  return tb
}
