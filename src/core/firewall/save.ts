/**
 * Reading `iptables-save` output: which tables and chains exist, their rules, and which rules
 * jump to a given chain. Pure text processing, no I/O.
 *
 * Rules are kept exactly as iptables-save printed them ("-A FORWARD -j X"), because that text is
 * valid iptables-restore input: turning "-A" into "-D" deletes precisely that rule, and replaying
 * the lines rebuilds a chain as it was.
 */

export interface SavedChain {
  name: string
  /** ACCEPT/DROP for built-in chains, "-" for user-defined ones. */
  policy: string
  /** The chain's rules as "-A <chain> ..." lines, in order. */
  rules: string[]
}

export interface SavedTable {
  name: string
  chains: Map<string, SavedChain>
}

export type SavedRuleset = Map<string, SavedTable>

export function parseIptablesSave(text: string): SavedRuleset {
  const tables: SavedRuleset = new Map()
  let table: SavedTable | undefined
  for (const raw of text.split('\n')) {
    // `iptables-save -c` prefixes rules with [packets:bytes]; we never ask for it, but tolerate it.
    const line = raw.trim().replace(/^\[\d+:\d+\]\s+/, '')
    if (line === '' || line.startsWith('#')) continue
    if (line.startsWith('*')) {
      const name = line.slice(1)
      table = tables.get(name) ?? {name, chains: new Map()}
      tables.set(name, table)
    } else if (line === 'COMMIT') {
      table = undefined
    } else if (table && line.startsWith(':')) {
      const [name, policy = '-'] = line.slice(1).split(/\s+/)
      if (name && !table.chains.has(name)) table.chains.set(name, {name, policy, rules: []})
    } else if (table && line.startsWith('-A ')) {
      const name = tokenize(line)[1]
      if (!name) continue
      let chain = table.chains.get(name)
      if (!chain) table.chains.set(name, (chain = {name, policy: '-', rules: []}))
      chain.rules.push(line)
    }
  }
  return tables
}

/**
 * Splits a rule line into arguments the way iptables-restore does: whitespace-separated, with
 * double quotes grouping (comments: -m comment --comment "a -j B") and backslash escaping.
 */
export function tokenize(line: string): string[] {
  const out: string[] = []
  let cur = ''
  let inQuote = false
  let has = false
  for (let i = 0; i < line.length; i++) {
    const c = line[i]
    if (c === '\\' && i + 1 < line.length) {
      cur += line[++i]
      has = true
    } else if (c === '"') {
      inQuote = !inQuote
      has = true
    } else if (!inQuote && /\s/.test(c)) {
      if (has) out.push(cur)
      cur = ''
      has = false
    } else {
      cur += c
      has = true
    }
  }
  if (has) out.push(cur)
  return out
}

/** The chain a rule jumps (-j) or goes (-g) to, if any. */
export function ruleTarget(line: string): string | undefined {
  const t = tokenize(line)
  for (let i = 0; i < t.length - 1; i++) {
    if (t[i] === '-j' || t[i] === '--jump' || t[i] === '-g' || t[i] === '--goto') return t[i + 1]
  }
  return undefined
}

/** Every rule in `table` (any chain) that jumps or goes to `target`. */
export function rulesJumpingTo(ruleset: SavedRuleset, table: string, target: string): string[] {
  const t = ruleset.get(table)
  if (!t) return []
  const out: string[] = []
  for (const chain of t.chains.values()) for (const r of chain.rules) if (ruleTarget(r) === target) out.push(r)
  return out
}

/**
 * iptables-save text reduced to what matters for comparing rulesets: no comments or timestamps,
 * counters zeroed, tables in a fixed order (nft lists them in creation order).
 */
export function normalizeIptablesSave(text: string): string {
  const blocks = new Map<string, string[]>()
  let cur: string[] | undefined
  for (const raw of text.split('\n')) {
    const line = raw.trim().replace(/^\[\d+:\d+\]\s+/, '')
    if (line === '' || line.startsWith('#')) continue
    if (line.startsWith('*')) {
      cur = []
      blocks.set(line, cur)
    }
    cur?.push(line.startsWith(':') ? line.replace(/\[\d+:\d+\]$/, '[0:0]') : line)
  }
  return [...blocks.keys()]
    .sort()
    .map((k) => blocks.get(k)!.join('\n'))
    .join('\n')
}
