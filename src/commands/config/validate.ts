import {Args, Command} from '@oclif/core'
import {fail} from '../../cli/fail.js'
import {loadConfig} from '../../core/config/index.js'

export default class ConfigValidate extends Command {
  static override summary = 'Check a node or client config file; errors name the field and the line.'
  static override examples = ['<%= config.bin %> config validate node1.yaml']
  static override enableJsonFlag = true
  static override args = {file: Args.string({description: 'The config file (YAML).', required: true})}

  async run(): Promise<{file: string; valid: true; role: string; name: string}> {
    const {args} = await this.parse(ConfigValidate)
    const config = await loadConfig(args.file).catch((e: Error) => fail(this, e.message, 1))
    this.log(`${args.file}: valid ${config.role} config "${config.name}"`)
    return {file: args.file, valid: true, role: config.role, name: config.name}
  }
}
