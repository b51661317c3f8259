'use strict';
/*
 * workers.test.js -- SPEC §8 / DESIGN "workers = N" (issue 5): with
 * NOTISYNC_WORKERS=2 `notisyncd serve` is a supervisor that serves nothing itself
 * and forks two workers, each a full instance (instance id
 * `<instance_id>-w<k>`) accepting on the same port.
 *
 *   - /health answers 200 from both workers over fresh connections;
 *   - devices of one user held by different workers sync (notifications,
 *     notification_sync, device_status, connection counts);
 *   - a worker killed with SIGKILL is restarted (500 ms, then doubling while
 *     it keeps dying within 10 s) while the other keeps serving the port and
 *     its devices; the killed worker's device ends offline (SPEC §5.6);
 *   - SIGHUP to the supervisor: it and every worker reopen log_file;
 *   - SIGTERM to the supervisor: 1001 on every worker's connections, exit 0
 *     within 10 s, no worker left; SIGKILL to the supervisor leaves no
 *     worker behind either.
 *
 * Which worker holds a connection is read from /proc: the server end of the
 * TCP connection (local port = the server's, remote port = the client's) is
 * found in /proc/net/tcp, and its socket inode among the workers' fds.
 * Workers are the supervisor's children (/proc/<pid>/stat ppid).
 *
 * The first server runs against a private redis-server, so that
 * total_connections (all instances sharing Redis) counts only its workers.
 */
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const nodeTest = require('node:test');
const {
  test, setup, newServer, useRedis, uid, until, sleep, postNotification, SANITIZER_RE,
} = require('./lib/harness');

const WORKERS = 2;
const HEALTH_PROBES = 200;   // fresh connections allowed to see every worker
const MATURE_MS = 10500;     // a worker older than 10 s that dies is restarted after 500 ms

const redis = useRedis();
const shared = newServer({ env: { NOTISYNC_WORKERS: String(WORKERS) } });
setup(async () => {
  shared.opts.env.NOTISYNC_REDIS_URL = redis.url;
  await shared.start();
  await workersReady(shared);
});

/* Every worker pid this file has seen: any still running at the end is
 * killed (by pid) after the harness stopped the supervisors. */
const seenWorkers = new Set();

/* ------------------------------------------------------------ /proc */

/* {state, ppid} of `pid`, or null when it does not exist. */
function procStat(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return { state: rest[0], ppid: Number(rest[1]) };
  } catch {
    return null;
  }
}

/* The live (not zombie) children of the supervisor, ascending. */
function workerPids(srv) {
  const pids = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const st = procStat(name);
    if (st && st.ppid === srv.pid && st.state !== 'Z') pids.push(Number(name));
  }
  pids.sort((a, b) => a - b);
  for (const p of pids) seenWorkers.add(p);
  return pids;
}

/* True while `pid` exists (a zombie counts: it has not been reaped). */
function pidExists(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    if (e.code === 'ESRCH') return false;
    throw e;
  }
}

/* Rows of /proc/net/tcp{,6}: {lport, rport, state, inode}. */
function tcpRows() {
  const rows = [];
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text;
    try {
      text = fs.readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const c = line.trim().split(/\s+/);
      if (c.length < 10) continue;
      rows.push({
        lport: parseInt(c[1].split(':')[1], 16),
        rport: parseInt(c[2].split(':')[1], 16),
        state: c[3],
        inode: c[9],
      });
    }
  }
  return rows;
}

/* Socket inodes among the open fds of `pid`. */
function socketInodes(pid) {
  const set = new Set();
  let fds = [];
  try {
    fds = fs.readdirSync(`/proc/${pid}/fd`);
  } catch {
    return set;
  }
  for (const fd of fds) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) set.add(m[1]);
    } catch {
      /* closed meanwhile */
    }
  }
  return set;
}

/* The pids (supervisor or workers) that hold a listening socket on the
 * server's port. */
function listenerPids(srv) {
  const inodes = tcpRows().filter((r) => r.lport === srv.port && r.state === '0A').map((r) => r.inode);
  const out = new Set();
  for (const pid of [srv.pid, ...workerPids(srv)]) {
    const mine = socketInodes(pid);
    if (inodes.some((i) => mine.has(i))) out.add(pid);
  }
  return out;
}

