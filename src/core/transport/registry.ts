/**
 * Transport discovery: every installed oclif plugin that declares the `agent:transport` hook
 * hands back its transport. Nothing is imported by name, so `agent plugins:install gre` is all
 * it takes to add one.
 */
import type {Config} from '@oclif/core'
import {CONTRACT_VERSION, type CoreApi, type Transport} from './contract.js'
import {bundledPluginTarballs} from '../../hooks/init/plugin-aliases.js'
import {greCodec} from '../codecs/gre/index.js'

export const TRANSPORT_HOOK = 'agent:transport'

export interface TransportRegistry {
  transports: Map<string, Transport>
  /** Plugins whose hook failed, with why: reported, never silently skipped. */
  failures: {plugin: string; error: string}[]
}

export async function discoverTransports(config: Config): Promise<TransportRegistry> {
  const core: CoreApi = {contractVersion: CONTRACT_VERSION, gre: greCodec}
  // oclif's Hooks map has no entry for our custom hook; its runtime takes any name.
  const result = await (config.runHook as (id: string, opts: object) => Promise<{
    successes: {result: unknown; plugin: {name: string}}[]
    failures: {error: Error; plugin: {name: string}}[]
  }>)(TRANSPORT_HOOK, {core})
  const transports = new Map<string, Transport>()
  const failures = result.failures.map((f) => ({plugin: f.plugin.name, error: f.error.message}))
  for (const {result: t, plugin} of result.successes) {
    const problem = transportProblem(t)
    if (problem !== null || !isTransport(t)) {
      failures.push({plugin: plugin.name, error: `its agent:transport hook did not return a transport (${problem})`})
      continue
    }
    transports.set(t.name, t)
  }
  return {transports, failures}
}

/**
 * What is wrong with what a plugin's hook returned, or null if it is a transport: everything
 * the core calls later, some of it from socket handlers where a missing member would crash the
 * process, is checked here instead.
 */
export function transportProblem(v: unknown): string | null {
  if (typeof v !== 'object' || v === null) return 'it is not an object'
  const t = v as Partial<Transport>
  if (typeof t.name !== 'string') return 'name is not a string'
  for (const fn of ['carrier', 'overhead', 'openNodeSession', 'openClientSession'] as const) {
    if (typeof t[fn] !== 'function') return `${fn} is not a function`
  }
  if (t.sessionIdOf !== undefined && typeof t.sessionIdOf !== 'function') return 'sessionIdOf is not a function'
  if (typeof t.nat !== 'object' || t.nat === null) return 'nat is not an object'
  const k = t.nat.keepaliveSeconds
  if (typeof k !== 'number' || !Number.isFinite(k) || k <= 0) return 'nat.keepaliveSeconds is not a positive number'
  return null
}

export function isTransport(v: unknown): v is Transport {
  return transportProblem(v) === null
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
