/**
 * Last-chance cleanup: when the process exits or is told to stop by a signal while testbeds are
 * still up, tear them down synchronously so no namespace or child outlives the run. Handlers are
 * installed while at least one testbed is live and removed after, so a process without testbeds
 * keeps Node's default signal behaviour.
 */

type Cleaner = () => void

const cleaners = new Set<Cleaner>()
const SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP']
let installed = false

function runAll(): void {
  for (const c of [...cleaners]) {
    cleaners.delete(c)
    try {
      c()
    } catch {
      // Keep going: one failing cleaner must not leave the others' namespaces behind.
    }
  }
}

function onExit(): void {
  runAll()
}

function onSignal(sig: NodeJS.Signals): void {
  runAll()
  uninstall()
  // Nobody else wants this signal: die of it, as the process would have without us.
  if (process.listenerCount(sig) === 0) process.kill(process.pid, sig)
}

function install(): void {
  if (installed) return
  installed = true
  process.on('exit', onExit)
  for (const s of SIGNALS) process.on(s, onSignal)
}

function uninstall(): void {
  if (!installed) return
  installed = false
  process.removeListener('exit', onExit)
  for (const s of SIGNALS) process.removeListener(s, onSignal)
}

/** Register a synchronous cleaner; returns the function that unregisters it. */
export function registerCleanup(c: Cleaner): () => void {
  cleaners.add(c)
  install()
  return () => {
    cleaners.delete(c)
    if (cleaners.size === 0) uninstall()
  }
}
