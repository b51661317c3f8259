/*
 * fuzz_proto.c -- libFuzzer target for ns_proto: every byte string a client
 * can send as a WebSocket text frame.
 *
 * Beyond "no crash, no leak, no sanitizer report" it checks properties, and
 * traps (a crash to the fuzzer) when one fails:
 *   - decode returns 0 or NS_EPARSE with code bad_json/bad_message, never
 *     NS_ENOMEM: that would mean json-c refused input our strict JSON check
 *     accepted (the two parsers disagree);
 *   - a decoded cmd holds the invariants ns_proto.c promises (validated
 *     fields, bounded UTF-8 strings, token only for refresh; a bulk
 *     notification_action has all == 1 exactly when its data.all is true,
 *     no id, read or dismiss, and before "" or a lower-case UUID);
 *   - the error reply for the frame, echoing its ref, decodes again with
 *     the same ref: ns_proto's own output is strict JSON;
 *   - any strictly valid JSON wrapped by ns_proto_envelope as `data` comes
 *     back through ns_proto_decode intact;
 *   - ns_proto_utf8_valid agrees with an independent reference decoder.
 */
#include <json.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ns_common.h"
#include "ns_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)        \
  do {                     \
    if (!(cond))           \
      __builtin_trap();    \
  } while (0)

/* Reference UTF-8 check, written differently from ns_proto's on purpose:
 * decode the code point, then reject overlong, surrogate and out-of-range
 * values. */
static int ref_utf8_valid(const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint32_t cp, min;
    size_t len;
    if (s[i] < 0x80) {
      i++;
      continue;
    } else if ((s[i] & 0xe0) == 0xc0) {
      len = 2, cp = s[i] & 0x1f, min = 0x80;
    } else if ((s[i] & 0xf0) == 0xe0) {
      len = 3, cp = s[i] & 0x0f, min = 0x800;
    } else if ((s[i] & 0xf8) == 0xf0) {
      len = 4, cp = s[i] & 0x07, min = 0x10000;
    } else {
      return 0;
    }
    if (n - i < len)
      return 0;
    for (size_t k = 1; k < len; k++) {
      if ((s[i + k] & 0xc0) != 0x80)
        return 0;
      cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return 0;
    i += len;
  }
  return 1;
}

static int bounded_text(const char *s, size_t max) {
  size_t n = strnlen(s, max + 1);
  return n <= max && ns_proto_utf8_valid(s, n);
}

/* A UUID in the lower-case form decode promises for ids. */
static int lower_uuid(const char *s) {
  if (!ns_proto_valid_uuid(s, strlen(s)))
    return 0;
  for (size_t i = 0; s[i]; i++)
    if (s[i] >= 'A' && s[i] <= 'F')
      return 0;
  return 1;
}

/* The frame's data.all, when it is an object frame: 1 when it is the
 * boolean true, 0 otherwise (absent too). */
static int frame_says_all(const uint8_t *data, size_t size) {
  json_tokener *tok = json_tokener_new();
  json_object *o, *d, *a;
  int all = 0;
  CHECK(tok != NULL);
  o = json_tokener_parse_ex(tok, (const char *)data, (int)size);
  if (!o && json_tokener_get_error(tok) == json_tokener_continue)
    o = json_tokener_parse_ex(tok, "", 1);
  json_tokener_free(tok);
  if (json_object_object_get_ex(o, "data", &d) &&
      json_object_object_get_ex(d, "all", &a) &&
      json_object_is_type(a, json_type_boolean))
    all = json_object_get_boolean(a);
  json_object_put(o);
  return all;
}

