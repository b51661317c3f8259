'use strict';
/*
 * cluster_reshard.test.js -- SPEC §10 "a redirect (MOVED/ASK) or a
 * resharding is followed without an error reaching a client" (issue 13).
 *
 * A private 3-master + 3-replica cluster (useCluster, so the test may move
 * slots freely) and two notisyncd instances in redis_mode=cluster.  Users:
 * two whose `{user}` tags share one hash slot S (found with the JS CRC16
 * helper) on master SRC; one on another slot of SRC; one on the target
 * master TGT; one on the third master.  Every user has device `a` on
 * instance 0 (non-ack), device `b` on instance 1 (ack mode, auto-acking)
 * and device `c`, registered and then offline until the end (replay).
 *
 * Two producers post single notifications over REST (both instances, every
 * user) the whole time, bounded in count and time, while slot S moves with
 * the standard procedure: CLUSTER SETSLOT S IMPORTING on the target,
 * MIGRATING on the source, the slot's keys MIGRATEd slowly (phase 1 SRC ->
 * TGT key by key, phase 2 TGT -> SRC back in batches of 4, with pauses, so
 * that commands meet the migrating state and get ASK / TRYAGAIN), then
 * CLUSTER SETSLOT S NODE on every master (target, source, the other one).
 * During each move a device of the moving slot sends a read action; after
 * each move a probe is posted at once (delivery latency measured), the
 * sharded subscription of the slot's users is checked on the new master
 * (PUBSUB SHARDNUMSUB: both instances), a second probe must arrive live
 * within 1.5 s, and a read action (WS after phase 1, REST after phase 2)
 * must be answered and synced to the user's other live device.
 *
 * Asserted (all collected, then reported together with the figures):
 *   - every POST answered 201 within 8 s (a 503 / 5xx during a resharding
 *     is an error reaching a producer: counted per phase and per slot);
 *   - every action during and after a move answered `ok` / 200;
 *   - every device got every notification exactly once (the live devices
 *     over their connections, which must not be closed; the offline device
 *     on replay), and the syncs of the actions; a POST that did not get
 *     201 is retried with its id afterwards (SPEC §5.5) so that
 *     exactly-once is still checked for it;
 *   - probes reach the live devices within 5 s of the move, and within
 *     1.5 s once the subscription is on the new master;
 *   - /health is 200 on both instances again within 5 s of each move (the
 *     non-200 samples are counted).
 * Figures (RESHARD FIGURES {...}): statuses per phase, the redirects the
 * cluster answered (INFO errorstats ASK / TRYAGAIN / MOVED: notisyncd's
 * /metrics does not expose its own redirect count), migration times, probe
 * latencies, notisync_cluster_events_total{event="subscriber_reconnects"}.
 *
 * Only in the cluster variant (ctest e2e_cluster.cluster_reshard,
 * NS_REDIS_MODE=cluster): the standalone glob's e2e.cluster_reshard skips.
 */
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const {
  test, newServer, useCluster, setup, uid, sleep, until, newId, notificationBody, postNotification,
  durables, autoAck, clusterMode, keySlot, redisCommand, metricSum, servers,
} = require('./lib/harness');
const { healthPoll } = require('./lib/rcluster');

const SKIP = clusterMode() ? false : 'cluster variant only: runs as e2e_cluster.cluster_reshard (NS_REDIS_MODE=cluster)';
const POST_TIMEOUT_MS = 8000;     /* a POST that takes longer counts as a hang */
const PRODUCERS = 2;
const PAUSE_MS = 40;              /* between one producer's posts */
const MAX_POSTS = 1500;           /* bounds of the production, whatever happens */
const PRODUCE_MAX_MS = 40000;
const STEADY_MS = 1500;           /* load before / after each move */
const KEY_PAUSE_MS = 15;          /* between two MIGRATE calls */
const PROBE_MOVE_MS = 5000;       /* a probe posted right after a move */
const PROBE_LIVE_MS = 1500;       /* once the subscription is on the new master */
const HEALTH_BACK_MS = 5000;

const cl = SKIP ? null : useCluster();
const secret = crypto.randomBytes(24).toString('hex');

/* ------------------------------------------------------------ redis admin */

async function admin(port, args, timeoutMs = 6000) {
  const r = await redisCommand(port, args, { timeoutMs });
  if (r instanceof Error) throw new Error(`${args.join(' ')} on ${port}: ${r.message}`);
  return r;
}

