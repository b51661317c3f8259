/*
 * ns_notify.c -- the notification pipeline's service logic (SPEC §5, §6):
 * producers (single and batch, idempotent on id), reads, and actions with
 * their notification_sync fan-out.
 *
 * Producer path: validate -> one INSERT for the whole request (gated so a
 * batch is all-or-nothing, returning each row and its target devices) ->
 * one enqueue script per notification, pipelined on the Redis connection
 * (XADD to every target's stream, PUBLISH u:{user}) -> 201.  PostgreSQL
 * commits before Redis is asked, and a retry with the same id re-runs the
 * enqueue, which the qd:{id} marker makes a no-op when it already happened.
 *
 * Query values, action bodies, X-Device-ID and the paths below
 * /api/v1/notifications are parsed by ns_rest.c (pure, fuzzed).
 */
#include <hiredis/hiredis.h>
#include <json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ns_http_int.h"
#include "ns_notify_int.h"
#include "ns_log.h"
#include "ns_notif.h"
#include "ns_queue.h"
#include "ns_rest.h"

/* One statement per request: the gate (an id of another user refuses the
 * whole request), the insert, the unread counts (SPEC §9.4: a queued
 * notification is unread; the count row's RETURNING is the exact value
 * after this statement, under its row lock), and per row its target
 * devices and the user's unread count right after that row: the user's
 * new count less the rows of this request that come after it. */
static const char SQL_INSERT[] =
    "WITH input AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS x("
    "  ord int, id uuid, user_id text, app_name text, title text, body text,"
    "  category text, priority smallint, source_device text, data jsonb,"
    "  url text, tags text[], collapse_key text, expires_ms bigint,"
    "  deliver_ms bigint)),"
    " clash AS (SELECT 1 FROM input i JOIN notifications n"
    "  ON n.id = i.id AND n.user_id <> i.user_id),"
    " ins AS (INSERT INTO notifications (id, user_id, app_name, title, body,"
    "  category, priority, source_device, data, url, tags, collapse_key,"
    "  expires_at, deliver_at, status, created_at)"
    "  SELECT id, user_id, app_name, title, body, category, priority,"
    "  source_device, data, url, coalesce(tags, '{}'), collapse_key,"
    "  to_timestamp(expires_ms / 1000.0), to_timestamp(deliver_ms / 1000.0),"
    "  CASE WHEN deliver_ms IS NULL THEN 'queued' ELSE 'scheduled' END,"
    "  clock_timestamp() FROM input"
    "  WHERE NOT EXISTS (SELECT 1 FROM clash) ORDER BY ord"
    "  ON CONFLICT (id) DO NOTHING RETURNING *),"
    " cnt AS (INSERT INTO notification_counts AS c (user_id, unread)"
    "  SELECT user_id, count(*) FILTER (WHERE status = 'queued') FROM ins"
    "  GROUP BY user_id ORDER BY user_id ON CONFLICT (user_id) DO UPDATE"
    "  SET unread = c.unread + excluded.unread RETURNING user_id, unread),"
    " rows AS (SELECT i.ord, true AS fresh, ins.* FROM input i"
    "  JOIN ins ON ins.id = i.id"
    "  UNION ALL SELECT i.ord, false, n.* FROM input i"
    "  JOIN notifications n ON n.id = i.id AND n.user_id = i.user_id"
    "  WHERE NOT EXISTS (SELECT 1 FROM ins WHERE ins.id = i.id)),"
    " ranked AS (SELECT rows.*, count(*) FILTER (WHERE fresh AND status ="
    "  'queued') OVER (PARTITION BY user_id ORDER BY ord DESC ROWS BETWEEN"
    "  UNBOUNDED PRECEDING AND 1 PRECEDING) AS later FROM rows)"
    " SELECT ord, fresh, " NS_NCOLS ", " NS_TARGETS("ranked.user_id",
                                              "ranked.source_device") ","
    " coalesce((SELECT unread FROM cnt WHERE cnt.user_id = ranked.user_id),"
    "  (SELECT unread FROM notification_counts k"
    "   WHERE k.user_id = ranked.user_id), 0) - coalesce(later, 0)"
    " FROM ranked ORDER BY ord";

/* ---- rows ---- */

/* The notification at `row`, columns from `col` in NS_NCOLS order. */
static json_object *row_json(const PGresult *res, int row, int col,
                             int with_user) {
  json_object *o = json_object_new_object();
  char ts[NS_TS_LEN];
#define NUL(i) PQgetisnull(res, row, col + (i))
#define VAL(i) PQgetvalue(res, row, col + (i))
#define STR(k, i)                                                          \
  json_object_object_add(o, k, NUL(i) ? NULL : json_object_new_string(VAL(i)))
#define TS(k, i)                                                           \
  do {                                                                     \
    if (NUL(i)) {                                                          \
      json_object_object_add(o, k, NULL);                                  \
    } else {                                                               \
      ns_format_ts(atoll(VAL(i)), ts);                                     \
      json_object_object_add(o, k, json_object_new_string(ts));            \
    }                                                                      \
  } while (0)
  STR("id", 0);
  if (with_user)
    STR("user_id", 1);
  STR("app_name", 2);
  STR("title", 3);
  STR("body", 4);
  STR("category", 5);
  json_object_object_add(o, "priority", json_object_new_int(atoi(VAL(6))));
  STR("source_device", 7);
  TS("created_at", 8);
  json_object_object_add(o, "is_read", json_object_new_boolean(VAL(9)[0] == 't'));
  json_object_object_add(o, "is_dismissed",
                         json_object_new_boolean(VAL(10)[0] == 't'));
  /* data and tags were validated JSON when stored (jsonb, text[]) */
  json_object_object_add(o, "data", NUL(11) ? NULL : json_tokener_parse(VAL(11)));
  STR("url", 12);
  json_object_object_add(o, "tags", NUL(13) ? json_object_new_array()
                                            : json_tokener_parse(VAL(13)));
  STR("collapse_key", 14);
  TS("expires_at", 15);
  TS("deliver_at", 16);
  STR("status", 17);
  json_object_object_add(o, "expired", json_object_new_boolean(VAL(18)[0] == 't'));
#undef TS
#undef STR
#undef VAL
#undef NUL
  return o;
}

