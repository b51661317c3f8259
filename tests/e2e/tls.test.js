'use strict';
/*
 * tls.test.js -- notisyncd with `tls_cert` / `tls_key` (issue 10):
 *
 *   - wss:// and https:// on one port: a device connects with its JWT over
 *     wss, gets `welcome`, answers pings, receives a notification posted
 *     over https and a notification_sync from its other device; the public
 *     channel works over wss; large and many frames arrive whole over TLS;
 *   - a plain (non-TLS) HTTP request or ws:// upgrade to the TLS port is
 *     refused (closed or reset) and harms nothing: the server stays up and
 *     an existing wss device still gets a notification afterwards;
 *   - a missing, unreadable, non-PEM, encrypted or mismatched cert/key stops
 *     start-up with a non-zero exit and a message naming `tls_cert` or
 *     `tls_key` (also under `workers = 2`);
 *   - wscat over wss, with --ca and with --no-check; without either it
 *     refuses the self-signed chain.
 *
 * The certificates (a test CA and a server certificate for 127.0.0.1 signed
 * by it, plus the bad files) are made by the openssl CLI in a temporary
 * directory that is removed when the file ends.
 *
 * The harness speaks plain HTTP/WS (its /health wait, httpRequest, the
 * ws:// URLs), so this file has a small TlsServer subclass of its Server
 * with its own start (health over https) and https/wss helpers.  WsClient
 * builds its own `ws` options, so the test CA reaches it through a wrapper
 * of tls.connect that adds `ca` to connections to this file's TLS ports only
 * (unless the caller gave a `ca` or `nsNoTestCa`); verification stays on.
 */
const assert = require('node:assert/strict');
const { spawn, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http2 = require('node:http2');
const https = require('node:https');
const net = require('node:net');
const nodeTest = require('node:test');
const os = require('node:os');
const path = require('node:path');
const tls = require('node:tls');
const WebSocket = require('ws');
const {
  test, setup, Server, baseEnv, uid, sleep, until, freePort, services, binPath,
  SANITIZER_RE, newId, postNotification, postBatch, notifIds, broadcast, serviceToken,
  postComment, newPostId,
} = require('./lib/harness');

const { runWscat } = require('./lib/wscat');
const START_FAIL_TIMEOUT_MS = 20000;

/* ------------------------------------------------------- certificates */

const certs = {}; // dir, caPem, certFile, keyFile, caFile, otherKey, garbage, encKey, keyAsCert, ...

function openssl(args) {
  execFileSync('openssl', args, { cwd: certs.dir, stdio: ['ignore', 'ignore', 'pipe'], timeout: 30000 });
}

function makeCerts() {
  certs.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'notisync-e2e-tls-'));
  const f = (name) => path.join(certs.dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  /* a CA, and a server certificate for 127.0.0.1 / localhost signed by it */
  openssl(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2',
    '-subj', '/CN=NotiSync e2e test CA']);
  openssl(['req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1']);
  fs.writeFileSync(f('ext.cnf'), [
    'subjectAltName=IP:127.0.0.1,DNS:localhost',
    'basicConstraints=CA:FALSE',
    'keyUsage=digitalSignature,keyEncipherment',
    'extendedKeyUsage=serverAuth',
    '',
  ].join('\n'));
  openssl(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key',
    '-CAcreateserial', '-out', 'server.pem', '-days', '2', '-extfile', 'ext.cnf']);
  /* bad material: another key, an encrypted copy of the right key, garbage,
   * a PEM block whose body is not a certificate */
  openssl(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key',
    '-CAcreateserial', '-out', 'expired.pem', '-days', '-1', '-extfile', 'ext.cnf']);
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', 'other.key']);
  openssl(['pkey', '-in', 'server.key', '-aes256', '-passout', 'pass:e2e-secret', '-out', 'encrypted.key']);
  fs.writeFileSync(f('garbage.pem'), 'this is not a PEM file\n');
  fs.writeFileSync(f('badbody.pem'), '-----BEGIN CERTIFICATE-----\nAAAAAAAA\n-----END CERTIFICATE-----\n');
  Object.assign(certs, {
    caFile: f('ca.pem'),
    caPem: fs.readFileSync(f('ca.pem'), 'utf8'),
    certFile: f('server.pem'),
    keyFile: f('server.key'),
    otherKey: f('other.key'),
    encKey: f('encrypted.key'),
    garbage: f('garbage.pem'),
    badBody: f('badbody.pem'),
    missing: f('no-such-file.pem'),
    expired: f('expired.pem'),
  });
  certs.fingerprint = new crypto.X509Certificate(fs.readFileSync(certs.certFile)).fingerprint256;
}

