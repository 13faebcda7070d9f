/**
 * The proxy node: an orchestrator of its parts. The roster (roster.ts) says who may connect,
 * from the config and the CRL (revocations.ts); the address pool (address-pool.ts) gives each
 * client its tunnel address; the control server (control-server.ts) takes handshakes; the
 * sessions (sessions.ts) turn admitted handshakes into peers on the data path; admission
 * (admission.ts) keeps the firewall's admitted set equal to the live sessions. This class
 * brings them up in order, wires them together, re-checks live sessions whenever the roster
 * changes, applies reloads, and takes everything down again.
 */
import {availableParallelism} from 'node:os'
import {existsSync} from 'node:fs'
import type {TLSSocket} from 'node:tls'
import type {Server} from 'node:net'
import {type ResolvedNodeConfig, loadConfig} from '../config/index.js'
import {classifyChange, refusedMessage} from '../config/live-change.js'
import type {CarrierSpec, FastCodec, Transport} from '../transport/contract.js'
import type {Logger} from '../log.js'
import type {TunDevice} from '../tun/device.js'
import {openTun} from '../tun/index.js'
import {loadCredentials} from '../pki/index.js'
import {loadCrl, type RevocationList} from '../pki/crl.js'
import {DataPath} from '../device/datapath.js'
import {LogLimiter} from '../log-limit.js'
import {fastPathDisabled, tunOffload} from '../device/fast-path.js'
import type {Peer} from '../device/peer.js'
import {fastPathCounters, peerReport, totalsReport} from '../device/report.js'
import {DatagramLink} from '../carrier/datagram-link.js'
import {ipv4ToNumber, parseCidr} from '../net/ipv4.js'
import {NodeFirewall} from '../firewall/index.js'
import {configureInterface} from '../routes/index.js'
import {holdIpForward} from '../state/ip-forward.js'
import {type AgentState, StateFile} from '../state/state-file.js'
import {finishTeardown, reclaimStale} from '../state/teardown.js'
import {type ReloadObserver, type ReloadResult, startStatusServer} from '../status/server.js'
import type {PeerReport, StatusReport} from '../status/report.js'
import {tunnelMtu} from '../transport/mtu.js'
import {SESSION_TICK_MS} from '../transport/session-context.js'
import {NodeDatagrams} from './node-datagrams.js'
import {Roster} from './roster.js'
import {AddressPool} from './address-pool.js'
import {ControlServer, type Handshake} from './control-server.js'
import {NodeSessions} from './sessions.js'
import {Admission, ADMISSION_RETRY_MS} from './admission.js'
import {RevocationWatch} from './revocations.js'
import {NodeFleet} from './node-fleet.js'
import {agentVersion} from '../version.js'
import {ProbeTickets} from '../probe/probe-tickets.js'
import {GameProber} from '../probe/game-prober.js'
import {gameTargetRefusal} from '../probe/game-targets.js'
import {AgentEvents, AgentMetrics, metricsSettings, type MetricsSettings} from '../metrics/index.js'

/** workers: "auto" runs one per core, up to this many. */
const MAX_AUTO_WORKERS = 8
/** The FastCodecs worker threads carry themselves (workers.c); the rest is the main thread's. */
const WORKER_CODECS: ReadonlySet<FastCodec['kind']> = new Set(['identity', 'gre'])
/** How often silent datagram sessions are looked for. */
const EXPIRY_CHECK_MS = 5_000

