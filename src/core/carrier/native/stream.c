/*
 * The tls transport's data channel in C: TLS 1.3 record protection (RFC 8446 5.2-5.3) on the
 * control connection's own TCP socket, once the handshake and the welcome are done, so that a
 * packet of a tls session never enters JavaScript (as for the datagram transports).
 *
 * Why: with Node's TLS stream every packet entered JavaScript at both ends, and entering JS on
 * an idle process costs 30-50 us (npm run bench:wakeup); four such wakeups per round trip put
 * the tls transport's RTT at twice OpenVPN's.
 *
 * The records: TLS 1.3's record protection and key update with our own traffic secrets, one per
 * direction, which the TLS exporter derives from the handshake (RFC 8446 7.5). From a secret,
 * as TLS 1.3 with SHA-256 (7.1, 7.3): key = HKDF-Expand-Label(secret, "key", "", 32) for
 * AES-256-GCM, iv = HKDF-Expand-Label(secret, "iv", "", 12); each record looks like TLS 1.3
 * application data on the wire (type 23, version 0x0303, length), with the real content type
 * inside, the nonce the IV xor the 64-bit record number, and the 5-byte header as additional
 * data. After KEY_UPDATE_AFTER records a sender sends a KeyUpdate (4.6.3) and moves to
 * HKDF-Expand-Label(secret, "traffic upd", "", 32), as does the receiver on reading it.
 * Inside: whole frames of control/framing.ts, never one frame split across records (this file
 * writes both ends).
 * The take-over (when Node's TLS stops and this starts, and why nothing is lost or read twice)
 * is in src/core/control/native-records.ts.
 *
 * What this does with a frame:
 *   in:  Data of a session the fast path carries -> fastpath.c (checks, TUN); keepalives once
 *        JS has had a frame (a Ping is answered with one Pong per wakeup, a Pong is dropped:
 *        lastHeard says the peer is alive); anything else (control, the first frames, an
 *        unusual Data frame) -> onFrame(type, Buffer) in JS
 *   out: the fast path queues Data frames per TUN batch and flushes once (one record, one
 *        write); JS sends its frames with send()
 * A byte that is not a valid record ends the connection: past it nothing can be trusted.
 *
 * JS API:
 *   open(fd, role, txSecret, rxSecret, maxData, onFrame, onClose[, keyUpdateAfter]) -> handle
 *        fd is dup'ed (Node keeps its own); role 0 (node) holds its writes until the first
 *        record has arrived, 1 (client) writes at once; secrets are 32 bytes; keyUpdateAfter
 *        (records, for tests) defaults to KEY_UPDATE_AFTER
 *   send(handle, type, payload) -> boolean       false: dropped (queue full or closed)
 *   lastHeard(handle) -> ms since the epoch of the last bytes received (0: none)
 *   stats(handle) -> {recordsIn, recordsOut, queuedBytes, sendDrops, keyUpdatesIn, keyUpdatesOut,
 *                     pingsAnswered}
 *   close(handle)                                idempotent; onClose is not called
 * onClose(reason) is called once, when the peer or the socket ends the stream.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "agent.h"

#define REC_HDR 5
#define REC_TAG 16
#define REC_CONTENT_MAX 16384              /* RFC 8446 5.1: 2^14 bytes of content per record */
#define REC_CIPHER_MAX (REC_CONTENT_MAX + 256) /* 5.2: the most a peer may send */
#define FRAME_HDR 3
#define FRAME_DATA 0
#define FRAME_PING 2 /* FrameType in framing.ts */
#define FRAME_PONG 3
#define FRAME_MAX_TYPE 3
#define CONTROL_MAX (REC_CONTENT_MAX - FRAME_HDR) /* MAX_CONTROL_PAYLOAD in framing.ts */
#define CT_ALERT 21
#define CT_HANDSHAKE 22
#define CT_APPLICATION 23
#define HS_KEY_UPDATE 24
#define SECRET_BYTES 32
#define KEY_BYTES 32
#define IV_BYTES 12
/* Records under one key before the sender moves to the next (RFC 8446 5.5 allows 2^24.5
 * full-size ones for AES-GCM; ours are at most that size). */
#define KEY_UPDATE_AFTER (1ULL << 23)
/* A KeyUpdate record: header, the 5-byte handshake message, its content type, the tag. */
#define KEY_UPDATE_REC (5 + 5 + 1 + 16)
/* Bytes the socket has not taken yet past which new frames are dropped, as a router's queue
 * would: TCP retransmits for us, so a longer queue would only add latency (STREAM_QUEUE_LIMIT). */
#define QUEUE_LIMIT (1024u * 1024u)
/* While the node waits for the client's first record: enough for what a welcome is followed by,
 * not a megabyte per client that never speaks. */
#define HELD_QUEUE_LIMIT (64u * 1024u)
/* Records built per flush: four full ones. */
#define REC_FULL (REC_HDR + REC_CONTENT_MAX + 1 + REC_TAG)
#define OUT_CAP (4u * REC_FULL)
#define READ_BYTES 65536u
#define READS_PER_WAKEUP 16

