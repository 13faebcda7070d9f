/*
 * The node's workers: one thread per extra core, each with its own queue of the multi-queue
 * TUN device and its own UDP socket in the node's SO_REUSEPORT group, running the fast path's
 * batch code (fastpath.c) on what they read, as Nebula's routines and wireguard-go's per-queue
 * readers do. The main thread is lane 0 and keeps its pollers; workers are lanes 1 and up.
 *
 * Why threads: one thread is one core, and a node's work is mostly the kernel's, done in the
 * context of whoever calls read, write, sendmmsg or recvmmsg. Spreading those calls over
 * threads spreads the forwarding, the NAT and the UDP stack over cores.
 *
 * Which packets a worker gets: the kernel steers each client endpoint's datagrams to one
 * socket of the group (net.c's steer: (source address ^ source port) % n), and writes each
 * flow's return packets to the TUN queue that last wrote that flow (the tun driver's flow
 * table), so a client's traffic stays on one worker both ways and is never reordered.
 *
 * What a worker does not do: anything but the common packet of an identity or gre session.
 * ESP state is shared with JS and its EVP contexts are single-threaded; tls streams live on
 * the main thread; keepalives, unknown sessions and anything unusual are JS's. A worker hands
 * those packets to the main thread through a double-buffered queue and a uv_async; the main
 * thread feeds them to its own pollers' batch handlers (tun_inject, net_inject), so they meet
 * the main lane's fast path (ESP) and then JS exactly as if the main thread had read them.
 * When the main thread falls behind, the queue is full and packets are dropped and counted.
 *
 * Lifetime: addWorker starts a thread; fast_stop_workers (close, finalize, or the
 * environment's cleanup) wakes each through an eventfd and joins it before the descriptors it
 * uses can close. A stopped worker's memory stays until the fast path is freed, since a
 * handoff in progress on the main thread may still be reading it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "fastpath.h"

/* Packets each handoff buffer holds: a burst of slow packets beyond it waits for nobody. */
#define HANDOFF_CAP 512
enum { EV_STOP = 0, EV_TUN = 1, EV_SOCK = 2 };

/* Packets passed to the main thread: packet i at data + i * stride. */
typedef struct handoff {
  uint8_t *data;
  uint32_t *lengths;
  uint32_t *addrs; /* socket packets only */
  uint16_t *ports;
  uint32_t stride, n;
} handoff;

struct fast_worker {
  fast_path *fp;
  lane lane;
  poller *tun, *sock;
  napi_ref tun_ref, sock_ref;
  int epfd, stopfd;
  pthread_t thread;
  bool stopped;

  /* The worker's own rings, the geometry of the main thread's. */
  uint8_t *tun_ring;
  uint32_t *tun_lengths;
  uint32_t tun_slot, tun_headroom, tun_slots;
  uint8_t *sock_ring;
  uint32_t *sock_lengths, *sock_addrs;
  uint16_t *sock_ports;
  uint32_t sock_slot, sock_headroom, sock_slots;

  /* Double buffers: the worker fills [fill], the main thread takes it and flips `fill`. */
  pthread_mutex_t mu;
  handoff tunq[2], sockq[2];
  int tun_fill, sock_fill;
  /* Under mu: the worker stopped reading that fd because its buffer could not take another
   * batch; the main thread reads it again once it has taken the buffer. The kernel's queue
   * holds the packets meanwhile, as it would for a busy main thread. */
  bool tun_paused, sock_paused;

  /* Set once by the worker when it stops on an error (release), read by the main thread. */
  bool failed;
  bool reported;
  char error_code[32];
  char error[256];
};

/* ---------- the worker thread ---------- */

static void fail(fast_worker *w, int err, const char *what) {
  char name[32];
  snprintf(w->error_code, sizeof w->error_code, "%s", poller_errno_name(err, name, sizeof name));
  snprintf(w->error, sizeof w->error, "worker on %s and %s: %s failed: %s", w->tun->label, w->sock->label, what,
           strerror(err));
  __atomic_store_n(&w->failed, true, __ATOMIC_RELEASE);
  uv_async_send(w->fp->handoff);
}

