/** Ranking nodes and deciding when to move (probe/ranking.ts), and a path's window (path-stats.ts). */
import {describe, expect, it} from 'vitest'
import {basisOf, clearlyBetter, rank, score, Switcher, type RankInput} from '../../src/core/probe/ranking.js'
import {PathStats} from '../../src/core/probe/path-stats.js'
import {mergeCandidates} from '../../src/core/client/candidates.js'

const node = (key: string, rttMs: number | null, more: Partial<RankInput> = {}): RankInput => ({key, rttMs, loss: 0, gameMs: null, gameLoss: 0, gameKnown: more.gameMs !== undefined && more.gameMs !== null, preference: 0, usable: true, ...more})
const RULE = {betterByMs: 10, betterRatio: 2 / 3, switchAfterMs: 5000}

describe('ranking', () => {
  it('adds the game servers when every measured node reports them, and falls back to the node alone otherwise', () => {
    const a = node('a', 10, {gameMs: 40})
    const b = node('b', 20, {gameMs: 5})
    expect(basisOf([a, b])).toBe('path')
    expect(rank([a, b]).map((n) => n.key)).toEqual(['b', 'a'])
    const c = node('c', 15)
    expect(basisOf([a, b, c])).toBe('node')
    expect(rank([a, b, c]).map((n) => n.key)).toEqual(['a', 'c', 'b'])
    // An unmeasured or unusable node does not decide the basis, and ranks last.
    expect(basisOf([a, b, node('d', null), node('e', 1, {usable: false})])).toBe('path')
    expect(rank([node('d', null), a]).map((n) => n.key)).toEqual(['a', 'd'])
  })

  it('prices loss at 10 ms a percent on either leg, and takes preference off', () => {
    expect(score(node('a', 10, {loss: 0.01}), 'node')).toBeCloseTo(20)
    expect(score(node('a', 10, {gameMs: 10, gameLoss: 0.02}), 'path')).toBeCloseTo(40)
    // A node that reaches none of the game servers: all lost on its leg.
    const blind = node('b', 5, {gameMs: null, gameLoss: 1, gameKnown: true})
    expect(score(blind, 'path')).toBeCloseTo(1005)
    expect(basisOf([node('a', 10, {gameMs: 10}), blind])).toBe('path')
    expect(score(node('a', 10, {preference: 5}), 'node')).toBe(5)
    expect(score(node('a', 10, {preference: 50}), 'node')).toBe(0)
    expect(score(node('a', 10, {usable: false}), 'node')).toBe(Infinity)
  })

  it('clearly better: at least 10 ms and under two thirds, both', () => {
    expect(clearlyBetter(20, 40, RULE)).toBe(true)
    expect(clearlyBetter(31, 40, RULE)).toBe(false) // 9 ms better
    expect(clearlyBetter(100, 140, RULE)).toBe(false) // 40 ms better, but 71 %
    expect(clearlyBetter(5, 14, RULE)).toBe(false) // 36 %, but 9 ms
    expect(clearlyBetter(50, Infinity, RULE)).toBe(true)
    expect(clearlyBetter(Infinity, 50, RULE)).toBe(false)
  })
})

describe('switcher', () => {
  it('moves only after the challenger stayed clearly better for the whole wait', () => {
    const s = new Switcher(RULE)
    const far = [node('cur', 50), node('x', 20)]
    expect(s.consider(0, far, 'cur')).toBeNull()
    expect(s.consider(4000, far, 'cur')).toBeNull()
    // One look where it is not clearly better starts the wait again.
    expect(s.consider(4500, [node('cur', 50), node('x', 45)], 'cur')).toBeNull()
    expect(s.consider(5000, far, 'cur')).toBeNull()
    expect(s.consider(9999, far, 'cur')).toBeNull()
    const move = s.consider(10_000, far, 'cur')
    expect(move).toMatchObject({to: 'x'})
    expect(move!.why).toMatch(/20.0 ms to the node against 50.0 for 5 s/)
  })

  it('does not flap between two nodes that are close', () => {
    const s = new Switcher(RULE)
    for (let t = 0; t < 60_000; t += 1000) {
      const jitter = t % 2000 === 0 ? 3 : -3
      expect(s.consider(t, [node('cur', 30 + jitter), node('x', 30 - jitter)], 'cur')).toBeNull()
    }
  })

  it('a new challenger restarts the wait', () => {
    const s = new Switcher(RULE)
    expect(s.consider(0, [node('cur', 60), node('x', 20), node('y', 25)], 'cur')).toBeNull()
    expect(s.consider(3000, [node('cur', 60), node('x', 25), node('y', 20)], 'cur')).toBeNull()
    expect(s.consider(7000, [node('cur', 60), node('x', 25), node('y', 20)], 'cur')).toBeNull()
    expect(s.consider(8000, [node('cur', 60), node('x', 25), node('y', 20)], 'cur')).toMatchObject({to: 'y'})
  })
})

describe('path stats', () => {
  it('keeps the median of the last ten and the share lost', () => {
    const p = new PathStats(1000)
    for (let i = 1; i <= 12; i++) p.sent(i, i * 100)
    for (let i = 1; i <= 8; i++) p.answered(i, i * 100 + (i === 8 ? 500 : 10))
    expect(p.answered(8, 5000)).toBeNull() // a duplicate
    p.expire(3000) // 9..12 lost
    expect(p.samples).toBe(10)
    expect(p.loss).toBeCloseTo(0.4)
    expect(p.rttMs).toBe(10)
    p.reset()
    expect([p.samples, p.rttMs, p.loss]).toEqual([0, null, 0])
  })
})

describe('candidates', () => {
  it("lists the config's nodes first, then a fleet's others, once each", () => {
    const c = mergeCandidates(
      [{host: '192.0.2.1', port: 443, name: 'a', preference: 5}],
      [
        {name: 'a-again', host: '192.0.2.1', port: 443},
        {name: 'b', host: '192.0.2.2', port: 443},
      ],
    )
    expect(c.map((x) => [x.key, x.name, x.source, x.preference])).toEqual([
      ['192.0.2.1:443', 'a', 'config', 5],
      ['192.0.2.2:443', 'b', 'fleet', 0],
    ])
  })
})