enum { ROLE_NODE = 0, ROLE_CLIENT = 1 };

struct tls_stream {
  napi_env env;
  int fd;
  int refs;      /* 1 for the JS handle, +1 while the poll handle is open */
  int depth;     /* > 0 while JS is being called from here */
  bool closed;
  bool poll_open;
  bool held;     /* node: writes wait for the client's first record */
  bool writing;  /* the poll also waits for writability (queue not empty) */
  bool js_released;
  uv_poll_t poll;

  EVP_CIPHER_CTX *tx, *rx;
  uint8_t tx_secret[SECRET_BYTES], rx_secret[SECRET_BYTES];
  uint8_t tx_iv[IV_BYTES], rx_iv[IV_BYTES];
  uint64_t tx_seq, rx_seq;
  uint64_t key_update_after;
  bool update_requested; /* the peer asked for our next key too */
  uint64_t key_updates_in, key_updates_out;
  uint32_t max_data;

  /* Out: records being built (out), and bytes the socket has not taken yet (queue). */
  uint8_t *out; /* allocated on the first Data frame: an idle session never needs it */
  uint32_t out_cap, out_len, rec_start;
  bool rec_open;
  uint8_t *queue;
  uint32_t queue_off, queue_len, queue_cap;
  const char *deferred; /* why to end the stream, found where JS may not be called */

  /* In: the start of a record that straddles reads. */
  uint8_t *partial;
  uint32_t partial_len;
  double last_rx_ms;

  /* The fast path carrying this stream's session, at that tunnel address (stream_bind). */
  fast_path *fp;
  uint32_t address;

  napi_ref on_frame_ref, on_close_ref, self_ref;
  napi_async_context async_ctx;
  napi_async_cleanup_hook_handle cleanup_hook;

  uint64_t records_in, records_out, send_drops;
  uint64_t pings_answered;
  bool js_heard;  /* JS has had a frame: the node's connection.ts learnt the client reads us */
  bool pong_owed; /* a Ping came in this wakeup: one Pong once the reads are done */
  bool dirty; /* for the fast path: has frames queued in the current TUN batch */
};

static const napi_type_tag STREAM_TAG = {0x6167656e745f7374ULL, 0x7265616d5f746c73ULL};

/* One read buffer per thread (a worker's addon instance has its own): streams share it, since
 * a read is consumed before the next one starts. */
static _Thread_local uint8_t *read_buf;

static void nonce_for(const uint8_t iv[IV_BYTES], uint64_t seq, uint8_t nonce[IV_BYTES]) {
  memcpy(nonce, iv, IV_BYTES);
  for (int i = 0; i < 8; i++) nonce[IV_BYTES - 1 - i] ^= (uint8_t)(seq >> (8 * i));
}

/* HKDF-Expand-Label(secret, label, "", len) with SHA-256, len <= 32 (RFC 8446 7.1): one HMAC. */
static bool expand_label(const uint8_t secret[SECRET_BYTES], const char *label, uint8_t *out, uint32_t len) {
  uint8_t info[2 + 1 + 6 + 32 + 1 + 1];
  const size_t n = strlen(label);
  uint32_t i = 0;
  info[i++] = 0;
  info[i++] = (uint8_t)len;
  info[i++] = (uint8_t)(6 + n);
  memcpy(info + i, "tls13 ", 6);
  i += 6;
  memcpy(info + i, label, n);
  i += (uint32_t)n;
  info[i++] = 0; /* empty context */
  info[i++] = 1; /* HKDF-Expand's counter: T(1) */
  uint8_t t[32];
  unsigned int tl = 0;
  if (HMAC(EVP_sha256(), secret, SECRET_BYTES, info, i, t, &tl) == NULL || tl != 32) return false;
  memcpy(out, t, len);
  memset(t, 0, sizeof t);
  return true;
}

/* Keys one direction from its traffic secret: its cipher, IV and record number 0. */
static bool use_secret(EVP_CIPHER_CTX *c, bool encrypt, const uint8_t secret[SECRET_BYTES], uint8_t iv[IV_BYTES]) {
  uint8_t key[KEY_BYTES];
  bool ok = expand_label(secret, "key", key, KEY_BYTES) && expand_label(secret, "iv", iv, IV_BYTES) &&
            (encrypt ? EVP_EncryptInit_ex(c, NULL, NULL, key, NULL) : EVP_DecryptInit_ex(c, NULL, NULL, key, NULL)) == 1;
  memset(key, 0, sizeof key);
  return ok;
}

/* The next traffic secret (RFC 8446 7.2), in place. */
static bool next_secret(uint8_t secret[SECRET_BYTES]) {
  uint8_t next[SECRET_BYTES];
  if (!expand_label(secret, "traffic upd", next, SECRET_BYTES)) return false;
  memcpy(secret, next, SECRET_BYTES);
  memset(next, 0, sizeof next);
  return true;
}

/* ---------- lifetime ---------- */

