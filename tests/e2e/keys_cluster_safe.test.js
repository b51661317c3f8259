'use strict';
/*
 * keys_cluster_safe.test.js -- issue 13: every Redis key and Lua script of
 * the server is cluster-safe (docs/architecture.md "Redis keys"), proved on
 * a standalone Redis:
 *
 * - every key the server leaves behind carries a hash tag, and the tag is a
 *   user, an instance id or `ns` (redis-cli --scan);
 * - every script call (EVAL / EVALSHA, seen with MONITOR) names keys of one
 *   hash slot only, and every command the script runs inside Redis
 *   (MONITOR's "lua" lines) touches only keys it was given in KEYS (the
 *   PUBLISH channel included), never one it built itself;
 * - every command outside scripts touches one key (or one channel) at most.
 *
 * Two instances A and B on a private Redis with a redis_prefix exercise
 * connect, disconnect (with and without presence_grace), the device list,
 * the connection total, a notification, actions, a broadcast, the
 * start-up drain of a previous life of the same instance id (B killed with
 * -9 and restarted at once) and the reaper (B killed again, A marks its
 * device offline).  Slots are computed here (CRC16/XMODEM as in Redis
 * Cluster): CLUSTER KEYSLOT answers only on a cluster node.
 */
const assert = require('node:assert/strict');
const { after } = require('node:test');
const { spawn, execFile } = require('node:child_process');
const {
  test, setup, newServer, PrivateRedis, uid, until, sleep, postNotification, broadcast,
} = require('./lib/harness');

const PREFIX = 'ks:';
const ID_A = uid('ksa');
const ID_B = uid('ksb');
const redis = new PrivateRedis();
const env = () => ({
  NOTISYNC_REDIS_URL: redis.url,
  NOTISYNC_REDIS_PREFIX: PREFIX,
  NOTISYNC_PRESENCE_GRACE: '0',
});
const A = newServer({ instanceId: ID_A, env: {} });
let B = newServer({ instanceId: ID_B, env: {} });
let monitor = null;
const monLines = [];
const users = new Set();

/* ---- Redis Cluster's key -> slot (lib/rcluster.js: CRC16/XMODEM) ---- */
const { crc16, keySlot } = require('./lib/rcluster');
/* The hash tag of `key` (Redis rules: the first '{', then the first '}'
 * after it, non-empty), or null. */
function hashTag(key) {
  const s = key.indexOf('{');
  if (s < 0) return null;
  const e = key.indexOf('}', s + 1);
  if (e < 0 || e === s + 1) return null;
  return key.slice(s + 1, e);
}

/* ---- Redis access ---- */
function redisCli(...args) {
  return new Promise((resolve, reject) => {
    execFile('redis-cli', ['-p', String(redis.port), '--raw', ...args], { timeout: 5000 }, (err, out) => {
      if (err) reject(err);
      else resolve(out.trim());
    });
  });
}

/* MONITOR line -> [args] (the quoted words, unescaped), with its source. */
function parseMonitor(line) {
  const m = /^\d+\.\d+ \[\d+ ([^\]]+)\] (.*)$/.exec(line);
  if (!m) return null;
  const args = [];
  const re = /"((?:[^"\\]|\\.)*)"/g;
  let w;
  while ((w = re.exec(m[2]))) {
    args.push(w[1].replace(/\\x([0-9a-f]{2})/gi, (_, h) => String.fromCharCode(parseInt(h, 16)))
      .replace(/\\(.)/g, (_, c) => ({ n: '\n', r: '\r', t: '\t' }[c] || c)));
  }
  return { lua: m[1] === 'lua', from: m[1], args };
}

/* Commands without a key (or whose first argument is not one). */
const KEYLESS = new Set(['ping', 'time', 'script', 'client', 'info', 'select', 'subscribe', 'unsubscribe',
  'ssubscribe', 'sunsubscribe', 'psubscribe', 'punsubscribe', 'monitor', 'command', 'hello', 'auth',
  'config', 'cluster', 'readonly', 'scan', 'quit', 'dbsize', 'debug', 'memory', 'role', 'shutdown',
  'keys', 'flushall', 'echo', 'pubsub', 'lastsave', 'wait']);
