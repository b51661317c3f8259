'use strict';
/*
 * actions.test.js -- SPEC §4 notification_action and §6 POST
 * /api/v1/notifications/{id}/actions: read / unread / dismiss are persisted
 * (GET shows them), the source gets ok (WS) or 200 with the updated
 * notification (REST), and every OTHER registered device of the user gets a
 * durable notification_sync (queued for offline devices, replayed on
 * reconnect after the notification itself).  An action on another user's
 * or an unknown notification is not_found / 404 and syncs nothing to
 * anyone; a bad action is bad_message / 400.
 */
const assert = require('node:assert/strict');
const {
  test, useServer, uid, sleep, isTimestamp, newId, postNotification, durables, cmpStreamId,
} = require('./lib/harness');

const srv = useServer();
const QUIET_MS = 1500;

const isNew = (id) => (m) => m.type === 'new_notification' && m.data && m.data.id === id;
const isSync = (id, pred = () => true) => (m) => m.type === 'notification_sync' && m.data
  && m.data.notification_id === id && pred(m.data);
const syncs = (c) => durables(c, 'notification_sync');

function wsAction(c, notificationId, action, ref = uid('ref')) {
  c.send({ type: 'notification_action', ref, data: { notification_id: notificationId, action } });
  return c.waitFor((m) => m.ref === ref && (m.type === 'ok' || m.type === 'error'), 10000, `reply to ${action} ref=${ref}`);
}

function restAction(user, id, action, { deviceId, token } = {}) {
  const headers = deviceId ? { 'X-Device-ID': deviceId } : {};
  return srv.http('POST', `/api/v1/notifications/${id}/actions`, {
    token: token || srv.token(user), body: { action }, headers,
  });
}

async function getOne(user, id) {
  const r = await srv.http('GET', `/api/v1/notifications/${id}`, { token: srv.token(user) });
  assert.equal(r.status, 200, r.text);
  return r.json;
}

/* A user with A and B online, C registered but offline, and one
 * notification every device has (C in its queue). */
async function scene() {
  const user = uid();
  const c0 = await srv.device(user, 'C');
  await c0.close();
  const a = await srv.device(user, 'A');
  const b = await srv.device(user, 'B');
  const r = await postNotification(srv, user, { title: 'act on me' });
  assert.equal(r.status, 201, r.text);
  await a.waitFor(isNew(r.json.id), 5000, 'notification on A');
  await b.waitFor(isNew(r.json.id), 5000, 'notification on B');
  return { user, a, b, id: r.json.id };
}

test('WS read: ok to the source, notification_sync to the other devices (offline ones on reconnect), persisted', async () => {
  const { user, a, b, id } = await scene();
  const stranger = await srv.device(uid(), 'A');
  const reply = await wsAction(a, id, 'read', 'r1');
  assert.equal(reply.type, 'ok', JSON.stringify(reply));
  assert.equal(reply.ref, 'r1');
  assert.ok(isTimestamp(reply.timestamp), JSON.stringify(reply));
  const s = await b.waitFor(isSync(id), 5000, 'notification_sync on B');
  assert.equal(typeof s.id, 'string', `durable: top-level delivery id: ${JSON.stringify(s)}`);
  assert.ok(isTimestamp(s.timestamp));
  /* SPEC §9.4: the user's unread count right after the change */
  assert.deepEqual(s.data, { notification_id: id, is_read: true, is_dismissed: false, source_device: 'A', unread: 0 });
  const n = await getOne(user, id);
  assert.equal(n.is_read, true);
  assert.equal(n.is_dismissed, false);
  /* C was offline: notification first, then the sync, from its queue */
  const c = await srv.device(user, 'C');
  assert.equal(c.welcome.data.queued, 2, JSON.stringify(c.welcome.data));
  await c.waitFor(isSync(id), 5000, 'queued notification_sync on C');
  const cd = durables(c);
  assert.deepEqual(cd.map((m) => m.type), ['new_notification', 'notification_sync'], c.describe());
  assert.equal(cmpStreamId(cd[0].id, cd[1].id), -1);
  assert.deepEqual(cd[1].data, s.data);
  await sleep(QUIET_MS);
  assert.deepEqual(syncs(a), [], `the source device got a sync: ${a.describe()}`);
  assert.equal(syncs(b).length, 1, b.describe());
  assert.deepEqual(durables(stranger), [], `another user got: ${stranger.describe()}`);
  for (const x of [a, b, c, stranger]) await x.close();
});

