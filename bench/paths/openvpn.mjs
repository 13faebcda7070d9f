// OpenVPN 2.6 baselines (TCP and UDP), as operators run it: TLS mode with certificates,
// AES-256-GCM data channel, userspace data path.
//
// Choices worth knowing when reading the numbers:
// - --disable-dco: this kernel has no ovpn/ovpn-dco module, and the point is the userspace baseline
//   (DCO would also hide the data path's CPU from the process counters).
// - sndbuf/rcvbuf, txqueuelen, tun-mtu, mssfix: OpenVPN defaults (not set here); the negotiated
//   socket buffers are printed from the log under the table.
// - The client uses --route-nopull and routes only the target /32 into the tunnel.
// - The node forwards and masquerades the tunnel subnet out of its egress (set here; OpenVPN does not).
import {udpErrors, udpErrorsLine} from '../lib/udp-errors.mjs'
import {readFileSync} from 'node:fs'
import {join} from 'node:path'
import {makeTestPki} from '../lib/pki.mjs'
import {startLogged} from '../lib/proc.mjs'

const TUN = 'ovpn0'
const PORT = '1194'
const SUBNET = ['10.99.0.0', '255.255.255.0']

/**
 * @param {'tcp' | 'udp'} proto
 * @returns {import('./types.mjs').BenchPath}
 */
export function openvpnPath(proto) {
  /** @type {{server?: import('node:child_process').ChildProcess, client?: import('node:child_process').ChildProcess, logs: string[], udp?: {rcvbufErrors: number, inErrors: number}}} */
  const st = {logs: []}
  const name = `openvpn-${proto}`
  const common = ['--dev', TUN, '--dev-type', 'tun', '--data-ciphers', 'AES-256-GCM', '--cipher', 'AES-256-GCM', '--disable-dco', '--verb', '3']
  return {
    name,
    carrier: proto,
    baseline: name,
    tunnelDevice: TUN,
    async setup(tb, ctx) {
      const pki = makeTestPki(join(tb.dir, 'pki'))
      await tb.sysctl(tb.names.node, {'net.ipv4.ip_forward': 1})
      await tb.exec(tb.names.node, 'iptables', ['-w', '-t', 'nat', '-A', 'POSTROUTING', '-s', `${SUBNET[0]}/24`, '-o', tb.ifaces.nodeEgress, '-j', 'MASQUERADE'], {
        check: true,
      })
      const server = await startLogged(
        tb,
        tb.names.node,
        'openvpn',
        [
          ...common,
          '--proto', proto === 'tcp' ? 'tcp-server' : 'udp',
          '--local', tb.addr.nodeWan,
          '--port', PORT,
          '--server', ...SUBNET,
          '--topology', 'subnet',
          '--ca', pki.ca, '--cert', pki.serverCert, '--key', pki.serverKey, '--dh', 'none',
          '--keepalive', '10', '60',
        ],
        {name: `${name}-server`, ready: /Initialization Sequence Completed/},
      )
      st.server = server.child
      st.logs.push(server.log)
      const client = await startLogged(
        tb,
        ctx.client,
        'openvpn',
        [
          ...common,
          '--client',
          '--proto', proto === 'tcp' ? 'tcp-client' : 'udp',
          '--remote', tb.addr.nodeWan, PORT,
          '--nobind',
          '--ca', pki.ca, '--cert', pki.clientCert, '--key', pki.clientKey, '--remote-cert-tls', 'server',
          '--route-nopull', '--route', tb.addr.target, '255.255.255.255',
        ],
        {name: `${name}-client`, ready: /Initialization Sequence Completed/, timeoutMs: 30_000},
      )
      st.client = client.child
      st.logs.push(client.log)
      ctx.log(`${name}: server pid ${st.server.pid}, client pid ${st.client.pid}`)
    },
    async teardown(tb) {
      if (proto === 'udp') st.udp = await udpErrors(tb, tb.names.node)
      if (st.client) await tb.stop(st.client)
      if (st.server) await tb.stop(st.server)
    },
    pids: () => [st.server?.pid, st.client?.pid].filter((p) => p !== undefined),
    info() {
      const lines = st.logs.flatMap((f) => {
        const who = /client/.test(f) ? 'client' : 'server'
        const text = readFileSync(f, 'utf8')
        const pick = (re) => (text.match(re) ?? []).slice(0, 1).map((l) => `${name} ${who}: ${l.replace(/^.*?(?=[A-Z])/, '')}`)
        return [...pick(/^.*Socket Buffers.*$/m), ...pick(/^.*Data Channel: cipher.*$/m)]
      })
      return [...new Set(lines), ...(proto === 'udp' ? [udpErrorsLine(name, 'server', st.udp)] : [])]
    },
  }
}

export const openvpnTcp = openvpnPath('tcp')
export const openvpnUdp = openvpnPath('udp')
