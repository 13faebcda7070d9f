/**
 * Moving a tls session's connection from Node's TLS stream to the native records
 * (carrier/native-stream.ts), once the handshake, the hello and the welcome are done:
 *
 *   client -> node   hello   {records: RECORDS}   the client can take over
 *   node -> client   welcome {records: RECORDS}   the node agrees; the last thing it writes
 *                                                 through Node's TLS
 *   node    right after writing that welcome: stops Node's TLS reading, opens the native
 *           stream on the socket, and holds its writes
 *   client  on that welcome: stops Node's TLS reading, opens the native stream, sends a Ping
 *   node    the client's first record releases its writes
 *
 * Nothing is lost or read twice, because each side stops Node's TLS at a point after which the
 * peer sends nothing through it: the client says nothing after its hello until the welcome, and
 * the node nothing after the welcome until a native record came. So no native bytes can sit in
 * Node's buffers, and no Node-TLS record can reach the native reader.
 *
 * Keys: 64 bytes from the TLS exporter (RFC 8446 7.5) under our own label: the traffic secret
 * of client to node, then of node to client; the C derives each direction's AES-256-GCM key and
 * IV from its secret, and the next secret at each KeyUpdate, as TLS 1.3 does. Either end that cannot take over (the
 * fast path turned off, the addon missing, an MTU above what a record holds) simply does not
 * ask or agree, and the session stays in Node's TLS: both are the same protocol of frames.
 *
 * This reaches into two Node internals, the TLS socket's handle and its parent's fd; where they
 * are missing, recordsPossible() says no and nothing changes.
 */
import type {TLSSocket} from 'node:tls'
import {fastPathDisabled} from '../device/fast-path.js'
import {NATIVE_MAX_DATA, NativeStream, type NativeStreamHandlers, RECORD_SECRET_BYTES} from '../carrier/native-stream.js'
import {loadAgentNative} from '../native/addon.js'

/** What hello and welcome carry to ask for and agree to the native records. */
export const RECORDS = 'aes-256-gcm-1'
/** The TLS exporter label of the records' traffic secrets (exported for the fuzzer, which writes records itself). */
export const EXPORTER_LABEL = 'EXPORTER-agent-tls-records'

interface TlsHandle {
  readStop(): number
  _parent?: {fd?: number}
}

function handleOf(socket: TLSSocket): TlsHandle | null {
  const handle = (socket as unknown as {_handle?: TlsHandle | null})._handle
  return handle !== null && handle !== undefined && typeof handle.readStop === 'function' ? handle : null
}

function fdOf(socket: TLSSocket): number | null {
  const fd = handleOf(socket)?._parent?.fd
  return typeof fd === 'number' && fd >= 0 ? fd : null
}

/** Whether this end can take `socket` over with Data frames up to maxData bytes. */
export function recordsPossible(socket: TLSSocket, maxData: number): boolean {
  if (fastPathDisabled() || maxData > NATIVE_MAX_DATA || socket.destroyed || fdOf(socket) === null) return false
  if (typeof socket.exportKeyingMaterial !== 'function') return false
  try {
    return loadAgentNative().stream !== undefined
  } catch {
    return false
  }
}

/**
 * Stops Node's TLS reading `socket` and opens the native stream on it. Throws if it cannot (the
 * caller then ends the connection: the peer is past the point of going back).
 */
export function takeOver(socket: TLSSocket, role: 'node' | 'client', maxData: number, handlers: NativeStreamHandlers): NativeStream {
  const handle = handleOf(socket)
  const fd = fdOf(socket)
  if (handle === null || fd === null) throw new Error('the connection has no socket to take over')
  const keys = socket.exportKeyingMaterial(2 * RECORD_SECRET_BYTES, EXPORTER_LABEL, Buffer.alloc(0))
  const clientToNode = keys.subarray(0, RECORD_SECRET_BYTES)
  const nodeToClient = keys.subarray(RECORD_SECRET_BYTES)
  const [tx, rx] = role === 'client' ? [clientToNode, nodeToClient] : [nodeToClient, clientToNode]
  // Node's stream machinery must never start reading again: a read would take bytes meant
  // for the native side.
  handle.readStop()
  ;(socket as unknown as {_read: () => void})._read = () => {}
  try {
    return NativeStream.open(fd, role, tx, rx, Math.min(maxData, NATIVE_MAX_DATA), handlers)
  } finally {
    keys.fill(0)
  }
}
