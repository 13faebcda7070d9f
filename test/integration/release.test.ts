/**
 * The release artifact (docs/install.md) as an operator gets it: packed from this tree by
 * scripts/release.mjs, installed with `npm install -g` into an empty prefix from a directory that
 * is not a clone, with no compiler on the PATH and no registry (npm --offline, an empty cache and
 * a registry on a closed loopback port), then run: --version, an offline `agent plugins install
 * gre`, and a node and a client brought up in namespaces by the installed `agent`, pinging the
 * game server through the tunnel.
 *
 * `npm test` has built the tree already, and other test files run beside this one on dist/ and
 * build/Release, so the artifact is packed from the tree as built (--no-build), not rebuilt.
 */
import {execFile} from 'node:child_process'
import {existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {delimiter, join} from 'node:path'
import {promisify} from 'node:util'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {createFleet, ROOT, type AgentProcess, type Fleet} from '../../src/testbed/index.js'
import {registerCleanup} from '../../src/testbed/cleanup.js'
import {pingOk} from './datagram-helpers.js'

const pexec = promisify(execFile)
const isRoot = process.getuid?.() === 0
const {version} = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {version: string}

/**
 * What the installed agent and npm may find on the PATH: Node.js, npm, a shell for npm's
 * scripts, and the system tools the agent runs. No cc, gcc, make or python3: a prebuilt that did
 * not fit would fail the install instead of quietly compiling.
 */
const TOOLS = ['node', 'npm', 'sh', 'ip', 'sysctl', 'iptables', 'iptables-save', 'iptables-restore', 'ipset', 'conntrack']

let work = ''
let prefix = ''
let agent = ''
let env: Record<string, string> = {}
let fleet: Fleet | undefined
let unregister = () => {}
const started: AgentProcess[] = []
const cwdBefore = process.cwd()

async function sh(cmd: string, args: string[], opts: {cwd?: string; env?: Record<string, string>; timeoutMs?: number} = {}) {
  try {
    const r = await pexec(cmd, args, {cwd: opts.cwd ?? join(work, 'cwd'), env: opts.env ?? env, timeout: opts.timeoutMs ?? 60_000, maxBuffer: 16 << 20})
    return {code: 0, stdout: r.stdout, stderr: r.stderr}
  } catch (e) {
    const err = e as {code?: number | string; stdout?: string; stderr?: string; message: string}
    return {code: typeof err.code === 'number' ? err.code : 1, stdout: err.stdout ?? '', stderr: `${err.stderr ?? ''}${err.message}`}
  }
}

/** Where `name` is on this machine's PATH, for the symlinks of the bare PATH. */
function which(name: string): string {
  for (const dir of (process.env.PATH ?? '').split(delimiter).concat(['/usr/sbin', '/sbin', '/bin'])) {
    const f = join(dir, name)
    if (dir !== '' && existsSync(f)) return f
  }
  throw new Error(`${name} is not on this machine's PATH`)
}

beforeAll(async () => {
  if (!isRoot) return
  work = mkdtempSync(join(tmpdir(), 'agent-release-test-'))
  // Removed by afterAll, or on a signal or exit that skips it (the testbed removes its own).
  const dir = work
  unregister = registerCleanup(() => rmSync(dir, {recursive: true, force: true}))
  const bin = join(work, 'bin')
  prefix = join(work, 'prefix')
  for (const d of [bin, prefix, join(work, 'cwd'), join(work, 'home'), join(work, 'cache'), join(work, 'out')]) mkdirSync(d)
  for (const t of TOOLS) symlinkSync(which(t), join(bin, t))
  agent = join(prefix, 'bin', 'agent')
  env = {
    PATH: [bin, join(prefix, 'bin')].join(delimiter),
    HOME: join(work, 'home'),
    npm_config_cache: join(work, 'cache'),
    npm_config_offline: 'true',
    // Anything that still tried the registry fails at once: nobody listens on port 9 here.
    npm_config_registry: 'http://127.0.0.1:9/',
    npm_config_update_notifier: 'false',
    AGENT_DATA_DIR: join(work, 'data'),
    NO_COLOR: '1',
  }
  const packed = await sh(process.execPath, [join(ROOT, 'scripts/release.mjs'), '--no-build', '--out', join(work, 'out')], {cwd: ROOT, env: {...process.env} as Record<string, string>, timeoutMs: 120_000})
  expect(packed.code, packed.stdout + packed.stderr).toBe(0)
}, 150_000)

afterAll(async () => {
  process.chdir(cwdBefore)
  for (const p of started.splice(0).reverse()) await fleet?.tb.stop(p.child)
  await fleet?.tb.destroy()
  if (work !== '') rmSync(work, {recursive: true, force: true})
  unregister()
})

describe.skipIf(!isRoot)('the release artifact', () => {
  it('is agent-<version>.tgz and installs globally into an empty prefix, offline, with no compiler and no clone', async () => {
    expect(readdirSync(join(work, 'out'))).toEqual([`agent-${version}.tgz`])
    const tgz = join(work, 'out', `agent-${version}.tgz`)
    // The bare PATH really has no compiler, make or python3 (node-gyp needs all three).
    const none = await sh('sh', ['-c', 'command -v cc gcc g++ c++ clang make python3'])
    expect(none.stdout.trim()).toBe('')

    const r = await sh('npm', ['install', '-g', '--prefix', prefix, '--no-audit', '--no-fund', '--foreground-scripts', tgz], {timeoutMs: 120_000})
    expect(r.code, r.stdout + r.stderr).toBe(0)
    const installed = join(prefix, 'lib', 'node_modules', 'agent')
    // The prebuilt was used: nothing was compiled, so there is no build/ at all.
    expect(existsSync(join(installed, 'prebuilds', `${process.platform}-${process.arch}`, 'agent_native.node'))).toBe(true)
    expect(existsSync(join(installed, 'build'))).toBe(false)
    expect(r.stdout + r.stderr).not.toMatch(/gyp|building from source/)
    // Runtime only: no tests, TypeScript, source maps or testbed; runtime dependencies bundled.
    for (const gone of ['test', 'bench', 'docs', 'plugins', 'dist/testbed', 'tsconfig.json']) expect(existsSync(join(installed, gone)), gone).toBe(false)
    for (const dep of ['@oclif/core', 'yaml', 'ajv', 'etcd3']) expect(existsSync(join(installed, 'node_modules', dep, 'package.json')), dep).toBe(true)
    for (const dev of ['vitest', 'typescript', 'node-gyp']) expect(existsSync(join(installed, 'node_modules', dev)), dev).toBe(false)

    const v = await sh(agent, ['--version'])
    expect(v.code, v.stderr).toBe(0)
    expect(v.stdout).toMatch(new RegExp(`^agent/${version.replace(/\./g, '\\.')} linux-x64 node-v\\d+`))
  }, 150_000)

  it('installs the bundled gre transport offline and lists it', async () => {
    const r = await sh(agent, ['plugins', 'install', 'gre'])
    expect(r.code, r.stdout + r.stderr).toBe(0)
    const list = await sh(agent, ['plugins'])
    expect(list.code, list.stderr).toBe(0)
    expect(list.stdout).toMatch(new RegExp(`gre ${version.replace(/\./g, '\\.')}`))
  })

  it('brings a node and a client up with the installed agent, and a ping crosses the tunnel', async () => {
    // Nothing of the clone may stand in: the agent processes start in a directory of their own.
    process.chdir(join(work, 'cwd'))
    fleet = await createFleet({prefix: 'relt', clients: 1, transport: 'gre', dataDir: env.AGENT_DATA_DIR, bin: agent, env: {PATH: env.PATH, HOME: env.HOME}})
    const node = await fleet.startNode()
    started.push(node)
    const alice = await fleet.startClient('alice')
    started.push(alice)
    expect(alice.output).toMatch(/over udp to/)
    await pingOk(fleet, fleet.tb.names.client[0])
    const status = await fleet.cli(fleet.tb.names.node, ['status', '--json'])
    expect(status.code, status.stderr).toBe(0)
    expect(JSON.parse(status.stdout)[0].peers.map((p: {name: string}) => p.name)).toEqual(['alice'])
  }, 90_000)
})
