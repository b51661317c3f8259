/*
 * ns_proto.c -- the WebSocket envelope (SPEC §3, §4): client frames in,
 * ns_cmd out; server messages in, serialized envelopes out.
 *
 * Decoding runs in three steps, each of which maps to one error code:
 *   1. A strict RFC 8259 syntax check over the raw bytes (check_json below).
 *      json-c 0.16 accepts NaN, Infinity, single-quoted strings and raw
 *      control characters in strings even with JSON_TOKENER_STRICT, so
 *      json-c alone cannot decide "valid JSON".  The check also validates
 *      UTF-8 inside strings, bounds nesting at NS_PROTO_MAX_DEPTH and
 *      rejects anything but whitespace after the value.  Failure: bad_json.
 *   2. json-c builds the tree from the same bytes (it cannot fail on input
 *      step 1 accepted, except on OOM).
 *   3. The envelope and per-type "data" fields are checked.  Failure:
 *      bad_message, with a message naming the field.
 *
 * Invariants of a decoded ns_cmd (rc == 0): every string field is NUL-
 * terminated valid UTF-8 without embedded NUL; `ref` is at most 64 bytes;
 * `type_name` is a sanitized, possibly truncated copy of the client's type
 * (printable UTF-8, never split inside a character); the per-type fields of
 * the decoded type have passed their validators.
 *
 * Nothing here does I/O or keeps state between calls.
 */
#include "ns_proto.h"

#include <json.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ns_common.h"

/* Deepest nesting of arrays/objects a client frame may use.  The envelope
 * itself needs 2 ({"data":{...}}); 32 leaves room for unknown fields. */
#define NS_PROTO_MAX_DEPTH 32

#define SERIALIZE_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* ------------------------------------------------------------------ */
/* UTF-8                                                                */

/* Returns the length (1-4) of the well-formed UTF-8 sequence starting at
 * s[0] (of n available bytes), or 0 when it is malformed: overlong forms,
 * UTF-16 surrogates (U+D800..U+DFFF), code points above U+10FFFF, stray
 * continuation bytes and truncated sequences are all rejected (Unicode
 * Table 3-7). */
static size_t utf8_seq_len(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the 2nd byte */
  size_t len;

  if (c < 0x80)
    return 1;
  if (c >= 0xc2 && c <= 0xdf) {
    len = 2;
  } else if (c >= 0xe0 && c <= 0xef) {
    len = 3;
    if (c == 0xe0)
      lo = 0xa0; /* overlong below U+0800 */
    else if (c == 0xed)
      hi = 0x9f; /* surrogates */
  } else if (c >= 0xf0 && c <= 0xf4) {
    len = 4;
    if (c == 0xf0)
      lo = 0x90; /* overlong below U+10000 */
    else if (c == 0xf4)
      hi = 0x8f; /* above U+10FFFF */
  } else {
    return 0; /* 0x80..0xc1 (continuation / overlong lead), 0xf5..0xff */
  }
  if (n < len || s[1] < lo || s[1] > hi)
    return 0;
  for (size_t i = 2; i < len; i++)
    if (s[i] < 0x80 || s[i] > 0xbf)
      return 0;
  return len;
}

/* ns_proto_utf8_valid: 1 when the n bytes at s are well-formed UTF-8 (see
 * utf8_seq_len for what is rejected).  U+0000 is well-formed; callers that
 * need C strings check for it themselves.  An empty string is valid. */
int ns_proto_utf8_valid(const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;

  if (!s)
    return n == 0;
  while (i < n) {
    size_t l = utf8_seq_len(u + i, n - i);
    if (l == 0)
      return 0;
    i += l;
  }
  return 1;
}

/* ------------------------------------------------------------------ */
/* Errors                                                               */

