/*
 * ns_bus.c -- pub/sub dispatch of `bcast` and the user channels to
 * registered handlers, re-subscription after a subscriber reconnect, and
 * the names of Redis keys and channels (see ns_bus.h).
 */
#include "ns_bus.h"

#include <json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ns_server_int.h"

struct ns_bus {
  ns_server *srv;
  ns_bus_bcast_fn on_bcast;
  struct {
    const char *kind;
    ns_bus_event_fn fn;
  } kinds[NS_BUS_MAX_KINDS];
  int nkinds;
  ns_bus_resub_fn on_resubscribed[NS_BUS_MAX_RESUB];
  int nresub;
};

/* ---- key and channel names ---- */

void ns__key(const ns_server *srv, char *buf, size_t n, const char *fmt, ...) {
  va_list ap;
  size_t p = (size_t)snprintf(buf, n, "%s", srv->prefix);
  va_start(ap, fmt);
  vsnprintf(buf + p, n - p, fmt, ap);
  va_end(ap);
}

void ns__ukey(const ns_server *srv, char *buf, size_t n, const char *kind,
              const char *user, const char *device) {
  if (device)
    ns__key(srv, buf, n, "%s:{%s}:%s", kind, user, device);
  else
    ns__key(srv, buf, n, "%s:{%s}", kind, user);
}

void ns_bus_user_channel(const ns_server *srv, const char *user, char *buf,
                         size_t n) {
  ns__ukey(srv, buf, n, "u", user, NULL);
}

/* ---- registration ---- */

ns_bus *ns_bus_new(ns_server *srv) {
  ns_bus *b = ns_xcalloc(1, sizeof(*b));
  b->srv = srv;
  return b;
}

void ns_bus_free(ns_bus **bp) {
  free(*bp);
  *bp = NULL;
}

void ns_bus_on_broadcast(ns_bus *b, ns_bus_bcast_fn fn) { b->on_bcast = fn; }

int ns_bus_on_event(ns_bus *b, const char *kind, ns_bus_event_fn fn) {
  int i;
  for (i = 0; i < b->nkinds; i++)
    if (strcmp(b->kinds[i].kind, kind) == 0) {
      b->kinds[i].fn = fn;
      return 0;
    }
  if (b->nkinds == NS_BUS_MAX_KINDS)
    return NS_ELIMIT;
  b->kinds[b->nkinds].kind = kind;
  b->kinds[b->nkinds].fn = fn;
  b->nkinds++;
  return 0;
}

int ns_bus_on_resubscribed(ns_bus *b, ns_bus_resub_fn fn) {
  if (b->nresub == NS_BUS_MAX_RESUB)
    return NS_ELIMIT;
  b->on_resubscribed[b->nresub++] = fn;
  return 0;
}

/* ---- dispatch ---- */

static void dispatch_event(ns_bus *b, const char *user, json_object *ev) {
  json_object *k;
  const char *kind;
  int i;
  if (!json_object_object_get_ex(ev, "k", &k))
    return;
  kind = json_object_get_string(k);
  for (i = 0; i < b->nkinds; i++)
    if (strcmp(b->kinds[i].kind, kind) == 0) {
      b->kinds[i].fn(b->srv, user, ev);
      return;
    }
}

/* The user of a user channel "<prefix>u:{user}" into `user`: 0, or -1
 * when `ch` is not one. */
static int channel_user(const ns_server *srv, const char *ch, size_t chlen,
                        char user[NS_SUB_MAX + 1]) {
  size_t plen = strlen(srv->prefix) + 2; /* "<prefix>u:" */
  if (chlen < plen + 3 || chlen - plen - 2 > NS_SUB_MAX ||
      memcmp(ch + plen - 2, "u:", 2) != 0 || ch[plen] != '{' ||
      ch[chlen - 1] != '}')
    return -1;
  memcpy(user, ch + plen + 1, chlen - plen - 2);
  user[chlen - plen - 2] = '\0';
  return 0;
}

void ns_bus_dispatch(ns_bus *b, const char *ch, size_t chlen,
                     const char *payload, size_t len) {
  ns_server *srv = b->srv;
  char user[NS_SUB_MAX + 1];
  size_t plen = strlen(srv->prefix) + 2;
  json_object *ev;
  if (chlen == plen + 3 && memcmp(ch + strlen(srv->prefix), "bcast", 5) == 0) {
    if (b->on_bcast)
      b->on_bcast(srv, payload, len);
    return;
  }
  if (channel_user(srv, ch, chlen, user) != 0)
    return;
  {
    json_tokener *tok = json_tokener_new();
    ev = json_tokener_parse_ex(tok, payload, (int)len);
    json_tokener_free(tok);
  }
  if (!ev)
    return;
  dispatch_event(b, user, ev);
  json_object_put(ev);
}

int ns_bus_channel_wanted(ns_server *srv, const char *ch, size_t chlen) {
  char user[NS_SUB_MAX + 1];
  return channel_user(srv, ch, chlen, user) == 0 &&
         ns_hub_user_devices(srv->hub, user) > 0;
}

/* ---- re-subscription ---- */

typedef struct resub {
  ns_server *srv;
  const char *last;
} resub;

static void resub_one(void *conn, void *arg) {
  ns_conn *c = conn;
  resub *r = arg;
  char ch[256];
  /* ns_hub_each visits a user's devices consecutively. */
  if (r->last && strcmp(r->last, c->who.sub) == 0)
    return;
  r->last = c->who.sub;
  ns_bus_user_channel(r->srv, c->who.sub, ch, sizeof(ch));
  ns_redis_subscribe(r->srv->redis, ch);
}

static void on_resubscribed(void *arg) {
  ns_bus *b = arg;
  int i;
  for (i = 0; i < b->nresub; i++)
    b->on_resubscribed[i](b->srv);
}

void ns_bus_resubscribe(ns_bus *b) {
  ns_server *srv = b->srv;
  resub r = {srv, NULL};
  char ch[96];
  ns__key(srv, ch, sizeof(ch), "bcast");
  ns_redis_subscribe(srv->redis, ch);
  ns_hub_each(srv->hub, NULL, resub_one, &r);
  ns_redis_after_subscribes(srv->redis, on_resubscribed, b);
}
