/*
 * ns_pg.c -- libpq driven by a uv_poll on PQsocket (see ns_pg.h).
 *
 * The poll handle is heap-allocated because PQsocket() may change while
 * connecting: a stale handle is closed (and freed in its close callback) and
 * a new one made.  PQfinish() is only called after the handle is stopped.
 */
#include "ns_pg.h"

#include <stdlib.h>
#include <string.h>

#include "ns_common.h"
#include "ns_log.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
/* A slow PostgreSQL must not make requests pile up behind it (issue 10: at
 * 2 s per statement a producer's POST waited 10 s and the queue grew by
 * every request): a query not yet sent PG_WAIT_MAX_MS after it was queued
 * is failed by the next tick (its callback gets NULL: the caller answers
 * 503, truthfully, since PostgreSQL never saw it), and while the oldest waiting query has
 * waited PG_ADMIT_WAIT_MS a new one is refused at once (NS_EUNAVAIL). */
#define PG_WAIT_MAX_MS 3000
#define PG_ADMIT_WAIT_MS 1000

typedef struct query {
  struct query *next;
  char *sql;
  int nparams;
  char **params;
  ns_pg_cb cb;
  void *arg;
  PGresult *keep; /* result handed to cb */
  const char *stmt; /* prepared statement name (static), or NULL */
  int preparing;    /* the PQsendPrepare step of `stmt` is in flight */
  int64_t queued_ms; /* when it was queued (ns_mono_ms) */
} query;

#define MAX_PREPARED 16

typedef struct poller {
  uv_poll_t h;
  ns_pg *pg;
} poller;

struct ns_pg {
  uv_loop_t *loop;
  char *conninfo;
  PGconn *conn;
  poller *poll;
  int fd;
  int events;
  int up;
  int connecting;
  int closing;
  uv_timer_t retry;
  int64_t backoff_ms;
  query *head, *tail;
  size_t nqueued;
  unsigned long long overloads; /* queries refused at NS_PG_MAX_QUEUED */
  int inflight;
  int64_t sent_ms;
  const char *prepared[MAX_PREPARED]; /* names prepared on this connection */
  int nprepared;
  ns_pg_state_cb on_state;
  void *arg;
};

static void on_poll(uv_poll_t *h, int status, int events);
static void start_connect(ns_pg *pg);

static void poller_closed(uv_handle_t *h) { free(h->data); }

static void poll_drop(ns_pg *pg) {
  if (!pg->poll)
    return;
  uv_poll_stop(&pg->poll->h);
  uv_close((uv_handle_t *)&pg->poll->h, poller_closed);
  pg->poll = NULL;
  pg->events = 0;
}

static void poll_want(ns_pg *pg, int events) {
  int fd = PQsocket(pg->conn);
  if (pg->poll && fd != pg->fd)
    poll_drop(pg);
  if (!pg->poll) {
    pg->poll = ns_xcalloc(1, sizeof(*pg->poll));
    pg->poll->pg = pg;
    pg->poll->h.data = pg->poll;
    uv_poll_init(pg->loop, &pg->poll->h, fd);
    pg->fd = fd;
    pg->events = 0;
  }
  if (events != pg->events) {
    pg->events = events;
    uv_poll_start(&pg->poll->h, events, on_poll);
  }
}

static void query_free(query *q) {
  int i;
  for (i = 0; i < q->nparams; i++)
    free(q->params[i]);
  free(q->params);
  free(q->sql);
  if (q->keep)
    PQclear(q->keep);
  free(q);
}

/* Completes and frees the head query with `res` (may be NULL). */
static void complete_head(ns_pg *pg, PGresult *res) {
  query *q = pg->head;
  pg->head = q->next;
  if (!pg->head)
    pg->tail = NULL;
  pg->nqueued--;
  pg->inflight = 0;
  if (q->keep && q->keep != res)
    PQclear(q->keep);
  q->keep = res;
  if (q->cb)
    q->cb(res, q->arg);
  query_free(q);
}

/* The first query not yet sent (the head, unless it is in flight). */
static query **first_waiting(ns_pg *pg) {
  return pg->inflight && pg->head ? &pg->head->next : &pg->head;
}

/* Fails every query that has waited more than PG_WAIT_MAX_MS unsent (a
 * prefix of the waiting ones: they are queued in order).  The list is made
 * consistent before any callback runs (a callback may queue again). */
static void expire_waiting(ns_pg *pg, int64_t now) {
  query **pp = first_waiting(pg), *expired = NULL, **etail = &expired, *q;
  while (*pp && now - (*pp)->queued_ms > PG_WAIT_MAX_MS) {
    q = *pp;
    *pp = q->next;
    q->next = NULL;
    *etail = q;
    etail = &q->next;
    pg->nqueued--;
    pg->overloads++;
  }
  if (!expired)
    return;
  if (!pg->head)
    pg->tail = NULL;
  else if (!*pp)
    pg->tail = pg->head; /* pp was &head->next: only the in-flight one left */
  ns_log(NS_LOG_WARN, "postgres: queries waited over %d ms unsent: refused",
         PG_WAIT_MAX_MS);
  while ((q = expired) != NULL) {
    expired = q->next;
    if (q->cb)
      q->cb(NULL, q->arg);
    query_free(q);
  }
}

