/*
 * ns_redis.c -- reconnecting hiredis async contexts (see ns_redis.h).
 *
 * Each context slot (cmd, sub) is either connecting, up, or down waiting for
 * its retry timer.  hiredis frees a context itself after the connect or
 * disconnect callback, so the slot's pointer is cleared there and never used
 * afterwards.
 *
 * Liveness is judged by the age of Redis's replies on a clock that does not
 * run while the loop itself is busy (ns_redis_clock, see ns_redis.h): the
 * command connection owes a reply while any command is in flight, the
 * subscriber while a published canary has not come back.
 */
#include "ns_redis.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "ns_common.h"
#include "ns_log.h"
#include "ns_rcluster.h"
#include "ns_redis_uv.h"
#include "ns_rslot.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define PING_TIMEOUT_MS 3000 /* of loop time without any reply */
/* What one tick (once a second) charges Redis at most: the period plus
 * timer jitter.  A tick later than that was held up by the loop, and the
 * excess is the loop's lag, not Redis's silence. */
#define TICK_CHARGE_MS 1050
#define DRAIN_MAX_READS 64   /* x 16 KB: what a timeout check reads at most */
#define MAX_SCRIPTS 32
#define CANARY_EVERY_MS 2000
#define CANARY_TIMEOUT_MS 3000 /* after Redis answered the PUBLISH */

/* A Lua script sent as EVAL once per command connection, then as EVALSHA
 * (the source is 1-5 KB: sending and hashing it on every call was most of
 * the bytes Redis read per notification). */
typedef struct script {
  const char *text; /* the caller's static source */
  char sha[41];
  int loaded;       /* sent as EVAL on the current connection */
} script;

typedef struct slot {
  ns_redis *r;
  int is_sub;
  redisAsyncContext *ac;
  int up;
  ns_redis_clock clock; /* how long this connection has owed a reply */
  uv_timer_t retry;
  int64_t backoff_ms;
} slot;

struct ns_redis {
  ns_rcluster *cl;      /* cluster mode: everything is forwarded there */
  int no_sub;           /* no subscriber connection (handlers) */
  uv_loop_t *loop;
  char host[256];
  int port;
  int db;
  ns_redis_handlers h;
  slot cmd, sub;
  int64_t ping_sent_ms; /* 0 = no PING outstanding */
  int cmd_stalled;      /* no reply in time: the command connection is
                         * being dropped */
  int cmd_verified;     /* a reply has come on the current command
                         * connection: a TCP connect alone proves nothing
                         * (a black-holed network accepts and never
                         * answers), so Redis is not "up" before that */
  int debug_stall_ms;   /* NOTISYNC_DEBUG_STALL_MS (builds without NDEBUG) */
  int debug_stalls_left;
  script scripts[MAX_SCRIPTS];
  int nscripts;
  /* Subscriber liveness: a canary published on our own channel must come
   * back through the subscriber connection. */
  char canary[160];
  int canary_subscribed;      /* Redis confirmed SUBSCRIBE of `canary` */
  unsigned long long canary_seq;
  int64_t canary_sent_ms;     /* 0 = none outstanding */
  int64_t canary_last_ms;     /* when the last canary was published */
  int sub_stalled;            /* canary lost: reconnecting the subscriber */
  unsigned long long canary_losses;
  void (*barrier_cb)(void *); /* ns_redis_after_subscribes() pending */
  void *barrier_arg;
  size_t inflight;             /* commands sent, reply not yet seen */
  unsigned long long overloads; /* commands refused at NS_REDIS_MAX_INFLIGHT */
  int closing;
  int open_handles;
};

static void slot_connect(slot *s);
static void on_sub_message(redisAsyncContext *ac, void *reply_, void *priv);
static void debug_stall_init(ns_redis *r);

static void canary_reset(ns_redis *r) {
  r->canary_sent_ms = 0;
  ns_redis_clock_settle(&r->sub.clock);
}

/* ---- the liveness clock ---- */

void ns_redis_clock_owe(ns_redis_clock *c, int64_t now_ms) {
  if (c->owed_since_ms)
    return;
  c->owed_since_ms = now_ms;
  c->counted_ms = 0;
}

