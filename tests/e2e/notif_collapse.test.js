'use strict';
/*
 * notif_collapse.test.js -- SPEC §9 rule 1, collapse_key: when a
 * notification with key K is queued for a device whose queue still holds an
 * undelivered entry with key K, the older entry leaves the queue.  A device
 * that comes online gets only the newest of each key (keyless ones all, in
 * queue order); a connected device sees every one live; collapsed entries
 * count neither in welcome.queued nor in queue_overflow.missed; PostgreSQL
 * keeps every notification.
 *
 * The main case has three devices of one user: ON (online throughout) sees
 * every notification; OFF (offline throughout) sees exactly the newest per
 * key; MID reconnects in the middle of the sequence and sees each key's
 * newest exactly once, nothing twice, at most one of each key from before
 * its connect, and every notification posted after its welcome.  A second
 * variant does the same with batches: MID's connect starts at a random
 * point while a 150-item batch is in flight (COLLAPSE BATCH FIGURES shows
 * on which side of it the connect fell).
 */
const assert = require('node:assert/strict');
const {
  test, newServer, setup, uid, sleep, until, postNotification, postBatch, durables, notifIds, drainUntilIdle,
  metricSum, autoAck,
} = require('./lib/harness');
const { waitOffline, registerOffline } = require('./lib/notif');

const srv = newServer();
setup(() => srv.start());
const capped = newServer({ env: { NOTISYNC_QUEUE_MAX_MESSAGES: '5' } });
setup(() => capped.start());
/* a second instance on srv's Redis and PostgreSQL and secret */
const other = newServer({ secret: srv.secret });
setup(() => other.start());

const QUIET_MS = 1500;
const ACK = { ack: '1' };
const isNew = (id) => (m) => m.type === 'new_notification' && m.data && m.data.id === id;

/* Connects and closes once (the device is registered), then waits until the
 * server shows it offline: from then on it is "not connected" (collapse). */

/* Posts one notification (201 before returning); `key` null = no collapse_key. */
async function post(server, user, key, title) {
  const fields = { title };
  if (key !== null) fields.collapse_key = key;
  const r = await postNotification(server, user, fields);
  assert.equal(r.status, 201, r.text);
  return r.json.id;
}

/* From a sequence [{id, key}] in queue order: what an offline device must
 * get -- every keyless one and, of each key, the newest -- in order. */
function collapsed(seq) {
  const last = new Map();
  seq.forEach((p, i) => {
    if (p.key !== null) last.set(p.key, i);
  });
  return seq.filter((p, i) => p.key === null || last.get(p.key) === i).map((p) => p.id);
}

function afterWelcome(c) {
  const msgs = c.messages();
  return msgs.slice(msgs.findIndex((m) => m.type === 'welcome') + 1);
}

test('offline device gets only the newest of each key (keyless ones all), welcome.queued counts only those; an online device sees all', async () => {
  const user = uid();
  await registerOffline(srv, user, 'off');
  const on = await srv.device(user, 'on');
  const seq = [];
  for (const [key, title] of [['K1', 'a'], ['K1', 'b'], ['K2', 'c'], [null, 'd'], ['K1', 'e'], [null, 'f'], ['K2', 'g']]) {
    seq.push({ id: await post(srv, user, key, title), key });
  }
  const all = seq.map((p) => p.id);
  await on.waitFor(isNew(all[all.length - 1]), 10000, 'the last one live');
  assert.deepEqual(notifIds(on), all, 'the online device sees every one, in order');
  const want = collapsed(seq); /* d, e, f, g */
  assert.equal(want.length, 4);
  const off = await srv.device(user, 'off');
  assert.equal(off.welcome.data.queued, want.length, `welcome.queued: ${JSON.stringify(off.welcome.data)}`);
  await off.waitFor(isNew(want[want.length - 1]), 10000, 'the newest');
  await sleep(QUIET_MS);
  assert.deepEqual(notifIds(off), want, off.describe());
  assert.ok(!off.messages().some((m) => m.type === 'queue_overflow'), `collapse is not overflow: ${off.describe()}`);
  /* the collapsed ones stay in PostgreSQL */
  const l = await srv.http('GET', '/api/v1/notifications?limit=50', { token: srv.token(user) });
  assert.equal(l.status, 200, l.text);
  assert.deepEqual(l.json.notifications.map((n) => n.id).sort(), [...all].sort());
  for (const n of l.json.notifications) {
    assert.equal(n.collapse_key, seq.find((p) => p.id === n.id).key, JSON.stringify(n));
  }
  for (const c of [on, off]) await c.close();
});

