/*
 * nsb_wsc.c -- the bench's WebSocket client connections (device role: /ws
 * with a token and a device_id; public role: /ws/public).  Each connection
 * goes TCP connect -> HTTP/1.1 upgrade with a random key (101 and the accept
 * hash checked) -> `welcome` (devices) -> open.  Open connections answer
 * pings with pongs, reassemble fragmented messages, and record every bench
 * notification / broadcast they receive with its latency.  Failed attempts
 * are retried with backoff during the connect phase; everything else is
 * counted for the report.
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

#define MAX_ATTEMPTS 6
#define ATTEMPT_TIMEOUT_NS (15LL * 1000000000LL)
#define MAX_MSG (16u << 20)
#define MAX_RECS (64u << 20)

enum { F_TCP, F_TIMEOUT, F_HTTP, F_CLOSE };

static uint32_t idx_of(const child *ch, const wsc *c) {
  return (uint32_t)(c - ch->ws);
}

void nsb_wsc_close_fd(child *ch, wsc *c) {
  (void)ch;
  if (c->io.fd >= 0)
    close(c->io.fd);
  c->io.fd = -1;
  c->want_out = 0;
  c->in_msg = 0;
  nsb_buf_free(&c->in);
  nsb_buf_free(&c->out);
  nsb_buf_free(&c->msg);
}

/* Counts a close code in the report's small (code, count) table. */
static void count_close(child *ch, uint32_t code) {
  int i;
  for (i = 0; i < 8; i++) {
    if (ch->rep.close_codes[i][0] == code || ch->rep.close_codes[i][1] == 0) {
      ch->rep.close_codes[i][0] = code;
      ch->rep.close_codes[i][1]++;
      return;
    }
  }
}

/* An attempt failed: retry later when allowed, else give up.  A connection
 * that was open is counted as closed by the server instead. */
static void fail(child *ch, wsc *c, int why, int retryable, int64_t now) {
  int was_open = c->state == WS_OPEN;
  int in_flight = c->state == WS_TCP || c->state == WS_HANDSHAKE ||
                  c->state == WS_WELCOME || c->state == WS_PINGED;
  nsb_wsc_close_fd(ch, c);
  if (was_open || c->state == WS_CLOSED) {
    c->state = WS_CLOSED;
    ch->rep.closed_by_server++;
    return;
  }
  if (in_flight && ch->inflight)
    ch->inflight--;
  if (ch->phase == PH_CONNECTING && retryable && c->attempts < MAX_ATTEMPTS) {
    int64_t back = (100000000LL << (c->attempts < 5 ? c->attempts : 5));
    c->state = WS_RETRY;
    c->t_retry = now + back + (int64_t)(nsb_rand(&ch->rng) % 100000000ULL);
    ch->ready.retries++;
    return;
  }
  c->state = WS_FAILED;
  ch->ready.failed++;
  if (why == F_TCP)
    ch->ready.fail_tcp++;
  else if (why == F_TIMEOUT)
    ch->ready.fail_timeout++;
  else if (why == F_HTTP)
    ch->ready.fail_http++;
  else
    ch->ready.fail_close++;
}

/* Sends bytes now if possible; keeps the rest and asks for EPOLLOUT. */
static int ws_send_raw(child *ch, wsc *c, const void *p, size_t n) {
  size_t off = 0;
  if (c->out.len == 0) {
    ssize_t w = send(c->io.fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno != EAGAIN && errno != EINTR)
      return -1;
    if (w > 0)
      off = (size_t)w;
  }
  if (off < n) {
    nsb_buf_add(&c->out, (const uint8_t *)p + off, n - off);
    if (!c->want_out) {
      c->want_out = 1;
      nsb_child_watch(ch, &c->io, EPOLLIN | EPOLLOUT | EPOLLRDHUP, 0);
    }
  }
  return 0;
}

