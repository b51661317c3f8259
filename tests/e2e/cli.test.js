'use strict';
/*
 * cli.test.js -- SPEC §8 command line and start-up: `notisyncd token`
 * (a service token broadcast accepts, a user token it refuses), `notisyncd
 * migrate` against a private PostgreSQL (applied, idempotent, one
 * schema_migrations row per file of migrations/), PostgreSQL down at
 * start-up (degraded, then healthy once it is back), `version`, `--help`,
 * an unknown command and a bad config value.  Every child process runs
 * under a timeout and is killed by it.
 */
const assert = require('node:assert/strict');
const { spawnSync, execFile } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const {
  test, useServer, useServices, newServer, binPath, uid, sleep, until, freePort, services,
  postNotification, SANITIZER_RE,
} = require('./lib/harness');

const srv = useServer();
const svc = useServices();

const CHILD_TIMEOUT_MS = 30000;

/* The parent's environment without NOTISYNC_*, plus `extra`. */
function childEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('NOTISYNC_')) env[k] = v;
  if (!env.ASAN_OPTIONS) env.ASAN_OPTIONS = 'detect_leaks=1:abort_on_error=0';
  if (!env.UBSAN_OPTIONS) env.UBSAN_OPTIONS = 'print_stacktrace=1';
  return { ...env, ...extra };
}

/* Runs notisyncd `args` to completion (killed after CHILD_TIMEOUT_MS);
 * returns {status, signal, stdout, stderr} and fails on a timeout or a
 * sanitizer report. */
function run(args, extraEnv = {}) {
  const r = spawnSync(binPath(), args, {
    env: childEnv(extraEnv), encoding: 'utf8', timeout: CHILD_TIMEOUT_MS, killSignal: 'SIGKILL',
  });
  const what = `notisyncd ${args.join(' ')}`;
  if (r.error) throw new Error(`${what}: ${r.error.message} (stderr: ${r.stderr})`);
  assert.equal(r.signal, null, `${what} was killed by ${r.signal} (timeout?): ${r.stderr}`);
  assert.ok(!SANITIZER_RE.test(r.stderr), `${what}: sanitizer report:\n${r.stderr}`);
  return r;
}

/* One psql command against `url`; resolves its -At output, trimmed. */
function psql(url, sql) {
  return new Promise((resolve, reject) => {
    execFile('psql', [url, '-X', '-At', '-v', 'ON_ERROR_STOP=1', '-c', sql], { timeout: 15000, killSignal: 'SIGKILL' }, (err, out, stderr) => {
      if (err) reject(new Error(`psql ${sql}: ${err.message} ${stderr}`));
      else resolve(out.trim());
    });
  });
}

function decodeJwtPayload(tok) {
  const part = tok.split('.')[1];
  return JSON.parse(Buffer.from(part.replace(/-/g, '+').replace(/_/g, '/'), 'base64').toString('utf8'));
}

async function health(server) {
  const r = await server.http('GET', '/health', { timeoutMs: 5000 });
  return { status: r.status, body: r.json };
}

/* ------------------------------------------------- version, help, errors */

test('`notisyncd version` and `--help` (also on migrate and token) exit 0; an unknown command exits 2 with usage on stderr', async () => {
  const v = run(['version']);
  assert.equal(v.status, 0, v.stderr);
  const h = await health(srv);
  assert.equal(typeof h.body.version, 'string', JSON.stringify(h.body));
  assert.ok(v.stdout.includes(h.body.version), `version output ${JSON.stringify(v.stdout)} names /health.version ${h.body.version}`);

  for (const args of [['--help'], ['serve', '--help'], ['migrate', '--help'], ['token', '--help']]) {
    const r = run(args);
    assert.equal(r.status, 0, `${args.join(' ')}: exit ${r.status}: ${r.stderr}`);
    assert.match(r.stdout, /usage/i, `${args.join(' ')}: usage on stdout: ${r.stdout}`);
    assert.match(r.stdout, /migrate/, r.stdout);
    assert.match(r.stdout, /token/, r.stdout);
  }

  const u = run(['frobnicate']);
  assert.equal(u.status, 2, `unknown command: exit ${u.status}: ${u.stderr}`);
  assert.match(u.stderr, /usage/i, `usage on stderr: ${u.stderr}`);
  assert.match(u.stderr, /frobnicate/, `names the command: ${u.stderr}`);
  assert.equal(u.stdout, '', 'nothing on stdout');
});