/* Reads from fd (EV_TUN or EV_SOCK) on, or off until the main thread catches up. */
static void watch(fast_worker *w, int fd, uint32_t what, bool on) {
  struct epoll_event e = {.events = on ? EPOLLIN : 0, .data.u32 = what};
  (void)epoll_ctl(w->epfd, EPOLL_CTL_MOD, fd, &e); /* cannot fail for a registered fd */
}

/*
 * Copies what the batch left (at the ring's front) into the filling buffer of q. Once that
 * buffer has no room for another whole batch of `slots`, the fd is not read until the main
 * thread has taken it: nothing is dropped here that the kernel's queue could have held.
 */
static void hand_off(fast_worker *w, handoff q[2], const int *fill, bool *paused, int fd, uint32_t what, uint32_t slots,
                     const batch_view *b, uint32_t n) {
  pthread_mutex_lock(&w->mu);
  handoff *h = &q[*fill];
  const uint32_t take = n < HANDOFF_CAP - h->n ? n : HANDOFF_CAP - h->n;
  for (uint32_t i = 0; i < take; i++, h->n++) {
    memcpy(h->data + (size_t)h->n * h->stride, b->ring + (size_t)i * b->slot_size + b->headroom, b->lengths[i]);
    h->lengths[h->n] = b->lengths[i];
    if (b->addrs != NULL) {
      h->addrs[h->n] = b->addrs[i];
      h->ports[h->n] = b->ports[i];
    }
  }
  if (HANDOFF_CAP - h->n < slots && !*paused) {
    *paused = true;
    watch(w, fd, what, false);
  }
  pthread_mutex_unlock(&w->mu);
  FAST_ADD(w->lane.c.handed_off, take);
  FAST_ADD(w->lane.c.handoff_drops, n - take);
  if (take > 0) uv_async_send(w->fp->handoff);
}

static bool on_tun(fast_worker *w) {
  int err;
  const uint32_t count =
      tun_read_into(w->tun->fd, w->lane.vnet, w->tun_ring, w->tun_lengths, w->tun_slot, w->tun_headroom, w->tun_slots, &err);
  if (count > 0) {
    const batch_view b = {.ring = w->tun_ring, .lengths = w->tun_lengths, .slot_size = w->tun_slot, .headroom = w->tun_headroom};
    pthread_rwlock_rdlock(&w->fp->lock);
    const uint32_t left = fast_tun_batch(w->fp, &w->lane, &b, count);
    pthread_rwlock_unlock(&w->fp->lock);
    if (left > 0) hand_off(w, w->tunq, &w->tun_fill, &w->tun_paused, w->tun->fd, EV_TUN, w->tun_slots, &b, left);
  }
  if (err != 0) fail(w, err, "TUN read");
  return err == 0;
}

static bool on_sock(fast_worker *w, uint32_t events) {
  int err = 0;
  if (events & EPOLLERR) {
    if ((err = net_clear_pollerr(w->sock)) != 0) {
      fail(w, err, "receive");
      return false;
    }
  }
  if (!(events & EPOLLIN)) return true;
  const uint32_t count = net_read_batch(w->sock, &err);
  if (count > 0) {
    const batch_view b = {.ring = w->sock_ring, .lengths = w->sock_lengths, .slot_size = w->sock_slot,
                          .headroom = w->sock_headroom, .addrs = w->sock_addrs, .ports = w->sock_ports};
    pthread_rwlock_rdlock(&w->fp->lock);
    const uint32_t left = fast_net_batch(w->fp, &w->lane, &b, count);
    pthread_rwlock_unlock(&w->fp->lock);
    if (left > 0) hand_off(w, w->sockq, &w->sock_fill, &w->sock_paused, w->sock->fd, EV_SOCK, w->sock_slots, &b, left);
  }
  if (err != 0) fail(w, err, "recvmmsg");
  return err == 0;
}