static const char *json_text(json_object *o) {
  return json_object_to_json_string_ext(
      o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
}

/* ---- producers ---- */

typedef struct post_op {
  ns_req *r;
  int batch;
  int nrows;
  int waiting;     /* enqueue replies outstanding */
  int failed;
  int any_fresh;
  json_object *out; /* array of stored notifications, reply order */
} post_op;

static void post_finish(post_op *op) {
  ns_req *r = op->r;
  if (op->failed) {
    ns__http_reply_error(r, 503, "unavailable",
                         "stored but not yet queued: retry with the same id");
  } else if (op->batch) {
    json_object *o = json_object_new_object();
    json_object_object_add(o, "notifications", json_object_get(op->out));
    ns__http_reply_json(r, 201, o);
  } else {
    ns__http_reply_json(r, op->any_fresh ? 201 : 200,
                        json_object_get(json_object_array_get_idx(op->out, 0)));
  }
  json_object_put(op->out);
  free(op);
}

static void on_enqueued(int rc, long long appended, void *arg) {
  post_op *op = arg;
  (void)appended;
  if (rc != 0)
    op->failed = 1;
  if (--op->waiting == 0)
    post_finish(op);
}

/* Column offsets of SQL_INSERT's rows: ord, fresh, NS_NCOLS, targets, unread. */
#define I_ROW 2
#define I_TARGETS (I_ROW + NS_NCOLS_N)
#define I_UNREAD (I_TARGETS + 1)

/* The queueing options of the stored notification at (`row`, `col`). */
void ns__notify_row_opts(const PGresult *res, int row, int col,
                         ns_queue_opts *o) {
  memset(o, 0, sizeof(*o));
  o->marker = PQgetvalue(res, row, col);
  o->commit_ms = ns_now_ms();
  if (!PQgetisnull(res, row, col + NS_C_COLLAPSE))
    o->collapse_key = PQgetvalue(res, row, col + NS_C_COLLAPSE);
  if (!PQgetisnull(res, row, col + NS_C_EXPIRES)) {
    o->expires_ms = atoll(PQgetvalue(res, row, col + NS_C_EXPIRES));
    /* ttl 0: expires_at = created_at (SPEC §9.2) */
    o->live_only = o->expires_ms <= atoll(PQgetvalue(res, row, col + NS_C_CREATED));
  }
}

/* new_notification's data: the stored notification and the unread count
 * right after it (SPEC §9.4). */
json_object *ns__notify_delivered_json(const PGresult *res, int row, int col,
                                       int unread_col) {
  json_object *d = row_json(res, row, col, 0);
  json_object_object_add(d, "unread",
                         json_object_new_int64(atoll(PQgetvalue(res, row, unread_col))));
  return d;
}

static void on_inserted(PGresult *res, void *arg) {
  post_op *op = arg;
  int i, n;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
    if (res)
      ns_log(NS_LOG_ERROR, "notification insert: %s", PQresultErrorMessage(res));
    op->failed = 1;
    op->waiting = 1;
    on_enqueued(NS_EUNAVAIL, 0, op);
    return;
  }
  n = PQntuples(res);
  op->out = json_object_new_array();
  for (i = 0; i < n; i++) {
    json_object_array_add(op->out, row_json(res, i, I_ROW, 1));
  }
  if (n != op->nrows) {
    /* The gate refused the insert: an id belongs to another user. */
    json_object_put(op->out);
    ns__http_reply_error(op->r, 409, "conflict",
                         "a notification id is already used by another user");
    free(op);
    return;
  }
  op->waiting = 1; /* released below, after every push is on its way */
  for (i = 0; i < n; i++) {
    const char *targets = PQgetvalue(res, i, I_TARGETS);
    json_object *data;
    ns_queue_opts qo;
    if (PQgetvalue(res, i, 1)[0] == 't')
      op->any_fresh = 1;
    /* scheduled ones are queued by ns_sched at deliver_at; canceled never */
    if (!*targets || strcmp(PQgetvalue(res, i, I_ROW + NS_C_STATUS), "queued") != 0)
      continue;
    data = ns__notify_delivered_json(res, i, I_ROW, I_UNREAD);
    ns__notify_row_opts(res, i, I_ROW, &qo);
    op->waiting++;
    if (ns_queue_push(op->r->srv, PQgetvalue(res, i, I_ROW + 1), targets,
                      "new_notification", json_text(data), &qo, on_enqueued,
                      op) != 0) {
      op->waiting--;
      op->failed = 1;
    }
    json_object_put(data);
  }
  on_enqueued(0, 0, op);
}

static void reply_notif_err(ns_req *r, const ns_notif_err *err) {
  ns__http_reply_field_error(r, err->status,
                             err->status == 403 ? "forbidden" : "bad_request",
                             err->field, err->message);
}

