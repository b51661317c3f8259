/*
 * test_config.c -- unit tests for ns_config: defaults, the duration and size
 * parsers (every accepted form and every malformed class), per-key range and
 * syntax errors naming the key, the file parser (comments, quoting, errors
 * with path:line), NOTISYNC_<KEY> overrides and their precedence over the
 * file, the cross-key validation rules, and freeing.
 */
/* cmocka.h needs these four first. */
// clang-format off
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
// clang-format on

#include "ns_common.h"
#include "ns_config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define S(x) (1000LL * (x))
#define M(x) (60 * S(x))
#define H(x) (60 * M(x))
#define D(x) (24 * H(x))

/* Asserts that `hay` contains `needle`, printing both when it does not. */
#define assert_contains(hay, needle)                                           \
  do {                                                                         \
    if (strstr((hay), (needle)) == NULL)                                       \
      fail_msg("expected \"%s\" in \"%s\"", (needle), (hay));                  \
  } while (0)

/* Writes `text` (of `len` bytes) to a fresh temp file; returns its path in
 * `path` (at least 64 bytes).  The caller unlinks it. */
static void write_temp(char *path, const char *text, size_t len) {
  int fd;
  strcpy(path, "/tmp/test_config_XXXXXX");
  fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, len), (ssize_t)len);
  assert_int_equal(close(fd), 0);
}

static int load_text(ns_config *c, const char *text, char *path, char *err,
                     size_t errlen) {
  int rc;
  write_temp(path, text, strlen(text));
  rc = ns_config_load_file(c, path, err, errlen);
  unlink(path);
  return rc;
}

/* ---- defaults ---------------------------------------------------------- */

static void test_defaults(void **state) {
  ns_config c;
  ns_config_defaults(&c);
  assert_string_equal(c.listen, "0.0.0.0:8080");
  assert_string_equal(c.redis_url, "redis://127.0.0.1:6379/0");
  assert_string_equal(c.redis_prefix, "");
  assert_string_equal(c.database_url,
                      "postgres://postgres@127.0.0.1:5432/notisync");
  assert_string_equal(c.jwt_secret, "");
  assert_string_equal(c.jwt_public_key_file, "");
  assert_string_equal(c.jwt_issuer, "");
  assert_string_equal(c.jwt_audience, "");
  assert_int_equal(c.queue_max_messages, 1000);
  assert_int_equal(c.queue_ttl_ms, D(7));
  assert_int_equal(c.heartbeat_interval_ms, S(30));
  assert_int_equal(c.idle_timeout_ms, S(90));
  assert_int_equal(c.max_message_bytes, 65536);
  assert_int_equal(c.max_body_bytes, 65536);
  assert_int_equal(c.max_outbound_bytes, 1048576);
  assert_int_equal(c.max_devices_per_user, 32);
  assert_int_equal(c.presence_grace_ms, S(2));
  assert_int_equal(c.client_msg_rate, 20);
  assert_int_equal(c.client_msg_burst, 50);
  assert_int_equal(c.handshake_rate_per_ip, 50);
  assert_int_equal(c.handshake_burst_per_ip, 100);
  assert_string_equal(c.allowed_origins, "");
  assert_string_equal(c.tls_cert, "");
  assert_string_equal(c.tls_key, "");
  assert_string_equal(c.log_level, "info");
  assert_string_equal(c.log_format, "text");
  assert_string_equal(c.instance_id, "");
  assert_int_equal(c.workers, 1);
  ns_config_free(&c);
}

/* ---- parsers ----------------------------------------------------------- */

typedef struct {
  const char *in;
  int rc;
  int64_t out;
} parse_case;

static void run_parse_cases(int (*parse)(const char *, int64_t *),
                            const parse_case *cases, size_t n) {
  for (size_t i = 0; i < n; i++) {
    int64_t out = -777;
    int rc = parse(cases[i].in, &out);
    if (rc != cases[i].rc)
      fail_msg("input \"%s\": rc %d, want %d", cases[i].in, rc, cases[i].rc);
    if (rc == 0 && out != cases[i].out)
      fail_msg("input \"%s\": %lld, want %lld", cases[i].in, (long long)out,
               (long long)cases[i].out);
    if (rc != 0 && out != -777)
      fail_msg("input \"%s\": output written on failure", cases[i].in);
  }
}

static void test_duration_forms(void **state) {
  static const parse_case cases[] = {
      {"250ms", 0, 250},
      {"0ms", 0, 0},
      {"30s", 0, S(30)},
      {"30", 0, S(30)},
      {"0", 0, 0},
      {"007s", 0, S(7)},
      {"5m", 0, M(5)},
      {"2h", 0, H(2)},
      {"7d", 0, D(7)},
      {"9223372036854775807ms", 0, INT64_MAX},
      {"106751991167d", 0, D(106751991167LL)},
  };
  run_parse_cases(ns_parse_duration_ms, cases, NS_ARRAY_SIZE(cases));
}

static void test_duration_malformed(void **state) {
  static const parse_case cases[] = {
      {"", NS_EINVAL, 0},
      {"s", NS_EINVAL, 0},
      {"ms", NS_EINVAL, 0},
      {"-5s", NS_EINVAL, 0},
      {"+5s", NS_EINVAL, 0},
      {" 5s", NS_EINVAL, 0},
      {"5s ", NS_EINVAL, 0},
      {"5 s", NS_EINVAL, 0},
      {"5x", NS_EINVAL, 0},
      {"5S", NS_EINVAL, 0},
      {"5sec", NS_EINVAL, 0},
      {"5mss", NS_EINVAL, 0},
      {"1.5h", NS_EINVAL, 0},
      {"5s5", NS_EINVAL, 0},
      {"0x10", NS_EINVAL, 0},
      {"5\n", NS_EINVAL, 0},
      {"7w", NS_EINVAL, 0},
      {"1e3", NS_EINVAL, 0},
      {"99999999999999999999x", NS_EINVAL, 0},
      {"99999999999999999999", NS_ERANGE, 0},
      {"9223372036854775808ms", NS_ERANGE, 0},
      {"9223372036854775807s", NS_ERANGE, 0},
      {"106751991168d", NS_ERANGE, 0},
      {NULL, NS_EINVAL, 0},
  };
  run_parse_cases(ns_parse_duration_ms, cases, NS_ARRAY_SIZE(cases));
}

