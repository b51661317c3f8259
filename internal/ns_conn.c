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

ns_conn *ns_conn_new(ns_server *srv, struct lws *wsi, int is_public) {
  /* A public connection never reads the device part: ~0.6 KB saved each. */
  ns_conn *c = ns_xcalloc(1, is_public ? NS_CONN_PUBLIC_SIZE : sizeof(*c));
  int64_t now = ns_mono_ms();
  c->srv = srv;
  c->wsi = wsi;
  c->refs = 1;
  c->is_public = is_public != 0;
  c->seq = ++srv->conn_seq;
  if (!is_public) {
    snprintf(c->id, sizeof(c->id), "%s-%llu", srv->instance_id,
             (unsigned long long)c->seq);
    c->born_ms = ns_now_ms();
  }
  c->last_rx_ms = now;
  /* Pings are spread over the interval (by a hash of the sequence number),
   * so that connections made together -- a reconnect storm -- are not all
   * pinged in the same sweep (100,000 at ~5 us a send would hold the loop
   * for about half a second). */
  c->last_ping_ms =
      now - (int64_t)((c->seq * 2654435761u) %
                      (uint64_t)NS_MAX(1, srv->cfg->heartbeat_interval_ms));
  c->next = srv->conns;
  if (srv->conns)
    srv->conns->prev = c;
  srv->conns = c;
  srv->nconns++;
  ns_liveness_count(srv); /* keeps stats:conn exact, not 5 s stale */
  ns_bucket_init(&c->bucket, (double)srv->cfg->client_msg_burst, now);
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
  if (!c->is_public && c->reg_list) {
    free(c->reg_list->rows);
    free(c->reg_list);
  }
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
    ns_log(NS_LOG_WARN, "conn %s-%llu: outbound buffer over %lld bytes: "
           "closing 1013", c->srv->instance_id, (unsigned long long)c->seq,
           (long long)c->srv->cfg->max_outbound_bytes);
    ns_conn_close(c, 1013, "slow consumer");
    return 0;
  }
  if (c->ring_len == c->ring_cap)
    ring_grow(c);
  c->out_bytes += m->len;
  c->srv->outbound_bytes += m->len;
  return 1;
}

/* `m` (our reference) is wholly in the kernel's socket buffer: delivered
 * in the SPEC §5.4 sense. */
static void written(ns_conn *c, ns_msg *m) {
  ns_queue_on_written(c, m);
  ns_msg_unref(&m);
}

/* Nothing waits before a new frame: no queue, no frame lws still flushes,
 * no ping due.  Then it may be written at once, outside WRITEABLE. */
static int can_write_now(const ns_conn *c) {
  return c->state == NS_CONN_READY && !c->ring_len && !c->unflushed &&
         !c->want_ping && !lws_partial_buffered(c->wsi);
}

/* Writes `m` now.  Returns 1 when the kernel took all of it, 0 when lws
 * kept part (it asks for WRITEABLE itself; the message is then delivered
 * at that callback), -1 on a dead socket. */
static int write_msg(ns_conn *c, ns_msg *m) {
  /* Already framed (ns_msg_frames): lws passes LWS_WRITE_HTTP bytes of a
   * WebSocket through unframed, buffering what the kernel does not take. */
  if (lws_write(c->wsi, (unsigned char *)ns_msg_payload(m), m->len,
                m->nframes ? LWS_WRITE_HTTP : LWS_WRITE_TEXT) < (int)m->len)
    return -1;
  ns_metrics_add(&c->srv->metrics, NS_M_SENT, m->type,
                 m->nframes ? m->nframes : 1);
  return lws_partial_buffered(c->wsi) ? 0 : 1;
}

/* A write the kernel refused: the peer reset or is gone.  Dropped like an
 * idle connection (no close handshake to wait for), counted as 1006
 * (closed abnormally), not as a server error. */
static void write_failed(ns_conn *c) {
  c->drop = 1;
  ns_conn_close(c, 1006, "write failed");
}

void ns_conn_send(ns_conn *c, ns_msg *m) {
  int rc;
  if (!admit(c, m))
    return;
  /* Fast path (the fan-out): nothing waits before `m`, so it is written
   * straight to the socket -- one send(), no POLLOUT round trip through
   * epoll.  A connection with anything queued keeps its order. */
  if (can_write_now(c)) {
    c->out_bytes -= m->len;
    c->srv->outbound_bytes -= m->len;
    rc = write_msg(c, m);
    if (rc > 0) {
      written(c, ns_msg_ref(m));
    } else if (rc == 0) {
      c->unflushed = ns_msg_ref(m);
      lws_callback_on_writable(c->wsi);
    } else {
      write_failed(c);
    }
    return;
  }
  c->ring[(c->ring_head + c->ring_len) % c->ring_cap] = ns_msg_ref(m);
  c->ring_len++;
  if (c->state == NS_CONN_READY)
    lws_callback_on_writable(c->wsi);
}

