/**
 * Once per test run: install the bundled transport plugins into a throwaway oclif data dir, as
 * an operator would with `agent plugins:install`, so the end-to-end tests run the agent the
 * way it is really used without touching the machine's own plugin dir.
 */
import {execFileSync} from 'node:child_process'
import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join, resolve} from 'node:path'
import type {TestProject} from 'vitest/node'

declare module 'vitest' {
  export interface ProvidedContext {
    agentDataDir: string
  }
}

export default function setup(project: TestProject): () => void {
  const dir = mkdtempSync(join(tmpdir(), `agent-test-data-${process.pid}-`))
  const bin = resolve(import.meta.dirname, '../bin/run.js')
  execFileSync(process.execPath, [bin, 'plugins:install', 'tls', 'gre', 'ipip', 'ipsec-over-gre'], {env: {...process.env, AGENT_DATA_DIR: dir}, stdio: 'pipe'})
  project.provide('agentDataDir', dir)
  return () => rmSync(dir, {recursive: true, force: true})
}
