/*
 * nsb_prod.c -- the producer side of a child: `conns` keep-alive HTTP/1.1
 * connections, one request in flight on each (no pipelining), posting single
 * notifications, batches or broadcasts either at a fixed total rate (the
 * i-th request is due at start + i/rate; a request that leaves more than
 * 5 ms after its slot is counted late) or as fast as the server answers.
 * Every notification carries "nsb:<seq>:<send time ns>" in its body (the
 * broadcast in data.message), so receivers can measure latency and the
 * parent can tell exactly which accepted items were delivered.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "nsb_child.h"

#define NS_PER_S 1000000000LL
#define DRAIN_NS (15LL * NS_PER_S)   /* wait for answers after the end */
#define MAX_CONN_ERRORS 1000
#define LATE_NS 5000000LL

static void h_close(hconn *h) {
  if (h->io.fd >= 0)
    close(h->io.fd);
  h->io.fd = -1;
  h->want_out = 0;
  h->in.len = 0;
  h->out.len = 0;
}

static void h_connect(child *ch, hconn *h, int64_t now) {
  int fd = nsb_tcp_connect(&ch->dst, ch->bind_src ? &ch->src : NULL);
  if (fd < 0) {
    ch->pd.conn_errors++;
    snprintf(ch->pd.last_error, sizeof(ch->pd.last_error), "connect: %s",
             strerror(-fd));
    h->state = H_RETRY;
    h->t_retry = now + NS_PER_S / 5;
    return;
  }
  h->io.kind = IO_HTTP;
  h->io.fd = fd;
  h->state = H_CONNECTING;
  h->want_out = 1;
  nsb_child_watch(ch, &h->io, EPOLLIN | EPOLLOUT | EPOLLRDHUP, 1);
}

/* The connection broke: a request in flight counts as failed. */
static void h_broken(child *ch, hconn *h, const char *why, int64_t now) {
  if (h->state == H_BUSY)
    ch->pd.requests++;
  ch->pd.conn_errors++;
  snprintf(ch->pd.last_error, sizeof(ch->pd.last_error), "%s", why);
  h_close(h);
  h->state = H_RETRY;
  h->t_retry = now + NS_PER_S / 10;
}

/* Appends one notification object for `user` to ch->body; with
 * `deliver_at` (RFC 3339) it is scheduled. */
static void add_item_at(child *ch, uint32_t seq, uint32_t user, int64_t t,
                        const char *deliver_at) {
  char item[600], uid[160];
  int n;
  nsb_user_id(ch->o->prefix, user, uid, sizeof(uid));
  n = snprintf(item, sizeof(item),
               "{\"user_id\":\"%s\",\"app_name\":\"bench\",\"title\":\"bench "
               "%u\",\"body\":\"nsb:%u:%lld\",\"category\":\"bench\"%s%s%s}",
               uid, seq, seq, (long long)t,
               deliver_at ? ",\"deliver_at\":\"" : "",
               deliver_at ? deliver_at : "", deliver_at ? "\"" : "");
  nsb_buf_add(&ch->body, item, (size_t)n);
}

static void add_item(child *ch, uint32_t seq, uint32_t user, int64_t t) {
  add_item_at(ch, seq, user, t, NULL);
}

