import {Args, Command, Flags} from '@oclif/core'
import {fleetFlags, withFleet} from '../../cli/fleet.js'

export default class FleetUnrevoke extends Command {
  static override summary = 'Lift a revocation made with agent fleet revoke, by name or --serial.'
  static override examples = ['<%= config.bin %> <%= command.id %> alice --config fleet.yaml']
  static override enableJsonFlag = true
  static override args = {name: Args.string({description: 'the revoked name', required: false})}
  static override flags = {serial: Flags.string({summary: 'Lift the revocation of this serial instead.'}), ...fleetFlags}

  async run() {
    const {args, flags} = await this.parse(FleetUnrevoke)
    if ((args.name === undefined) === (flags.serial === undefined)) this.error('give the revoked name, or --serial (exactly one)', {exit: 2})
    const what = args.name !== undefined ? {name: args.name} : {serial: flags.serial!}
    await withFleet(this, flags, 'remove revocations', (admin) => admin.unrevoke(what))
    this.log(`Lifted the revocation of ${args.name !== undefined ? `"${args.name}"` : `serial ${flags.serial}`}`)
    return {...what, unrevoked: true}
  }
}
