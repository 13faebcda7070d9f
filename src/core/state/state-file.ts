/**
 * What a running `agent up` has changed on the system, written before each change is made, so
 * that `agent down`, or the next `up` after a kill -9, can undo exactly that.
 * One JSON file per instance under the run directory (default /run/agent).
 */
import {mkdirSync, readFileSync, renameSync, rmSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'

export const DEFAULT_RUN_DIR = '/run/agent'

/** The run directory: --run-dir, else $AGENT_RUN_DIR, else /run/agent. */
export function runDir(flag?: string): string {
  return flag ?? process.env.AGENT_RUN_DIR ?? DEFAULT_RUN_DIR
}

import type {AddedRoute} from '../routes/index.js'

/** A route as added, with what it takes to delete exactly it. */
export type RouteRecord = AddedRoute

export interface AgentState {
  pid: number
  role: 'node' | 'client'
  name: string
  transport: string
  startedAt: string
  interface: string
  routes: RouteRecord[]
  /** The node's firewall instance name, once its chains may exist. */
  firewall?: string
  /** net.ipv4.ip_forward before the node set it, to put back on down. */
  ipForwardBefore?: string
}

export class StateFile {
  readonly path: string
  readonly socketPath: string

  constructor(
    readonly dir: string,
    readonly name: string,
  ) {
    this.path = join(dir, `${name}.json`)
    this.socketPath = join(dir, `${name}.sock`)
  }

  read(): AgentState | null {
    let text: string
    try {
      text = readFileSync(this.path, 'utf8')
    } catch {
      return null
    }
    try {
      return JSON.parse(text) as AgentState
    } catch {
      throw new Error(`state file ${this.path} is corrupt: remove it after checking no agent "${this.name}" runs`)
    }
  }

  /** Atomic replace, so a crash mid-write never leaves half a record. */
  write(state: AgentState): void {
    mkdirSync(this.dir, {recursive: true, mode: 0o755})
    const tmp = `${this.path}.${process.pid}.tmp`
    writeFileSync(tmp, JSON.stringify(state, null, 2) + '\n', {mode: 0o644})
    renameSync(tmp, this.path)
  }

  remove(): void {
    rmSync(this.path, {force: true})
    rmSync(this.socketPath, {force: true})
  }
}

/** True when `pid` is a live process that is an agent (guards against PID reuse). */
export function isAgentAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'
  }
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8')
    return /agent|run\.js/.test(cmdline)
  } catch {
    return false
  }
}
