import {Args, Command, Flags} from '@oclif/core'
import {fleetFlags, withFleet} from '../../../cli/fleet.js'

export default class FleetClientAdd extends Command {
  static override summary = 'Authorize a client on every node of the fleet (or change its address or fingerprint).'
  static override description =
    'Writes <prefix>/clients/NAME. NAME is the CN of the client certificate (agent pki issue NAME). Without --address ' +
    'a node gives the client an address from its pool; with --fingerprint only that certificate is admitted.'
  static override examples = [
    '<%= config.bin %> <%= command.id %> alice --config fleet.yaml',
    '<%= config.bin %> <%= command.id %> alice --address 10.8.0.20 --fingerprint sha256:AB:CD:... --config fleet.yaml',
  ]
  static override enableJsonFlag = true
  static override args = {name: Args.string({description: "the client's name (its certificate's CN)", required: true})}
  static override flags = {
    address: Flags.string({summary: 'Static tunnel address (IPv4).'}),
    fingerprint: Flags.string({summary: 'SHA-256 fingerprint the client certificate must have (as agent pki issue prints it).'}),
    ...fleetFlags,
  }

  async run() {
    const {args, flags} = await this.parse(FleetClientAdd)
    const r = await withFleet(this, flags, 'write clients', (admin) => admin.addClient(args.name, {address: flags.address, fingerprint: flags.fingerprint}))
    const details = [r.address ? `address ${r.address}` : 'address from the pool', ...(r.fingerprint ? [`fingerprint ${r.fingerprint}`] : [])]
    this.log(`${r.replaced ? 'Updated' : 'Added'} client "${r.name}" (${details.join(', ')})`)
    return r
  }
}
