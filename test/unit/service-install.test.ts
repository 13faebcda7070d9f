/**
 * `agent service install` / `uninstall` into a temporary --root: what docs/service.md says is
 * written (the unit, /etc/agent 0750, a config only from --config and never over an existing
 * one), idempotence, nothing written on a refusal, and uninstall keeping the unit while other
 * instances use it and never deleting a config. The last tests run the real CLI.
 */
import {execFile} from 'node:child_process'
import {chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join, relative, resolve} from 'node:path'
import {promisify} from 'node:util'
import {afterAll, describe, expect, it} from 'vitest'
import {loadConfig} from '../../src/core/config/index.js'
import {badInstanceName, installService, uninstallService} from '../../src/core/service/install.js'
import {renderUnit} from '../../src/core/service/unit.js'

const ROOT = resolve(import.meta.dirname, '../..')
const BIN = join(ROOT, 'bin/run.js')
const base = mkdtempSync(join(tmpdir(), `agent-svc-${process.pid}-`))
afterAll(() => rmSync(base, {recursive: true, force: true}))
let n = 0
const fresh = () => {
  const d = join(base, `root${n++}`)
  mkdirSync(d)
  return d
}
const AGENT = '/usr/bin/agent'

/** Every file and directory under root, relative, sorted. */
function tree(root: string): string[] {
  const out: string[] = []
  const walk = (d: string) => {
    for (const e of readdirSync(d, {withFileTypes: true})) {
      const p = join(d, e.name)
      out.push(relative(root, p) + (e.isDirectory() ? '/' : ''))
      if (e.isDirectory()) walk(p)
    }
  }
  walk(root)
  return out.sort()
}
const mode = (p: string) => statSync(p).mode & 0o777

const CONFIG = `role: node
name: node1
transport: tls
listen: {address: 0.0.0.0, port: 443}
tunnel: {interface: agtun0, subnet: 10.99.0.0/24}
egress: {interface: eth0}
pki: {bundle: /etc/agent/pki/node1.pem}
clients:
  - name: alice
`

