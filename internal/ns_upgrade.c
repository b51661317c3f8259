/*
 * ns_upgrade.c -- the pure part of a WebSocket upgrade (see ns_upgrade.h).
 *
 * Extracted from ns_ws.c's lws callback (endpoint_kind, origin_allowed,
 * urlarg, authenticate) with the same rules and the same reasons; ns_ws.c
 * now only copies bytes out of lws.
 */
#include "ns_upgrade.h"

#include <string.h>
#include <strings.h>

#include "ns_common.h"

ns_upgrade_kind ns_upgrade_endpoint(const char *path, size_t n) {
  static const struct {
    const char *path;
    ns_upgrade_kind kind;
  } eps[] = {{"/ws", NS_UPGRADE_DEVICE},
             {"/api/v1/ws", NS_UPGRADE_PUBLIC},
             {"/ws/public", NS_UPGRADE_PUBLIC},
             {"/", NS_UPGRADE_PUBLIC}};
  size_t i;
  if (n == 0 || n > NS_UPGRADE_PATH_MAX)
    return NS_UPGRADE_NONE;
  for (i = 0; i < NS_ARRAY_SIZE(eps); i++)
    if (strlen(eps[i].path) == n && memcmp(eps[i].path, path, n) == 0)
      return eps[i].kind;
  return NS_UPGRADE_NONE;
}

int ns_upgrade_origin_allowed(const char *allowed, const char *origin,
                              size_t origin_len) {
  const char *p;
  if (!allowed || !*allowed || origin_len == 0)
    return 1;
  for (p = allowed; *p;) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    while (len && *p == ' ')
      p++, len--;
    while (len && p[len - 1] == ' ')
      len--;
    if (len == origin_len && memcmp(p, origin, len) == 0)
      return 1;
    if (!end)
      break;
    p = end + 1;
  }
  return 0;
}

const char *ns_upgrade_arg(const char *args, size_t args_len, const char *name,
                           size_t *len) {
  size_t nlen = strlen(name), off = 0;
  while (off < args_len) {
    const char *a = args + off, *nul = memchr(a, '\0', args_len - off);
    size_t alen = nul ? (size_t)(nul - a) : args_len - off;
    if (alen >= NS_UPGRADE_ARG_MAX)
      return NULL; /* lws_get_urlarg_by_name stops here */
    if (alen > nlen && memcmp(a, name, nlen) == 0 && a[nlen] == '=') {
      *len = alen - nlen - 1;
      return a + nlen + 1;
    }
    off += alen + 1;
  }
  return NULL;
}

/* Copies argument `name` into `out` (`n` bytes, cut to fit) and returns its
 * full length, or -1 when absent: callers judge length limits on the
 * returned value. */
static int urlarg(const char *args, size_t args_len, const char *name,
                  char *out, size_t n) {
  size_t len, cut;
  const char *v = ns_upgrade_arg(args, args_len, name, &len);
  if (!v)
    return -1;
  cut = len >= n ? n - 1 : len;
  memcpy(out, v, cut);
  out[cut] = '\0';
  return (int)len;
}

void ns_upgrade_parse_device(const char *authz, int authz_len,
                             const char *args, size_t args_len,
                             ns_upgrade_device *out) {
  const char *tok;
  size_t tlen = 0;
  int n;
  memset(out, 0, sizeof(*out));
  /* The token is borrowed, never copied: the copy into a fixed buffer that
   * this replaced wrote up to 8 bytes past it for an Authorization header
   * of NS_TOKEN_MAX + 8..15 bytes (checked only after the copy). */
  if (authz_len > 7 && strncasecmp(authz, "Bearer ", 7) == 0) {
    tok = authz + 7;
    tlen = (size_t)authz_len - 7;
  } else {
    tok = ns_upgrade_arg(args, args_len, "token", &tlen);
  }
  if (!tok || tlen == 0) {
    out->reason = "missing token";
    return;
  }
  if (tlen > NS_TOKEN_MAX) {
    out->reason = "invalid token";
    return;
  }
  out->token = tok;
  out->token_len = tlen;
  n = urlarg(args, args_len, "device_id", out->device, sizeof(out->device));
  out->device_ok = n > 0 && n <= NS_DEVICE_ID_MAX &&
                   ns_proto_valid_device_id(out->device, (size_t)n);
  if (!out->device_ok)
    out->device[0] = '\0';
  n = urlarg(args, args_len, "device_name", out->device_name,
             sizeof(out->device_name));
  if (n > NS_DEVICE_NAME_MAX ||
      (n > 0 && !ns_proto_valid_device_name(out->device_name, (size_t)n)))
    out->device_name[0] = '\0'; /* optional metadata: dropped, not fatal */
  n = urlarg(args, args_len, "platform", out->platform, sizeof(out->platform));
  if (n > NS_PLATFORM_MAX ||
      (n > 0 && !ns_proto_valid_platform(out->platform, (size_t)n)))
    out->platform[0] = '\0';
  {
    char ack[8];
    out->ack_mode = urlarg(args, args_len, "ack", ack, sizeof(ack)) > 0 &&
                    strcmp(ack, "1") == 0;
  }
}
