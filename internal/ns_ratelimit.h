/*
 * ns_ratelimit.h -- token buckets (SPEC §7): one per connection for client
 * messages, and a bounded table of them keyed by client IP for handshakes.
 * Pure: time is passed in.
 */
#ifndef NS_RATELIMIT_H
#define NS_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

typedef struct ns_bucket {
  double tokens;
  int64_t ms; /* time of the last refill */
} ns_bucket;

/* A full bucket at `now_ms`. */
void ns_bucket_init(ns_bucket *b, double burst, int64_t now_ms);

/* Refills at `rate` per second up to `burst`, then takes one token.
 * Returns 1 when a token was taken, 0 when the bucket is empty.  A rate
 * <= 0 disables the limit (always 1). */
int ns_bucket_take(ns_bucket *b, double rate, double burst, int64_t now_ms);

/* A table of at most `capacity` per-IP buckets.  When it is full, the
 * entry idle longest among the probed slots is reused: an evicted client
 * simply starts again with a full bucket, so memory stays bounded whatever
 * the number of source addresses. */
typedef struct ns_iplimit ns_iplimit;

ns_iplimit *ns_iplimit_new(size_t capacity, double rate, double burst);
void ns_iplimit_free(ns_iplimit **t);

/* Returns 1 when `ip` may open another connection now, 0 when it must be
 * refused (HTTP 429).  Always 1 when the rate is 0. */
int ns_iplimit_allow(ns_iplimit *t, const char *ip, int64_t now_ms);

/* Entries currently held (for the metric and the tests). */
size_t ns_iplimit_size(const ns_iplimit *t);

#endif