describe('agent service install', () => {
  it('writes the unit and /etc/agent (0750), and says to write the config and enable the instance', async () => {
    const root = fresh()
    const r = await installService({name: 'node1', root, agent: AGENT})
    expect(tree(root)).toEqual(['etc/', 'etc/agent/', 'etc/systemd/', 'etc/systemd/system/', 'etc/systemd/system/agent@.service'])
    expect(readFileSync(join(root, 'etc/systemd/system/agent@.service'), 'utf8')).toBe(renderUnit({agent: AGENT}))
    expect(mode(join(root, 'etc/systemd/system/agent@.service'))).toBe(0o644)
    expect(mode(join(root, 'etc/agent'))).toBe(0o750)
    expect(r.unit.action).toBe('created')
    expect(r.configDir.action).toBe('created')
    expect(r.config).toEqual({path: join(root, 'etc/agent/node1.yaml'), action: 'missing'})
    expect(r.next).toEqual([
      'write /etc/agent/node1.yaml (a node or client config, docs/config.md), then `agent config validate /etc/agent/node1.yaml`',
      'systemctl daemon-reload && systemctl enable --now agent@node1',
    ])
  })

  it('is idempotent, and replaces a unit that differs (another agent path) whole', async () => {
    const root = fresh()
    await installService({name: 'node1', root, agent: AGENT})
    const before = tree(root)
    const again = await installService({name: 'node1', root, agent: AGENT})
    expect(again.unit.action).toBe('unchanged')
    expect(again.configDir.action).toBe('unchanged')
    expect(tree(root)).toEqual(before)
    const other = await installService({name: 'node2', root, agent: '/opt/agent/bin/agent'})
    expect(other.unit.action).toBe('updated')
    expect(readFileSync(other.unit.path, 'utf8')).toBe(renderUnit({agent: '/opt/agent/bin/agent'}))
    expect(tree(root)).toEqual(before) // no temporary file left beside it
  })

  it('puts a --config in place (0640) after checking it, and never over an existing config', async () => {
    const root = fresh()
    const src = join(base, 'node1.yaml')
    writeFileSync(src, CONFIG)
    const r = await installService({name: 'node1', root, agent: AGENT, config: src, validate: loadConfig})
    expect(r.config.action).toBe('created')
    expect(readFileSync(join(root, 'etc/agent/node1.yaml'), 'utf8')).toBe(CONFIG)
    expect(mode(join(root, 'etc/agent/node1.yaml'))).toBe(0o640)
    // The bundle it names is not under the root yet: not an error, but the next steps say so.
    expect(r.next).toEqual([
      'copy /etc/agent/pki/node1.pem into place (pki.bundle in /etc/agent/node1.yaml): it is not there yet, and the agent cannot start without it',
      'systemctl daemon-reload && systemctl enable --now agent@node1',
    ])
    mkdirSync(join(root, 'etc/agent/pki'))
    writeFileSync(join(root, 'etc/agent/pki/node1.pem'), '')
    expect((await installService({name: 'node1', root, agent: AGENT, config: src, validate: loadConfig})).next).toEqual([
      'systemctl daemon-reload && systemctl enable --now agent@node1',
    ])
    // The same file again: fine. Another one: refused, the operator's file untouched.
    expect((await installService({name: 'node1', root, agent: AGENT, config: src})).config.action).toBe('unchanged')
    writeFileSync(src, CONFIG.replace('alice', 'bob'))
    await expect(installService({name: 'node1', root, agent: AGENT, config: src})).rejects.toThrow(/node1\.yaml exists and differs .* not overwritten/)
    expect(readFileSync(join(root, 'etc/agent/node1.yaml'), 'utf8')).toBe(CONFIG)
    // A config that exists already, without --config: kept as it is.
    expect((await installService({name: 'node1', root, agent: AGENT})).config.action).toBe('unchanged')
  })

  it('checks the --config copy where it ends up: relative paths resolve against /etc/agent', async () => {
    const root = fresh()
    const srcDir = join(base, `src${n}`)
    mkdirSync(srcDir)
    const src = join(srcDir, 'node1.yaml')
    writeFileSync(src, CONFIG.replace('/etc/agent/pki/node1.pem', 'pki/node1.pem'))
    const checked: string[] = []
    const r = await installService({
      name: 'node1',
      root,
      agent: AGENT,
      config: src,
      validate: async (file) => {
        const c = await loadConfig(file)
        checked.push(c.pki.kind === 'bundle' ? c.pki.bundle : '')
        return c
      },
    })
    expect(r.config.action).toBe('created')
    // As `agent up --config /etc/agent/node1.yaml` will resolve it, not beside the source.
    expect(checked).toEqual([join(root, 'etc/agent/pki/node1.pem')])
    expect(tree(root)).toEqual(['etc/', 'etc/agent/', 'etc/agent/node1.yaml', 'etc/systemd/', 'etc/systemd/system/', 'etc/systemd/system/agent@.service'])
  })

  it('installs the bytes it checked, read once (a file changed during the check does not slip in)', async () => {
    const root = fresh()
    const src = join(base, 'racy.yaml')
    writeFileSync(src, CONFIG)
    let validated = ''
    await installService({
      name: 'node1',
      root,
      agent: AGENT,
      config: src,
      validate: async (file) => {
        writeFileSync(src, 'role: node\nname: 7\n') // replaced while being checked
        validated = readFileSync(file, 'utf8')
        return loadConfig(file)
      },
    })
    expect(validated).toBe(CONFIG)
    expect(readFileSync(join(root, 'etc/agent/node1.yaml'), 'utf8')).toBe(CONFIG)
  })

  it('refuses a --config naming files under /home, /root or /run/user (ProtectHome=), and writes nothing', async () => {
    const cases: [string, RegExp][] = [
      [CONFIG.replace('/etc/agent/pki/node1.pem', '/home/ops/pki/node1.pem'), /: pki\.bundle: \/home\/ops\/pki\/node1\.pem is under \/home, which the unit hides \(ProtectHome=yes\)/],
      [CONFIG.replace('pki: {bundle: /etc/agent/pki/node1.pem}', 'pki: {bundle: /etc/agent/pki/node1.pem, crl: /root/crl.pem}'), /: pki\.crl: \/root\/crl\.pem is under \/root/],
      [CONFIG.replace('/etc/agent/pki/node1.pem', '/run/user/0/node1.pem'), /: pki\.bundle: \/run\/user\/0\/node1\.pem is under \/run\/user/],
    ]
    for (const [text, why] of cases) {
      const src = join(base, 'home.yaml')
      writeFileSync(src, text)
      for (const existing of [false, true]) {
        const root = fresh()
        if (existing) mkdirSync(join(root, 'etc/agent'), {recursive: true})
        const err = await installService({name: 'node1', root, agent: AGENT, config: src, validate: loadConfig}).then(
          () => new Error('installed'),
          (e: Error) => e,
        )
        expect(err.message).toMatch(why)
        expect(err.message.startsWith(`${src}: `)).toBe(true)
        // Nothing half-written: no unit, no config, no temporary copy.
        expect(tree(root)).toEqual(existing ? ['etc/', 'etc/agent/'] : [])
      }
    }
    // A relative path resolves under (the root's) /etc/agent: accepted.
    const src = join(base, 'rel.yaml')
    writeFileSync(src, CONFIG.replace('/etc/agent/pki/node1.pem', 'node1.pem'))
    const root = fresh()
    expect((await installService({name: 'node1', root, agent: AGENT, config: src, validate: loadConfig})).config.action).toBe('created')
  })

  it('refuses a bad name, agent path or config and writes nothing', async () => {
    const bad: [string, RegExp][] = [
      ['', /empty/],
      ['../etc/passwd', /must start with a letter or a digit/],
      ['a/b', /characters other than .*"\/"/],
      ['node 1', /characters other than .*" "/],
      ['node@1', /"@"/],
      ['-x', /must start/],
      ['node1.yaml', /without "\.yaml": "node1"/],
      ['x'.repeat(65), /at most 64/],
      ['x.socket', /ends in "\.socket", a systemd unit type: .*agent@x\.socket.* a socket unit/],
      ['node1.service', /ends in "\.service"/],
      ...['.timer', '.target', '.mount', '.automount', '.path', '.slice', '.scope', '.swap', '.device'].map((t): [string, RegExp] => [`n${t}`, /a systemd unit type/]),
    ]
    for (const [name, why] of bad) {
      const root = fresh()
      expect(badInstanceName(name), name).toMatch(why)
      await expect(installService({name, root, agent: AGENT}), name).rejects.toThrow(why)
      expect(tree(root), name).toEqual([])
    }
    for (const name of ['node1', 'eu-west.2', 'N_3', 'x.sockets', 'service', 'a.service-b']) expect(badInstanceName(name), name).toBeUndefined()
    const root = fresh()
    await expect(installService({name: 'node1', root, agent: 'agent'})).rejects.toThrow(/absolute/)
    await expect(installService({name: 'node1', root, agent: '/root/agent/bin/run.js'})).rejects.toThrow(/under \/root, which the unit hides .* --agent/)
    const src = join(base, 'broken.yaml')
    writeFileSync(src, 'role: node\nname: 7\n')
    await expect(installService({name: 'node1', root, agent: AGENT, config: src, validate: loadConfig})).rejects.toThrow(/broken\.yaml:2:7: name/)
    await expect(installService({name: 'node1', root, agent: AGENT, config: join(base, 'missing.yaml')})).rejects.toThrow(/ENOENT/)
    expect(tree(root)).toEqual([])
  })

  it("refuses a --config whose name or TUN device another instance's config already has, and writes nothing", async () => {
    const root = fresh()
    const src = join(base, `clash${n}.yaml`)
    writeFileSync(src, CONFIG)
    await installService({name: 'node1', root, agent: AGENT, config: src, validate: loadConfig})
    // A config that does not load is another instance's business, not a reason to refuse.
    writeFileSync(join(root, 'etc/agent/broken.yaml'), 'role: [\n')
    const before = tree(root)
    writeFileSync(src, CONFIG.replace('name: node1', 'name: node2'))
    await expect(installService({name: 'node2', root, agent: AGENT, config: src, validate: loadConfig})).rejects.toThrow(
      /tunnel\.interface: agtun0 is also the TUN device of \/etc\/agent\/node1\.yaml \(agent@node1\)/,
    )
    writeFileSync(src, CONFIG.replace('agtun0', 'agtun1'))
    await expect(installService({name: 'node2', root, agent: AGENT, config: src, validate: loadConfig})).rejects.toThrow(
      /name: "node1" is also the name in \/etc\/agent\/node1\.yaml \(agent@node1\): each instance needs its own/,
    )
    expect(tree(root)).toEqual(before)
    // Its own name and device: installed beside the first.
    writeFileSync(src, CONFIG.replace('name: node1', 'name: node2').replace('agtun0', 'agtun1'))
    expect((await installService({name: 'node2', root, agent: AGENT, config: src, validate: loadConfig})).config.action).toBe('created')
    // Installing the first again is no clash with itself.
    writeFileSync(src, CONFIG)
    expect((await installService({name: 'node1', root, agent: AGENT, config: src, validate: loadConfig})).config.action).toBe('unchanged')
  })

  it('an existing /etc/agent only loses permission bits: 0700 stays, 0755 becomes 0750', async () => {
    for (const [before, after] of [
      [0o700, 0o700],
      [0o755, 0o750],
      [0o777, 0o750],
      [0o2750, 0o2750],
      [0o2755, 0o2750],
    ]) {
      const root = fresh()
      mkdirSync(join(root, 'etc/agent'), {recursive: true})
      chmodSync(join(root, 'etc/agent'), before)
      await installService({name: 'node1', root, agent: AGENT})
      expect(statSync(join(root, 'etc/agent')).mode & 0o7777, before.toString(8)).toBe(after)
    }
  })

  it('a failure half-way removes what it created', async () => {
    const root = fresh()
    // /etc/agent cannot be made: a file stands in the way of its parent.
    mkdirSync(join(root, 'etc'))
    writeFileSync(join(root, 'etc/agent'), 'not a directory')
    await expect(installService({name: 'node1', root, agent: AGENT})).rejects.toThrow(/etc\/agent exists and is not a directory/)
    expect(tree(root)).toEqual(['etc/', 'etc/agent'])
    // The unit directory is made, then the config directory fails: the unit directory goes too.
    const root2 = fresh()
    writeFileSync(join(root2, 'etc'), '')
    await expect(installService({name: 'node1', root: root2, agent: AGENT, unitDir: '/lib/systemd/system'})).rejects.toThrow(/ENOTDIR|EEXIST/)
    expect(tree(root2)).toEqual(['etc'])
  })
})

