// Fleet CA creation and leaf issuance. @peculiar/x509 builds the certificates (node:crypto cannot
// create them); node:crypto reads and checks them, as node:tls will.
import {createPrivateKey, webcrypto, X509Certificate, type KeyObject} from 'node:crypto'
import {isIP} from 'node:net'
import {join} from 'node:path'
import {readFile} from 'node:fs/promises'
// tsyringe, under @peculiar/x509, needs the Reflect metadata polyfill loaded first.
import 'reflect-metadata'
import * as x509 from '@peculiar/x509'

import {ensureDir, exists, PUBLIC_MODE, SECRET_MODE, writeFileAtomic} from './files.js'
import {fingerprint, PkiError} from './pem.js'

// Passed explicitly to every @peculiar/x509 call rather than set globally, so we do not change
// the library's provider for anyone else in the process.
export const x509Crypto = webcrypto as unknown as NonNullable<Parameters<typeof x509.X509CertificateGenerator.create>[1]>
type CryptoKey = webcrypto.CryptoKey
type CryptoKeyPair = webcrypto.CryptoKeyPair

const EC_ALG = {name: 'ECDSA', namedCurve: 'P-256'} as const
const SIGN_ALG = {name: 'ECDSA', hash: 'SHA-256'} as const
const DAY_MS = 24 * 60 * 60 * 1000
// Certificates start an hour in the past so a peer whose clock lags a little still accepts a
// credential that was issued a minute ago.
const BACKDATE_MS = 60 * 60 * 1000
const MAX_DAYS = 36500

export const DEFAULT_CA_NAME = 'agent fleet CA'
export const DEFAULT_CA_DAYS = 3650
export const DEFAULT_LEAF_DAYS = 825
export const CA_CERT_FILE = 'ca.crt'
export const CA_KEY_FILE = 'ca.key'
/** Node and client names: they become the CN, the DNS SAN and the file names. */
export const NAME_RE = /^[a-z0-9][a-z0-9-]{0,62}$/
// "ca" would write ca.crt/ca.key over the CA itself.
const RESERVED_NAMES = new Set(['ca'])

export interface InitCaOptions {
  dir: string
  /** Subject CN; default "agent fleet CA". */
  name?: string
  /** Validity in days; default 3650. */
  days?: number
  /** Replace an existing CA (every credential it issued stops being trusted). */
  force?: boolean
}

export interface InitCaResult {
  certFile: string
  keyFile: string
  fingerprint: string
  name: string
  notAfter: string
}

export interface IssueOptions {
  dir: string
  /** CN and DNS SAN; must match NAME_RE. */
  name: string
  /** true: a proxy node (EKU serverAuth); false: a client (EKU clientAuth). */
  node: boolean
  /** Validity in days; default 825, cut to the CA's own expiry. */
  days?: number
  /** Extra IP SANs, e.g. the node's public address for clients that dial it by IP. */
  ips?: string[]
  /** Replace existing <name>.crt/.key/.pem. */
  force?: boolean
}

export interface IssueResult {
  certFile: string
  keyFile: string
  bundleFile: string
  fingerprint: string
  name: string
  role: 'node' | 'client'
  serial: string
  notAfter: string
  /** Set when the requested validity was cut to the CA's expiry. */
  warning?: string
}

export function validateName(name: string): void {
  if (!NAME_RE.test(name)) {
    throw new PkiError(
      `invalid name ${JSON.stringify(name)}: use 1-63 characters of lower-case letters, digits and '-', ` +
        `starting with a letter or digit (it becomes the certificate CN, its DNS name and the file names)`,
    )
  }
  if (RESERVED_NAMES.has(name)) throw new PkiError(`invalid name "${name}": it is reserved for the CA's own files`)
}

function validateDays(days: number): number {
  if (!Number.isInteger(days) || days < 1 || days > MAX_DAYS) {
    throw new PkiError(`invalid validity ${days}: --days must be a whole number from 1 to ${MAX_DAYS}`)
  }
  return days
}

/** 16 random bytes, top bit clear (positive) and first byte non-zero (exactly 16 octets in DER). */
function randomSerial(): string {
  const b = new Uint8Array(16)
  webcrypto.getRandomValues(b)
  b[0] &= 0x7f
  if (b[0] === 0) b[0] = 1
  return Buffer.from(b).toString('hex')
}

