/**
 * Small Node.js scripts run inside a namespace. Vitest runs in the root namespace, so a test that
 * needs a client where the testbed's addresses are (etcd in ctl, a node's wan...) runs it as an
 * ES module given with `-e`. The working directory is the package root, so the script imports the
 * package's dependencies by name (`import {Etcd3} from 'etcd3'`), from src/ and dist/ alike.
 * The script reads its one argument, JSON, as `JSON.parse(process.argv[1])`.
 */
import type {ChildProcess} from 'node:child_process'
import {ROOT} from './fleet.js'
import type {ExecOptions, ExecResult} from './run.js'
import type {Testbed} from './types.js'

const argv = (code: string, arg: unknown) => ['--input-type=module', '-e', code, JSON.stringify(arg ?? null)]

/** Run a script to completion in a namespace; resolves with its output and exit code. */
export function runScript(tb: Testbed, ns: string, code: string, arg?: unknown, opts: ExecOptions = {}): Promise<ExecResult> {
  return tb.exec(ns, process.execPath, argv(code, arg), {cwd: ROOT, ...opts})
}

/** Start a long-running script in a namespace (stdout and stderr piped, tracked by the testbed). */
export function spawnScript(tb: Testbed, ns: string, code: string, arg?: unknown): ChildProcess {
  return tb.spawn(ns, process.execPath, argv(code, arg), {cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe']})
}
