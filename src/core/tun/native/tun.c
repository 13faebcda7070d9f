/*
 * agent_tun: the Linux TUN backend.
 *
 * Why our own addon: reading a TUN fd through the libuv threadpool costs one thread round trip
 * per packet and leaves a thread blocked in read(2) that keeps process.exit() waiting. Here the
 * fd is non-blocking and watched by a uv_poll_t on the main loop; each readable wakeup drains
 * up to a ring's worth of packets with plain read(2) calls and calls JS once for the batch.
 *
 * Ring layout (allocated by JS, referenced here while started): slot i spans
 * [i * slot_size, (i + 1) * slot_size); its packet starts at i * slot_size + headroom, so a
 * transport can write its header in front of the packet without copying. lengths[i] is the
 * packet's length.
 *
 * JS API (all take the handle returned by open):
 *   open(name, multiQueue) -> handle
 *   start(handle, ring, lengths, slotSize, headroom, slots, onBatch(count), onError(err))
 *   write(handle, buf, offset, length) -> boolean        (false: the kernel dropped it)
 *   writeBatch(handle, buf, offsets, lengths, count) -> number written
 *   close(handle)                                          (idempotent)
 *
 * Lifetime: the device struct is shared by the JS handle (napi_wrap) and the uv_poll_t, and
 * freed when both are gone (refs), because uv_close completes on a later loop iteration.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <uv.h>

typedef struct tun_dev {
  napi_env env;
  int fd;
  int refs; /* 1 for the JS handle, +1 while the poll handle is open */
  bool closed;
  bool poll_open;   /* uv_poll_init done, uv_close not yet called */
  uv_poll_t poll;
  char name[IFNAMSIZ];

  /* Valid between start and close: the ring and the references keeping it alive. */
  uint8_t *ring;
  uint32_t *lengths;
  uint32_t slot_size;
  uint32_t headroom;
  uint32_t slots;
  napi_ref ring_ref;
  napi_ref lengths_ref;
  napi_ref on_batch_ref;
  napi_ref on_error_ref;
  napi_ref self_ref; /* a started device is not collected while it can still deliver packets */
  napi_async_context async_ctx;
  napi_async_cleanup_hook_handle cleanup_hook;
} tun_dev;

/* Tags our handles so a foreign object passed from JS is rejected instead of dereferenced. */
static const napi_type_tag TUN_TAG = {0x6167656e745f7475ULL, 0x6e5f646576696365ULL};

/* ---------- errors ---------- */

static void throw_error(napi_env env, const char *code, const char *msg) {
  napi_value c, m, err;
  if (napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &c) != napi_ok ||
      napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m) != napi_ok ||
      napi_create_error(env, c, m, &err) != napi_ok) {
    napi_throw_error(env, code, msg); /* best effort when even allocation fails */
    return;
  }
  napi_throw(env, err);
}

/* errno's symbolic name ("EPERM"), as Node's own system errors use for err.code. */
static const char *errno_code(int err) {
  if (err == EBADFD) return "EBADFD"; /* the one TUN errno libuv has no name for */
  return uv_err_name(uv_translate_sys_error(err));
}

static void throw_errno(napi_env env, int err, const char *what) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  throw_error(env, errno_code(err), msg);
}

/* Turns the N-API call that just failed into a JS exception unless one is already pending. */
static void throw_napi(napi_env env) {
  bool pending = false;
  const napi_extended_error_info *info = NULL;
  napi_get_last_error_info(env, &info); /* first: any other call resets it */
  const char *msg = info && info->error_message ? info->error_message : "N-API call failed";
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) return;
  throw_error(env, "ERR_AGENT_TUN_NAPI", msg);
}

#define NAPI_OK(env, call)               \
  do {                                   \
    napi_status s_ = (call);             \
    if (s_ != napi_ok) {                 \
      throw_napi(env);             \
      return NULL;                       \
    }                                    \
  } while (0)

