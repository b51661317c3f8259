/*
 * ns_http.c -- the REST half of the lws protocol callback (SPEC §6):
 * request assembly with a bounded body, routing, token checks, and replies
 * written in two HTTP_WRITEABLE passes (headers, then body).
 *
 * A handler either replies at once or starts a Redis/PostgreSQL operation
 * and replies from its completion.  If the client goes away meanwhile,
 * CLOSED_HTTP clears req->wsi and the completion frees the request.
 */
#include <json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ns_comments.h"
#include "ns_http_int.h"
#include "ns_log.h"
#include "ns_rest.h"

typedef void (*route_fn)(ns_req *r, const char *arg);

typedef struct route {
  const char *path;       /* exact, or prefix when ending in '/' */
  int methods;
  route_fn fn;
} route;

static ns_server *srv_of(struct lws *wsi) {
  return lws_context_user(lws_get_context(wsi));
}

void ns__http_req_free(ns_req *r) {
  r->srv->http_reqs--;
  if (r->body)
    r->srv->http_body_bytes -= r->body_max + 1;
  free(r->body);
  free(r->resp);
  free(r);
}

/* Sets the response (takes ownership of `body`) and wakes the writer. */
void ns__http_reply_raw(ns_req *r, int status, char *body, size_t len,
                      const char *ctype) {
  char st[8];
  r->pending = 0;
  if (!r->wsi) {
    free(body);
    ns__http_req_free(r);
    return;
  }
  snprintf(st, sizeof(st), "%d", status);
  ns_metrics_inc(&r->srv->metrics, NS_M_HTTP, st);
  r->status = status;
  free(r->resp);
  r->resp = body;
  r->resp_len = len;
  r->ctype = ctype;
  lws_callback_on_writable(r->wsi);
}

