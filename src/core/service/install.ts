/**
 * `agent service install NAME` and `agent service uninstall NAME`: the systemd unit and where
 * instance NAME's config lives (docs/service.md).
 *
 * install writes agent@.service into the unit directory (when absent or different), creates
 * /etc/agent (0750; an existing one loses the bits beyond 0750, and gains none), and copies a
 * config there when one is given, never over an existing one. The config is read once, written
 * to a temporary file in /etc/agent and checked there (relative paths resolve as at run time),
 * then linked into place. What can be refused is refused before the unit or the config is
 * written, each file goes in by a temporary name, and a refusal or a failure removes what the run
 * created: nothing is left half done.
 *
 * uninstall removes the unit only when no other instance's config is left in /etc/agent (other
 * instances still use the template); it never deletes a config: they hold an operator's work
 * and are the instances' identity.
 *
 * `root` prefixes every path written (a package's staging directory, tests); the unit's text
 * names the real paths, as on the target machine.
 */
import {chmodSync, existsSync, linkSync, lstatSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync} from 'node:fs'
import {basename, isAbsolute, join, relative, resolve} from 'node:path'
import {ConfigError} from '../config/errors.js'
import type {ResolvedConfig} from '../config/types.js'
import {CONFIG_DIR, UNIT_NAME, renderUnit, underProtectedHome, unsafeAgentPath} from './unit.js'

export const DEFAULT_UNIT_DIR = '/etc/systemd/system'
export const CONFIG_DIR_MODE = 0o750
export const CONFIG_MODE = 0o640
export const UNIT_MODE = 0o644

/**
 * An instance name is a file name in /etc/agent and a systemd instance: letters, digits and
 * `_.-`, starting with a letter or digit, at most 64 characters. Anything else would need
 * systemd-escape, or could name a path outside the config directory.
 */
const INSTANCE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/

/**
 * The suffixes of systemd's unit types: `agent@x.socket` names a socket unit, not the service
 * agent@x.socket.service, so `systemctl enable --now agent@NAME` would address another unit.
 */
export const UNIT_SUFFIXES = ['.service', '.socket', '.timer', '.target', '.mount', '.automount', '.path', '.slice', '.scope', '.swap', '.device'] as const

/** Why NAME is not a usable instance name, or undefined. */
export function badInstanceName(name: string): string | undefined {
  if (name === '') return 'the instance name is empty'
  if (name.length > 64) return `the instance name is ${name.length} characters long; at most 64`
  if (!/^[A-Za-z0-9]/.test(name)) return `the instance name ${JSON.stringify(name)} must start with a letter or a digit`
  const bad = [...new Set([...name].filter((c) => !/[A-Za-z0-9_.-]/.test(c)))]
  if (bad.length > 0) return `the instance name ${JSON.stringify(name)} has characters other than letters, digits, "_", "." and "-": ${bad.map((c) => JSON.stringify(c)).join(' ')}`
  const suffix = UNIT_SUFFIXES.find((t) => name.endsWith(t))
  if (suffix !== undefined) {
    return `the instance name ${JSON.stringify(name)} ends in ${JSON.stringify(suffix)}, a systemd unit type: \`systemctl enable --now agent@${name}\` would address a ${suffix.slice(1)} unit, not this service; choose a name without it`
  }
  if (name.endsWith('.yaml')) return `the instance name is the config file's name without ".yaml": ${JSON.stringify(name.slice(0, -5))}`
  if (!INSTANCE.test(name)) return `the instance name ${JSON.stringify(name)} is not valid`
  return undefined
}

export interface ServicePaths {
  /** Prefix of every path written; default "/" (the real system). */
  root?: string
  /** Where the unit goes; default /etc/systemd/system. */
  unitDir?: string
}

export interface InstallOptions extends ServicePaths {
  name: string
  /** Absolute path of the agent executable the unit runs. */
  agent: string
  /** A config file to copy into place as /etc/agent/NAME.yaml, if that does not exist. */
  config?: string
  /**
   * Checks the config given (agent config validate's checks: loadConfig); rejects with its
   * errors. It is given the copy inside the config directory, so that relative paths resolve as
   * they will at run time; what it resolves is checked against ProtectHome= (configPaths).
   */
  validate?: (file: string) => Promise<ResolvedConfig>
}

