/*
 * agent_native: one addon, three parts (src/core/native/addon.c puts them together):
 *   tun   the TUN device (src/core/tun/native/tun.c)
 *   net   the carrier sockets, UDP and raw IPv4 (src/core/carrier/native/net.c)
 *   fast  the native fast path over one of each (src/core/device/native/fastpath.c)
 * One .node, so the fast path can reach the fds and rings of the other two.
 */
#ifndef AGENT_NATIVE_H
#define AGENT_NATIVE_H

#include <node_api.h>
#include <stdint.h>

#include "poller.h"

/* Each sets its functions on `exports`; NULL (exception pending) on failure. */
napi_value tun_init(napi_env env, napi_value exports);
napi_value net_init(napi_env env, napi_value exports);
napi_value fast_init(napi_env env, napi_value exports);

/* The poller behind a TUN device or a socket handle; NULL (exception pending) for anything else. */
poller *tun_poller(napi_env env, napi_value handle);
poller *net_poller(napi_env env, napi_value handle);
/* A socket's views of the current batch: the sender's address and port per slot (host order). */
void net_batch_meta(poller *p, uint32_t **addrs, uint16_t **ports);

#endif
