/*
 * agent_tun: the Linux TUN backend.
 *
 * Why our own addon: reading a TUN fd through the libuv threadpool costs one thread round trip
 * per packet and leaves a thread blocked in read(2) that keeps process.exit() waiting. Here the
 * fd is non-blocking and watched by a uv_poll_t on the main loop; each readable wakeup drains
 * up to a ring's worth of packets with plain read(2) calls and calls JS once for the batch.
 *
 * Ring layout (allocated by JS, referenced here while started): slot i spans
 * [i * slot_size, (i + 1) * slot_size); its packet starts at i * slot_size + headroom, so a
 * transport can write its header in front of the packet without copying. lengths[i] is the
 * packet's length.
 *
 * JS API (all take the handle returned by open):
 *   open(name, multiQueue, vnetHdr) -> handle
 *        (multiQueue: opening the same name again adds a queue, for one of the node's workers)
 *   start(handle, ring, lengths, slotSize, headroom, slots, onBatch(count), onError(err))
 *   write(handle, buf, offset, length) -> boolean        (false: the kernel dropped it)
 *   writeBatch(handle, buf, offsets, lengths, count) -> number written
 *   close(handle)                                          (idempotent)
 *
 * Lifetime, polling, the ring references and the JS calls are src/core/native/poller.c's, shared
 * with agent_net; this file opens the device, reads packets into the ring and writes them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/virtio_net.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>
#include <uv.h>

#include "agent.h"
#include "poller.h"

typedef struct tun_dev {
  poller p; /* first: a poller pointer is a tun_dev pointer; p.label is "TUN device <name>" */
  /* IFF_VNET_HDR: every packet is preceded by a struct virtio_net_hdr (TUN_VNET_HDR bytes), so
   * the fast path can hand the kernel a run of TCP segments as one GSO packet (coalesce.c).
   * Reads strip it (no offloads are enabled, so it never asks anything of us); plain writes
   * prepend a zeroed one. */
  bool vnet;
} tun_dev;

/* errno's symbolic name ("EPERM"), as Node's own system errors use for err.code. */
static const char *errno_code(int err) {
  if (err == EBADFD) return "EBADFD"; /* the one TUN errno libuv has no name for */
  return uv_err_name(uv_translate_sys_error(err));
}

static const char *class_errno_code(int err, char *buf, size_t len) {
  (void)buf;
  (void)len;
  return errno_code(err);
}

static void dev_free(poller *p) {
  free((tun_dev *)p);
}

static const poller_class TUN = {
    /* Tags our handles so a foreign object passed from JS is rejected instead of dereferenced. */
    .tag = {0x6167656e745f7475ULL, 0x6e5f646576696365ULL},
    .not_handle = "not a TUN device handle",
    .napi_code = "ERR_AGENT_TUN_NAPI",
    .closed_code = "ERR_AGENT_TUN_CLOSED",
    .closed_msg = "TUN device is closed",
    .started_code = "ERR_AGENT_TUN_STARTED",
    .started_msg = "TUN device is already started",
    .ring_code = "ERR_AGENT_TUN_RING",
    .watch_msg = "cannot watch TUN device",
    .async_name = "agent:tun",
    .errno_code = class_errno_code,
    .free = dev_free,
};

#define NAPI_OK(env, call) POLLER_NAPI_OK(&TUN, env, call)

static tun_dev *get_dev(napi_env env, napi_value handle) {
  return (tun_dev *)poller_get(&TUN, env, handle);
}

/* ---------- open ---------- */

static void throw_open_error(napi_env env, const char *name, int err, bool opening) {
  char msg[256];
  const char *code = errno_code(err);
  if (err == EPERM || err == EACCES) {
    snprintf(msg, sizeof msg,
             "cannot create TUN device %s: permission denied (run as root or with CAP_NET_ADMIN)", name);
  } else if (opening && (err == ENOENT || err == ENODEV || err == ENXIO)) {
    snprintf(msg, sizeof msg, "cannot create TUN device: /dev/net/tun does not exist (load the tun module)");
  } else if (!opening && err == EBUSY) {
    snprintf(msg, sizeof msg, "cannot create TUN device %s: the name is in use by another open TUN device", name);
  } else if (!opening && err == EEXIST) {
    snprintf(msg, sizeof msg, "cannot create TUN device %s: the name is already in use", name);
  } else if (!opening && err == EINVAL) {
    snprintf(msg, sizeof msg,
             "cannot create TUN device %s: the name is invalid, or in use by an interface that is not a "
             "TUN device with the same flags (multi-queue or not)",
             name);
  } else {
    snprintf(msg, sizeof msg, "cannot create TUN device %s: %s: %s", name,
             opening ? "open /dev/net/tun" : "TUNSETIFF", strerror(err));
  }
  poller_throw_error(env, code, msg);
}

