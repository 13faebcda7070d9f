// Reading a certificate revocation list (RFC 5280 §5) on the node: parse it, check that the fleet
// CA signed it, and turn its entries into serial numbers that compare with what node:tls reports
// for a peer. Issuing CRLs (the admin side) is in revocation.ts.
import {X509Certificate} from 'node:crypto'
import {readFile} from 'node:fs/promises'
// tsyringe, under @peculiar/x509, needs the Reflect metadata polyfill loaded first.
import 'reflect-metadata'
import * as x509 from '@peculiar/x509'

import {x509Crypto} from './certs.js'
import {commonName, pemBlocks, PkiError} from './pem.js'

/** A CRL that cannot be used; the message names the file and what is wrong, for the operator. */
export class CrlError extends PkiError {
  override name = 'CrlError'
  constructor(
    message: string,
    /** The CRL file concerned. */
    readonly file: string,
  ) {
    super(message)
  }
}

export interface RevocationList {
  /** Serial numbers of the revoked certificates, in serialKey() form. */
  revoked: ReadonlySet<string>
  /** The cRLNumber extension; absent in a CRL without one (never in ours). */
  number?: bigint
  thisUpdate: Date
  /** Absent only in a CRL without nextUpdate (never in ours). */
  nextUpdate?: Date
  /** The CRL's issuer, as a DN string ("CN=agent fleet CA"). */
  issuer: string
  /** The file it was read from, as given. */
  file: string
  /** SHA-256 fingerprint ("sha256:AB:...") of the CA certificate the signature verified against. */
  caFingerprint: string
}

// RFC 5280 OIDs.
export const OID_CRL_NUMBER = '2.5.29.20'
const OID_AUTHORITY_KEY_ID = '2.5.29.35'
const OID_DELTA_CRL_INDICATOR = '2.5.29.27'
const OID_ISSUING_DISTRIBUTION_POINT = '2.5.29.28'
const OID_CRL_REASON = '2.5.29.21'
const OID_INVALIDITY_DATE = '2.5.29.24'
const OID_CERTIFICATE_ISSUER = '2.5.29.29'
const KNOWN_CRL_EXTENSIONS = new Set([OID_CRL_NUMBER, OID_AUTHORITY_KEY_ID])
const KNOWN_ENTRY_EXTENSIONS = new Set([OID_CRL_REASON, OID_INVALIDITY_DATE])

const SERIAL_RE = /^(-?)([0-9A-F]+)$/

/**
 * Normalises a certificate serial number so that the forms in use compare with ===:
 * node:tls `getPeerCertificate().serialNumber` and `X509Certificate.serialNumber` (upper-case hex,
 * whole bytes, "0A1B2C"), @peculiar/x509 (lower case), `openssl x509 -serial` ("serial=0A1B2C"),
 * colon-separated ("0a:1b:2c") and hand-typed ("0xa1b2c"). The result is upper-case hex of whole
 * bytes without leading zero bytes, i.e. exactly node:tls's form: serialKey(tlsSerial) ===
 * tlsSerial. A negative serial (never issued here, but legal in foreign certificates) keeps its
 * '-' as OpenSSL prints it. Throws PkiError for anything that is not a hexadecimal number.
 */
export function serialKey(serial: string): string {
  const cleaned = String(serial)
    .trim()
    .replace(/^serial=/i, '')
    .replace(/[:\s]/g, '')
    .toUpperCase()
  const m = SERIAL_RE.exec(cleaned.replace(/^(-?)0X/, '$1'))
  if (!m) {
    throw new PkiError(
      `not a certificate serial number: ${JSON.stringify(serial)} (expected hexadecimal, e.g. 5A0F1C... as printed by ` +
        '`openssl x509 -noout -serial`, optionally with colons)',
    )
  }
  let hex = m[2].replace(/^0+/, '')
  if (hex.length % 2 === 1) hex = '0' + hex
  if (hex === '') hex = '00'
  return (m[1] === '-' && hex !== '00' ? '-' : '') + hex
}

/** serialKey() of a DER INTEGER's content octets (two's complement, as in a certificate or CRL). */
export function serialKeyFromDer(bytes: Uint8Array): string {
  const value = derIntegerValue(bytes)
  const hex = (value < 0n ? -value : value).toString(16)
  return serialKey((value < 0n ? '-' : '') + hex)
}

