/*
 * ns_config.c -- the configuration table and everything it drives.
 *
 * One static table, `keys[]`, holds a row per configuration key: its name,
 * its type (string, integer, duration, size or enumeration), where it lives
 * in `ns_config` (offsetof, type-checked at compile time), its allowed range,
 * its default in text form and a one-line description.  Every entry point
 * walks that table: the defaults are produced by parsing the default texts,
 * the file parser and the NOTISYNC_<KEY> environment overrides both end in
 * the same set_key(), --help prints the table, and every error names the key.
 * Adding a key is adding a row (and the field in ns_config.h).
 *
 * Invariants: a successful ns_config_defaults() leaves every string field a
 * heap copy (never NULL) and every number inside its row's range; a failed
 * ns_config_set() leaves the config exactly as it was.  Nothing here does
 * I/O except reading the file handed to ns_config_load_file().
 */
#include "ns_config.h"

#include "ns_common.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include <arpa/inet.h>
#include <netinet/in.h>

typedef enum {
  KEY_STR,  /* any text, stored as a heap copy */
  KEY_INT,  /* decimal integer */
  KEY_DUR,  /* integer + ms|s|m|h|d (bare = seconds), stored in ms */
  KEY_SIZE, /* integer + optional k|m (x1024), stored in bytes */
  KEY_ENUM, /* one of the '|'-separated `choices`, stored as a heap copy */
  KEY_BOOL, /* true|false (also yes|no, on|off, 1|0), stored as 1 or 0 */
} key_type;

typedef struct {
  const char *name;
  key_type type;
  size_t off;          /* offsetof(ns_config, field) */
  int64_t min, max;    /* numeric types: inclusive range, in stored units */
  const char *def;     /* default, in the same text form a user writes */
  const char *choices; /* KEY_ENUM only: "a|b|c" */
  const char *help;
} key_def;

#define MS_SEC 1000LL
#define MS_MIN (60 * MS_SEC)
#define MS_HOUR (60 * MS_MIN)
#define MS_DAY (24 * MS_HOUR)
#define KIB 1024LL
#define MIB (1024 * KIB)

/* offsetof() plus a compile-time check that `field` has type T: _Generic
 * without a matching association does not compile. */
#define FIELD(field, T)                                                        \
  (offsetof(ns_config, field) +                                                \
   0 * sizeof(_Generic(((ns_config *)0)->field, T : 1)))
#define STR(n, f, d, h)                                                        \
  { n, KEY_STR, FIELD(f, char *), 0, 0, d, NULL, h }
#define NUM(n, t, f, lo, hi, d, h)                                             \
  { n, t, FIELD(f, int64_t), lo, hi, d, NULL, h }
#define ENUM(n, f, ch, d, h)                                                   \
  { n, KEY_ENUM, FIELD(f, char *), 0, 0, d, ch, h }

