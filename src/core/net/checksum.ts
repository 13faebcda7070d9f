/**
 * The Internet checksum (RFC 1071): the 16-bit one's complement of the one's complement sum of
 * the data taken as big-endian 16-bit words, an odd last byte padded with a zero byte.
 *
 * Words are added into a plain JS number and folded once at the end: each word is < 2^16, so
 * even a 64 KiB datagram sums to < 2^31 and a double holds any realistic length exactly
 * (folding is only needed past 2^37 bytes). No allocation; the span is trusted (the caller
 * bounds-checks it).
 */

/** One's complement sum of buf[start, end) folded to 16 bits, before the final complement. */
export function onesComplementSum(buf: Buffer, start: number, end: number, initial = 0): number {
  let sum = initial
  let i = start
  const evenEnd = end - ((end - start) & 1)
  for (; i < evenEnd; i += 2) sum += (buf[i] << 8) | buf[i + 1]
  if (i < end) sum += buf[i] << 8 // odd length: the last byte is the high half of a zero-padded word
  // Fold the carries back in (end-around carry); twice is enough for any sum < 2^32, loop for more.
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000)
  return sum
}

/** RFC 1071 checksum of buf[start, end): what goes into a checksum field that was zero while summing. */
export function internetChecksum(buf: Buffer, start: number, end: number): number {
  return ~onesComplementSum(buf, start, end) & 0xffff
}

/** True if buf[start, end), checksum field included, sums to all ones: the data is intact. */
export function checksumValid(buf: Buffer, start: number, end: number): boolean {
  return onesComplementSum(buf, start, end) === 0xffff
}
