// No tunnel: the node routes and masquerades plainly. The ceiling of the testbed.

/** @type {import('./types.mjs').BenchPath} */
export default {
  name: 'direct',
  carrier: 'none',
  async setup(tb) {
    await tb.sysctl(tb.names.node, {'net.ipv4.ip_forward': 1})
    await tb.exec(tb.names.node, 'iptables', ['-w', '-t', 'nat', '-A', 'POSTROUTING', '-o', tb.ifaces.nodeEgress, '-j', 'MASQUERADE'], {check: true})
  },
  async teardown() {
    // Nothing to stop; the testbed goes away with its rules.
  },
}
