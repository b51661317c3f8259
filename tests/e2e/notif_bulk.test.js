'use strict';
/*
 * notif_bulk.test.js -- SPEC §9 rule 5, bulk actions: notification_action
 * {all: true, action: read|dismiss, before?} → ok {updated, unread}, and
 * the user's other devices get ONE notification_sync {all: true, action,
 * before, updated, unread, source_device} (durable: an offline device gets
 * it from its queue); POST /api/v1/notifications/actions {action, before?}
 * (X-Device-ID optional) → 200 {updated, unread}.  `before` limits the
 * action to notifications created at or before that one.  "unread" and
 * anything else is not a bulk action (400 naming action / bad_message).
 *
 * With 1,000 notifications, in both forms, across two instances; the
 * database (psql) agrees afterwards.
 */
const assert = require('node:assert/strict');
const {
  test, newServer, setup, uid, sleep, newId, postNotification, postBatch, durables, notifIds,
  drainUntilIdle,
} = require('./lib/harness');
const { sharedDbUrl, dbUnread, psql, lit } = require('./lib/pgq');

const srv = newServer();
setup(() => srv.start());
const other = newServer({ secret: srv.secret });
setup(() => other.start());

const QUIET_MS = 1500;
const isNew = (id) => (m) => m.type === 'new_notification' && m.data && m.data.id === id;
const bulkSyncs = (c) => durables(c, 'notification_sync').filter((m) => m.data && m.data.all === true);
const allSyncs = (c) => durables(c, 'notification_sync');

function wsBulk(c, data, ref = uid('bulk')) {
  c.send({ type: 'notification_action', ref, data });
  return c.waitFor((m) => m.ref === ref && (m.type === 'ok' || m.type === 'error'), 60000, `reply to bulk ${JSON.stringify(data)}`);
}

function restBulk(server, user, body, deviceId) {
  return server.http('POST', '/api/v1/notifications/actions', {
    token: server.token(user), body, headers: deviceId ? { 'X-Device-ID': deviceId } : {}, timeoutMs: 60000,
  });
}

async function unreadCount(server, user) {
  const r = await server.http('GET', '/api/v1/notifications/unread_count', { token: server.token(user) });
  assert.equal(r.status, 200, r.text);
  return r.json.unread;
}

/* Posts `n` notifications in batches of up to 500; returns the batches' id lists. */
async function postMany(user, n, prefix = 'bulk') {
  const batches = [];
  for (let done = 0; done < n; done += 500) {
    const items = Array.from({ length: Math.min(500, n - done) }, (_, i) => ({ app_name: 'e2e', title: `${prefix} ${done + i}`, body: 'x' }));
    const r = await postBatch(srv, user, items, { timeoutMs: 120000 });
    assert.equal(r.status, 201, r.text.slice(0, 300));
    batches.push(r.json.notifications.map((x) => x.id));
    await sleep(50); /* the next batch is created strictly later */
  }
  return batches;
}

/* The user's flags per row, from PostgreSQL. */
async function dbFlags(user) {
  const out = await psql(sharedDbUrl(), `SELECT count(*) FILTER (WHERE is_read), count(*) FILTER (WHERE is_dismissed), count(*)
    FROM notifications WHERE user_id = ${lit(user)}`);
  const [read, dismissed, total] = out.split('|').map(Number);
  return { read, dismissed, total };
}

test('WS mark-all-read of 1,000: ok {updated: 1000, unread: 0}; a device on the other instance gets exactly one sync; the source none', { timeout: 240000 }, async () => {
  const user = uid('all');
  const a = await srv.device(user, 'A');
  const b = await other.device(user, 'B');
  const batches = await postMany(user, 1000);
  const last = batches[batches.length - 1][499];
  for (const c of [a, b]) await c.waitFor(isNew(last), 60000, `all 1,000 on ${c.label}`);
  assert.equal(await unreadCount(srv, user), 1000);
  const reply = await wsBulk(a, { all: true, action: 'read' }, 'mark-all');
  assert.equal(reply.type, 'ok', JSON.stringify(reply));
  assert.equal(reply.ref, 'mark-all');
  assert.deepEqual(reply.data, { updated: 1000, unread: 0 }, JSON.stringify(reply));
  const s = await b.waitFor((m) => m.type === 'notification_sync' && m.data && m.data.all === true, 15000, 'the bulk sync on B');
  assert.equal(typeof s.id, 'string', 'durable: a delivery id');
  assert.deepEqual(s.data, { all: true, action: 'read', before: null, updated: 1000, unread: 0, source_device: 'A' });
  await sleep(QUIET_MS);
  assert.equal(allSyncs(b).length, 1, `one sync, not one per notification: ${allSyncs(b).length}`);
  assert.equal(allSyncs(a).length, 0, 'the source device gets no sync');
  assert.equal(await unreadCount(srv, user), 0);
  assert.equal(await unreadCount(other, user), 0);
  assert.equal(await dbUnread(sharedDbUrl(), user), 0);
  assert.deepEqual(await dbFlags(user), { read: 1000, dismissed: 0, total: 1000 });
  const u = await srv.http('GET', '/api/v1/notifications?unread=1', { token: srv.token(user) });
  assert.deepEqual(u.json.notifications, [], 'GET ?unread=1 is empty');
  /* again: nothing left to change, still unread 0 */
  const again = await wsBulk(b, { all: true, action: 'read' });
  assert.equal(again.type, 'ok', JSON.stringify(again));
  assert.ok(again.data.updated === 0 || again.data.updated === 1000, JSON.stringify(again));
  assert.equal(again.data.unread, 0);
  /* a new one counts again */
  const n = await postNotification(srv, user, {});
  const m = await a.waitFor(isNew(n.json.id), 10000, 'a new one');
  assert.equal(m.data.unread, 1);
  for (const c of [a, b]) await c.close();
});

