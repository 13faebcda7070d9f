/**
 * Route and interface configuration against a scripted `ip`: which commands run, and the
 * decisions (steal or refuse, pin the endpoint or not). The real kernel side is in
 * test/integration/firewall.test.ts.
 */
import {describe, expect, it} from 'vitest'
import {configureInterface} from '../../src/core/routes/interface.js'
import {addRoutes, keepEndpointOutside, parseRoutePrefix, removeRoutes, ROUTE_PROTO} from '../../src/core/routes/routes.js'
import {CommandError, type Runner} from '../../src/core/sys/run.js'

type Answer = {stdout?: string; stderr?: string; code?: number}

/** Answers `ip` by the joined argument string; records every call. */
function ipScript(answers: Record<string, Answer | (() => Answer)> = {}) {
  const calls: string[] = []
  const runner: Runner = async (cmd, args, opts) => {
    const line = [cmd, ...args].join(' ')
    calls.push(line)
    const a = answers[line]
    const r = typeof a === 'function' ? a() : (a ?? {})
    const res = {stdout: r.stdout ?? (line.includes(' -j ') ? '[]' : ''), stderr: r.stderr ?? '', code: r.code ?? 0}
    if (res.code !== 0 && !opts?.allowFail) throw new CommandError(`${line} failed: ${res.stderr}`, cmd, args, res.code, res.stdout, res.stderr)
    return res
  }
  return {calls, runner}
}

const P = String(ROUTE_PROTO)

describe('parseRoutePrefix', () => {
  it('accepts hosts and network prefixes', () => {
    expect(parseRoutePrefix('121.201.64.81')).toEqual(parseRoutePrefix('121.201.64.81/32'))
    expect(parseRoutePrefix('0.0.0.0/0').prefix).toBe(0)
  })

  it('rejects host bits with a hint, and garbage', () => {
    expect(() => parseRoutePrefix('121.201.64.81/24')).toThrow(/host bits set; did you mean 121\.201\.64\.0\/24\?/)
    for (const bad of ['', '1.2.3', '1.2.3.4/33', 'dev eth0', '-1.2.3.4']) expect(() => parseRoutePrefix(bad), bad).toThrow(/invalid route destination/)
  })
})

describe('configureInterface', () => {
  it('sets a subnet address, turns IPv6 off on the link, sets MTU and up', async () => {
    const {calls, runner} = ipScript()
    await configureInterface('tun0', {address: '10.8.0.1', prefix: 24, mtu: 1400}, {runner})
    expect(calls).toEqual([
      'ip address replace 10.8.0.1/24 dev tun0',
      'sysctl -q -w net.ipv6.conf.tun0.disable_ipv6=1',
      'ip link set dev tun0 mtu 1400 up',
    ])
  })

  it("sets a client's address without the subnet's route", async () => {
    const {calls, runner} = ipScript()
    await configureInterface('tun0', {address: '10.8.0.2', prefix: 24, noPrefixRoute: true, mtu: 1400}, {runner})
    expect(calls[0]).toBe('ip address replace 10.8.0.2/24 noprefixroute dev tun0')
  })

  it('sets a point-to-point address', async () => {
    const {calls, runner} = ipScript()
    await configureInterface('tun0', {address: '10.8.0.2', peer: '10.8.0.1', mtu: 1400}, {runner})
    expect(calls[0]).toBe('ip address replace 10.8.0.2 peer 10.8.0.1 dev tun0')
  })

  it('validates before running anything', async () => {
    const {calls, runner} = ipScript()
    await expect(configureInterface('-tun', {address: '10.8.0.1', prefix: 24, mtu: 1400}, {runner})).rejects.toThrow(/invalid interface name/)
    await expect(configureInterface('tun0', {address: '10.8.0.256', prefix: 24, mtu: 1400}, {runner})).rejects.toThrow(/invalid address/)
    await expect(configureInterface('tun0', {address: '10.8.0.1', prefix: 33, mtu: 1400}, {runner})).rejects.toThrow(/invalid prefix/)
    await expect(configureInterface('tun0', {address: '10.8.0.1', prefix: 24, mtu: 20}, {runner})).rejects.toThrow(/invalid MTU/)
    expect(calls).toEqual([])
  })
})

