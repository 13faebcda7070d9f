/**
 * The transport contract: the one interface every transport plugin implements.
 *
 * Division of labour (see docs/architecture.md):
 * - The core owns the TUN device, routes, firewall rules, the peer table, the control channel,
 *   the sockets (the "carrier"), keepalive timers and endpoint learning.
 * - A transport owns only the bytes: how an inner IP packet becomes a carrier payload for one
 *   peer session and back, what that costs in overhead, which session a datagram claims, and
 *   the parameters a session needs (a GRE key, SPIs...), which the node hands to the client over
 *   the authenticated control channel.
 *
 * Plugins import only types from here: at run time the core passes what a plugin needs as
 * arguments, so a plugin tarball has no dependency to fetch.
 */

import type {GreCodec} from '../codecs/gre/index.js'

/** How the core carries a transport's payloads between client and node. */
export type CarrierKind =
  /** In DATA frames of the control channel's TLS connection (TCP). */
  | 'stream'
  /** As the payload of UDP datagrams on a socket the core owns (crosses NAT). */
  | 'udp'
  /** As the payload of raw IP packets with `ipProtocol` (no NAT in between). */
  | 'ip'

export interface CarrierSpec {
  kind: CarrierKind
  /** udp: the node's listening port. */
  port?: number
  /** ip: the IP protocol number (47 for GRE, 4 for IPIP). */
  ipProtocol?: number
  /**
   * ip: the payload is an IPv4 packet whose TOS and DF the outer header copies, with a fresh
   * TTL (RFC 2003 3.1, IP-in-IP). Otherwise the outer header always carries DF.
   */
  copyDfFromInner?: boolean
  /**
   * The FastCodec kind its sessions will declare with these options (none: they declare none).
   * Lets a node decide before any session exists whether worker threads can carry them: they
   * carry identity and gre; ESP's state is shared with JavaScript on the main thread. Omitted,
   * the node runs one thread, which is always right.
   */
  fastCodec?: FastCodec['kind']
}

/** Plugin-specific options from the config file (`transports.<name>`), already validated. */
export type TransportOptions = Readonly<Record<string, unknown>>

/** Serialisable session parameters the node sends to the client in its welcome message. */
export type SessionParams = Readonly<Record<string, string | number | boolean>>

/** A span inside a buffer, filled in by encap/decap so the hot path allocates nothing. */
export interface Span {
  offset: number
  length: number
}

/**
 * Why a payload was not turned into an inner packet; the core counts each reason per peer.
 * String literals, not an enum, so plugins need no runtime import from the core.
 */
export type Drop = 'truncated' | 'malformed' | 'unknown-session' | 'authentication' | 'replay' | 'unsupported'
export const DROP_REASONS: readonly Drop[] = ['truncated', 'malformed', 'unknown-session', 'authentication', 'replay', 'unsupported']

/** What the core tells a transport about the session it is opening. */
export interface SessionContext {
  readonly role: 'node' | 'client'
  /** The client's name (its certificate's common name). */
  readonly peerName: string
  /** The client's tunnel address, as assigned by the node. */
  readonly tunnelAddress: string
  /** The node's tunnel address (the other end of the tunnel, seen from the client). */
  readonly nodeAddress: string
  /** The transport's options from the config (the node's: a client follows the node's params). */
  readonly options: TransportOptions
  /** The tunnel MTU: the largest inner packet a decapsulated payload may hold. */
  readonly mtu: number
  /**
   * Keying material bound to this control-channel connection (TLS 1.3 exporter, RFC 8446 7.5):
   * both ends derive the same bytes for the same label and context, and nobody else can. The
   * context tells rekey epochs apart. The core prefixes the label with the transport's name, so
   * two transports never share keys. Use a different label per direction: the same label gives
   * both ends the same key, and two senders counting nonces from 1 under one AES-GCM key reuse
   * nonces. Epochs derived this way share the TLS session's secret: rekeying limits how much
   * one key protects, it does not add forward secrecy.
   */
  exportKey(label: string, length: number, context?: Buffer): Buffer
  /**
   * Node: a random 32-bit id unique among this node's live sessions (GRE keys, SPIs). The
   * session's `id` is bound to it when the session opens; ids it allocates later are bound
   * with bindId and released when the session ends.
   */
  allocateId(): number
  /**
   * Node: datagrams carrying this id (from allocateId) belong to this session too, from now on:
   * an inbound SPI of a new SA during a make-before-break rekey.
   */
  bindId(id: number): void
  /** Node: datagrams carrying this id no longer belong to this session (the old SA is gone). */
  unbindId(id: number): void
  /**
   * Send the other end's session a transport message over the authenticated control channel
   * (a rekey, an acknowledgement); it arrives in that session's onControl. Small, flat values.
   */
  sendControl(message: SessionParams): void
  /** The session's `fastPath` changed (a rekey): the core reads it again. */
  fastPathChanged(): void
}

/**
 * How the core's native fast path may carry a session's common packets without calling
 * encap/decap (src/core/device/fast-path.ts): plain data the core implements once in C.
 * A session without one, or whose packets are unusual (a keepalive, a GRE header with flags),
 * is carried by encap/decap as always, so both must agree byte for byte.
 */