void ns_redis_clock_heard(ns_redis_clock *c, int64_t now_ms) {
  if (!c->owed_since_ms)
    return;
  c->owed_since_ms = now_ms;
  c->counted_ms = 0;
}

void ns_redis_clock_settle(ns_redis_clock *c) {
  c->owed_since_ms = 0;
  c->counted_ms = 0;
}

int64_t ns_redis_clock_tick(ns_redis_clock *c, int64_t now_ms,
                            int64_t max_charge_ms) {
  if (c->owed_since_ms) {
    int64_t from = NS_MAX(c->owed_since_ms, c->last_tick_ms);
    int64_t d = now_ms - from;
    c->counted_ms += d < 0 ? 0 : NS_MIN(d, max_charge_ms);
  }
  c->last_tick_ms = now_ms;
  return c->owed_since_ms ? c->counted_ms : 0;
}

static void notify(ns_redis *r, int sub_reconnected) {
  if (r->h.on_state && !r->closing)
    r->h.on_state(r->h.arg, ns_redis_up(r), sub_reconnected);
}

static int parse_url(ns_redis *r, const char *url) {
  const char *p = url, *slash, *colon;
  size_t hostlen;
  char *end;
  if (strncmp(p, "redis://", 8) != 0)
    return NS_EINVAL;
  p += 8;
  if (strchr(p, '@'))
    p = strchr(p, '@') + 1; /* credentials are not supported: ignored */
  slash = strchr(p, '/');
  colon = memchr(p, ':', slash ? (size_t)(slash - p) : strlen(p));
  hostlen = colon ? (size_t)(colon - p) : slash ? (size_t)(slash - p) : strlen(p);
  if (hostlen == 0 || hostlen >= sizeof(r->host))
    return NS_EINVAL;
  memcpy(r->host, p, hostlen);
  r->host[hostlen] = '\0';
  r->port = 6379;
  if (colon) {
    long port = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || port < 1 || port > 65535 || (*end && *end != '/'))
      return NS_EINVAL;
    r->port = (int)port;
  }
  r->db = 0;
  if (slash && slash[1]) {
    long db = strtol(slash + 1, &end, 10);
    if (*end || db < 0 || db > 1000)
      return NS_EINVAL;
    r->db = (int)db;
  }
  return 0;
}

int ns_redis_url_valid(const char *url, int cluster) {
  ns_redis r;
  ns_rslot_seed seeds[NS_RSLOT_SEEDS_MAX];
  if (cluster)
    return ns_rslot_seeds(url, seeds, NS_RSLOT_SEEDS_MAX) > 0 ? 0 : NS_EINVAL;
  return parse_url(&r, url);
}

static void on_retry(uv_timer_t *t) { slot_connect(t->data); }

static void on_pong(redisReply *reply, void *arg);

static void retry_later(slot *s) {
  if (s->r->closing)
    return;
  uv_timer_start(&s->retry, on_retry, (uint64_t)s->backoff_ms, 0);
  s->backoff_ms = NS_MIN(s->backoff_ms * 2, BACKOFF_MAX_MS);
}

static void on_connect(const redisAsyncContext *ac, int status) {
  slot *s = ac->data;
  if (status != REDIS_OK) {
    ns_log(NS_LOG_WARN, "redis %s connect to %s:%d failed: %s",
           s->is_sub ? "sub" : "cmd", s->r->host, s->r->port, ac->errstr);
    s->ac = NULL; /* hiredis frees it after this callback */
    retry_later(s);
    return;
  }
  s->up = 1;
  s->backoff_ms = BACKOFF_MIN_MS;
  ns_redis_clock_settle(&s->clock);
  ns_log(NS_LOG_INFO, "redis %s connected to %s:%d", s->is_sub ? "sub" : "cmd",
         s->r->host, s->r->port);
  if (!s->is_sub) {
    int i;
    s->r->ping_sent_ms = 0;
    s->r->cmd_stalled = 0;
    s->r->cmd_verified = 0;
    for (i = 0; i < s->r->nscripts; i++) /* a new connection, maybe a new */
      s->r->scripts[i].loaded = 0;       /* Redis: send the source again */
    /* Up once this is answered (on_reply); unanswered, the tick's timeout
     * drops the connection again. */
    if (ns_redis_cmd(s->r, on_pong, s->r, "PING") == 0)
      s->r->ping_sent_ms = ns_mono_ms();
  } else {
    s->r->sub_stalled = 0;
    s->r->canary_subscribed = 0;
    canary_reset(s->r);
    s->r->barrier_cb = NULL;
    if (s->r->canary[0]) {
      /* up (and sub_reconnected) once Redis confirms this subscription */
      redisAsyncCommand(s->ac, on_sub_message, NULL, "SUBSCRIBE %s",
                        s->r->canary);
      return;
    }
  }
  notify(s->r, s->is_sub);
}

