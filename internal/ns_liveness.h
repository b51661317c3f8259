/*
 * ns_liveness.h -- this instance's liveness in Redis and the reaping of
 * crashed instances.
 *
 * Keys (docs/architecture.md "Redis keys"); every one is cluster-safe: a
 * script touches only keys of one hash slot, all passed in KEYS.
 *   inst:{<id>}        string, TTL 15 s, refreshed by the heartbeat (5 s)
 *   idev:{<id>}        set of "conn gen device user", one member per device
 *                      connection of the instance (ns_presence.c)
 *   idev:{<id>}:claim  sorted set: members a reaper has taken from
 *                      idev:{<id>} and not yet finished, by claim time
 *   instances:{ns}     hash id -> last heartbeat (ms, Redis TIME)
 *   stats:conn:{ns}    hash id -> WebSocket connections
 * An instance is alive while inst:{<id>} exists; in scripts on the {ns}
 * slot, while its heartbeat in instances:{ns} is younger than the TTL.
 *
 * The reaper (every 5 s, one run at a time) works in single-slot steps:
 * (1) a script on {ns} names the instances whose heartbeat is older than
 * the TTL; (2) per instance, a script on its own slot moves up to 500
 * members (500 per run in all) from idev:{<id>} to idev:{<id>}:claim, but
 * only while inst:{<id>} is absent (the check and the move are atomic, and
 * SPOP gives each member to one survivor); (3) per member a script on the
 * user's slot marks the device offline and publishes its status, only if
 * its presence entry still names that connection and generation and is
 * online; (4) the handled members leave the claim set, and once both sets
 * are empty a script on {ns} forgets the instance (instances, stats) if
 * its heartbeat is still old.  A crash between two steps only delays:
 * claims older than 30 s are taken again by the next run, and a member
 * handled twice is skipped the second time (its entry is offline).
 *
 * The generation: the presence entry and the idev member of a connection
 * carry the instance's generation, the wall-clock ms at which this process
 * started, moved on whenever the heartbeat finds inst:{<id>} gone (a
 * reaper may hold claims on our members: the presence is then rewritten
 * with the new generation, ns_liveness_reassert, so that a member claimed
 * before and handled after no longer matches).  It also tells a previous
 * life of the same configured id apart: entries with a generation below
 * this process's start are dead for the presence scripts at once, and the
 * members behind them are drained from our own set (SSCAN) at start-up.
 *
 * Depends on ns_presence.c for the presence record's shape (reassert and
 * the reaper rewrite records); nothing below it calls in here.
 */
#ifndef NS_LIVENESS_H
#define NS_LIVENESS_H

#include "ns_server.h"

/* Heartbeat of the instance (every 5 s): inst:{id} with its TTL, its
 * entry in instances:{ns}, and its connection count.  When inst:{id} had
 * lapsed (a Redis restart, an outage), the generation moves on and the
 * presence of the local devices is reasserted. */
void ns_liveness_heartbeat(ns_server *srv);

/* The connection count in stats:conn:{ns} alone (every open/close, so totals
 * are exact). */
void ns_liveness_count(ns_server *srv);

/* Writes the presence of every ready local device of an older generation
 * again (online, this connection, the current generation, in our idev
 * set), publishing `online` where it had been lost; when the heartbeat
 * finds that our liveness key had lapsed.  At most 10,000 connections per
 * call: the rest are done at the following heartbeats. */
void ns_liveness_reassert(ns_server *srv);

/* The instance's current generation (see above). */
int64_t ns_liveness_gen(ns_server *srv);

/* Marks offline the devices of crashed instances (cron, every 5 s). */
void ns_liveness_reap(ns_server *srv);

/* Marks offline the devices a previous process with this instance id left
 * online: the members of our idev set older than this process, in batches
 * (with the claims a reaper left on them). */
void ns_liveness_reap_own_past(ns_server *srv);

/* Drops the instance's liveness key and stats entry (shutdown); each write
 * counts in srv->pending_ops until answered. */
void ns_liveness_retire(ns_server *srv);

/* Total WebSocket connections on all live instances: cb(rc, total).
 * Returns 0 (cb called later exactly once) or NS_EUNAVAIL (never called). */
typedef void (*ns_total_cb)(int rc, long long total, void *arg);
int ns_liveness_total(ns_server *srv, ns_total_cb cb, void *arg);

#endif
