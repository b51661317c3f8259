/*
 * ns_comments.c -- the public comment channel (SPEC §2, §4, §6): comments
 * REST under /api/v1/notes/{id}/comments (and its aliases), the broadcast
 * API, `subscribe` snapshots, and the fan-out of the `bcast` channel to
 * every WebSocket of this instance.
 *
 * Events go through Redis (`bcast`) even with one instance, so every
 * instance fans out the same events in the same order.  The payload is
 * {"type":T,"data":D}; each instance appends its timestamp once and shares
 * the one buffer with all its connections.
 *
 * Request bodies and paths are parsed by ns_rest.c (pure, fuzzed); this
 * file only maps its results to replies and storage.
 *
 * A comment event whose PUBLISH fails (Redis down, or the connection lost
 * before Redis answered) does not fail the request that caused it: the
 * write is in PostgreSQL.  The event waits instead in a bounded retry
 * queue, oldest first, and is published again when Redis is back and
 * this instance's SUBSCRIBE of bcast is in effect again
 * (ns_comments_on_redis_state, the bus's resubscribed handler), or at the
 * next comment event while Redis is up.  While events wait, new
 * ones queue behind them, so a note's events keep their order.  Past
 * NS_COMMENTS_RETRY_MAX_EVENTS / _BYTES the oldest are dropped and counted
 * as lost.  Delivery is at least once: an event whose connection failed
 * after Redis had taken it is published twice (clients dedupe by comment
 * id).  POST /api/v1/broadcast does not use the queue: its producer is
 * answered 503 instead.
 */
#include <hiredis/hiredis.h>
#include <json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ns_comments.h"
#include "ns_http_int.h"
#include "ns_log.h"
#include "ns_notif.h"
#include "ns_rest.h"

#define CCOLS                                                            \
  "id, content, username, user_id, post_id,"                             \
  " (extract(epoch FROM created_at) * 1000)::bigint,"                    \
  " (extract(epoch FROM updated_at) * 1000)::bigint"

/* ---- fan-out ---- */

static void on_bcast_check(uv_check_t *h) {
  ns_server *srv = h->data;
  uv_check_stop(h);
  ns_comments_flush(srv);
}

void ns_comments_on_bcast(ns_server *srv, const char *payload, size_t len) {
  char ts[NS_TS_LEN], *buf;
  size_t n;
  ns_msg *m;
  json_object *root, *type;
  json_tokener *tok;
  const char *tname = "broadcast";
  if (len < 2 || payload[len - 1] != '}')
    return;
  tok = json_tokener_new();
  root = json_tokener_parse_ex(tok, payload, (int)len);
  json_tokener_free(tok);
  if (root && json_object_object_get_ex(root, "type", &type)) {
    const char *t = json_object_get_string(type);
    /* metric labels come from a fixed set, not from the broadcaster */
    tname = strcmp(t, "comment.created") == 0   ? "comment.created"
            : strcmp(t, "comment.updated") == 0 ? "comment.updated"
            : strcmp(t, "comments.list") == 0   ? "comments.list"
                                                : "broadcast";
  }
  json_object_put(root);
  ns_format_ts(ns_now_ms(), ts);
  n = len - 1 + sizeof(",\"timestamp\":\"\"}") - 1 + strlen(ts);
  buf = malloc(LWS_PRE + n + 1);
  if (!buf)
    return;
  memcpy(buf + LWS_PRE, payload, len - 1);
  snprintf(buf + LWS_PRE + len - 1, n - len + 2, ",\"timestamp\":\"%s\"}", ts);
  m = ns_msg_wrap(buf, n, tname);
  if (!m)
    return;
  /* Fanned out at the end of this loop iteration, with every other event
   * that arrived in the same read (ns_comments_flush). */
  if (srv->bcast_n == NS_BCAST_BATCH_MAX)
    ns_comments_flush(srv);
  srv->bcast_pending[srv->bcast_n++] = m;
  if (!uv_is_active((uv_handle_t *)&srv->bcast_check))
    uv_check_start(&srv->bcast_check, on_bcast_check);
}

