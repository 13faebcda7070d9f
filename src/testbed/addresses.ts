/**
 * The address plan. Documentation ranges (RFC 5737) stand for public addresses and RFC 1918
 * for the home LAN, and they only ever exist inside the testbed's namespaces.
 */
import type {TestbedAddresses, TestbedInterfaces} from './types.js'

export const MAX_CLIENTS = 40

export function addressPlan(clients: number, publicClients: number): TestbedAddresses {
  return {
    lanSubnet: '192.168.77.0/24',
    natLan: '192.168.77.1',
    client: Array.from({length: clients}, (_, i) => `192.168.77.${11 + i}`),
    wanSubnet: '198.51.100.0/24',
    nodeWan: '198.51.100.1',
    natWan: '198.51.100.2',
    publicClient: Array.from({length: publicClients}, (_, i) => `198.51.100.${50 + i}`),
    egressSubnet: '203.0.113.0/24',
    nodeEgress: '203.0.113.1',
    target: '203.0.113.10',
    target2: '203.0.113.20',
  }
}

export const INTERFACES: Readonly<TestbedInterfaces> = Object.freeze({
  client: 'eth0',
  publicClient: 'eth0',
  natLan: 'lan',
  natWan: 'wan',
  nodeWan: 'wan',
  nodeEgress: 'egress',
  target: 'eth0',
})
