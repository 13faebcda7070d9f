import {describe, expect, it} from 'vitest'
import {REPLAY_DEFAULT_WINDOW, ReplayWindow} from '../../plugins/ipsec-over-gre/src/replay.js'

const TWO_32 = 2n ** 32n
const MAX64 = 2n ** 64n - 1n

/** Deterministic PRNG (mulberry32) so the random cases are the same on every run. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** The obvious model of RFC 4303 3.4.3: every number ever accepted, and the highest. */
class ModelWindow {
  private readonly seen = new Set<bigint>([0n])
  top = 0n
  constructor(readonly size: number) {}
  check(seq: bigint): boolean {
    if (seq > this.top) return true
    return this.top - seq < BigInt(this.size) && !this.seen.has(seq)
  }
  update(seq: bigint): void {
    this.seen.add(seq)
    if (seq > this.top) this.top = seq
  }
}

/** Feeds the same numbers to a ReplayWindow and the model: every answer must agree. */
function agreeWithModel(size: number, start: bigint, steps: number, next: (top: bigint, rnd: () => number) => bigint, seed: number): number {
  const w = new ReplayWindow(size)
  const m = new ModelWindow(size)
  if (start > 0n) {
    w.update(start)
    m.update(start)
  }
  const rnd = mulberry32(seed)
  let accepted = 0
  for (let i = 0; i < steps; i++) {
    const seq = next(m.top, rnd)
    if (seq < 0n || seq > MAX64) continue
    const expected = m.check(seq)
    const got = w.check(seq)
    if (got !== expected) throw new Error(`size ${size}: check(${seq}) = ${got}, model says ${expected} (top ${m.top})`)
    if (got) {
      expect(w.update(seq)).toBe(true)
      m.update(seq)
      accepted++
      expect(w.top).toBe(m.top)
    }
  }
  return accepted
}

describe('ReplayWindow: shape', () => {
  it('defaults to 2048 packets, in a power-of-two ring of 64-bit blocks with one spare', () => {
    const w = new ReplayWindow()
    expect(REPLAY_DEFAULT_WINDOW).toBe(2048)
    expect(w.size).toBe(2048)
    expect(w.blocks).toBe(64) // ceil(2048 / 64) + 1 = 33 -> 64
    expect(new ReplayWindow(1024).blocks).toBe(32) // 17 -> 32
    expect(new ReplayWindow(64).blocks).toBe(2)
    expect(new ReplayWindow(65).blocks).toBe(4)
    expect(new ReplayWindow(32).blocks).toBe(2)
  })

  it('refuses sizes it cannot keep', () => {
    for (const bad of [0, 31, -64, 1.5, Number.NaN, 2 ** 20 + 1]) expect(() => new ReplayWindow(bad)).toThrow(RangeError)
    expect(() => new ReplayWindow(2 ** 20)).not.toThrow()
  })
})

