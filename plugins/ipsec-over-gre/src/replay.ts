/**
 * The ESP anti-replay window (RFC 4303 section 3.4.3, and Appendix A for extended sequence
 * numbers), kept as the bitmap of RFC 6479: a ring of 64-bit blocks, one bit per sequence
 * number, where moving the window's right edge forward only clears the blocks it recycles.
 * Checking and updating cost O(1) (a jump forward clears at most one ring's worth of blocks:
 * O(1) amortised per sequence number, as in RFC 6479).
 *
 * The window is (top - size, top]: `top` is the highest sequence number authenticated so far.
 * A number above `top` is new; one inside the window is new if its bit is clear; one at or
 * below top - size is too old. Sequence number 0 is never sent (RFC 4303 3.3.3: the first
 * packet is 1), so its bit starts set and a packet claiming 0 is a replay.
 *
 * Sequence numbers are 64 bits (with ESN; without it the high half is always 0). To keep BigInt
 * off the per-packet path they travel as two uint32 halves (`hi`, `lo`); the methods taking a
 * bigint or number convert and call those. A 64-bit block is stored as two adjacent words of a
 * Uint32Array (JS bit operations are 32-bit): the bit of sequence number s is bit (s & 31) of
 * word (s >>> 5) mod 2*blocks, and words 2b and 2b+1 are block b, cleared together when the
 * window's edge enters block b again. Because the ring holds 64*blocks bits, a power of two
 * dividing 2^32, the position of a number depends only on its low half.
 *
 * Call order (RFC 4303 3.4.3): `check` before decrypting, so a replayed or old packet costs no
 * crypto; `update` only after the ICV verified, so a forged packet cannot move the window.
 * Everything here is synchronous, so nothing can slip in between the two.
 */

/** The default window, in packets (RFC 4303 recommends at least 64; high rates need more). */
export const REPLAY_DEFAULT_WINDOW = 2048
/** Limits on the window size: RFC 4303's minimum of 32, and 2^20 (a 128 KiB bitmap). */
export const REPLAY_MIN_WINDOW = 32
export const REPLAY_MAX_WINDOW = 1 << 20

const TWO_32 = 4294967296
const TWO_26 = 67108864 // 2^32 / 64: how many blocks one step of the high half is

export class ReplayWindow {
  /** Packets accepted by check(): those in (top - size, top] not seen yet, and all above top. */
  readonly size: number
  /** Number of 64-bit blocks in the ring (a power of two, at least ceil(size / 64) + 1). */
  readonly blocks: number
  /**
   * All mutable state in one array, so the core's native fast path can share it (FastCodec
   * esp-gcm-in-gre): [top high half, top low half, then the ring of 2 * blocks 32-bit words].
   */
  readonly state: Uint32Array
  private readonly words: Uint32Array
  private readonly wordMask: number
  private readonly blockMask: number
  private droppedCount = 0
  private tooOldCount = 0

  constructor(size = REPLAY_DEFAULT_WINDOW) {
    if (!Number.isInteger(size) || size < REPLAY_MIN_WINDOW || size > REPLAY_MAX_WINDOW) {
      throw new RangeError(`replay window size must be an integer in [${REPLAY_MIN_WINDOW}, ${REPLAY_MAX_WINDOW}], not ${size}`)
    }
    this.size = size
    // The window touches at most ceil(size / 64) + 1 blocks (its two ends may sit in partial
    // blocks); one ring of that many never lets the window's oldest bits share a block with
    // the newest, so a bit is recycled only once it has left the window.
    const needed = Math.ceil(size / 64) + 1
    let blocks = 1
    while (blocks < needed) blocks <<= 1
    this.blocks = blocks
    this.state = new Uint32Array(2 + blocks * 2)
    this.words = this.state.subarray(2)
    this.wordMask = blocks * 2 - 1
    this.blockMask = blocks - 1
    this.words[0] = 1 // sequence number 0 counts as seen
  }

  /** Packets check() refused since the window was made: duplicates plus too old. */
  get dropped(): number {
    return this.droppedCount
  }

  /** The part of `dropped` that was below the window (too old to tell, so refused). */
  get tooOld(): number {
    return this.tooOldCount
  }

  /** The highest sequence number authenticated so far (0 before the first). Not for the hot path. */
  get top(): bigint {
    return (BigInt(this.state[0]) << 32n) | BigInt(this.state[1])
  }

