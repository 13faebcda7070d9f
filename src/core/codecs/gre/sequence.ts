/**
 * GRE sequence numbers (RFC 2890 section 2.2): the sender's counter and the receiver's rule.
 *
 * The receiver accepts a packet only if its number is newer than the last one it accepted, in
 * 32-bit serial-number arithmetic (RFC 1982): `seq` is newer than `last` when
 * (seq - last) mod 2^32 lies in [1, 2^31]. Everything else (a duplicate, a late packet, or a
 * jump of more than 2^31, which serial arithmetic reads as a step backwards) is discarded and
 * counted. RFC 1982 leaves a distance of exactly 2^31 undefined; RFC 2890 counts as "less than
 * or equal" only the last number and the 2^31-1 before it, which makes 2^31 newer, so we accept it.
 *
 * RFC 2890 lets a receiver hold out-of-order packets in a small buffer (up to OUTOFORDER_TIMER)
 * to put them back in order. We do not: the traffic is mostly games and voice, where a late
 * packet is worth less than the delay spent waiting for it, so a late packet is simply dropped.
 */

const HALF = 0x80000000 // 2^31

/** Receiver side: the last accepted number and how many packets arrived too late. */
export class SequenceWindow {
  private last = 0
  private started = false
  private droppedCount = 0

  /** Packets discarded as duplicate or out of order since the session began. */
  get dropped(): number {
    return this.droppedCount
  }

  /** The last accepted sequence number, or undefined before the first packet. */
  get lastAccepted(): number | undefined {
    return this.started ? this.last : undefined
  }

  /**
   * True if `seq` is newer than the last accepted number (and makes it the last); false, and
   * counted in `dropped`, otherwise. The first packet of a session is accepted whatever its number,
   * since the receiver cannot know where the sender started.
   */
  accept(seq: number): boolean {
    seq >>>= 0
    if (!this.started) {
      this.started = true
      this.last = seq
      return true
    }
    const distance = (seq - this.last) >>> 0
    if (distance === 0 || distance > HALF) {
      this.droppedCount++
      return false
    }
    this.last = seq
    return true
  }

  /** Forget the history: the next packet is accepted as if it were the session's first. */
  reset(): void {
    this.started = false
    this.last = 0
  }
}

/** Sender side: 32-bit numbers from `start` (0 or 1, per session config), incrementing and wrapping. */
export class SequenceCounter {
  private nextValue: number

  constructor(start = 0) {
    this.nextValue = start >>> 0
  }

  /** The number for the next packet sent; advances the counter. */
  next(): number {
    const seq = this.nextValue
    this.nextValue = (seq + 1) >>> 0
    return seq
  }

  /** The number `next()` would return, without advancing. */
  peek(): number {
    return this.nextValue
  }
}
