/**
 * The carrier sockets (native addon src/core/carrier/native/net.c + src/core/carrier/datagram.ts)
 * against the real kernel.
 *
 * Every socket test runs test/fixtures/datagram/datagram-fixture.mjs under `ip netns exec` in
 * namespaces of our own, removed in afterAll whatever happens: dgtest-<pid> (loopback only) for
 * UDP, and dgtest-<pid>-a / -b joined by a veth (MTU 1400) for raw IP, DF and a full send
 * buffer. Nothing touches the root namespace. Needs root and a prior build
 * (build/Release/agent_native.node and dist/core/carrier/datagram.js).
 */
import {type ChildProcess, execFileSync, spawn} from 'node:child_process'
import {existsSync} from 'node:fs'
import {dirname, join} from 'node:path'
import {fileURLToPath} from 'node:url'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {datagramSlotSize, openRawIp, openUdp} from '../../src/core/carrier/datagram.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const fixture = join(root, 'test/fixtures/datagram/datagram-fixture.mjs')
const ns = `dgtest-${process.pid}`
const nsA = `${ns}-a`
const nsB = `${ns}-b`
const vethA = `dga${process.pid}`.slice(0, 15)
const vethB = `dgb${process.pid}`.slice(0, 15)
const LOOPBACK = 0x7f000001
const A_ADDR = 0x0a4d0001 // 10.77.0.1
const canRun = process.platform === 'linux' && process.getuid?.() === 0
const hasTool = (tool: string) => {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], {stdio: 'ignore'})
    return true
  } catch {
    return false
  }
}
const ip = (...args: string[]) => execFileSync('ip', args, {stdio: ['ignore', 'ignore', 'pipe']})

interface FixtureRun {
  code: number | null
  signal: NodeJS.Signals | null
  stderr: string
  /** The scenario's JSON line. */
  json: Record<string, any>
  /** Milliseconds from the JSON line to the process exiting. */
  exitAfterOutputMs: number
}

/**
 * Runs one fixture scenario inside namespace `inNs`; `wrap` goes between `ip netns exec <ns>`
 * and node (setpriv, taskset). `onLine` sees stdout lines as they come. Killed (by its pid) if
 * it outlives `timeoutMs`.
 */
function runFixture(
  scenario: string,
  opts: {ns?: string; args?: string[]; wrap?: string[]; nodeArgs?: string[]; timeoutMs?: number; onLine?: (l: string) => void} = {},
) {
  const node = [process.execPath, ...(opts.nodeArgs ?? []), fixture, scenario, ...(opts.args ?? [])]
  const args = ['netns', 'exec', opts.ns ?? ns, ...(opts.wrap ?? []), ...node]
  return new Promise<FixtureRun>((resolve, reject) => {
    const child = spawn('ip', args, {stdio: ['ignore', 'pipe', 'pipe']})
    let stdout = ''
    let stderr = ''
    let outputAt = 0
    let seen = 0
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000)
    child.stdout.on('data', (d: Buffer) => {
      stdout += d
      const lines = stdout.split('\n')
      for (; seen < lines.length - 1; seen++) opts.onLine?.(lines[seen])
      if (outputAt === 0 && /^\{/m.test(stdout)) outputAt = Date.now()
    })
    child.stderr.on('data', (d: Buffer) => (stderr += d))
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      const line = stdout.trim().split('\n').pop() ?? ''
      let json: Record<string, any> = {}
      try {
        json = JSON.parse(line) as Record<string, any>
      } catch {
        reject(new Error(`fixture ${scenario} printed no result (code ${code}, signal ${signal}):\n${stdout}\n${stderr}`))
        return
      }
      resolve({code, signal, stderr, json, exitAfterOutputMs: Date.now() - outputAt})
    })
  })
}

const removeNs = (name: string) => {
  try {
    execFileSync('ip', ['netns', 'del', name], {stdio: 'ignore'})
  } catch {
    // never created (beforeAll failed early): nothing to remove
  }
}

