/*
 * test_ratelimit.c -- token bucket arithmetic and the bounded per-IP table.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>

#include "ns_ratelimit.h"

static void test_bucket_burst_then_rate(void **state) {
  ns_bucket b;
  int i, ok = 0;
  (void)state;
  ns_bucket_init(&b, 50, 1000);
  for (i = 0; i < 60; i++)
    ok += ns_bucket_take(&b, 20, 50, 1000);
  assert_int_equal(ok, 50);                       /* burst */
  assert_int_equal(ns_bucket_take(&b, 20, 50, 1049), 0); /* 0.98 token */
  assert_int_equal(ns_bucket_take(&b, 20, 50, 1050), 1); /* 1 token after 50 ms */
  assert_int_equal(ns_bucket_take(&b, 20, 50, 1050), 0);
  /* A long pause refills only up to the burst. */
  ok = 0;
  for (i = 0; i < 60; i++)
    ok += ns_bucket_take(&b, 20, 50, 100000);
  assert_int_equal(ok, 50);
}

static void test_bucket_rate_zero_is_off(void **state) {
  ns_bucket b;
  int i;
  (void)state;
  ns_bucket_init(&b, 1, 0);
  for (i = 0; i < 1000; i++)
    assert_int_equal(ns_bucket_take(&b, 0, 1, 0), 1);
}

static void test_bucket_clock_going_back(void **state) {
  ns_bucket b;
  (void)state;
  ns_bucket_init(&b, 1, 5000);
  assert_int_equal(ns_bucket_take(&b, 1, 1, 5000), 1);
  assert_int_equal(ns_bucket_take(&b, 1, 1, 4000), 0); /* no refill backwards */
}

static void test_iplimit_per_ip(void **state) {
  ns_iplimit *t = ns_iplimit_new(1024, 50, 100);
  int i, a = 0, b = 0;
  (void)state;
  for (i = 0; i < 150; i++) {
    a += ns_iplimit_allow(t, "127.0.0.2", 0);
    b += ns_iplimit_allow(t, "127.0.0.3", 0);
  }
  assert_int_equal(a, 100);
  assert_int_equal(b, 100);
  assert_int_equal(ns_iplimit_allow(t, "127.0.0.2", 20), 1); /* 1 token per 20 ms */
  assert_int_equal(ns_iplimit_size(t), 2);
  ns_iplimit_free(&t);
  assert_null(t);
}

static void test_iplimit_bounded(void **state) {
  ns_iplimit *t = ns_iplimit_new(64, 1, 1);
  char ip[32];
  int i;
  (void)state;
  for (i = 0; i < 10000; i++) {
    snprintf(ip, sizeof(ip), "10.0.%d.%d", i / 256, i % 256);
    assert_int_equal(ns_iplimit_allow(t, ip, i), 1); /* each new IP: full bucket */
  }
  assert_true(ns_iplimit_size(t) <= 64);
  ns_iplimit_free(&t);
}

static void test_iplimit_off(void **state) {
  ns_iplimit *t = ns_iplimit_new(16, 0, 0);
  int i;
  (void)state;
  for (i = 0; i < 1000; i++)
    assert_int_equal(ns_iplimit_allow(t, "1.2.3.4", 0), 1);
  ns_iplimit_free(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bucket_burst_then_rate),
      cmocka_unit_test(test_bucket_rate_zero_is_off),
      cmocka_unit_test(test_bucket_clock_going_back),
      cmocka_unit_test(test_iplimit_per_ip),
      cmocka_unit_test(test_iplimit_bounded),
      cmocka_unit_test(test_iplimit_off),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