static void fan_out(ns_server *srv, ns_msg *m) {
  ns_conn *c;
  for (c = srv->conns; c; c = c->next)
    if (c->state == NS_CONN_READY)
      ns_conn_send(c, m);
}

/* Broadcasts that arrived together go to each connection together: a run
 * of events of one type becomes one message of pre-framed WebSocket frames
 * (ns_msg_frames), so a connection takes them in one send() instead of one
 * each.  A connection with something queued keeps it behind that. */
void ns_comments_flush(ns_server *srv) {
  size_t i = 0, j, k, n = srv->bcast_n;
  srv->bcast_n = 0;
  while (i < n) {
    ns_msg *m;
    for (j = i + 1; j < n && srv->bcast_pending[j]->type ==
                                 srv->bcast_pending[i]->type; j++)
      ;
    m = j - i > 1 ? ns_msg_frames(srv->bcast_pending + i, j - i,
                                  srv->bcast_pending[i]->type)
                  : NULL;
    if (m) {
      fan_out(srv, m);
      ns_msg_unref(&m);
    } else {
      for (k = i; k < j; k++)
        fan_out(srv, srv->bcast_pending[k]);
    }
    for (; i < j; i++)
      ns_msg_unref(&srv->bcast_pending[i]);
  }
}

/* Serializes {"type":type,"data":data} (takes `data`); returns a new
 * reference whose string is the payload. */
static json_object *envelope(const char *type, json_object *data) {
  json_object *o = json_object_new_object();
  json_object_object_add(o, "type", json_object_new_string(type));
  json_object_object_add(o, "data", data ? data : json_object_new_object());
  return o;
}

