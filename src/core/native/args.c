/* Argument checks and exports shared by the addon's parts that are not pollers (see agent.h). */
#define _GNU_SOURCE
#include "agent.h"

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
