// PEM helpers shared by the PKI code and by anything that needs to identify a peer.
import {createHash, X509Certificate} from 'node:crypto'

/** Raised for every operator-facing PKI failure; the message is meant to be printed as is. */
export class PkiError extends Error {
  override name = 'PkiError'
}

export interface PemBlock {
  /** Label between BEGIN and END, e.g. "CERTIFICATE", "PRIVATE KEY", "EC PRIVATE KEY". */
  label: string
  /** The whole block, BEGIN to END line, newline-terminated: what node:tls wants. */
  pem: string
}

const PEM_RE = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n[\s\S]*?-----END \1-----/g

/** Splits text into its PEM blocks, in order. Anything between blocks is ignored. */
export function pemBlocks(text: string): PemBlock[] {
  const out: PemBlock[] = []
  for (const m of text.matchAll(PEM_RE)) out.push({label: m[1], pem: m[0].replace(/\r\n/g, '\n') + '\n'})
  return out
}

function toCertificate(input: string | Buffer | X509Certificate): X509Certificate {
  if (input instanceof X509Certificate) return input
  if (typeof input === 'string' || input.subarray(0, 11).toString('latin1') === '-----BEGIN ') {
    // A PEM may hold several certificates (a bundle): the first CERTIFICATE block is the one meant.
    const text = typeof input === 'string' ? input : input.toString('utf8')
    const block = pemBlocks(text).find((b) => b.label === 'CERTIFICATE')
    if (!block) throw new PkiError('no CERTIFICATE block in the given PEM text')
    return new X509Certificate(block.pem)
  }
  return new X509Certificate(input)
}

/** Formats the SHA-256 of a certificate's DER as "sha256:AB:CD:..." (upper-case hex pairs). */
export function fingerprint(certPemOrDer: string | Buffer | X509Certificate): string {
  const der = toCertificate(certPemOrDer).raw
  const hex = createHash('sha256').update(der).digest('hex').toUpperCase()
  return 'sha256:' + hex.match(/../g)!.join(':')
}

/**
 * Normalises a fingerprint the way an operator may paste it (any case, with or without the
 * "sha256:" prefix and colons) into the canonical "sha256:AB:..." form, so pins compare with ===.
 */
export function normalizeFingerprint(fp: string): string {
  const hex = fp.trim().replace(/^sha256:/i, '').replace(/[:\s]/g, '').toUpperCase()
  if (!/^[0-9A-F]{64}$/.test(hex)) throw new PkiError(`not a SHA-256 fingerprint: ${fp}`)
  return 'sha256:' + hex.match(/../g)!.join(':')
}

/** The subject CN of a certificate (X509Certificate or PEM text); throws if it has none. */
export function commonName(cert: X509Certificate | string): string {
  const x = toCertificate(cert)
  // Node renders the subject as one "KEY=value" per line, RFC 2253-escaped (\, for a comma,
  // \0A for a control character): undo that so a CA named with --name "a, b" reads back as given.
  for (const line of x.subject.split('\n')) {
    if (line.startsWith('CN=')) return unescapeDn(line.slice(3))
  }
  throw new PkiError(`certificate has no common name (subject: ${x.subject.replace(/\n/g, ', ') || 'empty'})`)
}

function unescapeDn(value: string): string {
  return value.replace(/\\([0-9A-Fa-f]{2})|\\(.)/g, (_m, hex: string | undefined, ch: string | undefined) =>
    hex === undefined ? ch! : String.fromCharCode(Number.parseInt(hex, 16)),
  )
}

/** True when the certificate is self-issued and its signature verifies with its own key. */
export function isSelfSigned(cert: X509Certificate): boolean {
  return cert.subject === cert.issuer && cert.verify(cert.publicKey)
}
