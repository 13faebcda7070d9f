/**
 * The metrics endpoint without a network namespace: settings, series names and types, what a
 * scrape reads from the data path's counters, per-peer labels off, the HTTP server's answers,
 * the event counts, and the Grafana dashboard's queries.
 */
import {readFileSync} from 'node:fs'
import {connect, createServer as createTcpServer, type Socket} from 'node:net'
import {request} from 'node:http'
import {join} from 'node:path'
import {afterEach, describe, expect, it} from 'vitest'
import {metricsSettings} from '../../src/core/metrics/settings.js'
import {AgentEvents, AgentMetrics, type ClientMetricsSource} from '../../src/core/metrics/index.js'
import {hostCheck, MAX_CONNECTIONS, sharedRender, startMetricsServer, type MetricsServer} from '../../src/core/metrics/server.js'
import {fakeNodeMetrics} from '../../src/testbed/metrics-fake.js'
import {parseConfig} from '../../src/core/config/index.js'
import {classifyChange, refusedMessage} from '../../src/core/config/live-change.js'
import {resolveConfig} from '../../src/core/config/resolve.js'
import {createLogger} from '../../src/core/log.js'
import {LogLimiter} from '../../src/core/log-limit.js'

const root = join(import.meta.dirname, '../..')

interface Series {
  name: string
  labels: Record<string, string>
  value: number
}

/** The samples of an exposition (text format 0.0.4), and each metric's TYPE. */
function parse(text: string): {series: Series[]; types: Map<string, string>} {
  const series: Series[] = []
  const types = new Map<string, string>()
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line)
    if (type) types.set(type[1], type[2])
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!m) throw new Error(`not a sample line: ${line}`)
    const labels: Record<string, string> = {}
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2]
    series.push({name: m[1], labels, value: Number(m[3])})
  }
  return {series, types}
}

const value = (s: Series[], name: string, labels: Record<string, string> = {}) =>
  s.filter((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v)).reduce((a, x) => a + x.value, 0)

function fakeClient(perPeer: boolean): AgentMetrics {
  const source: ClientMetricsSource = {
    role: 'client',
    transport: 'gre',
    version: '0.0.0-test',
    events: new AgentEvents(),
    datapath: () => null,
    extraDrops: () => ({}),
    sessions: () => 1,
    rtts: () => [
      {node: 'node1', seconds: 0.012, current: true},
      {node: 'node2', seconds: null, current: false},
    ],
    switches: () => 2,
  }
  return new AgentMetrics(source, perPeer)
}

describe('metrics settings', () => {
  it('is off without the key, loopback on the role\'s port with {}', () => {
    expect(metricsSettings(undefined, 'node')).toBeNull()
    expect(metricsSettings({}, 'node')).toEqual({address: '127.0.0.1', port: 9469, perPeer: true, exposed: false})
    expect(metricsSettings({}, 'client')).toEqual({address: '127.0.0.1', port: 9470, perPeer: true, exposed: false})
    expect(metricsSettings({listen: '0.0.0.0:9100', perPeer: false}, 'node')).toEqual({address: '0.0.0.0', port: 9100, perPeer: false, exposed: true})
  })

  it('names the field of a bad listen address', () => {
    expect(() => metricsSettings({listen: '127.0.0.1:0'}, 'node')).toThrow(/metrics\.listen: port 0 must be from 1 to 65535/)
    expect(() => metricsSettings({listen: '300.0.0.1:9469'}, 'node')).toThrow(/metrics\.listen: .* bad IPv4 address/)
  })

  const node = (metrics: string) =>
    resolveConfig(parseConfig(`role: node\nname: n\ntunnel: {subnet: 10.8.0.0/24}\negress: {interface: eth0}\npki: {bundle: n.pem}\n${metrics}`, 'n.yaml'), '/tmp/n.yaml')

  it('keeps metrics absent unless written, and fills perPeer in', () => {
    expect('metrics' in node('')).toBe(false)
    expect(node('metrics: {}\n')).toMatchObject({metrics: {perPeer: true}})
  })

  it('refuses a reload that changes metrics, naming the field', () => {
    const on = node('metrics: {}\n')
    for (const [next, field] of [
      [node('metrics: {perPeer: false}\n'), 'metrics.perPeer'],
      [node('metrics: {listen: 127.0.0.1:9100}\n'), 'metrics.listen'],
      [node(''), 'metrics'],
    ] as const) {
      const {live, refused} = classifyChange(on, next)
      expect(live).toEqual([])
      expect(refused).toEqual([field])
      expect(refusedMessage(refused)).toMatch(new RegExp(`^${field.replace('.', '\\.')} cannot change while the agent runs`))
    }
  })
})

