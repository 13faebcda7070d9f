/**
 * The systemd unit (src/core/service/unit.ts): its content, the shipped
 * packaging/systemd/agent@.service being exactly the generator's output, and
 * `systemd-analyze verify` passing on it with no warning (an unknown key or a bad value is only
 * a warning to systemd, so the output must be empty, not just the exit code 0).
 */
import {execFileSync, spawnSync} from 'node:child_process'
import {mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join, resolve} from 'node:path'
import {afterAll, describe, expect, it} from 'vitest'
import {CAPABILITIES, PACKAGED_AGENT, UNIT_NAME, renderUnit, unsafeAgentPath} from '../../src/core/service/unit.js'

const ROOT = resolve(import.meta.dirname, '../..')
const BIN = join(ROOT, 'bin/run.js')
const dir = mkdtempSync(join(tmpdir(), `agent-unit-${process.pid}-`))
afterAll(() => rmSync(dir, {recursive: true, force: true}))

const hasAnalyze = spawnSync('systemd-analyze', ['--version']).status === 0

/** The unit's [Service] lines as key -> values (a key may repeat). */
function keys(text: string): Map<string, string[]> {
  const m = new Map<string, string[]>()
  for (const line of text.split('\n')) {
    const kv = /^([A-Za-z]+)=(.*)$/.exec(line)
    if (kv) m.set(kv[1], [...(m.get(kv[1]) ?? []), kv[2]])
  }
  return m
}

