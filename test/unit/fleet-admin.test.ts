/** The parseable parts of `agent fleet`: access files and flags, serials, node records, roles, tables. */
import {mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {afterAll, describe, expect, it} from 'vitest'
import {describePermission, fleetRoles, rolePermissions} from '../../src/core/fleet/admin.js'
import {parseNodeRecord} from '../../src/core/fleet/layout.js'
import {readAccessFile, resolveAccess} from '../../src/core/fleet/access.js'
import {formatAge, formatClients, formatNodes, formatRate, formatRevocations} from '../../src/core/fleet/format.js'
import {normalizeSerial} from '../../src/core/fleet/layout.js'

const dir = mkdtempSync(join(tmpdir(), `fleet-admin-${process.pid}-`))
afterAll(() => rmSync(dir, {recursive: true, force: true}))

function file(name: string, text: string): string {
  const p = join(dir, name)
  writeFileSync(p, text)
  return p
}

describe('fleet access', () => {
  it("reads a node config's fleet: section, paths relative to the file", () => {
    const f = file('node.yaml', 'role: node\nname: node1\nfleet:\n  endpoints: [https://10.0.0.5:2379, https://10.0.0.6:2379]\n  ca: etcd/ca.pem\n  cert: /abs/n1.pem\n  key: n1.key\n')
    expect(readAccessFile(f)).toEqual({endpoints: ['https://10.0.0.5:2379', 'https://10.0.0.6:2379'], ca: join(dir, 'etcd/ca.pem'), cert: '/abs/n1.pem', key: join(dir, 'n1.key')})
  })

  it('reads a small file of just the fields, and flags override it', () => {
    const f = file('ops.yaml', 'endpoints: https://10.0.0.5:2379\nca: ca.pem\ncert: ops.pem\nkey: ops.key\nprefix: /agent/f2\n')
    expect(resolveAccess({config: f})).toEqual({endpoints: ['https://10.0.0.5:2379'], ca: join(dir, 'ca.pem'), cert: join(dir, 'ops.pem'), key: join(dir, 'ops.key'), prefix: '/agent/f2'})
    const r = resolveAccess({config: f, endpoints: 'https://a:1, https://b:2', cert: 'root.pem', prefix: '/x'}, '/work')
    expect(r).toMatchObject({endpoints: ['https://a:1', 'https://b:2'], cert: '/work/root.pem', key: join(dir, 'ops.key'), prefix: '/x'})
  })

  it('defaults the prefix; flags alone are enough', () => {
    expect(resolveAccess({endpoints: 'https://a:1', ca: 'c', cert: 'd', key: 'e'}, '/w')).toEqual({endpoints: ['https://a:1'], ca: '/w/c', cert: '/w/d', key: '/w/e', prefix: '/agent/fleet'})
  })

  it('names everything that is missing', () => {
    expect(() => resolveAccess({ca: 'c'})).toThrow(/missing endpoints \(--endpoints\), cert \(--cert\), key \(--key\)/)
    const f = file('partial.yaml', 'fleet:\n  endpoints: [https://a:1]\n  ca: ca.pem\n')
    expect(() => resolveAccess({config: f})).toThrow(/missing cert \(--cert\), key \(--key\)/)
  })

  it('refuses what is not a fleet access', () => {
    expect(() => readAccessFile(join(dir, 'none.yaml'))).toThrow(/cannot read .*none\.yaml: no such file/)
    expect(() => readAccessFile(file('other.yaml', 'role: node\nname: n\n'))).toThrow(/has no fleet: section/)
    expect(() => readAccessFile(file('list.yaml', '- a\n'))).toThrow(/expected a mapping/)
    expect(() => readAccessFile(file('bad.yaml', 'a: [\n'))).toThrow(/not valid YAML/)
    expect(() => readAccessFile(file('ep.yaml', 'endpoints: 5\n'))).toThrow(/endpoints must be a list/)
    expect(() => resolveAccess({endpoints: 'http://a:1', ca: 'c', cert: 'd', key: 'e'})).toThrow(/invalid etcd endpoint "http:\/\/a:1"/)
    expect(() => resolveAccess({endpoints: 'https://a:1', ca: 'c', cert: 'd', key: 'e', prefix: 'agent/'})).toThrow(/invalid fleet prefix/)
  })
})

describe('normalizeSerial', () => {
  it('gives one spelling for the forms operators type', () => {
    for (const s of ['0A:1B:2C', 'serial=0A1B2C', '0xa1b2c', ' a1b2c ', '000A1B2C']) expect(normalizeSerial(s)).toBe('a1b2c')
    expect(normalizeSerial('00')).toBe('0')
  })
  it('refuses what is not hex', () => {
    expect(() => normalizeSerial('xyz')).toThrow(/invalid serial "xyz"/)
    expect(() => normalizeSerial('-0A')).toThrow(/invalid serial/)
  })
})

describe('roles', () => {
  it('are named after the prefix and grant what the docs say', () => {
    const roles = fleetRoles('/agent/fleet')
    expect([roles.operator, roles.node, roles.ownNode('node1')]).toEqual(['agent-operator-agent.fleet', 'agent-node-agent.fleet', 'agent-node-agent.fleet-node1'])
    const p = rolePermissions('/agent/fleet')
    expect(p.operator.map(describePermission)).toEqual(['readwrite /agent/fleet/ (prefix)'])
    expect(p.node.map(describePermission)).toEqual(['read /agent/fleet/ (prefix)'])
    expect(p.ownNode('node1').map(describePermission)).toEqual(['readwrite /agent/fleet/nodes/node1'])
    expect(() => roles.ownNode('../x')).toThrow(/invalid name/)
  })
})

const record = {
  name: 'node1',
  version: '0.1.0',
  transport: 'gre',
  endpoints: {control: '203.0.113.7:8443', carrier: '203.0.113.7'},
  sessions: 12,
  throughput: {rxBytesPerSecond: 125_000, txBytesPerSecond: 0},
  health: 'degraded' as const,
  problems: ['etcd unreachable for 40s'],
  startedAt: '2025-01-01T00:00:00.000Z',
  heartbeatAt: '2025-01-01T01:00:00.000Z',
}

describe('node records', () => {
  it('parses a record and refuses what is not one', () => {
    expect(parseNodeRecord(JSON.stringify(record))).toEqual(record)
    expect(parseNodeRecord('nope')).toBeNull()
    expect(parseNodeRecord(JSON.stringify({...record, health: 'fine'}))).toBeNull()
    expect(parseNodeRecord(JSON.stringify({...record, endpoints: {}}))).toBeNull()
    expect(parseNodeRecord(JSON.stringify({...record, sessions: '3'}))).toBeNull()
  })
})

describe('tables', () => {
  it('formats ages and rates', () => {
    expect([0, 4.9, 59, 60, 192, 3600, 7500, 86400 + 4 * 3600].map(formatAge)).toEqual(['0s', '4s', '59s', '1m00s', '3m12s', '1h00m', '2h05m', '1d04h'])
    expect(formatAge(null)).toBe('?')
    expect([0, 100, 125_000, 1_537_500, 2e9].map(formatRate)).toEqual(['0 bit/s', '800 bit/s', '1.0 Mbit/s', '12.3 Mbit/s', '16.0 Gbit/s'])
  })

  it('lists nodes one per line, aligned', () => {
    const out = formatNodes([
      {name: 'node1', record, heartbeatAgeSeconds: 4},
      {name: 'node22', record: null, invalid: '{', heartbeatAgeSeconds: null},
    ]).split('\n')
    expect(out[0]).toMatch(/^NAME\s+TRANSPORT\s+CONTROL\s+CARRIER\s+SESSIONS\s+RX\s+TX\s+HEALTH\s+HEARTBEAT$/)
    expect(out[1]).toBe('node1   gre        203.0.113.7:8443  203.0.113.7  12        1.0 Mbit/s  0 bit/s  degraded (etcd unreachable for 40s)  4s ago')
    expect(out[2]).toMatch(/^node22\s+\?\s+.*\s+invalid record\s+\?$/)
    expect(formatNodes([])).toBe('no nodes registered')
  })

  it('lists clients and revocations', () => {
    expect(formatClients([{name: 'alice', address: '10.8.0.20'}, {name: 'bob', invalid: 'x'}]).split('\n')).toEqual([
      'NAME   ADDRESS                            FINGERPRINT',
      'alice  10.8.0.20                          -',
      'bob    (invalid value, ignored by nodes)',
    ])
    expect(formatRevocations({names: [{name: 'eve', at: '2025-01-01T00:00:00.000Z', by: 'root'}], serials: [{serial: 'a1b', at: ''}]}).split('\n')).toEqual([
      'REVOKED     AT                        BY    NAME',
      'name eve    2025-01-01T00:00:00.000Z  root  eve',
      'serial a1b  ?                         -     -',
    ])
  })
})
