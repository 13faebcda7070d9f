/**
 * Pure helpers for the admission set, the ipset (hash:ip) of an instance's admitted client
 * addresses that the forward chain matches with `-m set`: its parameters, reading `ipset save`,
 * the difference between two admitted lists and the `ipset restore` payload that applies it,
 * and reading what ipset and conntrack print. No I/O here; iptables.ts runs the commands.
 *
 * Why a set and not a rule per client: a rule per client makes every forwarded packet walk the
 * roster (10,000 clients: 17.9 Gbit/s down to 323 Mbit/s) and every admission re-render the
 * chain (0.4 s at 10,000); a hash lookup costs the same for 1 client or 65,536, and admitting
 * or withdrawing one is one element added or deleted.
 */
import {formatIpv4, parseIpv4, prefixMask} from '../net/ipv4.js'

/** Room for a /16 pool. A limit, not an allocation: the hash grows as elements are added. */
export const SET_MAXELEM = 65536

/**
 * The header options a set of ours may have. Anything else changes what a member means
 * (`netmask 24` would admit a whole /24, `timeout` would let admissions expire), so a set
 * showing any other option is not ours to keep. hashsize, bucketsize and initval are sizing
 * details the kernel picks.
 */
const WANTED: Readonly<Record<string, string | null>> = {family: 'inet', maxelem: String(SET_MAXELEM), hashsize: null, bucketsize: null, initval: null}
const SET_TYPE = 'hash:ip'
/** Header options `ipset save` prints without a value. */
const FLAGS = new Set(['counters', 'comment', 'skbinfo', 'forceadd'])

/** `ipset create` arguments for the set; -exist: no error when an identical set exists. */
export function createSetArgs(set: string): string[] {
  return ['create', set, SET_TYPE, 'family', 'inet', 'maxelem', String(SET_MAXELEM), '-exist']
}

export interface SavedSet {
  /** The "create ..." line's tokens after the set name: type and options. */
  header: string[]
  /** Elements as printed after "add <set> ", in the order ipset printed them (hash order). */
  members: string[]
}

/**
 * Reads `ipset save <set>` (or `ipset list <set> -output save`); lines of other sets are
 * ignored. Undefined when the text has no "create" line for the set.
 */
export function parseSetSave(text: string, set: string): SavedSet | undefined {
  let header: string[] | undefined
  const members: string[] = []
  for (const raw of text.split('\n')) {
    const t = raw.trim().split(/\s+/)
    if (t[1] !== set) continue
    if (t[0] === 'create') header = t.slice(2)
    else if (t[0] === 'add' && t.length > 2) members.push(t.slice(2).join(' '))
  }
  return header === undefined ? undefined : {header, members}
}

/** Why an existing set cannot serve as ours as it is, or undefined if it can. */
export function incompatibility(saved: SavedSet): string | undefined {
  const [type, ...opts] = saved.header
  if (type !== SET_TYPE) return `its type is ${type}, not ${SET_TYPE}`
  const seen = new Map<string, string>()
  for (let i = 0; i < opts.length; ) {
    // Flags stand alone; every other option takes the next token as its value.
    const flag = FLAGS.has(opts[i])
    seen.set(opts[i], flag ? '' : (opts[i + 1] ?? ''))
    i += flag ? 1 : 2
  }
  for (const [key, value] of seen) {
    if (!(key in WANTED)) return `it has option ${value === '' ? key : `${key} ${value}`}`
    const want = WANTED[key]
    if (want !== null && value !== want) return `its ${key} is ${value}, not ${want}`
  }
  for (const [key, want] of Object.entries(WANTED)) if (want !== null && !seen.has(key)) return `it has no ${key} ${want}`
  // Cannot happen with the header above; an element we could not read is one we cannot vouch for.
  const odd = saved.members.find((m) => parseIpv4(m) === undefined)
  if (odd !== undefined) return `it holds ${JSON.stringify(odd)}, not a plain IPv4 address`
  return undefined
}

export interface SetDiff {
  /** Addresses to add, in numeric order. */
  add: string[]
  /** Addresses to delete, in numeric order. */
  del: string[]
}

/**
 * What takes the set from `current` to `desired`. Linear in the list sizes: setAdmitted() runs
 * it against 10,000 addresses to find a difference of one.
 */
export function diffAdmitted(current: readonly string[], desired: readonly string[]): SetDiff {
  const have = new Set(current.map(canonical))
  const want = new Set(desired.map(canonical))
  const add = [...want].filter((n) => !have.has(n))
  const del = [...have].filter((n) => !want.has(n))
  const order = (xs: number[]) => xs.sort((a, b) => a - b).map(formatIpv4)
  return {add: order(add), del: order(del)}
}

function canonical(address: string): number {
  const n = parseIpv4(address)
  if (n === undefined) throw new Error(`invalid client address ${JSON.stringify(address)}: expected an IPv4 address`)
  return n
}

export const emptyDiff = (d: SetDiff): boolean => d.add.length === 0 && d.del.length === 0

/** The opposite change, to undo `d`. */
export const invertDiff = (d: SetDiff): SetDiff => ({add: d.del, del: d.add})

