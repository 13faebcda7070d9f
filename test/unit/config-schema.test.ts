import {readFileSync} from 'node:fs'
import {dirname, join, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'
import {Ajv} from 'ajv'
import {parse} from 'yaml'
import {describe, expect, it} from 'vitest'
import {configSchema, renderSchema, SCHEMA_ID} from '../../src/core/config/index.js'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const committed = readFileSync(join(root, 'schema/agent-config.schema.json'), 'utf8')

describe('schema/agent-config.schema.json', () => {
  it('is what src/core/config/schema.ts generates (run `npx tsc -b && node scripts/gen-schema.mjs`)', () => {
    expect(JSON.parse(committed)).toEqual(configSchema)
    expect(committed).toBe(renderSchema())
  })

  it('names its draft and has an $id', () => {
    const json = JSON.parse(committed) as Record<string, unknown>
    expect(json.$schema).toBe('http://json-schema.org/draft-07/schema#')
    expect(json.$id).toBe(SCHEMA_ID)
  })

  // What an editor sees: a plain draft-07 validator that knows neither our discriminator nor
  // patternErrorMessage, and none of the semantic checks, must still accept the examples.
  it('validates the examples without agent-specific keywords', () => {
    const ajv = new Ajv({allErrors: true, strict: false})
    const validate = ajv.compile(JSON.parse(committed) as object)
    for (const name of ['examples/node1.yaml', 'examples/alice.yaml', 'test/fixtures/config/good/node-full.yaml']) {
      const data = parse(readFileSync(join(root, name), 'utf8')) as unknown
      expect(validate(data), `${name}: ${JSON.stringify(validate.errors)}`).toBe(true)
    }
    expect(validate({role: 'node', name: 'n'})).toBe(false)
  })

  it('forbids unknown keys in every object, except the flat options of transports from other plugins', () => {
    const PLUGIN_OPTIONS = /\/properties\/transports\/patternProperties\/[^/]+$/
    const walk = (node: unknown, where: string): void => {
      if (node === null || typeof node !== 'object') return
      const n = node as Record<string, unknown>
      if (n.type === 'object' && where !== '') {
        if (PLUGIN_OPTIONS.test(where)) expect(n.additionalProperties, where).toEqual({type: ['string', 'number', 'boolean']})
        else expect(n.additionalProperties, where).toBe(false)
      }
      for (const [k, v] of Object.entries(n)) if (k !== 'default') walk(v, `${where}/${k}`)
    }
    walk(configSchema, '')
  })
})
