/*
 * test_auth.c -- ns_auth: JWT verification for HS256 / RS256 / ES256 and
 * dev-token minting.
 *
 * Every token is built here: header and payload JSON are base64url-encoded
 * by the test's own encoder and signed with OpenSSL directly (HMAC-SHA256 /
 * -SHA512, RSA and EC keys generated at group setup, ES256 DER signatures
 * converted to JWS r||s), so the verifier is checked against an independent
 * implementation rather than against itself.  Time is fixed at NOW.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "ns_auth.h"
#include "ns_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#define NOW INT64_C(1700000000)
#define SECRET "unit-test-secret-0123456789abcdef"
#define ISSUER "https://issuer.example"
#define AUDIENCE "notisync"
#define TOK_CAP 20000

/* Verifiers under test, and keys that sign for (or against) them. */
enum { V_HS, V_RS, V_ES, V_HS_IA, V_COUNT };

enum {
  S_HS256,         /* HMAC-SHA256 with SECRET */
  S_HS256_WRONG,   /* HMAC-SHA256 with another secret */
  S_HS512,         /* HMAC-SHA512 with SECRET */
  S_HS256_RSA_PEM, /* HMAC-SHA256 keyed with the RSA public PEM text */
  S_RS256,         /* the configured RSA key */
  S_RS256_OTHER,   /* another RSA key */
  S_ES256,         /* the configured EC key, r||s */
  S_ES256_DER,     /* the configured EC key, DER instead of r||s */
  S_ES256_OTHER,   /* another EC key */
  S_JUNK,          /* 32 bytes of 'A' */
};

typedef struct {
  EVP_PKEY *rsa, *rsa2, *ec, *ec2;
  char *rsa_pem, *ec_pem;
  ns_auth *v[V_COUNT];
} fixture;

/* ---- helpers ------------------------------------------------------------ */

static size_t enc(const void *data, size_t n, char *out) {
  static const char a[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const unsigned char *p = data;
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
  out[o] = '\0';
  return o;
}

/* Standard base64url decode for inspecting minted tokens. */
static size_t dec(const char *s, size_t n, unsigned char *out) {
  static const char a[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  uint32_t acc = 0;
  int bits = 0;
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    const char *c = strchr(a, s[i]);
    assert_non_null(c);
    acc = (acc << 6) | (uint32_t)(c - a);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (unsigned char)(acc >> bits);
    }
  }
  return o;
}

static char *pem_of(EVP_PKEY *k) {
  BIO *b = BIO_new(BIO_s_mem());
  char *data;
  assert_non_null(b);
  assert_int_equal(PEM_write_bio_PUBKEY(b, k), 1);
  long n = BIO_get_mem_data(b, &data);
  char *s = ns_xstrndup(data, (size_t)n);
  BIO_free(b);
  return s;
}

static size_t sign_pkey(EVP_PKEY *k, const char *in, size_t n,
                        unsigned char *sig, size_t cap) {
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  size_t len = cap;
  assert_non_null(md);
  assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k), 1);
  assert_int_equal(
      EVP_DigestSign(md, sig, &len, (const unsigned char *)in, n), 1);
  EVP_MD_CTX_free(md);
  return len;
}

/* DER ECDSA-Sig-Value -> JWS r||s (32 bytes each). */
static size_t der_to_rs(const unsigned char *der, size_t n,
                        unsigned char *rs) {
  const unsigned char *p = der;
  const BIGNUM *r, *s;
  ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)n);
  assert_non_null(es);
  ECDSA_SIG_get0(es, &r, &s);
  assert_int_equal(BN_bn2binpad(r, rs, 32), 32);
  assert_int_equal(BN_bn2binpad(s, rs + 32, 32), 32);
  ECDSA_SIG_free(es);
  return 64;
}

/* Signs "h.p" in `tok` (length n) the way `how` says; returns the length of
 * the raw signature written into `sig`. */
static size_t sign(const fixture *f, int how, const char *tok, size_t n,
                   unsigned char *sig) {
  unsigned int len = 0;
  unsigned char der[600];
  size_t dl;

  switch (how) {
  case S_HS256:
  case S_HS256_WRONG:
  case S_HS256_RSA_PEM: {
    const char *key = how == S_HS256 ? SECRET
                      : how == S_HS256_WRONG ? SECRET "x" : f->rsa_pem;
    assert_non_null(HMAC(EVP_sha256(), key, (int)strlen(key),
                         (const unsigned char *)tok, n, sig, &len));
    return len;
  }
  case S_HS512:
    assert_non_null(HMAC(EVP_sha512(), SECRET, (int)strlen(SECRET),
                         (const unsigned char *)tok, n, sig, &len));
    return len;
  case S_RS256:
    return sign_pkey(f->rsa, tok, n, sig, 512);
  case S_RS256_OTHER:
    return sign_pkey(f->rsa2, tok, n, sig, 512);
  case S_ES256:
  case S_ES256_OTHER:
    dl = sign_pkey(how == S_ES256 ? f->ec : f->ec2, tok, n, der, sizeof(der));
    return der_to_rs(der, dl, sig);
  case S_ES256_DER:
    return sign_pkey(f->ec, tok, n, sig, 512);
  default:
    memset(sig, 'A', 32);
    return 32;
  }
}

/* Builds "b64(header).b64(payload).b64(sig)" into `tok` (TOK_CAP bytes).
 * When `swap` is set, the payload is replaced by b64(swap) after signing. */
