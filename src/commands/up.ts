import {Command, Flags} from '@oclif/core'
import {fail} from '../cli/fail.js'
import {loadConfig} from '../core/config/index.js'
import {createLogger, LOG_FORMATS, type LogFormat, type LogLevel, type Logger} from '../core/log.js'
import {preflight} from '../core/preflight.js'
import {discoverTransports, requireTransport} from '../core/transport/registry.js'
import {runDir} from '../core/state/state-file.js'
import {NodeAgent} from '../core/node/node-agent.js'
import {ClientAgent} from '../core/client/client-agent.js'
import {runInForeground} from '../core/lifecycle.js'
import {ServiceNotifier} from '../core/service/notify.js'

export default class Up extends Command {
  static override summary = 'Bring up a proxy node or a client from its config file, in the foreground.'
  static override description =
    'The role (node or client) comes from the config file. SIGTERM or SIGINT stops it and removes every TUN device, route and firewall rule it set.'
  static override examples = ['<%= config.bin %> up --config node1.yaml', '<%= config.bin %> up --config alice.yaml --transport tls']
  static override flags = {
    config: Flags.string({char: 'c', summary: 'The node or client config file (YAML).', required: true}),
    transport: Flags.string({char: 't', summary: "Transport to use, overriding the config's `transport`."}),
    'run-dir': Flags.string({summary: 'Where state and the status socket live.', env: 'AGENT_RUN_DIR', default: '/run/agent'}),
    'log-level': Flags.option({options: ['trace', 'debug', 'info', 'warn', 'error'] as const, summary: "Override the config's log.level."})(),
    'log-format': Flags.option({options: LOG_FORMATS, summary: "Override the config's log.format: text lines, or one JSON object per line (docs/logging.md)."})(),
  }

  async run(): Promise<void> {
    const {flags} = await this.parse(Up)
    const format: LogFormat | undefined = flags['log-format']
    /** Ends with an error: as a JSON line when JSON was asked for, so a shipper parses every line. */
    const stop: (message: string, exit: number, json: Logger | null) => never = (message, exit, json) => {
      if (json === null) return fail(this, message, exit)
      json.error(message, {event: 'agent.failed', exit})
      return this.exit(exit)
    }
    const config = await loadConfig(flags.config).catch((e: Error) => stop(e.message, 2, format === 'json' ? createLogger({format: 'json'}) : null))
    const log = createLogger({
      level: (flags['log-level'] ?? config.log.level) as LogLevel,
      format: format ?? config.log.format,
      instance: config.name,
      role: config.role,
    })
    const json = (format ?? config.log.format) === 'json' ? log : null
    const transportName = flags.transport ?? config.transport
    let transport
    try {
      // Privileges first: without root, a missing plugin is a symptom (root's plugin dir is
      // not this user's), not the cause.
      preflight()
      transport = requireTransport(await discoverTransports(this.config), transportName, this.config)
    } catch (e) {
      stop((e as Error).message, 2, json)
    }
    const agent =
      config.role === 'node'
        ? new NodeAgent(config, transport, runDir(flags['run-dir']), log)
        : new ClientAgent(config, transport, runDir(flags['run-dir']), log)
    let code: number
    try {
      // Under systemd (Type=notify, docs/service.md): READY when it serves, RELOADING, STOPPING.
      code = await runInForeground(agent, log, process, ServiceNotifier.fromEnv({log}))
    } catch (e) {
      stop((e as Error).message, 1, json)
    }
    this.exit(code)
  }
}
