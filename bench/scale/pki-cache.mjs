// The scale benchmark's fleet PKI, kept between runs: a CA, the node's credential, `count`
// simulated clients' (s00000, s00001, ...) and one real client's ("real"), issued in-process
// with the code of `agent pki issue` (dist/core/pki/certs.js). Issuing 10,000 takes a minute
// or two; reading them back takes a second.
//
// Safe to reuse: a directory is built under a temporary name and renamed to its final one
// only once every credential is written and its manifest (complete.json) is the last file in;
// a directory whose manifest is missing, names another count, or whose files are not all there
// is removed and built again. One directory per count, <cacheRoot>/scale-pki-<count>; a run
// whose largest roster is smaller uses the first clients of a complete larger one.
import {existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {initCa, issue} from '../../dist/core/pki/certs.js'

export const SIM_PREFIX = 's'
export const SIM_PAD = 5
export const REAL_CLIENT = 'real'
const FORMAT = 'agent-bench-scale-pki/1'
/** Issued at once: @peculiar/x509 and the key writes (each fsynced) overlap a little. */
const PARALLEL = 16

export const simName = (i) => `${SIM_PREFIX}${String(i).padStart(SIM_PAD, '0')}`

function complete(dir, count) {
  try {
    const m = JSON.parse(readFileSync(join(dir, 'complete.json'), 'utf8'))
    if (m.format !== FORMAT || m.count !== count) return false
  } catch {
    return false
  }
  const names = ['node1', REAL_CLIENT, ...Array.from({length: count}, (_, i) => simName(i))]
  const files = ['ca.crt', 'ca.key', ...names.flatMap((n) => [`${n}.crt`, `${n}.key`, `${n}.pem`])]
  return files.every((f) => existsSync(join(dir, f)))
}

/**
 * The directory of a fleet PKI with `count` simulated clients, built if missing or incomplete.
 * @returns {Promise<{dir: string, built: boolean, seconds: number}>}
 */
export async function scalePki(cacheRoot, count, log = () => {}) {
  // A complete directory of at least as many clients serves too (the smallest such).
  const cached = existsSync(cacheRoot)
    ? readdirSync(cacheRoot)
        .map((f) => Number(/^scale-pki-(\d+)$/.exec(f)?.[1]))
        .filter((k) => k >= count)
        .sort((a, b) => a - b)
    : []
  for (const k of cached) {
    const dir = join(cacheRoot, `scale-pki-${k}`)
    if (complete(dir, k)) return {dir, built: false, seconds: 0}
  }
  const dir = join(cacheRoot, `scale-pki-${count}`)
  if (existsSync(dir)) {
    log(`PKI cache ${dir} is incomplete: building it again`)
    rmSync(dir, {recursive: true, force: true})
  }
  mkdirSync(cacheRoot, {recursive: true})
  // Left by a run that died while building (its pid is gone).
  for (const f of readdirSync(cacheRoot)) {
    const pid = Number(/^scale-pki-\d+\.tmp-(\d+)$/.exec(f)?.[1])
    if (pid && !existsSync(`/proc/${pid}`)) rmSync(join(cacheRoot, f), {recursive: true, force: true})
  }
  const tmp = `${dir}.tmp-${process.pid}`
  rmSync(tmp, {recursive: true, force: true})
  const t0 = Date.now()
  try {
    await initCa({dir: tmp})
    await issue({dir: tmp, name: 'node1', node: true})
    await issue({dir: tmp, name: REAL_CLIENT, node: false})
    let next = 0
    let done = 0
    const worker = async () => {
      while (next < count) {
        const i = next++
        await issue({dir: tmp, name: simName(i), node: false})
        if (++done % 1000 === 0) log(`issued ${done}/${count} client certificates`)
      }
    }
    await Promise.all(Array.from({length: PARALLEL}, worker))
    writeFileSync(join(tmp, 'complete.json'), JSON.stringify({format: FORMAT, count, created: new Date().toISOString()}) + '\n')
    renameSync(tmp, dir)
  } catch (e) {
    rmSync(tmp, {recursive: true, force: true})
    throw e
  }
  if (!complete(dir, count)) throw new Error(`PKI cache ${dir}: incomplete right after it was built`)
  const seconds = (Date.now() - t0) / 1000
  log(`issued ${count} client certificates in ${seconds.toFixed(0)} s into ${dir}`)
  return {dir, built: true, seconds}
}
