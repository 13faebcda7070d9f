/**
 * The TUN side of the data path, kept small so another OS backend (wintun) can implement it.
 *
 * Packets arrive in batches: one wakeup of the event loop hands every packet the kernel had
 * queued (up to the ring's size) to the handler in a single call, so the per-packet cost is
 * a few array reads, not a JS callback or an allocation.
 */
export interface PacketRing {
  /**
   * One buffer of `slots` slots of `slotSize` bytes; packet i starts at i * slotSize + headroom,
   * so a transport can write its header into the headroom in front of it without copying.
   */
  readonly buf: Buffer
  readonly slotSize: number
  /** Free bytes reserved in each slot before its packet. */
  readonly headroom: number
  /**
   * Bytes a transport may write after a packet of up to the MTU (an ESP trailer and ICV).
   * A packet longer than slotSize - headroom - tailroom (an MTU raised behind our back) has
   * no room after it and is dropped before encapsulation.
   */
  readonly tailroom: number
  /** Length of packet i for i < count of the current batch. */
  readonly lengths: Uint32Array
}

export interface TunDevice {
  /** The interface name the kernel gave (equal to the requested one on Linux). */
  readonly name: string
  /**
   * Start reading. `onBatch(count)` runs on the main thread once per readable wakeup, with
   * packets 0..count-1 in `ring`; they are valid only until the handler returns.
   */
  start(onBatch: (count: number, ring: PacketRing) => void): void
  /** Write one IP packet to the kernel. Never blocks; returns false when the kernel dropped it. */
  write(buf: Uint8Array, offset: number, length: number): boolean
  /** The native handle, when the device is one of our addon's (the fast path attaches to it). */
  nativeHandle?(): object | undefined
  /** Stop reading and close the descriptor. Idempotent, never blocks. */
  close(): void
}

export interface TunOptions {
  /** Requested interface name, at most 15 bytes. */
  name: string
  /** Packets handed over per wakeup at most. */
  batchSize?: number
  /** Largest packet the ring accepts (the interface MTU). */
  mtu: number
}
