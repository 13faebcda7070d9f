/**
 * The Linux TUN backend (native addon + src/core/tun/linux.ts) against the real kernel.
 *
 * The addon creates its device in the calling process's network namespace, so every device
 * test runs test/fixtures/tun/tun-fixture.mjs under `ip netns exec` in a namespace of our own
 * (tuntest-<pid>), removed in afterAll whatever happens. Needs root and a prior `npm run build`
 * (build/Release/agent_native.node and dist/core/tun/linux.js).
 */
import {execFileSync, spawn} from 'node:child_process'
import {existsSync} from 'node:fs'
import {dirname, join} from 'node:path'
import {fileURLToPath} from 'node:url'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {TUN_HEADROOM, TUN_TAILROOM, openTun, slotSizeFor, validateTunName} from '../../src/core/tun/linux.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const fixture = join(root, 'test/fixtures/tun/tun-fixture.mjs')
const ns = `tuntest-${process.pid}`
const canRun = process.platform === 'linux' && process.getuid?.() === 0
const hasTool = (tool: string) => {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], {stdio: 'ignore'})
    return true
  } catch {
    return false
  }
}

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
 * Runs one fixture scenario inside the namespace; `wrap` goes between `ip netns exec <ns>` and
 * node (setpriv, unshare). Killed (by its pid) if it outlives `timeoutMs`.
 */
function runFixture(scenario: string, opts: {wrap?: string[]; nodeArgs?: string[]; timeoutMs?: number} = {}) {
  const node = [process.execPath, ...(opts.nodeArgs ?? []), fixture, scenario]
  const args = ['netns', 'exec', ns, ...(opts.wrap ?? []), ...node]
  return new Promise<FixtureRun>((resolve, reject) => {
    const child = spawn('ip', args, {stdio: ['ignore', 'pipe', 'pipe']})
    let stdout = ''
    let stderr = ''
    let outputAt = 0
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000)
    child.stdout.on('data', (d: Buffer) => {
      stdout += d
      if (outputAt === 0 && stdout.includes('\n')) outputAt = Date.now()
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
        const detail = `(code ${code}, signal ${signal}):\n${stdout}\n${stderr}`
        reject(new Error(`fixture ${scenario} printed no result ${detail}`))
        return
      }
      resolve({code, signal, stderr, json, exitAfterOutputMs: Date.now() - outputAt})
    })
  })
}

