/**
 * Applies the payloads from rules.ts with `iptables-restore --noflush -w`, and keeps the
 * admission set (admission-set.ts) with ipset.
 *
 * Atomicity: restore commits each table (each COMMIT) on its own, so a payload that fails in
 * its second table has already committed the first. apply() therefore snapshots our chains
 * before, and on failure renders and restores that snapshot, so the caller sees all or
 * nothing; the set is put back too (destroyed if apply created it, else the change undone).
 *
 * `ipset restore` is not atomic: it runs its lines in order and stops at the first that fails
 * (exit 1, "ipset vX: Error in line N: <reason>"). Lines the kernel already took stay applied,
 * the failing line and all after it are not; a line refused before reaching the kernel (bad
 * syntax, unknown set) also drops the lines buffered with it, so "applied" is some prefix of the
 * payload. After such a failure NodeFirewall stops trusting its own record and reads the set
 * back from the kernel before its next change.
 *
 * Order: a rule cannot name a set that does not exist (iptables-restore refuses it) and a set
 * a rule names cannot be destroyed ("in use by a kernel component"), so apply() creates the set
 * before the chains and removal deletes the chains before the set.
 */
import {setTimeout as sleep} from 'node:timers/promises'
import {cidrContains, formatIpv4, parseCidr, parseIpv4, type Ipv4Cidr} from '../net/ipv4.js'
import {CommandError, CommandNotFoundError, run, type RunOptions, type RunResult, type Runner} from '../sys/run.js'
import {
  conntrackDeleteArgs,
  conntrackDeleteOk,
  conntrackListArgs,
  conntrackSources,
  createSetArgs,
  diffAdmitted,
  flowBlocks,
  incompatibility,
  invertDiff,
  parseIpsetError,
  parseSetSave,
  renderSetChanges,
  SET_IN_USE,
  SET_MAXELEM,
  SET_MISSING,
  type FlowBlock,
  type SetDiff,
} from './admission-set.js'
import {assertInstanceName, instanceOfSet, setName} from './names.js'
import {
  normalizeAdmitted,
  normalizeSpec,
  ownedInstances,
  parseOwnedState,
  renderApply,
  renderRemoval,
  renderRestoreOwned,
  type FirewallSpec,
  type NormalizedSpec,
} from './rules.js'

export interface FirewallOptions {
  /** How to run iptables, ipset and conntrack; tests pass netnsRunner(ns). */
  runner?: Runner
}

/** iptables-restore or ipset restore refused a payload; `line` is 1-based in `payload`. */
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
 * A withdrawal reached the set, but deleting the withdrawn clients' conntrack entries failed
 * for `addresses`, so their established flows may still be tracked. NodeFirewall retries them
 * on its next change.
 */
export class FlowDeletionError extends Error {
  constructor(
    message: string,
    readonly addresses: readonly string[],
  ) {
    super(message)
    this.name = 'FlowDeletionError'
  }
}

/**
 * At most this many `conntrack -D` at once. Each is a walk of the kernel's conntrack table, so
 * more in parallel only contend; a few hide the cost of starting the processes.
 */
const FLOW_DELETE_CONCURRENCY = 4

/** A change to the admitted clients: addresses to admit and to withdraw. */
export interface AdmissionChange {
  add: readonly string[]
  del: readonly string[]
  /**
   * Addresses (in `add`, or members already) that passed to another client since the firewall
   * last heard of them: admitted, but the flows of whoever held them before are deleted, as
   * for a withdrawal, so the new holder does not inherit them.
   */
  renew?: readonly string[]
}