/* The worker pid holding the server end of `client`'s connection, or null. */
function workerOf(srv, client) {
  const sock = client.ws._socket;
  const cport = sock && sock.localPort;
  if (!cport) return null;
  const row = tcpRows().find((r) => r.lport === srv.port && r.rport === cport && r.state === '01');
  if (!row) return null;
  for (const pid of workerPids(srv)) if (socketInodes(pid).has(row.inode)) return pid;
  return null;
}

/* Waits until the supervisor has `n` children and each one listens on the
 * port; returns their pids. */
function workersReady(srv, n = WORKERS, timeoutMs = 30000) {
  return until(() => {
    const pids = workerPids(srv);
    if (pids.length !== n) return null;
    const l = listenerPids(srv);
    return pids.every((p) => l.has(p)) ? pids : null;
  }, { timeoutMs, intervalMs: 100, what: `${n} workers listening on port ${srv.port}` });
}

/* ------------------------------------------------------- log and /health */

const STARTED_RE = /supervisor: worker (\d+) started \(pid (\d+)\)/g;
const EXITED_RE = /supervisor: worker (\d+) \(pid (\d+)\) exited \(([^)]*)\): restarting in (\d+) ms/g;

/* [{k, pid}] of every "worker k started" line, in log order. */
function startedLines(srv) {
  return [...srv.log().matchAll(STARTED_RE)].map((m) => ({ k: Number(m[1]), pid: Number(m[2]) }));
}

/* [{k, pid, how, ms}] of every "worker k exited … restarting" line. */
function exitedLines(srv) {
  return [...srv.log().matchAll(EXITED_RE)].map((m) => ({
    k: Number(m[1]), pid: Number(m[2]), how: m[3], ms: Number(m[4]),
  }));
}

/* The worker number k of `pid` (from its "started" line), or undefined. */
function kOf(srv, pid) {
  const l = startedLines(srv).filter((x) => x.pid === pid).pop();
  return l && l.k;
}

function expectedIds(srv) {
  const base = srv.env.NOTISYNC_INSTANCE_ID;
  return Array.from({ length: WORKERS }, (_, i) => `${base}-w${i + 1}`);
}

/* GET /health over fresh connections (the harness's http() uses no agent and
 * `Connection: close`) until every id in `want` answered 200, at most
 * `max` requests within `timeoutMs`.  Returns {seen: Map id -> count,
 * statuses: Map status -> count, errors, n}. */
async function probeHealth(srv, want, { max = HEALTH_PROBES, timeoutMs = 30000 } = {}) {
  const seen = new Map();
  const statuses = new Map();
  let errors = 0;
  let n = 0;
  const deadline = Date.now() + timeoutMs;
  while (n < max && Date.now() < deadline) {
    n += 1;
    let r;
    try {
      r = await srv.http('GET', '/health', { timeoutMs: 5000 });
    } catch {
      errors += 1;
      await sleep(20);
      continue;
    }
    statuses.set(r.status, (statuses.get(r.status) || 0) + 1);
    if (r.status === 200 && r.json && typeof r.json.instance_id === 'string') {
      seen.set(r.json.instance_id, (seen.get(r.json.instance_id) || 0) + 1);
    }
    if (want.every((id) => seen.has(id))) break;
  }
  return { seen, statuses, errors, n };
}

function fmt(map) {
  return JSON.stringify(Object.fromEntries(map));
}

/* ----------------------------------------------------------- devices */

/* Connects devices `${prefix}-1`, `${prefix}-2`, … of `user` until one sits
 * on each worker of `pids` (at most `maxTries`); the others are closed.
 * Returns [{pid, client, deviceId}] in connection order. */
async function deviceOnEachWorker(srv, user, prefix, pids, maxTries = 40) {
  const placed = [];
  for (let i = 1; i <= maxTries && placed.length < pids.length; i += 1) {
    const deviceId = `${prefix}-${i}`;
    const c = await srv.device(user, deviceId);
    const pid = await until(() => workerOf(srv, c), {
      timeoutMs: 5000, intervalMs: 50, what: `the worker holding ${c.label}`,
    });
    assert.ok(pids.includes(pid), `${c.label} is held by pid ${pid}, not one of the workers ${pids}`);
    if (placed.some((p) => p.pid === pid)) await c.close();
    else placed.push({ pid, client: c, deviceId });
  }
  assert.equal(placed.length, pids.length,
    `after ${maxTries} connections the devices sit on workers ${placed.map((p) => p.pid)} of ${pids}`);
  return placed;
}

async function deviceStatus(srv, user, deviceId) {
  const r = await srv.http('GET', '/api/v1/devices', { token: srv.token(user) });
  assert.equal(r.status, 200, r.text);
  const d = r.json.devices.find((x) => x.device_id === deviceId);
  return d ? d.status : undefined;
}