static void free_stream(tls_stream *s) {
  if (s->tx != NULL) EVP_CIPHER_CTX_free(s->tx); /* also wipes the key schedule */
  if (s->rx != NULL) EVP_CIPHER_CTX_free(s->rx);
  memset(s->tx_iv, 0, sizeof s->tx_iv);
  memset(s->rx_iv, 0, sizeof s->rx_iv);
  memset(s->tx_secret, 0, sizeof s->tx_secret);
  memset(s->rx_secret, 0, sizeof s->rx_secret);
  free(s->out);
  free(s->queue);
  free(s->partial);
  free(s);
}

static void unref(tls_stream *s) {
  if (--s->refs == 0) free_stream(s);
}

static void release_js(tls_stream *s) {
  if (s->js_released || s->depth > 0) return; /* not while JS runs on our async context */
  s->js_released = true;
  napi_env env = s->env;
  if (s->on_frame_ref != NULL) napi_delete_reference(env, s->on_frame_ref);
  if (s->on_close_ref != NULL) napi_delete_reference(env, s->on_close_ref);
  if (s->self_ref != NULL) napi_delete_reference(env, s->self_ref);
  s->on_frame_ref = s->on_close_ref = s->self_ref = NULL;
  if (s->async_ctx != NULL) napi_async_destroy(env, s->async_ctx);
  s->async_ctx = NULL;
}

static void on_poll_closed(uv_handle_t *h) {
  tls_stream *s = h->data;
  if (s->cleanup_hook != NULL) {
    napi_remove_async_cleanup_hook(s->cleanup_hook);
    s->cleanup_hook = NULL;
  }
  unref(s);
}

/* Stops polling and closes our fd (Node closes its own). Buffers stay until the last ref. */
static void shut(tls_stream *s) {
  if (s->closed) return;
  s->closed = true;
  if (s->poll_open) {
    s->poll_open = false;
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, on_poll_closed);
  }
  if (s->fd >= 0) (void)close(s->fd);
  s->fd = -1;
  /* Packets the fast path took from this read were checked and their bytes are intact: out
   * they go now, before anything else can use the read buffer (a failure mid-read). */
  if (s->fp != NULL) fast_stream_flush(s->fp);
  s->fp = NULL;
}

static void on_env_cleanup(napi_async_cleanup_hook_handle handle, void *arg) {
  (void)handle;
  tls_stream *s = arg;
  shut(s);
  release_js(s);
}

static void on_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  tls_stream *s = data;
  shut(s);
  release_js(s);
  unref(s);
}

/* ---------- calling JS ---------- */

static void call_js(tls_stream *s, napi_ref fn_ref, size_t argc, napi_value *argv) {
  s->depth++;
  agent_call_js(s->env, s->async_ctx, fn_ref, argc, argv);
  s->depth--;
  if (s->closed) release_js(s); /* JS closed us meanwhile */
}

/* Ends the stream and tells JS why, once. Only where JS may run (not inside a TUN batch). */
static void fail(tls_stream *s, const char *reason) {
  if (s->closed) return;
  shut(s);
  napi_handle_scope scope;
  napi_value msg;
  if (napi_open_handle_scope(s->env, &scope) == napi_ok) {
    if (napi_create_string_utf8(s->env, reason, NAPI_AUTO_LENGTH, &msg) == napi_ok) call_js(s, s->on_close_ref, 1, &msg);
    napi_close_handle_scope(s->env, scope);
  }
  release_js(s);
}

static void fail_errno(tls_stream *s, const char *what, int err) {
  char msg[160];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  fail(s, msg);
}

/* ---------- out ---------- */

static void on_poll(uv_poll_t *h, int status, int events);

static void set_poll(tls_stream *s) {
  if (!s->poll_open) return;
  const bool want = s->queue_len > s->queue_off && !s->held;
  if (want == s->writing && s->deferred == NULL) return;
  s->writing = want;
  /* A deferred failure asks for UV_WRITABLE too: the next wakeup reports it. */
  (void)uv_poll_start(&s->poll, UV_READABLE | UV_DISCONNECT | (want || s->deferred != NULL ? UV_WRITABLE : 0), on_poll);
}

static void defer_fail(tls_stream *s, const char *reason) {
  if (s->deferred == NULL) s->deferred = reason;
  set_poll(s);
}

/* Seals the open record in place: content type, encryption, tag, header. */
static void seal_as(tls_stream *s, uint8_t type) {
  uint8_t *h = s->out + s->rec_start;
  uint32_t plen = s->out_len - s->rec_start - REC_HDR;
  h[REC_HDR + plen++] = type;
  const uint32_t clen = plen + REC_TAG;
  h[0] = CT_APPLICATION;
  h[1] = 3;
  h[2] = 3;
  h[3] = (uint8_t)(clen >> 8);
  h[4] = (uint8_t)clen;
  uint8_t nonce[IV_BYTES];
  nonce_for(s->tx_iv, s->tx_seq++, nonce);
  int n;
  EVP_CIPHER_CTX *c = s->tx;
  if (EVP_EncryptInit_ex(c, NULL, NULL, NULL, nonce) != 1 || EVP_EncryptUpdate(c, NULL, &n, h, REC_HDR) != 1 ||
      EVP_EncryptUpdate(c, h + REC_HDR, &n, h + REC_HDR, (int)plen) != 1 ||
      EVP_EncryptFinal_ex(c, h + REC_HDR + plen, &n) != 1 ||
      EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, REC_TAG, h + REC_HDR + plen) != 1) {
    /* Never sent half-sealed; and the number is spent, so the peer could not read past the
     * gap: nothing more is written, and the stream ends. */
    s->out_len = s->rec_start;
    s->rec_open = false;
    defer_fail(s, "OpenSSL failed to seal a record");
    return;
  }
  s->out_len = s->rec_start + REC_HDR + clen;
  s->rec_open = false;
  s->records_out++;
}