static int fail(ns_proto_err *err, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Fills `err` and returns the matching return code: NS_ENOMEM for the
 * "internal" code, NS_EPARSE for the client's mistakes. */
static int fail(ns_proto_err *err, const char *code, const char *fmt, ...) {
  va_list ap;
  err->code = code;
  va_start(ap, fmt);
  vsnprintf(err->message, sizeof(err->message), fmt, ap);
  va_end(ap);
  return strcmp(code, "internal") == 0 ? NS_ENOMEM : NS_EPARSE;
}

/* ------------------------------------------------------------------ */
/* Strict JSON syntax check (RFC 8259)                                  */

typedef struct scan {
  const unsigned char *p;
  size_t n;
  size_t i;      /* next byte; where the error is when a scan fails */
  int depth;
  int too_deep;
  int lax_utf8;  /* REST bodies: bad UTF-8 in strings is left to the field checks */
} scan;

static int scan_value(scan *s);

static void skip_ws(scan *s) {
  while (s->i < s->n && (s->p[s->i] == ' ' || s->p[s->i] == '\t' ||
                         s->p[s->i] == '\n' || s->p[s->i] == '\r'))
    s->i++;
}

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static int is_hex(unsigned char c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Consumes one or more digits; 0 when there is none. */
static int scan_digits(scan *s) {
  size_t start = s->i;
  while (s->i < s->n && is_digit(s->p[s->i]))
    s->i++;
  return s->i > start;
}

/* number = [ "-" ] ( "0" / [1-9] *DIGIT ) [ "." 1*DIGIT ] [ e [+-] 1*DIGIT ] */
static int scan_number(scan *s) {
  if (s->p[s->i] == '-')
    s->i++;
  if (s->i < s->n && s->p[s->i] == '0')
    s->i++;
  else if (!scan_digits(s))
    return -1;
  if (s->i < s->n && s->p[s->i] == '.') {
    s->i++;
    if (!scan_digits(s))
      return -1;
  }
  if (s->i < s->n && (s->p[s->i] == 'e' || s->p[s->i] == 'E')) {
    s->i++;
    if (s->i < s->n && (s->p[s->i] == '+' || s->p[s->i] == '-'))
      s->i++;
    if (!scan_digits(s))
      return -1;
  }
  return 0;
}

/* The escape after a backslash at s->i (which points at the backslash). */
static int scan_escape(scan *s) {
  if (s->i + 1 >= s->n)
    return -1;
  switch (s->p[s->i + 1]) {
  case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r':
  case 't':
    s->i += 2;
    return 0;
  case 'u':
    if (s->n - s->i < 6)
      return -1;
    for (size_t k = 2; k < 6; k++)
      if (!is_hex(s->p[s->i + k]))
        return -1;
    s->i += 6;
    return 0;
  default:
    return -1;
  }
}

/* A string starting at the opening quote: no raw control characters, only
 * the RFC escapes, well-formed UTF-8. */
static int scan_string(scan *s) {
  s->i++; /* opening quote */
  while (s->i < s->n) {
    unsigned char c = s->p[s->i];
    if (c == '"') {
      s->i++;
      return 0;
    }
    if (c < 0x20)
      return -1;
    if (c == '\\') {
      if (scan_escape(s) < 0)
        return -1;
    } else {
      size_t l = utf8_seq_len(s->p + s->i, s->n - s->i);
      if (l == 0 && !s->lax_utf8)
        return -1;
      s->i += l ? l : 1;
    }
  }
  return -1; /* unterminated */
}

static int scan_literal(scan *s, const char *lit) {
  size_t l = strlen(lit);
  if (s->n - s->i < l || memcmp(s->p + s->i, lit, l) != 0)
    return -1;
  s->i += l;
  return 0;
}

/* An array or object starting at its opening bracket.  Each pass of the loop
 * consumes at least one byte, so it ends within n passes. */
static int scan_container(scan *s, int is_object) {
  unsigned char close = is_object ? '}' : ']';

  if (++s->depth > NS_PROTO_MAX_DEPTH) {
    s->too_deep = 1;
    return -1;
  }
  s->i++;
  skip_ws(s);
  if (s->i < s->n && s->p[s->i] == close)
    goto done;
  while (s->i < s->n) {
    if (is_object) {
      if (s->p[s->i] != '"' || scan_string(s) < 0)
        return -1;
      skip_ws(s);
      if (s->i >= s->n || s->p[s->i] != ':')
        return -1;
      s->i++;
      skip_ws(s);
    }
    if (scan_value(s) < 0)
      return -1;
    skip_ws(s);
    if (s->i < s->n && s->p[s->i] == close)
      goto done;
    if (s->i >= s->n || s->p[s->i] != ',')
      return -1;
    s->i++;
    skip_ws(s);
  }
  return -1;
done:
  s->i++;
  s->depth--;
  return 0;
}

static int scan_value(scan *s) {
  if (s->i >= s->n)
    return -1;
  switch (s->p[s->i]) {
  case '{':
    return scan_container(s, 1);
  case '[':
    return scan_container(s, 0);
  case '"':
    return scan_string(s);
  case 't':
    return scan_literal(s, "true");
  case 'f':
    return scan_literal(s, "false");
  case 'n':
    return scan_literal(s, "null");
  default:
    if (s->p[s->i] == '-' || is_digit(s->p[s->i]))
      return scan_number(s);
    return -1;
  }
}

/* 0 when p[0..n) is exactly one JSON value, optionally surrounded by
 * whitespace.  Otherwise fills `err` (bad_json, with the byte offset where
 * the scan stopped) and returns NS_EPARSE. */
static int check_json(const char *p, size_t n, int lax_utf8,
                      ns_proto_err *err) {
  scan s = {(const unsigned char *)p, n, 0, 0, 0, lax_utf8};
  skip_ws(&s);
  if (s.i == n)
    return fail(err, "bad_json", "message is not valid JSON: no value");
  if (scan_value(&s) == 0) {
    skip_ws(&s);
    if (s.i == n)
      return 0;
  }
  if (s.too_deep)
    return fail(err, "bad_json",
                "message is not valid JSON: nested deeper than %d levels",
                NS_PROTO_MAX_DEPTH);
  return fail(err, "bad_json", "message is not valid JSON at byte %zu", s.i);
}

/* ------------------------------------------------------------------ */
/* Decoding                                                             */

/* Parses p[0..n) into a json-c tree in *out (owned by the caller). */
static int parse_json(const char *p, size_t n, int lax_utf8,
                      json_object **out, ns_proto_err *err) {
  json_tokener *tok = NULL;
  json_object *root = NULL;
  int rc = 0;

  if (n >= INT_MAX)
    return fail(err, "bad_json", "message is not valid JSON: too long");
  if (check_json(p, n, lax_utf8, err) < 0)
    return NS_EPARSE;
  tok = json_tokener_new_ex(NS_PROTO_MAX_DEPTH + 2);
  if (!tok)
    return fail(err, "internal", "out of memory");
  json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
  root = json_tokener_parse_ex(tok, p, (int)n);
  /* A bare number has no end of its own: a NUL byte tells json-c that the
   * input ends here (p itself need not be NUL-terminated). */
  if (!root && json_tokener_get_error(tok) == json_tokener_continue)
    root = json_tokener_parse_ex(tok, "", 1);
  /* NULL with success is the JSON literal null; any other NULL after
   * check_json accepted the input means json-c ran out of memory. */
  if (!root && json_tokener_get_error(tok) != json_tokener_success)
    rc = fail(err, "internal", "out of memory");
  json_tokener_free(tok);
  *out = root;
  return rc;
}

int ns_proto_parse_json(const char *p, size_t n, struct json_object **out,
                        ns_proto_err *err) {
  *out = NULL;
  return parse_json(p, n, 1, out, err);
}

char *ns_proto_envelope_raw(const char *type, const char *id,
                            const char *data_json, int64_t now_ms,
                            size_t headroom, size_t *len) {
  char ts[NS_TS_LEN];
  size_t cap = headroom + strlen(type) + (id ? strlen(id) : 0) +
               strlen(data_json) + 96;
  char *buf = malloc(cap);
  int n;
  if (!buf)
    return NULL;
  ns_format_ts(now_ms, ts);
  if (id)
    n = snprintf(buf + headroom, cap - headroom,
                 "{\"type\":\"%s\",\"id\":\"%s\",\"data\":%s,\"timestamp\":\"%s\"}",
                 type, id, data_json, ts);
  else
    n = snprintf(buf + headroom, cap - headroom,
                 "{\"type\":\"%s\",\"data\":%s,\"timestamp\":\"%s\"}", type,
                 data_json, ts);
  if (n < 0 || (size_t)n >= cap - headroom) {
    free(buf);
    return NULL;
  }
  *len = (size_t)n;
  return buf;
}

/* Looks up `key` in `obj`; 1 and fills s/len when it is a string. */
static int get_string(json_object *obj, const char *key, const char **s,
                      size_t *len) {
  json_object *v;
  if (!json_object_object_get_ex(obj, key, &v) ||
      !json_object_is_type(v, json_type_string))
    return 0;
  *s = json_object_get_string(v);
  *len = (size_t)json_object_get_string_len(v);
  return 1;
}

/* 1 when s[0..n) can become a C string holding UTF-8 text. */
static int clean_text(const char *s, size_t n) {
  return memchr(s, '\0', n) == NULL && ns_proto_utf8_valid(s, n);
}

/* Copies the client's type into dst (cap bytes incl. NUL): whole UTF-8
 * characters only, control characters and malformed bytes replaced by '?',
 * stopping before a character that would not fit. */
static void copy_type_name(char *dst, size_t cap, const char *src, size_t n) {
  const unsigned char *u = (const unsigned char *)src;
  size_t i = 0, o = 0;

  while (i < n) {
    size_t l = utf8_seq_len(u + i, n - i);
    int bad = l == 0 || (l == 1 && (u[i] < 0x20 || u[i] == 0x7f));
    size_t out_len = bad ? 1 : l;
    if (o + out_len >= cap)
      break;
    if (bad)
      dst[o] = '?';
    else
      memcpy(dst + o, src + i, l);
    o += out_len;
    i += l ? l : 1;
  }
  dst[o] = '\0';
}

/* Reads the optional "ref": fills out->ref on success.  Returns 0 when it is
 * absent or valid, -1 when it is present but unusable. */
static int read_ref(json_object *root, ns_cmd *out) {
  json_object *v;
  const char *s;
  size_t n;

  if (!json_object_object_get_ex(root, "ref", &v))
    return 0;
  if (!json_object_is_type(v, json_type_string))
    return -1;
  s = json_object_get_string(v);
  n = (size_t)json_object_get_string_len(v);
  if (n > NS_REF_MAX || !clean_text(s, n))
    return -1;
  memcpy(out->ref, s, n);
  out->ref[n] = '\0';
  out->has_ref = 1;
  return 0;
}

void ns_proto_uuid_lower(char *dst, const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    dst[i] = (char)((s[i] >= 'A' && s[i] <= 'F') ? s[i] - 'A' + 'a' : s[i]);
  dst[n] = '\0';
}

/* 1 when `data` has member `key` with a value other than null. */
static int has_non_null(json_object *data, const char *key) {
  json_object *v;
  return json_object_object_get_ex(data, key, &v) &&
         !json_object_is_type(v, json_type_null);
}

/* The bulk form (SPEC §9.5), {"all": true, "action", "before"?}: action is
 * read or dismiss, no notification_id (absent or null), before absent, null
 * or a UUID. */
static int decode_bulk_action(json_object *data, ns_cmd *out,
                              ns_proto_err *err) {
  const char *s;
  size_t n;

  if (has_non_null(data, "notification_id"))
    return fail(err, "bad_message",
                "data.notification_id must be absent with data.all");
  if (get_string(data, "action", &s, &n)) {
    if (n == 4 && memcmp(s, "read", 4) == 0)
      out->action = NS_ACTION_READ;
    else if (n == 7 && memcmp(s, "dismiss", 7) == 0)
      out->action = NS_ACTION_DISMISS;
  }
  if (out->action == NS_ACTION_NONE)
    return fail(err, "bad_message",
                "data.action must be read or dismiss for all");
  if (has_non_null(data, "before")) {
    if (!get_string(data, "before", &s, &n) || !ns_proto_valid_uuid(s, n))
      return fail(err, "bad_message", "data.before must be a UUID");
    ns_proto_uuid_lower(out->before, s, n);
  }
  out->all = 1;
  return 0;
}

/* notification_action: one notification {"notification_id", "action"}, or
 * with "all" (which must then be true) every notification of the user.
 * "before" belongs to the bulk form only: a non-null one without "all" is
 * refused rather than ignored, so a client that forgot "all" learns it. */
static int decode_action(json_object *data, ns_cmd *out, ns_proto_err *err) {
  json_object *all;
  const char *s;
  size_t n;

  if (json_object_object_get_ex(data, "all", &all)) {
    if (!json_object_is_type(all, json_type_boolean) ||
        !json_object_get_boolean(all))
      return fail(err, "bad_message", "data.all must be true");
    return decode_bulk_action(data, out, err);
  }
  if (!get_string(data, "notification_id", &s, &n) ||
      !ns_proto_valid_uuid(s, n))
    return fail(err, "bad_message", "data.notification_id must be a UUID");
  ns_proto_uuid_lower(out->notification_id, s, n);
  if (!get_string(data, "action", &s, &n))
    return fail(err, "bad_message",
                "data.action must be one of read, unread, dismiss");
  for (ns_action a = NS_ACTION_READ; a <= NS_ACTION_DISMISS; a++) {
    const char *name = ns_action_name(a);
    if (strlen(name) == n && memcmp(name, s, n) == 0)
      out->action = a;
  }
  if (out->action == NS_ACTION_NONE)
    return fail(err, "bad_message",
                "data.action must be one of read, unread, dismiss");
  if (has_non_null(data, "before"))
    return fail(err, "bad_message", "data.before is only allowed with data.all");
  return 0;
}

static int decode_ack(json_object *data, ns_cmd *out, ns_proto_err *err) {
  const char *s;
  size_t n;

  if (!get_string(data, "id", &s, &n) || !ns_proto_valid_stream_id(s, n))
    return fail(err, "bad_message",
                "data.id must be a stream id \"<ms>-<seq>\"");
  memcpy(out->id, s, n);
  out->id[n] = '\0';
  return 0;
}

static int decode_subscribe(json_object *data, ns_cmd *out,
                            ns_proto_err *err) {
  const char *s;
  size_t n;

  if (!get_string(data, "postId", &s, &n) || n == 0 || n > NS_POST_ID_MAX ||
      !clean_text(s, n))
    return fail(err, "bad_message",
                "data.postId must be a non-empty string of at most %d bytes",
                NS_POST_ID_MAX);
  memcpy(out->post_id, s, n);
  out->post_id[n] = '\0';
  return 0;
}

static int decode_refresh(json_object *data, ns_cmd *out, ns_proto_err *err) {
  const char *s;
  size_t n;

  if (!get_string(data, "token", &s, &n) || n == 0 || n > NS_TOKEN_MAX ||
      !clean_text(s, n))
    return fail(err, "bad_message",
                "data.token must be a non-empty string of at most %d bytes",
                NS_TOKEN_MAX);
  out->token = malloc(n + 1); /* client-sized: try, do not abort */
  if (!out->token)
    return fail(err, "internal", "out of memory");
  memcpy(out->token, s, n);
  out->token[n] = '\0';
  return 0;
}

typedef int (*data_decoder)(json_object *data, ns_cmd *out, ns_proto_err *err);

static const struct {
  const char *name;
  ns_cmd_type type;
  data_decoder decode; /* NULL: "data" is optional and ignored */
} known_types[] = {
    {"ping", NS_CMD_PING, NULL},
    {"notification_action", NS_CMD_ACTION, decode_action},
    {"ack", NS_CMD_ACK, decode_ack},
    {"subscribe", NS_CMD_SUBSCRIBE, decode_subscribe},
    {"refresh", NS_CMD_REFRESH, decode_refresh},
};

/* Steps after the JSON is known to be well-formed: envelope, then data. */
static int decode_envelope(json_object *root, ns_cmd *out, ns_proto_err *err) {
  const char *type;
  size_t type_len;
  json_object *data = NULL;
  int has_data, ref_ok;

  if (!json_object_is_type(root, json_type_object))
    return fail(err, "bad_message", "message must be a JSON object");
  /* ref first so every later error can echo it; its own error comes after
   * the type check, in the order the header documents. */
  ref_ok = read_ref(root, out) == 0;
  if (!get_string(root, "type", &type, &type_len))
    return fail(err, "bad_message", "type must be a string");
  if (!ref_ok)
    return fail(err, "bad_message", "ref must be a string of at most %d bytes",
                NS_REF_MAX);
  copy_type_name(out->type_name, sizeof(out->type_name), type, type_len);
  for (size_t i = 0; i < NS_ARRAY_SIZE(known_types); i++) {
    if (strlen(known_types[i].name) != type_len ||
        memcmp(known_types[i].name, type, type_len) != 0)
      continue;
    out->type = known_types[i].type;
    has_data = json_object_object_get_ex(root, "data", &data);
    if ((has_data || known_types[i].decode) &&
        !json_object_is_type(data, json_type_object))
      return fail(err, "bad_message", "data must be an object");
    return known_types[i].decode ? known_types[i].decode(data, out, err) : 0;
  }
  out->type = NS_CMD_UNKNOWN;
  return 0;
}

/* ns_proto_decode: see ns_proto.h for the order of checks.  `out` is
 * overwritten without being freed first, so it must be fresh or have been
 * passed to ns_cmd_reset().  `err` is filled only on failure.  Besides
 * NS_EPARSE ("bad_json" / "bad_message"), returns NS_ENOMEM with err->code
 * "internal" when memory runs out, so a caller that forwards err->code
 * answers correctly either way.  Reads exactly n bytes of p; p need not be
 * NUL-terminated. */
int ns_proto_decode(const char *p, size_t n, ns_cmd *out, ns_proto_err *err) {
  json_object *root = NULL;
  ns_proto_err scratch;
  int rc;

  memset(out, 0, sizeof(*out));
  if (!err)
    err = &scratch;
  err->code = NULL;
  err->message[0] = '\0';
  if (!p && n)
    return fail(err, "bad_json", "message is not valid JSON");
  rc = parse_json(p, n, 0, &root, err);
  if (rc < 0)
    goto cleanup;
  rc = decode_envelope(root, out, err);
cleanup:
  json_object_put(root);
  return rc;
}

/* ns_cmd_reset: frees what the cmd owns (the refresh token) and zeroes it,
 * leaving it ready for another ns_proto_decode().  Safe to call twice. */
void ns_cmd_reset(ns_cmd *c) {
  if (!c)
    return;
  free(c->token);
  memset(c, 0, sizeof(*c));
}

/* ------------------------------------------------------------------ */
/* Encoding                                                             */

/* Adds `val` under the constant `key`; on failure releases `val`, so the
 * caller's reference is consumed either way. */
static int add_owned(json_object *obj, const char *key, json_object *val) {
  if (!val)
    return -1;
  if (json_object_object_add_ex(obj, key, val,
                                JSON_C_OBJECT_ADD_KEY_IS_NEW |
                                    JSON_C_OBJECT_ADD_CONSTANT_KEY) != 0) {
    json_object_put(val);
    return -1;
  }
  return 0;
}

static int add_str(json_object *obj, const char *key, const char *s) {
  return add_owned(obj, key, json_object_new_string(s));
}

/* Copies the serialized `env` into a fresh buffer after `headroom` bytes. */
static char *to_buffer(json_object *env, size_t headroom, size_t *len) {
  size_t jl = 0;
  const char *js = json_object_to_json_string_length(env, SERIALIZE_FLAGS, &jl);
  char *buf;

  if (!js || jl > SIZE_MAX - 1 - headroom)
    return NULL;
  buf = malloc(headroom + jl + 1); /* sized by client data: try, no abort */
  if (!buf)
    return NULL;
  memcpy(buf + headroom, js, jl);
  buf[headroom + jl] = '\0';
  if (len)
    *len = jl;
  return buf;
}

/* ns_proto_envelope: see ns_proto.h.  The caller's reference to `data` is
 * consumed on every path, including failure; `type` must not be NULL (NULL
 * is treated like a failure).  id and ref are copied.  The headroom bytes
 * are left uninitialized for the caller (lws writes its header there). */
char *ns_proto_envelope(const char *type, struct json_object *data,
                        const char *id, const char *ref, int64_t now_ms,
                        size_t headroom, size_t *len) {
  json_object *env = NULL;
  char ts[NS_TS_LEN];
  char *buf = NULL;

  if (!data)
    data = json_object_new_object();
  if (!data)
    return NULL;
  env = json_object_new_object();
  if (!type || !env || add_str(env, "type", type) < 0 ||
      (id && add_str(env, "id", id) < 0) ||
      (ref && add_str(env, "ref", ref) < 0)) {
    json_object_put(data);
    goto cleanup;
  }
  if (add_owned(env, "data", data) < 0) /* consumes data */
    goto cleanup;
  ns_format_ts(now_ms, ts);
  if (add_str(env, "timestamp", ts) < 0)
    goto cleanup;
  buf = to_buffer(env, headroom, len);
cleanup:
  json_object_put(env);
  return buf;
}

/* ns_proto_error: an `error` envelope whose data is {"code","message"}.
 * NULL code means "internal", NULL message an empty one; `ref` (may be
 * NULL) is echoed.  Same buffer contract and NULL-on-OOM as
 * ns_proto_envelope(). */
char *ns_proto_error(const char *code, const char *message, const char *ref,
                     int64_t now_ms, size_t headroom, size_t *len) {
  json_object *data = json_object_new_object();

  if (!data)
    return NULL;
  if (add_str(data, "code", code ? code : "internal") < 0 ||
      add_str(data, "message", message ? message : "") < 0) {
    json_object_put(data);
    return NULL;
  }
  return ns_proto_envelope("error", data, NULL, ref, now_ms, headroom, len);
}

/* ------------------------------------------------------------------ */
/* Validators                                                           */

static int all_in_set(const char *s, size_t n, const char *extra) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    int alnum = is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (!alnum && (c == '\0' || !strchr(extra, c)))
      return 0;
  }
  return 1;
}

