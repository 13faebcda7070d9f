/**
 * A fleet on a testbed, for the end-to-end tests and the benchmark: a fleet PKI made with the
 * real `agent pki` commands, the transport plugin installed with `agent plugins install`, node
 * and client config files, and the real `agent` binary started inside the namespaces.
 * Requires the build (dist/ and dist/plugins/*.tgz).
 */
import type {ChildProcess} from 'node:child_process'
import {execFile} from 'node:child_process'
import {existsSync, mkdirSync, writeFileSync} from 'node:fs'
import {dirname, join, resolve} from 'node:path'
import {promisify} from 'node:util'
import {createTestbed} from './topology.js'
import type {Testbed} from './types.js'

/** The package root: this file runs from src/testbed (tests) or dist/testbed (bench). */
export const ROOT = resolve(import.meta.dirname, '../..')
export const BIN = join(ROOT, 'bin/run.js')
const pexec = promisify(execFile)

/**
 * Environment for an agent: its own run dir and the fleet's plugin dir. The registry of nodes
 * holding ip_forward (state/ip-forward.ts) goes beside the run dir, in the testbed's scratch
 * dir rather than the host's /run: the namespaces are the testbed's, and it removes both.
 */
export function agentEnv(runDir: string, dataDir: string): NodeJS.ProcessEnv {
  return {...process.env, AGENT_RUN_DIR: runDir, AGENT_IP_FORWARD_DIR: join(dirname(runDir), 'ip-forward'), AGENT_DATA_DIR: dataDir, NO_COLOR: '1'}
}

/**
 * How to run the agent: this tree's bin/run.js under this Node.js, or another `agent` executable
 * (an installed release artifact, test/integration/release.test.ts).
 */
export function agentCommand(bin?: string): [string, string[]] {
  return bin === undefined ? [process.execPath, [BIN]] : [bin, []]
}

/** Run the agent CLI to completion outside any namespace (pki, config validate...). bin: as in agentCommand. */
export async function agentCli(args: string[], env: NodeJS.ProcessEnv = process.env, bin?: string): Promise<{stdout: string; stderr: string; code: number}> {
  const [cmd, pre] = agentCommand(bin)
  try {
    const r = await pexec(cmd, [...pre, ...args], {env, timeout: 60_000})
    return {stdout: r.stdout, stderr: r.stderr, code: 0}
  } catch (e) {
    const err = e as {stdout?: string; stderr?: string; code?: number}
    return {stdout: err.stdout ?? '', stderr: err.stderr ?? '', code: typeof err.code === 'number' ? err.code : 1}
  }
}

/** A running `agent up` whose output is kept, so a test can wait for any line, past or future. */
export class AgentProcess {
  output = ''
  readonly exited: Promise<number | null>

  constructor(readonly child: ChildProcess) {
    child.stdout?.on('data', (b: Buffer) => (this.output += b.toString()))
    child.stderr?.on('data', (b: Buffer) => (this.output += b.toString()))
    this.exited = new Promise((r) => child.once('exit', (code) => r(code)))
  }

  get pid(): number {
    return this.child.pid!
  }