test('three devices: ON sees all, OFF only the newest per key, MID (reconnecting mid-sequence) each newest once and nothing twice', { timeout: 180000 }, async () => {
  const user = uid('tri');
  await registerOffline(srv, user, 'OFF');
  await registerOffline(srv, user, 'MID');
  const on = await srv.device(user, 'ON');
  const KEYS = ['a', 'b', 'c', null, 'a', 'b', 'solo', 'a', null, 'c'];
  const N = 60;
  const MID_AT = 25;
  const seq = [];
  let mid = null;
  let midConnect = null;
  let midWelcomeAt = null;   /* seq.length when MID's welcome had arrived */
  let preConnect = 0;        /* seq.length when MID's connect began */
  for (let i = 0; i < N; i += 1) {
    if (i === MID_AT) {
      preConnect = seq.length;
      midConnect = srv.device(user, 'MID').then((c) => {
        mid = c;
        midWelcomeAt = seq.length;
        return c;
      });
    }
    const key = i === N - 5 ? 'solo2' : KEYS[i % KEYS.length];
    seq.push({ id: await post(srv, user, key, `tri ${i}`), key });
    await sleep(5 + Math.floor(Math.random() * 15));
  }
  await midConnect;
  assert.ok(midWelcomeAt !== null && midWelcomeAt < N, `MID connected during the sequence (welcome at post ${midWelcomeAt})`);
  const all = seq.map((p) => p.id);
  const index = new Map(all.map((id, i) => [id, i]));
  const keyOf = new Map(seq.map((p) => [p.id, p.key]));

  /* ON: every one, in order */
  await on.waitFor(isNew(all[N - 1]), 15000, 'the last one on ON');
  await sleep(300);
  assert.deepEqual(notifIds(on), all, 'ON sees every notification once, in order');

  /* MID */
  await mid.waitFor(isNew(all[N - 1]), 15000, 'the last one on MID');
  await drainUntilIdle(mid, { idleMs: QUIET_MS, maxMs: 20000 });
  const got = notifIds(mid);
  const twice = got.filter((id, i) => got.indexOf(id) !== i);
  assert.deepEqual(twice, [], `MID: nothing twice: ${mid.describe()}`);
  const order = got.map((id) => index.get(id));
  assert.ok(order.every((x) => x !== undefined), 'MID gets only notifications of this sequence');
  assert.ok(order.every((x, i) => i === 0 || x > order[i - 1]), `MID: post order: ${JSON.stringify(order)}`);
  for (const key of new Set(seq.map((p) => p.key).filter((k) => k !== null))) {
    const newest = [...seq].reverse().find((p) => p.key === key).id;
    assert.equal(got.filter((id) => id === newest).length, 1, `MID gets the newest of ${key} exactly once`);
    const pre = got.filter((id) => keyOf.get(id) === key && index.get(id) < preConnect);
    assert.ok(pre.length <= 1, `MID: at most one of key ${key} from before its connect: ${JSON.stringify(pre.map((id) => index.get(id)))}`);
  }
  for (const p of seq) {
    if (p.key === null) assert.ok(got.includes(p.id), `MID gets keyless #${index.get(p.id)}`);
  }
  for (let i = midWelcomeAt; i < N; i += 1) {
    assert.ok(got.includes(all[i]), `MID was connected: it gets #${i} (posted after its welcome) live`);
  }
  assert.ok(mid.welcome.data.queued <= got.length, `MID welcome.queued ${mid.welcome.data.queued} ≤ received ${got.length}`);
  assert.ok(!mid.messages().some((m) => m.type === 'queue_overflow'), mid.describe());

  /* OFF: exactly the newest per key and every keyless one */
  const want = collapsed(seq);
  const off = await srv.device(user, 'OFF');
  assert.equal(off.welcome.data.queued, want.length, `OFF welcome.queued: ${JSON.stringify(off.welcome.data)}`);
  await off.waitFor(isNew(want[want.length - 1]), 15000, 'the last one on OFF');
  await sleep(QUIET_MS);
  assert.deepEqual(notifIds(off), want, `OFF: ${JSON.stringify(notifIds(off).map((id) => index.get(id)))}`);
  assert.ok(!off.messages().some((m) => m.type === 'queue_overflow'), off.describe());
  console.log(`COLLAPSE FIGURES ${JSON.stringify({
    posted: N, on: notifIds(on).length, mid: got.length, mid_queued: mid.welcome.data.queued, mid_connect_at: preConnect,
    mid_welcome_at: midWelcomeAt, off: notifIds(off).length, off_expected: want.length,
  })}`);
  for (const c of [on, mid, off]) await c.close();
});