/* ns_proto_valid_device_id: 1..64 bytes of [A-Za-z0-9._:-] (SPEC §2). */
int ns_proto_valid_device_id(const char *s, size_t n) {
  return s && n >= 1 && n <= NS_DEVICE_ID_MAX && all_in_set(s, n, "._:-");
}

/* ns_proto_valid_device_name: 1..64 bytes of well-formed UTF-8 without
 * ASCII control characters (0x00-0x1f, 0x7f). */
int ns_proto_valid_device_name(const char *s, size_t n) {
  if (!s || n < 1 || n > NS_DEVICE_NAME_MAX || !ns_proto_utf8_valid(s, n))
    return 0;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
      return 0;
  return 1;
}

/* ns_proto_valid_platform: 1..16 bytes of [A-Za-z0-9._-]. */
int ns_proto_valid_platform(const char *s, size_t n) {
  return s && n >= 1 && n <= NS_PLATFORM_MAX && all_in_set(s, n, "._-");
}

/* One decimal part of a stream id: 1-20 digits, no leading zero (except
 * "0" itself), value <= UINT64_MAX.  Canonical form only, so two ids that
 * name the same entry are the same string. */
static int valid_u64(const char *s, size_t n) {
  static const char max[] = "18446744073709551615";
  if (n == 0 || n > sizeof(max) - 1 || (n > 1 && s[0] == '0'))
    return 0;
  for (size_t i = 0; i < n; i++)
    if (!is_digit((unsigned char)s[i]))
      return 0;
  return n < sizeof(max) - 1 || memcmp(s, max, n) <= 0;
}

