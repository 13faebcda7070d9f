/**
 * IPv4 addresses as unsigned 32-bit integers, and CIDR blocks. Pure functions, no I/O.
 *
 * Addresses are parsed strictly: four decimal octets, no leading zeros ("010" is octal to some
 * tools and decimal to others, so we accept neither reading), no surrounding whitespace.
 */

/** An IPv4 CIDR as written: `address` may have host bits set (see isNetworkAddress). */
export interface Ipv4Cidr {
  readonly address: number
  readonly prefix: number
}

const OCTET = /^(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])$/

/** Parses dotted-quad notation to a uint32, or undefined when `text` is not an IPv4 address. */
export function parseIpv4(text: string): number | undefined {
  const parts = text.split('.')
  if (parts.length !== 4 || !parts.every((p) => OCTET.test(p))) return undefined
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0)
}

/** parseIpv4 for text already validated (config, protocol messages): throws instead of undefined. */
export function ipv4ToNumber(text: string): number {
  const n = parseIpv4(text)
  if (n === undefined) throw new Error(`"${text}" is not an IPv4 address`)
  return n
}

export function isIpv4(text: string): boolean {
  return parseIpv4(text) !== undefined
}

export function formatIpv4(value: number): string {
  const v = value >>> 0
  return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`
}

/** Parses `a.b.c.d/n` (n in 0..32); host bits are kept, so callers can say what was meant. */
export function parseCidr(text: string): Ipv4Cidr | undefined {
  const slash = text.indexOf('/')
  if (slash < 0) return undefined
  const address = parseIpv4(text.slice(0, slash))
  const len = text.slice(slash + 1)
  if (address === undefined || !/^(?:3[0-2]|[12]?[0-9])$/.test(len)) return undefined
  return {address, prefix: Number(len)}
}

export function formatCidr(cidr: Ipv4Cidr): string {
  return `${formatIpv4(cidr.address)}/${cidr.prefix}`
}

/** The netmask of a prefix length as a uint32 (0 for /0: `<< 32` is a no-op in JS). */
export function prefixMask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0
}

export function networkAddress(cidr: Ipv4Cidr): number {
  return (cidr.address & prefixMask(cidr.prefix)) >>> 0
}

export function broadcastAddress(cidr: Ipv4Cidr): number {
  return (networkAddress(cidr) | ~prefixMask(cidr.prefix)) >>> 0
}

/** The CIDR with its host bits cleared: what `10.8.0.5/24` should have been written as. */
export function canonicalCidr(cidr: Ipv4Cidr): Ipv4Cidr {
  return {address: networkAddress(cidr), prefix: cidr.prefix}
}

export function isNetworkAddress(cidr: Ipv4Cidr): boolean {
  return cidr.address === networkAddress(cidr)
}

export function cidrContains(cidr: Ipv4Cidr, address: number): boolean {
  const mask = prefixMask(cidr.prefix)
  return ((address & mask) >>> 0) === networkAddress(cidr)
}

/**
 * Usable host addresses of a block: everything but the network and broadcast addresses, except
 * for /31 (point-to-point, RFC 3021) and /32, where every address is a host.
 */
export function firstHost(cidr: Ipv4Cidr): number {
  return cidr.prefix >= 31 ? networkAddress(cidr) : networkAddress(cidr) + 1
}

export function lastHost(cidr: Ipv4Cidr): number {
  return cidr.prefix >= 31 ? broadcastAddress(cidr) : broadcastAddress(cidr) - 1
}

/** True when `address` is inside the block and is a usable host (see firstHost). */
export function isHostOf(cidr: Ipv4Cidr, address: number): boolean {
  return cidrContains(cidr, address) && address >= firstHost(cidr) && address <= lastHost(cidr)
}
