/**
 * `--log-format json` with the real binary in namespaces: every line a node and a client write
 * parses as JSON with the stable fields, the control plane's lines carry their events, and a
 * stranger's flood of failed handshakes costs a bounded number of lines plus a count.
 */
import {afterAll, beforeAll, describe, expect, inject, it} from 'vitest'
import {join} from 'node:path'
import {type AgentProcess, type Fleet, createFleet, NODE_PORT, ROOT} from '../../src/testbed/index.js'
import {LOG_LIMIT_LINES} from '../../src/core/log-limit.js'

const ATTACK = join(ROOT, 'dist/testbed/attacks/control-flood.js')

type LogRecord = {time: string; level: string; instance: string | null; role: string | null; event: string; msg: string} & Record<string, unknown>

let fleet: Fleet
let node: AgentProcess

beforeAll(async () => {
  fleet = await createFleet({prefix: 'jlg', clients: 1, publicClients: 1, transport: 'tls', dataDir: inject('agentDataDir')})
  node = await fleet.startNode({args: ['--log-format', 'json']})
})

afterAll(async () => {
  await fleet?.tb.destroy()
})

/** Every line of an agent's output, each of which must be a JSON object with the stable fields. */
function records(output: string, instance: string, role: 'node' | 'client'): LogRecord[] {
  const lines = output.split('\n').filter((l) => l !== '')
  return lines.map((line) => {
    let r: LogRecord
    try {
      r = JSON.parse(line) as LogRecord
    } catch {
      throw new Error(`not a JSON line: ${line}`)
    }
    expect(Object.keys(r).slice(0, 4), line).toEqual(['time', 'level', 'instance', 'role'])
    expect(new Date(r.time).toISOString(), line).toBe(r.time)
    expect(['trace', 'debug', 'info', 'warn', 'error'], line).toContain(r.level)
    expect(r.instance, line).toBe(instance)
    expect(r.role, line).toBe(role)
    expect(r.event, line).toMatch(/^[a-z_]+(\.[a-z_]+)*$/)
    expect(typeof r.msg, line).toBe('string')
    return r
  })
}

/** Run the control-flood tool in the stranger's namespace; resolves with its report. */
function attack(mode: 'fail', seconds: number): Promise<{opened: number; closedByNode: number}> {
  const {tb} = fleet
  const child = tb.spawn(tb.names.publicClient[0], process.execPath, [ATTACK, mode, tb.addr.nodeWan, String(NODE_PORT), '--seconds', String(seconds), '--max', '64'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()))
  child.stderr!.on('data', (b: Buffer) => (out += b.toString()))
  return new Promise((resolve, reject) =>
    child.once('exit', (code) => {
      try {
        if (code !== 0) throw new Error(`control-flood ${mode} exited ${code}: ${out}`)
        resolve(JSON.parse(out.trim().split('\n').pop()!) as {opened: number; closedByNode: number})
      } catch (e) {
        reject(e)
      }
    }),
  )
}

