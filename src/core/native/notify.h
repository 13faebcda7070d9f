/*
 * The service manager's readiness protocol (sd_notify(3)) without libsystemd: one datagram of
 * newline-separated KEY=VALUE lines to the AF_UNIX socket that $NOTIFY_SOCKET names. Node.js
 * has no unix datagram sockets, hence C.
 */
#ifndef AGENT_NOTIFY_H
#define AGENT_NOTIFY_H

#include <node_api.h>
#include <stddef.h>

/* The longest message sent: systemd reads at most this much of one datagram (PIPE_BUF). */
#define AGENT_NOTIFY_MAX 4096

/*
 * Sends msg[0, len) to the socket `socket_path` names: "/path" (a socket in the file system) or
 * "@name" (Linux's abstract namespace). 0 when the whole datagram went; else an errno
 * (EINVAL: empty or unsupported address; ENAMETOOLONG: longer than sun_path; EMSGSIZE: message
 * over AGENT_NOTIFY_MAX or cut short; EAGAIN: the receiver's queue is full, as the send never
 * blocks).
 */
int agent_notify_send(const char *socket_path, size_t path_len, const char *msg, size_t len);

/* Sets exports.notify(socketPath, message) -> true, throwing with the errno's text on failure. */
napi_value notify_init(napi_env env, napi_value exports);

#endif
