/*
 * agent_net: the carrier sockets of the datagram transports (GRE-in-UDP, IPIP over UDP,
 * ESP-in-GRE): one UDP socket, or one raw IPv4 socket of protocol 47 / 4, that a node shares
 * between all of its clients.
 *
 * Why our own addon: node:dgram allocates a Buffer and an rinfo object per datagram, calls JS
 * once per datagram and has no recvmmsg/sendmmsg. Here, as in agent_tun, the socket is
 * non-blocking and watched by a uv_poll_t on the main loop; each readable wakeup drains up to
 * a ring's worth of datagrams with recvmmsg(2) and calls JS once for the batch, and sends go
 * straight to the kernel with sendto(2) / sendmmsg(2) and MSG_DONTWAIT.
 *
 * Ring layout (allocated by JS, referenced here while started):
 *   ring: slot i spans [i * slot_size, (i + 1) * slot_size); datagram i's payload starts at
 *         i * slot_size + headroom and is at most max_payload bytes. The headroom is never
 *         written (a raw socket's IPv4 header goes to a scratch area of ours, not the slot).
 *   meta: one ArrayBuffer of slots * 10 bytes: uint32 lengths[slots] at 0, uint32
 *         addrs[slots] at 4 * slots (source IPv4 address, host order), uint16 ports[slots] at
 *         8 * slots (source UDP port, host order; 0 for raw IP).
 * The mmsghdr/iovec/sockaddr arrays recvmmsg fills are allocated once at open and pointed at
 * the ring at start; nothing is allocated per datagram or per wakeup.
 *
 * Errors from ICMP: an unconnected socket hears about ICMP errors (port unreachable...) only
 * with IP_RECVERR, which we set so they can be counted. The kernel then queues each on the
 * socket's error queue, sets the socket error, and reports POLLERR; the pending socket error
 * makes the next send or receive fail once (whichever datagram that happens to be, for any
 * client), and libuv stops a uv_poll_t on POLLERR. So: the error queue is drained and counted
 * (icmpErrors) on every POLLERR wakeup and the poll restarted; a receive that returns such an
 * error is retried; a send that returns one is retried once, so a stale error about an earlier
 * datagram does not drop this one (a real, synchronous error fails again and is counted).
 *
 * JS API (all but open* take the handle returned by open*):
 *   openUdp(addr, port, batch, rcvbuf, sndbuf, reusePort) -> handle   (addr: uint32, host order;
 *        reusePort: SO_REUSEPORT, so the node's workers each have a socket on the same port)
 *   steer(handle, n): the datagrams of one client endpoint all go to one of the n sockets of
 *        its SO_REUSEPORT group, number (source address ^ source port) % n, in bind order
 *   openRaw(protocol, addr, batch, rcvbuf, sndbuf, writeHeader) -> handle
 *        (writeHeader: IP_HDRINCL, the outer header's TOS and DF copied from the inner IPv4)
 *   info(handle) -> {address, port, recvBufferBytes, sendBufferBytes}
 *   start(handle, ring, meta, slotSize, headroom, maxPayload, slots, onBatch(count), onError(err))
 *   send(handle, buf, offset, length, addr, port) -> boolean     (false: dropped, counted)
 *   sendBatch(handle, buf, offsets, lengths, addrs, ports, count) -> number the kernel took
 *   stats(handle) -> {sendErrors, icmpErrors, truncated, fragments, malformed, kernelDrops}
 *   close(handle)                                                (idempotent)
 *
 * Lifetime, polling, the ring references and the JS calls are src/core/native/poller.c's, shared
 * with agent_tun; this file opens the socket, receives into the ring, sends and counts.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/errqueue.h>
#include <linux/filter.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <node_api.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "agent.h"
#include "poller.h"

/* recvmmsg/sendmmsg take at most UIO_MAXIOV messages per call. */
#define MAX_BATCH 1024
/* The IPv4 header without options: what a raw socket's scratch iovec takes per datagram. */
#define IPV4_HEADER 20
/* Counters are kept per errno below this (Linux errnos end at 133). */
#define ERRNO_SLOTS 160
/* Error queue entries read per wakeup at most; the rest wait for the next one (still POLLERR). */
#define ERRQUEUE_BUDGET 256

typedef enum { KIND_UDP, KIND_RAW } sock_kind;

typedef struct net_sock {
  poller p; /* first: a poller pointer is a net_sock pointer; p.label is "UDP socket 0.0.0.0:4754",
             * "raw IP socket for protocol 47"; p.lengths is a view into meta */
  sock_kind kind;
  uint32_t batch; /* capacity of the message arrays below */
  /* Raw only, with IP_HDRINCL: we write the outer IPv4 header (see net_prepare_send). */
  bool hdrincl;
  uint8_t protocol;
  uint32_t bound; /* the address bound to, host order; 0: the kernel picks the source */

  /* Receive side, allocated at open, pointed at the ring by point_iovecs. */
  struct mmsghdr *rmsgs;
  struct iovec *riov; /* raw: 2 per slot (IPv4 header scratch, payload); UDP: 1 per slot */
  struct sockaddr_in *rname;
  uint8_t *rhdr; /* raw only: IPV4_HEADER bytes per slot */
  /* Send side, allocated at open; sendBatch fills them per call. */
  struct mmsghdr *smsgs;
  struct iovec *siov; /* 2 per slot: the outer header (hdrincl only), the payload */
  struct sockaddr_in *sname;
  uint8_t *shdr; /* hdrincl only: IPV4_HEADER bytes per slot */

  /* Set with p.ring and p.lengths by resolve_ring, on every wakeup: views into meta. */
  uint32_t *addrs;
  uint16_t *ports;
  uint32_t max_payload;

  /* Counters, read by stats(). Kept after close, for a last status report. */
  uint64_t send_errors[ERRNO_SLOTS + 1]; /* last slot: errnos >= ERRNO_SLOTS */
  uint64_t icmp_errors[ERRNO_SLOTS + 1];
  uint64_t truncated;
  uint64_t fragments;
  uint64_t malformed;
} net_sock;

static void sock_free(poller *p);

