/*
 * test_rslot.c -- Redis Cluster slot routing (ns_rslot): CRC16 against the
 * check value of the Redis Cluster specification, slots against what
 * `CLUSTER KEYSLOT` answers on Redis 7.0 (recorded with redis-cli on a
 * cluster-enabled node), the hash-tag rules, redirects and seed lists.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "ns_rslot.h"

static unsigned slot(const char *k) { return ns_rslot_of(k, strlen(k)); }

static void test_crc16_vectors(void **state) {
  (void)state;
  /* The specification's check value for CRC16/XMODEM. */
  assert_int_equal(ns_rslot_crc16("123456789", 9), 0x31C3);
  assert_int_equal(ns_rslot_crc16("", 0), 0);
  /* 0x31C3 mod 16384 = 12739: what CLUSTER KEYSLOT 123456789 says. */
  assert_int_equal(slot("123456789"), 12739);
}

static void test_keyslot_like_redis(void **state) {
  (void)state;
  assert_int_equal(slot("foo"), 12182);
  assert_int_equal(slot("bar"), 5061);
  assert_int_equal(slot("hello"), 866);
  assert_int_equal(slot("q:{alice}:phone"), 749);
  assert_int_equal(slot("x{\xc3\xbc}y"), 9552); /* bytes, not characters */
  /* binary safe: a NUL inside the key counts */
  assert_int_not_equal(ns_rslot_of("a\0b", 3), ns_rslot_of("a", 1));
}

static void test_hash_tags(void **state) {
  (void)state;
  /* the tag alone is hashed */
  assert_int_equal(slot("{user1000}.following"), 3443);
  assert_int_equal(slot("{user1000}.followers"), 3443);
  assert_int_equal(slot("foo{bar}{zap}"), 5061); /* first tag: "bar" */
  assert_int_equal(slot("foo{bar}{zap}"), slot("bar"));
  assert_int_equal(slot("foo{{bar}}zap"), 4015); /* tag "{bar" */
  assert_int_equal(slot("foo{{bar}}zap"), slot("{bar"));
  /* an empty or unclosed tag: the whole key */
  assert_int_equal(slot("foo{}{bar}"), 8363);
  assert_int_equal(slot("{}"), 15257);
  assert_int_equal(slot("{"), 4092);
  assert_int_equal(slot("}{"), 12793);
  assert_int_equal(slot("a{b"), 13340);
  /* every key of a user shares the user's slot */
  assert_int_equal(slot("presence:{alice}"), slot("q:{alice}:phone"));
  assert_int_equal(slot("u:{alice}"), slot("alice"));
  assert_int_equal(slot("pfx:qd:{alice}:42"), slot("alice"));
  assert_true(ns_rslot_has_tag("u:{alice}", 9));
  assert_true(ns_rslot_has_tag("{a}", 3));
  assert_false(ns_rslot_has_tag("bcast", 5));
  assert_false(ns_rslot_has_tag("a{}b", 4));
  assert_false(ns_rslot_has_tag("a{b", 3));
}

static void test_redirects(void **state) {
  char host[NS_RSLOT_HOST_MAX + 1];
  unsigned s = 0;
  int port = 0;
  const char *m = "MOVED 3999 127.0.0.1:6381";
  const char *a = "ASK 12182 10.0.0.7:7002";
  const char *v6 = "MOVED 1 ::1:7000";
  (void)state;
  assert_int_equal(ns_rslot_redirect(m, strlen(m), &s, host, &port), 1);
  assert_int_equal(s, 3999);
  assert_string_equal(host, "127.0.0.1");
  assert_int_equal(port, 6381);
  assert_int_equal(ns_rslot_redirect(a, strlen(a), &s, host, &port), 2);
  assert_int_equal(s, 12182);
  assert_string_equal(host, "10.0.0.7");
  assert_int_equal(port, 7002);
  assert_int_equal(ns_rslot_redirect(v6, strlen(v6), &s, host, &port), 1);
  assert_string_equal(host, "::1");
  assert_int_equal(port, 7000);
  /* malformed: a plain error */
  {
    static const char *bad[] = {"MOVED", "MOVED 16384 h:1", "MOVED 1 h",
                                "MOVED 1 :7000", "MOVED x h:1", "MOVED 1 h:0",
                                "MOVED 1 h:70000", "ASK 1 h:1x",
                                "ERR unknown", "MOVED  1 h:1", "CLUSTERDOWN"};
    size_t i;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
      assert_int_equal(
          ns_rslot_redirect(bad[i], strlen(bad[i]), &s, host, &port), 0);
  }
  /* length-bounded: bytes past `len` are not read */
  assert_int_equal(ns_rslot_redirect(m, 10, &s, host, &port), 0);
}

static void test_seeds(void **state) {
  ns_rslot_seed sd[NS_RSLOT_SEEDS_MAX];
  (void)state;
  assert_int_equal(
      ns_rslot_seeds("redis://127.0.0.1:7001,127.0.0.1:7002,h3/", sd, 16), 3);
  assert_string_equal(sd[0].host, "127.0.0.1");
  assert_int_equal(sd[0].port, 7001);
  assert_int_equal(sd[1].port, 7002);
  assert_string_equal(sd[2].host, "h3");
  assert_int_equal(sd[2].port, 6379);
  assert_int_equal(ns_rslot_seeds("redis://a:1/0", sd, 16), 1);
  assert_int_equal(ns_rslot_seeds("redis://a:1", sd, 16), 1);
  assert_int_equal(ns_rslot_seeds("redis://u:p@a:1,b:2", sd, 16), 2);
  assert_int_equal(ns_rslot_seeds("redis://a:1/3", sd, 16), -1); /* db 3 */
  assert_int_equal(ns_rslot_seeds("redis://a:1,", sd, 16), -1);
  assert_int_equal(ns_rslot_seeds("redis://,a", sd, 16), -1);
  assert_int_equal(ns_rslot_seeds("redis://a:0", sd, 16), -1);
  assert_int_equal(ns_rslot_seeds("http://a:1", sd, 16), -1);
  assert_int_equal(ns_rslot_seeds("redis://", sd, 16), -1);
  assert_int_equal(ns_rslot_seeds("redis://a,b,c", sd, 2), -1); /* > max */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_crc16_vectors),
      cmocka_unit_test(test_keyslot_like_redis),
      cmocka_unit_test(test_hash_tags),
      cmocka_unit_test(test_redirects),
      cmocka_unit_test(test_seeds),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