/* Level-triggered: a ring's worth per readiness, then the other descriptor gets its turn. */
static void *worker_main(void *arg) {
  fast_worker *w = arg;
  struct epoll_event ev[3];
  pthread_setname_np(pthread_self(), "agent-worker"); /* what top -H and /proc show */
  for (;;) {
    const int n = epoll_wait(w->epfd, ev, 3, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(w, errno, "epoll_wait");
      return NULL;
    }
    for (int i = 0; i < n; i++) {
      const uint32_t what = ev[i].data.u32;
      if (what == EV_STOP) return NULL;
      if (what == EV_TUN ? !on_tun(w) : !on_sock(w, ev[i].events)) return NULL;
    }
  }
}

/* ---------- the main thread's side ---------- */

/*
 * The buffer the worker was filling, now the main thread's; the worker fills the other, which
 * the main thread emptied last time, so a paused fd is read again.
 */
static handoff *take_filled(fast_worker *w, handoff q[2], int *fill, bool *paused, int fd, uint32_t what) {
  pthread_mutex_lock(&w->mu);
  handoff *h = &q[*fill];
  *fill ^= 1;
  if (*paused && !w->stopped) {
    *paused = false;
    watch(w, fd, what, true);
  }
  pthread_mutex_unlock(&w->mu);
  return h;
}

static void report_failure(fast_path *fp, fast_worker *w) {
  if (w->reported || !__atomic_load_n(&w->failed, __ATOMIC_ACQUIRE) || fp->on_worker_error == NULL) return;
  w->reported = true;
  napi_handle_scope scope;
  napi_value code, msg, err;
  if (napi_open_handle_scope(fp->env, &scope) != napi_ok) return;
  if (napi_create_string_utf8(fp->env, w->error_code, NAPI_AUTO_LENGTH, &code) == napi_ok &&
      napi_create_string_utf8(fp->env, w->error, NAPI_AUTO_LENGTH, &msg) == napi_ok &&
      napi_create_error(fp->env, code, msg, &err) == napi_ok) {
    agent_call_js(fp->env, fp->async_ctx, fp->on_worker_error, 1, &err);
  }
  napi_close_handle_scope(fp->env, scope);
}

/*
 * What workers handed over goes through the main pollers' batch handlers. Those call JS, which
 * may close the fast path meanwhile: workers are then stopped, but their memory stays (see
 * the top), and the pollers are looked up again before each delivery.
 */
static void on_handoff(uv_async_t *a) {
  fast_path *fp = a->data;
  for (uint32_t i = 0; i < fp->n_workers; i++) {
    fast_worker *w = fp->workers[i];
    if (w->stopped) continue;
    handoff *t = take_filled(w, w->tunq, &w->tun_fill, &w->tun_paused, w->tun->fd, EV_TUN);
    if (t->n > 0 && fp->tun != NULL) tun_inject(fp->tun, t->data, t->stride, t->lengths, t->n);
    t->n = 0;
    /* JS, called above, may have stopped the workers. */
    if (w->stopped) continue;
    handoff *s = take_filled(w, w->sockq, &w->sock_fill, &w->sock_paused, w->sock->fd, EV_SOCK);
    if (s->n > 0 && fp->sock != NULL) net_inject(fp->sock, s->data, s->stride, s->lengths, s->addrs, s->ports, s->n);
    s->n = 0;
    report_failure(fp, w);
  }
}

static void free_handle(uv_handle_t *h) {
  free(h);
}

/* poller.worker_stop: a worker's TUN queue or socket is closing, so every worker stops first. */
static void stop_before_close(void *ctx) {
  fast_stop_workers(ctx);
}

static void own(poller *p, fast_path *fp) {
  p->worker_stop = stop_before_close;
  p->worker_ctx = fp;
}

static void disown(poller *p) {
  p->worker_stop = NULL;
  p->worker_ctx = NULL;
}

