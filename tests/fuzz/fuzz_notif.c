/*
 * fuzz_notif.c -- REST producer bodies: strict JSON parse, then validation of
 * a single notification and of each item of a batch, for a user token and a
 * service token, under two sets of limits (the defaults, and small ones so
 * the size and time bounds are within the fuzzer's reach).  Checks the
 * invariants of accepted input, the SPEC §9 fields restated here
 * independently of ns_notif.c, and ns_notif_parse_time against glibc's
 * timegm on the raw input.
 */
#define _GNU_SOURCE /* timegm */
#include <json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ns_common.h"
#include "ns_notif.h"
#include "ns_proto.h"

#define CHECK(cond)  \
  do {               \
    if (!(cond))     \
      abort();       \
  } while (0)

static const ns_notif_limits limits[] = {
    {1780000000000LL, 4096, 7LL * 86400 * 1000, 0}, /* 2026-05-28T20:26:40Z */
    {1780000000000LL, 16, 3600LL * 1000, 0},
    {1780000000000LL, 4096, 7LL * 86400 * 1000, 1}, /* a stored one's retry */
};

/* The member `key` when present and not null, else NULL. */
static json_object *member(json_object *o, const char *key) {
  json_object *v;
  return json_object_object_get_ex(o, key, &v) ? v : NULL;
}

static int no_control(const char *s, size_t n, unsigned char below) {
  size_t i;
  for (i = 0; i < n; i++)
    if ((unsigned char)s[i] < below || s[i] == 0x7f)
      return 0;
  return 1;
}

static int lower_eq(const char *s, const char *lit, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    if ((s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]) != lit[i])
      return 0;
  return 1;
}

static void check_url(const char *u) {
  size_t n = strlen(u), h;
  CHECK(n <= NS_NOTIF_URL_MAX && ns_proto_utf8_valid(u, n));
  CHECK(no_control(u, n, 0x21));
  if (n >= 7 && lower_eq(u, "http://", 7)) {
    h = 7;
  } else {
    CHECK(n >= 8 && lower_eq(u, "https://", 8));
    h = 8;
  }
  CHECK(h < n && !strchr("/?#", u[h]));
}

static void check_tags(json_object *t) {
  size_t i, j, n = json_object_array_length(t);
  CHECK(json_object_is_type(t, json_type_array) && n <= NS_NOTIF_TAGS_MAX);
  for (i = 0; i < n; i++) {
    json_object *e = json_object_array_get_idx(t, i);
    const char *s = json_object_get_string(e);
    size_t l = (size_t)json_object_get_string_len(e);
    CHECK(json_object_is_type(e, json_type_string));
    CHECK(l >= 1 && l <= NS_NOTIF_TAG_MAX && strlen(s) == l);
    CHECK(ns_proto_utf8_valid(s, l) && no_control(s, l, 0x20));
    for (j = 0; j < i; j++)
      CHECK(strcmp(json_object_get_string(json_object_array_get_idx(t, j)), s));
  }
}

static void check_collapse(const char *k) {
  size_t i, n = strlen(k);
  CHECK(n >= 1 && n <= NS_NOTIF_COLLAPSE_MAX);
  for (i = 0; i < n; i++)
    CHECK((k[i] >= 'a' && k[i] <= 'z') || (k[i] >= 'A' && k[i] <= 'Z') ||
          (k[i] >= '0' && k[i] <= '9') || strchr("_.:-", k[i]));
}

/* The §9 fields of an accepted notification `o` against `lim`. */
static void check_v2(json_object *o, const ns_notif_in *in,
                     const ns_notif_limits *lim) {
  json_object *ttl = member(o, "ttl"), *exp = member(o, "expires_at");
  CHECK((in->data != NULL) == (member(o, "data") != NULL));
  if (in->data) {
    CHECK(in->data == member(o, "data"));
    CHECK(json_object_is_type(in->data, json_type_object));
    CHECK((int64_t)strlen(json_object_to_json_string_ext(
              in->data, JSON_C_TO_STRING_PLAIN)) <= lim->max_data_bytes);
  }
  CHECK((in->url != NULL) == (member(o, "url") != NULL));
  if (in->url)
    check_url(in->url);
  CHECK((in->tags != NULL) == (member(o, "tags") != NULL));
  if (in->tags)
    check_tags(in->tags);
  CHECK((in->collapse_key != NULL) == (member(o, "collapse_key") != NULL));
  if (in->collapse_key)
    check_collapse(in->collapse_key);
  CHECK(!(ttl && exp));
  if (ttl) {
    int64_t t = json_object_get_int64(ttl);
    CHECK(json_object_is_type(ttl, json_type_int));
    CHECK(t >= 0 && t <= lim->queue_ttl_ms / 1000);
    CHECK(in->expires_ms == lim->now_ms + t * 1000 && in->live_only == (t == 0));
  } else {
    CHECK(in->live_only == 0);
    CHECK((in->expires_ms != 0) == (exp != NULL));
  }
  if (exp && !lim->any_time)
    CHECK(in->expires_ms > lim->now_ms &&
          in->expires_ms <= lim->now_ms + lim->queue_ttl_ms);
  CHECK((in->deliver_ms != 0) == (member(o, "deliver_at") != NULL));
  if (in->deliver_ms) {
    CHECK(lim->any_time || (in->deliver_ms > lim->now_ms &&
                            in->deliver_ms <= lim->now_ms + NS_NOTIF_SCHEDULE_MAX_MS));
    CHECK(!(ttl || exp) || in->expires_ms > in->deliver_ms);
  }
}

