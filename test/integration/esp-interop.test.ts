/**
 * ESP interoperability with implementations that are not ours (issue #5): a packet our sealer
 * produces is decrypted, and its ICV checked, by Wireshark's ESP dissector given the SA; and
 * packets sealed by a few lines of Python (the `cryptography` package's AES-GCM, with the ESP
 * framing of RFC 4303/4106 written out independently) are opened by ours.
 */
import {execFileSync} from 'node:child_process'
import {mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {afterAll, describe, expect, it} from 'vitest'
import {EspOpener, EspSa, EspSealer, ipv4ToUint32} from '../../plugins/ipsec-over-gre/src/esp.js'
import {ReplayWindow} from '../../plugins/ipsec-over-gre/src/replay.js'

const dir = mkdtempSync(join(tmpdir(), `esp-interop-${process.pid}-`))
afterAll(() => rmSync(dir, {recursive: true, force: true}))

const KEY = Buffer.from(Array.from({length: 36}, (_, i) => (i * 7 + 3) & 0xff)) // 32-byte AES key + 4-byte salt
const SPI = 0x2468

/** An inner IPv4/UDP packet 10.8.0.2:5555 -> 203.0.113.10:7777 carrying `text`. */
function inner(text: string): Buffer {
  const data = Buffer.from(text)
  const b = Buffer.alloc(28 + data.length)
  b[0] = 0x45
  b.writeUInt16BE(b.length, 2)
  b[8] = 64
  b[9] = 17
  Buffer.from([10, 8, 0, 2]).copy(b, 12)
  Buffer.from([203, 0, 113, 10]).copy(b, 16)
  b.writeUInt16BE(5555, 20)
  b.writeUInt16BE(7777, 22)
  b.writeUInt16BE(8 + data.length, 24)
  data.copy(b, 28)
  return b
}

/** A pcap file of raw IPv4 packets (link type 101). */
function pcap(packets: Buffer[]): string {
  const file = join(dir, `p${Math.random().toString(36).slice(2)}.pcap`)
  const head = Buffer.alloc(24)
  head.writeUInt32LE(0xa1b2c3d4, 0)
  head.writeUInt16LE(2, 4)
  head.writeUInt16LE(4, 6)
  head.writeUInt32LE(65535, 16)
  head.writeUInt32LE(101, 20)
  const records = packets.map((p) => {
    const r = Buffer.alloc(16)
    r.writeUInt32LE(p.length, 8)
    r.writeUInt32LE(p.length, 12)
    return Buffer.concat([r, p])
  })
  writeFileSync(file, Buffer.concat([head, ...records]))
  return file
}

function tsharkEsp(file: string, key: Buffer): string {
  const sa = `"IPv4","10.8.0.2","10.8.0.1","0x${SPI.toString(16).padStart(8, '0')}","AES-GCM with 16 octet ICV [RFC4106]","0x${key.toString('hex')}","NULL",""`
  return execFileSync('tshark', ['-r', file, '-o', 'esp.enable_encryption_decode:TRUE', '-o', 'esp.enable_authentication_check:TRUE', '-o', `uat:esp_sa:${sa}`, '-V'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  })
}

describe('ESP interoperability', () => {
  it('Wireshark decrypts what we seal and finds its ICV correct (and wrong under another key)', () => {
    // Wireshark 4.0 has no extended sequence numbers for AES-GCM: this SA uses 32-bit ones.
    const sealer = new EspSealer(new EspSa({spi: SPI, key: KEY, esn: false}), ipv4ToUint32('10.8.0.2'), ipv4ToUint32('10.8.0.1'))
    const packets = ['first', 'second packet', 'third'].map((text) => {
      const p = inner(text)
      const buf = Buffer.alloc(64 + p.length + 64)
      p.copy(buf, 64)
      const out = {offset: 0, length: 0}
      expect(sealer.seal(buf, 64, p.length, out)).toBe(true)
      return Buffer.from(buf.subarray(out.offset, out.offset + out.length))
    })
    const text = tsharkEsp(pcap(packets), KEY)
    expect(text.match(/ESP ICV: .*\[correct\]/g)).toHaveLength(3)
    for (const [i, t] of ['first', 'second packet', 'third'].entries()) {
      // tshark -V shows at most 36 bytes of hex; the UDP payload it dissects inside is whole.
      expect(text).toContain(`ESP Contained Data: ${inner(t).toString('hex').slice(0, 72)}`)
      expect(text).toContain(`Data: ${Buffer.from(t).toString('hex')}\n`)
      expect(text).toContain(`ESP Sequence: ${i + 1}`)
    }
    expect(text).toMatch(/Next header: IPIP \(0x04\)/)
    const wrong = Buffer.from(KEY)
    wrong[0] ^= 1
    expect(tsharkEsp(pcap(packets), wrong)).toMatch(/ESP ICV: .*\[incorrect/)
  })

  it.each([false, true])('our opener accepts what an independent implementation seals (extended sequence numbers: %s)', (esn) => {
    // ESP tunnel mode per RFC 4303 and AES-GCM per RFC 4106, in Python: outer IPv4 header,
    // SPI, sequence, 8-byte IV, AES-GCM(payload | padding 1,2,.. | pad length | next header 4)
    // with AAD = SPI | seq (or SPI | seq high | seq low with ESN), 16-byte ICV.
    const script = `
import sys, struct
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
key, spi, esn = bytes.fromhex(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == '1'
out = []
for i, payload in enumerate(sys.argv[4:]):
    payload = bytes.fromhex(payload)
    seq = (1 << 32) + i + 1 if esn else i + 1
    lo, hi = seq & 0xffffffff, seq >> 32
    pad = (-(len(payload) + 2)) % 4
    plain = payload + bytes(range(1, pad + 1)) + bytes([pad, 4])
    iv = struct.pack('>Q', 1000 + i)
    aad = struct.pack('>III', spi, hi, lo) if esn else struct.pack('>II', spi, lo)
    sealed = AESGCM(key[:32]).encrypt(key[32:] + iv, plain, aad)
    esp = struct.pack('>II', spi, lo) + iv + sealed
    hdr = bytearray(struct.pack('>BBHHHBBH4s4s', 0x45, 0, 20 + len(esp), 0, 0x4000, 64, 50, 0, bytes([10, 8, 0, 2]), bytes([10, 8, 0, 1])))
    s = sum(struct.unpack('>10H', bytes(hdr)))
    while s > 0xffff: s = (s & 0xffff) + (s >> 16)
    hdr[10:12] = struct.pack('>H', ~s & 0xffff)
    out.append((bytes(hdr) + esp).hex())
print(' '.join(out))
`
    const texts = ['from python', 'another one', 'x']
    const sealed = execFileSync('/usr/bin/python3', ['-c', script, KEY.toString('hex'), String(SPI), esn ? '1' : '0', ...texts.map((t) => inner(t).toString('hex'))], {encoding: 'utf8'})
      .trim()
      .split(' ')
      .map((h) => Buffer.from(h, 'hex'))
    const window = new ReplayWindow()
    if (esn) window.update(1n << 32n) // where the Python sender's numbers are
    const opener = new EspOpener(new EspSa({spi: SPI, key: KEY, esn}), window)
    for (const [i, p] of sealed.entries()) {
      const out = {offset: 0, length: 0}
      expect(opener.open(p, 0, p.length, out)).toBeNull()
      expect(p.subarray(out.offset, out.offset + out.length).toString('hex')).toBe(inner(texts[i]).toString('hex'))
    }
    // And a flipped bit in what Python sealed is refused.
    const bad = Buffer.from(sealed[0])
    bad[bad.length - 1] ^= 1
    expect(new EspOpener(new EspSa({spi: SPI, key: KEY, esn}), new ReplayWindow()).open(bad, 0, bad.length, {offset: 0, length: 0})).toBe('authentication')
  })
})
