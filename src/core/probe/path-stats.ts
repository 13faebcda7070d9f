/**
 * One path's recent probes: the round trip of those answered and the share lost. A window of
 * the last few outcomes, not an average since start, so a path that changes is seen to change
 * within a few probes; the median, so one late reply does not move the figure.
 */
export const PATH_WINDOW = 10

export class PathStats {
  /** Probes sent and not yet answered nor given up: counter -> ms sent at. */
  private readonly pending = new Map<number, number>()
  /** The last PATH_WINDOW outcomes: a round trip in ms, or null for a lost probe. */
  private readonly outcomes: (number | null)[] = []
  /** ms since epoch of the last answer. */
  lastAnswer = 0

  constructor(private readonly timeoutMs: number) {}

  sent(n: number, now: number): void {
    this.expire(now)
    this.pending.set(n, now)
  }

  /** The round trip of probe `n`, or null if it was not pending (late, duplicate, unknown). */
  answered(n: number, now: number): number | null {
    const at = this.pending.get(n)
    if (at === undefined) return null
    this.pending.delete(n)
    const rtt = now - at
    this.push(rtt)
    this.lastAnswer = now
    return rtt
  }

  /** Pending probes older than the timeout count as lost. */
  expire(now: number): void {
    for (const [n, at] of this.pending) {
      if (now - at < this.timeoutMs) continue
      this.pending.delete(n)
      this.push(null)
    }
  }

  /** Forget everything (the path changed beyond comparison: a new ticket, a restarted node). */
  reset(): void {
    this.pending.clear()
    this.outcomes.length = 0
  }

  private push(outcome: number | null): void {
    this.outcomes.push(outcome)
    if (this.outcomes.length > PATH_WINDOW) this.outcomes.shift()
  }

  get samples(): number {
    return this.outcomes.length
  }

  /** Median round trip of the answered probes in the window, ms; null when none was. */
  get rttMs(): number | null {
    const rtts = this.outcomes.filter((o): o is number => o !== null).sort((a, b) => a - b)
    if (rtts.length === 0) return null
    const mid = rtts.length >> 1
    return rtts.length % 2 === 1 ? rtts[mid] : (rtts[mid - 1] + rtts[mid]) / 2
  }

  /** Share of the window's probes that were lost, 0 to 1. */
  get loss(): number {
    return this.outcomes.length === 0 ? 0 : this.outcomes.filter((o) => o === null).length / this.outcomes.length
  }
}
