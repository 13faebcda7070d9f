/**
 * The client: connects to the node over the control channel, gets its tunnel address and
 * session parameters, creates the TUN device, routes only the configured destinations into it,
 * and keeps the session alive, reconnecting with backoff whenever the node goes away.
 */
import {lookup} from 'node:dns/promises'
import {isIP} from 'node:net'
import {connect as tlsConnect, type TLSSocket} from 'node:tls'
import type {Server} from 'node:net'
import {type ResolvedClientConfig, loadConfig} from '../config/index.js'
import {classifyChange, refusedMessage} from '../config/live-change.js'
import type {CarrierSpec, Session, SessionParams, Transport} from '../transport/contract.js'
import type {Logger} from '../log.js'
import type {TunDevice} from '../tun/device.js'
import {openTun} from '../tun/index.js'
import {type Credentials, loadCredentials, tlsClientOptions} from '../pki/index.js'
import {ControlConnection} from '../control/connection.js'
import {PROTOCOL_VERSION, type Welcome} from '../control/messages.js'
import {DataPath} from '../device/datapath.js'
import {tunOffload} from '../device/fast-path.js'
import {Peer} from '../device/peer.js'
import {fastPathCounters, peerReport} from '../device/report.js'
import {STREAM_BATCH_BYTES, STREAM_FRAME_SLACK, StreamLink} from '../carrier/stream-link.js'
import {NATIVE_MAX_DATA, NativeStreamLink} from '../carrier/native-stream.js'
import {RECORDS, recordsPossible} from '../control/native-records.js'
import {ipv4ToNumber} from '../net/ipv4.js'
import {type AddedRoute, addRoutes, configureInterface, keepEndpointOutside, parseRoutePrefix, removeRoutes} from '../routes/index.js'
import {cidrContains, formatCidr} from '../net/ipv4.js'
import {readdressInterface} from '../routes/link.js'
import {type AgentState, StateFile} from '../state/state-file.js'
import {finishTeardown, reclaimStale} from '../state/teardown.js'
import {type ReloadResult, startStatusServer} from '../status/server.js'
import type {StatusReport} from '../status/report.js'
import {tunnelMtu} from '../transport/mtu.js'
import {checkSessionRoom} from '../transport/room.js'
import {SESSION_TICK_MS, sessionContext} from '../transport/session-context.js'
import {backoffDelay} from './backoff.js'
import {checkWelcomeAddress, hostRoutes} from './welcome-address.js'
import {isFatalTlsError} from './tls-errors.js'
import {ClientDatagrams} from './client-datagrams.js'
import {keepaliveKeys} from '../nat/keepalive.js'

const CONNECT_TIMEOUT_MS = 10_000
const WELCOME_TIMEOUT_MS = 10_000

export class ClientAgent {
  private readonly stateFile: StateFile
  private readonly state: AgentState
  private tun: TunDevice | null = null
  private datapath: DataPath | null = null
  private conn: ControlConnection | null = null
  private peer: Peer | null = null
  private address: string | null = null
  private mtu: number | null = null
  private statusServer: Server | null = null
  private welcoming: Promise<void> = Promise.resolve()
  /** The connection the current peer's session belongs to. */
  private peerConn: ControlConnection | null = null
  private ticker: NodeJS.Timeout | null = null
  private datagrams: ClientDatagrams | null = null
  private nodeIp = ''
  /** The route to the node's tunnel address, the one route of the tunnel subnet the client has. */
  private gatewayRoute: AddedRoute | null = null
  private gateway: string | null = null
  private attempts = 0
  /** The other nodes of the fleet as last logged. */
  private fleetSaid = ''
  private retryTimer: NodeJS.Timeout | null = null
  private phase: 'connecting' | 'connected' | 'stopped' = 'connecting'
  private stopping: Promise<string[]> | null = null
  private firstWelcome: {resolve: () => void; reject: (e: Error) => void} | null = null
  /** Reloads, and route changes with the tunnel setup, run one at a time. */
  private routing: Promise<unknown> = Promise.resolve()
  /** The running config: replaced by each reload that applies. */
  private config: ResolvedClientConfig
  /** Resolves when the client ends by itself (a fatal refusal), with the reason. */
  readonly ended: Promise<Error>
  private endWith!: (e: Error) => void

  constructor(
    config: ResolvedClientConfig,
    private readonly transport: Transport,
    runDir: string,
    private readonly log: Logger,
  ) {
    this.config = config
    this.stateFile = new StateFile(runDir, config.name)
    this.state = {
      pid: process.pid,
      role: 'client',
      name: config.name,
      transport: transport.name,
      startedAt: new Date().toISOString(),
      interface: config.tunnel.interface,
      routes: [],
    }
    this.ended = new Promise((resolve) => (this.endWith = resolve))
  }