/* Commands whose keys are more than their first argument. */
const MULTI = { del: 'all', exists: 'all', unlink: 'all', mget: 'all', touch: 'all', sunionstore: 'all',
  rename: 'all', smove: [1, 2], xinfo: [2] };

/* The keys (channels counted as keys) of one command's args. */
function commandKeys(args) {
  const cmd = args[0].toLowerCase();
  if (KEYLESS.has(cmd) || args.length < 2) return [];
  const how = MULTI[cmd];
  if (how === 'all') return args.slice(1);
  if (Array.isArray(how)) return how.map((i) => args[i]);
  return [args[1]];
}

/* Checks everything MONITOR saw from the server's connections (those that
 * PING, SUBSCRIBE or run scripts: this file's own redis-cli calls are one
 * command per connection and none of those). */
function checkMonitor() {
  const problems = [];
  const ours = new Set();
  for (const line of monLines) {
    const p = parseMonitor(line);
    if (p && p.args.length && /^(ping|subscribe|eval|evalsha)$/i.test(p.args[0])) ours.add(p.from);
  }
  let script = null; /* {keys, slot, text} of the EVAL whose lua lines follow */
  let evals = 0;
  let luaCmds = 0;
  const scriptsSeen = new Set();
  for (const line of monLines) {
    const p = parseMonitor(line);
    if (!p || !p.args.length || (!p.lua && !ours.has(p.from))) continue;
    const cmd = p.args[0].toLowerCase();
    if (p.lua) {
      luaCmds++;
      if (!script) {
        problems.push(`lua command outside a script: ${line}`);
        continue;
      }
      for (const k of commandKeys(p.args)) {
        if (!script.keys.includes(k)) problems.push(`script touches ${k}, not in its KEYS ${JSON.stringify(script.keys)}: ${line} (script: ${script.text})`);
      }
      continue;
    }
    script = null;
    if (cmd === 'eval' || cmd === 'evalsha') {
      evals++;
      const n = Number(p.args[2]);
      const keys = p.args.slice(3, 3 + n);
      scriptsSeen.add(p.args[1].slice(0, 60));
      const slots = new Set(keys.map(keySlot));
      if (slots.size > 1) problems.push(`script keys in ${slots.size} slots: ${JSON.stringify(keys)}`);
      for (const k of keys) if (hashTag(k) === null) problems.push(`script key without a hash tag: ${k}`);
      script = { keys, text: p.args[1].slice(0, 80) };
      continue;
    }
    if (cmd === 'monitor') continue;
    const keys = commandKeys(p.args);
    const slots = new Set(keys.map(keySlot));
    if (slots.size > 1) problems.push(`command over ${slots.size} slots: ${line}`);
    for (const k of keys) {
      if (cmd === 'publish' && k === `${PREFIX}bcast`) continue; /* broadcast: classic pub/sub, every instance */
      if (cmd === 'publish' && k.startsWith(`${PREFIX}canary:`)) continue; /* the instance's own canary */
      if (hashTag(k) === null) problems.push(`key without a hash tag: ${line}`);
    }
  }
  return { problems, evals, luaCmds, scripts: scriptsSeen.size };
}

/* Every key in Redis has a tag naming a user, an instance or `ns`. */
async function checkScan(what) {
  const keys = (await redisCli('--scan')).split('\n').filter(Boolean);
  const bad = [];
  const allowed = new Set([...users, ID_A, ID_B, 'ns']);
  for (const k of keys) {
    assert.ok(k.startsWith(PREFIX), `${what}: ${k} lacks redis_prefix`);
    const tag = hashTag(k);
    if (tag === null || !allowed.has(tag)) bad.push(k);
  }
  assert.deepEqual(bad, [], `${what}: keys whose hash tag is not a user, an instance id or ns`);
  return keys;
}

