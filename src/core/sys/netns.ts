/**
 * A Runner that runs every command inside a named network namespace (`ip netns exec`), so the
 * firewall and route code can be exercised for real without touching the host's own network.
 */
import {CommandError, CommandNotFoundError, run, type Runner} from './run.js'

const NETNS_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/

export function netnsRunner(netns: string, base: Runner = run): Runner {
  if (!NETNS_NAME.test(netns)) throw new Error(`invalid network namespace name ${JSON.stringify(netns)}`)
  // `ip netns exec` reports a missing binary itself; surface it like run() does.
  const missing = (stderr: string) => /exec of "[^"]*" failed: No such file or directory/.test(stderr)
  return async (cmd, args, opts) => {
    try {
      const res = await base('ip', ['netns', 'exec', netns, cmd, ...args], opts)
      if (res.code !== 0 && missing(res.stderr)) throw new CommandNotFoundError(cmd)
      return res
    } catch (err) {
      if (err instanceof CommandError && missing(err.stderr)) throw new CommandNotFoundError(cmd)
      throw err
    }
  }
}