void fast_stop_workers(fast_path *fp) {
  for (uint32_t i = 0; i < fp->n_workers; i++) {
    fast_worker *w = fp->workers[i];
    if (w->stopped) continue;
    const uint64_t one = 1;
    /* An eventfd write of 1 cannot fail short of a counter at 2^64 - 2. */
    while (write(w->stopfd, &one, sizeof one) < 0 && errno == EINTR) {
    }
    pthread_join(w->thread, NULL);
    w->stopped = true;
    close(w->epfd);
    close(w->stopfd);
    w->epfd = w->stopfd = -1;
    /* The handles (and their descriptors) may go now. */
    disown(w->tun);
    disown(w->sock);
    net_drop_ring(w->sock);
    napi_delete_reference(fp->env, w->tun_ref);
    napi_delete_reference(fp->env, w->sock_ref);
    w->tun_ref = w->sock_ref = NULL;
    w->tun = w->sock = NULL;
    w->lane.sock = NULL;
  }
  if (fp->handoff != NULL) {
    uv_close((uv_handle_t *)fp->handoff, free_handle);
    fp->handoff = NULL;
  }
  if (fp->on_worker_error != NULL) {
    napi_delete_reference(fp->env, fp->on_worker_error);
    fp->on_worker_error = NULL;
  }
  if (fp->async_ctx != NULL) {
    napi_async_destroy(fp->env, fp->async_ctx);
    fp->async_ctx = NULL;
  }
}

static void free_worker(fast_worker *w) {
  if (w == NULL) return;
  for (int i = 0; i < 2; i++) {
    free(w->tunq[i].data);
    free(w->tunq[i].lengths);
    free(w->sockq[i].data);
    free(w->sockq[i].lengths);
    free(w->sockq[i].addrs);
    free(w->sockq[i].ports);
  }
  free(w->tun_ring);
  free(w->tun_lengths);
  free(w->sock_ring);
  free(w->sock_lengths);
  free(w->sock_addrs);
  free(w->sock_ports);
  fast_lane_free(&w->lane);
  pthread_mutex_destroy(&w->mu);
  free(w);
}

void fast_free_workers(fast_path *fp) {
  fast_stop_workers(fp);
  for (uint32_t i = 0; i < fp->n_workers; i++) free_worker(fp->workers[i]);
  fp->n_workers = 0;
  if (fp->cleanup_hook) {
    napi_remove_env_cleanup_hook(fp->env, fast_env_cleanup, fp);
    fp->cleanup_hook = false;
  }
}

/* The environment is going away (a worker_thread ending, or exit): threads stop before the
 * descriptors and the table they use are freed, in whatever order finalizers then run. */
void fast_env_cleanup(void *arg) {
  fast_path *fp = arg;
  fp->cleanup_hook = false;
  fast_stop_workers(fp);
}

uint32_t fast_lanes(fast_path *fp, const lane **out) {
  out[0] = &fp->main;
  for (uint32_t i = 0; i < fp->n_workers; i++) out[i + 1] = &fp->workers[i]->lane;
  return fp->n_workers + 1;
}

void fast_write_lock(fast_path *fp) {
  pthread_rwlock_wrlock(&fp->lock);
}

void fast_write_unlock(fast_path *fp) {
  pthread_rwlock_unlock(&fp->lock);
}

/* ---------- addWorker ---------- */

static bool alloc_handoff(handoff *h, uint32_t stride, bool meta) {
  h->stride = stride;
  h->data = malloc((size_t)HANDOFF_CAP * stride);
  h->lengths = malloc(sizeof *h->lengths * HANDOFF_CAP);
  if (meta) {
    h->addrs = malloc(sizeof *h->addrs * HANDOFF_CAP);
    h->ports = malloc(sizeof *h->ports * HANDOFF_CAP);
  }
  return h->data != NULL && h->lengths != NULL && (!meta || (h->addrs != NULL && h->ports != NULL));
}