/** A wrapped command as one sh -c string, for scenarios that must change the mount table first. */
const shQuote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`

describe('tun: validation before any syscall', () => {
  it('sizes slots as headroom, then MTU plus tailroom rounded up to 64', () => {
    expect(TUN_HEADROOM).toBe(64)
    expect(TUN_TAILROOM).toBe(64)
    expect(slotSizeFor(1400)).toBe(64 + 1472) // 1400 + 64 = 1464, rounded up
    expect(slotSizeFor(1500)).toBe(64 + 1600)
    expect(slotSizeFor(1536) - 64 - 1536).toBe(64) // never less tailroom than promised
  })

  it('rejects names the kernel would not create exactly', () => {
    expect(() => validateTunName('abcdefghijklmnop')).toThrow(/16 bytes, must be 1 to 15/)
    expect(() => validateTunName('é'.repeat(8))).toThrow(/16 bytes/)
    expect(() => validateTunName('tun%d')).toThrow(/'%'/)
    expect(() => validateTunName('a b')).toThrow(/whitespace/)
    expect(() => validateTunName('..')).toThrow(/invalid TUN device name/)
    expect(() => validateTunName('abcdefghijklmno')).not.toThrow()
  })

  it('fails in TypeScript before touching the addon', () => {
    // Safe in the root namespace: validation throws before anything is opened.
    expect(() => openTun({name: 'abcdefghijklmnop', mtu: 1500})).toThrow(/invalid TUN device name/)
    expect(() => openTun({name: 't0', mtu: 1500, batchSize: 0})).toThrow(/batchSize/)
  })
})

describe.skipIf(!canRun)('tun: real device in a network namespace', () => {
  beforeAll(() => {
    for (const file of ['build/Release/agent_native.node', 'dist/core/tun/linux.js']) {
      if (!existsSync(join(root, file))) throw new Error(`${file} is missing: run "npm run build" first`)
    }
    execFileSync('ip', ['netns', 'add', ns])
  })

  afterAll(() => {
    try {
      execFileSync('ip', ['netns', 'del', ns], {stdio: 'ignore'})
    } catch {
      // never created (beforeAll failed early): nothing to remove
    }
  })

  it('answers ping: echo requests read in batches, replies written with write() then writeBatch()', async () => {
    const {code, json} = await runFixture('echo')
    expect(code).toBe(0)
    expect(json.ping.out).toMatch(/3 packets transmitted, 3 received, 0% packet loss/)
    expect(json.flood.out).toMatch(/200 packets transmitted, 200 received, 0% packet loss/)
    console.log(`tun echo: ${json.replies} replies in ${json.batches} batches, largest ${json.maxBatch}`)
    expect(json.replies).toBeGreaterThanOrEqual(203)
  })

  it('hands queued packets over in full batches, in order, at slot + headroom', async () => {
    const {code, json} = await runFixture('burst')
    expect(code).toBe(0)
    const batches = json.udpPerBatch as [number, number][]
    console.log(`tun burst: batches (count, udp) ${JSON.stringify(batches)}`)
    expect(json.seqs).toEqual(Array.from({length: 100}, (_, i) => i))
    // batchSize 16 and 100 packets queued before start(): the ring fills, and the re-armed poll
    // delivers the rest on the following loop iterations.
    expect(Math.max(...batches.map(([count]) => count))).toBe(16)
    expect(batches.filter(([count]) => count === 16).length).toBeGreaterThanOrEqual(6)
    expect(json.headroomClean).toBe(true)
    expect(json.headroom).toBe(64)
    expect(json.slotSize).toBe(slotSizeFor(1400))
  })

  it('close() is idempotent and removes the interface and the descriptor; GC closes an orphan', async () => {
    const {code, json} = await runFixture('lifecycle', {nodeArgs: ['--expose-gc']})
    expect(code).toBe(0)
    expect(json).toEqual({
      existsOpen: true,
      existsClosed: false,
      fdsBefore: json.fdsBefore,
      fdsAfter: json.fdsBefore,
      writeAfterClose: false,
      startAfterClose: 'TUN device t0 is closed',
      collected: true,
    })
  })

  it('explains bad names, names in use and queue-mode clashes', async () => {
    const {code, json} = await runFixture('errors')
    expect(code).toBe(0)
    expect(json.tooLong.message).toMatch(/invalid TUN device name "abcdefghijklmnop": it is 16 bytes/)
    expect(json.slash.message).toMatch(/invalid TUN device name "a\/b"/)
    expect(json.empty.message).toMatch(/invalid TUN device name/)
    expect(json.pattern.message).toMatch(/'%'/)
    expect(json.badMtu.message).toMatch(/mtu must be an integer/)
    expect(json.busy).toMatchObject({
      code: 'EBUSY',
      message: 'cannot create TUN device t0: the name is in use by another open TUN device',
    })
    expect(json.notTun).toMatchObject({code: 'EINVAL'})
    expect(json.notTun.message).toMatch(
      /^cannot create TUN device lo: the name is invalid, or in use by an interface that is not a TUN device/,
    )
    expect(json.multiQueue).toEqual({ok: true})
    expect(json.mixedQueue).toMatchObject({ok: false, code: 'EINVAL'})
  })

  it.skipIf(!hasTool('setpriv'))('says permission denied without CAP_NET_ADMIN or as an unprivileged user', async () => {
    const expected = 'cannot create TUN device t0: permission denied (run as root or with CAP_NET_ADMIN)'
    // root without CAP_NET_ADMIN: /dev/net/tun opens, TUNSETIFF is refused (EPERM).
    const dropCap = ['setpriv', '--bounding-set', '-net_admin', '--inh-caps', '-net_admin']
    const noCap = await runFixture('open-fails', {wrap: dropCap})
    expect(noCap.json).toMatchObject({ok: false, code: 'EPERM', message: expected})
    // nobody: refused at open (EACCES) when /dev/net/tun is 0600, else at TUNSETIFF (EPERM).
    const asNobody = ['setpriv', '--reuid', '65534', '--regid', '65534', '--clear-groups']
    const nobody = await runFixture('open-fails', {wrap: asNobody})
    expect(nobody.json).toMatchObject({ok: false, message: expected})
  })

  it.skipIf(!hasTool('unshare'))('says to load the tun module when /dev/net/tun is missing', async () => {
    // A private mount namespace hides /dev/net under an empty tmpfs for this process only.
    const cmd = `mount -t tmpfs tmpfs /dev/net && exec ${[process.execPath, fixture, 'open-fails'].map(shQuote).join(' ')}`
    // sh ignores the fixture command runFixture appends (it lands in $0...).
    const wrap = ['unshare', '-m', '--propagation', 'private', 'sh', '-c', cmd, '--']
    const {json} = await runFixture('open-fails', {wrap})
    expect(json).toMatchObject({
      ok: false,
      code: 'ENOENT',
      message: 'cannot create TUN device: /dev/net/tun does not exist (load the tun module)',
    })
  })

  it('process.exit() while a read is pending exits at once', async () => {
    const run = await runFixture('exit-while-reading', {timeoutMs: 10_000})
    expect(run.signal).toBeNull()
    expect(run.code).toBe(0)
    expect(run.exitAfterOutputMs).toBeLessThan(2000)
  })

  it('a closed device no longer keeps the event loop alive', async () => {
    const run = await runFixture('exit-after-close', {timeoutMs: 10_000})
    expect(run.signal).toBeNull()
    expect(run.code).toBe(0)
    expect(run.exitAfterOutputMs).toBeLessThan(2000)
  })

  it('an open device that was never started does not keep the event loop alive', async () => {
    const run = await runFixture('exit-unstarted', {timeoutMs: 10_000})
    expect(run.signal).toBeNull()
    expect(run.code).toBe(0)
    expect(run.exitAfterOutputMs).toBeLessThan(2000)
  })

  it('reports an interface deleted under it once, closes, and lets the process end', async () => {
    const run = await runFixture('removed', {timeoutMs: 10_000})
    expect(run.signal).toBeNull()
    expect(run.code).toBe(0)
    expect(run.json).toEqual({
      code: 'EBADFD',
      message: 'TUN device t0 was removed (read: File descriptor in bad state)',
      writeAfter: false,
    })
  })

  it('refuses to read into a ring whose memory was transferred away', async () => {
    const run = await runFixture('detached', {timeoutMs: 10_000})
    expect(run.code).toBe(0)
    expect(run.json).toEqual({
      code: 'ERR_AGENT_TUN_RING',
      message: 'TUN device t0: the ring buffer was detached or shrunk',
      byteLength: 0,
    })
  })

  it('a worker reading a device can be terminated: the cleanup hook closes it', async () => {
    const run = await runFixture('worker', {timeoutMs: 10_000})
    expect(run.signal).toBeNull()
    expect(run.code).toBe(0)
    expect(run.json).toEqual({existed: true, existsAfter: false})
  })
})
