/*
 * ns_queue.h -- per-device durable queues on Redis Streams (SPEC §5).
 *
 * q:{user}:{device} holds a device's undelivered durable messages (fields
 * t = type, d = data JSON, c = producer commit ms).  One notification gets
 * the SAME stream id in every target device's stream (the enqueue script
 * picks an id above every target's last-generated-id), so a message is
 * serialized once for all devices.  Delivered entries are trimmed (XTRIM
 * MINID), so a stream holds exactly what is still owed; cur:{user} keeps,
 * per device, the last delivered id and the count of delivered entries
 * ("<device>:n"), from which the missed count (cap or age) is derived:
 * missed = entries-added - delivered - length.
 */
#ifndef NS_QUEUE_H
#define NS_QUEUE_H

#include <stdint.h>

#include "ns_server_int.h"

/* Enqueues one durable message for every device in `targets_csv` (device
 * ids joined with ','), then PUBLISHes {"k":"q","t":targets} on u:{user}.
 * With a `marker` (the notification id) the enqueue happens at most once:
 * a retry finds the marker and appends nothing.  cb(rc, appended): rc 0
 * (appended may be 0 when the marker existed) or NS_EUNAVAIL.  Returns 0
 * (cb called later) or NS_EUNAVAIL (never called). */
typedef void (*ns_queue_push_cb)(int rc, long long appended, void *arg);
int ns_queue_push(ns_server *srv, const char *user, const char *targets_csv,
                  const char *type, const char *data_json, const char *marker,
                  int64_t commit_ms, ns_queue_push_cb cb, void *arg);

/* Starts a connecting device's delivery: the first page of its queue, the
 * missed count and the queue length are read; `done` runs with rc 0 when
 * queue_overflow and the page have been put in the ring (not yet written:
 * the connection is still PENDING), after which the caller queues welcome
 * in front with c->queued. */
typedef void (*ns_queue_ready_cb)(int rc, ns_conn *c);
void ns_queue_attach(ns_conn *c, ns_queue_ready_cb done);

/* A "q" event for this device: reads what is newer than the last id sent. */
void ns_queue_kick(ns_conn *c);

/* Called after a durable message has been written whole to the socket. */
void ns_queue_on_written(ns_conn *c, const ns_msg *m);

/* The device acknowledged everything up to `id` (ack mode). */
void ns_queue_ack(ns_conn *c, const char *id);

/* The ring has room again: fetches the next page if one is owed. */
void ns_queue_on_drained(ns_conn *c);

/* Registers the queue's handlers with the user bus: a "q" event makes the
 * named devices connected here read their streams; after a resubscription
 * every local device reads again (what was published meanwhile is lost). */
void ns_queue_bus_register(ns_bus *b);

#endif
