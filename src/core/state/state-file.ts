/**
 * What a running `agent up` has changed on the system, written before each change is made, so
 * that `agent down`, or the next `up` after a kill -9, can undo exactly that.
 * One JSON file per instance under the run directory (default /run/agent), plus a lock file
 * held from `up`'s stale-state check until its clean stop, so two `up` of one name cannot both
 * proceed. Nothing is written there before the directory is checked (run-dir.ts): a directory
 * others can write would let them tell `down` what to delete.
 */
import {linkSync, readFileSync, renameSync, rmSync, statSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import type {AddedRoute} from '../routes/index.js'
import {prepareRunDir} from './run-dir.js'

export const DEFAULT_RUN_DIR = '/run/agent'

/** The run directory: --run-dir, else $AGENT_RUN_DIR, else /run/agent. */
export function runDir(flag?: string): string {
  return flag ?? process.env.AGENT_RUN_DIR ?? DEFAULT_RUN_DIR
}

/** A route as added, with what it takes to delete exactly it. */
export type RouteRecord = AddedRoute

export interface AgentState {
  pid: number
  /**
   * The process's start time (field 22 of /proc/<pid>/stat, clock ticks since boot), with
   * `bootId`: together with the pid they name one process, so a reused pid is not taken for it.
   * Filled in by StateFile.write() for this process; absent in records of older versions.
   */
  startTime?: number
  /** /proc/sys/kernel/random/boot_id when the record was written. */
  bootId?: string
  role: 'node' | 'client'
  name: string
  transport: string
  startedAt: string
  interface: string
  routes: RouteRecord[]
  /** The node's firewall instance name, once its chains may exist. */
  firewall?: string
  /**
   * net.ipv4.ip_forward before the first node of the network namespace set it, to put back when
   * the last one stops (ip-forward.ts).
   */
  ipForwardBefore?: string
  /** The network namespace the agent ran in (`net:[inode]`), where ip_forward is to be put back. */
  netns?: string
}

/** Who holds an instance's lock: the same identity as a state record's. */
export interface LockHolder {
  pid: number
  startTime?: number
  bootId?: string
}

/** A lock file this old that nobody has finished writing is abandoned (see acquire). */
const UNREADABLE_LOCK_GRACE_MS = 5_000
/** How long acquire() waits for a concurrent breaker of a stale lock before giving up. */
const ACQUIRE_TRIES = 50
const ACQUIRE_PAUSE_MS = 20

export class StateFile {
  readonly path: string
  readonly socketPath: string
  readonly lockPath: string

  constructor(
    readonly dir: string,
    readonly name: string,
  ) {
    this.path = join(dir, `${name}.json`)
    this.socketPath = join(dir, `${name}.sock`)
    this.lockPath = join(dir, `${name}.lock`)
  }

  read(): AgentState | null {
    let text: string
    try {
      text = readFileSync(this.path, 'utf8')
    } catch {
      return null
    }
    try {
      return JSON.parse(text) as AgentState
    } catch {
      throw new Error(`state file ${this.path} is corrupt: remove it after checking no agent "${this.name}" runs`)
    }
  }

  /**
   * Atomic replace, so a crash mid-write never leaves half a record. A record of this process
   * gets its start time and boot id.
   */
  write(state: AgentState): void {
    prepareRunDir(this.dir)
    const record = state.pid === process.pid ? {...state, ...selfIdentity(), pid: state.pid} : state
    const tmp = `${this.path}.${process.pid}.tmp`
    writeFileSync(tmp, JSON.stringify(record, null, 2) + '\n', {mode: 0o644})
    renameSync(tmp, this.path)
  }

  /**
   * The end of a clean stop: removes the record and the status socket and releases the lock,
   * if this process holds the lock. Otherwise it does nothing: a process that never got the lock
   * (stopped before reclaimStale, or refused there) must not remove another run's record.
   */
  remove(): void {
    if (!this.holdsLock()) return
    this.removeRecord()
    this.release()
  }

  /** Removes the record and the status socket only. */
  removeRecord(): void {
    rmSync(this.path, {force: true})
    this.removeSocket()
  }

  removeSocket(): void {
    rmSync(this.socketPath, {force: true})
  }

  /**
   * Takes the instance's lock, or throws if a live process holds it (still, after `waitMs`). A
   * lock whose holder is gone (a kill -9, a reboot, a reused pid) is broken. Re-entrant for this
   * process.
   */
  acquire(waitMs = 0): void {
    prepareRunDir(this.dir)
    const mine = JSON.stringify({...selfIdentity(), pid: process.pid}) + '\n'
    const tmp = `${this.lockPath}.${process.pid}.tmp`
    writeFileSync(tmp, mine, {mode: 0o644})
    try {
      const deadline = Date.now() + waitMs
      for (let attempt = 0; attempt < ACQUIRE_TRIES || Date.now() < deadline; attempt++) {
        try {
          // link() creates the lock with its whole content at once, or fails if it exists.
          linkSync(tmp, this.lockPath)
          return
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e
        }
        const seen = readText(this.lockPath)
        if (seen === null) continue // released meanwhile
        const holder = parseHolder(seen)
        if (holder === null) {
          // Only a lock written by hand (or a full disk) has no readable holder: give it a moment.
          if (ageMs(this.lockPath) < UNREADABLE_LOCK_GRACE_MS) {
            pause(ACQUIRE_PAUSE_MS)
            continue
          }
        } else if (isSelf(holder)) {
          return
        } else if (isAgentAlive(holder.pid, holder.startTime, holder.bootId)) {
          if (Date.now() < deadline) {
            pause(ACQUIRE_PAUSE_MS)
            continue
          }
          throw new Error(`agent "${this.name}" is already running (pid ${holder.pid}); stop it with \`agent down\` first`)
        }
        if (!this.breakStale(seen)) pause(ACQUIRE_PAUSE_MS)
      }
      throw new Error(`could not take the lock ${this.lockPath}: another process keeps changing it`)
    } finally {
      rmSync(tmp, {force: true})
    }
  }

  /** Releases the lock if this process holds it; anyone else's is left alone. */
  release(): void {
    if (this.holdsLock()) rmSync(this.lockPath, {force: true})
  }

  /** True when this process holds the instance's lock (it passed reclaimStale). */
  holdsLock(): boolean {
    const holder = this.lockHolder()
    return holder !== null && isSelf(holder)
  }

  /** Who holds the lock, if anyone (null also for an unreadable lock file). */
  lockHolder(): LockHolder | null {
    const seen = readText(this.lockPath)
    return seen === null ? null : parseHolder(seen)
  }

  /**
   * Deletes the lock if it still says `seen`. Two processes may find the same stale lock: a
   * guard file makes their check-and-delete exclusive, so neither deletes the lock the other
   * has just taken. Returns false if another breaker is at it (the caller retries).
   */
  private breakStale(seen: string): boolean {
    const guard = `${this.lockPath}.break`
    try {
      writeFileSync(guard, `${process.pid}\n`, {flag: 'wx', mode: 0o644})
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e
      // A breaker that died between creating and deleting the guard: it is seconds old.
      if (ageMs(guard) > UNREADABLE_LOCK_GRACE_MS) rmSync(guard, {force: true})
      return false
    }
    try {
      if (readText(this.lockPath) === seen) rmSync(this.lockPath, {force: true})
    } finally {
      rmSync(guard, {force: true})
    }
    return true
  }
}

function readText(path: string): string | null {
  try {
    return readFileSync(path, 'utf8')
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw e
  }
}

function ageMs(path: string): number {
  try {
    return Date.now() - statSync(path).mtimeMs
  } catch {
    return 0
  }
}

function pause(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
}

function parseHolder(text: string): LockHolder | null {
  try {
    const v = JSON.parse(text) as LockHolder
    if (typeof v !== 'object' || v === null || !Number.isInteger(v.pid) || v.pid <= 0) return null
    return {
      pid: v.pid,
      startTime: typeof v.startTime === 'number' ? v.startTime : undefined,
      bootId: typeof v.bootId === 'string' ? v.bootId : undefined,
    }
  } catch {
    return null
  }
}

function isSelf(h: LockHolder): boolean {
  if (h.pid !== process.pid) return false
  const me = selfIdentity()
  return (h.startTime === undefined || h.startTime === me.startTime) && (h.bootId === undefined || h.bootId === me.bootId)
}

let self: {startTime?: number; bootId?: string} | undefined

/** This process's start time and the boot id (undefined where /proc does not say). */
function selfIdentity(): {startTime?: number; bootId?: string} {
  self ??= {startTime: processStartTime(process.pid), bootId: currentBootId()}
  return self
}

/**
 * Field 22 of /proc/<pid>/stat (starttime, clock ticks after boot), or undefined if there is no
 * such process. The second field is the command name in parentheses and may itself contain
 * spaces and parentheses, so fields are counted from the last ')'.
 */
export function processStartTime(pid: number): number | undefined {
  let stat: string
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return undefined
  }
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // fields[0] is field 3 (state), so field 22 is fields[19].
  const n = Number(fields[19])
  return Number.isSafeInteger(n) ? n : undefined
}

