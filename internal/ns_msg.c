/*
 * ns_msg.c -- refcounted outbound messages (see ns_msg.h).
 */
#include "ns_msg.h"

#include <stdlib.h>

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
  m->qid[0] = '\0';
  m->commit_ms = 0;
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