static void throw_open_error(napi_env env, const char *name, int err, bool opening) {
  char msg[256];
  const char *code = errno_code(err);
  if (err == EPERM || err == EACCES) {
    snprintf(msg, sizeof msg,
             "cannot create TUN device %s: permission denied (run as root or with CAP_NET_ADMIN)", name);
  } else if (opening && (err == ENOENT || err == ENODEV || err == ENXIO)) {
    snprintf(msg, sizeof msg, "cannot create TUN device: /dev/net/tun does not exist (load the tun module)");
  } else if (!opening && err == EBUSY) {
    snprintf(msg, sizeof msg, "cannot create TUN device %s: the name is in use by another open TUN device", name);
  } else if (!opening && err == EEXIST) {
    snprintf(msg, sizeof msg, "cannot create TUN device %s: the name is already in use", name);
  } else if (!opening && err == EINVAL) {
    snprintf(msg, sizeof msg,
             "cannot create TUN device %s: the name is invalid, or in use by an interface that is not a "
             "TUN device with the same flags (multi-queue or not)",
             name);
  } else {
    snprintf(msg, sizeof msg, "cannot create TUN device %s: %s: %s", name,
             opening ? "open /dev/net/tun" : "TUNSETIFF", strerror(err));
  }
  throw_error(env, code, msg);
}

/* ---------- lifetime ---------- */

static void dev_unref(tun_dev *d) {
  if (--d->refs == 0) free(d);
}

static void delete_ref(napi_env env, napi_ref *ref) {
  if (*ref == NULL) return;
  napi_delete_reference(env, *ref); /* cannot fail for a live ref; nothing to do if it did */
  *ref = NULL;
}

/* Drops everything start() took from JS. */
static void release_js(napi_env env, tun_dev *d) {
  delete_ref(env, &d->ring_ref);
  delete_ref(env, &d->lengths_ref);
  delete_ref(env, &d->on_batch_ref);
  delete_ref(env, &d->on_error_ref);
  delete_ref(env, &d->self_ref);
  if (d->async_ctx != NULL) {
    napi_async_destroy(env, d->async_ctx);
    d->async_ctx = NULL;
  }
  d->ring = NULL;
  d->lengths = NULL;
}

static void on_poll_closed(uv_handle_t *h) {
  tun_dev *d = h->data;
  /* Either unregisters the hook (JS closed us) or tells Node teardown we are done. */
  if (d->cleanup_hook != NULL) {
    napi_remove_async_cleanup_hook(d->cleanup_hook);
    d->cleanup_hook = NULL;
  }
  dev_unref(d);
}

static void close_poll(tun_dev *d) {
  if (!d->poll_open) return;
  d->poll_open = false;
  uv_poll_stop(&d->poll); /* cannot fail for an initialised handle */
  /* uv_close removes the fd from epoll now, so the fd may be closed right after. */
  uv_close((uv_handle_t *)&d->poll, on_poll_closed);
}

/* Stops polling, closes the fd, lets go of the JS ring. Idempotent, never blocks. */
static void dev_close(napi_env env, tun_dev *d) {
  if (d->closed) return;
  d->closed = true;
  close_poll(d);
  if (d->fd >= 0) {
    /* On Linux close(2) releases the fd even when it reports an error: nothing to retry. */
    (void)close(d->fd);
    d->fd = -1;
  }
  release_js(env, d);
}

static void on_finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  tun_dev *d = data;
  dev_close(env, d);
  dev_unref(d);
}

/* Node is tearing the environment down (worker exit): close so the loop can close. */
static void on_env_cleanup(napi_async_cleanup_hook_handle handle, void *arg) {
  tun_dev *d = arg;
  (void)handle; /* same as d->cleanup_hook */
  /* The hook lives exactly as long as the poll handle: on_poll_closed removes it, which tells
   * Node we are done. If JS already closed us, that close callback is just pending. */
  dev_close(d->env, d);
}

static napi_value get_dev(napi_env env, napi_value handle, tun_dev **out) {
  bool ok = false;
  void *data = NULL;
  NAPI_OK(env, napi_check_object_type_tag(env, handle, &TUN_TAG, &ok));
  if (!ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "not a TUN device handle");
    return NULL;
  }
  NAPI_OK(env, napi_unwrap(env, handle, &data));
  *out = data;
  return handle;
}

