'use strict';
/*
 * lifecycle.test.js -- SPEC §8 SIGTERM (close 1001, devices offline, exit 0
 * within 10 s), SIGHUP (reopen logs: log_file moved by logrotate) and SPEC
 * §7 heartbeat (WebSocket ping every
 * heartbeat_interval; a peer silent for idle_timeout is closed and its device
 * goes offline).
 */
const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const {
  test, newServer, useServer, uid, until, sleep, binPath, SANITIZER_RE, newId, postNotification,
} = require('./lib/harness');

const hb = useServer({ env: { NOTISYNC_HEARTBEAT_INTERVAL: '1s', NOTISYNC_IDLE_TIMEOUT: '3s' } });

async function deviceStatus(srv, user, deviceId) {
  const r = await srv.http('GET', '/api/v1/devices', { token: srv.token(user) });
  assert.equal(r.status, 200, r.text);
  const d = r.json.devices.find((x) => x.device_id === deviceId);
  return d ? d.status : undefined;
}

/* Opcodes of the unmasked server frames in `b` (stops at a partial frame). */
function opcodes(b) {
  const ops = [];
  let i = 0;
  while (i + 2 <= b.length) {
    const op = b[i] & 0x0f;
    let len = b[i + 1] & 0x7f;
    let hdr = 2;
    if (len === 126) {
      if (i + 4 > b.length) break;
      len = b.readUInt16BE(i + 2);
      hdr = 4;
    } else if (len === 127) {
      if (i + 10 > b.length) break;
      len = Number(b.readBigUInt64BE(i + 2));
      hdr = 10;
    }
    if (i + hdr + len > b.length) break;
    ops.push(op);
    i += hdr + len;
  }
  return ops;
}

test('SIGTERM: connected clients see 1001, the process exits 0 within 10 s, devices end offline', async () => {
  const secret = `lifecycle-${uid()}`;
  const s1 = newServer({ secret });
  await s1.start();
  const user = uid();
  const d1 = await s1.device(user, 'd1');
  const d2 = await s1.device(user, 'd2');
  await d1.waitFor((m) => m.type === 'device_status' && m.data.device_id === 'd2' && m.data.status === 'online', 5000)
    .catch(() => null); /* presence has its own test; this only lets d2 settle */
  await until(async () => (await deviceStatus(s1, user, 'd1')) === 'online', { what: 'd1 online before SIGTERM' });

  const res = await s1.signalAndWait('SIGTERM', 10000);
  assert.ok(res, `notisyncd did not exit within 10 s of SIGTERM (pid ${s1.pid})`);
  assert.equal(res.signal, null, `exited by signal ${res.signal}`);
  assert.equal(res.code, 0, `exit code after SIGTERM: ${JSON.stringify(res)}`);
  assert.ok(res.ms <= 10000, `took ${res.ms} ms`);

  for (const c of [d1, d2]) {
    const info = await c.closed(5000);
    assert.equal(info.code, 1001, `close code on shutdown: ${c.describe()}`);
  }

  /* a fresh server on the same Redis and PostgreSQL sees the devices offline */
  const s2 = newServer({ secret });
  await s2.start();
  const devs = await s2.http('GET', '/api/v1/devices', { token: s2.token(user) });
  assert.equal(devs.status, 200, devs.text);
  const byId = Object.fromEntries(devs.json.devices.map((d) => [d.device_id, d]));
  assert.ok(byId.d1 && byId.d2, `both devices still registered: ${devs.text}`);
  assert.equal(byId.d1.status, 'offline');
  assert.equal(byId.d2.status, 'offline');
  await s2.stop();
});

