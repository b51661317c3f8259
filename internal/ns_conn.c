/*
 * ns_conn.c -- one WebSocket connection: its outbound ring of shared
 * messages (bounded by max_outbound_bytes), and its close path.
 *
 * Lifetime: the socket holds one reference and every in-flight Redis or
 * PostgreSQL operation holds another; async completions check c->wsi and do
 * nothing for a closed connection.  Memory is freed only when the last
 * reference goes (never inside the connection's own lws callback while lws
 * still uses the wsi).
 */
#include <json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ns_log.h"
#include "ns_queue.h"
#include "ns_server_int.h"

ns_conn *ns_conn_new(ns_server *srv, struct lws *wsi) {
  ns_conn *c = ns_xcalloc(1, sizeof(*c));
  c->srv = srv;
  c->wsi = wsi;
  c->refs = 1;
  snprintf(c->id, sizeof(c->id), "%s-%llu", srv->instance_id,
           (unsigned long long)++srv->conn_seq);
  c->next = srv->conns;
  if (srv->conns)
    srv->conns->prev = c;
  srv->conns = c;
  srv->nconns++;
  ns_liveness_count(srv); /* keeps stats:conn exact, not 5 s stale */
  ns_bucket_init(&c->bucket, (double)srv->cfg->client_msg_burst, ns_mono_ms());
  return c;
}

void ns_conn_ref(ns_conn *c) { c->refs++; }

static void ring_clear(ns_conn *c) {
  while (c->ring_len) {
    ns_msg *m = c->ring[c->ring_head];
    c->srv->outbound_bytes -= m->len;
    ns_msg_unref(&c->ring[c->ring_head]);
    c->ring_head = (c->ring_head + 1) % c->ring_cap;
    c->ring_len--;
  }
  c->out_bytes = 0;
}

void ns_conn_unref(ns_conn *c) {
  if (--c->refs > 0)
    return;
  ring_clear(c);
  ns_msg_unref(&c->unflushed); /* never wholly sent: stays queued */
  free(c->ring);
  ns_conn_free_rx(c);
  free(c);
}

void ns_conn_free_rx(ns_conn *c) {
  c->rx_len = 0;
  if (!c->rx)
    return;
  c->srv->inbound_bytes -= c->rx_cap;
  free(c->rx);
  c->rx = NULL;
}

void ns_conn_on_closed(ns_conn *c) {
  ns_server *srv = c->srv;
  if (c->prev)
    c->prev->next = c->next;
  else
    srv->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  srv->nconns--;
  if (!srv->stopping)
    ns_liveness_count(srv);
  c->wsi = NULL;
  c->state = NS_CONN_CLOSING;
  ring_clear(c);
  ns_conn_unref(c);
}

static void ring_grow(ns_conn *c) {
  size_t cap = c->ring_cap ? c->ring_cap * 2 : 8, i;
  ns_msg **r = ns_xmalloc(cap * sizeof(*r));
  for (i = 0; i < c->ring_len; i++)
    r[i] = c->ring[(c->ring_head + i) % c->ring_cap];
  free(c->ring);
  c->ring = r;
  c->ring_cap = cap;
  c->ring_head = 0;
}

static int admit(ns_conn *c, ns_msg *m) {
  if (!c->wsi || c->state == NS_CONN_CLOSING)
    return 0;
  /* The bound is on what waits behind the socket: a single message larger
   * than the bound (a long comments.list) still goes to an idle reader. */
  if (c->ring_len > 0 &&
      c->out_bytes + m->len > (size_t)c->srv->cfg->max_outbound_bytes) {
    c->srv->metrics.slow_consumer_closes++;
    ns_log(NS_LOG_WARN, "conn %s: outbound buffer over %lld bytes: closing 1013",
           c->id, (long long)c->srv->cfg->max_outbound_bytes);
    ns_conn_close(c, 1013, "slow consumer");
    return 0;
  }
  if (c->ring_len == c->ring_cap)
    ring_grow(c);
  c->out_bytes += m->len;
  c->srv->outbound_bytes += m->len;
  return 1;
}