static const poller_class NET = {
    /* Tags our handles so a foreign object passed from JS is rejected instead of dereferenced. */
    .tag = {0x6167656e745f6e65ULL, 0x745f736f636b6574ULL},
    .not_handle = "not a datagram socket handle",
    .napi_code = "ERR_AGENT_NET_NAPI",
    .closed_code = "ERR_AGENT_NET_CLOSED",
    .closed_msg = "the socket is closed",
    .started_code = "ERR_AGENT_NET_STARTED",
    .started_msg = "the socket is already started",
    .ring_code = "ERR_AGENT_NET_RING",
    .watch_msg = "cannot watch the datagram socket",
    .async_name = "agent:net",
    /* errno's symbolic name ("ECONNREFUSED"), as Node's own system errors use for err.code. */
    .errno_code = poller_errno_name,
    .free = sock_free,
};

#define NAPI_OK(env, call) POLLER_NAPI_OK(&NET, env, call)

/* ---------- errors ---------- */

static void format_addr(uint32_t addr, char *buf, size_t len) {
  snprintf(buf, len, "%u.%u.%u.%u", addr >> 24, (addr >> 16) & 255, (addr >> 8) & 255, addr & 255);
}

/*
 * The errors an ICMP message turns into (the kernel's icmp_err_convert, plus time exceeded
 * and parameter problem): pending on the socket, they fail whichever call comes next.
 */
static bool net_is_icmp_error(int err) {
  switch (err) {
    case ECONNREFUSED: /* port unreachable */
    case EHOSTUNREACH: /* host unreachable, administratively prohibited, time exceeded */
    case ENETUNREACH:
    case EHOSTDOWN:
    case ENONET:
    case ENOPROTOOPT: /* protocol unreachable: a raw socket's peer does not speak GRE/IPIP */
    case EPROTO:      /* parameter problem */
    case EMSGSIZE:    /* fragmentation needed */
    case EOPNOTSUPP:  /* source route failed */
      return true;
    default:
      return false;
  }
}

/* Errors that mean the socket or our call is broken, never the datagram: thrown, not counted. */
static bool is_fatal_send_error(int err) {
  return err == EBADF || err == ENOTSOCK || err == EFAULT || err == EDESTADDRREQ;
}

static void count_errno(uint64_t *counters, int err) {
  counters[err >= 0 && err < ERRNO_SLOTS ? err : ERRNO_SLOTS]++;
}

/* ---------- lifetime ---------- */

static void sock_free(poller *p) {
  net_sock *s = (net_sock *)p;
  free(s->rmsgs);
  free(s->riov);
  free(s->rname);
  free(s->rhdr);
  free(s->smsgs);
  free(s->siov);
  free(s->sname);
  free(s->shdr);
  free(s);
}

static net_sock *get_sock(napi_env env, napi_value handle) {
  return (net_sock *)poller_get(&NET, env, handle);
}

/* ---------- open ---------- */

/*
 * Socket buffer sizes: SO_*BUFFORCE (CAP_NET_ADMIN) may exceed net.core.[rw]mem_max, the plain
 * option is capped by it. The kernel doubles either request to leave room for its bookkeeping;
 * info() reports what it settled on. 0 leaves the system default.
 */
static int set_buffer(int fd, int force_opt, int opt, uint32_t bytes) {
  int v = (int)bytes;
  if (bytes == 0) return 0;
  if (setsockopt(fd, SOL_SOCKET, force_opt, &v, sizeof v) == 0) return 0;
  if (errno != EPERM) return errno;
  return setsockopt(fd, SOL_SOCKET, opt, &v, sizeof v) == 0 ? 0 : errno;
}

/*
 * Options every carrier socket gets; 0 or the errno, with *what naming the option that failed.
 *
 * IP_MTU_DISCOVER = IP_PMTUDISC_DO: every outer packet carries DF and the kernel never
 * fragments it, neither here nor (DF) on the path. A fragmented tunnel packet costs the node a
 * reassembly, is lost whole when any fragment is, and is dropped outright by many NATs and
 * firewalls; a tunnel must instead fit its inner MTU to the path. With DO, a datagram larger
 * than the route's MTU (or the path MTU learnt from ICMP fragmentation-needed) fails at once
 * with EMSGSIZE, which send counts, instead of silently going out in pieces. (IP_PMTUDISC_PROBE
 * would also set DF but ignore the learnt path MTU, so such packets would be black-holed
 * further on instead of reported here.)
 *
 * IP_RECVERR: see the top of this file.
 */
static int set_options(int fd, uint32_t rcvbuf, uint32_t sndbuf, const char **what) {
  int on = 1, pmtu = IP_PMTUDISC_DO, err;
  *what = "setsockopt(IP_MTU_DISCOVER)";
  if (setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof pmtu) != 0) return errno;
  *what = "setsockopt(IP_RECVERR)";
  if (setsockopt(fd, IPPROTO_IP, IP_RECVERR, &on, sizeof on) != 0) return errno;
  *what = "setsockopt(SO_RCVBUF)";
  if ((err = set_buffer(fd, SO_RCVBUFFORCE, SO_RCVBUF, rcvbuf)) != 0) return err;
  *what = "setsockopt(SO_SNDBUF)";
  if ((err = set_buffer(fd, SO_SNDBUFFORCE, SO_SNDBUF, sndbuf)) != 0) return err;
  return 0;
}

/* The per-socket arrays, sized for `batch` datagrams; false when out of memory. */
static bool alloc_arrays(net_sock *s, uint32_t batch) {
  s->batch = batch;
  s->rmsgs = calloc(batch, sizeof *s->rmsgs);
  s->riov = calloc((size_t)batch * 2, sizeof *s->riov);
  s->rname = calloc(batch, sizeof *s->rname);
  s->rhdr = s->kind == KIND_RAW ? calloc(batch, IPV4_HEADER) : NULL;
  s->smsgs = calloc(batch, sizeof *s->smsgs);
  s->siov = calloc((size_t)batch * 2, sizeof *s->siov);
  s->sname = calloc(batch, sizeof *s->sname);
  s->shdr = s->kind == KIND_RAW ? calloc(batch, IPV4_HEADER) : NULL;
  if (!s->rmsgs || !s->riov || !s->rname || (s->kind == KIND_RAW && (!s->rhdr || !s->shdr)) || !s->smsgs ||
      !s->siov || !s->sname) {
    return false;
  }
  /* Everything but the ring pointers is fixed: set it once. */
  for (uint32_t i = 0; i < batch; i++) {
    struct msghdr *m = &s->rmsgs[i].msg_hdr;
    m->msg_name = &s->rname[i];
    m->msg_namelen = sizeof s->rname[i];
    if (s->kind == KIND_RAW) {
      s->riov[2 * i].iov_base = s->rhdr + (size_t)i * IPV4_HEADER;
      s->riov[2 * i].iov_len = IPV4_HEADER;
      m->msg_iov = &s->riov[2 * i];
      m->msg_iovlen = 2;
    } else {
      m->msg_iov = &s->riov[i];
      m->msg_iovlen = 1;
    }
    s->sname[i].sin_family = AF_INET;
  }
  return true;
}

