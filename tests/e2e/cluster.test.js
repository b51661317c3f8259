'use strict';
/*
 * cluster.test.js -- SPEC §8 "several instances behave as one server"
 * (issue 5, scale out): three notisyncd processes A, B and C on one private
 * Redis (appendonly) + PostgreSQL pair (useServices, so that connection
 * totals and the Redis restart touch no other file), all with one JWT
 * secret and max_devices_per_user=3.
 *
 * Every cross-instance path: a notification posted on one instance reaches
 * a device on another (source_device excluded wherever it is connected),
 * an action on one syncs devices on the others, broadcasts and comment
 * events reach every instance, device_status crosses instances, a device
 * moving between instances replaces its old connection without an offline,
 * the device cap counts the whole cluster, stats count every instance.
 *
 * Failures (last in the file, they change the cluster): Redis restarted
 * while A, B and C run (/health 503 during, 200 after, nothing that got 201
 * is lost, POSTs during the outage get 503), then kill -9 of C: the
 * survivors are unaffected, C's connections leave the stats within 30 s, a
 * survivor announces C's devices offline within 30 s (SPEC §5.6; liveness
 * key inst:<id>, TTL 15 s, reaper every 5 s), a device that moved to a
 * survivor before the reaping is not announced offline, and C's devices
 * reconnect elsewhere and get what was queued for them, once, in order.
 */
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { execFile } = require('node:child_process');
const {
  test, setup, newServer, useServices, uid, until, sleep, newId, notificationBody, postNotification,
  durables, notifIds, autoAck, cmpStreamId, drainUntilIdle, publicClient, broadcast, postComment,
  newPostId, isTimestamp, metricSum, clusterMode, redisCli: harnessRedisCli,
} = require('./lib/harness');

const MAX_DEVICES = 3;
const svc = useServices();
const secret = crypto.randomBytes(24).toString('hex');
const env = { NOTISYNC_MAX_DEVICES_PER_USER: String(MAX_DEVICES) };
const A = newServer({ env: { ...env }, secret, instanceId: uid('A') });
const B = newServer({ env: { ...env }, secret, instanceId: uid('B') });
const C = newServer({ env: { ...env }, secret, instanceId: uid('C') });
const ALL = [A, B, C];
const NAME = new Map([[A, 'A'], [B, 'B'], [C, 'C']]);

setup(async () => {
  for (const s of ALL) {
    s.opts.env.NOTISYNC_REDIS_URL = svc.redisUrl;
    s.opts.env.NOTISYNC_DATABASE_URL = svc.databaseUrl;
  }
  /* A first (it applies the migrations), then B and C together */
  await A.start();
  await Promise.all([B.start(), C.start()]);
});

const QUIET_MS = 1500;
const REAP_LIMIT_MS = 30000; /* SPEC §5.6: offline within 30 s */

const isNew = (id) => (m) => m.type === 'new_notification' && m.data && m.data.id === id;
const isSync = (id) => (m) => m.type === 'notification_sync' && m.data && m.data.notification_id === id;
const isStatus = (dev, status) => (m) => m.type === 'device_status' && m.data && m.data.device_id === dev
  && (status === undefined || m.data.status === status);
const statuses = (c, dev, status) => c.messages().filter(isStatus(dev, status));

async function created(srv, user, fields = {}) {
  const r = await postNotification(srv, user, fields);
  assert.equal(r.status, 201, `POST on ${NAME.get(srv)}: ${r.status} ${r.text}`);
  return r.json;
}

async function health(srv) {
  const r = await srv.http('GET', '/health', { timeoutMs: 5000 });
  return { status: r.status, body: r.json, text: r.text };
}

async function stats(srv) {
  const r = await srv.http('GET', '/api/v1/websocket/stats', { token: srv.token(uid('stats')) });
  assert.equal(r.status, 200, `stats on ${NAME.get(srv)}: ${r.text}`);
  return r.json;
}

async function connectionCount(srv) {
  const r = await srv.http('GET', '/api/v1/websocket/connections');
  assert.equal(r.status, 200, `connections on ${NAME.get(srv)}: ${r.text}`);
  return r.json.connectionCount;
}

/* /health.connections of each server in `list`, by name. */
async function localCounts(list) {
  const out = {};
  for (const s of list) out[NAME.get(s)] = (await health(s)).body.connections;
  return out;
}

/* Waits until, on every server in `list`, stats.total_connections and
 * connections.connectionCount equal the sum of /health.connections of
 * `list` (and, when `expect` is given, that sum is `expect`); returns the
 * last observation. */
async function totalsSettle(list, { expect, timeoutMs = 20000, what = 'totals' } = {}) {
  let seen;
  await until(async () => {
    const local = await localCounts(list);
    const sum = Object.values(local).reduce((x, y) => x + y, 0);
    const per = {};
    for (const s of list) {
      const st = await stats(s);
      per[NAME.get(s)] = { total: st.total_connections, instance: st.instance_connections, count: await connectionCount(s) };
    }
    seen = { local, sum, per };
    if (expect !== undefined && sum !== expect) return false;
    return list.every((s) => {
      const p = per[NAME.get(s)];
      return p.total === sum && p.count === sum && p.instance === local[NAME.get(s)];
    });
  }, { timeoutMs, intervalMs: 500, what: `${what} (last: ${JSON.stringify(seen)})` });
  return seen;
}