/* Adds one validated notification to the PostgreSQL input array. */
static void add_input(json_object *arr, int ord, const ns_notif_in *n) {
  json_object *o = json_object_new_object();
  json_object_object_add(o, "ord", json_object_new_int(ord));
  json_object_object_add(o, "id", json_object_new_string(n->id));
  json_object_object_add(o, "user_id", json_object_new_string(n->user_id));
  json_object_object_add(o, "app_name", json_object_new_string(n->app_name));
  json_object_object_add(o, "title", json_object_new_string(n->title));
  json_object_object_add(o, "body", json_object_new_string(n->body));
  json_object_object_add(o, "category",
                         n->category ? json_object_new_string(n->category) : NULL);
  json_object_object_add(o, "priority", json_object_new_int(n->priority));
  json_object_object_add(o, "source_device",
                         n->source_device[0]
                             ? json_object_new_string(n->source_device)
                             : NULL);
  json_object_object_add(o, "data", n->data ? json_object_get(n->data) : NULL);
  json_object_object_add(o, "url", n->url ? json_object_new_string(n->url) : NULL);
  json_object_object_add(o, "tags", n->tags ? json_object_get(n->tags) : NULL);
  json_object_object_add(o, "collapse_key",
                         n->collapse_key ? json_object_new_string(n->collapse_key)
                                         : NULL);
  json_object_object_add(o, "expires_ms", n->expires_ms
                                              ? json_object_new_int64(n->expires_ms)
                                              : NULL);
  json_object_object_add(o, "deliver_ms", n->deliver_ms
                                              ? json_object_new_int64(n->deliver_ms)
                                              : NULL);
  json_object_array_add(arr, o);
}

/* Items refused only because a deliver_at or expires_at is no longer
 * ahead: a producer's retry of what it posted before (SPEC §9.3, §5.5)
 * when that id is stored for that user -- answered with the stored one --
 * or else a real 400. */
typedef struct late_op {
  ns_req *r;
  int batch;
  size_t n;                 /* items in the request */
  unsigned char *late;      /* n flags */
  ns_notif_err *err;        /* n errors (those of late items are set) */
  json_object *ids;         /* [{ord, id, user_id}] of the late items */
} late_op;

static void late_free(late_op *l) {
  if (!l)
    return;
  free(l->late);
  free(l->err);
  json_object_put(l->ids);
  free(l);
}

static void post_run(ns_req *r, int batch, const unsigned char *any_time);

/* Validates the items of a request into `input` (`any_time`: per item, 1
 * when its times are not checked against now, or NULL).  Returns 0; -1
 * after replying with the error; or 1 (not replied) with *late set when
 * items were refused only for a time no longer ahead. */
static int collect(ns_req *r, json_object *items, int batch, json_object *input,
                   const unsigned char *any_time, late_op **late) {
  size_t i, j, n = json_object_array_length(items);
  ns_notif_in *in = ns_xcalloc(n ? n : 1, sizeof(*in));
  ns_notif_err err;
  ns_notif_limits lim, lenient;
  char prefix[40] = "";
  lim.now_ms = ns_now_ms();
  lim.max_data_bytes = r->srv->cfg->max_data_bytes;
  lim.queue_ttl_ms = r->srv->cfg->queue_ttl_ms;
  lim.any_time = 0;
  lenient = lim;
  lenient.any_time = 1;
  *late = NULL;
  for (i = 0; i < n; i++) {
    if (batch)
      snprintf(prefix, sizeof(prefix), "notifications[%zu].", i);
    if (ns_notif_parse(json_object_array_get_idx(items, i), &r->who, prefix,
                       any_time && any_time[i] ? &lenient : &lim, &in[i],
                       &err) != 0) {
      json_object *o;
      if (!err.stale) {
        reply_notif_err(r, &err);
        late_free(*late);
        *late = NULL;
        free(in);
        return -1;
      }
      if (!*late) {
        *late = ns_xcalloc(1, sizeof(**late));
        (*late)->n = n;
        /* The items already taken as stored stay so: the set only grows
         * from one pass to the next, so a request runs at most n + 1
         * passes (two items whose times pass one after the other would
         * otherwise take turns being late for ever). */
        (*late)->late = ns_xcalloc(n, 1);
        if (any_time)
          memcpy((*late)->late, any_time, n);
        (*late)->err = ns_xcalloc(n, sizeof(ns_notif_err));
        (*late)->ids = json_object_new_array();
      }
      (*late)->late[i] = 1;
      (*late)->err[i] = err;
      o = json_object_new_object();
      json_object_object_add(o, "ord", json_object_new_int((int)i));
      json_object_object_add(o, "id", json_object_new_string(in[i].id));
      json_object_object_add(o, "user_id", json_object_new_string(in[i].user_id));
      json_object_array_add((*late)->ids, o);
    }
    for (j = 0; j < i; j++) {
      if (strcmp(in[j].id, in[i].id) == 0) {
        char field[48], msg[160];
        snprintf(field, sizeof(field), "notifications[%zu].id", i);
        snprintf(msg, sizeof(msg), "%s: duplicate id in the batch (as item %zu)",
                 field, j);
        ns__http_reply_field_error(r, 400, "bad_request", field, msg);
        late_free(*late);
        *late = NULL;
        free(in);
        return -1;
      }
    }
    if (!*late)
      add_input(input, (int)i, &in[i]);
  }
  free(in);
  return *late ? 1 : 0;
}

/* The first late item not stored (min ord), or NULL when all are. */
static void on_late_checked(PGresult *res, void *arg) {
  late_op *l = arg;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
    ns__http_unavailable(l->r);
  } else if (!PQgetisnull(res, 0, 0)) {
    size_t i = (size_t)atoi(PQgetvalue(res, 0, 0));
    reply_notif_err(l->r, &l->err[i < l->n ? i : 0]);
  } else if (!l->r->wsi) {
    ns__http_unavailable(l->r); /* the client is gone: frees the request */
  } else {
    l->r->pending = 0;
    post_run(l->r, l->batch, l->late); /* the same request, times as stored */
  }
  late_free(l);
}