static const char *payload_of(json_object *o, size_t *len) {
  const char *s = json_object_to_json_string_ext(
      o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
  *len = strlen(s);
  return s;
}

/* Publishes {"type":type,"data":data} on bcast, fire and forget (takes
 * `data`): the broadcast API, whose caller answers 503 on failure.  0 or
 * NS_EUNAVAIL. */
static int publish(ns_server *srv, const char *type, json_object *data) {
  json_object *o = envelope(type, data);
  char ch[96];
  size_t len;
  const char *s = payload_of(o, &len);
  int rc;
  ns__key(srv, ch, sizeof(ch), "bcast");
  rc = ns_redis_cmd(srv->redis, NULL, NULL, "PUBLISH %s %b", ch, s, len);
  json_object_put(o);
  return rc;
}

/* ---- comment events: publish, or keep for a retry ---- */

/* The retry queue of one server, oldest first (srv->comment_rq, made at
 * the first comment event).  It holds at most NS_COMMENTS_RETRY_MAX_EVENTS
 * events and _BYTES payload bytes, counting those being re-published
 * (`inflight`). */
typedef struct ns_comment_rq {
  struct retry_ev *head, *tail;
  size_t n, bytes;          /* queued + inflight */
  size_t inflight;          /* re-published, reply not yet in */
  int resub_pending;        /* the subscriber reconnected, bus not re-SUBSCRIBEd */
  uint64_t deferred, retried, lost;
} ns_comment_rq;

/* One event's payload, owned by the retry queue while it waits and by the
 * PUBLISH's callback while Redis has it. */
typedef struct retry_ev {
  struct retry_ev *next;
  ns_comment_rq *q;
  unsigned retry : 1; /* published again from the queue */
  size_t len;
  char payload[];     /* {"type","data"}, not NUL-terminated */
} retry_ev;

static ns_comment_rq *rq_of(ns_server *srv) {
  if (!srv->comment_rq)
    srv->comment_rq = ns_xcalloc(1, sizeof(*srv->comment_rq));
  return srv->comment_rq;
}

void ns_comments_free(ns_server *srv) {
  ns_comment_rq *q = srv->comment_rq;
  retry_ev *e, *next;
  if (!q)
    return;
  for (e = q->head; e; e = next) {
    next = e->next;
    free(e);
  }
  free(q);
  srv->comment_rq = NULL;
}

static void retry_now(ns_server *srv);

static void rq_drop(retry_ev *e, const char *why) {
  ns_comment_rq *q = e->q;
  q->lost++;
  ns_log(NS_LOG_WARN, "comment event lost (%s): %llu lost so far", why,
         (unsigned long long)q->lost);
  free(e);
}

/* Appends `e` (takes it); drops the oldest while over either bound. */
static void rq_push(retry_ev *e) {
  ns_comment_rq *q = e->q;
  e->next = NULL;
  if (q->tail)
    q->tail->next = e;
  else
    q->head = e;
  q->tail = e;
  q->n++;
  q->bytes += e->len;
  while (q->head && (q->n > NS_COMMENTS_RETRY_MAX_EVENTS ||
                     q->bytes > NS_COMMENTS_RETRY_MAX_BYTES)) {
    retry_ev *old = q->head;
    q->head = old->next;
    if (!q->head)
      q->tail = NULL;
    q->n--;
    q->bytes -= old->len;
    rq_drop(old, "retry queue full");
  }
}

static void on_event_published(struct redisReply *reply, void *arg) {
  retry_ev *e = arg;
  ns_comment_rq *q = e->q;
  if (e->retry) {
    q->inflight--;
    q->n--;
    q->bytes -= e->len;
  }
  if (!reply) { /* the connection failed: Redis may or may not have it */
    q->deferred++;
    e->retry = 0;
    rq_push(e);
  } else if (reply->type == REDIS_REPLY_ERROR) {
    rq_drop(e, "redis error reply");
  } else {
    if (e->retry)
      q->retried++;
    free(e);
  }
}

static int send_event(ns_server *srv, retry_ev *e) {
  char ch[96];
  ns__key(srv, ch, sizeof(ch), "bcast");
  return ns_redis_cmd(srv->redis, on_event_published, e, "PUBLISH %s %b", ch,
                      e->payload, e->len);
}

/* Re-publishes the queued events, oldest first, until one is refused
 * (Redis down again, or at its in-flight bound): that one and the rest
 * stay queued. */
static void rq_drain(ns_server *srv) {
  ns_comment_rq *q = rq_of(srv);
  while (q->head) {
    retry_ev *e = q->head;
    e->retry = 1;
    if (send_event(srv, e) != 0) {
      e->retry = 0;
      return;
    }
    q->head = e->next;
    if (!q->head)
      q->tail = NULL;
    q->inflight++;
  }
}

/* Publishes a comment event on bcast (takes `data`).  Never fails the
 * caller: an event that cannot be published now waits in the retry queue,
 * or is counted lost (no memory, or the queue's bounds). */
static void publish_event(ns_server *srv, const char *type, json_object *data) {
  ns_comment_rq *q = rq_of(srv);
  json_object *o = envelope(type, data);
  size_t len;
  const char *s = payload_of(o, &len);
  retry_ev *e = malloc(sizeof(*e) + len); /* sized by the comment */
  if (!e) {
    json_object_put(o);
    q->lost++;
    return;
  }
  e->next = NULL;
  e->q = q;
  e->retry = 0;
  e->len = len;
  memcpy(e->payload, s, len);
  json_object_put(o);
  retry_now(srv);
  if (q->head || send_event(srv, e) != 0) { /* behind the older ones */
    q->deferred++;
    ns_log(NS_LOG_WARN, "%s not broadcast (redis down): kept for a retry, "
                        "%zu waiting", type, q->n + 1);
    rq_push(e);
  }
}

/* Re-publishes the waiting events when they can reach every subscriber of
 * bcast, this instance's own included: Redis up, and no re-subscription
 * of the bus under way (a PUBLISH before this instance's SUBSCRIBE is in
 * effect would miss its own WebSockets). */
static void retry_now(ns_server *srv) {
  ns_comment_rq *q = rq_of(srv);
  if (q->head && !q->resub_pending && ns__server_redis_up(srv)) {
    ns_log(NS_LOG_INFO, "redis up: re-publishing %zu comment event(s)",
           q->n - q->inflight);
    rq_drain(srv);
  }
}

void ns_comments_on_redis_state(ns_server *srv, int up, int sub_reconnected) {
  ns_comment_rq *q = rq_of(srv);
  if (sub_reconnected)
    q->resub_pending = 1; /* until the bus's resubscribed handler runs */
  else if (up)
    retry_now(srv);
}

/* The bus's resubscribed handler: bcast is subscribed again. */
static void on_resubscribed(ns_server *srv) {
  rq_of(srv)->resub_pending = 0;
  retry_now(srv);
}

void ns_comments_retry_stats(const ns_server *srv, ns_comments_retry *out) {
  static const ns_comment_rq none;
  const ns_comment_rq *q = srv->comment_rq ? srv->comment_rq : &none;
  out->pending = q->n;
  out->pending_bytes = q->bytes;
  out->deferred = q->deferred;
  out->retried = q->retried;
  out->lost = q->lost;
}

/* ---- rows ---- */

static json_object *comment_json(const PGresult *res, int row, int col) {
  json_object *o = json_object_new_object();
  char ts[NS_TS_LEN];
  json_object_object_add(o, "id", json_object_new_string(PQgetvalue(res, row, col)));
  json_object_object_add(o, "content",
                         json_object_new_string(PQgetvalue(res, row, col + 1)));
  json_object_object_add(o, "username",
                         json_object_new_string(PQgetvalue(res, row, col + 2)));
  json_object_object_add(o, "userId",
                         json_object_new_string(PQgetvalue(res, row, col + 3)));
  ns_format_ts(atoll(PQgetvalue(res, row, col + 5)), ts);
  json_object_object_add(o, "createdAt", json_object_new_string(ts));
  ns_format_ts(atoll(PQgetvalue(res, row, col + 6)), ts);
  json_object_object_add(o, "updatedAt", json_object_new_string(ts));
  json_object_object_add(o, "postId",
                         json_object_new_string(PQgetvalue(res, row, col + 4)));
  return o;
}

static json_object *list_json(const PGresult *res, const char *post_id) {
  json_object *o = json_object_new_object(), *arr = json_object_new_array();
  int i, n = PQntuples(res);
  for (i = 0; i < n; i++)
    json_object_array_add(arr, comment_json(res, i, 0));
  json_object_object_add(o, "postId", json_object_new_string(post_id));
  json_object_object_add(o, "comments", arr);
  json_object_object_add(o, "count", json_object_new_int(n));
  return o;
}

static const char SQL_LIST[] =
    "SELECT " CCOLS " FROM comments WHERE post_id = $1"
    " ORDER BY created_at, id";

/* ---- snapshots (subscribe, GET, after edits) ---- */

typedef struct snap_op {
  ns_comments_cb cb;
  void *arg;
  char post_id[NS_POST_ID_MAX + 1];
} snap_op;

static void on_snapshot(PGresult *res, void *arg) {
  snap_op *op = arg;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
    op->cb(NS_EUNAVAIL, NULL, op->arg);
  } else {
    json_object *l = list_json(res, op->post_id);
    op->cb(0, l, op->arg);
    json_object_put(l);
  }
  free(op);
}