/*
 * Points message m at payload[0, len) for addr:port (port ignored for raw IP). A raw socket with
 * IP_HDRINCL (ipip over IP) gets its outer IPv4 header written into hdr and sent first, with
 * the TOS and DF of the inner IPv4 packet copied as RFC 2003 3.1 asks and a fresh TTL; the
 * kernel fills in the length, the id, the checksum and (bound to none) the source. It never
 * fragments such a packet: too large for the route fails with EMSGSIZE, as with DF.
 */
void net_prepare_send(poller *p, struct msghdr *m, struct iovec iov[2], uint8_t hdr[IPV4_HEADER], struct sockaddr_in *sa,
                      const uint8_t *payload, uint32_t len, uint32_t addr, uint16_t port) {
  const net_sock *s = (const net_sock *)p;
  memset(sa, 0, sizeof *sa);
  sa->sin_family = AF_INET;
  sa->sin_addr.s_addr = htonl(addr);
  sa->sin_port = s->kind == KIND_UDP ? htons(port) : 0;
  memset(m, 0, sizeof *m);
  m->msg_name = sa;
  m->msg_namelen = sizeof *sa;
  iov[1].iov_base = (void *)payload;
  iov[1].iov_len = len;
  if (!s->hdrincl) {
    m->msg_iov = &iov[1];
    m->msg_iovlen = 1;
    return;
  }
  const bool inner4 = len >= IPV4_HEADER && payload[0] >> 4 == 4;
  memset(hdr, 0, IPV4_HEADER);
  hdr[0] = 0x45;
  hdr[1] = inner4 ? payload[1] : 0;                    /* TOS */
  hdr[6] = inner4 ? (uint8_t)(payload[6] & 0x40) : 0x40; /* DF: the inner's, else set */
  hdr[8] = 64;                                          /* TTL, fresh */
  hdr[9] = s->protocol;
  uint32_t src = htonl(s->bound), dst = htonl(addr);
  memcpy(hdr + 12, &src, 4);
  memcpy(hdr + 16, &dst, 4);
  iov[0].iov_base = hdr;
  iov[0].iov_len = IPV4_HEADER;
  m->msg_iov = iov;
  m->msg_iovlen = 2;
}

/* Reads uint32 arguments; false (with a JS exception pending) if one is not a number. */
static bool get_u32s(napi_env env, napi_value *argv, uint32_t *out, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (napi_get_value_uint32(env, argv[i], &out[i]) != napi_ok) {
      poller_throw_napi(&NET, env);
      return false;
    }
  }
  return true;
}

static net_sock *new_sock(napi_env env, sock_kind kind, int fd, uint32_t batch) {
  net_sock *s = calloc(1, sizeof *s);
  if (s != NULL) {
    poller_init(&s->p, &NET, env, fd);
    s->kind = kind;
    if (alloc_arrays(s, batch)) return s;
    sock_free(&s->p);
  }
  close(fd);
  poller_throw_errno(&NET, env, ENOMEM, "cannot open datagram socket");
  return NULL;
}

static napi_value net_open_udp(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  uint32_t a[6]; /* addr, port, batch, rcvbuf, sndbuf, reusePort */
  char where[32], msg[256], name[32];

  if (!poller_args(&NET, env, info, 6, argv, "openUdp(addr, port, batch, rcvbuf, sndbuf, reusePort)")) return NULL;
  if (!get_u32s(env, argv, a, 6)) return NULL;
  if (a[1] > 65535 || a[2] == 0 || a[2] > MAX_BATCH || a[3] > INT32_MAX / 2 || a[4] > INT32_MAX / 2) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "openUdp: port, batch or buffer size out of range");
    return NULL;
  }
  format_addr(a[0], where, sizeof where);

  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    poller_throw_errno(&NET, env, errno, "cannot open UDP socket");
    return NULL;
  }
  const char *what;
  int err = set_options(fd, a[3], a[4], &what);
  int on = 1;
  if (err == 0 && a[5] != 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0) {
    err = errno;
    what = "setsockopt(SO_REUSEPORT)";
  }
  if (err != 0) {
    close(fd);
    snprintf(msg, sizeof msg, "cannot set up UDP socket: %s", what);
    poller_throw_errno(&NET, env, err, msg);
    return NULL;
  }
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)a[1])};
  sa.sin_addr.s_addr = htonl(a[0]);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    err = errno;
    close(fd);
    if (err == EADDRINUSE) {
      snprintf(msg, sizeof msg, "UDP port %u on %s is already in use", a[1], where);
    } else if (err == EACCES) {
      snprintf(msg, sizeof msg, "UDP port %u on %s needs root or CAP_NET_BIND_SERVICE", a[1], where);
    } else if (err == EADDRNOTAVAIL && a[1] == 0) {
      snprintf(msg, sizeof msg, "cannot bind a UDP socket to %s: no local interface has that address", where);
    } else if (err == EADDRNOTAVAIL) {
      snprintf(msg, sizeof msg, "cannot bind UDP port %u on %s: no local interface has that address", a[1], where);
    } else {
      snprintf(msg, sizeof msg, "cannot bind UDP port %u on %s: %s", a[1], where, strerror(err));
    }
    poller_throw_error(env, poller_errno_name(err, name, sizeof name), msg);
    return NULL;
  }
  socklen_t len = sizeof sa;
  if (getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
    err = errno;
    close(fd);
    poller_throw_errno(&NET, env, err, "cannot read the UDP socket's address");
    return NULL;
  }

  net_sock *s = new_sock(env, KIND_UDP, fd, a[2]);
  if (s == NULL) return NULL;
  snprintf(s->p.label, sizeof s->p.label, "UDP socket %s:%u", where, ntohs(sa.sin_port));
  return poller_wrap(&s->p);
}

