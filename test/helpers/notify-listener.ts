/**
 * A stand-in for systemd's notification socket: a unix datagram socket that records every
 * message sent to it, as $NOTIFY_SOCKET for an agent under test. Node.js cannot bind unix
 * datagram sockets, so a small python3 process does (setup.sh installs python3); it prints one
 * JSON line per datagram and ends when its stdin closes, so it never outlives the test.
 */
import {type ChildProcess, spawn} from 'node:child_process'
import {existsSync} from 'node:fs'

const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3'

const SCRIPT = String.raw`
import json, os, select, socket, struct, sys
addr = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
# As systemd does: the kernel attaches the sender's pid, which NotifyAccess=main checks.
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
s.bind("\0" + addr[1:] if addr.startswith("@") else addr)
print(json.dumps({"listening": addr}), flush=True)
while True:
    ready, _, _ = select.select([s, sys.stdin], [], [])
    if s in ready:
        data, anc, _, _ = s.recvmsg(65536, socket.CMSG_SPACE(12))
        pid = None
        for level, kind, value in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", value[:12])[0]
        print(json.dumps({"message": data.decode("utf-8", "replace"), "pid": pid}), flush=True)
    if sys.stdin in ready and os.read(sys.stdin.fileno(), 4096) == b"":
        break
`

export interface NotifyListener {
  /** The address to put in NOTIFY_SOCKET: "/path" or "@abstract". */
  readonly address: string
  /** Every datagram received so far, in order. */
  readonly messages: string[]
  /** The sender's pid of each message (SCM_CREDENTIALS), as systemd sees it. */
  readonly senders: (number | null)[]
  /** Waits until a message (from index `from` on) satisfies `match`; returns its index. */
  waitFor(match: (message: string) => boolean, timeoutMs?: number, from?: number): Promise<number>
  close(): Promise<void>
}

/**
 * Listens at `address` ("/path" or "@name"). `spawnIn` runs the listener elsewhere (inside a
 * network namespace, where abstract sockets live): given the command and its arguments.
 */
export async function listenNotify(address: string, spawnIn?: (cmd: string, args: string[]) => ChildProcess): Promise<NotifyListener> {
  const child = spawnIn ? spawnIn(PYTHON, ['-c', SCRIPT, address]) : spawn(PYTHON, ['-c', SCRIPT, address], {stdio: ['pipe', 'pipe', 'pipe']})
  const messages: string[] = []
  const senders: (number | null)[] = []
  let stderr = ''
  let buffered = ''
  let listening!: () => void
  const up = new Promise<void>((resolve) => (listening = resolve))
  child.stderr?.on('data', (b: Buffer) => (stderr += b.toString()))
  child.stdout?.on('data', (b: Buffer) => {
    buffered += b.toString()
    let nl: number
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = JSON.parse(buffered.slice(0, nl)) as {listening?: string; message?: string; pid?: number | null}
      buffered = buffered.slice(nl + 1)
      if (line.listening !== undefined) listening()
      if (line.message !== undefined) {
        messages.push(line.message)
        senders.push(line.pid ?? null)
      }
    }
  })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const early = exited.then(() => {
    throw new Error(`notify listener at ${address} exited: ${stderr}`)
  })
  await Promise.race([up, early])
  early.catch(() => {})
  return {
    address,
    messages,
    senders,
    async waitFor(match, timeoutMs = 20_000, from = 0) {
      const deadline = Date.now() + timeoutMs
      for (;;) {
        const i = messages.findIndex((m, k) => k >= from && match(m))
        if (i >= 0) return i
        if (child.exitCode !== null || child.signalCode !== null) throw new Error(`notify listener exited; got ${JSON.stringify(messages)}; ${stderr}`)
        if (Date.now() > deadline) throw new Error(`timed out waiting for a notification; got ${JSON.stringify(messages)}`)
        await new Promise((r) => setTimeout(r, 20))
      }
    },
    async close() {
      if (child.exitCode === null && child.signalCode === null) {
        child.stdin?.end()
        const timer = setTimeout(() => child.kill('SIGKILL'), 2000)
        await exited
        clearTimeout(timer)
      }
    },
  }
}
