import {mkdtemp, writeFile} from 'node:fs/promises'
import {readdirSync, readFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {dirname, join, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'
import {describe, expect, it} from 'vitest'
import {
  ConfigError,
  type ConfigIssue,
  loadConfig,
  parseConfig,
  type ResolvedClientConfig,
  type ResolvedNodeConfig,
} from '../../src/core/config/index.js'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const fixtures = join(root, 'test/fixtures/config')
const read = (p: string) => readFileSync(p, 'utf8')

function issuesOf(text: string, file = 'test.yaml'): ConfigIssue[] {
  try {
    parseConfig(text, file)
  } catch (e) {
    if (e instanceof ConfigError) return e.issues
    throw e
  }
  throw new Error('expected a ConfigError')
}

describe('good configs', () => {
  for (const name of readdirSync(join(fixtures, 'good'))) {
    it(`accepts ${name}`, () => {
      const config = parseConfig(read(join(fixtures, 'good', name)), name)
      expect(config.role).toBe(name.startsWith('node') ? 'node' : 'client')
    })
  }

  for (const name of ['node1.yaml', 'alice.yaml']) {
    it(`accepts examples/${name}`, async () => {
      const config = await loadConfig(join(root, 'examples', name))
      expect(config.name).toBe(name.replace('.yaml', ''))
    })
  }
})

/**
 * Each bad fixture ends with its expected issues, one per line:
 *   # expect: LINE:COL PATH | MESSAGE FRAGMENT      (PATH "-" for the file as a whole)
 * and must produce exactly those, no more.
 */
describe('bad configs', () => {
  for (const name of readdirSync(join(fixtures, 'bad'))) {
    it(`rejects ${name}`, () => {
      const text = read(join(fixtures, 'bad', name))
      const expected = [...text.matchAll(/^# expect: (\d+):(\d+) (\S+) \| (.+)$/gm)].map((m) => ({
        line: Number(m[1]),
        column: Number(m[2]),
        path: m[3] === '-' ? '' : m[3],
        fragment: m[4],
      }))
      expect(expected.length).toBeGreaterThan(0)
      const issues = issuesOf(text, name)
      for (const want of expected) {
        const match = issues.find((i) => i.path === want.path && i.message.includes(want.fragment))
        expect(match, `no issue ${want.path}: ${want.fragment} in\n${JSON.stringify(issues, null, 2)}`).toBeDefined()
        expect({line: match?.line, column: match?.column}, `${want.path}: ${match?.message}`).toEqual({line: want.line, column: want.column})
      }
      expect(issues, JSON.stringify(issues, null, 2)).toHaveLength(expected.length)
    })
  }
})

describe('ConfigError', () => {
  it('lists every issue as file:line:col: field: message', () => {
    const text = 'role: node\nname: node1\nlisten: {prot: 1}\n'
    const error = (() => {
      try {
        parseConfig(text, 'node1.yaml')
      } catch (e) {
        return e as ConfigError
      }
    })()
    expect(error).toBeInstanceOf(ConfigError)
    expect(error?.file).toBe('node1.yaml')
    expect(error?.message.split('\n')).toEqual([
      'node1.yaml:1:1: tunnel: is required',
      'node1.yaml:1:1: egress: is required',
      'node1.yaml:1:1: pki: is required',
      'node1.yaml:3:10: listen.prot: unknown key (allowed: address, port, limits); did you mean port?',
    ])
  })

  it('speaks of the client branch for a client, not of a oneOf', () => {
    const issues = issuesOf('role: client\nname: alice\nnode: {host: h}\nroutes: [10.0.0.0/8]\npki: {bundle: a.pem}\nsubnet: 1\n')
    expect(issues).toEqual([{path: 'subnet', line: 6, column: 1, message: expect.stringMatching(/^unknown key \(allowed: role, name/)}])
  })

  it('suggests the key a typo was meant to be, only when close', () => {
    const base = 'role: node\nname: n\ntunnel: {subnet: 10.8.0.0/24}\negress: {interface: eth0}\npki: {bundle: a}\n'
    expect(issuesOf(base + 'sesion: {}\n')[0].message).toMatch(/; did you mean session\?$/)
    expect(issuesOf(base + 'tunnel2: {}\n')[0].message).toMatch(/; did you mean tunnel\?$/)
    expect(issuesOf(base + 'transport: tls\nTransports: {}\n')[0].message).toMatch(/; did you mean transports\?$/)
    expect(issuesOf(base + 'firewall: {}\n')[0].message).toMatch(/\)$/)
    expect(issuesOf(base + 'routes: [10.0.0.0/8]\n')[0].message).toMatch(/; routes is a client setting, not a node one$/)
  })

  it('omits the field for whole-file problems', () => {
    expect(() => parseConfig('[1, 2]\n', 'x.yaml')).toThrow(/^x\.yaml:1:1: must be a YAML mapping/)
  })

  it('reports an unreadable file', async () => {
    await expect(loadConfig('/nonexistent/agent.yaml')).rejects.toThrow('/nonexistent/agent.yaml: cannot read the config file: no such file')
  })
})

describe('loadConfig', () => {
  it('applies node defaults and derives tunnel address and pool', async () => {
    const file = join(fixtures, 'good/node-minimal.yaml')
    const config = (await loadConfig(file)) as ResolvedNodeConfig
    expect(config).toEqual({
      admitAny: false,
      file,
      dir: join(fixtures, 'good'),
      role: 'node',
      name: 'n',
      transport: 'tls',
      listen: {address: '0.0.0.0', port: 443, limits: {perSource: 256, pending: 2048, handshakeSeconds: 5, newPerSecond: 500}},
      tunnel: {interface: 'agent0', subnet: '10.8.0.0/24', address: '10.8.0.1', pool: {start: '10.8.0.1', end: '10.8.0.254'}},
      egress: {interface: 'eth0', snat: 'masquerade', deny: ['169.254.0.0/16']},
      pki: {kind: 'bundle', bundle: join(fixtures, 'good/pki/n.pem')},
      clients: [],
      workers: 'auto',
      gameProbe: {method: 'tcp', port: 443, intervalSeconds: 2, destinations: 1024},
      session: {idleTimeout: 180},
      transports: {
        tls: {keepalive: 10},
        gre: {carrier: 'udp', port: 4754, keepalive: 15, checksum: false, sequence: false},
        ipip: {carrier: 'udp', port: 4755, keepalive: 15},
        'ipsec-over-gre': {carrier: 'udp', port: 4754, keepalive: 15, rekeySeconds: 3600},
      },
      log: {level: 'info', format: 'text'},
    })
    expect(config.tunnel.mtu).toBeUndefined()
  })

  it('keeps what a full node config says, normalises fingerprints, resolves relative pki paths only', async () => {
    const config = (await loadConfig(join(fixtures, 'good/node-full.yaml'))) as ResolvedNodeConfig
    expect(config.tunnel).toEqual({
      interface: 'tun-node1',
      subnet: '10.8.0.0/24',
      address: '10.8.0.254',
      pool: {start: '10.8.0.10', end: '10.8.0.250'},
      mtu: 1400,
    })
    expect(config.pki).toEqual({
      kind: 'files',
      ca: join(fixtures, 'good/pki/ca.crt'),
      cert: join(fixtures, 'good/pki/node1.crt'),
      key: '/etc/agent/node1.key',
    })
    const fp = 'sha256:' + Array(4).fill('AB:12:CD:34:EF:56:78:90').join(':')
    expect(config.clients).toEqual([
      {name: 'alice', address: '10.8.0.10', fingerprint: fp},
      {name: 'bob', fingerprint: fp},
      {name: 'carol', address: '10.8.0.20'},
    ])
    expect(config.transports.gre).toEqual({carrier: 'ip', port: 5000, keepalive: 15, checksum: true, sequence: true})
    expect(config.transports.tls).toEqual({keepalive: 20})
    expect(config.workers).toBe(4)
    expect(config).not.toHaveProperty('$schema')
  })

  it('applies client defaults; the node name defaults to the host', async () => {
    const file = join(fixtures, 'good/client-minimal.yaml')
    const config = (await loadConfig(file)) as ResolvedClientConfig
    expect(config).toMatchObject({
      file,
      role: 'client',
      transport: 'tls',
      nodes: [{host: '198.51.100.1', port: 443, name: '198.51.100.1', preference: 0}],
      selection: {probeSeconds: 0.5, probeOthersSeconds: 4, deadSeconds: 2, switchAfterSeconds: 10, betterByMs: 10, betterRatio: 0.667, fleet: true, startSeconds: 1},
      routes: ['121.201.64.81/32'],
      tunnel: {interface: 'agent0'},
      pki: {kind: 'bundle', bundle: join(fixtures, 'good/pki/alice.pem')},
      reconnect: {minSeconds: 1, maxSeconds: 30},
      log: {level: 'info', format: 'text'},
    })
    expect(config.transports['ipsec-over-gre'].rekeySeconds).toBe(3600)
  })

  it('resolves client pki paths against the file, also through ..', async () => {
    const config = (await loadConfig(join(fixtures, 'good/client-full.yaml'))) as ResolvedClientConfig
    expect(config.pki).toEqual({
      kind: 'files',
      ca: join(fixtures, 'ca.crt'),
      cert: join(fixtures, 'good/alice.crt'),
      key: join(fixtures, 'good/alice.key'),
    })
    expect(config.nodes).toEqual([{host: 'proxy.example.com', port: 8443, name: 'node1', preference: 0}])
    expect(config.transports['ipsec-over-gre']).toEqual({carrier: 'ip', port: 4754, keepalive: 15, rekeySeconds: 120})
  })

  it('takes a relative file name relative to the working directory', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'agent-config-'))
    await writeFile(join(dir, 'c.yaml'), read(join(fixtures, 'good/client-minimal.yaml')))
    const config = await loadConfig(join(dir, 'c.yaml'))
    expect(config.file).toBe(join(dir, 'c.yaml'))
    expect(config.pki).toEqual({kind: 'bundle', bundle: join(dir, 'pki/alice.pem')})
  })

  it('does not let defaults leak between loads', async () => {
    const a = (await loadConfig(join(fixtures, 'good/node-minimal.yaml'))) as ResolvedNodeConfig
    a.transports.tls.keepalive = 99
    a.clients.push({name: 'x'})
    const b = (await loadConfig(join(fixtures, 'good/node-minimal.yaml'))) as ResolvedNodeConfig
    expect(b.transports.tls.keepalive).toBe(10)
    expect(b.clients).toEqual([])
  })
})

