/*
 * ns_rest.c -- the REST request parsers (see ns_rest.h).
 *
 * The rules and messages here are the ones the handlers in ns_comments.c
 * and ns_notify.c answered with when they parsed inline; the e2e suites
 * pin the wire form, tests/unit/test_rest.c the rules.
 */
#include "ns_rest.h"

#include <json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ns_common.h"

/* Types a broadcast may not use (SPEC §6): the server's own and every
 * client type. */
static const char *const reserved_types[] = {
    "welcome", "pong", "ok", "error", "new_notification", "notification_sync",
    "device_status", "queue_overflow", "ping", "ack", "notification_action",
    "subscribe", "refresh"};

/* Fills `err`; returns rc (NS_EPARSE or NS_EINVAL). */
static int fail(ns_rest_err *err, int rc, const char *code, const char *field,
                const char *msg) {
  err->code = code;
  snprintf(err->field, sizeof(err->field), "%s", field);
  snprintf(err->message, sizeof(err->message), "%s", msg);
  return rc;
}

/* Parses a body; on failure fills `err` as "bad_json".  Every failure of
 * ns_proto_parse_json (out of memory too) is answered as bad_json, which is
 * what the handlers always did. */
static int parse_body(const char *p, size_t n, json_object **root,
                      ns_rest_err *err) {
  ns_proto_err perr;
  if (ns_proto_parse_json(p ? p : "", p ? n : 0, root, &perr) != 0) {
    *root = NULL;
    return fail(err, NS_EPARSE, "bad_json", "", perr.message);
  }
  return 0;
}

/* The string member `key` of the object `root`, or NULL when absent, not a
 * string, or holding an escaped NUL (\u0000: a C string would end there);
 * *len its length. */
static const char *string_member(json_object *root, const char *key,
                                 size_t *len) {
  json_object *v;
  const char *s;
  if (!json_object_is_type(root, json_type_object) ||
      !json_object_object_get_ex(root, key, &v) ||
      !json_object_is_type(v, json_type_string))
    return NULL;
  s = json_object_get_string(v);
  *len = (size_t)json_object_get_string_len(v);
  return strlen(s) == *len ? s : NULL;
}

/* ---- bodies ---- */

int ns_rest_parse_comment(const char *p, size_t n, ns_rest_comment *out,
                          ns_rest_err *err) {
  json_object *root;
  const char *s;
  size_t len = 0;
  memset(out, 0, sizeof(*out));
  if (parse_body(p, n, &root, err) != 0)
    return NS_EPARSE;
  if (!(s = string_member(root, "content", &len)) || len < 1 ||
      len > NS_REST_CONTENT_MAX || !ns_proto_utf8_valid(s, len)) {
    json_object_put(root);
    return fail(err, NS_EINVAL, "bad_request", "content",
                "content: must be a string of 1-10000 bytes of UTF-8");
  }
  out->root = root;
  out->content = s;
  out->content_len = len;
  return 0;
}

int ns_rest_valid_type(const char *t) {
  size_t i, n = strlen(t);
  if (n < 1 || n > NS_REST_TYPE_MAX || t[0] < 'a' || t[0] > 'z')
    return 0;
  for (i = 1; i < n; i++)
    if (!((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= '0' && t[i] <= '9') ||
          t[i] == '_' || t[i] == '.'))
      return 0;
  for (i = 0; i < NS_ARRAY_SIZE(reserved_types); i++)
    if (strcmp(t, reserved_types[i]) == 0)
      return 0;
  return 1;
}

int ns_rest_parse_broadcast(const char *p, size_t n, ns_rest_broadcast *out,
                            ns_rest_err *err) {
  json_object *root, *data = NULL;
  const char *type;
  size_t len;
  memset(out, 0, sizeof(*out));
  if (parse_body(p, n, &root, err) != 0)
    return NS_EPARSE;
  if (!(type = string_member(root, "type", &len)) || !ns_rest_valid_type(type)) {
    json_object_put(root);
    return fail(err, NS_EINVAL, "bad_request", "type",
                "type: must match ^[a-z][a-z0-9_.]{0,63}$ and not be a "
                "reserved type");
  }
  /* json-c gives NULL for the literal null: absent and null both mean {} */
  if (json_object_object_get_ex(root, "data", &data) && data &&
      !json_object_is_type(data, json_type_object)) {
    json_object_put(root);
    return fail(err, NS_EINVAL, "bad_request", "data", "data: must be an object");
  }
  out->root = root;
  out->type = type;
  out->data = data;
  return 0;
}

