/** OpenSSL's verification codes, in words an operator acts on. */
const REASONS: Record<string, string> = {
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: "it is not signed by this fleet's CA",
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: "it is not signed by this fleet's CA",
  DEPTH_ZERO_SELF_SIGNED_CERT: 'it is self-signed',
  SELF_SIGNED_CERT_IN_CHAIN: "its chain ends in a CA that is not this fleet's",
  CERT_HAS_EXPIRED: 'it has expired',
  CERT_NOT_YET_VALID: 'it is not valid yet',
  INVALID_PURPOSE: 'it is not a client certificate (wrong extended key usage)',
}

export function describeTlsFailure(error: Error | string | null | undefined): string {
  if (error === null || error === undefined) return 'no client certificate'
  const code = typeof error === 'string' ? error : ((error as NodeJS.ErrnoException).code ?? error.message)
  const reason = REASONS[code]
  return reason === undefined ? String(code) : `${reason} (${code})`
}