  /** Wait until the output (from `from` on) matches; fail with the output when it exits or times out. */
  async waitFor(pattern: RegExp, timeoutMs = 20_000, from = 0): Promise<string> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const m = pattern.exec(this.output.slice(from))
      if (m) return m[0]
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`agent exited (${this.child.exitCode ?? this.child.signalCode}) before ${pattern}; output:\n${this.output}`)
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${pattern}; output:\n${this.output}`)
      await new Promise((r) => setTimeout(r, 50))
    }
  }
}

export interface Fleet {
  tb: Testbed
  transport: string
  /** The oclif data dir the transport plugin is installed in. */
  dataDir: string
  pki: string
  /** A CA that is not the fleet's, with a client "alice" of its own. */
  foreignPki: string
  /** Node 1's config file (nodeConfigs[0]). */
  nodeConfig: string
  /** One config per node: node k is named `nodek`, with its own certificate, in tb.names.nodes[k-1]. */
  nodeConfigs: string[]
  /** node: which node (1-based, default 1) the client connects to. */
  clientConfig(name: string, opts?: ClientConfigOptions): string
  /** node: which node to start (1-based, default 1), in its own namespace. env: more environment for this process only (over FleetOptions.env). */
  startNode(opts?: {args?: string[]; config?: string; env?: Record<string, string>; node?: number}): Promise<AgentProcess>
  startClient(
    name: string,
    index?: number,
    opts?: {args?: string[]; wait?: RegExp | null; ns?: string; env?: Record<string, string>} & Omit<ClientConfigOptions, 'index'>,
  ): Promise<AgentProcess>
  /** Run the agent CLI inside a namespace with that namespace's run dir. */
  cli(ns: string, args: string[]): Promise<{stdout: string; stderr: string; code: number}>
  runDir(ns: string): string
}

export const NODE_PORT = 4443

/** A client's config as the testbed writes it. */
export interface ClientConfigOptions {
  transport?: string
  index?: number
  routes?: string[]
  /** The one node to ride (1-based, default 1)... */
  node?: number
  /** ...or several: by number, or reached at another host and port (a delay relay) with that node's name. */
  nodes?: (number | {node: number; host: string; port?: number})[]
  /** More YAML for the end of the file (a `selection:` section...). */
  extra?: string
}

export interface FleetOptions {
  prefix: string
  clients?: number
  /** Nodes in the testbed, as in createTestbed (default 1). */
  nodes?: number
  /** The ctl namespace for fleet services (etcd), as in createTestbed. */
  ctl?: boolean
  /** Clients with public addresses on the node's link (no NAT), as in createTestbed. */
  publicClients?: number
  /** Default tls. */
  transport?: string
  /** An oclif data dir where the transport is installed already; else one is made and it is installed there. */
  dataDir?: string
  /** Seconds between keepalives (default 2, so tests notice a dead peer quickly). */
  keepalive?: number
  /** More options for the transport in the node's config (e.g. {carrier: 'ip'}). */
  transportOptions?: Record<string, string | number | boolean>
  /** The node's session.idleTimeout in seconds, if not the default. */
  idleTimeout?: number
  /** Flags for the Node.js running each agent, e.g. ['--cpu-prof'] to profile the data path. */
  nodeFlags?: string[]
  /** More environment for every agent process, e.g. {AGENT_FAST_PATH: 'off'}. */
  env?: Record<string, string>
  /** The `agent` executable to run (e.g. an installed release artifact); default this tree's bin/run.js. nodeFlags do not apply to it. */
  bin?: string
  /** More authorized clients beside alice and bob (the benchmark's 4 clients). */
  extraClients?: string[]
  /** The node's `workers`, if not the default ("auto"). */
  workers?: number | 'auto'
}

/**
 * Build the testbed and everything an operator would prepare: CA, node and client
 * credentials (alice and bob authorized; mallory has a valid certificate but is not listed),
 * the transport plugin, and config files.
 */
export async function createFleet(opts: FleetOptions): Promise<Fleet> {
  const tb = await createTestbed({
    prefix: opts.prefix,
    clients: opts.clients ?? 2,
    publicClients: opts.publicClients ?? 0,
    nodes: opts.nodes ?? 1,
    ctl: opts.ctl ?? false,
  })
  try {
    return await prepareFleet(tb, opts)
  } catch (e) {
    await tb.destroy()
    throw e
  }
}

/** Prepare a fleet on an existing testbed (the benchmark makes its own testbeds). */
export async function prepareFleet(tb: Testbed, opts: Omit<FleetOptions, 'prefix' | 'clients' | 'nodes' | 'ctl'>): Promise<Fleet> {
  const transport = opts.transport ?? 'tls'
  const keepalive = opts.keepalive ?? 2
  const nodeTransportOptions = Object.entries({keepalive, ...opts.transportOptions})
    .map(([k, v]) => `${k}: ${v}`)
    .join(', ')
  const pki = join(tb.dir, 'pki')
  const foreignPki = join(tb.dir, 'foreign-pki')
  const [cmd, pre] = agentCommand(opts.bin)
  const cliEnv = {...process.env, ...opts.env}
  const must = async (args: string[]) => {
    const r = await agentCli(args, cliEnv, opts.bin)
    if (r.code !== 0) throw new Error(`agent ${args.join(' ')} failed: ${r.stderr}`)
  }
  await must(['pki', 'init', '--dir', pki])
  const nodeCount = tb.names.nodes.length
  for (let k = 1; k <= nodeCount; k++) await must(['pki', 'issue', `node${k}`, '--node', '--dir', pki])
  const extra = opts.extraClients ?? []
  for (const c of ['alice', 'bob', 'mallory', ...extra]) await must(['pki', 'issue', c, '--dir', pki])
  await must(['pki', 'init', '--dir', foreignPki])
  await must(['pki', 'issue', 'alice', '--dir', foreignPki])
  const dataDir = opts.dataDir ?? join(tb.dir, 'data')
  if (opts.dataDir === undefined || !existsSync(join(dataDir, 'package.json'))) {
    const r = await agentCli(['plugins', 'install', transport], {...cliEnv, AGENT_DATA_DIR: dataDir}, opts.bin)
    if (r.code !== 0) throw new Error(`agent plugins install ${transport} failed: ${r.stderr}`)
  }

  const configs = join(tb.dir, 'configs')
  mkdirSync(configs, {recursive: true})
  // Every node has the same clients and tunnel subnet: each lives in its own namespace.
  const nodeConfigs = tb.names.nodes.map((_, i) => join(configs, `node${i + 1}.yaml`))
  for (const [i, file] of nodeConfigs.entries()) {
    writeFileSync(
      file,
      `role: node
