'use strict';
/*
 * crash.test.js -- THE crash test (SPEC §5.1, §5.5): notisyncd is killed
 * with SIGKILL while producers post concurrently; a new notisyncd is
 * started on the same Redis and PostgreSQL.  Every notification that got
 * 201 must reach every target device: two devices that were registered and
 * then went offline before the first post, and one device that was online
 * in ack mode during the crash (its receipts before and after the crash
 * count together).
 *
 * Also SPEC §5.5: every post that got no answer (the connection died with
 * the server) is retried with the same id after the restart; it must then
 * answer 200 (stored before the crash) or 201 (not stored), and reach every
 * device too, queued exactly once per device: a drain connection of an
 * offline device holds that device's whole queue, so a notification in it
 * twice means it was queued twice.
 *
 * The figures are printed with console.log so that they land in the ctest
 * log.
 */
const assert = require('node:assert/strict');
const {
  test, useServer, uid, sleep, newId, notificationBody, postNotification, autoAck, drainUntilIdle,
} = require('./lib/harness');

const srv = useServer();

const PRODUCERS = 4;
const MAX_POSTS = 600;
const KILL_AFTER = 100;

const rnd = (n) => Math.floor(Math.random() * n);
const notifIdsOf = (c) => c.messages().filter((m) => m.type === 'new_notification').map((m) => m.data.id);

