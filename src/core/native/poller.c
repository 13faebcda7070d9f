/*
 * poller: the scaffolding agent_tun and agent_net share (see poller.h). Built into both
 * addons (binding.gyp), so each .node carries its own copy.
 */
#define _GNU_SOURCE
#include "agent.h" /* agent_call_js; it includes poller.h */

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* ---------- errors ---------- */

void poller_throw_error(napi_env env, const char *code, const char *msg) {
  napi_value c, m, err;
  if (napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &c) != napi_ok ||
      napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m) != napi_ok ||
      napi_create_error(env, c, m, &err) != napi_ok) {
    napi_throw_error(env, code, msg); /* best effort when even allocation fails */
    return;
  }
  napi_throw(env, err);
}

/*
 * glibc names every errno; libuv (the fallback) lacks a few, and its uv_err_name leaks a string
 * for those, so the _r variant writes into the caller's buffer.
 */
const char *poller_errno_name(int err, char *buf, size_t len) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  const char *name = strerrorname_np(err);
  if (name != NULL) return name;
  snprintf(buf, len, "E%d", err);
  return buf;
#else
  return uv_err_name_r(uv_translate_sys_error(err), buf, len);
#endif
}

void poller_throw_errno(const poller_class *cls, napi_env env, int err, const char *what) {
  char msg[256], name[32];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  poller_throw_error(env, cls->errno_code(err, name, sizeof name), msg);
}

void poller_throw_napi(const poller_class *cls, napi_env env) {
  bool pending = false;
  const napi_extended_error_info *info = NULL;
  napi_get_last_error_info(env, &info); /* first: any other call resets it */
  const char *msg = info && info->error_message ? info->error_message : "N-API call failed";
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) return;
  poller_throw_error(env, cls->napi_code, msg);
}

/* ---------- arguments and handles ---------- */

bool poller_args(const poller_class *cls, napi_env env, napi_callback_info info, size_t n, napi_value *argv,
                 const char *usage) {
  size_t argc = n;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) {
    poller_throw_napi(cls, env);
    return false;
  }
  if (argc < n) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", usage);
    return false;
  }
  return true;
}

poller *poller_get(const poller_class *cls, napi_env env, napi_value handle) {
  bool ok = false;
  void *data = NULL;
  POLLER_NAPI_OK(cls, env, napi_check_object_type_tag(env, handle, &cls->tag, &ok));
  if (!ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", cls->not_handle);
    return NULL;
  }
  POLLER_NAPI_OK(cls, env, napi_unwrap(env, handle, &data));
  return data;
}

napi_status poller_set_count(napi_env env, napi_value obj, const char *key, uint64_t v) {
  napi_value n;
  napi_status st = napi_create_double(env, (double)v, &n);
  return st == napi_ok ? napi_set_named_property(env, obj, key, n) : st;
}

napi_value poller_bool(const poller_class *cls, napi_env env, bool v) {
  napi_value r;
  POLLER_NAPI_OK(cls, env, napi_get_boolean(env, v, &r));
  return r;
}

/* ---------- lifetime ---------- */

static void poller_unref(poller *p) {
  if (--p->refs != 0) return;
  if (p->filter_release != NULL) p->filter_release(p->filter_ctx, p);
  p->cls->free(p);
}

static void delete_ref(napi_env env, napi_ref *ref) {
  if (*ref == NULL) return;
  napi_delete_reference(env, *ref); /* cannot fail for a live ref; nothing to do if it did */
  *ref = NULL;
}

/* Drops everything start() took from JS. */
static void release_js(napi_env env, poller *p) {
  delete_ref(env, &p->ring_ref);
  delete_ref(env, &p->meta_ref);
  delete_ref(env, &p->on_batch_ref);
  delete_ref(env, &p->on_error_ref);
  delete_ref(env, &p->self_ref);
  if (p->async_ctx != NULL) {
    napi_async_destroy(env, p->async_ctx);
    p->async_ctx = NULL;
  }
  p->ring = NULL;
  p->lengths = NULL;
}

