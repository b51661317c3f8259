/*
 * ns_auth.c -- JWT verification (HS256 / RS256 / ES256) and dev-token minting.
 *
 * libjwt 1.10 checks HS256 signatures and mints the dev tokens; everything
 * around it is ours, because on its own it accepts unsigned tokens when
 * given no key, HS512 when HS256 is meant, an HS256 token keyed with the
 * RSA public PEM, and checks no exp / nbf / iss / aud (STACK.md §3).  So:
 *
 *   1. The token is split strictly: at most NS_AUTH_TOKEN_MAX bytes, exactly
 *      two dots, three non-empty parts of canonical unpadded base64url (its
 *      own decoder is lenient), and a signature of the length the
 *      configured algorithm and key produce.
 *   2. The header is a JSON object whose "alg" equals the one algorithm this
 *      verifier was opened with; "none", other algorithms and any "crit"
 *      extension are rejected before a signature is looked at.  "kid" and
 *      the key-fetching members ("jku", "x5u", ...) are ignored: the key is
 *      the configured one, never one the token names.
 *   3. The signature over "<header>.<payload>" (the token's own bytes):
 *      HS256 by jwt_decode() with the configured secret (never NULL: that
 *      would skip the signature), after which the algorithm libjwt reports
 *      must be HS256 again; libjwt also refuses a "typ" other than "JWT"
 *      (any case) and JSON that jansson rejects (a \u0000 escape, integers
 *      beyond int64).  RS256 / ES256 with OpenSSL's EVP_DigestVerify and
 *      the EVP_PKEY parsed once at open (ES256 signatures arrive as raw
 *      64-byte r||s and are re-encoded as DER): libjwt 1.10 would parse the
 *      PEM again on every call, 10x / 5x the instructions (verify_pkey()).
 *   4. Only then are the claims read, by us (see check_claims()).
 *
 * The JSON we read is parsed by json-c in strict mode with UTF-8
 * validation, so every string copied into ns_principal is valid UTF-8
 * without embedded NULs.
 *
 * Invariants: an ns_auth is immutable after ns_auth_open(), so one verifier
 * may be shared by every connection of a process.  Nothing in this file
 * logs, and no error message ever contains token or key bytes.  Failed
 * OpenSSL calls (ours and libjwt's) have their error queue cleared here, so
 * that stale errors cannot leak into the TLS code that shares the thread.
 */
#include "ns_auth.h"

#include "ns_common.h"

#include <json.h>
#include <jwt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

/* Longest token accepted, in bytes.  Real tokens are well under 2 KiB; the
 * bound keeps every buffer below on the stack. */
#define NS_AUTH_TOKEN_MAX 8192
/* Decoded bytes of all three parts together can never exceed this. */
#define DECODED_MAX (NS_AUTH_TOKEN_MAX / 4 * 3 + 3)
#define HS256_LEN 32
#define ES256_LEN 64
#define RSA_MIN_BITS 2048

typedef enum { ALG_HS256, ALG_RS256, ALG_ES256 } auth_alg;

struct ns_auth {
  auth_alg alg;
  unsigned char *secret; /* HS256 only; secret_len <= INT_MAX (libjwt's int) */
  size_t secret_len;
  EVP_PKEY *pkey;        /* RS256 / ES256 only */
  size_t sig_len;        /* bytes of a signature of `alg` with this key */
  char *issuer;          /* NULL = not checked */
  char *audience;        /* NULL = not checked */
};

/* A borrowed byte range of the token. */
typedef struct {
  const char *p;
  size_t n;
} span;

static const char *alg_name(auth_alg alg) {
  switch (alg) {
  case ALG_HS256:
    return "HS256";
  case ALG_RS256:
    return "RS256";
  default:
    return "ES256";
  }
}

static void set_err(char *err, size_t errlen, const char *msg) {
  if (err && errlen)
    snprintf(err, errlen, "%s", msg);
}

/* ---- base64url ---------------------------------------------------------- */

static int b64url_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == '-')
    return 62;
  if (c == '_')
    return 63;
  return -1;
}

