/*
 * ns_rsub.c -- a sharded-pub/sub capable subscriber connection (see
 * ns_rsub.h).
 *
 * Each TCP connection is a `link` (uv_poll + hiredis sync context in
 * non-blocking mode); the poll handle must be closed before the context
 * closes its fd, so a link is freed from the poll's close callback.  The
 * ns_rsub outlives its links and is freed when the last handle closes.
 */
#include "ns_rsub.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "ns_common.h"
#include "ns_log.h"
#include "ns_redis.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define PING_EVERY_MS 2000
#define PING_TIMEOUT_MS 3000
#define TICK_CHARGE_MS 1050

typedef struct link {
  uv_poll_t poll;
  redisContext *c;
  ns_rsub *s;
  int connected; /* TCP connect completed */
  int writing;   /* polling for UV_WRITABLE too */
  size_t out;    /* bytes appended since the buffer was last empty */
} link;

struct ns_rsub {
  uv_loop_t *loop;
  char host[256];
  int port;
  ns_rsub_handlers h;
  link *l;  /* NULL when down */
  int up;   /* a PING answered on l */
  uv_timer_t retry;
  int64_t backoff_ms;
  ns_redis_clock clock;
  unsigned long long ping_seq;  /* last PING sent */
  unsigned long long pong_seq;  /* last answered */
  int64_t ping_last_ms;
  unsigned long long barrier_seq; /* 0 = none */
  void (*barrier_cb)(void *);
  void *barrier_arg;
  unsigned long long losses;
  int closing;
  int open_handles;
};

static void link_connect(ns_rsub *s);

static void release(ns_rsub *s) {
  if (--s->open_handles == 0)
    free(s);
}

static void on_link_closed(uv_handle_t *h) {
  link *l = h->data;
  ns_rsub *s = l->s;
  redisFree(l->c); /* closes the fd, after the poll is gone */
  free(l);
  release(s);
}

static void on_retry(uv_timer_t *t) { link_connect(t->data); }

/* The next connect attempt, after the backoff (which then doubles). */
static void retry_later(ns_rsub *s) {
  uv_timer_start(&s->retry, on_retry, (uint64_t)s->backoff_ms, 0);
  s->backoff_ms = NS_MIN(s->backoff_ms * 2, BACKOFF_MAX_MS);
}

/* Drops the current link (if any), reports down, and retries later. */
static void link_lost(ns_rsub *s, const char *why) {
  link *l = s->l;
  int was_up = s->up;
  if (!l)
    return;
  s->l = NULL;
  s->up = 0;
  s->barrier_cb = NULL;
  s->barrier_seq = 0;
  ns_redis_clock_settle(&s->clock);
  uv_poll_stop(&l->poll);
  uv_close((uv_handle_t *)&l->poll, on_link_closed);
  if (s->closing)
    return;
  ns_log(NS_LOG_WARN, "redis sub %s:%d: %s", s->host, s->port, why);
  retry_later(s);
  if (was_up && s->h.on_state)
    s->h.on_state(s->h.arg, s, 0);
}

static void on_poll(uv_poll_t *p, int status, int events);

static void want_events(link *l) {
  uv_poll_start(&l->poll, UV_READABLE | (l->writing ? UV_WRITABLE : 0),
                on_poll);
}

/* Writes what the socket takes; polls for writability while more is left.
 * 0, or -1 when the link was lost. */
static int flush(ns_rsub *s) {
  link *l = s->l;
  int done = 0;
  if (!l->connected)
    return 0;
  if (redisBufferWrite(l->c, &done) != REDIS_OK) {
    link_lost(s, "write failed");
    return -1;
  }
  if (done)
    l->out = 0;
  if ((!done) != l->writing) {
    l->writing = !done;
    want_events(l);
  }
  return 0;
}

static int append(ns_rsub *s, const char *cmd, size_t len) {
  link *l = s->l;
  if (l->out + len > NS_RSUB_MAX_OUT) {
    s->losses++;
    link_lost(s, "output buffer full: reconnecting");
    return -1;
  }
  if (redisAppendFormattedCommand(l->c, cmd, len) != REDIS_OK) {
    link_lost(s, "append failed");
    return -1;
  }
  l->out += len;
  return flush(s);
}