static size_t build(const fixture *f, const char *header, const char *payload,
                    int how, const char *swap, char *tok) {
  unsigned char sig[600];
  size_t n = enc(header, strlen(header), tok);
  tok[n++] = '.';
  size_t pstart = n;
  n += enc(payload, strlen(payload), tok + n);
  size_t sl = sign(f, how, tok, n, sig);
  if (swap) {
    char tmp[TOK_CAP];
    n = pstart + enc(swap, strlen(swap), tmp);
    memcpy(tok + pstart, tmp, n - pstart);
  }
  tok[n++] = '.';
  n += enc(sig, sl, tok + n);
  assert_true(n < TOK_CAP);
  return n;
}

static int check(const fixture *f, int v, const char *header,
                 const char *payload, int how, ns_principal *p) {
  char *tok = malloc(TOK_CAP);
  assert_non_null(tok);
  size_t n = build(f, header, payload, how, NULL, tok);
  int rc = ns_auth_verify(f->v[v], tok, n, NOW, p);
  free(tok);
  return rc;
}

/* ---- fixture ------------------------------------------------------------ */

static int open_v(ns_auth **a, const char *secret, const char *pem,
                  const char *iss, const char *aud) {
  ns_auth_opts o = {secret, pem, iss, aud};
  char err[128];
  return ns_auth_open(a, &o, err, sizeof(err));
}

static int setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  if (!f)
    return -1;
  f->rsa = EVP_RSA_gen(2048);
  f->rsa2 = EVP_RSA_gen(2048);
  f->ec = EVP_EC_gen("P-256");
  f->ec2 = EVP_EC_gen("P-256");
  if (!f->rsa || !f->rsa2 || !f->ec || !f->ec2)
    return -1;
  f->rsa_pem = pem_of(f->rsa);
  f->ec_pem = pem_of(f->ec);
  if (open_v(&f->v[V_HS], SECRET, NULL, NULL, NULL) ||
      open_v(&f->v[V_RS], NULL, f->rsa_pem, NULL, NULL) ||
      open_v(&f->v[V_ES], NULL, f->ec_pem, NULL, NULL) ||
      open_v(&f->v[V_HS_IA], SECRET, NULL, ISSUER, AUDIENCE))
    return -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  for (int i = 0; i < V_COUNT; i++)
    ns_auth_free(&f->v[i]);
  EVP_PKEY_free(f->rsa);
  EVP_PKEY_free(f->rsa2);
  EVP_PKEY_free(f->ec);
  EVP_PKEY_free(f->ec2);
  free(f->rsa_pem);
  free(f->ec_pem);
  free(f);
  return 0;
}

/* ---- the table ---------------------------------------------------------- */

#define HS "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"
#define RS "{\"alg\":\"RS256\",\"typ\":\"JWT\"}"
#define ES "{\"alg\":\"ES256\",\"typ\":\"JWT\"}"
#define OK_P "{\"sub\":\"alice\",\"exp\":1700003600}"
#define ISS_OK "\"iss\":\"" ISSUER "\""

typedef struct {
  const char *name;
  int v;
  const char *header, *payload;
  int how;
  const char *swap; /* payload substituted after signing */
  int want;
  /* checked when want == 0; NULL = not checked */
  const char *sub, *role, *pname;
  int is_service;
} vcase;

/* expected failures: nothing in the principal to check */
#define EAUTH NS_EAUTH, NULL, NULL, NULL, 0
#define EEXP NS_EEXPIRED, NULL, NULL, NULL, 0

