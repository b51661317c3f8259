/*
 * fuzz_rest.c -- the REST request parsers of ns_rest.h.  The first byte
 * picks the parser (its value modulo 8, so the seed files start with a
 * readable '0'..'7'); the rest is that parser's input:
 *
 *   0 comment body {"content"}        4 comment path "{post}/comments[/{cid}]"
 *   1 broadcast body {"type","data"}  5 notification path "{id}[/actions]"|
 *                                       "batch"|"actions"|"unread_count"
 *   2 action body {"action"}, and the same bytes as a bulk action body
 *     {"action","before"?} (each checked, and the two against each other)
 *                                     6 X-Device-ID header value
 *   3 list query "limit=..&before=..&unread=.." (split like lws: '&', first
 *     match wins)                     7 device path "{device_id}"
 *   8 request query arguments, NUL-separated as lws keeps them
 *     (ns_rest_check_query)           9 Content-Length header value
 *
 * A first byte '0'..'9' picks that parser (any other byte: its value
 * modulo 10), so the older seeds '0'..'7' keep their meaning.
 *
 * Each accepted result is checked against the rule it claims to enforce,
 * computed here independently of ns_rest.c, and each refusal against the
 * error contract; for the query, header and paths, acceptance is checked in
 * both directions.  Any broken invariant abort()s.
 */
#include <json.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ns_common.h"
#include "ns_proto.h"
#include "ns_rest.h"

#define CHECK(cond)                                                        \
  do {                                                                     \
    if (!(cond))                                                           \
      abort();                                                             \
  } while (0)

static const char *const reserved[] = {
    "welcome", "pong", "ok", "error", "new_notification", "notification_sync",
    "device_status", "queue_overflow", "ping", "ack", "notification_action",
    "subscribe", "refresh"};

/* ---- the rules, restated ---- */

static int id_byte(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' || c == '-';
}

/* [A-Za-z0-9._:-]{lo,hi} over exactly n bytes */
static int id_of(const char *s, size_t n, size_t lo, size_t hi) {
  size_t i;
  if (n < lo || n > hi)
    return 0;
  for (i = 0; i < n; i++)
    if (!id_byte((unsigned char)s[i]))
      return 0;
  return 1;
}

static int is_uuid(const char *s, size_t n) {
  static const char shape[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";
  size_t i;
  if (n != sizeof(shape) - 1)
    return 0;
  for (i = 0; i < n; i++) {
    char c = s[i];
    int hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
              (c >= 'A' && c <= 'F');
    if (shape[i] == '-' ? c != '-' : !hex)
      return 0;
  }
  return 1;
}

/* ^[a-z][a-z0-9_.]{0,63}$ and not reserved */
static int type_ok(const char *t) {
  size_t i, n = strlen(t);
  if (n < 1 || n > 64 || !(t[0] >= 'a' && t[0] <= 'z'))
    return 0;
  for (i = 1; i < n; i++)
    if (!((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= '0' && t[i] <= '9') ||
          t[i] == '_' || t[i] == '.'))
      return 0;
  for (i = 0; i < NS_ARRAY_SIZE(reserved); i++)
    if (strcmp(t, reserved[i]) == 0)
      return 0;
  return 1;
}

static int digits(const char *s, size_t from, size_t to) {
  for (; from < to; from++)
    if (s[from] < '0' || s[from] > '9')
      return 0;
  return 1;
}

/* "YYYY-MM-DDTHH:MM:SS" [.1-9 digits] then "Z" or [+-]xx:xx, by length */
static int ts_shape(const char *s) {
  size_t n = strlen(s), i = 19;
  if (n < 20 || !digits(s, 0, 4) || s[4] != '-' || !digits(s, 5, 7) ||
      s[7] != '-' || !digits(s, 8, 10) || s[10] != 'T' || !digits(s, 11, 13) ||
      s[13] != ':' || !digits(s, 14, 16) || s[16] != ':' || !digits(s, 17, 19))
    return 0;
  if (s[i] == '.') {
    for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++)
      ;
    if (i - 20 < 1 || i - 20 > 9)
      return 0;
  }
  if (s[i] == 'Z')
    return i + 1 == n;
  return (s[i] == '+' || s[i] == '-') && n - i == 6 && s[i + 3] == ':';
}

