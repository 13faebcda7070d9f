/**
 * `agent fleet ...` against a real 3-member etcd with client-certificate auth: root sets the
 * fleet up, a node's certificate may read but not change the roster, and may write its own
 * registry entry only; the registry follows leases. The CLI runs in the ctl namespace, where
 * etcd is reachable (vitest itself is in the root namespace).
 */
import {writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {BIN} from '../../src/testbed/fleet.js'
import {createTestbed, ETCD_SCRIPT_PRELUDE, etcdClientArg, runScript, startEtcd, type EtcdCluster, type Testbed} from '../../src/testbed/index.js'

const isRoot = process.getuid?.() === 0
const PREFIX = '/agent/fleet1'
let tb: Testbed
let etcd: EtcdCluster
let rootConfig: string
let node1Config: string

beforeAll(async () => {
  tb = await createTestbed({prefix: 'fcli', clients: 0, nodes: 1, ctl: true})
  etcd = await startEtcd(tb, {members: 3})
  await etcd.enableAuth()
  await etcd.clientCert('root')
  await etcd.clientCert('node1')
  // Relative paths: resolved against the file's directory, where startEtcd keeps the certificates.
  rootConfig = join(etcd.dir, 'fleet-root.yaml')
  writeFileSync(rootConfig, `endpoints: [${etcd.endpoints.join(', ')}]\nca: ca.pem\ncert: user-root.pem\nkey: user-root.key\nprefix: ${PREFIX}\n`)
  // node1's is a node config's fleet: section, as a node has it.
  node1Config = join(etcd.dir, 'node1.yaml')
  writeFileSync(node1Config, `role: node\nname: node1\nfleet:\n  endpoints:\n${etcd.endpoints.map((e) => `    - ${e}\n`).join('')}  ca: ca.pem\n  cert: user-node1.pem\n  key: user-node1.key\n  prefix: ${PREFIX}\n`)
}, 60_000)

afterAll(async () => {
  await tb?.destroy()
})

async function cli(config: string, args: string[]): Promise<{code: number; stdout: string; stderr: string}> {
  const r = await tb.exec(tb.names.ctl!, process.execPath, [BIN, ...args, '--config', config], {timeoutMs: 30_000})
  return {code: r.code ?? -1, stdout: r.stdout, stderr: r.stderr}
}

async function json<T>(config: string, args: string[]): Promise<T> {
  const r = await cli(config, [...args, '--json'])
  expect(r.code, r.stderr + r.stdout).toBe(0)
  return JSON.parse(r.stdout) as T
}

/** A failure is one "Error: ..." line, no stack trace. */
function expectOneLineError(r: {code: number; stderr: string}, pattern: RegExp): void {
  expect(r.code).not.toBe(0)
  const lines = r.stderr.trim().split('\n')
  expect(lines, r.stderr).toHaveLength(1)
  expect(lines[0]).toMatch(/^Error: /)
  expect(lines[0]).toMatch(pattern)
}

describe.skipIf(!isRoot)('agent fleet', () => {
  it('init and node add (as root) create the roles and the node user', async () => {
    const init = await json<{roles: {name: string; permissions: string[]}[]; version: string}>(rootConfig, ['fleet', 'init'])
    expect(init.version).toBe('1')
    expect(init.roles.map((r) => r.name)).toEqual(['agent-operator-agent.fleet1', 'agent-node-agent.fleet1'])
    // Running it again is fine.
    expect((await cli(rootConfig, ['fleet', 'init'])).code).toBe(0)
    expect((await etcd.etcdctl(['get', `${PREFIX}/version`, '--print-value-only'], {check: true})).stdout.trim()).toBe('1')

    const node = await json<{user: string; created: boolean}>(rootConfig, ['fleet', 'node', 'add', 'node1'])
    expect(node).toMatchObject({user: 'node1', created: true})
    const roles = (await etcd.etcdctl(['user', 'get', 'node1'], {check: true})).stdout
    expect(roles).toContain('agent-node-agent.fleet1')
    expect(roles).toContain('agent-node-agent.fleet1-node1')
    const own = (await etcd.etcdctl(['role', 'get', 'agent-node-agent.fleet1-node1'], {check: true})).stdout
    expect(own).toMatch(new RegExp(`KV Read:\\s+${PREFIX}/nodes/node1\\s`))
    expect(own).toMatch(new RegExp(`KV Write:\\s+${PREFIX}/nodes/node1\\s`))
  })

  it('adds, lists, revokes and removes clients', async () => {
    const fp = 'ab'.repeat(32)
    const added = await json<{name: string; address: string; fingerprint: string}>(rootConfig, ['fleet', 'client', 'add', 'alice', '--address', '10.99.0.20', '--fingerprint', fp])
    expect(added.fingerprint).toBe('sha256:' + Array(32).fill('AB').join(':'))
    const bad = await cli(rootConfig, ['fleet', 'client', 'add', 'bob', '--address', '10.99.0.300'])
    expectOneLineError(bad, /invalid address "10\.99\.0\.300"/)

    const list = await json<{name: string; address?: string}[]>(rootConfig, ['fleet', 'client', 'list'])
    expect(list).toEqual([{name: 'alice', address: '10.99.0.20', fingerprint: added.fingerprint}])
    expect((await cli(rootConfig, ['fleet', 'client', 'list'])).stdout).toMatch(/^alice\s+10\.99\.0\.20\s+sha256:AB/m)

    await json(rootConfig, ['fleet', 'revoke', 'alice'])
    await json(rootConfig, ['fleet', 'revoke', '--serial', '00:0A:1B', '--holder', 'alice'])
    const revoked = await json<{names: {name: string; by?: string}[]; serials: {serial: string; name?: string}[]}>(rootConfig, ['fleet', 'revocations'])
    expect(revoked.names).toMatchObject([{name: 'alice', by: 'root'}])
    expect(revoked.serials).toMatchObject([{serial: 'a1b', name: 'alice'}])
    // Revoking leaves the client entry alone.
    expect((await json<unknown[]>(rootConfig, ['fleet', 'client', 'list'])).length).toBe(1)

    await json(rootConfig, ['fleet', 'client', 'remove', 'alice'])
    expect(await json<unknown[]>(rootConfig, ['fleet', 'client', 'list'])).toEqual([])
    expectOneLineError(await cli(rootConfig, ['fleet', 'client', 'remove', 'alice']), /has no client "alice"/)
  })

  it("a node's certificate reads the roster but cannot change it", async () => {
    await json(rootConfig, ['fleet', 'client', 'add', 'carol'])
    expect(await json<{name: string}[]>(node1Config, ['fleet', 'client', 'list'])).toEqual([{name: 'carol'}])
    const denied = await cli(node1Config, ['fleet', 'client', 'add', 'mallory'])
    expectOneLineError(denied, /permission denied: etcd user "node1" .* may not write clients/)
    expect((await json<{name: string}[]>(rootConfig, ['fleet', 'client', 'list'])).map((c) => c.name)).toEqual(['carol'])
    expectOneLineError(await cli(node1Config, ['fleet', 'node', 'add', 'node2']), /permission denied: etcd user "node1"/)
  })

  it('node1 writes its own registry entry only; fleet nodes follows its lease', async () => {
    const record = {
      name: 'node1',
      version: '0.1.0',
      transport: 'tls',
      endpoints: {control: '198.51.100.1:8443'},
      sessions: 3,
      throughput: {rxBytesPerSecond: 1250, txBytesPerSecond: 250_000},
      health: 'ok',
      startedAt: new Date(Date.now() - 60_000).toISOString(),
      heartbeatAt: new Date(Date.now() - 5_000).toISOString(),
    }
    const code = `${ETCD_SCRIPT_PRELUDE}
const lease = etcd.lease(60, {autoKeepAlive: false})
const id = await lease.grant()
await lease.put(arg.own).value(JSON.stringify(arg.record))
let other = 'written'
try { await lease.put(arg.other).value('{}') } catch (e) { other = e.constructor.name + ': ' + e.message }
console.log(JSON.stringify({id, other}))
lease.release()
etcd.close()`
    const r = await runScript(tb, tb.names.node, code, {etcd: await etcdClientArg(etcd, 'node1'), own: `${PREFIX}/nodes/node1`, other: `${PREFIX}/nodes/node2`, record}, {timeoutMs: 20_000})
    expect(r.code, r.stderr).toBe(0)
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as {id: string; other: string}
    expect(out.other).toMatch(/permission denied/)

    const nodes = await json<{name: string; record: typeof record; heartbeatAgeSeconds: number}[]>(rootConfig, ['fleet', 'nodes'])
    expect(nodes.map((n) => n.name)).toEqual(['node1'])
    expect(nodes[0].record).toEqual(record)
    expect(nodes[0].heartbeatAgeSeconds).toBeGreaterThanOrEqual(5)
    const table = (await cli(rootConfig, ['fleet', 'nodes'])).stdout
    expect(table).toMatch(/^node1\s+tls\s+198\.51\.100\.1:8443\s+-\s+3\s+10\.0 kbit\/s\s+2\.0 Mbit\/s\s+ok\s+\d+s ago$/m)

    await etcd.etcdctl(['lease', 'revoke', BigInt(out.id).toString(16)], {check: true})
    expect(await json<unknown[]>(rootConfig, ['fleet', 'nodes'])).toEqual([])
  })

  it('status shows the members and the counts', async () => {
    const s = await json<{layoutVersion: string; clients: number; revokedNames: number; revokedSerials: number; nodes: number; members: {reachable: boolean; leader: boolean}[]}>(rootConfig, ['fleet', 'status'])
    expect(s).toMatchObject({layoutVersion: '1', clients: 1, revokedNames: 1, revokedSerials: 1, nodes: 0})
    expect(s.members.map((m) => m.reachable)).toEqual([true, true, true])
    expect(s.members.filter((m) => m.leader)).toHaveLength(1)
  })

  it('an unreachable etcd is a one-line error', async () => {
    const r = await cli(rootConfig, ['fleet', 'client', 'list', '--endpoints', 'https://198.51.100.200:2999', '--timeout', '3'])
    expectOneLineError(r, /cannot reach etcd at https:\/\/198\.51\.100\.200:2999/)
  })
})
