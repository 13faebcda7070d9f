/**
 * Keeps the firewall's admitted set equal to the clients with a live session. Sessions say
 * which address comes and goes (admit, withdraw); the changes are coalesced: one apply at a
 * time, and however many changes arrive meanwhile go together in the next one. An apply costs
 * the size of its change, not of the roster, so a reconnect storm of 10,000 clients is a few
 * hundred small batches, not 10,000 passes over 10,000 addresses.
 */
import {FlowDeletionError, type AdmissionChange} from '../firewall/index.js'

export interface AdmittedSet {
  /** Admits and withdraws these addresses (a member added again, or a non-member withdrawn, is no change). */
  changeAdmitted(change: AdmissionChange): Promise<void>
}

export class Admission {
  private running: Promise<void> = Promise.resolve()
  private pending: Promise<void> | null = null
  /** What the next apply does: true to admit the address, false to withdraw it; the last word wins. */
  private changes = new Map<string, boolean>()

  constructor(
    private readonly target: AdmittedSet,
    /** False once the node is stopping: the firewall is being removed, leave it alone. */
    private readonly active: () => boolean,
    /** The set was applied but a withdrawn client's tracked flows could not all be deleted. */
    private readonly onFlowError: (e: Error) => void = () => {},
  ) {}

  /** Admits the address; resolves once the firewall does. */
  admit(address: string): Promise<void> {
    this.changes.set(address, true)
    return this.update()
  }

  /** Withdraws the address; resolves once the firewall has. */
  withdraw(address: string): Promise<void> {
    this.changes.set(address, false)
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

  /** Resolves when no apply is running (for teardown). */
  settled(): Promise<void> {
    return (this.pending ?? this.running).catch(() => {})
  }

  private async apply(): Promise<void> {
    this.running = this.pending!
    this.pending = null
    const changes = this.changes
    this.changes = new Map()
    if (!this.active() || changes.size === 0) return
    const change: {add: string[]; del: string[]} = {add: [], del: []}
    for (const [address, admitted] of changes) (admitted ? change.add : change.del).push(address)
    try {
      await this.target.changeAdmitted(change)
    } catch (e) {
      // The admitted set is right (the firewall retries the flows on its next change): the
      // clients waiting for this apply must not be refused for it.
      if (!(e instanceof FlowDeletionError)) throw e
      this.onFlowError(e)
    }
  }
}
