/*
 * test_proto.c -- unit tests for ns_proto: decoding every class of client
 * frame (bad_json, bad_message, unknown type, each known type valid and
 * malformed), the envelope encoder's exact output, and the validators.
 *
 * Every decode goes through decode_exact(), which copies the input into a
 * heap buffer of exactly n bytes with no NUL after it, so ASan reports any
 * read past the frame.
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
#include "ns_proto.h"

#define IN(s) s, sizeof(s) - 1
#define UUID "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
#define UUID_UPPER "3F2504E0-4F89-41D3-9A0C-0305E82C3301"
#define TS_MS INT64_C(1768473000123)
#define TS_TEXT "2026-01-15T10:30:00.123Z"

static int decode_exact(const char *s, size_t n, ns_cmd *c, ns_proto_err *e) {
  char *buf = malloc(n ? n : 1);
  int rc;
  assert_non_null(buf);
  if (n)
    memcpy(buf, s, n);
  rc = ns_proto_decode(buf, n, c, e);
  free(buf);
  return rc;
}

/* Builds a string of `n` copies of `ch` (caller frees). */
static char *repeat(char ch, size_t n) {
  char *s = malloc(n + 1);
  assert_non_null(s);
  memset(s, ch, n);
  s[n] = '\0';
  return s;
}

/* ---------------------------------------------------------------- */
/* Errors                                                             */

typedef struct err_case {
  const char *in;
  size_t n;
  const char *code;
  const char *msg_part; /* must occur in err.message */
  const char *ref;      /* expected echoed ref, NULL = none */
} err_case;

static void check_err_case(const err_case *t) {
  ns_cmd c;
  ns_proto_err e;
  int rc = decode_exact(t->in, t->n, &c, &e);

  if (rc != NS_EPARSE || !e.code || strcmp(e.code, t->code) != 0 ||
      !strstr(e.message, t->msg_part))
    print_error("input <%.*s> (%zu bytes): rc %d code %s message '%s'\n",
                (int)t->n, t->in, t->n, rc, e.code ? e.code : "(null)",
                e.message);
  assert_int_equal(rc, NS_EPARSE);
  assert_non_null(e.code);
  assert_string_equal(e.code, t->code);
  assert_non_null(strstr(e.message, t->msg_part));
  assert_true(strlen(e.message) > 0 && strlen(e.message) < sizeof(e.message));
  if (t->ref) {
    assert_int_equal(c.has_ref, 1);
    assert_string_equal(c.ref, t->ref);
  } else {
    assert_int_equal(c.has_ref, 0);
  }
  assert_null(c.token);
  ns_cmd_reset(&c);
}

#define BJ(s) {IN(s), "bad_json", "not valid JSON", NULL}

static const err_case bad_json_cases[] = {
    BJ(""),
    BJ("   "),
    BJ("\r\n\t "),
    BJ("{"),
    BJ("}"),
    BJ("]"),
    BJ(","),
    BJ("{\"type\":\"ping\""),
    BJ("{\"type\":\"pi"),
    BJ("{\"type\":"),
    BJ("{\"type\""),
    BJ("{\"type\":\"ab\\"),
    BJ("{\"type\":\"ping\",}"),
    BJ("{\"type\":\"ping\",\"x\":[1,]}"),
    BJ("{\"type\":\"ping\"]"),
    BJ("{\"a\" \"b\"}"),
    BJ("{\"a\":1 \"type\":\"ping\"}"),
    BJ("[1 2]"),
    BJ("{\"type\":\"ping\"} x"),
    BJ("{\"type\":\"ping\"}{}"),
    BJ("{\"type\":\"ping\"}\0"),
    BJ("{\"type\":\"ping\"}\0\0"),
    BJ("\0{\"type\":\"ping\"}"),
    BJ("{\"type\":\"pi\0ng\"}"),
    BJ("{\"type\":\"ping\"\0}"),
    BJ("{\"type\":\"ping\",\"x\":NaN}"),
    BJ("{\"type\":\"ping\",\"x\":Infinity}"),
    BJ("{\"type\":\"ping\",\"x\":-Infinity}"),
    BJ("{'type':'ping'}"),
    BJ("{\"type\":'ping'}"),
    BJ("{type:\"ping\"}"),
    BJ("{\"type\":\"ping\" /* c */}"),
    BJ("{\"type\":\"ping\"} // c"),
    BJ("{\"type\":\"a\tb\"}"),
    BJ("{\"type\":\"a\nb\"}"),
    BJ("{\"type\":\"a\x1f\"}"),
    BJ("{\"type\":\"\\x41\"}"),
    BJ("{\"type\":\"\\'\"}"),
    BJ("{\"type\":\"\\u12\"}"),
    BJ("{\"type\":\"\\u12G4\"}"),
    BJ("{\"type\":\"\xc0\xaf\"}"),         /* overlong '/' */
    BJ("{\"type\":\"\xe0\x80\xaf\"}"),     /* overlong, 3 bytes */
    BJ("{\"type\":\"\xed\xa0\x80\"}"),     /* U+D800 encoded */
    BJ("{\"type\":\"\xf4\x90\x80\x80\"}"), /* U+110000 */
    BJ("{\"type\":\"\xff\"}"),
    BJ("{\"type\":\"\x80\"}"),
    BJ("{\"type\":\"\xe2\x82\"}"), /* truncated sequence */
    BJ("\xef\xbb\xbf{\"type\":\"ping\"}"), /* BOM */
    BJ("{\"type\":\"ping\"}\xc2\xa0"),     /* trailing NBSP */
    BJ("\f{\"type\":\"ping\"}"),
    BJ("{\"type\":\"ping\"}\v"),
    BJ("{\"n\":01,\"type\":\"ping\"}"),
    BJ("{\"n\":1.,\"type\":\"ping\"}"),
    BJ("{\"n\":.5,\"type\":\"ping\"}"),
    BJ("{\"n\":-,\"type\":\"ping\"}"),
    BJ("{\"n\":1e,\"type\":\"ping\"}"),
    BJ("{\"n\":1e+,\"type\":\"ping\"}"),
    BJ("{\"n\":+1,\"type\":\"ping\"}"),
    BJ("{\"n\":0x10,\"type\":\"ping\"}"),
    BJ("{\"n\":tru,\"type\":\"ping\"}"),
    BJ("{\"n\":True,\"type\":\"ping\"}"),
    BJ("{\"n\":NULL,\"type\":\"ping\"}"),
    BJ("tru"),
    BJ("nul"),
    BJ("-"),
    BJ("1 2"),
    BJ("\"abc"),
};

static void test_bad_json_table(void **state) {
  for (size_t i = 0; i < NS_ARRAY_SIZE(bad_json_cases); i++)
    check_err_case(&bad_json_cases[i]);
}

/* Builds {"type":"ping","x":[[...]]} with `arrays` nested arrays, i.e. a
 * total nesting depth of arrays + 1. */