/* Builds and sends the next request on idle connection `h`. */
static void h_send(child *ch, hconn *h, int64_t now) {
  const nsb_produce_args *a = &ch->pa;
  char head[1600];
  const char *path = "/api/v1/notifications";
  uint32_t i, nitems = a->kind == NSB_P_BATCH ? (uint32_t)a->batch : 1;
  int64_t t = nsb_now_ns();
  ssize_t w;
  int n;

  ch->body.len = 0;
  if (a->kind == NSB_P_BCAST) {
    const nsb_opts *o = ch->o;
    uint32_t seq = ch->p_counter++ & 0xffffffu;
    size_t cap = (size_t)o->size + 256;
    if (ch->body.cap < cap) {
      ch->body.p = nsb_xrealloc(ch->body.p, cap);
      ch->body.cap = cap;
    }
    n = nsb_bmark_body((char *)ch->body.p, cap, o->target == NSB_T_NOTISYNC,
                       o->run_id, seq, t, o->size);
    ch->body.len = n > 0 ? (size_t)n : 0;
    path = o->target == NSB_T_NCHAN ? o->pub_path : "/api/v1/broadcast";
    h->seqs[0] = seq;
    h->users[0] = NSB_ALL;
    nitems = 1;
    goto send;
  }
  if (a->kind == NSB_P_STORM) {
    /* Request r: user r / chunks, its notifications from (r % chunks) * 500. */
    uint32_t q = (uint32_t)ch->o->queued, chunks = (q + 499) / 500;
    uint32_t r = (uint32_t)ch->p_sent, user = r / chunks, k0 = r % chunks * 500;
    nitems = q - k0 < 500 ? q - k0 : 500;
    path = "/api/v1/notifications/batch";
    nsb_buf_add(&ch->body, "{\"notifications\":[", 18);
    for (i = 0; i < nitems; i++) {
      h->seqs[i] = user * q + k0 + i;
      h->users[i] = user;
      if (i)
        nsb_buf_add(&ch->body, ",", 1);
      add_item(ch, h->seqs[i], user, t);
    }
    nsb_buf_add(&ch->body, "]}", 2);
    goto send;
  }
  if (a->kind == NSB_P_SCHED) {
    /* Request r: items r * batch .., item i for user i % users, k = i /
     * users; all due at the same second. */
    uint32_t nb = a->batch > 0 ? (uint32_t)a->batch : 1;
    uint32_t nu = (uint32_t)ch->o->users, q = (uint32_t)ch->o->queued;
    uint64_t i0 = ch->p_sent * nb, total = (uint64_t)nu * q;
    char at[40];
    time_t when = (time_t)a->deliver_at_s;
    struct tm tmv;
    gmtime_r(&when, &tmv);
    strftime(at, sizeof(at), "%Y-%m-%dT%H:%M:%SZ", &tmv);
    nitems = i0 < total ? (uint32_t)(total - i0 < nb ? total - i0 : nb) : 0;
    path = "/api/v1/notifications/batch";
    nsb_buf_add(&ch->body, "{\"notifications\":[", 18);
    for (i = 0; i < nitems; i++) {
      uint64_t it = i0 + i;
      uint32_t user = (uint32_t)(it % nu), k = (uint32_t)(it / nu);
      h->seqs[i] = user * q + k;
      h->users[i] = user;
      if (i)
        nsb_buf_add(&ch->body, ",", 1);
      add_item_at(ch, h->seqs[i], user, t, at);
    }
    nsb_buf_add(&ch->body, "]}", 2);
    goto send;
  }
  if (a->kind == NSB_P_PERUSER) {
    /* Request r: users r * batch .. (one notification each, seq = user). */
    uint32_t nb = a->batch > 0 ? (uint32_t)a->batch : 1;
    uint32_t u0 = (uint32_t)ch->p_sent * nb, nu = (uint32_t)ch->o->users;
    nitems = u0 < nu ? (nu - u0 < nb ? nu - u0 : nb) : 0;
    path = "/api/v1/notifications/batch";
    nsb_buf_add(&ch->body, "{\"notifications\":[", 18);
    for (i = 0; i < nitems; i++) {
      h->seqs[i] = u0 + i;
      h->users[i] = u0 + i;
      if (i)
        nsb_buf_add(&ch->body, ",", 1);
      add_item(ch, u0 + i, u0 + i, t);
    }
    nsb_buf_add(&ch->body, "]}", 2);
    goto send;
  }
  if (a->kind == NSB_P_BATCH) {
    path = "/api/v1/notifications/batch";
    nsb_buf_add(&ch->body, "{\"notifications\":[", 18);
  } else if (a->kind == NSB_P_BROADCAST) {
    path = "/api/v1/broadcast";
  }
  for (i = 0; i < nitems; i++) {
    uint32_t seq = ch->job->producer_id << 24 | (ch->p_counter++ & 0xffffffu);
    uint32_t user = (uint32_t)(nsb_rand(&ch->rng) % (uint64_t)ch->o->users);
    h->seqs[i] = seq;
    h->users[i] = a->kind == NSB_P_BROADCAST ? NSB_ALL : user;
    if (a->kind == NSB_P_BROADCAST) {
      char m[128];
      n = snprintf(m, sizeof(m),
                   "{\"type\":\"test\",\"data\":{\"message\":\"nsb:%u:%lld\"}}",
                   seq, (long long)t);
      nsb_buf_add(&ch->body, m, (size_t)n);
    } else {
      if (i)
        nsb_buf_add(&ch->body, ",", 1);
      add_item(ch, seq, user, t);
    }
  }
  if (a->kind == NSB_P_BATCH)
    nsb_buf_add(&ch->body, "]}", 2);
send:
  n = snprintf(head, sizeof(head),
               "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
               "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
               path, ch->host_hdr, ch->svc_token, ch->body.len);
  h->out.len = 0;
  nsb_buf_add(&h->out, head, (size_t)n);
  nsb_buf_add(&h->out, ch->body.p, ch->body.len);
  h->nitems = nitems;
  h->state = H_BUSY;
  h->t_sent = now;
  ch->p_sent++;
  ch->pd.items_sent += nitems;
  if (!ch->pd.t_first_send)
    ch->pd.t_first_send = now;
  w = send(h->io.fd, h->out.p, h->out.len, MSG_NOSIGNAL);
  if (w < 0 && errno != EAGAIN && errno != EINTR) {
    h_broken(ch, h, "send failed", now);
    return;
  }
  nsb_buf_consume(&h->out, w > 0 ? (size_t)w : 0);
  if (h->out.len && !h->want_out) {
    h->want_out = 1;
    nsb_child_watch(ch, &h->io, EPOLLIN | EPOLLOUT | EPOLLRDHUP, 0);
  }
}

