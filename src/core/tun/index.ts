/**
 * The TUN backend for this OS. Only Linux exists today; a wintun backend would be chosen here.
 */
import {openTun as openLinuxTun, type LinuxTunDevice, type LinuxTunOptions} from './linux.js'

export type {PacketRing, TunDevice, TunOptions} from './device.js'
export {
  DEFAULT_BATCH_SIZE,
  TUN_HEADROOM,
  TUN_TAILROOM,
  slotSizeFor,
  validateTunName,
  type LinuxTunDevice,
  type LinuxTunOptions,
} from './linux.js'

/** Opens the TUN interface `opts.name` with this platform's backend. */
export function openTun(opts: LinuxTunOptions): LinuxTunDevice {
  if (process.platform !== 'linux') {
    throw Object.assign(new Error(`TUN devices are not supported on ${process.platform} yet`), {
      code: 'ERR_AGENT_TUN_PLATFORM',
    })
  }
  return openLinuxTun(opts)
}
