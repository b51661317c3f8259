/*
 * test_msg.c -- pre-framed messages: the server frame header at each length
 * class (RFC 6455 §5.2), and several messages joined into one buffer of
 * frames that a WebSocket parser reads back as the same messages in order.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ns_msg.h"

static ns_msg *text(const char *s, size_t len) {
  char *buf = malloc(LWS_PRE + len + 1);
  memset(buf + LWS_PRE, 0, len + 1);
  memcpy(buf + LWS_PRE, s, strlen(s) < len ? strlen(s) : len);
  return ns_msg_wrap(buf, len, "broadcast");
}

/* Reads one unmasked server frame at p: payload offset and length. */
static size_t parse(const unsigned char *p, size_t *plen) {
  assert_int_equal(p[0], 0x81);
  assert_int_equal(p[1] & 0x80, 0); /* a server never masks */
  if ((p[1] & 0x7f) < 126) {
    *plen = p[1];
    return 2;
  }
  if ((p[1] & 0x7f) == 126) {
    *plen = ((size_t)p[2] << 8) | p[3];
    return 4;
  }
  *plen = 0;
  for (int i = 0; i < 8; i++)
    *plen = (*plen << 8) | p[2 + i];
  return 10;
}

static void test_header_lengths(void **state) {
  unsigned char h[10];
  size_t n;
  (void)state;
  assert_int_equal(ns_msg_frame_header(h, 0), 2);
  assert_int_equal(h[1], 0);
  assert_int_equal(ns_msg_frame_header(h, 125), 2);
  assert_int_equal(h[1], 125);
  assert_int_equal(ns_msg_frame_header(h, 126), 4);
  assert_int_equal(h[1], 126);
  assert_int_equal(h[2], 0);
  assert_int_equal(h[3], 126);
  assert_int_equal(ns_msg_frame_header(h, 65535), 4);
  assert_int_equal(h[2], 0xff);
  assert_int_equal(h[3], 0xff);
  assert_int_equal(ns_msg_frame_header(h, 65536), 10);
  assert_int_equal(h[1], 127);
  parse(h, &n);
  assert_int_equal(n, 65536);
}

static void test_frames_round_trip(void **state) {
  static const size_t lens[] = {5, 125, 126, 300, 70000};
  ns_msg *m[5], *all;
  size_t i, off = 0;
  (void)state;
  for (i = 0; i < 5; i++) {
    char tag[16];
    snprintf(tag, sizeof(tag), "{\"i\":%zu}", i);
    m[i] = text(tag, lens[i]);
  }
  all = ns_msg_frames(m, 5, "broadcast");
  assert_non_null(all);
  assert_int_equal(all->nframes, 5);
  assert_string_equal(all->type, "broadcast");
  for (i = 0; i < 5; i++) {
    size_t plen, hl = parse((unsigned char *)ns_msg_payload(all) + off, &plen);
    assert_int_equal(plen, lens[i]);
    assert_memory_equal(ns_msg_payload(all) + off + hl, ns_msg_payload(m[i]),
                        lens[i]);
    off += hl + plen;
  }
  assert_int_equal(off, all->len);
  ns_msg_unref(&all);
  for (i = 0; i < 5; i++)
    ns_msg_unref(&m[i]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_header_lengths),
      cmocka_unit_test(test_frames_round_trip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
