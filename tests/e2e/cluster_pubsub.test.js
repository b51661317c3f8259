'use strict';
/*
 * cluster_pubsub.test.js -- pub/sub liveness across instances (issue 5;
 * SPEC §6 /health: `redis` is `down` also when the pub/sub subscription is
 * dead or stalled).
 *
 * Instance A talks to Redis through lib/redisproxy.js, instance B talks to
 * it directly (a private Redis + PostgreSQL pair, useServices).  The proxy
 * can freeze A's subscriber connection (no byte forwarded either way, the
 * TCP connection stays up: a stalled subscription that no socket error will
 * ever reveal) or destroy it.
 *
 * The server contract under test: every instance PUBLISHes a canary every
 * 2 s on its own channel; one not received within 3 s turns /health 503
 * {"status":"degraded","redis":"down"}, the subscriber connection is dropped
 * and re-established, every channel re-subscribed, and every local device
 * re-reads its queue stream (pub/sub is at-most-once: what was published
 * meanwhile is found in the streams).  Broadcasts are not queued, so one
 * posted during the freeze need not arrive (not asserted); one posted after
 * the recovery must.
 */
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const nodeTest = require('node:test');
const {
  test, setup, newServer, useServices, uid, until, sleep, postNotification, notifIds, durables, autoAck,
  cmpStreamId, drainUntilIdle, publicClient, broadcast, metricSum, clusterMode, standaloneOnly,
} = require('./lib/harness');
const { RedisProxy } = require('./lib/redisproxy');

const svc = useServices();
const secret = crypto.randomBytes(24).toString('hex');
const A = newServer({ env: {}, secret, instanceId: uid('A') }); /* through the proxy */
const B = newServer({ env: {}, secret, instanceId: uid('B') }); /* direct */
let proxy = null;

/* Cluster variant (issue 13): the proxy fronts one Redis, but a cluster
 * client learns every node's own address from CLUSTER SLOTS/NODES and
 * bypasses it, so the cases driven by the proxy are skipped; A then talks
 * to the cluster directly, like B, and the baseline runs. */
const PROXY_ONLY = standaloneOnly('lib/redisproxy.js sits in front of one Redis; a cluster client connects to every node directly');

setup(async () => {
  if (clusterMode()) {
    for (const s of [A, B]) {
      s.opts.env.NOTISYNC_REDIS_URL = svc.redisUrl;
      s.opts.env.NOTISYNC_DATABASE_URL = svc.databaseUrl;
    }
    await A.start();
    await B.start();
    return;
  }
  proxy = new RedisProxy(svc.redisUrl);
  await proxy.start();
  A.opts.env.NOTISYNC_REDIS_URL = proxy.url;
  A.opts.env.NOTISYNC_DATABASE_URL = svc.databaseUrl;
  B.opts.env.NOTISYNC_REDIS_URL = svc.redisUrl;
  B.opts.env.NOTISYNC_DATABASE_URL = svc.databaseUrl;
  await A.start();
  await B.start();
  await proxy.waitSubscribers(1, 10000);
  await until(async () => (await A.http('GET', '/health')).status === 200, { timeoutMs: 15000, what: 'A healthy through the proxy' });
});

nodeTest.after(async () => {
  if (watch) await watch.stop();
  if (proxy) await proxy.close();
});

const DETECT_MS = 15000;   /* stalled subscription → /health 503 */
const RECOVER_MS = 20000;  /* then a new subscriber connection and 200 */

const isNew = (id) => (m) => m.type === 'new_notification' && m.data && m.data.id === id;
const isStatus = (dev, status) => (m) => m.type === 'device_status' && m.data && m.data.device_id === dev
  && m.data.status === status;

/* Polls GET /health on `srv` every `intervalMs` (a 503 window between the
 * drop of a stalled subscription and its replacement may be short) until
 * stop() or `maxMs`; keeps every sample {at, status, body}. */
function healthWatch(srv, { intervalMs = 20, maxMs = 90000 } = {}) {
  const w = { samples: [], on: true };
  const t0 = Date.now();
  w.done = (async () => {
    while (w.on && Date.now() - t0 < maxMs) {
      const at = Date.now();
      try {
        const r = await srv.http('GET', '/health', { timeoutMs: 2000 });
        w.samples.push({ at, status: r.status, body: r.json });
      } catch (e) {
        w.samples.push({ at, status: 'net', error: e.message });
      }
      await sleep(intervalMs);
    }
  })();
  w.stop = async () => {
    w.on = false;
    await w.done;
  };
  w.find = (pred, from = 0) => w.samples.find((s) => s.at >= from && pred(s));
  w.summary = (from = 0) => {
    /* runs of equal status: "200x12 503x3 200x40" */
    const out = [];
    for (const s of w.samples.filter((x) => x.at >= from)) {
      const last = out[out.length - 1];
      if (last && last.status === s.status) last.n += 1;
      else out.push({ status: s.status, n: 1 });
    }
    return out.map((r) => `${r.status}x${r.n}`).join(' ');
  };
  return w;
}

