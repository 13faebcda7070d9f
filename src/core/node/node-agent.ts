/**
 * The proxy node: one TUN device for every client, the control-channel server that
 * authenticates clients and hands them addresses and session parameters, the FORWARD and NAT
 * rules that admit exactly the connected authorized clients, and the data path between them.
 */
import {randomInt} from 'node:crypto'
import {availableParallelism} from 'node:os'
import {existsSync} from 'node:fs'
import {createServer as createTlsServer, type Server as TlsServer, type TLSSocket} from 'node:tls'
import type {Server} from 'node:net'
import type {ResolvedNodeConfig} from '../config/index.js'
import type {CarrierSpec, FastCodec, NodeSession, Transport} from '../transport/contract.js'
import type {Logger} from '../log.js'
import type {TunDevice} from '../tun/device.js'
import {openTun} from '../tun/index.js'
import {type Credentials, loadCredentials, tlsServerOptions} from '../pki/index.js'
import {ControlConnection} from '../control/connection.js'
import type {ControlMessage, Hello} from '../control/messages.js'
import {PROTOCOL_VERSION} from '../control/messages.js'
import {DataPath} from '../device/datapath.js'
import {fastPathDisabled, tunOffload} from '../device/fast-path.js'
import {Peer} from '../device/peer.js'
import {fastPathCounters, peerReport} from '../device/report.js'
import {STREAM_BATCH_BYTES, STREAM_FRAME_SLACK, StreamLink} from '../carrier/stream-link.js'
import {NativeStreamLink} from '../carrier/native-stream.js'
import {DatagramLink} from '../carrier/datagram-link.js'
import {RECORDS, recordsPossible} from '../control/native-records.js'
import {ipv4ToNumber, parseCidr} from '../net/ipv4.js'
import {NodeFirewall} from '../firewall/index.js'
import {configureInterface} from '../routes/index.js'
import {getSysctl, setSysctl} from '../sys/sysctl.js'
import {type AgentState, StateFile} from '../state/state-file.js'
import {finishTeardown, reclaimStale} from '../state/teardown.js'
import {startStatusServer} from '../status/server.js'
import type {PeerReport, StatusReport} from '../status/report.js'
import {authorize} from './authorize.js'
import {planAddresses} from './address-plan.js'
import {describeTlsFailure} from '../pki/tls-failure.js'
import {tunnelMtu} from '../transport/mtu.js'
import {SESSION_TICK_MS, sessionContext} from '../transport/session-context.js'
import {checkSessionRoom} from '../transport/room.js'
import {NodeDatagrams} from './node-datagrams.js'
import {keepaliveKeys} from '../nat/keepalive.js'

/** A TLS handshake must complete this soon (Node's default is 120 s: a slowloris gift). */
const HANDSHAKE_TIMEOUT_MS = 5_000
/**
 * Connections allowed beyond two per authorized client (handshakes, reconnects, strangers).
 * A tls session in native records holds its own descriptor, no longer counted by the server
 * once Node's socket is freed: one more per client, so base + 3 per client descriptors at most.
 */
const MAX_CONNECTIONS_BASE = 64
/** A client must say hello this soon after the TLS handshake. */
const HELLO_TIMEOUT_MS = 10_000
/** workers: "auto" runs one per core, up to this many. */
const MAX_AUTO_WORKERS = 8
/** The FastCodecs worker threads carry themselves (workers.c); the rest is the main thread's. */
const WORKER_CODECS: ReadonlySet<FastCodec['kind']> = new Set(['identity', 'gre'])
/** How often silent datagram sessions are looked for. */
const EXPIRY_CHECK_MS = 5_000

interface ClientSession {
  name: string
  conn: ControlConnection
  peer: Peer | null
  /** Told to go away: whatever else it says is ignored until the connection closes. */
  refused: boolean
  /** Session ids the transport allocated (released when the session ends) and bound. */
  ids: {owned: Set<number>; bound: Set<number>}
  /** The welcome is on its way: only from then on may the session tick or talk to the client. */
  welcomed: boolean
}

