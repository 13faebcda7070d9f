import {Args, Command, Flags} from '@oclif/core'
import {resolve} from 'node:path'
import {fail} from '../../cli/fail.js'
import {loadConfig} from '../../core/config/index.js'
import {DEFAULT_UNIT_DIR, type InstallResult, installService} from '../../core/service/install.js'

export default class ServiceInstall extends Command {
  static override summary = 'Install the systemd unit agent@.service and the config location of instance NAME (/etc/agent/NAME.yaml).'
  static override description =
    'Writes agent@.service to the unit directory (when absent or different) and creates /etc/agent (mode 0750; an existing one is never loosened). With ' +
    '--config, copies that file to /etc/agent/NAME.yaml after checking the copy there (relative paths resolve against ' +
    '/etc/agent; files under /home, /root or /run/user are refused), unless one is there already: an existing ' +
    'config is never overwritten. Everything is checked first: on an error nothing is written. Then ' +
    '`systemctl daemon-reload && systemctl enable --now agent@NAME` starts it (docs/service.md).'
  static override examples = [
    '<%= config.bin %> service install node1',
    '<%= config.bin %> service install node1 --config ./node1.yaml',
    '<%= config.bin %> service install node1 --root ./staging --agent /usr/bin/agent',
  ]
  static override enableJsonFlag = true
  static override args = {name: Args.string({description: 'The instance: agent@NAME runs /etc/agent/NAME.yaml.', required: true})}
  static override flags = {
    config: Flags.string({char: 'c', summary: 'A config file to put in place as /etc/agent/NAME.yaml (never over an existing one).'}),
    root: Flags.string({summary: 'Prefix for every path written (a package staging directory, tests).', default: '/'}),
    'unit-dir': Flags.string({summary: 'Where the unit goes, under --root.', default: DEFAULT_UNIT_DIR}),
    agent: Flags.string({summary: 'The agent executable the unit runs (default: this one).'}),
  }

  async run(): Promise<InstallResult> {
    const {args, flags} = await this.parse(ServiceInstall)
    let result: InstallResult
    try {
      result = await installService({
        name: args.name,
        root: resolve(flags.root),
        unitDir: flags['unit-dir'],
        agent: flags.agent ?? resolve(process.argv[1]),
        config: flags.config,
        validate: loadConfig,
      })
    } catch (e) {
      fail(this, (e as Error).message, 1)
    }
    this.log(`unit ${result.unit.path}: ${result.unit.action}`)
    this.log(`config directory ${result.configDir.path}: ${result.configDir.action}`)
    this.log(`config ${result.config.path}: ${result.config.action === 'missing' ? 'not there yet' : result.config.action}`)
    this.log('next:')
    for (const step of result.next) this.log(`  ${step}`)
    return result
  }
}
