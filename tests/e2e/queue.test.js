'use strict';
/*
 * queue.test.js -- SPEC §5.2-§5.4 the per-device durable queue: an offline
 * (registered) device gets what it missed on reconnect (welcome.queued,
 * then the queue oldest first, then live messages, nothing twice); the cap
 * (queue_max_messages=20: queue_overflow {missed} then the newest 20); the
 * age bound (queue_ttl=3s); ack mode (unacked messages are replayed on the
 * next connection, a cumulative ack stops that) and non-ack mode (what was
 * written to the socket is not replayed); DELETE of a device drops its
 * queue.
 */
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const {
  test, useServer, uid, sleep, newId, postNotification, durables, notifIds, autoAck,
  cmpStreamId, drainUntilIdle, metricSum, until, clusterMode, services, redisCli: harnessRedisCli,
} = require('./lib/harness');

const srv = useServer();
const capped = useServer({ env: { NOTISYNC_QUEUE_MAX_MESSAGES: '20' } });
const short = useServer({ env: { NOTISYNC_QUEUE_TTL: '3s' } });
/* room for a reader that stops reading: the kernel buffers fill, not ours */
const roomy = useServer({ env: { NOTISYNC_MAX_OUTBOUND_BYTES: '64m' } });

const QUIET_MS = 1500;
const ACK = { ack: '1' };

const isNew = (id) => (m) => m.type === 'new_notification' && m.data && m.data.id === id;

/* Connects and closes once: the device is registered (SPEC §5.7). */
async function register(server, user, device) {
  const c = await server.device(user, device);
  await c.close();
}

/* Posts `n` notifications one after another (each 201 before the next), so
 * that their queue order is their post order.  Returns their ids. */
async function postSeq(server, user, n, fields = {}) {
  const ids = [];
  for (let i = 0; i < n; i += 1) {
    const r = await postNotification(server, user, { title: `seq ${i}`, ...fields });
    assert.equal(r.status, 201, r.text);
    ids.push(r.json.id);
  }
  return ids;
}

/* Frames after the welcome, in order (parsed messages only). */
function afterWelcome(c) {
  const msgs = c.messages();
  const w = msgs.findIndex((m) => m.type === 'welcome');
  return msgs.slice(w + 1);
}

function assertIncreasing(msgs, what) {
  for (let i = 1; i < msgs.length; i += 1) {
    assert.equal(cmpStreamId(msgs[i - 1].id, msgs[i].id), -1,
      `${what}: delivery ids must increase: ${msgs[i - 1].id} then ${msgs[i].id}`);
  }
}

function assertNoDup(ids, what) {
  const seen = new Set();
  for (const id of ids) {
    assert.ok(!seen.has(id), `${what}: ${id} delivered twice in one connection`);
    seen.add(id);
  }
}

/* --------------------------------------------------------- offline + replay */

test('offline device: on reconnect welcome.queued = N, then the N queued messages oldest first', async () => {
  const user = uid();
  await register(srv, user, 'D');
  const ids = await postSeq(srv, user, 5);
  const d = await srv.device(user, 'D');
  assert.equal(d.welcome.data.queued, 5, `welcome.queued: ${JSON.stringify(d.welcome.data)}`);
  await d.waitFor(isNew(ids[4]), 10000, 'last queued message');
  const follow = afterWelcome(d);
  assert.deepEqual(follow.slice(0, 5).map((m) => m.type), Array(5).fill('new_notification'),
    `the queued messages come right after welcome: ${d.describe()}`);
  assert.deepEqual(follow.slice(0, 5).map((m) => m.data.id), ids, 'oldest first');
  assertIncreasing(follow.slice(0, 5), 'replay');
  assert.ok(!follow.some((m) => m.type === 'queue_overflow'), 'no overflow without drops');
  await sleep(QUIET_MS);
  assert.deepEqual(notifIds(d), ids, `nothing twice: ${d.describe()}`);
  /* live ones after the replay */
  const live = await postSeq(srv, user, 2);
  await d.waitFor(isNew(live[1]), 5000, 'live message after replay');
  assert.deepEqual(notifIds(d), [...ids, ...live]);
  await d.close();
  /* written in non-ack mode = delivered: nothing comes back */
  const again = await srv.device(user, 'D');
  assert.equal(again.welcome.data.queued, 0, JSON.stringify(again.welcome.data));
  await sleep(QUIET_MS);
  assert.deepEqual(durables(again), [], again.describe());
  await again.close();
});

