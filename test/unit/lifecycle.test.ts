/**
 * Running an agent in the foreground (signals, exit codes, cleanup problems) with a fake agent
 * and a fake signal source, and `agent down` against our own child processes. Teardown's system
 * steps are mocked: nothing here touches routes, firewall or sysctls.
 */
import {type ChildProcess, spawn} from 'node:child_process'
import {EventEmitter} from 'node:events'
import {chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {afterAll, afterEach, beforeEach, describe, expect, it, vi} from 'vitest'

const mocks = vi.hoisted(() => ({
  removeRoutes: vi.fn(async (_routes: unknown) => {}),
  removeFirewall: vi.fn(async (_instance: string) => false),
  setSysctl: vi.fn(async (_key: string, _value: string) => '0'),
}))
vi.mock('../../src/core/routes/index.js', () => ({removeRoutes: mocks.removeRoutes}))
vi.mock('../../src/core/firewall/index.js', () => ({removeFirewall: mocks.removeFirewall}))
vi.mock('../../src/core/sys/sysctl.js', () => ({setSysctl: mocks.setSysctl}))

const {STOP_SIGNALS, bringDown, runInForeground} = await import('../../src/core/lifecycle.js')
const {StateFile, currentBootId, processStartTime} = await import('../../src/core/state/state-file.js')
type RunningAgent = import('../../src/core/lifecycle.js').RunningAgent

function logger() {
  const lines: string[] = []
  const at = (level: string) => (msg: string) => lines.push(`${level} ${msg}`)
  const log = {trace: at('trace'), debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), child: () => log, setLevel: () => {}}
  return {log, lines}
}

function deferred<T = void>() {
  let resolve!: (v: T) => void
  let reject!: (e: unknown) => void
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)))
  return {promise, resolve, reject}
}

/** A fake agent whose start and stop finish when the test says so. */
function fakeAgent() {
  const start = deferred()
  const stop = deferred<readonly string[] | void>()
  const ended = deferred<Error>()
  const calls = {start: 0, stop: 0}
  const agent: RunningAgent = {
    start: () => (calls.start++, start.promise),
    stop: () => (calls.stop++, stop.promise),
    ended: ended.promise,
  }
  return {agent, start, stop, ended, calls}
}

const tick = () => new Promise((r) => setTimeout(r, 0))
const listeners = (e: EventEmitter) => STOP_SIGNALS.reduce((n, s) => n + e.listenerCount(s), 0)

