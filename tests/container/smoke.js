'use strict';
/*
 * smoke.js -- the container deployment's smoke test, run by
 * scripts/container-test against docker/compose.yml (or compose.cluster.yml)
 * started with podman.  Everything goes THROUGH nginx (the one published
 * port); the instances are only asked directly (podman exec ... curl) which
 * of them holds a public socket, since a public socket has no welcome frame.
 *
 * Checks: /health through nginx; two devices of one user, each on a
 * different notisyncd instance (welcome.connection_id is
 * "<instance_id>-<n>"), the first sees the second come online; a REST
 * notification reaches both; a read on one device reaches the other as
 * notification_sync (and REST shows it read); two public subscribers, one on
 * each instance, and both devices get the comment.created of a comment
 * posted through nginx.  Every wait is bounded; a watchdog ends the run.
 *
 * Environment:
 *   NS_CT_URL        http://127.0.0.1:PORT (nginx)
 *   NS_CT_SECRET     the JWT secret the instances verify with (HS256)
 *   NS_CT_INSTANCES  instance_id=container,... (e.g. notisync-1=ct-notisync-1)
 */
const crypto = require('node:crypto');
const { execFile } = require('node:child_process');
const path = require('node:path');
const WebSocket = require(path.join(__dirname, '..', 'e2e', 'node_modules', 'ws'));

const BASE = process.env.NS_CT_URL;
const SECRET = process.env.NS_CT_SECRET;
const INSTANCES = (process.env.NS_CT_INSTANCES || '').split(',').filter(Boolean)
  .map((kv) => { const [id, ctr] = kv.split('='); return { id, ctr }; });
const WAIT_MS = 10000;
const WATCHDOG_MS = 150000;

if (!BASE || !SECRET || INSTANCES.length < 2) {
  console.error('smoke: NS_CT_URL, NS_CT_SECRET and two NS_CT_INSTANCES are required');
  process.exit(2);
}

const watchdog = setTimeout(() => {
  console.error(`smoke: FAIL: the whole test took more than ${WATCHDOG_MS / 1000} s`);
  process.exit(1);
}, WATCHDOG_MS);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let checks = 0;
function ok(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  checks++;
  console.log(`ok ${checks} - ${what}`);
}

