/**
 * Interface names we are willing to put on a command line or into an iptables-restore payload.
 *
 * Stricter than the kernel (which allows anything but '/', ':' and whitespace up to 15 bytes):
 * no leading '-' (a tool would read it as an option), no '+' (iptables' wildcard: "tun+" would
 * match every tun device), no quotes or newlines (they would break a restore payload).
 */
export const INTERFACE_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$/

export function assertInterfaceName(name: string, what = 'interface'): void {
  if (!INTERFACE_NAME.test(name) || name === '.' || name === '..') {
    throw new Error(`invalid ${what} name ${JSON.stringify(name)}: expected 1-15 of [A-Za-z0-9_.-], not starting with '-'`)
  }
}
