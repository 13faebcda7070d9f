/**
 * What a client accepts of the tunnel address in a node's welcome (welcome-address.ts): only a
 * subnet of /8 to /30 that holds both ends, leaves the node's own address outside, and takes
 * nothing from a route this host has through another interface.
 */
import {describe, expect, it} from 'vitest'
import {checkWelcomeAddress, hostRoutes, type HostRoute} from '../../src/core/client/welcome-address.js'
import type {Runner} from '../../src/core/sys/run.js'

/** A client host: a LAN, a docker bridge, a default route, the tunnel's own routes. */
const ROUTES: HostRoute[] = [
  {dst: 'default', gateway: '192.168.1.1', dev: 'eth0'},
  {dst: '192.168.1.0/24', dev: 'eth0'},
  {dst: '172.17.0.0/16', dev: 'docker0'},
  {dst: '203.0.113.7', dev: 'agent0'},
  {dst: '10.8.0.1', dev: 'agent0'},
]
const ctx = {nodeIp: '198.51.100.1', tunInterface: 'agent0', routes: ROUTES}
const welcome = (over: Partial<{address: string; prefix: number; gateway: string}> = {}) => ({address: '10.8.0.2', prefix: 24, gateway: '10.8.0.1', ...over})

describe('checkWelcomeAddress', () => {
  it("accepts what a correctly configured node sends, from /8 to /30, over the tunnel's own routes", () => {
    expect(() => checkWelcomeAddress(welcome(), ctx)).not.toThrow()
    expect(() => checkWelcomeAddress(welcome({prefix: 8}), ctx)).not.toThrow()
    expect(() => checkWelcomeAddress(welcome({prefix: 30}), ctx)).not.toThrow()
    expect(() => checkWelcomeAddress(welcome({address: '10.8.200.9', prefix: 16}), ctx)).not.toThrow()
  })

  it('refuses a prefix shorter than /8 or longer than /30, naming it', () => {
    for (const prefix of [0, 1, 7]) {
      expect(() => checkWelcomeAddress(welcome({prefix}), ctx)).toThrow(`refusing the node's tunnel address 10.8.0.2/${prefix}: prefix /${prefix} is out of range (a node's tunnel subnet is /8 to /30)`)
    }
    expect(() => checkWelcomeAddress(welcome({prefix: 31}), ctx)).toThrow(/prefix \/31 is out of range/)
    expect(() => checkWelcomeAddress(welcome({prefix: 24.5}), ctx)).toThrow(/prefix \/24\.5 is out of range/)
  })

  it('refuses an address or gateway that is not a host of the subnet, or the same for both', () => {
    expect(() => checkWelcomeAddress(welcome({address: '10.8.0.255'}), ctx)).toThrow('10.8.0.255 is not a host of 10.8.0.0/24')
    expect(() => checkWelcomeAddress(welcome({address: '10.8.0.0'}), ctx)).toThrow('10.8.0.0 is not a host of 10.8.0.0/24')
    expect(() => checkWelcomeAddress(welcome({gateway: '10.9.0.1'}), ctx)).toThrow('the gateway 10.9.0.1 is not a host of 10.8.0.0/24')
    expect(() => checkWelcomeAddress(welcome({gateway: '10.8.0.2'}), ctx)).toThrow("the gateway 10.8.0.2 is the client's own address")
    expect(() => checkWelcomeAddress(welcome({address: 'ten'}), ctx)).toThrow('"ten" is not an IPv4 address')
  })

  it("refuses a subnet that contains the node's own address", () => {
    const w = {address: '198.51.100.9', prefix: 24, gateway: '198.51.100.10'}
    expect(() => checkWelcomeAddress(w, ctx)).toThrow("198.51.100.0/24 contains the node's own address 198.51.100.1: the tunnel would carry itself")
  })

  it("refuses a subnet that overlaps, contains or lies in a route through another interface", () => {
    // Equal to the LAN, inside docker's /16, and containing the LAN.
    expect(() => checkWelcomeAddress({address: '192.168.1.50', prefix: 24, gateway: '192.168.1.51'}, ctx)).toThrow(
      "refusing the node's tunnel address 192.168.1.50/24: 192.168.1.0/24 overlaps this host's route 192.168.1.0/24 dev eth0",
    )
    expect(() => checkWelcomeAddress({address: '172.17.5.2', prefix: 24, gateway: '172.17.5.1'}, ctx)).toThrow("overlaps this host's route 172.17.0.0/16 dev docker0")
    expect(() => checkWelcomeAddress({address: '192.0.0.2', prefix: 8, gateway: '192.0.0.1'}, ctx)).toThrow("192.0.0.0/8 overlaps this host's route 192.168.1.0/24 dev eth0")
    const blackhole = [...ROUTES, {dst: '10.0.0.0/8', type: 'blackhole'}]
    expect(() => checkWelcomeAddress(welcome(), {...ctx, routes: blackhole})).toThrow("overlaps this host's route 10.0.0.0/8 blackhole")
  })

  it('ignores default routes and the /1 pair of a full-tunnel VPN, which every subnet lies in', () => {
    const vpn = [...ROUTES, {dst: '0.0.0.0/1', dev: 'wg0'}, {dst: '128.0.0.0/1', dev: 'wg0'}, {dst: '10.0.0.0/7', dev: 'wg0'}]
    expect(() => checkWelcomeAddress(welcome(), {...ctx, routes: vpn})).not.toThrow()
  })
})

describe('hostRoutes', () => {
  it('reads the main table as JSON, IPv4 only', async () => {
    const calls: string[] = []
    const runner: Runner = async (cmd, args) => {
      calls.push([cmd, ...args].join(' '))
      return {code: 0, stderr: '', stdout: JSON.stringify([{dst: 'default', gateway: '192.168.1.1', dev: 'eth0'}])}
    }
    expect(await hostRoutes(runner)).toEqual([{dst: 'default', gateway: '192.168.1.1', dev: 'eth0'}])
    expect(calls).toEqual(['ip -j -4 route show table main'])
  })
})