describe('agent service uninstall', () => {
  it('removes the unit when no other instance is left; never a config', async () => {
    const root = fresh()
    const src = join(base, 'node1.yaml')
    writeFileSync(src, CONFIG)
    await installService({name: 'node1', root, agent: AGENT, config: src})
    await installService({name: 'node2', root, agent: AGENT, config: src})
    const first = uninstallService({name: 'node1', root})
    expect(first.unit.action).toBe('kept')
    expect(first.others).toEqual(['node2'])
    expect(existsSync(join(root, 'etc/systemd/system/agent@.service'))).toBe(true)
    expect(existsSync(join(root, 'etc/agent/node1.yaml'))).toBe(true)
    rmSync(join(root, 'etc/agent/node2.yaml'))
    const second = uninstallService({name: 'node1', root})
    expect(second.unit.action).toBe('removed')
    expect(second.next).toEqual(['systemctl daemon-reload', 'rm /etc/agent/node1.yaml   # if the instance is gone for good (it is kept)'])
    expect(tree(root)).toEqual(['etc/', 'etc/agent/', 'etc/agent/node1.yaml', 'etc/systemd/', 'etc/systemd/system/'])
    expect(uninstallService({name: 'node1', root}).unit.action).toBe('absent')
  })

  it('keeps the unit while an instance is enabled, and says to disable it first', async () => {
    const root = fresh()
    await installService({name: 'node1', root, agent: AGENT})
    const wants = join(root, 'etc/systemd/system/multi-user.target.wants')
    mkdirSync(wants)
    symlinkSync('/etc/systemd/system/agent@.service', join(wants, 'agent@node1.service'))
    const r = uninstallService({name: 'node1', root})
    expect(r.unit.action).toBe('kept')
    expect(r.enabled).toEqual(['node1'])
    expect(r.next).toEqual(['systemctl disable --now agent@node1', 'agent service uninstall node1   # again, to remove the unit'])
    rmSync(join(wants, 'agent@node1.service'))
    expect(uninstallService({name: 'node1', root}).unit.action).toBe('removed')
  })

  it('refuses a bad name', () => {
    expect(() => uninstallService({name: '../x', root: fresh()})).toThrow(/must start/)
  })
})