void ns_conn_send(ns_conn *c, ns_msg *m) {
  if (!admit(c, m))
    return;
  c->ring[(c->ring_head + c->ring_len) % c->ring_cap] = ns_msg_ref(m);
  c->ring_len++;
  if (c->state == NS_CONN_READY || c->is_public)
    lws_callback_on_writable(c->wsi);
}

void ns_conn_send_front(ns_conn *c, ns_msg *m) {
  if (!admit(c, m))
    return;
  c->ring_head = (c->ring_head + c->ring_cap - 1) % c->ring_cap;
  c->ring[c->ring_head] = ns_msg_ref(m);
  c->ring_len++;
  lws_callback_on_writable(c->wsi);
}

void ns_conn_send_json(ns_conn *c, const char *type, struct json_object *data,
                       const char *ref) {
  size_t len;
  char *buf = ns_proto_envelope(type, data, NULL, ref, ns_now_ms(), LWS_PRE,
                                &len);
  ns_msg *m = ns_msg_wrap(buf, len, type);
  if (!m)
    return;
  ns_conn_send(c, m);
  ns_msg_unref(&m);
}

void ns_conn_send_error(ns_conn *c, const char *code, const char *msg,
                        const char *ref) {
  size_t len;
  char *buf = ns_proto_error(code, msg, ref, ns_now_ms(), LWS_PRE, &len);
  ns_msg *m = ns_msg_wrap(buf, len, "error");
  if (!m)
    return;
  ns_conn_send(c, m);
  ns_msg_unref(&m);
}

/* `m` (our reference) is wholly in the kernel's socket buffer: delivered
 * in the SPEC §5.4 sense. */
static void written(ns_conn *c, ns_msg *m) {
  ns_queue_on_written(c, m);
  ns_msg_unref(&m);
}

int ns_conn_on_writable(ns_conn *c) {
  ns_msg *m;
  /* lws calls WRITEABLE only once a partly sent frame is flushed. */
  if (c->unflushed) {
    m = c->unflushed;
    c->unflushed = NULL;
    written(c, m);
    if (!c->ring_len) {
      ns_queue_on_drained(c);
      return 0;
    }
  }
  if (!c->ring_len || (c->state != NS_CONN_READY && !c->is_public))
    return 0;
  m = c->ring[c->ring_head];
  if (lws_write(c->wsi, (unsigned char *)ns_msg_payload(m), m->len,
                LWS_WRITE_TEXT) < (int)m->len)
    return -1;
  ns_metrics_inc(&c->srv->metrics, NS_M_SENT, m->type);
  c->ring[c->ring_head] = NULL;
  c->ring_head = (c->ring_head + 1) % c->ring_cap;
  c->ring_len--;
  c->out_bytes -= m->len;
  c->srv->outbound_bytes -= m->len;
  if (lws_partial_buffered(c->wsi)) {
    c->unflushed = m;
    lws_callback_on_writable(c->wsi);
    return 0;
  }
  written(c, m);
  if (c->ring_len)
    lws_callback_on_writable(c->wsi);
  else
    ns_queue_on_drained(c);
  return 0;
}

void ns_conn_close(ns_conn *c, int code, const char *reason) {
  char label[16];
  if (!c->wsi || c->close_code)
    return;
  c->close_code = code;
  snprintf(label, sizeof(label), "%d", code);
  ns_metrics_inc(&c->srv->metrics, NS_M_CLOSES, label);
  snprintf(c->close_reason, sizeof(c->close_reason), "%s", reason);
  c->state = NS_CONN_CLOSING;
  /* The close frame is sent from LWS_CALLBACK_TIMER; the cancel wakes lws so
   * a timer set from a Redis/PG callback is armed promptly. */
  lws_set_timer_usecs(c->wsi, 1);
  lws_cancel_service(c->srv->ctx);
}