/* The action named by the string member "action" of `root`, or
 * NS_ACTION_NONE (absent, not a string, an escaped NUL, unknown). */
static ns_action action_member(json_object *root) {
  size_t len;
  const char *s = string_member(root, "action", &len);
  if (!s)
    return NS_ACTION_NONE;
  return strcmp(s, "read") == 0      ? NS_ACTION_READ
         : strcmp(s, "unread") == 0  ? NS_ACTION_UNREAD
         : strcmp(s, "dismiss") == 0 ? NS_ACTION_DISMISS
                                     : NS_ACTION_NONE;
}

int ns_rest_parse_action(const char *p, size_t n, ns_action *out,
                         ns_rest_err *err) {
  json_object *root;
  ns_action action;
  *out = NS_ACTION_NONE;
  if (parse_body(p, n, &root, err) != 0)
    return NS_EPARSE;
  action = action_member(root);
  json_object_put(root);
  if (action == NS_ACTION_NONE)
    return fail(err, NS_EINVAL, "bad_request", "action",
                "action: must be read, unread or dismiss");
  *out = action;
  return 0;
}

/* The bulk form (SPEC §9.5).  A `before` that is present must be null or a
 * UUID; it is copied in lower case, the form PostgreSQL prints. */
int ns_rest_parse_bulk_action(const char *p, size_t n, ns_action *out,
                              char *before, ns_rest_err *err) {
  json_object *root, *v;
  ns_action action;
  const char *s;
  size_t len = 0;
  *out = NS_ACTION_NONE;
  before[0] = '\0';
  if (parse_body(p, n, &root, err) != 0)
    return NS_EPARSE;
  action = action_member(root);
  if (action != NS_ACTION_READ && action != NS_ACTION_DISMISS) {
    json_object_put(root);
    return fail(err, NS_EINVAL, "bad_request", "action",
                "action: must be read or dismiss");
  }
  /* action_member found an object, so get_ex reads a member; json-c gives
   * NULL for the literal null, which counts as absent */
  if (json_object_object_get_ex(root, "before", &v) && v) {
    if (!(s = string_member(root, "before", &len)) ||
        !ns_proto_valid_uuid(s, len)) {
      json_object_put(root);
      return fail(err, NS_EINVAL, "bad_request", "before",
                  "before: must be a notification id (UUID)");
    }
    ns_proto_uuid_lower(before, s, len);
  }
  json_object_put(root);
  *out = action;
  return 0;
}

/* ---- request syntax ---- */

/* The messages below spell these numbers out. */
_Static_assert(NS_REST_QUERY_ARG_MAX == 95 && NS_REST_QUERY_ARGS_MAX == 32,
               "update the query messages");

/* Refuses argument `a` (`len` bytes; its name is the `nlen` bytes before
 * any '='): field = the name when it fits and is not empty, else "query". */
static int bad_arg(ns_rest_err *err, const char *a, size_t nlen,
                   const char *why) {
  char field[sizeof(err->field)] = "query";
  char msg[sizeof(err->message)];
  size_t i;
  int clean = nlen > 0 && nlen < sizeof(field);
  for (i = 0; clean && i < nlen; i++)
    clean = (unsigned char)a[i] >= 0x20 && a[i] != 0x7f;
  if (clean) {
    memcpy(field, a, nlen);
    field[nlen] = '\0';
  }
  if (strcmp(why, "=") == 0) /* no '=': name the form expected */
    snprintf(msg, sizeof(msg), "%s: expected %s=<value>", field, field);
  else
    snprintf(msg, sizeof(msg), "%s: %s", field, why);
  return fail(err, NS_EINVAL, "bad_request", field, msg);
}

