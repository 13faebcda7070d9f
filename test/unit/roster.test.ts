/**
 * The node's roster (who may connect), its address pool (who gets which tunnel address while
 * the roster changes), admission coalescing, and what a reload may change live.
 */
import {describe, expect, it, vi} from 'vitest'
import {Roster, type ClientIdentity, type RosterChange} from '../../src/core/node/roster.js'
import {AddressPool} from '../../src/core/node/address-pool.js'
import {Admission, ADMISSION_RETRY_MS} from '../../src/core/node/admission.js'
import {changedPaths, classifyChange, refusedMessage} from '../../src/core/config/live-change.js'
import {ipv4ToNumber} from '../../src/core/net/ipv4.js'
import type {ResolvedNodeConfig} from '../../src/core/config/index.js'

const id = (name: string, serial = '01', fingerprint = 'sha256:AA:BB'): ClientIdentity => ({name, serial, fingerprint})

describe('roster', () => {
  it('admits a listed name and refuses others by name', () => {
    const r = new Roster({listed: [{name: 'alice'}], any: false})
    expect(r.check(id('alice'))).toEqual({ok: true, name: 'alice', entry: {name: 'alice'}})
    expect(r.check(id('mallory'))).toEqual({ok: false, reason: 'client "mallory" is not in this node\'s authorized clients'})
    expect(r.check(id('')).ok).toBe(false)
  })

  it('checks a pinned fingerprint, also when any certificate is admitted', () => {
    for (const any of [false, true]) {
      const r = new Roster({listed: [{name: 'alice', fingerprint: 'sha256:AA:BB'}], any})
      expect(r.check(id('alice', '01', 'sha256:AA:BB')).ok).toBe(true)
      const refused = r.check(id('alice', '01', 'sha256:AA:BC'))
      expect(refused.ok).toBe(false)
      expect(!refused.ok && refused.reason).toMatch(/not the pinned sha256:AA:BB/)
    }
  })

  it('with any, admits an unlisted certificate; a revoked serial is refused listed or not', () => {
    const r = new Roster({listed: [{name: 'alice'}], any: true}, new Set(['0A']))
    expect(r.check(id('zoe', '0B'))).toEqual({ok: true, name: 'zoe'})
    expect(r.check(id('zoe', '0A'))).toEqual({ok: false, reason: 'certificate 0A of "zoe" is revoked'})
    expect(r.check(id('alice', '0A')).ok).toBe(false)
  })

  it('announces what each update changed, and nothing for an update that changes nothing', () => {
    const r = new Roster({listed: [{name: 'a'}, {name: 'b', address: '10.8.0.9'}], any: false})
    const seen: RosterChange[] = []
    const off = r.subscribe((c) => seen.push(c))
    r.setPolicy({listed: [{name: 'a'}, {name: 'b', address: '10.8.0.9'}], any: false})
    expect(seen).toHaveLength(0)
    const c = r.setPolicy({listed: [{name: 'b', address: '10.8.0.10'}, {name: 'c'}], any: true})
    expect([...c.names].sort()).toEqual(['a', 'b', 'c'])
    expect(c.any).toBe(true)
    r.setRevoked(new Set(['01']))
    r.setRevoked(new Set(['01']))
    expect(seen).toHaveLength(2)
    expect([...seen[1].revoked]).toEqual(['01'])
    off()
    r.setRevoked(new Set(['01', '02']))
    expect(seen).toHaveLength(2)
    expect(r.revokedCount).toBe(2)
  })
})

