'use strict';
/*
 * presence.test.js -- SPEC §4 device_status and §5.6: a device's coming and
 * going is announced to the user's other connected devices (never to the
 * device itself, never to another user); welcome.devices reflects it;
 * presence_grace hides a quick reconnect.
 */
const assert = require('node:assert/strict');
const {
  test, useServer, uid, isDateString, isTimestamp, sleep,
} = require('./lib/harness');

const srv = useServer(); /* presence_grace 0: offline is immediate */
const GRACE_S = 3;
const graceful = useServer({ env: { NOTISYNC_PRESENCE_GRACE: `${GRACE_S}s` } });

const isStatus = (dev, status) => (m) => m.type === 'device_status' && m.data && m.data.device_id === dev
  && (status === undefined || m.data.status === status);

test('B comes online → A gets device_status online; B leaves → A gets offline', async () => {
  const user = uid();
  const a = await srv.device(user, 'A');
  const b = await srv.device(user, 'B');
  const on = await a.waitFor(isStatus('B', 'online'), 10000, 'device_status B online');
  assert.equal(on.data.status, 'online');
  assert.ok(isDateString(on.data.last_seen), `last_seen: ${JSON.stringify(on)}`);
  assert.ok(isTimestamp(on.timestamp));
  assert.ok(!('id' in on), 'device_status is ephemeral: no delivery id');
  await b.close();
  const off = await a.waitFor(isStatus('B', 'offline'), 10000, 'device_status B offline');
  assert.ok(isDateString(off.data.last_seen), `last_seen: ${JSON.stringify(off)}`);
  assert.ok(Date.parse(off.data.last_seen) >= Date.parse(on.data.last_seen) - 1000, 'last_seen does not go back');
  await a.close();
});

test('a device never gets device_status about itself', async () => {
  const user = uid();
  const a = await srv.device(user, 'A');
  const b = await srv.device(user, 'B');
  await a.waitFor(isStatus('B', 'online'));
  const late = await b.collect(1500);
  const all = [...b.messages(), ...late];
  assert.ok(!all.some(isStatus('B')), `B saw its own status: ${b.describe()}`);
  await b.close();
  await a.waitFor(isStatus('B', 'offline'));
  assert.ok(!a.messages().some(isStatus('A')), `A saw its own status: ${a.describe()}`);
  await a.close();
});

test('a device of another user never sees these device_status events', async () => {
  const user = uid();
  const stranger = await srv.device(uid(), 'A'); /* same device_id, other user */
  const a = await srv.device(user, 'A');
  const b = await srv.device(user, 'B');
  await a.waitFor(isStatus('B', 'online'));
  await b.close();
  await a.waitFor(isStatus('B', 'offline'));
  await a.close();
  await sleep(2000); /* bounded: give any stray event time to arrive */
  const leaked = stranger.messages().filter((m) => m.type === 'device_status');
  assert.deepEqual(leaked, [], `stranger got another user's device_status: ${stranger.describe()}`);
  assert.equal((await stranger.ping()).type, 'pong');
  await stranger.close();
});

test('every other connected device of the user is told', async () => {
  const user = uid();
  const a = await srv.device(user, 'A');
  const b = await srv.device(user, 'B');
  await a.waitFor(isStatus('B', 'online'));
  const c = await srv.device(user, 'C');
  await a.waitFor(isStatus('C', 'online'));
  await b.waitFor(isStatus('C', 'online'));
  await c.close();
  await a.waitFor(isStatus('C', 'offline'));
  await b.waitFor(isStatus('C', 'offline'));
  await a.close();
  await b.waitFor(isStatus('A', 'offline'));
  await b.close();
});

test('welcome.devices lists registered devices with their status', async () => {
  const user = uid();
  const a = await srv.device(user, 'A');
  const b = await srv.device(user, 'B');
  await a.waitFor(isStatus('B', 'online'));
  await b.close();
  await a.waitFor(isStatus('B', 'offline'));
  const c = await srv.device(user, 'C');
  const devs = c.welcome.data.devices;
  const byId = Object.fromEntries(devs.map((d) => [d.device_id, d]));
  assert.ok(byId.A && byId.B, `A and B registered and listed: ${JSON.stringify(devs)}`);
  assert.equal(byId.A.status, 'online');
  assert.equal(byId.B.status, 'offline');
  assert.ok(isDateString(byId.A.last_seen) && isDateString(byId.B.last_seen), JSON.stringify(devs));
  for (const cl of [a, c]) await cl.close();
});

test('an abrupt disconnect (TCP reset, no close frame) also emits offline', async () => {
  const user = uid();
  const a = await srv.device(user, 'A');
  const b = await srv.device(user, 'B');
  await a.waitFor(isStatus('B', 'online'));
  b.terminate();
  await a.waitFor(isStatus('B', 'offline'), 15000, 'device_status B offline after reset');
  await a.close();
});

test(`presence_grace ${GRACE_S}s: a reconnect within the grace emits no offline/online pair`, async () => {
  const user = uid();
  const a = await graceful.device(user, 'A');
  const b = await graceful.device(user, 'B');
  await a.waitFor(isStatus('B', 'online'));
  const mark = a.frames.length;
  await b.close();
  await sleep(300);
  const b2 = await graceful.device(user, 'B');
  await sleep((GRACE_S + 2) * 1000);
  const during = a.frames.slice(mark).map((f) => f.msg).filter((m) => m && isStatus('B')(m));
  assert.deepEqual(during, [], `A saw B flap within the grace: ${JSON.stringify(during)}`);
  assert.ok(b2.isOpen(), 'the reconnected device stays connected');
  for (const cl of [b2, a]) await cl.close();
});

test(`presence_grace ${GRACE_S}s: a device gone past the grace is announced offline`, async () => {
  const user = uid();
  const a = await graceful.device(user, 'A');
  const b = await graceful.device(user, 'B');
  await a.waitFor(isStatus('B', 'online'));
  const t0 = Date.now();
  await b.close();
  const off = await a.waitFor(isStatus('B', 'offline'), (GRACE_S + 10) * 1000, 'device_status B offline');
  const waited = Date.now() - t0;
  assert.equal(off.data.status, 'offline');
  assert.ok(waited >= (GRACE_S - 1) * 1000, `offline came after ${waited} ms, before the ${GRACE_S}s grace`);
  await a.close();
});