static const vcase cases[] = {
    /* valid tokens, one per algorithm */
    {"hs256 ok", V_HS, HS, OK_P, S_HS256, NULL, 0, "alice", "", "alice", 0},
    {"rs256 ok", V_RS, RS, OK_P, S_RS256, NULL, 0, "alice", "", "alice", 0},
    {"es256 ok", V_ES, ES, OK_P, S_ES256, NULL, 0, "alice", "", "alice", 0},
    {"header extras ok", V_HS, "{\"typ\":\"jwt\",\"kid\":\"k1\",\"alg\":\"HS256\"}",
     OK_P, S_HS256, NULL, 0, "alice", NULL, NULL, 0},
    /* libjwt 1.10, which checks HS256, refuses a string "typ" other than
     * "JWT" (any case); RS256 / ES256 (checked without it) take RFC 9068
     * "at+jwt" access tokens (docs/security.md) */
    {"typ at+jwt refused hs256", V_HS, "{\"typ\":\"at+jwt\",\"alg\":\"HS256\"}",
     OK_P, S_HS256, NULL, EAUTH},
    {"typ at+jwt ok rs256", V_RS, "{\"typ\":\"at+jwt\",\"kid\":\"k1\",\"alg\":\"RS256\"}",
     OK_P, S_RS256, NULL, 0, "alice", NULL, NULL, 0},
    {"header without typ ok", V_HS, "{\"alg\":\"HS256\"}", OK_P, S_HS256, NULL,
     0, "alice", NULL, NULL, 0},
    {"trailing whitespace in json ok", V_HS, HS " \n", OK_P "\n", S_HS256,
     NULL, 0, "alice", NULL, NULL, 0},

    /* algorithm confusion and wrong keys */
    {"alg none, junk sig", V_HS, "{\"alg\":\"none\"}", OK_P, S_JUNK, NULL,
     EAUTH},
    {"alg none, hs256 sig", V_HS, "{\"alg\":\"none\"}", OK_P, S_HS256, NULL,
     EAUTH},
    {"alg None", V_HS, "{\"alg\":\"None\"}", OK_P, S_HS256, NULL, EAUTH},
    {"alg hs256 lower case", V_HS, "{\"alg\":\"hs256\"}", OK_P, S_HS256, NULL,
     EAUTH},
    {"alg missing", V_HS, "{\"typ\":\"JWT\"}", OK_P, S_HS256, NULL, EAUTH},
    {"alg not a string", V_HS, "{\"alg\":256}", OK_P, S_HS256, NULL, EAUTH},
    {"alg with NUL", V_HS, "{\"alg\":\"HS256\\u0000\"}", OK_P, S_HS256, NULL,
     EAUTH},
    {"hs512 same secret", V_HS, "{\"alg\":\"HS512\",\"typ\":\"JWT\"}", OK_P,
     S_HS512, NULL, EAUTH},
    {"hs512 sig under hs256 header", V_HS, HS, OK_P, S_HS512, NULL, EAUTH},
    {"hs256 keyed with rsa pem", V_RS, HS, OK_P, S_HS256_RSA_PEM, NULL,
     EAUTH},
    {"rs256 header, hmac-with-pem sig", V_RS, RS, OK_P, S_HS256_RSA_PEM, NULL,
     EAUTH},
    {"rs256 token, hs256 configured", V_HS, RS, OK_P, S_RS256, NULL, EAUTH},
    {"es256 token, rs256 configured", V_RS, ES, OK_P, S_ES256, NULL, EAUTH},
    {"hs256 token, es256 configured", V_ES, HS, OK_P, S_HS256, NULL, EAUTH},
    {"rs256 other key", V_RS, RS, OK_P, S_RS256_OTHER, NULL, EAUTH},
    {"es256 other key", V_ES, ES, OK_P, S_ES256_OTHER, NULL, EAUTH},
    {"es256 der signature", V_ES, ES, OK_P, S_ES256_DER, NULL, EAUTH},
    {"es384 header", V_ES, "{\"alg\":\"ES384\"}", OK_P, S_ES256, NULL,
     EAUTH},
    {"wrong secret", V_HS, HS, OK_P, S_HS256_WRONG, NULL, EAUTH},
    {"crit header", V_HS, "{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", OK_P,
     S_HS256, NULL, EAUTH},
    {"tampered payload hs256", V_HS, HS, OK_P, S_HS256,
     "{\"sub\":\"mallory\",\"exp\":1700003600}", EAUTH},
    {"tampered payload rs256", V_RS, RS, OK_P, S_RS256,
     "{\"sub\":\"alice\",\"exp\":1700003600,\"role\":\"admin\"}", EAUTH},
    {"tampered payload es256", V_ES, ES, OK_P, S_ES256,
     "{\"sub\":\"alice\",\"exp\":1800003600}", EAUTH},

    /* header / payload JSON shape (validly signed) */
    {"non-json header", V_HS, "not json", OK_P, S_HS256, NULL, EAUTH},
    {"array header", V_HS, "[\"HS256\"]", OK_P, S_HS256, NULL, EAUTH},
    {"header trailing garbage", V_HS, HS "x", OK_P, S_HS256, NULL, EAUTH},
    {"two header objects", V_HS, HS HS, OK_P, S_HS256, NULL, EAUTH},
    {"header single quotes", V_HS, "{'alg':'HS256'}", OK_P, S_HS256, NULL,
     EAUTH},
    {"non-json payload", V_HS, HS, "hello", S_HS256, NULL, EAUTH},
    {"payload is a string", V_HS, HS, "\"alice\"", S_HS256, NULL, EAUTH},
    {"payload truncated", V_HS, HS, "{\"sub\":\"alice\",\"exp\":17", S_HS256,
     NULL, EAUTH},
    {"payload bad utf-8", V_HS, HS,
     "{\"sub\":\"al\xff\xfe\",\"exp\":1700003600}", S_HS256, NULL, EAUTH},
    {"payload nested too deep", V_HS, HS,
     "{\"sub\":\"a\",\"exp\":1700003600,\"x\":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]"
     "]]]]]]]]]]}",
     S_HS256, NULL, EAUTH},

    /* exp */
    {"expired beyond leeway", V_HS, HS, "{\"sub\":\"alice\",\"exp\":1699999969}",
     S_HS256, NULL, EEXP},
    {"expired within leeway", V_HS, HS, "{\"sub\":\"alice\",\"exp\":1699999970}",
     S_HS256, NULL, 0, "alice", NULL, NULL, 0},
    {"expired long ago", V_HS, HS, "{\"sub\":\"alice\",\"exp\":-5}", S_HS256,
     NULL, EEXP},
    {"expired es256", V_ES, ES, "{\"sub\":\"alice\",\"exp\":1600000000}",
     S_ES256, NULL, EEXP},
    {"exp int64 max", V_HS, HS,
     "{\"sub\":\"alice\",\"exp\":9223372036854775807}", S_HS256, NULL, 0,
     "alice", NULL, NULL, 0},
    /* jansson (libjwt's parser) refuses integers beyond int64 */
    {"exp beyond int64", V_HS, HS,
     "{\"sub\":\"alice\",\"exp\":18446744073709551615}", S_HS256, NULL,
     EAUTH},
    {"missing exp", V_HS, HS, "{\"sub\":\"alice\"}", S_HS256, NULL, EAUTH},
    {"string exp", V_HS, HS, "{\"sub\":\"alice\",\"exp\":\"1700003600\"}",
     S_HS256, NULL, EAUTH},
    {"float exp", V_HS, HS, "{\"sub\":\"alice\",\"exp\":1700003600.5}",
     S_HS256, NULL, EAUTH},
    {"null exp", V_HS, HS, "{\"sub\":\"alice\",\"exp\":null}", S_HS256, NULL,
     EAUTH},
    {"string exp, expired", V_HS, HS, "{\"sub\":\"alice\",\"exp\":\"1\"}",
     S_HS256, NULL, EAUTH},

    /* nbf / iat */
    {"nbf in future", V_HS, HS,
     "{\"sub\":\"alice\",\"exp\":1700003600,\"nbf\":1700000031}", S_HS256,
     NULL, EAUTH},
    {"nbf within leeway", V_HS, HS,
     "{\"sub\":\"alice\",\"exp\":1700003600,\"nbf\":1700000030}", S_HS256,
     NULL, 0, "alice", NULL, NULL, 0},
    {"nbf past", V_HS, HS,
     "{\"sub\":\"alice\",\"exp\":1700003600,\"nbf\":1690000000}", S_HS256,
     NULL, 0, "alice", NULL, NULL, 0},
    {"nbf string", V_HS, HS,
     "{\"sub\":\"alice\",\"exp\":1700003600,\"nbf\":\"0\"}", S_HS256, NULL,
     EAUTH},
    {"iat in future", V_HS, HS,
     "{\"sub\":\"alice\",\"exp\":1700003600,\"iat\":1700000100}", S_HS256,
     NULL, EAUTH},
    {"iat within leeway", V_HS, HS,
     "{\"sub\":\"alice\",\"exp\":1700003600,\"iat\":1700000020}", S_HS256,
     NULL, 0, "alice", NULL, NULL, 0},
    {"iat int64 max", V_HS, HS,
     "{\"sub\":\"alice\",\"exp\":1700003600,\"iat\":9223372036854775807}",
     S_HS256, NULL, EAUTH},

    /* sub */
    {"missing sub", V_HS, HS, "{\"exp\":1700003600}", S_HS256, NULL, EAUTH},
    {"empty sub", V_HS, HS, "{\"sub\":\"\",\"exp\":1700003600}", S_HS256, NULL,
     EAUTH},
    {"numeric sub", V_HS, HS, "{\"sub\":42,\"exp\":1700003600}", S_HS256, NULL,
     EAUTH},
    {"sub with NUL", V_HS, HS,
     "{\"sub\":\"alice\\u0000evil\",\"exp\":1700003600}", S_HS256, NULL,
     EAUTH},
    {"sub escaped utf-8", V_HS, HS,
     "{\"sub\":\"J\\u00fcrgen\",\"exp\":1700003600}", S_HS256, NULL, 0,
     "J\xc3\xbcrgen", NULL, NULL, 0},

    /* iss / aud (configured on V_HS_IA) */
    {"iss+aud match", V_HS_IA, HS,
     "{\"sub\":\"alice\",\"exp\":1700003600," ISS_OK ",\"aud\":\"notisync\"}",
     S_HS256, NULL, 0, "alice", NULL, NULL, 0},
    {"aud array match", V_HS_IA, HS,
     "{\"sub\":\"alice\",\"exp\":1700003600," ISS_OK
     ",\"aud\":[\"other\",7,\"notisync\"]}",
     S_HS256, NULL, 0, "alice", NULL, NULL, 0},
    {"aud array mismatch", V_HS_IA, HS,
     "{\"sub\":\"alice\",\"exp\":1700003600," ISS_OK
     ",\"aud\":[\"other\",\"notisync2\"]}",
     S_HS256, NULL, EAUTH},
    {"aud empty array", V_HS_IA, HS,
     "{\"sub\":\"alice\",\"exp\":1700003600," ISS_OK ",\"aud\":[]}", S_HS256,
     NULL, EAUTH},
    {"aud mismatch", V_HS_IA, HS,
     "{\"sub\":\"alice\",\"exp\":1700003600," ISS_OK ",\"aud\":\"notisyn\"}",
     S_HS256, NULL, EAUTH},
    {"aud number", V_HS_IA, HS,
     "{\"sub\":\"alice\",\"exp\":1700003600," ISS_OK ",\"aud\":1}", S_HS256,
     NULL, EAUTH},
    {"aud missing", V_HS_IA, HS,
     "{\"sub\":\"alice\",\"exp\":1700003600," ISS_OK "}", S_HS256, NULL,
     EAUTH},
    {"iss mismatch", V_HS_IA, HS,
     "{\"sub\":\"alice\",\"exp\":1700003600,\"iss\":\"https://issuer.example"
     ".evil\",\"aud\":\"notisync\"}",
     S_HS256, NULL, EAUTH},
    {"iss missing", V_HS_IA, HS,
     "{\"sub\":\"alice\",\"exp\":1700003600,\"aud\":\"notisync\"}", S_HS256,
     NULL, EAUTH},
    {"iss array", V_HS_IA, HS,
     "{\"sub\":\"alice\",\"exp\":1700003600,\"iss\":[\"" ISSUER
     "\"],\"aud\":\"notisync\"}",
     S_HS256, NULL, EAUTH},
    {"expired and wrong iss is EAUTH", V_HS_IA, HS,
     "{\"sub\":\"alice\",\"exp\":1600000000,\"iss\":\"x\",\"aud\":\"notisync\"}",
     S_HS256, NULL, EAUTH},
    {"expired with right iss/aud", V_HS_IA, HS,
     "{\"sub\":\"alice\",\"exp\":1600000000," ISS_OK ",\"aud\":\"notisync\"}",
     S_HS256, NULL, EEXP},
    {"iss/aud ignored when not configured", V_HS, HS,
     "{\"sub\":\"alice\",\"exp\":1700003600,\"iss\":\"x\",\"aud\":\"y\"}",
     S_HS256, NULL, 0, "alice", NULL, NULL, 0},

    /* role */
    {"role service", V_HS, HS,
     "{\"sub\":\"svc\",\"exp\":1700003600,\"role\":\"service\"}", S_HS256, NULL,
     0, "svc", "service", "svc", 1},
    {"role admin", V_RS, RS,
     "{\"sub\":\"root\",\"exp\":1700003600,\"role\":\"admin\"}", S_RS256, NULL,
     0, "root", "admin", "root", 1},
    {"role user", V_ES, ES,
     "{\"sub\":\"bob\",\"exp\":1700003600,\"role\":\"user\"}", S_ES256, NULL, 0,
     "bob", "user", "bob", 0},
    {"role Service (case matters)", V_HS, HS,
     "{\"sub\":\"bob\",\"exp\":1700003600,\"role\":\"Service\"}", S_HS256, NULL,
     0, "bob", "Service", "bob", 0},
    {"role not a string", V_HS, HS,
     "{\"sub\":\"bob\",\"exp\":1700003600,\"role\":[\"admin\"]}", S_HS256, NULL,
     0, "bob", "", "bob", 0},
    {"role too long", V_HS, HS,
     "{\"sub\":\"bob\",\"exp\":1700003600,\"role\":"
     "\"adminadminadminadminadminadminadm\"}",
     S_HS256, NULL, 0, "bob", "", "bob", 0},
    {"role 32 bytes", V_HS, HS,
     "{\"sub\":\"bob\",\"exp\":1700003600,\"role\":"
     "\"adminadminadminadminadminadminad\"}",
     S_HS256, NULL, 0, "bob", "adminadminadminadminadminadminad", "bob", 0},
    /* jansson refuses a \u0000 escape anywhere: the whole token goes */
    {"role admin with NUL", V_HS, HS,
     "{\"sub\":\"bob\",\"exp\":1700003600,\"role\":\"admin\\u0000\"}", S_HS256,
     NULL, EAUTH},

    /* name fallbacks */
    {"email wins", V_HS, HS,
     "{\"sub\":\"u1\",\"exp\":1700003600,\"name\":\"Ann\",\"email\":\"a@x.io\"}",
     S_HS256, NULL, 0, "u1", "", "a@x.io", 0},
    {"name when no email", V_HS, HS,
     "{\"sub\":\"u1\",\"exp\":1700003600,\"name\":\"Ann\"}", S_HS256, NULL, 0,
     "u1", "", "Ann", 0},
    {"name when email empty", V_HS, HS,
     "{\"sub\":\"u1\",\"exp\":1700003600,\"name\":\"Ann\",\"email\":\"\"}",
     S_HS256, NULL, 0, "u1", "", "Ann", 0},
    {"name when email not a string", V_HS, HS,
     "{\"sub\":\"u1\",\"exp\":1700003600,\"name\":\"Ann\",\"email\":true}",
     S_HS256, NULL, 0, "u1", "", "Ann", 0},
    {"sub when neither", V_HS, HS,
     "{\"sub\":\"u1\",\"exp\":1700003600,\"name\":5,\"email\":null}", S_HS256,
     NULL, 0, "u1", "", "u1", 0},
};

