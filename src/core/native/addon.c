/* agent_native's module: exports {tun, net, fast, stream}, each an object of functions (see agent.h),
 * and notify(socketPath, message), the service manager's readiness datagram (notify.h). */
#define _GNU_SOURCE
#include <node_api.h>

#include "agent.h"
#include "notify.h"

static napi_value part(napi_env env, napi_value exports, const char *name,
                       napi_value (*init)(napi_env, napi_value)) {
  napi_value obj;
  if (napi_create_object(env, &obj) != napi_ok) return NULL;
  if (init(env, obj) == NULL) return NULL;
  if (napi_set_named_property(env, exports, name, obj) != napi_ok) return NULL;
  return obj;
}

NAPI_MODULE_INIT() {
  if (part(env, exports, "tun", tun_init) == NULL || part(env, exports, "net", net_init) == NULL ||
      part(env, exports, "fast", fast_init) == NULL || part(env, exports, "stream", stream_init) == NULL ||
      notify_init(env, exports) == NULL) {
    return NULL;
  }
  return exports;
}