test('reconnect while a producer keeps posting: queued first, live after, the exact post order, no duplicates', async () => {
  const user = uid();
  await register(srv, user, 'D');
  const before = await postSeq(srv, user, 40, { body: 'offline' });
  const after = [];
  let producing = true;
  const producer = (async () => {
    for (let i = 0; i < 15; i += 1) {
      const r = await postNotification(srv, user, { title: `live ${i}` });
      assert.equal(r.status, 201, r.text);
      after.push(r.json.id);
      await sleep(Math.floor(Math.random() * 20));
    }
    producing = false;
  })();
  const d = await srv.device(user, 'D');
  await producer;
  assert.ok(!producing);
  const all = [...before, ...after];
  await d.waitFor(isNew(all[all.length - 1]), 15000, 'the last live message');
  await sleep(500);
  const got = durables(d, 'new_notification');
  assertNoDup(got.map((m) => m.data.id), 'reconnect under load');
  assert.deepEqual(got.map((m) => m.data.id), all, 'queue order = post order, queued before live');
  assertIncreasing(got, 'reconnect under load');
  assert.ok(d.welcome.data.queued >= 40 && d.welcome.data.queued <= 55, `welcome.queued ${d.welcome.data.queued}`);
  await d.close();
});

test('each device has its own queue: an online device\'s deliveries do not consume an offline one\'s', async () => {
  const user = uid();
  const on = await srv.device(user, 'on');
  await register(srv, user, 'off');
  const ids = await postSeq(srv, user, 3);
  await on.waitFor(isNew(ids[2]), 5000, 'live on the online device');
  const off = await srv.device(user, 'off');
  assert.equal(off.welcome.data.queued, 3);
  await off.waitFor(isNew(ids[2]), 5000, 'replay on the offline device');
  assert.deepEqual(notifIds(off), ids);
  await on.close();
  const on2 = await srv.device(user, 'on');
  await sleep(QUIET_MS);
  assert.deepEqual(durables(on2), [], `the online device gets nothing twice: ${on2.describe()}`);
  for (const c of [off, on2]) await c.close();
});

test('a device that never connected is not a target; DELETE /api/v1/devices/{id} drops the queue', async () => {
  const user = uid();
  await register(srv, user, 'gone');
  await postSeq(srv, user, 2);
  const del = await srv.http('DELETE', '/api/v1/devices/gone', { token: srv.token(user) });
  assert.equal(del.status, 204, del.text);
  await postSeq(srv, user, 1);
  const c = await srv.device(user, 'gone');
  assert.equal(c.welcome.data.queued, 0, JSON.stringify(c.welcome.data));
  const fresh = await srv.device(user, 'brand-new');
  assert.equal(fresh.welcome.data.queued, 0, JSON.stringify(fresh.welcome.data));
  await sleep(QUIET_MS);
  assert.deepEqual(durables(c), [], `deleted device got its old queue: ${c.describe()}`);
  assert.deepEqual(durables(fresh), [], `unregistered device got earlier messages: ${fresh.describe()}`);
  for (const x of [c, fresh]) await x.close();
});

/* ----------------------------------------------------------------- ack mode */

