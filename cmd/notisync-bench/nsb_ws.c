/*
 * nsb_ws.c -- the WebSocket frame codec of the bench's own client (RFC 6455
 * §5.2): parse server frames (7-, 16- and 64-bit lengths, unmasking if a
 * peer masks), encode masked client frames.  Pure: byte buffers in and out.
 */
#include <string.h>

#include "nsb.h"

long nsb_ws_parse(uint8_t *p, size_t n, uint64_t max_payload, nsb_ws_frame *f) {
  size_t h = 2;
  uint64_t len;
  int masked;
  uint8_t key[4] = {0, 0, 0, 0};

  if (n < 2)
    return 0;
  if (p[0] & 0x70)
    return -1; /* no extension negotiated: RSV bits must be 0 */
  f->fin = (p[0] & 0x80) != 0;
  f->opcode = p[0] & 0x0f;
  if ((f->opcode > NSB_WS_BIN && f->opcode < NSB_WS_CLOSE) ||
      f->opcode > NSB_WS_PONG)
    return -1;
  masked = (p[1] & 0x80) != 0;
  len = p[1] & 0x7f;
  if (len == 126) {
    if (n < 4)
      return 0;
    len = (uint64_t)p[2] << 8 | p[3];
    h = 4;
  } else if (len == 127) {
    int i;
    if (n < 10)
      return 0;
    if (p[2] & 0x80)
      return -1;
    len = 0;
    for (i = 0; i < 8; i++)
      len = len << 8 | p[2 + i];
    h = 10;
  }
  if (f->opcode >= NSB_WS_CLOSE && (!f->fin || len > 125))
    return -1;
  if (masked) {
    if (n < h + 4)
      return 0;
    memcpy(key, p + h, 4);
    h += 4;
  }
  if (len > max_payload)
    return -2;
  if (n - h < len)
    return 0;
  f->payload = p + h;
  f->len = len;
  if (masked) {
    uint64_t i;
    for (i = 0; i < len; i++)
      p[h + i] ^= key[i & 3];
  }
  return (long)(h + len);
}

size_t nsb_ws_encode(uint8_t *out, size_t cap, int opcode, const void *payload,
                     size_t len, uint32_t mask) {
  const uint8_t *pl = payload;
  uint8_t key[4];
  size_t h = 2, i;

  if (len >= 126)
    h = len > 0xffff ? 10 : 4;
  if (cap < h + 4 + len)
    return 0;
  out[0] = (uint8_t)(0x80 | (opcode & 0x0f));
  if (len < 126) {
    out[1] = (uint8_t)(0x80 | len);
  } else if (len <= 0xffff) {
    out[1] = 0x80 | 126;
    out[2] = (uint8_t)(len >> 8);
    out[3] = (uint8_t)len;
  } else {
    out[1] = 0x80 | 127;
    for (i = 0; i < 8; i++)
      out[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
  }
  key[0] = (uint8_t)(mask >> 24);
  key[1] = (uint8_t)(mask >> 16);
  key[2] = (uint8_t)(mask >> 8);
  key[3] = (uint8_t)mask;
  memcpy(out + h, key, 4);
  h += 4;
  for (i = 0; i < len; i++)
    out[h + i] = pl[i] ^ key[i & 3];
  return h + len;
}