/* removed after the tests, and at exit in case an earlier after() hook threw */
function removeCerts() {
  if (certs.dir) fs.rmSync(certs.dir, { recursive: true, force: true });
}
nodeTest.after(removeCerts);
process.on('exit', removeCerts);

/* ------------------------------------------- the test CA for ws clients */

const tlsPorts = new Set();
const realTlsConnect = tls.connect;
tls.connect = function connectWithTestCa(...args) {
  const o = args[0];
  if (o && typeof o === 'object' && tlsPorts.has(Number(o.port)) && !o.ca && !o.nsNoTestCa && certs.caPem) {
    args[0] = { ...o, ca: certs.caPem };
  }
  return realTlsConnect.apply(this, args);
};

/* ------------------------------------------------------------ https */

/* One https request without keep-alive, verified against the test CA
 * (`ca: null` = the system's CAs only).  Returns {status, headers, text,
 * json, fingerprint} (fingerprint256 of the server's certificate). */
function httpsRequest(port, method, urlPath, { token, body, headers = {}, timeoutMs = 10000, ca } = {}) {
  return new Promise((resolve, reject) => {
    const h = { Connection: 'close', ...headers };
    let payload;
    if (body !== undefined) {
      payload = Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
      if (!Object.keys(h).some((k) => k.toLowerCase() === 'content-type')) h['Content-Type'] = 'application/json';
      h['Content-Length'] = String(payload.length);
    }
    if (token) h.Authorization = `Bearer ${token}`;
    const opts = { host: '127.0.0.1', port, path: urlPath, method, headers: h, agent: false };
    if (ca !== null) opts.ca = ca || certs.caPem;
    else opts.nsNoTestCa = true; /* passed down to tls.connect: skip the wrapper */
    let fingerprint = null;
    const req = https.request(opts, (res) => {
      const cert = res.socket.getPeerCertificate && res.socket.getPeerCertificate();
      fingerprint = cert ? cert.fingerprint256 : null;
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        clearTimeout(timer);
        const text = Buffer.concat(chunks).toString('utf8');
        let json;
        try {
          json = text.length ? JSON.parse(text) : undefined;
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode, headers: res.headers, text, json, fingerprint });
      });
    });
    const timer = setTimeout(() => req.destroy(new Error(`HTTPS ${method} ${urlPath}: no answer within ${timeoutMs} ms`)), timeoutMs);
    req.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    if (payload) req.write(payload);
    req.end();
  });
}

/* ------------------------------------------------------------ server */

let logSeq = 0;
function logPath() {
  logSeq += 1;
  return path.join(os.tmpdir(), `notisync-e2e-tls.test-notisyncd-${process.pid}-${logSeq}.log`);
}

/* notisyncd serving TLS: https/wss URLs, https requests, /health over
 * https.  Stopped (and its log checked for sanitizer reports) by the
 * harness's after() hook like every Server. */
class TlsServer extends Server {
  get base() {
    return `https://127.0.0.1:${this.port}`;
  }

  http(method, urlPath, opts) {
    return httpsRequest(this.port, method, urlPath, opts);
  }

  wsUrl(params = {}, wsPath = '/ws') {
    return super.wsUrl(params, wsPath).replace(/^ws:/, 'wss:');
  }