static void test_size_forms(void **state) {
  static const parse_case cases[] = {
      {"0", 0, 0},
      {"65536", 0, 65536},
      {"64k", 0, 65536},
      {"64K", 0, 65536},
      {"1m", 0, 1048576},
      {"1M", 0, 1048576},
      {"0k", 0, 0},
      {"9223372036854775807", 0, INT64_MAX},
      {"9007199254740991k", 0, 9007199254740991LL * 1024},
      {"8796093022207m", 0, 8796093022207LL * 1048576},
  };
  run_parse_cases(ns_parse_size, cases, NS_ARRAY_SIZE(cases));
}

static void test_size_malformed(void **state) {
  static const parse_case cases[] = {
      {"", NS_EINVAL, 0},
      {"k", NS_EINVAL, 0},
      {"-1", NS_EINVAL, 0},
      {"+1", NS_EINVAL, 0},
      {"64kb", NS_EINVAL, 0},
      {"64KiB", NS_EINVAL, 0},
      {"64g", NS_EINVAL, 0},
      {"1.5m", NS_EINVAL, 0},
      {" 64k", NS_EINVAL, 0},
      {"64 k", NS_EINVAL, 0},
      {"64k ", NS_EINVAL, 0},
      {"64kk", NS_EINVAL, 0},
      {"0x40", NS_EINVAL, 0},
      {"64b", NS_EINVAL, 0},
      {"99999999999999999999", NS_ERANGE, 0},
      {"9007199254740992k", NS_ERANGE, 0},
      {"8796093022208m", NS_ERANGE, 0},
      {NULL, NS_EINVAL, 0},
  };
  run_parse_cases(ns_parse_size, cases, NS_ARRAY_SIZE(cases));
}

/* ---- ns_config_set ----------------------------------------------------- */

/* Reads back the numeric field a key name stores into. */
static int64_t num_of(const ns_config *c, const char *key) {
  static const struct {
    const char *key;
    size_t off;
  } map[] = {
      {"queue_max_messages", offsetof(ns_config, queue_max_messages)},
      {"queue_ttl", offsetof(ns_config, queue_ttl_ms)},
      {"heartbeat_interval", offsetof(ns_config, heartbeat_interval_ms)},
      {"idle_timeout", offsetof(ns_config, idle_timeout_ms)},
      {"max_message_bytes", offsetof(ns_config, max_message_bytes)},
      {"max_body_bytes", offsetof(ns_config, max_body_bytes)},
      {"max_outbound_bytes", offsetof(ns_config, max_outbound_bytes)},
      {"max_devices_per_user", offsetof(ns_config, max_devices_per_user)},
      {"presence_grace", offsetof(ns_config, presence_grace_ms)},
      {"client_msg_rate", offsetof(ns_config, client_msg_rate)},
      {"client_msg_burst", offsetof(ns_config, client_msg_burst)},
      {"handshake_rate_per_ip", offsetof(ns_config, handshake_rate_per_ip)},
      {"handshake_burst_per_ip", offsetof(ns_config, handshake_burst_per_ip)},
      {"workers", offsetof(ns_config, workers)},
  };
  for (size_t i = 0; i < NS_ARRAY_SIZE(map); i++)
    if (strcmp(map[i].key, key) == 0)
      return *(const int64_t *)(const void *)((const char *)c + map[i].off);
  fail_msg("no numeric key %s in the test map", key);
  return 0;
}

typedef struct {
  const char *key, *value;
  int64_t want;
} set_case;

static void test_set_valid_numbers(void **state) {
  static const set_case cases[] = {
      {"queue_max_messages", "1", 1},
      {"queue_max_messages", "1000000", 1000000},
      {"queue_ttl", "1s", S(1)},
      {"queue_ttl", "365d", D(365)},
      {"queue_ttl", "3600", H(1)},
      {"heartbeat_interval", "1h", H(1)},
      {"idle_timeout", "1500ms", 1500},
      {"max_message_bytes", "64", 64},
      {"max_message_bytes", "64m", 64LL << 20},
      {"max_body_bytes", "2K", 2048},
      {"max_outbound_bytes", "1k", 1024},
      {"max_outbound_bytes", "1024M", 1LL << 30},
      {"max_devices_per_user", "10000", 10000},
      {"presence_grace", "0", 0},
      {"presence_grace", "10m", M(10)},
      {"client_msg_rate", "0", 0},
      {"client_msg_burst", "1", 1},
      {"handshake_rate_per_ip", "0", 0},
      {"handshake_burst_per_ip", "1000000", 1000000},
      {"workers", "64", 64},
      {"workers", "01", 1},
  };
  ns_config c;
  char err[256];
  ns_config_defaults(&c);
  for (size_t i = 0; i < NS_ARRAY_SIZE(cases); i++) {
    int rc = ns_config_set(&c, cases[i].key, cases[i].value, err, sizeof err);
    if (rc != 0)
      fail_msg("%s = %s: rc %d (%s)", cases[i].key, cases[i].value, rc, err);
    assert_int_equal(num_of(&c, cases[i].key), cases[i].want);
  }
  ns_config_free(&c);
}