test('REST bulk with `before` on 1,000: only the first 500 change; X-Device-ID is the source; then without before or X-Device-ID every device gets it', { timeout: 240000 }, async () => {
  const user = uid('before');
  const a = await srv.device(user, 'A');
  const b = await other.device(user, 'B');
  const [first, second] = await postMany(user, 1000);
  for (const c of [a, b]) await c.waitFor(isNew(second[499]), 60000, `all on ${c.label}`);
  const before = first[499];
  const r = await restBulk(srv, user, { action: 'dismiss', before }, 'A');
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, { updated: 500, unread: 500 });
  const s = await b.waitFor((m) => m.type === 'notification_sync' && m.data && m.data.all === true, 15000, 'bulk sync on B');
  assert.deepEqual(s.data, { all: true, action: 'dismiss', before, updated: 500, unread: 500, source_device: 'A' });
  await sleep(QUIET_MS);
  assert.equal(allSyncs(a).length, 0, 'X-Device-ID device gets no sync');
  assert.equal(allSyncs(b).length, 1);
  assert.deepEqual(await dbFlags(user), { read: 0, dismissed: 500, total: 1000 });
  const dismissed = await psql(sharedDbUrl(), `SELECT id FROM notifications WHERE user_id = ${lit(user)} AND is_dismissed`);
  assert.deepEqual(dismissed.split('\n').sort(), [...first].sort(), 'exactly the notifications created at or before `before`');
  assert.equal(await unreadCount(other, user), 500);

  const r2 = await restBulk(other, user, { action: 'read' });
  assert.equal(r2.status, 200, r2.text);
  assert.equal(r2.json.unread, 0, r2.text);
  assert.ok(r2.json.updated >= 500 && r2.json.updated <= 1000, r2.text);
  for (const c of [a, b]) {
    const x = await c.waitFor((m) => m.type === 'notification_sync' && m.data && m.data.all === true && m.data.action === 'read', 15000, `read-all sync on ${c.label}`);
    assert.equal(x.data.before, null);
    assert.equal(x.data.unread, 0);
    assert.equal(x.data.updated, r2.json.updated);
  }
  assert.equal(await unreadCount(srv, user), 0);
  assert.equal(await dbUnread(sharedDbUrl(), user), 0);
  for (const c of [a, b]) await c.close();
});

test('WS bulk with before; an offline device gets the single sync from its queue, after the notifications', async () => {
  const user = uid();
  const off = await srv.device(user, 'off');
  await off.close();
  await sleep(300);
  const a = await srv.device(user, 'A');
  const ids = [];
  for (let i = 0; i < 5; i += 1) {
    const r = await postNotification(srv, user, { title: `s${i}` });
    assert.equal(r.status, 201);
    ids.push(r.json.id);
    await sleep(20);
  }
  await a.waitFor(isNew(ids[4]), 10000, 'five on A');
  const reply = await wsBulk(a, { all: true, action: 'read', before: ids[2] });
  assert.equal(reply.type, 'ok', JSON.stringify(reply));
  assert.deepEqual(reply.data, { updated: 3, unread: 2 });
  const c = await srv.device(user, 'off');
  assert.equal(c.welcome.data.queued, 6, JSON.stringify(c.welcome.data));
  assert.equal(c.welcome.data.unread, 2);
  await drainUntilIdle(c, { idleMs: QUIET_MS, maxMs: 15000 });
  const d = durables(c);
  assert.deepEqual(d.map((m) => m.type), [...Array(5).fill('new_notification'), 'notification_sync'], c.describe());
  assert.deepEqual(d[5].data, { all: true, action: 'read', before: ids[2], updated: 3, unread: 2, source_device: 'A' });
  const list = await srv.http('GET', '/api/v1/notifications?limit=10', { token: srv.token(user) });
  const read = list.json.notifications.filter((n) => n.is_read).map((n) => n.id).sort();
  assert.deepEqual(read, ids.slice(0, 3).sort());
  for (const x of [a, c]) await x.close();
});

