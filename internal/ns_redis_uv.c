/*
 * ns_redis_uv.c -- hiredis <-> libuv glue (see ns_redis_uv.h).  The
 * handles are freed in their close callbacks, never before.
 *
 * Writes of a connected context do not wait for POLLOUT: the commands of a
 * loop iteration are written together by a prepare handle, just before the
 * loop blocks (the socket is nearly always writable, and each POLLOUT on/off
 * was an epoll_ctl).  Only a write the kernel did not take whole, and the
 * connect itself, wait for the socket to become writable.
 */
#include "ns_redis_uv.h"

#include <stdlib.h>

#include "ns_common.h"

typedef struct uv_ev {
  uv_poll_t poll;
  uv_prepare_t flush;     /* writes the output buffer before the loop blocks */
  redisAsyncContext *ac;
  int events;
  int flush_on;           /* the prepare handle is started */
  int flushing;           /* inside redisAsyncHandleWrite from `flush` */
  int open_handles;       /* freed when both are closed */
} uv_ev;

static void on_poll(uv_poll_t *h, int status, int events) {
  uv_ev *e = h->data;
  int ev = status < 0 ? e->events : events;
  if (!e->ac)
    return;
  if (ev & UV_READABLE)
    redisAsyncHandleRead(e->ac);
  /* The read handler may have freed the context (and run cleanup). */
  if (e->ac && (ev & UV_WRITABLE))
    redisAsyncHandleWrite(e->ac);
}

static void update(uv_ev *e, int add, int flag) {
  int ev = add ? (e->events | flag) : (e->events & ~flag);
  if (ev == e->events)
    return;
  e->events = ev;
  if (ev)
    uv_poll_start(&e->poll, ev, on_poll);
  else
    uv_poll_stop(&e->poll);
}

static void on_flush(uv_prepare_t *h) {
  uv_ev *e = h->data;
  uv_prepare_stop(h);
  e->flush_on = 0;
  if (!e->ac)
    return;
  e->flushing = 1;
  /* May disconnect (cleanup runs; `e` lives until its close callbacks). */
  redisAsyncHandleWrite(e->ac);
  e->flushing = 0;
}

static void add_read(void *p) { update(p, 1, UV_READABLE); }
static void del_read(void *p) { update(p, 0, UV_READABLE); }

static void add_write(void *p) {
  uv_ev *e = p;
  /* Not connected yet: POLLOUT tells the connect's end.  Called back from
   * the flush: the kernel took only part, so wait for room. */
  if (!e->ac || !(e->ac->c.flags & REDIS_CONNECTED) || e->flushing) {
    update(e, 1, UV_WRITABLE);
    return;
  }
  if (!e->flush_on) {
    e->flush_on = 1;
    uv_prepare_start(&e->flush, on_flush);
  }
}

static void del_write(void *p) { update(p, 0, UV_WRITABLE); }

static void on_close(uv_handle_t *h) {
  uv_ev *e = h->data;
  if (--e->open_handles == 0)
    free(e);
}

static void cleanup(void *p) {
  uv_ev *e = p;
  e->ac = NULL;
  uv_poll_stop(&e->poll);
  uv_prepare_stop(&e->flush);
  uv_close((uv_handle_t *)&e->poll, on_close);
  uv_close((uv_handle_t *)&e->flush, on_close);
}

int ns_redis_uv_attach(redisAsyncContext *ac, uv_loop_t *loop) {
  uv_ev *e;
  if (ac->ev.data)
    return NS_EINVAL;
  e = ns_xcalloc(1, sizeof(*e));
  e->ac = ac;
  if (uv_poll_init(loop, &e->poll, ac->c.fd) != 0) {
    free(e);
    return NS_EINVAL;
  }
  e->poll.data = e;
  uv_prepare_init(loop, &e->flush);
  e->flush.data = e;
  e->open_handles = 2;
  ac->ev.addRead = add_read;
  ac->ev.delRead = del_read;
  ac->ev.addWrite = add_write;
  ac->ev.delWrite = del_write;
  ac->ev.cleanup = cleanup;
  ac->ev.data = e;
  return 0;
}