export type FileAction = 'created' | 'updated' | 'unchanged' | 'kept'

export interface InstallResult {
  name: string
  unit: {path: string; action: FileAction}
  configDir: {path: string; action: 'created' | 'unchanged'}
  /** The instance's config: created from --config, kept as it was, or missing (to be written). */
  config: {path: string; action: 'created' | 'unchanged' | 'missing'}
  /** What the operator runs next. */
  next: string[]
}

function paths(o: ServicePaths & {name: string}) {
  const root = o.root ?? '/'
  const unitDir = join(root, o.unitDir ?? DEFAULT_UNIT_DIR)
  const configDir = join(root, CONFIG_DIR)
  return {unitDir, unit: join(unitDir, UNIT_NAME), configDir, config: join(configDir, `${o.name}.yaml`), realConfig: `${CONFIG_DIR}/${o.name}.yaml`}
}

/** Writes `text` to `file` by a temporary file and a rename: never half a file under its name. */
function writeAtomic(file: string, text: string | Buffer, mode: number): void {
  const tmp = join(file, '..', `.${basename(file)}.${process.pid}.tmp`)
  try {
    writeFileSync(tmp, text, {mode, flag: 'wx'})
    chmodSync(tmp, mode)
    renameSync(tmp, file)
  } catch (e) {
    rmSync(tmp, {force: true})
    throw e
  }
}

/** The files a resolved config names, by field (absolute paths, as loadConfig resolved them). */
export function configPaths(c: ResolvedConfig): {field: string; path: string}[] {
  const out: {field: string; path: string}[] = []
  const pki = c.pki as ResolvedConfig['pki'] & {crl?: string}
  if (pki.kind === 'bundle') out.push({field: 'pki.bundle', path: pki.bundle})
  else out.push({field: 'pki.ca', path: pki.ca}, {field: 'pki.cert', path: pki.cert}, {field: 'pki.key', path: pki.key})
  if (pki.crl !== undefined) out.push({field: 'pki.crl', path: pki.crl})
  if (c.role === 'node' && c.fleet !== undefined) {
    out.push({field: 'fleet.ca', path: c.fleet.ca}, {field: 'fleet.cert', path: c.fleet.cert}, {field: 'fleet.key', path: c.fleet.key})
  }
  return out
}

/** Paths under `root` as they are on the target machine ("/" + the rest); others as they are. */
function onTarget(root: string, path: string): string {
  const rel = relative(root, path)
  return rel === '' ? '/' : rel.startsWith('..') || isAbsolute(rel) ? path : `/${rel}`
}

function readOrNull(file: string): Buffer | null {
  try {
    return readFileSync(file)
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') return null
    throw e
  }
}

