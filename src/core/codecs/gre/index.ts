/**
 * GRE (RFC 2784/2890) as a library the core offers to transports through CoreApi: the gre
 * transport is GRE itself, and ipsec-over-gre carries ESP inside it. Plugins may import only
 * types from the core, so shared wire code reaches them as an argument, never as an import.
 */
import {
  GRE_MAX_HEADER_LENGTH,
  GRE_PROTO_IPV4,
  GRE_PROTO_IPV6,
  createGreHeader,
  greHeaderLength,
  parseGre,
  peekGreKey,
  writeGreHeader,
} from './codec.js'
import {SequenceCounter, SequenceWindow} from './sequence.js'

export type {GreFlags, GreHeader} from './codec.js'

export const greCodec = {
  GRE_PROTO_IPV4,
  GRE_PROTO_IPV6,
  GRE_MAX_HEADER_LENGTH,
  greHeaderLength,
  writeGreHeader,
  createGreHeader,
  parseGre,
  peekGreKey,
  SequenceWindow,
  SequenceCounter,
} as const

export type GreCodec = typeof greCodec