let watch = null;

/* Posts `n` notifications for `user` on B, one after another; returns the
 * ids (each must be 201: B's Redis is fine). */
async function postOnB(user, n, tag) {
  const ids = [];
  for (let i = 0; i < n; i += 1) {
    const r = await postNotification(B, user, { title: `${tag} ${i}` });
    assert.equal(r.status, 201, `POST on B (${tag} ${i}): ${r.status} ${r.text}`);
    ids.push(r.json.id);
  }
  return ids;
}

/* `c` holds every id of `want`, each once, in that order, with increasing
 * delivery ids (waits for the last one, bounded). */
async function holdsInOrder(c, want, timeoutMs, what) {
  await c.waitFor(isNew(want[want.length - 1]), timeoutMs, `${what}: the last of ${want.length} notifications`);
  await drainUntilIdle(c, { idleMs: 700, maxMs: 5000 });
  const got = notifIds(c).filter((id) => want.includes(id));
  assert.deepEqual(got, want, `${what}: each notification once, in order: ${c.describe()}`);
  const dids = durables(c).map((m) => m.id);
  for (let i = 1; i < dids.length; i += 1) {
    assert.equal(cmpStreamId(dids[i - 1], dids[i]), -1, `${c.label}: delivery ids increase: ${JSON.stringify(dids)}`);
  }
}

/* Shared by the freeze tests (they run in order). */
const F = { user: uid('ps') };

test('both instances healthy; a device on A gets a post on B (baseline through the proxy)', async () => {
  F.da = await A.device(F.user, 'da', { params: { ack: '1' }, label: 'da@A(ack)' });
  autoAck(F.da);
  F.db = await A.device(F.user, 'db', { label: 'db@A' });
  F.pub = await publicClient(A, '/ws/public');
  const [id] = await postOnB(F.user, 1, 'baseline');
  for (const c of [F.da, F.db]) await c.waitFor(isNew(id), 10000, `baseline on ${c.label}`);
  for (const s of [A, B]) assert.equal((await s.http('GET', '/health')).status, 200);
  if (proxy) assert.equal(proxy.liveSubscribers().length, 1, `one live subscriber connection of A: ${proxy.describe()}`);
});

test(`a stalled subscription (frozen by the proxy): A's /health is 503 {"status":"degraded"} within ${DETECT_MS / 1000} s`, { timeout: 40000, skip: PROXY_ONLY }, async () => {
  F.subsBefore = proxy.subscriberCount();
  watch = healthWatch(A);
  await sleep(300);
  proxy.freeze();
  F.freezeAt = Date.now();
  /* posted on B while A's subscription is frozen: A learns of them only
   * from the streams once it has resubscribed */
  F.during = await postOnB(F.user, 4, 'during the freeze');
  const mark = uid('bc');
  const r = await broadcast(B, 'test', { message: 'during the freeze', mark });
  assert.equal(r.status, 202, r.text);
  F.duringBroadcast = mark; /* at-most-once: its arrival is not asserted */
  /* the 503 lasts from the detection until the new subscriber connection
   * is up: the watch polls every 20 ms */
  const s = await until(() => watch.find((x) => x.status === 503, F.freezeAt), {
    timeoutMs: DETECT_MS, intervalMs: 50, what: `A's /health 503 after the freeze`,
  }).catch((e) => {
    throw new Error(`${e.message}; /health samples since the freeze: ${watch.summary(F.freezeAt)}; proxy: ${proxy.describe()}`);
  });
  F.degradedAt = s.at;
  assert.equal(s.body && s.body.status, 'degraded', JSON.stringify(s.body));
  assert.equal(s.body.redis, 'down', JSON.stringify(s.body));
  assert.equal((await B.http('GET', '/health')).status, 200, 'B (direct) stays healthy');
  /* a couple more while A is (or was just) degraded */
  F.during.push(...await postOnB(F.user, 2, 'while degraded'));
});