static void seal(tls_stream *s) {
  seal_as(s, CT_APPLICATION);
}

/* Sends a KeyUpdate under the current key (room for it is the caller's), then moves on. */
static void key_update(tls_stream *s) {
  s->rec_start = s->out_len;
  uint8_t *m = s->out + s->rec_start + REC_HDR;
  m[0] = HS_KEY_UPDATE;
  m[1] = 0;
  m[2] = 0;
  m[3] = 1;
  m[4] = 0; /* update_not_requested */
  s->out_len += REC_HDR + 5;
  s->rec_open = true;
  seal_as(s, CT_HANDSHAKE);
  if (s->deferred != NULL) return;
  if (!next_secret(s->tx_secret) || !use_secret(s->tx, true, s->tx_secret, s->tx_iv)) {
    defer_fail(s, "OpenSSL failed to derive the next key");
    return;
  }
  s->tx_seq = 0;
  s->update_requested = false;
  s->key_updates_out++;
}

static bool queue_append(tls_stream *s, const uint8_t *p, uint32_t len) {
  if (s->queue_off > 0 && s->queue_off == s->queue_len) s->queue_off = s->queue_len = 0;
  if (s->queue_len + len > s->queue_cap) {
    if (s->queue_off > 0) { /* move what is left to the front first */
      memmove(s->queue, s->queue + s->queue_off, s->queue_len - s->queue_off);
      s->queue_len -= s->queue_off;
      s->queue_off = 0;
    }
    if (s->queue_len + len > s->queue_cap) {
      uint32_t cap = s->queue_cap ? s->queue_cap : 65536;
      while (cap < s->queue_len + len) cap *= 2;
      uint8_t *q = realloc(s->queue, cap);
      if (q == NULL) return false;
      s->queue = q;
      s->queue_cap = cap;
    }
  }
  memcpy(s->queue + s->queue_len, p, len);
  s->queue_len += len;
  return true;
}

/* Writes what the socket takes of the queue. */
static void drain(tls_stream *s) {
  while (!s->closed && !s->held && s->queue_len > s->queue_off) {
    ssize_t n = write(s->fd, s->queue + s->queue_off, s->queue_len - s->queue_off);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) defer_fail(s, "the connection failed on write");
      break;
    }
    s->queue_off += (uint32_t)n;
  }
  if (s->queue_off == s->queue_len) s->queue_off = s->queue_len = 0;
  set_poll(s);
}

/* Seals what is open and writes the records built so far (what the socket does not take waits
 * in the queue, in order). */
static void write_out(tls_stream *s) {
  if (s->rec_open) seal(s);
  if (s->out_len == 0 || s->closed) {
    s->out_len = 0;
    return;
  }
  uint32_t done = 0;
  if (!s->held && s->queue_len == s->queue_off) {
    while (done < s->out_len) {
      ssize_t n = write(s->fd, s->out + done, s->out_len - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN) defer_fail(s, "the connection failed on write");
        break;
      }
      done += (uint32_t)n;
    }
  }
  /* Sealed records cannot be dropped (the peer expects every number): what is left waits. */
  if (done < s->out_len && !queue_append(s, s->out + done, s->out_len - done)) defer_fail(s, "out of memory");
  s->out_len = 0;
  set_poll(s);
}

/* Adds a frame to the open record (opening one if needed); false if it is dropped. */
static bool queue_frame(tls_stream *s, uint8_t type, const uint8_t *payload, uint32_t len) {
  if (s->closed || s->deferred != NULL || FRAME_HDR + len > REC_CONTENT_MAX ||
      s->queue_len - s->queue_off > (s->held ? HELD_QUEUE_LIMIT : QUEUE_LIMIT)) {
    s->send_drops++;
    return false;
  }
  if (s->out == NULL) {
    if ((s->out = malloc(OUT_CAP)) == NULL) {
      s->send_drops++;
      return false;
    }
    s->out_cap = OUT_CAP;
  }
  if (s->rec_open && s->out_len - s->rec_start - REC_HDR + FRAME_HDR + len > REC_CONTENT_MAX) seal(s);
  if (!s->rec_open) {
    const bool update = s->tx_seq >= s->key_update_after || s->update_requested;
    /* Room for a whole record: frames are added to it until it holds REC_CONTENT_MAX. */
    if (s->out_len + REC_FULL + (update ? KEY_UPDATE_REC : 0) > s->out_cap) write_out(s);
    if (update) {
      key_update(s);
      if (s->deferred != NULL) {
        s->send_drops++;
        return false;
      }
    }
    s->rec_start = s->out_len;
    s->out_len += REC_HDR;
    s->rec_open = true;
  }
  uint8_t *f = s->out + s->out_len;
  f[0] = type;
  f[1] = (uint8_t)(len >> 8);
  f[2] = (uint8_t)len;
  if (len > 0) memcpy(f + FRAME_HDR, payload, len);
  s->out_len += FRAME_HDR + len;
  return true;
}

