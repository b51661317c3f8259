/*
 * ns_rcluster.c -- Redis Cluster routing for ns_redis (see ns_rcluster.h).
 *
 * Nodes are kept in a list (a cluster has a handful of masters); the slot
 * map is an array of 16384 node pointers.  A node leaves the list only when
 * a refresh finds it is neither a master nor a seed; its command
 * connection is closed gracefully, so replies still in flight reach their
 * callbacks (which hold the cluster, not the node).
 *
 * The cluster object lives until ns_rcluster_close() and every request it
 * sent has called back (`pending`).
 */
#include "ns_rcluster.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ns_common.h"
#include "ns_log.h"
#include "ns_rslot.h"
#include "ns_rsub.h"

#define MAX_SENDS 5          /* per command, redirects and retries included */
/* ...except while a slot is being migrated: a script whose keys are split
 * between the two masters (or not created yet) answers ASK / TRYAGAIN on
 * both until the move is final, then MOVED.  Those are retried (100 ms
 * apart) for as long as a migration of one slot may reasonably take. */
#define RESHARD_WAIT_MS 3000
#define RESHARD_MAX_SENDS 80
#define RETRY_DELAY_MS 100   /* TRYAGAIN, CLUSTERDOWN, ... */
#define CLOCK_MS 100         /* the retry queue and refresh timer */
#define REFRESH_EVERY_MS 5000
#define REFRESH_DOWN_MS 1000 /* while some slot is not served */
#define REFRESH_SOON_MS 200  /* after an error: at most this often */
#define MAX_SCRIPTS 32
#define MAX_CLASSIC 8        /* classic channels (bcast) subscribed */

typedef struct node node;

struct node {
  ns_rcluster *cl;
  char host[NS_RSLOT_HOST_MAX + 1];
  int port;
  ns_redis *cmd;
  ns_rsub *sub;
  unsigned id; /* unique: a request remembers where it went by id */
  int master; /* in the current slot map */
  int seed;   /* named in redis_url: kept to ask for the map */
  node *next;
};

typedef struct creq creq;

struct creq {
  ns_rcluster *cl;
  ns_redis_cb cb;
  void *arg;
  int argc;
  const char **argv;
  size_t *argvlen;
  char *store;       /* argument bytes, NUL-terminated each */
  const char *script; /* EVAL of a static (rewritten) script: argv[1] */
  int keyed;
  unsigned slot;
  int sends;
  int64_t start_ms;
  int is_wait;        /* WAIT: one send, on the connection that wrote */
  node *to;           /* the next send goes there, not by the map... */
  int asking;         /* ...after ASKING (an ASK redirect) */
  unsigned sent_to;   /* id of the node of the last send */
  int64_t due_ms;     /* in the retry queue: when */
  creq *next;
};

typedef struct script_map {
  const char *orig;
  char *rewritten;
} script_map;

struct ns_rcluster {
  uv_loop_t *loop;
  ns_redis_handlers h;
  node *nodes;
  node *slots[NS_RSLOTS];
  int covered;      /* every slot has a master */
  int up;           /* last state reported */
  int resync;       /* owner must subscribe again and replay */
  int reported;     /* on_state was ever called */
  uv_timer_t clock;
  int64_t last_refresh_ms;
  int refreshing;
  int refresh_soon;
  creq *retry_head;
  script_map scripts[MAX_SCRIPTS];
  int nscripts;
  struct {
    char *channel;
    node *n;
  } classic[MAX_CLASSIC];
  void (*barrier_cb)(void *);
  void *barrier_arg;
  int barrier_left;
  unsigned long long moved, asked, retried; /* MOVED, ASK, TRYAGAIN & co */
  unsigned long long overloads; /* refused at NS_REDIS_MAX_INFLIGHT */
  unsigned next_id;
  unsigned cb_node; /* inside a reply callback: the node that answered */
  size_t pending;
  int closing;
};

static void evaluate(ns_rcluster *cl);
static void refresh(ns_rcluster *cl);
static int req_send(creq *q);