function derIntegerValue(bytes: Uint8Array): bigint {
  if (bytes.length === 0) throw new Error('empty INTEGER')
  let v = BigInt('0x' + Buffer.from(bytes).toString('hex'))
  if (bytes[0] & 0x80) v -= 1n << BigInt(bytes.length * 8)
  return v
}

/** DER length at der[off] (after the tag): [length, offset of the content]. */
function derLength(der: Uint8Array, off: number): [number, number] {
  if (off >= der.length) throw new Error('truncated')
  const first = der[off]
  if (!(first & 0x80)) return [first, off + 1]
  const n = first & 0x7f
  if (n === 0 || n > 4 || off + 1 + n > der.length) throw new Error('bad length')
  let len = 0
  for (let i = 0; i < n; i++) len = len * 256 + der[off + 1 + i]
  return [len, off + 1 + n]
}

/** The serial's content octets in a RevokedCertificate: SEQUENCE { INTEGER serial, Time, ... }. */
function entrySerialOctets(der: Uint8Array): Uint8Array {
  if (der[0] !== 0x30) throw new Error('not a SEQUENCE')
  const [, seqOff] = derLength(der, 1)
  if (der[seqOff] !== 0x02) throw new Error('no serial INTEGER')
  const [len, off] = derLength(der, seqOff + 1)
  if (len === 0 || off + len > der.length) throw new Error('bad serial INTEGER')
  return der.subarray(off, off + len)
}

/** DER INTEGER (tag, length, content) of a non-negative bigint: what the cRLNumber extension holds. */
export function derInteger(value: bigint): Uint8Array {
  if (value < 0n) throw new RangeError('negative INTEGER')
  let hex = value.toString(16)
  if (hex.length % 2 === 1) hex = '0' + hex
  if (Number.parseInt(hex.slice(0, 2), 16) >= 0x80) hex = '00' + hex
  const content = Buffer.from(hex, 'hex')
  if (content.length > 127) throw new RangeError('INTEGER too long')
  return Uint8Array.from([0x02, content.length, ...content])
}

/** Decodes a DER INTEGER (tag, length, content), e.g. a cRLNumber extension value. */
export function parseDerInteger(der: Uint8Array): bigint {
  if (der.length < 3 || der[0] !== 0x02) throw new Error('not an INTEGER')
  const [len, off] = derLength(der, 1)
  if (len === 0 || der.length !== off + len) throw new Error('bad INTEGER length')
  return derIntegerValue(der.subarray(off))
}

function hexColons(buf: ArrayBuffer | Uint8Array | string): string {
  const hex = typeof buf === 'string' ? buf : Buffer.from(buf instanceof Uint8Array ? buf : new Uint8Array(buf)).toString('hex')
  return hex.toUpperCase().match(/../g)?.join(':') ?? ''
}

async function readCrlFile(file: string): Promise<Buffer> {
  try {
    return await readFile(file)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    const reason =
      code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'it is a directory' : (error as Error).message
    throw new CrlError(`cannot read CRL ${file}: ${reason}`, file)
  }
}

const PEM_BEGIN_RE = /-----BEGIN ([A-Z0-9 ]+)-----/g

/** Finds the DER of the one CRL in the file (PEM "X509 CRL" block, or raw DER), or says why not. */
function crlDer(file: string, data: Buffer): {der: Buffer; form: string} {
  if (data.length === 0) throw new CrlError(`${file} is empty: expected an X.509 CRL (PEM "-----BEGIN X509 CRL-----", or DER)`, file)
  const text = data.toString('latin1')
  if (text.includes('-----BEGIN ')) {
    const blocks = pemBlocks(text)
    const crls = blocks.filter((b) => b.label === 'X509 CRL')
    const begins = [...text.matchAll(PEM_BEGIN_RE)].map((m) => m[1])
    if (crls.length === 0) {
      if (begins.includes('X509 CRL')) {
        throw new CrlError(`${file} is not a valid CRL: its "BEGIN X509 CRL" PEM block has no matching END line (truncated file?)`, file)
      }
      throw new CrlError(
        `${file} is not a CRL: it holds PEM ${[...new Set(begins)].map((l) => `"${l}"`).join(', ')} but no "X509 CRL" block` +
          (begins.includes('CRL') ? ' ("BEGIN CRL" is not the standard label: RFC 7468 and OpenSSL use "BEGIN X509 CRL")' : ''),
        file,
      )
    }
    if (crls.length > 1) throw new CrlError(`${file} holds ${crls.length} CRLs: expected exactly one`, file)
    const body = crls[0].pem
      .replace(/-----(BEGIN|END) X509 CRL-----/g, '')
      .replace(/\s+/g, '')
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body) || body.length % 4 !== 0) {
      throw new CrlError(`${file} is not a valid CRL: the body of its X509 CRL PEM block is not valid base64 (damaged or truncated?)`, file)
    }
    return {der: Buffer.from(body, 'base64'), form: 'the X509 CRL PEM block'}
  }
  // DER: an ASN.1 SEQUENCE.
  if (data[0] !== 0x30) {
    throw new CrlError(
      `${file} is not a CRL: it is neither PEM (no "-----BEGIN X509 CRL-----" line) nor DER (it does not start with an ASN.1 SEQUENCE)`,
      file,
    )
  }
  return {der: data, form: 'the DER data'}
}

