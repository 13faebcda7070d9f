/**
 * The firewall and route code against the real kernel: iptables-nft, ipset, conntrack and
 * iproute2, each test in a network namespace of its own (fwtest-<pid>-<n>) that is deleted
 * afterwards, pass or fail; sets and conntrack tables are per namespace too. Nothing here runs
 * in the host's namespace except `ip netns add/del`.
 */
import {afterAll, describe, expect, it} from 'vitest'
import {FirewallError, NodeFirewall, findFirewallInstances, iptablesSave, removeFirewall, restore} from '../../src/core/firewall/iptables.js'
import {chainRules, parseOwnedState, renderRemoval, type FirewallSpec} from '../../src/core/firewall/rules.js'
import {normalizeIptablesSave, parseIptablesSave} from '../../src/core/firewall/save.js'
import {configureInterface} from '../../src/core/routes/interface.js'
import {addRoutes, keepEndpointOutside, removeRoutes, ROUTE_PROTO} from '../../src/core/routes/routes.js'
import {netnsRunner} from '../../src/core/sys/netns.js'
import {CommandNotFoundError, run, type Runner} from '../../src/core/sys/run.js'

const isRoot = process.getuid?.() === 0
const hasTools = await Promise.all(['iptables-restore', 'iptables-save', 'ip', 'ipset', 'conntrack'].map((t) => run('sh', ['-c', `command -v ${t}`], {allowFail: true})))
  .then((rs) => rs.every((r) => r.code === 0))
  .catch(() => false)

const created = new Set<string>()
let counter = 0

/**
 * Runs `fn` with fresh namespaces (the first, then one per suffix, named <first>-<suffix>), all
 * deleted afterwards, whatever happens.
 */
async function inNetnses<T>(suffixes: readonly string[], fn: (names: string[], runners: Runner[]) => Promise<T>): Promise<T> {
  const first = `fwtest-${process.pid}-${++counter}`
  const names = [first, ...suffixes.map((x) => `${first}-${x}`)]
  try {
    for (const ns of names) {
      created.add(ns)
      await run('ip', ['netns', 'add', ns])
    }
    return await fn(names, names.map((ns) => netnsRunner(ns)))
  } finally {
    for (const ns of names) {
      await run('ip', ['netns', 'del', ns], {allowFail: true})
      created.delete(ns)
    }
  }
}

/** Runs `fn` in a fresh namespace that is deleted afterwards, whatever happens. */
async function inNetns<T>(fn: (ns: string, r: Runner) => Promise<T>): Promise<T> {
  const ns = `fwtest-${process.pid}-${++counter}`
  await run('ip', ['netns', 'add', ns])
  created.add(ns)
  try {
    return await fn(ns, netnsRunner(ns))
  } finally {
    await run('ip', ['netns', 'del', ns], {allowFail: true})
    created.delete(ns)
  }
}

// Safety net for a test killed by its timeout before its finally ran.
afterAll(async () => {
  for (const ns of created) await run('ip', ['netns', 'del', ns], {allowFail: true})
})

const sh = (r: Runner, cmd: string, ...args: string[]) => r(cmd, args)
const save = async (r: Runner) => normalizeIptablesSave(await iptablesSave(r))

/** The members of a set, sorted, or undefined when it does not exist. */
async function members(r: Runner, set = 'agent-n1'): Promise<string[] | undefined> {
  const res = await r('ipset', ['save', set], {allowFail: true})
  if (res.code !== 0) return undefined
  return res.stdout
    .split('\n')
    .filter((l) => l.startsWith(`add ${set} `))
    .map((l) => l.split(' ')[2])
    .sort()
}

/** Every set in the namespace. */
const setNames = async (r: Runner) => (await sh(r, 'ipset', 'list', '-n')).stdout.split('\n').filter(Boolean)

/** Original sources of the namespace's conntrack entries, sorted (one per entry). */
async function trackedSources(r: Runner): Promise<string[]> {
  const {stdout} = await sh(r, 'conntrack', '-L')
  return stdout
    .split('\n')
    .map((l) => /\bsrc=(\S+)/.exec(l)?.[1])
    .filter((x): x is string => x !== undefined)
    .sort()
}

/** A tracked UDP flow from `src`, as if a client had started it (TCP ESTABLISHED would do too). */
async function track(r: Runner, src: string, sport: number): Promise<void> {
  await sh(r, 'conntrack', '-I', '-s', src, '-d', '192.0.2.2', '-p', 'tcp', '--sport', String(sport), '--dport', '443', '--state', 'ESTABLISHED', '-u', 'SEEN_REPLY,ASSURED', '-t', '600')
}

/**
 * nft creates a table on first use and nobody deletes it, so "as before" in an empty namespace
 * means: any table that appeared holds only empty built-in chains with ACCEPT policy.
 */
function withoutPristineTables(normalized: string): string {
  return normalized
    .split(/(?=^\*)/m)
    .filter((block) => !block.split('\n').every((l) => l === '' || l.startsWith('*') || l === 'COMMIT' || /^:[A-Z]+ ACCEPT \[0:0\]$/.test(l)))
    .join('')
}

