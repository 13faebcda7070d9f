// Fleet PKI: files, modes and certificate fields, fingerprints, bundles. Keys are generated here,
// in a temp dir, at test time.
import {createPrivateKey, X509Certificate} from 'node:crypto'
import {mkdtemp, readFile, rm, stat, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join, relative} from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import 'reflect-metadata'
import * as x509 from '@peculiar/x509'

import {
  commonName,
  fingerprint,
  initCa,
  issue,
  loadCredentials,
  normalizeFingerprint,
  PkiError,
  validateName,
} from '../../src/core/pki/index.js'

const DAY = 86_400_000
let root: string
let n = 0
const freshDir = () => join(root, `d${n++}`)

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pki-test-'))
})
afterAll(async () => {
  await rm(root, {recursive: true, force: true})
})

const mode = async (p: string) => (await stat(p)).mode & 0o777
const cert = async (p: string) => new X509Certificate(await readFile(p))
const peculiar = async (p: string) => new x509.X509Certificate(await readFile(p, 'utf8'))
const umask = process.umask()

describe('initCa', () => {
  it('creates the directory 0700 and ca.crt/ca.key with the right modes', async () => {
    const dir = join(freshDir(), 'nested', 'pki')
    const res = await initCa({dir})
    expect(res.certFile).toBe(join(dir, 'ca.crt'))
    expect(res.keyFile).toBe(join(dir, 'ca.key'))
    expect(await mode(dir)).toBe(0o700)
    expect(await mode(res.keyFile)).toBe(0o600)
    expect(await mode(res.certFile)).toBe(0o644 & ~umask)
    expect(await readFile(res.keyFile, 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----\n/)
  })

  it('writes a self-signed P-256 CA with critical CA:true and keyCertSign+cRLSign', async () => {
    const dir = freshDir()
    const before = Date.now()
    const res = await initCa({dir})
    const c = await cert(res.certFile)
    expect(c.ca).toBe(true)
    expect(c.subject).toBe('CN=agent fleet CA')
    expect(c.issuer).toBe(c.subject)
    expect(c.verify(c.publicKey)).toBe(true)
    expect(c.publicKey.asymmetricKeyType).toBe('ec')
    expect(c.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1')
    expect(c.checkPrivateKey(createPrivateKey(await readFile(res.keyFile)))).toBe(true)
    const to = new Date(c.validTo).getTime()
    expect(Math.abs(to - (before + 3650 * DAY))).toBeLessThan(60_000)
    expect(new Date(c.validFrom).getTime()).toBeLessThanOrEqual(before)
    expect(res.fingerprint).toBe('sha256:' + c.fingerprint256)

    const p = await peculiar(res.certFile)
    const bc = p.getExtension(x509.BasicConstraintsExtension)!
    expect(bc.ca).toBe(true)
    expect(bc.critical).toBe(true)
    const ku = p.getExtension(x509.KeyUsagesExtension)!
    expect(ku.critical).toBe(true)
    expect(ku.usages).toBe(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign)
    expect(p.getExtension(x509.SubjectKeyIdentifierExtension)).not.toBeNull()
  })

  it('honours --name and --days', async () => {
    const dir = freshDir()
    const res = await initCa({dir, name: 'acme, fleet=CA', days: 30})
    const c = await cert(res.certFile)
    expect(commonName(c)).toBe('acme, fleet=CA')
    expect(Math.abs(new Date(c.validTo).getTime() - (Date.now() + 30 * DAY))).toBeLessThan(60_000)
  })

  it('refuses to overwrite an existing CA unless forced', async () => {
    const dir = freshDir()
    const first = await initCa({dir})
    await expect(initCa({dir})).rejects.toThrow(/a CA already exists in .*--force/)
    expect(fingerprint(await readFile(first.certFile, 'utf8'))).toBe(first.fingerprint)
    const second = await initCa({dir, force: true})
    expect(second.fingerprint).not.toBe(first.fingerprint)
    expect(await mode(second.keyFile)).toBe(0o600)
  })

  it('rejects a bad validity', async () => {
    await expect(initCa({dir: freshDir(), days: 0})).rejects.toThrow(PkiError)
    await expect(initCa({dir: freshDir(), days: 1.5})).rejects.toThrow(/--days/)
  })
})

describe('issue', () => {
  let dir: string
  let ca: X509Certificate
  beforeAll(async () => {
    dir = freshDir()
    ca = await cert((await initCa({dir})).certFile)
  })

  it('issues node credentials: files, modes and fields', async () => {
    const before = Date.now()
    const res = await issue({dir, name: 'node1', node: true, ips: ['127.0.0.1', '2001:db8::1']})
    expect(res.certFile).toBe(join(dir, 'node1.crt'))
    expect(res.keyFile).toBe(join(dir, 'node1.key'))
    expect(res.bundleFile).toBe(join(dir, 'node1.pem'))
    expect(await mode(res.keyFile)).toBe(0o600)
    expect(await mode(res.bundleFile)).toBe(0o600)
    expect(await mode(res.certFile)).toBe(0o644 & ~umask)

    const c = await cert(res.certFile)
    expect(c.subject).toBe('CN=node1')
    expect(commonName(c)).toBe('node1')
    expect(c.ca).toBe(false)
    expect(c.subjectAltName).toBe('DNS:node1, IP Address:127.0.0.1, IP Address:2001:DB8:0:0:0:0:0:1')
    // node:crypto's keyUsage is the *extended* key usage list.
    expect(c.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1'])
    expect(c.checkIssued(ca)).toBe(true)
    expect(c.verify(ca.publicKey)).toBe(true)
    expect(c.checkPrivateKey(createPrivateKey(await readFile(res.keyFile)))).toBe(true)
    expect(c.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1')
    expect(Math.abs(new Date(c.validTo).getTime() - (before + 825 * DAY))).toBeLessThan(60_000)
    expect(new Date(c.validFrom).getTime()).toBeLessThanOrEqual(before)

    // 16-byte positive serial, as returned.
    expect(c.serialNumber).toMatch(/^[0-7][0-9A-F]{31}$/)
    expect(c.serialNumber.toLowerCase()).toBe(res.serial)

    const p = await peculiar(res.certFile)
    const ku = p.getExtension(x509.KeyUsagesExtension)!
    expect(ku.critical).toBe(true)
    expect(ku.usages).toBe(x509.KeyUsageFlags.digitalSignature)
    expect(p.getExtension(x509.ExtendedKeyUsageExtension)!.usages).toEqual([x509.ExtendedKeyUsage.serverAuth])
    const ski = p.getExtension(x509.SubjectKeyIdentifierExtension)!
    const aki = p.getExtension(x509.AuthorityKeyIdentifierExtension)!
    const caSki = (await peculiar(join(dir, 'ca.crt'))).getExtension(x509.SubjectKeyIdentifierExtension)!
    expect(ski.keyId).toMatch(/^[0-9a-f]{40}$/)
    expect(aki.keyId).toBe(caSki.keyId)
    expect(res.role).toBe('node')
  })

  it('issues client credentials with clientAuth and a DNS SAN only', async () => {
    const res = await issue({dir, name: 'alice', node: false})
    const c = await cert(res.certFile)
    expect(c.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2'])
    expect(c.subjectAltName).toBe('DNS:alice')
    expect(res.role).toBe('client')
  })

  it('uses a fresh random serial each time', async () => {
    const a = await issue({dir, name: 'serial-a', node: false})
    const b = await issue({dir, name: 'serial-b', node: false})
    expect(a.serial).not.toBe(b.serial)
    expect(a.serial).toHaveLength(32)
  })

  it('prints a fingerprint that matches X509Certificate.fingerprint256 in every input form', async () => {
    const res = await issue({dir, name: 'fp', node: false})
    const pem = await readFile(res.certFile, 'utf8')
    const c = new X509Certificate(pem)
    expect(res.fingerprint).toMatch(/^sha256:([0-9A-F]{2}:){31}[0-9A-F]{2}$/)
    expect(res.fingerprint).toBe(`sha256:${c.fingerprint256}`)
    expect(fingerprint(pem)).toBe(res.fingerprint)
    expect(fingerprint(Buffer.from(pem))).toBe(res.fingerprint)
    expect(fingerprint(c.raw)).toBe(res.fingerprint)
    // The bundle starts with the CA, so its first certificate is the CA's.
    expect(fingerprint(await readFile(res.bundleFile, 'utf8'))).toBe(fingerprint(ca.raw))
    expect(normalizeFingerprint(res.fingerprint.slice(7).toLowerCase().replace(/:/g, ''))).toBe(res.fingerprint)
    expect(() => normalizeFingerprint('sha256:AB')).toThrow(/not a SHA-256 fingerprint/)
  })

  it('refuses to overwrite credentials unless forced', async () => {
    const first = await issue({dir, name: 'bob', node: false})
    await expect(issue({dir, name: 'bob', node: false})).rejects.toThrow(/credentials for "bob" already exist.*--force/)
    const again = await issue({dir, name: 'bob', node: false, force: true})
    expect(again.fingerprint).not.toBe(first.fingerprint)
    expect(fingerprint(await readFile(again.certFile, 'utf8'))).toBe(again.fingerprint)
  })

  it.each(['Alice', '-alice', 'alice_1', 'a.b', '', 'a'.repeat(64), 'ümlaut', 'a b', 'ca'])('rejects the name %j', async (name) => {
    await expect(issue({dir, name, node: false})).rejects.toThrow(/invalid name/)
  })

  it.each(['a', '0', 'node-1', 'a'.repeat(63), '1-2-3'])('accepts the name %j', (name) => {
    expect(() => validateName(name)).not.toThrow()
  })

  it('rejects a bad --ip', async () => {
    await expect(issue({dir, name: 'ipbad', node: true, ips: ['10.0.0.300']})).rejects.toThrow(/invalid IP address for --ip: 10.0.0.300/)
  })

  it('says how to create the CA when there is none', async () => {
    await expect(issue({dir: './pki-missing', name: 'alice', node: false})).rejects.toThrow(
      'no CA in ./pki-missing: run `agent pki init --dir ./pki-missing` first',
    )
  })

  it('refuses a CA whose key does not match its certificate', async () => {
    const d1 = freshDir()
    const d2 = freshDir()
    await initCa({dir: d1})
    await initCa({dir: d2})
    await writeFile(join(d1, 'ca.key'), await readFile(join(d2, 'ca.key')))
    await expect(issue({dir: d1, name: 'x', node: false})).rejects.toThrow(/ca\.key does not match .*ca\.crt/)
  })

  it('cuts validity to the CA expiry, and says so', async () => {
    const d = freshDir()
    await initCa({dir: d, days: 10})
    const caCert = await cert(join(d, 'ca.crt'))
    const res = await issue({dir: d, name: 'short', node: false})
    expect(res.warning).toMatch(/cut to the CA's expiry/)
    expect(new Date((await cert(res.certFile)).validTo).getTime()).toBe(new Date(caCert.validTo).getTime())
  })
})

describe('loadCredentials', () => {
  let dir: string
  let foreign: string
  beforeAll(async () => {
    dir = freshDir()
    foreign = freshDir()
    await initCa({dir})
    await initCa({dir: foreign, name: 'someone else'})
    await issue({dir, name: 'alice', node: false})
    await issue({dir, name: 'node1', node: true})
    await issue({dir: foreign, name: 'mallory', node: false})
  })
  const text = (f: string) => readFile(join(dir, f), 'utf8')

  it('round-trips a bundle: CA, certificate, key', async () => {
    const bundle = await text('alice.pem')
    // The documented order.
    expect(bundle).toBe((await text('ca.crt')) + (await text('alice.crt')) + (await text('alice.key')))
    const creds = await loadCredentials({bundle: join(dir, 'alice.pem')})
    expect(creds).toEqual({ca: await text('ca.crt'), cert: await text('alice.crt'), key: await text('alice.key')})
    expect(commonName(creds.cert)).toBe('alice')
  })

  it('finds the CA by self-signature whatever the order in the bundle', async () => {
    const f = join(dir, 'shuffled.pem')
    await writeFile(f, `# comment\n${await text('alice.key')}\n${await text('alice.crt')}${await text('ca.crt')}`)
    const creds = await loadCredentials({bundle: f})
    expect(creds.ca).toBe(await text('ca.crt'))
    expect(creds.cert).toBe(await text('alice.crt'))
  })

  it('loads three separate files, relative to baseDir', async () => {
    const creds = await loadCredentials({ca: 'ca.crt', cert: 'node1.crt', key: 'node1.key'}, {baseDir: dir})
    expect(creds).toEqual({ca: await text('ca.crt'), cert: await text('node1.crt'), key: await text('node1.key')})
    const rel = relative(process.cwd(), join(dir, 'node1.pem'))
    expect((await loadCredentials({bundle: rel})).cert).toBe(await text('node1.crt'))
  })

  it('names the file when it is missing', async () => {
    await expect(loadCredentials({bundle: join(dir, 'nope.pem')})).rejects.toThrow(`cannot read pki bundle ${join(dir, 'nope.pem')}: no such file`)
  })

  it('names the file and the missing part', async () => {
    const f = join(dir, 'partial.pem')
    await writeFile(f, (await text('ca.crt')) + (await text('alice.crt')))
    await expect(loadCredentials({bundle: f})).rejects.toThrow(`${f} has no private key`)
    await writeFile(f, (await text('ca.crt')) + (await text('alice.key')))
    await expect(loadCredentials({bundle: f})).rejects.toThrow(`${f} has the CA certificate but no node or client certificate`)
    await writeFile(f, (await text('alice.crt')) + (await text('alice.key')))
    await expect(loadCredentials({bundle: f})).rejects.toThrow(`${f} has a certificate for "alice" but no CA certificate`)
    await writeFile(f, await text('alice.key'))
    await expect(loadCredentials({bundle: f})).rejects.toThrow(`${f} holds no certificate`)
  })

  it('rejects a key that does not match its certificate', async () => {
    const f = join(dir, 'mismatch.pem')
    await writeFile(f, (await text('ca.crt')) + (await text('alice.crt')) + (await text('node1.key')))
    await expect(loadCredentials({bundle: f})).rejects.toThrow(`${f}: the private key does not match the certificate for "alice"`)
    await expect(loadCredentials({ca: 'ca.crt', cert: 'alice.crt', key: 'node1.key'}, {baseDir: dir})).rejects.toThrow(
      `${join(dir, 'node1.key')} does not match the certificate in ${join(dir, 'alice.crt')} ("alice")`,
    )
  })

  it('rejects a certificate from another CA', async () => {
    const f = join(dir, 'foreign.pem')
    const m = (x: string) => readFile(join(foreign, x), 'utf8')
    await writeFile(f, (await text('ca.crt')) + (await m('mallory.crt')) + (await m('mallory.key')))
    await expect(loadCredentials({bundle: f})).rejects.toThrow(/the certificate for "mallory" was not issued by the CA given with it \("agent fleet CA"\)/)
  })

  it('rejects a config with neither form', async () => {
    await expect(loadCredentials({ca: 'x'} as never)).rejects.toThrow(/either \{bundle: <file>\} or all of \{ca, cert, key\}/)
  })
})