interface TrustedCa {
  node: X509Certificate
  peculiar: x509.X509Certificate
  fingerprint: string
  label: string
}

function trustedCas(caCertPem: string | string[]): TrustedCa[] {
  const texts = Array.isArray(caCertPem) ? caCertPem : [caCertPem]
  const out: TrustedCa[] = []
  for (const text of texts) {
    for (const block of pemBlocks(text)) {
      if (block.label !== 'CERTIFICATE') continue
      let node: X509Certificate
      try {
        node = new X509Certificate(block.pem)
      } catch (error) {
        throw new PkiError(`loadCrl: a CA certificate given is not valid: ${(error as Error).message}`)
      }
      let label: string
      try {
        label = `"${commonName(node)}"`
      } catch {
        label = `(${node.subject.replace(/\n/g, ', ')})`
      }
      const fp = 'sha256:' + node.fingerprint256
      out.push({node, peculiar: new x509.X509Certificate(node.raw), fingerprint: fp, label: `${label} (${fp})`})
    }
  }
  if (out.length === 0) throw new PkiError('loadCrl: no CA certificate given (expected the PEM of the fleet CA)')
  return out
}

function sameName(a: x509.Name, b: x509.Name): boolean {
  const da = Buffer.from(a.toArrayBuffer())
  const db = Buffer.from(b.toArrayBuffer())
  return da.equals(db) || a.toString() === b.toString()
}

function parseCrl(file: string, der: Buffer, form: string): x509.X509Crl {
  let crl: x509.X509Crl
  try {
    crl = new x509.X509Crl(der)
    // Decode everything that is decoded lazily, so a damaged CRL fails here and not later.
    void crl.issuer
    void crl.thisUpdate
    void crl.nextUpdate
    void crl.extensions
    for (const e of crl.entries) {
      void e.serialNumber
      void e.extensions
    }
  } catch (error) {
    throw new CrlError(`${file} is not a valid CRL: ${form} does not decode as an X.509 CRL (${(error as Error).message})`, file)
  }
  return crl
}

async function verifiesWith(crl: x509.X509Crl, ca: TrustedCa): Promise<boolean> {
  try {
    const pub = ca.peculiar.publicKey
    const key = await pub.export({...pub.algorithm, ...crl.signatureAlgorithm} as Parameters<typeof pub.export>[0], ['verify'], x509Crypto)
    return await crl.verify({publicKey: key}, x509Crypto)
  } catch {
    return false
  }
}

/**
 * Checks a parsed CRL against the trusted CA(s) and returns what a node enforces. Shared by
 * loadCrl and by the issuing side, which checks every CRL it writes the same way.
 */
