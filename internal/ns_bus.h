/*
 * ns_bus.h -- this instance's end of Redis pub/sub: the broadcast channel
 * `bcast` and the per-user channels `u:{user}`, dispatched to handlers that
 * the consuming modules register at start-up (comments: broadcasts, and
 * the retry of unpublished comment events after a resubscription;
 * presence: "st" and "kick" events; queue: "q" events and the re-read after
 * a resubscription).  The bus calls no module by name: it depends only on
 * Redis, the hub and the server's key names, and the fan-out path reads top
 * to bottom: ns_redis -> ns_bus_dispatch -> the registered handler.
 *
 * A user event is a JSON object whose "k" names its kind; the handler of
 * that kind gets the parsed object (borrowed for the call).  Unknown kinds,
 * malformed channels and payloads that are not JSON are dropped.
 *
 * Also here: the names of every Redis key and channel (ns__key, ns__ukey,
 * declared in ns_server_int.h), the lowest layer every module shares.
 */
#ifndef NS_BUS_H
#define NS_BUS_H

#include <stddef.h>

#include "ns_server.h"

struct json_object;
typedef struct ns_bus ns_bus;

/* A message on `bcast`: `payload` is {"type":T,"data":D} as published. */
typedef void (*ns_bus_bcast_fn)(ns_server *srv, const char *payload,
                                size_t len);
/* A user event of a registered kind on u:{user}. */
typedef void (*ns_bus_event_fn)(ns_server *srv, const char *user,
                                struct json_object *ev);
/* Every subscription was re-sent after a subscriber reconnect and is in
 * effect: events published meanwhile are lost (pub/sub is at-most-once). */
typedef void (*ns_bus_resub_fn)(ns_server *srv);

/* Event kinds a bus dispatches at most. */
#define NS_BUS_MAX_KINDS 8
/* Resubscribed handlers at most (called in registration order). */
#define NS_BUS_MAX_RESUB 4

/* The bus of `srv` (which must outlive it); freed with ns_bus_free(),
 * which clears the pointer. */
ns_bus *ns_bus_new(ns_server *srv);
void ns_bus_free(ns_bus **b);

/* Registration, at start-up: one handler per kind (a later registration of
 * the same kind replaces the earlier one).  `kind` must be a static string.
 * Returns 0, or NS_ELIMIT past NS_BUS_MAX_KINDS kinds (NS_BUS_MAX_RESUB
 * resubscribed handlers). */
void ns_bus_on_broadcast(ns_bus *b, ns_bus_bcast_fn fn);
int ns_bus_on_event(ns_bus *b, const char *kind, ns_bus_event_fn fn);
int ns_bus_on_resubscribed(ns_bus *b, ns_bus_resub_fn fn);

/* The channel of `user`: "<prefix>u:{<user>}". */
/* 1 when `ch` is a user channel (u:{user}) with a device of that user
 * connected here. */
int ns_bus_channel_wanted(ns_server *srv, const char *ch, size_t chlen);

void ns_bus_user_channel(const ns_server *srv, const char *user, char *buf,
                         size_t n);

/* A message on a subscribed channel (the Redis subscriber's on_message). */
void ns_bus_dispatch(ns_bus *b, const char *ch, size_t chlen,
                     const char *payload, size_t len);

/* Re-subscribes `bcast` and the channel of every user with a device here
 * (after a subscriber reconnect); once Redis confirms them, the
 * resubscribed handler runs. */
void ns_bus_resubscribe(ns_bus *b);

#endif
