/*
 * poller: what agent_tun (src/core/tun/native/tun.c) and agent_net
 * (src/core/carrier/native/net.c) share. Both wrap one non-blocking fd that a uv_poll_t watches
 * on the main loop; each readable wakeup fills a ring allocated by JS and calls JS once for
 * the batch. This module holds that scaffolding; each addon keeps what is its own (opening the
 * fd, reading into the ring, writing, the messages that name its device or socket).
 *
 * An addon embeds a `poller` as the FIRST member of its own struct (so a poller pointer is also
 * a pointer to that struct) and describes itself once in a `poller_class`.
 *
 * Lifetime: the struct is shared by the JS handle (napi_wrap) and the uv_poll_t, and freed
 * (cls->free) when both are gone (refs), because uv_close completes on a later loop iteration.
 * While started, the handle holds a reference to itself so it is not collected while it can
 * still deliver, and an async cleanup hook closes it when a worker's environment is torn down.
 *
 * The ring (while started): `ring_ref` is a Buffer of `slots` slots of `slot_size` bytes;
 * `meta_ref` is the addon's second array (TUN: the Uint32Array of lengths; net: the ArrayBuffer
 * of lengths, addresses and ports). Both are looked up again on every wakeup, since JS may
 * have detached or transferred them.
 */
#ifndef AGENT_POLLER_H
#define AGENT_POLLER_H

#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct poller poller;

/*
 * Runs on each batch between reading it into the ring and calling JS (the native fast path,
 * src/core/device/native/fastpath.c). It handles what it can, moves the rest to the front of
 * the ring and returns how many are left for JS; 0 means JS is not called at all.
 */
typedef uint32_t (*poller_filter)(void *ctx, poller *p, uint32_t count);

/* One addon's constants: how its handles are tagged, and the codes and messages it throws. */
typedef struct poller_class {
  napi_type_tag tag;          /* tags the addon's handles, so a foreign object is refused */
  const char *not_handle;     /* TypeError message for a foreign handle */
  const char *napi_code;      /* err.code when an N-API call fails: "ERR_AGENT_TUN_NAPI" */
  const char *closed_code;    /* start() after close */
  const char *closed_msg;
  const char *started_code;   /* start() twice */
  const char *started_msg;
  const char *ring_code;      /* the ring was detached or shrunk while started */
  const char *watch_msg;      /* prefix of the error when the fd cannot be polled */
  const char *async_name;     /* async resource name of the callbacks: "agent:tun" */
  /* errno's symbolic name, as Node's system errors use for err.code; may write into buf. */
  const char *(*errno_code)(int err, char *buf, size_t len);
  /* Frees the struct embedding the poller and all it owns (the fd is closed by then). */
  void (*free)(poller *p);
} poller_class;

struct poller {
  const poller_class *cls;
  napi_env env;
  int fd;
  int refs; /* 1 for the JS handle, +1 while the poll handle is open */
  bool closed;
  bool poll_open; /* uv_poll_init done, uv_close not yet called */
  uv_poll_t poll; /* poll.data is this poller */
  char label[64]; /* "TUN device t0", "UDP socket 0.0.0.0:4754": names the fd in messages */

  /* Valid between start and close: the ring, its geometry and the references keeping it alive. */
  uint8_t *ring;     /* set by the addon after each successful poller_ring */
  uint32_t *lengths; /* likewise: where the addon writes each slot's length */
  uint32_t slot_size;
  uint32_t headroom;
  uint32_t slots;
  napi_ref ring_ref;
  napi_ref meta_ref;
  napi_ref on_batch_ref;
  napi_ref on_error_ref;
  napi_ref self_ref; /* a started handle is not collected while it can still deliver */
  napi_async_context async_ctx;
  napi_async_cleanup_hook_handle cleanup_hook;

  /* Set by the fast path while it is attached to this fd (see poller_filter). */
  poller_filter filter;
  void *filter_ctx;
  /* Called just before the poller is freed, so the filter's owner forgets it (at environment
   * teardown finalizers run in no particular order). */
  void (*filter_release)(void *ctx, poller *p);
  /* Set while a worker thread of the fast path reads and writes this fd (workers.c): called
   * first thing in poller_close, so the thread is stopped before the fd goes. A poller with
   * an owner cannot start on the main loop, nor be given to another worker. */
  void (*worker_stop)(void *ctx);
  void *worker_ctx;
};

