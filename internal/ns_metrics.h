/*
 * ns_metrics.h -- counters, gauges and one histogram, rendered in the
 * Prometheus text exposition format (SPEC §8).  Pure: no I/O.
 *
 * Labelled counter families hold at most NS_METRIC_LABELS distinct label
 * values; further values are counted under "other" so a client cannot grow
 * the table (message types come from clients).
 */
#ifndef NS_METRICS_H
#define NS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define NS_METRIC_LABELS 24

typedef enum {
  NS_M_HANDSHAKES = 0,   /* notisync_handshakes_total{result} */
  NS_M_SENT,             /* notisync_messages_sent_total{type} */
  NS_M_RECEIVED,         /* notisync_messages_received_total{type} */
  NS_M_QUEUE_DROPPED,    /* notisync_queue_dropped_total{reason} */
  NS_M_HTTP,             /* notisync_http_requests_total{status} */
  NS_M_CLUSTER,          /* notisync_cluster_events_total{event} */
  NS_M_CLOSES,           /* notisync_closes_total{code} */
  NS_M__FAMILIES
} ns_metric_family;

typedef struct ns_metric_family_data {
  size_t n;
  char label[NS_METRIC_LABELS][40];
  uint64_t value[NS_METRIC_LABELS];
} ns_metric_family_data;

#define NS_LAT_BUCKETS 12

typedef struct ns_metrics {
  ns_metric_family_data fam[NS_M__FAMILIES];
  uint64_t queue_appends;
  uint64_t slow_consumer_closes;
  /* SPEC §9 (ns_sched.c) */
  uint64_t notif_expired;       /* deleted by notification_retention */
  uint64_t sched_queued;        /* scheduled notifications queued at deliver_at */
  uint64_t sched_canceled;      /* found canceled when their time came */
  uint64_t sched_round_max;     /* rows one scheduler round claims at most */
  uint64_t sched_round_last;    /* rows the latest round claimed */
  double sched_lag_s;           /* deliver_at to queued, latest round's worst */
  uint64_t lat_bucket[NS_LAT_BUCKETS + 1]; /* last = +Inf */
  uint64_t lat_count;
  double lat_sum;
} ns_metrics;

/* Sampled at render time: gauges, and the counters other modules keep.
 * Each bounded buffer shows its fill, and its limit where one number is. */
typedef struct ns_metrics_gauges {
  uint64_t connections;
  uint64_t device_connections;
  uint64_t outbound_bytes;  /* outbound rings (max_outbound_bytes each) */
  uint64_t users;
  int redis_up;
  int postgres_up;
  int64_t uptime_s;
  uint64_t inbound_bytes;   /* message assembly (max_message_bytes each) */
  uint64_t http_body_bytes; /* request bodies (max_body_bytes each) */
  uint64_t redis_inflight, redis_inflight_limit;
  uint64_t pg_queued, pg_queued_limit;
  uint64_t ip_entries, ip_entries_limit;
  uint64_t redis_overloads, pg_overloads; /* refused at the limit */
  unsigned long long redis_redirects[3]; /* cluster: moved, ask, retry */
  uint64_t reg_waiting;     /* device connects waiting for a registration batch */
  uint64_t seen_waiting, seen_waiting_limit; /* closed devices' last_seen */
  uint64_t seen_dropped;    /* last_seen writes dropped at the limit */
  /* comment events whose PUBLISH failed (ns_comments_retry) */
  uint64_t cev_pending, cev_pending_bytes, cev_pending_limit,
      cev_pending_bytes_limit;
  uint64_t cev_deferred, cev_retried, cev_lost;
} ns_metrics_gauges;

void ns_metrics_init(ns_metrics *m);
void ns_metrics_inc(ns_metrics *m, ns_metric_family f, const char *label);
void ns_metrics_add(ns_metrics *m, ns_metric_family f, const char *label,
                    uint64_t n);
void ns_metrics_observe_latency(ns_metrics *m, double seconds);

/* Renders everything into a malloc'd NUL-terminated string (*len bytes). */
char *ns_metrics_render(const ns_metrics *m, const ns_metrics_gauges *g,
                        size_t *len);

#endif
