/**
 * The node's live client sessions: from an admitted handshake to a welcomed peer on the data
 * path, and back down when the connection ends, the client falls silent, or the roster no
 * longer admits it. One session per client name; a new connection of the same client replaces
 * the old one only once the new session is in place.
 *
 * What it is told from outside: which tunnel address a client gets (the address pool), and
 * whether the node is closing. What it tells: which address to admit and withdraw (admission,
 * which updates the firewall and resolves once it has). It knows nothing of the roster's
 * sources or the firewall.
 */
import {randomInt} from 'node:crypto'
import type {TLSSocket} from 'node:tls'
import type {NodeSession, Transport} from '../transport/contract.js'
import type {Logger} from '../log.js'
import type {LogLimiter} from '../log-limit.js'
import {ControlConnection} from '../control/connection.js'
import type {ControlMessage, FleetPeer, Hello} from '../control/messages.js'
import {MAX_FLEET_PEERS, PROTOCOL_VERSION} from '../control/messages.js'
import type {DataPath} from '../device/datapath.js'
import {Peer} from '../device/peer.js'
import {STREAM_BATCH_BYTES, STREAM_FRAME_SLACK, StreamLink} from '../carrier/stream-link.js'
import {NativeStreamLink} from '../carrier/native-stream.js'
import {RECORDS, recordsPossible} from '../control/native-records.js'
import {ipv4ToNumber} from '../net/ipv4.js'
import {sessionContext} from '../transport/session-context.js'
import {checkSessionRoom} from '../transport/room.js'
import {keepaliveKeys} from '../nat/keepalive.js'
import type {NodeDatagrams} from './node-datagrams.js'
import type {ClientIdentity} from './roster.js'
import type {Handshake} from './control-server.js'
import type {ProbeTickets} from '../probe/probe-tickets.js'
import {probeKey} from '../probe/probe-packet.js'
import {TokenBucket} from '../nat/keepalive-budget.js'

/** A client must say hello this soon after the TLS handshake. */
const HELLO_TIMEOUT_MS = 10_000
/**
 * A refused client is given this long to read why before its connection is closed. An agent
 * closes its end as soon as it has read the refusal; this bounds the others. Half a second
 * keeps a cut (revoked, removed) client's connection gone within a second of the cut.
 */
const REFUSAL_LINGER_MS = 500
/** `probe` messages a session answers per second, and at once. */
const SESSION_PROBES_PER_SECOND = 10
const SESSION_PROBES_BURST = 20

export interface ClientSession {
  name: string
  identity: ClientIdentity
  conn: ControlConnection
  peer: Peer | null
  /** Told to go away: whatever else it says is ignored until the connection closes. */
  refused: boolean
  /** Session ids the transport allocated (released when the session ends) and bound. */
  ids: {owned: Set<number>; bound: Set<number>}
  /** The welcome is on its way: only from then on may the session tick or talk to the client. */
  welcomed: boolean
}

export interface SessionsOptions {
  transport: Transport
  /** The transport's options from the config. */
  options: Record<string, unknown>
  mtu: number
  /** The tunnel subnet's prefix length, and the node's own tunnel address (the clients' gateway). */
  prefix: number
  gateway: string
  datapath: DataPath
  /** The datagram carrier, or null for a stream transport (tls). */
  datagrams: NodeDatagrams | null
  log: Logger
  /** For lines a stranger can cause (refusals). */
  limited: LogLimiter
  /** Why the roster does not admit this client now, or null when it does. */
  check(identity: ClientIdentity): string | null
  /** The client's tunnel address, or undefined when the pool has none left. */
  addressFor(name: string): string | undefined
  /** A client's session is on the data path: resolves once the firewall admits its address. */
  admit(address: string, name: string): Promise<void>
  /** A client's session ended: resolves once the firewall has withdrawn its address. */
  withdraw(address: string, name: string): Promise<void>
  /** The node is stopping: no new sessions, no firewall changes. */
  closing(): boolean
  /** A fleet's node: the other nodes a client may go to (for its welcome); undefined: no fleet. */
  fleetPeers?(): FleetPeer[]
  /** Probe tickets for clients weighing this node (failover); undefined: none given. */
  tickets?: ProbeTickets
}

export class NodeSessions {
  private readonly sessions = new Map<string, ClientSession>()
  /** Every control connection, authenticated or not, so closeAll() can close them all. */
  private readonly connections = new Set<ControlConnection>()
  private readonly sessionIds = new Set<number>()

  constructor(private readonly o: SessionsOptions) {}

  /** Live sessions, by client name. */
  get live(): ReadonlyMap<string, ClientSession> {
    return this.sessions
  }

  /** Whether the client has a session on the data path now. */
  isConnected(name: string): boolean {
    return this.sessions.get(name)?.peer != null
  }

