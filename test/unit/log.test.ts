import {afterEach, describe, expect, it, vi} from 'vitest'
import {createLogger, type LoggerOptions} from '../../src/core/log.js'
import {LogLimiter} from '../../src/core/log-limit.js'

const T = new Date('2026-03-01T12:34:56.789Z')

function capture(o: LoggerOptions = {}) {
  const lines: string[] = []
  const log = createLogger({instance: 'node1', role: 'node', now: () => T, ...o, write: (l) => void lines.push(l)})
  const records = () => lines.map((l) => JSON.parse(l) as Record<string, unknown>)
  return {lines, log, records}
}

describe('text format', () => {
  it('writes the line it always wrote, whatever fields a call site passes', () => {
    const lines: string[] = []
    const log = createLogger('info', 'node1', (l) => void lines.push(l))
    log.info('client alice connected from 192.0.2.1:5000 as 10.8.0.2', {event: 'client.connected', peer: 'alice'})
    log.warn('plain')
    expect(lines[0]).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info  node1: client alice connected from 192\.0\.2\.1:5000 as 10\.8\.0\.2\n$/)
    expect(lines[1]).toMatch(/Z warn  node1: plain\n$/)
  })

  it('is the default of the options form, with the instance as the prefix and children after it', () => {
    const {lines, log} = capture()
    log.child('fleet').child('watch').error('x', {event: 'e'})
    expect(lines).toEqual(['2026-03-01T12:34:56.789Z error node1/fleet/watch: x\n'])
  })
})

describe('json format', () => {
  it('writes one object per line with the stable fields first, then the context', () => {
    const {lines, records, log} = capture({format: 'json'})
    log.info('client alice connected from 192.0.2.1:5000 as 10.8.0.2', {event: 'client.connected', peer: 'alice', endpoint: '192.0.2.1:5000', address: '10.8.0.2'})
    expect(lines).toHaveLength(1)
    expect(lines[0].endsWith('}\n')).toBe(true)
    expect(lines[0].indexOf('\n')).toBe(lines[0].length - 1)
    const [r] = records()
    expect(Object.keys(r)).toEqual(['time', 'level', 'instance', 'role', 'event', 'msg', 'peer', 'endpoint', 'address'])
    expect(r).toEqual({
      time: '2026-03-01T12:34:56.789Z',
      level: 'info',
      instance: 'node1',
      role: 'node',
      event: 'client.connected',
      msg: 'client alice connected from 192.0.2.1:5000 as 10.8.0.2',
      peer: 'alice',
      endpoint: '192.0.2.1:5000',
      address: '10.8.0.2',
    })
  })

  it('says event "log" for a line without one, and null for who before a config is read', () => {
    const {records, log} = capture({format: 'json'})
    log.warn('no event here')
    log.warn('empty event', {event: ''})
    expect(records().map((r) => r.event)).toEqual(['log', 'log'])
    const lines: string[] = []
    createLogger({format: 'json', write: (l) => void lines.push(l)}).error('bad config')
    expect(JSON.parse(lines[0])).toMatchObject({level: 'error', instance: null, role: null, event: 'log', msg: 'bad config'})
  })

  it('never lets context overwrite a stable field, and leaves out undefined ones', () => {
    const {records, log} = capture({format: 'json'})
    log.info('m', {event: 'x.y', time: 'forged', level: 'error', instance: 'other', role: 'client', msg: 'forged', scope: 'forged', reason: undefined, n: 3, ok: false, none: null, names: ['a', 'b']})
    expect(records()[0]).toEqual({time: T.toISOString(), level: 'info', instance: 'node1', role: 'node', event: 'x.y', msg: 'm', n: 3, ok: false, none: null, names: ['a', 'b']})
  })

  it('escapes odd strings so that one event stays one line and parses back to what was said', () => {
    const {lines, records, log} = capture({format: 'json'})
    const odd = [
      'new\nline and\r\nCRLF',
      'quote " backslash \\ tab \t',
      'nul \u0000 bell \u0007 esc \u001b[31m',
      'line sep \u2028 para sep \u2029',
      'lone surrogate \ud800 and emoji 🎮',
      '{"level":"error","forged":true}',
      'não, 中文, Ω',
    ]
    for (const s of odd) log.warn(s, {event: 'client.refused', peer: s, reason: s})
    expect(lines).toHaveLength(odd.length)
    for (const l of lines) {
      expect(l.indexOf('\n')).toBe(l.length - 1)
      expect(l).not.toMatch(/[\u0000-\u001f](?!$)/)
    }
    const back = records()
    odd.forEach((s, i) => {
      // A lone surrogate is written as its \ud800 escape and comes back as itself.
      expect(back[i].msg).toBe(s)
      expect(back[i].peer).toBe(s)
      expect(back[i].level).toBe('warn')
    })
  })

  it('filters by level, and setLevel on any logger of the tree changes them all', () => {
    const {records, log} = capture({format: 'json', level: 'warn'})
    const child = log.child('fleet')
    log.debug('hidden')
    log.info('hidden')
    log.warn('shown 1')
    child.error('shown 2')
    child.setLevel('debug')
    log.debug('shown 3')
    log.trace('hidden')
    child.setLevel('error')
    log.warn('hidden')
    expect(records().map((r) => [r.level, r.msg])).toEqual([
      ['warn', 'shown 1'],
      ['error', 'shown 2'],
      ['debug', 'shown 3'],
    ])
  })

  it('names a child logger in `scope`, the root not at all', () => {
    const {records, log} = capture({format: 'json'})
    log.info('root')
    log.child('fleet').info('child')
    log.child('fleet').child('watch').info('grandchild', {event: 'fleet.etcd.lost'})
    const r = records()
    expect(r[0]).not.toHaveProperty('scope')
    expect(r[1]).toMatchObject({scope: 'fleet', instance: 'node1'})
    expect(r[2]).toMatchObject({scope: 'fleet/watch', event: 'fleet.etcd.lost'})
    expect(Object.keys(r[2]).slice(0, 7)).toEqual(['time', 'level', 'instance', 'role', 'scope', 'event', 'msg'])
  })
})

