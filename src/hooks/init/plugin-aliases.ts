/**
 * `agent plugins:install tls` must work offline on a fresh clone. The build packs every bundled
 * plugin into dist/plugins/<short name>.tgz; this hook maps each short name to that tarball
 * through oclif's alias table, which plugins:install consults before going to a registry.
 */
import type {Hook} from '@oclif/core'
import {existsSync, readdirSync} from 'node:fs'
import {join} from 'node:path'

export function bundledPluginTarballs(root: string): Map<string, string> {
  const dir = join(root, 'dist', 'plugins')
  const found = new Map<string, string>()
  if (!existsSync(dir)) return found
  for (const file of readdirSync(dir)) {
    if (file.endsWith('.tgz')) found.set(file.slice(0, -'.tgz'.length), join(dir, file))
  }
  return found
}

const hook: Hook<'init'> = async function ({config}) {
  const oclif = config.pjson.oclif as {aliases?: Record<string, string | null>}
  const aliases = (oclif.aliases ??= {})
  for (const [name, tarball] of bundledPluginTarballs(config.root)) aliases[name] ??= `file:${tarball}`
}

export default hook
