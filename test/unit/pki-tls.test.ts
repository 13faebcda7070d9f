// The real proof: credentials from `initCa`/`issue` complete (or fail) mutual TLS 1.3 handshakes
// through node:tls exactly as the control channel will use them. Loopback only, ephemeral ports,
// keys generated at test time.
import {mkdtemp, rm} from 'node:fs/promises'
import type {AddressInfo} from 'node:net'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import * as tls from 'node:tls'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {
  commonName,
  fingerprint,
  initCa,
  issue,
  loadCredentials,
  tlsClientOptions,
  tlsServerOptions,
  type Credentials,
} from '../../src/core/pki/index.js'

interface ServerSide {
  /** CN of the authenticated client, when the handshake completed on the server. */
  peerCn?: string
  peerFingerprint?: string
  protocol?: string | null
  /** The error passed to the server's 'tlsClientError', when the handshake failed there. */
  clientError?: NodeJS.ErrnoException
  /** Why the client certificate was refused (OpenSSL verify code), read off the failed socket. */
  authorizationError?: string
}

interface ClientSide {
  /** What the server sent after the handshake; only set if both sides accepted each other. */
  received?: string
  error?: NodeJS.ErrnoException
  /** Whether 'secureConnect' fired: in TLS 1.3 it can, even when the server then refuses us. */
  secureConnect?: boolean
  authorized?: boolean
}

/**
 * Runs one connection: the server greets an authenticated client by CN. Resolves once the client
 * socket has closed and the server has reported either a secure connection or a client error.
 */
async function handshake(
  server: Credentials,
  client: Credentials,
  opts: {servername?: string; clientOverrides?: tls.ConnectionOptions} = {},
): Promise<{server: ServerSide; client: ClientSide}> {
  const s: ServerSide = {}
  const c: ClientSide = {}
  let serverDone!: () => void
  const serverSettled = new Promise<void>((resolve) => (serverDone = resolve))

  const srv = tls.createServer(tlsServerOptions(server), (socket) => {
    const peer = socket.getPeerX509Certificate()!
    s.peerCn = commonName(peer)
    s.peerFingerprint = fingerprint(peer.raw)
    s.protocol = socket.getProtocol()
    socket.on('error', () => {})
    socket.end(`hello ${s.peerCn}`)
    serverDone()
  })
  srv.on('tlsClientError', (err, socket) => {
    s.clientError = err
    s.authorizationError = socket.authorizationError ? String(socket.authorizationError) : undefined
    serverDone()
  })
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  const {port} = srv.address() as AddressInfo

  try {
    await new Promise<void>((resolve) => {
      const sock = tls.connect({
        host: '127.0.0.1',
        port,
        ...tlsClientOptions(client, opts.servername ?? 'node1'),
        ...opts.clientOverrides,
      })
      let data = ''
      sock.setEncoding('utf8')
      sock.on('secureConnect', () => {
        c.secureConnect = true
        c.authorized = sock.authorized
      })
      sock.on('data', (d: string) => (data += d))
      sock.on('error', (err) => (c.error = err))
      sock.on('close', () => {
        if (data) c.received = data
        resolve()
      })
    })
    // A client that gives up first (bad server certificate) leaves the server with an error
    // too; wait for it, but do not hang if the server saw nothing at all.
    await Promise.race([serverSettled, new Promise((r) => setTimeout(r, 2000))])
  } finally {
    await new Promise((resolve) => srv.close(resolve))
  }
  return {server: s, client: c}
}

let root: string
let nodeCreds: Credentials
let node2Creds: Credentials
let aliceCreds: Credentials
let malloryCreds: Credentials
let aliceFingerprint: string

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pki-tls-'))
  const fleet = join(root, 'fleet')
  const other = join(root, 'other')
  await initCa({dir: fleet})
  await initCa({dir: other}) // same default name "agent fleet CA": only the key tells them apart
  await issue({dir: fleet, name: 'node1', node: true, ips: ['127.0.0.1']})
  await issue({dir: fleet, name: 'node2', node: true})
  aliceFingerprint = (await issue({dir: fleet, name: 'alice', node: false})).fingerprint
  await issue({dir: other, name: 'mallory', node: false})
  nodeCreds = await loadCredentials({bundle: join(fleet, 'node1.pem')})
  node2Creds = await loadCredentials({bundle: join(fleet, 'node2.pem')})
  aliceCreds = await loadCredentials({bundle: join(fleet, 'alice.pem')})
  malloryCreds = await loadCredentials({bundle: join(other, 'mallory.pem')})
})

afterAll(async () => {
  await rm(root, {recursive: true, force: true})
})

