/**
 * The native fast path (src/core/device/native/fastpath.c) as the data path uses it: a table
 * of sessions the addon carries between the TUN device and a datagram socket without waking
 * JavaScript, for transports whose sessions declare a FastCodec. DataPath keeps the table in
 * step with its peers; whatever the table cannot carry reaches DataPath's JavaScript as before.
 *
 * AGENT_FAST_PATH=off in the environment turns it off (everything through JavaScript), to
 * compare the two or to rule the native path out when chasing a problem; AGENT_TUN_OFFLOAD=off
 * keeps it but writes every packet to the TUN on its own (no TCP coalescing).
 */
import type {DatagramSocket} from '../carrier/datagram-types.js'
import type {TunDevice} from '../tun/device.js'
import type {TunQueue} from '../tun/linux.js'
import type {FastCodec} from '../transport/contract.js'
import type {NativeStream} from '../carrier/native-stream.js'
import {loadAgentNative} from '../native/addon.js'
import type {PeerStats} from './peer.js'

type Handle = {readonly __brand: 'agent_fast'}

interface NativeFast {
  create(role: number, mtu: number): Handle
  attach(handle: Handle, tun: object, socket: object | null): void
  set(handle: Handle, address: number, codec: number, key: number, endpointAddr: number, endpointPort: number): void
  setEsp(handle: Handle, address: number, endpointAddr: number, endpointPort: number, codec: FastCodec): void
  setStream(handle: Handle, address: number, stream: object): void
  remove(handle: Handle, address: number): void
  take(handle: Handle, address: number, out: Float64Array): boolean
  stats(handle: Handle): FastPathStats
  close(handle: Handle): void
  addWorker(handle: Handle, tunQueue: object, socket: object, onError: (err: Error) => void): void
}

/** What the fast path carried: in all, or on one lane. */
export interface FastPathCounters {
  /** Packets the fast path encapsulated and sent, and decapsulated and wrote to the TUN. */
  txPackets: number
  rxPackets: number
  /** Datagrams the kernel refused on send (send buffer full, no route...). */
  sendDrops: number
  /** Packets the kernel refused on TUN write (queue full). */
  tunWriteDrops: number
  /** Runs of TCP segments written to the TUN as one GSO packet, and the segments in them. */
  tunGsoPackets: number
  tunGsoSegments: number
}

/** One lane's: the main thread's (index 0) or a worker thread's. */
export interface LaneStats extends FastPathCounters {
  /** Worker lanes: packets passed to the main thread (keepalives, ESP, anything unusual). */
  handedOff: number
  /** ... and dropped because the main thread was too far behind to take them. */
  handoffDrops: number
}

export interface FastPathStats extends FastPathCounters {
  /** Sessions in the native table. */
  sessions: number
  /** Per lane: the main thread first, then each worker thread. */
  workers: LaneStats[]
}

const CODEC = {identity: 0, gre: 1} as const

export function fastPathDisabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.AGENT_FAST_PATH === 'off' || env.AGENT_FAST_PATH === '0'
}

/**
 * Whether the TUN device should carry a virtio_net_hdr, so the fast path can write runs of TCP
 * segments as one GSO packet. AGENT_TUN_OFFLOAD=off turns that alone off.
 */
export function tunOffload(env: NodeJS.ProcessEnv = process.env): boolean {
  return !fastPathDisabled(env) && env.AGENT_TUN_OFFLOAD !== 'off' && env.AGENT_TUN_OFFLOAD !== '0'
}

export class FastPath {
  private readonly counters = new Float64Array(7)

  private constructor(
    private readonly native: NativeFast,
    private readonly handle: Handle,
  ) {}

  /**
   * A fast path over `tun` and `socket`, or null when either is not our addon's (a test double)
   * or the operator turned it off.
   */
  static open(role: 'node' | 'client', mtu: number, tun: TunDevice, socket: DatagramSocket | null): FastPath | null {
    if (fastPathDisabled()) return null
    const t = tun.nativeHandle?.()
    const s = socket === null ? null : socket.nativeHandle?.()
    if (t === undefined || s === undefined) return null
    const native = loadAgentNative().fast as NativeFast
    const handle = native.create(role === 'node' ? 0 : 1, mtu)
    native.attach(handle, t, s)
    return new FastPath(native, handle)
  }

  /** Carries the session at tunnel `address` natively, to and from endpoint addr:port (0: not yet). */
  set(address: number, codec: FastCodec, addr: number, port: number): void {
    if (codec.kind === 'esp-gcm-in-gre') this.native.setEsp(this.handle, address, addr, port, codec)
    else this.native.set(this.handle, address, CODEC[codec.kind], codec.kind === 'gre' ? codec.key : 0, addr, port)
  }

  /** Carries the tls session at tunnel `address` on its native stream. */
  setStream(address: number, stream: NativeStream): void {
    this.native.setStream(this.handle, address, stream.handle)
  }

  /** Folds what the fast path counted for `address` since the last call into `stats`. */
  take(address: number, stats: PeerStats): void {
    const c = this.counters
    if (!this.native.take(this.handle, address, c)) return
    stats.txPackets += c[0]
    stats.txBytes += c[1]
    stats.rxPackets += c[2]
    stats.rxBytes += c[3]
    if (c[4] > stats.lastSeen) stats.lastSeen = c[4]
    if (c[5] > 0) stats.drop('authentication', c[5])
    if (c[6] > 0) stats.drop('endpoint', c[6])
  }

  remove(address: number): void {
    this.native.remove(this.handle, address)
  }

  /**
   * A worker thread (node only) on its own TUN queue and UDP socket (of the main socket's
   * SO_REUSEPORT group), carrying identity and gre sessions' common packets; what it does not
   * carry it hands to the main thread. `onError`: it stopped on an error that will not go away.
   * The main TUN device and socket must have started.
   */
  addWorker(queue: TunQueue, socket: DatagramSocket, onError: (err: Error) => void): void {
    const q = queue.nativeHandle()
    const s = socket.nativeHandle?.()
    if (q === undefined || s === undefined) throw new Error('a worker needs an open TUN queue and socket of the addon')
    this.native.addWorker(this.handle, q, s, onError)
  }

  stats(): FastPathStats {
    return this.native.stats(this.handle)
  }

  /** Detaches from the TUN device and the socket; their batches all go to JavaScript again. */
  close(): void {
    this.native.close(this.handle)
  }
}
