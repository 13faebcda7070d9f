/**
 * State records, process identity, the instance lock and teardown. The system-changing steps of
 * teardown are mocked: nothing here touches routes, firewall or sysctls. Child processes are
 * our own `sleep`s, killed at the end.
 */
import {type ChildProcess, spawn} from 'node:child_process'
import {chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {afterAll, afterEach, beforeEach, describe, expect, it, vi} from 'vitest'

const mocks = vi.hoisted(() => ({
  removeRoutes: vi.fn(async (_routes: unknown) => {}),
  removeFirewall: vi.fn(async (_instance: string) => false),
  setSysctl: vi.fn(async (_key: string, _value: string) => '0'),
  deleteLink: vi.fn(async (_name: string, _kind: string) => true),
}))
vi.mock('../../src/core/routes/index.js', () => ({removeRoutes: mocks.removeRoutes}))
vi.mock('../../src/core/firewall/index.js', () => ({removeFirewall: mocks.removeFirewall}))
vi.mock('../../src/core/sys/sysctl.js', () => ({setSysctl: mocks.setSysctl}))
vi.mock('../../src/core/routes/link.js', () => ({deleteLink: mocks.deleteLink}))

const {StateFile, currentBootId, isAgentAlive, processStartTime} = await import('../../src/core/state/state-file.js')
const {finishTeardown, reclaimStale, teardown} = await import('../../src/core/state/teardown.js')
type AgentState = import('../../src/core/state/state-file.js').AgentState

const quiet = {trace() {}, debug() {}, info() {}, warn() {}, error() {}, child: () => quiet, setLevel() {}}

const children: ChildProcess[] = []
afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
})

let scratch: string
beforeEach(() => {
  scratch = mkdtempSync(join(tmpdir(), 'agent-state-test-'))
  // The registry of nodes holding ip_forward, which teardown consults: ours, not the host's.
  process.env.AGENT_IP_FORWARD_DIR = join(scratch, 'ip-forward')
  vi.clearAllMocks()
})
afterEach(() => rmSync(scratch, {recursive: true, force: true}))

/** A live process of ours, not an agent; `as` names its executable (e.g. "ssh-agent"). */
async function sleeper(as = 'sleep'): Promise<ChildProcess & {pid: number}> {
  let bin = '/bin/sleep'
  if (as !== 'sleep') {
    bin = join(scratch, as)
    copyFileSync('/bin/sleep', bin)
    chmodSync(bin, 0o755)
  }
  const c = spawn(bin, ['60'], {stdio: 'ignore'})
  children.push(c)
  await new Promise((resolve, reject) => c.once('spawn', resolve).once('error', reject))
  return c as ChildProcess & {pid: number}
}

/** A pid that was just in use and no longer is. */
async function deadPid(): Promise<number> {
  const c = spawn('/bin/true', [], {stdio: 'ignore'})
  await new Promise((resolve) => c.once('exit', resolve))
  return c.pid!
}

const record = (over: Partial<AgentState> = {}): AgentState => ({
  pid: process.pid,
  role: 'client',
  name: 'alice',
  transport: 'tls',
  startedAt: new Date(0).toISOString(),
  interface: 'agtest0',
  routes: [],
  ...over,
})

describe('process identity', () => {
  it("reads this process's start time and the boot id", () => {
    const mine = processStartTime(process.pid)
    expect(Number.isSafeInteger(mine)).toBe(true)
    expect(mine).toBeGreaterThan(0)
    expect(currentBootId()).toMatch(/^[0-9a-f-]{36}$/)
    expect(processStartTime(2 ** 22 + 1)).toBeUndefined()
  })

  it('counts fields after the command name, even one with spaces and parentheses', async () => {
    const odd = await sleeper('a) b (c')
    const t = processStartTime(odd.pid)
    expect(readFileSync(`/proc/${odd.pid}/stat`, 'utf8')).toContain('(a) b (c)')
    expect(Number.isSafeInteger(t)).toBe(true)
    // Started after us, and ticks count from boot.
    expect(t!).toBeGreaterThanOrEqual(processStartTime(process.pid)!)
    odd.kill()
  })

  it('knows a process by pid, start time and boot id', () => {
    const t = processStartTime(process.pid)
    expect(isAgentAlive(process.pid, t, currentBootId())).toBe(true)
    expect(isAgentAlive(process.pid, t! + 1, currentBootId())).toBe(false)
    expect(isAgentAlive(process.pid, t, '00000000-0000-0000-0000-000000000000')).toBe(false)
  })

  it('is not fooled by a reused pid running something named like an agent', async () => {
    const other = await sleeper('ssh-agent')
    // What the record of the agent that had this pid before would say: another start time.
    const recorded = processStartTime(other.pid)! - 1
    expect(isAgentAlive(other.pid, recorded, currentBootId())).toBe(false)
    // Records without the identity (older versions) still get the command-line check.
    expect(isAgentAlive(other.pid)).toBe(true)
    expect(isAgentAlive(other.pid, processStartTime(other.pid), currentBootId())).toBe(true)
    other.kill()
  })

  it('says a finished process is not alive', async () => {
    const pid = await deadPid()
    expect(isAgentAlive(pid)).toBe(false)
    expect(isAgentAlive(pid, 1, currentBootId())).toBe(false)
  })
})

