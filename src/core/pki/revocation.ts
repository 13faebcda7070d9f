// Revocation on the admin machine: the record of what was revoked (revoked.json, next to the CA)
// and the CRL the CA signs from it (crl.pem), which nodes load with loadCrl.
import {X509Certificate} from 'node:crypto'
import {open, readdir, readFile, rm} from 'node:fs/promises'
import {join} from 'node:path'
import 'reflect-metadata'
import * as x509 from '@peculiar/x509'

import {CA_CERT_FILE, loadCa, validateName, x509Crypto, type LoadedCa} from './certs.js'
import {checkCrl, derInteger, OID_CRL_NUMBER, serialKey, type RevocationList} from './crl.js'
import {exists, PUBLIC_MODE, writeFileAtomic} from './files.js'
import {fingerprint, PkiError} from './pem.js'

export const REVOKED_FILE = 'revoked.json'
export const CRL_FILE = 'crl.pem'
/** Days from one CRL to its nextUpdate; see docs/pki.md for the reasoning. */
export const DEFAULT_CRL_DAYS = 30
const MAX_CRL_DAYS = 3650
const LOCK_FILE = '.revocation.lock'
const FORMAT = 'agent-revocations/1'
const DAY_MS = 24 * 60 * 60 * 1000
const SIGN_ALG = {name: 'ECDSA', hash: 'SHA-256'} as const

/**
 * The CRLReason values (RFC 5280 §5.3.1) `pki revoke --reason` accepts. Left out on purpose:
 * certificateHold (a hold is meant to be lifted, and there is no un-revoke), removeFromCRL (only
 * for delta CRLs), cACompromise and aACompromise (for CA and attribute certificates, which this
 * CA does not revoke).
 */
export const REVOCATION_REASONS = [
  'unspecified',
  'keyCompromise',
  'affiliationChanged',
  'superseded',
  'cessationOfOperation',
  'privilegeWithdrawn',
] as const
export type RevocationReason = (typeof REVOCATION_REASONS)[number]

const REFUSED_REASONS: Record<string, string> = {
  certificateHold: 'a hold is meant to be lifted later and revocations here are permanent',
  removeFromCRL: 'it only has a meaning in delta CRLs',
  cACompromise: 'it is for revoking CA certificates; this CA only revokes node and client certificates',
  aACompromise: 'it is for attribute certificates',
}

/** One revoked certificate, as kept in revoked.json. */
export interface RevocationRecord {
  /** serialKey() form: upper-case hex, as `openssl x509 -noout -serial` and node:tls print it. */
  serial: string
  /** The credential name (<name>.crt), when known. */
  name?: string
  /** Revocation date, ISO 8601 UTC, whole seconds. */
  date: string
  reason: RevocationReason
}

/** revoked.json. */
export interface RevocationState {
  format: typeof FORMAT
  /** Fingerprint of the CA these revocations belong to; absent until the first CRL is written. */
  ca?: string
  /** Number of the last CRL issued from this directory (0: none yet). */
  crlNumber: number
  revoked: RevocationRecord[]
}

export interface CrlOptions {
  dir: string
  /** Days until the CRL's nextUpdate; default 30, cut to the CA's expiry. */
  days?: number
}

export interface CrlResult {
  crlFile: string
  revokedFile: string
  /** The cRLNumber of the CRL just written. */
  number: number
  thisUpdate: string
  nextUpdate: string
  /** How many certificates the CRL lists. */
  revokedCount: number
  /** Set when nextUpdate was cut to the CA's expiry. */
  warning?: string
}

export interface RevokeOptions extends CrlOptions {
  /** Revoke <dir>/<name>.crt ... */
  name?: string
  /** ... or this serial number (hex, any case, colons allowed). Exactly one of name and serial. */
  serial?: string
  /** Default 'unspecified'. */
  reason?: string
}

export interface RevokeResult {
  serial: string
  name?: string
  reason: RevocationReason
  /** When it was revoked: now, or the original date when it already was. */
  date: string
  /** True when the serial was already revoked: the record is left as it was. */
  alreadyRevoked: boolean
  /** False when revoking by serial and no certificate in the directory has that serial. */
  known: boolean
  warnings: string[]
  crl: CrlResult
}

function toPem(label: string, der: ArrayBuffer): string {
  const b64 = Buffer.from(der).toString('base64')
  return `-----BEGIN ${label}-----\n${b64.match(/.{1,64}/g)!.join('\n')}\n-----END ${label}-----\n`
}

function seconds(ms: number): Date {
  return new Date(Math.floor(ms / 1000) * 1000)
}

function validateCrlDays(days: number): number {
  if (!Number.isInteger(days) || days < 1 || days > MAX_CRL_DAYS) {
    throw new PkiError(`invalid CRL validity ${days}: --days must be a whole number from 1 to ${MAX_CRL_DAYS}`)
  }
  return days
}

