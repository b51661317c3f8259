/*
 * ns_common.h -- the error vocabulary, allocation policy and small helpers
 * every NotiSync module shares.
 *
 * Errors: functions return 0 on success or a negative NS_E* code.  Syscall
 * failures return -errno.  ns_strerror() names either kind.
 *
 * Memory: ns_xmalloc() and friends abort on OOM and are for internal
 * bookkeeping.  Anything sized by a client uses plain malloc() (the "try"
 * policy) and answers the client with 1009/1011 or 413/500 on failure.
 */
#ifndef NS_COMMON_H
#define NS_COMMON_H

#include <stddef.h>
#include <stdint.h>

#define NS_ERR_MAP(XX)                                   \
  XX(EINVAL, -1001, "invalid argument")                  \
  XX(ENOMEM, -1002, "out of memory")                     \
  XX(EAGAIN, -1003, "need more input")                   \
  XX(EAUTH, -1004, "invalid token")                      \
  XX(EEXPIRED, -1005, "token expired")                   \
  XX(ENOTFOUND, -1006, "not found")                      \
  XX(EFORBIDDEN, -1007, "forbidden")                     \
  XX(ETOOBIG, -1008, "too large")                        \
  XX(EUNAVAIL, -1009, "backend unavailable")             \
  XX(EIO, -1010, "i/o error")                            \
  XX(ERANGE, -1011, "value out of range")                \
  XX(EPARSE, -1012, "parse error")                       \
  XX(ELIMIT, -1013, "limit reached")                     \
  XX(ECANCELED, -1014, "canceled")

typedef enum {
#define XX(name, code, msg) NS_##name = (code),
  NS_ERR_MAP(XX)
#undef XX
} ns_err;

/* Returns a static string naming `err` (an NS_E* code or -errno). */
const char *ns_strerror(int err);

void *ns_xmalloc(size_t n);
void *ns_xcalloc(size_t n, size_t size);
void *ns_xrealloc(void *p, size_t n);
char *ns_xstrdup(const char *s);
char *ns_xstrndup(const char *s, size_t n);

/* Wall clock in milliseconds since the epoch, and a monotonic clock in ms. */
int64_t ns_now_ms(void);
int64_t ns_mono_ms(void);

/* Formats `ms` since the epoch as RFC 3339 UTC with milliseconds
 * ("2026-01-15T10:30:00.123Z") into `buf` (at least NS_TS_LEN bytes). */
#define NS_TS_LEN 32
void ns_format_ts(int64_t ms, char *buf);

#define NS_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define NS_MIN(a, b) ((a) < (b) ? (a) : (b))
#define NS_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif
