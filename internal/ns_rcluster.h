/*
 * ns_rcluster.h -- Redis Cluster mode of ns_redis (redis_mode = cluster,
 * SPEC §10).  Internal to ns_redis.c, which forwards every public call
 * here when the instance runs on a cluster; the contract is ns_redis.h's.
 *
 * One ns_redis (command connection, no subscriber) and one ns_rsub
 * (pub/sub) per master, all on the instance's loop.  The slot map comes
 * from CLUSTER SLOTS, asked of any reachable node (the seeds of redis_url
 * first): at start, every 5 s, every 1 s while some slot is not served,
 * and soon after an error that says the map is stale.
 *
 * Commands go to the master of their key's slot (EVAL: its first key;
 * keyless ones to any master).  MOVED updates that slot and resends, ASK
 * resends once to the named node after ASKING, TRYAGAIN / CLUSTERDOWN /
 * MASTERDOWN / LOADING resend after 100 ms; at most 5 sends in all, then
 * the error reply reaches the caller -- except ASK / TRYAGAIN / MOVED, what
 * a slot migration answers until it is final, which are retried for up to
 * 3 s (80 sends).  At most NS_REDIS_MAX_INFLIGHT requests are alive (sent
 * or waiting to be resent); past it a command is refused as unavailable.  A connection lost with the command
 * in flight is reported as reply == NULL (it may or may not have run):
 * the caller answers `unavailable`, never success.
 *
 * Channels with a hash tag (`u:{user}`) are sharded: SSUBSCRIBE on their
 * slot's master, and PUBLISH of them -- in commands and in Lua scripts --
 * is sent as SPUBLISH (scripts are rewritten once, 'PUBLISH' ->
 * 'SPUBLISH').  Channels without one (`bcast`) use classic pub/sub, which
 * a cluster delivers from any node to subscribers on every node: each is
 * subscribed on one master only.
 *
 * Up = every slot has a master whose command connection answers and whose
 * subscriber is up.  Whenever the cluster comes up, a subscriber
 * reconnects, the map moves a slot to another master, or Redis drops a
 * sharded subscription we still want (its slot moved), the owner gets
 * on_state(up, sub_reconnected = 1): it subscribes again (each channel to
 * its current master) and replays from its cursors, as after a standalone
 * subscriber reconnect.  Subscriber liveness is a PING per master (ns_rsub)
 * instead of the standalone canary.
 */
#ifndef NS_RCLUSTER_H
#define NS_RCLUSTER_H

#include <stdarg.h>

#include "ns_redis.h"

typedef struct ns_rcluster ns_rcluster;

int ns_rcluster_open(ns_rcluster **out, uv_loop_t *loop, const char *url,
                     const ns_redis_handlers *h);
void ns_rcluster_close(ns_rcluster **c);
int ns_rcluster_vcmd(ns_rcluster *c, ns_redis_cb cb, void *arg,
                     const char *fmt, va_list ap);
int ns_rcluster_cmdargv(ns_rcluster *c, ns_redis_cb cb, void *arg, int argc,
                        const char **argv, const size_t *argvlen);
int ns_rcluster_wait(ns_rcluster *c, const char *key, int replicas,
                     int timeout_ms, ns_redis_cb cb, void *arg);
void ns_rcluster_subscribe(ns_rcluster *c, const char *channel);
void ns_rcluster_unsubscribe(ns_rcluster *c, const char *channel);
void ns_rcluster_after_subscribes(ns_rcluster *c, void (*cb)(void *),
                                  void *arg);
int ns_rcluster_up(const ns_rcluster *c);
unsigned long long ns_rcluster_sub_losses(const ns_rcluster *c);
size_t ns_rcluster_inflight(const ns_rcluster *c);
unsigned long long ns_rcluster_overloads(const ns_rcluster *c);
void ns_rcluster_redirects(const ns_rcluster *c, unsigned long long out[3]);
void ns_rcluster_tick(ns_rcluster *c);

#endif
