/**
 * The system helpers under the firewall and routes, without root: the command runner, /proc/sys
 * access (against a scratch tree) and NodeFirewall's use of iptables-restore, ipset and
 * conntrack through a fake runner that records every call.
 */
import {mkdir, mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {FirewallError, FlowDeletionError, NodeFirewall, deleteConntrack, findFirewallInstances, removeFirewall, restore} from '../../src/core/firewall/iptables.js'
import {CommandError, CommandNotFoundError, formatCommand, run, type RunOptions, type Runner} from '../../src/core/sys/run.js'
import {getSysctl, setSysctl, sysctlPath} from '../../src/core/sys/sysctl.js'

describe('run', () => {
  it('returns stdout and feeds stdin', async () => {
    expect(await run('cat', [], {input: 'hello\n'})).toEqual({stdout: 'hello\n', stderr: '', code: 0})
  })

  it('passes arguments without a shell', async () => {
    const {stdout} = await run('printf', ['%s|', 'a b', '$(id)', ';'])
    expect(stdout).toBe('a b|$(id)|;|')
  })

  it('rejects with the command, its arguments and stderr', async () => {
    const err = (await run('sh', ['-c', 'echo bad thing >&2; exit 3', 'x y']).catch((e) => e)) as CommandError
    expect(err).toBeInstanceOf(CommandError)
    expect(err.code).toBe(3)
    expect(err.stderr).toBe('bad thing\n')
    expect(err.message).toBe('sh -c "echo bad thing >&2; exit 3" "x y" exited with 3: bad thing')
  })

  it('resolves with the exit code when allowFail', async () => {
    expect(await run('sh', ['-c', 'echo no >&2; exit 2'], {allowFail: true})).toEqual({stdout: '', stderr: 'no\n', code: 2})
  })

  it('names the package to install for a missing binary', async () => {
    const env = process.env.PATH
    process.env.PATH = '/nonexistent'
    try {
      const err = await run('iptables-restore', ['--noflush']).catch((e) => e)
      expect(err).toBeInstanceOf(CommandNotFoundError)
      expect(err.message).toBe('iptables-restore not found: install iptables')
      expect((await run('ip', []).catch((e) => e)).message).toBe('ip not found: install iproute2')
      expect((await run('frobnicate', []).catch((e) => e)).message).toMatch(/^frobnicate not found: is it installed/)
    } finally {
      process.env.PATH = env
    }
  })

  it('kills a command that hangs past its timeout', async () => {
    const err = await run('sleep', ['5'], {timeoutMs: 100}).catch((e) => e)
    expect(err).toBeInstanceOf(CommandError)
    expect(err.message).toMatch(/^sleep 5 was killed/)
  })

  it('survives a child that exits without reading stdin', async () => {
    const err = await run('sh', ['-c', 'exit 1'], {input: 'x'.repeat(1 << 20)}).catch((e) => e)
    expect(err).toBeInstanceOf(CommandError)
  })

  it('formats commands for messages', () => {
    expect(formatCommand('ip', ['route', 'add', '10.0.0.0/8', 'dev', 'tun0'])).toBe('ip route add 10.0.0.0/8 dev tun0')
  })
})

describe('sysctl', () => {
  let root: string
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'fw-sysctl-'))
    await mkdir(join(root, 'net/ipv4/conf/eth0.100'), {recursive: true})
    await writeFile(join(root, 'net/ipv4/ip_forward'), '0\n')
    await writeFile(join(root, 'net/ipv4/conf/eth0.100/rp_filter'), '1\n')
  })
  afterAll(() => rm(root, {recursive: true, force: true}))

  it('maps keys to paths like sysctl(8)', () => {
    expect(sysctlPath('net.ipv4.ip_forward')).toBe('/proc/sys/net/ipv4/ip_forward')
    expect(sysctlPath('net/ipv4/conf/eth0.100/rp_filter')).toBe('/proc/sys/net/ipv4/conf/eth0.100/rp_filter')
    for (const bad of ['', '../etc/passwd', 'net/../../etc', 'net..ipv4', 'a b', 'net.ipv4.ip_forward\n']) expect(() => sysctlPath(bad), bad).toThrow(/invalid sysctl key/)
  })

  it('reads trimmed values and returns the previous value on write', async () => {
    expect(await getSysctl('net.ipv4.ip_forward', {root})).toBe('0')
    expect(await setSysctl('net.ipv4.ip_forward', 1, {root})).toBe('0')
    expect(await readFile(join(root, 'net/ipv4/ip_forward'), 'utf8')).toBe('1\n')
    expect(await setSysctl('net.ipv4.ip_forward', '0', {root})).toBe('1')
    expect(await getSysctl('net/ipv4/conf/eth0.100/rp_filter', {root})).toBe('1')
  })

  it('says which parameter is missing', async () => {
    await expect(getSysctl('net.ipv4.nope', {root})).rejects.toThrow(/cannot read sysctl net\.ipv4\.nope .*no such parameter/)
    await expect(setSysctl('net.ipv4.ip_forward', '1\n0', {root})).rejects.toThrow(/invalid value/)
  })

  it('reads the real ip_forward of this namespace', async () => {
    expect(['0', '1']).toContain(await getSysctl('net.ipv4.ip_forward'))
  })
})

