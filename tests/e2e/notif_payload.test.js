'use strict';
/*
 * notif_payload.test.js -- SPEC §9 "Create" and "Stored / delivered
 * notification": the new optional fields data, url, tags, collapse_key,
 * ttl, expires_at and deliver_at.  Valid values round-trip through the
 * POST reply, GET one, GET list, the batch reply and new_notification.data
 * (which also carries `unread`); absent fields come back as null / [] with
 * status "queued" and expired false.  Every rule violation is 400 naming
 * the field (error.field, message "<field>: …"), in a batch with the prefix
 * notifications[i].; nothing is stored (a batch is all-or-nothing).
 * max_data_bytes is honoured (default 4k, and 1k when configured); ttl and
 * expires_at are bounded by queue_ttl; ttl with expires_at names ttl.
 */
const assert = require('node:assert/strict');
const {
  test, useServer, uid, isDateString, postNotification, postBatch, durables,
} = require('./lib/harness');
const { getOne } = require('./lib/notif');


const srv = useServer();
const small = useServer({ env: { NOTISYNC_MAX_DATA_BYTES: '1k', NOTISYNC_QUEUE_TTL: '1h' } });

const MODEL_KEYS = ['data', 'url', 'tags', 'collapse_key', 'expires_at', 'deliver_at', 'status', 'expired'];
const QUEUE_TTL_S = 7 * 86400; /* default queue_ttl */
const DAY_MS = 86400 * 1000;
const isNew = (id) => (m) => m.type === 'new_notification' && m.data && m.data.id === id;
const iso = (ms) => new Date(ms).toISOString();

function assertBadRequest(r, field, what) {
  assert.equal(r.status, 400, `${what}: status ${r.status} ${r.text}`);
  assert.ok(r.json && r.json.error, `${what}: error body: ${r.text}`);
  assert.equal(r.json.error.code, 'bad_request', `${what}: ${r.text}`);
  assert.equal(r.json.error.field, field, `${what}: error.field: ${r.text}`);
  assert.equal(typeof r.json.error.message, 'string', r.text);
  assert.ok(r.json.error.message.startsWith(`${field}:`), `${what}: message names ${field}: ${r.text}`);
}

/* Every §9 key is present with the right type. */
function assertModelShape(n, where) {
  for (const k of MODEL_KEYS) assert.ok(k in n, `${where}: field ${k} in ${JSON.stringify(n)}`);
  assert.ok(n.data === null || (typeof n.data === 'object' && !Array.isArray(n.data)), `${where}: data ${JSON.stringify(n.data)}`);
  assert.ok(n.url === null || typeof n.url === 'string', `${where}: url`);
  assert.ok(Array.isArray(n.tags), `${where}: tags is an array: ${JSON.stringify(n.tags)}`);
  assert.ok(n.collapse_key === null || typeof n.collapse_key === 'string', `${where}: collapse_key`);
  for (const k of ['expires_at', 'deliver_at']) {
    assert.ok(n[k] === null || isDateString(n[k]), `${where}: ${k} is null or RFC 3339: ${n[k]}`);
  }
  assert.ok(['scheduled', 'queued', 'canceled'].includes(n.status), `${where}: status ${n.status}`);
  assert.equal(typeof n.expired, 'boolean', `${where}: expired ${n.expired}`);
}

/* The §9 fields of `n`, with the two times as instants (ms). */
function model(n) {
  const out = {};
  for (const k of MODEL_KEYS) out[k] = n[k];
  for (const k of ['expires_at', 'deliver_at']) out[k] = n[k] === null ? null : Date.parse(n[k]);
  return out;
}

async function listAll(server, user) {
  const r = await server.http('GET', '/api/v1/notifications?limit=200', { token: server.token(user) });
  assert.equal(r.status, 200, r.text);
  return r.json.notifications;
}

/* ------------------------------------------------------------ round trip */