typedef struct {
  const char *key, *value, *msg;
} err_case;

static void run_err_cases(const err_case *cases, size_t n) {
  ns_config c;
  char err[256];
  ns_config_defaults(&c);
  for (size_t i = 0; i < n; i++) {
    char want_key[96];
    int64_t before = num_of(&c, cases[i].key);
    err[0] = '\0';
    assert_int_equal(
        ns_config_set(&c, cases[i].key, cases[i].value, err, sizeof err),
        NS_EINVAL);
    snprintf(want_key, sizeof want_key,
             "bad value for key '%s': ", cases[i].key);
    assert_contains(err, want_key);
    assert_contains(err, cases[i].msg);
    assert_int_equal(num_of(&c, cases[i].key), before); /* unchanged */
  }
  ns_config_free(&c);
}

static void test_set_range_errors(void **state) {
  static const err_case cases[] = {
      {"workers", "0", "'0' is out of range 1..64"},
      {"workers", "65", "'65' is out of range 1..64"},
      {"workers", "-1", "'-1' is out of range 1..64"},
      {"workers", "99999999999999999999", "out of range 1..64"},
      {"queue_max_messages", "0", "out of range 1..1000000"},
      {"queue_max_messages", "1000001", "out of range 1..1000000"},
      {"max_devices_per_user", "10001", "out of range 1..10000"},
      {"max_devices_per_user", "0", "out of range 1..10000"},
      {"client_msg_rate", "-1", "out of range 0..1000000"},
      {"client_msg_burst", "0", "out of range 1..1000000"},
      {"handshake_rate_per_ip", "-5", "out of range 0..1000000"},
      {"handshake_burst_per_ip", "0", "out of range 1..1000000"},
      {"queue_ttl", "0s", "'0s' is out of range 1s..365d"},
      {"queue_ttl", "366d", "out of range 1s..365d"},
      {"queue_ttl", "999ms", "out of range 1s..365d"},
      {"queue_ttl", "106751991168d", "out of range 1s..365d"},
      {"heartbeat_interval", "61m", "out of range 1s..1h"},
      {"idle_timeout", "25h", "out of range 1s..1d"},
      {"presence_grace", "11m", "out of range 0..10m"},
      {"max_message_bytes", "63", "out of range 64..64m"},
      {"max_message_bytes", "65m", "out of range 64..64m"},
      {"max_body_bytes", "1g", "expected a size like 64k, 1m"},
      {"max_outbound_bytes", "1023", "out of range 1k..1024m"},
      {"max_outbound_bytes", "1025m", "out of range 1k..1024m"},
  };
  run_err_cases(cases, NS_ARRAY_SIZE(cases));
}

static void test_set_syntax_errors(void **state) {
  static const err_case cases[] = {
      {"workers", "", "expected an integer, got ''"},
      {"workers", "1x", "expected an integer, got '1x'"},
      {"workers", "abc", "expected an integer"},
      {"workers", "4 ", "expected an integer"},
      {"workers", "--1", "expected an integer"},
      {"workers", "1s", "expected an integer"},
      {"queue_ttl", "7w", "expected a duration like 30s, 7d"},
      {"queue_ttl", "-7d", "expected a duration like 30s, 7d"},
      {"queue_ttl", "", "expected a duration like 30s, 7d"},
      {"heartbeat_interval", "30 s", "expected a duration"},
      {"max_message_bytes", "64kb", "expected a size like 64k, 1m"},
      {"max_message_bytes", "-1", "expected a size"},
  };
  run_err_cases(cases, NS_ARRAY_SIZE(cases));
}

static void test_set_strings_and_enums(void **state) {
  ns_config c;
  char err[256];
  ns_config_defaults(&c);
  assert_int_equal(
      ns_config_set(&c, "listen", "127.0.0.1:9000", err, sizeof err), 0);
  assert_string_equal(c.listen, "127.0.0.1:9000");
  assert_int_equal(ns_config_set(&c, "listen", "[::1]:9001", err, sizeof err),
                   0);
  assert_string_equal(c.listen, "[::1]:9001");
  assert_int_equal(ns_config_set(&c, "jwt_secret", "s3cret", err, sizeof err),
                   0);
  assert_string_equal(c.jwt_secret, "s3cret");
  assert_int_equal(ns_config_set(&c, "allowed_origins", "", err, sizeof err),
                   0);
  assert_string_equal(c.allowed_origins, "");

  static const char *const levels[] = {"debug", "info", "warn", "error"};
  for (size_t i = 0; i < NS_ARRAY_SIZE(levels); i++) {
    assert_int_equal(ns_config_set(&c, "log_level", levels[i], err, sizeof err),
                     0);
    assert_string_equal(c.log_level, levels[i]);
  }
  assert_int_equal(ns_config_set(&c, "log_format", "json", err, sizeof err), 0);
  assert_string_equal(c.log_format, "json");

  static const char *const bad_levels[] = {"verbose", "INFO", "", "warning",
                                           "inf"};
  for (size_t i = 0; i < NS_ARRAY_SIZE(bad_levels); i++) {
    assert_int_equal(
        ns_config_set(&c, "log_level", bad_levels[i], err, sizeof err),
        NS_EINVAL);
    assert_contains(err, "bad value for key 'log_level': expected one of "
                         "debug|info|warn|error");
    assert_string_equal(c.log_level, "error"); /* unchanged */
  }
  assert_int_equal(ns_config_set(&c, "log_format", "xml", err, sizeof err),
                   NS_EINVAL);
  assert_contains(err,
                  "bad value for key 'log_format': expected one of text|json");
  assert_string_equal(c.log_format, "json");
  ns_config_free(&c);
}