export class NodeAgent {
  private readonly stateFile: StateFile
  private readonly state: AgentState
  private readonly mtu: number
  /** The tunnel subnet's prefix length (the config is validated, so it parses). */
  private readonly prefix: number
  /** The running config: replaced by each reload that applies. */
  private config: ResolvedNodeConfig
  private readonly roster: Roster
  private readonly pool: AddressPool
  private revocations: RevocationWatch | null = null
  private tun: TunDevice | null = null
  private datapath: DataPath | null = null
  /** The config's `fleet:`: the roster from etcd and this node's registry entry. */
  private fleet: NodeFleet | null = null
  /** Lines a stranger can cause (handshake failures, refusals, transport errors), rate-limited. */
  private readonly limited: LogLimiter
  private firewall: NodeFirewall | null = null
  private admission: Admission | null = null
  private sessions: NodeSessions | null = null
  private control: ControlServer | null = null
  private statusServer: Server | null = null
  reloadObserver?: ReloadObserver
  private starting: Promise<void> | null = null
  private stopRequested = false
  private stopping: Promise<string[]> | null = null
  private tearingDown: Promise<string[]> | null = null
  private datagrams: NodeDatagrams | null = null
  private expiry: NodeJS.Timeout | null = null
  /** Threads carrying packets (the main one and its workers). */
  private lanes = 1
  private ticker: NodeJS.Timeout | null = null
  /** Reloads run one at a time. */
  private reloading: Promise<unknown> = Promise.resolve()
  /** What the last re-check of live sessions did, one line per session cut. */
  private lastCuts: string[] = []
  /** Probe tickets of clients weighing this node, and its measurements to their game servers. */
  private tickets: ProbeTickets | null = null
  private game: GameProber | null = null
  /** Counts of handshakes, reloads and revocations, from the events logged (metrics/events.ts). */
  private readonly events = new AgentEvents()
  /** The config's `metrics:`, or null: no endpoint. */
  private readonly metricsSettings: MetricsSettings | null
  private metrics: AgentMetrics | null = null
  private firewallSeconds: number | null = null

  /** Resolves when the node must end by itself (its TUN device failed), with why. */
  readonly ended: Promise<Error>
  private endWith!: (e: Error) => void