void ns_conn_send_front(ns_conn *c, ns_msg *m) {
  if (!admit(c, m))
    return;
  c->ring_head = (c->ring_head + c->ring_cap - 1) % c->ring_cap;
  c->ring[c->ring_head] = ns_msg_ref(m);
  c->ring_len++;
  /* No WRITEABLE request: the caller writes it (ns_conn_flush).  Each
   * POLLOUT on/off is a uv_poll_start, which libuv turns into an epoll
   * DEL + ADD. */
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

/* Writes a WebSocket ping (the pending one, if any).  A payload, because
 * lws reports no pong that comes back empty. */
static int write_ping(ns_conn *c) {
  unsigned char ping[LWS_PRE + 2];
  ping[LWS_PRE] = 'h';
  ping[LWS_PRE + 1] = 'b';
  c->want_ping = 0;
  return lws_write(c->wsi, ping + LWS_PRE, 2, LWS_WRITE_PING) < 0 ? -1 : 0;
}

int ns_conn_on_writable(ns_conn *c) {
  ns_msg *m;
  int rc, n;
  /* lws calls WRITEABLE only once a partly sent frame is flushed. */
  if (c->unflushed) {
    m = c->unflushed;
    c->unflushed = NULL;
    written(c, m);
  }
  /* A close waits for lws to flush what the kernel had not taken (lws
   * drops the close frame of a socket it is still flushing); then the
   * timer sends it (a -1 from WRITEABLE would drop it too). */
  if (c->close_code) {
    if (!c->close_started)
      lws_set_timer_usecs(c->wsi, 1);
    return 0;
  }
  if (c->want_ping && c->state != NS_CONN_CLOSING) {
    if (write_ping(c) < 0)
      return -1;
    if (lws_partial_buffered(c->wsi)) {
      lws_callback_on_writable(c->wsi);
      return 0;
    }
  }
  if (c->state != NS_CONN_READY)
    return 0;
  /* Several queued frames go out in this one callback, until the kernel
   * takes no more (lws then keeps the rest of the last one). */
  for (n = 0; c->ring_len && n < NS_CONN_WRITES_PER_CALLBACK; n++) {
    m = c->ring[c->ring_head];
    c->ring[c->ring_head] = NULL;
    c->ring_head = (c->ring_head + 1) % c->ring_cap;
    c->ring_len--;
    c->out_bytes -= m->len;
    c->srv->outbound_bytes -= m->len;
    if (m->expires_ms > 0 && ns_now_ms() >= m->expires_ms) {
      /* read before its expiry, held behind a slow socket past it */
      ns_queue_on_expired(c, m);
      ns_msg_unref(&m);
      continue;
    }
    rc = write_msg(c, m);
    if (rc < 0) {
      ns_msg_unref(&m); /* never wholly sent: stays queued (durable) */
      return -1;
    }
    if (rc == 0) {
      c->unflushed = m;
      lws_callback_on_writable(c->wsi);
      return 0;
    }
    written(c, m);
  }
  if (c->ring_len)
    lws_callback_on_writable(c->wsi);
  else
    ns_queue_on_drained(c);
  return 0;
}

void ns_conn_flush(ns_conn *c) {
  if (!c->wsi || c->state != NS_CONN_READY)
    return;
  if (c->unflushed || c->want_ping || lws_partial_buffered(c->wsi))
    lws_callback_on_writable(c->wsi);
  else if (ns_conn_on_writable(c) < 0)
    write_failed(c);
}

void ns_conn_heartbeat(ns_conn *c, int64_t now) {
  const ns_config *cfg = c->srv->cfg;
  if (!c->wsi || c->state == NS_CONN_CLOSING)
    return;
  if (now - c->last_rx_ms >= cfg->idle_timeout_ms) {
    /* The peer is gone or stuck: no close handshake to wait for. */
    c->drop = 1;
    ns_conn_close(c, 1006, "idle timeout");
    return;
  }
  /* A ping every heartbeat_interval (SPEC §7); the sweep runs once a
   * second, so a tick a little early still counts. */
  if (now - c->last_ping_ms >= cfg->heartbeat_interval_ms - 100) {
    c->last_ping_ms = now;
    /* Written now when nothing waits (as ns_conn_send does): a POLLOUT
     * round trip per ping cost two uv_poll_start (four epoll_ctl) each. */
    if (can_write_now(c)) {
      if (write_ping(c) < 0)
        write_failed(c);
    } else {
      c->want_ping = 1;
      lws_callback_on_writable(c->wsi);
    }
  }
}

int ns_conn_close_now(ns_conn *c) {
  if (c->close_started)
    return 0; /* lws is closing it: a second -1 would cut the handshake */
  if (c->drop)
    return -1; /* idle: no close handshake with a silent peer */
  if (lws_partial_buffered(c->wsi)) {
    int64_t left = c->close_at_ms + NS_CONN_CLOSE_FLUSH_MS - ns_mono_ms();
    if (left > 0) {
      /* WRITEABLE brings the timer back once lws has flushed; this one
       * ends the wait for a reader that never reads. */
      lws_set_timer_usecs(c->wsi, (lws_usec_t)left * LWS_US_PER_MS);
      lws_callback_on_writable(c->wsi);
      return 0;
    }
  }
  lws_close_reason(c->wsi, (enum lws_close_status)c->close_code,
                   (unsigned char *)c->close_reason, strlen(c->close_reason));
  c->close_started = 1;
  return -1;
}

void ns_conn_close(ns_conn *c, int code, const char *reason) {
  char label[16];
  if (!c->wsi || c->close_code)
    return;
  c->close_code = code;
  snprintf(label, sizeof(label), "%d", code);
  ns_metrics_inc(&c->srv->metrics, NS_M_CLOSES, label);
  c->close_reason = reason;
  c->close_at_ms = ns_mono_ms();
  c->state = NS_CONN_CLOSING;
  /* The close frame is sent from LWS_CALLBACK_TIMER; the cancel wakes lws so
   * a timer set from a Redis/PG callback is armed promptly. */
  lws_set_timer_usecs(c->wsi, 1);
  lws_cancel_service(c->srv->ctx);
}
