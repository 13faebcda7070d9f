/**
 * A seeded random generator for the fuzzer (sfc32): the same seed gives the same inputs in the
 * same order, so a run that found something can be replayed from the seed it printed.
 */
export class Rng {
  private a: number
  private b: number
  private c: number
  private d: number

  constructor(readonly seed: number) {
    this.a = 0x9e3779b9
    this.b = 0x243f6a88
    this.c = 0xb7e15162
    this.d = seed >>> 0
    for (let i = 0; i < 15; i++) this.u32()
  }

  /** A uniform 32-bit unsigned integer. */
  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0
    this.d = (this.d + 1) | 0
    this.a = this.b ^ (this.b >>> 9)
    this.b = (this.c + (this.c << 3)) | 0
    this.c = (this.c << 21) | (this.c >>> 11)
    this.c = (this.c + t) | 0
    return t >>> 0
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor((this.u32() / 0x100000000) * n)
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.u32() / 0x100000000 < p
  }

  pick<T>(list: readonly T[]): T {
    return list[this.int(list.length)]
  }

  /** Fills buf[start, end) with random bytes. */
  fill(buf: Buffer, start = 0, end = buf.length): void {
    let i = start
    for (; i + 4 <= end; i += 4) buf.writeUInt32BE(this.u32(), i)
    for (; i < end; i++) buf[i] = this.u32() & 0xff
  }

  /** A fresh child generator: a stream of its own, still fixed by the parent's seed. */
  fork(): Rng {
    return new Rng(this.u32())
  }
}
