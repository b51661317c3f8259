/*
 * ns_migrate.h -- schema migrations compiled into the binary (generated from
 * the migrations/ SQL files by scripts/embed_migrations.cmake) and the SQL that
 * applies them.
 *
 * Applying is one simple-protocol script run in a single transaction under
 * an advisory lock, so several instances starting together apply each
 * version once:
 *   BEGIN; lock; CREATE TABLE IF NOT EXISTS schema_migrations;
 *   for each version: DO-block "if not recorded: run it, record it"; COMMIT;
 * The migration text is embedded with dollar quoting, so migrations must not
 * contain the tag $ns_mig$.
 */
#ifndef NS_MIGRATE_H
#define NS_MIGRATE_H

#include <stddef.h>

typedef struct ns_migration {
  int version;
  const char *name;
  const char *sql;
} ns_migration;

/* Terminated by an entry with sql == NULL. */
extern const ns_migration ns_migrations[];

/* Returns the malloc'd script that applies every pending migration. */
char *ns_migrate_script(void);

/* Applies migrations synchronously (for `notisyncd migrate`).  Returns 0 or
 * NS_EIO with libpq's message in `err`. */
int ns_migrate_run_sync(const char *conninfo, char *err, size_t errlen);

#endif