/* One of the things ns_redis_close() waits for is over: the last one frees
 * the object (replies still arriving on a gracefully closing context call
 * back into it). */
static void release(ns_redis *r) {
  if (--r->open_handles == 0)
    free(r);
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
  slot *s = ac->data;
  s->ac = NULL;
  s->up = 0;
  if (s->r->closing) {
    release(s->r);
    return;
  }
  ns_log(NS_LOG_WARN, "redis %s connection lost: %s", s->is_sub ? "sub" : "cmd",
         status == REDIS_OK ? "closed" : ac->errstr);
  if (!s->is_sub)
    s->r->ping_sent_ms = 0;
  else
    s->r->canary_subscribed = 0;
  s->r->barrier_cb = NULL;
  canary_reset(s->r);
  notify(s->r, 0);
  retry_later(s);
}

static void slot_connect(slot *s) {
  redisAsyncContext *ac;
  if (s->r->closing || s->ac)
    return;
  ac = redisAsyncConnect(s->r->host, s->r->port);
  if (!ac) {
    retry_later(s);
    return;
  }
  if (ac->err) {
    ns_log(NS_LOG_WARN, "redis connect: %s", ac->errstr);
    redisAsyncFree(ac);
    retry_later(s);
    return;
  }
  ac->data = s;
  if (ns_redis_uv_attach(ac, s->r->loop) != 0) {
    redisAsyncFree(ac);
    retry_later(s);
    return;
  }
  redisEnableKeepAlive(&ac->c);
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  s->ac = ac;
  if (s->r->db)
    redisAsyncCommand(ac, NULL, NULL, "SELECT %d", s->r->db);
}

static void slot_init(ns_redis *r, slot *s, int is_sub) {
  s->r = r;
  s->is_sub = is_sub;
  s->backoff_ms = BACKOFF_MIN_MS;
  uv_timer_init(r->loop, &s->retry);
  s->retry.data = s;
  r->open_handles++;
}

int ns_redis_open(ns_redis **out, uv_loop_t *loop, const char *url,
                  const ns_redis_handlers *h) {
  ns_redis *r = ns_xcalloc(1, sizeof(*r));
  if (h->cluster) {
    if (ns_rcluster_open(&r->cl, loop, url, h) != 0) {
      free(r);
      return NS_EINVAL;
    }
    *out = r;
    return 0;
  }
  r->loop = loop;
  r->h = *h;
  r->no_sub = h->no_subscriber;
  if (h->canary_channel && !r->no_sub)
    snprintf(r->canary, sizeof(r->canary), "%s", h->canary_channel);
  debug_stall_init(r);
  if (parse_url(r, url) != 0) {
    free(r);
    return NS_EINVAL;
  }
  slot_init(r, &r->cmd, 0);
  slot_init(r, &r->sub, 1);
  slot_connect(&r->cmd);
  if (!r->no_sub)
    slot_connect(&r->sub);
  *out = r;
  return 0;
}

static void on_handle_closed(uv_handle_t *hd) {
  release(((slot *)hd->data)->r);
}

static void close_slot(slot *s) {
  if (!s->up) {
    redisAsyncFree(s->ac);
    return;
  }
  s->r->open_handles++; /* before: the callback may come at once */
  redisAsyncDisconnect(s->ac);
}