export function validateReason(reason: string | undefined): RevocationReason {
  if (reason === undefined) return 'unspecified'
  if ((REVOCATION_REASONS as readonly string[]).includes(reason)) return reason as RevocationReason
  if (reason in REFUSED_REASONS) throw new PkiError(`reason ${reason} is not supported: ${REFUSED_REASONS[reason]}`)
  throw new PkiError(`invalid reason ${JSON.stringify(reason)}: use one of ${REVOCATION_REASONS.join(', ')}`)
}

/** Reads <dir>/revoked.json; a missing file is an empty record. A damaged one is an error, never overwritten. */
export async function readRevocations(dir: string): Promise<RevocationState> {
  const file = join(dir, REVOKED_FILE)
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return {format: FORMAT, crlNumber: 0, revoked: []}
    throw new PkiError(`cannot read ${file}: ${(error as Error).message}`)
  }
  const bad = (why: string) => new PkiError(`${file} is damaged (${why}): fix or restore it from a backup; it is the record of every revocation`)
  let data: unknown
  try {
    data = JSON.parse(text)
  } catch (error) {
    throw bad(`not JSON: ${(error as Error).message}`)
  }
  const d = data as Partial<RevocationState>
  if (!d || typeof d !== 'object' || d.format !== FORMAT) throw bad(`expected "format": "${FORMAT}"`)
  if (!Number.isSafeInteger(d.crlNumber) || (d.crlNumber as number) < 0) throw bad('"crlNumber" is not a whole number')
  if (!Array.isArray(d.revoked)) throw bad('"revoked" is not a list')
  if (d.ca !== undefined && typeof d.ca !== 'string') throw bad('"ca" is not a fingerprint')
  const revoked: RevocationRecord[] = d.revoked.map((r: Partial<RevocationRecord>, i) => {
    if (!r || typeof r !== 'object' || typeof r.serial !== 'string') throw bad(`entry ${i + 1} has no "serial"`)
    let serial: string
    try {
      serial = serialKey(r.serial)
    } catch {
      throw bad(`entry ${i + 1}: "serial" ${JSON.stringify(r.serial)} is not hexadecimal`)
    }
    if (typeof r.date !== 'string' || Number.isNaN(Date.parse(r.date))) throw bad(`entry ${i + 1} has no valid "date"`)
    if (typeof r.reason !== 'string' || !(REVOCATION_REASONS as readonly string[]).includes(r.reason)) throw bad(`entry ${i + 1} has no valid "reason"`)
    if (r.name !== undefined && typeof r.name !== 'string') throw bad(`entry ${i + 1}: "name" is not a string`)
    return {serial, ...(r.name !== undefined ? {name: r.name} : {}), date: new Date(r.date).toISOString(), reason: r.reason as RevocationReason}
  })
  return {format: FORMAT, ...(d.ca !== undefined ? {ca: d.ca} : {}), crlNumber: d.crlNumber as number, revoked}
}

/**
 * One revoke or CRL issue at a time per directory: two concurrent read-modify-write cycles of
 * revoked.json would lose a revocation. A lock left by a dead process is taken over.
 */
async function withLock<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const lock = join(dir, LOCK_FILE)
  for (let attempt = 0; ; attempt++) {
    try {
      const fh = await open(lock, 'wx', 0o600)
      await fh.writeFile(String(process.pid))
      await fh.close()
      break
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
      const pid = Number.parseInt(await readFile(lock, 'utf8').catch(() => ''), 10)
      let alive = true
      if (Number.isInteger(pid) && pid > 0) {
        try {
          process.kill(pid, 0)
        } catch (e) {
          alive = (e as NodeJS.ErrnoException).code === 'EPERM'
        }
      }
      if (!alive) {
        await rm(lock, {force: true})
        continue
      }
      if (attempt >= 50) {
        throw new PkiError(`${lock} is held by another pki command (pid ${Number.isNaN(pid) ? '?' : pid}); wait for it, or remove the file if none runs`)
      }
      await new Promise((r) => setTimeout(r, 100))
    }
  }
  try {
    return await fn()
  } finally {
    await rm(lock, {force: true})
  }
}

/** The number of the CRL currently in <dir>/crl.pem, if it is one of this CA's. */
async function currentCrlNumber(dir: string, ca: LoadedCa): Promise<number> {
  const file = join(dir, CRL_FILE)
  if (!(await exists(file))) return 0
  try {
    const list = await checkCrl(file, await readFile(file), ca.pem)
    return list.number !== undefined && list.number <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(list.number) : 0
  } catch {
    return 0 // Not ours (or damaged): it is replaced.
  }
}