describe('metrics registry', () => {
  it('names series by Prometheus conventions', async () => {
    for (const m of [fakeNodeMetrics(3, true).metrics, fakeClient(true)]) {
      const {types} = parse(await m.render())
      const ours = [...types].filter(([name]) => name.startsWith('agent_'))
      expect(ours.length).toBeGreaterThan(15)
      for (const [name, type] of ours) {
        expect(name).toMatch(/^agent_[a-z0-9_]+$/)
        if (type === 'counter') expect(name, name).toMatch(/_total$/)
        else expect(name, name).not.toMatch(/_total$/)
        // Base units only: seconds and bytes, never ms or kB.
        expect(name).not.toMatch(/_(ms|milliseconds|kb|kib|mb|bits)(_|$)/)
        if (name.includes('bytes')) expect(name).toMatch(/_bytes(_total)?$/)
      }
    }
  })

  it('reads the data path\'s counters at scrape time, and keeps those of peers that left', async () => {
    const f = fakeNodeMetrics(3, true)
    let {series} = parse(await f.metrics.render())
    // Peers 0..2: rx packets 10, 20, 30; tx bytes 2000, 4000, 6000.
    expect(value(series, 'agent_rx_packets_total', {transport: 'gre'})).toBe(60)
    expect(value(series, 'agent_tx_bytes_total')).toBe(12000)
    expect(value(series, 'agent_peer_rx_packets_total', {peer: 'client-1', transport: 'gre'})).toBe(20)
    expect(value(series, 'agent_drops_total', {reason: 'authentication'})).toBe(1)
    expect(value(series, 'agent_drops_total', {reason: 'unknown-session'})).toBe(3)
    expect(value(series, 'agent_sessions')).toBe(3)
    expect(value(series, 'agent_info', {role: 'node', transport: 'gre'})).toBe(1)
    expect(value(series, 'agent_admission_applies_total', {result: 'failed'})).toBe(1)

    // Counts move on the peer (as the data path moves them): the next scrape sees them.
    const [p0, , p2] = f.datapath.peers()
    p0.stats.rxPackets += 5
    f.datapath.removePeer(p2)
    ;({series} = parse(await f.metrics.render()))
    expect(value(series, 'agent_rx_packets_total')).toBe(65)
    expect(value(series, 'agent_peer_rx_packets_total')).toBe(35)
    expect(series.some((s) => s.labels.peer === 'client-2')).toBe(false)
    expect(value(series, 'agent_sessions')).toBe(2)
    // The same numbers as `agent status --json` shows under totals.
    const status = (await import('../../src/core/device/report.js')).totalsReport(f.datapath, f.source.extraDrops())
    expect(status).toEqual({rxPackets: 65, rxBytes: 6000, txPackets: 120, txBytes: 12000, drops: {authentication: 1, 'unknown-session': 3}})
  })

  it('with perPeer off, has no peer label and as many series for 1 peer as for 1,000', async () => {
    const count = async (n: number) => {
      const {series} = parse(await fakeNodeMetrics(n, false).metrics.render())
      expect(series.filter((s) => 'peer' in s.labels)).toEqual([])
      return series.filter((s) => s.name.startsWith('agent_')).map((s) => `${s.name}${JSON.stringify(s.labels)}`).sort()
    }
    const one = await count(1)
    expect(await count(1000)).toEqual(one)
    const on = parse(await fakeNodeMetrics(1000, true).metrics.render()).series
    expect(on.filter((s) => s.name === 'agent_peer_rx_bytes_total')).toHaveLength(1000)
  })

  it('gives a client its RTT to each node it measured, and to the current one', async () => {
    let {series} = parse(await fakeClient(true).render())
    expect(series.filter((s) => s.name === 'agent_peer_rtt_seconds')).toEqual([{name: 'agent_peer_rtt_seconds', labels: {peer: 'node1'}, value: 0.012}])
    expect(value(series, 'agent_rtt_seconds')).toBe(0.012)
    expect(value(series, 'agent_node_switches_total')).toBe(2)
    ;({series} = parse(await fakeClient(false).render()))
    expect(series.some((s) => s.name === 'agent_peer_rtt_seconds')).toBe(false)
    expect(value(series, 'agent_rtt_seconds')).toBe(0.012)
  })
})

