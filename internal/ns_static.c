/*
 * ns_static.c -- serves the embedded web files (ns_static.h) and the
 * console's dev-token endpoint, as one more REST route of ns_http.c.
 *
 * Every answer under /console (files, the dev token, and the 404 for a
 * name that is not there) carries the console's Content-Security-Policy:
 * scripts, styles and connections from this origin only, nothing inline,
 * no framing.  /notisync.js carries a policy of its own (it is code, not a
 * page) and Access-Control-Allow-Origin: * so an app on another origin can
 * import it as a module: it is a public file, fetched without credentials.
 * Bodies are copies of the embedded bytes (the reply path frees them).
 */
#include <arpa/inet.h>
#include <json.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ns_http_int.h"
#include "ns_rest.h"
#include "ns_static.h"

#define DEV_TOKEN_PATH "/console/dev-token"

/* 'self' covers the WebSocket of the same host and port (ws: / wss:, CSP
 * Level 3), which is all the console connects to. */
static const char console_csp[] =
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'";
static const char module_csp[] = "default-src 'none'; frame-ancestors 'none'";

const ns_static_asset *ns_static_find(const char *path) {
  const ns_static_asset *a;
  if (strcmp(path, "/console/") == 0)
    path = "/console";
  for (a = ns_static_assets; a->path; a++)
    if (strcmp(a->path, path) == 0)
      return a;
  return NULL;
}

int ns_static_host_is_loopback(const char *host) {
  char h[64];
  unsigned char a[16];
  const char *end;
  size_t n;
  if (host[0] == '[') { /* "[::1]" or "[::1]:port" */
    end = strchr(host, ']');
    if (!end || (end[1] && end[1] != ':'))
      return 0;
    host++;
  } else {
    end = strchr(host, ':');
    if (!end)
      end = host + strlen(host);
  }
  n = (size_t)(end - host);
  if (n == 0 || n >= sizeof(h))
    return 0;
  memcpy(h, host, n);
  h[n] = '\0';
  if (strcasecmp(h, "localhost") == 0)
    return 1;
  if (inet_pton(AF_INET, h, a) == 1)
    return a[0] == 127;
  return inet_pton(AF_INET6, h, a) == 1 &&
         memcmp(a, in6addr_loopback.s6_addr, 16) == 0;
}

int ns_static_dev_user_ok(const char *user) {
  size_t n = strlen(user), i;
  if (n < 1 || n > NS_SUB_MAX)
    return 0;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)user[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || strchr("._:@+-", c)))
      return 0;
  }
  return 1;
}

/* Adds `name: value` to the headers being written; nonzero when they do
 * not fit. */
static int add_hdr(struct lws *wsi, const char *name, const char *value,
                   unsigned char **p, unsigned char *end) {
  return lws_add_http_header_by_name(wsi, (const unsigned char *)name,
                                     (const unsigned char *)value,
                                     (int)strlen(value), p, end);
}

static int console_headers(struct lws *wsi, unsigned char **p,
                           unsigned char *end) {
  return add_hdr(wsi, "content-security-policy:", console_csp, p, end) ||
         add_hdr(wsi, "x-content-type-options:", "nosniff", p, end) ||
         add_hdr(wsi, "x-frame-options:", "DENY", p, end) ||
         add_hdr(wsi, "referrer-policy:", "no-referrer", p, end) ||
         add_hdr(wsi, "cache-control:", "no-cache", p, end);
}

/* The dev token is a credential: never stored by a cache. */
static int dev_token_headers(struct lws *wsi, unsigned char **p,
                             unsigned char *end) {
  return add_hdr(wsi, "content-security-policy:", console_csp, p, end) ||
         add_hdr(wsi, "x-content-type-options:", "nosniff", p, end) ||
         add_hdr(wsi, "referrer-policy:", "no-referrer", p, end) ||
         add_hdr(wsi, "cache-control:", "no-store", p, end);
}

static int module_headers(struct lws *wsi, unsigned char **p,
                          unsigned char *end) {
  return add_hdr(wsi, "content-security-policy:", module_csp, p, end) ||
         add_hdr(wsi, "x-content-type-options:", "nosniff", p, end) ||
         add_hdr(wsi, "access-control-allow-origin:", "*", p, end) ||
         add_hdr(wsi, "cache-control:", "no-cache", p, end);
}

/* GET /console/dev-token?user=U: 404 unless dev_console is on (the path
 * then does not exist), 403 for a Host that is not loopback, 400 for a
 * missing or unusable `user`, else 200 {"token","user_id","expires_at"}. */
static void dev_token(ns_req *r) {
  const ns_config *cfg = r->srv->cfg;
  char host[256], arg[NS_REST_QUERY_ARG_MAX + 8], tok[4096];
  const char *user;
  int64_t now = ns_now_ms() / 1000;
  json_object *o;
  if (!cfg->dev_console) {
    ns__http_reply_error(r, 404, "not_found", "no such route");
    return;
  }
  r->add_headers = dev_token_headers;
  if (lws_hdr_copy(r->wsi, host, sizeof(host), WSI_TOKEN_HOST) <= 0 ||
      !ns_static_host_is_loopback(host)) {
    ns__http_reply_error(r, 403, "forbidden",
                         "dev tokens are served to a loopback Host only");
    return;
  }
  user = lws_get_urlarg_by_name(r->wsi, "user=", arg, (int)sizeof(arg));
  if (!user || !ns_static_dev_user_ok(user)) {
    ns__http_reply_field_error(r, 400, "bad_request", "user",
                               "user: 1-128 of [A-Za-z0-9._:@+-] required");
    return;
  }
  if (ns_auth_mint_hs256(cfg->jwt_secret, user, NULL, now,
                         NS_STATIC_DEV_TOKEN_TTL_S, tok, sizeof(tok)) != 0) {
    ns__http_reply_error(r, 500, "internal", "cannot sign a dev token");
    return;
  }
  o = json_object_new_object();
  json_object_object_add(o, "token", json_object_new_string(tok));
  json_object_object_add(o, "user_id", json_object_new_string(user));
  ns__http_add_ts(o, "expires_at", (now + NS_STATIC_DEV_TOKEN_TTL_S) * 1000);
  ns__http_reply_json(r, 200, o);
}

void ns__static_route(ns_req *r, const char *arg) {
  const ns_static_asset *a;
  char *body;
  r->add_headers =
      strcmp(r->path, "/notisync.js") == 0 ? module_headers : console_headers;
  if (strcmp(r->path, DEV_TOKEN_PATH) == 0) {
    dev_token(r);
    return;
  }
  a = ns_static_find(r->path);
  if (!a) {
    ns__http_reply_error(r, 404, "not_found", "no such file");
    return;
  }
  body = ns_xmalloc(a->len ? a->len : 1);
  memcpy(body, a->data, a->len);
  ns__http_reply_raw(r, 200, body, a->len, a->ctype);
}