/* Queues one frame and writes it now. A stream that never carried data (an idle client's pings
 * and pongs) seals it in a record on the stack instead of allocating the batch buffer: ten
 * thousand idle clients cost nothing here. */
static bool send_one(tls_stream *s, uint8_t type, const uint8_t *payload, uint32_t len) {
  uint8_t one[REC_FULL + KEY_UPDATE_REC];
  const bool borrowed = s->out == NULL;
  if (borrowed) {
    s->out = one;
    s->out_cap = sizeof one;
  }
  const bool ok = queue_frame(s, type, payload, len);
  if (ok) write_out(s);
  if (borrowed) {
    s->out = NULL; /* write_out queued whatever the socket did not take */
    s->out_cap = 0;
    s->out_len = 0;
  }
  return ok;
}

/* ---------- for the fast path (agent.h) ---------- */

bool stream_queue_data(tls_stream *s, const uint8_t *pkt, uint32_t len) {
  if (!queue_frame(s, FRAME_DATA, pkt, len)) return false;
  s->dirty = true;
  return true;
}

void stream_flush(tls_stream *s) {
  s->dirty = false;
  write_out(s);
}

bool stream_dirty(const tls_stream *s) {
  return s->dirty;
}

void stream_retain(tls_stream *s) {
  s->refs++;
}

void stream_release(tls_stream *s) {
  unref(s);
}

void stream_bind(tls_stream *s, fast_path *fp, uint32_t address) {
  s->fp = s->closed ? NULL : fp;
  s->address = address;
}

/* ---------- in ---------- */

static void deliver_frame(tls_stream *s, uint8_t type, const uint8_t *p, uint32_t len) {
  napi_handle_scope scope;
  napi_value argv[2];
  void *data;
  if (napi_open_handle_scope(s->env, &scope) != napi_ok) return;
  s->js_heard = true;
  if (napi_create_uint32(s->env, type, &argv[0]) == napi_ok &&
      napi_create_buffer_copy(s->env, len, p, &data, &argv[1]) == napi_ok) {
    call_js(s, s->on_frame_ref, 2, argv);
  }
  napi_close_handle_scope(s->env, scope);
}

static bool header_ok(tls_stream *s, const uint8_t *h) {
  const uint32_t len = ((uint32_t)h[3] << 8) | h[4];
  if (h[0] != CT_APPLICATION || h[1] != 3 || h[2] != 3) {
    fail(s, "protocol error: not a TLS application data record");
    return false;
  }
  if (len < 1 + REC_TAG || len > REC_CIPHER_MAX) {
    fail(s, "protocol error: record length out of range");
    return false;
  }
  return true;
}