test('absent fields: data null, url null, tags [], collapse_key null, expires_at/deliver_at null, status queued, expired false', async () => {
  const user = uid();
  const r = await postNotification(srv, user);
  assert.equal(r.status, 201, r.text);
  assertModelShape(r.json, 'POST reply');
  const want = {
    data: null, url: null, tags: [], collapse_key: null, expires_at: null, deliver_at: null, status: 'queued', expired: false,
  };
  assert.deepEqual(model(r.json), want, JSON.stringify(r.json));
  const g = await getOne(srv, user, r.json.id);
  assertModelShape(g, 'GET one');
  assert.deepEqual(model(g), want, JSON.stringify(g));
  const [l] = await listAll(srv, user);
  assertModelShape(l, 'GET list');
  assert.deepEqual(model(l), want, JSON.stringify(l));
});

test('every field round-trips: POST reply = GET one = GET list = new_notification.data (+ unread)', async () => {
  const user = uid();
  const dev = await srv.device(user, 'phone');
  const data = {
    kind: 'chat', thread: { id: 42, participants: ['a', 'b'], muted: false }, none: null, text: 'héllo ✓', n: -7,
  };
  const fields = {
    data,
    url: 'https://example.com/chat/42?from=push#last',
    tags: ['chat', 'urgent', 'é'.repeat(16)],
    collapse_key: 'Chat_42.v1:x-y',
    ttl: 3600,
  };
  const t0 = Date.now();
  const r = await postNotification(srv, user, fields);
  assert.equal(r.status, 201, r.text);
  const n = r.json;
  assertModelShape(n, 'POST reply');
  assert.deepEqual(n.data, data);
  assert.equal(n.url, fields.url);
  assert.deepEqual(n.tags, fields.tags, 'tags in the given order');
  assert.equal(n.collapse_key, fields.collapse_key);
  assert.equal(n.status, 'queued');
  assert.equal(n.expired, false);
  assert.equal(n.deliver_at, null);
  assert.ok(isDateString(n.expires_at), `expires_at: ${n.expires_at}`);
  assert.ok(Math.abs(Date.parse(n.expires_at) - Date.parse(n.created_at) - 3600 * 1000) <= 1000,
    `expires_at = created_at + ttl: ${n.created_at} → ${n.expires_at}`);
  assert.ok(Math.abs(Date.parse(n.created_at) - t0) < 60000, `created_at is now: ${n.created_at}`);

  const g = await getOne(srv, user, n.id);
  assertModelShape(g, 'GET one');
  assert.deepEqual(model(g), model(n), `GET one ${JSON.stringify(g)} vs POST ${JSON.stringify(n)}`);
  const l = (await listAll(srv, user)).find((x) => x.id === n.id);
  assert.ok(l, 'in the list');
  assert.deepEqual(model(l), model(n), `GET list ${JSON.stringify(l)}`);

  const m = await dev.waitFor(isNew(n.id), 10000, 'new_notification');
  assertModelShape(m.data, 'new_notification.data');
  assert.deepEqual(model(m.data), model(n), `frame ${JSON.stringify(m.data)}`);
  assert.ok(Number.isInteger(m.data.unread), `new_notification.data.unread is an integer: ${JSON.stringify(m.data)}`);
  assert.equal(m.data.unread, 1, 'one unread notification after the first one');
  await dev.close();
});

