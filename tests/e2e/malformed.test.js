'use strict';
/*
 * malformed.test.js -- SPEC §3: a bad client message gets an `error` reply
 * (bad_json, bad_message, unknown_type) and the connection stays open; other
 * connections are unaffected; SPEC §2/§7: a frame or message larger than
 * max_message_bytes closes the connection with 1009.
 */
const assert = require('node:assert/strict');
const { test, useServer, uid, isTimestamp, metricSum, until } = require('./lib/harness');

const MAX = 1024;
const srv = useServer({
  env: {
    NOTISYNC_MAX_MESSAGE_BYTES: '1k',
    /* these tests send many messages quickly: keep the rate limit out of the way */
    NOTISYNC_CLIENT_MSG_RATE: '1000',
    NOTISYNC_CLIENT_MSG_BURST: '1000',
  },
});

const UUID = '3f1c2b9a-8e7d-4c6b-9a5f-0e1d2c3b4a59';

/* Sends `raw`, expects an error with `code` (and `ref` when given), then
 * checks the same connection still answers a ping. */
async function expectError(c, raw, code, ref) {
  c.send(raw);
  const e = await c.next('error');
  assert.equal(e.data && e.data.code, code, `error code for ${raw}: ${JSON.stringify(e)}`);
  assert.equal(typeof e.data.message, 'string', 'error.data.message is a string');
  assert.ok(isTimestamp(e.timestamp), 'error carries a timestamp');
  if (ref !== undefined) assert.equal(e.ref, ref, `ref echoed for ${raw}`);
  const pong = await c.ping();
  assert.equal(pong.type, 'pong', `connection still answers after ${raw}`);
  assert.ok(c.isOpen(), 'connection stays open');
  return e;
}

let bystander;

test('bystander connection of another user is up', async () => {
  bystander = await srv.device(uid(), 'bystander');
  assert.ok(bystander.isOpen());
});

test('not valid JSON → error bad_json, connection stays open', async () => {
  const c = await srv.device(uid(), 'm1');
  for (const raw of ['{not json', '', '{"type":"ping"', 'ping', '{"type":"ping",}', '\u0000']) {
    await expectError(c, raw, 'bad_json');
  }
  await c.close();
});

test('valid JSON that is not an object → error bad_message', async () => {
  const c = await srv.device(uid(), 'm2');
  for (const raw of ['[1,2,3]', '42', '"ping"', 'null', 'true', '[{"type":"ping"}]']) {
    await expectError(c, raw, 'bad_message');
  }
  await c.close();
});

test('object without a string type → error bad_message', async () => {
  const c = await srv.device(uid(), 'm3');
  for (const raw of ['{}', '{"data":{}}', '{"type":5}', '{"type":null}', '{"type":["ping"]}', '{"type":{"a":1}}']) {
    await expectError(c, raw, 'bad_message');
  }
  await c.close();
});

test('error for a message without a string type still echoes a valid ref', async () => {
  const c = await srv.device(uid(), 'm3r');
  await expectError(c, '{"ref":"r-notype","data":{}}', 'bad_message', 'r-notype');
  await expectError(c, '{"type":17,"ref":"r-numtype"}', 'bad_message', 'r-numtype');
  await c.close();
});

test('ref longer than 64 bytes or not a string → error bad_message', async () => {
  const c = await srv.device(uid(), 'm4');
  await expectError(c, JSON.stringify({ type: 'ping', ref: 'r'.repeat(65), data: {} }), 'bad_message');
  await expectError(c, JSON.stringify({ type: 'ping', ref: 12, data: {} }), 'bad_message');
  await expectError(c, JSON.stringify({ type: 'ping', ref: { a: 1 }, data: {} }), 'bad_message');
  /* exactly 64 bytes is fine */
  const ref64 = 'q'.repeat(64);
  c.send({ type: 'ping', ref: ref64, data: {} });
  const pong = await c.next('pong');
  assert.equal(pong.ref, ref64);
  await c.close();
});

test('unknown type → error unknown_type with the ref echoed', async () => {
  const c = await srv.device(uid(), 'm5');
  await expectError(c, JSON.stringify({ type: 'frobnicate', ref: 'u-1', data: {} }), 'unknown_type', 'u-1');
  await expectError(c, JSON.stringify({ type: 'PING', ref: 'u-2' }), 'unknown_type', 'u-2');
  /* a server-to-client type sent by a client is unknown to the endpoint */
  await expectError(c, JSON.stringify({ type: 'welcome', ref: 'u-3', data: {} }), 'unknown_type', 'u-3');
  const e = await expectError(c, JSON.stringify({ type: 'frobnicate' }), 'unknown_type');
  assert.ok(!('ref' in e), 'no ref when none was sent');
  await c.close();
});

