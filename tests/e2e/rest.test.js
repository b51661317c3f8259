'use strict';
/*
 * rest.test.js -- SPEC §6 REST API of the device-hub slice: /health, stats,
 * connections, devices (list, delete), error shape, 404 / 405 / 413, and
 * SPEC §8 /metrics.  The server runs against a private redis-server so that
 * total_connections (all instances sharing Redis) is not moved by other test
 * files running in parallel.
 */
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const {
  test, setup, newServer, useRedis, uid, until, isTimestamp, isDateString, binPath, sleep,
} = require('./lib/harness');

const redis = useRedis();
const srv = newServer({ env: { NOTISYNC_MAX_BODY_BYTES: '1k' } });
setup(async () => {
  srv.opts.env.NOTISYNC_REDIS_URL = redis.url;
  await srv.start();
});

function assertErrorShape(r, status) {
  assert.equal(r.status, status, `status: ${r.status} ${r.text}`);
  assert.ok(r.json && typeof r.json === 'object', `JSON error body: ${r.text}`);
  assert.ok(r.json.error && typeof r.json.error === 'object', `error object: ${r.text}`);
  assert.equal(typeof r.json.error.code, 'string', `error.code: ${r.text}`);
  assert.ok(r.json.error.code.length > 0);
  assert.equal(typeof r.json.error.message, 'string', `error.message: ${r.text}`);
}

function assertJsonType(r) {
  assert.match(String(r.headers['content-type']), /^application\/json/, `content-type of ${r.text}`);
}

async function stats(token) {
  const r = await srv.http('GET', '/api/v1/websocket/stats', { token });
  assert.equal(r.status, 200, r.text);
  return r.json;
}

async function devices(user) {
  const r = await srv.http('GET', '/api/v1/devices', { token: srv.token(user) });
  assert.equal(r.status, 200, r.text);
  assertJsonType(r);
  assert.ok(Array.isArray(r.json.devices), r.text);
  return r.json.devices;
}

test('GET /health: 200 {status ok, redis up, postgres up, connections, uptime_s, version}', async () => {
  const r = await srv.http('GET', '/health');
  assert.equal(r.status, 200, r.text);
  assertJsonType(r);
  const h = r.json;
  assert.equal(h.status, 'ok');
  assert.equal(h.redis, 'up');
  assert.equal(h.postgres, 'up');
  assert.equal(typeof h.connections, 'number');
  assert.ok(h.connections >= 0);
  assert.equal(typeof h.uptime_s, 'number');
  assert.ok(h.uptime_s >= 0 && h.uptime_s < 3600, `uptime_s ${h.uptime_s}`);
  assert.equal(typeof h.version, 'string');
  assert.ok(h.version.length > 0);
  const v = spawnSync(binPath(), ['version'], { encoding: 'utf8', timeout: 10000 });
  assert.equal(v.status, 0, `notisyncd version exit: ${v.stderr}`);
  assert.ok(`${v.stdout}${v.stderr}`.includes(h.version), `health version ${h.version} vs \`notisyncd version\`: ${v.stdout}`);
});

test('GET /health: connections counts this instance\'s open WebSockets', async () => {
  const before = (await srv.http('GET', '/health')).json.connections;
  const c = await srv.device(uid(), 'h1');
  const during = (await srv.http('GET', '/health')).json.connections;
  assert.equal(during, before + 1);
  await c.close();
  await until(async () => (await srv.http('GET', '/health')).json.connections === before, { what: 'health.connections back down' });
});

test('GET /api/v1/websocket/stats requires a token (401 with the error shape)', async () => {
  assertErrorShape(await srv.http('GET', '/api/v1/websocket/stats'), 401);
  assertErrorShape(await srv.http('GET', '/api/v1/websocket/stats', { token: 'garbage' }), 401);
  const expired = srv.token(uid(), { exp: Math.floor(Date.now() / 1000) - 600 });
  assertErrorShape(await srv.http('GET', '/api/v1/websocket/stats', { token: expired }), 401);
});

