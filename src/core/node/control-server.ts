/**
 * The node's control port: a TLS 1.3 listener that asks every client for a certificate of the
 * fleet CA, and hands each finished handshake on with the identity its certificate gives.
 * Whether that identity is admitted is the roster's business, not this listener's: a refused
 * client still gets a connection, so that it can be told why instead of seeing a reset.
 */
import {createServer as createTlsServer, type Server as TlsServer, type TLSSocket} from 'node:tls'
import type {Credentials} from '../pki/index.js'
import {tlsServerOptions} from '../pki/index.js'
import {serialKey} from '../pki/crl.js'
import {describeTlsFailure} from '../pki/tls-failure.js'
import type {Logger} from '../log.js'
import type {ClientIdentity} from './roster.js'

/** A TLS handshake must complete this soon (Node's default is 120 s: a slowloris gift). */
const HANDSHAKE_TIMEOUT_MS = 5_000
/**
 * Connections allowed beyond two per admissible client (handshakes, reconnects, strangers).
 * A tls session in native records holds its own descriptor, no longer counted by the server
 * once Node's socket is freed: one more per client, so base + 3 per client descriptors at most.
 */
const MAX_CONNECTIONS_BASE = 64

/** A finished handshake: the identity its certificate proves, or why it proves none. */
export type Handshake = {ok: true; identity: ClientIdentity} | {ok: false; reason: string}

export class ControlServer {
  private server: TlsServer | null = null

  constructor(
    private readonly address: string,
    private readonly port: number,
    private readonly log: Logger,
    private readonly onHandshake: (socket: TLSSocket, result: Handshake) => void,
  ) {}

  get endpoint(): string {
    return `${this.address}:${this.port}`
  }

  /**
   * Starts listening. `clients` is how many clients may be connected at once (the roster's
   * size, or the pool's when it admits anyone): it bounds the connections held open.
   */
  async listen(credentials: Credentials, clients: number): Promise<void> {
    // Certificates are checked right after the handshake (see identify), so a refused client
    // is told why instead of seeing a bare connection reset.
    const server = createTlsServer({...tlsServerOptions(credentials, false), handshakeTimeout: HANDSHAKE_TIMEOUT_MS})
    this.server = server
    this.setCapacity(clients)
    server.on('secureConnection', (socket) => this.onHandshake(socket, identify(socket)))
    server.on('tlsClientError', (err, socket) => {
      this.log.warn(`refused TLS handshake from ${socket.remoteAddress}:${socket.remotePort}: ${err.message}`)
    })
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) =>
        reject(new Error(`cannot listen on ${this.endpoint}: ${e.code === 'EADDRINUSE' ? 'address already in use' : e.message}`)),
      )
      server.listen(this.port, this.address, () => resolve())
    })
    server.on('error', (e) => this.log.error(`control server: ${e.message}`))
  }

  /**
   * Connections still in the handshake count too: bounded, so nobody can exhaust descriptors
   * (which iptables-restore needs) by opening connections and saying nothing.
   */
  setCapacity(clients: number): void {
    if (this.server !== null) this.server.maxConnections = MAX_CONNECTIONS_BASE + 2 * clients
  }

  close(): void {
    this.server?.close()
  }
}

/** The identity a finished handshake proves, from the verified peer certificate. */
export function identify(socket: TLSSocket): Handshake {
  if (!socket.authorized) return {ok: false, reason: `certificate not accepted: ${describeTlsFailure(socket.authorizationError)}`}
  const cert = socket.getPeerCertificate()
  const name = cert?.subject?.CN
  if (typeof name !== 'string' || name === '') return {ok: false, reason: 'certificate has no common name'}
  return {ok: true, identity: {name, serial: serialKey(cert.serialNumber), fingerprint: `sha256:${cert.fingerprint256}`}}
}