void ns__http_reply_json(ns_req *r, int status, json_object *o) {
  const char *s = json_object_to_json_string_ext(
      o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
  size_t len = strlen(s);
  ns__http_reply_raw(r, status, ns_xstrndup(s, len), len, "application/json");
  json_object_put(o);
}

void ns__http_reply_field_error(ns_req *r, int status, const char *code,
                                const char *field, const char *msg) {
  json_object *o = json_object_new_object(), *e = json_object_new_object();
  json_object_object_add(e, "code", json_object_new_string(code));
  json_object_object_add(e, "message", json_object_new_string(msg));
  if (field && *field)
    json_object_object_add(e, "field", json_object_new_string(field));
  json_object_object_add(o, "error", e);
  ns__http_reply_json(r, status, o);
}

void ns__http_reply_error(ns_req *r, int status, const char *code,
                          const char *msg) {
  ns__http_reply_field_error(r, status, code, NULL, msg);
}

void ns__http_reply_bad(ns_req *r, const ns_rest_err *err) {
  ns__http_reply_field_error(r, 400, err->code, err->field, err->message);
}

void ns__http_reply_empty(ns_req *r, int status) {
  ns__http_reply_raw(r, status, NULL, 0, "application/json");
}

void ns__http_add_ts(json_object *o, const char *key, int64_t ms) {
  char ts[NS_TS_LEN];
  ns_format_ts(ms, ts);
  json_object_object_add(o, key, json_object_new_string(ts));
}

/* Requires a valid token; replies 401 and returns 0 otherwise. */
int ns__http_need_token(ns_req *r) {
  if (r->auth_rc == 0)
    return 1;
  ns__http_reply_error(r, 401, "unauthorized",
              r->auth_rc == 1          ? "missing token"
              : r->auth_rc == NS_EEXPIRED ? "token expired"
                                          : "invalid token");
  return 0;
}

void ns__http_unavailable(ns_req *r) {
  ns__http_reply_error(r, 503, "unavailable", "storage backend unavailable");
}

/* ---- handlers ---- */

static void h_health(ns_req *r, const char *arg) {
  ns_server *srv = r->srv;
  int rup = ns__server_redis_up(srv), pup = srv->pg_ready > 0;
  json_object *o = json_object_new_object();
  json_object_object_add(o, "status",
                         json_object_new_string(rup && pup ? "ok" : "degraded"));
  json_object_object_add(o, "redis", json_object_new_string(rup ? "up" : "down"));
  json_object_object_add(o, "postgres",
                         json_object_new_string(pup ? "up" : "down"));
  json_object_object_add(o, "connections",
                         json_object_new_int64((int64_t)srv->nconns));
  json_object_object_add(
      o, "uptime_s", json_object_new_int64((ns_now_ms() - srv->start_ms) / 1000));
  json_object_object_add(o, "version", json_object_new_string(NS_VERSION));
  json_object_object_add(o, "instance_id",
                         json_object_new_string(srv->instance_id));
  ns__http_reply_json(r, rup && pup ? 200 : 503, o);
}

static void comment_retry_gauges(const ns_server *srv, ns_metrics_gauges *g) {
  ns_comments_retry cr;
  ns_comments_retry_stats(srv, &cr);
  g->cev_pending = cr.pending;
  g->cev_pending_bytes = cr.pending_bytes;
  g->cev_pending_limit = NS_COMMENTS_RETRY_MAX_EVENTS;
  g->cev_pending_bytes_limit = NS_COMMENTS_RETRY_MAX_BYTES;
  g->cev_deferred = cr.deferred;
  g->cev_retried = cr.retried;
  g->cev_lost = cr.lost;
}

static void h_metrics(ns_req *r, const char *arg) {
  ns_server *srv = r->srv;
  ns_metrics_gauges g = {0};
  size_t len;
  char *text;
  int i;
  g.connections = srv->nconns;
  g.device_connections = ns_hub_conn_count(srv->hub);
  g.users = ns_hub_user_count(srv->hub);
  g.outbound_bytes = srv->outbound_bytes;
  g.inbound_bytes = srv->inbound_bytes;
  g.http_body_bytes = srv->http_body_bytes;
  g.redis_inflight = ns_redis_inflight(srv->redis);
  g.redis_inflight_limit = NS_REDIS_MAX_INFLIGHT;
  g.redis_overloads = ns_redis_overloads(srv->redis);
  ns_redis_redirects(srv->redis, g.redis_redirects);
  g.pg_queued_limit = (uint64_t)NS_PG_POOL * NS_PG_MAX_QUEUED;
  for (i = 0; i < NS_PG_POOL; i++) {
    g.pg_queued += ns_pg_load(srv->pg[i]);
    g.pg_overloads += ns_pg_overloads(srv->pg[i]);
  }
  g.reg_waiting = srv->reg_waiting;
  ns_presence_seen_stats(srv, &g.seen_waiting, &g.seen_waiting_limit,
                         &g.seen_dropped);
  g.ip_entries = ns_iplimit_size(srv->iplimit);
  g.ip_entries_limit = NS_IPLIMIT_ENTRIES;
  comment_retry_gauges(srv, &g);
  g.redis_up = ns__server_redis_up(srv);
  g.postgres_up = srv->pg_ready > 0;
  g.uptime_s = (ns_now_ms() - srv->start_ms) / 1000;
  text = ns_metrics_render(&srv->metrics, &g, &len);
  ns__http_reply_raw(r, 200, text, len, "text/plain; version=0.0.4");
}

static void on_stats_total(int rc, long long total, void *arg) {
  ns_req *r = arg;
  json_object *o = json_object_new_object();
  long long local = r->wsi ? (long long)r->srv->nconns : 0;
  /* Redis down: the cluster total is unknown; this instance's count is the
   * best lower bound (documented in docs/protocol.md). */
  json_object_object_add(o, "total_connections",
                         json_object_new_int64(rc == 0 ? total : local));
  json_object_object_add(o, "instance_connections",
                         json_object_new_int64(local));
  ns__http_add_ts(o, "timestamp", ns_now_ms());
  ns__http_reply_json(r, 200, o);
}

static void h_stats(ns_req *r, const char *arg) {
  if (!ns__http_need_token(r))
    return;
  r->pending = 1;
  if (ns_liveness_total(r->srv, on_stats_total, r) != 0)
    on_stats_total(NS_EUNAVAIL, 0, r);
}

static void on_connections_total(int rc, long long total, void *arg) {
  ns_req *r = arg;
  json_object *o = json_object_new_object();
  json_object_object_add(o, "status", json_object_new_string("healthy"));
  json_object_object_add(
      o, "connectionCount",
      json_object_new_int64(rc == 0 ? total : (long long)r->srv->nconns));
  ns__http_add_ts(o, "timestamp", ns_now_ms());
  ns__http_reply_json(r, 200, o);
}

static void h_connections(ns_req *r, const char *arg) {
  r->pending = 1;
  if (ns_liveness_total(r->srv, on_connections_total, r) != 0)
    on_connections_total(NS_EUNAVAIL, 0, r);
}

static json_object *device_json(const ns_devrow *d, int full) {
  json_object *e = json_object_new_object();
  json_object_object_add(e, "device_id", json_object_new_string(d->device_id));
  if (full) {
    json_object_object_add(e, "device_name",
                           d->name[0] ? json_object_new_string(d->name) : NULL);
    json_object_object_add(
        e, "platform",
        d->platform[0] ? json_object_new_string(d->platform) : NULL);
  }
  json_object_object_add(
      e, "status", json_object_new_string(d->online ? "online" : "offline"));
  if (full)
    ns__http_add_ts(e, "first_seen", d->first_seen_ms);
  ns__http_add_ts(e, "last_seen", d->last_seen_ms);
  json_object_object_add(e, "queued", json_object_new_int64(d->queued));
  return e;
}

static void on_user_stats(int rc, const ns_devlist *l, void *arg) {
  ns_req *r = arg;
  json_object *o, *arr;
  size_t i, active = 0;
  if (rc != 0) {
    ns__http_unavailable(r);
    return;
  }
  o = json_object_new_object();
  arr = json_object_new_array();
  for (i = 0; i < l->n; i++) {
    active += l->rows[i].online;
    json_object_array_add(arr, device_json(&l->rows[i], 0));
  }
  json_object_object_add(o, "user_id", json_object_new_string(r->who.sub));
  json_object_object_add(o, "active_connections",
                         json_object_new_int64((int64_t)active));
  json_object_object_add(o, "devices", arr);
  ns__http_add_ts(o, "timestamp", ns_now_ms());
  ns__http_reply_json(r, 200, o);
}

static void h_user_stats(ns_req *r, const char *arg) {
  if (!ns__http_need_token(r))
    return;
  r->pending = 1;
  if (ns_presence_devices(r->srv, r->who.sub, on_user_stats, r) != 0)
    ns__http_unavailable(r);
}

static void on_devices(int rc, const ns_devlist *l, void *arg) {
  ns_req *r = arg;
  json_object *o, *arr;
  size_t i;
  if (rc != 0) {
    ns__http_unavailable(r);
    return;
  }
  o = json_object_new_object();
  arr = json_object_new_array();
  for (i = 0; i < l->n; i++)
    json_object_array_add(arr, device_json(&l->rows[i], 1));
  json_object_object_add(o, "devices", arr);
  ns__http_reply_json(r, 200, o);
}

static void h_devices(ns_req *r, const char *arg) {
  if (!ns__http_need_token(r))
    return;
  r->pending = 1;
  if (ns_presence_devices(r->srv, r->who.sub, on_devices, r) != 0)
    ns__http_unavailable(r);
}

static void on_forgotten(int rc, void *arg) {
  ns_req *r = arg;
  if (rc == 0)
    ns__http_reply_empty(r, 204);
  else if (rc == NS_ENOTFOUND)
    ns__http_reply_error(r, 404, "not_found", "no such device");
  else
    ns__http_unavailable(r);
}

static void h_device_delete(ns_req *r, const char *arg) {
  char id[NS_DEVICE_ID_MAX + 1];
  if (!ns__http_need_token(r))
    return;
  if (ns_rest_parse_device_path(arg, strlen(arg), id) != 0) {
    ns__http_reply_error(r, 404, "not_found", "no such device");
    return;
  }
  r->pending = 1;
  if (ns_presence_forget(r->srv, r->who.sub, id, on_forgotten, r) != 0)
    ns__http_unavailable(r);
}

static const route routes[] = {
    {"/health", M_GET, h_health},
    {"/metrics", M_GET, h_metrics},
    {"/api/v1/websocket/stats", M_GET, h_stats},
    {"/api/v1/websocket/users/stats", M_GET, h_user_stats},
    {"/api/v1/websocket/connections", M_GET, h_connections},
    {"/api/v1/devices", M_GET, h_devices},
    {"/api/v1/devices/", M_DELETE, h_device_delete},
    {"/api/v1/notifications", M_GET | M_POST, ns__notify_root},
    {"/api/v1/notifications/*", M_GET | M_POST | M_DELETE, ns__notify_sub},
    {"/api/v1/notes/*", M_GET | M_POST | M_PUT | M_DELETE, ns__comments_route},
    {"/notes/*", M_GET | M_POST | M_PUT | M_DELETE, ns__comments_route},
    {"/me/notes/*", M_GET | M_POST | M_PUT | M_DELETE, ns__comments_route},
    {"/api/v1/posts/*", M_GET | M_POST | M_PUT | M_DELETE, ns__comments_route},
    {"/api/v1/broadcast", M_POST, ns__broadcast_route},
    {"/notisync.js", M_GET, ns__static_route},
    {"/console", M_GET, ns__static_route},
    {"/console*", M_GET, ns__static_route}, /* "/console/", files, dev token */
};

static void dispatch(ns_req *r) {
  size_t i;
  int path_known = 0;
  /* Shutting down: what arrived before is finished, what comes now is
   * refused so the client retries elsewhere. */
  if (r->srv->stopping && !r->accepted_before_stop) {
    ns__http_reply_error(r, 503, "unavailable", "server shutting down");
    return;
  }
  for (i = 0; i < NS_ARRAY_SIZE(routes); i++) {
    const route *rt = &routes[i];
    size_t n = strlen(rt->path);
    const char *arg = "";
    if (rt->path[n - 1] == '*') { /* prefix; the handler parses the rest */
      if (strncmp(r->path, rt->path, n - 1) != 0 || !r->path[n - 1])
        continue;
      arg = r->path + n - 1;
    } else if (rt->path[n - 1] == '/') {
      if (strncmp(r->path, rt->path, n) != 0 || !r->path[n] ||
          strchr(r->path + n, '/'))
        continue;
      arg = r->path + n;
    } else if (strcmp(r->path, rt->path) != 0) {
      continue;
    }
    path_known = 1;
    if (rt->methods & r->method) {
      rt->fn(r, arg);
      return;
    }
  }
  if (path_known)
    ns__http_reply_error(r, 405, "method_not_allowed", "method not allowed");
  else
    ns__http_reply_error(r, 404, "not_found", "no such route");
}

/* ---- lws plumbing ---- */

static int method_of(struct lws *wsi) {
  if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI))
    return M_GET;
  if (lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI))
    return M_POST;
  if (lws_hdr_total_length(wsi, WSI_TOKEN_PUT_URI))
    return M_PUT;
  if (lws_hdr_total_length(wsi, WSI_TOKEN_DELETE_URI))
    return M_DELETE;
  if (lws_hdr_total_length(wsi, WSI_TOKEN_PATCH_URI))
    return M_PATCH;
  return M_OTHER;
}

