'use strict';
/*
 * comments.test.js -- SPEC §4 and §6, the comment REST API of the public
 * channel (issue 4): POST / GET / PUT / DELETE on
 * /api/v1/notes/{id}/comments and every alias (/notes, /me/notes,
 * /api/v1/posts), content validation (1-10,000 bytes of UTF-8), username
 * from the token (email, else name, else sub), author-only edit and delete
 * (403 for another user, 404 for an unknown comment or one of another
 * note), note-id validation, and the events each write broadcasts to every
 * WebSocket: comment.created; comment.updated (updated / deleted) followed
 * by comments.list.  Two instances share Redis and PostgreSQL: a comment
 * posted on one is listed and announced on the other.
 *
 * Other test files may run at the same time against the same Redis, so
 * every check on events filters on this file's own (unique) note ids.
 */
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const {
  test, useServer, uid, until, sleep, isTimestamp, newPostId, publicClient, postComment,
  listComments, editComment, deleteComment, commentPath, postEvents, assertComment,
  assertHttpError, COMMENT_ROUTES,
} = require('./lib/harness');

const srv = useServer();
const other = useServer();
/* a small outbound bound, so that one note's comment list can exceed it */
const tight = useServer({ env: { NOTISYNC_MAX_OUTBOUND_BYTES: '64k' } });

const ALIASES = COMMENT_ROUTES.map((_, i) => i);

/* Waits until `client` holds at least `n` messages of `type` about
 * `postId`; returns them all. */
async function waitEvents(client, postId, type, n, timeoutMs = 15000) {
  return until(() => {
    const ev = postEvents(client, postId, type);
    return ev.length >= n ? ev : null;
  }, { timeoutMs, intervalMs: 50, what: `${n} × ${type} for ${postId} on ${client.label}` });
}

/* GETs the list of `postId` and checks the list shape. */
async function list(postId, alias = 0, server = srv) {
  const r = await listComments(server, postId, { alias });
  assert.equal(r.status, 200, `GET ${commentPath(postId, undefined, alias)}: ${r.text}`);
  assert.match(String(r.headers['content-type']), /^application\/json/);
  assert.equal(r.json.postId, postId);
  assert.ok(Array.isArray(r.json.comments), r.text);
  assert.equal(r.json.count, r.json.comments.length, `count = comments.length: ${r.text}`);
  for (const c of r.json.comments) assertComment(c, { postId });
  return r.json;
}

/* Posts `content` as `user` and asserts the 201 reply; returns the comment. */
async function create(user, postId, content, opts = {}) {
  const r = await postComment(opts.server || srv, user, postId, content, opts);
  assert.equal(r.status, 201, `POST comment: ${r.status} ${r.text}`);
  assert.match(String(r.headers['content-type']), /^application\/json/);
  assertComment(r.json, { postId, content, userId: user });
  return r.json;
}

/* Waits for the comment.updated {action} event of `cid` and, after it on
 * the same connection, the comments.list of `postId`; returns both. */
async function updatedThenList(client, postId, cid, action) {
  const upd = await client.waitFor(
    (m) => m.type === 'comment.updated' && m.data && m.data.postId === postId && m.data.commentId === cid,
    15000, `comment.updated ${action} of ${cid}`,
  );
  const lst = await client.waitFor(
    (m) => m.type === 'comments.list' && m.data && m.data.postId === postId,
    15000, `comments.list of ${postId} after comment.updated ${action}`,
  );
  assert.equal(upd.data.postId, postId, JSON.stringify(upd));
  assert.equal(upd.data.commentId, cid, JSON.stringify(upd));
  assert.equal(upd.data.action, action, JSON.stringify(upd));
  assert.ok(isTimestamp(upd.timestamp), `envelope timestamp ${upd.timestamp}`);
  assert.ok(isTimestamp(lst.timestamp), `envelope timestamp ${lst.timestamp}`);
  assert.ok(Array.isArray(lst.data.comments), JSON.stringify(lst));
  assert.equal(lst.data.count, lst.data.comments.length, JSON.stringify(lst.data));
  return { upd, lst };
}