test('expires_at (with offset and fraction) is stored as the same instant; ttl 0 and ttl = queue_ttl are accepted', async () => {
  const user = uid();
  /* one hour ahead, written as +02:00 with a fraction */
  const target = Date.now() + 3600 * 1000;
  const shifted = new Date(target + 2 * 3600 * 1000).toISOString().replace('Z', '+02:00');
  const r = await postNotification(srv, user, { expires_at: shifted });
  assert.equal(r.status, 201, r.text);
  assert.ok(Math.abs(Date.parse(r.json.expires_at) - target) <= 1, `${shifted} → ${r.json.expires_at}`);
  assert.equal(r.json.expired, false);
  assert.equal(model(await getOne(srv, user, r.json.id)).expires_at, Date.parse(r.json.expires_at));

  const max = await postNotification(srv, user, { ttl: QUEUE_TTL_S });
  assert.equal(max.status, 201, `ttl = queue_ttl: ${max.text}`);
  assert.ok(Math.abs(Date.parse(max.json.expires_at) - Date.parse(max.json.created_at) - QUEUE_TTL_S * 1000) <= 1000, max.text);
  const zero = await postNotification(srv, user, { ttl: 0 });
  assert.equal(zero.status, 201, `ttl 0: ${zero.text}`);
  assert.ok(Math.abs(Date.parse(zero.json.expires_at) - Date.parse(zero.json.created_at)) <= 1000,
    `ttl 0: expires_at = created_at: ${zero.text}`);
  const near = await postNotification(srv, user, { expires_at: iso(Date.now() + QUEUE_TTL_S * 1000 - 60000) });
  assert.equal(near.status, 201, `expires_at just inside queue_ttl: ${near.text}`);
});

test('limits at their edges are accepted: url of 2,048 bytes, 10 tags, a 32-byte tag, a 64-byte collapse_key, data {}, tags []', async () => {
  const user = uid();
  const base = 'https://example.com/';
  const url = base + 'a'.repeat(2048 - base.length);
  const tags = Array.from({ length: 10 }, (_, i) => `t${i}`);
  tags[9] = 'x'.repeat(32);
  const key = `Az09_.:-${'k'.repeat(56)}`;
  assert.equal(Buffer.byteLength(key), 64);
  const r = await postNotification(srv, user, { url, tags, collapse_key: key, data: {} });
  assert.equal(r.status, 201, r.text.slice(0, 500));
  assert.equal(r.json.url, url);
  assert.deepEqual(r.json.tags, tags);
  assert.equal(r.json.collapse_key, key);
  assert.deepEqual(r.json.data, {});
  const e = await postNotification(srv, user, { tags: [], url: 'http://localhost:3000/x' });
  assert.equal(e.status, 201, e.text);
  assert.deepEqual(e.json.tags, []);
  assert.equal(e.json.url, 'http://localhost:3000/x');
});

test('batch: each element keeps its own fields in the reply, in GET and in new_notification', async () => {
  const user = uid();
  const dev = await srv.device(user, 'tab');
  const items = [
    { app_name: 'e2e', title: 'b0', body: 'x', data: { i: 0 }, tags: ['a'] },
    { app_name: 'e2e', title: 'b1', body: 'x', url: 'http://example.org/1', collapse_key: 'k1' },
    { app_name: 'e2e', title: 'b2', body: 'x', ttl: 600 },
  ];
  const r = await postBatch(srv, user, items);
  assert.equal(r.status, 201, r.text);
  const got = r.json.notifications;
  assert.equal(got.length, 3);
  got.forEach((n, i) => assertModelShape(n, `batch reply [${i}]`));
  assert.deepEqual([got[0].data, got[0].tags, got[0].url, got[0].collapse_key], [{ i: 0 }, ['a'], null, null]);
  assert.deepEqual([got[1].data, got[1].tags, got[1].url, got[1].collapse_key], [null, [], 'http://example.org/1', 'k1']);
  assert.ok(got[2].expires_at !== null && Math.abs(Date.parse(got[2].expires_at) - Date.parse(got[2].created_at) - 600000) <= 1000,
    `ttl 600: ${JSON.stringify(got[2])}`);
  for (const n of got) {
    assert.deepEqual(model(await getOne(srv, user, n.id)), model(n));
    const m = await dev.waitFor(isNew(n.id), 10000, `frame of ${n.title}`);
    assert.deepEqual(model(m.data), model(n), JSON.stringify(m.data));
  }
  /* one batch is one change or three: either way the counts never go down and end at 3 */
  const unread = durables(dev, 'new_notification').map((m) => m.data.unread);
  assert.ok(unread.every((u, k) => Number.isInteger(u) && u >= 1 && u <= 3 && (k === 0 || u >= unread[k - 1])),
    `unread in the batch's frames: ${JSON.stringify(unread)}`);
  assert.equal(unread[2], 3, `unread after the batch: ${JSON.stringify(unread)}`);
  await dev.close();
});

