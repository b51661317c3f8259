/*
 * ns_migrate.c -- builds the migration script and runs it synchronously for
 * the `migrate` command.  The server runs the same script through ns_pg on
 * every (re)connect before it reports PostgreSQL as up.
 */
#include "ns_migrate.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ns_common.h"

#define LOCK_KEY "7364019"

char *ns_migrate_script(void) {
  size_t cap = 1024, len = 0, i;
  char *s;
  for (i = 0; ns_migrations[i].sql; i++)
    cap += strlen(ns_migrations[i].sql) + 512;
  s = ns_xmalloc(cap);
  len += (size_t)snprintf(
      s + len, cap - len,
      "SET client_min_messages = warning;\n"
      "BEGIN;\nSELECT pg_advisory_xact_lock(" LOCK_KEY ");\n"
      "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY "
      "KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT "
      "now());\n");
  for (i = 0; ns_migrations[i].sql; i++) {
    len += (size_t)snprintf(
        s + len, cap - len,
        "DO $ns_do$ BEGIN\n"
        "IF NOT EXISTS (SELECT 1 FROM schema_migrations WHERE version = %d) "
        "THEN\n"
        "EXECUTE $ns_mig$%s$ns_mig$;\n"
        "INSERT INTO schema_migrations (version, name) VALUES (%d, '%s');\n"
        "END IF;\nEND $ns_do$;\n",
        ns_migrations[i].version, ns_migrations[i].sql,
        ns_migrations[i].version, ns_migrations[i].name);
  }
  /* This session keeps notification_counts itself (migration 0002): the
   * count triggers skip its statements. */
  snprintf(s + len, cap - len, "COMMIT;\nSET notisync.counts = 'app';\n");
  return s;
}

int ns_migrate_run_sync(const char *conninfo, char *err, size_t errlen) {
  PGconn *c = PQconnectdb(conninfo);
  PGresult *r;
  char *sql;
  int rc = 0;
  if (PQstatus(c) != CONNECTION_OK) {
    snprintf(err, errlen, "connect: %s", PQerrorMessage(c));
    PQfinish(c);
    return NS_EIO;
  }
  sql = ns_migrate_script();
  r = PQexec(c, sql);
  if (PQresultStatus(r) != PGRES_COMMAND_OK &&
      PQresultStatus(r) != PGRES_TUPLES_OK) {
    snprintf(err, errlen, "migrate: %s", PQresultErrorMessage(r));
    rc = NS_EIO;
  }
  PQclear(r);
  free(sql);
  PQfinish(c);
  return rc;
}
