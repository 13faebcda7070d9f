/**
 * Transport discovery: every installed oclif plugin that declares the `agent:transport` hook
 * hands back its transport. Nothing is imported by name, so `agent plugins:install gre` is all
 * it takes to add one.
 */
import type {Config} from '@oclif/core'
import {CONTRACT_VERSION, type CoreApi, type Transport} from './contract.js'
import {bundledPluginTarballs} from '../../hooks/init/plugin-aliases.js'

export const TRANSPORT_HOOK = 'agent:transport'

export interface TransportRegistry {
  transports: Map<string, Transport>
  /** Plugins whose hook failed, with why: reported, never silently skipped. */
  failures: {plugin: string; error: string}[]
}

export async function discoverTransports(config: Config): Promise<TransportRegistry> {
  const core: CoreApi = {contractVersion: CONTRACT_VERSION}
  // oclif's Hooks map has no entry for our custom hook; its runtime takes any name.
  const result = await (config.runHook as (id: string, opts: object) => Promise<{
    successes: {result: unknown; plugin: {name: string}}[]
    failures: {error: Error; plugin: {name: string}}[]
  }>)(TRANSPORT_HOOK, {core})
  const transports = new Map<string, Transport>()
  const failures = result.failures.map((f) => ({plugin: f.plugin.name, error: f.error.message}))
  for (const {result: t, plugin} of result.successes) {
    if (!isTransport(t)) {
      failures.push({plugin: plugin.name, error: 'its agent:transport hook did not return a transport'})
      continue
    }
    transports.set(t.name, t)
  }
  return {transports, failures}
}

function isTransport(v: unknown): v is Transport {
  const t = v as Transport
  return (
    typeof t === 'object' &&
    t !== null &&
    typeof t.name === 'string' &&
    typeof t.carrier === 'function' &&
    typeof t.openNodeSession === 'function' &&
    typeof t.openClientSession === 'function'
  )
}

/** The transport named, or an error that tells the operator how to get it. */
export function requireTransport(registry: TransportRegistry, name: string, config: Config): Transport {
  const t = registry.transports.get(name)
  if (t) return t
  const failed = registry.failures.find((f) => f.plugin.endsWith(`transport-${name}`))
  if (failed) throw new Error(`transport "${name}" is installed but failed to load: ${failed.error}`)
  const installed = [...registry.transports.keys()].sort()
  const have = installed.length > 0 ? `installed: ${installed.join(', ')}` : 'no transport is installed yet'
  const bundled = bundledPluginTarballs(config.root).has(name)
  const how = bundled
    ? `install it with: ${config.bin} plugins:install ${name}`
    : `no bundled plugin is named "${name}" (bundled: ${[...bundledPluginTarballs(config.root).keys()].sort().join(', ') || 'none'})`
  return fail(`transport "${name}" is not installed (${have}); ${how}`)
}

function fail(message: string): never {
  throw new Error(message)
}
