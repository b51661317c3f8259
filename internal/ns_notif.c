/*
 * ns_notif.c -- validation of producer notifications (see ns_notif.h).
 *
 * SPEC §6 fields first, then the optional SPEC §9 fields (data, url, tags,
 * collapse_key, ttl / expires_at, deliver_at).  Every refusal names the
 * field, with the batch prefix, in `field` and at the start of `message`.
 * JSON null is the same as an absent field for every optional one.  The
 * clock and the two settings come from ns_notif_limits, so this file reads
 * no clock and no config: the same input and limits give the same answer.
 */
#include "ns_notif.h"

#include <ctype.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ns_common.h"
#include "ns_proto.h"

static int bad(ns_notif_err *err, int status, const char *prefix,
               const char *field, const char *msg) {
  err->status = status;
  err->stale = 0;
  if (!*field) {
    /* the item itself: "notifications[3]", or "" for a single body */
    size_t n = strlen(prefix);
    if (n && prefix[n - 1] == '.')
      n--;
    snprintf(err->field, sizeof(err->field), "%.*s", (int)n, prefix);
    snprintf(err->message, sizeof(err->message), "%s%s%s", err->field,
             n ? ": " : "the body ", msg);
    return status == 403 ? NS_EFORBIDDEN : NS_EINVAL;
  }
  snprintf(err->field, sizeof(err->field), "%s%s", prefix, field);
  snprintf(err->message, sizeof(err->message), "%s%s: %s", prefix, field, msg);
  return status == 403 ? NS_EFORBIDDEN : NS_EINVAL;
}

/* Reads optional/required string `key` (1..max bytes of valid UTF-8; empty
 * allowed when allow_empty).  Returns 1 present, 0 absent, -1 invalid. */
static int text_field(json_object *o, const char *key, size_t max,
                      int allow_empty, const char **out) {
  json_object *v;
  const char *s;
  size_t n;
  *out = NULL;
  if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
    return 0;
  if (!json_object_is_type(v, json_type_string))
    return -1;
  s = json_object_get_string(v);
  n = (size_t)json_object_get_string_len(v);
  if (n > max || (!allow_empty && n == 0) || strlen(s) != n ||
      !ns_proto_utf8_valid(s, n))
    return -1;
  *out = s;
  return 1;
}

static int required(json_object *o, const char *key, size_t max,
                    const char **out, const char *prefix, ns_notif_err *err) {
  char msg[96];
  int rc = text_field(o, key, max, 0, out);
  if (rc == 1)
    return 0;
  snprintf(msg, sizeof(msg), "%s (a string of 1-%zu bytes of UTF-8)",
           rc == 0 ? "is required" : "is invalid", max);
  return bad(err, 400, prefix, key, msg);
}

/* ------------------------------------------------------------------ */
/* SPEC §9 fields                                                       */

/* collapse_key is the device_id byte set and length; tags are device
 * names (UTF-8 without control characters) cut to 32 bytes.  The
 * validators of ns_proto are reused rather than written again. */
_Static_assert(NS_NOTIF_COLLAPSE_MAX == NS_DEVICE_ID_MAX,
               "collapse_key reuses ns_proto_valid_device_id");
_Static_assert(NS_NOTIF_TAG_MAX <= NS_DEVICE_NAME_MAX,
               "tags reuse ns_proto_valid_device_name");

/* The optional member `key`: 1 with *v set when present and not null. */
static int optional(json_object *o, const char *key, json_object **v) {
  return json_object_object_get_ex(o, key, v) &&
         !json_object_is_type(*v, json_type_null);
}

/* 1 and s/n when `v` is a string without an escaped NUL. */
static int plain_string(json_object *v, const char **s, size_t *n) {
  if (!json_object_is_type(v, json_type_string))
    return 0;
  *s = json_object_get_string(v);
  *n = (size_t)json_object_get_string_len(v);
  return strlen(*s) == *n;
}