static void fail_all(ns_pg *pg) {
  while (pg->head)
    complete_head(pg, NULL);
}

static void on_retry(uv_timer_t *t) { start_connect(t->data); }

static void connection_lost(ns_pg *pg, const char *why) {
  int was_up = pg->up;
  ns_log(NS_LOG_WARN, "postgres connection %s: %s", was_up ? "lost" : "failed",
         why);
  poll_drop(pg);
  if (pg->conn)
    PQfinish(pg->conn);
  pg->conn = NULL;
  pg->up = 0;
  pg->connecting = 0;
  pg->nprepared = 0;
  fail_all(pg);
  if (was_up && pg->on_state && !pg->closing)
    pg->on_state(pg->arg, 0);
  if (!pg->closing) {
    uv_timer_start(&pg->retry, on_retry, (uint64_t)pg->backoff_ms, 0);
    pg->backoff_ms = NS_MIN(pg->backoff_ms * 2, BACKOFF_MAX_MS);
  }
}

static int is_prepared(const ns_pg *pg, const char *name) {
  int i;
  for (i = 0; i < pg->nprepared; i++)
    if (pg->prepared[i] == name || strcmp(pg->prepared[i], name) == 0)
      return 1;
  return 0;
}

static void send_next(ns_pg *pg) {
  query *q = pg->head;
  int ok;
  if (!q || pg->inflight || !pg->up)
    return;
  if (q->stmt && !is_prepared(pg, q->stmt)) {
    q->preparing = 1;
    ok = PQsendPrepare(pg->conn, q->stmt, q->sql, q->nparams, NULL);
  } else if (q->stmt) {
    ok = PQsendQueryPrepared(pg->conn, q->stmt, q->nparams,
                             (const char *const *)q->params, NULL, NULL, 0);
  } else if (q->nparams < 0) {
    ok = PQsendQuery(pg->conn, q->sql);
  } else {
    ok = PQsendQueryParams(pg->conn, q->sql, q->nparams, NULL,
                           (const char *const *)q->params, NULL, NULL, 0);
  }
  if (!ok) {
    connection_lost(pg, PQerrorMessage(pg->conn));
    return;
  }
  pg->inflight = 1;
  pg->sent_ms = ns_mono_ms();
  poll_want(pg, PQflush(pg->conn) == 1 ? UV_READABLE | UV_WRITABLE
                                         : UV_READABLE);
}

/* Reads whatever results are available for the in-flight query. */
static void read_results(ns_pg *pg) {
  if (!PQconsumeInput(pg->conn)) {
    connection_lost(pg, PQerrorMessage(pg->conn));
    return;
  }
  while (pg->inflight && !PQisBusy(pg->conn)) {
    PGresult *res = PQgetResult(pg->conn);
    query *q = pg->head;
    if (!res && q->preparing && q->keep &&
        PQresultStatus(q->keep) == PGRES_COMMAND_OK) {
      /* The statement is prepared: now run it, same queue entry. */
      if (pg->nprepared < MAX_PREPARED)
        pg->prepared[pg->nprepared++] = q->stmt;
      else
        q->stmt = NULL; /* no room to remember it: run it unprepared */
      q->preparing = 0;
      PQclear(q->keep);
      q->keep = NULL;
      pg->inflight = 0;
      send_next(pg);
      return;
    }
    if (!res) {
      complete_head(pg, q->keep ? q->keep : NULL);
      /* complete_head freed q and its keep (passed as res). */
      send_next(pg);
      return;
    }
    /* Keep the first failing result, else the last one. */
    if (q->keep && PQresultStatus(q->keep) == PGRES_FATAL_ERROR) {
      PQclear(res);
    } else {
      if (q->keep)
        PQclear(q->keep);
      q->keep = res;
    }
  }
}

static void connect_step(ns_pg *pg) {
  switch (PQconnectPoll(pg->conn)) {
  case PGRES_POLLING_READING:
    poll_want(pg, UV_READABLE);
    return;
  case PGRES_POLLING_WRITING:
    poll_want(pg, UV_WRITABLE);
    return;
  case PGRES_POLLING_OK:
    pg->connecting = 0;
    pg->up = 1;
    pg->backoff_ms = BACKOFF_MIN_MS;
    PQsetnonblocking(pg->conn, 1);
    poll_want(pg, UV_READABLE);
    ns_log(NS_LOG_INFO, "postgres connected");
    if (pg->on_state)
      pg->on_state(pg->arg, 1);
    send_next(pg);
    return;
  default:
    connection_lost(pg, PQerrorMessage(pg->conn));
  }
}