/* Sends one masked frame. */
static int ws_send_frame(child *ch, wsc *c, int op, const void *p, size_t n) {
  uint8_t fr[256];
  uint32_t mask = (uint32_t)nsb_rand(&ch->rng);
  size_t k = nsb_ws_encode(fr, sizeof(fr), op, p, n, mask);
  return k ? ws_send_raw(ch, c, fr, k) : -1;
}

void nsb_wsc_start(child *ch, wsc *c, int64_t now) {
  uint8_t raw[16];
  int fd;
  c->attempts++;
  c->t_begin = now;
  if (!ch->ready.t_first_connect)
    ch->ready.t_first_connect = now;
  nsb_random_bytes(raw, sizeof(raw));
  nsb_b64(raw, sizeof(raw), c->key, 0);
  ch->inflight++;
  c->state = WS_TCP;
  fd = nsb_tcp_connect(&ch->dst, ch->bind_src ? &ch->src : NULL);
  if (fd < 0) {
    c->io.fd = -1;
    fail(ch, c, F_TCP, 1, now);
    return;
  }
  c->io.kind = IO_WS;
  c->io.fd = fd;
  c->want_out = 1;
  nsb_child_watch(ch, &c->io, EPOLLIN | EPOLLOUT | EPOLLRDHUP, 1);
}

/* TCP is up: send the upgrade request. */
static void send_upgrade(child *ch, wsc *c, int64_t now) {
  char req[2600], tok[1200], uid[160], path[1500];
  int n;
  if (ch->job->role == NSB_ROLE_DEVICES) {
    nsb_user_id(ch->o->prefix, c->user, uid, sizeof(uid));
    if (nsb_jwt_hs256(ch->o->secret, uid, NULL, time(NULL), 7200, tok,
                      sizeof(tok)) < 0) {
      fail(ch, c, F_HTTP, 0, now);
      return;
    }
    snprintf(path, sizeof(path), "/ws?token=%s&device_id=d%u&platform=bench",
             tok, c->dev);
  } else {
    snprintf(path, sizeof(path), "%s", ch->o->public_path);
  }
  n = snprintf(req, sizeof(req),
               "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
               "Sec-WebSocket-Version: 13\r\nUser-Agent: notisync-bench\r\n\r\n",
               path, ch->host_hdr, c->key);
  c->state = WS_HANDSHAKE;
  if (n < 0 || (size_t)n >= sizeof(req) ||
      ws_send_raw(ch, c, req, (size_t)n) != 0)
    fail(ch, c, F_TCP, 1, now);
}

/* Sends {"type":"ping","ref":"nsb"} -- proves the server accepts our masked
 * frames -- and waits for the pong before counting the connection. */
static void send_ping(child *ch, wsc *c, int64_t now) {
  static const char ping[] = "{\"type\":\"ping\",\"ref\":\"nsb\",\"data\":{}}";
  c->state = WS_PINGED;
  if (ws_send_frame(ch, c, NSB_WS_TEXT, ping, sizeof(ping) - 1) != 0)
    fail(ch, c, F_TCP, 1, now);
}

static void mark_open(child *ch, wsc *c) {
  c->state = WS_OPEN;
  ch->ready.connected++;
  if (ch->inflight)
    ch->inflight--;
}

static void record(child *ch, wsc *c, const char *marker, int64_t now) {
  uint32_t seq;
  int64_t t;
  rec *r;
  if (nsb_marker_parse(marker, &seq, &t) != 0) {
    ch->rep.other++;
    return;
  }
  if (ch->nrec == ch->caprec) {
    if (ch->caprec >= MAX_RECS) {
      ch->rep.other++;
      return;
    }
    ch->caprec = ch->caprec ? ch->caprec * 2 : 65536;
    ch->recs = nsb_xrealloc(ch->recs, ch->caprec * sizeof(rec));
  }
  r = &ch->recs[ch->nrec++];
  r->key = (uint64_t)idx_of(ch, c) << 32 | seq;
  t = now > t ? (now - t) / 1000 : 0;
  r->lat_us = t > UINT32_MAX ? UINT32_MAX : (uint32_t)t;
  r->pad = 0;
  ch->rep.records++;
  if (now > ch->rep.t_last_rx)
    ch->rep.t_last_rx = now;
}

