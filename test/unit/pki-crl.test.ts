// Revocation: `pki revoke` / `pki crl` write revoked.json and an X.509 v2 CRL that OpenSSL itself
// accepts and enforces, and loadCrl reads it (or refuses it, saying why) the way a node will.
// Keys are generated at test time in a temp dir; handshakes run over loopback.
import {execFile} from 'node:child_process'
import {createPrivateKey, webcrypto, X509Certificate} from 'node:crypto'
import {existsSync, readFileSync} from 'node:fs'
import {mkdir, mkdtemp, readFile, rm, stat, writeFile} from 'node:fs/promises'
import type {AddressInfo} from 'node:net'
import {tmpdir} from 'node:os'
import {join, resolve} from 'node:path'
import * as tls from 'node:tls'
import {afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi} from 'vitest'
import 'reflect-metadata'
import * as x509 from '@peculiar/x509'

import PkiCrl from '../../src/commands/pki/crl.js'
import PkiRevoke from '../../src/commands/pki/revoke.js'
import {
  crlExpired,
  CrlError,
  initCa,
  issue,
  issueCrl,
  loadCredentials,
  loadCrl,
  PkiError,
  readRevocations,
  revoke,
  serialKey,
  tlsClientOptions,
  tlsServerOptions,
  type Credentials,
  type CrlResult,
  type RevokeResult,
} from '../../src/core/pki/index.js'
import {derInteger, parseDerInteger, serialKeyFromDer} from '../../src/core/pki/crl.js'

const ROOT = resolve(import.meta.dirname, '../..')
const BIN = join(ROOT, 'bin/run.js')
const DAY = 86_400_000
const x509Crypto = webcrypto as unknown as NonNullable<Parameters<typeof x509.X509CertificateGenerator.create>[1]>

let root: string
let n = 0
const freshDir = () => join(root, `d${n++}`)

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pki-crl-'))
})
afterAll(async () => {
  await rm(root, {recursive: true, force: true})
})

interface Run {
  code: number
  stdout: string
  stderr: string
}
function run(cmd: string, args: string[], opts: {cwd?: string} = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, {encoding: 'utf8', cwd: opts.cwd, env: {...process.env, NO_COLOR: '1', OCLIF_COLUMNS: '1000'}}, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0
      resolve({code, stdout, stderr})
    })
  })
}
const openssl = (...args: string[]) => run('openssl', args)
const certSerial = async (file: string) => new X509Certificate(await readFile(file)).serialNumber
const mode = async (p: string) => (await stat(p)).mode & 0o777
const umask = process.umask()

/** A fleet: CA, node1, alice, bob, carol. */
async function fleet(): Promise<string> {
  const dir = freshDir()
  await initCa({dir})
  await issue({dir, name: 'node1', node: true, ips: ['127.0.0.1']})
  for (const name of ['alice', 'bob', 'carol']) await issue({dir, name, node: false})
  return dir
}