test('max_data_bytes: 4k by default (4,000 bytes accepted, 4,100 and 2,100 × "é" refused); 1k when configured', async () => {
  const user = uid();
  const ok = await postNotification(srv, user, { data: { s: 'x'.repeat(4000) } });
  assert.equal(ok.status, 201, ok.text.slice(0, 300));
  assert.equal(ok.json.data.s.length, 4000);
  assertBadRequest(await postNotification(srv, user, { data: { s: 'x'.repeat(4100) } }), 'data', 'data of 4,100 bytes');
  assertBadRequest(await postNotification(srv, user, { data: { s: 'é'.repeat(2100) } }), 'data', 'data of 4,200 UTF-8 bytes');
  const u2 = uid();
  const sOk = await postNotification(small, u2, { data: { s: 'x'.repeat(900) } });
  assert.equal(sOk.status, 201, sOk.text.slice(0, 300));
  assertBadRequest(await postNotification(small, u2, { data: { s: 'x'.repeat(1100) } }), 'data', 'data of 1,100 bytes on 1k');
  /* queue_ttl = 1h bounds ttl and expires_at */
  assert.equal((await postNotification(small, u2, { ttl: 3600 })).status, 201);
  assertBadRequest(await postNotification(small, u2, { ttl: 3601 }), 'ttl', 'ttl over queue_ttl=1h');
  assertBadRequest(await postNotification(small, u2, { expires_at: iso(Date.now() + 3600 * 1000 + 120000) }),
    'expires_at', 'expires_at past now + queue_ttl=1h');
  assert.equal((await listAll(small, u2)).length, 2, 'only the two valid ones are stored');
});

/* --------------------------------------------------------------- refusals */

const BAD = [
  ['data', () => ({ data: [1, 2] }), 'an array'],
  ['data', () => ({ data: 'text' }), 'a string'],
  ['data', () => ({ data: 7 }), 'a number'],
  ['data', () => ({ data: true }), 'a boolean'],
  ['url', () => ({ url: 'ftp://example.com/x' }), 'not http(s)'],
  ['url', () => ({ url: 'example.com/x' }), 'without a scheme'],
  ['url', () => ({ url: '/relative/path' }), 'relative'],
  ['url', () => ({ url: 'javascript:alert(1)' }), 'javascript:'],
  ['url', () => ({ url: '' }), 'empty'],
  ['url', () => ({ url: 42 }), 'a number'],
  ['url', () => ({ url: `https://example.com/${'a'.repeat(2029)}` }), 'of 2,049 bytes'],
  ['tags', () => ({ tags: 'news' }), 'a string'],
  ['tags', () => ({ tags: Array.from({ length: 11 }, (_, i) => `t${i}`) }), 'of 11 tags'],
  ['tags', () => ({ tags: [''] }), 'with an empty tag'],
  ['tags', () => ({ tags: ['x'.repeat(33)] }), 'with a 33-byte tag'],
  ['tags', () => ({ tags: ['é'.repeat(17)] }), 'with a 34-byte (17 characters) tag'],
  ['tags', () => ({ tags: ['a', 'b', 'a'] }), 'with a duplicate'],
  ['tags', () => ({ tags: [1] }), 'with a number'],
  ['tags', () => ({ tags: { a: 1 } }), 'an object'],
  ['collapse_key', () => ({ collapse_key: '' }), 'empty'],
  ['collapse_key', () => ({ collapse_key: 'k'.repeat(65) }), 'of 65 bytes'],
  ['collapse_key', () => ({ collapse_key: 'has space' }), 'with a space'],
  ['collapse_key', () => ({ collapse_key: 'a/b' }), 'with a slash'],
  ['collapse_key', () => ({ collapse_key: 'clé' }), 'with a non-ASCII byte'],
  ['collapse_key', () => ({ collapse_key: 5 }), 'a number'],
  ['ttl', () => ({ ttl: -1 }), 'negative'],
  ['ttl', () => ({ ttl: 1.5 }), 'not an integer'],
  ['ttl', () => ({ ttl: '60' }), 'a string'],
  ['ttl', () => ({ ttl: QUEUE_TTL_S + 1 }), 'over queue_ttl'],
  ['ttl', () => ({ ttl: 60, expires_at: iso(Date.now() + 3600 * 1000) }), 'together with expires_at'],
  ['expires_at', () => ({ expires_at: iso(Date.now() - 60000) }), 'in the past'],
  ['expires_at', () => ({ expires_at: iso(Date.now() + QUEUE_TTL_S * 1000 + 3600 * 1000) }), 'past now + queue_ttl'],
  ['expires_at', () => ({ expires_at: 'tomorrow' }), 'not a date'],
  ['expires_at', () => ({ expires_at: '2030-13-01T00:00:00Z' }), 'month 13'],
  ['expires_at', () => ({ expires_at: Math.floor(Date.now() / 1000) + 3600 }), 'a number'],
  ['deliver_at', () => ({ deliver_at: iso(Date.now() - 60000) }), 'in the past'],
  ['deliver_at', () => ({ deliver_at: iso(Date.now() + 31 * DAY_MS) }), 'past now + 30 days'],
  ['deliver_at', () => ({ deliver_at: 'soon' }), 'not a date'],
  ['deliver_at', () => ({ deliver_at: 12345 }), 'a number'],
];