static void test_table(void **state) {
  const fixture *f = *state;
  for (size_t i = 0; i < NS_ARRAY_SIZE(cases); i++) {
    const vcase *c = &cases[i];
    char *tok = malloc(TOK_CAP);
    ns_principal p;
    assert_non_null(tok);
    memset(&p, 0x5A, sizeof(p));
    size_t n = build(f, c->header, c->payload, c->how, c->swap, tok);
    int rc = ns_auth_verify(f->v[c->v], tok, n, NOW, &p);
    free(tok);
    if (rc != c->want)
      fail_msg("case '%s': rc %d (%s), want %d", c->name, rc, ns_strerror(rc),
               c->want);
    if (rc != 0) {
      /* on failure the principal is left alone */
      assert_int_equal(p.sub[0], 0x5A);
      continue;
    }
    if (c->sub && strcmp(p.sub, c->sub))
      fail_msg("case '%s': sub '%s'", c->name, p.sub);
    if (c->role && strcmp(p.role, c->role))
      fail_msg("case '%s': role '%s'", c->name, p.role);
    if (c->pname && strcmp(p.name, c->pname))
      fail_msg("case '%s': name '%s'", c->name, p.name);
    if (c->role && p.is_service != c->is_service)
      fail_msg("case '%s': is_service %d", c->name, p.is_service);
  }
}

