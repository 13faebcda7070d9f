#!/usr/bin/env node
// npm run release: release/agent-<version>.tgz, the artifact an operator installs with
// `npm install -g ./agent-<version>.tgz` on a machine with Node.js 20 and no clone, no compiler
// and no registry (docs/install.md). It carries:
//   - dist/ (the built core, the commands, and dist/plugins/<name>.tgz, the four transports that
//     `agent plugins install <name>` installs offline), bin/, the schema and the command manifest;
//   - prebuilds/<platform>-<arch>/agent_native.node, the N-API addon built here (one build serves
//     every Node.js from 20 on), which scripts/install.mjs loads instead of compiling;
//   - binding.gyp and the C sources, for the machines no prebuilt fits (those need a compiler);
//   - every runtime dependency, bundled (package.json bundleDependencies), so the install needs
//     no registry and gets the versions of package-lock.json that the tests ran.
// No tests, no TypeScript sources, no source maps, no testbed, no devDependencies.
//
// --out DIR writes the artifact there instead of release/. --no-build packs the tree as it is
// built (test/integration/release.test.ts, after `npm test` has built it: rebuilding dist/ and
// build/Release under the other test files that run at the same time would break them).
import {execFileSync} from 'node:child_process'
import {copyFileSync, existsSync, mkdirSync, readFileSync, rmSync} from 'node:fs'
import {dirname, join, relative, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'
import {parseArgs} from 'node:util'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const run = (cmd, args) => execFileSync(cmd, args, {cwd: root, stdio: 'inherit'})
const {values: flags} = parseArgs({options: {out: {type: 'string'}, 'no-build': {type: 'boolean'}}})
const {version} = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
const out = resolve(flags.out ?? join(root, 'release'))
const tuple = `${process.platform}-${process.arch}`

// What gets bundled is what node_modules holds: it must be package-lock.json's tree, nothing
// missing, invalid or extraneous (npm ls fails on any of them).
execFileSync('npm', ['ls', '--omit=dev', '--all'], {cwd: root, stdio: ['ignore', 'ignore', 'inherit']})

// The prebuilt from a clean configure and compile (not whatever an earlier incremental build
// left), then the TypeScript, the plugin tarballs, the schema and the manifest.
if (!flags['no-build']) {
  run('npx', ['node-gyp', 'rebuild'])
  run(process.execPath, ['scripts/build.mjs'])
}
for (const f of ['build/Release/agent_native.node', 'dist/commands/up.js']) {
  if (!existsSync(join(root, f))) throw new Error(`release: ${f} is missing: build first (npm run build)`)
}

const prebuilds = join(root, 'prebuilds')
rmSync(prebuilds, {recursive: true, force: true})
mkdirSync(join(prebuilds, tuple), {recursive: true})
copyFileSync(join(root, 'build/Release/agent_native.node'), join(prebuilds, tuple, 'agent_native.node'))

let packed
try {
  mkdirSync(out, {recursive: true})
  rmSync(join(out, `agent-${version}.tgz`), {force: true})
  packed = JSON.parse(execFileSync('npm', ['pack', '--json', '--pack-destination', out], {cwd: root, stdio: ['ignore', 'pipe', 'inherit']}).toString())[0]
} finally {
  // Only the artifact carries prebuilds/: in the clone, build/Release is the one addon, so a
  // stale prebuilt can never stand in for a missing build.
  rmSync(prebuilds, {recursive: true, force: true})
}

// The artifact's contents, checked: what it must carry, and nothing of the development tree.
const files = packed.files.map((f) => f.path)
const own = files.filter((f) => !f.startsWith('node_modules/'))
const required = [
  'bin/run.js',
  'dist/commands/up.js',
  'oclif.manifest.json',
  'schema/agent-config.schema.json',
  'scripts/install.mjs',
  'binding.gyp',
  `prebuilds/${tuple}/agent_native.node`,
  ...['tls', 'gre', 'ipip', 'ipsec-over-gre'].map((p) => `dist/plugins/${p}.tgz`),
]
const missing = required.filter((f) => !files.includes(f))
const unwanted = own.filter((f) => /^(test|bench|docs|examples|build|plugins|dist\/testbed)\/|\.map$|\.d\.ts$|\.ts$|tsbuildinfo/.test(f))
const bundled = new Set(packed.bundled)
const devOnly = ['vitest', 'typescript', 'oclif', 'node-gyp', 'json-schema-to-ts'].filter((d) => bundled.has(d))
if (missing.length > 0 || unwanted.length > 0 || devOnly.length > 0) {
  rmSync(join(out, packed.filename), {force: true})
  throw new Error(`release: bad artifact: missing ${missing.join(', ') || '-'}; unwanted ${unwanted.join(', ') || '-'}; dev dependencies ${devOnly.join(', ') || '-'}`)
}

const shown = (f) => (relative(process.cwd(), f).startsWith('..') ? f : relative(process.cwd(), f))
const mb = (n) => `${(n / 1e6).toFixed(1)} MB`
console.log(
  `release: ${shown(join(out, packed.filename))}: ${mb(packed.size)} (${mb(packed.unpackedSize)} unpacked, ${packed.entryCount} files: ` +
    `${own.length} of agent's own, ${packed.bundled.length} bundled dependencies), prebuilt for ${tuple}`,
)
console.log(`install it with: npm install -g ./${packed.filename}   (docs/install.md)`)