static const key_def keys[] = {
    STR("listen", listen, "0.0.0.0:8080",
        "host:port for WebSocket and HTTP (one port serves both)"),
    STR("redis_url", redis_url, "redis://127.0.0.1:6379/0",
        "Redis holding queues, presence and pub/sub"),
    STR("redis_prefix", redis_prefix, "",
        "prepended to every Redis key and channel (share one Redis)"),
    ENUM("redis_mode", redis_mode, "standalone|cluster", "standalone",
         "cluster: redis_url lists seed nodes of a Redis Cluster"),
    NUM("redis_wait_replicas", KEY_INT, redis_wait_replicas, 0, 16, "0",
        "replicas that must have a notification before 201 (WAIT; 0 = off)"),
    NUM("redis_wait_timeout", KEY_DUR, redis_wait_timeout_ms, 10, 60 * MS_SEC,
        "1s", "how long that WAIT may take; short of replicas is 503"),
    STR("database_url", database_url,
        "postgres://postgres@127.0.0.1:5432/notisync",
        "PostgreSQL connection string (URL or libpq key=value)"),
    STR("jwt_secret", jwt_secret, "",
        "HS256 shared secret; this or jwt_public_key_file is required"),
    STR("jwt_public_key_file", jwt_public_key_file, "",
        "PEM public key file; selects RS256/ES256 from the key type"),
    STR("jwt_issuer", jwt_issuer, "",
        "required `iss` claim (empty = not checked)"),
    STR("jwt_audience", jwt_audience, "",
        "required `aud` claim (empty = not checked)"),
    NUM("queue_max_messages", KEY_INT, queue_max_messages, 1, 1000000, "1000",
        "undelivered messages kept per device; the oldest is dropped first"),
    NUM("queue_ttl", KEY_DUR, queue_ttl_ms, 1 * MS_SEC, 365 * MS_DAY, "7d",
        "a queued message older than this is never delivered"),
    NUM("heartbeat_interval", KEY_DUR, heartbeat_interval_ms, 1 * MS_SEC,
        MS_HOUR, "30s", "WebSocket ping interval"),
    NUM("idle_timeout", KEY_DUR, idle_timeout_ms, 1 * MS_SEC, MS_DAY, "90s",
        "close a connection silent this long (> heartbeat_interval)"),
    NUM("max_message_bytes", KEY_SIZE, max_message_bytes, 64, 64 * MIB, "64k",
        "largest inbound WebSocket message; larger closes with 1009"),
    NUM("max_body_bytes", KEY_SIZE, max_body_bytes, 64, 64 * MIB, "64k",
        "largest HTTP request body; larger answers 413"),
    NUM("max_outbound_bytes", KEY_SIZE, max_outbound_bytes, 1 * KIB, 1024 * MIB,
        "1m", "unsent bytes buffered per connection; more closes with 1013"),
    NUM("max_data_bytes", KEY_SIZE, max_data_bytes, 2, 1 * MIB, "4k",
        "largest serialized `data` object of a notification; larger answers 400"),
    NUM("notification_retention", KEY_DUR, notification_retention_ms, 0,
        3650 * MS_DAY, "90d",
        "notifications older than this are deleted (0 = keep forever)"),
    NUM("max_devices_per_user", KEY_INT, max_devices_per_user, 1, 10000, "32",
        "concurrent devices per user; the next closes with 1008"),
    NUM("presence_grace", KEY_DUR, presence_grace_ms, 0, 10 * MS_MIN, "2s",
        "a reconnect within this emits no offline/online pair (0 = off)"),
    NUM("client_msg_rate", KEY_INT, client_msg_rate, 0, 1000000, "20",
        "inbound messages per second per connection (0 = no limit)"),
    NUM("client_msg_burst", KEY_INT, client_msg_burst, 1, 1000000, "50",
        "inbound message burst per connection"),
    NUM("handshake_rate_per_ip", KEY_INT, handshake_rate_per_ip, 0, 1000000,
        "50", "WebSocket handshakes per second per client IP (0 = off)"),
    NUM("handshake_burst_per_ip", KEY_INT, handshake_burst_per_ip, 1, 1000000,
        "100", "handshake burst per client IP"),
    STR("allowed_origins", allowed_origins, "",
        "comma-separated browser Origins allowed to upgrade (empty = any)"),
    STR("tls_cert", tls_cert, "", "PEM certificate chain; set with tls_key"),
    STR("tls_key", tls_key, "", "PEM private key; set with tls_cert"),
    ENUM("log_level", log_level, "debug|info|warn|error", "info",
         "least severe level logged"),
    ENUM("log_format", log_format, "text|json", "text",
         "text for people, json for machines (one line per event)"),
    STR("log_file", log_file, "",
        "append log lines to this file instead of stderr; SIGHUP reopens it"),
    STR("instance_id", instance_id, "",
        "this instance's name in Redis (empty = generated at start-up)"),
    NUM("workers", KEY_INT, workers, 1, 64, "1",
        "server processes sharing the listen port (N > 1: a supervisor and N workers)"),
    NUM("dev_console", KEY_BOOL, dev_console, 0, 1, "false",
        "/console may mint 1-hour dev tokens (loopback `listen` only)"),
};

#define KEY_NAME_MAX 64 /* longer than any key name */
#define ECHO_MAX 40     /* bytes of a bad value quoted back in errors */
#define LINE_MAX_BYTES 65536
#define ENV_PREFIX "NOTISYNC_"

