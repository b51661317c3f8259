'use strict';
/*
 * notif_expiry.test.js -- SPEC §9 rule 2, expiry: an entry whose expires_at
 * (from ttl or expires_at) has passed is never delivered, neither in a
 * replay nor live; it is not counted in queue_overflow.missed; it is
 * counted in notisync_queue_dropped_total{reason="expired"}; GET shows it
 * with expired: true.  ttl 0: delivered live to the devices connected at
 * that moment, queued for none (an offline device, or a device in ack mode
 * that did not ack it, never gets it later).
 *
 * "Live" expiry: a connected device that stopped reading has a backlog of
 * large notifications in front of a short-lived one; when it reads again
 * after the expiry, the short-lived one must not arrive.
 *
 * welcome.queued is not asserted here (the server may count expired
 * entries it has not reached yet).
 */
const assert = require('node:assert/strict');
const {
  test, uid, sleep, until, newId, postNotification, durables, notifIds, metricSum, newServer, setup,
} = require('./lib/harness');
const { registerOffline, getOne } = require('./lib/notif');

const srv = newServer();
setup(() => srv.start());
/* room for a reader that stops reading: the kernel buffers fill, not ours */
const roomy = newServer({
  env: { NOTISYNC_MAX_OUTBOUND_BYTES: '64m', NOTISYNC_MAX_BODY_BYTES: '1m', NOTISYNC_MAX_DATA_BYTES: '128k' },
});
setup(() => roomy.start());

const QUIET_MS = 1500;
const ACK = { ack: '1' };
const isNew = (id) => (m) => m.type === 'new_notification' && m.data && m.data.id === id;
const expiredMetric = (s) => metricSum(s, 'notisync_queue_dropped_total', /reason="expired"/).then((v) => v || 0);

async function post(server, user, fields) {
  const r = await postNotification(server, user, fields);
  assert.equal(r.status, 201, r.text.slice(0, 300));
  return r.json;
}

test('replay: entries past expires_at (ttl and expires_at forms) are skipped, the rest in order; counted as expired, not as missed', async () => {
  const user = uid();
  await registerOffline(srv, user, 'D');
  const before = await expiredMetric(srv);
  const a = await post(srv, user, { title: 'a keeps' });
  const x = await post(srv, user, { title: 'x ttl 1', ttl: 1 });
  const b = await post(srv, user, { title: 'b ttl 3600', ttl: 3600 });
  const y = await post(srv, user, { title: 'y expires_at +1.5s', expires_at: new Date(Date.now() + 1500).toISOString() });
  const c = await post(srv, user, { title: 'c keeps' });
  assert.equal(x.expired, false, 'not yet expired at creation');
  await sleep(3000);
  for (const n of [x, y]) {
    const g = await getOne(srv, user, n.id);
    assert.equal(g.expired, true, `GET shows expired: ${JSON.stringify(g)}`);
    assert.equal(g.status, 'queued');
  }
  for (const n of [a, b, c]) assert.equal((await getOne(srv, user, n.id)).expired, false);
  const d = await srv.device(user, 'D');
  await d.waitFor(isNew(c.id), 10000, 'the last live-worthy one');
  await sleep(QUIET_MS);
  assert.deepEqual(notifIds(d), [a.id, b.id, c.id], `expired entries skipped: ${d.describe()}`);
  assert.ok(!d.messages().some((m) => m.type === 'queue_overflow'), `expiry is not counted as missed: ${d.describe()}`);
  await until(async () => (await expiredMetric(srv)) >= before + 2, { timeoutMs: 10000, what: 'expired metric +2' });
  await sleep(500);
  assert.equal(await expiredMetric(srv), before + 2, 'exactly the two expired entries counted');
  /* and they stay undelivered on the next connection */
  await d.close();
  const d2 = await srv.device(user, 'D');
  await sleep(QUIET_MS);
  assert.deepEqual(durables(d2), [], d2.describe());
  await d2.close();
});

