/**
 * Linux carrier sockets on our own N-API addon (src/core/carrier/native/net.c, built by
 * node-gyp into the `net` part of build/Release/agent_native.node): UDP and raw IPv4, read with recvmmsg from a
 * uv_poll_t on the main loop into a ring allocated here once, written with sendto/sendmmsg.
 *
 * Ring layout: one Buffer of batchSize slots of slotSize bytes; datagram i's payload starts at
 * i * slotSize + headroom and is ring.lengths[i] bytes long. lengths, addrs and ports are views
 * on one ArrayBuffer the addon fills in the same pass: lengths at byte 0, addrs at 4 * slots,
 * ports at 8 * slots (10 bytes per slot).
 *
 * Every socket sets IP_PMTUDISC_DO (outer packets carry DF and are never fragmented; too large
 * a datagram fails with EMSGSIZE, counted) and IP_RECVERR (ICMP errors are counted instead of
 * silently ignored); net.c explains both.
 */
import {checkInt, closeAndReport, codeError} from '../native/load.js'
import {loadAgentNative} from '../native/addon.js'
import {formatIpv4, parseIpv4} from '../net/ipv4.js'
import type {
  DatagramOptions,
  DatagramRecvDrops,
  DatagramRing,
  DatagramSocket,
  RawIpOptions,
  UdpOptions,
} from './datagram-types.js'

export type {DatagramOptions, DatagramRecvDrops, DatagramRing, DatagramSocket, RawIpOptions, UdpOptions}

/** Datagrams per wakeup and per sendmmsg when batchSize is not given (wireguard-go's batch). */
export const DEFAULT_BATCH_SIZE = 128
/** UIO_MAXIOV: the most messages one recvmmsg/sendmmsg call takes. */
export const MAX_BATCH_SIZE = 1024
/** Socket buffers requested when not given (wireguard-go's); the kernel doubles it. */
export const DEFAULT_SOCKET_BUFFER_BYTES = 7 << 20
const MAX_SOCKET_BUFFER_BYTES = 1 << 30
const MAX_HEADROOM = 1024
/** The largest UDP payload (65535 - 20 - 8) and raw IPv4 payload (65535 - 20). */
const MAX_UDP_PAYLOAD = 65507
const MAX_RAW_PAYLOAD = 65515
/** Slots are sized to a multiple of this, so every payload starts cache-line aligned (headroom 0 or 64...). */
const SLOT_ALIGN = 64

/**
 * Which socket of a steered SO_REUSEPORT group of n (0: the first opened) gets the datagrams
 * from addr:port: what the kernel computes with the program steer() installs (net.c).
 */
export function laneFor(addr: number, port: number, n: number): number {
  return ((addr ^ port) >>> 0) % n
}

/** Bytes per ring slot: the headroom plus maxPayload rounded up to SLOT_ALIGN. */
export function datagramSlotSize(headroom: number, maxPayload: number): number {
  return headroom + Math.ceil(maxPayload / SLOT_ALIGN) * SLOT_ALIGN
}

/** Opaque handle made by the addon. */
type NativeHandle = {readonly __brand: 'agent_net'}

interface NativeInfo {
  address: number
  port: number
  recvBufferBytes: number
  sendBufferBytes: number
}

interface NativeStats {
  sendErrors: Record<string, number>
  icmpErrors: Record<string, number>
  truncated: number
  fragments: number
  malformed: number
  /** -1 once the socket is closed. */
  kernelDrops: number
}

interface NativeNet {
  openUdp(addr: number, port: number, batch: number, rcvbuf: number, sndbuf: number, reusePort: number): NativeHandle
  steer(handle: NativeHandle, n: number): void
  openRaw(protocol: number, addr: number, batch: number, rcvbuf: number, sndbuf: number, writeHeader: number): NativeHandle
  info(handle: NativeHandle): NativeInfo
  start(
    handle: NativeHandle,
    ring: Buffer,
    meta: ArrayBuffer,
    slotSize: number,
    headroom: number,
    maxPayload: number,
    slots: number,
    onBatch: (count: number) => void,
    onError: (err: Error) => void,
  ): void
  send(handle: NativeHandle, buf: Uint8Array, offset: number, length: number, addr: number, port: number): boolean
  sendBatch(
    handle: NativeHandle,
    buf: Uint8Array,
    offsets: Uint32Array,
    lengths: Uint32Array,
    addrs: Uint32Array,
    ports: Uint16Array | Uint32Array,
    count: number,
  ): number
  stats(handle: NativeHandle): NativeStats
  close(handle: NativeHandle): void
}

