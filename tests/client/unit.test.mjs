/*
 * unit.test.mjs -- the notisync client against a fake WebSocket and a fake
 * clock: everything where time matters (backoff bounds, stable reset,
 * heartbeat, ack batching, refresh timing, offline pause) and the close-code
 * table, without a server.  The same behaviours against a real notisyncd:
 * server.test.mjs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NotiSync } from '../../clients/js/notisync.js';
import { FakeClock, fakeWebSocket, fakeJwt, flush } from './fakes.mjs';

function make(opts = {}) {
  const clock = new FakeClock();
  const WS = fakeWebSocket();
  const events = [];
  const client = new NotiSync({
    url: 'ws://example.test/ws', token: 't0', deviceId: 'dev-1', WebSocket: WS, clock,
    random: () => 1, ...opts,
  });
  for (const e of ['auth_failed', 'replaced', 'disconnect', 'client_error']) {
    client.on(e, (x) => events.push({ e, x }));
  }
  return { clock, WS, client, events };
}

/* ms until the scheduled reconnect, from the state */
function retryIn(client, clock) {
  const at = client.getState().nextRetryAt;
  return at === null ? null : at - clock.now();
}

test('backoff: full jitter under min(max, base*2^n), never gives up, random 1 hits the cap exactly', async () => {
  const { clock, WS, client } = make({ backoffBaseMs: 500, backoffMaxMs: 8000 });
  const seen = [];
  for (let n = 0; n < 40; n += 1) {
    assert.equal(WS.made.length, n + 1, `attempt ${n + 1} made a socket`);
    WS.last().serverClose(1006);
    const d = retryIn(client, clock);
    seen.push(d);
    assert.equal(d, Math.min(8000, 500 * 2 ** n), `delay before retry ${n + 1}`);
    await clock.advance(d - 1);
    assert.equal(WS.made.length, n + 1, 'no retry before the delay');
    await clock.advance(1);
  }
  assert.equal(client.getState().status, 'reconnecting');
  assert.deepEqual(seen.slice(0, 6), [500, 1000, 2000, 4000, 8000, 8000]);
  client.close();
  assert.equal(client.getState().status, 'closed');
  await clock.advance(60000);
  assert.equal(WS.made.length, 41, 'close() stops retrying');
});

test('backoff: jitter spread over [0, cap) with a real random source', async () => {
  let x = 12345;
  const random = () => {
    x = (x * 1103515245 + 12345) % 2147483648;
    return x / 2147483648;
  };
  const { clock, WS, client } = make({ backoffBaseMs: 1000, backoffMaxMs: 30000, random });
  const delays = [];
  for (let n = 0; n < 30; n += 1) {
    WS.last().serverClose(1011, 'backend unavailable');
    const d = retryIn(client, clock);
    const cap = Math.min(30000, 1000 * 2 ** n);
    assert.ok(d >= 0 && d < cap, `delay ${d} in [0, ${cap})`);
    delays.push(d);
    await clock.advance(d);
  }
  assert.ok(new Set(delays).size > 20, 'jittered, not fixed');
  assert.equal(WS.made.length, 31);
  client.close();
});

test('backoff resets only after a stable connection (stableMs)', async () => {
  const { clock, WS, client } = make({ backoffBaseMs: 100, backoffMaxMs: 100000, stableMs: 5000 });
  for (let n = 0; n < 4; n += 1) {
    WS.last().serverClose(1006);
    await clock.advance(retryIn(client, clock));
  }
  // connected, but dropped after 1 s: no reset
  WS.last().welcome();
  assert.equal(client.getState().status, 'connected');
  await clock.advance(1000);
  WS.last().serverClose(1001, 'going away');
  assert.equal(retryIn(client, clock), 1600, 'a short-lived connection does not reset the backoff');
  await clock.advance(1600);
  WS.last().welcome();
  await clock.advance(5000);
  WS.last().serverClose(1001, 'going away');
  assert.equal(retryIn(client, clock), 100, 'reset after stableMs connected');
  assert.equal(client.getState().reconnects, 1);
  await clock.advance(100);
  WS.last().welcome();
  assert.equal(client.getState().reconnects, 2);
  client.close();
});