  /**
   * A finished handshake. A client whose certificate proves no identity, or whom the roster
   * does not admit, is told why and let go. True when it is now an admitted client's session.
   */
  accept(socket: TLSSocket, handshake: Handshake): boolean {
    const identity = handshake.ok ? handshake.identity : null
    const refusal = handshake.ok ? this.o.check(handshake.identity) : handshake.reason
    const remote = `${socket.remoteAddress}:${socket.remotePort}`
    const conn = new ControlConnection(socket, this.o.mtu + STREAM_FRAME_SLACK, {
      onMessage: () => {},
      onData: () => {},
      onClose: () => this.connections.delete(conn),
    })
    this.connections.add(conn)
    if (this.o.closing()) {
      conn.close('node stopping')
      return false
    }
    if (identity === null || refusal !== null) {
      this.o.limited.warn('refused client', `refused client from ${remote}: ${refusal}; no forwarding`, {
        event: 'client.refused',
        ...(identity === null ? {} : {peer: identity.name}),
        endpoint: remote,
        reason: refusal ?? 'no identity',
      })
      conn.send({type: 'refused', reason: refusal ?? 'no identity'})
      socket.end()
      setTimeout(() => conn.close('refused'), REFUSAL_LINGER_MS).unref()
      return false
    }
    const name = identity.name
    const client: ClientSession = {
      name,
      identity,
      conn,
      peer: null,
      refused: false,
      ids: {owned: new Set(), bound: new Set()},
      welcomed: false,
    }
    const probes = new TokenBucket(SESSION_PROBES_PER_SECOND, SESSION_PROBES_BURST)
    const helloTimer = setTimeout(() => conn.close('no hello within 10 s'), HELLO_TIMEOUT_MS)
    helloTimer.unref()
    conn.handlers = {
      onMessage: (m: ControlMessage) => {
        if (client.refused) return
        if (m.type === 'hello' && client.peer === null && m.probe === true) {
          clearTimeout(helloTimer)
          this.grantProbes(client, m)
        } else if (m.type === 'hello' && client.peer === null) {
          clearTimeout(helloTimer)
          this.welcome(client, m, remote)
        } else if (m.type === 'probe' && client.peer !== null && client.welcomed) {
          // A client probes a few times a second; past its budget a probe gets no answer.
          if (probes.take(Date.now())) conn.send({type: 'probed', n: m.n, game: this.o.tickets?.gameOf(name) ?? []})
        } else if (m.type === 'transport' && client.peer !== null && client.welcomed) {
          try {
            client.peer.session.onControl?.(m.body)
          } catch (e) {
            // A transport bug costs this session, never the node.
            conn.close(`transport ${this.o.transport.name} failed on a control message: ${(e as Error).message}`)
          }
        } else {
          conn.close(`unexpected ${m.type} message`)
        }
      },
      onData: (buf, offset, length) => {
        if (client.peer !== null) this.o.datapath.receive(client.peer, buf, offset, length)
      },
      onClose: (reason) => {
        clearTimeout(helloTimer)
        this.connections.delete(conn)
        this.end(client, reason)
      },
    }
    return true
  }

  private fleetPart(): {fleet?: FleetPeer[]} {
    const peers = this.o.fleetPeers?.()
    return peers === undefined ? {} : {fleet: peers.slice(0, MAX_FLEET_PEERS)}
  }

  /**
   * A probe-only hello: a client weighing this node as a place to go gets a ticket for
   * probes, and no session, address or admission. The connection then ends.
   */
  private grantProbes(client: ClientSession, hello: Hello): void {
    const refusal = this.helloRefusal(hello) ?? this.o.check(client.identity) ?? (this.o.tickets === undefined ? 'this node takes no probes' : null)
    if (refusal !== null) return this.refuse(client, refusal)
    const grant = this.o.tickets!.grant(client.name, probeKey(client.conn.socket), hello.routes, this.stillAdmitted(client))
    if (typeof grant === 'string') return this.refuse(client, grant)
    client.refused = true
    client.conn.send({type: 'probing', grant})
    client.conn.end()
    setTimeout(() => client.conn.close('probe ticket given'), REFUSAL_LINGER_MS).unref()
  }

  private stillAdmitted(client: ClientSession): () => boolean {
    return () => this.o.check(client.identity) === null
  }

  private helloRefusal(hello: Hello): string | null {
    if (hello.version !== PROTOCOL_VERSION) return `protocol version ${hello.version} is not supported (node speaks ${PROTOCOL_VERSION})`
    if (hello.transport !== this.o.transport.name) return `this node serves transport "${this.o.transport.name}", not ${JSON.stringify(hello.transport)}`
    return null
  }