static void maybe_free(ns_rcluster *cl) {
  int i;
  if (!cl->closing || cl->pending)
    return;
  for (i = 0; i < cl->nscripts; i++)
    free(cl->scripts[i].rewritten);
  for (i = 0; i < MAX_CLASSIC; i++)
    free(cl->classic[i].channel);
  free(cl);
}

/* ---- nodes ---- */

static void on_node_state(void *arg, int up, int sub_reconnected) {
  node *n = arg;
  (void)up;
  (void)sub_reconnected;
  if (!n->cl->closing)
    evaluate(n->cl);
}

static void on_sub_message(void *arg, const char *ch, size_t chlen,
                           const char *payload, size_t len) {
  node *n = arg;
  ns_rcluster *cl = n->cl;
  if (!cl->closing && cl->h.on_message)
    cl->h.on_message(cl->h.arg, ch, chlen, payload, len);
}

static void on_sub_state(void *arg, ns_rsub *s, int up) {
  node *n = arg;
  (void)s;
  if (n->cl->closing)
    return;
  if (up && n->master)
    n->cl->resync = 1; /* its subscriptions are gone */
  evaluate(n->cl);
}

static void on_sub_error(void *arg, ns_rsub *s, const char *err, size_t len) {
  node *n = arg;
  (void)s;
  (void)len;
  if (strncmp(err, "MOVED", 5) == 0 || strncmp(err, "ASK", 3) == 0 ||
      strncmp(err, "CLUSTERDOWN", 11) == 0) {
    n->cl->refresh_soon = 1;
    n->cl->resync = 1;
  }
}

static void on_sunsubscribed(void *arg, ns_rsub *s, const char *ch,
                             size_t chlen) {
  node *n = arg;
  ns_rcluster *cl = n->cl;
  (void)s;
  if (cl->closing || !cl->h.wanted || !cl->h.wanted(cl->h.arg, ch, chlen))
    return; /* asked for */
  /* Redis dropped a channel we still want: its slot moved.  Subscribe
   * again where the map says (a stale map answers MOVED: refresh, resync)
   * and replay what the gap may have lost. */
  cl->refresh_soon = 1;
  cl->resync = 1;
}

static node *node_find(ns_rcluster *cl, const char *host, int port) {
  node *n;
  for (n = cl->nodes; n; n = n->next)
    if (n->port == port && strcmp(n->host, host) == 0)
      return n;
  return NULL;
}

static node *node_get(ns_rcluster *cl, const char *host, int port) {
  node *n = node_find(cl, host, port);
  ns_redis_handlers h;
  ns_rsub_handlers sh;
  char url[NS_RSLOT_HOST_MAX + 32];
  if (n)
    return n;
  n = ns_xcalloc(1, sizeof(*n));
  n->cl = cl;
  n->id = ++cl->next_id;
  snprintf(n->host, sizeof(n->host), "%s", host);
  n->port = port;
  memset(&h, 0, sizeof(h));
  h.on_state = on_node_state;
  h.arg = n;
  h.no_subscriber = 1;
  snprintf(url, sizeof(url), "redis://%s:%d/0", host, port);
  if (ns_redis_open(&n->cmd, cl->loop, url, &h) != 0) {
    free(n);
    return NULL;
  }
  memset(&sh, 0, sizeof(sh));
  sh.on_message = on_sub_message;
  sh.on_state = on_sub_state;
  sh.on_sunsubscribed = on_sunsubscribed;
  sh.on_error = on_sub_error;
  sh.arg = n;
  n->sub = ns_rsub_open(cl->loop, host, port, &sh);
  n->next = cl->nodes;
  cl->nodes = n;
  ns_log(NS_LOG_INFO, "redis cluster: node %s:%d", host, port);
  return n;
}

static void node_drop(ns_rcluster *cl, node *n) {
  node **p;
  creq *q;
  int i;
  for (q = cl->retry_head; q; q = q->next)
    if (q->to == n) { /* resent by the map instead */
      q->to = NULL;
      q->asking = 0;
    }
  for (p = &cl->nodes; *p; p = &(*p)->next)
    if (*p == n) {
      *p = n->next;
      break;
    }
  for (i = 0; i < MAX_CLASSIC; i++)
    if (cl->classic[i].n == n)
      cl->classic[i].n = NULL;
  ns_log(NS_LOG_INFO, "redis cluster: dropping node %s:%d", n->host, n->port);
  ns_redis_close(&n->cmd);
  ns_rsub_close(&n->sub);
  free(n);
}

