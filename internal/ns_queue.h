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

/* How one durable message is queued (SPEC §5, §9). */
typedef struct ns_queue_opts {
  const char *marker;       /* notification id: queued at most once (the
                               marker qd:{user}:<id>); NULL for none */
  int64_t marker_ttl_s;     /* the marker's lifetime; 0: queue_ttl */
  int64_t commit_ms;        /* producer commit, for the latency histogram */
  const char *collapse_key; /* NULL: none (SPEC §9.1) */
  int64_t expires_ms;       /* 0: none; an entry past it is never sent */
  int live_only;            /* ttl 0: only devices connected now get it */
} ns_queue_opts;

/* Enqueues one durable message for every device in `targets_csv` (device
 * ids joined with ','), then PUBLISHes {"k":"q","t":targets} on u:{user}.
 * With a marker the enqueue happens at most once: a retry finds the marker
 * and appends nothing.  A device not connected loses its older undelivered
 * entry of the same collapse key; a live-only message goes to connected
 * devices only.  cb(rc, appended): rc 0 (appended may be 0 when the marker
 * existed), NS_ECANCELED (the marker says canceled: nothing queued) or
 * NS_EUNAVAIL.  Returns 0 (cb called later) or NS_EUNAVAIL (never
 * called).  Every key is in the user's hash slot. */
typedef void (*ns_queue_push_cb)(int rc, long long appended, void *arg);
int ns_queue_push(ns_server *srv, const char *user, const char *targets_csv,
                  const char *type, const char *data_json,
                  const ns_queue_opts *o, ns_queue_push_cb cb, void *arg);

/* Marks notification `id` of `user` canceled unless it was queued: SET NX
 * of its marker.  cb(rc): 0 canceled (now or before), NS_ELIMIT already
 * queued, NS_EUNAVAIL.  Returns 0 or NS_EUNAVAIL (cb never called). */
typedef void (*ns_queue_cancel_cb)(int rc, void *arg);
int ns_queue_cancel(ns_server *srv, const char *user, const char *id,
                    int64_t ttl_s, ns_queue_cancel_cb cb, void *arg);

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

/* A durable message reached the head of the ring past its expiry (SPEC
 * §9.2: never delivered, also not live): it is not written, and settled
 * as if it had been. */
void ns_queue_on_expired(ns_conn *c, const ns_msg *m);

/* The device acknowledged everything up to `id` (ack mode). */
void ns_queue_ack(ns_conn *c, const char *id);

/* The ring has room again: fetches the next page if one is owed. */
void ns_queue_on_drained(ns_conn *c);

/* Registers the queue's handlers with the user bus: a "q" event makes the
 * named devices connected here read their streams; after a resubscription
 * every local device reads again (what was published meanwhile is lost). */
void ns_queue_bus_register(ns_bus *b);

#endif
