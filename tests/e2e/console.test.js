'use strict';
/*
 * console.test.js -- issue 12, the server's side of the web console and the
 * client module (internal/ns_static.c):
 *  - GET /notisync.js is clients/js/notisync.js byte for byte, as
 *    text/javascript with a CSP, nosniff and CORS for cross-origin imports;
 *  - GET /console (and /console/, its assets, an unknown name's 404) carry
 *    the console's Content-Security-Policy and nosniff;
 *  - dev_console = true is refused at start-up unless `listen` is loopback
 *    (and without jwt_secret);
 *  - GET /console/dev-token is 404 while dev_console is off, and with it on
 *    answers a 1-hour token for the user named that the server accepts
 *    (403 for a Host that is not loopback, 400 for a bad user).
 */
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const {
  test, useServer, baseEnv, binPath, services, freePort, httpRequest, nowS,
} = require('./lib/harness');

const SRC = process.env.NS_SRC_DIR || path.resolve(__dirname, '..', '..');
const off = useServer();
const on = useServer({ env: { NOTISYNC_DEV_CONSOLE: 'true' } });

function assertCsp(r, what) {
  const csp = r.headers['content-security-policy'];
  assert.ok(csp && /default-src 'none'/.test(csp), `${what}: CSP header (${csp})`);
  assert.equal(r.headers['x-content-type-options'], 'nosniff', `${what}: nosniff`);
  return csp;
}

/* Runs `notisyncd serve` with `env` over the harness's; resolves {code,
 * stderr} when it exits, or kills it after `ms` and resolves code null. */
function runServe(env, ms = 8000) {
  return new Promise((resolve) => {
    const p = spawn(binPath(), ['serve'], { env: { ...baseEnv(), ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    p.stderr.on('data', (d) => { stderr += d.toString(); });
    const timer = setTimeout(() => p.kill('SIGKILL'), ms);
    p.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr });
    });
  });
}

test('GET /notisync.js serves clients/js/notisync.js with its headers', async () => {
  const r = await off.http('GET', '/notisync.js');
  assert.equal(r.status, 200);
  assert.match(r.headers['content-type'], /^text\/javascript\b/);
  assert.equal(r.text, fs.readFileSync(path.join(SRC, 'clients', 'js', 'notisync.js'), 'utf8'));
  assertCsp(r, '/notisync.js');
  assert.equal(r.headers['access-control-allow-origin'], '*');
  assert.equal((await off.http('POST', '/notisync.js', { body: {} })).status, 405);
});

test('GET /console serves the page and its assets with the console CSP', async () => {
  const page = await off.http('GET', '/console');
  assert.equal(page.status, 200);
  assert.match(page.headers['content-type'], /^text\/html\b/);
  assert.match(page.text, /<script type="module" src="\/console\/app.js">/);
  const csp = assertCsp(page, '/console');
  for (const d of ["script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"]) {
    assert.ok(csp.includes(d), `CSP has ${d}: ${csp}`);
  }
  assert.ok(!/unsafe-inline|unsafe-eval|\*/.test(csp), `no unsafe source: ${csp}`);
  assert.equal((await off.http('GET', '/console/')).text, page.text);
  const app = await off.http('GET', '/console/app.js');
  assert.equal(app.status, 200);
  assert.match(app.headers['content-type'], /^text\/javascript\b/);
  assert.match(app.text, /from '\/notisync\.js'/);
  assertCsp(app, '/console/app.js');
  const css = await off.http('GET', '/console/console.css');
  assert.equal(css.status, 200);
  assert.match(css.headers['content-type'], /^text\/css\b/);
  const missing = await off.http('GET', '/console/nope.js');
  assert.equal(missing.status, 404);
  assertCsp(missing, '404 under /console');
  assert.equal((await off.http('GET', '/consolex')).status, 404);
});

test('dev_console is refused at start-up unless listen is loopback', async () => {
  const svc = services();
  const port = await freePort();
  const common = {
    NOTISYNC_REDIS_URL: svc.NOTISYNC_REDIS_URL, NOTISYNC_DATABASE_URL: svc.NOTISYNC_DATABASE_URL,
    NOTISYNC_JWT_SECRET: 'console-test', NOTISYNC_DEV_CONSOLE: 'true',
  };
  for (const listen of [`0.0.0.0:${port}`, `192.0.2.1:${port}`, `[::]:${port}`, `localhost:${port}`]) {
    const r = await runServe({ ...common, NOTISYNC_LISTEN: listen });
    assert.equal(r.code, 2, `listen ${listen}: exit 2 (${r.stderr})`);
    assert.match(r.stderr, /dev_console/, `listen ${listen}: names the key`);
  }
  const noSecret = await runServe({ ...common, NOTISYNC_LISTEN: `127.0.0.1:${port}`, NOTISYNC_JWT_SECRET: '', NOTISYNC_JWT_PUBLIC_KEY_FILE: '/dev/null' });
  assert.equal(noSecret.code, 2, noSecret.stderr);
  assert.match(noSecret.stderr, /dev_console/);
  const bad = await runServe({ ...common, NOTISYNC_LISTEN: `127.0.0.1:${port}`, NOTISYNC_DEV_CONSOLE: 'maybe' });
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /dev_console.*true or false/);
});

