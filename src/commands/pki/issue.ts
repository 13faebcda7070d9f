import {Args, Command, Flags} from '@oclif/core'

import {DEFAULT_LEAF_DAYS, issue, PkiError, type IssueResult} from '../../core/pki/index.js'

export default class PkiIssue extends Command {
  static override summary = 'Issue credentials for a proxy node (--node) or a client, signed by the fleet CA.'
  static override description =
    'Writes <name>.crt, <name>.key and <name>.pem into --dir. The .pem bundle holds the CA certificate, the certificate ' +
    'and the key: it is the file a config points at with `pki: {bundle: ...}`. Prints the SHA-256 fingerprint of the ' +
    'certificate, which node configs can use to pin a client.'
  static override examples = [
    '<%= config.bin %> <%= command.id %> node1 --node --dir ./pki --ip 203.0.113.7',
    '<%= config.bin %> <%= command.id %> alice --dir ./pki',
  ]
  static override enableJsonFlag = true

  static override args = {
    name: Args.string({
      description: 'node or client name: lower-case letters, digits and -, up to 63 characters',
      required: true,
    }),
  }

  static override flags = {
    node: Flags.boolean({description: 'issue a proxy node (TLS server) certificate instead of a client one', default: false}),
    dir: Flags.string({description: 'directory holding the CA; the credentials are written there', default: './pki'}),
    days: Flags.integer({description: 'validity in days (cut to the CA expiry)', default: DEFAULT_LEAF_DAYS, min: 1}),
    ip: Flags.string({description: 'also valid for this IP address (repeatable)', multiple: true}),
    force: Flags.boolean({description: 'replace existing credentials with this name', default: false}),
  }

  async run(): Promise<IssueResult> {
    const {args, flags} = await this.parse(PkiIssue)
    let result: IssueResult
    try {
      result = await issue({dir: flags.dir, name: args.name, node: flags.node, days: flags.days, ips: flags.ip, force: flags.force})
    } catch (error) {
      if (error instanceof PkiError) this.error(error.message, {exit: 1})
      throw error
    }
    if (result.warning) this.warn(result.warning)
    this.log(`Issued ${result.role} credentials for "${result.name}" (valid until ${result.notAfter})`)
    this.log(`  certificate  ${result.certFile}`)
    this.log(`  private key  ${result.keyFile}   (secret)`)
    this.log(`  bundle       ${result.bundleFile}   (secret: CA + certificate + key)`)
    this.log(`  fingerprint  ${result.fingerprint}`)
    if (result.role === 'client') {
      this.log(`Give ${result.bundleFile} to the client (config: pki: {bundle: <path>}) and add "${result.name}"`)
      this.log(`to the clients list of each node it may use, optionally pinned by the fingerprint above.`)
    } else {
      this.log(`Install ${result.bundleFile} on node "${result.name}" (config: pki: {bundle: <path>}); clients`)
      this.log(`reach it under the name "${result.name}" (their TLS server name), whatever address they dial.`)
    }
    return result
  }
}