static void late_check(ns_req *r, int batch, late_op *l) {
  static const char sql[] =
      "SELECT min(x.ord) FROM jsonb_to_recordset($1::jsonb) AS x(ord int,"
      " id uuid, user_id text) WHERE NOT EXISTS (SELECT 1 FROM notifications n"
      " WHERE n.id = x.id AND n.user_id = x.user_id)";
  const char *param = json_text(l->ids);
  l->r = r;
  l->batch = batch;
  r->pending = 1;
  if (!r->srv->pg_ready ||
      ns_pg_query(ns__pg(r->srv), sql, 1, &param, on_late_checked, l) != 0) {
    late_free(l);
    ns__http_unavailable(r);
  }
}

static void post(ns_req *r, int batch) { post_run(r, batch, NULL); }

static void post_run(ns_req *r, int batch, const unsigned char *any_time) {
  json_object *root = NULL, *items = NULL, *input;
  ns_proto_err perr;
  post_op *op;
  const char *param;
  late_op *late;
  int rc;
  if (!ns__http_need_token(r))
    return;
  if (ns_proto_parse_json(r->body ? r->body : "", r->body_len, &root, &perr) != 0) {
    ns__http_reply_error(r, 400, "bad_json", perr.message);
    return;
  }
  if (batch) {
    if (!json_object_is_type(root, json_type_object) ||
        !json_object_object_get_ex(root, "notifications", &items) ||
        !json_object_is_type(items, json_type_array) ||
        json_object_array_length(items) < 1 ||
        json_object_array_length(items) > NS_NOTIF_BATCH_MAX) {
      json_object_put(root);
      ns__http_reply_field_error(r, 400, "bad_request", "notifications",
                                 "notifications: must be an array of 1-500 objects");
      return;
    }
    json_object_get(items);
  } else {
    items = json_object_new_array();
    json_object_array_add(items, json_object_get(root));
  }
  input = json_object_new_array();
  if ((rc = collect(r, items, batch, input, any_time, &late)) != 0) {
    if (rc > 0)
      late_check(r, batch, late);
    json_object_put(input);
    json_object_put(items);
    json_object_put(root);
    return;
  }
  op = ns_xcalloc(1, sizeof(*op));
  op->r = r;
  op->batch = batch;
  op->nrows = (int)json_object_array_length(items);
  param = json_text(input);
  r->pending = 1;
  if (!r->srv->pg_ready || !ns__server_redis_up(r->srv) ||
      ns_pg_query_prepared(ns__pg(r->srv), "ns_insert", SQL_INSERT, 1,
                           &param, on_inserted, op) != 0) {
    free(op);
    ns__http_unavailable(r);
  }
  json_object_put(input);
  json_object_put(items);
  json_object_put(root);
}

/* ---- reads ---- */

static void on_list(PGresult *res, void *arg) {
  ns_req *r = arg;
  json_object *o, *arr;
  int i, n;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
    ns__http_unavailable(r);
    return;
  }
  n = PQntuples(res);
  o = json_object_new_object();
  arr = json_object_new_array();
  for (i = 0; i < n; i++)
    json_object_array_add(arr, row_json(res, i, 0, 1));
  json_object_object_add(o, "notifications", arr);
  if (n > 0 && n == atoi(PQgetvalue(res, 0, NS_NCOLS_N))) {
    /* The cursor keeps microseconds: created_at is stored that precisely,
     * and a millisecond cursor would repeat rows at a page boundary. */
    json_object_object_add(o, "next_before",
                           json_object_new_string(PQgetvalue(res, n - 1, NS_NCOLS_N + 1)));
  } else {
    json_object_object_add(o, "next_before", NULL);
  }
  ns__http_reply_json(r, 200, o);
}

static void list(ns_req *r) {
  static const char sql[] =
      "SELECT " NS_NCOLS ", $4::int, to_char(created_at AT TIME ZONE 'UTC',"
      " 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM notifications WHERE user_id = $1"
      " AND ($2 = '' OR created_at < $2::timestamptz)"
      " AND status = 'queued' AND ($3 = '0' OR NOT is_read)"
      " ORDER BY created_at DESC, id DESC LIMIT $4::int";
  char limit[16], before[64], lbuf[96], bbuf[96], ubuf[96];
  const char *params[4];
  ns_rest_list_query q;
  ns_rest_err err;
  if (!ns__http_need_token(r))
    return;
  if (ns_rest_parse_list_query(
          lws_get_urlarg_by_name(r->wsi, "limit=", lbuf, sizeof(lbuf)),
          lws_get_urlarg_by_name(r->wsi, "before=", bbuf, sizeof(bbuf)),
          lws_get_urlarg_by_name(r->wsi, "unread=", ubuf, sizeof(ubuf)), &q,
          &err) != 0) {
    ns__http_reply_bad(r, &err);
    return;
  }
  snprintf(limit, sizeof(limit), "%d", q.limit);
  /* The shape allows any number of fraction digits; a cursor over 63 bytes
   * is cut here (the ones we hand out are 27). */
  snprintf(before, sizeof(before), "%s", q.before);
  params[0] = r->who.sub;
  params[1] = before;
  params[2] = q.unread ? "1" : "0";
  params[3] = limit;
  r->pending = 1;
  if (!r->srv->pg_ready ||
      ns_pg_query(ns__pg(r->srv), sql, 4, params, on_list, r) != 0)
    ns__http_unavailable(r);
}