__attribute__((format(printf, 3, 4))) static void
seterr(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  if (!err || errlen == 0)
    return;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static const key_def *find_key(const char *name) {
  for (size_t i = 0; i < NS_ARRAY_SIZE(keys); i++)
    if (strcmp(keys[i].name, name) == 0)
      return &keys[i];
  return NULL;
}

static char **str_field(ns_config *c, const key_def *k) {
  return (char **)(void *)((char *)c + k->off);
}

static int64_t *num_field(ns_config *c, const key_def *k) {
  return (int64_t *)(void *)((char *)c + k->off);
}

static char *const *str_field_c(const ns_config *c, const key_def *k) {
  return (char *const *)(const void *)((const char *)c + k->off);
}

static const int64_t *num_field_c(const ns_config *c, const key_def *k) {
  return (const int64_t *)(const void *)((const char *)c + k->off);
}

/* Parses the leading decimal digits of `s` (no sign, no blanks) into `*v`
 * and points `*rest` after them.  Returns 0, NS_EINVAL when `s` does not
 * start with a digit, or NS_ERANGE when the digits overflow int64_t (`*rest`
 * is still set so the caller can judge the suffix first). */
static int parse_digits(const char *s, int64_t *v, const char **rest) {
  char *end;
  long long n;
  if (!s || !isdigit((unsigned char)s[0]))
    return NS_EINVAL;
  errno = 0;
  n = strtoll(s, &end, 10);
  *rest = end;
  if (errno == ERANGE)
    return NS_ERANGE;
  *v = (int64_t)n;
  return 0;
}

/* Multiplies a parsed count by its unit, the overflow check shared by the
 * duration and size parsers.  `digits_rc` is parse_digits()'s result. */
static int scale(int digits_rc, int64_t v, int64_t mult, int64_t *out) {
  if (digits_rc != 0)
    return digits_rc;
  if (v > INT64_MAX / mult)
    return NS_ERANGE;
  *out = v * mult;
  return 0;
}

/* Parses "250ms", "30s", "5m", "2h", "7d" or a bare "30" (seconds) into
 * milliseconds.  Units are lower case; no sign, blanks or fractions.
 * Returns 0 and sets `*out`, NS_EINVAL when malformed, or NS_ERANGE when the
 * result does not fit int64_t.  `*out` is untouched on failure. */
int ns_parse_duration_ms(const char *s, int64_t *out) {
  static const struct {
    const char *unit;
    int64_t ms;
  } units[] = {{"", MS_SEC},  {"ms", 1},      {"s", MS_SEC},
               {"m", MS_MIN}, {"h", MS_HOUR}, {"d", MS_DAY}};
  const char *rest = NULL;
  int64_t v = 0;
  int rc = parse_digits(s, &v, &rest);
  if (rc == NS_EINVAL)
    return rc;
  for (size_t i = 0; i < NS_ARRAY_SIZE(units); i++)
    if (strcmp(rest, units[i].unit) == 0)
      return scale(rc, v, units[i].ms, out);
  return NS_EINVAL;
}

/* Parses a byte count with an optional k or m suffix (either case, x1024):
 * "65536", "64k", "1M".  Returns 0 and sets `*out`, NS_EINVAL when
 * malformed, or NS_ERANGE on overflow; `*out` is untouched on failure. */
int ns_parse_size(const char *s, int64_t *out) {
  const char *rest = NULL;
  int64_t v = 0;
  int rc = parse_digits(s, &v, &rest);
  if (rc == NS_EINVAL)
    return rc;
  if (rest[0] == '\0')
    return scale(rc, v, 1, out);
  if (rest[1] != '\0')
    return NS_EINVAL;
  switch (rest[0]) {
  case 'k':
  case 'K':
    return scale(rc, v, KIB, out);
  case 'm':
  case 'M':
    return scale(rc, v, MIB, out);
  default:
    return NS_EINVAL;
  }
}

/* An integer key: optional '-' so that "-1" is reported as out of range
 * rather than as not-a-number. */
static int parse_int(const char *s, int64_t *out) {
  const char *rest = NULL;
  int64_t v = 0;
  bool neg = s && s[0] == '-';
  int rc = parse_digits(neg ? s + 1 : s, &v, &rest);
  if (rc == NS_EINVAL || rest[0] != '\0')
    return NS_EINVAL;
  if (rc == 0)
    *out = neg ? -v : v;
  return rc;
}

/* A boolean key: true|yes|on|1 or false|no|off|0 (lower case). */
static int parse_bool(const char *s, int64_t *out) {
  static const char *const yes[] = {"true", "yes", "on", "1"},
                           *const no[] = {"false", "no", "off", "0"};
  for (size_t i = 0; i < NS_ARRAY_SIZE(yes); i++) {
    if (strcmp(s, yes[i]) == 0 || strcmp(s, no[i]) == 0) {
      *out = strcmp(s, yes[i]) == 0;
      return 0;
    }
  }
  return NS_EINVAL;
}

/* Writes `v` (in the key's stored unit) the way a user would type it:
 * the largest unit that divides it exactly. */
static void format_value(key_type t, int64_t v, char *buf, size_t n) {
  static const struct {
    key_type t;
    int64_t mult;
    const char *unit;
  } units[] = {{KEY_DUR, MS_DAY, "d"}, {KEY_DUR, MS_HOUR, "h"},
               {KEY_DUR, MS_MIN, "m"}, {KEY_DUR, MS_SEC, "s"},
               {KEY_DUR, 1, "ms"},     {KEY_SIZE, MIB, "m"},
               {KEY_SIZE, KIB, "k"}};
  if (t == KEY_BOOL) {
    snprintf(buf, n, "%s", v ? "true" : "false");
    return;
  }
  for (size_t i = 0; i < NS_ARRAY_SIZE(units); i++) {
    if (units[i].t == t && v != 0 && v % units[i].mult == 0) {
      snprintf(buf, n, "%lld%s", (long long)(v / units[i].mult), units[i].unit);
      return;
    }
  }
  snprintf(buf, n, "%lld%s", (long long)v, t == KEY_DUR && v != 0 ? "ms" : "");
}

static bool enum_has(const char *choices, const char *value) {
  size_t n = strlen(value);
  const char *p = choices;
  while (p) { /* one pass over the '|'-separated list */
    const char *bar = strchr(p, '|');
    size_t len = bar ? (size_t)(bar - p) : strlen(p);
    if (len == n && strncmp(p, value, n) == 0)
      return true;
    p = bar ? bar + 1 : NULL;
  }
  return false;
}

static const char *expected_text(key_type t) {
  switch (t) {
  case KEY_DUR:
    return "expected a duration like 30s, 7d (an integer with unit ms, s, m, "
           "h or d; bare = seconds)";
  case KEY_SIZE:
    return "expected a size like 64k, 1m (bytes, optional suffix k or m)";
  case KEY_BOOL:
    return "expected true or false";
  default:
    return "expected an integer";
  }
}

static int range_error(const key_def *k, const char *value, char *err,
                       size_t errlen) {
  char lo[32], hi[32];
  format_value(k->type, k->min, lo, sizeof lo);
  format_value(k->type, k->max, hi, sizeof hi);
  seterr(err, errlen, "bad value for key '%s': '%.*s' is out of range %s..%s",
         k->name, ECHO_MAX, value, lo, hi);
  return NS_EINVAL;
}

/* Parses `value` for a numeric row and stores it.  Leaves `c` unchanged on
 * error. */
static int set_number(ns_config *c, const key_def *k, const char *value,
                      char *err, size_t errlen) {
  int64_t v = 0;
  int rc = k->type == KEY_DUR    ? ns_parse_duration_ms(value, &v)
           : k->type == KEY_SIZE ? ns_parse_size(value, &v)
           : k->type == KEY_BOOL ? parse_bool(value, &v)
                                 : parse_int(value, &v);
  if (rc == NS_EINVAL) {
    seterr(err, errlen, "bad value for key '%s': %s, got '%.*s'", k->name,
           expected_text(k->type), ECHO_MAX, value);
    return NS_EINVAL;
  }
  if (rc != 0 || v < k->min || v > k->max)
    return range_error(k, value, err, errlen);
  *num_field(c, k) = v;
  return 0;
}

/* The one place a value is stored.  Strings are copied; the old copy is
 * freed only after the new value was accepted. */
static int set_key(ns_config *c, const key_def *k, const char *value, char *err,
                   size_t errlen) {
  char **sp;
  if (k->type == KEY_INT || k->type == KEY_DUR || k->type == KEY_SIZE ||
      k->type == KEY_BOOL)
    return set_number(c, k, value, err, errlen);
  if (k->type == KEY_ENUM && !enum_has(k->choices, value)) {
    seterr(err, errlen,
           "bad value for key '%s': expected one of %s, got '%.*s'", k->name,
           k->choices, ECHO_MAX, value);
    return NS_EINVAL;
  }
  sp = str_field(c, k);
  free(*sp);
  *sp = ns_xstrdup(value);
  return 0;
}

/* Fills every key from its default text.  `c` is overwritten without
 * freeing: it must not hold strings yet (zeroed, or after ns_config_free()).
 * A default that fails its own row is a bug in the table, so it aborts. */
void ns_config_defaults(ns_config *c) {
  char err[256];
  memset(c, 0, sizeof *c);
  for (size_t i = 0; i < NS_ARRAY_SIZE(keys); i++) {
    if (set_key(c, &keys[i], keys[i].def, err, sizeof err) != 0) {
      fprintf(stderr, "ns_config: bad default: %s\n", err);
      abort();
    }
  }
}

/* Frees every string field and zeroes `c`.  Accepts NULL, and a config
 * already freed or only zeroed, so it may be called twice. */
void ns_config_free(ns_config *c) {
  if (!c)
    return;
  for (size_t i = 0; i < NS_ARRAY_SIZE(keys); i++)
    if (keys[i].type == KEY_STR || keys[i].type == KEY_ENUM)
      free(*str_field(c, &keys[i]));
  memset(c, 0, sizeof *c);
}

/* Sets the key named `key` (exact, lower case) from its text form, as the
 * file and the environment do.  Returns 0, or NS_EINVAL with a message in
 * `err` naming the key; on failure `c` is unchanged.  `err` may be NULL. */
int ns_config_set(ns_config *c, const char *key, const char *value, char *err,
                  size_t errlen) {
  const key_def *k;
  if (!c || !key) {
    seterr(err, errlen, "no key given");
    return NS_EINVAL;
  }
  k = find_key(key);
  if (!k) {
    seterr(err, errlen, "unknown key '%.*s'", KEY_NAME_MAX, key);
    return NS_EINVAL;
  }
  if (!value) {
    seterr(err, errlen, "missing value for key '%s'", k->name);
    return NS_EINVAL;
  }
  return set_key(c, k, value, err, errlen);
}

/* Cuts the value that starts at `p` in place: either a double-quoted string
 * (escapes \" and \\; only blanks or a comment may follow) or bare text up to
 * a '#' that starts the value or follows a blank, with trailing blanks
 * trimmed.  Returns 0 or NS_EINVAL with a message. */
static int cut_value(char *p, char *msg, size_t msglen) {
  char *r = p + 1, *w = p;
  if (*p != '"') {
    char *end = p;
    while (*end &&
           !(*end == '#' && (end == p || isspace((unsigned char)end[-1]))))
      end++;
    while (end > p && isspace((unsigned char)end[-1]))
      end--;
    *end = '\0';
    return 0;
  }
  for (; *r && *r != '"'; r++) {
    if (*r == '\\' && (r[1] == '"' || r[1] == '\\'))
      r++;
    *w++ = *r;
  }
  if (*r != '"') {
    seterr(msg, msglen, "unterminated quoted value");
    return NS_EINVAL;
  }
  for (r++; isspace((unsigned char)*r); r++)
    ;
  if (*r != '\0' && *r != '#') {
    seterr(msg, msglen, "unexpected text after the closing quote");
    return NS_EINVAL;
  }
  *w = '\0';
  return 0;
}

/* Applies one line of a config file (without its newline).  Writes a
 * message without the "path:line: " prefix on error. */
static int load_line(ns_config *c, char *line, char *msg, size_t msglen) {
  char *p = line, *key, *value;
  const key_def *k;
  bool has_eq = false;
  while (isspace((unsigned char)*p))
    p++;
  if (*p == '\0' || *p == '#')
    return 0;
  key = p;
  while (isalnum((unsigned char)*p) || *p == '_')
    p++;
  if (p == key || (*p != '\0' && *p != '=' && !isspace((unsigned char)*p))) {
    seterr(msg, msglen, "expected 'key = value'");
    return NS_EINVAL;
  }
  value = p;
  while (isspace((unsigned char)*value))
    value++;
  if (*value == '=') {
    has_eq = true;
    for (value++; isspace((unsigned char)*value);)
      value++;
  }
  *p = '\0'; /* ends the key; `value` never starts before p */
  k = find_key(key);
  if (!k) {
    seterr(msg, msglen, "unknown key '%.*s'", KEY_NAME_MAX, key);
    return NS_EINVAL;
  }
  if (!has_eq && (*value == '\0' || *value == '#')) {
    seterr(msg, msglen,
           "missing value for key '%s' (write '%s = \"\"' for empty)", k->name,
           k->name);
    return NS_EINVAL;
  }
  if (cut_value(value, msg, msglen) != 0)
    return NS_EINVAL;
  return set_key(c, k, value, msg, msglen);
}

/* Strips a trailing "\n" or "\r\n" and rejects lines the parser cannot
 * take: NUL bytes (the rest of the line would be silently lost) or absurd
 * lengths. */
static int check_line(char *line, size_t n, char *msg, size_t msglen) {
  if (n > LINE_MAX_BYTES) {
    seterr(msg, msglen, "line longer than %d bytes", LINE_MAX_BYTES);
    return NS_EINVAL;
  }
  if (memchr(line, '\0', n)) {
    seterr(msg, msglen, "NUL byte in line");
    return NS_EINVAL;
  }
  if (n > 0 && line[n - 1] == '\n')
    line[--n] = '\0';
  if (n > 0 && line[n - 1] == '\r')
    line[--n] = '\0';
  return 0;
}

/* Reads `f` line by line into `c`; `name` prefixes every message ("name:
 * reason", "name:line: ...").  Returns 0, -errno on a read error, or
 * NS_EINVAL; the lines before a bad one have been applied. */
static int load_stream(ns_config *c, FILE *f, const char *name, char *err,
                       size_t errlen) {
  char msg[256];
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  long lineno = 0;
  int rc = 0;
  errno = 0;
  while ((n = getline(&line, &cap, f)) != -1) { /* ends at EOF or error */
    lineno++;
    rc = check_line(line, (size_t)n, msg, sizeof msg);
    if (rc == 0)
      rc = load_line(c, line, msg, sizeof msg);
    if (rc != 0) {
      seterr(err, errlen, "%s:%ld: %s", name, lineno, msg);
      goto cleanup;
    }
  }
  if (ferror(f)) {
    rc = errno ? -errno : -EIO;
    seterr(err, errlen, "%s: %s", name, strerror(-rc));
  }
cleanup:
  free(line);
  return rc;
}

/* Reads `path` line by line into `c` (see the header for the syntax).  Keys
 * repeated later win.  Returns 0; -errno when the file cannot be opened or
 * read ("path: reason" in `err`); or NS_EINVAL with "path:line: ..." in
 * `err`, in which case the lines before the bad one have been applied. */
int ns_config_load_file(ns_config *c, const char *path, char *err,
                        size_t errlen) {
  int rc;
  FILE *f = fopen(path, "r");
  if (!f) {
    rc = -errno;
    seterr(err, errlen, "%s: %s", path, strerror(-rc));
    return rc;
  }
  rc = load_stream(c, f, path, err, errlen);
  fclose(f);
  return rc;
}

/* The file parser over `n` bytes in memory (fmemopen: the same getline
 * path as a file).  Same results as ns_config_load_file with `name` in the
 * messages. */
int ns_config_load_text(ns_config *c, const char *text, size_t n,
                        const char *name, char *err, size_t errlen) {
  int rc;
  FILE *f;
  if (n == 0)
    return 0; /* fmemopen refuses a zero size; an empty file sets nothing */
  f = fmemopen((void *)(uintptr_t)text, n, "r");
  if (!f) {
    rc = -errno;
    seterr(err, errlen, "%s: %s", name, strerror(-rc));
    return rc;
  }
  rc = load_stream(c, f, name, err, errlen);
  fclose(f);
  return rc;
}

/* NOTISYNC_* variables that are not configuration keys but are read by
 * something else, so start-up accepts them (exact, case-sensitive names,
 * after the prefix).  Everything else under the prefix must be a key.  A new
 * test hook or script variable under NOTISYNC_ is added here, or start-up
 * refuses it as a misspelt key. */
static const char *const env_allow[] = {
    "DEBUG_STALL_MS", /* ns_redis.c test hook (tests/e2e/liveness.test.js) */
};

#define ENV_NAME_ECHO 64 /* bytes of a variable name quoted back in errors */

static bool env_allowed(const char *name, size_t n) {
  for (size_t i = 0; i < NS_ARRAY_SIZE(env_allow); i++)
    if (strlen(env_allow[i]) == n && memcmp(env_allow[i], name, n) == 0)
      return true;
  return false;
}

/* Classifies one environ entry.  Returns 0 with *k = NULL for an entry to
 * skip (no NOTISYNC_ prefix, or an allow-listed name), 0 with *k the row
 * and *value its text for a key, or NS_EINVAL with the message in `err`
 * for an unknown name or an entry without '='. */
static int env_entry(const char *entry, const key_def **k, const char **value,
                     char *err, size_t errlen) {
  const size_t plen = strlen(ENV_PREFIX);
  const char *name = entry + plen, *eq;
  char key[KEY_NAME_MAX];
  size_t n;
  *k = NULL;
  if (strncmp(entry, ENV_PREFIX, plen) != 0)
    return 0;
  if (!(eq = strchr(name, '='))) {
    seterr(err, errlen, "environment %s%.*s: no '=' in the entry", ENV_PREFIX,
           ENV_NAME_ECHO, name);
    return NS_EINVAL;
  }
  n = (size_t)(eq - name);
  if (env_allowed(name, n))
    return 0;
  if (n < sizeof key) {
    for (size_t j = 0; j < n; j++)
      key[j] = (char)tolower((unsigned char)name[j]);
    key[n] = '\0';
    *k = find_key(key);
  }
  if (!*k) {
    seterr(err, errlen,
           "environment %s%.*s: unknown key '%.*s' (not a configuration key; "
           "see notisyncd --help)",
           ENV_PREFIX, (int)NS_MIN(n, (size_t)ENV_NAME_ECHO), name,
           (int)NS_MIN(n, sizeof key - 1), n < sizeof key ? key : name);
    return NS_EINVAL;
  }
  *value = eq + 1;
  return 0;
}

/* Applies NOTISYNC_<KEY>=value entries of `envp` in order (a later duplicate
 * wins), with the config file's rules: a name that is no key (and not on
 * env_allow[]) or a bad value is an error, never skipped.  Names are matched
 * case-insensitively after the prefix; values are taken as they are (no
 * quotes, no trimming).  Every name is checked before any value is applied,
 * so an unknown name leaves `c` unchanged.  Returns 0, or NS_EINVAL with
 * "environment NOTISYNC_X: ..." in `err` at the first unknown name, else at
 * the first bad value (the values before it are applied). */
int ns_config_load_env(ns_config *c, char *const *envp, char *err,
                       size_t errlen) {
  const size_t plen = strlen(ENV_PREFIX);
  char msg[256];
  if (!envp)
    return 0;
  for (size_t i = 0; envp[i]; i++) { /* NULL-terminated, as environ */
    const key_def *k;
    const char *value;
    if (env_entry(envp[i], &k, &value, err, errlen) != 0)
      return NS_EINVAL;
  }
  for (size_t i = 0; envp[i]; i++) {
    const key_def *k;
    const char *name = envp[i] + plen, *value = NULL;
    env_entry(envp[i], &k, &value, NULL, 0); /* checked above */
    if (!k)
      continue;
    if (set_key(c, k, value, msg, sizeof msg) != 0) {
      seterr(err, errlen, "environment %s%.*s: %s", ENV_PREFIX,
             (int)(value - 1 - name), name, msg);
      return NS_EINVAL;
    }
  }
  return 0;
}

/* Re-checks every row against a config that may have been edited directly:
 * strings present, numbers in range, enum values known. */
static int check_rows(const ns_config *c, char *err, size_t errlen) {
  for (size_t i = 0; i < NS_ARRAY_SIZE(keys); i++) {
    const key_def *k = &keys[i];
    if (k->type == KEY_STR || k->type == KEY_ENUM) {
      const char *s = *str_field_c(c, k);
      if (!s) {
        seterr(err, errlen, "key '%s' is not set", k->name);
        return NS_EINVAL;
      }
      if (k->type == KEY_ENUM && !enum_has(k->choices, s)) {
        seterr(err, errlen, "bad value for key '%s': expected one of %s",
               k->name, k->choices);
        return NS_EINVAL;
      }
    } else {
      int64_t v = *num_field_c(c, k);
      char text[32];
      if (v < k->min || v > k->max) {
        format_value(k->type, v, text, sizeof text);
        return range_error(k, text, err, errlen);
      }
    }
  }
  return 0;
}

/* "host:port": a non-empty host (an IPv6 address in brackets) and a port
 * 1..65535 after the last colon. */
static bool listen_ok(const char *s) {
  const char *colon = strrchr(s, ':');
  int64_t port = 0;
  if (!colon || colon == s)
    return false;
  if (s[0] == '[' ? colon[-1] != ']'
                  : memchr(s, ':', (size_t)(colon - s)) != NULL)
    return false;
  if (strlen(colon + 1) > 5 || parse_int(colon + 1, &port) != 0)
    return false;
  return port >= 1 && port <= 65535;
}

/* The host part of a `listen` already checked by listen_ok() is a loopback
 * address: 127.0.0.0/8 or ::1 (literal addresses only; a name such as
 * "localhost" could resolve to anything). */
static bool listen_is_loopback(const char *s) {
  const char *colon = strrchr(s, ':');
  char host[64];
  unsigned char a[16];
  size_t n = (size_t)(colon - s);
  if (s[0] == '[') { /* "[addr]:port" */
    if (n < 2 || n - 2 >= sizeof host)
      return false;
    memcpy(host, s + 1, n - 2);
    host[n - 2] = '\0';
    return inet_pton(AF_INET6, host, a) == 1 &&
           memcmp(a, in6addr_loopback.s6_addr, 16) == 0;
  }
  if (n >= sizeof host)
    return false;
  memcpy(host, s, n);
  host[n] = '\0';
  return inet_pton(AF_INET, host, a) == 1 && a[0] == 127;
}

/* instance_id ends up inside Redis key names and log lines. */
static bool instance_id_ok(const char *s) {
  size_t n = strlen(s);
  if (n > 64)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!isalnum((unsigned char)s[i]) && !strchr("._:-", s[i]))
      return false;
  return true;
}