test('close codes: 1001, 1011, 1013, 1006, 1009, 1000, 1008 rate limit / too many devices reconnect', async () => {
  for (const [code, reason] of [[1001, 'going away'], [1011, 'backend unavailable'], [1013, 'slow consumer'],
    [1006, ''], [1009, 'too big'], [1000, ''], [1008, 'rate limit exceeded'], [1008, 'too many devices']]) {
    const { clock, WS, client, events } = make();
    WS.last().welcome();
    WS.last().serverClose(code, reason);
    assert.equal(client.getState().status, 'reconnecting', `${code} ${reason}`);
    assert.deepEqual(client.getState().lastClose, { code, reason });
    const dis = events.find((e) => e.e === 'disconnect');
    assert.ok(dis && dis.x.willReconnect && dis.x.code === code, `disconnect event for ${code}`);
    await clock.advance(1000);
    assert.equal(WS.made.length, 2, `${code}: reconnected`);
    assert.equal(events.filter((e) => e.e === 'auth_failed' || e.e === 'replaced').length, 0);
    client.close();
  }
});

test('close code 4000 replaced: stops for good with a replaced event', async () => {
  const { clock, WS, client, events } = make();
  WS.last().welcome();
  WS.last().serverClose(4000, 'replaced');
  assert.equal(client.getState().status, 'closed');
  assert.deepEqual(events.map((e) => e.e), ['replaced']);
  assert.deepEqual(events[0].x, { code: 4000, reason: 'replaced' });
  await clock.advance(3600000);
  assert.equal(WS.made.length, 1, 'never reconnects');
  assert.equal(clock.pending(), 0, 'no timer left');
});

test('1008 with a string token: auth_failed at once (no fresh token to try)', async () => {
  const { clock, WS, client, events } = make();
  WS.last().open();
  WS.last().serverClose(1008, 'invalid token');
  assert.equal(client.getState().status, 'closed');
  assert.deepEqual(events.map((e) => e.e), ['auth_failed']);
  await clock.advance(600000);
  assert.equal(WS.made.length, 1);
});

test('1008 with a token function: asks again at once, a refused fresh token stops with auth_failed', async () => {
  const calls = [];
  const { clock, WS, client, events } = make({
    token: async (info) => {
      calls.push(info.reason);
      return `tok${calls.length}`;
    },
  });
  await flush();
  assert.equal(WS.made.length, 1);
  assert.equal(WS.last().query.get('token'), 'tok1');
  WS.last().open();
  WS.last().serverClose(1008, 'token expired');
  await flush();
  assert.equal(WS.made.length, 2, 'retried at once with a fresh token');
  assert.equal(WS.last().query.get('token'), 'tok2');
  WS.last().open();
  WS.last().serverClose(1008, 'invalid token');
  await flush();
  assert.deepEqual(calls, ['connect', 'rejected']);
  assert.equal(client.getState().status, 'closed');
  assert.deepEqual(events.filter((e) => e.e === 'auth_failed').map((e) => e.x), [{ code: 1008, reason: 'invalid token' }]);
  await clock.advance(600000);
  assert.equal(WS.made.length, 2);
});

test('1008 token expired after a good session: fresh token accepted, a later expiry is cured again', async () => {
  let n = 0;
  const { WS, client, events } = make({ token: async () => `tok${++n}` });
  await flush();
  WS.last().welcome();
  WS.last().serverClose(1008, 'token expired');
  await flush();
  WS.last().welcome();
  assert.equal(client.getState().status, 'connected');
  WS.last().serverClose(1008, 'token expired');
  await flush();
  WS.last().welcome();
  assert.equal(client.getState().status, 'connected');
  assert.equal(n, 3);
  assert.equal(events.filter((e) => e.e === 'auth_failed').length, 0);
  client.close();
});

test('1008 invalid device_id / origin not allowed: auth_failed, no retry', async () => {
  for (const reason of ['invalid device_id', 'origin not allowed']) {
    const { clock, WS, client, events } = make({ token: async () => 'x' });
    await flush();
    WS.last().open();
    WS.last().serverClose(1008, reason);
    await flush();
    assert.equal(client.getState().status, 'closed', reason);
    assert.deepEqual(events.map((e) => e.e), ['auth_failed']);
    await clock.advance(600000);
    assert.equal(WS.made.length, 1);
  }
});