static void check(json_object *o, const ns_principal *who,
                  const ns_notif_limits *lim, const char *prefix) {
  ns_notif_in in;
  ns_notif_err err;
  if (ns_notif_parse(o, who, prefix, lim, &in, &err) == 0) {
    CHECK(strlen(in.id) == 36 && ns_proto_valid_uuid(in.id, 36));
    CHECK(in.app_name && in.title && in.body && in.priority >= -2 &&
          in.priority <= 2 && strlen(in.title) <= 512 && in.user_id[0]);
    CHECK(who->is_service || strcmp(in.user_id, who->sub) == 0);
    check_v2(o, &in, lim);
  } else {
    size_t pl = strlen(prefix), fl = strlen(err.field);
    CHECK(err.status == 400 || err.status == 403);
    CHECK(strncmp(err.field, prefix, pl > 0 ? pl - 1 : 0) == 0);
    /* the item itself: its prefix without the dot, or no field at all */
    CHECK(fl == 0 || err.field[fl - 1] != '.');
    CHECK(fl == 0 ? err.message[0] != ':'
                  : strncmp(err.message, err.field, fl) == 0 && err.message[fl] == ':');
  }
}

/* ns_notif_parse_time on the raw bytes; an accepted time is recomputed
 * with glibc's timegm from the fixed positions of its fields. */
static void check_time(const uint8_t *data, size_t size) {
  char s[64];
  int64_t ms;
  struct tm tm;
  time_t t;
  size_t len;
  int off = 0, frac = 0, digits = 0, k, mon, mday;
  if (size >= sizeof(s))
    return;
  memcpy(s, data, size);
  s[size] = '\0';
  if (ns_notif_parse_time(s, &ms) != 0)
    return;
  len = strlen(s); /* a C string: an embedded NUL ends it */
  CHECK(len >= 20);
  memset(&tm, 0, sizeof(tm));
  tm.tm_year = atoi(s) - 1900;
  tm.tm_mon = mon = atoi(s + 5) - 1;
  tm.tm_mday = mday = atoi(s + 8);
  tm.tm_hour = atoi(s + 11);
  tm.tm_min = atoi(s + 14);
  tm.tm_sec = atoi(s + 17);
  CHECK(tm.tm_hour < 24 && tm.tm_min < 60 && tm.tm_sec < 60);
  t = timegm(&tm);
  CHECK(tm.tm_mon == mon && tm.tm_mday == mday); /* nothing normalized */
  if (s[len - 1] != 'Z' && s[len - 1] != 'z') {
    const char *z = s + len - 6;
    CHECK((*z == '+' || *z == '-') && z[3] == ':');
    off = (atoi(z + 1) * 60 + atoi(z + 4)) * 60;
    if (*z == '-')
      off = -off;
  }
  if (s[19] == '.') {
    for (k = 20; s[k] >= '0' && s[k] <= '9' && digits < 3; k++, digits++)
      frac = frac * 10 + (s[k] - '0');
    for (; digits < 3; digits++)
      frac *= 10;
  }
  CHECK(ms == ((int64_t)t - off) * 1000 + frac);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ns_principal user, svc;
  json_object *root = NULL, *items;
  ns_proto_err perr;
  size_t i, l;
  char prefix[32];
  memset(&user, 0, sizeof(user));
  memset(&svc, 0, sizeof(svc));
  strcpy(user.sub, "alice");
  strcpy(svc.sub, "backend");
  svc.is_service = 1;
  check_time(data, size);
  if (ns_proto_parse_json((const char *)data, size, &root, &perr) != 0)
    return 0;
  for (l = 0; l < NS_ARRAY_SIZE(limits); l++) {
    check(root, &user, &limits[l], "");
    check(root, &svc, &limits[l], "");
    if (json_object_is_type(root, json_type_object) &&
        json_object_object_get_ex(root, "notifications", &items) &&
        json_object_is_type(items, json_type_array))
      for (i = 0; i < json_object_array_length(items) && i < 600; i++) {
        snprintf(prefix, sizeof(prefix), "notifications[%zu].", i);
        check(json_object_array_get_idx(items, i), &svc, &limits[l], prefix);
      }
  }
  json_object_put(root);
  return 0;
}
