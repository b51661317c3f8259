/*
 * test_rest.c -- unit tests for ns_rest: each REST body, query value,
 * header and path parser, with the cases it accepts and the error (code,
 * field, message) or route kind it gives for the ones it refuses.
 *
 * Byte inputs go through exact(), a heap copy of exactly n bytes with no
 * NUL after it, so ASan reports any read past the input.
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
#include "ns_rest.h"

#define IN(s) s, sizeof(s) - 1
#define UUID "3f2504e0-4f89-41d3-9a0c-0305e82c3301"

/* A heap copy of s[0..n) with nothing after it; free() it. */
static char *exact(const char *s, size_t n) {
  char *buf = malloc(n ? n : 1);
  assert_non_null(buf);
  if (n)
    memcpy(buf, s, n);
  return buf;
}

/* `len` copies of `c` followed by `tail`, as a C string; free() it. */
static char *repeat(char c, size_t len, const char *tail) {
  char *s = malloc(len + strlen(tail) + 1);
  assert_non_null(s);
  memset(s, c, len);
  strcpy(s + len, tail);
  return s;
}

/* ---- comment bodies ---- */

static int comment(const char *s, size_t n, ns_rest_comment *c, ns_rest_err *e) {
  char *buf = exact(s, n);
  int rc = ns_rest_parse_comment(buf, n, c, e);
  free(buf); /* c->content lives in c->root, not in buf */
  return rc;
}

static void test_comment_ok(void **state) {
  ns_rest_comment c;
  ns_rest_err e;
  char *big, *body;
  (void)state;
  assert_int_equal(comment(IN("{\"content\":\"hi\"}"), &c, &e), 0);
  assert_string_equal(c.content, "hi");
  assert_int_equal(c.content_len, 2);
  json_object_put(c.root);
  assert_int_equal(
      comment(IN("{\"x\":1,\"content\":\"h\\u00e9llo \xe2\x82\xac\"}"), &c, &e), 0);
  assert_string_equal(c.content, "h\xc3\xa9llo \xe2\x82\xac");
  json_object_put(c.root);
  big = repeat('x', NS_REST_CONTENT_MAX, "");
  body = malloc(NS_REST_CONTENT_MAX + 32);
  assert_non_null(body);
  snprintf(body, NS_REST_CONTENT_MAX + 32, "{\"content\":\"%s\"}", big);
  assert_int_equal(comment(body, strlen(body), &c, &e), 0);
  assert_int_equal(c.content_len, NS_REST_CONTENT_MAX);
  json_object_put(c.root);
  free(big);
  big = repeat('x', NS_REST_CONTENT_MAX + 1, "");
  snprintf(body, NS_REST_CONTENT_MAX + 32, "{\"content\":\"%s\"}", big);
  assert_int_equal(comment(body, strlen(body), &c, &e), NS_EINVAL);
  assert_null(c.root);
  free(big);
  free(body);
}

static void test_comment_bad(void **state) {
  static const char *const bad_request[] = {
      "{}",
      "{\"content\":\"\"}",
      "{\"content\":5}",
      "{\"content\":null}",
      "{\"content\":[\"a\"]}",
      "{\"content\":\"a\\u0000b\"}",
      "{\"content\":\"bad \xff byte\"}",
      "{\"Content\":\"a\"}",
      "[\"content\"]",
      "\"content\"",
      "null",
  };
  static const char *const bad_json[] = {
      "", "{", "content", "{\"content\":\"a\"} x", "{'content':'a'}",
  };
  ns_rest_comment c;
  ns_rest_err e;
  size_t i;
  (void)state;
  for (i = 0; i < NS_ARRAY_SIZE(bad_request); i++) {
    assert_int_equal(comment(bad_request[i], strlen(bad_request[i]), &c, &e),
                     NS_EINVAL);
    assert_null(c.root);
    assert_null(c.content);
    assert_string_equal(e.code, "bad_request");
    assert_string_equal(e.field, "content");
    assert_string_equal(e.message,
                        "content: must be a string of 1-10000 bytes of UTF-8");
  }
  for (i = 0; i < NS_ARRAY_SIZE(bad_json); i++) {
    assert_int_equal(comment(bad_json[i], strlen(bad_json[i]), &c, &e), NS_EPARSE);
    assert_null(c.root);
    assert_string_equal(e.code, "bad_json");
    assert_string_equal(e.field, "");
    assert_true(e.message[0] != '\0');
  }
  /* no body at all (Content-Length: 0) */
  assert_int_equal(ns_rest_parse_comment(NULL, 0, &c, &e), NS_EPARSE);
  assert_string_equal(e.code, "bad_json");
}

/* ---- broadcast bodies ---- */

static int bcast(const char *s, ns_rest_broadcast *b, ns_rest_err *e) {
  char *buf = exact(s, strlen(s));
  int rc = ns_rest_parse_broadcast(buf, strlen(s), b, e);
  free(buf);
  return rc;
}

