/**
 * The config's `metrics:` as the agent runs it (docs/metrics.md). Absent: no endpoint at all.
 * `{}`: loopback only, on the role's own port, so a node and a client can share a machine.
 * A non-loopback address must be written out, and is worth a warning: the series name peers
 * and show their traffic to whoever can reach the port (there is no authentication).
 */
export const DEFAULT_METRICS_PORT = {node: 9469, client: 9470} as const

export interface MetricsConfig {
  listen?: string
  perPeer?: boolean
}

export interface MetricsSettings {
  address: string
  port: number
  /** false: no `peer` label anywhere, so the series count does not follow the roster. */
  perPeer: boolean
  /** The address is not in 127.0.0.0/8: anyone who reaches it reads the metrics. */
  exposed: boolean
}

/** Why `listen` is not an IPv4 address and a port from 1 to 65535, or undefined if it is. */
export function listenProblem(listen: string): string | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3}):(\d{1,5})$/.exec(listen)
  if (m === null) return `${JSON.stringify(listen)} must be an IPv4 address and a port such as 127.0.0.1:9469`
  if (m.slice(1, 5).some((o) => Number(o) > 255 || (o.length > 1 && o.startsWith('0')))) return `${JSON.stringify(listen)} has a bad IPv4 address`
  const port = Number(m[5])
  if (port < 1 || port > 65535) return `port ${m[5]} must be from 1 to 65535`
  return undefined
}

/** The settings, or null when the config has no `metrics:` (the endpoint is off). Throws on a bad listen. */
export function metricsSettings(config: MetricsConfig | undefined, role: 'node' | 'client'): MetricsSettings | null {
  if (config === undefined) return null
  const listen = config.listen ?? `127.0.0.1:${DEFAULT_METRICS_PORT[role]}`
  const problem = listenProblem(listen)
  if (problem !== undefined) throw new Error(`metrics.listen: ${problem}`)
  const colon = listen.lastIndexOf(':')
  const address = listen.slice(0, colon)
  return {address, port: Number(listen.slice(colon + 1)), perPeer: config.perPeer ?? true, exposed: !address.startsWith('127.')}
}
