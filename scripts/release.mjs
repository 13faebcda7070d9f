#!/usr/bin/env node
// npm run release: release/agent-<version>.tgz, the artifact an operator installs with
// `npm install -g ./agent-<version>.tgz` on a machine with Node.js 20 and no clone, no compiler
// and no registry (docs/install.md). It carries:
//   - dist/ (the built core, the commands, and dist/plugins/<name>.tgz, the four transports that
//     `agent plugins install <name>` installs offline), bin/, the schema and the command manifest;
//   - prebuilds/<platform>-<arch>/agent_native.node, the N-API addon built here (one build serves
//     every Node.js from 20 on), which scripts/install.mjs loads instead of compiling;
//   - binding.gyp and the C sources, for the machines no prebuilt fits (those need a compiler);
//   - every runtime dependency, bundled (bundleDependencies), so the install needs no registry
//     and gets the versions of package-lock.json that the tests ran.
// No tests, no TypeScript sources, no source maps, no testbed, no devDependencies.
//
// The package is packed from a staging directory, not from the clone: there the package.json
// is the one an operator needs (bundleDependencies: true; no devDependencies, workspaces or
// development scripts), and node_modules holds the runtime dependencies only, copied from the
// clone's. Declared in the clone's own package.json, bundleDependencies would change how
// `npm ci` installs the clone (it then fetches what npm's own bundle carries).
//
// --out DIR writes the artifact there instead of release/. --no-build packs the tree as it is
// built (test/integration/release.test.ts, after `npm test` has built it: rebuilding dist/ and
// build/Release under the other test files that run at the same time would break them).
import {execFileSync} from 'node:child_process'
import {copyFileSync, cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {dirname, join, relative, resolve, sep} from 'node:path'
import {fileURLToPath} from 'node:url'
import {parseArgs} from 'node:util'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const run = (cmd, args) => execFileSync(cmd, args, {cwd: root, stdio: 'inherit'})
const {values: flags} = parseArgs({options: {out: {type: 'string'}, 'no-build': {type: 'boolean'}}})
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
const {version} = pkg
const out = resolve(flags.out ?? join(root, 'release'))
const tuple = `${process.platform}-${process.arch}`

// What gets bundled is what node_modules holds: it must be package-lock.json's tree, nothing
// missing, invalid or extraneous (npm ls fails on any of them). Its paths, less the workspaces
// (links to plugins/) and any path inside another one (copied with it), are what is copied.
const depPaths = execFileSync('npm', ['ls', '--omit=dev', '--all', '--parseable'], {cwd: root, stdio: ['ignore', 'pipe', 'inherit']})
  .toString()
  .split('\n')
  .filter((p) => p.startsWith(join(root, 'node_modules') + sep) && !lstatSync(p).isSymbolicLink())
  .sort()
  .filter((p, i, all) => !all.slice(0, i).some((q) => p.startsWith(q + sep)))

// The prebuilt from a clean configure and compile (not whatever an earlier incremental build
// left), then the TypeScript, the plugin tarballs, the schema and the manifest.
if (!flags['no-build']) {
  run('npx', ['node-gyp', 'rebuild'])
  run(process.execPath, ['scripts/build.mjs'])
}
for (const f of ['build/Release/agent_native.node', 'dist/commands/up.js']) {
  if (!existsSync(join(root, f))) throw new Error(`release: ${f} is missing: build first (npm run build)`)
}

// The package's own files, as package.json "files" selects them from the clone.
const own0 = JSON.parse(execFileSync('npm', ['pack', '--dry-run', '--json'], {cwd: root, stdio: ['ignore', 'pipe', 'inherit']}).toString())[0]
const stage = mkdtempSync(join(tmpdir(), 'agent-release-'))
let packed
try {
  for (const {path} of own0.files) {
    if (path === 'package.json') continue
    mkdirSync(dirname(join(stage, path)), {recursive: true})
    copyFileSync(join(root, path), join(stage, path))
  }
  mkdirSync(join(stage, 'prebuilds', tuple), {recursive: true})
  copyFileSync(join(root, 'build/Release/agent_native.node'), join(stage, 'prebuilds', tuple, 'agent_native.node'))
  for (const p of depPaths) cpSync(p, join(stage, relative(root, p)), {recursive: true, verbatimSymlinks: true})
  const {devDependencies, workspaces, scripts, ...kept} = pkg
  writeFileSync(join(stage, 'package.json'), `${JSON.stringify({...kept, scripts: {install: scripts.install}, bundleDependencies: true}, null, 2)}\n`)

  mkdirSync(out, {recursive: true})
  rmSync(join(out, `agent-${version}.tgz`), {force: true})
  packed = JSON.parse(execFileSync('npm', ['pack', '--json', '--pack-destination', out], {cwd: stage, stdio: ['ignore', 'pipe', 'inherit']}).toString())[0]
} finally {
  rmSync(stage, {recursive: true, force: true})
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
