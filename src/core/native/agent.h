/*
 * agent_native: one addon, four parts (src/core/native/addon.c puts them together):
 *   tun   the TUN device (src/core/tun/native/tun.c)
 *   net   the carrier sockets, UDP and raw IPv4 (src/core/carrier/native/net.c)
 *   fast  the native fast path over one of each (src/core/device/native/fastpath.c)
 *   stream the tls transport's records on its TCP connection (src/core/carrier/native/stream.c)
 * One .node, so the fast path can reach the fds and rings of the other two.
 */
#ifndef AGENT_NATIVE_H
#define AGENT_NATIVE_H

#include <netinet/in.h>
#include <stdbool.h>
#include <node_api.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "poller.h"

/* Each sets its functions on `exports`; NULL (exception pending) on failure. */
napi_value tun_init(napi_env env, napi_value exports);
napi_value net_init(napi_env env, napi_value exports);
napi_value fast_init(napi_env env, napi_value exports);
napi_value stream_init(napi_env env, napi_value exports);

/* Bytes of struct virtio_net_hdr before each packet of a TUN device opened with vnetHdr. */
#define TUN_VNET_HDR 10
/* Whether the TUN device was opened with IFF_VNET_HDR. */
bool tun_vnet(poller *p);

/* The poller behind a TUN device or a socket handle; NULL (exception pending) for anything else. */
poller *tun_poller(napi_env env, napi_value handle);
poller *net_poller(napi_env env, napi_value handle);
/*
 * sendmmsg of msgs[0, n) on socket p, retrying past a stale ICMP error, counting what the kernel
 * refused in the socket's send errors; *sent += what it took. 0, EAGAIN (send buffer full, the
 * rest dropped) or an errno that is not the datagrams' fault (the rest not sent).
 */
int net_send_messages(poller *p, struct mmsghdr *msgs, uint32_t n, uint32_t *sent);
/* A socket's views of the current batch: the sender's address and port per slot (host order). */
void net_batch_meta(poller *p, uint32_t **addrs, uint16_t **ports);
/*
 * Fills message m to send payload[0, len) to addr:port on socket p, with iov[0..1] and, for a
 * socket that writes its own outer IPv4 header, hdr[0..19] (net.c says how). Every send of a
 * carrier socket goes through it, the fast path's included.
 */
void net_prepare_send(poller *p, struct msghdr *m, struct iovec iov[2], uint8_t hdr[20], struct sockaddr_in *sa,
                      const uint8_t *payload, uint32_t len, uint32_t addr, uint16_t port);

/* ---------- for the node's worker threads (src/core/device/native/workers.c) ---------- */

/*
 * Reads TUN packets from fd into ring slots [0, slots) (each at headroom, its length in
 * lengths) until the queue is empty or the slots are full; thread-safe. *err: a read error.
 */
uint32_t tun_read_into(int fd, bool vnet_hdr, uint8_t *ring, uint32_t *lengths, uint32_t slot_size, uint32_t headroom,
                       uint32_t slots, int *err);
/*
 * Main thread: hands packets a worker read from another queue to this TUN device's batch
 * handler (its fast path filter, then JS) as if this device had read them. Packet i is at
 * data + i * stride.
 */
void tun_inject(poller *p, const uint8_t *data, uint32_t stride, const uint32_t *lengths, uint32_t n);
/* Likewise for datagrams a worker received on a sibling socket, with their sources. */
void net_inject(poller *p, const uint8_t *data, uint32_t stride, const uint32_t *lengths, const uint32_t *addrs,
                const uint16_t *ports, uint32_t n);
/* The largest payload socket p receives (set by start); 0 before. */
uint32_t net_max_payload(poller *p);
/*
 * Points a socket that JS never starts at a ring of the caller's (a worker's), so
 * net_read_batch can receive into it from another thread. False: slots exceeds its batch.
 */
bool net_use_ring(poller *p, uint8_t *ring, uint32_t *lengths, uint32_t *addrs, uint16_t *ports, uint32_t slot_size,
                  uint32_t headroom, uint32_t max_payload, uint32_t slots);
/* Forgets that ring (the worker that owned it is gone or never started). */
void net_drop_ring(poller *p);
/* recvmmsg into that ring until empty or full; how many. *err: an error that is not ICMP's. */
uint32_t net_read_batch(poller *p, int *err);
/* After POLLERR: reads the ICMP errors queued and clears the socket error; 0, or the errno of
 * an error that is not ICMP's (polling on would spin). */
int net_clear_pollerr(poller *p);

/* ---------- small shared pieces (args.c) ---------- */

/* Wall-clock time in ms since the epoch, as JS's Date.now(). */
double agent_now_ms(void);
/* Calls fn_ref(argv) from a libuv callback in async context ctx; an exception it throws is
 * reported as uncaught (nobody up the stack can catch it). */
void agent_call_js(napi_env env, napi_async_context ctx, napi_ref fn_ref, size_t argc, napi_value *argv);

/* Reads exactly n arguments into argv; false (TypeError pending) when fewer were passed. */
bool agent_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv, const char *usage);
/* v as an unsigned 32-bit integer; false (TypeError pending) otherwise. */
bool agent_get_u32(napi_env env, napi_value v, uint32_t *out);
/* The native object behind a handle tagged `tag`; NULL (TypeError not_handle pending) otherwise. */
void *agent_unwrap(napi_env env, napi_value v, const napi_type_tag *tag, const char *not_handle);

typedef struct agent_fn {
  const char *name;
  napi_callback fn;
} agent_fn;
/* Sets exports[name] = fn for each of the n functions; exports, or NULL on failure. */
napi_value agent_export(napi_env env, napi_value exports, const agent_fn *fns, size_t n);

/* ---------- between the fast path and the tls data channel (stream.c) ---------- */

typedef struct fast_path fast_path;
typedef struct tls_stream tls_stream;

/* The stream behind a JS handle; NULL (exception pending) for anything else. */
tls_stream *stream_get(napi_env env, napi_value handle);
/* Adds a Data frame for pkt to the stream's open record; false: dropped (closed, queue full). */
bool stream_queue_data(tls_stream *s, const uint8_t *pkt, uint32_t len);
/* Whether frames were queued since the last flush. */
bool stream_dirty(const tls_stream *s);
/* Seals and writes what was queued: once per TUN batch. */
void stream_flush(tls_stream *s);
/* A reference the fast path holds while the stream is in its table (so teardown, which runs
 * finalizers in any order, cannot free one before the other lets go). */
void stream_retain(tls_stream *s);
void stream_release(tls_stream *s);
/* The fast path carrying the stream's session at tunnel address `address`; fp NULL: none. */
void stream_bind(tls_stream *s, fast_path *fp, uint32_t address);
/*
 * A Data frame's payload arrived on the stream of the session at `address`: true if the fast
 * path takes it (a well-formed packet; on the node from that address), queued for the TUN
 * until fast_stream_flush, which must come before the bytes behind it change. False: JS's.
 */
bool fast_stream_take(fast_path *fp, uint32_t address, const uint8_t *pkt, uint32_t len);
void fast_stream_flush(fast_path *fp);

#endif