/* A refusal: a known code, NUL-terminated texts, a bad_request names its
 * field at the start of the message. */
static void check_err(const ns_rest_err *err) {
  size_t f;
  CHECK(err->code);
  CHECK(memchr(err->field, '\0', sizeof(err->field)));
  CHECK(memchr(err->message, '\0', sizeof(err->message)));
  CHECK(err->message[0]);
  f = strlen(err->field);
  if (strcmp(err->code, "bad_json") == 0) {
    CHECK(f == 0);
  } else {
    CHECK(strcmp(err->code, "bad_request") == 0);
    CHECK(f > 0 && strncmp(err->message, err->field, f) == 0 &&
          err->message[f] == ':');
  }
}

/* ---- one parser each ---- */

static void comment(const char *p, size_t n) {
  ns_rest_comment c;
  ns_rest_err err;
  json_object *v;
  if (ns_rest_parse_comment(p, n, &c, &err) != 0) {
    check_err(&err);
    CHECK(!c.root && !c.content);
    CHECK(!err.field[0] || strcmp(err.field, "content") == 0);
    return;
  }
  CHECK(c.root && c.content);
  CHECK(json_object_object_get_ex(c.root, "content", &v));
  CHECK(json_object_get_string(v) == c.content);
  CHECK(c.content_len >= 1 && c.content_len <= NS_REST_CONTENT_MAX);
  CHECK(strlen(c.content) == c.content_len);
  CHECK((size_t)json_object_get_string_len(v) == c.content_len);
  CHECK(ns_proto_utf8_valid(c.content, c.content_len));
  json_object_put(c.root);
}

static void broadcast(const char *p, size_t n) {
  ns_rest_broadcast b;
  ns_rest_err err;
  json_object *v;
  char *s = malloc(n + 1);
  if (!s)
    return;
  memcpy(s, p, n);
  s[n] = '\0';
  CHECK(ns_rest_valid_type(s) == type_ok(s)); /* the raw bytes as a type */
  free(s);
  if (ns_rest_parse_broadcast(p, n, &b, &err) != 0) {
    check_err(&err);
    CHECK(!b.root && !b.type && !b.data);
    CHECK(!err.field[0] || strcmp(err.field, "type") == 0 ||
          strcmp(err.field, "data") == 0);
    return;
  }
  CHECK(b.root && b.type && type_ok(b.type));
  CHECK(json_object_object_get_ex(b.root, "type", &v) &&
        (size_t)json_object_get_string_len(v) == strlen(b.type));
  CHECK(json_object_object_get_ex(b.root, "type", &v) &&
        json_object_get_string(v) == b.type);
  if (json_object_object_get_ex(b.root, "data", &v) && v)
    CHECK(b.data == v && json_object_is_type(v, json_type_object));
  else
    CHECK(b.data == NULL);
  json_object_put(b.root);
}

static void action(const char *p, size_t n) {
  ns_action a;
  ns_rest_err err;
  json_object *root = NULL, *v;
  ns_proto_err perr;
  if (ns_rest_parse_action(p, n, &a, &err) != 0) {
    check_err(&err);
    CHECK(a == NS_ACTION_NONE);
    CHECK(!err.field[0] || strcmp(err.field, "action") == 0);
    return;
  }
  CHECK(a == NS_ACTION_READ || a == NS_ACTION_UNREAD || a == NS_ACTION_DISMISS);
  /* the body said so */
  CHECK(ns_proto_parse_json(p, n, &root, &perr) == 0);
  CHECK(json_object_object_get_ex(root, "action", &v) &&
        json_object_is_type(v, json_type_string) &&
        strcmp(json_object_get_string(v), ns_action_name(a)) == 0);
  json_object_put(root);
}

/* The bulk form (SPEC §9.5), on the bytes case 2 gives the single form:
 * it accepts exactly what the single form accepts as read or dismiss with
 * a `before` that is absent, null or a UUID, which it copies lower-cased. */
