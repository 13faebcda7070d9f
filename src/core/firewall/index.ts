export {chainName, chainsFor, instanceOfChain, instanceOfSet, INSTANCE_NAME, MAX_CHAIN_NAME, MAX_SET_NAME, setName, type ChainRole, type OwnedChain, type Table} from './names.js'
export {
  absentState,
  canonicalJump,
  chainRules,
  normalizeAdmitted,
  normalizeSpec,
  ownedInstances,
  parseOwnedState,
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
export {
  createSetArgs,
  diffAdmitted,
  incompatibility,
  parseSetSave,
  renderSetChanges,
  SET_MAXELEM,
  type SavedSet,
  type SetDiff,
} from './admission-set.js'
export {
  deleteConntrack,
  FirewallError,
  FlowDeletionError,
  NodeFirewall,
  findFirewallInstances,
  iptablesSave,
  removeFirewall,
  restore,
  type AdmissionChange,
  type FirewallOptions,
} from './iptables.js'
