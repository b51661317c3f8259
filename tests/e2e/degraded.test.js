'use strict';
/*
 * degraded.test.js -- SPEC §6 /health and §8 start-up/backends: with its
 * Redis gone the server keeps running and reports 503 {status degraded,
 * redis down}; when Redis returns it recovers (200, WebSockets and
 * cross-instance events work again: the pub/sub subscription was renewed).
 * Uses private redis-servers (the shared one must never be stopped).
 */
const assert = require('node:assert/strict');
const {
  test, setup, newServer, PrivateRedis, uid, until, freePort, sleep,
} = require('./lib/harness');

const redis = new PrivateRedis();
const a = newServer({ env: {} });
const b = newServer({ env: {} });
/* for the start-up case: a Redis port with nothing listening yet */
const lateRedis = new PrivateRedis();
const late = newServer({ env: {} });

setup(async () => {
  await redis.start();
  a.opts.env.NOTISYNC_REDIS_URL = redis.url;
  b.opts.env.NOTISYNC_REDIS_URL = redis.url;
  await a.start();
  await b.start();
});

async function health(srv) {
  const r = await srv.http('GET', '/health', { timeoutMs: 5000 });
  return { status: r.status, body: r.json };
}

async function metric(srv, name) {
  const r = await srv.http('GET', '/metrics');
  const m = r.text.match(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.eE+-]+)$`, 'm'));
  return m ? Number(m[1]) : undefined;
}

const isStatus = (dev, status) => (m) => m.type === 'device_status' && m.data && m.data.device_id === dev
  && m.data.status === status;

/* Device X on instance a sees device Y on instance b come online. */
async function crossInstancePresence() {
  const user = uid();
  const x = await a.device(user, 'X');
  const y = await b.device(user, 'Y');
  const on = await x.waitFor(isStatus('Y', 'online'), 10000, 'device_status Y online from the other instance');
  assert.equal(on.data.device_id, 'Y');
  await y.close();
  await x.waitFor(isStatus('Y', 'offline'), 10000, 'device_status Y offline from the other instance');
  await x.close();
}

test('both instances healthy against the private Redis', async () => {
  for (const s of [a, b]) {
    const h = await health(s);
    assert.equal(h.status, 200, JSON.stringify(h.body));
    assert.equal(h.body.redis, 'up');
  }
});

test('two instances behave as one: device_status crosses instances', async () => {
  await crossInstancePresence();
});

let survivor;

test('Redis stopped → /health 503 {status degraded, redis down, postgres up}, no crash', async () => {
  survivor = await a.device(uid(), 'survivor');
  const stopped = await redis.stop();
  assert.ok(stopped, 'private redis stopped');
  const h = await until(async () => {
    const x = await health(a);
    return x.status === 503 ? x : null;
  }, { timeoutMs: 30000, intervalMs: 500, what: '/health 503 after Redis stopped' });
  assert.equal(h.body.status, 'degraded');
  assert.equal(h.body.redis, 'down');
  assert.equal(h.body.postgres, 'up');
  assert.equal(await metric(a, 'notisync_redis_up'), 0);
  assert.equal(await metric(a, 'notisync_postgres_up'), 1);
  /* keep it down a while: reconnect attempts must not crash or spin */
  await sleep(3000);
  assert.ok(a.alive(), `instance a exited: ${JSON.stringify(a.exit)}`);
  assert.ok(b.alive(), `instance b exited: ${JSON.stringify(b.exit)}`);
  assert.equal((await health(a)).status, 503);
});

test('while Redis is down: a live connection still answers ping; a new device is closed 1011 "backend unavailable"', async () => {
  assert.ok(survivor.isOpen(), `existing connection dropped on Redis outage: ${survivor.describe()}`);
  assert.equal((await survivor.ping()).type, 'pong');
  /* a device cannot be made visible without Redis: the upgrade completes,
   * then 1011 (docs/protocol.md "Backends down at connect"), nothing before */
  const c = a.ws(a.wsUrl({ token: a.token(uid()), device_id: 'during-outage' }));
  await c.open();
  const info = await c.closed(15000);
  assert.deepEqual([info.code, info.reason], [1011, 'backend unavailable'], c.describe());
  assert.deepEqual(c.messages(), [], 'no welcome, nothing at all');
  assert.ok(a.alive(), `instance a exited: ${JSON.stringify(a.exit)}`);
});

test('Redis back on the same port → /health 200 again', async () => {
  await redis.start(redis.port);
  for (const s of [a, b]) {
    const h = await until(async () => {
      const x = await health(s);
      return x.status === 200 ? x : null;
    }, { timeoutMs: 45000, intervalMs: 500, what: `/health 200 on port ${s.port} after Redis returned` });
    assert.equal(h.body.status, 'ok');
    assert.equal(h.body.redis, 'up');
  }
  assert.equal(await metric(a, 'notisync_redis_up'), 1);
});

test('after recovery: WebSockets work and events cross instances again (pub/sub renewed)', async () => {
  const c = await a.device(uid(), 'after');
  assert.equal((await c.ping()).type, 'pong');
  await c.close();
  await crossInstancePresence();
  if (survivor) await survivor.close();
});

test('Redis down at start-up: server starts degraded (503) and recovers when Redis appears', async () => {
  const port = await freePort();
  late.opts.env.NOTISYNC_REDIS_URL = `redis://127.0.0.1:${port}/0`;
  await late.start();
  const h = await until(async () => {
    const x = await health(late);
    return x.status === 503 ? x : null;
  }, { timeoutMs: 15000, what: '/health 503 with no Redis' });
  assert.equal(h.body.redis, 'down');
  assert.equal(h.body.status, 'degraded');
  await sleep(2000);
  assert.ok(late.alive(), `server exited while Redis was absent: ${JSON.stringify(late.exit)}`);
  await lateRedis.start(port);
  await until(async () => (await health(late)).status === 200,
    { timeoutMs: 45000, intervalMs: 500, what: '/health 200 once Redis appeared' });
  const c = await late.device(uid(), 'late');
  assert.equal((await c.ping()).type, 'pong');
  await c.close();
});
