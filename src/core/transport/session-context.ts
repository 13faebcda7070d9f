/**
 * The SessionContext a transport's session gets, built in one place for node and client: keys
 * from the control connection's TLS exporter (labels namespaced per transport), transport
 * messages over the control channel, and, on the node, the session ids it owns.
 */
import type {ControlConnection} from '../control/connection.js'
import type {SessionContext, SessionParams, TransportOptions} from './contract.js'

/** What the node does with the ids a session allocates and binds. */
export interface SessionIds {
  allocate(): number
  bind(id: number): void
  unbind(id: number): void
}

export interface SessionContextInput {
  role: 'node' | 'client'
  transport: string
  peerName: string
  tunnelAddress: string
  nodeAddress: string
  options: TransportOptions
  mtu: number
  conn: ControlConnection
  /** Node only: a client's session gets its ids from the node's welcome. */
  ids?: SessionIds
  /** The session's fastPath changed: the data path reads it again (once the peer exists). */
  fastPathChanged: () => void
}

const NO_CONTEXT = Buffer.alloc(0)

/** How often a transport session gets its tick(). */
export const SESSION_TICK_MS = 1000

export function exporterLabel(transport: string, label: string): string {
  return `EXPORTER-agent-${transport}-${label}`
}

export function sessionContext(i: SessionContextInput): SessionContext {
  const nodeOnly = (what: string) => () => {
    throw new Error(`${what}: session ids are the node's to give`)
  }
  return {
    role: i.role,
    peerName: i.peerName,
    tunnelAddress: i.tunnelAddress,
    nodeAddress: i.nodeAddress,
    options: i.options,
    mtu: i.mtu,
    exportKey: (label, length, context) => {
      // Only identity sessions move to native records, and they export nothing; say so if one does.
      if (i.conn.nativeStream !== null) throw new Error('the connection moved to native records: export keys when the session opens')
      return i.conn.socket.exportKeyingMaterial(length, exporterLabel(i.transport, label), context ?? NO_CONTEXT)
    },
    allocateId: i.ids ? () => i.ids!.allocate() : nodeOnly('allocateId'),
    bindId: i.ids ? (id) => i.ids!.bind(id) : nodeOnly('bindId'),
    unbindId: i.ids ? (id) => i.ids!.unbind(id) : nodeOnly('unbindId'),
    sendControl: (message: SessionParams) => i.conn.send({type: 'transport', body: message}),
    fastPathChanged: i.fastPathChanged,
  }
}
