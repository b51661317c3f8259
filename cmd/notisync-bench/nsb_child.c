/*
 * nsb_child.c -- a child process: one epoll loop over its WebSocket
 * connections, its producer connections and the control pipe from the
 * parent.  Commands: CONNECT (open every connection of this child, reply
 * READY), DISCONNECT (close them, reply DONE), PRODUCE (run the producer,
 * reply PRODUCED), EXPECT (the list of accepted items: wait until every
 * expected delivery was seen or the grace time is over, reply REPORT with
 * losses, duplicates, misrouted deliveries and latencies), EXIT.  The loop
 * wakes at least every 20 ms and ends at EXIT, parent EOF or a watchdog.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "nsb_child.h"

#define NS_PER_S 1000000000LL
#define SCRATCH (256u << 10)
#define MAX_RXLAT (32u << 20) /* latency samples kept per child */

void nsb_child_watch(child *ch, io_head *io, uint32_t events, int add) {
  struct epoll_event ev;
  memset(&ev, 0, sizeof(ev));
  ev.events = events;
  ev.data.ptr = io;
  (void)epoll_ctl(ch->ep, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, io->fd, &ev);
}

static int child_init(child *ch, const nsb_job *job) {
  const nsb_opts *o = job->o;
  uint32_t i;
  memset(ch, 0, sizeof(*ch));
  ch->job = job;
  ch->o = o;
  ch->ep = epoll_create1(EPOLL_CLOEXEC);
  if (ch->ep < 0 || nsb_addr(o->host, o->port, &ch->dst) != 0)
    return -1;
  if (strncmp(o->host, "127.", 4) == 0 && job->index < 250) {
    ch->bind_src = 1;
    ch->src.s_addr = htonl(0x7f000000u | (uint32_t)(2 + job->index));
  }
  snprintf(ch->host_hdr, sizeof(ch->host_hdr), "%s:%d", o->host, o->port);
  ch->scratch_cap = SCRATCH;
  ch->scratch = nsb_xmalloc(SCRATCH);
  nsb_random_bytes(&ch->rng, sizeof(ch->rng));
  ch->tok = json_tokener_new();
  if (!ch->tok)
    return -1;
  ch->ctrl.kind = IO_CTRL;
  ch->ctrl.fd = job->ctrl_fd;
  nsb_child_watch(ch, &ch->ctrl, EPOLLIN, 1);
  if (job->role == NSB_ROLE_DEVICES || job->role == NSB_ROLE_PUBLIC) {
    ch->nws = job->count;
    ch->ws = nsb_xcalloc(ch->nws ? ch->nws : 1, sizeof(wsc));
    for (i = 0; i < ch->nws; i++) {
      ch->ws[i].io.fd = -1;
      if (job->role == NSB_ROLE_DEVICES) {
        ch->ws[i].user = (job->first + i) / (uint32_t)o->devices;
        ch->ws[i].dev = (job->first + i) % (uint32_t)o->devices;
      }
    }
    if (o->rx_mode != NSB_RX_LEGACY && o->nbits) {
      ch->bstride = (o->nbits + 7) / 8;
      ch->bits = nsb_xcalloc(ch->nws ? ch->nws : 1, ch->bstride);
      ch->bcount = nsb_xcalloc(ch->nws ? ch->nws : 1, sizeof(uint32_t));
    }
  }
  return 0;
}

/* Forgets every delivery counted so far (a new connect phase begins). */
static void tally_reset(child *ch) {
  if (ch->bits) {
    memset(ch->bits, 0, (size_t)ch->nws * ch->bstride);
    memset(ch->bcount, 0, (size_t)ch->nws * sizeof(uint32_t));
  }
  ch->ncomplete = 0;
  memset(&ch->tally, 0, sizeof(ch->tally));
  ch->rxlat.len = 0;
}

