'use strict';
/*
 * http_strict.test.js -- REST request syntax is refused, never guessed
 * (issue 10): a query argument too long for the server to read, repeated,
 * without '=' or holding a control byte answers 400 naming the field
 * (before, every such value behaved as if it were absent); a Content-Length
 * that is not a plain decimal number answers 400 and one over
 * max_body_bytes 413, the connection then closed so the unread body is
 * never taken for a next request (before, it was read with atoll: "12abc"
 * waited for 12 bytes, "-5" was "missing", "0x2" was 0 and its body parsed
 * as a second request).
 *
 * The WebSocket upgrade's parsing (ns_upgrade, fuzzed by fuzz_upgrade) is
 * held to the same standard: an Origin of 256 bytes or more no longer
 * counts as absent (it was allowed whatever allowed_origins said), and an
 * Authorization header of NS_TOKEN_MAX + 8..15 bytes is refused as
 * "invalid token" without the 1-8 byte stack overflow of the old copy.
 *
 * Every REST request goes over a raw TCP socket, so the bytes on the wire
 * are exactly the ones written here.  Each read is bounded by a timeout.
 */
const assert = require('node:assert/strict');
const net = require('node:net');
const { test, useServer, uid, serviceToken } = require('./lib/harness');

const MAX_BODY = 4096;
const ORIGIN = 'https://app.example.com';
const TOKEN_MAX = 8192; /* NS_TOKEN_MAX */
const srv = useServer({ env: { NOTISYNC_MAX_BODY_BYTES: String(MAX_BODY) } });
const strict = useServer({ env: { NOTISYNC_ALLOWED_ORIGINS: `${ORIGIN},http://localhost:3000` } });

const RAW_TIMEOUT_MS = 5000;

/* Parses every complete HTTP/1.x response in `buf` (latin1 text). */
function parseResponses(buf) {
  const out = [];
  let rest = buf;
  for (;;) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) break;
    const lines = rest.slice(0, end).split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
    if (!m) break;
    const headers = {};
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
    }
    const len = headers['content-length'] !== undefined ? Number(headers['content-length']) : 0;
    if (rest.length < end + 4 + len) break;
    const body = rest.slice(end + 4, end + 4 + len);
    let json;
    try {
      json = JSON.parse(Buffer.from(body, 'latin1').toString('utf8'));
    } catch {
      json = undefined;
    }
    out.push({ status: Number(m[1]), headers, body, json });
    rest = rest.slice(end + 4 + len);
  }
  return { responses: out, rest };
}

/* Writes `text` on a fresh connection and collects what comes back until
 * the server closes it or `settleMs` pass after the first complete response
 * (keep-alive).  Resolves {responses, closed, raw}; rejects when nothing
 * complete arrives within RAW_TIMEOUT_MS. */
function raw(text, { settleMs = 400 } = {}) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port: srv.port });
    let buf = '';
    let done = false;
    let settle = null;
    const finish = (closed) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearTimeout(settle);
      sock.destroy();
      const { responses } = parseResponses(buf);
      if (!responses.length) {
        reject(new Error(`no complete HTTP response (closed=${closed}): ${JSON.stringify(buf.slice(0, 400))} for ${JSON.stringify(text.slice(0, 200))}`));
        return;
      }
      resolve({ responses, closed, raw: buf });
    };
    const timer = setTimeout(() => finish(false), RAW_TIMEOUT_MS);
    sock.on('connect', () => sock.write(Buffer.from(text, 'latin1')));
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      if (!settle && parseResponses(buf).responses.length) settle = setTimeout(() => finish(false), settleMs);
    });
    sock.on('end', () => finish(true));
    sock.on('close', () => finish(true));
    sock.on('error', () => finish(true));
  });
}

function get(pathAndQuery, token) {
  return raw(`GET ${pathAndQuery} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\n\r\n`);
}

function post(pathName, token, contentLength, body) {
  return raw(`POST ${pathName} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\n` +
    `Content-Type: application/json\r\nContent-Length: ${contentLength}\r\n\r\n${body}`);
}

/* Asserts one 400 whose error names `field` (member and message). */
function assertBad(res, field, what) {
  const r = res.responses[0];
  assert.equal(r.status, 400, `${what}: status ${r.status} ${r.body}`);
  assert.ok(r.json && r.json.error, `${what}: JSON error body: ${r.body}`);
  assert.equal(r.json.error.code, 'bad_request', `${what}: ${r.body}`);
  assert.equal(r.json.error.field, field, `${what}: ${r.body}`);
  assert.ok(r.json.error.message.includes(field), `${what}: message names ${field}: ${r.body}`);
}

