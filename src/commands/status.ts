import {Command, Flags} from '@oclif/core'
import {fail} from '../cli/fail.js'
import {runDir} from '../core/state/state-file.js'
import {collectStatus, formatStatus, type InstanceStatus} from '../core/status/collect.js'

export default class Status extends Command {
  static override summary = 'Show running agents: peers, tunnel addresses, endpoints, bytes, last seen.'
  static override examples = ['<%= config.bin %> status', '<%= config.bin %> status --json', '<%= config.bin %> status --name node1']
  static override enableJsonFlag = true
  static override flags = {
    name: Flags.string({char: 'n', summary: 'Only this instance (its config `name`).'}),
    'run-dir': Flags.string({summary: 'Where state and the status socket live.', env: 'AGENT_RUN_DIR', default: '/run/agent'}),
  }

  async run(): Promise<InstanceStatus[]> {
    const {flags} = await this.parse(Status)
    const all = await collectStatus(runDir(flags['run-dir']), flags.name).catch((e: Error) => fail(this, e.message, 1))
    if (flags.name !== undefined && all.length === 0) fail(this, `no agent named "${flags.name}" is running`, 1)
    this.log(formatStatus(all))
    return all
  }
}