  private welcome(client: ClientSession, hello: Hello, remote: string): void {
    const {conn, name} = client
    const {transport, datapath, datagrams} = this.o
    const wrong = this.helloRefusal(hello)
    if (wrong !== null) return this.refuse(client, wrong)
    // The roster may have changed since the handshake (a revocation, a reload).
    const refusal = this.o.check(client.identity)
    if (refusal !== null) return this.refuse(client, refusal)
    const address = this.o.addressFor(name)
    if (address === undefined) return this.refuse(client, `the tunnel pool has no free address for "${name}"`)

    const ids = client.ids
    const ctx = sessionContext({
      role: 'node',
      transport: transport.name,
      peerName: name,
      tunnelAddress: address,
      nodeAddress: this.o.gateway,
      options: this.o.options,
      mtu: this.o.mtu,
      conn,
      ids: {
        allocate: () => {
          const id = this.allocateSessionId()
          ids.owned.add(id)
          return id
        },
        bind: (id) => {
          if (!ids.owned.has(id)) throw new Error(`session id ${id} was not allocated by this session`)
          ids.bound.add(id)
          if (client.peer !== null) datagrams?.bindId(id, client.peer)
        },
        unbind: (id) => {
          ids.bound.delete(id)
          if (client.peer !== null) datagrams?.unbindId(id, client.peer)
        },
      },
      fastPathChanged: () => {
        if (client.peer !== null) datapath.refreshFastPath(client.peer)
      },
    })
    // A session refused after it opened must give back what it took: its ids, its bindings.
    const discard = (s: NodeSession | null, peer: Peer | null, why: string) => {
      if (peer !== null) datagrams?.detach(peer)
      try {
        s?.close()
      } catch {
        // Closing a session we are throwing away: nothing more to do about it.
      }
      for (const id of ids.owned) this.sessionIds.delete(id)
      ids.owned.clear()
      ids.bound.clear()
      return this.refuse(client, why)
    }
    let session: NodeSession | null = null
    try {
      session = transport.openNodeSession(ctx)
      checkSessionRoom(transport.name, session)
    } catch (e) {
      return discard(session, null, `transport could not open a session: ${(e as Error).message}`)
    }
    const link = datagrams === null ? new StreamLink(conn.socket, remote, STREAM_BATCH_BYTES) : datagrams.newLink()
    const peer = new Peer(name, ipv4ToNumber(address), address, session, link)
    link.stats = peer.stats
    try {
      datagrams?.attach(peer, keepaliveKeys(conn.socket, 'node'))
      for (const id of ids.bound) datagrams?.bindId(id, peer)
    } catch (e) {
      return discard(session, peer, (e as Error).message)
    }
    // Only now that the new session is in place does the old one go (a client that restarted,
    // or whose old connection is half-open): a failure above leaves the old one working.
    const previous = this.sessions.get(name)
    if (previous !== undefined) previous.conn.close(`replaced by a new connection from ${remote}`)
    client.peer = peer
    this.sessions.set(name, client)
    datapath.addPeer(peer)
    const keepalive = Number(this.o.options.keepalive ?? transport.nat.keepaliveSeconds)
    // The client asked for native records and this end can: the welcome is then the last
    // thing said through Node's TLS (native-records.ts).
    // Only a session whose encap is the identity: the records carry frames as they are, and
    // Node's socket (which a transport's exportKey needs) is freed once they have the connection.
    // The probe key is the TLS session's: taken now, before native records free the socket.
    // A client that got a ticket a moment ago (just before a failover here) keeps that one.
    const granted = this.o.tickets?.grant(name, probeKey(conn.socket), hello.routes, this.stillAdmitted(client))
    const probe = typeof granted === 'string' ? undefined : granted
    const records =
      datagrams === null &&
      hello.records === RECORDS &&
      session.fastPath?.kind === 'identity' &&
      datapath.hasFastPath() &&
      recordsPossible(conn.socket, this.o.mtu + STREAM_FRAME_SLACK)
    this.o
      .admit(address, name)
      .then(() => {
        // Cut (roster change, replaced) while the firewall was being updated: say nothing more.
        if (conn.isClosed || client.peer !== peer) return
        conn.send({
          type: 'welcome',
          version: PROTOCOL_VERSION,
          transport: transport.name,
          address,
          prefix: this.o.prefix,
          gateway: this.o.gateway,
          mtu: this.o.mtu,
          keepalive,
          carrier: datagrams === null ? {kind: 'stream'} : datagrams.spec,
          params: session.params,
          ...(records ? {records: RECORDS} : {}),
          ...this.fleetPart(),
          ...(probe === undefined ? {} : {probe}),
        })
        if (records && !this.goNative(client, remote)) return
        conn.keepalive(keepalive, false)
        client.welcomed = true
        this.o.log.info(`client ${name} connected from ${remote} as ${address}`, {event: 'client.connected', peer: name, endpoint: remote, address})
      })
      .catch((e: Error) => {
        this.o.log.error(`could not admit ${name}: ${e.message}`, {event: 'client.admission_failed', peer: name, endpoint: remote, reason: e.message})
        conn.close('admission failed')
      })
  }