test('GET /api/v1/websocket/stats: counts rise by one per open WebSocket and fall after close', async () => {
  const token = srv.token(uid());
  /* total_connections may lag (it is aggregated through Redis): start from a
   * settled baseline.  One instance on a private Redis: total = instance. */
  const s0 = await until(async () => {
    const s = await stats(token);
    return s.total_connections === s.instance_connections ? s : null;
  }, { what: 'total_connections to settle at instance_connections' });
  assert.equal(typeof s0.total_connections, 'number');
  assert.equal(typeof s0.instance_connections, 'number');
  assert.ok(isTimestamp(s0.timestamp), `timestamp ${s0.timestamp}`);
  assert.ok(s0.total_connections >= s0.instance_connections);

  const user = uid();
  const a = await srv.device(user, 'a');
  const s1 = await until(async () => {
    const s = await stats(token);
    return s.total_connections === s0.total_connections + 1 ? s : null;
  }, { what: 'total_connections +1' });
  assert.equal(s1.instance_connections, s0.instance_connections + 1);

  const b = await srv.device(user, 'b');
  const s2 = await until(async () => {
    const s = await stats(token);
    return s.total_connections === s0.total_connections + 2 ? s : null;
  }, { what: 'total_connections +2' });
  assert.equal(s2.instance_connections, s0.instance_connections + 2);

  await a.close();
  await b.close();
  const s3 = await until(async () => {
    const s = await stats(token);
    return s.total_connections === s0.total_connections && s.instance_connections === s0.instance_connections ? s : null;
  }, { what: 'counts back to the baseline after close' });
  assert.equal(s3.instance_connections, s0.instance_connections);
});

test('GET /api/v1/websocket/stats: public WebSockets count too', async () => {
  const token = srv.token(uid());
  const s0 = await stats(token);
  const p = srv.ws(`ws://127.0.0.1:${srv.port}/ws/public`);
  await p.open();
  await until(async () => (await stats(token)).instance_connections === s0.instance_connections + 1,
    { what: 'instance_connections +1 for a public socket' });
  await p.close();
  await until(async () => (await stats(token)).instance_connections === s0.instance_connections,
    { what: 'instance_connections back after the public socket closed' });
});

test('GET /api/v1/websocket/users/stats lists the caller\'s devices', async () => {
  const user = uid();
  assertErrorShape(await srv.http('GET', '/api/v1/websocket/users/stats'), 401);
  const a = await srv.device(user, 'phone');
  const b = await srv.device(user, 'laptop');
  await b.close();
  const other = await srv.device(uid(), 'phone');
  const r = await until(async () => {
    const x = await srv.http('GET', '/api/v1/websocket/users/stats', { token: srv.token(user) });
    const lap = x.json && x.json.devices && x.json.devices.find((d) => d.device_id === 'laptop');
    return lap && lap.status === 'offline' ? x : null;
  }, { what: 'users/stats shows laptop offline' });
  assert.equal(r.status, 200);
  assertJsonType(r);
  const u = r.json;
  assert.equal(u.user_id, user);
  assert.equal(u.active_connections, 1);
  assert.ok(isTimestamp(u.timestamp));
  const ids = u.devices.map((d) => d.device_id).sort();
  assert.deepEqual(ids, ['laptop', 'phone'], 'only this user\'s devices');
  for (const d of u.devices) {
    assert.ok(['online', 'offline'].includes(d.status));
    assert.ok(isDateString(d.last_seen), JSON.stringify(d));
    assert.equal(typeof d.queued, 'number');
  }
  assert.equal(u.devices.find((d) => d.device_id === 'phone').status, 'online');
  for (const c of [a, other]) await c.close();
});