static void on_poll_closed(uv_handle_t *h) {
  poller *p = h->data;
  /* Either unregisters the hook (JS closed us) or tells Node teardown we are done. */
  if (p->cleanup_hook != NULL) {
    napi_remove_async_cleanup_hook(p->cleanup_hook);
    p->cleanup_hook = NULL;
  }
  poller_unref(p);
}

static void close_poll(poller *p) {
  if (!p->poll_open) return;
  p->poll_open = false;
  uv_poll_stop(&p->poll); /* cannot fail for an initialised handle */
  /* uv_close removes the fd from epoll now, so the fd may be closed right after. */
  uv_close((uv_handle_t *)&p->poll, on_poll_closed);
}

void poller_close(napi_env env, poller *p) {
  if (p->closed) return;
  if (p->worker_stop != NULL) p->worker_stop(p->worker_ctx); /* clears the hook */
  p->closed = true;
  close_poll(p);
  if (p->fd >= 0) {
    /* On Linux close(2) releases the fd even when it reports an error: nothing to retry. A
     * TUN fd or a datagram socket has no lingering state, so this never blocks. */
    (void)close(p->fd);
    p->fd = -1;
  }
  release_js(env, p);
}

static void on_finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  poller *p = data;
  poller_close(env, p);
  poller_unref(p);
}

/* Node is tearing the environment down (worker exit): close so the loop can close. */
static void on_env_cleanup(napi_async_cleanup_hook_handle handle, void *arg) {
  poller *p = arg;
  (void)handle; /* same as p->cleanup_hook */
  /* The hook lives exactly as long as the poll handle: on_poll_closed removes it, which tells
   * Node we are done. If JS already closed us, that close callback is just pending. */
  poller_close(p->env, p);
}

void poller_init(poller *p, const poller_class *cls, napi_env env, int fd) {
  p->cls = cls;
  p->env = env;
  p->fd = fd;
  p->refs = 1;
}

napi_value poller_wrap(poller *p) {
  const poller_class *cls = p->cls;
  napi_env env = p->env;
  napi_value handle;
  napi_status s = napi_create_object(env, &handle);
  if (s == napi_ok) s = napi_wrap(env, handle, p, on_finalize, NULL, NULL);
  if (s != napi_ok) {
    close(p->fd);
    cls->free(p);
    poller_throw_napi(cls, env);
    return NULL;
  }
  /* From here on the finalizer owns p. */
  POLLER_NAPI_OK(cls, env, napi_type_tag_object(env, handle, &cls->tag));
  return handle;
}

bool poller_check_open(poller *p) {
  if (!p->closed) return true;
  poller_throw_error(p->env, p->cls->closed_code, p->cls->closed_msg);
  return false;
}

/* ---------- start ---------- */

bool poller_check_startable(poller *p) {
  if (!poller_check_open(p)) return false;
  if (p->worker_stop != NULL) {
    poller_throw_error(p->env, p->cls->started_code, "a worker thread of the fast path reads this descriptor");
    return false;
  }
  if (!p->poll_open) return true;
  poller_throw_error(p->env, p->cls->started_code, p->cls->started_msg);
  return false;
}

/* Takes the references start() needs; on failure the caller releases what was taken. */
static napi_status take_refs(poller *p, napi_value self, napi_value ring, napi_value meta, napi_value on_batch,
                             napi_value on_error) {
  napi_env env = p->env;
  napi_status s;
  if ((s = napi_create_reference(env, self, 1, &p->self_ref)) != napi_ok) return s;
  if ((s = napi_create_reference(env, ring, 1, &p->ring_ref)) != napi_ok) return s;
  if ((s = napi_create_reference(env, meta, 1, &p->meta_ref)) != napi_ok) return s;
  if ((s = napi_create_reference(env, on_batch, 1, &p->on_batch_ref)) != napi_ok) return s;
  if ((s = napi_create_reference(env, on_error, 1, &p->on_error_ref)) != napi_ok) return s;
  napi_value name;
  if ((s = napi_create_string_utf8(env, p->cls->async_name, NAPI_AUTO_LENGTH, &name)) != napi_ok) return s;
  return napi_async_init(env, self, name, &p->async_ctx);
}