/* ---------- open ---------- */

static napi_value tun_open(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  char name[IFNAMSIZ + 1];
  size_t len = 0;
  bool multi_queue = false;

  NAPI_OK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "open(name, multiQueue)");
    return NULL;
  }
  NAPI_OK(env, napi_get_value_string_utf8(env, argv[0], NULL, 0, &len));
  if (len == 0 || len >= IFNAMSIZ) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "TUN device name must be 1 to 15 bytes");
    return NULL;
  }
  NAPI_OK(env, napi_get_value_string_utf8(env, argv[0], name, sizeof name, &len));
  NAPI_OK(env, napi_get_value_bool(env, argv[1], &multi_queue));

  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    throw_open_error(env, name, errno, true);
    return NULL;
  }

  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (multi_queue ? IFF_MULTI_QUEUE : 0);
  memcpy(ifr.ifr_name, name, len); /* len < IFNAMSIZ: stays NUL-terminated */
  if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
    int err = errno;
    close(fd); /* failure path: the open error is the one worth reporting */
    throw_open_error(env, name, err, false);
    return NULL;
  }

  tun_dev *d = calloc(1, sizeof *d);
  if (d == NULL) {
    close(fd);
    throw_errno(env, ENOMEM, "cannot create TUN device");
    return NULL;
  }
  d->env = env;
  d->fd = fd;
  d->refs = 1;
  memcpy(d->name, ifr.ifr_name, IFNAMSIZ);
  d->name[IFNAMSIZ - 1] = '\0';

  napi_value handle;
  napi_status s = napi_create_object(env, &handle);
  if (s == napi_ok) s = napi_wrap(env, handle, d, on_finalize, NULL, NULL);
  if (s != napi_ok) {
    close(fd);
    free(d);
    throw_napi(env);
    return NULL;
  }
  /* From here on the finalizer owns d. */
  NAPI_OK(env, napi_type_tag_object(env, handle, &TUN_TAG));
  return handle;
}

/* ---------- reading ---------- */

/* Calls a JS function from a libuv callback: own scope, async context, uncaught errors. */
static void call_js(tun_dev *d, napi_ref fn_ref, napi_value arg) {
  napi_env env = d->env;
  napi_value fn, recv, result;
  if (fn_ref == NULL || napi_get_reference_value(env, fn_ref, &fn) != napi_ok || fn == NULL) return;
  bool pending = false;
  /* napi_make_callback insists on an object receiver; undefined would throw a TypeError. */
  if (napi_get_global(env, &recv) != napi_ok) return;
  napi_status s = napi_make_callback(env, d->async_ctx, recv, fn, 1, &arg, &result);
  if (s != napi_ok && napi_is_exception_pending(env, &pending) == napi_ok && pending) {
    /* Nobody up the stack can catch it: report it like any other uncaught exception. */
    napi_value exc;
    if (napi_get_and_clear_last_exception(env, &exc) == napi_ok) napi_fatal_exception(env, exc);
  }
}

static void deliver_batch(tun_dev *d, uint32_t count) {
  napi_handle_scope scope;
  napi_value n;
  if (napi_open_handle_scope(d->env, &scope) != napi_ok) return;
  if (napi_create_uint32(d->env, count, &n) == napi_ok) call_js(d, d->on_batch_ref, n);
  napi_close_handle_scope(d->env, scope);
}

/* An error that will not go away: stop polling (no busy loop) and tell JS. */
static void deliver_error(tun_dev *d, const char *code, const char *msg) {
  napi_handle_scope scope;
  napi_value c, m, e;
  uv_poll_stop(&d->poll);
  if (napi_open_handle_scope(d->env, &scope) != napi_ok) return;
  if (napi_create_string_utf8(d->env, code, NAPI_AUTO_LENGTH, &c) == napi_ok &&
      napi_create_string_utf8(d->env, msg, NAPI_AUTO_LENGTH, &m) == napi_ok &&
      napi_create_error(d->env, c, m, &e) == napi_ok) {
    call_js(d, d->on_error_ref, e);
  }
  napi_close_handle_scope(d->env, scope);
}

