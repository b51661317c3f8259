'use strict';
/*
 * validate.test.js -- docs/openapi.yaml against a real notisyncd: every REST
 * endpoint of SPEC §6 (and §9) is called, success and error cases, and every
 * answer is checked against the document: its status must be listed for that
 * operation, its Content-Type must be one of that response's media types,
 * and its body must validate against that media type's schema (ajv, JSON
 * Schema 2020-12 as OpenAPI 3.1 uses, after resolving every $ref).  A
 * status, content type or shape the document does not describe fails the
 * test.  Bodies of requests expected to succeed are validated against the
 * operation's requestBody schema too (the document must accept what works).
 *
 * SPEC §9 endpoints and fields: set-up probes each one; a §9 test fails when
 * the server answers its endpoint as an unknown route (404 `no such
 * route`/`no such notification`, or 405).
 *
 * Environment (as the e2e tests): NS_BIN, NS_SVC_DIR, NS_SRC_DIR; optional
 * NS_OPENAPI_DOC.
 */
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const nodeHttp = require('node:http');
const path = require('node:path');
const YAML = require('yaml');
const Ajv2020 = require('ajv/dist/2020');
const addFormats = require('ajv-formats');
const h = require('../e2e/lib/harness.js');

const { test, uid, nowS, newId } = h;
/* NS_OPENAPI_DOC: another document to check (e.g. a deliberately broken copy,
 * to see this file fail on drift). */
const DOC_FILE = process.env.NS_OPENAPI_DOC ||
  path.join(process.env.NS_SRC_DIR || path.join(__dirname, '..', '..'), 'docs', 'openapi.yaml');
const RAW_DOC = YAML.parse(fs.readFileSync(DOC_FILE, 'utf8'));
const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

/* Fields SPEC §9 adds to a stored notification. */
const SPEC9_FIELDS = ['data', 'url', 'tags', 'collapse_key', 'expires_at', 'deliver_at', 'status', 'expired'];

/* ------------------------------------------------------------ $ref resolver */

/* A deep copy of `node` with every local $ref ("#/a/b") replaced by a copy of
 * its (resolved) target; sibling keys of a $ref are kept over the target's.
 * Only local refs exist in the document; a cycle is an error. */
function resolveRefs(doc) {
  const lookup = (ref) => {
    assert.ok(ref.startsWith('#/'), `only local $refs are supported: ${ref}`);
    let cur = doc;
    for (const raw of ref.slice(2).split('/')) {
      const key = decodeURIComponent(raw).replace(/~1/g, '/').replace(/~0/g, '~');
      assert.ok(cur && Object.prototype.hasOwnProperty.call(cur, key), `unresolved $ref ${ref}`);
      cur = cur[key];
    }
    return cur;
  };
  const walk = (node, stack) => {
    if (Array.isArray(node)) return node.map((x) => walk(x, stack));
    if (!node || typeof node !== 'object') return node;
    let out = {};
    if (typeof node.$ref === 'string') {
      assert.ok(!stack.includes(node.$ref), `cyclic $ref ${[...stack, node.$ref].join(' -> ')}`);
      out = { ...walk(lookup(node.$ref), [...stack, node.$ref]) };
    }
    for (const [k, v] of Object.entries(node)) {
      if (k !== '$ref') out[k] = walk(v, stack);
    }
    return out;
  };
  return walk(doc, []);
}

/* --------------------------------------------------------- the API object */

/* The resolved document and compiled validators.  `spec9Model`: the server
 * returns the §9 notification fields (else they are not required). */
function buildApi(spec9Model) {
  const raw = structuredClone(RAW_DOC);
  if (!spec9Model) {
    const n = raw.components.schemas.Notification;
    n.required = n.required.filter((f) => !SPEC9_FIELDS.includes(f));
  }
  const doc = resolveRefs(raw);
  const ajv = new Ajv2020({ strict: true, strictTypes: false, allErrors: true, allowUnionTypes: true });
  addFormats(ajv);
  const cache = new Map();
  const compile = (key, schema) => {
    if (!cache.has(key)) cache.set(key, ajv.compile(schema));
    return cache.get(key);
  };
  return { doc, compile };
}

let api = buildApi(true); // rebuilt once the server is probed
const exercised = new Map(); // "METHOD /doc/path" -> Set of statuses seen
const skippedOps = new Set(); // operations whose tests skipped (§9 not merged)

function fmtErrors(errors) {
  return (errors || []).map((e) => `${e.instancePath || '(root)'} ${e.message} ${JSON.stringify(e.params)}`).join('\n  ');
}

function baseType(ctype) {
  return String(ctype || '').split(';')[0].trim().toLowerCase();
}

/* Validates `res` against response object `resp` (already resolved); `what`
 * names it in messages. */
function validateAgainst(res, resp, what, key) {
  const ctype = baseType(res.headers['content-type']);
  if (!resp.content) {
    assert.equal(res.text, '', `${what}: documented without a body, got ${JSON.stringify(res.text)}`);
    return;
  }
  const media = resp.content[ctype];
  assert.ok(media, `${what}: Content-Type ${res.headers['content-type']} not documented (documented: ${Object.keys(resp.content).join(', ')}); body ${res.text.slice(0, 300)}`);
  let value = res.text;
  if (ctype === 'application/json') {
    assert.ok(res.json !== undefined, `${what}: body is not JSON: ${res.text.slice(0, 300)}`);
    value = res.json;
  }
  const validate = api.compile(`${key} ${ctype}`, media.schema || {});
  assert.ok(validate(value), `${what}: body does not match the document:\n  ${fmtErrors(validate.errors)}\nbody: ${res.text.slice(0, 1500)}`);
}

/* Checks a real answer of METHOD on documented path `docPath`. */
function checkOperation(res, method, docPath) {
  const m = method.toLowerCase();
  const item = api.doc.paths[docPath];
  assert.ok(item, `path ${docPath} is not in the document`);
  const op = item[m];
  assert.ok(op, `${method} ${docPath} is not in the document`);
  const status = String(res.status);
  const resp = op.responses[status];
  assert.ok(resp, `${method} ${docPath}: status ${status} not documented (documented: ${Object.keys(op.responses).join(', ')}); body ${res.text.slice(0, 300)}`);
  validateAgainst(res, resp, `${method} ${docPath} ${status}`, `${m} ${docPath} ${status}`);
  const k = `${method.toUpperCase()} ${docPath}`;
  if (!exercised.has(k)) exercised.set(k, new Set());
  exercised.get(k).add(status);
}