static int node_up(const node *n) {
  return n && ns_redis_up(n->cmd) && ns_rsub_up(n->sub);
}

/* ---- state ---- */

static void evaluate(ns_rcluster *cl) {
  int up = cl->covered, i;
  node *n;
  if (cl->closing)
    return;
  for (n = cl->nodes; n && up; n = n->next)
    if (n->master && !node_up(n))
      up = 0;
  if (up && cl->up && (!cl->resync || cl->refreshing || cl->refresh_soon))
    return; /* nothing new, or a resync that waits for the fresh map (a
             * resubscription on the stale one would be answered MOVED) */
  if (!up && !cl->up && cl->reported)
    return;
  if (up && !cl->up)
    cl->resync = 1;
  cl->up = up;
  cl->reported = 1;
  i = up && cl->resync;
  if (i)
    cl->resync = 0;
  if (cl->h.on_state)
    cl->h.on_state(cl->h.arg, up, i);
}

int ns_rcluster_up(const ns_rcluster *cl) { return cl && cl->up; }

/* ---- the slot map ---- */

static int reply_str(const redisReply *r, char *buf, size_t n) {
  if (r->type != REDIS_REPLY_STRING || r->len >= n)
    return -1;
  memcpy(buf, r->str, r->len);
  buf[r->len] = '\0';
  return 0;
}

typedef struct refresh_op {
  ns_rcluster *cl;
  char host[NS_RSLOT_HOST_MAX + 1]; /* the node asked */
} refresh_op;

/* Applies a CLUSTER SLOTS reply: 0, or -1 when malformed (map unchanged). */
static int apply_slots(ns_rcluster *cl, const redisReply *r,
                       const char *asked) {
  static node *map[NS_RSLOTS];
  size_t i;
  long covered = 0;
  int moved = 0, s;
  node *n, *next;
  if (r->type != REDIS_REPLY_ARRAY)
    return -1;
  memset(map, 0, sizeof(map));
  for (i = 0; i < r->elements; i++) {
    const redisReply *e = r->element[i], *m;
    char host[NS_RSLOT_HOST_MAX + 1];
    long long lo, hi;
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
        e->element[0]->type != REDIS_REPLY_INTEGER ||
        e->element[1]->type != REDIS_REPLY_INTEGER)
      return -1;
    lo = e->element[0]->integer;
    hi = e->element[1]->integer;
    m = e->element[2];
    if (lo < 0 || hi >= NS_RSLOTS || lo > hi || m->type != REDIS_REPLY_ARRAY ||
        m->elements < 2 || m->element[1]->type != REDIS_REPLY_INTEGER ||
        m->element[1]->integer < 1 || m->element[1]->integer > 65535 ||
        reply_str(m->element[0], host, sizeof(host)) != 0)
      return -1;
    if (!host[0] || strcmp(host, "?") == 0) /* no endpoint announced */
      snprintf(host, sizeof(host), "%s", asked);
    if (!(n = node_get(cl, host, (int)m->element[1]->integer)))
      return -1;
    for (s = (int)lo; s <= (int)hi; s++)
      map[s] = n;
  }
  for (n = cl->nodes; n; n = n->next)
    n->master = 0;
  for (s = 0; s < NS_RSLOTS; s++) {
    if (map[s]) {
      covered++;
      map[s]->master = 1;
    }
    if (cl->slots[s] != map[s])
      moved = 1;
    cl->slots[s] = map[s];
  }
  cl->covered = covered == NS_RSLOTS;
  for (n = cl->nodes; n; n = next) {
    next = n->next;
    if (!n->master && !n->seed)
      node_drop(cl, n);
  }
  if (moved) {
    ns_log(NS_LOG_INFO, "redis cluster: slot map changed (%ld of %d slots "
           "served)", covered, NS_RSLOTS);
    cl->resync = 1; /* subscriptions belong on the new masters */
  }
  return 0;
}