describe('ReplayWindow: RFC 4303 3.4.3 behaviour', () => {
  it('never accepts 0, accepts 1, then not 1 again', () => {
    const w = new ReplayWindow()
    expect(w.check(0)).toBe(false)
    expect(w.check(0n)).toBe(false)
    expect(w.check(1)).toBe(true)
    expect(w.check(1)).toBe(true) // check alone marks nothing
    expect(w.update(1)).toBe(true)
    expect(w.check(1)).toBe(false)
    expect(w.update(1)).toBe(false)
    expect(w.top).toBe(1n)
    expect(w.dropped).toBe(3)
  })

  it('accepts in-order packets once each', () => {
    const w = new ReplayWindow()
    for (let s = 1; s <= 10000; s++) {
      expect(w.check(s)).toBe(true)
      w.update(s)
      expect(w.check(s)).toBe(false)
    }
    expect(w.top).toBe(10000n)
  })

  it('accepts reordered packets inside the window once each, in any order', () => {
    const w = new ReplayWindow(1024)
    const order = Array.from({length: 1000}, (_, i) => i + 1)
    const rnd = mulberry32(7)
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(rnd() * (i + 1))
      ;[order[i], order[j]] = [order[j], order[i]]
    }
    for (const s of order) {
      expect(w.check(s)).toBe(true)
      w.update(s)
    }
    for (const s of order) expect(w.check(s)).toBe(false)
    expect(w.dropped).toBe(1000)
    expect(w.tooOld).toBe(0)
  })

  it('refuses what is below the window, and says so in tooOld', () => {
    const w = new ReplayWindow(2048)
    w.update(5000)
    expect(w.check(5000 - 2048)).toBe(false) // top - size: just outside
    expect(w.tooOld).toBe(1)
    expect(w.check(5000 - 2047)).toBe(true) // the window's left edge
    expect(w.check(1)).toBe(false)
    expect(w.tooOld).toBe(2)
    expect(w.update(1)).toBe(false) // update refuses too-old numbers as well
    expect(w.update(5000 - 2047)).toBe(true)
    expect(w.check(5000 - 2047)).toBe(false)
    expect(w.tooOld).toBe(2)
    expect(w.dropped).toBe(3)
  })

  it('slides across block boundaries, clearing exactly the recycled blocks', () => {
    const w = new ReplayWindow(64) // 2 blocks: the tightest ring
    for (const s of [63, 64, 65, 127, 128]) {
      expect(w.check(s)).toBe(true)
      w.update(s)
    }
    // top 128 (block 2, which reused block 0's slot): 65..128 is the window.
    expect(w.check(64)).toBe(false) // too old now
    expect(w.check(65)).toBe(false) // seen
    expect(w.check(66)).toBe(true) // in the window, never seen: its bit was cleared with the block
    expect(w.check(127)).toBe(false)
    expect(w.check(126)).toBe(true)
    expect(w.check(129)).toBe(true)
  })

  it('recycles a block only by clearing it: stale bits from earlier laps never count as seen', () => {
    const tight = new ReplayWindow(64) // 2 blocks
    tight.update(10) // bit 10 of ring slot 0
    tight.update(190) // block 2 reuses slot 0: window 127..190
    expect(tight.check(138)).toBe(true) // bit 10 of slot 0 again: cleared, not "seen"
    for (const jump of [1, 63, 64, 65, 1500, 2047, 2048, 4095, 4096, 4097, 10 ** 9]) {
      const w = new ReplayWindow(2048) // 64 blocks, 4096 bits: 1..20000 filled them ~5 times over
      for (let s = 1; s <= 20000; s++) w.update(s)
      const top = 20000 + jump
      w.update(top)
      expect(w.check(top)).toBe(false)
      for (let d = 1; d < 2048; d++) expect(w.check(top - d)).toBe(top - d > 20000)
      expect(w.check(top - 2048)).toBe(false)
    }
  })

  it('agrees with the obvious model on random traffic (several sizes, jumps, duplicates)', () => {
    for (const size of [32, 64, 100, 1024, 2048, 4000]) {
      let seed = size
      // Mostly near the top (reordering and duplicates), sometimes a jump, sometimes far behind.
      const accepted = agreeWithModel(
        size,
        0n,
        20000,
        (top, rnd) => {
          const r = rnd()
          if (r < 0.6) return top + BigInt(Math.floor(rnd() * 8))
          if (r < 0.9) return top - BigInt(Math.floor(rnd() * (size + 64)))
          if (r < 0.99) return top + BigInt(Math.floor(rnd() * 3 * size))
          return top + BigInt(Math.floor(rnd() * 100 * size))
        },
        seed++,
      )
      expect(accepted).toBeGreaterThan(1000)
    }
  })
})

