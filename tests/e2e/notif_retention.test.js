'use strict';
/*
 * notif_retention.test.js -- SPEC §9 rule 6, retention: a notification
 * whose created_at is older than notification_retention is deleted from
 * PostgreSQL within 10 s of passing it, in bounded batches, by one instance
 * at a time (the two instances' notisync_notifications_expired_total add up
 * to exactly the rows deleted); newer ones and comments are never touched;
 * 0 keeps everything; the default is 90d.
 *
 * Rows are made old by moving created_at back with psql (lib/pgq.js).  The
 * file runs on a private Redis + PostgreSQL: a short retention deletes
 * every old row of its database, which must not be the shared one.
 * Instances are started and stopped in sequence: 1h (two instances),
 * then 3s, then 0, then the default.
 */
const assert = require('node:assert/strict');
const {
  test, newServer, setup, uid, sleep, until, postNotification, postBatch, postComment, newPostId,
  metricSum, PrivateServices,
} = require('./lib/harness');
const {
  dbCount, dbExisting, dbUnread, backdateNotifications, backdateUser, backdateComments, dbComments,
} = require('./lib/pgq');

const svc = new PrivateServices();
setup(() => svc.start());
const secret = uid('secret');
function instance(retention) {
  const env = retention === undefined ? {} : { NOTISYNC_NOTIFICATION_RETENTION: retention };
  return newServer({ secret, env, instanceId: uid('R') });
}
const R1 = instance('1h');
const R2 = instance('1h');
setup(async () => {
  await start(R1);
  await start(R2);
});

async function start(s) {
  s.opts.env.NOTISYNC_REDIS_URL = svc.redisUrl;
  s.opts.env.NOTISYNC_DATABASE_URL = svc.databaseUrl;
  await s.start();
}

const DEADLINE_MS = 10000;   /* SPEC: within 10 s */
const SLACK_MS = 3000;       /* a loaded machine */
const expiredTotal = async (list) => {
  let sum = 0;
  for (const s of list) sum += (await metricSum(s, 'notisync_notifications_expired_total')) || 0;
  return sum;
};

async function postN(server, user, n) {
  const ids = [];
  for (let i = 0; i < n; i += 1) {
    const r = await postNotification(server, user, { title: `r${i}` });
    assert.equal(r.status, 201, r.text);
    ids.push(r.json.id);
  }
  return ids;
}

async function status(server, user, id) {
  return (await server.http('GET', `/api/v1/notifications/${id}`, { token: server.token(user) })).status;
}

async function comments(server, user, n) {
  const postId = newPostId('ret');
  for (let i = 0; i < n; i += 1) {
    const r = await postComment(server, user, postId, `comment ${i}`);
    assert.equal(r.status, 201, r.text);
  }
  return postId;
}

test('retention 1h on two instances: rows older than 1 h are deleted within 10 s, counted once; newer rows and old comments stay', { timeout: 120000 }, async () => {
  const user = uid();
  const metric0 = await expiredTotal([R1, R2]);
  const old = await postN(R1, user, 3);
  const fresh = await postN(R2, user, 2);
  const postId = await comments(R1, user, 2);
  assert.equal(await backdateComments(svc.databaseUrl, postId, '2 hours'), 2);
  assert.equal(await backdateNotifications(svc.databaseUrl, old, '2 hours'), 3);
  const t0 = Date.now();
  await until(async () => (await dbExisting(svc.databaseUrl, old)) === 0,
    { timeoutMs: DEADLINE_MS + SLACK_MS, intervalMs: 250, what: 'the 2-hour-old rows deleted' });
  const took = Date.now() - t0;
  for (const id of old) assert.equal(await status(R2, user, id), 404, 'GET of a deleted one is 404');
  for (const id of fresh) assert.equal(await status(R1, user, id), 200, 'a fresh one stays');
  assert.equal(await dbComments(svc.databaseUrl, postId), 2, 'comments are never touched');
  /* the deleted unread rows leave the unread count (SPEC §9.4: the REST figure = the database's) */
  const unread = await R1.http('GET', '/api/v1/notifications/unread_count', { token: R1.token(user) });
  assert.equal(unread.status, 200, unread.text);
  assert.equal(unread.json.unread, 2, `unread after the deletion: ${unread.text}`);
  assert.equal(await dbUnread(svc.databaseUrl, user), 2);
  const list = await R1.http('GET', `/api/v1/notes/${postId}/comments`);
  assert.equal(list.json.count, 2, list.text);
  await until(async () => (await expiredTotal([R1, R2])) >= metric0 + 3, { timeoutMs: 5000, what: 'metric +3' });
  await sleep(1000);
  assert.equal(await expiredTotal([R1, R2]), metric0 + 3, 'the two instances count each deleted row once');
  console.log(`RETENTION FIGURES ${JSON.stringify({ case: '1h', deleted_after_ms: took })}`);
});