static void bulk_action(const char *p, size_t n) {
  ns_action a, single;
  char before[37];
  ns_rest_err err, serr;
  json_object *root = NULL, *v;
  ns_proto_err perr;
  int rc = ns_rest_parse_bulk_action(p, n, &a, before, &err);
  int src = ns_rest_parse_action(p, n, &single, &serr);
  size_t i;
  CHECK(memchr(before, '\0', sizeof(before)));
  if (rc != 0) {
    check_err(&err);
    CHECK(a == NS_ACTION_NONE && before[0] == '\0');
    CHECK((rc == NS_EPARSE) == (src == NS_EPARSE));
    if (rc == NS_EINVAL && strcmp(err.field, "before") == 0)
      CHECK(src == 0 && single != NS_ACTION_UNREAD);
    else if (rc == NS_EINVAL)
      CHECK(strcmp(err.field, "action") == 0 &&
            (src != 0 || single == NS_ACTION_UNREAD));
    return;
  }
  CHECK(src == 0 && single == a);
  CHECK(a == NS_ACTION_READ || a == NS_ACTION_DISMISS);
  CHECK(ns_proto_parse_json(p, n, &root, &perr) == 0);
  if (json_object_object_get_ex(root, "before", &v) && v) {
    const char *b = json_object_get_string(v);
    CHECK(json_object_is_type(v, json_type_string));
    CHECK(is_uuid(b, (size_t)json_object_get_string_len(v)) &&
          strlen(before) == 36);
    for (i = 0; i < 36; i++)
      CHECK(before[i] == (b[i] >= 'A' && b[i] <= 'F' ? b[i] + 32 : b[i]));
  } else {
    CHECK(before[0] == '\0');
  }
  json_object_put(root);
}

/* The value of the first "name=" piece of "a=1&b=2" as a fresh C string
 * (cut at a NUL, as lws hands over C strings), or NULL. */
static char *arg(const char *p, size_t n, const char *name) {
  size_t i = 0, k = strlen(name);
  while (i <= n) {
    const char *amp = memchr(p + i, '&', n - i);
    size_t end = amp ? (size_t)(amp - p) : n;
    if (end - i >= k && memcmp(p + i, name, k) == 0) {
      char *v = malloc(end - i - k + 1);
      if (!v)
        abort();
      memcpy(v, p + i + k, end - i - k);
      v[end - i - k] = '\0';
      return v;
    }
    i = end + 1;
  }
  return NULL;
}

static int limit_ok(const char *v, long *out) {
  char *end;
  *out = strtol(v, &end, 10);
  return !*end && *out >= 1 && *out <= 200;
}

static void query(const char *p, size_t n) {
  char *l = arg(p, n, "limit="), *b = arg(p, n, "before="),
       *u = arg(p, n, "unread=");
  ns_rest_list_query q;
  ns_rest_err err;
  long lv = 50;
  int lgood = !l || limit_ok(l, &lv), bgood = !b || ts_shape(b);
  if (b)
    CHECK(ns_rest_valid_ts(b) == ts_shape(b));
  if (ns_rest_parse_list_query(l, b, u, &q, &err) == 0) {
    CHECK(lgood && bgood);
    CHECK(q.limit >= 1 && q.limit <= NS_REST_LIMIT_MAX && q.limit == lv);
    CHECK(b ? q.before == b : strcmp(q.before, "") == 0);
    CHECK(q.unread == (u && (strcmp(u, "1") == 0 || strcmp(u, "true") == 0)));
  } else {
    check_err(&err);
    CHECK(strcmp(err.code, "bad_request") == 0);
    if (!lgood)
      CHECK(strcmp(err.field, "limit") == 0);
    else
      CHECK(!bgood && strcmp(err.field, "before") == 0);
  }
  free(l);
  free(b);
  free(u);
}