const isStatus = (dev, status) => (m) => m.type === 'device_status' && m.data
  && m.data.device_id === dev && m.data.status === status;

const hasNotif = (id) => (m) => m.type === 'new_notification' && m.data && m.data.id === id;

/* ------------------------------------------------------------- tests */

test('two workers, each listening on the port and logged as "worker k started (pid P)"', async () => {
  const pids = workerPids(shared);
  assert.equal(pids.length, WORKERS, `children of the supervisor ${shared.pid}: ${pids}`);
  /* Whether the supervisor binds the socket and the workers inherit it, or
   * each worker binds its own with SO_REUSEPORT, is the server's choice:
   * either way every worker holds a listening socket on the port. */
  const l = listenerPids(shared);
  for (const p of pids) assert.ok(l.has(p), `worker pid ${p} listens on ${shared.port}`);
  const started = startedLines(shared);
  for (const p of pids) {
    assert.ok(started.some((s) => s.pid === p), `a "worker k started (pid ${p})" line: ${JSON.stringify(started)}`);
  }
  assert.deepEqual(pids.map((p) => kOf(shared, p)).sort(), [1, 2], `worker numbers: ${JSON.stringify(started)}`);
});

test('/health answers 200 over fresh connections and both workers (-w1, -w2) answer', async () => {
  const want = expectedIds(shared);
  const res = await probeHealth(shared, want);
  assert.equal(res.errors, 0, `connection errors among ${res.n} requests`);
  assert.deepEqual([...res.statuses.keys()], [200], `statuses over ${res.n} requests: ${fmt(res.statuses)}`);
  for (const id of res.seen.keys()) assert.ok(want.includes(id), `unexpected instance_id ${id}; want ${want}`);
  for (const id of want) {
    assert.ok(res.seen.has(id), `instance ${id} never answered in ${res.n} requests: ${fmt(res.seen)}`);
  }
  process.stdout.write(`WORKER SPREAD FIGURES ${JSON.stringify({ requests: res.n, answered_by: Object.fromEntries(res.seen) })}\n`);
});

test('devices of one user on different workers: device_status, notifications, actions and counts cross', async () => {
  const user = uid();
  const pids = workerPids(shared);
  const [first, second] = await deviceOnEachWorker(shared, user, 'cross', pids);
  const a = first.client;
  const b = second.client;
  const label = `${first.deviceId}@${first.pid} / ${second.deviceId}@${second.pid}`;

  /* b connected after a was welcomed, on the other worker */
  await a.waitFor(isStatus(second.deviceId, 'online'), 10000, `device_status ${second.deviceId} online (${label})`);

  /* each worker holds one WebSocket; the stats of either count both */
  await until(async () => {
    const r = await shared.http('GET', '/api/v1/websocket/stats', { token: shared.token(user) });
    return r.status === 200 && r.json.total_connections === 2 && r.json.instance_connections === 1;
  }, { timeoutMs: 20000, what: 'total_connections 2, instance_connections 1' });
  for (let i = 0; i < 10; i += 1) {
    const r = await shared.http('GET', '/api/v1/websocket/stats', { token: shared.token(user) });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.total_connections, 2, `stats from some worker: ${r.text}`);
    assert.equal(r.json.instance_connections, 1, `stats from some worker: ${r.text}`);
  }
  const perWorker = new Map();
  await until(async () => {
    const r = await shared.http('GET', '/health');
    if (r.status === 200) perWorker.set(r.json.instance_id, r.json.connections);
    return perWorker.size === WORKERS;
  }, { timeoutMs: 20000, intervalMs: 20, what: '/health from every worker' });
  for (const [id, n] of perWorker) assert.equal(n, 1, `/health.connections of ${id}: ${fmt(perWorker)}`);

  /* notifications posted through whichever worker takes the request */
  const ids = [];
  for (let i = 0; i < 6; i += 1) {
    const r = await postNotification(shared, user, { title: `cross ${i}` });
    assert.equal(r.status, 201, r.text);
    ids.push(r.json.id);
  }
  for (const c of [a, b]) {
    await until(() => ids.every((id) => c.messages().some(hasNotif(id))), {
      timeoutMs: 10000, intervalMs: 50, what: `all ${ids.length} notifications on ${c.label}`,
    }).catch((e) => {
      throw new Error(`${e.message}: ${c.describe()}`);
    });
  }

  /* a read on b's worker syncs to a on the other */
  const ref = uid('ref');
  b.send({ type: 'notification_action', ref, data: { notification_id: ids[0], action: 'read' } });
  await b.waitFor((m) => m.type === 'ok' && m.ref === ref, 10000, 'ok for the read');
  const sync = await a.waitFor((m) => m.type === 'notification_sync' && m.data
    && m.data.notification_id === ids[0], 10000, 'notification_sync on the other worker');
  assert.equal(sync.data.is_read, true, JSON.stringify(sync));
  assert.equal(sync.data.source_device, second.deviceId, JSON.stringify(sync));

  /* b leaves: a, on the other worker, sees it go offline */
  await b.close();
  await a.waitFor(isStatus(second.deviceId, 'offline'), 10000, `device_status ${second.deviceId} offline`);
  await until(async () => (await deviceStatus(shared, user, second.deviceId)) === 'offline',
    { what: `${second.deviceId} offline in /api/v1/devices` });
  assert.equal(await deviceStatus(shared, user, first.deviceId), 'online');
  await a.close();
});