test('SIGTERM finishes a producer request already received (201, stored) and refuses new ones with 503', async () => {
  const secret = `lifecycle-${uid()}`;
  const s = newServer({ secret });
  await s.start();
  const user = uid();
  const id = newId();
  const body = JSON.stringify({ id, app_name: 'e2e', title: 'in flight at SIGTERM', body: 'b' });
  const half = Math.floor(body.length / 2);

  /* a POST whose headers and half its body are in when SIGTERM arrives */
  const sock = net.connect(s.port, '127.0.0.1');
  let reply = '';
  sock.setEncoding('utf8');
  sock.on('data', (d) => { reply += d; });
  await new Promise((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
  sock.write(`POST /api/v1/notifications HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${s.token(user)}\r\n`
    + `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body.slice(0, half)}`);
  await sleep(300);
  process.kill(s.pid, 'SIGTERM');
  await until(() => /stopping: closing 0 connections with 1001, finishing 1 requests/.test(s.log()),
    { timeoutMs: 5000, what: 'the shutdown to start with one request in flight' });

  /* a request that arrives now is refused, so the producer retries elsewhere */
  const late = await postNotification(s, user, {}, { timeoutMs: 5000 });
  assert.equal(late.status, 503, late.text);
  assert.equal(late.json.error.code, 'unavailable');
  assert.ok(s.alive(), 'still running while a request is in flight');

  sock.write(body.slice(half));
  await until(() => /\r\n\r\n/.test(reply), { timeoutMs: 10000, what: 'the answer to the in-flight POST' });
  sock.destroy();
  assert.match(reply, /^HTTP\/1\.1 201 /, reply);
  const res = await s.signalAndWait('SIGTERM', 10000);
  assert.equal(res && res.code, 0, JSON.stringify(res));

  /* it was committed: a fresh server on the same PostgreSQL has it */
  const s2 = newServer({ secret });
  await s2.start();
  const got = await s2.http('GET', `/api/v1/notifications/${id}`, { token: s2.token(user) });
  assert.equal(got.status, 200, got.text);
  assert.equal(got.json.title, 'in flight at SIGTERM');
  await s2.stop();
});

test('SIGTERM with no clients: exit 0 quickly', async () => {
  const s = newServer();
  await s.start();
  const res = await s.signalAndWait('SIGTERM', 10000);
  assert.ok(res, 'exited within 10 s');
  assert.equal(res.code, 0, JSON.stringify(res));
});

test('SIGINT behaves like SIGTERM (exit 0, clients see 1001)', async () => {
  const s = newServer();
  await s.start();
  const c = await s.device(uid(), 'int');
  const res = await s.signalAndWait('SIGINT', 10000);
  assert.ok(res, 'exited within 10 s of SIGINT');
  assert.equal(res.code, 0, JSON.stringify(res));
  assert.equal((await c.closed(5000)).code, 1001, c.describe());
});

test('SIGHUP with log_file: the moved file is left alone and a new one is opened at the path', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'notisync-logfile-'));
  const logPath = path.join(dir, 'notisyncd.log');
  const s = newServer({ env: { NOTISYNC_LOG_FILE: logPath } });
  try {
    await s.start();
    assert.match(fs.readFileSync(logPath, 'utf8'), / info  /, 'start-up lines are in log_file');
    assert.doesNotMatch(s.log(), / info  /, 'and not on stderr');

    fs.renameSync(logPath, `${logPath}.1`); /* what logrotate does */
    process.kill(s.pid, 'SIGHUP');
    await until(() => fs.existsSync(logPath) && /SIGHUP: log file reopened/.test(fs.readFileSync(logPath, 'utf8')),
      { timeoutMs: 10000, what: 'a new log file with the reopen line' });
    const rotated = fs.readFileSync(`${logPath}.1`, 'utf8');

    /* the server keeps serving, and what it logs now goes to the new file */
    const c = await s.device(uid(), 'after-hup');
    assert.equal((await c.ping()).type, 'pong');
    await c.close();
    await until(() => /device after-hup of user .* online/.test(fs.readFileSync(logPath, 'utf8')),
      { timeoutMs: 10000, what: 'the new connection logged in the new file' });
    assert.equal(fs.readFileSync(`${logPath}.1`, 'utf8'), rotated, 'nothing more is written to the moved file');
    assert.equal((await s.http('GET', '/health')).status, 200);
    const res = await s.signalAndWait('SIGTERM', 10000);
    assert.equal(res && res.code, 0, JSON.stringify(res));
    assert.match(fs.readFileSync(logPath, 'utf8'), /stopping: closing/, 'shutdown is logged to the new file');
  } finally {
    await s.stop();
    /* the harness scans stderr for sanitizer reports; here stderr was the file */
    const text = [logPath, `${logPath}.1`].filter((f) => fs.existsSync(f))
      .map((f) => fs.readFileSync(f, 'utf8')).join('\n');
    fs.rmSync(dir, { recursive: true, force: true });
    assert.doesNotMatch(text, SANITIZER_RE, 'no sanitizer report in log_file');
  }
});

