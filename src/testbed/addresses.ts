/**
 * The address plan. Documentation ranges (RFC 5737) stand for public addresses and RFC 1918
 * for the home LAN, and they only ever exist inside the testbed's namespaces.
 *
 *   192.168.77.0/24  home LAN: .1 the NAT, .11.. the clients (at most 40: .11-.50)
 *   198.51.100.0/24  the wan switch:
 *                      .1        node 1 (addr.nodeWan)
 *                      .2        the NAT's public side
 *                      .3-.9     nodes 2..8 (node k at .k+1), so the NAT keeps .2 whatever the count
 *                      .50-.89   public clients (at most 40)
 *                      .200      the `ctl` namespace (fleet services such as etcd), when asked for
 *   203.0.113.0/24   egress: the target's bridge joins one link per node
 *                      .1-.8     node k's egress address is .k: what the target sees after its SNAT
 *                      .10, .20  the target
 */
import type {TestbedAddresses, TestbedInterfaces} from './types.js'

export const MAX_CLIENTS = 40
export const MAX_NODES = 8

const nodeWan = (k: number) => `198.51.100.${k === 1 ? 1 : k + 1}`

export function addressPlan(clients: number, publicClients: number, nodes = 1, ctl = false): TestbedAddresses {
  const nodesWan = Array.from({length: nodes}, (_, i) => nodeWan(i + 1))
  const nodesEgress = Array.from({length: nodes}, (_, i) => `203.0.113.${i + 1}`)
  return {
    lanSubnet: '192.168.77.0/24',
    natLan: '192.168.77.1',
    client: Array.from({length: clients}, (_, i) => `192.168.77.${11 + i}`),
    wanSubnet: '198.51.100.0/24',
    nodeWan: nodesWan[0],
    nodesWan,
    natWan: '198.51.100.2',
    publicClient: Array.from({length: publicClients}, (_, i) => `198.51.100.${50 + i}`),
    ...(ctl ? {ctl: '198.51.100.200'} : {}),
    egressSubnet: '203.0.113.0/24',
    nodeEgress: nodesEgress[0],
    nodesEgress,
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
  ctl: 'eth0',
})
