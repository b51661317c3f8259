/*
 * test_static.c -- ns_static's pure parts (the embedded file table, the
 * loopback Host check and the dev-token user check) and the dev_console
 * configuration rules they rely on (ns_config: boolean key, loopback
 * `listen`, HS256 only).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "ns_common.h"
#include "ns_config.h"
#include "ns_static.h"

#include <string.h>

static void test_table(void **state) {
  const ns_static_asset *page = ns_static_find("/console"), *a;
  assert_non_null(page);
  assert_ptr_equal(ns_static_find("/console/"), page);
  assert_string_equal(page->ctype, "text/html; charset=utf-8");
  assert_non_null(strstr((const char *)page->data, "/console/app.js"));
  assert_int_equal(page->data[page->len], 0); /* NUL after the bytes */
  a = ns_static_find("/console/app.js");
  assert_non_null(a);
  assert_string_equal(a->ctype, "text/javascript; charset=utf-8");
  assert_non_null(ns_static_find("/console/console.css"));
  a = ns_static_find("/notisync.js");
  assert_non_null(a);
  assert_true(a->len > 1000);
  assert_null(ns_static_find("/console/index.html")); /* served as /console */
  assert_null(ns_static_find("/console/../notisync.js"));
  assert_null(ns_static_find("/consolex"));
  assert_null(ns_static_find(""));
}

static void test_loopback_host(void **state) {
  static const char *const yes[] = {
      "localhost", "LOCALHOST:8080", "127.0.0.1", "127.0.0.1:80",
      "127.255.0.9:1", "[::1]", "[::1]:8080"};
  static const char *const no[] = {
      "", "evil.example", "evil.example:80", "10.0.0.1", "128.0.0.1",
      "localhost.evil.example", "::1", "[::1", "[::1]x", "[::2]:80",
      "0.0.0.0:8080", ":8080", "127.0.0.1.evil.example"};
  for (size_t i = 0; i < NS_ARRAY_SIZE(yes); i++)
    assert_true(ns_static_host_is_loopback(yes[i]));
  for (size_t i = 0; i < NS_ARRAY_SIZE(no); i++)
    assert_false(ns_static_host_is_loopback(no[i]));
}

static void test_dev_user(void **state) {
  char long_user[130];
  assert_true(ns_static_dev_user_ok("alice"));
  assert_true(ns_static_dev_user_ok("a.b-c_d:e@f+g"));
  assert_false(ns_static_dev_user_ok(""));
  assert_false(ns_static_dev_user_ok("a b"));
  assert_false(ns_static_dev_user_ok("<script>"));
  assert_false(ns_static_dev_user_ok("a\"b"));
  memset(long_user, 'x', 128);
  long_user[128] = '\0';
  assert_true(ns_static_dev_user_ok(long_user));
  long_user[128] = 'x';
  long_user[129] = '\0';
  assert_false(ns_static_dev_user_ok(long_user));
}

/* dev_console = value with `listen`; returns validate()'s result. */
static int validate_with(const char *value, const char *listen) {
  ns_config c;
  char err[256];
  int rc;
  ns_config_defaults(&c);
  assert_int_equal(ns_config_set(&c, "listen", listen, err, sizeof err), 0);
  rc = ns_config_set(&c, "dev_console", value, err, sizeof err);
  if (rc == 0)
    rc = ns_config_validate(&c, err, sizeof err);
  if (rc != 0)
    assert_non_null(strstr(err, "dev_console"));
  ns_config_free(&c);
  return rc;
}

static void test_config_rules(void **state) {
  ns_config c;
  char err[256];
  ns_config_defaults(&c);
  assert_int_equal(c.dev_console, 0);
  assert_int_equal(ns_config_set(&c, "dev_console", "true", err, sizeof err), 0);
  assert_int_equal(c.dev_console, 1);
  assert_int_equal(ns_config_set(&c, "dev_console", "off", err, sizeof err), 0);
  assert_int_equal(c.dev_console, 0);
  assert_int_equal(ns_config_set(&c, "dev_console", "maybe", err, sizeof err),
                   NS_EINVAL);
  assert_non_null(strstr(err, "expected true or false"));
  assert_int_equal(c.dev_console, 0);
  ns_config_free(&c);

  assert_int_equal(validate_with("false", "0.0.0.0:8080"), 0);
  assert_int_equal(validate_with("true", "127.0.0.1:8080"), 0);
  assert_int_equal(validate_with("true", "127.1.2.3:8080"), 0);
  assert_int_equal(validate_with("true", "[::1]:8080"), 0);
  assert_int_equal(validate_with("true", "0.0.0.0:8080"), NS_EINVAL);
  assert_int_equal(validate_with("true", "[::]:8080"), NS_EINVAL);
  assert_int_equal(validate_with("true", "localhost:8080"), NS_EINVAL);
  assert_int_equal(validate_with("true", "192.168.1.2:8080"), NS_EINVAL);
  assert_int_equal(validate_with("true", "[::ffff:127.0.0.1]:8080"), NS_EINVAL);

  ns_config_defaults(&c);
  assert_int_equal(ns_config_set(&c, "dev_console", "yes", err, sizeof err), 0);
  assert_int_equal(ns_config_set(&c, "jwt_secret", "s", err, sizeof err), 0);
  assert_int_equal(ns_config_need_jwt_key(&c, err, sizeof err), 0);
  assert_int_equal(ns_config_set(&c, "jwt_issuer", "https://i", err, sizeof err), 0);
  assert_int_equal(ns_config_need_jwt_key(&c, err, sizeof err), NS_EINVAL);
  assert_non_null(strstr(err, "dev_console"));
  ns_config_free(&c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_table),
      cmocka_unit_test(test_loopback_host),
      cmocka_unit_test(test_dev_user),
      cmocka_unit_test(test_config_rules),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
