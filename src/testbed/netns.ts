/**
 * Named network namespaces through iproute2 (`ip netns`), async and sync (for exit handlers).
 *
 * Deleting a namespace only removes its name: the kernel keeps it alive while a process is still
 * inside. So before deleting, whatever still runs in it is killed by pid; a namespace belongs to
 * one testbed, so everything inside was started by it.
 */
import {run, runSync} from './run.js'

function parseList(stdout: string): string[] {
  // Lines look like `name (id: 3)` or just `name`.
  return stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0])
    .filter((n): n is string => Boolean(n))
}

function parsePids(stdout: string): number[] {
  return stdout
    .split(/\s+/)
    .filter((s) => /^\d+$/.test(s))
    .map(Number)
}

function killAll(pids: number[]): void {
  for (const pid of pids) {
    if (pid === process.pid) continue
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      // Already gone.
    }
  }
}

export async function listNamespaces(): Promise<string[]> {
  const r = await run('ip', ['netns', 'list'])
  return r.code === 0 ? parseList(r.stdout) : []
}

export function listNamespacesSync(): string[] {
  const r = runSync('ip', ['netns', 'list'])
  return r.code === 0 ? parseList(r.stdout) : []
}

export async function addNamespace(name: string): Promise<void> {
  await run('ip', ['netns', 'add', name], {check: true})
}

/** Kill what runs inside, then delete. Missing namespaces are fine (idempotent). */
export async function deleteNamespace(name: string): Promise<void> {
  const pids = await run('ip', ['netns', 'pids', name])
  if (pids.code === 0) killAll(parsePids(pids.stdout))
  const r = await run('ip', ['netns', 'delete', name])
  if (r.code !== 0 && !/No such file|does not exist/i.test(r.stderr)) {
    throw new Error(`ip netns delete ${name}: ${r.stderr.trim()}`)
  }
}

export function deleteNamespaceSync(name: string): void {
  const pids = runSync('ip', ['netns', 'pids', name])
  if (pids.code === 0) killAll(parsePids(pids.stdout))
  runSync('ip', ['netns', 'delete', name])
}
