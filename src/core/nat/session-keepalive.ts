/**
 * Keepalive state of one datagram session, and what each end does with a keepalive.
 *
 * Client: sends a Request right after the welcome (retrying each second until answered), then
 * every keepalive interval whether or not data flows, so the NAT mapping stays and a rebinding
 * is noticed within one interval. Node: answers every Request that verifies, and if it came
 * from a new endpoint, moves the session there first.
 */
import type {Session, Span} from '../transport/contract.js'
import {KEEPALIVE_PACKET, KeepaliveKind, makeKeepalive, verifyKeepalive} from './keepalive.js'

export class KeepaliveState {
  /** Highest counter accepted from the other end: anything not above it is a replay. */
  lastIn = 0n
  private nextOut = 1n
  /** ms since epoch of the last verified keepalive from the other end. */
  lastVerified = 0

  /**
   * One key per direction: a keepalive this end sent, reflected back at it, is not one it can
   * accept (with one key for both, a reflected reply would raise lastIn and shut out the
   * genuine requests until their counter caught up).
   */
  constructor(
    readonly receiveKey: Buffer,
    readonly sendKey: Buffer,
  ) {}

  /** Verify a keepalive of the expected kind from the other end; only then remember its counter. */
  accept(buf: Buffer, offset: number, kind: KeepaliveKind): boolean {
    const v = verifyKeepalive(buf, offset, this.receiveKey, this.lastIn)
    if (v === null || v.kind !== kind) return false
    this.lastIn = v.counter
    this.lastVerified = Date.now()
    return true
  }

  /**
   * A keepalive of `kind` from src to dst, encapsulated by `session`, in a fresh buffer
   * (control plane: a few per minute). Returns the span to send, or null if encap refused.
   */
  build(session: Session, src: number, dst: number, kind: KeepaliveKind): {buf: Buffer; span: Span} | null {
    const buf = makeKeepalive(session.headroom, session.tailroom, src, dst, kind, this.nextOut++, this.sendKey)
    const span = {offset: 0, length: 0}
    return session.encap(buf, session.headroom, KEEPALIVE_PACKET, span) ? {buf, span} : null
  }
}
