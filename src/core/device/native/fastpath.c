/*
 * The native fast path: the common packet of a datagram transport never enters JavaScript.
 *
 * Why: an idle process that enters JS on a wakeup pays 30 to 50 us for it (npm run
 * bench:wakeup), and a round trip through the tunnel has four wakeups; that alone put the
 * agent's idle RTT above OpenVPN's. Here the TUN device's and the carrier socket's pollers (the
 * same uv_poll_t handles, on the main loop) run a filter on each batch before JS would see it:
 *
 *   TUN batch:      well-formed IPv4 -> session (node: by inner destination; client: the only
 *                   one) -> encapsulate in place -> sendmmsg to the session's endpoint
 *   socket batch:   session (node: by GRE key, or by endpoint for identity; client: the only
 *                   one, from the node's endpoint only) -> decapsulate -> well-formed IPv4,
 *                   not a keepalive, node: from the session's own tunnel address -> TUN
 *
 * Two kinds of datagram are dropped here, counted per session, because they are nobody's and
 * a stranger can send them at will: ESP whose ICV does not verify, and a found session's
 * datagram from an endpoint it has not proven that cannot be a keepalive. Anything else (no
 * native session, an endpoint not learned yet, a keepalive, GRE with checksum or sequence,
 * anything malformed) is left in the ring, moved to its front, and JS handles it exactly as before: the JS data path stays the reference and keeps every check and
 * counter for the unusual packet. JS owns the session table's contents (set/remove) and reads
 * the counters (take). Everything runs on the main thread, so nothing here needs a lock.
 *
 * Codecs: identity (ipip: the payload is the inner packet), gre (RFC 2784 with the RFC 2890
 * key, no checksum, no sequence number: 8 bytes) and esp-gcm-in-gre (ipsec-over-gre: ESP with
 * AES-256-GCM in esp.c, in that GRE header keyed with the receiver's SPI).
 *
 * JS API:
 *   create(role, mtu) -> handle                role: 0 node, 1 client
 *   attach(handle, tunHandle, socketHandle)    the fast path runs on their batches from now on
 *        (socketHandle null: no datagram socket, stream sessions only)
 *   set(handle, address, codec, key, endpointAddr, endpointPort)   add or update a session
 *   setEsp(handle, address, endpointAddr, endpointPort, {outbound, inbound})   an esp session
 *        (see FastCodec esp-gcm-in-gre in src/core/transport/contract.ts)
 *   setStream(handle, address, stream)   a tls session, carried on its own connection (a handle
 *        of stream.c): TUN packets to it become Data frames in one record per batch; its Data
 *        frames come back through fast_stream_take
 *   remove(handle, address)
 *   take(handle, address, Float64Array(7)) -> boolean
 *        [txPackets, txBytes, rxPackets, rxBytes] since the last take, then the time of the
 *        last payload received in ms since the epoch (0: none since), then the datagrams
 *        dropped here since: [authentication (forged ESP), endpoint (from an endpoint the
 *        session has not proven, and no keepalive)]
 *   stats(handle) -> {sessions, txPackets, rxPackets, sendDrops, tunWriteDrops, tunGsoPackets, tunGsoSegments}
 *   close(handle)                              detaches; idempotent
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fastpath.h"

#define GRE_HEADER 8          /* flags+version, protocol type, key */
#define KEEPALIVE_PROTOCOL 253 /* src/core/nat/keepalive.ts: always JS's */
#define KEEPALIVE_PACKET 52    /* its IPv4 header and 32-byte payload */
#define IPV4_MIN_HEADER 20
#define MIN_MTU 68
#define MAX_MTU 65535

static const napi_type_tag FAST_TAG = {0x6167656e745f6661ULL, 0x73745f7061746821ULL};

/* ---------- small helpers ---------- */

static void throw_code(napi_env env, const char *code, const char *msg) {
  poller_throw_error(env, code, msg);
}

static bool ipv4_ok(const uint8_t *p, uint32_t len) {
  if (len < IPV4_MIN_HEADER || p[0] >> 4 != 4) return false;
  uint32_t ihl = (uint32_t)(p[0] & 15) * 4;
  if (ihl < IPV4_MIN_HEADER || ihl > len) return false;
  return (((uint32_t)p[2] << 8) | p[3]) == len;
}

static uint32_t be32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static uint64_t endpoint_key(uint32_t addr, uint16_t port) {
  return ((uint64_t)addr << 16) | port;
}

/* ---------- the session maps ---------- */

static uint32_t slot_of(const map *m, uint64_t key) {
  return (uint32_t)((key * 0x9E3779B97F4A7C15ULL) >> 32) & m->mask;
}

static fast_session *lookup(const fast_path *fp, const map *m, uint64_t key) {
  if (m->e == NULL) return NULL;
  /* The maps are at most half full (rebuild), so a miss ends at an empty slot; the bound is a
   * safety net, never reached. */
  for (uint32_t i = slot_of(m, key), probes = 0; probes <= m->mask; i = (i + 1) & m->mask, probes++) {
    const map_entry *e = &m->e[i];
    if (e->idx < 0) return NULL;
    if (e->key == key) return &fp->s[e->idx];
  }
  return NULL;
}

static void insert(map *m, uint64_t key, int32_t idx) {
  for (uint32_t i = slot_of(m, key), probes = 0; probes <= m->mask; i = (i + 1) & m->mask, probes++) {
    map_entry *e = &m->e[i];
    if (e->idx < 0) {
      e->key = key;
      e->idx = idx;
      return;
    }
    if (e->key == key) return; /* the first session keeps it; the other's packets go to JS */
  }
}

static bool map_reset(map *m, uint32_t size) {
  map_entry *e = malloc(sizeof *e * size);
  if (e == NULL) return false;
  for (uint32_t i = 0; i < size; i++) e[i].idx = -1;
  free(m->e);
  m->e = e;
  m->mask = size - 1;
  return true;
}