test('token function that throws: reported, retried with backoff', async () => {
  let n = 0;
  const { clock, WS, client, events } = make({
    token: async () => {
      n += 1;
      if (n < 3) throw new Error('auth server down');
      return 'ok';
    },
  });
  await flush();
  assert.equal(WS.made.length, 0);
  assert.equal(events.filter((e) => e.e === 'client_error').length, 1);
  await clock.advance(1000);
  await clock.advance(2000);
  assert.equal(WS.made.length, 1);
  WS.last().welcome();
  assert.equal(client.getState().status, 'connected');
  client.close();
});

test('heartbeat: ping every heartbeat_interval_s, latency measured, a missing pong forces a reconnect', async () => {
  const { clock, WS, client, events } = make({ pongTimeoutMs: 3000 });
  const ws = WS.last();
  ws.welcome({ heartbeat_interval_s: 10 });
  assert.equal(ws.sentOf('ping').length, 1, 'a ping right after welcome');
  await clock.advance(42);
  ws.recv({ type: 'pong', ref: ws.sentOf('ping')[0].ref, data: { timestamp: 'x' }, timestamp: 'x' });
  assert.equal(client.getState().lastLatencyMs, 42);
  await clock.advance(9958);
  assert.equal(ws.sentOf('ping').length, 2, 'second ping after 10 s');
  ws.recv({ type: 'pong', ref: ws.sentOf('ping')[1].ref, data: {}, timestamp: 'x' });
  await clock.advance(10000);
  assert.equal(ws.sentOf('ping').length, 3);
  // no pong: half-open link
  await clock.advance(2999);
  assert.equal(client.getState().status, 'connected');
  await clock.advance(1);
  assert.equal(client.getState().status, 'reconnecting');
  assert.equal(ws.closedByClient, 1000, 'the dead socket is closed');
  const dis = events.find((e) => e.e === 'disconnect');
  assert.equal(dis.x.reason, 'heartbeat timeout');
  await clock.advance(1000);
  assert.equal(WS.made.length, 2);
  client.close();
});

test('connect timeout: a socket that never answers is given up and retried', async () => {
  const { clock, WS, client } = make({ connectTimeoutMs: 5000 });
  await clock.advance(4999);
  assert.equal(WS.made.length, 1);
  await clock.advance(1);
  assert.equal(client.getState().status, 'reconnecting');
  assert.deepEqual(client.getState().lastClose, { code: 1006, reason: 'connect timeout' });
  await clock.advance(1000);
  assert.equal(WS.made.length, 2);
  client.close();
});

test('offline: retries pause while navigator.onLine is false, an online event retries at once', async () => {
  const win = new EventTarget();
  const nav = { onLine: true };
  const { clock, WS, client } = make({ window: win, navigator: nav, backoffBaseMs: 60000, backoffMaxMs: 60000 });
  WS.last().welcome();
  nav.onLine = false;
  win.dispatchEvent(new Event('offline'));
  const ws = WS.last();
  assert.equal(ws.sentOf('ping').length, 2, 'going offline probes the link with a ping');
  ws.serverClose(1006);
  assert.equal(client.getState().status, 'reconnecting');
  assert.equal(client.getState().nextRetryAt, null, 'paused');
  await clock.advance(3600000);
  assert.equal(WS.made.length, 1, 'no attempt while offline');
  nav.onLine = true;
  win.dispatchEvent(new Event('online'));
  await flush();
  assert.equal(WS.made.length, 2, 'online: retried at once');
  WS.last().serverClose(1006);
  assert.ok(retryIn(client, clock) > 0, 'waiting a backoff delay');
  win.dispatchEvent(new Event('online'));
  await flush();
  assert.equal(WS.made.length, 3, 'an online event cuts a backoff wait short');
  // going offline during a backoff wait pauses it
  WS.last().serverClose(1006);
  nav.onLine = false;
  win.dispatchEvent(new Event('offline'));
  await clock.advance(3600000);
  assert.equal(WS.made.length, 3);
  client.close();
  nav.onLine = true;
  win.dispatchEvent(new Event('online'));
  await flush();
  assert.equal(WS.made.length, 3, 'listeners removed by close()');
});

function notif(id, n, extra = {}) {
  return { type: 'new_notification', id, timestamp: 'x', data: { id: n, title: n, unread: 1, ...extra } };
}

