'use strict';
/*
 * queue_ttl.test.js -- SPEC §5.2 "a message older than queue_ttl is never
 * delivered" holds for every page of a replay, not only for the first read
 * at connect (issue 10): a long replay to a reader that stops reading
 * stalls, its unread entries pass queue_ttl, and when it reads again none
 * of them is delivered; they are reported (queue_overflow {missed}) and
 * counted in notisync_queue_dropped_total{reason="age"}, and the queue's
 * accounting stays balanced (the next connect reports nothing missed).
 */
const assert = require('node:assert/strict');
const {
  test, useServer, uid, sleep, until, postBatch, postNotification, notificationBody, durables, metricSum,
  cmpStreamId, drainUntilIdle,
} = require('./lib/harness');

const TTL_S = 8;
const TTL_MS = TTL_S * 1000;
const BATCHES = 2;
const PER_BATCH = 500;
const POSTED = BATCHES * PER_BATCH;
/* Between the Lua read (Redis TIME) and the envelope's timestamp (the
 * server's clock, after the reply): a loaded, sanitized build is slow. */
const SLACK_MS = 1000;

const srv = useServer({
  env: {
    NOTISYNC_QUEUE_TTL: `${TTL_S}s`,
    NOTISYNC_QUEUE_MAX_MESSAGES: String(POSTED + 100),
    NOTISYNC_MAX_BODY_BYTES: '8m',
    NOTISYNC_MAX_OUTBOUND_BYTES: '128k',
  },
});

const streamMs = (id) => Number(/^(\d+)-\d+$/.exec(id)[1]);

test(`queue_ttl ${TTL_S}s: a replay stalled past the ttl delivers none of its aged entries; they are reported and counted`, { timeout: 180000 }, async () => {
  const user = uid('ttl');
  const reg = await srv.device(user, 'D', { params: { ack: '1' } });
  await reg.close();
  const aged0 = (await metricSum(srv, 'notisync_queue_dropped_total', /reason="age"/)) || 0;

  /* ~8 MB of offline messages: more than the kernel's socket buffers */
  const big = 'x'.repeat(8000);
  const tPost = Date.now();
  for (let b = 0; b < BATCHES; b += 1) {
    const items = Array.from({ length: PER_BATCH }, (_, i) => notificationBody({ title: `m ${b}.${i}`, body: big }));
    const r = await postBatch(srv, user, items, { timeoutMs: 60000 });
    assert.equal(r.status, 201, r.text);
  }
  const postMs = Date.now() - tPost;
  assert.ok(postMs < TTL_MS - 1500, `posting took ${postMs} ms: too slow for a ${TTL_S}s ttl (the test needs a young queue at connect)`);

  /* an ack-mode reader that stops reading at once: the replay stalls */
  const d = srv.ws(srv.wsUrl({ token: srv.token(user), device_id: 'D', ack: '1' }), { label: `${user}/D` });
  await d.open();
  d.ws._socket.pause();
  /* Every entry not yet read passes the ttl meanwhile.  A fresh message
   * each second keeps the stream key alive (each push renews its EXPIRE
   * queue_ttl): without them the whole key would expire, which is the
   * idle-device rule, not the one under test. */
  const fresh = [];
  const pauseEnd = Date.now() + TTL_MS + 3000;
  for (let i = 0; i < 30 && Date.now() < pauseEnd; i += 1) {
    const r = await postNotification(srv, user, { title: `fresh ${i}` });
    assert.equal(r.status, 201, r.text);
    fresh.push({ id: r.json.id, at: Date.now() });
    await sleep(1000);
  }
  const resumedAt = Date.now();
  d.ws._socket.resume();
  await d.next('welcome', 30000);
  await drainUntilIdle(d, { idleMs: 3000, maxMs: 120000, pred: () => true });

  const got = durables(d);
  const late = got.filter((m) => Date.parse(m.timestamp) - streamMs(m.id) > TTL_MS + SLACK_MS);
  assert.deepEqual(late.map((m) => `${m.id} read at ${m.timestamp}`).slice(0, 5), [],
    `${late.length} of ${got.length} entries were delivered older than queue_ttl`);
  for (let i = 1; i < got.length; i += 1) {
    assert.equal(cmpStreamId(got[i - 1].id, got[i].id), -1, `order: ${got[i - 1].id} then ${got[i].id}`);
  }
  const missed = d.messages().filter((m) => m.type === 'queue_overflow').reduce((s, m) => s + m.data.missed, 0);
  assert.ok(got.length > 0, 'the first pages (young at connect) are delivered');
  assert.ok(missed > 0, `the replay stalled and entries aged out (delivered ${got.length} of ${POSTED})`);
  const ids = new Set(got.map((m) => m.data.id));
  /* a fresh message still well inside the ttl when reading resumed is
   * delivered (the first ones have aged out themselves by then) */
  const young = fresh.filter((f) => resumedAt - f.at < TTL_MS - 3000).map((f) => f.id);
  assert.ok(young.length >= 3, `fresh messages posted in the last seconds of the pause: ${young.length}`);
  assert.deepEqual(young.filter((id) => !ids.has(id)), [], 'every young fresh message is delivered');
  assert.equal(got.length + missed, POSTED + fresh.length,
    `delivered ${got.length} + reported missed ${missed} = posted ${POSTED} + ${fresh.length} fresh`);
  await until(async () => ((await metricSum(srv, 'notisync_queue_dropped_total', /reason="age"/)) || 0) - aged0 === missed,
    { timeoutMs: 10000, what: `queue_dropped_total{reason="age"} up by ${missed}` });

  /* ack everything delivered: the queue is then empty, and the next
   * connection is told of no further loss */
  d.send({ type: 'ack', data: { id: got[got.length - 1].id } });
  await sleep(1000);
  await d.close();
  const again = await srv.device(user, 'D', { params: { ack: '1' } });
  assert.equal(again.welcome.data.queued, 0, JSON.stringify(again.welcome.data));
  await sleep(1000);
  assert.deepEqual(again.messages().filter((m) => m.type === 'queue_overflow' || m.type === 'new_notification'), [],
    again.describe());
  await again.close();
});
