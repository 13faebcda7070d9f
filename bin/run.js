#!/usr/bin/env node
import {setFlagsFromString} from 'node:v8'
import {execute} from '@oclif/core'

// V8 grows the young generation to 16 MiB semi-spaces under allocation bursts (a node's
// thousand TLS handshakes) and keeps them: about 25 MiB of a node's memory for fewer
// scavenges, which the data path does not need (its common packets never reach JavaScript).
// Read by V8 each time it would grow, so it still applies this early. See docs/benchmarks.md.
setFlagsFromString('--semi-space-growth-factor=1')
await execute({dir: import.meta.url})
