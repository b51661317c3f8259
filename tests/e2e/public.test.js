'use strict';
/*
 * public.test.js -- SPEC §2 / §4, the public receive-only WebSocket
 * endpoints of the comment channel (issue 4): /api/v1/ws, /ws/public and an
 * upgrade on /.  Anyone connects without a token (a token there is ignored
 * and registers no device) and receives comment events with the SPEC
 * fields; the endpoints answer `ping` (pong) and `subscribe` (a
 * comments.list snapshot of one note, ref echoed); everything else gets
 * `error read_only` and the connection stays open.  Public clients never
 * see a user's durable messages nor device_status.  `subscribe` works on an
 * authenticated /ws device connection too.
 *
 * Other test files may share this Redis: event checks filter on this
 * file's unique note ids.
 */
const assert = require('node:assert/strict');
const {
  test, useServer, uid, until, sleep, isTimestamp, newPostId, publicClient, postComment,
  listComments, postEvents, assertComment, postNotification, PUBLIC_PATHS,
} = require('./lib/harness');

const srv = useServer();

async function create(user, postId, content, claimsExtra = {}) {
  const r = await postComment(srv, user, postId, content, { claimsExtra });
  assert.equal(r.status, 201, r.text);
  assertComment(r.json, { postId, content });
  return r.json;
}

async function healthConnections() {
  const r = await srv.http('GET', '/health');
  assert.ok(r.status === 200 || r.status === 503, r.text);
  return r.json.connections;
}

/* Sends `msg` with a fresh ref and returns the reply that echoes it. */
async function request(client, msg, timeoutMs = 10000) {
  const ref = uid('ref');
  client.send({ ...msg, ref });
  return client.waitFor((m) => m.ref === ref, timeoutMs, `reply to ${JSON.stringify(msg).slice(0, 80)}`);
}

test('anonymous clients on /api/v1/ws, /ws/public and / each receive comment.created with the SPEC fields', async () => {
  const postId = newPostId();
  const author = uid();
  const clients = [];
  for (const p of PUBLIC_PATHS) clients.push(await publicClient(srv, p));
  const c = await create(author, postId, 'hello, anonymous world', { email: `${author}@example.com` });
  for (const client of clients) {
    const m = await client.waitFor(
      (x) => x.type === 'comment.created' && x.data && x.data.postId === postId, 15000, 'comment.created',
    );
    assert.ok(isTimestamp(m.timestamp), `${client.label}: timestamp ${m.timestamp}`);
    assert.equal(m.data.postId, postId);
    assert.deepEqual(m.data.comment, c, `${client.label}: the comment as the REST reply`);
    assertComment(m.data.comment, {
      postId, content: 'hello, anonymous world', username: `${author}@example.com`, userId: author,
    });
    assert.equal(postEvents(client, postId, 'comment.created').length, 1, 'once per connection');
  }
  for (const client of clients) await client.close();
});

test('a token on a public endpoint is ignored: garbage, expired or valid, in the query or the header', async () => {
  const user = uid();
  const expired = srv.token(user, { exp: Math.floor(Date.now() / 1000) - 3600 });
  const variants = [
    ['/ws/public', { query: '?token=garbage' }],
    ['/api/v1/ws', { query: `?token=${expired}` }],
    ['/', { query: `?token=${srv.token(user)}&device_id=public-dev` }],
    ['/api/v1/ws', { headers: { Authorization: 'Bearer garbage' } }],
    ['/ws/public', { headers: { Authorization: `Bearer ${srv.token(user)}` } }],
    ['/', { query: '?device_id=not%20valid%21&ack=1' }],
  ];
  const clients = [];
  for (const [p, opts] of variants) clients.push(await publicClient(srv, p, opts));
  await sleep(1500);
  for (const c of clients) {
    assert.equal(c.closeInfo, null, `${c.label} stays open: ${c.describe()}`);
    assert.ok(!c.messages().some((m) => m.type === 'welcome'), `${c.label}: no welcome on a public endpoint`);
  }
  const postId = newPostId();
  const made = await create(uid(), postId, 'for token holders and others');
  for (const c of clients) {
    const m = await c.waitFor((x) => x.type === 'comment.created' && x.data && x.data.postId === postId, 15000);
    assert.deepEqual(m.data.comment, made);
  }
  /* the valid token with a device_id on "/" did not register a device */
  const r = await srv.http('GET', '/api/v1/devices', { token: srv.token(user) });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json.devices, [], `no device registered through a public endpoint: ${r.text}`);
  for (const c of clients) await c.close();
});

