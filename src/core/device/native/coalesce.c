/* TCP coalescing on TUN writes; see coalesce.h. */
#define _GNU_SOURCE
#include "coalesce.h"

#include <errno.h>
#include <linux/virtio_net.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define IPV4_HEADER 20
#define TCP_ACK 0x10
#define TCP_PSH 0x08
/* Segments in one GSO packet at most (and the payloads' iovecs). 64 KiB is the other bound. */
#define MAX_SEGMENTS 64

/* A TCP segment the coalescer may merge: IPv4 without options, not a fragment, ACK (+PSH). */
typedef struct segment {
  const uint8_t *ip;
  const uint8_t *tcp;
  uint32_t thl;  /* TCP header length */
  uint32_t plen; /* payload length */
  uint32_t seq;
} segment;

static uint32_t be32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static uint32_t fold64(uint64_t acc);

/*
 * One's complement sum of b[0, n) as big-endian 16-bit words, added to acc, not folded. The
 * bulk goes 4 bytes at a time in the machine's byte order and is swapped once at the end (RFC
 * 1071 2(B): the sum does not depend on byte order): it was 8% of a busy node's time bytewise.
 */
static uint64_t sum16(const uint8_t *b, uint32_t n, uint64_t acc) {
  uint64_t native = 0;
  uint32_t w[4];
  while (n >= 16) {
    memcpy(w, b, 16);
    native += (uint64_t)w[0] + w[1] + w[2] + w[3];
    b += 16;
    n -= 16;
  }
  while (n >= 4) {
    memcpy(w, b, 4);
    native += w[0];
    b += 4;
    n -= 4;
  }
  uint32_t folded = fold64(native);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  folded = ((folded & 0xff) << 8) | (folded >> 8);
#endif
  acc += folded;
  while (n >= 2) { /* what is left starts at an even offset: still whole big-endian words */
    acc += (uint32_t)b[0] << 8 | b[1];
    b += 2;
    n -= 2;
  }
  if (n) acc += (uint32_t)b[0] << 8;
  return acc;
}

static uint32_t fold64(uint64_t acc) {
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  return (uint32_t)acc;
}

/*
 * Both checksums of a segment verify. Needed because the merged packet gets fresh ones: a
 * segment damaged on the way (gre and ipip have no integrity check of their own) must reach
 * the kernel as it is, to be dropped there, not be made valid by us.
 */
static bool checksums_ok(const uint8_t *p, uint32_t len) {
  if (fold64(sum16(p, IPV4_HEADER, 0)) != 0xffff) return false;
  uint64_t acc = sum16(p + 12, 8, 6 + (len - IPV4_HEADER)); /* pseudo header: addresses, protocol, length */
  return fold64(sum16(p + IPV4_HEADER, len - IPV4_HEADER, acc)) == 0xffff;
}

static bool as_segment(const inner_packet *q, segment *s) {
  const uint8_t *p = q->p;
  if (q->len < IPV4_HEADER + 20 || p[0] != 0x45 || p[9] != 6) return false;
  if ((p[6] & 0xbf) != 0 || p[7] != 0) return false; /* MF, an offset (a fragment) or the reserved bit */
  const uint8_t *t = p + IPV4_HEADER;
  const uint32_t thl = (uint32_t)(t[12] >> 4) * 4;
  if (thl < 20 || IPV4_HEADER + thl >= q->len) return false; /* no payload: nothing to merge */
  if ((t[12] & 0x0f) != 0 || (t[13] & ~(TCP_ACK | TCP_PSH)) != 0 || (t[13] & TCP_ACK) == 0) return false;
  if (t[18] != 0 || t[19] != 0) return false; /* urgent pointer */
  if (!checksums_ok(p, q->len)) return false;
  s->ip = p;
  s->tcp = t;
  s->thl = thl;
  s->plen = q->len - IPV4_HEADER - thl;
  s->seq = be32(t + 4);
  return true;
}

/*
 * Whether n continues the run that starts at f, has `count` segments of gso bytes so far (the
 * last one `last`) and `bytes` of payload: the same flow and headers but for the sequence
 * number (and PSH), contiguous, every segment but the last exactly gso bytes long.
 */