static void test_broadcast_ok(void **state) {
  ns_rest_broadcast b;
  ns_rest_err e;
  char *t64 = repeat('a', 64, ""), body[128];
  (void)state;
  assert_int_equal(bcast("{\"type\":\"comment.created\"}", &b, &e), 0);
  assert_string_equal(b.type, "comment.created");
  assert_null(b.data);
  json_object_put(b.root);
  assert_int_equal(bcast("{\"type\":\"a\",\"data\":null}", &b, &e), 0);
  assert_null(b.data);
  json_object_put(b.root);
  assert_int_equal(bcast("{\"data\":{\"k\":[1,2]},\"type\":\"x_1.y\"}", &b, &e), 0);
  assert_string_equal(b.type, "x_1.y");
  assert_non_null(b.data);
  assert_true(json_object_is_type(b.data, json_type_object));
  json_object_put(b.root);
  snprintf(body, sizeof(body), "{\"type\":\"%s\"}", t64);
  assert_int_equal(bcast(body, &b, &e), 0);
  assert_int_equal(strlen(b.type), 64);
  json_object_put(b.root);
  /* an escaped NUL is not cut off: the type is refused */
  assert_int_equal(bcast("{\"type\":\"abc\\u0000XYZ\"}", &b, &e), NS_EINVAL);
  assert_string_equal(e.field, "type");
  assert_null(b.root);
  free(t64);
}

static void test_broadcast_bad(void **state) {
  static const char *const bad_type[] = {
      "{}", "{\"type\":\"\"}", "{\"type\":5}", "{\"type\":null}",
      "{\"type\":\"Comment\"}", "{\"type\":\"1abc\"}", "{\"type\":\"a-b\"}",
      "{\"type\":\"a b\"}", "{\"type\":\".a\"}", "{\"type\":\"ping\"}",
      "{\"type\":\"welcome\"}", "{\"type\":\"notification_action\"}",
      "{\"type\":\"refresh\"}", "{\"type\":\"error\"}", "[]", "null",
      "{\"type\":\"\xc3\xa9t\xc3\xa9\"}",
      "{\"type\":\"a\",\"type2\":1,\"data\":[1]}x",
  };
  static const char *const bad_data[] = {
      "{\"type\":\"a\",\"data\":[1]}", "{\"type\":\"a\",\"data\":\"x\"}",
      "{\"type\":\"a\",\"data\":0}", "{\"type\":\"a\",\"data\":false}",
  };
  ns_rest_broadcast b;
  ns_rest_err e;
  char *t65 = repeat('a', 65, ""), body[128];
  size_t i;
  (void)state;
  for (i = 0; i < NS_ARRAY_SIZE(bad_type); i++) {
    int rc = bcast(bad_type[i], &b, &e);
    assert_int_not_equal(rc, 0);
    assert_null(b.root);
    if (rc == NS_EPARSE) { /* the last one is not JSON */
      assert_string_equal(e.code, "bad_json");
      continue;
    }
    assert_string_equal(e.code, "bad_request");
    assert_string_equal(e.field, "type");
    assert_string_equal(e.message, "type: must match ^[a-z][a-z0-9_.]{0,63}$ "
                                   "and not be a reserved type");
  }
  snprintf(body, sizeof(body), "{\"type\":\"%s\"}", t65);
  assert_int_equal(bcast(body, &b, &e), NS_EINVAL);
  assert_string_equal(e.field, "type");
  for (i = 0; i < NS_ARRAY_SIZE(bad_data); i++) {
    assert_int_equal(bcast(bad_data[i], &b, &e), NS_EINVAL);
    assert_null(b.root);
    assert_string_equal(e.code, "bad_request");
    assert_string_equal(e.field, "data");
    assert_string_equal(e.message, "data: must be an object");
  }
  assert_int_equal(bcast("{\"type\":", &b, &e), NS_EPARSE);
  assert_string_equal(e.code, "bad_json");
  assert_string_equal(e.field, "");
  free(t65);
}

static void test_valid_type(void **state) {
  (void)state;
  assert_true(ns_rest_valid_type("a"));
  assert_true(ns_rest_valid_type("comment.updated"));
  assert_true(ns_rest_valid_type("pings"));
  assert_true(ns_rest_valid_type("z9_."));
  assert_false(ns_rest_valid_type(""));
  assert_false(ns_rest_valid_type("ack"));
  assert_false(ns_rest_valid_type("subscribe"));
  assert_false(ns_rest_valid_type("queue_overflow"));
  assert_false(ns_rest_valid_type("_a"));
  assert_false(ns_rest_valid_type("aB"));
  assert_false(ns_rest_valid_type("a\n"));
}

/* ---- action bodies ---- */

static int action(const char *s, ns_action *a, ns_rest_err *e) {
  char *buf = exact(s, strlen(s));
  int rc = ns_rest_parse_action(buf, strlen(s), a, e);
  free(buf);
  return rc;
}