/* Rebuilds all three maps from the session array; false if out of memory (maps unchanged). */
static bool rebuild(fast_path *fp) {
  /* Keys: one address per session, and per ESP session up to ESP_MAX_INBOUND SPIs. Every map
   * gets room for twice the most keys any of them holds. */
  uint32_t keys = fp->n;
  for (uint32_t i = 0; i < fp->n; i++)
    if (fp->s[i].codec == CODEC_ESP && fp->s[i].esp->n_in > 1) keys += fp->s[i].esp->n_in - 1;
  uint32_t size = 16;
  while (size < keys * 2 + 2) size <<= 1;
  map a = {0}, k = {0}, e = {0};
  if (!map_reset(&a, size) || !map_reset(&k, size) || !map_reset(&e, size)) {
    free(a.e);
    free(k.e);
    free(e.e);
    return false;
  }
  fp->n_gre = fp->n_identity = 0;
  for (uint32_t i = 0; i < fp->n; i++) {
    const fast_session *s = &fp->s[i];
    insert(&a, s->address, (int32_t)i);
    if (s->codec == CODEC_GRE) {
      fp->n_gre++;
      insert(&k, s->key, (int32_t)i);
    } else if (s->codec == CODEC_ESP) {
      fp->n_gre++; /* found by GRE key, which is the SPI of one of its inbound SAs */
      for (uint32_t j = 0; j < s->esp->n_in; j++) insert(&k, s->esp->in[j].spi, (int32_t)i);
    } else if (s->codec == CODEC_STREAM) {
      /* found by address only: its packets come on its own connection */
    } else {
      fp->n_identity++;
      if (s->ep_addr != 0) insert(&e, endpoint_key(s->ep_addr, s->ep_port), (int32_t)i);
    }
  }
  free(fp->by_addr.e);
  free(fp->by_key.e);
  free(fp->by_ep.e);
  fp->by_addr = a;
  fp->by_key = k;
  fp->by_ep = e;
  return true;
}

/* ---------- TUN -> carrier ---------- */

bool fast_lane_reserve(lane *l, uint32_t slots) {
  if (slots <= l->batch_cap) return true;
  struct mmsghdr *m = realloc(l->msgs, sizeof *m * slots);
  if (m != NULL) l->msgs = m;
  struct iovec *v = realloc(l->iov, sizeof *v * slots * 2);
  if (v != NULL) l->iov = v;
  uint8_t *h = realloc(l->hdr, (size_t)slots * 20);
  if (h != NULL) l->hdr = h;
  struct sockaddr_in *a = realloc(l->names, sizeof *a * slots);
  if (a != NULL) l->names = a;
  uint8_t *f = realloc(l->slow, slots);
  if (f != NULL) l->slow = f;
  inner_packet *q = realloc(l->pending, sizeof *q * slots);
  if (q != NULL) l->pending = q;
  tls_stream **d = realloc(l->dirty, sizeof *d * slots);
  if (d != NULL) l->dirty = d;
  if (m == NULL || v == NULL || h == NULL || a == NULL || f == NULL || q == NULL || d == NULL) return false;
  l->batch_cap = slots;
  return true;
}

void fast_lane_free(lane *l) {
  free(l->msgs);
  free(l->iov);
  free(l->hdr);
  free(l->names);
  free(l->slow);
  free(l->pending);
  free(l->dirty);
  memset(l, 0, sizeof *l);
}

/* Sends msgs[0, n): what the kernel refuses is dropped, as by a router, and counted both in
 * the socket's send errors (by errno) and here. */
static void send_all(lane *l, uint32_t n) {
  uint32_t sent = 0;
  net_send_messages(l->sock, l->msgs, n, &sent);
  FAST_ADD(l->c.send_drops, n - sent);
  FAST_ADD(l->c.tx_packets, n);
}

/* A GRE header with only the key: no checksum, no sequence number, version 0, IPv4 inside. */
static void write_gre(uint8_t *h, uint32_t key) {
  h[0] = 0x20;
  h[1] = 0x00;
  h[2] = 0x08;
  h[3] = 0x00;
  h[4] = (uint8_t)(key >> 24);
  h[5] = (uint8_t)(key >> 16);
  h[6] = (uint8_t)(key >> 8);
  h[7] = (uint8_t)key;
}

/* Moves the packets still marked slow to the front of the batch; returns how many. */
static uint32_t compact(const lane *l, const batch_view *b, uint32_t count) {
  uint32_t left = 0;
  for (uint32_t i = 0; i < count; i++) {
    if (!l->slow[i]) continue;
    if (left != i) {
      memmove(b->ring + (size_t)left * b->slot_size + b->headroom, b->ring + (size_t)i * b->slot_size + b->headroom,
              b->lengths[i]);
      b->lengths[left] = b->lengths[i];
      if (b->addrs != NULL) {
        b->addrs[left] = b->addrs[i];
        b->ports[left] = b->ports[i];
      }
    }
    left++;
  }
  return left;
}

/*
 * Only the main lane may touch ESP state (its sequence counter and replay window are shared
 * with JS, and an EVP context is not thread-safe) or a tls stream (stream.c is main-thread
 * code): a worker passes those sessions' packets to the main thread.
 */
static bool lane_carries(const lane *l, const fast_session *s) {
  return l->is_main || s->codec == CODEC_IDENTITY || s->codec == CODEC_GRE;
}