describe('event counts', () => {
  it('counts handshakes and revocations whatever the level, rate-limited lines too', () => {
    const events = new AgentEvents()
    const lines: string[] = []
    const log = events.tap(createLogger({level: 'error', write: (l) => lines.push(l)}))
    log.info('client alice connected', {event: 'client.connected'})
    log.child('sub').warn('refused', {event: 'client.refused'})
    log.warn('cutting', {event: 'session.cut', refused: true})
    log.warn('cutting', {event: 'session.cut', refused: false})
    const limited = new LogLimiter(log, 2, 60_000)
    for (let i = 0; i < 5; i++) limited.warn('hs', 'refused TLS handshake', {event: 'handshake.failed'})
    expect(lines).toEqual([])
    expect(events.report()).toEqual({handshakes: {ok: 1, refused: 1, failed: 5}, reloads: {ok: 0, refused: 0}, revocations: 1})
  })

  it("does not count the limiter's suppression line as one more event", () => {
    const events = new AgentEvents()
    const lines: string[] = []
    const log = events.tap(createLogger({level: 'info', format: 'json', write: (l) => lines.push(l)}))
    const limited = new LogLimiter(log, 2, 60_000)
    for (let i = 0; i < 5; i++) limited.warn('hs', 'refused TLS handshake', {event: 'handshake.failed'})
    limited.flush()
    // 2 written, 3 suppressed, then the line that says so (same event, suppressed: 3).
    expect(lines.map((l) => JSON.parse(l) as {event?: string; suppressed?: number}).map((l) => [l.event, l.suppressed])).toEqual([
      ['handshake.failed', undefined],
      ['handshake.failed', undefined],
      ['handshake.failed', 3],
    ])
    expect(events.handshakes.failed).toBe(5)
  })

  it('counts reloads by how they ended', async () => {
    const events = new AgentEvents()
    await events.reload(Promise.resolve(1))
    await events.reload(Promise.reject(new Error('no'))).catch(() => {})
    await Promise.resolve()
    expect(events.reloads).toEqual({ok: 1, refused: 1})
  })
})