static void deliver_read_error(tun_dev *d, int err) {
  char msg[256];
  if (err == EBADFD) {
    snprintf(msg, sizeof msg, "TUN device %s was removed (read: %s)", d->name, strerror(err));
  } else {
    snprintf(msg, sizeof msg, "TUN device %s: read failed: %s", d->name, strerror(err));
  }
  deliver_error(d, errno_code(err), msg);
}

/*
 * Looks the ring up again on every wakeup (a few N-API calls per batch, not per packet): if
 * JS transferred or detached its ArrayBuffer, a cached pointer would let read(2) write into
 * memory that is no longer ours. Needs an open handle scope.
 */
static bool resolve_ring(tun_dev *d) {
  napi_value buf, lens;
  void *data = NULL, *ldata = NULL;
  size_t len = 0, lcount = 0;
  napi_typedarray_type type;
  if (napi_get_reference_value(d->env, d->ring_ref, &buf) != napi_ok || buf == NULL ||
      napi_get_reference_value(d->env, d->lengths_ref, &lens) != napi_ok || lens == NULL ||
      napi_get_buffer_info(d->env, buf, &data, &len) != napi_ok ||
      napi_get_typedarray_info(d->env, lens, &type, &lcount, &ldata, NULL, NULL) != napi_ok) {
    return false;
  }
  if (data == NULL || ldata == NULL || len < (size_t)d->slots * d->slot_size || lcount < d->slots) return false;
  d->ring = data;
  d->lengths = ldata;
  return true;
}

/*
 * The kernel truncates a packet larger than the buffer and returns the truncated length, so a
 * read that filled the slot exactly may be a cut packet: drop it if its IP header says longer.
 */
static bool truncated(const uint8_t *p, size_t n) {
  size_t want;
  if (n < 4) return false;
  switch (p[0] >> 4) {
    case 4:
      want = ((size_t)p[2] << 8) | p[3];
      break;
    case 6:
      if (n < 6) return false;
      want = 40 + (((size_t)p[4] << 8) | p[5]);
      break;
    default:
      return false;
  }
  return want > n;
}

/*
 * Reads into successive slots until the kernel queue is empty or the ring is full. When full,
 * the fd stays readable and libuv's level-triggered epoll wakes us again on the next loop
 * iteration, after timers and other I/O had their turn.
 */
static uint32_t drain(tun_dev *d, int *err) {
  uint32_t count = 0;
  const size_t room = d->slot_size - d->headroom;
  *err = 0;
  while (count < d->slots) {
    uint8_t *slot = d->ring + (size_t)count * d->slot_size + d->headroom;
    ssize_t n = read(d->fd, slot, room);
    if (n > 0) {
      /* Larger than a slot (the MTU was raised behind our back): drop, like a router would. */
      if ((size_t)n == room && truncated(slot, room)) continue;
      d->lengths[count++] = (uint32_t)n;
      continue;
    }
    if (n == 0) break; /* TUN never sends empty packets; nothing more to take */
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    *err = errno;
    break;
  }
  return count;
}

static void on_readable(uv_poll_t *h, int status, int events) {
  (void)events;
  tun_dev *d = h->data;
  napi_handle_scope scope;
  if (d->closed || napi_open_handle_scope(d->env, &scope) != napi_ok) return;
  if (!resolve_ring(d)) {
    char msg[128];
    snprintf(msg, sizeof msg, "TUN device %s: the ring buffer was detached or shrunk", d->name);
    deliver_error(d, "ERR_AGENT_TUN_RING", msg);
  } else {
    /* On POLLERR libuv passes UV_EBADF and stops the handle; read() names the real cause
     * (EBADFD once the interface was deleted) and still yields anything queued before. */
    int err;
    uint32_t count = drain(d, &err);
    if (count > 0) deliver_batch(d, count);
    if (err == 0 && status < 0) err = -status; /* libuv statuses are negated errnos on Unix */
    /* The batch handler may have closed the device; d stays valid until the close callback. */
    if (err != 0 && !d->closed) deliver_read_error(d, err);
  }
  napi_close_handle_scope(d->env, scope);
}