void nsb_child_tally_rx(child *ch, wsc *c, int bcast, uint32_t seq, int64_t t,
                        int64_t now) {
  uint32_t idx = (uint32_t)(c - ch->ws), bit = 0;
  nsb_tally *ty = &ch->tally;
  uint8_t *b;
  int k;
  if (!ch->bits) {
    ty->foreign++;
    return;
  }
  k = nsb_rx_bit(ch->o->rx_mode, ch->o->nbits, c->user, bcast, seq, &bit);
  if (k == 1) {
    ty->misrouted++;
    return;
  }
  if (k != 0) {
    ty->foreign++;
    return;
  }
  b = ch->bits + (size_t)idx * ch->bstride + bit / 8;
  k = ch->o->rx_mode == NSB_RX_C100K && bit < 2 ? (int)bit : -1;
  if (*b & (1u << (bit % 8))) {
    ty->dups++;
    if (k >= 0)
      ty->bit_dups[k]++;
    return;
  }
  *b |= (uint8_t)(1u << (bit % 8));
  ty->unique++;
  if (k >= 0) {
    ty->bit_conns[k]++;
    if (now > ty->bit_t_last[k])
      ty->bit_t_last[k] = now;
  }
  if (!ty->t_first_rx || now < ty->t_first_rx)
    ty->t_first_rx = now;
  if (now > ty->t_last_rx)
    ty->t_last_rx = now;
  if (++ch->bcount[idx] == ch->o->nbits) {
    ch->ncomplete++;
    ty->t_complete = now; /* the latest completion so far */
  }
  if (ch->rxlat.len / sizeof(uint32_t) < MAX_RXLAT) {
    int64_t us = now > t ? (now - t) / 1000 : 0;
    uint32_t v = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    nsb_buf_add(&ch->rxlat, &v, sizeof(v));
  } else {
    ty->lat_capped = 1;
  }
}

/* Connections a TALLY accounts for: the open ones (broadcasts reach only
 * those), or every device (a storm's queue waits for its device). */
static uint32_t tally_conns(const child *ch) {
  uint32_t i, n = 0;
  if (ch->o->rx_mode == NSB_RX_STORM)
    return ch->nws;
  for (i = 0; i < ch->nws; i++)
    n += ch->ws[i].armed;
  return n;
}

/* Accepted messages connection `i` has not received. */
static uint64_t missing(const child *ch, uint32_t i) {
  const uint8_t *b = ch->bits + (size_t)i * ch->bstride;
  uint64_t n = 0;
  size_t k = 0;
  if (!ch->acc)
    return ch->o->nbits - ch->bcount[i];
  for (; k + 8 <= ch->bstride; k += 8) {
    uint64_t x, y;
    memcpy(&x, ch->acc + k, 8);
    memcpy(&y, b + k, 8);
    n += (uint64_t)__builtin_popcountll(x & ~y);
  }
  for (; k < ch->bstride; k++)
    n += (uint64_t)__builtin_popcount((unsigned)(ch->acc[k] & ~b[k]) & 0xffu);
  return n;
}

static void tally_tick(child *ch, int64_t now) {
  nsb_tally *ty = &ch->tally;
  uint32_t i, want;
  uint64_t lost = 0, lossy = 0;
  if (now < ch->next_check)
    return;
  ch->next_check = now + NS_PER_S / 20;
  want = tally_conns(ch);
  if (ch->ncomplete < want && ch->bits)
    for (i = 0; i < ch->nws; i++)
      if (ch->o->rx_mode == NSB_RX_STORM || ch->ws[i].armed) {
        uint64_t m = missing(ch, i);
        lost += m;
        lossy += m > 0;
      }
  if (lost && now < ch->phase_deadline)
    return;
  ty->conns = want;
  ty->conns_with_loss = lossy;
  ty->lost_accepted = lost;
  ty->closed_by_server = 0;
  for (i = 0; i < ch->nws; i++)
    ty->closed_by_server += ch->ws[i].state == WS_CLOSED;
  if (ch->ncomplete < want)
    ty->t_complete = 0;
  ty->nlat = (uint32_t)(ch->rxlat.len / sizeof(uint32_t));
  (void)nsb_ipc_send(ch->job->res_fd, NSB_R_TALLY, ty, sizeof(*ty),
                     ch->rxlat.p, ch->rxlat.len, NULL, 0);
  ch->phase = PH_IDLE;
}

