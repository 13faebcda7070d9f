import {Args, Command} from '@oclif/core'
import {fleetFlags, withFleet} from '../../../cli/fleet.js'

export default class FleetNodeAdd extends Command {
  static override summary = "Create a node's etcd user: it may read the fleet and write its own registry entry."
  static override description =
    'Creates etcd user NAME without a password (the node authenticates with a certificate whose CN is NAME), grants it ' +
    'the fleet\'s node role and a role of its own, agent-node-<fleet>-NAME, readwrite on exactly <prefix>/nodes/NAME. ' +
    'Needs `agent fleet init` first; run as root.'
  static override examples = ['<%= config.bin %> <%= command.id %> node1 --config fleet.yaml']
  static override enableJsonFlag = true
  static override args = {name: Args.string({description: "the node's name (its etcd certificate's CN)", required: true})}
  static override flags = {...fleetFlags}

  async run() {
    const {args, flags} = await this.parse(FleetNodeAdd)
    const r = await withFleet(this, flags, 'create users and roles (use the root user)', (admin) => admin.nodeUser(args.name))
    this.log(`${r.created ? 'Created' : 'Updated'} etcd user "${r.user}" with roles:`)
    for (const role of r.roles) this.log(`  ${role.name}: ${role.permissions.join(', ')}`)
    return r
  }
}
