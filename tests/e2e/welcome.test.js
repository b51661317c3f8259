'use strict';
/*
 * welcome.test.js -- SPEC §3 envelope and §4 welcome / ping: the welcome is
 * the first frame with every documented field, every server message carries
 * an RFC 3339 millisecond timestamp, ping gets pong with the server time and
 * the ref echoed (and no ref when none was sent).
 */
const assert = require('node:assert/strict');
const {
  test, useServer, uid, until, isTimestamp, isDateString, sleep,
} = require('./lib/harness');

const srv = useServer({ env: { NOTISYNC_HEARTBEAT_INTERVAL: '7s', NOTISYNC_IDLE_TIMEOUT: '60s' } });

function assertAllTimestamped(client) {
  for (const f of client.frames) {
    assert.ok(f.msg, `every server frame is JSON: ${f.raw}`);
    assert.equal(typeof f.msg, 'object');
    assert.equal(typeof f.msg.type, 'string', `type on ${f.raw}`);
    assert.ok(isTimestamp(f.msg.timestamp), `timestamp (RFC 3339 ms Z) on ${f.raw}`);
  }
}

test('welcome is the first frame and carries every documented field', async () => {
  const user = uid();
  const before = Date.now();
  const c = await srv.device(user, 'tablet-1');
  assert.equal(c.frames[0].msg.type, 'welcome', 'first frame');
  const w = c.welcome;
  assert.ok(isTimestamp(w.timestamp), `welcome.timestamp ${w.timestamp}`);
  const d = w.data;
  assert.equal(typeof d, 'object');
  assert.equal(d.user_id, user);
  assert.equal(d.device_id, 'tablet-1');
  assert.equal(typeof d.connection_id, 'string');
  assert.ok(d.connection_id.length > 0, 'connection_id non-empty');
  assert.ok(isTimestamp(d.server_time), `server_time RFC 3339 ms Z: ${d.server_time}`);
  const st = Date.parse(d.server_time);
  assert.ok(Math.abs(st - before) < 60000, `server_time close to now: ${d.server_time}`);
  assert.equal(d.heartbeat_interval_s, 7, 'heartbeat_interval_s follows the configured heartbeat_interval');
  assert.equal(typeof d.queued, 'number');
  assert.equal(d.queued, 0, 'a brand-new device has nothing queued');
  assert.ok(Array.isArray(d.devices), 'devices is an array');
  await c.close();
});

test('connection_id differs between connections', async () => {
  const user = uid();
  const a = await srv.device(user, 'a');
  const b = await srv.device(user, 'b');
  assert.notEqual(a.welcome.data.connection_id, b.welcome.data.connection_id);
  await a.close();
  const a2 = await srv.device(user, 'a');
  assert.notEqual(a2.welcome.data.connection_id, a.welcome.data.connection_id);
  await a2.close();
  await b.close();
});

test('welcome.devices lists the user\'s other devices with status and last_seen', async () => {
  const user = uid();
  const online = await srv.device(user, 'phone-on');
  const gone = await srv.device(user, 'phone-off');
  await gone.close();
  /* wait until the server has recorded phone-off as offline */
  await until(async () => {
    const r = await srv.http('GET', '/api/v1/devices', { token: srv.token(user) });
    const d = r.json && r.json.devices && r.json.devices.find((x) => x.device_id === 'phone-off');
    return d && d.status === 'offline';
  }, { what: 'phone-off offline in GET /api/v1/devices' });

  const c = await srv.device(user, 'laptop');
  const devs = c.welcome.data.devices;
  const on = devs.find((x) => x.device_id === 'phone-on');
  const off = devs.find((x) => x.device_id === 'phone-off');
  assert.ok(on, `phone-on listed: ${JSON.stringify(devs)}`);
  assert.ok(off, `phone-off listed: ${JSON.stringify(devs)}`);
  assert.equal(on.status, 'online');
  assert.equal(off.status, 'offline');
  for (const x of [on, off]) {
    assert.ok(isDateString(x.last_seen), `last_seen is a date: ${JSON.stringify(x)}`);
  }
  const self = devs.find((x) => x.device_id === 'laptop');
  if (self) assert.equal(self.status, 'online', 'if the device lists itself, it is online');
  for (const x of devs) {
    assert.ok(['online', 'offline'].includes(x.status), `status of ${JSON.stringify(x)}`);
  }
  /* a device of another user is never listed */
  const stranger = uid();
  const s = await srv.device(stranger, 'phone-on');
  assert.ok(
    !s.welcome.data.devices.some((x) => x.device_id === 'phone-off' || x.device_id === 'laptop'),
    `another user's devices leak into welcome: ${JSON.stringify(s.welcome.data.devices)}`,
  );
  for (const cl of [online, c, s]) await cl.close();
});

test('ping → pong with data.timestamp and the ref echoed', async () => {
  const c = await srv.device(uid(), 'p1');
  const t0 = Date.now();
  c.send({ type: 'ping', ref: 'abc-123', data: {} });
  const pong = await c.next('pong');
  assert.equal(pong.ref, 'abc-123');
  assert.ok(pong.data && isTimestamp(pong.data.timestamp), `pong.data.timestamp: ${JSON.stringify(pong)}`);
  assert.ok(Math.abs(Date.parse(pong.data.timestamp) - t0) < 60000, 'pong time is the server time, close to now');
  assert.ok(isTimestamp(pong.timestamp));
  await c.close();
});

test('ping without data and with a client timestamp is still answered', async () => {
  const c = await srv.device(uid(), 'p2');
  c.send({ type: 'ping', ref: 'nodata' });
  const p1 = await c.next('pong');
  assert.equal(p1.ref, 'nodata');
  c.send({ type: 'ping', ref: 'ts', data: {}, timestamp: '2026-01-15T10:30:00.123Z', extra_field: [1, 2] });
  const p2 = await c.next('pong');
  assert.equal(p2.ref, 'ts', 'unknown fields are ignored');
  await c.close();
});

test('ping without ref → pong without ref', async () => {
  const c = await srv.device(uid(), 'p3');
  c.send({ type: 'ping', data: {} });
  const pong = await c.next('pong');
  assert.ok(!('ref' in pong), `no ref expected: ${JSON.stringify(pong)}`);
  await c.close();
});

test('several pings in a row are answered in order, each with its ref', async () => {
  const c = await srv.device(uid(), 'p4');
  const refs = Array.from({ length: 10 }, (_, i) => `r${i}`);
  for (const ref of refs) c.send({ type: 'ping', ref, data: {} });
  const got = [];
  for (let i = 0; i < refs.length; i += 1) got.push((await c.next('pong')).ref);
  assert.deepEqual(got, refs);
  await c.close();
});

test('every server message carries an RFC 3339 millisecond timestamp', async () => {
  const user = uid();
  const a = await srv.device(user, 'ts-a');
  a.send({ type: 'ping', ref: 'x', data: {} });
  await a.next('pong');
  a.send('{not json');
  await a.next('error');
  const b = await srv.device(user, 'ts-b');
  await a.waitFor((m) => m.type === 'device_status' && m.data && m.data.device_id === 'ts-b', 3000)
    .catch(() => null); /* presence has its own test; here we only want more frame kinds */
  await b.close();
  await sleep(300);
  assert.ok(a.frames.length >= 3, a.describe());
  assertAllTimestamped(a);
  assertAllTimestamped(b);
  await a.close();
});
