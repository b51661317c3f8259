/*
 * ns_http_int.h -- what the REST files (ns_http.c and the feature handlers
 * such as ns_notify.c) share: the request and its reply helpers.
 */
#ifndef NS_HTTP_INT_H
#define NS_HTTP_INT_H

#include "ns_server_int.h"

enum { M_GET = 1, M_POST = 2, M_PUT = 4, M_DELETE = 8, M_PATCH = 16, M_OTHER = 32 };

/* One REST request.  A handler replies at once or sets `pending` and
 * replies from an async completion; if the client went away meanwhile,
 * `wsi` is NULL and the reply call frees the request. */
typedef struct ns_req {
  ns_server *srv;
  struct lws *wsi;
  int method;
  char path[256];
  char *body;             /* NUL-terminated, body_len bytes */
  size_t body_len, body_max;
  int pending;
  int status;
  char *resp;
  size_t resp_len;
  const char *ctype;
  int headers_sent;
  ns_principal who;
  int auth_rc;            /* 0, NS_EAUTH / NS_EEXPIRED, or 1 = no token */
  char device_hdr[NS_DEVICE_ID_MAX + 1]; /* X-Device-ID */
  int device_hdr_too_long;                 /* ... longer than any device_id */
  int accepted_before_stop; /* shutdown finishes it rather than refusing */
  /* Headers beyond the common ones (ns_static.c: CSP, nosniff), added
   * when the reply's headers are written; nonzero = they did not fit. */
  int (*add_headers)(struct lws *wsi, unsigned char **p, unsigned char *end);
} ns_req;

struct ns_rest_err;

void ns__http_req_free(ns_req *r);
void ns__http_reply_raw(ns_req *r, int status, char *body, size_t len,
                        const char *ctype);
/* Takes ownership of `o`. */
void ns__http_reply_json(ns_req *r, int status, struct json_object *o);
void ns__http_reply_error(ns_req *r, int status, const char *code,
                          const char *msg);
/* The same with a "field" member naming the offending field (SPEC §6). */
void ns__http_reply_field_error(ns_req *r, int status, const char *code,
                                const char *field, const char *msg);
/* 400 from a parser's refusal: code, message and (when known) field. */
void ns__http_reply_bad(ns_req *r, const struct ns_rest_err *err);
void ns__http_reply_empty(ns_req *r, int status);
/* 1 when the request carries a valid token; otherwise replies 401. */
int ns__http_need_token(ns_req *r);
void ns__http_unavailable(ns_req *r);
void ns__http_add_ts(struct json_object *o, const char *key, int64_t ms);
/* The request's query arguments, url-decoded by lws, each followed by a
 * NUL, in a heap buffer for the caller to free (NULL and *len 0 when there
 * is no query); shared by the REST check and the WebSocket upgrade. */
char *ns__http_query_args(struct lws *wsi, size_t *len);

/* Notification routes (ns_notify.c): /api/v1/notifications and below. */
void ns__notify_root(ns_req *r, const char *arg);
void ns__notify_sub(ns_req *r, const char *arg);

/* Comment channel routes (ns_comments.c). */
void ns__comments_route(ns_req *r, const char *rest);
void ns__broadcast_route(ns_req *r, const char *arg);

/* Embedded web files and the console's dev token (ns_static.c):
 * /notisync.js, /console and below. */
void ns__static_route(ns_req *r, const char *arg);

#endif