uint32_t fast_tun_batch(fast_path *fp, lane *l, const batch_view *b, uint32_t count) {
  if (fp->closed || fp->n == 0) return count;
  if (!fast_lane_reserve(l, count)) return count;
  const bool client = fp->role == ROLE_CLIENT;
  const bool can_send = l->sock != NULL && !l->sock->closed;
  fast_session *only = client && fp->n == 1 ? &fp->s[0] : NULL;
  uint32_t nsend = 0, ndirty = 0;
  for (uint32_t i = 0; i < count; i++) {
    uint8_t *pkt = b->ring + (size_t)i * b->slot_size + b->headroom;
    uint32_t len = b->lengths[i];
    l->slow[i] = 1;
    if (len > fp->mtu || !ipv4_ok(pkt, len)) continue;
    fast_session *s = client ? only : lookup(fp, &fp->by_addr, be32(pkt + 16));
    if (s == NULL || !lane_carries(l, s)) continue;
    if (s->codec == CODEC_STREAM) {
      /* One record per stream per batch: flushed below. A closed stream or a full queue drops. */
      tls_stream *st = s->stream;
      const bool was_dirty = stream_dirty(st);
      l->slow[i] = 0;
      if (!stream_queue_data(st, pkt, len)) {
        l->c.send_drops++;
        continue;
      }
      if (!was_dirty) l->dirty[ndirty++] = st;
      s->tx_packets++; /* main lane only, and stream sessions never reach a worker */
      s->tx_bytes += len;
      l->c.tx_packets++;
      continue;
    }
    if (!can_send || s->ep_addr == 0) continue;
    uint8_t *out = pkt;
    uint32_t olen = len;
    if (s->codec == CODEC_ESP) {
      esp_codec *e = s->esp;
      const uint8_t *slot_end = b->ring + (size_t)(i + 1) * b->slot_size;
      if (!e->has_out || b->headroom < GRE_HEADER + ESP_HEADROOM || pkt + len + ESP_TAILROOM > slot_end) continue;
      const esp_seal_result r = esp_seal(&e->out, e->src, e->dst, pkt, len, &out, &olen);
      if (r == ESP_REFUSED) continue;
      if (r == ESP_CONSUMED) { /* neither ours to send nor JS's to seal again: dropped */
        l->slow[i] = 0;
        l->c.send_drops++;
        continue;
      }
      write_gre(out - GRE_HEADER, e->out.spi);
      out -= GRE_HEADER;
      olen += GRE_HEADER;
    } else if (s->codec == CODEC_GRE) {
      if (b->headroom < GRE_HEADER) continue;
      write_gre(out - GRE_HEADER, s->key);
      out -= GRE_HEADER;
      olen += GRE_HEADER;
    }
    net_prepare_send(l->sock, &l->msgs[nsend].msg_hdr, &l->iov[2 * nsend], l->hdr + (size_t)nsend * 20,
                     &l->names[nsend], out, olen, s->ep_addr, s->ep_port);
    nsend++;
    FAST_ADD(s->tx_packets, 1);
    FAST_ADD(s->tx_bytes, len);
    l->slow[i] = 0;
  }
  if (nsend > 0) send_all(l, nsend);
  for (uint32_t j = 0; j < ndirty; j++) stream_flush(l->dirty[j]);
  /* Only now (the datagrams pointed into the slots) move what JS must see to the front. */
  return compact(l, b, count);
}

/* ---------- carrier -> TUN ---------- */

/* A GRE header the fast path handles: key present, nothing else, IPv4 inside. */
static bool gre_plain(const uint8_t *d, uint32_t len) {
  return len >= GRE_HEADER && d[0] == 0x20 && d[1] == 0x00 && d[2] == 0x08 && d[3] == 0x00;
}

static esp_sa *inbound_sa(esp_codec *e, uint32_t spi) {
  for (uint32_t i = 0; i < e->n_in; i++)
    if (e->in[i].spi == spi) return &e->in[i];
  return NULL;
}

/* What the fast path does with one datagram. */
typedef enum {
  RX_SLOW, /* left for JS, as it arrived */
  RX_TUN,  /* *out is its inner packet, for the TUN */
  RX_DROP, /* dropped here and counted: nobody's (forged ESP, or not a keepalive from a new endpoint) */
} rx_verdict;

/* An inner packet that might be a keepalive (JS verifies it): anything else from an endpoint a
 * session has not proven is dropped. */
static bool keepalive_shaped(const uint8_t *inner, uint32_t len) {
  return len == KEEPALIVE_PACKET && inner[9] == KEEPALIVE_PROTOCOL;
}