// Whole seconds: X.509 times carry no milliseconds, and results should match the certificate.
function seconds(ms: number): Date {
  return new Date(Math.floor(ms / 1000) * 1000)
}

async function generateKeys(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(EC_ALG, true, ['sign', 'verify'])) as CryptoKeyPair
}

async function privateKeyPem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key))
  return createPrivateKey({key: der, format: 'der', type: 'pkcs8'}).export({type: 'pkcs8', format: 'pem'}) as string
}

export async function initCa(opts: InitCaOptions): Promise<InitCaResult> {
  const name = opts.name ?? DEFAULT_CA_NAME
  if (name.trim() === '' || name.length > 64 || /[\x00-\x1f\x7f]/.test(name)) {
    throw new PkiError('invalid CA name: use 1-64 printable characters')
  }
  const days = validateDays(opts.days ?? DEFAULT_CA_DAYS)
  const certFile = join(opts.dir, CA_CERT_FILE)
  const keyFile = join(opts.dir, CA_KEY_FILE)

  if (!opts.force) {
    const present: string[] = []
    for (const f of [certFile, keyFile]) if (await exists(f)) present.push(f)
    if (present.length > 0) {
      throw new PkiError(
        `a CA already exists in ${opts.dir} (${present.join(', ')}): pass --force to replace it ` +
          `(every credential it issued will stop being trusted)`,
      )
    }
  }

  const keys = await generateKeys()
  const now = Date.now()
  const notAfter = seconds(now + days * DAY_MS)
  const cert = await x509.X509CertificateGenerator.createSelfSigned(
    {
      // JSON form, not "CN=..." text, so a --name with commas or '=' is not parsed as a DN.
      name: [{CN: [name]}],
      keys,
      serialNumber: randomSerial(),
      notBefore: seconds(now - BACKDATE_MS),
      notAfter,
      signingAlgorithm: SIGN_ALG,
      extensions: [
        // pathLen 0: this CA signs leaves only, never intermediates.
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, x509Crypto),
      ],
    },
    x509Crypto,
  )

  await ensureDir(opts.dir)
  await writeFileAtomic(keyFile, await privateKeyPem(keys.privateKey), SECRET_MODE)
  const certPem = cert.toString('pem') + '\n'
  await writeFileAtomic(certFile, certPem, PUBLIC_MODE)
  return {certFile, keyFile, fingerprint: fingerprint(certPem), name, notAfter: notAfter.toISOString()}
}

export interface LoadedCa {
  pem: string
  node: X509Certificate
  peculiar: x509.X509Certificate
  signingKey: CryptoKey
}

/** Loads and checks the CA of a pki directory (certificate, matching P-256 key, not expired). */
export async function loadCa(dir: string): Promise<LoadedCa> {
  const certFile = join(dir, CA_CERT_FILE)
  const keyFile = join(dir, CA_KEY_FILE)
  const [haveCert, haveKey] = [await exists(certFile), await exists(keyFile)]
  if (!haveCert && !haveKey) throw new PkiError(`no CA in ${dir}: run \`agent pki init --dir ${dir}\` first`)
  if (!haveCert || !haveKey) {
    throw new PkiError(`incomplete CA in ${dir}: ${haveCert ? keyFile : certFile} is missing`)
  }

  const pem = await readFile(certFile, 'utf8')
  let node: X509Certificate
  try {
    node = new X509Certificate(pem)
  } catch (error) {
    throw new PkiError(`${certFile} is not a PEM certificate: ${(error as Error).message}`)
  }
  if (!node.ca) throw new PkiError(`${certFile} is not a CA certificate (basicConstraints CA:false)`)
  if (new Date(node.validTo).getTime() <= Date.now()) {
    throw new PkiError(`the CA in ${certFile} expired on ${new Date(node.validTo).toISOString()}`)
  }

  let key: KeyObject
  try {
    key = createPrivateKey(await readFile(keyFile, 'utf8'))
  } catch (error) {
    throw new PkiError(`${keyFile} is not a PEM private key: ${(error as Error).message}`)
  }
  if (!node.checkPrivateKey(key)) throw new PkiError(`${keyFile} does not match ${certFile}`)
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new PkiError(`${keyFile} is not an ECDSA P-256 key`)
  }
  const der = key.export({type: 'pkcs8', format: 'der'})
  const signingKey = await webcrypto.subtle.importKey('pkcs8', der, EC_ALG, false, ['sign'])
  // Re-emit the CA as one clean PEM block (the file may carry comments or CRLFs).
  return {pem: node.toString().trimEnd() + '\n', node, peculiar: new x509.X509Certificate(node.raw), signingKey}
}