setup(async () => {
  await redis.start();
  monitor = spawn('redis-cli', ['-p', String(redis.port), 'monitor'], { stdio: ['ignore', 'pipe', 'ignore'] });
  let buf = '';
  monitor.stdout.on('data', (d) => {
    buf += d.toString();
    const parts = buf.split('\n');
    buf = parts.pop();
    for (const l of parts) monLines.push(l);
  });
  await until(() => monLines.length > 0 || buf === 'OK', { timeoutMs: 100, what: 'monitor' }).catch(() => {});
  Object.assign(A.opts.env, env());
  Object.assign(B.opts.env, env());
  await A.start();
  await B.start();
});

/* the MONITOR client is this file's: stopped by its PID */
after(() => {
  /* redis-cli may already have exited (its Redis stopped first) */
  if (monitor && monitor.exitCode === null && monitor.signalCode === null) {
    try { process.kill(monitor.pid, 'SIGTERM'); } catch (e) { if (e.code !== 'ESRCH') throw e; }
  }
});

function isStatus(dev, status) {
  return (m) => m.type === 'device_status' && m.data.device_id === dev && m.data.status === status;
}

async function devices(srv, user) {
  const r = await srv.http('GET', '/api/v1/devices', { token: srv.token(user) });
  assert.equal(r.status, 200, r.text);
  return r.json.devices;
}

test('CRC16 slot function: Redis Cluster test vectors', () => {
  assert.equal(crc16(Buffer.from('123456789')), 0x31c3);
  assert.equal(keySlot('foo'), 12182);
  assert.equal(keySlot('somekey'), 11058);
  assert.equal(keySlot('{user1000}.following'), keySlot('{user1000}.followers'));
  assert.equal(keySlot('foo{}{bar}'), crc16(Buffer.from('foo{}{bar}')) % 16384);
  assert.equal(hashTag('q:{a:b}:c'), 'a:b');
});

test('connect, list, total, notify, actions, broadcast, disconnect: one slot per script, every key tagged', { timeout: 60000 }, async () => {
  const u1 = uid('ksu');
  const u2 = uid('ksv');
  users.add(u1);
  users.add(u2);
  const a1 = await A.device(u1, 'p1');
  const b1 = await B.device(u1, 'p2'); /* the same user on both instances */
  const b2 = await B.device(u2, 'tab');
  await a1.waitFor(isStatus('p2', 'online'), 10000, 'p2 online seen on A');
  /* the device list merges presence of devices on both instances */
  const list = await devices(A, u1);
  assert.deepEqual(list.map((d) => [d.device_id, d.status]).sort(), [['p1', 'online'], ['p2', 'online']]);
  /* totals across instances */
  await until(async () => {
    const r = await A.http('GET', '/api/v1/websocket/stats', { token: A.token(u1) });
    return r.status === 200 && r.json.total_connections === 3;
  }, { timeoutMs: 10000, what: 'total_connections 3 on A' });
  /* a notification, then an action on it */
  const p = await postNotification(A, u1, {});
  assert.equal(p.status, 201, p.text);
  const id = p.json.id;
  await b1.waitFor((m) => m.type === 'new_notification' && m.data.id === id, 10000, 'p2 gets it');
  const act = await B.http('POST', `/api/v1/notifications/${id}/actions`, {
    token: B.token(u1), body: { action: 'read' }, headers: { 'X-Device-ID': 'p2' },
  });
  assert.equal(act.status, 200, act.text);
  await a1.waitFor((m) => m.type === 'notification_sync' && m.data.notification_id === id, 10000, 'sync on p1');
  const bc = await broadcast(B, 'keys.check', { n: 1 });
  assert.equal(bc.status, 202, bc.text);
  /* the status cache of actions is gone */
  assert.equal(await redisCli('EXISTS', `${PREFIX}notif:${id}`), '0');
  assert.equal(await redisCli('EXISTS', `${PREFIX}notif:{${id}}`), '0');
  await checkScan('while connected');
  /* the per-instance and registry keys of the layout */
  assert.equal(await redisCli('EXISTS', `${PREFIX}inst:{${ID_A}}`), '1');
  assert.equal(await redisCli('SCARD', `${PREFIX}idev:{${ID_B}}`), '2');
  assert.equal(await redisCli('HEXISTS', `${PREFIX}instances:{ns}`, ID_B), '1');
  assert.equal(await redisCli('HGET', `${PREFIX}stats:conn:{ns}`, ID_B), '2');
  /* disconnect: offline seen elsewhere, the member leaves the idev set */
  await b2.close();
  await until(async () => (await redisCli('SCARD', `${PREFIX}idev:{${ID_B}}`)) === '1', { timeoutMs: 10000, what: 'idev:B back to 1' });
  const pres = JSON.parse(await redisCli('HGET', `${PREFIX}presence:{${u2}}`, 'tab'));
  assert.equal(pres.status, 'offline');
  await b1.close();
  await a1.waitFor(isStatus('p2', 'offline'), 10000, 'p2 offline seen on A');
  await a1.close();
  await checkScan('after disconnects');
  const r = checkMonitor();
  assert.deepEqual(r.problems, [], 'cluster rule broken');
  assert.ok(r.evals > 10 && r.luaCmds > 20, `MONITOR saw the scripts (${JSON.stringify(r)})`);
});