static void comments_path(const char *p, size_t n) {
  ns_rest_cpath c;
  int rc = ns_rest_parse_comments_path(p, n, &c);
  size_t pl, cl;
  CHECK((rc == 0) ==
        (c.kind == NS_REST_CPATH_LIST || c.kind == NS_REST_CPATH_ITEM));
  if (c.kind == NS_REST_CPATH_NONE) {
    /* "{valid post}/comments" is never refused */
    const char *slash = memchr(p, '/', n);
    if (slash && !memchr(p, '\0', n) &&
        id_of(p, (size_t)(slash - p), 1, NS_POST_ID_MAX) &&
        n - (size_t)(slash - p) == 9 && memcmp(slash, "/comments", 9) == 0)
      abort();
    return;
  }
  pl = strlen(c.post_id);
  CHECK(id_of(c.post_id, pl, 1, NS_POST_ID_MAX));
  CHECK(ns_rest_valid_post_id(c.post_id, pl));
  CHECK(n >= pl + 9 && memcmp(p, c.post_id, pl) == 0 &&
        memcmp(p + pl, "/comments", 9) == 0);
  switch (c.kind) {
  case NS_REST_CPATH_LIST:
    CHECK(n == pl + 9);
    break;
  case NS_REST_CPATH_ITEM:
    cl = strlen(c.comment_id);
    CHECK(cl <= NS_REST_PIECE_MAX && !strchr(c.comment_id, '/'));
    CHECK(n == pl + 10 + cl && p[pl + 9] == '/' &&
          memcmp(p + pl + 10, c.comment_id, cl) == 0);
    CHECK(c.comment_id_ok == is_uuid(c.comment_id, cl));
    break;
  case NS_REST_CPATH_NO_ITEM:
    CHECK(n > pl + 9 && p[pl + 9] == '/' && !memchr(p, '\0', n));
    CHECK(n - pl - 10 > NS_REST_PIECE_MAX || memchr(p + pl + 10, '/', n - pl - 10));
    break;
  default:
    abort();
  }
}

static void notif_path(const char *p, size_t n) {
  ns_rest_npath r;
  int rc = ns_rest_parse_notif_path(p, n, &r);
  int has_nul = memchr(p, '\0', n) != NULL;
  const char *slash = memchr(p, '/', n);
  size_t il;
  CHECK((rc == 0) == (r.kind != NS_REST_NPATH_NONE));
  CHECK(memchr(r.id, '\0', sizeof(r.id)));
  il = strlen(r.id);
  switch (r.kind) {
  case NS_REST_NPATH_BATCH:
    CHECK(n == 5 && memcmp(p, "batch", 5) == 0);
    break;
  case NS_REST_NPATH_BULK:
    CHECK(n == 7 && memcmp(p, "actions", 7) == 0 && il == 0 && !r.id_ok);
    break;
  case NS_REST_NPATH_UNREAD:
    CHECK(n == 12 && memcmp(p, "unread_count", 12) == 0 && il == 0 &&
          !r.id_ok);
    break;
  case NS_REST_NPATH_ONE:
    CHECK(!has_nul && !slash && !(n == 5 && memcmp(p, "batch", 5) == 0));
    CHECK(!(n == 7 && memcmp(p, "actions", 7) == 0));
    CHECK(!(n == 12 && memcmp(p, "unread_count", 12) == 0));
    CHECK(n <= NS_REST_PIECE_MAX ? il == n && memcmp(r.id, p, n) == 0 : il == 0);
    CHECK(r.id_ok == is_uuid(p, n));
    break;
  case NS_REST_NPATH_ACTIONS:
    CHECK(!has_nul && il <= NS_REST_PIECE_MAX && !strchr(r.id, '/'));
    CHECK(n == il + 8 && memcmp(p, r.id, il) == 0 &&
          memcmp(p + il, "/actions", 8) == 0);
    CHECK(r.id_ok == is_uuid(r.id, il));
    break;
  case NS_REST_NPATH_NONE:
    /* refused only with a NUL, or a '/' not followed by exactly "actions",
     * or an id too long for the actions route */
    CHECK(has_nul ||
          (slash && (n - (size_t)(slash - p) != 8 ||
                     memcmp(slash, "/actions", 8) != 0 ||
                     (size_t)(slash - p) > NS_REST_PIECE_MAX)));
    break;
  default:
    abort();
  }
}

static void device_header(const char *p, size_t n) {
  ns_rest_err err;
  int ok = n == 0 || id_of(p, n, 1, NS_DEVICE_ID_MAX);
  if (ns_rest_check_device_header(p, n, &err) == 0) {
    CHECK(ok);
  } else {
    CHECK(!ok);
    check_err(&err);
    CHECK(strcmp(err.field, "X-Device-ID") == 0);
  }
}