describe('openssl reads and enforces our CRLs', () => {
  let dir: string
  beforeAll(async () => {
    dir = await fleet()
  })
  const crl = () => join(dir, 'crl.pem')
  const ca = () => join(dir, 'ca.crt')

  it('an empty CRL verifies ("verify OK") and revokes nobody', async () => {
    const res = await issueCrl({dir})
    expect(res.number).toBe(1)
    expect(res.revokedCount).toBe(0)
    // OpenSSL 3.0 prints "verify OK" on stderr.
    const v = await openssl('crl', '-in', crl(), '-CAfile', ca(), '-noout', '-verify')
    expect(v).toMatchObject({code: 0, stdout: ''})
    expect(v.stderr.trim()).toBe('verify OK')
    const ok = await openssl('verify', '-crl_check', '-CAfile', ca(), '-CRLfile', crl(), join(dir, 'alice.crt'))
    expect(ok).toMatchObject({code: 0, stdout: `${join(dir, 'alice.crt')}: OK\n`})

    const text = (await openssl('crl', '-in', crl(), '-noout', '-text')).stdout
    expect(text).toMatch(/Version 2 \(0x1\)/)
    expect(text).toMatch(/Signature Algorithm: ecdsa-with-SHA256/)
    expect(text).toMatch(/Issuer: CN = agent fleet CA/)
    expect(text).toMatch(/X509v3 CRL Number: \n\s+1\n/)
    expect(text).toMatch(/X509v3 Authority Key Identifier: \n\s+([0-9A-F]{2}:){19}[0-9A-F]{2}\n/)
    expect(text).toMatch(/No Revoked Certificates\./)
    // The AKI is the CA's subject key identifier.
    const caText = (await openssl('x509', '-in', ca(), '-noout', '-text')).stdout
    const ski = /X509v3 Subject Key Identifier: \n\s+(\S+)/.exec(caText)![1]
    expect(text).toContain(ski)
  })

  it('refuses a revoked certificate ("certificate revoked") and accepts the others', async () => {
    const res = await revoke({dir, name: 'alice', reason: 'keyCompromise'})
    expect(res.serial).toBe(await certSerial(join(dir, 'alice.crt')))
    expect((await openssl('crl', '-in', crl(), '-CAfile', ca(), '-noout', '-verify')).stderr.trim()).toBe('verify OK')

    const bad = await openssl('verify', '-crl_check', '-CAfile', ca(), '-CRLfile', crl(), join(dir, 'alice.crt'))
    expect(bad.code).toBe(2)
    expect(bad.stdout).toBe('')
    expect(bad.stderr).toBe(
      `CN = alice\nerror 23 at 0 depth lookup: certificate revoked\nerror ${join(dir, 'alice.crt')}: verification failed\n`,
    )
    for (const other of ['bob', 'carol', 'node1']) {
      const ok = await openssl('verify', '-crl_check', '-CAfile', ca(), '-CRLfile', crl(), join(dir, `${other}.crt`))
      expect(ok).toMatchObject({code: 0, stdout: `${join(dir, `${other}.crt`)}: OK\n`})
    }

    const text = (await openssl('crl', '-in', crl(), '-noout', '-text')).stdout
    expect(text).toContain(`Serial Number: ${res.serial}\n`)
    expect(text).toMatch(/X509v3 CRL Reason Code: \n\s+Key Compromise/)
    expect(text).toMatch(/X509v3 CRL Number: \n\s+2\n/)
  })

  it('a revocation with reason unspecified carries no reasonCode (RFC 5280 §5.3.1)', async () => {
    await revoke({dir, name: 'carol'})
    const text = (await openssl('crl', '-in', crl(), '-noout', '-text')).stdout
    const carol = await certSerial(join(dir, 'carol.crt'))
    const entry = text.slice(text.indexOf(`Serial Number: ${carol}`)).split('Serial Number:')[1]
    expect(entry).not.toMatch(/Reason Code/)
    expect((await openssl('verify', '-crl_check', '-CAfile', ca(), '-CRLfile', crl(), join(dir, 'carol.crt'))).stderr).toMatch(
      /certificate revoked/,
    )
  })

  it('openssl reads the DER form too, and loadCrl reads a DER CRL', async () => {
    const der = join(dir, 'crl.der')
    expect((await openssl('crl', '-in', crl(), '-outform', 'DER', '-out', der)).code).toBe(0)
    const list = await loadCrl(der, await readFile(ca(), 'utf8'))
    expect(list.revoked.has(await certSerial(join(dir, 'alice.crt')))).toBe(true)
  })

  it('loadCrl reads a CRL made by `openssl ca -gencrl`, serials and all', async () => {
    const o = join(dir, 'openssl-ca')
    await mkdir(o)
    const bob = await certSerial(join(dir, 'bob.crt'))
    await writeFile(join(o, 'index.txt'), `R\t301231235959Z\t241201000000Z,superseded\t${bob}\tunknown\t/CN=bob\n`)
    await writeFile(join(o, 'crlnumber'), '10\n')
    await writeFile(
      join(o, 'ca.cnf'),
      [
        '[ca]',
        'default_ca = fleet',
        '[fleet]',
        `database = ${o}/index.txt`,
        `crlnumber = ${o}/crlnumber`,
        `certificate = ${ca()}`,
        `private_key = ${join(dir, 'ca.key')}`,
        'default_md = sha256',
        'default_crl_days = 7',
        'crl_extensions = crl_ext',
        '[crl_ext]',
        'authorityKeyIdentifier = keyid:always',
        '',
      ].join('\n'),
    )
    const gen = await openssl('ca', '-gencrl', '-config', join(o, 'ca.cnf'), '-out', join(o, 'crl.pem'))
    expect(gen.code, gen.stderr).toBe(0)
    const list = await loadCrl(join(o, 'crl.pem'), await readFile(ca(), 'utf8'))
    expect([...list.revoked]).toEqual([bob])
    expect(list.number).toBe(16n) // crlnumber is hex
    expect(list.nextUpdate!.getTime() - list.thisUpdate.getTime()).toBe(7 * DAY)
  })
})