static rx_verdict receive_one(fast_path *fp, const lane *l, uint8_t *d, uint32_t len, uint32_t addr, uint16_t port,
                              double now, inner_packet *out) {
  fast_session *s = NULL;
  if (fp->role == ROLE_CLIENT) {
    if (fp->n == 1) s = &fp->s[0];
  } else if (fp->n_gre > 0 && gre_plain(d, len)) {
    s = lookup(fp, &fp->by_key, be32(d + 4));
  } else if (fp->n_identity > 0) {
    s = lookup(fp, &fp->by_ep, endpoint_key(addr, port));
  }
  if (s == NULL || s->ep_addr == 0 || !lane_carries(l, s)) return RX_SLOW;
  /* Data only from the session's current endpoint, which only an authenticated keepalive (JS)
   * sets. From anywhere else only a keepalive can be accepted: whatever cannot be one costs the
   * node no JavaScript (a stranger who knows a GRE key or an SPI can send these at will). */
  const bool proven = addr == s->ep_addr && port == s->ep_port;
  const uint8_t *inner = d;
  uint32_t ilen = len;
  esp_sa *sa = NULL;
  esp_opened opened;
  if (s->codec == CODEC_GRE) {
    if (!gre_plain(d, len) || be32(d + 4) != s->key) return RX_SLOW;
    inner += GRE_HEADER;
    ilen -= GRE_HEADER;
  } else if (s->codec == CODEC_ESP) {
    /* As the plugin's decap: an ESP packet at most its overhead over the MTU. */
    if (!gre_plain(d, len) || len - GRE_HEADER > fp->mtu + ESP_HEADROOM + ESP_TAILROOM) return RX_SLOW;
    if ((sa = inbound_sa(s->esp, be32(d + 4))) == NULL) return RX_SLOW;
    switch (esp_open(sa, d + GRE_HEADER, len - GRE_HEADER, &opened)) {
    case ESP_OPENED:
      break;
    case ESP_FORGED: /* one AES-GCM pass in C, not a decryption in JavaScript */
      FAST_ADD(s->auth_drops, 1);
      return RX_DROP;
    default:
      return RX_SLOW;
    }
    inner = opened.inner;
    ilen = opened.inner_len;
  } else if (!proven) {
    return RX_SLOW; /* identity: found by endpoint, so never here */
  }
  if (!proven) {
    if (sa != NULL) esp_reject(sa, &opened); /* the window moves only once JS takes it */
    if (ilen >= IPV4_MIN_HEADER && keepalive_shaped(inner, ilen)) return RX_SLOW;
    FAST_ADD(s->endpoint_drops, 1);
    return RX_DROP;
  }
  /* A client may only speak for its own tunnel address. */
  if (ilen > fp->mtu || !ipv4_ok(inner, ilen) || inner[9] == KEEPALIVE_PROTOCOL ||
      (fp->role == ROLE_NODE && be32(inner + 12) != s->address)) {
    if (sa != NULL) esp_reject(sa, &opened); /* JS gets the packet as it arrived */
    return RX_SLOW;
  }
  if (sa != NULL) esp_accept(sa, &opened);
  out->p = inner;
  out->len = ilen;
  FAST_ADD(s->rx_packets, 1);
  FAST_ADD(s->rx_bytes, ilen);
  __atomic_store(&s->last_rx_ms, &now, __ATOMIC_RELAXED);
  return RX_TUN;
}

/* Writes inner packets to the lane's TUN descriptor; what the kernel refuses is counted. */
static void write_tun(lane *l, const inner_packet *pkts, uint32_t n) {
  uint64_t gso_packets = 0, gso_segments = 0;
  const uint32_t dropped = tun_write_packets(l->tun_fd, l->vnet, pkts, n, &gso_packets, &gso_segments);
  FAST_ADD(l->c.tun_write_drops, dropped);
  FAST_ADD(l->c.rx_packets, n);
  FAST_ADD(l->c.gso_packets, gso_packets);
  FAST_ADD(l->c.gso_segments, gso_segments);
}

uint32_t fast_net_batch(fast_path *fp, lane *l, const batch_view *b, uint32_t count) {
  if (fp->closed || fp->n == 0 || l->tun_fd < 0) return count;
  if (!fast_lane_reserve(l, count)) return count;
  const double now = agent_now_ms();
  uint32_t taken = 0;
  for (uint32_t j = 0; j < count; j++) {
    uint8_t *d = b->ring + (size_t)j * b->slot_size + b->headroom;
    const rx_verdict v = receive_one(fp, l, d, b->lengths[j], b->addrs[j], b->ports[j], now, &l->pending[taken]);
    l->slow[j] = v == RX_SLOW;
    if (v == RX_TUN) taken++;
  }
  /* Written before the slow ones move down over the slots they were in. Queue full or device
   * gone: dropped and counted, as a router would. */
  if (taken > 0) write_tun(l, l->pending, taken);
  return compact(l, b, count);
}

/* The main lane on the main thread's pollers: the poller_filter callbacks. */
static void main_lane_sync(fast_path *fp) {
  fp->main.tun_fd = fp->tun != NULL && !fp->tun->closed ? fp->tun->fd : -1;
  fp->main.vnet = fp->tun != NULL && tun_vnet(fp->tun);
}

static uint32_t on_tun_batch(void *ctx, poller *p, uint32_t count) {
  fast_path *fp = ctx;
  const batch_view b = {.ring = p->ring, .lengths = p->lengths, .slot_size = p->slot_size, .headroom = p->headroom};
  return fast_tun_batch(fp, &fp->main, &b, count);
}

static uint32_t on_net_batch(void *ctx, poller *p, uint32_t count) {
  fast_path *fp = ctx;
  batch_view b = {.ring = p->ring, .lengths = p->lengths, .slot_size = p->slot_size, .headroom = p->headroom};
  net_batch_meta(p, &b.addrs, &b.ports);
  main_lane_sync(fp);
  return fast_net_batch(fp, &fp->main, &b, count);
}

/* ---------- a tls session's connection -> TUN (called by stream.c) ---------- */

void fast_stream_flush(fast_path *fp) {
  const uint32_t n = fp->n_stream_in;
  fp->n_stream_in = 0;
  main_lane_sync(fp);
  if (n == 0 || fp->main.tun_fd < 0) return;
  write_tun(&fp->main, fp->stream_in, n);
}

bool fast_stream_take(fast_path *fp, uint32_t address, const uint8_t *pkt, uint32_t len) {
  if (fp->closed || fp->tun == NULL || fp->tun->closed) return false;
  fast_session *s = lookup(fp, &fp->by_addr, address);
  /* A client may only speak for its own tunnel address. */
  if (s == NULL || s->codec != CODEC_STREAM || len > fp->mtu || !ipv4_ok(pkt, len) || pkt[9] == KEEPALIVE_PROTOCOL ||
      (fp->role == ROLE_NODE && be32(pkt + 12) != s->address)) {
    return false;
  }
  if (fp->n_stream_in == sizeof fp->stream_in / sizeof fp->stream_in[0]) fast_stream_flush(fp);
  if (fp->n_stream_in == 0) fp->stream_now = agent_now_ms();
  fp->stream_in[fp->n_stream_in].p = pkt;
  fp->stream_in[fp->n_stream_in].len = len;
  fp->n_stream_in++;
  s->rx_packets++;
  s->rx_bytes += len;
  s->last_rx_ms = fp->stream_now;
  return true;
}