/* Checks an answer against a component response (404 NoSuchRoute, 405
 * MethodNotAllowed), for a path or method the document does not list. */
function checkComponent(res, name, status) {
  assert.equal(res.status, status, `expected ${status} (${name}), got ${res.status}: ${res.text.slice(0, 300)}`);
  const resp = api.doc.components.responses[name];
  assert.ok(resp, `components.responses.${name} missing`);
  validateAgainst(res, resp, `components.responses.${name}`, `component ${name}`);
}

/* Validates a request body that the server accepted against the
 * operation's requestBody schema. */
function checkRequestBody(method, docPath, body) {
  const op = api.doc.paths[docPath][method.toLowerCase()];
  assert.ok(op.requestBody, `${method} ${docPath} has no requestBody`);
  const schema = op.requestBody.content['application/json'].schema;
  const validate = api.compile(`req ${method} ${docPath}`, schema);
  assert.ok(validate(body), `${method} ${docPath}: an accepted request body is refused by the document:\n  ${fmtErrors(validate.errors)}\nbody: ${JSON.stringify(body).slice(0, 500)}`);
}

/* ------------------------------------------------------------- requests */

const srv = h.useServer();
let port429Server = null;

/* One request through the harness; checks it against the document.
 * opts: doc (documented path; default = urlPath without query), status
 * (expected), token, body, headers, field (expected error.field; null = none),
 * code (expected error.code), message. */
async function call(method, urlPath, opts = {}) {
  const docPath = opts.doc || urlPath.split('?')[0];
  const res = await srv.http(method, urlPath, { token: opts.token, body: opts.body, headers: opts.headers });
  const label = `${method} ${urlPath}`;
  if (opts.status !== undefined) {
    assert.equal(res.status, opts.status, `${label}: expected ${opts.status}, got ${res.status}: ${res.text.slice(0, 400)}`);
  }
  checkOperation(res, method, docPath);
  expectError(res, opts, label);
  if (res.status >= 200 && res.status < 300 && opts.body !== undefined && typeof opts.body === 'object' && !Buffer.isBuffer(opts.body)) {
    checkRequestBody(method, docPath, opts.body);
  }
  return res;
}

function expectError(res, opts, label) {
  if (opts.code !== undefined) assert.equal(res.json?.error?.code, opts.code, `${label}: error code; body ${res.text}`);
  if (opts.message !== undefined) assert.equal(res.json?.error?.message, opts.message, `${label}: error message; body ${res.text}`);
  if (opts.field !== undefined) {
    if (opts.field === null) assert.ok(!('field' in (res.json?.error || {})), `${label}: no field expected; body ${res.text}`);
    else assert.equal(res.json?.error?.field, opts.field, `${label}: error field; body ${res.text}`);
  }
}

/* A request written byte for byte on a socket (for what node's client will
 * not send: no Content-Length, a malformed one, one that is never honoured).
 * Returns {status, headers, text, json} once the server closed or the
 * announced body arrived.  Bounded. */
function rawHttp(port, head, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const chunks = [];
    let done = false;
    const finish = (err) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      const buf = Buffer.concat(chunks).toString('utf8');
      const sep = buf.indexOf('\r\n\r\n');
      if (sep < 0) {
        reject(err || new Error(`raw HTTP: no complete answer: ${JSON.stringify(buf)}`));
        return;
      }
      const lines = buf.slice(0, sep).split('\r\n');
      const status = Number(lines[0].split(' ')[1]);
      const headers = {};
      for (const l of lines.slice(1)) {
        const i = l.indexOf(':');
        headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
      }
      let text = buf.slice(sep + 4);
      if (headers['content-length'] !== undefined) text = text.slice(0, Number(headers['content-length']));
      let json;
      try {
        json = text ? JSON.parse(text) : undefined;
      } catch {
        json = undefined;
      }
      resolve({ status, headers, text, json });
    };
    const timer = setTimeout(() => finish(new Error('raw HTTP: timeout')), timeoutMs);
    s.on('data', (c) => {
      chunks.push(c);
      const buf = Buffer.concat(chunks).toString('utf8');
      const sep = buf.indexOf('\r\n\r\n');
      const m = /\r\ncontent-length:\s*(\d+)/i.exec(buf.slice(0, sep < 0 ? buf.length : sep));
      if (sep >= 0 && m && Buffer.byteLength(buf.slice(sep + 4)) >= Number(m[1])) finish();
    });
    s.on('end', () => finish());
    s.on('error', (e) => finish(e));
    s.write(head);
  });
}

/* A WebSocket upgrade request: {status: 101} when the server switched
 * protocols (the socket is closed at once), else the HTTP answer. */
function upgrade(port, urlPath, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const req = nodeHttp.request({
      host: '127.0.0.1',
      port,
      path: urlPath,
      agent: false,
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': crypto.randomBytes(16).toString('base64'),
      },
    });
    const timer = setTimeout(() => req.destroy(new Error(`upgrade ${urlPath}: no answer`)), timeoutMs);
    req.on('upgrade', (res, socket) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ status: res.statusCode, headers: res.headers, text: '' });
    });
    req.on('response', (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        clearTimeout(timer);
        const text = Buffer.concat(chunks).toString('utf8');
        let json;
        try {
          json = text ? JSON.parse(text) : undefined;
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode, headers: res.headers, text, json });
      });
    });
    req.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    req.end();
  });
}

/* ------------------------------------------------------------ fixtures */

const A = uid('oa-a');
const B = uid('oa-b');
const SVC = uid('oa-svc');
const tok = (sub, extra) => srv.token(sub, extra);
const svcTok = () => srv.token(SVC, { role: 'service' });
const expiredTok = () => srv.token(A, { iat: nowS() - 7200, exp: nowS() - 3600 });

const probe = { model: false, unread: false, bulk: false, cancel: false };

/* A §9 endpoint is "not merged" while the server answers it as a route it
 * does not have. */
