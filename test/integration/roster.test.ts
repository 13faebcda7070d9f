/**
 * The live roster with the real binary in namespaces: `agent reload` and SIGHUP add and remove
 * clients while another client's ping and TCP transfer run; a revoked certificate (the CRL
 * file rewritten by `agent pki revoke`) is cut and cannot come back; `clients: any`; a client
 * reloads its routes without reconnecting. Admission is only ever set elements, never a rule
 * per client.
 */
import {afterAll, beforeAll, describe, expect, inject, it} from 'vitest'
import {readFileSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {
  type AgentProcess,
  type EchoServer,
  type Fleet,
  admittedAddresses,
  agentCli,
  agentTraces,
  createFleet,
  probeEcho,
  startEchoServer,
} from '../../src/testbed/index.js'

let fleet: Fleet
let echo: EchoServer
const running: AgentProcess[] = []

beforeAll(async () => {
  fleet = await createFleet({prefix: 'rost', clients: 3, dataDir: inject('agentDataDir')})
  echo = await startEchoServer(fleet.tb, fleet.tb.names.target)
})

afterAll(async () => {
  for (const p of running) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL')
  await Promise.all(running.map((p) => p.exited))
  await fleet?.tb.destroy()
})

function track(p: AgentProcess): AgentProcess {
  running.push(p)
  return p
}

async function stop(p: AgentProcess): Promise<number | null> {
  p.child.kill('SIGTERM')
  return p.exited
}

interface NodeStatus {
  peers: {name: string; address: string}[]
  roster: {listed: number; any: boolean; connected: number; revoked: number; crl?: {number?: string; expired: boolean; error?: string}}
}

async function nodeStatus(): Promise<NodeStatus> {
  const r = await fleet.cli(fleet.tb.names.node, ['status', '--json'])
  expect(r.code, r.stderr).toBe(0)
  return JSON.parse(r.stdout)[0]
}

/** A node config: the fleet's, with these clients (YAML flow text) and optionally the CRL. */
function writeNodeConfig(file: string, clients: string, crl = false): string {
  const base = readFileSync(fleet.nodeConfig, 'utf8')
  const head = base.slice(0, base.indexOf('clients:'))
  const tail = base.slice(base.indexOf('transports:'))
  const pki = crl ? head.replace(/pki: \{bundle: (\S+)\}/, `pki: {bundle: $1, crl: ${fleet.pki}/crl.pem}`) : head
  writeFileSync(file, `${pki}clients: ${clients}\n${tail}`)
  return file
}

/**
 * In a client namespace: ping the target every 50 ms and keep a TCP stream to the echo server
 * going, both for `seconds`; resolves with the ping summary and the bytes echoed vs sent.
 */
function keepTraffic(ns: string, seconds: number): Promise<{loss: string; sent: number; echoed: number}> {
  const {tb} = fleet
  const count = Math.round(seconds * 20)
  const ping = tb.exec(ns, 'ping', ['-c', String(count), '-i', '0.05', '-W', '1', tb.addr.target])
  const stream = tb.exec(ns, process.execPath, [
    '-e',
    `const s=require('net').connect(${echo.port},'${tb.addr.target}');let sent=0,got=0,line=false;
     s.on('data',d=>{if(!line){const i=d.indexOf(10);if(i<0)return;line=true;d=d.subarray(i+1)}got+=d.length});
     const t=setInterval(()=>{s.write(Buffer.alloc(32768,7));sent+=32768},50);
     setTimeout(()=>{clearInterval(t);const end=Date.now()+5000;const w=setInterval(()=>{if(got>=sent||Date.now()>end){console.log(JSON.stringify({sent,got}));process.exit(0)}},50)},${seconds * 1000})`,
  ])
  return Promise.all([ping, stream]).then(([p, s]) => {
    const loss = /(\d+(?:\.\d+)?)% packet loss/.exec(p.stdout)?.[1] ?? `ping failed: ${p.stdout}${p.stderr}`
    const {sent, got} = JSON.parse(s.stdout.trim() || '{"sent":-1,"got":-2}') as {sent: number; got: number}
    return {loss, sent, echoed: got}
  })
}

describe('a node whose roster changes live', () => {
  let node: AgentProcess
  let alice: AgentProcess
  let bob: AgentProcess
  const config = () => join(fleet.tb.dir, 'configs', 'node1-live.yaml')

  it('admits connected clients only as set elements, never as a rule per client', async () => {
    const {tb} = fleet
    writeNodeConfig(config(), '[{name: alice}, {name: bob, address: 10.99.0.50}]')
    node = track(await fleet.startNode({config: config()}))
    alice = track(await fleet.startClient('alice', 0))
    bob = track(await fleet.startClient('bob', 1))
    expect(await admittedAddresses(tb, tb.names.node)).toEqual(['10.99.0.2', '10.99.0.50'])
    const rules = (await tb.exec(tb.names.node, 'iptables-save', [])).stdout
    expect(rules).not.toMatch(/10\.99\.0\.(2|50)\b/)
    expect(rules).toMatch(/-A AGENT-node1-FWD .*--match-set \S+ src -j ACCEPT/)
  })

  it('reload removes a client and adds another while alice\'s ping and TCP stream lose nothing', async () => {
    const {tb} = fleet
    const traffic = keepTraffic(tb.names.client[0], 4)
    await new Promise((r) => setTimeout(r, 1000))
    writeNodeConfig(config(), '[{name: alice}, {name: mallory}]')
    const started = Date.now()
    const reload = await fleet.cli(tb.names.node, ['reload', '--config', config()])
    const took = Date.now() - started
    expect(reload.code, reload.stderr).toBe(0)
    expect(reload.stdout).toMatch(/node1: reloaded: clients changed; cut bob: client "bob" is not in this node's authorized clients/)
    // The reload answers once bob's session, address and admission are gone.
    expect(await admittedAddresses(tb, tb.names.node)).toEqual(['10.99.0.2'])
    expect((await nodeStatus()).peers.map((p) => p.name)).toEqual(['alice'])
    console.log(`reload that cut one client answered in ${took} ms`)
    // bob was told why and does not come back by itself.
    expect(await bob.exited).not.toBe(0)
    expect(bob.output).toMatch(/refused us: client "bob" is not in this node's authorized clients/)
    // mallory, added by the reload, connects at once from bob's namespace.
    const mallory = track(await fleet.startClient('mallory', 1))
    await expect(probeEcho(tb, tb.names.client[1], tb.addr.target, echo.port, {proto: 'udp'})).resolves.toMatchObject({ok: true})
    const t = await traffic
    expect(t.loss).toBe('0')
    expect(t.sent).toBeGreaterThan(0)
    expect(t.echoed).toBe(t.sent)
    expect(await stop(mallory)).toBe(0)
  })

  it('a removed client cannot reconnect', async () => {
    const again = track(await fleet.startClient('bob', 1, {wait: null}))
    expect(await again.exited).not.toBe(0)
    expect(again.output).toMatch(/refused us: client "bob" is not in this node's authorized clients/)
    expect(await admittedAddresses(fleet.tb, fleet.tb.names.node)).toEqual(['10.99.0.2'])
  })

  it('refuses an invalid file and a field that cannot change live, and changes nothing', async () => {
    const {tb} = fleet
    const bad = join(tb.dir, 'configs', 'node1-bad.yaml')
    writeFileSync(bad, readFileSync(config(), 'utf8').replace('clients: [', 'clients: [{name: bob, adress: 10.99.0.9}, '))
    const invalid = await fleet.cli(tb.names.node, ['reload', '--config', bad])
    expect(invalid.code).toBe(2)
    expect(invalid.stderr).toMatch(/node1-bad\.yaml:\d+:\d+: clients\[0\]\.adress: unknown key/)
    writeFileSync(bad, readFileSync(config(), 'utf8').replace('subnet: 10.99.0.0/24', 'subnet: 10.98.0.0/24').replace('clients: [', 'clients: [{name: bob}, '))
    const fixed = await fleet.cli(tb.names.node, ['reload', '--config', bad])
    expect(fixed.code).toBe(1)
    expect(fixed.stderr).toMatch(/reload refused: these fields cannot change while the agent runs \(.*tunnel\.subnet\): restart it to apply; nothing was changed/)
    // bob was not added: the refused file's clients did not apply.
    expect((await nodeStatus()).roster).toMatchObject({listed: 2, connected: 1})
    const bobTry = track(await fleet.startClient('bob', 1, {wait: null}))
    expect(await bobTry.exited).not.toBe(0)
    expect(await admittedAddresses(tb, tb.names.node)).toEqual(['10.99.0.2'])
  })

  it('SIGHUP reloads the file the node runs from and keeps it running; a changed static address moves only that client', async () => {
    const {tb} = fleet
    writeNodeConfig(config(), '[{name: alice, address: 10.99.0.77}, {name: mallory}]')
    const mark = node.output.length
    const aliceMark = alice.output.length
    node.child.kill('SIGHUP')
    await node.waitFor(/reloaded: clients changed; moved alice: its address moved from 10\.99\.0\.2 to 10\.99\.0\.77/, 10_000, mark)
    await alice.waitFor(/node moved us from 10\.99\.0\.2 to 10\.99\.0\.77/, 10_000, aliceMark)
    await alice.waitFor(/connected to node/, 10_000, aliceMark)
    expect(await admittedAddresses(tb, tb.names.node)).toEqual(['10.99.0.77'])
    await expect(probeEcho(tb, tb.names.client[0], tb.addr.target, echo.port, {proto: 'udp'})).resolves.toMatchObject({ok: true})
    expect(node.child.exitCode).toBeNull()
  })
})

describe('revocation', () => {
  let node: AgentProcess
  const config = () => join(fleet.tb.dir, 'configs', 'node1-crl.yaml')

  it('cuts a connected client whose certificate is revoked, at once, and it cannot reconnect; others keep flowing', async () => {
    const {tb} = fleet
    for (const p of running) if (p.child.exitCode === null && p.child.signalCode === null) await stop(p)
    const crl = await agentCli(['pki', 'crl', '--dir', fleet.pki])
    expect(crl.code, crl.stderr).toBe(0)
    writeNodeConfig(config(), '[{name: alice}, {name: bob, address: 10.99.0.50}]', true)
    node = track(await fleet.startNode({config: config()}))
    const alice = track(await fleet.startClient('alice', 0))
    const bob = track(await fleet.startClient('bob', 1))
    expect((await nodeStatus()).roster).toMatchObject({revoked: 0, crl: {expired: false}})

    const traffic = keepTraffic(tb.names.client[0], 3)
    await new Promise((r) => setTimeout(r, 500))
    const started = Date.now()
    const revoke = await agentCli(['pki', 'revoke', 'bob', '--dir', fleet.pki])
    expect(revoke.code, revoke.stderr).toBe(0)
    // The node sees the CRL file change by itself: no reload.
    await bob.waitFor(/refused us: certificate \S+ of "bob" is revoked/, 5_000)
    const took = Date.now() - started
    console.log(`revocation by CRL file: bob cut ${took} ms after agent pki revoke started`)
    expect(await bob.exited).not.toBe(0)
    expect(await admittedAddresses(tb, tb.names.node)).toEqual(['10.99.0.2'])
    const t = await traffic
    expect(t.loss).toBe('0')
    expect(t.echoed).toBe(t.sent)

    const again = track(await fleet.startClient('bob', 1, {wait: null}))
    expect(await again.exited).not.toBe(0)
    expect(again.output).toMatch(/refused us: certificate \S+ of "bob" is revoked/)
    expect((await nodeStatus()).roster).toMatchObject({revoked: 1, crl: {expired: false}})
    expect(await stop(alice)).toBe(0)
  })

  it('keeps the last good CRL when the file is replaced by one that does not verify, and says so', async () => {
    const {tb} = fleet
    const mark = node.output.length
    const good = readFileSync(join(fleet.pki, 'crl.pem'), 'utf8')
    const foreign = await agentCli(['pki', 'crl', '--dir', fleet.foreignPki])
    expect(foreign.code, foreign.stderr).toBe(0)
    writeFileSync(join(fleet.pki, 'crl.pem'), readFileSync(join(fleet.foreignPki, 'crl.pem')))
    await node.waitFor(/CRL \S+ not applied, still enforcing the last good one/, 5_000, mark)
    const st = await nodeStatus()
    expect(st.roster.revoked).toBe(1)
    expect(st.roster.crl?.error).toBeTruthy()
    // A reload that changes no field still re-reads the CRL, and refuses this one.
    const reload = await fleet.cli(tb.names.node, ['reload', '--config', config()])
    expect(reload.code).toBe(1)
    expect(reload.stderr).toMatch(/CRL \S+ is not applied \(the node still enforces the last good one\)/)
    writeFileSync(join(fleet.pki, 'crl.pem'), good)
    const bob = track(await fleet.startClient('bob', 1, {wait: null}))
    expect(await bob.exited).not.toBe(0)
    expect(bob.output).toMatch(/is revoked/)
    expect(await stop(node)).toBe(0)
    expect(await agentTraces(tb, tb.names.node)).toEqual([])
  })

  it('clients: any admits a fresh certificate of the CA, and refuses a revoked one and a foreign-CA one', async () => {
    const {tb} = fleet
    const carol = await agentCli(['pki', 'issue', 'carol', '--dir', fleet.pki])
    expect(carol.code, carol.stderr).toBe(0)
    writeNodeConfig(config(), 'any', true)
    node = track(await fleet.startNode({config: config()}))
    const c = track(await fleet.startClient('carol', 0))
    await expect(probeEcho(tb, tb.names.client[0], tb.addr.target, echo.port, {proto: 'udp'})).resolves.toMatchObject({ok: true})
    const revoked = track(await fleet.startClient('bob', 1, {wait: null}))
    expect(await revoked.exited).not.toBe(0)
    expect(revoked.output).toMatch(/certificate \S+ of "bob" is revoked/)
    // A foreign CA's "alice": the node refuses the handshake's certificate.
    const file = fleet.clientConfig('alice', {index: 2})
    writeFileSync(file, readFileSync(file, 'utf8').replace(`${fleet.pki}/alice.pem`, `${fleet.foreignPki}/alice.pem`))
    const impostor = await fleet.cli(tb.names.client[2], ['up', '--config', file])
    expect(impostor.code).not.toBe(0)
    expect(await admittedAddresses(tb, tb.names.node)).toHaveLength(1)
    expect((await nodeStatus()).roster).toMatchObject({listed: 0, any: true, connected: 1, revoked: 1})
    expect(await stop(c)).toBe(0)
  })

  it('after kill -9 with a client admitted, the next up removes the old chains and set elements', async () => {
    const {tb} = fleet
    const alice = track(await fleet.startClient('alice', 0))
    expect(await admittedAddresses(tb, tb.names.node)).toHaveLength(1)
    node.child.kill('SIGKILL')
    alice.child.kill('SIGKILL')
    await Promise.all([node.exited, alice.exited])
    expect(await admittedAddresses(tb, tb.names.node)).toHaveLength(1)
    node = track(await fleet.startNode({config: config()}))
    await node.waitFor(/previous run of "node1" .* cleaning up/)
    expect(await admittedAddresses(tb, tb.names.node)).toEqual([])
    expect(await stop(node)).toBe(0)
    expect(await agentTraces(tb, tb.names.node)).toEqual([])
  })
})

describe('a client whose routes change live', () => {
  it('adds and removes routes on reload without reconnecting', async () => {
    const {tb} = fleet
    const node = track(await fleet.startNode())
    const alice = track(await fleet.startClient('alice', 0))
    const file = fleet.clientConfig('alice', {index: 0})
    const viaTunnel = async (dst: string) => /dev agtun0/.test((await tb.exec(tb.names.client[0], 'ip', ['route', 'get', dst])).stdout)
    expect(await viaTunnel(tb.addr.target2)).toBe(false)
    writeFileSync(file, readFileSync(file, 'utf8').replace(/routes: \[[^\]]*\]/, `routes: [${tb.addr.target2}/32]`))
    const mark = alice.output.length
    const r = await fleet.cli(tb.names.client[0], ['reload', '--config', file])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toMatch(new RegExp(`route ${tb.addr.target2}/32 added; route ${tb.addr.target}/32 removed`))
    expect(await viaTunnel(tb.addr.target2)).toBe(true)
    expect(await viaTunnel(tb.addr.target)).toBe(false)
    // TCP: the echo server answers UDP from its primary address, which the node's NAT would not match.
    await expect(probeEcho(tb, tb.names.client[0], tb.addr.target2, echo.port, {proto: 'tcp'})).resolves.toMatchObject({ok: true})
    // Same session: no reconnect happened.
    expect(alice.output.slice(mark)).not.toMatch(/connected to node|lost/)
    const refused = await fleet.cli(tb.names.client[0], ['reload', '--config', fleet.clientConfig('alice', {index: 0, transport: 'gre'})])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(/reload refused: these fields cannot change while the agent runs \(transport, /)
    expect(await stop(alice)).toBe(0)
    expect(await stop(node)).toBe(0)
    for (const ns of [tb.names.node, tb.names.client[0]]) expect(await agentTraces(tb, ns)).toEqual([])
  })
})
