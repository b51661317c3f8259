'use strict';
/*
 * broadcast.test.js -- SPEC §6 POST /api/v1/broadcast (issue 4): service
 * tokens only (role service or admin; a user token → 403, none → 401);
 * body {"type","data"} with type ^[a-z][a-z0-9_.]{0,63}$ and not reserved,
 * data an object (missing = {}) → 202 {"connectionCount"}, else 400; every
 * WebSocket connection (public on all three paths and authenticated
 * devices, on every instance) gets {type, data as posted, timestamp};
 * broadcasts are ephemeral (never queued nor replayed); order is kept.
 *
 * Two instances share a private redis-server (so that connectionCount,
 * which counts every instance, is not moved by other test files) and the
 * common PostgreSQL.
 */
const assert = require('node:assert/strict');
const {
  test, setup, newServer, useRedis, uid, until, sleep, isTimestamp, publicClient, broadcast,
  serviceToken, assertHttpError, PUBLIC_PATHS,
} = require('./lib/harness');

const redis = useRedis();
const a = newServer({ env: {} });
const b = newServer({ env: {}, secret: a.secret });
setup(async () => {
  a.opts.env.NOTISYNC_REDIS_URL = redis.url;
  b.opts.env.NOTISYNC_REDIS_URL = redis.url;
  await a.start();
  await b.start();
});

const RESERVED = [
  'welcome', 'pong', 'ok', 'error', 'new_notification', 'notification_sync', 'device_status',
  'queue_overflow', 'ping', 'ack', 'notification_action', 'subscribe', 'refresh',
];

/* Messages a client got whose data.marker is `marker`. */
function marked(client, marker) {
  return client.messages().filter((m) => m.data && typeof m.data === 'object' && m.data.marker === marker);
}

/* Waits until every client holds `n` messages with `marker`. */
async function allGot(clients, marker, n = 1, timeoutMs = 15000) {
  for (const c of clients) {
    await until(() => marked(c, marker).length >= n, {
      timeoutMs, intervalMs: 50, what: `${n} broadcast(s) ${marker} on ${c.label}`,
    }).catch((e) => {
      throw new Error(`${e.message}: ${c.describe()}`);
    });
  }
}

/* One connection of every kind on both instances: the three public paths
 * and a device on A, "/" and a device on B. */
async function everyKind() {
  const clients = [];
  for (const p of PUBLIC_PATHS) clients.push(await publicClient(a, p));
  clients.push(await a.device(uid(), 'dev-a'));
  clients.push(await publicClient(b, '/'));
  clients.push(await b.device(uid(), 'dev-b'));
  return clients;
}

async function closeAll(clients) {
  for (const c of clients) await c.close();
}

async function totalConnections() {
  const r = await a.http('GET', '/api/v1/websocket/stats', { token: a.token(uid()) });
  assert.equal(r.status, 200, r.text);
  return r.json.total_connections;
}

async function instanceConnections() {
  let sum = 0;
  for (const s of [a, b]) {
    const r = await s.http('GET', '/health');
    sum += r.json.connections;
  }
  return sum;
}

test('auth: no token or a bad one → 401, a user token (or another role) → 403; nothing is sent', async () => {
  const listener = await publicClient(a, '/ws/public');
  const marker = uid('m');
  const now = Math.floor(Date.now() / 1000);
  const cases = [
    [null, 401],
    ['garbage', 401],
    [a.token(uid('svc'), { role: 'service', exp: now - 600 }), 401],
    [newServer().token(uid('svc'), { role: 'service' }), 401],   /* another secret */
    [a.token(uid()), 403],
    [a.token(uid(), { role: 'user' }), 403],
    [a.token(uid(), { role: 'superuser' }), 403],
    [a.token(uid(), { role: '' }), 403],
  ];
  for (const [token, status] of cases) {
    const r = await broadcast(a, 'test', { message: 'refused', marker }, { token });
    assertHttpError(r, status);
  }
  await sleep(700);
  assert.deepEqual(marked(listener, marker), [], listener.describe());
  /* service and admin are accepted */
  for (const role of ['service', 'admin']) {
    const r = await broadcast(a, 'test', { message: role, marker }, { token: serviceToken(a, role) });
    assert.equal(r.status, 202, r.text);
    assert.match(String(r.headers['content-type']), /^application\/json/);
    assert.equal(typeof r.json.connectionCount, 'number', r.text);
  }
  await allGot([listener], marker, 2);
  assert.deepEqual(marked(listener, marker).map((m) => m.data.message), ['service', 'admin']);
  await listener.close();
});