static void device_path(const char *p, size_t n) {
  char id[NS_DEVICE_ID_MAX + 1];
  int ok = id_of(p, n, 1, NS_DEVICE_ID_MAX);
  if (ns_rest_parse_device_path(p, n, id) == 0)
    CHECK(ok && strlen(id) == n && memcmp(id, p, n) == 0);
  else
    CHECK(!ok && id[0] == '\0');
}

/* ns_rest_check_query: accepted exactly when every argument (NUL-separated,
 * a last one without its NUL included) is at most 95 bytes, has no control
 * byte, a non-empty name and a '=', no name repeats, and there are at most
 * 32 of them. */
static void request_query(const char *p, size_t n) {
  const char *names[NS_REST_QUERY_ARGS_MAX + 1];
  size_t nlens[NS_REST_QUERY_ARGS_MAX + 1], count = 0, off = 0, i, j;
  int ok = 1;
  ns_rest_err err;
  while (ok && off < n) {
    size_t len = 0, nlen;
    const char *a = p + off;
    while (off + len < n && a[len] != '\0')
      len++;
    off += len + 1;
    for (nlen = 0; nlen < len && a[nlen] != '='; nlen++)
      ;
    if (count == NS_REST_QUERY_ARGS_MAX || len > NS_REST_QUERY_ARG_MAX ||
        nlen == 0 || nlen == len)
      ok = 0;
    for (i = 0; ok && i < len; i++)
      if ((unsigned char)a[i] < 0x20 || (unsigned char)a[i] == 0x7f)
        ok = 0;
    for (j = 0; ok && j < count; j++)
      if (nlens[j] == nlen && memcmp(names[j], a, nlen) == 0)
        ok = 0;
    names[count] = a;
    nlens[count++] = nlen;
  }
  memset(&err, 0, sizeof(err));
  if (ns_rest_check_query(p, n, &err) == 0) {
    CHECK(ok);
  } else {
    CHECK(!ok);
    check_err(&err);
  }
}

/* ns_rest_parse_content_length with max 65536: 1*DIGIT between optional
 * SP/HTAB; 413 past the max however many digits. */
static void content_length(const char *p, size_t n) {
  const long long max = 65536;
  size_t a = 0, b = n, i, sig;
  int digits = 1;
  long long v = -1, want = 0;
  ns_rest_err err;
  int rc;
  while (a < b && (p[a] == ' ' || p[a] == '\t'))
    a++;
  while (b > a && (p[b - 1] == ' ' || p[b - 1] == '\t'))
    b--;
  if (a == b)
    digits = 0;
  for (i = a; digits && i < b; i++)
    digits = p[i] >= '0' && p[i] <= '9';
  for (sig = a; digits && sig < b && p[sig] == '0'; sig++)
    ;
  if (digits && b - sig <= 7)
    for (i = sig; i < b; i++)
      want = want * 10 + (p[i] - '0');
  else if (digits)
    want = max + 1; /* 8 or more significant digits */
  memset(&err, 0, sizeof(err));
  rc = ns_rest_parse_content_length(p, n, max, &v, &err);
  if (!digits) {
    CHECK(rc == NS_EINVAL);
    check_err(&err);
    CHECK(strcmp(err.field, "Content-Length") == 0);
  } else if (want > max) {
    CHECK(rc == NS_ETOOBIG && strcmp(err.code, "too_large") == 0);
  } else {
    CHECK(rc == 0 && v == want);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *p = (const char *)data + 1;
  size_t n;
  if (size < 1)
    return 0;
  n = size - 1;
  switch (data[0] >= '0' && data[0] <= '9' ? data[0] - '0' : data[0] % 10) {
  case 0: comment(p, n); break;
  case 1: broadcast(p, n); break;
  case 2: action(p, n); bulk_action(p, n); break;
  case 3: query(p, n); break;
  case 4: comments_path(p, n); break;
  case 5: notif_path(p, n); break;
  case 6: device_header(p, n); break;
  case 7: device_path(p, n); break;
  case 8: request_query(p, n); break;
  default: content_length(p, n); break;
  }
  return 0;
}