static char *nested(size_t arrays, size_t *n) {
  const char *head = "{\"type\":\"ping\",\"x\":";
  size_t hl = strlen(head);
  char *s = malloc(hl + 2 * arrays + 2);
  assert_non_null(s);
  memcpy(s, head, hl);
  memset(s + hl, '[', arrays);
  memset(s + hl + arrays, ']', arrays);
  s[hl + 2 * arrays] = '}';
  s[hl + 2 * arrays + 1] = '\0';
  *n = hl + 2 * arrays + 1;
  return s;
}

static void test_depth_bound(void **state) {
  ns_cmd c;
  ns_proto_err e;
  size_t n;
  char *s = nested(31, &n); /* depth 32: the limit */

  assert_int_equal(decode_exact(s, n, &c, &e), 0);
  assert_int_equal(c.type, NS_CMD_PING);
  ns_cmd_reset(&c);
  free(s);

  s = nested(32, &n); /* depth 33 */
  assert_int_equal(decode_exact(s, n, &c, &e), NS_EPARSE);
  assert_string_equal(e.code, "bad_json");
  assert_non_null(strstr(e.message, "nested deeper than 32"));
  ns_cmd_reset(&c);
  free(s);

  s = nested(5000, &n); /* far beyond: must not recurse that deep */
  assert_int_equal(decode_exact(s, n, &c, &e), NS_EPARSE);
  assert_string_equal(e.code, "bad_json");
  ns_cmd_reset(&c);
  free(s);

  /* Depth is nesting, not a count: 100 sibling containers are fine. */
  {
    char buf[1024];
    size_t o = (size_t)snprintf(buf, sizeof(buf), "{\"type\":\"ping\",\"x\":[");
    for (int i = 0; i < 100; i++)
      o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s", i ? ",[{}]" : "[{}]");
    o += (size_t)snprintf(buf + o, sizeof(buf) - o, "]}");
    assert_true(o < sizeof(buf));
    assert_int_equal(decode_exact(buf, o, &c, &e), 0);
    assert_int_equal(c.type, NS_CMD_PING);
    ns_cmd_reset(&c);
  }
}

#define NOT_OBJ(s) {IN(s), "bad_message", "must be a JSON object", NULL}
#define NO_TYPE(s, ref) {IN(s), "bad_message", "type must be a string", ref}
#define BAD_REF(s) {IN(s), "bad_message", "ref must be", NULL}
#define REF65 "12345678901234567890123456789012345678901234567890123456789012345"

static const err_case bad_message_cases[] = {
    NOT_OBJ("[]"),
    NOT_OBJ("[{\"type\":\"ping\"}]"),
    NOT_OBJ("42"),
    NOT_OBJ(" 0 "),
    NOT_OBJ("-1.5e3"),
    NOT_OBJ("\"ping\""),
    NOT_OBJ("true"),
    NOT_OBJ("false"),
    NOT_OBJ("null"),
    NO_TYPE("{}", NULL),
    NO_TYPE("{\"data\":{}}", NULL),
    NO_TYPE("{\"type\":1}", NULL),
    NO_TYPE("{\"type\":null}", NULL),
    NO_TYPE("{\"type\":{}}", NULL),
    NO_TYPE("{\"type\":[\"ping\"]}", NULL),
    NO_TYPE("{\"type\":true}", NULL),
    NO_TYPE("{\"Type\":\"ping\"}", NULL),
    NO_TYPE("{\"ref\":\"r7\"}", "r7"),           /* valid ref still echoed */
    NO_TYPE("{\"type\":1,\"ref\":\"r8\"}", "r8"),
    NO_TYPE("{\"type\":1,\"ref\":1}", NULL),       /* type is checked first */
    BAD_REF("{\"type\":\"ping\",\"ref\":1}"),
    BAD_REF("{\"type\":\"ping\",\"ref\":null}"),
    BAD_REF("{\"type\":\"ping\",\"ref\":{}}"),
    BAD_REF("{\"type\":\"ping\",\"ref\":[\"a\"]}"),
    BAD_REF("{\"type\":\"ping\",\"ref\":true}"),
    BAD_REF("{\"type\":\"ping\",\"ref\":\"" REF65 "\"}"),
    BAD_REF("{\"type\":\"ping\",\"ref\":\"\\u0000\"}"),
    BAD_REF("{\"type\":\"ping\",\"ref\":\"a\\u0000b\"}"),
    BAD_REF("{\"type\":\"nonsense\",\"ref\":2}"),
};

static void test_bad_message_table(void **state) {
  for (size_t i = 0; i < NS_ARRAY_SIZE(bad_message_cases); i++)
    check_err_case(&bad_message_cases[i]);
}

#define BD(s, part) {IN(s), "bad_message", part, "q"}
#define NOT_OBJ_DATA(type)                                                   \
  BD("{\"ref\":\"q\",\"type\":\"" type "\"}", "data must be an object"),      \
  BD("{\"ref\":\"q\",\"type\":\"" type "\",\"data\":null}",                   \
     "data must be an object"),                                              \
  BD("{\"ref\":\"q\",\"type\":\"" type "\",\"data\":[]}",                     \
     "data must be an object"),                                              \
  BD("{\"ref\":\"q\",\"type\":\"" type "\",\"data\":\"x\"}",                  \
     "data must be an object"),                                              \
  BD("{\"ref\":\"q\",\"type\":\"" type "\",\"data\":1}",                      \
     "data must be an object")
#define ACT(data, part) \
  BD("{\"ref\":\"q\",\"type\":\"notification_action\",\"data\":" data "}", part)
#define NID "data.notification_id must be a UUID"
#define ACTION "data.action must be one of read, unread, dismiss"
#define ALL "data.all must be true"
#define BULK_ACTION "data.action must be read or dismiss for all"
#define BEFORE "data.before must be a UUID"
#define ACK(data) BD("{\"ref\":\"q\",\"type\":\"ack\",\"data\":" data "}", "data.id")
#define SUB(data) \
  BD("{\"ref\":\"q\",\"type\":\"subscribe\",\"data\":" data "}", "data.postId")
#define REF(data) \
  BD("{\"ref\":\"q\",\"type\":\"refresh\",\"data\":" data "}", "data.token")

