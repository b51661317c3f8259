/*
 * ns_rest.h -- the REST request parsers (SPEC §6): every piece of a REST
 * request that a handler reads from untrusted bytes -- bodies, query values,
 * path pieces and the X-Device-ID header -- turned into a small result
 * struct.  Pure: bytes in, structs out; json-c and ns_proto only, no lws,
 * no Redis, no PostgreSQL.  tests/fuzz/fuzz_rest.c fuzzes every function
 * here and tests/unit/test_rest.c pins their accept/reject cases.
 *
 * Bodies are parsed with ns_proto_parse_json (strict, depth-limited), so a
 * body that is not JSON fails with code "bad_json" and the parser's message.
 * A body that is JSON but breaks a field rule fails with code
 * "bad_request", `field` naming the field and `message` starting with
 * "<field>: ".  The handlers decide which of these reach the wire (the
 * comment handlers send `field`, the others only the message).
 *
 * Path parsers never fail with a message: they classify the path, and the
 * handler answers 404 with its own wording for each kind.
 */
#ifndef NS_REST_H
#define NS_REST_H

#include <stddef.h>

#include "ns_proto.h"

struct json_object;

#define NS_REST_CONTENT_MAX 10000  /* comment content, bytes */
#define NS_REST_TYPE_MAX 64        /* broadcast type, bytes */
#define NS_REST_LIMIT_DEFAULT 50   /* GET /api/v1/notifications ?limit= */
#define NS_REST_LIMIT_MAX 200
#define NS_REST_PIECE_MAX 63       /* longest {cid} / {id} path piece kept */

/* Why a parser refused its input.  `code` is a static string; `field` and
 * `message` are always NUL-terminated (field "" for a body that is not
 * JSON). */
typedef struct ns_rest_err {
  const char *code;    /* "bad_json" | "bad_request" */
  char field[16];      /* "content", "type", "data", "action", "limit", ... */
  char message[128];   /* "content: must be ...", or the JSON parser's text */
} ns_rest_err;

/* ---- bodies ---- */

/* A comment body {"content"}: content is a string of 1-10000 bytes of
 * UTF-8 without NUL. */
typedef struct ns_rest_comment {
  struct json_object *root; /* owns `content`; the caller puts it */
  const char *content;      /* NUL-terminated, content_len bytes */
  size_t content_len;
} ns_rest_comment;

/* Parses the `n` bytes at `p` (NULL allowed when n is 0) as a comment body.
 * Returns 0 with *out filled; the caller then owns out->root and releases it
 * with json_object_put() once it is done with out->content.  Otherwise
 * returns NS_EPARSE (not JSON) or NS_EINVAL (field rule), fills `err`, and
 * leaves nothing to free (out->root is NULL). */
int ns_rest_parse_comment(const char *p, size_t n, ns_rest_comment *out,
                          ns_rest_err *err);

/* A broadcast body {"type","data"?}: type matches ^[a-z][a-z0-9_.]{0,63}$
 * and is not a reserved type (SPEC §6); data is absent, null or an object.
 * A type holding an escaped NUL (\u0000) is refused. */
typedef struct ns_rest_broadcast {
  struct json_object *root;  /* owns type and data; the caller puts it */
  const char *type;          /* NUL-terminated */
  struct json_object *data;  /* an object, or NULL for absent or null */
} ns_rest_broadcast;

/* Parses a broadcast body; same contract as ns_rest_parse_comment. */
int ns_rest_parse_broadcast(const char *p, size_t n, ns_rest_broadcast *out,
                            ns_rest_err *err);

/* 1 when `t` (a C string) may be a broadcast type: the regex above and not
 * reserved. */
int ns_rest_valid_type(const char *t);

/* An action body {"action"}: "read", "unread" or "dismiss" (exactly: an
 * escaped NUL makes it none of them).  Returns 0 with *out one of
 * NS_ACTION_READ/UNREAD/DISMISS, or NS_EPARSE / NS_EINVAL with `err` filled
 * and *out NS_ACTION_NONE.  Nothing to free either way. */
int ns_rest_parse_action(const char *p, size_t n, ns_action *out,
                         ns_rest_err *err);

/* A bulk action body {"action", "before"?} (SPEC §9.5): action "read" or
 * "dismiss" ("unread" and anything else: NS_EINVAL, field "action");
 * before absent, null or a UUID (field "before"), copied lower-case into
 * `before` (37 bytes; "" when absent).  Returns 0, NS_EPARSE or NS_EINVAL
 * with `err` filled.  Nothing to free either way. */
int ns_rest_parse_bulk_action(const char *p, size_t n, ns_action *out,
                              char *before, ns_rest_err *err);

/* ---- headers and query values ---- */

/* The optional X-Device-ID header of an action, `n` bytes at `s`: 0 when it
 * is empty (absent) or a device_id, else NS_EINVAL with `err` filled
 * (field "X-Device-ID"). */
int ns_rest_check_device_header(const char *s, size_t n, ns_rest_err *err);

/* ---- request syntax (every REST request, before routing) ---- */

#define NS_REST_QUERY_ARG_MAX 95 /* bytes of one decoded "name=value" */
#define NS_REST_QUERY_ARGS_MAX 32 /* arguments in one query */

