'use strict';
/*
 * contract.test.js -- SPEC rules an audit found untested: the `refresh`
 * message and the token expiry of a live connection (§4, docs/protocol.md
 * "Messages"); producer validation that names the field and stores nothing
 * (§6); X-Device-ID, escaped NULs, `before`/`limit` query values (§6,
 * docs/protocol.md "REST"); dropped device metadata (§2, docs/protocol.md
 * "Connecting"); binary frames; POST without Content-Length (411); the
 * queue key's TTL (§5.2); queue_overflow counting what aged out (§5.3); a
 * 503 after the PostgreSQL commit and its retry with the same id (§5.5).
 */
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const net = require('node:net');
const {
  test, useServer, services, uid, sleep, newId, nowS, claims, signJwt, postNotification,
  postBatch, notifIds, durables, publicClient, broadcast, serviceToken, until,
} = require('./lib/harness');

const srv = useServer();
const short = useServer({ env: { NOTISYNC_QUEUE_TTL: '3s' } });

const QUIET_MS = 1500;

const isNew = (id) => (m) => m.type === 'new_notification' && m.data && m.data.id === id;
const isSync = (id) => (m) => m.type === 'notification_sync' && m.data && m.data.notification_id === id;
const replyTo = (ref) => (m) => (m.type === 'ok' || m.type === 'error' || m.type === 'pong') && m.ref === ref;

/* One redis-cli command on the shared Redis (the one every server of this
 * file uses); resolves its --raw output, trimmed. */
function redisCli(...args) {
  const url = services().NOTISYNC_REDIS_URL;
  return new Promise((resolve, reject) => {
    execFile('redis-cli', ['-u', url, '--raw', ...args], { timeout: 5000, killSignal: 'SIGKILL' }, (err, out, stderr) => {
      if (err) reject(new Error(`redis-cli ${args.join(' ')}: ${err.message} ${stderr}`));
      else resolve(out.trim());
    });
  });
}

/* Connects and closes once: the device is registered (SPEC §5.7). */
async function register(server, user, device) {
  const c = await server.device(user, device);
  await c.close();
}

/* A device connection with a token whose exp is `expAgo` seconds in the
 * past (inside the 30 s leeway, so it is accepted). */
async function expiringDevice(server, user, device, expAgo = 25) {
  const now = nowS();
  const token = server.token(user, { iat: now - 120, exp: now - expAgo });
  const t0 = Date.now();
  const c = await server.device(user, device, { token });
  c.t0 = t0;
  return c;
}

/* Asserts a 400 {"error":{"code":"bad_request","field":<field>,...}}. */
function assertFieldError(r, field, what) {
  assert.equal(r.status, 400, `${what}: status ${r.status}: ${r.text}`);
  assert.ok(r.json && r.json.error, `${what}: error body: ${r.text}`);
  assert.equal(r.json.error.code, 'bad_request', `${what}: ${r.text}`);
  assert.equal(r.json.error.field, field, `${what}: error.field: ${r.text}`);
  assert.equal(typeof r.json.error.message, 'string', r.text);
  assert.ok(r.json.error.message.includes(field), `${what}: message names ${field}: ${r.text}`);
}

/* The id was not stored by anyone: a fresh user can take it (201). */
async function assertIdFree(server, id, what) {
  const r = await postNotification(server, uid('probe'), { id, title: 'probe' });
  assert.equal(r.status, 201, `${what}: id ${id} must still be free (nothing stored), got ${r.status}: ${r.text}`);
}

async function getOne(server, user, id) {
  return server.http('GET', `/api/v1/notifications/${id}`, { token: server.token(user) });
}

async function listAll(server, user) {
  const r = await server.http('GET', '/api/v1/notifications?limit=200', { token: server.token(user) });
  assert.equal(r.status, 200, r.text);
  return r.json.notifications;
}

/* Sends `text` on a raw TCP connection to 127.0.0.1:port and resolves the
 * first HTTP response {status, headers, body, json}.  Bounded. */
