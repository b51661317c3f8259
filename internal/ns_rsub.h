/*
 * ns_rsub.h -- one pub/sub connection to one Redis node that speaks what
 * hiredis 0.14's async layer cannot: sharded pub/sub (SSUBSCRIBE, smessage,
 * and the sunsubscribe Redis sends on its own when a slot moves away).
 * hiredis' async context asserts on replies it has no callback for, so
 * this is a blocking-free hiredis *sync* context (redisConnectNonBlock,
 * redisBufferRead / redisGetReply) driven by a uv_poll on the loop.
 *
 * Reconnects with backoff (100 ms doubling to 5 s).  "Up" means a PING was
 * answered on the current connection.  Liveness: a PING every 2 s whose
 * answer must come within 3 s of loop time (ns_redis_clock, as the command
 * connection of ns_redis).  Subscriptions are the owner's: after a
 * reconnect (on_state up) it subscribes again.
 *
 * Output is bounded: past NS_RSUB_MAX_OUT bytes not yet written the
 * connection is dropped (and reconnects) rather than grow without end.
 */
#ifndef NS_RSUB_H
#define NS_RSUB_H

#include <stddef.h>
#include <uv.h>

#define NS_RSUB_MAX_OUT (16u << 20)

typedef struct ns_rsub ns_rsub;

typedef struct ns_rsub_handlers {
  /* "message" or "smessage" on `ch`. */
  void (*on_message)(void *arg, const char *ch, size_t chlen,
                     const char *payload, size_t len);
  /* Up (first PONG) or down; `up` is ns_rsub_up(). */
  void (*on_state)(void *arg, ns_rsub *s, int up);
  /* A "sunsubscribe" of `ch`: asked for, or Redis's own when the
   * channel's slot moved to another node. */
  void (*on_sunsubscribed)(void *arg, ns_rsub *s, const char *ch,
                           size_t chlen);
  /* An error reply (e.g. MOVED for an SSUBSCRIBE of a slot this node no
   * longer serves). */
  void (*on_error)(void *arg, ns_rsub *s, const char *err, size_t len);
  void *arg;
} ns_rsub_handlers;

ns_rsub *ns_rsub_open(uv_loop_t *loop, const char *host, int port,
                      const ns_rsub_handlers *h);

/* Stops and frees (once its handles have closed); *s is cleared. */
void ns_rsub_close(ns_rsub **s);

int ns_rsub_up(const ns_rsub *s);

/* Sends `cmd channel` (SUBSCRIBE, SSUBSCRIBE, UNSUBSCRIBE, SUNSUBSCRIBE).
 * A no-op when not up: the owner subscribes again on on_state(up). */
void ns_rsub_send(ns_rsub *s, const char *cmd, const char *channel);

/* Calls cb(arg) once every command sent before is answered (a PING
 * barrier: Redis answers a connection in order).  Returns 0, or -1 when
 * not up (cb not called). */
int ns_rsub_barrier(ns_rsub *s, void (*cb)(void *), void *arg);

/* Liveness; call once a second.  May drop the connection. */
void ns_rsub_tick(ns_rsub *s);

/* Connections dropped for a lost PING answer or an output overflow. */
unsigned long long ns_rsub_losses(const ns_rsub *s);

#endif
