/*
 * fuzz_config.c -- the configuration parser of ns_config.h: file text,
 * NOTISYNC_* environment entries, single keys and the duration and size
 * parsers.  The first byte picks the mode (its value modulo 3, so the seed
 * files start with a readable '0'..'2'); the rest is that mode's input:
 *
 *   0  a config file's text (ns_config_load_text, the file parser's path)
 *   1  environment entries, one per line ("NOTISYNC_WORKERS=4")
 *   2  "key\nvalue": ns_config_set, and the value through the duration and
 *      size parsers
 *
 * Every mode ends with ns_config_validate and ns_config_free on the result.
 * Checked: every error message is non-empty and names what it must (the
 * line for file text, the variable for the environment, the key for a
 * bad value); an unknown NOTISYNC_ name leaves the config as it was; the
 * environment and a file line give the same verdict for a value without
 * blanks, quotes or '#'; a parsed duration or size is non-negative.  Any
 * broken invariant abort()s.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ns_common.h"
#include "ns_config.h"

#define CHECK(cond)                                                        \
  do {                                                                     \
    if (!(cond))                                                           \
      abort();                                                             \
  } while (0)

#define MAX_ENTRIES 64

/* A message was written: non-empty and NUL-terminated inside the buffer. */
static void check_msg(const char *err, size_t cap) {
  CHECK(memchr(err, '\0', cap) != NULL);
  CHECK(err[0] != '\0');
}

static void finish(ns_config *c) {
  char err[256] = "";
  if (ns_config_validate(c, err, sizeof err) != 0)
    check_msg(err, sizeof err);
  ns_config_need_jwt_key(c, err, sizeof err);
  ns_config_free(c);
}

static void mode_file(const char *p, size_t n) {
  ns_config c;
  char err[512] = "";
  int rc;
  ns_config_defaults(&c);
  rc = ns_config_load_text(&c, p, n, "fuzz.conf", err, sizeof err);
  if (rc != 0) {
    check_msg(err, sizeof err);
    CHECK(strncmp(err, "fuzz.conf:", 10) == 0);
    CHECK(rc == NS_EINVAL || rc < 0);
  }
  finish(&c);
}

/* 1 when `v` is a value the file and the environment must read the same
 * way: no blanks, quotes, '#' or control bytes (the file trims, unquotes
 * and cuts comments; the environment takes the value as it is). */
static int plain_value(const char *v) {
  for (; *v; v++)
    if ((unsigned char)*v <= ' ' || *v == '"' || *v == '#' || *v == 0x7f)
      return 0;
  return 1;
}

/* The environment entry `e` ("NOTISYNC_KEY=value") against the file line
 * "key = value": same verdict. */
static void differential(const char *e) {
  const char *name = e + 9, *eq;
  char line[512], key[64], err[256] = "", ferr[256] = "";
  char *envp[2] = {(char *)(uintptr_t)e, NULL};
  size_t kn, i;
  ns_config ec, fc;
  int erc, frc;
  if (strncmp(e, "NOTISYNC_", 9) != 0 || !(eq = strchr(name, '=')))
    return;
  kn = (size_t)(eq - name);
  if (kn == 0 || kn >= sizeof key || !plain_value(eq + 1) ||
      strlen(eq + 1) > 200)
    return;
  for (i = 0; i < kn; i++) {
    char ch = name[i];
    if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
          (ch >= '0' && ch <= '9') || ch == '_'))
      return;
    key[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch);
  }
  key[kn] = '\0';
  if (strcmp(key, "debug_stall_ms") == 0)
    return; /* allow-listed in the environment only */
  snprintf(line, sizeof line, "%s = %s\n", key, eq + 1);
  ns_config_defaults(&ec);
  ns_config_defaults(&fc);
  erc = ns_config_load_env(&ec, envp, err, sizeof err);
  frc = ns_config_load_text(&fc, line, strlen(line), "f", ferr, sizeof ferr);
  CHECK((erc == 0) == (frc == 0));
  ns_config_free(&ec);
  ns_config_free(&fc);
}

/* 1 when `key` names a configuration key (asked through ns_config_set
 * with no value: "missing value" for a key, "unknown key" otherwise). */
