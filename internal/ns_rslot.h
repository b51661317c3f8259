/*
 * ns_rslot.h -- Redis Cluster arithmetic, pure: the hash slot of a key
 * (CRC16/XMODEM of the key, or of its hash tag, modulo 16384), the
 * redirect errors (MOVED / ASK) and the seed list of a cluster URL.
 *
 * Hash tag rule (as Redis): if the key has a '{' and, after it, a '}' with
 * at least one byte between them, only the bytes between the first '{' and
 * the first '}' after it are hashed; otherwise the whole key.  So
 * `q:{alice}:phone` and `presence:{alice}` share a slot, and `a{}{b}` is
 * hashed whole.
 */
#ifndef NS_RSLOT_H
#define NS_RSLOT_H

#include <stddef.h>
#include <stdint.h>

#define NS_RSLOTS 16384
#define NS_RSLOT_HOST_MAX 255
#define NS_RSLOT_SEEDS_MAX 16

/* CRC16 as Redis Cluster uses it (XMODEM: poly 0x1021, init 0). */
uint16_t ns_rslot_crc16(const char *buf, size_t len);

/* The slot of `key` (hash tag rule above). */
unsigned ns_rslot_of(const char *key, size_t len);

/* 1 when `key` has a hash tag (a non-empty {...} as above). */
int ns_rslot_has_tag(const char *key, size_t len);

/* A redirect error reply: "MOVED <slot> <host>:<port>" or "ASK <slot>
 * <host>:<port>" (host may be an IPv6 address; the port is after the last
 * ':').  Returns 1 (MOVED), 2 (ASK) or 0 (not a well-formed redirect: the
 * caller treats it as a plain error).  `host` gets a NUL-terminated copy
 * (at most NS_RSLOT_HOST_MAX bytes; longer is malformed). */
int ns_rslot_redirect(const char *err, size_t len, unsigned *slot,
                      char host[NS_RSLOT_HOST_MAX + 1], int *port);

typedef struct ns_rslot_seed {
  char host[NS_RSLOT_HOST_MAX + 1];
  int port;
} ns_rslot_seed;

/* The seeds of a cluster URL, "redis://h1[:p1],h2[:p2],...[/0]" (port
 * 6379 by default; the database, if given, must be 0: a cluster has only
 * db 0).  Returns the number of seeds (1..NS_RSLOT_SEEDS_MAX) or -1 when
 * malformed. */
int ns_rslot_seeds(const char *url, ns_rslot_seed *out, int max);

#endif
