/**
 * The node's control port: a TLS 1.3 listener that asks every client for a certificate of the
 * fleet CA, and hands each finished handshake on with the identity its certificate gives.
 * Whether that identity is admitted is the roster's business, not this listener's: a refused
 * client still gets a connection, so that it can be told why instead of seeing a reset.
 *
 * Connections pass the gate (connection-gate.ts) before any TLS work: a plain TCP listener
 * accepts them, the gate keeps or closes each, and only those kept are handed to the TLS
 * server. They stay the gate's until the handshake proves an identity the node accepts.
 */
import {createServer as createTcpServer, isIPv4, type Server as TcpServer, type Socket} from 'node:net'
import {ipv4ToNumber} from '../net/ipv4.js'
import {PROBE_BYTES} from '../probe/probe-packet.js'
import {createServer as createTlsServer, type Server as TlsServer, type TLSSocket} from 'node:tls'
import type {Credentials} from '../pki/index.js'
import {tlsServerOptions} from '../pki/index.js'
import {serialKey} from '../pki/crl.js'
import {describeTlsFailure} from '../pki/tls-failure.js'
import type {LogLimiter} from '../log-limit.js'
import type {ClientIdentity} from './roster.js'
import {ConnectionGate, DEFAULT_GATE_LIMITS, type GateCounters, type GateLimits} from './connection-gate.js'

/** A finished handshake: the identity its certificate proves, or why it proves none. */
export type Handshake = {ok: true; identity: ClientIdentity} | {ok: false; reason: string}

/**
 * Told of each finished handshake; returns true when the connection is now an admitted
 * client's session (the gate lets go of it), false when it is being refused.
 */
export type HandshakeHandler = (socket: TLSSocket, result: Handshake) => boolean

const TLS_HANDSHAKE = 22

/** The log event of each thing the gate does to a stranger's connection (docs/logging.md). */
const GATE_EVENTS = {'source-full': 'gate.source_full', evicted: 'gate.evicted', expired: 'gate.expired'} as const

export class ControlServer {
  /** Probes over TCP (probe-tickets.ts): the reply, or null. Null: every connection is TLS. */
  answerProbe: ((buf: Buffer, offset: number, length: number, source: number) => Buffer | null) | null = null
  private tcp: TcpServer | null = null
  private tls: TlsServer | null = null
  private readonly gate: ConnectionGate
  private readonly deadlineMs: number

  constructor(
    private readonly address: string,
    private readonly port: number,
    /** Lines a stranger can cause go through here. */
    private readonly limited: LogLimiter,
    private readonly onHandshake: HandshakeHandler,
    limits: GateLimits = DEFAULT_GATE_LIMITS,
  ) {
    this.deadlineMs = limits.deadlineMs
    this.gate = new ConnectionGate(limits, (why, source) => {
      const text = {
        'source-full': `${source} holds ${limits.perSource} unauthenticated control connections: closing its new ones`,
        evicted: `control port full (${limits.total} unauthenticated connections): closed the oldest, from ${source}`,
        expired: `closed a control connection from ${source}: not authenticated within ${limits.deadlineMs / 1000} s`,
      }[why]
      this.limited.warn(`control ${why}`, text, {event: GATE_EVENTS[why], source})
    })
  }

  get endpoint(): string {
    return `${this.address}:${this.port}`
  }

  /** What the gate has done since start, and how many connections it holds now. */
  get gateStatus(): GateCounters & {pending: number} {
    return {...this.gate.counters, pending: this.gate.size}
  }

