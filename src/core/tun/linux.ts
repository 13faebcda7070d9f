/**
 * Linux TUN backend on our own N-API addon (src/core/tun/native/tun.c, the `tun` part of
 * build/Release/agent_native.node). The fd is polled on the main loop, never read on the
 * threadpool, so a wakeup costs one JS call per batch and process.exit() never waits on a read.
 *
 * Ring layout: one Buffer of batchSize slots of slotSize bytes. Packet i starts at
 * i * slotSize + TUN_HEADROOM and is ring.lengths[i] bytes long; the TUN_HEADROOM bytes in front
 * of it are free for a transport to write its header in place.
 */
import {checkInt, closeAndReport, codeError} from '../native/load.js'
import {loadAgentNative} from '../native/addon.js'
import type {PacketRing, TunDevice, TunOptions} from './device.js'

/** Bytes reserved in each ring slot before its packet, for an encapsulation header. */
export const TUN_HEADROOM = 64
/** Bytes reserved after a packet of MTU size, for a trailer (ESP: padding, pad length, next header, ICV). */
export const TUN_TAILROOM = 64
/** Packets per wakeup when TunOptions.batchSize is not given. */
export const DEFAULT_BATCH_SIZE = 64
const MAX_BATCH_SIZE = 4096
/** Slots are sized to a multiple of this, so every packet starts cache-line aligned. */
const SLOT_ALIGN = 64
const MIN_MTU = 68
const MAX_MTU = 65535
/** IFNAMSIZ - 1: the kernel's limit on interface names, in bytes. */
const MAX_NAME_BYTES = 15

export interface LinuxTunOptions extends TunOptions {
  /** IFF_MULTI_QUEUE: several descriptors (one per worker) may open the same name. */
  multiQueue?: boolean
  /**
   * IFF_VNET_HDR: lets the native fast path write a run of TCP segments as one GSO packet
   * (src/core/device/native/coalesce.c). Transparent to everything else: reads strip the
   * header, writes add an empty one.
   */
  vnetHdr?: boolean
  /**
   * Called when reading fails for good (e.g. the interface was deleted); the device is closed
   * first. Without it the error is thrown as an uncaught exception, so it cannot go unnoticed.
   */
  onError?: (err: Error) => void
}

/** One more queue of a multi-queue device, read and written by a worker thread of the fast path. */
export interface TunQueue {
  /** The addon's handle while open, for FastPath.addWorker. */
  nativeHandle(): object | undefined
  close(): void
}

export interface LinuxTunDevice extends TunDevice {
  /** The ring start() delivers into, allocated once at open. */
  readonly ring: PacketRing
  /**
   * Another queue of this device (opened with multiQueue): the kernel spreads the packets it
   * sends into the device over the queues by flow. Closed with the device or on its own.
   */
  openQueue(): TunQueue
  /**
   * Writes packets buf[offsets[i] .. offsets[i] + lengths[i]) for i < count in one native call.
   * Returns how many the kernel accepted; the rest were dropped (see write).
   */
  writeBatch(buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number): number
}

/** Opaque handle made by the addon. */
type NativeHandle = {readonly __brand: 'agent_tun'}

interface NativeTun {
  open(name: string, multiQueue: boolean, vnetHdr: boolean): NativeHandle
  start(
    handle: NativeHandle,
    ring: Buffer,
    lengths: Uint32Array,
    slotSize: number,
    headroom: number,
    slots: number,
    onBatch: (count: number) => void,
    onError: (err: Error) => void,
  ): void
  write(handle: NativeHandle, buf: Uint8Array, offset: number, length: number): boolean
  writeBatch(handle: NativeHandle, buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number): number
  close(handle: NativeHandle): void
}

/** Loaded on first open, so importing this module never fails on a machine without the build. */
const loadNative = (): NativeTun => loadAgentNative().tun as NativeTun

/** Bytes per ring slot for a given MTU: the headroom, then MTU plus tailroom rounded up to SLOT_ALIGN. */
export function slotSizeFor(mtu: number): number {
  return TUN_HEADROOM + Math.ceil((mtu + TUN_TAILROOM) / SLOT_ALIGN) * SLOT_ALIGN
}

/**
 * Throws unless the kernel would create an interface with exactly this name. '%' is refused
 * because the kernel would treat it as a pattern and pick the name itself.
 */
