/*
 * fuzz_rslot.c -- the Redis Cluster parsers of ns_rslot.h: a redirect
 * error reply (MOVED / ASK, bytes from a Redis node), a redis_url seed
 * list (configuration), and the slot of a key (keys carry user and device
 * ids from tokens).
 *
 * Input: any bytes.  Each is fed whole to every parser (the seed list as a
 * NUL-terminated copy); the results are checked against the rules restated
 * here, independently of ns_rslot.c.  A broken invariant abort()s.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ns_rslot.h"

#define CHECK(cond)                                                        \
  do {                                                                     \
    if (!(cond))                                                           \
      abort();                                                             \
  } while (0)

/* The hash tag, restated: the bytes between the first '{' and the first
 * '}' after it, when there is at least one; else the whole key. */
static void tag_of(const char *k, size_t n, const char **t, size_t *tn) {
  size_t i, j;
  *t = k;
  *tn = n;
  for (i = 0; i < n && k[i] != '{'; i++)
    ;
  if (i == n)
    return;
  for (j = i + 1; j < n && k[j] != '}'; j++)
    ;
  if (j == n || j == i + 1)
    return;
  *t = k + i + 1;
  *tn = j - i - 1;
}

static int digits(const char *p, size_t n) {
  size_t i;
  if (n == 0)
    return 0;
  for (i = 0; i < n; i++)
    if (p[i] < '0' || p[i] > '9')
      return 0;
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *in = (const char *)data, *t;
  char host[NS_RSLOT_HOST_MAX + 1];
  ns_rslot_seed seeds[4];
  unsigned slot = 0;
  size_t tn;
  int port = 0, kind, n, i;
  char *z;

  /* slot: in range, and the tag's own slot */
  slot = ns_rslot_of(in, size);
  CHECK(slot < NS_RSLOTS);
  tag_of(in, size, &t, &tn);
  CHECK(slot == (ns_rslot_crc16(t, tn) & (NS_RSLOTS - 1)));
  CHECK(ns_rslot_has_tag(in, size) == (t != in));

  /* redirect: a well-formed one restates its parts */
  kind = ns_rslot_redirect(in, size, &slot, host, &port);
  CHECK(kind >= 0 && kind <= 2);
  if (kind) {
    const char *word = kind == 1 ? "MOVED " : "ASK ";
    size_t wl = strlen(word), hl = strlen(host);
    CHECK(size > wl && memcmp(in, word, wl) == 0);
    CHECK(slot < NS_RSLOTS);
    CHECK(port >= 1 && port <= 65535);
    CHECK(hl >= 1 && hl <= NS_RSLOT_HOST_MAX && !memchr(host, ' ', hl));
    /* the input ends with "<host>:<port>" and the port has no sign */
    {
      char tail[NS_RSLOT_HOST_MAX + 16];
      int tl = snprintf(tail, sizeof(tail), "%s:", host);
      const char *p = in + size;
      while (p > in && p[-1] >= '0' && p[-1] <= '9')
        p--;
      long v = 0;
      const char *d;
      CHECK(digits(p, (size_t)(in + size - p)));
      for (d = p; d < in + size; d++)
        v = v * 10 + (*d - '0');
      CHECK(v == port);
      CHECK((size_t)(p - in) >= (size_t)tl &&
            memcmp(p - tl, tail, (size_t)tl) == 0);
    }
  }

  /* seeds: each has a host without ',' '/' and a valid port */
  z = malloc(size + 1);
  if (!z)
    return 0;
  memcpy(z, data, size);
  z[size] = '\0';
  n = ns_rslot_seeds(z, seeds, 4);
  CHECK(n == -1 || (n >= 1 && n <= 4));
  if (n > 0) {
    CHECK(strncmp(z, "redis://", 8) == 0);
    for (i = 0; i < n; i++) {
      CHECK(seeds[i].host[0] != '\0');
      CHECK(!strchr(seeds[i].host, ',') && !strchr(seeds[i].host, '/'));
      CHECK(seeds[i].port >= 1 && seeds[i].port <= 65535);
    }
  }
  free(z);
  return 0;
}