function rawHttp(port, text, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    let buf = Buffer.alloc(0);
    let done = false;
    const finish = (err, val) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(val);
    };
    const parse = (final) => {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) {
        if (final) finish(new Error(`no complete HTTP response: ${JSON.stringify(buf.toString('latin1'))}`));
        return;
      }
      const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
      if (!m) {
        finish(new Error(`bad status line: ${lines[0]}`));
        return;
      }
      const headers = {};
      for (const l of lines.slice(1)) {
        const i = l.indexOf(':');
        if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
      }
      const rest = buf.subarray(end + 4);
      const len = headers['content-length'] !== undefined ? Number(headers['content-length']) : null;
      if (len !== null && rest.length < len && !final) return;
      const body = (len !== null ? rest.subarray(0, len) : rest).toString('utf8');
      let json;
      try {
        json = JSON.parse(body);
      } catch {
        json = undefined;
      }
      if (len === null && !final) return; /* read until the server closes */
      finish(null, { status: Number(m[1]), headers, body, json });
    };
    const timer = setTimeout(() => {
      if (buf.length) parse(true);
      finish(new Error(`raw HTTP: no answer within ${timeoutMs} ms: ${JSON.stringify(buf.toString('latin1'))}`));
    }, timeoutMs);
    sock.on('connect', () => sock.write(text));
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      parse(false);
    });
    sock.on('end', () => parse(true));
    sock.on('error', (e) => (buf.length ? parse(true) : finish(e)));
  });
}

/* ------------------------------------------------------------ 1. refresh */

test('refresh: without a successful refresh a connection whose exp passed is closed 1008 "token expired" (forbidden / invalid refreshes answered, connection kept, expiry not moved)', async () => {
  const user = uid();
  const other = uid('other');
  const quiet = await expiringDevice(srv, user, 'quiet');
  const tries = await expiringDevice(srv, user, 'tries');
  /* another user's valid token → forbidden, ref echoed, still open */
  tries.send({ type: 'refresh', ref: 'f1', data: { token: srv.token(other) } });
  const f = await tries.waitFor(replyTo('f1'), 3000, 'reply to the forbidden refresh');
  assert.equal(f.type, 'error', JSON.stringify(f));
  assert.equal(f.data.code, 'forbidden', JSON.stringify(f));
  assert.equal((await tries.ping('p-after-f1')).type, 'pong');
  /* an invalid token (docs/protocol.md: error bad_message), ref echoed */
  const bad = [
    ['i1', 'not.a.jwt'],
    ['i2', signJwt({ key: 'some-other-secret', payload: claims(user) })],
    ['i3', srv.token(user, { iat: nowS() - 600, exp: nowS() - 300 })], /* expired past the leeway */
  ];
  for (const [ref, token] of bad) {
    tries.send({ type: 'refresh', ref, data: { token } });
    const e = await tries.waitFor(replyTo(ref), 3000, `reply to refresh ${ref}`);
    assert.equal(e.type, 'error', JSON.stringify(e));
    assert.equal(e.data.code, 'bad_message', `invalid refresh token ${ref}: ${JSON.stringify(e)}`);
  }
  assert.equal((await tries.ping('p-after-bad')).type, 'pong');
  assert.ok(!quiet.closeInfo && !tries.closeInfo, 'both still open right after connecting');
  /* exp was 25 s ago: the 30 s leeway runs out ~5 s after the connect */
  for (const c of [quiet, tries]) {
    const info = await c.closed(12000);
    const after = info.at - c.t0;
    assert.equal(info.code, 1008, `close code: ${c.describe()}`);
    assert.equal(info.reason, 'token expired', `close reason: ${c.describe()}`);
    assert.ok(after >= 4000 && after <= 9000, `${c.label}: closed ${after} ms after connect, expected ~5-8 s`);
  }
});

test('refresh: a fresh token for the same sub → ok (ref r1); the connection is still open and answers ping 10 s later', async () => {
  const user = uid();
  const c = await expiringDevice(srv, user, 'fresh');
  c.send({ type: 'refresh', ref: 'r1', data: { token: srv.token(user) } });
  const ok = await c.waitFor(replyTo('r1'), 3000, 'reply to refresh r1');
  assert.equal(ok.type, 'ok', JSON.stringify(ok));
  assert.equal(ok.ref, 'r1');
  await sleep(Math.max(0, c.t0 + 10000 - Date.now()));
  assert.equal(c.closeInfo, null, `closed although refreshed: ${c.describe()}`);
  const pong = await c.ping('r-later');
  assert.equal(pong.type, 'pong');
  assert.ok(c.isOpen());
  await c.close();
});