// A host that already forwards for Docker, with FORWARD policy DROP and NAT of its own.
const HOST_RULES = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-USER - [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -m comment --comment "ssh -j AGENT-n1-FWD" -j ACCEPT
-A FORWARD -j DOCKER-USER
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A DOCKER-USER -j RETURN
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
COMMIT
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -o eth0 -p udp -m udp --dport 53 -j ACCEPT
COMMIT
`

async function loadHostRules(r: Runner): Promise<void> {
  await r('iptables-restore', [], {input: HOST_RULES})
}

const spec = (over: Partial<FirewallSpec> = {}): FirewallSpec => ({
  instance: 'n1',
  tunInterface: 'tun0',
  subnet: '10.8.0.0/24',
  egressInterface: 'eth0',
  snat: 'masquerade',
  admitted: ['10.8.0.2', '10.8.0.3'],
  ...over,
})

/** A runner that edits iptables-restore payloads on their way, to make the kernel refuse one. */
function tampering(r: Runner, edit: (payload: string) => string): Runner {
  return (cmd, args, opts) => r(cmd, args, cmd === 'iptables-restore' && opts?.input ? {...opts, input: edit(opts.input)} : opts)
}

describe.skipIf(!isRoot || !hasTools)('firewall in a network namespace', () => {
  it('applies all four chains with their jumps at the top', () =>
    inNetns(async (_ns, r) => {
      await loadHostRules(r)
      await new NodeFirewall(spec({snat: '192.0.2.10'}), {runner: r}).apply()
      const text = await iptablesSave(r)
      const state = parseOwnedState(text, 'n1')
      for (const role of ['fwd', 'in', 'nat', 'mss'] as const) {
        expect(state.chains[role].rules).toEqual(chainRules(spec({snat: '192.0.2.10'}), role))
        expect(state.chains[role].jumps.map((j) => [j.chain, j.position, j.rule])).toEqual([
          [state.chains[role].hook, 1, `-A ${state.chains[role].hook} -j ${state.chains[role].name}`],
        ])
      }
      expect(text).toContain('-A AGENT-n1-NAT -s 10.8.0.0/24 -o eth0 -j SNAT --to-source 192.0.2.10')
      expect(text).toContain('-A INPUT -j AGENT-n1-IN')
      expect(await findFirewallInstances({runner: r})).toEqual(['n1'])
    }))

  it('applies in an empty namespace, and applying twice gives the identical ruleset', () =>
    inNetns(async (_ns, r) => {
      expect(await save(r)).toBe('')
      const fw = new NodeFirewall(spec(), {runner: r})
      await fw.apply()
      const once = await save(r)
      expect(once).toContain('-A FORWARD -j AGENT-n1-FWD')
      expect(once).toContain('-A INPUT -j AGENT-n1-IN')
      await fw.apply()
      expect(await save(r)).toBe(once)
      await new NodeFirewall(spec(), {runner: r}).apply()
      expect(await save(r)).toBe(once)
    }))

  it('collapses duplicate jumps into one at the top', () =>
    inNetns(async (_ns, r) => {
      await loadHostRules(r)
      await new NodeFirewall(spec(), {runner: r}).apply()
      await sh(r, 'iptables', '-A', 'FORWARD', '-j', 'AGENT-n1-FWD')
      await sh(r, 'iptables', '-t', 'nat', '-I', 'POSTROUTING', '2', '-o', 'eth0', '-j', 'AGENT-n1-NAT')
      await new NodeFirewall(spec(), {runner: r}).apply()
      const state = parseOwnedState(await iptablesSave(r), 'n1')
      expect(state.chains.fwd.jumps).toEqual([{chain: 'FORWARD', position: 1, rule: '-A FORWARD -j AGENT-n1-FWD'}])
      expect(state.chains.nat.jumps).toEqual([{chain: 'POSTROUTING', position: 1, rule: '-A POSTROUTING -j AGENT-n1-NAT'}])
    }))

  it('setAdmitted adds and removes set elements, and no rule anywhere names a client', () =>
    inNetns(async (_ns, r) => {
      await loadHostRules(r)
      const fw = new NodeFirewall(spec({admitted: []}), {runner: r})
      await fw.apply()
      const rules = await save(r)
      expect(await members(r)).toEqual([])

      await fw.setAdmitted(['10.8.0.2', '10.8.0.9'])
      expect(await members(r)).toEqual(['10.8.0.2', '10.8.0.9'])
      await fw.setAdmitted(['10.8.0.9', '10.8.0.10'])
      expect(await members(r)).toEqual(['10.8.0.10', '10.8.0.9'])
      await fw.setAdmitted(['10.8.0.9', '10.8.0.10']) // unchanged
      expect(await members(r)).toEqual(['10.8.0.10', '10.8.0.9'])
      // The chains never changed, in any table, and name no client.
      const after = await save(r)
      expect(after).toBe(rules)
      expect(after).not.toMatch(/10\.8\.0\.(2|9|10)\b/)
      expect(parseOwnedState(await iptablesSave(r), 'n1').chains.fwd.rules).toEqual(chainRules(spec(), 'fwd'))
      await fw.setAdmitted([])
      expect(await members(r)).toEqual([])
    }))

  it('the admission rules read back from iptables-save exactly as rendered', () =>
    inNetns(async (_ns, r) => {
      await new NodeFirewall(spec({egressInterface: 'wan0'}), {runner: r}).apply()
      const lines = (await iptablesSave(r)).split('\n').filter((l) => l.includes('--match-set'))
      expect(lines).toEqual([
        '-A AGENT-n1-FWD -i tun0 -o wan0 -m set --match-set agent-n1 src -j ACCEPT',
        '-A AGENT-n1-FWD -o tun0 -m set --match-set agent-n1 dst -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
      ])
      const set = (await sh(r, 'ipset', 'list', '-t', 'agent-n1')).stdout
      expect(set).toMatch(/^Type: hash:ip$/m)
      expect(set).toMatch(/^Header: family inet hashsize \d+ maxelem 65536 /m)
      expect(set).toMatch(/^References: 2$/m)
    }))

  it('withdrawing a client deletes its conntrack entries and nobody else\'s', () =>
    inNetns(async (_ns, r) => {
      const fw = new NodeFirewall(spec({admitted: ['10.8.0.2', '10.8.0.3']}), {runner: r})
      await fw.apply()
      await track(r, '10.8.0.2', 40000)
      await track(r, '10.8.0.2', 40001)
      await track(r, '10.8.0.3', 40000)
      expect(await trackedSources(r)).toEqual(['10.8.0.2', '10.8.0.2', '10.8.0.3'])
      await fw.setAdmitted(['10.8.0.3'])
      expect(await trackedSources(r)).toEqual(['10.8.0.3'])
      // Withdrawing one with no entries is not an error (conntrack exits 1, "0 flow entries").
      await fw.setAdmitted([])
      await fw.setAdmitted(['10.8.0.4'])
      await fw.setAdmitted([])
      expect(await trackedSources(r)).toEqual([])
      // A run of withdrawals goes as a block (10.8.0.4/30: one --mask-src walk) and stops at its edges.
      const run = ['10.8.0.3', '10.8.0.4', '10.8.0.5', '10.8.0.6', '10.8.0.7', '10.8.0.8']
      await fw.setAdmitted(run)
      for (const a of run) await track(r, a, 40000)
      await track(r, '10.8.0.1', 40000) // the node's own address: never admitted, never withdrawn
      await fw.setAdmitted(['10.8.0.3', '10.8.0.8'])
      expect(await trackedSources(r)).toEqual(['10.8.0.1', '10.8.0.3', '10.8.0.8'])
    }))

  it('after ipset restore failed part-way, the next change reads the set back and ends exact', () =>
    inNetns(async (_ns, r) => {
      let breakNext = false
      // Slips a line naming a missing set in after the first: ipset stops there, with the lines
      // before it possibly applied and the ones after not.
      const flaky: Runner = (cmd, args, opts) => {
        if (cmd === 'ipset' && args[0] === 'restore' && breakNext && opts?.input) {
          breakNext = false
          const [first, ...rest] = opts.input.split('\n')
          return r(cmd, args, {...opts, input: [first, 'add agent-nope 10.8.0.99', ...rest].join('\n')})
        }
        return r(cmd, args, opts)
      }
      const fw = new NodeFirewall(spec({admitted: ['10.8.0.2', '10.8.0.3']}), {runner: flaky})
      await fw.apply()
      await track(r, '10.8.0.2', 40000)
      breakNext = true
      const err = (await fw.setAdmitted(['10.8.0.4']).catch((e) => e)) as FirewallError
      expect(err).toBeInstanceOf(FirewallError)
      // (The message quotes line 2 of the payload as NodeFirewall wrote it, before the edit above.)
      expect(err.line).toBe(2)
      expect(err.message).toMatch(/^ipset restore rejected line 2 \(.*\) of the changes to agent-n1: The set with the given name does not exist$/)
      expect(fw.admitted).toEqual([]) // the withdrawals stand whatever the kernel took; the add was refused
      expect(await members(r)).not.toContain('10.8.0.4') // nothing after the failing line
      await fw.setAdmitted(['10.8.0.4', '10.8.0.5'])
      expect(await members(r)).toEqual(['10.8.0.4', '10.8.0.5'])
      expect(await trackedSources(r)).toEqual([]) // 10.8.0.2's flow went once it was out for sure
    }))

  it('apply reconciles a leftover set: stale elements and their flows go, missing ones come', () =>
    inNetns(async (_ns, r) => {
      // As a killed run with clients 10.8.0.2, .77 and .78 left it (its chains too, which apply refills).
      await sh(r, 'ipset', 'create', 'agent-n1', 'hash:ip', 'family', 'inet', 'maxelem', '65536')
      for (const a of ['10.8.0.2', '10.8.0.77', '10.8.0.78']) await sh(r, 'ipset', 'add', 'agent-n1', a)
      await track(r, '10.8.0.77', 40000)
      await track(r, '10.8.0.2', 40000)
      await new NodeFirewall(spec({admitted: ['10.8.0.2', '10.8.0.3']}), {runner: r}).apply()
      expect(await members(r)).toEqual(['10.8.0.2', '10.8.0.3'])
      expect(await trackedSources(r)).toEqual(['10.8.0.2'])
    }))

  it('apply replaces a leftover set with other parameters when nothing uses it', () =>
    inNetns(async (_ns, r) => {
      await sh(r, 'ipset', 'create', 'agent-n1', 'hash:ip', 'family', 'inet', 'netmask', '16')
      await sh(r, 'ipset', 'add', 'agent-n1', '10.8.0.0')
      await new NodeFirewall(spec(), {runner: r}).apply()
      expect(await members(r)).toEqual(['10.8.0.2', '10.8.0.3'])
      expect((await sh(r, 'ipset', 'list', '-t', 'agent-n1')).stdout).not.toContain('netmask')
    }))

  it('apply on a host whose FORWARD has rules of its own puts its jump first and leaves them', () =>
    inNetns(async (_ns, r) => {
      await loadHostRules(r)
      await sh(r, 'iptables', '-A', 'FORWARD', '-i', 'eth1', '-o', 'eth2', '-j', 'ACCEPT')
      const forward = async () => parseIptablesSave(await iptablesSave(r)).get('filter')!.chains.get('FORWARD')!.rules
      const hostRules = await forward()
      const fw = new NodeFirewall(spec(), {runner: r})
      await fw.apply()
      expect(await forward()).toEqual(['-A FORWARD -j AGENT-n1-FWD', ...hostRules])
      await fw.setAdmitted(['10.8.0.5'])
      expect(await forward()).toEqual(['-A FORWARD -j AGENT-n1-FWD', ...hostRules])
      await fw.remove()
      expect(await forward()).toEqual(hostRules)
    }))

  it('remove leaves the ruleset exactly as it was', () =>
    inNetns(async (_ns, r) => {
      await loadHostRules(r)
      const before = await save(r)
      const fw = new NodeFirewall(spec(), {runner: r})
      await fw.apply()
      expect(await save(r)).not.toBe(before)
      await fw.remove()
      expect(await save(r)).toBe(before)
      expect(await setNames(r)).toEqual([])
      await fw.remove() // idempotent
      expect(await save(r)).toBe(before)
    }))

  it('remove in an empty namespace leaves nothing but the tables nft created', () =>
    inNetns(async (_ns, r) => {
      const fw = new NodeFirewall(spec(), {runner: r})
      await fw.apply()
      await fw.remove()
      expect(withoutPristineTables(await save(r))).toBe('')
      expect(await setNames(r)).toEqual([])
    }))

  it("a second instance's chains survive the first one's removal", () =>
    inNetns(async (_ns, r) => {
      await loadHostRules(r)
      const before = await save(r)
      const a = new NodeFirewall(spec(), {runner: r})
      const b = new NodeFirewall(spec({instance: 'n1-b', tunInterface: 'tun1', subnet: '10.9.0.0/24', admitted: ['10.9.0.2']}), {runner: r})
      await a.apply()
      await b.apply()
      const withB = parseOwnedState(await iptablesSave(r), 'n1-b')
      await a.remove()
      const after = await iptablesSave(r)
      expect(parseOwnedState(after, 'n1').found).toBe(false)
      expect(parseOwnedState(after, 'n1-b')).toEqual(withB)
      expect(await setNames(r)).toEqual(['agent-n1-b'])
      expect(await members(r, 'agent-n1-b')).toEqual(['10.9.0.2'])
      await b.remove()
      expect(await save(r)).toBe(before)
    }))

  it('a payload the kernel refuses in its last table leaves nothing applied', () =>
    inNetns(async (_ns, r) => {
      await loadHostRules(r)
      const before = await save(r)
      // TCPMSS without "-p tcp" passes the parser and is refused by the kernel at COMMIT, after
      // the filter and nat tables of the same payload were committed. The edit keeps line numbers.
      const mss = '-A AGENT-n1-MSS -o tun0 -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu'
      const bad = tampering(r, (p) => p.replace(mss, '-A AGENT-n1-MSS -o tun0 -j TCPMSS --clamp-mss-to-pmtu'))
      const err = (await new NodeFirewall(spec(), {runner: bad}).apply().catch((e) => e)) as FirewallError
      expect(err).toBeInstanceOf(FirewallError)
      expect(err.message).toMatch(/^iptables-restore rejected line \d+ \(-A AGENT-n1-MSS -o tun0 .*\): line \d+: RULE_APPEND failed \(Invalid argument\)/)
      expect(err.payload.split('\n')[err.line! - 1]).toBe(mss)
      expect(parseOwnedState(await iptablesSave(r), 'n1').found).toBe(false)
      expect(await save(r)).toBe(before)
      expect(await setNames(r)).toEqual([]) // the set it created went too
    }))

  it('a payload rejected by the parser in a middle table leaves nothing applied, in an empty namespace too', () =>
    inNetns(async (_ns, r) => {
      const bad = tampering(r, (p) => p.replace('-j MASQUERADE', '-j NO-SUCH-CHAIN'))
      const err = (await new NodeFirewall(spec(), {runner: bad}).apply().catch((e) => e)) as FirewallError
      expect(err).toBeInstanceOf(FirewallError)
      expect(err.message).toContain("Chain 'NO-SUCH-CHAIN' does not exist")
      expect(parseOwnedState(await iptablesSave(r), 'n1').found).toBe(false)
      expect(withoutPristineTables(await save(r))).toBe('')
      expect(await setNames(r)).toEqual([])
    }))

  it('names the offending rule, not the COMMIT where nft noticed it', () =>
    inNetns(async (_ns, r) => {
      const payload = '*filter\n:AGENT-n1-FWD - [0:0]\n-A AGENT-n1-FWD -i tun0 -j NO-SUCH-CHAIN\n-A AGENT-n1-FWD -o tun0 -j DROP\nCOMMIT\n'
      const err = (await restore(payload, r).catch((e) => e)) as FirewallError
      expect(err).toBeInstanceOf(FirewallError)
      expect(err.stderr).toContain('Error occurred at line: 5')
      expect(err.line).toBe(3)
      expect(err.message).toBe("iptables-restore rejected line 3 (-A AGENT-n1-FWD -i tun0 -j NO-SUCH-CHAIN): Chain 'NO-SUCH-CHAIN' does not exist")
      expect(parseOwnedState(await iptablesSave(r), 'n1').found).toBe(false)
    }))

  it('a failed re-apply puts the previous rules back', () =>
    inNetns(async (_ns, r) => {
      await loadHostRules(r)
      await new NodeFirewall(spec(), {runner: r}).apply()
      const applied = await save(r)
      const bad = tampering(r, (p) => p.replace(/(\*mangle\n:AGENT-n1-MSS - \[0:0\]\n)/, '$1-A AGENT-n1-MSS -j TCPMSS --clamp-mss-to-pmtu\n'))
      await expect(new NodeFirewall(spec({admitted: ['10.8.0.7'], snat: '192.0.2.1'}), {runner: bad}).apply()).rejects.toBeInstanceOf(FirewallError)
      expect(await save(r)).toBe(applied)
      expect(await members(r)).toEqual(['10.8.0.2', '10.8.0.3'])
    }))

  it('finds and removes what a killed process left behind: chains, then the set', () =>
    inNetns(async (_ns, r) => {
      await loadHostRules(r)
      const before = await save(r)
      await new NodeFirewall(spec(), {runner: r}).apply() // then "kill -9": no remove()
      expect(await members(r)).toEqual(['10.8.0.2', '10.8.0.3'])
      for (const a of ['10.8.0.1', '10.8.0.2', '10.8.0.3', '10.8.0.4']) await track(r, a, 40000)
      expect(await findFirewallInstances({runner: r})).toEqual(['n1'])
      expect(await removeFirewall('n1', {runner: r})).toBe(true)
      expect(await save(r)).toBe(before)
      expect(await setNames(r)).toEqual([])
      // The dead run's clients lose their flows; nobody else does.
      expect(await trackedSources(r)).toEqual(['10.8.0.1', '10.8.0.4'])
      expect(await removeFirewall('n1', {runner: r})).toBe(false)
    }))

  it('finds and removes a set left without its chains', () =>
    inNetns(async (_ns, r) => {
      await new NodeFirewall(spec(), {runner: r}).apply()
      await r('iptables-restore', ['--noflush'], {input: renderRemoval(await iptablesSave(r), 'n1')})
      expect(await setNames(r)).toEqual(['agent-n1'])
      expect(await findFirewallInstances({runner: r})).toEqual(['n1'])
      expect(await removeFirewall('n1', {runner: r})).toBe(true)
      expect(await setNames(r)).toEqual([])
      expect(await findFirewallInstances({runner: r})).toEqual([])
    }))

  it('refuses to destroy the set while a rule outside our chains names it', () =>
    inNetns(async (_ns, r) => {
      await new NodeFirewall(spec(), {runner: r}).apply()
      await sh(r, 'iptables', '-A', 'OUTPUT', '-m', 'set', '--match-set', 'agent-n1', 'dst', '-j', 'ACCEPT')
      await expect(removeFirewall('n1', {runner: r})).rejects.toThrow(/cannot destroy the admission set agent-n1: .*in use by a kernel component/)
      expect(parseOwnedState(await iptablesSave(r), 'n1').found).toBe(false) // the chains went first
    }))

  it('removes a half-removed leftover (chain without its jump)', () =>
    inNetns(async (_ns, r) => {
      await loadHostRules(r)
      const before = await save(r)
      await new NodeFirewall(spec(), {runner: r}).apply()
      await sh(r, 'iptables', '-t', 'mangle', '-D', 'FORWARD', '-j', 'AGENT-n1-MSS')
      expect(await removeFirewall('n1', {runner: r})).toBe(true)
      expect(await save(r)).toBe(before)
    }))

  it('removes a leftover whose only remains are the INPUT chain and its jump', () =>
    inNetns(async (_ns, r) => {
      await loadHostRules(r)
      const before = await save(r)
      await new NodeFirewall(spec(), {runner: r}).apply()
      await r('iptables-restore', ['--noflush'], {input: '*filter\n-D FORWARD -j AGENT-n1-FWD\n-F AGENT-n1-FWD\n-X AGENT-n1-FWD\nCOMMIT\n'})
      await r('iptables-restore', ['--noflush'], {input: '*nat\n-D POSTROUTING -j AGENT-n1-NAT\n-F AGENT-n1-NAT\n-X AGENT-n1-NAT\nCOMMIT\n'})
      await r('iptables-restore', ['--noflush'], {input: '*mangle\n-D FORWARD -j AGENT-n1-MSS\n-F AGENT-n1-MSS\n-X AGENT-n1-MSS\nCOMMIT\n'})
      expect(await findFirewallInstances({runner: r})).toEqual(['n1'])
      expect(await removeFirewall('n1', {runner: r})).toBe(true)
      expect(await save(r)).toBe(before)
    }))

  /**
   * Packets through the real kernel. The node namespace has a "tun0" (a veth to the client's
   * namespace: the firewall only sees interface names), the egress eth0 (to a target) and lan0
   * (another network of the node, like docker0 or a LAN, with a host of its own).
   */
  it('forwards an admitted client to the egress only, keeps it off the node, and drops tunnel sources from elsewhere', () =>
    inNetnses(['c', 't', 'l'], async ([, nsC, nsT, nsL], [n, c, t, l]) => {
      await sh(n, 'ip', 'link', 'add', 'tun0', 'type', 'veth', 'peer', 'name', 'c0', 'netns', nsC)
      await sh(n, 'ip', 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 't0', 'netns', nsT)
      await sh(n, 'ip', 'link', 'add', 'lan0', 'type', 'veth', 'peer', 'name', 'l0', 'netns', nsL)
      const up = async (r: Runner, dev: string, cidr: string, via?: string) => {
        await sh(r, 'ip', 'address', 'add', cidr, 'dev', dev)
        await sh(r, 'ip', 'link', 'set', dev, 'up')
        await sh(r, 'ip', 'link', 'set', 'lo', 'up')
        if (via !== undefined) await sh(r, 'ip', 'route', 'add', 'default', 'via', via)
      }
      await up(n, 'tun0', '10.8.0.1/24')
      await up(n, 'eth0', '192.0.2.1/24')
      await up(n, 'lan0', '172.30.0.1/24')
      await up(c, 'c0', '10.8.0.2/24', '10.8.0.1')
      await up(t, 't0', '192.0.2.2/24') // no route back to 10.8.0.0/24: only NAT gets replies home
      await up(l, 'l0', '172.30.0.2/24', '172.30.0.1')
      // Forwarding on; reverse-path filtering off, so only our rules decide about spoofed sources.
      for (const key of ['ip_forward', 'conf/all/rp_filter', 'conf/default/rp_filter', 'conf/lan0/rp_filter']) {
        await sh(n, 'sh', '-c', `echo ${key === 'ip_forward' ? 1 : 0} > /proc/sys/net/ipv4/${key}`)
      }
      // The target counts the echo requests it gets from the node's egress address.
      await sh(t, 'iptables', '-A', 'INPUT', '-s', '192.0.2.1', '-p', 'icmp', '--icmp-type', 'echo-request', '-j', 'ACCEPT')
      const echoesAtTarget = async () => Number(/^\[(\d+):\d+\] -A INPUT -s 192\.0\.2\.1\/32/m.exec((await sh(t, 'iptables-save', '-c', '-t', 'filter')).stdout)?.[1] ?? NaN)

      const fw = new NodeFirewall(spec({admitted: ['10.8.0.2']}), {runner: n})
      await fw.apply()
      const ping = async (r: Runner, dst: string, from?: string) =>
        (await r('ping', ['-c', '1', '-W', '1', ...(from ? ['-I', from] : []), dst], {allowFail: true})).code === 0
      /** "refused" means the SYN reached a closed port, "timeout" that it was dropped on the way. */
      const tcp = async (r: Runner, host: string) =>
        (
          await r(process.execPath, [
            '-e',
            `const s=require('net').connect(2222,'${host}');s.on('connect',()=>{console.log('connected');process.exit(0)});` +
              `s.on('error',e=>{console.log(e.code==='ECONNREFUSED'?'refused':e.code);process.exit(0)});setTimeout(()=>{console.log('timeout');process.exit(0)},1500)`,
          ])
        ).stdout.trim()

      // (a) Out of the egress interface: forwarded and masqueraded.
      expect(await ping(c, '192.0.2.2')).toBe(true)
      expect(await echoesAtTarget()).toBe(1)
      // (a) Into another network of the node: not forwarded.
      expect(await ping(c, '172.30.0.2')).toBe(false)
      // (c) The node answers pings from the tunnel, but its services are out of the tunnel's reach,
      expect(await ping(c, '10.8.0.1')).toBe(true)
      expect(await tcp(c, '10.8.0.1')).toBe('timeout')
      expect(await tcp(c, '172.30.0.1')).toBe('timeout')
      // ... and not from elsewhere: the target, on the egress side, still reaches the port.
      expect(await tcp(t, '192.0.2.1')).toBe('refused')
      // (b) A tunnel-subnet source arriving on lan0 is neither forwarded nor NATed.
      await sh(l, 'ip', 'address', 'add', '10.8.0.5/32', 'dev', 'l0')
      await ping(l, '192.0.2.2', '10.8.0.5')
      expect(await echoesAtTarget()).toBe(1)
      // The same host with its own address gets through (nothing else here blocks lan0).
      await sh(n, 'iptables', '-t', 'nat', '-A', 'POSTROUTING', '-s', '172.30.0.0/24', '-o', 'eth0', '-j', 'MASQUERADE')
      expect(await ping(l, '192.0.2.2', '172.30.0.2')).toBe(true)
      expect(await echoesAtTarget()).toBe(2)

      // (d) A withdrawn client's live flow stops at once. A UDP "session" the client keeps
      // sending on, same ports every time, so it is one conntrack entry (masqueraded) on the node.
      const udp = (r: Runner, script: string) => r(process.execPath, ['-e', script], {allowFail: true})
      const send = `const s=require('dgram').createSocket('udp4');s.bind(40000,()=>{s.send('x',5353,'192.0.2.2',()=>s.close())})`
      await udp(c, send)
      const flowsOf = async (src: string) => (await trackedSources(n)).filter((x) => x === src).length
      expect(await flowsOf('10.8.0.2')).toBeGreaterThan(0)
      await fw.setAdmitted([])
      expect(await flowsOf('10.8.0.2')).toBe(0)
      expect(await ping(c, '192.0.2.2')).toBe(false)
      await udp(c, send)
      expect(await flowsOf('10.8.0.2')).toBe(0) // dropped before its entry was confirmed
      // Admitted again: through again.
      await fw.setAdmitted(['10.8.0.2'])
      expect(await ping(c, '192.0.2.2')).toBe(true)
      expect(await echoesAtTarget()).toBe(3)
      // Nothing in the ruleset names the client, whatever its state.
      expect(await iptablesSave(n)).not.toContain('10.8.0.2')
    }))

  it('reports a binary missing inside the namespace like a missing one outside', () =>
    inNetns(async (_ns, r) => {
      await expect(r('no-such-tool-xyz', [])).rejects.toBeInstanceOf(CommandNotFoundError)
    }))
})

/** A link to hang routes on: dummy if the kernel has it, else one end of a veth pair. */
async function addLink(r: Runner, name: string): Promise<void> {
  const dummy = await r('ip', ['link', 'add', name, 'type', 'dummy'], {allowFail: true})
  if (dummy.code !== 0) {
    await sh(r, 'ip', 'link', 'add', name, 'type', 'veth', 'peer', 'name', `${name}p`)
    await sh(r, 'ip', 'link', 'set', `${name}p`, 'up')
  }
  await sh(r, 'ip', 'link', 'set', name, 'up')
}

/** An uplink d0 (192.0.2.10/24, default via 192.0.2.1) and a persistent TUN tun0 configured by us. */
async function uplinkAndTun(r: Runner): Promise<void> {
  await addLink(r, 'd0')
  await sh(r, 'ip', 'address', 'add', '192.0.2.10/24', 'dev', 'd0')
  await sh(r, 'ip', 'route', 'add', 'default', 'via', '192.0.2.1', 'dev', 'd0')
  await sh(r, 'ip', 'tuntap', 'add', 'dev', 'tun0', 'mode', 'tun')
  await configureInterface('tun0', {address: '10.8.0.2', prefix: 24, mtu: 1400}, {runner: r})
}

const routeTable = async (r: Runner) => JSON.parse((await sh(r, 'ip', '-N', '-j', 'route', 'show')).stdout) as Array<Record<string, unknown>>
const routeVia = async (r: Runner, ip: string) => (JSON.parse((await sh(r, 'ip', '-j', 'route', 'get', ip)).stdout) as Array<{dev: string; gateway?: string}>)[0]

describe.skipIf(!isRoot || !hasTools)('routes in a network namespace', () => {
  it('configures the interface: address, MTU, up; again without error', () =>
    inNetns(async (_ns, r) => {
      await uplinkAndTun(r)
      await configureInterface('tun0', {address: '10.8.0.2', prefix: 24, mtu: 1400}, {runner: r})
      const [link] = JSON.parse((await sh(r, 'ip', '-j', 'address', 'show', 'dev', 'tun0')).stdout)
      expect(link.mtu).toBe(1400)
      expect(link.flags).toContain('UP')
      expect(link.addr_info.filter((a: {family: string}) => a.family === 'inet')).toMatchObject([{local: '10.8.0.2', prefixlen: 24}])
      await configureInterface('d0', {address: '10.9.0.2', peer: '10.9.0.1', mtu: 1500}, {runner: r})
      expect((await sh(r, 'ip', '-j', 'address', 'show', 'dev', 'd0')).stdout).toContain('"local":"10.9.0.2","address":"10.9.0.1"')
    }))

  it('adds routes into the device and removes exactly them', () =>
    inNetns(async (_ns, r) => {
      await uplinkAndTun(r)
      const before = await routeTable(r)
      const added = await addRoutes('tun0', ['121.201.64.81/32', '203.0.113.0/24'], {runner: r})
      expect(added).toEqual([
        {dst: '121.201.64.81/32', dev: 'tun0'},
        {dst: '203.0.113.0/24', dev: 'tun0'},
      ])
      const table = await routeTable(r)
      expect(table).toContainEqual(expect.objectContaining({dst: '121.201.64.81', dev: 'tun0', protocol: String(ROUTE_PROTO)}))
      expect((await routeVia(r, '203.0.113.9')).dev).toBe('tun0')
      // Again, as after a crash with the device still there: replace, not "File exists".
      expect(await addRoutes('tun0', ['121.201.64.81/32'], {runner: r})).toEqual([{dst: '121.201.64.81/32', dev: 'tun0'}])
      await removeRoutes(added, {runner: r})
      expect(await routeTable(r)).toEqual(before)
      await removeRoutes(added, {runner: r}) // already gone
    }))

  it('refuses to steal a route to the same prefix via another device', () =>
    inNetns(async (_ns, r) => {
      await uplinkAndTun(r)
      await sh(r, 'ip', 'route', 'add', '203.0.113.0/24', 'via', '192.0.2.254', 'dev', 'd0', 'metric', '100')
      const before = await routeTable(r)
      await expect(addRoutes('tun0', ['121.201.64.81/32', '203.0.113.0/24'], {runner: r})).rejects.toThrow(
        /refusing to take over existing routes for tun0: 203\.0\.113\.0\/24 is already routed via 192\.0\.2\.254 dev d0 metric 100;/,
      )
      expect(await routeTable(r)).toEqual(before)
    }))

  it('takes over a route on its own device left from an earlier run', () =>
    inNetns(async (_ns, r) => {
      await uplinkAndTun(r)
      await sh(r, 'ip', 'route', 'add', '203.0.113.0/24', 'dev', 'tun0')
      const added = await addRoutes('tun0', ['203.0.113.0/24'], {runner: r})
      expect(await routeTable(r)).toContainEqual(expect.objectContaining({dst: '203.0.113.0/24', dev: 'tun0', protocol: String(ROUTE_PROTO)}))
      await removeRoutes(added, {runner: r})
      expect((await routeTable(r)).some((x) => x.dst === '203.0.113.0/24')).toBe(false)
    }))

  it('keeps the node endpoint outside a tunnel route that covers it', () =>
    inNetns(async (_ns, r) => {
      await uplinkAndTun(r)
      const before = await routeTable(r)
      const cidrs = ['198.51.100.0/24']
      expect(await keepEndpointOutside('203.0.113.1', cidrs, {runner: r, tunInterface: 'tun0'})).toBeNull()
      const pin = await keepEndpointOutside('198.51.100.7', cidrs, {runner: r, tunInterface: 'tun0'})
      expect(pin).toEqual({dst: '198.51.100.7/32', dev: 'd0', via: '192.0.2.1'})
      const added = await addRoutes('tun0', cidrs, {runner: r})
      expect(await routeVia(r, '198.51.100.7')).toMatchObject({dev: 'd0', gateway: '192.0.2.1'})
      expect((await routeVia(r, '198.51.100.8')).dev).toBe('tun0')
      // Called again while the tunnel routes exist: the real path can no longer be asked, so it
      // refuses, and leaves the pin it had in place.
      const pinned = await routeTable(r)
      await expect(keepEndpointOutside('198.51.100.7', cidrs, {runner: r, tunInterface: 'tun0'})).rejects.toThrow(/must run before the tunnel routes/)
      expect(await routeTable(r)).toEqual(pinned)
      await removeRoutes([pin!, ...added], {runner: r})
      expect(await routeTable(r)).toEqual(before)
    }))

  it("tolerates routes that vanished with their device", () =>
    inNetns(async (_ns, r) => {
      await uplinkAndTun(r)
      const added = await addRoutes('tun0', ['203.0.113.0/24'], {runner: r})
      await sh(r, 'ip', 'tuntap', 'del', 'dev', 'tun0', 'mode', 'tun')
      await expect(removeRoutes(added, {runner: r})).resolves.toBeUndefined()
    }))
})