describe('YAML details', () => {
  it('expands aliases before validating', () => {
    const text = 'role: node\nname: n\ntunnel: {subnet: 10.8.0.0/24}\negress: &e {interface: eth0}\npki: {bundle: a}\nclients: []\n'
    expect(parseConfig(text, 'x').role).toBe('node')
  })

  it('points into an aliased block at the alias target', () => {
    const text = 'role: client\nname: a\nnode: {host: h}\nroutes: [10.0.0.0/8]\npki: &p {bundle: a}\ntransports:\n  tls: &t {keepalive: 0}\n  gre: *t\n'
    const issues = issuesOf(text)
    expect(issues.map((i) => [i.path, i.line]).sort()).toEqual([
      ['transports.gre.keepalive', 7],
      ['transports.tls.keepalive', 7],
    ])
  })

  it('refuses an alias bomb', () => {
    let text = 'a: &a [x, x, x, x, x, x, x, x, x]\n'
    for (let i = 0; i < 8; i++) {
      const [prev, cur] = [String.fromCharCode(97 + i), String.fromCharCode(98 + i)]
      text += `${cur}: &${cur} [${Array(9).fill(`*${prev}`).join(', ')}]\n`
    }
    expect(issuesOf(text)).toEqual([{path: '', line: 1, column: 1, message: expect.stringContaining('resource exhaustion')}])
  })

  it('treats an unknown tag as an error', () => {
    const issues = issuesOf('role: !custom node\n')
    expect(issues[0]).toMatchObject({path: '', line: 1, message: expect.stringContaining('Unresolved tag')})
  })

  it('says "nothing" for an empty value', () => {
    const issues = issuesOf('role: node\nname: n\ntunnel:\negress: {interface: eth0}\npki: {bundle: a}\n')
    expect(issues).toEqual([{path: 'tunnel', line: 3, column: 1, message: 'must be a mapping (got nothing)'}])
  })
})