/* ---------- lifetime ---------- */

/* A poller is about to be freed (environment teardown): forget it. */
static void forget_poller(void *ctx, poller *p) {
  fast_path *fp = ctx;
  if (fp->tun == p) fp->tun = NULL;
  if (fp->sock == p) fp->sock = fp->main.sock = NULL;
  p->filter = NULL;
  p->filter_ctx = NULL;
  p->filter_release = NULL;
}

static void free_esp(napi_env env, esp_codec *e) {
  if (e == NULL) return;
  if (e->has_out) esp_sa_free(&e->out);
  if (e->out_ref != NULL) napi_delete_reference(env, e->out_ref);
  for (uint32_t i = 0; i < e->n_in; i++) {
    esp_sa_free(&e->in[i]);
    if (e->in_ref[i] != NULL) napi_delete_reference(env, e->in_ref[i]);
  }
  free(e);
}

/* What a session holds beyond its struct: ESP state, or its stream (unbound, let go). */
static void free_extras(napi_env env, fast_session *s) {
  free_esp(env, s->esp);
  s->esp = NULL;
  if (s->stream != NULL) {
    stream_bind(s->stream, NULL, 0);
    stream_release(s->stream);
  }
  if (s->stream_ref != NULL) napi_delete_reference(env, s->stream_ref);
  s->stream = NULL;
  s->stream_ref = NULL;
}

static void detach(fast_path *fp) {
  fast_stop_workers(fp); /* they send and write through descriptors JS may close next */
  if (fp->tun != NULL && fp->tun->filter_ctx == fp) forget_poller(fp, fp->tun);
  if (fp->sock != NULL && fp->sock->filter_ctx == fp) forget_poller(fp, fp->sock);
  fp->tun = fp->sock = fp->main.sock = NULL;
  if (fp->tun_ref != NULL) napi_delete_reference(fp->env, fp->tun_ref);
  if (fp->sock_ref != NULL) napi_delete_reference(fp->env, fp->sock_ref);
  fp->tun_ref = fp->sock_ref = NULL;
}

static void on_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  fast_path *fp = data;
  detach(fp);
  fast_free_workers(fp);
  for (uint32_t i = 0; i < fp->n; i++) free_extras(env, &fp->s[i]);
  free(fp->s);
  free(fp->by_addr.e);
  free(fp->by_key.e);
  free(fp->by_ep.e);
  fast_lane_free(&fp->main);
  pthread_rwlock_destroy(&fp->lock);
  free(fp);
}

/* ---------- JS API ---------- */

#define NAPI_OK(env, call)                                                      \
  do {                                                                          \
    if ((call) != napi_ok) {                                                    \
      bool pending_ = false;                                                    \
      napi_is_exception_pending((env), &pending_);                              \
      if (!pending_) throw_code((env), "ERR_AGENT_FAST_NAPI", "N-API call failed"); \
      return NULL;                                                              \
    }                                                                           \
  } while (0)

fast_path *fast_get(napi_env env, napi_value v) {
  return agent_unwrap(env, v, &FAST_TAG, "not a fast path handle");
}

static napi_value fast_create(napi_env env, napi_callback_info info) {
  napi_value argv[2], obj;
  uint32_t role, mtu;
  if (!agent_args(env, info, 2, argv, "create(role, mtu)")) return NULL;
  if (!agent_get_u32(env, argv[0], &role) || !agent_get_u32(env, argv[1], &mtu)) return NULL;
  if (role > ROLE_CLIENT || mtu < MIN_MTU || mtu > MAX_MTU) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "create: role must be 0 or 1, mtu 68 to 65535");
    return NULL;
  }
  fast_path *fp = calloc(1, sizeof *fp);
  if (fp == NULL) {
    throw_code(env, "ERR_AGENT_FAST_NOMEM", "out of memory");
    return NULL;
  }
  fp->env = env;
  fp->role = (int)role;
  fp->mtu = mtu;
  fp->main.is_main = true;
  fp->main.tun_fd = -1;
  /* Writers first: the main thread's rare table change must not wait behind a stream of
   * worker batches. */
  pthread_rwlockattr_t attr;
  pthread_rwlockattr_init(&attr);
  pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&fp->lock, &attr);
  pthread_rwlockattr_destroy(&attr);
  if (!rebuild(fp) || napi_create_object(env, &obj) != napi_ok ||
      napi_type_tag_object(env, obj, &FAST_TAG) != napi_ok ||
      napi_wrap(env, obj, fp, on_finalize, NULL, NULL) != napi_ok) {
    on_finalize(env, fp, NULL);
    throw_code(env, "ERR_AGENT_FAST_NAPI", "cannot create the fast path");
    return NULL;
  }
  return obj;
}

