/**
 * The testbed's etcd cluster: three members with client and peer TLS in the ctl namespace,
 * reached from a node's namespace with the etcd3 client, surviving the loss of one member and a
 * full restart, and gone without a trace after destroy().
 */
import {existsSync} from 'node:fs'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {
  createTestbed,
  ETCD_SCRIPT_PRELUDE,
  etcdClientArg,
  runScript,
  spawnScript,
  startEtcd,
  waitForOutput,
  type EtcdCluster,
  type Testbed,
} from '../../src/testbed/index.js'
import {run} from '../../src/testbed/run.js'

const isRoot = process.getuid?.() === 0
let tb: Testbed
let etcd: EtcdCluster

beforeAll(async () => {
  tb = await createTestbed({prefix: 'etcdt', clients: 0, nodes: 2, ctl: true})
  etcd = await startEtcd(tb, {members: 3})
})

afterAll(async () => {
  await tb?.destroy()
})

/** Put key=value through the given members with the etcd3 client, from a node's namespace. */
async function put(ns: string, endpoints: string[], key: string, value: string): Promise<void> {
  const code = `${ETCD_SCRIPT_PRELUDE}
await etcd.put(arg.key).value(arg.value)
console.log('put ok')
etcd.close()`
  const r = await runScript(tb, ns, code, {etcd: await etcdClientArg(etcd, 'root', endpoints), key, value}, {timeoutMs: 20_000})
  expect(r.stdout + r.stderr).toContain('put ok')
}

async function get(ns: string, endpoints: string[], key: string): Promise<string | null> {
  const code = `${ETCD_SCRIPT_PRELUDE}
console.log(JSON.stringify(await etcd.get(arg.key).string()))
etcd.close()`
  const r = await runScript(tb, ns, code, {etcd: await etcdClientArg(etcd, 'root', endpoints), key}, {timeoutMs: 20_000})
  expect(r.code, r.stderr).toBe(0)
  return JSON.parse(r.stdout.trim()) as string | null
}

describe.skipIf(!isRoot)('etcd cluster in the testbed', () => {
  it('serves TLS only, to certificates of its own CA', async () => {
    expect(etcd.endpoints).toEqual(['https://198.51.100.200:2379', 'https://198.51.100.200:2389', 'https://198.51.100.200:2399'])
    const members = await etcd.etcdctl(['member', 'list', '-w', 'json'], {check: true})
    expect(JSON.parse(members.stdout).members).toHaveLength(3)
    // Plain HTTP is refused, and so is TLS without a client certificate.
    const plain = await tb.exec(tb.names.node, 'etcdctl', ['--endpoints=http://198.51.100.200:2379', '--dial-timeout=500ms', '--command-timeout=1s', 'get', 'x'])
    expect(plain.code).not.toBe(0)
    const noCert = await tb.exec(tb.names.node, 'etcdctl', [`--endpoints=${etcd.endpoints[0]}`, `--cacert=${etcd.ca}`, '--dial-timeout=500ms', '--command-timeout=1s', 'get', 'x'])
    expect(noCert.code).not.toBe(0)
  })

  it('a watch on one member sees a put through another', async () => {
    const code = `${ETCD_SCRIPT_PRELUDE}
const w = await etcd.watch().key(arg.key).create()
w.on('put', (kv) => { console.log('saw ' + kv.value.toString()); w.cancel().then(() => etcd.close()) })
console.log('watching')`
    const watcher = spawnScript(tb, tb.names.nodes[1], code, {etcd: await etcdClientArg(etcd, 'node2', [etcd.endpoints[2]]), key: 'roster/node1'})
    const seen = waitForOutput(watcher, /saw (\S+)/, 20_000)
    await waitForOutput(watcher, /watching/, 20_000)
    await put(tb.names.node, [etcd.endpoints[0]], 'roster/node1', '198.51.100.1')
    expect((await seen)[1]).toBe('198.51.100.1')
    await tb.stop(watcher)
  })

  it('stays writable with one member down', async () => {
    await etcd.stopMember(0)
    expect(etcd.running(0)).toBe(false)
    await put(tb.names.node, etcd.endpoints.slice(1), 'one-down', 'yes')
    expect(await get(tb.names.nodes[1], [etcd.endpoints[2]], 'one-down')).toBe('yes')
    await etcd.startMember(0)
    expect(await get(tb.names.node, [etcd.endpoints[0]], 'one-down')).toBe('yes')
  })

  it('keeps its data across a full stop and start', async () => {
    await etcd.stopAll()
    expect([0, 1, 2].map((i) => etcd.running(i))).toEqual([false, false, false])
    await etcd.startAll()
    expect(await get(tb.names.node, etcd.endpoints, 'roster/node1')).toBe('198.51.100.1')
    expect(await get(tb.names.node, etcd.endpoints, 'one-down')).toBe('yes')
  })

  it('with auth enabled, a certificate CN is the etcd user', async () => {
    await etcd.enableAuth()
    // node1 has no user yet: denied. Root (by its certificate alone) can still write.
    const denied = await etcd.etcdctl(['put', 'x', '1'], {user: 'node1'})
    expect(denied.code).not.toBe(0)
    expect(denied.stderr).toMatch(/user name not found|permission denied/)
    await etcd.etcdctl(['user', 'add', 'node1', '--no-password'], {check: true})
    await etcd.etcdctl(['role', 'add', 'node'], {check: true})
    await etcd.etcdctl(['role', 'grant-permission', 'node', '--prefix=true', 'readwrite', 'roster/'], {check: true})
    await etcd.etcdctl(['user', 'grant-role', 'node1', 'node'], {check: true})
    await etcd.etcdctl(['put', 'roster/node1', 'again'], {user: 'node1', check: true})
    expect((await etcd.etcdctl(['put', 'elsewhere', '1'], {user: 'node1'})).stderr).toMatch(/permission denied/)
  })

  it('destroy() leaves no process, namespace or directory', async () => {
    const dir = tb.dir
    const names = tb.names.all
    const pids = (await run('ip', ['netns', 'pids', tb.names.ctl!])).stdout.split(/\s+/).filter(Boolean).map(Number)
    expect(pids.length).toBeGreaterThanOrEqual(3)
    await tb.destroy()
    for (const pid of pids) expect(existsSync(`/proc/${pid}`), `pid ${pid}`).toBe(false)
    const left = (await run('ip', ['netns', 'list'])).stdout
    for (const ns of names) expect(left).not.toContain(ns)
    expect(existsSync(dir)).toBe(false)
  })
})