  /* The harness's start (env, spawn, /health over this.http), with the
   * certificate and this file's CA trusted for the port. */
  async start() {
    this.opts.port = this.opts.port || this.port || (await freePort());
    tlsPorts.add(this.opts.port);
    this.opts.instanceId = this.opts.instanceId || uid('e2e-tls');
    this.opts.env = { NOTISYNC_TLS_CERT: certs.certFile, NOTISYNC_TLS_KEY: certs.keyFile, ...(this.opts.env || {}) };
    this.logFile = this.logFile || logPath();
    return super.start();
  }
}

const srv = new TlsServer({
  secret: crypto.randomBytes(24).toString('hex'),
  env: {
    NOTISYNC_MAX_BODY_BYTES: '4m',
    NOTISYNC_HEARTBEAT_INTERVAL: '1s',
    NOTISYNC_IDLE_TIMEOUT: '30s',
  },
});
setup(async () => {
  makeCerts();
  await srv.start();
});

/* every token minted for srv, for the log check at the end */
const usedTokens = [];
{
  const mint = srv.token.bind(srv);
  srv.token = (sub, extra) => {
    const t = mint(sub, extra);
    usedTokens.push(t);
    return t;
  };
}

/* An anonymous wss client on a public path, registered (one ping answered). */
async function publicWss(wsPath) {
  const c = srv.ws(`wss://127.0.0.1:${srv.port}${wsPath}`, { label: `public wss ${wsPath}` });
  await c.open();
  await c.ping();
  return c;
}

/* ------------------------------------------------ wss + https, one port */

test('https: /health is served with the configured certificate, verified against the test CA', async () => {
  const r = await srv.http('GET', '/health');
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.status, 'ok');
  assert.equal(r.fingerprint, certs.fingerprint, 'the server presents tls_cert');
  /* without the CA the self-signed chain is refused by the client */
  await assert.rejects(httpsRequest(srv.port, 'GET', '/health', { ca: null }),
    (e) => /self[- ]signed|unable to (get|verify)|certificate/i.test(`${e.code} ${e.message}`));
});

test('wss device: welcome, ping/pong, server pings, a notification posted over https, a sync from its other device', async () => {
  const user = uid();
  const a = await srv.device(user, 'tls-a');
  assert.equal(a.welcome.data.user_id, user);
  assert.equal(a.welcome.data.device_id, 'tls-a');
  const pong = await a.ping('tls-ping');
  assert.equal(pong.ref, 'tls-ping');
  assert.equal(typeof pong.data.timestamp, 'string');
  /* heartbeat_interval = 1s: WebSocket ping frames arrive over TLS too */
  await until(() => a.pings >= 2, { timeoutMs: 10000, what: 'two server pings over wss' });

  const b = await srv.device(user, 'tls-b');
  const id = newId();
  const r = await postNotification(srv, user, { id, title: 'over https' });
  assert.equal(r.status, 201, r.text);
  const na = await a.waitFor((m) => m.type === 'new_notification' && m.data.id === id, 10000, 'notification on a');
  const nb = await b.waitFor((m) => m.type === 'new_notification' && m.data.id === id, 10000, 'notification on b');
  assert.equal(na.data.title, 'over https');
  assert.equal(nb.data.title, 'over https');

  a.send({ type: 'notification_action', ref: 'act', data: { notification_id: id, action: 'read' } });
  await a.waitFor((m) => m.type === 'ok' && m.ref === 'act', 10000, 'ok for the action');
  const sync = await b.waitFor((m) => m.type === 'notification_sync' && m.data.notification_id === id, 10000, 'sync on b');
  assert.equal(sync.data.is_read, true);
  assert.equal(sync.data.source_device, 'tls-a');
  await a.close();
  await b.close();
});