describe('datagram sockets: validation before any syscall', () => {
  it('sizes slots as headroom plus maxPayload rounded up to 64', () => {
    expect(datagramSlotSize(0, 1400)).toBe(1408)
    expect(datagramSlotSize(64, 1400)).toBe(64 + 1408)
    expect(datagramSlotSize(0, 1)).toBe(64)
  })

  it('fails in TypeScript before touching the addon', () => {
    // Safe in the root namespace: validation throws before a socket is opened.
    expect(() => openUdp({maxPayload: 0})).toThrow(/maxPayload must be an integer from 1 to 65507, got 0/)
    expect(() => openUdp({maxPayload: 1400, port: 65536})).toThrow(/port must be an integer from 0 to 65535/)
    expect(() => openUdp({maxPayload: 1400, address: '010.0.0.1'})).toThrow(/must be an IPv4 address/)
    expect(() => openUdp({maxPayload: 1400, batchSize: 1025})).toThrow(/batchSize must be an integer from 1 to 1024/)
    expect(() => openUdp({maxPayload: 1400, headroom: 1.5})).toThrow(/headroom/)
    expect(() => openRawIp({protocol: 0, maxPayload: 1400})).toThrow(/protocol must be an integer from 1 to 254/)
    expect(() => openRawIp({protocol: 47, maxPayload: 65516})).toThrow(/maxPayload must be an integer from 1 to 65515/)
  })
})