static void on_slots(redisReply *r, void *arg) {
  refresh_op *op = arg;
  ns_rcluster *cl = op->cl;
  cl->pending--;
  cl->refreshing = 0;
  if (!cl->closing) {
    if (!r || apply_slots(cl, r, op->host) != 0) {
      ns_log(NS_LOG_WARN, "redis cluster: CLUSTER SLOTS from %s failed: %s",
             op->host, r && r->type == REDIS_REPLY_ERROR ? r->str
                                                         : "no usable reply");
      cl->refresh_soon = 1;
    }
    evaluate(cl);
  }
  free(op);
  maybe_free(cl);
}

/* Asks a reachable node for the slot map: a master first, else a seed,
 * else any node we know. */
static void refresh(ns_rcluster *cl) {
  node *n, *pick = NULL;
  refresh_op *op;
  int pass;
  if (cl->refreshing || cl->closing)
    return;
  for (pass = 0; pass < 3 && !pick; pass++)
    for (n = cl->nodes; n && !pick; n = n->next)
      if (ns_redis_up(n->cmd) &&
          (pass == 2 || (pass == 0 ? n->master : n->seed)))
        pick = n;
  cl->last_refresh_ms = ns_mono_ms();
  cl->refresh_soon = 0;
  if (!pick)
    return;
  op = ns_xmalloc(sizeof(*op));
  op->cl = cl;
  snprintf(op->host, sizeof(op->host), "%s", pick->host);
  if (ns_redis_cmd(pick->cmd, on_slots, op, "CLUSTER SLOTS") != 0) {
    free(op);
    return;
  }
  cl->refreshing = 1;
  cl->pending++;
}

/* ---- requests ---- */

static void req_free(creq *q) {
  ns_rcluster *cl = q->cl;
  free(q->argv);
  free(q->argvlen);
  free(q->store);
  free(q);
  cl->pending--;
  maybe_free(cl);
}

static void req_finish(creq *q, redisReply *r) {
  unsigned saved = q->cl->cb_node;
  q->cl->cb_node = r ? q->sent_to : 0; /* for ns_rcluster_wait() */
  if (q->cb)
    q->cb(r, q->arg);
  q->cl->cb_node = saved;
  req_free(q);
}

static void req_later(creq *q) {
  q->due_ms = ns_mono_ms() + RETRY_DELAY_MS;
  q->next = q->cl->retry_head;
  q->cl->retry_head = q;
}

static int error_is(const redisReply *r, const char *what) {
  size_t n = strlen(what);
  return r->len >= n && memcmp(r->str, what, n) == 0 &&
         (r->len == n || r->str[n] == ' ');
}

/* Past MAX_SENDS: 1 when `r` is what a slot migration answers and the
 * request may still wait it out. */
static int reshard_wait(const creq *q, const redisReply *r) {
  return q->sends < RESHARD_MAX_SENDS &&
         ns_mono_ms() - q->start_ms < RESHARD_WAIT_MS &&
         (error_is(r, "TRYAGAIN") || error_is(r, "ASK") ||
          error_is(r, "MOVED"));
}

static void on_reply(redisReply *r, void *arg) {
  creq *q = arg;
  ns_rcluster *cl = q->cl;
  char host[NS_RSLOT_HOST_MAX + 1];
  unsigned slot;
  int port, kind;
  if (!r) { /* the node's connection failed: the map may be stale */
    cl->refresh_soon = 1;
    req_finish(q, NULL);
    return;
  }
  if (r->type != REDIS_REPLY_ERROR || cl->closing || q->is_wait ||
      (q->sends >= MAX_SENDS && !reshard_wait(q, r))) {
    req_finish(q, r);
    return;
  }
  if ((kind = ns_rslot_redirect(r->str, r->len, &slot, host, &port)) != 0) {
    node *n = node_get(cl, host, port);
    if (kind == 1)
      cl->moved++;
    else
      cl->asked++;
    if (!n) {
      req_finish(q, r);
      return;
    }
    if (kind == 1) { /* MOVED: that slot lives there now */
      cl->slots[slot] = n;
      cl->refresh_soon = 1;
    } else {
      q->to = n;
      q->asking = 1;
    }
    if (!ns_redis_up(n->cmd)) { /* a node just learnt of: give it time */
      req_later(q);
      return;
    }
    if (req_send(q) != 0)
      req_finish(q, r);
    return;
  }
  if (error_is(r, "TRYAGAIN") || error_is(r, "CLUSTERDOWN") ||
      error_is(r, "MASTERDOWN") || error_is(r, "LOADING")) {
    cl->retried++;
    cl->refresh_soon = 1;
    req_later(q);
    return;
  }
  req_finish(q, r);
}

