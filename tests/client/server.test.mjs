/*
 * server.test.mjs -- the notisync client (clients/js/notisync.js) against a
 * real notisyncd, Redis and PostgreSQL, through the e2e harness
 * (tests/e2e/lib/harness.js: every server is stopped by PID in its after()
 * hook, every wait is bounded).
 *
 * WebSocket: the global one when this Node has it (Node >= 22, or Node 20
 * run with --experimental-websocket), else the npm `ws` package of
 * tests/e2e, injected through the client's `WebSocket` option;
 * NS_CLIENT_WS=ws forces the latter.  Each client's sockets are wrapped to
 * record the frames on the wire, so a test can tell what the server sent
 * from what the app's handlers saw.
 */
import { createRequire } from 'node:module';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after } from 'node:test';
import { NotiSync } from '../../clients/js/notisync.js';

const require = createRequire(new URL('../e2e/lib/harness.js', import.meta.url));
const h = require('./harness.js');
const { TcpProxy } = require('./tcpproxy.js');
const WsPkg = require('ws');

const { test, useServer, uid, until, sleep, postNotification, newId, signJwt, nowS } = h;

const USE_GLOBAL = process.env.NS_CLIENT_WS !== 'ws' && typeof globalThis.WebSocket === 'function';
const BaseWS = USE_GLOBAL ? globalThis.WebSocket : WsPkg;
process.stderr.write(`client tests: node ${process.version}, WebSocket = ${USE_GLOBAL ? 'global' : 'npm ws'}\n`);

const secret = crypto.randomBytes(24).toString('hex');
const srv = useServer({ secret });
/* A second instance on the same Redis + PostgreSQL: the producer while
 * `srv` is down. */
const producer = useServer({ secret });
const hb = useServer({ secret, env: { NOTISYNC_HEARTBEAT_INTERVAL: '1s' } });
const small = useServer({ secret, env: { NOTISYNC_QUEUE_MAX_MESSAGES: '3' } });

const clients = [];
const proxies = [];
after(async () => {
  for (const c of clients) c.close();
  for (const p of proxies) await p.close();
});

/* A WebSocket class recording every frame of its instances in `rec`. */
function recorder() {
  const rec = { sockets: [], in: [], out: [] };
  class Rec extends BaseWS {
    constructor(url) {
      super(url);
      rec.sockets.push(this);
      this.addEventListener('message', (ev) => {
        if (typeof ev.data === 'string') rec.in.push(JSON.parse(ev.data));
      });
    }

    send(s) {
      rec.out.push(JSON.parse(s));
      super.send(s);
    }
  }
  return { WS: Rec, rec };
}

/* A client of `server` (url from its current port unless given), with
 * short backoff and a record of its local events in `c.events`. */
function client(server, opts = {}) {
  const { WS, rec } = recorder();
  const c = new NotiSync({
    url: `ws://127.0.0.1:${server.port}/ws`, WebSocket: WS, backoffBaseMs: 200, backoffMaxMs: 2000, ...opts,
  });
  c.rec = rec;
  c.events = [];
  for (const e of ['auth_failed', 'replaced', 'disconnect', 'client_error']) c.on(e, (x) => c.events.push({ e, x }));
  clients.push(c);
  return c;
}

function waitStatus(c, status, timeoutMs = 15000) {
  return until(() => c.getState().status === status, { timeoutMs, intervalMs: 50, what: `status ${status} (now ${JSON.stringify(c.getState())})` });
}

function wireNotifs(c, id) {
  return c.rec.in.filter((m) => m.type === 'new_notification' && m.data.id === id).length;
}

async function post(server, user, fields = {}) {
  const id = newId();
  const r = await postNotification(server, user, { id, ...fields });
  assert.equal(r.status, 201, r.text);
  return id;
}