test('every connection of every kind on both instances gets {type, data as posted, timestamp}', async () => {
  const clients = await everyKind();
  const posts = [
    ['test', { message: 'Test message content', marker: uid('m') }, a],
    ['system_notification', { message: 'maintenance at 22:00', level: 'warning', marker: uid('m') }, b],
    ['blog_update', { post_id: 'p-1', action: 'created', marker: uid('m') }, a],
    ['comment_update', {
      post_id: 'p-2', comment_id: 'c-9', action: 'deleted', marker: uid('m'),
      nested: { list: [1, 2.5, -3, { deep: 'ü😀"\\\n' }], t: true, f: false, z: null, empty: {}, arr: [] },
    }, b],
  ];
  for (const [type, data, via] of posts) {
    const r = await broadcast(via, type, data);
    assert.equal(r.status, 202, `${type}: ${r.text}`);
    assert.ok(Number.isInteger(r.json.connectionCount) && r.json.connectionCount >= clients.length,
      `connectionCount ${r.json.connectionCount} counts at least this test's ${clients.length} connections (both instances)`);
  }
  for (const [type, data] of posts) {
    await allGot(clients, data.marker);
    for (const c of clients) {
      const got = marked(c, data.marker);
      assert.equal(got.length, 1, `${c.label}: ${type} once`);
      assert.equal(got[0].type, type);
      assert.deepEqual(got[0].data, data, `${c.label}: data exactly as posted`);
      assert.ok(isTimestamp(got[0].timestamp), `${c.label}: timestamp ${got[0].timestamp}`);
    }
  }
  await closeAll(clients);
});

test('connectionCount = every WebSocket on every instance (public and device) at send time', async () => {
  /* settle: nothing of earlier tests still counted */
  await until(async () => (await totalConnections()) === (await instanceConnections()), {
    timeoutMs: 20000, what: 'stats total = sum of the instances',
  });
  const base = await instanceConnections();
  const clients = await everyKind();
  const want = base + clients.length;
  await until(async () => (await totalConnections()) === want, { timeoutMs: 20000, what: `total_connections ${want}` });
  const r1 = await broadcast(a, 'test', { message: 'count 1' });
  assert.equal(r1.status, 202, r1.text);
  assert.equal(r1.json.connectionCount, want, r1.text);
  const r1b = await broadcast(b, 'test', { message: 'count 1 via b' });
  assert.equal(r1b.json.connectionCount, want, `same count from the other instance: ${r1b.text}`);
  /* two go away (one gracefully, one abruptly) */
  await clients[0].close();
  clients[5].terminate();
  await until(async () => (await totalConnections()) === want - 2, { timeoutMs: 20000, what: `total_connections ${want - 2}` });
  const r2 = await broadcast(b, 'test', { message: 'count 2' });
  assert.equal(r2.status, 202, r2.text);
  assert.equal(r2.json.connectionCount, want - 2, r2.text);
  await closeAll(clients);
});

test('type: allowed names (any ^[a-z][a-z0-9_.]{0,63}$ not reserved) → 202, delivered under that type', async () => {
  const listener = await publicClient(b, '/api/v1/ws');
  const types = ['a', 'z9', 'test', 'system_notification', 'blog_update', 'comment_update', 'a.b_c.9', 'x.', `a${'b'.repeat(63)}`];
  for (const type of types) {
    const marker = uid('m');
    const r = await broadcast(a, type, { marker });
    assert.equal(r.status, 202, `${type}: ${r.text}`);
    await allGot([listener], marker);
    assert.equal(marked(listener, marker)[0].type, type);
  }
  await listener.close();
});

test('type: malformed or reserved → 400 naming "type"; nothing is sent', async () => {
  const listener = await publicClient(a, '/');
  const marker = uid('m');
  const bad = [
    '', 'A', 'Test', 'tEST', '9abc', '_abc', '.abc', 'a-b', 'a b', 'a/b', 'é', 'test\n', ' test',
    `a${'b'.repeat(64)}`, ...RESERVED,
  ];
  for (const type of bad) {
    const r = await broadcast(a, type, { marker, type });
    assertHttpError(r, 400, 'type');
  }
  for (const raw of [{ data: { marker } }, { type: 123, data: { marker } }, { type: null, data: { marker } },
    { type: ['test'], data: { marker } }, { type: { t: 'test' }, data: { marker } }]) {
    assertHttpError(await broadcast(a, undefined, undefined, { raw }), 400, 'type');
  }
  await sleep(1000);
  assert.deepEqual(marked(listener, marker), [], listener.describe());
  await listener.close();
});