function notMerged(res) {
  const msg = res.json?.error?.message;
  return res.status === 405 || (res.status === 404 && (msg === 'no such route' || msg === 'no such notification'));
}

h.setup(async () => {
  const created = await srv.http('POST', '/api/v1/notifications', {
    token: tok(A),
    body: { app_name: 'probe', title: 'probe', body: '', tags: ['probe'] },
  });
  assert.equal(created.status, 201, `probe POST: ${created.text}`);
  probe.model = Array.isArray(created.json.tags) && 'status' in created.json;
  probe.unread = !notMerged(await srv.http('GET', '/api/v1/notifications/unread_count', { token: tok(A) }));
  probe.bulk = !notMerged(await srv.http('POST', '/api/v1/notifications/actions', { token: tok(uid('oa-probe')), body: { action: 'read' } }));
  /* a delivered notification cannot be canceled: 409 not_scheduled */
  probe.cancel = (await srv.http('DELETE', `/api/v1/notifications/${created.json.id}`, { token: tok(A) })).status === 409;
  api = buildApi(probe.model);
});

/* §9 is on main (ad84e78): a §9 part the server answers as an unknown
 * route fails its test (it used to skip while §9 was being built). */
function skip9(t, part, ops) {
  assert.ok(probe[part], `SPEC §9 ${part} (${ops.join(', ') || 'fields'}) answered as an unknown route`);
  return false;
}

/* ================================================================ tests */

test('probe: SPEC §9 parts present in this server', async (t) => {
  t.diagnostic(`§9 notification fields: ${probe.model}, unread_count: ${probe.unread}, bulk actions: ${probe.bulk}, cancel: ${probe.cancel}`);
});

test('/health, /metrics, websocket stats and connections', async () => {
  const hr = await call('GET', '/health', { status: 200 });
  assert.equal(hr.json.status, 'ok');
  await call('GET', '/health?a=1&a=2', { doc: '/health', status: 400, code: 'bad_request', field: 'a' });
  await call('GET', '/health?novalue', { doc: '/health', status: 400, code: 'bad_request', field: 'novalue' });
  const args = Array.from({ length: 33 }, (_, i) => `k${i}=1`).join('&');
  await call('GET', `/health?${args}`, { doc: '/health', status: 400, field: 'query' });
  const mr = await call('GET', '/metrics', { status: 200 });
  assert.match(mr.headers['content-type'], /^text\/plain/);

  const dev = await srv.device(A, 'oa-phone', { params: { device_name: 'Phone of A', platform: 'android' } });
  try {
    await call('GET', '/api/v1/websocket/stats', { status: 200, token: tok(A) });
    await call('GET', '/api/v1/websocket/stats', { status: 200, token: svcTok() });
    await call('GET', '/api/v1/websocket/stats', { status: 401, code: 'unauthorized', message: 'missing token' });
    await call('GET', '/api/v1/websocket/stats', { status: 401, token: 'not.a.jwt', message: 'invalid token' });
    await call('GET', '/api/v1/websocket/stats', { status: 401, token: expiredTok(), message: 'token expired' });
    await call('GET', '/api/v1/websocket/stats', { status: 401, headers: { Authorization: 'Basic Zm9vOmJhcg==' }, message: 'invalid token' });
    await call('GET', '/api/v1/websocket/stats', { status: 401, token: h.signJwt({ alg: 'none', payload: h.claims(A) }) });
    await call('GET', '/api/v1/websocket/stats?limit=1&limit=2', { doc: '/api/v1/websocket/stats', status: 400, token: tok(A), field: 'limit' });
    const us = await call('GET', '/api/v1/websocket/users/stats', { status: 200, token: tok(A) });
    assert.ok(us.json.devices.some((d) => d.device_id === 'oa-phone' && d.status === 'online'), us.text);
    await call('GET', '/api/v1/websocket/users/stats', { status: 401 });
    await call('GET', '/api/v1/websocket/users/stats?x=1&x=1', { doc: '/api/v1/websocket/users/stats', status: 400, token: tok(A), field: 'x' });
    const cr = await call('GET', '/api/v1/websocket/connections', { status: 200 });
    assert.ok(cr.json.connectionCount >= 1, cr.text);
    await call('GET', '/api/v1/websocket/connections?=1', { doc: '/api/v1/websocket/connections', status: 400, field: 'query' });
  } finally {
    await dev.close();
  }
});

test('wrong method → 405, unknown path → 404, on every kind of route', async () => {
  const cases = [
    ['POST', '/health'], ['DELETE', '/metrics'], ['PUT', '/api/v1/websocket/stats'],
    ['DELETE', '/api/v1/websocket/users/stats'], ['POST', '/api/v1/websocket/connections'],
    ['DELETE', '/api/v1/notifications'], ['GET', '/api/v1/notifications/batch'],
    ['PUT', `/api/v1/notifications/${newId()}`], ['GET', `/api/v1/notifications/${newId()}/actions`],
    ['POST', '/api/v1/devices'], ['GET', '/api/v1/devices/some-device'],
    ['PUT', '/api/v1/notes/n1/comments'], ['GET', `/api/v1/notes/n1/comments/${newId()}`],
    ['PATCH', '/api/v1/notes/n1/comments'], ['GET', '/api/v1/broadcast'],
  ];
  for (const [m, p] of cases) {
    const body = ['POST', 'PUT', 'PATCH'].includes(m) ? {} : undefined;
    const res = await srv.http(m, p, { token: tok(A), body });
    checkComponent(res, 'MethodNotAllowed', 405);
  }
  for (const p of ['/api/v1/nope', '/api/v2/notifications', '/api/v1/notes/bad!id/comments', '/api/v1/notes/n1/other',
    `/api/v1/notifications/${newId()}/read`, '/api/v1/devices/a/b', '/health/x']) {
    const res = await srv.http('GET', p, { token: tok(A) });
    checkComponent(res, 'NoSuchRoute', 404);
    assert.equal(res.json.error.message, 'no such route', `${p}: ${res.text}`);
  }
});

