'use strict';
/*
 * replace.test.js -- SPEC §2: one connection per device (the old one is
 * closed with 4000 "replaced", the new one takes over) and the per-user cap
 * max_devices_per_user (the next device is closed with 1008 "too many
 * devices").
 */
const assert = require('node:assert/strict');
const { test, useServer, uid, until, sleep } = require('./lib/harness');

const srv = useServer();
const capped = useServer({ env: { NOTISYNC_MAX_DEVICES_PER_USER: '2' } });

async function deviceStatus(server, user, deviceId) {
  const r = await server.http('GET', '/api/v1/devices', { token: server.token(user) });
  assert.equal(r.status, 200, r.text);
  const d = r.json.devices.find((x) => x.device_id === deviceId);
  return d && d.status;
}

test('same device connects twice: first closed 4000 "replaced", second welcomed and working', async () => {
  const user = uid();
  const first = await srv.device(user, 'phone');
  const second = await srv.device(user, 'phone');
  const info = await first.closed();
  assert.equal(info.code, 4000, `old connection close code: ${first.describe()}`);
  assert.equal(info.reason, 'replaced');
  assert.equal(second.welcome.data.device_id, 'phone');
  assert.notEqual(second.welcome.data.connection_id, first.welcome.data.connection_id);
  const pong = await second.ping();
  assert.equal(pong.type, 'pong');
  assert.ok(second.isOpen());
  await second.close();
});

test('replacement keeps the device online (the old connection\'s close does not mark it offline)', async () => {
  const user = uid();
  const first = await srv.device(user, 'tab');
  const second = await srv.device(user, 'tab');
  await first.closed();
  await sleep(1000);
  assert.equal(await deviceStatus(srv, user, 'tab'), 'online');
  assert.ok(second.isOpen());
  await second.close();
  await until(async () => (await deviceStatus(srv, user, 'tab')) === 'offline', { what: 'tab offline after the last close' });
});

test('a third connection of the same device replaces the second, and so on', async () => {
  const user = uid();
  const c1 = await srv.device(user, 'x');
  const c2 = await srv.device(user, 'x');
  assert.equal((await c1.closed()).code, 4000);
  const c3 = await srv.device(user, 'x');
  assert.equal((await c2.closed()).code, 4000);
  assert.equal((await c3.ping()).type, 'pong');
  await c3.close();
});

test('replacing one device does not touch the user\'s other devices or other users', async () => {
  const user = uid();
  const other = await srv.device(user, 'other');
  const stranger = await srv.device(uid(), 'phone');
  const a = await srv.device(user, 'phone');
  const b = await srv.device(user, 'phone');
  assert.equal((await a.closed()).code, 4000);
  assert.ok(other.isOpen() && stranger.isOpen(), 'other connections stay open');
  assert.equal((await other.ping()).type, 'pong');
  assert.equal((await stranger.ping()).type, 'pong');
  for (const c of [b, other, stranger]) await c.close();
});

test('max_devices_per_user=2: the third device is closed 1008 "too many devices"', async () => {
  const user = uid();
  const d1 = await capped.device(user, 'd1');
  const d2 = await capped.device(user, 'd2');
  const d3 = capped.ws(capped.wsUrl({ token: capped.token(user), device_id: 'd3' }));
  await d3.open();
  const info = await d3.closed();
  assert.equal(info.code, 1008, d3.describe());
  assert.equal(info.reason, 'too many devices');
  assert.ok(!d3.messages().some((m) => m.type === 'welcome'), 'no welcome for the refused device');
  assert.ok(d1.isOpen() && d2.isOpen(), 'the two admitted devices stay connected');
  assert.equal((await d1.ping()).type, 'pong');
  for (const c of [d1, d2]) await c.close();
});

test('max_devices_per_user=2: reconnecting an admitted device is a replacement, not a new device', async () => {
  const user = uid();
  const d1 = await capped.device(user, 'd1');
  const d2 = await capped.device(user, 'd2');
  const d1b = await capped.device(user, 'd1');
  assert.equal((await d1.closed()).code, 4000);
  assert.equal((await d1b.ping()).type, 'pong');
  for (const c of [d1b, d2]) await c.close();
});

test('max_devices_per_user=2: after a device leaves, another may join; other users have their own cap', async () => {
  const user = uid();
  const d1 = await capped.device(user, 'd1');
  const d2 = await capped.device(user, 'd2');
  /* another user is not counted against this one */
  const s1 = await capped.device(uid(), 'd1');
  await d2.close();
  const d3 = await until(async () => {
    const c = capped.ws(capped.wsUrl({ token: capped.token(user), device_id: 'd3' }));
    await c.open();
    const got = await Promise.race([c.next('welcome', 5000).then(() => 'welcome'), c.closed(5000).then(() => 'closed')]);
    if (got === 'welcome') return c;
    return null;
  }, { timeoutMs: 15000, intervalMs: 500, what: 'd3 admitted after d2 left' });
  assert.equal((await d3.ping()).type, 'pong');
  for (const c of [d1, d3, s1]) await c.close();
});