export class NodeAgent {
  private readonly stateFile: StateFile
  private readonly state: AgentState
  private readonly plan: Map<string, string>
  private readonly mtu: number
  /** The tunnel subnet's prefix length (the config is validated, so it parses). */
  private readonly prefix: number
  private readonly sessions = new Map<string, ClientSession>()
  private tun: TunDevice | null = null
  private datapath: DataPath | null = null
  private firewall: NodeFirewall | null = null
  private server: TlsServer | null = null
  private statusServer: Server | null = null
  private admission: Promise<void> = Promise.resolve()
  private pendingAdmission: Promise<void> | null = null
  /** The admitted list last applied, so an unchanged list costs nothing. */
  private admittedKey = ''
  /** Every control connection, authenticated or not, so stop() can close them all. */
  private readonly connections = new Set<ControlConnection>()
  private starting: Promise<void> | null = null
  private stopRequested = false
  private stopping: Promise<string[]> | null = null
  private tearingDown: Promise<string[]> | null = null
  private readonly sessionIds = new Set<number>()
  private datagrams: NodeDatagrams | null = null
  private expiry: NodeJS.Timeout | null = null
  /** Threads carrying packets (the main one and its workers). */
  private lanes = 1
  private ticker: NodeJS.Timeout | null = null

  /** Resolves when the node must end by itself (its TUN device failed), with why. */
  readonly ended: Promise<Error>
  private endWith!: (e: Error) => void

  constructor(
    private readonly config: ResolvedNodeConfig,
    private readonly transport: Transport,
    runDir: string,
    private readonly log: Logger,
  ) {
    this.ended = new Promise((resolve) => (this.endWith = resolve))
    this.stateFile = new StateFile(runDir, config.name)
    this.prefix = parseCidr(config.tunnel.subnet)!.prefix
    this.plan = planAddresses({
      nodeAddress: ipv4ToNumber(config.tunnel.address),
      pool: {start: ipv4ToNumber(config.tunnel.pool.start), end: ipv4ToNumber(config.tunnel.pool.end)},
      clients: config.clients,
    })
    this.mtu = config.tunnel.mtu ?? tunnelMtu(transport, this.transportOptions())
    this.state = {
      pid: process.pid,
      role: 'node',
      name: config.name,
      transport: transport.name,
      startedAt: new Date().toISOString(),
      interface: config.tunnel.interface,
      routes: [],
      firewall: config.name,
    }
  }