/* One complete text message. */
static void on_message(child *ch, wsc *c, const uint8_t *p, size_t n,
                       int64_t now) {
  json_object *root, *jt, *jd, *jv;
  const char *type;
  ch->rep.frames++;
  if (ch->o->rx_mode == NSB_RX_BCAST || ch->o->rx_mode == NSB_RX_C100K) {
    /* The hot path: no JSON tree for a broadcast body. */
    uint32_t run, seq;
    int64_t t;
    if (nsb_bmark_parse((const char *)p, n, &run, &seq, &t) == 0) {
      if (run == ch->o->run_id)
        nsb_child_tally_rx(ch, c, 1, seq, t, now);
      else
        ch->tally.foreign++; /* an earlier run's message, replayed */
      return;
    }
  }
  json_tokener_reset(ch->tok);
  root = json_tokener_parse_ex(ch->tok, (const char *)p, (int)n);
  if (!root || !json_object_object_get_ex(root, "type", &jt) ||
      !json_object_is_type(jt, json_type_string)) {
    ch->rep.other++;
    goto done;
  }
  type = json_object_get_string(jt);
  json_object_object_get_ex(root, "data", &jd);
  if (strcmp(type, "new_notification") == 0 &&
      (ch->o->rx_mode == NSB_RX_STORM || ch->o->rx_mode == NSB_RX_C100K)) {
    uint32_t seq;
    int64_t t;
    if (jd && json_object_object_get_ex(jd, "body", &jv) &&
        nsb_marker_parse(json_object_get_string(jv), &seq, &t) == 0)
      nsb_child_tally_rx(ch, c, 0, seq, t, now);
    else
      ch->tally.foreign++;
  } else if (strcmp(type, "new_notification") == 0) {
    record(ch, c,
           jd && json_object_object_get_ex(jd, "body", &jv)
               ? json_object_get_string(jv) : NULL, now);
  } else if (strcmp(type, "test") == 0) {
    record(ch, c,
           jd && json_object_object_get_ex(jd, "message", &jv)
               ? json_object_get_string(jv) : NULL, now);
  } else if (strcmp(type, "welcome") == 0) {
    ch->rep.welcome++;
    if (c->state == WS_WELCOME) {
      ch->ready.welcomed++;
      if (now > ch->ready.t_last_welcome)
        ch->ready.t_last_welcome = now;
      if (ch->o->ws_ping)
        send_ping(ch, c, now);
      else
        mark_open(ch, c);
    }
  } else if (strcmp(type, "pong") == 0) {
    ch->rep.pong++;
    if (c->state == WS_PINGED)
      mark_open(ch, c);
  } else if (strcmp(type, "device_status") == 0) {
    ch->rep.device_status++;
  } else if (strcmp(type, "queue_overflow") == 0) {
    ch->rep.overflow++;
  } else if (strcmp(type, "error") == 0) {
    ch->rep.errors++;
  } else {
    ch->rep.other++;
  }
done:
  if (root)
    json_object_put(root);
}

/* A close frame from the server: echo it and close.  Returns -1 (closed). */
static int on_close(child *ch, wsc *c, const nsb_ws_frame *f, int64_t now) {
  uint32_t code = f->len >= 2 ? (uint32_t)f->payload[0] << 8 | f->payload[1]
                              : 1005;
  uint8_t echo[2] = {(uint8_t)(code >> 8), (uint8_t)code};
  (void)ws_send_frame(ch, c, NSB_WS_CLOSE, echo, f->len >= 2 ? 2 : 0);
  count_close(ch, code);
  ch->ready.close_code_last = code;
  /* 1008 (auth/policy) is final; overload codes are worth a retry. */
  fail(ch, c, F_CLOSE, code == 1013 || code == 1011 || code == 1001, now);
  return -1;
}

