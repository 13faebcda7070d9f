// The namespace testbed itself: topology, isolation of the target, cleanup. Needs root.
import {spawn} from 'node:child_process'
import {existsSync} from 'node:fs'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {cleanupStale, createTestbed, probeEcho, startEchoServer, type Testbed} from '../../src/testbed/index.js'
import {run} from '../../src/testbed/run.js'

const isRoot = process.getuid?.() === 0
const PREFIX = 'tbtest'

async function namespaces(): Promise<string[]> {
  const r = await run('ip', ['netns', 'list'])
  return r.stdout.split('\n').map((l) => l.split(' ')[0]).filter(Boolean)
}

async function ping(tb: Testbed, ns: string, dst: string, waitSeconds = 2): Promise<boolean> {
  const r = await tb.exec(ns, 'ping', ['-n', '-c', '1', '-W', String(waitSeconds), dst])
  return r.code === 0
}

/** The pid of a process that has just exited (so nothing owns it for now). */
async function deadPid(): Promise<number> {
  const c = spawn('true')
  await new Promise((r) => c.once('exit', r))
  return c.pid!
}

describe.skipIf(!isRoot)('testbed', () => {
  let tb: Testbed

  beforeAll(async () => {
    tb = await createTestbed({prefix: PREFIX, publicClients: true})
  })
  afterAll(async () => {
    await tb?.destroy()
  })

  it('names namespaces <prefix><pid>-<seq>-<role> and exposes the address plan', async () => {
    expect(tb.names.client).toHaveLength(2)
    for (const ns of tb.names.all) expect(ns.startsWith(`${PREFIX}${process.pid}-`)).toBe(true)
    expect(await namespaces()).toEqual(expect.arrayContaining(tb.names.all))
    expect(tb.addr).toMatchObject({nodeWan: '198.51.100.1', natWan: '198.51.100.2', target: '203.0.113.10', target2: '203.0.113.20'})
    expect(tb.addr.client).toEqual(['192.168.77.11', '192.168.77.12'])
    expect(tb.addr.publicClient).toEqual(['198.51.100.50'])
    const addrs = await tb.exec(tb.names.target, 'ip', ['-4', '-br', 'addr', 'show', 'dev', tb.ifaces.target], {check: true})
    expect(addrs.stdout).toContain('203.0.113.10/24')
    expect(addrs.stdout).toContain('203.0.113.20/24')
    const routes = await tb.exec(tb.names.target, 'ip', ['-4', 'route'], {check: true})
    expect(routes.stdout).not.toMatch(/default|198\.51\.100/)
    const fwd = await tb.exec(tb.names.node, 'sysctl', ['-n', 'net.ipv4.ip_forward'], {check: true})
    expect(fwd.stdout.trim()).toBe('0')
  })

  it('both NATed clients and the public client ping the node wan', async () => {
    for (const ns of [...tb.names.client, ...tb.names.publicClient]) expect(await ping(tb, ns, tb.addr.nodeWan), ns).toBe(true)
  })

  it('the node sees NATed clients as the NAT wan address and the public client as itself', async () => {
    const echo = await startEchoServer(tb, tb.names.node, {port: 7001})
    try {
      for (const proto of ['udp', 'tcp'] as const) {
        for (const ns of tb.names.client) {
          const r = await probeEcho(tb, ns, tb.addr.nodeWan, 7001, {proto})
          expect(r.peer?.address, `${ns} ${proto}`).toBe(tb.addr.natWan)
        }
        const p = await probeEcho(tb, tb.names.publicClient[0], tb.addr.nodeWan, 7001, {proto})
        expect(p.peer?.address).toBe(tb.addr.publicClient[0])
      }
    } finally {
      await echo.stop()
    }
  })

  it('the target is reachable only once the node forwards and masquerades, and then sees 203.0.113.1', async () => {
    const echo = await startEchoServer(tb, tb.names.target, {port: 7002})
    const client1 = tb.names.client[0]
    try {
      // No forwarding at the node: nothing gets through.
      expect(await ping(tb, client1, tb.addr.target, 1)).toBe(false)
      expect((await probeEcho(tb, client1, tb.addr.target, 7002, {timeoutMs: 1000})).ok).toBe(false)

      // Forwarding without SNAT: the request arrives but the target has no route back.
      await tb.sysctl(tb.names.node, {'net.ipv4.ip_forward': 1})
      expect((await probeEcho(tb, client1, tb.addr.target, 7002, {timeoutMs: 1000})).ok).toBe(false)

      // Test-only stand-in for the agent: MASQUERADE out of the egress link.
      const masq = ['-w', '-t', 'nat', '-A', 'POSTROUTING', '-o', tb.ifaces.nodeEgress, '-j', 'MASQUERADE']
      await tb.exec(tb.names.node, 'iptables', masq, {check: true})
      expect(await ping(tb, client1, tb.addr.target)).toBe(true)
      for (const proto of ['udp', 'tcp'] as const) {
        const r = await probeEcho(tb, client1, tb.addr.target, 7002, {proto})
        expect(r, proto).toMatchObject({ok: true, peer: {address: tb.addr.nodeEgress}})
      }
      const r2 = await probeEcho(tb, tb.names.client[1], tb.addr.target2, 7002, {proto: 'tcp'})
      expect(r2.peer?.address).toBe(tb.addr.nodeEgress)
    } finally {
      await echo.stop()
      await tb.exec(tb.names.node, 'iptables', ['-w', '-t', 'nat', '-F', 'POSTROUTING'])
      await tb.sysctl(tb.names.node, {'net.ipv4.ip_forward': 0})
    }
    expect(await ping(tb, client1, tb.addr.target, 1)).toBe(false)
  })

  it('sets the NAT UDP timeouts and flushes its conntrack table', async () => {
    await tb.setNatUdpTimeout(7, 9)
    const r = await tb.exec(tb.names.nat, 'sysctl', ['-n', 'net.netfilter.nf_conntrack_udp_timeout', 'net.netfilter.nf_conntrack_udp_timeout_stream'], {
      check: true,
    })
    expect(r.stdout.trim().split(/\s+/)).toEqual(['7', '9'])

    const echo = await startEchoServer(tb, tb.names.node, {port: 7003})
    try {
      expect((await probeEcho(tb, tb.names.client[0], tb.addr.nodeWan, 7003)).ok).toBe(true)
      const before = await tb.exec(tb.names.nat, 'conntrack', ['-L', '-p', 'udp', '--dport', '7003'])
      expect(before.stdout).toContain('dport=7003')
      await tb.flushNatConntrack()
      const after = await tb.exec(tb.names.nat, 'conntrack', ['-L', '-p', 'udp', '--dport', '7003'])
      expect(after.stdout).not.toContain('dport=7003')
    } finally {
      await echo.stop()
    }
  })

  it('runs two testbeds at once without collisions, and destroy() removes everything', async () => {
    const other = await createTestbed({prefix: PREFIX, clients: 1})
    let destroyed = false
    try {
      expect(other.id).not.toBe(tb.id)
      expect(other.names.all.filter((n) => tb.names.all.includes(n))).toEqual([])
      // Same addresses in both, isolated from each other.
      expect(await ping(other, other.names.client[0], other.addr.nodeWan)).toBe(true)
      expect(await ping(tb, tb.names.client[0], tb.addr.nodeWan)).toBe(true)

      const sleeper = other.spawn(other.names.node, 'sleep', ['300'], {stdio: 'ignore'})
      const pid = sleeper.pid!
      expect(existsSync(`/proc/${pid}`)).toBe(true)
      expect(() => other.exec(tb.names.node, 'true')).toThrow(/not a namespace of testbed/)

      await other.destroy()
      destroyed = true
      await other.destroy() // idempotent
      expect(existsSync(`/proc/${pid}`)).toBe(false)
      expect(existsSync(other.dir)).toBe(false)
      const left = await namespaces()
      expect(left.filter((n) => other.names.all.includes(n))).toEqual([])
      expect(left).toEqual(expect.arrayContaining(tb.names.all))
      expect(await ping(tb, tb.names.client[1], tb.addr.nodeWan)).toBe(true)
    } finally {
      if (!destroyed) await other.destroy()
    }
  })

  it("cleanupStale removes a dead process's namespaces and never a live one's", async () => {
    // A prefix of its own, so a concurrent run of this file cannot clean our fake leftovers first.
    const prefix = `tbst${Array.from({length: 6}, () => String.fromCharCode(97 + Math.floor(Math.random() * 26))).join('')}`
    const dead = `${prefix}${await deadPid()}-1-node`
    const sleeper = spawn('sleep', ['300'], {stdio: 'ignore'})
    const live = `${prefix}${sleeper.pid}-1-node`
    const mine = `${prefix}${process.pid}-99-node`
    const otherPrefix = `${prefix}x${await deadPid()}-1-node`
    const made = [dead, live, mine, otherPrefix]
    try {
      for (const n of made) await run('ip', ['netns', 'add', n], {check: true})
      const res = await cleanupStale(prefix)
      expect(res.namespaces).toEqual([dead])
      const left = await namespaces()
      expect(left).not.toContain(dead)
      expect(left).toEqual(expect.arrayContaining([live, mine, otherPrefix]))
      // And the live testbed of this process, under the same call with its own prefix:
      expect((await cleanupStale(PREFIX)).namespaces).toEqual([])
      expect(await namespaces()).toEqual(expect.arrayContaining(tb.names.all))
      expect(existsSync(tb.dir)).toBe(true)
    } finally {
      for (const n of made) await run('ip', ['netns', 'delete', n])
      sleeper.kill('SIGKILL')
    }
  })
})