test('ack mode: unacked messages are replayed on the next connection; a cumulative ack stops that', async () => {
  const user = uid();
  await register(srv, user, 'D');
  const ids = await postSeq(srv, user, 3);
  const c1 = await srv.device(user, 'D', { params: ACK });
  assert.equal(c1.welcome.data.queued, 3);
  await c1.waitFor(isNew(ids[2]), 5000, 'three queued');
  const first = durables(c1);
  await c1.close();
  /* not acked: all three again, same delivery ids */
  const c2 = await srv.device(user, 'D', { params: ACK });
  assert.equal(c2.welcome.data.queued, 3, JSON.stringify(c2.welcome.data));
  await c2.waitFor(isNew(ids[2]), 5000, 'replay of the unacked three');
  const second = durables(c2);
  assert.deepEqual(second.map((m) => m.data.id), ids);
  assert.deepEqual(second.map((m) => m.id), first.map((m) => m.id), 'same delivery ids on replay');
  /* ack the second one (cumulative: the first goes too); no reply to an ack */
  const mark = c2.frames.length;
  c2.send({ type: 'ack', data: { id: second[1].id } });
  const pong = await c2.ping('after-ack');
  assert.equal(pong.type, 'pong');
  const between = c2.frames.slice(mark).map((f) => f.msg).filter((m) => m && m.type !== 'pong' && m.type !== 'device_status');
  assert.deepEqual(between, [], 'an ack gets no reply');
  await sleep(300);
  await c2.close();
  const c3 = await srv.device(user, 'D', { params: ACK });
  assert.equal(c3.welcome.data.queued, 1, JSON.stringify(c3.welcome.data));
  await c3.waitFor(isNew(ids[2]), 5000, 'the unacked third');
  await sleep(QUIET_MS);
  assert.deepEqual(notifIds(c3), [ids[2]], `only the unacked one: ${c3.describe()}`);
  c3.send({ type: 'ack', data: { id: durables(c3)[0].id } });
  await c3.ping();
  await sleep(300);
  await c3.close();
  const c4 = await srv.device(user, 'D', { params: ACK });
  assert.equal(c4.welcome.data.queued, 0);
  await sleep(QUIET_MS);
  assert.deepEqual(durables(c4), [], c4.describe());
  await c4.close();
});

test('ack mode: live messages acked as they arrive are not replayed; nothing twice within a connection', async () => {
  const user = uid();
  const c1 = await srv.device(user, 'D', { params: ACK });
  autoAck(c1);
  const ids = await postSeq(srv, user, 10);
  await c1.waitFor(isNew(ids[9]), 5000, 'ten live');
  await c1.ping();
  await sleep(300);
  assert.deepEqual(notifIds(c1), ids);
  await c1.close();
  const c2 = await srv.device(user, 'D', { params: ACK });
  assert.equal(c2.welcome.data.queued, 0);
  await sleep(QUIET_MS);
  assert.deepEqual(durables(c2), [], c2.describe());
  await c2.close();
});

test('ack mode: an abrupt disconnect (TCP reset) before acking → replayed; then a non-ack connection takes them once', async () => {
  const user = uid();
  await register(srv, user, 'D');
  const c1 = await srv.device(user, 'D', { params: ACK });
  const ids = await postSeq(srv, user, 4);
  await c1.waitFor(isNew(ids[3]), 5000, 'four live');
  c1.terminate();
  await sleep(300);
  const c2 = await srv.device(user, 'D');
  assert.equal(c2.welcome.data.queued, 4);
  await c2.waitFor(isNew(ids[3]), 5000, 'replay after the reset');
  assert.deepEqual(notifIds(c2), ids);
  await c2.close();
  const c3 = await srv.device(user, 'D');
  await sleep(QUIET_MS);
  assert.deepEqual(durables(c3), [], `written in non-ack mode = delivered: ${c3.describe()}`);
  await c3.close();
});

test('malformed ack → error bad_message, the connection stays open', async () => {
  const c = await srv.device(uid(), 'D', { params: ACK });
  for (const [i, data] of [{}, { id: 42 }, { id: null }].entries()) {
    c.send({ type: 'ack', ref: `bad${i}`, data });
    const e = await c.waitFor((m) => m.type === 'error' && m.ref === `bad${i}`, 5000, `error for ${JSON.stringify(data)}`);
    assert.equal(e.data.code, 'bad_message', JSON.stringify(e));
  }
  c.send({ type: 'ack', ref: 'nodata' });
  const e = await c.waitFor((m) => m.type === 'error' && m.ref === 'nodata', 5000, 'error for an ack without data');
  assert.equal(e.data.code, 'bad_message');
  assert.equal((await c.ping()).type, 'pong');
  await c.close();
});

test('non-ack mode: what was written to the socket is not replayed (graceful close)', async () => {
  const user = uid();
  const c1 = await srv.device(user, 'D');
  const ids = await postSeq(srv, user, 6);
  await c1.waitFor(isNew(ids[5]), 5000, 'six live');
  await c1.close();
  const c2 = await srv.device(user, 'D');
  assert.equal(c2.welcome.data.queued, 0, JSON.stringify(c2.welcome.data));
  await sleep(QUIET_MS);
  assert.deepEqual(durables(c2), [], c2.describe());
  await c2.close();
});