/* ---------------------------------------------- 2. producer validation */

test('POST /api/v1/notifications: malformed user_id with a service token → 400 field user_id, nothing stored', async () => {
  const svc = serviceToken(srv);
  const real = uid('target');
  const long = `u${'x'.repeat(128)}`; /* 129 bytes */
  const cases = [
    ['empty', ''],
    ['129 bytes', long],
    ['a number', 42],
    ['escaped NUL', `${real}\u0000x`],
  ];
  for (const [what, userId] of cases) {
    const id = newId();
    const r = await postNotification(srv, null, { id, user_id: userId }, { token: svc });
    assertFieldError(r, 'user_id', `user_id ${what}`);
    if (what === 'escaped NUL') assert.equal((await getOne(srv, real, id)).status, 404, 'not stored for the cut-short user');
    if (what === '129 bytes') assert.equal((await getOne(srv, long.slice(0, 128), id)).status, 404, 'not stored for a truncated user');
    await assertIdFree(srv, id, `user_id ${what}`);
  }
  assert.deepEqual(await listAll(srv, real), []);
  /* control: the same request with a good user_id is accepted */
  const ok = await postNotification(srv, null, { user_id: real }, { token: svc });
  assert.equal(ok.status, 201, ok.text);
  assert.equal(ok.json.user_id, real);
});

test('POST /api/v1/notifications: malformed source_device → 400 field source_device, nothing stored', async () => {
  const user = uid();
  for (const [what, sd] of [['a space', 'bad device'], ['65 bytes', 'd'.repeat(65)], ['empty', ''], ['a slash', 'a/b'], ['a number', 7]]) {
    const id = newId();
    const r = await postNotification(srv, user, { id, source_device: sd });
    assertFieldError(r, 'source_device', `source_device ${what}`);
    assert.equal((await getOne(srv, user, id)).status, 404, `source_device ${what}: stored anyway`);
  }
  assert.deepEqual(await listAll(srv, user), []);
  const ok = await postNotification(srv, user, { source_device: 'd'.repeat(64) });
  assert.equal(ok.status, 201, `a 64-byte source_device is valid: ${ok.text}`);
});

test('POST /api/v1/notifications: invalid UTF-8 in category (raw bytes) → 400 field category, nothing stored', async () => {
  const user = uid();
  for (const bytes of [[0xc3, 0x28], [0xff], [0xed, 0xa0, 0x80] /* a UTF-16 surrogate */]) {
    const id = newId();
    const body = Buffer.concat([
      Buffer.from(`{"id":"${id}","app_name":"e2e","title":"t","body":"b","category":"ab`),
      Buffer.from(bytes),
      Buffer.from('cd"}'),
    ]);
    const r = await postNotification(srv, user, {}, { raw: body });
    assertFieldError(r, 'category', `category with bytes ${Buffer.from(bytes).toString('hex')}`);
    assert.equal((await getOne(srv, user, id)).status, 404, 'stored anyway');
  }
  assert.deepEqual(await listAll(srv, user), []);
  /* control: valid multi-byte UTF-8 in the same place is fine */
  const ok = await postNotification(srv, user, {}, {
    raw: Buffer.from('{"app_name":"e2e","title":"t","body":"b","category":"ab\u00e9cd"}', 'utf8'),
  });
  assert.equal(ok.status, 201, ok.text);
  assert.equal(ok.json.category, 'ab\u00e9cd');
});

