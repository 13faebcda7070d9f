// Turns what a node or client config says under `pki:` into PEM strings for node:tls, failing
// early with the file name rather than later with an opaque TLS alert.
import {createPrivateKey, X509Certificate, type KeyObject} from 'node:crypto'
import {readFile} from 'node:fs/promises'
import {resolve} from 'node:path'

import {commonName, isSelfSigned, pemBlocks, PkiError, type PemBlock} from './pem.js'

/** PEM strings ready for node:tls (`ca`, `cert`, `key` options). */
export interface Credentials {
  ca: string
  cert: string
  key: string
}

/** What a config holds under `pki:`: one bundle file, or three separate files. */
export type PkiConfig = {bundle: string} | {ca: string; cert: string; key: string}

export interface LoadCredentialsOptions {
  /** Directory relative paths are resolved against (the config file's); default the cwd. */
  baseDir?: string
}

interface ParsedCert {
  block: PemBlock
  x509: X509Certificate
}

async function readText(file: string, what: string): Promise<string> {
  try {
    return await readFile(file, 'utf8')
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    const reason = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (error as Error).message
    throw new PkiError(`cannot read ${what} ${file}: ${reason}`)
  }
}

function parseCerts(file: string, blocks: PemBlock[]): ParsedCert[] {
  return blocks
    .filter((b) => b.label === 'CERTIFICATE')
    .map((block, i) => {
      try {
        return {block, x509: new X509Certificate(block.pem)}
      } catch (error) {
        throw new PkiError(`${file}: certificate block ${i + 1} is not a valid certificate: ${(error as Error).message}`)
      }
    })
}

function parseKey(file: string, blocks: PemBlock[]): {pem: string; key: KeyObject} {
  if (blocks.some((b) => b.label === 'ENCRYPTED PRIVATE KEY')) {
    throw new PkiError(`${file}: encrypted private keys are not supported`)
  }
  const keys = blocks.filter((b) => b.label.endsWith('PRIVATE KEY'))
  if (keys.length === 0) throw new PkiError(`${file} has no private key (no "BEGIN PRIVATE KEY" block)`)
  if (keys.length > 1) throw new PkiError(`${file} has ${keys.length} private keys: expected one`)
  try {
    return {pem: keys[0].pem, key: createPrivateKey(keys[0].pem)}
  } catch (error) {
    throw new PkiError(`${file}: the private key cannot be read: ${(error as Error).message}`)
  }
}

function describe(cert: X509Certificate): string {
  try {
    return `"${commonName(cert)}"`
  } catch {
    return `(${cert.subject.replace(/\n/g, ', ')})`
  }
}

/** Checks that hold for either config form; `where` names the file(s) in messages. */
function check(leaf: X509Certificate, cas: X509Certificate[], key: KeyObject, keyFile: string, certFile: string): void {
  if (!leaf.checkPrivateKey(key)) {
    throw new PkiError(
      keyFile === certFile
        ? `${keyFile}: the private key does not match the certificate for ${describe(leaf)}`
        : `${keyFile} does not match the certificate in ${certFile} (${describe(leaf)})`,
    )
  }
  if (!cas.some((ca) => leaf.checkIssued(ca) && leaf.verify(ca.publicKey))) {
    throw new PkiError(`${certFile}: the certificate for ${describe(leaf)} was not issued by the CA given with it (${cas.map(describe).join(', ')})`)
  }
  const expires = new Date(leaf.validTo)
  if (expires.getTime() <= Date.now()) {
    throw new PkiError(`${certFile}: the certificate for ${describe(leaf)} expired on ${expires.toISOString()}: issue a new one`)
  }
}

async function loadBundle(file: string): Promise<Credentials> {
  const blocks = pemBlocks(await readText(file, 'pki bundle'))
  const certs = parseCerts(file, blocks)
  if (certs.length === 0) {
    throw new PkiError(`${file} holds no certificate: a bundle needs the CA certificate, the node or client certificate and its key`)
  }
  const selfSigned = certs.filter((c) => isSelfSigned(c.x509))
  const others = certs.filter((c) => !selfSigned.includes(c))
  let cas: ParsedCert[]
  let leaf: ParsedCert
  if (others.length === 1 && selfSigned.length >= 1) {
    // The usual case; extra self-signed CAs (e.g. old and new during a CA change) are all trusted.
    cas = selfSigned
    leaf = others[0]
  } else if (certs.length === 2) {
    // Nothing tells them apart by signature: fall back to the documented order, CA first.
    cas = [certs[0]]
    leaf = certs[1]
  } else if (certs.length === 1) {
    throw new PkiError(
      selfSigned.length === 1
        ? `${file} has the CA certificate but no node or client certificate`
        : `${file} has a certificate for ${describe(certs[0].x509)} but no CA certificate`,
    )
  } else {
    throw new PkiError(`${file} holds ${certs.length} certificates and it is unclear which one is the node or client certificate`)
  }
  const {pem: keyPem, key} = parseKey(file, blocks)
  check(leaf.x509, cas.map((c) => c.x509), key, file, file)
  return {ca: cas.map((c) => c.block.pem).join(''), cert: leaf.block.pem, key: keyPem}
}

async function loadFiles(caFile: string, certFile: string, keyFile: string): Promise<Credentials> {
  const cas = parseCerts(caFile, pemBlocks(await readText(caFile, 'CA certificate')))
  if (cas.length === 0) throw new PkiError(`${caFile} holds no CA certificate`)
  const certs = parseCerts(certFile, pemBlocks(await readText(certFile, 'certificate')))
  if (certs.length === 0) throw new PkiError(`${certFile} holds no certificate`)
  // If someone points `cert` at a bundle, its leaf is the one that is not self-signed.
  const leaf = certs.find((c) => !isSelfSigned(c.x509)) ?? certs[0]
  const {pem: keyPem, key} = parseKey(keyFile, pemBlocks(await readText(keyFile, 'private key')))
  check(leaf.x509, cas.map((c) => c.x509), key, keyFile, certFile)
  return {ca: cas.map((c) => c.block.pem).join(''), cert: leaf.block.pem, key: keyPem}
}

/**
 * Loads and checks credentials: the key must match the certificate, the certificate must be
 * issued by (one of) the CA certificate(s) and not expired. Errors name the offending file.
 */
export async function loadCredentials(pki: PkiConfig, opts: LoadCredentialsOptions = {}): Promise<Credentials> {
  const at = (p: string) => resolve(opts.baseDir ?? process.cwd(), p)
  if (pki && typeof pki === 'object' && 'bundle' in pki && typeof pki.bundle === 'string') {
    return loadBundle(at(pki.bundle))
  }
  const files = pki as Partial<{ca: unknown; cert: unknown; key: unknown}>
  if (files && typeof files.ca === 'string' && typeof files.cert === 'string' && typeof files.key === 'string') {
    return loadFiles(at(files.ca), at(files.cert), at(files.key))
  }
  throw new PkiError('pki: give either {bundle: <file>} or all of {ca, cert, key}')
}
