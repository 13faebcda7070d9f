import {Flags, type Command} from '@oclif/core'
import {ClientRuntimeError, GRPCGenericError} from 'etcd3'
import {FleetAdmin, withTimeout} from '../core/fleet/admin.js'
import {FleetAccessError, resolveAccess, type FleetAccess, type FleetAccessOptions} from '../core/fleet/access.js'
import {connectEtcd} from '../core/fleet/connect.js'
import {etcdErrorMessage} from '../core/fleet/errors.js'
import {fail} from './fail.js'

/** How every `agent fleet ...` command reaches etcd. */
export const fleetFlags = {
  config: Flags.string({char: 'c', summary: 'A node config with a fleet: section, or a YAML file with endpoints, ca, cert, key, prefix.', env: 'AGENT_FLEET_CONFIG'}),
  endpoints: Flags.string({summary: 'etcd client URLs, comma-separated (https://host:port,...).'}),
  ca: Flags.string({summary: "PEM file of the CA of etcd's certificates."}),
  cert: Flags.string({summary: 'PEM file of your etcd client certificate (its CN is your etcd user).'}),
  key: Flags.string({summary: 'PEM file of its private key.'}),
  prefix: Flags.string({summary: "The fleet's key prefix (default /agent/fleet)."}),
  timeout: Flags.integer({summary: 'Seconds to wait for etcd before giving up.', default: 10, min: 1}),
}

/**
 * grpc-js sets the TLS server name to the endpoint's host even when it is an IP address, and
 * Node warns about that (DEP0123) on every connection: noise on an operator's terminal that says
 * nothing about their setup (the certificate is still checked against its IP SANs). Only that
 * warning is dropped.
 */
function quietIpServerNameWarning(): void {
  const emit = process.emitWarning.bind(process) as (...a: unknown[]) => void
  process.emitWarning = ((warning: unknown, ...rest: unknown[]) => {
    const code = typeof rest[0] === 'object' && rest[0] !== null ? (rest[0] as {code?: string}).code : rest[1]
    if (code === 'DEP0123') return
    emit(warning, ...rest)
  }) as typeof process.emitWarning
}

type FleetFlagValues = FleetAccessOptions & {timeout: number}

function isEtcdError(e: unknown): boolean {
  return e instanceof GRPCGenericError || e instanceof ClientRuntimeError || (e instanceof Error && /^(Etcd|GRPC)/.test(e.constructor.name))
}

/**
 * Connects as the flags say, runs `fn`, closes the client. Every failure ends the command with
 * one line: 2 for what the operator gave (missing or bad access flags), 1 for the rest.
 * `doing` completes "etcd user X may not ..." when etcd refuses.
 */
export async function withFleet<T>(cmd: Command, flags: FleetFlagValues, doing: string, fn: (admin: FleetAdmin, access: FleetAccess) => Promise<T>): Promise<T> {
  let access: FleetAccess
  try {
    access = resolveAccess(flags)
  } catch (e) {
    return fail(cmd, (e as Error).message, e instanceof FleetAccessError ? 2 : 1)
  }
  let admin: FleetAdmin
  quietIpServerNameWarning()
  try {
    admin = new FleetAdmin(connectEtcd(access), access.prefix)
  } catch (e) {
    const m = (e as Error).message
    return fail(cmd, m.startsWith('cannot read') ? m : `cannot use the etcd credentials (ca ${access.ca}, cert ${access.cert}, key ${access.key}): ${m}`, 2)
  }
  let result: T
  try {
    result = await withTimeout(fn(admin, access), flags.timeout * 1000, `no answer within ${flags.timeout} s (timed out)`)
  } catch (e) {
    admin.etcd.close()
    return fail(cmd, isEtcdError(e) || /timed out/.test((e as Error).message) ? etcdErrorMessage(e, access, doing) : (e as Error).message, 1)
  }
  admin.etcd.close()
  return result
}