test('POST /api/v1/notifications/batch with the same id twice → 400 bad_request, nothing of the batch stored', async () => {
  const user = uid();
  const d = await srv.device(user, 'watch');
  const dup = newId();
  const other = newId();
  const r = await postBatch(srv, user, [
    { id: other, app_name: 'e2e', title: 'first', body: 'b' },
    { id: dup, app_name: 'e2e', title: 'second', body: 'b' },
    { id: dup, app_name: 'e2e', title: 'third (same id)', body: 'b' },
  ]);
  assert.equal(r.status, 400, r.text);
  assert.equal(r.json && r.json.error && r.json.error.code, 'bad_request', r.text);
  assert.match(r.json.error.message, /duplicate/i, r.text);
  assert.equal(r.json.error.field, 'notifications[2].id', 'the second use of the id is named');
  for (const id of [other, dup]) assert.equal((await getOne(srv, user, id)).status, 404, `batch item ${id} stored`);
  assert.deepEqual(await listAll(srv, user), [], 'all-or-nothing');
  await sleep(500);
  assert.deepEqual(durables(d), [], `nothing delivered: ${d.describe()}`);
  await d.close();
  await assertIdFree(srv, other, 'batch');
  await assertIdFree(srv, dup, 'batch');
});

/* ------------------------------------------------------ 3. X-Device-ID */

test('REST action: X-Device-ID that is not a device_id, or of 65 bytes → 400 field X-Device-ID; nothing changed, no notification_sync', async () => {
  const user = uid();
  const a = await srv.device(user, 'A');
  const p = await postNotification(srv, user, { title: 'to act on' });
  assert.equal(p.status, 201, p.text);
  const id = p.json.id;
  await a.waitFor(isNew(id), 5000, 'the notification on A');
  const tok = srv.token(user);
  for (const [what, hdr] of [['a space', 'bad id'], ['a slash', 'x/y'], ['65 bytes', 'h'.repeat(65)], ['300 bytes', 'h'.repeat(300)]]) {
    const r = await srv.http('POST', `/api/v1/notifications/${id}/actions`, {
      token: tok, body: { action: 'read' }, headers: { 'X-Device-ID': hdr },
    });
    assertFieldError(r, 'X-Device-ID', `X-Device-ID ${what}`);
  }
  const got = await getOne(srv, user, id);
  assert.equal(got.status, 200, got.text);
  assert.equal(got.json.is_read, false, `refused actions changed the notification: ${got.text}`);
  await sleep(QUIET_MS);
  assert.deepEqual(durables(a, 'notification_sync'), [], `refused actions sent a sync: ${a.describe()}`);
  /* control: a 64-byte X-Device-ID is a device_id; the sync reaches A */
  const src = 's'.repeat(64);
  const ok = await srv.http('POST', `/api/v1/notifications/${id}/actions`, {
    token: tok, body: { action: 'read' }, headers: { 'X-Device-ID': src },
  });
  assert.equal(ok.status, 200, ok.text);
  const s = await a.waitFor(isSync(id), 5000, 'notification_sync after the valid action');
  assert.equal(s.data.is_read, true);
  assert.equal(s.data.source_device, src);
  await a.close();
});

/* ------------------------------------ 4. escaped NULs and query values */

test('escaped NUL: broadcast type "abc\\u0000x" → 400 field type (nothing broadcast); action "read\\u0000x" → 400 field action (nothing changed)', async () => {
  const listener = await publicClient(srv, '/ws/public');
  const r = await broadcast(srv, 'abc\u0000x', { n: 1 });
  assertFieldError(r, 'type', 'broadcast type with NUL');
  const r2 = await broadcast(srv, null, null, { raw: '{"type":"abc\\u0000","data":{}}' });
  assertFieldError(r2, 'type', 'broadcast type ending in NUL');
  await sleep(500);
  assert.deepEqual(listener.messages().filter((m) => m.type !== 'pong'), [], `something was broadcast: ${listener.describe()}`);
  await listener.close();

  const user = uid();
  const a = await srv.device(user, 'A');
  const p = await postNotification(srv, user);
  assert.equal(p.status, 201, p.text);
  const id = p.json.id;
  await a.waitFor(isNew(id), 5000, 'the notification on A');
  const act = await srv.http('POST', `/api/v1/notifications/${id}/actions`, {
    token: srv.token(user), body: { action: 'read\u0000x' }, headers: { 'X-Device-ID': 'B' },
  });
  assertFieldError(act, 'action', 'action with NUL');
  const got = await getOne(srv, user, id);
  assert.equal(got.json.is_read, false, got.text);
  await sleep(500);
  assert.deepEqual(durables(a, 'notification_sync'), [], a.describe());
  await a.close();
});