async function deviceRow(srv, user, deviceId) {
  const r = await srv.http('GET', '/api/v1/devices', { token: srv.token(user) });
  assert.equal(r.status, 200, r.text);
  return r.json.devices.find((d) => d.device_id === deviceId);
}

function wsAction(c, notificationId, action, ref = uid('ref')) {
  c.send({ type: 'notification_action', ref, data: { notification_id: notificationId, action } });
  return c.waitFor((m) => m.ref === ref && (m.type === 'ok' || m.type === 'error'), 10000, `reply to ${action} ref=${ref}`);
}

async function closeAll(clients) {
  for (const c of clients) if (c) await c.close();
}

/* -------------------------------------------------------- cross-instance */

test('notifications cross instances: device on A gets posts to B and to C; source_device excluded on any instance; another user gets nothing', async () => {
  const user = uid('x');
  const d1 = await A.device(user, 'd1');
  const src = await B.device(user, 'src');
  const d3 = await C.device(user, 'd3');
  const stranger = await C.device(uid('stranger'), 'd1');

  const n1 = await created(B, user, { title: 'posted on B' });
  const n2 = await created(C, user, { title: 'posted on C' });
  for (const [c, where] of [[d1, 'A'], [src, 'B'], [d3, 'C']]) {
    const m1 = await c.waitFor(isNew(n1.id), 10000, `post on B → device on ${where}`);
    const m2 = await c.waitFor(isNew(n2.id), 10000, `post on C → device on ${where}`);
    assert.equal(m1.data.title, 'posted on B');
    assert.equal(typeof m1.id, 'string', `durable: delivery id ${JSON.stringify(m1)}`);
    assert.equal(m2.data.title, 'posted on C');
    assert.ok(isTimestamp(m2.timestamp), JSON.stringify(m2));
  }

  /* SPEC §4/§6: no WS message creates a notification; a device that
   * produced one is named by source_device in the REST post.  Posted on A
   * (src is on B) and on B (src's own instance): src gets neither. */
  const s1 = await created(A, user, { title: 'from src via A', source_device: 'src' });
  const s2 = await created(B, user, { title: 'from src via B', source_device: 'src' });
  const s3 = await created(C, user, { title: 'from src via C', source_device: 'src' });
  for (const id of [s1.id, s2.id, s3.id]) {
    await d1.waitFor(isNew(id), 10000, `source post ${id} on A`);
    await d3.waitFor(isNew(id), 10000, `source post ${id} on C`);
  }
  const marker = await created(C, user, { title: 'after the source posts' });
  await src.waitFor(isNew(marker.id), 10000, 'the marker post on src');
  await sleep(QUIET_MS);
  const got = notifIds(src);
  for (const id of [s1.id, s2.id, s3.id]) {
    assert.ok(!got.includes(id), `source_device src got its own notification ${id}: ${src.describe()}`);
  }
  for (const c of [d1, src, d3]) {
    const ids = notifIds(c);
    assert.equal(ids.length, new Set(ids).size, `no notification twice on ${c.label}: ${JSON.stringify(ids)}`);
  }
  assert.deepEqual(durables(stranger), [], `another user's device got: ${stranger.describe()}`);
  assert.deepEqual(stranger.messages().filter((m) => m.type === 'device_status'), [], `another user's device got status: ${stranger.describe()}`);
  await closeAll([d1, src, d3, stranger]);
});

test('an action on C (WS and REST) → notification_sync on A and B, never to the source device', async () => {
  const user = uid('act');
  const a = await A.device(user, 'a');
  const b = await B.device(user, 'b');
  const c = await C.device(user, 'c');
  const n = await created(A, user, { title: 'act on me' });
  for (const x of [a, b, c]) await x.waitFor(isNew(n.id), 10000, `notification on ${x.label}`);

  /* WS action on C */
  const reply = await wsAction(c, n.id, 'read', 'rd1');
  assert.equal(reply.type, 'ok', JSON.stringify(reply));
  for (const x of [a, b]) {
    const s = await x.waitFor(isSync(n.id), 10000, `sync of the WS read on ${x.label}`);
    assert.deepEqual(s.data, { notification_id: n.id, is_read: true, is_dismissed: false, source_device: 'c', unread: 0 });
    assert.equal(typeof s.id, 'string', `durable: delivery id ${JSON.stringify(s)}`);
  }

  /* REST action on C naming A as the source */
  const r = await C.http('POST', `/api/v1/notifications/${n.id}/actions`, {
    token: C.token(user), body: { action: 'dismiss' }, headers: { 'X-Device-ID': 'a' },
  });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.is_dismissed, true);
  for (const x of [b, c]) {
    const s = await x.waitFor((m) => isSync(n.id)(m) && m.data.is_dismissed === true, 10000, `sync of the REST dismiss on ${x.label}`);
    assert.equal(s.data.source_device, 'a');
  }
  await sleep(QUIET_MS);
  const syncsOn = (x) => durables(x, 'notification_sync').map((m) => m.data.source_device);
  assert.deepEqual(syncsOn(c), ['a'], `C (source of the read) got only the dismiss sync: ${c.describe()}`);
  assert.deepEqual(syncsOn(a), ['c'], `A (source of the dismiss) got only the read sync: ${a.describe()}`);
  assert.deepEqual(syncsOn(b), ['c', 'a'], `B got both syncs in order: ${b.describe()}`);
  await closeAll([a, b, c]);
});