test('ping on every public endpoint → pong with ref and a server timestamp', async () => {
  for (const p of PUBLIC_PATHS) {
    const c = await publicClient(srv, p, { ping: false });
    const pong = await c.ping('ref-public-ping');
    assert.equal(pong.type, 'pong');
    assert.equal(pong.ref, 'ref-public-ping');
    assert.ok(isTimestamp(pong.timestamp), pong.timestamp);
    assert.ok(isTimestamp(pong.data.timestamp), JSON.stringify(pong));
    assert.ok(Math.abs(Date.parse(pong.data.timestamp) - Date.now()) < 60000, 'server time is now');
    /* ping without data or ref */
    c.send({ type: 'ping' });
    const bare = await c.next('pong');
    assert.equal(bare.ref, undefined);
    await c.close();
  }
});

test('subscribe → comments.list snapshot of that note, oldest first, ref echoed (every public endpoint and /ws)', async () => {
  const postId = newPostId();
  const made = [];
  for (let i = 0; i < 3; i += 1) made.push(await create(uid(), postId, `snapshot comment ${i}`));
  const listed = await listComments(srv, postId);
  assert.equal(listed.status, 200, listed.text);
  const clients = [];
  for (const p of PUBLIC_PATHS) clients.push(await publicClient(srv, p));
  clients.push(await srv.device(uid(), 'subscriber'));
  for (const c of clients) {
    const reply = await request(c, { type: 'subscribe', data: { postId } });
    assert.equal(reply.type, 'comments.list', `${c.label}: ${JSON.stringify(reply)}`);
    assert.ok(isTimestamp(reply.timestamp), reply.timestamp);
    assert.equal(reply.data.postId, postId);
    assert.equal(reply.data.count, 3);
    assert.deepEqual(reply.data.comments, made, `${c.label}: snapshot = the comments, oldest first`);
    assert.deepEqual(reply.data, listed.json, 'snapshot equals GET');
    /* without a ref the snapshot comes all the same, without a ref */
    c.send({ type: 'subscribe', data: { postId } });
    const bare = await c.waitFor((m) => m.type === 'comments.list' && m.data && m.data.postId === postId && m.ref === undefined);
    assert.equal(bare.data.count, 3);
  }
  for (const c of clients) await c.close();
});

test('subscribe to a note without comments → an empty snapshot; the snapshot follows later writes', async () => {
  const postId = newPostId();
  const c = await publicClient(srv, '/');
  const empty = await request(c, { type: 'subscribe', data: { postId } });
  assert.equal(empty.type, 'comments.list');
  assert.deepEqual(empty.data, { postId, comments: [], count: 0 });
  const a = await create(uid(), postId, 'now there is one');
  const again = await request(c, { type: 'subscribe', data: { postId } });
  assert.deepEqual(again.data, { postId, comments: [a], count: 1 });
  await c.close();
});

test('after subscribing to one note, comment events of every note keep flowing', async () => {
  const subscribed = newPostId();
  const unrelated = newPostId();
  const c = await publicClient(srv, '/ws/public');
  const snap = await request(c, { type: 'subscribe', data: { postId: subscribed } });
  assert.equal(snap.type, 'comments.list');
  const x = await create(uid(), unrelated, 'on a note nobody subscribed to');
  const y = await create(uid(), subscribed, 'on the subscribed note');
  const ex = await c.waitFor((m) => m.type === 'comment.created' && m.data && m.data.postId === unrelated, 15000);
  assert.deepEqual(ex.data.comment, x);
  const ey = postEvents(c, subscribed, 'comment.created').length
    ? postEvents(c, subscribed, 'comment.created')[0]
    : await c.waitFor((m) => m.type === 'comment.created' && m.data && m.data.postId === subscribed, 15000);
  assert.deepEqual(ey.data.comment, y);
  await c.close();
});