static napi_value net_open_raw(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  uint32_t a[6]; /* protocol, addr, batch, rcvbuf, sndbuf, writeHeader */
  char where[32], msg[256], name[32], label[64];

  if (!poller_args(&NET, env, info, 6, argv, "openRaw(protocol, addr, batch, rcvbuf, sndbuf, writeHeader)")) return NULL;
  if (!get_u32s(env, argv, a, 6)) return NULL;
  /* 0 is not a protocol a raw socket can receive, and 255 (IPPROTO_RAW) implies IP_HDRINCL. */
  if (a[0] == 0 || a[0] >= IPPROTO_RAW || a[2] == 0 || a[2] > MAX_BATCH || a[3] > INT32_MAX / 2 ||
      a[4] > INT32_MAX / 2) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "openRaw: protocol, batch or buffer size out of range");
    return NULL;
  }
  format_addr(a[1], where, sizeof where);
  snprintf(label, sizeof label, "raw IP socket for protocol %u", a[0]);

  int fd = socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, (int)a[0]);
  if (fd < 0) {
    int err = errno;
    if (err == EPERM || err == EACCES) {
      snprintf(msg, sizeof msg, "%s needs root or CAP_NET_RAW", label);
      poller_throw_error(env, poller_errno_name(err, name, sizeof name), msg);
    } else {
      snprintf(msg, sizeof msg, "cannot open %s", label);
      poller_throw_errno(&NET, env, err, msg);
    }
    return NULL;
  }
  const char *what;
  int err = set_options(fd, a[3], a[4], &what);
  int on = 1;
  if (err == 0 && a[5] != 0 && setsockopt(fd, IPPROTO_IP, IP_HDRINCL, &on, sizeof on) != 0) {
    err = errno;
    what = "setsockopt(IP_HDRINCL)";
  }
  if (err != 0) {
    close(fd);
    snprintf(msg, sizeof msg, "cannot set up %s: %s", label, what);
    poller_throw_errno(&NET, env, err, msg);
    return NULL;
  }
  /* Bound to an address, the socket only sees packets to it and sends from it. */
  if (a[1] != 0) {
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(a[1]);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
      err = errno;
      close(fd);
      if (err == EADDRNOTAVAIL) {
        snprintf(msg, sizeof msg, "cannot bind %s to %s: no local interface has that address", label, where);
      } else {
        snprintf(msg, sizeof msg, "cannot bind %s to %s: %s", label, where, strerror(err));
      }
      poller_throw_error(env, poller_errno_name(err, name, sizeof name), msg);
      return NULL;
    }
  }

  net_sock *s = new_sock(env, KIND_RAW, fd, a[2]);
  if (s == NULL) return NULL;
  s->hdrincl = a[5] != 0;
  s->protocol = (uint8_t)a[0];
  s->bound = a[1];
  memcpy(s->p.label, label, sizeof label);
  return poller_wrap(&s->p);
}

static napi_status set_u32(napi_env env, napi_value obj, const char *key, uint32_t v) {
  napi_value n;
  napi_status st = napi_create_uint32(env, v, &n);
  return st == napi_ok ? napi_set_named_property(env, obj, key, n) : st;
}

static napi_value net_info(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  net_sock *s;
  struct sockaddr_in sa;
  socklen_t len = sizeof sa;
  int rcv = 0, snd = 0;
  socklen_t ilen = sizeof rcv;

  if (!poller_args(&NET, env, info, 1, argv, "info(handle)")) return NULL;
  if ((s = get_sock(env, argv[0])) == NULL || !poller_check_open(&s->p)) return NULL;
  memset(&sa, 0, sizeof sa);
  if (getsockname(s->p.fd, (struct sockaddr *)&sa, &len) != 0 ||
      getsockopt(s->p.fd, SOL_SOCKET, SO_RCVBUF, &rcv, &ilen) != 0 ||
      (ilen = sizeof snd, getsockopt(s->p.fd, SOL_SOCKET, SO_SNDBUF, &snd, &ilen)) != 0) {
    poller_throw_errno(&NET, env, errno, "cannot read the socket's address and buffer sizes");
    return NULL;
  }
  NAPI_OK(env, napi_create_object(env, &out));
  NAPI_OK(env, set_u32(env, out, "address", ntohl(sa.sin_addr.s_addr)));
  NAPI_OK(env, set_u32(env, out, "port", s->kind == KIND_UDP ? ntohs(sa.sin_port) : 0));
  NAPI_OK(env, set_u32(env, out, "recvBufferBytes", (uint32_t)rcv));
  NAPI_OK(env, set_u32(env, out, "sendBufferBytes", (uint32_t)snd));
  return out;
}

/* ---------- reading ---------- */

static void deliver_errno(net_sock *s, int err, const char *what) {
  char msg[256], name[32];
  snprintf(msg, sizeof msg, "%s: %s failed: %s", s->p.label, what, strerror(err));
  poller_deliver_error(&s->p, poller_errno_name(err, name, sizeof name), msg);
}

/* Points the receive iovecs at the ring's slots (once per start, or if the ring moved). */
static void point_iovecs(net_sock *s, uint8_t *ring) {
  const uint32_t step = s->kind == KIND_RAW ? 2 : 1, first = step - 1;
  for (uint32_t i = 0; i < s->p.slots; i++) {
    s->riov[i * step + first].iov_base = ring + (size_t)i * s->p.slot_size + s->p.headroom;
    s->riov[i * step + first].iov_len = s->max_payload;
  }
  s->p.ring = ring;
}

/* Looks the ring and meta up again on every wakeup. Needs an open handle scope. */
static bool resolve_ring(net_sock *s) {
  uint8_t *ring;
  napi_value meta;
  void *mdata = NULL;
  size_t mlen = 0;
  if (!poller_ring(&s->p, &ring, &meta) || napi_get_arraybuffer_info(s->p.env, meta, &mdata, &mlen) != napi_ok) {
    return false;
  }
  if (mdata == NULL || mlen < (size_t)s->p.slots * 10) return false;
  if (ring != s->p.ring) point_iovecs(s, ring);
  s->p.lengths = mdata;
  s->addrs = (uint32_t *)((uint8_t *)mdata + (size_t)s->p.slots * 4);
  s->ports = (uint16_t *)((uint8_t *)mdata + (size_t)s->p.slots * 8);
  return true;
}

/*
 * Checks datagram j that recvmmsg put in slot j and records it as datagram `to` (to <= j),
 * moving its payload down if an earlier one in this call was dropped. Returns false (counted)
 * for a datagram to drop.
 */
