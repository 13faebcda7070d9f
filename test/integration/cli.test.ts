/**
 * The CLI as an operator meets it, with the real binary: installing transports offline,
 * validating configs, and `agent up` refusing bad input, missing privileges or a missing
 * /dev/net/tun without leaving anything behind. Every `agent up` (and `down`) runs inside a
 * namespace of one shared testbed ("clit"), so a bug can never touch the host's network; only
 * `plugins` and `config validate`, which do not touch the network, run outside.
 * Requires `npm run build` (npm test does it first) and root.
 */
import {type ChildProcess} from 'node:child_process'
import {chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join, resolve} from 'node:path'
import {afterAll, beforeAll, describe, expect, inject, it} from 'vitest'
import {createTestbed, waitForOutput, type Testbed} from '../../src/testbed/index.js'
import {run} from '../../src/testbed/run.js'

const ROOT = resolve(import.meta.dirname, '../..')
const BIN = join(ROOT, 'bin/run.js')
const NODE_PORT = 4443

let tb: Testbed
/** Our own scratch root (0755, so user nobody can reach what we put there for it); removed in afterAll. */
let scratch: string
let configs: string
let pki: string
let ns: string
/** The run dir every `up` in the node namespace uses (state file, status socket). */
let runDir: string
/** The namespace as the testbed built it, before any agent ran: every failed `up` must leave exactly this. */
let baseline: NetState

interface CliResult {
  code: number
  stdout: string
  stderr: string
  /** stderr without oclif's ` ›   ` prefixes and `Error: `, so a test can match the message itself. */
  message: string
  ms: number
}

interface CliOptions {
  /** Run inside this testbed namespace (always so for up/down/status). */
  ns?: string
  dataDir?: string
  runDir?: string
  cwd?: string
  env?: NodeJS.ProcessEnv
  /** Command to run the agent through (setpriv, unshare...), before `node bin/run.js`. */
  wrap?: string[]
  timeoutMs?: number
}

function agentEnv(o: CliOptions): NodeJS.ProcessEnv {
  return {
    ...process.env,
    NO_COLOR: '1',
    // oclif wraps error messages at 80 columns when stderr is not a terminal, breaking a long
    // file path in the middle; a wide "terminal" keeps each message on one line.
    OCLIF_COLUMNS: '1000',
    AGENT_DATA_DIR: o.dataDir ?? inject('agentDataDir'),
    AGENT_RUN_DIR: o.runDir ?? runDir,
    // Not the host's /run: the namespace is the testbed's (state/ip-forward.ts).
    AGENT_IP_FORWARD_DIR: join(scratch, 'ip-forward'),
    ...o.env,
  }
}

async function agent(args: string[], o: CliOptions = {}): Promise<CliResult> {
  const argv = [...(o.wrap ?? []), process.execPath, BIN, ...args]
  const opts = {env: agentEnv(o), cwd: o.cwd ?? configs, timeoutMs: o.timeoutMs ?? 60_000}
  const t0 = Date.now()
  const r = o.ns === undefined ? await run(argv[0], argv.slice(1), opts) : await tb.exec(o.ns, argv[0], argv.slice(1), opts)
  const message = r.stderr
    .split('\n')
    .map((l) => l.replace(/^ › {3}/, '').replace(/^Error: /, ''))
    .join('\n')
  return {code: r.code ?? -1, stdout: r.stdout, stderr: r.stderr, message, ms: Date.now() - t0}
}

/** What an agent could change in a namespace, normalised so only real changes show. */
interface NetState {
  links: string[]
  routes: string
  rules: string
  iptables: string[]
  ipForward: string
}

