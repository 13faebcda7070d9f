/**
 * A running instance's local socket, in the run directory: `agent status` asks it for one JSON
 * report, `agent reload` asks it to re-read a config file and answers with what changed or
 * why nothing did. A reload can change who may connect, so the socket is its owner's alone
 * (mode 0600, from the moment it exists), whatever the umask.
 *
 * One request per connection: a JSON line {"op": "status"} or {"op": "reload", "config": path},
 * answered by one JSON line.
 */
import {createConnection, createServer, type Server} from 'node:net'
import {chmodSync, rmSync} from 'node:fs'
import type {StatusReport} from './report.js'

/** What a reload did: the fields it applied, and a line per effect (clients cut, routes added...). */
export interface ReloadResult {
  changed: string[]
  effects: string[]
}

/** Told before and after a reload (a service manager's notifier: RELOADING, then READY). */
export interface ReloadObserver {
  begin(): void
  end(): void
}

export interface LocalHandlers {
  status(): StatusReport
  /** Re-reads `config` (or the file the instance runs from); rejects, changing nothing, if it cannot. */
  reload(config?: string): Promise<ReloadResult>
  /** Who is told around each reload this socket runs, asked each time (it may be set later). */
  reloadObserver?(): ReloadObserver | undefined
}

type Request = {op: 'status'} | {op: 'reload'; config?: string}
type ReloadAnswer = {ok: true; result: ReloadResult} | {ok: false; error: string}

/** A request line longer than this is not ours. */
const MAX_REQUEST = 4096
const REQUEST_TIMEOUT_MS = 5_000

export async function startStatusServer(path: string, handlers: LocalHandlers, opts: {requestTimeoutMs?: number} = {}): Promise<Server> {
  rmSync(path, {force: true})
  const server = createServer((socket) => {
    socket.on('error', () => socket.destroy())
    // A peer that connects and says nothing (or never a whole line) is let go.
    socket.setTimeout(opts.requestTimeoutMs ?? REQUEST_TIMEOUT_MS, () => socket.destroy())
    let text = ''
    const onData = (chunk: Buffer) => {
      text += chunk.toString('utf8')
      const end = text.indexOf('\n')
      if (end < 0) {
        if (text.length > MAX_REQUEST) socket.destroy()
        return
      }
      socket.off('data', onData)
      // Read: what is left is the node's work (a reload may take a while), not the peer's.
      socket.setTimeout(0)
      void answer(text.slice(0, end), handlers).then((reply) => socket.end(JSON.stringify(reply) + '\n'))
    }
    socket.on('data', onData)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    // The socket file is created by the bind inside listen(), synchronously: the umask set
    // around it makes it 0600 from the start, with no moment when others could connect.
    const umask = process.umask(0o177)
    try {
      server.listen(path, () => {
        server.off('error', reject)
        resolve()
      })
    } finally {
      process.umask(umask)
    }
  })
  chmodSync(path, 0o600)
  server.unref()
  return server
}

async function answer(line: string, handlers: LocalHandlers): Promise<StatusReport | ReloadAnswer | {ok: false; error: string}> {
  let request: Request
  try {
    request = JSON.parse(line) as Request
  } catch {
    return {ok: false, error: 'bad request: not JSON'}
  }
  if (request?.op === 'status') return handlers.status()
  if (request?.op === 'reload') {
    const observer = handlers.reloadObserver?.()
    observer?.begin()
    try {
      return {ok: true, result: await handlers.reload(typeof request.config === 'string' ? request.config : undefined)}
    } catch (e) {
      return {ok: false, error: (e as Error).message}
    } finally {
      observer?.end()
    }
  }
  return {ok: false, error: `bad request: unknown op ${JSON.stringify((request as {op?: unknown})?.op)}`}
}

function ask(path: string, request: Request, timeoutMs: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(path)
    const chunks: Buffer[] = []
    const timer = setTimeout(() => socket.destroy(new Error(`no answer from ${path} within ${timeoutMs} ms`)), timeoutMs)
    socket.on('connect', () => socket.write(JSON.stringify(request) + '\n'))
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('error', (e) => {
      clearTimeout(timer)
      reject(e)
    })
    socket.on('end', () => {
      clearTimeout(timer)
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')))
      } catch (e) {
        reject(new Error(`bad answer from ${path}: ${(e as Error).message}`))
      }
    })
  })
}

export async function queryStatus(path: string, timeoutMs = 3000): Promise<StatusReport> {
  return (await ask(path, {op: 'status'}, timeoutMs)) as StatusReport
}

/** Asks the instance to reload; rejects with its refusal. */
export async function requestReload(path: string, config: string | undefined, timeoutMs = 30_000): Promise<ReloadResult> {
  const reply = (await ask(path, {op: 'reload', ...(config === undefined ? {} : {config})}, timeoutMs)) as ReloadAnswer
  if (!reply.ok) throw new Error(reply.error)
  return reply.result
}