static bool continues(const segment *f, const segment *last, const segment *n, uint32_t count, uint32_t bytes,
                      uint32_t gso) {
  const uint8_t *a = f->ip, *b = n->ip;
  if (count == MAX_SEGMENTS || last->plen != gso || n->plen > gso) return false;
  if ((last->tcp[13] & TCP_PSH) != 0) return false; /* a pushed segment ends its run */
  if (IPV4_HEADER + f->thl + bytes + n->plen > 0xffff) return false;
  if (a[1] != b[1] || a[8] != b[8] || (a[6] & 0x40) != (b[6] & 0x40)) return false; /* TOS, TTL, DF */
  if (memcmp(a + 12, b + 12, 8) != 0) return false;                                 /* addresses */
  /* Without DF the ids must count up, as the kernel's segmentation will number them. */
  if ((a[6] & 0x40) == 0 && (uint16_t)(((a[4] << 8) | a[5]) + count) != (uint16_t)((b[4] << 8) | b[5])) return false;
  if (f->thl != n->thl || n->seq != f->seq + bytes) return false;
  if (memcmp(f->tcp, n->tcp, 4) != 0 || memcmp(f->tcp + 8, n->tcp + 8, 4) != 0) return false; /* ports, ack */
  if (memcmp(f->tcp + 14, n->tcp + 14, 2) != 0) return false;                                /* window */
  return memcmp(f->tcp + 20, n->tcp + 20, f->thl - 20) == 0;                                 /* options */
}

static uint32_t fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return sum;
}

static int writev_all(int fd, struct iovec *iov, int n) {
  for (;;) {
    if (writev(fd, iov, n) >= 0) return 0;
    if (errno != EINTR) return errno;
  }
}

/* Writes the run of `count` segments starting at f (the payloads' segments in seg) as one GSO packet. */
static int write_run(int fd, const segment *seg, uint32_t count, uint32_t bytes, uint32_t gso) {
  const segment *f = &seg[0];
  uint8_t h[IPV4_HEADER + 60];
  struct virtio_net_hdr v = {
      .flags = VIRTIO_NET_HDR_F_NEEDS_CSUM,
      .gso_type = VIRTIO_NET_HDR_GSO_TCPV4,
      .hdr_len = (uint16_t)(IPV4_HEADER + f->thl),
      .gso_size = (uint16_t)gso,
      .csum_start = IPV4_HEADER,
      .csum_offset = 16,
  };
  const uint32_t total = IPV4_HEADER + f->thl + bytes;
  memcpy(h, f->ip, IPV4_HEADER + f->thl);
  h[2] = (uint8_t)(total >> 8);
  h[3] = (uint8_t)total;
  h[10] = h[11] = 0;
  uint32_t sum = 0;
  for (int i = 0; i < IPV4_HEADER; i += 2) sum += ((uint32_t)h[i] << 8) | h[i + 1];
  sum = ~fold(sum) & 0xffff;
  h[10] = (uint8_t)(sum >> 8);
  h[11] = (uint8_t)sum;
  uint8_t *t = h + IPV4_HEADER;
  t[13] |= seg[count - 1].tcp[13] & TCP_PSH;
  /* NEEDS_CSUM: the checksum field holds the pseudo-header sum, and the kernel adds the rest. */
  sum = 6 + (total - IPV4_HEADER);
  for (int i = 12; i < 20; i += 2) sum += ((uint32_t)h[i] << 8) | h[i + 1];
  sum = fold(sum);
  t[16] = (uint8_t)(sum >> 8);
  t[17] = (uint8_t)sum;

  struct iovec iov[2 + MAX_SEGMENTS];
  iov[0] = (struct iovec){&v, sizeof v};
  iov[1] = (struct iovec){h, IPV4_HEADER + f->thl};
  for (uint32_t i = 0; i < count; i++) iov[2 + i] = (struct iovec){(void *)(seg[i].tcp + seg[i].thl), seg[i].plen};
  return writev_all(fd, iov, (int)(2 + count));
}

static int write_one(int fd, bool vnet, const inner_packet *q) {
  static const struct virtio_net_hdr none; /* no GSO, checksums complete */
  struct iovec iov[2] = {{(void *)&none, sizeof none}, {(void *)q->p, q->len}};
  return vnet ? writev_all(fd, iov, 2) : writev_all(fd, iov + 1, 1);
}

uint32_t tun_write_packets(int fd, bool vnet, const inner_packet *pkts, uint32_t n, uint64_t *gso_packets,
                           uint64_t *gso_segments) {
  uint32_t refused = 0;
  segment run[MAX_SEGMENTS];
  uint32_t i = 0;
  while (i < n) {
    uint32_t count = 0, bytes = 0, gso = 0;
    if (vnet && as_segment(&pkts[i], &run[0])) {
      count = 1;
      bytes = gso = run[0].plen;
      segment next;
      while (i + count < n && as_segment(&pkts[i + count], &next) && continues(&run[0], &run[count - 1], &next, count, bytes, gso)) {
        run[count++] = next;
        bytes += next.plen;
      }
    }
    if (count > 1) {
      if (write_run(fd, run, count, bytes, gso) != 0) {
        refused += count;
      } else {
        (*gso_packets)++;
        *gso_segments += count;
      }
      i += count;
    } else {
      if (write_one(fd, vnet, &pkts[i]) != 0) refused++;
      i++;
    }
  }
  return refused;
}
