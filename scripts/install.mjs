#!/usr/bin/env node
// The package's npm "install" script: node-gyp-build's rule without the dependency. When the
// prebuilt addon of this platform (prebuilds/<platform>-<arch>/agent_native.node, which the
// release artifact carries, scripts/release.mjs) loads in this Node.js, nothing is compiled;
// otherwise (another platform or architecture, an older glibc, a clone, which has no prebuilds/)
// node-gyp builds build/Release/agent_native.node from binding.gyp, which needs a C compiler,
// make, python3 and the Node.js headers. npm_config_build_from_source=true (npm install
// --build-from-source) always builds. src/core/native/load.ts looks in the same two places.
import {spawnSync} from 'node:child_process'
import {existsSync} from 'node:fs'
import {createRequire} from 'node:module'
import {dirname, join} from 'node:path'
import {fileURLToPath} from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const prebuilt = join(root, 'prebuilds', `${process.platform}-${process.arch}`, 'agent_native.node')

function prebuiltLoads() {
  if (process.env.npm_config_build_from_source === 'true' || !existsSync(prebuilt)) return false
  try {
    // A real load, not a file test: a glibc too old for it, or musl, fails here.
    createRequire(import.meta.url)(prebuilt)
    return true
  } catch (e) {
    console.error(`agent: the prebuilt addon ${prebuilt} does not load here (${e.message.split('\n')[0]}): building from source`)
    return false
  }
}

if (!prebuiltLoads()) {
  // npm puts node-gyp on the PATH of its scripts (a clone's devDependency first, else npm's own
  // copy); run by hand outside npm, npm_config_node_gyp may still name npm's copy.
  let r = spawnSync('node-gyp', ['rebuild'], {cwd: root, stdio: 'inherit'})
  const gyp = process.env.npm_config_node_gyp
  if (r.error?.code === 'ENOENT' && gyp) r = spawnSync(process.execPath, [gyp, 'rebuild'], {cwd: root, stdio: 'inherit'})
  if (r.status !== 0) {
    console.error(
      `agent: building the native addon failed (${r.error?.message ?? `exit ${r.status ?? r.signal}`}). ` +
        `No prebuilt fits ${process.platform}-${process.arch} here, so it must be compiled: install a C compiler, make and python3 ` +
        '(Debian: apt-get install build-essential python3), then install again. See docs/install.md.',
    )
    process.exit(1)
  }
}
