#!/usr/bin/env node
// Writes schema/agent-config.schema.json, the JSON Schema of node and client config files, from
// its TypeScript source (src/core/config/schema.ts, compiled to dist/ by `tsc -b`). Editors use
// the file through a `$schema:` key in the YAML; test/unit/config-schema.test.ts fails when the
// committed file differs from what the source generates.
//
//   node scripts/gen-schema.mjs           write the file
//   node scripts/gen-schema.mjs --check   exit 1 if the file is out of date, write nothing
import {existsSync, mkdirSync, readFileSync, writeFileSync} from 'node:fs'
import {dirname, join, relative} from 'node:path'
import {fileURLToPath, pathToFileURL} from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const compiled = join(root, 'dist/core/config/schema.js')
const target = join(root, 'schema/agent-config.schema.json')

if (!existsSync(compiled)) {
  console.error(`gen-schema: ${relative(root, compiled)} is missing; run \`npx tsc -b\` first`)
  process.exit(1)
}
const {renderSchema} = await import(pathToFileURL(compiled).href)
const text = renderSchema()

if (process.argv.includes('--check')) {
  const current = existsSync(target) ? readFileSync(target, 'utf8') : ''
  if (current !== text) {
    console.error(`gen-schema: ${relative(root, target)} is out of date; run node scripts/gen-schema.mjs`)
    process.exit(1)
  }
} else {
  mkdirSync(dirname(target), {recursive: true})
  writeFileSync(target, text)
  console.log(`gen-schema: wrote ${relative(root, target)}`)
}