describe('address pool', () => {
  const range = {start: ipv4ToNumber('10.8.0.10'), end: ipv4ToNumber('10.8.0.14')}
  const node = ipv4ToNumber('10.8.0.1')
  const pool = (connected = new Set<string>()) => new AddressPool(node, range, (n) => connected.has(n))

  it('gives static addresses, then pool addresses to listed clients in list order', () => {
    const p = pool()
    p.setListed([{name: 'a'}, {name: 'b', address: '10.8.0.10'}, {name: 'c'}])
    expect([p.assign('a'), p.assign('b'), p.assign('c')]).toEqual(['10.8.0.11', '10.8.0.10', '10.8.0.12'])
  })

  it('keeps a lease across reconnects and across a reload that adds or removes other clients', () => {
    const p = pool()
    p.setListed([{name: 'a'}, {name: 'b'}, {name: 'c'}])
    const before = [p.assign('a'), p.assign('b'), p.assign('c')]
    p.setListed([{name: 'new'}, {name: 'c'}, {name: 'a'}])
    expect([p.assign('a'), p.assign('c')]).toEqual([before[0], before[2]])
    expect(before).not.toContain(p.assign('new'))
  })

  it('a changed static address moves only that client; a static taking a lease drops it', () => {
    const p = pool()
    p.setListed([{name: 'a'}, {name: 'b', address: '10.8.0.13'}])
    expect(p.assign('a')).toBe('10.8.0.10')
    p.setListed([{name: 'a'}, {name: 'b', address: '10.8.0.14'}])
    expect(p.current('a')).toBe('10.8.0.10')
    expect(p.current('b')).toBe('10.8.0.14')
    p.setListed([{name: 'a'}, {name: 'b', address: '10.8.0.10'}])
    expect(p.current('b')).toBe('10.8.0.10')
    // a's lease was on b's new static address: a gets another one (its session must move).
    expect(p.current('a')).toBeDefined()
    expect(p.current('a')).not.toBe('10.8.0.10')
    expect(p.assign('a')).toBe(p.current('a'))
  })

  it('gives a client admitted by any the same address whatever order clients come in', () => {
    const names = ['zoe', 'yan', 'xia']
    const first = pool()
    const got = Object.fromEntries(names.map((n) => [n, first.assign(n)]))
    const second = pool()
    for (const n of [...names].reverse()) second.assign(n)
    // Different orders may collide differently, but one client alone always lands on its slot.
    const alone = pool()
    expect(alone.assign('zoe')).toBe(pool().assign('zoe'))
    expect(new Set(Object.values(got)).size).toBe(3)
  })

  it('when full, takes back the least recently used lease of a client that is not connected, never a connected one', () => {
    const connected = new Set<string>()
    const p = pool(connected)
    const names = ['a', 'b', 'c', 'd', 'e']
    for (const n of names) p.assign(n)
    connected.add('a').add('c').add('d').add('e')
    const bAddress = p.current('b')
    expect(p.assign('f')).toBe(bAddress)
    expect(p.current('b')).toBeUndefined()
    connected.add('f')
    expect(p.assign('g')).toBeUndefined()
  })

  it('never gives the node address or a static address as a lease', () => {
    const p = new AddressPool(ipv4ToNumber('10.8.0.10'), range, () => true)
    p.setListed([{name: 's', address: '10.8.0.11'}])
    const got = ['a', 'b', 'c', 'd'].map((n) => p.assign(n))
    expect(got).not.toContain('10.8.0.10')
    expect(got).not.toContain('10.8.0.11')
    expect(got.filter((x) => x === undefined)).toHaveLength(1)
  })
})

