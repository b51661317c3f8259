/*
 * ns_config.h -- the server's configuration: one table of keys drives the
 * file parser, the NOTISYNC_<KEY> environment overrides, --help and the
 * "bad value for key X" errors.  Pure: no I/O except reading the file given.
 *
 * Precedence: defaults < file < environment.  Durations are stored in
 * milliseconds ("30s", "7d", "250ms"; a bare integer is seconds), sizes in
 * bytes ("64k", "1m"; ×1024).  Strings are heap copies owned by the config.
 */
#ifndef NS_CONFIG_H
#define NS_CONFIG_H

#include <stdint.h>
#include <stdio.h>

typedef struct ns_config {
  /* public: read-only after start-up */
  char *listen;               /* "0.0.0.0:8080" */
  char *redis_url;            /* "redis://127.0.0.1:6379/0" */
  char *redis_prefix;         /* "" : prepended to every Redis key/channel */
  char *redis_mode;           /* standalone | cluster (SPEC §10) */
  int64_t redis_wait_replicas; /* 0 = off: WAIT for this many before 201 */
  int64_t redis_wait_timeout_ms; /* 1s: how long that WAIT may take */
  char *database_url;         /* "postgres://notisync@127.0.0.1:5432/notisync" */
  char *jwt_secret;           /* HS256 secret */
  char *jwt_public_key_file;  /* PEM; selects RS256 / ES256 from the key type */
  char *jwt_issuer;           /* checked when non-empty */
  char *jwt_audience;         /* checked when non-empty */
  int64_t queue_max_messages; /* 1000 */
  int64_t queue_ttl_ms;       /* 7d */
  int64_t heartbeat_interval_ms; /* 30s */
  int64_t idle_timeout_ms;    /* 90s */
  int64_t max_message_bytes;  /* 64k */
  int64_t max_body_bytes;     /* 64k */
  int64_t max_outbound_bytes; /* 1m */
  int64_t max_devices_per_user; /* 32 */
  int64_t max_data_bytes;     /* 4k: a notification's serialized `data` */
  int64_t notification_retention_ms; /* 90d, 0 = keep forever */
  int64_t presence_grace_ms;  /* 2s */
  int64_t client_msg_rate;    /* 20 per second */
  int64_t client_msg_burst;   /* 50 */
  int64_t handshake_rate_per_ip;  /* 50 per second, 0 = off */
  int64_t handshake_burst_per_ip; /* 100 */
  char *allowed_origins;      /* comma-separated; "" = any */
  char *tls_cert;
  char *tls_key;
  char *log_level;            /* debug | info | warn | error */
  char *log_format;           /* text | json */
  char *log_file;             /* "" = stderr; reopened on SIGHUP */
  char *instance_id;          /* "" = generated at start-up */
  int64_t workers;            /* 1 */
  int64_t dev_console;        /* 0 | 1: /console/dev-token mints tokens */
} ns_config;

/* Fills `c` with the defaults.  Call ns_config_free() when done. */
void ns_config_defaults(ns_config *c);

/* Frees every string in `c` and zeroes it. */
void ns_config_free(ns_config *c);

/* Sets one key from its text form.  Returns 0, or NS_EINVAL with a message
 * naming the key in `err` ("unknown key 'x'", "bad value for key
 * 'queue_ttl': ..."). */
int ns_config_set(ns_config *c, const char *key, const char *value, char *err,
                  size_t errlen);

/* Reads `path`: lines of `key = value` (or `key value`), '#' comments, blank
 * lines; values may be double-quoted.  Returns 0, -errno when unreadable, or
 * NS_EINVAL with "path:line: ..." in `err`. */
int ns_config_load_file(ns_config *c, const char *path, char *err,
                        size_t errlen);

/* The same parser over `n` bytes of text in memory (tests, fuzzing):
 * messages say "name:line: ...".  Returns 0, NS_EINVAL, or -errno when the
 * text cannot be opened as a stream. */
int ns_config_load_text(ns_config *c, const char *text, size_t n,
                        const char *name, char *err, size_t errlen);

/* Applies every NOTISYNC_<KEY>=value in `envp` (NULL-terminated, as environ)
 * with the file's rules: KEY, lower-cased, must be a config key, and its
 * value must be valid for it.  A NOTISYNC_ variable that is no key is an
 * error ("environment NOTISYNC_X: unknown key 'x'"), except the few
 * non-config variables on the allow-list in ns_config.c (test hooks such as
 * NOTISYNC_DEBUG_STALL_MS).  Returns 0 or NS_EINVAL with the variable named
 * in `err`; an unknown name is reported before any value is applied. */
int ns_config_load_env(ns_config *c, char *const *envp, char *err,
                       size_t errlen);

/* Checks cross-key rules (idle_timeout > heartbeat_interval,
 * log_level/log_format valid, tls_cert with tls_key, dev_console only with
 * a loopback `listen`). */
int ns_config_validate(const ns_config *c, char *err, size_t errlen);

/* 0 when a JWT key is configured (jwt_secret or jwt_public_key_file), else
 * NS_EINVAL with a message naming both keys.  `serve` and `token` need
 * one; `migrate` does not.  dev_console also needs the HS256 secret alone
 * (the dev tokens it mints are HS256 without iss/aud): NS_EINVAL naming
 * dev_console otherwise. */
int ns_config_need_jwt_key(const ns_config *c, char *err, size_t errlen);

/* Prints every key, its default and a one-line description. */
void ns_config_print_help(FILE *f);

/* Parsers shared with other modules (e.g. `token --ttl 1h`). */
int ns_parse_duration_ms(const char *s, int64_t *out);
int ns_parse_size(const char *s, int64_t *out);

#endif