static int parse_data(json_object *o, const char *prefix,
                      const ns_notif_limits *lim, ns_notif_in *out,
                      ns_notif_err *err) {
  json_object *v;
  const char *js;
  size_t len = 0;
  char msg[96];
  if (!optional(o, "data", &v))
    return 0;
  if (!json_object_is_type(v, json_type_object))
    return bad(err, 400, prefix, "data", "must be a JSON object");
  /* Measured in the plain form; NULL only when json-c runs out of memory,
   * which is answered like an object too large to measure. */
  js = json_object_to_json_string_length(v, JSON_C_TO_STRING_PLAIN, &len);
  if (!js || (uint64_t)len > (uint64_t)NS_MAX(lim->max_data_bytes, 0)) {
    snprintf(msg, sizeof(msg),
             "must be at most %" PRId64 " bytes serialized (max_data_bytes)",
             lim->max_data_bytes);
    return bad(err, 400, prefix, "data", msg);
  }
  out->data = v;
  return 0;
}

/* 1 when s[0..n) starts with the lower-case ASCII `lit`, in any case. */
static int prefix_nocase(const char *s, size_t n, const char *lit) {
  size_t i, l = strlen(lit);
  if (n < l)
    return 0;
  for (i = 0; i < l; i++)
    if (tolower((unsigned char)s[i]) != lit[i])
      return 0;
  return 1;
}

/* An absolute http/https URL (scheme in any case) of at most 2048 bytes of
 * UTF-8 without spaces or control bytes, whose authority (up to the first
 * '/', '?' or '#') is not empty.  Nothing more is parsed: the URL is handed
 * to the client as it came. */
static int valid_url(const char *s, size_t n) {
  size_t i, host;
  if (n > NS_NOTIF_URL_MAX || !ns_proto_utf8_valid(s, n))
    return 0;
  for (i = 0; i < n; i++)
    if ((unsigned char)s[i] <= 0x20 || s[i] == 0x7f)
      return 0;
  if (prefix_nocase(s, n, "http://"))
    host = 7;
  else if (prefix_nocase(s, n, "https://"))
    host = 8;
  else
    return 0;
  return host < n && s[host] != '/' && s[host] != '?' && s[host] != '#';
}

static int parse_url(json_object *o, const char *prefix, ns_notif_in *out,
                     ns_notif_err *err) {
  json_object *v;
  const char *s;
  size_t n;
  if (!optional(o, "url", &v))
    return 0;
  if (!json_object_is_type(v, json_type_string))
    return bad(err, 400, prefix, "url", "must be a string");
  s = json_object_get_string(v);
  n = (size_t)json_object_get_string_len(v);
  if (!valid_url(s, n)) /* an escaped NUL is a control byte: refused */
    return bad(err, 400, prefix, "url",
               "must be an absolute http or https URL of at most 2048 bytes");
  out->url = s;
  return 0;
}

static int parse_tags(json_object *o, const char *prefix, ns_notif_in *out,
                      ns_notif_err *err) {
  json_object *v;
  size_t count, i, j;
  char msg[112];
  if (!optional(o, "tags", &v))
    return 0;
  if (!json_object_is_type(v, json_type_array) ||
      (count = json_object_array_length(v)) > NS_NOTIF_TAGS_MAX)
    return bad(err, 400, prefix, "tags",
               "must be an array of at most 10 strings");
  for (i = 0; i < count; i++) {
    json_object *t = json_object_array_get_idx(v, i);
    const char *s;
    size_t n;
    if (!plain_string(t, &s, &n) || n > NS_NOTIF_TAG_MAX ||
        !ns_proto_valid_device_name(s, n)) {
      snprintf(msg, sizeof(msg),
               "element %zu must be a string of 1-%d bytes of UTF-8 without "
               "control characters", i, NS_NOTIF_TAG_MAX);
      return bad(err, 400, prefix, "tags", msg);
    }
    for (j = 0; j < i; j++) {
      json_object *u = json_object_array_get_idx(v, j);
      if ((size_t)json_object_get_string_len(u) == n &&
          memcmp(json_object_get_string(u), s, n) == 0) {
        snprintf(msg, sizeof(msg), "element %zu repeats element %zu", i, j);
        return bad(err, 400, prefix, "tags", msg);
      }
    }
  }
  out->tags = v;
  return 0;
}

