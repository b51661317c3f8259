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

typedef struct ns_notif_in {
  char id[37];                      /* lower-case UUID; generated when absent */
  char user_id[NS_SUB_MAX + 1];
  const char *app_name, *title, *body, *category; /* borrowed from the tree */
  int priority;
  char source_device[65];           /* "" when absent */
} ns_notif_in;

typedef struct ns_notif_err {
  int status;           /* 400 or 403 */
  char field[48];       /* "title", "notifications[3].title", "" */
  char message[160];
} ns_notif_err;

/* Validates `o` as a notification from `who`.  `prefix` ("" or
 * "notifications[3].") is put before field names in errors.  Strings stay
 * owned by `o`.  Returns 0, or NS_EINVAL / NS_EFORBIDDEN with `err` set. */
int ns_notif_parse(struct json_object *o, const ns_principal *who,
                   const char *prefix, ns_notif_in *out, ns_notif_err *err);

/* Writes a random (version 4) UUID into `out` (37 bytes). */
void ns_notif_uuid(char *out);

#endif