/* Takes the references start() needs; on failure the caller releases what was taken. */
static napi_status take_refs(napi_env env, tun_dev *d, napi_value *argv) {
  napi_status s;
  if ((s = napi_create_reference(env, argv[0], 1, &d->self_ref)) != napi_ok) return s;
  if ((s = napi_create_reference(env, argv[1], 1, &d->ring_ref)) != napi_ok) return s;
  if ((s = napi_create_reference(env, argv[2], 1, &d->lengths_ref)) != napi_ok) return s;
  if ((s = napi_create_reference(env, argv[6], 1, &d->on_batch_ref)) != napi_ok) return s;
  if ((s = napi_create_reference(env, argv[7], 1, &d->on_error_ref)) != napi_ok) return s;
  napi_value name;
  if ((s = napi_create_string_utf8(env, "agent:tun", NAPI_AUTO_LENGTH, &name)) != napi_ok) return s;
  return napi_async_init(env, argv[0], name, &d->async_ctx);
}

static napi_value tun_start(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  tun_dev *d;
  void *ring;
  size_t ring_len;
  napi_typedarray_type ltype;
  size_t lcount;
  void *lengths;
  uint32_t slot_size, headroom, slots;

  NAPI_OK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 8) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS",
                          "start(handle, ring, lengths, slotSize, headroom, slots, onBatch, onError)");
    return NULL;
  }
  if (get_dev(env, argv[0], &d) == NULL) return NULL;
  if (d->closed) {
    throw_error(env, "ERR_AGENT_TUN_CLOSED", "TUN device is closed");
    return NULL;
  }
  if (d->poll_open) {
    throw_error(env, "ERR_AGENT_TUN_STARTED", "TUN device is already started");
    return NULL;
  }
  NAPI_OK(env, napi_get_buffer_info(env, argv[1], &ring, &ring_len));
  NAPI_OK(env, napi_get_typedarray_info(env, argv[2], &ltype, &lcount, &lengths, NULL, NULL));
  NAPI_OK(env, napi_get_value_uint32(env, argv[3], &slot_size));
  NAPI_OK(env, napi_get_value_uint32(env, argv[4], &headroom));
  NAPI_OK(env, napi_get_value_uint32(env, argv[5], &slots));
  if (ltype != napi_uint32_array || slots == 0 || headroom >= slot_size || lcount < slots ||
      (uint64_t)slots * slot_size > ring_len) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "ring does not match slotSize/headroom/slots");
    return NULL;
  }

  uv_loop_t *loop;
  NAPI_OK(env, napi_get_uv_event_loop(env, &loop));
  napi_status s = take_refs(env, d, argv);
  if (s != napi_ok) {
    throw_napi(env); /* before release_js, whose calls would reset the error info */
    release_js(env, d);
    return NULL;
  }
  d->slot_size = slot_size;
  d->headroom = headroom;
  d->slots = slots;

  int rc = uv_poll_init(loop, &d->poll, d->fd);
  if (rc != 0) {
    release_js(env, d);
    throw_errno(env, -rc, "cannot watch TUN device");
    return NULL;
  }
  d->poll.data = d;
  d->poll_open = true;
  d->refs++; /* released in on_poll_closed */

  rc = uv_poll_start(&d->poll, UV_READABLE, on_readable);
  if (rc == 0 && napi_add_async_cleanup_hook(env, on_env_cleanup, d, &d->cleanup_hook) != napi_ok) rc = UV_ENOMEM;
  if (rc != 0) {
    dev_close(env, d); /* the poll struct is closing, so this device cannot start again */
    throw_errno(env, -rc, "cannot watch TUN device");
    return NULL;
  }
  return NULL;
}

/* ---------- writing ---------- */

/* The kernel refused this packet but the device is fine: count it as a drop, like a router. */
static bool is_drop(int err) {
  return err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS || err == EBADF ||
         err == EINVAL /* not an IPv4/IPv6 packet */ || err == EMSGSIZE || err == EIO;
}

/* 0 on success, else the errno. */
static int write_packet(int fd, const uint8_t *p, size_t len) {
  for (;;) {
    ssize_t n = write(fd, p, len);
    if (n >= 0) return 0; /* TUN writes are whole-packet */
    if (errno != EINTR) return errno;
  }
}