export async function issue(opts: IssueOptions): Promise<IssueResult> {
  validateName(opts.name)
  const days = validateDays(opts.days ?? DEFAULT_LEAF_DAYS)
  const ips = [...new Set(opts.ips ?? [])]
  for (const ip of ips) if (isIP(ip) === 0) throw new PkiError(`invalid IP address for --ip: ${ip}`)

  const ca = await loadCa(opts.dir)
  const certFile = join(opts.dir, `${opts.name}.crt`)
  const keyFile = join(opts.dir, `${opts.name}.key`)
  const bundleFile = join(opts.dir, `${opts.name}.pem`)
  if (!opts.force) {
    const present: string[] = []
    for (const f of [certFile, keyFile, bundleFile]) if (await exists(f)) present.push(f)
    if (present.length > 0) {
      throw new PkiError(`credentials for "${opts.name}" already exist (${present.join(', ')}): pass --force to replace them`)
    }
  }

  const now = Date.now()
  let notAfter = seconds(now + days * DAY_MS)
  let warning: string | undefined
  const caNotAfter = new Date(ca.node.validTo)
  if (notAfter > caNotAfter) {
    // A leaf outliving its CA would just fail verification later; say so now instead.
    notAfter = caNotAfter
    warning = `validity cut to the CA's expiry (${caNotAfter.toISOString()})`
  }

  const caSki = ca.peculiar.getExtension(x509.SubjectKeyIdentifierExtension)
  const aki = caSki
    ? new x509.AuthorityKeyIdentifierExtension(caSki.keyId)
    : await x509.AuthorityKeyIdentifierExtension.create(ca.peculiar.publicKey, false, x509Crypto)

  const keys = await generateKeys()
  const serial = randomSerial()
  const sans: x509.JsonGeneralName[] = [{type: 'dns', value: opts.name}, ...ips.map((ip) => ({type: 'ip' as const, value: ip}))]
  const leaf = await x509.X509CertificateGenerator.create(
    {
      subject: [{CN: [opts.name]}],
      // The CA's own encoded Name, so issuer/subject chaining is byte-exact.
      issuer: ca.peculiar.subjectName,
      publicKey: keys.publicKey,
      signingKey: ca.signingKey,
      serialNumber: serial,
      notBefore: seconds(now - BACKDATE_MS),
      notAfter,
      signingAlgorithm: SIGN_ALG,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([opts.node ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth]),
        new x509.SubjectAlternativeNameExtension(sans),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, x509Crypto),
        aki,
      ],
    },
    x509Crypto,
  )

  const certPem = leaf.toString('pem') + '\n'
  // Sanity check with the same library node:tls relies on, before anything reaches the disk.
  if (!new X509Certificate(certPem).verify(ca.node.publicKey)) throw new PkiError('internal error: issued certificate does not verify against the CA')
  const keyPem = await privateKeyPem(keys.privateKey)

  await writeFileAtomic(keyFile, keyPem, SECRET_MODE)
  await writeFileAtomic(certFile, certPem, PUBLIC_MODE)
  // CA first, then leaf, then key: loadCredentials accepts any order, but this is the documented one.
  await writeFileAtomic(bundleFile, ca.pem + certPem + keyPem, SECRET_MODE)

  return {
    certFile,
    keyFile,
    bundleFile,
    fingerprint: fingerprint(certPem),
    name: opts.name,
    role: opts.node ? 'node' : 'client',
    serial,
    notAfter: notAfter.toISOString(),
    ...(warning ? {warning} : {}),
  }
}
