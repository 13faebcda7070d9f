/**
 * Running commands for the testbed: a small promise wrapper around spawn that never throws on a
 * non-zero exit unless asked to (tests often expect failures, e.g. "the target is unreachable"),
 * and a synchronous twin for the process 'exit' handler, where nothing asynchronous runs.
 */
import {spawn, spawnSync} from 'node:child_process'

export interface ExecOptions {
  /** Written to the command's stdin, which is then closed. */
  input?: string | Buffer
  /** Kill the command with SIGKILL after this long; default 60 s so a hung command cannot hang a test run. */
  timeoutMs?: number
  env?: NodeJS.ProcessEnv
  cwd?: string
  /** Throw a CommandError when the command does not exit with 0. */
  check?: boolean
}

export interface ExecResult {
  stdout: string
  stderr: string
  /** Exit code, or null when the command died of a signal (see `signal`). */
  code: number | null
  signal: NodeJS.Signals | null
}

export class CommandError extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly result: ExecResult,
  ) {
    const why = result.code === null ? `signal ${result.signal}` : `exit code ${result.code}`
    super(`${argv.join(' ')} failed (${why}): ${(result.stderr || result.stdout).trim().slice(0, 2000)}`)
    this.name = 'CommandError'
  }
}

const DEFAULT_TIMEOUT_MS = 60_000

export function run(cmd: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {cwd: opts.cwd, env: opts.env, stdio: ['pipe', 'pipe', 'pipe']})
    const out: Buffer[] = []
    const err: Buffer[] = []
    child.stdout.on('data', (b: Buffer) => out.push(b))
    child.stderr.on('data', (b: Buffer) => err.push(b))
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? DEFAULT_TIMEOUT_MS)
    child.on('error', (e) => {
      clearTimeout(timer)
      reject(e)
    })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      const result = {stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), code, signal}
      if (opts.check && code !== 0) reject(new CommandError([cmd, ...args], result))
      else resolve(result)
    })
    // A command that exits without reading stdin makes the write fail with EPIPE: not our error.
    child.stdin.on('error', () => {})
    child.stdin.end(opts.input ?? '')
  })
}

/** Synchronous variant for exit handlers; never throws. */
export function runSync(cmd: string, args: readonly string[], timeoutMs = 10_000): ExecResult {
  const r = spawnSync(cmd, args, {encoding: 'utf8', timeout: timeoutMs, stdio: ['ignore', 'pipe', 'pipe']})
  return {stdout: r.stdout ?? '', stderr: r.stderr ?? (r.error ? String(r.error) : ''), code: r.status, signal: r.signal}
}
