import {Args, Command, Flags} from '@oclif/core'

import {DEFAULT_CRL_DAYS, PkiError, REVOCATION_REASONS, revoke, type RevokeResult} from '../../core/pki/index.js'

export default class PkiRevoke extends Command {
  static override summary = 'Revoke a node or client certificate, by name or serial, and re-issue the CRL (crl.pem).'
  static override description =
    'Records the revocation in revoked.json next to the CA and writes crl.pem, an X.509 v2 CRL signed by the CA with ' +
    'the next CRL number. Copy crl.pem to every node (config: pki: {crl: <path>}). By name it revokes <dir>/<name>.crt; ' +
    'with --serial any serial number (e.g. of a certificate since replaced with `issue --force`). Revoking what is ' +
    'already revoked changes nothing but re-issues the CRL. The CA cannot revoke itself.'
  static override examples = [
    '<%= config.bin %> <%= command.id %> alice --dir ./pki --reason keyCompromise',
    '<%= config.bin %> <%= command.id %> --serial 5A0F1C... --dir ./pki --reason superseded',
  ]
  static override enableJsonFlag = true

  static override args = {
    name: Args.string({description: 'the credential name: revokes <dir>/<name>.crt', required: false}),
  }

  static override flags = {
    serial: Flags.string({description: 'revoke this serial number instead (hex, as `openssl x509 -noout -serial` prints it)'}),
    reason: Flags.string({
      description: `CRLReason (RFC 5280): ${REVOCATION_REASONS.join(', ')}`,
      default: 'unspecified',
    }),
    dir: Flags.string({description: 'directory holding the CA; revoked.json and crl.pem are written there', default: './pki'}),
    days: Flags.integer({description: 'days until the CRL next update', default: DEFAULT_CRL_DAYS, min: 1}),
  }

  async run(): Promise<RevokeResult> {
    const {args, flags} = await this.parse(PkiRevoke)
    if ((args.name === undefined) === (flags.serial === undefined)) {
      this.error('give the name of the credential to revoke, or --serial (exactly one)', {exit: 2})
    }
    let result: RevokeResult
    try {
      result = await revoke({dir: flags.dir, name: args.name, serial: flags.serial, reason: flags.reason, days: flags.days})
    } catch (error) {
      if (error instanceof PkiError) this.error(error.message, {exit: 1})
      throw error
    }
    for (const w of result.warnings) this.warn(w)
    if (result.crl.warning) this.warn(result.crl.warning)
    const who = result.name ? `"${result.name}" (serial ${result.serial})` : `serial ${result.serial}`
    this.log(
      result.alreadyRevoked
        ? `${who} was already revoked on ${result.date} (reason ${result.reason}): nothing changed`
        : `Revoked ${who}, reason ${result.reason}`,
    )
    this.log(`  record  ${result.crl.revokedFile}`)
    this.log(`  CRL     ${result.crl.crlFile}   (number ${result.crl.number}, ${result.crl.revokedCount} revoked, next update ${result.crl.nextUpdate})`)
    this.log(`Copy ${result.crl.crlFile} to every node (config: pki: {crl: <path>}); a running node picks it up by itself.`)
    return result
  }
}
