/**
 * An etcd cluster for tests, inside a testbed: members in the `ctl` namespace (createTestbed
 * {ctl: true}) on the wan switch, so nodes reach it and nothing leaves the testbed. Member i
 * (0-based) listens for clients on https://198.51.100.200:2379+10i and for peers on 2380+10i.
 * A CA and certificates are made at start with openssl under the testbed's scratch dir, with the
 * data dirs and logs; members are processes tracked by the testbed, so destroy() ends them.
 *
 * Notes (Debian's etcd 3.4.23):
 * - Client and peer TLS both require certificates (--client-cert-auth, --peer-client-cert-auth).
 *   Members share one certificate with serverAuth and clientAuth (a peer is a client of the others)
 *   and an IP SAN for the ctl address: clients dial addresses, there is no DNS in the testbed.
 * - With --client-cert-auth, once auth is enabled a request with no user/password is made as the
 *   user named by the client certificate's CN. So clientCert('node1') is "user node1"; such users
 *   need no password (`etcdctl user add X --no-password`). Before auth is enabled any certificate
 *   of the CA gets full access. enableAuth() makes the root user and turns auth on; roles are the
 *   caller's business.
 * - `etcdctl endpoint health` counts "permission denied" as healthy, so health checks work with
 *   auth on, whatever the certificate's user may read.
 * - 3.4 has no --unsafe-no-fsync; the WAL is fsynced, so keep test data small. Default logger is
 *   capnslog (deprecated): we ask for zap, into a log file per member (not a pipe nobody reads).
 * - No auto-compaction by default: revisions accumulate, watches can resume from any old revision
 *   until someone compacts (a test of "watch after compaction" must compact itself).
 * - A restarted member ignores --initial-cluster*: it rejoins from its data dir.
 */