  private transportOptions(): Record<string, unknown> {
    return ((this.config.transports as Record<string, unknown>)[this.transport.name] ?? {}) as Record<string, unknown>
  }

  private nodeText(): string {
    return `${this.config.node.host}:${this.config.node.port}`
  }

  /**
   * Resolves once the node has welcomed us and the tunnel is up; rejects, with everything
   * undone, when the node refuses us or the setup fails. Keeps reconnecting afterwards.
   */
  async start(): Promise<void> {
    const credentials = await loadCredentials(this.config.pki)
    this.nodeIp = await this.resolveNode()
    await reclaimStale(this.stateFile, this.log)
    this.stateFile.write(this.state)
    try {
      this.statusServer = await startStatusServer(this.stateFile.socketPath, {status: () => this.report(), reload: (file) => this.reload(file)})
      await new Promise<void>((resolve, reject) => {
        this.firstWelcome = {resolve, reject}
        this.connect(credentials)
      })
    } catch (e) {
      await this.stop()
      throw e
    }
  }

  private async resolveNode(): Promise<string> {
    const host = this.config.node.host
    if (isIP(host) === 4) return host
    try {
      return (await lookup(host, {family: 4})).address
    } catch (e) {
      throw new Error(`cannot resolve node.host "${host}": ${(e as Error).message}`)
    }
  }

  private connect(credentials: Credentials): void {
    if (this.phase === 'stopped') return
    this.phase = 'connecting'
    const socket: TLSSocket = tlsConnect({
      ...tlsClientOptions(credentials, this.config.node.name),
      host: this.nodeIp,
      port: this.config.node.port,
      timeout: CONNECT_TIMEOUT_MS,
    })
    socket.once('timeout', () => socket.destroy(new Error(`no answer from ${this.nodeText()} within ${CONNECT_TIMEOUT_MS / 1000} s`)))
    let welcomed = false
    let refusal: string | null = null
    /** Transport messages that came before this connection's session was open. */
    const early: SessionParams[] = []
    const welcomeTimer = setTimeout(() => conn.close(`no welcome within ${WELCOME_TIMEOUT_MS / 1000} s`), WELCOME_TIMEOUT_MS)
    welcomeTimer.unref()
    const conn = new ControlConnection(socket, 0xffff, {
      onMessage: (m) => {
        if (m.type === 'welcome' && !welcomed) {
          welcomed = true
          clearTimeout(welcomeTimer)
          // The node's last words through Node's TLS: read nothing more there (native-records.ts).
          if (m.records !== undefined) {
            if (!askedRecords || m.records !== RECORDS) return conn.close(`node answered with records ${JSON.stringify(m.records)} we did not ask for`)
            try {
              conn.goNative('client')
            } catch (e) {
              return conn.close(`cannot move to native records: ${(e as Error).message}`)
            }
          }
          // One welcome at a time: a fast reconnect must not set the tunnel up twice at once,
          // nor a reload change the routes while the tunnel is being set up.
          this.welcoming = Promise.all([this.welcoming, this.routing.catch(() => {})])
            .then(() => this.onWelcome(conn, m, early))
            .catch((e: Error) => this.fatal(new Error(`tunnel setup failed: ${e.message}`)))
        } else if (m.type === 'refused') {
          // Nothing more will come: close now rather than wait for the node to.
          refusal = m.reason
          conn.close('refused by the node')
        } else if (m.type === 'transport' && welcomed) {
          // The session opens once the tunnel is set up: hold what arrives meanwhile.
          if (this.conn !== conn) return
          if (this.peer === null || this.peerConn !== conn) early.push(m.body)
          else this.peer.session.onControl?.(m.body)
        } else {
          conn.close(`unexpected ${m.type} message`)
        }
      },
      onData: (buf, offset, length) => {
        if (this.peer !== null) this.datapath?.receive(this.peer, buf, offset, length)
      },
      onClose: (reason, cause) => {
        clearTimeout(welcomeTimer)
        if (this.conn === conn) this.conn = null
        this.dropPeer()
        if (this.phase === 'stopped') return
        if (refusal !== null) return this.fatal(new Error(`node ${this.nodeText()} refused us: ${refusal}`))
        if (!welcomed && cause !== undefined && isFatalTlsError(cause)) {
          return this.fatal(new Error(`TLS with node ${this.nodeText()} failed: ${cause.message}`))
        }
        this.scheduleReconnect(credentials, reason)
      },
    })
    let askedRecords = false
    socket.once('secureConnect', () => {
      // The timeout guarded the connect; left on, it would cut an idle tunnel every 10 s.
      socket.setTimeout(0)
      askedRecords = this.transport.carrier(this.transportOptions()).kind === 'stream' && recordsPossible(socket, NATIVE_MAX_DATA)
      conn.send({type: 'hello', version: PROTOCOL_VERSION, transport: this.transport.name, ...(askedRecords ? {records: RECORDS} : {})})
    })
    this.conn = conn
  }