int ns_rest_check_query(const char *args, size_t n, ns_rest_err *err) {
  const char *names[NS_REST_QUERY_ARGS_MAX];
  size_t nlens[NS_REST_QUERY_ARGS_MAX];
  size_t count = 0, off = 0;
  while (off < n) {
    const char *a = args + off, *nul = memchr(a, '\0', n - off);
    size_t len = nul ? (size_t)(nul - a) : n - off, i, nlen;
    const char *eq = memchr(a, '=', len);
    nlen = eq ? (size_t)(eq - a) : len;
    off += len + 1;
    if (count == NS_REST_QUERY_ARGS_MAX)
      return fail(err, NS_EINVAL, "bad_request", "query",
                  "query: more than 32 arguments");
    if (len > NS_REST_QUERY_ARG_MAX)
      return bad_arg(err, a, nlen,
                     "query value too long (name=value is at most 95 bytes)");
    for (i = 0; i < len; i++)
      if ((unsigned char)a[i] < 0x20 || a[i] == 0x7f)
        return bad_arg(err, a, nlen, "control character in query value");
    if (nlen == 0)
      return bad_arg(err, a, nlen, "query argument without a name");
    for (i = 0; i < count; i++)
      if (nlens[i] == nlen && memcmp(names[i], a, nlen) == 0)
        return bad_arg(err, a, nlen, "query argument given more than once");
    if (!eq)
      return bad_arg(err, a, nlen, "=");
    names[count] = a;
    nlens[count++] = nlen;
  }
  return 0;
}

int ns_rest_parse_content_length(const char *s, size_t n, long long max,
                                 long long *out, ns_rest_err *err) {
  size_t i = 0, end = n;
  long long v = 0;
  int over = 0;
  if (max < 0)
    max = 0;
  while (i < end && (s[i] == ' ' || s[i] == '\t'))
    i++;
  while (end > i && (s[end - 1] == ' ' || s[end - 1] == '\t'))
    end--;
  if (i == end)
    goto malformed;
  for (; i < end; i++) {
    int d = s[i] - '0';
    if (s[i] < '0' || s[i] > '9')
      goto malformed;
    /* v * 10 + d > max, asked without computing it (no overflow) */
    if (!over && (v > max / 10 || (v == max / 10 && d > max % 10)))
      over = 1;
    if (!over)
      v = v * 10 + d;
  }
  if (over)
    return fail(err, NS_ETOOBIG, "too_large", "",
                "request body exceeds max_body_bytes");
  *out = v;
  return 0;
malformed:
  return fail(err, NS_EINVAL, "bad_request", "Content-Length",
              "Content-Length: must be a decimal number of bytes");
}

/* ---- headers and query values ---- */

int ns_rest_check_device_header(const char *s, size_t n, ns_rest_err *err) {
  if (n == 0 || ns_proto_valid_device_id(s, n))
    return 0;
  return fail(err, NS_EINVAL, "bad_request", "X-Device-ID",
              "X-Device-ID: not a device_id");
}

/* Reads s[i] only while every earlier byte matched, so a short string stops
 * at its NUL. */
int ns_rest_valid_ts(const char *s) {
  static const char shape[] = "dddd-dd-ddTdd:dd:dd";
  size_t i;
  for (i = 0; shape[i]; i++) {
    if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i])
      return 0;
  }
  s += i;
  if (*s == '.') { /* 1-9 digits: at most nanoseconds */
    for (i = 1; s[i] >= '0' && s[i] <= '9'; i++)
      ;
    if (i == 1 || i > 10)
      return 0;
    s += i;
  }
  if (*s == 'Z')
    return s[1] == '\0';
  return (*s == '+' || *s == '-') && strlen(s) == 6 && s[3] == ':';
}

int ns_rest_parse_list_query(const char *limit, const char *before,
                             const char *unread, ns_rest_list_query *out,
                             ns_rest_err *err) {
  out->limit = NS_REST_LIMIT_DEFAULT;
  out->before = "";
  out->unread = 0;
  if (limit) {
    char *end;
    long n = strtol(limit, &end, 10);
    if (*end || n < 1 || n > NS_REST_LIMIT_MAX)
      return fail(err, NS_EINVAL, "bad_request", "limit", "limit: must be 1-200");
    out->limit = (int)n;
  }
  if (before) {
    if (!ns_rest_valid_ts(before))
      return fail(err, NS_EINVAL, "bad_request", "before",
                  "before: must be an RFC 3339 timestamp");
    out->before = before;
  }
  if (unread)
    out->unread = strcmp(unread, "1") == 0 || strcmp(unread, "true") == 0;
  return 0;
}

/* ---- paths ---- */

