/**
 * A registry per agent (never prom-client's global one: tests and benches run several agents'
 * metrics in one process), with prom-client's default process metrics, and helpers for series
 * whose values are read at scrape time from counters the agent already keeps.
 */
import {Counter, Gauge, Registry, collectDefaultMetrics} from 'prom-client'

const LINT_FAILING_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']

export function createRegistry(): Registry {
  const registry = new Registry()
  collectDefaultMetrics({register: registry})
  // Gauges that prom-client names with `_total`, which `promtool check metrics` rejects (a
  // non-counter must not end in _total): the handle and request counts are not worth a lint error.
  for (const name of LINT_FAILING_DEFAULTS) registry.removeSingleMetric(name)
  return registry
}

/** One series' labels and its value. */
export type Sample<L extends string> = readonly [Partial<Record<L, string>>, number]

interface Spec<L extends string> {
  name: string
  help: string
  labelNames?: readonly L[]
  /** The series as they are now; called once per scrape. */
  read: () => Iterable<Sample<L>>
}

/**
 * A counter whose values are whatever `read` says at scrape time (a total the agent keeps):
 * nothing is counted here, and nothing runs between scrapes.
 */
export function readCounter<L extends string>(registry: Registry, spec: Spec<L>): Counter<L> {
  return new Counter<L>({
    name: spec.name,
    help: spec.help,
    labelNames: spec.labelNames ?? [],
    registers: [registry],
    collect() {
      this.reset()
      for (const [labels, value] of spec.read()) if (Number.isFinite(value) && value >= 0) this.inc(labels as Partial<Record<L, string>>, value)
    },
  })
}

/** A gauge read at scrape time. */
export function readGauge<L extends string>(registry: Registry, spec: Spec<L>): Gauge<L> {
  return new Gauge<L>({
    name: spec.name,
    help: spec.help,
    labelNames: spec.labelNames ?? [],
    registers: [registry],
    collect() {
      this.reset()
      for (const [labels, value] of spec.read()) if (Number.isFinite(value)) this.set(labels as Partial<Record<L, string>>, value)
    },
  })
}