static int bucket(int status) {
  switch (status) {
  case 400: return 1;
  case 401: case 403: return 2;
  case 404: return 3;
  case 429: case 503: return 4;
  default: return status >= 200 && status < 300 ? 0 : 5;
  }
}

/* A complete response to the request in flight on `h`. */
static void on_response(child *ch, hconn *h, const nsb_http_resp *r,
                        const char *body, size_t blen, int64_t now) {
  int ok = ch->pa.kind == NSB_P_BCAST
               ? r->status >= 200 && r->status < 300 /* Nchan: 201 or 202 */
               : r->status == (ch->pa.kind == NSB_P_BROADCAST ? 202 : 201);
  int64_t us = (now - h->t_sent) / 1000;
  uint32_t lat = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us, i;
  ch->pd.requests++;
  nsb_buf_add(&ch->lat, &lat, sizeof(lat));
  if (ok) {
    ch->pd.st_ok++;
    ch->pd.items_ok += h->nitems;
    for (i = 0; i < h->nitems; i++) {
      nsb_pair pr = {.seq = h->seqs[i], .user = h->users[i]};
      nsb_buf_add(&ch->okpairs, &pr, sizeof(pr));
    }
  } else {
    ch->pd.status[bucket(r->status)]++;
    snprintf(ch->pd.last_error, sizeof(ch->pd.last_error), "HTTP %d %.*s",
             r->status, (int)(blen > 120 ? 120 : blen), body);
  }
  if (now > ch->pd.t_last_done)
    ch->pd.t_last_done = now;
  h->state = H_READY;
  if (r->close) {
    h_close(h);
    h->state = H_RETRY;
    h->t_retry = now;
    return;
  }
  if (ch->phase == PH_PRODUCING && ch->pa.rate <= 0 && now < ch->p_end &&
      (!ch->pa.max_requests || ch->p_sent < (uint64_t)ch->pa.max_requests) &&
      ch->p_counter < 0xff0000u)
    h_send(ch, h, now);
}