describe('pki revoke and pki crl', () => {
  it('revokes by name: record, CRL, modes', async () => {
    const dir = await fleet()
    const before = Math.floor(Date.now() / 1000) * 1000
    const res = await revoke({dir, name: 'bob', reason: 'superseded'})
    const serial = await certSerial(join(dir, 'bob.crt'))
    expect(res).toMatchObject({serial, name: 'bob', reason: 'superseded', alreadyRevoked: false, known: true, warnings: []})
    expect(Date.parse(res.date)).toBeGreaterThanOrEqual(before)
    expect(res.crl).toMatchObject({crlFile: join(dir, 'crl.pem'), revokedFile: join(dir, 'revoked.json'), number: 1, revokedCount: 1})
    expect(await mode(join(dir, 'crl.pem'))).toBe(0o644 & ~umask)
    expect(await mode(join(dir, 'revoked.json'))).toBe(0o644 & ~umask)

    const json = JSON.parse(await readFile(join(dir, 'revoked.json'), 'utf8'))
    const caFp = 'sha256:' + new X509Certificate(await readFile(join(dir, 'ca.crt'))).fingerprint256
    expect(json).toEqual({format: 'agent-revocations/1', ca: caFp, crlNumber: 1, revoked: [{serial, name: 'bob', date: res.date, reason: 'superseded'}]})
    expect(Object.keys(json)).toEqual(['format', 'ca', 'crlNumber', 'revoked'])
    expect(await readRevocations(dir)).toEqual(json)

    const list = await loadCrl(join(dir, 'crl.pem'), await readFile(join(dir, 'ca.crt'), 'utf8'))
    expect([...list.revoked]).toEqual([serial])
    expect(list.number).toBe(1n)
    // thisUpdate now, nextUpdate 30 days on (whole seconds).
    expect(list.thisUpdate.toISOString()).toBe(res.crl.thisUpdate)
    expect(list.nextUpdate!.toISOString()).toBe(res.crl.nextUpdate)
    expect(list.nextUpdate!.getTime() - list.thisUpdate.getTime()).toBe(30 * DAY)
    expect(Math.abs(list.thisUpdate.getTime() - Date.now())).toBeLessThan(5000)
  })

  it('revokes by serial, in any usual spelling, and finds the name', async () => {
    const dir = await fleet()
    const serial = await certSerial(join(dir, 'alice.crt'))
    const colons = serial.toLowerCase().match(/../g)!.join(':')
    const res = await revoke({dir, serial: colons, reason: 'cessationOfOperation'})
    expect(res).toMatchObject({serial, name: 'alice', known: true, reason: 'cessationOfOperation'})
    const list = await loadCrl(join(dir, 'crl.pem'), await readFile(join(dir, 'ca.crt'), 'utf8'))
    expect(list.revoked.has(serial)).toBe(true)
    // `openssl x509 -serial` output pasted as is.
    const printed = (await openssl('x509', '-in', join(dir, 'bob.crt'), '-noout', '-serial')).stdout.trim()
    expect(printed).toMatch(/^serial=[0-9A-F]+$/)
    expect((await revoke({dir, serial: printed})).name).toBe('bob')
  })

  it('revokes a serial no file has (a certificate replaced with --force), with a warning', async () => {
    const dir = await fleet()
    const old = await certSerial(join(dir, 'alice.crt'))
    await issue({dir, name: 'alice', node: false, force: true})
    const res = await revoke({dir, serial: old, reason: 'superseded'})
    expect(res.known).toBe(false)
    expect(res.name).toBeUndefined()
    expect(res.warnings).toEqual([expect.stringMatching(new RegExp(`no certificate in .* has serial ${old}: revoked anyway`))])
    expect(JSON.parse(await readFile(join(dir, 'revoked.json'), 'utf8')).revoked[0]).not.toHaveProperty('name')
    // The new alice is still good.
    const ok = await openssl('verify', '-crl_check', '-CAfile', join(dir, 'ca.crt'), '-CRLfile', join(dir, 'crl.pem'), join(dir, 'alice.crt'))
    expect(ok.code).toBe(0)
  })

  it('re-revoking is idempotent: same record, the CRL is re-issued', async () => {
    const dir = await fleet()
    const first = await revoke({dir, name: 'alice', reason: 'keyCompromise'})
    await new Promise((r) => setTimeout(r, 1100)) // so a new date would show
    const again = await revoke({dir, name: 'alice', reason: 'superseded'})
    expect(again).toMatchObject({serial: first.serial, name: 'alice', alreadyRevoked: true, reason: 'keyCompromise', date: first.date})
    const bySerial = await revoke({dir, serial: first.serial})
    expect(bySerial).toMatchObject({alreadyRevoked: true, reason: 'keyCompromise', date: first.date})
    const state = await readRevocations(dir)
    expect(state.revoked).toEqual([{serial: first.serial, name: 'alice', date: first.date, reason: 'keyCompromise'}])
    expect([first.crl.number, again.crl.number, bySerial.crl.number]).toEqual([1, 2, 3])
    const list = await loadCrl(join(dir, 'crl.pem'), await readFile(join(dir, 'ca.crt'), 'utf8'))
    expect(list.revoked.size).toBe(1)
  })

  it('CRL numbers go up with every issue, and revocations carry over', async () => {
    const dir = await fleet()
    const caPem = await readFile(join(dir, 'ca.crt'), 'utf8')
    const numbers: bigint[] = []
    const a = await issueCrl({dir})
    numbers.push((await loadCrl(a.crlFile, caPem)).number!)
    await revoke({dir, name: 'bob'})
    numbers.push((await loadCrl(a.crlFile, caPem)).number!)
    const c = await issueCrl({dir, days: 7})
    const list = await loadCrl(c.crlFile, caPem)
    numbers.push(list.number!)
    expect(numbers).toEqual([1n, 2n, 3n])
    expect(list.revoked.has(await certSerial(join(dir, 'bob.crt')))).toBe(true)
    expect(list.nextUpdate!.getTime() - list.thisUpdate.getTime()).toBe(7 * DAY)

    // A revoked.json restored from an old backup does not make the number go back.
    const state = await readRevocations(dir)
    await writeFile(join(dir, 'revoked.json'), JSON.stringify({...state, crlNumber: 1}))
    expect((await issueCrl({dir})).number).toBe(4)
  })

  it('an empty CRL is written also when nothing is revoked, and revoked.json keeps its number', async () => {
    const dir = freshDir()
    await initCa({dir})
    const res = await issueCrl({dir})
    expect(res).toMatchObject({number: 1, revokedCount: 0})
    expect(await readRevocations(dir)).toEqual({format: 'agent-revocations/1', ca: expect.stringMatching(/^sha256:([0-9A-F]{2}:){31}[0-9A-F]{2}$/), crlNumber: 1, revoked: []})
    const list = await loadCrl(res.crlFile, await readFile(join(dir, 'ca.crt'), 'utf8'))
    expect(list.revoked.size).toBe(0)
  })

  it('concurrent revokes in one directory lose nothing', async () => {
    const dir = await fleet()
    const results = await Promise.all(['alice', 'bob', 'carol', 'node1'].map((name) => revoke({dir, name})))
    expect((await readRevocations(dir)).revoked.map((r) => r.name).sort()).toEqual(['alice', 'bob', 'carol', 'node1'])
    expect(results.map((r) => r.crl.number).sort()).toEqual([1, 2, 3, 4])
    // Clients do not check the CRL (yet): revoking a node's certificate says so.
    expect(results[3].warnings).toEqual([expect.stringMatching(/^"node1" is a node certificate: .*clients do not check it yet/)])
    expect(results[0].warnings).toEqual([])
    const list = await loadCrl(join(dir, 'crl.pem'), await readFile(join(dir, 'ca.crt'), 'utf8'))
    expect(list.revoked.size).toBe(4)
    expect(existsSync(join(dir, '.revocation.lock'))).toBe(false)
  })

  it('cuts nextUpdate to the CA expiry, and says so', async () => {
    const dir = freshDir()
    await initCa({dir, days: 10})
    const res = await issueCrl({dir, days: 30})
    expect(res.warning).toMatch(/next update cut to the CA's expiry/)
    expect(res.nextUpdate).toBe(new Date(new X509Certificate(await readFile(join(dir, 'ca.crt'))).validTo).toISOString())
  })

  describe('refusals', () => {
    let dir: string
    beforeAll(async () => {
      dir = await fleet()
    })

    it('a missing name, naming the file', async () => {
      await expect(revoke({dir, name: 'dave'})).rejects.toThrow(
        `no certificate named "dave": ${join(dir, 'dave.crt')} does not exist (to revoke a certificate whose file is gone, use --serial)`,
      )
    })

    it.each(['xyz', '', '12 3g', '0x', '--01'])('a malformed serial %j', async (serial) => {
      await expect(revoke({dir, serial})).rejects.toThrow(/not a certificate serial number/)
    })

    it('the CA itself, by name or serial', async () => {
      await expect(revoke({dir, name: 'ca'})).rejects.toThrow(/the CA cannot revoke its own certificate.*pki init --force/)
      const caSerial = await certSerial(join(dir, 'ca.crt'))
      await expect(revoke({dir, serial: caSerial.toLowerCase()})).rejects.toThrow(
        `serial ${caSerial} is the CA's own certificate (${join(dir, 'ca.crt')}): the CA cannot revoke itself`,
      )
    })

    it('a certificate file another CA issued', async () => {
      const other = freshDir()
      await initCa({dir: other})
      await issue({dir: other, name: 'mallory', node: false})
      await writeFile(join(dir, 'mallory.crt'), await readFile(join(other, 'mallory.crt')))
      await expect(revoke({dir, name: 'mallory'})).rejects.toThrow(`${join(dir, 'mallory.crt')} was not issued by the CA in ${join(dir, 'ca.crt')}`)
      // ...and by serial, such a file does not lend its name.
      const res = await revoke({dir, serial: await certSerial(join(dir, 'mallory.crt'))})
      expect(res.known).toBe(false)
    })

    it('bad reasons, with why for the RFC ones left out', async () => {
      await expect(revoke({dir, name: 'bob', reason: 'certificateHold'})).rejects.toThrow(/certificateHold is not supported: a hold/)
      await expect(revoke({dir, name: 'bob', reason: 'removeFromCRL'})).rejects.toThrow(/only has a meaning in delta CRLs/)
      await expect(revoke({dir, name: 'bob', reason: 'stolen'})).rejects.toThrow(/invalid reason "stolen": use one of unspecified, keyCompromise/)
    })

    it('neither or both of name and serial; bad days; no CA', async () => {
      await expect(revoke({dir})).rejects.toThrow(/exactly one/)
      await expect(revoke({dir, name: 'bob', serial: '01'})).rejects.toThrow(/exactly one/)
      await expect(issueCrl({dir, days: 0})).rejects.toThrow(/--days must be a whole number from 1 to 3650/)
      await expect(issueCrl({dir: join(root, 'nowhere')})).rejects.toThrow(/no CA in .*nowhere: run `agent pki init/)
    })

    it('the record of a replaced CA (pki init --force) is refused, not mixed in', async () => {
      const d = await fleet()
      await revoke({dir: d, name: 'bob'})
      await initCa({dir: d, force: true})
      await issue({dir: d, name: 'dave', node: false})
      await expect(issueCrl({dir: d})).rejects.toThrow(
        new RegExp(`^${join(d, 'revoked.json')} is the record of another CA \\(sha256:.*the CA was replaced.*move revoked.json and crl.pem out`),
      )
      await expect(revoke({dir: d, name: 'dave'})).rejects.toThrow(/is the record of another CA/)
      await rm(join(d, 'revoked.json'))
      expect((await revoke({dir: d, name: 'dave'})).crl.revokedCount).toBe(1)
    })

    it('a damaged revoked.json is an error and is left alone', async () => {
      const d = await fleet()
      await writeFile(join(d, 'revoked.json'), '{"format": "agent-revocations/1", "crlNumber": 2, "revoked": [')
      await expect(revoke({dir: d, name: 'bob'})).rejects.toThrow(`${join(d, 'revoked.json')} is damaged (not JSON`)
      await expect(issueCrl({dir: d})).rejects.toThrow(/is damaged/)
      expect(await readFile(join(d, 'revoked.json'), 'utf8')).toMatch(/\[$/)
      expect(existsSync(join(d, 'crl.pem'))).toBe(false)
    })
  })
})

describe('loadCrl', () => {
  let dir: string
  let caPem: string
  let crlFile: string
  let aliceSerial: string
  let otherSameName: string
  let otherNamed: string
  beforeAll(async () => {
    dir = await fleet()
    caPem = await readFile(join(dir, 'ca.crt'), 'utf8')
    aliceSerial = (await revoke({dir, name: 'alice', reason: 'keyCompromise'})).serial
    crlFile = join(dir, 'crl.pem')
    otherSameName = freshDir() // the same default name "agent fleet CA": only the key differs
    await initCa({dir: otherSameName})
    await issueCrl({dir: otherSameName})
    otherNamed = freshDir()
    await initCa({dir: otherNamed, name: 'someone else'})
    await issueCrl({dir: otherNamed})
  })

  it('returns what the node enforces', async () => {
    const list = await loadCrl(crlFile, caPem)
    expect([...list.revoked]).toEqual([aliceSerial])
    expect(list.issuer).toBe('CN=agent fleet CA')
    expect(list.file).toBe(crlFile)
    expect(list.number).toBe(1n)
    expect(list.caFingerprint).toBe('sha256:' + new X509Certificate(caPem).fingerprint256)
    expect(crlExpired(list)).toBe(false)
  })

  it('takes the CA as the node has it: from loadCredentials, or several CAs', async () => {
    const creds = await loadCredentials({bundle: join(dir, 'node1.pem')})
    expect((await loadCrl(crlFile, creds.ca)).revoked.has(aliceSerial)).toBe(true)
    const otherCa = await readFile(join(otherNamed, 'ca.crt'), 'utf8')
    expect((await loadCrl(crlFile, [otherCa, caPem])).revoked.has(aliceSerial)).toBe(true)
    expect((await loadCrl(crlFile, otherCa + caPem)).caFingerprint).toBe('sha256:' + new X509Certificate(caPem).fingerprint256)
  })

  it('refuses a CRL from another CA with the same name: the signature does not verify', async () => {
    const err = await loadCrl(join(otherSameName, 'crl.pem'), caPem).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(CrlError)
    expect(err).toBeInstanceOf(PkiError)
    expect((err as CrlError).file).toBe(join(otherSameName, 'crl.pem'))
    expect((err as Error).message).toMatch(
      new RegExp(
        `^${join(otherSameName, 'crl.pem')}: the CRL's signature does not verify against the CA "agent fleet CA" \\(sha256:[0-9A-F:]+\\): ` +
          'it was signed by another CA with the same name \\(authority key id [0-9A-F:]+, this CA\'s is [0-9A-F:]+\\)$',
      ),
    )
  })

  it('refuses a CRL issued by another CA, naming it', async () => {
    await expect(loadCrl(join(otherNamed, 'crl.pem'), caPem)).rejects.toThrow(
      `${join(otherNamed, 'crl.pem')}: the CRL was issued by "CN=someone else", not by the CA this node trusts ("agent fleet CA" (sha256:`,
    )
  })

  it('refuses a CRL altered after signing', async () => {
    // Rewrite nextUpdate's year (a string in the DER) without re-signing.
    const der = Buffer.from((await readFile(crlFile, 'utf8')).replace(/-----[A-Z0-9 ]+-----|\s/g, ''), 'base64')
    const next = (await loadCrl(crlFile, caPem)).nextUpdate!
    const stamp = Buffer.from(next.toISOString().slice(2, 4) + next.toISOString().slice(5, 7), 'latin1') // YYMM of UTCTime
    const at = der.lastIndexOf(stamp)
    expect(at).toBeGreaterThan(0)
    der[at + 1] = der[at + 1] === 0x39 ? 0x38 : der[at + 1] + 1
    const f = join(dir, 'tampered.der')
    await writeFile(f, der)
    await expect(loadCrl(f, caPem)).rejects.toThrow(/the CRL's signature does not verify against the CA "agent fleet CA".*altered after signing/)
  })

  it('says what is wrong with a file that is not a CRL', async () => {
    const f = (name: string) => join(dir, name)
    await writeFile(f('garbage'), 'hello, this is not a CRL\n')
    await expect(loadCrl(f('garbage'), caPem)).rejects.toThrow(
      `${f('garbage')} is not a CRL: it is neither PEM (no "-----BEGIN X509 CRL-----" line) nor DER (it does not start with an ASN.1 SEQUENCE)`,
    )
    await expect(loadCrl(join(dir, 'alice.crt'), caPem)).rejects.toThrow(
      `${join(dir, 'alice.crt')} is not a CRL: it holds PEM "CERTIFICATE" but no "X509 CRL" block`,
    )
    await writeFile(f('empty'), '')
    await expect(loadCrl(f('empty'), caPem)).rejects.toThrow(`${f('empty')} is empty`)
    await writeFile(f('der-garbage'), Buffer.from([0x30, 0x82, 0x01, 0x00, 0x02, 0x01]))
    await expect(loadCrl(f('der-garbage'), caPem)).rejects.toThrow(`${f('der-garbage')} is not a valid CRL: the DER data does not decode as an X.509 CRL`)
    // A non-standard label, as @peculiar/x509 writes it.
    await writeFile(f('crl-label'), (await readFile(crlFile, 'utf8')).replace(/X509 CRL/g, 'CRL'))
    await expect(loadCrl(f('crl-label'), caPem)).rejects.toThrow(/"BEGIN CRL" is not the standard label/)
  })

  it('says a truncated PEM is truncated', async () => {
    const pem = await readFile(crlFile, 'utf8')
    await writeFile(join(dir, 'half.pem'), pem.slice(0, Math.floor(pem.length / 2)))
    await expect(loadCrl(join(dir, 'half.pem'), caPem)).rejects.toThrow(
      `${join(dir, 'half.pem')} is not a valid CRL: its "BEGIN X509 CRL" PEM block has no matching END line (truncated file?)`,
    )
    // Lines lost in the middle: the END line is there, the content is not.
    const lines = pem.split('\n')
    await writeFile(join(dir, 'holed.pem'), [lines[0], lines[1], ...lines.slice(-3)].join('\n'))
    await expect(loadCrl(join(dir, 'holed.pem'), caPem)).rejects.toThrow(
      new RegExp(`^${join(dir, 'holed.pem')} is not a valid CRL: the (X509 CRL PEM block does not decode as an X.509 CRL|body of its X509 CRL PEM block is not valid base64)`),
    )
  })

  it('names an unreadable file', async () => {
    await expect(loadCrl(join(dir, 'nope.pem'), caPem)).rejects.toThrow(`cannot read CRL ${join(dir, 'nope.pem')}: no such file`)
    await expect(loadCrl(dir, caPem)).rejects.toThrow(`cannot read CRL ${dir}: it is a directory`)
  })

  it('refuses CRLs it cannot fully understand: delta, unknown critical extension', async () => {
    const der = createPrivateKey(await readFile(join(dir, 'ca.key'), 'utf8')).export({type: 'pkcs8', format: 'der'})
    const signingKey = await webcrypto.subtle.importKey('pkcs8', der, {name: 'ECDSA', namedCurve: 'P-256'}, false, ['sign'])
    const issuer = new x509.X509Certificate(caPem).subjectName
    const sign = async (file: string, extensions: x509.Extension[]) => {
      const crl = await x509.X509CrlGenerator.create(
        {issuer, signingKey, signingAlgorithm: {name: 'ECDSA', hash: 'SHA-256'}, nextUpdate: new Date(Date.now() + DAY), extensions},
        x509Crypto,
      )
      await writeFile(join(dir, file), Buffer.from(crl.rawData))
      return join(dir, file)
    }
    const int1 = new Uint8Array([0x02, 0x01, 0x01])
    // Signed by the right CA, so only the extensions can be what is refused.
    expect((await loadCrl(await sign('plain.der', [new x509.Extension('2.5.29.20', false, int1)]), caPem)).number).toBe(1n)
    await expect(loadCrl(await sign('delta.der', [new x509.Extension('2.5.29.27', true, int1)]), caPem)).rejects.toThrow(/is a delta CRL, which is not supported/)
    await expect(loadCrl(await sign('crit.der', [new x509.Extension('1.2.3.4', true, int1)]), caPem)).rejects.toThrow(
      /has a critical extension 1\.2\.3\.4 that is not understood/,
    )
    expect((await loadCrl(await sign('noncrit.der', [new x509.Extension('1.2.3.4', false, int1)]), caPem)).number).toBeUndefined()
  })

  it('crlExpired: past nextUpdate, not before', async () => {
    const list = await loadCrl(crlFile, caPem)
    expect(crlExpired(list, new Date(list.nextUpdate!.getTime() - 1000))).toBe(false)
    expect(crlExpired(list, list.nextUpdate!)).toBe(false)
    expect(crlExpired(list, new Date(list.nextUpdate!.getTime() + 1000))).toBe(true)
    const d = freshDir()
    await initCa({dir: d})
    const one = await loadCrl((await issueCrl({dir: d, days: 1})).crlFile, await readFile(join(d, 'ca.crt'), 'utf8'))
    expect(crlExpired(one)).toBe(false)
    expect(crlExpired(one, new Date(Date.now() + 2 * DAY))).toBe(true)
    const {nextUpdate: _, ...noNext} = one
    expect(crlExpired(noNext, new Date(Date.now() + 3650 * DAY))).toBe(false)
  })
})

describe('serialKey', () => {
  it.each([
    ['0a1b2c', '0A1B2C'],
    ['0A:1B:2C', '0A1B2C'],
    ['0x0a1b2c', '0A1B2C'],
    ['a1b2c', '0A1B2C'],
    ['serial=0A1B2C', '0A1B2C'],
    ['00000A1B2C', '0A1B2C'],
    [' 0a 1b 2c\n', '0A1B2C'],
    ['00ff01', 'FF01'],
    ['0', '00'],
    ['00', '00'],
    ['-01', '-01'],
    ['-0', '00'],
  ])('%j -> %j', (input, out) => {
    expect(serialKey(input)).toBe(out)
  })

  it.each(['', 'xyz', '0x', '1g', '--1', '+1'])('refuses %j', (input) => {
    expect(() => serialKey(input)).toThrow(/not a certificate serial number/)
  })
})

describe('DER integers', () => {
  it.each([
    [[0xfe, 0xfb], '-0105'], // what `openssl x509 -serial` and node:crypto print for serial -0x105
    [[0x00, 0xff, 0x01], 'FF01'],
    [[0x0a, 0x1b], '0A1B'],
    [[0x00], '00'],
  ])('serialKeyFromDer(%j) = %j', (bytes, key) => {
    expect(serialKeyFromDer(Uint8Array.from(bytes))).toBe(key)
  })

  it('cRLNumber values round-trip', () => {
    for (const v of [0n, 1n, 127n, 128n, 255n, 256n, 2n ** 64n, 2n ** 159n - 1n]) expect(parseDerInteger(derInteger(v))).toBe(v)
    expect([...derInteger(128n)]).toEqual([0x02, 0x02, 0x00, 0x80])
    expect(() => parseDerInteger(Uint8Array.from([0x04, 0x01, 0x01]))).toThrow(/not an INTEGER/)
  })
})

describe('serialKey against a real TLS handshake', () => {
  let dir: string
  let nodeCreds: Credentials
  let caKey: webcrypto.CryptoKey
  let caPeculiar: x509.X509Certificate

  beforeAll(async () => {
    dir = await fleet()
    nodeCreds = await loadCredentials({bundle: join(dir, 'node1.pem')})
    const der = createPrivateKey(await readFile(join(dir, 'ca.key'), 'utf8')).export({type: 'pkcs8', format: 'der'})
    caKey = await webcrypto.subtle.importKey('pkcs8', der, {name: 'ECDSA', namedCurve: 'P-256'}, false, ['sign'])
    caPeculiar = new x509.X509Certificate(await readFile(join(dir, 'ca.crt'), 'utf8'))
  })

  /** A client credential like issue() makes, but with a chosen serial, written as <name>.crt. */
  async function clientWithSerial(name: string, serialHex: string): Promise<Credentials> {
    const alg = {name: 'ECDSA', namedCurve: 'P-256'}
    const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair
    const cert = await x509.X509CertificateGenerator.create(
      {
        subject: [{CN: [name]}],
        issuer: caPeculiar.subjectName,
        publicKey: keys.publicKey,
        signingKey: caKey,
        serialNumber: serialHex,
        notBefore: new Date(Date.now() - 3_600_000),
        notAfter: new Date(Date.now() + DAY),
        signingAlgorithm: {name: 'ECDSA', hash: 'SHA-256'},
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
          new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
          new x509.SubjectAlternativeNameExtension([{type: 'dns', value: name}]),
        ],
      },
      x509Crypto,
    )
    const certPem = cert.toString('pem') + '\n'
    const keyPem = createPrivateKey({key: Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)), format: 'der', type: 'pkcs8'})
      .export({type: 'pkcs8', format: 'pem'}) as string
    await writeFile(join(dir, `${name}.crt`), certPem)
    return {ca: nodeCreds.ca, cert: certPem, key: keyPem}
  }

  /** The serial number node:tls reports for the client, on the node's side of a handshake. */
  async function peerSerial(client: Credentials): Promise<{legacy: string; x509: string}> {
    let got!: {legacy: string; x509: string}
    const srv = tls.createServer(tlsServerOptions(nodeCreds), (socket) => {
      got = {legacy: socket.getPeerCertificate().serialNumber, x509: socket.getPeerX509Certificate()!.serialNumber}
      socket.on('error', () => {})
      socket.end('ok')
    })
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
    try {
      await new Promise<void>((resolve, reject) => {
        const sock = tls.connect({host: '127.0.0.1', port: (srv.address() as AddressInfo).port, ...tlsClientOptions(client, 'node1')})
        sock.on('error', reject)
        sock.on('data', () => {})
        sock.on('close', () => resolve())
      })
    } finally {
      await new Promise((r) => srv.close(r))
    }
    return got
  }

  it('node:tls reports upper-case hex of whole bytes, which serialKey leaves as is and the CRL matches', async () => {
    const cases: Array<[string, string, string]> = [
      // [name, serial as issued (hex), what node:tls reports]
      ['lead0', '0a1b2c3d4e5f60718293a4b5c6d7e8f9', '0A1B2C3D4E5F60718293A4B5C6D7E8F9'], // leading zero nibble kept
      ['padded', '00ff0102', 'FF0102'], // DER's 0x00 sign byte dropped
      ['tiny', '01', '01'],
    ]
    const creds: Credentials[] = []
    for (const [name, serial] of cases) creds.push(await clientWithSerial(name, serial))
    creds.push(await loadCredentials({bundle: join(dir, 'alice.pem')}))
    const aliceTls = (await peerSerial(creds[3])).legacy
    cases.push(['alice', aliceTls.toLowerCase(), aliceTls])

    for (const [i, [name, , expected]] of cases.entries()) {
      const seen = await peerSerial(creds[i])
      expect(seen.legacy, name).toBe(expected)
      expect(seen.x509, name).toBe(expected)
      expect(serialKey(seen.legacy), name).toBe(seen.legacy)
    }
    // issue()'s random serials: 16 bytes, so always 32 digits, a leading 0 included when small.
    expect(aliceTls).toMatch(/^[0-7][0-9A-F]{31}$/)

    // Revoke each by name (the CRL entry is written from the certificate's serial) and compare
    // what the node would look up with what the CRL holds.
    for (const [name] of cases) await revoke({dir, name})
    const list = await loadCrl(join(dir, 'crl.pem'), nodeCreds.ca)
    for (const [i, [name]] of cases.entries()) {
      expect(list.revoked.has(serialKey((await peerSerial(creds[i])).legacy)), name).toBe(true)
    }
    expect(list.revoked.has(serialKey((await peerSerial(await loadCredentials({bundle: join(dir, 'bob.pem')}))).legacy))).toBe(false)
    // OpenSSL agrees on which are revoked.
    const v = await openssl('verify', '-crl_check', '-CAfile', join(dir, 'ca.crt'), '-CRLfile', join(dir, 'crl.pem'), join(dir, 'padded.crt'))
    expect(v.stderr).toMatch(/certificate revoked/)
  })
})

describe('the oclif commands', () => {
  // In-process, --json prints the result on stdout: keep the test output readable.
  beforeEach(() => {
    vi.spyOn(console, 'log').mockImplementation(() => {})
  })
  afterEach(() => {
    vi.restoreAllMocks()
  })

  it('pki crl and pki revoke --json return the results', async () => {
    const dir = await fleet()
    const crl = (await PkiCrl.run(['--dir', dir, '--days', '10', '--json'], ROOT)) as CrlResult
    expect(crl).toMatchObject({number: 1, revokedCount: 0, crlFile: join(dir, 'crl.pem')})
    const res = (await PkiRevoke.run(['alice', '--dir', dir, '--reason', 'keyCompromise', '--json'], ROOT)) as RevokeResult
    expect(res).toMatchObject({name: 'alice', reason: 'keyCompromise', alreadyRevoked: false, crl: {number: 2, revokedCount: 1}})
    const bySerial = (await PkiRevoke.run(['--serial', res.serial.toLowerCase(), '--dir', dir, '--json'], ROOT)) as RevokeResult
    expect(bySerial).toMatchObject({name: 'alice', alreadyRevoked: true, reason: 'keyCompromise'})
  })

  it('usage and PKI errors', async () => {
    const dir = await fleet()
    await expect(PkiRevoke.run(['--dir', dir], ROOT)).rejects.toThrow(/give the name of the credential to revoke, or --serial \(exactly one\)/)
    await expect(PkiRevoke.run(['alice', '--serial', '01', '--dir', dir], ROOT)).rejects.toThrow(/exactly one/)
    await expect(PkiRevoke.run(['dave', '--dir', dir], ROOT)).rejects.toThrow(/dave\.crt does not exist/)
    await expect(PkiRevoke.run(['alice', '--reason', 'certificateHold', '--dir', dir], ROOT)).rejects.toThrow(/certificateHold is not supported/)
  })

  // Through the real binary, once `npm run build` has produced it (and the manifest that lists the commands).
  const built = (() => {
    try {
      const manifest = JSON.parse(readFileSync(join(ROOT, 'oclif.manifest.json'), 'utf8')) as {commands?: Record<string, unknown>}
      return existsSync(join(ROOT, 'dist/commands/pki/revoke.js')) && 'pki:revoke' in (manifest.commands ?? {})
    } catch {
      return false
    }
  })()
  describe.skipIf(!built)('bin/run.js', () => {
    const agent = (...args: string[]) => run(process.execPath, [BIN, ...args])

    it('pki crl, pki revoke: output, exit codes, files openssl accepts', async () => {
      const dir = freshDir()
      expect((await agent('pki', 'init', '--dir', dir)).code).toBe(0)
      expect((await agent('pki', 'issue', 'alice', '--dir', dir)).code).toBe(0)
      expect((await agent('pki', 'issue', 'bob', '--dir', dir)).code).toBe(0)

      const crl = await agent('pki', 'crl', '--dir', dir)
      expect(crl.code, crl.stderr).toBe(0)
      expect(crl.stdout).toMatch(/^Issued CRL number 1 \(0 revoked, next update \d{4}-\d\d-\d\dT[\d:.]+Z\)\n/)
      expect(crl.stdout).toContain(`  CRL     ${join(dir, 'crl.pem')}`)

      const rev = await agent('pki', 'revoke', 'alice', '--dir', dir, '--reason', 'keyCompromise')
      expect(rev.code, rev.stderr).toBe(0)
      const serial = await certSerial(join(dir, 'alice.crt'))
      expect(rev.stdout).toMatch(new RegExp(`^Revoked "alice" \\(serial ${serial}\\), reason keyCompromise\\n`))
      expect(rev.stdout).toMatch(/number 2, 1 revoked, next update/)

      const again = await agent('pki', 'revoke', '--serial', serial.toLowerCase(), '--dir', dir)
      expect(again.code).toBe(0)
      expect(again.stdout).toMatch(new RegExp(`^"alice" \\(serial ${serial}\\) was already revoked on .* \\(reason keyCompromise\\): nothing changed`))

      const json = await agent('pki', 'crl', '--dir', dir, '--days', '7', '--json')
      expect(JSON.parse(json.stdout)).toMatchObject({number: 4, revokedCount: 1})

      expect((await openssl('crl', '-in', join(dir, 'crl.pem'), '-CAfile', join(dir, 'ca.crt'), '-noout', '-verify')).stderr.trim()).toBe('verify OK')
      const v = (f: string) => openssl('verify', '-crl_check', '-CAfile', join(dir, 'ca.crt'), '-CRLfile', join(dir, 'crl.pem'), join(dir, f))
      expect((await v('alice.crt')).stderr).toMatch(/error 23 at 0 depth lookup: certificate revoked/)
      expect((await v('bob.crt')).code).toBe(0)

      const missing = await agent('pki', 'revoke', 'carol', '--dir', dir)
      expect(missing.code).toBe(1)
      expect(missing.stderr).toContain('carol.crt does not exist')
      const usage = await agent('pki', 'revoke', '--dir', dir)
      expect(usage.code).toBe(2)
      const badSerial = await agent('pki', 'revoke', '--serial', 'nothex', '--dir', dir)
      expect(badSerial.code).toBe(1)
      expect(badSerial.stderr).toMatch(/not a certificate serial number: "nothex"/)
    })
  })
})