/* The query arguments as ns_upgrade.h and ns_rest_check_query want them: every URI_ARGS fragment,
 * url-decoded by lws, each followed by a NUL, in a heap buffer (NULL and
 * *len 0 when there is no query).  No fragment is longer than all of them,
 * so one scratch buffer of the total length holds any. */
char *ns__http_query_args(struct lws *wsi, size_t *len) {
  int total = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS), i, k;
  size_t used = 0, cap;
  char *frag, *list;
  *len = 0;
  if (total <= 0)
    return NULL;
  cap = (size_t)total * 2 + 2;
  frag = ns_xmalloc((size_t)total + 1); /* bounded: max_http_header_data */
  list = ns_xmalloc(cap);
  for (i = 0;; i++) {
    k = lws_hdr_copy_fragment(wsi, frag, total + 1, WSI_TOKEN_HTTP_URI_ARGS, i);
    if (k < 0)
      break; /* no fragment i: the end */
    if (used + (size_t)k + 1 > cap) {
      cap = (used + (size_t)k + 1) * 2;
      list = ns_xrealloc(list, cap);
    }
    memcpy(list + used, frag, (size_t)k);
    used += (size_t)k;
    list[used++] = '\0';
  }
  free(frag);
  *len = used;
  return list;
}

/* ns_rest_check_query() over the request's query arguments: 0, or
 * NS_EINVAL with `err` filled. */