static napi_value fast_attach(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  napi_valuetype st;
  if (!agent_args(env, info, 3, argv, "attach(handle, tun, socket)")) return NULL;
  fast_path *fp = fast_get(env, argv[0]);
  if (fp == NULL) return NULL;
  poller *tun = tun_poller(env, argv[1]);
  if (tun == NULL) return NULL;
  /* No socket (null): only stream sessions, which bring their own connections. */
  NAPI_OK(env, napi_typeof(env, argv[2], &st));
  const bool no_socket = st == napi_null || st == napi_undefined;
  poller *sock = no_socket ? NULL : net_poller(env, argv[2]);
  if (sock == NULL && !no_socket) return NULL;
  if (fp->closed || fp->tun != NULL) {
    throw_code(env, "ERR_AGENT_FAST_STATE", "the fast path is closed or attached already");
    return NULL;
  }
  if (tun->filter != NULL || (sock != NULL && sock->filter != NULL) || tun->worker_stop != NULL ||
      (sock != NULL && sock->worker_stop != NULL)) {
    throw_code(env, "ERR_AGENT_FAST_STATE", "another fast path is attached to this TUN device or socket");
    return NULL;
  }
  /* Strong references: the pollers stay allocated while they can call us. */
  NAPI_OK(env, napi_create_reference(env, argv[1], 1, &fp->tun_ref));
  if (sock != NULL) NAPI_OK(env, napi_create_reference(env, argv[2], 1, &fp->sock_ref));
  fp->tun = tun;
  fp->sock = fp->main.sock = sock;
  tun->filter = on_tun_batch;
  tun->filter_ctx = fp;
  tun->filter_release = forget_poller;
  if (sock != NULL) {
    sock->filter = on_net_batch;
    sock->filter_ctx = fp;
    sock->filter_release = forget_poller;
  }
  return NULL;
}

static int32_t index_of(const fast_path *fp, uint32_t address) {
  for (uint32_t i = 0; i < fp->n; i++)
    if (fp->s[i].address == address) return (int32_t)i;
  return -1;
}

/*
 * Adds or updates the session at want->address with want's codec, key, endpoint and ESP state
 * (taken over: freed here on failure); an existing session keeps its counters. False
 * (exception pending) when out of memory, with the table as it was.
 */
static bool upsert_locked(napi_env env, fast_path *fp, fast_session *want) {
  int32_t i = index_of(fp, want->address);
  const bool added = i < 0;
  fast_session saved;
  if (added) {
    if (fp->n == fp->cap) {
      uint32_t cap = fp->cap ? fp->cap * 2 : 16;
      fast_session *grown = realloc(fp->s, sizeof *grown * cap);
      if (grown == NULL) {
        free_extras(env, want);
        throw_code(env, "ERR_AGENT_FAST_NOMEM", "out of memory");
        return false;
      }
      fp->s = grown;
      fp->cap = cap;
    }
    i = (int32_t)fp->n++;
    memset(&fp->s[i], 0, sizeof fp->s[i]);
    memset(&saved, 0, sizeof saved);
  } else {
    saved = fp->s[i];
  }
  fast_session *s = &fp->s[i];
  s->address = want->address;
  s->codec = want->codec;
  s->esp = want->esp;
  s->stream = want->stream;
  s->stream_ref = want->stream_ref;
  s->key = want->key;
  s->ep_addr = want->ep_addr;
  s->ep_port = want->ep_port;
  if (!rebuild(fp)) {
    if (added) fp->n--;
    else *s = saved;
    free_extras(env, want);
    /* want may have been the same stream: the restored session still uses it. */
    if (!added && saved.stream != NULL) stream_bind(saved.stream, fp, saved.address);
    throw_code(env, "ERR_AGENT_FAST_NOMEM", "out of memory");
    return false;
  }
  if (!added) free_extras(env, &saved);
  if (s->stream != NULL) stream_bind(s->stream, fp, s->address);
  return true;
}

static bool upsert(napi_env env, fast_path *fp, fast_session *want) {
  fast_write_lock(fp);
  const bool ok = upsert_locked(env, fp, want);
  fast_write_unlock(fp);
  return ok;
}

static napi_value fast_set(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  uint32_t a[5]; /* address, codec, key, ep_addr, ep_port */
  if (!agent_args(env, info, 6, argv, "set(handle, address, codec, key, endpointAddr, endpointPort)")) return NULL;
  fast_path *fp = fast_get(env, argv[0]);
  if (fp == NULL) return NULL;
  for (int i = 0; i < 5; i++)
    if (!agent_get_u32(env, argv[i + 1], &a[i])) return NULL;
  if (a[1] > CODEC_GRE || a[4] > 65535) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "set: codec must be 0 or 1, port 0 to 65535");
    return NULL;
  }
  fast_session want = {
      .address = a[0], .codec = (uint8_t)a[1], .key = a[2], .ep_addr = a[3], .ep_port = (uint16_t)a[4]};
  upsert(env, fp, &want);
  return NULL;
}

/* obj[name] as a uint32; false (exception pending) otherwise. */
static bool prop_u32(napi_env env, napi_value obj, const char *name, uint32_t *out) {
  napi_value v;
  if (napi_get_named_property(env, obj, name, &v) != napi_ok) return false;
  if (!agent_get_u32(env, v, out)) return false;
  return true;
}

/* obj[name] as a typed array of `type` with at least `min` elements; its value in *arr. */
static bool prop_typed(napi_env env, napi_value obj, const char *name, napi_typedarray_type type, size_t min,
                       void **data, size_t *count, napi_value *arr) {
  napi_typedarray_type t;
  bool is = false;
  if (napi_get_named_property(env, obj, name, arr) != napi_ok || napi_is_typedarray(env, *arr, &is) != napi_ok || !is ||
      napi_get_typedarray_info(env, *arr, &t, count, data, NULL, NULL) != napi_ok || t != type || *count < min ||
      *data == NULL) {
    char msg[128];
    snprintf(msg, sizeof msg, "setEsp: %s must be a typed array of the right type and size", name);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
    return false;
  }
  return true;
}