static void on_one(PGresult *res, void *arg) {
  ns_req *r = arg;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK)
    ns__http_unavailable(r);
  else if (PQntuples(res) == 0)
    ns__http_reply_error(r, 404, "not_found", "no such notification");
  else
    ns__http_reply_json(r, 200, row_json(res, 0, 0, 1));
}

/* `id_ok`: the path's id is a UUID (anything else is a 404 once the token
 * is checked). */
static void get_one(ns_req *r, const char *id, int id_ok) {
  static const char sql[] =
      "SELECT " NS_NCOLS " FROM notifications WHERE id = $1::uuid AND user_id = $2";
  const char *params[2] = {id, r->who.sub};
  if (!ns__http_need_token(r))
    return;
  if (!id_ok) {
    ns__http_reply_error(r, 404, "not_found", "no such notification");
    return;
  }
  r->pending = 1;
  if (!r->srv->pg_ready ||
      ns_pg_query(ns__pg(r->srv), sql, 2, params, on_one, r) != 0)
    ns__http_unavailable(r);
}

/* ---- actions ---- */

typedef struct action_op {
  ns_server *srv;
  ns_action_cb cb;
  void *arg;
  json_object *row;
  int waiting;
  int failed;
} action_op;

static void action_done(action_op *op) {
  if (--op->waiting > 0)
    return;
  op->cb(op->failed ? NS_EUNAVAIL : 0, op->row, op->arg);
  json_object_put(op->row);
  free(op);
}

static void on_sync_queued(int rc, long long appended, void *arg) {
  action_op *op = arg;
  (void)appended;
  if (rc != 0)
    op->failed = 1;
  action_done(op);
}

/* Columns of SQL_ACTION's row: NS_NCOLS, targets, source device, unread. */
#define A_TARGETS NS_NCOLS_N
#define A_SRC (NS_NCOLS_N + 1)
#define A_UNREAD (NS_NCOLS_N + 2)

static void on_updated(PGresult *res, void *arg) {
  action_op *op = arg;
  ns_server *srv = op->srv;
  json_object *sync;
  const char *user, *id, *targets, *src;
  ns_queue_opts qo;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) == 0) {
    op->cb(res && PQresultStatus(res) == PGRES_TUPLES_OK ? NS_ENOTFOUND
                                                         : NS_EUNAVAIL,
           NULL, op->arg);
    free(op);
    return;
  }
  op->row = row_json(res, 0, 0, 1);
  id = PQgetvalue(res, 0, 0);
  user = PQgetvalue(res, 0, 1);
  targets = PQgetvalue(res, 0, A_TARGETS);
  src = PQgetvalue(res, 0, A_SRC);
  op->waiting = 1;
  if (*targets) {
    sync = json_object_new_object();
    json_object_object_add(sync, "notification_id", json_object_new_string(id));
    json_object_object_add(sync, "is_read", json_object_new_boolean(
                                                PQgetvalue(res, 0, 9)[0] == 't'));
    json_object_object_add(sync, "is_dismissed",
                           json_object_new_boolean(PQgetvalue(res, 0, 10)[0] == 't'));
    json_object_object_add(sync, "source_device",
                           *src ? json_object_new_string(src) : NULL);
    json_object_object_add(sync, "unread",
                           json_object_new_int64(atoll(PQgetvalue(res, 0, A_UNREAD))));
    memset(&qo, 0, sizeof(qo));
    qo.commit_ms = ns_now_ms();
    op->waiting++;
    if (ns_queue_push(srv, user, targets, "notification_sync", json_text(sync),
                      &qo, on_sync_queued, op) != 0) {
      op->waiting--;
      op->failed = 1;
    }
    json_object_put(sync);
  }
  action_done(op);
}

/* One notification's action and the unread count under the count row's
 * lock: the count moves by what this update changed (old vs new state). */
static const char SQL_ACTION[] =
    "WITH old AS (SELECT id AS oid, is_read AS o_read, is_dismissed AS o_dis,"
    "  status AS o_status FROM notifications WHERE id = $1::uuid"
    "  AND user_id = $2 FOR UPDATE),"
    " upd AS (UPDATE notifications n SET"
    "  is_read = CASE $3 WHEN 'read' THEN true WHEN 'unread' THEN false"
    "   ELSE is_read END,"
    "  read_at = CASE $3 WHEN 'read' THEN coalesce(read_at, now())"
    "   WHEN 'unread' THEN NULL ELSE read_at END,"
    "  is_dismissed = is_dismissed OR $3 = 'dismiss',"
    "  dismissed_at = CASE WHEN $3 = 'dismiss' THEN coalesce(dismissed_at,"
    "   now()) ELSE dismissed_at END,"
    "  updated_at = now()"
    "  FROM old WHERE n.id = old.oid"
    "  RETURNING n.*, (NOT o_read AND NOT o_dis AND o_status = 'queued')::int"
    "   - (NOT n.is_read AND NOT n.is_dismissed AND n.status = 'queued')::int"
    "   AS dec),"
    " cnt AS (INSERT INTO notification_counts AS c (user_id, unread)"
    "  SELECT user_id, -dec FROM upd ON CONFLICT (user_id) DO UPDATE"
    "  SET unread = c.unread + excluded.unread RETURNING unread)"
    " SELECT " NS_NCOLS ", " NS_TARGETS("$2", "nullif($4, '')") ", $4,"
    " (SELECT unread FROM cnt) FROM upd";

