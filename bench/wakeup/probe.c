/* TUN echo answered from a libuv poll callback inside Node: mode 0 in C only, mode 1 after an
 * empty JS call via napi_make_callback, mode 2 via napi_call_function. See run.mjs. */
#include <node_api.h>
#include <uv.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <stdlib.h>
static int fd, mode; static uv_poll_t poll_h; static napi_env genv; static napi_ref cb_ref; static napi_async_context actx;
static unsigned char b[2048];
static unsigned short cs(unsigned char *p, int n) { unsigned long s = 0; for (int i = 0; i + 1 < n; i += 2) s += (p[i] << 8) | p[i + 1]; if (n & 1) s += p[n - 1] << 8; while (s >> 16) s = (s & 0xffff) + (s >> 16); return ~s & 0xffff; }
static void echo(int n) { for (int j = 0; j < 4; j++) { unsigned char t = b[12 + j]; b[12 + j] = b[16 + j]; b[16 + j] = t; } b[20] = 0; b[22] = b[23] = 0; unsigned short c = cs(b + 20, n - 20); b[22] = c >> 8; b[23] = c & 255; write(fd, b, n); }
static void on_poll(uv_poll_t *h, int st, int ev) {
  int n;
  while ((n = read(fd, b, sizeof b)) > 0) {
    if (n < 28 || b[9] != 1) continue;
    if (mode >= 1) { napi_handle_scope sc; napi_open_handle_scope(genv, &sc); napi_value cb, g, r; napi_get_reference_value(genv, cb_ref, &cb); napi_get_global(genv, &g);
      if (mode == 1) napi_make_callback(genv, actx, g, cb, 0, NULL, &r); else napi_call_function(genv, g, cb, 0, NULL, &r);
      napi_close_handle_scope(genv, sc); }
    echo(n);
  }
}
static napi_value start(napi_env env, napi_callback_info info) {
  size_t argc = 2; napi_value a[2]; napi_get_cb_info(env, info, &argc, a, NULL, NULL); napi_get_value_int32(env, a[0], &mode); napi_create_reference(env, a[1], 1, &cb_ref); genv = env;
  napi_value name; napi_create_string_utf8(env, "p", 1, &name); napi_async_init(env, NULL, name, &actx);
  fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK); struct ifreq r; memset(&r, 0, sizeof r); r.ifr_flags = IFF_TUN | IFF_NO_PI; strcpy(r.ifr_name, "e0"); ioctl(fd, TUNSETIFF, &r);
  uv_loop_t *loop; napi_get_uv_event_loop(env, &loop); uv_poll_init(loop, &poll_h, fd); uv_poll_start(&poll_h, UV_READABLE, on_poll); return NULL; }
NAPI_MODULE_INIT() { napi_value f; napi_create_function(env, "start", 5, start, NULL, &f); napi_set_named_property(env, exports, "start", f); return exports; }
