/**
 * Applies the payloads from rules.ts with `iptables-restore --noflush -w`.
 *
 * Atomicity: restore commits each table (each COMMIT) on its own, so a payload that fails in
 * its second table has already committed the first. apply() therefore snapshots our chains
 * before, and on failure renders and restores that snapshot, so the caller sees all or
 * nothing. setAdmitted() touches one table and is atomic by itself.
 */
import {CommandError, run, type Runner} from '../sys/run.js'
import {assertInstanceName} from './names.js'
import {
  normalizeAdmitted,
  normalizeSpec,
  ownedInstances,
  parseOwnedState,
  renderAdmitted,
  renderApply,
  renderRemoval,
  renderRestoreOwned,
  type FirewallSpec,
  type NormalizedSpec,
} from './rules.js'

export interface FirewallOptions {
  /** How to run iptables tools; tests pass netnsRunner(ns). */
  runner?: Runner
}

/** iptables-restore refused a payload; `line` is 1-based in `payload`. */
export class FirewallError extends Error {
  constructor(
    message: string,
    readonly payload: string,
    readonly line: number | undefined,
    readonly stderr: string,
    options?: ErrorOptions,
  ) {
    super(message, options)
    this.name = 'FirewallError'
  }
}

const RESTORE = 'iptables-restore'
const RESTORE_ARGS = ['--noflush', '-w'] as const

export async function iptablesSave(runner: Runner = run): Promise<string> {
  return (await runner('iptables-save', [])).stdout
}

/** Feeds a payload to iptables-restore; a rejection names the payload line and the reason. */
export async function restore(payload: string, runner: Runner = run): Promise<void> {
  if (payload === '') return
  try {
    await runner(RESTORE, RESTORE_ARGS, {input: payload})
  } catch (err) {
    if (!(err instanceof CommandError)) throw err
    throw restoreError(payload, err)
  }
}

function restoreError(payload: string, err: CommandError): FirewallError {
  const stderr = err.stderr
  // nft backend, parse errors:   "...: <reason>\nError occurred at line: 8"
  // nft backend, kernel refusal: "line 7: RULE_APPEND failed (Invalid argument): rule in chain X"
  // legacy backend:              "iptables-restore: line 8 failed"
  const m = /Error occurred at line: (\d+)/.exec(stderr) ?? /^line (\d+): /m.exec(stderr) ?? /line (\d+) failed/.exec(stderr)
  const reported = m ? Number(m[1]) : undefined
  const reason =
    stderr
      .split('\n')
      .map((l) => l.replace(/^iptables-restore v[\d.]+ \([^)]*\):\s*/, '').trim())
      .filter((l) => l && !l.startsWith('Error occurred at line') && !l.startsWith('Try `'))
      .join('; ') || `exit code ${err.code}`
  const line = reported !== undefined ? blame(payload.split('\n'), reported, reason) : undefined
  const text = line !== undefined ? payload.split('\n')[line - 1] : undefined
  const where = line !== undefined ? ` line ${line}${text !== undefined ? ` (${text})` : ''}` : ''
  return new FirewallError(`iptables-restore rejected${where}: ${reason}`, payload, line, stderr, {cause: err})
}

/**
 * The nft backend checks jump targets when it commits a table and then reports the COMMIT line
 * ("Chain 'X' does not exist ... line: 16"). Point at the last rule of that table naming X
 * instead, which is what the operator needs to see.
 */
function blame(lines: string[], reported: number, reason: string): number {
  if (lines[reported - 1] !== 'COMMIT') return reported
  const names = [...reason.matchAll(/'([^'\s]+)'/g)].map((x) => x[1])
  for (let i = reported - 2; i >= 0 && !lines[i].startsWith('*'); i--) {
    if (names.some((n) => lines[i].split(' ').includes(n))) return i + 1
  }
  return reported
}

/**
 * The firewall of one node instance. Rules exist between apply() and remove(); setAdmitted()
 * only changes the desired list while they do not, so a late callback after shutdown cannot
 * recreate them. Calls are serialised: overlapping setAdmitted() calls apply in call order.
 */
export class NodeFirewall {
  private spec: NormalizedSpec
  private readonly runner: Runner
  private installed = false
  private queue: Promise<unknown> = Promise.resolve()

  constructor(spec: FirewallSpec, opts: FirewallOptions = {}) {
    this.spec = normalizeSpec(spec)
    this.runner = opts.runner ?? run
  }

  get admitted(): readonly string[] {
    return this.spec.admitted
  }

  /** Full reconcile: creates or refills all three chains and fixes the jumps; all or nothing. */
  apply(): Promise<void> {
    return this.serial(async () => {
      await applyAtomically(this.spec, this.runner)
      this.installed = true
    })
  }

  /** Replaces the admitted clients; re-renders only the forward chain. */
  async setAdmitted(addresses: readonly string[]): Promise<void> {
    // Validated at call time, so a bad list fails its own call and never reaches the queue.
    const admitted = normalizeAdmitted(addresses, this.spec.subnet)
    return this.serial(async () => {
      const next = {...this.spec, admitted}
      if (this.installed) await restore(renderAdmitted(next), this.runner)
      this.spec = next
    })
  }

  /** Deletes our jumps and chains (whatever iptables-save shows of them), nothing else. */
  remove(): Promise<void> {
    return this.serial(async () => {
      this.installed = false
      await removeFirewall(this.spec.instance, {runner: this.runner})
    })
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    // The queue itself never rejects (see the catch), so one failure does not block later calls.
    const next = this.queue.then(() => fn())
    this.queue = next.catch(() => undefined)
    return next
  }
}

async function applyAtomically(spec: NormalizedSpec, runner: Runner): Promise<void> {
  const before = await iptablesSave(runner)
  const payload = renderApply(spec, before)
  try {
    await restore(payload, runner)
  } catch (err) {
    // Tables before the failing one are committed: put our chains back as they were.
    try {
      await restore(renderRestoreOwned(parseOwnedState(before, spec.instance), await iptablesSave(runner)), runner)
    } catch (rollbackErr) {
      if (err instanceof Error) err.message += `; rolling back also failed, run remove to clean up: ${(rollbackErr as Error).message}`
    }
    throw err
  }
}

/**
 * Removes an instance's chains and jumps if any exist, e.g. left over by a process killed with
 * SIGKILL. Returns whether anything was found.
 */
export async function removeFirewall(instance: string, opts: FirewallOptions = {}): Promise<boolean> {
  assertInstanceName(instance)
  const runner = opts.runner ?? run
  const payload = renderRemoval(await iptablesSave(runner), instance)
  await restore(payload, runner)
  return payload !== ''
}

/** Instances that have chains in this network namespace (to find leftovers of renamed instances). */
export async function findFirewallInstances(opts: FirewallOptions = {}): Promise<string[]> {
  return ownedInstances(await iptablesSave(opts.runner ?? run))
}
