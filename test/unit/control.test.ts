import {describe, expect, it} from 'vitest'
import {decodeMessage, encodeMessage} from '../../src/core/control/messages.js'
import {planAddresses} from '../../src/core/node/address-plan.js'
import {authorize} from '../../src/core/node/authorize.js'
import {backoffDelay} from '../../src/core/client/backoff.js'
import {isFatalTlsError} from '../../src/core/client/tls-errors.js'
import {ipv4ToNumber} from '../../src/core/net/ipv4.js'
import type {PeerCertificate} from 'node:tls'

const decode = (v: unknown) => {
  const b = Buffer.from(JSON.stringify(v))
  return decodeMessage(b, 0, b.length)
}

describe('control messages', () => {
  it('round-trips hello, welcome and refused', () => {
    const msgs = [
      {type: 'hello', version: 1, transport: 'tls'},
      {type: 'welcome', version: 1, transport: 'tls', address: '10.8.0.10', prefix: 24, gateway: '10.8.0.1', mtu: 1500, keepalive: 10, carrier: {kind: 'udp', port: 4754}, params: {key: 7}},
      {type: 'refused', reason: 'no'},
      {type: 'transport', body: {rekey: 7, check: 'ab', now: true}},
    ] as const
    for (const m of msgs) {
      const b = encodeMessage(m)
      expect(decodeMessage(b, 0, b.length)).toEqual(m)
    }
  })

  it('rejects malformed messages with what is wrong', () => {
    expect(() => decodeMessage(Buffer.from('{'), 0, 1)).toThrow(/not valid JSON/)
    expect(() => decode([1])).toThrow(/unknown control message type/)
    expect(() => decode({type: 'hello', version: 1})).toThrow(/hello.transport must be a string/)
    expect(() => decode({type: 'welcome', version: 1, transport: 'tls', address: 'x', gateway: 'y', prefix: 24, mtu: 1, keepalive: 1})).toThrow(/params/)
    expect(() => decode({type: 'welcome', version: 1, transport: 'tls', address: 'x', gateway: 'y', prefix: 24, mtu: 1, keepalive: 1, params: {}, carrier: {kind: 'smoke'}})).toThrow(/carrier/)
    expect(() => decode({type: 'launch'})).toThrow(/"launch"/)
    expect(() => decode({type: 'transport', body: [1]})).toThrow(/transport.body must be an object/)
    expect(() => decode({type: 'transport', body: {deep: {x: 1}}})).toThrow(/transport.body.deep must be a string, number or boolean/)
  })
})

describe('address plan', () => {
  const base = {
    nodeAddress: ipv4ToNumber('10.8.0.1'),
    pool: {start: ipv4ToNumber('10.8.0.10'), end: ipv4ToNumber('10.8.0.12')},
  }

  it('gives static addresses first, then pool addresses in list order, skipping taken ones', () => {
    const plan = planAddresses({...base, clients: [{name: 'a'}, {name: 'b', address: '10.8.0.10'}, {name: 'c'}]})
    expect(Object.fromEntries(plan)).toEqual({b: '10.8.0.10', a: '10.8.0.11', c: '10.8.0.12'})
  })

  it('keeps static addresses wherever a client is listed; pool addresses depend only on the list order of the pool clients', () => {
    const pool = {start: ipv4ToNumber('10.8.0.10'), end: ipv4ToNumber('10.8.0.14')}
    const statics = {b: '10.8.0.11', d: '10.8.0.10'}
    const all = [{name: 'a'}, {name: 'b', address: statics.b}, {name: 'c'}, {name: 'd', address: statics.d}, {name: 'e'}]
    const permutations = <T,>(xs: T[]): T[][] => (xs.length <= 1 ? [xs] : xs.flatMap((x, i) => permutations([...xs.slice(0, i), ...xs.slice(i + 1)]).map((p) => [x, ...p])))
    const byPoolOrder = new Map<string, Record<string, string>>()
    for (const clients of permutations(all)) {
      const plan = Object.fromEntries(planAddresses({...base, pool, clients}))
      // Static addresses never move, even when listed after clients that need a pool address.
      expect(plan.b).toBe(statics.b)
      expect(plan.d).toBe(statics.d)
      // The pool clients get the free pool addresses in the order they are listed.
      const poolClients = clients.filter((c) => c.address === undefined).map((c) => c.name)
      expect(poolClients.map((n) => plan[n])).toEqual(['10.8.0.12', '10.8.0.13', '10.8.0.14'])
      // Where the static clients sit in the list changes nothing.
      const key = poolClients.join()
      byPoolOrder.set(key, byPoolOrder.get(key) ?? plan)
      expect(plan).toEqual(byPoolOrder.get(key))
    }
    expect(byPoolOrder.size).toBe(6)
  })

  it('says so when the pool is too small', () => {
    expect(() => planAddresses({...base, clients: [{name: 'a'}, {name: 'b'}, {name: 'c'}, {name: 'd'}]})).toThrow(/cannot hold every client/)
  })
})

describe('authorization', () => {
  const cert = (cn: string, fp = 'AA:BB') => ({subject: {CN: cn}, fingerprint256: fp}) as unknown as PeerCertificate

  it('admits a listed name and refuses others by name', () => {
    expect(authorize(cert('alice'), [{name: 'alice'}])).toEqual({ok: true, name: 'alice'})
    expect(authorize(cert('mallory'), [{name: 'alice'}])).toEqual({ok: false, reason: 'client "mallory" is not in this node\'s authorized clients'})
  })

  it('checks a pinned fingerprint', () => {
    expect(authorize(cert('alice', 'AA:BB'), [{name: 'alice', fingerprint: 'sha256:AA:BB'}]).ok).toBe(true)
    const r = authorize(cert('alice', 'AA:BC'), [{name: 'alice', fingerprint: 'sha256:AA:BB'}])
    expect(r.ok).toBe(false)
    expect(!r.ok && r.reason).toMatch(/not the pinned sha256:AA:BB/)
  })

  it('refuses a certificate without a common name', () => {
    expect(authorize({subject: {}} as unknown as PeerCertificate, [{name: 'alice'}]).ok).toBe(false)
  })
})

describe('reconnect backoff', () => {
  it('grows exponentially within jitter and stops at the cap', () => {
    const mid = () => 0.5
    expect(backoffDelay(0, 1, 30, mid)).toBe(1000)
    expect(backoffDelay(3, 1, 30, mid)).toBe(8000)
    expect(backoffDelay(10, 1, 30, mid)).toBe(30000)
    expect(backoffDelay(0, 1, 30, () => 0)).toBe(800)
    expect(backoffDelay(0, 1, 30, () => 1)).toBe(1200)
  })
})

describe('TLS error classes', () => {
  const err = (code: string) => Object.assign(new Error(code), {code})
  it('treats certificate problems as fatal and network trouble as retryable', () => {
    expect(isFatalTlsError(err('ERR_SSL_TLSV1_ALERT_UNKNOWN_CA'))).toBe(true)
    expect(isFatalTlsError(err('UNABLE_TO_VERIFY_LEAF_SIGNATURE'))).toBe(true)
    expect(isFatalTlsError(err('ERR_TLS_CERT_ALTNAME_INVALID'))).toBe(true)
    expect(isFatalTlsError(err('ECONNREFUSED'))).toBe(false)
    expect(isFatalTlsError(err('ECONNRESET'))).toBe(false)
  })
})