name: node${i + 1}
transport: ${transport}
listen: {address: 0.0.0.0, port: ${NODE_PORT}}
tunnel: {interface: agtun0, subnet: 10.99.0.0/24}
egress: {interface: ${tb.ifaces.nodeEgress}}
pki: {bundle: ${pki}/node${i + 1}.pem}
clients:
  - name: alice
  - name: bob
    address: 10.99.0.50
${extra.map((n) => `  - name: ${n}\n`).join('')}transports:
  ${transport}: {${nodeTransportOptions}}
${opts.idleTimeout === undefined ? '' : `session: {idleTimeout: ${opts.idleTimeout}}\n`}${opts.workers === undefined ? '' : `workers: ${opts.workers}\n`}`,
    )
  }
  /** 1-based node number, checked against the testbed. */
  const nodeNo = (k: number | undefined) => {
    const n = k ?? 1
    if (!Number.isInteger(n) || n < 1 || n > nodeCount) throw new Error(`node ${n}: this fleet has nodes 1..${nodeCount}`)
    return n
  }

  const runDir = (ns: string) => join(tb.nsDir(ns), 'run')
  const clientConfig = (name: string, o: ClientConfigOptions = {}) => {
    const k = nodeNo(o.node)
    const many = o.nodes?.map((n) => (typeof n === 'number' ? {node: nodeNo(n), host: tb.addr.nodesWan[nodeNo(n) - 1], port: NODE_PORT} : {...n, node: nodeNo(n.node)}))
    // Node 1 keeps the old file name; a config for another node must not overwrite it.
    const file = join(configs, `${name}-${o.index ?? 0}${many !== undefined ? `-nodes${many.map((n) => n.node).join('')}` : k === 1 ? '' : `-node${k}`}.yaml`)
    const nodeLines =
      many === undefined
        ? `node: {host: ${tb.addr.nodesWan[k - 1]}, port: ${NODE_PORT}, name: node${k}}\n`
        : `nodes:\n${many.map((n) => `  - {host: ${n.host}, port: ${n.port ?? NODE_PORT}, name: node${n.node}}\n`).join('')}`
    writeFileSync(
      file,
      `role: client
