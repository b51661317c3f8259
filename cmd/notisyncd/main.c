/*
 * notisyncd -- argv -> serve | migrate | token | version.  Everything else
 * lives in internal/.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ns_auth.h"
#include "ns_common.h"
#include "ns_config.h"
#include "ns_log.h"
#include "ns_migrate.h"
#include "ns_server.h"

extern char **environ;

static void usage(FILE *f) {
  fprintf(f,
          "usage: notisyncd [serve] [--config FILE]   run the server\n"
          "       notisyncd migrate [--config FILE]   apply SQL migrations\n"
          "       notisyncd token --user U [--role R] [--ttl 1h] [--config FILE]\n"
          "       notisyncd version\n"
          "Every config key can be set as NOTISYNC_<KEY>. Keys:\n");
  ns_config_print_help(f);
}

/* Loads defaults < file < environment and validates.  Exits on error. */
static void load_config(ns_config *cfg, const char *path) {
  char err[512];
  int rc;
  ns_config_defaults(cfg);
  if (path && (rc = ns_config_load_file(cfg, path, err, sizeof(err))) != 0) {
    fprintf(stderr, "notisyncd: %s\n",
            rc == NS_EINVAL ? err : ns_strerror(rc));
    exit(2);
  }
  if (ns_config_load_env(cfg, environ, err, sizeof(err)) != 0 ||
      ns_config_validate(cfg, err, sizeof(err)) != 0) {
    fprintf(stderr, "notisyncd: %s\n", err);
    exit(2);
  }
  if (ns_log_setup(cfg->log_level, cfg->log_format) != 0) {
    fprintf(stderr, "notisyncd: bad value for key 'log_level'/'log_format'\n");
    exit(2);
  }
}

static int cmd_token(ns_config *cfg, const char *user, const char *role,
                     const char *ttl) {
  char tok[4096];
  int64_t ttl_ms = 3600 * 1000;
  if (!user) {
    fprintf(stderr, "notisyncd token: --user is required\n");
    return 2;
  }
  if (ttl && ns_parse_duration_ms(ttl, &ttl_ms) != 0) {
    fprintf(stderr, "notisyncd token: bad --ttl '%s' (e.g. 30m, 24h)\n", ttl);
    return 2;
  }
  if (!cfg->jwt_secret || !*cfg->jwt_secret) {
    fprintf(stderr, "notisyncd token: needs jwt_secret (HS256)\n");
    return 2;
  }
  if (ns_auth_mint_hs256(cfg->jwt_secret, user, role, ns_now_ms() / 1000,
                         ttl_ms / 1000, tok, sizeof(tok)) != 0) {
    fprintf(stderr, "notisyncd token: cannot sign a token for that user\n");
    return 2;
  }
  printf("%s\n", tok);
  return 0;
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"config", required_argument, NULL, 'c'}, {"user", required_argument, NULL, 'u'},
      {"role", required_argument, NULL, 'r'},   {"ttl", required_argument, NULL, 't'},
      {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
  const char *cmd = "serve", *config = NULL, *user = NULL, *role = NULL,
             *ttl = NULL;
  ns_config cfg;
  char err[512];
  int c, rc;

  if (argc > 1 && argv[1][0] != '-') {
    cmd = argv[1];
    argv++;
    argc--;
  }
  while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
    switch (c) {
    case 'c': config = optarg; break;
    case 'u': user = optarg; break;
    case 'r': role = optarg; break;
    case 't': ttl = optarg; break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (strcmp(cmd, "version") == 0) {
    printf("notisyncd %s\n", NS_VERSION);
    return 0;
  }
  if (strcmp(cmd, "serve") && strcmp(cmd, "migrate") && strcmp(cmd, "token")) {
    fprintf(stderr, "notisyncd: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
  }
  load_config(&cfg, config);
  if (strcmp(cmd, "token") == 0) {
    rc = cmd_token(&cfg, user, role, ttl);
  } else if (strcmp(cmd, "migrate") == 0) {
    rc = ns_migrate_run_sync(cfg.database_url, err, sizeof(err));
    if (rc != 0)
      fprintf(stderr, "notisyncd migrate: %s\n", err);
    else
      printf("migrations applied\n");
    rc = rc ? 1 : 0;
  } else {
    ns_server *srv;
    rc = ns_server_new(&srv, &cfg, err, sizeof(err));
    if (rc != 0) {
      fprintf(stderr, "notisyncd: %s\n", err);
      ns_config_free(&cfg);
      return 1;
    }
    rc = ns_server_run(srv);
    ns_server_free(&srv);
  }
  ns_config_free(&cfg);
  return rc;
}