static void on_poll(uv_poll_t *h, int status, int events) {
  ns_pg *pg = ((poller *)h->data)->pg;
  if (pg->poll != h->data || !pg->conn)
    return;
  if (pg->connecting) {
    connect_step(pg);
    return;
  }
  if (status < 0) {
    connection_lost(pg, uv_strerror(status));
    return;
  }
  if (events & UV_WRITABLE) {
    int f = PQflush(pg->conn);
    if (f < 0) {
      connection_lost(pg, PQerrorMessage(pg->conn));
      return;
    }
    if (f == 0)
      poll_want(pg, UV_READABLE);
  }
  if (events & UV_READABLE)
    read_results(pg);
}

static void start_connect(ns_pg *pg) {
  if (pg->closing || pg->conn)
    return;
  pg->conn = PQconnectStart(pg->conninfo);
  if (!pg->conn || PQstatus(pg->conn) == CONNECTION_BAD) {
    connection_lost(pg, pg->conn ? PQerrorMessage(pg->conn) : "out of memory");
    return;
  }
  pg->connecting = 1;
  poll_want(pg, UV_WRITABLE);
}

int ns_pg_open(ns_pg **out, uv_loop_t *loop, const char *conninfo,
               ns_pg_state_cb on_state, void *arg) {
  ns_pg *pg = ns_xcalloc(1, sizeof(*pg));
  pg->loop = loop;
  pg->conninfo = ns_xstrdup(conninfo);
  pg->on_state = on_state;
  pg->arg = arg;
  pg->backoff_ms = BACKOFF_MIN_MS;
  pg->fd = -1;
  uv_timer_init(loop, &pg->retry);
  pg->retry.data = pg;
  start_connect(pg);
  *out = pg;
  return 0;
}

static void on_retry_closed(uv_handle_t *h) {
  ns_pg *pg = h->data;
  free(pg->conninfo);
  free(pg);
}

void ns_pg_close(ns_pg **pgp) {
  ns_pg *pg = *pgp;
  *pgp = NULL;
  if (!pg)
    return;
  pg->closing = 1;
  poll_drop(pg);
  if (pg->conn)
    PQfinish(pg->conn);
  pg->conn = NULL;
  pg->up = 0;
  fail_all(pg);
  uv_close((uv_handle_t *)&pg->retry, on_retry_closed);
}

int ns_pg_query(ns_pg *pg, const char *sql, int nparams,
                const char *const *params, ns_pg_cb cb, void *arg) {
  return ns_pg_query_prepared(pg, NULL, sql, nparams, params, cb, arg);
}

int ns_pg_query_prepared(ns_pg *pg, const char *stmt, const char *sql,
                         int nparams, const char *const *params, ns_pg_cb cb,
                         void *arg) {
  query *q, *w;
  int64_t now = ns_mono_ms();
  int i;
  if (!pg || !pg->up)
    return NS_EUNAVAIL;
  if (pg->nqueued >= NS_PG_MAX_QUEUED) {
    pg->overloads++;
    return NS_EUNAVAIL;
  }
  /* Expiry runs from the tick only (ns_pg_tick): failing other queries
   * here would run their callbacks inside this caller's. */
  w = *first_waiting(pg);
  if (w && now - w->queued_ms >= PG_ADMIT_WAIT_MS) {
    pg->overloads++; /* PostgreSQL is not keeping up: refuse at once */
    return NS_EUNAVAIL;
  }
  q = ns_xcalloc(1, sizeof(*q));
  q->queued_ms = now;
  q->sql = ns_xstrdup(sql);
  q->nparams = nparams;
  if (nparams > 0) {
    q->params = ns_xcalloc((size_t)nparams, sizeof(char *));
    for (i = 0; i < nparams; i++)
      q->params[i] = params[i] ? ns_xstrdup(params[i]) : NULL;
  }
  q->cb = cb;
  q->arg = arg;
  q->stmt = nparams >= 0 ? stmt : NULL;
  if (pg->tail)
    pg->tail->next = q;
  else
    pg->head = q;
  pg->tail = q;
  pg->nqueued++;
  send_next(pg);
  return 0;
}

int ns_pg_up(const ns_pg *pg) { return pg && pg->up; }

size_t ns_pg_load(const ns_pg *pg) { return pg ? pg->nqueued : 0; }

unsigned long long ns_pg_overloads(const ns_pg *pg) {
  return pg ? pg->overloads : 0;
}

void ns_pg_tick(ns_pg *pg) {
  if (pg && pg->up)
    expire_waiting(pg, ns_mono_ms());
  if (pg && pg->up && pg->inflight &&
      ns_mono_ms() - pg->sent_ms > NS_PG_QUERY_TIMEOUT_MS)
    connection_lost(pg, "query timed out");
}
