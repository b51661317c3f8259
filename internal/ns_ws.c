/*
 * ns_ws.c -- the WebSocket half of the lws protocol callback: upgrade
 * checks, authentication at FILTER_PROTOCOL_CONNECTION, frame assembly, the
 * per-connection rate limit and the dispatch of client messages.  Parsing is
 * ns_proto's; registration and presence are ns_presence's.
 */
#include <json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ns_comments.h"
#include "ns_http_int.h"
#include "ns_log.h"
#include "ns_queue.h"
#include "ns_rest.h"
#include "ns_server_int.h"
#include "ns_upgrade.h"

#define PATH_MAX_LEN 256
#define RATE_LIMIT_CLOSE_MS 5000

static ns_server *srv_of(struct lws *wsi) {
  return lws_context_user(lws_get_context(wsi));
}

/* 1 = device endpoint, 2 = public endpoint, 0 = no WebSocket here. */
static int endpoint_kind(struct lws *wsi) {
  char path[PATH_MAX_LEN];
  int n = lws_hdr_copy(wsi, path, sizeof(path), WSI_TOKEN_GET_URI);
  if (n <= 0)
    return NS_UPGRADE_NONE;
  return (int)ns_upgrade_endpoint(path, (size_t)n);
}

/* The whole Origin header is compared: a copy cut to a fixed buffer (as
 * before) made an Origin of 256 bytes or more count as absent, i.e.
 * allowed, whatever allowed_origins said. */
static int origin_allowed(ns_server *srv, struct lws *wsi) {
  const char *list = srv->cfg->allowed_origins;
  int n = lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN), ok;
  char *origin;
  if (!list || !*list || n <= 0)
    return 1;
  origin = ns_xmalloc((size_t)n + 1); /* bounded: max_http_header_data */
  if (lws_hdr_copy(wsi, origin, n + 1, WSI_TOKEN_ORIGIN) != n)
    ok = 0; /* cannot happen; refuse rather than guess */
  else
    ok = ns_upgrade_origin_allowed(list, origin, (size_t)n);
  free(origin);
  return ok;
}

static void authenticate(ns_server *srv, struct lws *wsi, ns_session *s) {
  char hdr[NS_UPGRADE_AUTHZ_MAX + 1];
  ns_upgrade_device up;
  ns_devauth *da = s->da = ns_xcalloc(1, sizeof(*s->da));
  size_t alen;
  char *args = ns__http_query_args(wsi, &alen);
  int n = lws_hdr_copy(wsi, hdr, sizeof(hdr), WSI_TOKEN_HTTP_AUTHORIZATION);
  ns_upgrade_parse_device(hdr, n, args, alen, &up); /* up.token: hdr or args */
  s->auth_rc = NS_EAUTH;
  s->auth_reason = up.reason;
  if (!up.reason) {
    n = ns_auth_verify(srv->auth, up.token, up.token_len, ns_now_ms() / 1000,
                       &da->who);
    if (n == NS_EEXPIRED)
      s->auth_reason = "token expired";
    else if (n != 0)
      s->auth_reason = "invalid token";
    else if (!up.device_ok)
      s->auth_reason = "invalid device_id";
  }
  free(args);
  if (!s->auth_reason) {
    memcpy(da->device, up.device, sizeof(da->device));
    memcpy(da->device_name, up.device_name, sizeof(da->device_name));
    memcpy(da->platform, up.platform, sizeof(da->platform));
    da->ack_mode = up.ack_mode;
    s->auth_rc = 0;
  }
}

static void free_devauth(ns_session *s) {
  free(s->da);
  s->da = NULL;
}