void ns_redis_close(ns_redis **rp) {
  ns_redis *r = *rp;
  *rp = NULL;
  if (!r)
    return;
  if (r->cl) {
    ns_rcluster_close(&r->cl);
    free(r);
    return;
  }
  r->closing = 1;
  /* A connected context is disconnected gracefully (pending commands, such
   * as the shutdown's presence updates, still complete, and their replies
   * may call back into `r`, so `r` lives until its disconnect callback);
   * one that is still connecting is freed (no callback comes). */
  if (r->cmd.ac)
    close_slot(&r->cmd);
  if (r->sub.ac)
    close_slot(&r->sub);
  uv_close((uv_handle_t *)&r->cmd.retry, on_handle_closed);
  uv_close((uv_handle_t *)&r->sub.retry, on_handle_closed);
}

typedef struct pending {
  ns_redis_cb cb;
  void *arg;
} pending;

/* A callback record for one command, or NULL (and counted) when
 * NS_REDIS_MAX_INFLIGHT commands already await their replies: a stalled
 * Redis must not grow hiredis' output buffer without end. */
static pending *pending_new(ns_redis *r, ns_redis_cb cb, void *arg) {
  pending *p;
  if (r->inflight >= NS_REDIS_MAX_INFLIGHT) {
    r->overloads++;
    return NULL;
  }
  p = ns_xmalloc(sizeof(*p));
  p->cb = cb;
  p->arg = arg;
  r->inflight++;
  ns_redis_clock_owe(&r->cmd.clock, ns_mono_ms());
  return p;
}

static void pending_free(ns_redis *r, pending *p) {
  if (--r->inflight == 0)
    ns_redis_clock_settle(&r->cmd.clock);
  free(p);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata) {
  pending *p = privdata;
  redisReply *rr = reply;
  slot *s = ac->data;
  if (rr)
    ns_redis_clock_heard(&s->clock, ns_mono_ms()); /* Redis is answering */
  if (rr && rr->type != REDIS_REPLY_ERROR && !s->r->cmd_verified &&
      !s->r->closing) {
    /* The first answer on this connection (an error such as -LOADING, a
     * Redis still reading its AOF, does not count: the PING of the next
     * tick asks again). */
    s->r->cmd_verified = 1;
    notify(s->r, 0);
  }
  if (rr && rr->type == REDIS_REPLY_ERROR && rr->str &&
      strncmp(rr->str, "NOSCRIPT", 8) == 0) {
    /* SCRIPT FLUSH while connected: this call fails (the caller sees an
     * error reply, as for any Redis error); the next ones send the source. */
    int i;
    ns_log(NS_LOG_WARN, "redis: script cache flushed: resending sources");
    for (i = 0; i < s->r->nscripts; i++)
      s->r->scripts[i].loaded = 0;
  }
  if (p->cb)
    p->cb(reply, p->arg);
  pending_free(s->r, p);
}

int ns_redis_cmd(ns_redis *r, ns_redis_cb cb, void *arg, const char *fmt,
                 ...) {
  va_list ap;
  pending *p;
  int rc;
  if (r && r->cl) {
    va_start(ap, fmt);
    rc = ns_rcluster_vcmd(r->cl, cb, arg, fmt, ap);
    va_end(ap);
    return rc;
  }
  if (!r || !r->cmd.up || !r->cmd.ac || !(p = pending_new(r, cb, arg)))
    return NS_EUNAVAIL;
  va_start(ap, fmt);
  rc = redisvAsyncCommand(r->cmd.ac, on_reply, p, fmt, ap);
  va_end(ap);
  if (rc != REDIS_OK) {
    pending_free(r, p);
    return NS_EUNAVAIL;
  }
  return 0;
}

/* The registered script of `text`, or NULL when the table is full. */
static script *script_of(ns_redis *r, const char *text) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0, i;
  script *sc;
  int k;
  for (k = 0; k < r->nscripts; k++)
    if (r->scripts[k].text == text)
      return &r->scripts[k];
  if (r->nscripts == MAX_SCRIPTS ||
      !EVP_Digest(text, strlen(text), md, &mdlen, EVP_sha1(), NULL) ||
      mdlen != 20)
    return NULL;
  sc = &r->scripts[r->nscripts++];
  sc->text = text;
  for (i = 0; i < mdlen; i++)
    snprintf(sc->sha + 2 * i, 3, "%02x", md[i]);
  sc->loaded = 0;
  return sc;
}