describe('egress.deny', () => {
  it('takes networks only, naming the one with host bits', () => {
    const text = 'role: node\nname: n\ntunnel: {subnet: 10.8.0.0/24}\negress: {interface: eth0, deny: [10.0.0.0/8, 169.254.1.1/16]}\npki: {bundle: a}\n'
    const issues = issuesOf(text)
    expect(issues).toHaveLength(1)
    expect(issues[0].path).toBe('egress.deny[1]')
    expect(issues[0].message).toMatch(/"169\.254\.1\.1\/16" is not a network address \(did you mean 169\.254\.0\.0\/16\?\)/)
  })
})

describe('a node roster: clients any, and a CRL', () => {
  const node = (clients: string, pki = 'pki: {bundle: n.pem}') =>
    `role: node\nname: n\ntunnel: {interface: agent0, subnet: 10.8.0.0/24}\negress: {interface: eth0}\n${pki}\nclients: ${clients}\n`
  const resolved = async (text: string) => {
    const dir = await mkdtemp(join(tmpdir(), 'agent-config-'))
    const file = join(dir, 'n.yaml')
    await writeFile(file, text)
    return (await loadConfig(file)) as ResolvedNodeConfig
  }

  it('takes "any" alone, or as an item beside listed clients that keep their addresses and pins', async () => {
    expect(await resolved(node('any'))).toMatchObject({admitAny: true, clients: []})
    const mixed = await resolved(node('\n  - any\n  - {name: bob, address: 10.8.0.50}'))
    expect(mixed).toMatchObject({admitAny: true, clients: [{name: 'bob', address: '10.8.0.50'}]})
    expect(await resolved(node('[{name: alice}]'))).toMatchObject({admitAny: false, clients: [{name: 'alice'}]})
  })

  it('points a typo inside one listed client at that client, and names a wrong word', () => {
    const typo = issuesOf(node('\n  - any\n  - {name: bob, adress: 10.8.0.50}'))
    expect(typo).toHaveLength(1)
    expect(typo[0]).toMatchObject({path: 'clients[1].adress', line: 8})
    expect(typo[0].message).toMatch(/unknown key .*did you mean address/)
    const word = issuesOf(node('anyone'))
    expect(word).toHaveLength(1)
    expect(word[0]).toMatchObject({path: 'clients'})
    expect(word[0].message).toMatch(/must be "any"/)
    expect(issuesOf(node('[every]'))[0]).toMatchObject({path: 'clients[0]'})
  })

  it('still checks listed clients beside any: a duplicate static address is named', () => {
    const dup = issuesOf(node('\n  - any\n  - {name: a, address: 10.8.0.50}\n  - {name: b, address: 10.8.0.50}'))
    expect(dup.map((i) => i.path)).toEqual(['clients[2].address'])
    expect(dup[0].message).toMatch(/already the address of clients\[1\] \(a\)/)
  })

  it('resolves pki.crl against the config file; a client config has no crl', async () => {
    const config = await resolved(node('[]', 'pki: {bundle: n.pem, crl: pki/crl.pem}'))
    expect(config.pki.crl).toBe(join(config.dir, 'pki/crl.pem'))
    const client = `role: client\nname: c\nnode: {host: 192.0.2.1}\nroutes: [198.51.100.1/32]\npki: {bundle: c.pem, crl: crl.pem}\n`
    expect(issuesOf(client)[0]).toMatchObject({path: 'pki.crl'})
  })
})