test('connect: welcome state, live device status, latency, action() ref matching and error codes', async () => {
  const user = uid('u');
  const c = client(srv, { token: srv.token(user), deviceId: 'phone', deviceName: 'Phone', platform: 'android' });
  await waitStatus(c, 'connected');
  let s = c.getState();
  assert.equal(s.userId, user);
  assert.deepEqual(s.devices.map((d) => `${d.device_id}:${d.status}`), ['phone:online']);
  await until(() => typeof c.getState().lastLatencyMs === 'number', { what: 'latency from the first pong' });
  assert.ok(c.getState().lastLatencyMs >= 0 && c.getState().lastLatencyMs < 5000);
  assert.equal(typeof await c.ping(), 'number');

  const tab = await srv.device(user, 'tab');
  await until(() => c.getState().devices.some((d) => d.device_id === 'tab' && d.status === 'online'), { what: 'tab online' });
  await tab.close();
  await until(() => c.getState().devices.some((d) => d.device_id === 'tab' && d.status === 'offline'), { what: 'tab offline' });

  const got = [];
  c.on('new_notification', (d) => got.push(d.id));
  const n1 = await post(srv, user, { source_device: 'tab' });
  const n2 = await post(srv, user, { source_device: 'tab' });
  await until(() => got.length === 2, { what: 'two notifications' });
  assert.deepEqual(got, [n1, n2]);

  const res = await Promise.allSettled([c.action(n1, 'read'), c.action(crypto.randomUUID(), 'read'), c.action(n2, 'dismiss')]);
  assert.equal(res[0].status, 'fulfilled');
  assert.equal(res[1].status, 'rejected');
  assert.equal(res[1].reason.code, 'not_found');
  assert.equal(res[2].status, 'fulfilled');
  const refs = c.rec.out.filter((m) => m.type === 'notification_action').map((m) => m.ref);
  assert.equal(new Set(refs).size, 3, 'one ref per request');
  s = c.getState();
  assert.equal(s.status, 'connected');
  assert.equal(s.reconnects, 0);
  const list = await c.resync({ limit: 10 });
  const byId = new Map(list.notifications.map((n) => [n.id, n]));
  assert.equal(byId.get(n1).is_read, true);
  assert.equal(byId.get(n2).is_dismissed, true);
  c.close();
  assert.equal(c.getState().status, 'closed');
});

test('kill -9 and restart: reconnects by itself, gets what was posted meanwhile once, the unacked replay is deduped, a queued action goes out', async () => {
  const user = uid('u');
  const handled = [];
  const tokenCalls = [];
  const c = client(srv, {
    token: async (info) => {
      tokenCalls.push(info.reason);
      return srv.token(user);
    },
    deviceId: 'phone',
    ack: true,
    ackDelayMs: 600000, // nothing acked during this test: the server replays n1
  });
  c.on('new_notification', (d) => handled.push(d.id));
  await waitStatus(c, 'connected');
  const n1 = await post(producer, user);
  await until(() => handled.includes(n1), { what: 'n1 handled' });

  srv.opts.port = srv.port; // restart on the same port
  const killed = await srv.signalAndWait('SIGKILL', 10000);
  assert.ok(killed && killed.signal === 'SIGKILL', JSON.stringify(killed));
  await waitStatus(c, 'reconnecting');
  const n2 = await post(producer, user); // queued while the device is away
  const act = c.action(n1, 'read'); // waits for the reconnect
  await sleep(1500); // a few refused attempts while the server is down
  await srv.start();
  await until(() => handled.includes(n2), { timeoutMs: 30000, what: 'n2 after the restart' });
  assert.deepEqual(await act, {});
  await sleep(500);
  assert.deepEqual(handled, [n1, n2], 'each handled exactly once');
  assert.equal(wireNotifs(c, n1), 2, 'n1 was replayed on the wire (not acked) ...');
  assert.equal(wireNotifs(c, n2), 1);
  const s = c.getState();
  assert.equal(s.status, 'connected');
  assert.equal(s.reconnects, 1);
  assert.ok(c.rec.sockets.length >= 2);
  assert.equal(tokenCalls[0], 'connect');
  assert.ok(tokenCalls.length >= 2 && tokenCalls.slice(1).every((r) => r === 'reconnect'), `token function called on every reconnect: ${tokenCalls}`);
  assert.equal(c.events.filter((e) => e.e === 'auth_failed' || e.e === 'replaced').length, 0);
  c.close();
});

