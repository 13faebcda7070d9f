/**
 * Ranking nodes by what the player feels, and when to move (docs/failover.md).
 *
 *   score = RTT to the node + RTT from the node to the game servers + 1000 ms x loss - preference
 *
 * where loss is the chance a packet is lost on either leg (1 % costs 10 ms; a game server the
 * node cannot reach counts as lost) and the game servers' RTT is the mean over those the node
 * reached. When some usable node measures no game server (it does not, or has no answer yet),
 * every node is ranked by its RTT to the node alone ("node" basis), so that a node which
 * measures nothing is not favoured for it.
 *
 * A client moves to another node only when that node is clearly better, both
 *   at least `betterByMs` better than the current one, and
 *   under `betterRatio` of the current one's score,
 * (Tailscale's relay rule, 10 ms and two thirds, is the floor the config may not go under),
 * and stays so for `switchAfterMs` without a break. A current node that stops answering
 * entirely is left at once (client-agent.ts, after `deadSeconds`); one that answers too little
 * to rank (3 probes in a row lost) scores Infinity here, so any ranked node beats it after the
 * wait. Two challengers taking turns as the best restart the wait each time.
 */
export const LOSS_PENALTY_MS = 1000

export interface RankInput {
  key: string
  /** Median RTT to the node, ms; null: not measured (yet). */
  rttMs: number | null
  loss: number
  /** Mean RTT from the node to the game servers it reached, ms; null: none. */
  gameMs: number | null
  /** Share lost on the node's leg, a server it cannot reach counting as all lost. */
  gameLoss: number
  /** The node has measured (reached or not) at least one of the game servers. */
  gameKnown: boolean
  preference: number
  /** Answering probes and not refusing us. */
  usable: boolean
}

export type Basis = 'path' | 'node'

/** "path" when every usable, measured node reports the game servers; "node" otherwise. */
export function basisOf(nodes: readonly RankInput[]): Basis {
  const measured = nodes.filter((n) => n.usable && n.rttMs !== null)
  return measured.length > 0 && measured.every((n) => n.gameKnown) ? 'path' : 'node'
}

/** Lower is better; Infinity for a node that cannot be ranked. Never below 0. */
export function score(n: RankInput, basis: Basis): number {
  if (!n.usable || n.rttMs === null) return Infinity
  const game = basis === 'path' ? (n.gameMs ?? 0) : 0
  const lost = basis === 'path' ? 1 - (1 - n.loss) * (1 - n.gameLoss) : n.loss
  return Math.max(0, n.rttMs + game + LOSS_PENALTY_MS * lost - n.preference)
}

/** The nodes best first (unrankable last, in the order given). */
export function rank(nodes: readonly RankInput[], basis: Basis = basisOf(nodes)): RankInput[] {
  return nodes
    .map((n, i) => ({n, i, s: score(n, basis)}))
    .sort((a, b) => (a.s === b.s ? a.i - b.i : a.s < b.s ? -1 : 1))
    .map((x) => x.n)
}

export interface SwitchRule {
  betterByMs: number
  betterRatio: number
  switchAfterMs: number
}

export function clearlyBetter(candidate: number, current: number, rule: SwitchRule): boolean {
  if (!Number.isFinite(candidate)) return false
  if (!Number.isFinite(current)) return true
  return candidate <= current - rule.betterByMs && candidate < current * rule.betterRatio
}

/**
 * Decides when to move: the best other node must be clearly better than the current one at
 * every look for `switchAfterMs`. A different challenger, or one look where it is not, starts
 * the wait again.
 */
export class Switcher {
  private challenger: string | null = null
  private since = 0

  constructor(private rule: SwitchRule) {}

  setRule(rule: SwitchRule): void {
    this.rule = rule
  }

  /** The node to move to now, or null. `nodes` includes the current one. */
  consider(now: number, nodes: readonly RankInput[], currentKey: string): {to: string; why: string} | null {
    const basis = basisOf(nodes)
    const current = nodes.find((n) => n.key === currentKey)
    const best = rank(nodes.filter((n) => n.key !== currentKey), basis)[0]
    const cur = current === undefined ? Infinity : score(current, basis)
    const bestScore = best === undefined ? Infinity : score(best, basis)
    if (best === undefined || !clearlyBetter(bestScore, cur, this.rule)) {
      this.challenger = null
      return null
    }
    if (this.challenger !== best.key) {
      this.challenger = best.key
      this.since = now
    }
    if (now - this.since < this.rule.switchAfterMs) return null
    this.challenger = null
    const unit = basis === 'path' ? 'ms to the game' : 'ms to the node'
    return {to: best.key, why: `${fmt(bestScore)} ${unit} against ${fmt(cur)} for ${Math.round((now - this.since) / 1000)} s`}
  }

  /** After a move (or a failover), the wait starts again. */
  reset(): void {
    this.challenger = null
  }
}

function fmt(ms: number): string {
  return Number.isFinite(ms) ? ms.toFixed(1) : 'nothing'
}