describe('runInForeground', () => {
  it('reloads on SIGHUP, keeps running, and logs what the reload did or why it was refused', async () => {
    const {agent, start, stop, calls} = fakeAgent()
    const reloads: string[] = []
    let refuse = false
    agent.reload = async () => {
      reloads.push('reload')
      if (refuse) throw new Error('tunnel.subnet cannot change while the agent runs')
      return {changed: ['clients'], effects: ['cut bob: removed from the roster']}
    }
    const signals = new EventEmitter()
    const {log, lines} = logger()
    const code = runInForeground(agent, log, signals)
    start.resolve()
    await tick()
    signals.emit('SIGHUP', 'SIGHUP')
    await tick()
    refuse = true
    signals.emit('SIGHUP', 'SIGHUP')
    await tick()
    expect(reloads).toHaveLength(2)
    expect(calls.stop).toBe(0)
    expect(lines).toContain('info reloaded: clients changed; cut bob: removed from the roster')
    expect(lines).toContain('error reload refused: tunnel.subnet cannot change while the agent runs')
    signals.emit('SIGTERM', 'SIGTERM')
    stop.resolve([])
    expect(await code).toBe(0)
    expect(signals.listenerCount('SIGHUP')).toBe(0)
  })

  it('stops a starting agent on SIGTERM, exits 0, and removes its handlers', async () => {
    const {agent, start, stop, calls} = fakeAgent()
    const signals = new EventEmitter()
    const {log, lines} = logger()
    const code = runInForeground(agent, log, signals)
    await tick()
    // Installed before start() resolves: a client retrying an unreachable node is still stoppable.
    expect(listeners(signals)).toBe(STOP_SIGNALS.length)
    signals.emit('SIGTERM', 'SIGTERM')
    await tick()
    expect(calls.stop).toBe(1)
    stop.resolve([])
    start.reject(new Error('stopped while connecting'))
    expect(await code).toBe(0)
    expect(listeners(signals)).toBe(0)
    expect(lines).toContain('info stopped; everything it set up is removed')
  })

  it('does not wait for a start() that never settles after the stop', async () => {
    const {agent, stop} = fakeAgent()
    const signals = new EventEmitter()
    const code = runInForeground(agent, logger().log, signals)
    signals.emit('SIGINT', 'SIGINT')
    stop.resolve()
    expect(await code).toBe(0)
  })

  it('ignores repeated signals while a slow stop runs, and stops once', async () => {
    const {agent, start, stop, calls} = fakeAgent()
    const signals = new EventEmitter()
    const {log, lines} = logger()
    const code = runInForeground(agent, log, signals)
    start.resolve()
    await tick()
    signals.emit('SIGINT', 'SIGINT')
    signals.emit('SIGINT', 'SIGINT')
    signals.emit('SIGTERM', 'SIGTERM')
    await tick()
    expect(calls.stop).toBe(1)
    // Still listening: a second Ctrl-C must not fall through to the default (kill).
    expect(listeners(signals)).toBe(STOP_SIGNALS.length)
    expect(lines.filter((l) => l.startsWith('warn'))).toHaveLength(2)
    stop.resolve([])
    expect(await code).toBe(0)
    expect(listeners(signals)).toBe(0)
  })

  it('exits 1, keeping quiet about "everything removed", when the stop left problems', async () => {
    const {agent, start, stop} = fakeAgent()
    const signals = new EventEmitter()
    const {log, lines} = logger()
    const code = runInForeground(agent, log, signals)
    start.resolve()
    await tick()
    signals.emit('SIGTERM', 'SIGTERM')
    stop.resolve(['remove firewall chains: busy'])
    expect(await code).toBe(1)
    expect(lines.join('\n')).not.toMatch(/everything it set up is removed/)
    expect(lines.find((l) => l.startsWith('error'))).toMatch(/remove firewall chains: busy.*agent down/)
  })

  it('exits 1 when stop() itself throws', async () => {
    const {agent, start, stop} = fakeAgent()
    const signals = new EventEmitter()
    const code = runInForeground(agent, logger().log, signals)
    start.resolve()
    await tick()
    signals.emit('SIGTERM', 'SIGTERM')
    stop.reject(new Error('boom'))
    expect(await code).toBe(1)
  })

  it('exits 1 after the agent ended by itself, and cleans up', async () => {
    const {agent, start, stop, ended, calls} = fakeAgent()
    const signals = new EventEmitter()
    const code = runInForeground(agent, logger().log, signals)
    start.resolve()
    await tick()
    ended.resolve(new Error('refused'))
    stop.resolve([])
    expect(await code).toBe(1)
    expect(calls.stop).toBe(1)
  })

  it('rejects with the start error when start fails by itself, and removes its handlers', async () => {
    const {agent, start, calls} = fakeAgent()
    const signals = new EventEmitter()
    const code = runInForeground(agent, logger().log, signals)
    start.reject(new Error('cannot open TUN'))
    await expect(code).rejects.toThrow('cannot open TUN')
    expect(calls.stop).toBe(0)
    expect(listeners(signals)).toBe(0)
  })
})

