/*
 * ns_redis_uv.c -- hiredis <-> libuv glue (see ns_redis_uv.h).  The poll
 * handle is freed in its close callback, never before.
 */
#include "ns_redis_uv.h"

#include <stdlib.h>

#include "ns_common.h"

typedef struct uv_ev {
  uv_poll_t poll;
  redisAsyncContext *ac;
  int events;
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

static void add_read(void *p) { update(p, 1, UV_READABLE); }
static void del_read(void *p) { update(p, 0, UV_READABLE); }
static void add_write(void *p) { update(p, 1, UV_WRITABLE); }
static void del_write(void *p) { update(p, 0, UV_WRITABLE); }

static void on_close(uv_handle_t *h) { free(h->data); }

static void cleanup(void *p) {
  uv_ev *e = p;
  e->ac = NULL;
  uv_poll_stop(&e->poll);
  uv_close((uv_handle_t *)&e->poll, on_close);
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
  ac->ev.addRead = add_read;
  ac->ev.delRead = del_read;
  ac->ev.addWrite = add_write;
  ac->ev.delWrite = del_write;
  ac->ev.cleanup = cleanup;
  ac->ev.data = e;
  return 0;
}
