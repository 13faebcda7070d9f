/**
 * What the fuzzing client's sessions share (client.ts runs them one after the other): its
 * options, its summary, and the budget of packets, seconds and rate they all draw from.
 */

export interface FuzzClientOptions {
  transport: string
  host: string
  port: number
  nodeName: string
  /** The client's PKI bundle (a certificate the node admits). */
  bundle: string
  /** The package root: plugins/<transport>/dist/index.js is loaded from there. */
  root: string
  /** Where the inner packets go (the testbed's target). */
  target: string
  packets: number
  seconds: number
  seed: number
  /** Packets (datagrams, or Data frames on tls) per second at most. */
  rate: number
}

export interface FuzzClientSummary {
  transport: string
  seed: number
  /** Datagrams sent (datagram transports) or Data frames sent in records (tls). */
  packets: number
  seconds: number
  /** Connections made, each authenticated and welcomed. */
  sessions: number
  /** What was sent, by kind. */
  kinds: Record<string, number>
  /** Why the node ended our connections, by reason. */
  closes: Record<string, number>
  /** Datagrams (or stream bytes) the node sent back. */
  received: number
  records?: number
}

/** A session waits this long for the node's welcome, or for an answer to its first keepalive. */
export const WELCOME_TIMEOUT_MS = 10_000
/** Packets sent in one go at most, before the event loop gets a turn. */
const BURST = 64

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

export class Budget {
  sent = 0
  readonly start = Date.now()
  constructor(readonly o: FuzzClientOptions) {}
  get done(): boolean {
    return this.sent >= this.o.packets || Date.now() - this.start >= this.o.seconds * 1000
  }
  /** How many packets may go now to keep to the rate (0: wait a little). */
  allowance(): number {
    const due = Math.floor(((Date.now() - this.start) / 1000) * this.o.rate) - this.sent
    return Math.max(0, Math.min(due, BURST, this.o.packets - this.sent))
  }
}

export function count(map: Record<string, number>, key: string, n = 1): void {
  map[key] = (map[key] ?? 0) + n
}
