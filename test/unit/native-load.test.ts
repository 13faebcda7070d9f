/**
 * Where src/core/native/load.ts finds the addon. The AGENT_NATIVE_ADDON override (the fuzzer's
 * ASan build): a path that is missing fails with an error naming it, never a quiet fall back to
 * build/Release. Then build/Release (node-gyp), then prebuilds/<platform>-<arch> (the release
 * artifact's prebuilt, docs/install.md). Needs the build (build/Release/agent_native.node).
 */
import {copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join, resolve} from 'node:path'
import {pathToFileURL} from 'node:url'
import {afterEach, describe, expect, it} from 'vitest'
import {ADDON_OVERRIDE_ENV, addonCandidates, addonLoader} from '../../src/core/native/load.js'

const spec = {from: import.meta.url, name: 'agent_native', what: 'the native addon', code: 'ERR_AGENT_NATIVE_ADDON'}
const saved = process.env[ADDON_OVERRIDE_ENV]

afterEach(() => {
  if (saved === undefined) delete process.env[ADDON_OVERRIDE_ENV]
  else process.env[ADDON_OVERRIDE_ENV] = saved
})

describe('AGENT_NATIVE_ADDON', () => {
  it('names the missing file it was pointed at', () => {
    process.env[ADDON_OVERRIDE_ENV] = '/nonexistent/agent-asan/agent_native.node'
    expect(() => addonLoader(spec)()).toThrow(expect.objectContaining({code: 'ERR_AGENT_NATIVE_ADDON', message: expect.stringContaining('AGENT_NATIVE_ADDON is missing: /nonexistent/agent-asan/agent_native.node')}))
  })

  it('applies only to agent_native', () => {
    process.env[ADDON_OVERRIDE_ENV] = '/nonexistent/agent-asan/agent_native.node'
    expect(() => addonLoader({...spec, name: 'agent_other'})()).toThrow(/build\/Release\/agent_other\.node and \S+\/prebuilds\/\w+-\w+\/agent_other\.node are missing/)
  })
})

describe('build/Release, then prebuilds/<platform>-<arch>', () => {
  const built = resolve(import.meta.dirname, '../../build/Release/agent_native.node')
  const dirs: string[] = []
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, {recursive: true, force: true})
  })

  /** An installed "agent" package without node-gyp's build: package.json, dist/, the prebuilt. */
  function installedPackage(): {root: string; from: string} {
    const root = mkdtempSync(join(tmpdir(), 'agent-native-load-'))
    dirs.push(root)
    writeFileSync(join(root, 'package.json'), JSON.stringify({name: 'agent'}))
    const prebuilt = addonCandidates(root, 'agent_native')[1]
    mkdirSync(resolve(prebuilt, '..'), {recursive: true})
    copyFileSync(built, prebuilt)
    return {root, from: pathToFileURL(join(root, 'dist/core/native/addon.js')).href}
  }

  it('loads the prebuilt of this platform when node-gyp built nothing', () => {
    delete process.env[ADDON_OVERRIDE_ENV]
    const {from} = installedPackage()
    const addon = addonLoader<Record<string, unknown>>({...spec, from})()
    expect(Object.keys(addon)).toEqual(expect.arrayContaining(['tun', 'net', 'fast', 'stream']))
  })

  it('prefers build/Release, where a machine no prebuilt fitted compiled its own', () => {
    delete process.env[ADDON_OVERRIDE_ENV]
    const {root, from} = installedPackage()
    mkdirSync(join(root, 'build/Release'), {recursive: true})
    writeFileSync(join(root, 'build/Release/agent_native.node'), 'not an ELF file')
    expect(() => addonLoader({...spec, from})()).toThrow(/build\/Release\/agent_native\.node/)
  })
})
