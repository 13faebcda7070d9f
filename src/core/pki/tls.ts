// The node:tls options the control channel needs, in one place so client and node agree:
// TLS 1.3 only, and both sides verify the peer against the fleet CA.
import {isIP} from 'node:net'
import {checkServerIdentity, type ConnectionOptions, type TlsOptions} from 'node:tls'

import type {Credentials} from './credentials.js'

/** Server (proxy node) side: demands a client certificate issued by the fleet CA. */
/**
 * With `verifyInHandshake` false the handshake completes even for a certificate the CA did not
 * sign, so the node can tell such a client why it is refused (socket.authorized is false and
 * socket.authorizationError says why) instead of dropping it with no alert, which a TLS 1.3
 * client cannot tell from a network failure. The caller must then check socket.authorized
 * before anything else.
 */
export function tlsServerOptions(creds: Credentials, verifyInHandshake = true): TlsOptions {
  return {
    minVersion: 'TLSv1.3',
    maxVersion: 'TLSv1.3',
    ca: creds.ca,
    cert: creds.cert,
    key: creds.key,
    requestCert: true,
    rejectUnauthorized: verifyInHandshake,
  }
}

/**
 * Client side: verifies the node certificate against the fleet CA and that it carries
 * `nodeName` (a DNS SAN, or an IP SAN when nodeName is an address), whatever address is dialled.
 */
export function tlsClientOptions(creds: Credentials, nodeName: string): ConnectionOptions {
  return {
    minVersion: 'TLSv1.3',
    maxVersion: 'TLSv1.3',
    ca: creds.ca,
    cert: creds.cert,
    key: creds.key,
    // SNI may not carry an IP address (RFC 6066; Node warns), so send it for names only...
    ...(isIP(nodeName) === 0 ? {servername: nodeName} : {}),
    // ...and check the certificate against nodeName ourselves, not against the dialled host.
    checkServerIdentity: (_host, cert) => checkServerIdentity(nodeName, cert),
    rejectUnauthorized: true,
  }
}