static int check_query(struct lws *wsi, ns_rest_err *err) {
  size_t len;
  char *args = ns__http_query_args(wsi, &len);
  int rc = ns_rest_check_query(args, len, err);
  free(args);
  return rc;
}

/* The request's body could not be taken (refused Content-Length, or a
 * refusal before it was read): its bytes may still come, so the connection
 * is closed after the reply instead of reading them as a next request. */
static int body_left_unread(const ns_req *r) {
  return (r->method & (M_POST | M_PUT | M_PATCH)) && !r->body;
}

/* Reads Content-Length for a request with a body: 0 with *len, or a reply
 * already made (411 absent, 400 malformed, 413 over max_body_bytes) and -1. */
static int read_length(ns_req *r, long long *len) {
  int n = lws_hdr_total_length(r->wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH), rc;
  ns_rest_err err;
  char *cl;
  if (n <= 0) {
    ns__http_reply_error(r, 411, "length_required", "Content-Length is required");
    return -1;
  }
  cl = ns_xmalloc((size_t)n + 1); /* bounded: max_http_header_data */
  if (lws_hdr_copy(r->wsi, cl, n + 1, WSI_TOKEN_HTTP_CONTENT_LENGTH) != n)
    n = 0; /* cannot happen: parsed as malformed */
  rc = ns_rest_parse_content_length(cl, (size_t)n, r->srv->cfg->max_body_bytes,
                                    len, &err);
  free(cl);
  if (rc == NS_ETOOBIG)
    ns__http_reply_error(r, 413, "too_large", err.message);
  else if (rc != 0)
    ns__http_reply_bad(r, &err);
  return rc == 0 ? 0 : -1;
}

