'use strict';
/*
 * config_env.test.js -- the environment is held to the config file's rules
 * (issue 10, SPEC §8): an unknown NOTISYNC_* variable (a misspelt key) or a
 * bad value of a known one stops start-up with exit 2 and a message naming
 * the variable, as the same mistake in the config file does; the
 * non-config variables on the allow-list (NOTISYNC_DEBUG_STALL_MS, the
 * liveness test hook) are still accepted.  Before the fix a misspelt
 * variable was ignored and the server started as if it were unset.
 *
 * Each child runs under a timeout: one that starts serving instead of
 * exiting is stopped by its PID and fails the test.
 */
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { test, newServer, binPath, freePort, services, SANITIZER_RE } = require('./lib/harness');

const EXIT_WAIT_MS = 20000;

/* The parent's environment without NOTISYNC_*, plus `extra`. */
function childEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('NOTISYNC_')) env[k] = v;
  if (!env.ASAN_OPTIONS) env.ASAN_OPTIONS = 'detect_leaks=1:abort_on_error=0';
  return { ...env, ...extra };
}

/* A complete, valid environment for `serve` on a free port. */
async function serveEnv(extra = {}) {
  const svc = services();
  return {
    NOTISYNC_LISTEN: `127.0.0.1:${await freePort()}`,
    NOTISYNC_REDIS_URL: svc.NOTISYNC_REDIS_URL,
    NOTISYNC_DATABASE_URL: svc.NOTISYNC_DATABASE_URL,
    NOTISYNC_JWT_SECRET: 'x'.repeat(32),
    ...extra,
  };
}

/* Runs `notisyncd args` and resolves {code, signal, stderr} once it exits.
 * A child still running after EXIT_WAIT_MS (it started serving) is killed
 * by its PID and resolved with started: true. */
function runToExit(args, env) {
  return new Promise((resolve, reject) => {
    const child = spawn(binPath(), args, { env: childEnv(env), stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    let started = false;
    child.stderr.on('data', (d) => { stderr += d.toString(); });
    const timer = setTimeout(() => {
      started = true;
      try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ }
    }, EXIT_WAIT_MS);
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      assert.ok(!SANITIZER_RE.test(stderr), `sanitizer report:\n${stderr}`);
      resolve({ code, signal, stderr, started });
    });
  });
}

async function assertRefused(extra, name, what) {
  const r = await runToExit(['serve'], await serveEnv(extra));
  assert.ok(!r.started, `${what}: the server started instead of refusing (stderr: ${r.stderr})`);
  assert.equal(r.code, 2, `${what}: exit ${r.code}: ${r.stderr}`);
  assert.ok(r.stderr.includes(name), `${what}: stderr names ${name}: ${r.stderr}`);
  return r;
}

test('a misspelt NOTISYNC_* variable stops start-up with exit 2 naming it (as the same typo in the config file does)', async () => {
  await assertRefused({ NOTISYNC_QUEUE_MAX_MESAGES: '10' }, 'NOTISYNC_QUEUE_MAX_MESAGES', 'QUEUE_MAX_MESAGES');
  await assertRefused({ NOTISYNC_REDIS_MODE: 'nonsense' }, 'NOTISYNC_REDIS_MODE', 'REDIS_MODE');
  await assertRefused({ NOTISYNC_LISTN: '127.0.0.1:1' }, 'NOTISYNC_LISTN', 'LISTN');
  /* a test hook in the wrong case is not the test hook */
  await assertRefused({ NOTISYNC_debug_stall_ms: '1' }, 'NOTISYNC_debug_stall_ms', 'lower-case hook');

  /* the config file: the same mistake, the same exit code */
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ns-cfgenv-'));
  try {
    const file = path.join(dir, 'bad.conf');
    fs.writeFileSync(file, 'queue_max_mesages = 10\n');
    const r = await runToExit(['serve', '--config', file], await serveEnv());
    assert.ok(!r.started, `config file typo: started (stderr: ${r.stderr})`);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /queue_max_mesages/, r.stderr);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a bad value of a known NOTISYNC_* key stops start-up with exit 2 naming the variable and the key', async () => {
  const cases = [
    [{ NOTISYNC_QUEUE_MAX_MESSAGES: '10x' }, 'queue_max_messages'],
    [{ NOTISYNC_QUEUE_MAX_MESSAGES: '0' }, 'queue_max_messages'],
    [{ NOTISYNC_LOG_FORMAT: 'xml' }, 'log_format'],
    [{ NOTISYNC_WORKERS: '' }, 'workers'],
    [{ NOTISYNC_HEARTBEAT_INTERVAL: '30 s' }, 'heartbeat_interval'],
  ];
  for (const [extra, key] of cases) {
    const name = Object.keys(extra)[0];
    const r = await assertRefused(extra, name, `${name}=${JSON.stringify(extra[name])}`);
    assert.ok(r.stderr.includes(`'${key}'`), `${name}: names key '${key}': ${r.stderr}`);
  }
});

test('allow-listed non-config variables (NOTISYNC_DEBUG_STALL_MS) and every real key in upper case still start the server', async () => {
  const srv = newServer({
    env: {
      NOTISYNC_DEBUG_STALL_MS: '1',
      NOTISYNC_QUEUE_MAX_MESSAGES: '10',
      NOTISYNC_MAX_BODY_BYTES: '32k',
    },
  });
  try {
    await srv.start();
    const h = await srv.http('GET', '/health', { timeoutMs: 5000 });
    assert.equal(h.status, 200, h.text);
  } finally {
    await srv.stop();
  }
});