test('GET /api/v1/websocket/connections (no auth): status healthy + connectionCount = total_connections', async () => {
  const c = await srv.device(uid(), 'conn');
  const r = await srv.http('GET', '/api/v1/websocket/connections');
  assert.equal(r.status, 200, r.text);
  assertJsonType(r);
  assert.equal(r.json.status, 'healthy');
  assert.equal(typeof r.json.connectionCount, 'number');
  assert.ok(r.json.connectionCount >= 1);
  assert.ok(isTimestamp(r.json.timestamp));
  /* both are total_connections; it may move between two requests while the
   * aggregate settles, so compare a pair taken back to back, bounded */
  await until(async () => {
    const s = await stats(srv.token(uid()));
    const r2 = await srv.http('GET', '/api/v1/websocket/connections');
    return r2.json.connectionCount === s.total_connections && s.total_connections >= 1;
  }, { what: 'connectionCount equal to total_connections' });
  await c.close();
});

test('GET /api/v1/devices: device_name, platform, first_seen, last_seen from the connect query', async () => {
  const user = uid();
  assertErrorShape(await srv.http('GET', '/api/v1/devices'), 401);
  const t0 = Date.now();
  const c = await srv.device(user, 'pixel-8', { params: { device_name: 'My Pixel 8', platform: 'android' } });
  const w = await srv.device(user, 'web-1', { params: { platform: 'web' } });
  const list = await until(async () => {
    const l = await devices(user);
    return ['pixel-8', 'web-1'].every((id) => l.some((x) => x.device_id === id && x.status === 'online')) ? l : null;
  }, { what: 'both devices listed online' });
  const d = list.find((x) => x.device_id === 'pixel-8');
  assert.ok(d, JSON.stringify(list));
  assert.equal(d.device_name, 'My Pixel 8');
  assert.equal(d.platform, 'android');
  assert.equal(d.status, 'online');
  assert.ok(isDateString(d.first_seen), JSON.stringify(d));
  assert.ok(isDateString(d.last_seen), JSON.stringify(d));
  assert.ok(Math.abs(Date.parse(d.first_seen) - t0) < 120000, `first_seen near now: ${d.first_seen}`);
  assert.ok(Date.parse(d.last_seen) >= Date.parse(d.first_seen) - 1000);
  assert.equal(typeof d.queued, 'number');
  const wd = list.find((x) => x.device_id === 'web-1');
  assert.ok(wd, JSON.stringify(list));
  assert.equal(wd.platform, 'web');
  assert.equal(list.length, 2, 'only the caller\'s devices');
  await c.close();
  await w.close();
  /* first_seen stays, the device stays registered after disconnect */
  await sleep(1100);
  const again = await srv.device(user, 'pixel-8', { params: { device_name: 'My Pixel 8', platform: 'android' } });
  const d2 = (await devices(user)).find((x) => x.device_id === 'pixel-8');
  assert.equal(d2.first_seen, d.first_seen, 'first_seen does not move on reconnect');
  assert.ok(Date.parse(d2.last_seen) >= Date.parse(d.last_seen), 'last_seen moves forward');
  await again.close();
});

test('DELETE /api/v1/devices/{id} → 204, then no longer listed; unknown → 404', async () => {
  const user = uid();
  const c = await srv.device(user, 'old-phone');
  const keep = await srv.device(user, 'keep');
  await c.close();
  await until(async () => (await devices(user)).some((d) => d.device_id === 'old-phone' && d.status === 'offline'),
    { what: 'old-phone offline' });
  assertErrorShape(await srv.http('DELETE', '/api/v1/devices/old-phone'), 401);
  const r = await srv.http('DELETE', '/api/v1/devices/old-phone', { token: srv.token(user) });
  assert.equal(r.status, 204, r.text);
  assert.equal(r.text, '', '204 has no body');
  const list = await devices(user);
  assert.ok(!list.some((d) => d.device_id === 'old-phone'), `still listed: ${JSON.stringify(list)}`);
  assert.ok(list.some((d) => d.device_id === 'keep'), 'other devices stay');
  assertErrorShape(await srv.http('DELETE', '/api/v1/devices/old-phone', { token: srv.token(user) }), 404);
  assertErrorShape(await srv.http('DELETE', '/api/v1/devices/never-seen', { token: srv.token(user) }), 404);
  await keep.close();
});