test('kill -9 of one worker: the port keeps serving, the worker is restarted, the other worker\'s devices are unaffected',
  { timeout: 180000 }, async () => {
    const srv = newServer({ env: { NOTISYNC_WORKERS: String(WORKERS) } });
    await srv.start();
    const pids = await workersReady(srv);
    const tReady = Date.now();
    const want = expectedIds(srv);
    const warm = await probeHealth(srv, want);
    assert.ok(want.every((id) => warm.seen.has(id)), `both workers answer before the kill: ${fmt(warm.seen)}`);

    const user = uid();
    const [surv, vict] = await deviceOnEachWorker(srv, user, 'k', pids);
    const s = surv.client;
    const v = vict.client;
    await s.waitFor(isStatus(vict.deviceId, 'online'), 10000, `${vict.deviceId} online`);
    const victimPid = vict.pid;
    const victimK = kOf(srv, victimPid);
    assert.ok(victimK === 1 || victimK === 2, `worker number of pid ${victimPid}: ${srv.log().slice(-2000)}`);
    const exitsBefore = exitedLines(srv).length;
    /* past 10 s of age, so this death is a first one, not a crash loop */
    await sleep(Math.max(0, tReady + MATURE_MS - Date.now()));

    const t0 = Date.now();
    process.kill(victimPid, 'SIGKILL');

    /* the port keeps answering */
    const statuses = new Map();
    await until(async () => {
      const r = await srv.http('GET', '/health', { timeoutMs: 3000 });
      statuses.set(r.status, (statuses.get(r.status) || 0) + 1);
      return r.status === 200;
    }, { timeoutMs: 5000, intervalMs: 20, what: '/health 200 after the kill' });
    const healthMs = Date.now() - t0;

    /* a new device connects (on whichever worker takes it) */
    let fresh = null;
    let freshId = null;
    for (let i = 1; i <= 5 && !fresh; i += 1) {
      freshId = `after-kill-${i}`;
      try {
        fresh = await srv.device(user, freshId);
      } catch (e) {
        if (i === 5) throw e;
        await sleep(300);
      }
    }
    assert.equal(fresh.welcome.data.device_id, freshId, JSON.stringify(fresh.welcome));

    /* the victim's connection died with its process (no close frame) */
    const vClose = await v.closed(10000);
    assert.equal(vClose.code, 1006, `victim device close: ${v.describe()}`);

    /* the supervisor logs the exit and restarts worker k as a new pid */
    const exit = await until(() => exitedLines(srv).slice(exitsBefore).find((x) => x.pid === victimPid),
      { timeoutMs: 10000, intervalMs: 50, what: `"worker ${victimK} (pid ${victimPid}) exited … restarting" line` });
    assert.equal(exit.k, victimK, JSON.stringify(exit));
    assert.match(exit.how, /9|KILL/i, `how the worker exited: ${exit.how}`);
    assert.equal(exit.ms, 500, `first restart delay: ${JSON.stringify(exit)}`);
    let newPid = null;
    let seenAt = 0;
    await until(() => {
      const now = workerPids(srv);
      const n = now.find((p) => !pids.includes(p));
      if (n && !newPid) {
        newPid = n;
        seenAt = Date.now();
      }
      return now.length === WORKERS && newPid;
    }, { timeoutMs: 15000, intervalMs: 25, what: 'a new worker pid' });
    const restartMs = seenAt - t0;
    assert.ok(restartMs >= 400, `worker restarted ${restartMs} ms after the kill, before the 500 ms delay`);
    assert.ok(workerPids(srv).includes(surv.pid), `the surviving worker ${surv.pid} still runs`);
    await until(() => startedLines(srv).some((x) => x.pid === newPid),
      { timeoutMs: 5000, intervalMs: 50, what: `"worker k started (pid ${newPid})"` });
    assert.equal(kOf(srv, newPid), victimK, `the restarted worker takes number ${victimK}`);
    assert.equal(pidExists(victimPid), false, `the killed worker ${victimPid} was reaped`);

    /* later both instance ids answer again */
    const again = await probeHealth(srv, want);
    for (const id of want) {
      assert.ok(again.seen.has(id), `instance ${id} after the restart, ${again.n} requests: ${fmt(again.seen)} ${fmt(again.statuses)}`);
    }

    /* the survivor never noticed */
    assert.ok(s.isOpen(), `survivor closed: ${s.describe()}`);
    assert.equal((await s.ping()).type, 'pong');
    const r = await postNotification(srv, user, { title: 'after the kill' });
    assert.equal(r.status, 201, r.text);
    await s.waitFor(hasNotif(r.json.id), 10000, 'notification posted after the restart');
    await fresh.waitFor(hasNotif(r.json.id), 10000, 'notification posted after the restart (new device)');
    assert.equal(await deviceStatus(srv, user, surv.deviceId), 'online');

    /* the killed worker's device is not left online (SPEC §5.6: within 30 s),
     * although its worker came back with the same instance id */
    const tOff = Date.now();
    await until(async () => (await deviceStatus(srv, user, vict.deviceId)) === 'offline',
      { timeoutMs: 40000, intervalMs: 500, what: `${vict.deviceId} (held by the killed worker) offline` });
    const offlineMs = Date.now() - t0;
    /* … and the user's other devices are told it went */
    await until(() => s.messages().some(isStatus(vict.deviceId, 'offline')), {
      timeoutMs: 5000, intervalMs: 50, what: `device_status ${vict.deviceId} offline on the survivor`,
    }).catch((e) => {
      throw new Error(`${e.message}: ${s.describe()}`);
    });
    process.stdout.write(`WORKER RESTART FIGURES ${JSON.stringify({
      health_200_after_ms: healthMs,
      statuses_during_restart: Object.fromEntries(statuses),
      restart_after_ms: restartMs,
      probes_to_see_both_again: again.n,
      victim_offline_after_ms: offlineMs,
      waited_for_offline_ms: Date.now() - tOff,
    })}\n`);
    assert.ok(s.isOpen(), `survivor still open at the end: ${s.describe()}`);
    await srv.stop();
  });

