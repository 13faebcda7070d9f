/**
 * coalesce.c verifies each TCP segment's IPv4 and TCP checksums before it merges segments into
 * one GSO write (a bad segment must reach the kernel as it is, to be dropped there). Its sum is
 * word-at-a-time for speed; test/fixtures/native/checksum.c checks it against RFC 1071's
 * bytewise definition, built here with the machine's C compiler (node-gyp needs one anyway).
 */
import {execFileSync} from 'node:child_process'
import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {afterAll, expect, it} from 'vitest'

const dir = mkdtempSync(join(tmpdir(), 'agent-checksum-'))
afterAll(() => rmSync(dir, {recursive: true, force: true}))

it('sums like RFC 1071 at every length and alignment, and refuses any single flipped bit', () => {
  const bin = join(dir, 'checksum')
  execFileSync('cc', ['-O2', '-std=c11', '-Wall', '-Werror', '-o', bin, join(import.meta.dirname, '..', 'fixtures', 'native', 'checksum.c')])
  const out = execFileSync(bin, {encoding: 'utf8'}).trim()
  expect(out).toMatch(/^ok \d+$/)
  expect(Number(out.split(' ')[1])).toBeGreaterThan(16000)
})
