/*
 * ns_hub.c -- the connection registry: a chained hash table of users, each
 * holding a small array of (device, conn) pairs.  Users have few devices
 * (max_devices_per_user, default 32), so a linear scan per user is the
 * cheapest structure there.
 */
#include "ns_hub.h"

#include <stdlib.h>
#include <string.h>

#include "ns_common.h"

typedef struct dev_slot {
  char *device;
  void *conn;
} dev_slot;

typedef struct hub_user {
  struct hub_user *next; /* bucket chain */
  char *user;
  dev_slot *devs;
  size_t ndevs, cap;
} hub_user;

struct ns_hub {
  hub_user **buckets;
  size_t nbuckets; /* power of two */
  size_t nusers;
  size_t nconns;
};

static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ULL; /* FNV-1a */
  for (; *s; s++) {
    h ^= (unsigned char)*s;
    h *= 1099511628211ULL;
  }
  return h;
}

ns_hub *ns_hub_new(void) {
  ns_hub *h = ns_xcalloc(1, sizeof(*h));
  h->nbuckets = 64;
  h->buckets = ns_xcalloc(h->nbuckets, sizeof(*h->buckets));
  return h;
}

static void user_free(hub_user *u) {
  size_t i;
  for (i = 0; i < u->ndevs; i++)
    free(u->devs[i].device);
  free(u->devs);
  free(u->user);
  free(u);
}

void ns_hub_free(ns_hub **hp) {
  ns_hub *h = *hp;
  size_t i;
  *hp = NULL;
  if (!h)
    return;
  for (i = 0; i < h->nbuckets; i++) {
    hub_user *u = h->buckets[i], *next;
    for (; u; u = next) {
      next = u->next;
      user_free(u);
    }
  }
  free(h->buckets);
  free(h);
}

static hub_user **find_slot(const ns_hub *h, const char *user) {
  hub_user **pp = &h->buckets[hash_str(user) & (h->nbuckets - 1)];
  while (*pp && strcmp((*pp)->user, user) != 0)
    pp = &(*pp)->next;
  return pp;
}

static void grow(ns_hub *h) {
  size_t n = h->nbuckets * 2, i;
  hub_user **nb = ns_xcalloc(n, sizeof(*nb));
  for (i = 0; i < h->nbuckets; i++) {
    hub_user *u = h->buckets[i], *next;
    for (; u; u = next) {
      size_t b = hash_str(u->user) & (n - 1);
      next = u->next;
      u->next = nb[b];
      nb[b] = u;
    }
  }
  free(h->buckets);
  h->buckets = nb;
  h->nbuckets = n;
}

size_t ns_hub_add(ns_hub *h, const char *user, const char *device, void *conn,
                  void **old) {
  hub_user **pp = find_slot(h, user), *u = *pp;
  size_t i;
  *old = NULL;
  if (!u) {
    u = ns_xcalloc(1, sizeof(*u));
    u->user = ns_xstrdup(user);
    *pp = u;
    h->nusers++;
    if (h->nusers > h->nbuckets)
      grow(h);
  }
  for (i = 0; i < u->ndevs; i++) {
    if (strcmp(u->devs[i].device, device) == 0) {
      *old = u->devs[i].conn;
      u->devs[i].conn = conn;
      return u->ndevs;
    }
  }
  if (u->ndevs == u->cap) {
    u->cap = u->cap ? u->cap * 2 : 4;
    u->devs = ns_xrealloc(u->devs, u->cap * sizeof(*u->devs));
  }
  u->devs[u->ndevs].device = ns_xstrdup(device);
  u->devs[u->ndevs].conn = conn;
  u->ndevs++;
  h->nconns++;
  return u->ndevs;
}

int ns_hub_remove(ns_hub *h, const char *user, const char *device,
                  void *conn) {
  hub_user **pp = find_slot(h, user), *u = *pp;
  size_t i;
  if (!u)
    return 0;
  for (i = 0; i < u->ndevs; i++) {
    if (u->devs[i].conn == conn && strcmp(u->devs[i].device, device) == 0) {
      free(u->devs[i].device);
      u->devs[i] = u->devs[--u->ndevs];
      h->nconns--;
      if (u->ndevs == 0) {
        *pp = u->next;
        user_free(u);
        h->nusers--;
      }
      return 1;
    }
  }
  return 0;
}

void *ns_hub_get(const ns_hub *h, const char *user, const char *device) {
  hub_user *u = *find_slot(h, user);
  size_t i;
  for (i = 0; u && i < u->ndevs; i++)
    if (strcmp(u->devs[i].device, device) == 0)
      return u->devs[i].conn;
  return NULL;
}

size_t ns_hub_user_devices(const ns_hub *h, const char *user) {
  hub_user *u = *find_slot(h, user);
  return u ? u->ndevs : 0;
}

size_t ns_hub_user_count(const ns_hub *h) { return h->nusers; }
size_t ns_hub_conn_count(const ns_hub *h) { return h->nconns; }

void ns_hub_each(const ns_hub *h, const char *user, ns_hub_fn fn, void *arg) {
  size_t b, i;
  if (user) {
    hub_user *u = *find_slot(h, user);
    for (i = 0; u && i < u->ndevs; i++)
      fn(u->devs[i].conn, arg);
    return;
  }
  for (b = 0; b < h->nbuckets; b++) {
    hub_user *u;
    for (u = h->buckets[b]; u; u = u->next)
      for (i = 0; i < u->ndevs; i++)
        fn(u->devs[i].conn, arg);
  }
}