test('a worker that keeps dying within 10 s is restarted after 500 ms, then 1000 ms', { timeout: 120000 }, async () => {
  const srv = newServer({ env: { NOTISYNC_WORKERS: String(WORKERS) } });
  await srv.start();
  const pids = await workersReady(srv);
  await sleep(MATURE_MS); /* the first death is not within 10 s of the start */
  const victim = pids[0];
  const k = kOf(srv, victim);
  const delays = [];
  let current = victim;
  const gone = new Set();
  for (let round = 0; round < 2; round += 1) {
    const before = workerPids(srv);
    process.kill(current, 'SIGKILL');
    gone.add(current);
    const exit = await until(() => exitedLines(srv).find((x) => x.pid === current),
      { timeoutMs: 10000, intervalMs: 25, what: `exit line of pid ${current}` });
    assert.equal(exit.k, k, JSON.stringify(exit));
    delays.push(exit.ms);
    /* as soon as the replacement exists, kill it again (well within 10 s) */
    current = await until(() => workerPids(srv).find((p) => !before.includes(p)),
      { timeoutMs: 20000, intervalMs: 10, what: `replacement of worker ${k}` });
  }
  assert.deepEqual(delays, [500, 1000], `restart delays of worker ${k}`);
  await workersReady(srv);
  await until(() => kOf(srv, current) === k, { timeoutMs: 5000, what: `worker ${k} started as pid ${current}` });
  for (const p of gone) assert.equal(pidExists(p), false, `killed worker ${p} reaped`);
  const res = await probeHealth(srv, expectedIds(srv));
  for (const id of expectedIds(srv)) assert.ok(res.seen.has(id), `instance ${id}: ${fmt(res.seen)} ${fmt(res.statuses)}`);
  await srv.stop();
});

