/**
 * ip_forward shared by the nodes of one network namespace (state/ip-forward.ts): the last node
 * to stop puts back the value from before the first started; a dead node does not count as
 * live. The sysctl tree is a temporary directory, the namespaces are made-up ids, and "other
 * nodes" are markers naming our own `sleep` children.
 */
import {type ChildProcess, spawn} from 'node:child_process'
import {chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {afterAll, afterEach, beforeEach, describe, expect, it} from 'vitest'
import {currentNetns, holdIpForward, releaseIpForward, type ForwardMarker} from '../../src/core/state/ip-forward.js'
import {currentBootId, processStartTime} from '../../src/core/state/state-file.js'

const NS = 'net:[4000000001]'
const OTHER_NS = 'net:[4000000002]'

const children: ChildProcess[] = []
afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
})

let scratch: string
let dir: string
let root: string
beforeEach(() => {
  scratch = mkdtempSync(join(tmpdir(), `agent-ipfwd-${process.pid}-`))
  dir = join(scratch, 'registry')
  root = join(scratch, 'sys')
  mkdirSync(join(root, 'net/ipv4'), {recursive: true})
  setForward('0')
})
afterEach(() => rmSync(scratch, {recursive: true, force: true}))

const forward = () => readFileSync(join(root, 'net/ipv4/ip_forward'), 'utf8').trim()
const setForward = (v: string) => writeFileSync(join(root, 'net/ipv4/ip_forward'), `${v}\n`)
const opts = (netns = NS) => ({dir, sysctlRoot: root, netns})

function logger() {
  const lines: string[] = []
  const at = (level: string) => (msg: string) => lines.push(`${level} ${msg}`)
  const log = {trace: at('trace'), debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), child: () => log, setLevel: () => {}}
  return {log, lines}
}

async function sleeper(): Promise<number> {
  const c = spawn('/bin/sleep', ['60'], {stdio: 'ignore'})
  children.push(c)
  await new Promise((resolve, reject) => c.once('spawn', resolve).once('error', reject))
  return c.pid!
}

async function deadPid(): Promise<number> {
  const c = spawn('/bin/true', [], {stdio: 'ignore'})
  await new Promise((resolve) => c.once('exit', resolve))
  return c.pid!
}

/** Another node's marker, as its own holdIpForward would have written it. */
function otherNode(pid: number, name: string, before: string, netns = NS, startTime = processStartTime(pid) ?? 1): ForwardMarker & {ipForwardBefore: string} {
  mkdirSync(dir, {recursive: true, mode: 0o700})
  const m = {pid, startTime, bootId: currentBootId(), name, netns, before}
  writeFileSync(join(dir, `${netns.slice(5, -1)}.${pid}.${startTime}.json`), JSON.stringify(m))
  return {...m, ipForwardBefore: before}
}

/** This process as a node: what its state file would hold after holdIpForward. */
async function hold(name = 'node1', netns = NS) {
  const state: {pid: number; name: string; ipForwardBefore?: string; netns?: string} = {pid: process.pid, name}
  await holdIpForward(
    name,
    (before, ns) => {
      state.ipForwardBefore = before
      state.netns = ns
    },
    opts(netns),
  )
  return state
}