test('broadcast posted on one instance reaches public clients and devices on all three; a comment on A reaches a listener on C', async () => {
  const clients = [
    await publicClient(A, '/api/v1/ws'), await publicClient(B, '/ws/public'), await publicClient(C, '/'),
    await A.device(uid('bc'), 'dev'), await B.device(uid('bc'), 'dev'), await C.device(uid('bc'), 'dev'),
  ];
  const marks = [];
  for (const [s, type] of [[B, 'test'], [C, 'system_notification'], [A, 'blog_update']]) {
    const mark = uid('m');
    marks.push(mark);
    const data = type === 'system_notification' ? { message: 'hello', level: 'info', mark } : { message: 'hello', mark };
    const r = await broadcast(s, type, data);
    assert.equal(r.status, 202, `broadcast on ${NAME.get(s)}: ${r.text}`);
    assert.equal(typeof r.json.connectionCount, 'number', r.text);
    for (const c of clients) {
      const m = await c.waitFor((x) => x.data && x.data.mark === mark, 10000, `broadcast ${type} from ${NAME.get(s)} on ${c.label}`);
      assert.equal(m.type, type);
      assert.deepEqual(m.data, data);
    }
  }
  /* comments: posted on A, announced on B and C */
  const postId = newPostId('cluster');
  const author = uid('author');
  const r = await postComment(A, author, postId, 'posted on A');
  assert.equal(r.status, 201, r.text);
  for (const c of [clients[1], clients[2]]) {
    const ev = await c.waitFor((m) => m.type === 'comment.created' && m.data && m.data.postId === postId, 10000, `comment.created on ${c.label}`);
    assert.deepEqual(ev.data.comment, r.json);
  }
  const l = await C.http('GET', `/api/v1/notes/${postId}/comments`);
  assert.equal(l.status, 200, l.text);
  assert.deepEqual(l.json.comments.map((x) => x.id), [r.json.id]);
  await sleep(500);
  for (const c of clients) {
    assert.equal(c.messages().filter((m) => m.data && marks.includes(m.data.mark)).length, marks.length, `each broadcast once on ${c.label}`);
  }
  await closeAll(clients);
});

test('device_status crosses instances: d2 connecting on B → d1 on A and d3 on C get online; d2 leaving → offline', async () => {
  const user = uid('st');
  const d1 = await A.device(user, 'd1');
  const d3 = await C.device(user, 'd3');
  await d1.waitFor(isStatus('d3', 'online'), 10000, 'd3 (C) online on d1 (A)');
  const d2 = await B.device(user, 'd2');
  for (const x of [d1, d3]) await x.waitFor(isStatus('d2', 'online'), 10000, `d2 (B) online on ${x.label}`);
  const row = await deviceRow(C, user, 'd2');
  assert.equal(row && row.status, 'online', `GET /devices on C: ${JSON.stringify(row)}`);
  await d2.close();
  for (const x of [d1, d3]) await x.waitFor(isStatus('d2', 'offline'), 10000, `d2 (B) offline on ${x.label}`);
  await until(async () => (await deviceRow(A, user, 'd2')).status === 'offline', { what: 'd2 offline in GET /devices on A' });
  assert.deepEqual(statuses(d2, 'd2'), [], `d2 got its own status: ${d2.describe()}`);
  await closeAll([d1, d3]);
});

/* One redis-cli command on the file's Redis; resolves its --raw output. */
function redisCli(...args) {
  /* cluster variant (issue 13): sent to the master of the key's slot */
  if (clusterMode()) return harnessRedisCli(svc.redisUrl, ...args);
  return new Promise((resolve, reject) => {
    execFile('redis-cli', ['-p', String(svc.env.REDIS_PORT), '--raw', ...args], { timeout: 5000 }, (err, out) => {
      if (err) reject(err);
      else resolve(out.trim());
    });
  });
}

/* PUBSUB NUMSUB of one channel: how many instances are subscribed to it. */
async function numsub(channel) {
  /* cluster variant (issue 13): per-user channels are sharded (SSUBSCRIBE) */
  if (clusterMode()) return Number((await redisCli('PUBSUB', 'SHARDNUMSUB', channel)).split('\n')[1]);
  return Number((await redisCli('PUBSUB', 'NUMSUB', channel)).split('\n')[1]);
}

test('u:{user} is subscribed by exactly the instances holding one of the user\'s devices, and unsubscribed after', async () => {
  const user = uid('sub');
  const ch = `u:{${user}}`;
  assert.equal(await numsub(ch), 0, 'nobody before the first device');
  const d1 = await A.device(user, 'd1');
  await until(async () => (await numsub(ch)) === 1, { timeoutMs: 5000, intervalMs: 50, what: `${ch} subscribed by A` });
  const d1b = await A.device(user, 'd1b');
  const d2 = await B.device(user, 'd2');
  await until(async () => (await numsub(ch)) === 2, { timeoutMs: 5000, intervalMs: 50, what: `${ch} subscribed by A and B` });
  await d1.close();
  await sleep(300);
  assert.equal(await numsub(ch), 2, 'A still holds d1b');
  await d1b.close();
  await until(async () => (await numsub(ch)) === 1, { timeoutMs: 5000, intervalMs: 50, what: `A unsubscribed ${ch}` });
  await d2.close();
  await until(async () => (await numsub(ch)) === 0, { timeoutMs: 5000, intervalMs: 50, what: `B unsubscribed ${ch}` });
});

