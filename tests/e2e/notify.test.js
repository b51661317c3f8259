'use strict';
/*
 * notify.test.js -- SPEC §4-§6 producers and reads: POST
 * /api/v1/notifications (user and service tokens, idempotent on a client
 * id, every field validation with a 400 naming the field, 409 for an id of
 * another user, 413), POST /api/v1/notifications/batch (order,
 * all-or-nothing, 1..500), live fanout to every registered device of the
 * user except source_device and never to another user, GET
 * /api/v1/notifications (limit, before cursor, unread) and
 * /api/v1/notifications/{id}, and the pipeline metrics.
 */
const assert = require('node:assert/strict');
const {
  test, useServer, uid, sleep, isTimestamp, isDateString, newId, notificationBody,
  postNotification, postBatch, durables, notifIds, cmpStreamId, metricSum,
} = require('./lib/harness');

const srv = useServer();

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const NOTIF_KEYS = ['id', 'user_id', 'app_name', 'title', 'body', 'category', 'priority',
  'source_device', 'created_at', 'is_read', 'is_dismissed'];
/* How long "never arrives" is watched. */
const QUIET_MS = 1500;

const isNew = (id) => (m) => m.type === 'new_notification' && m.data && m.data.id === id;

function assertStored(n, want) {
  assert.ok(n && typeof n === 'object' && !Array.isArray(n), `bare notification object: ${JSON.stringify(n)}`);
  for (const k of NOTIF_KEYS) assert.ok(k in n, `field ${k} in ${JSON.stringify(n)}`);
  assert.match(n.id, UUID_RE);
  assert.ok(isDateString(n.created_at), `created_at ${n.created_at}`);
  for (const [k, v] of Object.entries(want)) assert.deepEqual(n[k], v, `${k} of ${JSON.stringify(n)}`);
}

/* A new_notification frame as SPEC §3/§4 shape it. */
function assertFrame(m, stored) {
  assert.equal(m.type, 'new_notification');
  assert.equal(typeof m.id, 'string', `top-level delivery id: ${JSON.stringify(m)}`);
  assert.ok(m.id.length > 0);
  assert.ok(isTimestamp(m.timestamp), `timestamp ${m.timestamp}`);
  for (const k of ['id', 'app_name', 'title', 'body', 'category', 'priority', 'source_device',
    'created_at', 'is_read', 'is_dismissed']) {
    assert.ok(k in m.data, `data.${k} in ${JSON.stringify(m)}`);
    assert.deepEqual(m.data[k], stored[k], `data.${k}: frame ${JSON.stringify(m.data)} vs stored ${JSON.stringify(stored)}`);
  }
}

function assertBadRequest(r, field) {
  assert.equal(r.status, 400, `status for a bad ${field}: ${r.status} ${r.text}`);
  assert.ok(r.json && r.json.error, `error body: ${r.text}`);
  assert.equal(r.json.error.code, 'bad_request', r.text);
  assert.equal(r.json.error.field, field, `error.field: ${r.text}`);
  assert.equal(typeof r.json.error.message, 'string');
  assert.ok(r.json.error.message.startsWith(`${field}:`), `message names the field: ${r.text}`);
}

async function list(user, query = '') {
  const r = await srv.http('GET', `/api/v1/notifications${query}`, { token: srv.token(user) });
  assert.equal(r.status, 200, `GET /api/v1/notifications${query}: ${r.text}`);
  assert.ok(Array.isArray(r.json.notifications), r.text);
  assert.ok('next_before' in r.json, `next_before present: ${r.text}`);
  return r.json;
}

/* ------------------------------------------------------------- producing */