static void test_set_unknown_and_null(void **state) {
  ns_config c;
  char err[256];
  ns_config_defaults(&c);
  assert_int_equal(ns_config_set(&c, "nope", "1", err, sizeof err), NS_EINVAL);
  assert_string_equal(err, "unknown key 'nope'");
  assert_int_equal(ns_config_set(&c, "WORKERS", "2", err, sizeof err),
                   NS_EINVAL);
  assert_string_equal(err, "unknown key 'WORKERS'");
  assert_int_equal(ns_config_set(&c, "queue_ttl_ms", "2", err, sizeof err),
                   NS_EINVAL);
  assert_contains(err, "unknown key 'queue_ttl_ms'");
  assert_int_equal(ns_config_set(&c, "workers", NULL, err, sizeof err),
                   NS_EINVAL);
  assert_contains(err, "missing value for key 'workers'");
  assert_int_equal(ns_config_set(&c, NULL, "1", err, sizeof err), NS_EINVAL);
  /* No error buffer, or a tiny one: no crash, still an error. */
  assert_int_equal(ns_config_set(&c, "workers", "x", NULL, 0), NS_EINVAL);
  char tiny[8];
  assert_int_equal(ns_config_set(&c, "workers", "x", tiny, sizeof tiny),
                   NS_EINVAL);
  assert_int_equal(strlen(tiny), sizeof tiny - 1);
  assert_int_equal(c.workers, 1);
  ns_config_free(&c);
}

/* ---- file -------------------------------------------------------------- */

static void test_file_syntax(void **state) {
  static const char text[] =
      "# NotiSync test config\n"
      "\n"
      "   \t\n"
      "listen = 127.0.0.1:9100\n"
      "workers 4\n"
      "queue_ttl=2h\n"
      "  max_message_bytes   =   16k   # trailing comment\n"
      "jwt_secret = \"a # not a comment \\\"quoted\\\" \\\\ end\"  # real one\n"
      "jwt_issuer = iss#1\n"
      "tls_cert=#comment, so empty\n"
      "tls_key = # likewise\n"
      "allowed_origins =\n"
      "jwt_audience \"\"\n"
      "redis_prefix = \"  spaced  \"\n"
      "log_format = json\r\n"
      "instance_id = a\\b\n"
      "  # indented comment\n"
      "workers = 6\n"
      "log_level = warn"; /* no final newline */
  ns_config c;
  char err[256] = "", path[64];
  ns_config_defaults(&c);
  assert_int_equal(ns_config_set(&c, "allowed_origins", "x", err, sizeof err),
                   0);
  assert_int_equal(ns_config_set(&c, "tls_cert", "x", err, sizeof err), 0);
  assert_int_equal(ns_config_set(&c, "tls_key", "x", err, sizeof err), 0);
  int rc = load_text(&c, text, path, err, sizeof err);
  if (rc != 0)
    fail_msg("rc %d: %s", rc, err);
  assert_string_equal(c.listen, "127.0.0.1:9100");
  assert_int_equal(c.workers, 6); /* a later line wins */
  assert_int_equal(c.queue_ttl_ms, H(2));
  assert_int_equal(c.max_message_bytes, 16384);
  assert_string_equal(c.jwt_secret, "a # not a comment \"quoted\" \\ end");
  assert_string_equal(c.jwt_issuer, "iss#1");
  assert_string_equal(c.tls_cert, "");
  assert_string_equal(c.tls_key, "");
  assert_string_equal(c.allowed_origins, "");
  assert_string_equal(c.jwt_audience, "");
  assert_string_equal(c.redis_prefix, "  spaced  ");
  assert_string_equal(c.log_format, "json");
  assert_string_equal(c.instance_id, "a\\b");
  assert_string_equal(c.log_level, "warn");
  ns_config_free(&c);
}

typedef struct {
  const char *text;
  const char *msg; /* expected after "path:" */
} file_err_case;

static void test_file_errors(void **state) {
  static const file_err_case cases[] = {
      {"workers = 2\n\nqueue_ttl = 7w\n",
       ":3: bad value for key 'queue_ttl': expected a duration like 30s, 7d"},
      {"# c\nnope = 1\n", ":2: unknown key 'nope'"},
      {"workers = 0\n",
       ":1: bad value for key 'workers': '0' is out of range 1..64"},
      {"log_level = loud\n",
       ":1: bad value for key 'log_level': expected one of"},
      {"jwt_secret = \"abc\n", ":1: unterminated quoted value"},
      {"jwt_secret = \"abc\" def\n",
       ":1: unexpected text after the closing quote"},
      {"listen\n", ":1: missing value for key 'listen'"},
      {"listen   # just a comment\n", ":1: missing value for key 'listen'"},
      {"= 5\n", ":1: expected 'key = value'"},
      {"work-ers = 5\n", ":1: expected 'key = value'"},
      {"workers: 5\n", ":1: expected 'key = value'"},
      {"\"workers\" = 5\n", ":1: expected 'key = value'"},
      {"a\n", ":1: unknown key 'a'"},
      {"workers = 5 # ok\nworkers = 5x\n", ":2: bad value for key 'workers'"},
  };
  for (size_t i = 0; i < NS_ARRAY_SIZE(cases); i++) {
    ns_config c;
    char err[256] = "", path[64], want[128];
    ns_config_defaults(&c);
    assert_int_equal(load_text(&c, cases[i].text, path, err, sizeof err),
                     NS_EINVAL);
    snprintf(want, sizeof want, "%s%s", path, cases[i].msg);
    if (strncmp(err, want, strlen(want)) != 0)
      fail_msg("case %zu: got \"%s\", want prefix \"%s\"", i, err, want);
    ns_config_free(&c);
  }
}

