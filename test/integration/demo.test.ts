/**
 * The README's first command runs scripts/demo.mjs (after setup): it must keep working, and it
 * caught a bug the other tests did not (agent down from a caller that reaps its children late).
 */
import {execFile} from 'node:child_process'
import {resolve} from 'node:path'
import {promisify} from 'node:util'
import {describe, expect, it} from 'vitest'

const run = promisify(execFile)
const demo = resolve(import.meta.dirname, '../../scripts/demo.mjs')

describe('the demo', () => {
  it.each(['tls', 'gre', 'ipsec-over-gre'])('brings a node and a client up over %s, shows traffic and status, and removes everything', async (transport) => {
    const {stdout} = await run(process.execPath, [demo, transport], {timeout: 120_000})
    expect(stdout).toMatch(/3 packets transmitted, 3 received/)
    expect(stdout).toMatch(/it sees the connection coming from 203\.0\.113\.1/)
    expect(stdout).toMatch(/alice\s+10\.8\.0\.2\s+198\.51\.100\.2:\d+/)
    expect(stdout).toMatch(/stopped alice \(pid \d+\)/)
    expect(stdout).toMatch(/demo finished/)
  }, 150_000)
})
