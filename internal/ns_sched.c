/*
 * ns_sched.c -- the time-driven work of the notification model (SPEC §9):
 * scheduled notifications queued at their deliver_at, and the deletion of
 * notifications older than notification_retention.
 *
 * Scheduling.  The schedule is the notifications table (status
 * 'scheduled', deliver_at, partial index notifications_due); the decision
 * "queued or canceled" is the Redis marker qd:{user}:<id>, which the queue
 * script sets (SET NX semantics) and a cancel sets to 'x' first
 * (ns_queue_cancel).  Every NS_SCHED_TICK_MS each instance runs one
 * round: a statement claims up to NS_SCHED_ROUND due rows (FOR UPDATE SKIP
 * LOCKED, so instances never claim the same row at once), marks them
 * 'queued' with a lease (claim_until = now + 10 s) and counts them unread,
 * and returns each with its target devices; each is pushed with its marker;
 * the lease is then cleared for the ones pushed.  A round that claimed a
 * full batch starts the next claim at once, while its own pushes are
 * still on their way (the lease keeps the two rounds' rows apart), so
 * PostgreSQL and Redis work side by side in a burst.  An instance killed
 * between the claim and the clear leaves its leases to run out, after
 * which another instance claims those rows again and pushes them again --
 * a no-op where the marker shows the first push happened.  So every due
 * notification is queued exactly once, by one instance, also across a
 * restart of every instance.  At most NS_SCHED_ROUNDS rounds per tick, and
 * a tick starts none while rounds of the last one are still out.
 *
 * Retention.  Every NS_RETENTION_EVERY cron ticks, while the setting is
 * not 0, one statement deletes up to NS_RETENTION_BATCH of the
 * notifications past it (any of them, not the oldest first: the BRIN index
 * on created_at finds them without a sort) under a transaction-level
 * advisory lock that only
 * one instance gets at a time (the others delete nothing that round), and
 * takes the unread ones out of their users' counts; a full batch is
 * followed by another, at most NS_RETENTION_ROUNDS per run.  It goes by
 * created_at alone (SPEC §9.6), so a notification scheduled further ahead
 * than the retention is deleted before its time and never delivered; one
 * being queued when it is deleted is queued all the same (the release then
 * finds no row).  Comments are another table and never touched.
 */
#include "ns_sched.h"

#include <json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ns_log.h"
#include "ns_notify_int.h"
#include "ns_queue.h"

#define NS_SCHED_TICK_MS 100
#define NS_SCHED_ROUND 2000
#define NS_SCHED_ROUNDS 10
#define NS_RETENTION_EVERY 5 /* cron ticks (1 s each) */
#define NS_RETENTION_BATCH 1000
#define NS_RETENTION_ROUNDS 10
#define NS_RETENTION_LOCK "7364020"

/* $1 round size.  Row: NCOLS, targets, unread right after this row (the
 * user's new count less this round's later rows of the user). */
static const char SQL_CLAIM[] =
    "WITH due AS (SELECT id AS did, status AS o_status FROM notifications"
    "  WHERE (status = 'scheduled' OR claim_until IS NOT NULL)"
    "  AND deliver_at <= now() AND (claim_until IS NULL OR claim_until < now())"
    "  ORDER BY deliver_at LIMIT $1::int FOR UPDATE SKIP LOCKED),"
    " upd AS (UPDATE notifications n SET status = 'queued',"
    "  claim_until = now() + interval '10 seconds' FROM due"
    "  WHERE n.id = due.did AND n.status <> 'canceled'"
    "  RETURNING n.*, (o_status = 'scheduled' AND NOT n.is_read"
    "   AND NOT n.is_dismissed)::int AS inc),"
    " cnt AS (INSERT INTO notification_counts AS c (user_id, unread)"
    "  SELECT user_id, sum(inc) FROM upd GROUP BY user_id ORDER BY user_id"
    "  ON CONFLICT (user_id) DO UPDATE SET unread = c.unread + excluded.unread"
    "  RETURNING user_id, unread),"
    " ranked AS (SELECT upd.*, sum(inc) OVER (PARTITION BY user_id"
    "  ORDER BY deliver_at DESC, id DESC ROWS BETWEEN UNBOUNDED PRECEDING"
    "  AND 1 PRECEDING) AS later FROM upd)"
    " SELECT " NS_NCOLS ", " NS_TARGETS("ranked.user_id", "ranked.source_device")
    ", (SELECT unread FROM cnt WHERE cnt.user_id = ranked.user_id)"
    "  - coalesce(later, 0)"
    " FROM ranked ORDER BY user_id, deliver_at, id";

static const char SQL_RELEASE[] =
    "UPDATE notifications SET claim_until = NULL"
    " WHERE id = ANY($1::uuid[]) AND status = 'queued'";

