import {Command} from '@oclif/core'
import {fleetFlags, withFleet} from '../../../cli/fleet.js'
import {formatClients} from '../../../core/fleet/format.js'

export default class FleetClientList extends Command {
  static override summary = "List the fleet's clients: name, static address, pinned fingerprint."
  static override examples = ['<%= config.bin %> <%= command.id %> --config fleet.yaml', '<%= config.bin %> <%= command.id %> --json']
  static override enableJsonFlag = true
  static override flags = {...fleetFlags}

  async run() {
    const {flags} = await this.parse(FleetClientList)
    const clients = await withFleet(this, flags, 'read clients', (admin) => admin.listClients())
    this.log(formatClients(clients))
    return clients
  }
}
