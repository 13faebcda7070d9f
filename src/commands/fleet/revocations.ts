import {Command} from '@oclif/core'
import {fleetFlags, withFleet} from '../../cli/fleet.js'
import {formatRevocations} from '../../core/fleet/format.js'

export default class FleetRevocations extends Command {
  static override summary = "List the fleet's revocations: names and serials, when and by whom."
  static override examples = ['<%= config.bin %> <%= command.id %> --config fleet.yaml --json']
  static override enableJsonFlag = true
  static override flags = {...fleetFlags}

  async run() {
    const {flags} = await this.parse(FleetRevocations)
    const r = await withFleet(this, flags, 'read revocations', (admin) => admin.listRevocations())
    this.log(formatRevocations(r))
    return r
  }
}
