/**
 * Keeps the firewall's admitted set equal to the clients with a live session. Sessions say
 * which address comes and goes, and whose it is (admit, withdraw); the changes are coalesced:
 * one apply at a time, and however many changes arrive meanwhile go together in the next one.
 * An apply costs the size of its change, not of the roster, so a reconnect storm of 10,000
 * clients is a few hundred small batches, not 10,000 passes over 10,000 addresses.
 *
 * Within a batch the last word per address wins, with one thing remembered: an address
 * withdrawn from one client and admitted for another is "renewed", so the old holder's flows
 * are deleted although the address stays in the set. The same client reconnecting keeps its
 * flows (a player's game connections survive a flap of the control connection).
 *
 * An apply that fails is retried (an empty change: the firewall then reads its set back and
 * repairs it) until one succeeds, so a withdrawal is never left in the kernel for want of a
 * next change.
 */
import {FlowDeletionError, type AdmissionChange} from '../firewall/index.js'

export interface AdmittedSet {
  /** Admits and withdraws these addresses (a member added again, or a non-member withdrawn, is no change). */
  changeAdmitted(change: AdmissionChange): Promise<void>
}

/** After a failed apply, the next try comes this much later. */
export const ADMISSION_RETRY_MS = 1_000

interface Pending {
  admitted: boolean
  /** The client the address is admitted for, or withdrawn from. */
  owner: string
  /** Withdrawn from another client earlier in this batch: its flows must go. */
  renew: boolean
}

export class Admission {
  private running: Promise<void> = Promise.resolve()
  private pending: Promise<void> | null = null
  private changes = new Map<string, Pending>()
  private retry: NodeJS.Timeout | null = null
  private failed = false
  /** Applies that reached the firewall, how many failed, and how long they took (metrics). */
  readonly stats = {applies: 0, failures: 0, secondsTotal: 0, lastSeconds: 0}

  constructor(
    private readonly target: AdmittedSet,
    /** False once the node is stopping: the firewall is being removed, leave it alone. */
    private readonly active: () => boolean,
    /** The set was applied but a withdrawn client's tracked flows could not all be deleted. */
    private readonly onFlowError: (e: Error) => void = () => {},
    /** An apply failed; it is retried. */
    private readonly onApplyError: (e: Error) => void = () => {},
  ) {}

  /** Admits the address for `owner`; resolves once the firewall does. */
  admit(address: string, owner: string): Promise<void> {
    const before = this.changes.get(address)
    const renew = before !== undefined && (before.renew || (!before.admitted && before.owner !== owner))
    this.changes.set(address, {admitted: true, owner, renew})
    return this.update()
  }

  /** Withdraws the address from `owner`; resolves once the firewall has. */
  withdraw(address: string, owner: string): Promise<void> {
    const before = this.changes.get(address)
    this.changes.set(address, {admitted: false, owner, renew: before?.renew ?? false})
    return this.update()
  }

  /** Resolves once an apply that started after this call has finished. */
  update(): Promise<void> {
    this.pending ??= this.running.then(
      () => this.apply(),
      () => this.apply(),
    )
    return this.pending
  }

  /** Resolves when no apply is running (for teardown); stops retrying. */
  settled(): Promise<void> {
    if (this.retry !== null) clearTimeout(this.retry)
    this.retry = null
    return (this.pending ?? this.running).catch(() => {})
  }

  private async apply(): Promise<void> {
    this.running = this.pending!
    this.pending = null
    const changes = this.changes
    this.changes = new Map()
    if (!this.active() || (changes.size === 0 && !this.failed)) return
    const change = {add: [] as string[], del: [] as string[], renew: [] as string[]}
    for (const [address, c] of changes) {
      ;(c.admitted ? change.add : change.del).push(address)
      if (c.admitted && c.renew) change.renew.push(address)
    }
    const started = performance.now()
    const timed = (ok: boolean) => {
      const seconds = (performance.now() - started) / 1000
      this.stats.applies++
      if (!ok) this.stats.failures++
      this.stats.secondsTotal += seconds
      this.stats.lastSeconds = seconds
    }
    try {
      await this.target.changeAdmitted(change)
      timed(true)
      this.failed = false
    } catch (e) {
      timed(e instanceof FlowDeletionError)
      // The admitted set is right (the firewall retries the flows on its next change): the
      // clients waiting for this apply must not be refused for it.
      if (e instanceof FlowDeletionError) {
        this.failed = false
        this.onFlowError(e)
        return
      }
      this.failed = true
      this.onApplyError(e as Error)
      if (this.retry === null) {
        this.retry = setTimeout(() => {
          this.retry = null
          this.update().catch(() => {})
        }, ADMISSION_RETRY_MS)
        this.retry.unref()
      }
      throw e
    }
  }
}
