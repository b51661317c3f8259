/*
 * ns_redis.h -- the instance's two Redis connections on the libuv loop: one
 * for commands, one for pub/sub.  Both reconnect with backoff (100 ms doubling
 * to 5 s) for as long as the instance runs.
 *
 * hiredis has no command timeouts, so a PING is sent from ns_redis_tick()
 * (called once a second) whenever none is outstanding, and the command
 * connection is judged by the age of its replies: it is dropped (pending
 * callbacks get reply == NULL) and reconnected when it has owed a reply for
 * more than 3 s of *loop time* without any reply arriving.  Loop time is
 * what the loop could have spent reading: each tick charges Redis at most
 * one tick period (1 s, plus 50 ms of timer jitter), however late the tick
 * fires, so a loop that was
 * busy (a large fan-out) for 10 s is not mistaken for a silent Redis; and
 * before a timeout is declared, whatever already sits in the socket is read
 * without blocking, so a reply that arrived is counted.  Any reply, not
 * only the PONG, proves liveness.  On a loop that keeps time a silent Redis
 * is still dropped 3-4 s after the oldest unanswered command, as before;
 * on a loop that lags, after 3 s of charged time (three ticks or more).
 *
 * The subscriber connection cannot be PINGed through hiredis 0.14 (the reply
 * never reaches a callback), so its liveness is a canary: every 2 s a number
 * is PUBLISHed on `canary_channel` through the command connection and must
 * come back through the subscriber within 3 s of loop time (counted as
 * above; any message on the subscriber restarts the count) after Redis
 * answered the PUBLISH (a PUBLISH reaching 0 subscribers fails at once).
 * A lost canary
 * makes ns_redis_up() false and drops the subscriber, which reconnects;
 * once Redis confirms the new subscriber's SUBSCRIBE of the canary channel,
 * on_state(sub_reconnected = 1) tells the owner to re-subscribe and replay.
 */
#ifndef NS_REDIS_H
#define NS_REDIS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct redisReply;
typedef struct ns_redis ns_redis;

/* Command completion: `reply` is NULL when the connection failed before a
 * reply came.  A reply of type REDIS_REPLY_ERROR is passed through. */
typedef void (*ns_redis_cb)(struct redisReply *reply, void *arg);

typedef struct ns_redis_handlers {
  /* A published message on a subscribed channel. */
  void (*on_message)(void *arg, const char *channel, size_t chlen,
                     const char *payload, size_t len);
  /* The command or subscriber connection changed state; `up` is
   * ns_redis_up().  When the subscriber comes (back) up, the owner must
   * re-subscribe to its channels. */
  void (*on_state)(void *arg, int up, int sub_reconnected);
  void *arg;
  /* This instance's own channel for the subscriber canary (copied); NULL or
   * "" = no canary. */
  const char *canary_channel;
  /* 1: `url` lists seed nodes of a Redis Cluster (ns_rcluster.h). */
  int cluster;
  /* 1: no subscriber connection (a cluster node's command connection). */
  int no_subscriber;
  /* Cluster mode: 1 when `channel` is still wanted (some connection here
   * needs it), so that Redis dropping it (its slot moved) is told apart
   * from our own SUNSUBSCRIBE.  NULL = never. */
  int (*wanted)(void *arg, const char *channel, size_t len);
} ns_redis_handlers;

/* Parses `url` (redis://host[:port][/db]) and starts connecting.  Returns 0
 * or NS_EINVAL for a malformed URL.  Connection failures are not errors: the
 * client keeps retrying. */
int ns_redis_open(ns_redis **out, uv_loop_t *loop, const char *url,
                  const ns_redis_handlers *h);

/* Checks `url` without connecting: 0 or NS_EINVAL.  With `cluster`, a seed
 * list "redis://h1:p1,h2:p2/" (db 0 only). */
int ns_redis_url_valid(const char *url, int cluster);

/* Starts shutdown: disconnects both contexts and stops timers.  The object is
 * freed once every handle has closed (after uv_run returns at the latest);
 * *r is cleared. */
void ns_redis_close(ns_redis **r);

/* Commands awaiting a reply at most.  Past it a command is refused like
 * an unavailable Redis (the producer gets 503, the device an `unavailable`
 * error): a stalled Redis does not grow the output buffer without end. */
#define NS_REDIS_MAX_INFLIGHT 100000

/* Sends a command (hiredis printf-style format; %b binary-safe).  Returns 0
 * and later calls cb exactly once, or NS_EUNAVAIL when not connected or at
 * NS_REDIS_MAX_INFLIGHT (cb is never called). */