describe.skipIf(!canRun)('datagram sockets: UDP on loopback in a namespace', () => {
  beforeAll(() => {
    for (const file of ['build/Release/agent_native.node', 'dist/core/carrier/datagram.js']) {
      if (!existsSync(join(root, file))) throw new Error(`${file} is missing: build first (node-gyp rebuild, tsc -b)`)
    }
    ip('netns', 'add', ns)
    ip('-n', ns, 'link', 'set', 'lo', 'up')
  })

  afterAll(() => removeNs(ns))

  it('a sendBatch burst arrives in full batches, in order, with the right source, headroom untouched, and echoes back', async () => {
    const {code, json} = await runFixture('echo')
    expect(code).toBe(0)
    console.log(`udp echo: receiver batches ${JSON.stringify(json.bBatches)}, sender ${JSON.stringify(json.aBatches)}`)
    expect(json.sent).toBe(200)
    expect(json.echoed).toBe(200)
    // 200 queued before start() into a ring of 64: full rings, then the rest.
    expect(json.bBatches.slice(0, 3)).toEqual([64, 64, 64])
    expect(json.bBatches.reduce((a: number, b: number) => a + b, 0)).toBe(200)
    expect(Math.max(...json.aBatches)).toBeGreaterThan(1)
    expect(json.bSeqsInOrder).toBe(true)
    expect(json.aSeqsInOrder).toBe(true)
    expect(json.sources).toEqual([json.expectedSource])
    expect(json.expectedSource).toMatch(/^7f000001:\d+$/)
    expect(json.headroomClean).toBe(true)
    expect(json.slotSize).toBe(datagramSlotSize(64, 1400))
    expect(json.localAddress).toBe('127.0.0.1')
    expect(json.sendErrors).toEqual({})
    expect(json.recvDrops).toEqual({truncated: 0, fragments: 0, malformed: 0, kernel: 0})
  })

  it('drops and counts datagrams larger than maxPayload, even when they would fit the slot', async () => {
    const {code, json} = await runFixture('truncation')
    expect(code).toBe(0)
    expect(json.slotSize).toBe(128)
    // Sent: 100, 101, 120, 1400, 1, 0, 100 bytes (first byte = index); kept ones move down the ring.
    expect(json.got).toEqual([
      {len: 100, first: 0},
      {len: 1, first: 4},
      {len: 0, first: null},
      {len: 100, first: 6},
    ])
    expect(json.recvDrops).toMatchObject({truncated: 3})
  })

  it('ICMP port unreachable is counted, never thrown, drops no datagram and does not stop receiving', async () => {
    const {code, json} = await runFixture('refused')
    expect(code).toBe(0)
    // Each send after the first meets the previous one's pending ECONNREFUSED; the retry sends it.
    expect(json.idleSends).toEqual([true, true, true])
    expect(json.sends).toEqual([true, true, true])
    expect(json.batchSent).toBe(4)
    expect(json.idleSendErrors).toEqual({})
    expect(json.sendErrors).toEqual({})
    expect(json.icmpErrors.ECONNREFUSED).toBeGreaterThanOrEqual(1)
    // libuv stopped the poll on POLLERR; the addon cleared the error and polls again.
    expect(json.receivedAfter).toBe(5)
  })

  it('sets DF: a datagram over the route MTU fails with EMSGSIZE (counted) instead of being fragmented', async () => {
    ip('-n', ns, 'link', 'set', 'lo', 'mtu', '1500')
    try {
      const {code, json} = await runFixture('too-big')
      expect(code).toBe(0)
      expect(json).toEqual({fits: true, over: false, batch: 2, sendErrors: {EMSGSIZE: 2}})
    } finally {
      ip('-n', ns, 'link', 'set', 'lo', 'mtu', '65536')
    }
  })

  it('explains ports in use, foreign addresses and bad arguments; reports buffer sizes', async () => {
    const {code, json} = await runFixture('errors')
    expect(code).toBe(0)
    const port = json.heldPort
    expect(json.inUse).toEqual({ok: false, code: 'EADDRINUSE', message: `UDP port ${port} on 0.0.0.0 is already in use`})
    expect(json.inUseLocal).toEqual({ok: false, code: 'EADDRINUSE', message: `UDP port ${port} on 127.0.0.1 is already in use`})
    expect(json.notLocal).toEqual({
      ok: false,
      code: 'EADDRNOTAVAIL',
      message: 'cannot bind a UDP socket to 192.0.2.77: no local interface has that address',
    })
    expect(json.rawNotLocal).toEqual({
      ok: false,
      code: 'EADDRNOTAVAIL',
      message: 'cannot bind raw IP socket for protocol 47 to 192.0.2.77: no local interface has that address',
    })
    expect(json.badAddress.code).toBe('ERR_INVALID_ARG_VALUE')
    expect(json.badPayload.code).toBe('ERR_OUT_OF_RANGE')
    expect(json.badBatch.code).toBe('ERR_OUT_OF_RANGE')
    expect(json.badProtocol.message).toMatch(/protocol must be an integer from 1 to 254, got 255/)
    expect(json.badPort).toMatchObject({ok: false, code: 'ERR_OUT_OF_RANGE'})
    expect(json.badRange).toMatchObject({ok: false, code: 'ERR_OUT_OF_RANGE'})
    // Port 0 is the kernel's EINVAL: a counted drop, not an exception.
    expect(json.port0).toBe(false)
    expect(json.port0Errors).toEqual({EINVAL: 1})
    // The default 7 MiB, forced past rmem_max as root and doubled by the kernel.
    expect(json.buffers).toEqual({recv: 2 * (7 << 20), send: 2 * (7 << 20)})
    expect(json.smallBuffers.recv).toBe(2 * 65536)
    expect(json.smallBuffers.send).toBeGreaterThan(0)
  })

  it.skipIf(!hasTool('setpriv'))('says a raw socket needs root or CAP_NET_RAW', async () => {
    const dropCap = ['setpriv', '--bounding-set', '-net_raw', '--inh-caps', '-net_raw']
    const {json} = await runFixture('raw-fails', {wrap: dropCap})
    expect(json).toEqual({ok: false, code: 'EPERM', message: 'raw IP socket for protocol 47 needs root or CAP_NET_RAW'})
  })

  it('close() is idempotent and releases the descriptor; counters stay readable; GC closes an orphan', async () => {
    const {code, json} = await runFixture('lifecycle', {nodeArgs: ['--expose-gc']})
    expect(code).toBe(0)
    expect(json).toMatchObject({
      fdsOpen: json.fdsBefore + 1,
      fdsAfter: json.fdsBefore,
      sendAfterClose: false,
      batchAfterClose: 0,
      countersAfterClose: {sendErrors: {}, recvDrops: {truncated: 0, fragments: 0, malformed: 0, kernel: 0}},
      collected: true,
    })
    expect(json.startAfterClose).toMatch(/^UDP socket 0\.0\.0\.0:\d+ is closed$/)
  })

  it('close() from inside the batch handler stops delivery at once, with datagrams still queued', async () => {
    const run = await runFixture('close-in-batch', {timeoutMs: 10_000})
    expect(run.code).toBe(0)
    expect(run.json.batches).toEqual([16])
    expect(run.exitAfterOutputMs).toBeLessThan(2000)
  })

  it('process.exit() while receiving exits at once', async () => {
    const run = await runFixture('exit-while-reading', {timeoutMs: 10_000})
    expect(run.signal).toBeNull()
    expect(run.code).toBe(0)
    expect(run.exitAfterOutputMs).toBeLessThan(2000)
  })

  it('closed sockets no longer keep the event loop alive', async () => {
    const run = await runFixture('exit-after-close', {timeoutMs: 10_000})
    expect(run.signal).toBeNull()
    expect(run.code).toBe(0)
    expect(run.exitAfterOutputMs).toBeLessThan(2000)
  })

  it('open sockets that were never started do not keep the event loop alive', async () => {
    const run = await runFixture('exit-unstarted', {timeoutMs: 10_000})
    expect(run.signal).toBeNull()
    expect(run.code).toBe(0)
    expect(run.exitAfterOutputMs).toBeLessThan(2000)
  })

  it('refuses to receive into a ring whose memory was transferred away', async () => {
    const run = await runFixture('detached', {timeoutMs: 10_000})
    expect(run.code).toBe(0)
    expect(run.json).toMatchObject({code: 'ERR_AGENT_NET_RING', byteLength: 0})
    expect(run.json.message).toMatch(/^UDP socket 127\.0\.0\.1:\d+: the ring buffer was detached or shrunk$/)
  })

  it('a worker receiving on a socket can be terminated: the cleanup hook closes it', async () => {
    const run = await runFixture('worker', {timeoutMs: 10_000})
    expect(run.signal).toBeNull()
    expect(run.code).toBe(0)
    expect(run.json).toEqual({opened: true, reopen: {ok: true}})
  })

  it('throughput on loopback, one core: sendBatch -> recvmmsg vs node:dgram (a figure, not an assertion)', async () => {
    const wrap = hasTool('taskset') ? ['taskset', '-c', '1'] : []
    const {code, json} = await runFixture('bench', {args: ['2'], wrap, timeoutMs: 30_000})
    expect(code).toBe(0)
    const fmt = (r: {pps: number; drops: number; userNsPer: number; sysNsPer: number}) =>
      `${(r.pps / 1000).toFixed(0)}k datagrams/s, CPU per datagram ${r.userNsPer} ns user + ${r.sysNsPer} ns kernel` +
      ` (${r.drops} dropped)`
    console.log(`udp throughput, ${json.size}-byte payloads, bursts of ${json.burst}, one core:`)
    console.log(`  native sendBatch/recvmmsg: ${fmt(json.native)}`)
    console.log(`  node:dgram:                ${fmt(json.dgram)}`)
    expect(json.native.pps).toBeGreaterThan(0)
  })
})