test('presence_grace 2s across instances: a device that drops on G1 and reconnects on G2 within the grace emits no offline/online pair; gone for good → offline once', { timeout: 60000 }, async () => {
  const genv = { ...env, NOTISYNC_PRESENCE_GRACE: '2s', NOTISYNC_REDIS_URL: svc.redisUrl, NOTISYNC_DATABASE_URL: svc.databaseUrl };
  const G1 = newServer({ env: genv, secret, instanceId: uid('G1') });
  const G2 = newServer({ env: { ...genv }, secret, instanceId: uid('G2') });
  await G1.start();
  await G2.start();
  try {
    const user = uid('grace');
    const watcher = await G2.device(user, 'w');
    const mover = await G1.device(user, 'm');
    await watcher.waitFor(isStatus('m', 'online'), 10000, 'm online on the watcher');
    const mark = watcher.frames.length;
    mover.terminate(); /* a dropped network: no close frame */
    await sleep(300);
    const back = await G2.device(user, 'm');
    await sleep(2000 + 2000);
    const during = watcher.frames.slice(mark).map((f) => f.msg).filter((m) => m && isStatus('m')(m));
    assert.deepEqual(during, [], `the watcher saw m flap while it moved from G1 to G2: ${JSON.stringify(during)}`);
    assert.ok(back.isOpen(), 'the moved device stays connected');
    assert.equal((await deviceRow(G1, user, 'm')).status, 'online');
    const t0 = Date.now();
    await back.close();
    const off = await watcher.waitFor(isStatus('m', 'offline'), 15000, 'm offline after the grace');
    assert.ok(Date.now() - t0 >= 1000, `offline ${Date.now() - t0} ms after the close, inside the 2 s grace`);
    await sleep(1000);
    assert.equal(statuses(watcher, 'm', 'offline').length, 1, watcher.describe());
    assert.equal(off.data.device_id, 'm');
    await watcher.close();
  } finally {
    await G1.stop();
    await G2.stop();
  }
});

test('replace across instances: device on A then on B → A closed 4000 "replaced", B works, no offline announced; then B → C', async () => {
  const user = uid('rep');
  const sib = await C.device(user, 'sib');
  const x1 = await A.device(user, 'x', { label: 'x@A' });
  await sib.waitFor(isStatus('x', 'online'), 10000, 'x online on the sibling');
  const x2 = await B.device(user, 'x', { label: 'x@B' });
  const info = await x1.closed(10000);
  assert.equal(info.code, 4000, `old connection on A: ${x1.describe()}`);
  assert.equal(info.reason, 'replaced');
  assert.notEqual(x2.welcome.data.connection_id, x1.welcome.data.connection_id);
  assert.equal((await x2.ping()).type, 'pong');
  const n = await created(C, user, { title: 'after the move' });
  await x2.waitFor(isNew(n.id), 10000, 'notification on the new connection (B)');
  /* and once more, B → C (the instance of the sibling) */
  const x3 = await C.device(user, 'x', { label: 'x@C' });
  const info2 = await x2.closed(10000);
  assert.equal(info2.code, 4000, `old connection on B: ${x2.describe()}`);
  assert.equal(info2.reason, 'replaced');
  const n2 = await created(A, user, { title: 'after the second move' });
  await x3.waitFor(isNew(n2.id), 10000, 'notification on the newest connection (C)');
  await sleep(QUIET_MS);
  assert.deepEqual(statuses(sib, 'x', 'offline'), [], `the sibling saw x go offline during a replacement: ${sib.describe()}`);
  assert.equal((await deviceRow(A, user, 'x')).status, 'online');
  assert.ok(!notifIds(x1).includes(n.id), 'the replaced connection got nothing after its replacement');
  await x3.close();
  await sib.waitFor(isStatus('x', 'offline'), 10000, 'x offline once its last connection closed');
  await sib.close();
});

test(`max_devices_per_user=${MAX_DEVICES} counts the whole cluster: devices on A, B, C; the 4th is closed 1008 "too many devices"`, async () => {
  const user = uid('cap');
  const d1 = await A.device(user, 'd1');
  const d2 = await B.device(user, 'd2');
  const d3 = await C.device(user, 'd3');
  const extra = [];
  for (const s of ALL) {
    const d4 = s.ws(s.wsUrl({ token: s.token(user), device_id: 'd4' }), { label: `d4@${NAME.get(s)}` });
    extra.push(d4);
    await d4.open();
    const info = await d4.closed(10000);
    assert.equal(info.code, 1008, `4th device on ${NAME.get(s)}: ${d4.describe()}`);
    assert.equal(info.reason, 'too many devices');
    assert.ok(!d4.messages().some((m) => m.type === 'welcome'), 'no welcome for the refused device');
  }
  /* a reconnect of an admitted device elsewhere is a replacement */
  const d2c = await C.device(user, 'd2', { label: 'd2@C' });
  assert.equal((await d2.closed(10000)).code, 4000);
  for (const x of [d1, d2c, d3]) assert.equal((await x.ping()).type, 'pong');
  /* one leaves (on A) → a new one is admitted on B */
  await d1.close();
  const d4 = await until(async () => {
    const c = B.ws(B.wsUrl({ token: B.token(user), device_id: 'd4' }), { label: 'd4@B again' });
    await c.open();
    const got = await Promise.race([c.next('welcome', 5000).then(() => 'welcome'), c.closed(5000).then(() => 'closed')]);
    return got === 'welcome' ? c : null;
  }, { timeoutMs: 15000, intervalMs: 500, what: 'd4 admitted on B after d1 left A' });
  assert.equal((await d4.ping()).type, 'pong');
  await closeAll([d2c, d3, d4]);
});

