/**
 * The service manager's notifications (src/core/service/notify.ts): what ServiceNotifier says
 * and when, through a fake sink; runInForeground's calls with a fake agent and fake signals
 * (READY only once start() resolved, RELOADING/READY around a SIGHUP reload and a reload through
 * the status socket, STOPPING at a stop); and the addon's sender (native/notify.c) delivering
 * real datagrams to a path socket and an abstract one, and refusing bad addresses.
 */
import {spawn, spawnSync} from 'node:child_process'
import {EventEmitter} from 'node:events'
import {mkdtempSync, rmSync} from 'node:fs'
import {constants as osConstants, tmpdir} from 'node:os'
import {join, resolve} from 'node:path'
import {afterAll, describe, expect, it} from 'vitest'
import {runInForeground, type RunningAgent} from '../../src/core/lifecycle.js'
import {loadAgentNative} from '../../src/core/native/addon.js'
import {nativeSink, ServiceNotifier} from '../../src/core/service/notify.js'
import {requestReload, startStatusServer} from '../../src/core/status/server.js'
import {listenNotify} from '../helpers/notify-listener.js'

/** The addon as built (build/Release), for a child process to load. */
const ADDON = resolve(import.meta.dirname, '../../build/Release/agent_native.node')
const dir = mkdtempSync(join(tmpdir(), `agent-notify-${process.pid}-`))
afterAll(() => rmSync(dir, {recursive: true, force: true}))

function silentLog() {
  const lines: string[] = []
  const at = (level: string) => (msg: string) => void lines.push(`${level} ${msg}`)
  const log = {trace: at('trace'), debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), child: () => log, setLevel: () => {}}
  return {log, lines}
}

/** A notifier writing into an array, with a fixed monotonic clock. */
function fake(opts: {watchdogUsec?: number; fail?: boolean} = {}) {
  const sent: string[] = []
  const timers: {fn: () => void; ms: number; cleared: boolean}[] = []
  const {log, lines} = silentLog()
  const n = new ServiceNotifier(
    (m) => {
      if (opts.fail) throw new Error('ECONNREFUSED')
      sent.push(m)
    },
    {
      watchdogUsec: opts.watchdogUsec,
      log,
      monotonicUsec: () => 123456789n,
      setInterval: (fn, ms) => {
        const t = {fn, ms, cleared: false}
        timers.push(t)
        return t as {unref?: () => unknown}
      },
      clearInterval: (t) => void ((t as {cleared: boolean}).cleared = true),
    },
  )
  return {n, sent, timers, lines}
}