const markers = () => (existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.json')) : [])

describe('ip_forward of one node', () => {
  it('turns it on, records the value before, and puts it back on release', async () => {
    const state = await hold()
    expect(state).toMatchObject({ipForwardBefore: '0', netns: NS})
    expect(forward()).toBe('1')
    expect(markers()).toHaveLength(1)
    await releaseIpForward(state, logger().log, opts())
    expect(forward()).toBe('0')
    expect(markers()).toEqual([])
  })

  it('leaves forwarding on that was on before', async () => {
    setForward('1')
    const state = await hold()
    expect(state.ipForwardBefore).toBe('1')
    await releaseIpForward(state, logger().log, opts())
    expect(forward()).toBe('1')
  })

  it('knows the namespace it runs in', () => {
    expect(currentNetns()).toMatch(/^net:\[\d+\]$/)
  })
})

describe('ip_forward shared by two nodes of one namespace', () => {
  it('the first to stop leaves it on for the other; the last puts back the value from before the first', async () => {
    // node2 started first, with forwarding off, and is still running.
    const node2 = otherNode(await sleeper(), 'node2', '0')
    setForward('1')
    const mine = await hold('node1')
    // Not the current 1, which is node2's doing.
    expect(mine.ipForwardBefore).toBe('0')

    const {log, lines} = logger()
    await releaseIpForward(mine, log, opts())
    expect(forward()).toBe('1')
    expect(lines.join('\n')).toMatch(`leaving net.ipv4.ip_forward on: node "node2" (pid ${node2.pid}) in this network namespace still forward(s)`)

    await releaseIpForward(node2, logger().log, opts())
    expect(forward()).toBe('0')
    expect(markers()).toEqual([])
  })

  it('the one that started second can stop last', async () => {
    const mine = await hold('node1')
    const node2 = otherNode(await sleeper(), 'node2', mine.ipForwardBefore!)
    await releaseIpForward(node2, logger().log, opts())
    expect(forward()).toBe('1')
    await releaseIpForward(mine, logger().log, opts())
    expect(forward()).toBe('0')
  })

  it('a node killed with -9 does not count as live, but passes on the value from before it', async () => {
    const crashed = otherNode(await deadPid(), 'node2', '0', NS, 12345)
    setForward('1') // the crashed node's doing
    const mine = await hold('node1')
    expect(mine.ipForwardBefore).toBe('0')
    await releaseIpForward(mine, logger().log, opts())
    expect(forward()).toBe('0')
    // Its cleanup later (agent down) removes its marker; nothing live needs forwarding.
    await releaseIpForward(crashed, logger().log, opts())
    expect(markers()).toEqual([])
  })

  it('a pid reused by another process is not the node that recorded it', async () => {
    const pid = await sleeper()
    otherNode(pid, 'node2', '0', NS, processStartTime(pid)! - 1)
    const mine = await hold('node1')
    await releaseIpForward(mine, logger().log, opts())
    expect(forward()).toBe('0')
  })

  it('nodes of another namespace do not count', async () => {
    otherNode(await sleeper(), 'elsewhere', '1', OTHER_NS)
    const mine = await hold('node1')
    expect(mine.ipForwardBefore).toBe('0')
    await releaseIpForward(mine, logger().log, opts())
    expect(forward()).toBe('0')
  })
})

describe('ip_forward safety', () => {
  it('refuses to put back a value recorded in another namespace', async () => {
    setForward('1')
    const state = {pid: await deadPid(), name: 'node9', ipForwardBefore: '0', netns: OTHER_NS}
    await expect(releaseIpForward(state, logger().log, opts())).rejects.toThrow(
      `"node9" turned it on in network namespace ${OTHER_NS}, and this is ${NS}: run \`agent down\` in that namespace`,
    )
    expect(forward()).toBe('1')
  })

  it('forgets dead markers of a past boot or of a namespace that is gone, keeps live ones', async () => {
    const gone = otherNode(await deadPid(), 'gone', '0', OTHER_NS, 7)
    const live = otherNode(await sleeper(), 'live', '0', 'net:[4000000003]')
    const pastBoot = join(dir, `${NS.slice(5, -1)}.1.1.json`)
    writeFileSync(pastBoot, JSON.stringify({pid: 1, startTime: 1, bootId: 'another-boot', name: 'old', netns: NS, before: '1'}))
    const mine = await hold('node1')
    // The marker of the past boot passed nothing on.
    expect(mine.ipForwardBefore).toBe('0')
    const left = markers()
    expect(left).toContain(`4000000003.${live.pid}.${live.startTime}.json`)
    expect(left).not.toContain(`4000000002.${gone.pid}.7.json`)
    expect(existsSync(pastBoot)).toBe(false)
  })

  it('refuses a registry others can write, before touching the switch', async () => {
    mkdirSync(dir)
    chmodSync(dir, 0o777)
    await expect(hold()).rejects.toThrow(`run directory ${dir} is writable by group and others (mode 0777)`)
    expect(forward()).toBe('0')
  })
})
