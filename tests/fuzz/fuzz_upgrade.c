/*
 * fuzz_upgrade.c -- the WebSocket upgrade parsers of ns_upgrade.h: the
 * endpoint of a path, the Origin check and a device upgrade's token,
 * device_id, device_name, platform and ack.
 *
 * Input: four lines, then the query.
 *
 *   line 1  the request path            line 3  the Origin header
 *   line 2  the Authorization header    line 4  allowed_origins
 *   rest    query arguments, each "name=value" followed by a NUL, as lws
 *           keeps them (url-decoded; the seeds are made with printf '\0')
 *
 * The headers reach the parsers the way ns_ws.c hands them over: the
 * Authorization header copied into a buffer of the size ns_ws.c uses (an
 * empty line is absent, a line too long for the buffer -1, as from
 * lws_hdr_copy), the Origin whole and exact.
 * Each result is checked against the rule restated here, independently of
 * ns_upgrade.c; any broken invariant abort()s.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ns_common.h"
#include "ns_proto.h"
#include "ns_upgrade.h"

#define CHECK(cond)                                                        \
  do {                                                                     \
    if (!(cond))                                                           \
      abort();                                                             \
  } while (0)

/* ---- the rules, restated ---- */

static int id_byte(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' || c == '-';
}

static ns_upgrade_kind endpoint_of(const char *p, size_t n) {
  if (n == 3 && memcmp(p, "/ws", 3) == 0)
    return NS_UPGRADE_DEVICE;
  if ((n == 10 && memcmp(p, "/api/v1/ws", 10) == 0) ||
      (n == 10 && memcmp(p, "/ws/public", 10) == 0) || (n == 1 && p[0] == '/'))
    return NS_UPGRADE_PUBLIC;
  return NS_UPGRADE_NONE;
}

/* allowed_origins as a list: split at ',', blanks trimmed at both ends. */
static int origin_listed(const char *list, const char *o, size_t olen) {
  size_t i = 0, n = strlen(list);
  while (i <= n) {
    size_t j = i, a, b;
    while (j < n && list[j] != ',')
      j++;
    a = i;
    b = j;
    while (a < b && list[a] == ' ')
      a++;
    while (b > a && list[b - 1] == ' ')
      b--;
    if (b - a == olen && memcmp(list + a, o, olen) == 0)
      return 1;
    i = j + 1;
  }
  return 0;
}

/* lws_get_urlarg_by_name() over the NUL-separated list, with the handler's
 * NS_TOKEN_MAX + 32 byte buffer: the first "name=" prefix wins; the scan
 * stops at an argument that buffer cannot hold. */
static const char *arg_of(const char *args, size_t n, const char *name,
                          size_t *len) {
  size_t off = 0, nl = strlen(name);
  while (off < n) {
    size_t l = 0;
    while (off + l < n && args[off + l] != '\0')
      l++;
    if (l + 1 > NS_TOKEN_MAX + 32)
      return NULL;
    if (l >= nl + 1 && memcmp(args + off, name, nl) == 0 && args[off + nl] == '=') {
      *len = l - nl - 1;
      return args + off + nl + 1;
    }
    off += l + 1;
  }
  return NULL;
}