static void test_file_nul_byte(void **state) {
  static const char text[] = "workers = 2\njwt_secret = ab\0cd\n";
  ns_config c;
  char err[256] = "", path[64];
  ns_config_defaults(&c);
  write_temp(path, text, sizeof text - 1);
  assert_int_equal(ns_config_load_file(&c, path, err, sizeof err), NS_EINVAL);
  unlink(path);
  assert_contains(err, ":2: NUL byte in line");
  assert_int_equal(c.workers, 2); /* lines before the bad one applied */
  assert_string_equal(c.jwt_secret, "");
  ns_config_free(&c);
}

static void test_file_unreadable(void **state) {
  ns_config c;
  char err[256] = "", dir[64];
  ns_config_defaults(&c);
  assert_int_equal(
      ns_config_load_file(&c, "/nonexistent/notisyncd.conf", err, sizeof err),
      -ENOENT);
  assert_contains(err, "/nonexistent/notisyncd.conf: ");
  strcpy(dir, "/tmp/test_config_dir_XXXXXX");
  assert_non_null(mkdtemp(dir));
  err[0] = '\0';
  assert_int_equal(ns_config_load_file(&c, dir, err, sizeof err), -EISDIR);
  assert_contains(err, dir);
  assert_int_equal(rmdir(dir), 0);
  ns_config_free(&c);
}

static void test_file_empty(void **state) {
  ns_config c, d;
  char err[256] = "", path[64];
  ns_config_defaults(&c);
  ns_config_defaults(&d);
  assert_int_equal(load_text(&c, "", path, err, sizeof err), 0);
  assert_int_equal(
      load_text(&c, "# only\n\n#comments\n", path, err, sizeof err), 0);
  assert_int_equal(c.queue_ttl_ms, d.queue_ttl_ms);
  assert_string_equal(c.listen, d.listen);
  ns_config_free(&c);
  ns_config_free(&d);
}

/* ns_config_load_text is the file parser over memory: same values, same
 * messages with the given name, an empty text sets nothing. */
static void test_load_text(void **state) {
  static const char text[] = "workers = 3\nqueue_ttl = \"2h\"  # c\n"
                             "log_format json\n";
  ns_config c, f;
  char err[256] = "", ferr[256] = "", path[64];
  ns_config_defaults(&c);
  ns_config_defaults(&f);
  assert_int_equal(ns_config_load_text(&c, text, sizeof text - 1, "mem", err,
                                       sizeof err), 0);
  assert_int_equal(load_text(&f, text, path, ferr, sizeof ferr), 0);
  assert_int_equal(c.workers, 3);
  assert_int_equal(c.workers, f.workers);
  assert_int_equal(c.queue_ttl_ms, H(2));
  assert_int_equal(c.queue_ttl_ms, f.queue_ttl_ms);
  assert_string_equal(c.log_format, "json");
  assert_int_equal(ns_config_load_text(&c, "", 0, "mem", err, sizeof err), 0);
  assert_int_equal(ns_config_load_text(&c, "workers = 2\nbogus = 1\n", 22,
                                       "mem", err, sizeof err), NS_EINVAL);
  assert_string_equal(err, "mem:2: unknown key 'bogus'");
  assert_int_equal(c.workers, 2); /* lines before the bad one applied */
  /* a NUL inside the text is refused as in a file */
  assert_int_equal(ns_config_load_text(&c, "workers = 4\0\n", 13, "mem", err,
                                       sizeof err), NS_EINVAL);
  assert_string_equal(err, "mem:1: NUL byte in line");
  ns_config_free(&c);
  ns_config_free(&f);
}

/* ---- environment ------------------------------------------------------- */

static void test_env(void **state) {
  char *envp[] = {
      "PATH=/usr/bin",
      "NOTISYNC_WORKERS=4",
      "NOTISYNC_QUEUE_TTL=1h",
      "NOTISYNC_JWT_SECRET=from-env",
      "NOTISYNC_log_format=json",     /* key names match in any case */
      "NOTISYNC_DEBUG_STALL_MS=5000", /* allow-listed: not a key, skipped */
      "NOTISYNC_ALLOWED_ORIGINS=",    /* empty string value */
      "NOTISYNC_WORKERS=5",           /* a later duplicate wins */
      "XNOTISYNC_WORKERS=9",          /* ignored: wrong prefix */
      "NOTISYNC-WORKERS=9",           /* ignored: wrong prefix, same length */
      "notisync_workers=9",           /* ignored: the prefix is upper case */
      "NOTISYNC",                     /* ignored: no prefix (no '_') */
      NULL,
  };
  ns_config c;
  char err[256] = "";
  ns_config_defaults(&c);
  assert_int_equal(
      ns_config_set(&c, "allowed_origins", "https://a", err, sizeof err), 0);
  int rc = ns_config_load_env(&c, envp, err, sizeof err);
  if (rc != 0)
    fail_msg("rc %d: %s", rc, err);
  assert_int_equal(c.workers, 5);
  assert_int_equal(c.queue_ttl_ms, H(1));
  assert_string_equal(c.jwt_secret, "from-env");
  assert_string_equal(c.log_format, "json");
  assert_string_equal(c.allowed_origins, "");
  assert_string_equal(c.listen, "0.0.0.0:8080");
  assert_int_equal(ns_config_load_env(&c, NULL, err, sizeof err), 0);
  ns_config_free(&c);
}