int ns_comments_snapshot(ns_server *srv, const char *post_id, ns_comments_cb cb,
                         void *arg) {
  snap_op *op;
  const char *params[1] = {post_id};
  if (!srv->pg_ready)
    return NS_EUNAVAIL;
  op = ns_xcalloc(1, sizeof(*op));
  op->cb = cb;
  op->arg = arg;
  snprintf(op->post_id, sizeof(op->post_id), "%s", post_id);
  if (ns_pg_query(ns__pg(srv), SQL_LIST, 1, params, on_snapshot, op) != 0) {
    free(op);
    return NS_EUNAVAIL;
  }
  return 0;
}

/* ---- REST ---- */

typedef struct cm_op {
  ns_req *r;
  char post_id[NS_POST_ID_MAX + 1];
  char comment_id[NS_REST_PIECE_MAX + 1];
  int is_delete;
} cm_op;

/* Reads {"content"} from the body into *body; replies 400 and returns -1 on
 * error.  On success the caller puts body->root. */
static int read_content(ns_req *r, ns_rest_comment *body) {
  ns_rest_err err;
  if (ns_rest_parse_comment(r->body, r->body_len, body, &err) == 0)
    return 0;
  ns__http_reply_bad(r, &err);
  return -1;
}

static void on_created(PGresult *res, void *arg) {
  cm_op *op = arg;
  ns_req *r = op->r;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
    ns__http_unavailable(r);
  } else {
    json_object *c = comment_json(res, 0, 0), *ev = json_object_new_object();
    json_object_object_add(ev, "postId", json_object_new_string(op->post_id));
    json_object_object_add(ev, "comment", json_object_get(c));
    publish_event(r->srv, "comment.created", ev);
    ns__http_reply_json(r, 201, c);
  }
  free(op);
}