describe('state file', () => {
  it("records this process's start time and boot id, not another's", () => {
    const f = new StateFile(scratch, 'alice')
    f.write(record())
    expect(f.read()).toMatchObject({pid: process.pid, startTime: processStartTime(process.pid), bootId: currentBootId()})
    f.write(record({pid: 1}))
    expect(f.read()!.startTime).toBeUndefined()
    expect(f.read()!.bootId).toBeUndefined()
  })

  it("remove() leaves a record alone unless this process holds the lock (it may be another run's)", async () => {
    const f = new StateFile(scratch, 'alice')
    f.write(record({pid: 1}))
    writeFileSync(f.socketPath, '')
    f.remove()
    expect([f.path, f.socketPath].map(existsSync)).toEqual([true, true])
    const other = await sleeper()
    writeFileSync(f.lockPath, JSON.stringify({pid: other.pid, startTime: processStartTime(other.pid), bootId: currentBootId()}))
    f.remove()
    expect([f.path, f.socketPath, f.lockPath].map(existsSync)).toEqual([true, true, true])
    other.kill()
  })

  it('remove() deletes the record, the socket and our lock', () => {
    const f = new StateFile(scratch, 'alice')
    f.acquire()
    f.write(record())
    writeFileSync(f.socketPath, '')
    f.remove()
    expect([f.path, f.socketPath, f.lockPath].map(existsSync)).toEqual([false, false, false])
  })
})

describe('instance lock', () => {
  const lockOf = (pid: number, startTime?: number, bootId = currentBootId()) => JSON.stringify({pid, startTime, bootId})

  it('is taken once, re-entrantly, and released', () => {
    const f = new StateFile(scratch, 'alice')
    f.acquire()
    expect(f.lockHolder()).toEqual({pid: process.pid, startTime: processStartTime(process.pid), bootId: currentBootId()})
    f.acquire()
    f.release()
    expect(existsSync(f.lockPath)).toBe(false)
  })

  it('refuses while another live process holds it', async () => {
    const other = await sleeper()
    const f = new StateFile(scratch, 'alice')
    writeFileSync(f.lockPath, lockOf(other.pid, processStartTime(other.pid)))
    expect(() => f.acquire()).toThrow(new RegExp(`agent "alice" is already running \\(pid ${other.pid}\\)`))
    f.release() // not ours: left alone
    expect(f.lockHolder()?.pid).toBe(other.pid)
    other.kill()
  })

  it('given time, waits for a live holder to go (the registry of ip_forward holders does)', async () => {
    // A holder that ends by itself: our event loop is blocked while acquire waits.
    const brief = spawn('/bin/sleep', ['0.3'], {stdio: 'ignore'})
    children.push(brief)
    await new Promise((resolve, reject) => brief.once('spawn', resolve).once('error', reject))
    const f = new StateFile(scratch, 'alice')
    writeFileSync(f.lockPath, lockOf(brief.pid!, processStartTime(brief.pid!)))
    expect(() => f.acquire()).toThrow(/is already running/)
    f.acquire(10_000)
    expect(f.lockHolder()?.pid).toBe(process.pid)
    f.release()
  })

  it('breaks a lock whose holder is gone, or whose pid now belongs to another process', async () => {
    const f = new StateFile(scratch, 'alice')
    writeFileSync(f.lockPath, lockOf(await deadPid(), 12345))
    f.acquire()
    expect(f.lockHolder()?.pid).toBe(process.pid)
    f.release()
    const other = await sleeper()
    writeFileSync(f.lockPath, lockOf(other.pid, processStartTime(other.pid)! - 1))
    f.acquire()
    expect(f.lockHolder()?.pid).toBe(process.pid)
    f.release()
    writeFileSync(f.lockPath, lockOf(other.pid, processStartTime(other.pid), 'an-earlier-boot'))
    f.acquire()
    expect(f.lockHolder()?.pid).toBe(process.pid)
    other.kill()
  })

  it('never deletes a lock taken after the stale one was read', async () => {
    const f = new StateFile(scratch, 'alice')
    const stale = lockOf(await deadPid(), 1)
    const other = await sleeper()
    // Another process broke the stale lock and took it between our read and our delete.
    writeFileSync(f.lockPath, lockOf(other.pid, processStartTime(other.pid)))
    expect((f as unknown as {breakStale(seen: string): boolean}).breakStale(stale)).toBe(true)
    expect(f.lockHolder()?.pid).toBe(other.pid)
    other.kill()
  })

  it('waits for a concurrent breaker, and clears a guard its breaker left behind', async () => {
    const f = new StateFile(scratch, 'alice')
    writeFileSync(f.lockPath, lockOf(await deadPid(), 1))
    const guard = `${f.lockPath}.break`
    writeFileSync(guard, '1\n')
    expect(() => f.acquire()).toThrow(/another process keeps changing it/)
    const old = new Date(Date.now() - 60_000)
    utimesSync(guard, old, old)
    f.acquire()
    expect(f.lockHolder()?.pid).toBe(process.pid)
    expect(existsSync(guard)).toBe(false)
  })
})

