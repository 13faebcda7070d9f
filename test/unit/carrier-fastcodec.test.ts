/**
 * CarrierSpec.fastCodec is what a node decides its worker threads by, before any session
 * exists: it must name the FastCodec the transport's sessions then declare (or none).
 */
import {randomBytes} from 'node:crypto'
import {describe, expect, it} from 'vitest'
import {CONTRACT_VERSION, type CoreApi, type SessionContext, type Transport, type TransportOptions} from '../../src/core/transport/contract.js'
import {greCodec} from '../../src/core/codecs/gre/index.js'
import {createGreTransport} from '../../plugins/gre/src/index.js'
import {ipipTransport} from '../../plugins/ipip/src/index.js'
import {createIpsecOverGreTransport} from '../../plugins/ipsec-over-gre/src/index.js'

const core: CoreApi = {contractVersion: CONTRACT_VERSION, gre: greCodec}

function nodeContext(options: TransportOptions): SessionContext {
  return {
    role: 'node',
    peerName: 'alice',
    tunnelAddress: '10.8.0.2',
    nodeAddress: '10.8.0.1',
    options,
    mtu: 1400,
    exportKey: (_label, length) => randomBytes(length),
    allocateId: () => 0x1234,
    bindId: () => {},
    unbindId: () => {},
    sendControl: () => {},
    fastPathChanged: () => {},
  }
}

function declaredAndOpened(t: Transport, options: TransportOptions) {
  const session = t.openNodeSession(nodeContext(options))
  try {
    return {declared: t.carrier(options).fastCodec, opened: session.fastPath?.kind}
  } finally {
    session.close()
  }
}

describe('CarrierSpec.fastCodec', () => {
  it('gre declares what its sessions carry: a plain keyed header, or none with checksums or sequence numbers', () => {
    const gre = createGreTransport(core)
    for (const options of [{}, {carrier: 'ip'}, {checksum: true}, {sequence: true}]) {
      const {declared, opened} = declaredAndOpened(gre, options)
      expect(declared, JSON.stringify(options)).toBe(opened)
    }
    expect(gre.carrier({}).fastCodec).toBe('gre')
    expect(gre.carrier({checksum: true}).fastCodec).toBeUndefined()
  })

  it('ipip declares identity, as its sessions do', () => {
    expect(declaredAndOpened(ipipTransport, {})).toEqual({declared: 'identity', opened: 'identity'})
  })

  it('ipsec-over-gre declares ESP, which keeps its nodes on one thread', () => {
    expect(createIpsecOverGreTransport(core).carrier({}).fastCodec).toBe('esp-gcm-in-gre')
  })
})
