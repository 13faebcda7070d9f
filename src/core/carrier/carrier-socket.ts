/**
 * The datagram socket of a udp or ip carrier, opened the same way on the node (its listening
 * port) and on a client (an ephemeral port): room for the largest payload of the tunnel MTU,
 * the TUN ring's headroom, and buffers big enough that a burst is not dropped at the socket.
 */
import type {CarrierSpec} from '../transport/contract.js'
import {TUN_HEADROOM} from '../tun/index.js'
import {type DatagramSocket, openRawIp, openUdp} from './datagram.js'

const SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
/** Room beyond the MTU for the transport's header and trailer. */
const PAYLOAD_SLACK = 256

/** reusePort (udp only): the node's main socket and its workers' share address and port. */
export function openCarrierSocket(carrier: CarrierSpec, mtu: number, address: string, port: number, reusePort = false): DatagramSocket {
  const common = {
    address,
    maxPayload: mtu + PAYLOAD_SLACK,
    headroom: TUN_HEADROOM,
    recvBufferBytes: SOCKET_BUFFER_BYTES,
    sendBufferBytes: SOCKET_BUFFER_BYTES,
  }
  return carrier.kind === 'udp' ? openUdp({...common, port, reusePort}) : openRawIp({...common, protocol: carrier.ipProtocol!, copyDfFromInner: carrier.copyDfFromInner === true})
}