name: ${name}
transport: ${o.transport ?? transport}
${nodeLines}routes: [${(o.routes ?? [`${tb.addr.target}/32`]).join(', ')}]
tunnel: {interface: agtun0}
pki: {bundle: ${pki}/${name}.pem}
reconnect: {minSeconds: 0.2, maxSeconds: 1}
transports:
  ${o.transport ?? transport}: {keepalive: ${keepalive}}
${o.extra ?? ''}`,
    )
    return file
  }

  const spawnAgent = (ns: string, args: string[], env?: Record<string, string>) =>
    new AgentProcess(tb.spawn(ns, cmd, [...(opts.bin === undefined ? (opts.nodeFlags ?? []) : []), ...pre, ...args], {env: {...agentEnv(runDir(ns), dataDir), ...opts.env, ...env}, stdio: ['ignore', 'pipe', 'pipe']}))

  return {
    tb,
    transport,
    dataDir,
    pki,
    foreignPki,
    nodeConfig: nodeConfigs[0],
    nodeConfigs,
    clientConfig,
    runDir,
    async startNode(o = {}) {
      const k = nodeNo(o.node)
      const p = spawnAgent(tb.names.nodes[k - 1], ['up', '--config', o.config ?? nodeConfigs[k - 1], ...(o.args ?? [])], o.env)
      await p.waitFor(new RegExp(`node node${k} up`))
      return p
    },
    async startClient(name, index = 0, o = {}) {
      const p = spawnAgent(o.ns ?? tb.names.client[index], ['up', '--config', clientConfig(name, {...o, index}), ...(o.args ?? [])], o.env)
      if (o.wait !== null) await p.waitFor(o.wait ?? /connected to node/)
      return p
    },
    async cli(ns, args) {
      return tb.exec(ns, cmd, [...pre, ...args], {env: {...agentEnv(runDir(ns), dataDir), ...opts.env}, timeoutMs: 60_000}).then((r) => ({
        stdout: r.stdout,
        stderr: r.stderr,
        code: r.code ?? 1,
      }))
    },
  }
}

/** What of the agent is visible in a namespace: TUN links, routes through them, firewall chains. */
export async function agentTraces(tb: Testbed, ns: string): Promise<string[]> {
  const found: string[] = []
  const links = await tb.exec(ns, 'ip', ['-o', 'link', 'show', 'type', 'tun'])
  if (links.stdout.trim() !== '') found.push(`tun: ${links.stdout.trim()}`)
  const routes = await tb.exec(ns, 'ip', ['route', 'show'])
  for (const line of routes.stdout.split('\n')) if (/agtun/.test(line)) found.push(`route: ${line}`)
  const rules = await tb.exec(ns, 'iptables-save', [])
  for (const line of rules.stdout.split('\n')) if (/AGENT/.test(line)) found.push(`iptables: ${line}`)
  for (const line of (await ipsetSave(tb, ns)).split('\n')) if (/^(create|add) agent/.test(line)) found.push(`ipset: ${line}`)
  return found
}

async function ipsetSave(tb: Testbed, ns: string): Promise<string> {
  const r = await tb.exec(ns, 'ipset', ['save']).catch(() => ({code: 1, stdout: ''}))
  return r.code === 0 ? r.stdout : ''
}

/** The tunnel addresses the node's firewall admits now: the elements of its ipset(s). */
export async function admittedAddresses(tb: Testbed, ns: string): Promise<string[]> {
  const out: string[] = []
  for (const line of (await ipsetSave(tb, ns)).split('\n')) {
    const m = /^add agent\S* (\S+)/.exec(line)
    if (m) out.push(m[1])
  }
  return out.sort()
}
