/*
 * ns_rslot.c -- Redis Cluster slot arithmetic and redirect parsing (see
 * ns_rslot.h).  Pure.
 */
#include "ns_rslot.h"

#include <stdlib.h>
#include <string.h>

uint16_t ns_rslot_crc16(const char *buf, size_t len) {
  uint16_t crc = 0;
  size_t i;
  int b;
  for (i = 0; i < len; i++) {
    crc ^= (uint16_t)((uint16_t)(unsigned char)buf[i] << 8);
    for (b = 0; b < 8; b++)
      crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021)
                           : (uint16_t)(crc << 1);
  }
  return crc;
}

/* The bytes to hash: the tag when there is one, else the whole key. */
static const char *tag_of(const char *key, size_t len, size_t *taglen) {
  const char *open = memchr(key, '{', len), *close;
  if (open) {
    size_t rest = len - (size_t)(open - key) - 1;
    close = memchr(open + 1, '}', rest);
    if (close && close > open + 1) {
      *taglen = (size_t)(close - open - 1);
      return open + 1;
    }
  }
  *taglen = len;
  return key;
}

unsigned ns_rslot_of(const char *key, size_t len) {
  size_t n;
  const char *t = tag_of(key, len, &n);
  return ns_rslot_crc16(t, n) & (NS_RSLOTS - 1);
}

int ns_rslot_has_tag(const char *key, size_t len) {
  size_t n;
  return tag_of(key, len, &n) != key;
}

/* A decimal number in [lo, hi] spanning exactly [p, end): 0 or -1. */
static int parse_num(const char *p, const char *end, long lo, long hi,
                     long *out) {
  long v = 0;
  if (p == end || end - p > 6)
    return -1;
  for (; p < end; p++) {
    if (*p < '0' || *p > '9')
      return -1;
    v = v * 10 + (*p - '0');
  }
  if (v < lo || v > hi)
    return -1;
  *out = v;
  return 0;
}

int ns_rslot_redirect(const char *err, size_t len, unsigned *slot,
                      char host[NS_RSLOT_HOST_MAX + 1], int *port) {
  const char *p, *end = err + len, *sp, *colon;
  int kind;
  long v;
  size_t hl;
  if (len > 6 && memcmp(err, "MOVED ", 6) == 0) {
    kind = 1;
    p = err + 6;
  } else if (len > 4 && memcmp(err, "ASK ", 4) == 0) {
    kind = 2;
    p = err + 4;
  } else {
    return 0;
  }
  sp = memchr(p, ' ', (size_t)(end - p));
  if (!sp || parse_num(p, sp, 0, NS_RSLOTS - 1, &v) != 0)
    return 0;
  *slot = (unsigned)v;
  p = sp + 1;
  for (colon = NULL, sp = p; sp < end; sp++)
    if (*sp == ':')
      colon = sp;
  if (!colon || parse_num(colon + 1, end, 1, 65535, &v) != 0)
    return 0;
  hl = (size_t)(colon - p);
  if (hl == 0 || hl > NS_RSLOT_HOST_MAX || memchr(p, ' ', hl) ||
      memchr(p, '\0', hl))
    return 0;
  memcpy(host, p, hl);
  host[hl] = '\0';
  *port = (int)v;
  return kind;
}

int ns_rslot_seeds(const char *url, ns_rslot_seed *out, int max) {
  const char *p, *end, *item;
  int n = 0;
  long v;
  if (strncmp(url, "redis://", 8) != 0)
    return -1;
  p = url + 8;
  if (strchr(p, '@'))
    p = strrchr(p, '@') + 1; /* credentials are not supported: ignored */
  end = strchr(p, '/');
  if (end && end[1] && strcmp(end + 1, "0") != 0)
    return -1; /* a cluster serves db 0 only */
  if (!end)
    end = p + strlen(p);
  for (item = p; item < end;) {
    const char *comma = memchr(item, ',', (size_t)(end - item));
    const char *stop = comma ? comma : end, *colon;
    size_t hl;
    if (n == max)
      return -1;
    colon = memchr(item, ':', (size_t)(stop - item));
    hl = (size_t)((colon ? colon : stop) - item);
    if (hl == 0 || hl > NS_RSLOT_HOST_MAX)
      return -1;
    memcpy(out[n].host, item, hl);
    out[n].host[hl] = '\0';
    out[n].port = 6379;
    if (colon) {
      if (parse_num(colon + 1, stop, 1, 65535, &v) != 0)
        return -1;
      out[n].port = (int)v;
    }
    n++;
    if (!comma)
      break;
    item = comma + 1;
    if (item == end)
      return -1; /* a trailing comma */
  }
  return n > 0 ? n : -1;
}