static const err_case bad_data_cases[] = {
    BD("{\"ref\":\"q\",\"type\":\"ping\",\"data\":null}", "data must be an object"),
    BD("{\"ref\":\"q\",\"type\":\"ping\",\"data\":[]}", "data must be an object"),
    BD("{\"ref\":\"q\",\"type\":\"ping\",\"data\":\"\"}", "data must be an object"),
    NOT_OBJ_DATA("notification_action"),
    ACT("{}", NID),
    ACT("{\"action\":\"read\"}", NID),
    ACT("{\"notification_id\":1,\"action\":\"read\"}", NID),
    ACT("{\"notification_id\":null,\"action\":\"read\"}", NID),
    ACT("{\"notification_id\":\"not-a-uuid\",\"action\":\"read\"}", NID),
    ACT("{\"notification_id\":\"{" UUID "}\",\"action\":\"read\"}", NID),
    ACT("{\"notification_id\":\"urn:uuid:" UUID "\",\"action\":\"read\"}", NID),
    ACT("{\"notification_id\":\"3f2504e0-4f89-41d3-9a0c-0305e82c330\","
        "\"action\":\"read\"}", NID),
    ACT("{\"notification_id\":\"3f2504e0-4f89-41d3-9a0c-0305e82c33011\","
        "\"action\":\"read\"}", NID),
    ACT("{\"notification_id\":\"3f2504e0-4f89-41d3-9a0c-0305e82c330g\","
        "\"action\":\"read\"}", NID),
    ACT("{\"notification_id\":\"3f2504e04-f89-41d3-9a0c-0305e82c3301\","
        "\"action\":\"read\"}", NID),
    ACT("{\"notification_id\":\"3f2504e04f8941d39a0c0305e82c3301\","
        "\"action\":\"read\"}", NID),
    ACT("{\"notification_id\":\"" UUID "\\u0000\",\"action\":\"read\"}", NID),
    ACT("{\"notification_id\":\"" UUID "\"}", ACTION),
    ACT("{\"notification_id\":\"" UUID "\",\"action\":\"READ\"}", ACTION),
    ACT("{\"notification_id\":\"" UUID "\",\"action\":\"delete\"}", ACTION),
    ACT("{\"notification_id\":\"" UUID "\",\"action\":\"\"}", ACTION),
    ACT("{\"notification_id\":\"" UUID "\",\"action\":\"rea\"}", ACTION),
    ACT("{\"notification_id\":\"" UUID "\",\"action\":\"reads\"}", ACTION),
    ACT("{\"notification_id\":\"" UUID "\",\"action\":\"read\\u0000\"}", ACTION),
    ACT("{\"notification_id\":\"" UUID "\",\"action\":1}", ACTION),
    ACT("{\"notification_id\":\"" UUID "\",\"action\":null}", ACTION),
    ACT("{\"notification_id\":\"" UUID "\",\"action\":[\"read\"]}", ACTION),
    /* bulk form (SPEC §9.5): all must be true, then no notification_id,
     * action read or dismiss, before absent/null or a UUID */
    ACT("{\"all\":false,\"action\":\"read\"}", ALL),
    ACT("{\"all\":null,\"action\":\"read\"}", ALL),
    ACT("{\"all\":\"true\",\"action\":\"read\"}", ALL),
    ACT("{\"all\":1,\"action\":\"read\"}", ALL),
    ACT("{\"all\":[true],\"action\":\"read\"}", ALL),
    ACT("{\"all\":false,\"notification_id\":\"" UUID "\",\"action\":\"read\"}",
        ALL),
    ACT("{\"all\":true,\"notification_id\":\"" UUID "\",\"action\":\"read\"}",
        "data.notification_id must be absent with data.all"),
    ACT("{\"all\":true,\"notification_id\":\"x\",\"action\":\"read\"}",
        "data.notification_id must be absent with data.all"),
    ACT("{\"all\":true,\"action\":\"unread\"}", BULK_ACTION),
    ACT("{\"all\":true}", BULK_ACTION),
    ACT("{\"all\":true,\"action\":null}", BULK_ACTION),
    ACT("{\"all\":true,\"action\":\"READ\"}", BULK_ACTION),
    ACT("{\"all\":true,\"action\":\"read\\u0000\"}", BULK_ACTION),
    ACT("{\"all\":true,\"action\":\"delete\"}", BULK_ACTION),
    ACT("{\"all\":true,\"action\":1}", BULK_ACTION),
    ACT("{\"all\":true,\"action\":\"read\",\"before\":\"x\"}", BEFORE),
    ACT("{\"all\":true,\"action\":\"read\",\"before\":\"\"}", BEFORE),
    ACT("{\"all\":true,\"action\":\"read\",\"before\":5}", BEFORE),
    ACT("{\"all\":true,\"action\":\"read\",\"before\":[\"" UUID "\"]}", BEFORE),
    ACT("{\"all\":true,\"action\":\"read\",\"before\":\"{" UUID "}\"}", BEFORE),
    ACT("{\"all\":true,\"action\":\"read\",\"before\":\"" UUID "\\u0000\"}",
        BEFORE),
    /* before without all is refused, not ignored */
    ACT("{\"notification_id\":\"" UUID "\",\"action\":\"read\",\"before\":"
        "\"" UUID "\"}", "data.before is only allowed with data.all"),
    ACT("{\"notification_id\":\"" UUID "\",\"action\":\"read\",\"before\":1}",
        "data.before is only allowed with data.all"),
    NOT_OBJ_DATA("ack"),
    ACK("{}"),
    ACK("{\"id\":123}"),
    ACK("{\"id\":null}"),
    ACK("{\"id\":\"\"}"),
    ACK("{\"id\":\"abc\"}"),
    ACK("{\"id\":\"1\"}"),
    ACK("{\"id\":\"1-\"}"),
    ACK("{\"id\":\"-1\"}"),
    ACK("{\"id\":\"-\"}"),
    ACK("{\"id\":\"1-2-3\"}"),
    ACK("{\"id\":\"01-0\"}"),
    ACK("{\"id\":\"1-00\"}"),
    ACK("{\"id\":\" 1-0\"}"),
    ACK("{\"id\":\"1-0 \"}"),
    ACK("{\"id\":\"+1-0\"}"),
    ACK("{\"id\":\"1.5-0\"}"),
    ACK("{\"id\":\"1-*\"}"),
    ACK("{\"id\":\"18446744073709551616-0\"}"),
    ACK("{\"id\":\"0-18446744073709551616\"}"),
    ACK("{\"id\":\"99999999999999999999-0\"}"),
    ACK("{\"id\":\"1-0\\u0000\"}"),
    NOT_OBJ_DATA("subscribe"),
    SUB("{}"),
    SUB("{\"postId\":\"\"}"),
    SUB("{\"postId\":5}"),
    SUB("{\"postId\":null}"),
    SUB("{\"postId\":[\"a\"]}"),
    SUB("{\"postId\":\"a\\u0000b\"}"),
    SUB("{\"post_id\":\"a\"}"),
    NOT_OBJ_DATA("refresh"),
    REF("{}"),
    REF("{\"token\":\"\"}"),
    REF("{\"token\":1}"),
    REF("{\"token\":null}"),
    REF("{\"token\":[\"a.b.c\"]}"),
    REF("{\"token\":\"ab\\u0000c\"}"),
};

static void test_bad_data_table(void **state) {
  for (size_t i = 0; i < NS_ARRAY_SIZE(bad_data_cases); i++)
    check_err_case(&bad_data_cases[i]);
}

