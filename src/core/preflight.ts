/**
 * Checks before `agent up` touches anything, so the operator gets the real reason up front
 * rather than an EPERM from deep inside a TUN ioctl or an `ip` command.
 */
import {existsSync, readFileSync} from 'node:fs'

const CAP_NET_ADMIN = 12

export function hasNetAdmin(): boolean {
  if (process.getuid?.() === 0) return true
  try {
    const line = readFileSync('/proc/self/status', 'utf8').split('\n').find((l) => l.startsWith('CapEff:'))
    if (line === undefined) return false
    return (BigInt(`0x${line.split(/\s+/)[1]}`) & (1n << BigInt(CAP_NET_ADMIN))) !== 0n
  } catch {
    return false
  }
}

export function preflight(tunPath = '/dev/net/tun'): void {
  if (process.platform !== 'linux') throw new Error(`agent up runs on Linux only for now (this is ${process.platform})`)
  if (!hasNetAdmin()) {
    throw new Error('agent up must run as root (or with CAP_NET_ADMIN): it creates a TUN device, routes and firewall rules')
  }
  if (!existsSync(tunPath)) throw new Error(`${tunPath} does not exist: load the tun kernel module (modprobe tun)`)
}
