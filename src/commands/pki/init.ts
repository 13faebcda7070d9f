import {Command, Flags} from '@oclif/core'

import {DEFAULT_CA_DAYS, DEFAULT_CA_NAME, initCa, PkiError, type InitCaResult} from '../../core/pki/index.js'

export default class PkiInit extends Command {
  static override summary = 'Create the fleet CA (ca.crt, ca.key) that signs node and client credentials.'
  static override description =
    'Writes an ECDSA P-256 CA certificate and key into --dir (created with mode 0700 if missing; the key gets mode ' +
    '0600). Keep ca.key off the nodes: it is only needed to issue credentials.'
  static override examples = [
    '<%= config.bin %> <%= command.id %> --dir ./pki',
    '<%= config.bin %> <%= command.id %> --dir ./pki --name "acme fleet CA" --days 1825',
  ]
  static override enableJsonFlag = true

  static override flags = {
    dir: Flags.string({description: 'directory for the CA files', default: './pki'}),
    name: Flags.string({description: 'CA common name', default: DEFAULT_CA_NAME}),
    days: Flags.integer({description: 'validity in days', default: DEFAULT_CA_DAYS, min: 1}),
    force: Flags.boolean({description: 'replace an existing CA (everything it issued stops being trusted)', default: false}),
  }

  async run(): Promise<InitCaResult> {
    const {flags} = await this.parse(PkiInit)
    let result: InitCaResult
    try {
      result = await initCa({dir: flags.dir, name: flags.name, days: flags.days, force: flags.force})
    } catch (error) {
      if (error instanceof PkiError) this.error(error.message, {exit: 1})
      throw error
    }
    this.log(`Created CA "${result.name}" (valid until ${result.notAfter})`)
    this.log(`  certificate  ${result.certFile}   (goes to every node and client)`)
    this.log(`  private key  ${result.keyFile}   (secret: stays here, never on a node)`)
    this.log(`  fingerprint  ${result.fingerprint}`)
    this.log(`Next: ${this.config.bin} pki${this.config.topicSeparator}issue <node-name> --node --dir ${flags.dir}`)
    return result
  }
}