/* $1 retention ms, $2 batch. */
static const char SQL_RETENTION[] =
    "WITH lk AS MATERIALIZED (SELECT pg_try_advisory_xact_lock("
    NS_RETENTION_LOCK ") AS ok),"
    " del AS (DELETE FROM notifications WHERE id IN (SELECT id FROM"
    "  notifications WHERE created_at < now() - $1::bigint * interval"
    "  '1 millisecond' AND (SELECT ok FROM lk) LIMIT $2::int)"
    "  RETURNING user_id, (NOT is_read AND NOT is_dismissed"
    "   AND status = 'queued') AS u),"
    " cnt AS (INSERT INTO notification_counts AS c (user_id, unread)"
    "  SELECT user_id, -count(*) FROM del WHERE u GROUP BY user_id"
    "  ORDER BY user_id ON CONFLICT (user_id) DO UPDATE"
    "  SET unread = c.unread + excluded.unread)"
    " SELECT count(*) FROM del";

/* ---- scheduling ---- */

typedef struct round_op {
  ns_server *srv;
  int claimed;
  int waiting;
  json_object *done; /* ids pushed (or found pushed): their leases go */
} round_op;

typedef struct push_item {
  round_op *round;
  char id[37];
} push_item;

static void claim(ns_server *srv);

/* srv->sched_busy counts the rounds out (claiming or pushing). */
static void round_end(ns_server *srv) { srv->sched_busy--; }

static void on_released(PGresult *res, void *arg) {
  round_op *op = arg;
  if (!res || PQresultStatus(res) != PGRES_COMMAND_OK)
    ns_log(NS_LOG_WARN, "scheduler: lease release failed (%s); the leases run out",
           res ? PQresultErrorMessage(res) : "connection lost");
  round_end(op->srv);
  free(op);
}

static void round_finish(round_op *op) {
  ns_server *srv = op->srv;
  size_t i, n = json_object_array_length(op->done);
  if (n > 0 && srv->pg_ready) {
    /* a PostgreSQL array literal of UUIDs: {a,b,...} */
    size_t cap = n * 37 + 3, len = 0;
    char *arr = ns_xmalloc(cap);
    const char *params[1];
    arr[len++] = '{';
    for (i = 0; i < n; i++)
      len += (size_t)snprintf(arr + len, cap - len, "%s%s", i ? "," : "",
                              json_object_get_string(
                                  json_object_array_get_idx(op->done, i)));
    snprintf(arr + len, cap - len, "}");
    params[0] = arr;
    json_object_put(op->done);
    op->done = NULL;
    if (ns_pg_query_prepared(ns__pg(srv), "ns_sched_release", SQL_RELEASE, 1,
                             params, on_released, op) == 0) {
      free(arr);
      return;
    }
    free(arr);
  }
  if (op->done)
    json_object_put(op->done);
  round_end(srv);
  free(op);
}

static void on_cancel_applied(PGresult *res, void *arg) {
  ns_server *srv = arg;
  (void)srv;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK)
    ns_log(NS_LOG_WARN, "scheduler: storing a cancel failed (%s); its lease runs "
           "out and it is tried again",
           res ? PQresultErrorMessage(res) : "connection lost");
}

static void on_item_pushed(int rc, long long appended, void *arg) {
  push_item *it = arg;
  round_op *op = it->round;
  ns_server *srv = op->srv;
  (void)appended;
  if (rc == 0) {
    srv->metrics.sched_queued++;
    json_object_array_add(op->done, json_object_new_string(it->id));
  } else if (rc == NS_ECANCELED) {
    const char *params[1] = {it->id};
    srv->metrics.sched_canceled++;
    if (!srv->pg_ready ||
        ns_pg_query_prepared(ns__pg(srv), "ns_cancel", ns__sql_cancel, 1, params,
                             on_cancel_applied, srv) != 0)
      ns_log(NS_LOG_WARN, "scheduler: cannot store the cancel of %s now", it->id);
  }
  /* NS_EUNAVAIL: the lease runs out and the row is claimed again */
  free(it);
  if (--op->waiting == 0)
    round_finish(op);
}

