/** A node's own series: its roster, revocations, and how long the firewall takes to follow. */
import type {Registry} from 'prom-client'
import type {MetricsSource} from './common.js'
import {readCounter, readGauge, type Sample} from './registry.js'

export interface NodeMetricsSource extends MetricsSource {
  role: 'node'
  /** Clients listed by name (with `clients: any`, others of the CA may connect too), and revoked certificates enforced. */
  roster(): {listed: number; revoked: number}
  /** The admitted set's applies (admission.ts), null before the firewall is up. */
  admission(): {applies: number; failures: number; secondsTotal: number; lastSeconds: number} | null
  /** Seconds the node's whole ruleset took to apply at start, null before. */
  firewallApplySeconds(): number | null
}

export function registerNode(registry: Registry, source: NodeMetricsSource): void {
  readGauge(registry, {name: 'agent_roster_peers', help: 'Clients the roster lists by name (config and fleet).', read: () => [[{}, source.roster().listed]]})
  readGauge(registry, {name: 'agent_revoked_certificates', help: 'Revoked certificates the node enforces (CRL and fleet).', read: () => [[{}, source.roster().revoked]]})
  readCounter(registry, {
    name: 'agent_revocations_total',
    help: 'Live sessions cut because the roster stopped admitting them (revoked or removed).',
    read: () => [[{}, source.events.revocations]],
  })
  readCounter(registry, {
    name: 'agent_admission_applies_total',
    help: "Changes of the firewall's admitted set applied, by result (ok, failed: retried).",
    labelNames: ['result'] as const,
    read: () => {
      const a = source.admission()
      return a === null ? [] : ([[{result: 'ok'}, a.applies - a.failures], [{result: 'failed'}, a.failures]] as Sample<'result'>[])
    },
  })
  readCounter(registry, {
    name: 'agent_admission_apply_seconds_total',
    help: "Seconds spent applying changes of the firewall's admitted set, in all.",
    read: () => {
      const a = source.admission()
      return a === null ? [] : [[{}, a.secondsTotal]]
    },
  })
  readGauge(registry, {
    name: 'agent_admission_apply_seconds',
    help: "Seconds the last change of the firewall's admitted set took to apply.",
    read: () => {
      const a = source.admission()
      return a === null || a.applies === 0 ? [] : [[{}, a.lastSeconds]]
    },
  })
  readGauge(registry, {
    name: 'agent_firewall_apply_seconds',
    help: "Seconds the node's firewall ruleset took to apply at start.",
    read: () => {
      const s = source.firewallApplySeconds()
      return s === null ? [] : [[{}, s]]
    },
  })
}