/**
 * revoked.json of the CA in dir. After `pki init --force` the file still holds the old CA's
 * record: refuse it rather than list the old CA's serials under the new one or restart numbers.
 */
async function readStateFor(dir: string, ca: LoadedCa): Promise<RevocationState> {
  const state = await readRevocations(dir)
  const fp = fingerprint(ca.pem)
  if (state.ca !== undefined && state.ca !== fp) {
    throw new PkiError(
      `${join(dir, REVOKED_FILE)} is the record of another CA (${state.ca}), not of ${join(dir, CA_CERT_FILE)} (${fp}): ` +
        `the CA was replaced. Every credential of the old CA is untrusted anyway: move ${REVOKED_FILE} and ${CRL_FILE} ` +
        'out of the directory and run the command again',
    )
  }
  state.ca = fp
  return state
}

/** Signs and writes the CRL for `state` (whose crlNumber is updated), after revoked.json. */
async function writeCrl(dir: string, ca: LoadedCa, state: RevocationState, days: number): Promise<CrlResult> {
  const crlFile = join(dir, CRL_FILE)
  const revokedFile = join(dir, REVOKED_FILE)
  // max() with the file's own number: if revoked.json was restored from an older backup, the
  // numbers still go up, as RFC 5280 §5.2.3 requires.
  const number = Math.max(state.crlNumber, await currentCrlNumber(dir, ca)) + 1
  const now = Date.now()
  const thisUpdate = seconds(now)
  let nextUpdate = seconds(now + days * DAY_MS)
  let warning: string | undefined
  const caNotAfter = new Date(ca.node.validTo)
  if (nextUpdate > caNotAfter) {
    nextUpdate = caNotAfter
    warning = `next update cut to the CA's expiry (${caNotAfter.toISOString()})`
  }

  const caSki = ca.peculiar.getExtension(x509.SubjectKeyIdentifierExtension)
  const aki = caSki
    ? new x509.AuthorityKeyIdentifierExtension(caSki.keyId)
    : await x509.AuthorityKeyIdentifierExtension.create(ca.peculiar.publicKey, false, x509Crypto)
  const crl = await x509.X509CrlGenerator.create(
    {
      // The CA's own encoded Name, so issuer matching is byte-exact.
      issuer: ca.peculiar.subjectName,
      thisUpdate,
      nextUpdate,
      signingAlgorithm: SIGN_ALG,
      signingKey: ca.signingKey,
      extensions: [aki, new x509.Extension(OID_CRL_NUMBER, false, derInteger(BigInt(number)))],
      entries: state.revoked.map((r) => ({
        serialNumber: r.serial,
        revocationDate: new Date(r.date),
        // RFC 5280 §5.3.1: leave reasonCode out rather than say "unspecified" (the library
        // omits it for 0 too).
        ...(r.reason === 'unspecified' ? {} : {reason: x509.X509CrlReason[r.reason]}),
      })),
    },
    x509Crypto,
  )
  // RFC 7468 labels a CRL "X509 CRL", which OpenSSL requires; @peculiar/x509 writes "CRL".
  const pem = toPem('X509 CRL', crl.rawData)
  // Check it the way a node will before anything reaches the disk.
  const check: RevocationList = await checkCrl(crlFile, Buffer.from(pem), ca.pem)
  if (check.number !== BigInt(number) || check.revoked.size !== state.revoked.length) {
    throw new PkiError('internal error: the CRL just signed does not read back as written')
  }

  state.crlNumber = number
  // The record first: if we stop between the two writes, the revocation is kept and the next
  // `pki crl` publishes it.
  const record: RevocationState = {format: FORMAT, ...(state.ca ? {ca: state.ca} : {}), crlNumber: number, revoked: state.revoked}
  await writeFileAtomic(revokedFile, JSON.stringify(record, null, 2) + '\n', PUBLIC_MODE)
  await writeFileAtomic(crlFile, pem, PUBLIC_MODE)
  return {
    crlFile,
    revokedFile,
    number,
    thisUpdate: thisUpdate.toISOString(),
    nextUpdate: nextUpdate.toISOString(),
    revokedCount: state.revoked.length,
    ...(warning ? {warning} : {}),
  }
}

/** Writes (or re-issues) <dir>/crl.pem from revoked.json, with the next CRL number. */
export async function issueCrl(opts: CrlOptions): Promise<CrlResult> {
  const days = validateCrlDays(opts.days ?? DEFAULT_CRL_DAYS)
  const ca = await loadCa(opts.dir)
  return withLock(opts.dir, async () => writeCrl(opts.dir, ca, await readStateFor(opts.dir, ca), days))
}

function readCert(file: string, text: string): X509Certificate {
  try {
    return new X509Certificate(text)
  } catch (error) {
    throw new PkiError(`${file} is not a PEM certificate: ${(error as Error).message}`)
  }
}