const b64url = (b) => Buffer.from(b).toString('base64').replace(/=+$/, '')
  .replace(/\+/g, '-').replace(/\//g, '_');
function token(sub, extra = {}) {
  const now = Math.floor(Date.now() / 1000);
  const input = `${b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${
    b64url(JSON.stringify({ sub, iat: now, exp: now + 900, ...extra }))}`;
  return `${input}.${b64url(crypto.createHmac('sha256', SECRET).update(input).digest())}`;
}

async function http(method, p, { tok, body, timeoutMs = WAIT_MS } = {}) {
  const headers = {};
  if (tok) headers.Authorization = `Bearer ${tok}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(BASE + p, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, json, text };
}

/* A WebSocket that records every frame; waitFor() is bounded. */
class Client {
  constructor(p) {
    this.frames = [];
    this.waiters = [];
    this.closed = null;
    this.ws = new WebSocket(BASE.replace(/^http/, 'ws') + p);
    this.ws.on('message', (d) => {
      let m;
      try { m = JSON.parse(d.toString()); } catch { m = { type: '<not json>', raw: d.toString() }; }
      this.frames.push(m);
      this.poke();
    });
    this.ws.on('close', (code, reason) => { this.closed = { code, reason: reason.toString() }; this.poke(); });
    this.ws.on('error', (e) => { this.error = e; this.poke(); });
  }
  poke() { for (const w of this.waiters.slice()) w(); }
  opened(ms = WAIT_MS) {
    if (this.ws.readyState === WebSocket.OPEN) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('WebSocket did not open in time')), ms);
      this.ws.once('open', () => { clearTimeout(t); resolve(); });
      this.ws.once('error', (e) => { clearTimeout(t); reject(e); });
    });
  }
  waitFor(pred, what, ms = WAIT_MS) {
    return new Promise((resolve, reject) => {
      const check = () => {
        const f = this.frames.find(pred);
        if (f) { done(); resolve(f); return; }
        if (this.closed) { done(); reject(new Error(`${what}: socket closed ${JSON.stringify(this.closed)}`)); }
      };
      const t = setTimeout(() => { done(); reject(new Error(`timed out after ${ms} ms waiting for ${what}; got ${JSON.stringify(this.frames.map((f) => f.type))}`)); }, ms);
      const done = () => { clearTimeout(t); this.waiters = this.waiters.filter((w) => w !== check); };
      this.waiters.push(check);
      check();
    });
  }
  send(m) { this.ws.send(JSON.stringify(m)); }
  close() { try { this.ws.close(1000); } catch { /* already */ } }
}

/* The instance id a device connection landed on, from its welcome. */
function instanceOf(welcome) {
  const cid = welcome.data && welcome.data.connection_id;
  const hit = INSTANCES.find((i) => typeof cid === 'string' && cid.startsWith(`${i.id}-`));
  return hit ? hit.id : null;
}

/* notisync_connections of one instance, asked inside its container. */
function connectionsOf(inst) {
  return new Promise((resolve, reject) => {
    execFile('podman', ['exec', inst.ctr, 'curl', '-fsS', '-m', '5', 'http://127.0.0.1:8080/metrics'],
      { timeout: 15000 }, (err, out) => {
        if (err) { reject(err); return; }
        const m = /^notisync_connections(?:\{[^}]*\})? (\d+)/m.exec(out);
        if (!m) { reject(new Error(`no notisync_connections in ${inst.id}'s /metrics`)); return; }
        resolve(Number(m[1]));
      });
  });
}
async function connectionCounts() {
  const out = {};
  for (const i of INSTANCES) out[i.id] = await connectionsOf(i);
  return out;
}