int ns_notify_action(ns_server *srv, const char *user, const char *id,
                     ns_action action, const char *source_device,
                     ns_action_cb cb, void *arg) {
  const char *params[4];
  action_op *op;
  if (!srv->pg_ready || !ns__server_redis_up(srv))
    return NS_EUNAVAIL;
  if (!ns_proto_valid_uuid(id, strlen(id))) {
    cb(NS_ENOTFOUND, NULL, arg);
    return 0;
  }
  params[0] = id;
  params[1] = user;
  params[2] = ns_action_name(action);
  params[3] = source_device ? source_device : "";
  op = ns_xcalloc(1, sizeof(*op));
  op->srv = srv;
  op->cb = cb;
  op->arg = arg;
  if (ns_pg_query_prepared(ns__pg(srv), "ns_action", SQL_ACTION, 4, params,
                           on_updated, op) != 0) {
    free(op);
    return NS_EUNAVAIL;
  }
  return 0;
}

/* ---- bulk actions (SPEC §9.5) ---- */

/* Every delivered notification of the user that the action changes (up to
 * `before`'s created_at), locked in id order so that two bulk actions of a
 * user cannot deadlock; one UPDATE; the count moves by the rows that were
 * unread: for read those not dismissed, for dismiss those not read.
 * Row: before found (0 or 1), updated, unread, targets. */
static const char SQL_BULK[] =
    "WITH b AS (SELECT created_at FROM notifications WHERE user_id = $1"
    "  AND $3 <> '' AND id = nullif($3, '')::uuid),"
    " sel AS (SELECT id FROM notifications WHERE user_id = $1"
    "  AND status = 'queued'"
    "  AND ($3 = '' OR created_at <= (SELECT created_at FROM b))"
    "  AND CASE $2 WHEN 'read' THEN NOT is_read ELSE NOT is_dismissed END"
    "  ORDER BY id FOR UPDATE),"
    " upd AS (UPDATE notifications n SET"
    "  is_read = is_read OR $2 = 'read',"
    "  read_at = CASE WHEN $2 = 'read' THEN coalesce(read_at, now())"
    "   ELSE read_at END,"
    "  is_dismissed = is_dismissed OR $2 = 'dismiss',"
    "  dismissed_at = CASE WHEN $2 = 'dismiss' THEN coalesce(dismissed_at,"
    "   now()) ELSE dismissed_at END,"
    "  updated_at = now()"
    "  FROM sel WHERE n.id = sel.id"
    "  RETURNING CASE $2 WHEN 'read' THEN NOT n.is_dismissed"
    "   ELSE NOT n.is_read END AS was_unread),"
    " cnt AS (INSERT INTO notification_counts AS c (user_id, unread)"
    "  SELECT $1, -count(*) FILTER (WHERE was_unread) FROM upd"
    "  ON CONFLICT (user_id) DO UPDATE SET unread = c.unread + excluded.unread"
    "  RETURNING unread)"
    " SELECT (SELECT count(*) FROM b), (SELECT count(*) FROM upd),"
    " (SELECT unread FROM cnt), " NS_TARGETS("$1", "nullif($4, '')");

typedef struct bulk_op {
  ns_bulk_cb cb;
  void *arg;
  ns_server *srv;
  long long updated, unread;
  ns_action action;
  char before[37];
  char source[NS_DEVICE_ID_MAX + 1];
  char user[NS_SUB_MAX + 1];
} bulk_op;

static void on_bulk_synced(int rc, long long appended, void *arg) {
  bulk_op *op = arg;
  (void)appended;
  op->cb(rc == 0 ? 0 : NS_EUNAVAIL, op->updated, op->unread, op->arg);
  free(op);
}


static void on_bulk_updated(PGresult *res, void *arg) {
  bulk_op *op = arg;
  bulk_op *q = op;
  json_object *sync;
  const char *targets;
  ns_queue_opts qo;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
    if (res && PQresultStatus(res) != PGRES_TUPLES_OK)
      ns_log(NS_LOG_ERROR, "bulk action: %s", PQresultErrorMessage(res));
    op->cb(NS_EUNAVAIL, 0, 0, op->arg);
    free(op);
    return;
  }
  if (q->before[0] && atoi(PQgetvalue(res, 0, 0)) == 0) {
    op->cb(NS_ENOTFOUND, 0, 0, op->arg);
    free(op);
    return;
  }
  op->updated = atoll(PQgetvalue(res, 0, 1));
  op->unread = atoll(PQgetvalue(res, 0, 2));
  targets = PQgetvalue(res, 0, 3);
  if (!*targets) {
    on_bulk_synced(0, 0, op);
    return;
  }
  sync = json_object_new_object();
  json_object_object_add(sync, "all", json_object_new_boolean(1));
  json_object_object_add(sync, "action",
                         json_object_new_string(ns_action_name(q->action)));
  json_object_object_add(sync, "before", q->before[0]
                                             ? json_object_new_string(q->before)
                                             : NULL);
  json_object_object_add(sync, "updated", json_object_new_int64(op->updated));
  json_object_object_add(sync, "unread", json_object_new_int64(op->unread));
  json_object_object_add(sync, "source_device",
                         q->source[0] ? json_object_new_string(q->source) : NULL);
  memset(&qo, 0, sizeof(qo));
  qo.commit_ms = ns_now_ms();
  if (ns_queue_push(op->srv, q->user, targets, "notification_sync",
                    json_text(sync), &qo, on_bulk_synced, op) != 0)
    on_bulk_synced(NS_EUNAVAIL, 0, op);
  json_object_put(sync);
}