test('a bad config value (NOTISYNC_QUEUE_TTL=abc) stops start-up with exit 2, naming queue_ttl', async () => {
  const env = services();
  const port = await freePort();
  const r = run(['serve'], {
    NOTISYNC_QUEUE_TTL: 'abc',
    NOTISYNC_LISTEN: `127.0.0.1:${port}`,
    NOTISYNC_REDIS_URL: env.NOTISYNC_REDIS_URL,
    NOTISYNC_DATABASE_URL: env.NOTISYNC_DATABASE_URL,
    NOTISYNC_JWT_SECRET: 'x'.repeat(32),
  });
  assert.equal(r.status, 2, `exit ${r.status}: ${r.stderr}`);
  assert.match(r.stderr, /queue_ttl/, `stderr names the key: ${r.stderr}`);
  /* the same variable fine → the same command is not refused for it */
  const ok = run(['token', '--user', 'cfg-check'], { NOTISYNC_QUEUE_TTL: '3s', NOTISYNC_JWT_SECRET: 'x'.repeat(32) });
  assert.equal(ok.status, 0, ok.stderr);
  const bad = run(['token', '--user', 'cfg-check'], { NOTISYNC_QUEUE_TTL: 'abc', NOTISYNC_JWT_SECRET: 'x'.repeat(32) });
  assert.equal(bad.status, 2, bad.stderr);
  assert.match(bad.stderr, /queue_ttl/, bad.stderr);
  /* serve without any JWT key: refused at start, naming both keys */
  const nokey = run(['serve'], { NOTISYNC_LISTEN: `127.0.0.1:${port}` });
  assert.equal(nokey.status, 2, nokey.stderr);
  assert.match(nokey.stderr, /no JWT key configured: set 'jwt_secret'.*'jwt_public_key_file'/, nokey.stderr);
});

/* ------------------------------------------------------------------ token */

test('`notisyncd token --role service --ttl 10m` → broadcast 202; without --role → 403', async () => {
  const secret = { NOTISYNC_JWT_SECRET: srv.secret };
  const user = uid('cli');
  const r = run(['token', '--user', user, '--role', 'service', '--ttl', '10m'], secret);
  assert.equal(r.status, 0, r.stderr);
  const tok = r.stdout.trim();
  assert.match(tok, /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/, `a bare JWT on stdout: ${JSON.stringify(r.stdout)}`);
  const claims = decodeJwtPayload(tok);
  assert.equal(claims.sub, user);
  assert.equal(claims.role, 'service');
  assert.equal(claims.exp - claims.iat, 600, `--ttl 10m: ${JSON.stringify(claims)}`);
  const b = await srv.http('POST', '/api/v1/broadcast', { token: tok, body: { type: 'cli_check', data: { n: 1 } } });
  assert.equal(b.status, 202, b.text);
  assert.equal(typeof b.json.connectionCount, 'number', b.text);

  const u = run(['token', '--user', user], secret);
  assert.equal(u.status, 0, u.stderr);
  const utok = u.stdout.trim();
  assert.equal(decodeJwtPayload(utok).role, undefined, 'no role claim without --role');
  const ub = await srv.http('POST', '/api/v1/broadcast', { token: utok, body: { type: 'cli_check', data: {} } });
  assert.equal(ub.status, 403, ub.text);
  /* the user token is a valid token for its own sub */
  const p = await postNotification(srv, user, {}, { token: utok });
  assert.equal(p.status, 201, p.text);
  assert.equal(p.json.user_id, user);
});

/* ---------------------------------------------------------------- migrate */

