'use strict';
/*
 * device_cap.test.js -- SPEC §2/§7 max_devices_per_user caps *concurrent*
 * devices (issue 10): a device whose connection has closed no longer counts
 * while its presence_grace runs, also across instances, while a reconnect
 * of that same device within the grace still emits no offline/online pair,
 * and concurrent connects never admit more than the cap.
 */
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { test, useServer, uid, sleep } = require('./lib/harness');

const CAP = 4;
const GRACE_S = 3;
const SECRET = crypto.randomBytes(24).toString('hex');
const env = {
  NOTISYNC_MAX_DEVICES_PER_USER: String(CAP),
  NOTISYNC_PRESENCE_GRACE: `${GRACE_S}s`,
};
/* two instances on one Redis and PostgreSQL, one secret */
const A = useServer({ env, secret: SECRET });
const B = useServer({ env, secret: SECRET });

const isStatus = (dev) => (m) => m.type === 'device_status' && m.data && m.data.device_id === dev;

/* Opens device `dev` of `user` on `srv` and resolves, bounded, with
 * {c, got: 'welcome' | 'closed', info} (info = the close code/reason). */
async function attempt(srv, user, dev) {
  const c = srv.ws(srv.wsUrl({ token: srv.token(user), device_id: dev }), { label: `${user}/${dev}` });
  await c.open();
  /* next() rejects when the connection closes first: that is a refusal */
  const got = await c.next('welcome', 15000).then(() => 'welcome', () => (c.closeInfo ? 'closed' : 'timeout'));
  return { c, got, info: c.closeInfo };
}

function assertRefused(r, what) {
  assert.equal(r.got, 'closed', `${what}: expected a refusal, got ${r.c.describe()}`);
  assert.equal(r.info.code, 1008, `${what}: ${r.c.describe()}`);
  assert.equal(r.info.reason, 'too many devices', `${what}: ${r.c.describe()}`);
}

function assertAdmitted(r, what) {
  assert.equal(r.got, 'welcome', `${what}: expected a welcome, got ${r.c.describe()}`);
}

async function closeAll(clients) {
  for (const c of clients) if (c && c.isOpen()) await c.close();
}

test(`cap ${CAP}, grace ${GRACE_S}s: a device that closed does not count; a new one 0.5 s later is admitted, the next is refused`, async () => {
  const user = uid('cap');
  const ds = [];
  for (let i = 1; i <= CAP; i += 1) ds.push(await A.device(user, `d${i}`));
  await ds[CAP - 1].close();
  await sleep(500);
  const fresh = await attempt(A, user, 'new');
  assertAdmitted(fresh, 'a new device 0.5 s after one of the cap closed');
  assert.equal((await fresh.c.ping()).type, 'pong');
  const over = await attempt(A, user, 'over');
  assertRefused(over, `a device beyond ${CAP} connected ones`);
  await closeAll([...ds, fresh.c]);
});

test(`cap ${CAP}, grace ${GRACE_S}s: the same device reconnecting within the grace is admitted and emits no offline/online pair`, async () => {
  const user = uid('cap');
  const ds = [];
  for (let i = 1; i <= CAP; i += 1) ds.push(await A.device(user, `d${i}`));
  const watcher = ds[0];
  await watcher.waitFor((m) => isStatus(`d${CAP}`)(m) && m.data.status === 'online', 10000, `d${CAP} online`);
  const mark = watcher.frames.length;
  await ds[CAP - 1].close();
  await sleep(300);
  const again = await attempt(B, user, `d${CAP}`); /* on the other instance */
  assertAdmitted(again, 'the same device back within the grace');
  await sleep((GRACE_S + 2) * 1000);
  const seen = watcher.frames.slice(mark).map((f) => f.msg).filter((m) => m && isStatus(`d${CAP}`)(m));
  assert.deepEqual(seen, [], `the watcher saw d${CAP} flap within the grace: ${JSON.stringify(seen)}`);
  assert.ok(again.c.isOpen(), 'the reconnected device stays connected');
  assertRefused(await attempt(A, user, 'over'), 'the cap is full again');
  await closeAll([...ds, again.c]);
});

test(`cap ${CAP}, grace ${GRACE_S}s: a new device takes the closed one's place; that device's return within the grace is then refused and it goes offline after the grace`, async () => {
  const user = uid('cap');
  const ds = [];
  for (let i = 1; i <= CAP; i += 1) ds.push(await A.device(user, `d${i}`));
  const watcher = ds[0];
  const t0 = Date.now();
  await ds[CAP - 1].close();
  await sleep(300);
  const fresh = await attempt(B, user, 'new');
  assertAdmitted(fresh, 'a new device in the place of the closed one');
  const back = await attempt(A, user, `d${CAP}`);
  assertRefused(back, `d${CAP} back while ${CAP} others are connected`);
  const off = await watcher.waitFor((m) => isStatus(`d${CAP}`)(m) && m.data.status === 'offline',
    (GRACE_S + 15) * 1000, `device_status d${CAP} offline`);
  assert.ok(Date.now() - t0 >= (GRACE_S - 1) * 1000, `offline before the grace ended: ${JSON.stringify(off)}`);
  await closeAll([...ds, fresh.c]);
});

test(`two instances: a device closed on B frees its place for a device on A (and B); the cap still counts both instances`, async () => {
  const user = uid('cap');
  const ds = [];
  for (let i = 1; i < CAP; i += 1) ds.push(await A.device(user, `a${i}`));
  const onB = await B.device(user, 'b1');
  assertRefused(await attempt(B, user, 'b2'), 'a 5th device on B');
  assertRefused(await attempt(A, user, 'a9'), 'a 5th device on A');
  await onB.close();
  await sleep(500);
  const fresh = await attempt(A, user, 'a4');
  assertAdmitted(fresh, 'a device on A 0.5 s after one closed on B');
  assertRefused(await attempt(B, user, 'b3'), 'the cap is full again (seen from B)');
  await closeAll([...ds, fresh.c]);
});

test(`concurrent connects on two instances never admit more than the cap, also while a closed device is in its grace`, async () => {
  const user = uid('cap');
  const ds = [];
  for (let i = 1; i < CAP; i += 1) ds.push(await (i % 2 ? A : B).device(user, `k${i}`));
  /* one place left: six devices race for it */
  const race1 = await Promise.all(Array.from({ length: 6 }, (_, i) => attempt(i % 2 ? A : B, user, `r${i}`)));
  const won1 = race1.filter((r) => r.got === 'welcome');
  assert.equal(won1.length, 1, `exactly one of six admitted for the last place: ${race1.map((r) => r.got).join(',')}`);
  for (const r of race1.filter((x) => x.got !== 'welcome')) assertRefused(r, 'a loser of the race');
  /* the full cap; one closes, and within its grace six more race */
  await ds[0].close();
  await sleep(500);
  const race2 = await Promise.all(Array.from({ length: 6 }, (_, i) => attempt(i % 2 ? A : B, user, `s${i}`)));
  const won2 = race2.filter((r) => r.got === 'welcome');
  assert.equal(won2.length, 1, `exactly one of six admitted for the freed place: ${race2.map((r) => r.got).join(',')}`);
  for (const r of race2.filter((x) => x.got !== 'welcome')) assertRefused(r, 'a loser of the second race');
  await closeAll([...ds, won1[0].c, won2[0].c]);
});
