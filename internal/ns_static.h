/*
 * ns_static.h -- the web files compiled into the binary: the client module
 * clients/js/notisync.js at GET /notisync.js and the web console
 * (clients/console/ files) at GET /console and /console/NAME, every answer with
 * a Content-Security-Policy and X-Content-Type-Options: nosniff.  With
 * `dev_console = true` (loopback `listen` only, checked by ns_config) the
 * console may also ask GET /console/dev-token?user=U for a 1-hour HS256
 * token; otherwise that path is 404 like any unknown file.
 *
 * The table is generated at build time by scripts/embed_static.cmake
 * (ns_static_data.c in the build tree); the lookups here are pure.
 */
#ifndef NS_STATIC_H
#define NS_STATIC_H

#include <stddef.h>

typedef struct ns_static_asset {
  const char *path;           /* "/notisync.js", "/console", "/console/app.js" */
  const char *ctype;          /* Content-Type */
  const unsigned char *data;  /* `len` bytes (NUL after them) */
  size_t len;
} ns_static_asset;

/* Generated: every embedded file, ended by a row whose path is NULL. */
extern const ns_static_asset ns_static_assets[];

/* Lifetime of a dev token minted for the console. */
#define NS_STATIC_DEV_TOKEN_TTL_S 3600

/* The asset served at `path` (exact; "/console/" is "/console"), or NULL. */
const ns_static_asset *ns_static_find(const char *path);

/* 1 when `host` (a Host header value, with or without ":port") names the
 * loopback interface: localhost, 127.0.0.0/8 or [::1].  A dev token is
 * handed only to such a Host, so a page of another site that rebinds its
 * DNS name to 127.0.0.1 cannot read one. */
int ns_static_host_is_loopback(const char *host);

/* 1 when `user` may be the `sub` of a dev token: 1-128 bytes of
 * [A-Za-z0-9._:@+-]. */
int ns_static_dev_user_ok(const char *user);

#endif