test('request syntax: 411 without Content-Length, 413 over max_body_bytes, 400 naming Content-Length', async () => {
  const port = srv.port;
  const t = tok(A);
  const head = (m, p, extra) => `${m} ${p} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer ${t}\r\nContent-Type: application/json\r\n${extra}\r\n`;
  const posts = [
    ['POST', '/api/v1/notifications'], ['POST', '/api/v1/notifications/batch'],
    ['POST', `/api/v1/notifications/${newId()}/actions`], ['POST', '/api/v1/notes/n1/comments'],
    ['PUT', `/api/v1/notes/n1/comments/${newId()}`], ['POST', '/api/v1/broadcast'],
  ];
  for (const [m, p] of posts) {
    const doc = p
      .replace(/^\/api\/v1\/notifications\/[0-9a-f-]{36}\/actions$/, '/api/v1/notifications/{id}/actions')
      .replace(/^\/api\/v1\/notes\/n1\/comments\/[0-9a-f-]{36}$/, '/api/v1/notes/{post_id}/comments/{comment_id}')
      .replace(/^\/api\/v1\/notes\/n1\/comments$/, '/api/v1/notes/{post_id}/comments');
    let res = await rawHttp(port, head(m, p, ''));
    assert.equal(res.status, 411, `${m} ${p}: ${res.text}`);
    checkOperation(res, m, doc);
    expectError(res, { code: 'length_required', field: null }, `${m} ${p}`);
    res = await rawHttp(port, head(m, p, 'Content-Length: 65537\r\n'));
    assert.equal(res.status, 413, `${m} ${p}: ${res.text}`);
    checkOperation(res, m, doc);
    expectError(res, { code: 'too_large' }, `${m} ${p}`);
    res = await rawHttp(port, head(m, p, 'Content-Length: 12abc\r\n'));
    assert.equal(res.status, 400, `${m} ${p}: ${res.text}`);
    checkOperation(res, m, doc);
    expectError(res, { code: 'bad_request', field: 'Content-Length' }, `${m} ${p}`);
  }
});

test('POST /api/v1/notifications: 201, 200 on retry, 400 naming each field, 401, 403, 409', async () => {
  const P = '/api/v1/notifications';
  const minimal = { app_name: 'oa', title: 'hello', body: 'world' };
  const r1 = await call('POST', P, { status: 201, token: tok(A), body: minimal });
  assert.equal(r1.json.user_id, A);
  const id = newId();
  const full = { id, app_name: 'oa', title: 'full', body: 'b', category: 'social', priority: 2, source_device: 'oa-phone' };
  const r2 = await call('POST', P, { status: 201, token: tok(A), body: full });
  assert.equal(r2.json.id, id);
  const r3 = await call('POST', P, { status: 200, token: tok(A), body: full });
  assert.equal(r3.json.id, id);
  await call('POST', P, { status: 201, token: svcTok(), body: { ...minimal, user_id: B } });
  await call('POST', P, { status: 201, token: tok(A), body: { ...minimal, user_id: A, category: null, priority: null, source_device: null } });

  const bad = [
    [{ title: 't', body: '' }, 'app_name'],
    [{ app_name: 'x'.repeat(129), title: 't', body: '' }, 'app_name'],
    [{ app_name: 'a', body: '' }, 'title'],
    [{ app_name: 'a', title: 'x'.repeat(513), body: '' }, 'title'],
    [{ app_name: 'a', title: 't' }, 'body'],
    [{ app_name: 'a', title: 't', body: 'x'.repeat(8193) }, 'body'],
    [{ ...minimal, category: 'c'.repeat(65) }, 'category'],
    [{ ...minimal, priority: 3 }, 'priority'],
    [{ ...minimal, priority: 1.5 }, 'priority'],
    [{ ...minimal, id: 'not-a-uuid' }, 'id'],
    [{ ...minimal, source_device: 'bad device' }, 'source_device'],
    [{ ...minimal, title: 'nul\u0000byte' }, 'title'],
    [{ ...minimal, user_id: '' }, 'user_id'],
  ];
  for (const [body, field] of bad) {
    await call('POST', P, { status: 400, token: tok(A), body, code: 'bad_request', field });
  }
  await call('POST', P, { status: 400, token: svcTok(), body: minimal, code: 'bad_request', field: 'user_id' });
  await call('POST', P, { status: 400, token: tok(A), body: '{"app_name":', code: 'bad_json', field: null });
  await call('POST', P, { status: 403, token: tok(A), body: { ...minimal, user_id: B }, code: 'forbidden', field: 'user_id' });
  await call('POST', P, { status: 401, body: minimal, code: 'unauthorized' });
  await call('POST', P, { status: 401, token: expiredTok(), body: minimal, message: 'token expired' });
  await call('POST', P, { status: 409, token: tok(B), body: { ...minimal, id }, code: 'conflict' });
  await call('POST', `${P}?a=1&a=1`, { doc: P, status: 400, token: tok(A), body: minimal, field: 'a' });
});

test('POST /api/v1/notifications/batch: 201, 400 naming notifications[i].field, 401, 403, 409', async () => {
  const P = '/api/v1/notifications/batch';
  const item = (extra = {}) => ({ app_name: 'oa', title: `b ${uid('t')}`, body: '', ...extra });
  const ids = [newId(), newId()];
  const r = await call('POST', P, { status: 201, token: tok(A), body: { notifications: [item({ id: ids[0] }), item({ id: ids[1] })] } });
  assert.deepEqual(r.json.notifications.map((n) => n.id), ids);
  await call('POST', P, { status: 201, token: svcTok(), body: { notifications: [item({ user_id: A }), item({ user_id: B })] } });
  await call('POST', P, { status: 400, token: tok(A), body: { notifications: [item(), item({ title: '' })] }, code: 'bad_request', field: 'notifications[1].title' });
  await call('POST', P, { status: 400, token: tok(A), body: { notifications: [item({ priority: -3 })] }, field: 'notifications[0].priority' });
  const dup = newId();
  await call('POST', P, { status: 400, token: tok(A), body: { notifications: [item({ id: dup }), item({ id: dup })] }, field: 'notifications[1].id' });
  await call('POST', P, { status: 400, token: tok(A), body: { notifications: [] }, code: 'bad_request' });
  await call('POST', P, { status: 400, token: tok(A), body: { notifications: Array.from({ length: 501 }, () => ({ app_name: 'a', title: 't', body: '' })) }, code: 'bad_request' });
  await call('POST', P, { status: 400, token: tok(A), body: 'nope', code: 'bad_json', field: null });
  await call('POST', P, { status: 403, token: tok(A), body: { notifications: [item({ user_id: B })] }, code: 'forbidden', field: 'notifications[0].user_id' });
  await call('POST', P, { status: 401, body: { notifications: [item()] } });
  await call('POST', P, { status: 409, token: tok(B), body: { notifications: [item(), item({ id: ids[1] })] }, code: 'conflict' });
});

