/** What went wrong in a config file, where, in words an operator understands. */

export interface ConfigIssue {
  /** Field path such as "tunnel.subnet" or "clients[1].address"; "" for the file as a whole. */
  path: string
  /** 1-based position in the file, when known. */
  line?: number
  column?: number
  message: string
}

/** "file:line:col: field: message", leaving out what is unknown. */
export function formatIssue(file: string, issue: ConfigIssue): string {
  let where = file
  if (issue.line !== undefined) where += `:${issue.line}`
  if (issue.line !== undefined && issue.column !== undefined) where += `:${issue.column}`
  return issue.path === '' ? `${where}: ${issue.message}` : `${where}: ${issue.path}: ${issue.message}`
}

/** Every problem found in one config file; the message has one formatted issue per line. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError'
  readonly file: string
  readonly issues: ConfigIssue[]

  constructor(file: string, issues: ConfigIssue[]) {
    super(issues.map((i) => formatIssue(file, i)).join('\n'))
    this.file = file
    this.issues = issues
  }
}
