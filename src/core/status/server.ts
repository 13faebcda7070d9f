/**
 * `agent status` asks a running instance over a Unix socket in the run directory; the answer
 * is one JSON report. Root-only by the directory's permissions, like the rest of /run.
 */
import {createConnection, createServer, type Server} from 'node:net'
import {rmSync} from 'node:fs'
import type {StatusReport} from './report.js'

export async function startStatusServer(path: string, report: () => StatusReport): Promise<Server> {
  rmSync(path, {force: true})
  const server = createServer((socket) => {
    socket.on('error', () => socket.destroy())
    socket.end(JSON.stringify(report()) + '\n')
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(path, () => {
      server.off('error', reject)
      resolve()
    })
  })
  server.unref()
  return server
}

export function queryStatus(path: string, timeoutMs = 3000): Promise<StatusReport> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(path)
    const chunks: Buffer[] = []
    const timer = setTimeout(() => socket.destroy(new Error(`no answer from ${path} within ${timeoutMs} ms`)), timeoutMs)
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('error', (e) => {
      clearTimeout(timer)
      reject(e)
    })
    socket.on('end', () => {
      clearTimeout(timer)
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')) as StatusReport)
      } catch (e) {
        reject(new Error(`bad status answer from ${path}: ${(e as Error).message}`))
      }
    })
  })
}
