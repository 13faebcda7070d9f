// The measurements: iperf3 TCP throughput, ping RTT percentiles, CPU time of tunnel processes.
import {execFileSync} from 'node:child_process'
import {readFileSync} from 'node:fs'
import {startLogged} from './proc.mjs'
import {percentile} from './stats.mjs'

/** Clock ticks per second, the unit of /proc/<pid>/stat times. */
export const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100
  } catch {
    return 100
  }
})()

/** user+sys CPU seconds of a process, all its threads included; 0 when it is gone. */
export function cpuSeconds(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the "(comm)" one; comm may contain spaces. utime and stime are fields 14 and 15.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(f[11]) + Number(f[12])) / CLK_TCK
  } catch {
    return 0
  }
}

const sumCpu = (pids) => pids.reduce((a, p) => a + cpuSeconds(p), 0)

/** Busy and total jiffies of the whole machine (first line of /proc/stat; idle and iowait are not busy). */
export function hostTicks() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1, 9).map(Number)
  const total = f.reduce((a, b) => a + b, 0)
  return {busy: total - f[3] - f[4], total}
}

/** How busy the machine is with nothing of ours running (others' tests skew every figure). */
export async function hostBusyOver(ms) {
  const a = hostTicks()
  await new Promise((r) => setTimeout(r, ms))
  const b = hostTicks()
  return ((b.busy - a.busy) / Math.max(1, b.total - a.total)) * 100
}

/** Start the iperf3 server in the target namespace. */
export async function startIperfServer(tb) {
  const {child} = await startLogged(tb, tb.names.target, 'iperf3', ['-s', '-p', '5201', '--forceflush'], {name: 'iperf3-server', ready: /Server listening/})
  return child
}

/**
 * One iperf3 TCP run from `ns` to the target; CPU of `pids` is sampled around it.
 * @returns {Promise<{mbps: number, retransmits: number, attempts: number, cpuPercent: number | null, hostBusyPercent: number, bytes: number}>}
 */
export async function iperf(tb, ns, {seconds, streams, pids}) {
  const args = ['-c', tb.addr.target, '-p', '5201', '-t', String(seconds), '-J']
  if (streams > 1) args.push('-P', String(streams))
  for (let attempt = 1; ; attempt++) {
    const cpu0 = sumCpu(pids)
    const host0 = hostTicks()
    const t0 = process.hrtime.bigint()
    const r = await tb.exec(ns, 'iperf3', args, {timeoutMs: (seconds + 30) * 1000})
    const wall = Number(process.hrtime.bigint() - t0) / 1e9
    const cpu1 = sumCpu(pids)
    const host1 = hostTicks()
    let j
    try {
      j = JSON.parse(r.stdout)
    } catch {
      throw new Error(`iperf3 gave no JSON (exit ${r.code}): ${r.stderr.trim()}`)
    }
    // The server may still be finishing the previous test (through a tunnel its last data
    // arrives late): it then rejects the new one, as "busy" or, when its close races the
    // client's cookie, as a reset of the control connection. Try again shortly.
    if (j.error && /busy|reset by peer|control message/i.test(j.error) && attempt < 5) {
      await new Promise((res) => setTimeout(res, 2000))
      continue
    }
    if (j.error) throw new Error(`iperf3: ${j.error}`)
    const recv = j.end.sum_received
    return {
      mbps: recv.bits_per_second / 1e6,
      bytes: recv.bytes,
      retransmits: j.end.sum_sent?.retransmits ?? 0,
      attempts: attempt,
      cpuPercent: pids.length ? ((cpu1 - cpu0) / wall) * 100 : null,
      // Everything the machine did meanwhile (iperf3, kernel forwarding, softirq, and anything else
      // running): the only CPU figure for paths that have no process of their own.
      hostBusyPercent: ((host1.busy - host0.busy) / Math.max(1, host1.total - host0.total)) * 100,
    }
  }
}

/**
 * `count` pings at `intervalS` from `ns` to the target, RTTs read per packet.
 * @returns {Promise<{p50: number, p99: number, loss: number, samples: number[]}>}
 */
export async function pingRtt(tb, ns, {count, intervalS}) {
  const r = await tb.exec(ns, 'ping', ['-n', '-c', String(count), '-i', String(intervalS), '-W', '1', tb.addr.target], {
    timeoutMs: (count * intervalS + 30) * 1000,
  })
  const samples = [...r.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]))
  return {p50: percentile(samples, 50), p99: percentile(samples, 99), loss: 1 - samples.length / count, samples}
}

/** TX bytes of a device in a namespace (to check that traffic really took the tunnel). */
export async function txBytes(tb, ns, dev) {
  const r = await tb.exec(ns, 'ip', ['-s', '-j', 'link', 'show', 'dev', dev], {check: true})
  return JSON.parse(r.stdout)[0].stats64.tx.bytes
}