describe('addRoutes', () => {
  it('replaces each prefix into the device with our protocol, once per prefix', async () => {
    const {calls, runner} = ipScript()
    const added = await addRoutes('tun0', ['121.201.64.81', '121.201.64.81/32', '10.0.0.0/8'], {runner})
    expect(added).toEqual([
      {dst: '121.201.64.81/32', dev: 'tun0'},
      {dst: '10.0.0.0/8', dev: 'tun0'},
    ])
    expect(calls.filter((c) => c.includes('replace'))).toEqual([
      `ip route replace 121.201.64.81/32 dev tun0 proto ${P}`,
      `ip route replace 10.0.0.0/8 dev tun0 proto ${P}`,
    ])
  })

  it('refuses to take over a prefix routed through another device, before changing anything', async () => {
    const {calls, runner} = ipScript({
      'ip -N -j route show exact 10.0.0.0/8': {stdout: '[{"dst":"10.0.0.0/8","gateway":"192.168.1.1","dev":"eth0","protocol":"4","metric":100,"flags":[]}]'},
    })
    await expect(addRoutes('tun0', ['121.201.64.81/32', '10.0.0.0/8'], {runner})).rejects.toThrow(
      'refusing to take over existing routes for tun0: 10.0.0.0/8 is already routed via 192.168.1.1 dev eth0 proto 4 metric 100',
    )
    expect(calls.some((c) => c.includes('replace'))).toBe(false)
  })

  it('suggests the two halves for a default route', async () => {
    const {runner} = ipScript({'ip -N -j route show exact 0.0.0.0/0': {stdout: '[{"dst":"default","gateway":"192.168.1.1","dev":"eth0","flags":[]}]'}})
    await expect(addRoutes('tun0', ['0.0.0.0/0'], {runner})).rejects.toThrow(/use 0\.0\.0\.0\/1 and 128\.0\.0\.0\/1/)
  })

  it('treats an unreachable or blackhole route as foreign', async () => {
    const {runner} = ipScript({'ip -N -j route show exact 203.0.113.0/24': {stdout: '[{"type":"unreachable","dst":"203.0.113.0/24","flags":[]}]'}})
    await expect(addRoutes('tun0', ['203.0.113.0/24'], {runner})).rejects.toThrow(/already routed unreachable/)
  })

  it('takes over its own leftover on the same device and leaves the connected route alone', async () => {
    const {calls, runner} = ipScript({
      'ip -N -j route show exact 121.201.64.81/32': {stdout: `[{"dst":"121.201.64.81","dev":"tun0","protocol":"${P}","scope":"253","flags":[]}]`},
      'ip -N -j route show exact 10.8.0.0/24': {stdout: '[{"dst":"10.8.0.0/24","dev":"tun0","protocol":"2","scope":"253","prefsrc":"10.8.0.2","flags":[]}]'},
    })
    expect(await addRoutes('tun0', ['121.201.64.81/32', '10.8.0.0/24'], {runner})).toEqual([{dst: '121.201.64.81/32', dev: 'tun0'}])
    expect(calls).toContain(`ip route replace 121.201.64.81/32 dev tun0 proto ${P}`)
  })

  it('removes what it added when a later route fails', async () => {
    const {calls, runner} = ipScript({[`ip route replace 10.0.0.0/8 dev tun0 proto ${P}`]: {code: 2, stderr: 'RTNETLINK answers: Invalid argument\n'}})
    await expect(addRoutes('tun0', ['121.201.64.81/32', '10.0.0.0/8'], {runner})).rejects.toThrow(/Invalid argument/)
    expect(calls.at(-1)).toBe(`ip route del 121.201.64.81/32 dev tun0 proto ${P}`)
  })
})