static bool accept_datagram(net_sock *s, uint32_t j, uint32_t to) {
  struct msghdr *m = &s->rmsgs[j].msg_hdr;
  uint32_t n = s->rmsgs[j].msg_len;
  uint8_t *payload = s->p.ring + (size_t)j * s->p.slot_size + s->p.headroom;
  m->msg_namelen = sizeof s->rname[j]; /* in/out: restore for the next call */
  /* The datagram was larger than max_payload (plus a raw socket's IPv4 header): the kernel
   * copied what fit and threw the rest away. */
  if (m->msg_flags & MSG_TRUNC) {
    s->truncated++;
    return false;
  }
  if (s->kind == KIND_RAW) {
    /* Linux hands a raw IPv4 socket the whole packet, header first: the first IPV4_HEADER
     * bytes went to our scratch, the rest (options, then payload) to the slot. */
    const uint8_t *h = s->rhdr + (size_t)j * IPV4_HEADER;
    uint32_t ihl = (uint32_t)(h[0] & 15) * 4;
    if (n < IPV4_HEADER || h[0] >> 4 != 4 || ihl < IPV4_HEADER || n < ihl) {
      s->malformed++;
      return false;
    }
    /* The kernel reassembles before raw delivery (ip_local_deliver), so a fragment never gets
     * here; checked anyway, since the payload of one would be a piece of a packet. */
    if ((((uint32_t)h[6] << 8) | h[7]) & 0x3fff) { /* MF or a fragment offset */
      s->fragments++;
      return false;
    }
    if ((((uint32_t)h[2] << 8) | h[3]) > n) { /* total length longer than what arrived */
      s->truncated++;
      return false;
    }
    n -= ihl;
    /* Options (never seen on GRE/IPIP in practice) landed in front of the payload. */
    if (ihl > IPV4_HEADER) memmove(payload, payload + (ihl - IPV4_HEADER), n);
  }
  if (to != j) memmove(s->p.ring + (size_t)to * s->p.slot_size + s->p.headroom, payload, n);
  s->p.lengths[to] = n;
  s->addrs[to] = ntohl(s->rname[j].sin_addr.s_addr);
  s->ports[to] = s->kind == KIND_UDP ? ntohs(s->rname[j].sin_port) : 0;
  return true;
}

/*
 * Receives into successive slots until the kernel queue is empty or the ring is full. When
 * full, the socket stays readable and libuv's level-triggered epoll wakes us again on the next
 * loop iteration, after timers and other I/O had their turn. *icmp is set when a pending ICMP
 * error came back instead of data (it is counted from the error queue, not here).
 */
static uint32_t drain(net_sock *s, int *err, bool *icmp) {
  uint32_t count = 0;
  *err = 0;
  while (count < s->p.slots) {
    uint32_t want = s->p.slots - count;
    int n = recvmmsg(s->p.fd, s->rmsgs + count, want, MSG_DONTWAIT, NULL);
    if (n < 0) {
      int e = errno;
      if (e == EINTR) continue;
      if (e == EAGAIN || e == EWOULDBLOCK) break;
      if (net_is_icmp_error(e)) { /* the call consumed the pending error; the data is still there */
        *icmp = true;
        continue;
      }
      if (e == ENOMEM || e == ENOBUFS) break; /* transient: leave the rest for the next wakeup */
      *err = e;
      break;
    }
    uint32_t got = (uint32_t)n, kept = count;
    for (uint32_t j = count; j < count + got; j++) {
      if (accept_datagram(s, j, kept)) kept++;
    }
    count = kept;
    /* Fewer than asked for: the queue was empty (or an error is now pending, which comes back
     * as POLLERR). Another call would only say EAGAIN. */
    if (got < want) break;
  }
  return count;
}

/*
 * Reads and counts the ICMP errors queued by IP_RECVERR. Our own local errors (EMSGSIZE from
 * a send, already counted there) are skipped. Returns how many entries were read; *more is
 * set when the budget ran out before the queue did.
 */
static uint32_t drain_errqueue(net_sock *s, bool *more) {
  uint8_t data[64]; /* the offending datagram's start; not needed, MSG_TRUNC cuts the rest */
  union {
    char buf[CMSG_SPACE(sizeof(struct sock_extended_err) + sizeof(struct sockaddr_in))];
    struct cmsghdr align;
  } ctrl;
  struct sockaddr_in from;
  uint32_t read = 0;
  *more = false;
  while (read < ERRQUEUE_BUDGET) {
    struct iovec iov = {.iov_base = data, .iov_len = sizeof data};
    struct msghdr m = {
        .msg_name = &from,
        .msg_namelen = sizeof from,
        .msg_iov = &iov,
        .msg_iovlen = 1,
        .msg_control = ctrl.buf,
        .msg_controllen = sizeof ctrl.buf,
    };
    if (recvmsg(s->p.fd, &m, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) {
      if (errno == EINTR) continue;
      return read; /* EAGAIN: empty */
    }
    read++;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c != NULL; c = CMSG_NXTHDR(&m, c)) {
      if (c->cmsg_level != IPPROTO_IP || c->cmsg_type != IP_RECVERR) continue;
      struct sock_extended_err ee;
      memcpy(&ee, CMSG_DATA(c), sizeof ee); /* CMSG_DATA need not be aligned for the struct */
      if (ee.ee_origin == SO_EE_ORIGIN_ICMP) count_errno(s->icmp_errors, (int)ee.ee_errno);
    }
  }
  *more = true;
  return read;
}

/*
 * libuv stopped the poll because the socket reported POLLERR, which for a datagram socket
 * means a pending socket error or a non-empty error queue (ICMP, with IP_RECVERR). Clears
 * both; true if polling may go on. Only a POLLERR with no cause we can find is fatal (polling
 * again would spin), and an error that is not ICMP's.
 */