/* Reads once; parses a complete response when there is one. */
static void h_read(child *ch, hconn *h) {
  ssize_t r = recv(h->io.fd, ch->scratch, ch->scratch_cap, 0);
  int64_t now = nsb_now_ns();
  nsb_http_resp resp;
  long hl, bl;
  if (r == 0 && h->state == H_READY) { /* idle keep-alive closed: reopen */
    h_close(h);
    h->state = H_RETRY;
    h->t_retry = now;
    return;
  }
  if (r <= 0) {
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
      return;
    h_broken(ch, h, r == 0 ? "server closed the connection" : "recv failed",
             now);
    return;
  }
  if (h->state != H_BUSY) {
    h_broken(ch, h, "unexpected bytes", now);
    return;
  }
  nsb_buf_add(&h->in, ch->scratch, (size_t)r);
  hl = nsb_http_parse_head((const char *)h->in.p, h->in.len, &resp);
  if (hl == 0)
    return;
  if (hl < 0) {
    h_broken(ch, h, "bad response head", now);
    return;
  }
  bl = nsb_http_body_len((const char *)h->in.p + hl, h->in.len - (size_t)hl,
                         &resp);
  if (bl == -2)
    return;
  if (bl < 0) {
    h_broken(ch, h, "bad response body", now);
    return;
  }
  /* on_response() may reconnect (in.len = 0) or send the next request (no
   * answer to it can be in `in` yet): consume after it. */
  on_response(ch, h, &resp, (const char *)h->in.p + hl, (size_t)bl, now);
  nsb_buf_consume(&h->in, (size_t)(hl + bl));
}

