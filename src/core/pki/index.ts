// Public API of the fleet PKI: CA creation, credential issuance, revocation, loading for node:tls.
export {
  CA_CERT_FILE,
  CA_KEY_FILE,
  DEFAULT_CA_DAYS,
  DEFAULT_CA_NAME,
  DEFAULT_LEAF_DAYS,
  NAME_RE,
  initCa,
  issue,
  validateName,
  type InitCaOptions,
  type InitCaResult,
  type IssueOptions,
  type IssueResult,
} from './certs.js'
export {loadCredentials, type Credentials, type LoadCredentialsOptions, type PkiConfig} from './credentials.js'
export {commonName, fingerprint, isSelfSigned, normalizeFingerprint, pemBlocks, PkiError, type PemBlock} from './pem.js'
export {tlsClientOptions, tlsServerOptions} from './tls.js'
export {crlExpired, CrlError, loadCrl, serialKey, type RevocationList} from './crl.js'
export {
  CRL_FILE,
  DEFAULT_CRL_DAYS,
  REVOCATION_REASONS,
  REVOKED_FILE,
  issueCrl,
  readRevocations,
  revoke,
  type CrlOptions,
  type CrlResult,
  type RevocationReason,
  type RevocationRecord,
  type RevocationState,
  type RevokeOptions,
  type RevokeResult,
} from './revocation.js'
