/**
 * net.ipv4.ip_forward is one switch per network namespace, and every node running in the
 * namespace needs it on. Two nodes there (two configs, two names) must not turn it off under each
 * other: the value from before the first node started is put back only when the last one stops.
 *
 * Each node that turns forwarding on leaves a marker in a registry shared by every run directory
 * (default /run/agent-ip-forward, $AGENT_IP_FORWARD_DIR): `<netns inode>.<pid>.<start time>.json`,
 * saying its process, its namespace and the value from before. A node coming up in a namespace
 * where other markers are takes their "before" rather than the current value (which is theirs);
 * a node going down puts the value back only when no other marker of the namespace belongs to a
 * live process. A marker of a process that died (kill -9) does not count as live, but still
 * passes its "before" on, since forwarding is on because of it; it goes when that run's state is
 * cleaned (`agent down`, the next `up`). One lock per namespace makes each read-decide-write
 * step atomic. The registry is checked like a run directory (run-dir.ts): its markers decide
 * what root writes to /proc/sys.
 */
import {readdirSync, readFileSync, readlinkSync, renameSync, rmSync, statSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import type {Logger} from '../log.js'
import {getSysctl, setSysctl} from '../sys/sysctl.js'
import {StateFile, currentBootId, isAgentAlive, processStartTime} from './state-file.js'

export const DEFAULT_IP_FORWARD_DIR = '/run/agent-ip-forward'
const KEY = 'net.ipv4.ip_forward'
/** How long a node waits for another one's step on the same namespace (a few ms each). */
const LOCK_WAIT_MS = 5_000

export interface IpForwardOptions {
  /** The registry; default $AGENT_IP_FORWARD_DIR, else /run/agent-ip-forward. */
  dir?: string
  /** Where /proc/sys is (tests). */
  sysctlRoot?: string
  /** This process's network namespace, `net:[inode]` (tests); default from /proc/self/ns/net. */
  netns?: string
}

/** One node's claim on forwarding in a namespace. */
export interface ForwardMarker {
  pid: number
  startTime?: number
  bootId?: string
  name: string
  netns: string
  /** ip_forward before the first node of the namespace set it. */
  before: string
}

/** The network namespace of this process, as `net:[inode]`, or undefined without /proc. */
export function currentNetns(): string | undefined {
  try {
    return readlinkSync('/proc/self/ns/net')
  } catch {
    return undefined
  }
}

/**
 * Turns forwarding on for node `name`. `record(before, netns)` is called before the switch is
 * touched, so the caller's state file says what to put back should it die right after.
 */
export async function holdIpForward(name: string, record: (before: string, netns: string | undefined) => void, opts: IpForwardOptions = {}): Promise<void> {
  const netns = opts.netns ?? currentNetns()
  const sys = {root: opts.sysctlRoot}
  if (netns === undefined) {
    // No way to tell namespaces apart: on as before, back on down.
    record(await getSysctl(KEY, sys), undefined)
    await setSysctl(KEY, '1', sys)
    return
  }
  const registry = new Registry(registryDir(opts), netns)
  await registry.locked(async () => {
    const markers = registry.markers()
    // Forwarding is on because of the others: what was there before them is what to put back.
    const inherited = (markers.find(alive) ?? markers[0])?.before
    const before = inherited ?? (await getSysctl(KEY, sys))
    registry.write({pid: process.pid, startTime: processStartTime(process.pid), bootId: currentBootId(), name, netns, before})
    record(before, netns)
    await setSysctl(KEY, '1', sys)
  })
}

/**
 * A node's forwarding is no longer needed (its stop, or the cleanup after it died): put back
 * what was there before the first node, unless another live node of the namespace still needs
 * it. Throws if the record is of another namespace than this process's: writing here would
 * change the wrong namespace's switch.
 */
export async function releaseIpForward(
  state: {pid: number; startTime?: number; name: string; ipForwardBefore?: string; netns?: string},
  log: Logger,
  opts: IpForwardOptions = {},
): Promise<void> {
  const before = state.ipForwardBefore
  if (before === undefined) return
  const sys = {root: opts.sysctlRoot}
  const here = opts.netns ?? currentNetns()
  if (state.netns !== undefined && here !== undefined && state.netns !== here) {
    throw new Error(`"${state.name}" turned it on in network namespace ${state.netns}, and this is ${here}: run \`agent down\` in that namespace`)
  }
  const netns = state.netns ?? here
  if (netns === undefined) {
    if (before !== '1') await setSysctl(KEY, before, sys)
    return
  }
  const registry = new Registry(registryDir(opts), netns)
  await registry.locked(async () => {
    const markers = registry.markers()
    const others = markers.filter((m) => !sameProcess(m, state) && alive(m))
    if (others.length > 0) {
      log.info(`leaving ${KEY} on: ${others.map((m) => `node "${m.name}" (pid ${m.pid})`).join(', ')} in this network namespace still forward(s)`)
    } else if (before !== '1') {
      await setSysctl(KEY, before, sys)
    }
    for (const m of markers) if (sameProcess(m, state)) registry.remove(m)
  })
}

function registryDir(opts: IpForwardOptions): string {
  return opts.dir ?? process.env.AGENT_IP_FORWARD_DIR ?? DEFAULT_IP_FORWARD_DIR
}

function alive(m: ForwardMarker): boolean {
  return isAgentAlive(m.pid, m.startTime, m.bootId)
}

/** The marker is that run's (a record written by its own process may lack the start time). */
function sameProcess(m: ForwardMarker, s: {pid: number; startTime?: number}): boolean {
  return m.pid === s.pid && (s.startTime === undefined || m.startTime === undefined || m.startTime === s.startTime)
}

/** The markers of one namespace, under its lock. */
class Registry {
  private readonly prefix: string

  constructor(
    private readonly dir: string,
    private readonly netns: string,
  ) {
    this.prefix = netnsKey(netns)
  }

  async locked<T>(fn: () => Promise<T>): Promise<T> {
    // The lock of a StateFile named after the namespace: the same stale-lock breaking, and the
    // registry is created and checked like a run directory.
    const lock = new StateFile(this.dir, `${this.prefix}.forward`)
    try {
      lock.acquire(LOCK_WAIT_MS)
    } catch (e) {
      const holder = lock.lockHolder()
      throw new Error(`cannot take ${lock.lockPath}${holder === null ? '' : ` (pid ${holder.pid} holds it)`}: ${(e as Error).message}`)
    }
    try {
      return await fn()
    } finally {
      lock.release()
    }
  }

  /** This namespace's markers. Markers of a past boot, or of a namespace that is gone, are deleted. */
  markers(): ForwardMarker[] {
    const mine: ForwardMarker[] = []
    const boot = currentBootId()
    let existing: Set<string> | undefined
    for (const file of readdirSync(this.dir)) {
      if (!/^\d+\.\d+\.\d*\.json$/.test(file)) continue
      const m = readMarker(join(this.dir, file))
      if (m === null) continue
      const pastBoot = m.bootId !== undefined && boot !== undefined && m.bootId !== boot
      if (!pastBoot && m.netns === this.netns) {
        mine.push(m)
        continue
      }
      if (!pastBoot && m.netns !== this.netns) {
        if (alive(m)) continue
        existing ??= liveNamespaces()
        if (existing.has(m.netns)) continue
      }
      rmSync(join(this.dir, file), {force: true})
    }
    return mine
  }

  write(m: ForwardMarker): void {
    const path = join(this.dir, fileName(m))
    const tmp = `${path}.${process.pid}.tmp`
    writeFileSync(tmp, JSON.stringify(m) + '\n', {mode: 0o644})
    renameSync(tmp, path)
  }

  remove(m: ForwardMarker): void {
    rmSync(join(this.dir, fileName(m)), {force: true})
  }
}

/** `net:[4026531840]` -> `4026531840` */
function netnsKey(netns: string): string {
  const m = /^net:\[(\d+)\]$/.exec(netns)
  if (m === null) throw new Error(`unexpected network namespace id ${JSON.stringify(netns)}`)
  return m[1]!
}

function fileName(m: ForwardMarker): string {
  return `${netnsKey(m.netns)}.${m.pid}.${m.startTime ?? ''}.json`
}

function readMarker(path: string): ForwardMarker | null {
  try {
    const v = JSON.parse(readFileSync(path, 'utf8')) as ForwardMarker
    const ok = Number.isInteger(v.pid) && v.pid > 0 && typeof v.name === 'string' && typeof v.netns === 'string' && (v.before === '0' || v.before === '1')
    return ok ? v : null
  } catch {
    return null
  }
}

/**
 * The network namespaces that still exist: those of running processes and those kept by a bind
 * mount (`ip netns add`). A namespace held only by an open descriptor is missed, which costs
 * nothing but a dead marker's "before".
 */
function liveNamespaces(): Set<string> {
  const found = new Set<string>()
  for (const pid of safeReaddir('/proc')) {
    if (!/^\d+$/.test(pid)) continue
    try {
      found.add(readlinkSync(`/proc/${pid}/ns/net`))
    } catch {
      // gone meanwhile, or not ours to see
    }
  }
  for (const name of safeReaddir('/run/netns')) {
    try {
      found.add(`net:[${statSync(join('/run/netns', name)).ino}]`)
    } catch {
      // not a namespace
    }
  }
  return found
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir)
  } catch {
    return []
  }
}