describe('ServiceNotifier', () => {
  it('says READY, RELOADING with the monotonic time then READY, and STOPPING last', () => {
    const {n, sent} = fake()
    n.ready()
    n.reloading()
    n.reloaded()
    n.status('2 clients')
    n.stopping()
    n.ready()
    n.reloading()
    n.status('after')
    expect(sent).toEqual([
      'READY=1\nSTATUS=running',
      'RELOADING=1\nMONOTONIC_USEC=123456789\nSTATUS=reloading the config',
      'READY=1\nSTATUS=running',
      'STATUS=2 clients',
      'STOPPING=1\nSTATUS=stopping',
    ])
  })

  it('overlapping reloads say RELOADING once and READY after the last', () => {
    const {n, sent} = fake()
    n.ready()
    n.reloading()
    n.reloading()
    n.reloaded()
    expect(sent).toHaveLength(2)
    n.reloaded()
    n.reloaded() // one too many: ignored
    expect(sent.map((m) => m.split('\n')[0])).toEqual(['READY=1', 'RELOADING=1', 'READY=1'])
  })

  it('a reload before ready() says neither RELOADING nor READY; ready() alone says READY', () => {
    const {n, sent} = fake()
    n.reloading()
    n.reloaded()
    expect(sent).toEqual([])
    // One begun while starting, ending after a later one began: READY once, after both.
    n.reloading()
    n.ready()
    n.reloading()
    n.reloaded()
    expect(sent.map((m) => m.split('\n')[0])).toEqual(['READY=1', 'RELOADING=1'])
    n.reloaded()
    expect(sent.map((m) => m.split('\n')[0])).toEqual(['READY=1', 'RELOADING=1', 'READY=1'])
  })

  it('keeps STATUS on one line', () => {
    const {n, sent} = fake()
    n.status('a\nREADY=1')
    expect(sent).toEqual(['STATUS=a READY=1'])
  })

  it('pings the watchdog at half of WATCHDOG_USEC, and stops at STOPPING', () => {
    const {n, sent, timers} = fake({watchdogUsec: 10_000_000})
    expect(timers).toHaveLength(1)
    expect(timers[0].ms).toBe(5000)
    timers[0].fn()
    expect(sent).toEqual(['WATCHDOG=1'])
    n.stopping()
    expect(timers[0].cleared).toBe(true)
  })

  it('caps the watchdog interval at the longest delay Node timers hold (2^31-1 ms)', () => {
    const {timers} = fake({watchdogUsec: 10_000_000_000_000}) // half: 5e9 ms, which Node would run every 1 ms
    expect(timers[0].ms).toBe(2 ** 31 - 1)
    expect(fake({watchdogUsec: 4_294_967_294_000}).timers[0].ms).toBe(2 ** 31 - 1)
    expect(fake({watchdogUsec: 1000}).timers[0].ms).toBe(10)
  })

  it('a full queue (EAGAIN) is logged once per reason, never thrown, and does not hide another failure', () => {
    const {log, lines} = silentLog()
    const failures = [11, 11, 11, 111, 111]
    const n = new ServiceNotifier(() => {
      const errno = failures.shift() ?? 11
      throw Object.assign(new Error(errno === 11 ? 'notify /run/systemd/notify: Resource temporarily unavailable' : 'notify /run/systemd/notify: Connection refused'), {errno})
    }, {log})
    n.ready()
    n.status('a')
    n.status('b')
    n.status('c')
    n.status('d')
    n.stopping()
    expect(lines).toEqual([
      'warn cannot notify the service manager: notify /run/systemd/notify: Resource temporarily unavailable',
      'warn cannot notify the service manager: notify /run/systemd/notify: Connection refused',
    ])
  })

  it('a sink that fails is logged once and never throws', () => {
    const {n, lines} = fake({fail: true})
    n.ready()
    n.reloading()
    n.stopping()
    expect(lines).toEqual(['warn cannot notify the service manager: ECONNREFUSED'])
  })

  it('fromEnv: none without NOTIFY_SOCKET; takes the variables out of the environment; WATCHDOG_PID must be ours', () => {
    expect(ServiceNotifier.fromEnv({env: {}})).toBeUndefined()
    const env: NodeJS.ProcessEnv = {NOTIFY_SOCKET: '/run/systemd/notify', WATCHDOG_USEC: '4000000', WATCHDOG_PID: String(process.pid), PATH: '/bin'}
    const sent: string[] = []
    const n = ServiceNotifier.fromEnv({env, sink: (m) => sent.push(m)})
    expect(n).toBeDefined()
    expect(env).toEqual({PATH: '/bin'})
    n!.ready()
    n!.close()
    expect(sent).toEqual(['READY=1\nSTATUS=running'])
    // Another process's watchdog: no pings from us (the fake timers would show one).
    const other = ServiceNotifier.fromEnv({env: {NOTIFY_SOCKET: '@x', WATCHDOG_USEC: '1000', WATCHDOG_PID: '1'}, sink: () => {}, setInterval: () => expect.fail('no watchdog expected')})
    expect(other).toBeDefined()
  })
})

/** A fake agent whose start() the test resolves. */
function agent() {
  let started!: () => void
  const a: RunningAgent & {reloads: number; release: () => void} = {
    reloads: 0,
    start: () => new Promise<void>((r) => (started = r)),
    stop: async () => [],
    reload: async () => {
      a.reloads++
      return {changed: ['clients'], effects: []}
    },
    release: () => started(),
  }
  return a
}

const tick = () => new Promise((r) => setTimeout(r, 20))

describe('runInForeground with a notifier', () => {
  it('READY only after start() resolved; RELOADING/READY on SIGHUP; STOPPING at SIGTERM', async () => {
    const {n, sent} = fake()
    const signals = new EventEmitter()
    const a = agent()
    const run = runInForeground(a, silentLog().log, signals as never, n)
    await tick()
    expect(sent).toEqual([]) // still starting: not ready
    a.release()
    await tick()
    expect(sent).toEqual(['READY=1\nSTATUS=running'])
    signals.emit('SIGHUP', 'SIGHUP')
    await tick()
    expect(a.reloads).toBe(1)
    expect(sent.slice(1).map((m) => m.split('\n')[0])).toEqual(['RELOADING=1', 'READY=1'])
    signals.emit('SIGTERM', 'SIGTERM')
    expect(await run).toBe(0)
    expect(sent.at(-1)).toBe('STOPPING=1\nSTATUS=stopping')
    expect(sent).toHaveLength(4)
  })

  it('a reload through the status socket (`agent reload`): RELOADING, then READY before the answer', async () => {
    const {n, sent} = fake()
    const signals = new EventEmitter()
    const a = agent()
    const socket = join(dir, 'status.sock')
    let readyBeforeAnswer = false
    const server = await startStatusServer(socket, {
      status: () => ({}) as never,
      reload: async () => {
        await a.reload!()
        return {changed: [], effects: []}
      },
      // As the node and client agents wire it: whoever runInForeground set on the agent.
      reloadObserver: () => a.reloadObserver,
    })
    try {
      const run = runInForeground(a, silentLog().log, signals as never, n)
      a.release()
      await tick()
      await requestReload(socket, undefined).then(() => (readyBeforeAnswer = sent.at(-1)?.startsWith('READY=1') ?? false))
      expect(sent.map((m) => m.split('\n')[0])).toEqual(['READY=1', 'RELOADING=1', 'READY=1'])
      expect(readyBeforeAnswer).toBe(true)
      signals.emit('SIGINT', 'SIGINT')
      expect(await run).toBe(0)
      // Once the agent is done, the socket's reloads no longer reach its notifier.
      await requestReload(socket, undefined)
      expect(sent.map((m) => m.split('\n')[0])).toEqual(['READY=1', 'RELOADING=1', 'READY=1', 'STOPPING=1'])
    } finally {
      server.close()
    }
  })

  it('a SIGHUP reload while start() runs: no READY until start() resolved', async () => {
    const {n, sent} = fake()
    const signals = new EventEmitter()
    const a = agent()
    const run = runInForeground(a, silentLog().log, signals as never, n)
    await tick()
    signals.emit('SIGHUP', 'SIGHUP')
    await tick()
    expect(a.reloads).toBe(1)
    expect(sent).toEqual([]) // the reload ended, but the agent does not serve yet
    a.release()
    await tick()
    expect(sent).toEqual(['READY=1\nSTATUS=running'])
    signals.emit('SIGTERM', 'SIGTERM')
    expect(await run).toBe(0)
  })

  it('a signal before start() resolved: STOPPING, never READY', async () => {
    const {n, sent} = fake()
    const signals = new EventEmitter()
    const a = agent()
    const run = runInForeground(a, silentLog().log, signals as never, n)
    await tick()
    signals.emit('SIGTERM', 'SIGTERM')
    expect(await run).toBe(0)
    expect(sent).toEqual(['STOPPING=1\nSTATUS=stopping'])
  })
})