test('GET /api/v1/notifications: before= with a 10-digit fraction → 400 field before; limit=0 → 400 field limit', async () => {
  const user = uid();
  const tok = srv.token(user);
  const get = (q) => srv.http('GET', `/api/v1/notifications?${q}`, { token: tok });
  assertFieldError(await get('before=2030-01-15T10:30:00.1234567890Z'), 'before', '10-digit fraction');
  assertFieldError(await get('limit=0'), 'limit', 'limit=0');
  assertFieldError(await get('limit=201'), 'limit', 'limit=201');
  /* controls: 9 digits, limit 1 and 200 are fine */
  for (const q of ['before=2030-01-15T10:30:00.123456789Z', 'limit=1', 'limit=200']) {
    const r = await get(q);
    assert.equal(r.status, 200, `${q}: ${r.text}`);
  }
});

/* ------------------------------------------------- 5. device metadata */

test('device_name over 64 bytes or with control characters, platform over 16 bytes: welcomed, value not stored', async () => {
  const user = uid();
  const cases = [
    ['long-name', { device_name: 'n'.repeat(65) }, 'device_name'],
    ['long-utf8-name', { device_name: '\u00e9'.repeat(33) }, 'device_name'], /* 33 chars, 66 bytes */
    ['ctl-name', { device_name: 'bad\u0001name' }, 'device_name'],
    ['tab-name', { device_name: 'bad\tname' }, 'device_name'],
    ['del-name', { device_name: 'bad\u007fname' }, 'device_name'],
    ['long-platform', { platform: 'p'.repeat(17) }, 'platform'],
  ];
  for (const [dev, params] of cases) {
    const c = await srv.device(user, dev, { params });
    assert.equal(c.frames[0].msg && c.frames[0].msg.type, 'welcome', `${dev}: welcomed`);
    assert.equal(c.welcome.data.device_id, dev);
    assert.equal((await c.ping()).type, 'pong');
    await c.close();
  }
  /* controls: the limits themselves are accepted and stored */
  const good = await srv.device(user, 'good', { params: { device_name: '\u00e9'.repeat(32), platform: 'p'.repeat(16) } });
  await good.close();
  const r = await srv.http('GET', '/api/v1/devices', { token: srv.token(user) });
  assert.equal(r.status, 200, r.text);
  const byId = Object.fromEntries(r.json.devices.map((d) => [d.device_id, d]));
  for (const [dev, , field] of cases) {
    assert.ok(byId[dev], `${dev} registered: ${r.text}`);
    const v = byId[dev][field];
    assert.ok(v === null || v === '', `${dev}: invalid ${field} must not be stored (null or empty): ${JSON.stringify(byId[dev])}`);
  }
  assert.equal(byId.good.device_name, '\u00e9'.repeat(32), JSON.stringify(byId.good));
  assert.equal(byId.good.platform, 'p'.repeat(16), JSON.stringify(byId.good));
});

/* ------------------------------------------------------ 6. binary frames */

test('binary frame → error bad_message and the connection stays open, on /ws and on /ws/public', async () => {
  const d = await srv.device(uid(), 'bin');
  const pub = await publicClient(srv, '/ws/public');
  for (const c of [d, pub]) {
    const mark = c.frames.length;
    c.send(Buffer.from('{"type":"ping","ref":"b1","data":{}}'));
    const e = await c.waitFor((m) => m.type === 'error', 3000, 'error for the binary frame');
    assert.equal(e.data.code, 'bad_message', `${c.label}: ${JSON.stringify(e)}`);
    const pong = await c.ping('after-binary');
    assert.equal(pong.type, 'pong');
    const between = c.frames.slice(mark).map((f) => f.msg).filter((m) => m && m.type === 'pong' && m.ref === 'b1');
    assert.deepEqual(between, [], `${c.label}: a binary frame must not be handled as a message`);
    assert.ok(c.isOpen(), c.describe());
  }
  await d.close();
  await pub.close();
});