static void create(ns_req *r, const char *post_id) {
  static const char sql[] =
      "INSERT INTO comments (id, post_id, user_id, username, content)"
      " VALUES ($1::uuid, $2, $3, $4, $5) RETURNING " CCOLS;
  ns_rest_comment body;
  const char *params[5];
  cm_op *op;
  if (!ns__http_need_token(r))
    return;
  if (read_content(r, &body) != 0)
    return;
  op = ns_xcalloc(1, sizeof(*op));
  op->r = r;
  snprintf(op->post_id, sizeof(op->post_id), "%s", post_id);
  ns_notif_uuid(op->comment_id);
  params[0] = op->comment_id;
  params[1] = post_id;
  params[2] = r->who.sub;
  params[3] = r->who.name[0] ? r->who.name : r->who.sub;
  params[4] = body.content;
  r->pending = 1;
  if (!r->srv->pg_ready ||
      ns_pg_query(ns__pg(r->srv), sql, 5, params, on_created, op) != 0) {
    free(op);
    ns__http_unavailable(r);
  }
  json_object_put(body.root);
}

static void on_list_reply(int rc, json_object *l, void *arg) {
  ns_req *r = arg;
  if (rc != 0)
    ns__http_unavailable(r);
  else
    ns__http_reply_json(r, 200, json_object_get(l));
}

static void on_list_broadcast(int rc, json_object *l, void *arg) {
  ns_server *srv = arg;
  if (rc == 0)
    publish_event(srv, "comments.list", json_object_get(l));
}

/* After an edit: comment.updated, then the fresh list, in that order. */
static void after_edit(ns_server *srv, const char *post_id, const char *cid,
                       int deleted) {
  json_object *ev = json_object_new_object();
  json_object_object_add(ev, "postId", json_object_new_string(post_id));
  json_object_object_add(ev, "commentId", json_object_new_string(cid));
  json_object_object_add(ev, "action",
                         json_object_new_string(deleted ? "deleted" : "updated"));
  publish_event(srv, "comment.updated", ev);
  ns_comments_snapshot(srv, post_id, on_list_broadcast, srv);
}

static void on_edited(PGresult *res, void *arg) {
  cm_op *op = arg;
  ns_req *r = op->r;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
    ns__http_unavailable(r);
  } else if (PQgetisnull(res, 0, 0)) {
    ns__http_reply_error(r, 404, "not_found", "no such comment");
  } else if (PQgetisnull(res, 0, 1)) {
    ns__http_reply_error(r, 403, "forbidden", "only the author may change a comment");
  } else {
    after_edit(r->srv, op->post_id, op->comment_id, op->is_delete);
    if (op->is_delete)
      ns__http_reply_empty(r, 204);
    else
      ns__http_reply_json(r, 200, comment_json(res, 0, 1));
  }
  free(op);
}

/* `cid_ok`: the path's comment id is a UUID (anything else is a 404 once
 * the token is checked). */
