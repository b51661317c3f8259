/*
 * ns_msg.c -- refcounted outbound messages (see ns_msg.h).
 */
#include "ns_msg.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

ns_msg *ns_msg_wrap(char *buf, size_t len, const char *type) {
  ns_msg *m;
  if (!buf)
    return NULL;
  m = malloc(sizeof(*m));
  if (!m) {
    free(buf);
    return NULL;
  }
  m->refs = 1;
  m->len = len;
  m->buf = buf;
  m->type = type;
  m->durable = 0;
  m->nframes = 0;
  m->qid[0] = '\0';
  m->commit_ms = 0;
  m->expires_ms = 0;
  return m;
}

ns_msg *ns_msg_ref(ns_msg *m) {
  m->refs++;
  return m;
}

void ns_msg_unref(ns_msg **mp) {
  ns_msg *m = *mp;
  *mp = NULL;
  if (!m || --m->refs > 0)
    return;
  free(m->buf);
  free(m);
}

size_t ns_msg_frame_header(unsigned char *out, size_t len) {
  size_t i;
  out[0] = 0x81; /* FIN, text */
  if (len < 126) {
    out[1] = (unsigned char)len;
    return 2;
  }
  if (len <= 0xffff) {
    out[1] = 126;
    out[2] = (unsigned char)(len >> 8);
    out[3] = (unsigned char)len;
    return 4;
  }
  out[1] = 127;
  for (i = 0; i < 8; i++)
    out[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
  return 10;
}

ns_msg *ns_msg_frames(ns_msg *const *m, size_t n, const char *type) {
  size_t i, total = 0, off = 0;
  char *buf;
  ns_msg *out;
  for (i = 0; i < n; i++)
    total += 10 + m[i]->len;
  buf = malloc(LWS_PRE + total + 1);
  if (!buf)
    return NULL;
  for (i = 0; i < n; i++) {
    off += ns_msg_frame_header((unsigned char *)buf + LWS_PRE + off, m[i]->len);
    memcpy(buf + LWS_PRE + off, ns_msg_payload(m[i]), m[i]->len);
    off += m[i]->len;
  }
  buf[LWS_PRE + off] = '\0';
  out = ns_msg_wrap(buf, off, type);
  if (out)
    out->nframes = (unsigned)n;
  return out;
}