/* Checks the query arguments of a REST request as lws hands them over:
 * `n` bytes at `args`, a list of url-decoded arguments each followed by a
 * NUL (a last one without its NUL is taken too; n == 0: no query).  The
 * handlers read values with lws_get_urlarg_by_name() into 96-byte buffers,
 * which drops an argument that does not fit -- and every argument after
 * it -- as if it were absent; this check makes sure nothing is dropped.
 * An argument is refused when it is longer than NS_REST_QUERY_ARG_MAX
 * bytes, has no '=' or an empty name, holds a control byte (< 0x20 or
 * 0x7f), or repeats an earlier argument's name; the query is refused with
 * more than NS_REST_QUERY_ARGS_MAX arguments.  Returns 0, or NS_EINVAL with
 * `err` ("bad_request") naming the argument in `field` and at the start of
 * `message`; a name that does not fit `field` (over 15 bytes) or is empty
 * is reported as field "query". */
int ns_rest_check_query(const char *args, size_t n, ns_rest_err *err);

/* Parses a Content-Length header value, `n` bytes at `s` (the caller
 * answers 411 when the header is absent): 1 or more decimal digits, with
 * optional blanks (SP, HTAB) around them and nothing else -- no sign, no
 * "0x", no list ("5, 5").  Returns 0 with *out the length; NS_EINVAL
 * (malformed: 400, field "Content-Length") or NS_ETOOBIG (over `max`,
 * however many digits: 413, code "too_large") with `err` filled.  Never
 * overflows: digits past `max` are only checked to be digits. */
int ns_rest_parse_content_length(const char *s, size_t n, long long max,
                                 long long *out, ns_rest_err *err);

/* The query of GET /api/v1/notifications. */
typedef struct ns_rest_list_query {
  int limit;           /* 1..200; 50 when absent */
  const char *before;  /* the caller's string, an RFC 3339 shape; "" if absent */
  int unread;          /* 1 for "1" or "true", else 0 */
} ns_rest_list_query;

/* Checks the values of limit=, before= and unread= as NUL-terminated strings
 * (NULL for an absent one).  `limit` is read with strtol, so leading white
 * space and a sign are allowed, but nothing may follow the digits.
 * `before` is checked for shape only ("YYYY-MM-DDTHH:MM:SS", optional
 * fraction of 1-9 digits, then "Z" or "+hh:mm"/"-hh:mm": at most 35 bytes);
 * PostgreSQL parses it.  Returns
 * 0 with *out filled (out->before borrows `before`), or NS_EINVAL with `err`
 * naming the first bad value in the order limit, before. */
int ns_rest_parse_list_query(const char *limit, const char *before,
                             const char *unread, ns_rest_list_query *out,
                             ns_rest_err *err);

/* 1 when the C string `s` has the RFC 3339 shape described above. */
int ns_rest_valid_ts(const char *s);

/* ---- paths ---- */

/* 1 when the `n` bytes at `s` are a post id: 1-128 bytes of [A-Za-z0-9._:-]. */
int ns_rest_valid_post_id(const char *s, size_t n);

typedef enum {
  NS_REST_CPATH_NONE = 0, /* not "{post}/comments[/...]": no such route */
  NS_REST_CPATH_LIST,     /* "{post}/comments" */
  NS_REST_CPATH_ITEM,     /* "{post}/comments/{cid}", cid under 64 bytes */
  NS_REST_CPATH_NO_ITEM,  /* "{post}/comments/" + 64 bytes or more, or a
                             '/' after the cid: no such comment */
} ns_rest_cpath_kind;

typedef struct ns_rest_cpath {
  ns_rest_cpath_kind kind;
  char post_id[NS_POST_ID_MAX + 1];   /* LIST, ITEM, NO_ITEM: a post id */
  char comment_id[NS_REST_PIECE_MAX + 1]; /* ITEM: no '/', may be "" */
  int comment_id_ok;                  /* ITEM: 1 when comment_id is a UUID */
} ns_rest_cpath;

/* Splits the rest of a comment route (what follows "/api/v1/notes/" and
 * its aliases), `n` bytes at `s`.  Returns 0 for LIST and ITEM, NS_ENOTFOUND
 * for NONE and NO_ITEM; out->kind tells which.  A NUL byte anywhere makes
 * it NONE. */
int ns_rest_parse_comments_path(const char *s, size_t n, ns_rest_cpath *out);

typedef enum {
  NS_REST_NPATH_NONE = 0, /* "{id}/<anything but actions>": no such route */
  NS_REST_NPATH_BATCH,    /* "batch" */
  NS_REST_NPATH_ONE,      /* "{id}", no '/' */
  NS_REST_NPATH_ACTIONS,  /* "{id}/actions", id under 64 bytes */
  NS_REST_NPATH_BULK,     /* "actions" (SPEC §9.5) */
  NS_REST_NPATH_UNREAD,   /* "unread_count" (SPEC §9.4) */
} ns_rest_npath_kind;

typedef struct ns_rest_npath {
  ns_rest_npath_kind kind;
  char id[NS_REST_PIECE_MAX + 1]; /* ONE, ACTIONS: the id; "" when ONE's is
                                     64 bytes or longer */
  int id_ok;                      /* 1 when id is a UUID */
} ns_rest_npath;

/* Splits the rest of /api/v1/notifications/..., `n` bytes at `s`.  Returns
 * 0, or NS_ENOTFOUND for NONE (also for any NUL byte). */
int ns_rest_parse_notif_path(const char *s, size_t n, ns_rest_npath *out);

/* The {device_id} of DELETE /api/v1/devices/{device_id}, `n` bytes at `s`:
 * 0 with the id copied into `out` (NS_DEVICE_ID_MAX + 1 bytes), or
 * NS_ENOTFOUND when it is not a device_id (out is then ""). */
int ns_rest_parse_device_path(const char *s, size_t n, char *out);

#endif