static void test_action(void **state) {
  static const char *const bad[] = {
      "{}", "{\"action\":\"READ\"}", "{\"action\":\"\"}", "{\"action\":1}",
      "{\"action\":null}", "{\"action\":\"reads\"}", "[\"read\"]", "\"read\"",
      "null", "{\"act\":\"read\"}",
  };
  ns_action a;
  ns_rest_err e;
  size_t i;
  (void)state;
  assert_int_equal(action("{\"action\":\"read\"}", &a, &e), 0);
  assert_int_equal(a, NS_ACTION_READ);
  assert_int_equal(action("{\"action\":\"unread\"}", &a, &e), 0);
  assert_int_equal(a, NS_ACTION_UNREAD);
  assert_int_equal(action("{\"x\":[1],\"action\":\"dismiss\"}", &a, &e), 0);
  assert_int_equal(a, NS_ACTION_DISMISS);
  for (i = 0; i < NS_ARRAY_SIZE(bad); i++) {
    assert_int_equal(action(bad[i], &a, &e), NS_EINVAL);
    assert_int_equal(a, NS_ACTION_NONE);
    assert_string_equal(e.code, "bad_request");
    assert_string_equal(e.field, "action");
    assert_string_equal(e.message, "action: must be read, unread or dismiss");
  }
  assert_int_equal(action("{\"action\":\"read\\u0000x\"}", &a, &e), NS_EINVAL);
  assert_int_equal(a, NS_ACTION_NONE);
  assert_int_equal(action("{\"action\":\"read\"", &a, &e), NS_EPARSE);
  assert_int_equal(a, NS_ACTION_NONE);
  assert_string_equal(e.code, "bad_json");
  assert_int_equal(ns_rest_parse_action(NULL, 0, &a, &e), NS_EPARSE);
}

/* ---- bulk action bodies (SPEC §9.5) ---- */

static int bulk(const char *s, ns_action *a, char *before, ns_rest_err *e) {
  char *buf = exact(s, strlen(s));
  int rc = ns_rest_parse_bulk_action(buf, strlen(s), a, before, e);
  free(buf);
  return rc;
}

static void test_bulk_action(void **state) {
  static const char *const bad_action[] = {
      "{}", "{\"action\":\"unread\"}", "{\"action\":\"READ\"}",
      "{\"action\":\"\"}", "{\"action\":1}", "{\"action\":null}",
      "{\"action\":\"read\\u0000\"}", "{\"action\":\"delete\"}",
      "[\"read\"]", "\"read\"", "null", "{\"before\":\"" UUID "\"}",
      "{\"action\":\"unread\",\"before\":\"x\"}", /* action is checked first */
  };
  static const char *const bad_before[] = {
      "{\"action\":\"read\",\"before\":\"x\"}",
      "{\"action\":\"read\",\"before\":\"\"}",
      "{\"action\":\"read\",\"before\":5}",
      "{\"action\":\"dismiss\",\"before\":[\"" UUID "\"]}",
      "{\"action\":\"read\",\"before\":\"{" UUID "}\"}",
      "{\"action\":\"read\",\"before\":\"" UUID "\\u0000\"}",
      "{\"action\":\"read\",\"before\":\"" UUID "0\"}",
  };
  ns_action a;
  char before[37];
  ns_rest_err e;
  size_t i;
  (void)state;
  assert_int_equal(bulk("{\"action\":\"read\"}", &a, before, &e), 0);
  assert_int_equal(a, NS_ACTION_READ);
  assert_string_equal(before, "");
  assert_int_equal(bulk("{\"action\":\"dismiss\",\"before\":null,\"x\":1}", &a,
                        before, &e), 0);
  assert_int_equal(a, NS_ACTION_DISMISS);
  assert_string_equal(before, "");
  assert_int_equal(bulk("{\"before\":\"" UUID "\",\"action\":\"read\"}", &a,
                        before, &e), 0);
  assert_int_equal(a, NS_ACTION_READ);
  assert_string_equal(before, UUID);
  assert_int_equal(bulk("{\"action\":\"dismiss\",\"before\":"
                        "\"3F2504E0-4F89-41D3-9A0C-0305E82C3301\"}", &a, before,
                        &e), 0);
  assert_string_equal(before, UUID); /* lower case */
  for (i = 0; i < NS_ARRAY_SIZE(bad_action); i++) {
    memset(before, 'z', sizeof(before));
    assert_int_equal(bulk(bad_action[i], &a, before, &e), NS_EINVAL);
    assert_int_equal(a, NS_ACTION_NONE);
    assert_string_equal(before, "");
    assert_string_equal(e.code, "bad_request");
    assert_string_equal(e.field, "action");
    assert_string_equal(e.message, "action: must be read or dismiss");
  }
  for (i = 0; i < NS_ARRAY_SIZE(bad_before); i++) {
    assert_int_equal(bulk(bad_before[i], &a, before, &e), NS_EINVAL);
    assert_int_equal(a, NS_ACTION_NONE);
    assert_string_equal(before, "");
    assert_string_equal(e.code, "bad_request");
    assert_string_equal(e.field, "before");
    assert_int_equal(strncmp(e.message, "before: ", 8), 0);
  }
  assert_int_equal(bulk("{\"action\":\"read\"", &a, before, &e), NS_EPARSE);
  assert_string_equal(e.code, "bad_json");
  assert_string_equal(e.field, "");
  assert_int_equal(ns_rest_parse_bulk_action(NULL, 0, &a, before, &e), NS_EPARSE);
  assert_int_equal(a, NS_ACTION_NONE);
}