export async function installService(o: InstallOptions): Promise<InstallResult> {
  // Everything that can be refused is refused before anything is written.
  const badName = badInstanceName(o.name)
  if (badName !== undefined) throw new Error(badName)
  const badAgent = unsafeAgentPath(o.agent)
  if (badAgent !== undefined) throw new Error(badAgent)
  const p = paths(o)
  const unitText = renderUnit({agent: o.agent})
  const oldUnit = readOrNull(p.unit)
  if (existsSync(p.configDir) && !lstatSync(p.configDir).isDirectory()) throw new Error(`${p.configDir} exists and is not a directory`)
  const oldConfig = readOrNull(p.config)
  // Read once: what is checked below is these bytes, not whatever the file holds by then.
  const newConfig: Buffer | null = o.config === undefined ? null : readFileSync(o.config)
  if (newConfig !== null && oldConfig !== null && !oldConfig.equals(newConfig)) {
    throw new Error(`${p.config} exists and differs from ${o.config}; it is not overwritten (edit it, then \`agent config validate\` and \`systemctl reload agent@${o.name}\`)`)
  }

  const created: string[] = []
  // The copy of --config inside the config directory, checked there, then linked into place.
  const tmpConfig = join(p.configDir, `.${o.name}.yaml.${process.pid}.tmp`)
  // Files the config names that are not there yet: not an error (keys are often copied after),
  // but the agent cannot start without them, so the next steps say which.
  let missingFiles: {field: string; path: string}[] = []
  try {
    let dirAction: 'created' | 'unchanged' = 'unchanged'
    // mkdir -p says which directory it made first: everything from there on is this run's.
    const madeConfigDir = mkdirSync(p.configDir, {recursive: true, mode: CONFIG_DIR_MODE})
    if (madeConfigDir !== undefined) {
      created.push(madeConfigDir)
      dirAction = 'created'
    }
    if (newConfig !== null) {
      writeFileSync(tmpConfig, newConfig, {mode: CONFIG_MODE, flag: 'wx'})
      chmodSync(tmpConfig, CONFIG_MODE)
      missingFiles = await checkConfig(o, p.configDir, tmpConfig)
    }

    const unitAction: FileAction = oldUnit === null ? 'created' : oldUnit.toString('utf8') === unitText ? 'unchanged' : 'updated'
    const madeUnitDir = mkdirSync(p.unitDir, {recursive: true, mode: 0o755})
    if (madeUnitDir !== undefined) created.push(madeUnitDir)
    if (unitAction !== 'unchanged') {
      writeAtomic(p.unit, unitText, UNIT_MODE)
      if (unitAction === 'created') created.push(p.unit)
    }
    // The configs name key files and who may connect: not for everyone to read, either way.
    // Bits are only taken away: an operator's tighter 0700 stays 0700, a 0755 becomes 0750.
    // (setgid and sticky bits, not permissions, are left as they are.)
    const dirMode = statSync(p.configDir).mode & 0o7777
    if ((dirMode & 0o777 & ~CONFIG_DIR_MODE) !== 0) chmodSync(p.configDir, dirMode & (0o7000 | CONFIG_DIR_MODE))
    let configAction: InstallResult['config']['action'] = oldConfig === null ? 'missing' : 'unchanged'
    if (newConfig !== null && oldConfig === null) {
      // A link, not a rename: it fails rather than replace a config that appeared meanwhile.
      linkSync(tmpConfig, p.config)
      created.push(p.config)
      configAction = 'created'
    }
    if (newConfig !== null) rmSync(tmpConfig, {force: true})
    const next = [
      ...(configAction === 'missing' ? [`write ${p.realConfig} (a node or client config, docs/config.md), then \`agent config validate ${p.realConfig}\``] : []),
      ...missingFiles.map((f) => `copy ${f.path} into place (${f.field} in ${p.realConfig}): it is not there yet, and the agent cannot start without it`),
      `systemctl daemon-reload && systemctl enable --now agent@${o.name}`,
    ]
    return {
      name: o.name,
      unit: {path: p.unit, action: unitAction},
      configDir: {path: p.configDir, action: dirAction},
      config: {path: p.config, action: configAction},
      next,
    }
  } catch (e) {
    // Nothing half: undo what this run created, newest first (an updated unit stays updated,
    // having been replaced whole by a rename).
    rmSync(tmpConfig, {force: true})
    for (const path of created.reverse()) rmSync(path, {recursive: true, force: true})
    throw e
  }
}

/**
 * Validates `tmp`, the copy of o.config in the config directory (relative paths resolve against
 * it, as at run time), and refuses files the unit could not read (ProtectHome=). Errors name
 * o.config, the file the operator wrote (same lines), and the field and path at fault.
 */
async function checkConfig(o: InstallOptions, configDir: string, tmp: string): Promise<{field: string; path: string}[]> {
  if (o.validate === undefined) return []
  let config: ResolvedConfig
  try {
    config = await o.validate(tmp)
  } catch (e) {
    if (e instanceof ConfigError) throw new ConfigError(o.config!, e.issues)
    throw e
  }
  const root = resolve(o.root ?? '/')
  const realDir = onTarget(root, configDir)
  const hidden = configPaths(config)
    .map(({field, path}) => ({field, path: onTarget(root, path), home: underProtectedHome(onTarget(root, path))}))
    .filter((f) => f.home !== undefined)
  if (hidden.length > 0) {
    throw new Error(
      hidden
        .map(
          (f) =>
            `${o.config}: ${f.field}: ${f.path} is under ${f.home}, which the unit hides (ProtectHome=yes): the agent could not read it; put the file elsewhere (under ${realDir}, say; relative paths are relative to ${realDir})`,
        )
        .join('\n'),
    )
  }
  const clash = await clashes(o, config, configDir, realDir)
  if (clash.length > 0) throw new Error(clash.map((c) => `${o.config}: ${c}`).join('\n'))
  // As on the target: a path in the config is looked for under --root.
  // One step per file: a CA named as pki.ca and fleet.ca is one file to copy.
  const missing = new Map<string, string[]>()
  for (const {field, path} of configPaths(config)) {
    const target = onTarget(root, path)
    if (!existsSync(join(root, target))) missing.set(target, [...(missing.get(target) ?? []), field])
  }
  return [...missing].map(([path, fields]) => ({field: fields.join(', '), path}))
}