describe('LogLimiter in json', () => {
  afterEach(() => vi.useRealTimers())

  it("writes the kind's lines with their fields, then a suppression line with its event and a numeric count", () => {
    vi.useFakeTimers()
    const {records, log} = capture({format: 'json'})
    const limiter = new LogLimiter(log, 3, 10_000)
    for (let i = 0; i < 50; i++) limiter.warn('control handshake', `refused TLS handshake from 192.0.2.9:${i}: bad`, {event: 'handshake.failed', endpoint: `192.0.2.9:${i}`, reason: 'bad'})
    limiter.warn('refused client', 'refused client from 192.0.2.9:1: revoked; no forwarding', {event: 'client.refused', reason: 'revoked'})
    limiter.warn('unnamed', 'a kind without an event')
    limiter.warn('unnamed', 'a kind without an event')
    expect(records()).toHaveLength(6)
    vi.advanceTimersByTime(10_000)
    limiter.warn('unnamed', 'again')
    limiter.warn('unnamed', 'again')
    limiter.flush()
    const r = records()
    expect(r.slice(0, 3).map((x) => x.endpoint)).toEqual(['192.0.2.9:0', '192.0.2.9:1', '192.0.2.9:2'])
    expect(r[3]).toMatchObject({event: 'client.refused', reason: 'revoked'})
    const suppressed = r.filter((x) => 'suppressed' in x)
    expect(suppressed).toEqual([
      expect.objectContaining({level: 'warn', event: 'handshake.failed', suppressed: 47, msg: 'control handshake: 47 more line(s) suppressed in 10 s'}),
    ])
    expect(limiter.suppressedTotal).toBe(47)
    // Every occurrence is counted: a plain line is one, a suppression line its count.
    const total = r.filter((x) => x.event === 'handshake.failed').reduce((n, x) => n + (typeof x.suppressed === 'number' ? x.suppressed : 1), 0)
    expect(total).toBe(50)
  })

  it("reports a kind without an event as event 'log'", () => {
    const {records, log} = capture({format: 'json'})
    const limiter = new LogLimiter(log, 1, 60_000)
    limiter.warn('k', 'one')
    limiter.warn('k', 'two')
    limiter.flush()
    expect(records().at(-1)).toMatchObject({event: 'log', suppressed: 1, msg: 'k: 1 more line(s) suppressed in 60 s'})
  })
})