static int send_ping(ns_rsub *s) {
  char *cmd = NULL;
  char seq[24];
  int len, rc;
  snprintf(seq, sizeof(seq), "%llu", s->ping_seq + 1);
  if ((len = redisFormatCommand(&cmd, "PING %s", seq)) < 0)
    return -1;
  s->ping_seq++;
  if (s->pong_seq + 1 == s->ping_seq) /* nothing owed before this one */
    ns_redis_clock_owe(&s->clock, ns_mono_ms());
  s->ping_last_ms = ns_mono_ms();
  rc = append(s, cmd, (size_t)len);
  redisFreeCommand(cmd);
  return rc;
}

static void on_pong(ns_rsub *s, const char *arg) {
  unsigned long long n = arg ? strtoull(arg, NULL, 10) : 0;
  if (n == 0 || n > s->ping_seq)
    return; /* not ours */
  if (n > s->pong_seq)
    s->pong_seq = n;
  if (s->pong_seq == s->ping_seq)
    ns_redis_clock_settle(&s->clock);
  if (!s->up) {
    s->up = 1;
    s->backoff_ms = BACKOFF_MIN_MS;
    ns_log(NS_LOG_INFO, "redis sub connected to %s:%d", s->host, s->port);
    if (s->h.on_state)
      s->h.on_state(s->h.arg, s, 1);
    if (!s->l)
      return;
  }
  if (s->barrier_cb && s->pong_seq >= s->barrier_seq) {
    void (*cb)(void *) = s->barrier_cb;
    s->barrier_cb = NULL;
    s->barrier_seq = 0;
    cb(s->barrier_arg);
  }
}

static int str_is(const redisReply *r, const char *s) {
  return r->type == REDIS_REPLY_STRING && strcmp(r->str, s) == 0;
}

static void handle(ns_rsub *s, redisReply *r) {
  ns_redis_clock_heard(&s->clock, ns_mono_ms());
  if (r->type == REDIS_REPLY_ERROR) {
    ns_log(NS_LOG_WARN, "redis sub %s:%d: %s", s->host, s->port, r->str);
    if (s->h.on_error)
      s->h.on_error(s->h.arg, s, r->str, r->len);
    return;
  }
  if (r->type == REDIS_REPLY_STRING) { /* PING <n> before any subscribe */
    on_pong(s, r->str);
    return;
  }
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
      r->element[0]->type != REDIS_REPLY_STRING)
    return;
  if (str_is(r->element[0], "pong")) {
    on_pong(s, r->element[1]->type == REDIS_REPLY_STRING ? r->element[1]->str
                                                         : NULL);
    return;
  }
  if (r->element[1]->type != REDIS_REPLY_STRING)
    return;
  if (r->elements == 3 && r->element[2]->type == REDIS_REPLY_STRING &&
      (str_is(r->element[0], "message") || str_is(r->element[0], "smessage"))) {
    if (s->h.on_message)
      s->h.on_message(s->h.arg, r->element[1]->str, r->element[1]->len,
                      r->element[2]->str, r->element[2]->len);
  } else if (str_is(r->element[0], "sunsubscribe")) {
    if (s->h.on_sunsubscribed)
      s->h.on_sunsubscribed(s->h.arg, s, r->element[1]->str,
                            r->element[1]->len);
  }
}

static void on_readable(ns_rsub *s) {
  link *l = s->l;
  void *reply;
  if (redisBufferRead(l->c) != REDIS_OK) {
    link_lost(s, l->c->errstr[0] ? l->c->errstr : "connection lost");
    return;
  }
  while (s->l == l) {
    reply = NULL;
    if (redisGetReply(l->c, &reply) != REDIS_OK) {
      link_lost(s, "protocol error");
      return;
    }
    if (!reply)
      break;
    handle(s, reply);
    freeReplyObject(reply);
  }
}

