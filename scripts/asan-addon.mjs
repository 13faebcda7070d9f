#!/usr/bin/env node
// The agent_native addon built with AddressSanitizer (and UndefinedBehaviorSanitizer), for the
// fuzzer (scripts/fuzz.mjs): the
// same C sources as binding.gyp's, compiled by cc into build-asan/ so build/Release, which
// everything else loads, is never touched. Node itself is not ASan-built, so a process that
// loads this addon must start with the ASan runtime preloaded (asanEnv below).
// Run directly, it builds (if a source changed) and prints the addon's path.
import {execFileSync} from 'node:child_process'
import {existsSync, mkdirSync, readdirSync, readFileSync, statSync} from 'node:fs'
import {dirname, join} from 'node:path'
import {fileURLToPath} from 'node:url'

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
export const ASAN_ADDON = join(ROOT, 'build-asan', 'agent_native.node')

/** binding.gyp's C sources: one list, so the ASan build never drifts from the real one. */
function sources() {
  const gyp = readFileSync(join(ROOT, 'binding.gyp'), 'utf8')
  const list = [...gyp.matchAll(/"(src\/[^"]+\.c)"/g)].map((m) => m[1])
  if (list.length === 0) throw new Error('asan: no C sources found in binding.gyp')
  return list
}

/** Node's headers (node_api.h, and the OpenSSL and libuv ones it ships). */
function nodeIncludes() {
  const candidates = [join(dirname(dirname(process.execPath)), 'include', 'node'), '/usr/include/node', '/usr/local/include/node']
  const dir = candidates.find((d) => existsSync(join(d, 'node_api.h')) && existsSync(join(d, 'openssl', 'evp.h')))
  if (dir === undefined) throw new Error(`asan: Node's headers (node_api.h, openssl/evp.h) are in none of ${candidates.join(', ')}`)
  return dir
}

/** The ASan runtime to preload, or an error that says how to get it. */
export function asanRuntime() {
  let lib
  try {
    lib = execFileSync('cc', ['-print-file-name=libasan.so'], {encoding: 'utf8'}).trim()
  } catch (e) {
    throw new Error(`asan: no C compiler (cc) to ask for libasan: ${e.message}; run scripts/setup.sh`)
  }
  // cc prints the bare name back when it has no such library.
  if (!lib.startsWith('/') || !existsSync(lib)) {
    throw new Error(`asan: the AddressSanitizer runtime libasan.so is not installed (cc -print-file-name=libasan.so says "${lib}"); install gcc's libasan (scripts/setup.sh does: apt-get install libgcc-N-dev, N gcc's major version)`)
  }
  return lib
}

/**
 * Environment for a process that loads the ASan addon. halt_on_error and abort_on_error: the
 * first report kills the process, so none can scroll by unnoticed. detect_leaks=0: Node itself
 * leaks at exit, which says nothing about the addon.
 */
export function asanEnv(addon = ASAN_ADDON) {
  return {
    LD_PRELOAD: asanRuntime(),
    ASAN_OPTIONS: 'detect_leaks=0:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=0:print_summary=1:allocator_may_return_null=1',
    // UndefinedBehaviorSanitizer rides along (-fsanitize=undefined, no recovery): with a stack.
    UBSAN_OPTIONS: 'halt_on_error=1:print_stacktrace=1',
    AGENT_NATIVE_ADDON: addon,
  }
}

/** Builds build-asan/agent_native.node if it is missing or older than a source; returns its path. */
export function buildAsanAddon({log = () => {}} = {}) {
  asanRuntime()
  const srcs = sources()
  const inputs = [...srcs.map((s) => join(ROOT, s)), join(ROOT, 'binding.gyp'), fileURLToPath(import.meta.url)]
  const newest = Math.max(...inputs.map((f) => statSync(f).mtimeMs), ...headerTimes(srcs))
  if (existsSync(ASAN_ADDON) && statSync(ASAN_ADDON).mtimeMs >= newest) return ASAN_ADDON
  mkdirSync(dirname(ASAN_ADDON), {recursive: true})
  const inc = nodeIncludes()
  log(`asan: building ${ASAN_ADDON}`)
  execFileSync(
    'cc',
    [
      '-shared', '-fPIC', '-pthread', '-std=c11', '-g', '-O1',
      '-fsanitize=address,undefined', '-fno-sanitize-recover=undefined', '-fno-omit-frame-pointer', '-fno-common',
      '-Wall', '-Wextra', '-Wno-unused-parameter',
      '-DNAPI_VERSION=8', '-DBUILDING_NODE_EXTENSION', '-DNODE_GYP_MODULE_NAME=agent_native',
      `-I${inc}`, `-I${join(ROOT, 'src/core/native')}`,
      ...srcs.map((s) => join(ROOT, s)),
      '-o', ASAN_ADDON,
    ],
    {cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit']},
  )
  return ASAN_ADDON
}

/** Modification times of the headers next to the sources (a changed header rebuilds too). */
function headerTimes(srcs) {
  const dirs = [...new Set(srcs.map((s) => join(ROOT, dirname(s))))]
  const times = []
  for (const d of dirs) {
    for (const f of readdirSync(d)) {
      if (f.endsWith('.h')) times.push(statSync(join(d, f)).mtimeMs)
    }
  }
  return times
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  console.log(buildAsanAddon({log: (m) => console.error(m)}))
}