static node *route(ns_rcluster *cl, const creq *q) {
  node *n;
  if (q->keyed)
    return cl->slots[q->slot];
  for (n = cl->nodes; n; n = n->next)
    if (n->master && ns_redis_up(n->cmd))
      return n;
  return NULL;
}

/* One send: 0, or NS_EUNAVAIL (the node is unknown or down). */
static int req_send(creq *q) {
  node *n = q->to ? q->to : route(q->cl, q);
  if (!n || !ns_redis_up(n->cmd))
    return NS_EUNAVAIL;
  if (q->asking && ns_redis_cmd(n->cmd, NULL, NULL, "ASKING") != 0)
    return NS_EUNAVAIL;
  q->to = NULL;
  q->asking = 0;
  q->sends++;
  q->sent_to = n->id;
  return ns_redis_cmdargv(n->cmd, on_reply, q, q->argc, q->argv,
                          q->script ? NULL : q->argvlen);
}

/* The script's text with every 'PUBLISH' sent as 'SPUBLISH' (user
 * channels are sharded), made once and kept: ns_redis caches scripts by
 * address.  NULL when the table is full. */
static const char *script_of(ns_rcluster *cl, const char *text) {
  int i;
  size_t n = 0, len;
  const char *p;
  char *out, *o;
  for (i = 0; i < cl->nscripts; i++)
    if (cl->scripts[i].orig == text)
      return cl->scripts[i].rewritten;
  if (cl->nscripts == MAX_SCRIPTS)
    return NULL;
  for (p = text; (p = strstr(p, "'PUBLISH'")); p++)
    n++;
  len = strlen(text);
  o = out = ns_xmalloc(len + n + 1);
  for (p = text; *p;) {
    if (strncmp(p, "'PUBLISH'", 9) == 0) {
      memcpy(o, "'SPUBLISH'", 10);
      o += 10;
      p += 9;
    } else {
      *o++ = *p++;
    }
  }
  *o = '\0';
  cl->scripts[cl->nscripts].orig = text;
  cl->scripts[cl->nscripts].rewritten = out;
  cl->nscripts++;
  return out;
}

/* Where a command goes: its key's slot (EVAL / EVALSHA: the first key;
 * PUBLISH: the channel's). */
static void req_route_key(creq *q) {
  const char *cmd = q->argv[0];
  int k = -1;
  if (strcasecmp(cmd, "EVAL") == 0 || strcasecmp(cmd, "EVALSHA") == 0) {
    if (q->argc > 3 && atoi(q->argv[2]) > 0)
      k = 3;
  } else if (strcasecmp(cmd, "PING") == 0 || strcasecmp(cmd, "WAIT") == 0 ||
             strcasecmp(cmd, "INFO") == 0 || strcasecmp(cmd, "CLUSTER") == 0) {
    k = -1;
  } else if (q->argc > 1) {
    k = 1;
  }
  if (k >= 0) {
    q->keyed = 1;
    q->slot = ns_rslot_of(q->argv[k], q->argvlen[k]);
  }
  /* A user channel is sharded: SPUBLISH (same arguments). */
  if (strcasecmp(cmd, "PUBLISH") == 0 && q->argc == 3 &&
      ns_rslot_has_tag(q->argv[1], q->argvlen[1]))
    q->argv[0] = "SPUBLISH";
}

/* A request with copies of the arguments; argv[1] of an EVAL of a static
 * script stays that (rewritten) script. */