/* ---- X-Device-ID ---- */

static void test_device_header(void **state) {
  ns_rest_err e;
  char *id64 = repeat('d', 64, ""), *id65 = repeat('d', 65, "");
  (void)state;
  assert_int_equal(ns_rest_check_device_header("", 0, &e), 0);
  assert_int_equal(ns_rest_check_device_header(IN("phone-1"), &e), 0);
  assert_int_equal(ns_rest_check_device_header(IN("A.b_c:d-9"), &e), 0);
  assert_int_equal(ns_rest_check_device_header(id64, 64, &e), 0);
  assert_int_equal(ns_rest_check_device_header(id65, 65, &e), NS_EINVAL);
  assert_int_equal(ns_rest_check_device_header(IN("a b"), &e), NS_EINVAL);
  assert_int_equal(ns_rest_check_device_header(IN(" a"), &e), NS_EINVAL);
  assert_int_equal(ns_rest_check_device_header(IN("a/b"), &e), NS_EINVAL);
  assert_int_equal(ns_rest_check_device_header(IN("a\0b"), &e), NS_EINVAL);
  assert_string_equal(e.code, "bad_request");
  assert_string_equal(e.field, "X-Device-ID");
  assert_string_equal(e.message, "X-Device-ID: not a device_id");
  free(id64);
  free(id65);
}

/* ---- request syntax: query arguments and Content-Length ---- */

static int query(const char *s, size_t n, ns_rest_err *e) {
  char *buf = exact(s, n);
  int rc = ns_rest_check_query(buf, n, e);
  free(buf);
  return rc;
}

/* Asserts that the NUL-separated `args` are refused naming `field`, with
 * `msg` in the message. */
static void query_bad(const char *args, size_t n, const char *field,
                      const char *msg) {
  ns_rest_err e;
  memset(&e, 0, sizeof(e));
  if (query(args, n, &e) != NS_EINVAL)
    fail_msg("accepted: %.*s", (int)n, args);
  assert_string_equal(e.code, "bad_request");
  assert_string_equal(e.field, field);
  if (strncmp(e.message, field, strlen(field)) != 0 || !strstr(e.message, msg))
    fail_msg("message \"%s\": want \"%s: ...%s...\"", e.message, field, msg);
}

static void test_query_ok(void **state) {
  ns_rest_err e;
  char *at_max = repeat('x', NS_REST_QUERY_ARG_MAX - 7, ""), *buf;
  size_t i;
  (void)state;
  assert_int_equal(ns_rest_check_query(NULL, 0, &e), 0);
  assert_int_equal(query(IN("limit=5\0unread=1\0before=2026-01-15T10:30:00Z\0"), &e), 0);
  assert_int_equal(query(IN("limit=\0"), &e), 0);     /* empty value: handler's call */
  assert_int_equal(query(IN("limit=5"), &e), 0);      /* last NUL missing */
  assert_int_equal(query(IN("a=1\0ab=2\0b=1\0"), &e), 0); /* names differ */
  assert_int_equal(query(IN("a=b=c\0"), &e), 0);     /* '=' in a value */
  assert_int_equal(query(IN("name=caf\xc3\xa9 au lait\0"), &e), 0); /* UTF-8, space */
  assert_int_equal(query(IN("a_name_over_15_bytes=1\0"), &e), 0);
  /* "before=" + 88 bytes = 95: fits the handlers' 96-byte buffers */
  buf = malloc(7 + strlen(at_max) + 1);
  assert_non_null(buf);
  sprintf(buf, "before=%s", at_max);
  assert_int_equal(strlen(buf), NS_REST_QUERY_ARG_MAX);
  assert_int_equal(query(buf, strlen(buf) + 1, &e), 0);
  free(buf);
  free(at_max);
  /* NS_REST_QUERY_ARGS_MAX distinct arguments */
  buf = malloc(NS_REST_QUERY_ARGS_MAX * 8);
  assert_non_null(buf);
  for (i = 0; i < NS_REST_QUERY_ARGS_MAX; i++)
    sprintf(buf + i * 6, "a%02zu=1", i);
  for (i = 0; i < NS_REST_QUERY_ARGS_MAX; i++)
    buf[i * 6 + 5] = '\0';
  assert_int_equal(query(buf, NS_REST_QUERY_ARGS_MAX * 6, &e), 0);
  free(buf);
}