  /**
   * Moves a welcomed client's connection, and its peer's packets, to native records; false
   * (the connection closed, saying why) if it cannot: the welcome promised them.
   */
  private goNative(client: ClientSession, remote: string): boolean {
    const peer = client.peer
    try {
      if (peer === null) throw new Error('the session is gone')
      const link = new NativeStreamLink(client.conn.goNative('node'), remote)
      link.stats = peer.stats
      peer.link = link
      this.o.datapath.refreshFastPath(peer)
      return true
    } catch (e) {
      client.conn.close(`cannot move to native records: ${(e as Error).message}`)
      return false
    }
  }

  private refuse(client: ClientSession, reason: string): void {
    client.refused = true
    this.o.log.warn(`refused client ${client.name} from ${client.conn.remote}: ${reason}`, {event: 'client.refused', peer: client.name, endpoint: client.conn.remote, reason})
    client.conn.send({type: 'refused', reason})
    client.conn.end()
    setTimeout(() => client.conn.close('refused'), REFUSAL_LINGER_MS).unref()
  }

  /**
   * Ends a live session now; its peer leaves the data path at once and the firewall follows.
   * `refuse`: the client is told it is refused, and does not come back by itself (revoked,
   * removed); otherwise the connection just closes and the client reconnects (its address moved).
   */
  cut(name: string, reason: string, refuse: boolean): void {
    const client = this.sessions.get(name)
    if (client === undefined) return
    this.o.log.warn(`cutting client ${name} (${client.peer?.addressText ?? 'no address yet'}): ${reason}`, {
      event: 'session.cut',
      peer: name,
      endpoint: client.conn.remote,
      address: client.peer?.addressText ?? null,
      reason,
      refused: refuse,
    })
    this.end(client, reason)
    if (!refuse) return client.conn.close(reason)
    client.refused = true
    client.conn.send({type: 'refused', reason})
    client.conn.end()
    setTimeout(() => client.conn.close(reason), REFUSAL_LINGER_MS).unref()
  }

  private end(client: ClientSession, reason: string): void {
    const peer = client.peer
    if (peer === null) return
    client.peer = null
    const {datapath, datagrams} = this.o
    datapath.removePeer(peer)
    for (const id of client.ids.bound) datagrams?.unbindId(id, peer)
    datagrams?.detach(peer)
    peer.session.close()
    for (const id of client.ids.owned) this.sessionIds.delete(id)
    if (peer.session.id !== undefined) this.sessionIds.delete(peer.session.id)
    if (this.sessions.get(client.name) === client) this.sessions.delete(client.name)
    if (this.o.closing()) return
    this.o.log.info(`client ${client.name} (${peer.addressText}) disconnected: ${reason}`, {
      event: 'client.disconnected',
      peer: client.name,
      endpoint: client.conn.remote,
      address: peer.addressText,
      reason,
    })
    // Withdrawn even when a new session of the same client replaces this one (it closes this
    // one first, then admits its own address): admission folds the two into no change.
    this.o
      .withdraw(peer.addressText, client.name)
      .catch((e: Error) =>
        this.o.log.error(`could not withdraw ${peer.addressText} from the admitted set: ${e.message}`, {event: 'admission.failed', peer: client.name, address: peer.addressText, reason: e.message}),
      )
  }

  /**
   * Datagram sessions whose client fell silent (no data, no keepalive) for `idleSeconds` end,
   * and their admission with them. Stream sessions end with their connection.
   */
  expireSilent(idleSeconds: number): void {
    const limit = idleSeconds * 1000
    const now = Date.now()
    for (const s of this.sessions.values()) {
      const p = s.peer
      p?.stats.sync?.()
      if (p !== null && now - Math.max(p.stats.lastSeen, p.connectedAt) > limit) {
        s.conn.close(`no packets for ${idleSeconds} s`)
      }
    }
  }

  /** Time-driven transport work (rekeys); a session that throws loses its connection, not the node. */
  tick(): void {
    const now = Date.now()
    for (const s of this.sessions.values()) {
      const tick = s.peer?.session.tick
      if (tick === undefined || !s.welcomed) continue
      try {
        tick.call(s.peer!.session, now)
      } catch (e) {
        s.conn.close(`transport session failed: ${(e as Error).message}`)
      }
    }
  }

  closeAll(reason: string): void {
    for (const c of [...this.connections]) c.close(reason)
  }

  private allocateSessionId(): number {
    for (;;) {
      // 1-255 are reserved SPI values (RFC 4303 2.1), and a GRE key may become an SPI.
      const id = randomInt(256, 0xffffffff)
      if (!this.sessionIds.has(id)) {
        this.sessionIds.add(id)
        return id
      }
    }
  }
}
