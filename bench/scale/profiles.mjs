// Reading what `node --cpu-prof` and `--heapsnapshot-signal` leave, for bench/scale.mjs --profile
// (and by hand: node bench/scale/profiles.mjs FILE.cpuprofile|FILE.heapsnapshot [fromUs toUs]).
import {readFileSync} from 'node:fs'
import {relative} from 'node:path'

const ROOT = new URL('../..', import.meta.url).pathname

/** "function file:line" of a V8 call frame, with the file relative to the repository. */
function frameKey(cf) {
  const fn = cf.functionName || '(anonymous)'
  if (!cf.url) return fn
  let file = cf.url.replace(/^file:\/\//, '')
  if (file.startsWith(ROOT)) file = relative(ROOT, file)
  else if (file.includes('/node_modules/')) file = file.slice(file.lastIndexOf('/node_modules/') + 1)
  return `${fn} ${file}:${cf.lineNumber + 1}`
}

/**
 * Self and inclusive time per function from a .cpuprofile, over the samples taken between
 * fromUs and toUs (V8's clock: CLOCK_MONOTONIC in microseconds, as process.hrtime()).
 * @returns {{totalMs: number, idleMs: number, busyMs: number, self: Array<[string, number]>, inclusive: Array<[string, number]>, byFile: Array<[string, number]>, window: [number, number]}}
 */
export function summarizeCpuProfile(file, fromUs = -Infinity, toUs = Infinity) {
  const p = JSON.parse(readFileSync(file, 'utf8'))
  const byId = new Map(p.nodes.map((n) => [n.id, n]))
  const parent = new Map()
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  const self = new Map()
  const incl = new Map()
  const byFile = new Map()
  let t = p.startTime
  let total = 0
  let idle = 0
  let first = Infinity
  let last = -Infinity
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i]
    // A sample's time is the gap to the next one (the last sample gets none).
    const dt = (p.timeDeltas[i + 1] ?? 0) / 1000
    if (t < fromUs || t > toUs) continue
    first = Math.min(first, t)
    last = Math.max(last, t)
    const node = byId.get(p.samples[i])
    const key = frameKey(node.callFrame)
    total += dt
    if (node.callFrame.functionName === '(idle)') {
      idle += dt
      continue
    }
    self.set(key, (self.get(key) ?? 0) + dt)
    const f = node.callFrame.url ? frameKey({...node.callFrame, functionName: ''}).replace(/^\(anonymous\) /, '').replace(/:\d+$/, '') : node.callFrame.functionName
    byFile.set(f, (byFile.get(f) ?? 0) + dt)
    const seen = new Set()
    for (let id = node.id; id !== undefined; id = parent.get(id)) {
      const k = frameKey(byId.get(id).callFrame)
      if (seen.has(k)) continue
      seen.add(k)
      incl.set(k, (incl.get(k) ?? 0) + dt)
    }
  }
  const sorted = (m) => [...m.entries()].sort((a, b) => b[1] - a[1])
  return {totalMs: total, idleMs: idle, busyMs: total - idle, self: sorted(self), inclusive: sorted(incl), byFile: sorted(byFile), window: [first, last]}
}

/**
 * What a heap snapshot holds: self size summed per node type and per constructor/name.
 * @returns {{totalBytes: number, nodes: number, byType: Array<[string, number, number]>, byName: Array<[string, number, number]>}}
 */
export function summarizeHeapSnapshot(file) {
  const s = JSON.parse(readFileSync(file, 'utf8'))
  const fields = s.snapshot.meta.node_fields
  const types = s.snapshot.meta.node_types[0]
  const width = fields.length
  const iType = fields.indexOf('type')
  const iName = fields.indexOf('name')
  const iSize = fields.indexOf('self_size')
  const byType = new Map()
  const byName = new Map()
  let total = 0
  const n = s.nodes.length / width
  for (let k = 0; k < n; k++) {
    const o = k * width
    const type = types[s.nodes[o + iType]]
    const size = s.nodes[o + iSize]
    total += size
    const bt = byType.get(type) ?? [0, 0]
    bt[0] += size
    bt[1]++
    byType.set(type, bt)
    // Strings and code are grouped by their type: their "names" are their contents.
    const name = type === 'object' || type === 'closure' || type === 'native' || type === 'hidden' ? `${type}: ${String(s.strings[s.nodes[o + iName]]).slice(0, 80)}` : type
    const bn = byName.get(name) ?? [0, 0]
    bn[0] += size
    bn[1]++
    byName.set(name, bn)
  }
  const sorted = (m) => [...m.entries()].map(([k, [b, c]]) => [k, b, c]).sort((a, b) => b[1] - a[1])
  return {totalBytes: total, nodes: n, byType: sorted(byType), byName: sorted(byName)}
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [file, from, to] = process.argv.slice(2)
  if (file.endsWith('.heapsnapshot')) {
    const h = summarizeHeapSnapshot(file)
    console.log(`${(h.totalBytes / 2 ** 20).toFixed(1)} MiB in ${h.nodes} objects`)
    for (const [k, b, c] of h.byName.slice(0, 30)) console.log(`${(b / 2 ** 20).toFixed(2).padStart(8)} MiB ${String(c).padStart(8)}  ${k}`)
  } else {
    const c = summarizeCpuProfile(file, from === undefined ? -Infinity : Number(from), to === undefined ? Infinity : Number(to))
    console.log(`${(c.totalMs / 1000).toFixed(1)} s sampled, ${(c.busyMs / 1000).toFixed(1)} s busy`)
    for (const [k, ms] of c.self.slice(0, 30)) console.log(`${((ms / c.busyMs) * 100).toFixed(1).padStart(5)}%  ${k}`)
  }
}
