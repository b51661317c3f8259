'use strict';
/*
 * liveness.test.js -- issue 9: the Redis liveness check judges Redis by the
 * age of its replies, never by the loop's own lag (docs/operations.md,
 * "Redis liveness").
 *
 * 1. A loop blocked for 5 s right after a PING (NOTISYNC_DEBUG_STALL_MS,
 *    honoured by builds without NDEBUG; the test is skipped when the hook
 *    is compiled out) while Redis answers: no reconnect, /health stays 200.
 * 2. A loop saturated by its own fan-out: a few thousand public WebSockets
 *    and bursts of small broadcasts posted in parallel, so that one read of
 *    the subscriber socket holds many broadcasts and fanning them out keeps
 *    the loop busy for seconds: every broadcast is answered 202 and the log
 *    has no reconnect.  Prints `LIVENESS FIGURES {...}`.  It is also the
 *    fault matrix's "loop kept busy" row (issue 10, docs/reliability.md):
 *    producers post 60 notifications/s to devices in ack mode through the
 *    storm (lib/faultload.js); none is refused and none acknowledged is
 *    lost.  Prints `# FAULT FIGURES {...}`.
 * 3. A real outage is still caught in the old bounds: a SIGSTOPped Redis
 *    (TCP up, nothing answered) is declared down within a few seconds and
 *    the server recovers after SIGCONT.
 *
 * Each test runs its own notisyncd against its own private redis-server.
 */
const assert = require('node:assert/strict');
const WebSocket = require('ws');
const {
  test, setup, newServer, PrivateRedis, uid, until, sleep, broadcast, serviceToken,
} = require('./lib/harness');
const { FaultLoad, assertNoLoss } = require('./lib/faultload');

const FALSE_DOWN_RE = /reconnecting|connection lost|redis down|canary not received/;

const CONNECTIONS = 3000;
const ROUNDS = 6;
const BURST = 40;                /* broadcasts posted at once per round */
const STORM_MS = 4000;           /* rounds go on at least this long */
const MAX_ROUNDS = 60;
const SOURCES = ['127.0.0.1', '127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5', '127.0.0.6'];

const stallRedis = new PrivateRedis();
const busyRedis = new PrivateRedis();
const stopRedis = new PrivateRedis();
const stalled = newServer({ env: { NOTISYNC_DEBUG_STALL_MS: '5000' } });
const busy = newServer({ env: { NOTISYNC_HANDSHAKE_RATE_PER_IP: '0' } });
const outage = newServer({ env: {} });
setup(async () => {
  await stallRedis.start();
  await busyRedis.start();
  await stopRedis.start();
  stalled.opts.env.NOTISYNC_REDIS_URL = stallRedis.url;
  busy.opts.env.NOTISYNC_REDIS_URL = busyRedis.url;
  outage.opts.env.NOTISYNC_REDIS_URL = stopRedis.url;
  await stalled.start();
  await busy.start();
  await outage.start();
});

function falseDownLines(srv) {
  return srv.log().split('\n').filter((l) => FALSE_DOWN_RE.test(l));
}

test('a loop blocked 5 s after a PING while Redis answers: no reconnect, still up', { timeout: 60000 }, async (t) => {
  const stalls = () => (stalled.log().match(/debug: blocking the loop/g) || []).length;
  try {
    await until(() => stalls() >= 1, { timeoutMs: 8000, what: 'the first debug stall' });
  } catch {
    t.skip('NOTISYNC_DEBUG_STALL_MS is compiled out (NDEBUG build)');
    return;
  }
  await until(() => stalls() >= 2, { timeoutMs: 20000, what: 'the second debug stall' });
  /* Past the second stall by more than the 3 s timeout: every tick that
   * could have judged Redis has run. */
  await sleep(5000);
  assert.deepEqual(falseDownLines(stalled), [], 'no reconnect while Redis answered');
  const h = await stalled.http('GET', '/health');
  assert.equal(h.status, 200, `health after the stalls: ${h.text}`);
  const b = await broadcast(stalled, 'liveness.stall', { n: 1 });
  assert.equal(b.status, 202, `broadcast after the stalls: ${b.status} ${b.text}`);
});

/* Opens `n` public connections that only count what they receive. */
async function crowd(srv, n) {
  const conns = [];
  for (let start = 0; start < n; start += 100) {
    const batch = [];
    for (let i = start; i < Math.min(n, start + 100); i += 1) {
      const ws = new WebSocket(`ws://127.0.0.1:${srv.port}/api/v1/ws`, {
        localAddress: SOURCES[i % SOURCES.length], perMessageDeflate: false,
      });
      const c = { ws, got: 0, closed: false };
      ws.on('message', () => { c.got += 1; });
      ws.on('close', () => { c.closed = true; });
      ws.on('error', () => {});
      conns.push(c);
      batch.push(new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
      }));
    }
    await Promise.all(batch);
  }
  return conns;
}