/* Decrypts one whole record in place and handles its frames; false once the stream ended. */
static bool open_record(tls_stream *s, uint8_t *rec, uint32_t total) {
  const uint32_t clen = total - REC_HDR - REC_TAG;
  uint8_t *p = rec + REC_HDR;
  uint8_t nonce[IV_BYTES];
  nonce_for(s->rx_iv, s->rx_seq++, nonce);
  int n;
  EVP_CIPHER_CTX *c = s->rx;
  if (EVP_DecryptInit_ex(c, NULL, NULL, NULL, nonce) != 1 || EVP_DecryptUpdate(c, NULL, &n, rec, REC_HDR) != 1 ||
      EVP_DecryptUpdate(c, p, &n, p, (int)clen) != 1 ||
      EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, REC_TAG, p + clen) != 1 || EVP_DecryptFinal_ex(c, p + clen, &n) != 1) {
    fail(s, "a record failed authentication");
    return false;
  }
  s->records_in++;
  if (s->held) { /* the client reads records now: the node may write */
    s->held = false;
    drain(s);
  }
  uint32_t plen = clen;
  while (plen > 0 && p[plen - 1] == 0) plen--; /* RFC 8446 5.4: padding */
  if (plen == 0) {
    fail(s, "protocol error: a record without a content type");
    return false;
  }
  const uint8_t type = p[--plen];
  if (type == CT_ALERT) {
    fail(s, "the peer sent a TLS alert");
    return false;
  }
  if (type == CT_HANDSHAKE) {
    /* Only a KeyUpdate, alone in its record (RFC 8446 4.6.3, 5.1): the next key from here on. */
    if (plen != 5 || p[0] != HS_KEY_UPDATE || p[1] != 0 || p[2] != 0 || p[3] != 1 || p[4] > 1) {
      fail(s, "protocol error: a handshake record that is not a KeyUpdate");
      return false;
    }
    if (!next_secret(s->rx_secret) || !use_secret(s->rx, false, s->rx_secret, s->rx_iv)) {
      fail(s, "OpenSSL failed to derive the next key");
      return false;
    }
    s->rx_seq = 0;
    s->key_updates_in++;
    if (p[4] == 1) s->update_requested = true; /* answered before our next record */
    return true;
  }
  if (type != CT_APPLICATION) {
    fail(s, "protocol error: unexpected record content type");
    return false;
  }
  /* Keepalives are answered here, not in JS: at 10,000 clients that is 1,000 a second, and
   * each trip through JS cost more than the rest of the record. Not before JS has had a frame:
   * the node's JS learns from its first one that the client reads native records. */
  const bool keepalive_here = s->js_heard;
  for (uint32_t off = 0; off < plen;) {
    if (plen - off < FRAME_HDR) {
      fail(s, "protocol error: a frame split across records");
      return false;
    }
    const uint8_t ft = p[off];
    const uint32_t fl = ((uint32_t)p[off + 1] << 8) | p[off + 2];
    const uint8_t *payload = p + off + FRAME_HDR;
    if (fl > plen - off - FRAME_HDR) {
      fail(s, "protocol error: a frame split across records");
      return false;
    }
    if (ft > FRAME_MAX_TYPE || fl > (ft == FRAME_DATA ? s->max_data : CONTROL_MAX)) {
      fail(s, ft > FRAME_MAX_TYPE ? "protocol error: unknown frame type" : "protocol error: frame too large for its type");
      return false;
    }
    off += FRAME_HDR + fl;
    if (ft == FRAME_DATA && s->fp != NULL && fast_stream_take(s->fp, s->address, payload, fl)) continue;
    if (keepalive_here && fl == 0 && (ft == FRAME_PING || ft == FRAME_PONG)) {
      /* However many pings a wakeup reads get one pong: a peer cannot make us write more
       * than it sends (last_rx_ms already says we heard). */
      s->pong_owed |= ft == FRAME_PING;
      continue;
    }
    /* JS's: written in order after what the fast path took so far. */
    if (s->fp != NULL) fast_stream_flush(s->fp);
    deliver_frame(s, ft, payload, fl);
    if (s->closed) return false;
  }
  return true;
}

/* Consumes n bytes read from the socket; false once the stream ended. */
static bool consume(tls_stream *s, uint8_t *d, uint32_t n) {
  uint32_t off = 0;
  if (s->partial_len > 0) {
    uint8_t *r = s->partial;
    if (s->partial_len < REC_HDR) {
      const uint32_t take = REC_HDR - s->partial_len < n ? REC_HDR - s->partial_len : n;
      memcpy(r + s->partial_len, d, take);
      s->partial_len += take;
      off = take;
      if (s->partial_len < REC_HDR) return true;
      if (!header_ok(s, r)) return false;
    }
    const uint32_t total = REC_HDR + (((uint32_t)r[3] << 8) | r[4]);
    const uint32_t take = total - s->partial_len < n - off ? total - s->partial_len : n - off;
    memcpy(r + s->partial_len, d + off, take);
    s->partial_len += take;
    off += take;
    if (s->partial_len < total) return true;
    s->partial_len = 0;
    if (!open_record(s, r, total)) return false;
  }
  while (n - off >= REC_HDR) {
    if (!header_ok(s, d + off)) return false;
    const uint32_t total = REC_HDR + (((uint32_t)d[off + 3] << 8) | d[off + 4]);
    if (n - off < total) break;
    if (!open_record(s, d + off, total)) return false;
    off += total;
  }
  /* The packets taken point into d and partial: out to the TUN before partial is reused. */
  if (s->fp != NULL) fast_stream_flush(s->fp);
  if (off < n) {
    if (s->partial == NULL && (s->partial = malloc(REC_HDR + REC_CIPHER_MAX)) == NULL) {
      fail(s, "out of memory");
      return false;
    }
    memcpy(s->partial, d + off, n - off);
    s->partial_len = n - off;
  }
  return true;
}

static void read_some(tls_stream *s) {
  if (read_buf == NULL && (read_buf = malloc(READ_BYTES)) == NULL) return fail(s, "out of memory");
  for (int i = 0; i < READS_PER_WAKEUP && !s->closed; i++) {
    ssize_t n = read(s->fd, read_buf, READ_BYTES);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) fail_errno(s, "connection failed", errno);
      return;
    }
    if (n == 0) return fail(s, "peer closed the connection");
    s->last_rx_ms = agent_now_ms();
    if (!consume(s, read_buf, (uint32_t)n)) return;
    if ((uint32_t)n < READ_BYTES) return;
  }
}

static void on_readable(tls_stream *s) {
  read_some(s);
  if (s->pong_owed && !s->closed) {
    s->pong_owed = false;
    /* A pong that does not fit the send queue is dropped: a peer that pings without reading
     * is not owed one, and its queue is full of what it did not read anyway. */
    if (send_one(s, FRAME_PONG, NULL, 0)) s->pings_answered++;
  }
}