/** Loaded on first open, so importing this module never fails on a machine without the build. */
const loadNative = (): NativeNet => loadAgentNative().net as NativeNet

/** Opens a UDP socket bound to opts.address:opts.port (default 0.0.0.0, ephemeral). */
export function openUdp(opts: UdpOptions): DatagramSocket {
  const port = opts.port ?? 0
  checkInt('UDP socket port', port, 0, 65535)
  const c = common('UDP', opts, MAX_UDP_PAYLOAD)
  const native = loadNative()
  const handle = native.openUdp(c.address, port, c.batchSize, c.recvBufferBytes, c.sendBufferBytes, opts.reusePort === true ? 1 : 0)
  return new NativeDatagramSocket(native, handle, undefined, makeRing(c), opts.onError)
}

/**
 * Opens a raw IPv4 socket for opts.protocol (needs root or CAP_NET_RAW). It receives every
 * packet of that protocol addressed to this host (to opts.address only, when given), with the
 * IPv4 header stripped; on send the kernel writes the header (DF set), from opts.address or the
 * route's source address, unless opts.copyDfFromInner asks us to (RFC 2003's TOS and DF).
 */
export function openRawIp(opts: RawIpOptions): DatagramSocket {
  checkInt('raw IP socket protocol', opts.protocol, 1, 254)
  const c = common('raw IP', opts, MAX_RAW_PAYLOAD)
  const native = loadNative()
  const handle = native.openRaw(opts.protocol, c.address, c.batchSize, c.recvBufferBytes, c.sendBufferBytes, opts.copyDfFromInner === true ? 1 : 0)
  return new NativeDatagramSocket(native, handle, opts.protocol, makeRing(c), opts.onError)
}

interface CommonOptions {
  address: number
  batchSize: number
  maxPayload: number
  headroom: number
  recvBufferBytes: number
  sendBufferBytes: number
}

function common(kind: string, opts: DatagramOptions, maxPayload: number): CommonOptions {
  const text = opts.address ?? '0.0.0.0'
  const address = parseIpv4(text)
  if (address === undefined) {
    throw codeError(`${kind} socket address must be an IPv4 address, got "${text}"`, 'ERR_INVALID_ARG_VALUE')
  }
  const c: CommonOptions = {
    address,
    batchSize: opts.batchSize ?? DEFAULT_BATCH_SIZE,
    maxPayload: opts.maxPayload,
    headroom: opts.headroom ?? 0,
    recvBufferBytes: opts.recvBufferBytes ?? DEFAULT_SOCKET_BUFFER_BYTES,
    sendBufferBytes: opts.sendBufferBytes ?? DEFAULT_SOCKET_BUFFER_BYTES,
  }
  checkInt(`${kind} socket batchSize`, c.batchSize, 1, MAX_BATCH_SIZE)
  checkInt(`${kind} socket maxPayload`, c.maxPayload, 1, maxPayload)
  checkInt(`${kind} socket headroom`, c.headroom, 0, MAX_HEADROOM)
  checkInt(`${kind} socket recvBufferBytes`, c.recvBufferBytes, 0, MAX_SOCKET_BUFFER_BYTES)
  checkInt(`${kind} socket sendBufferBytes`, c.sendBufferBytes, 0, MAX_SOCKET_BUFFER_BYTES)
  return c
}

