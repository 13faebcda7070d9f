/**
 * The system helpers under the firewall and routes, without root: the command runner, /proc/sys
 * access (against a scratch tree) and NodeFirewall's use of iptables-restore through a fake runner.
 */
import {mkdir, mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {FirewallError, NodeFirewall, removeFirewall, restore} from '../../src/core/firewall/iptables.js'
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

/** A runner that records calls and answers iptables-save from a script. */
function fakeRunner(opts: {save?: () => string; restore?: (input: string) => void} = {}) {
  const calls: Array<{cmd: string; args: readonly string[]; input?: string}> = []
  const runner: Runner = async (cmd, args, o?: RunOptions) => {
    calls.push({cmd, args, input: o?.input})
    if (cmd === 'iptables-save') return {stdout: opts.save?.() ?? '', stderr: '', code: 0}
    if (cmd === 'iptables-restore') opts.restore?.(o?.input ?? '')
    return {stdout: '', stderr: '', code: 0}
  }
  return {calls, runner}
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
  it('uses iptables-restore --noflush -w with the payload on stdin', async () => {
    const {calls, runner} = fakeRunner()
    await new NodeFirewall(SPEC, {runner}).apply()
    expect(calls.map((c) => [c.cmd, ...c.args])).toEqual([['iptables-save'], ['iptables-restore', '--noflush', '-w']])
    expect(calls[1].input).toMatch(/^\*filter\n:AGENT-n1-FWD - \[0:0\]\n-I FORWARD 1 -j AGENT-n1-FWD\n/)
  })

  it('touches the system in setAdmitted only between apply and remove', async () => {
    const {calls, runner} = fakeRunner()
    const fw = new NodeFirewall(SPEC, {runner})
    await fw.setAdmitted(['10.8.0.5'])
    expect(calls).toHaveLength(0)
    await fw.apply()
    expect(calls[1].input).toContain('-s 10.8.0.5/32')
    calls.length = 0
    await fw.setAdmitted(['10.8.0.6'])
    expect(calls.map((c) => c.cmd)).toEqual(['iptables-restore'])
    expect(calls[0].input).toMatch(/^\*filter\n:AGENT-n1-FWD - \[0:0\]\n/)
    expect(calls[0].input).toContain('-s 10.8.0.6/32')
    expect(calls[0].input).not.toContain('10.8.0.5')
    await fw.remove()
    calls.length = 0
    await fw.setAdmitted(['10.8.0.7'])
    expect(calls).toHaveLength(0)
    expect(fw.admitted).toEqual(['10.8.0.7'])
  })

  it('applies overlapping setAdmitted calls in call order', async () => {
    const seen: string[] = []
    let release!: () => void
    const gate = new Promise<void>((r) => (release = r))
    const runner: Runner = async (cmd, _args, o) => {
      if (cmd === 'iptables-restore' && o?.input?.includes('10.8.0.2/32')) await gate
      if (cmd === 'iptables-restore') seen.push(/-s (\S+)\/32/.exec(o?.input ?? '')?.[1] ?? 'none')
      return {stdout: '', stderr: '', code: 0}
    }
    const fw = new NodeFirewall(SPEC, {runner})
    await fw.apply()
    const a = fw.setAdmitted(['10.8.0.2'])
    const b = fw.setAdmitted(['10.8.0.3'])
    release()
    await Promise.all([a, b])
    expect(seen).toEqual(['none', '10.8.0.2', '10.8.0.3'])
    expect(fw.admitted).toEqual(['10.8.0.3'])
  })

  it('rejects bad addresses before running anything', async () => {
    const {calls, runner} = fakeRunner()
    const fw = new NodeFirewall(SPEC, {runner})
    await fw.apply()
    await expect(fw.setAdmitted(['10.9.0.1'])).rejects.toThrow(/outside the tunnel subnet/)
    expect(calls).toHaveLength(2)
  })

  it('keeps the previous list when a setAdmitted restore fails', async () => {
    let failing = false
    const runner: Runner = async (cmd, args) => {
      if (cmd === 'iptables-restore' && failing) throw new CommandError('x', cmd, args, 4, '', 'line 3: RULE_APPEND failed\n')
      return {stdout: '', stderr: '', code: 0}
    }
    const fw = new NodeFirewall({...SPEC, admitted: ['10.8.0.2']}, {runner})
    await fw.apply()
    failing = true
    await expect(fw.setAdmitted(['10.8.0.3'])).rejects.toBeInstanceOf(FirewallError)
    expect(fw.admitted).toEqual(['10.8.0.2'])
    failing = false
    await fw.setAdmitted(['10.8.0.4'])
    expect(fw.admitted).toEqual(['10.8.0.4'])
  })

  it('removeFirewall reports whether it found anything', async () => {
    expect(await removeFirewall('n1', {runner: fakeRunner().runner})).toBe(false)
    const save = '*filter\n:FORWARD ACCEPT [0:0]\n:AGENT-n1-FWD - [0:0]\n-A FORWARD -j AGENT-n1-FWD\nCOMMIT\n'
    const {calls, runner} = fakeRunner({save: () => save})
    expect(await removeFirewall('n1', {runner})).toBe(true)
    expect(calls[1].input).toBe('*filter\n-D FORWARD -j AGENT-n1-FWD\n-F AGENT-n1-FWD\n-X AGENT-n1-FWD\nCOMMIT\n')
    await expect(removeFirewall('Bad Name')).rejects.toThrow(/invalid instance name/)
  })
})