test('stats totals: /websocket/stats and /websocket/connections on every instance count the connections of all three', async () => {
  const base = await totalsSettle(ALL, { what: 'baseline totals' });
  const opened = [
    await A.device(uid('s'), 'a1'), await A.device(uid('s'), 'a2'), await publicClient(A, '/ws/public'),
    await B.device(uid('s'), 'b1'),
    await publicClient(C, '/'), await publicClient(C, '/api/v1/ws'), await C.device(uid('s'), 'c1'),
  ];
  const after = await totalsSettle(ALL, { expect: base.sum + opened.length, what: `totals +${opened.length}` });
  assert.equal(after.local.A, base.local.A + 3, JSON.stringify(after));
  assert.equal(after.local.B, base.local.B + 1, JSON.stringify(after));
  assert.equal(after.local.C, base.local.C + 3, JSON.stringify(after));
  const st = await stats(B);
  assert.ok(isTimestamp(st.timestamp), JSON.stringify(st));
  await closeAll(opened);
  await totalsSettle(ALL, { expect: base.sum, what: 'totals back to the baseline' });
});

/* ------------------------------------------------------- Redis restarted */

test('liveness lapse: A\'s inst key gone and A\'s device reaped behind its back → A\'s next heartbeat reasserts it: online again (announced), back in idev:A, still served', { timeout: 40000 }, async () => {
  const user = uid('lapse');
  const watcher = await B.device(user, 'w');
  const dev = await A.device(user, 'a');
  await watcher.waitFor(isStatus('a', 'online'), 10000, 'a online on the watcher');
  /* per-instance keys carry the instance id as their hash tag; an idev
   * member is "conn gen device user", gen as in the presence entry */
  const instKey = `inst:{${A.opts.instanceId}}`;
  const idevKey = `idev:{${A.opts.instanceId}}`;
  const presKey = `presence:{${user}}`;
  const cur = JSON.parse(await redisCli('HGET', presKey, 'a'));
  assert.equal(cur.status, 'online');
  const member = `${dev.welcome.data.connection_id} ${cur.gen} a ${user}`;
  assert.equal(await redisCli('SISMEMBER', idevKey, member), '1', 'registered in idev:A');
  /* what a survivor's reaper does to an instance whose key ran out (an
   * outage longer than the TTL, a stalled loop), done here at once */
  assert.equal(await redisCli('SREM', idevKey, member), '1');
  await redisCli('HSET', presKey, 'a', JSON.stringify({ ...cur, status: 'offline' }));
  assert.equal(await redisCli('DEL', instKey), '1');
  assert.equal((await deviceRow(B, user, 'a')).status, 'offline', 'reaped: offline');
  watcher.cursor = watcher.frames.length; /* only what comes from now on */
  /* A's heartbeat (every 5 s) finds its key gone and reasserts */
  await watcher.waitFor(isStatus('a', 'online'), 12000, 'a announced online again');
  assert.equal((await deviceRow(B, user, 'a')).status, 'online');
  /* the lapse moved A's generation on: the entry and the member carry it */
  const again = JSON.parse(await redisCli('HGET', presKey, 'a'));
  assert.equal(again.conn, cur.conn);
  assert.ok(Number(again.gen) > Number(cur.gen), `generation moved on: ${cur.gen} → ${again.gen}`);
  assert.equal(await redisCli('SISMEMBER', idevKey, `${dev.welcome.data.connection_id} ${again.gen} a ${user}`), '1',
    'back in idev:A');
  assert.equal(await redisCli('EXISTS', instKey), '1');
  assert.match(A.log(), /liveness key of this instance had lapsed: presence of \d+ devices reasserted/);
  const id = newId();
  assert.equal((await postNotification(C, user, { id })).status, 201);
  await dev.waitFor(isNew(id), 10000, 'a still gets notifications');
  await closeAll([dev, watcher]);
});