/* Builds {"type":T,"data":{K:"<n x ch>"}} (caller frees). */
static char *with_long_field(const char *type, const char *key, char ch,
                             size_t n, size_t *len) {
  char *v = repeat(ch, n);
  size_t cap = n + strlen(type) + strlen(key) + 64;
  char *s = malloc(cap);
  int w;
  assert_non_null(s);
  w = snprintf(s, cap, "{\"type\":\"%s\",\"data\":{\"%s\":\"%s\"}}", type, key,
               v);
  assert_true(w > 0 && (size_t)w < cap);
  *len = (size_t)w;
  free(v);
  return s;
}

static void test_length_limits(void **state) {
  ns_cmd c;
  ns_proto_err e;
  size_t n;
  char *s;

  s = with_long_field("subscribe", "postId", 'p', NS_POST_ID_MAX, &n);
  assert_int_equal(decode_exact(s, n, &c, &e), 0);
  assert_int_equal(strlen(c.post_id), NS_POST_ID_MAX);
  ns_cmd_reset(&c);
  free(s);
  s = with_long_field("subscribe", "postId", 'p', NS_POST_ID_MAX + 1, &n);
  assert_int_equal(decode_exact(s, n, &c, &e), NS_EPARSE);
  assert_non_null(strstr(e.message, "data.postId"));
  ns_cmd_reset(&c);
  free(s);

  s = with_long_field("refresh", "token", 't', NS_TOKEN_MAX, &n);
  assert_int_equal(decode_exact(s, n, &c, &e), 0);
  assert_non_null(c.token);
  assert_int_equal(strlen(c.token), NS_TOKEN_MAX);
  ns_cmd_reset(&c);
  free(s);
  s = with_long_field("refresh", "token", 't', NS_TOKEN_MAX + 1, &n);
  assert_int_equal(decode_exact(s, n, &c, &e), NS_EPARSE);
  assert_non_null(strstr(e.message, "data.token"));
  assert_null(c.token);
  ns_cmd_reset(&c);
  free(s);

  /* A 60 KB unknown field is carried along and ignored. */
  s = with_long_field("ping", "pad", 'z', 60000, &n);
  assert_int_equal(decode_exact(s, n, &c, &e), 0);
  assert_int_equal(c.type, NS_CMD_PING);
  ns_cmd_reset(&c);
  free(s);

  /* ref of exactly 64 bytes is fine. */
  assert_int_equal(decode_exact(IN("{\"type\":\"ping\",\"ref\":\"1234567890123"
                                   "4567890123456789012345678901234567890123"
                                   "45678901234\"}"), &c, &e), 0);
  assert_int_equal(strlen(c.ref), NS_REF_MAX);
  ns_cmd_reset(&c);
}

/* ---------------------------------------------------------------- */
/* Successful decodes                                                 */

typedef struct ok_case {
  const char *in;
  size_t n;
  ns_cmd_type type;
  const char *type_name;
  const char *ref; /* NULL: no ref */
  ns_action action;
  const char *nid, *id, *post_id, *token; /* NULL: field must be empty */
} ok_case;

#define PING(s) {IN(s), NS_CMD_PING, "ping", NULL, 0, NULL, NULL, NULL, NULL}
#define UNKNOWN(s, name, ref) {IN(s), NS_CMD_UNKNOWN, name, ref, 0, NULL, NULL, NULL, NULL}
#define ACTION_OK(s, a) \
  {IN(s), NS_CMD_ACTION, "notification_action", NULL, a, UUID, NULL, NULL, NULL}
#define ACK_OK(s, v) {IN(s), NS_CMD_ACK, "ack", NULL, 0, NULL, v, NULL, NULL}

static const ok_case ok_cases[] = {
    PING("{\"type\":\"ping\"}"),
    PING("{\"type\":\"ping\",\"data\":{}}"),
    PING("{\"data\":{},\"type\":\"ping\"}"),
    PING("{\"type\":\"ping\",\"data\":{\"x\":[1,2.5e-3,{\"y\":null}],\"z\":false}}"),
    PING(" \r\n\t{ \"type\" : \"ping\" } \n"),
    PING("{\"type\":\"p\\u0069ng\"}"),
    PING("{\"type\":\"ping\",\"timestamp\":\"2026-01-15T10:30:00Z\",\"extra\":1}"),
    PING("{\"type\":\"ping\",\"n\":-0.0e+10,\"m\":1E5,\"big\":1e99999}"),
    {IN("{\"type\":\"ping\",\"ref\":\"abc\"}"), NS_CMD_PING, "ping", "abc", 0,
     NULL, NULL, NULL, NULL},
    {IN("{\"type\":\"ping\",\"ref\":\"\"}"), NS_CMD_PING, "ping", "", 0, NULL,
     NULL, NULL, NULL},
    {IN("{\"type\":\"ping\",\"ref\":\"\\u00e9t\\u00e9 \\\"q\\\" \\/\"}"),
     NS_CMD_PING, "ping", "\xc3\xa9t\xc3\xa9 \"q\" /", 0, NULL, NULL, NULL,
     NULL},
    /* json-c turns a lone surrogate escape into U+FFFD: still valid UTF-8 */
    {IN("{\"type\":\"ping\",\"ref\":\"\\ud800\"}"), NS_CMD_PING, "ping",
     "\xef\xbf\xbd", 0, NULL, NULL, NULL, NULL},
    {IN("{\"type\":\"ping\",\"ref\":\"\\ud83d\\ude00\"}"), NS_CMD_PING, "ping",
     "\xf0\x9f\x98\x80", 0, NULL, NULL, NULL, NULL},
    ACTION_OK("{\"type\":\"notification_action\",\"data\":{\"notification_id\":"
              "\"" UUID "\",\"action\":\"read\"}}", NS_ACTION_READ),
    ACTION_OK("{\"type\":\"notification_action\",\"data\":{\"action\":\"unread\","
              "\"notification_id\":\"" UUID "\"}}", NS_ACTION_UNREAD),
    ACTION_OK("{\"type\":\"notification_action\",\"data\":{\"notification_id\":"
              "\"" UUID "\",\"action\":\"dismiss\",\"extra\":[1]}}",
              NS_ACTION_DISMISS),
    ACTION_OK("{\"type\":\"notification_action\",\"data\":{\"notification_id\":"
              "\"" UUID_UPPER "\",\"action\":\"read\"}}", NS_ACTION_READ),
    /* before: null is as absent, also without all */
    ACTION_OK("{\"type\":\"notification_action\",\"data\":{\"notification_id\":"
              "\"" UUID "\",\"action\":\"read\",\"before\":null}}",
              NS_ACTION_READ),
    ACK_OK("{\"type\":\"ack\",\"data\":{\"id\":\"1737000000123-0\"}}",
           "1737000000123-0"),
    ACK_OK("{\"type\":\"ack\",\"data\":{\"id\":\"0-0\"}}", "0-0"),
    ACK_OK("{\"type\":\"ack\",\"data\":{\"id\":"
           "\"18446744073709551615-18446744073709551615\"}}",
           "18446744073709551615-18446744073709551615"),
    {IN("{\"type\":\"subscribe\",\"ref\":\"s1\",\"data\":{\"postId\":\"note-1\"}}"),
     NS_CMD_SUBSCRIBE, "subscribe", "s1", 0, NULL, NULL, "note-1", NULL},
    {IN("{\"type\":\"subscribe\",\"data\":{\"postId\":\"\\u00e9t\\u00e9\"}}"),
     NS_CMD_SUBSCRIBE, "subscribe", NULL, 0, NULL, NULL, "\xc3\xa9t\xc3\xa9",
     NULL},
    {IN("{\"type\":\"refresh\",\"data\":{\"token\":\"eyJhbGciOi.eyJzdWIi.sig\"}}"),
     NS_CMD_REFRESH, "refresh", NULL, 0, NULL, NULL, NULL,
     "eyJhbGciOi.eyJzdWIi.sig"},
    UNKNOWN("{\"type\":\"foo\",\"ref\":\"r1\"}", "foo", "r1"),
    UNKNOWN("{\"type\":\"PING\"}", "PING", NULL),
    UNKNOWN("{\"type\":\"\"}", "", NULL),
    UNKNOWN("{\"type\":\"ping \"}", "ping ", NULL),
    UNKNOWN("{\"type\":\"ping\\u0000\"}", "ping?", NULL),
    UNKNOWN("{\"type\":\"a\\u001fb\\u007f\"}", "a?b?", NULL),
    UNKNOWN("{\"type\":\"new_notification\",\"data\":5}", "new_notification",
            NULL),
    UNKNOWN("{\"type\":\"\\u00e9v\\u00e9nement\"}",
            "\xc3\xa9v\xc3\xa9nement", NULL),
};