const issuedBy = (cert: X509Certificate, ca: LoadedCa) => cert.checkIssued(ca.node) && cert.verify(ca.node.publicKey)

const SERVER_AUTH = '1.3.6.1.5.5.7.3.1'

/** The <name>.crt files in dir issued by this CA that carry `serial`. */
async function findBySerial(dir: string, ca: LoadedCa, serial: string): Promise<Array<{name: string; cert: X509Certificate}>> {
  const found: Array<{name: string; cert: X509Certificate}> = []
  for (const f of (await readdir(dir)).sort()) {
    if (!f.endsWith('.crt') || f === CA_CERT_FILE) continue
    try {
      const cert = new X509Certificate(await readFile(join(dir, f)))
      if (serialKey(cert.serialNumber) === serial && issuedBy(cert, ca)) found.push({name: f.slice(0, -4), cert})
    } catch {
      // Not a certificate: not ours to judge here.
    }
  }
  return found
}

/**
 * Revokes <dir>/<name>.crt, or a serial number, in the CA of `dir`: records it in revoked.json
 * and re-issues crl.pem. Revoking what is already revoked changes no record (and still re-issues
 * the CRL). The CA's own certificate cannot be revoked.
 */
export async function revoke(opts: RevokeOptions): Promise<RevokeResult> {
  if ((opts.name === undefined) === (opts.serial === undefined)) {
    throw new PkiError('give either a name or --serial (exactly one)')
  }
  const reason = validateReason(opts.reason)
  const days = validateCrlDays(opts.days ?? DEFAULT_CRL_DAYS)
  if (opts.name === 'ca') {
    throw new PkiError('the CA cannot revoke its own certificate: to retire the CA, replace it with `agent pki init --force` (see docs/pki.md, Renewal)')
  }
  if (opts.name !== undefined) validateName(opts.name)
  const serialGiven = opts.serial === undefined ? undefined : serialKey(opts.serial)

  const ca = await loadCa(opts.dir)
  const caSerial = serialKey(ca.node.serialNumber)
  const warnings: string[] = []
  let serial: string
  let name: string | undefined
  let known = true
  let cert: X509Certificate | undefined
  if (opts.name !== undefined) {
    const file = join(opts.dir, `${opts.name}.crt`)
    let text: string
    try {
      text = await readFile(file, 'utf8')
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new PkiError(`no certificate named "${opts.name}": ${file} does not exist (to revoke a certificate whose file is gone, use --serial)`)
      }
      throw new PkiError(`cannot read ${file}: ${(error as Error).message}`)
    }
    cert = readCert(file, text)
    if (!issuedBy(cert, ca)) {
      throw new PkiError(
        `${file} was not issued by the CA in ${join(opts.dir, CA_CERT_FILE)}: a CRL of this CA cannot revoke it ` +
          '(nodes of this fleet do not accept it anyway)',
      )
    }
    serial = serialKey(cert.serialNumber)
    name = opts.name
  } else {
    serial = serialGiven!
    if (serial === caSerial) {
      throw new PkiError(
        `serial ${serial} is the CA's own certificate (${join(opts.dir, CA_CERT_FILE)}): the CA cannot revoke itself; ` +
          'to retire the CA, replace it with `agent pki init --force` (see docs/pki.md, Renewal)',
      )
    }
    const found = await findBySerial(opts.dir, ca, serial)
    if (found.length > 0) {
      name = found[0].name
      cert = found[0].cert
    } else {
      known = false
      warnings.push(
        `no certificate in ${opts.dir} has serial ${serial}: revoked anyway (a certificate replaced with --force keeps ` +
          'no file); check the serial, as a mistyped one revokes nothing',
      )
    }
  }

  if (cert?.keyUsage?.includes(SERVER_AUTH)) {
    warnings.push(
      `"${name}" is a node certificate: nodes enforce the CRL against clients, but clients do not check it yet, so ` +
        'they still accept a node presenting this certificate (see docs/pki.md)',
    )
  }

  return withLock(opts.dir, async () => {
    const state = await readStateFor(opts.dir, ca)
    const existing = state.revoked.find((r) => r.serial === serial)
    let record: RevocationRecord
    if (existing) {
      // Idempotent: the first revocation's date and reason stand (the caller says so).
      record = existing
    } else {
      record = {serial, ...(name ? {name} : {}), date: seconds(Date.now()).toISOString(), reason}
      state.revoked.push(record)
    }
    const crl = await writeCrl(opts.dir, ca, state, days)
    return {
      serial,
      ...(record.name ? {name: record.name} : {}),
      reason: record.reason,
      date: record.date,
      alreadyRevoked: existing !== undefined,
      known,
      warnings,
      crl,
    }
  })
}