describe('agent@.service', () => {
  const unit = renderUnit({agent: '/opt/agent/bin/agent'})
  const k = keys(unit)

  it('runs /etc/agent/%i.yaml with the real flags of `agent up` and `agent reload`', () => {
    expect(k.get('ExecStart')).toEqual(['/opt/agent/bin/agent up --config /etc/agent/%i.yaml --run-dir /run/agent'])
    expect(k.get('ExecReload')).toEqual(['/opt/agent/bin/agent reload --config /etc/agent/%i.yaml --run-dir /run/agent'])
  })

  it('is Type=notify from the main process, restarts on failure, stops the agent first', () => {
    expect(k.get('Type')).toEqual(['notify'])
    expect(k.get('NotifyAccess')).toEqual(['main'])
    expect(k.get('Restart')).toEqual(['on-failure'])
    expect(k.get('KillMode')).toEqual(['mixed'])
    expect(k.get('WantedBy')).toEqual(['multi-user.target'])
  })

  it('keeps the shared run directories across one instance stopping, and the plugins in /var/lib/agent', () => {
    expect(k.get('RuntimeDirectory')).toEqual(['agent agent-ip-forward'])
    expect(k.get('RuntimeDirectoryPreserve')).toEqual(['yes'])
    expect(k.get('StateDirectory')).toEqual(['agent'])
    expect(k.get('Environment')).toEqual(['AGENT_DATA_DIR=/var/lib/agent', 'AGENT_IP_FORWARD_DIR=/run/agent-ip-forward'])
  })

  it('is hardened: three capabilities, read-only system, no home, only the TUN device', () => {
    expect(k.get('CapabilityBoundingSet')).toEqual(['CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE'])
    expect(CAPABILITIES).toHaveLength(3)
    for (const [key, value] of Object.entries({
      NoNewPrivileges: 'yes',
      ProtectSystem: 'strict',
      ProtectHome: 'yes',
      PrivateTmp: 'yes',
      DevicePolicy: 'closed',
      DeviceAllow: '/dev/net/tun rw',
      ProtectKernelModules: 'yes',
      ProtectControlGroups: 'yes',
      RestrictAddressFamilies: 'AF_UNIX AF_INET AF_INET6 AF_NETLINK',
      LockPersonality: 'yes',
      RestrictSUIDSGID: 'yes',
    })) {
      expect(k.get(key), key).toEqual([value])
    }
    // What would break the agent is absent: /proc/sys/net writes, /dev/net/tun, V8's JIT.
    expect(k.has('ProtectKernelTunables')).toBe(false)
    expect(k.has('PrivateDevices')).toBe(false)
    expect(k.has('MemoryDenyWriteExecute')).toBe(false)
    expect(k.has('AmbientCapabilities')).toBe(false)
  })

  it('creates the lock of legacy iptables outside the sandbox before the start, and lets the agent write it', () => {
    // /run is a tmpfs: after a reboot the lock is absent, and under ProtectSystem=strict the
    // agent's iptables -w cannot create it ('-' would skip the bind: a restart loop).
    expect(k.get('ExecStartPre')).toEqual(['+/usr/bin/touch /run/xtables.lock'])
    expect(k.get('ReadWritePaths')).toEqual(['-/run/xtables.lock'])
    expect(unit.indexOf('ExecStartPre=')).toBeLessThan(unit.indexOf('ExecStart='))
  })

  it('refuses an agent path that would not run as written', () => {
    expect(unsafeAgentPath('/usr/bin/agent')).toBeUndefined()
    expect(unsafeAgentPath('agent')).toMatch(/absolute/)
    expect(unsafeAgentPath('/opt/my agent/run.js')).toMatch(/quoted/)
    expect(unsafeAgentPath('/opt/100%/agent')).toMatch(/quoted/)
    expect(unsafeAgentPath('/opt/$HOME/agent')).toMatch(/quoted/)
    expect(unsafeAgentPath('/opt/../agent')).toMatch(/\.\./)
    expect(() => renderUnit({agent: 'agent'})).toThrow(/absolute/)
    // ProtectHome=yes hides these: the unit would fail with 203/EXEC.
    for (const [path, dir] of [
      ['/root/agent/bin/run.js', '/root'],
      ['/home/ops/.npm-global/bin/agent', '/home'],
      ['/run/user/1000/agent', '/run/user'],
    ]) {
      expect(unsafeAgentPath(path), path).toBe(
        `the agent path "${path}" is under ${dir}, which the unit hides (ProtectHome=yes): it would fail to start with 203/EXEC; install the agent elsewhere (npm install -g puts it in /usr/bin) and give that path with --agent`,
      )
    }
    for (const path of ['/homes/agent', '/rooted/agent', '/run/username/agent', '/opt/home/agent']) expect(unsafeAgentPath(path), path).toBeUndefined()
  })

  it(`packaging/systemd/${UNIT_NAME} is the generator's output for ${PACKAGED_AGENT} (npm run build rewrites it)`, () => {
    expect(readFileSync(join(ROOT, 'packaging/systemd', UNIT_NAME), 'utf8')).toBe(renderUnit())
  })

  it.skipIf(!hasAnalyze)('passes systemd-analyze verify, as the template and as an instance, without a warning', () => {
    // verify checks that ExecStart's binary exists: the unit runs this tree's bin/run.js.
    const text = renderUnit({agent: BIN})
    for (const file of [UNIT_NAME, 'agent@node1.service']) {
      writeFileSync(join(dir, file), text)
      const r = spawnSync('systemd-analyze', ['verify', '--man=no', join(dir, file)], {cwd: dir, encoding: 'utf8'})
      expect({status: r.status, stderr: r.stderr, stdout: r.stdout}, file).toEqual({status: 0, stderr: '', stdout: ''})
    }
    // The check has teeth: a misspelt key and a missing binary are reported.
    writeFileSync(join(dir, 'agent@bad.service'), text.replace('NoNewPrivileges=yes', 'NoNewPrivilege=yes').replace(BIN, '/nonexistent/agent'))
    const bad = spawnSync('systemd-analyze', ['verify', '--man=no', join(dir, 'agent@bad.service')], {cwd: dir, encoding: 'utf8'})
    expect(bad.status).not.toBe(0)
    expect(bad.stderr).toMatch(/Unknown key 'NoNewPrivilege'/)
    expect(bad.stderr).toMatch(/\/nonexistent\/agent is not executable/)
  })

  it.skipIf(!hasAnalyze)('the shipped unit passes systemd-analyze verify where /usr/bin/agent exists', () => {
    // On a machine without /usr/bin/agent verify says so, and only that.
    writeFileSync(join(dir, 'shipped@node1.service'), renderUnit())
    const r = spawnSync('systemd-analyze', ['verify', '--man=no', join(dir, 'shipped@node1.service')], {cwd: dir, encoding: 'utf8'})
    const problems = r.stderr.split('\n').filter((l) => l !== '' && !l.includes(`Command ${PACKAGED_AGENT} is not executable`))
    expect(problems).toEqual([])
  })

  it.runIf(!hasAnalyze)('systemd-analyze is missing: scripts/setup.sh installs it (package systemd)', () => {
    console.warn('systemd-analyze not found: the verify tests are skipped; run scripts/setup.sh')
    expect(execFileSync('grep', ['-c', 'systemd-analyze', join(ROOT, 'scripts/setup.sh')]).toString().trim()).not.toBe('0')
  })
})