test('every rule violation → 400 naming the field; nothing stored', async () => {
  const user = uid();
  for (const [field, over, what] of BAD) {
    const r = await postNotification(srv, user, over());
    assertBadRequest(r, field, `${field} ${what}`);
  }
  assert.deepEqual(await listAll(srv, user), [], 'no notification stored by a refused POST');
});

test('batch: a violation in element i → 400 naming notifications[i].<field>; nothing of the batch stored', async () => {
  const user = uid();
  const good = (i) => ({ app_name: 'e2e', title: `ok ${i}`, body: 'x', tags: ['fine'] });
  /* one case per field, the bad element at a different index each time */
  const seen = new Set();
  let i = 0;
  for (const [field, over, what] of BAD) {
    if (seen.has(field)) continue;
    seen.add(field);
    const bad = 1 + (i % 3);
    i += 1;
    const items = [good(0), good(1), good(2), good(3)];
    items[bad] = { ...items[bad], ...over() };
    const r = await postBatch(srv, user, items);
    assertBadRequest(r, `notifications[${bad}].${field}`, `batch element ${bad}: ${field} ${what}`);
  }
  assert.equal(seen.size, 7, 'every §9 field checked in a batch');
  assert.deepEqual(await listAll(srv, user), [], 'all-or-nothing: nothing stored');
});

test('a refused POST is not delivered to a connected device', async () => {
  const user = uid();
  const dev = await srv.device(user, 'watch');
  assertBadRequest(await postNotification(srv, user, { tags: ['a', 'a'] }), 'tags', 'duplicate tags');
  assertBadRequest(await postBatch(srv, user, [{ app_name: 'e2e', title: 't', body: 'b', url: 'nope' }]),
    'notifications[0].url', 'batch bad url');
  const ok = await postNotification(srv, user, { tags: ['after'] });
  assert.equal(ok.status, 201, ok.text);
  const m = await dev.waitFor(isNew(ok.json.id), 10000, 'the valid one');
  assert.deepEqual(durables(dev, 'new_notification').map((x) => x.data.id), [ok.json.id], dev.describe());
  assert.equal(m.data.unread, 1);
  await dev.close();
});
