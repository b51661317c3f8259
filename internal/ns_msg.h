/*
 * ns_msg.h -- an immutable, refcounted outbound WebSocket message.
 *
 * A message fanned out to N connections is serialized once; each
 * connection's outbound ring holds a reference and the last release frees
 * it.  The payload sits after LWS_PRE bytes of headroom so lws_write() can
 * frame it in place.
 */
#ifndef NS_MSG_H
#define NS_MSG_H

#include <stddef.h>

typedef struct ns_msg {
  /* read-only after creation */
  unsigned refs;
  size_t len;        /* payload bytes */
  char *buf;         /* headroom + payload + NUL */
  const char *type;  /* static message type name, for metrics */
  int durable;       /* new_notification / notification_sync */
  /* 0: the payload is one text message, framed by lws at the write.  n > 0:
   * the payload is already n whole WebSocket frames, written as they are
   * (several broadcasts to one socket in one send: ns_msg_frames). */
  unsigned nframes;
  char qid[42];      /* durable: the stream id (same in every device's queue) */
  long long commit_ms; /* durable: producer commit time, for the latency metric */
  long long expires_ms; /* durable: 0, or when it may no longer be written */
} ns_msg;

/* Wraps `buf` (from ns_proto_envelope with LWS_PRE headroom; ownership is
 * taken) into a message with one reference.  Returns NULL and frees `buf` on
 * OOM. */
ns_msg *ns_msg_wrap(char *buf, size_t len, const char *type);

static inline char *ns_msg_payload(const ns_msg *m);

/* One message holding the n text messages `m` (none of them durable, n >= 1)
 * as consecutive server WebSocket frames (FIN, text, unmasked), typed as
 * `type`.  NULL on OOM. */
ns_msg *ns_msg_frames(ns_msg *const *m, size_t n, const char *type);

/* Bytes of the frame header of a server text frame of `len` payload bytes. */
size_t ns_msg_frame_header(unsigned char *out, size_t len);

ns_msg *ns_msg_ref(ns_msg *m);

/* Drops one reference and clears the caller's pointer; frees at zero. */
void ns_msg_unref(ns_msg **m);

#include <libwebsockets.h>
static inline char *ns_msg_payload(const ns_msg *m) { return m->buf + LWS_PRE; }

#endif
