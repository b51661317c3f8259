/*
 * ns_metrics.c -- in-process metrics and their Prometheus rendering.
 */
#include "ns_metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ns_common.h"

static const struct {
  const char *name, *label, *help;
} families[NS_M__FAMILIES] = {
    {"notisync_handshakes_total", "result", "WebSocket handshakes by result"},
    {"notisync_messages_sent_total", "type", "Messages written to sockets"},
    {"notisync_messages_received_total", "type", "Client messages received"},
    {"notisync_queue_dropped_total", "reason", "Queued messages dropped"},
    {"notisync_http_requests_total", "status", "REST requests by status"},
    {"notisync_cluster_events_total", "event",
     "Scale-out events: subscriber reconnects, canary losses, reaping"},
    {"notisync_closes_total", "code",
     "WebSocket connections closed by the server, by close code"},
};

static const double lat_bounds[NS_LAT_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5};

void ns_metrics_init(ns_metrics *m) { memset(m, 0, sizeof(*m)); }

void ns_metrics_add(ns_metrics *m, ns_metric_family f, const char *label,
                    uint64_t n) {
  ns_metric_family_data *d = &m->fam[f];
  size_t i;
  for (i = 0; i < d->n; i++) {
    if (strcmp(d->label[i], label) == 0) {
      d->value[i] += n;
      return;
    }
  }
  if (d->n >= NS_METRIC_LABELS - 1 && strcmp(label, "other") != 0) {
    ns_metrics_add(m, f, "other", n);
    return;
  }
  snprintf(d->label[d->n], sizeof(d->label[0]), "%s", label);
  d->value[d->n++] = n;
}

void ns_metrics_inc(ns_metrics *m, ns_metric_family f, const char *label) {
  ns_metrics_add(m, f, label, 1);
}

void ns_metrics_observe_latency(ns_metrics *m, double s) {
  size_t i;
  for (i = 0; i < NS_LAT_BUCKETS && s > lat_bounds[i]; i++)
    ;
  m->lat_bucket[i]++;
  m->lat_count++;
  m->lat_sum += s;
}

typedef struct out {
  char *p;
  size_t len, cap;
} out;

static void outf(out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void outf(out *o, const char *fmt, ...) {
  va_list ap;
  int n;
  for (;;) {
    va_start(ap, fmt);
    n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < o->cap - o->len) {
      o->len += (size_t)n;
      return;
    }
    o->cap *= 2;
    o->p = ns_xrealloc(o->p, o->cap);
  }
}

static void gauge(out *o, const char *name, const char *help, uint64_t v) {
  outf(o, "# HELP %s %s\n# TYPE %s gauge\n%s %llu\n", name, help, name, name,
       (unsigned long long)v);
}

static void counter(out *o, const char *name, const char *help, uint64_t v) {
  outf(o, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name,
       name, (unsigned long long)v);
}

