'use strict';
/*
 * notif_unread.test.js -- SPEC §9 rule 4, the unread count: notifications
 * neither read nor dismissed, not counting scheduled or canceled ones
 * (expired ones count).  welcome.data.unread at connect,
 * new_notification.data.unread and notification_sync.data.unread right
 * after that change, GET /api/v1/notifications/unread_count → {"unread"}.
 *
 * Under concurrency (200 read/unread/dismiss actions from three devices on
 * two instances, WebSocket and REST mixed): once they have finished, the
 * REST figure on both instances equals the database's count (psql), and
 * the unread carried by the next change each device sees equals it too.
 * During the storm, each sync carries an integer within 0…N (which of two
 * concurrent changes is queued last is not ordered by SPEC, so the last
 * sync of the storm is printed, not asserted).
 */
const assert = require('node:assert/strict');
const {
  test, newServer, setup, uid, sleep, until, postNotification, postBatch, durables, drainUntilIdle,
} = require('./lib/harness');
const { sharedDbUrl, dbUnread } = require('./lib/pgq');

const FAST = { NOTISYNC_CLIENT_MSG_RATE: '1000', NOTISYNC_CLIENT_MSG_BURST: '1000' };
const A = newServer({ env: { ...FAST } });
setup(() => A.start());
const B = newServer({ secret: A.secret, env: { ...FAST } });
setup(() => B.start());

const QUIET_MS = 1500;
const isNew = (id) => (m) => m.type === 'new_notification' && m.data && m.data.id === id;
const iso = (ms) => new Date(ms).toISOString();

async function unreadCount(server, user) {
  const r = await server.http('GET', '/api/v1/notifications/unread_count', { token: server.token(user) });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(Object.keys(r.json), ['unread'], r.text);
  assert.ok(Number.isInteger(r.json.unread), r.text);
  return r.json.unread;
}

async function post(server, user, fields = {}) {
  const r = await postNotification(server, user, fields);
  assert.equal(r.status, 201, r.text);
  return r.json;
}

function wsAction(c, id, action, ref = uid('ref')) {
  c.send({ type: 'notification_action', ref, data: { notification_id: id, action } });
  return c.waitFor((m) => m.ref === ref && (m.type === 'ok' || m.type === 'error'), 20000, `reply to ${action} ${ref}`);
}

function restAction(server, user, id, action, deviceId) {
  return server.http('POST', `/api/v1/notifications/${id}/actions`, {
    token: server.token(user), body: { action }, headers: deviceId ? { 'X-Device-ID': deviceId } : {}, timeoutMs: 20000,
  });
}

/* The next notification_sync of notification `id` on client `c`. */
function nextSync(c, id, timeoutMs = 10000) {
  return c.waitFor((m) => m.type === 'notification_sync' && m.data && m.data.notification_id === id, timeoutMs, `sync of ${id}`);
}