int ns_notify_bulk(ns_server *srv, const char *user, ns_action action,
                   const char *before, const char *source_device,
                   ns_bulk_cb cb, void *arg) {
  const char *params[4];
  bulk_op *op, *q;
  if (!srv->pg_ready || !ns__server_redis_up(srv))
    return NS_EUNAVAIL;
  if (action != NS_ACTION_READ && action != NS_ACTION_DISMISS)
    return NS_EINVAL;
  op = q = ns_xcalloc(1, sizeof(*op));
  op->cb = cb;
  op->arg = arg;
  op->srv = srv;
  q->action = action;
  snprintf(q->before, sizeof(q->before), "%s", before ? before : "");
  snprintf(q->source, sizeof(q->source), "%s", source_device ? source_device : "");
  snprintf(q->user, sizeof(q->user), "%s", user);
  params[0] = user;
  params[1] = ns_action_name(action);
  params[2] = q->before;
  params[3] = q->source;
  if (ns_pg_query_prepared(ns__pg(srv), "ns_bulk", SQL_BULK, 4, params,
                           on_bulk_updated, op) != 0) {
    free(op);
    return NS_EUNAVAIL;
  }
  return 0;
}

static void on_rest_action(int rc, json_object *row, void *arg) {
  ns_req *r = arg;
  if (rc == 0)
    ns__http_reply_json(r, 200, json_object_get(row));
  else if (rc == NS_ENOTFOUND)
    ns__http_reply_error(r, 404, "not_found", "no such notification");
  else
    ns__http_unavailable(r);
}

/* The optional X-Device-ID of an action: 1 when absent or valid, else
 * answers 400 and returns 0. */
static int device_header_ok(ns_req *r) {
  ns_rest_err err;
  if (ns_rest_check_device_header(r->device_hdr, strlen(r->device_hdr), &err) != 0) {
    ns__http_reply_bad(r, &err);
    return 0;
  }
  if (r->device_hdr_too_long) {
    ns__http_reply_field_error(r, 400, "bad_request", "X-Device-ID",
                               "X-Device-ID: not a device_id");
    return 0;
  }
  return 1;
}

static void rest_action(ns_req *r, const char *id) {
  ns_action action;
  ns_rest_err err;
  if (!ns__http_need_token(r))
    return;
  if (ns_rest_parse_action(r->body, r->body_len, &action, &err) != 0) {
    ns__http_reply_bad(r, &err);
    return;
  }
  if (!device_header_ok(r))
    return;
  r->pending = 1;
  if (ns_notify_action(r->srv, r->who.sub, id, action, r->device_hdr,
                       on_rest_action, r) != 0)
    ns__http_unavailable(r);
}

static void on_rest_bulk(int rc, long long updated, long long unread, void *arg) {
  ns_req *r = arg;
  json_object *o;
  if (rc == NS_ENOTFOUND) {
    ns__http_reply_field_error(r, 404, "not_found", "before",
                               "before: no such notification");
    return;
  }
  if (rc != 0) {
    ns__http_unavailable(r);
    return;
  }
  o = json_object_new_object();
  json_object_object_add(o, "updated", json_object_new_int64(updated));
  json_object_object_add(o, "unread", json_object_new_int64(unread));
  ns__http_reply_json(r, 200, o);
}

/* POST /api/v1/notifications/actions (SPEC §9.5). */
static void rest_bulk(ns_req *r) {
  ns_action action;
  ns_rest_err err;
  char before[37];
  if (!ns__http_need_token(r))
    return;
  if (ns_rest_parse_bulk_action(r->body, r->body_len, &action, before, &err) != 0) {
    ns__http_reply_bad(r, &err);
    return;
  }
  if (!device_header_ok(r))
    return;
  r->pending = 1;
  if (ns_notify_bulk(r->srv, r->who.sub, action, before, r->device_hdr,
                     on_rest_bulk, r) != 0)
    ns__http_unavailable(r);
}

/* ---- unread count (SPEC §9.4) ---- */

static void on_unread(PGresult *res, void *arg) {
  ns_req *r = arg;
  json_object *o;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
    ns__http_unavailable(r);
    return;
  }
  o = json_object_new_object();
  json_object_object_add(o, "unread",
                         json_object_new_int64(atoll(PQgetvalue(res, 0, 0))));
  ns__http_reply_json(r, 200, o);
}

static void unread_count(ns_req *r) {
  static const char sql[] =
      "SELECT coalesce((SELECT unread FROM notification_counts"
      " WHERE user_id = $1), 0)";
  const char *params[1] = {r->who.sub};
  if (!ns__http_need_token(r))
    return;
  r->pending = 1;
  if (!r->srv->pg_ready ||
      ns_pg_query_prepared(ns__pg(r->srv), "ns_unread", sql, 1, params,
                           on_unread, r) != 0)
    ns__http_unavailable(r);
}

/* ---- cancel (SPEC §9.3) ---- */

/* Marks a notification canceled (also one whose queueing an instance has
 * claimed but not finished: the Redis marker decided) and takes it out of
 * the unread count if it was counted.  $1 id.  Returns NS_NCOLS. */
const char ns__sql_cancel[] =
    "WITH old AS (SELECT id AS oid, status AS o_status, is_read AS o_read,"
    "  is_dismissed AS o_dis FROM notifications WHERE id = $1::uuid"
    "  FOR UPDATE),"
    " upd AS (UPDATE notifications n SET status = 'canceled',"
    "  claim_until = NULL, updated_at = now() FROM old WHERE n.id = old.oid"
    "  RETURNING n.*, (o_status = 'queued' AND NOT o_read AND NOT o_dis)::int"
    "  AS dec),"
    " cnt AS (UPDATE notification_counts c SET unread = c.unread - upd.dec"
    "  FROM upd WHERE c.user_id = upd.user_id AND upd.dec > 0)"
    " SELECT " NS_NCOLS " FROM upd";