/* ---- tests built from raw strings --------------------------------------- */

static void test_malformed(void **state) {
  const fixture *f = *state;
  char good[TOK_CAP];
  size_t gn = build(f, HS, OK_P, S_HS256, NULL, good);
  const char *dot1 = strchr(good, '.'), *dot2 = strrchr(good, '.');
  ns_principal p;
  char t[TOK_CAP + 16];

  assert_int_equal(ns_auth_verify(f->v[V_HS], good, gn, NOW, &p), 0);

  static const char *raw[] = {
      "",
      "abc",
      "abc.def",
      ".",
      "..",
      "a.b.c.d",
      "eyJhbGciOiJIUzI1NiJ9..AAAA",
      "eyJ!bGciOiJIUzI1NiJ9.e30.AAAA",
      "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIiwiZXhwIjo5OTk5OTk5OTk5fQ.",
      "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIiwiZXhwIjo5OTk5OTk5OTk5fQ",
  };
  for (size_t i = 0; i < NS_ARRAY_SIZE(raw); i++)
    if (ns_auth_verify(f->v[V_HS], raw[i], strlen(raw[i]), NOW, &p) !=
        NS_EAUTH)
      fail_msg("raw token %zu accepted", i);

  /* NULL token, and every mutation of the good token below */
  assert_int_equal(ns_auth_verify(f->v[V_HS], NULL, 0, NOW, &p), NS_EAUTH);
  assert_int_equal(ns_auth_verify(f->v[V_HS], good, 0, NOW, &p), NS_EAUTH);

  /* a fourth part */
  snprintf(t, sizeof(t), "%s.AAAA", good);
  assert_int_equal(ns_auth_verify(f->v[V_HS], t, strlen(t), NOW, &p), NS_EAUTH);
  /* padding, whitespace, standard-alphabet characters */
  snprintf(t, sizeof(t), "%s=", good);
  assert_int_equal(ns_auth_verify(f->v[V_HS], t, strlen(t), NOW, &p), NS_EAUTH);
  snprintf(t, sizeof(t), " %s", good);
  assert_int_equal(ns_auth_verify(f->v[V_HS], t, strlen(t), NOW, &p), NS_EAUTH);
  snprintf(t, sizeof(t), "%s\n", good);
  assert_int_equal(ns_auth_verify(f->v[V_HS], t, strlen(t), NOW, &p), NS_EAUTH);
  memcpy(t, good, gn + 1);
  t[dot2 - good + 1] = '+';
  assert_int_equal(ns_auth_verify(f->v[V_HS], t, gn, NOW, &p), NS_EAUTH);
  /* empty payload part */
  size_t hl = (size_t)(dot1 - good);
  snprintf(t, sizeof(t), "%.*s.%s", (int)hl, good, dot2);
  assert_int_equal(ns_auth_verify(f->v[V_HS], t, strlen(t), NOW, &p), NS_EAUTH);
  /* signature one character short (length 4k+1 becomes possible) */
  assert_int_equal(ns_auth_verify(f->v[V_HS], good, gn - 1, NOW, &p), NS_EAUTH);
  /* NUL inside the given length */
  memcpy(t, good, gn + 1);
  t[5] = '\0';
  assert_int_equal(ns_auth_verify(f->v[V_HS], t, gn, NOW, &p), NS_EAUTH);
  /* flipping every signature bit pattern of the last char: only the
   * canonical spelling verifies (43 chars hold 258 bits, 2 must be zero) */
  memcpy(t, good, gn + 1);
  int accepted = 0;
  static const char alpha[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  for (size_t i = 0; i < 64; i++) {
    t[gn - 1] = alpha[i];
    accepted += ns_auth_verify(f->v[V_HS], t, gn, NOW, &p) == 0;
  }
  assert_int_equal(accepted, 1);
}

/* The token need not be NUL-terminated: only `len` bytes count. */
static void test_length_is_respected(void **state) {
  const fixture *f = *state;
  char t[TOK_CAP];
  ns_principal p;
  size_t n = build(f, HS, OK_P, S_HS256, NULL, t);
  memcpy(t + n, "&device_id=x", 13);
  assert_int_equal(ns_auth_verify(f->v[V_HS], t, n, NOW, &p), 0);
  assert_string_equal(p.sub, "alice");
  assert_int_equal(p.exp, 1700003600);
  assert_int_equal(ns_auth_verify(f->v[V_HS], t, n + 1, NOW, &p), NS_EAUTH);
}

/* Tokens up to 8 KiB verify; longer ones are refused unread. */
static void test_size_limit(void **state) {
  const fixture *f = *state;
  char *payload = malloc(TOK_CAP), *t = malloc(TOK_CAP);
  ns_principal p;
  size_t n = 0, pad;
  int seen_limit = 0, seen_over = 0;

  assert_non_null(payload);
  assert_non_null(t);
  for (pad = 5900; pad < 6300; pad++) {
    snprintf(payload, TOK_CAP, "{\"sub\":\"alice\",\"exp\":1700003600,\"x\":\"%0*d\"}",
             (int)pad, 0);
    n = build(f, HS, payload, S_HS256, NULL, t);
    int rc = ns_auth_verify(f->v[V_HS], t, n, NOW, &p);
    if (n <= 8192) {
      assert_int_equal(rc, 0);
      seen_limit |= n == 8192;
    } else {
      assert_int_equal(rc, NS_EAUTH);
      seen_over = 1;
      break;
    }
  }
  assert_true(seen_limit);
  assert_true(seen_over);
  free(payload);
  free(t);
}

static void test_sub_length(void **state) {
  const fixture *f = *state;
  char payload[400], sub[NS_SUB_MAX + 2];
  ns_principal p;

  memset(sub, 's', sizeof(sub) - 2);
  sub[NS_SUB_MAX] = '\0';
  snprintf(payload, sizeof(payload), "{\"sub\":\"%s\",\"exp\":1700003600}", sub);
  assert_int_equal(check(f, V_HS, HS, payload, S_HS256, &p), 0);
  assert_int_equal(strlen(p.sub), NS_SUB_MAX);
  assert_string_equal(p.name, sub);

  sub[NS_SUB_MAX] = 's';
  sub[NS_SUB_MAX + 1] = '\0';
  snprintf(payload, sizeof(payload), "{\"sub\":\"%s\",\"exp\":1700003600}", sub);
  assert_int_equal(check(f, V_HS, HS, payload, S_HS256, &p), NS_EAUTH);
}

/* Long names are cut to 256 bytes, never inside a UTF-8 character. */
static void test_name_truncation(void **state) {
  const fixture *f = *state;
  char payload[1200], name[600];
  ns_principal p;

  memset(name, 'n', 300);
  name[300] = '\0';
  snprintf(payload, sizeof(payload),
           "{\"sub\":\"u\",\"exp\":1700003600,\"name\":\"%s\"}", name);
  assert_int_equal(check(f, V_HS, HS, payload, S_HS256, &p), 0);
  assert_int_equal(strlen(p.name), 256);
  assert_memory_equal(p.name, name, 256);

  /* 255 ASCII bytes, then "é" (2 bytes) straddling the 256-byte limit */
  memset(name, 'n', 255);
  strcpy(name + 255, "\xc3\xa9xyz");
  snprintf(payload, sizeof(payload),
           "{\"sub\":\"u\",\"exp\":1700003600,\"email\":\"%s\"}", name);
  assert_int_equal(check(f, V_HS, HS, payload, S_HS256, &p), 0);
  assert_int_equal(strlen(p.name), 255);

  /* a 4-byte character ending exactly at 256 is kept whole */
  memset(name, 'n', 252);
  strcpy(name + 252, "\xf0\x9f\x98\x80tail");
  snprintf(payload, sizeof(payload),
           "{\"sub\":\"u\",\"exp\":1700003600,\"email\":\"%s\"}", name);
  assert_int_equal(check(f, V_HS, HS, payload, S_HS256, &p), 0);
  assert_int_equal(strlen(p.name), 256);
  assert_memory_equal(p.name + 252, "\xf0\x9f\x98\x80", 4);
}

/* The expiry edge: ok at exp + 30, expired one second later. */
static void test_leeway_edges(void **state) {
  const fixture *f = *state;
  char t[TOK_CAP];
  ns_principal p;
  size_t n = build(f, HS, OK_P, S_HS256, NULL, t);
  assert_int_equal(ns_auth_verify(f->v[V_HS], t, n, 1700003630, &p), 0);
  assert_int_equal(ns_auth_verify(f->v[V_HS], t, n, 1700003631, &p),
                   NS_EEXPIRED);
  assert_int_equal(ns_auth_verify(f->v[V_HS], t, n, INT64_MAX, &p),
                   NS_EEXPIRED);
  assert_int_equal(ns_auth_verify(f->v[V_HS], t, n, INT64_MIN, &p), 0);
}

/* ---- ns_auth_open ------------------------------------------------------- */

static char *cert_pem(EVP_PKEY *k) {
  X509 *x = X509_new();
  BIO *b = BIO_new(BIO_s_mem());
  char *data;
  assert_non_null(x);
  assert_non_null(b);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), 0);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_NAME *nm = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC,
                             (const unsigned char *)"test", -1, -1, 0);
  X509_set_issuer_name(x, nm);
  X509_set_pubkey(x, k);
  assert_true(X509_sign(x, k, EVP_sha256()) > 0);
  assert_int_equal(PEM_write_bio_X509(b, x), 1);
  long n = BIO_get_mem_data(b, &data);
  char *s = ns_xstrndup(data, (size_t)n);
  BIO_free(b);
  X509_free(x);
  return s;
}

