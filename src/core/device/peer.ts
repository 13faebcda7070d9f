/**
 * A peer as the data path sees it: its tunnel address, its transport session, the link its
 * payloads leave by, and counters. One per client on the node; exactly one on a client.
 */
import type {Drop, Session} from '../transport/contract.js'
import type {PacketError} from '../net/packet.js'

/** The carrier side of one peer: where encapsulated payloads go. */
export interface PeerLink {
  /** Queue one payload; it may be coalesced with others until flush(). Copies what it keeps. */
  send(buf: Buffer, offset: number, length: number): void
  /** Hand everything queued since the last flush to the OS: called once per batch. */
  flush(): void
  /** Where the peer is reached from, as the operator sees it ("203.0.113.7:51234"). */
  readonly endpoint: string
  /**
   * Whether a payload that came from addr:port may be taken as this peer's data. A stream is
   * its own proof; a datagram link takes data only from the peer's current endpoint, which
   * only an authenticated keepalive can move.
   */
  accepts(addr: number, port: number): boolean
}

export type DropCounter = Drop | PacketError | 'source' | 'no-peer' | 'queue-full' | 'encap' | 'endpoint' | 'no-endpoint' | 'keepalive-rate'

export class PeerStats {
  rxPackets = 0
  rxBytes = 0
  txPackets = 0
  txBytes = 0
  /** ms since epoch of the last payload received from the peer (data or keepalive). */
  lastSeen = 0
  readonly drops: Record<string, number> = Object.create(null)
  /** Brings in what the native fast path counted for this peer (set while it carries it). */
  sync: (() => void) | null = null

  drop(reason: DropCounter, count = 1): void {
    this.drops[reason] = (this.drops[reason] ?? 0) + count
  }

  dropsSnapshot(): Record<string, number> {
    return {...this.drops}
  }
}

export class Peer {
  readonly stats = new PeerStats()
  /** Reused by encap/decap so the hot path allocates nothing. */
  readonly span = {offset: 0, length: 0}
  /** txPackets at the last flush: a peer whose count moved past it is queued for a flush. */
  flushMark = 0

  constructor(
    readonly name: string,
    /** Tunnel address, as a number for lookups and as text for humans. */
    readonly address: number,
    readonly addressText: string,
    readonly session: Session,
    public link: PeerLink,
    readonly connectedAt = Date.now(),
  ) {}
}