/** A set as the fake kernel keeps it. */
interface FakeSet {
  header: string
  members: Set<string>
}

const OUR_HEADER = 'hash:ip family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x62b6f8f0'

/**
 * A runner that records calls and plays a small kernel: iptables-save from a script, ipset sets
 * in a map (save, create, restore, destroy, list -n) and conntrack entries counted per original
 * source. Hooks make a command fail the way the real one does.
 */
function fakeRunner(
  opts: {
    save?: () => string
    restore?: (input: string) => void
    /** stderr to fail `ipset restore` with (exit 1), or undefined to apply it. */
    ipsetRestoreFails?: (input: string) => string | undefined
    /** stderr to fail `conntrack -D` for this address with (exit 1), or undefined. */
    conntrackFails?: (address: string) => string | undefined
    /** How many `ipset destroy` calls answer "in use" before one succeeds. */
    inUse?: number
  } = {},
) {
  const calls: Array<{cmd: string; args: readonly string[]; input?: string}> = []
  const sets = new Map<string, FakeSet>()
  const flows = new Map<string, number>()
  let inUse = opts.inUse ?? 0
  let inFlight = 0
  let maxInFlight = 0
  const ipset = (args: readonly string[], input: string): [string, string, number] => {
    const missing: [string, string, number] = ['', 'ipset v7.17: The set with the given name does not exist\n', 1]
    const [verb, name] = args
    const set = sets.get(name)
    switch (verb) {
      case 'save':
        if (!set) return missing
        return [`create ${name} ${set.header}\n${[...set.members].map((m) => `add ${name} ${m}\n`).join('')}`, '', 0]
      case 'create':
        if (set && !args.includes('-exist')) return ['', 'ipset v7.17: Set cannot be created: set with the same name already exists\n', 1]
        if (!set) sets.set(name, {header: OUR_HEADER, members: new Set()})
        return ['', '', 0]
      case 'destroy':
        if (!set) return missing
        if (inUse > 0) {
          inUse--
          return ['', 'ipset v7.17: Set cannot be destroyed: it is in use by a kernel component\n', 1]
        }
        sets.delete(name)
        return ['', '', 0]
      case 'list':
        return [[...sets.keys()].map((n) => `${n}\n`).join(''), '', 0]
      case 'restore': {
        const failure = opts.ipsetRestoreFails?.(input)
        if (failure !== undefined) return ['', failure, 1]
        for (const line of input.split('\n').filter(Boolean)) {
          const [op, setName, address] = line.split(' ')
          const target = sets.get(setName)
          if (!target) return missing
          if (op === 'add') target.members.add(address)
          else target.members.delete(address)
        }
        return ['', '', 0]
      }
    }
    return ['', `unexpected ipset ${args.join(' ')}`, 2]
  }
  const num = (a: string) => a.split('.').reduce((acc, o) => acc * 256 + Number(o), 0)
  const conntrack = async (args: readonly string[]): Promise<[string, string, number]> => {
    if (args[0] === '--version') return ['conntrack v1.4.7 (conntrack-tools)\n', '', 0]
    // -D|-L --orig-src <address> [--mask-src <mask>]
    const address = args[2]
    const mask = args[3] === '--mask-src' ? num(args[4]) : 0xffffffff
    if (args[0] === '-L') {
      const shown = [...flows].filter(([src]) => ((num(src) & mask) >>> 0) === num(address))
      const lines = shown.flatMap(([src, count]) => Array.from({length: count}, (_, i) => `tcp      6 431999 ESTABLISHED src=${src} dst=10.99.0.1 sport=${40000 + i} dport=443 src=10.99.0.1 dst=10.0.0.2 sport=443 dport=${40000 + i} [ASSURED] mark=0 use=1\n`))
      return [lines.join(''), `conntrack v1.4.7 (conntrack-tools): ${lines.length} flow entries have been shown.\n`, 0]
    }
    inFlight++
    maxInFlight = Math.max(maxInFlight, inFlight)
    await new Promise((r) => setTimeout(r, 1))
    inFlight--
    const failure = opts.conntrackFails?.(address)
    if (failure !== undefined) return ['', failure, 1]
    let n = 0
    for (const [src, count] of flows) {
      if (((num(src) & mask) >>> 0) === num(address)) {
        n += count
        flows.delete(src)
      }
    }
    return ['', `conntrack v1.4.7 (conntrack-tools): ${n} flow entries have been deleted.\n`, n > 0 ? 0 : 1]
  }
  const runner: Runner = async (cmd, args, o?: RunOptions) => {
    calls.push({cmd, args, input: o?.input})
    let out: [string, string, number] = ['', '', 0]
    if (cmd === 'iptables-save') out = [opts.save?.() ?? '', '', 0]
    else if (cmd === 'iptables-restore') opts.restore?.(o?.input ?? '')
    else if (cmd === 'ipset') out = ipset(args, o?.input ?? '')
    else if (cmd === 'conntrack') out = await conntrack(args)
    const [stdout, stderr, code] = out
    if (code !== 0 && !o?.allowFail) throw new CommandError(`${cmd} failed`, cmd, args, code, stdout, stderr)
    return {stdout, stderr, code}
  }
  /** The calls as "cmd arg..." strings, to compare order at a glance. */
  const trace = () => calls.map((c) => [c.cmd, ...c.args].join(' '))
  return {calls, runner, sets, flows, trace, maxInFlight: () => maxInFlight}
}

