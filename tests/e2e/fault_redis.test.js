'use strict';
/*
 * fault_redis.test.js -- issue 10, the Redis rows of the fault matrix (see
 * docs/reliability.md).  Each row runs under producer load (lib/faultload.js:
 * 60 notifications/s for 2 users, each with 2 devices connected in ack mode
 * and 1 registered device offline until the end) and ends with every device
 * drained and "0 acknowledged notifications lost" asserted.
 *
 * 1. Redis restart with AOF: a private redis-server with appendonly yes and
 *    appendfsync always is killed with SIGKILL and started again on the same
 *    port and data 3 s later.  Meanwhile producers get 503; the instance
 *    recovers by itself.
 * 2. Redis black-holed: a TCP proxy (lib/tcpproxy.js) in front of Redis
 *    keeps every connection open but answers nothing (new connections are
 *    accepted and read too).  /health must report it within 5 s, producers
 *    get 503 meanwhile (never a 201 for something Redis did not take, no
 *    request left hanging), and the instance recovers without a restart
 *    when the proxy passes again.
 *
 * Each prints `# FAULT FIGURES {...}`.
 */
const assert = require('node:assert/strict');
const {
  test, setup, newServer, PrivateRedis, sleep, until,
} = require('./lib/harness');
const { FaultLoad, assertNoLoss } = require('./lib/faultload');
const { TcpProxy } = require('./lib/tcpproxy');

const BASELINE_MS = 4000;    /* load before the fault */
const AFTER_MS = 4000;       /* load after recovery */

const aof = new PrivateRedis({ aof: true });
const restartSrv = newServer({ env: {} });

const holeRedis = new PrivateRedis();
const proxy = { p: null };
const holeSrv = newServer({ env: {} });

setup(async () => {
  await aof.start();
  restartSrv.opts.env.NOTISYNC_REDIS_URL = aof.url;
  await restartSrv.start();
  await holeRedis.start();
  proxy.p = await new TcpProxy({ host: '127.0.0.1', port: holeRedis.port }).start();
  holeSrv.opts.env.NOTISYNC_REDIS_URL = `redis://127.0.0.1:${proxy.p.port}/0`;
  await holeSrv.start();
});

const health = async (srv) => {
  try {
    return (await srv.http('GET', '/health', { timeoutMs: 2000 })).status;
  } catch {
    return 'net';
  }
};

test('Redis (appendfsync always) killed -9 and restarted under load: 503 meanwhile, 0 acknowledged lost', { timeout: 150000 }, async () => {
  const load = await new FaultLoad(restartSrv, { prefix: 'aof' }).start();
  await sleep(BASELINE_MS);
  load.markFault();
  const exit = await aof.kill('SIGKILL');
  assert.ok(exit && exit.signal === 'SIGKILL', `redis exit: ${JSON.stringify(exit)}`);
  await until(async () => (await health(restartSrv)) === 503, {
    timeoutMs: 10000, intervalMs: 100, what: '/health 503 after Redis was killed',
  });
  await sleep(3000);
  await aof.start();
  load.markHeal();
  await load.waitHealthy(30000);
  await load.waitAcknowledging(30000);
  await sleep(AFTER_MS);
  const f = await load.finish();
  FaultLoad.print('redis kill -9 + restart (AOF always)', f);
  assert.ok(restartSrv.alive(), `notisyncd exited: ${JSON.stringify(restartSrv.exit)}`);
  assertNoLoss(assert, f);
  assert.ok(f.during_fault.refused > 0, 'producers were refused (503) while Redis was down');
  assert.ok(f.recovery_ms !== null && f.recovery_ms < 15000, `recovered in ${f.recovery_ms} ms`);
});

test('Redis black-holed (connections open, nothing answered): down within 5 s, 503s meanwhile, recovery without a restart, 0 acknowledged lost', { timeout: 150000 }, async () => {
  const p = proxy.p;
  const load = await new FaultLoad(holeSrv, { prefix: 'hole' }).start();
  await sleep(BASELINE_MS);
  const logFrom = holeSrv.log().length;
  load.markFault();
  p.blackhole();
  await until(async () => (await health(holeSrv)) === 503, {
    timeoutMs: 10000, intervalMs: 100, what: '/health 503 after the black hole',
  });
  const detectedMs = Date.now() - load.faultAt;
  await sleep(8000);
  const heldBytes = p.heldBytes;
  p.pass();
  load.markHeal();
  await load.waitHealthy(30000);
  await load.waitAcknowledging(30000);
  await sleep(AFTER_MS);
  const f = await load.finish();
  f.detected_by_test_ms = detectedMs;
  f.proxy_held_bytes = heldBytes;
  f.proxy_accepted = p.accepted;
  f.reconnect_lines = holeSrv.log().slice(logFrom).split('\n').filter((l) => /reconnecting/.test(l)).length;
  FaultLoad.print('redis black-holed', f);
  assert.ok(holeSrv.alive(), `notisyncd exited: ${JSON.stringify(holeSrv.exit)}`);
  assertNoLoss(assert, f);
  assert.ok(f.detection_ms !== null && f.detection_ms <= 5000, `detected within 5 s (${f.detection_ms} ms)`);
  assert.ok(f.during_fault.refused > 0, 'producers were refused (503) during the black hole');
  assert.equal(f.health_200_during_fault, 0, '/health never said 200 while Redis was still black-holed');
  /* no pile-up: every post was answered, none waited for the black hole to end */
  assert.equal(f.unanswered, 0, 'every post answered');
  assert.ok(f.post_ms_max < 8000, `the slowest answer took ${f.post_ms_max} ms (no request waits out the black hole)`);
  assert.ok(f.recovery_ms !== null && f.recovery_ms < 15000, `recovered in ${f.recovery_ms} ms`);
});

/* Registered after the harness's hook: the servers are stopped first. */
require('node:test').after(async () => {
  if (proxy.p) await proxy.p.close();
});
