/*
 * nsb_jwt.c -- mints the HS256 tokens the bench connects and posts with:
 * base64url(header) "." base64url(claims) "." base64url(HMAC-SHA256).
 * Pure apart from OpenSSL's HMAC; the claims are formatted by hand, so the
 * strings put into them are restricted to characters that need no escaping.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "nsb.h"

/* True when every byte of `s` is in [A-Za-z0-9._:@-] and s is non-empty. */
static int plain(const char *s) {
  if (!s || !*s)
    return 0;
  for (; *s; s++) {
    char c = *s;
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
          c == '@' || c == '-'))
      return 0;
  }
  return 1;
}

int nsb_jwt_hs256(const char *secret, const char *sub, const char *role,
                  int64_t iat, int64_t ttl_s, char *out, size_t outlen) {
  static const char hdr[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
  char claims[512];
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int maclen = 0;
  size_t o;
  int n;

  if (!plain(sub) || (role && !plain(role)))
    return -1;
  if (role)
    n = snprintf(claims, sizeof(claims),
                 "{\"sub\":\"%s\",\"role\":\"%s\",\"iat\":%lld,\"exp\":%lld}",
                 sub, role, (long long)iat, (long long)(iat + ttl_s));
  else
    n = snprintf(claims, sizeof(claims),
                 "{\"sub\":\"%s\",\"iat\":%lld,\"exp\":%lld}", sub,
                 (long long)iat, (long long)(iat + ttl_s));
  if (n < 0 || (size_t)n >= sizeof(claims))
    return -1;
  /* header + '.' + claims + '.' + 43-byte signature + NUL */
  if (outlen < 4 * ((sizeof(hdr) + 2) / 3) + 4 * (((size_t)n + 2) / 3) + 48)
    return -1;
  o = nsb_b64((const uint8_t *)hdr, sizeof(hdr) - 1, out, 1);
  out[o++] = '.';
  o += nsb_b64((const uint8_t *)claims, (size_t)n, out + o, 1);
  if (!HMAC(EVP_sha256(), secret, (int)strlen(secret), (const uint8_t *)out, o,
            mac, &maclen) ||
      maclen != 32)
    return -1;
  out[o++] = '.';
  o += nsb_b64(mac, maclen, out + o, 1);
  return (int)o;
}
