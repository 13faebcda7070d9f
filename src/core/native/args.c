/* Small pieces the addon's parts share: argument checks, exports, calls into JS, the clock. */
#define _GNU_SOURCE
#include "agent.h"

#include <time.h>

double agent_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec * 1000.0 + (double)(ts.tv_nsec / 1000000);
}

void agent_call_js(napi_env env, napi_async_context ctx, napi_ref fn_ref, size_t argc, napi_value *argv) {
  napi_value fn, recv, result;
  bool pending = false;
  if (fn_ref == NULL || napi_get_reference_value(env, fn_ref, &fn) != napi_ok || fn == NULL) return;
  /* napi_make_callback insists on an object receiver; undefined would throw a TypeError. */
  if (napi_get_global(env, &recv) != napi_ok) return;
  if (napi_make_callback(env, ctx, recv, fn, argc, argv, &result) != napi_ok &&
      napi_is_exception_pending(env, &pending) == napi_ok && pending) {
    /* Nobody up the stack can catch it: report it like any other uncaught exception. */
    napi_value exc;
    if (napi_get_and_clear_last_exception(env, &exc) == napi_ok) napi_fatal_exception(env, exc);
  }
}

bool agent_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv, const char *usage) {
  size_t argc = n;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < n) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", usage);
    return false;
  }
  return true;
}

bool agent_get_u32(napi_env env, napi_value v, uint32_t *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number || napi_get_value_uint32(env, v, out) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "expected an unsigned 32-bit integer");
    return false;
  }
  return true;
}

void *agent_unwrap(napi_env env, napi_value v, const napi_type_tag *tag, const char *not_handle) {
  bool ok = false;
  void *data = NULL;
  if (napi_check_object_type_tag(env, v, tag, &ok) != napi_ok || !ok || napi_unwrap(env, v, &data) != napi_ok ||
      data == NULL) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", not_handle);
    return NULL;
  }
  return data;
}

napi_value agent_export(napi_env env, napi_value exports, const agent_fn *fns, size_t n) {
  for (size_t i = 0; i < n; i++) {
    napi_value f;
    if (napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f) != napi_ok ||
        napi_set_named_property(env, exports, fns[i].name, f) != napi_ok) {
      return NULL;
    }
  }
  return exports;
}