int ns_redis_cmd(ns_redis *r, ns_redis_cb cb, void *arg, const char *fmt, ...);
int ns_redis_cmdargv(ns_redis *r, ns_redis_cb cb, void *arg, int argc,
                     const char **argv, const size_t *argvlen);
/* An argv of "EVAL" <script> ... (argvlen NULL) goes out as EVAL the first
 * time on a connection and as EVALSHA after that: `script` must be a static
 * string (it is remembered by address; up to 16 scripts).  A SCRIPT FLUSH
 * behind our back fails the next call of each script with a NOSCRIPT error
 * reply; the calls after it send the source again. */

/* EVAL of `script` (static, as above) with `nkeys` keys: `args` holds the
 * keys, then the other arguments, `nargs` in all (at most 13: more is
 * refused with NS_EINVAL, cb not called).  Otherwise returns like
 * ns_redis_cmd. */
int ns_redis_eval(ns_redis *r, ns_redis_cb cb, void *arg, const char *script,
                  int nkeys, const char **args, int nargs);

/* WAIT for `replicas` replicas to acknowledge every write sent so far on
 * the connection that wrote `key`, at most `timeout_ms`; the reply is the
 * number that did.  Call it from inside the write's reply callback: in
 * cluster mode it then goes to the node that answered the write (after a
 * MOVED or an ASK too), else to the master of `key`'s slot.  Returns like
 * ns_redis_cmd. */
int ns_redis_wait(ns_redis *r, const char *key, int replicas, int timeout_ms,
                  ns_redis_cb cb, void *arg);

/* Subscribes / unsubscribes the subscriber connection (no-op when down; the
 * on_state callback triggers the re-subscription). */
void ns_redis_subscribe(ns_redis *r, const char *channel);
void ns_redis_unsubscribe(ns_redis *r, const char *channel);

/* Calls cb(arg) once every SUBSCRIBE sent so far is in effect at Redis
 * (at once when the subscriber is down or there is no canary channel; a
 * later call replaces a pending one; dropped if the subscriber goes down,
 * whose reconnect reports sub_reconnected again). */
void ns_redis_after_subscribes(ns_redis *r, void (*cb)(void *), void *arg);

/* 1 when both connections are up and neither failed its liveness check
 * (see the file comment). */
int ns_redis_up(const ns_redis *r);

/* How many times the subscriber was dropped for a lost canary. */
unsigned long long ns_redis_canary_losses(const ns_redis *r);

/* Commands awaiting a reply now, and how many were refused at the bound. */
size_t ns_redis_inflight(const ns_redis *r);
/* Cluster mode: redirects followed and retries, [0] MOVED, [1] ASK,
 * [2] TRYAGAIN / CLUSTERDOWN / MASTERDOWN / LOADING (zeros otherwise). */
void ns_redis_redirects(const ns_redis *r, unsigned long long out[3]);
unsigned long long ns_redis_overloads(const ns_redis *r);

/* Liveness check; call once a second from a timer (never from inside a
 * Redis callback: it may read the sockets).  Time between two calls beyond
 * one second is taken for loop lag, not charged to Redis. */
void ns_redis_tick(ns_redis *r);

/* ---- the liveness clock (pure, exposed for tests) ----
 *
 * How long a connection has owed Redis a reply, counting only time in which
 * the loop could have read it.  The owner calls owe() when it starts
 * waiting (a command sent while none was outstanding, a canary published),
 * heard() for every reply (the count restarts: Redis is answering), settle()
 * when nothing is owed any more, and tick() once per `period_ms` from a
 * timer.  tick() charges the time since the later of the previous tick and
 * the start of the wait, but at most `max_charge_ms` (the period plus timer
 * jitter): a tick that fires late because the loop was busy does not charge
 * the busy time to Redis.  It returns the charged time (0 when nothing is
 * owed). */
typedef struct ns_redis_clock {
  int64_t owed_since_ms; /* 0 = nothing owed */
  int64_t counted_ms;    /* owed time charged to Redis so far */
  int64_t last_tick_ms;  /* 0 = no tick yet */
} ns_redis_clock;

void ns_redis_clock_owe(ns_redis_clock *c, int64_t now_ms);
void ns_redis_clock_heard(ns_redis_clock *c, int64_t now_ms);
void ns_redis_clock_settle(ns_redis_clock *c);
int64_t ns_redis_clock_tick(ns_redis_clock *c, int64_t now_ms,
                            int64_t max_charge_ms);

#endif