static int parse_collapse(json_object *o, const char *prefix,
                          ns_notif_in *out, ns_notif_err *err) {
  json_object *v;
  const char *s;
  size_t n;
  if (!optional(o, "collapse_key", &v))
    return 0;
  if (!json_object_is_type(v, json_type_string) ||
      !ns_proto_valid_device_id((s = json_object_get_string(v)),
                                (n = (size_t)json_object_get_string_len(v))))
    return bad(err, 400, prefix, "collapse_key",
               "must be 1-64 bytes of [A-Za-z0-9_.:-]");
  out->collapse_key = s;
  return 0;
}

/* An RFC 3339 member `key` (present, not null) into *ms, checked to lie in
 * (now, now + horizon_ms].  `horizon` words the bound in the message. */
static int time_in_window(json_object *v, const char *prefix, const char *key,
                          const ns_notif_limits *lim, int64_t horizon_ms,
                          const char *horizon, int64_t *ms,
                          ns_notif_err *err) {
  const char *s;
  size_t n;
  char msg[96];
  if (!plain_string(v, &s, &n) || ns_notif_parse_time(s, ms) != 0)
    return bad(err, 400, prefix, key,
               "must be an RFC 3339 timestamp with an offset");
  if (lim->any_time)
    return 0;
  if (*ms <= lim->now_ms) {
    bad(err, 400, prefix, key, "must be in the future");
    err->stale = 1;
    return NS_EINVAL;
  }
  if (*ms - lim->now_ms > horizon_ms) {
    snprintf(msg, sizeof(msg), "must be at most %s from now", horizon);
    return bad(err, 400, prefix, key, msg);
  }
  return 0;
}

/* ttl or expires_at (not both) into out->expires_ms; *from_ttl tells the
 * later check which of the two to name. */
static int parse_expiry(json_object *o, const char *prefix,
                        const ns_notif_limits *lim, ns_notif_in *out,
                        int *from_ttl, ns_notif_err *err) {
  json_object *ttl, *exp;
  int has_ttl = optional(o, "ttl", &ttl), has_exp = optional(o, "expires_at", &exp);
  int64_t max_s = NS_MAX(lim->queue_ttl_ms, 0) / 1000, t;
  char msg[96];
  if (has_ttl && has_exp)
    return bad(err, 400, prefix, "ttl", "must not be given with expires_at");
  if (has_exp) {
    snprintf(msg, sizeof(msg), "queue_ttl (%" PRId64 " s)", max_s);
    return time_in_window(exp, prefix, "expires_at", lim, lim->queue_ttl_ms,
                          msg, &out->expires_ms, err);
  }
  if (!has_ttl)
    return 0;
  /* json_type_int only: 1.5, 5.0 and "5" are refused.  A number past
   * INT64_MAX reads as INT64_MAX and fails the range check. */
  if (!json_object_is_type(ttl, json_type_int) ||
      (t = json_object_get_int64(ttl)) < 0 || t > max_s) {
    snprintf(msg, sizeof(msg),
             "must be an integer number of seconds 0-%" PRId64 " (queue_ttl)",
             max_s);
    return bad(err, 400, prefix, "ttl", msg);
  }
  out->expires_ms = lim->now_ms + t * 1000;
  out->live_only = t == 0;
  *from_ttl = 1;
  return 0;
}