describe('mutual TLS 1.3 with fleet credentials', () => {
  it('node and client authenticate each other; the server sees the client CN', async () => {
    const {server, client} = await handshake(nodeCreds, aliceCreds)
    expect(server.clientError).toBeUndefined()
    expect(server.peerCn).toBe('alice')
    expect(server.peerFingerprint).toBe(aliceFingerprint)
    expect(server.protocol).toBe('TLSv1.3')
    expect(client.error).toBeUndefined()
    expect(client.authorized).toBe(true)
    expect(client.received).toBe('hello alice')
  })

  it('rejects a client whose certificate comes from a foreign CA (even with the same CA name)', async () => {
    // Mallory trusts the real fleet CA (ca.crt is no secret), so she accepts the node and the
    // refusal is the node's own. Her CA has the same default name: only its key differs.
    const {server, client} = await handshake(nodeCreds, {...malloryCreds, ca: nodeCreds.ca})
    expect(server.peerCn).toBeUndefined()
    expect(server.clientError).toBeDefined()
    // Node drops the socket without an alert, so the error itself only says "socket hang up";
    // the reason is on the socket.
    expect(server.authorizationError).toMatch(/^(UNABLE_TO_GET_ISSUER_CERT_LOCALLY|UNABLE_TO_VERIFY_LEAF_SIGNATURE|CERT_SIGNATURE_FAILURE)$/)
    // The client's TLS 1.3 handshake had already finished; it just sees the connection end.
    expect(client.secureConnect).toBe(true)
    expect(client.received).toBeUndefined()
  })

  it('a foreign client that also uses its own CA refuses the node first', async () => {
    const {server, client} = await handshake(nodeCreds, malloryCreds)
    expect(server.peerCn).toBeUndefined()
    // The node sends its CA along with its certificate (OpenSSL completes the chain from `ca`).
    expect(client.error?.code).toBe('SELF_SIGNED_CERT_IN_CHAIN')
    expect(client.received).toBeUndefined()
  })

  it('rejects a client that presents no certificate', async () => {
    const {server, client} = await handshake(nodeCreds, aliceCreds, {
      clientOverrides: {cert: undefined, key: undefined},
    })
    expect(server.peerCn).toBeUndefined()
    expect(server.clientError?.message).toMatch(/peer did not return a certificate|certificate required/i)
    expect(client.received).toBeUndefined()
  })

  it('the client rejects a client certificate used as a server certificate (EKU clientAuth only)', async () => {
    // alice's cert is from the right CA and chains fine: only its EKU says "not a server".
    // servername alice, so that the name check cannot be what fails.
    const {server, client} = await handshake(aliceCreds, aliceCreds, {servername: 'alice'})
    expect(client.error?.code).toBe('INVALID_PURPOSE')
    expect(client.error?.message).toBe('unsuitable certificate purpose')
    expect(client.secureConnect).toBeUndefined()
    expect(client.received).toBeUndefined()
    expect(server.peerCn).toBeUndefined()
  })

  it('the server rejects a node certificate used as a client certificate (EKU serverAuth only)', async () => {
    const {server, client} = await handshake(nodeCreds, nodeCreds)
    expect(server.peerCn).toBeUndefined()
    expect(server.authorizationError).toBe('INVALID_PURPOSE')
    // TLS 1.3: the client's side of the handshake is over before the server judges the client
    // certificate, so the client sees 'secureConnect' (authorized: the *node* was fine) and only
    // then the connection drop. Acceptance by the node shows in the first byte it sends.
    expect(client.secureConnect).toBe(true)
    expect(client.authorized).toBe(true)
    expect(client.received).toBeUndefined()
  })

  it('the client rejects a node that is not the one it asked for', async () => {
    const {server, client} = await handshake(nodeCreds, aliceCreds, {servername: 'node2'})
    expect(client.error?.code).toBe('ERR_TLS_CERT_ALTNAME_INVALID')
    // The name check runs in the client once its side of the handshake is done, so whether the
    // server got as far as accepting alice is a race; what matters is that the client hung up.
    expect(client.secureConnect).toBeUndefined()
    expect(client.received).toBeUndefined()
    void server
  })

  it('a client may name the node by the IP address it dials, if the node certificate has that IP SAN', async () => {
    const ok = await handshake(nodeCreds, aliceCreds, {servername: '127.0.0.1'})
    expect(ok.client.error).toBeUndefined()
    expect(ok.client.received).toBe('hello alice')
    const bad = await handshake(node2Creds, aliceCreds, {servername: '127.0.0.1'})
    expect(bad.client.error?.code).toBe('ERR_TLS_CERT_ALTNAME_INVALID')
    expect(bad.client.received).toBeUndefined()
  })

  it('refuses anything older than TLS 1.3', async () => {
    const {server, client} = await handshake(nodeCreds, aliceCreds, {
      clientOverrides: {minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2'},
    })
    expect(server.peerCn).toBeUndefined()
    expect(server.clientError?.message).toMatch(/unsupported protocol/i)
    expect(client.error).toBeDefined()
  })
})