static bool recover_pollerr(net_sock *s, bool icmp_seen) {
  bool more = false; /* entries left keep POLLERR up: the next wakeup reads on */
  uint32_t queued = drain_errqueue(s, &more);
  int soerr = 0;
  socklen_t len = sizeof soerr;
  if (getsockopt(s->p.fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0) soerr = errno; /* clears it */
  if (soerr != 0 && !net_is_icmp_error(soerr)) {
    deliver_errno(s, soerr, "receive");
    return false;
  }
  if (queued == 0 && soerr == 0 && !icmp_seen) {
    struct pollfd p = {.fd = s->p.fd, .events = POLLIN};
    if (poll(&p, 1, 0) == 1 && (p.revents & POLLERR)) {
      char msg[160];
      snprintf(msg, sizeof msg, "%s reports an error that cannot be read or cleared", s->p.label);
      poller_deliver_error(&s->p, "ERR_AGENT_NET_POLL", msg);
      return false;
    }
  }
  return true;
}

static void on_readable(uv_poll_t *h, int status, int events) {
  (void)events;
  net_sock *s = h->data;
  napi_handle_scope scope;
  if (s->p.closed || napi_open_handle_scope(s->p.env, &scope) != napi_ok) return;
  if (!resolve_ring(s)) {
    poller_deliver_ring_error(&s->p);
  } else {
    int err;
    bool icmp = false;
    uint32_t count = drain(s, &err, &icmp);
    if (count > 0) poller_deliver_batch(&s->p, count);
    /* The batch handler may have closed the socket; s stays valid until the close callback. */
    if (!s->p.closed && err != 0) {
      deliver_errno(s, err, "recvmmsg");
    } else if (!s->p.closed && status < 0 && recover_pollerr(s, icmp)) {
      /* libuv passes UV_EBADF for POLLERR and has stopped the handle: start it again. */
      int rc = uv_poll_start(&s->p.poll, UV_READABLE, on_readable);
      if (rc != 0) deliver_errno(s, -rc, "uv_poll_start");
    }
  }
  napi_close_handle_scope(s->p.env, scope);
}

static napi_value net_start(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  net_sock *s;
  void *ring, *meta;
  size_t ring_len, meta_len;
  bool is_ab = false;
  uint32_t a[4]; /* slotSize, headroom, maxPayload, slots */

  if (!poller_args(&NET, env, info, 9, argv,
                   "start(handle, ring, meta, slotSize, headroom, maxPayload, slots, onBatch, onError)")) {
    return NULL;
  }
  if ((s = get_sock(env, argv[0])) == NULL || !poller_check_startable(&s->p)) return NULL;
  NAPI_OK(env, napi_get_buffer_info(env, argv[1], &ring, &ring_len));
  NAPI_OK(env, napi_is_arraybuffer(env, argv[2], &is_ab));
  if (!is_ab) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "meta must be an ArrayBuffer");
    return NULL;
  }
  NAPI_OK(env, napi_get_arraybuffer_info(env, argv[2], &meta, &meta_len));
  if (!get_u32s(env, argv + 3, a, 4)) return NULL;
  const uint32_t slot_size = a[0], headroom = a[1], max_payload = a[2], slots = a[3];
  if (slots == 0 || slots > s->batch || max_payload == 0 || (uint64_t)headroom + max_payload > slot_size ||
      (uint64_t)slots * slot_size > ring_len || (uint64_t)slots * 10 > meta_len) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "ring does not match slotSize/headroom/maxPayload/slots");
    return NULL;
  }
  s->p.slot_size = slot_size;
  s->p.headroom = headroom;
  s->p.slots = slots;
  s->max_payload = max_payload;
  if (poller_start(&s->p, argv[0], argv[1], argv[2], argv[7], argv[8], on_readable)) point_iovecs(s, ring);
  return NULL;
}

/* ---------- sending ---------- */

static void throw_send_error(napi_env env, net_sock *s, int err) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: send failed", s->p.label);
  poller_throw_errno(&NET, env, err, msg);
}

/*
 * One datagram; 0 or the errno. An ICMP error pending from an earlier datagram fails this call
 * once and is then cleared (and counted from the error queue): retried once, so this datagram
 * still goes out. A synchronous error of the same kind (EMSGSIZE, no route) fails again.
 */
static int send_one(net_sock *s, const uint8_t *p, size_t len, uint32_t addr, uint32_t port) {
  struct sockaddr_in sa;
  struct msghdr m;
  struct iovec iov[2];
  uint8_t hdr[IPV4_HEADER];
  net_prepare_send(&s->p, &m, iov, hdr, &sa, p, (uint32_t)len, addr, (uint16_t)port);
  bool retried = false;
  for (;;) {
    if (sendmsg(s->p.fd, &m, MSG_DONTWAIT) >= 0) return 0;
    int err = errno;
    if (err == EINTR) continue;
    if (!retried && net_is_icmp_error(err)) {
      retried = true;
      continue;
    }
    return err;
  }
}

static napi_value net_send(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  net_sock *s;
  void *data;
  size_t len;
  uint32_t a[4]; /* offset, length, addr, port */

  if (!poller_args(&NET, env, info, 6, argv, "send(handle, buf, offset, length, addr, port)")) return NULL;
  if ((s = get_sock(env, argv[0])) == NULL) return NULL;
  NAPI_OK(env, napi_get_buffer_info(env, argv[1], &data, &len));
  if (!get_u32s(env, argv + 2, a, 4)) return NULL;
  if ((uint64_t)a[0] + a[1] > len) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "offset + length exceeds the buffer");
    return NULL;
  }
  if (a[3] > 65535) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "port must be 0 to 65535");
    return NULL;
  }
  if (s->p.closed) return poller_bool(&NET, env, false);
  int err = send_one(s, (const uint8_t *)data + a[0], a[1], a[2], a[3]);
  if (err == 0) return poller_bool(&NET, env, true);
  if (is_fatal_send_error(err)) {
    throw_send_error(env, s, err);
    return NULL;
  }
  count_errno(s->send_errors, err == EWOULDBLOCK ? EAGAIN : err);
  return poller_bool(&NET, env, false);
}

/* Reads a typed array argument; false (exception pending) unless it is one of the two types. */
static bool get_array(napi_env env, napi_value v, napi_typedarray_type t1, napi_typedarray_type t2,
                      napi_typedarray_type *type, void **data, size_t *count) {
  if (napi_get_typedarray_info(env, v, type, count, data, NULL, NULL) != napi_ok) {
    poller_throw_napi(&NET, env);
    return false;
  }
  if (*type != t1 && *type != t2) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "sendBatch: wrong typed array type");
    return false;
  }
  return true;
}

/* Why a chunk stopped early. */
typedef enum { CHUNK_DONE, CHUNK_FULL, CHUNK_THROWN } chunk_end;

/*
 * sendmmsg over msgs[0, n) on socket p (JS batches and the fast path alike): adds how many the
 * kernel took to *sent and counts each datagram it refused in the socket's send errors.
 * Returns 0; EAGAIN when the send buffer filled (the rest counted as EAGAIN drops, as by a
 * router's full queue); or an error that is not the datagrams' fault (the rest not sent).
 */