void nsb_prod_event(child *ch, hconn *h, uint32_t events) {
  int64_t now = nsb_now_ns();
  if (h->io.fd < 0)
    return;
  if (h->state == H_CONNECTING) {
    int err = 0;
    socklen_t el = sizeof(err);
    if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
      return;
    if (getsockopt(h->io.fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err) {
      h_broken(ch, h, "connect refused", now);
      return;
    }
    h->state = H_READY;
    h->want_out = 0;
    nsb_child_watch(ch, &h->io, EPOLLIN | EPOLLRDHUP, 0);
    return;
  }
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
    h_read(ch, h);
  if (h->io.fd >= 0 && (events & EPOLLOUT) && h->out.len) {
    ssize_t w = send(h->io.fd, h->out.p, h->out.len, MSG_NOSIGNAL);
    if (w < 0 && errno != EAGAIN && errno != EINTR) {
      h_broken(ch, h, "send failed", now);
      return;
    }
    nsb_buf_consume(&h->out, w > 0 ? (size_t)w : 0);
  }
  if (h->io.fd >= 0 && h->want_out && !h->out.len) {
    h->want_out = 0;
    nsb_child_watch(ch, &h->io, EPOLLIN | EPOLLRDHUP, 0);
  }
}

void nsb_prod_begin(child *ch, const nsb_produce_args *a, int64_t now) {
  int i, nb = a->batch > 0 ? a->batch : 1;
  for (i = 0; i < ch->nhc; i++) {
    h_close(&ch->hc[i]);
    nsb_buf_free(&ch->hc[i].in);
    nsb_buf_free(&ch->hc[i].out);
    free(ch->hc[i].seqs);
    free(ch->hc[i].users);
  }
  free(ch->hc);
  ch->pa = *a;
  ch->nhc = a->conns > 0 ? a->conns : 1;
  ch->hc = nsb_xcalloc((size_t)ch->nhc, sizeof(hconn));
  memset(&ch->pd, 0, sizeof(ch->pd));
  ch->okpairs.len = ch->lat.len = 0;
  ch->p_sent = 0;
  if (!ch->svc_token[0] &&
      nsb_jwt_hs256(ch->o->secret, "notisync-bench-producer", "service",
                    time(NULL), 7200, ch->svc_token, sizeof(ch->svc_token)) < 0)
    snprintf(ch->pd.last_error, sizeof(ch->pd.last_error), "token minting");
  for (i = 0; i < ch->nhc; i++) {
    hconn *h = &ch->hc[i];
    h->io.fd = -1;
    h->seqs = nsb_xcalloc((size_t)nb, sizeof(uint32_t));
    h->users = nsb_xcalloc((size_t)nb, sizeof(uint32_t));
    h_connect(ch, h, now);
  }
  ch->phase = PH_P_CONNECTING;
  ch->phase_deadline = now + 10 * NS_PER_S;
}

/* Sends PRODUCED and closes the connections. */
static void finish(child *ch, int64_t now) {
  int i;
  for (i = 0; i < ch->nhc; i++) {
    if (ch->hc[i].state == H_BUSY || ch->hc[i].state == H_CONNECTING) {
      if (ch->hc[i].state == H_BUSY)
        ch->pd.timeouts++;
    }
    h_close(&ch->hc[i]);
    ch->hc[i].state = H_DOWN;
  }
  ch->pd.npairs = (uint32_t)(ch->okpairs.len / sizeof(nsb_pair));
  ch->pd.nlat = (uint32_t)(ch->lat.len / sizeof(uint32_t));
  if (!ch->pd.t_last_done)
    ch->pd.t_last_done = now;
  ch->phase = PH_IDLE;
  (void)nsb_ipc_send(ch->job->res_fd, NSB_R_PRODUCED, &ch->pd, sizeof(ch->pd),
                     ch->okpairs.p, ch->okpairs.len, ch->lat.p, ch->lat.len);
}

/* Fixed rate: sends every request whose slot has come, if a connection is
 * free (otherwise it leaves late, on the next free one). */
static void send_due(child *ch, int64_t now) {
  uint64_t due = (uint64_t)((double)(now - ch->p_start) * ch->pa.rate / 1e9) + 1;
  int i = 0;
  if (ch->pa.max_requests && due > (uint64_t)ch->pa.max_requests)
    due = (uint64_t)ch->pa.max_requests;
  while (ch->p_sent < due && i < ch->nhc) {
    int64_t slot = ch->p_start + (int64_t)((double)ch->p_sent * 1e9 / ch->pa.rate);
    for (; i < ch->nhc && ch->hc[i].state != H_READY; i++)
      ;
    if (i == ch->nhc)
      break;
    if (now - slot > LATE_NS)
      ch->pd.late++;
    h_send(ch, &ch->hc[i], now);
  }
}

int nsb_prod_tick(child *ch, int64_t now) {
  int i, busy = 0, ready = 0;
  for (i = 0; i < ch->nhc; i++) {
    hconn *h = &ch->hc[i];
    if (h->state == H_RETRY && now >= h->t_retry &&
        (ch->phase == PH_P_CONNECTING || now < ch->p_end))
      h_connect(ch, h, now);
    busy += h->state == H_BUSY;
    ready += h->state == H_READY;
  }
  if (ch->phase == PH_P_CONNECTING) {
    if (ready < ch->nhc && now < ch->phase_deadline)
      return 0;
    if (!ready) {
      finish(ch, now);
      return 1;
    }
    ch->phase = PH_PRODUCING;
    ch->p_start = ch->pd.t_start = now;
    ch->p_end = now + ch->pa.duration_ns;
  }
  if (ch->pd.conn_errors > MAX_CONN_ERRORS || ch->p_counter >= 0xff0000u ||
      (ch->pa.max_requests && ch->p_sent >= (uint64_t)ch->pa.max_requests))
    ch->p_end = now < ch->p_end ? now : ch->p_end;
  if (now < ch->p_end) {
    if (ch->pa.rate > 0) {
      send_due(ch, now);
    } else {
      /* At most max_requests: with more connections than requests left,
       * the spare ones stay idle. */
      for (i = 0; i < ch->nhc; i++)
        if (ch->hc[i].state == H_READY &&
            (!ch->pa.max_requests ||
             ch->p_sent < (uint64_t)ch->pa.max_requests))
          h_send(ch, &ch->hc[i], now);
    }
    return 0;
  }
  if (busy && now < ch->p_end + DRAIN_NS)
    return 0;
  finish(ch, now);
  return 1;
}
