/**
 * What the wrappers of our N-API addons share (src/core/tun/linux.ts over agent_tun,
 * src/core/carrier/datagram.ts over agent_net): finding and loading <name>.node, and the rule
 * for an error the addon reports while reading.
 *
 * Where the addon is looked for, first found wins (the order of node-gyp-build, whose layout the
 * release artifact follows, docs/install.md):
 *   1. AGENT_NATIVE_ADDON=/path/to/agent_native.node: that file and no other. The fuzzer
 *      (scripts/fuzz.mjs) runs the real agent on an AddressSanitizer build of the same sources.
 *   2. build/Release/<name>.node: built from binding.gyp by node-gyp (a clone, or an install of
 *      the artifact where no prebuilt fitted).
 *   3. prebuilds/<platform>-<arch>/<name>.node: the N-API build the release artifact carries
 *      (scripts/release.mjs), one file for every Node.js from 20 on.
 */
import {existsSync, readFileSync} from 'node:fs'
import {createRequire} from 'node:module'
import {dirname, join, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'

export interface AddonSpec {
  /** The wrapper's import.meta.url: the search for the package root starts there. */
  from: string
  /** The binding.gyp target: the file is build/Release/<name>.node. */
  name: string
  /** What the addon is, for the error when it is missing: "the TUN addon". */
  what: string
  /** err.code when it cannot be found: "ERR_AGENT_TUN_ADDON". */
  code: string
}

/**
 * A function that loads the addon on its first call and returns the same module after, so
 * importing a wrapper never fails on a machine without the build. A failed load is retried.
 */
export function addonLoader<T>(spec: AddonSpec): () => T {
  let module: T | undefined
  return () => {
    if (module === undefined) module = loadAddon(spec) as T
    return module
  }
}

/** The environment variable that points the agent_native addon at another build. */
export const ADDON_OVERRIDE_ENV = 'AGENT_NATIVE_ADDON'

function loadAddon(spec: AddonSpec): unknown {
  const override = spec.name === 'agent_native' ? process.env[ADDON_OVERRIDE_ENV] : undefined
  if (override !== undefined && override !== '') {
    if (!existsSync(override)) throw codeError(`${spec.what} named by ${ADDON_OVERRIDE_ENV} is missing: ${override}`, spec.code)
    return createRequire(spec.from)(resolve(override))
  }
  const root = packageRoot(spec)
  const candidates = addonCandidates(root, spec.name)
  const file = candidates.find((f) => existsSync(f))
  if (file === undefined) {
    const hint = 'run "npx node-gyp rebuild" in the package, which needs a C compiler (docs/install.md)'
    throw codeError(`${spec.what} is not built: ${candidates.join(' and ')} are missing (${hint})`, spec.code)
  }
  return createRequire(spec.from)(file)
}

/**
 * Where the addon <name> is looked for under the package root, in order: node-gyp's build, then
 * the prebuilt of this platform and architecture (scripts/install.mjs uses the same list).
 */
export function addonCandidates(root: string, name: string): string[] {
  return [join(root, 'build', 'Release', `${name}.node`), join(root, 'prebuilds', `${process.platform}-${process.arch}`, `${name}.node`)]
}

/** The directory of the "agent" package.json above the wrapper (dist/ or src/, built or not). */
function packageRoot(spec: AddonSpec): string {
  let dir = dirname(fileURLToPath(spec.from))
  for (;;) {
    if (isAgentPackage(join(dir, 'package.json'))) return dir
    const parent = dirname(dir)
    if (parent === dir) {
      throw codeError(`no "agent" package.json above ${fileURLToPath(spec.from)}`, spec.code)
    }
    dir = parent
  }
}

function isAgentPackage(file: string): boolean {
  if (!existsSync(file)) return false
  try {
    return (JSON.parse(readFileSync(file, 'utf8')) as {name?: unknown}).name === 'agent'
  } catch {
    return false // unreadable or not JSON: not ours, keep walking up
  }
}

/** An Error with err.code, as the addons throw them. */
export function codeError(message: string, code: string): Error {
  return Object.assign(new Error(message), {code})
}

/**
 * What a wrapper does when its addon reports that reading failed for good: close first, then
 * hand the error to onError, or without one throw it (from the addon's callback, so it becomes
 * an uncaught exception and cannot go unnoticed).
 */
export function closeAndReport(
  handle: {close(): void},
  onError: ((err: Error) => void) | undefined,
  err: Error,
): void {
  handle.close()
  if (onError === undefined) throw err
  onError(err)
}

/** An integer option of a native wrapper in [min, max], or a RangeError-coded error naming it. */
export function checkInt(what: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw codeError(`${what} must be an integer from ${min} to ${max}, got ${value}`, 'ERR_OUT_OF_RANGE')
  }
}
