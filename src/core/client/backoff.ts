/**
 * Reconnect delay: exponential from `minSeconds`, capped at `maxSeconds`, with +-20% jitter so
 * a fleet of clients does not hammer a restarted node in lockstep.
 */
export function backoffDelay(attempt: number, minSeconds: number, maxSeconds: number, random = Math.random): number {
  const base = Math.min(maxSeconds, minSeconds * 2 ** Math.min(attempt, 30))
  return Math.round(base * 1000 * (0.8 + 0.4 * random()))
}
