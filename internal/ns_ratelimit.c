/*
 * ns_ratelimit.c -- token buckets and the bounded per-IP table (linear
 * probing over a fixed array; at most PROBE slots are examined per lookup).
 */
#include "ns_ratelimit.h"

#include <stdlib.h>
#include <string.h>

#include "ns_common.h"

#define IP_MAX 46 /* INET6_ADDRSTRLEN */
#define PROBE 8

void ns_bucket_init(ns_bucket *b, double burst, int64_t now_ms) {
  b->tokens = burst;
  b->ms = now_ms;
}

int ns_bucket_take(ns_bucket *b, double rate, double burst, int64_t now_ms) {
  if (rate <= 0)
    return 1;
  if (now_ms > b->ms) {
    b->tokens += (double)(now_ms - b->ms) * rate / 1000.0;
    if (b->tokens > burst)
      b->tokens = burst;
    b->ms = now_ms;
  }
  if (b->tokens >= 1.0) {
    b->tokens -= 1.0;
    return 1;
  }
  return 0;
}

typedef struct ip_slot {
  char ip[IP_MAX];
  ns_bucket b;
} ip_slot;

struct ns_iplimit {
  ip_slot *slots;
  size_t cap, used;
  double rate, burst;
};

ns_iplimit *ns_iplimit_new(size_t capacity, double rate, double burst) {
  ns_iplimit *t = ns_xcalloc(1, sizeof(*t));
  t->cap = capacity < PROBE ? PROBE : capacity;
  t->slots = ns_xcalloc(t->cap, sizeof(*t->slots));
  t->rate = rate;
  t->burst = burst;
  return t;
}

void ns_iplimit_free(ns_iplimit **tp) {
  if (!*tp)
    return;
  free((*tp)->slots);
  free(*tp);
  *tp = NULL;
}

static uint64_t hash_ip(const char *s) {
  uint64_t h = 1469598103934665603ULL;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ULL;
  return h;
}

int ns_iplimit_allow(ns_iplimit *t, const char *ip, int64_t now_ms) {
  size_t start, i, victim = SIZE_MAX;
  ip_slot *s;
  if (t->rate <= 0)
    return 1;
  start = hash_ip(ip) % t->cap;
  for (i = 0; i < PROBE; i++) {
    s = &t->slots[(start + i) % t->cap];
    if (s->ip[0] && strncmp(s->ip, ip, IP_MAX - 1) == 0)
      return ns_bucket_take(&s->b, t->rate, t->burst, now_ms);
    if (!s->ip[0]) {
      if (victim == SIZE_MAX || t->slots[victim].ip[0])
        victim = (start + i) % t->cap;
    } else if (victim == SIZE_MAX ||
               (t->slots[victim].ip[0] && s->b.ms < t->slots[victim].b.ms)) {
      victim = (start + i) % t->cap;
    }
  }
  s = &t->slots[victim];
  if (!s->ip[0])
    t->used++;
  strncpy(s->ip, ip, IP_MAX - 1);
  s->ip[IP_MAX - 1] = '\0';
  ns_bucket_init(&s->b, t->burst, now_ms);
  return ns_bucket_take(&s->b, t->rate, t->burst, now_ms);
}

size_t ns_iplimit_size(const ns_iplimit *t) { return t->used; }
