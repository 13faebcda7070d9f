/**
 * The whole slice with the real binary: a node and clients behind a home NAT in namespaces,
 * the tls transport, forwarding to a target that sees only the node's address.
 */
import {afterAll, beforeAll, describe, expect, inject, it} from 'vitest'
import {probeEcho, startEchoServer, type EchoServer} from '../../src/testbed/index.js'
import {existsSync, readFileSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {AgentProcess, BIN, type Fleet, NODE_PORT, admittedAddresses, agentEnv, agentTraces, createFleet} from '../../src/testbed/index.js'

let fleet: Fleet
let echo: EchoServer
const running: AgentProcess[] = []

beforeAll(async () => {
  fleet = await createFleet({prefix: 'tlse', clients: 2, dataDir: inject('agentDataDir')})
  echo = await startEchoServer(fleet.tb, fleet.tb.names.target)
})

afterAll(async () => {
  await fleet?.tb.destroy()
})

async function stop(p: AgentProcess): Promise<number | null> {
  p.child.kill('SIGTERM')
  return p.exited
}

function status(json: string): {peers: {name: string; address: string; txPackets: number; rxPackets: number}[]} {
  return JSON.parse(json)[0]
}

describe('tls transport, node and clients behind a NAT', () => {
  let node: AgentProcess
  let alice: AgentProcess

  it('brings up a node and a client; ping and TCP reach the target through the tunnel, SNATed to the node', async () => {
    const {tb} = fleet
    node = await fleet.startNode()
    running.push(node)
    alice = await fleet.startClient('alice', 0)
    running.push(alice)

    const ping = await tb.exec(tb.names.client[0], 'ping', ['-c', '3', '-i', '0.2', '-W', '2', tb.addr.target])
    expect(ping.code, ping.stdout + ping.stderr).toBe(0)

    const tcp = await probeEcho(tb, tb.names.client[0], tb.addr.target, echo.port, {proto: 'tcp'})
    expect(tcp).toMatchObject({ok: true, peer: {address: tb.addr.nodeEgress}})

    // A bulk TCP transfer, checked end to end: 4 MiB through the echo server and back.
    const bulk = await tb.exec(tb.names.client[0], process.execPath, [
      '-e',
      `const s=require('net').connect(${echo.port},'${tb.addr.target}');const n=4<<20;let got=0,line=false;
       s.on('data',d=>{if(!line){const i=d.indexOf(10);if(i<0)return;line=true;d=d.subarray(i+1)}got+=d.length;if(got>=n){console.log('echoed',got);process.exit(0)}});
       s.write(Buffer.alloc(n,7));setTimeout(()=>{console.log('short',got);process.exit(1)},20000)`,
    ])
    expect(bulk.stdout).toMatch(/echoed 4194304/)

    const st = await fleet.cli(tb.names.client[0], ['status', '--json'])
    expect(st.code, st.stderr).toBe(0)
    const report = status(st.stdout)
    expect(report.peers[0].txPackets).toBeGreaterThan(0)
    expect(report.peers[0].rxPackets).toBeGreaterThan(0)

    const human = await fleet.cli(tb.names.node, ['status'])
    expect(human.stdout).toMatch(/alice\s+10\.99\.0\.\d+\s+198\.51\.100\.2:\d+/)
  })

  it('admits exactly the connected authorized client, as an element of the admitted set', async () => {
    expect(await admittedAddresses(fleet.tb, fleet.tb.names.node)).toEqual(['10.99.0.2'])
  })

  it('serves two clients behind the same NAT at once', async () => {
    const {tb} = fleet
    const bob = await fleet.startClient('bob', 1)
    running.push(bob)
    const [a, b] = await Promise.all([
      probeEcho(tb, tb.names.client[0], tb.addr.target, echo.port, {proto: 'udp'}),
      probeEcho(tb, tb.names.client[1], tb.addr.target, echo.port, {proto: 'udp'}),
    ])
    expect(a).toMatchObject({ok: true, peer: {address: tb.addr.nodeEgress}})
    expect(b).toMatchObject({ok: true, peer: {address: tb.addr.nodeEgress}})
    const st = status((await fleet.cli(tb.names.node, ['status', '--json'])).stdout)
    expect(st.peers.map((p) => `${p.name}=${p.address}`).sort()).toEqual(['alice=10.99.0.2', 'bob=10.99.0.50'])
    expect(await stop(bob)).toBe(0)
  })

  it('keeps traffic to destinations outside the routes out of the tunnel', async () => {
    const {tb} = fleet
    const before = status((await fleet.cli(tb.names.client[0], ['status', '--json'])).stdout).peers[0].txPackets
    const route = await tb.exec(tb.names.client[0], 'ip', ['route', 'get', tb.addr.target2])
    expect(route.stdout).not.toMatch(/agtun0/)
    await probeEcho(tb, tb.names.client[0], tb.addr.target2, echo.port, {proto: 'udp', timeoutMs: 500})
    const after = status((await fleet.cli(tb.names.client[0], ['status', '--json'])).stdout).peers[0].txPackets
    // Keepalives are control frames, not data: the data counter must not have moved.
    expect(after).toBe(before)
  })

  it("routes none of the node's subnet but the node's own tunnel address into the tunnel", async () => {
    const {tb} = fleet
    const ns = tb.names.client[0]
    const addr = await tb.exec(ns, 'ip', ['-4', '-o', 'address', 'show', 'dev', 'agtun0'])
    expect(addr.stdout).toMatch(/inet 10\.99\.0\.2\/24 .*noprefixroute/)
    const routes = (await tb.exec(ns, 'ip', ['-4', 'route', 'show', 'dev', 'agtun0'])).stdout.trim().split('\n').map((l) => l.split(' ')[0])
    expect(routes.sort()).toEqual(['10.99.0.1', tb.addr.target].sort())
    const other = await tb.exec(ns, 'ip', ['route', 'get', '10.99.0.77'])
    expect(other.stdout).not.toMatch(/agtun0/)
    const gw = await tb.exec(ns, 'ip', ['route', 'get', '10.99.0.1'])
    expect(gw.stdout).toMatch(/dev agtun0/)
  })

  it('never forwards a client to a denied network, however it routes it', async () => {
    const {tb} = fleet
    // The default denies link-local (a cloud metadata service); here the second target too.
    const denied = fleet.nodeConfig.replace(/\.yaml$/, '-deny.yaml')
    writeFileSync(denied, readFileSync(fleet.nodeConfig, 'utf8').replace(/egress: \{interface: (\S+)\}/, `egress: {interface: $1, deny: [169.254.0.0/16, ${tb.addr.target2}/32]}`))
    node.child.kill('SIGTERM')
    expect(await node.exited).toBe(0)
    node = await fleet.startNode({config: denied})
    const bob = await fleet.startClient('bob', 1, {routes: [`${tb.addr.target}/32`, `${tb.addr.target2}/32`]})
    try {
      const ok = await tb.exec(tb.names.client[1], 'ping', ['-c', '2', '-i', '0.2', '-W', '2', tb.addr.target])
      expect(ok.code, ok.stdout).toBe(0)
      const no = await tb.exec(tb.names.client[1], 'ping', ['-c', '2', '-i', '0.2', '-W', '1', tb.addr.target2])
      expect(no.code).not.toBe(0)
      const rules = (await tb.exec(tb.names.node, 'iptables-save', ['-t', 'filter'])).stdout
      expect(rules).toMatch(new RegExp(`-A AGENT-node1-FWD -d ${tb.addr.target2.replace(/\./g, '\\.')}/32 -i agtun0 -j DROP`))
      expect(rules).toMatch(/-A AGENT-node1-FWD -d 169\.254\.0\.0\/16 -i agtun0 -j DROP/)
    } finally {
      expect(await stop(bob)).toBe(0)
      node.child.kill('SIGTERM')
      expect(await node.exited).toBe(0)
      node = await fleet.startNode()
    }
  })

  it('resumes by itself after the node restarts', async () => {
    const {tb} = fleet
    expect(await stop(node)).toBe(0)
    const mark = alice.output.length
    await alice.waitFor(/connection to node .* lost/, 10_000, mark)
    node = await fleet.startNode()
    running.push(node)
    await alice.waitFor(/connected to node/, 20_000, mark)
    const r = await probeEcho(tb, tb.names.client[0], tb.addr.target, echo.port, {proto: 'udp'})
    expect(r).toMatchObject({ok: true, peer: {address: tb.addr.nodeEgress}})
  })

  it('moves a client to a new tunnel address live: its routes stay, and still none of the subnet is routed', async () => {
    const {tb} = fleet
    const ns = tb.names.client[0]
    const moved = fleet.nodeConfig.replace(/\.yaml$/, '-moved.yaml')
    writeFileSync(moved, readFileSync(fleet.nodeConfig, 'utf8').replace('  - name: alice\n', '  - name: alice\n    address: 10.99.0.7\n'))
    let mark = alice.output.length
    const there = await fleet.cli(tb.names.node, ['reload', '--config', moved])
    expect(there.code, there.stderr).toBe(0)
    try {
      await alice.waitFor(/connected to node .* as 10\.99\.0\.7/, 20_000, mark)
      expect(alice.output.slice(mark)).toMatch(/node moved us from 10\.99\.0\.2 to 10\.99\.0\.7/)
      const addr = await tb.exec(ns, 'ip', ['-4', '-o', 'address', 'show', 'dev', 'agtun0'])
      expect(addr.stdout.trim().split('\n')).toHaveLength(1)
      expect(addr.stdout).toMatch(/inet 10\.99\.0\.7\/24 .*noprefixroute/)
      const routes = (await tb.exec(ns, 'ip', ['-4', 'route', 'show', 'dev', 'agtun0'])).stdout.trim().split('\n').map((l) => l.split(' ')[0])
      expect(routes.sort()).toEqual(['10.99.0.1', tb.addr.target].sort())
      const r = await probeEcho(tb, ns, tb.addr.target, echo.port, {proto: 'udp'})
      expect(r).toMatchObject({ok: true, peer: {address: tb.addr.nodeEgress}})
    } finally {
      mark = alice.output.length
      const back = await fleet.cli(tb.names.node, ['reload', '--config', fleet.nodeConfig])
      expect(back.code, back.stderr).toBe(0)
      await alice.waitFor(/connected to node .* as 10\.99\.0\.2/, 20_000, mark)
    }
  })

  it("keeps the client's route to the node outside the tunnel when its routes cover the node", async () => {
    const {tb} = fleet
    // The node's whole public network goes into the tunnel, node address included: without a
    // host route for the node via the old gateway, the tunnel would try to carry itself.
    const bob = await fleet.startClient('bob', 1, {routes: [`${tb.addr.target}/32`, '198.51.100.0/24']})
    const toNode = await tb.exec(tb.names.client[1], 'ip', ['route', 'get', tb.addr.nodeWan])
    expect(toNode.stdout).toMatch(new RegExp(`via ${tb.addr.natLan.replace(/\./g, '\\.')} dev eth0`))
    const toNet = await tb.exec(tb.names.client[1], 'ip', ['route', 'get', '198.51.100.77'])
    expect(toNet.stdout).toMatch(/dev agtun0/)
    await expect(probeEcho(tb, tb.names.client[1], tb.addr.target, echo.port, {proto: 'udp'})).resolves.toMatchObject({ok: true})
    bob.child.kill('SIGTERM')
    expect(await bob.exited).toBe(0)
    const after = await tb.exec(tb.names.client[1], 'ip', ['route', 'show'])
    expect(after.stdout).not.toMatch(/198\.51\.100\.1 via|agtun0/)
  })

  it('refuses a client with a valid certificate that is not authorized, and forwards nothing for it', async () => {
    const {tb} = fleet
    const mallory = await fleet.startClient('mallory', 1, {wait: null})
    expect(await mallory.exited).not.toBe(0)
    expect(mallory.output).toMatch(/refused us: client "mallory" is not in this node's authorized clients/)
    await node.waitFor(/refused client from .*mallory/)
    // Only alice (connected) is admitted; mallory got nothing.
    expect(await admittedAddresses(tb, tb.names.node)).toEqual(['10.99.0.2'])
    expect(await agentTraces(tb, tb.names.client[1])).toEqual([])
  })

  it('a client holding a foreign CA bundle refuses the node and applies nothing', async () => {
    const {tb} = fleet
    const file = fleet.clientConfig('alice', {index: 9})
    writeFileSync(file, readFileSync(file, 'utf8').replace(`${fleet.pki}/alice.pem`, `${fleet.foreignPki}/alice.pem`))
    const impostor = await fleet.cli(tb.names.client[1], ['up', '--config', file])
    expect(impostor.code).not.toBe(0)
    expect(impostor.stderr).toMatch(/TLS with node 198\.51\.100\.1:\d+ failed: self-signed certificate in certificate chain/)
    expect(await agentTraces(tb, tb.names.client[1])).toEqual([])
  })

  it('the node refuses a certificate from a foreign CA, says why, and forwards nothing for it', async () => {
    const {tb} = fleet
    // A raw TLS client that trusts the real fleet CA but presents a foreign-CA certificate:
    // the agent itself will not even load such a pair, so this speaks the protocol directly.
    const script = `
      const tls = require('node:tls'), fs = require('node:fs')
      const [ca, cert, key, host, port] = process.argv.slice(1)
      const s = tls.connect({host, port: +port, servername: 'node1', ca: fs.readFileSync(ca), cert: fs.readFileSync(cert), key: fs.readFileSync(key), minVersion: 'TLSv1.3'})
      let buf = Buffer.alloc(0)
      s.on('data', (d) => { buf = Buffer.concat([buf, d]); if (buf.length >= 3 && buf.length >= 3 + buf.readUInt16BE(1)) { console.log(buf.subarray(3, 3 + buf.readUInt16BE(1)).toString()); process.exit(0) } })
      s.on('error', (e) => { console.log('error ' + e.message); process.exit(1) })`
    const r = await tb.exec(tb.names.client[1], process.execPath, [
      '-e',
      script,
      `${fleet.pki}/ca.crt`,
      `${fleet.foreignPki}/alice.crt`,
      `${fleet.foreignPki}/alice.key`,
      tb.addr.nodeWan,
      String(NODE_PORT),
    ])
    expect(JSON.parse(r.stdout)).toEqual({type: 'refused', reason: expect.stringMatching(/certificate not accepted: it is not signed by this fleet's CA/)})
    await node.waitFor(/refused client from 198\.51\.100\.2:\d+: certificate not accepted: it is not signed by this fleet's CA/)
    expect(await admittedAddresses(tb, tb.names.node)).toEqual(['10.99.0.2']) // alice only
  })

  it("a client refuses a node whose subnet overlaps one of its host's routes, and applies nothing", async () => {
    const {tb} = fleet
    const ns = tb.names.client[1]
    await tb.exec(ns, 'ip', ['route', 'add', 'blackhole', '10.99.0.0/16'])
    try {
      const bob = await fleet.startClient('bob', 1, {wait: null})
      expect(await bob.exited).not.toBe(0)
      expect(bob.output).toMatch(/refusing the node's tunnel address 10\.99\.0\.50\/24: 10\.99\.0\.0\/24 overlaps this host's route 10\.99\.0\.0\/16 blackhole/)
      expect(await agentTraces(tb, ns)).toEqual([])
      expect(existsSync(join(fleet.runDir(ns), 'bob.json'))).toBe(false)
    } finally {
      await tb.exec(ns, 'ip', ['route', 'del', 'blackhole', '10.99.0.0/16'])
    }
  })

  it('removes every TUN, route and rule on SIGTERM, in every namespace', async () => {
    const {tb} = fleet
    expect(await stop(alice)).toBe(0)
    expect(await stop(node)).toBe(0)
    for (const ns of [tb.names.node, tb.names.client[0], tb.names.client[1]]) expect(await agentTraces(tb, ns)).toEqual([])
    const fwd = await tb.exec(tb.names.node, 'sysctl', ['-n', 'net.ipv4.ip_forward'])
    expect(fwd.stdout.trim()).toBe('0')
  })

  it('after kill -9, the next up cleans up and works; down removes it all', async () => {
    const {tb} = fleet
    node = await fleet.startNode()
    alice = await fleet.startClient('alice', 0)
    node.child.kill('SIGKILL')
    alice.child.kill('SIGKILL')
    await Promise.all([node.exited, alice.exited])
    // The firewall chains outlive a killed process; the next up must clear them.
    expect((await agentTraces(tb, tb.names.node)).some((l) => l.startsWith('iptables'))).toBe(true)
    node = await fleet.startNode()
    await node.waitFor(/previous run of "node1" .* cleaning up/)
    alice = await fleet.startClient('alice', 0)
    const r = await probeEcho(tb, tb.names.client[0], tb.addr.target, echo.port, {proto: 'udp'})
    expect(r).toMatchObject({ok: true, peer: {address: tb.addr.nodeEgress}})

    const down = await fleet.cli(tb.names.client[0], ['down', '--config', fleet.clientConfig('alice', {index: 0})])
    expect(down.stdout).toMatch(/stopped alice/)
    expect(await alice.exited).toBe(0)
    const downNode = await fleet.cli(tb.names.node, ['down', '--config', fleet.nodeConfig])
    expect(downNode.stdout).toMatch(/stopped node1/)
    for (const ns of [tb.names.node, tb.names.client[0]]) expect(await agentTraces(tb, ns)).toEqual([])
  })

  it('down after a crash removes what the crashed run left', async () => {
    const {tb} = fleet
    node = await fleet.startNode()
    node.child.kill('SIGKILL')
    await node.exited
    const down = await fleet.cli(tb.names.node, ['down', '--config', fleet.nodeConfig])
    expect(down.stdout).toMatch(/was not running; removed what its last run left behind/)
    expect(await agentTraces(tb, tb.names.node)).toEqual([])
  })
})

describe('two nodes in one network namespace', () => {
  /** A second node beside node1: its own name, TUN, subnet, port, and run directory. */
  async function startSecondNode(): Promise<{p: AgentProcess; config: string; runDir: string}> {
    const {tb} = fleet
    const config = fleet.nodeConfig.replace(/node1\.yaml$/, 'node2.yaml')
    writeFileSync(
      config,
      readFileSync(fleet.nodeConfig, 'utf8')
        .replace('name: node1', 'name: node2')
        .replace('interface: agtun0', 'interface: agtun1')
        .replace('10.99.0.0/24', '10.98.0.0/24')
        .replace('10.99.0.50', '10.98.0.50')
        .replace(`port: ${NODE_PORT}`, `port: ${NODE_PORT + 1}`),
    )
    const runDir = join(fleet.runDir(tb.names.node), '..', 'run2')
    const env = {...agentEnv(fleet.runDir(tb.names.node), fleet.dataDir), AGENT_RUN_DIR: runDir}
    const p = new AgentProcess(tb.spawn(tb.names.node, process.execPath, [BIN, 'up', '--config', config], {env, stdio: ['ignore', 'pipe', 'pipe']}))
    running.push(p)
    await p.waitFor(/node node2 up/)
    return {p, config, runDir}
  }

  const forwarding = async () => (await fleet.tb.exec(fleet.tb.names.node, 'sysctl', ['-n', 'net.ipv4.ip_forward'])).stdout.trim()

  it('the first to stop leaves ip_forward on for the other (even with another run directory); the last puts back 0', async () => {
    expect(await forwarding()).toBe('0')
    const node1 = await fleet.startNode()
    running.push(node1)
    const second = await startSecondNode()
    expect(await forwarding()).toBe('1')
    expect(await stop(node1)).toBe(0)
    expect(await forwarding()).toBe('1')
    expect(await stop(second.p)).toBe(0)
    expect(await forwarding()).toBe('0')
    expect(await agentTraces(fleet.tb, fleet.tb.names.node)).toEqual([])
  })

  it('a node killed with -9 does not keep ip_forward on after the other stops; down cleans up after it', async () => {
    const node1 = await fleet.startNode()
    running.push(node1)
    const second = await startSecondNode()
    second.p.child.kill('SIGKILL')
    await second.p.exited
    expect(await stop(node1)).toBe(0)
    expect(await forwarding()).toBe('0')
    const down = await fleet.cli(fleet.tb.names.node, ['down', '--config', second.config, '--run-dir', second.runDir])
    expect(down.stdout, down.stderr).toMatch(/node2 was not running; removed what its last run left behind/)
    expect(await forwarding()).toBe('0')
    expect(await agentTraces(fleet.tb, fleet.tb.names.node)).toEqual([])
  })
})
