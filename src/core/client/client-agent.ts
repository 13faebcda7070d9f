/**
 * The client: connects to a node over the control channel, gets its tunnel address and
 * session parameters, creates the TUN device, routes only the configured destinations into it,
 * and keeps the session alive. With more than one node to choose from (`nodes`, or a fleet's
 * welcome), it rides the best by measurement (node-probing.ts, probe/ranking.ts), moves when
 * another is clearly better, and fails over at once when its node stops answering: the TUN
 * device and the routes stay, only the carrier moves (docs/failover.md).
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
import {type FleetPeer, PROTOCOL_VERSION, type Welcome} from '../control/messages.js'
import {DataPath} from '../device/datapath.js'
import {tunOffload} from '../device/fast-path.js'
import {Peer} from '../device/peer.js'
import {fastPathCounters, peerReport, totalsReport} from '../device/report.js'
import {AgentEvents, AgentMetrics, metricsSettings, type MetricsSettings} from '../metrics/index.js'
import {agentVersion} from '../version.js'
import {STREAM_BATCH_BYTES, STREAM_FRAME_SLACK, StreamLink} from '../carrier/stream-link.js'
import {NATIVE_MAX_DATA, NativeStreamLink} from '../carrier/native-stream.js'
import {RECORDS, recordsPossible} from '../control/native-records.js'
import {ipv4ToNumber} from '../net/ipv4.js'
import {type AddedRoute, addRoutes, configureInterface, keepEndpointOutside, parseRoutePrefix, removeRoutes} from '../routes/index.js'
import {cidrContains, formatCidr} from '../net/ipv4.js'
import {readdressInterface} from '../routes/link.js'
import {type AgentState, StateFile} from '../state/state-file.js'
import {finishTeardown, reclaimStale} from '../state/teardown.js'
import {type ReloadObserver, type ReloadResult, startStatusServer} from '../status/server.js'
import type {StatusReport} from '../status/report.js'
import {tunnelMtu} from '../transport/mtu.js'
import {checkSessionRoom} from '../transport/room.js'
import {SESSION_TICK_MS, sessionContext} from '../transport/session-context.js'
import {backoffDelay} from './backoff.js'
import {checkWelcomeAddress, hostRoutes} from './welcome-address.js'
import {isFatalTlsError} from './tls-errors.js'
import {ClientDatagrams} from './client-datagrams.js'
import {keepaliveKeys} from '../nat/keepalive.js'
import {probeKey} from '../probe/probe-packet.js'
import {rank, score, basisOf, Switcher} from '../probe/ranking.js'
import {type Candidate, mergeCandidates} from './candidates.js'
import {NodeProbing} from './node-probing.js'
import type {SelectionReport, SwitchRecord} from '../status/report.js'

const CONNECT_TIMEOUT_MS = 10_000
const WELCOME_TIMEOUT_MS = 10_000
/** How often the current node's liveness, and whether to move, is looked at. */
const WATCH_MS = 100
const SELECT_MS = 1000
/** A node that refused us is not tried again for this long (while others remain). */
const REFUSED_NODE_MS = 60_000
/** Switches kept for `agent status`. */
const SWITCHES_KEPT = 10

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
  reloadObserver?: ReloadObserver
  private welcoming: Promise<void> = Promise.resolve()
  /** The connection the current peer's session belongs to. */
  private peerConn: ControlConnection | null = null
  private ticker: NodeJS.Timeout | null = null
  private datagrams: ClientDatagrams | null = null
  /** The address of the node connected to (or being connected to). */
  private nodeIp = ''
  /** The nodes to choose from, the one being connected to, the one welcomed us. */
  private candidates: Candidate[]
  private target: Candidate
  private current: Candidate | null = null
  private readonly probing: NodeProbing
  private readonly switcher: Switcher
  /** Set by a move to a better node: the next connection goes there. */
  private moveTo: {cand: Candidate; why: string} | null = null
  /** The other nodes the last welcome named (a fleet's), merged with the config's on a reload. */
  private fleetPeers: readonly FleetPeer[] = []
  private readonly refusedNodes = new Map<string, {reason: string; until: number}>()
  private readonly switches: SwitchRecord[] = []
  private switchCount = 0
  private watchTimer: NodeJS.Timeout | null = null
  private selectTimer: NodeJS.Timeout | null = null
  private welcomedAt = 0
  /** Every node address the client has resolved, and those pinned outside the tunnel. */
  private readonly nodeIps = new Set<string>()
  private readonly pins = new Map<string, AddedRoute>()
  private credentials: Credentials | null = null
  /** The route to the node's tunnel address, the one route of the tunnel subnet the client has. */
  private gatewayRoute: AddedRoute | null = null
  private gateway: string | null = null
  private attempts = 0
  /** The other nodes of the fleet as last logged. */
  private fleetSaid = ''
  private retryTimer: NodeJS.Timeout | null = null
  /** The node the pending retry goes to. */
  private retryTo: Candidate | null = null
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
  /** Counts of handshakes and reloads, from the events logged (metrics/events.ts). */
  private readonly events = new AgentEvents()
  /** The config's `metrics:`, or null: no endpoint. */
  private readonly metricsSettings: MetricsSettings | null
  private metrics: AgentMetrics | null = null
  /** Datagrams from strangers that sockets since closed (a carrier change) had dropped. */
  private closedForeignSource = 0

  constructor(
    config: ResolvedClientConfig,
    private readonly transport: Transport,
    runDir: string,
    private readonly log: Logger,
  ) {
    this.log = this.events.tap(log)
    this.metricsSettings = metricsSettings(config.metrics, 'client')
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
    this.candidates = mergeCandidates(config.nodes, [])
    this.target = this.candidates[0]
    const sel = config.selection
    this.switcher = new Switcher({betterByMs: sel.betterByMs, betterRatio: sel.betterRatio, switchAfterMs: sel.switchAfterSeconds * 1000})
    this.probing = new NodeProbing({
      credentials: () => this.credentials,
      transport: transport.name,
      routes: () => this.gameRoutes(),
      probeMs: sel.probeSeconds * 1000,
      probeOthersMs: sel.probeOthersSeconds * 1000,
      resolved: (ip) => void this.pinLate(ip).then((problem) => problem !== null && this.log.warn(problem, {event: 'route.pin_failed', address: ip})),
      heardFromCurrent: () => {
        this.peer?.stats.sync?.()
        return this.peer?.stats.lastSeen ?? 0
      },
      log: this.log,
    })
  }

  /** The metrics endpoint's view of the client: counters it keeps anyway, read at scrape time. */
  private startMetrics(settings: MetricsSettings): Promise<string> {
    this.metrics = new AgentMetrics(
      {
        role: 'client',
        transport: this.transport.name,
        version: agentVersion(),
        events: this.events,
        datapath: () => this.datapath,
        extraDrops: () => this.carrierDrops(),
        sessions: () => (this.phase === 'connected' && this.peer !== null ? 1 : 0),
        rtts: () => this.selectionReport().candidates.map((c) => ({node: c.name, seconds: c.rttMs === null ? null : c.rttMs / 1000, current: c.current})),
        switches: () => this.switchCount,
      },
      settings.perPeer,
    )
    return this.metrics.listen(settings, this.log)
  }

  /** Drops the datagram socket counts, which no peer owns. */
  private carrierDrops(): Record<string, number> {
    const n = this.closedForeignSource + (this.datagrams?.counters.foreignSource ?? 0)
    return this.datagrams === null && n === 0 ? {} : {'foreign-source': n}
  }

  /** The /32 routes: the game servers a node may measure for us. */
  private gameRoutes(): string[] {
    return this.config.routes.filter((r) => r.endsWith('/32')).slice(0, 8)
  }

  private transportOptions(): Record<string, unknown> {
    return ((this.config.transports as Record<string, unknown>)[this.transport.name] ?? {}) as Record<string, unknown>
  }

  private nodeText(): string {
    return `${this.target.host}:${this.target.port}`
  }

  /**
   * Resolves once the node has welcomed us and the tunnel is up; rejects, with everything
   * undone, when the node refuses us or the setup fails. Keeps reconnecting afterwards.
   */
  async start(): Promise<void> {
    const credentials = await loadCredentials(this.config.pki)
    this.credentials = credentials
    // One node: it must resolve now, as it always had to. Several: one that does not is skipped.
    if (this.candidates.length === 1) this.nodeIp = await this.resolveNode(this.target)
    await reclaimStale(this.stateFile, this.log)
    this.stateFile.write(this.state)
    try {
      // First, before the system is touched: a port already taken ends the start here.
      if (this.metricsSettings !== null) await this.startMetrics(this.metricsSettings)
      this.statusServer = await startStatusServer(this.stateFile.socketPath, {
        status: () => this.report(),
        reload: (file) => this.reload(file),
        reloadObserver: () => this.reloadObserver,
      })
      this.probing.setCandidates(this.candidates)
      this.probing.start()
      if (this.candidates.length > 1) await this.chooseFirst()
      await new Promise<void>((resolve, reject) => {
        this.firstWelcome = {resolve, reject}
        this.connect(credentials, this.target)
      })
    } catch (e) {
      await this.stop()
      throw e
    }
  }

  /** Probes every node for up to `selection.startSeconds`, then takes the best to start with. */
  private async chooseFirst(): Promise<void> {
    const ms = this.config.selection.startSeconds * 1000
    this.probing.burst(ms)
    const until = Date.now() + ms
    while (Date.now() < until && !this.probing.settled() && this.phase !== 'stopped') await new Promise((r) => setTimeout(r, 50))
    const best = rank(this.probing.views())[0]
    const chosen = this.candidates.find((c) => c.key === best?.key && Number.isFinite(score(best, basisOf(this.probing.views()))))
    if (chosen !== undefined) this.target = chosen
    this.log.info(`starting with node ${this.target.name} (${this.nodeText()})${chosen === undefined ? ': no node answered probes yet, taking the first listed' : ', the best measured'}`, {
      event: 'node.chosen',
      peer: this.target.name,
      endpoint: this.nodeText(),
      measured: chosen !== undefined,
    })
  }

  private async resolveNode(cand: Candidate): Promise<string> {
    const host = cand.host
    if (isIP(host) === 4) return host
    try {
      return (await lookup(host, {family: 4})).address
    } catch (e) {
      throw new Error(`cannot resolve node.host "${host}": ${(e as Error).message}`)
    }
  }

  private connect(credentials: Credentials, cand: Candidate): void {
    if (this.phase === 'stopped') return
    // A retry decided before a reload took its node out goes to another.
    if (!this.listed(cand)) cand = this.nextCandidate(cand)
    this.phase = 'connecting'
    this.target = cand
    this.resolveNode(cand)
      .then(async (ip) => {
        // Its address must not go into the tunnel (a route may cover it).
        const problem = await this.pinLate(ip)
        if (problem !== null) throw new Error(problem)
        return ip
      })
      .then(
        (ip) => {
          if (this.target !== cand || this.phase === 'stopped') return
          // A reload may have taken the node out while its address was looked up and pinned.
          if (!this.listed(cand)) {
            const other = this.nextCandidate(cand)
            if (other.key !== cand.key) return this.connect(credentials, other)
          }
          this.nodeIp = ip
          this.dial(credentials, cand)
        },
        (e: Error) => {
          if (this.target === cand && this.phase !== 'stopped') this.scheduleReconnect(credentials, cand, e.message, false)
        },
      )
  }

  private dial(credentials: Credentials, cand: Candidate): void {
    if (this.phase === 'stopped' || this.target !== cand) return
    const socket: TLSSocket = tlsConnect({
      ...tlsClientOptions(credentials, cand.name),
      host: this.nodeIp,
      port: cand.port,
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
          // The probe ticket's key is the TLS session's: taken before native records free it.
          const probe = m.probe === undefined ? undefined : {grant: m.probe, key: probeKey(socket)}
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
            .then(() => this.onWelcome(conn, cand, m, early, probe))
            .catch((e: Error) => this.fatal(new Error(`tunnel setup failed: ${e.message}`)))
        } else if (m.type === 'refused') {
          // Nothing more will come: close now rather than wait for the node to.
          refusal = m.reason
          conn.close('refused by the node')
        } else if (m.type === 'probed' && welcomed) {
          if (this.conn === conn) this.probing.onProbed(m.n, m.game)
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
        if (this.conn !== conn) return
        this.conn = null
        const wasCurrent = this.current === cand
        if (wasCurrent) {
          this.current = null
          this.probing.setCurrent(null, null)
        }
        this.dropPeer()
        if (this.phase === 'stopped') return
        if (refusal !== null) return this.nodeRefused(credentials, cand, `node ${this.nodeText()} refused us: ${refusal}`)
        if (!welcomed && cause !== undefined && isFatalTlsError(cause)) {
          return this.nodeRefused(credentials, cand, `TLS with node ${this.nodeText()} failed: ${cause.message}`)
        }
        this.scheduleReconnect(credentials, cand, reason, wasCurrent)
      },
    })
    let askedRecords = false
    socket.once('secureConnect', () => {
      // The timeout guarded the connect; left on, it would cut an idle tunnel every 10 s.
      socket.setTimeout(0)
      askedRecords = this.transport.carrier(this.transportOptions()).kind === 'stream' && recordsPossible(socket, NATIVE_MAX_DATA)
      const routes = this.gameRoutes()
      conn.send({type: 'hello', version: PROTOCOL_VERSION, transport: this.transport.name, ...(askedRecords ? {records: RECORDS} : {}), ...(routes.length > 0 ? {routes} : {})})
    })
    this.conn = conn
  }

  /**
   * After a connection to `from` ended: a move to a better node goes there at once; a node
   * that was carrying us and went away is failed over from at once, to the best other node;
   * anything else (no node answered) waits the reconnect backoff, trying the nodes in turn.
   */
  private scheduleReconnect(credentials: Credentials, from: Candidate, reason: string, wasCurrent: boolean): void {
    const move = this.moveTo
    this.moveTo = null
    if (move !== null) {
      // Leaving a node only being dialled is no move between nodes.
      if (wasCurrent) this.record(from, move.cand, move.why)
      this.log.info(`moving from node ${from.name} to ${move.cand.name}: ${move.why}`, {
        event: 'node.moving',
        from: from.name,
        to: move.cand.name,
        peer: move.cand.name,
        endpoint: `${move.cand.host}:${move.cand.port}`,
        reason: move.why,
      })
      return this.connect(credentials, move.cand)
    }
    const next = this.nextCandidate(from)
    if (wasCurrent && next.key !== from.key) {
      this.record(from, next, `${from.name} lost: ${reason}`)
      this.log.warn(`connection to node ${from.name} (${from.host}:${from.port}) lost (${reason}); failing over to ${next.name} (${next.host}:${next.port})`, {
        event: 'node.failover',
        from: from.name,
        to: next.name,
        peer: next.name,
        endpoint: `${next.host}:${next.port}`,
        reason,
      })
      return this.connect(credentials, next)
    }
    const delay = backoffDelay(this.attempts++, this.config.reconnect.minSeconds, this.config.reconnect.maxSeconds)
    const where = next === from ? '' : ` to node ${next.name} (${next.host}:${next.port})`
    this.log.warn(`connection to node ${from.host}:${from.port} lost (${reason}); reconnecting${where} in ${(delay / 1000).toFixed(1)} s`, {
      event: 'node.lost',
      peer: from.name,
      endpoint: `${from.host}:${from.port}`,
      reason,
      to: next.name,
      retrySeconds: Number((delay / 1000).toFixed(1)),
    })
    this.retryTo = next
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null
      this.retryTo = null
      this.connect(credentials, next)
    }, delay)
  }

  /** The best node to go to after `from`: measured and answering first, never one that refused us. */
  private nextCandidate(from: Candidate): Candidate {
    const best = this.bestMeasured(from)
    if (best !== undefined) return best
    const open = this.openCandidates()
    if (open.length === 0) return from
    // Nothing measured: the next in the list after `from`, round the list.
    const i = open.findIndex((c) => c.key === from.key)
    return open[(i + 1) % open.length]
  }

  /** Candidates that have not refused us lately. */
  private openCandidates(): Candidate[] {
    const now = Date.now()
    return this.candidates.filter((c) => (this.refusedNodes.get(c.key)?.until ?? 0) <= now)
  }

  /** The best-ranked open candidate other than `from` that answers probes, if any. */
  private bestMeasured(from: Candidate): Candidate | undefined {
    const open = this.openCandidates()
    const views = this.probing.views()
    const basis = basisOf(views)
    const ranked = rank(views.filter((v) => v.key !== from.key && open.some((c) => c.key === v.key)), basis).filter((v) => Number.isFinite(score(v, basis)))
    return ranked[0] === undefined ? undefined : open.find((c) => c.key === ranked[0].key)
  }

  /**
   * A node refused us (or its certificate failed). With one node that ends the client, as it
   * always did; with several, that node is left alone for a while, and the client ends only
   * when every node refuses it.
   */
  private nodeRefused(credentials: Credentials, cand: Candidate, message: string): void {
    // The one node listed ends the client; one a reload took out (dialled as a last resort) does not.
    if (this.candidates.length === 1 && this.listed(cand)) return this.fatal(new Error(message))
    this.refusedNodes.set(cand.key, {reason: message, until: Date.now() + REFUSED_NODE_MS})
    const now = Date.now()
    if (this.candidates.every((c) => (this.refusedNodes.get(c.key)?.until ?? 0) > now)) {
      return this.fatal(new Error(`every node refused us; the last: ${message}`))
    }
    this.log.warn(`${message}; trying another node`, {event: 'node.refused', peer: cand.name, endpoint: `${cand.host}:${cand.port}`, reason: message})
    this.scheduleReconnect(credentials, cand, 'refused', false)
  }

  private record(from: Candidate, to: Candidate, why: string): void {
    this.switchCount++
    this.switches.push({at: new Date().toISOString(), from: from.name, to: to.name, reason: why})
    if (this.switches.length > SWITCHES_KEPT) this.switches.shift()
    this.switcher.reset()
  }

  /**
   * While connected: the current node is gone once nothing was heard from it for
   * `selection.deadSeconds` (probes, keepalives, and on a stream carrier any byte); and every
   * second, whether another node has been clearly better for long enough to move.
   */
  private watch(): void {
    this.watchTimer ??= setInterval(() => {
      const cur = this.current
      const conn = this.conn
      if (cur === null || conn === null || this.phase !== 'connected') return
      // Packets from the node count: under a full link, probes may be lost while data flows.
      this.peer?.stats.sync?.()
      const heard = Math.max(this.welcomedAt, this.probing.lastAnswer(cur.key), this.datagrams?.lastAnswer ?? 0, this.peer?.stats.lastSeen ?? 0, this.datagrams === null ? conn.heardAt : 0)
      const dead = this.config.selection.deadSeconds * 1000
      if (Date.now() - heard > dead) conn.close(`nothing heard for ${this.config.selection.deadSeconds} s`)
    }, WATCH_MS)
    this.watchTimer.unref()
    this.selectTimer ??= setInterval(() => {
      const cur = this.current
      if (cur === null || this.conn === null || this.phase !== 'connected' || this.moveTo !== null) return
      if (!this.listed(cur)) return this.leaveUnlisted(cur)
      if (this.candidates.length < 2) return
      const now = Date.now()
      const views = this.probing.views().filter((v) => (this.refusedNodes.get(v.key)?.until ?? 0) <= now || v.key === cur.key)
      const decision = this.switcher.consider(now, views, cur.key)
      const to = decision === null ? undefined : this.candidates.find((c) => c.key === decision.to)
      if (to === undefined || decision === null) return
      this.moveTo = {cand: to, why: `better: ${decision.why}`}
      this.conn.close(`moving to node ${to.name}`)
    }, SELECT_MS)
    this.selectTimer.unref()
  }

  private async onWelcome(conn: ControlConnection, cand: Candidate, w: Welcome, early: SessionParams[], probe: {grant: NonNullable<Welcome['probe']>; key: Buffer} | undefined): Promise<void> {
    const gone = () => conn.isClosed || this.phase === 'stopped'
    if (gone()) return
    if (w.transport !== this.transport.name) throw new Error(`node answered for transport ${JSON.stringify(w.transport)}`)
    // Before anything is applied: a refused address leaves the system as it was.
    checkWelcomeAddress(w, {nodeIp: this.nodeIp, tunInterface: this.config.tunnel.interface, routes: await hostRoutes()})
    if (gone()) return
    // The fleet's nodes given as addresses are known now: kept outside the tunnel with the rest.
    if (this.config.selection.fleet) for (const p of w.fleet ?? []) if (isIP(p.host) === 4) this.nodeIps.add(p.host)
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
    const peer = new Peer(cand.name, ipv4ToNumber(w.gateway), w.gateway, session, link)
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
    this.current = cand
    this.welcomedAt = Date.now()
    this.probing.setCurrent(cand.key, {conn, ip: this.nodeIp, ...(probe === undefined ? {} : probe)})
    if (w.fleet !== undefined && this.config.selection.fleet) {
      this.fleetPeers = w.fleet
      // A welcome names the other nodes: the one that sent it stays a candidate too (unless a
      // reload took it out of the config, and it was dialled only because no other would do).
      const merged = mergeCandidates(this.config.nodes, w.fleet)
      this.candidates = merged.some((c) => c.key === cand.key) || (cand.source === 'config' && !this.listed(cand)) ? merged : [...merged, cand]
      this.probing.setCandidates(this.candidates)
    }
    const up = () => {
      this.phase = 'connected'
      this.welcomedAt = Date.now()
      this.watch()
      const via = datagrams === null ? '' : ` over ${w.carrier.kind} to ${link.endpoint} from ${datagrams.local}`
      this.log.info(`connected to node ${this.nodeText()} as ${w.address}, transport ${this.transport.name}${via}, mtu ${this.mtu}`, {
        event: 'node.connected',
        peer: cand.name,
        endpoint: this.nodeText(),
        address: w.address,
        transport: this.transport.name,
        ...(datagrams === null ? {} : {carrier: `${w.carrier.kind} ${link.endpoint}`}),
        mtu: this.mtu ?? null,
      })
      // Where this client could go instead (the failover issue uses them); said when it changes.
      const others = (w.fleet ?? []).map((n) => `${n.name} (${n.host}:${n.port})`).join(', ')
      if (w.fleet !== undefined && others !== this.fleetSaid) {
        this.log.info(`fleet: ${w.fleet.length} other node(s) serve ${this.transport.name}${others === '' ? '' : `: ${others}`}`, {
          event: 'fleet.nodes',
          nodes: w.fleet.map((n) => n.name),
        })
      }
      this.fleetSaid = others
      this.firstWelcome?.resolve()
      this.firstWelcome = null
    }
    if (datagrams === null) return up()
    // Over datagrams the tunnel is up once the node answers a keepalive: that proves the path.
    datagrams.begin(peer, w.carrier, ipv4ToNumber(this.nodeIp), keepaliveKeys(conn.socket, 'client'), w.keepalive, up)
  }

  /** The datagram socket for this carrier: kept across sessions so the NAT mapping stays. */
  private datagramsFor(carrier: CarrierSpec): ClientDatagrams {
    if (this.datagrams !== null && !this.datagrams.fits(carrier)) {
      // Its count goes on in the next socket's: agent_drops_total never goes back.
      this.closedForeignSource += this.datagrams.counters.foreignSource
      this.datagrams.close()
      this.datagrams = null
    }
    this.datagrams ??= new ClientDatagrams(carrier, this.datapath!, this.mtu!, this.log)
    return this.datagrams
  }

  private async bringUpTunnel(w: Welcome): Promise<void> {
    const ifname = this.config.tunnel.interface
    const wanted = this.config.tunnel.mtu ?? tunnelMtu(this.transport, this.transportOptions())
    if (wanted > w.mtu) this.log.warn(`tunnel.mtu ${wanted} is above the node's ${w.mtu}; using ${w.mtu}`, {event: 'tunnel.mtu_lowered', mtu: w.mtu})
    this.mtu = Math.min(wanted, w.mtu)
    // The virtio header lets the fast path write runs of TCP segments as one packet.
    this.tun = openTun({name: ifname, mtu: this.mtu, vnetHdr: tunOffload(), onError: (e) => this.fatal(new Error(`TUN device ${ifname} failed: ${e.message}`))})
    // No route for the subnet: the tunnel carries `routes:` and the gateway, nothing a node says.
    await configureInterface(ifname, {address: w.address, prefix: w.prefix, noPrefixRoute: true, mtu: this.mtu})
    this.address = w.address
    // The routes to the nodes must stay outside the tunnel, or the tunnel would carry itself.
    this.nodeIps.add(this.nodeIp)
    for (const ip of this.nodeIps) await this.pin(ip, this.config.routes)
    for (const r of await addRoutes(ifname, this.config.routes)) this.recordRoute(r)
    this.datapath = new DataPath(this.tun, 'client')
    // Stream sessions bring their own connections (native records); datagram carriers enable
    // the fast path with their socket.
    if (w.carrier.kind === 'stream') this.datapath.enableFastPath(null, this.mtu)
    this.datapath.start()
    this.log.info(`${ifname} ${w.address}/${w.prefix} up; routes into the tunnel: ${this.config.routes.join(', ')}`, {
      event: 'tunnel.up',
      interface: ifname,
      address: w.address,
      routes: this.config.routes,
    })
  }

  /**
   * Re-reads the config (the file given, or the one the client runs from) and applies what may
   * change live: the routes into the tunnel (added and removed without reconnecting), the nodes
   * it may ride (renode), reconnect pacing and the log level. Anything else that differs, or an invalid file, refuses the whole
   * reload and nothing changes.
   */
  reload(file?: string): Promise<ReloadResult> {
    const run = this.events.reload(Promise.all([this.routing.catch(() => {}), this.welcoming.catch(() => {})]).then(() => this.applyReload(file ?? this.config.file)))
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
    if (live.includes('nodes')) effects.push(...this.renode())
    this.log.setLevel(next.log.level)
    if (live.length > 0) this.log.info(`reloaded ${file}: ${live.join(', ')} changed${effects.length > 0 ? `; ${effects.join('; ')}` : ''}`, {event: 'reload.applied', file, changed: live, effects})
    return {changed: live, effects}
  }

  /**
   * Applies a reloaded `nodes:` list. New nodes become candidates (probed, and kept outside the
   * tunnel once resolved, as a fleet's are); a node no longer listed stops being one, and if it
   * carries us (or is being dialled), the client moves at once to the best other node,
   * break-before-make as for a better node. A fleet's nodes stay candidates as before.
   */
  private renode(): string[] {
    if (this.phase === 'stopped') return []
    const before = this.candidates
    // One node is one candidate, by host:port or by certificate name (mergeCandidates).
    const has = (list: readonly Candidate[], c: Candidate) => list.some((x) => x.key === c.key || x.name === c.name)
    let merged = mergeCandidates(this.config.nodes, this.config.selection.fleet ? this.fleetPeers : [])
    // A fleet's nodes the config never named stay: the node that sent the welcome is in no
    // welcome's list but its own sender's, so it is kept as onWelcome keeps it.
    if (this.config.selection.fleet) for (const c of before) if (c.source === 'fleet' && !has(merged, c)) merged.push(c)
    // The node carrying us (or being dialled), now listed under another host by the config where
    // the fleet named it (or the reverse), keeps the entry in use: no needless reconnect. Between
    // two config entries a new host is the operator moving the node, and is followed.
    for (const live of [this.current, this.target]) {
      if (live === null) continue
      merged = merged.map((c) => (c.key !== live.key && c.name === live.name && (c.source === 'fleet' || live.source === 'fleet') ? live : c))
    }
    this.candidates = merged
    this.probing.setCandidates(merged)
    const added = merged.filter((c) => !has(before, c))
    // New nodes are measured within a second, so a move off a removed node need not wait long.
    if (added.length > 0) this.probing.burst(this.config.selection.startSeconds * 1000)
    const effects = [
      ...added.map((c) => `node ${c.name} (${c.host}:${c.port}) added`),
      ...before.filter((c) => !has(merged, c)).map((c) => `node ${c.name} (${c.host}:${c.port}) removed`),
    ]
    if (this.current !== null) {
      // Carrying us: left at once for the best other (or once one will have us).
      if (!this.listed(this.current)) effects.push(this.leaveUnlisted(this.current))
    } else if (this.conn !== null && !this.listed(this.target)) {
      // Being dialled: that attempt ends, and a listed node is dialled at once.
      const to = this.nextCandidate(this.target)
      if (to.key !== this.target.key) {
        this.moveTo = {cand: to, why: `${this.target.name} removed from the config`}
        this.conn.close(`node ${this.target.name} removed from the config`)
      }
    } else if (this.retryTimer !== null && this.retryTo !== null && !this.listed(this.retryTo)) {
      // Waiting to retry a node now gone: a listed one is tried now, not after the backoff.
      clearTimeout(this.retryTimer)
      this.retryTimer = null
      const from = this.retryTo
      this.retryTo = null
      this.connect(this.credentials!, this.nextCandidate(from))
    }
    return effects
  }

  /** Whether `cand` is among the candidates now (a reload may have taken it out). */
  private listed(cand: Candidate): boolean {
    return this.candidates.some((c) => c.key === cand.key)
  }

  /**
   * The node carrying us is no longer listed: move to the best other one that answers probes
   * (not blindly to one never measured: the tunnel works where it is); until one does, stay,
   * and the selection timer looks again each second. Says which.
   */
  private leaveUnlisted(cur: Candidate): string {
    const to = this.bestMeasured(cur)
    if (to === undefined || this.conn === null || this.moveTo !== null) return `staying on node ${cur.name} until a listed node answers probes`
    this.moveTo = {cand: to, why: `${cur.name} removed from the config`}
    this.conn.close(`moving to node ${to.name}`)
    return `moving from node ${cur.name} to ${to.name}`
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
    const newPins: string[] = []
    try {
      for (const ip of this.nodeIps) if (!this.pins.has(ip) && (await this.pin(ip, [...after]))) newPins.push(ip)
      for (const r of await addRoutes(ifname, added)) this.recordRoute(r)
    } catch (e) {
      for (const ip of newPins) await this.unpin(ip)
      throw e
    }
    // The gateway's route stays even if `routes:` named the same address and no longer does.
    const gone = this.state.routes.filter((r) => r.dev === ifname && removed.includes(r.dst) && r.dst !== this.gatewayRoute?.dst)
    await this.unrecordRoutes(gone)
    const effects = [...added.map((r) => `route ${r} added`), ...removed.map((r) => `route ${r} removed`)]
    for (const ip of [...this.pins.keys()]) {
      const n = ipv4ToNumber(ip)
      if ([...after].some((r) => cidrContains(parseRoutePrefix(r), n))) continue
      await this.unpin(ip)
      effects.push(`route ${ip}/32 (a node, outside the tunnel) removed`)
    }
    return effects
  }

  /**
   * Keeps a node's address outside the tunnel when `routes` cover it (keepEndpointOutside):
   * every node the client may go to, not only the current one, or a failover would carry the
   * tunnel inside itself. True when a route was added.
   */
  private async pin(ip: string, routes: readonly string[]): Promise<boolean> {
    if (this.pins.has(ip)) return false
    const r = await keepEndpointOutside(ip, routes, {tunInterface: this.config.tunnel.interface})
    if (r === null) return false
    this.pins.set(ip, r)
    this.recordRoute(r)
    return true
  }

  private async unpin(ip: string): Promise<void> {
    const r = this.pins.get(ip)
    if (r === undefined) return
    this.pins.delete(ip)
    await this.unrecordRoutes([r])
  }

  /**
   * A node's address learned while the tunnel is up (a fleet's node, a failover's target):
   * pinned if a route covers it. Its real path can no longer be asked for once the tunnel
   * routes cover it, so this can fail; the caller is told why.
   */
  private async pinLate(ip: string): Promise<string | null> {
    if (this.nodeIps.has(ip) && (this.tun === null || this.pins.has(ip))) return null
    this.nodeIps.add(ip)
    if (this.tun === null) return null
    const run = this.routing.then(() => this.pin(ip, this.config.routes))
    this.routing = run.catch(() => {})
    try {
      await run
      return null
    } catch (e) {
      return `cannot keep ${ip} outside the tunnel: ${(e as Error).message}`
    }
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
    this.log.warn(`node moved us from ${this.address} to ${w.address}`, {event: 'tunnel.readdressed', from: this.address ?? null, address: w.address})
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
    this.log.error(e.message, {event: 'agent.failed'})
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
      selection: this.selectionReport(),
      peers: this.peer === null ? [] : [peerReport(this.peer)],
      counters: {...(this.datapath?.counters ?? {}), ...(this.datagrams?.counters ?? {}), ...fastPathCounters(this.datapath?.fastPathStats())},
      totals: totalsReport(this.datapath, this.carrierDrops()),
      events: this.events.report(),
    }
  }

  private selectionReport(): SelectionReport {
    const views = this.probing.views()
    const basis = basisOf(views)
    const scores = new Map(views.map((v) => [v.key, score(v, basis)]))
    return {
      current: this.current?.name ?? null,
      basis,
      candidates: this.probing.report(scores),
      switches: this.switchCount,
      recent: [...this.switches],
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
      this.retryTimer = null
      this.retryTo = null
      if (this.ticker !== null) clearInterval(this.ticker)
      if (this.watchTimer !== null) clearInterval(this.watchTimer)
      if (this.selectTimer !== null) clearInterval(this.selectTimer)
      this.probing.close()
      this.firstWelcome?.reject(new Error('stopped before the node welcomed us'))
      this.firstWelcome = null
      this.conn?.close('client stopping')
      await this.welcoming
      this.dropPeer()
      this.statusServer?.close()
      await this.metrics?.close()
      this.datagrams?.close()
      this.datapath?.disableFastPath()
      this.tun?.close()
      return finishTeardown(this.state, this.stateFile, this.log)
    })()
    return this.stopping
  }
}