test('ack mode: cumulative acks batched after the handlers returned; async handlers awaited; duplicates acked, not handled', async () => {
  const { clock, WS, client } = make({ ack: true, ackDelayMs: 100 });
  const ws = WS.last();
  assert.equal(ws.query.get('ack'), '1');
  ws.welcome();
  const handled = [];
  let release;
  client.on('new_notification', (d) => {
    handled.push(d.id);
    if (d.id === 'n3') return new Promise((r) => { release = r; });
    return undefined;
  });
  ws.recv(notif('1-0', 'n1'));
  ws.recv(notif('2-0', 'n2'));
  await clock.advance(100);
  assert.deepEqual(ws.sentOf('ack').map((m) => m.data.id), ['2-0'], 'one cumulative ack');
  ws.recv(notif('3-0', 'n3'));
  ws.recv(notif('4-0', 'n4'));
  await clock.advance(500);
  assert.deepEqual(handled, ['n1', 'n2', 'n3'], 'n4 waits for the async handler of n3');
  assert.equal(ws.sentOf('ack').length, 1, 'nothing acked while n3 is being handled');
  release();
  await clock.advance(100);
  assert.deepEqual(handled, ['n1', 'n2', 'n3', 'n4']);
  assert.deepEqual(ws.sentOf('ack').map((m) => m.data.id), ['2-0', '4-0']);
  // the connection drops before an ack: replay is deduped and acked
  ws.recv(notif('5-0', 'n5'));
  await flush();
  ws.serverClose(1006);
  await clock.advance(1000);
  const ws2 = WS.last();
  ws2.welcome();
  ws2.recv(notif('5-0', 'n5'));
  ws2.recv(notif('6-0', 'n6'));
  await clock.advance(100);
  assert.deepEqual(handled, ['n1', 'n2', 'n3', 'n4', 'n5', 'n6'], 'n5 handled once across the reconnect');
  assert.deepEqual(ws2.sentOf('ack').map((m) => m.data.id), ['6-0']);
  assert.equal(ws.sentOf('ack').length, 2, 'no ack went out on the dead connection');
  client.close();
});

test('dedupe: by delivery id and notification id, bounded LRU; non-ack mode sends no ack', async () => {
  const { WS, client } = make({ dedupeSize: 3 });
  const ws = WS.last();
  ws.welcome();
  const got = [];
  client.on('new_notification', (d) => got.push(d.id));
  client.on('notification_sync', (d) => got.push(`sync:${d.notification_id}`));
  ws.recv(notif('1-0', 'a'));
  ws.recv(notif('1-0', 'a'));
  ws.recv(notif('9-0', 'a')); // same notification under another delivery id
  ws.recv({ type: 'notification_sync', id: '2-0', data: { notification_id: 'a', is_read: true, unread: 0 } });
  ws.recv({ type: 'notification_sync', id: '3-0', data: { notification_id: 'a', is_read: false, unread: 1 } });
  await flush();
  assert.deepEqual(got, ['a', 'sync:a', 'sync:a']);
  assert.equal(client.getState().unread, 1);
  for (let i = 0; i < 10; i += 1) ws.recv(notif(`1${i}-0`, `b${i}`));
  await flush();
  ws.recv(notif('1-0', 'a')); // evicted from the 3-entry LRU: handled again
  await flush();
  assert.equal(got.filter((x) => x === 'a').length, 2);
  assert.equal(ws.sentOf('ack').length, 0);
  client.close();
});

test('action(): ref-matched replies in any order, error codes, unread from ok', async () => {
  const { WS, client } = make();
  const ws = WS.last();
  ws.welcome({ unread: 5 });
  assert.equal(client.getState().unread, 5);
  const p1 = client.action('n1', 'read');
  const p2 = client.action('n2', 'dismiss');
  const p3 = client.action('zz', 'unread');
  await flush();
  const [m1, m2, m3] = ws.sentOf('notification_action');
  assert.deepEqual(m1.data, { notification_id: 'n1', action: 'read' });
  assert.deepEqual(m2.data, { notification_id: 'n2', action: 'dismiss' });
  assert.equal(new Set([m1.ref, m2.ref, m3.ref]).size, 3);
  ws.recv({ type: 'error', ref: m3.ref, data: { code: 'not_found', message: 'no such notification' } });
  ws.recv({ type: 'ok', ref: m2.ref, data: {} });
  ws.recv({ type: 'ok', ref: m1.ref, data: { unread: 3 } });
  assert.deepEqual(await p2, {});
  assert.deepEqual(await p1, { unread: 3 });
  await assert.rejects(p3, (e) => e.code === 'not_found' && e.message === 'no such notification');
  assert.equal(client.getState().unread, 3);
  await assert.rejects(client.action('x', 'archive'), TypeError);
  client.close();
});