static void test_query_bad(void **state) {
  char *over = repeat('x', NS_REST_QUERY_ARG_MAX - 6, ""), *buf;
  ns_rest_err e;
  size_t i, n;
  (void)state;
  /* the reported defect: before= of 96 bytes and more was taken as absent */
  buf = malloc(strlen(over) + 64);
  assert_non_null(buf);
  n = (size_t)sprintf(buf, "before=%s", over) + 1;
  assert_int_equal(n - 1, NS_REST_QUERY_ARG_MAX + 1);
  query_bad(buf, n, "before", "too long");
  /* ... and hid every argument after it */
  n = (size_t)sprintf(buf, "junk=%s", over) + 1;
  assert_int_equal(query(buf, n, &e), 0); /* 94 bytes: fine */
  n = (size_t)sprintf(buf, "junk=%sxx", over) + 1; /* 96 bytes */
  memcpy(buf + n, "limit=0", 8);
  query_bad(buf, n + 8, "junk", "too long");
  memcpy(buf, "limit=5", 8);
  n = (size_t)sprintf(buf + 8, "limit=%sx", over) + 1; /* 96 bytes */
  query_bad(buf, 8 + n, "limit", "too long"); /* too long wins over repeated */
  /* a name too long for `field` */
  n = (size_t)sprintf(buf, "a_name_over_15_bytes=%s", over) + 1;
  query_bad(buf, n, "query", "too long");
  free(buf);
  free(over);

  query_bad(IN("limit=5\0limit=6\0"), "limit", "more than once");
  query_bad(IN("unread=1\0limit=5\0unread=0\0"), "unread", "more than once");
  query_bad(IN("limit=5\0limit\0"), "limit", "more than once");
  query_bad(IN("unread\0"), "unread", "expected unread=");
  query_bad(IN("limit=5\0before"), "before", "expected before=");
  query_bad(IN("=5\0"), "query", "without a name");
  query_bad(IN("\0"), "query", "without a name");
  query_bad(IN("limit=5\t\0"), "limit", "control");
  query_bad(IN("limit=5\n\0"), "limit", "control");
  query_bad(IN("before=\x7f\0"), "before", "control");
  query_bad(IN("li\x01mit=5\0"), "query", "control");

  buf = malloc((NS_REST_QUERY_ARGS_MAX + 1) * 8);
  assert_non_null(buf);
  for (i = 0; i <= NS_REST_QUERY_ARGS_MAX; i++)
    sprintf(buf + i * 6, "a%02zu=1", i);
  for (i = 0; i <= NS_REST_QUERY_ARGS_MAX; i++)
    buf[i * 6 + 5] = '\0';
  query_bad(buf, (NS_REST_QUERY_ARGS_MAX + 1) * 6, "query", "more than 32");
  free(buf);
}

static int clen(const char *s, size_t n, long long max, long long *out,
                ns_rest_err *e) {
  char *buf = exact(s, n);
  int rc = ns_rest_parse_content_length(buf, n, max, out, e);
  free(buf);
  return rc;
}

static void test_content_length(void **state) {
  static const struct {
    const char *s;
    long long want;
  } good[] = {{"0", 0},       {"2", 2},         {"0002", 2},
              {" 2", 2},      {"2 ", 2},        {"\t2\t", 2},
              {"65536", 65536}, {"000000000000000000000000000000000017", 17}};
  static const char *const bad[] = {
      "", " ", "12abc", "-5", "+2", "0x2", "2, 2", "2,2", "2 2", "2.0", "1e3",
      "abc", "\xd9\xa3", /* Arabic-Indic digit three */ "2\r", "2\n", "-0",
      "99999999999999999999999x",
  };
  static const char *const big[] = {
      "65537", "99999999999999999999999", "18446744073709551617",
      "9223372036854775807", "9223372036854775808", " 100000 ",
  };
  long long v;
  ns_rest_err e;
  size_t i;
  (void)state;
  for (i = 0; i < NS_ARRAY_SIZE(good); i++) {
    v = -1;
    if (clen(good[i].s, strlen(good[i].s), 65536, &v, &e) != 0)
      fail_msg("refused \"%s\": %s", good[i].s, e.message);
    assert_int_equal(v, good[i].want);
  }
  for (i = 0; i < NS_ARRAY_SIZE(bad); i++) {
    if (clen(bad[i], strlen(bad[i]), 65536, &v, &e) != NS_EINVAL)
      fail_msg("accepted \"%s\"", bad[i]);
    assert_string_equal(e.code, "bad_request");
    assert_string_equal(e.field, "Content-Length");
    assert_string_equal(e.message,
                        "Content-Length: must be a decimal number of bytes");
  }
  for (i = 0; i < NS_ARRAY_SIZE(big); i++) {
    if (clen(big[i], strlen(big[i]), 65536, &v, &e) != NS_ETOOBIG)
      fail_msg("not too large: \"%s\"", big[i]);
    assert_string_equal(e.code, "too_large");
    assert_string_equal(e.message, "request body exceeds max_body_bytes");
  }
  /* a NUL is not a terminator here */
  assert_int_equal(clen(IN("2\0003"), 65536, &v, &e), NS_EINVAL);
  /* the bound itself, at the top of the range */
  assert_int_equal(clen(IN("9223372036854775807"), 9223372036854775807LL, &v, &e), 0);
  assert_true(v == 9223372036854775807LL);
}

/* ---- GET /api/v1/notifications query ---- */