/* One frame; returns 0, or -1 when the connection was closed. */
static int on_frame(child *ch, wsc *c, const nsb_ws_frame *f, int64_t now) {
  switch (f->opcode) {
  case NSB_WS_TEXT:
  case NSB_WS_BIN:
    if (c->in_msg)
      goto proto;
    if (f->fin) {
      on_message(ch, c, f->payload, (size_t)f->len, now);
    } else {
      c->msg.len = 0;
      nsb_buf_add(&c->msg, f->payload, (size_t)f->len);
      c->in_msg = 1;
    }
    return 0;
  case NSB_WS_CONT:
    if (!c->in_msg || c->msg.len + f->len > MAX_MSG)
      goto proto;
    nsb_buf_add(&c->msg, f->payload, (size_t)f->len);
    if (f->fin) {
      on_message(ch, c, c->msg.p, c->msg.len, now);
      c->in_msg = 0;
      nsb_buf_free(&c->msg);
    }
    return 0;
  case NSB_WS_PING:
    ch->rep.pings++;
    if (ws_send_frame(ch, c, NSB_WS_PONG, f->payload, (size_t)f->len) != 0)
      goto proto;
    return 0;
  case NSB_WS_PONG:
    return 0;
  case NSB_WS_CLOSE:
    return on_close(ch, c, f, now);
  default:
    goto proto;
  }
proto:
  count_close(ch, 1002);
  fail(ch, c, F_CLOSE, 0, now);
  return -1;
}

/* Handles the upgrade response; returns bytes used, 0 need more, -1 closed. */
static long on_head(child *ch, wsc *c, const uint8_t *p, size_t n, int64_t now) {
  nsb_http_resp r;
  char want[29];
  long h = nsb_http_parse_head((const char *)p, n, &r);
  if (h <= 0) {
    if (h < 0)
      fail(ch, c, F_HTTP, 0, now);
    return h;
  }
  if (r.status != 101) {
    if (r.status == 429)
      ch->ready.http_429++;
    else
      ch->ready.http_other_status = (uint32_t)r.status;
    fail(ch, c, F_HTTP, r.status == 429 || r.status == 503, now);
    return -1;
  }
  nsb_ws_accept(c->key, want);
  if (strcmp(want, r.accept) != 0) {
    ch->ready.http_other_status = 101;
    fail(ch, c, F_HTTP, 0, now);
    return -1;
  }
  ch->ready.upgraded++;
  if (now > ch->ready.t_last_upgrade)
    ch->ready.t_last_upgrade = now;
  if (ch->job->role == NSB_ROLE_DEVICES)
    c->state = WS_WELCOME;
  else if (ch->o->ws_ping)
    send_ping(ch, c, now);
  else
    mark_open(ch, c);
  return h;
}

/* Consumes what it can of [p, p+n); returns bytes used or -1 if closed. */
static long process(child *ch, wsc *c, uint8_t *p, size_t n, int64_t now) {
  size_t off = 0;
  if (c->state == WS_HANDSHAKE) {
    long h = on_head(ch, c, p, n, now);
    if (h <= 0)
      return h;
    off = (size_t)h;
  }
  while (off < n) {
    nsb_ws_frame f;
    long k = nsb_ws_parse(p + off, n - off, MAX_MSG, &f);
    if (k == 0)
      break;
    if (k < 0) {
      count_close(ch, k == -2 ? 1009 : 1002);
      fail(ch, c, F_CLOSE, 0, now);
      return -1;
    }
    off += (size_t)k;
    if (on_frame(ch, c, &f, now) != 0)
      return -1;
  }
  return (long)off;
}