export async function checkCrl(file: string, data: Buffer, caCertPem: string | string[]): Promise<RevocationList> {
  const cas = trustedCas(caCertPem)
  const {der, form} = crlDer(file, data)
  const crl = parseCrl(file, der, form)

  const issuer = crl.issuer
  const candidates = cas.filter((ca) => sameName(ca.peculiar.subjectName, crl.issuerName))
  if (candidates.length === 0) {
    throw new CrlError(
      `${file}: the CRL was issued by "${issuer}", not by the CA this node trusts (${cas.map((c) => c.label).join(', ')}): ` +
        "use the crl.pem written next to this fleet's ca.crt",
      file,
    )
  }
  let signer: TrustedCa | undefined
  for (const ca of candidates) {
    if (await verifiesWith(crl, ca)) {
      signer = ca
      break
    }
  }
  if (!signer) {
    const aki = crl.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId
    const skis = candidates.map((c) => c.peculiar.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId)
    const otherKey = aki !== undefined && skis.every((s) => s !== undefined && s.toLowerCase() !== aki.toLowerCase())
    throw new CrlError(
      `${file}: the CRL's signature does not verify against the CA ${candidates.map((c) => c.label).join(', ')}: ` +
        (otherKey
          ? `it was signed by another CA with the same name (authority key id ${hexColons(aki)}, ` +
            `this CA's is ${skis.map((s) => hexColons(s!)).join(', ')})`
          : 'it was signed by another key, or altered after signing'),
      file,
    )
  }
  const ku = signer.peculiar.getExtension(x509.KeyUsagesExtension)
  if (ku && !(ku.usages & x509.KeyUsageFlags.cRLSign)) {
    throw new CrlError(`${file}: the CA ${signer.label} may not sign CRLs (its keyUsage lacks cRLSign)`, file)
  }

  let number: bigint | undefined
  for (const ext of crl.extensions) {
    if (ext.type === OID_DELTA_CRL_INDICATOR) {
      throw new CrlError(`${file} is a delta CRL, which is not supported: give a complete CRL (\`agent pki crl\` writes one)`, file)
    }
    if (ext.type === OID_ISSUING_DISTRIBUTION_POINT) {
      // A partitioned or indirect CRL: it may not cover every certificate, which a node cannot tell.
      throw new CrlError(`${file} has an issuingDistributionPoint (a partial CRL), which is not supported: give a complete CRL`, file)
    }
    if (ext.critical && !KNOWN_CRL_EXTENSIONS.has(ext.type)) {
      throw new CrlError(`${file}: the CRL has a critical extension ${ext.type} that is not understood, so it cannot be used (RFC 5280 §5.2)`, file)
    }
    if (ext.type === OID_CRL_NUMBER) {
      try {
        number = parseDerInteger(new Uint8Array(ext.value))
      } catch (error) {
        throw new CrlError(`${file}: the CRL's cRLNumber extension is malformed (${(error as Error).message})`, file)
      }
      if (number < 0n) throw new CrlError(`${file}: the CRL's cRLNumber is negative`, file)
    }
  }

  const revoked = new Set<string>()
  for (const entry of crl.entries) {
    for (const ext of entry.extensions) {
      if (ext.type === OID_CERTIFICATE_ISSUER) {
        throw new CrlError(`${file} is an indirect CRL (an entry names another certificate issuer), which is not supported`, file)
      }
      if (ext.critical && !KNOWN_ENTRY_EXTENSIONS.has(ext.type)) {
        throw new CrlError(`${file}: a CRL entry has a critical extension ${ext.type} that is not understood, so the CRL cannot be used`, file)
      }
    }
    // From the DER INTEGER itself: @peculiar/x509's hex form reads a negative serial as positive.
    let serial: string
    try {
      serial = serialKeyFromDer(entrySerialOctets(new Uint8Array(entry.rawData)))
    } catch (error) {
      throw new CrlError(`${file} is not a valid CRL: a revoked certificate entry is malformed (${(error as Error).message})`, file)
    }
    revoked.add(serial)
  }

  return {
    revoked,
    ...(number !== undefined ? {number} : {}),
    thisUpdate: crl.thisUpdate,
    ...(crl.nextUpdate ? {nextUpdate: crl.nextUpdate} : {}),
    issuer,
    file,
    caFingerprint: signer.fingerprint,
  }
}

/**
 * Reads a CRL (PEM or DER) and checks it against the CA certificate(s) the node trusts (the `ca`
 * of its credentials: one PEM string, possibly holding several certificates, or several strings).
 * Throws CrlError naming the file when it cannot be read, is not a CRL, was issued by another CA
 * or does not verify. An expired CRL is returned as is: see crlExpired.
 */
export async function loadCrl(file: string, caCertPem: string | string[]): Promise<RevocationList> {
  return checkCrl(file, await readCrlFile(file), caCertPem)
}

/** True once the CRL is past its nextUpdate (a CRL without nextUpdate never expires). */
export function crlExpired(list: RevocationList, now: Date = new Date()): boolean {
  return list.nextUpdate !== undefined && now.getTime() > list.nextUpdate.getTime()
}