/**
 * What the new config shares with another instance's in the config directory: its `name` (the
 * state file, status socket and run-directory entry are named after it) or its TUN device. Two
 * such instances would stop each other at start. Configs that do not load are not ours to judge.
 */
async function clashes(o: InstallOptions, config: ResolvedConfig, configDir: string, realDir: string): Promise<string[]> {
  const out: string[] = []
  const others = readdirSync(configDir).filter((f) => f.endsWith('.yaml') && !f.startsWith('.') && f !== `${o.name}.yaml`)
  for (const file of others.sort()) {
    let other: ResolvedConfig
    try {
      other = await o.validate!(join(configDir, file))
    } catch {
      continue
    }
    const instance = `agent@${file.slice(0, -'.yaml'.length)}`
    if (other.name === config.name) out.push(`name: ${JSON.stringify(config.name)} is also the name in ${realDir}/${file} (${instance}): each instance needs its own, or they share a state file and status socket`)
    if (other.tunnel.interface === config.tunnel.interface) {
      out.push(`tunnel.interface: ${config.tunnel.interface} is also the TUN device of ${realDir}/${file} (${instance}): each instance needs its own`)
    }
  }
  return out
}

export interface UninstallResult {
  name: string
  unit: {path: string; action: 'removed' | 'kept' | 'absent'}
  /** Other instances' configs that keep the unit in use. */
  others: string[]
  /** Instances still enabled (a `*.wants/agent@X.service` link in the unit directory): the unit stays until they are disabled. */
  enabled: string[]
  /** The instance's config, never removed. */
  config: {path: string; exists: boolean}
  next: string[]
}

export function uninstallService(o: ServicePaths & {name: string}): UninstallResult {
  const badName = badInstanceName(o.name)
  if (badName !== undefined) throw new Error(badName)
  const p = paths(o)
  const others = existsSync(p.configDir)
    ? readdirSync(p.configDir)
        .filter((f) => f.endsWith('.yaml') && f !== `${o.name}.yaml` && badInstanceName(f.slice(0, -5)) === undefined)
        .map((f) => f.slice(0, -5))
        .sort()
    : []
  const enabled = enabledInstances(p.unitDir)
  const hasUnit = existsSync(p.unit)
  let action: UninstallResult['unit']['action'] = hasUnit ? 'kept' : 'absent'
  if (hasUnit && others.length === 0 && enabled.length === 0) {
    rmSync(p.unit)
    action = 'removed'
  }
  const configExists = existsSync(p.config)
  return {
    name: o.name,
    unit: {path: p.unit, action},
    others,
    enabled,
    config: {path: p.config, exists: configExists},
    next: [
      ...(enabled.includes(o.name) ? [`systemctl disable --now agent@${o.name}`, `agent service uninstall ${o.name}   # again, to remove the unit`] : []),
      ...(action === 'removed' ? ['systemctl daemon-reload'] : []),
      ...(configExists ? [`rm ${p.realConfig}   # if the instance is gone for good (it is kept)`] : []),
    ],
  }
}

/** Instances of agent@.service enabled in unitDir: the names in its `*.wants/agent@NAME.service` links. */
function enabledInstances(unitDir: string): string[] {
  if (!existsSync(unitDir)) return []
  const found = new Set<string>()
  for (const d of readdirSync(unitDir)) {
    if (!d.endsWith('.wants') && !d.endsWith('.requires')) continue
    let entries: string[]
    try {
      entries = readdirSync(join(unitDir, d))
    } catch {
      continue
    }
    for (const f of entries) {
      const m = /^agent@(.+)\.service$/.exec(f)
      if (m) found.add(m[1])
    }
  }
  return [...found].sort()
}