static void on_established(ns_server *srv, struct lws *wsi, ns_session *s) {
  ns_conn *c;
  /* A WebSocket that skipped the protocol filter (no endpoint, no device
   * auth: an upgrade path lws might add, as RFC 8441 over h2 did before
   * ALPN was pinned to http/1.1) is never served. */
  if (s->kind == 0 || (s->kind == 1 && !s->da && s->auth_rc == 0)) {
    s->auth_rc = NS_EAUTH;
    s->auth_reason = "handshake not checked";
  }
  c = ns_conn_new(srv, wsi, s->kind == 2);
  s->conn = c;
  if (s->auth_rc != 0) { /* never READY: nothing is delivered */
    ns_metrics_inc(&srv->metrics, NS_M_HANDSHAKES, s->auth_reason);
    ns_log(NS_LOG_INFO, "conn %s-%llu: refused: %s", srv->instance_id,
           (unsigned long long)c->seq, s->auth_reason);
    free_devauth(s);
    ns_conn_close(c, 1008, s->auth_reason);
    return;
  }
  if (s->kind == 2) {
    c->state = NS_CONN_READY;
    ns_metrics_inc(&srv->metrics, NS_M_HANDSHAKES, "public");
    return;
  }
  c->who = s->da->who;
  memcpy(c->device, s->da->device, sizeof(c->device));
  memcpy(c->device_name, s->da->device_name, sizeof(c->device_name));
  memcpy(c->platform, s->da->platform, sizeof(c->platform));
  c->ack_mode = s->da->ack_mode != 0;
  free_devauth(s);
  ns_metrics_inc(&srv->metrics, NS_M_HANDSHAKES, "ok");
  ns_presence_connect(c);
}

/* Client message rate (SPEC §7).  Returns 0 when the message may be
 * handled, 1 when it is refused.  An episode of refusals starts at the first
 * refusal and lasts while refusals keep coming less than a second apart
 * (the odd message let through by the refill does not end it); an episode
 * longer than 5 s closes the connection with 1008. */
static int rate_limited(ns_conn *c) {
  const ns_config *cfg = c->srv->cfg;
  int64_t now = ns_mono_ms();
  if (ns_bucket_take(&c->bucket, (double)cfg->client_msg_rate,
                     (double)cfg->client_msg_burst, now))
    return 0;
  if (!c->limited_since_ms || now - c->last_refused_ms > 1000)
    c->limited_since_ms = now;
  c->last_refused_ms = now;
  if (now - c->limited_since_ms > RATE_LIMIT_CLOSE_MS)
    ns_conn_close(c, 1008, "rate limit exceeded");
  return 1;
}

static void handle_refresh(ns_conn *c, const ns_cmd *cmd, const char *ref) {
  ns_principal p;
  int rc = ns_auth_verify(c->srv->auth, cmd->token, strlen(cmd->token),
                          ns_now_ms() / 1000, &p);
  if (rc != 0) {
    ns_conn_send_error(c, "bad_message",
                       rc == NS_EEXPIRED ? "token expired" : "invalid token",
                       ref);
    return;
  }
  if (strcmp(p.sub, c->who.sub) != 0) {
    ns_conn_send_error(c, "forbidden", "token is for another user", ref);
    return;
  }
  c->who = p;
  ns_conn_send_json(c, "ok", NULL, ref);
}

typedef struct action_req {
  ns_conn *c;
  int has_ref;
  char ref[NS_REF_MAX + 1];
} action_req;

static void on_action_done(int rc, json_object *row, void *arg) {
  action_req *a = arg;
  const char *ref = a->has_ref ? a->ref : NULL;
  (void)row;
  if (a->c->wsi && a->c->state != NS_CONN_CLOSING) {
    if (rc == 0)
      ns_conn_send_json(a->c, "ok", NULL, ref);
    else if (rc == NS_ENOTFOUND)
      ns_conn_send_error(a->c, "not_found", "no such notification", ref);
    else
      ns_conn_send_error(a->c, "unavailable", "storage backend unavailable", ref);
  }
  ns_conn_unref(a->c);
  free(a);
}

/* A bulk action's reply (SPEC §9.5): ok {updated, unread}. */
static void on_bulk_done(int rc, long long updated, long long unread,
                         void *arg) {
  action_req *a = arg;
  const char *ref = a->has_ref ? a->ref : NULL;
  if (a->c->wsi && a->c->state != NS_CONN_CLOSING) {
    if (rc == 0) {
      json_object *d = json_object_new_object();
      json_object_object_add(d, "updated", json_object_new_int64(updated));
      json_object_object_add(d, "unread", json_object_new_int64(unread));
      ns_conn_send_json(a->c, "ok", d, ref);
    } else if (rc == NS_ENOTFOUND) {
      ns_conn_send_error(a->c, "not_found", "data.before: no such notification",
                         ref);
    } else {
      ns_conn_send_error(a->c, "unavailable", "storage backend unavailable", ref);
    }
  }
  ns_conn_unref(a->c);
  free(a);
}

