import {Args, Command} from '@oclif/core'
import {fleetFlags, withFleet} from '../../../cli/fleet.js'

export default class FleetClientRemove extends Command {
  static override summary = 'Stop authorizing a client on the nodes of the fleet.'
  static override description =
    'Deletes <prefix>/clients/NAME. A node still admits NAME if its own config lists it or admits any client of the CA: ' +
    'to shut a certificate out everywhere, use agent fleet revoke.'
  static override examples = ['<%= config.bin %> <%= command.id %> alice --config fleet.yaml']
  static override enableJsonFlag = true
  static override args = {name: Args.string({description: "the client's name", required: true})}
  static override flags = {...fleetFlags}

  async run() {
    const {args, flags} = await this.parse(FleetClientRemove)
    await withFleet(this, flags, 'remove clients', (admin) => admin.removeClient(args.name))
    this.log(`Removed client "${args.name}"`)
    return {name: args.name, removed: true}
  }
}
