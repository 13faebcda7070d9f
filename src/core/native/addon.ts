/**
 * The one native addon, agent_native (binding.gyp, src/core/native/agent.h): the TUN device,
 * the carrier sockets, the fast path over both and the tls records, in one .node so the fast path can reach the
 * other two. Each wrapper types its own part.
 */
import {addonLoader} from './load.js'

export const loadAgentNative = addonLoader<{tun: unknown; net: unknown; fast: unknown; stream: unknown; notify?: (socketPath: string, message: string) => boolean}>({
  from: import.meta.url,
  name: 'agent_native',
  what: 'the native addon',
  code: 'ERR_AGENT_NATIVE_ADDON',
})
