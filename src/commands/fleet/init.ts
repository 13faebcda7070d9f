import {Command} from '@oclif/core'
import {fleetFlags, withFleet} from '../../cli/fleet.js'

export default class FleetInit extends Command {
  static override summary = "Set up a fleet in etcd: its operator and node roles, and the layout version key."
  static override description =
    'Run as etcd root (a certificate whose CN is root) once etcd has auth enabled. Creates the role ' +
    'agent-operator-<fleet> (readwrite on <prefix>/) and agent-node-<fleet> (read on the version, clients, revocations ' +
    'and registry) and writes <prefix>/version. Running it again changes nothing.'
  static override examples = ['<%= config.bin %> <%= command.id %> --config fleet.yaml', '<%= config.bin %> <%= command.id %> --endpoints https://10.0.0.5:2379 --ca ca.pem --cert root.pem --key root.key']
  static override enableJsonFlag = true
  static override flags = {...fleetFlags}

  async run() {
    const {flags} = await this.parse(FleetInit)
    const r = await withFleet(this, flags, 'set up roles (use the root user)', async (admin) => ({prefix: admin.prefix, ...(await admin.init())}))
    this.log(`Fleet ${r.prefix} ready (layout version ${r.version}). Roles:`)
    for (const role of r.roles) this.log(`  ${role.name}: ${role.permissions.join(', ')}`)
    this.log(`Next: ${this.config.bin} fleet node add <name> for each node (its etcd certificate's CN must be that name).`)
    return r
  }
}