static void test_list_query_ok(void **state) {
  static const struct {
    const char *limit;
    int want;
  } limits[] = {{"1", 1}, {"200", 200}, {"50", 50}, {" 7", 7}, {"+7", 7},
                {"007", 7}};
  static const char *const good_ts[] = {
      "2026-01-15T10:30:00Z", "2026-01-15T10:30:00.123456Z",
      "2026-01-15T10:30:00+02:00", "2026-01-15T10:30:00.5-05:30",
      "2026-01-15T10:30:00.123456789+14:00", /* the longest: 35 bytes */
  };
  ns_rest_list_query q;
  ns_rest_err e;
  size_t i;
  (void)state;
  assert_int_equal(ns_rest_parse_list_query(NULL, NULL, NULL, &q, &e), 0);
  assert_int_equal(q.limit, NS_REST_LIMIT_DEFAULT);
  assert_string_equal(q.before, "");
  assert_int_equal(q.unread, 0);
  for (i = 0; i < NS_ARRAY_SIZE(limits); i++) {
    assert_int_equal(ns_rest_parse_list_query(limits[i].limit, NULL, NULL, &q, &e), 0);
    assert_int_equal(q.limit, limits[i].want);
  }
  for (i = 0; i < NS_ARRAY_SIZE(good_ts); i++) {
    assert_true(ns_rest_valid_ts(good_ts[i]));
    assert_int_equal(ns_rest_parse_list_query(NULL, good_ts[i], NULL, &q, &e), 0);
    assert_ptr_equal(q.before, good_ts[i]);
  }
  assert_int_equal(ns_rest_parse_list_query(NULL, NULL, "1", &q, &e), 0);
  assert_int_equal(q.unread, 1);
  assert_int_equal(ns_rest_parse_list_query(NULL, NULL, "true", &q, &e), 0);
  assert_int_equal(q.unread, 1);
  assert_int_equal(ns_rest_parse_list_query(NULL, NULL, "TRUE", &q, &e), 0);
  assert_int_equal(q.unread, 0);
  assert_int_equal(ns_rest_parse_list_query(NULL, NULL, "yes", &q, &e), 0);
  assert_int_equal(q.unread, 0);
  assert_int_equal(ns_rest_parse_list_query(NULL, NULL, "", &q, &e), 0);
  assert_int_equal(q.unread, 0);
}

static void test_list_query_bad(void **state) {
  static const char *const bad_limit[] = {
      "0", "201", "-1", "abc", "", "5x", "5 ", "1e2", "99999999999999999999999",
  };
  static const char *const bad_ts[] = {
      "", "2026-01-15", "2026-01-15T10:30:00", "2026-01-15 10:30:00Z",
      "2026-01-15T10:30:00Zx", "2026-01-15T10:30:00+0200",
      "2026-01-15T10:30:00+02:00x", "2026-01-15T10:30:00+02:0", "2026-1-15T10:30:00Z",
      "2026-01-15T10:30:00.12a", "2026-01-15t10:30:00Z", "x2026-01-15T10:30:00Z",
      "2026-01-15T10:30:00.1234567890Z", /* 10 fraction digits */
      "2026-01-15T10:30:00.Z",
  };
  ns_rest_list_query q;
  ns_rest_err e;
  size_t i;
  (void)state;
  for (i = 0; i < NS_ARRAY_SIZE(bad_limit); i++) {
    assert_int_equal(ns_rest_parse_list_query(bad_limit[i], NULL, NULL, &q, &e),
                     NS_EINVAL);
    assert_string_equal(e.code, "bad_request");
    assert_string_equal(e.field, "limit");
    assert_string_equal(e.message, "limit: must be 1-200");
  }
  for (i = 0; i < NS_ARRAY_SIZE(bad_ts); i++) {
    assert_false(ns_rest_valid_ts(bad_ts[i]));
    assert_int_equal(ns_rest_parse_list_query("10", bad_ts[i], "1", &q, &e),
                     NS_EINVAL);
    assert_string_equal(e.field, "before");
    assert_string_equal(e.message, "before: must be an RFC 3339 timestamp");
  }
  /* limit is checked first */
  assert_int_equal(ns_rest_parse_list_query("0", "nope", NULL, &q, &e), NS_EINVAL);
  assert_string_equal(e.field, "limit");
}

/* ---- paths ---- */

static int cpath(const char *s, size_t n, ns_rest_cpath *c) {
  char *buf = exact(s, n);
  int rc = ns_rest_parse_comments_path(buf, n, c);
  free(buf);
  return rc;
}