int net_send_messages(poller *p, struct mmsghdr *msgs, uint32_t n, uint32_t *sent) {
  net_sock *s = (net_sock *)p;
  uint32_t i = 0;
  bool retried = false;
  while (i < n) {
    int r = sendmmsg(p->fd, msgs + i, n - i, MSG_DONTWAIT);
    if (r > 0) {
      /* Fewer than asked: message i + r failed and sendmmsg dropped its error; the next call
       * starts with it and reports it (or, for a cleared ICMP error, sends it). */
      i += (uint32_t)r;
      *sent += (uint32_t)r;
      retried = false;
      continue;
    }
    int err = r == 0 ? EAGAIN : errno;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) {
      s->send_errors[EAGAIN] += n - i;
      return EAGAIN;
    }
    if (is_fatal_send_error(err)) return err;
    if (!retried && net_is_icmp_error(err)) { /* see send_one */
      retried = true;
      continue;
    }
    count_errno(s->send_errors, err); /* this datagram only; go on with the next */
    i++;
    retried = false;
  }
  return 0;
}

/* net_send_messages over the socket's own arrays, for sendBatch: a fatal error is thrown. */
static chunk_end send_chunk(napi_env env, net_sock *s, uint32_t n, uint32_t *sent) {
  int err = net_send_messages(&s->p, s->smsgs, n, sent);
  if (err == 0) return CHUNK_DONE;
  if (err == EAGAIN) return CHUNK_FULL;
  throw_send_error(env, s, err);
  return CHUNK_THROWN;
}

static napi_value net_send_batch(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  net_sock *s;
  void *data;
  size_t len;
  napi_typedarray_type otype, ltype, atype, ptype;
  size_t ocount, lcount, acount, pcount;
  void *offs, *lens, *addrs, *ports;
  uint32_t count;

  if (!poller_args(&NET, env, info, 7, argv, "sendBatch(handle, buf, offsets, lengths, addrs, ports, count)")) {
    return NULL;
  }
  if ((s = get_sock(env, argv[0])) == NULL) return NULL;
  NAPI_OK(env, napi_get_buffer_info(env, argv[1], &data, &len));
  if (!get_array(env, argv[2], napi_uint32_array, napi_uint32_array, &otype, &offs, &ocount) ||
      !get_array(env, argv[3], napi_uint32_array, napi_uint32_array, &ltype, &lens, &lcount) ||
      !get_array(env, argv[4], napi_uint32_array, napi_uint32_array, &atype, &addrs, &acount) ||
      !get_array(env, argv[5], napi_uint16_array, napi_uint32_array, &ptype, &ports, &pcount)) {
    return NULL;
  }
  NAPI_OK(env, napi_get_value_uint32(env, argv[6], &count));
  if (count > ocount || count > lcount || count > acount || count > pcount) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "offsets/lengths/addrs/ports must have at least count entries");
    return NULL;
  }
  const uint32_t *o = offs, *l = lens, *ad = addrs;
  const uint16_t *p16 = ptype == napi_uint16_array ? ports : NULL;
  const uint32_t *p32 = ptype == napi_uint32_array ? ports : NULL;
  /* All checked before anything is sent: a bad entry must not leave half a batch sent. */
  for (uint32_t i = 0; i < count; i++) {
    if ((uint64_t)o[i] + l[i] > len) {
      napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "a datagram's offset + length exceeds the buffer");
      return NULL;
    }
    if (p32 != NULL && p32[i] > 65535) {
      napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "ports must be 0 to 65535");
      return NULL;
    }
  }

  uint32_t sent = 0;
  if (!s->p.closed) {
    /* In chunks of the arrays' capacity (the socket's batch size). */
    for (uint32_t base = 0; base < count; base += s->batch) {
      uint32_t n = count - base < s->batch ? count - base : s->batch;
      for (uint32_t k = 0; k < n; k++) {
        uint32_t i = base + k;
        net_prepare_send(&s->p, &s->smsgs[k].msg_hdr, &s->siov[2 * k], s->shdr + (size_t)k * IPV4_HEADER, &s->sname[k],
                         (const uint8_t *)data + o[i], l[i], ad[i], p16 != NULL ? p16[i] : (uint16_t)p32[i]);
      }
      chunk_end end = send_chunk(env, s, n, &sent);
      if (end == CHUNK_THROWN) return NULL;
      if (end == CHUNK_FULL) {
        s->send_errors[EAGAIN] += count - base - n; /* the chunks never tried */
        break;
      }
    }
  }
  napi_value r;
  NAPI_OK(env, napi_create_uint32(env, sent, &r));
  return r;
}

/* ---------- stats ---------- */

/* {"ECONNREFUSED": 3, ...} for the non-zero counters. */
static napi_status errno_counts(napi_env env, const uint64_t *counters, napi_value *out) {
  napi_status st = napi_create_object(env, out);
  char name[32];
  for (int e = 0; st == napi_ok && e <= ERRNO_SLOTS; e++) {
    if (counters[e] == 0) continue;
    napi_value n;
    const char *key = e < ERRNO_SLOTS ? poller_errno_name(e, name, sizeof name) : "other";
    st = napi_create_double(env, (double)counters[e], &n);
    if (st == napi_ok) st = napi_set_named_property(env, *out, key, n);
  }
  return st;
}

static napi_value net_stats(napi_env env, napi_callback_info info) {
  napi_value argv[1], out, send_errors, icmp_errors;
  net_sock *s;
  if (!poller_args(&NET, env, info, 1, argv, "stats(handle)")) return NULL;
  if ((s = get_sock(env, argv[0])) == NULL) return NULL;
  /* Not started: nothing reads the error queue on POLLERR, so count what is there now (a
   * worker's socket has its thread for that). */
  if (!s->p.closed && !s->p.poll_open && s->p.worker_stop == NULL) {
    bool more;
    while (drain_errqueue(s, &more) > 0 && more) {
    }
  }
  /* The kernel's own count of datagrams it dropped for this socket before we read them
   * (receive buffer full, and for UDP bad checksums). Gone with the socket: -1 once closed. */
  double kernel_drops = -1;
  uint32_t meminfo[SK_MEMINFO_VARS];
  socklen_t mlen = sizeof meminfo;
  if (!s->p.closed && getsockopt(s->p.fd, SOL_SOCKET, SO_MEMINFO, meminfo, &mlen) == 0 &&
      mlen > SK_MEMINFO_DROPS * sizeof meminfo[0]) {
    kernel_drops = meminfo[SK_MEMINFO_DROPS];
  }
  napi_value drops;
  NAPI_OK(env, napi_create_object(env, &out));
  NAPI_OK(env, errno_counts(env, s->send_errors, &send_errors));
  NAPI_OK(env, errno_counts(env, s->icmp_errors, &icmp_errors));
  NAPI_OK(env, napi_set_named_property(env, out, "sendErrors", send_errors));
  NAPI_OK(env, napi_set_named_property(env, out, "icmpErrors", icmp_errors));
  NAPI_OK(env, poller_set_count(env, out, "truncated", s->truncated));
  NAPI_OK(env, poller_set_count(env, out, "fragments", s->fragments));
  NAPI_OK(env, poller_set_count(env, out, "malformed", s->malformed));
  NAPI_OK(env, napi_create_double(env, kernel_drops, &drops));
  NAPI_OK(env, napi_set_named_property(env, out, "kernelDrops", drops));
  return out;
}