static void throw_write_error(napi_env env, tun_dev *d, int err) {
  char msg[256];
  if (err == EBADFD) {
    snprintf(msg, sizeof msg, "TUN device %s was removed (write: %s)", d->name, strerror(err));
  } else {
    snprintf(msg, sizeof msg, "TUN device %s: write failed: %s", d->name, strerror(err));
  }
  throw_error(env, errno_code(err), msg);
}

static napi_value make_bool(napi_env env, bool v) {
  napi_value r;
  NAPI_OK(env, napi_get_boolean(env, v, &r));
  return r;
}

static napi_value tun_write(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  tun_dev *d;
  void *data;
  size_t len;
  uint32_t offset, length;

  NAPI_OK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 4) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "write(handle, buf, offset, length)");
    return NULL;
  }
  if (get_dev(env, argv[0], &d) == NULL) return NULL;
  NAPI_OK(env, napi_get_buffer_info(env, argv[1], &data, &len));
  NAPI_OK(env, napi_get_value_uint32(env, argv[2], &offset));
  NAPI_OK(env, napi_get_value_uint32(env, argv[3], &length));
  if ((uint64_t)offset + length > len) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "offset + length exceeds the buffer");
    return NULL;
  }
  if (d->closed) return make_bool(env, false);
  int err = write_packet(d->fd, (const uint8_t *)data + offset, length);
  if (err == 0) return make_bool(env, true);
  if (is_drop(err)) return make_bool(env, false);
  throw_write_error(env, d, err);
  return NULL;
}

static napi_value tun_write_batch(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  tun_dev *d;
  void *data;
  size_t len;
  napi_typedarray_type otype, ltype;
  size_t ocount, lcount;
  void *offs, *lens;
  uint32_t count;

  NAPI_OK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 5) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "writeBatch(handle, buf, offsets, lengths, count)");
    return NULL;
  }
  if (get_dev(env, argv[0], &d) == NULL) return NULL;
  NAPI_OK(env, napi_get_buffer_info(env, argv[1], &data, &len));
  NAPI_OK(env, napi_get_typedarray_info(env, argv[2], &otype, &ocount, &offs, NULL, NULL));
  NAPI_OK(env, napi_get_typedarray_info(env, argv[3], &ltype, &lcount, &lens, NULL, NULL));
  NAPI_OK(env, napi_get_value_uint32(env, argv[4], &count));
  if (otype != napi_uint32_array || ltype != napi_uint32_array || count > ocount || count > lcount) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "offsets/lengths must be Uint32Arrays of at least count entries");
    return NULL;
  }
  const uint32_t *o = offs, *l = lens;
  for (uint32_t i = 0; i < count; i++) {
    if ((uint64_t)o[i] + l[i] > len) {
      napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "a packet's offset + length exceeds the buffer");
      return NULL;
    }
  }

  uint32_t written = 0;
  for (uint32_t i = 0; i < count && !d->closed; i++) {
    int err = write_packet(d->fd, (const uint8_t *)data + o[i], l[i]);
    if (err == 0) {
      written++;
    } else if (!is_drop(err)) {
      throw_write_error(env, d, err);
      return NULL;
    }
  }
  napi_value r;
  NAPI_OK(env, napi_create_uint32(env, written, &r));
  return r;
}

/* ---------- close ---------- */

static napi_value tun_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  tun_dev *d;
  NAPI_OK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "close(handle)");
    return NULL;
  }
  if (get_dev(env, argv[0], &d) == NULL) return NULL;
  dev_close(env, d);
  return NULL;
}

/* ---------- module ---------- */

NAPI_MODULE_INIT() {
  static const struct {
    const char *name;
    napi_callback fn;
  } fns[] = {
      {"open", tun_open},   {"start", tun_start}, {"write", tun_write},
      {"writeBatch", tun_write_batch}, {"close", tun_close},
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value f;
    NAPI_OK(env, napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f));
    NAPI_OK(env, napi_set_named_property(env, exports, fns[i].name, f));
  }
  return exports;
}