char *ns_metrics_render(const ns_metrics *m, const ns_metrics_gauges *g,
                        size_t *len) {
  out o = {ns_xmalloc(4096), 0, 4096};
  size_t f, i;
  uint64_t cum = 0;

  gauge(&o, "notisync_connections", "Open WebSocket connections",
        g->connections);
  gauge(&o, "notisync_device_connections", "Open device connections",
        g->device_connections);
  gauge(&o, "notisync_users", "Users with a device connected here", g->users);
  gauge(&o, "notisync_outbound_bytes", "Bytes queued in outbound rings",
        g->outbound_bytes);
  gauge(&o, "notisync_redis_up", "1 when Redis (commands and pub/sub) is up",
        (uint64_t)g->redis_up);
  gauge(&o, "notisync_postgres_up", "1 when PostgreSQL is up",
        (uint64_t)g->postgres_up);
  gauge(&o, "notisync_uptime_seconds", "Seconds since start",
        (uint64_t)g->uptime_s);
  gauge(&o, "notisync_inbound_bytes",
        "Bytes held assembling fragmented client messages", g->inbound_bytes);
  gauge(&o, "notisync_http_body_bytes",
        "Bytes held for REST request bodies being read", g->http_body_bytes);
  gauge(&o, "notisync_redis_inflight_commands",
        "Redis commands sent and not yet answered", g->redis_inflight);
  gauge(&o, "notisync_redis_inflight_commands_limit",
        "Redis commands in flight at most", g->redis_inflight_limit);
  gauge(&o, "notisync_postgres_queued_queries",
        "PostgreSQL queries queued or running", g->pg_queued);
  gauge(&o, "notisync_postgres_queued_queries_limit",
        "PostgreSQL queries queued at most", g->pg_queued_limit);
  gauge(&o, "notisync_handshake_limiter_entries",
        "Client addresses tracked by the handshake limiter", g->ip_entries);
  gauge(&o, "notisync_handshake_limiter_entries_limit",
        "Client addresses tracked at most", g->ip_entries_limit);
  gauge(&o, "notisync_registrations_waiting",
        "Device connects waiting for the next registration batch (at most "
        "one per connection)", g->reg_waiting);
  gauge(&o, "notisync_last_seen_waiting",
        "Closed devices whose last_seen write waits for the next batch",
        g->seen_waiting);
  gauge(&o, "notisync_last_seen_waiting_limit",
        "Closed devices' last_seen writes waiting at most", g->seen_waiting_limit);
  counter(&o, "notisync_last_seen_dropped_total",
          "last_seen writes dropped at the limit (connect refreshes it)",
          g->seen_dropped);
  gauge(&o, "notisync_comment_events_pending",
        "Comment events waiting for Redis to be published again",
        g->cev_pending);
  gauge(&o, "notisync_comment_events_pending_limit",
        "Comment events waiting at most", g->cev_pending_limit);
  gauge(&o, "notisync_comment_events_pending_bytes",
        "Payload bytes of the comment events waiting", g->cev_pending_bytes);
  gauge(&o, "notisync_comment_events_pending_limit_bytes",
        "Payload bytes of waiting comment events at most",
        g->cev_pending_bytes_limit);
  counter(&o, "notisync_comment_events_deferred_total",
          "Comment event publishes that failed and were kept for a retry",
          g->cev_deferred);
  counter(&o, "notisync_comment_events_retried_total",
          "Comment events published again once Redis was back",
          g->cev_retried);
  counter(&o, "notisync_comment_events_lost_total",
          "Comment events dropped unpublished (retry queue full, no memory, "
          "Redis error)", g->cev_lost);
  outf(&o, "# HELP notisync_overload_rejections_total Requests refused because "
           "a backend queue was full\n# TYPE notisync_overload_rejections_total "
           "counter\nnotisync_overload_rejections_total{queue=\"redis\"} %llu\n"
           "notisync_overload_rejections_total{queue=\"postgres\"} %llu\n",
       (unsigned long long)g->redis_overloads,
       (unsigned long long)g->pg_overloads);
  outf(&o, "# HELP notisync_redis_redirects_total Redis Cluster answers "
           "followed: MOVED, ASK, and retried TRYAGAIN/CLUSTERDOWN/MASTERDOWN/"
           "LOADING\n# TYPE notisync_redis_redirects_total counter\n"
           "notisync_redis_redirects_total{kind=\"moved\"} %llu\n"
           "notisync_redis_redirects_total{kind=\"ask\"} %llu\n"
           "notisync_redis_redirects_total{kind=\"retry\"} %llu\n",
       g->redis_redirects[0], g->redis_redirects[1], g->redis_redirects[2]);
  counter(&o, "notisync_queue_appends_total", "Messages appended to queues",
          m->queue_appends);
  counter(&o, "notisync_slow_consumer_closes_total",
          "Connections closed with 1013", m->slow_consumer_closes);
  counter(&o, "notisync_notifications_expired_total",
          "Notifications deleted by notification_retention", m->notif_expired);
  counter(&o, "notisync_scheduled_queued_total",
          "Scheduled notifications queued at their deliver_at", m->sched_queued);
  counter(&o, "notisync_scheduled_canceled_total",
          "Scheduled notifications found canceled when their time came",
          m->sched_canceled);
  gauge(&o, "notisync_scheduler_round_rows",
        "Due notifications claimed by the latest scheduler round",
        m->sched_round_last);
  gauge(&o, "notisync_scheduler_round_limit_rows",
        "Due notifications one scheduler round claims at most",
        m->sched_round_max);
  outf(&o, "# HELP notisync_scheduler_lag_seconds deliver_at to queued, worst "
           "of the latest round\n# TYPE notisync_scheduler_lag_seconds gauge\n"
           "notisync_scheduler_lag_seconds %g\n", m->sched_lag_s);
  for (f = 0; f < NS_M__FAMILIES; f++) {
    const ns_metric_family_data *d = &m->fam[f];
    outf(&o, "# HELP %s %s\n# TYPE %s counter\n", families[f].name,
         families[f].help, families[f].name);
    for (i = 0; i < d->n; i++)
      outf(&o, "%s{%s=\"%s\"} %llu\n", families[f].name, families[f].label,
           d->label[i], (unsigned long long)d->value[i]);
  }
  outf(&o,
       "# HELP notisync_delivery_latency_seconds Producer commit to socket "
       "write\n# TYPE notisync_delivery_latency_seconds histogram\n");
  for (i = 0; i < NS_LAT_BUCKETS; i++) {
    cum += m->lat_bucket[i];
    outf(&o, "notisync_delivery_latency_seconds_bucket{le=\"%g\"} %llu\n",
         lat_bounds[i], (unsigned long long)cum);
  }
  cum += m->lat_bucket[NS_LAT_BUCKETS];
  outf(&o, "notisync_delivery_latency_seconds_bucket{le=\"+Inf\"} %llu\n",
       (unsigned long long)cum);
  outf(&o, "notisync_delivery_latency_seconds_sum %g\n", m->lat_sum);
  outf(&o, "notisync_delivery_latency_seconds_count %llu\n",
       (unsigned long long)m->lat_count);
  *len = o.len;
  return o.p;
}
