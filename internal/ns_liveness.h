/*
 * ns_liveness.h -- this instance's liveness in Redis and the reaping of
 * crashed instances.
 *
 * Every instance keeps inst:{id} (TTL 15 s, refreshed by the heartbeat
 * every 5 s), its entry in the `instances` hash (id -> last heartbeat ms),
 * its connection count in stats:conn, and each device connection in
 * idev:{id} (a set of "conn device user", written by the presence scripts
 * of ns_presence.c).  Every 5 s each instance runs the reap script: for an
 * instance whose inst:{id} has expired it pops the members (at most 500 per
 * run), marks offline each device whose presence still belongs to that
 * connection, publishes its offline status, and forgets the instance once
 * its set is empty.  SPOP makes each device reaped by exactly one survivor.
 * At start-up an instance reaps its own set first (a previous life with the
 * same configured id may have been killed).
 *
 * Depends on ns_presence.c for the presence record's shape (reassert
 * rewrites records); nothing below it calls in here.
 */
#ifndef NS_LIVENESS_H
#define NS_LIVENESS_H

#include "ns_server.h"

/* Heartbeat of the instance (every 5 s): inst:{id} with its TTL, its
 * entry in `instances`, and its connection count.  When inst:{id} had
 * lapsed (a Redis restart, an outage), the presence of the local devices is
 * reasserted. */
void ns_liveness_heartbeat(ns_server *srv);

/* The connection count in stats:conn alone (every open/close, so totals
 * are exact). */
void ns_liveness_count(ns_server *srv);

/* Writes the presence of every ready local device again (online, this
 * connection, in our idev set), publishing `online` where it had been lost;
 * when the heartbeat finds that our liveness key had lapsed. */
void ns_liveness_reassert(ns_server *srv);

/* Marks offline the devices of crashed instances (cron, every 5 s). */
void ns_liveness_reap(ns_server *srv);

/* Marks offline the devices a previous process with this instance id left
 * online; sent before any connection of this process is admitted. */
void ns_liveness_reap_own_past(ns_server *srv);

/* Drops the instance's liveness key and stats entry (shutdown); each write
 * counts in srv->pending_ops until answered. */
void ns_liveness_retire(ns_server *srv);

/* Total WebSocket connections on all live instances: cb(rc, total).
 * Returns 0 (cb called later exactly once) or NS_EUNAVAIL (never called). */
typedef void (*ns_total_cb)(int rc, long long total, void *arg);
int ns_liveness_total(ns_server *srv, ns_total_cb cb, void *arg);

#endif