/* ------------------------------------------------------- query values */

test('GET /api/v1/notifications: query values the server cannot read whole are refused with 400 naming the field, not taken as absent', async () => {
  const tok = srv.token(uid());
  const fill = (n) => 'x'.repeat(n);

  /* the reported case: before= with 96 and more bytes */
  assertBad(await get(`/api/v1/notifications?before=${fill(96)}`, tok), 'before', 'before=96 bytes');
  assertBad(await get(`/api/v1/notifications?before=${fill(500)}`, tok), 'before', 'before=500 bytes');
  /* a long limit= is a bad limit, not the default 50 */
  assertBad(await get(`/api/v1/notifications?limit=${'1'.repeat(120)}`, tok), 'limit', 'limit=120 digits');
  assertBad(await get(`/api/v1/notifications?unread=${'1'.repeat(100)}`, tok), 'unread', 'unread=100 bytes');
  /* an over-long argument of no meaning here used to hide every later one:
   * limit=0 (a bad value) was never read and the answer was 200 */
  assertBad(await get(`/api/v1/notifications?junk=${fill(100)}&limit=0`, tok), 'junk', 'junk before limit');

  /* the bound: "before=" + 88 bytes = 95 is read (and is no timestamp);
   * one byte more is too long.  Both 400, with different messages. */
  const at = await get(`/api/v1/notifications?before=${fill(88)}`, tok);
  assertBad(at, 'before', 'before= at the bound');
  assert.match(at.responses[0].json.error.message, /RFC 3339/);
  const over = await get(`/api/v1/notifications?before=${fill(89)}`, tok);
  assertBad(over, 'before', 'before= one over the bound');
  assert.match(over.responses[0].json.error.message, /too long/);
});

test('GET /api/v1/notifications: a repeated argument, a bare name and a control byte are malformed (400 naming the field)', async () => {
  const tok = srv.token(uid());
  assertBad(await get('/api/v1/notifications?limit=5&limit=500', tok), 'limit', 'limit twice');
  assertBad(await get('/api/v1/notifications?unread', tok), 'unread', 'bare unread');
  assertBad(await get('/api/v1/notifications?limit=5%09', tok), 'limit', 'limit with a TAB');
  /* malformed percent-encoding never reaches the server: lws refuses it */
  const pct = await get('/api/v1/notifications?before=%zz', tok);
  assert.ok(pct.responses[0].status >= 400 && pct.responses[0].status < 500, `%zz: ${pct.responses[0].status}`);
});

test('GET /api/v1/notifications: well-formed query values still work (200, limit honoured)', async () => {
  const tok = srv.token(uid());
  const ok = await get('/api/v1/notifications?limit=5&unread=1&before=2026-01-15T10:30:00.123456Z', tok);
  assert.equal(ok.responses[0].status, 200, ok.responses[0].body);
  assert.deepEqual(ok.responses[0].json, { notifications: [], next_before: null });
  const none = await get('/api/v1/notifications', tok);
  assert.equal(none.responses[0].status, 200, none.responses[0].body);
  const enc = await get('/api/v1/notifications?limit=%35', tok); /* "5" */
  assert.equal(enc.responses[0].status, 200, enc.responses[0].body);
});

/* ------------------------------------------------------ Content-Length */

test('Content-Length that is not a plain decimal number: 400 naming Content-Length, and the connection is closed (the body is not read as a next request)', async () => {
  const tok = serviceToken(srv);
  const body = JSON.stringify({ type: 'strict.test', data: {} });
  const n = Buffer.byteLength(body);
  for (const cl of [`${n}abc`, '-5', `+${n}`, `0x${n.toString(16)}`, `${n}, ${n}`, `${n}.0`, '1e3', `${n} ${n}`]) {
    const res = await post('/api/v1/broadcast', tok, cl, body);
    assertBad(res, 'Content-Length', `Content-Length: ${cl}`);
    assert.equal(res.responses.length, 1, `Content-Length: ${cl}: exactly one response, got ${JSON.stringify(res.raw.slice(0, 600))}`);
    assert.ok(res.closed, `Content-Length: ${cl}: connection closed after the refusal`);
  }
});