test('DELETE of another user\'s device → 404 and the device stays', async () => {
  const owner = uid();
  const c = await srv.device(owner, 'mine');
  await c.close();
  const r = await srv.http('DELETE', '/api/v1/devices/mine', { token: srv.token(uid()) });
  assertErrorShape(r, 404);
  assert.ok((await devices(owner)).some((d) => d.device_id === 'mine'), 'owner\'s device still registered');
});

test('unknown route → 404 with the JSON error shape', async () => {
  for (const p of ['/nope', '/api/v1/nope', '/api/v1/websocket/statz', '/healthz']) {
    const r = await srv.http('GET', p, { token: srv.token(uid()) });
    assertErrorShape(r, 404);
    assertJsonType(r);
  }
});

test('wrong method on a known route → 405 with the JSON error shape', async () => {
  const tok = srv.token(uid());
  assertErrorShape(await srv.http('DELETE', '/health'), 405);
  assertErrorShape(await srv.http('POST', '/health', { body: {} }), 405);
  assertErrorShape(await srv.http('POST', '/api/v1/websocket/stats', { token: tok, body: {} }), 405);
  assertErrorShape(await srv.http('PUT', '/api/v1/devices', { token: tok, body: {} }), 405);
});

test('body over max_body_bytes → 413', async () => {
  const tok = srv.token(uid());
  const big = { app_name: 'e2e', title: 't', body: 'b'.repeat(4096) };
  const r = await srv.http('POST', '/api/v1/notifications', { token: tok, body: big });
  assertErrorShape(r, 413);
  /* the server is still fine afterwards */
  assert.equal((await srv.http('GET', '/health')).status, 200);
});

test('GET /metrics: Prometheus text with the core series', async () => {
  const c = await srv.device(uid(), 'metrics');
  const r = await srv.http('GET', '/metrics');
  assert.equal(r.status, 200);
  assert.match(String(r.headers['content-type']), /^text\/plain/);
  const t = r.text;
  for (const name of ['notisync_connections', 'notisync_handshakes_total', 'notisync_redis_up', 'notisync_postgres_up']) {
    assert.match(t, new RegExp(`^${name}(\\{[^}]*\\})? [0-9.eE+-]+$`, 'm'), `sample line for ${name}`);
    assert.match(t, new RegExp(`^# TYPE ${name} (gauge|counter)$`, 'm'), `TYPE line for ${name}`);
  }
  const value = (name) => Number((t.match(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.eE+-]+)$`, 'm')) || [])[1]);
  assert.equal(value('notisync_redis_up'), 1);
  assert.equal(value('notisync_postgres_up'), 1);
  assert.ok(value('notisync_connections') >= 1, 'one connection open');
  /* every bounded buffer: its fill and, where it is one number, its limit */
  assert.equal(value('notisync_redis_inflight_commands_limit'), 100000);
  assert.equal(value('notisync_postgres_queued_queries_limit'), 4 * 10000);
  assert.equal(value('notisync_handshake_limiter_entries_limit'), 65536);
  assert.ok(value('notisync_handshake_limiter_entries') >= 1, 'our address is tracked');
  assert.ok(value('notisync_redis_inflight_commands') < 100000);
  assert.ok(value('notisync_postgres_queued_queries') < 40000);
  for (const name of ['notisync_outbound_bytes', 'notisync_inbound_bytes', 'notisync_http_body_bytes'])
    assert.ok(Number.isFinite(value(name)), `${name} is exported`);
  assert.match(t, /^notisync_overload_rejections_total\{queue="redis"\} 0$/m);
  assert.match(t, /^notisync_overload_rejections_total\{queue="postgres"\} 0$/m);
  const hs = [...t.matchAll(/^notisync_handshakes_total(?:\{[^}]*\})? ([0-9.eE+-]+)$/gm)].map((m) => Number(m[1]));
  assert.ok(hs.reduce((x, y) => x + y, 0) >= 1, 'at least one handshake counted');
  for (const line of t.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    assert.match(line, /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? ([0-9.eE+-]+|NaN|[+-]Inf)( -?\d+)?$/, `exposition line: ${line}`);
  }
  await c.close();
});
