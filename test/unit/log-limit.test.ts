import {afterEach, describe, expect, it, vi} from 'vitest'
import {LogLimiter} from '../../src/core/log-limit.js'
import {createLogger} from '../../src/core/log.js'

function capture() {
  const lines: string[] = []
  return {lines, log: createLogger('info', 'test', (l) => void lines.push(l))}
}

describe('LogLimiter', () => {
  afterEach(() => vi.useRealTimers())

  it('writes the first lines of a kind per window, counts the rest and says how many', () => {
    vi.useFakeTimers()
    const {lines, log} = capture()
    const limiter = new LogLimiter(log, 3, 10_000)
    for (let i = 0; i < 1000; i++) limiter.warn('handshake', `failed ${i}`)
    limiter.warn('other', 'another kind has its own budget')
    expect(lines).toHaveLength(4)
    expect(lines[2]).toMatch(/failed 2\n$/)
    expect(limiter.suppressedTotal).toBe(997)
    vi.advanceTimersByTime(10_000)
    expect(lines).toHaveLength(5)
    expect(lines[4]).toMatch(/warn  test: handshake: 997 more line\(s\) suppressed in 10 s/)
    // A new window: lines again.
    limiter.warn('handshake', 'failed again')
    expect(lines[5]).toMatch(/failed again/)
  })

  it('says what is suppressed when flushed (a stop), and nothing when nothing was', () => {
    const {lines, log} = capture()
    const limiter = new LogLimiter(log, 1, 60_000)
    limiter.warn('k', 'one')
    limiter.flush()
    expect(lines).toHaveLength(1)
    limiter.warn('k', 'two')
    limiter.warn('k', 'three')
    limiter.flush()
    expect(lines.at(-1)).toMatch(/k: 1 more line\(s\) suppressed/)
  })
})