describe.skipIf(!canRun)('datagram sockets: raw IP and UDP between two namespaces over a veth', () => {
  beforeAll(() => {
    ip('netns', 'add', nsA)
    ip('netns', 'add', nsB)
    ip('link', 'add', vethA, 'netns', nsA, 'type', 'veth', 'peer', 'name', vethB, 'netns', nsB)
    ip('-n', nsA, 'addr', 'add', '10.77.0.1/24', 'dev', vethA)
    ip('-n', nsB, 'addr', 'add', '10.77.0.2/24', 'dev', vethB)
    for (const [n, dev] of [
      [nsA, vethA],
      [nsB, vethB],
    ]) {
      ip('-n', n, 'link', 'set', 'lo', 'up')
      ip('-n', n, 'link', 'set', dev, 'up', 'mtu', '1400')
    }
  })

  afterAll(() => {
    removeNs(nsA) // takes the veth pair with it
    removeNs(nsB)
  })

  /** Starts tcpdump in B; resolves once it listens. Killed by pid if the test forgets it. */
  function startTcpdump(count: number): Promise<{child: ChildProcess; done: Promise<string>}> {
    const args = ['netns', 'exec', nsB, 'tcpdump', '-l', '-n', '-v', '-c', String(count), '-i', vethB, 'ip proto 47 or udp']
    const child = spawn('ip', args, {stdio: ['ignore', 'pipe', 'pipe']})
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000)
    let out = ''
    child.stdout!.on('data', (d: Buffer) => (out += d))
    const done = new Promise<string>((resolve) =>
      child.on('close', () => {
        clearTimeout(timer)
        resolve(out)
      }),
    )
    return new Promise((resolve, reject) => {
      let err = ''
      child.stderr!.on('data', (d: Buffer) => {
        err += d
        if (err.includes('listening on')) resolve({child, done})
      })
      child.on('error', reject)
      child.on('close', (code) => reject(new Error(`tcpdump exited (${code}): ${err}`)))
    })
  }

  it('raw GRE: payloads arrive without the IPv4 header, from the right source; DF set; oversize is EMSGSIZE', async () => {
    // 5 GRE datagrams + 1 raw at the MTU + 1 UDP at the MTU cross the wire; the two oversize ones must not.
    const capture = hasTool('tcpdump') ? await startTcpdump(7) : undefined
    let ready: () => void = () => {}
    const isReady = new Promise<void>((r) => (ready = r))
    const peer = runFixture('peer', {ns: nsB, args: ['6', '1'], onLine: (l) => l === 'ready' && ready()})
    await isReady
    const sender = await runFixture('sender', {ns: nsA})
    const received = await peer
    expect(sender.code).toBe(0)
    expect(received.code).toBe(0)

    expect(sender.json).toMatchObject({rawSent: 5, rawFit: true, rawOver: false, udpSent: true, udpOver: false})
    expect(sender.json.rawErrors).toEqual({EMSGSIZE: 1})
    expect(sender.json.udpErrors).toEqual({EMSGSIZE: 1})

    const raw = received.json.rawGot as {len: number; head: string; seq: number; addr: number; port: number}[]
    // Exactly the GRE ones: the UDP datagram that crossed the same wire (another outer
    // protocol) never reaches a raw socket of protocol 47; the kernel filters by outer protocol.
    expect(raw.map((d) => d.len)).toEqual([204, 404, 604, 804, 1004, 1380])
    // The GRE header we wrote is the first thing in the slot: no IPv4 header in front of it.
    expect(raw.every((d) => d.head.startsWith('00000800'))).toBe(true)
    expect(raw.slice(0, 5).map((d) => d.seq)).toEqual([0, 1, 2, 3, 4])
    expect(raw.every((d) => d.addr === A_ADDR && d.port === 0)).toBe(true)
    expect(received.json.udpGot).toEqual([{len: 1372, addr: A_ADDR, port: sender.json.udpPort}])
    expect(received.json.headroomClean).toBe(true)
    expect(received.json.rawDrops).toEqual({truncated: 0, fragments: 0, malformed: 0, kernel: 0})

    if (capture !== undefined) {
      const out = await capture.done
      const headers = out.split('\n').filter((l) => /\bproto (GRE|UDP)\b/.test(l))
      console.log(`tcpdump on the veth:\n${headers.join('\n')}`)
      expect(headers).toHaveLength(7)
      expect(headers.every((l) => l.includes('flags [DF]') && l.includes('offset 0'))).toBe(true)
      expect(headers.filter((l) => l.includes('proto GRE (47)'))).toHaveLength(6)
    }
  })

  it.skipIf(!hasTool('python3'))('raw GRE: Linux reassembles fragments before raw delivery, so none reaches the ring', async () => {
    let ready: () => void = () => {}
    const isReady = new Promise<void>((r) => (ready = r))
    const peer = runFixture('peer', {ns: nsB, args: ['1', '0'], onLine: (l) => l === 'ready' && ready()})
    await isReady
    const script = join(root, 'test/fixtures/datagram/send-fragments.py')
    execFileSync('ip', ['netns', 'exec', nsA, 'python3', script, '10.77.0.1', '10.77.0.2', '7', '1004'])
    const {code, json} = await peer
    expect(code).toBe(0)
    // The two-fragment packet arrives whole; the lone first fragment never does.
    expect(json.rawGot).toEqual([{len: 1004, head: '0000080073657120', seq: 7, addr: A_ADDR, port: 0}])
    expect(json.rawDrops).toEqual({truncated: 0, fragments: 0, malformed: 0, kernel: 0})
  })

  it('a full send buffer ends the batch: the rest counts as EAGAIN, nothing blocks or throws', async () => {
    // A 1 Mbit/s qdisc holds our packets, and with them the socket's send buffer.
    ip('netns', 'exec', nsA, 'tc', 'qdisc', 'add', 'dev', vethA, 'root', 'tbf', 'rate', '1mbit', 'burst', '1600', 'limit', '1000000')
    try {
      const {code, json} = await runFixture('send-full', {ns: nsA})
      expect(code).toBe(0)
      console.log(`send-full: ${json.sent} of 200 taken, errors ${JSON.stringify(json.sendErrors)}, ${json.ms.toFixed(1)} ms`)
      expect(json.sent).toBeGreaterThan(0)
      expect(json.sent).toBeLessThan(200)
      expect(json.single).toBe(false)
      expect(json.sendErrors).toEqual({EAGAIN: 200 - json.sent + 1})
      expect(json.ms).toBeLessThan(500)
    } finally {
      ip('netns', 'exec', nsA, 'tc', 'qdisc', 'del', 'dev', vethA, 'root')
    }
  })
})
