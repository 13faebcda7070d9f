// Long-running processes for bench paths: started in a namespace with their output drained into
// a log file (an undrained pipe would stall a chatty daemon), optionally waiting for a ready line.
import {createWriteStream} from 'node:fs'
import {join} from 'node:path'
import {waitForOutput} from '../../dist/testbed/index.js'

/**
 * @param {import('../../dist/testbed/index.js').Testbed} tb
 * @param {string} ns
 * @param {string} cmd
 * @param {string[]} args
 * @param {{name: string, ready?: RegExp, timeoutMs?: number, cwd?: string, env?: NodeJS.ProcessEnv}} opts
 *   name: log file name under tb.dir; ready: resolve only once this appears in the output.
 * @returns {Promise<{child: import('node:child_process').ChildProcess, log: string}>}
 */
export async function startLogged(tb, ns, cmd, args, opts) {
  const log = join(tb.dir, `${opts.name}.log`)
  const out = createWriteStream(log)
  const child = tb.spawn(ns, cmd, args, {stdio: ['ignore', 'pipe', 'pipe'], cwd: opts.cwd, env: opts.env})
  child.stdout.pipe(out, {end: false})
  child.stderr.pipe(out, {end: false})
  child.once('exit', () => out.end())
  if (opts.ready) await waitForOutput(child, opts.ready, opts.timeoutMs ?? 20_000)
  return {child, log}
}
