/**
 * Schema validation with ajv, and the translation of ajv's errors into issues an operator can
 * act on: field paths instead of JSON pointers, positions in the YAML file, plain words.
 */
import {Ajv, type ErrorObject, type ValidateFunction} from 'ajv'
import type {ConfigIssue} from './errors.js'
import {configSchema} from './schema.js'
import {type FieldPath, formatPath, type PathSegment, type YamlSource} from './source.js'

let compiled: ValidateFunction | undefined

function validator(): ValidateFunction {
  if (!compiled) {
    // allowMatchingProperties: the built-in transports are named properties that also match the
    // pattern other plugins' options go under; the named schema is the stricter one and applies.
    const ajv = new Ajv({allErrors: true, verbose: true, discriminator: true, strict: true, allowMatchingProperties: true, allowUnionTypes: true})
    // Annotation only: the message our pattern errors (and editors) show instead of the regex.
    ajv.addKeyword({keyword: 'patternErrorMessage', schemaType: 'string'})
    // Likewise for a field of several forms (anyOf): one message instead of one per form.
    ajv.addKeyword({keyword: 'errorMessage', schemaType: 'string'})
    compiled = ajv.compile(configSchema)
  }
  return compiled
}

/** The roles, as `"node" or "client"`, read from the schema's branches. */
const ROLES = configSchema.oneOf.map((branch) => JSON.stringify(branch.properties.role.const)).join(' or ')

const TYPE_NAMES: Record<string, string> = {
  object: 'a mapping',
  array: 'a list',
  string: 'a string',
  integer: 'a whole number',
  number: 'a number',
  boolean: 'true or false',
  null: 'empty',
}

/** A short rendering of a value for "(got ...)". */
export function describeValue(value: unknown): string {
  if (value === null || value === undefined) return 'nothing'
  if (Array.isArray(value)) return 'a list'
  if (typeof value === 'object') return 'a mapping'
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? value.slice(0, 57) + '...' : value)
  return String(value)
}

/** Splits an ajv instancePath into segments, with array indices as numbers (for "[1]"). */
function segments(instancePath: string, data: unknown): PathSegment[] {
  const out: PathSegment[] = []
  let cur: unknown = data
  for (const raw of instancePath.split('/').slice(1)) {
    const seg = raw.replace(/~1/g, '/').replace(/~0/g, '~')
    if (Array.isArray(cur)) {
      out.push(Number(seg))
      cur = cur[Number(seg)]
    } else {
      out.push(seg)
      cur = cur !== null && typeof cur === 'object' ? (cur as Record<string, unknown>)[seg] : undefined
    }
  }
  return out
}

/** Edit distance counting a swap of neighbours as one edit ("prot" is one typo from "port"). */
function distance(a: string, b: string): number {
  const d = Array.from({length: a.length + 1}, (_, i) => Array.from({length: b.length + 1}, (_, j) => (i === 0 ? j : j === 0 ? i : 0)))
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1))
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1)
    }
  }
  return d[a.length][b.length]
}

/** "unknown key (allowed: ...)", with a hint when it is a typo or belongs to the other role. */
function unknownKey(name: string, allowed: string[], parent: FieldPath, data: unknown): string {
  const message = `unknown key (allowed: ${allowed.join(', ')})`
  const role = (data as {role?: unknown}).role
  if (parent.length === 0) {
    const other = configSchema.oneOf.find((b) => b.properties.role.const !== role && Object.hasOwn(b.properties, name))
    if (other) return `${message}; ${name} is a ${other.properties.role.const} setting, not a ${String(role)} one`
  }
  const near = allowed
    .map((key) => ({key, d: distance(name.toLowerCase(), key.toLowerCase())}))
    .filter(({key, d}) => d <= Math.max(1, Math.floor(key.length / 3)))
    .sort((x, y) => x.d - y.d)[0]
  return near ? `${message}; did you mean ${near.key}?` : message
}

type Described = {path: FieldPath; at: FieldPath; atKey: boolean; message: string}

