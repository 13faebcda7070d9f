import {Command, Flags} from '@oclif/core'

import {DEFAULT_CRL_DAYS, issueCrl, PkiError, type CrlResult} from '../../core/pki/index.js'

export default class PkiCrl extends Command {
  static override summary = 'Write or re-issue the CRL (crl.pem) of the fleet CA, with a new number and next update.'
  static override description =
    'Signs a new X.509 v2 CRL listing every certificate recorded in revoked.json (none is fine) and writes crl.pem into ' +
    '--dir. Run it from cron well before the next update date of the current CRL, and copy crl.pem to every node.'
  static override examples = [
    '<%= config.bin %> <%= command.id %> --dir ./pki',
    '<%= config.bin %> <%= command.id %> --dir ./pki --days 7',
  ]
  static override enableJsonFlag = true

  static override flags = {
    dir: Flags.string({description: 'directory holding the CA; crl.pem is written there', default: './pki'}),
    days: Flags.integer({description: 'days until the CRL next update', default: DEFAULT_CRL_DAYS, min: 1}),
  }

  async run(): Promise<CrlResult> {
    const {flags} = await this.parse(PkiCrl)
    let result: CrlResult
    try {
      result = await issueCrl({dir: flags.dir, days: flags.days})
    } catch (error) {
      if (error instanceof PkiError) this.error(error.message, {exit: 1})
      throw error
    }
    if (result.warning) this.warn(result.warning)
    this.log(`Issued CRL number ${result.number} (${result.revokedCount} revoked, next update ${result.nextUpdate})`)
    this.log(`  CRL     ${result.crlFile}   (goes to every node)`)
    this.log(`  record  ${result.revokedFile}`)
    this.log(`Re-issue it before ${result.nextUpdate} (e.g. daily from cron): nodes warn about a CRL past its next update.`)
    return result
  }
}
