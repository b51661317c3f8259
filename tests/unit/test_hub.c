/*
 * test_hub.c -- the connection registry: one connection per device,
 * replacement, removal of stale connections, counts and iteration.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "ns_hub.h"

static void test_add_and_get(void **state) {
  ns_hub *h = ns_hub_new();
  int a, b;
  void *old = (void *)1;
  (void)state;
  assert_int_equal(ns_hub_add(h, "u1", "phone", &a, &old), 1);
  assert_null(old);
  assert_int_equal(ns_hub_add(h, "u1", "tablet", &b, &old), 2);
  assert_null(old);
  assert_ptr_equal(ns_hub_get(h, "u1", "phone"), &a);
  assert_ptr_equal(ns_hub_get(h, "u1", "tablet"), &b);
  assert_null(ns_hub_get(h, "u2", "phone"));
  assert_int_equal(ns_hub_user_devices(h, "u1"), 2);
  assert_int_equal(ns_hub_user_count(h), 1);
  assert_int_equal(ns_hub_conn_count(h), 2);
  ns_hub_free(&h);
  assert_null(h);
}

static void test_replace_returns_old(void **state) {
  ns_hub *h = ns_hub_new();
  int a, b;
  void *old = NULL;
  (void)state;
  ns_hub_add(h, "u1", "phone", &a, &old);
  assert_int_equal(ns_hub_add(h, "u1", "phone", &b, &old), 1);
  assert_ptr_equal(old, &a);
  assert_ptr_equal(ns_hub_get(h, "u1", "phone"), &b);
  assert_int_equal(ns_hub_conn_count(h), 1);
  /* The replaced connection's close must not remove the new one. */
  assert_int_equal(ns_hub_remove(h, "u1", "phone", &a), 0);
  assert_ptr_equal(ns_hub_get(h, "u1", "phone"), &b);
  assert_int_equal(ns_hub_remove(h, "u1", "phone", &b), 1);
  assert_int_equal(ns_hub_user_count(h), 0);
  assert_int_equal(ns_hub_conn_count(h), 0);
  ns_hub_free(&h);
}

static void count_cb(void *conn, void *arg) {
  (void)conn;
  (*(int *)arg)++;
}

static void test_many_users_grow_and_iterate(void **state) {
  ns_hub *h = ns_hub_new();
  static int conns[3000];
  char user[32];
  void *old;
  int i, n = 0;
  (void)state;
  for (i = 0; i < 3000; i++) {
    snprintf(user, sizeof(user), "user-%d", i / 3);
    ns_hub_add(h, user, i % 3 == 0 ? "a" : i % 3 == 1 ? "b" : "c", &conns[i],
               &old);
    assert_null(old);
  }
  assert_int_equal(ns_hub_user_count(h), 1000);
  assert_int_equal(ns_hub_conn_count(h), 3000);
  ns_hub_each(h, NULL, count_cb, &n);
  assert_int_equal(n, 3000);
  n = 0;
  ns_hub_each(h, "user-42", count_cb, &n);
  assert_int_equal(n, 3);
  n = 0;
  ns_hub_each(h, "nobody", count_cb, &n);
  assert_int_equal(n, 0);
  assert_ptr_equal(ns_hub_get(h, "user-999", "c"), &conns[2999]);
  for (i = 0; i < 3000; i++) {
    snprintf(user, sizeof(user), "user-%d", i / 3);
    assert_int_equal(
        ns_hub_remove(h, user, i % 3 == 0 ? "a" : i % 3 == 1 ? "b" : "c",
                      &conns[i]),
        1);
  }
  assert_int_equal(ns_hub_user_count(h), 0);
  ns_hub_free(&h);
}

static void test_remove_unknown(void **state) {
  ns_hub *h = ns_hub_new();
  int a;
  void *old;
  (void)state;
  assert_int_equal(ns_hub_remove(h, "u", "d", &a), 0);
  ns_hub_add(h, "u", "d", &a, &old);
  assert_int_equal(ns_hub_remove(h, "u", "other", &a), 0);
  assert_int_equal(ns_hub_remove(h, "other", "d", &a), 0);
  assert_int_equal(ns_hub_conn_count(h), 1);
  ns_hub_free(&h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_add_and_get),
      cmocka_unit_test(test_replace_returns_old),
      cmocka_unit_test(test_many_users_grow_and_iterate),
      cmocka_unit_test(test_remove_unknown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