  private scheduleReconnect(credentials: Credentials, reason: string): void {
    const delay = backoffDelay(this.attempts++, this.config.reconnect.minSeconds, this.config.reconnect.maxSeconds)
    this.log.warn(`connection to node ${this.nodeText()} lost (${reason}); reconnecting in ${(delay / 1000).toFixed(1)} s`)
    this.retryTimer = setTimeout(() => this.connect(credentials), delay)
  }

  private async onWelcome(conn: ControlConnection, w: Welcome, early: SessionParams[]): Promise<void> {
    const gone = () => conn.isClosed || this.phase === 'stopped'
    if (gone()) return
    if (w.transport !== this.transport.name) throw new Error(`node answered for transport ${JSON.stringify(w.transport)}`)
    // Before anything is applied: a refused address leaves the system as it was.
    checkWelcomeAddress(w, {nodeIp: this.nodeIp, tunInterface: this.config.tunnel.interface, routes: await hostRoutes()})
    if (gone()) return
    if (this.tun === null) await this.bringUpTunnel(w)
    else if (w.address !== this.address) await this.readdress(w)
    if (w.gateway !== this.gateway) await this.routeGateway(w.gateway)
    // The connection may have dropped, or the agent been stopped, while the tunnel was set up.
    if (gone()) return
    const ctx = sessionContext({
      role: 'client',
      transport: this.transport.name,
      peerName: this.config.name,
      tunnelAddress: w.address,
      nodeAddress: w.gateway,
      options: this.transportOptions(),
      mtu: w.mtu,
      conn,
      // A change while the session is being opened is read when its peer is added.
      fastPathChanged: () => {
        if (this.peer !== null && this.peer.session === opened) this.datapath?.refreshFastPath(this.peer)
      },
    })
    let opened: Session | null = null
    const session: Session = this.transport.openClientSession(ctx, w.params)
    opened = session
    checkSessionRoom(this.transport.name, session)
    this.datapath!.localAddress = ipv4ToNumber(w.address)
    const datagrams = w.carrier.kind === 'stream' ? null : this.datagramsFor(w.carrier)
    const native = conn.nativeStream
    const link =
      datagrams !== null ? datagrams.link : native !== null ? new NativeStreamLink(native, this.nodeText()) : new StreamLink(conn.socket, this.nodeText(), STREAM_BATCH_BYTES)
    // The client has one peer, the node, at its tunnel address.
    const peer = new Peer(this.config.node.name, ipv4ToNumber(w.gateway), w.gateway, session, link)
    link.stats = peer.stats
    this.dropPeer()
    this.peer = peer
    this.peerConn = conn
    this.datapath!.addPeer(peer)
    for (const m of early.splice(0)) session.onControl?.(m)
    this.ticker ??= setInterval(() => this.tickSession(), SESSION_TICK_MS)
    this.ticker.unref()
    conn.keepalive(w.keepalive, true)
    this.attempts = 0
    const up = () => {
      this.phase = 'connected'
      const via = datagrams === null ? '' : ` over ${w.carrier.kind} to ${link.endpoint} from ${datagrams.local}`
      this.log.info(`connected to node ${this.nodeText()} as ${w.address}, transport ${this.transport.name}${via}, mtu ${this.mtu}`)
      // Where this client could go instead (the failover issue uses them); said when it changes.
      const others = (w.fleet ?? []).map((n) => `${n.name} (${n.host}:${n.port})`).join(', ')
      if (w.fleet !== undefined && others !== this.fleetSaid) this.log.info(`fleet: ${w.fleet.length} other node(s) serve ${this.transport.name}${others === '' ? '' : `: ${others}`}`)
      this.fleetSaid = others
      this.firstWelcome?.resolve()
      this.firstWelcome = null
    }
    if (datagrams === null) return up()
    // Over datagrams the tunnel is up once the node answers a keepalive: that proves the path.
    datagrams.begin(peer, w.carrier, keepaliveKeys(conn.socket, 'client'), w.keepalive, up)
  }

