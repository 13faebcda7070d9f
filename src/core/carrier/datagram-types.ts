/**
 * The carrier socket of the datagram transports (GRE-in-UDP, IPIP over UDP, ESP-in-GRE): one
 * UDP socket, or one raw IPv4 socket of protocol 47 (GRE) or 4 (IPIP), shared by every peer.
 * Shaped like the TUN device (../tun/device.ts): datagrams arrive in batches, one handler call
 * per readable wakeup with every datagram the kernel had queued (up to the ring's size), so
 * the per-datagram cost is a few array reads, not a JS callback, a Buffer or an rinfo object.
 */

export interface DatagramRing {
  /**
   * One buffer of `slots` slots of `slotSize` bytes; datagram i's payload starts at
   * i * slotSize + headroom. The headroom is never written by the socket, so a transport may
   * build a header in front of a payload in place; the slot's bytes after the payload (up to
   * the next slot) are free too, e.g. for a trailer.
   */
  readonly buf: Buffer
  readonly slotSize: number
  /** Free bytes reserved in each slot before its payload. */
  readonly headroom: number
  /** Largest payload accepted; larger datagrams are dropped and counted (recvDrops.truncated). */
  readonly maxPayload: number
  /** Payload length of datagram i (for raw IP: without the IPv4 header). */
  readonly lengths: Uint32Array
  /** Source IPv4 address of datagram i, as an unsigned 32-bit number (0xc6336402 is 198.51.100.2). */
  readonly addrs: Uint32Array
  /** Source UDP port of datagram i (0 for raw IP). */
  readonly ports: Uint16Array
}

/** What the receive side dropped, and why. */
export interface DatagramRecvDrops {
  /** Larger than maxPayload: the kernel could hand over only part of it. */
  readonly truncated: number
  /** Raw IP: a fragment (Linux reassembles before raw delivery, so this stays 0 in practice). */
  readonly fragments: number
  /** Raw IP: not a well-formed IPv4 header. */
  readonly malformed: number
  /**
   * The kernel's own count of datagrams it dropped before we read them: receive buffer full
   * (the node is not keeping up), for UDP also bad checksums. Kept from the last read after close.
   */
  readonly kernel: number
}

export interface DatagramSocket {
  /** The bound address ("0.0.0.0" when bound to all) and UDP port (0 for raw IP). */
  readonly localAddress: string
  readonly localPort: number
  /** The socket buffer sizes the kernel settled on (it doubles requests, for its bookkeeping). */
  readonly recvBufferBytes: number
  readonly sendBufferBytes: number
  /** The ring start() delivers into, allocated once at open. */
  readonly ring: DatagramRing
  /**
   * Start receiving. `onBatch(count)` runs on the main thread once per readable wakeup, with
   * datagrams 0..count-1 in `ring`; they are valid only until the handler returns.
   */
  start(onBatch: (count: number, ring: DatagramRing) => void): void
  /**
   * UDP with reusePort, once every socket of the group is bound: datagrams from one endpoint
   * all go to socket (source address ^ source port) % n of the group, in the order they were
   * opened, so one client's traffic stays on one worker.
   */
  steer?(n: number): void
  /**
   * One datagram buf[offset, offset + length) to addr:port (port ignored for raw IP). Never
   * blocks, never throws for the network's sake: false when the kernel dropped it (EAGAIN: the
   * send buffer is full; ENOBUFS; EMSGSIZE: larger than the path MTU, DF is always set;
   * EHOSTUNREACH/ENETUNREACH: no route; EPERM: a firewall), counted in sendErrors.
   */
  send(buf: Uint8Array, offset: number, length: number, addr: number, port: number): boolean
  /**
   * Datagrams buf[offsets[i], offsets[i] + lengths[i]) to addrs[i]:ports[i] for i < count, with
   * sendmmsg. Returns how many the kernel took; the others were dropped and counted as by send
   * (once the send buffer is full, all the rest count as EAGAIN).
   */
  sendBatch(
    buf: Uint8Array,
    offsets: Uint32Array,
    lengths: Uint32Array,
    addrs: Uint32Array,
    ports: Uint16Array | Uint32Array,
    count: number,
  ): number
  /** Datagrams send/sendBatch dropped, by errno name ({EAGAIN: 3}), for status output. */
  readonly sendErrors: Readonly<Record<string, number>>
  /**
   * ICMP errors the peers' side sent back about our datagrams, by the errno the kernel maps them
   * to: ECONNREFUSED (port unreachable: a client's NAT mapping or process is gone),
   * EHOSTUNREACH, ENETUNREACH, EMSGSIZE (fragmentation needed: the path MTU is smaller), ...
   * They do not drop anything themselves.
   */
  readonly icmpErrors: Readonly<Record<string, number>>
  readonly recvDrops: Readonly<DatagramRecvDrops>
  /** The native handle while open, when the socket is one of our addon's (for the fast path). */
  nativeHandle?(): object | undefined
  /** Stop receiving and close the socket. Idempotent, never blocks. */
  close(): void
}

export interface DatagramOptions {
  /** Local address to bind, dotted quad; default 0.0.0.0 (all). */
  address?: string
  /** Datagrams handed over per wakeup at most, and per sendmmsg call (1 to 1024). */
  batchSize?: number
  /** Largest datagram payload accepted (for raw IP: without the IPv4 header). */
  maxPayload: number
  /** Bytes kept free in front of each payload in the ring. */
  headroom?: number
  /** Requested SO_RCVBUF / SO_SNDBUF (forced past net.core.*mem_max when root); 0: system default. */
  recvBufferBytes?: number
  sendBufferBytes?: number
  /**
   * Called when receiving fails for good; the socket is closed first. Without it the error is
   * thrown as an uncaught exception, so it cannot go unnoticed.
   */
  onError?: (err: Error) => void
}

export interface UdpOptions extends DatagramOptions {
  /** Local UDP port; 0 (default) for an ephemeral one. */
  port?: number
  /**
   * SO_REUSEPORT: more sockets may bind the same address and port, one per worker of the
   * node's fast path (steer() says which one each client's datagrams reach).
   */
  reusePort?: boolean
}

export interface RawIpOptions extends DatagramOptions {
  /** IP protocol number: 47 GRE, 4 IPIP (1 to 254). */
  protocol: number
  /**
   * Write the outer IPv4 header ourselves (IP_HDRINCL): TOS and DF copied from the payload when
   * it is an IPv4 packet (RFC 2003 3.1), TTL 64. Default false: the kernel writes it, DF set.
   */
  copyDfFromInner?: boolean
}