test('data: missing → {} is delivered; not an object → 400 naming "data"; a body that is not a JSON object → 400', async () => {
  const listener = await publicClient(a, '/ws/public');
  const type = `nodata.${uid('t').replace(/-/g, '_')}`.toLowerCase();
  const r = await broadcast(a, type, undefined);
  assert.equal(r.status, 202, r.text);
  const got = await listener.waitFor((m) => m.type === type, 15000, 'broadcast without data');
  assert.deepEqual(got.data, {});
  assert.ok(isTimestamp(got.timestamp));
  const badType = `baddata.${uid('t').replace(/-/g, '_')}`.toLowerCase();
  for (const data of ['text', 42, true, [1, 2], ['a']]) {
    assertHttpError(await broadcast(a, badType, data), 400, 'data');
  }
  for (const raw of ['not json', '[]', '"test"', '{"type":"test"', '{}']) {
    assertHttpError(await broadcast(a, undefined, undefined, { raw }), 400);
  }
  await sleep(800);
  assert.ok(!listener.messages().some((m) => m.type === badType), listener.describe());
  await listener.close();
});

test('a body over max_body_bytes → 413; wrong method → 405', async () => {
  const r = await broadcast(a, 'test', { message: 'x'.repeat(70 * 1024) });
  assertHttpError(r, 413);
  for (const m of ['GET', 'PUT', 'DELETE']) {
    assertHttpError(await a.http(m, '/api/v1/broadcast', { token: serviceToken(a) }), 405);
  }
});

test('broadcasts are ephemeral: an offline device and a later connection never get them', async () => {
  const user = uid();
  const dev = await a.device(user, 'phone');
  await dev.close();
  const marker = uid('m');
  const live = await publicClient(b, '/');
  /* a listener on A too: the broadcast reaches each instance through its
   * own subscription, and a connection made on A before A's copy arrived
   * is present for it (ephemeral means "not stored", not "not yet seen") */
  const liveA = await publicClient(a, '/');
  assert.equal((await broadcast(a, 'system_notification', { message: 'now only', level: 'info', marker })).status, 202);
  await allGot([live, liveA], marker);
  const late = await publicClient(a, '/api/v1/ws');
  const back = await a.device(user, 'phone');
  assert.equal(back.welcome.data.queued, 0, JSON.stringify(back.welcome));
  await sleep(1500);
  assert.deepEqual(marked(back, marker), [], back.describe());
  assert.deepEqual(marked(late, marker), [], late.describe());
  for (const c of [live, liveA, late, back]) await c.close();
});

test('broadcasts posted one after another arrive in order on every connection; a client leaving mid-stream disturbs nobody', async () => {
  const clients = await everyKind();
  const leaver = await publicClient(a, '/ws/public', { ping: false });
  const run = uid('run');
  const N = 40;
  for (let i = 0; i < N; i += 1) {
    if (i === N / 2) leaver.terminate();
    const r = await broadcast(a, 'order.check', { marker: run, seq: i });
    assert.equal(r.status, 202, r.text);
  }
  await allGot(clients, run, N, 30000);
  for (const c of clients) {
    assert.deepEqual(marked(c, run).map((m) => m.data.seq), Array.from({ length: N }, (_, i) => i), `${c.label} in order`);
  }
  /* a broadcast posted to B reaches A's clients too */
  const viaB = uid('m');
  assert.equal((await broadcast(b, 'test', { message: 'via b', marker: viaB })).status, 202);
  await allGot(clients, viaB);
  await closeAll(clients);
});

/* Last in this file: when the server mishandles an empty body it may die,
 * and every later test would fail for that reason alone. */
test('an empty body (Content-Length: 0) → 400, with or without a token; the server keeps serving', async () => {
  for (const token of [serviceToken(a), null]) {
    const r = await broadcast(a, undefined, undefined, { raw: '', token });
    assertHttpError(r, token ? 400 : 401);
  }
  const h = await a.http('GET', '/health');
  assert.equal(h.status, 200, h.text);
  const listener = await publicClient(a, '/');
  const marker = uid('m');
  assert.equal((await broadcast(a, 'test', { marker })).status, 202);
  await allGot([listener], marker);
  await listener.close();
});