/**
 * The firewall of one node instance. Rules and set exist between apply() and remove();
 * setAdmitted() and changeAdmitted() only change the intended members while they do not, so a
 * late callback after shutdown cannot recreate them. Calls are serialised: overlapping calls
 * apply in call order.
 *
 * `members` is the set the kernel should hold, as numbers. While installed and `setKnown`, the
 * kernel holds exactly that, so a change is worked out in memory and never lists the set: one
 * client among 10,000 is one line of `ipset restore`, and changeAdmitted() costs the size of the
 * change, not of the roster (a reconnect storm makes thousands of them).
 *
 * A change the kernel refused keeps its withdrawals in `members` (those clients are gone
 * whatever the kernel says) and drops its additions; the next call, even an empty change,
 * reads the set back and brings the kernel to `members`.
 */
export class NodeFirewall {
  private spec: NormalizedSpec
  private readonly runner: Runner
  private readonly subnet: Ipv4Cidr
  private installed = false
  /** The kernel set holds exactly `members`; false after a failed change, until re-read. */
  private setKnown = false
  private members: Set<number>
  /** Withdrawn addresses whose conntrack entries are still to be deleted. */
  private unflushed = new Set<number>()
  private queue: Promise<unknown> = Promise.resolve()

  constructor(spec: FirewallSpec, opts: FirewallOptions = {}) {
    this.spec = normalizeSpec(spec)
    this.subnet = parseCidr(this.spec.subnet)!
    this.members = new Set(this.spec.admitted.map((a) => parseIpv4(a)!))
    this.runner = opts.runner ?? run
  }

  /** The admitted addresses, numerically sorted. */
  get admitted(): string[] {
    return [...this.members].sort((a, b) => a - b).map(formatIpv4)
  }

  /**
   * Full reconcile: creates the set or brings an existing one (a leftover) to exactly the
   * admitted list, read from the kernel, then creates or refills all the chains and fixes the
   * jumps; all or nothing. Members it had to remove lose their conntrack entries.
   */
  apply(): Promise<void> {
    return this.serial(async () => {
      this.setKnown = false
      // Checked up front: without it withdrawals could not cut flows, and every one would fail.
      await tool(this.runner, 'conntrack', ['--version'])
      const change = await applyAtomically({...this.spec, admitted: this.admitted}, this.runner)
      this.installed = true
      this.setKnown = true
      await this.deleteFlows(change.del.map((a) => parseIpv4(a)!))
    })
  }

  /**
   * Makes the admitted clients exactly `addresses`: one `ipset restore` with the difference,
   * then the withdrawn clients' conntrack entries deleted so their established flows stop now.
   * A FlowDeletionError means the set did change (and `admitted` says so) but some flows could
   * not be deleted; they are retried with the next call.
   */
  async setAdmitted(addresses: readonly string[]): Promise<void> {
    // Validated at call time, so a bad list fails its own call and never reaches the queue.
    const desired = new Set(normalizeAdmitted(addresses, this.spec.subnet).map((a) => parseIpv4(a)!))
    return this.serial(async () => {
      const add = [...desired].filter((n) => !this.members.has(n))
      const del = [...this.members].filter((n) => !desired.has(n))
      await this.change(add, del)
    })
  }

  /**
   * Admits `change.add` and withdraws `change.del`, as setAdmitted() would with the whole list
   * but at the cost of the change alone. Adding a member or withdrawing a non-member does
   * nothing. An address in both is refused: the caller means one or the other.
   */
  async changeAdmitted(change: AdmissionChange): Promise<void> {
    // Checked before anything is queued: a bad change fails its own call and changes nothing.
    const add = this.checked(change.add)
    const del = this.checked(change.del)
    const renew = this.checked(change.renew ?? [])
    const dels = new Set(del)
    const both = [...add, ...renew].find((n) => dels.has(n))
    if (both !== undefined) throw new Error(`client address ${formatIpv4(both)} is both admitted and withdrawn in one change`)
    return this.serial(async () => {
      const gone = del.filter((n) => this.members.has(n))
      const fresh = [...new Set(add)].filter((n) => !this.members.has(n))
      const size = this.members.size - gone.length + fresh.length
      if (size > SET_MAXELEM) {
        // ipset would refuse the add past maxelem ("Hash is full") after applying part of it.
        // The withdrawals still go: those clients are gone either way.
        await this.change([], gone, [])
        throw new Error(`${size} client addresses exceed the admission set's limit of ${SET_MAXELEM}`)
      }
      await this.change(fresh, gone, renew)
    })
  }