test('wss device with the token in the Authorization header; a bad token is closed 1008', async () => {
  const user = uid();
  const c = srv.ws(srv.wsUrl({ device_id: 'tls-hdr' }), { headers: { Authorization: `Bearer ${srv.token(user)}` } });
  await c.open();
  const w = await c.next('welcome');
  assert.equal(w.data.user_id, user);
  await c.close();

  const bad = srv.ws(srv.wsUrl({ token: `${srv.token(user)}x`, device_id: 'tls-bad' }));
  const info = await bad.closed(10000);
  assert.equal(info.code, 1008, JSON.stringify(info));
  assert.equal(bad.messages().filter((m) => m.type === 'welcome').length, 0, 'no welcome for a bad token');
});

test('public channel over wss: broadcast and comment events posted over https reach /api/v1/ws and /ws/public', async () => {
  const p1 = await publicWss('/api/v1/ws');
  const p2 = await publicWss('/ws/public');
  const tag = uid('tls');
  const r = await broadcast(srv, 'blog_update', { tag });
  assert.equal(r.status, 202, r.text);
  for (const p of [p1, p2]) {
    const m = await p.waitFor((x) => x.type === 'blog_update' && x.data && x.data.tag === tag, 10000, 'broadcast');
    assert.equal(m.data.tag, tag);
  }
  const postId = newPostId('tls');
  const c = await postComment(srv, uid(), postId, 'hello over TLS');
  assert.equal(c.status, 201, c.text);
  for (const p of [p1, p2]) {
    const m = await p.waitFor((x) => x.type === 'comment.created' && x.data.postId === postId, 10000, 'comment.created');
    assert.equal(m.data.comment.content, 'hello over TLS');
  }
  /* receive-only: anything but ping/subscribe gets read_only and the connection stays */
  p1.send({ type: 'notification_action', ref: 'ro', data: {} });
  const e = await p1.waitFor((m) => m.type === 'error' && m.ref === 'ro', 10000, 'read_only error');
  assert.equal(e.data.code, 'read_only');
  await p1.ping();
  await p1.close();
  await p2.close();
});

test('many large frames over TLS arrive whole and in order (100 notifications of 8 KiB, 300 broadcasts)', async () => {
  const user = uid();
  const d = await srv.device(user, 'tls-big');
  const pub = await publicWss('/api/v1/ws');
  const big = 'x'.repeat(8192);
  const items = [];
  for (let i = 0; i < 100; i += 1) items.push({ id: newId(), app_name: 'e2e', title: `big ${i}`, body: big });
  const r = await postBatch(srv, user, items);
  assert.equal(r.status, 201, r.text.slice(0, 300));
  await until(() => notifIds(d).length >= items.length, { timeoutMs: 30000, what: '100 notifications over wss' });
  assert.deepEqual(notifIds(d), items.map((x) => x.id));
  for (const m of d.messages().filter((x) => x.type === 'new_notification')) assert.equal(m.data.body, big);

  const tag = uid('burst');
  const token = serviceToken(srv);
  for (let i = 0; i < 300; i += 1) {
    const b = await broadcast(srv, 'tls_burst', { tag, i, pad: 'y'.repeat(1000) }, { token });
    assert.equal(b.status, 202, b.text);
  }
  const seen = () => pub.messages().filter((m) => m.type === 'tls_burst' && m.data.tag === tag).map((m) => m.data.i);
  await until(() => seen().length >= 300, { timeoutMs: 30000, what: '300 broadcasts over wss' });
  assert.deepEqual(seen(), [...Array(300).keys()]);
  assert.ok(d.isOpen() && pub.isOpen(), 'both connections still open');
  await d.close();
  await pub.close();
});

/* ------------------------------------------- plain HTTP to the TLS port */

/* Sends `text` over plain TCP; resolves {data, ended, error} once the
 * server has closed or reset the connection (bounded). */
function plainExchange(port, text, timeoutMs = 15000) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const chunks = [];
    let error = null;
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`plain connection to the TLS port not closed within ${timeoutMs} ms; got ${JSON.stringify(Buffer.concat(chunks).toString('latin1'))}`));
    }, timeoutMs);
    s.on('connect', () => s.write(text));
    s.on('data', (d) => chunks.push(d));
    s.on('error', (e) => {
      error = e.code || e.message;
    });
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ data: Buffer.concat(chunks), error });
    });
  });
}