describe('the CLI', () => {
  const run = promisify(execFile)
  const cli = (args: string[]) =>
    run(process.execPath, [BIN, ...args], {env: {...process.env, NO_COLOR: '1'}}).then(
      (r) => ({code: 0, stdout: r.stdout, stderr: r.stderr}),
      (e: {code: number; stdout: string; stderr: string}) => ({code: e.code, stdout: e.stdout, stderr: e.stderr}),
    )

  it('service install --json writes what it reports; the default agent is the one running', async () => {
    const root = fresh()
    const r = await cli(['service', 'install', 'node1', '--root', root, '--json'])
    expect(r.code, r.stderr).toBe(0)
    const out = JSON.parse(r.stdout) as {unit: {path: string; action: string}; next: string[]}
    expect(out.unit).toEqual({path: join(root, 'etc/systemd/system/agent@.service'), action: 'created'})
    expect(readFileSync(out.unit.path, 'utf8')).toBe(renderUnit({agent: BIN}))
    expect(out.next.at(-1)).toBe('systemctl daemon-reload && systemctl enable --now agent@node1')
  }, 30_000)

  it('service install with a bad name fails, naming why, with nothing written', async () => {
    const root = fresh()
    const r = await cli(['service', 'install', 'a/b', '--root', root, '--agent', AGENT])
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/Error: the instance name "a\/b" has characters other than/)
    expect(tree(root)).toEqual([])
  }, 30_000)

  it('service uninstall says what it kept', async () => {
    const root = fresh()
    await installService({name: 'node1', root, agent: AGENT})
    writeFileSync(join(root, 'etc/agent/node2.yaml'), CONFIG)
    const r = await cli(['service', 'uninstall', 'node1', '--root', root])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain(`unit ${join(root, 'etc/systemd/system/agent@.service')}: kept (other configs: node2)`)
  }, 30_000)
})