static void read_auth(ns_req *r) {
  char hdr[NS_TOKEN_MAX + 16];
  int n = lws_hdr_copy(r->wsi, hdr, sizeof(hdr), WSI_TOKEN_HTTP_AUTHORIZATION);
  r->auth_rc = 1;
  if (n > 7 && strncasecmp(hdr, "Bearer ", 7) == 0)
    r->auth_rc = ns_auth_verify(r->srv->auth, hdr + 7, (size_t)n - 7,
                                ns_now_ms() / 1000, &r->who);
  else if (n > 0)
    r->auth_rc = NS_EAUTH;
}

static int on_http(struct lws *wsi, ns_session *s, const char *uri) {
  ns_server *srv = srv_of(wsi);
  ns_req *r = ns_xcalloc(1, sizeof(*r));
  ns_rest_err err;
  if (s->req) { /* a keep-alive connection's previous request */
    if (s->req->pending)
      s->req->wsi = NULL;
    else
      ns__http_req_free(s->req);
  }
  s->kind = 3;
  s->req = r;
  srv->http_reqs++;
  r->srv = srv;
  r->wsi = wsi;
  r->accepted_before_stop = !srv->stopping;
  r->method = method_of(wsi);
  snprintf(r->path, sizeof(r->path), "%s", uri);
  read_auth(r);
  if (lws_hdr_custom_length(wsi, "x-device-id:", 12) > NS_DEVICE_ID_MAX)
    r->device_hdr_too_long = 1;
  else if (lws_hdr_custom_copy(wsi, r->device_hdr, sizeof(r->device_hdr),
                               "x-device-id:", 12) < 0)
    r->device_hdr[0] = '\0';
  /* Request syntax first: a query argument the handlers could not read
   * whole, or a Content-Length that is not a number, is refused rather
   * than guessed at (both before any body byte is taken). */
  if (check_query(wsi, &err) != 0) {
    ns__http_reply_bad(r, &err);
    return 0;
  }
  if (r->method & (M_POST | M_PUT | M_PATCH)) {
    long long len = 0;
    if (read_length(r, &len) != 0)
      return 0;
    r->body_max = (size_t)len;
    r->body = ns_xmalloc(r->body_max + 1);
    srv->http_body_bytes += r->body_max + 1;
    if (len > 0)
      return 0; /* wait for HTTP_BODY / HTTP_BODY_COMPLETION */
  }
  dispatch(r);
  return 0;
}