static napi_value tun_open(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  char name[IFNAMSIZ + 1];
  size_t len = 0;
  bool multi_queue = false, vnet = false;

  if (!poller_args(&TUN, env, info, 3, argv, "open(name, multiQueue, vnetHdr)")) return NULL;
  NAPI_OK(env, napi_get_value_string_utf8(env, argv[0], NULL, 0, &len));
  if (len == 0 || len >= IFNAMSIZ) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "TUN device name must be 1 to 15 bytes");
    return NULL;
  }
  NAPI_OK(env, napi_get_value_string_utf8(env, argv[0], name, sizeof name, &len));
  NAPI_OK(env, napi_get_value_bool(env, argv[1], &multi_queue));
  NAPI_OK(env, napi_get_value_bool(env, argv[2], &vnet));

  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    throw_open_error(env, name, errno, true);
    return NULL;
  }

  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (multi_queue ? IFF_MULTI_QUEUE : 0) | (vnet ? IFF_VNET_HDR : 0);
  memcpy(ifr.ifr_name, name, len); /* len < IFNAMSIZ: stays NUL-terminated */
  if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
    int err = errno;
    close(fd); /* failure path: the open error is the one worth reporting */
    throw_open_error(env, name, err, false);
    return NULL;
  }

  tun_dev *d = calloc(1, sizeof *d);
  if (d == NULL) {
    close(fd);
    poller_throw_errno(&TUN, env, ENOMEM, "cannot create TUN device");
    return NULL;
  }
  poller_init(&d->p, &TUN, env, fd);
  d->vnet = vnet;
  ifr.ifr_name[IFNAMSIZ - 1] = '\0';
  snprintf(d->p.label, sizeof d->p.label, "TUN device %s", ifr.ifr_name);
  return poller_wrap(&d->p);
}

/* ---------- reading ---------- */

static void deliver_read_error(tun_dev *d, int err) {
  char msg[256];
  if (err == EBADFD) {
    snprintf(msg, sizeof msg, "%s was removed (read: %s)", d->p.label, strerror(err));
  } else {
    snprintf(msg, sizeof msg, "%s: read failed: %s", d->p.label, strerror(err));
  }
  poller_deliver_error(&d->p, errno_code(err), msg);
}

/* Looks the ring and its lengths up again on every wakeup. Needs an open handle scope. */
static bool resolve_ring(tun_dev *d) {
  uint8_t *ring;
  napi_value lens;
  void *ldata = NULL;
  size_t lcount = 0;
  napi_typedarray_type type;
  if (!poller_ring(&d->p, &ring, &lens) ||
      napi_get_typedarray_info(d->p.env, lens, &type, &lcount, &ldata, NULL, NULL) != napi_ok) {
    return false;
  }
  if (ldata == NULL || lcount < d->p.slots) return false;
  d->p.ring = ring;
  d->p.lengths = ldata;
  return true;
}

/*
 * The kernel truncates a packet larger than the buffer and returns the truncated length, so a
 * read that filled the slot exactly may be a cut packet: drop it if its IP header says longer.
 */
static bool truncated(const uint8_t *p, size_t n) {
  size_t want;
  if (n < 4) return false;
  switch (p[0] >> 4) {
    case 4:
      want = ((size_t)p[2] << 8) | p[3];
      break;
    case 6:
      if (n < 6) return false;
      want = 40 + (((size_t)p[4] << 8) | p[5]);
      break;
    default:
      return false;
  }
  return want > n;
}

/*
 * Reads into successive slots until the kernel queue is empty or the ring is full. When full,
 * the fd stays readable and a level-triggered poll wakes the reader again. Thread-safe: the
 * node's workers read their own queues with it (src/core/device/native/workers.c).
 */
uint32_t tun_read_into(int fd, bool vnet_hdr, uint8_t *ring, uint32_t *lengths, uint32_t slot_size, uint32_t headroom,
                       uint32_t slots, int *err) {
  uint32_t count = 0;
  const size_t room = slot_size - headroom;
  *err = 0;
  const size_t vnet = vnet_hdr ? TUN_VNET_HDR : 0; /* read in front of the packet, in the headroom */
  while (count < slots) {
    uint8_t *slot = ring + (size_t)count * slot_size + headroom;
    ssize_t n = read(fd, slot - vnet, room + vnet);
    if (n > 0 && vnet) {
      struct virtio_net_hdr h;
      memcpy(&h, slot - vnet, sizeof h);
      /* Without offloads the kernel never sends GSO or partial checksums; if it did, drop. */
      if ((size_t)n <= vnet || h.gso_type != VIRTIO_NET_HDR_GSO_NONE || (h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM)) continue;
      n -= (ssize_t)vnet;
    }
    if (n > 0) {
      /* Larger than a slot (the MTU was raised behind our back): drop, like a router would. */
      if ((size_t)n == room && truncated(slot, room)) continue;
      lengths[count++] = (uint32_t)n;
      continue;
    }
    if (n == 0) break; /* TUN never sends empty packets; nothing more to take */
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    *err = errno;
    break;
  }
  return count;
}