static void check_cmd(const ns_cmd *c) {
  CHECK(bounded_text(c->type_name, 64));
  for (size_t i = 0; c->type_name[i]; i++)
    CHECK((unsigned char)c->type_name[i] >= 0x20 && c->type_name[i] != 0x7f);
  CHECK(!c->has_ref || bounded_text(c->ref, NS_REF_MAX));
  CHECK(c->has_ref || c->ref[0] == '\0');
  CHECK((c->token != NULL) == (c->type == NS_CMD_REFRESH));
  switch (c->type) {
  case NS_CMD_ACTION:
    CHECK(c->all == 0 || c->all == 1);
    CHECK(memchr(c->before, '\0', sizeof(c->before)) != NULL);
    if (c->all) {
      /* bulk: no id, read or dismiss, before "" or a lower-case UUID */
      CHECK(c->notification_id[0] == '\0');
      CHECK(c->action == NS_ACTION_READ || c->action == NS_ACTION_DISMISS);
      CHECK(c->before[0] == '\0' || lower_uuid(c->before));
    } else {
      CHECK(lower_uuid(c->notification_id));
      CHECK(c->action >= NS_ACTION_READ && c->action <= NS_ACTION_DISMISS);
      CHECK(c->before[0] == '\0');
    }
    break;
  case NS_CMD_ACK:
    CHECK(!c->all && !c->before[0] && !c->notification_id[0]);
    CHECK(ns_proto_valid_stream_id(c->id, strlen(c->id)));
    break;
  case NS_CMD_SUBSCRIBE:
    CHECK(c->post_id[0] && bounded_text(c->post_id, NS_POST_ID_MAX));
    break;
  case NS_CMD_REFRESH:
    CHECK(c->token[0] && bounded_text(c->token, NS_TOKEN_MAX));
    break;
  case NS_CMD_PING:
  case NS_CMD_UNKNOWN:
    break;
  default:
    CHECK(0);
  }
}

/* Decodes the server message in buf and checks it is an unknown-type
 * envelope named `type` carrying `ref`. */
static void check_reply(char *buf, size_t len, const char *type,
                        const char *ref) {
  ns_cmd back;
  ns_proto_err e;
  CHECK(buf != NULL);
  CHECK(strlen(buf + 16) == len);
  CHECK(ns_proto_decode(buf + 16, len, &back, &e) == 0);
  CHECK(back.type == NS_CMD_UNKNOWN && strcmp(back.type_name, type) == 0);
  CHECK(back.has_ref == (ref != NULL));
  CHECK(!ref || strcmp(back.ref, ref) == 0);
  ns_cmd_reset(&back);
  free(buf);
}

/* The input is strict JSON: wrap it as `data` and read it back. */
static void check_wrap(const uint8_t *data, size_t size, const char *ref) {
  json_tokener *tok = json_tokener_new();
  json_object *o;
  size_t len = 0;
  char *buf;

  CHECK(tok != NULL);
  o = json_tokener_parse_ex(tok, (const char *)data, (int)size);
  if (!o && json_tokener_get_error(tok) == json_tokener_continue)
    o = json_tokener_parse_ex(tok, "", 1);
  CHECK(o != NULL || json_tokener_get_error(tok) == json_tokener_success);
  json_tokener_free(tok);
  buf = ns_proto_envelope("fuzz.echo", o, "1-0", ref, 1768473000123, 16, &len);
  check_reply(buf, len, "fuzz.echo", ref);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *p = (const char *)data;
  ns_cmd c;
  ns_proto_err e;
  const char *ref;
  size_t len = 0;
  char *buf;
  int rc;

  CHECK(ns_proto_utf8_valid(p, size) == ref_utf8_valid(data, size));
  (void)ns_proto_valid_device_id(p, size);
  (void)ns_proto_valid_device_name(p, size);
  (void)ns_proto_valid_platform(p, size);
  (void)ns_proto_valid_stream_id(p, size);
  (void)ns_proto_valid_uuid(p, size);

  rc = ns_proto_decode(p, size, &c, &e);
  CHECK(rc == 0 || rc == NS_EPARSE);
  ref = c.has_ref ? c.ref : NULL;
  if (rc == 0) {
    check_cmd(&c);
    if (c.type == NS_CMD_ACTION)
      CHECK(c.all == frame_says_all(data, size));
    buf = ns_proto_error("unknown_type", c.type_name, ref, 1768473000123, 16,
                         &len);
    check_reply(buf, len, "error", ref);
  } else {
    CHECK(strcmp(e.code, "bad_json") == 0 || strcmp(e.code, "bad_message") == 0);
    CHECK(e.message[0] != '\0');
    CHECK(c.token == NULL);
    CHECK(!c.has_ref || bounded_text(c.ref, NS_REF_MAX));
    buf = ns_proto_error(e.code, e.message, ref, 1768473000123, 16, &len);
    check_reply(buf, len, "error", ref);
  }
  if (rc == 0 || strcmp(e.code, "bad_message") == 0)
    check_wrap(data, size, ref);
  ns_cmd_reset(&c);
  return 0;
}
