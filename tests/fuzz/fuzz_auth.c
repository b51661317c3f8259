/*
 * fuzz_auth.c -- libFuzzer target for the JWT front end (ns_auth_verify).
 *
 * Two shapes of input:
 *   - anything not starting with '{' is handed over as a token, raw, to an
 *     HS256 verifier: this reaches the splitter, the base64url decoder, the
 *     header JSON and the signature check;
 *   - "<header JSON>\n<payload JSON>" is base64url-encoded and signed here
 *     with the verifiers' secret, so that the claims code behind the
 *     signature check is reached as well (a fuzzer cannot forge HMACs).
 * Each token goes to two verifiers (plain, and with iss/aud configured),
 * built once and kept for the life of the process.  Any crash, sanitizer
 * report or violated invariant of an accepted principal is a finding.
 */
#include "ns_auth.h"
#include "ns_common.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#define FUZZ_SECRET "fuzz-secret"
#define FUZZ_NOW INT64_C(1700000000)

static size_t enc(const uint8_t *p, size_t n, char *out) {
  static const char a[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  size_t o = 0;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16;
    if (i + 1 < n)
      v |= (uint32_t)p[i + 1] << 8;
    if (i + 2 < n)
      v |= p[i + 2];
    out[o++] = a[v >> 18];
    out[o++] = a[(v >> 12) & 63];
    if (i + 1 < n)
      out[o++] = a[(v >> 6) & 63];
    if (i + 2 < n)
      out[o++] = a[v & 63];
  }
  return o;
}

/* An accepted principal must be well-formed whatever the token said. */
static void check_principal(const ns_principal *p) {
  size_t sub = strnlen(p->sub, sizeof(p->sub));
  size_t role = strnlen(p->role, sizeof(p->role));
  size_t name = strnlen(p->name, sizeof(p->name));
  int svc = !strcmp(p->role, "service") || !strcmp(p->role, "admin");
  if (sub < 1 || sub > NS_SUB_MAX || role >= sizeof(p->role) ||
      name < 1 || name >= sizeof(p->name) || p->is_service != svc)
    abort();
}

static void verify_all(const char *tok, size_t n) {
  static ns_auth *v[2];
  ns_principal p;

  if (!v[0]) {
    ns_auth_opts plain = {FUZZ_SECRET, NULL, NULL, NULL};
    ns_auth_opts ia = {FUZZ_SECRET, NULL, "iss", "aud"};
    if (ns_auth_open(&v[0], &plain, NULL, 0) ||
        ns_auth_open(&v[1], &ia, NULL, 0))
      abort();
  }
  for (int i = 0; i < 2; i++) {
    int rc = ns_auth_verify(v[i], tok, n, FUZZ_NOW, &p);
    if (rc == 0)
      check_principal(&p);
    else if (rc != NS_EAUTH && rc != NS_EEXPIRED)
      abort();
  }
}

/* Builds and verifies "b64(header).b64(payload).HS256" from "header\npayload". */
static void sign_and_verify(const uint8_t *data, size_t size) {
  const uint8_t *nl = memchr(data, '\n', size);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int maclen = 0;
  size_t hn, n;
  char *tok;

  if (!nl)
    return;
  hn = (size_t)(nl - data);
  tok = malloc(size / 3 * 4 + 64 + 8);
  if (!tok)
    return;
  n = enc(data, hn, tok);
  tok[n++] = '.';
  n += enc(nl + 1, size - hn - 1, tok + n);
  if (!HMAC(EVP_sha256(), FUZZ_SECRET, (int)strlen(FUZZ_SECRET),
            (const unsigned char *)tok, n, mac, &maclen))
    abort();
  tok[n++] = '.';
  n += enc(mac, maclen, tok + n);
  verify_all(tok, n);
  free(tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 0 && data[0] == '{')
    sign_and_verify(data, size);
  else
    verify_all((const char *)data, size);
  return 0;
}
