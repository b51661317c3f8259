/*
 * test_metrics.c -- Prometheus rendering, label bounds and the latency
 * histogram's cumulative buckets.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ns_metrics.h"

static ns_metrics m;

static void test_render_has_required_families(void **state) {
  ns_metrics_gauges g = {.connections = 7, .device_connections = 5,
                         .outbound_bytes = 100, .users = 3, .redis_up = 1,
                         .uptime_s = 12};
  size_t len;
  char *s;
  (void)state;
  ns_metrics_init(&m);
  ns_metrics_inc(&m, NS_M_HANDSHAKES, "ok");
  ns_metrics_inc(&m, NS_M_HANDSHAKES, "ok");
  ns_metrics_inc(&m, NS_M_SENT, "pong");
  s = ns_metrics_render(&m, &g, &len);
  assert_int_equal(strlen(s), len);
  assert_non_null(strstr(s, "notisync_connections 7\n"));
  assert_non_null(strstr(s, "notisync_redis_up 1\n"));
  assert_non_null(strstr(s, "notisync_postgres_up 0\n"));
  assert_non_null(strstr(s, "notisync_handshakes_total{result=\"ok\"} 2\n"));
  assert_non_null(strstr(s, "notisync_messages_sent_total{type=\"pong\"} 1\n"));
  assert_non_null(strstr(s, "# TYPE notisync_messages_received_total counter"));
  assert_non_null(strstr(s, "notisync_queue_appends_total 0\n"));
  assert_non_null(strstr(s, "notisync_slow_consumer_closes_total 0\n"));
  assert_non_null(strstr(s, "# TYPE notisync_delivery_latency_seconds histogram"));
  free(s);
}

static void test_labels_are_bounded(void **state) {
  char label[32];
  int i;
  (void)state;
  ns_metrics_init(&m);
  for (i = 0; i < 1000; i++) {
    snprintf(label, sizeof(label), "t%d", i);
    ns_metrics_inc(&m, NS_M_RECEIVED, label);
  }
  assert_int_equal(m.fam[NS_M_RECEIVED].n, NS_METRIC_LABELS);
  assert_string_equal(m.fam[NS_M_RECEIVED].label[NS_METRIC_LABELS - 1], "other");
  assert_int_equal(m.fam[NS_M_RECEIVED].value[NS_METRIC_LABELS - 1],
                   1000 - (NS_METRIC_LABELS - 1));
}

static void test_add_counts_n(void **state) {
  size_t len;
  char *text;
  (void)state;
  ns_metrics_init(&m);
  ns_metrics_add(&m, NS_M_CLUSTER, "devices_reaped", 7);
  ns_metrics_inc(&m, NS_M_CLUSTER, "devices_reaped");
  ns_metrics_add(&m, NS_M_CLUSTER, "instances_reaped", 1);
  assert_int_equal(m.fam[NS_M_CLUSTER].n, 2);
  assert_int_equal(m.fam[NS_M_CLUSTER].value[0], 8);
  text = ns_metrics_render(&m, &(ns_metrics_gauges){0}, &len);
  assert_non_null(strstr(text, "notisync_cluster_events_total{event=\"devices_reaped\"} 8\n"));
  assert_non_null(strstr(text, "notisync_cluster_events_total{event=\"instances_reaped\"} 1\n"));
  free(text);
}

static void test_histogram_cumulative(void **state) {
  ns_metrics_gauges g = {0};
  size_t len;
  char *s;
  (void)state;
  ns_metrics_init(&m);
  ns_metrics_observe_latency(&m, 0.0002);
  ns_metrics_observe_latency(&m, 0.003);
  ns_metrics_observe_latency(&m, 100);
  s = ns_metrics_render(&m, &g, &len);
  assert_non_null(strstr(s, "notisync_delivery_latency_seconds_bucket{le=\"0.0005\"} 1\n"));
  assert_non_null(strstr(s, "notisync_delivery_latency_seconds_bucket{le=\"0.005\"} 2\n"));
  assert_non_null(strstr(s, "notisync_delivery_latency_seconds_bucket{le=\"5\"} 2\n"));
  assert_non_null(strstr(s, "notisync_delivery_latency_seconds_bucket{le=\"+Inf\"} 3\n"));
  assert_non_null(strstr(s, "notisync_delivery_latency_seconds_count 3\n"));
  free(s);
}

/* Every bounded buffer is visible: its fill, its limit, and the refusals
 * at the limit; server closes are counted by code. */
static void test_bounds_are_rendered(void **state) {
  ns_metrics_gauges g = {.inbound_bytes = 65537, .http_body_bytes = 1025,
                         .redis_inflight = 3, .redis_inflight_limit = 100000,
                         .pg_queued = 2, .pg_queued_limit = 40000,
                         .ip_entries = 9, .ip_entries_limit = 65536,
                         .redis_overloads = 4, .pg_overloads = 5};
  size_t len;
  char *s;
  (void)state;
  ns_metrics_init(&m);
  ns_metrics_inc(&m, NS_M_CLOSES, "1013");
  ns_metrics_inc(&m, NS_M_CLOSES, "1013");
  ns_metrics_inc(&m, NS_M_CLOSES, "4000");
  s = ns_metrics_render(&m, &g, &len);
  assert_non_null(strstr(s, "notisync_inbound_bytes 65537\n"));
  assert_non_null(strstr(s, "notisync_http_body_bytes 1025\n"));
  assert_non_null(strstr(s, "notisync_redis_inflight_commands 3\n"));
  assert_non_null(strstr(s, "notisync_redis_inflight_commands_limit 100000\n"));
  assert_non_null(strstr(s, "notisync_postgres_queued_queries 2\n"));
  assert_non_null(strstr(s, "notisync_postgres_queued_queries_limit 40000\n"));
  assert_non_null(strstr(s, "notisync_handshake_limiter_entries 9\n"));
  assert_non_null(strstr(s, "notisync_handshake_limiter_entries_limit 65536\n"));
  assert_non_null(strstr(s, "notisync_overload_rejections_total{queue=\"redis\"} 4\n"));
  assert_non_null(strstr(s, "notisync_overload_rejections_total{queue=\"postgres\"} 5\n"));
  assert_non_null(strstr(s, "notisync_closes_total{code=\"1013\"} 2\n"));
  assert_non_null(strstr(s, "notisync_closes_total{code=\"4000\"} 1\n"));
  free(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_render_has_required_families),
      cmocka_unit_test(test_labels_are_bounded),
      cmocka_unit_test(test_histogram_cumulative),
      cmocka_unit_test(test_add_counts_n),
      cmocka_unit_test(test_bounds_are_rendered),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