static void expect_str(const char *field, const char *got, const char *want,
                       size_t idx) {
  const char *w = want ? want : "";
  if (strcmp(got, w) != 0)
    print_error("case %zu: %s is '%s', want '%s'\n", idx, field, got, w);
  assert_string_equal(got, w);
}

static void test_ok_table(void **state) {
  for (size_t i = 0; i < NS_ARRAY_SIZE(ok_cases); i++) {
    const ok_case *t = &ok_cases[i];
    ns_cmd c;
    ns_proto_err e;
    int rc = decode_exact(t->in, t->n, &c, &e);

    if (rc != 0)
      print_error("case %zu <%s>: rc %d %s\n", i, t->in, rc, e.message);
    assert_int_equal(rc, 0);
    assert_int_equal(c.type, t->type);
    expect_str("type_name", c.type_name, t->type_name, i);
    assert_int_equal(c.has_ref, t->ref != NULL);
    expect_str("ref", c.ref, t->ref, i);
    assert_int_equal(c.action, t->action);
    assert_int_equal(c.all, 0);
    expect_str("before", c.before, NULL, i);
    expect_str("notification_id", c.notification_id, t->nid, i);
    expect_str("id", c.id, t->id, i);
    expect_str("post_id", c.post_id, t->post_id, i);
    if (t->token) {
      assert_non_null(c.token);
      assert_string_equal(c.token, t->token);
    } else {
      assert_null(c.token);
    }
    ns_cmd_reset(&c);
  }
}

/* The bulk form of notification_action (SPEC §9.5). */
static const struct {
  const char *in;
  size_t n;
  ns_action action;
  const char *before;
} bulk_ok_cases[] = {
    {IN("{\"type\":\"notification_action\",\"data\":{\"all\":true,"
        "\"action\":\"read\"}}"), NS_ACTION_READ, ""},
    {IN("{\"type\":\"notification_action\",\"data\":{\"action\":\"dismiss\","
        "\"all\":true,\"extra\":1}}"), NS_ACTION_DISMISS, ""},
    {IN("{\"type\":\"notification_action\",\"data\":{\"all\":true,"
        "\"action\":\"read\",\"before\":null,\"notification_id\":null}}"),
     NS_ACTION_READ, ""},
    {IN("{\"type\":\"notification_action\",\"data\":{\"all\":true,"
        "\"action\":\"dismiss\",\"before\":\"" UUID "\"}}"),
     NS_ACTION_DISMISS, UUID},
    {IN("{\"type\":\"notification_action\",\"data\":{\"all\":true,"
        "\"action\":\"read\",\"before\":\"" UUID_UPPER "\"}}"),
     NS_ACTION_READ, UUID},
};

static void test_bulk_action_ok(void **state) {
  (void)state;
  for (size_t i = 0; i < NS_ARRAY_SIZE(bulk_ok_cases); i++) {
    ns_cmd c;
    ns_proto_err e;
    int rc = decode_exact(bulk_ok_cases[i].in, bulk_ok_cases[i].n, &c, &e);
    if (rc != 0)
      print_error("case %zu: rc %d %s\n", i, rc, e.message);
    assert_int_equal(rc, 0);
    assert_int_equal(c.type, NS_CMD_ACTION);
    assert_int_equal(c.all, 1);
    assert_int_equal(c.action, bulk_ok_cases[i].action);
    assert_string_equal(c.notification_id, "");
    expect_str("before", c.before, bulk_ok_cases[i].before, i);
    ns_cmd_reset(&c);
  }
}

static void test_type_name_truncation(void **state) {
  ns_cmd c;
  ns_proto_err e;
  char in[512];
  char *x200 = repeat('x', 200), *x63 = repeat('x', 63), *x62 = repeat('x', 62);
  int w;

  w = snprintf(in, sizeof(in), "{\"type\":\"%s\",\"ref\":\"t\"}", x200);
  assert_int_equal(decode_exact(in, (size_t)w, &c, &e), 0);
  assert_int_equal(c.type, NS_CMD_UNKNOWN);
  assert_int_equal(strlen(c.type_name), 64);
  assert_memory_equal(c.type_name, x200, 64);
  assert_string_equal(c.ref, "t");
  ns_cmd_reset(&c);

  /* 63 x + "é" (2 bytes) = 65: the é does not fit and is dropped whole. */
  w = snprintf(in, sizeof(in), "{\"type\":\"%s\xc3\xa9\"}", x63);
  assert_int_equal(decode_exact(in, (size_t)w, &c, &e), 0);
  assert_string_equal(c.type_name, x63);
  ns_cmd_reset(&c);

  /* 62 x + "é" = 64 bytes: fits exactly. */
  w = snprintf(in, sizeof(in), "{\"type\":\"%s\xc3\xa9zz\"}", x62);
  assert_int_equal(decode_exact(in, (size_t)w, &c, &e), 0);
  assert_int_equal(strlen(c.type_name), 64);
  assert_memory_equal(c.type_name + 62, "\xc3\xa9", 2);
  assert_true(ns_proto_utf8_valid(c.type_name, strlen(c.type_name)));
  ns_cmd_reset(&c);
  free(x200);
  free(x63);
  free(x62);
}