/* INFO errorstats of every master: {ASK, TRYAGAIN, MOVED, other} summed. */
async function errorStats(ports) {
  const sum = { ASK: 0, TRYAGAIN: 0, MOVED: 0, CLUSTERDOWN: 0 };
  for (const p of ports) {
    const text = await admin(p, ['INFO', 'errorstats']);
    for (const m of String(text).matchAll(/^errorstat_([A-Z]+):count=(\d+)/gm)) {
      sum[m[1]] = (sum[m[1]] || 0) + Number(m[2]);
    }
  }
  return sum;
}

function diffStats(a, b) {
  const out = {};
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
    const d = (b[k] || 0) - (a[k] || 0);
    if (d) out[k] = d;
  }
  return out;
}

/* Moves `slot` from master `from` to master `to` ({port, id}) the way
 * redis-cli --cluster reshard does, slowly: `batch` keys per MIGRATE and
 * `pauseMs` between calls.  `others` are the remaining masters.
 * `onHalf` runs (not awaited) once half of the first listing has moved. */
async function moveSlot(slot, from, to, others, { batch, pauseMs, onHalf }) {
  const t0 = Date.now();
  await admin(to.port, ['CLUSTER', 'SETSLOT', slot, 'IMPORTING', from.id]);
  await admin(from.port, ['CLUSTER', 'SETSLOT', slot, 'MIGRATING', to.id]);
  const migratingAt = Date.now();
  let moved = 0;
  let calls = 0;
  let halfDone = false;
  let firstListing = null;
  for (let round = 0; round < 100 && Date.now() - t0 < 20000; round += 1) {
    const keys = await admin(from.port, ['CLUSTER', 'GETKEYSINSLOT', slot, 1000]);
    if (!keys.length) break;
    if (firstListing === null) firstListing = keys.length;
    for (let i = 0; i < keys.length; i += batch) {
      const part = keys.slice(i, i + batch);
      const r = await redisCommand(from.port, ['MIGRATE', '127.0.0.1', to.port, '', 0, 5000, 'KEYS', ...part], { timeoutMs: 8000 });
      calls += 1;
      if (r instanceof Error) throw new Error(`MIGRATE ${part.join(' ')} ${from.port} -> ${to.port}: ${r.message}`);
      if (r === 'OK') moved += part.length;
      if (!halfDone && onHalf && moved >= Math.ceil(firstListing / 2)) {
        halfDone = true;
        onHalf();
      }
      await sleep(pauseMs);
    }
  }
  const left = await admin(from.port, ['CLUSTER', 'COUNTKEYSINSLOT', slot]);
  if (left !== 0) throw new Error(`slot ${slot}: ${left} keys still on ${from.port} after the migration loop`);
  if (!halfDone && onHalf) onHalf();
  for (const n of [to, from, ...others]) await admin(n.port, ['CLUSTER', 'SETSLOT', slot, 'NODE', to.id]);
  const doneAt = Date.now();
  return { t0, migratingAt, doneAt, keys: moved, first_listing: firstListing, migrate_calls: calls, migrating_ms: doneAt - migratingAt };
}

/* ------------------------------------------------------------- clients */

/* A device kept connected: a closed connection is counted and reopened
 * (bounded), same instance and mode, so that deliveries stay measurable. */
function keptDevice(srv, user, id, ack) {
  const d = { srv, user, id, ack, conns: [], keeping: true };
  const connect = async () => {
    const c = await srv.device(user, id, { params: ack ? { ack: '1' } : {}, label: `${user}/${id}#${d.conns.length + 1}` });
    if (ack) autoAck(c);
    d.conns.push(c);
    return c;
  };
  d.ready = connect();
  d.loop = (async () => {
    await d.ready.catch(() => {});
    for (let tries = 0; d.keeping && tries < 50;) {
      await sleep(200);
      const last = d.conns[d.conns.length - 1];
      if (d.keeping && (!last || last.closeInfo)) {
        tries += 1;
        await connect().catch(() => sleep(300));
      }
    }
  })();
  d.msgs = () => d.conns.flatMap((c) => c.messages());
  d.ids = () => d.conns.flatMap((c) => durables(c, 'new_notification').map((m) => m.data && m.data.id));
  d.has = (pred) => d.conns.some((c) => c.messages().some(pred));
  d.last = () => d.conns[d.conns.length - 1];
  return d;
}