async function netState(where: string): Promise<NetState> {
  const ex = async (cmd: string, args: string[]) => {
    const r = await tb.exec(where, cmd, args)
    if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} in ${where}: ${r.stderr}`)
    return r.stdout
  }
  // Link names only: operstate and flags of the veths may still settle after the testbed is built.
  const links = (await ex('ip', ['-o', 'link', 'show']))
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(': ')[1].split('@')[0])
  const iptables = (await ex('iptables-save', []))
    .split('\n')
    // Rules and chains; not comments, table headers, COMMIT, or built-in chains with their
    // default ACCEPT policy (a table shows up in iptables-save once anything has used it).
    .filter((l) => /^[-:]/.test(l) && !/^:(PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) ACCEPT\b/.test(l))
    .map((l) => l.replace(/\s*\[\d+:\d+\]/, ''))
  return {
    links,
    routes: await ex('ip', ['route', 'show', 'table', 'all']),
    rules: await ex('ip', ['rule', 'show']),
    iptables,
    ipForward: (await ex('sysctl', ['-n', 'net.ipv4.ip_forward'])).trim(),
  }
}

/** Nothing of the agent is left in the node namespace: network as built, and no state file. */
async function expectNothingApplied(dir = runDir): Promise<void> {
  expect(await netState(ns)).toEqual(baseline)
  const left = existsSync(dir) ? readdirSync(dir) : []
  expect(left.filter((f) => /\.(json|sock)$/.test(f))).toEqual([])
}

/** A fresh, empty oclif data dir under our scratch root. */
function freshDataDir(name: string): string {
  const d = join(scratch, 'data', name)
  mkdirSync(d, {recursive: true})
  expect(readdirSync(d)).toEqual([])
  return d
}

function spawnAgent(args: string[], o: CliOptions = {}): ChildProcess & {output: () => string} {
  const child = tb.spawn(ns, process.execPath, [BIN, ...args], {env: agentEnv(o), cwd: o.cwd ?? configs, stdio: ['ignore', 'pipe', 'pipe']})
  let out = ''
  child.stdout?.on('data', (b: Buffer) => (out += b.toString()))
  child.stderr?.on('data', (b: Buffer) => (out += b.toString()))
  return Object.assign(child, {output: () => out})
}

function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode)
  return new Promise((r) => child.once('exit', (code) => r(code)))
}

const NODE_YAML = (o: {bundle?: string; egress?: string} = {}) => `role: node
name: node1
transport: tls
listen: {address: 0.0.0.0, port: ${NODE_PORT}}
tunnel: {interface: agtun0, subnet: 10.99.0.0/24}
egress: {interface: ${o.egress ?? tb.ifaces.nodeEgress}}
pki: {bundle: ${o.bundle ?? './pki/node1.pem'}}
clients:
  - name: alice
`

beforeAll(async () => {
  if (!existsSync(join(ROOT, 'dist/plugins/tls.tgz'))) throw new Error('dist/plugins/tls.tgz is missing: run `npm run build` first')
  scratch = mkdtempSync(join(tmpdir(), `agent-clit-${process.pid}-`))
  chmodSync(scratch, 0o755)
  tb = await createTestbed({prefix: 'clit', clients: 0})
  ns = tb.names.node
  runDir = join(tb.nsDir(ns), 'run')
  configs = join(scratch, 'configs')
  pki = join(configs, 'pki')
  mkdirSync(configs, {recursive: true})
  for (const args of [['pki', 'init', '--dir', pki], ['pki', 'issue', 'node1', '--node', '--dir', pki], ['pki', 'issue', 'alice', '--dir', pki]]) {
    const r = await agent(args)
    if (r.code !== 0) throw new Error(`agent ${args.join(' ')} failed: ${r.stderr}`)
  }
  writeFileSync(join(configs, 'node1.yaml'), NODE_YAML())
  writeFileSync(
    join(configs, 'alice.yaml'),
    `role: client
name: alice
transport: tls
node: {host: ${tb.addr.nodeWan}, port: ${NODE_PORT}, name: node1}
routes: [${tb.addr.target}/32]
tunnel: {interface: agtun0}
pki: {bundle: ./pki/alice.pem}
`,
  )
  // Line 7 has a subnet that is not one; line 10 a key the schema does not know.
  writeFileSync(
    join(configs, 'bad.yaml'),
    `role: node
name: node1
transport: tls
listen: {address: 0.0.0.0, port: ${NODE_PORT}}
tunnel:
  interface: agtun0
  subnet: 10.99.0.0/33
egress: {interface: ${tb.ifaces.nodeEgress}}
pki: {bundle: ./pki/node1.pem}
colour: blue
clients:
  - name: alice
`,
  )
  writeFileSync(join(configs, 'nopki.yaml'), NODE_YAML({bundle: './pki/missing.pem'}))
  writeFileSync(join(configs, 'noegress.yaml'), NODE_YAML({egress: 'nosuch0'}))
  baseline = await netState(ns)
  expect(baseline.ipForward).toBe('0')
  expect(baseline.links).toContain(tb.ifaces.nodeEgress)
  expect(baseline.links).not.toContain('agtun0')
})

afterAll(async () => {
  try {
    await tb?.destroy()
  } finally {
    if (scratch) rmSync(scratch, {recursive: true, force: true})
  }
})

describe('transport plugins', () => {
  let dataDir: string

  it('a fresh data dir has no transport installed', async () => {
    dataDir = freshDataDir('a')
    const human = await agent(['plugins'], {dataDir})
    expect(human.code, human.stderr).toBe(0)
    expect(human.stdout).toMatch(/No plugins installed/)
    expect(human.stdout).not.toMatch(/tls/)
    const json = await agent(['plugins', '--json'], {dataDir})
    expect(json.code, json.stderr).toBe(0)
    const list = JSON.parse(json.stdout) as {name: string; type: string}[]
    expect(list.filter((p) => p.type === 'user')).toEqual([])
    expect(list.map((p) => p.name)).not.toContain('@agent/transport-tls')
  })

  it('`plugins install tls` installs the bundled tarball, offline (run in a namespace with no route out)', async () => {
    const r = await agent(['plugins', 'install', 'tls'], {dataDir, ns})
    expect(r.code, r.stdout + r.stderr).toBe(0)
    expect(r.stdout + r.stderr).toMatch(/Installing plugin file:\S*dist\/plugins\/tls\.tgz\.\.\. installed v\d/)
    const pj = JSON.parse(readFileSync(join(dataDir, 'package.json'), 'utf8')) as {dependencies: Record<string, string>}
    expect(pj.dependencies['@agent/transport-tls']).toMatch(/^file:.*dist\/plugins\/tls\.tgz$/)
    expect(existsSync(join(dataDir, 'node_modules/@agent/transport-tls/package.json'))).toBe(true)
  })

  it('`plugins:install tls` (colon form) works too', async () => {
    const other = freshDataDir('b')
    const r = await agent(['plugins:install', 'tls'], {dataDir: other, ns})
    expect(r.code, r.stdout + r.stderr).toBe(0)
    const list = await agent(['plugins'], {dataDir: other})
    expect(list.stdout).toMatch(/^tls \d+\.\d+\.\d+/m)
  })

  it('`plugins` and `plugins --json` then list tls', async () => {
    const human = await agent(['plugins'], {dataDir})
    expect(human.code, human.stderr).toBe(0)
    expect(human.stdout).toMatch(/^tls \d+\.\d+\.\d+/m)
    expect(human.stdout).not.toMatch(/No plugins installed/)
    const json = await agent(['plugins', '--json'], {dataDir})
    const list = JSON.parse(json.stdout) as {name: string; type: string}[]
    expect(list.filter((p) => p.type === 'user').map((p) => p.name)).toEqual(['@agent/transport-tls'])
  })

  it('`up --transport gre` with only tls installed fails at once, naming gre, and touches nothing', async () => {
    const r = await agent(['up', '--config', 'alice.yaml', '--transport', 'gre'], {dataDir, ns, timeoutMs: 15_000})
    expect(r.code).not.toBe(0)
    expect(r.code).not.toBe(-1) // exited by itself, not killed by the timeout
    expect(r.ms).toBeLessThan(5_000)
    expect(r.message).toMatch(/transport "gre" is not installed \(installed: tls\)/)
    await expectNothingApplied()
  })

  it('`up` with no transport installed says how to install the one it needs', async () => {
    const empty = freshDataDir('empty')
    const r = await agent(['up', '--config', 'alice.yaml'], {dataDir: empty, ns, timeoutMs: 15_000})
    expect(r.code).not.toBe(0)
    expect(r.ms).toBeLessThan(5_000)
    expect(r.message).toMatch(/transport "tls" is not installed \(no transport is installed yet\); install it with: agent plugins:install tls/)
    await expectNothingApplied()
  })
})

describe('agent config validate', () => {
  it('accepts a good node file and a good client file', async () => {
    const node = await agent(['config', 'validate', 'node1.yaml'])
    expect(node.code, node.stderr).toBe(0)
    expect(node.stdout).toMatch(/node1\.yaml: valid node config "node1"/)
    const client = await agent(['config', 'validate', 'alice.yaml'])
    expect(client.code, client.stderr).toBe(0)
    expect(client.stdout).toMatch(/alice\.yaml: valid client config "alice"/)
  })

  it('rejects a bad file, naming each field with its file:line:column', async () => {
    const r = await agent(['config', 'validate', 'bad.yaml'])
    expect(r.code).not.toBe(0)
    expect(r.stdout).toBe('')
    expect(r.message).toMatch(/^bad\.yaml:7:11: tunnel\.subnet: must be an IPv4 network in CIDR notation .*10\.99\.0\.0\/33/m)
    expect(r.message).toMatch(/^bad\.yaml:10:1: colour: unknown key/m)
  })

  it('--json prints {valid: true} for a good file', async () => {
    const r = await agent(['config', 'validate', '--json', 'node1.yaml'])
    expect(r.code, r.stderr).toBe(0)
    expect(JSON.parse(r.stdout)).toEqual({file: 'node1.yaml', valid: true, role: 'node', name: 'node1'})
  })
})

describe('agent up on bad input applies nothing', () => {
  it('an invalid config: exits non-zero with file:line, no TUN, route, rule, state or ip_forward change', async () => {
    const r = await agent(['up', '--config', 'bad.yaml'], {ns})
    expect(r.code).not.toBe(0)
    expect(r.message).toMatch(/^bad\.yaml:7:11: tunnel\.subnet: /m)
    expect(r.message).toMatch(/^bad\.yaml:10:1: colour: unknown key/m)
    await expectNothingApplied()
  })

  it('a node whose pki bundle does not exist fails naming that file, nothing applied', async () => {
    const r = await agent(['up', '--config', 'nopki.yaml'], {ns})
    expect(r.code).not.toBe(0)
    expect(r.message).toContain(`cannot read pki bundle ${pki}/missing.pem: no such file`)
    await expectNothingApplied()
  })

  it('a run directory others can write: up, status and down refuse it, naming it and its mode; nothing applied', async () => {
    const open = join(scratch, 'open-run')
    mkdirSync(open)
    chmodSync(open, 0o777)
    const wanted = `run directory ${open} is writable by group and others (mode 0777)`
    const up = await agent(['up', '--config', 'node1.yaml'], {ns, runDir: open})
    expect(up.code).not.toBe(0)
    expect(up.message).toContain(wanted)
    await expectNothingApplied(open)
    for (const args of [['status'], ['down', '--config', 'node1.yaml']]) {
      const r = await agent(args, {ns, runDir: open})
      expect(r.code, args[0]).toBe(1)
      expect(r.message).toContain(wanted)
    }
  })

  it('a node whose egress interface does not exist comes up (MASQUERADE -o accepts any name) and goes down clean', async () => {
    // Documented truth rather than a wish: iptables takes a nonexistent -o name, so the agent
    // starts and its NAT rule simply matches nothing until such an interface appears.
    const p = spawnAgent(['up', '--config', 'noegress.yaml'])
    await waitForOutput(p, /node node1 up/)
    const nat = await tb.exec(ns, 'iptables-save', ['-t', 'nat'])
    expect(nat.stdout).toMatch(/-A AGENT-node1-NAT -s 10\.99\.0\.0\/24 -o nosuch0 -j MASQUERADE/)
    const down = await agent(['down', '--config', 'noegress.yaml'], {ns})
    expect(down.stdout).toContain(`stopped node1 (pid ${p.pid})`)
    expect(await exited(p)).toBe(0)
    await expectNothingApplied()
  })

  it('a taken listen port fails with "address already in use" and rolls back the partial start', async () => {
    const listener = tb.spawn(ns, process.execPath, ['-e', `require('net').createServer().listen(${NODE_PORT}, '0.0.0.0', () => console.log('listening'))`], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    // Watch links while it runs, to see that it got as far as the TUN before the port failed.
    const monitor = tb.spawn(ns, 'ip', ['-o', 'monitor', 'link'], {stdio: ['ignore', 'pipe', 'pipe']})
    let events = ''
    monitor.stdout?.on('data', (b: Buffer) => (events += b.toString()))
    try {
      await waitForOutput(listener, /listening/)
      // The monitor is subscribed once it reports a probe link of our own.
      for (let i = 0; !/Deleted.*clitprobe/.test(events); i++) {
        if (i === 50) throw new Error(`ip monitor saw no probe link: ${events}`)
        await tb.exec(ns, 'sh', ['-c', 'ip link add clitprobe type bridge && ip link del clitprobe'], {check: true})
        await new Promise((res) => setTimeout(res, 100))
      }

      const r = await agent(['up', '--config', 'node1.yaml'], {ns})
      expect(r.code).not.toBe(0)
      expect(r.message).toMatch(/cannot listen on 0\.0\.0\.0:4443: address already in use/)
      // The kernel's events may reach us just after the agent has exited.
      for (const t0 = Date.now(); !/^Deleted \d+: agtun0:/m.test(events) && Date.now() - t0 < 3000; ) await new Promise((res) => setTimeout(res, 50))
      expect(events).toMatch(/^\d+: agtun0:/m)
      expect(events).toMatch(/^Deleted \d+: agtun0:/m)
      await expectNothingApplied()
    } finally {
      await tb.stop(monitor)
      await tb.stop(listener)
    }
  })

  it('a second `up` of the same node fails with "already running (pid N)"; the first keeps working', async () => {
    const first = spawnAgent(['up', '--config', 'node1.yaml'])
    await waitForOutput(first, /node node1 up/)
    const stateBefore = readFileSync(join(runDir, 'node1.json'), 'utf8')

    const second = await agent(['up', '--config', 'node1.yaml'], {ns})
    expect(second.code).not.toBe(0)
    expect(second.message).toMatch(new RegExp(`agent "node1" is already running \\(pid ${first.pid}\\)`))

    // The first is untouched: alive, its state file as it was, its TUN and port still there.
    expect(first.exitCode).toBeNull()
    expect(readFileSync(join(runDir, 'node1.json'), 'utf8')).toBe(stateBefore)
    expect((await netState(ns)).links).toContain('agtun0')
    const st = await agent(['status', '--json'], {ns})
    expect(JSON.parse(st.stdout)).toMatchObject([{name: 'node1', pid: first.pid, state: 'up'}])
    const connect = await tb.exec(ns, process.execPath, [
      '-e',
      `require('net').connect(${NODE_PORT}, '${tb.addr.nodeWan}').on('connect', () => process.exit(0)).on('error', () => process.exit(1))`,
    ])
    expect(connect.code).toBe(0)

    const down = await agent(['down', '--config', 'node1.yaml'], {ns})
    expect(down.stdout).toContain(`stopped node1 (pid ${first.pid})`)
    expect(await exited(first)).toBe(0)
    await expectNothingApplied()
  })
})

describe('privileges and environment', () => {
  it('as user nobody: a clear message about root / CAP_NET_ADMIN, nothing applied', async () => {
    // Everything it needs readable by nobody, so the refusal can only be about privileges.
    const home = join(scratch, 'nobody')
    mkdirSync(home)
    cpSync(join(configs, 'node1.yaml'), join(home, 'node1.yaml'))
    cpSync(pki, join(home, 'pki'), {recursive: true})
    const dataDir = join(home, 'data')
    mkdirSync(dataDir)
    const install = await agent(['plugins:install', 'tls'], {dataDir, ns})
    expect(install.code, install.stderr).toBe(0)
    const nobodyRun = join(home, 'run')
    mkdirSync(nobodyRun)
    await run('chown', ['-R', '65534:65534', home], {check: true})

    const r = await agent(['up', '--config', 'node1.yaml'], {
      ns,
      wrap: ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'],
      dataDir,
      runDir: nobodyRun,
      cwd: home,
      env: {HOME: home},
    })
    expect(r.code).not.toBe(0)
    expect(r.message).toMatch(/agent up must run as root \(or with CAP_NET_ADMIN\)/)
    expect(r.stderr).not.toMatch(/EACCES|not installed|cannot read/)
    await expectNothingApplied(nobodyRun)
  })

  it('without /dev/net/tun (a private mount namespace): says so, nothing applied', async () => {
    const r = await agent(['up', '--config', 'node1.yaml'], {
      ns,
      wrap: ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs none /dev/net && exec "$0" "$@"'],
    })
    expect(r.code).not.toBe(0)
    expect(r.message).toMatch(/\/dev\/net\/tun does not exist/)
    await expectNothingApplied()
    // The host's device was never hidden outside that private mount namespace.
    expect(existsSync('/dev/net/tun')).toBe(true)
  })
})

describe('status and down with nothing running', () => {
  it('`status` says no agent is running; `--json` prints []', async () => {
    const fresh = mkdtempSync(join(scratch, 'run-'))
    const human = await agent(['status'], {ns, runDir: fresh})
    expect(human.code, human.stderr).toBe(0)
    expect(human.stdout).toMatch(/no agent is running/)
    const json = await agent(['status', '--json'], {ns, runDir: fresh})
    expect(json.code, json.stderr).toBe(0)
    expect(JSON.parse(json.stdout)).toEqual([])
  })

  it('`down` of something not running says so and exits 0', async () => {
    const fresh = mkdtempSync(join(scratch, 'run-'))
    const r = await agent(['down', '--config', 'alice.yaml'], {ns, runDir: fresh})
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toMatch(/alice is not running; nothing to remove/)
    await expectNothingApplied(fresh)
  })
})
