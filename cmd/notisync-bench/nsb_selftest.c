/*
 * nsb_selftest.c -- `notisync-bench selftest`: checks the pure parts of the
 * client against known answers (RFC 4648 base64, the RFC 6455 accept
 * example, an HS256 token computed independently, WebSocket frames with
 * 7/16/64-bit lengths, masking, errors; HTTP heads and bodies).  Prints each
 * failure and returns non-zero when any check fails.
 */
#include <stdio.h>
#include <string.h>

#include "nsb.h"

#define CHECK(cond)                                                          \
  do {                                                                       \
    checks++;                                                                \
    if (!(cond)) {                                                           \
      fails++;                                                               \
      fprintf(stderr, "selftest: %s:%d: CHECK(%s) failed\n", __FILE__,      \
              __LINE__, #cond);                                              \
    }                                                                        \
  } while (0)

typedef struct counts {
  int checks, fails;
} counts;

static void t_base64(counts *c) {
  int checks = 0, fails = 0;
  char out[64];
  nsb_b64((const uint8_t *)"", 0, out, 0);
  CHECK(strcmp(out, "") == 0);
  nsb_b64((const uint8_t *)"f", 1, out, 0);
  CHECK(strcmp(out, "Zg==") == 0);
  nsb_b64((const uint8_t *)"fo", 2, out, 0);
  CHECK(strcmp(out, "Zm8=") == 0);
  nsb_b64((const uint8_t *)"foobar", 6, out, 0);
  CHECK(strcmp(out, "Zm9vYmFy") == 0);
  nsb_b64((const uint8_t *)"fo", 2, out, 1);
  CHECK(strcmp(out, "Zm8") == 0);
  nsb_b64((const uint8_t *)"\xfb\xff", 2, out, 1);
  CHECK(strcmp(out, "-_8") == 0);
  nsb_ws_accept("dGhlIHNhbXBsZSBub25jZQ==", out);
  CHECK(strcmp(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0);
  c->checks += checks;
  c->fails += fails;
}

static void t_jwt(counts *c) {
  int checks = 0, fails = 0;
  char tok[512];
  /* Expected value computed with Python's hmac module. */
  const char *want =
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
      "eyJzdWIiOiJ1MSIsInJvbGUiOiJzZXJ2aWNlIiwiaWF0IjoxMDAwLCJleHAiOjEwNjB9."
      "j9rdCQJqht9kCeX70ioHg-CmUk3TtKu4v-JRG7Hjs0c";
  int n = nsb_jwt_hs256("k3y", "u1", "service", 1000, 60, tok, sizeof(tok));
  CHECK(n == (int)strlen(want));
  CHECK(strcmp(tok, want) == 0);
  CHECK(nsb_jwt_hs256("k3y", "u\"1", NULL, 1000, 60, tok, sizeof(tok)) == -1);
  CHECK(nsb_jwt_hs256("k3y", "u1", NULL, 1000, 60, tok, 40) == -1);
  c->checks += checks;
  c->fails += fails;
}

static void t_ws(counts *c) {
  int checks = 0, fails = 0;
  static uint8_t big[70000], enc[70100];
  uint8_t f1[] = {0x81, 0x05, 'h', 'e', 'l', 'l', 'o'};
  uint8_t f2[4 + 200];
  uint8_t masked[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                      0x7f, 0x9f, 0x4d, 0x51, 0x58}; /* RFC 6455 5.7 */
  uint8_t rsv[] = {0xc1, 0x00};
  uint8_t ping_long[] = {0x89, 126, 0, 200};
  uint8_t frag_ping[] = {0x09, 0x00};
  nsb_ws_frame f;
  size_t i, k;

  CHECK(nsb_ws_parse(f1, 1, 1000, &f) == 0);
  CHECK(nsb_ws_parse(f1, 6, 1000, &f) == 0);
  CHECK(nsb_ws_parse(f1, sizeof(f1), 1000, &f) == 7);
  CHECK(f.fin && f.opcode == NSB_WS_TEXT && f.len == 5 &&
        memcmp(f.payload, "hello", 5) == 0);
  f2[0] = 0x01; /* text, not final */
  f2[1] = 126;
  f2[2] = 0;
  f2[3] = 200;
  memset(f2 + 4, 'x', 200);
  CHECK(nsb_ws_parse(f2, 3, 1000, &f) == 0);
  CHECK(nsb_ws_parse(f2, sizeof(f2), 1000, &f) == (long)sizeof(f2));
  CHECK(!f.fin && f.len == 200);
  CHECK(nsb_ws_parse(f2, sizeof(f2), 100, &f) == -2);
  CHECK(nsb_ws_parse(masked, sizeof(masked), 1000, &f) == 11);
  CHECK(f.len == 5 && memcmp(f.payload, "Hello", 5) == 0);
  CHECK(nsb_ws_parse(rsv, sizeof(rsv), 1000, &f) == -1);
  CHECK(nsb_ws_parse(ping_long, sizeof(ping_long), 1000, &f) == -1);
  CHECK(nsb_ws_parse(frag_ping, sizeof(frag_ping), 1000, &f) == -1);
  /* 64-bit length, through the encoder (masked) and back. */
  for (i = 0; i < sizeof(big); i++)
    big[i] = (uint8_t)(i * 7);
  k = nsb_ws_encode(enc, sizeof(enc), NSB_WS_BIN, big, sizeof(big), 0xa1b2c3d4);
  CHECK(k == 14 + sizeof(big) && enc[1] == (0x80 | 127));
  CHECK(nsb_ws_parse(enc, k - 1, 1u << 20, &f) == 0);
  CHECK(nsb_ws_parse(enc, k, 1u << 20, &f) == (long)k);
  CHECK(f.opcode == NSB_WS_BIN && f.len == sizeof(big) &&
        memcmp(f.payload, big, sizeof(big)) == 0);
  k = nsb_ws_encode(enc, sizeof(enc), NSB_WS_PONG, "ab", 2, 0x01020304);
  CHECK(k == 8 && enc[0] == 0x8a && enc[1] == 0x82 && enc[6] == ('a' ^ 1) &&
        enc[7] == ('b' ^ 2));
  CHECK(nsb_ws_encode(enc, 7, NSB_WS_PONG, "ab", 2, 1) == 0);
  k = nsb_ws_encode(enc, sizeof(enc), NSB_WS_TEXT, big, 300, 5);
  CHECK(k == 8 + 300 && enc[1] == (0x80 | 126) && enc[2] == 1 && enc[3] == 44);
  c->checks += checks;
  c->fails += fails;
}

static void t_http(counts *c) {
  int checks = 0, fails = 0;
  nsb_http_resp r;
  const char *up = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Accept: abc=\r\n\r\n\x81";
  const char *ok = "HTTP/1.1 201 Created\r\ncontent-length: 5\r\n\r\nhello";
  const char *ch = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                   "Connection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
  long h;
  h = nsb_http_parse_head(up, strlen(up), &r);
  CHECK(h == (long)strlen(up) - 1);
  CHECK(r.status == 101 && strcmp(r.accept, "abc=") == 0 && !r.close);
  CHECK(nsb_http_parse_head(up, 20, &r) == 0);
  h = nsb_http_parse_head(ok, strlen(ok), &r);
  CHECK(h > 0 && r.status == 201 && r.content_length == 5);
  CHECK(nsb_http_body_len(ok + h, 4, &r) == -2);
  CHECK(nsb_http_body_len(ok + h, 5, &r) == 5);
  h = nsb_http_parse_head(ch, strlen(ch), &r);
  CHECK(h > 0 && r.chunked && r.close);
  CHECK(nsb_http_body_len(ch + h, strlen(ch + h) - 2, &r) == -2);
  CHECK(nsb_http_body_len(ch + h, strlen(ch + h), &r) == (long)strlen(ch + h));
  CHECK(nsb_http_parse_head("HTTP/1.1 2x1 Bad\r\n\r\n", 20, &r) == -1);
  CHECK(nsb_http_parse_head("GARBAGE\r\n\r\n", 11, &r) == -1);
  h = nsb_http_parse_head("HTTP/1.1 204 No Content\r\n\r\n", 27, &r);
  CHECK(h == 27 && nsb_http_body_len("", 0, &r) == 0);
  c->checks += checks;
  c->fails += fails;
}

static void t_bmark(counts *c) {
  int checks = 0, fails = 0;
  char out[512];
  uint32_t run = 0, seq = 0;
  int64_t t = 0;
  int n;
  const char *spaced = "{\"type\":\"bench\",\"data\":{\"pad\":\"x\", "
                       "\"nsb_t\" : 42, \"nsb_seq\": 7,\"nsb_run\":\t9},"
                       "\"timestamp\":\"2026-01-01T00:00:00.000Z\"}";
  /* Unwrapped (Nchan), padded to 200 bytes. */
  n = nsb_bmark_body(out, sizeof(out), 0, 3000000000u, 12, 1234567890123LL, 200);
  CHECK(n == 200 && (int)strlen(out) == 200);
  CHECK(strncmp(out, "{\"nsb_run\":3000000000,\"nsb_seq\":12,"
                     "\"nsb_t\":1234567890123,\"pad\":\"xx", 62) == 0);
  CHECK(out[198] == '"' && out[199] == '}');
  CHECK(nsb_bmark_parse(out, (size_t)n, &run, &seq, &t) == 0);
  CHECK(run == 3000000000u && seq == 12 && t == 1234567890123LL);
  /* Wrapped (notisyncd): the object is the broadcast's data. */
  n = nsb_bmark_body(out, sizeof(out), 1, 5, 0, 1, 10);
  CHECK(n > 0 && strcmp(out, "{\"type\":\"bench\",\"data\":{\"nsb_run\":5,"
                             "\"nsb_seq\":0,\"nsb_t\":1,\"pad\":\"\"}}") == 0);
  CHECK(nsb_bmark_parse(out, (size_t)n, &run, &seq, &t) == 0 && run == 5 &&
        seq == 0 && t == 1);
  CHECK(nsb_bmark_body(out, 40, 0, 1, 2, 3, 200) == -1);
  CHECK(nsb_bmark_body(out, 20, 1, 1, 2, 3, 0) == -1);
  /* Any order and spacing, as a server may re-serialize the object. */
  CHECK(nsb_bmark_parse(spaced, strlen(spaced), &run, &seq, &t) == 0);
  CHECK(run == 9 && seq == 7 && t == 42);
  CHECK(nsb_bmark_parse("{\"nsb_run\":1,\"nsb_seq\":2}", 26, &run, &seq, &t) == -1);
  CHECK(nsb_bmark_parse("{\"nsb_run\":1,\"nsb_seq\":-2,\"nsb_t\":3}", 35, &run,
                        &seq, &t) == -1);
  CHECK(nsb_bmark_parse("{\"nsb_run\":4294967296,\"nsb_seq\":2,\"nsb_t\":3}",
                        43, &run, &seq, &t) == -1);
  /* Length-bounded: a key past `n` is not seen. */
  CHECK(nsb_bmark_parse("{\"nsb_run\":1,\"nsb_seq\":2,\"nsb_t\":3}", 30, &run,
                        &seq, &t) == -1);
  CHECK(nsb_bmark_parse("not json at all", 15, &run, &seq, &t) == -1);
  CHECK(nsb_marker_parse("nsb:17:99", &seq, &t) == 0 && seq == 17 && t == 99);
  CHECK(nsb_marker_parse("nsb:17", &seq, &t) == -1);
  CHECK(nsb_marker_parse("xyz:1:2", &seq, &t) == -1);
  CHECK(nsb_marker_parse(NULL, &seq, &t) == -1);
  c->checks += checks;
  c->fails += fails;
}

/* nsb_rx_bit: which bit of a connection's bitmap a delivery sets. */
static void t_rxbit(counts *c) {
  int checks = 0, fails = 0;
  uint32_t bit = 99;
  /* bcast: bit = seq, only broadcast bodies, below nbits. */
  CHECK(nsb_rx_bit(NSB_RX_BCAST, 200, 5, 1, 7, &bit) == 0 && bit == 7);
  CHECK(nsb_rx_bit(NSB_RX_BCAST, 200, 5, 1, 200, &bit) == 2);
  CHECK(nsb_rx_bit(NSB_RX_BCAST, 200, 5, 0, 7, &bit) == 2);
  /* storm: seq = user * queued + k. */
  CHECK(nsb_rx_bit(NSB_RX_STORM, 50, 3, 0, 3 * 50 + 49, &bit) == 0 && bit == 49);
  CHECK(nsb_rx_bit(NSB_RX_STORM, 50, 3, 0, 4 * 50, &bit) == 1);
  CHECK(nsb_rx_bit(NSB_RX_STORM, 50, 3, 1, 3 * 50, &bit) == 2);
  CHECK(nsb_rx_bit(NSB_RX_STORM, 0, 3, 0, 3, &bit) == 2);
  /* c100k: the notification of the own user is bit 0, broadcast 0 bit 1. */
  CHECK(nsb_rx_bit(NSB_RX_C100K, 2, 33333, 0, 33333, &bit) == 0 && bit == 0);
  CHECK(nsb_rx_bit(NSB_RX_C100K, 2, 33333, 0, 33332, &bit) == 1);
  CHECK(nsb_rx_bit(NSB_RX_C100K, 2, 33333, 1, 0, &bit) == 0 && bit == 1);
  CHECK(nsb_rx_bit(NSB_RX_C100K, 2, 33333, 1, 1, &bit) == 2);
  CHECK(nsb_rx_bit(NSB_RX_C100K, 2, 0, 1, UINT32_MAX, &bit) == 2);
  CHECK(nsb_rx_bit(NSB_RX_LEGACY, 2, 0, 0, 0, &bit) == 2);
  c->checks += checks;
  c->fails += fails;
}

int nsb_selftest(void) {
  counts c = {0, 0};
  t_base64(&c);
  t_jwt(&c);
  t_ws(&c);
  t_http(&c);
  t_bmark(&c);
  t_rxbit(&c);
  printf("selftest: %d checks, %d failed\n", c.checks, c.fails);
  return c.fails ? 1 : 0;
}
