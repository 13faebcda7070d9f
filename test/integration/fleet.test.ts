/**
 * A fleet of three nodes with one roster in a real 3-member etcd cluster (client TLS, etcd's own
 * users and roles), the real binary in namespaces. Root sets the fleet up with `agent fleet init`
 * and `node add`; an operator changes the roster with `agent fleet`; each node reads it with its
 * own etcd user. The commands' own checks are in fleet-cli.test.ts.
 */
import {afterAll, beforeAll, describe, expect, inject, it} from 'vitest'
import {readFileSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {type AgentProcess, type Fleet, admittedAddresses, BIN, createFleet} from '../../src/testbed/index.js'
import {type EtcdCluster, startEtcd} from '../../src/testbed/etcd.js'
import type {StatusReport} from '../../src/core/status/report.js'

const PREFIX = '/agent/t'
let fleet: Fleet
let etcd: EtcdCluster
const nodes: AgentProcess[] = []
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Node k's config with a fleet section, and without carol and dave (the fleet lists them). */
async function fleetConfig(k: number): Promise<string> {
  const creds = await etcd.clientCert(`node${k}`)
  const base = readFileSync(fleet.nodeConfigs[k - 1], 'utf8').replace(/^ {2}- name: (carol|dave)\n/gm, '')
  const file = fleet.nodeConfigs[k - 1].replace(/\.yaml$/, '-fleet.yaml')
  writeFileSync(
    file,
    `${base}fleet:
  endpoints: [${etcd.endpoints.join(', ')}]
  ca: ${creds.ca}
  cert: ${creds.cert}
  key: ${creds.key}
  prefix: ${PREFIX}
  advertise: ${fleet.tb.addr.nodesWan[k - 1]}
`,
  )
  return file
}

let rootConfig: string
let opsConfig: string

/** `agent fleet ...` in the ctl namespace, where etcd is, with the credentials of `config`. */
async function fleetCli(config: string, args: string[]): Promise<string> {
  const r = await fleet.tb.exec(fleet.tb.names.ctl!, process.execPath, [BIN, 'fleet', ...args, '--config', config], {timeoutMs: 30_000})
  expect(r.code, r.stderr + r.stdout).toBe(0)
  return r.stdout
}

/** A fleet access file for etcd user `user`. */
async function access(user: string): Promise<string> {
  const c = await etcd.clientCert(user)
  const file = join(etcd.dir, `fleet-${user}.yaml`)
  writeFileSync(file, `endpoints: [${etcd.endpoints.join(', ')}]\nca: ${c.ca}\ncert: ${c.cert}\nkey: ${c.key}\nprefix: ${PREFIX}\n`)
  return file
}

async function status(k: number): Promise<{fleet: Record<string, unknown>; peers: {name: string; address: string}[]}> {
  const r = await fleet.cli(fleet.tb.names.nodes[k - 1], ['status', '--json'])
  expect(r.code, r.stderr).toBe(0)
  return JSON.parse(r.stdout)[0]
}

/** Polls until `check` holds, up to `ms`; returns how long it took. */
async function within(ms: number, check: () => Promise<boolean>, what: string): Promise<number> {
  const t0 = Date.now()
  for (;;) {
    if (await check()) return Date.now() - t0
    if (Date.now() - t0 > ms) throw new Error(`not within ${ms} ms: ${what}`)
    await sleep(25)
  }
}

beforeAll(async () => {
  fleet = await createFleet({prefix: 'flt', nodes: 3, ctl: true, clients: 3, transport: 'tls', extraClients: ['carol', 'dave'], dataDir: inject('agentDataDir')})
  etcd = await startEtcd(fleet.tb, {members: 3})
  await etcd.enableAuth()
  rootConfig = await access('root')
  await fleetCli(rootConfig, ['init'])
  for (let k = 1; k <= 3; k++) await fleetCli(rootConfig, ['node', 'add', `node${k}`])
  await fleetCli(rootConfig, ['operator', 'add', 'ops'])
  opsConfig = await access('ops')
  for (let k = 1; k <= 3; k++) nodes.push(await fleet.startNode({node: k, config: await fleetConfig(k)}))
}, 180_000)

afterAll(async () => {
  await fleet?.tb.destroy()
})

describe('a fleet of three nodes on one etcd roster', () => {
  it('each node lists the fleet and registers itself', async () => {
    for (let k = 1; k <= 3; k++) {
      await within(10_000, async () => (await status(k)).fleet.nodes === 3, `node${k} sees 3 nodes`)
      expect((await status(k)).fleet).toMatchObject({state: 'connected', prefix: PREFIX, registered: true})
    }
    const list = JSON.parse(await fleetCli(opsConfig, ['nodes', '--json'])) as {name: string; record: Record<string, unknown>; heartbeatAgeSeconds: number}[]
    expect(list.map((n) => n.name)).toEqual(['node1', 'node2', 'node3'])
    expect(list[0].record).toMatchObject({transport: 'tls', health: 'ok', endpoints: {control: `${fleet.tb.addr.nodesWan[0]}:4443`}})
    expect(list[0].heartbeatAgeSeconds).toBeLessThan(10)
  })

  it('a client added to etcd connects to any node without a restart, and learns the other nodes', async () => {
    const {tb} = fleet
    const refused = await fleet.startClient('carol', 0, {node: 1, wait: /refused/})
    await refused.exited
    await fleetCli(opsConfig, ['client', 'add', 'carol'])
    const carols = []
    for (let k = 1; k <= 3; k++) carols.push(await fleet.startClient('carol', k - 1, {node: k}))
    for (let k = 1; k <= 3; k++) expect((await status(k)).peers.map((p) => p.name)).toContain('carol')
    expect(carols[0].output).toMatch(/fleet: 2 other node\(s\) serve tls: node2 \(198\.51\.100\.3:4443\), node3 \(198\.51\.100\.4:4443\)/)
    // ...and weighs them as places to go (failover): listed, probed, from the fleet.
    await within(5_000, async () => {
      const r = await fleet.cli(tb.names.client[0], ['status', '--json'])
      const sel = (JSON.parse(r.stdout) as StatusReport[])[0].selection!
      const others = sel.candidates.filter((c) => c.source === 'fleet')
      return sel.current === 'node1' && others.map((c) => c.name).sort().join() === 'node2,node3' && others.every((c) => c.rttMs !== null)
    }, 'carol weighs node2 and node3')
    const ping = await tb.exec(tb.names.client[1], 'ping', ['-c', '2', '-i', '0.2', '-W', '1', tb.addr.target])
    expect(ping.stdout).toMatch(/2 received/)
  })

  it('a revocation in etcd cuts the client on every node within 1 s, admission included, and it stays out', async () => {
    const {tb} = fleet
    const carolAt = await Promise.all([1, 2, 3].map(async (k) => (await status(k)).peers.find((p) => p.name === 'carol')!.address))
    const marks = nodes.map((n) => n.output.length)
    await fleetCli(opsConfig, ['revoke', 'carol'])
    // From `agent fleet revoke` returning to each node's cut, by the nodes' own clocks.
    const returned = Date.now()
    const cutAt = await Promise.all(
      nodes.map(async (n, i) => {
        const line = await n.waitFor(/^(\S+) info {2}node\d: client carol \S+ disconnected: client "carol" is revoked in the fleet/m, 3_000, marks[i])
        return Date.parse(line.split(' ')[0]) - returned
      }),
    )
    // Negative: the node cut her before the command's process had even exited.
    console.log(`fleet revocation: carol cut on node1, node2, node3 ${cutAt.join(', ')} ms after agent fleet revoke returned`)
    for (const ms of cutAt) expect(ms).toBeLessThan(1_000)
    // Her admission (and with it her flows) went with her session.
    for (let k = 1; k <= 3; k++) {
      await within(1_000, async () => !(await admittedAddresses(tb, tb.names.nodes[k - 1])).includes(carolAt[k - 1]), `carol's admission gone on node${k}`)
    }
    // It cannot come back anywhere.
    await sleep(1_500)
    for (let k = 1; k <= 3; k++) expect((await status(k)).peers.some((p) => p.name === 'carol')).toBe(false)
  })

  it('keeps working with one etcd member down, and through a full etcd outage', async () => {
    const {tb} = fleet
    await fleet.startClient('alice', 0, {node: 1})
    await etcd.stopMember(0)
    await fleetCli(opsConfig, ['client', 'add', 'dave'])
    const dave = await fleet.startClient('dave', 2, {node: 3})
    await fleetCli(opsConfig, ['revoke', 'dave'])
    await within(3_000, async () => !(await status(3)).peers.some((p) => p.name === 'dave'), 'dave cut with a member down')
    await dave.exited.catch(() => {})

    await etcd.stopAll()
    await within(20_000, async () => (await status(1)).fleet.state === 'unreachable', 'node1 notices etcd is gone')
    // Current clients keep flowing; nothing admitted is refused.
    const ping = await tb.exec(tb.names.client[0], 'ping', ['-c', '2', '-i', '0.2', '-W', '1', tb.addr.target])
    expect(ping.stdout).toMatch(/2 received/)
    expect((await status(1)).peers.map((p) => p.name)).toContain('alice')

    await etcd.startAll()
    // Every node, not only node1: each reconnects on its own backoff, and a revocation made
    // while one is still away reaches it only when it lists again (tested below).
    for (let k = 1; k <= 3; k++) await within(20_000, async () => (await status(k)).fleet.state === 'connected', `node${k} back on etcd`)
    await fleetCli(opsConfig, ['revoke', 'alice'])
    for (let k = 1; k <= 3; k++) await within(3_000, async () => !(await status(k)).peers.some((p) => p.name === 'alice'), `alice cut on node${k}`)
  }, 90_000)

  it('a node cut off from etcd while its revision is compacted lists the fleet again and misses nothing', async () => {
    const {tb} = fleet
    const ns = tb.names.nodes[1]
    const mark = nodes[1].output.length
    const drop = ['-d', tb.addr.ctl!, '-j', 'DROP']
    await tb.exec(ns, 'iptables', ['-w', '-I', 'OUTPUT', '1', ...drop], {check: true})
    try {
      // Silent: no reset, no close. The stream's keepalive notices.
      await within(30_000, async () => (await status(2)).fleet.state === 'unreachable', 'node2 notices the partition')
      await fleetCli(opsConfig, ['client', 'add', 'erin'])
      await fleetCli(opsConfig, ['client', 'add', 'frank'])
      const rev = JSON.parse((await etcd.etcdctl(['get', `${PREFIX}/version`, '-w', 'json'], {check: true})).stdout).header.revision
      await etcd.etcdctl(['compact', String(rev)], {check: true})
    } finally {
      await tb.exec(ns, 'iptables', ['-w', '-D', 'OUTPUT', ...drop])
    }
    await nodes[1].waitFor(/fleet: watch ended .*; listing the fleet again/, 30_000, mark)
    await within(10_000, async () => (await status(2)).fleet.clients === 4, 'node2 has carol, dave, erin and frank')
    expect((await status(2)).fleet.state).toBe('connected')
  }, 90_000)

  it('a node killed with -9 leaves the registry within the lease TTL', async () => {
    nodes[2].child.kill('SIGKILL')
    await nodes[2].exited
    const ms = await within(
      15_000,
      async () => {
        const list = JSON.parse(await fleetCli(opsConfig, ['nodes', '--json'])) as {name: string}[]
        return list.map((n) => n.name).join() === 'node1,node2'
      },
      'node3 gone from the registry',
    )
    console.log(`fleet registry: node3 gone ${ms} ms after kill -9`)
    await within(5_000, async () => (await status(1)).fleet.nodes === 2, 'node1 sees 2 nodes')
  }, 30_000)

  it('a node that starts while etcd is unreachable serves its own file and catches up, or refuses to start', async () => {
    await etcd.stopAll()
    const file = await fleetConfig(3)
    const refuse = file.replace(/\.yaml$/, '-refuse.yaml')
    writeFileSync(refuse, `${readFileSync(file, 'utf8').trimEnd()}\n  unreachable: refuse\n`)
    const refused = await fleet.startNode({node: 3, config: refuse}).then(
      () => null,
      (e: Error) => e.message,
    )
    expect(refused).toMatch(/fleet: /)
    // The default: up at once on the file's roster, and the fleet's once etcd answers.
    const node3 = await fleet.startNode({node: 3, config: file})
    expect(node3.output).toMatch(/fleet: etcd unreachable at start .*serving with this file's roster/)
    expect((await status(3)).fleet).toMatchObject({state: 'unreachable', clients: 0})
    await etcd.startAll()
    await within(20_000, async () => (await status(3)).fleet.clients === 4, 'node3 catches up with the fleet')
    expect((await status(3)).fleet.state).toBe('connected')
  }, 90_000)
})
