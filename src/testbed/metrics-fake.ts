/**
 * A node's metrics over a real DataPath holding `peers` fake peers with counts on them, for the
 * unit tests and the scrape benchmark (bench/metrics.mjs): the registry, the snapshot and the
 * exposition are the agent's own; only the TUN device, the links and the sessions are stand-ins.
 */
import {DataPath} from '../core/device/datapath.js'
import {Peer, type PeerLink} from '../core/device/peer.js'
import type {TunDevice} from '../core/tun/device.js'
import type {Session} from '../core/transport/contract.js'
import {AgentEvents, AgentMetrics, type NodeMetricsSource} from '../core/metrics/index.js'

const tun = {name: 'fake0', start() {}, write: () => true, close() {}} as unknown as TunDevice
const link: PeerLink = {endpoint: '192.0.2.1:4754', send() {}, flush() {}, accepts: () => true}
const session = {headroom: 0, tailroom: 0, encap: () => false, decap: () => 'malformed'} as unknown as Session

export interface FakeNode {
  datapath: DataPath
  events: AgentEvents
  metrics: AgentMetrics
  source: NodeMetricsSource
  /** Adds peer `i` (name client-i, address 10.64.0.0 + i + 2) with counts derived from i. */
  addPeer(i: number): Peer
}

export function fakeNodeMetrics(peers: number, perPeer: boolean, transport = 'gre'): FakeNode {
  const datapath = new DataPath(tun, 'node')
  const events = new AgentEvents()
  const source: NodeMetricsSource = {
    role: 'node',
    transport,
    version: '0.0.0-test',
    events,
    datapath: () => datapath,
    extraDrops: () => ({'unknown-session': 3}),
    sessions: () => datapath.peers().length,
    roster: () => ({listed: datapath.peers().length, revoked: 0}),
    admission: () => ({applies: 4, failures: 1, secondsTotal: 0.02, lastSeconds: 0.004}),
    firewallApplySeconds: () => 0.05,
  }
  const addPeer = (i: number): Peer => {
    const address = (10 << 24) | (64 << 16) | (i + 2)
    const p = new Peer(`client-${i}`, address >>> 0, `10.64.${(i + 2) >> 8}.${(i + 2) & 255}`, session, link)
    p.stats.rxPackets = 10 * (i + 1)
    p.stats.rxBytes = 1000 * (i + 1)
    p.stats.txPackets = 20 * (i + 1)
    p.stats.txBytes = 2000 * (i + 1)
    if (i % 3 === 0) p.stats.drop('authentication', 1)
    datapath.addPeer(p)
    return p
  }
  for (let i = 0; i < peers; i++) addPeer(i)
  return {datapath, events, metrics: new AgentMetrics(source, perPeer), source, addPeer}
}