test('three devices, batches: MID connects while a 150-item batch is being queued; ON all, OFF newest per key, MID each newest once', { timeout: 180000 }, async () => {
  const user = uid('trib');
  await registerOffline(srv, user, 'OFF');
  await registerOffline(srv, user, 'MID');
  const on = await srv.device(user, 'ON');
  const KEYS = ['a', 'b', null, 'c', 'a', 'd', 'b', null, 'a'];
  let n = 0;
  const items = (count) => Array.from({ length: count }, () => {
    const key = KEYS[n % KEYS.length];
    const it = { app_name: 'e2e', title: `b${n}`, body: 'x' };
    if (key !== null) it.collapse_key = key;
    n += 1;
    return it;
  });
  const seq = [];
  const postItems = async (list) => {
    const r = await postBatch(srv, user, list, { timeoutMs: 60000 });
    assert.equal(r.status, 201, r.text.slice(0, 300));
    return r.json.notifications.map((x, i) => ({ id: x.id, key: list[i].collapse_key || null }));
  };
  const t1 = Date.now();
  seq.push(...await postItems(items(100)));
  const batchMs = Date.now() - t1;
  const preConnect = seq.length;
  const b2 = items(150);
  /* the connect starts while batch 2 is in flight (a random point of its expected time) */
  const delay = Math.floor(Math.random() * batchMs);
  const [second, mid] = await Promise.all([postItems(b2), sleep(delay).then(() => srv.device(user, 'MID'))]);
  seq.push(...second);
  const afterWelcome = seq.length;
  seq.push(...await postItems(items(50)));
  const all = seq.map((p) => p.id);
  const index = new Map(all.map((id, i) => [id, i]));
  const keyOf = new Map(seq.map((p) => [p.id, p.key]));

  await on.waitFor(isNew(all[all.length - 1]), 30000, 'the last one on ON');
  await sleep(300);
  assert.deepEqual(notifIds(on), all, 'ON sees every notification once, in order');

  await mid.waitFor(isNew(all[all.length - 1]), 30000, 'the last one on MID');
  await drainUntilIdle(mid, { idleMs: QUIET_MS, maxMs: 20000 });
  const got = notifIds(mid);
  assert.deepEqual(got.filter((id, i) => got.indexOf(id) !== i), [], 'MID: nothing twice');
  const order = got.map((id) => index.get(id));
  assert.ok(order.every((x, i) => x !== undefined && (i === 0 || x > order[i - 1])), `MID: post order: ${JSON.stringify(order)}`);
  for (const key of new Set(seq.map((p) => p.key).filter((k) => k !== null))) {
    const newest = [...seq].reverse().find((p) => p.key === key).id;
    assert.equal(got.filter((id) => id === newest).length, 1, `MID gets the newest of ${key} exactly once`);
    const pre = got.filter((id) => keyOf.get(id) === key && index.get(id) < preConnect);
    assert.ok(pre.length <= 1, `MID: at most one of key ${key} from the batch before its connect: ${JSON.stringify(pre.map((id) => index.get(id)))}`);
  }
  for (const p of seq) if (p.key === null) assert.ok(got.includes(p.id), `MID gets keyless #${index.get(p.id)}`);
  for (let i = afterWelcome; i < all.length; i += 1) assert.ok(got.includes(all[i]), `MID gets #${i} (posted after its welcome)`);
  assert.ok(!mid.messages().some((m) => m.type === 'queue_overflow'), mid.describe());

  const want = collapsed(seq);
  const off = await srv.device(user, 'OFF');
  assert.equal(off.welcome.data.queued, want.length, `OFF welcome.queued: ${JSON.stringify(off.welcome.data)}`);
  await off.waitFor(isNew(want[want.length - 1]), 15000, 'the last one on OFF');
  await sleep(QUIET_MS);
  assert.deepEqual(notifIds(off), want);
  console.log(`COLLAPSE BATCH FIGURES ${JSON.stringify({ posted: all.length, batch_ms: batchMs, connect_delay_ms: delay, mid: got.length, mid_queued: mid.welcome.data.queued, off: want.length })}`);
  for (const c of [on, mid, off]) await c.close();
});