test('a plain HTTP request or ws:// upgrade to the TLS port is refused; the server and its wss devices are unharmed', async () => {
  const user = uid();
  const d = await srv.device(user, 'tls-witness');
  const pub = await publicWss('/ws/public');

  const reqs = [];
  for (let i = 0; i < 10; i += 1) {
    reqs.push(plainExchange(srv.port, `GET /health HTTP/1.1\r\nHost: 127.0.0.1:${srv.port}\r\nConnection: close\r\n\r\n`));
    reqs.push(plainExchange(srv.port, [
      `GET /ws?token=${srv.token(user)}&device_id=plain-${i} HTTP/1.1`, `Host: 127.0.0.1:${srv.port}`,
      'Upgrade: websocket', 'Connection: Upgrade', 'Sec-WebSocket-Version: 13',
      `Sec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}`, '', ''].join('\r\n')));
  }
  for (const r of await Promise.all(reqs)) {
    const text = r.data.toString('latin1');
    assert.doesNotMatch(text, /^HTTP\/1\.[01] (200|101)/, `plain request answered: ${JSON.stringify(text.slice(0, 200))}`);
    assert.ok(!text.includes('"status"'), `health served in plain text: ${JSON.stringify(text.slice(0, 200))}`);
  }
  /* the ws client over plain ws:// never opens */
  const plainWs = new WebSocket(`ws://127.0.0.1:${srv.port}/ws?token=${srv.token(user)}&device_id=plain-ws`, { handshakeTimeout: 10000 });
  const outcome = await new Promise((resolve) => {
    plainWs.on('open', () => resolve('open'));
    plainWs.on('error', (e) => resolve(`error ${e.code || e.message}`));
    plainWs.on('unexpected-response', (_req, res) => resolve(`http ${res.statusCode}`));
  });
  plainWs.terminate();
  assert.match(outcome, /^error/, `plain ws:// upgrade: ${outcome}`);
  /* an empty connection, opened and closed at once */
  await new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port: srv.port }, () => s.destroy());
    s.on('close', resolve);
    s.on('error', () => {});
  });

  assert.ok(srv.alive(), 'notisyncd still runs');
  assert.ok(d.isOpen() && pub.isOpen(), 'existing wss connections still open');
  const id = newId();
  const r = await postNotification(srv, user, { id, title: 'after plain' });
  assert.equal(r.status, 201, r.text);
  const n = await d.waitFor((m) => m.type === 'new_notification' && m.data.id === id, 10000, 'notification after the plain requests');
  assert.equal(n.data.title, 'after plain');
  await d.ping();
  await pub.ping();
  const h = await srv.http('GET', '/health');
  assert.equal(h.status, 200, h.text);
  /* the refused plain connections were never counted as WebSockets */
  await until(async () => {
    const s = await srv.http('GET', '/health');
    return s.json && s.json.connections === 2;
  }, { timeoutMs: 10000, what: 'connections = the two wss clients' });
  await d.close();
  await pub.close();
});

/* ------------------------------------------------------------ HTTP/2 */

/* The server writes WebSocket frames straight to the socket (STACK.md §2:
 * fine for HTTP/1.1, never for h2), and a WebSocket over an h2 stream
 * (RFC 8441 extended CONNECT, which browsers use once they hold an h2
 * connection to the origin) crashed notisyncd before any authentication.
 * TLS therefore offers http/1.1 only in ALPN. */
