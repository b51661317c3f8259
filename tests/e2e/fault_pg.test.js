'use strict';
/*
 * fault_pg.test.js -- issue 10, the PostgreSQL rows of the fault matrix (see
 * docs/reliability.md), on a private Redis + PostgreSQL pair of this file
 * (harness useServices: the shared PostgreSQL serves every other test and is
 * never stopped).  Each row runs under producer load (lib/faultload.js: 60
 * notifications/s for 2 users, each with 2 devices connected in ack mode and
 * 1 registered device offline until the end) and ends with every device
 * drained and "0 acknowledged notifications lost" asserted.
 *
 * 1. PostgreSQL stop (pg_ctl -m fast) and start 3 s later on the same port
 *    and data: 503 meanwhile, recovery by itself.
 * 2. PostgreSQL slowed to 2 s per statement (lib/tcpproxy.js in delay mode
 *    between notisyncd and PostgreSQL) for 10 s: the producers' waits and the
 *    server's query queues stay bounded (the excess is refused 503 at once),
 *    no request piles up, and the instance recovers when the delay ends.
 *
 * Each prints `# FAULT FIGURES {...}`.
 */
const assert = require('node:assert/strict');
const {
  test, newServer, useServices, sleep, until, metricSum,
} = require('./lib/harness');
const { FaultLoad, assertNoLoss } = require('./lib/faultload');
const { TcpProxy } = require('./lib/tcpproxy');

const BASELINE_MS = 4000;
const AFTER_MS = 4000;
const SLOW_MS = 2000;        /* added to every statement */
const SLOW_FOR_MS = 10000;

const svc = useServices();
const proxies = [];

const health = async (srv) => {
  try {
    return (await srv.http('GET', '/health', { timeoutMs: 2000 })).status;
  } catch {
    return 'net';
  }
};

/* database_url with its port replaced by `port`. */
function viaPort(url, port) {
  const u = new URL(url);
  u.port = String(port);
  return u.toString();
}

test('PostgreSQL stopped and started under load: 503 meanwhile, 0 acknowledged lost', { timeout: 150000 }, async () => {
  const srv = newServer({ env: { NOTISYNC_REDIS_URL: svc.redisUrl, NOTISYNC_DATABASE_URL: svc.databaseUrl } });
  await srv.start();
  const load = await new FaultLoad(srv, { prefix: 'pgstop' }).start();
  await sleep(BASELINE_MS);
  load.markFault();
  await svc.stopPg();
  const stoppedMs = Date.now() - load.faultAt;
  await until(async () => (await health(srv)) === 503, {
    timeoutMs: 10000, intervalMs: 100, what: '/health 503 after PostgreSQL stopped',
  });
  await sleep(3000);
  await svc.startPg();
  load.markHeal();
  await load.waitHealthy(30000);
  await load.waitAcknowledging(30000);
  await sleep(AFTER_MS);
  const f = await load.finish();
  f.pg_stop_ms = stoppedMs;
  FaultLoad.print('postgres stop + start', f);
  assert.ok(srv.alive(), `notisyncd exited: ${JSON.stringify(srv.exit)}`);
  assertNoLoss(assert, f);
  assert.ok(f.during_fault.refused > 0, 'producers were refused (503) while PostgreSQL was down');
  assert.equal(f.unanswered, 0, 'every post answered');
  assert.ok(f.recovery_ms !== null && f.recovery_ms < 15000, `recovered in ${f.recovery_ms} ms`);
  await srv.stop();
});

test(`PostgreSQL slowed to ${SLOW_MS} ms per statement under load: bounded queues, 503 not a pile-up, 0 acknowledged lost`, { timeout: 180000 }, async () => {
  const p = await new TcpProxy(svc.databaseUrl).start();
  proxies.push(p);
  const srv = newServer({
    env: { NOTISYNC_REDIS_URL: svc.redisUrl, NOTISYNC_DATABASE_URL: viaPort(svc.databaseUrl, p.port) },
  });
  await srv.start();
  const load = await new FaultLoad(srv, { prefix: 'pgslow' }).start();
  await sleep(BASELINE_MS);
  /* the server's PostgreSQL queues, sampled through the fault */
  let maxQueued = 0;
  let maxInflight = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      try {
        maxQueued = Math.max(maxQueued, (await metricSum(srv, 'notisync_postgres_queued_queries')) || 0);
      } catch {
        /* counted by the next sample */
      }
      maxInflight = Math.max(maxInflight, load.inFlight);
      await sleep(200);
    }
  })();
  load.markFault();
  p.delay(SLOW_MS);
  await sleep(SLOW_FOR_MS);
  p.pass();
  load.markHeal();
  await load.waitAcknowledging(30000);
  await load.waitHealthy(30000);
  await sleep(AFTER_MS);
  sampling = false;
  await sampler;
  const f = await load.finish();
  f.pg_queued_max = maxQueued;
  f.producer_inflight_max = maxInflight;
  f.delayed_chunks = p.delayedChunks;
  FaultLoad.print(`postgres slowed ${SLOW_MS} ms per statement`, f);
  assert.ok(srv.alive(), `notisyncd exited: ${JSON.stringify(srv.exit)}`);
  assertNoLoss(assert, f);
  assert.ok(f.during_fault.refused > 0, 'the excess was refused (503) while PostgreSQL was slow');
  assert.equal(f.unanswered, 0, 'every post answered');
  assert.equal(f.skipped, 0, 'producers never had 200 posts waiting at once');
  assert.ok(f.post_ms_max < 12000, `the slowest answer took ${f.post_ms_max} ms (no pile-up)`);
  assert.ok(maxQueued <= 200, `PostgreSQL queues stayed bounded (max ${maxQueued} queued)`);
  await srv.stop();
});

require('node:test').after(async () => {
  for (const p of proxies) await p.close();
});