test('POST with a user token → 201 with the stored notification as a bare object', async () => {
  const user = uid();
  const body = notificationBody({ category: 'chat', priority: 2, source_device: 'phone' });
  const r = await postNotification(srv, user, {}, { raw: body });
  assert.equal(r.status, 201, r.text);
  assert.match(String(r.headers['content-type']), /^application\/json/);
  assertStored(r.json, {
    user_id: user, app_name: body.app_name, title: body.title, body: body.body, category: 'chat',
    priority: 2, source_device: 'phone', is_read: false, is_dismissed: false,
  });
  /* defaults: priority 0, no source device */
  const d = await postNotification(srv, user);
  assert.equal(d.status, 201, d.text);
  assertStored(d.json, { priority: 0, is_read: false, is_dismissed: false });
  assert.ok(d.json.source_device === null || d.json.source_device === undefined || d.json.source_device === '',
    `no source_device: ${d.text}`);
  assert.notEqual(d.json.id, r.json.id);
  /* a client-supplied id is kept */
  const id = newId();
  const c = await postNotification(srv, user, { id });
  assert.equal(c.status, 201, c.text);
  assert.equal(c.json.id, id);
});

test('fanout: every other device of the user gets new_notification; the source device and other users never', async () => {
  const user = uid();
  const a = await srv.device(user, 'A');
  const b = await srv.device(user, 'B');
  const c = await srv.device(user, 'C');
  const stranger = await srv.device(uid(), 'B');
  const r = await postNotification(srv, user, { source_device: 'A', category: 'mail', priority: -1 });
  assert.equal(r.status, 201, r.text);
  const mb = await b.waitFor(isNew(r.json.id), 5000, 'new_notification on B');
  const mc = await c.waitFor(isNew(r.json.id), 5000, 'new_notification on C');
  assertFrame(mb, r.json);
  assertFrame(mc, r.json);
  await sleep(QUIET_MS);
  assert.deepEqual(durables(a), [], `the source device A got: ${a.describe()}`);
  assert.deepEqual(durables(stranger), [], `another user got: ${stranger.describe()}`);
  assert.equal(notifIds(b).length, 1, `B exactly once: ${b.describe()}`);
  assert.equal(notifIds(c).length, 1, `C exactly once: ${c.describe()}`);
  /* without source_device every device, A included, gets the next one */
  const r2 = await postNotification(srv, user);
  assert.equal(r2.status, 201, r2.text);
  for (const cl of [a, b, c]) await cl.waitFor(isNew(r2.json.id), 5000, `second notification on ${cl.label}`);
  await sleep(500);
  assert.deepEqual(durables(stranger), [], `another user got: ${stranger.describe()}`);
  for (const cl of [a, b, c, stranger]) await cl.close();
});

test('fanout latency: an online device gets the notification within a second of the 201', async () => {
  const user = uid();
  const b = await srv.device(user, 'B');
  for (let i = 0; i < 5; i += 1) {
    const r = await postNotification(srv, user, { source_device: 'A' });
    assert.equal(r.status, 201, r.text);
    const t0 = Date.now();
    await b.waitFor(isNew(r.json.id), 5000, 'new_notification');
    assert.ok(Date.now() - t0 < 1000, `delivered ${Date.now() - t0} ms after the 201`);
  }
  await b.close();
});

test('service token: posts for any user_id; without user_id → 400; a user token naming another user → 403', async () => {
  const user = uid();
  const d = await srv.device(user, 'D');
  for (const role of ['service', 'admin']) {
    const tok = srv.token(uid('svc'), { role });
    const r = await postNotification(srv, null, { user_id: user }, { token: tok });
    assert.equal(r.status, 201, `${role}: ${r.text}`);
    assert.equal(r.json.user_id, user);
    await d.waitFor(isNew(r.json.id), 5000, `notification posted by a ${role} token`);
    const none = await postNotification(srv, null, {}, { token: tok });
    assert.equal(none.status, 400, `${role} token without user_id: ${none.text}`);
  }
  const other = await postNotification(srv, uid(), { user_id: user });
  assert.equal(other.status, 403, `user token naming another user_id: ${other.text}`);
  assert.equal(other.json.error.code, 'forbidden', other.text);
  await sleep(QUIET_MS);
  assert.equal(notifIds(d).length, 2, `only the two service posts arrived: ${d.describe()}`);
  await d.close();
});

