/**
 * The local socket of a running instance (status and reload): who may connect, and what a
 * malformed, oversized or slow request gets.
 */
import {mkdtempSync, rmSync, statSync} from 'node:fs'
import {createConnection, type Server} from 'node:net'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {afterEach, beforeEach, describe, expect, it} from 'vitest'
import {queryStatus, requestReload, startStatusServer, type LocalHandlers} from '../../src/core/status/server.js'
import type {StatusReport} from '../../src/core/status/report.js'

/** Sends raw bytes and resolves with everything the server answered before closing. */
function raw(path: string, bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(path)
    let got = ''
    socket.on('connect', () => socket.write(bytes))
    socket.on('data', (c) => (got += c.toString('utf8')))
    socket.on('close', () => resolve(got))
    socket.on('error', reject)
  })
}

describe('status server', () => {
  let dir: string
  let server: Server | null = null
  const report = {role: 'node', name: 'n1'} as unknown as StatusReport
  const handlers = (reload: LocalHandlers['reload']): LocalHandlers => ({status: () => report, reload})

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), `agent-status-${process.pid}-`))
  })
  afterEach(() => {
    server?.close()
    server = null
    rmSync(dir, {recursive: true, force: true})
  })

  it('makes the socket its owner\'s alone, whatever the umask', async () => {
    const path = join(dir, 'n1.sock')
    const umask = process.umask(0o000)
    try {
      server = await startStatusServer(path, handlers(async () => ({changed: [], effects: []})))
    } finally {
      process.umask(umask)
    }
    expect(statSync(path).mode & 0o777).toBe(0o600)
    expect(await queryStatus(path)).toEqual(report)
  })

  it('answers a reload that takes longer than the request timeout', async () => {
    const path = join(dir, 'n1.sock')
    server = await startStatusServer(
      path,
      handlers(async (config) => {
        await new Promise((r) => setTimeout(r, 300))
        return {changed: ['clients'], effects: [`read ${config}`]}
      }),
      {requestTimeoutMs: 100},
    )
    expect(await requestReload(path, '/etc/agent/n1.yaml')).toEqual({changed: ['clients'], effects: ['read /etc/agent/n1.yaml']})
  })

  it('passes a refused reload\'s reason back to the caller', async () => {
    const path = join(dir, 'n1.sock')
    server = await startStatusServer(path, handlers(async () => Promise.reject(new Error('tunnel.subnet cannot change while the agent runs'))))
    await expect(requestReload(path, undefined)).rejects.toThrow('tunnel.subnet cannot change while the agent runs')
  })

  it('answers malformed requests with an error, and drops an endless or silent one', async () => {
    const path = join(dir, 'n1.sock')
    let reloads = 0
    server = await startStatusServer(
      path,
      handlers(async () => {
        reloads++
        return {changed: [], effects: []}
      }),
      {requestTimeoutMs: 200},
    )
    expect(JSON.parse(await raw(path, 'not json\n'))).toEqual({ok: false, error: 'bad request: not JSON'})
    expect(JSON.parse(await raw(path, '{"op":"shutdown"}\n'))).toEqual({ok: false, error: 'bad request: unknown op "shutdown"'})
    expect(JSON.parse(await raw(path, 'null\n'))).toEqual({ok: false, error: 'bad request: unknown op undefined'})
    expect(await raw(path, 'x'.repeat(10_000))).toBe('') // no newline, past the limit: closed
    expect(await raw(path, '{"op":')).toBe('') // half a request, then silence: closed at the timeout
    expect(reloads).toBe(0)
  })
})