function wsAction(c, notificationId, action) {
  const ref = uid('ref');
  const t0 = Date.now();
  c.send({ type: 'notification_action', ref, data: { notification_id: notificationId, action } });
  return until(() => c.messages().find((m) => m.ref === ref && (m.type === 'ok' || m.type === 'error')),
    { timeoutMs: 10000, intervalMs: 20, what: `reply to ${action} ref=${ref}` })
    .then((m) => ({ type: m.type, code: m.data && m.data.code, ms: Date.now() - t0 }))
    .catch((e) => ({ type: 'none', error: e.message, ms: Date.now() - t0 }));
}

const isSync = (id, pred = () => true) => (m) => m.type === 'notification_sync' && m.data
  && m.data.notification_id === id && pred(m.data);

/* ----------------------------------------------------------------- test */

/* PostgreSQL of scripts/services (NS_SVC_DIR); Redis is only the private
 * cluster, so the shared one (NS_CLUSTER_DIR) is not needed. */
function databaseUrl() {
  const file = path.join(process.env.NS_SVC_DIR || '.', 'env.json');
  const url = JSON.parse(fs.readFileSync(file, 'utf8')).NOTISYNC_DATABASE_URL;
  if (!url) throw new Error(`${file} has no NOTISYNC_DATABASE_URL`);
  return url;
}

let srvs = null;
if (!SKIP) {
  setup(async () => {
    const db = databaseUrl();
    srvs = ['A', 'B'].map((n) => newServer({
      secret,
      instanceId: uid(`rs${n}`),
      services: false,
      env: { NOTISYNC_REDIS_URL: cl.url, NOTISYNC_DATABASE_URL: db },
    }));
    for (const s of srvs) await s.start();
  });
}