test('no or bad token → 401', async () => {
  const r = await srv.http('POST', '/api/v1/notifications', { body: notificationBody() });
  assert.equal(r.status, 401, r.text);
  const g = await srv.http('POST', '/api/v1/notifications', { body: notificationBody(), token: 'nope' });
  assert.equal(g.status, 401, g.text);
  const l = await srv.http('GET', '/api/v1/notifications');
  assert.equal(l.status, 401, l.text);
});

test('idempotent: the same id again → 200 with the stored notification, delivered once', async () => {
  const user = uid();
  const d = await srv.device(user, 'D');
  const id = newId();
  const first = await postNotification(srv, user, { id, title: 'original' });
  assert.equal(first.status, 201, first.text);
  await d.waitFor(isNew(id), 5000, 'first delivery');
  for (let i = 0; i < 3; i += 1) {
    const again = await postNotification(srv, user, { id, title: `retry ${i}` });
    assert.equal(again.status, 200, `retry ${i}: ${again.text}`);
    assert.equal(again.json.id, id);
    assert.equal(again.json.title, 'original', 'the stored notification, not the retry body');
    assert.equal(again.json.created_at, first.json.created_at);
  }
  await sleep(QUIET_MS);
  assert.deepEqual(notifIds(d), [id], `delivered exactly once: ${d.describe()}`);
  const g = await list(user);
  assert.equal(g.notifications.filter((n) => n.id === id).length, 1);
  await d.close();
});

test('an id already used by another user → 409 conflict; nothing delivered to the second user', async () => {
  const owner = uid();
  const thief = uid();
  const td = await srv.device(thief, 'T');
  const id = newId();
  assert.equal((await postNotification(srv, owner, { id })).status, 201);
  const r = await postNotification(srv, thief, { id, title: 'mine now' });
  assert.equal(r.status, 409, r.text);
  assert.equal(r.json.error.code, 'conflict', r.text);
  await sleep(QUIET_MS);
  assert.deepEqual(durables(td), [], td.describe());
  assert.equal((await list(thief)).notifications.length, 0);
  const own = await srv.http('GET', `/api/v1/notifications/${id}`, { token: srv.token(owner) });
  assert.equal(own.status, 200, own.text);
  assert.notEqual(own.json.title, 'mine now');
  await td.close();
});

/* -------------------------------------------------------------- validation */

const BAD = [
  ['app_name', { app_name: undefined }, 'missing'],
  ['title', { title: undefined }, 'missing'],
  ['body', { body: undefined }, 'missing'],
  ['app_name', { app_name: 42 }, 'a number'],
  ['title', { title: null }, 'null'],
  ['body', { body: ['x'] }, 'an array'],
  ['app_name', { app_name: 'a'.repeat(129) }, '129 bytes'],
  ['app_name', { app_name: 'é'.repeat(64) + 'a' }, '129 bytes of UTF-8'],
  ['title', { title: 't'.repeat(513) }, '513 bytes'],
  ['body', { body: 'b'.repeat(8193) }, '8193 bytes'],
  ['body', { body: 'é'.repeat(4096) + 'b' }, '8193 bytes of UTF-8'],
  ['category', { category: 'c'.repeat(65) }, '65 bytes'],
  ['category', { category: 7 }, 'a number'],
  ['priority', { priority: 3 }, '3'],
  ['priority', { priority: -3 }, '-3'],
  ['priority', { priority: 1.5 }, '1.5'],
  ['priority', { priority: '1' }, 'a string'],
  ['id', { id: 'not-a-uuid' }, 'not a UUID'],
];

for (const [field, over, what] of BAD) {
  test(`validation: ${field} ${what} → 400 naming ${field}; nothing stored`, async () => {
    const user = uid();
    const body = notificationBody(over);
    for (const [k, v] of Object.entries(over)) if (v === undefined) delete body[k];
    const r = await postNotification(srv, user, {}, { raw: body });
    assertBadRequest(r, field);
    assert.equal((await list(user)).notifications.length, 0, 'nothing stored after a 400');
  });
}

