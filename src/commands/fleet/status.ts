import {Command} from '@oclif/core'
import {fleetFlags, withFleet} from '../../cli/fleet.js'
import {memberStatus, type FleetStatus} from '../../core/fleet/admin.js'
import {formatFleetStatus} from '../../core/fleet/format.js'

export default class FleetStatusCommand extends Command {
  static override summary = "Show etcd's members (reachable, leader, revision) and what the fleet holds."
  static override examples = ['<%= config.bin %> <%= command.id %> --config fleet.yaml']
  static override enableJsonFlag = true
  static override flags = {...fleetFlags}

  async run(): Promise<FleetStatus> {
    const {flags} = await this.parse(FleetStatusCommand)
    const s = await withFleet(this, flags, 'read the fleet', async (admin, access) => {
      // Members first and each on its own, so an unreachable one shows as such instead of failing all.
      const members = await memberStatus(access, Math.min(3000, flags.timeout * 1000))
      if (!members.some((m) => m.reachable)) throw new Error(`cannot reach etcd at ${access.endpoints.join(', ')}: ${members[0]?.error ?? ''}`)
      return {prefix: admin.prefix, members, ...(await admin.counts())}
    })
    this.log(formatFleetStatus(s))
    return s
  }
}