test('slot moved to another master and back under load: every POST 201, every device every notification once, actions sync, the sharded subscription follows, /health 200', { timeout: 120000, skip: SKIP }, async () => {
  const tStart = Date.now();
  const problems = [];
  const figures = { cluster_start_ms: cl.startMs };

  /* ---- the users and their slots */
  const nodes = await cl.nodes();
  const masters = nodes.filter((n) => n.role === 'master' && !n.fail).sort((x, y) => x.port - y.port);
  assert.equal(masters.length, 3, `3 masters: ${JSON.stringify(nodes)}`);
  const ownerOf = (slot) => masters.find((m) => m.slots.some(([a, b]) => slot >= a && slot <= b));
  const slotOf = (u) => keySlot(`{${u}}`);
  const moving1 = uid('rs');
  const S = slotOf(moving1);
  const src = ownerOf(S);
  const [tgt, third] = masters.filter((m) => m !== src);
  let moving2 = null;
  for (let i = 0; i < 400000 && !moving2; i += 1) {
    const u = uid('rs');
    if (slotOf(u) === S) moving2 = u;
  }
  assert.ok(moving2, `a second user in slot ${S}`);
  const pick = (pred) => {
    for (let i = 0; i < 10000; i += 1) {
      const u = uid('rs');
      if (slotOf(u) !== S && pred(ownerOf(slotOf(u)))) return u;
    }
    throw new Error('no user found');
  };
  const sameMaster = pick((m) => m === src);
  const onTarget = pick((m) => m === tgt);
  const onThird = pick((m) => m === third);
  const users = [moving1, moving2, sameMaster, onTarget, onThird];
  const movingUsers = new Set([moving1, moving2]);
  const masterPorts = masters.map((m) => m.port);
  figures.slot = S;
  figures.src = src.port;
  figures.tgt = tgt.port;
  figures.users = Object.fromEntries(users.map((u) => [u, { slot: slotOf(u), master: ownerOf(slotOf(u)).port }]));

  /* ---- devices: a (instance 0), b (instance 1, ack), c registered then offline */
  for (const u of users) {
    const c = await srvs[0].device(u, 'c');
    await c.close();
  }
  const devs = new Map();
  for (const u of users) devs.set(u, { a: keptDevice(srvs[0], u, 'a', false), b: keptDevice(srvs[1], u, 'b', true) });
  const live = [...devs.values()].flatMap((x) => [x.a, x.b]);
  await Promise.all(live.map((d) => d.ready));
  await until(() => live.every((d) => d.last() && d.last().welcome), { timeoutMs: 15000, what: 'every live device welcomed' });

  /* ---- load, health, figures before */
  const watches = srvs.map(healthPoll);
  const reconnectsBefore = [];
  for (const s of srvs) reconnectsBefore.push((await metricSum(s, 'notisync_cluster_events_total', /subscriber_reconnects/)) || 0);
  const posts = [];
  let phase = 'pre1';
  let producing = true;
  const tLoad = Date.now();
  const producer = async (k) => {
    for (let i = 0; producing && posts.length < MAX_POSTS && Date.now() - tLoad < PRODUCE_MAX_MS; i += 1) {
      const user = users[(i * PRODUCERS + k) % users.length];
      const si = (i + k) % 2;
      const body = notificationBody({ id: newId(), title: `reshard ${k}.${i}` });
      const p = { id: body.id, user, srv: si, at: Date.now(), phase, status: null };
      posts.push(p);
      const r = await postNotification(srvs[si], user, {}, { raw: body, timeoutMs: POST_TIMEOUT_MS })
        .catch((e) => ({ status: /no answer within|timed out/.test(e.message) ? 'timeout' : 'net', text: e.message }));
      p.done = Date.now();
      p.status = r.status;
      p.text = (r.text || '').slice(0, 200);
      await sleep(PAUSE_MS);
    }
  };
  const producers = Array.from({ length: PRODUCERS }, (_, k) => producer(k));
  const probes = [];

  /* A probe for `user` posted now: ms until both live devices have it. */
  const probe = async (name, user, limitMs) => {
    const body = notificationBody({ id: newId(), title: `probe ${name}` });
    const at = Date.now();
    const p = { id: body.id, user, srv: 1, at, phase: `probe-${name}`, status: null };
    posts.push(p);
    const r = await postNotification(srvs[1], user, {}, { raw: body, timeoutMs: POST_TIMEOUT_MS })
      .catch((e) => ({ status: 'net', text: e.message }));
    p.done = Date.now();
    p.status = r.status;
    p.text = (r.text || '').slice(0, 200);
    const d = devs.get(user);
    let ms = null;
    await until(() => [d.a, d.b].every((x) => x.ids().includes(body.id)), { timeoutMs: limitMs + 3000, intervalMs: 10, what: `probe ${name}` })
      .then(() => { ms = Date.now() - at; })
      .catch(() => {});
    probes.push({ name, user, status: r.status, ms });
    if (r.status !== 201) problems.push(`probe ${name}: POST answered ${r.status} ${p.text}`);
    if (ms === null || ms > limitMs) problems.push(`probe ${name} for ${user}: on both live devices in ${ms === null ? `more than ${limitMs + 3000}` : ms} ms (want <= ${limitMs})`);
    return ms;
  };

  /* The sharded subscription of the moving users on `to`: both instances. */
  const subFollows = async (name, to, from, since) => {
    let ms = null;
    const chans = [...movingUsers].map((u) => `u:{${u}}`);
    await until(async () => {
      const onTo = await admin(to.port, ['PUBSUB', 'SHARDNUMSUB', ...chans]);
      const onFrom = await admin(from.port, ['PUBSUB', 'SHARDNUMSUB', ...chans]);
      const counts = (r) => r.filter((_, i) => i % 2 === 1);
      return counts(onTo).every((n) => n === 2) && counts(onFrom).every((n) => n === 0);
    }, { timeoutMs: 5000, intervalMs: 50, what: `${name}: subscriptions on ${to.port}` })
      .then(() => { ms = Date.now() - since; })
      .catch(() => problems.push(`${name}: the sharded subscriptions of ${chans.join(', ')} were not both on ${to.port} (and gone from ${from.port}) within 5 s of the move`));
    return ms;
  };

  const healthBack = async (name, since) => {
    let ms = null;
    await until(() => watches.every((w) => {
      const last = w.samples[w.samples.length - 1];
      return last && last.at > since && last.status === 200;
    }), { timeoutMs: HEALTH_BACK_MS, intervalMs: 50, what: `${name}: /health 200` })
      .then(() => { ms = Date.now() - since; })
      .catch(() => problems.push(`${name}: /health not 200 on both instances within ${HEALTH_BACK_MS} ms of the move: ${JSON.stringify(watches.map((w) => w.samples.slice(-3)))}`));
    return ms;
  };

  /* a notification both live devices of `user` have (for actions) */
  const delivered = (user) => {
    const d = devs.get(user);
    const inB = new Set(d.b.ids());
    const id = d.a.ids().find((x) => inB.has(x) && !used.has(x));
    if (id) used.add(id);
    return id;
  };

  const actions = [];
  const used = new Set();      /* notification ids an action was sent for */
  const actionIds = new Map(); /* user -> [{id, source}] of the actions answered ok: syncs expected */
  const recordAction = (user, id, source) => {
    if (!actionIds.has(user)) actionIds.set(user, []);
    actionIds.get(user).push({ id, source });
  };
  const okThen = (user, id, source) => (r) => {
    if (r.type === 'ok' || r.type === 200) recordAction(user, id, source);
    return r;
  };

  /* ---- phase 1: S from SRC to TGT, key by key */
  await sleep(STEADY_MS);
  const es0 = await errorStats(masterPorts);
  phase = 'mig1';
  let during1 = null;
  const m1 = await moveSlot(S, src, tgt, [third], {
    batch: 1,
    pauseMs: KEY_PAUSE_MS,
    onHalf: () => {
      const id = delivered(moving2);
      if (id) during1 = wsAction(devs.get(moving2).a.last(), id, 'read').then(okThen(moving2, id, 'a'));
    },
  });
  phase = 'post1';
  const es1 = await errorStats(masterPorts);
  figures.move1 = { ...m1, redirects_answered: diffStats(es0, es1) };
  const metMigrating = (f, name) => {
    if (!(f.redirects_answered.ASK || f.redirects_answered.TRYAGAIN)) problems.push(`${name}: no command met the migrating state (no ASK / TRYAGAIN answered): the test proved nothing about it`);
  };
  metMigrating(figures.move1, 'move 1');
  const p1 = probe('after-move1', moving1, PROBE_MOVE_MS);
  figures.move1.sub_follow_ms = await subFollows('move 1', tgt, src, m1.doneAt);
  await p1;
  await probe('live-after-move1', moving1, PROBE_LIVE_MS);
  figures.move1.health_200_ms = await healthBack('move 1', m1.doneAt);
  if (during1) {
    const r = await during1;
    actions.push({ name: 'ws read during move 1', user: moving2, ...r });
  }
  {
    const id = delivered(moving1);
    assert.ok(id, `${moving1} has a delivered notification`);
    const r = await wsAction(devs.get(moving1).a.last(), id, 'read').then(okThen(moving1, id, 'a'));
    const t0 = Date.now();
    const synced = await until(() => devs.get(moving1).b.has(isSync(id, (x) => x.is_read === true && x.source_device === 'a')),
      { timeoutMs: 5000, intervalMs: 20, what: 'sync' }).then(() => Date.now() - t0).catch(() => null);
    actions.push({ name: 'ws read after move 1', user: moving1, ...r, sync_ms: synced });
    if (synced === null) problems.push(`ws read after move 1: device b of ${moving1} got no notification_sync for ${id} within 5 s`);
  }
  await sleep(STEADY_MS);

  /* ---- phase 2: S back from TGT to SRC, in batches of 4 */
  phase = 'mig2';
  let during2 = null;
  const m2 = await moveSlot(S, tgt, src, [third], {
    batch: 4,
    pauseMs: KEY_PAUSE_MS * 2,
    onHalf: () => {
      const id = delivered(moving2);
      if (id) during2 = wsAction(devs.get(moving2).a.last(), id, 'read').then(okThen(moving2, id, 'a'));
    },
  });
  phase = 'post2';
  const es2 = await errorStats(masterPorts);
  figures.move2 = { ...m2, redirects_answered: diffStats(es1, es2) };
  metMigrating(figures.move2, 'move 2');
  const p2 = probe('after-move2', moving2, PROBE_MOVE_MS);
  figures.move2.sub_follow_ms = await subFollows('move 2', src, tgt, m2.doneAt);
  await p2;
  await probe('live-after-move2', moving2, PROBE_LIVE_MS);
  figures.move2.health_200_ms = await healthBack('move 2', m2.doneAt);
  if (during2) {
    const r = await during2;
    actions.push({ name: 'ws read during move 2', user: moving2, ...r });
  }
  {
    /* REST read from device b: device a gets the sync */
    const id = delivered(moving1);
    assert.ok(id, `${moving1} has a second delivered notification`);
    const t0 = Date.now();
    const r = await srvs[0].http('POST', `/api/v1/notifications/${id}/actions`, {
      token: srvs[0].token(moving1), body: { action: 'read' }, headers: { 'X-Device-ID': 'b' }, timeoutMs: 8000,
    }).catch((e) => ({ status: 'net', text: e.message }));
    const ms = Date.now() - t0;
    okThen(moving1, id, 'b')({ type: r.status });
    const synced = await until(() => devs.get(moving1).a.has(isSync(id, (x) => x.is_read === true && x.source_device === 'b')),
      { timeoutMs: 5000, intervalMs: 20, what: 'sync' }).then(() => Date.now() - t0).catch(() => null);
    actions.push({ name: 'rest read after move 2', user: moving1, type: r.status, ms, sync_ms: synced });
    if (r.status !== 200) problems.push(`REST read after move 2: answered ${r.status} ${(r.text || '').slice(0, 200)}`);
    if (synced === null) problems.push(`REST read after move 2: device a of ${moving1} got no notification_sync for ${id} within 5 s`);
  }
  await sleep(STEADY_MS);

  /* ---- end of the load */
  producing = false;
  await Promise.all(producers);
  for (const w of watches) await w.stop();
  for (const a of actions) {
    if (a.type !== 'ok' && a.type !== 200) problems.push(`${a.name} (${a.user}): answered ${a.type}${a.code ? ` ${a.code}` : ''}${a.error ? ` ${a.error}` : ''} in ${a.ms} ms`);
  }

  /* statuses, per phase and per slot group */
  const byPhase = {};
  for (const p of posts) {
    const g = movingUsers.has(p.user) ? 'slot_S' : 'other_slots';
    const k = `${p.phase}/${g}`;
    byPhase[k] = byPhase[k] || {};
    byPhase[k][p.status] = (byPhase[k][p.status] || 0) + 1;
  }
  const bad = posts.filter((p) => p.status !== 201);
  figures.posts = posts.length;
  figures.statuses = posts.reduce((o, p) => ({ ...o, [p.status]: (o[p.status] || 0) + 1 }), {});
  figures.statuses_by_phase = byPhase;
  figures.post_ms_max = Math.max(...posts.map((p) => p.done - p.at));
  if (bad.length) {
    figures.non_201 = bad.slice(0, 10).map((p) => ({
      user: movingUsers.has(p.user) ? `${p.user} (slot S)` : p.user, phase: p.phase, status: p.status, ms: p.done - p.at, text: p.text.replace(/["\\]/g, "'"),
    }));
    problems.push(`${bad.length} of ${posts.length} POSTs not answered 201 (a resharding reached the producer): ${JSON.stringify(byPhase)}`);
  }

  /* retry every POST that did not get 201 with its id (SPEC §5.5) */
  figures.retries = {};
  for (const p of bad) {
    const r = await postNotification(srvs[p.srv], p.user, {}, { raw: notificationBody({ id: p.id, title: 'retry' }), timeoutMs: POST_TIMEOUT_MS })
      .catch((e) => ({ status: 'net', text: e.message }));
    figures.retries[r.status] = (figures.retries[r.status] || 0) + 1;
    if (r.status !== 200 && r.status !== 201) problems.push(`retry of ${p.id} (${p.user}) answered ${r.status} ${(r.text || '').slice(0, 200)}`);
  }

  /* ---- deliveries: every notification on every live device, once */
  const want = new Map(users.map((u) => [u, posts.filter((p) => p.user === u).map((p) => p.id)]));
  const tWait = Date.now();
  await until(() => live.every((d) => {
    const got = new Set(d.ids());
    return want.get(d.user).every((id) => got.has(id));
  }), { timeoutMs: 15000, intervalMs: 100, what: 'every notification on every live device' }).catch(() => {});
  figures.live_complete_ms = Date.now() - tWait;
  await sleep(1000); /* late duplicates */
  for (const d of live) d.keeping = false;
  await Promise.all(live.map((d) => d.loop));

  let lost = 0;
  let dups = 0;
  let extra = 0;
  const check = (label, user, ids) => {
    const got = new Map();
    for (const id of ids) got.set(id, (got.get(id) || 0) + 1);
    const missing = want.get(user).filter((id) => !got.has(id));
    const twice = [...got].filter(([, n]) => n > 1).map(([id]) => id);
    const unknown = [...got.keys()].filter((id) => !want.get(user).includes(id));
    lost += missing.length;
    dups += twice.length;
    extra += unknown.length;
    if (missing.length) problems.push(`${label}: ${missing.length} of ${want.get(user).length} notifications never delivered (${movingUsers.has(user) ? 'slot S' : 'other slot'}), e.g. ${JSON.stringify(posts.filter((p) => missing.includes(p.id)).slice(0, 3).map((p) => ({ id: p.id, phase: p.phase, status: p.status })))}`);
    if (twice.length) problems.push(`${label}: ${twice.length} notifications delivered more than once, e.g. ${twice.slice(0, 3).join(', ')}`);
    if (unknown.length) problems.push(`${label}: ${unknown.length} notifications of someone else`);
  };
  for (const d of live) {
    check(`${d.user}/${d.id} (live)`, d.user, d.ids());
    if (d.conns.length !== 1) problems.push(`${d.user}/${d.id}: its connection closed during the resharding (${d.conns.length - 1} reconnects; closes ${JSON.stringify(d.conns.map((c) => c.closeInfo))})`);
  }
  figures.live_reconnects = live.reduce((n, d) => n + d.conns.length - 1, 0);

  /* ---- the offline device of every user: everything on replay, once */
  const replays = [];
  for (const u of users) {
    const c = await srvs[1].device(u, 'c', { label: `${u}/c replay` });
    replays.push({ u, c });
  }
  const wantSyncs = (u) => (actionIds.get(u) || []);
  await until(() => replays.every(({ u, c }) => {
    const got = new Set(durables(c, 'new_notification').map((m) => m.data.id));
    return want.get(u).every((id) => got.has(id)) && wantSyncs(u).every((a) => c.messages().some(isSync(a.id)));
  }), { timeoutMs: 15000, intervalMs: 100, what: 'every notification and sync on every replayed device' }).catch(() => {});
  await sleep(500);
  for (const { u, c } of replays) {
    check(`${u}/c (replay)`, u, durables(c, 'new_notification').map((m) => m.data.id));
    for (const a of wantSyncs(u)) {
      if (!c.messages().some(isSync(a.id, (x) => x.is_read === true))) problems.push(`${u}/c (replay): no notification_sync for the read of ${a.id}`);
    }
    c.terminate();
  }
  /* the syncs of the actions on the live devices other than their source */
  for (const [u, list] of actionIds) {
    for (const a of list) {
      for (const id of ['a', 'b']) {
        if (id === a.source) continue;
        if (!devs.get(u)[id].has(isSync(a.id))) problems.push(`${u}/${id} (live): no notification_sync for the read of ${a.id} by ${a.source}`);
      }
    }
  }
  figures.lost_deliveries = lost;
  figures.duplicate_deliveries = dups;
  figures.foreign_deliveries = extra;

  /* ---- health and the servers' own view */
  figures.health_non_200_samples = watches.map((w) => w.samples.filter((s) => s.status !== 200).length);
  figures.health_samples = watches.map((w) => w.samples.length);
  figures.subscriber_reconnects = [];
  for (let i = 0; i < srvs.length; i += 1) {
    const now = (await metricSum(srvs[i], 'notisync_cluster_events_total', /subscriber_reconnects/)) || 0;
    figures.subscriber_reconnects.push(now - reconnectsBefore[i]);
  }
  figures.log_errors = srvs.map((s) => {
    const lines = s.log().split('\n');
    const count = (re) => lines.filter((l) => re.test(l)).length;
    return { queue_push: count(/queue push: /), queue_fetch: count(/queue fetch: /), sub_errors: count(/redis sub .*(MOVED|ASK|CLUSTERDOWN)/) };
  });
  const firstPush = servers.flatMap((s) => s.log().split('\n').filter((l) => /queue push: /.test(l)).slice(0, 2));
  if (firstPush.length) figures.log_queue_push_examples = firstPush.map((l) => l.slice(0, 240));
  figures.probes = probes;
  figures.actions = actions;
  figures.total_ms = Date.now() - tStart;
  console.log(`RESHARD FIGURES ${JSON.stringify(figures)}`);

  assert.deepEqual(problems, [], `resharding reached clients (figures above): ${JSON.stringify(figures)}`);
});