test('validation: invalid UTF-8 in a string → 400 naming the field', async () => {
  const user = uid();
  for (const field of ['title', 'body', 'app_name']) {
    const prefix = Buffer.from(`{"app_name":"e2e","title":"t","body":"b","${field}":"bad `);
    const raw = Buffer.concat([prefix, Buffer.from([0xc3, 0x28, 0xff]), Buffer.from('"}')]);
    const r = await postNotification(srv, user, {}, { raw });
    assertBadRequest(r, field);
  }
  assert.equal((await list(user)).notifications.length, 0);
});

test('validation: the limits themselves are accepted (128/512/8192/64 bytes, priority -2 and 2)', async () => {
  const user = uid();
  const ok = [
    { app_name: 'a'.repeat(128) },
    { app_name: 'é'.repeat(64) },
    { title: 't'.repeat(512) },
    { body: 'b'.repeat(8192) },
    { body: 'é'.repeat(4096) },
    { category: 'c'.repeat(64) },
    { priority: -2 },
    { priority: 2 },
    { title: 'emoji 🔔 ünïcödé' },
  ];
  for (const over of ok) {
    const r = await postNotification(srv, user, over);
    assert.equal(r.status, 201, `${JSON.stringify(over).slice(0, 60)}: ${r.text.slice(0, 300)}`);
    for (const [k, v] of Object.entries(over)) assert.equal(r.json[k], v, k);
  }
});

test('not JSON → 400 bad_json; JSON that is not an object → 400', async () => {
  const user = uid();
  const r = await postNotification(srv, user, {}, { raw: '{"app_name": "x", ' });
  assert.equal(r.status, 400, r.text);
  assert.equal(r.json.error.code, 'bad_json', r.text);
  for (const raw of ['[]', '"text"', '42', 'null']) {
    const x = await postNotification(srv, user, {}, { raw });
    assert.equal(x.status, 400, `${raw}: ${x.text}`);
  }
  assert.equal((await list(user)).notifications.length, 0);
});

test('a body over max_body_bytes (64 KiB default) → 413', async () => {
  const user = uid();
  const r = await postNotification(srv, user, {}, { raw: notificationBody({ body: 'x'.repeat(70000) }) });
  assert.equal(r.status, 413, r.text.slice(0, 200));
  assert.equal((await list(user)).notifications.length, 0);
});

/* ------------------------------------------------------------------- batch */

test('batch: 201 with the notifications in order, delivered in array order', async () => {
  const user = uid();
  const d = await srv.device(user, 'D');
  const items = Array.from({ length: 12 }, (_, i) => notificationBody({ title: `batch ${i}`, priority: (i % 5) - 2 }));
  items[5].id = newId();
  const r = await postBatch(srv, user, items);
  assert.equal(r.status, 201, r.text);
  assert.ok(Array.isArray(r.json.notifications), r.text);
  assert.equal(r.json.notifications.length, items.length);
  r.json.notifications.forEach((n, i) => assertStored(n, { user_id: user, title: `batch ${i}`, priority: (i % 5) - 2 }));
  assert.equal(r.json.notifications[5].id, items[5].id);
  const ids = r.json.notifications.map((n) => n.id);
  assert.equal(new Set(ids).size, ids.length, 'distinct ids');
  await d.waitFor(isNew(ids[ids.length - 1]), 10000, 'last batch item');
  await sleep(500);
  const got = durables(d, 'new_notification');
  assert.deepEqual(got.map((m) => m.data.id), ids, 'delivered once each, in array order');
  for (let i = 1; i < got.length; i += 1) assert.equal(cmpStreamId(got[i - 1].id, got[i].id), -1, 'delivery ids increase');
  await d.close();
});

