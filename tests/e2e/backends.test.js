'use strict';
/*
 * backends.test.js -- SPEC §5.5 "producers are told the truth": while
 * Redis or PostgreSQL is unavailable a producer gets 503, never 201 (and
 * an action cannot be confirmed either); when the backend returns, posts
 * get 201 again and are delivered, and a retry of a refused post with the
 * same id is stored and delivered exactly once.
 *
 * Redis: a private redis-server (harness useRedis: no persistence, so it
 * comes back empty) with the shared PostgreSQL.  PostgreSQL: a private
 * Redis + PostgreSQL pair run by scripts/services (stop-pg / start-pg keep
 * the port and the data).  The shared services are never stopped.
 */
const assert = require('node:assert/strict');
const {
  test, setup, newServer, PrivateRedis, PrivateServices, uid, until, sleep, newId,
  postNotification, postBatch, notificationBody, notifIds,
} = require('./lib/harness');

const redis = new PrivateRedis();
const rs = newServer({ env: {} });
const pg = new PrivateServices();
const ps = newServer({ env: {} });

setup(async () => {
  await redis.start();
  rs.opts.env.NOTISYNC_REDIS_URL = redis.url;
  await rs.start();
  await pg.start();
  ps.opts.env.NOTISYNC_REDIS_URL = pg.redisUrl;
  ps.opts.env.NOTISYNC_DATABASE_URL = pg.databaseUrl;
  await ps.start();
});

const isNew = (id) => (m) => m.type === 'new_notification' && m.data && m.data.id === id;
const RECOVER_MS = 30000;

async function health(srv) {
  const r = await srv.http('GET', '/health', { timeoutMs: 5000 });
  return { status: r.status, body: r.json };
}

function assertUnavailable(r, what) {
  assert.equal(r.status, 503, `${what}: expected 503, got ${r.status} ${r.text}`);
  assert.ok(r.json && r.json.error, `${what}: error body ${r.text}`);
  assert.equal(r.json.error.code, 'unavailable', `${what}: ${r.text}`);
}

/* Posts (new id each time) until one gets 201; every other answer must be
 * 503.  Returns the 201 response. */
async function postUntilCreated(srv, user, what) {
  const seen = [];
  const r = await until(async () => {
    const x = await postNotification(srv, user, { id: newId() }, { timeoutMs: 10000 }).catch((e) => ({ status: 'net', text: e.message }));
    seen.push(x.status);
    if (x.status === 201) return x;
    assert.ok(x.status === 503 || x.status === 'net', `${what}: while recovering only 503 is acceptable, got ${x.status} ${x.text}`);
    return null;
  }, { timeoutMs: RECOVER_MS, intervalMs: 500, what });
  return { r, seen };
}

/* ---------------------------------------------------------------- Redis */

const R = { user: uid('redis'), refused: [] };

test('Redis up: baseline post is 201 and delivered', async () => {
  R.dev = await rs.device(R.user, 'D');
  R.other = await rs.device(R.user, 'E');
  await R.other.close();
  const r = await postNotification(rs, R.user);
  assert.equal(r.status, 201, r.text);
  R.first = r.json.id;
  await R.dev.waitFor(isNew(r.json.id), 5000, 'baseline delivery');
});

test('Redis stopped → POST, batch and action answer 503, never 201', async () => {
  assert.ok(await redis.stop(), 'private redis stopped');
  for (let i = 0; i < 5; i += 1) {
    const body = notificationBody({ id: newId(), title: `refused ${i}` });
    const r = await postNotification(rs, R.user, {}, { raw: body });
    assertUnavailable(r, `POST ${i} with Redis down`);
    R.refused.push(body);
    await sleep(200);
  }
  assertUnavailable(await postBatch(rs, R.user, [notificationBody(), notificationBody()]), 'batch with Redis down');
  const act = await rs.http('POST', `/api/v1/notifications/${R.first}/actions`, {
    token: rs.token(R.user), body: { action: 'read' },
  });
  assertUnavailable(act, 'REST action with Redis down (the sync cannot be queued)');
  assert.ok(rs.alive(), `server exited: ${JSON.stringify(rs.exit)}`);
  assert.ok(R.dev.isOpen(), `the device connection stays open: ${R.dev.describe()}`);
});

