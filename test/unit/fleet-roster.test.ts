/**
 * The fleet's part of a node's roster: keys from etcd applied to a view (layout.ts), and the
 * view merged with the node's own file (roster.ts): lists merge, the file wins where both list a
 * name, any source can revoke.
 */
import {describe, expect, it} from 'vitest'
import {applyRosterKey, emptyFleetRoster, fleetKeys} from '../../src/core/fleet/layout.js'
import {Roster, type ClientIdentity, type RosterChange} from '../../src/core/node/roster.js'
import {serialKey} from '../../src/core/pki/crl.js'

const keys = fleetKeys('/agent/f')
const id = (name: string, serial = '0A1B', fingerprint = 'sha256:AA'): ClientIdentity => ({name, serial: serialKey(serial), fingerprint})

describe('fleet keys into a roster view', () => {
  it('applies clients and revocations, puts and deletes, and ignores what it does not know', () => {
    const v = emptyFleetRoster()
    expect(applyRosterKey(keys, v, '/agent/f/clients/carol', '{"address":"10.8.0.20"}')).toBe(true)
    expect(applyRosterKey(keys, v, '/agent/f/revoked/names/dave', '{"at":"x"}')).toBe(true)
    // Serials are stored lower-case without leading zeros; the roster compares them as serialKey spells them.
    expect(applyRosterKey(keys, v, '/agent/f/revoked/serials/a1b', '{"at":"x"}')).toBe(true)
    expect(v.clients.get('carol')).toEqual({name: 'carol', address: '10.8.0.20'})
    expect([...v.revokedNames]).toEqual(['dave'])
    expect([...v.revokedSerials]).toEqual([serialKey('0A1B')])
    // A bad value is not admitted silently, and a newer agent's keys do not stop this one.
    expect(applyRosterKey(keys, v, '/agent/f/clients/eve', '{"address":"10.8.0.999"}')).toBe(false)
    expect(applyRosterKey(keys, v, '/agent/f/clients/eve', 'not json')).toBe(false)
    expect(applyRosterKey(keys, v, '/agent/f/quotas/eve', '{}')).toBe(false)
    expect(v.clients.has('eve')).toBe(false)
    applyRosterKey(keys, v, '/agent/f/clients/carol', null)
    applyRosterKey(keys, v, '/agent/f/revoked/names/dave', null)
    expect(v.clients.size + v.revokedNames.size).toBe(0)
  })
})

describe('a roster with a fleet part', () => {
  it('admits the fleet\'s clients too, lets the file win on a shared name, and announces what changed', () => {
    const r = new Roster({listed: [{name: 'alice', address: '10.8.0.10'}], any: false})
    const changes: RosterChange[] = []
    r.subscribe((c) => changes.push(c))
    r.setFleet({listed: [{name: 'carol'}, {name: 'alice', address: '10.8.0.99'}], revokedNames: new Set(), revokedSerials: new Set()})
    expect(r.check(id('carol')).ok).toBe(true)
    expect(r.entry('alice')).toEqual({name: 'alice', address: '10.8.0.10'})
    expect([...changes[0].names]).toEqual(['carol'])
    // The fleet drops carol: she is announced (the node re-checks and cuts her).
    r.setFleet({listed: [], revokedNames: new Set(), revokedSerials: new Set()})
    expect(r.check(id('carol')).ok).toBe(false)
    expect([...changes[1].names]).toEqual(['carol'])
  })

  it('lets the fleet revoke a name or a serial whatever lists it, the file included', () => {
    const r = new Roster({listed: [{name: 'alice'}], any: true})
    const changes: RosterChange[] = []
    r.subscribe((c) => changes.push(c))
    r.setFleet({listed: [], revokedNames: new Set(['alice']), revokedSerials: new Set([serialKey('0C')])})
    expect(r.check(id('alice'))).toEqual({ok: false, reason: 'client "alice" is revoked in the fleet'})
    expect(r.check(id('bob', '0C')).ok).toBe(false)
    expect(r.check(id('bob', '0D')).ok).toBe(true)
    expect([...changes[0].names]).toEqual(['alice'])
    expect([...changes[0].revoked]).toEqual([serialKey('0C')])
    expect(r.revokedCount).toBe(2)
    // A CRL's serials and the fleet's add up; neither replaces the other.
    r.setRevoked(new Set([serialKey('0D')]))
    expect(r.check(id('bob', '0C')).ok).toBe(false)
    expect(r.check(id('bob', '0D')).ok).toBe(false)
  })

  it('keeps the fleet\'s clients when the file is reloaded', () => {
    const r = new Roster({listed: [{name: 'alice'}], any: false})
    r.setFleet({listed: [{name: 'carol'}], revokedNames: new Set(), revokedSerials: new Set()})
    r.setPolicy({listed: [{name: 'bob'}], any: false})
    expect(r.entries.map((e) => e.name).sort()).toEqual(['bob', 'carol'])
    expect(r.fleetListed).toBe(1)
  })
})
