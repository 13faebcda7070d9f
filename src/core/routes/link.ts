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

/** Replace the link's addresses with a new one (the node moved our tunnel address). */
export async function readdressInterface(name: string, cfg: InterfaceAddress): Promise<void> {
  await run('ip', ['addr', 'flush', 'dev', name])
  await configureInterface(name, cfg)
}