describe('--log-format json', () => {
  it('a node and a client (log.format in its config) write only JSON lines, their events with their fields', async () => {
    const up = records(node.output, 'node1', 'node').find((r) => r.event === 'agent.up')
    expect(up).toMatchObject({level: 'info', transport: 'tls', endpoint: `0.0.0.0:${NODE_PORT}`, interface: 'agtun0', address: '10.99.0.1'})
    expect(up!.msg).toMatch(/^node node1 up: agtun0 10\.99\.0\.1\/24/)

    const alice = await fleet.startClient('alice', 0, {extra: 'log: {format: json}\n'})
    await node.waitFor(/"event":"client\.connected"/)
    const connected = records(node.output, 'node1', 'node').find((r) => r.event === 'client.connected')
    expect(connected).toMatchObject({peer: 'alice', address: '10.99.0.2'})
    expect(connected!.endpoint).toMatch(/^\d+\.\d+\.\d+\.\d+:\d+$/)
    const mine = records(alice.output, 'alice', 'client')
    expect(mine.find((r) => r.event === 'tunnel.up')).toMatchObject({interface: 'agtun0', address: '10.99.0.2', routes: [`${fleet.tb.addr.target}/32`]})
    expect(mine.find((r) => r.event === 'node.connected')).toMatchObject({peer: 'node1', endpoint: `${fleet.tb.addr.nodeWan}:${NODE_PORT}`, address: '10.99.0.2', transport: 'tls'})

    // A reload by signal: its request and its result.
    const mark = node.output.length
    node.child.kill('SIGHUP')
    await node.waitFor(/"event":"reload\.done"/, 10_000, mark)
    expect(records(node.output.slice(mark), 'node1', 'node').map((r) => r.event)).toEqual(['reload.requested', 'reload.done'])

    alice.child.kill('SIGTERM')
    expect(await alice.exited).toBe(0)
    const last = records(alice.output, 'alice', 'client').slice(-2)
    expect(last.map((r) => r.event)).toEqual(['agent.stopping', 'agent.stopped'])
    expect(last[0].signal).toBe('SIGTERM')
    await node.waitFor(/"event":"client\.disconnected"/)
    expect(records(node.output, 'node1', 'node').find((r) => r.event === 'client.disconnected')).toMatchObject({peer: 'alice', address: '10.99.0.2'})
  }, 60_000)

  it('a client the node refuses: the refusal on the node, and the client ends with a JSON error line', async () => {
    const mark = node.output.length
    const mallory = await fleet.startClient('mallory', 0, {ns: fleet.tb.names.publicClient[0], wait: null, args: ['--log-format', 'json']})
    expect(await mallory.exited).toBe(1)
    const said = records(mallory.output, 'mallory', 'client')
    expect(said.at(-1)).toMatchObject({level: 'error', event: 'agent.failed', exit: 1})
    expect(said.at(-1)!.msg).toMatch(/refused us/)
    const refused = records(node.output.slice(mark), 'node1', 'node').find((r) => r.event === 'client.refused')
    expect(refused).toMatchObject({level: 'warn', peer: 'mallory'})
    expect(refused!.reason).toMatch(/mallory/)
  }, 30_000)

  it('a flood of failed handshakes: a bounded number of lines, then one that counts the rest', async () => {
    const mark = node.output.length
    const report = await attack('fail', 3)
    // The stranger really tried: hundreds of handshakes, each refused by the node.
    expect(report.closedByNode).toBeGreaterThan(200)
    // The window ends 10 s after its first line: then the count.
    await node.waitFor(/"event":"handshake\.failed"[^\n]*"suppressed":\d+/, 15_000, mark)
    const lines = records(node.output.slice(mark), 'node1', 'node')
    const failed = lines.filter((r) => r.event === 'handshake.failed')
    const plain = failed.filter((r) => r.suppressed === undefined)
    const counts = failed.filter((r) => r.suppressed !== undefined)
    expect(plain.length).toBeLessThanOrEqual(LOG_LIMIT_LINES * 2) // at most two windows began during 3 s
    for (const r of plain) {
      expect(r).toMatchObject({level: 'warn', reason: expect.any(String)})
      expect(r.endpoint).toMatch(new RegExp(`^${fleet.tb.addr.publicClient[0].replaceAll('.', '\\.')}:\\d+$`))
    }
    expect(counts.length).toBeGreaterThanOrEqual(1)
    for (const r of counts) {
      expect(typeof r.suppressed).toBe('number')
      expect(r.msg).toMatch(/^control handshake: \d+ more line\(s\) suppressed in 10 s$/)
    }
    // A stranger's flood is nearly all counted, not written.
    const total = plain.length + counts.reduce((n, r) => n + (r.suppressed as number), 0)
    expect(total).toBeGreaterThan(200)
    expect(lines.length).toBeLessThan(40)
    console.log(`json logs: ${report.closedByNode} failed handshakes; ${lines.length} lines (${plain.length} handshake.failed, suppressed ${total - plain.length})`)
  }, 30_000)

  it('stops with JSON lines to the last', async () => {
    node.child.kill('SIGTERM')
    expect(await node.exited).toBe(0)
    const all = records(node.output, 'node1', 'node')
    expect(all.slice(-2).map((r) => r.event)).toEqual(['agent.stopping', 'agent.stopped'])
  }, 30_000)
})