  constructor(
    config: ResolvedNodeConfig,
    private readonly transport: Transport,
    runDir: string,
    private readonly log: Logger,
  ) {
    this.log = this.events.tap(log)
    this.config = config
    this.limited = new LogLimiter(this.log)
    this.ended = new Promise((resolve) => (this.endWith = resolve))
    this.stateFile = new StateFile(runDir, config.name)
    this.prefix = parseCidr(config.tunnel.subnet)!.prefix
    this.roster = new Roster({listed: config.clients, any: config.admitAny})
    this.pool = new AddressPool(
      ipv4ToNumber(config.tunnel.address),
      {start: ipv4ToNumber(config.tunnel.pool.start), end: ipv4ToNumber(config.tunnel.pool.end)},
      (name) => this.sessions?.isConnected(name) === true,
    )
    this.pool.setListed(config.clients)
    // The pool first: re-checking a session compares its address with the pool's plan.
    this.roster.subscribe(() => {
      this.pool.setListed(this.roster.entries)
      this.lastCuts = this.recheckSessions()
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
    this.metricsSettings = metricsSettings(config.metrics, 'node')
  }

  /** The metrics endpoint's view of the node: counters it keeps anyway, read at scrape time. */
  private startMetrics(settings: MetricsSettings): Promise<string> {
    this.metrics = new AgentMetrics(
      {
        role: 'node',
        transport: this.transport.name,
        version: agentVersion(),
        events: this.events,
        datapath: () => this.datapath,
        extraDrops: () => this.carrierDrops(),
        sessions: () => this.sessions?.live.size ?? 0,
        roster: () => ({listed: this.roster.entries.length, revoked: this.roster.revokedCount}),
        admission: () => this.admission?.stats ?? null,
        firewallApplySeconds: () => this.firewallSeconds,
      },
      settings.perPeer,
    )
    return this.metrics.listen(settings, this.log)
  }

  /** Drops the datagram socket counts, which no peer owns. */
  private carrierDrops(): Record<string, number> {
    const d = this.datagrams
    return d === null ? {} : {'unknown-session': d.counters.unknownSession, 'keepalive-foreign-rate': d.counters.keepaliveForeignRate, 'send-queue': d.queue.dropped}
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
    if (this.config.workers !== 'auto') this.log.warn(`workers: ${wanted} asked for, running 1: ${why}`, {event: 'workers.fewer', workers: 1, reason: why})
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
    if (this.config.pki.crl !== undefined) {
      this.revocations = this.watchRevocations(this.config.pki.crl, credentials.ca)
      await this.revocations.start()
    }
    if (this.config.fleet !== undefined) {
      this.fleet = this.joinFleet(carrier)
      await this.fleet.start().catch(async (e) => {
        await this.fleet?.close().catch(() => {})
        throw e
      })
    }
    this.checkNotStopped()
    await reclaimStale(this.stateFile, this.log)
    this.stateFile.write(this.state)
    try {
      this.checkNotStopped()
      // First, before the system is touched: a port already taken ends the start here.
      if (this.metricsSettings !== null) await this.startMetrics(this.metricsSettings)
      const {interface: ifname, address, subnet} = this.config.tunnel
      const lanes = this.lanesFor(carrier)
      // The virtio header lets the fast path write runs of TCP segments as one packet; more
      // than one lane needs a queue of the device per worker.
      const tun = openTun({name: ifname, mtu: this.mtu, vnetHdr: tunOffload(), multiQueue: lanes > 1, onError: (e) => this.fail(new Error(`TUN device ${ifname} failed: ${e.message}`))})
      this.tun = tun
      await configureInterface(ifname, {address, prefix: this.prefix, mtu: this.mtu})
      this.checkNotStopped()

      // Shared with any other node of this network namespace (ip-forward.ts).
      await holdIpForward(this.config.name, (before, netns) => {
        this.state.ipForwardBefore = before
        this.state.netns = netns
        this.stateFile.write(this.state)
      })
      this.checkNotStopped()

      const firewall = new NodeFirewall({
        instance: this.config.name,
        tunInterface: ifname,
        subnet,
        egressInterface: this.config.egress.interface,
        snat: this.config.egress.snat,
        admitted: [],
        deny: this.config.egress.deny,
        controlPort: this.config.listen.port,
        controlPerSecond: this.config.listen.limits.newPerSecond,
      })
      this.firewall = firewall
      const applying = performance.now()
      await firewall.apply()
      this.firewallSeconds = (performance.now() - applying) / 1000
      this.checkNotStopped()
      // Not an error: the interface may come later (a PPP link, a VLAN); but say so, because
      // until it exists the MASQUERADE rule matches nothing and clients reach nowhere.
      if (!existsSync(`/sys/class/net/${this.config.egress.interface}`)) {
        this.log.warn(`egress interface ${this.config.egress.interface} does not exist (yet): forwarded traffic has no way out until it does`, {
          event: 'egress.missing',
          interface: this.config.egress.interface,
        })
      }

      const datapath = new DataPath(tun, 'node')
      this.datapath = datapath
      datapath.localAddress = ipv4ToNumber(address)
      datapath.onTransportError = (peer, e) =>
        this.limited.warn('transport error', `transport ${this.transport.name} failed on a packet${peer === null ? '' : ` of ${peer.name}`}: ${(e as Error)?.message ?? e}; dropped it`, {
          event: 'transport.error',
          ...(peer === null ? {} : {peer: peer.name}),
          reason: String((e as Error)?.message ?? e),
        })
      if (carrier.kind !== 'stream') {
        this.datagrams = new NodeDatagrams(carrier, this.transport, datapath, this.config.listen.address, this.mtu, this.log, lanes)
        this.datagrams.start()
        this.expiry = setInterval(() => this.sessions?.expireSilent(this.config.session.idleTimeout), EXPIRY_CHECK_MS)
        this.expiry.unref()
      } else {
        // Stream sessions bring their own connections (native records, native-records.ts).
        datapath.enableFastPath(null, this.mtu)
      }
      datapath.start()
      const onWorkerError = (e: Error) => this.fail(new Error(`a fast path worker failed: ${e.message}`))
      this.lanes = this.datagrams?.startWorkers(tun, onWorkerError, this.config.workers !== 'auto') ?? 1

      const gp = this.config.gameProbe
      // egress.deny read at each want(): a reload that changes it applies to new tickets.
      this.game =
        gp.method === 'off'
          ? null
          : new GameProber({
              method: gp.method,
              port: gp.port,
              intervalMs: gp.intervalSeconds * 1000,
              timeoutMs: 1000,
              maxPerClient: 8,
              maxDestinations: gp.destinations,
              refuse: (dest) => gameTargetRefusal(dest, {deny: this.config.egress.deny, subnet, nodeAddresses: [address, this.config.listen.address]}),
            })
      const tickets = new ProbeTickets({game: this.game, ...(this.datagrams !== null && carrier.kind === 'udp' ? {udpPort: this.datagrams.spec.port} : {})})
      this.tickets = tickets
      if (this.datagrams !== null && carrier.kind === 'udp') this.datagrams.answerProbe = (b, o, l, src) => tickets.answer(b, o, l, src)
      const sessions = new NodeSessions({
        transport: this.transport,
        options: this.transportOptions(),
        mtu: this.mtu,
        prefix: this.prefix,
        gateway: address,
        datapath,
        datagrams: this.datagrams,
        log: this.log,
        limited: this.limited,
        check: (identity) => {
          const a = this.roster.check(identity)
          return a.ok ? null : a.reason
        },
        addressFor: (name) => this.pool.assign(name),
        admit: (address, name) => this.admission!.admit(address, name),
        withdraw: (address, name) => this.admission!.withdraw(address, name),
        closing: () => this.closing,
        ...(this.fleet === null ? {} : {fleetPeers: () => this.fleet?.peers() ?? []}),
        tickets,
      })
      this.sessions = sessions
      this.admission = new Admission(
        firewall,
        () => !this.closing,
        (e) => this.log.error(`withdrawn clients' connections may linger: ${e.message}`, {event: 'admission.conntrack_failed', reason: e.message}),
        (e) => this.log.error(`the firewall's admitted set could not be updated (retrying in ${ADMISSION_RETRY_MS / 1000} s): ${e.message}`, {event: 'admission.failed', reason: e.message}),
      )
      this.ticker = setInterval(() => {
        sessions.tick()
        tickets.sweep()
      }, SESSION_TICK_MS)
      this.ticker.unref()
      const limits = this.config.listen.limits
      this.control = new ControlServer(
        this.config.listen.address,
        this.config.listen.port,
        this.limited,
        (socket: TLSSocket, h: Handshake) => sessions.accept(socket, h),
        {perSource: limits.perSource, total: limits.pending, deadlineMs: limits.handshakeSeconds * 1000},
      )
      this.control.answerProbe = (b, o, l, src) => tickets.answer(b, o, l, src)
      await this.control.listen(credentials)
      this.checkNotStopped()
      this.statusServer = await startStatusServer(this.stateFile.socketPath, {
        status: () => this.report(),
        reload: (file) => this.reload(file),
        reloadObserver: () => this.reloadObserver,
      })
      this.checkNotStopped()
      this.fleet?.register()
      this.log.info(
        `node ${this.config.name} up: ${ifname} ${address}/${this.prefix} mtu ${this.mtu}, ` +
          `transport ${this.transport.name}, listening on ${this.control.endpoint}` +
          `${this.datagrams === null ? '' : ` and ${this.datagrams.listening}`}, ${this.rosterText()}, ` +
          `${this.lanes} worker(s)`,
        {
          event: 'agent.up',
          transport: this.transport.name,
          interface: ifname,
          address,
          endpoint: this.control.endpoint,
          ...(this.datagrams === null ? {} : {carrier: this.datagrams.listening}),
          workers: this.lanes,
        },
      )
    } catch (e) {
      await this.tearDown()
      throw e
    }
  }

  private joinFleet(carrier: CarrierSpec): NodeFleet {
    const config = this.config.fleet!
    return new NodeFleet({
      config,
      name: this.config.name,
      version: agentVersion(),
      transport: this.transport.name,
      controlPort: this.config.listen.port,
      ...(carrier.kind === 'udp' ? {carrier: `udp ${config.advertise ?? this.config.listen.address}:${carrier.port}`} : {}),
      subnet: this.config.tunnel.subnet,
      nodeAddress: this.config.tunnel.address,
      log: this.log,
      apply: (part) => this.roster.setFleet(part),
      figures: () => {
        let rxBytes = 0
        let txBytes = 0
        for (const p of this.datapath?.peers() ?? []) {
          p.stats.sync?.()
          rxBytes += p.stats.rxBytes
          txBytes += p.stats.txBytes
        }
        return {sessions: this.sessions?.live.size ?? 0, rxBytes, txBytes, problems: []}
      },
    })
  }

  private watchRevocations(file: string, caPem: string): RevocationWatch {
    return new RevocationWatch(file, caPem, this.log, (list: RevocationList) => this.roster.setRevoked(list.revoked))
  }

  private rosterText(): string {
    const listed = `${this.roster.entries.length} listed client(s)`
    const any = this.roster.admitsAny ? ' and any other certificate of the CA' : ''
    const crl = this.revocations === null ? '' : `, ${this.roster.revokedCount} revoked`
    return `${listed}${any}${crl}`
  }

  /**
   * The roster changed: every live session is checked again. A client the roster no longer
   * admits is cut and told so (it does not come back); one whose address moved (a new static
   * address, or its lease given to someone's new static one) is disconnected and reconnects to
   * get its new address. Returns a line per session cut.
   */
  private recheckSessions(): string[] {
    const sessions = this.sessions
    if (sessions === null || this.closing) return []
    const cuts: string[] = []
    for (const [name, s] of [...sessions.live]) {
      const admitted = this.roster.check(s.identity)
      if (!admitted.ok) {
        sessions.cut(name, admitted.reason, true)
        cuts.push(`cut ${name}: ${admitted.reason}`)
        continue
      }
      const now = s.peer?.addressText
      const planned = this.pool.current(name)
      if (now !== undefined && planned !== now) {
        const why = planned === undefined ? `its address ${now} is now another client's` : `its address moved from ${now} to ${planned}`
        sessions.cut(name, why, false)
        cuts.push(`moved ${name}: ${why}`)
      }
    }
    return cuts
  }

  /**
   * Re-reads the config (the file given, or the one the node runs from) and applies what may
   * change live: the clients, `any`, the CRL, session and log settings. Anything else that
   * differs, an invalid file, or a CRL that does not verify refuses the whole reload, and
   * nothing changes. Resolves once removed clients are cut and their admission withdrawn.
   */
  reload(file?: string): Promise<ReloadResult> {
    const run = this.events.reload(this.reloading.then(() => this.applyReload(file ?? this.config.file)))
    this.reloading = run.catch(() => {})
    return run
  }

  private async applyReload(file: string): Promise<ReloadResult> {
    if (this.starting === null) throw new Error('the node is not running')
    await this.starting
    if (this.closing) throw new Error('the node is stopping')
    const next = await loadConfig(file)
    if (next.role !== 'node') throw new Error(`${file} configures a client, not a node`)
    const {live, refused} = classifyChange(this.config, next)
    if (refused.length > 0) throw new Error(refusedMessage(refused))
    if (live.length === 0) return this.rereadCrl()

    // The CRL is read and verified before anything changes: a bad one refuses the reload.
    const crlFile = next.pki.crl
    const crl = crlFile === undefined ? null : await loadCrl(crlFile, (await loadCredentials(next.pki)).ca)
    const older = crl === null ? undefined : this.revocations?.refusal(crl)
    if (older !== undefined) throw new Error(`the CRL ${crlFile} is not applied: ${older}; nothing was changed`)
    if (this.closing) throw new Error('the node is stopping')

    const effects: string[] = []
    this.config = next
    this.log.setLevel(next.log.level)
    this.lastCuts = []
    // The roster's subscriber gives the pool the merged list (the fleet's too) before re-checking.
    this.roster.setPolicy({listed: next.clients, any: next.admitAny})
    effects.push(...this.lastCuts)
    this.lastCuts = []
    if (crl === null) {
      if (this.revocations !== null) effects.push('CRL no longer enforced')
      this.revocations?.close()
      this.revocations = null
      this.roster.setRevoked(new Set())
    } else {
      if (this.revocations === null) {
        const credentials = await loadCredentials(next.pki)
        this.revocations = this.watchRevocations(crl.file, credentials.ca)
        await this.revocations.start()
      } else {
        await this.revocations.reload(crl.file)
      }
    }
    effects.push(...this.lastCuts)
    effects.push(...(await this.firewallFollows()))
    this.log.info(`reloaded ${file}: ${live.join(', ')} changed; ${this.rosterText()}${effects.length > 0 ? `; ${effects.join('; ')}` : ''}`, {
      event: 'reload.applied',
      file,
      changed: live,
      effects,
    })
    return {changed: live, effects}
  }

  /**
   * A reload that changes no field still re-reads the CRL: it may have been re-issued at the
   * same path, and the file watch can miss that (a symlink swapped in another directory, a
   * file system without events). One that is not usable refuses the reload.
   */
  private async rereadCrl(): Promise<ReloadResult> {
    const revocations = this.revocations
    if (revocations === null) return {changed: [], effects: []}
    this.lastCuts = []
    await revocations.reload()
    const effects = this.lastCuts
    this.lastCuts = []
    const {error, file} = revocations.status()
    if (error !== undefined) throw new Error(`the CRL ${file} is not applied (the node still enforces the last good one): ${error}`)
    return {changed: [], effects: [...effects, ...(await this.firewallFollows())]}
  }

  /**
   * Waits for the firewall to follow the sessions cut by a reload. Its failure is reported, not
   * thrown: the roster is applied, the cut clients are gone, and admission retries the set.
   */
  private async firewallFollows(): Promise<string[]> {
    try {
      await this.admission?.update()
      return []
    } catch (e) {
      return [`the firewall has not followed yet (retrying): ${(e as Error).message}`]
    }
  }

  /** Something the node cannot carry on without broke: say what, then end (and tear down). */
  private fail(e: Error): void {
    this.log.error(e.message, {event: 'agent.failed'})
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
      counters: {...(this.datapath?.counters ?? {}), ...(this.datagrams?.counters ?? {}), ...(this.datagrams ? {sendDropped: this.datagrams.queue.dropped} : {}), ...fastPathCounters(fast), ...(this.tickets === null ? {} : {...this.tickets.counters, probeTickets: this.tickets.size})},
      ...(this.lanes > 1 && fast != null ? {workers: fast.workers} : {}),
      ...(this.control === null ? {} : {control: {...this.control.gateStatus, logSuppressed: this.limited.suppressedTotal}}),
      ...(this.fleet === null ? {} : {fleet: this.fleet.status()}),
      roster: {
        listed: this.roster.entries.length,
        any: this.roster.admitsAny,
        connected: this.sessions?.live.size ?? 0,
        revoked: this.roster.revokedCount,
        ...(this.revocations === null ? {} : {crl: this.revocations.status()}),
      },
      totals: totalsReport(this.datapath, this.carrierDrops()),
      events: this.events.report(),
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
      // First: other nodes' clients stop being sent here, and the lease goes with the entry.
      await this.fleet?.close().catch((e) => this.log.warn(`fleet: ${(e as Error).message}`, {event: 'fleet.close_failed', reason: (e as Error).message}))
      this.control?.close()
      this.revocations?.close()
      if (this.expiry !== null) clearInterval(this.expiry)
      if (this.ticker !== null) clearInterval(this.ticker)
      this.sessions?.closeAll('node stopping')
      this.game?.close()
      this.statusServer?.close()
      await this.metrics?.close()
      this.datapath?.disableFastPath()
      this.tun?.close()
      this.datagrams?.close()
      await this.admission?.settled()
      this.limited.flush()
      return finishTeardown(this.state, this.stateFile, this.log)
    })()
    return this.tearingDown
  }
}
