'use strict';
/*
 * comment_retry.test.js -- a comment event whose broadcast could not be
 * published (Redis down) is not lost silently (issue 10): the POST still
 * succeeds (a broadcast failure never fails the request), /metrics shows
 * the event waiting in the bounded retry queue, and once Redis is back the
 * event is published again, reaches a public subscriber, and is counted as
 * retried.  Past the queue's bound the oldest events are dropped and
 * counted as lost.
 *
 * Uses a private redis-server (the shared one must never be stopped) and
 * this file's own note ids.
 */
const assert = require('node:assert/strict');
const {
  test, setup, newServer, PrivateRedis, uid, until, newPostId, publicClient,
  postComment, postEvents, metricSum,
} = require('./lib/harness');

const redis = new PrivateRedis();
const srv = newServer({ env: {} });

setup(async () => {
  await redis.start();
  srv.opts.env.NOTISYNC_REDIS_URL = redis.url;
  await srv.start();
});

const metric = (name) => metricSum(srv, name);

async function healthIs(status) {
  return until(async () => (await srv.http('GET', '/health', { timeoutMs: 5000 })).status === status,
    { timeoutMs: 45000, intervalMs: 250, what: `/health ${status}` });
}

async function redisDown() {
  assert.ok(await redis.stop(), 'private redis stopped');
  await healthIs(503);
}

async function redisUp() {
  await redis.start(redis.port);
  await healthIs(200);
}

test('Redis down: the comment is stored (201), its event waits in the retry queue; Redis back: a public subscriber gets it, counted as retried', async () => {
  const listener = await publicClient(srv, '/ws/public', { label: 'public listener' });
  const postId = newPostId('retry');
  const retriedBefore = (await metric('notisync_comment_events_retried_total')) || 0;

  await redisDown();
  const r = await postComment(srv, uid(), postId, 'written while Redis is down');
  assert.equal(r.status, 201, `POST comment with Redis down: ${r.status} ${r.text}`);
  const id = r.json.id;

  assert.equal(await metric('notisync_comment_events_pending'), 1,
    'the event waits in the retry queue (notisync_comment_events_pending)');
  assert.ok((await metric('notisync_comment_events_deferred_total')) >= 1,
    'the failed publish is counted (notisync_comment_events_deferred_total)');
  assert.equal(await metric('notisync_comment_events_lost_total'), 0, 'nothing lost yet');
  assert.ok(listener.isOpen(), `public listener still open: ${listener.describe()}`);
  assert.deepEqual(postEvents(listener, postId), [], 'no event while Redis is down');

  await redisUp();
  const ev = await listener.waitFor(
    (m) => m.type === 'comment.created' && m.data && m.data.postId === postId,
    20000, `comment.created for ${postId} after Redis returned`,
  );
  assert.equal(ev.data.comment.id, id);
  assert.equal(ev.data.comment.content, 'written while Redis is down');
  await until(async () => (await metric('notisync_comment_events_pending')) === 0,
    { timeoutMs: 10000, what: 'retry queue empty' });
  assert.equal(await metric('notisync_comment_events_retried_total'), retriedBefore + 1,
    'the event is counted as retried');
  assert.equal(await metric('notisync_comment_events_lost_total'), 0);
  assert.equal(postEvents(listener, postId, 'comment.created').length, 1, 'delivered once');
  await listener.close();
});

test('the retry queue is bounded: past its limit the oldest events are dropped and counted as lost', async () => {
  const limit = await metric('notisync_comment_events_pending_limit_bytes');
  assert.ok(limit > 0 && limit <= 16 * 1024 * 1024, `a byte bound is exported: ${limit}`);
  const lostBefore = await metric('notisync_comment_events_lost_total');
  const retriedBefore = await metric('notisync_comment_events_retried_total');
  const listener = await publicClient(srv, '/api/v1/ws', { label: 'public listener 2' });
  const postId = newPostId('bound');
  const content = 'x'.repeat(10000);
  /* enough 10 KB events to exceed the byte bound */
  const n = Math.ceil(limit / 10000) + 10;

  await redisDown();
  const ids = [];
  for (let i = 0; i < n; i++) {
    const r = await postComment(srv, uid(), postId, content);
    assert.equal(r.status, 201, `POST ${i}: ${r.status} ${r.text}`);
    ids.push(r.json.id);
  }
  const pendingBytes = await metric('notisync_comment_events_pending_bytes');
  assert.ok(pendingBytes <= limit, `pending bytes ${pendingBytes} <= limit ${limit}`);
  const pending = await metric('notisync_comment_events_pending');
  const lost = (await metric('notisync_comment_events_lost_total')) - lostBefore;
  assert.ok(lost >= 10, `at least 10 events counted as lost, got ${lost}`);
  assert.equal(pending + lost, n, 'every event is either pending or counted lost');

  await redisUp();
  await until(() => postEvents(listener, postId, 'comment.created').length >= pending,
    { timeoutMs: 30000, what: `${pending} retried comment.created events` }).catch(async (e) => {
    const m = (await srv.http('GET', '/metrics')).text.split('\n').filter((l) => /comment_events/.test(l) && !l.startsWith('#'));
    throw new Error(`${e.message}; ${postEvents(listener, postId).length} received; ${m.join(', ')}; ${listener.describe().slice(0, 300)}`);
  });
  const got = postEvents(listener, postId, 'comment.created').map((m) => m.data.comment.id);
  /* the newest survive, in order */
  assert.deepEqual(got, ids.slice(n - pending), 'the newest events, oldest first');
  assert.equal((await metric('notisync_comment_events_retried_total')) - retriedBefore, pending);
  assert.equal(await metric('notisync_comment_events_pending'), 0);
  await listener.close();
});