/** Turns one ajv error into a path, where to point, and a message. */
function describe(error: ErrorObject, path: PathSegment[], data: unknown): Described {
  const schema = (error.parentSchema ?? {}) as Record<string, unknown>
  const got = ` (got ${describeValue(error.data)})`
  const plain = (message: string): Described => ({path, at: path, atKey: false, message})
  const params = error.params as Record<string, unknown>
  switch (error.keyword) {
    case 'additionalProperties': {
      const name = String(params.additionalProperty)
      const allowed = Object.keys((schema.properties ?? {}) as object).filter((k) => k !== '$schema')
      const key = [...path, name]
      return {path: key, at: key, atKey: true, message: unknownKey(name, allowed, path, data)}
    }
    case 'required': {
      const missing = [...path, String(params.missingProperty)]
      const message = missing.length === 1 && missing[0] === 'role' ? `is required: must be ${ROLES}` : 'is required'
      return {path: missing, at: path, atKey: true, message}
    }
    case 'discriminator': {
      const tag = [...path, String(params.tag)]
      const message =
        params.tagValue === undefined ? `is required: must be ${ROLES}` : `must be ${ROLES} (got ${describeValue(params.tagValue)})`
      return {path: tag, at: tag, atKey: false, message}
    }
    case 'type': {
      const names = String(params.type)
        .split(',')
        .map((t) => TYPE_NAMES[t] ?? t)
      const list = names.length === 1 ? names[0] : `${names.slice(0, -1).join(', ')} or ${names[names.length - 1]}`
      return plain(`must be ${list}${got}`)
    }
    case 'enum':
      return plain(`must be one of ${(params.allowedValues as unknown[]).join(', ')}${got}`)
    case 'const':
      if (typeof schema.errorMessage === 'string') return plain(`${schema.errorMessage}${got}`)
      return plain(`must be ${JSON.stringify(params.allowedValue)}${got}`)
    case 'pattern': {
      const hint = typeof schema.patternErrorMessage === 'string' ? schema.patternErrorMessage : `must match ${String(params.pattern)}`
      return plain(`${hint}${got}`)
    }
    case 'minimum':
    case 'maximum':
      if (typeof schema.minimum === 'number' && typeof schema.maximum === 'number') {
        return plain(`must be between ${schema.minimum} and ${schema.maximum}${got}`)
      }
      return plain(`must be ${error.keyword === 'minimum' ? 'at least' : 'at most'} ${String(params.limit)}${got}`)
    case 'minLength':
      return plain(params.limit === 1 ? 'must not be empty' : `must be at least ${String(params.limit)} characters${got}`)
    case 'maxLength':
      return plain(`must be at most ${String(params.limit)} characters`)
    case 'minItems':
      return plain(`must list at least ${String(params.limit)} ${params.limit === 1 ? 'entry' : 'entries'}`)
    case 'anyOf':
      return plain(`${typeof schema.errorMessage === 'string' ? schema.errorMessage : 'matches none of the allowed forms'}${got}`)
    default:
      return plain(error.message ?? `fails ${error.keyword}`)
  }
}

/** Validates parsed YAML data against the schema; issues carry positions from `source`. */
export function schemaIssues(data: unknown, source: YamlSource): ConfigIssue[] {
  const validate = validator()
  if (validate(data)) return []
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    // Nothing else is worth saying about a file that is not a mapping at all.
    return [{path: '', ...source.locate([]), message: `must be a YAML mapping of settings (got ${describeValue(data)})`}]
  }
  const issues: ConfigIssue[] = []
  const seen = new Set<string>()
  // A field that may take several forms (anyOf) gets one message, not one per form it failed.
  const errors = validate.errors ?? []
  const alternatives = errors.filter((e) => e.keyword === 'anyOf').map((e) => e.schemaPath)
  const inAlternative = (e: ErrorObject): boolean => e.keyword !== 'anyOf' && alternatives.some((p) => e.schemaPath.startsWith(`${p}/`))
  // An if/then/else reports its branch's own errors, and then "must match then/else": only the former say anything.
  for (const error of errors.filter((e) => !inAlternative(e) && e.keyword !== 'if')) {
    const d = describe(error, segments(error.instancePath, data), data)
    const issue = {path: formatPath(d.path), ...source.locate(d.at, d.atKey ? 'key' : 'value'), message: d.message}
    const id = `${issue.path}\0${issue.message}`
    if (!seen.has(id)) issues.push(issue)
    seen.add(id)
  }
  return issues
}
