/** Link-level steps outside configureInterface: removing a lingering link, re-addressing. */
import {run} from '../sys/run.js'
import {configureInterface, type InterfaceAddress} from './interface.js'

/** Delete link `name` if it exists and is of `kind`; never touches a link of another kind. */
export async function deleteLink(name: string, kind: string): Promise<boolean> {
  const shown = await run('ip', ['-d', '-j', 'link', 'show', 'dev', name], {allowFail: true})
  if (shown.code !== 0) return false
  const info = (JSON.parse(shown.stdout) as {linkinfo?: {info_kind?: string}}[])[0]
  if (info?.linkinfo?.info_kind !== kind) return false
  await run('ip', ['link', 'del', 'dev', name])
  return true
}

/**
 * Replace the link's address with a new one (the node moved our tunnel address), keeping the
 * routes through it. The kernel deletes every route of a link that loses its last address, so
 * the new address is added first and the old ones removed after; and since removing a primary
 * address would take its secondaries with it, secondaries are promoted on this link. At no
 * moment is a tunnelled destination left without its route (it would leak out of the tunnel).
 */
export async function readdressInterface(name: string, cfg: InterfaceAddress): Promise<void> {
  const shown = await run('ip', ['-j', '-4', 'addr', 'show', 'dev', name])
  const old = ((JSON.parse(shown.stdout) as {addr_info?: {local: string; prefixlen: number}[]}[])[0]?.addr_info ?? []).filter((a) => a.local !== cfg.address)
  await run('sysctl', ['-q', '-w', `net.ipv4.conf.${name.replace(/\./g, '/')}.promote_secondaries=1`])
  await configureInterface(name, cfg)
  for (const a of old) await run('ip', ['addr', 'del', `${a.local}/${a.prefixlen}`, 'dev', name], {allowFail: true})
}
