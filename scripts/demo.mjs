#!/usr/bin/env node
// The demo an operator runs first: a proxy node and a client behind a home NAT, each in its own
// network namespace on this machine, the client's traffic to one "game server" address routed
// through the tunnel, shown with ping, a TCP check and `agent status`, then everything removed.
// Nothing leaves the machine: every address lives inside namespaces this script creates.
import {execFileSync, spawn} from 'node:child_process'
import {mkdirSync, writeFileSync} from 'node:fs'
import {join, resolve} from 'node:path'
import {createTestbed, probeEcho, startEchoServer} from '../dist/testbed/index.js'

const root = resolve(import.meta.dirname, '..')
const bin = join(root, 'bin/run.js')
const transport = process.argv[2] ?? 'tls'
const say = (s) => console.log(`\n\x1b[1m== ${s}\x1b[0m`)
const indent = (text, prefix = '   ') => text.trimEnd().split('\n').map((l) => prefix + l).join('\n') + '\n'

const tb = await createTestbed({prefix: 'demo', clients: 1})
const children = []
let failed = false
try {
  const env = (ns) => ({...process.env, AGENT_RUN_DIR: join(tb.nsDir(ns), 'run'), AGENT_DATA_DIR: join(tb.dir, 'data')})
  const agent = (args, ns) => {
    const cmd = ns ? ['ip', ['netns', 'exec', ns, process.execPath, bin, ...args]] : [process.execPath, [bin, ...args]]
    const out = execFileSync(cmd[0], cmd[1], {env: env(ns ?? tb.names.node), encoding: 'utf8'})
    process.stdout.write(indent(out))
  }
  const show = (ns, cmd, args) => {
    console.log(`   $ ${cmd} ${args.join(' ')}   (in ${ns.replace(tb.id + '-', '')})`)
    const r = execFileSync('ip', ['netns', 'exec', ns, cmd, ...args], {encoding: 'utf8'})
    if (r.trim() !== '') process.stdout.write(indent(r))
  }

  say(`testbed: client ${tb.addr.client[0]} behind NAT ${tb.addr.natWan} -> node ${tb.addr.nodeWan} -> game server ${tb.addr.target}`)
  const pki = join(tb.dir, 'pki')
  say('agent pki: a CA for this fleet, the node credential and a client credential')
  agent(['pki', 'init', '--dir', pki])
  agent(['pki', 'issue', 'node1', '--node', '--dir', pki])
  agent(['pki', 'issue', 'alice', '--dir', pki])

  say(`agent plugins install ${transport} (offline, from the bundled tarball)`)
  agent(['plugins', 'install', transport])
  agent(['plugins'])

  const configs = join(tb.dir, 'configs')
  mkdirSync(configs, {recursive: true})
  const nodeYaml = join(configs, 'node1.yaml')
  const aliceYaml = join(configs, 'alice.yaml')
  writeFileSync(
    nodeYaml,
    `role: node\nname: node1\ntransport: ${transport}\nlisten: {port: 443}\ntunnel: {interface: agent0, subnet: 10.8.0.0/24}\n` +
      `egress: {interface: ${tb.ifaces.nodeEgress}, snat: masquerade}\npki: {bundle: ${pki}/node1.pem}\nclients:\n  - name: alice\n`,
  )
  writeFileSync(
    aliceYaml,
    `role: client\nname: alice\ntransport: ${transport}\nnode: {host: ${tb.addr.nodeWan}, port: 443, name: node1}\n` +
      `routes: [${tb.addr.target}/32]\ntunnel: {interface: agent0}\npki: {bundle: ${pki}/alice.pem}\n`,
  )
  say('agent config validate')
  agent(['config', 'validate', nodeYaml])
  agent(['config', 'validate', aliceYaml])

  const up = (ns, file, ready) =>
    new Promise((resolveUp, reject) => {
      const child = spawn('ip', ['netns', 'exec', ns, process.execPath, bin, 'up', '--config', file], {env: env(ns), stdio: ['ignore', 'pipe', 'pipe']})
      children.push(child)
      let out = ''
      let partial = ''
      const onData = (b) => {
        out += b
        const lines = (partial + b).split('\n')
        partial = lines.pop()
        for (const l of lines) console.log(`   | ${l}`)
        if (ready.test(out)) resolveUp(child)
      }
      child.stdout.on('data', onData)
      child.stderr.on('data', onData)
      child.once('exit', (code) => reject(new Error(`agent up exited with ${code}`)))
    })
  say('agent up on the node')
  await up(tb.names.node, nodeYaml, /node node1 up/)
  say('agent up on the client')
  await up(tb.names.client[0], aliceYaml, /connected to node/)

  say('the client routes only the game server into the tunnel')
  show(tb.names.client[0], 'ip', ['route', 'show'])
  say('ping the game server from the client, through the tunnel')
  show(tb.names.client[0], 'ping', ['-c', '3', '-i', '0.3', tb.addr.target])
  const echo = await startEchoServer(tb, tb.names.target)
  const seen = await probeEcho(tb, tb.names.client[0], tb.addr.target, echo.port, {proto: 'tcp'})
  say(`TCP to the game server: it sees the connection coming from ${seen.peer?.address} (the node's egress address)`)
  say('only the authorized client is forwarded: the node\'s FORWARD chain, and its set of admitted clients')
  show(tb.names.node, 'iptables', ['-S', 'AGENT-node1-FWD'])
  show(tb.names.node, 'ipset', ['list', 'agent-node1'])
  say('agent status on the node')
  agent(['status'], tb.names.node)
  say('agent down on both (SIGTERM to the running agents), then nothing of theirs is left')
  agent(['down', '--config', aliceYaml], tb.names.client[0])
  agent(['down', '--config', nodeYaml], tb.names.node)
  show(tb.names.node, 'ip', ['-o', 'link', 'show', 'type', 'tun'])
  show(tb.names.node, 'sh', ['-c', 'iptables-save | grep -c AGENT || true'])
  if (seen.peer?.address !== tb.addr.nodeEgress) throw new Error('the game server did not see the node as the source')
  say('demo finished: traffic flowed client -> NAT -> node -> game server and back; all removed')
} catch (e) {
  failed = true
  console.error(`\ndemo failed: ${e.message}`)
} finally {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM')
  await tb.destroy()
}
process.exit(failed ? 1 : 0)