  /** Deletes our jumps and chains (whatever iptables-save shows of them), then the set. */
  remove(): Promise<void> {
    return this.serial(async () => {
      this.installed = false
      this.setKnown = false
      this.unflushed.clear()
      await removeFirewall(this.spec.instance, {runner: this.runner})
    })
  }

  /** Parses addresses of a change; each must be in the tunnel subnet. */
  private checked(addresses: readonly string[]): number[] {
    return addresses.map((a) => {
      const n = parseIpv4(a)
      if (n === undefined) throw new Error(`invalid client address ${JSON.stringify(a)}: expected an IPv4 address`)
      // Clients get addresses from the subnet; anything else is a caller bug, not a rule to add.
      if (!cidrContains(this.subnet, n)) throw new Error(`client address ${a} is outside the tunnel subnet ${this.spec.subnet}`)
      return n
    })
  }

  /**
   * Moves `members` by the change (adds not members, dels members) and, once installed, the
   * kernel set with it, then deletes the flows of the withdrawn and the renewed addresses.
   */
  private async change(add: readonly number[], del: readonly number[], renew: readonly number[] = []): Promise<void> {
    for (const n of del) this.members.delete(n)
    for (const n of add) this.members.add(n)
    if (!this.installed) return
    const set = setName(this.spec.instance)
    let diff: SetDiff
    if (this.setKnown) {
      const order = (xs: readonly number[]) => [...xs].sort((a, b) => a - b).map(formatIpv4)
      diff = {add: order(add), del: order(del)}
    } else {
      // Some earlier change failed part-way: the kernel's set is what it is, bring it to ours.
      diff = diffAdmitted(await readMembers(set, this.runner), this.admitted)
    }
    // Flows of a renewed address go before its new holder is told it may send (the caller
    // waits for this call): replies to the old holder's flows are NEW then, and dropped.
    const flush = [...diff.del.map((a) => parseIpv4(a)!), ...renew]
    try {
      await setRestore(set, renderSetChanges(set, diff), this.runner)
    } catch (err) {
      // Some prefix of the change may be in: read the set back next time. Additions are taken
      // back (their clients are refused); withdrawals stand, and their flows are deleted once
      // they are out of the set.
      this.setKnown = false
      for (const n of add) this.members.delete(n)
      for (const n of flush) this.unflushed.add(n)
      throw err
    }
    this.setKnown = true
    await this.deleteFlows(flush, renew)
  }

  /**
   * Deletes the conntrack entries of `withdrawn` and of earlier withdrawals that failed, except
   * addresses admitted again since (their flows are the new session's now) unless `renewed`
   * (a new holder: the flows were the old one's). Runs only after the addresses left the set,
   * or before a renewed one's new holder may send: a packet arriving in between is dropped by
   * the chain, and the entry it would create is never confirmed.
   */
  private async deleteFlows(withdrawn: readonly number[], renewed: readonly number[] = []): Promise<void> {
    for (const n of withdrawn) this.unflushed.add(n)
    if (this.unflushed.size === 0) return
    const keep = new Set(renewed)
    const todo = [...this.unflushed].filter((n) => !this.members.has(n) || keep.has(n)).map(formatIpv4)
    const failed = await deleteConntrack(todo, this.runner)
    this.unflushed = new Set(failed.map((f) => parseIpv4(f.address)!))
    if (failed.length > 0) {
      const detail = [...new Set(failed.map((f) => f.message))].join('; ')
      throw new FlowDeletionError(`withdrew ${todo.length} client(s) but could not delete the conntrack entries of ${failed.map((f) => f.address).join(', ')}: ${detail}`, failed.map((f) => f.address))
    }
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    // The queue itself never rejects (see the catch), so one failure does not block later calls.
    const next = this.queue.then(() => fn())
    this.queue = next.catch(() => undefined)
    return next
  }
}