/* Reads one SA of the descriptor: spi, keyMaterial (36 bytes), and its state array. */
static bool read_sa(napi_env env, napi_value obj, bool outbound, esp_sa *sa, napi_ref *ref) {
  uint32_t spi, window = 0;
  void *key, *state;
  size_t key_len, state_len;
  napi_value key_arr, state_arr;
  if (!prop_u32(env, obj, "spi", &spi) ||
      !prop_typed(env, obj, "keyMaterial", napi_uint8_array, ESP_KEY_MATERIAL, &key, &key_len, &key_arr)) {
    return false;
  }
  if (outbound) {
    if (!prop_typed(env, obj, "counter", napi_uint32_array, 2, &state, &state_len, &state_arr)) return false;
  } else {
    if (!prop_u32(env, obj, "windowSize", &window)) return false;
    if (window < 32 || window > (1u << 20)) {
      napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "setEsp: windowSize must be 32 to 2^20");
      return false;
    }
    if (!prop_typed(env, obj, "window", napi_uint32_array, 2 + 2 * (size_t)esp_window_blocks(window), &state,
                    &state_len, &state_arr)) {
      return false;
    }
  }
  if (!esp_sa_init(sa, spi, key, outbound)) {
    throw_code(env, "ERR_AGENT_FAST_CRYPTO", "setEsp: OpenSSL refused the AES-256-GCM key");
    return false;
  }
  sa->state = state;
  sa->window_size = window;
  sa->blocks = outbound ? 0 : esp_window_blocks(window);
  if (napi_create_reference(env, state_arr, 1, ref) != napi_ok) {
    esp_sa_free(sa);
    throw_code(env, "ERR_AGENT_FAST_NAPI", "setEsp: cannot reference the state array");
    return false;
  }
  return true;
}

/* The descriptor {outbound: {spi, keyMaterial, counter, src, dst} | null, inbound: [{spi, keyMaterial, window, windowSize}]}. */
static esp_codec *read_esp(napi_env env, napi_value desc) {
  esp_codec *e = calloc(1, sizeof *e);
  napi_value out, in, sa;
  napi_valuetype t;
  uint32_t n;
  bool is_array = false;
  if (e == NULL) {
    throw_code(env, "ERR_AGENT_FAST_NOMEM", "out of memory");
    return NULL;
  }
  if (napi_get_named_property(env, desc, "outbound", &out) != napi_ok || napi_typeof(env, out, &t) != napi_ok) goto fail;
  if (t == napi_object) {
    if (!read_sa(env, out, true, &e->out, &e->out_ref)) goto fail;
    e->has_out = true;
    if (!prop_u32(env, out, "src", &e->src) || !prop_u32(env, out, "dst", &e->dst)) goto fail;
  }
  if (napi_get_named_property(env, desc, "inbound", &in) != napi_ok || napi_is_array(env, in, &is_array) != napi_ok ||
      !is_array || napi_get_array_length(env, in, &n) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "setEsp: inbound must be an array");
    goto fail;
  }
  if (n > ESP_MAX_INBOUND) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "setEsp: more inbound SAs than the fast path keeps");
    goto fail;
  }
  for (uint32_t i = 0; i < n; i++) {
    if (napi_get_element(env, in, i, &sa) != napi_ok || !read_sa(env, sa, false, &e->in[i], &e->in_ref[i])) goto fail;
    e->n_in = i + 1;
  }
  return e;
fail:
  free_esp(env, e);
  return NULL;
}

static napi_value fast_set_esp(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  uint32_t a[3]; /* address, ep_addr, ep_port */
  if (!agent_args(env, info, 5, argv, "setEsp(handle, address, endpointAddr, endpointPort, descriptor)")) return NULL;
  fast_path *fp = fast_get(env, argv[0]);
  if (fp == NULL) return NULL;
  for (int i = 0; i < 3; i++)
    if (!agent_get_u32(env, argv[i + 1], &a[i])) return NULL;
  if (a[2] > 65535) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "setEsp: port must be 0 to 65535");
    return NULL;
  }
  esp_codec *e = read_esp(env, argv[4]);
  if (e == NULL) return NULL;
  fast_session want = {.address = a[0], .codec = CODEC_ESP, .esp = e, .ep_addr = a[1], .ep_port = (uint16_t)a[2]};
  upsert(env, fp, &want);
  return NULL;
}

static napi_value fast_set_stream(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  uint32_t address;
  if (!agent_args(env, info, 3, argv, "setStream(handle, address, stream)")) return NULL;
  fast_path *fp = fast_get(env, argv[0]);
  if (fp == NULL || !agent_get_u32(env, argv[1], &address)) return NULL;
  tls_stream *st = stream_get(env, argv[2]);
  if (st == NULL) return NULL;
  fast_session want = {.address = address, .codec = CODEC_STREAM, .stream = st};
  /* Strong: the stream stays allocated while the table can reach it (the C reference also
   * through environment teardown, when finalizers run whatever the references say). */
  NAPI_OK(env, napi_create_reference(env, argv[2], 1, &want.stream_ref));
  stream_retain(st);
  upsert(env, fp, &want);
  return NULL;
}

static void remove_locked(napi_env env, fast_path *fp, uint32_t address) {
  int32_t i = index_of(fp, address);
  if (i < 0) return;
  fast_session gone = fp->s[i];
  free_extras(env, &gone);
  fp->s[i] = fp->s[fp->n - 1];
  fp->n--;
  if (!rebuild(fp)) {
    /* Cannot happen for a smaller table unless malloc fails; fall back to an empty one, which
     * sends everything to JS rather than to a session that is gone. */
    (void)gone;
    for (uint32_t j = 0; j < fp->n; j++) free_extras(env, &fp->s[j]);
    fp->n = 0;
    free(fp->by_addr.e);
    free(fp->by_key.e);
    free(fp->by_ep.e);
    fp->by_addr.e = fp->by_key.e = fp->by_ep.e = NULL;
  }
}

static napi_value fast_remove(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  uint32_t address;
  if (!agent_args(env, info, 2, argv, "remove(handle, address)")) return NULL;
  fast_path *fp = fast_get(env, argv[0]);
  if (fp == NULL || !agent_get_u32(env, argv[1], &address)) return NULL;
  fast_write_lock(fp);
  remove_locked(env, fp, address);
  fast_write_unlock(fp);
  return NULL;
}


