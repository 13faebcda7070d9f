/**
 * The node's CRL: loaded at start, re-read on reload and whenever the file changes, and handed
 * to the roster as the set of revoked serials.
 *
 * Policy (docs/pki.md):
 * - At start, a CRL that cannot be read or does not verify against the CA fails the start: the
 *   operator asked for revocation, and a node that silently admitted revoked players would be
 *   worse than one that does not come up.
 * - Later, a CRL that cannot be read or does not verify is refused: the node keeps enforcing the
 *   last good one, and says so in its log and status. A half-written file or a wrong upload
 *   must not un-revoke anyone.
 * - A CRL past its next update is still enforced (a revocation does not lapse), and the node
 *   warns, in its log and status, rather than refusing every player until someone re-issues it.
 */
import {watch, type FSWatcher} from 'node:fs'
import {basename, dirname} from 'node:path'
import {crlExpired, loadCrl, type RevocationList} from '../pki/crl.js'
import type {Logger} from '../log.js'

/** File events come in bursts (write, rename): read once they settle. */
const SETTLE_MS = 50

export interface RevocationStatus {
  file: string
  revoked: number
  number?: string
  thisUpdate?: string
  nextUpdate?: string
  /** Past its next update: still enforced; the CA should re-issue it (`agent pki crl`). */
  expired: boolean
  /** Why the file as it is now is not the one enforced, if it is not. */
  error?: string
}

export class RevocationWatch {
  private list: RevocationList | null = null
  private error: string | undefined
  private watcher: FSWatcher | null = null
  private settle: NodeJS.Timeout | null = null
  private expiryTimer: NodeJS.Timeout | null = null
  private reading: Promise<void> = Promise.resolve()

  constructor(
    private file: string,
    private readonly caPem: string,
    private readonly log: Logger,
    /** Called with each new list that verified. */
    private readonly onList: (list: RevocationList) => void,
  ) {}

  /** The first load: throws (a CrlError naming the file and the problem) if it is not usable. */
  async start(): Promise<RevocationList> {
    const list = await loadCrl(this.file, this.caPem)
    this.accept(list)
    this.watchFile()
    return list
  }

  /** Re-reads the file (or a new one, from a reload); a bad file keeps the last good list. */
  reload(file = this.file): Promise<void> {
    if (file !== this.file) {
      this.file = file
      this.watchFile()
    }
    this.reading = this.reading.then(() => this.read())
    return this.reading
  }

  /**
   * Why a list that verified must still not replace the one enforced, or undefined. An older
   * CRL copied back (a restored backup), or one with no number after a numbered one, would
   * un-revoke whatever came after it.
   */
  refusal(list: RevocationList): string | undefined {
    const now = this.list?.number
    if (now === undefined) return undefined
    if (list.number === undefined) return `it has no CRL number, and CRL #${String(now)} is already enforced`
    if (list.number < now) return `it is CRL #${String(list.number)}, older than the #${String(now)} already enforced`
    return undefined
  }

  status(): RevocationStatus {
    const l = this.list
    return {
      file: this.file,
      revoked: l?.revoked.size ?? 0,
      ...(l?.number === undefined ? {} : {number: String(l.number)}),
      ...(l === null ? {} : {thisUpdate: l.thisUpdate.toISOString()}),
      ...(l?.nextUpdate === undefined ? {} : {nextUpdate: l.nextUpdate.toISOString()}),
      expired: l !== null && crlExpired(l),
      ...(this.error === undefined ? {} : {error: this.error}),
    }
  }

  close(): void {
    this.watcher?.close()
    this.watcher = null
    if (this.settle !== null) clearTimeout(this.settle)
    if (this.expiryTimer !== null) clearTimeout(this.expiryTimer)
  }

  private async read(): Promise<void> {
    try {
      const list = await loadCrl(this.file, this.caPem)
      const why = this.refusal(list)
      if (why !== undefined) throw new Error(why)
      this.accept(list)
    } catch (e) {
      const was = this.error
      this.error = (e as Error).message
      // Said once per distinct problem: an editor saving a file in steps must not flood the log.
      if (this.error !== was) this.log.error(`CRL ${this.file} not applied, still enforcing the last good one: ${this.error}`, {event: 'crl.rejected', file: this.file, reason: this.error})
    }
  }

  private accept(list: RevocationList): void {
    const previous = this.list
    this.list = list
    this.error = undefined
    if (previous === null || previous.number !== list.number || previous.revoked.size !== list.revoked.size) {
      this.log.info(`CRL ${this.file}${list.number === undefined ? '' : ` #${String(list.number)}`}: ${list.revoked.size} revoked certificate(s)`, {
        event: 'crl.loaded',
        file: this.file,
        ...(list.number === undefined ? {} : {number: String(list.number)}),
        revoked: list.revoked.size,
      })
    }
    this.onList(list)
    this.scheduleExpiryWarning(list)
  }

  private scheduleExpiryWarning(list: RevocationList): void {
    if (this.expiryTimer !== null) clearTimeout(this.expiryTimer)
    this.expiryTimer = null
    const warn = () =>
      this.log.warn(`CRL ${this.file} is past its next update (${list.nextUpdate?.toISOString()}): still enforced; re-issue it with \`agent pki crl\``, {
        event: 'crl.expired',
        file: this.file,
        nextUpdate: list.nextUpdate?.toISOString() ?? null,
      })
    if (list.nextUpdate === undefined) return
    const left = list.nextUpdate.getTime() - Date.now()
    if (left <= 0) return warn()
    // setTimeout holds at most 2^31-1 ms (24.8 days); a later next update is checked again then.
    this.expiryTimer = setTimeout(() => (crlExpired(list) ? warn() : this.scheduleExpiryWarning(list)), Math.min(left + 1000, 2 ** 31 - 1))
    this.expiryTimer.unref()
  }

  /**
   * Watches the directory, not the file: tools replace a CRL by renaming a new file over it,
   * which a watch on the old file would not see.
   */
  private watchFile(): void {
    this.watcher?.close()
    const name = basename(this.file)
    try {
      this.watcher = watch(dirname(this.file), (_event, changed) => {
        if (changed !== null && changed !== name) return
        if (this.settle !== null) clearTimeout(this.settle)
        this.settle = setTimeout(() => void this.reload(), SETTLE_MS)
        this.settle.unref()
      })
      this.watcher.on('error', (e) => this.log.warn(`cannot watch ${this.file} any more (${e.message}): it is re-read on reload only`, {event: 'crl.unwatched', file: this.file, reason: e.message}))
      this.watcher.unref()
    } catch (e) {
      this.watcher = null
      this.log.warn(`cannot watch ${this.file} (${(e as Error).message}): it is re-read on reload only`, {event: 'crl.unwatched', file: this.file, reason: (e as Error).message})
    }
  }
}