test('another loopback address (127.0.0.2) is accepted with dev_console', async () => {
  /* Started by hand: the harness's Server probes 127.0.0.1. */
  const svc = services();
  const port = await freePort();
  const env = {
    NOTISYNC_REDIS_URL: svc.NOTISYNC_REDIS_URL, NOTISYNC_DATABASE_URL: svc.NOTISYNC_DATABASE_URL,
    NOTISYNC_JWT_SECRET: 'console-test', NOTISYNC_DEV_CONSOLE: 'true', NOTISYNC_LISTEN: `127.0.0.2:${port}`,
  };
  const p = spawn(binPath(), ['serve'], { env: { ...baseEnv(), ...env }, stdio: 'ignore' });
  const exited = new Promise((resolve) => p.on('exit', resolve));
  try {
    let r = null;
    const deadline = Date.now() + 15000;
    while (!r && Date.now() < deadline && p.exitCode === null) {
      r = await httpRequest(`http://127.0.0.2:${port}`, 'GET', '/console/dev-token?user=bob', { timeoutMs: 1000 }).catch(() => null);
      if (!r) await new Promise((res) => setTimeout(res, 150));
    }
    assert.ok(r, `server on 127.0.0.2 answers (exit ${p.exitCode})`);
    assert.equal(r.status, 200, r.text);
  } finally {
    p.kill('SIGTERM');
    const t = setTimeout(() => p.kill('SIGKILL'), 10000);
    await exited;
    clearTimeout(t);
  }
});

test('dev-token is 404 while dev_console is off', async () => {
  const r = await off.http('GET', '/console/dev-token?user=alice');
  assert.equal(r.status, 404);
  assert.equal(r.json.error.code, 'not_found');
  assert.equal(r.json.token, undefined);
});

test('dev-token with dev_console on: a 1-hour token the server accepts', async () => {
  const r = await on.http('GET', '/console/dev-token?user=alice');
  assert.equal(r.status, 200, r.text);
  assertCsp(r, 'dev-token');
  assert.equal(r.headers['cache-control'], 'no-store');
  assert.equal(r.json.user_id, 'alice');
  const claims = JSON.parse(Buffer.from(r.json.token.split('.')[1], 'base64url').toString());
  assert.equal(claims.sub, 'alice');
  assert.ok(Math.abs(claims.exp - nowS() - 3600) <= 5, `exp one hour ahead: ${claims.exp}`);
  assert.equal(Date.parse(r.json.expires_at) / 1000, claims.exp);
  const devices = await on.http('GET', '/api/v1/devices', { token: r.json.token });
  assert.equal(devices.status, 200, devices.text);
  const c = await on.device('alice', 'console-e2e', { token: r.json.token });
  assert.equal(c.welcome.data.user_id, 'alice');
  await c.close();
  // another server's secret does not accept it
  assert.equal((await off.http('GET', '/api/v1/devices', { token: r.json.token })).status, 401);
});

test('dev-token refuses a bad user and a Host that is not loopback', async () => {
  for (const q of ['', '?user=', '?user=a%20b', `?user=${'x'.repeat(90)}%3C`, '?user=%3Cscript%3E']) {
    const r = await on.http('GET', `/console/dev-token${q}`);
    assert.equal(r.status, 400, `${q}: ${r.text}`);
    assert.equal(r.json.error.field, 'user');
  }
  for (const host of ['evil.example', 'evil.example:80', '10.0.0.1', 'localhost.evil.example']) {
    const r = await on.http('GET', '/console/dev-token?user=alice', { headers: { Host: host } });
    assert.equal(r.status, 403, `Host ${host}: ${r.text}`);
  }
  for (const host of ['localhost', `localhost:${on.port}`, `127.0.0.1:${on.port}`, `[::1]:${on.port}`]) {
    const r = await on.http('GET', '/console/dev-token?user=alice', { headers: { Host: host } });
    assert.equal(r.status, 200, `Host ${host}: ${r.text}`);
  }
});
