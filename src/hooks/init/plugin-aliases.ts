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

/**
 * The transports this project ships. Their short names must only ever mean our own tarballs:
 * without one (a broken build), plugins:install would otherwise go to the npm registry for a
 * package of that name, which anybody could have published.
 */
export const BUNDLED_TRANSPORTS = ['tls', 'gre', 'ipip', 'ipsec-over-gre'] as const

const hook: Hook<'init'> = async function ({config}) {
  const oclif = config.pjson.oclif as {aliases?: Record<string, string | null>}
  const aliases = (oclif.aliases ??= {})
  const tarballs = bundledPluginTarballs(config.root)
  for (const [name, tarball] of tarballs) aliases[name] ??= `file:${tarball}`
  // oclif refuses a null alias ("<name> is blocked") instead of asking the registry.
  for (const name of BUNDLED_TRANSPORTS) if (!tarballs.has(name)) aliases[name] ??= null
}

export default hook
