// wireguard-go from Debian: the other user-space tunnel the agent's node should be measured
// against (issue #6). The kernel here has no wireguard module, so this is WireGuard's own
// user-space data path (TUN + UDP, ChaCha20-Poly1305), multi-threaded, as operators would run
// it on such a machine.
//
// Choices worth knowing when reading the numbers:
// - Interface MTU 1420, as wg-quick sets it; keys made with `wg genkey` at bench time.
// - The client routes only the target /32 into the tunnel; the node forwards and masquerades
//   the tunnel subnet out of its egress (set here, as for OpenVPN).
// - wireguard-go's UAPI socket lives in /var/run/wireguard/<interface>.sock, which is not per
//   namespace: the two ends get interface names of their own, with this process's id in them.
import {udpErrors, udpErrorsLine} from '../lib/udp-errors.mjs'
import {writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {startLogged} from '../lib/proc.mjs'

const PORT = '51820'
const SUBNET = '10.98.0.0/24'
const NODE_ADDR = '10.98.0.1'
const CLIENT_ADDR = '10.98.0.2'
const MTU = '1420'

/** @returns {import('./types.mjs').BenchPath} */
function wireguardPath() {
  /** @type {{node?: import('node:child_process').ChildProcess, client?: import('node:child_process').ChildProcess, udp?: {rcvbufErrors: number, inErrors: number}}} */
  const st = {}
  const id = process.pid % 100000
  const nodeIf = `wgn${id}`
  const clientIf = `wgc${id}`
  return {
    name: 'wireguard-go',
    carrier: 'udp',
    baseline: 'openvpn-udp',
    tunnelDevice: clientIf,
    async setup(tb, ctx) {
      const key = async (file, pub) => {
        const priv = (await tb.exec(tb.names.node, 'wg', ['genkey'], {check: true})).stdout.trim()
        writeFileSync(file, `${priv}\n`, {mode: 0o600})
        const r = await tb.exec(tb.names.node, 'sh', ['-c', `wg pubkey < ${file}`], {check: true})
        writeFileSync(pub, r.stdout)
        return r.stdout.trim()
      }
      const nodeKey = join(tb.dir, 'wg-node.key')
      const clientKey = join(tb.dir, 'wg-client.key')
      const nodePub = await key(nodeKey, `${nodeKey}.pub`)
      const clientPub = await key(clientKey, `${clientKey}.pub`)

      await tb.sysctl(tb.names.node, {'net.ipv4.ip_forward': 1})
      await tb.exec(tb.names.node, 'iptables', ['-w', '-t', 'nat', '-A', 'POSTROUTING', '-s', SUBNET, '-o', tb.ifaces.nodeEgress, '-j', 'MASQUERADE'], {check: true})

      const start = async (ns, ifname, role) => {
        const p = await startLogged(tb, ns, 'wireguard-go', ['-f', ifname], {name: `wireguard-${role}`})
        // Up once its TUN exists and the UAPI socket answers.
        for (let i = 0; ; i++) {
          const r = await tb.exec(ns, 'wg', ['show', ifname])
          if (r.code === 0) break
          if (i === 100) throw new Error(`wireguard-go (${role}) did not come up: ${r.stderr}`)
          await new Promise((res) => setTimeout(res, 100))
        }
        return p.child
      }
      st.node = await start(tb.names.node, nodeIf, 'node')
      await tb.exec(tb.names.node, 'wg', ['set', nodeIf, 'private-key', nodeKey, 'listen-port', PORT, 'peer', clientPub, 'allowed-ips', `${CLIENT_ADDR}/32`], {check: true})
      for (const args of [
        ['addr', 'add', `${NODE_ADDR}/24`, 'dev', nodeIf],
        ['link', 'set', nodeIf, 'mtu', MTU, 'up'],
      ])
        await tb.exec(tb.names.node, 'ip', args, {check: true})

      st.client = await start(ctx.client, clientIf, 'client')
      await tb.exec(
        ctx.client,
        'wg',
        ['set', clientIf, 'private-key', clientKey, 'peer', nodePub, 'endpoint', `${tb.addr.nodeWan}:${PORT}`, 'allowed-ips', `${NODE_ADDR}/32,${tb.addr.target}/32`, 'persistent-keepalive', '25'],
        {check: true},
      )
      for (const args of [
        ['addr', 'add', `${CLIENT_ADDR}/24`, 'dev', clientIf],
        ['link', 'set', clientIf, 'mtu', MTU, 'up'],
        ['route', 'add', `${tb.addr.target}/32`, 'dev', clientIf],
      ])
        await tb.exec(ctx.client, 'ip', args, {check: true})
      ctx.log(`wireguard-go: node pid ${st.node.pid}, client pid ${st.client.pid}, mtu ${MTU}`)
    },
    async teardown(tb) {
      st.udp = await udpErrors(tb, tb.names.node)
      if (st.client) await tb.stop(st.client)
      if (st.node) await tb.stop(st.node)
    },
    pids: () => [st.node?.pid, st.client?.pid].filter((p) => p !== undefined),
    info: () => [`wireguard-go: interface mtu ${MTU}, ChaCha20-Poly1305, user space (no kernel module here)`, udpErrorsLine('wireguard-go', 'node', st.udp)],
  }
}

export const wireguardGo = wireguardPath()