/* A worker with rings of the main pollers' geometry; NULL when out of memory. */
static fast_worker *new_worker(fast_path *fp, poller *tun, poller *sock) {
  fast_worker *w = calloc(1, sizeof *w);
  if (w == NULL) return NULL;
  pthread_mutex_init(&w->mu, NULL);
  w->fp = fp;
  w->tun = tun;
  w->sock = sock;
  w->epfd = w->stopfd = -1;
  w->lane.sock = sock;
  w->lane.tun_fd = tun->fd;
  w->lane.vnet = tun_vnet(tun);
  w->tun_slot = fp->tun->slot_size;
  w->tun_headroom = fp->tun->headroom;
  w->tun_slots = fp->tun->slots;
  w->sock_slot = fp->sock->slot_size;
  w->sock_headroom = fp->sock->headroom;
  w->sock_slots = fp->sock->slots;
  const uint32_t max_payload = net_max_payload(fp->sock);
  w->tun_ring = malloc((size_t)w->tun_slots * w->tun_slot);
  w->tun_lengths = malloc(sizeof *w->tun_lengths * w->tun_slots);
  w->sock_ring = malloc((size_t)w->sock_slots * w->sock_slot);
  w->sock_lengths = malloc(sizeof *w->sock_lengths * w->sock_slots);
  w->sock_addrs = malloc(sizeof *w->sock_addrs * w->sock_slots);
  w->sock_ports = malloc(sizeof *w->sock_ports * w->sock_slots);
  bool ok = w->tun_ring && w->tun_lengths && w->sock_ring && w->sock_lengths && w->sock_addrs && w->sock_ports &&
            fast_lane_reserve(&w->lane, w->tun_slots > w->sock_slots ? w->tun_slots : w->sock_slots);
  for (int i = 0; i < 2 && ok; i++) {
    ok = alloc_handoff(&w->tunq[i], w->tun_slot - w->tun_headroom, false) && alloc_handoff(&w->sockq[i], max_payload, true);
  }
  if (ok) {
    ok = net_use_ring(sock, w->sock_ring, w->sock_lengths, w->sock_addrs, w->sock_ports, w->sock_slot, w->sock_headroom,
                      max_payload, w->sock_slots);
  }
  if (!ok) {
    net_drop_ring(sock);
    free_worker(w);
    return NULL;
  }
  return w;
}

/* The epoll set and the thread, with every signal blocked in it (they are the main thread's). */
static int start_thread(fast_worker *w) {
  struct epoll_event e = {.events = EPOLLIN};
  if ((w->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0 || (w->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) return errno;
  e.data.u32 = EV_STOP;
  if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->stopfd, &e) != 0) return errno;
  e.data.u32 = EV_TUN;
  if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->tun->fd, &e) != 0) return errno;
  e.data.u32 = EV_SOCK;
  if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->sock->fd, &e) != 0) return errno;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  const int rc = pthread_create(&w->thread, NULL, worker_main, w);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return rc;
}

static void throw_code(napi_env env, const char *code, const char *msg) {
  poller_throw_error(env, code, msg);
}

/*
 * The main thread's wake-up for handoffs, what reports a worker's failure to JS, and the
 * environment cleanup hook that stops workers before teardown frees what they use: all of
 * them or, on failure, none.
 */
static bool ensure_handoff(napi_env env, fast_path *fp, napi_value on_error) {
  if (fp->handoff != NULL) return true;
  uv_loop_t *loop;
  napi_value name;
  napi_ref on_error_ref = NULL;
  napi_async_context ctx = NULL;
  /* Registered once per fast path: Node aborts on the same hook registered twice, which a
   * second addWorker after the workers were stopped (fast_stop_workers keeps the hook) would do. */
  const bool add_hook = !fp->cleanup_hook;
  uv_async_t *a = malloc(sizeof *a);
  if (a == NULL) return false;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || napi_create_reference(env, on_error, 1, &on_error_ref) != napi_ok ||
      napi_create_string_utf8(env, "agent:fast-worker", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, NULL, name, &ctx) != napi_ok ||
      (add_hook && napi_add_env_cleanup_hook(env, fast_env_cleanup, fp) != napi_ok)) {
    if (ctx != NULL) napi_async_destroy(env, ctx);
    if (on_error_ref != NULL) napi_delete_reference(env, on_error_ref);
    free(a);
    return false;
  }
  if (uv_async_init(loop, a, on_handoff) != 0) {
    if (add_hook) napi_remove_env_cleanup_hook(env, fast_env_cleanup, fp);
    napi_async_destroy(env, ctx);
    napi_delete_reference(env, on_error_ref);
    free(a);
    return false;
  }
  a->data = fp;
  uv_unref((uv_handle_t *)a); /* workers never keep the process alive by themselves */
  fp->handoff = a;
  fp->on_worker_error = on_error_ref;
  fp->async_ctx = ctx;
  fp->cleanup_hook = true;
  return true;
}