test('POST on the route and every alias → 201 comment; GET on every alias lists them all, oldest first', async () => {
  const postId = newPostId();
  const user = uid();
  const email = `${user}@example.com`;
  const listener = await publicClient(srv, '/api/v1/ws');
  const made = [];
  for (const alias of ALIASES) {
    const c = await create(user, postId, `comment via route ${alias}`, { alias, claimsExtra: { email } });
    assert.equal(c.username, email);
    made.push(c);
  }
  assert.equal(new Set(made.map((c) => c.id)).size, made.length, 'comment ids are distinct');
  for (const alias of ALIASES) {
    const l = await list(postId, alias);
    assert.equal(l.count, made.length, `GET via route ${alias}: ${JSON.stringify(l)}`);
    assert.deepEqual(l.comments.map((c) => c.id), made.map((c) => c.id), `oldest first via route ${alias}`);
    assert.deepEqual(l.comments, made, `listed comments equal the POST replies (route ${alias})`);
  }
  /* one comment.created per POST, in posting order, each carrying the REST reply */
  const ev = await waitEvents(listener, postId, 'comment.created', made.length);
  assert.equal(ev.length, made.length, 'exactly one event per comment');
  assert.deepEqual(ev.map((m) => m.data.comment), made);
  for (const m of ev) {
    assert.equal(m.data.postId, postId);
    assert.ok(isTimestamp(m.timestamp), `envelope timestamp ${m.timestamp}`);
  }
  await listener.close();
});

test('comment.created reaches an anonymous listener and an authenticated device with the SPEC fields', async () => {
  const postId = newPostId();
  const author = uid();
  const pub = await publicClient(srv, '/ws/public');
  const dev = await srv.device(uid(), 'reader');
  const c = await create(author, postId, 'hello, listeners', { claimsExtra: { email: `${author}@example.com` } });
  for (const client of [pub, dev]) {
    const m = await client.waitFor(
      (x) => x.type === 'comment.created' && x.data && x.data.postId === postId, 15000, 'comment.created',
    );
    assert.deepEqual(m.data.comment, c, `${client.label}: event comment equals the REST reply`);
    assert.deepEqual(Object.keys(m.data.comment).sort(),
      ['content', 'createdAt', 'id', 'postId', 'updatedAt', 'userId', 'username']);
    assert.ok(isTimestamp(m.timestamp), m.timestamp);
  }
  await pub.close();
  await dev.close();
});

test('username is the token\'s email, else its name, else its sub; userId is the sub', async () => {
  const postId = newPostId();
  const u1 = uid();
  const u2 = uid();
  const u3 = uid();
  const a = await create(u1, postId, 'with email and name', { claimsExtra: { email: 'ann@example.com', name: 'Ann' } });
  const b = await create(u2, postId, 'with name only', { claimsExtra: { name: 'Bob B.' } });
  const c = await create(u3, postId, 'with neither');
  assert.equal(a.username, 'ann@example.com');
  assert.equal(b.username, 'Bob B.');
  assert.equal(c.username, u3);
  assert.deepEqual([a.userId, b.userId, c.userId], [u1, u2, u3]);
  const l = await list(postId);
  assert.deepEqual(l.comments.map((x) => x.username), ['ann@example.com', 'Bob B.', u3]);
});

test('content: 1–10,000 bytes of UTF-8 accepted exactly as sent; quotes, escapes and unicode round-trip', async () => {
  const postId = newPostId();
  const user = uid();
  const listener = await publicClient(srv, '/');
  const samples = [
    'x',
    'é'.repeat(5000),                       /* exactly 10,000 bytes */
    'a'.repeat(10000),
    '"'.repeat(10000),                      /* 10,000 bytes, 20,000 once JSON-escaped */
    'line 1\nline 2\ttab \\ backslash "quoted" </script><b>html</b>',
    'emoji 😀🎉 CJK 漢字 RTL שלום',
  ];
  const made = [];
  for (const s of samples) made.push(await create(user, postId, s));
  const l = await list(postId);
  assert.deepEqual(l.comments.map((c) => c.content), samples);
  const ev = await waitEvents(listener, postId, 'comment.created', samples.length);
  assert.deepEqual(ev.map((m) => m.data.comment.content), samples);
  await listener.close();
});

