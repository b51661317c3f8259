/*
 * ns_upgrade.h -- the pure part of a WebSocket upgrade (SPEC §2): which
 * endpoint a path names, whether an Origin may upgrade, and what a device
 * upgrade carries (the token from `Authorization: Bearer` or `?token=`,
 * device_id, device_name, platform, ack).  Bytes in, structs out: no lws,
 * no clock, no keys.  ns_ws.c copies the request path, the two headers and
 * the query arguments out of lws, calls these functions and then verifies
 * the token itself (ns_auth_verify); tests/fuzz/fuzz_upgrade.c fuzzes them.
 *
 * Query arguments arrive the way lws keeps them: url-decoded "name=value"
 * strings, each followed by a NUL, in request order.  A value is looked up
 * as lws_get_urlarg_by_name() does it: the first argument whose text starts
 * with "name=" wins, and the scan stops at the first argument of
 * NS_UPGRADE_ARG_MAX bytes or more (lws could not copy it into the handler's
 * buffer), so that argument and every later one count as absent.
 */
#ifndef NS_UPGRADE_H
#define NS_UPGRADE_H

#include <stddef.h>

#include "ns_proto.h"

#define NS_UPGRADE_PATH_MAX 255 /* a longer path is no endpoint */
#define NS_UPGRADE_AUTHZ_MAX (NS_TOKEN_MAX + 15) /* longer: ignored */
#define NS_UPGRADE_ARG_MAX (NS_TOKEN_MAX + 32)   /* see above */

typedef enum {
  NS_UPGRADE_NONE = 0,   /* no WebSocket on this path: 404 */
  NS_UPGRADE_DEVICE = 1, /* /ws */
  NS_UPGRADE_PUBLIC = 2, /* /api/v1/ws, /ws/public, / */
} ns_upgrade_kind;

/* The endpoint named by the `n` bytes at `path` (the URI path without its
 * query, as lws gives it).  Exact matches only; an empty path or one longer
 * than NS_UPGRADE_PATH_MAX bytes is NS_UPGRADE_NONE. */
ns_upgrade_kind ns_upgrade_endpoint(const char *path, size_t n);

/* 1 when a browser page of `origin` may upgrade, given `allowed` (the
 * allowed_origins config value: comma-separated, blanks around entries
 * ignored; NULL or "" allows any).  `origin_len` is the Origin header's
 * length in bytes, 0 when it is absent or empty: a client that sends none is
 * not a browser and is allowed.  Otherwise the origin must equal one entry
 * byte for byte. */
int ns_upgrade_origin_allowed(const char *allowed, const char *origin,
                              size_t origin_len);

/* What a device upgrade (/ws) carries, before the token is verified. */
typedef struct ns_upgrade_device {
  /* The refusal decided without the token's signature, or NULL:
   * "missing token", "invalid token" (longer than NS_TOKEN_MAX).  When
   * NULL, `token` is the token to verify and `device_ok` says whether
   * device_id is valid (the caller refuses "invalid device_id" only after
   * the token passed). */
  const char *reason;
  const char *token;  /* borrowed from `authz` or `args`; not NUL-terminated */
  size_t token_len;   /* 1..NS_TOKEN_MAX when reason is NULL, else 0 */
  int device_ok;
  char device[NS_DEVICE_ID_MAX + 1];         /* when device_ok */
  char device_name[NS_DEVICE_NAME_MAX + 1];  /* "" when absent or invalid */
  char platform[NS_PLATFORM_MAX + 1];        /* "" when absent or invalid */
  int ack_mode;                              /* ack=1 */
} ns_upgrade_device;

/* Parses a device upgrade.  `authz` is the Authorization header as the
 * caller copied it into a buffer of NS_UPGRADE_AUTHZ_MAX + 1 bytes:
 * `authz_len` bytes (no NUL needed after them), 0 when absent, -1 when it
 * did not fit (then it is ignored, as a header that is not "Bearer ..."
 * is).  The token is the header's after "Bearer " (any case) when that
 * leaves at least one byte, else the query's token=.  `args` (`args_len`
 * bytes) holds the query arguments (see the file comment).  Fills *out,
 * whose `token` points into `authz` or `args`: both must outlive its use.
 * Never fails (a refusal is out->reason). */
void ns_upgrade_parse_device(const char *authz, int authz_len,
                             const char *args, size_t args_len,
                             ns_upgrade_device *out);

/* Looks up query argument `name` (without '=') as described in the file
 * comment.  Returns the value (inside `args`, NUL-terminated when `args`
 * ends its arguments with NULs) and its length in *len, or NULL when it is
 * absent or the scan stopped before it. */
const char *ns_upgrade_arg(const char *args, size_t args_len, const char *name,
                           size_t *len);

#endif
