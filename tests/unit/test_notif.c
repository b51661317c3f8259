/*
 * test_notif.c -- producer validation: every field's rule and the error
 * naming the field, user vs service tokens, id handling; the SPEC §9
 * fields at their boundaries, and RFC 3339 parsing.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ns_common.h"
#include "ns_notif.h"
#include "ns_proto.h"

static ns_principal user = {.sub = "alice"};
static ns_principal svc = {.sub = "backend", .is_service = 1};

/* The clock and settings of every check here. */
static const ns_notif_limits lim = {1780000000000LL, 4096, 7LL * 86400 * 1000, 0};

/* Parses `text` and validates it; returns the rc, fills in/err. */
static int run(const char *text, const ns_principal *who, ns_notif_in *in,
               ns_notif_err *err, json_object **keep) {
  json_object *o = NULL;
  ns_proto_err perr;
  assert_int_equal(ns_proto_parse_json(text, strlen(text), &o, &perr), 0);
  *keep = o;
  return ns_notif_parse(o, who, "", &lim, in, err);
}

static void test_valid_minimal_and_full(void **state) {
  ns_notif_in in;
  ns_notif_err err;
  json_object *o;
  (void)state;
  assert_int_equal(run("{\"app_name\":\"mail\",\"title\":\"hi\",\"body\":\"\"}",
                       &user, &in, &err, &o), 0);
  assert_string_equal(in.user_id, "alice");
  assert_true(ns_proto_valid_uuid(in.id, strlen(in.id)));
  assert_int_equal(in.priority, 0);
  assert_null(in.category);
  assert_string_equal(in.source_device, "");
  json_object_put(o);
  assert_int_equal(
      run("{\"id\":\"0B7E1C2A-1111-4222-8333-444455556666\",\"user_id\":\"bob\","
          "\"app_name\":\"a\",\"title\":\"t\",\"body\":\"b\",\"category\":\"c\","
          "\"priority\":-2,\"source_device\":\"phone-1\"}",
          &svc, &in, &err, &o), 0);
  assert_string_equal(in.id, "0b7e1c2a-1111-4222-8333-444455556666");
  assert_string_equal(in.user_id, "bob");
  assert_int_equal(in.priority, -2);
  assert_string_equal(in.category, "c");
  assert_string_equal(in.source_device, "phone-1");
  json_object_put(o);
}

static const struct {
  const char *body;
  int service;
  int status;
  const char *field;
} bad_cases[] = {
    {"{\"title\":\"t\",\"body\":\"b\"}", 0, 400, "app_name"},
    {"{\"app_name\":\"\",\"title\":\"t\",\"body\":\"b\"}", 0, 400, "app_name"},
    {"{\"app_name\":\"a\",\"body\":\"b\"}", 0, 400, "title"},
    {"{\"app_name\":\"a\",\"title\":5,\"body\":\"b\"}", 0, 400, "title"},
    {"{\"app_name\":\"a\",\"title\":\"t\"}", 0, 400, "body"},
    {"{\"app_name\":\"a\",\"title\":\"t\",\"body\":\"b\",\"priority\":3}", 0, 400, "priority"},
    {"{\"app_name\":\"a\",\"title\":\"t\",\"body\":\"b\",\"priority\":1.5}", 0, 400, "priority"},
    {"{\"app_name\":\"a\",\"title\":\"t\",\"body\":\"b\",\"priority\":\"1\"}", 0, 400, "priority"},
    {"{\"app_name\":\"a\",\"title\":\"t\",\"body\":\"b\",\"category\":7}", 0, 400, "category"},
    {"{\"app_name\":\"a\",\"title\":\"t\",\"body\":\"b\",\"id\":\"nope\"}", 0, 400, "id"},
    {"{\"app_name\":\"a\",\"title\":\"t\",\"body\":\"b\",\"source_device\":\"a b\"}", 0, 400, "source_device"},
    {"{\"app_name\":\"a\",\"title\":\"t\",\"body\":\"b\",\"user_id\":\"bob\"}", 0, 403, "user_id"},
    {"{\"app_name\":\"a\",\"title\":\"t\",\"body\":\"b\"}", 1, 400, "user_id"},
    {"{\"app_name\":\"a\\u0000b\",\"title\":\"t\",\"body\":\"b\"}", 0, 400, "app_name"},
    {"[1]", 0, 400, ""},
};

static void test_invalid_fields_are_named(void **state) {
  size_t i;
  (void)state;
  for (i = 0; i < NS_ARRAY_SIZE(bad_cases); i++) {
    ns_notif_in in;
    ns_notif_err err;
    json_object *o;
    int rc = run(bad_cases[i].body, bad_cases[i].service ? &svc : &user, &in,
                 &err, &o);
    assert_int_not_equal(rc, 0);
    assert_int_equal(err.status, bad_cases[i].status);
    assert_string_equal(err.field, bad_cases[i].field);
    json_object_put(o);
  }
}

static void test_length_limits(void **state) {
  char body[9000 + 100], big[8200];
  ns_notif_in in;
  ns_notif_err err;
  json_object *o;
  (void)state;
  memset(big, 'x', 8192);
  big[8192] = '\0';
  snprintf(body, sizeof(body), "{\"app_name\":\"a\",\"title\":\"t\",\"body\":\"%s\"}", big);
  assert_int_equal(run(body, &user, &in, &err, &o), 0);
  json_object_put(o);
  big[8192] = 'x';
  big[8193] = '\0';
  snprintf(body, sizeof(body), "{\"app_name\":\"a\",\"title\":\"t\",\"body\":\"%s\"}", big);
  assert_int_not_equal(run(body, &user, &in, &err, &o), 0);
  assert_string_equal(err.field, "body");
  json_object_put(o);
}

static void test_prefix_in_batch_errors(void **state) {
  json_object *o = json_object_new_object();
  ns_notif_in in;
  ns_notif_err err;
  (void)state;
  assert_int_not_equal(ns_notif_parse(o, &user, "notifications[3].", &lim, &in, &err), 0);
  assert_string_equal(err.field, "notifications[3].app_name");
  json_object_put(o);
}

static void test_uuid_v4(void **state) {
  char a[37], b[37];
  (void)state;
  ns_notif_uuid(a);
  ns_notif_uuid(b);
  assert_true(ns_proto_valid_uuid(a, 36));
  assert_string_not_equal(a, b);
  assert_int_equal(a[14], '4');
}

/* ---------------------------------------------------------------- */
/* SPEC §9 fields                                                     */

#define NOW 1780000000000LL /* lim.now_ms: 2026-05-28T20:26:40Z */
#define TTL_MAX_S (7LL * 86400)

/* A minimal valid notification with `extra` ("k":v,...) appended, as a
 * heap string (free() it).  printf-style. */