test('unread follows every change: welcome, new_notification, notification_sync, REST unread_count', async () => {
  const user = uid();
  assert.equal(await unreadCount(A, user), 0, 'a new user has 0');
  const a = await A.device(user, 'a');
  assert.equal(a.welcome.data.unread, 0, JSON.stringify(a.welcome.data));
  const n = [];
  for (let i = 0; i < 3; i += 1) {
    n.push((await post(A, user, { title: `u${i}` })).id);
    const m = await a.waitFor(isNew(n[i]), 10000, `new_notification ${i}`);
    assert.equal(m.data.unread, i + 1, `new_notification.data.unread after ${i + 1} posts: ${JSON.stringify(m.data)}`);
  }
  assert.equal(await unreadCount(A, user), 3);
  assert.equal(await unreadCount(B, user), 3, 'the same on the other instance');
  const b = await B.device(user, 'b');
  assert.equal(b.welcome.data.unread, 3, JSON.stringify(b.welcome.data));

  const steps = [
    [a, b, n[0], 'read', 2],
    [a, b, n[1], 'dismiss', 1],
    [b, a, n[0], 'unread', 2],
    [b, a, n[1], 'read', 2],     /* still dismissed: not counted */
    [a, b, n[1], 'unread', 2],   /* still dismissed */
    [a, b, n[0], 'dismiss', 1],
    [b, a, n[2], 'read', 0],
    [a, b, n[2], 'read', 0],     /* again: no change */
  ];
  for (const [from, to, id, action, want] of steps) {
    to.cursor = to.frames.length; /* the sync can only follow the action */
    const reply = await wsAction(from, id, action);
    assert.equal(reply.type, 'ok', JSON.stringify(reply));
    const s = await nextSync(to, id);
    assert.equal(s.data.unread, want, `${action} ${id}: sync ${JSON.stringify(s.data)}`);
    assert.equal(await unreadCount(A, user), want, `REST after ${action}`);
  }
  /* REST action: every device gets the sync with unread */
  for (const x of [a, b]) x.cursor = x.frames.length;
  const r = await restAction(A, user, n[2], 'unread');
  assert.equal(r.status, 200, r.text);
  for (const c of [a, b]) assert.equal((await nextSync(c, n[2])).data.unread, 1);
  assert.equal(await unreadCount(B, user), 1);
  assert.equal(await dbUnread(sharedDbUrl(), user), 1, 'the database agrees');
  const c = await A.device(user, 'c');
  assert.equal(c.welcome.data.unread, 1);
  for (const x of [a, b, c]) await x.close();
});

test('unread_count: needs a token (401), counts only the caller\'s notifications', async () => {
  const u1 = uid();
  const u2 = uid();
  for (let i = 0; i < 2; i += 1) await post(A, u1);
  assert.equal((await A.http('GET', '/api/v1/notifications/unread_count')).status, 401);
  assert.equal(await unreadCount(A, u1), 2);
  assert.equal(await unreadCount(A, u2), 0);
  const r = await A.http('POST', '/api/v1/notifications/unread_count', { token: A.token(u1), body: {} });
  assert.ok(r.status === 405 || r.status === 404, `POST unread_count: ${r.status}`);
});

test('expired notifications still count as unread (ttl 0 and a passed ttl)', async () => {
  const user = uid();
  await post(A, user, { ttl: 0 });
  await post(A, user, { ttl: 1 });
  await sleep(1500);
  assert.equal(await unreadCount(A, user), 2);
  const d = await A.device(user, 'd');
  assert.equal(d.welcome.data.unread, 2);
  await d.close();
});

test('scheduled and canceled notifications are not counted; a scheduled one counts once it is queued', async () => {
  const user = uid();
  const d = await A.device(user, 'd');
  await post(A, user, {});
  const later = await post(A, user, { deliver_at: iso(Date.now() + 2500) });
  assert.equal(later.status, 'scheduled');
  const never = await post(A, user, { deliver_at: iso(Date.now() + 2000) });
  assert.equal(await unreadCount(A, user), 1, 'scheduled ones are not unread');
  const x = await A.http('DELETE', `/api/v1/notifications/${never.id}`, { token: A.token(user) });
  assert.equal(x.status, 200, x.text);
  assert.equal(await unreadCount(A, user), 1, 'canceled ones are not unread');
  const d2 = await A.device(user, 'd2');
  assert.equal(d2.welcome.data.unread, 1);
  const m = await d.waitFor(isNew(later.id), 15000, 'the scheduled one');
  assert.equal(m.data.unread, 2, `new_notification of a scheduled one: ${JSON.stringify(m.data)}`);
  await sleep(2000); /* the canceled one's due time has passed too */
  assert.equal(await unreadCount(A, user), 2);
  assert.equal(await dbUnread(sharedDbUrl(), user), 2, 'the database agrees');
  for (const c of [d, d2]) await c.close();
});

test('a scheduled notification read before its due time is delivered read and never counted', async () => {
  const user = uid();
  const d = await A.device(user, 'd');
  await post(A, user, {});
  const later = await post(A, user, { deliver_at: iso(Date.now() + 2500) });
  const r = await restAction(A, user, later.id, 'read');
  assert.equal(r.status, 200, r.text);
  assert.equal(await unreadCount(A, user), 1);
  const m = await d.waitFor(isNew(later.id), 15000, 'the scheduled one');
  assert.equal(m.data.is_read, true, JSON.stringify(m.data));
  assert.equal(m.data.unread, 1, `read before delivery: not counted: ${JSON.stringify(m.data)}`);
  assert.equal(await unreadCount(B, user), 1);
  assert.equal(await dbUnread(sharedDbUrl(), user), 1);
  await d.close();
});