/* Every NOTISYNC_* variable that is neither a key nor on the allow-list
 * stops start-up, named in full, as an unknown key in the file does; the
 * config is left as it was. */
static void test_env_unknown(void **state) {
  static const struct {
    const char *entry; /* one environ entry */
    const char *want;  /* expected in the message */
  } cases[] = {
      {"NOTISYNC_QUEUE_MAX_MESAGES=10",
       "environment NOTISYNC_QUEUE_MAX_MESAGES: unknown key "
       "'queue_max_mesages'"},
      {"NOTISYNC_REDIS_SHARDS=3",
       "environment NOTISYNC_REDIS_SHARDS: unknown key 'redis_shards'"},
      {"NOTISYNC_UNKNOWN_THING=1", "NOTISYNC_UNKNOWN_THING: unknown key"},
      {"NOTISYNC_SVC_DIR=/tmp/x", "NOTISYNC_SVC_DIR: unknown key"},
      {"NOTISYNC_CONFIG=/etc/notisyncd.conf", "NOTISYNC_CONFIG: unknown key"},
      /* the allow-list is exact: the hook is read in upper case only */
      {"NOTISYNC_debug_stall_ms=1", "NOTISYNC_debug_stall_ms: unknown key"},
      {"NOTISYNC_DEBUG_STALL_MS_X=1", "NOTISYNC_DEBUG_STALL_MS_X: unknown key"},
      {"NOTISYNC_=x", "environment NOTISYNC_: unknown key ''"},
      {"NOTISYNC_LISTEN", "environment NOTISYNC_LISTEN: no '=' in the entry"},
      {"NOTISYNC_QUEUE TTL=1h", "NOTISYNC_QUEUE TTL: unknown key"},
  };
  char longname[200];
  memset(longname, 'A', sizeof longname - 1);
  memcpy(longname, "NOTISYNC_", 9);
  longname[sizeof longname - 3] = '=';
  longname[sizeof longname - 2] = '1';
  longname[sizeof longname - 1] = '\0';
  for (size_t i = 0; i <= NS_ARRAY_SIZE(cases); i++) {
    const char *entry = i < NS_ARRAY_SIZE(cases) ? cases[i].entry : longname;
    char *envp[] = {"NOTISYNC_WORKERS=3", (char *)entry, "NOTISYNC_QUEUE_TTL=1h",
                    NULL};
    ns_config c;
    char err[256] = "";
    ns_config_defaults(&c);
    int rc = ns_config_load_env(&c, envp, err, sizeof err);
    if (rc != NS_EINVAL)
      fail_msg("%s: rc %d, want NS_EINVAL (%s)", entry, rc, err);
    if (i < NS_ARRAY_SIZE(cases))
      assert_contains(err, cases[i].want);
    else
      assert_contains(err, "environment NOTISYNC_AAAAAAAA");
    /* nothing applied: an unknown name is found before any value is set */
    assert_int_equal(c.workers, 1);
    assert_int_equal(c.queue_ttl_ms, D(7));
    ns_config_free(&c);
  }
}

static void test_env_bad_value(void **state) {
  char *envp[] = {"NOTISYNC_WORKERS=2", "NOTISYNC_IDLE_TIMEOUT=soon", NULL};
  ns_config c;
  char err[256] = "";
  ns_config_defaults(&c);
  assert_int_equal(ns_config_load_env(&c, envp, err, sizeof err), NS_EINVAL);
  assert_contains(err, "environment NOTISYNC_IDLE_TIMEOUT: bad value for key "
                       "'idle_timeout': expected a duration like 30s, 7d");
  assert_int_equal(c.idle_timeout_ms, S(90));
  ns_config_free(&c);
}

/* The environment and the file give the same verdict on every value (the
 * one difference: a file value may be quoted and is trimmed, an environment
 * value is taken as it is, so the cases here need neither), and both
 * errors name the key. */
static void test_env_same_rules_as_file(void **state) {
  static const struct {
    const char *key, *value;
  } cases[] = {
      {"queue_max_messages", "10"},   {"queue_max_messages", "10x"},
      {"queue_max_messages", "0"},    {"queue_max_messages", "-1"},
      {"queue_max_messages", "99999999999999999999"},
      {"queue_ttl", "7d"},            {"queue_ttl", "7w"},
      {"queue_ttl", "0"},             {"max_body_bytes", "64k"},
      {"max_body_bytes", "64kb"},     {"max_body_bytes", "1"},
      {"log_format", "json"},         {"log_format", "xml"},
      {"log_level", "DEBUG"},         {"workers", "64"},
      {"workers", "65"},              {"workers", "4.0"},
      {"heartbeat_interval", "250ms"}, {"presence_grace", "0"},
      {"listen", "127.0.0.1:1"},      {"jwt_secret", "s"},
  };
  for (size_t i = 0; i < NS_ARRAY_SIZE(cases); i++) {
    char entry[128], line[128], upper[64], ferr[256] = "", eerr[256] = "";
    char path[64];
    size_t j;
    ns_config fc, ec;
    for (j = 0; cases[i].key[j]; j++)
      upper[j] = (char)(cases[i].key[j] >= 'a' && cases[i].key[j] <= 'z'
                            ? cases[i].key[j] - 'a' + 'A'
                            : cases[i].key[j]);
    upper[j] = '\0';
    snprintf(entry, sizeof entry, "NOTISYNC_%s=%s", upper, cases[i].value);
    snprintf(line, sizeof line, "%s = %s\n", cases[i].key, cases[i].value);
    char *envp[] = {entry, NULL};
    ns_config_defaults(&fc);
    ns_config_defaults(&ec);
    int frc = load_text(&fc, line, path, ferr, sizeof ferr);
    int erc = ns_config_load_env(&ec, envp, eerr, sizeof eerr);
    if (frc != erc)
      fail_msg("%s: file rc %d (%s), environment rc %d (%s)", entry, frc, ferr,
               erc, eerr);
    if (frc != 0) {
      char want[128];
      snprintf(want, sizeof want, "'%s'", cases[i].key);
      assert_contains(ferr, want);
      assert_contains(eerr, want);
      snprintf(want, sizeof want, "environment NOTISYNC_%s: ", upper);
      assert_contains(eerr, want);
    }
    ns_config_free(&fc);
    ns_config_free(&ec);
  }
}

