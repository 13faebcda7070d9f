import {Args, Command, Flags} from '@oclif/core'
import {resolve} from 'node:path'
import {fail} from '../../cli/fail.js'
import {DEFAULT_UNIT_DIR, type UninstallResult, uninstallService} from '../../core/service/install.js'

export default class ServiceUninstall extends Command {
  static override summary = 'Remove agent@.service when no instance uses it any more; never removes a config.'
  static override description =
    'The unit is a template shared by every instance: it is removed only when no other /etc/agent/*.yaml is left and ' +
    'no instance is enabled; otherwise this says which ones keep it. /etc/agent/NAME.yaml is kept either way (docs/service.md).'
  static override examples = ['<%= config.bin %> service uninstall node1']
  static override enableJsonFlag = true
  static override args = {name: Args.string({description: 'The instance being retired.', required: true})}
  static override flags = {
    root: Flags.string({summary: 'Prefix for every path (a package staging directory, tests).', default: '/'}),
    'unit-dir': Flags.string({summary: 'Where the unit is, under --root.', default: DEFAULT_UNIT_DIR}),
  }

  async run(): Promise<UninstallResult> {
    const {args, flags} = await this.parse(ServiceUninstall)
    let result: UninstallResult
    try {
      result = uninstallService({name: args.name, root: resolve(flags.root), unitDir: flags['unit-dir']})
    } catch (e) {
      fail(this, (e as Error).message, 1)
    }
    const why = [
      ...(result.enabled.length > 0 ? [`enabled: ${result.enabled.join(', ')}`] : []),
      ...(result.others.length > 0 ? [`other configs: ${result.others.join(', ')}`] : []),
    ]
    this.log(`unit ${result.unit.path}: ${result.unit.action}${result.unit.action === 'kept' ? ` (${why.join('; ')})` : ''}`)
    if (result.config.exists) this.log(`config ${result.config.path}: kept`)
    if (result.next.length > 0) {
      this.log('next:')
      for (const step of result.next) this.log(`  ${step}`)
    }
    return result
  }
}