test('Redis restarted while A, B, C run: /health 503 during, 200 after; POSTs during the outage 503; every 201 reaches every online device', { timeout: 150000 }, async () => {
  const user = uid('rr');
  /* three devices of one user on three instances: two in ack mode */
  const plan = [['p', A, true], ['q', B, true], ['r', C, false]];
  const dev = {};
  for (const [d, s, ack] of plan) {
    const c = await s.device(user, d, { params: ack ? { ack: '1' } : {}, label: `${d}@${NAME.get(s)}#1` });
    if (ack) autoAck(c);
    dev[d] = { srv: s, ack, conns: [c] };
  }
  const ok = []; /* ids that got 201, in posting order */
  const refused = [];
  const post = async (s, title) => {
    const body = notificationBody({ id: newId(), title });
    const r = await postNotification(s, user, {}, { raw: body, timeoutMs: 10000 })
      .catch((e) => ({ status: 'net', text: e.message }));
    return { id: body.id, status: r.status, text: (r.text || '').slice(0, 200), on: NAME.get(s) };
  };
  for (let i = 0; i < 9; i += 1) {
    const x = await post(ALL[i % 3], `before ${i}`);
    assert.equal(x.status, 201, `before the stop, on ${x.on}: ${x.status} ${x.text}`);
    ok.push(x.id);
  }

  /* two producers keep posting across the stop until every instance
   * reports 503: whatever got 201 must arrive; the rest must be 503 */
  const across = [];
  let producing = true;
  const producer = async (k) => {
    for (let i = 0; producing && i < 300; i += 1) {
      const x = await post(ALL[(i + k) % 3], `across ${k}.${i}`);
      across.push(x);
      if (x.status === 201) ok.push(x.id);
      await sleep(30);
    }
  };
  const producers = [producer(0), producer(1)];
  await sleep(600);
  try {
    await svc.stopRedis();
  } finally {
    await sleep(300);
    producing = false;
    await Promise.all(producers);
  }
  const downAt = Date.now();
  for (const s of ALL) {
    const h = await until(async () => {
      const x = await health(s);
      return x.status === 503 ? x : null;
    }, { timeoutMs: 15000, intervalMs: 250, what: `/health 503 on ${NAME.get(s)} with Redis stopped` });
    assert.equal(h.body.status, 'degraded', h.text);
    assert.equal(h.body.redis, 'down', h.text);
  }
  for (let i = 0; i < 6; i += 1) {
    refused.push(await post(ALL[i % 3], `during ${i}`));
    await sleep(250);
  }
  const pongsDuring = {};
  for (const [d, h] of Object.entries(dev)) {
    const c = h.conns[0];
    pongsDuring[d] = c.isOpen() ? await c.ping(uid('ref'), 5000).then(() => 'pong', (e) => e.message) : `closed ${JSON.stringify(c.closeInfo)}`;
  }
  await sleep(Math.max(0, 4000 - (Date.now() - downAt)));

  await svc.startRedis();
  const upAt = Date.now();
  const recovered = {};
  for (const s of ALL) {
    await until(async () => (await health(s)).status === 200, {
      timeoutMs: 25000, intervalMs: 250, what: `/health 200 on ${NAME.get(s)} after Redis returned`,
    });
    recovered[NAME.get(s)] = Date.now() - upAt;
  }
  for (let i = 0; i < 9; i += 1) {
    const x = await post(ALL[i % 3], `after ${i}`);
    assert.equal(x.status, 201, `after the restart (health 200 everywhere), on ${x.on}: ${x.status} ${x.text}`);
    ok.push(x.id);
  }

  /* a connection the server closed during the outage reconnects (same
   * instance, same mode) and takes its queue */
  for (const [d, h] of Object.entries(dev)) {
    const last = h.conns[h.conns.length - 1];
    if (!last.closeInfo) continue;
    const c = await h.srv.device(user, d, { params: h.ack ? { ack: '1' } : {}, label: `${d}@${NAME.get(h.srv)}#${h.conns.length + 1}` });
    if (h.ack) autoAck(c);
    h.conns.push(c);
  }
  const posted = new Set([...ok, ...refused.map((x) => x.id), ...across.map((x) => x.id)]);
  const report = {};
  for (const [d, h] of Object.entries(dev)) {
    const all = () => h.conns.flatMap((c) => notifIds(c));
    await until(() => ok.every((id) => all().includes(id)), { timeoutMs: 30000, intervalMs: 200, what: `every 201 on ${d}` })
      .catch(() => {});
    const ids = all();
    const seen = new Set(ids);
    report[d] = {
      received: seen.size,
      lost: ok.filter((id) => !seen.has(id)),
      duplicates: ids.length - seen.size,
      connections: h.conns.length,
      refused_delivered: [...refused, ...across].filter((x) => x.status !== 201 && seen.has(x.id)).length,
      foreign: ids.filter((id) => !posted.has(id)).length,
    };
  }
  const figures = {
    acknowledged: ok.length,
    across_the_stop: across.reduce((o, x) => ({ ...o, [x.status]: (o[x.status] || 0) + 1 }), {}),
    refused: refused.map((x) => x.status),
    recovered_ms: recovered,
    pongs_during: pongsDuring,
    devices: Object.fromEntries(Object.entries(report).map(([d, r]) => [d, { ...r, lost: r.lost.length }])),
  };
  console.log(`REDIS RESTART FIGURES ${JSON.stringify(figures)}`);
  for (const [d, r] of Object.entries(report)) {
    assert.deepEqual(r.lost, [], `${d} lost ${r.lost.length} of ${ok.length} notifications that got 201 (duplicates: ${r.duplicates}; ${JSON.stringify(figures)})`);
    assert.equal(r.foreign, 0, `${d} got ids this test never posted`);
  }
  for (const x of refused) {
    assert.equal(x.status, 503, `POST on ${x.on} during the outage: expected 503, got ${x.status} ${x.text}`);
  }
  for (const x of across) {
    assert.ok(x.status === 201 || x.status === 503, `POST on ${x.on} while Redis was stopping: 201 or 503, got ${x.status} ${x.text}`);
  }
  for (const [name, ms] of Object.entries(recovered)) {
    assert.ok(ms <= 20000 + 2000, `/health 200 on ${name} ${ms} ms after Redis returned (want ~20 s at most)`);
  }
  for (const [d, v] of Object.entries(pongsDuring)) {
    assert.equal(v, 'pong', `${d}: the live connection answers ping while Redis is down (README reading)`);
  }
  for (const h of Object.values(dev)) await closeAll(h.conns);
});

/* ------------------------------------------------------------- kill -9 C */

/* State shared by the kill tests (they run in order). */
const K = { ready: false };