/* The SPEC §9 fields, after the SPEC §6 ones. */
static int parse_v2(json_object *o, const char *prefix,
                    const ns_notif_limits *lim, ns_notif_in *out,
                    ns_notif_err *err) {
  json_object *v;
  int from_ttl = 0, rc;
  if ((rc = parse_data(o, prefix, lim, out, err)) != 0 ||
      (rc = parse_url(o, prefix, out, err)) != 0 ||
      (rc = parse_tags(o, prefix, out, err)) != 0 ||
      (rc = parse_collapse(o, prefix, out, err)) != 0 ||
      (rc = parse_expiry(o, prefix, lim, out, &from_ttl, err)) != 0)
    return rc;
  if (optional(o, "deliver_at", &v) &&
      (rc = time_in_window(v, prefix, "deliver_at", lim,
                           NS_NOTIF_SCHEDULE_MAX_MS, "30 days",
                           &out->deliver_ms, err)) != 0)
    return rc;
  /* Decided with the lead: a notification that would expire at or before
   * its delivery time could never be delivered, so it is refused rather
   * than stored to expire unseen. */
  if (out->deliver_ms && (out->expires_ms || out->live_only) &&
      out->expires_ms <= out->deliver_ms)
    return bad(err, 400, prefix, from_ttl ? "ttl" : "expires_at",
               "would expire before delivery (at or before deliver_at)");
  return 0;
}

int ns_notif_parse(json_object *o, const ns_principal *who, const char *prefix,
                   const ns_notif_limits *lim, ns_notif_in *out,
                   ns_notif_err *err) {
  const char *s;
  json_object *v;
  int rc;
  memset(out, 0, sizeof(*out));
  if (!o || !json_object_is_type(o, json_type_object))
    return bad(err, 400, prefix, "", "must be a JSON object");
  rc = text_field(o, "id", 36, 0, &s);
  if (rc < 0 || (rc == 1 && !ns_proto_valid_uuid(s, strlen(s))))
    return bad(err, 400, prefix, "id", "must be a UUID");
  if (rc == 1) {
    ns_proto_uuid_lower(out->id, s, 36);
  } else {
    ns_notif_uuid(out->id);
  }
  rc = text_field(o, "user_id", NS_SUB_MAX, 0, &s);
  if (rc < 0)
    return bad(err, 400, prefix, "user_id", "must be a string of 1-128 bytes");
  if (rc == 1 && !who->is_service && strcmp(s, who->sub) != 0)
    return bad(err, 403, prefix, "user_id",
               "a user token may only post for its own user");
  if (rc == 0 && who->is_service)
    return bad(err, 400, prefix, "user_id", "is required with a service token");
  snprintf(out->user_id, sizeof(out->user_id), "%s", rc == 1 ? s : who->sub);
  if (required(o, "app_name", 128, &out->app_name, prefix, err) ||
      required(o, "title", 512, &out->title, prefix, err))
    return err->status == 403 ? NS_EFORBIDDEN : NS_EINVAL;
  if (text_field(o, "body", 8192, 1, &out->body) != 1)
    return bad(err, 400, prefix, "body",
               "is required (a string of at most 8192 bytes of UTF-8)");
  if (text_field(o, "category", 64, 1, &out->category) < 0)
    return bad(err, 400, prefix, "category",
               "must be a string of at most 64 bytes");
  out->priority = 0;
  if (json_object_object_get_ex(o, "priority", &v) &&
      !json_object_is_type(v, json_type_null)) {
    int64_t p;
    if (!json_object_is_type(v, json_type_int))
      return bad(err, 400, prefix, "priority", "must be an integer -2..2");
    p = json_object_get_int64(v);
    if (p < -2 || p > 2)
      return bad(err, 400, prefix, "priority", "must be an integer -2..2");
    out->priority = (int)p;
  }
  rc = text_field(o, "source_device", NS_DEVICE_ID_MAX, 0, &s);
  if (rc < 0 || (rc == 1 && !ns_proto_valid_device_id(s, strlen(s))))
    return bad(err, 400, prefix, "source_device", "must be a device_id");
  if (rc == 1)
    snprintf(out->source_device, sizeof(out->source_device), "%s", s);
  return parse_v2(o, prefix, lim, out, err);
}