test('retention 1h: 2,500 old rows go within 10 s (bounded batches), a row 59 minutes old stays', { timeout: 180000 }, async () => {
  const user = uid('many');
  const keep = uid('keep');
  const metric0 = await expiredTotal([R1, R2]);
  for (let b = 0; b < 5; b += 1) {
    const items = Array.from({ length: 500 }, (_, i) => ({ app_name: 'e2e', title: `m${b}.${i}`, body: 'x' }));
    const r = await postBatch(b % 2 ? R2 : R1, user, items, { timeoutMs: 120000 });
    assert.equal(r.status, 201, r.text.slice(0, 300));
  }
  const young = await postN(R1, keep, 2);
  assert.equal(await backdateNotifications(svc.databaseUrl, young, '59 minutes'), 2);
  assert.equal(await backdateUser(svc.databaseUrl, user, '3 hours'), 2500);
  const t0 = Date.now();
  await until(async () => (await dbCount(svc.databaseUrl, user)) === 0,
    { timeoutMs: DEADLINE_MS + SLACK_MS, intervalMs: 250, what: 'all 2,500 old rows deleted' });
  const took = Date.now() - t0;
  assert.equal(await dbExisting(svc.databaseUrl, young), 2, 'rows younger than the retention stay');
  const unread = await R2.http('GET', '/api/v1/notifications/unread_count', { token: R2.token(user) });
  assert.equal(unread.json.unread, 0, `unread after 2,500 unread rows were deleted: ${unread.text}`);
  await until(async () => (await expiredTotal([R1, R2])) >= metric0 + 2500, { timeoutMs: 5000, what: 'metric +2500' });
  await sleep(1000);
  assert.equal(await expiredTotal([R1, R2]), metric0 + 2500);
  assert.equal(await dbExisting(svc.databaseUrl, young), 2);
  console.log(`RETENTION FIGURES ${JSON.stringify({ case: '2500 rows', deleted_after_ms: took })}`);
});

test('retention 3s: a notification is kept while young and deleted within 10 s of passing 3 s', { timeout: 120000 }, async () => {
  const R3 = instance('3s');
  await start(R3);
  try {
    await shortRetention(R3);
  } finally {
    await R3.stop(); /* its 3 s would delete the next test's rows */
  }
});

async function shortRetention(R3) {
  const user = uid();
  const r = await postNotification(R3, user, {});
  assert.equal(r.status, 201, r.text);
  const created = Date.parse(r.json.created_at);
  await sleep(Math.max(0, created + 2000 - Date.now()));
  assert.equal(await status(R3, user, r.json.id), 200, 'not deleted before it is 3 s old');
  await until(async () => (await status(R3, user, r.json.id)) === 404,
    { timeoutMs: 3000 + DEADLINE_MS + SLACK_MS, intervalMs: 250, what: 'the row deleted' });
  const after = Date.now() - (created + 3000);
  assert.ok(after <= DEADLINE_MS + SLACK_MS, `deleted ${after} ms after passing the retention`);
  console.log(`RETENTION FIGURES ${JSON.stringify({ case: '3s', deleted_after_ms: after })}`);
}

test('retention 0 keeps everything (a row 400 days old stays); the default 90d deletes a 100-day-old row and keeps an 80-day-old one', { timeout: 120000 }, async () => {
  for (const s of [R1, R2]) await s.stop();
  const R0 = instance('0');
  await start(R0);
  const user = uid();
  const [ancient, d100, d80] = await postN(R0, user, 3);
  const postId = await comments(R0, user, 1);
  assert.equal(await backdateNotifications(svc.databaseUrl, [ancient], '400 days'), 1);
  assert.equal(await backdateNotifications(svc.databaseUrl, [d100], '100 days'), 1);
  assert.equal(await backdateNotifications(svc.databaseUrl, [d80], '80 days'), 1);
  assert.equal(await backdateComments(svc.databaseUrl, postId, '400 days'), 1);
  await sleep(DEADLINE_MS + 2000);
  assert.equal(await dbExisting(svc.databaseUrl, [ancient, d100, d80]), 3, 'retention 0 deletes nothing');
  assert.equal((await metricSum(R0, 'notisync_notifications_expired_total')) || 0, 0);
  await R0.stop();

  const RD = instance(); /* default: 90d */
  await start(RD);
  await until(async () => (await dbExisting(svc.databaseUrl, [ancient, d100])) === 0,
    { timeoutMs: DEADLINE_MS + SLACK_MS, intervalMs: 250, what: 'rows older than 90 days deleted' });
  assert.equal(await dbExisting(svc.databaseUrl, [d80]), 1, 'an 80-day-old row stays');
  assert.equal(await dbComments(svc.databaseUrl, postId), 1, 'a 400-day-old comment stays');
  assert.equal(await metricSum(RD, 'notisync_notifications_expired_total'), 2);
  await RD.stop();
});