test('SIGHUP to the supervisor: it and every worker reopen log_file; no worker is restarted', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'notisync-logfile-'));
  const logPath = path.join(dir, 'notisyncd.log');
  const srv = newServer({ env: { NOTISYNC_WORKERS: String(WORKERS), NOTISYNC_LOG_FILE: logPath } });
  try {
    await srv.start();
    const pids = await workersReady(srv);
    assert.equal([...fs.readFileSync(logPath, 'utf8').matchAll(STARTED_RE)].length, WORKERS,
      'the supervisor logs to log_file');
    fs.renameSync(logPath, `${logPath}.1`);
    process.kill(srv.pid, 'SIGHUP');
    const reopened = () => (fs.existsSync(logPath)
      ? fs.readFileSync(logPath, 'utf8').match(/SIGHUP: log file reopened/g) || [] : []).length;
    await until(() => reopened() === WORKERS + 1, {
      timeoutMs: 10000, what: `${WORKERS + 1} reopen lines (supervisor and workers) in the new file`,
    });
    assert.deepEqual(workerPids(srv), pids, 'the same workers still run');
    assert.equal((await srv.http('GET', '/health')).status, 200);
  } finally {
    await srv.stop();
    /* the harness scans stderr for sanitizer reports; here stderr was the file */
    const text = [logPath, `${logPath}.1`].filter((f) => fs.existsSync(f))
      .map((f) => fs.readFileSync(f, 'utf8')).join('\n');
    fs.rmSync(dir, { recursive: true, force: true });
    assert.doesNotMatch(text, SANITIZER_RE, 'no sanitizer report in log_file');
  }
});

test('SIGTERM to the supervisor: every worker closes its devices with 1001, exit 0 within 10 s, no worker left', async () => {
  const srv = newServer({ env: { NOTISYNC_WORKERS: String(WORKERS) } });
  await srv.start();
  const pids = await workersReady(srv);
  const user = uid();
  const placed = await deviceOnEachWorker(srv, user, 'term', pids);
  const all = placed.map((p) => p.client);
  await placed[0].client.waitFor(isStatus(placed[1].deviceId, 'online'), 10000, 'second device online');

  const res = await srv.signalAndWait('SIGTERM', 10000);
  assert.ok(res, `the supervisor (pid ${srv.pid}) did not exit within 10 s of SIGTERM`);
  assert.equal(res.signal, null, `exited by signal ${res.signal}`);
  assert.equal(res.code, 0, `exit after SIGTERM: ${JSON.stringify(res)}`);
  for (const c of all) {
    const info = await c.closed(5000);
    assert.equal(info.code, 1001, `close code on shutdown: ${c.describe()}`);
  }
  await until(() => pids.every((p) => !pidExists(p)), {
    timeoutMs: 3000, intervalMs: 50,
    what: `worker pids ${pids} gone (states ${JSON.stringify(pids.map((p) => procStat(p)))})`,
  });

  /* the workers marked their devices offline on the way out */
  const check = newServer({ secret: srv.secret });
  await check.start();
  for (const p of placed) assert.equal(await deviceStatus(check, user, p.deviceId), 'offline', p.deviceId);
  await check.stop();
});

test('SIGKILL to the supervisor leaves no worker running', async () => {
  const srv = newServer({ env: { NOTISYNC_WORKERS: String(WORKERS) } });
  await srv.start();
  const pids = await workersReady(srv);
  const res = await srv.signalAndWait('SIGKILL', 10000);
  assert.ok(res && res.signal === 'SIGKILL', JSON.stringify(res));
  /* orphans are re-parented; once exited they may linger as zombies of an
   * init that does not reap, which is still "not running" */
  await until(() => pids.every((p) => {
    const st = procStat(p);
    return !st || st.state === 'Z';
  }), {
    timeoutMs: 12000, intervalMs: 100,
    what: `orphaned workers ${pids} to exit (states ${JSON.stringify(pids.map((p) => procStat(p)))})`,
  });
});

/* Registered after the harness's hook, so it runs once every supervisor is
 * stopped: a worker still running then is a leak of the server's; kill it. */
nodeTest.after(() => {
  const left = [];
  for (const pid of seenWorkers) {
    const st = procStat(pid);
    if (!st || st.state === 'Z') continue;
    let cmd = '';
    try {
      cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    if (!cmd.includes('notisyncd')) continue; /* pid reused by something else */
    left.push(pid);
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  if (left.length) throw new Error(`worker processes left running after their supervisor stopped: ${left}`);
});