/* Three defects this test found (fixed in 8a242e3): a 400 names the field
 * it refuses (SPEC §6), and never with an empty or dangling name. */
test('a batch that is not an array of 1-500 names the field `notifications` (SPEC §6 "400 naming the field")', async () => {
  await call('POST', '/api/v1/notifications/batch', { status: 400, token: tok(A), body: { notifications: [] }, field: 'notifications' });
  await call('POST', '/api/v1/notifications/batch', { status: 400, token: tok(A), body: { notifications: 'x' }, field: 'notifications' });
});

test('a batch element that is not an object is named notifications[i], without a trailing dot', async () => {
  await call('POST', '/api/v1/notifications/batch', { status: 400, token: tok(A), body: { notifications: [1] }, field: 'notifications[0]' });
});

test('a notification body that is not a JSON object gets no empty "field"', async () => {
  await call('POST', '/api/v1/notifications', { status: 400, token: tok(A), body: [1], code: 'bad_request' });
});

test('GET /api/v1/notifications (pages, unread), GET /api/v1/notifications/{id}', async () => {
  const P = '/api/v1/notifications';
  const user = uid('oa-list');
  const made = [];
  for (let i = 0; i < 3; i++) {
    made.push((await call('POST', P, { status: 201, token: tok(user), body: { app_name: 'oa', title: `n${i}`, body: '' } })).json);
  }
  const p1 = await call('GET', `${P}?limit=2`, { doc: P, status: 200, token: tok(user) });
  assert.equal(p1.json.notifications.length, 2);
  assert.equal(typeof p1.json.next_before, 'string');
  const p2 = await call('GET', `${P}?limit=2&before=${encodeURIComponent(p1.json.next_before)}`, { doc: P, status: 200, token: tok(user) });
  assert.equal(p2.json.notifications.length, 1);
  assert.equal(p2.json.next_before, null);
  await call('GET', P, { status: 200, token: tok(user) });
  await call('GET', `${P}?unread=1`, { doc: P, status: 200, token: tok(user) });
  await call('GET', `${P}?before=2026-01-15T10:30:00.123456789Z`, { doc: P, status: 200, token: tok(user) });
  for (const q of ['limit=0', 'limit=201', 'limit=abc']) {
    await call('GET', `${P}?${q}`, { doc: P, status: 400, token: tok(user), code: 'bad_request', field: 'limit' });
  }
  for (const q of ['before=yesterday', 'before=2026-01-15T10:30:00.1234567890Z']) {
    await call('GET', `${P}?${q}`, { doc: P, status: 400, token: tok(user), field: 'before' });
  }
  await call('GET', `${P}?before=${'1'.repeat(100)}`, { doc: P, status: 400, token: tok(user), field: 'before' });
  await call('GET', P, { status: 401 });

  const one = '/api/v1/notifications/{id}';
  const g = await call('GET', `${P}/${made[0].id}`, { doc: one, status: 200, token: tok(user) });
  assert.equal(g.json.id, made[0].id);
  await call('GET', `${P}/${made[0].id.toUpperCase()}`, { doc: one, status: 200, token: tok(user) });
  await call('GET', `${P}/${newId()}`, { doc: one, status: 404, token: tok(user), code: 'not_found' });
  await call('GET', `${P}/not-a-uuid`, { doc: one, status: 404, token: tok(user), code: 'not_found' });
  await call('GET', `${P}/${made[0].id}`, { doc: one, status: 404, token: tok(B), code: 'not_found' });
  await call('GET', `${P}/${made[0].id}`, { doc: one, status: 401 });
});

test('POST /api/v1/notifications/{id}/actions: 200 for each action, 400 naming action / X-Device-ID, 404, 401', async () => {
  const user = uid('oa-act');
  const n = (await call('POST', '/api/v1/notifications', { status: 201, token: tok(user), body: { app_name: 'oa', title: 'act', body: '' } })).json;
  const doc = '/api/v1/notifications/{id}/actions';
  const p = `/api/v1/notifications/${n.id}/actions`;
  const r = await call('POST', p, { doc, status: 200, token: tok(user), body: { action: 'read' }, headers: { 'X-Device-ID': 'oa-tablet' } });
  assert.equal(r.json.is_read, true);
  await call('POST', p, { doc, status: 200, token: tok(user), body: { action: 'unread' } });
  const d = await call('POST', p, { doc, status: 200, token: tok(user), body: { action: 'dismiss' } });
  assert.equal(d.json.is_dismissed, true);
  await call('POST', p, { doc, status: 400, token: tok(user), body: { action: 'archive' }, code: 'bad_request', field: 'action' });
  await call('POST', p, { doc, status: 400, token: tok(user), body: {}, field: 'action' });
  await call('POST', p, { doc, status: 400, token: tok(user), body: '[1', code: 'bad_json', field: null });
  await call('POST', p, { doc, status: 400, token: tok(user), body: { action: 'read' }, headers: { 'X-Device-ID': 'bad device' }, field: 'X-Device-ID' });
  await call('POST', p, { doc, status: 400, token: tok(user), body: { action: 'read' }, headers: { 'X-Device-ID': 'd'.repeat(65) }, field: 'X-Device-ID' });
  await call('POST', `/api/v1/notifications/${newId()}/actions`, { doc, status: 404, token: tok(user), body: { action: 'read' }, code: 'not_found' });
  await call('POST', '/api/v1/notifications/not-a-uuid/actions', { doc, status: 404, token: tok(user), body: { action: 'read' } });
  await call('POST', p, { doc, status: 404, token: tok(B), body: { action: 'read' } });
  await call('POST', p, { doc, status: 401, body: { action: 'read' } });
});