describe('metrics server', () => {
  let server: MetricsServer | null = null
  const sockets: Socket[] = []
  afterEach(async () => {
    for (const s of sockets.splice(0)) s.destroy()
    await server?.close()
    server = null
  })

  const http = (method: string, path: string) =>
    new Promise<{status: number; body: string; headers: Record<string, unknown>}>((resolve, reject) => {
      const req = request({host: '127.0.0.1', port: server!.port, method, path, agent: false}, (res) => {
        let body = ''
        res.on('data', (c) => (body += c))
        res.on('end', () => resolve({status: res.statusCode!, body, headers: res.headers}))
      })
      req.on('error', reject)
      req.end()
    })

  const raw = (bytes: string) =>
    new Promise<string>((resolve, reject) => {
      const s = connect(server!.port, '127.0.0.1', () => s.write(bytes))
      let got = ''
      s.on('data', (c) => (got += c))
      s.on('close', () => resolve(got))
      s.on('error', reject)
    })

  it('answers GET and HEAD /metrics only', async () => {
    const f = fakeNodeMetrics(2, true)
    server = await startMetricsServer('127.0.0.1', 0, f.metrics)
    const get = await http('GET', '/metrics')
    expect(get.status).toBe(200)
    expect(get.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/)
    expect(get.body).toMatch(/^agent_rx_packets_total\{transport="gre"\} 30$/m)
    const head = await http('HEAD', '/metrics')
    expect(head.status).toBe(200)
    expect(head.body).toBe('')
    expect(Number(head.headers['content-length'])).toBeGreaterThan(1000)
    expect((await http('GET', '/')).status).toBe(404)
    expect((await http('GET', '/metrics/x')).status).toBe(404)
    const post = await http('POST', '/metrics')
    expect(post.status).toBe(405)
    expect(post.headers.allow).toBe('GET, HEAD')
    expect((await http('DELETE', '/metrics')).status).toBe(405)
    expect(await raw('NOT HTTP AT ALL\r\n\r\n')).toMatch(/^HTTP\/1\.1 400 /)
  })

  it('answers 500, and stays up, when collecting fails', async () => {
    let fail = true
    server = await startMetricsServer('127.0.0.1', 0, {contentType: 'text/plain', render: async () => (fail ? Promise.reject(new Error('x')) : 'ok 1\n')})
    expect((await http('GET', '/metrics')).status).toBe(500)
    fail = false
    expect((await http('GET', '/metrics')).body).toBe('ok 1\n')
  })

  it('renders once for concurrent requests and for repeated ones within the interval', async () => {
    // Count the collections: each render reads the data path once (one snapshot).
    let collects = 0
    const m = fakeClient(true)
    const source = (m as unknown as {source: ClientMetricsSource}).source
    source.datapath = () => {
      collects++
      return null
    }
    server = await startMetricsServer('127.0.0.1', 0, m, {minRenderIntervalMs: 60_000})
    const concurrent = await Promise.all(Array.from({length: 6}, () => http('GET', '/metrics')))
    expect(concurrent.map((r) => r.status)).toEqual(Array(6).fill(200))
    for (let i = 0; i < 5; i++) expect((await http(i % 2 ? 'HEAD' : 'GET', '/metrics')).status).toBe(200)
    expect(collects).toBe(1)
    expect(new Set(concurrent.map((r) => r.body)).size).toBe(1)
  })

  it('shares a render in flight, keeps its body for the interval, and not a failure', async () => {
    let t = 0
    let renders = 0
    let fail = false
    const gates: (() => void)[] = []
    const shared = sharedRender(
      () => {
        renders++
        return new Promise<string>((resolve, reject) => gates.push(() => (fail ? reject(new Error('x')) : resolve(`body ${renders}`))))
      },
      1000,
      () => t,
    )
    const a = shared()
    const b = shared()
    await new Promise((r) => setTimeout(r, 0))
    expect(renders).toBe(1)
    gates.shift()!()
    expect(await a).toBe('body 1')
    expect(await b).toBe('body 1')
    t = 999
    expect(await shared()).toBe('body 1')
    t = 1000
    const c = shared()
    await new Promise((r) => setTimeout(r, 0))
    expect(renders).toBe(2)
    fail = true
    gates.shift()!()
    await expect(c).rejects.toThrow('x')
    fail = false
    const d = shared()
    await new Promise((r) => setTimeout(r, 0))
    expect(renders).toBe(3)
    gates.shift()!()
    expect(await d).toBe('body 3')
  })

  it('closes a client that sends its headers slowly, on a new or a kept-alive connection', async () => {
    server = await startMetricsServer('127.0.0.1', 0, {contentType: 'text/plain', render: async () => 'ok 1\n'}, {timeouts: {headersMs: 400, requestMs: 800, idleMs: 400, checkEveryMs: 100}})
    const host = `Host: 127.0.0.1:${server.port}\r\n`
    // Sends `first` at once, then a header line every 100 ms until closed: how long it lasted.
    const trickle = (first: string) =>
      new Promise<{ms: number; got: string}>((resolve, reject) => {
        const started = Date.now()
        let got = ''
        let timer: NodeJS.Timeout | undefined
        const s = connect(server!.port, '127.0.0.1', () => {
          s.write(first)
          timer = setInterval(() => s.writable && s.write('X-Slow: 1\r\n'), 100)
        })
        sockets.push(s)
        s.on('data', (c) => (got += c))
        s.on('error', () => {})
        s.on('close', () => {
          clearInterval(timer)
          resolve({ms: Date.now() - started, got})
        })
        setTimeout(() => reject(new Error('still open after 4 s')), 4000).unref()
      })
    const fresh = await trickle(`GET /metrics HTTP/1.1\r\n${host}`)
    expect(fresh.ms).toBeLessThan(2000)
    const kept = await trickle(`GET /metrics HTTP/1.1\r\n${host}\r\nGET /metrics HTTP/1.1\r\n${host}`)
    expect(kept.got).toMatch(/^HTTP\/1\.1 200 /)
    expect(kept.ms).toBeLessThan(2000)
  })

  it('on loopback, answers only to its own Host (no DNS rebinding); elsewhere to any', async () => {
    server = await startMetricsServer('127.0.0.2', 0, {contentType: 'text/plain', render: async () => 'ok 1\n'})
    const port = server.port
    const get = (host: string | null, version = '1.1') =>
      new Promise<string>((resolve, reject) => {
        const s = connect(port, '127.0.0.2', () => s.write(`GET /metrics HTTP/${version}\r\n${host === null ? '' : `Host: ${host}\r\n`}Connection: close\r\n\r\n`))
        let got = ''
        s.on('data', (c) => (got += c))
        s.on('close', () => resolve(got.split('\r\n')[0]))
        s.on('error', reject)
      })
    for (const host of [`127.0.0.2:${port}`, `localhost:${port}`, `LocalHost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`]) expect(await get(host), host).toBe('HTTP/1.1 200 OK')
    for (const host of [`attacker.example:${port}`, 'attacker.example', `localhost:${port + 1}`, '127.0.0.2', `127.0.0.2.nip.io:${port}`]) expect(await get(host), host).toBe('HTTP/1.1 403 Forbidden')
    // HTTP/1.0 without Host: not what a browser sends.
    expect(await get(null, '1.0')).toBe('HTTP/1.1 200 OK')
    expect(hostCheck('0.0.0.0', 9469)('attacker.example:9469')).toBe(true)
    expect(hostCheck('10.0.0.5', 9469)('prometheus-target.lan')).toBe(true)
    expect(hostCheck('127.0.0.1', 80)('localhost')).toBe(true)
  })

  it(`holds at most ${MAX_CONNECTIONS} connections at once`, async () => {
    server = await startMetricsServer('127.0.0.1', 0, fakeNodeMetrics(1, true).metrics)
    const open = (): Promise<Socket> =>
      new Promise((resolve, reject) => {
        const s = connect(server!.port, '127.0.0.1', () => resolve(s))
        s.on('error', reject)
        sockets.push(s)
      })
    for (let i = 0; i < MAX_CONNECTIONS; i++) await open()
    await new Promise((r) => setTimeout(r, 100))
    const extra = await open()
    const closed = await new Promise<boolean>((resolve) => {
      extra.on('close', () => resolve(true))
      setTimeout(() => resolve(false), 2000)
    })
    expect(closed).toBe(true)
    for (const s of sockets.splice(0)) s.destroy()
    await new Promise((r) => setTimeout(r, 100))
    expect((await http('GET', '/metrics')).status).toBe(200)
  })

  it('fails to start, naming the address, when the port is taken', async () => {
    const taken = createTcpServer()
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r))
    const port = (taken.address() as {port: number}).port
    try {
      await expect(startMetricsServer('127.0.0.1', port, fakeNodeMetrics(1, true).metrics)).rejects.toThrow(`metrics: cannot listen on 127.0.0.1:${port}: the address is already in use`)
    } finally {
      taken.close()
    }
  })
})