static uint32_t drain(tun_dev *d, int *err) {
  const poller *p = &d->p;
  return tun_read_into(p->fd, d->vnet, p->ring, p->lengths, p->slot_size, p->headroom, p->slots, err);
}

static void on_readable(uv_poll_t *h, int status, int events) {
  (void)events;
  tun_dev *d = h->data;
  napi_handle_scope scope;
  if (d->p.closed || napi_open_handle_scope(d->p.env, &scope) != napi_ok) return;
  if (!resolve_ring(d)) {
    poller_deliver_ring_error(&d->p);
  } else {
    /* On POLLERR libuv passes UV_EBADF and stops the handle; read() names the real cause
     * (EBADFD once the interface was deleted) and still yields anything queued before. */
    int err;
    uint32_t count = drain(d, &err);
    if (count > 0) poller_deliver_batch(&d->p, count);
    if (err == 0 && status < 0) err = -status; /* libuv statuses are negated errnos on Unix */
    /* The batch handler may have closed the device; d stays valid until the close callback. */
    if (err != 0 && !d->p.closed) deliver_read_error(d, err);
  }
  napi_close_handle_scope(d->p.env, scope);
}

void tun_inject(poller *p, const uint8_t *data, uint32_t stride, const uint32_t *lengths, uint32_t n) {
  tun_dev *d = (tun_dev *)p;
  napi_handle_scope scope;
  if (d->p.closed || d->p.slots == 0 || napi_open_handle_scope(d->p.env, &scope) != napi_ok) return;
  uint32_t i = 0;
  while (i < n && !d->p.closed) {
    if (!resolve_ring(d)) {
      poller_deliver_ring_error(&d->p);
      break;
    }
    uint32_t count = 0;
    for (; i < n && count < d->p.slots; i++) {
      if (lengths[i] > d->p.slot_size - d->p.headroom) continue; /* cannot happen: same geometry */
      memcpy(d->p.ring + (size_t)count * d->p.slot_size + d->p.headroom, data + (size_t)i * stride, lengths[i]);
      d->p.lengths[count++] = lengths[i];
    }
    if (count > 0) poller_deliver_batch(&d->p, count);
  }
  napi_close_handle_scope(d->p.env, scope);
}

static napi_value tun_start(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  tun_dev *d;
  void *ring;
  size_t ring_len;
  napi_typedarray_type ltype;
  size_t lcount;
  void *lengths;
  uint32_t slot_size, headroom, slots;

  if (!poller_args(&TUN, env, info, 8, argv,
                   "start(handle, ring, lengths, slotSize, headroom, slots, onBatch, onError)")) {
    return NULL;
  }
  if ((d = get_dev(env, argv[0])) == NULL || !poller_check_startable(&d->p)) return NULL;
  NAPI_OK(env, napi_get_buffer_info(env, argv[1], &ring, &ring_len));
  NAPI_OK(env, napi_get_typedarray_info(env, argv[2], &ltype, &lcount, &lengths, NULL, NULL));
  NAPI_OK(env, napi_get_value_uint32(env, argv[3], &slot_size));
  NAPI_OK(env, napi_get_value_uint32(env, argv[4], &headroom));
  NAPI_OK(env, napi_get_value_uint32(env, argv[5], &slots));
  if (ltype != napi_uint32_array || slots == 0 || headroom >= slot_size || lcount < slots || (d->vnet && headroom < TUN_VNET_HDR) ||
      (uint64_t)slots * slot_size > ring_len) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "ring does not match slotSize/headroom/slots");
    return NULL;
  }
  d->p.slot_size = slot_size;
  d->p.headroom = headroom;
  d->p.slots = slots;
  poller_start(&d->p, argv[0], argv[1], argv[2], argv[6], argv[7], on_readable);
  return NULL;
}

/* ---------- writing ---------- */

/* The kernel refused this packet but the device is fine: count it as a drop, like a router. */
static bool is_drop(int err) {
  return err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS || err == EBADF ||
         err == EINVAL /* not an IPv4/IPv6 packet */ || err == EMSGSIZE || err == EIO;
}

