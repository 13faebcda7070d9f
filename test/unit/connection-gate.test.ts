import {afterEach, describe, expect, it, vi} from 'vitest'
import {ConnectionGate, type GateClosure} from '../../src/core/node/connection-gate.js'

function socket() {
  return {destroyed: false, destroy() {
    this.destroyed = true
  }}
}

describe('ConnectionGate', () => {
  afterEach(() => vi.useRealTimers())

  it('closes a source\'s connections past its limit at once, and only that source\'s', () => {
    const closed: [GateClosure, string][] = []
    const gate = new ConnectionGate({perSource: 2, total: 10, deadlineMs: 1000}, (why, src) => closed.push([why, src]))
    const a = [socket(), socket(), socket()]
    expect(gate.enter('1.1.1.1:1', '1.1.1.1', a[0])).toBe(true)
    expect(gate.enter('1.1.1.1:2', '1.1.1.1', a[1])).toBe(true)
    expect(gate.enter('1.1.1.1:3', '1.1.1.1', a[2])).toBe(false)
    expect(a.map((s) => s.destroyed)).toEqual([false, false, true])
    const b = socket()
    expect(gate.enter('2.2.2.2:1', '2.2.2.2', b)).toBe(true)
    expect(closed).toEqual([['source-full', '1.1.1.1']])
    expect(gate.counters).toMatchObject({accepted: 3, sourceFull: 1})
    // One closes: the source may open one more.
    gate.closed('1.1.1.1:1')
    expect(gate.enter('1.1.1.1:4', '1.1.1.1', socket())).toBe(true)
    gate.clear()
  })

  it('never counts an authenticated connection: any number of players from one address', () => {
    const gate = new ConnectionGate({perSource: 2, total: 3, deadlineMs: 1000})
    const all = []
    for (let i = 0; i < 100; i++) {
      const s = socket()
      all.push(s)
      expect(gate.enter(`9.9.9.9:${i}`, '9.9.9.9', s)).toBe(true)
      gate.authenticated(`9.9.9.9:${i}`)
    }
    expect(all.some((s) => s.destroyed)).toBe(false)
    expect(gate.size).toBe(0)
    expect(gate.counters.authenticated).toBe(100)
  })

  it('when full, closes the oldest unauthenticated connection to let a newcomer in', () => {
    const closed: [GateClosure, string][] = []
    const gate = new ConnectionGate({perSource: 5, total: 3, deadlineMs: 1000}, (why, src) => closed.push([why, src]))
    const s = [socket(), socket(), socket(), socket()]
    gate.enter('a:1', 'a', s[0])
    gate.enter('b:1', 'b', s[1])
    gate.enter('a:2', 'a', s[2])
    gate.authenticated('b:1') // a player: not counted, never evicted
    gate.enter('c:1', 'c', socket())
    expect(gate.size).toBe(3)
    expect(gate.enter('d:1', 'd', s[3])).toBe(true)
    expect(s.map((x) => x.destroyed)).toEqual([true, false, false, false])
    expect(closed).toEqual([['evicted', 'a']])
    gate.clear()
  })

  it('closes a connection at its deadline from accept, whatever it does meanwhile', () => {
    vi.useFakeTimers()
    const closed: GateClosure[] = []
    const gate = new ConnectionGate({perSource: 5, total: 5, deadlineMs: 5000}, (why) => closed.push(why))
    const slow = socket()
    const quick = socket()
    gate.enter('a:1', 'a', slow)
    gate.enter('a:2', 'a', quick)
    vi.advanceTimersByTime(4999)
    gate.authenticated('a:2')
    expect(slow.destroyed).toBe(false)
    vi.advanceTimersByTime(1)
    expect(slow.destroyed).toBe(true)
    expect(quick.destroyed).toBe(false)
    expect(closed).toEqual(['expired'])
    expect(gate.counters).toMatchObject({expired: 1, authenticated: 1})
    expect(gate.size).toBe(0)
  })

  it('refuses limits that are not positive integers', () => {
    expect(() => new ConnectionGate({perSource: 0, total: 1, deadlineMs: 1})).toThrow(/perSource must be a positive integer, got 0/)
    expect(() => new ConnectionGate({perSource: 1, total: 1.5, deadlineMs: 1})).toThrow(/total/)
  })
})