static void on_poll(uv_poll_t *h, int status, int events) {
  tls_stream *s = h->data;
  if (s->closed) return;
  if (s->deferred != NULL) return fail(s, s->deferred);
  if (status < 0) return fail(s, uv_strerror(status));
  if (events & UV_WRITABLE) drain(s);
  if (s->deferred != NULL) return fail(s, s->deferred);
  if (events & (UV_READABLE | UV_DISCONNECT)) on_readable(s);
}

/* ---------- JS API ---------- */

tls_stream *stream_get(napi_env env, napi_value v) {
  return agent_unwrap(env, v, &STREAM_TAG, "not a native stream handle");
}

static bool get_bytes(napi_env env, napi_value v, size_t want, uint8_t **data, const char *what) {
  napi_typedarray_type t;
  size_t len = 0;
  bool is = false;
  void *p = NULL;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is ||
      napi_get_typedarray_info(env, v, &t, &len, &p, NULL, NULL) != napi_ok || t != napi_uint8_array ||
      (want > 0 && len != want)) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be a Uint8Array of %zu bytes", what, want);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
    return false;
  }
  *data = p;
  return true;
}

/* One direction's cipher, keyed from its traffic secret. */
static EVP_CIPHER_CTX *cipher(const uint8_t *secret, bool encrypt, uint8_t iv[IV_BYTES]) {
  EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
  if (c == NULL) return NULL;
  int ok = encrypt ? EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL)
                   : EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL);
  if (ok != 1 || !use_secret(c, encrypt, secret, iv)) {
    EVP_CIPHER_CTX_free(c);
    return NULL;
  }
  return c;
}

static napi_value stream_open(napi_env env, napi_callback_info info) {
  napi_value argv[8], obj, name;
  uint32_t fd, role, max_data, update_after = 0;
  uint8_t *tx_key, *rx_key;
  napi_valuetype t1, t2, t3;
  size_t argc = 8;
  if (!agent_args(env, info, 7, argv, "open(fd, role, txSecret, rxSecret, maxData, onFrame, onClose[, keyUpdateAfter])")) return NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (!agent_get_u32(env, argv[0], &fd) || !agent_get_u32(env, argv[1], &role) ||
      !get_bytes(env, argv[2], SECRET_BYTES, &tx_key, "txSecret") ||
      !get_bytes(env, argv[3], SECRET_BYTES, &rx_key, "rxSecret") || !agent_get_u32(env, argv[4], &max_data)) {
    return NULL;
  }
  if (argc > 7 && napi_typeof(env, argv[7], &t3) == napi_ok && t3 != napi_undefined) {
    if (!agent_get_u32(env, argv[7], &update_after)) return NULL;
    if (update_after == 0) {
      napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "open: keyUpdateAfter must be at least 1");
      return NULL;
    }
  }
  if (napi_typeof(env, argv[5], &t1) != napi_ok || napi_typeof(env, argv[6], &t2) != napi_ok || t1 != napi_function ||
      t2 != napi_function) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "onFrame and onClose must be functions");
    return NULL;
  }
  if (role > ROLE_CLIENT || max_data + FRAME_HDR > REC_CONTENT_MAX) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "open: role must be 0 or 1, maxData at most 16381");
    return NULL;
  }
  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) {
    poller_throw_error(env, "ERR_AGENT_STREAM_NAPI", "no event loop");
    return NULL;
  }
  tls_stream *s = calloc(1, sizeof *s);
  if (s == NULL) {
    poller_throw_error(env, "ERR_AGENT_STREAM_NOMEM", "out of memory");
    return NULL;
  }
  s->env = env;
  s->refs = 1;
  s->held = role == ROLE_NODE;
  s->max_data = max_data;
  s->key_update_after = update_after > 0 ? update_after : KEY_UPDATE_AFTER;
  memcpy(s->tx_secret, tx_key, SECRET_BYTES);
  memcpy(s->rx_secret, rx_key, SECRET_BYTES);
  s->tx = cipher(s->tx_secret, true, s->tx_iv);
  s->rx = cipher(s->rx_secret, false, s->rx_iv);
  s->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (s->tx == NULL || s->rx == NULL || s->fd < 0) {
    const int err = errno;
    if (s->fd >= 0) close(s->fd);
    const bool crypto = s->tx == NULL || s->rx == NULL;
    free_stream(s);
    if (crypto) poller_throw_error(env, "ERR_AGENT_STREAM_CRYPTO", "OpenSSL refused the AES-256-GCM key");
    else {
      char msg[128];
      snprintf(msg, sizeof msg, "cannot take the connection's socket: %s", strerror(err));
      poller_throw_error(env, "ERR_AGENT_STREAM_FD", msg);
    }
    return NULL;
  }
  /* From here on the finalizer owns s. */
  if (napi_create_object(env, &obj) != napi_ok || napi_wrap(env, obj, s, on_finalize, NULL, NULL) != napi_ok) {
    close(s->fd);
    free_stream(s);
    poller_throw_error(env, "ERR_AGENT_STREAM_NAPI", "cannot create the stream handle");
    return NULL;
  }
  int rc = 0;
  if (napi_type_tag_object(env, obj, &STREAM_TAG) != napi_ok ||
      napi_create_reference(env, argv[5], 1, &s->on_frame_ref) != napi_ok ||
      napi_create_reference(env, argv[6], 1, &s->on_close_ref) != napi_ok ||
      napi_create_reference(env, obj, 1, &s->self_ref) != napi_ok ||
      napi_create_string_utf8(env, "agent:stream", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, obj, name, &s->async_ctx) != napi_ok) {
    rc = UV_ENOMEM;
  }
  if (rc == 0 && (rc = uv_poll_init(loop, &s->poll, s->fd)) == 0) {
    s->poll.data = s;
    s->poll_open = true;
    s->refs++; /* released in on_poll_closed */
    rc = uv_poll_start(&s->poll, UV_READABLE | UV_DISCONNECT, on_poll);
    if (rc == 0 && napi_add_async_cleanup_hook(env, on_env_cleanup, s, &s->cleanup_hook) != napi_ok) rc = UV_ENOMEM;
  }
  if (rc != 0) {
    shut(s);
    release_js(s);
    char msg[128];
    snprintf(msg, sizeof msg, "cannot poll the connection's socket: %s", uv_strerror(rc));
    poller_throw_error(env, "ERR_AGENT_STREAM_POLL", msg);
    return NULL;
  }
  return obj;
}

