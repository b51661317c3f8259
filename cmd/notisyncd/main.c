/*
 * notisyncd -- argv -> serve | migrate | token | version.  Everything else
 * lives in internal/.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ns_auth.h"
#include "ns_common.h"
#include "ns_config.h"
#include "ns_log.h"
#include "ns_migrate.h"
#include "ns_server.h"
#include "ns_supervisor.h"
#include "ns_notif.h"

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

/* Loads defaults < file < environment and validates (a JWT key too when
 * `need_jwt`).  Exits on error. */
static void load_config(ns_config *cfg, const char *path, int need_jwt) {
  char err[512];
  int rc;
  ns_config_defaults(cfg);
  if (path && (rc = ns_config_load_file(cfg, path, err, sizeof(err))) != 0) {
    fprintf(stderr, "notisyncd: %s\n",
            rc == NS_EINVAL ? err : ns_strerror(rc));
    exit(2);
  }
  if (ns_config_load_env(cfg, environ, err, sizeof(err)) != 0 ||
      ns_config_validate(cfg, err, sizeof(err)) != 0 ||
      (need_jwt && ns_config_need_jwt_key(cfg, err, sizeof(err)) != 0)) {
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

/* Runs one instance until it is told to stop. */
static int serve(ns_config *cfg, int listen_fd) {
  ns_server *srv;
  char err[512];
  int rc = ns_server_new(&srv, cfg, listen_fd, err, sizeof(err));
  if (rc != 0) {
    fprintf(stderr, "notisyncd: %s\n", err);
    return 1;
  }
  rc = ns_server_run(srv);
  ns_server_free(&srv);
  return rc;
}

typedef struct workers {
  ns_config *cfg;
  int listen_fd;
} workers;

/* Worker k of `workers = N`: instance id "<base>-w<k>", connections from
 * the supervisor's listening socket. */
static int run_worker(int k, void *arg) {
  workers *w = arg;
  ns_config *cfg = w->cfg;
  char id[96], err[256];
  int rc;
  snprintf(id, sizeof(id), "%s-w%d", cfg->instance_id, k);
  if (ns_config_set(cfg, "instance_id", id, err, sizeof(err)) != 0) {
    fprintf(stderr, "notisyncd: worker %d: %s\n", k, err);
    return 1;
  }
  rc = serve(cfg, w->listen_fd);
  ns_config_free(cfg);
  return rc;
}

/* `workers = N`: the supervisor binds the port (a bind error stops it at
 * once), the workers inherit the socket and share one base instance id
 * (configured, or a random one for this supervisor). */
static int supervise(ns_config *cfg) {
  char err[256];
  workers w;
  int rc;
  if (!cfg->instance_id || !*cfg->instance_id) {
    char uuid[37];
    ns_notif_uuid(uuid);
    uuid[12] = '\0';
    memmove(uuid + 8, uuid + 9, 4); /* 12 hex digits, no dash */
    if (ns_config_set(cfg, "instance_id", uuid, err, sizeof(err)) != 0) {
      fprintf(stderr, "notisyncd: %s\n", err);
      return 1;
    }
  }
  w.cfg = cfg;
  w.listen_fd = ns_server_listen_socket(cfg->listen, err, sizeof(err));
  if (w.listen_fd < 0) {
    fprintf(stderr, "notisyncd: %s\n", err);
    return 1;
  }
  rc = ns_supervise((int)cfg->workers, run_worker, &w);
  close(w.listen_fd);
  return rc;
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
  load_config(&cfg, config, strcmp(cmd, "migrate") != 0);
  if (strcmp(cmd, "token") == 0) {
    rc = cmd_token(&cfg, user, role, ttl);
  } else if (strcmp(cmd, "migrate") == 0) {
    rc = ns_migrate_run_sync(cfg.database_url, err, sizeof(err));
    if (rc != 0)
      fprintf(stderr, "notisyncd migrate: %s\n", err);
    else
      printf("migrations applied\n");
    rc = rc ? 1 : 0;
  } else if (cfg.log_file[0] && (rc = ns_log_open(cfg.log_file)) != 0) {
    fprintf(stderr, "notisyncd: bad value for key 'log_file': cannot open '%s': %s\n",
            cfg.log_file, strerror(rc));
    rc = 2;
  } else if (cfg.workers > 1) {
    rc = supervise(&cfg);
  } else {
    rc = serve(&cfg, -1);
  }
  ns_config_free(&cfg);
  return rc;
}