test('`notisyncd migrate` on a fresh PostgreSQL: "migrations applied", exit 0; again: exit 0, nothing re-applied; one schema_migrations row per migrations/ file', async () => {
  const url = svc.databaseUrl;
  /* migrate needs no JWT key (serve and token do) */
  const env = { NOTISYNC_DATABASE_URL: url };
  assert.equal(await psql(url, "SELECT coalesce(to_regclass('schema_migrations')::text, 'none')"), 'none',
    'the private PostgreSQL starts without a schema');
  const first = run(['migrate'], env);
  assert.equal(first.status, 0, `migrate: exit ${first.status}: ${first.stderr}`);
  assert.match(first.stdout, /migrations applied/, first.stdout);

  const dir = path.join(process.env.NS_SRC_DIR || path.resolve(__dirname, '..', '..'), 'migrations');
  const files = fs.readdirSync(dir).filter((f) => /^\d+_.+\.sql$/.test(f)).sort();
  assert.ok(files.length > 0, `no migration files in ${dir}`);
  const expected = files.map((f) => `${Number(/^\d+/.exec(f)[0])}|${f.replace(/\.sql$/, '')}`);
  const rows = await psql(url, 'SELECT version, name FROM schema_migrations ORDER BY version');
  assert.deepEqual(rows.split('\n'), expected, 'one row per migration file');
  const appliedAt = await psql(url, 'SELECT string_agg(applied_at::text, \',\' ORDER BY version) FROM schema_migrations');
  assert.equal(await psql(url, "SELECT coalesce(to_regclass('notifications')::text, 'none')"), 'notifications',
    'the schema is there');

  const second = run(['migrate'], env);
  assert.equal(second.status, 0, `second migrate: exit ${second.status}: ${second.stderr}`);
  assert.match(second.stdout, /migrations applied/, second.stdout);
  assert.deepEqual((await psql(url, 'SELECT version, name FROM schema_migrations ORDER BY version')).split('\n'), expected);
  assert.equal(await psql(url, 'SELECT string_agg(applied_at::text, \',\' ORDER BY version) FROM schema_migrations'), appliedAt,
    'the second run applied nothing again');

  /* unreachable database: a clear failure, not a hang or a crash */
  const port = await freePort();
  const down = run(['migrate'], { ...env, NOTISYNC_DATABASE_URL: `postgresql://postgres@127.0.0.1:${port}/notisync?connect_timeout=5` });
  assert.notEqual(down.status, 0, `migrate against nothing must fail: ${down.stdout}`);
  assert.match(down.stderr, /migrate/, down.stderr);
});

/* --------------------------------------------------- PostgreSQL down at start */

test('PostgreSQL down at start: the server starts, /health 503 postgres down; PostgreSQL back → /health 200 within 30 s and a POST gets 201', async () => {
  await svc.stopPg();
  const s = newServer({ env: { NOTISYNC_REDIS_URL: svc.redisUrl, NOTISYNC_DATABASE_URL: svc.databaseUrl } });
  await s.start();
  const h = await until(async () => {
    const x = await health(s);
    return x.status === 503 ? x : null;
  }, { timeoutMs: 10000, what: '/health 503 with PostgreSQL down' });
  assert.equal(h.body.postgres, 'down', JSON.stringify(h.body));
  assert.equal(h.body.redis, 'up', JSON.stringify(h.body));
  assert.equal(h.body.status, 'degraded', JSON.stringify(h.body));
  const user = uid();
  const refused = await postNotification(s, user);
  assert.equal(refused.status, 503, `a POST while PostgreSQL is down: ${refused.text}`);
  await sleep(2000);
  assert.ok(s.alive(), `server exited while PostgreSQL was down: ${JSON.stringify(s.exit)}`);
  assert.equal((await health(s)).status, 503);

  await svc.startPg();
  const t0 = Date.now();
  const up = await until(async () => {
    const x = await health(s);
    return x.status === 200 ? x : null;
  }, { timeoutMs: 30000, intervalMs: 250, what: '/health 200 after PostgreSQL started' });
  assert.equal(up.body.postgres, 'up');
  assert.equal(up.body.status, 'ok');
  const p = await postNotification(s, user, { title: 'after recovery' });
  assert.equal(p.status, 201, `POST after recovery (${Date.now() - t0} ms after start-pg): ${p.text}`);
  const got = await s.http('GET', `/api/v1/notifications/${p.json.id}`, { token: s.token(user) });
  assert.equal(got.status, 200, got.text);
  assert.ok(s.alive());
});
