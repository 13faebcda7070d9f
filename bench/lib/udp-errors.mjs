// UDP datagrams a namespace's kernel dropped because a socket's receive buffer was full
// (/proc/net/snmp Udp RcvbufErrors): the "socket buffers sized so the node does not drop at its
// receive queue" check of issue #6. Each path has fresh namespaces, so the count is the run's.

/**
 * @param {import('../../dist/testbed/index.js').Testbed} tb
 * @param {string} ns
 * @returns {Promise<{rcvbufErrors: number, inErrors: number} | undefined>}
 */
export async function udpErrors(tb, ns) {
  const r = await tb.exec(ns, 'cat', ['/proc/net/snmp'])
  if (r.code !== 0) return undefined
  const lines = r.stdout.split('\n').filter((l) => l.startsWith('Udp:'))
  if (lines.length < 2) return undefined
  const keys = lines[0].split(/\s+/).slice(1)
  const values = lines[1].split(/\s+/).slice(1).map(Number)
  const get = (k) => values[keys.indexOf(k)] ?? 0
  return {rcvbufErrors: get('RcvbufErrors'), inErrors: get('InErrors')}
}

/** One line for the table's notes. */
export function udpErrorsLine(name, who, e) {
  return e === undefined ? `${name} ${who}: UDP receive errors unknown` : `${name} ${who}: UDP receive-buffer drops ${e.rcvbufErrors} (UDP InErrors ${e.inErrors}) over the whole run`
}
