/**
 * Helpers for long-running processes in namespaces: wait until one says it is ready, stop one
 * politely and then firmly.
 */
import type {ChildProcess} from 'node:child_process'

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null
}

/**
 * Resolve with the first match of `pattern` in the child's stdout or stderr (each read as a
 * running text, so a match split across chunks is still found). Rejects when the child exits
 * first or after timeoutMs, with the output so far in the message to show why.
 */
export function waitForOutput(child: ChildProcess, pattern: RegExp, timeoutMs = 15_000): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    let seen = ''
    const onData = (b: Buffer | string) => {
      seen += b.toString()
      const m = pattern.exec(seen)
      if (m) finish(() => resolve(m))
      else if (seen.length > 1_000_000) seen = seen.slice(-100_000)
    }
    const onExit = (code: number | null, sig: NodeJS.Signals | null) =>
      finish(() => reject(new Error(`process ${child.pid} exited (${code ?? sig}) before ${pattern}; output:\n${seen.slice(-4000)}`)))
    const timer = setTimeout(
      () => finish(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${pattern} from pid ${child.pid}; output:\n${seen.slice(-4000)}`))),
      timeoutMs,
    )
    const finish = (f: () => void) => {
      clearTimeout(timer)
      child.stdout?.off('data', onData)
      child.stderr?.off('data', onData)
      child.off('exit', onExit)
      f()
    }
    if (!child.stdout && !child.stderr) {
      finish(() => reject(new Error('waitForOutput needs the child spawned with stdout or stderr piped')))
      return
    }
    child.stdout?.on('data', onData)
    child.stderr?.on('data', onData)
    if (exited(child)) onExit(child.exitCode, child.signalCode)
    else child.once('exit', onExit)
  })
}

/** SIGTERM, then SIGKILL after timeoutMs; resolves once the child has exited. */
export function stopProcess(child: ChildProcess, timeoutMs = 3000): Promise<void> {
  if (exited(child) || child.pid === undefined) return Promise.resolve()
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.once('exit', () => {
      clearTimeout(timer)
      resolve()
    })
    child.kill('SIGTERM')
  })
}