const SPEC = {instance: 'n1', tunInterface: 'tun0', subnet: '10.8.0.0/24', egressInterface: 'eth0', snat: 'masquerade', admitted: []}

describe('restore errors', () => {
  const fail = (stderr: string): Runner => async (cmd, args) => {
    throw new CommandError('x', cmd, args, 2, '', stderr)
  }
  const payload = '*filter\n:AGENT-n1-FWD - [0:0]\n-A AGENT-n1-FWD -j BOGUS\nCOMMIT\n'

  it('names the payload line and the reason (nft parse error)', async () => {
    const stderr = "iptables-restore v1.8.9 (nf_tables): Chain 'BOGUS' does not exist\nError occurred at line: 3\nTry `iptables-restore -h' or 'iptables-restore --help' for more information.\n"
    const err = (await restore(payload, fail(stderr)).catch((e) => e)) as FirewallError
    expect(err).toBeInstanceOf(FirewallError)
    expect(err.line).toBe(3)
    expect(err.message).toBe("iptables-restore rejected line 3 (-A AGENT-n1-FWD -j BOGUS): Chain 'BOGUS' does not exist")
  })

  it('names the payload line for a kernel refusal at commit', async () => {
    const stderr = 'iptables-restore v1.8.9 (nf_tables): \nline 3: RULE_APPEND failed (Invalid argument): rule in chain AGENT-n1-FWD\n'
    const err = (await restore(payload, fail(stderr)).catch((e) => e)) as FirewallError
    expect(err.line).toBe(3)
    expect(err.message).toMatch(/^iptables-restore rejected line 3 \(-A AGENT-n1-FWD -j BOGUS\): line 3: RULE_APPEND failed/)
  })

  it('points at the rule naming a missing chain when nft reports the COMMIT line', async () => {
    const p = '*filter\n:AGENT-n1-FWD - [0:0]\n-A AGENT-n1-FWD -j NOPE\n-A AGENT-n1-FWD -j DROP\nCOMMIT\n'
    const stderr = "iptables-restore v1.8.9 (nf_tables): Chain 'NOPE' does not exist\nError occurred at line: 5\n"
    const err = (await restore(p, fail(stderr)).catch((e) => e)) as FirewallError
    expect(err.line).toBe(3)
    expect(err.message).toBe("iptables-restore rejected line 3 (-A AGENT-n1-FWD -j NOPE): Chain 'NOPE' does not exist")
    const other = (await restore(p, fail('iptables-restore v1.8.9 (nf_tables): something odd\nError occurred at line: 5\n')).catch((e) => e)) as FirewallError
    expect(other.line).toBe(5)
    expect(other.message).toBe('iptables-restore rejected line 5 (COMMIT): something odd')
  })

  it('understands the legacy backend', async () => {
    const err = (await restore(payload, fail('iptables-restore: line 3 failed\n')).catch((e) => e)) as FirewallError
    expect(err.line).toBe(3)
  })

  it('runs nothing for an empty payload', async () => {
    const {calls, runner} = fakeRunner()
    await restore('', runner)
    expect(calls).toEqual([])
  })
})