/* Decodes unpadded base64url `in` into `out` (room for `cap` bytes).  Only
 * the canonical encoding is accepted: no padding, no whitespace, no length
 * of the form 4k+1 and no non-zero bits left over in the last character, so
 * every byte string has exactly one accepted spelling.  Returns the decoded
 * length, or -1. */
static long b64url_decode(const char *in, size_t n, unsigned char *out,
                          size_t cap) {
  uint32_t acc = 0;
  int bits = 0;
  size_t o = 0;

  if (n % 4 == 1)
    return -1;
  for (size_t i = 0; i < n; i++) {
    int v = b64url_value((unsigned char)in[i]);
    if (v < 0)
      return -1;
    acc = (acc << 6) | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      if (o >= cap)
        return -1;
      out[o++] = (unsigned char)(acc >> bits);
      acc &= (1u << bits) - 1;
    }
  }
  if (acc != 0) /* leftover bits of the last character must be zero */
    return -1;
  return (long)o;
}

/* ---- JSON --------------------------------------------------------------- */

/* Parses `n` bytes as exactly one JSON object (strict json-c, UTF-8
 * validated; trailing whitespace allowed, nothing else).  Returns a new
 * reference, or NULL. */
static json_object *parse_object(const unsigned char *buf, size_t n) {
  json_tokener *tok = json_tokener_new_ex(16);
  json_object *obj = NULL;
  size_t end;

  if (!tok)
    return NULL;
  json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8 |
                                  JSON_TOKENER_ALLOW_TRAILING_CHARS);
  obj = json_tokener_parse_ex(tok, (const char *)buf, (int)n);
  if (!obj || json_tokener_get_error(tok) != json_tokener_success ||
      !json_object_is_type(obj, json_type_object))
    goto fail;
  for (end = json_tokener_get_parse_end(tok); end < n; end++) {
    unsigned char c = buf[end];
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n')
      goto fail;
  }
  json_tokener_free(tok);
  return obj;
fail:
  json_object_put(obj);
  json_tokener_free(tok);
  return NULL;
}

/* Looks up string member `key`.  Returns 1 and sets `s`/`n` when it is a
 * string without embedded NULs, 0 when absent, -1 when of another type or
 * holding a NUL (which would silently truncate a copy: "alice\u0000x"). */
static int get_str(json_object *obj, const char *key, const char **s,
                   size_t *n) {
  json_object *v;
  int len;

  if (!json_object_object_get_ex(obj, key, &v))
    return 0;
  if (!json_object_is_type(v, json_type_string))
    return -1;
  *s = json_object_get_string(v);
  len = json_object_get_string_len(v);
  if (len < 0 || memchr(*s, '\0', (size_t)len))
    return -1;
  *n = (size_t)len;
  return 1;
}

/* Looks up a NumericDate member.  Returns 1 with `*t` when it is a JSON
 * integer, 0 when absent, -1 for any other type (strings, floats, null). */
static int get_time(json_object *obj, const char *key, int64_t *t) {
  json_object *v;

  if (!json_object_object_get_ex(obj, key, &v))
    return 0;
  if (!json_object_is_type(v, json_type_int))
    return -1;
  *t = json_object_get_int64(v); /* clamps beyond INT64_MAX */
  return 1;
}

static int str_eq(const char *s, size_t n, const char *want) {
  return n == strlen(want) && memcmp(s, want, n) == 0;
}

/* Copies `n` bytes of valid UTF-8 into `dst` (capacity `cap` > 0), cutting
 * at a character boundary when it does not fit.  Always NUL-terminates. */
static void copy_utf8(char *dst, size_t cap, const char *src, size_t n) {
  if (n >= cap) {
    n = cap - 1;
    while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80)
      n--; /* src[n] would start the next character: cut before it */
  }
  memcpy(dst, src, n);
  dst[n] = '\0';
}

/* ---- signatures -------------------------------------------------------- */

/* HS256, by libjwt: the whole token (`len` bytes, already split and
 * checked) with the configured secret.  0 when the signature is good and
 * libjwt read the algorithm we pinned, else NS_EAUTH.  libjwt needs a
 * NUL-terminated copy. */
