// The contract of a bench path (JSDoc only; nothing runs here).
//
// A path makes the benchmark's client namespace reach the target 203.0.113.10 in one particular
// way (plain forwarding, OpenVPN, an agent transport...). run.mjs gives it a fresh testbed, calls
// setup(), checks that the target answers and that traffic leaves through `tunnelDevice`, measures,
// then calls teardown() and destroys the testbed.

/**
 * @typedef {import('../../dist/testbed/index.js').Testbed} Testbed
 *
 * @typedef {object} PathContext
 * @property {string} client      namespace the measurements start from (a NATed or a public client)
 * @property {string} clientAddr  its address
 * @property {(msg: string) => void} log
 *
 * @typedef {object} BenchPath
 * @property {string} name        unique, shown in the table and accepted by BENCH_PATHS
 * @property {'none'|'tcp'|'udp'|'ip'} carrier  what crosses between client and node
 * @property {string} [baseline]  the path to compare with (the OpenVPN of the same carrier)
 * @property {'nat'|'public'} [from]  measure from a NATed client (default) or a public one (GRE/IPIP cannot cross NAT)
 * @property {string} [tunnelDevice]  the client-side interface traffic must leave by (checked with its TX counter)
 * @property {(tb: Testbed, ctx: PathContext) => Promise<void>} setup
 * @property {(tb: Testbed, ctx: PathContext) => Promise<void>} teardown
 * @property {() => number[]} [pids]   processes whose CPU time is the cost of the path (both ends)
 * @property {() => string[]} [info]   lines worth printing under the table (negotiated cipher, buffers...)
 */

export {}