int ns_redis_cmdargv(ns_redis *r, ns_redis_cb cb, void *arg, int argc,
                     const char **argv, const size_t *argvlen) {
  const char *local[32], **av = argv;
  pending *p;
  script *sc;
  int rc;
  if (r && r->cl)
    return ns_rcluster_cmdargv(r->cl, cb, arg, argc, argv, argvlen);
  if (!r || !r->cmd.up || !r->cmd.ac || !(p = pending_new(r, cb, arg)))
    return NS_EUNAVAIL;
  if (argc >= 3 && !argvlen && strcmp(argv[0], "EVAL") == 0 &&
      (sc = script_of(r, argv[1])) != NULL) {
    /* The connection answers in order: once the EVAL is queued, every later
     * EVALSHA of the same script finds it cached. */
    if (sc->loaded) {
      av = argc <= (int)NS_ARRAY_SIZE(local)
               ? local
               : ns_xmalloc((size_t)argc * sizeof(*av));
      memcpy(av, argv, (size_t)argc * sizeof(*av));
      av[0] = "EVALSHA";
      av[1] = sc->sha;
    }
    sc->loaded = 1;
  }
  rc = redisAsyncCommandArgv(r->cmd.ac, on_reply, p, argc, av, argvlen);
  if (av != argv && av != local)
    free(av);
  if (rc != REDIS_OK) {
    pending_free(r, p);
    return NS_EUNAVAIL;
  }
  return 0;
}

int ns_redis_eval(ns_redis *r, ns_redis_cb cb, void *arg, const char *text,
                  int nkeys, const char **args, int nargs) {
  const char *argv[16];
  char nk[8];
  int i;
  if (nargs < 0 || nargs > 13) { /* a programming error: never truncated */
    ns_log(NS_LOG_ERROR, "ns_redis_eval: %d arguments, at most 13", nargs);
    return NS_EINVAL;
  }
  argv[0] = "EVAL";
  argv[1] = text;
  snprintf(nk, sizeof(nk), "%d", nkeys);
  argv[2] = nk;
  for (i = 0; i < nargs; i++)
    argv[3 + i] = args[i];
  return ns_redis_cmdargv(r, cb, arg, 3 + nargs, argv, NULL);
}

static void on_sub_message(redisAsyncContext *ac, void *reply_, void *priv) {
  redisReply *reply = reply_;
  slot *s = ac->data;
  ns_redis *r = s->r;
  const char *kind, *ch;
  (void)priv;
  if (reply && !r->closing) /* any message: the subscriber is delivering */
    ns_redis_clock_heard(&s->clock, ns_mono_ms());
  if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
      reply->element[0]->type != REDIS_REPLY_STRING ||
      reply->element[1]->type != REDIS_REPLY_STRING || r->closing)
    return;
  kind = reply->element[0]->str;
  ch = reply->element[1]->str;
  if (r->canary[0] && strcmp(ch, r->canary) == 0) {
    if (strcmp(kind, "subscribe") == 0 && !r->canary_subscribed) {
      r->canary_subscribed = 1;
      notify(r, 1);
    } else if (strcmp(kind, "subscribe") == 0 && r->barrier_cb) {
      void (*cb)(void *) = r->barrier_cb;
      r->barrier_cb = NULL;
      cb(r->barrier_arg);
    } else if (strcmp(kind, "message") == 0 && r->canary_sent_ms &&
               reply->element[2]->str &&
               strtoull(reply->element[2]->str, NULL, 10) == r->canary_seq) {
      canary_reset(r); /* came back: the subscription is alive */
    }
    return;
  }
  if (strcmp(kind, "message") == 0 && r->h.on_message)
    r->h.on_message(r->h.arg, ch, reply->element[1]->len,
                    reply->element[2]->str, reply->element[2]->len);
}