static void expect_open_fail(const char *secret, const char *pem,
                             const char *must_mention) {
  ns_auth_opts o = {secret, pem, NULL, NULL};
  ns_auth *a = (ns_auth *)&o; /* must be reset to NULL */
  char err[160] = "";
  assert_int_equal(ns_auth_open(&a, &o, err, sizeof(err)), NS_EINVAL);
  assert_null(a);
  if (!strstr(err, must_mention))
    fail_msg("error '%s' does not mention '%s'", err, must_mention);
  assert_null(strstr(err, "BEGIN")); /* never echoes key material */
}

static void test_open(void **state) {
  const fixture *f = *state;
  ns_auth *a = NULL;
  ns_principal p;
  char t[TOK_CAP];
  char err[160];

  assert_int_equal(ns_auth_open(&a, NULL, err, sizeof(err)), NS_EINVAL);
  assert_null(a);
  expect_open_fail(NULL, NULL, "jwt_secret");
  expect_open_fail("", "", "jwt_secret");
  expect_open_fail(NULL, "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC "
                         "KEY-----\n", "PEM");
  expect_open_fail(SECRET, "not a pem at all", "PEM");

  EVP_PKEY *p384 = EVP_EC_gen("P-384");
  EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
  EVP_PKEY *rsa1k = EVP_RSA_gen(1024);
  assert_non_null(p384);
  assert_non_null(ed);
  assert_non_null(rsa1k);
  char *pem384 = pem_of(p384), *pemed = pem_of(ed), *pem1k = pem_of(rsa1k);
  expect_open_fail(NULL, pem384, "P-256");
  expect_open_fail(NULL, pemed, "neither RSA nor EC");
  expect_open_fail(NULL, pem1k, "2048");
  free(pem384);
  free(pemed);
  free(pem1k);
  EVP_PKEY_free(p384);
  EVP_PKEY_free(ed);
  EVP_PKEY_free(rsa1k);

  /* err may be NULL */
  ns_auth_opts none = {NULL, NULL, NULL, NULL};
  assert_int_equal(ns_auth_open(&a, &none, NULL, 0), NS_EINVAL);

  /* a PEM wins over a secret: HS256 tokens are then refused */
  assert_int_equal(open_v(&a, SECRET, f->ec_pem, "", ""), 0);
  size_t n = build(f, ES, OK_P, S_ES256, NULL, t);
  assert_int_equal(ns_auth_verify(a, t, n, NOW, &p), 0);
  n = build(f, HS, OK_P, S_HS256, NULL, t);
  assert_int_equal(ns_auth_verify(a, t, n, NOW, &p), NS_EAUTH);
  ns_auth_free(&a);
  assert_null(a);
  ns_auth_free(&a); /* idempotent */
  ns_auth_free(NULL);

  /* a certificate PEM is accepted for its public key */
  char *cert = cert_pem(f->rsa);
  assert_int_equal(open_v(&a, NULL, cert, NULL, NULL), 0);
  n = build(f, RS, OK_P, S_RS256, NULL, t);
  assert_int_equal(ns_auth_verify(a, t, n, NOW, &p), 0);
  ns_auth_free(&a);
  free(cert);

  /* verify with no verifier */
  assert_int_equal(ns_auth_verify(NULL, t, n, NOW, &p), NS_EAUTH);
}