test('notification_action with missing or malformed data → error bad_message (ref echoed)', async () => {
  const c = await srv.device(uid(), 'm6');
  const bad = [
    { type: 'notification_action', ref: 'a1' },
    { type: 'notification_action', ref: 'a2', data: 'read' },
    { type: 'notification_action', ref: 'a3', data: {} },
    { type: 'notification_action', ref: 'a4', data: { notification_id: UUID } },
    { type: 'notification_action', ref: 'a5', data: { notification_id: UUID, action: 'explode' } },
    { type: 'notification_action', ref: 'a6', data: { notification_id: 'not-a-uuid', action: 'read' } },
    { type: 'notification_action', ref: 'a7', data: { notification_id: 42, action: 'read' } },
    { type: 'notification_action', ref: 'a8', data: { action: 'read' } },
    { type: 'notification_action', ref: 'a9', data: { notification_id: UUID, action: 7 } },
  ];
  for (const m of bad) await expectError(c, JSON.stringify(m), 'bad_message', m.ref);
  await c.close();
});

test('ack with a malformed id → error bad_message (ref echoed)', async () => {
  const c = await srv.device(uid(), 'm7');
  const bad = [
    { type: 'ack', ref: 'k1' },
    { type: 'ack', ref: 'k2', data: {} },
    { type: 'ack', ref: 'k3', data: { id: 'yesterday' } },
    { type: 'ack', ref: 'k4', data: { id: 12345 } },
  ];
  for (const m of bad) await expectError(c, JSON.stringify(m), 'bad_message', m.ref);
  await c.close();
});

test('many bad messages in a row: every one answered, connection still works', async () => {
  const c = await srv.device(uid(), 'm8');
  const raws = ['{x', '[]', '{"type":1}', '{"type":"nope","ref":"n"}', '{x', '7'];
  const codes = ['bad_json', 'bad_message', 'bad_message', 'unknown_type', 'bad_json', 'bad_message'];
  for (const r of raws) c.send(r);
  for (const code of codes) {
    const e = await c.next('error');
    assert.equal(e.data.code, code);
  }
  const pong = await c.ping();
  assert.equal(pong.type, 'pong');
  await c.close();
});

test('a message of exactly max_message_bytes is accepted', async () => {
  const c = await srv.device(uid(), 'big-ok');
  const base = JSON.stringify({ type: 'ping', ref: 'exact', data: {}, pad: '' });
  const raw = JSON.stringify({ type: 'ping', ref: 'exact', data: {}, pad: 'p'.repeat(MAX - base.length) });
  assert.equal(Buffer.byteLength(raw), MAX);
  c.send(raw);
  const pong = await c.next('pong');
  assert.equal(pong.ref, 'exact');
  await c.close();
});

test('a frame larger than max_message_bytes → close 1009', async () => {
  const c = await srv.device(uid(), 'big');
  const raw = JSON.stringify({ type: 'ping', ref: 'big', data: {}, pad: 'p'.repeat(2 * MAX) });
  c.send(raw);
  const info = await c.closed();
  assert.equal(info.code, 1009, `close code: ${c.describe()}`);
  assert.ok(!c.messages().some((m) => m.type === 'pong'), 'the oversize message was not processed');
});

test('a fragmented message larger than max_message_bytes → close 1009', async () => {
  const c = await srv.device(uid(), 'frag');
  const part = 'x'.repeat(600);
  c.ws.send(`{"type":"ping","ref":"frag","pad":"${part}`, { fin: false });
  c.ws.send(part, { fin: false });
  c.ws.send(`${part}"}`, { fin: true });
  const info = await c.closed();
  assert.equal(info.code, 1009, `close code: ${c.describe()}`);
  assert.ok((await metricSum(srv, 'notisync_closes_total', /code="1009"/)) >= 2,
    'both 1009 closes are counted');
});

test('a fragmented message within the bound is answered, and its assembly buffer is released', async () => {
  const c = await srv.device(uid(), 'frag-ok');
  const part = 'y'.repeat(200);
  c.ws.send(`{"type":"ping","ref":"assembled","pad":"${part}`, { fin: false });
  c.ws.send(part, { fin: false });
  /* mid-message, one buffer of max_message_bytes (+1 for the NUL) is held */
  assert.ok((await metricSum(srv, 'notisync_inbound_bytes')) >= MAX + 1);
  c.ws.send(`${part}"}`, { fin: true });
  const pong = await c.next('pong');
  assert.equal(pong.ref, 'assembled');
  assert.ok(await until(async () => (await metricSum(srv, 'notisync_inbound_bytes')) === 0, { timeoutMs: 5000, what: 'assembly buffer released' }),
    'the buffer is released once the message is complete');
  assert.equal((await c.ping()).type, 'pong');
  await c.close();
});

test('other connections are unaffected by all of the above', async () => {
  assert.ok(bystander.isOpen(), `bystander still open: ${bystander.describe()}`);
  const errors = bystander.messages().filter((m) => m.type === 'error');
  assert.deepEqual(errors, [], 'bystander got no error frames');
  const pong = await bystander.ping();
  assert.equal(pong.type, 'pong');
  await bystander.close();
});
