/*
 * ns_server_int.h -- what the server's files (ns_server.c, ns_conn.c,
 * ns_ws.c, ns_http.c, ns_presence.c, ns_bus.c, ns_liveness.c) share.  Not
 * for other modules.
 */
#ifndef NS_SERVER_INT_H
#define NS_SERVER_INT_H

#include <libwebsockets.h>
#include <uv.h>

#include "ns_auth.h"
#include "ns_bus.h"
#include "ns_common.h"
#include "ns_config.h"
#include "ns_hub.h"
#include "ns_liveness.h"
#include "ns_metrics.h"
#include "ns_msg.h"
#include "ns_pg.h"
#include "ns_proto.h"
#include "ns_ratelimit.h"
#include "ns_redis.h"
#include "ns_server.h"

typedef struct ns_conn ns_conn;

/* PostgreSQL connections per instance: one query is in flight per
 * connection, so the pool is what lets independent requests (many single
 * POSTs) commit concurrently. */
#define NS_PG_POOL 4

/* Frames one WRITEABLE callback writes at most (then it asks for another,
 * so one busy connection cannot hold the loop). */
#define NS_CONN_WRITES_PER_CALLBACK 32
/* Broadcasts gathered into one fan-out at most (ns_comments_flush). */
#define NS_BCAST_BATCH_MAX 64
/* How long a close waits for lws to flush a partly sent frame before the
 * close frame (a reader that does not read gets none: dropped). */
#define NS_CONN_CLOSE_FLUSH_MS 5000

/* Client addresses the handshake limiter tracks at most (oldest reused). */
#define NS_IPLIMIT_ENTRIES 65536

/* The longest instance id (configured <= 64 + "-w<k>" of a worker). */
#define NS_INST_ID_MAX (sizeof(((ns_server *)0)->instance_id) - 1)

struct ns_server {
  const ns_config *cfg;
  uv_loop_t loop;
  struct lws_context *ctx;
  struct lws_vhost *vhost;
  lws_retry_bo_t retry_policy;
  ns_auth *auth;
  ns_redis *redis;
  ns_pg *pg[NS_PG_POOL]; /* independent connections, one query each in flight */
  int pg_conn_ready[NS_PG_POOL]; /* connected and migrated */
  int pg_ready;          /* how many are: > 0 means PostgreSQL is up */
  struct pg_slot { struct ns_server *srv; int idx; } pg_slots[NS_PG_POOL];
  ns_hub *hub;
  ns_bus *bus;           /* pub/sub dispatch to the registered handlers */
  ns_iplimit *iplimit;   /* handshakes per client IP */
  ns_metrics metrics;
  uv_timer_t cron;
  uv_timer_t stop_timer;
  uv_signal_t sig_term, sig_int, sig_hup;
  int listen_fd;          /* shared listener of `workers = N`, or -1 */
  int redis_seen_up;      /* Redis has been up once in this process */
  int64_t redis_up_since_ms; /* monotonic; 0 while Redis is down */
  unsigned long long canary_losses_seen; /* already in the metrics */
  uv_poll_t accept_poll;  /* readable listen_fd */
  struct ns_comment_rq *comment_rq; /* comment events waiting for Redis */
  int accepting;          /* accept_poll started (see maybe_accept) */
  char instance_id[80]; /* configured (<= 64) + "-w<k>" of a worker */
  char prefix[64];       /* redis_prefix */
  int64_t start_ms;
  uint64_t conn_seq;
  ns_conn *conns;        /* every WebSocket connection (list) */
  size_t nconns;
  uint64_t outbound_bytes;  /* in outbound rings (metric) */
  uint64_t inbound_bytes;   /* in message assembly buffers (metric) */
  uint64_t http_body_bytes; /* in request bodies being read (metric) */
  size_t http_reqs;         /* REST requests received and not yet answered */
  struct ns_pending_off *offline; /* devices inside presence_grace */
  int count_inflight, count_dirty; /* stats:conn write (ns_liveness.c) */
  /* ns_liveness.c: the presence generation (ms; records and idev members
   * carry it, a lapse of the liveness key moves it on), one reaper run at
   * a time, and the drain of our own previous life's idev set */
  int64_t gen;
  int reap_busy, past_busy, past_left;
  int reassert_more; /* a reassert stopped at its batch: more to do */
  int64_t past_ls;
  /* broadcasts received in this loop iteration, fanned out together at its
   * end (ns_comments.c) */
  ns_msg *bcast_pending[NS_BCAST_BATCH_MAX];
  size_t bcast_n;
  uv_check_t bcast_check; /* active while some are pending */
  struct ns_seen_wait *seen; /* closed devices' last_seen, not yet sent */
  int seen_inflight;
  uint64_t seen_dropped;
  /* device connects waiting for the next registration batch (FIFO), and
   * batches in flight (ns_presence.c) */
  ns_conn *reg_head, *reg_tail;
  size_t reg_waiting;
  int reg_inflight;
  int stopping;
  int retired;           /* liveness key and stats entry removed */
  /* ns_sched.c */
  uv_timer_t sched_timer;
  int sched_busy, sched_rounds;
  int ret_busy, ret_rounds;
  unsigned ret_ticks;
  int64_t stop_started_ms;
  unsigned cron_ticks;
  int pending_ops;       /* shutdown waits for these Redis/PG writes */
};