test(`then within ${RECOVER_MS / 1000} s A opens a new subscriber connection and /health is 200 again`, { timeout: 40000, skip: PROXY_ONLY }, async () => {
  assert.ok(F.degradedAt, 'the stall was not detected (previous test), nothing to recover from');
  try {
    await until(() => proxy.subscriberCount() > F.subsBefore
      && watch.find((x) => x.status === 200, Math.max(F.degradedAt, proxy.conns.filter((c) => c.sub).pop().subAt)), {
      timeoutMs: Math.max(RECOVER_MS - (Date.now() - F.degradedAt), 1000),
      intervalMs: 50,
      what: `a new subscriber connection and /health 200 (proxy: ${proxy.describe()})`,
    });
  } finally {
    await watch.stop();
  }
  const fresh = proxy.conns.filter((c) => c.sub).pop();
  assert.ok(fresh.subAt > F.freezeAt && !fresh.frozen, `the new subscriber connection: ${proxy.describe()}`);
  F.recoveredAt = Date.now();
  console.log(`PUBSUB FREEZE FIGURES ${JSON.stringify({
    detect_ms: F.degradedAt - F.freezeAt,
    new_subscriber_ms: fresh.subAt - F.freezeAt,
    health: watch.summary(F.freezeAt - 300),
  })}`);
  const h = await A.http('GET', '/health');
  assert.equal(h.status, 200, h.text);
  assert.equal(h.json.redis, 'up');
  /* the metrics of A tell the story; B saw nothing of it */
  const series = 'notisync_cluster_events_total';
  assert.equal(await metricSum(A, series, /event="canary_losses"/), 1);
  assert.equal(await metricSum(A, series, /event="subscriber_reconnects"/), 1);
  assert.equal(await metricSum(B, series, /event="canary_losses"/), undefined);
});

test('every notification posted on B during the freeze reaches the devices on A after the recovery, once, in order; a new post arrives live', { timeout: 40000, skip: PROXY_ONLY }, async () => {
  assert.ok(F.during && F.during.length, 'no posts were made during the freeze (previous test failed early)');
  for (const c of [F.da, F.db]) await holdsInOrder(c, F.during, 15000, `${c.label} after the recovery`);
  const [live] = await postOnB(F.user, 1, 'after the recovery');
  for (const c of [F.da, F.db]) await c.waitFor(isNew(live), 5000, `live post on ${c.label} (user channel re-subscribed)`);
  assert.equal(F.da.closeInfo, null, `da stayed connected: ${F.da.describe()}`);
});

test('a broadcast after the recovery reaches A (one during the freeze is not required)', { skip: PROXY_ONLY }, async () => {
  assert.ok(F.recoveredAt, 'A did not recover (previous tests)');
  const mark = uid('bc');
  const r = await broadcast(B, 'test', { message: 'after the recovery', mark });
  assert.equal(r.status, 202, r.text);
  for (const c of [F.pub, F.da]) {
    await c.waitFor((m) => m.type === 'test' && m.data && m.data.mark === mark, 10000, `broadcast after the recovery on ${c.label}`);
  }
  const during = F.pub.messages().filter((m) => m.data && m.data.mark === F.duringBroadcast).length;
  console.log(`PUBSUB BROADCAST DURING FREEZE received ${during} time(s) (at-most-once, not asserted)`);
});

test('the subscriber connection destroyed outright: A reconnects, resubscribes, and its devices get what was posted meanwhile', { timeout: 40000, skip: PROXY_ONLY }, async () => {
  const before = proxy.subscriberCount();
  const mark = F.da.frames.length;
  const killed = proxy.killSubscriber();
  assert.ok(killed >= 1);
  const killAt = Date.now();
  const meanwhile = await postOnB(F.user, 3, 'after the kill');
  const postedAt = Date.now();
  const fresh = await proxy.waitSubscribers(before + 1, 10000);
  assert.ok(fresh.subAt >= killAt, proxy.describe());
  console.log(`PUBSUB KILL FIGURES ${JSON.stringify({
    new_subscriber_ms: fresh.subAt - killAt, posts_done_ms: postedAt - killAt,
    posted_before_resubscribe: fresh.subAt >= postedAt,
  })}`);
  await until(async () => (await A.http('GET', '/health')).status === 200, { timeoutMs: 10000, what: "A's /health 200 after the reconnect" });
  for (const c of [F.da, F.db]) await holdsInOrder(c, meanwhile, 15000, `${c.label} after the kill`);
  /* channels re-subscribed: a status event and a broadcast from B arrive */
  const dc = await B.device(F.user, 'dc');
  await F.da.waitFor(isStatus('dc', 'online'), 10000, 'device_status dc (B) online on da (A)');
  const bmark = uid('bc');
  const r = await broadcast(B, 'test', { message: 'after the kill', mark: bmark });
  assert.equal(r.status, 202, r.text);
  await F.pub.waitFor((m) => m.data && m.data.mark === bmark, 10000, 'broadcast after the kill on A');
  const extra = F.da.frames.slice(mark).filter((f) => f.msg && f.msg.type === 'new_notification'
    && !meanwhile.includes(f.msg.data.id));
  assert.deepEqual(extra.map((f) => f.msg.data.id), [], `da got nothing it was not sent: ${F.da.describe()}`);
  for (const c of [dc, F.da, F.db, F.pub]) await c.close();
});