import type {ChildProcess} from 'node:child_process'
import {existsSync, mkdirSync, readFileSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {run, type ExecResult} from './run.js'
import type {Testbed} from './types.js'

export const ETCD_CLIENT_PORT = 2379

export interface EtcdOptions {
  /** Members, 1..5, default 3. */
  members?: number
  /** Raft heartbeat and election timeout in ms; defaults 100 and 1000 (etcd's own). */
  heartbeatMs?: number
  electionMs?: number
  /** How long start waits for the members to be healthy; default 20 s. */
  readyTimeoutMs?: number
}

export interface EtcdCredentials {
  /** PEM paths. */
  ca: string
  cert: string
  key: string
}

export interface EtcdCluster {
  /** The namespace the members run in (tb.names.ctl). */
  readonly ns: string
  /** Client URLs, one per member: https://198.51.100.200:2379, :2389, ... */
  readonly endpoints: string[]
  /** The CA certificate (PEM path) that signed the members' and clients' certificates. */
  readonly ca: string
  /** Scratch dir: certificates, data dirs (m0, m1...), logs (m0.log...). */
  readonly dir: string
  /** A client certificate whose CN is `user` (made on first use): etcd's user once auth is on. */
  clientCert(user: string): Promise<EtcdCredentials>
  /** etcdctl in the ctl namespace with `user`'s certificate (default root), against all members or some. */
  etcdctl(args: readonly string[], opts?: {user?: string; endpoints?: readonly string[]; check?: boolean}): Promise<ExecResult>
  /** Whether member i's process runs. */
  running(i: number): boolean
  /** Stop member i (SIGTERM); its data stays. */
  stopMember(i: number): Promise<void>
  /** Start member i again from its data dir and wait until it is healthy (needs a quorum to be up). */
  startMember(i: number): Promise<void>
  stopAll(): Promise<void>
  /** Start every stopped member and wait until all are healthy. */
  startAll(): Promise<void>
  /** Create user root (certificate-only) with the root role and enable auth. */
  enableAuth(): Promise<void>
}

/** Start an etcd cluster in the testbed's ctl namespace and wait until every member is healthy. */
export async function startEtcd(tb: Testbed, opts: EtcdOptions = {}): Promise<EtcdCluster> {
  const ns = tb.names.ctl
  const host = tb.addr.ctl
  if (ns === undefined || host === undefined) throw new Error(`startEtcd: testbed ${tb.id} has no ctl namespace (createTestbed({ctl: true}))`)
  const members = opts.members ?? 3
  if (!Number.isInteger(members) || members < 1 || members > 5) throw new Error(`startEtcd members: an integer 1..5, got ${members}`)
  const dir = join(tb.nsDir(ns), 'etcd')
  if (existsSync(dir)) throw new Error(`startEtcd: testbed ${tb.id} has an etcd cluster already`)
  mkdirSync(dir, {recursive: true})

  const ca = await makeCa(dir)
  const server = await issue(dir, ca, 'member', {server: true, ips: [host, '127.0.0.1']})
  const clientPort = (i: number) => ETCD_CLIENT_PORT + 10 * i
  const peerUrl = (i: number) => `https://${host}:${clientPort(i) + 1}`
  const endpoints = Array.from({length: members}, (_, i) => `https://${host}:${clientPort(i)}`)
  const initialCluster = endpoints.map((_, i) => `m${i}=${peerUrl(i)}`).join(',')
  const children: (ChildProcess | undefined)[] = Array(members).fill(undefined)
  const users = new Map<string, Promise<EtcdCredentials>>()
  const readyTimeoutMs = opts.readyTimeoutMs ?? 20_000

  const clientCert = (user: string): Promise<EtcdCredentials> => {
    if (!/^[A-Za-z0-9_.-]{1,64}$/.test(user)) return Promise.reject(new Error(`etcd user ${JSON.stringify(user)}: use letters, digits, _ . -`))
    let p = users.get(user)
    if (!p) {
      p = issue(dir, ca, `user-${user}`, {cn: user}).then((c) => ({ca: ca.cert, ...c}))
      users.set(user, p)
    }
    return p
  }

  const etcdctl: EtcdCluster['etcdctl'] = async (args, o = {}) => {
    const c = await clientCert(o.user ?? 'root')
    const flags = [`--endpoints=${(o.endpoints ?? endpoints).join(',')}`, `--cacert=${c.ca}`, `--cert=${c.cert}`, `--key=${c.key}`, '--dial-timeout=2s', '--command-timeout=5s']
    return tb.exec(ns, 'etcdctl', [...flags, ...args], {check: o.check, timeoutMs: 30_000, env: {...process.env, ETCDCTL_API: '3'}})
  }

  const spawnMember = (i: number) => {
    const data = join(dir, `m${i}`)
    const args = [
      `--name=m${i}`,
      `--data-dir=${data}`,
      `--listen-client-urls=${endpoints[i]}`,
      `--advertise-client-urls=${endpoints[i]}`,
      `--listen-peer-urls=${peerUrl(i)}`,
      `--initial-advertise-peer-urls=${peerUrl(i)}`,
      `--initial-cluster=${initialCluster}`,
      // The testbed id keeps members of two clusters from ever joining each other.
      `--initial-cluster-token=${tb.id}`,
      '--initial-cluster-state=new',
      `--cert-file=${server.cert}`,
      `--key-file=${server.key}`,
      `--trusted-ca-file=${ca.cert}`,
      '--client-cert-auth',
      `--peer-cert-file=${server.cert}`,
      `--peer-key-file=${server.key}`,
      `--peer-trusted-ca-file=${ca.cert}`,
      '--peer-client-cert-auth',
      `--heartbeat-interval=${opts.heartbeatMs ?? 100}`,
      `--election-timeout=${opts.electionMs ?? 1000}`,
      '--logger=zap',
      `--log-outputs=${join(dir, `m${i}.log`)}`,
    ]
    children[i] = tb.spawn(ns, 'etcd', args, {stdio: 'ignore'})
  }

  const isRunning = (i: number) => {
    const c = children[i]
    return c !== undefined && c.exitCode === null && c.signalCode === null
  }

  const checkIndex = (i: number) => {
    if (!Number.isInteger(i) || i < 0 || i >= members) throw new Error(`etcd member ${i}: this cluster has members 0..${members - 1}`)
  }

  const waitHealthy = async (which: number[]) => {
    const deadline = Date.now() + readyTimeoutMs
    const pending = new Set(which)
    let last = ''
    while (pending.size) {
      for (const i of pending) {
        if (!isRunning(i)) throw new Error(`etcd member m${i} exited; log:\n${logTail(dir, i)}`)
        const r = await etcdctl(['endpoint', 'health'], {endpoints: [endpoints[i]]})
        if (r.code === 0) pending.delete(i)
        else last = r.stderr.trim()
      }
      if (!pending.size) break
      if (Date.now() > deadline) {
        const logs = [...pending].map((i) => `m${i}:\n${logTail(dir, i)}`).join('\n')
        throw new Error(`etcd members ${[...pending].map((i) => `m${i}`).join(', ')} not healthy after ${readyTimeoutMs} ms: ${last}\n${logs}`)
      }
      await new Promise((r) => setTimeout(r, 100))
    }
  }

  const cluster: EtcdCluster = {
    ns,
    endpoints,
    ca: ca.cert,
    dir,
    clientCert,
    etcdctl,
    running: isRunning,
    async stopMember(i) {
      checkIndex(i)
      const c = children[i]
      if (c) await tb.stop(c, 5000)
    },
    async startMember(i) {
      checkIndex(i)
      if (!isRunning(i)) spawnMember(i)
      await waitHealthy([i])
    },
    async stopAll() {
      // One by one: stopped all at once, a leader hangs for seconds handing leadership to a
      // member that is going away too.
      for (const c of children) if (c) await tb.stop(c, 5000)
    },
    async startAll() {
      // All at once: a lone member cannot be healthy until a quorum is up.
      for (let i = 0; i < members; i++) if (!isRunning(i)) spawnMember(i)
      await waitHealthy([...Array(members).keys()])
    },
    async enableAuth() {
      await etcdctl(['user', 'add', 'root', '--no-password'], {check: true})
      await etcdctl(['user', 'grant-role', 'root', 'root'], {check: true})
      await etcdctl(['auth', 'enable'], {check: true})
    },
  }
  await cluster.startAll()
  return cluster
}

function logTail(dir: string, i: number): string {
  try {
    return readFileSync(join(dir, `m${i}.log`), 'utf8').split('\n').slice(-15).join('\n')
  } catch {
    return '(no log)'
  }
}

interface Ca {
  cert: string
  key: string
}

async function openssl(args: readonly string[]): Promise<void> {
  await run('openssl', args, {check: true})
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']

async function makeCa(dir: string): Promise<Ca> {
  const cert = join(dir, 'ca.pem')
  const key = join(dir, 'ca.key')
  await openssl(['req', '-x509', ...EC, '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=agent testbed etcd CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'])
  return {cert, key}
}

/** A certificate signed by the CA: a server (both EKUs, IP SANs) or a client (clientAuth, CN = user). */
async function issue(dir: string, ca: Ca, file: string, o: {server?: boolean; ips?: string[]; cn?: string}): Promise<{cert: string; key: string}> {
  const cert = join(dir, `${file}.pem`)
  const key = join(dir, `${file}.key`)
  const csr = join(dir, `${file}.csr`)
  const ext = join(dir, `${file}.ext`)
  writeFileSync(
    ext,
    [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      `extendedKeyUsage=${o.server ? 'serverAuth,clientAuth' : 'clientAuth'}`,
      ...(o.ips?.length ? [`subjectAltName=${o.ips.map((ip) => `IP:${ip}`).join(',')}`] : []),
    ].join('\n') + '\n',
  )
  await openssl(['req', '-new', ...EC, '-keyout', key, '-out', csr, '-subj', `/CN=${o.cn ?? file}`])
  await openssl(['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-set_serial', `0x${randomSerial()}`, '-days', '2', '-out', cert, '-extfile', ext])
  return {cert, key}
}

function randomSerial(): string {
  return Array.from({length: 16}, () => Math.floor(Math.random() * 16).toString(16)).join('').replace(/^0/, '1')
}

/**
 * Prelude for a script (runScript/spawnScript) that talks to the cluster with the etcd3 client:
 * it defines `arg` (the script's JSON argument) and `etcd`, an Etcd3 client made from
 * `arg.etcd` = etcdClientArg(...).
 */
export const ETCD_SCRIPT_PRELUDE = `
import {readFileSync} from 'node:fs'
import {Etcd3} from 'etcd3'
const arg = JSON.parse(process.argv[1])
const etcd = new Etcd3({
  hosts: arg.etcd.endpoints,
  credentials: {rootCertificate: readFileSync(arg.etcd.ca), certChain: readFileSync(arg.etcd.cert), privateKey: readFileSync(arg.etcd.key)},
  dialTimeout: 3000,
})
`

/** The `etcd` part of a script's argument: endpoints (default all) and `user`'s credentials. */
export async function etcdClientArg(cluster: EtcdCluster, user: string, endpoints: readonly string[] = cluster.endpoints): Promise<{endpoints: string[]} & EtcdCredentials> {
  return {endpoints: [...endpoints], ...(await cluster.clientCert(user))}
}