static int verify_hs256(const ns_auth *a, const char *token, size_t len) {
  char tok[NS_AUTH_TOKEN_MAX + 1];
  jwt_t *j = NULL;
  int rc = NS_EAUTH;

  memcpy(tok, token, len);
  tok[len] = '\0';
  if (jwt_decode(&j, tok, a->secret, (int)a->secret_len) == 0 && j &&
      jwt_get_alg(j) == JWT_ALG_HS256)
    rc = 0;
  jwt_free(j);
  ERR_clear_error();
  return rc;
}

/* RS256 / ES256 are checked here with the EVP_PKEY parsed once at open, not
 * by libjwt: libjwt 1.10 parses the PEM again on every call, which made a
 * verification 10x (RS256) and 5x (ES256) the instructions, about 350 us
 * instead of 20-95 us (docs/security.md). */
/* Re-encodes a JWS ES256 signature (r||s, 32 bytes each, RFC 7518 §3.4) as
 * the DER ECDSA-Sig-Value OpenSSL verifies.  Returns the DER length written
 * into `der` (capacity `cap`), or -1. */
static int es256_to_der(const unsigned char *rs, unsigned char *der,
                        size_t cap) {
  ECDSA_SIG *es = ECDSA_SIG_new();
  BIGNUM *r = BN_bin2bn(rs, ES256_LEN / 2, NULL);
  BIGNUM *s = BN_bin2bn(rs + ES256_LEN / 2, ES256_LEN / 2, NULL);
  int len = -1;

  if (!es || !r || !s || !ECDSA_SIG_set0(es, r, s))
    goto cleanup;
  r = s = NULL; /* owned by `es` now */
  len = i2d_ECDSA_SIG(es, NULL);
  if (len <= 0 || (size_t)len > cap) {
    len = -1;
    goto cleanup;
  }
  len = i2d_ECDSA_SIG(es, &der);
cleanup:
  BN_free(r);
  BN_free(s);
  ECDSA_SIG_free(es);
  return len;
}

static int verify_pkey(const ns_auth *a, span input, const unsigned char *sig,
                       size_t siglen) {
  unsigned char der[80]; /* a P-256 DER signature is at most 72 bytes */
  EVP_MD_CTX *md = NULL;
  int rc = NS_EAUTH;

  if (a->alg == ALG_ES256) {
    int n;
    if (siglen != ES256_LEN || (n = es256_to_der(sig, der, sizeof(der))) <= 0)
      goto cleanup;
    sig = der;
    siglen = (size_t)n;
  } else if (siglen != (size_t)EVP_PKEY_get_size(a->pkey)) {
    goto cleanup; /* RSA signatures are exactly the modulus size */
  }
  md = EVP_MD_CTX_new();
  if (!md || EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, a->pkey) != 1)
    goto cleanup;
  if (EVP_DigestVerify(md, sig, siglen, (const unsigned char *)input.p,
                       input.n) == 1)
    rc = 0;
cleanup:
  EVP_MD_CTX_free(md);
  ERR_clear_error();
  return rc;
}

/* ---- token structure ---------------------------------------------------- */

/* Splits `tok` at its two dots.  Every part must be non-empty. */
static int split_token(const char *tok, size_t len, span parts[3]) {
  size_t start = 0;
  int k = 0;

  if (!tok || len == 0 || len > NS_AUTH_TOKEN_MAX)
    return NS_EAUTH;
  for (size_t i = 0; i <= len; i++) {
    if (i < len && tok[i] != '.')
      continue;
    if (k == 3 || i == start)
      return NS_EAUTH; /* a fourth part, or an empty one */
    parts[k].p = tok + start;
    parts[k].n = i - start;
    k++;
    start = i + 1;
  }
  return k == 3 ? 0 : NS_EAUTH;
}

/* The header must name exactly our algorithm and carry no "crit": we
 * implement no JWS extension, so RFC 7515 §4.1.11 says reject. */
static int check_header(const ns_auth *a, json_object *hdr) {
  const char *alg;
  size_t n;

  if (get_str(hdr, "alg", &alg, &n) != 1 || !str_eq(alg, n, alg_name(a->alg)))
    return NS_EAUTH;
  if (json_object_object_get_ex(hdr, "crit", NULL))
    return NS_EAUTH;
  return 0;
}

