/*
 * ns_auth.h -- JWT verification: token bytes in, principal out.  Pure: no
 * sockets, no loop; the only file read is the PEM key at open time.
 *
 * Exactly one algorithm is accepted: HS256 with `secret`, or RS256 / ES256
 * when a PEM public key is given (the algorithm follows the key type).  The
 * token's header `alg` must equal it: `none`, HS256-signed-with-the-PEM and
 * any other algorithm are rejected.  Claims: `sub` (1-128 bytes) and `exp`
 * required; `nbf`, `iat` honoured when present; leeway 30 s; `iss` / `aud`
 * checked when configured (`aud` may be a string or an array).  libjwt
 * checks the signature (and refuses a `typ` other than "JWT"); the checks
 * around it are ours (ns_auth.c).
 */
#ifndef NS_AUTH_H
#define NS_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define NS_SUB_MAX 128
#define NS_AUTH_LEEWAY_S 30

typedef struct ns_principal {
  char sub[NS_SUB_MAX + 1];
  char role[33];      /* "" when absent or too long */
  char name[257];     /* email, else name, else sub: the comment username */
  int is_service;     /* role is "service" or "admin" */
  int64_t exp;        /* seconds since the epoch */
} ns_principal;

typedef struct ns_auth_opts {
  const char *secret;          /* HS256 shared secret, or NULL */
  const char *public_key_pem;  /* PEM text (not a path), or NULL */
  const char *issuer;          /* NULL or "" = not checked */
  const char *audience;        /* NULL or "" = not checked */
} ns_auth_opts;

typedef struct ns_auth ns_auth;

/* Creates a verifier.  With `public_key_pem` the key is parsed once here.
 * Returns 0, or NS_EINVAL with a message in `err` (no key, bad PEM, key type
 * neither RSA nor EC P-256). */
int ns_auth_open(ns_auth **out, const ns_auth_opts *opts, char *err,
                 size_t errlen);
void ns_auth_free(ns_auth **a);

/* Verifies `token` (`len` bytes, not necessarily NUL-terminated) at time
 * `now` (seconds).  Returns 0 and fills `out`; NS_EEXPIRED when `exp` (plus
 * leeway) has passed; NS_EAUTH for everything else (format, signature,
 * algorithm, nbf/iat in the future, iss/aud mismatch, bad sub). */
int ns_auth_verify(const ns_auth *a, const char *token, size_t len,
                   int64_t now, ns_principal *out);

/* Signs a dev token with HS256 (libjwt): {"sub","role"?,"iat",
 * "exp"=now+ttl_s}.  Writes a NUL-terminated token into `out`.  Returns 0,
 * NS_ETOOBIG (`outlen` too small), NS_EINVAL (bad arguments) or NS_ENOMEM. */
int ns_auth_mint_hs256(const char *secret, const char *sub, const char *role,
                       int64_t now, int64_t ttl_s, char *out, size_t outlen);

#endif