test('GET /api/v1/devices, DELETE /api/v1/devices/{device_id}', async () => {
  const user = uid('oa-dev');
  const d1 = await srv.device(user, 'oa-named', { params: { device_name: 'Named', platform: 'web' } });
  const d2 = await srv.device(user, 'oa-bare');
  await d2.close();
  const r = await call('GET', '/api/v1/devices', { status: 200, token: tok(user) });
  const byId = Object.fromEntries(r.json.devices.map((d) => [d.device_id, d]));
  assert.equal(byId['oa-named'].device_name, 'Named');
  assert.equal(byId['oa-bare'].device_name, null);
  await call('GET', '/api/v1/devices', { status: 401 });
  await call('GET', '/api/v1/devices?q=1&q=2', { doc: '/api/v1/devices', status: 400, token: tok(user), field: 'q' });
  const doc = '/api/v1/devices/{device_id}';
  await call('DELETE', '/api/v1/devices/oa-bare', { doc, status: 204, token: tok(user) });
  await call('DELETE', '/api/v1/devices/oa-bare', { doc, status: 404, token: tok(user), code: 'not_found' });
  await call('DELETE', '/api/v1/devices/bad!id', { doc, status: 404, token: tok(user) });
  await call('DELETE', '/api/v1/devices/oa-named', { doc, status: 404, token: tok(B) });
  await call('DELETE', '/api/v1/devices/oa-named', { doc, status: 401 });
  await call('DELETE', '/api/v1/devices/oa-named', { doc, status: 204, token: tok(user) });
  await d1.close();
});

for (const prefix of ['/api/v1/notes', '/notes', '/me/notes', '/api/v1/posts']) {
  test(`comments under ${prefix}: list, create, edit, delete with 400/401/403/404`, async () => {
    const post = uid('note');
    const list = `${prefix}/{post_id}/comments`;
    const item = `${prefix}/{post_id}/comments/{comment_id}`;
    const author = uid('oa-author');
    const at = tok(author, { name: 'Ada Author' });
    const l0 = await call('GET', `${prefix}/${post}/comments`, { doc: list, status: 200 });
    assert.equal(l0.json.count, 0);
    const c = await call('POST', `${prefix}/${post}/comments`, { doc: list, status: 201, token: at, body: { content: 'first!' } });
    assert.equal(c.json.username, 'Ada Author');
    await call('POST', `${prefix}/${post}/comments`, { doc: list, status: 201, token: tok(B, { email: 'b@example.com' }), body: { content: 'é ✓' } });
    const l1 = await call('GET', `${prefix}/${post}/comments`, { doc: list, status: 200, token: at });
    assert.equal(l1.json.count, 2);
    await call('POST', `${prefix}/${post}/comments`, { doc: list, status: 400, token: at, body: { content: '' }, code: 'bad_request', field: 'content' });
    await call('POST', `${prefix}/${post}/comments`, { doc: list, status: 400, token: at, body: { content: 'x'.repeat(10001) }, field: 'content' });
    await call('POST', `${prefix}/${post}/comments`, { doc: list, status: 400, token: at, body: { text: 'hi' }, field: 'content' });
    await call('POST', `${prefix}/${post}/comments`, { doc: list, status: 400, token: at, body: '{', code: 'bad_json', field: null });
    await call('POST', `${prefix}/${post}/comments`, { doc: list, status: 401, body: { content: 'anon' } });

    const cp = `${prefix}/${post}/comments/${c.json.id}`;
    const u = await call('PUT', cp, { doc: item, status: 200, token: at, body: { content: 'edited' } });
    assert.equal(u.json.content, 'edited');
    await call('PUT', cp, { doc: item, status: 403, token: tok(B), body: { content: 'hijack' }, code: 'forbidden' });
    await call('PUT', cp, { doc: item, status: 400, token: at, body: { content: '' }, field: 'content' });
    await call('PUT', cp, { doc: item, status: 401, body: { content: 'x' } });
    await call('PUT', `${prefix}/${post}/comments/${newId()}`, { doc: item, status: 404, token: at, body: { content: 'x' }, code: 'not_found' });
    await call('PUT', `${prefix}/${post}/comments/not-a-uuid`, { doc: item, status: 404, token: at, body: { content: 'x' } });
    await call('DELETE', cp, { doc: item, status: 403, token: tok(B), code: 'forbidden' });
    await call('DELETE', cp, { doc: item, status: 401 });
    await call('DELETE', cp, { doc: item, status: 204, token: at });
    await call('DELETE', cp, { doc: item, status: 404, token: at });
    await call('GET', `${prefix}/${post}/comments?p=1&p=2`, { doc: list, status: 400, field: 'p' });
  });
}

test('POST /api/v1/broadcast: 202, 400 naming type / data, 401, 403', async () => {
  const P = '/api/v1/broadcast';
  const pub = srv.ws(srv.wsUrl({}, '/api/v1/ws'));
  await pub.open();
  try {
    const r = await call('POST', P, { status: 202, token: svcTok(), body: { type: 'blog_update', data: { id: 7 } } });
    assert.ok(r.json.connectionCount >= 1, r.text);
    await pub.next('blog_update');
    await call('POST', P, { status: 202, token: srv.token(SVC, { role: 'admin' }), body: { type: 'system_notification', data: { message: 'hi', level: 'info' } } });
    await call('POST', P, { status: 202, token: svcTok(), body: { type: 'a.b_c' } });
    await call('POST', P, { status: 202, token: svcTok(), body: { type: 'a', data: null } });
    for (const type of ['welcome', 'new_notification', 'ping', 'Bad', '1x', 'x'.repeat(65), 'a-b']) {
      await call('POST', P, { status: 400, token: svcTok(), body: { type, data: {} }, code: 'bad_request', field: 'type' });
    }
    await call('POST', P, { status: 400, token: svcTok(), body: { data: {} }, field: 'type' });
    await call('POST', P, { status: 400, token: svcTok(), body: { type: 'x', data: [1] }, field: 'data' });
    await call('POST', P, { status: 400, token: svcTok(), body: 'x', code: 'bad_json', field: null });
    await call('POST', P, { status: 403, token: tok(A), body: { type: 'x' }, code: 'forbidden' });
    await call('POST', P, { status: 401, body: { type: 'x' } });
  } finally {
    await pub.close();
  }
});