test('kill -9 of C: survivors A and B are unaffected (pong, notifications); a device moves from C to B at once', { timeout: 60000 }, async () => {
  K.userK = uid('kk');   /* k1@A, k2@B watch c1@C */
  K.userL = uid('kl');   /* l1@A watches l2@C, which moves to B before the reaping */
  K.userM = uid('km');   /* m2@B watches m1@C */
  K.k1 = await A.device(K.userK, 'k1');
  K.k2 = await B.device(K.userK, 'k2');
  K.c1 = await C.device(K.userK, 'c1', { params: { ack: '1' }, label: 'c1@C' });
  autoAck(K.c1);
  K.l1 = await A.device(K.userL, 'l1');
  K.l2 = await C.device(K.userL, 'l2', { label: 'l2@C' });
  K.m2 = await B.device(K.userM, 'm2');
  K.m1 = await C.device(K.userM, 'm1', { label: 'm1@C' });
  K.pub = await publicClient(C, '/ws/public');
  for (const [w, d] of [[K.k1, 'c1'], [K.k2, 'c1'], [K.l1, 'l2'], [K.m2, 'm1']]) {
    await w.waitFor(isStatus(d, 'online'), 10000, `${d} online on ${w.label}`);
  }
  const pre = await created(A, K.userK, { title: 'before the kill' });
  for (const x of [K.k1, K.k2, K.c1]) await x.waitFor(isNew(pre.id), 10000, `pre-kill post on ${x.label}`);
  await sleep(700); /* c1's ack reaches Redis */
  K.cLocal = (await health(C)).body.connections;
  assert.ok(K.cLocal >= 4, `C holds c1, l2, m1 and a public client: ${K.cLocal}`);
  K.watchMark = { k1: K.k1.frames.length, k2: K.k2.frames.length, l1: K.l1.frames.length, m2: K.m2.frames.length };

  const exit = await C.signalAndWait('SIGKILL', 10000);
  K.killAt = Date.now();
  assert.ok(exit && exit.signal === 'SIGKILL', `C exit: ${JSON.stringify(exit)}`);
  K.ready = true;

  /* l2 moves to B before any reaping can happen (inst TTL 15 s) */
  K.l2b = await B.device(K.userL, 'l2', { label: 'l2@B' });
  K.l2movedAt = Date.now();
  assert.ok(K.l2movedAt - K.killAt < 10000, `l2 reconnected ${K.l2movedAt - K.killAt} ms after the kill`);

  /* survivors: pong and live notifications; what c1 / m1 miss is queued */
  for (const x of [K.k1, K.k2, K.l1, K.m2, K.l2b]) assert.equal((await x.ping()).type, 'pong', `${x.label} after the kill`);
  K.afterK = [];
  for (let i = 0; i < 6; i += 1) {
    const n = await created(i % 2 ? B : A, K.userK, { title: `after the kill ${i}` });
    K.afterK.push(n.id);
  }
  K.afterM = [];
  for (let i = 0; i < 3; i += 1) {
    const n = await created(i % 2 ? A : B, K.userM, { title: `M after the kill ${i}` });
    K.afterM.push(n.id);
  }
  for (const x of [K.k1, K.k2]) {
    for (const id of K.afterK) await x.waitFor(isNew(id), 10000, `post-kill ${id} on survivor ${x.label}`);
    assert.deepEqual(notifIds(x), [pre.id, ...K.afterK], `${x.label} got each notification once, in order`);
  }
  for (const id of K.afterM) await K.m2.waitFor(isNew(id), 10000, `post-kill ${id} on m2`);
  for (const s of [A, B]) assert.equal((await health(s)).status, 200, `${NAME.get(s)} healthy after C died`);
});

test('kill -9 of C: its connections leave /websocket/stats and /websocket/connections within 30 s', { timeout: 60000 }, async () => {
  assert.ok(K.ready, 'the kill did not happen (previous test failed before it)');
  const left = REAP_LIMIT_MS - (Date.now() - K.killAt);
  const seen = await totalsSettle([A, B], { timeoutMs: Math.max(left, 1000), what: 'A and B totals without C' });
  K.statsGoneMs = Date.now() - K.killAt;
  assert.ok(K.statsGoneMs <= REAP_LIMIT_MS + 1000, `C's connections left the totals ${K.statsGoneMs} ms after the kill`);
  assert.ok(seen.sum >= 5, `survivors hold k1, k2, l1, l2, m2: ${JSON.stringify(seen)}`);
});