test('content missing, empty, not a string or over 10,000 bytes → 400 naming "content"; nothing stored or sent', async () => {
  const postId = newPostId();
  const user = uid();
  const listener = await publicClient(srv, '/api/v1/ws');
  const bad = [
    {},
    { content: '' },
    { content: 42 },
    { content: null },
    { content: true },
    { content: ['a'] },
    { content: { text: 'a' } },
    { content: 'a'.repeat(10001) },
    { content: `${'é'.repeat(5000)}a` },   /* 5,001 characters but 10,001 bytes */
    { text: 'wrong field' },
  ];
  for (const body of bad) {
    const r = await postComment(srv, user, postId, undefined, { body });
    assertHttpError(r, 400, 'content');
  }
  /* bodies that are not a JSON object */
  for (const raw of ['not json', '[]', '"content"', '{"content": "a"']) {
    const r = await postComment(srv, user, postId, undefined, { body: raw });
    assertHttpError(r, 400);
  }
  /* invalid UTF-8 inside the string */
  const invalid = Buffer.concat([Buffer.from('{"content":"ab'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')]);
  assertHttpError(await postComment(srv, user, postId, undefined, { body: invalid }), 400);
  const l = await list(postId);
  assert.equal(l.count, 0, `nothing stored: ${JSON.stringify(l)}`);
  /* a good comment afterwards is the only event of this note */
  const ok = await create(user, postId, 'the only one');
  const ev = await waitEvents(listener, postId, 'comment.created', 1);
  await sleep(500);
  assert.deepEqual(postEvents(listener, postId).map((m) => m.data.comment && m.data.comment.id), [ok.id]);
  assert.equal(ev.length, 1);
  await listener.close();
});

test('a NUL character in content is either refused (400 content) or stored exactly, never truncated', async () => {
  const postId = newPostId();
  const user = uid();
  const content = 'before\u0000after';
  const r = await postComment(srv, user, postId, content);
  if (r.status === 400) {
    assertHttpError(r, 400, 'content');
    assert.equal((await list(postId)).count, 0);
  } else {
    assert.equal(r.status, 201, r.text);
    assert.equal(r.json.content, content, 'content kept whole');
    const l = await list(postId);
    assert.equal(l.comments[0].content, content, 'stored content kept whole');
  }
});

test('POST without a valid token → 401 (missing, garbage, expired, wrong key); nothing stored or sent', async () => {
  const postId = newPostId();
  const user = uid();
  const listener = await publicClient(srv, '/ws/public');
  const now = Math.floor(Date.now() / 1000);
  const tokens = [
    null,
    'garbage',
    srv.token(user, { exp: now - 600 }),
    other.token(user),               /* signed with another server's secret */
  ];
  for (const alias of ALIASES) {
    for (const token of tokens) {
      const r = await postComment(srv, user, postId, 'should not exist', { alias, token });
      assertHttpError(r, 401);
    }
  }
  /* a garbage token in the query string instead of the header */
  const r = await srv.http('POST', `${commentPath(postId)}?token=garbage`, { body: { content: 'x' } });
  assertHttpError(r, 401);
  assert.equal((await list(postId)).count, 0);
  await sleep(700);
  assert.equal(postEvents(listener, postId).length, 0, listener.describe());
  await listener.close();
});

test('GET needs no token: an unknown note is an empty list; a token does not change the answer', async () => {
  const postId = newPostId();
  for (const alias of ALIASES) {
    const l = await list(postId, alias);
    assert.deepEqual(l, { postId, comments: [], count: 0 });
  }
  const user = uid();
  const c = await create(user, postId, 'listed for everyone');
  const anon = await list(postId);
  const withToken = await listComments(srv, postId, { token: srv.token(uid()) });
  assert.equal(withToken.status, 200, withToken.text);
  assert.deepEqual(withToken.json, anon);
  assert.deepEqual(anon.comments, [c]);
});

test('note ids: 1–128 bytes of [A-Za-z0-9._:-] are accepted; anything else → 404', async () => {
  const user = uid();
  const base = `Az09._:-${uid('n')}`;
  const max = base + 'x'.repeat(128 - base.length);
  assert.equal(max.length, 128);
  const c = await create(user, max, 'on a 128-byte note id');
  assert.equal((await list(max)).comments[0].id, c.id);
  const oneByte = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'[crypto.randomInt(62)];
  const one = await create(user, oneByte, 'one-byte id');
  assert.equal(one.postId.length, 1);
  const badIds = [
    `${max}y`,             /* 129 bytes */
    'has%20space',
    'bang!',
    'at@sign',
    'tilde~',
    'plus+sign',
    'caf%C3%A9',           /* é */
    'semi%3Bcolon',
  ];
  for (const id of badIds) {
    for (const alias of ALIASES) {
      assertHttpError(await postComment(srv, user, id, 'nope', { alias }), 404);
      assertHttpError(await listComments(srv, id, { alias }), 404);
    }
  }
  /* an empty id */
  assertHttpError(await srv.http('GET', '/api/v1/notes//comments'), 404);
  assertHttpError(await srv.http('POST', '/api/v1/notes//comments', { token: srv.token(user), body: { content: 'x' } }), 404);
});

test('PUT by the author on the route and every alias → 200 updated comment; comment.updated then comments.list', async () => {
  const postId = newPostId();
  const author = uid();
  const listener = await publicClient(srv, '/api/v1/ws');
  const dev = await srv.device(uid(), 'watcher');
  const first = await create(author, postId, 'first');
  const target = await create(author, postId, 'original');
  const last = await create(author, postId, 'last');
  await waitEvents(listener, postId, 'comment.created', 3);
  await waitEvents(dev, postId, 'comment.created', 3);
  listener.cursor = listener.frames.length;
  dev.cursor = dev.frames.length;
  let prev = target;
  for (const alias of ALIASES) {
    const content = `edited via route ${alias} ✓`;
    const r = await editComment(srv, author, postId, target.id, content, { alias });
    assert.equal(r.status, 200, `PUT via route ${alias}: ${r.text}`);
    assertComment(r.json, { id: target.id, postId, content, userId: author, username: target.username });
    assert.equal(r.json.createdAt, target.createdAt, 'createdAt unchanged');
    assert.ok(Date.parse(r.json.updatedAt) >= Date.parse(prev.updatedAt), 'updatedAt does not go back');
    prev = r.json;
    for (const client of [listener, dev]) {
      const { lst } = await updatedThenList(client, postId, target.id, 'updated');
      assert.deepEqual(lst.data.comments.map((x) => x.id), [first.id, target.id, last.id], 'order unchanged');
      assert.deepEqual(lst.data.comments[1], r.json, 'the list carries the edited comment');
      assert.equal(lst.data.count, 3);
    }
  }
  assert.ok(Date.parse(prev.updatedAt) >= Date.parse(target.updatedAt));
  const l = await list(postId);
  assert.deepEqual(l.comments.map((x) => x.content), ['first', `edited via route ${ALIASES.length - 1} ✓`, 'last']);
  assert.deepEqual(l.comments[1], prev);
  /* an edit is not a new comment */
  assert.equal(postEvents(listener, postId, 'comment.created').length, 3);
  await listener.close();
  await dev.close();
});

test('PUT: another user → 403, no token → 401, unknown comment or one of another note → 404, bad content → 400; nothing changes or is sent', async () => {
  const postId = newPostId();
  const otherPost = newPostId();
  const author = uid();
  const stranger = uid();
  /* listen first and see both creations: a late comment.created must not count as a leak */
  const listener = await publicClient(srv, '/ws/public');
  const c = await create(author, postId, 'mine');
  const elsewhere = await create(author, otherPost, 'on another note');
  await waitEvents(listener, postId, 'comment.created', 1);
  await waitEvents(listener, otherPost, 'comment.created', 1);
  for (const alias of ALIASES) {
    const r403 = await editComment(srv, stranger, postId, c.id, 'hijacked', { alias });
    assertHttpError(r403, 403);
    assertHttpError(await editComment(srv, author, postId, c.id, 'x', { alias, token: null }), 401);
    assertHttpError(await editComment(srv, author, postId, c.id, 'x', { alias, token: 'garbage' }), 401);
    assertHttpError(await editComment(srv, author, postId, crypto.randomUUID(), 'x', { alias }), 404);
    assertHttpError(await editComment(srv, author, postId, 'no-such-comment', 'x', { alias }), 404);
    assertHttpError(await editComment(srv, author, postId, 'x'.repeat(300), 'x', { alias }), 404);
    assertHttpError(await editComment(srv, author, postId, elsewhere.id, 'moved?', { alias }), 404);
    assertHttpError(await editComment(srv, author, otherPost, c.id, 'moved?', { alias }), 404);
    assertHttpError(await editComment(srv, author, postId, c.id, undefined, { alias, body: { content: '' } }), 400, 'content');
    assertHttpError(await editComment(srv, author, postId, c.id, undefined, { alias, body: {} }), 400, 'content');
    assertHttpError(await editComment(srv, author, postId, c.id, 'a'.repeat(10001), { alias }), 400, 'content');
  }
  assert.deepEqual((await list(postId)).comments, [c], 'unchanged');
  assert.deepEqual((await list(otherPost)).comments, [elsewhere], 'unchanged');
  await sleep(700);
  /* only the two creations: no update, list or delete event */
  assert.equal(postEvents(listener, postId).length, 1, listener.describe());
  assert.equal(postEvents(listener, otherPost).length, 1, listener.describe());
  await listener.close();
});

test('DELETE by the author on the route and every alias → 204; comment.updated deleted then comments.list without it', async () => {
  const postId = newPostId();
  const author = uid();
  const listener = await publicClient(srv, '/');
  const dev = await srv.device(uid(), 'watcher');
  const keep = await create(author, postId, 'stays');
  const doomed = [];
  for (const alias of ALIASES) doomed.push(await create(author, postId, `to delete via route ${alias}`));
  await waitEvents(listener, postId, 'comment.created', 1 + ALIASES.length);
  await waitEvents(dev, postId, 'comment.created', 1 + ALIASES.length);
  listener.cursor = listener.frames.length;
  dev.cursor = dev.frames.length;
  let remaining = [keep, ...doomed];
  for (const alias of ALIASES) {
    const victim = doomed[alias];
    const r = await deleteComment(srv, author, postId, victim.id, { alias });
    assert.equal(r.status, 204, `DELETE via route ${alias}: ${r.status} ${r.text}`);
    assert.equal(r.text, '', '204 has no body');
    remaining = remaining.filter((x) => x.id !== victim.id);
    for (const client of [listener, dev]) {
      const { lst } = await updatedThenList(client, postId, victim.id, 'deleted');
      assert.deepEqual(lst.data.comments, remaining, `${client.label}: the list after deleting ${victim.id}`);
      assert.equal(lst.data.count, remaining.length);
    }
    const l = await list(postId);
    assert.deepEqual(l.comments, remaining);
    /* deleting or editing it again → 404 */
    assertHttpError(await deleteComment(srv, author, postId, victim.id, { alias }), 404);
    assertHttpError(await editComment(srv, author, postId, victim.id, 'zombie', { alias }), 404);
  }
  assert.deepEqual((await list(postId)).comments, [keep]);
  await listener.close();
  await dev.close();
});

test('DELETE: another user → 403, no token → 401, unknown comment or one of another note → 404; nothing removed or sent', async () => {
  const postId = newPostId();
  const otherPost = newPostId();
  const author = uid();
  const listener = await publicClient(srv, '/api/v1/ws');
  const c = await create(author, postId, 'protected');
  const elsewhere = await create(author, otherPost, 'on another note');
  await waitEvents(listener, postId, 'comment.created', 1);
  await waitEvents(listener, otherPost, 'comment.created', 1);
  for (const alias of ALIASES) {
    assertHttpError(await deleteComment(srv, uid(), postId, c.id, { alias }), 403);
    assertHttpError(await deleteComment(srv, author, postId, c.id, { alias, token: null }), 401);
    assertHttpError(await deleteComment(srv, author, postId, c.id, { alias, token: 'garbage' }), 401);
    assertHttpError(await deleteComment(srv, author, postId, crypto.randomUUID(), { alias }), 404);
    assertHttpError(await deleteComment(srv, author, postId, 'no-such-comment', { alias }), 404);
    assertHttpError(await deleteComment(srv, author, postId, elsewhere.id, { alias }), 404);
    assertHttpError(await deleteComment(srv, author, otherPost, c.id, { alias }), 404);
  }
  assert.deepEqual((await list(postId)).comments, [c]);
  assert.deepEqual((await list(otherPost)).comments, [elsewhere]);
  await sleep(700);
  /* only the two creations: no update, list or delete event */
  assert.equal(postEvents(listener, postId).length, 1, listener.describe());
  assert.equal(postEvents(listener, otherPost).length, 1, listener.describe());
  await listener.close();
});

test('wrong methods on the comment routes → 405', async () => {
  const postId = newPostId();
  const user = uid();
  const c = await create(user, postId, 'x');
  const tok = srv.token(user);
  for (const alias of ALIASES) {
    for (const m of ['PUT', 'DELETE', 'PATCH']) {
      const r = await srv.http(m, commentPath(postId, undefined, alias), { token: tok, body: { content: 'y' } });
      assertHttpError(r, 405);
    }
    for (const m of ['POST', 'PATCH']) {
      const r = await srv.http(m, commentPath(postId, c.id, alias), { token: tok, body: { content: 'y' } });
      assertHttpError(r, 405);
    }
  }
  assert.deepEqual((await list(postId)).comments, [c]);
});

test('20 concurrent POSTs by different users on one note: 20 comments, 20 events, distinct ids', async () => {
  const postId = newPostId();
  const listener = await publicClient(srv, '/api/v1/ws');
  const users = Array.from({ length: 20 }, () => uid());
  const replies = await Promise.all(users.map((u, i) => postComment(srv, u, postId, `concurrent ${i}`, { alias: i % 4 })));
  for (const r of replies) assert.equal(r.status, 201, r.text);
  const ids = replies.map((r) => r.json.id);
  assert.equal(new Set(ids).size, 20);
  const l = await list(postId);
  assert.equal(l.count, 20);
  assert.deepEqual(new Set(l.comments.map((c) => c.id)), new Set(ids));
  const sorted = [...l.comments].sort((a, b) => Date.parse(a.createdAt) - Date.parse(b.createdAt));
  assert.deepEqual(l.comments.map((c) => Date.parse(c.createdAt)), sorted.map((c) => Date.parse(c.createdAt)), 'oldest first');
  const ev = await waitEvents(listener, postId, 'comment.created', 20);
  assert.equal(ev.length, 20);
  assert.deepEqual(new Set(ev.map((m) => m.data.comment.id)), new Set(ids));
  await listener.close();
});

test('two instances: a comment posted, edited and deleted on one is listed on and announced by the other', async () => {
  const postId = newPostId();
  const author = uid();
  const onOther = await publicClient(other, '/api/v1/ws');
  const c = await create(author, postId, 'from instance A');
  const created = await onOther.waitFor(
    (m) => m.type === 'comment.created' && m.data && m.data.postId === postId, 15000, 'comment.created on B',
  );
  assert.deepEqual(created.data.comment, c);
  assert.deepEqual((await list(postId, 0, other)).comments, [c]);
  /* edit and delete on A: B's listener gets both events */
  const r = await editComment(srv, author, postId, c.id, 'edited on A');
  assert.equal(r.status, 200, r.text);
  const { lst } = await updatedThenList(onOther, postId, c.id, 'updated');
  assert.deepEqual(lst.data.comments, [r.json]);
  assert.equal((await deleteComment(srv, author, postId, c.id)).status, 204);
  const del = await updatedThenList(onOther, postId, c.id, 'deleted');
  assert.deepEqual(del.lst.data, { postId, comments: [], count: 0 });
  assert.equal((await list(postId, 0, other)).count, 0);
  await onOther.close();
});


/* 8 comments of 10,000 bytes: a comments.list of ~80 KB on a server whose
 * outbound bound is 64 KiB.  Clients that read promptly are not slow
 * consumers (SPEC §2 1013): one user's comments must not let a subscribe
 * or an edit disconnect the listeners. */
async function bigNote() {
  const postId = newPostId();
  const author = uid();
  const made = [];
  for (let i = 0; i < 8; i += 1) made.push(await create(author, postId, `${i}`.repeat(10000), { server: tight }));
  /* the comment.created events go out through Redis after each 201: let them pass before a
   * listener connects, so its ring holds only what the test sends it */
  await sleep(500);
  return { postId, author, made };
}

test('a comment list larger than max_outbound_bytes: subscribe gets the whole snapshot, not a 1013', async () => {
  const { postId, made } = await bigNote();
  const subscriber = await publicClient(tight, '/ws/public');
  subscriber.send({ type: 'subscribe', ref: 'big-snap', data: { postId } });
  const snap = await subscriber.waitFor((m) => m.ref === 'big-snap', 15000, 'the snapshot');
  assert.equal(snap.type, 'comments.list', JSON.stringify(snap).slice(0, 300));
  assert.equal(snap.data.count, 8);
  assert.deepEqual(snap.data.comments.map((c) => c.id), made.map((c) => c.id));
  await sleep(300);
  assert.equal(subscriber.closeInfo, null, `still open: ${JSON.stringify(subscriber.closeInfo)}`);
  await subscriber.close();
});

test('a comment list larger than max_outbound_bytes: an edit does not disconnect every listener', async () => {
  const { postId, author, made } = await bigNote();
  const listeners = [await publicClient(tight, '/api/v1/ws'), await publicClient(tight, '/'), await tight.device(uid(), 'reader')];
  const r = await editComment(tight, author, postId, made[0].id, 'short now');
  assert.equal(r.status, 200, r.text);
  for (const c of listeners) {
    const { lst } = await updatedThenList(c, postId, made[0].id, 'updated');
    assert.equal(lst.data.count, 8);
    assert.equal(lst.data.comments[0].content, 'short now');
  }
  await sleep(300);
  for (const c of listeners) assert.equal(c.closeInfo, null, `${c.label} still open: ${JSON.stringify(c.closeInfo)}`);
  for (const c of listeners) await c.close();
});

/* Last in this file: when the server mishandles an empty body it may die,
 * and every later test would fail for that reason alone. */
test('an empty body (Content-Length: 0) on POST and PUT → 400 (401 without a token); the server keeps serving', async () => {
  const postId = newPostId();
  const user = uid();
  const c = await create(user, postId, 'before the empty bodies');
  assertHttpError(await postComment(srv, user, postId, undefined, { body: '' }), 400);
  assertHttpError(await postComment(srv, user, postId, undefined, { body: '', token: null }), 401);
  assertHttpError(await editComment(srv, user, postId, c.id, undefined, { body: '' }), 400);
  const h = await srv.http('GET', '/health');
  assert.equal(h.status, 200, h.text);
  assert.deepEqual((await list(postId)).comments, [c]);
});