int ns_config_need_jwt_key(const ns_config *c, char *err, size_t errlen) {
  if (c->jwt_secret[0] == '\0' && c->jwt_public_key_file[0] == '\0') {
    seterr(err, errlen,
           "no JWT key configured: set 'jwt_secret' (HS256) or "
           "'jwt_public_key_file' (RS256/ES256)");
    return NS_EINVAL;
  }
  if (c->dev_console && (c->jwt_secret[0] == '\0' ||
                         c->jwt_public_key_file[0] != '\0' ||
                         c->jwt_issuer[0] != '\0' || c->jwt_audience[0] != '\0')) {
    seterr(err, errlen,
           "bad value for key 'dev_console': true needs 'jwt_secret' (HS256) "
           "without 'jwt_public_key_file', 'jwt_issuer' or 'jwt_audience' "
           "(dev tokens carry none of them)");
    return NS_EINVAL;
  }
  return 0;
}

/* Checks the rules no single row can: see the header.  Returns 0, or
 * NS_EINVAL with a message naming the key(s) involved. */
int ns_config_validate(const ns_config *c, char *err, size_t errlen) {
  int rc = check_rows(c, err, errlen);
  if (rc != 0)
    return rc;
  if (c->idle_timeout_ms <= c->heartbeat_interval_ms) {
    seterr(err, errlen,
           "bad value for key 'idle_timeout': must be greater than "
           "heartbeat_interval");
    return NS_EINVAL;
  }
  if ((c->tls_cert[0] == '\0') != (c->tls_key[0] == '\0')) {
    seterr(err, errlen, "'tls_cert' and 'tls_key' must be set together");
    return NS_EINVAL;
  }
  if (!listen_ok(c->listen)) {
    seterr(err, errlen,
           "bad value for key 'listen': expected host:port with port 1..65535");
    return NS_EINVAL;
  }
  if (!instance_id_ok(c->instance_id)) {
    seterr(err, errlen,
           "bad value for key 'instance_id': at most 64 of [A-Za-z0-9._:-]");
    return NS_EINVAL;
  }
  /* dev_console hands a signed token to whoever asks: only a listener no
   * other machine can reach may do that. */
  if (c->dev_console && !listen_is_loopback(c->listen)) {
    seterr(err, errlen,
           "bad value for key 'dev_console': true needs a loopback 'listen' "
           "(127.0.0.0/8 or [::1])");
    return NS_EINVAL;
  }
  return 0;
}