/* ---------------------------------------------------------------------- cap */

test('cap queue_max_messages=20: 30 posted offline → queue_overflow {missed:10}, then the newest 20 in order', async () => {
  const user = uid();
  const droppedBefore = (await metricSum(capped, 'notisync_queue_dropped_total', /reason="cap"/)) || 0;
  await register(capped, user, 'D');
  const ids = await postSeq(capped, user, 30);
  const d = await capped.device(user, 'D');
  assert.equal(d.welcome.data.queued, 20, `welcome.queued: ${JSON.stringify(d.welcome.data)}`);
  await d.waitFor(isNew(ids[29]), 10000, 'newest message');
  await sleep(500);
  /* comment events are broadcast to every device: another file running at
   * the same time on the same Redis may post some (not this test's subject) */
  const follow = afterWelcome(d).filter((m) => m.type !== 'device_status' && !m.type.startsWith('comment'));
  assert.equal(follow[0].type, 'queue_overflow', `queue_overflow first after welcome: ${d.describe()}`);
  assert.deepEqual(follow[0].data, { missed: 10 });
  assert.equal(await metricSum(capped, 'notisync_queue_dropped_total', /reason="cap"/), droppedBefore + 10,
    'the metric counts the 10 messages lost to the cap');
  assert.deepEqual(follow.slice(1).map((m) => m.type), Array(20).fill('new_notification'), d.describe());
  assert.deepEqual(follow.slice(1).map((m) => m.data.id), ids.slice(10), 'the newest 20, oldest first');
  assertIncreasing(follow.slice(1), 'capped replay');
  await d.close();
  /* the loss is reported once; PostgreSQL still has all 30 for a resync */
  const again = await capped.device(user, 'D');
  await sleep(QUIET_MS);
  assert.deepEqual(afterWelcome(again).filter((m) => m.type !== 'device_status' && !m.type.startsWith('comment')), [],
    again.describe());
  const all = await capped.http('GET', '/api/v1/notifications?limit=50', { token: capped.token(user) });
  assert.equal(all.status, 200, all.text);
  assert.equal(all.json.notifications.length, 30);
  await again.close();
});

test('cap: a device that falls behind while others read stays capped; an online device is unaffected', async () => {
  const user = uid();
  await register(capped, user, 'slow');
  const on = await capped.device(user, 'on');
  const ids = await postSeq(capped, user, 25);
  await on.waitFor(isNew(ids[24]), 10000, 'all 25 on the online device');
  assert.deepEqual(notifIds(on), ids);
  assert.ok(!on.messages().some((m) => m.type === 'queue_overflow'));
  const slow = await capped.device(user, 'slow');
  const ov = await slow.next('queue_overflow', 5000);
  assert.equal(ov.data.missed, 5);
  await slow.waitFor(isNew(ids[24]), 10000, 'newest on the slow device');
  assert.deepEqual(notifIds(slow), ids.slice(5));
  for (const c of [on, slow]) await c.close();
});

/* ---------------------------------------------------------------------- TTL */

test('ttl 3s: messages older than queue_ttl are never delivered; fresh ones are', async () => {
  const user = uid();
  await register(short, user, 'D');
  const old = await postSeq(short, user, 3);
  await sleep(4500);
  const d = await short.device(user, 'D');
  assert.equal(d.welcome.data.queued, 0, `welcome.queued counts only what follows: ${JSON.stringify(d.welcome.data)}`);
  await sleep(2000);
  const got = notifIds(d);
  assert.deepEqual(got.filter((id) => old.includes(id)), [], `expired messages delivered: ${d.describe()}`);
  const ov = d.messages().filter((m) => m.type === 'queue_overflow');
  assert.ok(ov.length <= 1, d.describe());
  if (ov.length) assert.ok(ov[0].data.missed >= 1 && ov[0].data.missed <= 3, JSON.stringify(ov[0]));
  /* live still works */
  const live = await postSeq(short, user, 1);
  await d.waitFor(isNew(live[0]), 5000, 'live after expiry');
  await d.close();
  /* a fresh offline message inside the TTL is delivered */
  const fresh = await postSeq(short, user, 1);
  const d2 = await short.device(user, 'D');
  await d2.waitFor(isNew(fresh[0]), 5000, 'fresh queued message');
  assert.deepEqual(notifIds(d2), fresh);
  await d2.close();
});

