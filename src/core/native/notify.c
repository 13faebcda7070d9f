/*
 * notify(socketPath, message): the datagram of sd_notify(3), sent without libsystemd
 * (notify.h). The caller (src/core/service/notify.ts) reads $NOTIFY_SOCKET and decides what to
 * say; this only checks the address and sends. Path sockets and abstract ones ('@', which
 * systemd uses for its own sockets in containers and for NOTIFY_SOCKET of `systemd-run`) are
 * both supported; vsock addresses are not (EAFNOSUPPORT).
 */
#define _GNU_SOURCE
#include "notify.h"

#include "agent.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int agent_notify_send(const char *socket_path, size_t path_len, const char *msg, size_t len) {
  struct sockaddr_un sa;
  socklen_t sa_len;
  if (socket_path == NULL || path_len == 0 || memchr(socket_path, '\0', path_len) != NULL) return EINVAL;
  if (msg == NULL || len == 0) return EINVAL;
  if (len > AGENT_NOTIFY_MAX) return EMSGSIZE;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  if (socket_path[0] == '@') {
    /* Abstract: a NUL, then the name, not NUL-terminated; the length says where it ends. */
    if (path_len < 2) return EINVAL;
    if (path_len > sizeof sa.sun_path) return ENAMETOOLONG;
    memcpy(sa.sun_path + 1, socket_path + 1, path_len - 1);
    sa_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + path_len);
  } else if (socket_path[0] == '/') {
    /* In the file system: NUL-terminated, so one byte less fits. */
    if (path_len >= sizeof sa.sun_path) return ENAMETOOLONG;
    memcpy(sa.sun_path, socket_path, path_len);
    sa_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + path_len + 1);
  } else {
    return EAFNOSUPPORT;
  }
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  ssize_t sent;
  /* MSG_DONTWAIT: when the receiver's queue is full (PID 1 busy), a blocking sendto would stop
   * the agent's event loop until it drains; EAGAIN instead, a failed send like any other. */
  do {
    sent = sendto(fd, msg, len, MSG_NOSIGNAL | MSG_DONTWAIT, (const struct sockaddr *)&sa, sa_len);
  } while (sent < 0 && errno == EINTR);
  int err = sent < 0 ? errno : (size_t)sent != len ? EMSGSIZE : 0;
  if (close(fd) != 0 && err == 0 && errno != EINTR) err = errno;
  return err;
}

/* A JS string argument copied into buf (of size cap, which must leave room for the NUL); its
 * byte length in *len. False (exception pending) when it is not a string or does not fit. */
static bool get_string(napi_env env, napi_value v, char *buf, size_t cap, size_t *len, const char *what) {
  napi_valuetype t;
  size_t need = 0;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_string) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", what);
    return false;
  }
  if (napi_get_value_string_utf8(env, v, NULL, 0, &need) != napi_ok) return false;
  if (need >= cap) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s is too long (%zu bytes, at most %zu)", what, need, cap - 1);
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
    return false;
  }
  if (napi_get_value_string_utf8(env, v, buf, cap, len) != napi_ok || *len != need) {
    napi_throw_error(env, "ERR_AGENT_NOTIFY", "cannot read a string argument");
    return false;
  }
  return true;
}

static napi_value js_notify(napi_env env, napi_callback_info info) {
  napi_value argv[2], result;
  /* sun_path's size bounds any address that can work; longer ones fail in agent_notify_send. */
  char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 2];
  char *msg;
  size_t path_len = 0, msg_len = 0;
  if (!agent_args(env, info, 2, argv, "notify(socketPath, message)")) return NULL;
  if (!get_string(env, argv[0], path, sizeof path, &path_len, "socketPath")) return NULL;
  msg = malloc(AGENT_NOTIFY_MAX + 1);
  if (msg == NULL) {
    napi_throw_error(env, "ERR_AGENT_NOTIFY", "out of memory");
    return NULL;
  }
  if (!get_string(env, argv[1], msg, AGENT_NOTIFY_MAX + 1, &msg_len, "message")) {
    free(msg);
    return NULL;
  }
  int err = agent_notify_send(path, path_len, msg, msg_len);
  free(msg);
  if (err != 0) {
    char text[160];
    snprintf(text, sizeof text, "notify %s: %s", path, strerror(err));
    napi_value code, message, error;
    if (napi_create_string_utf8(env, "ERR_AGENT_NOTIFY", NAPI_AUTO_LENGTH, &code) == napi_ok &&
        napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &message) == napi_ok &&
        napi_create_error(env, code, message, &error) == napi_ok) {
      napi_value errno_v;
      if (napi_create_int32(env, err, &errno_v) == napi_ok) napi_set_named_property(env, error, "errno", errno_v);
      napi_throw(env, error);
    } else {
      napi_throw_error(env, "ERR_AGENT_NOTIFY", text);
    }
    return NULL;
  }
  if (napi_get_boolean(env, true, &result) != napi_ok) return NULL;
  return result;
}

napi_value notify_init(napi_env env, napi_value exports) {
  napi_value f;
  if (napi_create_function(env, "notify", NAPI_AUTO_LENGTH, js_notify, NULL, &f) != napi_ok ||
      napi_set_named_property(env, exports, "notify", f) != napi_ok) {
    return NULL;
  }
  return exports;
}
