import {Args, Command} from '@oclif/core'
import {fleetFlags, withFleet} from '../../../cli/fleet.js'

export default class FleetOperatorAdd extends Command {
  static override summary = "Create an operator's etcd user: it may change everything under the fleet's prefix."
  static override description = 'Creates etcd user NAME without a password (its certificate\'s CN is NAME) with the role agent-operator-<fleet>. Run as root.'
  static override examples = ['<%= config.bin %> <%= command.id %> ops --config fleet.yaml']
  static override enableJsonFlag = true
  static override args = {name: Args.string({description: "the operator's name (its etcd certificate's CN)", required: true})}
  static override flags = {...fleetFlags}

  async run() {
    const {args, flags} = await this.parse(FleetOperatorAdd)
    const r = await withFleet(this, flags, 'create users and roles (use the root user)', (admin) => admin.operatorUser(args.name))
    this.log(`${r.created ? 'Created' : 'Updated'} etcd user "${r.user}" with role ${r.roles.map((x) => `${x.name}: ${x.permissions.join(', ')}`).join('')}`)
    return r
  }
}