describe('ReplayWindow: 64-bit sequence numbers (ESN)', () => {
  it('slides across 2^32 like anywhere else', () => {
    const w = new ReplayWindow(1024)
    const base = TWO_32 - 600n
    for (let s = base; s < TWO_32 + 600n; s++) {
      expect(w.check(s)).toBe(true)
      w.update(s)
      expect(w.check(s)).toBe(false)
    }
    expect(w.top).toBe(TWO_32 + 599n)
    expect(w.check(TWO_32 - 1n)).toBe(false) // seen, inside the window across the boundary
    expect(w.check(TWO_32 + 599n - 1024n)).toBe(false) // too old
    expect(w.tooOld).toBe(1)
    // The same low half one epoch later is a different number.
    expect(w.check(2n * TWO_32 - 1n)).toBe(true)
  })

  it('keeps numbers in other epochs apart (same low half, high half differs)', () => {
    const w = new ReplayWindow(2048)
    w.update(5n * TWO_32 + 10n)
    expect(w.check(4n * TWO_32 + 10n)).toBe(false) // an epoch behind: too old
    expect(w.check(6n * TWO_32 + 10n)).toBe(true)
    w.update(6n * TWO_32 + 10n)
    expect(w.check(6n * TWO_32 + 9n)).toBe(true) // window cleared by the jump
    expect(w.check(5n * TWO_32 + 10n)).toBe(false)
  })

  it('agrees with the model around 2^32, around 2^40 and up to 2^64 - 1', () => {
    for (const [start, seed] of [
      [TWO_32 - 3000n, 1],
      [2n ** 40n - 5000n, 2],
      [MAX64 - 5000n, 3],
    ] as const) {
      agreeWithModel(
        1024,
        start,
        12000,
        (top, rnd) => {
          const r = rnd()
          if (r < 0.7) return top + BigInt(Math.floor(rnd() * 4))
          return top - BigInt(Math.floor(rnd() * 1200))
        },
        seed,
      )
    }
    const w = new ReplayWindow()
    w.update(MAX64)
    expect(w.check(MAX64)).toBe(false)
    expect(w.check(MAX64 - 1n)).toBe(true)
  })

  it('infers the high half as RFC 4303 Appendix A.2.2 does', () => {
    const w = new ReplayWindow(1024) // W = 1024
    // Fresh window, Tl = 0 < W - 1 (case B), Th = 0: a low half in the upper W-1 numbers would be
    // from "before 0": -1, which the opener drops.
    expect(w.inferHigh(1)).toBe(0)
    expect(w.inferHigh(0xffffffff)).toBe(-1)
    expect(w.inferHigh(2 ** 32 - 1023)).toBe(-1)
    expect(w.inferHigh(2 ** 32 - 1024)).toBe(0)

    // Case A: Tl >= W - 1. Th = 7, Tl = 5000: window 3977..5000.
    w.update(7n * TWO_32 + 5000n)
    expect(w.inferHigh(5000 - 1023)).toBe(7) // left edge
    expect(w.inferHigh(5000)).toBe(7)
    expect(w.inferHigh(0xffffffff)).toBe(7) // ahead in the same epoch
    expect(w.inferHigh(5000 - 1024)).toBe(8) // below the window: the next epoch
    expect(w.inferHigh(0)).toBe(8)

    // Case B: the window spans the epoch boundary. Th = 9, Tl = 100: window is
    // 8:(2^32 - 923) .. 9:100.
    w.update(9n * TWO_32 + 100n)
    expect(w.inferHigh(100)).toBe(9)
    expect(w.inferHigh(50)).toBe(9)
    expect(w.inferHigh(2 ** 32 - 923)).toBe(8) // in the window, previous epoch
    expect(w.inferHigh(0xffffffff)).toBe(8)
    expect(w.inferHigh(2 ** 32 - 924)).toBe(9) // ahead (far) in the current epoch

    // At the very end: Th = 2^32 - 1 and a low half below the window would be epoch 2^32.
    w.update(MAX64 - 10n)
    expect(w.inferHigh(0xfffffff0)).toBe(0xffffffff)
    expect(w.inferHigh(5)).toBe(2 ** 32)
  })
})

describe('ReplayWindow: inputs', () => {
  it('takes numbers and bigints, and refuses what is not a 64-bit sequence number', () => {
    const w = new ReplayWindow()
    expect(w.check(2 ** 40)).toBe(true)
    expect(w.update(2 ** 40)).toBe(true)
    expect(w.check(2n ** 40n)).toBe(false)
    for (const bad of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, -1n, 2n ** 64n]) {
      expect(w.check(bad)).toBe(false)
      expect(w.update(bad)).toBe(false)
    }
    expect(w.top).toBe(2n ** 40n)
  })

  it('checkHL/updateHL are the halves of the same numbers', () => {
    const w = new ReplayWindow()
    expect(w.checkHL(1, 5)).toBe(true)
    expect(w.updateHL(1, 5)).toBe(true)
    expect(w.check(TWO_32 + 5n)).toBe(false)
    expect(w.checkHL(1, 4)).toBe(true)
    expect(w.checkHL(0, 0xffffffff)).toBe(true)
    expect(w.checkHL(0, 0xffffffff - 2048)).toBe(false)
  })

  it('reset forgets everything but keeps the counters', () => {
    const w = new ReplayWindow()
    w.update(100)
    expect(w.check(100)).toBe(false)
    w.reset()
    expect(w.top).toBe(0n)
    expect(w.check(100)).toBe(true)
    expect(w.check(0)).toBe(false)
    expect(w.dropped).toBe(2)
  })
})