test('kill -9 while producers post: after a restart every 201 reaches every device', { timeout: 240000 }, async () => {
  const user = uid('crash');
  for (const d of ['D1', 'D2']) {
    const c = await srv.device(user, d);
    await c.close();
  }
  const live1 = await srv.device(user, 'D3', { params: { ack: '1' }, label: 'D3#1' });
  autoAck(live1);

  /* ---- produce until ~KILL_AFTER 201s, then SIGKILL mid-stream ---- */
  const posts = []; /* {id, body, outcome: 201 | 'net' | status} */
  const ok = new Set();
  let started = 0;
  let killed = false;
  let killPromise = null;
  let killAt0 = null;
  const killAt = KILL_AFTER + rnd(20);
  const worker = async () => {
    for (let guard = 0; guard < MAX_POSTS; guard += 1) {
      if (started >= MAX_POSTS) break;
      started += 1;
      const body = notificationBody({ id: newId(), title: `crash ${started}` });
      const rec = { id: body.id, body, outcome: null };
      posts.push(rec);
      try {
        const r = await postNotification(srv, user, {}, { raw: body, timeoutMs: 15000 });
        rec.outcome = r.status;
        if (r.status === 201) ok.add(body.id);
      } catch (e) {
        rec.outcome = 'net';
        rec.error = e.message;
      }
      if (!killed && ok.size >= killAt) {
        killed = true;
        killAt0 = Date.now();
        killPromise = srv.signalAndWait('SIGKILL', 10000);
      }
      if (killed && rec.outcome === 'net') break;
      if (killed && !srv.alive()) break;
      await sleep(rnd(10));
    }
  };
  await Promise.all(Array.from({ length: PRODUCERS }, worker));
  assert.ok(killed, `the kill never happened: only ${ok.size} posts got 201`);
  const exit = await killPromise;
  assert.ok(exit && exit.signal === 'SIGKILL', `server exit after SIGKILL: ${JSON.stringify(exit)}`);
  const unanswered = posts.filter((p) => p.outcome === 'net');
  const otherStatus = posts.filter((p) => p.outcome !== 'net' && p.outcome !== 201);
  await live1.closed(10000).catch(() => live1.terminate());
  const liveClosedMs = live1.closeInfo ? live1.closeInfo.at - killAt0 : null;

  /* ---- restart on the same Redis and PostgreSQL ---- */
  const restartAt = Date.now();
  await srv.start();
  const h = await srv.http('GET', '/health');
  assert.equal(h.status, 200, `health after restart: ${h.text}`);
  const restartMs = Date.now() - restartAt;

  /* ---- SPEC §5.5: retry every unanswered post with the same id ---- */
  const retried = [];
  for (const p of unanswered) {
    const r = await postNotification(srv, user, {}, { raw: p.body, timeoutMs: 15000 });
    retried.push({ id: p.id, status: r.status, text: r.text.slice(0, 200) });
  }

  /* ---- every device drains in ack mode ---- */
  const drains = {};
  for (const d of ['D1', 'D2', 'D3']) {
    const c = await srv.device(user, d, { params: { ack: '1' }, label: `${d}#drain` });
    autoAck(c);
    drains[d] = c;
  }
  for (const c of Object.values(drains)) await drainUntilIdle(c, { idleMs: 3000, maxMs: 60000 });

  const received = {
    D1: notifIdsOf(drains.D1),
    D2: notifIdsOf(drains.D2),
    D3: [...notifIdsOf(live1), ...notifIdsOf(drains.D3)],
  };
  const lost = {};
  const dups = {};
  for (const [d, ids] of Object.entries(received)) {
    const set = new Set(ids);
    lost[d] = [...ok].filter((id) => !set.has(id));
    dups[d] = ids.length - set.size;
  }
  const retriedOk = retried.filter((r) => r.status === 200 || r.status === 201).map((r) => r.id);
  const retriedLost = {};
  for (const [d, ids] of Object.entries(received)) {
    const set = new Set(ids);
    retriedLost[d] = retriedOk.filter((id) => !set.has(id));
  }
  const drainDups = {};
  for (const d of ['D1', 'D2', 'D3']) {
    const ids = notifIdsOf(drains[d]);
    drainDups[d] = ids.filter((id, i) => ids.indexOf(id) !== i);
  }
  const figures = {
    posted: posts.length,
    acknowledged: ok.size,
    unanswered: unanswered.length,
    other_status: otherStatus.length,
    retried_200: retried.filter((r) => r.status === 200).length,
    retried_201: retried.filter((r) => r.status === 201).length,
    received: Object.fromEntries(Object.entries(received).map(([d, ids]) => [d, new Set(ids).size])),
    duplicates: dups,
    lost: Object.fromEntries(Object.entries(lost).map(([d, ids]) => [d, ids.length])),
    lost_retried: Object.fromEntries(Object.entries(retriedLost).map(([d, ids]) => [d, ids.length])),
    d3_before_crash: new Set(notifIdsOf(live1)).size,
  };
  console.log(`CRASH FIGURES ${JSON.stringify(figures)}`);
  /* the fault matrix's common line (issue 10, docs/reliability.md) */
  const sum = (o) => Object.values(o).reduce((a, b) => a + b, 0);
  console.log(`# FAULT FIGURES ${JSON.stringify({
    row: 'notisyncd kill -9 + restart',
    posted: posts.length,
    acknowledged: ok.size,
    refused: otherStatus.filter((p) => p.outcome === 503).length,
    unanswered: unanswered.length,
    delivered: Object.fromEntries(Object.entries(received).map(([d, ids]) => [d, [...new Set(ids)].filter((id) => ok.has(id)).length])),
    lost: sum(figures.lost),
    doubled: sum(Object.fromEntries(Object.entries(drainDups).map(([d, ids]) => [d, ids.length]))),
    replayed_d3: figures.duplicates.D3,
    retried_lost: sum(figures.lost_retried),
    detection_ms: liveClosedMs,
    recovery_ms: restartMs,
  })}`);

  /* the heart: nothing a producer was told is stored is lost */
  for (const d of ['D1', 'D2', 'D3']) {
    assert.deepEqual(lost[d], [], `${d} misses ${lost[d].length} of ${ok.size} notifications that got 201`);
  }
  assert.deepEqual(otherStatus.map((p) => p.outcome), [], 'before the kill every answered POST is 201');
  for (const r of retried) {
    assert.ok(r.status === 200 || r.status === 201, `retry of ${r.id} after the restart: ${r.status} ${r.text}`);
  }
  for (const d of ['D1', 'D2', 'D3']) {
    assert.deepEqual(retriedLost[d], [], `${d} misses retried notifications (SPEC §5.5: the retry finishes queueing)`);
  }
  for (const d of ['D1', 'D2']) {
    assert.deepEqual(drainDups[d], [], `${d}: queued more than once (SPEC §5.5 "queued to each device exactly once")`);
  }
  const all = new Set(posts.map((p) => p.id));
  for (const [d, ids] of Object.entries(received)) {
    const foreign = ids.filter((id) => !all.has(id));
    assert.deepEqual(foreign, [], `${d} received ids this test never posted`);
  }
  for (const c of [...Object.values(drains)]) await c.close();
});
