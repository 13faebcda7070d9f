/**
 * Runs a system tool (iptables-restore, ip...) without a shell and turns failures into errors an
 * operator can act on: they name the command, its arguments and what the tool printed.
 *
 * Control plane only: one process per call is fine here, never on the data path.
 */
import {execFile} from 'node:child_process'

export interface RunOptions {
  /** Written to the child's stdin, which is then closed (iptables-restore reads its payload there). */
  input?: string
  /** Resolve with the exit code instead of rejecting when the command exits non-zero. */
  allowFail?: boolean
  /** Kill the child after this long; a hung firewall tool must not hang `up` forever. */
  timeoutMs?: number
}

export interface RunResult {
  stdout: string
  stderr: string
  code: number
}

/** What every system-facing module takes, so tests can run the same code inside a network namespace. */
export type Runner = (cmd: string, args: readonly string[], opts?: RunOptions) => Promise<RunResult>

/** The command ran and failed (non-zero exit, signal or timeout). */
export class CommandError extends Error {
  constructor(
    message: string,
    readonly cmd: string,
    readonly args: readonly string[],
    readonly code: number | null,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(message)
    this.name = 'CommandError'
  }
}

/** The binary is not installed (or not on PATH). */
export class CommandNotFoundError extends Error {
  constructor(readonly cmd: string) {
    super(`${cmd} not found: ${installHint(cmd)}`)
    this.name = 'CommandNotFoundError'
  }
}

const PACKAGES: Array<[RegExp, string]> = [
  [/^(ip6?tables|ip6?tables-(save|restore)|iptables-nft.*|iptables-legacy.*)$/, 'iptables'],
  [/^(ip|tc|bridge|ss)$/, 'iproute2'],
  [/^nft$/, 'nftables'],
  [/^sysctl$/, 'procps'],
]

function installHint(cmd: string): string {
  const pkg = PACKAGES.find(([re]) => re.test(cmd))?.[1]
  return pkg ? `install ${pkg}` : 'is it installed and on PATH?'
}

/** Shell-like rendering for messages only (we never pass this to a shell). */
export function formatCommand(cmd: string, args: readonly string[]): string {
  return [cmd, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ')
}

const DEFAULT_TIMEOUT_MS = 60_000
// iptables-save on a busy host (Docker, Kubernetes) runs to megabytes.
const MAX_BUFFER = 64 * 1024 * 1024

export const run: Runner = (cmd, args, opts = {}) =>
  new Promise((resolve, reject) => {
    const child = execFile(
      cmd,
      [...args],
      {
        encoding: 'utf8',
        maxBuffer: MAX_BUFFER,
        timeout: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
        // Untranslated messages: callers match on "No such process" and the like.
        env: {...process.env, LC_ALL: 'C'},
      },
      (err, stdout, stderr) => {
        if (!err) return resolve({stdout, stderr, code: 0})
        const e = err as NodeJS.ErrnoException & {code?: number | string; killed?: boolean; signal?: string | null}
        if (e.code === 'ENOENT') return reject(new CommandNotFoundError(cmd))
        const code = typeof e.code === 'number' ? e.code : null
        if (code !== null && opts.allowFail) return resolve({stdout, stderr, code})
        const how = e.killed || e.signal ? `was killed (${e.signal ?? 'timeout'})` : code !== null ? `exited with ${code}` : `failed (${e.message})`
        const detail = stderr.trim() || stdout.trim()
        reject(new CommandError(`${formatCommand(cmd, args)} ${how}${detail ? `: ${detail}` : ''}`, cmd, args, code, stdout, stderr))
      },
    )
    // A tool that exits before reading its stdin makes our write fail with EPIPE; the exit status
    // (handled above) is the error worth reporting, so swallow the write error.
    child.stdin?.on('error', () => {})
    child.stdin?.end(opts.input ?? '')
  })
