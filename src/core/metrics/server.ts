/**
 * The HTTP endpoint: GET and HEAD /metrics, nothing else (404 for other paths, 405 for other
 * methods, 400 for what is not HTTP; 403 on loopback for a Host that is not the endpoint's). At most MAX_CONNECTIONS at once (the rest are closed at
 * once), with short timeouts, so a slow or hostile client costs the agent little; whatever goes
 * wrong answers 500 or closes the connection, never takes the agent down.
 *
 * A render runs on the agent's main thread (0.1 to 0.3 s with 10,000 peers and perPeer on), and
 * the endpoint has no authentication: requests that come while one runs share it, and its body
 * answers every request for MIN_RENDER_INTERVAL_MS after it finished, so however fast anyone
 * asks, the main thread renders at most once per interval.
 */
import {createServer, type IncomingMessage, type Server, type ServerResponse} from 'node:http'
import type {Socket} from 'node:net'

export const MAX_CONNECTIONS = 8

/**
 * How long a client may take: to send a request's headers, to send the whole request, and to
 * send the next one on a kept-alive connection; how often the headers and request timeouts are
 * checked. Node checks them every connectionsCheckingInterval (30 s by default: a slow client
 * would hold a connection for 35 s, not 5) and, after a connection's first request, sets its
 * socket's inactivity timeout to server.timeout (0 by default: none): both are set here.
 */
export interface MetricsTimeouts {
  headersMs: number
  requestMs: number
  idleMs: number
  checkEveryMs: number
}

export const METRICS_TIMEOUTS: MetricsTimeouts = {headersMs: 5_000, requestMs: 10_000, idleMs: 5_000, checkEveryMs: 1_000}
/** A rendered body answers every request for this long after its render finished. */
export const MIN_RENDER_INTERVAL_MS = 1_000

export interface Exposition {
  contentType: string
  /** The text of one scrape. */
  render(): Promise<string>
}

export interface MetricsServer {
  /** Where it listens ("127.0.0.1:9469"), the port as bound (0 asked: the one given). */
  readonly endpoint: string
  readonly port: number
  close(): Promise<void>
}

export interface MetricsServerOptions {
  maxConnections?: number
  /** MIN_RENDER_INTERVAL_MS unless given; 0: every request renders (still one at a time). */
  minRenderIntervalMs?: number
  /** METRICS_TIMEOUTS unless given (tests make them short). */
  timeouts?: Partial<MetricsTimeouts>
}

export async function startMetricsServer(address: string, port: number, exposition: Exposition, opts: MetricsServerOptions = {}): Promise<MetricsServer> {
  const shared = {contentType: exposition.contentType, render: sharedRender(() => exposition.render(), opts.minRenderIntervalMs ?? MIN_RENDER_INTERVAL_MS)}
  const t: MetricsTimeouts = {...METRICS_TIMEOUTS, ...opts.timeouts}
  // Set once the port is bound (0 asked: the one given); nothing is answered before that.
  let hostAllowed: (host: string | undefined) => boolean = () => false
  const server: Server = createServer({requestTimeout: t.requestMs, headersTimeout: t.headersMs, keepAliveTimeout: t.idleMs, connectionsCheckingInterval: t.checkEveryMs}, (req, res) => {
    if (!hostAllowed(req.headers.host)) return plain(res, 403, 'forbidden: this endpoint answers to its own address as Host\n')
    void answer(req, res, shared)
  })
  // What a connection's socket timeout becomes after its first request (Node resets it then).
  server.timeout = t.requestMs
  server.maxConnections = opts.maxConnections ?? MAX_CONNECTIONS
  const sockets = new Set<Socket>()
  server.on('connection', (socket: Socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.setTimeout(t.requestMs, () => socket.destroy())
  })
  // Not HTTP, or too large: 400 if the socket can still take it, and close.
  server.on('clientError', (_err, socket: Socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n')
    else socket.destroy()
  })
  await new Promise<void>((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException) => {
      const why = e.code === 'EADDRINUSE' ? 'the address is already in use' : e.code === 'EADDRNOTAVAIL' ? 'no interface has that address' : e.message
      reject(new Error(`metrics: cannot listen on ${address}:${port}: ${why}`))
    }
    server.once('error', onError)
    server.listen({host: address, port, exclusive: true}, () => {
      server.off('error', onError)
      resolve()
    })
  })
  // After listening, an error is the server's alone: say nothing rather than crash.
  server.on('error', () => {})
  server.unref()
  const bound = (server.address() as {port: number}).port
  hostAllowed = hostCheck(address, bound)
  return {
    endpoint: `${address}:${bound}`,
    port: bound,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  }
}

/** 127.0.0.0/8 or ::1. */
export function isLoopback(address: string): boolean {
  return address.startsWith('127.') || address === '::1' || address === 'localhost'
}

/**
 * Which Host headers a request may carry. On loopback, only the endpoint's own names: a web
 * page the user opens cannot make its browser read the metrics by DNS rebinding (its requests
 * carry the attacker's host name). No Host at all (HTTP/1.0) is let through: a browser always
 * sends one. On any other address, any Host: operators scrape by IP or by name.
 */
export function hostCheck(address: string, port: number): (host: string | undefined) => boolean {
  if (!isLoopback(address)) return () => true
  const names = [address.includes(':') ? `[${address}]` : address, 'localhost', '127.0.0.1', '[::1]']
  const allowed = new Set(names.map((n) => `${n}:${port}`))
  if (port === 80) for (const n of names) allowed.add(n)
  return (host) => host === undefined || allowed.has(host.toLowerCase())
}

/**
 * `render` shared: a call while one runs gets that one's body, and a call within
 * `minIntervalMs` of the last success gets its body again. A failure is not kept (the next call
 * renders again). The body is let go when the interval ends (it can be megabytes).
 */
export function sharedRender(render: () => Promise<string>, minIntervalMs: number, now: () => number = () => performance.now()): () => Promise<string> {
  let running: Promise<string> | null = null
  let kept: {body: string; at: number; timer: NodeJS.Timeout} | null = null
  return () => {
    if (kept !== null && now() - kept.at < minIntervalMs) return Promise.resolve(kept.body)
    running ??= Promise.resolve()
      .then(render)
      .then(
        (body) => {
          running = null
          if (kept !== null) clearTimeout(kept.timer)
          kept = null
          if (minIntervalMs > 0) {
            const timer = setTimeout(() => {
              if (kept?.timer === timer) kept = null
            }, minIntervalMs)
            timer.unref()
            kept = {body, at: now(), timer}
          }
          return body
        },
        (e: unknown) => {
          running = null
          throw e
        },
      )
    return running
  }
}

async function answer(req: IncomingMessage, res: ServerResponse, exposition: Exposition): Promise<void> {
  try {
    const path = (req.url ?? '').split('?')[0]
    if (path !== '/metrics') return plain(res, 404, 'not found: the metrics are at /metrics\n')
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD')
      return plain(res, 405, 'method not allowed: GET or HEAD\n')
    }
    const body = await exposition.render()
    res.writeHead(200, {'Content-Type': exposition.contentType, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store'})
    res.end(req.method === 'HEAD' ? undefined : body)
  } catch {
    if (!res.headersSent) plain(res, 500, 'the metrics could not be collected\n')
    else res.destroy()
  }
}

function plain(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, {'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(text)})
  res.end(text)
}