  /** The datagram socket for this carrier: kept across sessions so the NAT mapping stays. */
  private datagramsFor(carrier: CarrierSpec): ClientDatagrams {
    if (this.datagrams !== null && !this.datagrams.fits(carrier)) {
      this.datagrams.close()
      this.datagrams = null
    }
    this.datagrams ??= new ClientDatagrams(carrier, ipv4ToNumber(this.nodeIp), this.datapath!, this.mtu!, this.log)
    return this.datagrams
  }

  private async bringUpTunnel(w: Welcome): Promise<void> {
    const ifname = this.config.tunnel.interface
    const wanted = this.config.tunnel.mtu ?? tunnelMtu(this.transport, this.transportOptions())
    if (wanted > w.mtu) this.log.warn(`tunnel.mtu ${wanted} is above the node's ${w.mtu}; using ${w.mtu}`)
    this.mtu = Math.min(wanted, w.mtu)
    // The virtio header lets the fast path write runs of TCP segments as one packet.
    this.tun = openTun({name: ifname, mtu: this.mtu, vnetHdr: tunOffload(), onError: (e) => this.fatal(new Error(`TUN device ${ifname} failed: ${e.message}`))})
    // No route for the subnet: the tunnel carries `routes:` and the gateway, nothing a node says.
    await configureInterface(ifname, {address: w.address, prefix: w.prefix, noPrefixRoute: true, mtu: this.mtu})
    this.address = w.address
    // The route to the node itself must stay outside the tunnel, or the tunnel would carry itself.
    const outside = await keepEndpointOutside(this.nodeIp, this.config.routes, {tunInterface: ifname})
    if (outside !== null) this.recordRoute(outside)
    for (const r of await addRoutes(ifname, this.config.routes)) this.recordRoute(r)
    this.datapath = new DataPath(this.tun, 'client')
    // Stream sessions bring their own connections (native records); datagram carriers enable
    // the fast path with their socket.
    if (w.carrier.kind === 'stream') this.datapath.enableFastPath(null, this.mtu)
    this.datapath.start()
    this.log.info(`${ifname} ${w.address}/${w.prefix} up; routes into the tunnel: ${this.config.routes.join(', ')}`)
  }

  /**
   * Re-reads the config (the file given, or the one the client runs from) and applies what may
   * change live: the routes into the tunnel (added and removed without reconnecting), reconnect
   * pacing and the log level. Anything else that differs, or an invalid file, refuses the whole
   * reload and nothing changes.
   */
  reload(file?: string): Promise<ReloadResult> {
    const run = Promise.all([this.routing.catch(() => {}), this.welcoming.catch(() => {})]).then(() => this.applyReload(file ?? this.config.file))
    this.routing = run.catch(() => {})
    return run
  }

  private async applyReload(file: string): Promise<ReloadResult> {
    if (this.phase === 'stopped') throw new Error('the client is stopping')
    const next = await loadConfig(file)
    if (next.role !== 'client') throw new Error(`${file} configures a node, not a client`)
    const {live, refused} = classifyChange(this.config, next)
    if (refused.length > 0) throw new Error(refusedMessage(refused))
    const effects = this.tun === null ? [] : await this.rerouteTo(next.routes)
    this.config = next
    this.log.setLevel(next.log.level)
    if (live.length > 0) this.log.info(`reloaded ${file}: ${live.join(', ')} changed${effects.length > 0 ? `; ${effects.join('; ')}` : ''}`)
    return {changed: live, effects}
  }

  /**
   * Moves the tunnel's routes from the running config's to `routes`: new ones added first (all
   * or nothing), then the dropped ones removed. The route that keeps the node's own address
   * outside the tunnel is added when a new prefix covers it, and removed when none does.
   */
  private async rerouteTo(routes: readonly string[]): Promise<string[]> {
    const ifname = this.config.tunnel.interface
    const canonical = (list: readonly string[]) => new Set(list.map((r) => formatCidr(parseRoutePrefix(r))))
    const before = canonical(this.config.routes)
    const after = canonical(routes)
    const added = [...after].filter((r) => !before.has(r))
    const removed = [...before].filter((r) => !after.has(r))
    if (added.length === 0 && removed.length === 0) return []
    const isEndpoint = (r: AddedRoute) => r.dev !== ifname
    const pinned = this.state.routes.find(isEndpoint)
    const pin = pinned === undefined ? await keepEndpointOutside(this.nodeIp, [...after], {tunInterface: ifname}) : null
    if (pin !== null) this.recordRoute(pin)
    try {
      for (const r of await addRoutes(ifname, added)) this.recordRoute(r)
    } catch (e) {
      if (pin !== null) await this.unrecordRoutes([pin])
      throw e
    }
    // The gateway's route stays even if `routes:` named the same address and no longer does.
    const gone = this.state.routes.filter((r) => r.dev === ifname && removed.includes(r.dst) && r.dst !== this.gatewayRoute?.dst)
    await this.unrecordRoutes(gone)
    const effects = [...added.map((r) => `route ${r} added`), ...removed.map((r) => `route ${r} removed`)]
    const ip = ipv4ToNumber(this.nodeIp)
    if (pinned !== undefined && ![...after].some((r) => cidrContains(parseRoutePrefix(r), ip))) {
      await this.unrecordRoutes([pinned])
      effects.push(`route ${pinned.dst} (the node, outside the tunnel) removed`)
    }
    return effects
  }

