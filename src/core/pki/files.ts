// File handling for the PKI directory: modes matter here because key files are secrets.
import {randomBytes} from 'node:crypto'
import {constants} from 'node:fs'
import {access, chmod, mkdir, open, rename, rm} from 'node:fs/promises'
import {dirname, join} from 'node:path'

export const SECRET_MODE = 0o600
export const PUBLIC_MODE = 0o644
export const DIR_MODE = 0o700

export async function exists(path: string): Promise<boolean> {
  try {
    await access(path, constants.F_OK)
    return true
  } catch {
    return false
  }
}

/** Creates the directory (and parents) with mode 0700 if missing; an existing one is left as is. */
export async function ensureDir(dir: string): Promise<void> {
  if (await exists(dir)) return
  await mkdir(dir, {recursive: true, mode: DIR_MODE})
}

/**
 * Writes a file atomically (temp file + rename) so a crash never leaves half a key behind, and so
 * the mode is that of a fresh file even when --force replaces an existing one with looser bits.
 */
export async function writeFileAtomic(path: string, data: string, mode: number): Promise<void> {
  const tmp = join(dirname(path), `.${randomBytes(6).toString('hex')}.tmp`)
  const fh = await open(tmp, 'wx', mode)
  try {
    await fh.writeFile(data)
    await fh.sync()
  } finally {
    await fh.close()
  }
  try {
    // Secrets get their mode set explicitly: a permissive umask must not matter, a strict one may
    // still narrow public files.
    if (mode === SECRET_MODE) await chmod(tmp, mode)
    await rename(tmp, path)
  } catch (error) {
    await rm(tmp, {force: true})
    throw error
  }
}
