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
#include "ns_log.h"
#include "ns_notif.h"
#include "ns_queue.h"
#include "ns_rest.h"

#define NCOLS                                                              \
  "id, user_id, app_name, title, body, category, priority, source_device, " \
  "(extract(epoch FROM created_at) * 1000)::bigint, is_read, is_dismissed"

static const char SQL_INSERT[] =
    "WITH input AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS x("
    "  ord int, id uuid, user_id text, app_name text, title text, body text,"
    "  category text, priority smallint, source_device text)),"
    " clash AS (SELECT 1 FROM input i JOIN notifications n"
    "  ON n.id = i.id AND n.user_id <> i.user_id),"
    " ins AS (INSERT INTO notifications (id, user_id, app_name, title, body,"
    "  category, priority, source_device, created_at)"
    "  SELECT id, user_id, app_name, title, body, category, priority,"
    "  source_device, clock_timestamp() FROM input"
    "  WHERE NOT EXISTS (SELECT 1 FROM clash) ORDER BY ord"
    "  ON CONFLICT (id) DO NOTHING RETURNING *),"
    " rows AS (SELECT i.ord, true AS fresh, ins.* FROM input i"
    "  JOIN ins ON ins.id = i.id"
    "  UNION ALL SELECT i.ord, false, n.* FROM input i"
    "  JOIN notifications n ON n.id = i.id AND n.user_id = i.user_id"
    "  WHERE NOT EXISTS (SELECT 1 FROM ins WHERE ins.id = i.id))"
    " SELECT ord, fresh, " NCOLS ", coalesce((SELECT string_agg(d.device_id,"
    "  ',' ORDER BY d.device_id) FROM devices d WHERE d.user_id = rows.user_id"
    "  AND d.device_id IS DISTINCT FROM rows.source_device), '')"
    " FROM rows ORDER BY ord";

/* ---- rows ---- */

/* The notification at `row`, columns from `col` in NCOLS order. */
static json_object *row_json(const PGresult *res, int row, int col,
                             int with_user) {
  json_object *o = json_object_new_object();
  char ts[NS_TS_LEN];
#define STR(k, i)                                                          \
  json_object_object_add(o, k,                                             \
                         PQgetisnull(res, row, col + (i))                  \
                             ? NULL                                        \
                             : json_object_new_string(                     \
                                   PQgetvalue(res, row, col + (i))))
  STR("id", 0);
  if (with_user)
    STR("user_id", 1);
  STR("app_name", 2);
  STR("title", 3);
  STR("body", 4);
  STR("category", 5);
  json_object_object_add(o, "priority",
                         json_object_new_int(atoi(PQgetvalue(res, row, col + 6))));
  STR("source_device", 7);
#undef STR
  ns_format_ts(atoll(PQgetvalue(res, row, col + 8)), ts);
  json_object_object_add(o, "created_at", json_object_new_string(ts));
  json_object_object_add(
      o, "is_read", json_object_new_boolean(PQgetvalue(res, row, col + 9)[0] == 't'));
  json_object_object_add(
      o, "is_dismissed",
      json_object_new_boolean(PQgetvalue(res, row, col + 10)[0] == 't'));
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
    json_object_array_add(op->out, row_json(res, i, 2, 1));
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
    const char *targets = PQgetvalue(res, i, 13);
    json_object *data;
    long long commit = ns_now_ms();
    if (PQgetvalue(res, i, 1)[0] == 't')
      op->any_fresh = 1;
    if (!*targets)
      continue;
    data = row_json(res, i, 2, 0);
    op->waiting++;
    if (ns_queue_push(op->r->srv, PQgetvalue(res, i, 3), targets,
                      "new_notification", json_text(data), PQgetvalue(res, i, 2),
                      commit, on_enqueued, op) != 0) {
      op->waiting--;
      op->failed = 1;
    }
    json_object_put(data);
  }
  on_enqueued(0, 0, op);
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
  json_object_array_add(arr, o);
}

/* Validates the items of a request into `input`; replies on error. */
static int collect(ns_req *r, json_object *items, int batch, json_object *input) {
  size_t i, j, n = json_object_array_length(items);
  ns_notif_in *in = ns_xcalloc(n ? n : 1, sizeof(*in));
  ns_notif_err err;
  ns_notif_limits lim;
  char prefix[40] = "";
  lim.now_ms = ns_now_ms();
  lim.max_data_bytes = r->srv->cfg->max_data_bytes;
  lim.queue_ttl_ms = r->srv->cfg->queue_ttl_ms;
  for (i = 0; i < n; i++) {
    if (batch)
      snprintf(prefix, sizeof(prefix), "notifications[%zu].", i);
    if (ns_notif_parse(json_object_array_get_idx(items, i), &r->who, prefix,
                       &lim, &in[i], &err) != 0) {
      json_object *o = json_object_new_object(), *e = json_object_new_object();
      json_object_object_add(e, "code", json_object_new_string(
                                            err.status == 403 ? "forbidden" : "bad_request"));
      json_object_object_add(e, "message", json_object_new_string(err.message));
      json_object_object_add(e, "field", json_object_new_string(err.field));
      json_object_object_add(o, "error", e);
      ns__http_reply_json(r, err.status, o);
      free(in);
      return -1;
    }
    for (j = 0; j < i; j++) {
      if (strcmp(in[j].id, in[i].id) == 0) {
        char field[48], msg[160];
        snprintf(field, sizeof(field), "notifications[%zu].id", i);
        snprintf(msg, sizeof(msg), "%s: duplicate id in the batch (as item %zu)",
                 field, j);
        ns__http_reply_field_error(r, 400, "bad_request", field, msg);
        free(in);
        return -1;
      }
    }
    add_input(input, (int)i, &in[i]);
  }
  free(in);
  return 0;
}