test('a connected device gets a short-lived notification live, with its expires_at; GET turns expired after', async () => {
  const user = uid();
  const d = await srv.device(user, 'D');
  const n = await post(srv, user, { ttl: 2 });
  const m = await d.waitFor(isNew(n.id), 5000, 'live delivery before expiry');
  assert.equal(m.data.expired, false);
  assert.equal(Date.parse(m.data.expires_at), Date.parse(n.expires_at));
  await sleep(2500);
  assert.equal((await getOne(srv, user, n.id)).expired, true);
  await d.close();
});

test('ttl 0: delivered live to connected devices only; an offline device and a later device never get it; GET shows expired', async () => {
  const user = uid();
  await registerOffline(srv, user, 'off');
  const on1 = await srv.device(user, 'on1');
  const on2 = await srv.device(user, 'on2', { params: ACK });
  const z = await post(srv, user, { title: 'now or never', ttl: 0 });
  assert.ok(Math.abs(Date.parse(z.expires_at) - Date.parse(z.created_at)) <= 1000, JSON.stringify(z));
  const after = await post(srv, user, { title: 'ordinary' });
  for (const c of [on1, on2]) {
    await c.waitFor(isNew(after.id), 10000, `ordinary one on ${c.label}`);
    assert.deepEqual(notifIds(c), [z.id, after.id], `ttl 0 live on ${c.label}: ${c.describe()}`);
  }
  /* on2 (ack mode) did not ack: the ttl 0 one is never replayed, the other one is */
  await on2.close();
  const on2b = await srv.device(user, 'on2', { params: ACK });
  await on2b.waitFor(isNew(after.id), 10000, 'unacked ordinary one replayed');
  await sleep(QUIET_MS);
  assert.deepEqual(notifIds(on2b), [after.id], `ttl 0 is queued for none: ${on2b.describe()}`);
  const off = await srv.device(user, 'off');
  await off.waitFor(isNew(after.id), 10000, 'ordinary one on the offline device');
  await sleep(QUIET_MS);
  assert.deepEqual(notifIds(off), [after.id], `offline device never gets ttl 0: ${off.describe()}`);
  const late = await srv.device(user, 'late');
  await sleep(500);
  assert.deepEqual(durables(late), [], late.describe());
  const g = await getOne(srv, user, z.id);
  assert.equal(g.expired, true, JSON.stringify(g));
  assert.equal(g.status, 'queued');
  for (const c of [on1, on2b, off, late]) await c.close();
});

test('ttl 0 with nobody connected: stored, delivered to no one', async () => {
  const user = uid();
  await registerOffline(srv, user, 'A');
  await registerOffline(srv, user, 'B');
  const z = await post(srv, user, { ttl: 0 });
  const plain = await post(srv, user, {});
  for (const dev of ['A', 'B']) {
    const c = await srv.device(user, dev);
    await c.waitFor(isNew(plain.id), 10000, `plain on ${dev}`);
    await sleep(500);
    assert.deepEqual(notifIds(c), [plain.id], c.describe());
    await c.close();
  }
  const l = await srv.http('GET', '/api/v1/notifications', { token: srv.token(user) });
  assert.ok(l.json.notifications.some((n) => n.id === z.id && n.expired === true), l.text);
});

test('retry with the same id after expiry: 200 with the stored one (expired, same expires_at), not 400, not delivered again', async () => {
  const user = uid();
  const d = await srv.device(user, 'D');
  const byAt = { id: newId(), app_name: 'e2e', title: 'late retry at', body: 'x', expires_at: new Date(Date.now() + 1000).toISOString() };
  const byTtl = { id: newId(), app_name: 'e2e', title: 'late retry ttl', body: 'x', ttl: 1 };
  const first = {};
  for (const body of [byAt, byTtl]) {
    const r = await postNotification(srv, user, {}, { raw: body });
    assert.equal(r.status, 201, r.text);
    first[body.id] = r.json;
    await d.waitFor(isNew(body.id), 5000, `${body.title} live`);
  }
  await sleep(2000);
  for (const body of [byAt, byTtl]) {
    const r = await postNotification(srv, user, {}, { raw: body });
    assert.equal(r.status, 200, `${body.title}: ${r.text}`);
    assert.equal(r.json.id, body.id);
    assert.equal(r.json.expired, true, r.text);
    assert.equal(Date.parse(r.json.expires_at), Date.parse(first[body.id].expires_at), 'the stored expires_at, not re-anchored');
  }
  await sleep(QUIET_MS);
  assert.deepEqual(notifIds(d), [byAt.id, byTtl.id], `nothing delivered twice: ${d.describe()}`);
  await d.close();
});

