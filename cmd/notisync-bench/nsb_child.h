/*
 * nsb_child.h -- one child process's state, shared by its three files:
 * nsb_child.c (the epoll loop, commands from the parent, the delivery
 * check), nsb_wsc.c (the WebSocket connections) and nsb_prod.c (the HTTP
 * producer connections).  Connections live in arrays that are allocated for
 * the whole phase, so an epoll event never points at freed memory; a closed
 * connection has fd -1 and its events are ignored, and a reconnect is only
 * ever started from the timer pass, never inside an event batch.
 */
#ifndef NSB_CHILD_H
#define NSB_CHILD_H

#include <json-c/json.h>

#include "nsb.h"

enum { IO_CTRL = 1, IO_WS, IO_HTTP };

typedef struct io_head {
  int kind;
  int fd;
} io_head;

enum ws_state {
  WS_IDLE = 0,  /* not started in this connect phase */
  WS_TCP,       /* TCP connect in progress */
  WS_HANDSHAKE, /* upgrade request sent, waiting for 101 */
  WS_WELCOME,   /* upgraded, waiting for `welcome` (devices) */
  WS_PINGED,    /* sent a JSON ping (a masked client frame), waiting for pong */
  WS_OPEN,      /* connected */
  WS_RETRY,     /* failed, to be retried at t_retry */
  WS_FAILED,    /* gave up in this connect phase */
  WS_CLOSED,    /* closed by the server after it was open */
  WS_GONE       /* closed by us (DISCONNECT) */
};

typedef struct wsc {
  io_head io;
  uint32_t user;     /* global user index (device role) */
  uint32_t dev;      /* device number within the user */
  uint8_t state;
  uint8_t attempts;
  uint8_t armed;     /* open when the connect phase ended: expects deliveries */
  uint8_t in_msg;    /* a fragmented message is being assembled */
  int want_out;      /* EPOLLOUT registered */
  int64_t t_begin;   /* start of the current attempt */
  int64_t t_retry;
  char key[32];      /* Sec-WebSocket-Key of the current attempt */
  nsb_buf in, out, msg;
} wsc;

enum h_state { H_DOWN = 0, H_CONNECTING, H_READY, H_BUSY, H_RETRY };

typedef struct hconn {
  io_head io;
  int state;
  int want_out;
  int64_t t_sent, t_retry;
  uint32_t nitems;
  uint32_t *seqs, *users; /* the items of the request in flight */
  nsb_buf in, out;
} hconn;

typedef struct rec {
  uint64_t key;      /* connection index << 32 | seq */
  uint32_t lat_us;
  uint32_t pad;
} rec;

enum ch_phase { PH_IDLE = 0, PH_CONNECTING, PH_P_CONNECTING, PH_PRODUCING,
                PH_DRAINING, PH_TALLY };

typedef struct child {
  const nsb_job *job;
  const nsb_opts *o;
  int ep;
  io_head ctrl;
  struct sockaddr_in dst;
  struct in_addr src;
  int bind_src;
  char host_hdr[80];
  uint8_t *scratch;
  size_t scratch_cap;
  uint64_t rng;
  json_tokener *tok;
  int phase;
  int exiting;
  int64_t phase_deadline;

  /* WebSocket side */
  wsc *ws;
  uint32_t nws, next_start, inflight;
  nsb_ready ready;
  int64_t connect_t0;
  rec *recs;
  size_t nrec, caprec;
  nsb_report rep;
  nsb_pair *pairs;
  uint32_t npairs, max_local;
  uint64_t expected;
  int64_t next_check;

  /* NSB_RX_BCAST / NSB_RX_STORM accounting (allocated once per child) */
  uint8_t *bits;            /* nws bitmaps of o->nbits bits */
  size_t bstride;           /* bytes per bitmap */
  uint32_t *bcount;         /* unique deliveries per connection */
  uint32_t ncomplete;       /* connections with all o->nbits */
  uint8_t *acc;             /* TALLY: accepted seqs (bstride bytes) or NULL */
  nsb_tally tally;
  nsb_buf rxlat;            /* uint32 µs per unique delivery, capped */

  /* producer side */
  hconn *hc;
  int nhc;
  nsb_produce_args pa;
  nsb_produced pd;
  nsb_buf okpairs, lat, body;
  int64_t p_start, p_end;
  uint64_t p_sent;          /* requests sent */
  uint32_t p_counter;       /* next seq counter (low 24 bits) */
  char svc_token[1024];
} child;

/* nsb_wsc.c */
void nsb_wsc_start(child *ch, wsc *c, int64_t now);
void nsb_wsc_event(child *ch, wsc *c, uint32_t events);
void nsb_wsc_tick(child *ch, int64_t now);
void nsb_wsc_disconnect(child *ch, wsc *c);
/* Closes the socket and frees the buffers (state unchanged). */
void nsb_wsc_close_fd(child *ch, wsc *c);

/* nsb_prod.c */
void nsb_prod_begin(child *ch, const nsb_produce_args *a, int64_t now);
void nsb_prod_event(child *ch, hconn *h, uint32_t events);
/* Returns 1 when the producing phase finished and PRODUCED was sent. */
int nsb_prod_tick(child *ch, int64_t now);

/* nsb_child.c: accounts one delivery of message `seq` to connection `c`
 * (NSB_RX_BCAST / NSB_RX_STORM / NSB_RX_C100K; `bcast`: a broadcast body,
 * else a `new_notification` marker), sent at `t`. */
void nsb_child_tally_rx(child *ch, wsc *c, int bcast, uint32_t seq, int64_t t,
                        int64_t now);

/* nsb_child.c: the (re-)arms an fd in epoll for `events` with `io`. */
void nsb_child_watch(child *ch, io_head *io, uint32_t events, int add);

#endif
