/*
 * ns_common.c -- error names, aborting allocators, clocks and timestamps.
 */
#include "ns_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *ns_strerror(int err) {
  switch (err) {
  case 0:
    return "ok";
#define XX(name, code, msg) \
  case NS_##name:           \
    return msg;
    NS_ERR_MAP(XX)
#undef XX
  default:
    return err < 0 && err > -4096 ? strerror(-err) : "unknown error";
  }
}

static void oom(size_t n) {
  fprintf(stderr, "notisyncd: out of memory allocating %zu bytes\n", n);
  abort();
}

void *ns_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p)
    oom(n);
  return p;
}

void *ns_xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (!p)
    oom(n * size);
  return p;
}

void *ns_xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q)
    oom(n);
  return q;
}

char *ns_xstrndup(const char *s, size_t n) {
  char *p = ns_xmalloc(n + 1);
  memcpy(p, s, n);
  p[n] = '\0';
  return p;
}

char *ns_xstrdup(const char *s) { return ns_xstrndup(s, strlen(s)); }

int64_t ns_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t ns_mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ns_format_ts(int64_t ms, char *buf) {
  time_t secs;
  struct tm tm;
  if (ms < 0)
    ms = 0;
  secs = (time_t)(ms / 1000);
  if (!gmtime_r(&secs, &tm) || tm.tm_year + 1900 > 9999) {
    snprintf(buf, NS_TS_LEN, "9999-12-31T23:59:59.999Z");
    return;
  }
  snprintf(buf, NS_TS_LEN, "%04u-%02u-%02uT%02u:%02u:%02u.%03uZ",
           (unsigned)(tm.tm_year + 1900) % 10000u, (unsigned)(tm.tm_mon + 1) % 100u,
           (unsigned)tm.tm_mday % 100u, (unsigned)tm.tm_hour % 100u,
           (unsigned)tm.tm_min % 100u, (unsigned)tm.tm_sec % 100u,
           (unsigned)(ms % 1000));
}