describe('AgentMetrics lifecycle', () => {
  const freePort = async (): Promise<number> => {
    const t = createTcpServer()
    await new Promise<void>((r) => t.listen(0, '127.0.0.1', r))
    const port = (t.address() as {port: number}).port
    await new Promise<void>((r) => t.close(() => r()))
    return port
  }
  const refused = (port: number) =>
    new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1')
      s.on('connect', () => {
        s.destroy()
        resolve(false)
      })
      s.on('error', () => resolve(true))
    })
  const quiet = createLogger('error', 'test', () => {})

  it('closes the port when close() comes while listen() is still starting', async () => {
    const port = await freePort()
    const m = fakeClient(true)
    const listening = m.listen({address: '127.0.0.1', port, perPeer: true, exposed: false}, quiet)
    const closing = m.close()
    await expect(listening).rejects.toThrow(/closed before the endpoint started/)
    await closing
    expect(await refused(port)).toBe(true)
    // And a listen() after close() does not open it either.
    await expect(m.listen({address: '127.0.0.1', port, perPeer: true, exposed: false}, quiet)).rejects.toThrow(/closed/)
    expect(await refused(port)).toBe(true)
  })
})

describe('Grafana dashboard', () => {
  it('queries only series the agent serves', async () => {
    const dashboard = JSON.parse(readFileSync(join(root, 'docs/grafana/agent-dashboard.json'), 'utf8')) as {panels: {title: string; targets?: {expr: string}[]}[]}
    const served = new Set<string>()
    for (const m of [fakeNodeMetrics(2, true).metrics, fakeClient(true)]) {
      for (const [name, type] of parse(await m.render()).types) {
        served.add(name)
        if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) served.add(name + s)
      }
    }
    const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => ({title: p.title, expr: t.expr})))
    expect(exprs.length).toBeGreaterThan(10)
    const functions = new Set(['sum', 'rate', 'irate', 'increase', 'by', 'without', 'topk', 'max', 'min', 'avg', 'on', 'count', 'histogram_quantile', 'le', 'delta', 'deriv', 'label_replace', 'clamp_min', 'or', 'and', 'unless', 'ignoring', 'group_left'])
    for (const {title, expr} of exprs) {
      // Metric names: identifiers outside {...} and [...], not PromQL's own words or label names after by/without.
      const bare = expr.replace(/\{[^}]*\}/g, '').replace(/\[[^\]]*\]/g, '').replace(/\b(by|without)\s*\([^)]*\)/g, '').replace(/"[^"]*"/g, '')
      const names = [...bare.matchAll(/(?<![0-9.])[a-zA-Z_:][a-zA-Z0-9_:]*/g)].map((m) => m[0]).filter((n) => !functions.has(n))
      expect(names.length, `${title}: ${expr}`).toBeGreaterThan(0)
      for (const n of names) expect(served.has(n), `${title}: ${expr} uses ${n}, which the agent does not serve`).toBe(true)
    }
  })
})
