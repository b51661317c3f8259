/*
 * nsb_bmark.c -- the markers the bench puts in what it sends, so that a
 * receiver can tell which message arrived and when it left: the broadcast
 * body of the bcast-* scenarios (a JSON object that reaches an Nchan
 * subscriber as the whole frame and a notisyncd public connection as the
 * broadcast's `data`) and the "nsb:<seq>:<t>" notification body.  Pure: no
 * syscalls; `notisync-bench selftest` checks them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nsb.h"

int nsb_bmark_body(char *out, size_t cap, int wrap, uint32_t run, uint32_t seq,
                   int64_t t_ns, int size) {
  static const char head[] = "{\"type\":\"bench\",\"data\":";
  size_t off = 0, base, pad = 0;
  int n;
  if (wrap) {
    if (cap < sizeof(head))
      return -1;
    memcpy(out, head, sizeof(head) - 1);
    off = sizeof(head) - 1;
  }
  n = snprintf(out + off, cap - off, "{\"nsb_run\":%u,\"nsb_seq\":%u,"
               "\"nsb_t\":%lld,\"pad\":\"", run, seq, (long long)t_ns);
  if (n < 0 || (size_t)n >= cap - off)
    return -1;
  off += (size_t)n;
  base = (size_t)n + 2; /* the object without padding: + "\"}" */
  if (size > 0 && (size_t)size > base)
    pad = (size_t)size - base;
  if (off + pad + 2 + (size_t)(wrap ? 1 : 0) + 1 > cap)
    return -1;
  memset(out + off, 'x', pad);
  off += pad;
  out[off++] = '"';
  out[off++] = '}';
  if (wrap)
    out[off++] = '}';
  out[off] = '\0';
  return (int)off;
}

/* The unsigned integer after `"key":` in [p, p+n); 0 or -1. */
static int find_uint(const char *p, size_t n, const char *key,
                     unsigned long long *v) {
  size_t k = strlen(key), i;
  for (i = 0; i + k + 2 < n; i++) {
    size_t j;
    unsigned long long x = 0;
    int digits = 0;
    if (p[i] != '"' || memcmp(p + i + 1, key, k) != 0 || p[i + 1 + k] != '"')
      continue;
    j = i + k + 2;
    while (j < n && (p[j] == ' ' || p[j] == '\t' || p[j] == '\n' || p[j] == '\r'))
      j++;
    if (j >= n || p[j] != ':')
      continue;
    j++;
    while (j < n && (p[j] == ' ' || p[j] == '\t' || p[j] == '\n' || p[j] == '\r'))
      j++;
    while (j < n && p[j] >= '0' && p[j] <= '9' && digits < 20) {
      unsigned d = (unsigned)(p[j] - '0');
      if (x > (~0ULL - d) / 10)
        return -1;
      x = x * 10 + d;
      j++;
      digits++;
    }
    if (!digits || (j < n && p[j] >= '0' && p[j] <= '9'))
      return -1;
    *v = x;
    return 0;
  }
  return -1;
}

int nsb_bmark_parse(const char *p, size_t n, uint32_t *run, uint32_t *seq,
                    int64_t *t_ns) {
  unsigned long long r, s, t;
  if (find_uint(p, n, "nsb_run", &r) != 0 || r > UINT32_MAX ||
      find_uint(p, n, "nsb_seq", &s) != 0 || s > UINT32_MAX ||
      find_uint(p, n, "nsb_t", &t) != 0 || t > INT64_MAX)
    return -1;
  *run = (uint32_t)r;
  *seq = (uint32_t)s;
  *t_ns = (int64_t)t;
  return 0;
}

int nsb_marker_parse(const char *s, uint32_t *seq, int64_t *t) {
  char *e;
  unsigned long long v;
  if (!s || strncmp(s, "nsb:", 4) != 0)
    return -1;
  v = strtoull(s + 4, &e, 10);
  if (e == s + 4 || *e != ':' || v > UINT32_MAX)
    return -1;
  *seq = (uint32_t)v;
  s = e + 1;
  v = strtoull(s, &e, 10);
  if (e == s)
    return -1;
  *t = (int64_t)v;
  return 0;
}

int nsb_rx_bit(int mode, uint32_t nbits, uint32_t user, int bcast,
               uint32_t seq, uint32_t *bit) {
  uint32_t b;
  switch (mode) {
  case NSB_RX_BCAST:
    if (!bcast)
      return 2;
    b = seq;
    break;
  case NSB_RX_STORM:
    if (bcast || !nbits)
      return 2;
    if (seq / nbits != user)
      return 1;
    b = seq % nbits;
    break;
  case NSB_RX_C100K:
    if (bcast) {
      if (seq >= UINT32_MAX - 1)
        return 2;
      b = 1 + seq;
    } else {
      if (seq != user)
        return 1;
      b = 0;
    }
    break;
  default:
    return 2;
  }
  if (b >= nbits)
    return 2;
  *bit = b;
  return 0;
}