static void handle_action(ns_conn *c, const ns_cmd *cmd, const char *ref) {
  action_req *a = ns_xcalloc(1, sizeof(*a));
  a->c = c;
  a->has_ref = ref != NULL;
  if (ref)
    snprintf(a->ref, sizeof(a->ref), "%s", ref);
  ns_conn_ref(c);
  if (cmd->all) {
    if (ns_notify_bulk(c->srv, c->who.sub, cmd->action, cmd->before, c->device,
                       on_bulk_done, a) != 0)
      on_bulk_done(NS_EUNAVAIL, 0, 0, a);
    return;
  }
  if (ns_notify_action(c->srv, c->who.sub, cmd->notification_id, cmd->action,
                       c->device, on_action_done, a) != 0)
    on_action_done(NS_EUNAVAIL, NULL, a);
}

static void on_snapshot(int rc, json_object *list, void *arg) {
  action_req *a = arg;
  const char *ref = a->has_ref ? a->ref : NULL;
  if (a->c->wsi && a->c->state != NS_CONN_CLOSING) {
    if (rc == 0)
      ns_conn_send_json(a->c, "comments.list", json_object_get(list), ref);
    else
      ns_conn_send_error(a->c, "unavailable", "storage backend unavailable", ref);
  }
  ns_conn_unref(a->c);
  free(a);
}

/* subscribe: the snapshot of one note's comments (events for every note
 * flow to every connection regardless). */
static void handle_subscribe(ns_conn *c, const ns_cmd *cmd, const char *ref) {
  action_req *a;
  if (!ns_rest_valid_post_id(cmd->post_id, strlen(cmd->post_id))) {
    ns_conn_send_error(c, "bad_message",
                       "data.postId must be 1-128 bytes of [A-Za-z0-9._:-]", ref);
    return;
  }
  a = ns_xcalloc(1, sizeof(*a));
  a->c = c;
  a->has_ref = ref != NULL;
  if (ref)
    snprintf(a->ref, sizeof(a->ref), "%s", ref);
  ns_conn_ref(c);
  if (ns_comments_snapshot(c->srv, cmd->post_id, on_snapshot, a) != 0)
    on_snapshot(NS_EUNAVAIL, NULL, a);
}

/* The answer to a message over the rate: not handled, but its `ref` is
 * echoed (SPEC §4) so the client can tell which request was refused; the
 * decode is bounded by max_message_bytes like any other. */
static void refuse_rate_limited(ns_conn *c, const char *p, size_t n) {
  ns_cmd cmd;
  ns_proto_err err;
  ns_proto_decode(p, n, &cmd, &err);
  ns_conn_send_error(c, "rate_limited", "too many messages",
                     cmd.has_ref ? cmd.ref : NULL);
  ns_cmd_reset(&cmd);
}

static void handle_message(ns_conn *c, const char *p, size_t n) {
  ns_cmd cmd;
  ns_proto_err err;
  const char *ref;
  int rc = ns_proto_decode(p, n, &cmd, &err);
  ref = cmd.has_ref ? cmd.ref : NULL;
  ns_metrics_inc(&c->srv->metrics, NS_M_RECEIVED,
                 rc == 0 && cmd.type != NS_CMD_UNKNOWN ? cmd.type_name : "other");
  /* On a public endpoint a message asking for anything but ping or
   * subscribe is refused as such, whatever its data; a frame that is not a
   * message (no known type was read) gets the SPEC §3 answer below. */
  if (c->is_public && cmd.type != NS_CMD_PING && cmd.type != NS_CMD_SUBSCRIBE &&
      (rc == 0 || (rc == NS_EPARSE && cmd.type != NS_CMD_UNKNOWN))) {
    ns_conn_send_error(c, "read_only",
                       "this endpoint accepts only ping and subscribe", ref);
  } else if (rc != 0) {
    ns_conn_send_error(c, err.code, err.message, ref);
  } else if (cmd.type == NS_CMD_PING) {
    char ts[NS_TS_LEN];
    json_object *d = json_object_new_object();
    ns_format_ts(ns_now_ms(), ts);
    json_object_object_add(d, "timestamp", json_object_new_string(ts));
    ns_conn_send_json(c, "pong", d, ref);
  } else if (cmd.type == NS_CMD_UNKNOWN) {
    char msg[128];
    snprintf(msg, sizeof(msg), "unknown message type '%s'", cmd.type_name);
    ns_conn_send_error(c, "unknown_type", msg, ref);
  } else if (cmd.type == NS_CMD_REFRESH) {
    handle_refresh(c, &cmd, ref);
  } else if (cmd.type == NS_CMD_ACK) {
    ns_queue_ack(c, cmd.id);
  } else if (cmd.type == NS_CMD_ACTION) {
    handle_action(c, &cmd, ref);
  } else {
    handle_subscribe(c, &cmd, ref);
  }
  ns_cmd_reset(&cmd);
}

