'use strict';
/*
 * pgq.js -- direct PostgreSQL reads and writes for the SPEC §9 tests
 * (notif_*.test.js): the unread count the database holds, row counts, and
 * back-dating rows for the retention tests.  Runs the psql CLI through
 * child_process (bounded), against the shared services of NS_SVC_DIR
 * (services().NOTISYNC_DATABASE_URL) or a PrivateServices' databaseUrl.
 *
 * Values are put into SQL as literals by lit(), which quotes and doubles
 * single quotes; the tests pass only their own random ids.
 */
const { execFile } = require('node:child_process');
const { services } = require('./harness');

/* The shared PostgreSQL of the test run. */
function sharedDbUrl() {
  return services().NOTISYNC_DATABASE_URL;
}

/* A SQL string literal. */
function lit(v) {
  if (v === null || v === undefined) return 'NULL';
  return `'${String(v).replace(/'/g, "''")}'`;
}

/* Runs `sql` (one or more statements) with psql -X -At against `url`;
 * resolves the output, trimmed (rows on lines, columns split by '|'). */
function psql(url, sql, { timeoutMs = 20000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = execFile('psql', [url, '-X', '-At', '-q', '-v', 'ON_ERROR_STOP=1', '-f', '-'],
      { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 64 * 1024 * 1024 }, (err, out, stderr) => {
        if (err) reject(new Error(`psql failed (${err.message}): ${stderr}\nSQL: ${sql.slice(0, 500)}`));
        else resolve(out.trim());
      });
    child.stdin.end(sql);
  });
}

/* One integer from a query that returns one value. */
async function scalarInt(url, sql) {
  const out = await psql(url, sql);
  const n = Number(out);
  if (!Number.isInteger(n)) throw new Error(`expected one integer from ${sql}, got ${JSON.stringify(out)}`);
  return n;
}

/* SPEC §9.4's unread as the database holds it: the user's notifications
 * that are neither read nor dismissed, not scheduled or canceled (column
 * status of migration 0002). */
function dbUnread(url, user) {
  return scalarInt(url, `SELECT count(*) FROM notifications WHERE user_id = ${lit(user)}
    AND NOT is_read AND NOT is_dismissed AND status NOT IN ('scheduled', 'canceled')`);
}

/* How many notification rows the user has. */
function dbCount(url, user) {
  return scalarInt(url, `SELECT count(*) FROM notifications WHERE user_id = ${lit(user)}`);
}

/* How many of the given notification ids still exist. */
function dbExisting(url, ids) {
  if (!ids.length) return Promise.resolve(0);
  return scalarInt(url, `SELECT count(*) FROM notifications WHERE id IN (${ids.map(lit).join(',')})`);
}

/* Moves created_at of the given notifications `age` back (an SQL interval
 * text such as '2 hours'); resolves the number of rows changed. */
async function backdateNotifications(url, ids, age) {
  if (!ids.length) return 0;
  const out = await psql(url, `WITH u AS (UPDATE notifications SET created_at = now() - ${lit(age)}::interval
    WHERE id IN (${ids.map(lit).join(',')}) RETURNING 1) SELECT count(*) FROM u`);
  return Number(out);
}

/* Same for every notification of `user`. */
async function backdateUser(url, user, age) {
  const out = await psql(url, `WITH u AS (UPDATE notifications SET created_at = now() - ${lit(age)}::interval
    WHERE user_id = ${lit(user)} RETURNING 1) SELECT count(*) FROM u`);
  return Number(out);
}

/* Moves created_at of comments of note `postId` back by `age`. */
async function backdateComments(url, postId, age) {
  const out = await psql(url, `WITH u AS (UPDATE comments SET created_at = now() - ${lit(age)}::interval,
    updated_at = now() - ${lit(age)}::interval WHERE post_id = ${lit(postId)} RETURNING 1) SELECT count(*) FROM u`);
  return Number(out);
}

/* How many comments note `postId` has in the database. */
function dbComments(url, postId) {
  return scalarInt(url, `SELECT count(*) FROM comments WHERE post_id = ${lit(postId)}`);
}

module.exports = {
  sharedDbUrl,
  lit,
  psql,
  scalarInt,
  dbUnread,
  dbCount,
  dbExisting,
  backdateNotifications,
  backdateUser,
  backdateComments,
  dbComments,
};
