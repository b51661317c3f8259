/*
 * ns_proto.h -- the WebSocket envelope (SPEC §3, §4): decoding client frames
 * into commands and encoding server messages.  Pure: bytes in, structs or
 * bytes out; no lws, no Redis, no PostgreSQL.
 *
 * Decoding order (the error a client gets):
 *   not valid JSON                        -> "bad_json"
 *   not an object, or no string "type"    -> "bad_message"
 *   "ref" present but not a string <= 64  -> "bad_message"
 *   a type this server does not know      -> rc 0, type NS_CMD_UNKNOWN
 *                                            (the endpoint answers unknown_type)
 *   known type, missing/malformed "data"  -> "bad_message" naming the field
 * `ref` is filled as soon as it is read, so an error reply can echo it.
 */
#ifndef NS_PROTO_H
#define NS_PROTO_H

#include <stddef.h>
#include <stdint.h>

struct json_object;

#define NS_REF_MAX 64
#define NS_DEVICE_ID_MAX 64
#define NS_DEVICE_NAME_MAX 64
#define NS_PLATFORM_MAX 16
#define NS_STREAM_ID_MAX 41   /* "<u64>-<u64>" */
#define NS_POST_ID_MAX 128
#define NS_TOKEN_MAX 8192

typedef enum {
  NS_CMD_UNKNOWN = 0,
  NS_CMD_PING,
  NS_CMD_ACTION,     /* notification_action */
  NS_CMD_ACK,
  NS_CMD_SUBSCRIBE,
  NS_CMD_REFRESH,
} ns_cmd_type;

typedef enum {
  NS_ACTION_NONE = 0,
  NS_ACTION_READ,
  NS_ACTION_UNREAD,
  NS_ACTION_DISMISS,
} ns_action;

typedef struct ns_cmd {
  ns_cmd_type type;
  char type_name[65];        /* the client's type, truncated to 64 bytes */
  int has_ref;
  char ref[NS_REF_MAX + 1];
  /* notification_action */
  char notification_id[65];  /* a UUID in canonical text form; "" when all */
  ns_action action;
  int all;                   /* {"all": true}: a bulk action (SPEC §9.5):
                                action is READ or DISMISS, no id */
  char before[37];           /* bulk: lower-case UUID, "" when absent/null */
  /* ack */
  char id[NS_STREAM_ID_MAX + 1]; /* "ms-seq", validated */
  /* subscribe */
  char post_id[NS_POST_ID_MAX + 1];
  /* refresh: heap copy owned by the cmd, freed by ns_cmd_reset() */
  char *token;
} ns_cmd;

typedef struct ns_proto_err {
  const char *code;      /* "bad_json" | "bad_message" (static string);
                            "internal" only with NS_ENOMEM */
  char message[128];     /* human-readable, names the field when it can */
} ns_proto_err;

/* Decodes one client text frame of `n` bytes.  Returns 0 and fills `out`, or
 * NS_EPARSE and fills `err` (out->ref / has_ref still set when they were
 * read).  Out of memory: NS_ENOMEM with err->code "internal", so replying
 * with err->code is right in every case.  Always call ns_cmd_reset() on
 * `out` afterwards. */
int ns_proto_decode(const char *p, size_t n, ns_cmd *out, ns_proto_err *err);
void ns_cmd_reset(ns_cmd *c);

/* Builds a server envelope:
 *   {"type":T,"id":ID?,"ref":REF?,"data":DATA,"timestamp":TS}
 * Takes ownership of `data` (NULL means {}).  The result is a malloc'd buffer
 * with `headroom` unused bytes first (for LWS_PRE) followed by the JSON and a
 * NUL; *len is the JSON length.  Returns NULL on OOM. */
char *ns_proto_envelope(const char *type, struct json_object *data,
                        const char *id, const char *ref, int64_t now_ms,
                        size_t headroom, size_t *len);

/* Shorthand for an `error` envelope {"code","message"} echoing `ref`. */
char *ns_proto_error(const char *code, const char *message, const char *ref,
                     int64_t now_ms, size_t headroom, size_t *len);

/* Parses untrusted bytes (a REST body) with the same strict checks as
 * client frames (depth, no trailing bytes), except that invalid UTF-8
 * inside strings is let through so the field validators can name the
 * field (SPEC §6: 400 naming the field).  Returns 0 and the tree
 * in *out (caller puts it; NULL for the literal null), or NS_EPARSE with
 * `err` filled. */
int ns_proto_parse_json(const char *p, size_t n, struct json_object **out,
                        ns_proto_err *err);

/* Builds {"type","id"?,"data":<data_json>,"timestamp"} around `data_json`,
 * which must already be server-made JSON (it is copied verbatim).  Same
 * buffer contract as ns_proto_envelope.  Returns NULL on OOM. */
char *ns_proto_envelope_raw(const char *type, const char *id,
                            const char *data_json, int64_t now_ms,
                            size_t headroom, size_t *len);

/* Field validators (SPEC §2, §3).  Return 1 when valid, 0 when not. */
int ns_proto_valid_device_id(const char *s, size_t n);   /* [A-Za-z0-9._:-]{1,64} */
int ns_proto_valid_device_name(const char *s, size_t n); /* <=64 printable UTF-8 */
int ns_proto_valid_platform(const char *s, size_t n);    /* <=16 [A-Za-z0-9._-] */
int ns_proto_valid_stream_id(const char *s, size_t n);   /* "<digits>-<digits>" */
int ns_proto_valid_uuid(const char *s, size_t n);        /* 8-4-4-4-12 hex */
/* Copies the n-byte UUID `s` into dst (n + 1 bytes) in lower case, the
 * form PostgreSQL prints, so ids compare equal whatever case a client used. */
void ns_proto_uuid_lower(char *dst, const char *s, size_t n);
int ns_proto_utf8_valid(const char *s, size_t n);

const char *ns_action_name(ns_action a); /* "read" | "unread" | "dismiss" */

#endif