test('WS read → unread → dismiss: each synced in order, final state persisted', async () => {
  const { user, a, b, id } = await scene();
  assert.equal((await wsAction(a, id, 'read')).type, 'ok');
  assert.equal((await wsAction(a, id, 'unread')).type, 'ok');
  assert.equal((await wsAction(a, id, 'dismiss')).type, 'ok');
  await b.waitFor(isSync(id, (d) => d.is_dismissed === true), 5000, 'dismiss sync on B');
  const got = syncs(b).map((m) => m.data);
  assert.equal(got.length, 3, JSON.stringify(got));
  assert.deepEqual([got[0].is_read, got[0].is_dismissed], [true, false]);
  assert.deepEqual([got[1].is_read, got[1].is_dismissed], [false, false]);
  assert.equal(got[2].is_dismissed, true);
  const n = await getOne(user, id);
  assert.equal(n.is_dismissed, true);
  assert.equal(n.is_read, got[2].is_read, 'the sync carries the stored is_read');
  /* B in turn acts: A gets the sync with source_device B, B does not */
  assert.equal((await wsAction(b, id, 'read')).type, 'ok');
  const back = await a.waitFor(isSync(id), 5000, 'sync on A from B');
  assert.equal(back.data.source_device, 'B');
  assert.equal(back.data.is_read, true);
  await sleep(QUIET_MS);
  assert.equal(syncs(b).length, 3, `B got a sync of its own action: ${b.describe()}`);
  for (const x of [a, b]) await x.close();
});

test('REST action with X-Device-ID: 200 with the updated notification; sync to every device but that one', async () => {
  const { user, a, b, id } = await scene();
  const r = await restAction(user, id, 'read', { deviceId: 'A' });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.id, id);
  assert.equal(r.json.is_read, true);
  assert.equal(r.json.is_dismissed, false);
  assert.equal(r.json.user_id, user);
  const s = await b.waitFor(isSync(id), 5000, 'sync on B');
  assert.equal(s.data.source_device, 'A');
  assert.equal(s.data.is_read, true);
  const c = await srv.device(user, 'C');
  await c.waitFor(isSync(id), 5000, 'queued sync on C');
  await sleep(QUIET_MS);
  assert.deepEqual(syncs(a), [], `X-Device-ID device got a sync: ${a.describe()}`);
  assert.equal((await getOne(user, id)).is_read, true);
  for (const x of [a, b, c]) await x.close();
});

test('REST action without X-Device-ID: every device gets the sync', async () => {
  const { user, a, b, id } = await scene();
  const r = await restAction(user, id, 'dismiss');
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.is_dismissed, true);
  for (const x of [a, b]) {
    const s = await x.waitFor(isSync(id), 5000, `sync on ${x.label}`);
    assert.equal(s.data.is_dismissed, true);
  }
  assert.equal((await getOne(user, id)).is_dismissed, true);
  for (const x of [a, b]) await x.close();
});

test('action on another user\'s notification: not_found / 404, no sync to anyone, nothing changed', async () => {
  const owner = uid();
  const ownerDev = await srv.device(owner, 'O');
  const r = await postNotification(srv, owner);
  assert.equal(r.status, 201, r.text);
  const id = r.json.id;
  await ownerDev.waitFor(isNew(id), 5000, 'owner has it');
  const owner2 = await srv.device(owner, 'O2');
  const user = uid();
  const a = await srv.device(user, 'A');
  const b = await srv.device(user, 'B');
  for (const action of ['read', 'dismiss']) {
    const e = await wsAction(a, id, action, `steal-${action}`);
    assert.equal(e.type, 'error', JSON.stringify(e));
    assert.equal(e.data.code, 'not_found', JSON.stringify(e));
    assert.equal(e.ref, `steal-${action}`);
    const h = await restAction(user, id, action, { deviceId: 'A' });
    assert.equal(h.status, 404, h.text);
    assert.equal(h.json.error.code, 'not_found', h.text);
  }
  assert.ok(a.isOpen(), 'the connection stays open after not_found');
  await sleep(2000);
  for (const x of [ownerDev, owner2, a, b]) {
    assert.deepEqual(syncs(x), [], `sync leaked to ${x.label}: ${x.describe()}`);
  }
  const n = await getOne(owner, id);
  assert.equal(n.is_read, false);
  assert.equal(n.is_dismissed, false);
  /* and nothing was queued for the owner's offline devices either */
  await owner2.close();
  const back = await srv.device(owner, 'O2');
  await sleep(QUIET_MS);
  assert.deepEqual(syncs(back), [], back.describe());
  for (const x of [ownerDev, back, a, b]) await x.close();
});

