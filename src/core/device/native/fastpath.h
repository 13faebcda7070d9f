/*
 * The fast path's insides, shared by fastpath.c (the session table, the codecs, the JS API)
 * and workers.c (the node's worker threads, each running the same batch code on its own TUN
 * queue and SO_REUSEPORT socket). Nothing outside those two files includes this.
 *
 * Threads: JS (the main thread) is the only writer of the session table. While workers run,
 * it changes the table under `lock` (write), and each worker holds the lock (read) for one
 * batch; the main thread's own batches need no lock, since no one else writes. Counters that
 * several threads add to (per session) are updated atomically; each lane's own counters have
 * one writer and are read with relaxed atomic loads.
 */
#ifndef AGENT_FASTPATH_H
#define AGENT_FASTPATH_H

#include <node_api.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "agent.h"
#include "coalesce.h"
#include "esp.h"
#include "poller.h"

enum { ROLE_NODE = 0, ROLE_CLIENT = 1 };
enum { CODEC_IDENTITY = 0, CODEC_GRE = 1, CODEC_ESP = 2, CODEC_STREAM = 3 };
/* Inbound SAs one esp session may have at once: the current one and those of recent rekeys. */
#define ESP_MAX_INBOUND 4
/* Lanes: the main thread's, and at most this many worker threads besides. */
#define FAST_MAX_WORKERS 63

/* Relaxed atomics: counters only, never used to order other memory. */
#define FAST_ADD(x, v) __atomic_fetch_add(&(x), (v), __ATOMIC_RELAXED)
#define FAST_LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

/* esp-gcm-in-gre: ESP sealed under `out`, carried in GRE keyed with the receiver's SPI. */
typedef struct esp_codec {
  bool has_out;
  esp_sa out;
  uint32_t src, dst; /* the outer IPv4 header's: the tunnel addresses */
  napi_ref out_ref;  /* the counter's typed array */
  uint32_t n_in;
  esp_sa in[ESP_MAX_INBOUND];
  napi_ref in_ref[ESP_MAX_INBOUND]; /* each window's typed array */
} esp_codec;

typedef struct fast_session {
  uint32_t address; /* tunnel address, host order */
  uint32_t key;     /* gre: the session's key */
  uint32_t ep_addr; /* 0: endpoint not learned yet (everything goes to JS) */
  uint16_t ep_port;
  uint8_t codec;
  esp_codec *esp;     /* CODEC_ESP only */
  tls_stream *stream; /* CODEC_STREAM only: the tls session's connection (stream.c) */
  napi_ref stream_ref;
  /* Since the last take(); added to by every lane (FAST_ADD). */
  uint64_t tx_packets, tx_bytes, rx_packets, rx_bytes;
  uint64_t auth_drops, endpoint_drops; /* dropped here: forged ESP; not a keepalive, from elsewhere */
  double last_rx_ms;
} fast_session;

/* Open addressing, linear probing; rebuilt whole on every change (control plane, rare). */
typedef struct map_entry {
  uint64_t key;
  int32_t idx; /* -1: empty */
} map_entry;

typedef struct map {
  map_entry *e;
  uint32_t mask;
} map;

/* Where one batch lies: the main thread's poller rings, or a worker's own. */
typedef struct batch_view {
  uint8_t *ring;
  uint32_t *lengths;
  uint32_t slot_size, headroom;
  uint32_t *addrs; /* socket batches: each datagram's source (host order) */
  uint16_t *ports;
} batch_view;

/* What one lane counted; one writer (the lane's thread), read by stats() on the main thread. */
typedef struct lane_counters {
  uint64_t tx_packets, rx_packets, send_drops, tun_write_drops;
  uint64_t gso_packets, gso_segments; /* TCP runs written to the TUN as one packet (coalesce.c) */
  uint64_t handed_off;                /* workers: packets passed to the main thread (JS, ESP) */
  uint64_t handoff_drops;             /* workers: dropped because the main thread was behind */
} lane_counters;

/*
 * A lane: one thread's TUN descriptor and socket, and its scratch for one batch. Lane 0 is the
 * main thread's (the pollers JS started); lanes 1.. are workers.c's threads. `is_main` lanes
 * also carry what only the main thread may touch (ESP state shared with JS, tls streams).
 */
typedef struct lane {
  bool is_main;
  poller *sock;  /* where its datagrams go out; NULL: stream sessions only */
  int tun_fd;    /* where its decapsulated packets go in (-1: none) */
  bool vnet;
  /* Scratch for one batch. */
  struct mmsghdr *msgs;
  struct iovec *iov; /* 2 per datagram (see net_prepare_send) */
  uint8_t *hdr;      /* 20 per datagram */
  struct sockaddr_in *names;
  uint8_t *slow;
  inner_packet *pending; /* for one socket batch: the inner packets to write */
  tls_stream **dirty;    /* for one TUN batch: the streams to flush */
  uint32_t batch_cap;
  lane_counters c;
} lane;

typedef struct fast_worker fast_worker;

typedef struct fast_path {
  napi_env env;
  int role;
  uint32_t mtu;
  bool closed;

  fast_session *s;
  uint32_t n, cap;
  map by_addr, by_key, by_ep;
  uint32_t n_gre, n_identity;

  poller *tun, *sock;
  napi_ref tun_ref, sock_ref;
  lane main;

  /* From the streams' reads: inner packets taken, not yet written to the TUN. */
  inner_packet stream_in[256];
  uint32_t n_stream_in;
  double stream_now;

  /* Worker threads (workers.c): only on a node, only for datagram sessions. */
  pthread_rwlock_t lock; /* the table, while workers run */
  fast_worker *workers[FAST_MAX_WORKERS];
  uint32_t n_workers;
  uv_async_t *handoff; /* wakes the main thread for what workers passed it */
  napi_ref on_worker_error;
  napi_async_context async_ctx;
  bool cleanup_hook; /* fast_env_cleanup is registered */
} fast_path;

/* ---------- fastpath.c, for workers.c ---------- */

/* The fast path behind a JS handle; NULL (TypeError pending) for anything else. */
fast_path *fast_get(napi_env env, napi_value v);
/* One TUN batch through lane l: returns how many packets are left, moved to the ring's front. */
uint32_t fast_tun_batch(fast_path *fp, lane *l, const batch_view *b, uint32_t count);
/* One socket batch through lane l: likewise (addrs and ports move with them). */
uint32_t fast_net_batch(fast_path *fp, lane *l, const batch_view *b, uint32_t count);
/* Sizes the lane's scratch for `slots` packets; false when out of memory. */
bool fast_lane_reserve(lane *l, uint32_t slots);
void fast_lane_free(lane *l);

/* ---------- workers.c, for fastpath.c ---------- */

/* addWorker(handle, tunQueue, socket, onError): a worker thread on its own queue and socket. */
napi_value fast_add_worker(napi_env env, napi_callback_info info);
/* Stops and joins every worker (the main thread then owns the table alone again). */
void fast_stop_workers(fast_path *fp);
/* Stops them and frees what they held: when the fast path itself is freed. */
void fast_free_workers(fast_path *fp);
/* The environment cleanup hook addWorker registers: stops the workers. */
void fast_env_cleanup(void *arg);
/* Every lane, the main thread's first, into out (room for FAST_MAX_WORKERS + 1); how many. */
uint32_t fast_lanes(fast_path *fp, const lane **out);
/* Table writes: under the lock while workers run. */
void fast_write_lock(fast_path *fp);
void fast_write_unlock(fast_path *fp);

#endif
