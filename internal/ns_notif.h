/*
 * ns_notif.h -- producer input (SPEC §6): validating one notification
 * object from a REST body, and the JSON shapes the pipeline stores.  Pure.
 */
#ifndef NS_NOTIF_H
#define NS_NOTIF_H

#include <stddef.h>
#include <stdint.h>

#include "ns_auth.h"

struct json_object;

#define NS_NOTIF_BATCH_MAX 500

#define NS_NOTIF_URL_MAX 2048
#define NS_NOTIF_TAGS_MAX 10
#define NS_NOTIF_TAG_MAX 32
#define NS_NOTIF_COLLAPSE_MAX 64
#define NS_NOTIF_SCHEDULE_MAX_MS (30LL * 86400 * 1000) /* deliver_at horizon */

/* What the SPEC §9 checks compare against: the clock and two settings. */
typedef struct ns_notif_limits {
  int64_t now_ms;          /* wall clock, ms since the epoch */
  int64_t max_data_bytes;  /* serialized `data`, bytes */
  int64_t queue_ttl_ms;    /* upper bound of ttl / expires_at */
  int any_time;            /* 1: deliver_at / expires_at are not checked
                              against now (a stored notification's retry) */
} ns_notif_limits;

typedef struct ns_notif_in {
  char id[37];                      /* lower-case UUID; generated when absent */
  char user_id[NS_SUB_MAX + 1];
  const char *app_name, *title, *body, *category; /* borrowed from the tree */
  int priority;
  char source_device[65];           /* "" when absent */
  /* SPEC §9 (all optional; borrowed from the tree) */
  struct json_object *data;         /* an object, or NULL */
  const char *url;                  /* NULL when absent */
  struct json_object *tags;         /* a valid array, or NULL when absent */
  const char *collapse_key;         /* NULL when absent */
  int64_t expires_ms;               /* 0: none; from ttl or expires_at */
  int live_only;                    /* ttl: 0 (delivered live, queued for none) */
  int64_t deliver_ms;               /* 0: deliver now */
} ns_notif_in;

typedef struct ns_notif_err {
  int status;           /* 400 or 403 */
  char field[48];       /* "title", "notifications[3].title", "" */
  char message[160];
  int stale;            /* 1: refused only because a time (deliver_at,
                           expires_at) is no longer in the future -- a
                           retry of a stored notification answers 200 */
} ns_notif_err;

/* Validates `o` as a notification from `who`.  `prefix` ("" or
 * "notifications[3].") is put before field names in errors.  Strings stay
 * owned by `o`.  Returns 0, or NS_EINVAL / NS_EFORBIDDEN with `err` set. */
int ns_notif_parse(struct json_object *o, const ns_principal *who,
                   const char *prefix, const ns_notif_limits *lim,
                   ns_notif_in *out, ns_notif_err *err);

/* Parses an RFC 3339 timestamp ("YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm|-hh:mm)",
 * upper- or lower-case T and Z) into ms since the epoch (fraction cut to
 * ms).  Returns 0, or NS_EINVAL for anything else (also out-of-range
 * fields such as month 13 or hour 24). */
int ns_notif_parse_time(const char *s, int64_t *ms);

/* Writes a random (version 4) UUID into `out` (37 bytes). */
void ns_notif_uuid(char *out);

#endif