/**
 * The `ipset restore -exist` payload for a difference: deletions first (they make room when
 * the set is near maxelem), then additions. -exist makes a repeated line harmless (an add of a
 * member, a del of a non-member), so replaying a payload after a partial failure is safe.
 * Empty string when there is nothing to do.
 */
export function renderSetChanges(set: string, d: SetDiff): string {
  if (emptyDiff(d)) return ''
  return [...d.del.map((a) => `del ${set} ${a}`), ...d.add.map((a) => `add ${set} ${a}`)].join('\n') + '\n'
}

/** The line `ipset restore` blamed ("ipset v7.17: Error in line 3: ..."), and its reason. */
export function parseIpsetError(stderr: string): {line: number | undefined; reason: string} {
  const text = stderr.trim().replace(/^ipset v[\d.]+:\s*/gm, '')
  const m = /^Error in line (\d+):\s*(.*)$/m.exec(text)
  if (m) return {line: Number(m[1]), reason: m[2].trim()}
  return {line: undefined, reason: text.split('\n').filter(Boolean).join('; ')}
}

export const SET_MISSING = /The set with the given name does not exist/
export const SET_IN_USE = /in use by a kernel component/

/** Withdrawn addresses that fill an aligned CIDR block exactly, deleted with one conntrack call. */
export interface FlowBlock {
  /** The block's network address. */
  address: string
  prefix: number
  /** The withdrawn addresses it covers: all of the block's addresses, none other. */
  members: string[]
}

/**
 * Groups withdrawn addresses into the fewest aligned CIDR blocks that cover them and nothing
 * else. Why: every `conntrack -D` walks the whole conntrack table in the kernel (about 5 ms
 * with 262,144 buckets, entries or not), so 10,000 withdrawals one by one take about a minute,
 * while a block is one walk with --mask-src. Clients get addresses from the pool in order, so
 * a mass withdrawal (a network outage ending every session) is a few runs and a few dozen
 * blocks; scattered withdrawals cost one walk each, as before. A block never reaches an
 * address that is not being withdrawn, so admitted clients and the node keep their flows.
 */
export function flowBlocks(addresses: readonly string[]): FlowBlock[] {
  const nums = [...new Set(addresses.map(canonical))].sort((a, b) => a - b)
  const out: FlowBlock[] = []
  for (let i = 0; i < nums.length; ) {
    let j = i
    while (j + 1 < nums.length && nums[j + 1] === nums[j] + 1) j++
    // Split the run nums[i]..nums[j] into aligned power-of-two blocks, largest first.
    for (let lo = nums[i]; lo <= nums[j]; ) {
      let size = 1
      while (size < 2 ** 31 && lo % (size * 2) === 0 && lo + size * 2 - 1 <= nums[j]) size *= 2
      out.push({address: formatIpv4(lo), prefix: 32 - Math.log2(size), members: Array.from({length: size}, (_, k) => formatIpv4(lo + k))})
      lo += size
    }
    i = j + 1
  }
  return out
}

/**
 * `conntrack -L` arguments listing the entries whose original source is in the smallest
 * aligned block covering all of `addresses` (at least one): the one walk that finds which of
 * many withdrawn clients have any flow at all.
 */
export function conntrackListArgs(addresses: readonly string[]): string[] {
  const nums = addresses.map(canonical)
  const lo = nums.reduce((a, b) => Math.min(a, b))
  const hi = nums.reduce((a, b) => Math.max(a, b))
  let prefix = 32
  let net = lo
  while (prefix > 0 && net + 2 ** (32 - prefix) - 1 < hi) {
    prefix--
    net = (lo & prefixMask(prefix)) >>> 0
  }
  const args = ['-L', '--orig-src', formatIpv4(net)]
  return prefix === 32 ? args : [...args, '--mask-src', formatIpv4(prefixMask(prefix))]
}

/**
 * The original sources in `conntrack -L` output: each entry's first `src=` is its original
 * direction's source ("tcp 6 431999 ESTABLISHED src=10.8.0.2 dst=... sport=... src=... ...").
 */
export function conntrackSources(text: string): Set<string> {
  const out = new Set<string>()
  for (const m of text.matchAll(/^[^\n]*?\bsrc=(\d{1,3}(?:\.\d{1,3}){3})\b/gm)) out.add(m[1])
  return out
}

/** `conntrack` arguments deleting every entry whose original source is in the block. */
export function conntrackDeleteArgs(block: FlowBlock): string[] {
  const args = ['-D', '--orig-src', block.address]
  return block.prefix === 32 ? args : [...args, '--mask-src', formatIpv4(prefixMask(block.prefix))]
}

/**
 * Whether a `conntrack -D` exit means "done": 0 (entries deleted) or 1 with conntrack's own
 * "0 flow entries have been deleted" (there were none). Any other exit, or 1 with another
 * message, is a real failure.
 */
export function conntrackDeleteOk(code: number, stderr: string): boolean {
  return code === 0 || (code === 1 && /\b0 flow entries have been deleted/.test(stderr))
}