  private async unrecordRoutes(routes: readonly AddedRoute[]): Promise<void> {
    await removeRoutes(routes)
    this.state.routes = this.state.routes.filter((r) => !routes.includes(r))
    this.stateFile.write(this.state)
  }

  private recordRoute(r: AddedRoute): void {
    this.state.routes.push(r)
    this.stateFile.write(this.state)
  }

  private async readdress(w: Welcome): Promise<void> {
    this.log.warn(`node moved us from ${this.address} to ${w.address}`)
    await readdressInterface(this.config.tunnel.interface, {address: w.address, prefix: w.prefix, noPrefixRoute: true, mtu: this.mtu!})
    this.address = w.address
  }

  /**
   * Routes the node's tunnel address (the gateway) into the tunnel, replacing the route to a
   * previous one. It is the only address of the tunnel subnet the client needs (replies to the
   * node itself); the subnet has no route (see welcome-address.ts).
   */
  private async routeGateway(gateway: string): Promise<void> {
    const old = this.gatewayRoute
    const [added] = await addRoutes(this.config.tunnel.interface, [`${gateway}/32`])
    this.gatewayRoute = added ?? null
    this.gateway = gateway
    if (added !== undefined) this.recordRoute(added)
    if (old !== null && !this.config.routes.some((r) => formatCidr(parseRoutePrefix(r)) === old.dst)) await this.unrecordRoutes([old])
  }

  /** Time-driven transport work (rekeys); a session that throws costs its connection. */
  private tickSession(): void {
    const session = this.peer?.session
    if (session?.tick === undefined) return
    try {
      session.tick(Date.now())
    } catch (e) {
      this.conn?.close(`transport session failed: ${(e as Error).message}`)
    }
  }

  private dropPeer(): void {
    this.datagrams?.end()
    if (this.peer === null) return
    this.datapath?.removePeer(this.peer)
    this.peer.session.close()
    this.peer = null
  }

  private fatal(e: Error): void {
    this.log.error(e.message)
    if (this.firstWelcome !== null) {
      this.firstWelcome.reject(e)
      this.firstWelcome = null
      return
    }
    this.endWith(e)
  }

  report(): StatusReport {
    return {
      name: this.config.name,
      role: 'client',
      pid: process.pid,
      transport: this.transport.name,
      interface: this.config.tunnel.interface,
      address: this.address,
      mtu: this.mtu,
      startedAt: this.state.startedAt,
      endpoint: this.nodeText(),
      state: this.phase,
      peers: this.peer === null ? [] : [peerReport(this.peer)],
      counters: {...(this.datapath?.counters ?? {}), ...(this.datagrams?.counters ?? {}), ...fastPathCounters(this.datapath?.fastPathStats())},
    }
  }

  /**
   * Undo everything; safe more than once and while start() still waits for the node (it then
   * rejects). A tunnel setup in progress finishes first, so nothing is added after teardown.
   * Resolves with what could not be removed, empty when everything is gone.
   */
  stop(): Promise<string[]> {
    this.stopping ??= (async () => {
      this.phase = 'stopped'
      if (this.retryTimer !== null) clearTimeout(this.retryTimer)
      if (this.ticker !== null) clearInterval(this.ticker)
      this.firstWelcome?.reject(new Error('stopped before the node welcomed us'))
      this.firstWelcome = null
      this.conn?.close('client stopping')
      await this.welcoming
      this.dropPeer()
      this.statusServer?.close()
      this.datagrams?.close()
      this.datapath?.disableFastPath()
      this.tun?.close()
      return finishTeardown(this.state, this.stateFile, this.log)
    })()
    return this.stopping
  }
}

