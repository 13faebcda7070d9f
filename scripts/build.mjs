#!/usr/bin/env node
// Builds everything a fresh clone needs to run `agent`: the TypeScript of the core and of every
// bundled plugin, the native TUN addon, the plugin tarballs `plugins:install <name>` installs
// offline, the JSON Schema of the config files and the systemd unit in packaging/.
import {execFileSync} from 'node:child_process'
import {existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync} from 'node:fs'
import {dirname, join} from 'node:path'
import {fileURLToPath, pathToFileURL} from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const run = (cmd, args, opts = {}) => execFileSync(cmd, args, {cwd: root, stdio: 'inherit', ...opts})

// node-gyp's make rebuilds what changed; a fresh clone, or a changed binding.gyp, configures first.
const makefile = join(root, 'build/Makefile')
if (!existsSync(makefile) || statSync(join(root, 'binding.gyp')).mtimeMs > statSync(makefile).mtimeMs) run('npx', ['node-gyp', 'rebuild'])
else run('npx', ['node-gyp', 'build'])

const plugins = readdirSync(join(root, 'plugins'), {withFileTypes: true})
  .filter((d) => d.isDirectory() && existsSync(join(root, 'plugins', d.name, 'package.json')))
  .map((d) => d.name)

// From clean output directories: a file removed from src must not live on in dist, in the
// tarballs or in the command manifest.
for (const dir of ['dist', ...plugins.map((p) => `plugins/${p}/dist`)]) rmSync(join(root, dir), {recursive: true, force: true})
run('npx', ['tsc', '-b', '.', ...plugins.map((p) => `plugins/${p}`)])

// The shipped systemd unit is the generator's output (src/core/service/unit.ts), never edited by
// hand: rewritten here, so the file in packaging/ cannot drift from what `agent service install` writes.
const {renderUnit, UNIT_NAME} = await import(pathToFileURL(join(root, 'dist/core/service/unit.js')).href)
mkdirSync(join(root, 'packaging/systemd'), {recursive: true})
writeFileSync(join(root, 'packaging/systemd', UNIT_NAME), renderUnit())

// One tarball per plugin, under a name that does not change with the version, so the init hook
// can map `plugins:install tls` to dist/plugins/tls.tgz without a registry.
const out = join(root, 'dist/plugins')
rmSync(out, {recursive: true, force: true})
mkdirSync(out, {recursive: true})
for (const p of plugins) {
  const name = execFileSync('npm', ['pack', '--silent', '--pack-destination', out], {cwd: join(root, 'plugins', p)})
    .toString()
    .trim()
    .split('\n')
    .pop()
  renameSync(join(out, name), join(out, `${p}.tgz`))
}

if (existsSync(join(root, 'scripts/gen-schema.mjs'))) run('node', ['scripts/gen-schema.mjs'])

// The committed command manifest lets oclif list commands without loading them all; CI fails
// when the committed one differs from this.
run('npx', ['oclif', 'manifest'], {stdio: 'ignore'})
// oclif lists commands in the order it finds their files, which differs between machines (and
// runs) for nested topics; sorted, the committed manifest is the same wherever it is built.
const manifestFile = join(root, 'oclif.manifest.json')
const manifest = JSON.parse(readFileSync(manifestFile, 'utf8'))
manifest.commands = Object.fromEntries(Object.keys(manifest.commands).sort().map((k) => [k, manifest.commands[k]]))
writeFileSync(manifestFile, `${JSON.stringify(manifest, null, 2)}\n`)