int ns_redis_wait(ns_redis *r, const char *key, int replicas, int timeout_ms,
                  ns_redis_cb cb, void *arg) {
  if (r && r->cl)
    return ns_rcluster_wait(r->cl, key, replicas, timeout_ms, cb, arg);
  return ns_redis_cmd(r, cb, arg, "WAIT %d %d", replicas, timeout_ms);
}

void ns_redis_subscribe(ns_redis *r, const char *channel) {
  if (r && r->cl) {
    ns_rcluster_subscribe(r->cl, channel);
    return;
  }
  if (r && r->sub.up && r->sub.ac)
    redisAsyncCommand(r->sub.ac, on_sub_message, NULL, "SUBSCRIBE %s",
                      channel);
}

void ns_redis_after_subscribes(ns_redis *r, void (*cb)(void *), void *arg) {
  if (r && r->cl) {
    ns_rcluster_after_subscribes(r->cl, cb, arg);
    return;
  }
  if (!r || !r->sub.up || !r->sub.ac || !r->canary[0] ||
      !r->canary_subscribed) {
    cb(arg);
    return;
  }
  /* Redis answers a connection's commands in order: when this repeated
   * SUBSCRIBE is confirmed, every earlier one is in effect. */
  r->barrier_cb = cb;
  r->barrier_arg = arg;
  redisAsyncCommand(r->sub.ac, on_sub_message, NULL, "SUBSCRIBE %s",
                    r->canary);
}

void ns_redis_unsubscribe(ns_redis *r, const char *channel) {
  if (r && r->cl) {
    ns_rcluster_unsubscribe(r->cl, channel);
    return;
  }
  if (r && r->sub.up && r->sub.ac)
    redisAsyncCommand(r->sub.ac, on_sub_message, NULL, "UNSUBSCRIBE %s",
                      channel);
}

unsigned long long ns_redis_canary_losses(const ns_redis *r) {
  if (r && r->cl)
    return ns_rcluster_sub_losses(r->cl);
  return r ? r->canary_losses : 0;
}

size_t ns_redis_inflight(const ns_redis *r) {
  if (r && r->cl)
    return ns_rcluster_inflight(r->cl);
  return r ? r->inflight : 0;
}

void ns_redis_redirects(const ns_redis *r, unsigned long long out[3]) {
  if (r && r->cl) {
    ns_rcluster_redirects(r->cl, out);
    return;
  }
  out[0] = out[1] = out[2] = 0;
}

unsigned long long ns_redis_overloads(const ns_redis *r) {
  if (r && r->cl)
    return ns_rcluster_overloads(r->cl);
  return r ? r->overloads : 0;
}

int ns_redis_up(const ns_redis *r) {
  if (r && r->cl)
    return ns_rcluster_up(r->cl);
  return r && r->cmd.up && r->cmd_verified && !r->cmd_stalled &&
         (r->no_sub || (r->sub.up && !r->sub_stalled &&
                        (r->canary_subscribed || !r->canary[0])));
}

static void on_pong(redisReply *reply, void *arg) {
  ns_redis *r = arg;
  if (reply)
    r->ping_sent_ms = 0;
}

/* Reads, without blocking, what Redis already sent on `s` (up to
 * DRAIN_MAX_READS buffers), running the reply callbacks as the loop would
 * have, so that a reply the busy loop has not read yet restarts the slot's
 * clock before a timeout is declared.  May disconnect the slot (EOF). */
static void drain(slot *s) {
  int i, avail;
  for (i = 0; i < DRAIN_MAX_READS && s->ac && s->up; i++) {
    avail = 0;
    if (ioctl(s->ac->c.fd, FIONREAD, &avail) != 0 || avail <= 0)
      break;
    redisAsyncHandleRead(s->ac);
  }
}

/* 1 when `s` has owed a reply for more than `limit_ms` of loop time, what is
 * already in its socket included. */
static int overdue(slot *s, int64_t now, int64_t limit_ms) {
  if (ns_redis_clock_tick(&s->clock, now, TICK_CHARGE_MS) <= limit_ms)
    return 0;
  drain(s);
  return s->ac && s->up && s->clock.counted_ms > limit_ms;
}

/* The subscriber connection is dead or stalled while the command
 * connection works: drop it (pending callbacks get NULL) and reconnect; the
 * owner re-subscribes and replays from its cursors (sub_reconnected). */