test('200 concurrent actions from 3 devices on 2 instances: REST unread = the database\'s count = the unread of the next change', { timeout: 240000 }, async () => {
  const user = uid('conc');
  const db = sharedDbUrl();
  const N = 40;
  const devs = [
    { name: 'd1', srv: A }, { name: 'd2', srv: A }, { name: 'd3', srv: B },
  ];
  for (const d of devs) d.c = await d.srv.device(user, d.name);
  const items = Array.from({ length: N }, (_, i) => ({ app_name: 'e2e', title: `c${i}`, body: 'x' }));
  const r = await postBatch(A, user, items);
  assert.equal(r.status, 201, r.text);
  const ids = r.json.notifications.map((n) => n.id);
  for (const d of devs) await d.c.waitFor(isNew(ids[N - 1]), 20000, `batch on ${d.name}`);
  const ACTIONS = ['read', 'unread', 'dismiss'];
  const results = [];
  const jobs = [];
  for (let k = 0; k < 200; k += 1) {
    const d = devs[k % 3];
    const id = ids[Math.floor(Math.random() * N)];
    const action = ACTIONS[Math.floor(Math.random() * 3)];
    if (k % 4 === 3) {
      const s = k % 8 === 3 ? A : B;
      jobs.push(restAction(s, user, id, action, d.name).then((x) => results.push({ k, via: 'rest', ok: x.status === 200, text: x.text })));
    } else {
      jobs.push(wsAction(d.c, id, action, `k${k}`).then((x) => results.push({ k, via: 'ws', ok: x.type === 'ok', text: JSON.stringify(x) })));
    }
  }
  await Promise.all(jobs);
  const bad = results.filter((x) => !x.ok);
  assert.deepEqual(bad, [], 'every action succeeded');
  for (const d of devs) await drainUntilIdle(d.c, { idleMs: 2000, maxMs: 60000 });

  const dbCount = await dbUnread(db, user);
  assert.equal(await unreadCount(A, user), dbCount, 'REST on A = database');
  assert.equal(await unreadCount(B, user), dbCount, 'REST on B = database');
  const lastSeen = {};
  for (const d of devs) {
    const syncs = durables(d.c, 'notification_sync');
    assert.ok(syncs.length > 0, `${d.name} got syncs`);
    for (const s of syncs) {
      assert.ok(Number.isInteger(s.data.unread) && s.data.unread >= 0 && s.data.unread <= N,
        `sync unread within 0…${N}: ${JSON.stringify(s.data)}`);
    }
    lastSeen[d.name] = syncs[syncs.length - 1].data.unread;
  }
  console.log(`UNREAD FIGURES ${JSON.stringify({ actions: 200, db: dbCount, last_sync_seen: lastSeen })}`);

  /* quiescent: each device in turn makes one change; the others see its unread = REST = database */
  for (const [i, d] of devs.entries()) {
    const id = ids[i];
    for (const o of devs) o.c.cursor = o.c.frames.length;
    const reply = await wsAction(d.c, id, 'read');
    assert.equal(reply.type, 'ok');
    const want = await dbUnread(db, user);
    assert.equal(await unreadCount(d.srv, user), want);
    for (const o of devs.filter((x) => x !== d)) {
      const s = await nextSync(o.c, id, 15000);
      await sleep(200);
      const later = durables(o.c, 'notification_sync');
      assert.equal(later[later.length - 1], s, `${o.name}: that sync is the last one`);
      assert.equal(s.data.unread, want, `${o.name} sees unread ${s.data.unread} after ${d.name}'s read; database ${want}`);
    }
  }
  const fresh = await B.device(user, 'd4');
  assert.equal(fresh.welcome.data.unread, await dbUnread(db, user), 'welcome.unread = database');
  for (const d of devs) await d.c.close();
  await fresh.close();
});
