/**
 * Kernel parameters through /proc/sys (no `sysctl` binary needed). The node sets
 * net.ipv4.ip_forward=1 on `up` and the last node of the namespace to stop writes the value
 * from before back (state/ip-forward.ts), so a host that had forwarding off gets it off again.
 *
 * /proc/sys/net belongs to the network namespace of the process, so these act on the namespace
 * the agent runs in.
 */
import {readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

export interface SysctlOptions {
  /** Where the tree is mounted; tests point this at a temporary directory. */
  root?: string
}

// Dotted keys as sysctl(8) writes them, or slash-separated for components that contain dots
// (net/ipv4/conf/eth0.100/rp_filter), again as sysctl(8) accepts.
const KEY = /^[A-Za-z0-9_][A-Za-z0-9_.:@-]*(\/[A-Za-z0-9_][A-Za-z0-9_.:@-]*)*$/

export function sysctlPath(key: string, root = '/proc/sys'): string {
  if (!KEY.test(key) || key.split(/[./]/).some((part) => part === '')) {
    throw new Error(`invalid sysctl key ${JSON.stringify(key)}`)
  }
  const rel = key.includes('/') ? key : key.replaceAll('.', '/')
  if (rel.split('/').some((part) => part === '..' || part === '.')) throw new Error(`invalid sysctl key ${JSON.stringify(key)}`)
  return join(root, rel)
}

export async function getSysctl(key: string, opts: SysctlOptions = {}): Promise<string> {
  const path = sysctlPath(key, opts.root)
  try {
    return (await readFile(path, 'utf8')).trim()
  } catch (err) {
    throw sysctlError('read', key, path, err)
  }
}

/** Writes `value` and returns the previous value, for the caller to restore later. */
export async function setSysctl(key: string, value: string | number, opts: SysctlOptions = {}): Promise<string> {
  const text = String(value)
  if (/[\n\0]/.test(text)) throw new Error(`invalid value for sysctl ${key}: ${JSON.stringify(text)}`)
  const previous = await getSysctl(key, opts)
  const path = sysctlPath(key, opts.root)
  if (previous === text) return previous
  try {
    await writeFile(path, `${text}\n`)
  } catch (err) {
    throw sysctlError('write', key, path, err)
  }
  return previous
}

function sysctlError(op: 'read' | 'write', key: string, path: string, err: unknown): Error {
  const code = (err as NodeJS.ErrnoException).code
  const why =
    code === 'ENOENT'
      ? 'no such parameter on this kernel'
      : code === 'EACCES' || code === 'EPERM'
        ? 'permission denied (run as root)'
        : code === 'EROFS'
          ? '/proc/sys is read-only (an unprivileged container?)'
          : (err as Error).message
  return new Error(`cannot ${op} sysctl ${key} (${path}): ${why}`, {cause: err})
}