describe('the native sender (native/notify.c)', () => {
  it('delivers to a path socket and to an abstract one', async () => {
    for (const address of [join(dir, 'notify.sock'), `@agent-notify-test-${process.pid}`]) {
      const listener = await listenNotify(address)
      try {
        nativeSink(address)('READY=1\nSTATUS=up')
        nativeSink(address)('STOPPING=1')
        await listener.waitFor((m) => m === 'STOPPING=1')
        expect(listener.messages).toEqual(['READY=1\nSTATUS=up', 'STOPPING=1'])
        expect(listener.senders).toEqual([process.pid, process.pid])
      } finally {
        await listener.close()
      }
    }
  })

  it('never blocks on a full queue: EAGAIN, returned as a failed send', async () => {
    // A receiver that never reads (PID 1 busy): its queue fills. A blocking sendto would hang
    // the sender, so it runs in a child with a timeout.
    const address = join(dir, 'full.sock')
    const receiver = spawn('python3', ['-c', `import socket,sys\ns=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\ns.bind(sys.argv[1])\nprint("up", flush=True)\nsys.stdin.read()`, address], {stdio: ['pipe', 'pipe', 'inherit']})
    try {
      await new Promise((r) => receiver.stdout.once('data', r))
      const sender = `const {notify} = require(${JSON.stringify(ADDON)})
for (let i = 0; i < 100000; i++) {
  try { notify(${JSON.stringify(address)}, 'WATCHDOG=1') } catch (e) { console.log(JSON.stringify({i, errno: e.errno, code: e.code, message: e.message})); process.exit(0) }
}
console.log('{}')`
      const r = spawnSync(process.execPath, ['-e', sender], {encoding: 'utf8', timeout: 10_000})
      expect(r.signal, 'the send blocked').toBeNull()
      const out = JSON.parse(r.stdout) as {i?: number; errno?: number; code?: string; message?: string}
      expect(out.i).toBeGreaterThan(0)
      expect(out).toMatchObject({errno: osConstants.errno.EAGAIN, code: 'ERR_AGENT_NOTIFY'})
      expect(out.message).toMatch(/Resource temporarily unavailable/)
    } finally {
      receiver.stdin.end()
      receiver.kill()
    }
  }, 20_000)

  it('refuses what it cannot send, with the reason', () => {
    const notify = loadAgentNative().notify!
    expect(() => notify(join(dir, 'nobody-listens.sock'), 'READY=1')).toThrow(/No such file or directory|Connection refused/)
    expect(() => notify(`/${'a'.repeat(107)}`, 'READY=1')).toThrow(/File name too long/)
    expect(() => notify(`/${'a'.repeat(300)}`, 'READY=1')).toThrow(/socketPath is too long/)
    expect(() => notify(`@${'a'.repeat(108)}`, 'READY=1')).toThrow(/File name too long/)
    expect(() => notify('relative.sock', 'READY=1')).toThrow(/Address family not supported/)
    expect(() => notify('', 'READY=1')).toThrow(/Invalid argument/)
    expect(() => notify('/x\0y', 'READY=1')).toThrow(/Invalid argument/)
    expect(() => notify(join(dir, 'x.sock'), 'x'.repeat(5000))).toThrow(/message is too long/)
    expect(() => notify(join(dir, 'x.sock'), '')).toThrow(/Invalid argument/)
    expect(() => (notify as unknown as (a: unknown, b: unknown) => void)(1, 'x')).toThrow(/socketPath/)
    expect(() => (notify as unknown as (a: unknown) => void)('/x')).toThrow(/notify\(socketPath, message\)/)
  })
})
