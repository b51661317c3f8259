/*
 * ns_comments.h -- the public comment channel: snapshots for `subscribe`
 * and the fan-out of the `bcast` channel (the REST handlers are declared in
 * ns_http_int.h).
 */
#ifndef NS_COMMENTS_H
#define NS_COMMENTS_H

#include <stddef.h>

#include "ns_server_int.h"

/* cb(rc, list): rc 0 with {"postId","comments","count"} (borrowed for the
 * call) or NS_EUNAVAIL.  Returns 0 (cb called later) or NS_EUNAVAIL. */
typedef void (*ns_comments_cb)(int rc, struct json_object *list, void *arg);
int ns_comments_snapshot(ns_server *srv, const char *post_id, ns_comments_cb cb,
                         void *arg);

/* A message on `bcast`: builds the envelope once and queues it on every
 * ready WebSocket of this instance. */
void ns_comments_on_bcast(ns_server *srv, const char *payload, size_t len);

/* Fans out the broadcasts received since the last flush (called at the end
 * of each loop iteration that received some, and at shutdown). */
void ns_comments_flush(ns_server *srv);

/* Registers ns_comments_on_bcast as the bus's broadcast handler. */
void ns_comments_bus_register(ns_bus *b);

#endif
