/**
 * The client's half of native records (src/core/carrier/native/stream.c), written in JS by the
 * fuzzer so it can say what the real client never would: frames split across records, unknown
 * frame and content types, KeyUpdates, padding, damaged tags. Same keys and layout as stream.c:
 * key and IV by HKDF-Expand-Label from the exported traffic secret, TLS 1.3 application data
 * records with the real content type inside, nonce = IV xor record number.
 */
import {createCipheriv, createHmac} from 'node:crypto'

export const CT_ALERT = 21
export const CT_HANDSHAKE = 22
export const CT_APPLICATION = 23
export const REC_HDR = 5
export const REC_TAG = 16
export const REC_CONTENT_MAX = 16384

/** HKDF-Expand-Label(secret, label, "", len) with SHA-256, len <= 32 (RFC 8446 7.1). */
function expandLabel(secret: Buffer, label: string, len: number): Buffer {
  const full = Buffer.from(`tls13 ${label}`)
  const info = Buffer.concat([Buffer.from([0, len, full.length]), full, Buffer.from([0, 1])])
  return createHmac('sha256', secret).update(info).digest().subarray(0, len)
}

export class RecordWriter {
  private secret: Buffer
  private key!: Buffer
  private iv!: Buffer
  private seq = 0n
  records = 0

  constructor(secret: Buffer) {
    this.secret = Buffer.from(secret)
    this.rekey()
  }

  private rekey(): void {
    this.key = expandLabel(this.secret, 'key', 32)
    this.iv = expandLabel(this.secret, 'iv', 12)
    this.seq = 0n
  }

  /**
   * One record around `content` with inner content type `type` and `pad` zero bytes. `damage`
   * flips a byte of the sealed record (header, ciphertext or tag) after sealing.
   */
  seal(content: Buffer, type: number, pad = 0, damage?: {at: number}): Buffer {
    const plain = Buffer.alloc(content.length + 1 + pad)
    content.copy(plain)
    plain[content.length] = type
    const clen = plain.length + REC_TAG
    const header = Buffer.from([CT_APPLICATION, 3, 3, clen >> 8, clen & 0xff])
    const nonce = Buffer.from(this.iv)
    for (let i = 0; i < 8; i++) nonce[11 - i] ^= Number((this.seq >> BigInt(8 * i)) & 0xffn)
    this.seq++
    this.records++
    const c = createCipheriv('aes-256-gcm', this.key, nonce)
    c.setAAD(header)
    const out = Buffer.concat([header, c.update(plain), c.final(), c.getAuthTag()])
    if (damage !== undefined) out[damage.at % out.length] ^= 0x5a
    return out
  }

  /** A KeyUpdate record (4.6.3) under the current key; from then on the next key. */
  keyUpdate(requested: boolean): Buffer {
    const rec = this.seal(Buffer.from([24, 0, 0, 1, requested ? 1 : 0]), CT_HANDSHAKE)
    this.secret = expandLabel(this.secret, 'traffic upd', 32)
    this.rekey()
    return rec
  }
}