static const char *type_name(key_type t) {
  switch (t) {
  case KEY_INT:
    return "integer";
  case KEY_DUR:
    return "duration";
  case KEY_SIZE:
    return "size";
  case KEY_ENUM:
    return "one of";
  case KEY_BOOL:
    return "boolean";
  default:
    return "string";
  }
}

/* Prints one entry per key: name, default, type and range, description. */
void ns_config_print_help(FILE *f) {
  fprintf(f, "Configuration keys.  File lines are 'key = value'; every key\n"
             "can be overridden by the environment variable NOTISYNC_<KEY>.\n"
             "Precedence: defaults < file < environment.  Durations: integer\n"
             "+ ms|s|m|h|d (bare = seconds).  Sizes: bytes, optional k|m "
             "(x1024).\n\n");
  for (size_t i = 0; i < NS_ARRAY_SIZE(keys); i++) {
    const key_def *k = &keys[i];
    char lo[32], hi[32];
    fprintf(f, "  %s = \"%s\"\n      %s", k->name, k->def, type_name(k->type));
    if (k->type == KEY_ENUM) {
      fprintf(f, " %s", k->choices);
    } else if (k->type != KEY_STR && k->type != KEY_BOOL) {
      format_value(k->type, k->min, lo, sizeof lo);
      format_value(k->type, k->max, hi, sizeof hi);
      fprintf(f, " %s..%s", lo, hi);
    }
    fprintf(f, ": %s\n", k->help);
  }
}