function makeRing(c: CommonOptions): DatagramRing {
  const slots = c.batchSize
  const meta = new ArrayBuffer(slots * 10)
  return {
    buf: Buffer.alloc(slots * datagramSlotSize(c.headroom, c.maxPayload)),
    slotSize: datagramSlotSize(c.headroom, c.maxPayload),
    headroom: c.headroom,
    maxPayload: c.maxPayload,
    lengths: new Uint32Array(meta, 0, slots),
    addrs: new Uint32Array(meta, slots * 4, slots),
    ports: new Uint16Array(meta, slots * 8, slots),
  }
}

class NativeDatagramSocket implements DatagramSocket {
  readonly localAddress: string
  readonly localPort: number
  readonly recvBufferBytes: number
  readonly sendBufferBytes: number
  /** "UDP socket 0.0.0.0:4754", "raw IP socket for protocol 47": for messages. */
  readonly #label: string
  /** Kept after close so the counters stay readable (the addon frees it with this object). */
  readonly #handle: NativeHandle
  #closed = false
  #started = false
  #kernelDrops = 0

  constructor(
    private readonly native: NativeNet,
    handle: NativeHandle,
    /** The raw socket's IP protocol; undefined for UDP. */
    protocol: number | undefined,
    readonly ring: DatagramRing,
    private readonly onError: ((err: Error) => void) | undefined,
  ) {
    this.#handle = handle
    let info: NativeInfo
    try {
      info = native.info(handle)
    } catch (err) {
      native.close(handle)
      throw err
    }
    this.localAddress = formatIpv4(info.address)
    this.localPort = info.port
    this.recvBufferBytes = info.recvBufferBytes
    this.sendBufferBytes = info.sendBufferBytes
    this.#label =
      protocol === undefined
        ? `UDP socket ${this.localAddress}:${this.localPort}`
        : `raw IP socket for protocol ${protocol}`
  }

  start(onBatch: (count: number, ring: DatagramRing) => void): void {
    if (this.#closed) throw codeError(`${this.#label} is closed`, 'ERR_AGENT_NET_CLOSED')
    if (this.#started) throw codeError(`${this.#label} is already started`, 'ERR_AGENT_NET_STARTED')
    const ring = this.ring
    this.native.start(
      this.#handle,
      ring.buf,
      ring.lengths.buffer as ArrayBuffer,
      ring.slotSize,
      ring.headroom,
      ring.maxPayload,
      ring.lengths.length,
      (count) => onBatch(count, ring),
      (err) => this.#fail(err),
    )
    this.#started = true
  }

  steer(n: number): void {
    if (this.#closed) throw codeError(`${this.#label} is closed`, 'ERR_AGENT_NET_CLOSED')
    this.native.steer(this.#handle, n)
  }

  send(buf: Uint8Array, offset: number, length: number, addr: number, port: number): boolean {
    return this.#closed ? false : this.native.send(this.#handle, buf, offset, length, addr, port)
  }

  sendBatch(
    buf: Uint8Array,
    offsets: Uint32Array,
    lengths: Uint32Array,
    addrs: Uint32Array,
    ports: Uint16Array | Uint32Array,
    count: number,
  ): number {
    if (this.#closed) return 0
    return this.native.sendBatch(this.#handle, buf, offsets, lengths, addrs, ports, count)
  }

  get sendErrors(): Readonly<Record<string, number>> {
    return this.native.stats(this.#handle).sendErrors
  }

  get icmpErrors(): Readonly<Record<string, number>> {
    return this.native.stats(this.#handle).icmpErrors
  }

  get recvDrops(): Readonly<DatagramRecvDrops> {
    const s = this.native.stats(this.#handle)
    if (s.kernelDrops >= 0) this.#kernelDrops = s.kernelDrops
    return {truncated: s.truncated, fragments: s.fragments, malformed: s.malformed, kernel: this.#kernelDrops}
  }

  /** The addon's handle while open, for the fast path (src/core/device/fast-path.ts). */
  nativeHandle(): object | undefined {
    return this.#closed ? undefined : this.#handle
  }

  close(): void {
    if (this.#closed) return
    this.#closed = true
    void this.recvDrops // the kernel's drop count goes with the socket: keep the last one
    this.native.close(this.#handle)
  }

  #fail(err: Error): void {
    closeAndReport(this, this.onError, err)
  }
}