bool poller_start(poller *p, napi_value self, napi_value ring, napi_value meta, napi_value on_batch,
                  napi_value on_error, uv_poll_cb on_readable) {
  napi_env env = p->env;
  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) {
    poller_throw_napi(p->cls, env);
    return false;
  }
  if (take_refs(p, self, ring, meta, on_batch, on_error) != napi_ok) {
    poller_throw_napi(p->cls, env); /* before release_js, whose calls would reset the error info */
    release_js(env, p);
    return false;
  }

  int rc = uv_poll_init(loop, &p->poll, p->fd);
  if (rc != 0) {
    release_js(env, p);
    poller_throw_errno(p->cls, env, -rc, p->cls->watch_msg);
    return false;
  }
  p->poll.data = p;
  p->poll_open = true;
  p->refs++; /* released in on_poll_closed */

  rc = uv_poll_start(&p->poll, UV_READABLE, on_readable);
  if (rc == 0 && napi_add_async_cleanup_hook(env, on_env_cleanup, p, &p->cleanup_hook) != napi_ok) rc = UV_ENOMEM;
  if (rc != 0) {
    poller_close(env, p); /* the poll struct is closing, so this handle cannot start again */
    poller_throw_errno(p->cls, env, -rc, p->cls->watch_msg);
    return false;
  }
  return true;
}

/* ---------- wakeups ---------- */

/* Calls a JS function from a libuv callback: own scope, async context, uncaught errors. */
static void call_js(poller *p, napi_ref fn_ref, napi_value arg) {
  agent_call_js(p->env, p->async_ctx, fn_ref, 1, &arg);
}

void poller_deliver_batch(poller *p, uint32_t count) {
  napi_handle_scope scope;
  napi_value n;
  if (p->filter != NULL) count = p->filter(p->filter_ctx, p, count);
  if (count == 0) return; /* the fast path took it all: JS is not woken */
  if (napi_open_handle_scope(p->env, &scope) != napi_ok) return;
  if (napi_create_uint32(p->env, count, &n) == napi_ok) call_js(p, p->on_batch_ref, n);
  napi_close_handle_scope(p->env, scope);
}

void poller_deliver_error(poller *p, const char *code, const char *msg) {
  napi_handle_scope scope;
  napi_value c, m, e;
  uv_poll_stop(&p->poll);
  if (napi_open_handle_scope(p->env, &scope) != napi_ok) return;
  if (napi_create_string_utf8(p->env, code, NAPI_AUTO_LENGTH, &c) == napi_ok &&
      napi_create_string_utf8(p->env, msg, NAPI_AUTO_LENGTH, &m) == napi_ok &&
      napi_create_error(p->env, c, m, &e) == napi_ok) {
    call_js(p, p->on_error_ref, e);
  }
  napi_close_handle_scope(p->env, scope);
}

void poller_deliver_ring_error(poller *p) {
  char msg[128];
  snprintf(msg, sizeof msg, "%s: the ring buffer was detached or shrunk", p->label);
  poller_deliver_error(p, p->cls->ring_code, msg);
}

/*
 * A few N-API calls per batch, not per packet: if JS transferred or detached an ArrayBuffer, a
 * cached pointer would let the kernel write into memory that is no longer ours.
 */
bool poller_ring(poller *p, uint8_t **ring, napi_value *meta) {
  napi_value buf;
  void *data = NULL;
  size_t len = 0;
  if (napi_get_reference_value(p->env, p->ring_ref, &buf) != napi_ok || buf == NULL ||
      napi_get_reference_value(p->env, p->meta_ref, meta) != napi_ok || *meta == NULL ||
      napi_get_buffer_info(p->env, buf, &data, &len) != napi_ok) {
    return false;
  }
  if (data == NULL || len < (size_t)p->slots * p->slot_size) return false;
  *ring = data;
  return true;
}

/* ---------- module ---------- */

napi_value poller_export(const poller_class *cls, napi_env env, napi_value exports, const poller_fn *fns, size_t n) {
  for (size_t i = 0; i < n; i++) {
    napi_value f;
    POLLER_NAPI_OK(cls, env, napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f));
    POLLER_NAPI_OK(cls, env, napi_set_named_property(env, exports, fns[i].name, f));
  }
  return exports;
}
