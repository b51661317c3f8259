/*
 * ns_comments.h -- the public comment channel: snapshots for `subscribe`
 * and the fan-out of the `bcast` channel (the REST handlers are declared in
 * ns_http_int.h).
 */
#ifndef NS_COMMENTS_H
#define NS_COMMENTS_H

#include <stddef.h>
#include <stdint.h>

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

/* Registers ns_comments_on_bcast as the bus's broadcast handler, and the
 * retry of waiting comment events as a resubscribed handler. */
void ns_comments_bus_register(ns_bus *b);

/* Comment events whose PUBLISH failed wait for Redis in a queue of at most
 * this many events and payload bytes (the oldest are dropped beyond). */
#define NS_COMMENTS_RETRY_MAX_EVENTS 1024
#define NS_COMMENTS_RETRY_MAX_BYTES (1024 * 1024)

/* The server's Redis state callback, called first thing on every change
 * (`up`, `sub_reconnected` as ns_redis_handlers.on_state): once Redis is
 * up and, after a subscriber reconnect, the bus's SUBSCRIBEs are in effect
 * again (its resubscribed handler, registered by ns_comments_bus_register),
 * the waiting comment events are re-published, oldest first. */
void ns_comments_on_redis_state(ns_server *srv, int up, int sub_reconnected);

/* The retry queue for /metrics.  `pending` counts events waiting or being
 * re-published; `deferred` every publish that failed and was kept;
 * `retried` the events re-published and confirmed by Redis; `lost` those
 * dropped (queue full, no memory, an error reply). */
typedef struct ns_comments_retry {
  uint64_t pending, pending_bytes;
  uint64_t deferred, retried, lost;
} ns_comments_retry;
void ns_comments_retry_stats(const ns_server *srv, ns_comments_retry *out);

/* Frees the retry queue (what is still in it is gone: the process ends). */
void ns_comments_free(ns_server *srv);

#endif