static void post(ns_req *r, int batch) {
  json_object *root = NULL, *items = NULL, *input;
  ns_proto_err perr;
  post_op *op;
  const char *param;
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
      ns__http_reply_error(r, 400, "bad_request",
                           "notifications: must be an array of 1-500 objects");
      return;
    }
    json_object_get(items);
  } else {
    items = json_object_new_array();
    json_object_array_add(items, json_object_get(root));
  }
  input = json_object_new_array();
  if (collect(r, items, batch, input) != 0) {
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
  if (n > 0 && n == atoi(PQgetvalue(res, 0, 11))) {
    /* The cursor keeps microseconds: created_at is stored that precisely,
     * and a millisecond cursor would repeat rows at a page boundary. */
    json_object_object_add(o, "next_before",
                           json_object_new_string(PQgetvalue(res, n - 1, 12)));
  } else {
    json_object_object_add(o, "next_before", NULL);
  }
  ns__http_reply_json(r, 200, o);
}

static void list(ns_req *r) {
  static const char sql[] =
      "SELECT " NCOLS ", $4::int, to_char(created_at AT TIME ZONE 'UTC',"
      " 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM notifications WHERE user_id = $1"
      " AND ($2 = '' OR created_at < $2::timestamptz)"
      " AND ($3 = '0' OR NOT is_read)"
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
      "SELECT " NCOLS " FROM notifications WHERE id = $1::uuid AND user_id = $2";
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

static void on_status_cached(redisReply *reply, void *arg) {
  action_op *op = arg;
  if (!reply)
    op->failed = 1;
  action_done(op);
}

static void on_updated(PGresult *res, void *arg) {
  action_op *op = arg;
  ns_server *srv = op->srv;
  json_object *sync;
  char key[128], ttl[24];
  const char *user, *id, *targets, *src;
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
  targets = PQgetvalue(res, 0, 11);
  src = PQgetvalue(res, 0, 12);
  op->waiting = 1;
  ns__key(srv, key, sizeof(key), "notif:%s", id);
  snprintf(ttl, sizeof(ttl), "%lld", (long long)(srv->cfg->queue_ttl_ms / 1000));
  if (ns_redis_cmd(srv->redis, NULL, NULL, "HSET %s is_read %s is_dismissed %s",
                   key, PQgetvalue(res, 0, 9)[0] == 't' ? "1" : "0",
                   PQgetvalue(res, 0, 10)[0] == 't' ? "1" : "0") != 0 ||
      ns_redis_cmd(srv->redis, on_status_cached, op, "EXPIRE %s %s", key, ttl) != 0)
    op->failed = 1;
  else
    op->waiting++;
  if (*targets) {
    sync = json_object_new_object();
    json_object_object_add(sync, "notification_id", json_object_new_string(id));
    json_object_object_add(sync, "is_read", json_object_new_boolean(
                                                PQgetvalue(res, 0, 9)[0] == 't'));
    json_object_object_add(sync, "is_dismissed",
                           json_object_new_boolean(PQgetvalue(res, 0, 10)[0] == 't'));
    json_object_object_add(sync, "source_device",
                           *src ? json_object_new_string(src) : NULL);
    op->waiting++;
    if (ns_queue_push(srv, user, targets, "notification_sync", json_text(sync),
                      NULL, ns_now_ms(), on_sync_queued, op) != 0) {
      op->waiting--;
      op->failed = 1;
    }
    json_object_put(sync);
  }
  action_done(op);
}

int ns_notify_action(ns_server *srv, const char *user, const char *id,
                     ns_action action, const char *source_device,
                     ns_action_cb cb, void *arg) {
  static const char sql[] =
      "UPDATE notifications SET"
      " is_read = CASE $3 WHEN 'read' THEN true WHEN 'unread' THEN false"
      "  ELSE is_read END,"
      " read_at = CASE $3 WHEN 'read' THEN coalesce(read_at, now())"
      "  WHEN 'unread' THEN NULL ELSE read_at END,"
      " is_dismissed = is_dismissed OR $3 = 'dismiss',"
      " dismissed_at = CASE WHEN $3 = 'dismiss' THEN coalesce(dismissed_at,"
      "  now()) ELSE dismissed_at END,"
      " updated_at = now()"
      " WHERE id = $1::uuid AND user_id = $2"
      " RETURNING " NCOLS ", coalesce((SELECT string_agg(d.device_id, ','"
      "  ORDER BY d.device_id) FROM devices d WHERE d.user_id = $2"
      "  AND d.device_id IS DISTINCT FROM nullif($4, '')), ''), $4";
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
  if (ns_pg_query(ns__pg(srv), sql, 4, params, on_updated, op) != 0) {
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

static void rest_action(ns_req *r, const char *id) {
  ns_action action;
  ns_rest_err err;
  if (!ns__http_need_token(r))
    return;
  if (ns_rest_parse_action(r->body, r->body_len, &action, &err) != 0 ||
      ns_rest_check_device_header(r->device_hdr, strlen(r->device_hdr), &err) != 0) {
    ns__http_reply_bad(r, &err);
    return;
  }
  if (r->device_hdr_too_long) {
    ns__http_reply_field_error(r, 400, "bad_request", "X-Device-ID",
                               "X-Device-ID: not a device_id");
    return;
  }
  r->pending = 1;
  if (ns_notify_action(r->srv, r->who.sub, id, action, r->device_hdr,
                       on_rest_action, r) != 0)
    ns__http_unavailable(r);
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
