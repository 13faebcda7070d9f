/**
 * The YAML text behind a config: parses it strictly, and maps field paths back to line and
 * column so every issue can point at the offending spot in the file.
 */
import {
  type Document,
  isAlias,
  isMap,
  isScalar,
  isSeq,
  LineCounter,
  type Node,
  parseDocument,
  type YAMLError,
} from 'yaml'
import type {ConfigIssue} from './errors.js'

export type PathSegment = string | number
export type FieldPath = readonly PathSegment[]

interface Position {
  line: number
  column: number
}

/** "clients[1].address" for ['clients', 1, 'address']; "" for the document itself. */
export function formatPath(path: FieldPath): string {
  let out = ''
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`
    else out += out === '' ? seg : `.${seg}`
  }
  return out
}

function keyText(key: unknown): string {
  return isScalar(key) ? String(key.value) : String(key)
}

/** A scalar with no text at all: the value of `key:` followed by nothing. */
function isEmpty(node: unknown): boolean {
  return isScalar(node) && node.value === null && node.source === ''
}

export class YamlSource {
  constructor(
    readonly doc: Document.Parsed,
    private readonly lines: LineCounter,
  ) {}

  /** The plain data of the document (aliases expanded). */
  data(): unknown {
    return this.doc.toJS({maxAliasCount: 100})
  }

  /**
   * Where a field is: its value, or with `at: 'key'` the key naming it (for unknown keys and
   * missing children, the key reads better than the first line of the block under it). When
   * the path does not exist, the deepest part of it that does.
   */
  locate(path: FieldPath, at: 'value' | 'key' = 'value'): Position {
    let node: unknown = this.doc.contents
    let key: Node | undefined
    for (const seg of path) {
      if (isAlias(node)) node = node.resolve(this.doc)
      let next: unknown
      if (isMap(node)) {
        const pair = node.items.find((p) => keyText(p.key) === String(seg))
        if (pair === undefined) break
        key = isScalar(pair.key) ? pair.key : undefined
        next = pair.value ?? undefined
      } else if (isSeq(node) && typeof seg === 'number' && seg < node.items.length) {
        key = undefined
        next = node.items[seg]
      } else {
        break
      }
      node = next
      if (node === undefined) break
    }
    const target = (at === 'key' || node === undefined || isEmpty(node)) && key ? key : (node as Node | null | undefined)
    const offset = target?.range?.[0] ?? key?.range?.[0]
    return offset === undefined ? {line: 1, column: 1} : this.position(offset)
  }

  position(offset: number): Position {
    const {line, col} = this.lines.linePos(offset)
    return {line, column: col}
  }

  /** The path of the map key that starts at `offset`, and where that key was first defined. */
  keyAtOffset(offset: number): {path: PathSegment[]; first?: Position} | undefined {
    const search = (node: unknown, path: PathSegment[]): {path: PathSegment[]; first?: Position} | undefined => {
      if (isMap(node)) {
        for (const pair of node.items) {
          const name = keyText(pair.key)
          if ((pair.key as Node | null)?.range?.[0] === offset) {
            const first = node.items.find((p) => keyText(p.key) === name)?.key as Node | undefined
            const firstOffset = first?.range?.[0]
            return {
              path: [...path, name],
              first: firstOffset !== undefined && firstOffset !== offset ? this.position(firstOffset) : undefined,
            }
          }
          const found = search(pair.value, [...path, name])
          if (found) return found
        }
      } else if (isSeq(node)) {
        for (let i = 0; i < node.items.length; i++) {
          const found = search(node.items[i], [...path, i])
          if (found) return found
        }
      }
      return undefined
    }
    return search(this.doc.contents, [])
  }
}

/** yaml's pretty messages end in " at line L, column C:" and a code excerpt; we have our own. */
function shortMessage(error: YAMLError): string {
  const cut = error.message.indexOf(' at line ')
  return cut < 0 ? error.message : error.message.slice(0, cut)
}

/**
 * Parses YAML strictly: duplicate keys, several documents and unknown tags are all errors.
 * Returns the source, or the issues that stop us from reading it.
 */
export function parseYaml(text: string): {source: YamlSource; issues: ConfigIssue[]} {
  const lines = new LineCounter()
  const doc = parseDocument(text, {lineCounter: lines, prettyErrors: true, uniqueKeys: true, strict: true})
  const source = new YamlSource(doc, lines)
  // One syntax error often sets off more at the same spot; only the first is worth reading.
  // Duplicate keys are independent of each other, so each one is reported.
  const errors = [...doc.errors, ...doc.warnings].sort((a, b) => a.pos[0] - b.pos[0])
  const firstSyntax = errors.find((e) => e.code !== 'DUPLICATE_KEY')
  const reported = errors.filter((e) => e.code === 'DUPLICATE_KEY' || e === firstSyntax)
  const issues = reported.map((error): ConfigIssue => {
    const pos = source.position(error.pos[0])
    if (error.code === 'DUPLICATE_KEY') {
      const dup = source.keyAtOffset(error.pos[0])
      if (dup) {
        const first = dup.first ? ` (first defined on line ${dup.first.line})` : ''
        return {path: formatPath(dup.path), ...pos, message: `duplicate key${first}`}
      }
    }
    // yaml's own wording here is advice to programmers (use parseAllDocuments).
    if (error.code === 'MULTIPLE_DOCS') {
      return {path: '', ...pos, message: 'YAML: a config file holds one document; remove this "---" and what follows'}
    }
    return {path: '', ...pos, message: `YAML: ${shortMessage(error)}`}
  })
  return {source, issues}
}