test('ALPN offers http/1.1 only: an h2 client gets no HTTP/2, and an h2 extended CONNECT cannot reach the server', async () => {
  const user = uid();
  const d = await srv.device(user, 'tls-h2-witness');
  /* an h2-only client: no session comes up; if one did, it must not allow
   * extended CONNECT, and the attempt must not hurt the server */
  const outcome = await new Promise((resolve) => {
    const session = http2.connect(`https://127.0.0.1:${srv.port}`, { ca: certs.caPem });
    const finish = (v) => {
      clearTimeout(timer);
      try {
        session.destroy();
      } catch {
        /* gone */
      }
      resolve(v);
    };
    const timer = setTimeout(() => finish('timeout'), 10000);
    session.on('error', (e) => finish(`error ${e.code || e.message}`));
    session.on('close', () => finish('closed'));
    session.on('remoteSettings', (st) => {
      if (!st.enableConnectProtocol) {
        finish('h2 without extended CONNECT');
        return;
      }
      const req = session.request({
        ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'https',
        ':authority': `127.0.0.1:${srv.port}`,
        ':path': `/ws?token=${srv.token(user)}&device_id=tls-h2`, 'sec-websocket-version': '13',
      });
      req.on('response', (h) => finish(`h2 websocket answered ${h[':status']}`));
      req.on('error', (e) => finish(`stream error ${e.code || e.message}`));
    });
  });
  await sleep(500);
  assert.ok(srv.alive(), `notisyncd died after an h2 attempt (${outcome}): ${JSON.stringify(srv.exit)}`);
  assert.doesNotMatch(outcome, /^h2 websocket answered 200/, `h2 WebSocket accepted: ${outcome}`);
  const id = newId();
  const r = await postNotification(srv, user, { id });
  assert.equal(r.status, 201, r.text);
  await d.waitFor((m) => m.type === 'new_notification' && m.data.id === id, 10000, 'notification after the h2 attempt');

  /* a client offering both gets http/1.1 */
  const alpn = await new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port: srv.port, ca: certs.caPem, ALPNProtocols: ['h2', 'http/1.1'] }, () => {
      const p = s.alpnProtocol;
      s.destroy();
      resolve(p);
    });
    s.on('error', reject);
  });
  assert.equal(alpn, 'http/1.1', `ALPN chose ${alpn}`);
  await d.close();
});

/* ------------------------------------------------ bad cert/key at start */

/* Runs `notisyncd serve` with TLS settings `env` that must stop start-up;
 * returns {code, signal, out}.  Bounded; the process is killed by PID if it
 * keeps running. */
async function startMustFail(env) {
  const svc = services();
  const port = await freePort();
  const e = baseEnv();
  Object.assign(e, {
    NOTISYNC_LISTEN: `127.0.0.1:${port}`,
    NOTISYNC_REDIS_URL: svc.NOTISYNC_REDIS_URL,
    NOTISYNC_DATABASE_URL: svc.NOTISYNC_DATABASE_URL,
    NOTISYNC_JWT_SECRET: 'e2e-tls-secret',
    NOTISYNC_INSTANCE_ID: uid('e2e-tlsbad'),
  });
  for (const [k, v] of Object.entries(env)) {
    if (v === null) delete e[k];
    else e[k] = v;
  }
  const p = spawn(binPath(), ['serve'], { env: e, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout.on('data', (d) => { out += d.toString(); });
  p.stderr.on('data', (d) => { out += d.toString(); });
  const res = await new Promise((resolve) => {
    const timer = setTimeout(() => {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      resolve({ code: null, signal: 'SIGKILL', timedOut: true });
    }, START_FAIL_TIMEOUT_MS);
    p.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal });
    });
  });
  await new Promise((resolve) => (p.stdout.readableEnded ? resolve() : p.stdout.on('close', resolve)));
  return { ...res, out };
}