test('action(): waits while disconnected (bounded), in-flight requests resent after a reconnect, rate_limited retried', async () => {
  const { clock, WS, client } = make({ maxQueued: 3, requestTimeoutMs: 0 });
  const ws = WS.last();
  const p1 = client.action('n1', 'read');
  const p2 = client.action('n2', 'read');
  const p3 = client.action('n3', 'read');
  await assert.rejects(client.action('n4', 'read'), (e) => e.code === 'queue_full');
  ws.welcome();
  const sent1 = ws.sentOf('notification_action');
  assert.equal(sent1.length, 3, 'queued requests go out after welcome');
  ws.recv({ type: 'ok', ref: sent1[0].ref, data: {} });
  await p1;
  ws.recv({ type: 'error', ref: sent1[2].ref, data: { code: 'rate_limited', message: 'slow down' } });
  ws.serverClose(1006); // n2 and n3 in flight
  await clock.advance(1000);
  const ws2 = WS.last();
  ws2.welcome();
  const sent2 = ws2.sentOf('notification_action');
  assert.deepEqual(sent2.map((m) => m.data.notification_id), ['n2', 'n3'], 'unanswered requests resent in order');
  assert.deepEqual(sent2.map((m) => m.ref), [sent1[1].ref, sent1[2].ref], 'same refs');
  await clock.advance(5000);
  assert.equal(ws2.sentOf('notification_action').length, 2, 'the rate_limited retry did not send a duplicate');
  for (const m of sent2) ws2.recv({ type: 'ok', ref: m.ref, data: {} });
  await p2;
  await p3;
  const p5 = client.action('n5', 'read');
  client.close();
  await assert.rejects(p5, (e) => e.code === 'closed');
});

test('action(): a request waiting too long is rejected with timeout', async () => {
  const { clock, client } = make({ requestTimeoutMs: 20000 });
  const p = client.action('n1', 'read');
  const outcome = p.then(() => null, (e) => e);
  await clock.advance(19999);
  await clock.advance(1);
  const e = await outcome;
  assert.equal(e && e.code, 'timeout');
  client.close();
});

test('subscribe(): resolves with comments.list by ref, asked again after a reconnect', async () => {
  const { clock, WS, client } = make();
  let ws = WS.last();
  const p = client.subscribe('note-1');
  ws.welcome();
  const [s] = ws.sentOf('subscribe');
  assert.deepEqual(s.data, { postId: 'note-1' });
  const lists = [];
  client.on('comments.list', (d) => lists.push(d.postId));
  ws.recv({ type: 'comments.list', ref: s.ref, data: { postId: 'note-1', comments: [], count: 0 } });
  assert.equal((await p).count, 0);
  ws.serverClose(1001);
  await clock.advance(1000);
  ws = WS.last();
  ws.welcome();
  assert.deepEqual(ws.sentOf('subscribe').map((m) => m.data.postId), ['note-1']);
  assert.deepEqual(lists, ['note-1']);
  client.close();
});

test('state: devices follow device_status; onState sees every change; status sequence', async () => {
  const { clock, WS, client } = make();
  const statuses = [];
  const off = client.onState((s) => {
    if (statuses[statuses.length - 1] !== s.status) statuses.push(s.status);
  });
  const ws = WS.last();
  ws.welcome({ devices: [{ device_id: 'dev-1', status: 'online', last_seen: 'a' }, { device_id: 'tab', status: 'offline', last_seen: 'b' }] });
  ws.recv({ type: 'device_status', data: { device_id: 'tab', status: 'online', last_seen: 'c' }, timestamp: 'c' });
  ws.recv({ type: 'device_status', data: { device_id: 'new', status: 'online', last_seen: 'd' }, timestamp: 'd' });
  const s = client.getState();
  assert.deepEqual(s.devices.map((d) => `${d.device_id}:${d.status}`), ['dev-1:online', 'tab:online', 'new:online']);
  assert.ok(Object.isFrozen(s));
  ws.serverClose(1006);
  await clock.advance(1000);
  WS.last().welcome();
  client.close();
  off();
  assert.deepEqual(statuses, ['connected', 'reconnecting', 'connected', 'closed']);
});

