/**
 * Who may use the node. The TLS layer has already proven the client holds a certificate from
 * this fleet's CA; here the node decides whether that certificate's holder is one of the
 * clients in its config (by name, and by fingerprint when the config pins one).
 */
import type {PeerCertificate} from 'node:tls'

export interface AuthorizedClient {
  name: string
  /** "sha256:AB:CD:..." (SHA-256 over the DER), when pinned. */
  fingerprint?: string
}

export type Authorization = {ok: true; name: string} | {ok: false; reason: string}

export function authorize(cert: PeerCertificate, clients: readonly AuthorizedClient[]): Authorization {
  const name = cert?.subject?.CN
  if (typeof name !== 'string' || name === '') return {ok: false, reason: 'certificate has no common name'}
  const entry = clients.find((c) => c.name === name)
  if (entry === undefined) return {ok: false, reason: `client "${name}" is not in this node's authorized clients`}
  if (entry.fingerprint !== undefined) {
    const seen = `sha256:${cert.fingerprint256}`
    if (seen !== entry.fingerprint) {
      return {ok: false, reason: `client "${name}" presented certificate ${seen}, which is not the pinned ${entry.fingerprint}`}
    }
  }
  return {ok: true, name}
}
