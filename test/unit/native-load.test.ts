/**
 * The AGENT_NATIVE_ADDON override of src/core/native/load.ts (the fuzzer's ASan build): a path
 * that is missing fails with an error naming it, never a quiet fall back to build/Release.
 */
import {afterEach, describe, expect, it} from 'vitest'
import {ADDON_OVERRIDE_ENV, addonLoader} from '../../src/core/native/load.js'

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
    expect(() => addonLoader({...spec, name: 'agent_other'})()).toThrow(/build\/Release\/agent_other\.node is missing/)
  })
})
