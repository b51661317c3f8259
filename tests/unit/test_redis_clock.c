/*
 * test_redis_clock.c -- the Redis liveness decision (ns_redis_clock): a
 * reply's age is charged only for time the loop could have read it, so a
 * loop stalled by its own fan-out never makes an answering Redis look down,
 * while a silent Redis on a loop that keeps time is still caught in 3-4 s.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "ns_redis.h"

#define CHARGE 1050 /* what ns_redis.c passes: 1 s period + jitter */
#define LIMIT 3000  /* PING_TIMEOUT_MS / CANARY_TIMEOUT_MS */

/* Ticks every `step` ms from `*now` until the clock passes LIMIT or `n`
 * ticks are done; returns the tick count at which it passed (0 = never). */
static int ticks_until_overdue(ns_redis_clock *c, int64_t *now, int64_t step,
                               int n) {
  int i;
  for (i = 1; i <= n; i++) {
    *now += step;
    if (ns_redis_clock_tick(c, *now, CHARGE) > LIMIT)
      return i;
  }
  return 0;
}

static void test_silent_redis_on_idle_loop(void **state) {
  ns_redis_clock c = {0};
  int64_t now = 10000;
  (void)state;
  ns_redis_clock_tick(&c, now, CHARGE);
  ns_redis_clock_owe(&c, now); /* PING sent at this tick */
  /* 1001, 2002, 3003 ms: the third tick, as before the clock existed. */
  assert_int_equal(ticks_until_overdue(&c, &now, 1001, 10), 3);
  /* Exactly on time: the fourth tick, never later. */
  c = (ns_redis_clock){0};
  now = 10000;
  ns_redis_clock_tick(&c, now, CHARGE);
  ns_redis_clock_owe(&c, now);
  assert_int_equal(ticks_until_overdue(&c, &now, 1000, 10), 4);
}

static void test_stalled_loop_is_not_charged(void **state) {
  ns_redis_clock c = {0};
  int64_t now = 10000;
  (void)state;
  ns_redis_clock_tick(&c, now, CHARGE);
  ns_redis_clock_owe(&c, now);
  /* The loop blocks 5 s in a fan-out right after the PING: one tick's
   * worth is charged, not 5 s. */
  now += 5000;
  assert_int_equal(ns_redis_clock_tick(&c, now, CHARGE), CHARGE);
  /* The PONG is read in the next loop iteration. */
  ns_redis_clock_heard(&c, now + 3);
  ns_redis_clock_settle(&c);
  now += 1000;
  assert_int_equal(ns_redis_clock_tick(&c, now, CHARGE), 0);
  /* Repeated 10 s stalls with no reply still take 3 charged ticks. */
  ns_redis_clock_owe(&c, now);
  assert_int_equal(ticks_until_overdue(&c, &now, 10000, 10), 3);
}

static void test_any_reply_restarts_the_wait(void **state) {
  ns_redis_clock c = {0};
  int64_t now = 10000;
  int i;
  (void)state;
  ns_redis_clock_tick(&c, now, CHARGE);
  ns_redis_clock_owe(&c, now);
  /* A long pipeline: the PONG is far behind, but some reply arrives every
   * 2 s, so Redis is answering and never overdue. */
  for (i = 0; i < 20; i++) {
    now += 1000;
    assert_true(ns_redis_clock_tick(&c, now, CHARGE) <= LIMIT);
    if (i % 2 == 0)
      ns_redis_clock_heard(&c, now + 500);
  }
  /* Charged from the reply, not from the previous tick. */
  ns_redis_clock_heard(&c, now + 700);
  now += 1000;
  assert_int_equal(ns_redis_clock_tick(&c, now, CHARGE), 300);
}

static void test_owe_keeps_the_oldest_wait(void **state) {
  ns_redis_clock c = {0};
  (void)state;
  ns_redis_clock_tick(&c, 1000, CHARGE);
  ns_redis_clock_owe(&c, 1200);
  ns_redis_clock_owe(&c, 1900); /* another command: still owed since 1200 */
  assert_int_equal(ns_redis_clock_tick(&c, 2000, CHARGE), 800);
  /* heard() when nothing is owed does not start a wait. */
  ns_redis_clock_settle(&c);
  ns_redis_clock_heard(&c, 2100);
  assert_int_equal(ns_redis_clock_tick(&c, 9000, CHARGE), 0);
  /* A clock going back charges nothing. */
  ns_redis_clock_owe(&c, 9500);
  assert_int_equal(ns_redis_clock_tick(&c, 9400, CHARGE), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_silent_redis_on_idle_loop),
      cmocka_unit_test(test_stalled_loop_is_not_charged),
      cmocka_unit_test(test_any_reply_restarts_the_wait),
      cmocka_unit_test(test_owe_keeps_the_oldest_wait),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
