/**
 * Namespace naming: `<prefix><pid>-<seq>-<role>`, e.g. `tb4242-1-node`.
 *
 * The pid says which process owns the namespace (so a later run can tell leftovers of a dead
 * process from a live process's namespaces), and seq tells apart several testbeds of one process.
 * The prefix must not end in a digit, so the digits right after it are the pid and nothing else:
 * with prefix `tb`, `tb1234-...` can only be pid 1234, never prefix `tb1` with pid 234.
 */
import {readFileSync} from 'node:fs'

const PREFIX_RE = /^[A-Za-z][A-Za-z0-9_]{0,23}$/

export function checkPrefix(prefix: string): void {
  if (!PREFIX_RE.test(prefix) || /\d$/.test(prefix)) {
    throw new Error(`testbed prefix ${JSON.stringify(prefix)}: use 1-24 letters, digits or _, starting with a letter and not ending in a digit`)
  }
}

export function nsName(prefix: string, pid: number, seq: number, role: string): string {
  return `${prefix}${pid}-${seq}-${role}`
}

/** The owner pid of a namespace (or temp dir) name made by nsName with this prefix, else undefined. */
export function ownerPid(prefix: string, name: string): number | undefined {
  if (!name.startsWith(prefix)) return undefined
  const m = /^(\d+)-\d+-/.exec(name.slice(prefix.length))
  return m ? Number(m[1]) : undefined
}

/** Whether a process with this pid exists and has not exited (a zombie has: it runs no more cleanup). */
export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false
  try {
    process.kill(pid, 0)
  } catch (e) {
    // EPERM: it exists, it just is not ours to signal.
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false
  }
  try {
    // State is the field after the parenthesised command name, which may itself hold spaces.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
  } catch (e) {
    // Gone since the kill(0) (ENOENT), or no /proc view of it: then assume alive, the safe answer.
    return (e as NodeJS.ErrnoException).code !== 'ENOENT'
  }
}