describe('admission coalescing', () => {
  it('runs one apply at a time and folds the changes made meanwhile into one more, the last word per address winning', async () => {
    const applied: Array<{add: readonly string[]; del: readonly string[]}> = []
    let release!: () => void
    const target = {
      changeAdmitted: async (change: {add: readonly string[]; del: readonly string[]}) => {
        applied.push(change)
        if (applied.length === 1) await new Promise<void>((r) => (release = r))
      },
    }
    const a = new Admission(target, () => true)
    const first = a.admit('10.8.0.2', 'alice')
    await new Promise((r) => setTimeout(r, 0))
    const second = a.admit('10.8.0.3', 'bob')
    const third = a.withdraw('10.8.0.2', 'alice')
    const fourth = a.admit('10.8.0.4', 'carol')
    a.withdraw('10.8.0.5', 'dave')
    a.admit('10.8.0.5', 'dave') // dave reconnected: admitted, his flows kept
    expect(second).toBe(third)
    expect(third).toBe(fourth)
    release()
    await Promise.all([first, second, third, fourth])
    expect(applied).toEqual([
      {add: ['10.8.0.2'], del: [], renew: []},
      {add: ['10.8.0.3', '10.8.0.4', '10.8.0.5'], del: ['10.8.0.2'], renew: []},
    ])
    await a.update() // nothing pending: no call
    expect(applied).toHaveLength(2)
  })

  it('applies nothing once the node is stopping', async () => {
    const applied: unknown[] = []
    const a = new Admission({changeAdmitted: async (c) => void applied.push(c)}, () => false)
    await a.admit('10.8.0.2', 'alice')
    expect(applied).toHaveLength(0)
  })

  it('renews an address withdrawn from one client and admitted for another in the same batch', async () => {
    const applied: unknown[] = []
    let release!: () => void
    const a = new Admission(
      {
        changeAdmitted: async (c) => {
          applied.push(c)
          if (applied.length === 1) await new Promise<void>((r) => (release = r))
        },
      },
      () => true,
    )
    const first = a.admit('10.8.0.9', 'zed')
    await new Promise((r) => setTimeout(r, 0))
    a.withdraw('10.8.0.5', 'alice')
    a.admit('10.8.0.5', 'bob') // alice's address, now bob's: her flows must not become his
    a.withdraw('10.8.0.5', 'bob')
    const last = a.admit('10.8.0.5', 'bob') // and bob flapped: still renewed
    release()
    await Promise.all([first, last])
    expect(applied[1]).toEqual({add: ['10.8.0.5'], del: [], renew: ['10.8.0.5']})
  })

  it('retries a failed apply until the firewall takes it, and stops retrying when settled', async () => {
    vi.useFakeTimers()
    try {
      const calls: unknown[] = []
      let fail = 2
      const errors: string[] = []
      const a = new Admission(
        {
          changeAdmitted: async (c) => {
            calls.push(c)
            if (fail-- > 0) throw new Error('ipset restore rejected line 1')
          },
        },
        () => true,
        () => {},
        (e) => errors.push(e.message),
      )
      await expect(a.withdraw('10.8.0.5', 'alice')).rejects.toThrow(/line 1/)
      await vi.advanceTimersByTimeAsync(ADMISSION_RETRY_MS)
      await vi.advanceTimersByTimeAsync(ADMISSION_RETRY_MS)
      expect(calls).toEqual([{add: [], del: ['10.8.0.5'], renew: []}, {add: [], del: [], renew: []}, {add: [], del: [], renew: []}])
      expect(errors).toHaveLength(2)
      await vi.advanceTimersByTimeAsync(5 * ADMISSION_RETRY_MS)
      expect(calls).toHaveLength(3) // it worked: no more retries
      fail = 1
      await expect(a.admit('10.8.0.6', 'bob')).rejects.toThrow(/line 1/)
      await a.settled()
      await vi.advanceTimersByTimeAsync(5 * ADMISSION_RETRY_MS)
      expect(calls).toHaveLength(4)
    } finally {
      vi.useRealTimers()
    }
  })
})

