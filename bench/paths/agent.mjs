// agent itself, one path per transport: the real binary brought up from config files on the
// node and client namespaces, exactly as an operator runs it (fleet PKI from `agent pki`, the
// plugin from `agent plugins install`).
import {udpErrors, udpErrorsLine} from '../lib/udp-errors.mjs'
import {prepareFleet} from '../../dist/testbed/index.js'

/**
 * @param {string} transport
 * @param {{carrier: 'tcp'|'udp'|'ip', baseline: string, name?: string, from?: 'nat'|'public', options?: Record<string, string|number|boolean>}} how
 * @returns {import('./types.mjs').BenchPath}
 */
export function agentPath(transport, how) {
  /** @type {{node?: {child: import('node:child_process').ChildProcess}, client?: {child: import('node:child_process').ChildProcess}, mtu?: string, udp?: {rcvbufErrors: number, inErrors: number}}} */
  const st = {}
  return {
    name: how.name ?? `agent-${transport}`,
    carrier: how.carrier,
    baseline: how.baseline,
    from: how.from ?? 'nat',
    tunnelDevice: 'agtun0',
    async setup(tb, ctx) {
      // The default keepalive (not the tests' fast one): what an operator runs.
      const fleet = await prepareFleet(tb, {transport, keepalive: 10, transportOptions: how.options})
      st.node = await fleet.startNode()
      st.client = await fleet.startClient('alice', 0, {ns: ctx.client})
      st.mtu = /mtu (\d+)/.exec(st.client.output)?.[1]
      ctx.log(`agent-${transport}: node pid ${st.node.pid}, client pid ${st.client.pid}, tunnel mtu ${st.mtu}`)
    },
    async teardown(tb) {
      if (how.carrier === 'udp') st.udp = await udpErrors(tb, tb.names.node)
      if (st.client) await tb.stop(st.client.child)
      if (st.node) await tb.stop(st.node.child)
    },
    pids: () => [st.node?.child.pid, st.client?.child.pid].filter((p) => p !== undefined),
    info: () => [`${how.name ?? `agent-${transport}`}: tunnel mtu ${st.mtu ?? '?'}`, ...(how.carrier === 'udp' ? [udpErrorsLine(how.name ?? `agent-${transport}`, 'node', st.udp)] : [])],
  }
}

export const agentTls = agentPath('tls', {carrier: 'tcp', baseline: 'openvpn-tcp'})
export const agentGre = agentPath('gre', {carrier: 'udp', baseline: 'openvpn-udp'})
// Bare GRE cannot cross the NAT: measured from a client with a public address.
export const agentGreIp = agentPath('gre', {name: 'agent-gre-ip', carrier: 'ip', baseline: 'openvpn-udp', from: 'public', options: {carrier: 'ip'}})
export const agentIpip = agentPath('ipip', {carrier: 'udp', baseline: 'openvpn-udp'})
export const agentIpipIp = agentPath('ipip', {name: 'agent-ipip-ip', carrier: 'ip', baseline: 'openvpn-udp', from: 'public', options: {carrier: 'ip'}})
export const agentIpsec = agentPath('ipsec-over-gre', {name: 'agent-ipsec', carrier: 'udp', baseline: 'openvpn-udp'})