static void begin_connect(child *ch, int64_t now) {
  uint32_t i;
  memset(&ch->ready, 0, sizeof(ch->ready));
  ch->ready.wanted = ch->nws;
  for (i = 0; i < ch->nws; i++) {
    wsc *c = &ch->ws[i];
    if (c->state == WS_OPEN) {
      ch->ready.connected++;
      continue;
    }
    nsb_wsc_close_fd(ch, c);
    c->state = WS_IDLE;
    c->attempts = 0;
  }
  ch->next_start = 0;
  ch->inflight = 0;
  ch->connect_t0 = now;
  tally_reset(ch);
  ch->phase = PH_CONNECTING;
  ch->phase_deadline = now + (int64_t)(ch->o->connect_timeout * 1e9);
}

/* Ends the connect phase when everything is decided or time is up. */
static void connect_tick(child *ch, int64_t now) {
  uint32_t i, pending = 0;
  nsb_wsc_tick(ch, now);
  for (i = 0; i < ch->nws; i++) {
    uint8_t s = ch->ws[i].state;
    pending += s == WS_IDLE || s == WS_TCP || s == WS_HANDSHAKE ||
               s == WS_WELCOME || s == WS_PINGED || s == WS_RETRY;
  }
  if (pending && now < ch->phase_deadline)
    return;
  for (i = 0; i < ch->nws; i++) {
    wsc *c = &ch->ws[i];
    if (c->state != WS_OPEN && c->state != WS_FAILED && c->state != WS_CLOSED &&
        c->state != WS_GONE) {
      nsb_wsc_close_fd(ch, c);
      c->state = WS_FAILED;
      ch->ready.failed++;
      ch->ready.fail_timeout++;
    }
    c->armed = c->state == WS_OPEN;
  }
  ch->inflight = 0;
  ch->ready.elapsed_ns = now - ch->connect_t0;
  ch->phase = PH_IDLE;
  (void)nsb_ipc_send(ch->job->res_fd, NSB_R_READY, &ch->ready,
                     sizeof(ch->ready), NULL, 0, NULL, 0);
}

static int cmp_rec(const void *a, const void *b) {
  uint64_t x = ((const rec *)a)->key, y = ((const rec *)b)->key;
  return x < y ? -1 : x > y;
}