test('kill -9 of C: a survivor announces c1 and m1 offline within 30 s (once), GET /devices shows them offline; the reaper logs it', { timeout: 60000 }, async () => {
  assert.ok(K.ready, 'the kill did not happen (previous test failed before it)');
  const wait = (w, d) => w.waitFor(isStatus(d, 'offline'), Math.max(REAP_LIMIT_MS - (Date.now() - K.killAt), 1000),
    `device_status ${d} offline on ${w.label} (limit: ${REAP_LIMIT_MS} ms after the kill)`);
  await Promise.all([wait(K.k1, 'c1'), wait(K.k2, 'c1'), wait(K.m2, 'm1')]);
  K.reapedAt = Date.now();
  const ms = K.reapedAt - K.killAt;
  console.log(`KILL FIGURES ${JSON.stringify({ stats_gone_ms: K.statsGoneMs, offline_ms: ms, l2_moved_ms: K.l2movedAt - K.killAt })}`);
  assert.ok(ms <= REAP_LIMIT_MS + 500, `offline ${ms} ms after the kill`);
  for (const [s, user, d] of [[A, K.userK, 'c1'], [B, K.userK, 'c1'], [A, K.userM, 'm1']]) {
    const row = await deviceRow(s, user, d);
    assert.equal(row && row.status, 'offline', `GET /devices on ${NAME.get(s)}: ${JSON.stringify(row)}`);
  }
  await sleep(QUIET_MS);
  for (const [w, d, key] of [[K.k1, 'c1', 'k1'], [K.k2, 'c1', 'k2'], [K.m2, 'm1', 'm2']]) {
    const offs = w.frames.slice(K.watchMark[key]).map((f) => f.msg).filter((m) => m && isStatus(d, 'offline')(m));
    assert.equal(offs.length, 1, `${d} announced offline exactly once on ${w.label}: ${JSON.stringify(offs)}`);
    assert.ok(Date.parse(offs[0].data.last_seen) <= Date.now(), JSON.stringify(offs[0]));
  }
  /* log: `reaped instance <id>: <n> devices offline` on a survivor */
  const id = C.opts.instanceId;
  const esc = id.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const re = new RegExp(`reaped instance ${esc}: (\\d+) devices offline`, 'g');
  const lines = [];
  for (const s of [A, B]) for (const m of s.log().matchAll(re)) lines.push({ on: NAME.get(s), n: Number(m[1]) });
  assert.ok(lines.length >= 1, `no survivor logged "reaped instance ${id}: <n> devices offline"`);
  const n = lines.reduce((x, y) => x + y.n, 0);
  assert.equal(n, 2, `reaped devices of C (c1 and m1; l2 had moved): ${JSON.stringify(lines)}`);
  /* and the survivors' metrics count the same */
  let devs = 0;
  let insts = 0;
  for (const s of [A, B]) {
    devs += (await metricSum(s, 'notisync_cluster_events_total', /event="devices_reaped"/)) || 0;
    insts += (await metricSum(s, 'notisync_cluster_events_total', /event="instances_reaped"/)) || 0;
  }
  assert.equal(devs, 2, 'devices_reaped summed over A and B');
  assert.equal(insts, 1, 'instances_reaped summed over A and B');
});

test('kill -9 of C: a device that reconnected elsewhere before the reaping is never announced offline', { timeout: 30000 }, async () => {
  assert.ok(K.ready, 'the kill did not happen (previous test failed before it)');
  assert.ok(K.reapedAt, 'the reaping of C was not observed (previous test), so this cannot be judged');
  await sleep(Math.max(0, 2000 - (Date.now() - K.reapedAt)));
  const offs = K.l1.frames.slice(K.watchMark.l1).map((f) => f.msg).filter((m) => m && isStatus('l2', 'offline')(m));
  assert.deepEqual(offs, [], `l1 saw l2 (moved to B ${K.l2movedAt - K.killAt} ms after the kill) announced offline: ${K.l1.describe()}`);
  assert.equal((await deviceRow(A, K.userL, 'l2')).status, 'online');
  assert.ok(K.l2b.isOpen(), `l2@B still open: ${K.l2b.describe()}`);
  assert.equal((await K.l2b.ping()).type, 'pong');
});

test('kill -9 of C: c1 and m1 reconnect to B and A and get everything queued while away, exactly once, in order; survivors still fine', { timeout: 60000 }, async () => {
  assert.ok(K.ready, 'the kill did not happen (previous test failed before it)');
  const c1 = await B.device(K.userK, 'c1', { params: { ack: '1' }, label: 'c1@B' });
  autoAck(c1);
  const m1 = await A.device(K.userM, 'm1', { label: 'm1@A' });
  for (const [c, want] of [[c1, K.afterK], [m1, K.afterM]]) {
    assert.ok(c.welcome.data.queued >= want.length, `${c.label} welcome.queued ${c.welcome.data.queued} < ${want.length}`);
    await c.waitFor(isNew(want[want.length - 1]), 15000, `last queued notification on ${c.label}`);
    await drainUntilIdle(c, { idleMs: 1000, maxMs: 10000 });
    const ids = notifIds(c).filter((id) => want.includes(id));
    assert.deepEqual(ids, want, `${c.label}: the notifications posted after the kill, once each, in order: ${c.describe()}`);
    const dids = durables(c).map((m) => m.id);
    for (let i = 1; i < dids.length; i += 1) {
      assert.equal(cmpStreamId(dids[i - 1], dids[i]), -1, `${c.label}: delivery ids increase: ${JSON.stringify(dids)}`);
    }
  }
  /* they come back online for their siblings */
  await K.k1.waitFor(isStatus('c1', 'online'), 10000, 'c1 online again on k1');
  await K.m2.waitFor(isStatus('m1', 'online'), 10000, 'm1 online again on m2');
  /* survivors: still connected, still served */
  const n = await created(B, K.userK, { title: 'after the reconnect' });
  for (const x of [K.k1, K.k2, c1]) await x.waitFor(isNew(n.id), 10000, `final post on ${x.label}`);
  for (const x of [K.k1, K.k2, K.l1, K.l2b, K.m2]) {
    assert.equal(x.closeInfo, null, `${x.label} stayed connected: ${x.describe()}`);
    assert.equal((await x.ping()).type, 'pong');
  }
  await closeAll([c1, m1, K.k1, K.k2, K.l1, K.l2b, K.m2]);
});
