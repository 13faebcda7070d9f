/**
 * The run directory (default /run/agent) holds what the agent trusts later: the state files
 * tell `agent down` and the next `up` what to delete, the lock says who runs, and the status
 * socket takes reloads. Whoever can write there can make root delete routes and firewall chains
 * of their choosing, or stand in for a running agent. So a run directory is used only when it is
 * a real directory (not a symlink), owned by root (or by the user running this command), and
 * not writable by group or others; the same holds for its ancestors unless they are sticky
 * (like /tmp), since whoever can rename an entry of a parent can swap the directory itself.
 */
import {lstatSync, mkdirSync, readlinkSync, realpathSync, statSync, type Stats} from 'node:fs'
import {dirname, resolve} from 'node:path'

/** Why a directory at `path` (already lstat'ed as `st`) must not be trusted, or undefined. */
export function distrust(st: Stats, path: string): string | undefined {
  if (st.isSymbolicLink()) return `is a symbolic link (to ${readlinkOr(path)})`
  if (!st.isDirectory()) return 'is not a directory'
  if (!trustedUid(st.uid)) return `is owned by uid ${st.uid}, not by root${ownUid() === 0 ? '' : ` or uid ${ownUid()}`}`
  if ((st.mode & 0o022) !== 0) return `is writable by ${writers(st.mode)} (mode ${octal(st.mode)})`
  return undefined
}

/**
 * Checks an existing run directory for `agent down`, `status` and `reload`, which only read it:
 * returns false when it does not exist (nothing runs), throws when it exists and is not safe.
 */
export function checkRunDir(dir: string): boolean {
  let st: Stats
  try {
    st = lstatSync(dir)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false
    throw new Error(`run directory ${dir}: ${(e as Error).message}`)
  }
  refuseIf(dir, distrust(st, dir))
  checkAncestors(dir)
  return true
}

/**
 * For `up`: the run directory, created if missing, and checked. It is created 0700: only root
 * uses what is inside (the status socket is 0600 anyway), so nobody else needs to list it.
 * mkdir(2) never follows a symlink in the last component (it fails with EEXIST), and the result
 * is lstat'ed, so a symlink planted there, before or during the creation, is refused. Missing
 * parents are created 0755 like any system directory, then checked like the others.
 */
export function prepareRunDir(dir: string): void {
  try {
    mkdirSync(dir, {mode: 0o700})
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code === 'ENOENT') {
      mkdirSync(dirname(resolve(dir)), {recursive: true, mode: 0o755})
      return prepareRunDir(dir)
    }
    if (code !== 'EEXIST') throw new Error(`cannot create the run directory ${dir}: ${(e as Error).message}`)
  }
  if (!checkRunDir(dir)) throw new Error(`run directory ${dir} disappeared while it was being created`)
}

/**
 * Each ancestor (symlinks in them resolved: /var/run -> /run is fine) must be owned by root or
 * us, and writable by nobody else unless sticky.
 */
function checkAncestors(dir: string): void {
  let parent: string
  try {
    parent = realpathSync(dirname(resolve(dir)))
  } catch (e) {
    throw new Error(`run directory ${dir}: ${(e as Error).message}`)
  }
  for (;;) {
    const st = statSync(parent)
    const problem = !trustedUid(st.uid)
      ? `is owned by uid ${st.uid}, not by root`
      : (st.mode & 0o022) !== 0 && (st.mode & 0o1000) === 0
        ? `is writable by ${writers(st.mode)} and not sticky (mode ${octal(st.mode)}), so they could replace the run directory`
        : undefined
    if (problem !== undefined) refuseIf(dir, `is inside ${parent}, which ${problem}`)
    const up = dirname(parent)
    if (up === parent) return
    parent = up
  }
}

function refuseIf(dir: string, problem: string | undefined): void {
  if (problem === undefined) return
  throw new Error(
    `run directory ${dir} ${problem}: it holds the state that tells \`agent down\` what to delete, so only root may write there ` +
      `(fix its owner and mode, e.g. chown root and chmod 0700, or choose another --run-dir)`,
  )
}

function ownUid(): number {
  return process.getuid?.() ?? 0
}

function trustedUid(uid: number): boolean {
  return uid === 0 || uid === ownUid()
}

function writers(mode: number): string {
  return mode & 0o020 ? (mode & 0o002 ? 'group and others' : 'group') : 'others'
}

function octal(mode: number): string {
  return `0${(mode & 0o7777).toString(8).padStart(3, '0')}`
}

function readlinkOr(path: string): string {
  try {
    return readlinkSync(path)
  } catch {
    return '?'
  }
}
