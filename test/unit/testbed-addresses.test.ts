// The testbed's address plan stays collision-free at its largest (40 + 40 clients, 8 nodes, ctl).
import {describe, expect, it} from 'vitest'
import {addressPlan, MAX_CLIENTS, MAX_NODES} from '../../src/testbed/addresses.js'

describe('testbed address plan', () => {
  it('gives every node, client, the NAT, ctl and the target distinct addresses', () => {
    const a = addressPlan(MAX_CLIENTS, MAX_CLIENTS, MAX_NODES, true)
    const all = [a.natLan, ...a.client, a.natWan, ...a.nodesWan, ...a.publicClient, a.ctl!, ...a.nodesEgress, a.target, a.target2]
    expect(new Set(all).size).toBe(all.length)
    expect(a.nodesWan[0]).toBe(a.nodeWan)
    expect(a.nodesEgress[0]).toBe(a.nodeEgress)
    expect(a.nodesWan).toHaveLength(MAX_NODES)
    for (const x of [...a.nodesWan, ...a.publicClient, a.ctl!, a.natWan]) expect(x).toMatch(/^198\.51\.100\.\d+$/)
    for (const x of [...a.nodesEgress, a.target, a.target2]) expect(x).toMatch(/^203\.0\.113\.\d+$/)
  })

  it('keeps the one-node plan of old', () => {
    const a = addressPlan(2, 0)
    expect(a).toMatchObject({nodeWan: '198.51.100.1', nodesWan: ['198.51.100.1'], nodeEgress: '203.0.113.1', nodesEgress: ['203.0.113.1']})
    expect(a.ctl).toBeUndefined()
  })
})
