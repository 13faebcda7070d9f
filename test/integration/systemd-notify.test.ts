/**
 * The readiness protocol with the real binary, as systemd would see it (docs/service.md): a tls
 * node started as agent@.service starts it (NOTIFY_SOCKET set, only the unit's three
 * capabilities), in the testbed's namespaces. A python3 listener stands in for systemd's socket
 * and records each datagram with its sender's pid. Checked: READY=1 comes only once the node
 * serves (its control port accepts at that moment, and nothing was said before; a node whose
 * port is taken never says it), from the main
 * pid (NotifyAccess=main); RELOADING=1 with a current MONOTONIC_USEC then READY=1 on SIGHUP and
 * on `agent reload` (READY before the command returns, so ExecReload ends when the reload has);
 * STOPPING=1 last on SIGTERM. A client connects and reaches the target through the node, so the
 * capability set suffices for a tls node's whole job (TUN, routes, firewall, ipset, ip_forward).
 *
 * Then each transport, node and client both under the unit's capabilities: a ping crosses and
 * both stop cleanly, having removed what they set up.
 *
 * Not systemd itself: it is not PID 1 here, so the unit never runs under it (docs/service.md).
 */
import {mkdirSync, mkdtempSync, readFileSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {afterAll, beforeAll, describe, expect, inject, it} from 'vitest'
import {AgentProcess, BIN, type Fleet, NODE_PORT, agentEnv, createFleet} from '../../src/testbed/index.js'
import {CAPABILITIES} from '../../src/core/service/unit.js'
import {listenNotify, type NotifyListener} from '../helpers/notify-listener.js'

/** The unit's CapabilityBoundingSet, as setpriv spells it. */
const CAPS = CAPABILITIES.map((c) => c.replace(/^CAP_/, '').toLowerCase())
const CAP_BITS: Record<string, number> = {CAP_NET_BIND_SERVICE: 10, CAP_NET_ADMIN: 12, CAP_NET_RAW: 13}
const MASK = CAPABILITIES.reduce((m, c) => m | (1n << BigInt(CAP_BITS[c])), 0n)

let fleet: Fleet
let listener: NotifyListener
let node: AgentProcess
const scratch = mkdtempSync(join(tmpdir(), `agent-sdn-${process.pid}-`))

const home = join(scratch, 'home')

beforeAll(async () => {
  mkdirSync(home, {mode: 0})
  fleet = await createFleet({prefix: 'sdn', clients: 1, transport: 'tls', dataDir: inject('agentDataDir')})
  listener = await listenNotify(join(scratch, 'notify.sock'))
})

afterAll(async () => {
  await listener?.close()
  await fleet?.tb.destroy()
  rmSync(scratch, {recursive: true, force: true})
})

const head = (m: string) => m.split('\n')[0]

/** Whether the node's control port accepts a TCP connection from the client's namespace now. */
async function controlPortAccepts(): Promise<boolean> {
  const {tb} = fleet
  const r = await tb.exec(tb.names.client[0], 'bash', ['-c', `exec 3<>/dev/tcp/${tb.addr.nodeWan}/${NODE_PORT}`], {timeoutMs: 5000})
  return r.code === 0
}

/**
 * `agent up` of node 1 as the unit runs it: NOTIFY_SOCKET set, only the unit's capabilities, and
 * a HOME it cannot enter (ProtectHome=yes: root without CAP_DAC_OVERRIDE cannot read a 0000 directory).
 */
function startUnderUnit(ns = fleet.tb.names.nodes[0], args = ['up', '--config', fleet.nodeConfig], notify = true): AgentProcess {
  const caps = `-all,${CAPS.map((c) => `+${c}`).join(',')}`
  return new AgentProcess(
    fleet.tb.spawn(ns, 'setpriv', [`--inh-caps=${caps}`, `--ambient-caps=${caps}`, `--bounding-set=${caps}`, process.execPath, BIN, ...args], {
      env: {...agentEnv(fleet.runDir(ns), fleet.dataDir), ...(notify ? {NOTIFY_SOCKET: listener.address} : {}), HOME: home},
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  )
}

describe('a node under a service manager (Type=notify)', () => {
  it('a node that cannot start (its port is taken) never says READY=1, and fails', async () => {
    const {tb} = fleet
    const squatter = tb.spawn(tb.names.nodes[0], 'python3', ['-c', `import socket,time\ns=socket.socket()\ns.bind(("0.0.0.0",${NODE_PORT}))\ns.listen()\nprint("up",flush=True)\ntime.sleep(60)`], {stdio: ['ignore', 'pipe', 'pipe']})
    try {
      await new Promise<void>((resolve, reject) => {
        squatter.stdout!.once('data', () => resolve())
        squatter.once('exit', (c) => reject(new Error(`squatter exited ${c}`)))
      })
      const failed = startUnderUnit()
      expect(await failed.exited).not.toBe(0)
      expect(failed.output).toMatch(/EADDRINUSE|in use/i)
      expect(listener.messages.map(head)).not.toContain('READY=1')
    } finally {
      await tb.stop(squatter)
    }
  }, 60_000)

  it('says READY=1 only once it serves, from its main pid, with only the three capabilities', async () => {
    const mark = listener.messages.length
    node = startUnderUnit()
    const ready = await listener.waitFor((m) => head(m) === 'READY=1', 30_000, mark)
    // At the moment READY arrives, the control port takes connections: the node serves.
    expect(await controlPortAccepts()).toBe(true)
    expect(ready).toBe(mark) // nothing before it
    expect(listener.messages[mark]).toBe('READY=1\nSTATUS=running')
    expect(node.output).toMatch(/node node1 up/)
    expect(node.output).not.toMatch(/EACCES|warn/i)
    expect(listener.senders[mark]).toBe(node.pid)
    // The process really ran with the unit's bounding set, and nothing else effective.
    const status = readFileSync(`/proc/${node.pid}/status`, 'utf8')
    const field = (k: string) => BigInt(`0x${new RegExp(`^${k}:\\s*([0-9a-f]+)`, 'm').exec(status)![1]}`)
    expect(field('CapBnd')).toBe(MASK)
    expect(field('CapEff')).toBe(MASK)
  }, 60_000)

  it('serves a client through the tunnel with those capabilities', async () => {
    const {tb} = fleet
    const alice = await fleet.startClient('alice', 0)
    try {
      const ping = await tb.exec(tb.names.client[0], 'ping', ['-c', '2', '-i', '0.2', '-W', '2', tb.addr.target])
      expect(ping.code, ping.stdout + ping.stderr).toBe(0)
    } finally {
      alice.child.kill('SIGTERM')
      expect(await alice.exited).toBe(0)
    }
  }, 60_000)

  it('SIGHUP: RELOADING=1 with the current CLOCK_MONOTONIC, then READY=1', async () => {
    const mark = listener.messages.length
    const before = process.hrtime.bigint() / 1000n
    node.child.kill('SIGHUP')
    await listener.waitFor((m) => head(m) === 'READY=1', 15_000, mark)
    const after = process.hrtime.bigint() / 1000n
    const said = listener.messages.slice(mark).filter((m) => !m.startsWith('WATCHDOG'))
    expect(said.map(head)).toEqual(['RELOADING=1', 'READY=1'])
    const usec = BigInt(/^MONOTONIC_USEC=(\d+)$/m.exec(said[0])![1])
    expect(usec >= before && usec <= after, `${before} <= ${usec} <= ${after}`).toBe(true)
    expect(listener.senders.slice(mark).every((p) => p === node.pid)).toBe(true)
  }, 30_000)

  it('`agent reload` (ExecReload): RELOADING=1 then READY=1, said before the command returns', async () => {
    const mark = listener.messages.length
    const r = await fleet.cli(fleet.tb.names.nodes[0], ['reload', '--config', fleet.nodeConfig])
    expect(r.code, r.stderr).toBe(0)
    // No waiting: both are there when `agent reload` has exited.
    expect(listener.messages.slice(mark).map(head)).toEqual(['RELOADING=1', 'READY=1'])
    expect(listener.senders.slice(mark).every((p) => p === node.pid)).toBe(true)
  }, 30_000)

  it('SIGTERM: STOPPING=1, the last word, and a clean exit', async () => {
    const mark = listener.messages.length
    node.child.kill('SIGTERM')
    expect(await node.exited).toBe(0)
    await new Promise((r) => setTimeout(r, 200)) // any straggler would arrive by now
    expect(listener.messages.slice(mark)).toEqual(['STOPPING=1\nSTATUS=stopping'])
    expect(await controlPortAccepts()).toBe(false)
  }, 30_000)
})

describe('every transport, node and client alike, under the unit (only its capabilities, no HOME)', () => {
  it.each(['tls', 'gre', 'ipip', 'ipsec-over-gre'])('%s: a client under the unit reaches the target through a node under the unit', async (transport) => {
    const {tb} = fleet
    const n = startUnderUnit(tb.names.nodes[0], ['up', '--config', fleet.nodeConfig, '--transport', transport], false)
    let c: AgentProcess | undefined
    try {
      await n.waitFor(/node node1 up/, 30_000)
      c = startUnderUnit(tb.names.client[0], ['up', '--config', fleet.clientConfig('alice', {transport})], false)
      await c.waitFor(/connected to node/, 30_000)
      expect(n.output).toContain(`transport ${transport}, listening on`)
      expect(c.output).toMatch(new RegExp(`connected to node .* transport ${transport}\\b`))
      const ping = await tb.exec(tb.names.client[0], 'ping', ['-c', '2', '-i', '0.2', '-W', '2', tb.addr.target])
      expect(ping.code, ping.stdout + ping.stderr).toBe(0)
    } finally {
      c?.child.kill('SIGTERM')
      n.child.kill('SIGTERM')
    }
    // Both stop cleanly: everything they set up could be removed with those capabilities.
    expect(await c!.exited, c!.output).toBe(0)
    expect(await n.exited, n.output).toBe(0)
    for (const p of [n, c!]) expect(p.output).not.toMatch(/EACCES|EPERM|Operation not permitted|Permission denied/)
  }, 90_000)
})