static creq *req_new(ns_rcluster *cl, ns_redis_cb cb, void *arg, int argc,
                     const char **argv, const size_t *argvlen,
                     const char *script) {
  creq *q = ns_xcalloc(1, sizeof(*q));
  size_t total = 0, off = 0;
  int i;
  q->cl = cl;
  q->cb = cb;
  q->arg = arg;
  q->argc = argc;
  q->argv = ns_xmalloc((size_t)argc * sizeof(*q->argv));
  q->argvlen = ns_xmalloc((size_t)argc * sizeof(*q->argvlen));
  for (i = 0; i < argc; i++) {
    q->argvlen[i] = argvlen ? argvlen[i] : strlen(argv[i]);
    total += q->argvlen[i] + 1;
  }
  q->store = ns_xmalloc(total);
  for (i = 0; i < argc; i++) {
    memcpy(q->store + off, argv[i], q->argvlen[i]);
    q->store[off + q->argvlen[i]] = '\0';
    q->argv[i] = q->store + off;
    off += q->argvlen[i] + 1;
  }
  if (script) {
    q->script = script;
    q->argv[1] = script;
    q->argvlen[1] = strlen(script);
  }
  q->start_ms = ns_mono_ms();
  cl->pending++;
  req_route_key(q);
  return q;
}

/* First send, from the caller: 0 or NS_EUNAVAIL (cb never called).  The
 * requests alive -- in flight on the nodes or waiting in the retry queue
 * -- are bounded like a standalone connection's commands. */
static int req_start(creq *q) {
  int full = q->cl->pending > NS_REDIS_MAX_INFLIGHT;
  if (full)
    q->cl->overloads++;
  if (full || q->cl->closing || req_send(q) != 0) {
    q->cb = NULL;
    req_free(q);
    return NS_EUNAVAIL;
  }
  return 0;
}

int ns_rcluster_cmdargv(ns_rcluster *cl, ns_redis_cb cb, void *arg, int argc,
                        const char **argv, const size_t *argvlen) {
  const char *script = NULL;
  if (argc < 1)
    return NS_EINVAL;
  if (argc >= 3 && !argvlen && strcmp(argv[0], "EVAL") == 0)
    script = script_of(cl, argv[1]);
  return req_start(req_new(cl, cb, arg, argc, argv, argvlen, script));
}

/* The arguments of a RESP command as redisvFormatCommand writes it
 * ("*N\r\n" then "$len\r\n<bytes>\r\n" each).  Returns argc or -1. */
static int split_resp(const char *buf, int len, const char **argv,
                      size_t *argvlen, int max) {
  const char *p = buf, *end = buf + len;
  char *e;
  long n, i, l;
  if (p >= end || *p != '*')
    return -1;
  n = strtol(p + 1, &e, 10);
  if (n < 1 || n > max || e + 2 > end)
    return -1;
  p = e + 2;
  for (i = 0; i < n; i++) {
    if (p >= end || *p != '$')
      return -1;
    l = strtol(p + 1, &e, 10);
    if (l < 0 || e + 2 + l + 2 > end)
      return -1;
    argv[i] = e + 2;
    argvlen[i] = (size_t)l;
    p = e + 2 + l + 2;
  }
  return (int)n;
}

int ns_rcluster_vcmd(ns_rcluster *cl, ns_redis_cb cb, void *arg,
                     const char *fmt, va_list ap) {
  char *buf = NULL;
  const char *argv[32];
  size_t argvlen[32];
  int len, argc, rc;
  if ((len = redisvFormatCommand(&buf, fmt, ap)) < 0)
    return NS_EINVAL;
  argc = split_resp(buf, len, argv, argvlen, 32);
  rc = argc < 1 ? NS_EINVAL
                : req_start(req_new(cl, cb, arg, argc, argv, argvlen, NULL));
  redisFreeCommand(buf);
  return rc;
}

