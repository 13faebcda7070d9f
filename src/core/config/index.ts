/**
 * Node and client config files: parse YAML, validate against the schema and the semantic
 * rules, report every problem with its line, and resolve defaults and paths.
 */
import {readFile} from 'node:fs/promises'
import {ConfigError, type ConfigIssue} from './errors.js'
import {resolveConfig} from './resolve.js'
import {semanticIssues} from './semantic.js'
import {formatPath, parseYaml} from './source.js'
import type {AgentConfig, ResolvedConfig} from './types.js'
import {schemaIssues} from './validate.js'

export {ConfigError, type ConfigIssue, formatIssue} from './errors.js'
export {resolveConfig} from './resolve.js'
export {configSchema, clientConfigSchema, nodeConfigSchema, renderSchema, SCHEMA_ID} from './schema.js'
export type {
  AgentConfig,
  ClientConfig,
  LogLevel,
  NodeConfig,
  ResolvedClientConfig,
  ResolvedClientEntry,
  ResolvedConfig,
  ResolvedNodeConfig,
  ResolvedPki,
  TransportsConfig,
} from './types.js'

/** In file order (a stable sort: issues at one position keep the validator's order). */
function byPosition(a: ConfigIssue, b: ConfigIssue): number {
  return (a.line ?? 0) - (b.line ?? 0) || (a.column ?? 0) - (b.column ?? 0)
}

/**
 * Parses and validates the text of a config file. Throws ConfigError listing every issue
 * (YAML syntax first; schema problems; then, once the shape is right, semantic ones).
 * Defaults are not applied: see resolveConfig / loadConfig.
 */
export function parseConfig(text: string, file: string): AgentConfig {
  const {source, issues: yamlIssues} = parseYaml(text)
  if (yamlIssues.length > 0) throw new ConfigError(file, yamlIssues.sort(byPosition))

  let data: unknown
  try {
    data = source.data()
  } catch (err) {
    // yaml refuses to expand an "alias bomb" (aliases nested to blow up exponentially).
    throw new ConfigError(file, [{path: '', line: 1, column: 1, message: `YAML: ${(err as Error).message}`}])
  }
  const issues = schemaIssues(data, source)
  if (issues.length > 0) throw new ConfigError(file, issues.sort(byPosition))

  const config = data as AgentConfig
  const semantic = semanticIssues(config).map((i) => ({
    path: formatPath(i.path),
    ...source.locate(i.path, i.atKey ? 'key' : 'value'),
    message: i.message,
  }))
  if (semantic.length > 0) throw new ConfigError(file, semantic.sort(byPosition))
  return config
}

/** Reads, validates and resolves a config file (defaults applied, pki paths absolute). */
export async function loadConfig(file: string): Promise<ResolvedConfig> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message
    throw new ConfigError(file, [{path: '', message: `cannot read the config file: ${reason}`}])
  }
  return resolveConfig(parseConfig(text, file), file)
}