napi_value fast_add_worker(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  napi_valuetype t;
  if (!agent_args(env, info, 4, argv, "addWorker(handle, tunQueue, socket, onError)")) return NULL;
  fast_path *fp = fast_get(env, argv[0]);
  if (fp == NULL) return NULL;
  poller *tun = tun_poller(env, argv[1]);
  if (tun == NULL) return NULL;
  poller *sock = net_poller(env, argv[2]);
  if (sock == NULL) return NULL;
  if (napi_typeof(env, argv[3], &t) != napi_ok || t != napi_function) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "addWorker: onError must be a function");
    return NULL;
  }
  if (fp->closed || fp->role != ROLE_NODE || fp->tun == NULL || fp->sock == NULL || fp->tun->slots == 0 ||
      fp->sock->slots == 0 || net_max_payload(fp->sock) == 0) {
    throw_code(env, "ERR_AGENT_FAST_STATE",
               "addWorker: a node's fast path, attached to a TUN device and a socket that have both started");
    return NULL;
  }
  if (tun == fp->tun || sock == fp->sock || tun->poll_open || sock->poll_open || tun->closed || sock->closed ||
      tun->worker_stop != NULL || sock->worker_stop != NULL || tun->filter != NULL || sock->filter != NULL ||
      tun_vnet(tun) != tun_vnet(fp->tun)) {
    throw_code(env, "ERR_AGENT_FAST_STATE",
               "addWorker: the worker needs a TUN queue and a socket of its own, open and not started");
    return NULL;
  }
  if (fp->n_workers == FAST_MAX_WORKERS) {
    throw_code(env, "ERR_AGENT_FAST_STATE", "addWorker: too many workers");
    return NULL;
  }
  if (!ensure_handoff(env, fp, argv[3])) {
    throw_code(env, "ERR_AGENT_FAST_NAPI", "addWorker: cannot set up the main thread's wake-up");
    return NULL;
  }
  fast_worker *w = new_worker(fp, tun, sock);
  if (w == NULL) {
    throw_code(env, "ERR_AGENT_FAST_NOMEM", "addWorker: out of memory");
    return NULL;
  }
  if (napi_create_reference(env, argv[1], 1, &w->tun_ref) != napi_ok ||
      napi_create_reference(env, argv[2], 1, &w->sock_ref) != napi_ok) {
    if (w->tun_ref != NULL) napi_delete_reference(env, w->tun_ref);
    net_drop_ring(sock);
    free_worker(w);
    throw_code(env, "ERR_AGENT_FAST_NAPI", "addWorker: cannot reference the TUN queue and socket");
    return NULL;
  }
  const int err = start_thread(w);
  if (err != 0) {
    if (w->epfd >= 0) close(w->epfd);
    if (w->stopfd >= 0) close(w->stopfd);
    napi_delete_reference(env, w->tun_ref);
    napi_delete_reference(env, w->sock_ref);
    net_drop_ring(sock);
    free_worker(w);
    char msg[160];
    snprintf(msg, sizeof msg, "addWorker: cannot start the worker thread: %s", strerror(err));
    throw_code(env, "ERR_AGENT_FAST_THREAD", msg);
    return NULL;
  }
  own(tun, fp);
  own(sock, fp);
  fp->workers[fp->n_workers++] = w;
  return NULL;
}