static void sub_stalled(ns_redis *r, const char *why) {
  ns_log(NS_LOG_WARN, "redis sub: %s: reconnecting the subscriber", why);
  r->sub_stalled = 1;
  r->canary_losses++;
  canary_reset(r);
  notify(r, 0);
  if (r->sub.ac)
    redisAsyncFree(r->sub.ac);
}

static void on_canary_published(redisReply *reply, void *arg) {
  ns_redis *r = arg;
  if (!reply || reply->type != REDIS_REPLY_INTEGER || !r->canary_sent_ms)
    return; /* the command connection failed: its own check handles it */
  if (reply->integer == 0 && r->sub.up) {
    sub_stalled(r, "no subscriber for the canary channel");
    return;
  }
  /* Redis has it: from now on the subscriber owes it to us. */
  ns_redis_clock_owe(&r->sub.clock, ns_mono_ms());
}

static void canary_tick(ns_redis *r, int64_t now) {
  if (!r->canary[0] || !r->sub.up || !r->canary_subscribed || r->sub_stalled) {
    ns_redis_clock_tick(&r->sub.clock, now, TICK_CHARGE_MS);
    return;
  }
  if (r->canary_sent_ms) {
    if (overdue(&r->sub, now, CANARY_TIMEOUT_MS))
      sub_stalled(r, "canary not received");
    return;
  }
  ns_redis_clock_tick(&r->sub.clock, now, TICK_CHARGE_MS);
  if (now - r->canary_last_ms < CANARY_EVERY_MS)
    return;
  r->canary_seq++;
  if (ns_redis_cmd(r, on_canary_published, r, "PUBLISH %s %llu", r->canary,
                   r->canary_seq) == 0)
    r->canary_sent_ms = r->canary_last_ms = now;
}

/* NOTISYNC_DEBUG_STALL_MS=N (tests only; compiled out with NDEBUG): the
 * first two PINGs are followed by blocking the loop for N ms, as a long
 * fan-out does, while Redis answers (tests/e2e/liveness.test.js). */
static void debug_stall_init(ns_redis *r) {
#ifndef NDEBUG
  const char *v = getenv("NOTISYNC_DEBUG_STALL_MS");
  long ms = v ? strtol(v, NULL, 10) : 0;
  if (ms > 0 && ms <= 60000) {
    r->debug_stall_ms = (int)ms;
    r->debug_stalls_left = 2;
  }
#else
  (void)r;
#endif
}

static void debug_stall(ns_redis *r) {
  if (r->debug_stalls_left <= 0)
    return;
  r->debug_stalls_left--;
  ns_log(NS_LOG_WARN, "debug: blocking the loop for %d ms after a PING",
         r->debug_stall_ms);
  uv_sleep((unsigned int)r->debug_stall_ms);
}

void ns_redis_tick(ns_redis *r) {
  int64_t now;
  if (r && r->cl) {
    ns_rcluster_tick(r->cl);
    return;
  }
  if (!r || r->closing || !r->cmd.up)
    return;
  now = ns_mono_ms();
  canary_tick(r, now);
  if (r->closing || !r->cmd.up || !r->cmd.ac)
    return; /* reading the subscriber may have run a close */
  if (overdue(&r->cmd, now, PING_TIMEOUT_MS)) {
    ns_log(NS_LOG_WARN,
           "redis: no reply for %d ms of loop time (%lld ms wall since the "
           "wait began): reconnecting",
           PING_TIMEOUT_MS, (long long)(now - r->cmd.clock.owed_since_ms));
    r->cmd_stalled = 1;
    notify(r, 0);
    /* Frees the context now (a graceful disconnect would wait for the
     * stalled server); every pending callback gets reply == NULL and
     * on_disconnect schedules the reconnect. */
    redisAsyncFree(r->cmd.ac);
    return;
  }
  if (!r->cmd.up || r->ping_sent_ms)
    return;
  if (ns_redis_cmd(r, on_pong, r, "PING") == 0) {
    r->ping_sent_ms = now;
    debug_stall(r);
  }
}