test('WebSocket endpoints: upgrade 101, plain GET 404, unknown upgrade path 404, 429 past the per-IP handshake burst', async () => {
  const tokQ = encodeURIComponent(tok(A));
  for (const [p, doc] of [[`/ws?token=${tokQ}&device_id=oa-ws`, '/ws'], ['/api/v1/ws', '/api/v1/ws'], ['/ws/public', '/ws/public'], ['/', '/']]) {
    const res = await upgrade(srv.port, p);
    assert.equal(res.status, 101, `${p}: ${res.status} ${res.text}`);
    checkOperation(res, 'GET', doc);
    const plain = await srv.http('GET', p.replace(/token=[^&]*&/, ''));
    assert.equal(plain.status, 404, `plain GET ${p}: ${plain.text}`);
    checkOperation(plain, 'GET', doc);
  }
  const longQuery = await srv.http('GET', `/ws?token=${tokQ}&device_id=oa-ws`);
  assert.equal(longQuery.status, 400, longQuery.text);
  checkOperation(longQuery, 'GET', '/ws');
  expectError(longQuery, { code: 'bad_request', field: 'token' }, 'plain GET /ws?token=JWT');
  const unknown = await upgrade(srv.port, '/nope');
  checkComponent(unknown, 'NoSuchRoute', 404);

  port429Server = h.newServer({ env: { NOTISYNC_HANDSHAKE_RATE_PER_IP: '1', NOTISYNC_HANDSHAKE_BURST_PER_IP: '2' } });
  await port429Server.start();
  const statuses = [];
  for (let i = 0; i < 5; i++) {
    const res = await upgrade(port429Server.port, '/ws/public');
    statuses.push(res.status);
    if (res.status === 429) checkOperation(res, 'GET', '/ws/public');
  }
  assert.ok(statuses.includes(429), `no 429 in ${statuses.join(',')}`);
  await port429Server.stop();
});

/* ---- SPEC §9 ---- */

test('SPEC §9 fields: created notifications carry them; each rule broken → 400 naming the field', async (t) => {
  if (skip9(t, 'model', [])) return;
  const P = '/api/v1/notifications';
  const user = uid('oa-s9');
  const base = { app_name: 'oa', title: 's9', body: '' };
  const in1h = new Date(Date.now() + 3600e3).toISOString();
  const full = { ...base, data: { k: [1, 'v'] }, url: 'https://example.com/x?y=1', tags: ['a', 'b'], collapse_key: 'chat:42', ttl: 600 };
  const r = await call('POST', P, { status: 201, token: tok(user), body: full });
  assert.deepEqual(r.json.tags, ['a', 'b']);
  assert.equal(r.json.collapse_key, 'chat:42');
  assert.equal(r.json.status, 'queued');
  assert.equal(typeof r.json.expires_at, 'string');
  const plain = await call('POST', P, { status: 201, token: tok(user), body: base });
  assert.deepEqual(plain.json.tags, []);
  assert.equal(plain.json.url, null);
  await call('POST', P, { status: 201, token: tok(user), body: { ...base, expires_at: in1h } });
  await call('POST', P, { status: 201, token: tok(user), body: { ...base, ttl: 0 } });
  const bad = [
    [{ data: [1] }, 'data'],
    [{ data: 'x' }, 'data'],
    [{ data: { big: 'x'.repeat(5000) } }, 'data'],
    [{ url: 'ftp://example.com/' }, 'url'],
    [{ url: 'relative/path' }, 'url'],
    [{ url: `https://e.com/${'x'.repeat(2048)}` }, 'url'],
    [{ tags: ['a', 'a'] }, 'tags'],
    [{ tags: Array.from({ length: 11 }, (_, i) => `t${i}`) }, 'tags'],
    [{ tags: [''] }, 'tags'],
    [{ tags: ['x'.repeat(33)] }, 'tags'],
    [{ tags: 'a' }, 'tags'],
    [{ collapse_key: 'has space' }, 'collapse_key'],
    [{ collapse_key: 'k'.repeat(65) }, 'collapse_key'],
    [{ ttl: -1 }, 'ttl'],
    [{ ttl: 'soon' }, 'ttl'],
    [{ ttl: 400 * 86400 }, 'ttl'],
    [{ expires_at: '2000-01-01T00:00:00Z' }, 'expires_at'],
    [{ expires_at: 'tomorrow' }, 'expires_at'],
    [{ ttl: 60, expires_at: in1h }, 'ttl'],
    [{ deliver_at: '2000-01-01T00:00:00Z' }, 'deliver_at'],
    [{ deliver_at: new Date(Date.now() + 31 * 86400e3).toISOString() }, 'deliver_at'],
  ];
  for (const [extra, field] of bad) {
    await call('POST', P, { status: 400, token: tok(user), body: { ...base, ...extra }, code: 'bad_request', field });
  }
  await call('POST', '/api/v1/notifications/batch', { status: 400, token: tok(user), body: { notifications: [base, { ...base, tags: ['x', 'x'] }] }, field: 'notifications[1].tags' });
});

test('SPEC §9.3 DELETE /api/v1/notifications/{id}: 200 canceled, 409 not_scheduled, 404, 401', async (t) => {
  if (skip9(t, 'cancel', ['DELETE /api/v1/notifications/{id}'])) return;
  const P = '/api/v1/notifications';
  const doc = '/api/v1/notifications/{id}';
  const user = uid('oa-sched');
  const later = new Date(Date.now() + 3600e3).toISOString();
  const s1 = await call('POST', P, { status: 201, token: tok(user), body: { app_name: 'oa', title: 'later', body: '', deliver_at: later } });
  assert.equal(s1.json.status, 'scheduled');
  const c = await call('DELETE', `${P}/${s1.json.id}`, { doc, status: 200, token: tok(user) });
  assert.equal(c.json.status, 'canceled');
  /* DELETE again: idempotent, the canceled one again (docs/protocol.md) */
  const again = await call('DELETE', `${P}/${s1.json.id}`, { doc, status: 200, token: tok(user) });
  assert.equal(again.json.status, 'canceled');
  const s2 = await call('POST', P, { status: 201, token: svcTok(), body: { user_id: user, app_name: 'oa', title: 'later2', body: '', deliver_at: later } });
  await call('DELETE', `${P}/${s2.json.id}`, { doc, status: 404, token: tok(B), code: 'not_found' });
  await call('DELETE', `${P}/${s2.json.id}`, { doc, status: 401 });
  await call('DELETE', `${P}/${s2.json.id}`, { doc, status: 200, token: svcTok() });
  const q = await call('POST', P, { status: 201, token: tok(user), body: { app_name: 'oa', title: 'now', body: '' } });
  await call('DELETE', `${P}/${q.json.id}`, { doc, status: 409, token: tok(user), code: 'not_scheduled' });
  await call('DELETE', `${P}/${newId()}`, { doc, status: 404, token: tok(user) });
  await call('DELETE', `${P}/not-a-uuid`, { doc, status: 404, token: tok(user) });
});