static int on_receive(ns_conn *c, struct lws *wsi, const char *in,
                      size_t len) {
  size_t max = (size_t)c->srv->cfg->max_message_bytes;
  int final = lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi);
  if (c->state == NS_CONN_CLOSING)
    return 0;
  c->last_rx_ms = ns_mono_ms();
  if (c->rx_len + len > max) {
    ns_conn_close(c, 1009, "message too big");
    return 0;
  }
  if (!final || c->rx_len) {
    /* A message in several pieces is assembled in a buffer of
     * max_message_bytes, held only until the message is complete. */
    if (!c->rx) {
      c->rx_cap = max + 1;
      c->rx = ns_xmalloc(c->rx_cap);
      c->srv->inbound_bytes += c->rx_cap;
    }
    memcpy(c->rx + c->rx_len, in, len);
    c->rx_len += len;
    if (!final)
      return 0;
    in = c->rx;
    len = c->rx_len;
  }
  if (lws_frame_is_binary(wsi))
    ns_conn_send_error(c, "bad_message", "binary frames are not accepted", NULL);
  else if (rate_limited(c))
    refuse_rate_limited(c, in, len);
  else
    handle_message(c, in, len);
  ns_conn_free_rx(c);
  return 0;
}

int ns__ws_callback(struct lws *wsi, enum lws_callback_reasons reason,
                    void *user, void *in, size_t len) {
  ns_server *srv = srv_of(wsi);
  ns_session *s = user;
  switch (reason) {
  case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
    if (!endpoint_kind(wsi)) {
      lws_return_http_status(wsi, HTTP_STATUS_NOT_FOUND, NULL);
      return 1;
    }
    if (srv->cfg->handshake_rate_per_ip > 0) { /* 0: off, no getpeername */
      char ip[64];
      lws_get_peer_simple(wsi, ip, sizeof(ip));
      if (!ns_iplimit_allow(srv->iplimit, ip, ns_mono_ms())) {
        ns_metrics_inc(&srv->metrics, NS_M_HANDSHAKES, "rate_limited");
        lws_return_http_status(wsi, 429, NULL);
        return 1;
      }
    }
    if (srv->stopping) {
      lws_return_http_status(wsi, HTTP_STATUS_SERVICE_UNAVAILABLE, NULL);
      return 1;
    }
    return 0;
  case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
    memset(s, 0, sizeof(*s));
    s->kind = endpoint_kind(wsi);
    /* A refused Origin is told like a refused token: the upgrade completes
     * and 1008 follows, a close code a browser's WebSocket API can read
     * (an HTTP status it cannot). */
    if (!origin_allowed(srv, wsi)) {
      s->auth_rc = NS_EAUTH;
      s->auth_reason = "origin not allowed";
    } else if (s->kind == 1) {
      authenticate(srv, wsi, s);
    }
    return 0;
  case LWS_CALLBACK_ESTABLISHED:
    on_established(srv, wsi, s);
    return 0;
  case LWS_CALLBACK_RECEIVE:
    return s->conn ? on_receive(s->conn, wsi, in, len) : -1;
  case LWS_CALLBACK_RECEIVE_PONG:
    if (s->conn)
      s->conn->last_rx_ms = ns_mono_ms();
    return 0;
  case LWS_CALLBACK_SERVER_WRITEABLE:
    return s->conn ? ns_conn_on_writable(s->conn) : 0;
  case LWS_CALLBACK_TIMER:
    if (s->conn && s->conn->close_code)
      return ns_conn_close_now(s->conn);
    return 0;
  case LWS_CALLBACK_WSI_DESTROY:
    free_devauth(s); /* a handshake that never reached ESTABLISHED; every
                      * wsi ends here, so nothing else needs to free it */
    return 0;
  case LWS_CALLBACK_CLOSED:
    if (s->conn) {
      if (s->conn->in_hub)
        ns_presence_disconnect(s->conn);
      ns_conn_on_closed(s->conn);
      s->conn = NULL;
    }
    return 0;
  default:
    return 0;
  }
}