/* ---------- the node's workers ---------- */

/*
 * A classic BPF program for SO_ATTACH_REUSEPORT_CBPF: it runs with the packet's data at the UDP
 * payload, so the network header is reached through SKF_NET_OFF. It returns the index of the
 * socket in the group: (source address ^ source port) % n. So one client endpoint always lands
 * on one worker (no reordering within it), the choice is the same in every run (status and
 * tests can say which), and NAT-assigned ports spread clients evenly.
 */
static napi_value net_steer(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  net_sock *s;
  uint32_t n;
  if (!poller_args(&NET, env, info, 2, argv, "steer(handle, n)")) return NULL;
  if ((s = get_sock(env, argv[0])) == NULL || !poller_check_open(&s->p) || !get_u32s(env, argv + 1, &n, 1)) return NULL;
  if (s->kind != KIND_UDP || n < 1 || n > 1024) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "steer: a UDP socket, and n from 1 to 1024");
    return NULL;
  }
  struct sock_filter code[] = {
      BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, (uint32_t)SKF_NET_OFF),      /* X = the IPv4 header's length */
      BPF_STMT(BPF_LD | BPF_H | BPF_IND, (uint32_t)SKF_NET_OFF),       /* A = UDP source port */
      BPF_STMT(BPF_MISC | BPF_TAX, 0),                                  /* X = A */
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)(SKF_NET_OFF + 12)), /* A = source address */
      BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),
      BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, n),
      BPF_STMT(BPF_RET | BPF_A, 0),
  };
  struct sock_fprog prog = {.len = sizeof code / sizeof code[0], .filter = code};
  if (setsockopt(s->p.fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof prog) != 0) {
    poller_throw_errno(&NET, env, errno, "cannot steer the UDP socket group: setsockopt(SO_ATTACH_REUSEPORT_CBPF)");
    return NULL;
  }
  return NULL;
}

uint32_t net_max_payload(poller *p) {
  return ((net_sock *)p)->max_payload;
}

bool net_use_ring(poller *p, uint8_t *ring, uint32_t *lengths, uint32_t *addrs, uint16_t *ports, uint32_t slot_size,
                  uint32_t headroom, uint32_t max_payload, uint32_t slots) {
  net_sock *s = (net_sock *)p;
  if (slots == 0 || slots > s->batch || headroom + max_payload > slot_size) return false;
  s->p.slot_size = slot_size;
  s->p.headroom = headroom;
  s->p.slots = slots;
  s->max_payload = max_payload;
  s->p.lengths = lengths;
  s->addrs = addrs;
  s->ports = ports;
  point_iovecs(s, ring);
  return true;
}

void net_drop_ring(poller *p) {
  net_sock *s = (net_sock *)p;
  s->p.ring = NULL;
  s->p.lengths = NULL;
  s->p.slots = 0;
  s->addrs = NULL;
  s->ports = NULL;
}

uint32_t net_read_batch(poller *p, int *err) {
  bool icmp = false;
  return drain((net_sock *)p, err, &icmp);
}

int net_clear_pollerr(poller *p) {
  net_sock *s = (net_sock *)p;
  bool more = true;
  uint32_t queued = 0;
  while (more) queued += drain_errqueue(s, &more);
  int soerr = 0;
  socklen_t len = sizeof soerr;
  if (getsockopt(s->p.fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0) return errno; /* clears it */
  if (soerr != 0 && !net_is_icmp_error(soerr)) return soerr;
  /* As recover_pollerr: a POLLERR with nothing to read or clear would wake us forever. */
  if (queued == 0 && soerr == 0) {
    struct pollfd q = {.fd = s->p.fd, .events = POLLIN};
    if (poll(&q, 1, 0) == 1 && (q.revents & POLLERR)) return EIO;
  }
  return 0;
}

void net_inject(poller *p, const uint8_t *data, uint32_t stride, const uint32_t *lengths, const uint32_t *addrs,
                const uint16_t *ports, uint32_t n) {
  net_sock *s = (net_sock *)p;
  napi_handle_scope scope;
  if (s->p.closed || s->p.slots == 0 || napi_open_handle_scope(s->p.env, &scope) != napi_ok) return;
  uint32_t i = 0;
  while (i < n && !s->p.closed) {
    if (!resolve_ring(s)) {
      poller_deliver_ring_error(&s->p);
      break;
    }
    uint32_t count = 0;
    for (; i < n && count < s->p.slots; i++) {
      if (lengths[i] > s->max_payload) continue; /* cannot happen: same geometry */
      memcpy(s->p.ring + (size_t)count * s->p.slot_size + s->p.headroom, data + (size_t)i * stride, lengths[i]);
      s->p.lengths[count] = lengths[i];
      s->addrs[count] = addrs[i];
      s->ports[count] = ports[i];
      count++;
    }
    if (count > 0) poller_deliver_batch(&s->p, count);
  }
  napi_close_handle_scope(s->p.env, scope);
}

/* ---------- close ---------- */

static napi_value net_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  net_sock *s;
  if (!poller_args(&NET, env, info, 1, argv, "close(handle)")) return NULL;
  if ((s = get_sock(env, argv[0])) == NULL) return NULL;
  poller_close(env, &s->p);
  return NULL;
}

/* ---------- module ---------- */

poller *net_poller(napi_env env, napi_value handle) {
  return poller_get(&NET, env, handle);
}

void net_batch_meta(poller *p, uint32_t **addrs, uint16_t **ports) {
  net_sock *s = (net_sock *)p;
  *addrs = s->addrs;
  *ports = s->ports;
}

napi_value net_init(napi_env env, napi_value exports) {
  static const poller_fn fns[] = {
      {"openUdp", net_open_udp}, {"openRaw", net_open_raw},        {"info", net_info},
      {"start", net_start},      {"send", net_send},               {"sendBatch", net_send_batch},
      {"stats", net_stats},      {"close", net_close},              {"steer", net_steer},
  };
  return poller_export(&NET, env, exports, fns, sizeof fns / sizeof fns[0]);
}
