/**
 * Keeps the firewall's admitted set equal to the clients with a live session. Updates are
 * coalesced: one apply at a time, and however many changes arrive meanwhile, one more apply
 * that reads the set as it is then. A reconnect storm of thousands of clients therefore costs
 * a few set updates, each one batch of element changes, not one per client.
 */
import {FlowDeletionError} from '../firewall/index.js'

export interface AdmittedSet {
  /** Makes the kernel's set hold exactly these addresses (applies the difference). */
  setAdmitted(addresses: readonly string[]): Promise<void>
}

export class Admission {
  private running: Promise<void> = Promise.resolve()
  private pending: Promise<void> | null = null

  constructor(
    private readonly target: AdmittedSet,
    /** The addresses that should be admitted now. */
    private readonly desired: () => string[],
    /** False once the node is stopping: the firewall is being removed, leave it alone. */
    private readonly active: () => boolean,
    /** The set was applied but a withdrawn client's tracked flows could not all be deleted. */
    private readonly onFlowError: (e: Error) => void = () => {},
  ) {}

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
    if (!this.active()) return
    try {
      await this.target.setAdmitted(this.desired())
    } catch (e) {
      // The admitted set is right (the firewall retries the flows on its next change): the
      // clients waiting for this apply must not be refused for it.
      if (!(e instanceof FlowDeletionError)) throw e
      this.onFlowError(e)
    }
  }
}