test('Content-Length over max_body_bytes, however large (no overflow): 413, connection closed', async () => {
  const tok = serviceToken(srv);
  for (const cl of [String(MAX_BODY + 1), '99999999999999999999999', '18446744073709551617', '9223372036854775808', '0'.repeat(40) + '5000']) {
    const res = await post('/api/v1/broadcast', tok, cl, '{}');
    const r = res.responses[0];
    assert.equal(r.status, 413, `Content-Length: ${cl}: ${r.status} ${r.body}`);
    assert.equal(r.json.error.code, 'too_large', r.body);
    assert.equal(res.responses.length, 1, `Content-Length: ${cl}: one response`);
    assert.ok(res.closed, `Content-Length: ${cl}: connection closed after the refusal`);
  }
});

test('a plain Content-Length (leading zeros and surrounding blanks allowed) is honoured: 202, and keep-alive still serves a second request', async () => {
  const tok = serviceToken(srv);
  const body = JSON.stringify({ type: 'strict.test', data: { n: 1 } });
  const n = Buffer.byteLength(body);
  for (const cl of [String(n), `00${n}`, `${n}  `]) {
    const res = await post('/api/v1/broadcast', tok, cl, body);
    assert.equal(res.responses[0].status, 202, `Content-Length: ${JSON.stringify(cl)}: ${res.responses[0].body}`);
  }
  /* exactly max_body_bytes is allowed (400 for the JSON, not 413) */
  const big = await post('/api/v1/broadcast', tok, String(MAX_BODY), ' '.repeat(MAX_BODY));
  assert.equal(big.responses[0].status, 400, big.responses[0].body);
  assert.equal(big.responses[0].json.error.code, 'bad_json', big.responses[0].body);
  /* two pipelined requests on one connection: both answered */
  const two = await raw(
    `POST /api/v1/broadcast HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${tok}\r\nContent-Length: ${n}\r\n\r\n${body}` +
    'GET /health HTTP/1.1\r\nHost: a\r\n\r\n', { settleMs: 800 });
  assert.equal(two.responses.length, 2, JSON.stringify(two.raw.slice(0, 800)));
  assert.equal(two.responses[0].status, 202);
  assert.equal(two.responses[1].status, 200);
});

/* ------------------------------------------------- WebSocket upgrade */

test('upgrade: an Origin of 256 bytes or more is refused like any unlisted Origin (1008 "origin not allowed"); the listed one still connects', async () => {
  const user = uid();
  for (const origin of [`https://${'o'.repeat(300)}.example`, `${ORIGIN}/${'x'.repeat(260)}`, 'https://' + 'a'.repeat(4000)]) {
    const dev = strict.ws(strict.wsUrl({ token: strict.token(user), device_id: 'web' }), { headers: { Origin: origin } });
    await dev.open();
    const info = await dev.closed(10000);
    assert.deepEqual([info.code, info.reason], [1008, 'origin not allowed'], `Origin of ${origin.length} bytes: ${dev.describe()}`);
    assert.equal(dev.messages().length, 0, dev.describe());
    const pub = strict.ws(`ws://127.0.0.1:${strict.port}/api/v1/ws`, { headers: { Origin: origin } });
    await pub.open();
    const pinfo = await pub.closed(10000);
    assert.deepEqual([pinfo.code, pinfo.reason], [1008, 'origin not allowed'], pub.describe());
  }
  const good = await strict.device(user, 'web', { headers: { Origin: ORIGIN } });
  assert.equal(good.welcome.data.device_id, 'web');
  await good.close();
});

test('upgrade: an Authorization header just over the token limit (NS_TOKEN_MAX + 1..8 bytes of token) closes 1008 "invalid token" and the server lives on', async () => {
  const user = uid();
  for (const extra of [1, 4, 8]) {
    const dev = srv.ws(srv.wsUrl({ device_id: 'big' }), { headers: { Authorization: `Bearer ${'a'.repeat(TOKEN_MAX + extra)}` } });
    await dev.open();
    const info = await dev.closed(10000);
    assert.deepEqual([info.code, info.reason], [1008, 'invalid token'], `token of ${TOKEN_MAX + extra} bytes: ${dev.describe()}`);
  }
  /* a token of exactly NS_TOKEN_MAX bytes is read (and is no JWT) */
  const max = srv.ws(srv.wsUrl({ device_id: 'big' }), { headers: { Authorization: `Bearer ${'a'.repeat(TOKEN_MAX)}` } });
  await max.open();
  assert.deepEqual(Object.values(await max.closed(10000)).slice(0, 2), [1008, 'invalid token']);
  assert.equal(srv.exit, null, `server exited: ${JSON.stringify(srv.exit)}`);
  const ok = await srv.device(user, 'after');
  assert.equal(ok.welcome.data.device_id, 'after');
  await ok.close();
  const h = await srv.http('GET', '/health', { timeoutMs: 5000 });
  assert.equal(h.status, 200, h.text);
});
