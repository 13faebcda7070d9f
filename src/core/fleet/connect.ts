/**
 * A client of the fleet's etcd cluster, over mutual TLS: the certificate's common name is the
 * etcd user (etcd's --client-cert-auth), so a node and an operator get what their roles allow.
 */
import {readFileSync} from 'node:fs'
import {Etcd3} from 'etcd3'

/** How to reach the fleet's etcd: client URLs and PEM files. */
export interface EtcdAccess {
  endpoints: readonly string[]
  ca: string
  cert: string
  key: string
}

/** How long a call waits for a member to answer before it tries another or fails. */
export const ETCD_DIAL_TIMEOUT_MS = 3_000

function readPem(file: string, what: string): Buffer {
  try {
    return readFileSync(file)
  } catch (e) {
    throw new Error(`cannot read the etcd ${what} ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`)
  }
}

export function connectEtcd(access: EtcdAccess): Etcd3 {
  if (access.endpoints.length === 0) throw new Error('no etcd endpoints given')
  for (const e of access.endpoints) if (!/^https:\/\/[^/\s]+:\d{1,5}$/.test(e)) throw new Error(`invalid etcd endpoint ${JSON.stringify(e)}: expected https://host:port`)
  return new Etcd3({
    hosts: [...access.endpoints],
    credentials: {rootCertificate: readPem(access.ca, 'CA'), certChain: readPem(access.cert, 'certificate'), privateKey: readPem(access.key, 'key')},
    dialTimeout: ETCD_DIAL_TIMEOUT_MS,
    // A silent partition (no RST, no FIN) must end the watch's stream so it moves to another
    // member, or says etcd is unreachable: ping every 10 s (etcd allows one per 5 s by default).
    grpcOptions: {'grpc.keepalive_time_ms': 10_000, 'grpc.keepalive_timeout_ms': 5_000, 'grpc.keepalive_permit_without_calls': 1},
  })
}