async function main() {
  const open = [];
  try {
    /* /health through nginx: both Redis and PostgreSQL up. */
    let h;
    const deadline = Date.now() + 30000;
    for (;;) {
      h = await http('GET', '/health').catch((e) => ({ status: 0, text: e.message }));
      if (h.status === 200 || Date.now() > deadline) break;
      await sleep(500);
    }
    ok(h.status === 200 && h.json && h.json.status === 'ok', `GET /health through nginx is 200 ok (${h.text.trim()})`);

    const user = `ct-${crypto.randomBytes(5).toString('hex')}`;
    const tok = token(user);

    /* Two devices of one user on two different instances. */
    const a = new Client(`/ws?token=${tok}&device_id=dev-a`);
    open.push(a);
    const wa = await a.waitFor((f) => f.type === 'welcome', 'welcome of dev-a');
    const instA = instanceOf(wa);
    ok(instA, `dev-a welcomed by instance ${instA} (connection_id ${wa.data.connection_id})`);
    let b = null;
    let instB = null;
    for (let tries = 1; tries <= 10 && !b; tries++) {
      const c = new Client(`/ws?token=${tok}&device_id=dev-b${tries}`);
      open.push(c);
      const wb = await c.waitFor((f) => f.type === 'welcome', `welcome of dev-b${tries}`);
      const inst = instanceOf(wb);
      if (inst && inst !== instA) { b = c; b.name = `dev-b${tries}`; instB = inst; break; }
      c.close();
      await sleep(300);
    }
    ok(b, `dev-b landed on another instance (${instB}) than dev-a (${instA}) through nginx`);
    const st = await a.waitFor((f) => f.type === 'device_status' && f.data.device_id === b.name &&
      f.data.status === 'online', `device_status online of ${b.name} at dev-a`);
    ok(st, `dev-a (${instA}) saw ${b.name} (${instB}) come online`);

    /* A notification through REST reaches both. */
    const post = await http('POST', '/api/v1/notifications', {
      tok, body: { app_name: 'container-test', title: 'hello from the smoke test', body: 'two instances' },
    });
    ok(post.status === 201 && post.json && post.json.id, `POST /api/v1/notifications 201 (${post.status})`);
    const nid = post.json.id;
    const isIt = (f) => f.type === 'new_notification' && f.data && f.data.id === nid;
    await a.waitFor(isIt, 'new_notification at dev-a');
    await b.waitFor(isIt, `new_notification at ${b.name}`);
    ok(true, `new_notification ${nid} reached dev-a (${instA}) and ${b.name} (${instB})`);

    /* Read on dev-a: ok, then notification_sync at dev-b. */
    a.send({ type: 'notification_action', ref: 'read-1', data: { notification_id: nid, action: 'read' } });
    const reply = await a.waitFor((f) => f.ref === 'read-1', 'reply to notification_action');
    ok(reply.type === 'ok', `notification_action read answered ok (${reply.type})`);
    const sync = await b.waitFor((f) => f.type === 'notification_sync' && f.data &&
      f.data.notification_id === nid, `notification_sync at ${b.name}`);
    ok(sync.data.is_read === true && sync.data.source_device === 'dev-a',
      `${b.name} (${instB}) got notification_sync is_read=true from dev-a`);
    ok(!a.frames.some((f) => f.type === 'notification_sync' && f.data && f.data.notification_id === nid),
      'dev-a (the source device) got no notification_sync');
    const got = await http('GET', `/api/v1/notifications/${nid}`, { tok });
    ok(got.status === 200 && got.json.is_read === true, 'GET /api/v1/notifications/{id} shows it read');

    /* Public subscribers, one on each instance. */
    const pub = {};
    for (let tries = 1; tries <= 12 && Object.keys(pub).length < INSTANCES.length; tries++) {
      const before = await connectionCounts();
      const p = new Client('/ws/public');
      open.push(p);
      await p.opened();
      let landed = null;
      const until = Date.now() + WAIT_MS;
      while (!landed && Date.now() < until) {
        const now = await connectionCounts();
        landed = INSTANCES.find((i) => now[i.id] > before[i.id]);
        if (!landed) await sleep(200);
      }
      ok(landed, `public socket ${tries} counted by an instance`);
      if (pub[landed.id]) { p.close(); await sleep(300); continue; }
      pub[landed.id] = p;
    }
    ok(Object.keys(pub).length === INSTANCES.length,
      `a public subscriber on every instance (${Object.keys(pub).join(', ')})`);

    const note = `ct-note-${crypto.randomBytes(4).toString('hex')}`;
    const cm = await http('POST', `/api/v1/notes/${note}/comments`, { tok, body: { content: 'a comment from the smoke test' } });
    ok(cm.status === 201 && cm.json && cm.json.id, `POST /api/v1/notes/${note}/comments 201 (${cm.status})`);
    const isComment = (f) => f.type === 'comment.created' && f.data && f.data.postId === note &&
      f.data.comment && String(f.data.comment.id) === String(cm.json.id);
    for (const [inst, p] of Object.entries(pub)) {
      await p.waitFor(isComment, `comment.created at the public subscriber on ${inst}`);
      ok(true, `comment.created reached the public subscriber on ${inst}`);
    }
    await a.waitFor(isComment, 'comment.created at dev-a');
    await b.waitFor(isComment, `comment.created at ${b.name}`);
    ok(true, 'comment.created reached both devices');

    console.log(`smoke: all ${checks} checks passed`);
  } finally {
    for (const c of open) c.close();
  }
}

main().then(() => {
  clearTimeout(watchdog);
  setTimeout(() => process.exit(0), 200);
}, (e) => {
  console.error(`smoke: FAIL: ${e.message}`);
  process.exit(1);
});