  /**
   * Extended sequence numbers (RFC 4303 Appendix A.2.2): the high half of the 64-bit sequence
   * number whose low half `lo` arrived, guessed from where the window is. A number inside or
   * above the window in the current 2^32 epoch keeps the current high half; a low half below
   * the window means the sender has crossed into the next epoch; when the window itself spans
   * an epoch boundary, a low half in the window's upper part belongs to the previous epoch.
   * The guess is only a guess: the ICV, which covers the high half, decides. The result may be
   * -1 or 2^32 (before the first or after the last possible number): the caller drops those.
   */
  inferHigh(lo: number): number {
    lo >>>= 0
    const tl = this.state[1]
    const w = this.size
    if (tl >= w - 1) return lo >= tl - w + 1 ? this.state[0] : this.state[0] + 1
    return lo >= tl - w + 1 + TWO_32 ? this.state[0] - 1 : this.state[0]
  }

  /**
   * True if the 64-bit sequence number hi:lo may be accepted (new, and not too old); false, and
   * counted in `dropped`, otherwise. Changes nothing else. hi and lo must be uint32 values.
   */
  checkHL(hi: number, lo: number): boolean {
    const th = this.state[0]
    const tl = this.state[1]
    if (hi > th || (hi === th && lo > tl)) return true
    // At or below top: distance = top - seq, exact in a double while the high halves are close.
    const dHi = th - hi
    if (dHi > 1 || dHi * TWO_32 + tl - lo >= this.size) {
      this.droppedCount++
      this.tooOldCount++
      return false
    }
    if ((this.words[(lo >>> 5) & this.wordMask] & (1 << (lo & 31))) !== 0) {
      this.droppedCount++
      return false
    }
    return true
  }

  /**
   * Marks hi:lo as received, sliding the window forward if it is above the top (clearing the
   * blocks it recycles). Call it only after the packet authenticated, and after checkHL said
   * true. Returns false (and changes nothing) if hi:lo is too old or was already marked.
   */
  updateHL(hi: number, lo: number): boolean {
    const th = this.state[0]
    const tl = this.state[1]
    const words = this.words
    if (hi > th || (hi === th && lo > tl)) {
      const dHi = hi - th
      // Blocks between the old top's block and the new one: exact for dHi <= 1.
      const dBlocks = dHi > 1 ? Infinity : dHi * TWO_26 + (lo >>> 6) - (tl >>> 6)
      if (dBlocks >= this.blocks) {
        words.fill(0)
      } else {
        const mask = this.blockMask
        const first = tl >>> 6
        for (let i = 1; i <= dBlocks; i++) {
          const b = ((first + i) & mask) << 1
          words[b] = 0
          words[b + 1] = 0
        }
      }
      this.state[0] = hi
      this.state[1] = lo
      words[(lo >>> 5) & this.wordMask] |= 1 << (lo & 31)
      return true
    }
    const dHi = th - hi
    if (dHi > 1 || dHi * TWO_32 + tl - lo >= this.size) return false
    const at = (lo >>> 5) & this.wordMask
    const bit = 1 << (lo & 31)
    if ((words[at] & bit) !== 0) return false
    words[at] |= bit
    return true
  }

  /** Counts a packet refused as too old without a number to check (ESN: no possible high half). */
  refuseTooOld(): 'replay' {
    this.droppedCount++
    this.tooOldCount++
    return 'replay'
  }

  /** check() for a sequence number given whole (a bigint, or a safe integer number). */
  check(seq: bigint | number): boolean {
    if (!split(seq)) {
      this.droppedCount++
      return false
    }
    return this.checkHL(splitHi, splitLo)
  }

  /** update() for a sequence number given whole; see updateHL. */
  update(seq: bigint | number): boolean {
    return split(seq) && this.updateHL(splitHi, splitLo)
  }

  /** Back to the initial state: nothing seen but 0, counters kept. (A new SA wants a new window.) */
  reset(): void {
    this.words.fill(0)
    this.words[0] = 1
    this.state[0] = 0
    this.state[1] = 0
  }
}

// Scratch for split(): one module-level pair, no allocation per call.
let splitHi = 0
let splitLo = 0

/** Splits a 64-bit sequence number into splitHi/splitLo; false if it is not one. */
function split(seq: bigint | number): boolean {
  if (typeof seq === 'number') {
    if (!Number.isSafeInteger(seq) || seq < 0) return false
    splitHi = Math.floor(seq / TWO_32)
    splitLo = seq >>> 0
    return true
  }
  if (typeof seq !== 'bigint' || seq < 0n || seq > 0xffffffffffffffffn) return false
  splitHi = Number(seq >> 32n)
  splitLo = Number(seq & 0xffffffffn)
  return true
}