static void edit(ns_req *r, const char *post_id, const char *cid, int cid_ok,
                 int is_delete) {
  static const char sql_put[] =
      "WITH c AS (SELECT user_id FROM comments WHERE id = $1::uuid AND post_id = $2),"
      " u AS (UPDATE comments SET content = $4, updated_at = now()"
      "  WHERE id = $1::uuid AND post_id = $2 AND user_id = $3 RETURNING " CCOLS ")"
      " SELECT (SELECT user_id FROM c), u.* FROM (SELECT 1) one LEFT JOIN u ON true";
  static const char sql_del[] =
      "WITH c AS (SELECT user_id FROM comments WHERE id = $1::uuid AND post_id = $2),"
      " u AS (DELETE FROM comments"
      "  WHERE id = $1::uuid AND post_id = $2 AND user_id = $3 RETURNING " CCOLS ")"
      " SELECT (SELECT user_id FROM c), u.* FROM (SELECT 1) one LEFT JOIN u ON true";
  ns_rest_comment body = {NULL, "", 0};
  const char *params[4];
  cm_op *op;
  if (!ns__http_need_token(r))
    return;
  if (!cid_ok) {
    ns__http_reply_error(r, 404, "not_found", "no such comment");
    return;
  }
  if (!is_delete && read_content(r, &body) != 0)
    return;
  op = ns_xcalloc(1, sizeof(*op));
  op->r = r;
  op->is_delete = is_delete;
  snprintf(op->post_id, sizeof(op->post_id), "%s", post_id);
  snprintf(op->comment_id, sizeof(op->comment_id), "%s", cid);
  params[0] = cid;
  params[1] = post_id;
  params[2] = r->who.sub;
  params[3] = body.content;
  r->pending = 1;
  if (!r->srv->pg_ready ||
      ns_pg_query(ns__pg(r->srv), is_delete ? sql_del : sql_put, is_delete ? 3 : 4,
                  params, on_edited, op) != 0) {
    free(op);
    ns__http_unavailable(r);
  }
  json_object_put(body.root);
}

/* rest = "{post}/comments" or "{post}/comments/{cid}" */
void ns__comments_route(ns_req *r, const char *rest) {
  ns_rest_cpath path;
  ns_rest_parse_comments_path(rest, strlen(rest), &path);
  switch (path.kind) {
  case NS_REST_CPATH_LIST:
    if (r->method == M_POST) {
      create(r, path.post_id);
    } else if (r->method == M_GET) {
      r->pending = 1;
      if (ns_comments_snapshot(r->srv, path.post_id, on_list_reply, r) != 0)
        ns__http_unavailable(r);
    } else {
      ns__http_reply_error(r, 405, "method_not_allowed", "method not allowed");
    }
    return;
  case NS_REST_CPATH_ITEM:
    if (r->method == M_PUT || r->method == M_DELETE)
      edit(r, path.post_id, path.comment_id, path.comment_id_ok,
           r->method == M_DELETE);
    else
      ns__http_reply_error(r, 405, "method_not_allowed", "method not allowed");
    return;
  case NS_REST_CPATH_NO_ITEM:
    ns__http_reply_error(r, 404, "not_found", "no such comment");
    return;
  case NS_REST_CPATH_NONE:
  default:
    ns__http_reply_error(r, 404, "not_found", "no such route");
    return;
  }
}

/* ---- POST /api/v1/broadcast ---- */

static void on_bcast_total(int rc, long long total, void *arg) {
  ns_req *r = arg;
  json_object *o = json_object_new_object();
  json_object_object_add(
      o, "connectionCount",
      json_object_new_int64(rc == 0 ? total : (long long)r->srv->nconns));
  ns__http_reply_json(r, 202, o);
}

void ns__broadcast_route(ns_req *r, const char *arg) {
  ns_rest_broadcast b;
  ns_rest_err err;
  (void)arg;
  if (!ns__http_need_token(r))
    return;
  if (!r->who.is_service) {
    ns__http_reply_error(r, 403, "forbidden", "broadcast needs a service token");
    return;
  }
  if (ns_rest_parse_broadcast(r->body, r->body_len, &b, &err) != 0) {
    ns__http_reply_bad(r, &err);
    return;
  }
  if (!ns__server_redis_up(r->srv) ||
      publish(r->srv, b.type, b.data ? json_object_get(b.data) : NULL) != 0) {
    json_object_put(b.root);
    ns__http_unavailable(r);
    return;
  }
  json_object_put(b.root);
  r->pending = 1;
  if (ns_liveness_total(r->srv, on_bcast_total, r) != 0)
    on_bcast_total(NS_EUNAVAIL, 0, r);
}

void ns_comments_bus_register(ns_bus *b) {
  ns_bus_on_broadcast(b, ns_comments_on_bcast);
  if (ns_bus_on_resubscribed(b, on_resubscribed) != 0)
    ns_log(NS_LOG_ERROR, "comments: no room for a resubscribed handler; "
                         "waiting comment events are retried with the next");
}
