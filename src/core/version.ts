/** The agent's version, from its package.json (two levels up from src/core and dist/core alike). */
import {readFileSync} from 'node:fs'

let cached: string | undefined

export function agentVersion(): string {
  if (cached === undefined) {
    try {
      cached = String((JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {version?: unknown}).version ?? 'unknown')
    } catch {
      cached = 'unknown'
    }
  }
  return cached
}