test('SPEC §9.4 GET /api/v1/notifications/unread_count', async (t) => {
  if (skip9(t, 'unread', ['GET /api/v1/notifications/unread_count'])) return;
  const P = '/api/v1/notifications/unread_count';
  const user = uid('oa-unread');
  const r0 = await call('GET', P, { status: 200, token: tok(user) });
  assert.equal(r0.json.unread, 0);
  await call('POST', '/api/v1/notifications', { status: 201, token: tok(user), body: { app_name: 'oa', title: 'u', body: '' } });
  const r1 = await call('GET', P, { status: 200, token: tok(user) });
  assert.equal(r1.json.unread, 1);
  await call('GET', P, { status: 401 });
  await call('GET', `${P}?a=1&a=2`, { doc: P, status: 400, token: tok(user), field: 'a' });
});

test('SPEC §9.5 POST /api/v1/notifications/actions: 200 {updated, unread}, 400 naming action / before / X-Device-ID, 401', async (t) => {
  if (skip9(t, 'bulk', ['POST /api/v1/notifications/actions'])) return;
  const P = '/api/v1/notifications/actions';
  const user = uid('oa-bulk');
  const made = [];
  for (let i = 0; i < 3; i++) {
    made.push((await call('POST', '/api/v1/notifications', { status: 201, token: tok(user), body: { app_name: 'oa', title: `b${i}`, body: '' } })).json);
  }
  const r1 = await call('POST', P, { status: 200, token: tok(user), body: { action: 'read', before: made[1].id }, headers: { 'X-Device-ID': 'oa-phone' } });
  assert.equal(r1.json.updated, 2);
  assert.equal(r1.json.unread, 1);
  const r2 = await call('POST', P, { status: 200, token: tok(user), body: { action: 'dismiss', before: null } });
  assert.equal(r2.json.unread, 0);
  await call('POST', P, { status: 400, token: tok(user), body: { action: 'unread' }, code: 'bad_request', field: 'action' });
  await call('POST', P, { status: 400, token: tok(user), body: {}, field: 'action' });
  await call('POST', P, { status: 400, token: tok(user), body: { action: 'read', before: 'x' }, field: 'before' });
  await call('POST', P, { status: 400, token: tok(user), body: { action: 'read' }, headers: { 'X-Device-ID': 'bad device' }, field: 'X-Device-ID' });
  await call('POST', P, { status: 400, token: tok(user), body: '{', code: 'bad_json', field: null });
  await call('POST', P, { status: 401, body: { action: 'read' } });
});

/* ---- degraded backends: 503 shapes ---- */

test('Redis down: /health 503 degraded, producers and device reads 503 unavailable, stats fall back (200)', async () => {
  const dead = h.newServer({ env: { NOTISYNC_REDIS_URL: `redis://127.0.0.1:${await h.freePort()}/0` } });
  await dead.start();
  try {
    const res = await dead.http('GET', '/health');
    assert.equal(res.status, 503, res.text);
    checkOperation(res, 'GET', '/health');
    assert.equal(res.json.status, 'degraded');
    assert.equal(res.json.redis, 'down');
    const t = dead.token(uid('oa-dead'));
    const cases = [
      ['POST', '/api/v1/notifications', '/api/v1/notifications', { app_name: 'a', title: 't', body: '' }],
      ['POST', '/api/v1/notifications/batch', '/api/v1/notifications/batch', { notifications: [{ app_name: 'a', title: 't', body: '' }] }],
      ['GET', '/api/v1/devices', '/api/v1/devices'],
      ['GET', '/api/v1/websocket/users/stats', '/api/v1/websocket/users/stats'],
      ['POST', `/api/v1/notifications/${newId()}/actions`, '/api/v1/notifications/{id}/actions', { action: 'read' }],
      ['POST', '/api/v1/broadcast', '/api/v1/broadcast', { type: 'x' }],
    ];
    for (const [m, p, doc, body] of cases) {
      const tk = p === '/api/v1/broadcast' ? dead.token(SVC, { role: 'service' }) : t;
      const r = await dead.http(m, p, { token: tk, body });
      assert.equal(r.status, 503, `${m} ${p}: ${r.text}`);
      checkOperation(r, m, doc);
      expectError(r, { code: 'unavailable' }, `${m} ${p}`);
    }
    for (const p of ['/api/v1/websocket/stats', '/api/v1/websocket/connections']) {
      const r = await dead.http('GET', p, { token: t });
      assert.equal(r.status, 200, `${p}: ${r.text}`);
      checkOperation(r, 'GET', p);
    }
  } finally {
    await dead.stop();
  }
});

/* ---- coverage: the document has no operation this file never called ---- */

test('every documented operation was exercised with a success status', async (t) => {
  const missing = [];
  const unseen = [];
  for (const [p, item] of Object.entries(api.doc.paths)) {
    for (const m of METHODS) {
      if (!item[m]) continue;
      const k = `${m.toUpperCase()} ${p}`;
      if (skippedOps.has(k)) continue;
      const seen = exercised.get(k) || new Set();
      if (![...seen].some((s) => /^(2\d\d|101)$/.test(s))) missing.push(k);
      for (const s of Object.keys(item[m].responses)) if (!seen.has(s)) unseen.push(`${k} ${s}`);
    }
  }
  if (unseen.length) t.diagnostic(`documented answers not provoked by this suite: ${unseen.join('; ')}`);
  assert.deepEqual(missing, [], `operations never answered with success: ${missing.join(', ')}`);
});