/* ---- claims ------------------------------------------------------------- */

/* True when instant `t` lies beyond now + leeway (overflow-safe). */
static int in_future(int64_t t, int64_t now) {
  return now <= INT64_MAX - NS_AUTH_LEEWAY_S && t > now + NS_AUTH_LEEWAY_S;
}

/* True when `exp` + leeway lies before now (overflow-safe). */
static int has_expired(int64_t exp, int64_t now) {
  return now >= INT64_MIN + NS_AUTH_LEEWAY_S && exp < now - NS_AUTH_LEEWAY_S;
}

static int aud_matches(json_object *claims, const char *want) {
  json_object *v;
  const char *s;
  size_t n;

  if (!json_object_object_get_ex(claims, "aud", &v))
    return 0;
  if (json_object_is_type(v, json_type_string))
    return get_str(claims, "aud", &s, &n) == 1 && str_eq(s, n, want);
  if (!json_object_is_type(v, json_type_array))
    return 0;
  size_t count = json_object_array_length(v);
  for (size_t i = 0; i < count; i++) {
    json_object *e = json_object_array_get_idx(v, i);
    if (!json_object_is_type(e, json_type_string))
      continue;
    s = json_object_get_string(e);
    n = (size_t)json_object_get_string_len(e);
    if (!memchr(s, '\0', n) && str_eq(s, n, want))
      return 1;
  }
  return 0;
}

/* Fills the optional parts of `out`: role ("" when absent, not a string or
 * longer than the field) and name (email, else name, else sub). */
static void fill_optional(json_object *claims, ns_principal *out) {
  const char *s;
  size_t n;

  out->role[0] = '\0';
  if (get_str(claims, "role", &s, &n) == 1 && n < sizeof(out->role))
    copy_utf8(out->role, sizeof(out->role), s, n);
  out->is_service = !strcmp(out->role, "service") || !strcmp(out->role, "admin");

  if ((get_str(claims, "email", &s, &n) == 1 && n > 0) ||
      (get_str(claims, "name", &s, &n) == 1 && n > 0))
    copy_utf8(out->name, sizeof(out->name), s, n);
  else
    copy_utf8(out->name, sizeof(out->name), out->sub, strlen(out->sub));
}

/* Checks the registered claims and fills `out`.  Expiry is judged last, so
 * NS_EEXPIRED means "this token was good and has run out" and a client may
 * react by refreshing; anything else wrong is NS_EAUTH. */
static int check_claims(const ns_auth *a, json_object *claims, int64_t now,
                        ns_principal *out) {
  const char *sub, *iss;
  size_t sub_n, iss_n;
  int64_t exp, t;
  int r;

  if (get_time(claims, "exp", &exp) != 1)
    return NS_EAUTH;
  if (get_str(claims, "sub", &sub, &sub_n) != 1 || sub_n < 1 ||
      sub_n > NS_SUB_MAX)
    return NS_EAUTH;
  if ((r = get_time(claims, "nbf", &t)) < 0 || (r == 1 && in_future(t, now)))
    return NS_EAUTH;
  if ((r = get_time(claims, "iat", &t)) < 0 || (r == 1 && in_future(t, now)))
    return NS_EAUTH;
  if (a->issuer && (get_str(claims, "iss", &iss, &iss_n) != 1 ||
                    !str_eq(iss, iss_n, a->issuer)))
    return NS_EAUTH;
  if (a->audience && !aud_matches(claims, a->audience))
    return NS_EAUTH;
  if (has_expired(exp, now))
    return NS_EEXPIRED;

  memset(out, 0, sizeof(*out));
  memcpy(out->sub, sub, sub_n);
  out->exp = exp;
  fill_optional(claims, out);
  return 0;
}

/* ---- public API --------------------------------------------------------- */

/* Parses the PEM public key and picks the algorithm from its type: RSA of at
 * least RSA_MIN_BITS -> RS256, EC on P-256 -> ES256.  A "PUBLIC KEY"
 * (SubjectPublicKeyInfo) block is read; failing that, the key of a
 * "CERTIFICATE" block (identity providers often publish certificates). */