/* ---- connections (ns_conn.c) ---- */

typedef enum { NS_CONN_PENDING = 0, NS_CONN_READY, NS_CONN_CLOSING } ns_conn_state;

struct ns_conn {
  /* ---- every connection ---- */
  ns_server *srv;
  struct lws *wsi;        /* NULL once the socket is closed */
  ns_conn *prev, *next;
  int refs;               /* 1 for the socket + 1 per async operation */
  unsigned is_public : 1;
  unsigned ack_mode : 1;
  unsigned in_hub : 1;
  unsigned want_ping : 1; /* heartbeat: a ping waits for the next WRITEABLE */
  unsigned drop : 1;      /* idle or write failed: dropped at the next TIMER, no close frame */
  unsigned close_started : 1; /* lws has the close in hand */
  unsigned q_attached : 1; /* first fetch started */
  unsigned q_fetching : 1, q_refetch : 1, q_more : 1;
  unsigned char q_trimming; /* trim EVALs in flight (<= 1 + acks pipelined) */
  ns_conn_state state;
  uint64_t seq;           /* connection_id is "<instance>-<seq>" */
  /* Heartbeat (SPEC §7), driven by the server's once-a-second sweep
   * (ns_conn_heartbeat) instead of one lws timer per connection. */
  int64_t last_rx_ms;     /* monotonic: last frame (or pong) from the peer */
  int64_t last_ping_ms;
  /* outbound ring of message references */
  ns_msg **ring;
  size_t ring_head, ring_len, ring_cap;
  size_t out_bytes;
  /* Written, but lws kept part of it (the kernel took only some): it is
   * delivered once lws has flushed the rest, i.e. at the next WRITEABLE. */
  ns_msg *unflushed;
  /* inbound message assembly (fragments), bounded by max_message_bytes */
  char *rx;
  size_t rx_len, rx_cap;
  /* client message rate limit: token bucket */
  ns_bucket bucket;
  int64_t limited_since_ms; /* start of the current run of refusals */
  int64_t last_refused_ms;
  int close_code;
  const char *close_reason; /* a static string */
  int64_t close_at_ms;      /* monotonic: when ns_conn_close was called */
  /* ---- device connections only: a public connection is allocated
   * without what follows (ns_conn_new), so nothing below may be read on
   * one (AddressSanitizer would say so in the test build). ---- */
  char id[96];            /* connection_id: "<instance>-<seq>" */
  int64_t idev_gen;       /* generation of its idev member (ns_presence.c) */
  ns_principal who;
  char device[NS_DEVICE_ID_MAX + 1];
  char device_name[NS_DEVICE_NAME_MAX + 1];
  char platform[NS_PLATFORM_MAX + 1];
  /* durable delivery (ns_queue.c) */
  int64_t born_ms;         /* wall clock at the handshake: a live-only
                              entry (ttl 0) queued before it is this
                              connection's, one queued after is not */
  long long queued;        /* queue length at connect (welcome.queued) */
  long long unread;        /* the user's unread count at connect (welcome) */
  char q_last[NS_STREAM_ID_MAX + 1];    /* last id put in the ring */
  char q_written[NS_STREAM_ID_MAX + 1]; /* last id delivered (written/acked) */
  char q_trimmed[NS_STREAM_ID_MAX + 1]; /* last id trimmed in Redis */
  void (*q_ready)(int rc, ns_conn *c);
  /* registration (ns_presence.c): waiting for the next device-row batch,
   * then the merged device list kept for the welcome */
  ns_conn *reg_next;
  struct ns_devlist *reg_list;
  int reg_parts;          /* welcome parts still being read (ns_presence.c) */
};

/* Bytes of a public connection: the fields every connection has. */
#define NS_CONN_PUBLIC_SIZE offsetof(struct ns_conn, id)