test('action on an unknown notification: not_found / 404', async () => {
  const user = uid();
  const a = await srv.device(user, 'A');
  const b = await srv.device(user, 'B');
  const id = newId();
  const e = await wsAction(a, id, 'read');
  assert.equal(e.type, 'error');
  assert.equal(e.data.code, 'not_found', JSON.stringify(e));
  const h = await restAction(user, id, 'read');
  assert.equal(h.status, 404, h.text);
  await sleep(QUIET_MS);
  assert.deepEqual(syncs(b), [], b.describe());
  for (const x of [a, b]) await x.close();
});

test('bad action or data → bad_message / 400; the connection stays open; nothing synced', async () => {
  const { user, a, b, id } = await scene();
  const bad = [
    { notification_id: id, action: 'archive' },
    { notification_id: id, action: '' },
    { notification_id: id, action: 7 },
    { notification_id: id },
    { action: 'read' },
    { notification_id: 12, action: 'read' },
  ];
  for (const [i, data] of bad.entries()) {
    a.send({ type: 'notification_action', ref: `bad${i}`, data });
    const e = await a.waitFor((m) => m.ref === `bad${i}`, 5000, `reply to ${JSON.stringify(data)}`);
    assert.equal(e.type, 'error', JSON.stringify(e));
    assert.equal(e.data.code, 'bad_message', `${JSON.stringify(data)} → ${JSON.stringify(e)}`);
  }
  a.send({ type: 'notification_action', ref: 'nodata' });
  const nd = await a.waitFor((m) => m.ref === 'nodata', 5000, 'reply to no data');
  assert.equal(nd.data.code, 'bad_message');
  for (const body of [{ action: 'archive' }, {}, { action: 3 }]) {
    const r = await srv.http('POST', `/api/v1/notifications/${id}/actions`, { token: srv.token(user), body });
    assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
  }
  const nj = await srv.http('POST', `/api/v1/notifications/${id}/actions`, { token: srv.token(user), body: '{"action":' });
  assert.equal(nj.status, 400, nj.text);
  const noauth = await srv.http('POST', `/api/v1/notifications/${id}/actions`, { body: { action: 'read' } });
  assert.equal(noauth.status, 401, noauth.text);
  assert.equal((await a.ping()).type, 'pong');
  await sleep(QUIET_MS);
  assert.deepEqual(syncs(b), [], b.describe());
  const n = await getOne(user, id);
  assert.equal(n.is_read, false);
  assert.equal(n.is_dismissed, false);
  for (const x of [a, b]) await x.close();
});

test('notification_sync is durable in ack mode: replayed until acked', async () => {
  const { user, a, b, id } = await scene();
  await b.close();
  const b1 = await srv.device(user, 'B', { params: { ack: '1' } });
  assert.equal((await wsAction(a, id, 'read')).type, 'ok');
  const s1 = await b1.waitFor(isSync(id), 5000, 'sync on B (ack mode)');
  await b1.close();
  const b2 = await srv.device(user, 'B', { params: { ack: '1' } });
  const s2 = await b2.waitFor(isSync(id), 5000, 'replayed sync');
  assert.equal(s2.id, s1.id, 'same delivery id');
  b2.send({ type: 'ack', data: { id: s2.id } });
  await b2.ping();
  await sleep(300);
  await b2.close();
  const b3 = await srv.device(user, 'B', { params: { ack: '1' } });
  await sleep(QUIET_MS);
  assert.deepEqual(durables(b3), [], b3.describe());
  for (const x of [a, b3]) await x.close();
});

test('an action is idempotent in effect: reading twice leaves is_read true and syncs each time', async () => {
  const { user, a, b, id } = await scene();
  assert.equal((await wsAction(a, id, 'read')).type, 'ok');
  assert.equal((await wsAction(a, id, 'read')).type, 'ok');
  await b.waitFor(isSync(id), 5000, 'first sync');
  await sleep(QUIET_MS);
  const got = syncs(b);
  assert.ok(got.length >= 1 && got.length <= 2, b.describe());
  assert.ok(got.every((m) => m.data.is_read === true));
  assert.equal((await getOne(user, id)).is_read, true);
  for (const x of [a, b]) await x.close();
});