int ns_rcluster_wait(ns_rcluster *cl, const char *key, int replicas,
                     int timeout_ms, ns_redis_cb cb, void *arg) {
  char nrep[16], tmo[16];
  const char *argv[3];
  creq *q;
  snprintf(nrep, sizeof(nrep), "%d", replicas);
  snprintf(tmo, sizeof(tmo), "%d", timeout_ms);
  argv[0] = "WAIT";
  argv[1] = nrep;
  argv[2] = tmo;
  q = req_new(cl, cb, arg, 3, argv, NULL, NULL);
  /* On the connection that wrote: from inside the write's reply callback,
   * the node that answered it (after a MOVED or an ASK, not necessarily
   * the map's); otherwise the master of `key`'s slot. */
  q->keyed = 1;
  q->slot = ns_rslot_of(key, strlen(key));
  if (cl->cb_node) {
    node *n;
    for (n = cl->nodes; n && n->id != cl->cb_node; n = n->next)
      ;
    if (!n) { /* dropped meanwhile: nothing can confirm the write */
      q->cb = NULL;
      req_free(q);
      return NS_EUNAVAIL;
    }
    q->to = n;
  }
  q->is_wait = 1; /* a WAIT resent elsewhere would prove nothing */
  return req_start(q);
}

/* ---- pub/sub ---- */

static int classic_index(ns_rcluster *cl, const char *ch, int create) {
  int i, free_i = -1;
  for (i = 0; i < MAX_CLASSIC; i++) {
    if (cl->classic[i].channel && strcmp(cl->classic[i].channel, ch) == 0)
      return i;
    if (!cl->classic[i].channel && free_i < 0)
      free_i = i;
  }
  if (create && free_i >= 0) {
    cl->classic[free_i].channel = ns_xstrdup(ch);
    cl->classic[free_i].n = NULL;
  }
  return create ? free_i : -1;
}

void ns_rcluster_subscribe(ns_rcluster *cl, const char *ch) {
  size_t len = strlen(ch);
  node *n = cl->slots[ns_rslot_of(ch, len)];
  int i;
  if (!n)
    return; /* resync when the slot is served */
  if (ns_rslot_has_tag(ch, len)) {
    ns_rsub_send(n->sub, "SSUBSCRIBE", ch);
    return;
  }
  /* A classic channel reaches every node: one subscription, or each
   * message would arrive twice. */
  if ((i = classic_index(cl, ch, 1)) < 0)
    return;
  if (cl->classic[i].n && cl->classic[i].n != n)
    ns_rsub_send(cl->classic[i].n->sub, "UNSUBSCRIBE", ch);
  cl->classic[i].n = n;
  ns_rsub_send(n->sub, "SUBSCRIBE", ch);
}

void ns_rcluster_unsubscribe(ns_rcluster *cl, const char *ch) {
  size_t len = strlen(ch);
  node *n = cl->slots[ns_rslot_of(ch, len)];
  int i;
  if (ns_rslot_has_tag(ch, len)) {
    if (n)
      ns_rsub_send(n->sub, "SUNSUBSCRIBE", ch);
    return;
  }
  if ((i = classic_index(cl, ch, 0)) >= 0 && cl->classic[i].n) {
    ns_rsub_send(cl->classic[i].n->sub, "UNSUBSCRIBE", ch);
    free(cl->classic[i].channel);
    cl->classic[i].channel = NULL;
    cl->classic[i].n = NULL;
  }
}

static void on_barrier(void *arg) {
  ns_rcluster *cl = arg;
  if (cl->barrier_cb && --cl->barrier_left == 0) {
    void (*cb)(void *) = cl->barrier_cb;
    cl->barrier_cb = NULL;
    cb(cl->barrier_arg);
  }
}

void ns_rcluster_after_subscribes(ns_rcluster *cl, void (*cb)(void *),
                                  void *arg) {
  node *n;
  cl->barrier_cb = cb;
  cl->barrier_arg = arg;
  cl->barrier_left = 1; /* dropped below: no early finish */
  for (n = cl->nodes; n; n = n->next)
    if (n->master && ns_rsub_barrier(n->sub, on_barrier, cl) == 0)
      cl->barrier_left++;
  on_barrier(cl);
}

/* ---- timers ---- */