static void test_decode_respects_length(void **state) {
  static const char buf[] = "{\"type\":\"ping\"}GARBAGE";
  ns_cmd c;
  ns_proto_err e;

  assert_int_equal(decode_exact(buf, 15, &c, &e), 0);
  assert_int_equal(c.type, NS_CMD_PING);
  ns_cmd_reset(&c);
  assert_int_equal(decode_exact(buf, 14, &c, &e), NS_EPARSE);
  assert_string_equal(e.code, "bad_json");
  ns_cmd_reset(&c);
  /* NULL err is tolerated; NULL data with n == 0 is just empty input. */
  assert_int_equal(ns_proto_decode(buf, 3, &c, NULL), NS_EPARSE);
  ns_cmd_reset(&c);
  assert_int_equal(ns_proto_decode(NULL, 0, &c, &e), NS_EPARSE);
  assert_string_equal(e.code, "bad_json");
  ns_cmd_reset(&c);
}

static void test_bad_json_messages(void **state) {
  static const struct {
    const char *in;
    size_t n;
    const char *message;
  } t[] = {
      {IN(""), "message is not valid JSON: no value"},
      {IN(" \n "), "message is not valid JSON: no value"},
      {IN("{\"type\":\"ping\"} x"), "message is not valid JSON at byte 16"},
      {IN("{\"type\":NaN}"), "message is not valid JSON at byte 8"},
      {IN("{\"a\":\"\xed\xa0\x80\"}"), "message is not valid JSON at byte 6"},
  };
  for (size_t i = 0; i < NS_ARRAY_SIZE(t); i++) {
    ns_cmd c;
    ns_proto_err e;
    assert_int_equal(decode_exact(t[i].in, t[i].n, &c, &e), NS_EPARSE);
    assert_string_equal(e.code, "bad_json");
    assert_string_equal(e.message, t[i].message);
    ns_cmd_reset(&c);
  }
}

static void test_reset_and_reuse(void **state) {
  ns_cmd c;
  ns_proto_err e;

  memset(&c, 0xa5, sizeof(c)); /* decode must not trust old contents */
  assert_int_equal(decode_exact(IN("{\"type\":\"refresh\",\"ref\":\"x\","
                                   "\"data\":{\"token\":\"abc\"}}"), &c, &e), 0);
  assert_int_equal(c.type, NS_CMD_REFRESH);
  assert_string_equal(c.token, "abc");
  assert_string_equal(c.notification_id, "");
  ns_cmd_reset(&c);
  assert_null(c.token);
  assert_int_equal(c.has_ref, 0);
  assert_int_equal(c.type, NS_CMD_UNKNOWN);
  ns_cmd_reset(&c); /* twice is harmless */
  ns_cmd_reset(NULL);

  assert_int_equal(decode_exact(IN("{\"type\":\"ack\",\"data\":{\"id\":\"5-1\"}}"),
                                &c, &e), 0);
  assert_int_equal(c.type, NS_CMD_ACK);
  assert_string_equal(c.id, "5-1");
  assert_null(c.token);
  ns_cmd_reset(&c);
}

/* ---------------------------------------------------------------- */
/* Envelope                                                           */

static json_object *parse_back(const char *s, size_t n) {
  json_tokener *tok = json_tokener_new();
  json_object *o;
  assert_non_null(tok);
  o = json_tokener_parse_ex(tok, s, (int)n);
  assert_non_null(o);
  assert_int_equal(json_tokener_get_parse_end(tok), n);
  json_tokener_free(tok);
  return o;
}

/* Checks the keys of `o` appear exactly in the order given (NULL ends). */
static void expect_keys(json_object *o, const char *const *keys) {
  size_t k = 0;
  json_object_object_foreach(o, key, val) {
    (void)val;
    assert_non_null(keys[k]);
    assert_string_equal(key, keys[k]);
    k++;
  }
  assert_null(keys[k]);
}

static void test_envelope_exact(void **state) {
  static const char want[] =
      "{\"type\":\"new_notification\",\"id\":\"1-0\",\"ref\":\"r\","
      "\"data\":{\"a\":1,\"s\":\"x/y\"},\"timestamp\":\"" TS_TEXT "\"}";
  json_object *data = json_object_new_object();
  size_t len = 0;
  char *buf;

  json_object_object_add(data, "a", json_object_new_int(1));
  json_object_object_add(data, "s", json_object_new_string("x/y"));
  buf = ns_proto_envelope("new_notification", data, "1-0", "r", TS_MS, 16,
                          &len);
  assert_non_null(buf);
  assert_int_equal(len, strlen(want));
  assert_memory_equal(buf + 16, want, len);
  assert_int_equal(buf[16 + len], '\0');
  free(buf);

  buf = ns_proto_envelope("pong", NULL, NULL, NULL, TS_MS, 0, &len);
  assert_non_null(buf);
  assert_string_equal(buf, "{\"type\":\"pong\",\"data\":{},\"timestamp\":\"" TS_TEXT "\"}");
  assert_int_equal(len, strlen(buf));
  free(buf);

  /* len may be NULL. */
  buf = ns_proto_envelope("ok", NULL, NULL, "", TS_MS, 4, NULL);
  assert_non_null(buf);
  assert_string_equal(buf + 4, "{\"type\":\"ok\",\"ref\":\"\",\"data\":{},"
                               "\"timestamp\":\"" TS_TEXT "\"}");
  free(buf);
}

static void test_envelope_parse_back(void **state) {
  static const char *const keys_full[] = {"type", "id", "ref", "data",
                                          "timestamp", NULL};
  static const char ref[] = "q\"\\\n\t\xc3\xa9</";
  json_object *data = json_object_new_object();
  json_object *o, *v;
  size_t len;
  char *buf;

  json_object_object_add(data, "title", json_object_new_string("a \"b\" \x01"));
  buf = ns_proto_envelope("x.y", data, "1737000000123-7", ref, TS_MS, 32, &len);
  assert_non_null(buf);
  assert_int_equal(strlen(buf + 32), len);
  o = parse_back(buf + 32, len);
  expect_keys(o, keys_full);
  assert_true(json_object_object_get_ex(o, "type", &v));
  assert_string_equal(json_object_get_string(v), "x.y");
  assert_true(json_object_object_get_ex(o, "id", &v));
  assert_string_equal(json_object_get_string(v), "1737000000123-7");
  assert_true(json_object_object_get_ex(o, "ref", &v));
  assert_string_equal(json_object_get_string(v), ref);
  assert_true(json_object_object_get_ex(o, "timestamp", &v));
  assert_string_equal(json_object_get_string(v), TS_TEXT);
  assert_true(json_object_object_get_ex(o, "data", &v));
  assert_true(json_object_object_get_ex(v, "title", &v));
  assert_string_equal(json_object_get_string(v), "a \"b\" \x01");
  assert_null(strchr(buf + 32, '\n')); /* compact, one line */
  assert_null(strstr(buf + 32, "\\/")); /* slashes not escaped */
  json_object_put(o);
  free(buf);
}

