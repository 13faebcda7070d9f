/**
 * Every TUN backend leaves TUN_HEADROOM bytes before and TUN_TAILROOM after each packet, so a
 * transport can encapsulate in place. A session that wants more is refused when it opens,
 * with a clear message, instead of overwriting the neighbouring packet on the data path.
 */
import type {Session} from './contract.js'
import {TUN_HEADROOM, TUN_TAILROOM} from '../tun/index.js'

export function checkSessionRoom(transport: string, session: Session): void {
  if (session.headroom > TUN_HEADROOM || session.tailroom > TUN_TAILROOM) {
    throw new Error(
      `transport "${transport}" needs ${session.headroom} bytes before and ${session.tailroom} after each packet; ` +
        `the core leaves ${TUN_HEADROOM} and ${TUN_TAILROOM}`,
    )
  }
}
