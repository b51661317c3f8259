'use strict';
/*
 * wscat.test.js -- the smoke test a new user does first (SPEC §8): wscat
 * connects with a token (query or header, including one printed by
 * `notisyncd token`), gets a welcome, sends a ping and gets the pong with its
 * ref.  wscat prints nothing without a TTY, so it runs under script(1).
 */
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const { test, useServer, uid, binPath } = require('./lib/harness');
const { runWscat } = require('./lib/wscat');

const srv = useServer();

test('wscat with the token in the query: welcome, then pong with ref "smoke"', async () => {
  const user = uid();
  const url = srv.wsUrl({ token: srv.token(user), device_id: 'wscat-1' });
  const r = await runWscat(['-c', url, '-x', '{"type":"ping","ref":"smoke"}', '-w', '2']);
  const welcome = r.msgs.find((m) => m.type === 'welcome');
  assert.ok(welcome, `no welcome in wscat output:\n${r.text}`);
  assert.equal(welcome.data.user_id, user);
  assert.equal(welcome.data.device_id, 'wscat-1');
  const pong = r.msgs.find((m) => m.type === 'pong');
  assert.ok(pong, `no pong in wscat output:\n${r.text}`);
  assert.equal(pong.ref, 'smoke');
  assert.ok(r.msgs.indexOf(welcome) < r.msgs.indexOf(pong), 'welcome printed before pong');
});

test('wscat with Authorization: Bearer header: welcome and pong', async () => {
  const user = uid();
  const r = await runWscat([
    '-c', srv.wsUrl({ device_id: 'wscat-2' }),
    '-H', `Authorization: Bearer ${srv.token(user)}`,
    '-x', '{"type":"ping","ref":"hdr"}', '-w', '2',
  ]);
  const welcome = r.msgs.find((m) => m.type === 'welcome');
  assert.ok(welcome, `no welcome in wscat output:\n${r.text}`);
  assert.equal(welcome.data.user_id, user);
  assert.ok(r.msgs.some((m) => m.type === 'pong' && m.ref === 'hdr'), `no pong:\n${r.text}`);
});

test('a token printed by `notisyncd token --user U` works with wscat at once', async () => {
  const user = uid();
  const env = { ...process.env, NOTISYNC_JWT_SECRET: srv.secret };
  const t = spawnSync(binPath(), ['token', '--user', user, '--ttl', '1h'], { env, encoding: 'utf8', timeout: 15000 });
  assert.equal(t.status, 0, `notisyncd token failed: ${t.stderr}`);
  const token = t.stdout.trim();
  assert.match(token, /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/, `token output: ${t.stdout}`);
  const r = await runWscat(['-c', srv.wsUrl({ token, device_id: 'wscat-3' }), '-x', '{"type":"ping","ref":"cli"}', '-w', '2']);
  const welcome = r.msgs.find((m) => m.type === 'welcome');
  assert.ok(welcome, `no welcome in wscat output:\n${r.text}`);
  assert.equal(welcome.data.user_id, user);
  assert.ok(r.msgs.some((m) => m.type === 'pong' && m.ref === 'cli'), `no pong:\n${r.text}`);
});

test('wscat sending garbage gets an error frame back, not a disconnect', async () => {
  const r = await runWscat(['-c', srv.wsUrl({ token: srv.token(uid()), device_id: 'wscat-4' }),
    '-x', 'hello', '-x', '{"type":"ping","ref":"after"}', '-w', '2']);
  const err = r.msgs.find((m) => m.type === 'error');
  assert.ok(err, `no error frame:\n${r.text}`);
  assert.equal(err.data.code, 'bad_json');
  assert.ok(r.msgs.some((m) => m.type === 'pong' && m.ref === 'after'), `no pong after the error:\n${r.text}`);
});