static void test_comments_path_ok(void **state) {
  ns_rest_cpath c;
  char *post128 = repeat('p', 128, "/comments"), *cid63 = repeat('c', 63, "");
  char path[256];
  (void)state;
  assert_int_equal(cpath(IN("note-1/comments"), &c), 0);
  assert_int_equal(c.kind, NS_REST_CPATH_LIST);
  assert_string_equal(c.post_id, "note-1");
  assert_int_equal(cpath(IN("A.b_c:d-9/comments/" UUID), &c), 0);
  assert_int_equal(c.kind, NS_REST_CPATH_ITEM);
  assert_string_equal(c.post_id, "A.b_c:d-9");
  assert_string_equal(c.comment_id, UUID);
  assert_true(c.comment_id_ok);
  /* not a UUID: still ITEM; the handler answers 404 after the token check */
  assert_int_equal(cpath(IN("p/comments/abc"), &c), 0);
  assert_int_equal(c.kind, NS_REST_CPATH_ITEM);
  assert_string_equal(c.comment_id, "abc");
  assert_false(c.comment_id_ok);
  assert_int_equal(cpath(IN("p/comments/"), &c), 0);
  assert_int_equal(c.kind, NS_REST_CPATH_ITEM);
  assert_string_equal(c.comment_id, "");
  assert_false(c.comment_id_ok);
  snprintf(path, sizeof(path), "p/comments/%s", cid63);
  assert_int_equal(cpath(path, strlen(path), &c), 0);
  assert_int_equal(c.kind, NS_REST_CPATH_ITEM);
  assert_int_equal(strlen(c.comment_id), 63);
  assert_int_equal(cpath(post128, strlen(post128), &c), 0);
  assert_int_equal(c.kind, NS_REST_CPATH_LIST);
  assert_int_equal(strlen(c.post_id), 128);
  free(post128);
  free(cid63);
}

static void test_comments_path_bad(void **state) {
  static const char *const none[] = {
      "", "p", "p/", "p/comment", "p/commentsx", "p/comments2/x", "/comments",
      "p q/comments", "p/other/comments", "p%2F/comments", "p/Comments",
  };
  ns_rest_cpath c;
  char *post129 = repeat('p', 129, "/comments"), *cid64 = repeat('c', 64, "");
  char path[256];
  size_t i;
  (void)state;
  for (i = 0; i < NS_ARRAY_SIZE(none); i++) {
    assert_int_equal(cpath(none[i], strlen(none[i]), &c), NS_ENOTFOUND);
    assert_int_equal(c.kind, NS_REST_CPATH_NONE);
  }
  assert_int_equal(cpath(post129, strlen(post129), &c), NS_ENOTFOUND);
  assert_int_equal(c.kind, NS_REST_CPATH_NONE);
  assert_int_equal(cpath(IN("p/comments\0"), &c), NS_ENOTFOUND);
  assert_int_equal(c.kind, NS_REST_CPATH_NONE);
  assert_int_equal(cpath(IN("p/comments/a\0b"), &c), NS_ENOTFOUND);
  assert_int_equal(c.kind, NS_REST_CPATH_NONE);
  /* a comment id that cannot be one: "no such comment" straight away */
  snprintf(path, sizeof(path), "p/comments/%s", cid64);
  assert_int_equal(cpath(path, strlen(path), &c), NS_ENOTFOUND);
  assert_int_equal(c.kind, NS_REST_CPATH_NO_ITEM);
  assert_string_equal(c.post_id, "p");
  assert_int_equal(cpath(IN("p/comments/" UUID "/x"), &c), NS_ENOTFOUND);
  assert_int_equal(c.kind, NS_REST_CPATH_NO_ITEM);
  assert_int_equal(cpath(IN("p/comments//"), &c), NS_ENOTFOUND);
  assert_int_equal(c.kind, NS_REST_CPATH_NO_ITEM);
  free(post129);
  free(cid64);
}

static void test_valid_post_id(void **state) {
  char *p128 = repeat('x', 127, "-"), *p129 = repeat('x', 129, "");
  (void)state;
  assert_true(ns_rest_valid_post_id(IN("a")));
  assert_true(ns_rest_valid_post_id(p128, 128));
  assert_false(ns_rest_valid_post_id(p129, 129));
  assert_false(ns_rest_valid_post_id("", 0));
  /* a bad byte in the second 64-byte half is found too */
  p128[100] = '/';
  assert_false(ns_rest_valid_post_id(p128, 128));
  free(p128);
  free(p129);
}

static int npath(const char *s, size_t n, ns_rest_npath *r) {
  char *buf = exact(s, n);
  int rc = ns_rest_parse_notif_path(buf, n, r);
  free(buf);
  return rc;
}