/* ------------------------------------------------------------ 7. 411 */

test('POST without Content-Length (chunked, or no length header) → 411 length_required, nothing stored', async () => {
  const user = uid();
  const tok = srv.token(user);
  const chunkedId = newId();
  const json = JSON.stringify({ id: chunkedId, app_name: 'e2e', title: 't', body: 'b' });
  const chunked = [
    'POST /api/v1/notifications HTTP/1.1',
    `Host: 127.0.0.1:${srv.port}`,
    `Authorization: Bearer ${tok}`,
    'Content-Type: application/json',
    'Transfer-Encoding: chunked',
    'Connection: close',
    '',
    `${Buffer.byteLength(json).toString(16)}\r\n${json}\r\n0\r\n\r\n`,
  ].join('\r\n');
  const noLength = [
    'POST /api/v1/notifications HTTP/1.1',
    `Host: 127.0.0.1:${srv.port}`,
    `Authorization: Bearer ${tok}`,
    'Content-Type: application/json',
    'Connection: close',
    '',
    '',
  ].join('\r\n');
  for (const [what, text] of [['chunked', chunked], ['no length header', noLength]]) {
    const r = await rawHttp(srv.port, text);
    assert.equal(r.status, 411, `${what}: ${r.status} ${r.body}`);
    assert.ok(r.json && r.json.error, `${what}: error body: ${r.body}`);
    assert.equal(r.json.error.code, 'length_required', `${what}: ${r.body}`);
  }
  assert.equal((await getOne(srv, user, chunkedId)).status, 404, 'the chunked body was stored');
  assert.equal((await srv.http('GET', '/health')).status, 200, 'server still serving');
});

/* ------------------------------------------------------ 8. queue key TTL */

test('queue_ttl=3s: per-user keys (cur, ql) expire with the queues: an online device\'s reads and trims leave nothing behind', async () => {
  const user = uid();
  const d = await short.device(user, 'on');
  const r = await postNotification(short, user);
  assert.equal(r.status, 201, r.text);
  await d.waitFor((m) => m.type === 'new_notification' && m.data.id === r.json.id, 5000, 'delivered live');
  const cur = `cur:{${user}}`;
  await until(async () => (await redisCli('HGET', cur, 'on')) !== '', { timeoutMs: 5000, what: 'the trim wrote the cursor' });
  for (const key of [cur, `ql:{${user}}`]) {
    const pttl = Number(await redisCli('PTTL', key));
    assert.ok(pttl > 0 && pttl <= 3000, `${key}: PTTL ${pttl} must be in (0, 3000]`);
  }
  await d.close();
  await sleep(4000);
  for (const key of [cur, `ql:{${user}}`, `q:{${user}}:on`]) {
    assert.equal(await redisCli('EXISTS', key), '0', `${key} outlived queue_ttl`);
  }
});

test('queue_ttl=3s: an offline device\'s key q:{user}:device has PTTL <= 3000 after a post and is gone ~4 s later', async () => {
  const user = uid();
  await register(short, user, 'D');
  const key = `q:{${user}}:D`;
  assert.equal(await redisCli('EXISTS', key), '0', 'no queue key before a post');
  const r = await postNotification(short, user);
  assert.equal(r.status, 201, r.text);
  assert.equal(await redisCli('EXISTS', key), '1', `the post created ${key}`);
  assert.equal(await redisCli('TYPE', key), 'stream');
  const pttl = Number(await redisCli('PTTL', key));
  assert.ok(pttl > 0 && pttl <= 3000, `PTTL ${pttl} must be in (0, 3000]`);
  await sleep(4000);
  assert.equal(await redisCli('EXISTS', key), '0', `${key} still exists 4 s after the last post (queue_ttl 3s)`);
  /* the device reconnects to an empty queue, and nothing is replayed */
  const d = await short.device(user, 'D');
  assert.equal(d.welcome.data.queued, 0, JSON.stringify(d.welcome.data));
  await sleep(500);
  assert.deepEqual(durables(d), [], d.describe());
  await d.close();
});

/* ------------------------------------------ 9. queue_overflow by age */