describe('keepEndpointOutside', () => {
  const getViaGateway = {stdout: '[{"dst":"198.51.100.7","gateway":"192.0.2.1","dev":"eth0","prefsrc":"192.0.2.10","flags":[],"uid":0,"cache":[]}]'}

  it('does nothing when no tunnel prefix covers the node', async () => {
    const {calls, runner} = ipScript()
    expect(await keepEndpointOutside('198.51.100.7', ['121.201.64.81/32', '10.0.0.0/8'], {runner})).toBeNull()
    expect(calls).toEqual([])
  })

  it('pins the node to its current gateway and device when a prefix covers it', async () => {
    const {calls, runner} = ipScript({'ip -N -j route get 198.51.100.7': getViaGateway})
    const r = await keepEndpointOutside('198.51.100.7', ['198.51.100.0/24'], {runner})
    expect(r).toEqual({dst: '198.51.100.7/32', dev: 'eth0', via: '192.0.2.1'})
    expect(calls.at(-1)).toBe(`ip route add 198.51.100.7/32 via 192.0.2.1 dev eth0 proto ${P}`)
  })

  it('pins an on-link node without a gateway', async () => {
    const {calls, runner} = ipScript({'ip -N -j route get 192.0.2.5': {stdout: '[{"dst":"192.0.2.5","dev":"eth0","prefsrc":"192.0.2.10","flags":[]}]'}})
    expect(await keepEndpointOutside('192.0.2.5', ['0.0.0.0/1', '128.0.0.0/1'], {runner})).toEqual({dst: '192.0.2.5/32', dev: 'eth0'})
    expect(calls.at(-1)).toBe(`ip route add 192.0.2.5/32 dev eth0 proto ${P}`)
  })

  it("respects an operator's host route to the node", async () => {
    const {calls, runner} = ipScript({
      'ip -N -j route show exact 198.51.100.7/32': {stdout: '[{"dst":"198.51.100.7","gateway":"192.0.2.254","dev":"eth0","protocol":"4","flags":[]}]'},
    })
    expect(await keepEndpointOutside('198.51.100.7', ['198.51.100.0/24'], {runner})).toBeNull()
    expect(calls.some((c) => c.includes(' add ') || c.includes(' del '))).toBe(false)
  })

  it('replaces its own stale pin from a crashed run', async () => {
    const {calls, runner} = ipScript({
      'ip -N -j route show exact 198.51.100.7/32': {stdout: `[{"dst":"198.51.100.7","gateway":"10.1.1.1","dev":"wlan0","protocol":"${P}","flags":[]}]`},
      'ip -N -j route get 198.51.100.7': getViaGateway,
    })
    expect(await keepEndpointOutside('198.51.100.7', ['198.51.100.0/24'], {runner})).toEqual({dst: '198.51.100.7/32', dev: 'eth0', via: '192.0.2.1'})
    expect(calls).toContain(`ip route del 198.51.100.7/32 via 10.1.1.1 dev wlan0 proto ${P}`)
  })

  it('puts its old pin back when the current path cannot be found', async () => {
    const {calls, runner} = ipScript({
      'ip -N -j route show exact 198.51.100.7/32': {stdout: `[{"dst":"198.51.100.7","gateway":"192.0.2.1","dev":"eth0","protocol":"${P}","flags":[]}]`},
      'ip -N -j route get 198.51.100.7': {stdout: '[{"dst":"198.51.100.7","dev":"tun0","flags":[]}]'},
    })
    await expect(keepEndpointOutside('198.51.100.7', ['198.51.100.0/24'], {runner, tunInterface: 'tun0'})).rejects.toThrow(/must run before/)
    expect(calls.slice(-1)).toEqual([`ip route add 198.51.100.7/32 via 192.0.2.1 dev eth0 proto ${P}`])
  })

  it('refuses to tunnel the node address itself, or to pin into the tunnel', async () => {
    const {runner} = ipScript({'ip -N -j route get 198.51.100.7': {stdout: '[{"dst":"198.51.100.7","dev":"tun0","flags":[]}]'}})
    await expect(keepEndpointOutside('198.51.100.7', ['198.51.100.7/32'], {runner})).rejects.toThrow(/cannot route the node's own address/)
    await expect(keepEndpointOutside('198.51.100.7', ['198.51.100.0/24'], {runner, tunInterface: 'tun0'})).rejects.toThrow(/must run before the tunnel routes/)
  })

  it('explains an unroutable or local node address', async () => {
    const unreachable = ipScript({'ip -N -j route get 198.51.100.7': {code: 2, stderr: 'RTNETLINK answers: Network is unreachable\n'}})
    await expect(keepEndpointOutside('198.51.100.7', ['198.51.100.0/24'], {runner: unreachable.runner})).rejects.toThrow(
      /cannot find the current route to the node 198\.51\.100\.7: .*Network is unreachable/,
    )
    const local = ipScript({'ip -N -j route get 198.51.100.7': {stdout: '[{"type":"local","dst":"198.51.100.7","dev":"lo","flags":[]}]'}})
    await expect(keepEndpointOutside('198.51.100.7', ['198.51.100.0/24'], {runner: local.runner})).rejects.toThrow(/is local on this host/)
  })
})

describe('removeRoutes', () => {
  it('deletes exactly what was added, newest first, with our protocol', async () => {
    const {calls, runner} = ipScript()
    await removeRoutes([{dst: '198.51.100.7/32', dev: 'eth0', via: '192.0.2.1'}, {dst: '10.0.0.0/8', dev: 'tun0'}], {runner})
    expect(calls).toEqual([`ip route del 10.0.0.0/8 dev tun0 proto ${P}`, `ip route del 198.51.100.7/32 via 192.0.2.1 dev eth0 proto ${P}`])
  })

  it('tolerates routes and devices that are already gone, and reports other failures after trying all', async () => {
    const {calls, runner} = ipScript({
      [`ip route del 10.0.0.0/8 dev tun0 proto ${P}`]: {code: 1, stderr: 'Cannot find device "tun0"\n'},
      [`ip route del 10.1.0.0/16 dev tun0 proto ${P}`]: {code: 2, stderr: 'RTNETLINK answers: No such process\n'},
      [`ip route del 10.2.0.0/16 dev tun0 proto ${P}`]: {code: 2, stderr: 'RTNETLINK answers: Operation not permitted\n'},
    })
    const routes = ['10.0.0.0/8', '10.1.0.0/16', '10.2.0.0/16', '10.3.0.0/16'].map((dst) => ({dst, dev: 'tun0'}))
    await expect(removeRoutes(routes.slice(0, 2), {runner})).resolves.toBeUndefined()
    await expect(removeRoutes(routes, {runner})).rejects.toThrow('could not remove routes: 10.2.0.0/16 dev tun0: RTNETLINK answers: Operation not permitted')
    expect(calls.at(-1)).toBe(`ip route del 10.0.0.0/8 dev tun0 proto ${P}`)
  })
})