describe('live changes', () => {
  const node = {
    role: 'node',
    name: 'n1',
    file: '/etc/agent/n1.yaml',
    dir: '/etc/agent',
    tunnel: {interface: 'agent0', subnet: '10.8.0.0/24', address: '10.8.0.1', pool: {start: '10.8.0.2', end: '10.8.0.254'}},
    clients: [{name: 'alice'}],
    admitAny: false,
    pki: {kind: 'bundle', bundle: '/etc/agent/n1.pem'},
    log: {level: 'info'},
    session: {idleTimeout: 180},
  } as unknown as ResolvedNodeConfig
  const edit = (f: (c: Record<string, any>) => void) => {
    const c = structuredClone(node) as unknown as Record<string, any>
    f(c)
    return c as unknown as ResolvedNodeConfig
  }

  it('names every changed leaf, a list as one value', () => {
    expect(changedPaths({a: {b: 1, c: [1, 2]}, d: 1}, {a: {b: 2, c: [2, 1]}, d: 1})).toEqual(['a.b', 'a.c'])
    expect(changedPaths({a: 1}, {a: 1})).toEqual([])
    expect(changedPaths({a: {b: 1}}, {})).toEqual(['a'])
  })

  it('lets clients, any, the CRL, session and log change, and refuses the rest by name', () => {
    const next = edit((c) => {
      c.clients = [{name: 'bob'}]
      c.admitAny = true
      c.pki.crl = '/etc/agent/crl.pem'
      c.log.level = 'debug'
    })
    expect(classifyChange(node, next)).toEqual({live: ['admitAny', 'clients', 'log.level', 'pki.crl'], refused: []})
    const bad = edit((c) => {
      c.tunnel.subnet = '10.9.0.0/24'
      c.clients = []
    })
    expect(classifyChange(node, bad)).toEqual({live: ['clients'], refused: ['tunnel.subnet']})
    expect(refusedMessage(['tunnel.subnet'])).toBe('tunnel.subnet cannot change while the agent runs: restart it to apply; nothing was changed')
  })

  it('refuses a change of log.format (a shipper parses one format per process) but not of log.level', () => {
    const withFormat = edit((c) => (c.log.format = 'text'))
    const json = edit((c) => ((c.log.format = 'json'), (c.log.level = 'warn')))
    expect(classifyChange(withFormat, json)).toEqual({live: ['log.level'], refused: ['log.format']})
  })

  it('does not count the file moving as a change, but refuses a change of role', () => {
    expect(classifyChange(node, edit((c) => ((c.file = '/tmp/x.yaml'), (c.dir = '/tmp'))))).toEqual({live: [], refused: []})
    expect(classifyChange(node, {...node, role: 'client'} as never).refused).toEqual(['role'])
  })
})

describe('admission and flow deletion', () => {
  it('resolves (the set is right) and reports when only the flows of a withdrawn client could not be deleted', async () => {
    const {FlowDeletionError} = await import('../../src/core/firewall/index.js')
    const reported: string[] = []
    const a = new Admission(
      {changeAdmitted: async () => Promise.reject(new FlowDeletionError('conntrack -D failed', ['10.8.0.9']))},
      () => true,
      (e) => reported.push(e.message),
    )
    await expect(a.withdraw('10.8.0.9', 'carol')).resolves.toBeUndefined()
    expect(reported).toEqual(['conntrack -D failed'])
    const failing = new Admission({changeAdmitted: async () => Promise.reject(new Error('ipset restore rejected line 1'))}, () => true)
    await expect(failing.admit('10.8.0.2', 'alice')).rejects.toThrow(/line 1/)
  })
})

describe('CRL replacement', () => {
  it('refuses a CRL older than the one enforced, or one with no number after a numbered one', async () => {
    const {RevocationWatch} = await import('../../src/core/node/revocations.js')
    const log = {info: () => {}, warn: () => {}, error: () => {}, debug: () => {}} as never
    const w = new RevocationWatch('/nonexistent/crl.pem', '', log, () => {})
    const list = (number?: bigint) => ({revoked: new Set<string>(), number, thisUpdate: new Date(), issuer: 'CN=ca', file: 'crl.pem', caFingerprint: ''}) as never
    expect(w.refusal(list(3n))).toBeUndefined() // nothing enforced yet
    ;(w as unknown as {list: unknown}).list = list(5n)
    expect(w.refusal(list(5n))).toBeUndefined()
    expect(w.refusal(list(6n))).toBeUndefined()
    expect(w.refusal(list(4n))).toBe('it is CRL #4, older than the #5 already enforced')
    expect(w.refusal(list(undefined))).toBe('it has no CRL number, and CRL #5 is already enforced')
  })
})