typedef struct cancel_req {
  ns_req *r;
  char id[37];
} cancel_req;

static void on_cancel_stored(PGresult *res, void *arg) {
  cancel_req *q = arg;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
    ns__http_unavailable(q->r);
  else
    ns__http_reply_json(q->r, 200, row_json(res, 0, 0, 1));
  free(q);
}

static void on_cancel_marked(int rc, void *arg) {
  cancel_req *q = arg;
  const char *params[1] = {q->id};
  if (rc == NS_ELIMIT) {
    ns__http_reply_error(q->r, 409, "not_scheduled",
                         "the notification was already queued");
  } else if (rc != 0 || !q->r->srv->pg_ready ||
             ns_pg_query_prepared(ns__pg(q->r->srv), "ns_cancel", ns__sql_cancel,
                                  1, params, on_cancel_stored, q) != 0) {
    ns__http_unavailable(q->r);
  } else {
    return;
  }
  free(q);
}

/* Columns of the cancel lookup: NS_NCOLS, queueing claimed, deliver_at ms. */
static void on_cancel_found(PGresult *res, void *arg) {
  cancel_req *q = arg;
  ns_server *srv = q->r->srv;
  const char *status;
  int claimed;
  int64_t ttl_s;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
    ns__http_unavailable(q->r);
    free(q);
    return;
  }
  if (PQntuples(res) == 0) {
    ns__http_reply_error(q->r, 404, "not_found", "no such notification");
    free(q);
    return;
  }
  status = PQgetvalue(res, 0, NS_C_STATUS);
  claimed = PQgetvalue(res, 0, NS_NCOLS_N)[0] == 't';
  if (strcmp(status, "canceled") == 0) {
    ns__http_reply_json(q->r, 200, row_json(res, 0, 0, 1));
    free(q);
    return;
  }
  if (strcmp(status, "scheduled") != 0 && !claimed) {
    ns__http_reply_error(q->r, 409, "not_scheduled",
                         "the notification was already queued");
    free(q);
    return;
  }
  /* Redis decides between this cancel and the scheduler's queueing: the
   * first to set the marker wins.  The cancel marker outlives the due time
   * by queue_ttl, as a queued marker would. */
  ttl_s = (NS_MAX(atoll(PQgetvalue(res, 0, NS_NCOLS_N + 1)) - ns_now_ms(), 0) +
           srv->cfg->queue_ttl_ms) / 1000;
  if (ns_queue_cancel(srv, PQgetvalue(res, 0, 1), q->id, ttl_s,
                      on_cancel_marked, q) != 0) {
    ns__http_unavailable(q->r);
    free(q);
  }
}

/* DELETE /api/v1/notifications/{id}: the owner, or a service token. */
static void cancel(ns_req *r, const char *id, int id_ok) {
  static const char sql[] =
      "SELECT " NS_NCOLS ", claim_until IS NOT NULL,"
      " coalesce((extract(epoch FROM deliver_at) * 1000)::bigint, 0)"
      " FROM notifications WHERE id = $1::uuid AND ($2 = '' OR user_id = $2)";
  const char *params[2];
  cancel_req *q;
  if (!ns__http_need_token(r))
    return;
  if (!id_ok) {
    ns__http_reply_error(r, 404, "not_found", "no such notification");
    return;
  }
  if (!r->srv->pg_ready || !ns__server_redis_up(r->srv)) {
    r->pending = 1;
    ns__http_unavailable(r);
    return;
  }
  q = ns_xcalloc(1, sizeof(*q));
  q->r = r;
  ns_proto_uuid_lower(q->id, id, strnlen(id, 36));
  params[0] = q->id;
  params[1] = r->who.is_service ? "" : r->who.sub;
  r->pending = 1;
  if (ns_pg_query(ns__pg(r->srv), sql, 2, params, on_cancel_found, q) != 0) {
    free(q);
    ns__http_unavailable(r);
  }
}

/* ---- routing below /api/v1/notifications ---- */

void ns__notify_root(ns_req *r, const char *arg) {
  (void)arg;
  if (r->method == M_POST)
    post(r, 0);
  else
    list(r);
}

void ns__notify_sub(ns_req *r, const char *rest) {
  ns_rest_npath path;
  ns_rest_parse_notif_path(rest, strlen(rest), &path);
  switch (path.kind) {
  case NS_REST_NPATH_BATCH:
    if (r->method == M_POST)
      post(r, 1);
    else
      ns__http_reply_error(r, 405, "method_not_allowed", "method not allowed");
    return;
  case NS_REST_NPATH_ONE:
    if (r->method == M_GET)
      get_one(r, path.id, path.id_ok);
    else if (r->method == M_DELETE)
      cancel(r, path.id, path.id_ok);
    else
      ns__http_reply_error(r, 405, "method_not_allowed", "method not allowed");
    return;
  case NS_REST_NPATH_BULK:
    if (r->method == M_POST)
      rest_bulk(r);
    else
      ns__http_reply_error(r, 405, "method_not_allowed", "method not allowed");
    return;
  case NS_REST_NPATH_UNREAD:
    if (r->method == M_GET)
      unread_count(r);
    else
      ns__http_reply_error(r, 405, "method_not_allowed", "method not allowed");
    return;
  case NS_REST_NPATH_ACTIONS:
    /* id need not be a UUID: ns_notify_action answers 404 for those */
    if (r->method == M_POST)
      rest_action(r, path.id);
    else
      ns__http_reply_error(r, 405, "method_not_allowed", "method not allowed");
    return;
  case NS_REST_NPATH_NONE:
  default:
    ns__http_reply_error(r, 404, "not_found", "no such route");
    return;
  }
}