/* ---------- errors (all leave a JS exception pending) ---------- */

/* Throws an Error with err.code = code. */
void poller_throw_error(napi_env env, const char *code, const char *msg);
/* Throws "what: strerror(err)" with err.code = errno's name. */
void poller_throw_errno(const poller_class *cls, napi_env env, int err, const char *what);
/* Turns the N-API call that just failed into a JS exception unless one is already pending. */
void poller_throw_napi(const poller_class *cls, napi_env env);
/* errno's symbolic name from glibc, "E<n>" for an unnamed one, libuv's before glibc 2.32. */
const char *poller_errno_name(int err, char *buf, size_t len);

/* Runs an N-API call; on failure throws (poller_throw_napi) and returns NULL from the caller. */
#define POLLER_NAPI_OK(cls, env, call)  \
  do {                                  \
    napi_status s_ = (call);            \
    if (s_ != napi_ok) {                \
      poller_throw_napi((cls), (env));  \
      return NULL;                      \
    }                                   \
  } while (0)

/* ---------- arguments and handles ---------- */

/* Reads exactly n arguments into argv; false (exception pending) when fewer were passed. */
bool poller_args(const poller_class *cls, napi_env env, napi_callback_info info, size_t n, napi_value *argv,
                 const char *usage);
/* The poller behind a JS handle of this class; NULL (exception pending) for anything else. */
poller *poller_get(const poller_class *cls, napi_env env, napi_value handle);
/* obj[key] = v as a JS number (counters for stats()). */
napi_status poller_set_count(napi_env env, napi_value obj, const char *key, uint64_t v);
/* JS true or false; NULL (exception pending) if that fails. */
napi_value poller_bool(const poller_class *cls, napi_env env, bool v);

/* ---------- open, close ---------- */

/* Sets up a poller for an open fd, with one ref (the JS handle's, once poller_wrap succeeds). */
void poller_init(poller *p, const poller_class *cls, napi_env env, int fd);
/* Wraps p in a new tagged JS handle that owns it. On failure closes the fd, frees p (cls->free)
 * and throws. */
napi_value poller_wrap(poller *p);
/* Stops polling, closes the fd, lets go of what start() took from JS. Idempotent, never blocks. */
void poller_close(napi_env env, poller *p);
/* Throws cls->closed_* if p is closed; false then. */
bool poller_check_open(poller *p);

/* ---------- start ---------- */

/* Throws unless p may start (not closed, not started yet); false then. */
bool poller_check_startable(poller *p);
/*
 * Everything start() does once the addon has checked its arguments and set slot_size, headroom
 * and slots: references self (the handle), ring, meta and the two callbacks, and polls the fd
 * for readability with on_readable. False (exception pending) on failure; if polling had begun,
 * p is closed then, since its poll handle is closing.
 */
bool poller_start(poller *p, napi_value self, napi_value ring, napi_value meta, napi_value on_batch,
                  napi_value on_error, uv_poll_cb on_readable);

/* ---------- wakeups (from on_readable, with a handle scope open) ---------- */

/*
 * Looks up the ring Buffer and meta again: false if either is gone or the ring is detached or
 * smaller than slots * slot_size. Does not touch p->ring; the addon checks *meta, then stores.
 */
bool poller_ring(poller *p, uint8_t **ring, napi_value *meta);
/* Runs the filter, if any, then calls onBatch(count) once for what is left of the batch. */
void poller_deliver_batch(poller *p, uint32_t count);
/* An error that will not go away: stops polling (no busy loop) and calls onError(err). */
void poller_deliver_error(poller *p, const char *code, const char *msg);
/* "<label>: the ring buffer was detached or shrunk", with cls->ring_code. */
void poller_deliver_ring_error(poller *p);

/* ---------- module ---------- */

typedef struct poller_fn {
  const char *name;
  napi_callback fn;
} poller_fn;

/* Sets exports[name] = fn for each of the n functions; returns exports, or NULL on failure. */
napi_value poller_export(const poller_class *cls, napi_env env, napi_value exports, const poller_fn *fns, size_t n);

#endif