test('ack mode: delivered live but not acked, then expired → not replayed', async () => {
  const user = uid();
  const c1 = await srv.device(user, 'D', { params: ACK });
  const n = await post(srv, user, { ttl: 1 });
  const keep = await post(srv, user, {});
  await c1.waitFor(isNew(keep.id), 5000, 'both live');
  await c1.close();
  await sleep(2000);
  const c2 = await srv.device(user, 'D', { params: ACK });
  await c2.waitFor(isNew(keep.id), 10000, 'the unacked non-expiring one');
  await sleep(QUIET_MS);
  assert.deepEqual(notifIds(c2), [keep.id], `expired entry replayed: ${c2.describe()}`);
  assert.ok(!notifIds(c2).includes(n.id));
  await c2.close();
});

test('live: a short-lived notification stuck behind a backlog of a connected, non-reading device is never delivered', { timeout: 180000 }, async () => {
  const user = uid();
  const d = await roomy.device(user, 'P');
  const before = await expiredMetric(roomy);
  d.ws._socket.pause(); /* stop reading: the kernel's buffers fill up */
  const big = { fill: 'b'.repeat(60000) }; /* data: body is bounded at 8 KiB */
  const backlog = [];
  const queuedNow = async () => {
    const r = await roomy.http('GET', '/api/v1/websocket/users/stats', { token: roomy.token(user) });
    const dev = r.json && r.json.devices && r.json.devices.find((x) => x.device_id === 'P');
    return dev ? dev.queued : 0;
  };
  for (let round = 0; round < 40; round += 1) {
    const batch = await Promise.all(Array.from({ length: 10 }, (_, i) =>
      postNotification(roomy, user, { title: `backlog ${round}.${i}`, data: big })));
    for (const r of batch) {
      assert.equal(r.status, 201, r.text.slice(0, 300));
      backlog.push(r.json.id);
    }
    if ((await queuedNow()) >= 20) break;
  }
  /* the server cannot write any more: at least 20 entries wait in the queue */
  await sleep(1000);
  const waiting = await queuedNow();
  assert.ok(waiting >= 20, `a backlog stays queued while the device does not read (${waiting} queued, ${backlog.length} posted)`);
  const x = await post(roomy, user, { title: 'short-lived', ttl: 1 });
  const y = await post(roomy, user, { title: 'long-lived' });
  await sleep(2500); /* x expires while still behind the backlog */
  d.ws._socket.resume();
  await d.waitFor(isNew(y.id), 60000, 'the long-lived one after the backlog');
  await sleep(QUIET_MS);
  const got = notifIds(d);
  assert.ok(!got.includes(x.id), `the expired entry was delivered live: position ${got.indexOf(x.id)} of ${got.length}`);
  assert.deepEqual(got.filter((id) => !backlog.includes(id)), [y.id], 'only the long-lived one besides the backlog');
  assert.deepEqual(got.filter((id) => backlog.includes(id)).sort(), [...backlog].sort(), 'the backlog, once');
  assert.ok(!d.messages().some((m) => m.type === 'queue_overflow'), 'no overflow');
  await until(async () => (await expiredMetric(roomy)) >= before + 1, { timeoutMs: 10000, what: 'expired metric +1' });
  assert.equal(await expiredMetric(roomy), before + 1);
  await d.close();
});
