import {describe, expect, it} from 'vitest'
import {decodeMessage, encodeMessage} from '../../src/core/control/messages.js'
import {backoffDelay} from '../../src/core/client/backoff.js'
import {isFatalTlsError} from '../../src/core/client/tls-errors.js'

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