static void on_claimed(PGresult *res, void *arg) {
  ns_server *srv = arg;
  round_op *op;
  int i, n;
  int64_t now = ns_now_ms(), worst = 0;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
    if (res)
      ns_log(NS_LOG_ERROR, "scheduler: %s", PQresultErrorMessage(res));
    round_end(srv);
    return;
  }
  n = PQntuples(res);
  /* a full round: the next claim goes out now, beside these pushes */
  if (n == NS_SCHED_ROUND && !srv->stopping &&
      ++srv->sched_rounds < NS_SCHED_ROUNDS)
    claim(srv);
  srv->metrics.sched_round_last = (uint64_t)n;
  op = ns_xcalloc(1, sizeof(*op));
  op->srv = srv;
  op->claimed = n;
  op->done = json_object_new_array();
  op->waiting = 1; /* released below, once every push is on its way */
  for (i = 0; i < n; i++) {
    const char *id = PQgetvalue(res, i, 0);
    const char *targets = PQgetvalue(res, i, NS_NCOLS_N);
    int64_t due = atoll(PQgetvalue(res, i, NS_C_DELIVER));
    push_item *it;
    json_object *data;
    ns_queue_opts qo;
    worst = NS_MAX(worst, now - due);
    if (!*targets) {
      srv->metrics.sched_queued++;
      json_object_array_add(op->done, json_object_new_string(id));
      continue;
    }
    it = ns_xcalloc(1, sizeof(*it));
    it->round = op;
    snprintf(it->id, sizeof(it->id), "%s", id);
    data = ns__notify_delivered_json(res, i, 0, NS_NCOLS_N + 1);
    ns__notify_row_opts(res, i, 0, &qo);
    op->waiting++;
    if (ns_queue_push(srv, PQgetvalue(res, i, 1), targets, "new_notification",
                      json_object_to_json_string_ext(
                          data, JSON_C_TO_STRING_PLAIN |
                                    JSON_C_TO_STRING_NOSLASHESCAPE),
                      &qo, on_item_pushed, it) != 0) {
      op->waiting--;
      free(it);
    }
    json_object_put(data);
  }
  if (n > 0)
    srv->metrics.sched_lag_s = (double)NS_MAX(worst, 0) / 1000.0;
  if (--op->waiting == 0)
    round_finish(op);
}

static void claim(ns_server *srv) {
  char limit[16];
  const char *params[1] = {limit};
  snprintf(limit, sizeof(limit), "%d", NS_SCHED_ROUND);
  srv->sched_busy++;
  if (!srv->pg_ready || !ns__server_redis_up(srv) ||
      ns_pg_query_prepared(ns__pg(srv), "ns_sched_claim", SQL_CLAIM, 1, params,
                           on_claimed, srv) != 0)
    round_end(srv);
}

static void on_tick(uv_timer_t *t) {
  ns_server *srv = t->data;
  if (srv->sched_busy > 0 || srv->stopping || !srv->pg_ready ||
      !ns__server_redis_up(srv))
    return;
  srv->sched_rounds = 0;
  claim(srv);
}

void ns_sched_start(ns_server *srv) {
  srv->metrics.sched_round_max = NS_SCHED_ROUND;
  uv_timer_init(&srv->loop, &srv->sched_timer);
  srv->sched_timer.data = srv;
  uv_timer_start(&srv->sched_timer, on_tick, NS_SCHED_TICK_MS, NS_SCHED_TICK_MS);
}

static void on_closed(uv_handle_t *h) { (void)h; }

void ns_sched_stop(ns_server *srv) {
  uv_close((uv_handle_t *)&srv->sched_timer, on_closed);
}

/* ---- retention ---- */

static void retention_round(ns_server *srv);

static void on_deleted(PGresult *res, void *arg) {
  ns_server *srv = arg;
  long long n;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
    if (res)
      ns_log(NS_LOG_ERROR, "retention: %s", PQresultErrorMessage(res));
    srv->ret_busy = 0;
    return;
  }
  n = atoll(PQgetvalue(res, 0, 0));
  srv->metrics.notif_expired += (uint64_t)n;
  if (n == NS_RETENTION_BATCH && !srv->stopping &&
      ++srv->ret_rounds < NS_RETENTION_ROUNDS) {
    retention_round(srv);
    return;
  }
  srv->ret_busy = 0;
}

static void retention_round(ns_server *srv) {
  char ms[24], batch[16];
  const char *params[2] = {ms, batch};
  snprintf(ms, sizeof(ms), "%lld", (long long)srv->cfg->notification_retention_ms);
  snprintf(batch, sizeof(batch), "%d", NS_RETENTION_BATCH);
  if (!srv->pg_ready ||
      ns_pg_query_prepared(ns__pg(srv), "ns_retention", SQL_RETENTION, 2, params,
                           on_deleted, srv) != 0)
    srv->ret_busy = 0;
}

void ns_sched_cron(ns_server *srv) {
  if (srv->cfg->notification_retention_ms <= 0 || srv->ret_busy ||
      srv->stopping || !srv->pg_ready ||
      ++srv->ret_ticks % NS_RETENTION_EVERY != 0)
    return;
  srv->ret_busy = 1;
  srv->ret_rounds = 0;
  retention_round(srv);
}