/* ---- ns_auth_mint_hs256 ------------------------------------------------- */

static void test_mint_roundtrip(void **state) {
  const fixture *f = *state;
  char tok[1024];
  unsigned char json[512];
  ns_principal p;

  assert_int_equal(ns_auth_mint_hs256(SECRET, "svc-1", "service", NOW, 3600,
                                      tok, sizeof(tok)),
                   0);
  assert_int_equal(ns_auth_verify(f->v[V_HS], tok, strlen(tok), NOW, &p), 0);
  assert_string_equal(p.sub, "svc-1");
  assert_string_equal(p.role, "service");
  assert_int_equal(p.is_service, 1);
  assert_int_equal(p.exp, NOW + 3600);
  assert_int_equal(ns_auth_verify(f->v[V_HS], tok, strlen(tok), NOW + 3631, &p),
                   NS_EEXPIRED);

  /* exact header and claims */
  const char *d1 = strchr(tok, '.'), *d2 = strrchr(tok, '.');
  size_t jn = dec(tok, (size_t)(d1 - tok), json);
  assert_int_equal(jn, strlen(HS));
  assert_memory_equal(json, HS, jn);
  jn = dec(d1 + 1, (size_t)(d2 - d1 - 1), json);
  json[jn] = '\0';
  /* libjwt writes the claims with sorted keys */
  assert_string_equal((char *)json,
                      "{\"exp\":1700003600,\"iat\":1700000000,"
                      "\"role\":\"service\",\"sub\":\"svc-1\"}");
  assert_int_equal(strlen(d2 + 1), 43);
  assert_null(strchr(tok, '='));

  /* no role; a sub that needs JSON escaping */
  assert_int_equal(ns_auth_mint_hs256(SECRET, "a\"b\\c/d", NULL, NOW, 60, tok,
                                      sizeof(tok)),
                   0);
  assert_int_equal(ns_auth_verify(f->v[V_HS], tok, strlen(tok), NOW, &p), 0);
  assert_string_equal(p.sub, "a\"b\\c/d");
  assert_string_equal(p.role, "");
  assert_int_equal(p.is_service, 0);

  /* another secret's verifier refuses it */
  ns_auth *other = NULL;
  assert_int_equal(open_v(&other, SECRET "2", NULL, NULL, NULL), 0);
  assert_int_equal(ns_auth_verify(other, tok, strlen(tok), NOW, &p), NS_EAUTH);
  ns_auth_free(&other);
}