/* ns_proto_valid_stream_id: "<u64>-<u64>", each part canonical decimal (no
 * sign, no leading zeros) and within uint64; hence at most 41 bytes. */
int ns_proto_valid_stream_id(const char *s, size_t n) {
  const char *dash;
  if (!s || n > NS_STREAM_ID_MAX)
    return 0;
  dash = memchr(s, '-', n);
  if (!dash)
    return 0;
  return valid_u64(s, (size_t)(dash - s)) &&
         valid_u64(dash + 1, n - (size_t)(dash - s) - 1);
}

/* ns_proto_valid_uuid: 36 bytes, 8-4-4-4-12 hex digits (either case)
 * separated by '-'.  No braces, no "urn:uuid:" prefix; any version. */
int ns_proto_valid_uuid(const char *s, size_t n) {
  if (!s || n != 36)
    return 0;
  for (size_t i = 0; i < n; i++) {
    int dash_pos = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash_pos ? s[i] != '-' : !is_hex((unsigned char)s[i]))
      return 0;
  }
  return 1;
}

/* ns_action_name: the wire name of an action; "none" for NS_ACTION_NONE or
 * an out-of-range value, so the result is always printable. */
const char *ns_action_name(ns_action a) {
  switch (a) {
  case NS_ACTION_READ:
    return "read";
  case NS_ACTION_UNREAD:
    return "unread";
  case NS_ACTION_DISMISS:
    return "dismiss";
  default:
    return "none";
  }
}
