'use strict';
/*
 * limits.test.js -- SPEC §7 protections: client message rate (error
 * rate_limited, then 1008 when it persists), handshakes per client IP (HTTP
 * 429 before the upgrade), and the outbound buffer bound (1013 for a client
 * that does not read).
 */
const assert = require('node:assert/strict');
const { test, useServer, uid, until, sleep, metricSum } = require('./lib/harness');

const rate = useServer({ env: { NOTISYNC_CLIENT_MSG_RATE: '1', NOTISYNC_CLIENT_MSG_BURST: '3' } });
const hs = useServer({
  env: { NOTISYNC_HANDSHAKE_RATE_PER_IP: '1', NOTISYNC_HANDSHAKE_BURST_PER_IP: '3' },
});
const slow = useServer({
  env: { NOTISYNC_MAX_OUTBOUND_BYTES: '64k', NOTISYNC_CLIENT_MSG_RATE: '0' },
});

test('messages past the burst get error rate_limited and are not answered', async () => {
  const c = await rate.device(uid(), 'd1');
  for (let i = 0; i < 6; i++) c.send({ type: 'ping', ref: `p${i}` });
  const frames = await c.collect(1500, (m) => m && (m.type === 'pong' || m.type === 'error'));
  const pongs = frames.filter((m) => m.type === 'pong');
  const limited = frames.filter((m) => m.type === 'error' && m.data.code === 'rate_limited');
  assert.equal(pongs.length, 3, JSON.stringify(frames));
  assert.equal(limited.length, 3, JSON.stringify(frames));
  assert.deepEqual(pongs.map((m) => m.ref), ['p0', 'p1', 'p2']);
  /* SPEC §4: an error echoes the ref of the message it answers */
  assert.deepEqual(limited.map((m) => m.ref), ['p3', 'p4', 'p5'], JSON.stringify(limited));
  /* After a pause the bucket has refilled and the connection still works. */
  await sleep(1200);
  assert.equal((await c.ping()).type, 'pong');
  await c.close();
});

test('a client still over the limit after 5 s is closed with 1008', async () => {
  const c = await rate.device(uid(), 'd2');
  const bystander = await rate.device(uid(), 'd3');
  const deadline = Date.now() + 9000;
  while (Date.now() < deadline && c.isOpen()) {
    c.send({ type: 'ping' });
    await sleep(100);
  }
  const info = await c.closed();
  assert.equal(info.code, 1008);
  assert.equal(info.reason, 'rate limit exceeded');
  assert.equal((await bystander.ping()).type, 'pong', 'another connection is unharmed');
  await bystander.close();
});

test('handshakes per IP past the burst are refused with HTTP 429, other IPs are not', async () => {
  const user = uid();
  const statuses = [];
  const open = [];
  for (let i = 0; i < 5; i++) {
    const c = hs.ws(hs.wsUrl({ token: hs.token(user), device_id: `h${i}` }));
    try {
      await c.open();
      statuses.push(101);
      open.push(c);
    } catch {
      statuses.push(c.httpStatus);
    }
  }
  assert.deepEqual(statuses.slice(0, 3), [101, 101, 101], statuses.join(','));
  assert.ok(statuses.slice(3).every((s) => s === 429), statuses.join(','));
  /* 127.0.0.2 is a different client address with its own bucket. */
  const other = hs.ws(hs.wsUrl({ token: hs.token(user), device_id: 'other' }), {
    localAddress: '127.0.0.2',
  });
  await other.open();
  for (const c of open) await c.close();
  await other.close();
  const m = await hs.http('GET', '/metrics');
  assert.match(m.text, /notisync_handshakes_total\{result="rate_limited"\} [1-9]/);
});

test('a client that does not read is closed with 1013 once its outbound buffer passes the bound', async () => {
  const c = await slow.device(uid(), 'reader');
  const bystander = await slow.device(uid(), 'ok');
  c.ws._socket.pause(); /* stop reading: the kernel buffers fill, then ours */
  const big = 'x'.repeat(60);
  let sent = 0;
  const deadline = Date.now() + 30000;
  while (Date.now() < deadline && sent < 400000 && c.ws.readyState === 1) {
    for (let i = 0; i < 2000; i++) c.ws.send(JSON.stringify({ type: 'ping', ref: big }));
    sent += 2000;
    await sleep(5);
    const m = await slow.http('GET', '/metrics');
    if (/notisync_slow_consumer_closes_total [1-9]/.test(m.text)) break;
  }
  c.ws._socket.resume();
  const info = await c.closed(20000);
  assert.equal(info.code, 1013, `after ${sent} pings: ${c.describe()}`);
  assert.equal((await bystander.ping()).type, 'pong');
  const m = await slow.http('GET', '/metrics');
  assert.match(m.text, /notisync_slow_consumer_closes_total [1-9]/);
  assert.match(m.text, /notisync_closes_total\{code="1013"\} [1-9]/);
  await bystander.close();
  /* every ring is empty again once the slow reader is gone */
  assert.ok(await until(async () => (await metricSum(slow, 'notisync_outbound_bytes')) === 0, { timeoutMs: 5000, what: 'rings empty' }));
});
