import {Command, Flags} from '@oclif/core'
import {resolve} from 'node:path'
import {fail} from '../cli/fail.js'
import {loadConfig} from '../core/config/index.js'
import {describeReload} from '../core/lifecycle.js'
import {StateFile, isAgentAlive, runDir} from '../core/state/state-file.js'
import {checkRunDir} from '../core/state/run-dir.js'
import {type ReloadResult, requestReload} from '../core/status/server.js'

export default class Reload extends Command {
  static override summary = 'Make a running node or client re-read its config (and a node its CRL) without dropping anyone.'
  static override description =
    'Finds the running instance by the config\'s name, as `agent down` does, and has it apply the file. A node applies ' +
    'its clients (added ones can connect at once, removed ones are cut), `any`, its CRL, session and log settings; a ' +
    'client its routes, reconnect and log settings. A field that cannot change live, or an invalid file, is refused ' +
    'and nothing changes. SIGHUP does the same with the file the instance was started with.'
  static override examples = ['<%= config.bin %> reload --config node1.yaml']
  static override enableJsonFlag = true
  static override flags = {
    config: Flags.string({char: 'c', summary: 'The config file to apply (the instance is the one of its `name`).', required: true}),
    'run-dir': Flags.string({summary: 'Where state and the status socket live.', env: 'AGENT_RUN_DIR', default: '/run/agent'}),
  }

  async run(): Promise<ReloadResult & {name: string}> {
    const {flags} = await this.parse(Reload)
    // Checked here first, so an invalid file gets the usual field-and-line errors in this terminal.
    const config = await loadConfig(flags.config).catch((e: Error) => fail(this, e.message, 2))
    const dir = runDir(flags['run-dir'])
    let known: boolean
    try {
      known = checkRunDir(dir)
    } catch (e) {
      fail(this, (e as Error).message, 1)
    }
    const file = new StateFile(dir, config.name)
    const state = known ? file.read() : null
    if (state === null || !isAgentAlive(state.pid, state.startTime, state.bootId)) fail(this, `agent "${config.name}" is not running`, 1)
    let result: ReloadResult
    try {
      result = await requestReload(file.socketPath, resolve(flags.config))
    } catch (e) {
      fail(this, `reload refused: ${(e as Error).message}`, 1)
    }
    this.log(`${config.name}: ${describeReload(result)}`)
    return {name: config.name, ...result}
  }
}