test('queue_ttl=3s: 2 aged out + 2 young → welcome.queued 2, queue_overflow {missed:2} before the replay, then exactly the 2 young', async () => {
  const user = uid();
  await register(short, user, 'D');
  const old = [];
  for (let i = 0; i < 2; i += 1) {
    const r = await postNotification(short, user, { title: `old ${i}` });
    assert.equal(r.status, 201, r.text);
    old.push(r.json.id);
  }
  await sleep(2000);
  const young = [];
  for (let i = 0; i < 2; i += 1) {
    const r = await postNotification(short, user, { title: `young ${i}` });
    assert.equal(r.status, 201, r.text);
    young.push(r.json.id);
  }
  await sleep(1500);
  assert.equal(await redisCli('EXISTS', `q:{${user}}:D`), '1', 'the queue key is still alive (renewed by the young posts)');
  const d = await short.device(user, 'D');
  assert.equal(d.welcome.data.queued, 2, `welcome.queued: ${JSON.stringify(d.welcome.data)}`);
  await d.waitFor(isNew(young[1]), 5000, 'the second young message');
  await sleep(QUIET_MS);
  const msgs = d.messages();
  const w = msgs.findIndex((m) => m.type === 'welcome');
  /* comment events reach every device: another file may post some meanwhile */
  const follow = msgs.slice(w + 1).filter((m) => m.type !== 'device_status' && !m.type.startsWith('comment'));
  assert.deepEqual(follow.map((m) => m.type), ['queue_overflow', 'new_notification', 'new_notification'],
    `welcome, queue_overflow, the 2 young: ${d.describe()}`);
  assert.deepEqual(follow[0].data, { missed: 2 }, JSON.stringify(follow[0]));
  assert.deepEqual(notifIds(d), young, `exactly the young ones (old: ${old.join(',')})`);
  await d.close();
});

/* -------------------------------- 10. 503 after the commit, then retry */

test('enqueue fails after the PostgreSQL commit → 503; the retry with the same id → 200 with the stored one; the device gets it exactly once', async () => {
  const user = uid();
  await register(srv, user, 'D');
  const key = `q:{${user}}:D`;
  /* a key of the wrong type where D's stream goes: XADD fails */
  assert.equal(await redisCli('SET', key, 'x'), 'OK');
  const id = newId();
  const first = await postNotification(srv, user, { id, title: 'committed then refused' });
  assert.equal(first.status, 503, `enqueue failed: expected 503, got ${first.status}: ${first.text}`);
  assert.equal(first.json && first.json.error && first.json.error.code, 'unavailable', first.text);
  /* PostgreSQL has it already (503 after commit) */
  const stored = await getOne(srv, user, id);
  assert.equal(stored.status, 200, `the notification is committed: ${stored.text}`);
  assert.equal(await redisCli('DEL', key), '1');
  const retry = await postNotification(srv, user, { id, title: 'the retry body (ignored)' });
  assert.equal(retry.status, 200, `retry with the same id: ${retry.text}`);
  assert.equal(retry.json.id, id);
  assert.equal(retry.json.title, 'committed then refused', 'the stored notification, not the retry body');
  const d = await srv.device(user, 'D');
  if (d.welcome.data.queued !== 1) {
    /* diagnosis only: is the "already queued" marker left by the failed push? */
    const marker = await redisCli('EXISTS', `qd:{${user}}:${id}`).catch((e) => e.message);
    assert.fail(`the retry did not finish the queueing: welcome.queued ${d.welcome.data.queued}, expected 1 `
      + `(EXISTS qd:{${user}}:${id} = ${marker}); welcome ${JSON.stringify(d.welcome.data)}`);
  }
  await d.waitFor(isNew(id), 5000, 'the notification after the retry');
  await sleep(QUIET_MS);
  assert.deepEqual(notifIds(d), [id], `exactly once: ${d.describe()}`);
  await d.close();
  /* a second retry queues nothing more */
  const again = await postNotification(srv, user, { id });
  assert.equal(again.status, 200, again.text);
  const d2 = await srv.device(user, 'D');
  assert.equal(d2.welcome.data.queued, 0, JSON.stringify(d2.welcome.data));
  await d2.close();
});
