/**
 * The run directory's checks: only a real directory, owned by root, that nobody else can write
 * (nor replace through a writable parent) is used; a missing one is created 0700 without
 * following a symlink. Everything happens in temporary directories.
 */
import {chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {afterEach, beforeEach, describe, expect, it} from 'vitest'
import {checkRunDir, prepareRunDir} from '../../src/core/state/run-dir.js'
import {StateFile} from '../../src/core/state/state-file.js'
import {collectStatus} from '../../src/core/status/collect.js'

let scratch: string
beforeEach(() => {
  scratch = mkdtempSync(join(tmpdir(), `agent-rundir-${process.pid}-`))
})
afterEach(() => rmSync(scratch, {recursive: true, force: true}))

const mode = (p: string) => lstatSync(p).mode & 0o7777

describe('prepareRunDir', () => {
  it('creates a missing run directory 0700, and missing parents', () => {
    const dir = join(scratch, 'a', 'b', 'run')
    const umask = process.umask(0)
    try {
      prepareRunDir(dir)
    } finally {
      process.umask(umask)
    }
    expect(lstatSync(dir).isDirectory()).toBe(true)
    expect(mode(dir)).toBe(0o700)
    expect(mode(join(scratch, 'a', 'b'))).toBe(0o755)
  })

  it('accepts an existing directory that only root can write (0700 or 0755)', () => {
    const dir = join(scratch, 'run')
    mkdirSync(dir, {mode: 0o755})
    chmodSync(dir, 0o755)
    expect(() => prepareRunDir(dir)).not.toThrow()
    chmodSync(dir, 0o700)
    expect(() => prepareRunDir(dir)).not.toThrow()
    expect(checkRunDir(dir)).toBe(true)
  })

  it('refuses a directory group or others can write, naming the path and the mode', () => {
    const dir = join(scratch, 'run')
    mkdirSync(dir)
    chmodSync(dir, 0o777)
    expect(() => prepareRunDir(dir)).toThrow(`run directory ${dir} is writable by group and others (mode 0777)`)
    chmodSync(dir, 0o757)
    expect(() => prepareRunDir(dir)).toThrow(`run directory ${dir} is writable by others (mode 0757)`)
    chmodSync(dir, 0o770)
    expect(() => checkRunDir(dir)).toThrow(`run directory ${dir} is writable by group (mode 0770)`)
    // Sticky does not make the run directory itself any safer: its files are root's to trust.
    chmodSync(dir, 0o1777)
    expect(() => checkRunDir(dir)).toThrow(/mode 01777/)
  })

  it('refuses a directory owned by another user', () => {
    const dir = join(scratch, 'run')
    mkdirSync(dir, {mode: 0o700})
    chownSync(dir, 65534, 65534)
    expect(() => prepareRunDir(dir)).toThrow(`run directory ${dir} is owned by uid 65534, not by root`)
  })

  it('refuses a symlink, even to a good directory, and never creates through one', () => {
    const good = join(scratch, 'good')
    mkdirSync(good, {mode: 0o700})
    const link = join(scratch, 'run')
    symlinkSync(good, link)
    expect(() => prepareRunDir(link)).toThrow(`run directory ${link} is a symbolic link (to ${good})`)
    expect(() => checkRunDir(link)).toThrow(/is a symbolic link/)

    const dangling = join(scratch, 'run2')
    const target = join(scratch, 'elsewhere')
    symlinkSync(target, dangling)
    expect(() => prepareRunDir(dangling)).toThrow(/is a symbolic link/)
    expect(existsSync(target)).toBe(false)
  })

  it('refuses something that is not a directory', () => {
    const file = join(scratch, 'run')
    writeFileSync(file, '')
    expect(() => prepareRunDir(file)).toThrow(`run directory ${file} is not a directory`)
  })

  it('refuses a run directory inside a parent others can write (they could swap it), unless the parent is sticky', () => {
    const parent = join(scratch, 'shared')
    mkdirSync(parent)
    const dir = join(parent, 'run')
    mkdirSync(dir, {mode: 0o700})
    chmodSync(parent, 0o777)
    expect(() => checkRunDir(dir)).toThrow(`run directory ${dir} is inside ${parent}, which is writable by group and others and not sticky (mode 0777)`)
    chmodSync(parent, 0o1777)
    expect(checkRunDir(dir)).toBe(true)
  })
})

describe('checkRunDir (down, status, reload)', () => {
  it('says a missing run directory is missing, and does not create it', () => {
    const dir = join(scratch, 'none')
    expect(checkRunDir(dir)).toBe(false)
    expect(existsSync(dir)).toBe(false)
  })
})

describe('users of the run directory', () => {
  it('a state file is neither written nor locked in a writable run directory', () => {
    const dir = join(scratch, 'run')
    mkdirSync(dir)
    chmodSync(dir, 0o777)
    const f = new StateFile(dir, 'alice')
    expect(() => f.acquire()).toThrow(/is writable by group and others/)
    expect(() => f.write({pid: process.pid, role: 'client', name: 'alice', transport: 'tls', startedAt: '', interface: 'x', routes: []})).toThrow(/writable/)
    expect([f.path, f.lockPath].map(existsSync)).toEqual([false, false])
  })

  it('status refuses a symlinked run directory instead of trusting the records behind it', async () => {
    const real = join(scratch, 'real')
    mkdirSync(real, {mode: 0o700})
    writeFileSync(join(real, 'alice.json'), JSON.stringify({pid: process.pid, name: 'alice'}))
    const link = join(scratch, 'run')
    symlinkSync(real, link)
    await expect(collectStatus(link)).rejects.toThrow(`run directory ${link} is a symbolic link`)
    expect(await collectStatus(join(scratch, 'none'))).toEqual([])
  })
})