/* 0 on success, else the errno. */
static int write_packet(const tun_dev *d, const uint8_t *p, size_t len) {
  static const struct virtio_net_hdr none; /* no GSO, checksums complete */
  struct iovec iov[2] = {{(void *)&none, TUN_VNET_HDR}, {(void *)p, len}};
  for (;;) {
    ssize_t n = d->vnet ? writev(d->p.fd, iov, 2) : write(d->p.fd, p, len);
    if (n >= 0) return 0; /* TUN writes are whole-packet */
    if (errno != EINTR) return errno;
  }
}

bool tun_vnet(poller *p) {
  return ((tun_dev *)p)->vnet;
}

static void throw_write_error(napi_env env, tun_dev *d, int err) {
  char msg[256];
  if (err == EBADFD) {
    snprintf(msg, sizeof msg, "%s was removed (write: %s)", d->p.label, strerror(err));
  } else {
    snprintf(msg, sizeof msg, "%s: write failed: %s", d->p.label, strerror(err));
  }
  poller_throw_error(env, errno_code(err), msg);
}

static napi_value tun_write(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  tun_dev *d;
  void *data;
  size_t len;
  uint32_t offset, length;

  if (!poller_args(&TUN, env, info, 4, argv, "write(handle, buf, offset, length)")) return NULL;
  if ((d = get_dev(env, argv[0])) == NULL) return NULL;
  NAPI_OK(env, napi_get_buffer_info(env, argv[1], &data, &len));
  NAPI_OK(env, napi_get_value_uint32(env, argv[2], &offset));
  NAPI_OK(env, napi_get_value_uint32(env, argv[3], &length));
  if ((uint64_t)offset + length > len) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "offset + length exceeds the buffer");
    return NULL;
  }
  if (d->p.closed) return poller_bool(&TUN, env, false);
  int err = write_packet(d, (const uint8_t *)data + offset, length);
  if (err == 0) return poller_bool(&TUN, env, true);
  if (is_drop(err)) return poller_bool(&TUN, env, false);
  throw_write_error(env, d, err);
  return NULL;
}

static napi_value tun_write_batch(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  tun_dev *d;
  void *data;
  size_t len;
  napi_typedarray_type otype, ltype;
  size_t ocount, lcount;
  void *offs, *lens;
  uint32_t count;

  if (!poller_args(&TUN, env, info, 5, argv, "writeBatch(handle, buf, offsets, lengths, count)")) return NULL;
  if ((d = get_dev(env, argv[0])) == NULL) return NULL;
  NAPI_OK(env, napi_get_buffer_info(env, argv[1], &data, &len));
  NAPI_OK(env, napi_get_typedarray_info(env, argv[2], &otype, &ocount, &offs, NULL, NULL));
  NAPI_OK(env, napi_get_typedarray_info(env, argv[3], &ltype, &lcount, &lens, NULL, NULL));
  NAPI_OK(env, napi_get_value_uint32(env, argv[4], &count));
  if (otype != napi_uint32_array || ltype != napi_uint32_array || count > ocount || count > lcount) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "offsets/lengths must be Uint32Arrays of at least count entries");
    return NULL;
  }
  const uint32_t *o = offs, *l = lens;
  for (uint32_t i = 0; i < count; i++) {
    if ((uint64_t)o[i] + l[i] > len) {
      napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "a packet's offset + length exceeds the buffer");
      return NULL;
    }
  }

  uint32_t written = 0;
  for (uint32_t i = 0; i < count && !d->p.closed; i++) {
    int err = write_packet(d, (const uint8_t *)data + o[i], l[i]);
    if (err == 0) {
      written++;
    } else if (!is_drop(err)) {
      throw_write_error(env, d, err);
      return NULL;
    }
  }
  napi_value r;
  NAPI_OK(env, napi_create_uint32(env, written, &r));
  return r;
}

/* ---------- close ---------- */

static napi_value tun_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  tun_dev *d;
  if (!poller_args(&TUN, env, info, 1, argv, "close(handle)")) return NULL;
  if ((d = get_dev(env, argv[0])) == NULL) return NULL;
  poller_close(env, &d->p);
  return NULL;
}

/* ---------- module ---------- */

poller *tun_poller(napi_env env, napi_value handle) {
  return poller_get(&TUN, env, handle);
}

napi_value tun_init(napi_env env, napi_value exports) {
  static const poller_fn fns[] = {
      {"open", tun_open},   {"start", tun_start}, {"write", tun_write},
      {"writeBatch", tun_write_batch}, {"close", tun_close},
  };
  return poller_export(&TUN, env, exports, fns, sizeof fns / sizeof fns[0]);
}