static void test_notif_path(void **state) {
  static const char *const none[] = {
      "x/", "x/action", "x/actions/", "x/actions/y", "x/Actions", "batch/",
      UUID "/read", "actions/", "unread_count/", "unread_count/x",
      "actions/x", "unread_count/actions/",
  };
  ns_rest_npath r;
  char *long_id = repeat('a', 100, ""), *id63 = repeat('a', 63, "/actions"),
       *id64 = repeat('a', 64, "/actions");
  size_t i;
  (void)state;
  assert_int_equal(npath(IN("batch"), &r), 0);
  assert_int_equal(r.kind, NS_REST_NPATH_BATCH);
  assert_int_equal(npath(IN(UUID), &r), 0);
  assert_int_equal(r.kind, NS_REST_NPATH_ONE);
  assert_string_equal(r.id, UUID);
  assert_true(r.id_ok);
  assert_int_equal(npath(IN("batches"), &r), 0);
  assert_int_equal(r.kind, NS_REST_NPATH_ONE);
  assert_false(r.id_ok);
  assert_int_equal(npath(long_id, 100, &r), 0);
  assert_int_equal(r.kind, NS_REST_NPATH_ONE);
  assert_string_equal(r.id, "");
  assert_false(r.id_ok);
  assert_int_equal(npath(IN(UUID "/actions"), &r), 0);
  assert_int_equal(r.kind, NS_REST_NPATH_ACTIONS);
  assert_string_equal(r.id, UUID);
  assert_true(r.id_ok);
  assert_int_equal(npath(IN("batch/actions"), &r), 0);
  assert_int_equal(r.kind, NS_REST_NPATH_ACTIONS);
  assert_string_equal(r.id, "batch");
  assert_false(r.id_ok);
  assert_int_equal(npath(IN("/actions"), &r), 0);
  assert_int_equal(r.kind, NS_REST_NPATH_ACTIONS);
  assert_string_equal(r.id, "");
  assert_int_equal(npath(id63, strlen(id63), &r), 0);
  assert_int_equal(r.kind, NS_REST_NPATH_ACTIONS);
  assert_int_equal(strlen(r.id), 63);
  assert_int_equal(npath(id64, strlen(id64), &r), NS_ENOTFOUND);
  assert_int_equal(r.kind, NS_REST_NPATH_NONE);
  for (i = 0; i < NS_ARRAY_SIZE(none); i++) {
    assert_int_equal(npath(none[i], strlen(none[i]), &r), NS_ENOTFOUND);
    assert_int_equal(r.kind, NS_REST_NPATH_NONE);
  }
  /* the two fixed names of SPEC §9, compared whole */
  assert_int_equal(npath(IN("actions"), &r), 0);
  assert_int_equal(r.kind, NS_REST_NPATH_BULK);
  assert_string_equal(r.id, "");
  assert_false(r.id_ok);
  assert_int_equal(npath(IN("unread_count"), &r), 0);
  assert_int_equal(r.kind, NS_REST_NPATH_UNREAD);
  assert_string_equal(r.id, "");
  assert_false(r.id_ok);
  /* near misses stay ONE ids (404 as unknown ids) */
  assert_int_equal(npath(IN("Actions"), &r), 0);
  assert_int_equal(r.kind, NS_REST_NPATH_ONE);
  assert_int_equal(npath(IN("action"), &r), 0);
  assert_int_equal(r.kind, NS_REST_NPATH_ONE);
  assert_int_equal(npath(IN("unread_count2"), &r), 0);
  assert_int_equal(r.kind, NS_REST_NPATH_ONE);
  assert_int_equal(npath(IN("unread"), &r), 0);
  assert_int_equal(r.kind, NS_REST_NPATH_ONE);
  /* "{id}/actions" with the id "unread_count" or "actions" stays ACTIONS */
  assert_int_equal(npath(IN("unread_count/actions"), &r), 0);
  assert_int_equal(r.kind, NS_REST_NPATH_ACTIONS);
  assert_string_equal(r.id, "unread_count");
  assert_int_equal(npath(IN("actions/actions"), &r), 0);
  assert_int_equal(r.kind, NS_REST_NPATH_ACTIONS);
  assert_int_equal(npath(IN("actions\0"), &r), NS_ENOTFOUND);
  assert_int_equal(npath(IN("unread_count\0"), &r), NS_ENOTFOUND);
  assert_int_equal(npath(IN("batch\0"), &r), NS_ENOTFOUND);
  assert_int_equal(npath(IN(UUID "\0"), &r), NS_ENOTFOUND);
  free(long_id);
  free(id63);
  free(id64);
}

static void test_device_path(void **state) {
  char id[NS_DEVICE_ID_MAX + 1], *id64 = repeat('d', 64, ""),
                                 *id65 = repeat('d', 65, "");
  (void)state;
  assert_int_equal(ns_rest_parse_device_path(IN("phone-1"), id), 0);
  assert_string_equal(id, "phone-1");
  assert_int_equal(ns_rest_parse_device_path(id64, 64, id), 0);
  assert_string_equal(id, id64);
  assert_int_equal(ns_rest_parse_device_path(id65, 65, id), NS_ENOTFOUND);
  assert_string_equal(id, "");
  assert_int_equal(ns_rest_parse_device_path("", 0, id), NS_ENOTFOUND);
  assert_int_equal(ns_rest_parse_device_path(IN("a b"), id), NS_ENOTFOUND);
  assert_int_equal(ns_rest_parse_device_path(IN("a\0"), id), NS_ENOTFOUND);
  free(id64);
  free(id65);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_comment_ok),
      cmocka_unit_test(test_comment_bad),
      cmocka_unit_test(test_broadcast_ok),
      cmocka_unit_test(test_broadcast_bad),
      cmocka_unit_test(test_valid_type),
      cmocka_unit_test(test_action),
      cmocka_unit_test(test_bulk_action),
      cmocka_unit_test(test_device_header),
      cmocka_unit_test(test_query_ok),
      cmocka_unit_test(test_query_bad),
      cmocka_unit_test(test_content_length),
      cmocka_unit_test(test_list_query_ok),
      cmocka_unit_test(test_list_query_bad),
      cmocka_unit_test(test_comments_path_ok),
      cmocka_unit_test(test_comments_path_bad),
      cmocka_unit_test(test_valid_post_id),
      cmocka_unit_test(test_notif_path),
      cmocka_unit_test(test_device_path),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