describe('NodeFirewall lifecycle', () => {
  it('creates the set, then applies the chains with iptables-restore --noflush -w', async () => {
    const {calls, runner, sets, trace} = fakeRunner()
    await new NodeFirewall(SPEC, {runner}).apply()
    expect(trace()).toEqual([
      'conntrack --version',
      'ipset save agent-n1',
      'ipset create agent-n1 hash:ip family inet maxelem 65536 -exist',
      'iptables-save',
      'iptables-restore --noflush -w',
    ])
    expect(calls[4].input).toMatch(/^\*filter\n:AGENT-n1-FWD - \[0:0\]\n-I FORWARD 1 -j AGENT-n1-FWD\n/)
    expect(calls[4].input).toContain('-A AGENT-n1-FWD -i tun0 -o eth0 -m set --match-set agent-n1 src -j ACCEPT')
    expect(sets.get('agent-n1')!.members.size).toBe(0)
  })

  it('fills the set with the admitted list before the chains that match it', async () => {
    const {calls, runner, sets, trace} = fakeRunner()
    await new NodeFirewall({...SPEC, admitted: ['10.8.0.5', '10.8.0.4']}, {runner}).apply()
    expect(trace().slice(2, 5)).toEqual(['ipset create agent-n1 hash:ip family inet maxelem 65536 -exist', 'ipset restore -exist', 'iptables-save'])
    expect(calls[3].input).toBe('add agent-n1 10.8.0.4\nadd agent-n1 10.8.0.5\n')
    expect([...sets.get('agent-n1')!.members]).toEqual(['10.8.0.4', '10.8.0.5'])
    // No client address in any iptables payload: admission is the set's business.
    expect(calls.filter((c) => c.cmd === 'iptables-restore').map((c) => c.input).join('')).not.toMatch(/10\.8\.0\.[45]\b/)
  })

  it('changes the set, element by element, only between apply and remove', async () => {
    const {calls, runner, sets, trace} = fakeRunner()
    const fw = new NodeFirewall(SPEC, {runner})
    await fw.setAdmitted(['10.8.0.5'])
    expect(calls).toHaveLength(0)
    await fw.apply()
    expect([...sets.get('agent-n1')!.members]).toEqual(['10.8.0.5'])
    calls.length = 0
    await fw.setAdmitted(['10.8.0.6', '10.8.0.5'])
    expect(trace()).toEqual(['ipset restore -exist'])
    expect(calls[0].input).toBe('add agent-n1 10.8.0.6\n')
    calls.length = 0
    await fw.setAdmitted(['10.8.0.6'])
    expect(trace()).toEqual(['ipset restore -exist', 'conntrack -D --orig-src 10.8.0.5'])
    expect(calls[0].input).toBe('del agent-n1 10.8.0.5\n')
    calls.length = 0
    await fw.setAdmitted(['10.8.0.6'])
    expect(calls).toHaveLength(0) // unchanged: an empty payload runs nothing
    await fw.remove()
    calls.length = 0
    await fw.setAdmitted(['10.8.0.7'])
    expect(calls).toHaveLength(0)
    expect(fw.admitted).toEqual(['10.8.0.7'])
  })

  it('changes one of 10,000 admitted clients with one one-line ipset restore and no listing', async () => {
    const {calls, runner, trace} = fakeRunner()
    const all = Array.from({length: 10_000}, (_, i) => `10.8.${i >> 8}.${i & 255}`)
    const fw = new NodeFirewall({...SPEC, subnet: '10.8.0.0/16', admitted: all}, {runner})
    await fw.apply()
    calls.length = 0
    const started = performance.now()
    await fw.setAdmitted([...all.slice(1), '10.8.200.1'])
    const elapsed = performance.now() - started
    expect(trace()).toEqual(['ipset restore -exist', 'conntrack -D --orig-src 10.8.0.0'])
    expect(calls[0].input).toBe('del agent-n1 10.8.0.0\nadd agent-n1 10.8.200.1\n')
    expect(elapsed).toBeLessThan(500) // generous; measured about 15 ms
  })

  it('applies overlapping setAdmitted calls in call order', async () => {
    const seen: string[] = []
    let release!: () => void
    const gate = new Promise<void>((r) => (release = r))
    const {runner: base} = fakeRunner()
    const runner: Runner = async (cmd, args, o) => {
      if (cmd === 'ipset' && args[0] === 'restore') {
        if (o?.input?.includes('add agent-n1 10.8.0.2')) await gate
        seen.push(o?.input?.trim().replaceAll('\n', ', ') ?? '')
      }
      return base(cmd, args, o)
    }
    const fw = new NodeFirewall(SPEC, {runner})
    await fw.apply()
    const a = fw.setAdmitted(['10.8.0.2'])
    const b = fw.setAdmitted(['10.8.0.3'])
    release()
    await Promise.all([a, b])
    expect(seen).toEqual(['add agent-n1 10.8.0.2', 'del agent-n1 10.8.0.2, add agent-n1 10.8.0.3'])
    expect(fw.admitted).toEqual(['10.8.0.3'])
  })

  it('refuses a bad list before running anything, and changes nothing', async () => {
    const {calls, runner, sets} = fakeRunner()
    const fw = new NodeFirewall({...SPEC, admitted: ['10.8.0.2']}, {runner})
    await fw.apply()
    calls.length = 0
    await expect(fw.setAdmitted(['10.8.0.3', '10.9.0.1'])).rejects.toThrow(/outside the tunnel subnet/)
    await expect(fw.setAdmitted(['10.8.0.3', '10.8.0.256'])).rejects.toThrow(/invalid client address/)
    await expect(fw.setAdmitted(['10.8.0.3', '10.8.0.4/32'])).rejects.toThrow(/invalid client address/)
    expect(calls).toEqual([])
    expect(fw.admitted).toEqual(['10.8.0.2'])
    expect([...sets.get('agent-n1')!.members]).toEqual(['10.8.0.2'])
    expect(() => new NodeFirewall({...SPEC, admitted: ['10.9.0.1']}, {runner})).toThrow(/outside the tunnel subnet/)
    expect(calls).toEqual([])
  })

  it('after a failed ipset restore keeps the withdrawals, drops the additions, reads the set back, and still cuts the withdrawn flows', async () => {
    let failing = false
    const fake = fakeRunner({
      // What the real ipset does: lines before the failing one applied, the rest not.
      ipsetRestoreFails: (input) => {
        if (!failing) return undefined
        const first = input.split('\n')[0].split(' ')
        fake.sets.get(first[1])!.members.delete(first[2])
        return 'ipset v7.17: Error in line 2: Hash is full, cannot add more elements\n'
      },
    })
    const {runner, sets, flows, trace, calls} = fake
    const fw = new NodeFirewall({...SPEC, admitted: ['10.8.0.2']}, {runner})
    await fw.apply()
    flows.set('10.8.0.2', 3)
    failing = true
    const err = (await fw.setAdmitted(['10.8.0.3']).catch((e) => e)) as FirewallError
    expect(err).toBeInstanceOf(FirewallError)
    expect(err.message).toBe('ipset restore rejected line 2 (add agent-n1 10.8.0.3) of the changes to agent-n1: Hash is full, cannot add more elements')
    expect(err.line).toBe(2)
    expect(fw.admitted).toEqual([]) // 10.8.0.2 is withdrawn whatever the kernel took; 10.8.0.3 was refused
    expect([...sets.get('agent-n1')!.members]).toEqual([]) // the del went in, the add did not
    expect(flows.get('10.8.0.2')).toBe(3) // not deleted yet: it was not known to be out of the set
    failing = false
    calls.length = 0
    await fw.setAdmitted(['10.8.0.4'])
    // Read back (the record was not to be trusted), only the add was left, and 10.8.0.2's flows go now.
    expect(trace()).toEqual(['ipset save agent-n1', 'ipset restore -exist', 'conntrack -D --orig-src 10.8.0.2'])
    expect(calls[1].input).toBe('add agent-n1 10.8.0.4\n')
    expect(flows.has('10.8.0.2')).toBe(false)
    expect(fw.admitted).toEqual(['10.8.0.4'])
    calls.length = 0
    await fw.setAdmitted(['10.8.0.5'])
    expect(trace()).toEqual(['ipset restore -exist', 'conntrack -D --orig-src 10.8.0.4']) // trusted again
  })

  it('a withdrawal in a refused change is not undone by the next change, even an empty one', async () => {
    let failing = false
    const fake = fakeRunner({
      // The del line fails before reaching the kernel: nothing of the change is in.
      ipsetRestoreFails: () => (failing ? 'ipset v7.17: Error in line 1: Cannot allocate memory\n' : undefined),
    })
    const {runner, sets, flows, trace, calls} = fake
    const fw = new NodeFirewall({...SPEC, admitted: ['10.8.0.5']}, {runner})
    await fw.apply()
    flows.set('10.8.0.5', 1)
    failing = true
    await expect(fw.changeAdmitted({add: ['10.8.0.9'], del: ['10.8.0.5']})).rejects.toThrow(/Cannot allocate memory/)
    expect([...sets.get('agent-n1')!.members]).toEqual(['10.8.0.5']) // still in the kernel
    expect(fw.admitted).toEqual([])
    failing = false
    calls.length = 0
    await fw.changeAdmitted({add: [], del: []}) // a retry: read back, repaired, flows cut
    expect(trace()).toEqual(['ipset save agent-n1', 'ipset restore -exist', 'conntrack -D --orig-src 10.8.0.5'])
    expect(calls[1].input).toBe('del agent-n1 10.8.0.5\n')
    expect([...sets.get('agent-n1')!.members]).toEqual([])
    expect(flows.size).toBe(0)
  })

  it('renews an address passed to another client: it stays in the set, the old holder\'s flows go', async () => {
    const {runner, sets, flows, trace, calls} = fakeRunner()
    const fw = new NodeFirewall({...SPEC, admitted: ['10.8.0.5', '10.8.0.6']}, {runner})
    await fw.apply()
    flows.set('10.8.0.5', 2)
    flows.set('10.8.0.6', 1)
    calls.length = 0
    await fw.changeAdmitted({add: ['10.8.0.5'], del: [], renew: ['10.8.0.5']})
    expect(trace()).toEqual(['conntrack -D --orig-src 10.8.0.5'])
    expect([...sets.get('agent-n1')!.members].sort()).toEqual(['10.8.0.5', '10.8.0.6'])
    expect([...flows.keys()]).toEqual(['10.8.0.6'])
    await expect(fw.changeAdmitted({add: [], del: ['10.8.0.6'], renew: ['10.8.0.6']})).rejects.toThrow('client address 10.8.0.6 is both admitted and withdrawn in one change')
  })

  it('past the set\'s limit refuses the additions but still makes the withdrawals', async () => {
    const {runner, sets} = fakeRunner()
    const full = Array.from({length: 65_536}, (_, i) => `10.${8 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`)
    const fw = new NodeFirewall({...SPEC, subnet: '10.8.0.0/15', admitted: full}, {runner})
    await fw.apply()
    await expect(fw.changeAdmitted({add: ['10.9.0.1', '10.9.0.2'], del: ['10.8.0.7']})).rejects.toThrow("65537 client addresses exceed the admission set's limit of 65536")
    expect(sets.get('agent-n1')!.members.has('10.8.0.7')).toBe(false)
    expect(sets.get('agent-n1')!.members.size).toBe(65_535)
    expect(fw.admitted).toHaveLength(65_535)
  })

  it('deletes withdrawn clients\' conntrack entries, taking "0 flow entries" as done', async () => {
    const {runner, flows, trace, calls} = fakeRunner()
    const fw = new NodeFirewall({...SPEC, admitted: ['10.8.0.2', '10.8.0.3', '10.8.0.4', '10.8.0.6']}, {runner})
    await fw.apply()
    flows.set('10.8.0.2', 2)
    flows.set('10.8.0.4', 1)
    calls.length = 0
    await fw.setAdmitted(['10.8.0.4']) // 10.8.0.6 has no flows: conntrack exits 1, which is fine
    expect(trace()).toEqual([
      'ipset restore -exist',
      // 10.8.0.2 and .3 are the block 10.8.0.2/31: one walk of the conntrack table for both.
      'conntrack -D --orig-src 10.8.0.2 --mask-src 255.255.255.254',
      'conntrack -D --orig-src 10.8.0.6',
    ])
    expect([...flows.keys()]).toEqual(['10.8.0.4'])
  })

  it('reports conntrack failures after the set changed, retries them, and spares an address admitted again', async () => {
    let broken = new Set(['10.8.0.2', '10.8.0.5'])
    const {runner, trace, calls} = fakeRunner({
      conntrackFails: (a) => (broken.has(a) ? 'conntrack v1.4.7 (conntrack-tools): Operation failed: Operation not permitted\n' : undefined),
    })
    const fw = new NodeFirewall({...SPEC, admitted: ['10.8.0.2', '10.8.0.3', '10.8.0.5', '10.8.0.7', '10.8.0.9']}, {runner})
    await fw.apply()
    const err = (await fw.setAdmitted(['10.8.0.9']).catch((e) => e)) as FlowDeletionError
    expect(err).toBeInstanceOf(FlowDeletionError)
    expect(err.addresses).toEqual(['10.8.0.2', '10.8.0.3', '10.8.0.5'])
    expect(err.message).toBe(
      'withdrew 4 client(s) but could not delete the conntrack entries of 10.8.0.2, 10.8.0.3, 10.8.0.5: ' +
        'conntrack -D --orig-src 10.8.0.2 --mask-src 255.255.255.254 exited with 1: Operation failed: Operation not permitted; ' +
        'conntrack -D --orig-src 10.8.0.5 exited with 1: Operation failed: Operation not permitted',
    )
    expect(fw.admitted).toEqual(['10.8.0.9']) // the set did change
    broken = new Set()
    calls.length = 0
    // 10.8.0.3 is back: its flows are the new session's. Those of 10.8.0.2 and .5 are deleted now.
    await fw.setAdmitted(['10.8.0.3', '10.8.0.9'])
    expect(trace()).toEqual(['ipset restore -exist', 'conntrack -D --orig-src 10.8.0.2', 'conntrack -D --orig-src 10.8.0.5'])
    calls.length = 0
    await fw.setAdmitted(['10.8.0.3', '10.8.0.9'])
    expect(calls).toEqual([])
  })

  it('deletes flows a few walks at a time when many clients go at once', async () => {
    const fake = fakeRunner()
    // Every other address: no two make a block, so one conntrack call each.
    const scattered = Array.from({length: 60}, (_, i) => `10.8.0.${2 * i + 1}`)
    const fw = new NodeFirewall({...SPEC, admitted: scattered}, {runner: fake.runner})
    await fw.apply()
    for (const a of scattered) fake.flows.set(a, 1)
    await fw.setAdmitted([])
    expect(fake.trace().filter((t) => t.startsWith('conntrack -L'))).toEqual(['conntrack -L --orig-src 10.8.0.0 --mask-src 255.255.255.128'])
    expect(fake.trace().filter((t) => t.startsWith('conntrack -D'))).toHaveLength(60)
    expect(fake.flows.size).toBe(0)
    expect(fake.maxInFlight()).toBeGreaterThan(1)
    expect(fake.maxInFlight()).toBeLessThanOrEqual(4)
    expect(await deleteConntrack([], fake.runner)).toEqual([])
  })

  it('withdraws a whole pool in a few conntrack calls', async () => {
    const fake = fakeRunner()
    const pool = Array.from({length: 10_000}, (_, i) => `10.8.${(i + 2) >> 8}.${(i + 2) & 255}`) // 10.8.0.2 to 10.8.39.17
    const fw = new NodeFirewall({...SPEC, subnet: '10.8.0.0/16', admitted: pool}, {runner: fake.runner})
    await fw.apply()
    fake.flows.set('10.8.20.20', 1)
    fake.calls.length = 0
    await fw.setAdmitted([])
    // Many blocks: one listing finds the one client with flows, and only it is deleted.
    expect(fake.trace().filter((t) => t.startsWith('conntrack'))).toEqual(['conntrack -L --orig-src 10.8.0.0 --mask-src 255.255.192.0', 'conntrack -D --orig-src 10.8.20.20'])
    expect(fake.flows.size).toBe(0)
  })

  it('withdraws thousands of scattered clients with one listing, and deletes the flows of those that have any', async () => {
    const fake = fakeRunner()
    // Hash-scattered, as clients admitted by `any` get them: no two adjacent.
    const scattered = Array.from({length: 3_000}, (_, i) => `10.8.${(i * 7) >> 7}.${((i * 7) & 127) * 2 + 1}`)
    const fw = new NodeFirewall({...SPEC, subnet: '10.8.0.0/16', admitted: [...scattered, '10.8.200.1']}, {runner: fake.runner})
    await fw.apply()
    fake.flows.set(scattered[10], 2)
    fake.flows.set(scattered[2_000], 1)
    fake.flows.set('10.8.200.1', 1) // stays admitted: its flow stays
    fake.calls.length = 0
    await fw.changeAdmitted({add: [], del: scattered})
    expect(fake.trace()).toEqual([
      'ipset restore -exist',
      'conntrack -L --orig-src 10.8.0.0 --mask-src 255.255.0.0',
      `conntrack -D --orig-src ${scattered[10]}`,
      `conntrack -D --orig-src ${scattered[2_000]}`,
    ])
    expect([...fake.flows.keys()]).toEqual(['10.8.200.1'])
    expect(fw.admitted).toEqual(['10.8.200.1'])
  })

  it('falls back to one deletion per block when the listing fails', async () => {
    const fake = fakeRunner()
    const scattered = Array.from({length: 20}, (_, i) => `10.8.0.${4 * i + 1}`)
    const runner: Runner = (cmd, args, o) => (cmd === 'conntrack' && args[0] === '-L' ? Promise.resolve({stdout: '', stderr: 'conntrack: Operation not permitted\n', code: 1}) : fake.runner(cmd, args, o))
    const fw = new NodeFirewall({...SPEC, admitted: scattered}, {runner})
    await fw.apply()
    fake.flows.set(scattered[3], 1)
    await fw.setAdmitted([])
    expect(fake.trace().filter((t) => t.startsWith('conntrack -D'))).toHaveLength(20)
    expect(fake.flows.size).toBe(0)
  })

  it('reconciles a leftover set on apply: stale members out (and their flows), missing ones in', async () => {
    const {runner, sets, flows, trace, calls} = fakeRunner()
    sets.set('agent-n1', {header: OUR_HEADER, members: new Set(['10.8.0.2', '10.8.0.9'])})
    flows.set('10.8.0.9', 1)
    await new NodeFirewall({...SPEC, admitted: ['10.8.0.2', '10.8.0.3']}, {runner}).apply()
    expect(trace()).toEqual(['conntrack --version', 'ipset save agent-n1', 'ipset restore -exist', 'iptables-save', 'iptables-restore --noflush -w', 'conntrack -D --orig-src 10.8.0.9'])
    expect(calls[2].input).toBe('del agent-n1 10.8.0.9\nadd agent-n1 10.8.0.3\n')
    expect([...sets.get('agent-n1')!.members].sort()).toEqual(['10.8.0.2', '10.8.0.3'])
    expect(flows.size).toBe(0)
  })

  it('replaces a leftover set with other parameters', async () => {
    const {runner, sets, trace} = fakeRunner()
    sets.set('agent-n1', {header: 'hash:ip family inet hashsize 1024 maxelem 65536 netmask 24', members: new Set(['10.8.0.0'])})
    await new NodeFirewall({...SPEC, admitted: ['10.8.0.2']}, {runner}).apply()
    expect(trace().slice(1, 5)).toEqual(['ipset save agent-n1', 'ipset destroy agent-n1', 'ipset create agent-n1 hash:ip family inet maxelem 65536 -exist', 'ipset restore -exist'])
    expect(sets.get('agent-n1')).toEqual({header: OUR_HEADER, members: new Set(['10.8.0.2'])})
  })

  it('a failed apply destroys the set it created, or undoes its change to one that existed', async () => {
    const refuse = () => {
      throw new CommandError('x', 'iptables-restore', [], 2, '', "iptables-restore v1.8.9 (nf_tables): Chain 'X' does not exist\nError occurred at line: 3\n")
    }
    const fresh = fakeRunner({restore: refuse})
    await expect(new NodeFirewall({...SPEC, admitted: ['10.8.0.2']}, {runner: fresh.runner}).apply()).rejects.toBeInstanceOf(FirewallError)
    expect(fresh.sets.size).toBe(0)

    const old = fakeRunner({restore: refuse})
    old.sets.set('agent-n1', {header: OUR_HEADER, members: new Set(['10.8.0.9'])})
    await expect(new NodeFirewall({...SPEC, admitted: ['10.8.0.2']}, {runner: old.runner}).apply()).rejects.toBeInstanceOf(FirewallError)
    expect([...old.sets.get('agent-n1')!.members]).toEqual(['10.8.0.9'])
    expect(old.trace().filter((t) => t.startsWith('conntrack -D'))).toEqual([])
  })

  it('says which package to install when ipset or conntrack is missing', async () => {
    const missing = (tool: string): Runner => async (cmd, args, o) => {
      if (cmd === tool) throw new CommandNotFoundError(cmd)
      return fakeRunner().runner(cmd, args, o)
    }
    await expect(new NodeFirewall(SPEC, {runner: missing('conntrack')}).apply()).rejects.toThrow(/^conntrack not found: install conntrack/)
    await expect(new NodeFirewall(SPEC, {runner: missing('ipset')}).apply()).rejects.toThrow(/^ipset not found: install ipset/)
    // Removal has nothing to destroy without the tool, and finds chains only.
    expect(await removeFirewall('n1', {runner: missing('ipset')})).toBe(false)
    expect(await findFirewallInstances({runner: missing('ipset')})).toEqual([])
  })
})