  async listen(credentials: Credentials): Promise<void> {
    // Certificates are checked right after the handshake (see identify), so a refused client
    // is told why instead of seeing a bare connection reset. Node's handshakeTimeout is an
    // inactivity timer (a trickled ClientHello keeps it alive); the gate's deadline is absolute.
    const tls = createTlsServer({...tlsServerOptions(credentials, false), handshakeTimeout: this.deadlineMs})
    this.tls = tls
    tls.on('secureConnection', (socket: TLSSocket) => {
      const key = connectionKey(socket.remoteAddress, socket.remotePort)
      if (this.onHandshake(socket, identify(socket))) this.gate.authenticated(key)
    })
    tls.on('tlsClientError', (err, socket) => {
      const endpoint = `${socket.remoteAddress}:${socket.remotePort}`
      this.limited.warn('control handshake', `refused TLS handshake from ${endpoint}: ${err.message}`, {event: 'handshake.failed', endpoint, reason: err.message.trim()})
    })
    const tcp = createTcpServer((socket: Socket) => this.onConnection(socket))
    this.tcp = tcp
    await new Promise<void>((resolve, reject) => {
      tcp.once('error', (e: NodeJS.ErrnoException) =>
        reject(new Error(`cannot listen on ${this.endpoint}: ${e.code === 'EADDRINUSE' ? 'address already in use' : e.message}`)),
      )
      tcp.listen(this.port, this.address, () => resolve())
    })
    tcp.on('error', (e) => this.limited.warn('control server', `control server: ${e.message}`, {event: 'control.error', reason: e.message}))
  }

  private onConnection(socket: Socket): void {
    const source = sourceOf(socket.remoteAddress)
    const key = connectionKey(socket.remoteAddress, socket.remotePort)
    // A reset before or during the handshake is the peer's business; never an uncaught error.
    socket.on('error', () => {})
    if (this.tls === null || !this.gate.enter(key, source, socket)) return
    socket.once('close', () => this.gate.closed(key))
    if (this.answerProbe === null) {
      this.tls.emit('connection', socket)
      return
    }
    // A TLS connection starts with a handshake record (22); a probe with its magic. The first
    // bytes read are put back for TLS, which takes what its socket already buffered.
    socket.once('data', (chunk: Buffer) => {
      socket.pause()
      if (chunk[0] === TLS_HANDSHAKE) {
        socket.unshift(chunk)
        this.tls?.emit('connection', socket)
      } else {
        this.onProbe(socket, chunk, source)
      }
    })
  }

  /**
   * A probe over TCP (tls transports, and datagram transports over raw IP): one request in the
   * first bytes, one reply, and the connection ends. Anything else is closed unanswered.
   */
  private onProbe(socket: Socket, first: Buffer, source: string): void {
    let got = first
    const settle = () => {
      if (got.length < PROBE_BYTES) return false
      socket.removeListener('data', more)
      const reply = got.length === PROBE_BYTES && isIPv4(source) ? this.answerProbe?.(got, 0, got.length, ipv4ToNumber(source)) : null
      if (reply) socket.end(reply)
      else socket.destroy()
      return true
    }
    const more = (chunk: Buffer) => {
      got = Buffer.concat([got, chunk])
      settle()
    }
    if (settle()) return
    socket.on('data', more)
    socket.resume()
  }

  close(): void {
    this.tcp?.close()
    this.tls?.close()
    this.gate.clear()
  }
}

/** A connection's name while it lives: its remote address and port. */
function connectionKey(address: string | undefined, port: number | undefined): string {
  return `${address ?? '?'}:${port ?? 0}`
}

/** The source a connection counts against: its address, IPv4-mapped IPv6 as plain IPv4. */
function sourceOf(address: string | undefined): string {
  if (address === undefined) return '?'
  return address.startsWith('::ffff:') ? address.slice(7) : address
}

/** The identity a finished handshake proves, from the verified peer certificate. */
export function identify(socket: TLSSocket): Handshake {
  if (!socket.authorized) return {ok: false, reason: `certificate not accepted: ${describeTlsFailure(socket.authorizationError)}`}
  const cert = socket.getPeerCertificate()
  const name = cert?.subject?.CN
  if (typeof name !== 'string' || name === '') return {ok: false, reason: 'certificate has no common name'}
  return {ok: true, identity: {name, serial: serialKey(cert.serialNumber), fingerprint: `sha256:${cert.fingerprint256}`}}
}