static napi_value fast_take(napi_env env, napi_callback_info info) {
  napi_value argv[3], result;
  uint32_t address;
  napi_typedarray_type type;
  size_t count;
  void *data;
  if (!agent_args(env, info, 3, argv, "take(handle, address, out)")) return NULL;
  fast_path *fp = fast_get(env, argv[0]);
  if (fp == NULL || !agent_get_u32(env, argv[1], &address)) return NULL;
  if (napi_get_typedarray_info(env, argv[2], &type, &count, &data, NULL, NULL) != napi_ok ||
      type != napi_float64_array || count < 7) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "take: out must be a Float64Array of 7");
    return NULL;
  }
  int32_t i = index_of(fp, address);
  double *out = data;
  if (i >= 0) {
    /* Workers may be adding to these right now: each is read and zeroed in one step. */
    fast_session *s = &fp->s[i];
    const double zero = 0;
    out[0] = (double)__atomic_exchange_n(&s->tx_packets, 0, __ATOMIC_RELAXED);
    out[1] = (double)__atomic_exchange_n(&s->tx_bytes, 0, __ATOMIC_RELAXED);
    out[2] = (double)__atomic_exchange_n(&s->rx_packets, 0, __ATOMIC_RELAXED);
    out[3] = (double)__atomic_exchange_n(&s->rx_bytes, 0, __ATOMIC_RELAXED);
    __atomic_exchange(&s->last_rx_ms, &zero, &out[4], __ATOMIC_RELAXED);
    out[5] = (double)__atomic_exchange_n(&s->auth_drops, 0, __ATOMIC_RELAXED);
    out[6] = (double)__atomic_exchange_n(&s->endpoint_drops, 0, __ATOMIC_RELAXED);
  }
  NAPI_OK(env, napi_get_boolean(env, i >= 0, &result));
  return result;
}

/* The counters every lane has, as stats() names them. */
static napi_status set_counters(napi_env env, napi_value obj, const lane_counters *c) {
  napi_status s;
  if ((s = poller_set_count(env, obj, "txPackets", c->tx_packets)) != napi_ok) return s;
  if ((s = poller_set_count(env, obj, "rxPackets", c->rx_packets)) != napi_ok) return s;
  if ((s = poller_set_count(env, obj, "sendDrops", c->send_drops)) != napi_ok) return s;
  if ((s = poller_set_count(env, obj, "tunWriteDrops", c->tun_write_drops)) != napi_ok) return s;
  if ((s = poller_set_count(env, obj, "tunGsoPackets", c->gso_packets)) != napi_ok) return s;
  return poller_set_count(env, obj, "tunGsoSegments", c->gso_segments);
}

static napi_value fast_stats(napi_env env, napi_callback_info info) {
  napi_value argv[1], obj;
  if (!agent_args(env, info, 1, argv, "stats(handle)")) return NULL;
  fast_path *fp = fast_get(env, argv[0]);
  if (fp == NULL) return NULL;
  NAPI_OK(env, napi_create_object(env, &obj));
  NAPI_OK(env, poller_set_count(env, obj, "sessions", fp->n));
  /* The totals over every lane; `workers` has each lane's own, the main thread's first. */
  const lane *lanes[FAST_MAX_WORKERS + 1];
  const uint32_t n = fast_lanes(fp, lanes);
  lane_counters total = {0};
  napi_value list;
  NAPI_OK(env, napi_create_array_with_length(env, n, &list));
  for (uint32_t i = 0; i < n; i++) {
    const lane_counters *c = &lanes[i]->c;
    const lane_counters now = {
        .tx_packets = FAST_LOAD(c->tx_packets), .rx_packets = FAST_LOAD(c->rx_packets),
        .send_drops = FAST_LOAD(c->send_drops), .tun_write_drops = FAST_LOAD(c->tun_write_drops),
        .gso_packets = FAST_LOAD(c->gso_packets), .gso_segments = FAST_LOAD(c->gso_segments),
        .handed_off = FAST_LOAD(c->handed_off), .handoff_drops = FAST_LOAD(c->handoff_drops)};
    napi_value one;
    NAPI_OK(env, napi_create_object(env, &one));
    NAPI_OK(env, set_counters(env, one, &now));
    NAPI_OK(env, poller_set_count(env, one, "handedOff", now.handed_off));
    NAPI_OK(env, poller_set_count(env, one, "handoffDrops", now.handoff_drops));
    NAPI_OK(env, napi_set_element(env, list, i, one));
    total.tx_packets += now.tx_packets;
    total.rx_packets += now.rx_packets;
    total.send_drops += now.send_drops;
    total.tun_write_drops += now.tun_write_drops;
    total.gso_packets += now.gso_packets;
    total.gso_segments += now.gso_segments;
  }
  NAPI_OK(env, set_counters(env, obj, &total));
  NAPI_OK(env, napi_set_named_property(env, obj, "workers", list));
  return obj;
}

static napi_value fast_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!agent_args(env, info, 1, argv, "close(handle)")) return NULL;
  fast_path *fp = fast_get(env, argv[0]);
  if (fp == NULL) return NULL;
  fast_write_lock(fp); /* workers read it under the read lock */
  fp->closed = true;
  fast_write_unlock(fp);
  detach(fp);
  return NULL;
}

napi_value fast_init(napi_env env, napi_value exports) {
  static const agent_fn fns[] = {
      {"create", fast_create}, {"attach", fast_attach}, {"set", fast_set},     {"setEsp", fast_set_esp}, {"setStream", fast_set_stream}, {"remove", fast_remove},
      {"take", fast_take},     {"stats", fast_stats},   {"close", fast_close}, {"addWorker", fast_add_worker},
  };
  return agent_export(env, exports, fns, sizeof fns / sizeof fns[0]);
}
