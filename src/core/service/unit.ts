/**
 * The systemd unit `agent@.service`: one agent per config file, `systemctl start agent@node1`
 * running `/etc/agent/node1.yaml`. This is the one place its text is written:
 * packaging/systemd/agent@.service is this function's output for /usr/bin/agent (scripts/build.mjs
 * rewrites it, a unit test checks it), and `agent service install` writes it for the agent it
 * runs as. Every hardening line is explained in docs/service.md.
 */

export const UNIT_NAME = 'agent@.service'
/** Where instance NAME's config file is: CONFIG_DIR/NAME.yaml. */
export const CONFIG_DIR = '/etc/agent'
export const RUN_DIR = '/run/agent'
/** The node registry of ip_forward (state/ip-forward.ts), shared by every instance. */
export const IP_FORWARD_DIR = '/run/agent-ip-forward'
/** The oclif data dir, where `agent plugins install` puts the transports. */
export const DATA_DIR = '/var/lib/agent'
/** The agent the shipped unit runs: nodesource's Node.js puts `npm install -g`'s bins there. */
export const PACKAGED_AGENT = '/usr/bin/agent'

/** The lock legacy iptables takes with -w; the unit creates it before the start (renderUnit). */
export const XTABLES_LOCK = '/run/xtables.lock'
/** coreutils' touch: Debian 12 and later have a merged /usr, where /usr/bin/touch always exists. */
export const XTABLES_TOUCH = '/usr/bin/touch'

/** The capabilities the agent needs, and no more (docs/service.md says why each). */
export const CAPABILITIES = ['CAP_NET_ADMIN', 'CAP_NET_RAW', 'CAP_NET_BIND_SERVICE'] as const
/** The socket families it opens: status socket and notify, IPv4/IPv6, netlink (ip, nft, ipset, conntrack). */
export const ADDRESS_FAMILIES = ['AF_UNIX', 'AF_INET', 'AF_INET6', 'AF_NETLINK'] as const

export interface UnitOptions {
  /** Absolute path of the `agent` executable in ExecStart and ExecReload. */
  agent: string
}

/**
 * Characters a path may have in ExecStart without quoting: no spaces, quotes, backslashes or
 * `%` (a systemd specifier) or `$` (a variable), so what is written is what runs.
 */
const SAFE_PATH = /^\/[A-Za-z0-9._+@/-]*$/

/** What ProtectHome=yes hides from the agent: nothing it runs or reads may live there. */
export const PROTECTED_HOME = ['/home', '/root', '/run/user'] as const

/** The ProtectHome= directory `path` (absolute) is in, or undefined. */
export function underProtectedHome(path: string): string | undefined {
  return PROTECTED_HOME.find((d) => path === d || path.startsWith(`${d}/`))
}

/** Why `agent` cannot go into the unit, or undefined when it can. */
export function unsafeAgentPath(agent: string): string | undefined {
  if (!agent.startsWith('/')) return `the agent path must be absolute (got ${JSON.stringify(agent)})`
  if (!SAFE_PATH.test(agent)) return `the agent path ${JSON.stringify(agent)} has characters a unit's ExecStart would need quoted (only letters, digits and ._+@/- are written as they are)`
  if (agent.split('/').some((p) => p === '..' || p === '.')) return `the agent path ${JSON.stringify(agent)} must not contain . or .. components`
  const home = underProtectedHome(agent)
  if (home !== undefined) {
    return `the agent path ${JSON.stringify(agent)} is under ${home}, which the unit hides (ProtectHome=yes): it would fail to start with 203/EXEC; install the agent elsewhere (npm install -g puts it in /usr/bin) and give that path with --agent`
  }
  return undefined
}

export function renderUnit(opts: UnitOptions = {agent: PACKAGED_AGENT}): string {
  const why = unsafeAgentPath(opts.agent)
  if (why !== undefined) throw new Error(why)
  const config = `${CONFIG_DIR}/%i.yaml`
  const runDir = `--run-dir ${RUN_DIR}`
  return `# ${UNIT_NAME}: one agent (node or client) per config file; agent@NAME runs ${CONFIG_DIR}/NAME.yaml.
# Written by \`agent service install\` (src/core/service/unit.ts); each line is explained in docs/service.md.
[Unit]
Description=agent proxy node or client %i (${config})
Wants=network-online.target
After=network-online.target

[Service]
# Started when the agent serves: it sends READY=1 once its control port, TUN device and firewall
# are up, RELOADING=1 and READY=1 around a reload, STOPPING=1 when it stops.
Type=notify
NotifyAccess=main
# The lock of legacy iptables (ReadWritePaths= below): /run is a tmpfs, so after a reboot it is
# absent until someone creates it, and ProtectSystem=strict keeps the agent's iptables -w from
# creating it. '+': run outside the sandbox, as root with every capability, where /run is writable.
ExecStartPre=+${XTABLES_TOUCH} ${XTABLES_LOCK}
ExecStart=${opts.agent} up --config ${config} ${runDir}
ExecReload=${opts.agent} reload --config ${config} ${runDir}
# SIGTERM to the agent alone: it removes its TUN device, routes and firewall rules with ip and
# iptables, which must not be killed under it; whatever is left after the timeout gets SIGKILL.
KillMode=mixed
TimeoutStartSec=90s
TimeoutStopSec=30s
Restart=on-failure
RestartSec=2s
Environment=AGENT_DATA_DIR=${DATA_DIR}
Environment=AGENT_IP_FORWARD_DIR=${IP_FORWARD_DIR}
# /run/agent and /run/agent-ip-forward are shared by every instance: kept when one stops.
RuntimeDirectory=agent agent-ip-forward
RuntimeDirectoryMode=0700
RuntimeDirectoryPreserve=yes
StateDirectory=agent
StateDirectoryMode=0750
UMask=0077

# Hardening. Root, but with only these capabilities: TUN, routes, firewall, ipset, conntrack
# (NET_ADMIN); raw IP carriers (NET_RAW); a control port below 1024 (NET_BIND_SERVICE).
CapabilityBoundingSet=${CAPABILITIES.join(' ')}
NoNewPrivileges=yes
ProtectSystem=strict
# Written besides the runtime and state directories: the lock of legacy iptables, which
# ExecStartPre= made. '-' kept: each command's sandbox is set up anew, and ExecReload= (which
# runs no iptables) should not fail with 226/NAMESPACE if the lock was removed since the start.
ReadWritePaths=-${XTABLES_LOCK}
ProtectHome=yes
PrivateTmp=yes
DevicePolicy=closed
DeviceAllow=/dev/net/tun rw
# Not ProtectKernelTunables=: the agent writes net.ipv4.ip_forward and per-interface settings
# under /proc/sys/net. Not PrivateDevices=: it needs /dev/net/tun. Not MemoryDenyWriteExecute=:
# Node.js compiles JavaScript to machine code at run time.
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=${ADDRESS_FAMILIES.join(' ')}
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
`
}