static void on_clock(uv_timer_t *t) {
  ns_rcluster *cl = t->data;
  int64_t now = ns_mono_ms(), since = now - cl->last_refresh_ms;
  creq *q, *keep = NULL, *next;
  /* the retry queue: due ones are sent again */
  q = cl->retry_head;
  cl->retry_head = NULL;
  for (; q; q = next) {
    next = q->next;
    if (q->due_ms > now) {
      q->next = keep;
      keep = q;
    } else if (req_send(q) != 0) {
      req_finish(q, NULL);
    }
  }
  for (q = keep; q; q = next) {
    next = q->next;
    q->next = cl->retry_head;
    cl->retry_head = q;
  }
  if (since >= REFRESH_EVERY_MS ||
      (!cl->up && since >= REFRESH_DOWN_MS) ||
      (cl->refresh_soon && since >= REFRESH_SOON_MS))
    refresh(cl);
  else if (!cl->refreshing && cl->last_refresh_ms == 0)
    refresh(cl);
  evaluate(cl);
}

void ns_rcluster_tick(ns_rcluster *cl) {
  node *n;
  if (!cl || cl->closing)
    return;
  for (n = cl->nodes; n; n = n->next) {
    ns_redis_tick(n->cmd);
    ns_rsub_tick(n->sub);
  }
}

/* ---- life ---- */

int ns_rcluster_open(ns_rcluster **out, uv_loop_t *loop, const char *url,
                     const ns_redis_handlers *h) {
  ns_rslot_seed seeds[NS_RSLOT_SEEDS_MAX];
  ns_rcluster *cl;
  int n, i;
  if ((n = ns_rslot_seeds(url, seeds, NS_RSLOT_SEEDS_MAX)) < 1)
    return NS_EINVAL;
  cl = ns_xcalloc(1, sizeof(*cl));
  cl->loop = loop;
  cl->h = *h;
  cl->h.canary_channel = NULL; /* the PING of each subscriber instead */
  for (i = 0; i < n; i++) {
    node *nd = node_get(cl, seeds[i].host, seeds[i].port);
    if (nd)
      nd->seed = 1;
  }
  uv_timer_init(loop, &cl->clock);
  cl->clock.data = cl;
  uv_timer_start(&cl->clock, on_clock, CLOCK_MS, CLOCK_MS);
  cl->pending = 1; /* the clock timer, released when it has closed */
  *out = cl;
  return 0;
}

static void on_clock_closed(uv_handle_t *h) {
  ns_rcluster *cl = h->data;
  cl->pending--;
  maybe_free(cl);
}

void ns_rcluster_close(ns_rcluster **cp) {
  ns_rcluster *cl = *cp;
  creq *q, *next;
  node *n;
  *cp = NULL;
  if (!cl)
    return;
  cl->closing = 1;
  cl->barrier_cb = NULL;
  for (q = cl->retry_head, cl->retry_head = NULL; q; q = next) {
    next = q->next;
    req_finish(q, NULL);
  }
  while ((n = cl->nodes) != NULL) {
    cl->nodes = n->next;
    ns_redis_close(&n->cmd);
    ns_rsub_close(&n->sub);
    free(n);
  }
  uv_close((uv_handle_t *)&cl->clock, on_clock_closed);
}

unsigned long long ns_rcluster_sub_losses(const ns_rcluster *cl) {
  unsigned long long n = 0;
  const node *nd;
  for (nd = cl ? cl->nodes : NULL; nd; nd = nd->next)
    n += ns_rsub_losses(nd->sub);
  return n;
}

size_t ns_rcluster_inflight(const ns_rcluster *cl) {
  size_t n = 0;
  const node *nd;
  for (nd = cl ? cl->nodes : NULL; nd; nd = nd->next)
    n += ns_redis_inflight(nd->cmd);
  return n;
}

void ns_rcluster_redirects(const ns_rcluster *cl, unsigned long long out[3]) {
  out[0] = cl ? cl->moved : 0;
  out[1] = cl ? cl->asked : 0;
  out[2] = cl ? cl->retried : 0;
}

unsigned long long ns_rcluster_overloads(const ns_rcluster *cl) {
  unsigned long long n = cl ? cl->overloads : 0;
  const node *nd;
  for (nd = cl ? cl->nodes : NULL; nd; nd = nd->next)
    n += ns_redis_overloads(nd->cmd);
  return n;
}