  /**
   * How many lanes (threads) carry packets: `workers` from the config ("auto": one per core, at
   * most MAX_AUTO_WORKERS), where the carrier allows more than one. Only a UDP socket can be
   * one per worker (SO_REUSEPORT); every raw IP socket would see every packet, and a tls
   * session lives on its own connection on the main thread.
   */
  private lanesFor(carrier: CarrierSpec): number {
    const wanted = this.config.workers === 'auto' ? Math.min(availableParallelism(), MAX_AUTO_WORKERS) : this.config.workers
    if (wanted <= 1) return 1
    const why =
      carrier.kind !== 'udp'
        ? `the ${carrier.kind === 'stream' ? 'tls' : 'bare IP'} carrier runs on one`
        : fastPathDisabled()
          ? 'workers are part of the native fast path, which AGENT_FAST_PATH=off turns off'
          : carrier.fastCodec === undefined || !WORKER_CODECS.has(carrier.fastCodec)
            ? `workers carry plain gre and ipip packets; ${
                carrier.fastCodec === 'esp-gcm-in-gre'
                  ? `${this.transport.name}'s ESP state lives on the main thread`
                  : `${this.transport.name} with these options is carried by JavaScript on the main thread`
              }`
            : undefined
    if (why === undefined) return wanted
    if (this.config.workers !== 'auto') this.log.warn(`workers: ${wanted} asked for, running 1: ${why}`)
    return 1
  }

  private transportOptions(): Record<string, unknown> {
    return ((this.config.transports as Record<string, unknown>)[this.transport.name] ?? {}) as Record<string, unknown>
  }

  /** Bring everything up, or, on any failure (or a stop meanwhile), undo what was done and throw. */
  start(): Promise<void> {
    this.starting ??= this.bringUp()
    return this.starting
  }

  private async bringUp(): Promise<void> {
    const carrier = this.transport.carrier(this.transportOptions())
    // Everything that can fail on bad input is read before the system is touched.
    const credentials = await loadCredentials(this.config.pki)
    this.checkNotStopped()
    await reclaimStale(this.stateFile, this.log)
    this.stateFile.write(this.state)
    try {
      this.checkNotStopped()
      const {interface: ifname, address, subnet} = this.config.tunnel
      const lanes = this.lanesFor(carrier)
      // The virtio header lets the fast path write runs of TCP segments as one packet; more
      // than one lane needs a queue of the device per worker.
      const tun = openTun({name: ifname, mtu: this.mtu, vnetHdr: tunOffload(), multiQueue: lanes > 1, onError: (e) => this.fail(new Error(`TUN device ${ifname} failed: ${e.message}`))})
      this.tun = tun
      await configureInterface(ifname, {address, prefix: this.prefix, mtu: this.mtu})
      this.checkNotStopped()

      this.state.ipForwardBefore = await getSysctl('net.ipv4.ip_forward')
      this.stateFile.write(this.state)
      await setSysctl('net.ipv4.ip_forward', '1')
      this.checkNotStopped()

      this.firewall = new NodeFirewall({
        instance: this.config.name,
        tunInterface: ifname,
        subnet,
        egressInterface: this.config.egress.interface,
        snat: this.config.egress.snat,
        admitted: [],
        deny: this.config.egress.deny,
      })
      await this.firewall.apply()
      this.checkNotStopped()
      // Not an error: the interface may come later (a PPP link, a VLAN); but say so, because
      // until it exists the MASQUERADE rule matches nothing and clients reach nowhere.
      if (!existsSync(`/sys/class/net/${this.config.egress.interface}`)) {
        this.log.warn(`egress interface ${this.config.egress.interface} does not exist (yet): forwarded traffic has no way out until it does`)
      }

      this.datapath = new DataPath(this.tun, 'node')
      this.datapath.localAddress = ipv4ToNumber(address)
      if (carrier.kind !== 'stream') {
        this.datagrams = new NodeDatagrams(carrier, this.transport, this.datapath, this.config.listen.address, this.mtu, this.log, lanes)
        this.datagrams.start()
        this.expiry = setInterval(() => this.expireSilentSessions(), EXPIRY_CHECK_MS)
        this.expiry.unref()
      } else {
        // Stream sessions bring their own connections (native records, native-records.ts).
        this.datapath.enableFastPath(null, this.mtu)
      }
      this.datapath.start()
      const onWorkerError = (e: Error) => this.fail(new Error(`a fast path worker failed: ${e.message}`))
      this.lanes = this.datagrams?.startWorkers(tun, onWorkerError, this.config.workers !== 'auto') ?? 1
      this.ticker = setInterval(() => this.tickSessions(), SESSION_TICK_MS)
      this.ticker.unref()
      await this.listen(credentials)
      this.checkNotStopped()
      this.statusServer = await startStatusServer(this.stateFile.socketPath, () => this.report())
      this.checkNotStopped()
      this.log.info(
        `node ${this.config.name} up: ${ifname} ${address}/${this.prefix} mtu ${this.mtu}, ` +
          `transport ${this.transport.name}, listening on ${this.listenText()}` +
          `${this.datagrams === null ? '' : ` and ${this.datagrams.listening}`}, ${this.config.clients.length} authorized client(s), ` +
          `${this.lanes} worker(s)`,
      )
    } catch (e) {
      await this.tearDown()
      throw e
    }
  }

  /** Something the node cannot carry on without broke: say what, then end (and tear down). */
  private fail(e: Error): void {
    this.log.error(e.message)
    this.endWith(e)
  }

  /** Stopping, or unwinding a failed start: no new sessions, no firewall changes. */
  private get closing(): boolean {
    return this.stopRequested || this.tearingDown !== null
  }

  /** A stop that arrives while starting: the step in progress finishes, then start unwinds. */
  private checkNotStopped(): void {
    if (this.stopRequested) throw new Error('stopped while starting')
  }

  private listenText(): string {
    return `${this.config.listen.address}:${this.config.listen.port}`
  }

  private async listen(credentials: Credentials): Promise<void> {
    // Certificates are checked right after the handshake (onConnection), so a refused client
    // is told why instead of seeing a bare connection reset.
    const server = createTlsServer({...tlsServerOptions(credentials, false), handshakeTimeout: HANDSHAKE_TIMEOUT_MS})
    // Connections still in the handshake count too: bounded, so nobody can exhaust descriptors
    // (which iptables-restore needs) by opening connections and saying nothing.
    server.maxConnections = MAX_CONNECTIONS_BASE + 2 * this.config.clients.length
    server.on('secureConnection', (socket) => this.onConnection(socket))
    server.on('tlsClientError', (err, socket) => {
      this.log.warn(`refused TLS handshake from ${socket.remoteAddress}:${socket.remotePort}: ${err.message}`)
    })
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) =>
        reject(new Error(`cannot listen on ${this.listenText()}: ${e.code === 'EADDRINUSE' ? 'address already in use' : e.message}`)),
      )
      server.listen(this.config.listen.port, this.config.listen.address, () => resolve())
    })
    server.on('error', (e) => this.log.error(`control server: ${e.message}`))
    this.server = server
  }

  private onConnection(socket: TLSSocket): void {
    const remote = `${socket.remoteAddress}:${socket.remotePort}`
    const auth = socket.authorized
      ? authorize(socket.getPeerCertificate(), this.config.clients)
      : {ok: false as const, reason: `certificate not accepted: ${describeTlsFailure(socket.authorizationError)}`}
    const conn = new ControlConnection(socket, this.mtu + STREAM_FRAME_SLACK, {
      onMessage: () => {},
      onData: () => {},
      onClose: () => this.connections.delete(conn),
    })
    this.connections.add(conn)
    if (this.closing) return conn.close('node stopping')
    if (!auth.ok) {
      this.log.warn(`refused client from ${remote}: ${auth.reason}; no forwarding`)
      conn.send({type: 'refused', reason: auth.reason})
      socket.end()
      setTimeout(() => conn.close('refused'), 1000).unref()
      return
    }
    const client: ClientSession = {name: auth.name, conn, peer: null, refused: false, ids: {owned: new Set(), bound: new Set()}, welcomed: false}
    const helloTimer = setTimeout(() => conn.close('no hello within 10 s'), HELLO_TIMEOUT_MS)
    helloTimer.unref()
    conn.handlers = {
      onMessage: (m: ControlMessage) => {
        if (client.refused) return
        if (m.type === 'hello' && client.peer === null) {
          clearTimeout(helloTimer)
          this.welcome(client, m, remote)
        } else if (m.type === 'transport' && client.peer !== null && client.welcomed) {
          client.peer.session.onControl?.(m.body)
        } else {
          conn.close(`unexpected ${m.type} message`)
        }
      },
      onData: (buf, offset, length) => {
        if (client.peer !== null) this.datapath?.receive(client.peer, buf, offset, length)
      },
      onClose: (reason) => {
        clearTimeout(helloTimer)
        this.connections.delete(conn)
        this.endSession(client, reason)
      },
    }
  }

  private welcome(client: ClientSession, hello: Hello, remote: string): void {
    const {conn, name} = client
    if (hello.version !== PROTOCOL_VERSION) {
      return this.refuse(client, `protocol version ${hello.version} is not supported (node speaks ${PROTOCOL_VERSION})`)
    }
    if (hello.transport !== this.transport.name) {
      return this.refuse(client, `this node serves transport "${this.transport.name}", not ${JSON.stringify(hello.transport)}`)
    }
    const address = this.plan.get(name)
    if (address === undefined) return this.refuse(client, `no tunnel address planned for "${name}"`)

    const options = this.transportOptions()
    const ids = client.ids
    const ctx = sessionContext({
      role: 'node',
      transport: this.transport.name,
      peerName: name,
      tunnelAddress: address,
      nodeAddress: this.config.tunnel.address,
      options,
      mtu: this.mtu,
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
          if (client.peer !== null) this.datagrams?.bindId(id, client.peer)
        },
        unbind: (id) => {
          ids.bound.delete(id)
          if (client.peer !== null) this.datagrams?.unbindId(id, client.peer)
        },
      },
      fastPathChanged: () => {
        if (client.peer !== null) this.datapath?.refreshFastPath(client.peer)
      },
    })
    // A session refused after it opened must give back what it took: its ids, its bindings.
    const discard = (s: NodeSession | null, peer: Peer | null, why: string) => {
      if (peer !== null) this.datagrams?.detach(peer)
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
      session = this.transport.openNodeSession(ctx)
      checkSessionRoom(this.transport.name, session)
    } catch (e) {
      return discard(session, null, `transport could not open a session: ${(e as Error).message}`)
    }
    const datagrams = this.datagrams
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
    this.datapath?.addPeer(peer)
    const keepalive = Number(options.keepalive ?? this.transport.nat.keepaliveSeconds)
    // The client asked for native records and this end can: the welcome is then the last
    // thing said through Node's TLS (native-records.ts).
    // Only a session whose encap is the identity: the records carry frames as they are, and
    // Node's socket (which a transport's exportKey needs) is freed once they have the connection.
    const records =
      datagrams === null &&
      hello.records === RECORDS &&
      session.fastPath?.kind === 'identity' &&
      this.datapath?.hasFastPath() === true &&
      recordsPossible(conn.socket, this.mtu + STREAM_FRAME_SLACK)
    this.updateAdmission()
      .then(() => {
        if (conn.isClosed) return
        conn.send({
          type: 'welcome',
          version: PROTOCOL_VERSION,
          transport: this.transport.name,
          address,
          prefix: this.prefix,
          gateway: this.config.tunnel.address,
          mtu: this.mtu,
          keepalive,
          carrier: datagrams === null ? {kind: 'stream'} : datagrams.spec,
          params: session.params,
          ...(records ? {records: RECORDS} : {}),
        })
        if (records && !this.goNative(client, remote)) return
        conn.keepalive(keepalive, false)
        client.welcomed = true
        this.log.info(`client ${name} connected from ${remote} as ${address}`)
      })
      .catch((e: Error) => {
        this.log.error(`could not admit ${name}: ${e.message}`)
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
      this.datapath?.refreshFastPath(peer)
      return true
    } catch (e) {
      client.conn.close(`cannot move to native records: ${(e as Error).message}`)
      return false
    }
  }

  private refuse(client: ClientSession, reason: string): void {
    client.refused = true
    this.log.warn(`refused client ${client.name} from ${client.conn.remote}: ${reason}`)
    client.conn.send({type: 'refused', reason})
    client.conn.socket.end()
    setTimeout(() => client.conn.close('refused'), 1000).unref()
  }

  private endSession(client: ClientSession, reason: string): void {
    const peer = client.peer
    if (peer === null) return
    client.peer = null
    this.datapath?.removePeer(peer)
    for (const id of client.ids.bound) this.datagrams?.unbindId(id, peer)
    this.datagrams?.detach(peer)
    peer.session.close()
    for (const id of client.ids.owned) this.sessionIds.delete(id)
    if (peer.session.id !== undefined) this.sessionIds.delete(peer.session.id)
    if (this.sessions.get(client.name) === client) {
      this.sessions.delete(client.name)
      if (!this.closing) {
        this.log.info(`client ${client.name} (${peer.addressText}) disconnected: ${reason}`)
        this.updateAdmission().catch((e: Error) => this.log.error(`could not update FORWARD rules: ${e.message}`))
      }
    }
  }

  /**
   * FORWARD admits exactly the clients with a live session. Updates are coalesced: one run at a
   * time, and however many changes arrive meanwhile, one more run that reads the state as it
   * is then. So a client reconnecting in a loop costs at most one iptables-restore at a time.
   */
  private updateAdmission(): Promise<void> {
    this.pendingAdmission ??= this.admission.then(
      () => this.applyAdmission(),
      () => this.applyAdmission(),
    )
    return this.pendingAdmission
  }

  private async applyAdmission(): Promise<void> {
    this.admission = this.pendingAdmission!
    this.pendingAdmission = null
    if (this.firewall === null || this.closing) return
    const admitted = [...this.sessions.values()].filter((s) => s.peer !== null).map((s) => s.peer!.addressText).sort()
    const key = admitted.join(',')
    if (key === this.admittedKey) return
    await this.firewall.setAdmitted(admitted)
    this.admittedKey = key
  }

  /**
   * Datagram sessions whose client fell silent (no data, no keepalive) for session.idleTimeout
   * end, and their FORWARD admission with them. Stream sessions end with their connection.
   */
  private expireSilentSessions(): void {
    const limit = this.config.session.idleTimeout * 1000
    const now = Date.now()
    for (const s of this.sessions.values()) {
      const p = s.peer
      p?.stats.sync?.()
      if (p !== null && now - Math.max(p.stats.lastSeen, p.connectedAt) > limit) {
        s.conn.close(`no packets for ${this.config.session.idleTimeout} s`)
      }
    }
  }

  /** Time-driven transport work (rekeys); a session that throws loses its connection, not the node. */
  private tickSessions(): void {
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

  report(): StatusReport {
    const fast = this.datapath?.fastPathStats()
    return {
      name: this.config.name,
      role: 'node',
      pid: process.pid,
      transport: this.transport.name,
      interface: this.config.tunnel.interface,
      address: this.config.tunnel.address,
      mtu: this.mtu,
      startedAt: this.state.startedAt,
      endpoint: this.listenText(),
      state: this.closing ? 'stopping' : 'up',
      peers: (this.datapath?.peers() ?? []).map((p) => this.peerWithWorker(p)),
      counters: {...(this.datapath?.counters ?? {}), ...(this.datagrams?.counters ?? {}), ...(this.datagrams ? {sendDropped: this.datagrams.queue.dropped} : {}), ...fastPathCounters(fast)},
      ...(this.lanes > 1 && fast != null ? {workers: fast.workers} : {}),
    }
  }

  /** A peer's report, with the worker its datagrams are steered to when there are several. */
  private peerWithWorker(p: Peer): PeerReport {
    const report = peerReport(p)
    const link = p.link
    const lane = link instanceof DatagramLink ? this.datagrams?.laneOf(link.addr, link.port) : undefined
    return lane === undefined ? report : {...report, worker: lane}
  }

  /**
   * Undo everything start() did, in reverse; safe to call more than once and while start()
   * runs (start finishes its step, unwinds, then this returns). Resolves with what could not
   * be removed, empty when everything is gone.
   */
  stop(): Promise<string[]> {
    this.stopRequested = true
    this.stopping ??= (async () => {
      await this.starting?.catch(() => {})
      return this.tearDown()
    })()
    return this.stopping
  }

  private tearDown(): Promise<string[]> {
    this.tearingDown ??= (async () => {
      this.server?.close()
      if (this.expiry !== null) clearInterval(this.expiry)
      if (this.ticker !== null) clearInterval(this.ticker)
      for (const c of [...this.connections]) c.close('node stopping')
      this.statusServer?.close()
      this.datapath?.disableFastPath()
      this.tun?.close()
      this.datagrams?.close()
      await this.admission.catch(() => {})
      return finishTeardown(this.state, this.stateFile, this.log)
    })()
    return this.tearingDown
  }
}
