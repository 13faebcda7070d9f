/**
 * One line for an operator out of whatever etcd3 (gRPC) threw: which user was refused, which
 * endpoints did not answer. Stack traces and gRPC's multi-line details help nobody at a prompt.
 */
import {
  EtcdAuthenticationFailedError,
  EtcdPermissionDeniedError,
  EtcdRoleNotFoundError,
  EtcdUserNotFoundError,
  GRPCDeadlineExceededError,
  GRPCUnauthenticatedError,
  GRPCUnavailableError,
} from 'etcd3'
import {readFileSync} from 'node:fs'
import {commonName} from '../pki/pem.js'
import type {EtcdAccess} from './connect.js'

/** The etcd user a certificate stands for (its CN), or a description when it cannot be read. */
export function etcdUser(certFile: string): string {
  try {
    return commonName(readFileSync(certFile, 'utf8'))
  } catch {
    return `of ${certFile}`
  }
}

/** The first line of an etcd (gRPC) error, which may run to many lines of details. */
export function etcdErrorLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0].trim().slice(0, 200)
}

/** Whether retrying cannot help: etcd refused who we are or what we may read. */
export function isAccessError(e: unknown): boolean {
  return e instanceof EtcdPermissionDeniedError || e instanceof EtcdAuthenticationFailedError || e instanceof GRPCUnauthenticatedError || e instanceof EtcdUserNotFoundError
}

export function etcdErrorMessage(e: unknown, access: EtcdAccess, doing: string): string {
  const first = etcdErrorLine(e)
  const user = () => `etcd user "${etcdUser(access.cert)}" (the CN of ${access.cert})`
  if (e instanceof EtcdPermissionDeniedError) return `permission denied: ${user()} may not ${doing}`
  if (e instanceof EtcdUserNotFoundError) return `etcd has no ${user().slice(5)}: have an operator create it (agent fleet node add / operator add)`
  if (e instanceof EtcdRoleNotFoundError) return `etcd has no such role (${first}): run agent fleet init first`
  if (e instanceof EtcdAuthenticationFailedError || e instanceof GRPCUnauthenticatedError) return `etcd refused ${user()}: ${first}`
  if (e instanceof GRPCUnavailableError || e instanceof GRPCDeadlineExceededError || /timed out|no answer|unavailable|ECONNREFUSED|EHOSTUNREACH/i.test(first))
    return `cannot reach etcd at ${access.endpoints.join(', ')}: ${first}`
  return `etcd: ${first} (while trying to ${doing})`
}