describe('removal', () => {
  const SAVE = '*filter\n:FORWARD ACCEPT [0:0]\n:AGENT-n1-FWD - [0:0]\n-A FORWARD -j AGENT-n1-FWD\nCOMMIT\n'

  it('deletes the chains first, then the set, and reports whether it found anything', async () => {
    expect(await removeFirewall('n1', {runner: fakeRunner().runner})).toBe(false)
    const {calls, runner, sets, trace} = fakeRunner({save: () => SAVE})
    sets.set('agent-n1', {header: OUR_HEADER, members: new Set(['10.8.0.2'])})
    expect(await removeFirewall('n1', {runner})).toBe(true)
    expect(trace()).toEqual([
      'ipset save agent-n1', // whose flows to delete at the end
      'iptables-save',
      'iptables-restore --noflush -w',
      'ipset destroy agent-n1',
      'conntrack -D --orig-src 10.8.0.2',
    ])
    expect(calls[2].input).toBe('*filter\n-D FORWARD -j AGENT-n1-FWD\n-F AGENT-n1-FWD\n-X AGENT-n1-FWD\nCOMMIT\n')
    expect(sets.size).toBe(0)
    await expect(removeFirewall('Bad Name')).rejects.toThrow(/invalid instance name/)
  })

  it('finds and destroys a set left without its chains', async () => {
    const {runner, sets, trace} = fakeRunner()
    sets.set('agent-n1', {header: OUR_HEADER, members: new Set()})
    sets.set('agent-n1-b', {header: OUR_HEADER, members: new Set()})
    sets.set('docker-net', {header: OUR_HEADER, members: new Set()})
    expect(await findFirewallInstances({runner})).toEqual(['n1', 'n1-b'])
    expect(await removeFirewall('n1', {runner})).toBe(true)
    expect(trace().slice(-1)).toEqual(['ipset destroy agent-n1'])
    expect([...sets.keys()]).toEqual(['agent-n1-b', 'docker-net'])
  })

  it('waits for the kernel to release a set the deleted rules named', async () => {
    const {runner, sets, trace} = fakeRunner({save: () => SAVE, inUse: 2})
    sets.set('agent-n1', {header: OUR_HEADER, members: new Set()})
    expect(await removeFirewall('n1', {runner})).toBe(true)
    expect(trace().filter((t) => t === 'ipset destroy agent-n1')).toHaveLength(3)
    expect(sets.size).toBe(0)
  })

  it('gives up on a set that stays in use, naming the likely reason', async () => {
    const {runner, sets} = fakeRunner({inUse: 1000})
    sets.set('agent-n1', {header: OUR_HEADER, members: new Set()})
    await expect(removeFirewall('n1', {runner})).rejects.toThrow(/cannot destroy the admission set agent-n1: Set cannot be destroyed: it is in use by a kernel component \(a rule outside our chains names it/)
  })

  it("deletes the flows of every client still in the set, after the chains and the set are gone", async () => {
    const {runner, sets, flows, trace} = fakeRunner({save: () => SAVE})
    sets.set('agent-n1', {header: OUR_HEADER, members: new Set(['10.8.0.2', '10.8.0.3', '10.8.0.9'])})
    flows.set('10.8.0.3', 2)
    flows.set('10.8.0.1', 1) // the node's own
    expect(await removeFirewall('n1', {runner})).toBe(true)
    expect(trace().slice(3)).toEqual(['ipset destroy agent-n1', 'conntrack -D --orig-src 10.8.0.2 --mask-src 255.255.255.254', 'conntrack -D --orig-src 10.8.0.9'])
    expect([...flows.keys()]).toEqual(['10.8.0.1'])
  })

  it('removes everything even when flows cannot be deleted, then says so; without conntrack it just removes', async () => {
    const fake = fakeRunner({save: () => SAVE, conntrackFails: () => 'conntrack v1.4.7 (conntrack-tools): Operation failed: Operation not permitted\n'})
    fake.sets.set('agent-n1', {header: OUR_HEADER, members: new Set(['10.8.0.2'])})
    const err = (await removeFirewall('n1', {runner: fake.runner}).catch((e) => e)) as FlowDeletionError
    expect(err).toBeInstanceOf(FlowDeletionError)
    expect(err.message).toMatch(/^removed the firewall of n1 but could not delete the conntrack entries of 10\.8\.0\.2: conntrack -D --orig-src 10\.8\.0\.2 exited with 1/)
    expect(fake.sets.size).toBe(0)

    const base = fakeRunner({save: () => SAVE})
    base.sets.set('agent-n1', {header: OUR_HEADER, members: new Set(['10.8.0.2'])})
    const noConntrack: Runner = async (cmd, args, o) => {
      if (cmd === 'conntrack') throw new CommandNotFoundError(cmd)
      return base.runner(cmd, args, o)
    }
    expect(await removeFirewall('n1', {runner: noConntrack})).toBe(true)
    expect(base.sets.size).toBe(0)
  })

  it('NodeFirewall.remove() removes chains then set, and later changes touch nothing', async () => {
    const {runner, sets, trace, calls} = fakeRunner({save: () => SAVE})
    const fw = new NodeFirewall({...SPEC, admitted: ['10.8.0.2']}, {runner})
    await fw.apply()
    calls.length = 0
    await fw.remove()
    expect(trace()).toEqual(['ipset save agent-n1', 'iptables-save', 'iptables-restore --noflush -w', 'ipset destroy agent-n1', 'conntrack -D --orig-src 10.8.0.2'])
    expect(sets.size).toBe(0)
    calls.length = 0
    await fw.setAdmitted([])
    expect(calls).toEqual([])
  })
})
