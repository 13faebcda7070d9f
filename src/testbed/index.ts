/**
 * Network-namespace testbed for integration tests, the demo and the benchmark: clients behind a
 * home NAT, a proxy node and a target, all in namespaces of their own (see topology.ts).
 */
export {createTestbed, SCRATCH_ROOT} from './topology.js'
export {cleanupStale, type StaleCleanup} from './stale.js'
export {startEchoServer, probeEcho, type EchoServer, type ProbeResult} from './echo.js'
export {waitForOutput, stopProcess} from './process.js'
export {addressPlan, INTERFACES, MAX_NODES} from './addresses.js'
export {portsForLane, useLocalPortsForLane} from './ports.js'
export {CommandError, type ExecOptions, type ExecResult} from './run.js'
export type {Testbed, TestbedAddresses, TestbedInterfaces, TestbedNames, TestbedOptions} from './types.js'
export {AgentProcess, admittedAddresses, agentCli, agentEnv, agentTraces, BIN, createFleet, NODE_PORT, prepareFleet, ROOT, type ClientConfigOptions, type Fleet, type FleetOptions} from './fleet.js'
export {runScript, spawnScript} from './script.js'
export {startDelayRelay, type DelayRelay, type RelayPath} from './relay.js'
export {MAX_LAG_MS, startEgressLag, type EgressLag} from './lag.js'
export {
  ETCD_CLIENT_PORT,
  ETCD_SCRIPT_PRELUDE,
  etcdClientArg,
  startEtcd,
  type EtcdCluster,
  type EtcdCredentials,
  type EtcdOptions,
} from './etcd.js'
export {fakeNodeMetrics, type FakeNode} from './metrics-fake.js'
