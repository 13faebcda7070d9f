/**
 * How many keepalive MACs the node verifies, and whose budget each one spends.
 *
 * Verifying a keepalive costs an HMAC on the node's main thread, and anyone who knows a
 * session's GRE key or tunnel address can send a keepalive that claims it. So the cost is
 * bounded, and charged to whoever sends: a keepalive from the session's own endpoint spends
 * that session's budget (only its client, or someone forging that exact address and port, can
 * send from there); one from anywhere else (a client whose NAT moved it, or a stranger) spends
 * the budget of its source address, and all such keepalives together share one node-wide
 * budget. A stranger's flood therefore never spends a genuine session's budget: an idle
 * client's keepalives still verify and keep it alive. Past a budget keepalives are dropped
 * unverified and counted.
 */

/** Per session, from its own endpoint: a client sends one a second while probing, one per interval after. */
export const SESSION_VERIFY_PER_SECOND = 10
export const SESSION_VERIFY_BURST = 20

/**
 * From other endpoints, per one-second window: per source address (a carrier-grade NAT that
 * reboots moves all its players at once, and they retry every second), and in all (the most
 * main-thread time a flood from many addresses can take: a few milliseconds a second).
 */
export const FOREIGN_VERIFY_PER_SOURCE = 256
export const FOREIGN_VERIFY_TOTAL = 4096

/** A token bucket: `perSecond` on average, `burst` at once. */
export class TokenBucket {
  private tokens: number
  private last: number

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
    now = Date.now(),
  ) {
    this.tokens = burst
    this.last = now
  }

  take(now: number): boolean {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.perSecond)
    this.last = now
    if (this.tokens < 1) return false
    this.tokens--
    return true
  }
}

/**
 * Keepalives from endpoints that are not their session's, counted per source address in
 * one-second windows. The table holds at most `total` addresses (each entry is one verified
 * keepalive or more), and is emptied each window.
 */
export class ForeignBudget {
  private readonly bySource = new Map<number, number>()
  private used = 0
  private window = -1

  constructor(
    private readonly perSource = FOREIGN_VERIFY_PER_SOURCE,
    private readonly total = FOREIGN_VERIFY_TOTAL,
  ) {}

  take(source: number, now: number): boolean {
    const window = Math.floor(now / 1000)
    if (window !== this.window) {
      this.window = window
      this.used = 0
      this.bySource.clear()
    }
    if (this.used >= this.total) return false
    const n = this.bySource.get(source) ?? 0
    if (n >= this.perSource) return false
    this.bySource.set(source, n + 1)
    this.used++
    return true
  }
}