test('token refresh: the function is asked before exp and the token sent as refresh', async () => {
  const clock = new FakeClock();
  const calls = [];
  const WS = fakeWebSocket();
  const token = async (info) => {
    calls.push(info.reason);
    return fakeJwt({ sub: 'u1', exp: Math.floor(clock.now() / 1000) + 300 });
  };
  const client = new NotiSync({ url: 'ws://h/ws', token, deviceId: 'd', WebSocket: WS, clock, random: () => 1 });
  await flush();
  const ws = WS.last();
  ws.welcome();
  /* advances `ms` in 1 s steps, answering every ping like a server */
  const live = async (ms) => {
    for (let i = 0; i < ms / 1000; i += 1) {
      await clock.advance(1000);
      for (const p of ws.sentOf('ping')) {
        if (!p.answered) {
          p.answered = true;
          ws.recv({ type: 'pong', ref: p.ref, data: {} });
        }
      }
    }
  };
  await live(239000);
  assert.equal(ws.sentOf('refresh').length, 0, 'not before exp - 60 s');
  await live(2000);
  const [r] = ws.sentOf('refresh');
  assert.ok(r, 'refresh sent 60 s before exp');
  assert.equal(typeof r.data.token, 'string');
  assert.deepEqual(calls, ['connect', 'refresh']);
  ws.recv({ type: 'ok', ref: r.ref, data: {} });
  await flush();
  // the next one 60 s before the new token's exp
  await live(300000);
  assert.equal(client.getState().status, 'connected');
  assert.equal(ws.sentOf('refresh').length, 2);
  assert.deepEqual(calls, ['connect', 'refresh', 'refresh']);
  // and on reconnect
  ws.serverClose(1001);
  await clock.advance(1000);
  await flush();
  assert.deepEqual(calls, ['connect', 'refresh', 'refresh', 'reconnect']);
  client.close();
});

test('public channel: no token, no device_id, ready on open, actions refused locally', async () => {
  const clock = new FakeClock();
  const WS = fakeWebSocket();
  const pub = NotiSync.public({ url: 'http://h:8080/api/v1/ws', WebSocket: WS, clock });
  const ws = WS.last();
  assert.equal(ws.url, 'ws://h:8080/api/v1/ws');
  assert.equal(pub.httpUrl, 'http://h:8080');
  ws.open();
  assert.equal(pub.getState().status, 'connected');
  const got = [];
  pub.on('comment.created', (d) => got.push(d.comment.id));
  pub.on('*', (m) => got.push(`*${m.type}`));
  ws.recv({ type: 'comment.created', data: { postId: 'p', comment: { id: 'c1' } }, timestamp: 'x' });
  assert.deepEqual(got, ['*comment.created', 'c1']);
  await assert.rejects(pub.action('n', 'read'), (e) => e.code === 'read_only');
  pub.subscribe('p');
  assert.equal(ws.sentOf('subscribe').length, 1);
  pub.close();
});

test('construction: url forms, http base, missing WebSocket, bad deviceId', () => {
  const WS = fakeWebSocket();
  const c = new NotiSync({ url: 'wss://api.example.com/prefix/ws', token: 't', deviceId: 'd', WebSocket: WS, deviceName: 'My phone', platform: 'web', ack: true });
  assert.equal(c.httpUrl, 'https://api.example.com/prefix');
  const q = WS.last().query;
  assert.deepEqual([q.get('token'), q.get('device_id'), q.get('device_name'), q.get('platform'), q.get('ack')], ['t', 'd', 'My phone', 'web', '1']);
  c.close();
  assert.throws(() => new NotiSync({ url: 'ws://h/ws', token: 't', deviceId: 'bad id', WebSocket: WS }), TypeError);
  const saved = globalThis.WebSocket;
  try {
    globalThis.WebSocket = undefined;
    assert.throws(() => new NotiSync({ url: 'ws://h/ws', token: 't', deviceId: 'd' }), /WebSocket/);
  } finally {
    globalThis.WebSocket = saved;
  }
});