test('ttl 3s: of a mixed queue only the young messages are replayed, after queue_overflow {missed: 2}', async () => {
  const user = uid();
  const agedBefore = (await metricSum(short, 'notisync_queue_dropped_total', /reason="age"/)) || 0;
  await register(short, user, 'D');
  const old = await postSeq(short, user, 2, { title: 'old' });
  await sleep(2500);
  const young = await postSeq(short, user, 2, { title: 'young' });
  await sleep(1500); /* the old ones are now past 3 s; the key (EXPIRE 3 s from the young) lives */
  const d = await short.device(user, 'D');
  await d.waitFor(isNew(young[1]), 5000, 'young messages');
  await sleep(1000);
  assert.deepEqual(notifIds(d), young, `only the young ones (old: ${old.join(',')}): ${d.describe()}`);
  assert.equal(d.welcome.data.queued, 2);
  /* comment events are broadcast to every device: another file running at
   * the same time on the same Redis may post some (not this test's subject) */
  const follow = afterWelcome(d).filter((m) => m.type !== 'device_status' && !m.type.startsWith('comment'));
  assert.equal(follow[0].type, 'queue_overflow', d.describe());
  assert.deepEqual(follow[0].data, { missed: 2 }, 'the two lost to age are counted');
  assert.equal(await metricSum(short, 'notisync_queue_dropped_total', /reason="age"/), agedBefore + 2);
  await d.close();
});

test('ack mode + ttl: an unacked message is not replayed once older than queue_ttl', async () => {
  const user = uid();
  const c1 = await short.device(user, 'D', { params: ACK });
  const ids = await postSeq(short, user, 2);
  await c1.waitFor(isNew(ids[1]), 5000, 'two live');
  await c1.close();
  await sleep(4500);
  const c2 = await short.device(user, 'D', { params: ACK });
  await drainUntilIdle(c2, { idleMs: 1500, maxMs: 5000 });
  assert.deepEqual(notifIds(c2), [], c2.describe());
  await c2.close();
});

test('cap in ack mode: written but unacked messages beyond the cap are dropped oldest first; replay = the newest 20', async () => {
  /* All 25 were written to the connection but none was acked, so in ack
   * mode none was delivered (SPEC §5.4).  Whether the 5 dropped ones count
   * as "missed" is left open (the device did see them); if a
   * queue_overflow is sent it must come first and say 5. */
  const user = uid();
  const c1 = await capped.device(user, 'D', { params: ACK });
  const ids = await postSeq(capped, user, 25);
  await c1.waitFor(isNew(ids[24]), 10000, 'all 25 live');
  await c1.close();
  const c2 = await capped.device(user, 'D', { params: ACK });
  await c2.waitFor(isNew(ids[24]), 10000, 'replay');
  await sleep(300);
  /* comment events reach every device: another file may post some meanwhile */
  const follow = afterWelcome(c2).filter((m) => m.type !== 'device_status' && !m.type.startsWith('comment'));
  assert.equal(c2.welcome.data.queued, 20);
  assert.deepEqual(follow.slice(-20).map((m) => m.data && m.data.id), ids.slice(5));
  const ov = follow.filter((m) => m.type === 'queue_overflow');
  assert.ok(ov.length <= 1);
  if (ov.length) {
    assert.equal(follow[0].type, 'queue_overflow', 'queue_overflow before the replay');
    assert.equal(ov[0].data.missed, 5);
  }
  await c2.close();
});

test('a client-supplied id posted twice while the device is offline is queued once', async () => {
  const user = uid();
  await register(srv, user, 'D');
  const id = newId();
  assert.equal((await postNotification(srv, user, { id })).status, 201);
  assert.equal((await postNotification(srv, user, { id })).status, 200);
  const d = await srv.device(user, 'D');
  assert.equal(d.welcome.data.queued, 1);
  await d.waitFor(isNew(id), 5000, 'the one');
  await sleep(QUIET_MS);
  assert.deepEqual(notifIds(d), [id]);
  await d.close();
});