/* Writes the headers, then the body; sets *done once the response is out. */
static int on_writeable(struct lws *wsi, ns_req *r, int *done) {
  uint8_t hb[LWS_PRE + 2048], *start = hb + LWS_PRE, *p = start,
                              *end = hb + sizeof(hb) - 1;
  if (!r || !r->status)
    return 0;
  if (!r->headers_sent) {
    if (lws_add_http_common_headers(wsi, (unsigned)r->status, r->ctype,
                                    r->resp_len, &p, end) ||
        (r->add_headers && r->add_headers(wsi, &p, end)) ||
        lws_finalize_write_http_header(wsi, start, &p, end))
      return -1;
    r->headers_sent = 1;
    if (r->resp_len) {
      lws_callback_on_writable(wsi);
      return 0;
    }
  } else {
    /* lws_write needs LWS_PRE writable bytes before the payload. */
    uint8_t *buf = malloc(LWS_PRE + r->resp_len);
    int n;
    if (!buf)
      return -1;
    memcpy(buf + LWS_PRE, r->resp, r->resp_len);
    n = lws_write(wsi, buf + LWS_PRE, r->resp_len, LWS_WRITE_HTTP_FINAL);
    free(buf);
    if (n < (int)r->resp_len)
      return -1;
  }
  *done = 1;
  return 0;
}

int ns__http_callback(struct lws *wsi, enum lws_callback_reasons reason,
                      void *user, void *in, size_t len) {
  ns_session *s = user;
  switch (reason) {
  case LWS_CALLBACK_HTTP:
    return on_http(wsi, s, in);
  case LWS_CALLBACK_HTTP_BODY:
    if (s->req && s->req->body) {
      ns_req *r = s->req;
      if (r->body_len + len > r->body_max) {
        ns__http_reply_error(r, 413, "too_large", "request body exceeds Content-Length");
        return 0;
      }
      if (len) {
        memcpy(r->body + r->body_len, in, len);
        r->body_len += len;
      }
    }
    return 0;
  case LWS_CALLBACK_HTTP_BODY_COMPLETION:
    if (s->req && !s->req->status) {
      s->req->body[s->req->body_len] = '\0';
      dispatch(s->req);
    }
    return 0;
  case LWS_CALLBACK_HTTP_WRITEABLE: {
    ns_req *r = s->req;
    int done = 0, close, rc = on_writeable(wsi, r, &done);
    if (rc || !done)
      return rc;
    /* Completing the transaction may free the session data: detach first. */
    s->req = NULL;
    close = body_left_unread(r);
    ns__http_req_free(r);
    if (close)
      return -1; /* lws flushes what it buffered before closing */
    return lws_http_transaction_completed(wsi) ? -1 : 0;
  }
  case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
  case LWS_CALLBACK_CLOSED_HTTP:
    if (s && s->kind == 3 && s->req) {
      ns_req *r = s->req;
      s->req = NULL;
      if (r->pending)
        r->wsi = NULL; /* the completion frees it */
      else
        ns__http_req_free(r);
    }
    return 0;
  default:
    return 0;
  }
}