/* ------------------------------------------------------------------ */
/* RFC 3339                                                             */

/* Reads exactly `n` decimal digits at s into *v; 0 when one is not a digit
 * (a NUL stops it, so a short string is never read past). */
static int fixed_digits(const char *s, size_t n, int *v) {
  size_t i;
  *v = 0;
  for (i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return 0;
    *v = *v * 10 + (s[i] - '0');
  }
  return 1;
}

static int days_in_month(int y, int m) {
  static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return m == 2 ? 28 + leap : days[m - 1];
}

/* Days from 1970-01-01 to the proleptic Gregorian date y-m-d (negative
 * before it), counted in 400-year eras of 146097 days from 0000-03-01 so
 * that February, with its leap day, ends each counted year.  No libc:
 * timegm would be a GNU extension and mktime depends on TZ. */
static int64_t days_from_civil(int y, int m, int d) {
  int64_t yy = y - (m <= 2), era = (yy >= 0 ? yy : yy - 399) / 400;
  int64_t yoe = yy - era * 400;                                /* 0..399 */
  int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1; /* 0..365 */
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;       /* 0..146096 */
  return era * 146097 + doe - 719468;
}

/* ns_notif_parse_time: see ns_notif.h.  Leap seconds (:60) are refused:
 * they cannot be told apart from the next second in ms since the epoch.
 * "-00:00" (offset unknown, RFC 3339 §4.3) is read as UTC. */
int ns_notif_parse_time(const char *s, int64_t *ms) {
  int y, mo, d, h, mi, sec, oh = 0, om = 0, frac = 0, sign = 0, nd;
  int64_t secs;
  if (!s || !fixed_digits(s, 4, &y) || s[4] != '-' ||
      !fixed_digits(s + 5, 2, &mo) || s[7] != '-' ||
      !fixed_digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') ||
      !fixed_digits(s + 11, 2, &h) || s[13] != ':' ||
      !fixed_digits(s + 14, 2, &mi) || s[16] != ':' ||
      !fixed_digits(s + 17, 2, &sec))
    return NS_EINVAL;
  s += 19;
  if (*s == '.') { /* 1-9 digits; the first three are the ms, the rest cut */
    for (s++, nd = 0; *s >= '0' && *s <= '9'; s++, nd++)
      if (nd < 3)
        frac = frac * 10 + (*s - '0');
    if (nd < 1 || nd > 9)
      return NS_EINVAL;
    for (; nd < 3; nd++)
      frac *= 10;
  }
  if (*s == 'Z' || *s == 'z') {
    s++;
  } else if (*s == '+' || *s == '-') {
    sign = *s == '-' ? -1 : 1;
    if (!fixed_digits(s + 1, 2, &oh) || s[3] != ':' ||
        !fixed_digits(s + 4, 2, &om) || oh > 23 || om > 59)
      return NS_EINVAL;
    s += 6;
  } else {
    return NS_EINVAL;
  }
  if (*s != '\0' || mo < 1 || mo > 12 || d < 1 ||
      d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 59)
    return NS_EINVAL;
  secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec -
         sign * (oh * 3600 + om * 60);
  *ms = secs * 1000 + frac;
  return 0;
}

void ns_notif_uuid(char *out) {
  unsigned char b[16];
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  size_t i;
  ssize_t got = fd >= 0 ? read(fd, b, sizeof(b)) : -1;
  if (fd >= 0)
    close(fd);
  if (got != (ssize_t)sizeof(b)) {
    /* No entropy source: fall back to time and address bits (unique, not
     * secret: ids are not capabilities). */
    int64_t t = ns_now_ms() ^ ((int64_t)(uintptr_t)&b << 16);
    for (i = 0; i < sizeof(b); i++)
      b[i] = (unsigned char)(t >> ((i % 8) * 8)) ^ (unsigned char)(i * 37);
  }
  b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
  b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
  snprintf(out, 37,
           "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
           b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10],
           b[11], b[12], b[13], b[14], b[15]);
}