test('user "X:a" device "b" and user "X" device "a:b" have separate queues (no key collision)', async () => {
  const base = uid();
  const userA = `${base}:a`; /* device "b" */
  const userB = base;        /* device "a:b" */
  await register(srv, userA, 'b');
  await register(srv, userB, 'a:b');
  const idsA = await postSeq(srv, userA, 3);
  const idsB = await postSeq(srv, userB, 2);
  const a = await srv.device(userA, 'b');
  const b = await srv.device(userB, 'a:b');
  assert.equal(a.welcome.data.queued, 3, JSON.stringify(a.welcome.data));
  assert.equal(b.welcome.data.queued, 2, JSON.stringify(b.welcome.data));
  await a.waitFor(isNew(idsA[2]), 10000, `${userA}'s last message`);
  await b.waitFor(isNew(idsB[1]), 10000, `${userB}'s last message`);
  await sleep(QUIET_MS);
  assert.deepEqual(notifIds(a), idsA, a.describe());
  assert.deepEqual(notifIds(b), idsB, b.describe());
  await a.close();
  await b.close();
});

/* ------------------------------------------------------ partial writes */

/* One redis-cli command on the shared Redis; resolves its --raw output. */
function redisCli(...args) {
  /* cluster variant (issue 13): sent to the master of the key's slot */
  if (clusterMode()) return harnessRedisCli(services().NOTISYNC_REDIS_URL, ...args);
  const env = JSON.parse(fs.readFileSync(path.join(process.env.NS_SVC_DIR, 'env.json'), 'utf8'));
  return new Promise((resolve, reject) => {
    execFile('redis-cli', ['-u', env.NOTISYNC_REDIS_URL, '--raw', ...args], { timeout: 5000 }, (err, out) => {
      if (err) reject(err);
      else resolve(out.trim());
    });
  });
}

/* Polls `fn` until it returns the same value for `stableMs`; that value. */
async function settled(fn, stableMs, what) {
  let last = await fn();
  let since = Date.now();
  const deadline = Date.now() + 60000;
  while (Date.now() - since < stableMs) {
    if (Date.now() > deadline) throw new Error(`${what} did not settle`);
    await sleep(200);
    const v = await fn();
    if (v !== last) {
      last = v;
      since = Date.now();
    }
  }
  return last;
}

test('non-ack: a frame the kernel took only part of stays queued until it is wholly sent (SPEC §5.4)', async () => {
  const user = uid();
  const key = `q:{${user}}:P`;
  const d = await roomy.device(user, 'P');
  const sentNow = async () => (await metricSum(roomy, 'notisync_messages_sent_total', /type="new_notification"/)) || 0;
  const sent0 = await sentNow();
  d.ws._socket.pause(); /* stop reading: the kernel's buffers fill up */
  const big = 'b'.repeat(8000);
  const ids = [];
  /* post until the server has had to stop writing: a few MB of frames */
  for (let round = 0; round < 60; round += 1) {
    const batch = await Promise.all(Array.from({ length: 25 }, (_, i) =>
      postNotification(roomy, user, { title: `partial ${round}.${i}`, body: big })));
    for (const r of batch) {
      assert.equal(r.status, 201, r.text);
      ids.push(r.json.id);
    }
    if (Number(await redisCli('XLEN', key)) >= 50) break;
  }
  const written = await settled(async () => (await sentNow()) - sent0, 1500, 'frames written');
  const left = Number(await settled(() => redisCli('XLEN', key), 1500, 'queue length'));
  assert.ok(left >= 2, `the writes stalled with messages still queued (${left} left, ${ids.length} posted)`);
  /* Each frame that went wholly into the kernel is delivered and trimmed;
   * the last one written went in only partly (lws holds the rest), so it
   * is still queued: a socket dying now would get it replayed. */
  assert.equal(left, ids.length - written + 1,
    `posted ${ids.length}, written ${written}: the partly sent frame must still be queued`);

  d.ws._socket.resume();
  await until(() => notifIds(d).length >= ids.length,
    { timeoutMs: 60000, what: `all ${ids.length} messages read` });
  assert.deepEqual([...notifIds(d)].sort(), [...ids].sort(), 'everything, once');
  assertIncreasing(durables(d), 'queue order');
  await until(async () => Number(await redisCli('XLEN', key)) === 0,
    { timeoutMs: 10000, what: 'the queue trimmed once everything is written' });
  await d.close();
});
