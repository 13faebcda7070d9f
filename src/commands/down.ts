import {Command, Flags} from '@oclif/core'
import {fail} from '../cli/fail.js'
import {loadConfig} from '../core/config/index.js'
import {createLogger} from '../core/log.js'
import {runDir} from '../core/state/state-file.js'
import {bringDown} from '../core/lifecycle.js'

export default class Down extends Command {
  static override summary = 'Stop an agent started with `up`, and remove what it set up (also after a crash).'
  static override examples = ['<%= config.bin %> down --config alice.yaml']
  static override enableJsonFlag = true
  static override flags = {
    config: Flags.string({char: 'c', summary: 'The config file the agent was started with.', required: true}),
    'run-dir': Flags.string({summary: 'Where state and the status socket live.', env: 'AGENT_RUN_DIR', default: '/run/agent'}),
  }

  async run(): Promise<{name: string; stoppedPid: number | null; cleanedStale: boolean}> {
    const {flags} = await this.parse(Down)
    const config = await loadConfig(flags.config).catch((e: Error) => fail(this, e.message, 2))
    const log = createLogger('warn', `${config.name}/down`)
    try {
      const result = await bringDown(runDir(flags['run-dir']), config.name, log)
      if (result.stoppedPid !== null) this.log(`stopped ${config.name} (pid ${result.stoppedPid})`)
      else if (result.cleanedStale) this.log(`${config.name} was not running; removed what its last run left behind`)
      else this.log(`${config.name} is not running; nothing to remove`)
      return {name: config.name, ...result}
    } catch (e) {
      fail(this, (e as Error).message, 1)
    }
  }
}
