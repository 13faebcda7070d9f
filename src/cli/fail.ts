import type {Command} from '@oclif/core'

/**
 * End a command with an error message on one unwrapped line (oclif's own error printer wraps
 * at 80 columns with a ` ›` prefix, which splits file paths in journald and breaks grep).
 */
export function fail(command: Command, message: string, exit: number): never {
  process.stderr.write(`Error: ${message}\n`)
  return command.exit(exit)
}