/* A new connection; `is_public` ones are allocated without the device part. */
ns_conn *ns_conn_new(ns_server *srv, struct lws *wsi, int is_public);
void ns_conn_ref(ns_conn *c);
/* Drops a reference; frees at zero (the socket must be gone). */
void ns_conn_unref(ns_conn *c);
/* Queues `m` (takes a new reference of its own).  Past max_outbound_bytes
 * the connection is closed with 1013 and the message dropped. */
void ns_conn_send(ns_conn *c, ns_msg *m);
/* Queues `m` before everything else (the welcome frame); the caller then
 * writes the ring with ns_conn_flush. */
void ns_conn_send_front(ns_conn *c, ns_msg *m);
/* Builds and queues an envelope (takes ownership of data). */
void ns_conn_send_json(ns_conn *c, const char *type, struct json_object *data,
                       const char *ref);
void ns_conn_send_error(ns_conn *c, const char *code, const char *msg,
                        const char *ref);
/* Writes what is queued (a pending ping first, then messages until the
 * kernel takes no more); called from SERVER_WRITEABLE. */
int ns_conn_on_writable(ns_conn *c);
/* Writes what is queued now, outside a WRITEABLE callback (as the direct
 * path of ns_conn_send does), or asks for WRITEABLE when lws is still
 * flushing: the welcome and the replay behind it go out without a POLLOUT
 * round trip. */
void ns_conn_flush(ns_conn *c);
/* The heartbeat of one connection at `now` (monotonic ms), from the
 * server's sweep: a ping every heartbeat_interval, a drop after
 * idle_timeout without a frame (or pong) from the peer. */
void ns_conn_heartbeat(ns_conn *c, int64_t now);
/* Asks lws to close the connection with `code`/`reason` (a string that
 * outlives the connection: a literal) from a safe point (an lws timer
 * callback: see STACK.md on close frames under libuv). */
void ns_conn_close(ns_conn *c, int code, const char *reason);
/* Releases the message assembly buffer once a message is complete. */
void ns_conn_free_rx(ns_conn *c);
/* From LWS_CALLBACK_TIMER of a closing connection: -1 (lws
 * closes: with the close frame, or dropped when idle), or 0 while lws still
 * flushes an earlier frame (up to NS_CONN_CLOSE_FLUSH_MS). */
int ns_conn_close_now(ns_conn *c);
/* Called when lws reports the socket closed: releases the socket's ref. */
void ns_conn_on_closed(ns_conn *c);

/* ---- WebSocket and REST (ns_ws.c, ns_http.c) ---- */
int ns__ws_callback(struct lws *wsi, enum lws_callback_reasons reason,
                    void *user, void *in, size_t len);
int ns__http_callback(struct lws *wsi, enum lws_callback_reasons reason,
                      void *user, void *in, size_t len);
/* What a device handshake presented (token claims, device metadata): read
 * at FILTER_PROTOCOL_CONNECTION, copied into the connection at ESTABLISHED
 * and freed, so an established connection does not carry it twice. */
typedef struct ns_devauth {
  ns_principal who;
  char device[NS_DEVICE_ID_MAX + 1];
  char device_name[NS_DEVICE_NAME_MAX + 1];
  char platform[NS_PLATFORM_MAX + 1];
  int ack_mode;
} ns_devauth;

/* Per-session data shared by the HTTP and WS halves of the one protocol
 * (lws allocates it for every connection: keep it small). */
typedef struct ns_session {
  int kind;               /* 0 unknown, 1 device ws, 2 public ws, 3 http */
  int auth_rc;            /* 0 ok, else close 1008 with auth_reason */
  const char *auth_reason;
  ns_devauth *da;         /* device ws, until ESTABLISHED */
  ns_conn *conn;
  struct ns_req *req;
} ns_session;

/* ---- presence (ns_presence.c); the bus and the instance's liveness are
 * ns_bus.h and ns_liveness.h ---- */
/* Registers a READY-to-be device connection: presence, subscription, device
 * row, then welcome.  Closes it with 1008/1011 on refusal or failure. */
void ns_presence_connect(ns_conn *c);
/* The device's socket closed: presence offline (after presence_grace),
 * last_seen, unsubscribe when it was the user's last local device. */
void ns_presence_disconnect(ns_conn *c);
/* Marks offline every device inside its grace period now (shutdown). */
void ns_presence_flush_pending(ns_server *srv);
/* Registers the presence events of the user bus: "st" (device_status to
 * the user's other devices here) and "kick" (a newer connection of the
 * device elsewhere replaces the one here, 4000). */