static char *with(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *with(const char *fmt, ...) {
  char *extra, *out;
  va_list ap;
  int n;
  va_start(ap, fmt);
  n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  assert_true(n >= 0);
  extra = malloc((size_t)n + 1);
  assert_non_null(extra);
  va_start(ap, fmt);
  vsnprintf(extra, (size_t)n + 1, fmt, ap);
  va_end(ap);
  out = malloc((size_t)n + 64);
  assert_non_null(out);
  snprintf(out, (size_t)n + 64,
           "{\"app_name\":\"a\",\"title\":\"t\",\"body\":\"b\",%s}", extra);
  free(extra);
  return out;
}

/* Runs body (freed here) and expects acceptance; *o must be put. */
static void ok_v2(char *body, ns_notif_in *in, json_object **o) {
  ns_notif_err err;
  int rc = run(body, &user, in, &err, o);
  if (rc != 0)
    print_error("refused <%.200s>: %s\n", body, err.message);
  assert_int_equal(rc, 0);
  free(body);
}

/* Runs body (freed here) and expects a 400 naming `field`, the message
 * starting with "<field>: ". */
static void bad_v2(char *body, const char *field) {
  ns_notif_in in;
  ns_notif_err err;
  json_object *o;
  size_t fl = strlen(field);
  int rc = run(body, &user, &in, &err, &o);
  if (rc == 0 || strcmp(err.field, field) != 0)
    print_error("<%.200s>: rc %d field '%s' (want '%s') %s\n", body, rc,
                err.field, field, rc ? err.message : "");
  assert_int_equal(rc, NS_EINVAL);
  assert_int_equal(err.status, 400);
  assert_string_equal(err.field, field);
  assert_int_equal(strncmp(err.message, field, fl), 0);
  assert_int_equal(err.message[fl], ':');
  json_object_put(o);
  free(body);
}

/* RFC 3339 for lim.now_ms + delta_ms, in the server's own format. */
static const char *at(int64_t delta_ms, char *buf) {
  ns_format_ts(NOW + delta_ms, buf);
  return buf;
}

static void test_v2_absent_and_null(void **state) {
  ns_notif_in in;
  json_object *o;
  (void)state;
  ok_v2(with("\"x\":1"), &in, &o);
  assert_null(in.data);
  assert_null(in.url);
  assert_null(in.tags);
  assert_null(in.collapse_key);
  assert_int_equal(in.expires_ms, 0);
  assert_int_equal(in.live_only, 0);
  assert_int_equal(in.deliver_ms, 0);
  json_object_put(o);
  /* null is absent for each of them, ttl and expires_at together too */
  ok_v2(with("\"data\":null,\"url\":null,\"tags\":null,\"collapse_key\":null,"
             "\"ttl\":null,\"expires_at\":null,\"deliver_at\":null"), &in, &o);
  assert_null(in.data);
  assert_null(in.url);
  assert_null(in.tags);
  assert_null(in.collapse_key);
  assert_int_equal(in.expires_ms, 0);
  assert_int_equal(in.live_only, 0);
  assert_int_equal(in.deliver_ms, 0);
  json_object_put(o);
}

static void test_v2_full(void **state) {
  ns_notif_in in;
  json_object *o;
  char e[NS_TS_LEN], d[NS_TS_LEN];
  (void)state;
  ok_v2(with("\"data\":{\"k\":[1,{\"z\":null}]},\"url\":\"https://x.io/a?b#c\","
             "\"tags\":[\"work\",\"\xc3\xa9t\xc3\xa9\"],"
             "\"collapse_key\":\"chat:42\",\"expires_at\":\"%s\","
             "\"deliver_at\":\"%s\"",
             at(3600000, e), at(60000, d)),
        &in, &o);
  assert_non_null(in.data);
  assert_true(json_object_is_type(in.data, json_type_object));
  assert_string_equal(in.url, "https://x.io/a?b#c");
  assert_int_equal(json_object_array_length(in.tags), 2);
  assert_string_equal(json_object_get_string(json_object_array_get_idx(in.tags, 1)),
                      "\xc3\xa9t\xc3\xa9");
  assert_string_equal(in.collapse_key, "chat:42");
  assert_int_equal(in.expires_ms, NOW + 3600000);
  assert_int_equal(in.deliver_ms, NOW + 60000);
  assert_int_equal(in.live_only, 0);
  json_object_put(o);
}

/* {"k":"xxx..."}: 8 bytes plus `n` serialized. */
static char *data_of(size_t n) {
  char *x = malloc(n + 1), *b;
  assert_non_null(x);
  memset(x, 'x', n);
  x[n] = '\0';
  b = with("\"data\":{\"k\":\"%s\"}", x);
  free(x);
  return b;
}

static void test_v2_data(void **state) {
  ns_notif_in in;
  json_object *o;
  (void)state;
  ok_v2(data_of(4096 - 8), &in, &o); /* exactly max_data_bytes */
  assert_int_equal(strlen(json_object_to_json_string_ext(
                       in.data, JSON_C_TO_STRING_PLAIN)), 4096);
  json_object_put(o);
  bad_v2(data_of(4096 - 7), "data");
  /* the serialized form is measured, not the client's spacing */
  ok_v2(with("\"data\":{  \"k\"  :  \"v\"  }"), &in, &o);
  json_object_put(o);
  ok_v2(with("\"data\":{}"), &in, &o);
  assert_non_null(in.data);
  json_object_put(o);
  bad_v2(with("\"data\":[]"), "data");
  bad_v2(with("\"data\":\"{}\""), "data");
  bad_v2(with("\"data\":1"), "data");
  bad_v2(with("\"data\":true"), "data");
}

/* "http://" + host of `n` 'h' bytes, as a url field. */
static char *url_of(const char *scheme, size_t total) {
  size_t sl = strlen(scheme);
  char *u = malloc(total + 1), *b;
  assert_non_null(u);
  memcpy(u, scheme, sl);
  memset(u + sl, 'h', total - sl);
  u[total] = '\0';
  b = with("\"url\":\"%s\"", u);
  free(u);
  return b;
}

static void test_v2_url(void **state) {
  static const char *const good[] = {
      "http://a", "https://example.com/", "HTTPS://Example.COM/p?q=1#f",
      "hTtP://a:8080", "https://\xe4\xbe\x8b.jp/\xc3\xa9", "http://u@h/x",
      "https://[::1]:443/", "http://a/b/../c?x=y&z#frag"};
  static const char *const bad[] = {
      "", "http://", "https://", "http:///x", "http://?q", "https://#f",
      "ftp://a", "//a", "a.com", "http:/a", "http:a", "mailto:a@b",
      "javascript:alert(1)", "http://a b", "http://a\\tb", "http://a\\u007f",
      "http://a\\u0000b", "http://a/\xff", "http://a/\xc3", " http://a",
      "http://a ", "httpx://a", "https//a"};
  ns_notif_in in;
  json_object *o;
  size_t i;
  (void)state;
  for (i = 0; i < NS_ARRAY_SIZE(good); i++) {
    ok_v2(with("\"url\":\"%s\"", good[i]), &in, &o);
    json_object_put(o);
  }
  for (i = 0; i < NS_ARRAY_SIZE(bad); i++)
    bad_v2(with("\"url\":\"%s\"", bad[i]), "url");
  bad_v2(with("\"url\":5"), "url");
  bad_v2(with("\"url\":[\"http://a\"]"), "url");
  ok_v2(url_of("https://", NS_NOTIF_URL_MAX), &in, &o);
  assert_int_equal(strlen(in.url), NS_NOTIF_URL_MAX);
  json_object_put(o);
  bad_v2(url_of("https://", NS_NOTIF_URL_MAX + 1), "url");
}

static void test_v2_tags(void **state) {
  static const char *const bad[] = {
      "\"a\"", "{}", "1", "[1]", "[\"\"]", "[null]", "[[\"a\"]]",
      "[\"a\",\"b\",\"a\"]", "[\"x\",\"x\"]", "[\"a\\u0001\"]", "[\"a\\u0000\"]",
      "[\"a\\u007f\"]", "[\"a\\n\"]", "[\"\xff\"]", "[\"\xc3\"]",
      "[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\",\"10\",\"11\"]",
      "[\"123456789012345678901234567890123\"]"};
  ns_notif_in in;
  json_object *o;
  size_t i;
  (void)state;
  ok_v2(with("\"tags\":[]"), &in, &o);
  assert_non_null(in.tags);
  assert_int_equal(json_object_array_length(in.tags), 0);
  json_object_put(o);
  ok_v2(with("\"tags\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\","
             "\"10\"]"), &in, &o);
  assert_int_equal(json_object_array_length(in.tags), NS_NOTIF_TAGS_MAX);
  json_object_put(o);
  ok_v2(with("\"tags\":[\"12345678901234567890123456789012\",\"a\",\"A\","
             "\"a \",\"\xe2\x82\xac\"]"), &in, &o); /* 32 bytes; byte-exact dups */
  assert_int_equal(json_object_array_length(in.tags), 5);
  json_object_put(o);
  /* 32 bytes of UTF-8: 16 two-byte characters; 33 bytes refused */
  ok_v2(with("\"tags\":[\"%s\"]", "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
             "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
             "\xc3\xa9\xc3\xa9\xc3\xa9"), &in, &o);
  json_object_put(o);
  bad_v2(with("\"tags\":[\"%sx\"]", "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
              "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
              "\xc3\xa9\xc3\xa9\xc3\xa9"), "tags");
  for (i = 0; i < NS_ARRAY_SIZE(bad); i++)
    bad_v2(with("\"tags\":%s", bad[i]), "tags");
}

static void test_v2_collapse_key(void **state) {
  static const char *const bad[] = {
      "\"\"", "\"a b\"", "\"a/b\"", "\"\xc3\xa9\"", "\"a\\u0000\"", "\"a+b\"",
      "\"a@b\"", "5", "[\"a\"]",
      "\"12345678901234567890123456789012345678901234567890123456789012345\""};
  ns_notif_in in;
  json_object *o;
  size_t i;
  (void)state;
  ok_v2(with("\"collapse_key\":\"Az09_.:-\""), &in, &o);
  assert_string_equal(in.collapse_key, "Az09_.:-");
  json_object_put(o);
  ok_v2(with("\"collapse_key\":\"1234567890123456789012345678901234567890"
             "123456789012345678901234\""), &in, &o);
  assert_int_equal(strlen(in.collapse_key), NS_NOTIF_COLLAPSE_MAX);
  json_object_put(o);
  for (i = 0; i < NS_ARRAY_SIZE(bad); i++)
    bad_v2(with("\"collapse_key\":%s", bad[i]), "collapse_key");
}

static void test_v2_ttl(void **state) {
  static const char *const bad[] = {
      "-1", "1.5", "5.0", "1e3", "\"5\"", "true", "[5]", "{}",
      "604801", "99999999999999999999", "-99999999999999999999",
      "9223372036854775807"};
  ns_notif_in in;
  json_object *o;
  size_t i;
  (void)state;
  ok_v2(with("\"ttl\":0"), &in, &o);
  assert_int_equal(in.live_only, 1);
  assert_int_equal(in.expires_ms, NOW);
  json_object_put(o);
  ok_v2(with("\"ttl\":1"), &in, &o);
  assert_int_equal(in.live_only, 0);
  assert_int_equal(in.expires_ms, NOW + 1000);
  json_object_put(o);
  ok_v2(with("\"ttl\":%lld", TTL_MAX_S), &in, &o);
  assert_int_equal(in.expires_ms, NOW + TTL_MAX_S * 1000);
  json_object_put(o);
  bad_v2(with("\"ttl\":%lld", TTL_MAX_S + 1), "ttl");
  for (i = 0; i < NS_ARRAY_SIZE(bad); i++)
    bad_v2(with("\"ttl\":%s", bad[i]), "ttl");
}

static void test_v2_expires_at(void **state) {
  ns_notif_in in;
  json_object *o;
  char t[NS_TS_LEN];
  (void)state;
  ok_v2(with("\"expires_at\":\"%s\"", at(1, t)), &in, &o);
  assert_int_equal(in.expires_ms, NOW + 1);
  assert_int_equal(in.live_only, 0);
  json_object_put(o);
  ok_v2(with("\"expires_at\":\"%s\"", at(TTL_MAX_S * 1000, t)), &in, &o);
  assert_int_equal(in.expires_ms, NOW + TTL_MAX_S * 1000);
  json_object_put(o);
  /* an offset other than Z: 2026-05-28T22:26:41+02:00 is now + 1 s */
  ok_v2(with("\"expires_at\":\"2026-05-28T22:26:41+02:00\""), &in, &o);
  assert_int_equal(in.expires_ms, NOW + 1000);
  json_object_put(o);
  bad_v2(with("\"expires_at\":\"%s\"", at(0, t)), "expires_at");       /* now */
  bad_v2(with("\"expires_at\":\"%s\"", at(-1000, t)), "expires_at");   /* past */
  bad_v2(with("\"expires_at\":\"%s\"", at(TTL_MAX_S * 1000 + 1, t)),
         "expires_at");
  bad_v2(with("\"expires_at\":\"tomorrow\""), "expires_at");
  bad_v2(with("\"expires_at\":\"2026-05-29\""), "expires_at");
  bad_v2(with("\"expires_at\":\"2026-05-29T00:00:00\""), "expires_at");
  bad_v2(with("\"expires_at\":\"2026-05-29T00:00:00Z\\u0000x\""), "expires_at");
  bad_v2(with("\"expires_at\":1780000001000"), "expires_at");
  /* ttl and expires_at together: the 400 names ttl, whatever the values */
  bad_v2(with("\"ttl\":60,\"expires_at\":\"%s\"", at(60000, t)), "ttl");
  bad_v2(with("\"expires_at\":\"%s\",\"ttl\":\"x\"", at(60000, t)), "ttl");
  ok_v2(with("\"ttl\":null,\"expires_at\":\"%s\"", at(60000, t)), &in, &o);
  json_object_put(o);
  ok_v2(with("\"ttl\":60,\"expires_at\":null"), &in, &o);
  assert_int_equal(in.expires_ms, NOW + 60000);
  json_object_put(o);
}

#define DAY_MS (86400LL * 1000)

static void test_v2_deliver_at(void **state) {
  ns_notif_in in;
  json_object *o;
  char t[NS_TS_LEN], e[NS_TS_LEN];
  (void)state;
  ok_v2(with("\"deliver_at\":\"%s\"", at(30 * DAY_MS, t)), &in, &o);
  assert_int_equal(in.deliver_ms, NOW + NS_NOTIF_SCHEDULE_MAX_MS);
  json_object_put(o);
  ok_v2(with("\"deliver_at\":\"%s\"", at(1, t)), &in, &o);
  assert_int_equal(in.deliver_ms, NOW + 1);
  json_object_put(o);
  bad_v2(with("\"deliver_at\":\"%s\"", at(30 * DAY_MS + 1000, t)), "deliver_at");
  bad_v2(with("\"deliver_at\":\"%s\"", at(0, t)), "deliver_at");
  bad_v2(with("\"deliver_at\":\"%s\"", at(-DAY_MS, t)), "deliver_at");
  bad_v2(with("\"deliver_at\":\"2026-13-01T00:00:00Z\""), "deliver_at");
  bad_v2(with("\"deliver_at\":true"), "deliver_at");

  /* the expiry must come after the delivery (decided with the lead) */
  bad_v2(with("\"ttl\":60,\"deliver_at\":\"%s\"", at(60000, t)), "ttl");
  bad_v2(with("\"ttl\":0,\"deliver_at\":\"%s\"", at(60000, t)), "ttl");
  bad_v2(with("\"deliver_at\":\"%s\",\"ttl\":30", at(60000, t)), "ttl");
  ok_v2(with("\"ttl\":61,\"deliver_at\":\"%s\"", at(60000, t)), &in, &o);
  assert_int_equal(in.expires_ms, NOW + 61000);
  assert_int_equal(in.deliver_ms, NOW + 60000);
  json_object_put(o);
  bad_v2(with("\"expires_at\":\"%s\",\"deliver_at\":\"%s\"", at(3600000, e),
              at(7200000, t)), "expires_at");
  bad_v2(with("\"expires_at\":\"%s\",\"deliver_at\":\"%s\"", at(3600000, e),
              at(3600000, t)), "expires_at");
  ok_v2(with("\"expires_at\":\"%s\",\"deliver_at\":\"%s\"", at(3600001, e),
             at(3600000, t)), &in, &o);
  json_object_put(o);
}

static void test_v2_batch_prefix(void **state) {
  json_object *o = NULL;
  ns_proto_err perr;
  ns_notif_in in;
  ns_notif_err err;
  const char *body =
      "{\"app_name\":\"a\",\"title\":\"t\",\"body\":\"b\",\"tags\":[\"a\",\"a\"]}";
  (void)state;
  assert_int_equal(ns_proto_parse_json(body, strlen(body), &o, &perr), 0);
  assert_int_equal(ns_notif_parse(o, &svc, "notifications[7].", &lim, &in, &err),
                   NS_EINVAL);
  /* the service token needs user_id first */
  assert_string_equal(err.field, "notifications[7].user_id");
  json_object_object_add(o, "user_id", json_object_new_string("bob"));
  assert_int_equal(ns_notif_parse(o, &svc, "notifications[7].", &lim, &in, &err),
                   NS_EINVAL);
  assert_string_equal(err.field, "notifications[7].tags");
  assert_int_equal(strncmp(err.message, "notifications[7].tags: ", 23), 0);
  json_object_put(o);
}

/* RFC 3339 vectors: the string, 1 when accepted, the ms expected. */
static const struct {
  const char *s;
  int ok;
  int64_t ms;
} time_cases[] = {
    {"1970-01-01T00:00:00Z", 1, 0},
    {"1970-01-01t00:00:00z", 1, 0},
    {"2026-01-15T10:30:00Z", 1, 1768473000000LL},
    {"2026-01-15T10:30:00.123Z", 1, 1768473000123LL},
    {"2026-01-15T10:30:00.1Z", 1, 1768473000100LL},
    {"2026-01-15T10:30:00.12Z", 1, 1768473000120LL},
    {"2026-01-15T10:30:00.123456789Z", 1, 1768473000123LL}, /* cut, not rounded */
    {"2026-01-15T10:30:00.999999999Z", 1, 1768473000999LL},
    {"2026-01-15T12:30:00+02:00", 1, 1768473000000LL},
    {"2026-01-15T05:00:00-05:30", 1, 1768473000000LL},
    {"2026-01-15T10:30:00-00:00", 1, 1768473000000LL},
    {"2026-01-15T10:30:00+00:00", 1, 1768473000000LL},
    {"2026-01-16T00:29:00+13:59", 1, 1768473000000LL},
    {"2024-02-29T12:00:00Z", 1, 1709208000000LL},
    {"2000-02-29T00:00:00Z", 1, 951782400000LL},  /* 400-year rule */
    {"2000-03-01T00:00:00Z", 1, 951868800000LL},
    {"1969-12-31T23:59:59.999Z", 1, -1},
    {"9999-12-31T23:59:59Z", 1, 253402300799000LL},
    {"0001-01-01T00:00:00Z", 1, -62135596800000LL},
    {"0000-01-01T00:00:00Z", 1, -62167219200000LL},
    {"0000-02-29T00:00:00Z", 1, -62162121600000LL}, /* year 0 is leap */
    {"2023-02-29T00:00:00Z", 0, 0},
    {"1900-02-29T00:00:00Z", 0, 0},
    {"2024-02-30T00:00:00Z", 0, 0},
    {"2026-04-31T00:00:00Z", 0, 0},
    {"2026-12-32T00:00:00Z", 0, 0},
    {"2026-00-10T00:00:00Z", 0, 0},
    {"2026-13-10T00:00:00Z", 0, 0},
    {"2026-01-00T00:00:00Z", 0, 0},
    {"2026-01-15T24:00:00Z", 0, 0},
    {"2026-01-15T10:60:00Z", 0, 0},
    {"2026-01-15T10:30:60Z", 0, 0}, /* leap second refused */
    {"2026-01-15T10:30:00+24:00", 0, 0},
    {"2026-01-15T10:30:00+01:60", 0, 0},
    {"2026-01-15T10:30:00+0100", 0, 0},
    {"2026-01-15T10:30:00+01", 0, 0},
    {"2026-01-15T10:30:00", 0, 0},
    {"2026-01-15T10:30:00.Z", 0, 0},
    {"2026-01-15T10:30:00.1234567890Z", 0, 0},
    {"2026-01-15T10:30:00ZZ", 0, 0},
    {"2026-01-15T10:30:00Z ", 0, 0},
    {" 2026-01-15T10:30:00Z", 0, 0},
    {"2026-01-15 10:30:00Z", 0, 0},
    {"2026-01-15X10:30:00Z", 0, 0},
    {"2026-1-15T10:30:00Z", 0, 0},
    {"26-01-15T10:30:00Z", 0, 0},
    {"+2026-01-15T10:30:00Z", 0, 0},
    {"12026-01-15T10:30:00Z", 0, 0},
    {"2026-01-15T10:30:0Z", 0, 0},
    {"2026-01-15T10:30:00,5Z", 0, 0},
    {"2026-01-15", 0, 0},
    {"2026-01-15T", 0, 0},
    {"2026", 0, 0},
    {"", 0, 0},
};

static void test_parse_time(void **state) {
  size_t i;
  (void)state;
  for (i = 0; i < NS_ARRAY_SIZE(time_cases); i++) {
    int64_t ms = 42;
    int rc = ns_notif_parse_time(time_cases[i].s, &ms);
    if ((rc == 0) != time_cases[i].ok || (rc == 0 && ms != time_cases[i].ms))
      print_error("case %zu <%s>: rc %d ms %lld (want %lld)\n", i,
                  time_cases[i].s, rc, (long long)ms,
                  (long long)time_cases[i].ms);
    assert_int_equal(rc, time_cases[i].ok ? 0 : NS_EINVAL);
    if (time_cases[i].ok)
      assert_int_equal(ms, time_cases[i].ms);
  }
  assert_int_equal(ns_notif_parse_time(NULL, NULL), NS_EINVAL);
}

/* About one instant a day of 1970..2099 round-trips through the server's
 * formatter (which clamps before 1970). */
static void test_parse_time_round_trip(void **state) {
  int64_t ms, back;
  char buf[NS_TS_LEN];
  (void)state;
  for (ms = 0; ms < 130LL * 365 * DAY_MS; ms += DAY_MS + 3723001) {
    ns_format_ts(ms, buf);
    assert_int_equal(ns_notif_parse_time(buf, &back), 0);
    assert_int_equal(back, ms);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid_minimal_and_full),
      cmocka_unit_test(test_invalid_fields_are_named),
      cmocka_unit_test(test_length_limits),
      cmocka_unit_test(test_prefix_in_batch_errors),
      cmocka_unit_test(test_uuid_v4),
      cmocka_unit_test(test_v2_absent_and_null),
      cmocka_unit_test(test_v2_full),
      cmocka_unit_test(test_v2_data),
      cmocka_unit_test(test_v2_url),
      cmocka_unit_test(test_v2_tags),
      cmocka_unit_test(test_v2_collapse_key),
      cmocka_unit_test(test_v2_ttl),
      cmocka_unit_test(test_v2_expires_at),
      cmocka_unit_test(test_v2_deliver_at),
      cmocka_unit_test(test_v2_batch_prefix),
      cmocka_unit_test(test_parse_time),
      cmocka_unit_test(test_parse_time_round_trip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
