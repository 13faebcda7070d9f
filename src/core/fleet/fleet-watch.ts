/**
 * A node's live view of its fleet in etcd: the roster (clients, revocations) and the registry of
 * nodes, kept by one list and one watch of the fleet's prefix. Watch, don't poll: a change
 * reaches the node as etcd delivers it, one callback per watch response (a batch of keys).
 *
 * - Start: list everything under the prefix at one revision, then watch from the next one.
 * - etcd unreachable: the watch reconnects by itself and resumes from its last revision, so no
 *   change is missed; meanwhile the node keeps the last view it had (nothing admitted is
 *   refused for want of etcd) and says so (status, log).
 * - The revision it would resume from was compacted (or the watch was cancelled for another
 *   reason): list everything again, and watch from there.
 * - Unreachable at start: `start` serves with what the node's own file says and keeps trying in
 *   the background; `refuse` fails the start.
 */
import type {Etcd3, IKeyValue, IWatchResponse, Watcher} from 'etcd3'
import {listPrefix} from './list.js'
import {etcdErrorLine, isAccessError} from './errors.js'
import type {Logger} from '../log.js'
import {applyRosterKey, emptyFleetRoster, LAYOUT_VERSION, parseNodeRecord, type FleetKeys, type FleetRoster, type NodeRecord} from './layout.js'

/** What the node knows of its fleet now. */
export interface FleetView {
  roster: FleetRoster
  /** Other nodes' registry entries (and its own), by name. */
  nodes: Map<string, NodeRecord>
}

export type FleetState = 'connecting' | 'connected' | 'unreachable'

export interface FleetStatus {
  state: FleetState
  /** The last revision applied (0: none yet). */
  revision: number
  /** ISO time of the last state change. */
  since: string
  lastError?: string
  clients: number
  revokedNames: number
  revokedSerials: number
  nodes: number
}

/** How long between tries while etcd does not answer a list. */
const RETRY_MS = 2_000
/**
 * Keys per page when listing. A roster of 100,000 clients is ~16 MB in one range response, past
 * gRPC's 4 MiB limit on a message: the list would fail forever. A page of 5,000 roster keys is
 * about 1 MB (names and values are small by the layout).
 */

export class FleetWatch {
  private view: FleetView = {roster: emptyFleetRoster(), nodes: new Map()}
  private watcher: Watcher | null = null
  private revision = 0
  private state: FleetState = 'connecting'
  private since = new Date().toISOString()
  private lastError: string | undefined
  private retry: NodeJS.Timeout | null = null
  private closed = false

  constructor(
    private readonly etcd: Etcd3,
    private readonly keys: FleetKeys,
    private readonly log: Logger,
    /**
     * Told after a change of the roster (once per watch response or list that touched it); a
     * response that only moved the registry of nodes (heartbeats, every few seconds) is not
     * one: the roster is not rebuilt for it.
     */
    private readonly onChange: (view: FleetView) => void,
  ) {}

  /**
   * Lists and starts watching. Unreachable etcd: with `refuse`, throws; with `start`, resolves
   * at once and keeps trying (the view stays empty until a list succeeds).
   */
  async start(unreachable: 'start' | 'refuse'): Promise<void> {
    try {
      await this.relist()
    } catch (e) {
      if (unreachable === 'refuse' || this.isFatal(e)) throw new Error(`fleet: ${etcdErrorLine(e)}`)
      this.setState('unreachable', etcdErrorLine(e))
      this.log.warn(`fleet: etcd unreachable at start (${etcdErrorLine(e)}): serving with this file's roster, retrying every ${RETRY_MS / 1000} s`, {
        event: 'fleet.etcd.unreachable',
        reason: etcdErrorLine(e),
      })
      this.scheduleRelist()
    }
  }

  get current(): FleetView {
    return this.view
  }

  status(): FleetStatus {
    return {
      state: this.state,
      revision: this.revision,
      since: this.since,
      ...(this.lastError === undefined ? {} : {lastError: this.lastError}),
      clients: this.view.roster.clients.size,
      revokedNames: this.view.roster.revokedNames.size,
      revokedSerials: this.view.roster.revokedSerials.size,
      nodes: this.view.nodes.size,
    }
  }

  close(): void {
    this.closed = true
    if (this.retry !== null) clearTimeout(this.retry)
    const w = this.watcher
    this.watcher = null
    void w?.cancel().catch(() => {})
  }

