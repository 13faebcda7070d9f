/**
 * The agent's Prometheus endpoint (docs/metrics.md), as the node and the client use it: a
 * registry of series read at scrape time from counters the agent keeps anyway (the data path's,
 * the fast path's, admission's, the events it logs), and the HTTP server that serves them.
 * Nothing here runs per packet, nor between scrapes.
 */
import type {Registry} from 'prom-client'
import type {Logger} from '../log.js'
import {registerCommon, takeSnapshot, type Snapshot} from './common.js'
import {registerNode, type NodeMetricsSource} from './node-metrics.js'
import {registerClient, type ClientMetricsSource} from './client-metrics.js'
import {createRegistry} from './registry.js'
import {startMetricsServer, type MetricsServer} from './server.js'
import type {MetricsSettings} from './settings.js'

export {AgentEvents} from './events.js'
export {metricsSettings, type MetricsSettings} from './settings.js'
export type {NodeMetricsSource} from './node-metrics.js'
export type {ClientMetricsSource} from './client-metrics.js'

export type AgentMetricsSource = NodeMetricsSource | ClientMetricsSource

export class AgentMetrics {
  readonly registry: Registry
  private snap: Snapshot | null = null
  private server: MetricsServer | null = null
  /** close() was called: a listen() still on its way closes what it opened. */
  private closed = false
  /** Scrapes run one after another: each reads one snapshot. */
  private rendering: Promise<unknown> = Promise.resolve()

  constructor(
    private readonly source: AgentMetricsSource,
    readonly perPeer: boolean,
  ) {
    this.registry = createRegistry()
    registerCommon(this.registry, source, perPeer, () => (this.snap ??= takeSnapshot(source, perPeer)))
    if (source.role === 'node') registerNode(this.registry, source)
    else registerClient(this.registry, source, perPeer)
  }

  /** One scrape's text: every counter read once, now. */
  render(): Promise<string> {
    const run = this.rendering.then(async () => {
      this.snap = null
      try {
        return await this.registry.metrics()
      } finally {
        this.snap = null
      }
    })
    this.rendering = run.catch(() => {})
    return run
  }

  get contentType(): string {
    return this.registry.contentType
  }

  /**
   * Serves /metrics; rejects, with a message naming the address, if it cannot listen, or if
   * close() came first (the agent stopped while the server was starting: the port is closed
   * again rather than left open).
   */
  async listen(settings: MetricsSettings, log: Logger): Promise<string> {
    if (this.closed) throw new Error('metrics: closed before the endpoint started')
    const server = await startMetricsServer(settings.address, settings.port, {contentType: this.registry.contentType, render: () => this.render()})
    if (this.closed) {
      await server.close()
      throw new Error('metrics: closed before the endpoint started')
    }
    this.server = server
    if (settings.exposed) {
      log.warn(`metrics: serving on ${this.server.endpoint}, not loopback: whoever reaches it reads peer names and traffic (no authentication)`, {event: 'metrics.exposed', endpoint: this.server.endpoint})
    }
    log.info(`metrics on http://${this.server.endpoint}/metrics${this.perPeer ? '' : ' (no per-peer series)'}`, {event: 'metrics.listening', endpoint: this.server.endpoint, perPeer: this.perPeer})
    return this.server.endpoint
  }

  async close(): Promise<void> {
    this.closed = true
    const s = this.server
    this.server = null
    await s?.close()
  }
}