test(`a loop saturated by fan-out (${CONNECTIONS} sockets): every broadcast 202, no false "down"`, { timeout: 280000 }, async () => {
  const conns = await crowd(busy, CONNECTIONS);
  await until(async () => {
    const r = await busy.http('GET', '/api/v1/websocket/stats', { token: busy.token(uid()) });
    return r.status === 200 && r.json.total_connections === CONNECTIONS;
  }, { timeoutMs: 60000, what: `total_connections = ${CONNECTIONS}` });
  const token = serviceToken(busy);
  const load = await new FaultLoad(busy, { prefix: 'storm' }).start();
  await sleep(2000);
  const statuses = [];
  let maxHealthMs = 0;
  let healthProbes = 0;
  let probing = true;
  /* The loop's own lag as a client sees it: /health round trips during the
   * storm (the loop answers them between fan-outs). */
  const prober = (async () => {
    while (probing) {
      const t0 = Date.now();
      try {
        await busy.http('GET', '/health', { timeoutMs: 60000 });
      } catch {
        /* counted by the duration */
      }
      maxHealthMs = Math.max(maxHealthMs, Date.now() - t0);
      healthProbes += 1;
      await sleep(100);
    }
  })();
  const t0 = Date.now();
  load.markFault();
  /* Rounds go on until the storm has lasted STORM_MS (the server fans out
   * a burst in one send per socket, so a fixed count can end before the
   * 3 s timeout), bounded by MAX_ROUNDS. */
  let rounds = 0;
  for (let round = 0; round < MAX_ROUNDS && (round < ROUNDS || Date.now() - t0 < STORM_MS); round += 1) {
    rounds += 1;
    const posts = [];
    for (let i = 0; i < BURST; i += 1) {
      posts.push(broadcast(busy, 'l', { r: round, i }, { token, timeoutMs: 120000 })
        .then((r) => r.status, (e) => `error ${e.message}`));
    }
    statuses.push(...(await Promise.all(posts)));
  }
  const tPosted = Date.now();
  const want = rounds * BURST;
  await until(() => conns.every((c) => c.got >= want || c.closed), {
    timeoutMs: 180000, intervalMs: 500, what: `every connection has ${want} broadcasts`,
  });
  const tDone = Date.now();
  load.markHeal();
  /* Past the end of the storm by more than the timeout: a tick that judged
   * Redis during the storm has logged by now. */
  await sleep(4500);
  probing = false;
  await prober;
  const received = conns.reduce((a, c) => a + c.got, 0);
  const figures = {
    connections: CONNECTIONS,
    broadcasts: want,
    answered_202: statuses.filter((s) => s === 202).length,
    received,
    expected: CONNECTIONS * want,
    closed: conns.filter((c) => c.closed).length,
    post_ms: tPosted - t0,
    deliver_ms: tDone - t0,
    max_health_ms: maxHealthMs,
    health_probes: healthProbes,
  };
  console.log(`LIVENESS FIGURES ${JSON.stringify(figures)}`);
  const lf = await load.finish();
  lf.storm_ms = tDone - t0;
  lf.max_health_ms = maxHealthMs;
  FaultLoad.print('loop kept busy by a broadcast storm', lf);
  assertNoLoss(assert, lf);
  assert.equal(lf.refused, 0, 'no producer refused (503) during the storm: Redis was never taken for down');
  assert.equal(lf.unanswered, 0, 'every producer post answered');
  const others = statuses.filter((s) => s !== 202);
  assert.deepEqual(others, [], 'every broadcast answered 202');
  assert.deepEqual(falseDownLines(busy), [], 'no reconnect or "down" while Redis was idle');
  assert.equal(figures.closed, 0, 'no connection closed');
  assert.equal(received, CONNECTIONS * want, 'every broadcast reached every connection');
  /* The test only means something if the storm outlasted the 3 s timeout:
   * rounds go on for STORM_MS, unless MAX_ROUNDS ends them first (a server
   * that fans out faster than 40 broadcasts x 3,000 sockets per 67 ms). */
  assert.ok(tDone - t0 > 3000, `the storm kept the loop busy > 3 s (${tDone - t0} ms)`);
  for (const c of conns) c.ws.terminate();
  await until(async () => (await busy.http('GET', '/health')).json.connections === 0, {
    timeoutMs: 60000, what: 'all connections released',
  });
});

test('a frozen Redis (SIGSTOP) is still declared down within seconds and recovers after SIGCONT', { timeout: 90000 }, async () => {
  await until(async () => (await outage.http('GET', '/health')).status === 200, {
    timeoutMs: 15000, what: 'health 200 before the freeze',
  });
  const before = outage.log().length;
  const t0 = Date.now();
  process.kill(stopRedis.pid, 'SIGSTOP');
  try {
    await until(() => /redis: no reply for \d+ ms of loop time/.test(outage.log().slice(before)), {
      timeoutMs: 10000, intervalMs: 100, what: 'the command connection declared silent',
    });
    const detectedMs = Date.now() - t0;
    /* One tick to send the PING, 3 s of charged time, one tick of slack. */
    assert.ok(detectedMs < 6000, `detected in ${detectedMs} ms`);
    await until(async () => (await outage.http('GET', '/health', { timeoutMs: 3000 })).status === 503, {
      timeoutMs: 10000, what: 'health 503 while Redis is frozen',
    });
  } finally {
    process.kill(stopRedis.pid, 'SIGCONT');
  }
  await until(async () => (await outage.http('GET', '/health')).status === 200, {
    timeoutMs: 20000, what: 'health 200 after SIGCONT',
  });
  const b = await broadcast(outage, 'liveness.back', { n: 1 });
  assert.equal(b.status, 202, `broadcast after recovery: ${b.status} ${b.text}`);
});