static napi_value stream_send(napi_env env, napi_callback_info info) {
  napi_value argv[3], result;
  uint32_t type;
  uint8_t *payload;
  size_t len = 0;
  if (!agent_args(env, info, 3, argv, "send(handle, type, payload)")) return NULL;
  tls_stream *s = stream_get(env, argv[0]);
  if (s == NULL || !agent_get_u32(env, argv[1], &type)) return NULL;
  napi_typedarray_type t;
  bool is = false;
  void *p = NULL;
  if (napi_is_typedarray(env, argv[2], &is) != napi_ok || !is ||
      napi_get_typedarray_info(env, argv[2], &t, &len, &p, NULL, NULL) != napi_ok || t != napi_uint8_array) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "send: payload must be a Uint8Array");
    return NULL;
  }
  payload = p;
  if (type > FRAME_MAX_TYPE || len > (type == FRAME_DATA ? s->max_data : CONTROL_MAX) || FRAME_HDR + len > REC_CONTENT_MAX) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "send: unknown frame type, or payload too large for it");
    return NULL;
  }
  const bool ok = send_one(s, (uint8_t)type, payload, (uint32_t)len);
  if (napi_get_boolean(env, ok, &result) != napi_ok) return NULL;
  return result;
}

static napi_value stream_last_heard(napi_env env, napi_callback_info info) {
  napi_value argv[1], result;
  if (!agent_args(env, info, 1, argv, "lastHeard(handle)")) return NULL;
  tls_stream *s = stream_get(env, argv[0]);
  if (s == NULL || napi_create_double(env, s->last_rx_ms, &result) != napi_ok) return NULL;
  return result;
}

static napi_value stream_stats(napi_env env, napi_callback_info info) {
  napi_value argv[1], obj;
  if (!agent_args(env, info, 1, argv, "stats(handle)")) return NULL;
  tls_stream *s = stream_get(env, argv[0]);
  if (s == NULL || napi_create_object(env, &obj) != napi_ok) return NULL;
  if (poller_set_count(env, obj, "recordsIn", s->records_in) != napi_ok ||
      poller_set_count(env, obj, "recordsOut", s->records_out) != napi_ok ||
      poller_set_count(env, obj, "queuedBytes", s->queue_len - s->queue_off) != napi_ok ||
      poller_set_count(env, obj, "sendDrops", s->send_drops) != napi_ok ||
      poller_set_count(env, obj, "keyUpdatesIn", s->key_updates_in) != napi_ok ||
      poller_set_count(env, obj, "keyUpdatesOut", s->key_updates_out) != napi_ok ||
      poller_set_count(env, obj, "pingsAnswered", s->pings_answered) != napi_ok) {
    return NULL;
  }
  return obj;
}

static napi_value stream_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!agent_args(env, info, 1, argv, "close(handle)")) return NULL;
  tls_stream *s = stream_get(env, argv[0]);
  if (s == NULL) return NULL;
  shut(s);
  release_js(s);
  return NULL;
}

/* The environment's thread is done with streams (a worker exiting): its read buffer goes. */
static void free_read_buf(void *arg) {
  (void)arg;
  free(read_buf);
  read_buf = NULL;
}

napi_value stream_init(napi_env env, napi_value exports) {
  static const agent_fn fns[] = {
      {"open", stream_open}, {"send", stream_send}, {"lastHeard", stream_last_heard},
      {"stats", stream_stats}, {"close", stream_close},
  };
  if (napi_add_env_cleanup_hook(env, free_read_buf, NULL) != napi_ok) return NULL;
  return agent_export(env, exports, fns, sizeof fns / sizeof fns[0]);
}