test('SIGTERM restart (close 1001): reconnect; acked messages are not replayed', async () => {
  const user = uid('u');
  const handled = [];
  const c = client(srv, { token: srv.token(user), deviceId: 'tab', ack: true, ackDelayMs: 50 });
  c.on('new_notification', (d) => handled.push(d.id));
  await waitStatus(c, 'connected');
  const n1 = await post(srv, user);
  const n2 = await post(srv, user);
  await until(() => handled.length === 2, { what: 'two notifications' });
  await until(() => c.rec.out.some((m) => m.type === 'ack' && m.data.id === c.rec.in.filter((x) => x.type === 'new_notification').at(-1).id), { what: 'cumulative ack of the newest' });
  assert.ok(c.rec.out.filter((m) => m.type === 'ack').length <= 2, 'acks batched');
  srv.opts.port = srv.port;
  await srv.stop();
  await until(() => c.events.some((e) => e.e === 'disconnect' && e.x.code === 1001), { what: 'a 1001 close' });
  await srv.start();
  await waitStatus(c, 'connected', 30000);
  const n3 = await post(srv, user);
  await until(() => handled.includes(n3), { what: 'n3' });
  await sleep(300);
  assert.deepEqual(handled, [n1, n2, n3]);
  assert.equal(wireNotifs(c, n1) + wireNotifs(c, n2), 2, 'acked ones never replayed');
  c.close();
});

test('token function: asked before exp, the token sent as refresh and accepted; the connection outlives the first token', async () => {
  const user = uid('u');
  const calls = [];
  const t0 = nowS();
  const c = client(srv, {
    token: async (info) => {
      calls.push(info.reason);
      // the first token expires 3 s from now; later ones in 10 min
      return srv.token(user, { exp: calls.length === 1 ? t0 + 3 : nowS() + 600 });
    },
    deviceId: 'phone',
  });
  await waitStatus(c, 'connected');
  const conn = c.getState().connectionId;
  await until(() => calls.includes('refresh'), { timeoutMs: 10000, what: 'refresh asked' });
  const refresh = await until(() => c.rec.out.find((m) => m.type === 'refresh'), { what: 'refresh sent' });
  await until(() => c.rec.in.some((m) => m.type === 'ok' && m.ref === refresh.ref), { what: 'refresh ok' });
  // without the refresh the server closes 1008 `token expired` at exp + 30 s leeway
  while (nowS() < t0 + 3 + 30 + 3) await sleep(500);
  assert.equal(c.getState().status, 'connected');
  assert.equal(c.getState().connectionId, conn, 'same connection past exp + leeway');
  assert.deepEqual(calls, ['connect', 'refresh']);
  assert.equal(c.events.length, 0, JSON.stringify(c.events));
  c.close();
});

test('4000 replaced: another connection of the device takes over, the client stops for good', async () => {
  const user = uid('u');
  const c = client(srv, { token: srv.token(user), deviceId: 'shared' });
  await waitStatus(c, 'connected');
  const other = await srv.device(user, 'shared');
  await waitStatus(c, 'closed');
  assert.deepEqual(c.events.map((e) => e.e), ['replaced']);
  assert.equal(c.events[0].x.code, 4000);
  await sleep(1500);
  assert.equal(c.rec.sockets.length, 1, 'no reconnect');
  assert.equal(other.isOpen(), true, 'the new connection stays');
  await other.close();
});

test('1008: a refused token makes the client ask the function again; a refused fresh token stops with auth_failed', async () => {
  const user = uid('u');
  const bad = () => signJwt({ alg: 'HS256', key: 'wrong-secret', payload: h.claims(user) });
  // (a) first token bad, the fresh one good
  const callsA = [];
  const a = client(srv, {
    token: async (info) => {
      callsA.push(info.reason);
      return callsA.length === 1 ? bad() : srv.token(user);
    },
    deviceId: 'a',
  });
  await waitStatus(a, 'connected');
  assert.deepEqual(callsA, ['connect', 'rejected']);
  assert.equal(a.events.filter((e) => e.e === 'auth_failed').length, 0);
  assert.equal(a.rec.sockets.length, 2);
  a.close();

  // (b) every token bad
  const callsB = [];
  const b = client(srv, {
    token: async (info) => {
      callsB.push(info.reason);
      return bad();
    },
    deviceId: 'b',
  });
  await until(() => b.events.some((e) => e.e === 'auth_failed'), { what: 'auth_failed' });
  assert.equal(b.getState().status, 'closed');
  assert.deepEqual(b.getState().lastClose, { code: 1008, reason: 'invalid token' });
  await sleep(1500);
  assert.deepEqual(callsB, ['connect', 'rejected']);
  assert.equal(b.rec.sockets.length, 2, 'no further attempt');

  // (c) an expired string token: nothing to refresh it with
  const d = client(srv, { token: srv.token(user, { exp: nowS() - 120, iat: nowS() - 200 }), deviceId: 'c' });
  await until(() => d.events.some((e) => e.e === 'auth_failed'), { what: 'auth_failed' });
  assert.deepEqual(d.getState().lastClose, { code: 1008, reason: 'token expired' });
  assert.equal(d.rec.sockets.length, 1);
});