void ns_presence_bus_register(ns_bus *b);
/* The presence record and its pieces, shared with ns_liveness.c (reassert,
 * reaper): the stored JSON {status, instance, conn, gen, since, last_seen},
 * the "st" event, an instance's idev set key (`id` NULL = this one's) and a
 * connection's member of it ("conn gen device user": the user last, it may
 * contain spaces).  The strings are the caller's to free. */
char *ns__presence_json(const char *status, const ns_server *srv,
                        const char *conn_id, int64_t gen, int64_t since,
                        int64_t ls);
char *ns__presence_status_event(const char *device, const char *status,
                                int64_t ls);
void ns__presence_idev_key(const ns_server *srv, const char *id, char *buf,
                           size_t n);
char *ns__presence_idev_member(const char *conn_id, int64_t gen,
                               const char *device, const char *user);
/* A user's registered devices (PostgreSQL) merged with their presence and
 * queue length (Redis). */
typedef struct ns_devrow {
  char device_id[NS_DEVICE_ID_MAX + 1];
  char name[NS_DEVICE_NAME_MAX + 1];
  char platform[NS_PLATFORM_MAX + 1];
  int64_t first_seen_ms, last_seen_ms;
  int online;
  long long queued;
} ns_devrow;
typedef struct ns_devlist {
  ns_devrow *rows;
  size_t n;
} ns_devlist;
/* Completion: rc 0 and the list (valid during the call only), or
 * NS_EUNAVAIL when PostgreSQL or Redis could not answer. */
typedef void (*ns_devlist_cb)(int rc, const ns_devlist *l, void *arg);
/* Merges the user's Redis presence (online, last_seen, queued) into `l`,
 * whose rows it takes on success: 0 (cb called later exactly once) or
 * NS_EUNAVAIL (never called; the rows stay the caller's). */
int ns__presence_merge(ns_server *srv, const char *user, ns_devlist *l,
                       ns_devlist_cb cb, void *arg);
/* The batched last_seen writes of closed devices, for /metrics. */
void ns_presence_seen_stats(const ns_server *srv, uint64_t *waiting,
                            uint64_t *limit, uint64_t *dropped);
/* Returns 0 (cb called later exactly once) or NS_EUNAVAIL (never called). */
int ns_presence_devices(ns_server *srv, const char *user, ns_devlist_cb cb,
                        void *arg);
/* Forgets a device: its row, presence, queue and cursor.  cb(rc) with 0,
 * NS_ENOTFOUND (no such device of this user) or NS_EUNAVAIL. */
typedef void (*ns_done_cb)(int rc, void *arg);
int ns_presence_forget(ns_server *srv, const char *user, const char *device,
                       ns_done_cb cb, void *arg);

/* ---- notifications (ns_notify.c) ---- */
/* Applies `action` to notification `id` of `user` (PostgreSQL) and queues
 * notification_sync to every other
 * registered device.  cb(rc, row): rc 0 with the updated notification
 * (borrowed for the call), NS_ENOTFOUND (not this user's), or NS_EUNAVAIL.
 * Returns 0 (cb called later) or NS_EUNAVAIL (never called). */
typedef void (*ns_action_cb)(int rc, struct json_object *row, void *arg);
int ns_notify_action(ns_server *srv, const char *user, const char *id,
                     ns_action action, const char *source_device,
                     ns_action_cb cb, void *arg);

/* A bulk action (SPEC §9.5): READ or DISMISS every delivered notification
 * of `user` (created at or before `before`'s, when not ""), then one
 * notification_sync to the user's other devices.  cb(rc, updated, unread):
 * rc 0, NS_ENOTFOUND (no such `before`) or NS_EUNAVAIL.  Returns 0 (cb
 * called later), NS_EINVAL (another action) or NS_EUNAVAIL (never
 * called). */
typedef void (*ns_bulk_cb)(int rc, long long updated, long long unread,
                           void *arg);
int ns_notify_bulk(ns_server *srv, const char *user, ns_action action,
                   const char *before, const char *source_device,
                   ns_bulk_cb cb, void *arg);

/* Key / channel names with the configured prefix (ns_bus.c). */
void ns__key(const ns_server *srv, char *buf, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A per-user key or channel: "<prefix><kind>:{<user>}", then ":<device>"
 * when `device` is given.  The braces are literal: a Redis Cluster hash tag,
 * and what keeps user and device apart (a device id has no '}'). */
void ns__ukey(const ns_server *srv, char *buf, size_t n, const char *kind,
              const char *user, const char *device);

int ns__server_redis_up(const ns_server *srv);

/* The ready PostgreSQL connection with the fewest queued queries, or NULL
 * (ns_pg_query(NULL, ...) answers NS_EUNAVAIL). */
ns_pg *ns__pg(ns_server *srv);

#endif