static void test_envelope_large_and_errors(void **state) {
  char *big = repeat('b', 200000);
  json_object *data = json_object_new_object();
  size_t len;
  char *buf;

  json_object_object_add(data, "body", json_object_new_string(big));
  buf = ns_proto_envelope("test", data, NULL, NULL, TS_MS, 16, &len);
  assert_non_null(buf);
  assert_true(len > 200000);
  assert_int_equal(strlen(buf + 16), len);
  free(buf);
  free(big);

  /* NULL type fails, and still consumes data (ASan checks no leak). */
  data = json_object_new_object();
  json_object_object_add(data, "a", json_object_new_int(1));
  assert_null(ns_proto_envelope(NULL, data, NULL, NULL, TS_MS, 0, &len));
}

static void test_error_envelope(void **state) {
  static const char *const keys[] = {"type", "ref", "data", "timestamp", NULL};
  static const char *const data_keys[] = {"code", "message", NULL};
  size_t len;
  char *buf;
  json_object *o, *d, *v;

  buf = ns_proto_error("bad_message", "type must be a string", "r9", TS_MS, 16,
                       &len);
  assert_non_null(buf);
  assert_string_equal(buf + 16,
                      "{\"type\":\"error\",\"ref\":\"r9\",\"data\":{\"code\":"
                      "\"bad_message\",\"message\":\"type must be a string\"},"
                      "\"timestamp\":\"" TS_TEXT "\"}");
  o = parse_back(buf + 16, len);
  expect_keys(o, keys);
  assert_true(json_object_object_get_ex(o, "data", &d));
  expect_keys(d, data_keys);
  json_object_put(o);
  free(buf);

  buf = ns_proto_error(NULL, NULL, NULL, TS_MS, 0, &len);
  assert_non_null(buf);
  o = parse_back(buf, len);
  assert_false(json_object_object_get_ex(o, "ref", &v));
  assert_true(json_object_object_get_ex(o, "data", &d));
  assert_true(json_object_object_get_ex(d, "code", &v));
  assert_string_equal(json_object_get_string(v), "internal");
  assert_true(json_object_object_get_ex(d, "message", &v));
  assert_string_equal(json_object_get_string(v), "");
  json_object_put(o);
  free(buf);
}

/* A decoded ref, echoed through ns_proto_error, comes back identical. */
static void test_ref_round_trip(void **state) {
  static const char in[] =
      "{\"type\":\"nope\",\"ref\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0001\\u00ff\\ud83d\\ude00\"}";
  ns_cmd c;
  ns_proto_err e;
  size_t len;
  char *buf;
  json_object *o, *v;

  assert_int_equal(decode_exact(in, sizeof(in) - 1, &c, &e), 0);
  assert_int_equal(c.type, NS_CMD_UNKNOWN);
  assert_int_equal(c.has_ref, 1);
  buf = ns_proto_error("unknown_type", "unknown type", c.ref, TS_MS, 0, &len);
  assert_non_null(buf);
  o = parse_back(buf, len);
  assert_true(json_object_object_get_ex(o, "ref", &v));
  assert_string_equal(json_object_get_string(v), c.ref);
  assert_string_equal(c.ref, "\"\\/\b\f\n\r\t\x01\xc3\xbf\xf0\x9f\x98\x80");
  json_object_put(o);
  free(buf);
  ns_cmd_reset(&c);
}

/* ---------------------------------------------------------------- */
/* Validators                                                         */

typedef struct vcase {
  const char *s;
  size_t n;
  int want;
} vcase;

#define V(s, w) {IN(s), w}
#define S64 "1234567890123456789012345678901234567890123456789012345678901234"

static void run_vcases(int (*fn)(const char *, size_t), const vcase *t,
                       size_t count, const char *name) {
  for (size_t i = 0; i < count; i++) {
    int got = fn(t[i].s, t[i].n);
    if (got != t[i].want)
      print_error("%s(<%.*s>, %zu) = %d, want %d\n", name, (int)t[i].n,
                  t[i].s, t[i].n, got, t[i].want);
    assert_int_equal(got, t[i].want);
  }
  assert_int_equal(fn(NULL, 0), 0);
  assert_int_equal(fn(NULL, 5), 0);
}

static void test_valid_device_id(void **state) {
  static const vcase t[] = {
      V("a", 1), V("phone-1", 1), V(UUID, 1), V("a.b:c-d", 1), V("AZaz09", 1),
      V(S64, 1), V(S64 "5", 0), V("", 0), V("a b", 0), V("a/b", 0),
      V("a_b", 1), V("a+b", 0), V("\xc3\xa9", 0), V("a\0b", 0), V("a\n", 0),
  };
  run_vcases(ns_proto_valid_device_id, t, NS_ARRAY_SIZE(t), "device_id");
}

static void test_valid_device_name(void **state) {
  static const vcase t[] = {
      V("Pixel 8", 1), V("J\xc3\xbcrgen's iPhone", 1), V("\xf0\x9f\x93\xb1", 1),
      V("~!@#$%^&*()", 1), V(S64, 1), V(S64 "5", 0), V("", 0), V("a\tb", 0),
      V("a\nb", 0), V("a\x7f", 0), V("a\0b", 0), V("\x1b[31m", 0),
      V("\xc0\xaf", 0), V("\xed\xa0\x80", 0), V("\xff", 0),
      /* 63 bytes + a 2-byte character = 65 bytes */
      V("12345678901234567890123456789012345678901234567890123456789012\xc3\xa9",
        1),
      V("123456789012345678901234567890123456789012345678901234567890123\xc3\xa9",
        0),
  };
  run_vcases(ns_proto_valid_device_name, t, NS_ARRAY_SIZE(t), "device_name");
}

static void test_valid_platform(void **state) {
  static const vcase t[] = {
      V("android", 1), V("ios", 1), V("web", 1), V("x86_64", 1),
      V("linux-5.10", 1), V("1234567890123456", 1), V("12345678901234567", 0),
      V("", 0), V("a b", 0), V("a:b", 0), V("\xc3\xa9", 0), V("a\0", 0),
  };
  run_vcases(ns_proto_valid_platform, t, NS_ARRAY_SIZE(t), "platform");
}