/**
 * The set first (the chains name it), brought to exactly spec.admitted, then the chains. On
 * failure both go back as they were. Returns the change made to the set.
 */
async function applyAtomically(spec: NormalizedSpec, runner: Runner): Promise<SetDiff> {
  const set = setName(spec.instance)
  const before = await ensureSet(set, runner)
  const change = diffAdmitted(before.members, spec.admitted)
  try {
    await setRestore(set, renderSetChanges(set, change), runner)
    await applyChains(spec, runner)
  } catch (err) {
    try {
      // After the chains' rollback nothing new names the set, so one we created can go.
      if (before.created) await destroySet(set, runner)
      else await setRestore(set, renderSetChanges(set, invertDiff(change)), runner)
    } catch (undoErr) {
      if (err instanceof Error) err.message += `; putting the admission set ${set} back also failed: ${(undoErr as Error).message}`
    }
    throw err
  }
  return change
}

async function applyChains(spec: NormalizedSpec, runner: Runner): Promise<void> {
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
 * Removes an instance's chains and jumps, then its set, whichever exist, e.g. left over by a
 * process killed with SIGKILL; a set left without its chains is found too. Returns whether
 * anything was found.
 *
 * Removal withdraws every client, so their conntrack entries go too, as with setAdmitted():
 * otherwise a tracked flow of this run (a game server still sending) would be handed to
 * whichever client the next run gives the same address. Those are deleted last, after the
 * chains and the set, so a failure there (a FlowDeletionError) leaves nothing else behind.
 */
export async function removeFirewall(instance: string, opts: FirewallOptions = {}): Promise<boolean> {
  assertInstanceName(instance)
  const runner = opts.runner ?? run
  const set = setName(instance)
  const admitted = await membersForRemoval(set, runner)
  const payload = renderRemoval(await iptablesSave(runner), instance)
  await restore(payload, runner)
  const hadSet = await destroySet(set, runner)
  const failed = await deleteConntrack(admitted, runner).catch((err) => {
    // Without the tool no flow can be deleted; removal itself must still work.
    if (err instanceof CommandNotFoundError) return []
    throw err
  })
  if (failed.length > 0) {
    const detail = [...new Set(failed.map((f) => f.message))].join('; ')
    throw new FlowDeletionError(`removed the firewall of ${instance} but could not delete the conntrack entries of ${failed.map((f) => f.address).join(', ')}: ${detail}`, failed.map((f) => f.address))
  }
  return payload !== '' || hadSet
}

/** The set's plain IPv4 members, or none if it does not exist or ipset is not installed. */
async function membersForRemoval(set: string, runner: Runner): Promise<string[]> {
  try {
    return (await readSet(set, runner))?.members.filter((m) => parseIpv4(m) !== undefined) ?? []
  } catch (err) {
    if (err instanceof CommandNotFoundError) return []
    throw err
  }
}

/** Instances that have chains or a set in this network namespace (to find leftovers of renamed instances). */
export async function findFirewallInstances(opts: FirewallOptions = {}): Promise<string[]> {
  const runner = opts.runner ?? run
  const found = new Set(ownedInstances(await iptablesSave(runner)))
  for (const set of await listSets(runner)) {
    const instance = instanceOfSet(set)
    if (instance !== undefined) found.add(instance)
  }
  return [...found].sort()
}

/** Runs a tool; when it is missing, says which package has it. */
async function tool(runner: Runner, cmd: 'ipset' | 'conntrack', args: readonly string[], opts?: RunOptions): Promise<RunResult> {
  try {
    return await runner(cmd, args, opts)
  } catch (err) {
    if (err instanceof CommandNotFoundError) err.message = `${cmd} not found: install ${cmd} (the node's firewall needs it)`
    throw err
  }
}

/** The set as `ipset save` shows it, or undefined if it does not exist. */
async function readSet(set: string, runner: Runner) {
  const res = await tool(runner, 'ipset', ['save', set], {allowFail: true})
  if (res.code !== 0) {
    if (SET_MISSING.test(res.stderr)) return undefined
    throw ipsetFailure(['save', set], res)
  }
  const saved = parseSetSave(res.stdout, set)
  if (saved === undefined) throw new Error(`ipset save ${set} printed no "create ${set}" line: ${JSON.stringify(res.stdout.slice(0, 200))}`)
  return saved
}

/** The set's members, for a diff against the kernel rather than our record of it. */
async function readMembers(set: string, runner: Runner): Promise<string[]> {
  const saved = await readSet(set, runner)
  if (saved === undefined) throw new Error(`the admission set ${set} does not exist (removed by someone else?): apply the firewall again`)
  const why = incompatibility(saved)
  if (why !== undefined) throw new Error(`the admission set ${set} was changed by someone else: ${why}; apply the firewall again`)
  return saved.members
}

/**
 * The set exists afterwards, as ours (hash:ip, inet, our maxelem, no options), with whatever
 * members it had if it existed already. One that exists with other parameters is replaced,
 * which the kernel allows only while no rule names it.
 */
async function ensureSet(set: string, runner: Runner): Promise<{created: boolean; members: string[]}> {
  const saved = await readSet(set, runner)
  if (saved !== undefined) {
    const why = incompatibility(saved)
    if (why === undefined) return {created: false, members: saved.members}
    const res = await tool(runner, 'ipset', ['destroy', set], {allowFail: true})
    if (res.code !== 0 && !SET_MISSING.test(res.stderr)) {
      throw new Error(`ipset ${set} exists but ${why}, and it cannot be replaced: ${parseIpsetError(res.stderr).reason} (remove the rules that use it, then \`ipset destroy ${set}\`)`)
    }
  }
  const args = createSetArgs(set)
  const res = await tool(runner, 'ipset', args, {allowFail: true})
  if (res.code !== 0) throw ipsetFailure(args, res)
  return {created: true, members: []}
}

/** Applies a payload from renderSetChanges() with `ipset restore -exist`; nothing for ''. */
async function setRestore(set: string, payload: string, runner: Runner): Promise<void> {
  if (payload === '') return
  const res = await tool(runner, 'ipset', ['restore', '-exist'], {input: payload, allowFail: true})
  if (res.code === 0) return
  const {line, reason} = parseIpsetError(res.stderr)
  const text = line !== undefined ? payload.split('\n')[line - 1] : undefined
  const where = line !== undefined ? ` line ${line}${text !== undefined ? ` (${text})` : ''}` : ''
  throw new FirewallError(`ipset restore rejected${where} of the changes to ${set}: ${reason || `exit code ${res.code}`}`, payload, line, res.stderr)
}

/** How long a set may stay "in use" after the rules naming it were deleted (see destroySet). */
const RELEASE_WAIT_MS = [10, 20, 50, 100, 200, 400, 800]

/**
 * Destroys the set if it exists; returns whether it did. With the nft backend a deleted rule
 * may release its reference to the set just after iptables-restore returned, so "in use" is
 * retried for a moment before it is taken to mean that some other rule names the set.
 * Without the ipset tool no set of ours can exist, so that is "nothing there".
 */
async function destroySet(set: string, runner: Runner): Promise<boolean> {
  for (let attempt = 0; ; attempt++) {
    let res: RunResult
    try {
      res = await runner('ipset', ['destroy', set], {allowFail: true})
    } catch (err) {
      if (err instanceof CommandNotFoundError) return false
      throw err
    }
    if (res.code === 0) return true
    if (SET_MISSING.test(res.stderr)) return false
    if (!SET_IN_USE.test(res.stderr) || attempt >= RELEASE_WAIT_MS.length) {
      const hint = SET_IN_USE.test(res.stderr) ? ` (a rule outside our chains names it: find it with \`iptables-save | grep -- '--match-set ${set} '\`)` : ''
      throw new Error(`cannot destroy the admission set ${set}: ${parseIpsetError(res.stderr).reason}${hint}`)
    }
    await sleep(RELEASE_WAIT_MS[attempt])
  }
}

/** Names of every set in this namespace; none when ipset is not installed. */
async function listSets(runner: Runner): Promise<string[]> {
  try {
    return (await runner('ipset', ['list', '-n'])).stdout.split('\n').map((l) => l.trim()).filter(Boolean)
  } catch (err) {
    if (err instanceof CommandNotFoundError) return []
    throw err
  }
}

function ipsetFailure(args: readonly string[], res: RunResult): Error {
  return new CommandError(`ipset ${args.join(' ')} exited with ${res.code}: ${parseIpsetError(res.stderr).reason}`, 'ipset', args, res.code, res.stdout, res.stderr)
}

/**
 * Past this many blocks to delete, one `conntrack -L` first finds which addresses have any
 * entry at all: a mass withdrawal (a node stopping, a network outage ending thousands of
 * sessions) of hash-scattered addresses is thousands of blocks, each a walk of the kernel's
 * table and a process started, while most clients that go have no flow left.
 */
const FLOW_LIST_OVER = 8

/**
 * Deletes every conntrack entry whose original source is one of `addresses`: `conntrack -D
 * --orig-src` per block of flowBlocks() (a single address, or a run with --mask-src), a few at a
 * time. Every flow a client has through the node (forwarded or to the node itself) was started
 * by it, so its address is the original source of all of them, NATed or not. Returns the
 * addresses whose deletion failed, with the reason; rejects if conntrack is not installed.
 *
 * Many blocks: one listing first, then only the addresses it shows. The addresses are out of
 * the admission set already, so no new entry of theirs can be confirmed after the listing.
 */
export async function deleteConntrack(addresses: readonly string[], runner: Runner = run): Promise<Array<{address: string; message: string}>> {
  let blocks = flowBlocks(addresses)
  if (blocks.length > FLOW_LIST_OVER) {
    try {
      const res = await tool(runner, 'conntrack', conntrackListArgs(addresses), {allowFail: true})
      if (res.code === 0) {
        const tracked = conntrackSources(res.stdout)
        blocks = flowBlocks(addresses.filter((a) => tracked.has(a)))
      }
    } catch (err) {
      if (err instanceof CommandNotFoundError) throw err
      // Killed (timeout, an output past the buffer): as any failed listing, below.
    }
    // A listing that failed proves nothing: delete block by block, as with a few.
  }
  const failed: Array<{index: number; block: FlowBlock; message: string}> = []
  let next = 0
  const worker = async () => {
    while (next < blocks.length) {
      const index = next++
      const block = blocks[index]
      const args = conntrackDeleteArgs(block)
      try {
        const res = await tool(runner, 'conntrack', args, {allowFail: true})
        if (!conntrackDeleteOk(res.code, res.stderr)) {
          const why = res.stderr.trim().replace(/^conntrack v[\d.]+ \(conntrack-tools\):\s*/gm, '').split('\n')[0] || `exit code ${res.code}`
          failed.push({index, block, message: `conntrack ${args.join(' ')} exited with ${res.code}: ${why}`})
        }
      } catch (err) {
        // Not a failure of this block: no block can be done. The caller decides what that means.
        if (err instanceof CommandNotFoundError) throw err
        failed.push({index, block, message: (err as Error).message})
      }
    }
  }
  await Promise.all(Array.from({length: Math.min(FLOW_DELETE_CONCURRENCY, blocks.length)}, worker))
  return failed.sort((a, b) => a.index - b.index).flatMap(({block, message}) => block.members.map((address) => ({address, message})))
}