test('malformed subscribe → error with ref (bad_message for missing or non-string postId); the connection stays open', async () => {
  const c = await publicClient(srv, '/api/v1/ws');
  const strict = [
    { type: 'subscribe' },
    { type: 'subscribe', data: {} },
    { type: 'subscribe', data: { postId: 42 } },
    { type: 'subscribe', data: { postId: null } },
    { type: 'subscribe', data: 'note-1' },
  ];
  for (const msg of strict) {
    const r = await request(c, msg);
    assert.equal(r.type, 'error', JSON.stringify(r));
    assert.equal(r.data.code, 'bad_message', `${JSON.stringify(msg)} → ${JSON.stringify(r)}`);
    assert.equal(typeof r.data.message, 'string');
  }
  /* an id outside the note-id rules: refused, whether as bad_message or not_found
   * (REST answers 404 for the same ids).  The NUL case must not be read as
   * the real note before it. */
  const real = newPostId();
  await create(uid(), real, 'a real comment');
  const accepted = [];
  for (const postId of ['', 'x'.repeat(129), 'bad id', 'semi;colon', `${real}\u0000tail`]) {
    const r = await request(c, { type: 'subscribe', data: { postId } });
    if (r.type !== 'error' || !['bad_message', 'not_found'].includes(r.data.code)) {
      accepted.push(`${JSON.stringify(postId)} → ${JSON.stringify(r)}`);
    }
  }
  assert.deepEqual(accepted, [], 'every invalid note id is refused');
  assert.equal((await c.ping()).type, 'pong');
  assert.equal(c.closeInfo, null);
  await c.close();
});

test('read-only: every other client message → error read_only with ref, nothing happens, connection stays open', async () => {
  const postId = newPostId();
  const user = uid();
  const wellFormed = [
    { type: 'notification_action', data: { notification_id: '00000000-0000-4000-8000-000000000000', action: 'read' } },
    { type: 'ack', data: { id: '1700000000000-0' } },
    { type: 'refresh', data: { token: srv.token(user) } },
    { type: 'unknown_thing', data: {} },
    { type: 'welcome', data: {} },
    { type: 'comment.created', data: { postId, comment: { id: 'fake', content: 'forged', postId } } },
    { type: 'test', data: { message: `forged ${postId}` } },
    { type: 'broadcast', data: { type: 'test', data: { message: `forged ${postId}` } } },
  ];
  const bystander = await publicClient(srv, '/api/v1/ws');
  for (const p of PUBLIC_PATHS) {
    const c = await publicClient(srv, p);
    for (const msg of wellFormed) {
      const r = await request(c, msg);
      assert.equal(r.type, 'error', `${p} ${msg.type}: ${JSON.stringify(r)}`);
      assert.equal(r.data.code, 'read_only', `${p} ${msg.type}: ${JSON.stringify(r)}`);
      assert.equal(typeof r.data.message, 'string');
      assert.ok(isTimestamp(r.timestamp));
    }
    /* a frame that is no message gets the SPEC §3 code; a known client type
     * with bad data still asks for something refused here: read_only
     * (docs/protocol.md "Messages") */
    c.send('{not json');
    const e1 = await c.next('error');
    assert.equal(e1.data.code, 'bad_json', JSON.stringify(e1));
    c.send(JSON.stringify({ type: 'ack', ref: 'r-malformed-ack' }));
    const e2 = await c.waitFor((m) => m.ref === 'r-malformed-ack');
    assert.equal(e2.type, 'error');
    assert.equal(e2.data.code, 'read_only', JSON.stringify(e2));
    c.send(JSON.stringify([1, 2, 3]));
    const e3 = await c.next('error');
    assert.equal(e3.data.code, 'bad_message', JSON.stringify(e3));
    c.send(JSON.stringify({ type: 'subscribe', ref: 'r-bad-sub', data: { postId: 'no/slash' } }));
    const e4 = await c.waitFor((m) => m.ref === 'r-bad-sub');
    assert.equal(e4.data.code, 'bad_message', `a malformed subscribe is allowed here, so its data is judged: ${JSON.stringify(e4)}`);
    assert.equal((await c.ping()).type, 'pong', `${p} still answers`);
    assert.equal(c.closeInfo, null, `${p} stays open`);
    await c.close();
  }
  /* the forged events went nowhere; the refresh registered nothing */
  await sleep(700);
  assert.equal(postEvents(bystander, postId).length, 0, bystander.describe());
  assert.ok(!bystander.messages().some((m) => m.type === 'test' && m.data && m.data.message === `forged ${postId}`));
  const devs = await srv.http('GET', '/api/v1/devices', { token: srv.token(user) });
  assert.deepEqual(devs.json.devices, []);
  await bystander.close();
});