static void test_valid_stream_id(void **state) {
  static const vcase t[] = {
      V("0-0", 1), V("1737000000123-0", 1), V("1-18446744073709551615", 1),
      V("18446744073709551615-18446744073709551615", 1),
      V("18446744073709551614-9", 1), V("", 0), V("-", 0), V("1-", 0),
      V("-1", 0), V("1", 0), V("1-2-3", 0), V("01-0", 0), V("0-01", 0),
      V("18446744073709551616-0", 0), V("99999999999999999999-0", 0),
      V("184467440737095516150-0", 0), V("00000000000000000001-0", 0),
      V("a-0", 0), V("1-0x", 0), V(" 1-0", 0), V("1 -0", 0), V("+1-0", 0),
      V("1-+0", 0), V("1-0\0", 0), V("\xd9\xa1-0", 0),
  };
  run_vcases(ns_proto_valid_stream_id, t, NS_ARRAY_SIZE(t), "stream_id");
}

static void test_valid_uuid(void **state) {
  static const vcase t[] = {
      V(UUID, 1), V(UUID_UPPER, 1), V("3f2504E0-4F89-41d3-9A0C-0305e82c3301", 1),
      V("00000000-0000-0000-0000-000000000000", 1), V("", 0),
      V("3f2504e0-4f89-41d3-9a0c-0305e82c330", 0),
      V("3f2504e0-4f89-41d3-9a0c-0305e82c33011", 0),
      V("{3f2504e0-4f89-41d3-9a0c-0305e82c33}", 0),
      V("3f2504e04f8941d39a0c0305e82c3301", 0),
      V("3f2504e0-4f8941d3-9a0c-0305-e82c3301", 0),
      V("3f2504e0-4f89-41d3-9a0c-0305e82c330g", 0),
      V("3f2504e0_4f89_41d3_9a0c_0305e82c3301", 0),
      V("3f2504e0-4f89-41d3-9a0c-0305e82c330\0", 0),
      V("urn:uuid:3f2504e0-4f89-41d3-9a0c-0305e82c3301", 0),
  };
  run_vcases(ns_proto_valid_uuid, t, NS_ARRAY_SIZE(t), "uuid");
}

static void test_utf8(void **state) {
  static const vcase t[] = {
      V("", 1), V("plain ascii", 1), V("a\0b", 1), V("\x7f", 1),
      V("\xc2\x80", 1),             /* U+0080, smallest 2-byte */
      V("\xdf\xbf", 1),             /* U+07FF */
      V("\xe0\xa0\x80", 1),         /* U+0800 */
      V("\xed\x9f\xbf", 1),         /* U+D7FF */
      V("\xee\x80\x80", 1),         /* U+E000 */
      V("\xef\xbf\xbf", 1),         /* U+FFFF */
      V("\xf0\x90\x80\x80", 1),     /* U+10000 */
      V("\xf4\x8f\xbf\xbf", 1),     /* U+10FFFF */
      V("\xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80", 1),
      V("\xc0\x80", 0),             /* overlong NUL */
      V("\xc1\xbf", 0),             /* overlong */
      V("\xe0\x80\x80", 0), V("\xe0\x9f\xbf", 0), /* overlong 3-byte */
      V("\xf0\x80\x80\x80", 0), V("\xf0\x8f\xbf\xbf", 0), /* overlong 4 */
      V("\xed\xa0\x80", 0),         /* U+D800 */
      V("\xed\xbf\xbf", 0),         /* U+DFFF */
      V("\xed\xa0\xbd\xed\xb8\x80", 0), /* CESU-8 pair */
      V("\xf4\x90\x80\x80", 0),     /* U+110000 */
      V("\xf5\x80\x80\x80", 0), V("\xf8\x88\x80\x80\x80", 0),
      V("\xfe", 0), V("\xff", 0), V("\x80", 0), V("\xbf", 0),
      V("a\x80", 0), V("\xc2", 0), V("\xe2\x82", 0), V("\xf0\x9f\x98", 0),
      V("\xc2\x41", 0), V("\xe2\x28\xa1", 0), V("\xe2\x82\x28", 0),
      V("\xf0\x9f\x98\x28", 0), V("\xc3\xa9\xc3", 0),
  };
  for (size_t i = 0; i < NS_ARRAY_SIZE(t); i++) {
    int got = ns_proto_utf8_valid(t[i].s, t[i].n);
    if (got != t[i].want)
      print_error("utf8 case %zu: got %d want %d\n", i, got, t[i].want);
    assert_int_equal(got, t[i].want);
  }
  assert_int_equal(ns_proto_utf8_valid(NULL, 0), 1);
  assert_int_equal(ns_proto_utf8_valid(NULL, 1), 0);
  /* Truncating a valid 4-byte sequence at every length is caught. */
  for (size_t k = 1; k < 4; k++)
    assert_int_equal(ns_proto_utf8_valid("\xf0\x9f\x98\x80", k), 0);
}

/* Every 2-byte lead/continuation pair: valid iff lead is C2..DF and the
 * second byte is a continuation byte. */
static void test_utf8_exhaustive_two_byte(void **state) {
  for (unsigned a = 0x80; a <= 0xff; a++) {
    for (unsigned b = 0; b <= 0xff; b++) {
      char s[2] = {(char)a, (char)b};
      int want = a >= 0xc2 && a <= 0xdf && b >= 0x80 && b <= 0xbf;
      assert_int_equal(ns_proto_utf8_valid(s, 2), want);
    }
  }
}

static void test_action_name(void **state) {
  assert_string_equal(ns_action_name(NS_ACTION_READ), "read");
  assert_string_equal(ns_action_name(NS_ACTION_UNREAD), "unread");
  assert_string_equal(ns_action_name(NS_ACTION_DISMISS), "dismiss");
  assert_string_equal(ns_action_name(NS_ACTION_NONE), "none");
  assert_string_equal(ns_action_name((ns_action)42), "none");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bad_json_table),
      cmocka_unit_test(test_depth_bound),
      cmocka_unit_test(test_bad_message_table),
      cmocka_unit_test(test_bad_data_table),
      cmocka_unit_test(test_length_limits),
      cmocka_unit_test(test_ok_table),
      cmocka_unit_test(test_bulk_action_ok),
      cmocka_unit_test(test_type_name_truncation),
      cmocka_unit_test(test_decode_respects_length),
      cmocka_unit_test(test_bad_json_messages),
      cmocka_unit_test(test_reset_and_reuse),
      cmocka_unit_test(test_envelope_exact),
      cmocka_unit_test(test_envelope_parse_back),
      cmocka_unit_test(test_envelope_large_and_errors),
      cmocka_unit_test(test_error_envelope),
      cmocka_unit_test(test_ref_round_trip),
      cmocka_unit_test(test_valid_device_id),
      cmocka_unit_test(test_valid_device_name),
      cmocka_unit_test(test_valid_platform),
      cmocka_unit_test(test_valid_stream_id),
      cmocka_unit_test(test_valid_uuid),
      cmocka_unit_test(test_utf8),
      cmocka_unit_test(test_utf8_exhaustive_two_byte),
      cmocka_unit_test(test_action_name),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