/* Binary search of `seq` in the sorted pairs; NULL when absent. */
static const nsb_pair *find_pair(const child *ch, uint32_t seq) {
  size_t lo = 0, hi = ch->npairs;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (ch->pairs[mid].seq == seq)
      return &ch->pairs[mid];
    if (ch->pairs[mid].seq < seq)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

/* Sorts the records and checks them against the expected pairs; fills the
 * report counters, the matched latencies and per-seq maxima. */
static void check(child *ch, nsb_buf *lat, uint32_t *permax) {
  size_t i;
  nsb_report *r = &ch->rep;
  if (ch->nrec)
    qsort(ch->recs, ch->nrec, sizeof(rec), cmp_rec);
  r->matched = r->dups = r->misrouted = r->unknown = r->unarmed = 0;
  lat->len = 0;
  if (ch->max_local)
    memset(permax, 0, ch->max_local * sizeof(uint32_t));
  for (i = 0; i < ch->nrec; i++) {
    uint64_t k = ch->recs[i].key;
    uint32_t seq = (uint32_t)k, idx = (uint32_t)(k >> 32), local;
    const nsb_pair *p;
    if (i && ch->recs[i - 1].key == k) {
      r->dups++;
      continue;
    }
    p = find_pair(ch, seq);
    if (!p) {
      r->unknown++;
      continue;
    }
    if (p->user != NSB_ALL && p->user != ch->ws[idx].user) {
      r->misrouted++;
      continue;
    }
    if (!ch->ws[idx].armed) {
      r->unarmed++;
      continue;
    }
    r->matched++;
    nsb_buf_add(lat, &ch->recs[i].lat_us, sizeof(uint32_t));
    local = seq & 0xffffffu;
    if (local < ch->max_local && ch->recs[i].lat_us > permax[local])
      permax[local] = ch->recs[i].lat_us;
  }
  r->expected = ch->expected;
  r->lost = ch->expected > r->matched ? ch->expected - r->matched : 0;
}

static void begin_drain(child *ch, const nsb_buf *m, int64_t now) {
  nsb_expect_args a;
  uint32_t i, armed = 0, u0 = 0, nu = 0, *cnt = NULL;
  memcpy(&a, m->p, sizeof(a));
  if (m->len < sizeof(a) + (size_t)a.npairs * sizeof(nsb_pair))
    a.npairs = (uint32_t)((m->len - sizeof(a)) / sizeof(nsb_pair));
  free(ch->pairs);
  ch->npairs = a.npairs;
  ch->max_local = a.max_local > (1u << 20) ? (1u << 20) : a.max_local;
  ch->pairs = nsb_xmalloc((size_t)a.npairs * sizeof(nsb_pair) + 1);
  if (a.npairs)
    memcpy(ch->pairs, m->p + sizeof(a), (size_t)a.npairs * sizeof(nsb_pair));
  if (ch->job->role == NSB_ROLE_DEVICES && ch->nws) {
    u0 = ch->ws[0].user;
    nu = ch->ws[ch->nws - 1].user - u0 + 1;
    cnt = nsb_xcalloc(nu, sizeof(uint32_t));
  }
  for (i = 0; i < ch->nws; i++) {
    armed += ch->ws[i].armed;
    if (cnt && ch->ws[i].armed)
      cnt[ch->ws[i].user - u0]++;
  }
  ch->expected = 0;
  for (i = 0; i < ch->npairs; i++) {
    uint32_t u = ch->pairs[i].user;
    if (u == NSB_ALL)
      ch->expected += armed;
    else if (cnt && u >= u0 && u - u0 < nu)
      ch->expected += cnt[u - u0];
  }
  free(cnt);
  ch->phase = PH_DRAINING;
  ch->phase_deadline = now + a.grace_ns;
  ch->next_check = now;
}

static void drain_tick(child *ch, int64_t now) {
  nsb_buf lat = {0};
  uint32_t *permax;
  if (now < ch->next_check)
    return;
  ch->next_check = now + NS_PER_S / 10;
  if (ch->nrec < ch->expected && now < ch->phase_deadline)
    return;
  permax = nsb_xcalloc(ch->max_local ? ch->max_local : 1, sizeof(uint32_t));
  check(ch, &lat, permax);
  if (ch->rep.lost == 0 || now >= ch->phase_deadline) {
    ch->rep.nlat = (uint32_t)(lat.len / sizeof(uint32_t));
    ch->rep.nmax = ch->max_local;
    (void)nsb_ipc_send(ch->job->res_fd, NSB_R_REPORT, &ch->rep,
                       sizeof(ch->rep), lat.p, lat.len, permax,
                       ch->max_local * sizeof(uint32_t));
    memset(&ch->rep, 0, sizeof(ch->rep));
    ch->nrec = 0;
    ch->phase = PH_IDLE;
  }
  free(permax);
  nsb_buf_free(&lat);
}

/* One command from the parent (read whole; the parent writes it at once). */
static void on_ctrl(child *ch, nsb_buf *m, int64_t now) {
  int type = nsb_ipc_recv(ch->ctrl.fd, now + 30 * NS_PER_S, m);
  uint32_t i;
  switch (type) {
  case NSB_CMD_CONNECT:
    begin_connect(ch, now);
    break;
  case NSB_CMD_DISCONNECT:
    for (i = 0; i < ch->nws; i++)
      nsb_wsc_disconnect(ch, &ch->ws[i]);
    (void)nsb_ipc_send(ch->job->res_fd, NSB_R_DONE, NULL, 0, NULL, 0, NULL, 0);
    break;
  case NSB_CMD_PRODUCE: {
    nsb_produce_args a;
    if (m->len < sizeof(a)) {
      ch->exiting = 1;
      break;
    }
    memcpy(&a, m->p, sizeof(a));
    nsb_prod_begin(ch, &a, now);
    break;
  }
  case NSB_CMD_EXPECT:
    if (m->len < sizeof(nsb_expect_args)) {
      ch->exiting = 1;
      break;
    }
    begin_drain(ch, m, now);
    break;
  case NSB_CMD_TALLY: {
    nsb_tally_args a;
    if (m->len < sizeof(a)) {
      ch->exiting = 1;
      break;
    }
    memcpy(&a, m->p, sizeof(a));
    free(ch->acc);
    ch->acc = NULL;
    if (ch->bits && a.acc_bytes == ch->bstride &&
        m->len >= sizeof(a) + a.acc_bytes) {
      ch->acc = nsb_xmalloc(ch->bstride);
      memcpy(ch->acc, m->p + sizeof(a), ch->bstride);
    }
    ch->phase = PH_TALLY;
    ch->phase_deadline = now + a.grace_ns;
    ch->next_check = now;
    break;
  }
  default: /* EXIT, EOF, garbage */
    ch->exiting = 1;
    break;
  }
}

static void child_free(child *ch) {
  uint32_t i;
  int k;
  for (i = 0; i < ch->nws; i++)
    nsb_wsc_close_fd(ch, &ch->ws[i]);
  for (k = 0; k < ch->nhc; k++) {
    if (ch->hc[k].io.fd >= 0)
      close(ch->hc[k].io.fd);
    nsb_buf_free(&ch->hc[k].in);
    nsb_buf_free(&ch->hc[k].out);
    free(ch->hc[k].seqs);
    free(ch->hc[k].users);
  }
  free(ch->hc);
  free(ch->ws);
  free(ch->recs);
  free(ch->pairs);
  free(ch->bits);
  free(ch->bcount);
  free(ch->acc);
  nsb_buf_free(&ch->rxlat);
  free(ch->scratch);
  nsb_buf_free(&ch->okpairs);
  nsb_buf_free(&ch->lat);
  nsb_buf_free(&ch->body);
  if (ch->tok)
    json_tokener_free(ch->tok);
  if (ch->ep >= 0)
    close(ch->ep);
}

int nsb_child_main(const nsb_job *job) {
  const nsb_opts *o = job->o;
  struct epoll_event evs[512];
  nsb_buf m = {0};
  child ch;
  int64_t watchdog = nsb_now_ns() +
                     (int64_t)((3 * o->duration + 3 * o->connect_timeout +
                                2 * o->grace + 1800) * 1e9);
  int rc = 0;

  if (child_init(&ch, job) != 0) {
    fprintf(stderr, "notisync-bench: child %d: init failed\n", job->index);
    child_free(&ch);
    return 1;
  }
  while (!ch.exiting) {
    int n, i, ctrl = 0, tmo = ch.phase == PH_PRODUCING ? 1 : 20;
    int64_t now = nsb_now_ns();
    if (now > watchdog) {
      fprintf(stderr, "notisync-bench: child %d: watchdog expired\n",
              job->index);
      rc = 1;
      break;
    }
    n = epoll_wait(ch.ep, evs, 512, tmo);
    for (i = 0; i < n; i++) {
      io_head *io = evs[i].data.ptr;
      if (io->kind == IO_CTRL)
        ctrl = 1; /* after the batch: commands may reallocate connections */
      else if (io->kind == IO_WS)
        nsb_wsc_event(&ch, (wsc *)io, evs[i].events);
      else if (io->kind == IO_HTTP)
        nsb_prod_event(&ch, (hconn *)io, evs[i].events);
    }
    now = nsb_now_ns();
    if (ctrl)
      on_ctrl(&ch, &m, now);
    if (ch.phase == PH_CONNECTING)
      connect_tick(&ch, now);
    else if (ch.phase == PH_P_CONNECTING || ch.phase == PH_PRODUCING)
      (void)nsb_prod_tick(&ch, now);
    else if (ch.phase == PH_DRAINING)
      drain_tick(&ch, now);
    else if (ch.phase == PH_TALLY)
      tally_tick(&ch, now);
  }
  nsb_buf_free(&m);
  child_free(&ch);
  return rc;
}