test('bulk actions touch only the caller\'s notifications', async () => {
  const u1 = uid();
  const u2 = uid();
  for (const u of [u1, u2]) {
    for (let i = 0; i < 3; i += 1) assert.equal((await postNotification(srv, u, {})).status, 201);
  }
  const d2 = await srv.device(u2, 'X');
  const r = await restBulk(srv, u1, { action: 'dismiss' });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, { updated: 3, unread: 0 });
  assert.equal(await unreadCount(srv, u2), 3);
  await sleep(QUIET_MS);
  assert.deepEqual(allSyncs(d2), [], d2.describe());
  await d2.close();
});

test('refused: action "unread" or unknown or missing → 400 naming action / bad_message; bad before → 400 naming before; 401; nothing changes', async () => {
  const user = uid();
  const ids = [];
  for (let i = 0; i < 3; i += 1) ids.push((await postNotification(srv, user, {})).json.id);
  const a = await srv.device(user, 'A');
  const b = await srv.device(user, 'B');
  for (const [body, field] of [
    [{ action: 'unread' }, 'action'], [{ action: 'archive' }, 'action'], [{}, 'action'], [{ action: 7 }, 'action'],
    [{ action: 'read', before: 5 }, 'before'], [{ action: 'read', before: 'not-a-uuid' }, 'before'],
  ]) {
    const r = await restBulk(srv, user, body, 'A');
    assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
    assert.ok(r.text.includes(field), `${JSON.stringify(body)}: the error names ${field}: ${r.text}`);
    if (r.json.error.field !== undefined) assert.equal(r.json.error.field, field, r.text);
  }
  const nj = await srv.http('POST', '/api/v1/notifications/actions', { token: srv.token(user), body: '{"action":' });
  assert.equal(nj.status, 400, nj.text);
  assert.equal((await srv.http('POST', '/api/v1/notifications/actions', { body: { action: 'read' } })).status, 401);
  for (const data of [
    { all: true, action: 'unread' }, { all: true }, { all: true, action: 'archive' }, { all: true, action: 'read', before: 7 },
  ]) {
    const e = await wsBulk(a, data);
    assert.equal(e.type, 'error', `${JSON.stringify(data)} → ${JSON.stringify(e)}`);
    assert.equal(e.data.code, 'bad_message', `${JSON.stringify(data)} → ${JSON.stringify(e)}`);
  }
  assert.equal((await a.ping()).type, 'pong', 'the connection stays open');
  await sleep(QUIET_MS);
  assert.deepEqual(allSyncs(b), [], b.describe());
  assert.equal(await unreadCount(srv, user), 3);
  for (const x of [a, b]) await x.close();
});

test('before naming an unknown or another user\'s notification changes nothing', async () => {
  const user = uid();
  for (let i = 0; i < 2; i += 1) assert.equal((await postNotification(srv, user, {})).status, 201);
  const foreign = (await postNotification(srv, uid(), {})).json.id;
  const a = await srv.device(user, 'A');
  for (const before of [newId(), foreign]) {
    const r = await restBulk(srv, user, { action: 'read', before });
    assert.ok((r.status >= 400 && r.status < 500) || (r.status === 200 && r.json.updated === 0),
      `before ${before}: ${r.status} ${r.text}`);
    const e = await wsBulk(a, { all: true, action: 'dismiss', before });
    assert.ok(e.type === 'error' || (e.type === 'ok' && e.data.updated === 0), JSON.stringify(e));
  }
  assert.equal(await unreadCount(srv, user), 2);
  assert.equal((await dbFlags(user)).read + (await dbFlags(user)).dismissed, 0);
  await a.close();
});

test('a single action still works beside bulk: notification_sync of one id carries unread', async () => {
  const user = uid();
  const a = await srv.device(user, 'A');
  const b = await srv.device(user, 'B');
  const n = (await postNotification(srv, user, {})).json.id;
  await b.waitFor(isNew(n), 10000, 'n on B');
  a.send({ type: 'notification_action', ref: 'one', data: { notification_id: n, action: 'read' } });
  const ok = await a.waitFor((m) => m.ref === 'one', 10000, 'reply');
  assert.equal(ok.type, 'ok');
  const s = await b.waitFor((m) => m.type === 'notification_sync', 10000, 'sync');
  assert.equal(s.data.notification_id, n);
  assert.equal(s.data.unread, 0);
  assert.ok(!('all' in s.data) || s.data.all === false, JSON.stringify(s.data));
  assert.deepEqual(notifIds(b), [n]);
  for (const x of [a, b]) await x.close();
});