static void test_env_over_file(void **state) {
  static const char text[] = "workers = 2\n"
                             "queue_ttl = 1d\n"
                             "log_level = debug\n"
                             "jwt_secret = from-file\n";
  char *envp[] = {"NOTISYNC_WORKERS=8", "NOTISYNC_JWT_SECRET=from-env", NULL};
  ns_config c;
  char err[256] = "", path[64];
  ns_config_defaults(&c);
  assert_int_equal(load_text(&c, text, path, err, sizeof err), 0);
  assert_int_equal(c.workers, 2);
  assert_int_equal(ns_config_load_env(&c, envp, err, sizeof err), 0);
  assert_int_equal(c.workers, 8);                /* env beats file */
  assert_string_equal(c.jwt_secret, "from-env"); /* env beats file */
  assert_int_equal(c.queue_ttl_ms, D(1));        /* file beats default */
  assert_string_equal(c.log_level, "debug");
  assert_int_equal(c.heartbeat_interval_ms, S(30)); /* default */
  assert_int_equal(ns_config_validate(&c, err, sizeof err), 0);
  ns_config_free(&c);
}

/* ---- validation -------------------------------------------------------- */

typedef struct {
  const char *key, *value; /* applied to defaults + jwt_secret */
  const char *key2, *value2;
  const char *msg; /* NULL = valid */
} validate_case;

static void test_validate(void **state) {
  static const validate_case cases[] = {
      {"jwt_secret", "k", NULL, NULL, NULL},
      /* no JWT key is not a validate error (test_need_jwt_key) */
      {"jwt_secret", "", NULL, NULL, NULL},
      {"jwt_secret", "", "jwt_public_key_file", "/etc/k.pem", NULL},
      {"idle_timeout", "30s", NULL, NULL,
       "bad value for key 'idle_timeout': must be greater than "
       "heartbeat_interval"},
      {"idle_timeout", "10s", "heartbeat_interval", "20s", "'idle_timeout'"},
      {"idle_timeout", "31s", NULL, NULL, NULL},
      {"tls_cert", "/c.pem", NULL, NULL, "'tls_cert' and 'tls_key'"},
      {"tls_key", "/k.pem", NULL, NULL, "'tls_cert' and 'tls_key'"},
      {"tls_key", "/k.pem", "tls_cert", "/c.pem", NULL},
      {"listen", "8080", NULL, NULL, "bad value for key 'listen'"},
      {"listen", ":8080", NULL, NULL, "bad value for key 'listen'"},
      {"listen", "host:", NULL, NULL, "bad value for key 'listen'"},
      {"listen", "host:0", NULL, NULL, "bad value for key 'listen'"},
      {"listen", "host:65536", NULL, NULL, "bad value for key 'listen'"},
      {"listen", "host:-80", NULL, NULL, "bad value for key 'listen'"},
      {"listen", "host:80x", NULL, NULL, "bad value for key 'listen'"},
      {"listen", "::1:80", NULL, NULL, "bad value for key 'listen'"},
      {"listen", "[::1:80", NULL, NULL, "bad value for key 'listen'"},
      {"listen", "[::]:65535", NULL, NULL, NULL},
      {"listen", "localhost:1", NULL, NULL, NULL},
      {"instance_id", "node-1.a:b_c", NULL, NULL, NULL},
      {"instance_id", "has space", NULL, NULL,
       "bad value for key 'instance_id'"},
      {"instance_id", "a{b}", NULL, NULL, "bad value for key 'instance_id'"},
      {"instance_id",
       "0123456789012345678901234567890123456789012345678901234567890123", NULL,
       NULL, NULL},
      {"instance_id",
       "01234567890123456789012345678901234567890123456789012345678901234",
       NULL, NULL, "bad value for key 'instance_id'"},
  };
  for (size_t i = 0; i < NS_ARRAY_SIZE(cases); i++) {
    const validate_case *t = &cases[i];
    ns_config c;
    char err[256] = "";
    ns_config_defaults(&c);
    assert_int_equal(ns_config_set(&c, "jwt_secret", "k", err, sizeof err), 0);
    assert_int_equal(ns_config_set(&c, t->key, t->value, err, sizeof err), 0);
    if (t->key2)
      assert_int_equal(ns_config_set(&c, t->key2, t->value2, err, sizeof err),
                       0);
    int rc = ns_config_validate(&c, err, sizeof err);
    if (!t->msg && rc != 0)
      fail_msg("case %zu (%s=%s): rc %d: %s", i, t->key, t->value, rc, err);
    if (t->msg) {
      if (rc != NS_EINVAL)
        fail_msg("case %zu (%s=%s): rc %d, want NS_EINVAL", i, t->key, t->value,
                 rc);
      assert_contains(err, t->msg);
    }
    ns_config_free(&c);
  }
}

