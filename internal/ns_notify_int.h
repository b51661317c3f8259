/*
 * ns_notify_int.h -- what ns_notify.c shares with ns_sched.c: the columns
 * of a stored notification as every statement returns them, and the two
 * helpers that turn such a row into what is queued.
 */
#ifndef NS_NOTIFY_INT_H
#define NS_NOTIFY_INT_H

#include <libpq-fe.h>

#include "ns_queue.h"

struct json_object;

/* The columns of a stored notification, in the order row_json reads them
 * (NS_NCOLS_N of them); NS_C_* are offsets among them. */
#define NS_NCOLS                                                           \
  "id, user_id, app_name, title, body, category, priority, source_device, " \
  "(extract(epoch FROM created_at) * 1000)::bigint, is_read, is_dismissed, " \
  "data::text, url, array_to_json(tags)::text, collapse_key, "             \
  "(extract(epoch FROM expires_at) * 1000)::bigint, "                      \
  "(extract(epoch FROM deliver_at) * 1000)::bigint, status, "              \
  "coalesce(expires_at <= now(), false)"
#define NS_NCOLS_N 19
#define NS_C_CREATED 8
#define NS_C_COLLAPSE 14
#define NS_C_EXPIRES 15
#define NS_C_DELIVER 16
#define NS_C_STATUS 17

/* The user's devices other than the source, "a,b,c" ('' for none): the
 * targets of a notification.  `u` and `src` are SQL expressions. */
#define NS_TARGETS(u, src)                                                 \
  "coalesce((SELECT string_agg(d.device_id, ',' ORDER BY d.device_id)"     \
  " FROM devices d WHERE d.user_id = " u                                   \
  " AND d.device_id IS DISTINCT FROM " src "), '')"

/* Cancels notification $1 in PostgreSQL (status 'canceled', out of the
 * unread count if it was in it); returns its NS_NCOLS. */
extern const char ns__sql_cancel[];

/* The queueing options of the stored notification at (`row`, `col`):
 * marker = its id, collapse key, expiry, live only (ttl 0). */
void ns__notify_row_opts(const PGresult *res, int row, int col,
                         ns_queue_opts *o);

/* new_notification's data: the stored notification at (`row`, `col`) and
 * the user's unread count from column `unread_col`. */
struct json_object *ns__notify_delivered_json(const PGresult *res, int row,
                                              int col, int unread_col);

#endif