test('Redis back → 201 and delivered again (live and queued); a retried refused id is delivered once', async () => {
  await redis.start(redis.port);
  await until(async () => (await health(rs)).status === 200, { timeoutMs: 45000, intervalMs: 500, what: '/health 200 after Redis returned' });
  const { r } = await postUntilCreated(rs, R.user, 'a 201 after Redis returned');
  assert.ok(R.dev.isOpen(), `the device connection stayed open: ${R.dev.describe()}`);
  await R.dev.waitFor(isNew(r.json.id), 10000, 'live delivery after Redis returned (pub/sub renewed)');
  for (const body of R.refused) {
    const x = await postNotification(rs, R.user, {}, { raw: body });
    assert.ok(x.status === 200 || x.status === 201, `retry of a refused id: ${x.status} ${x.text}`);
    assert.equal(x.json.id, body.id);
  }
  const want = R.refused.map((b) => b.id);
  await R.dev.waitFor(isNew(want[want.length - 1]), 10000, 'retried notifications delivered');
  await sleep(1000);
  for (const id of want) {
    assert.equal(notifIds(R.dev).filter((x) => x === id).length, 1, `retried ${id} delivered exactly once: ${R.dev.describe()}`);
  }
  /* the offline device E (registered in PostgreSQL) gets its queue */
  const e = await rs.device(R.user, 'E');
  await e.waitFor(isNew(want[want.length - 1]), 10000, 'queued retried notifications on E');
  assert.ok(notifIds(e).includes(r.json.id), e.describe());
  for (const c of [R.dev, e]) await c.close();
});

/* ----------------------------------------------------------- PostgreSQL */

const P = { user: uid('pg'), refused: [] };

test('PostgreSQL up: baseline post is 201 and delivered', async () => {
  P.dev = await ps.device(P.user, 'D');
  const r = await postNotification(ps, P.user);
  assert.equal(r.status, 201, r.text);
  P.first = r.json.id;
  await P.dev.waitFor(isNew(r.json.id), 5000, 'baseline delivery');
});

test('PostgreSQL stopped → POST, batch, reads and actions answer 503, never 201; WS stays up', async () => {
  await pg.stopPg();
  for (let i = 0; i < 5; i += 1) {
    const body = notificationBody({ id: newId(), title: `refused ${i}` });
    const r = await postNotification(ps, P.user, {}, { raw: body });
    assertUnavailable(r, `POST ${i} with PostgreSQL down`);
    P.refused.push(body);
    await sleep(200);
  }
  assertUnavailable(await postBatch(ps, P.user, [notificationBody()]), 'batch with PostgreSQL down');
  assertUnavailable(await ps.http('GET', '/api/v1/notifications', { token: ps.token(P.user) }), 'GET list with PostgreSQL down');
  assertUnavailable(await ps.http('POST', `/api/v1/notifications/${P.first}/actions`, {
    token: ps.token(P.user), body: { action: 'read' },
  }), 'REST action with PostgreSQL down');
  P.dev.send({ type: 'notification_action', ref: 'pgdown', data: { notification_id: P.first, action: 'read' } });
  const e = await P.dev.waitFor((m) => m.ref === 'pgdown', 15000, 'reply to an action with PostgreSQL down');
  assert.equal(e.type, 'error', JSON.stringify(e));
  assert.equal(e.data.code, 'unavailable', JSON.stringify(e));
  const h = await until(async () => {
    const x = await health(ps);
    return x.status === 503 ? x : null;
  }, { timeoutMs: 30000, intervalMs: 500, what: '/health 503 with PostgreSQL down' });
  assert.equal(h.body.postgres, 'down');
  assert.ok(P.dev.isOpen(), P.dev.describe());
  assert.equal((await P.dev.ping()).type, 'pong');
  await sleep(300);
  assert.deepEqual(notifIds(P.dev), [P.first], `nothing delivered while refusing: ${P.dev.describe()}`);
});

test('PostgreSQL back → 201 and delivered; refused ids retried are stored and delivered once; actions work', async () => {
  await pg.startPg();
  const { r } = await postUntilCreated(ps, P.user, 'a 201 after PostgreSQL returned');
  await P.dev.waitFor(isNew(r.json.id), 10000, 'delivery after PostgreSQL returned');
  for (const body of P.refused) {
    const x = await postNotification(ps, P.user, {}, { raw: body });
    assert.ok(x.status === 200 || x.status === 201, `retry of a refused id: ${x.status} ${x.text}`);
    assert.equal(x.json.id, body.id);
  }
  const want = P.refused.map((b) => b.id);
  await P.dev.waitFor(isNew(want[want.length - 1]), 10000, 'retried notifications delivered');
  await sleep(1000);
  for (const id of want) {
    assert.equal(notifIds(P.dev).filter((x) => x === id).length, 1, `retried ${id} delivered exactly once: ${P.dev.describe()}`);
  }
  const act = await ps.http('POST', `/api/v1/notifications/${P.first}/actions`, {
    token: ps.token(P.user), body: { action: 'read' },
  });
  assert.equal(act.status, 200, act.text);
  assert.equal(act.json.is_read, true);
  const list = await ps.http('GET', '/api/v1/notifications?limit=50', { token: ps.token(P.user) });
  assert.equal(list.status, 200, list.text);
  const ids = list.json.notifications.map((n) => n.id);
  for (const id of [P.first, r.json.id, ...want]) assert.ok(ids.includes(id), `${id} stored`);
  await until(async () => (await health(ps)).status === 200, { timeoutMs: RECOVER_MS, what: '/health 200 after PostgreSQL returned' });
  await P.dev.close();
});