int ns_rest_valid_post_id(const char *s, size_t n) {
  /* ns_proto_valid_device_id is the same byte set, 64 bytes at a time */
  return n >= 1 && n <= NS_POST_ID_MAX &&
         ns_proto_valid_device_id(s, NS_MIN(n, NS_DEVICE_ID_MAX)) &&
         (n <= NS_DEVICE_ID_MAX ||
          ns_proto_valid_device_id(s + NS_DEVICE_ID_MAX, n - NS_DEVICE_ID_MAX));
}

/* Copies an id piece of `n` <= NS_REST_PIECE_MAX bytes into `dst` (NUL
 * terminated); returns 1 when it is a UUID. */
static int copy_piece(char *dst, const char *s, size_t n) {
  memcpy(dst, s, n);
  dst[n] = '\0';
  return ns_proto_valid_uuid(s, n);
}

int ns_rest_parse_comments_path(const char *s, size_t n, ns_rest_cpath *out) {
  static const char sub[] = "/comments";
  const size_t sublen = sizeof(sub) - 1;
  const char *slash, *cid;
  size_t plen, rest, clen;
  memset(out, 0, sizeof(*out));
  out->kind = NS_REST_CPATH_NONE;
  if (memchr(s, '\0', n) || !(slash = memchr(s, '/', n)))
    return NS_ENOTFOUND;
  plen = (size_t)(slash - s);
  rest = n - plen;
  if (rest < sublen || memcmp(slash, sub, sublen) != 0 ||
      !ns_rest_valid_post_id(s, plen) || (rest > sublen && slash[sublen] != '/'))
    return NS_ENOTFOUND;
  memcpy(out->post_id, s, plen);
  out->post_id[plen] = '\0';
  if (rest == sublen) {
    out->kind = NS_REST_CPATH_LIST;
    return 0;
  }
  cid = slash + sublen + 1;
  clen = rest - sublen - 1;
  if (clen > NS_REST_PIECE_MAX || memchr(cid, '/', clen)) {
    out->kind = NS_REST_CPATH_NO_ITEM;
    return NS_ENOTFOUND;
  }
  out->comment_id_ok = copy_piece(out->comment_id, cid, clen);
  out->kind = NS_REST_CPATH_ITEM;
  return 0;
}

int ns_rest_parse_notif_path(const char *s, size_t n, ns_rest_npath *out) {
  static const char sub[] = "/actions";
  static const struct {
    const char *name;
    ns_rest_npath_kind kind;
  } fixed[] = {{"batch", NS_REST_NPATH_BATCH},
               {"actions", NS_REST_NPATH_BULK},
               {"unread_count", NS_REST_NPATH_UNREAD}};
  const size_t sublen = sizeof(sub) - 1;
  const char *slash;
  size_t idlen, i;
  memset(out, 0, sizeof(*out));
  out->kind = NS_REST_NPATH_NONE;
  if (memchr(s, '\0', n))
    return NS_ENOTFOUND;
  /* Fixed names first, compared whole: "actions/" or "unread_count/x"
   * fall through to the {id}/... rule below, which refuses them. */
  for (i = 0; i < NS_ARRAY_SIZE(fixed); i++) {
    if (n == strlen(fixed[i].name) && memcmp(s, fixed[i].name, n) == 0) {
      out->kind = fixed[i].kind;
      return 0;
    }
  }
  if (!(slash = memchr(s, '/', n))) {
    /* Any length: a GET of an id too long to be a UUID is a 404 like any
     * other unknown id, after the token check. */
    out->id_ok = n <= NS_REST_PIECE_MAX ? copy_piece(out->id, s, n)
                                        : ns_proto_valid_uuid(s, n);
    out->kind = NS_REST_NPATH_ONE;
    return 0;
  }
  idlen = (size_t)(slash - s);
  if (n - idlen != sublen || memcmp(slash, sub, sublen) != 0 ||
      idlen > NS_REST_PIECE_MAX)
    return NS_ENOTFOUND;
  out->id_ok = copy_piece(out->id, s, idlen);
  out->kind = NS_REST_NPATH_ACTIONS;
  return 0;
}

int ns_rest_parse_device_path(const char *s, size_t n, char *out) {
  out[0] = '\0';
  if (!ns_proto_valid_device_id(s, n))
    return NS_ENOTFOUND;
  memcpy(out, s, n);
  out[n] = '\0';
  return 0;
}