test('public clients never receive durable messages, device_status or welcome of any user', async () => {
  const user = uid();
  const pub = [];
  for (const p of PUBLIC_PATHS) pub.push(await publicClient(srv, p));
  const d1 = await srv.device(user, 'phone');
  const d2 = await srv.device(user, 'laptop');
  const st = await d1.waitFor((m) => m.type === 'device_status' && m.data.device_id === 'laptop', 10000);
  assert.equal(st.data.status, 'online');
  const r = await postNotification(srv, user, { source_device: 'laptop' });
  assert.equal(r.status, 201, r.text);
  await d1.waitFor((m) => m.type === 'new_notification' && m.data.id === r.json.id, 15000);
  const act = await srv.http('POST', `/api/v1/notifications/${r.json.id}/actions`, {
    token: srv.token(user), body: { action: 'read' }, headers: { 'X-Device-ID': 'laptop' },
  });
  assert.equal(act.status, 200, act.text);
  await d1.waitFor((m) => m.type === 'notification_sync' && m.data.notification_id === r.json.id, 15000);
  await d2.close();
  await d1.waitFor((m) => m.type === 'device_status' && m.data.device_id === 'laptop' && m.data.status === 'offline', 10000);
  await sleep(500);
  const forbidden = new Set(['welcome', 'new_notification', 'notification_sync', 'device_status', 'queue_overflow', 'ok']);
  for (const c of pub) {
    const leaked = c.messages().filter((m) => forbidden.has(m.type));
    assert.deepEqual(leaked, [], `${c.label} got a per-user message`);
    assert.ok(!c.frames.some((f) => typeof f.raw === 'string' && f.raw.includes(r.json.id)), `${c.label} saw the notification id`);
  }
  await d1.close();
  for (const c of pub) await c.close();
});

test('public connections are counted while open (graceful close and abrupt reset both release them)', async () => {
  const before = await healthConnections();
  const clients = [];
  for (let i = 0; i < 12; i += 1) clients.push(await publicClient(srv, PUBLIC_PATHS[i % 3], { ping: false }));
  await until(async () => (await healthConnections()) >= before + 12, { what: 'health.connections up by 12' });
  for (let i = 0; i < clients.length; i += 1) {
    if (i % 2) clients[i].terminate();
    else await clients[i].close();
  }
  await until(async () => (await healthConnections()) <= before, { timeoutMs: 15000, what: 'health.connections back down' });
  /* and the server still serves public clients */
  const c = await publicClient(srv, '/');
  const postId = newPostId();
  const made = await create(uid(), postId, 'after the churn');
  const m = await c.waitFor((x) => x.type === 'comment.created' && x.data && x.data.postId === postId, 15000);
  assert.deepEqual(m.data.comment, made);
  await c.close();
});

test('a public client that closes mid-stream does not disturb the others', async () => {
  const postId = newPostId();
  const keep = await publicClient(srv, '/api/v1/ws');
  const quitters = [];
  for (let i = 0; i < 5; i += 1) quitters.push(await publicClient(srv, '/ws/public', { ping: false }));
  const author = uid();
  const made = [];
  for (let i = 0; i < 10; i += 1) {
    if (i === 3) for (const q of quitters) q.terminate();
    made.push(await create(author, postId, `stream ${i}`));
  }
  const ev = await until(() => {
    const e = postEvents(keep, postId, 'comment.created');
    return e.length >= 10 ? e : null;
  }, { timeoutMs: 15000, what: '10 comment.created' });
  assert.deepEqual(ev.map((m) => m.data.comment.id), made.map((x) => x.id), 'all, in order');
  await keep.close();
});
