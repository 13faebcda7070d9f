/**
 * Which TLS failures are the operator's to fix (wrong CA, wrong name, revoked or unknown
 * certificate) and so end the client with a clear message, as opposed to network trouble,
 * which the client rides out by reconnecting.
 */
const FATAL = /CERT|UNABLE_TO_VERIFY|SELF_SIGNED|ALTNAME|ALERT_UNKNOWN_CA|ALERT_BAD_CERTIFICATE|ALERT_CERTIFICATE|ALERT_ACCESS_DENIED|ALERT_HANDSHAKE_FAILURE|ALERT_DECRYPT_ERROR/

export function isFatalTlsError(e: NodeJS.ErrnoException): boolean {
  return typeof e.code === 'string' && FATAL.test(e.code)
}
