/**
 * A registry per agent (never prom-client's global one: tests and benches run several agents'
 * metrics in one process), with prom-client's default process metrics, and helpers for series
 * whose values are read at scrape time from counters the agent already keeps.
 */
import {Registry, collectDefaultMetrics, type Metric} from 'prom-client'

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
 * A metric whose series are whatever `read` says at scrape time (a count the agent keeps):
 * nothing is counted here, and nothing runs between scrapes. The registry formats it like any
 * prom-client metric (it asks get() for name, type and values); unlike Counter and Gauge it
 * keeps no labelled children, so a scrape of 10,000 peers hashes no label sets.
 */
class ReadMetric<L extends string> {
  readonly aggregator = 'sum'

  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: 'counter' | 'gauge',
    private readonly labelNames: readonly L[],
    private readonly read: () => Iterable<Sample<L>>,
  ) {
    if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(name)) throw new Error(`bad metric name ${name}`)
  }

  get(): {name: string; help: string; type: string; aggregator: string; values: {labels: Partial<Record<L, string>>; value: number}[]} {
    const values: {labels: Partial<Record<L, string>>; value: number}[] = []
    for (const [labels, value] of this.read()) {
      if (!Number.isFinite(value) || (this.type === 'counter' && value < 0)) continue
      for (const k in labels) if (!this.labelNames.includes(k)) throw new Error(`${this.name}: label ${k} is not declared`)
      values.push({labels, value})
    }
    return {name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values}
  }

  reset(): void {}
}

function register<L extends string>(registry: Registry, type: 'counter' | 'gauge', spec: Spec<L>): void {
  registry.registerMetric(new ReadMetric(spec.name, spec.help, type, spec.labelNames ?? [], spec.read) as unknown as Metric)
}

/** A counter read at scrape time (the agent keeps the count; it only grows). */
export function readCounter<L extends string>(registry: Registry, spec: Spec<L>): void {
  if (!spec.name.endsWith('_total')) throw new Error(`counter ${spec.name} must end in _total`)
  register(registry, 'counter', spec)
}

/** A gauge read at scrape time. */
export function readGauge<L extends string>(registry: Registry, spec: Spec<L>): void {
  register(registry, 'gauge', spec)
}