/* A JWT key is a rule of serve and token, not of every command. */
static void test_need_jwt_key(void **state) {
  ns_config c;
  char err[256] = "";
  (void)state;
  ns_config_defaults(&c);
  assert_int_equal(ns_config_validate(&c, err, sizeof err), 0);
  assert_int_equal(ns_config_need_jwt_key(&c, err, sizeof err), NS_EINVAL);
  assert_contains(err, "'jwt_secret'");
  assert_contains(err, "'jwt_public_key_file'");
  assert_int_equal(ns_config_set(&c, "jwt_public_key_file", "/k.pem", err, sizeof err), 0);
  assert_int_equal(ns_config_need_jwt_key(&c, err, sizeof err), 0);
  ns_config_free(&c);
}

/* The struct is public, so validate re-checks what a direct edit can break. */
static void test_validate_direct_edits(void **state) {
  ns_config c;
  char err[256] = "";
  ns_config_defaults(&c);
  assert_int_equal(ns_config_set(&c, "jwt_secret", "k", err, sizeof err), 0);
  assert_int_equal(ns_config_validate(&c, err, sizeof err), 0);

  c.workers = 0;
  assert_int_equal(ns_config_validate(&c, err, sizeof err), NS_EINVAL);
  assert_contains(err, "bad value for key 'workers'");
  c.workers = 1;

  c.queue_ttl_ms = -1000;
  assert_int_equal(ns_config_validate(&c, err, sizeof err), NS_EINVAL);
  assert_contains(err, "bad value for key 'queue_ttl': '-1s' is out of range");
  c.queue_ttl_ms = D(7);

  free(c.log_level);
  c.log_level = ns_xstrdup("trace");
  assert_int_equal(ns_config_validate(&c, err, sizeof err), NS_EINVAL);
  assert_contains(err, "bad value for key 'log_level'");
  free(c.log_level);
  c.log_level = ns_xstrdup("debug");
  assert_int_equal(ns_config_validate(&c, err, sizeof err), 0);

  free(c.redis_url);
  c.redis_url = NULL;
  assert_int_equal(ns_config_validate(&c, err, sizeof err), NS_EINVAL);
  assert_string_equal(err, "key 'redis_url' is not set");
  ns_config_free(&c);
}

/* ---- help, free -------------------------------------------------------- */

static void test_help_lists_every_key(void **state) {
  static const char *const names[] = {
      "listen",
      "redis_url",
      "redis_prefix",
      "database_url",
      "jwt_secret",
      "jwt_public_key_file",
      "jwt_issuer",
      "jwt_audience",
      "queue_max_messages",
      "queue_ttl",
      "heartbeat_interval",
      "idle_timeout",
      "max_message_bytes",
      "max_body_bytes",
      "max_outbound_bytes",
      "max_devices_per_user",
      "presence_grace",
      "client_msg_rate",
      "client_msg_burst",
      "handshake_rate_per_ip",
      "handshake_burst_per_ip",
      "allowed_origins",
      "tls_cert",
      "tls_key",
      "log_level",
      "log_format",
      "instance_id",
      "workers",
  };
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  assert_non_null(f);
  ns_config_print_help(f);
  assert_int_equal(fclose(f), 0);
  for (size_t i = 0; i < NS_ARRAY_SIZE(names); i++) {
    char want[64];
    snprintf(want, sizeof want, "\n  %s = \"", names[i]);
    assert_contains(buf, want);
    /* every listed key is really in the table (known to the setter) */
    ns_config c;
    char err[256] = "";
    ns_config_defaults(&c);
    ns_config_set(&c, names[i], "", err, sizeof err);
    if (strstr(err, "unknown key"))
      fail_msg("%s: %s", names[i], err);
    ns_config_free(&c);
  }
  assert_contains(buf, "  queue_ttl = \"7d\"\n      duration 1s..365d: ");
  assert_contains(buf, "  max_outbound_bytes = \"1m\"\n      size 1k..1024m: ");
  assert_contains(
      buf, "  log_level = \"info\"\n      one of debug|info|warn|error: ");
  assert_contains(buf, "  workers = \"1\"\n      integer 1..64: ");
  free(buf);
}

static void test_free_is_idempotent(void **state) {
  ns_config c;
  ns_config_defaults(&c);
  ns_config_free(&c);
  assert_null(c.listen);
  assert_null(c.log_level);
  assert_int_equal(c.workers, 0);
  ns_config_free(&c); /* idempotent */
  ns_config_free(NULL);
  ns_config_defaults(&c); /* reusable after free */
  assert_string_equal(c.listen, "0.0.0.0:8080");
  ns_config_free(&c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_duration_forms),
      cmocka_unit_test(test_duration_malformed),
      cmocka_unit_test(test_size_forms),
      cmocka_unit_test(test_size_malformed),
      cmocka_unit_test(test_set_valid_numbers),
      cmocka_unit_test(test_set_range_errors),
      cmocka_unit_test(test_set_syntax_errors),
      cmocka_unit_test(test_set_strings_and_enums),
      cmocka_unit_test(test_set_unknown_and_null),
      cmocka_unit_test(test_file_syntax),
      cmocka_unit_test(test_file_errors),
      cmocka_unit_test(test_file_nul_byte),
      cmocka_unit_test(test_file_unreadable),
      cmocka_unit_test(test_file_empty),
      cmocka_unit_test(test_load_text),
      cmocka_unit_test(test_env),
      cmocka_unit_test(test_env_unknown),
      cmocka_unit_test(test_env_bad_value),
      cmocka_unit_test(test_env_same_rules_as_file),
      cmocka_unit_test(test_env_over_file),
      cmocka_unit_test(test_validate),
      cmocka_unit_test(test_validate_direct_edits),
      cmocka_unit_test(test_need_jwt_key),
      cmocka_unit_test(test_help_lists_every_key),
      cmocka_unit_test(test_free_is_idempotent),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