test('half-open link (TCP black hole): a missing pong forces a reconnect once the network heals', async () => {
  const user = uid('u');
  const proxy = await new TcpProxy({ port: hb.port }).start();
  proxies.push(proxy);
  const got = [];
  const c = client(hb, {
    url: `ws://127.0.0.1:${proxy.port}/ws`, token: hb.token(user), deviceId: 'phone', pongTimeoutMs: 1000, connectTimeoutMs: 2000,
    ack: true, // n1 goes live into the dead link: without ack mode the server counts it delivered (SPEC §5.4)
  });
  c.on('new_notification', (d) => got.push(d.id));
  await waitStatus(c, 'connected');
  assert.equal(c.rec.in.find((m) => m.type === 'welcome').data.heartbeat_interval_s, 1);
  proxy.blackhole();
  await until(() => c.events.some((e) => e.e === 'disconnect' && e.x.reason === 'heartbeat timeout'), { timeoutMs: 10000, what: 'heartbeat timeout' });
  assert.notEqual(c.getState().status, 'connected');
  const n1 = await post(hb, user);
  await sleep(2500); // attempts into the black hole time out
  proxy.pass();
  await waitStatus(c, 'connected', 20000);
  await until(() => got.includes(n1), { what: 'n1 after the link healed' });
  assert.ok(c.getState().reconnects >= 1);
  c.close();
});

test('queue_overflow surfaced with missed; resync() fetches the list over REST', async () => {
  const user = uid('u');
  const first = client(small, { token: small.token(user), deviceId: 'phone' });
  await waitStatus(first, 'connected');
  first.close();
  const ids = [];
  for (let i = 0; i < 6; i += 1) ids.push(await post(small, user));
  const overflow = [];
  const got = [];
  const c = client(small, { token: small.token(user), deviceId: 'phone', ack: true });
  c.on('queue_overflow', (d) => overflow.push(d.missed));
  c.on('new_notification', (d) => got.push(d.id));
  await until(() => got.length === 3, { what: 'the three queued' });
  assert.deepEqual(overflow, [3]);
  assert.deepEqual(got, ids.slice(3));
  const r = await c.resync({ limit: 2, pages: 5 });
  assert.deepEqual(r.notifications.map((n) => n.id), ids.slice().reverse(), 'newest first, all six over three pages');
  c.close();
});

test('public channel: NotiSync.public subscribe() gets comments.list, comment events flow', async () => {
  const postId = h.newPostId();
  const pub = NotiSync.public({ url: `ws://127.0.0.1:${srv.port}/api/v1/ws`, WebSocket: recorder().WS });
  clients.push(pub);
  const created = [];
  pub.on('comment.created', (d) => created.push(d));
  await waitStatus(pub, 'connected');
  const list = await pub.subscribe(postId);
  assert.equal(list.postId, postId);
  assert.equal(list.count, 0);
  const r = await h.postComment(srv, uid('u'), postId, 'hello from the client test');
  assert.equal(r.status, 201, r.text);
  await until(() => created.some((d) => d.postId === postId), { what: 'comment.created' });
  assert.equal(created.find((d) => d.postId === postId).comment.content, 'hello from the client test');
  await assert.rejects(pub.action('x', 'read'), (e) => e.code === 'read_only');
  pub.close();
});