describe('bringDown', () => {
  const children: ChildProcess[] = []
  let dir: string
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'agent-down-test-'))
    vi.clearAllMocks()
  })
  afterEach(() => rmSync(dir, {recursive: true, force: true}))
  afterAll(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
  })

  async function child(): Promise<ChildProcess & {pid: number}> {
    const c = spawn('/bin/sleep', ['60'], {stdio: 'ignore'})
    children.push(c)
    await new Promise((resolve, reject) => c.once('spawn', resolve).once('error', reject))
    return c as ChildProcess & {pid: number}
  }

  const state = (pid: number, startTime?: number) => ({
    pid,
    startTime,
    bootId: currentBootId(),
    role: 'client' as const,
    name: 'alice',
    transport: 'tls',
    startedAt: new Date(0).toISOString(),
    interface: 'agtest0',
    routes: [{dst: '203.0.113.0/24', dev: 'agtest0'}],
  })

  it('stops the recorded process, then removes what it left, under the lock', async () => {
    const c = await child()
    const exited = new Promise((r) => c.once('exit', (_code, sig) => r(sig)))
    const f = new StateFile(dir, 'alice')
    f.write(state(c.pid, processStartTime(c.pid)))
    const r = await bringDown(dir, 'alice', logger().log, 5_000)
    expect(await exited).toBe('SIGTERM')
    expect(r).toEqual({stoppedPid: c.pid, cleanedStale: true})
    expect(mocks.removeRoutes).toHaveBeenCalledTimes(1)
    expect([f.path, f.lockPath].map(existsSync)).toEqual([false, false])
  })

  it('never signals a process that only reuses the recorded pid', async () => {
    const c = await child()
    const f = new StateFile(dir, 'alice')
    f.write(state(c.pid, processStartTime(c.pid)! - 1))
    const r = await bringDown(dir, 'alice', logger().log, 1_000)
    expect(r).toEqual({stoppedPid: null, cleanedStale: true})
    expect(c.exitCode).toBeNull()
    expect(c.signalCode).toBeNull()
    c.kill()
  })

  it('keeps the state file when the cleanup is incomplete', async () => {
    const f = new StateFile(dir, 'alice')
    f.write(state(2 ** 22 + 1, 1))
    mocks.removeRoutes.mockRejectedValueOnce(new Error('RTNETLINK busy'))
    await expect(bringDown(dir, 'alice', logger().log)).rejects.toThrow(/cleanup of "alice" incomplete: remove routes: RTNETLINK busy/)
    expect(f.read()).not.toBeNull()
    expect(existsSync(f.lockPath)).toBe(false)
  })

  it('trusts no record in a run directory others can write, or behind a symlink', async () => {
    const c = await child()
    const real = join(dir, 'real')
    mkdirSync(real, {mode: 0o700})
    const f = new StateFile(real, 'alice')
    f.write(state(c.pid, processStartTime(c.pid)))
    const link = join(dir, 'run')
    symlinkSync(real, link)
    await expect(bringDown(link, 'alice', logger().log, 1_000)).rejects.toThrow(`run directory ${link} is a symbolic link`)
    chmodSync(real, 0o777)
    await expect(bringDown(real, 'alice', logger().log, 1_000)).rejects.toThrow(`run directory ${real} is writable by group and others (mode 0777)`)
    // Neither the recorded pid was signalled nor anything it records removed.
    expect(c.signalCode).toBeNull()
    expect(mocks.removeRoutes).not.toHaveBeenCalled()
    expect(existsSync(f.path)).toBe(true)
    c.kill()
  })

  it('does not clean up under an `up` of the same name that holds the lock', async () => {
    const c = await child()
    const f = new StateFile(dir, 'alice')
    f.write(state(2 ** 22 + 1, 1))
    writeFileSync(f.lockPath, JSON.stringify({pid: c.pid, startTime: processStartTime(c.pid), bootId: currentBootId()}))
    await expect(bringDown(dir, 'alice', logger().log)).rejects.toThrow(/agent "alice" is already running \(pid \d+\)/)
    expect(mocks.removeRoutes).not.toHaveBeenCalled()
    c.kill()
  })
})