/* Every case: env, the key the message must name, and a word of the why. */
const BAD_STARTS = [
  ['missing cert file', () => ({ NOTISYNC_TLS_CERT: certs.missing, NOTISYNC_TLS_KEY: certs.keyFile }), 'tls_cert', /No such file|cannot open/],
  ['missing key file', () => ({ NOTISYNC_TLS_CERT: certs.certFile, NOTISYNC_TLS_KEY: certs.missing }), 'tls_key', /No such file|cannot open/],
  ['key not matching the cert', () => ({ NOTISYNC_TLS_CERT: certs.certFile, NOTISYNC_TLS_KEY: certs.otherKey }), 'tls_key', /match/],
  ['garbage cert', () => ({ NOTISYNC_TLS_CERT: certs.garbage, NOTISYNC_TLS_KEY: certs.keyFile }), 'tls_cert', /PEM|certificate/],
  ['PEM cert block with a broken body', () => ({ NOTISYNC_TLS_CERT: certs.badBody, NOTISYNC_TLS_KEY: certs.keyFile }), 'tls_cert', /PEM|certificate/],
  ['garbage key', () => ({ NOTISYNC_TLS_CERT: certs.certFile, NOTISYNC_TLS_KEY: certs.garbage }), 'tls_key', /PEM|key/],
  ['the certificate given as the key', () => ({ NOTISYNC_TLS_CERT: certs.certFile, NOTISYNC_TLS_KEY: certs.certFile }), 'tls_key', /key/],
  ['a directory as the cert', () => ({ NOTISYNC_TLS_CERT: certs.dir, NOTISYNC_TLS_KEY: certs.keyFile }), 'tls_cert', /PEM|certificate|directory/],
  ['encrypted key (no passphrase prompt, no hang)', () => ({ NOTISYNC_TLS_CERT: certs.certFile, NOTISYNC_TLS_KEY: certs.encKey }), 'tls_key', /encrypted|PEM|key/],
  ['tls_cert without tls_key', () => ({ NOTISYNC_TLS_CERT: certs.certFile, NOTISYNC_TLS_KEY: null }), 'tls_key', /together/],
  ['workers = 2 with a mismatched key', () => ({ NOTISYNC_WORKERS: '2', NOTISYNC_TLS_CERT: certs.certFile, NOTISYNC_TLS_KEY: certs.otherKey }), 'tls_key', /match/],
];

for (const [name, envFn, key, why] of BAD_STARTS) {
  test(`bad TLS files stop start-up naming the key: ${name}`, async () => {
    const r = await startMustFail(envFn());
    assert.ok(!r.timedOut, `notisyncd still running ${START_FAIL_TIMEOUT_MS} ms later; output:\n${r.out}`);
    assert.equal(r.signal, null, `exit by signal ${r.signal}; output:\n${r.out}`);
    assert.notEqual(r.code, 0, `exit status 0; output:\n${r.out}`);
    assert.ok(r.out.includes(`'${key}'`), `the message names '${key}'; output:\n${r.out}`);
    assert.match(r.out, why, `the message says why; output:\n${r.out}`);
    assert.doesNotMatch(r.out, SANITIZER_RE, `sanitizer report on the failure path:\n${r.out}`);
  });
}

test('an expired certificate is a warning, not a stop: the server runs and clients refuse the chain', async () => {
  const x = new TlsServer({ secret: crypto.randomBytes(24).toString('hex') });
  x.port = await freePort();
  tlsPorts.add(x.port);
  /* TlsServer.start waits for a verified /health, which an expired
   * certificate never gives: its promise fails once the server is stopped */
  x.opts.env = { NOTISYNC_TLS_CERT: certs.expired };
  const started = x.start().then(() => 'healthy', (e) => `failed: ${e.message}`);
  await until(() => /tls_cert '.*' has expired/.test(x.log()) || x.exit, { timeoutMs: 15000, what: 'the expiry warning' });
  assert.equal(x.exit, null, `notisyncd exited: ${JSON.stringify(x.exit)}\n${x.log()}`);
  assert.match(x.log(), /tls_cert '.*expired\.pem' has expired: clients will refuse it/);
  /* it serves: a client that skips verification gets /health */
  const h = await until(async () => {
    const r = await new Promise((resolve, reject) => {
      const req = https.get({ host: '127.0.0.1', port: x.port, path: '/health', rejectUnauthorized: false, agent: false,
        nsNoTestCa: true }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode));
      });
      req.on('error', reject);
      req.setTimeout(5000, () => req.destroy(new Error('timeout')));
    });
    return r === 200 && r;
  }, { timeoutMs: 15000, what: '/health without verification' });
  assert.equal(h, 200);
  /* a verifying client refuses it */
  await assert.rejects(httpsRequest(x.port, 'GET', '/health'), (e) => /expired/i.test(`${e.code} ${e.message}`));
  const res = await x.stop();
  assert.equal(res && res.code, 0, `exit: ${JSON.stringify(res)}`);
  assert.match(await started, /^failed/, 'the verified health wait never succeeded');
});