static void check_device(const char *authz, int alen, const char *args,
                         size_t n) {
  ns_upgrade_device *d = malloc(sizeof(*d));
  const char *tok, *v;
  size_t tlen = 0, vlen = 0;
  int from_header;
  CHECK(d);
  ns_upgrade_parse_device(authz, alen, args, n, d);
  from_header = alen > 7 && strncasecmp(authz, "Bearer ", 7) == 0;
  if (from_header) {
    tok = authz + 7;
    tlen = (size_t)alen - 7;
  } else {
    tok = arg_of(args, n, "token", &tlen);
  }
  if (!tok || tlen == 0) {
    CHECK(d->reason && strcmp(d->reason, "missing token") == 0);
  } else if (tlen > NS_TOKEN_MAX) {
    CHECK(d->reason && strcmp(d->reason, "invalid token") == 0);
  } else {
    CHECK(d->reason == NULL);
  }
  if (d->reason) {
    /* a refusal leaves nothing behind: no token, no device */
    CHECK(!d->token && d->token_len == 0 && !d->device_ok &&
          d->device[0] == '\0');
    free(d);
    return;
  }
  /* borrowed, never copied: it points at the very bytes */
  CHECK(d->token == tok && d->token_len == tlen);

  v = arg_of(args, n, "device_id", &vlen);
  {
    int ok = v && vlen >= 1 && vlen <= NS_DEVICE_ID_MAX;
    for (size_t i = 0; ok && i < vlen; i++)
      ok = id_byte((unsigned char)v[i]);
    CHECK(d->device_ok == ok);
    if (ok)
      CHECK(strlen(d->device) == vlen && memcmp(d->device, v, vlen) == 0);
  }
  v = arg_of(args, n, "device_name", &vlen);
  if (d->device_name[0])
    CHECK(v && strlen(d->device_name) == vlen && vlen <= NS_DEVICE_NAME_MAX &&
          memcmp(d->device_name, v, vlen) == 0 &&
          ns_proto_valid_device_name(v, vlen));
  else
    CHECK(!v || vlen == 0 || vlen > NS_DEVICE_NAME_MAX ||
          !ns_proto_valid_device_name(v, vlen));
  v = arg_of(args, n, "platform", &vlen);
  if (d->platform[0])
    CHECK(v && strlen(d->platform) == vlen && vlen <= NS_PLATFORM_MAX &&
          memcmp(d->platform, v, vlen) == 0);
  else
    CHECK(!v || vlen == 0 || vlen > NS_PLATFORM_MAX ||
          !ns_proto_valid_platform(v, vlen));
  v = arg_of(args, n, "ack", &vlen);
  CHECK(d->ack_mode == (v && vlen == 1 && v[0] == '1'));
  free(d);
}

/* Splits off the next line of the input: [*p, eol) and moves *p past it. */
static const char *line(const char **p, const char *end, size_t *len) {
  const char *s = *p, *nl = memchr(s, '\n', (size_t)(end - s));
  const char *e = nl ? nl : end;
  *len = (size_t)(e - s);
  *p = nl ? nl + 1 : end;
  return s;
}

/* The Authorization header as ns_ws.c passes it: *n its length, 0 when
 * empty (absent), -1 when it does not fit ns_ws.c's buffer of `cap` bytes
 * (lws_hdr_copy fails).  The copy is exactly *n bytes with nothing after
 * them (the parser needs no NUL), so ASan sees any read past the header. */
static char *header(const char *s, size_t len, size_t cap, int *n) {
  char *b;
  *n = len >= cap ? -1 : (int)len;
  b = malloc(*n > 0 ? (size_t)*n : 1);
  CHECK(b);
  if (*n > 0)
    memcpy(b, s, (size_t)*n);
  return b;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *p = (const char *)data, *end = p + size, *path, *az, *org, *al;
  size_t plen, azlen, olen, allen, alen;
  char *authz, *origin, *allowed, *args;
  int an;

  path = line(&p, end, &plen);
  az = line(&p, end, &azlen);
  org = line(&p, end, &olen);
  al = line(&p, end, &allen);
  alen = (size_t)(end - p);

  /* endpoint: the pure function over the exact bytes */
  CHECK(ns_upgrade_endpoint(path, plen) ==
        (plen <= NS_UPGRADE_PATH_MAX ? endpoint_of(path, plen)
                                     : NS_UPGRADE_NONE));

  /* Origin: allowed_origins is a config string (no NUL in it) */
  allowed = malloc(allen + 1);
  CHECK(allowed);
  memcpy(allowed, al, allen);
  allowed[allen] = '\0';
  if (!memchr(al, '\0', allen)) {
    /* the whole Origin, whatever its length (ns_ws.c copies all of it) */
    origin = malloc(olen ? olen : 1);
    CHECK(origin);
    if (olen)
      memcpy(origin, org, olen);
    CHECK(ns_upgrade_origin_allowed(allowed, origin, olen) ==
          (allen == 0 || olen == 0 || origin_listed(allowed, origin, olen)));
    free(origin);
  }
  free(allowed);

  /* device upgrade: exact-size copy of the arguments (ASan sees overreads) */
  authz = header(az, azlen, NS_UPGRADE_AUTHZ_MAX + 1, &an);
  args = malloc(alen ? alen : 1);
  CHECK(args);
  if (alen)
    memcpy(args, p, alen);
  check_device(authz, an, args, alen);
  free(args);
  free(authz);
  return 0;
}
