import {Args, Command, Flags} from '@oclif/core'
import {fleetFlags, withFleet} from '../../cli/fleet.js'
import {etcdUser} from '../../core/fleet/errors.js'
import type {RevocationValue} from '../../core/fleet/layout.js'

export default class FleetRevoke extends Command {
  static override summary = 'Shut a certificate out of every node: by name (every certificate with that CN) or by --serial.'
  static override description =
    'Writes <prefix>/revoked/names/NAME or <prefix>/revoked/serials/SERIAL; nodes refuse such certificates and cut ' +
    'their sessions. The client entry (agent fleet client ...) is left as it is. Undo with agent fleet unrevoke.'
  static override examples = ['<%= config.bin %> <%= command.id %> alice --config fleet.yaml', '<%= config.bin %> <%= command.id %> --serial 5A:0F:1C --config fleet.yaml']
  static override enableJsonFlag = true
  static override args = {name: Args.string({description: 'the certificate name (CN) to revoke', required: false})}
  static override flags = {
    serial: Flags.string({summary: "Revoke this certificate serial instead (hex, as openssl or agent pki prints it)."}),
    holder: Flags.string({summary: 'With --serial: whose certificate it is, recorded for the listing.', dependsOn: ['serial']}),
    by: Flags.string({summary: 'Who revokes, recorded for the listing. Default: your etcd user (the CN of --cert).'}),
    ...fleetFlags,
  }

  async run() {
    const {args, flags} = await this.parse(FleetRevoke)
    if ((args.name === undefined) === (flags.serial === undefined)) this.error('give the name to revoke, or --serial (exactly one)', {exit: 2})
    const r = await withFleet(this, flags, 'write revocations', async (admin, access): Promise<{name?: string; serial?: string} & RevocationValue> => {
      const by = flags.by ?? etcdUser(access.cert)
      return args.name !== undefined ? admin.revokeName(args.name, by) : admin.revokeSerial(flags.serial!, {name: flags.holder, by})
    })
    this.log(r.serial === undefined ? `Revoked name "${r.name}"` : `Revoked serial ${r.serial}${r.name ? ` (of "${r.name}")` : ''}`)
    return r
  }
}