static void test_mint_limits(void **state) {
  char tok[1024], sub[NS_SUB_MAX + 2];

  assert_int_equal(ns_auth_mint_hs256(SECRET, "u", "user", NOW, 60, tok,
                                      sizeof(tok)),
                   0);
  size_t len = strlen(tok);
  /* needs exactly len + 1 bytes */
  memset(tok, 'Z', sizeof(tok));
  assert_int_equal(ns_auth_mint_hs256(SECRET, "u", "user", NOW, 60, tok, len),
                   NS_ETOOBIG);
  assert_int_equal(tok[len], 'Z'); /* nothing written past outlen */
  assert_int_equal(
      ns_auth_mint_hs256(SECRET, "u", "user", NOW, 60, tok, len + 1), 0);
  assert_int_equal(strlen(tok), len);
  assert_int_equal(ns_auth_mint_hs256(SECRET, "u", "user", NOW, 60, tok, 0),
                   NS_ETOOBIG);

  assert_int_equal(ns_auth_mint_hs256("", "u", NULL, NOW, 60, tok, sizeof(tok)),
                   NS_EINVAL);
  assert_int_equal(
      ns_auth_mint_hs256(NULL, "u", NULL, NOW, 60, tok, sizeof(tok)), NS_EINVAL);
  assert_int_equal(
      ns_auth_mint_hs256(SECRET, "", NULL, NOW, 60, tok, sizeof(tok)), NS_EINVAL);
  assert_int_equal(
      ns_auth_mint_hs256(SECRET, "u", NULL, NOW, 0, tok, sizeof(tok)), NS_EINVAL);
  assert_int_equal(ns_auth_mint_hs256(SECRET, "u", NULL, NOW, INT64_MAX, tok,
                                      sizeof(tok)),
                   NS_EINVAL);
  memset(sub, 's', sizeof(sub) - 1);
  sub[NS_SUB_MAX + 1] = '\0';
  assert_int_equal(
      ns_auth_mint_hs256(SECRET, sub, NULL, NOW, 60, tok, sizeof(tok)),
      NS_EINVAL);
  sub[NS_SUB_MAX] = '\0';
  assert_int_equal(
      ns_auth_mint_hs256(SECRET, sub, NULL, NOW, 60, tok, sizeof(tok)), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_table),
      cmocka_unit_test(test_malformed),
      cmocka_unit_test(test_length_is_respected),
      cmocka_unit_test(test_size_limit),
      cmocka_unit_test(test_sub_length),
      cmocka_unit_test(test_name_truncation),
      cmocka_unit_test(test_leeway_edges),
      cmocka_unit_test(test_open),
      cmocka_unit_test(test_mint_roundtrip),
      cmocka_unit_test(test_mint_limits),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