/** The state letter of a process (R, S, D, Z...) from /proc/<pid>/stat, or undefined. */
export function processState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) || undefined
  } catch {
    return undefined
  }
}

/** This boot's id, or undefined where the kernel does not offer it. */
export function currentBootId(): string | undefined {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() || undefined
  } catch {
    return undefined
  }
}

/**
 * True when `pid` is a live process that is the agent recorded with it (guards against PID
 * reuse). With the recorded start time (and boot id), the identity is exact; without them (a
 * record of an older version) the process's command line must look like an agent's.
 */
export function isAgentAlive(pid: number, startTime?: number, bootId?: string): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false
  if (bootId !== undefined) {
    const now = currentBootId()
    // Recorded in an earlier boot: whatever runs with that pid now is someone else.
    if (now !== undefined && now !== bootId) return false
  }
  try {
    process.kill(pid, 0)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false
  }
  // A zombie has exited (its cleanup is over) and only waits for its parent to reap it, which
  // a parent blocked in a synchronous call does late: it is not running.
  if (processState(pid) === 'Z') return false
  if (startTime !== undefined) {
    const actual = processStartTime(pid)
    return actual !== undefined && actual === startTime
  }
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8')
    return /agent|run\.js/.test(cmdline)
  } catch {
    return false
  }
}