static void on_poll(uv_poll_t *p, int status, int events) {
  link *l = p->data;
  ns_rsub *s = l->s;
  if (s->l != l)
    return;
  if (status < 0) {
    link_lost(s, uv_strerror(status));
    return;
  }
  if (!l->connected) {
    int err = 0;
    socklen_t n = sizeof(err);
    if (!(events & UV_WRITABLE))
      return;
    if (getsockopt(l->c->fd, SOL_SOCKET, SO_ERROR, &err, &n) != 0 || err) {
      link_lost(s, err ? strerror(err) : "connect failed");
      return;
    }
    l->connected = 1;
    /* Up once this is answered. */
    if (send_ping(s) != 0 || flush(s) != 0)
      return;
    if (!l->writing)
      want_events(l);
    return;
  }
  if ((events & UV_WRITABLE) && flush(s) != 0)
    return;
  if (events & UV_READABLE)
    on_readable(s);
}

static void link_connect(ns_rsub *s) {
  link *l;
  redisContext *c;
  if (s->closing || s->l)
    return;
  c = redisConnectNonBlock(s->host, s->port);
  if (!c || c->err) {
    ns_log(NS_LOG_WARN, "redis sub connect to %s:%d: %s", s->host, s->port,
           c ? c->errstr : "out of memory");
    if (c)
      redisFree(c);
    retry_later(s);
    return;
  }
  l = ns_xcalloc(1, sizeof(*l));
  l->c = c;
  l->s = s;
  if (uv_poll_init(s->loop, &l->poll, c->fd) != 0) {
    redisFree(c);
    free(l);
    retry_later(s);
    return;
  }
  l->poll.data = l;
  s->open_handles++;
  s->l = l;
  s->ping_seq = s->pong_seq = 0;
  l->writing = 1; /* the connect completes as writability */
  want_events(l);
}

ns_rsub *ns_rsub_open(uv_loop_t *loop, const char *host, int port,
                      const ns_rsub_handlers *h) {
  ns_rsub *s = ns_xcalloc(1, sizeof(*s));
  s->loop = loop;
  snprintf(s->host, sizeof(s->host), "%s", host);
  s->port = port;
  s->h = *h;
  s->backoff_ms = BACKOFF_MIN_MS;
  uv_timer_init(loop, &s->retry);
  s->retry.data = s;
  s->open_handles = 1;
  link_connect(s);
  return s;
}

static void on_timer_closed(uv_handle_t *h) { release(h->data); }

void ns_rsub_close(ns_rsub **sp) {
  ns_rsub *s = *sp;
  *sp = NULL;
  if (!s)
    return;
  s->closing = 1;
  link_lost(s, "closing");
  uv_close((uv_handle_t *)&s->retry, on_timer_closed);
}

int ns_rsub_up(const ns_rsub *s) { return s && s->up && s->l; }

void ns_rsub_send(ns_rsub *s, const char *cmd, const char *channel) {
  char *out = NULL;
  const char *argv[2];
  int len;
  if (!ns_rsub_up(s))
    return;
  argv[0] = cmd;
  argv[1] = channel;
  if ((len = redisFormatCommandArgv(&out, 2, argv, NULL)) < 0)
    return;
  append(s, out, (size_t)len);
  redisFreeCommand(out);
}

int ns_rsub_barrier(ns_rsub *s, void (*cb)(void *), void *arg) {
  if (!ns_rsub_up(s) || send_ping(s) != 0 || !s->l)
    return -1;
  s->barrier_cb = cb;
  s->barrier_arg = arg;
  s->barrier_seq = s->ping_seq;
  return 0;
}

void ns_rsub_tick(ns_rsub *s) {
  int64_t now = ns_mono_ms();
  if (!s || s->closing || !s->l || !s->l->connected)
    return;
  if (ns_redis_clock_tick(&s->clock, now, TICK_CHARGE_MS) > PING_TIMEOUT_MS) {
    on_readable(s); /* what already arrived counts */
    if (s->l && s->clock.counted_ms > PING_TIMEOUT_MS) {
      s->losses++;
      link_lost(s, "no PING answer: reconnecting");
    }
    return;
  }
  if (s->pong_seq == s->ping_seq && now - s->ping_last_ms >= PING_EVERY_MS)
    send_ping(s);
}

unsigned long long ns_rsub_losses(const ns_rsub *s) {
  return s ? s->losses : 0;
}
