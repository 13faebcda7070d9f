/** Human output of `agent fleet ...`: plain aligned tables, one line per item. */
import type {ClientEntry, FleetStatus, NodeEntry, Revocations} from './admin.js'

export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)))
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()
  return [line(header), ...rows.map(line)].join('\n')
}

/** "4s", "3m12s", "2h05m", "3d04h": short enough for a column. */
export function formatAge(seconds: number | null): string {
  if (seconds === null) return '?'
  const s = Math.floor(seconds)
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`
  return `${Math.floor(s / 86400)}d${String(Math.floor((s % 86400) / 3600)).padStart(2, '0')}h`
}

/** Bytes per second as bits per second, as links are rated: "0 bit/s", "12.3 Mbit/s". */
export function formatRate(bytesPerSecond: number): string {
  const units = ['bit/s', 'kbit/s', 'Mbit/s', 'Gbit/s', 'Tbit/s']
  let v = bytesPerSecond * 8
  let i = 0
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000
    i++
  }
  return i === 0 ? `${Math.round(v)} ${units[0]}` : `${v.toFixed(1)} ${units[i]}`
}

export function formatClients(clients: ClientEntry[]): string {
  if (clients.length === 0) return 'no clients'
  return table(
    ['NAME', 'ADDRESS', 'FINGERPRINT'],
    clients.map((c) => (c.invalid !== undefined ? [c.name, '(invalid value, ignored by nodes)', ''] : [c.name, c.address ?? '(pool)', c.fingerprint ?? '-'])),
  )
}

export function formatRevocations(r: Revocations): string {
  if (r.names.length === 0 && r.serials.length === 0) return 'no revocations'
  return table(
    ['REVOKED', 'AT', 'BY', 'NAME'],
    [
      ...r.names.map((n) => [`name ${n.name}`, n.at || '?', n.by ?? '-', n.name]),
      ...r.serials.map((s) => [`serial ${s.serial}`, s.at || '?', s.by ?? '-', s.name ?? '-']),
    ],
  )
}

export function formatNodes(nodes: NodeEntry[]): string {
  if (nodes.length === 0) return 'no nodes registered'
  return table(
    ['NAME', 'TRANSPORT', 'CONTROL', 'CARRIER', 'SESSIONS', 'RX', 'TX', 'HEALTH', 'HEARTBEAT'],
    nodes.map(({name, record: r, heartbeatAgeSeconds}) =>
      r === null
        ? [name, '?', '?', '?', '?', '?', '?', 'invalid record', '?']
        : [
            name,
            r.transport,
            r.endpoints.control,
            r.endpoints.carrier ?? '-',
            String(r.sessions),
            formatRate(r.throughput.rxBytesPerSecond),
            formatRate(r.throughput.txBytesPerSecond),
            r.health === 'ok' ? 'ok' : `degraded${r.problems?.length ? ` (${r.problems.join('; ')})` : ''}`,
            `${formatAge(heartbeatAgeSeconds)} ago`,
          ],
    ),
  )
}

export function formatFleetStatus(s: FleetStatus): string {
  const members = table(
    ['ENDPOINT', 'STATE', 'LEADER', 'VERSION', 'REVISION', 'MEMBER'],
    s.members.map((m) =>
      m.reachable
        ? [m.endpoint, m.errors?.length ? `up, errors: ${m.errors.join('; ')}` : 'up', m.leader ? 'yes' : 'no', m.version ?? '?', m.revision ?? '?', m.memberId ?? '?']
        : [m.endpoint, `unreachable: ${m.error ?? ''}`, '-', '-', '-', '-'],
    ),
  )
  return [
    `fleet ${s.prefix}: layout version ${s.layoutVersion ?? 'none (run agent fleet init)'}`,
    `  ${s.clients} clients, ${s.revokedNames} names and ${s.revokedSerials} serials revoked, ${s.nodes} nodes registered`,
    '',
    members,
  ].join('\n')
}