test('a previous life drained at start-up, then a crashed instance reaped by the survivor: still one slot per script', { timeout: 90000 }, async () => {
  const u = uid('ksw');
  users.add(u);
  const watcher = await A.device(u, 'w');
  await B.device(u, 'gone');
  await watcher.waitFor(isStatus('gone', 'online'), 10000, 'gone online');
  /* a previous life: killed, and restarted at once with the same id */
  assert.ok(await B.signalAndWait('SIGKILL', 5000), 'B killed');
  B = newServer({ instanceId: ID_B, env: env() });
  await B.start();
  await watcher.waitFor(isStatus('gone', 'offline'), 8000, 'the new life of B marked its previous life\'s device offline');
  assert.match(B.log(), /previous life of this instance: 1 devices offline/);
  assert.equal((await devices(A, u)).find((d) => d.device_id === 'gone').status, 'offline');
  /* now a crash with nobody coming back: A's reaper (15 s TTL + 5 s) */
  watcher.cursor = watcher.frames.length;
  const again = await B.device(u, 'gone2');
  await watcher.waitFor(isStatus('gone2', 'online'), 10000, 'gone2 online');
  /* while B lives, its stored-online device reads online on A */
  assert.equal((await devices(A, u)).find((d) => d.device_id === 'gone2').status, 'online');
  assert.ok(again);
  assert.ok(await B.signalAndWait('SIGKILL', 5000), 'B killed again');
  /* reads offline as soon as B's liveness key is gone (<= 15 s) ... */
  await until(async () => (await devices(A, u)).find((d) => d.device_id === 'gone2').status === 'offline',
    { timeoutMs: 20000, intervalMs: 500, what: 'gone2 reads offline' });
  /* ... and the reaper on A marks it offline and forgets B */
  await watcher.waitFor(isStatus('gone2', 'offline'), 20000, 'A reaped gone2');
  await until(async () => (await redisCli('HEXISTS', `${PREFIX}instances:{ns}`, ID_B)) === '0',
    { timeoutMs: 10000, what: 'B forgotten' });
  assert.equal(await redisCli('HEXISTS', `${PREFIX}stats:conn:{ns}`, ID_B), '0');
  assert.equal(await redisCli('EXISTS', `${PREFIX}idev:{${ID_B}}`), '0');
  assert.equal(await redisCli('EXISTS', `${PREFIX}idev:{${ID_B}}:claim`), '0', 'no claim left behind');
  assert.match(A.log(), new RegExp(`reaped instance ${ID_B}: 1 devices offline`));
  const m = await A.http('GET', '/metrics');
  assert.match(m.text, /notisync_cluster_events_total\{event="instances_reaped"\} 1/);
  await watcher.close();
  await sleep(500);
  await checkScan('after the reaping');
  const r = checkMonitor();
  assert.deepEqual(r.problems, [], 'cluster rule broken');
});