test('SIGHUP without log_file: logged, nothing else changes', async () => {
  const s = newServer();
  await s.start();
  const c = await s.device(uid(), 'hup');
  process.kill(s.pid, 'SIGHUP');
  await until(() => /SIGHUP: logs go to stderr: nothing to reopen/.test(s.log()),
    { timeoutMs: 10000, what: 'the SIGHUP line' });
  assert.ok(s.alive(), 'still running');
  assert.equal((await c.ping()).type, 'pong', 'connections are untouched');
  await c.close();
  await s.stop();
});

test('a log_file that cannot be opened stops start-up with a message naming the key', () => {
  const r = spawnSync(binPath(), ['serve'], {
    encoding: 'utf8',
    timeout: 10000,
    env: {
      ...process.env,
      NOTISYNC_JWT_SECRET: 'x'.repeat(32),
      NOTISYNC_LOG_FILE: '/nonexistent-notisync-dir/x.log',
      NOTISYNC_LISTEN: '127.0.0.1:1',
    },
  });
  assert.equal(r.status, 2, `exit status: ${JSON.stringify({ status: r.status, signal: r.signal, stderr: r.stderr })}`);
  assert.match(r.stderr, /'log_file'.*No such file or directory/);
});

test('heartbeat: welcome announces heartbeat_interval_s = 1', async () => {
  const c = await hb.device(uid(), 'hb0');
  assert.equal(c.welcome.data.heartbeat_interval_s, 1);
  await c.close();
});

test('heartbeat: a client that answers pings stays open past idle_timeout', async () => {
  const c = await hb.device(uid(), 'hb1');
  await sleep(5000);
  assert.ok(c.isOpen(), `closed although it answered pings: ${c.describe()}`);
  assert.ok(c.pings >= 2, `server sent ${c.pings} WebSocket pings in 5 s with heartbeat_interval=1s`);
  assert.equal((await c.ping()).type, 'pong');
  await c.close();
});

test('heartbeat: a client that never answers pings is closed (~idle_timeout) and goes offline', async () => {
  const user = uid();
  const t0 = Date.now();
  const c = await hb.device(user, 'hb-silent', { autoPong: false });
  await until(async () => (await deviceStatus(hb, user, 'hb-silent')) === 'online',
    { timeoutMs: 2000, intervalMs: 100, what: 'hb-silent online' });
  await c.closed(12000);
  const elapsed = Date.now() - t0;
  assert.ok(elapsed >= 2000, `closed after ${elapsed} ms, before idle_timeout=3s`);
  assert.ok(elapsed <= 12000, `closed after ${elapsed} ms`);
  assert.ok(c.pings >= 1, 'it was pinged before being closed');
  await until(async () => (await deviceStatus(hb, user, 'hb-silent')) === 'offline',
    { what: 'hb-silent offline after the idle close' });
});

test('heartbeat: a raw TCP client that completes the handshake and then goes silent is closed', async () => {
  const net = require('node:net');
  const crypto = require('node:crypto');
  const user = uid();
  const sock = net.connect({ host: '127.0.0.1', port: hb.port });
  let buf = Buffer.alloc(0);
  let ended = false;
  sock.on('data', (d) => { buf = Buffer.concat([buf, d]); });
  sock.on('close', () => { ended = true; });
  sock.on('error', () => { ended = true; });
  await new Promise((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  const key = crypto.randomBytes(16).toString('base64');
  const q = new URLSearchParams({ token: hb.token(user), device_id: 'raw-1' }).toString();
  sock.write(`GET /ws?${q} HTTP/1.1\r\nHost: 127.0.0.1:${hb.port}\r\nUpgrade: websocket\r\n`
    + `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
  const t0 = Date.now();
  await until(() => buf.includes('\r\n\r\n'), { timeoutMs: 10000, intervalMs: 50, what: 'upgrade response' });
  assert.match(buf.toString('latin1'), /^HTTP\/1\.1 101/, 'upgrade accepted');
  await until(() => ended, { timeoutMs: 15000, intervalMs: 100, what: 'server closing the silent raw socket' });
  const elapsed = Date.now() - t0;
  assert.ok(elapsed >= 2000, `closed after ${elapsed} ms, before idle_timeout=3s`);
  /* the server did ping it: look for a ping frame (opcode 0x9) after the
   * 101 response and the welcome */
  const frames = buf.subarray(buf.indexOf('\r\n\r\n') + 4);
  const ops = opcodes(frames);
  assert.equal(ops[0], 0x1, `first frame is text (welcome): ${ops}`);
  assert.ok(ops.includes(0x9), `a WebSocket ping frame was sent: opcodes ${ops}`);
  sock.destroy();
});
