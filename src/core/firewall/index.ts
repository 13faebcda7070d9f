export {chainName, chainsFor, instanceOfChain, INSTANCE_NAME, MAX_CHAIN_NAME, type ChainRole, type OwnedChain, type Table} from './names.js'
export {
  absentState,
  canonicalJump,
  chainRules,
  normalizeAdmitted,
  normalizeSpec,
  ownedInstances,
  parseOwnedState,
  renderAdmitted,
  renderApply,
  renderRemoval,
  renderRestoreOwned,
  type FirewallSpec,
  type JumpRef,
  type NormalizedSpec,
  type OwnedChainState,
  type OwnedState,
} from './rules.js'
export {normalizeIptablesSave, parseIptablesSave} from './save.js'
export {FirewallError, NodeFirewall, findFirewallInstances, iptablesSave, removeFirewall, restore, type FirewallOptions} from './iptables.js'