static int load_pem(ns_auth *a, const char *pem, char *err, size_t errlen) {
  BIO *bio = BIO_new_mem_buf(pem, -1);
  EVP_PKEY *pkey = NULL;
  X509 *cert = NULL;
  char group[64];
  size_t glen = 0;
  int rc = NS_EINVAL;

  if (!bio)
    goto cleanup;
  pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
  if (!pkey && BIO_reset(bio) == 1 &&
      (cert = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
    pkey = X509_get_pubkey(cert);
  if (!pkey) {
    set_err(err, errlen, "jwt public key: no PEM public key or certificate");
    goto cleanup;
  }
  switch (EVP_PKEY_get_base_id(pkey)) {
  case EVP_PKEY_RSA:
    if (EVP_PKEY_get_bits(pkey) < RSA_MIN_BITS) {
      set_err(err, errlen, "jwt public key: RSA key shorter than 2048 bits");
      goto cleanup;
    }
    a->alg = ALG_RS256;
    a->sig_len = (size_t)EVP_PKEY_get_size(pkey); /* the modulus size */
    rc = 0;
    break;
  case EVP_PKEY_EC:
    if (EVP_PKEY_get_group_name(pkey, group, sizeof(group), &glen) != 1 ||
        OBJ_txt2nid(group) != NID_X9_62_prime256v1) {
      set_err(err, errlen, "jwt public key: EC key is not on curve P-256");
      goto cleanup;
    }
    a->alg = ALG_ES256;
    a->sig_len = ES256_LEN; /* JWS r||s (RFC 7518 §3.4), not DER */
    rc = 0;
    break;
  default:
    set_err(err, errlen, "jwt public key: key type is neither RSA nor EC");
    break;
  }
  if (rc == 0) {
    a->pkey = pkey;
    pkey = NULL;
  }
cleanup:
  EVP_PKEY_free(pkey);
  X509_free(cert);
  BIO_free(bio);
  ERR_clear_error();
  return rc;
}

/* Creates a verifier from `opts`.  A non-empty `public_key_pem` wins over
 * `secret` (the secret may still be configured for `notisyncd token`); an
 * empty secret counts as none.  `issuer` / `audience` are copied, so `opts`
 * need not outlive the verifier.  Returns 0 and sets `*out`, or NS_EINVAL
 * with a message in `err` (which may be NULL); `*out` is then NULL.  Free
 * with ns_auth_free(). */
int ns_auth_open(ns_auth **out, const ns_auth_opts *opts, char *err,
                 size_t errlen) {
  ns_auth *a;
  int rc;

  *out = NULL;
  if (!opts) {
    set_err(err, errlen, "jwt: no options");
    return NS_EINVAL;
  }
  a = ns_xcalloc(1, sizeof(*a));
  if (opts->public_key_pem && opts->public_key_pem[0]) {
    if ((rc = load_pem(a, opts->public_key_pem, err, errlen)) < 0)
      goto fail;
  } else if (opts->secret && opts->secret[0]) {
    a->alg = ALG_HS256;
    a->sig_len = HS256_LEN;
    a->secret_len = strlen(opts->secret);
    if (a->secret_len > INT_MAX) {
      set_err(err, errlen, "jwt secret: too long");
      rc = NS_EINVAL;
      goto fail;
    }
    a->secret = (unsigned char *)ns_xstrdup(opts->secret);
  } else {
    set_err(err, errlen, "jwt: set jwt_secret or jwt_public_key_file");
    rc = NS_EINVAL;
    goto fail;
  }
  if (opts->issuer && opts->issuer[0])
    a->issuer = ns_xstrdup(opts->issuer);
  if (opts->audience && opts->audience[0])
    a->audience = ns_xstrdup(opts->audience);
  *out = a;
  return 0;
fail:
  ns_auth_free(&a);
  return rc;
}

/* Frees the verifier (the secret is wiped first) and sets `*a` to NULL.
 * NULL and a NULL `*a` are accepted. */
void ns_auth_free(ns_auth **a) {
  if (!a || !*a)
    return;
  if ((*a)->secret)
    OPENSSL_cleanse((*a)->secret, (*a)->secret_len);
  free((*a)->secret);
  EVP_PKEY_free((*a)->pkey);
  free((*a)->issuer);
  free((*a)->audience);
  free(*a);
  *a = NULL;
}

/* Verifies `token` as described in the file header.  `out` is written only
 * on success.  Returns 0, NS_EEXPIRED (valid but past exp + leeway), or
 * NS_EAUTH.  Our decode buffers live on the stack (about 14 KiB with
 * libjwt's copy); libjwt allocates per call (jansson, its own copies). */
int ns_auth_verify(const ns_auth *a, const char *token, size_t len,
                   int64_t now, ns_principal *out) {
  unsigned char buf[DECODED_MAX];
  json_object *hdr = NULL, *claims = NULL;
  span part[3], input;
  long hn, pn, sn;
  int rc = NS_EAUTH;

  if (!a || !out || split_token(token, len, part) < 0)
    return NS_EAUTH;
  hn = b64url_decode(part[0].p, part[0].n, buf, sizeof(buf));
  if (hn < 0 || !(hdr = parse_object(buf, (size_t)hn)) || check_header(a, hdr) < 0)
    goto cleanup;
  sn = b64url_decode(part[2].p, part[2].n, buf, sizeof(buf));
  if (sn < 0 || (size_t)sn != a->sig_len)
    goto cleanup;
  input.p = token;
  input.n = part[0].n + 1 + part[1].n;
  if ((a->alg == ALG_HS256 ? verify_hs256(a, token, len)
                           : verify_pkey(a, input, buf, (size_t)sn)) < 0)
    goto cleanup;
  pn = b64url_decode(part[1].p, part[1].n, buf, sizeof(buf));
  if (pn < 0)
    goto cleanup;
  if (!(claims = parse_object(buf, (size_t)pn)))
    goto cleanup;
  rc = check_claims(a, claims, now, out);
cleanup:
  json_object_put(hdr);
  json_object_put(claims);
  OPENSSL_cleanse(buf, sizeof(buf));
  return rc;
}

/* Mints {"alg":"HS256","typ":"JWT"}.{"sub","role"?,"iat","exp"} signed with
 * `secret` (by libjwt) into `out` (NUL-terminated).  Returns 0; NS_ETOOBIG
 * when `outlen` is too small (nothing useful is written then); NS_EINVAL
 * for an empty secret, a sub that ns_auth_verify() would refuse (empty or
 * longer than NS_SUB_MAX), a non-positive ttl or one that overflows exp;
 * NS_ENOMEM when libjwt fails (it reports nothing finer). */
int ns_auth_mint_hs256(const char *secret, const char *sub, const char *role,
                       int64_t now, int64_t ttl_s, char *out, size_t outlen) {
  jwt_t *j = NULL;
  char *tok = NULL;
  size_t sublen, n;
  int rc = NS_ENOMEM;

  if (!secret || !secret[0] || strlen(secret) > INT_MAX || !sub || !out)
    return NS_EINVAL;
  sublen = strlen(sub);
  if (sublen < 1 || sublen > NS_SUB_MAX || ttl_s <= 0 || now > INT64_MAX - ttl_s)
    return NS_EINVAL;
  /* jwt_add_grant_int takes a long: 64 bits here, 32 on some ABIs */
  if (now < LONG_MIN || now + ttl_s > LONG_MAX)
    return NS_EINVAL;
  if (jwt_new(&j) != 0)
    return NS_ENOMEM;
  if (jwt_add_grant(j, "sub", sub) != 0 ||
      (role && role[0] && jwt_add_grant(j, "role", role) != 0) ||
      jwt_add_grant_int(j, "iat", (long)now) != 0 ||
      jwt_add_grant_int(j, "exp", (long)(now + ttl_s)) != 0 ||
      jwt_set_alg(j, JWT_ALG_HS256, (const unsigned char *)secret,
                  (int)strlen(secret)) != 0 ||
      !(tok = jwt_encode_str(j)))
    goto cleanup;
  n = strlen(tok);
  if (n + 1 > outlen) {
    rc = NS_ETOOBIG;
    goto cleanup;
  }
  memcpy(out, tok, n + 1);
  rc = 0;
cleanup:
  free(tok);
  jwt_free(j);
  ERR_clear_error();
  return rc;
}