export function validateTunName(name: string): void {
  const bytes = Buffer.byteLength(name)
  if (bytes === 0 || bytes > MAX_NAME_BYTES) {
    throw codeError(
      `invalid TUN device name "${name}": it is ${bytes} bytes, must be 1 to ${MAX_NAME_BYTES}`,
      'ERR_INVALID_ARG_VALUE',
    )
  }
  if (name === '.' || name === '..' || /[/:%\s\0]/.test(name)) {
    throw codeError(
      `invalid TUN device name "${name}": no '/', ':', '%', whitespace, "." or ".." allowed`,
      'ERR_INVALID_ARG_VALUE',
    )
  }
}

/** Opens (creating it if needed) the TUN interface `opts.name`; the caller configures it with ip. */
export function openTun(opts: LinuxTunOptions): LinuxTunDevice {
  validateTunName(opts.name)
  const batchSize = opts.batchSize ?? DEFAULT_BATCH_SIZE
  checkInt('TUN batchSize', batchSize, 1, MAX_BATCH_SIZE)
  checkInt('TUN mtu', opts.mtu, MIN_MTU, MAX_MTU)

  const native = loadNative()
  const handle = native.open(opts.name, opts.multiQueue ?? false, opts.vnetHdr ?? false)
  const slotSize = slotSizeFor(opts.mtu)
  const ring: PacketRing = {
    buf: Buffer.alloc(batchSize * slotSize),
    slotSize,
    headroom: TUN_HEADROOM,
    tailroom: slotSize - TUN_HEADROOM - opts.mtu,
    lengths: new Uint32Array(batchSize),
  }
  return new LinuxTun(opts.name, native, handle, ring, opts.onError, opts.multiQueue ?? false, opts.vnetHdr ?? false)
}

class LinuxTun implements LinuxTunDevice {
  #handle: NativeHandle | undefined
  #started = false
  readonly #queues = new Set<TunQueue>()

  constructor(
    readonly name: string,
    private readonly native: NativeTun,
    handle: NativeHandle,
    readonly ring: PacketRing,
    private readonly onError: ((err: Error) => void) | undefined,
    private readonly multiQueue: boolean,
    private readonly vnetHdr: boolean,
  ) {
    this.#handle = handle
  }

  openQueue(): TunQueue {
    if (this.#handle === undefined) throw codeError(`TUN device ${this.name} is closed`, 'ERR_AGENT_TUN_CLOSED')
    if (!this.multiQueue) throw codeError(`TUN device ${this.name} was not opened with multiQueue`, 'ERR_AGENT_TUN_QUEUE')
    const native = this.native
    let handle: NativeHandle | undefined = native.open(this.name, true, this.vnetHdr)
    const queue: TunQueue = {
      nativeHandle: () => handle,
      close: () => {
        if (handle !== undefined) native.close(handle)
        handle = undefined
        this.#queues.delete(queue)
      },
    }
    this.#queues.add(queue)
    return queue
  }

  start(onBatch: (count: number, ring: PacketRing) => void): void {
    const handle = this.#handle
    if (handle === undefined) throw codeError(`TUN device ${this.name} is closed`, 'ERR_AGENT_TUN_CLOSED')
    if (this.#started) throw codeError(`TUN device ${this.name} is already started`, 'ERR_AGENT_TUN_STARTED')
    const ring = this.ring
    this.native.start(
      handle,
      ring.buf,
      ring.lengths,
      ring.slotSize,
      ring.headroom,
      ring.lengths.length,
      (count) => onBatch(count, ring),
      (err) => this.#fail(err),
    )
    this.#started = true
  }

  write(buf: Uint8Array, offset: number, length: number): boolean {
    const handle = this.#handle
    return handle === undefined ? false : this.native.write(handle, buf, offset, length)
  }

  writeBatch(buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number): number {
    const handle = this.#handle
    return handle === undefined ? 0 : this.native.writeBatch(handle, buf, offsets, lengths, count)
  }

  /** The addon's handle while open, for the fast path (src/core/device/fast-path.ts). */
  nativeHandle(): object | undefined {
    return this.#handle
  }

  close(): void {
    const handle = this.#handle
    if (handle === undefined) return
    for (const q of [...this.#queues]) q.close()
    this.#handle = undefined
    this.native.close(handle)
  }

  #fail(err: Error): void {
    closeAndReport(this, this.onError, err)
  }
}