test('batch: an invalid item → 400 naming notifications[3].title and nothing stored or delivered', async () => {
  const user = uid();
  const d = await srv.device(user, 'D');
  const items = Array.from({ length: 6 }, (_, i) => notificationBody({ title: `item ${i}` }));
  delete items[3].title;
  assertBadRequest(await postBatch(srv, user, items), 'notifications[3].title');
  const long = Array.from({ length: 6 }, (_, i) => notificationBody({ title: `item ${i}` }));
  long[4].body = 'x'.repeat(8193);
  assertBadRequest(await postBatch(srv, user, long), 'notifications[4].body');
  await sleep(QUIET_MS);
  assert.equal((await list(user)).notifications.length, 0, 'all-or-nothing: nothing stored');
  assert.deepEqual(durables(d), [], d.describe());
  await d.close();
});

test('batch: 0 items, 501 items, no array, not JSON → 400; exactly 500 → 201', async () => {
  const user = uid();
  assert.equal((await postBatch(srv, user, [])).status, 400);
  const many = Array.from({ length: 501 }, (_, i) => ({ app_name: 'e2e', title: `m${i}`, body: 'b' }));
  assert.equal((await postBatch(srv, user, many)).status, 400);
  const noArr = await srv.http('POST', '/api/v1/notifications/batch', { token: srv.token(user), body: { notifications: 'x' } });
  assert.equal(noArr.status, 400, noArr.text);
  const bad = await srv.http('POST', '/api/v1/notifications/batch', { token: srv.token(user), body: '{"notifications": [' });
  assert.equal(bad.status, 400, bad.text);
  assert.equal(bad.json.error.code, 'bad_json', bad.text);
  assert.equal((await list(user)).notifications.length, 0);
  const d = await srv.device(user, 'D');
  const r = await postBatch(srv, user, many.slice(0, 500));
  assert.equal(r.status, 201, r.text.slice(0, 300));
  assert.equal(r.json.notifications.length, 500);
  const ids = r.json.notifications.map((n) => n.id);
  await d.waitFor(isNew(ids[499]), 20000, 'item 500 delivered');
  await sleep(500);
  assert.deepEqual(notifIds(d), ids, 'all 500 delivered once, in order');
  await d.close();
});

/* -------------------------------------------------------------------- reads */

test('GET /api/v1/notifications: newest first, limit, before cursor, unread=1', async () => {
  const user = uid();
  const posted = [];
  for (let i = 0; i < 5; i += 1) {
    const r = await postNotification(srv, user, { title: `n${i}` });
    assert.equal(r.status, 201, r.text);
    posted.push(r.json);
    await sleep(30);
  }
  const newestFirst = posted.map((n) => n.id).reverse();
  const all = await list(user);
  assert.deepEqual(all.notifications.map((n) => n.id), newestFirst);
  all.notifications.forEach((n) => assertStored(n, { user_id: user }));
  /* pages of 2 via next_before */
  const seen = [];
  let query = '?limit=2';
  for (let page = 0; page < 10; page += 1) {
    const p = await list(user, query);
    assert.ok(p.notifications.length <= 2, `limit=2 gave ${p.notifications.length}`);
    seen.push(...p.notifications.map((n) => n.id));
    if (p.notifications.length < 2 || !p.next_before) break;
    assert.equal(typeof p.next_before, 'string');
    query = `?limit=2&before=${encodeURIComponent(p.next_before)}`;
  }
  assert.deepEqual(seen, newestFirst, 'paging with next_before walks every notification once');
  /* other users see none of it */
  assert.equal((await list(uid())).notifications.length, 0);
  /* unread=1 after one is read */
  const rd = await srv.http('POST', `/api/v1/notifications/${posted[1].id}/actions`, {
    token: srv.token(user), body: { action: 'read' },
  });
  assert.equal(rd.status, 200, rd.text);
  const unread = await list(user, '?unread=1');
  assert.deepEqual(unread.notifications.map((n) => n.id), newestFirst.filter((id) => id !== posted[1].id));
  assert.ok(unread.notifications.every((n) => n.is_read === false));
});

