import {Command} from '@oclif/core'
import {fleetFlags, withFleet} from '../../cli/fleet.js'
import {formatNodes} from '../../core/fleet/format.js'

export default class FleetNodes extends Command {
  static override summary = 'List the nodes registered now: endpoints, transport, sessions, throughput, health, heartbeat age.'
  static override description = "Reads <prefix>/nodes/: a node's entry lives under its lease, so a node that stopped (or lost etcd for longer than its lease) is not listed."
  static override examples = ['<%= config.bin %> <%= command.id %> --config fleet.yaml', '<%= config.bin %> <%= command.id %> --json']
  static override enableJsonFlag = true
  static override flags = {...fleetFlags}

  async run() {
    const {flags} = await this.parse(FleetNodes)
    const nodes = await withFleet(this, flags, 'read the registry', (admin) => admin.nodes())
    this.log(formatNodes(nodes))
    return nodes
  }
}