static int known_key(const char *key) {
  ns_config d;
  char err[256] = "";
  memset(&d, 0, sizeof d);
  ns_config_set(&d, key, NULL, err, sizeof err);
  /* the prefix only: an unknown key's message quotes the key, which may
   * itself read "missing value" */
  return strncmp(err, "missing value for key '", 23) == 0;
}

/* 1 when some entry under the NOTISYNC_ prefix has no '=' or names neither
 * a key (any case) nor the allow-listed DEBUG_STALL_MS (exact). */
static int bad_name_in(char *const *envp) {
  for (size_t i = 0; envp[i]; i++) {
    const char *name = envp[i] + 9, *eq;
    char key[64];
    size_t kn, j;
    if (strncmp(envp[i], "NOTISYNC_", 9) != 0)
      continue;
    if (!(eq = strchr(name, '=')))
      return 1;
    kn = (size_t)(eq - name);
    if (kn == 14 && memcmp(name, "DEBUG_STALL_MS", 14) == 0)
      continue;
    if (kn >= sizeof key)
      return 1;
    for (j = 0; j < kn; j++)
      key[j] = (char)(name[j] >= 'A' && name[j] <= 'Z' ? name[j] - 'A' + 'a'
                                                         : name[j]);
    key[kn] = '\0';
    if (!known_key(key))
      return 1;
  }
  return 0;
}

static void mode_env(const char *p, size_t n) {
  char *copy = malloc(n + 1), *envp[MAX_ENTRIES + 1], *s;
  size_t k = 0, i;
  ns_config c;
  char err[512] = "";
  int rc;
  CHECK(copy);
  memcpy(copy, p, n);
  copy[n] = '\0';
  /* entries end at '\n' (and at a NUL: no environment string holds one) */
  for (s = copy; k < MAX_ENTRIES && s < copy + n;) {
    char *nl = strchr(s, '\n');
    if (nl)
      *nl = '\0';
    envp[k++] = s;
    s += strlen(s) + 1;
  }
  envp[k] = NULL;
  ns_config_defaults(&c);
  rc = ns_config_load_env(&c, envp, err, sizeof err);
  if (rc != 0) {
    check_msg(err, sizeof err);
    CHECK(rc == NS_EINVAL);
    CHECK(strncmp(err, "environment NOTISYNC_", 21) == 0);
  }
  if (bad_name_in(envp)) {
    /* refused before any value was applied */
    ns_config d;
    CHECK(rc == NS_EINVAL);
    ns_config_defaults(&d);
    CHECK(c.workers == d.workers && c.queue_ttl_ms == d.queue_ttl_ms &&
          c.max_body_bytes == d.max_body_bytes &&
          strcmp(c.listen, d.listen) == 0 &&
          strcmp(c.log_format, d.log_format) == 0);
    ns_config_free(&d);
  } else if (rc != 0) {
    CHECK(strstr(err, "value for key '") != NULL);
  }
  finish(&c);
  for (i = 0; i < k; i++)
    differential(envp[i]);
  free(copy);
}

static void mode_key(const char *p, size_t n) {
  char *copy = malloc(n + 1), *value;
  ns_config c;
  char err[256] = "";
  int64_t v = -1;
  CHECK(copy);
  memcpy(copy, p, n);
  copy[n] = '\0';
  value = strchr(copy, '\n');
  if (value)
    *value++ = '\0';
  ns_config_defaults(&c);
  if (ns_config_set(&c, copy, value, err, sizeof err) != 0) {
    check_msg(err, sizeof err);
    CHECK(strstr(err, "key") != NULL);
  }
  finish(&c);
  if (value) {
    if (ns_parse_duration_ms(value, &v) == 0)
      CHECK(v >= 0);
    v = -1;
    if (ns_parse_size(value, &v) == 0)
      CHECK(v >= 0);
  }
  free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *p = (const char *)data + 1;
  if (size == 0)
    return 0;
  switch (data[0] % 3) {
  case 0:
    mode_file(p, size - 1);
    break;
  case 1:
    mode_env(p, size - 1);
    break;
  default:
    mode_key(p, size - 1);
    break;
  }
  return 0;
}
