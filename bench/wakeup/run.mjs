#!/usr/bin/env node
// What one wake-up of an idle process costs, in C and in Node: ping a TUN device whose owner
// answers the echo itself, 300 pings at 20 ms, in a namespace of its own. Shows why a per-packet
// path through JavaScript cannot match OpenVPN's idle RTT (docs/benchmarks.md, "latency").
// Run as root after `npm run build`: npm run bench:wakeup
import {execFileSync, spawn} from 'node:child_process'
import {copyFileSync, mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join, resolve} from 'node:path'

const here = import.meta.dirname
const root = resolve(here, '../..')
const work = mkdtempSync(join(tmpdir(), 'wakeup-'))
const ns = `wakeup${process.pid}`
const sh = (cmd, args, opts = {}) => execFileSync(cmd, args, {encoding: 'utf8', ...opts})

try {
  sh('gcc', ['-O2', '-o', join(work, 'echo'), join(here, 'echo.c')])
  copyFileSync(join(here, 'probe.c'), join(work, 'probe.c'))
  writeFileSync(join(work, 'binding.gyp'), JSON.stringify({targets: [{target_name: 'probe', sources: ['probe.c']}]}))
  // node-gyp takes Node's headers from npm's config (nodedir), as `npm ci` does for our addons.
  const nodedir = process.env.npm_config_nodedir ?? sh('npm', ['config', 'get', 'nodedir']).trim()
  const gypEnv = {...process.env, ...(nodedir && nodedir !== 'undefined' ? {npm_config_nodedir: nodedir} : {})}
  sh(join(root, 'node_modules/.bin/node-gyp'), ['rebuild'], {cwd: work, stdio: 'ignore', env: gypEnv})
  const probe = join(work, 'build/Release/probe.node')
  writeFileSync(
    join(work, 'probe.cjs'),
    `require(${JSON.stringify(probe)}).start(+process.argv[2], () => {})\nrequire('child_process').execFileSync('sh', ['-c', 'ip addr add 10.77.0.1/24 dev e0; ip link set e0 up'])\n`,
  )
  writeFileSync(
    join(work, 'js.mjs'),
    `import {openTun} from ${JSON.stringify(join(root, 'dist/core/tun/index.js'))}
import {execFileSync} from 'node:child_process'
const dev = openTun({name: 'e0', mtu: 1400})
execFileSync('sh', ['-c', 'ip addr add 10.77.0.1/24 dev e0; ip link set e0 up'])
const cs = (b, s, e) => { let x = 0; for (let i = s; i < e - 1; i += 2) x += (b[i] << 8) | b[i + 1]; while (x >> 16) x = (x & 0xffff) + (x >> 16); return ~x & 0xffff }
dev.start((count, ring) => {
  for (let i = 0; i < count; i++) {
    const o = i * ring.slotSize + ring.headroom, n = ring.lengths[i], b = ring.buf
    if (b[o + 9] !== 1) continue
    for (let j = 0; j < 4; j++) { const t = b[o + 12 + j]; b[o + 12 + j] = b[o + 16 + j]; b[o + 16 + j] = t }
    b[o + 20] = 0; b[o + 22] = 0; b[o + 23] = 0; b.writeUInt16BE(cs(b, o + 20, o + n), o + 22)
    dev.write(b, o, n)
  }
})
`,
  )
  const cases = [
    ['plain C', [join(work, 'echo')]],
    ['libuv in Node, echo in C', [process.execPath, join(work, 'probe.cjs'), '0']],
    ['+ empty JS call (napi_call_function)', [process.execPath, join(work, 'probe.cjs'), '2']],
    ['+ empty JS call (napi_make_callback)', [process.execPath, join(work, 'probe.cjs'), '1']],
    ['our TUN addon + JS echo', [process.execPath, join(work, 'js.mjs')]],
  ]
  console.log('| echo implementation | RTT min / avg / max (ms) |\n| --- | --- |')
  for (const [name, cmd] of cases) {
    sh('ip', ['netns', 'add', ns])
    try {
      sh('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up'])
      const child = spawn('ip', ['netns', 'exec', ns, ...cmd], {stdio: 'ignore'})
      await new Promise((r) => setTimeout(r, 1500))
      const out = sh('ip', ['netns', 'exec', ns, 'ping', '-c', '300', '-i', '0.02', '-q', '10.77.0.2'])
      child.kill('SIGKILL')
      const m = /= ([\d.]+)\/([\d.]+)\/([\d.]+)/.exec(out)
      console.log(`| ${name} | ${m ? `${m[1]} / ${m[2]} / ${m[3]}` : 'no answer'} |`)
    } finally {
      sh('ip', ['netns', 'del', ns])
    }
  }
} finally {
  rmSync(work, {recursive: true, force: true})
}