export type FastCodec =
  /**
   * The carrier payload is the inner packet itself: ipip; and tls, whose stream carrier the
   * core then moves to native records (src/core/control/native-records.ts).
   */
  | {readonly kind: 'identity'}
  /** An 8-byte GRE header with only the key (RFC 2890): flags 0x2000, protocol 0x0800. */
  | {readonly kind: 'gre'; readonly key: number}
  /**
   * ESP tunnel mode (RFC 4303) with AES-256-GCM (RFC 4106) and extended sequence numbers, the
   * outer IPv4 header between the tunnel addresses, in that GRE header keyed with the
   * receiver's SPI: ipsec-over-gre's wire format (docs/esp-wire.md). The state arrays are the
   * session's own, shared, not copies: the core seals from the same counter and checks the same
   * replay window as the session's encap and decap do.
   */
  | {
      readonly kind: 'esp-gcm-in-gre'
      /** Sealing; null until the other end's SPI is known. */
      readonly outbound: (FastEspSa & {
        /** [high half, low half] of the last sequence number used. */
        readonly counter: Uint32Array
        /** The outer IPv4 source and destination (uint32). */
        readonly src: number
        readonly dst: number
      }) | null
      /** Opening: the current SA and, during a rekey, the previous ones (at most 4). */
      readonly inbound: readonly (FastEspSa & {
        /**
         * The RFC 6479 window: [top high half, top low half], then a ring of 2 * blocks 32-bit
         * words, blocks the smallest power of two >= ceil(windowSize / 64) + 1.
         */
        readonly window: Uint32Array
        readonly windowSize: number
      })[]
    }

/** One ESP security association, as the fast path needs it. */
export interface FastEspSa {
  readonly spi: number
  /** RFC 4106 8.1 key material: the 32-byte AES-256 key, then the 4-byte salt. */
  readonly keyMaterial: Uint8Array
}

/** One peer's session: stateful encap/decap in place, no allocation per packet. */
export interface Session {
  /** Identifier a datagram carries so the node can find this session (GRE key, SPI), if any; bound when the session opens. */
  readonly id?: number
  /** Bytes the transport writes before the inner packet; the core leaves this much room. */
  readonly headroom: number
  /** Optional: lets the core carry common packets natively, byte for byte as encap/decap would. */
  readonly fastPath?: FastCodec
  /** Bytes the transport may append after the inner packet (ESP trailer and ICV). */
  readonly tailroom: number
  /**
   * Encapsulate buf[offset, offset+length) in place: write the header into the headroom before
   * it and any trailer after it, then set `out` to the carrier payload. False drops the packet.
   */
  encap(buf: Buffer, offset: number, length: number, out: Span): boolean
  /** Decapsulate a carrier payload (possibly in place); on success (null) `out` is the inner packet. */
  decap(buf: Buffer, offset: number, length: number, out: Span): Drop | null
  /**
   * Optional: decapsulate as decap does, but move no state (no sequence or replay window). The
   * core calls it instead of decap for a payload from an endpoint the session has not proven,
   * of which it accepts only an authenticated keepalive: without it a stranger's packet could
   * move state that no MAC protects (a GRE sequence number). A session whose state moves only
   * for packets that authenticate (ESP's replay window) needs none.
   */
  peek?(buf: Buffer, offset: number, length: number, out: Span): Drop | null
  /** A transport message from the other end's session (see SessionContext.sendControl). */
  onControl?(message: SessionParams): void
  /** Called about once a second with Date.now(): time-driven work such as a rekey. */
  tick?(now: number): void
  /** Forget keys and state. */
  close(): void
}

/** A node-side session also carries what the client must be told to open its end. */
export interface NodeSession extends Session {
  readonly params: SessionParams
}

/** How the transport behaves across NATs; the core's keepalive and endpoint logic reads this. */
export interface NatTraversal {
  /** Seconds of idleness after which the client sends a keepalive over the carrier. */
  keepaliveSeconds: number
}

export interface Transport {
  readonly name: string
  readonly description: string
  /** Which carrier this transport uses with these options. */
  carrier(options: TransportOptions): CarrierSpec
  /** Bytes added to every inner packet by the transport itself (excluding the carrier's headers). */
  overhead(options: TransportOptions): number
  readonly nat: NatTraversal
  /** Node side: a client has authenticated; create its session. */
  openNodeSession(ctx: SessionContext): NodeSession
  /** Client side: the node welcomed us with `params`; create our end. */
  openClientSession(ctx: SessionContext, params: SessionParams): Session
  /**
   * Node side, datagram carriers: the session id a payload claims (GRE key, SPI) without
   * decapsulating it, or undefined when the transport has no id on the wire.
   */
  sessionIdOf?(buf: Buffer, offset: number, length: number): number | undefined
  /**
   * Node side, transports with no session id on the wire (IPIP): where the inner packet lies
   * in a payload, without a session. The core finds sessions of such transports by the
   * sender's endpoint; for a payload from an unknown endpoint it reads the inner source to
   * find the one session it might belong to, and accepts through it nothing but an
   * authenticated keepalive (which then moves the session there). False: not a payload.
   */
  innerOf?(buf: Buffer, offset: number, length: number, out: Span): boolean
}

/** What the core passes to a plugin's factory. Grows only by adding members. */
export interface CoreApi {
  readonly contractVersion: 1
  /** GRE (RFC 2784/2890) header codec and sequence tracking, shared by gre and ipsec-over-gre. */
  readonly gre: GreCodec
}

/**
 * The oclif hook a transport plugin declares in its package.json:
 *   "oclif": { "hooks": { "agent:transport": "./dist/index.js" } }
 * Its default export receives the core API and returns the transport.
 */
export interface TransportHookOptions {
  core: CoreApi
}

export const CONTRACT_VERSION = 1