test('collapsed entries count neither in queue_overflow.missed nor against the cap (queue_max_messages=5, 12 posted, 3 left)', async () => {
  const user = uid();
  const capBefore = (await metricSum(capped, 'notisync_queue_dropped_total', /reason="cap"/)) || 0;
  await registerOffline(capped, user, 'D');
  const seq = [];
  const keys = ['K', 'K', 'K', null, 'K', 'K', 'K', 'K', null, 'K', 'K', 'K'];
  for (const [i, key] of keys.entries()) seq.push({ id: await post(capped, user, key, `cap ${i}`), key });
  const want = collapsed(seq);
  assert.equal(want.length, 3);
  const d = await capped.device(user, 'D');
  assert.equal(d.welcome.data.queued, 3, JSON.stringify(d.welcome.data));
  await d.waitFor(isNew(want[2]), 10000, 'the newest K');
  await sleep(QUIET_MS);
  /* comment events reach every device: another file may post some meanwhile */
  const follow = afterWelcome(d).filter((m) => m.type !== 'device_status' && !m.type.startsWith('comment'));
  assert.deepEqual(follow.map((m) => m.type), ['new_notification', 'new_notification', 'new_notification'],
    `no queue_overflow, three messages: ${d.describe()}`);
  assert.deepEqual(follow.map((m) => m.data.id), want);
  assert.equal((await metricSum(capped, 'notisync_queue_dropped_total', /reason="cap"/)) || 0, capBefore,
    'nothing dropped by the cap');
  await d.close();
});

test('collapse is per device and per user: another user with the same key, and a device that connected in between, keep theirs', async () => {
  const u1 = uid();
  const u2 = uid();
  await registerOffline(srv, u1, 'D');
  await registerOffline(srv, u2, 'D');
  const a1 = await post(srv, u1, 'same', 'u1 first');
  const b1 = await post(srv, u2, 'same', 'u2 only');
  /* u1/E registers after a1: it never had a1, it gets a2 */
  await registerOffline(srv, u1, 'E');
  const a2 = await post(srv, u1, 'same', 'u1 second');
  const d1 = await srv.device(u1, 'D');
  const d2 = await srv.device(u2, 'D');
  const e1 = await srv.device(u1, 'E');
  await sleep(QUIET_MS);
  assert.deepEqual(notifIds(d1), [a2], d1.describe());
  assert.deepEqual(notifIds(d2), [b1], `u2's queue untouched by u1's key: ${d2.describe()}`);
  assert.deepEqual(notifIds(e1), [a2], e1.describe());
  for (const c of [d1, d2, e1]) await c.close();
});

test('posted on another instance: collapse happens in the shared queue; a device on the first instance gets the newest only', async () => {
  const user = uid();
  await registerOffline(srv, user, 'D');
  const on = await other.device(user, 'live');
  const ids = [];
  for (let i = 0; i < 4; i += 1) ids.push(await post(other, user, 'x', `x${i}`));
  const last = await post(srv, user, null, 'plain');
  await on.waitFor(isNew(last), 10000, 'all live on the other instance');
  assert.deepEqual(notifIds(on), [...ids, last]);
  const d = await srv.device(user, 'D');
  assert.equal(d.welcome.data.queued, 2, JSON.stringify(d.welcome.data));
  await d.waitFor(isNew(last), 10000, 'the keyless one');
  await sleep(QUIET_MS);
  assert.deepEqual(notifIds(d), [ids[3], last], d.describe());
  for (const c of [on, d]) await c.close();
});

test('ack mode: an entry replayed but not acked is still undelivered, so a newer one of its key replaces it', async () => {
  const user = uid();
  await registerOffline(srv, user, 'D');
  const k1 = await post(srv, user, 'K', 'k1');
  const k2 = await post(srv, user, 'K', 'k2');
  const c1 = await srv.device(user, 'D', { params: ACK });
  assert.equal(c1.welcome.data.queued, 1, JSON.stringify(c1.welcome.data));
  await c1.waitFor(isNew(k2), 10000, 'k2 replayed');
  await sleep(500);
  assert.deepEqual(notifIds(c1), [k2], c1.describe());
  await c1.close(); /* not acked */
  await waitOffline(srv, user, 'D');
  const k3 = await post(srv, user, 'K', 'k3');
  const c2 = await srv.device(user, 'D', { params: ACK });
  assert.equal(c2.welcome.data.queued, 1, JSON.stringify(c2.welcome.data));
  autoAck(c2);
  await c2.waitFor(isNew(k3), 10000, 'k3 replayed');
  await sleep(QUIET_MS);
  assert.deepEqual(notifIds(c2), [k3], c2.describe());
  await c2.close();
  const c3 = await srv.device(user, 'D', { params: ACK });
  assert.equal(c3.welcome.data.queued, 0, JSON.stringify(c3.welcome.data));
  await sleep(QUIET_MS);
  assert.deepEqual(durables(c3), [], c3.describe());
  assert.ok(![k1].some((id) => notifIds(c1).includes(id) || notifIds(c2).includes(id)));
  await c3.close();
});