/* One read (level-triggered: the next event brings the rest). */
static void ws_read(child *ch, wsc *c) {
  ssize_t r = recv(c->io.fd, ch->scratch, ch->scratch_cap, 0);
  int64_t now = nsb_now_ns();
  long used;
  if (r <= 0) {
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
      return;
    fail(ch, c, c->state == WS_OPEN ? F_CLOSE : F_TCP, 1, now);
    return;
  }
  if (c->in.len == 0) {
    used = process(ch, c, ch->scratch, (size_t)r, now);
    if (used >= 0 && (size_t)used < (size_t)r)
      nsb_buf_add(&c->in, ch->scratch + used, (size_t)r - (size_t)used);
  } else {
    nsb_buf_add(&c->in, ch->scratch, (size_t)r);
    used = process(ch, c, c->in.p, c->in.len, now);
    if (used > 0)
      nsb_buf_consume(&c->in, (size_t)used);
  }
}

/* Flushes queued output; drops EPOLLOUT when empty. */
static void ws_flush(child *ch, wsc *c) {
  while (c->out.len) {
    ssize_t w = send(c->io.fd, c->out.p, c->out.len, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EAGAIN || errno == EINTR)
        return;
      fail(ch, c, F_TCP, 1, nsb_now_ns());
      return;
    }
    nsb_buf_consume(&c->out, (size_t)w);
  }
  if (c->want_out) {
    c->want_out = 0;
    nsb_child_watch(ch, &c->io, EPOLLIN | EPOLLRDHUP, 0);
  }
}

void nsb_wsc_event(child *ch, wsc *c, uint32_t events) {
  if (c->io.fd < 0)
    return;
  if (c->state == WS_TCP) {
    int err = 0;
    socklen_t el = sizeof(err);
    if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
      return;
    if (getsockopt(c->io.fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err) {
      fail(ch, c, F_TCP, 1, nsb_now_ns());
      return;
    }
    send_upgrade(ch, c, nsb_now_ns());
    if (c->io.fd >= 0 && c->out.len == 0 && c->want_out) {
      c->want_out = 0;
      nsb_child_watch(ch, &c->io, EPOLLIN | EPOLLRDHUP, 0);
    }
    return;
  }
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
    ws_read(ch, c);
  if (c->io.fd >= 0 && (events & EPOLLOUT))
    ws_flush(ch, c);
}

void nsb_wsc_disconnect(child *ch, wsc *c) {
  if (c->io.fd >= 0 && c->state == WS_OPEN) {
    uint8_t code[2] = {1000 >> 8, 1000 & 0xff};
    (void)ws_send_frame(ch, c, NSB_WS_CLOSE, code, 2);
    (void)shutdown(c->io.fd, SHUT_WR);
  }
  nsb_wsc_close_fd(ch, c);
  c->state = WS_GONE;
  c->armed = 0;
}

/* Connect phase timers: start new attempts up to the parallel limit, start
 * due retries, time out slow attempts. */
void nsb_wsc_tick(child *ch, int64_t now) {
  uint32_t i, limit = (uint32_t)ch->o->connect_parallel;
  for (i = 0; i < ch->nws; i++) {
    wsc *c = &ch->ws[i];
    if ((c->state == WS_TCP || c->state == WS_HANDSHAKE ||
         c->state == WS_WELCOME || c->state == WS_PINGED) &&
        now - c->t_begin > ATTEMPT_TIMEOUT_NS)
      fail(ch, c, F_TIMEOUT, 1, now);
    if (c->state == WS_RETRY && now >= c->t_retry && ch->inflight < limit)
      nsb_wsc_start(ch, c, now);
  }
  while (ch->next_start < ch->nws && ch->inflight < limit) {
    wsc *c = &ch->ws[ch->next_start++];
    if (c->state == WS_IDLE)
      nsb_wsc_start(ch, c, now);
  }
}