test('workers = 2 with TLS: both workers serve wss and https on the shared port', async () => {
  const w = new TlsServer({ secret: crypto.randomBytes(24).toString('hex'), env: { NOTISYNC_WORKERS: '2' } });
  await w.start();
  const ids = new Set();
  for (let i = 0; i < 40 && ids.size < 2; i += 1) {
    const h = await w.http('GET', '/health');
    assert.equal(h.status, 200, h.text);
    ids.add(h.json.instance_id);
  }
  assert.equal(ids.size, 2, `https answered by both workers: ${[...ids]}`);
  const user = uid();
  const devs = [];
  for (let i = 0; i < 6; i += 1) devs.push(await w.device(user, `tls-w-${i}`));
  const id = newId();
  const r = await postNotification(w, user, { id });
  assert.equal(r.status, 201, r.text);
  for (const d of devs) await d.waitFor((m) => m.type === 'new_notification' && m.data.id === id, 10000, 'notification');
  for (const d of devs) await d.close();
  const res = await w.stop();
  assert.equal(res && res.code, 0, `supervisor exit: ${JSON.stringify(res)}`);
});

/* --------------------------------------------------------------- wscat */

for (const [how, extra] of [['--ca with the test CA', () => ['--ca', certs.caFile]], ['--no-check', () => ['--no-check']]]) {
  test(`wscat over wss (${how}): welcome, then pong with its ref`, async () => {
    const user = uid();
    const url = srv.wsUrl({ token: srv.token(user), device_id: 'wscat-tls' });
    const r = await runWscat(['-c', url, ...extra(), '-x', '{"type":"ping","ref":"tls"}', '-w', '2']);
    const welcome = r.msgs.find((m) => m.type === 'welcome');
    assert.ok(welcome, `no welcome in wscat output:\n${r.text}`);
    assert.equal(welcome.data.user_id, user);
    assert.equal(welcome.data.device_id, 'wscat-tls');
    const pong = r.msgs.find((m) => m.type === 'pong' && m.ref === 'tls');
    assert.ok(pong, `no pong in wscat output:\n${r.text}`);
    assert.ok(r.msgs.indexOf(welcome) < r.msgs.indexOf(pong), 'welcome printed before pong');
  });
}

test('wscat over wss without --ca or --no-check refuses the self-signed chain', async () => {
  const url = srv.wsUrl({ token: srv.token(uid()), device_id: 'wscat-tls-nocheck' });
  const r = await runWscat(['-c', url, '-x', '{"type":"ping","ref":"x"}', '-w', '2']);
  assert.ok(!r.msgs.some((m) => m.type === 'welcome'), `welcome without a trusted CA:\n${r.text}`);
  assert.match(r.text, /certificate|self[- ]signed|issuer/i, `wscat output:\n${r.text}`);
});

test('no token used over wss/https appears in the server log', async () => {
  assert.ok(usedTokens.length > 10, `tokens used: ${usedTokens.length}`);
  const log = srv.log();
  assert.ok(log.length > 0, 'server log is empty');
  for (const t of usedTokens) {
    assert.ok(!log.includes(t), `a token appears in ${srv.logFile}`);
    assert.ok(!log.includes(t.split('.')[2]), `a token signature appears in ${srv.logFile}`);
  }
});