  /** Everything under the prefix at one revision, then a watch from the next. */
  private async relist(): Promise<void> {
    const res = await listPrefix(this.etcd, `${this.keys.prefix}/`)
    if (this.closed) return
    const version = res.kvs.find((kv) => kv.key.toString() === this.keys.version)?.value.toString()
    if (version !== undefined && version !== LAYOUT_VERSION) {
      throw new FatalFleetError(`the fleet's layout is version ${version}; this agent knows version ${LAYOUT_VERSION} (upgrade the agent)`)
    }
    const view: FleetView = {roster: emptyFleetRoster(), nodes: new Map()}
    for (const kv of res.kvs) this.apply(view, kv.key.toString(), kv.value.toString())
    this.view = view
    this.revision = Number(res.revision)
    this.setState('connected')
    this.onChange(view)
    await this.watchFrom(this.revision + 1)
  }

  private async watchFrom(revision: number): Promise<void> {
    const old = this.watcher
    this.watcher = null
    await old?.cancel().catch(() => {})
    const w = await this.etcd.watch().prefix(`${this.keys.prefix}/`).startRevision(String(revision)).create()
    if (this.closed) return void w.cancel().catch(() => {})
    this.watcher = w
    w.on('data', (res: IWatchResponse) => this.onData(res))
    w.on('disconnected', (err: Error) => {
      if (this.state === 'connected') {
        this.log.warn(`fleet: lost etcd (${etcdErrorLine(err)}): serving with the last roster it gave (revision ${this.revision})`, {
          event: 'fleet.etcd.lost',
          reason: etcdErrorLine(err),
          revision: this.revision,
        })
      }
      this.setState('unreachable', etcdErrorLine(err))
    })
    w.on('connected', () => {
      if (this.state !== 'connected') this.log.info(`fleet: etcd is back; resuming from revision ${this.revision + 1}`, {event: 'fleet.etcd.back', revision: this.revision + 1})
      this.setState('connected')
    })
    // Cancelled by etcd: most often the revision to resume from was compacted. List again.
    w.on('error', (err: Error) => {
      if (this.watcher !== w || this.closed) return
      this.watcher = null
      this.log.warn(`fleet: watch ended (${etcdErrorLine(err)}); listing the fleet again`, {event: 'fleet.watch.ended', reason: etcdErrorLine(err)})
      this.setState('unreachable', etcdErrorLine(err))
      void this.relist().catch((e) => {
        this.setState('unreachable', etcdErrorLine(e))
        this.scheduleRelist()
      })
    })
  }

  private onData(res: IWatchResponse): void {
    if (this.closed || res.events.length === 0) return
    let roster = false
    for (const ev of res.events) {
      const kv: IKeyValue = ev.kv
      if (this.apply(this.view, kv.key.toString(), ev.type === 'Delete' ? null : kv.value.toString())) roster = true
    }
    this.revision = Math.max(this.revision, Number(res.header.revision))
    if (this.state !== 'connected') this.setState('connected')
    if (roster) this.onChange(this.view)
  }

  /** Applies one key to `view`; true when it was the roster's (not the registry's). */
  private apply(view: FleetView, key: string, value: string | null): boolean {
    if (key.startsWith(this.keys.nodes)) {
      const name = key.slice(this.keys.nodes.length)
      if (value === null) view.nodes.delete(name)
      else {
        const record = parseNodeRecord(value)
        if (record !== null) view.nodes.set(name, record)
      }
      return false
    }
    return applyRosterKey(this.keys, view.roster, key, value)
  }

  private scheduleRelist(): void {
    if (this.closed || this.retry !== null) return
    this.retry = setTimeout(() => {
      this.retry = null
      this.relist().catch((e) => {
        if (e instanceof FatalFleetError) this.log.error(`fleet: ${e.message}; keeping the last roster`, {event: 'fleet.layout.unknown', reason: e.message})
        this.setState('unreachable', etcdErrorLine(e))
        this.scheduleRelist()
      })
    }, RETRY_MS)
    this.retry.unref()
  }

  private setState(state: FleetState, error?: string): void {
    if (state !== this.state) this.since = new Date().toISOString()
    this.state = state
    this.lastError = state === 'connected' ? undefined : error
  }

  private isFatal(e: unknown): boolean {
    return e instanceof FatalFleetError || isAccessError(e)
  }
}

class FatalFleetError extends Error {}