describe('reclaimStale', () => {
  it('takes the lock, so a second `up` of the same name fails before touching anything', async () => {
    const f = new StateFile(scratch, 'alice')
    await reclaimStale(f, quiet)
    expect(f.lockHolder()?.pid).toBe(process.pid)
    // The same from another live process's point of view: its lock stops us.
    f.release()
    const other = await sleeper()
    writeFileSync(f.lockPath, JSON.stringify({pid: other.pid, startTime: processStartTime(other.pid), bootId: currentBootId()}))
    await expect(reclaimStale(f, quiet)).rejects.toThrow(/agent "alice" is already running \(pid \d+\)/)
    expect(mocks.removeRoutes).not.toHaveBeenCalled()
    other.kill()
  })

  it('refuses when the recorded agent lives, and releases the lock', async () => {
    const f = new StateFile(scratch, 'alice')
    const other = await sleeper()
    f.write(record({pid: other.pid, startTime: processStartTime(other.pid), bootId: currentBootId()}))
    await expect(reclaimStale(f, quiet)).rejects.toThrow(new RegExp(`already running \\(pid ${other.pid}\\)`))
    expect(existsSync(f.lockPath)).toBe(false)
    expect(f.read()).not.toBeNull()
    other.kill()
  })

  it("cleans up after a dead run whose pid is reused, keeping the lock", async () => {
    const f = new StateFile(scratch, 'alice')
    const other = await sleeper('agent')
    const routes = [{dst: '203.0.113.0/24', dev: 'agtest0'}]
    f.write(record({pid: other.pid, startTime: processStartTime(other.pid)! - 1, bootId: currentBootId(), routes}))
    await reclaimStale(f, quiet)
    expect(mocks.removeRoutes).toHaveBeenCalledWith(routes)
    expect(f.read()).toBeNull()
    expect(f.lockHolder()?.pid).toBe(process.pid)
    expect(other.exitCode).toBeNull()
    other.kill()
    f.remove()
  })
})

describe('teardown', () => {
  it('never deletes the interface named in the record (it may be another instance’s TUN now)', async () => {
    expect(await teardown(record({firewall: 'node1', ipForwardBefore: '0'}), quiet)).toEqual([])
    expect(mocks.removeFirewall).toHaveBeenCalledWith('node1')
    expect(mocks.setSysctl).toHaveBeenCalledWith('net.ipv4.ip_forward', '0', expect.anything())
    expect(mocks.deleteLink).not.toHaveBeenCalled()
  })

  it('finishTeardown touches nothing for a run stopped before it took the lock', async () => {
    const f = new StateFile(scratch, 'node1')
    const running = record({pid: 1, firewall: 'node1'}) // the record of the instance that runs
    f.write(running)
    expect(await finishTeardown(record({firewall: 'node1'}), f, quiet)).toEqual([])
    expect(mocks.removeFirewall).not.toHaveBeenCalled()
    expect(f.read()).toEqual(running)
  })

  it('finishTeardown removes the state file only when everything was undone', async () => {
    const f = new StateFile(scratch, 'alice')
    f.acquire()
    f.write(record({firewall: 'node1'}))
    writeFileSync(f.socketPath, '')
    mocks.removeFirewall.mockRejectedValueOnce(new Error('iptables-restore: busy'))
    expect(await finishTeardown(f.read()!, f, quiet)).toEqual(['remove firewall chains: iptables-restore: busy'])
    // Kept for `agent down`; the socket and our lock go.
    expect(f.read()).toMatchObject({firewall: 'node1'})
    expect(existsSync(f.socketPath)).toBe(false)
    expect(existsSync(f.lockPath)).toBe(false)

    f.acquire()
    expect(await finishTeardown(f.read()!, f, quiet)).toEqual([])
    expect([f.path, f.lockPath].map(existsSync)).toEqual([false, false])
  })
})

describe('a zombie is not alive', () => {
  it('counts an exited child that its parent has not reaped yet as dead, whatever its start time', async () => {
    const {spawn} = await import('node:child_process')
    const {processStartTime, processState, isAgentAlive} = await import('../../src/core/state/state-file.js')
    // The child exits at once; this test's parent does not reap it until the event loop turns,
    // and the loop is held here by a synchronous busy wait.
    const child = spawn(process.execPath, ['-e', '0'], {stdio: 'ignore'})
    const pid = child.pid!
    const start = processStartTime(pid)
    const deadline = Date.now() + 3000
    while (processState(pid) !== 'Z' && Date.now() < deadline) {
      /* busy: no reaping until this returns */
    }
    expect(processState(pid)).toBe('Z')
    expect(isAgentAlive(pid, start)).toBe(false)
    await new Promise((r) => child.once('exit', r))
  })
})