test('GET /api/v1/notifications: paging with next_before walks a batch (same transaction) once, no repeats, no loss', async () => {
  const user = uid();
  const b = await postBatch(srv, user, Array.from({ length: 5 }, (_, i) => notificationBody({ title: `b${i}` })));
  assert.equal(b.status, 201, b.text);
  const want = b.json.notifications.map((n) => n.id);
  const seen = [];
  let query = '?limit=2';
  for (let page = 0; page < 8; page += 1) {
    const p = await list(user, query);
    assert.ok(p.notifications.length <= 2);
    seen.push(...p.notifications.map((n) => n.id));
    if (p.notifications.length < 2 || !p.next_before) break;
    query = `?limit=2&before=${encodeURIComponent(p.next_before)}`;
  }
  assert.equal(new Set(seen).size, seen.length, `a page repeats items: ${JSON.stringify(seen.slice(0, 6))} (created_at ${b.json.notifications[0].created_at})`);
  assert.deepEqual([...seen].sort(), [...want].sort(), 'every batch item on exactly one page');
});

test('GET /api/v1/notifications: bad limit → 400; limit 200 accepted', async () => {
  const user = uid();
  for (const q of ['?limit=0', '?limit=201', '?limit=abc', '?limit=-1']) {
    const r = await srv.http('GET', `/api/v1/notifications${q}`, { token: srv.token(user) });
    assert.equal(r.status, 400, `${q}: ${r.text}`);
  }
  const ok = await srv.http('GET', '/api/v1/notifications?limit=200', { token: srv.token(user) });
  assert.equal(ok.status, 200, ok.text);
});

test('GET /api/v1/notifications/{id}: the caller\'s one → 200; another user\'s or unknown → 404', async () => {
  const user = uid();
  const r = await postNotification(srv, user, { category: 'x' });
  assert.equal(r.status, 201, r.text);
  const g = await srv.http('GET', `/api/v1/notifications/${r.json.id}`, { token: srv.token(user) });
  assert.equal(g.status, 200, g.text);
  assert.deepEqual(g.json, r.json);
  const other = await srv.http('GET', `/api/v1/notifications/${r.json.id}`, { token: srv.token(uid()) });
  assert.equal(other.status, 404, other.text);
  assert.equal(other.json.error.code, 'not_found');
  const unknown = await srv.http('GET', `/api/v1/notifications/${newId()}`, { token: srv.token(user) });
  assert.equal(unknown.status, 404, unknown.text);
  const junk = await srv.http('GET', '/api/v1/notifications/not-a-uuid', { token: srv.token(user) });
  assert.ok(junk.status === 404 || junk.status === 400, `non-UUID id: ${junk.status} ${junk.text}`);
});

/* ------------------------------------------------------------------ metrics */

test('metrics: queue appends grow by devices × notifications; delivery latency is observed', async () => {
  const user = uid();
  const a = await srv.device(user, 'A');
  const b = await srv.device(user, 'B');
  const c = await srv.device(user, 'C');
  await c.close(); /* registered, offline */
  const appends0 = (await metricSum(srv, 'notisync_queue_appends_total')) || 0;
  const lat0 = (await metricSum(srv, 'notisync_delivery_latency_seconds_count')) || 0;
  const ids = [];
  for (let i = 0; i < 4; i += 1) {
    const r = await postNotification(srv, user, { source_device: 'A' });
    assert.equal(r.status, 201, r.text);
    ids.push(r.json.id);
  }
  await b.waitFor(isNew(ids[3]), 5000, 'last one on B');
  await sleep(300);
  const appends = await metricSum(srv, 'notisync_queue_appends_total');
  assert.equal(appends - appends0, 8, `4 notifications × 2 target devices (B, C): ${appends0} → ${appends}`);
  const lat = await metricSum(srv, 'notisync_delivery_latency_seconds_count');
  assert.ok(lat - lat0 >= 4, `latency count ${lat0} → ${lat}`);
  const r = await srv.http('GET', '/metrics');
  assert.match(r.text, /^# TYPE notisync_delivery_latency_seconds histogram$/m);
  assert.match(r.text, /^notisync_delivery_latency_seconds_bucket\{[^}]*le="\+Inf"[^}]*\} /m);
  for (const cl of [a, b]) await cl.close();
});
