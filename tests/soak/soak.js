'use strict';
/*
 * soak.js -- the driver of scripts/soak (issue 10).  Not part of CI.
 *
 *   node tests/soak/soak.js --base http://127.0.0.1:PORT --secret S --server-pid P
 *        --redis-port R --minutes N [--devices 5000] [--procs 3] [--rate 200]
 *        [--csv FILE] [--summary FILE]
 *
 * The parent process is the producer side and the bookkeeper: it posts
 * `rate` notifications/s (service token, keep-alive HTTP, each with its own
 * id and a `user_id`), one broadcast a second, a comment every 2 s, samples
 * the server every 10 s into a CSV, and at the end collects the figures.
 * `procs` forked children hold the devices (3 per user, all of a user in one
 * child; child k binds its sockets to 127.0.0.(2+k)).  Each device drops its
 * connection after 30-120 s (a quarter of the drops are RSTs, the rest a
 * normal close) and comes back after 1-10 s.  Device mode is fixed per
 * device: ack mode (ack=1, every durable message acknowledged as it comes)
 * or plain.  The children also send notification_action `read` over
 * WebSocket (~5/s in all); each `ok` makes the user's two other devices
 * expect a notification_sync.
 *
 * Checks, per device, over everything it received on all its connections
 * (a durable message is keyed by its notification: n:<id> for
 * new_notification, s:<notification_id> for notification_sync):
 *   lost       an expected key (a 201'd notification of the user; a sync
 *              whose action was answered ok) never received, after a final
 *              drain in which every device is connected again.  For plain
 *              devices a loss inside a RST window is allowed by SPEC §5.4
 *              (counted apart as lost_at_rst);
 *   doubled    a key received under two delivery ids (queued twice), a
 *              delivery id twice in one connection (SPEC §5.3), or -- ack
 *              mode -- a delivery id replayed on a later connection although
 *              the device's ack covering it was confirmed (sent before a
 *              normal close, or >= 2 s before a RST);
 *   replayed   a delivery id received again on a later connection that the
 *              rules allow (plain mode; ack mode: not yet confirmed acked);
 *   disorder   a delivery id first seen after a higher one (SPEC §5.3);
 *   sync_to_source  a sync delivered to the device that made the action.
 */
const http = require('node:http');
const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');
const { fork, execFile } = require('node:child_process');

let WebSocket;
try {
  WebSocket = require('ws');
} catch {
  WebSocket = require(path.join(__dirname, '..', 'e2e', 'node_modules', 'ws'));
}

function argsOf(argv) {
  const o = {};
  for (let i = 0; i < argv.length; i += 1) {
    const a = argv[i];
    if (a.startsWith('--')) {
      const k = a.slice(2);
      const v = argv[i + 1] !== undefined && !argv[i + 1].startsWith('--') ? argv[++i] : '1';
      o[k] = v;
    }
  }
  return o;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const rnd = (a, b) => a + Math.random() * (b - a);

function b64url(buf) {
  return Buffer.from(buf).toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
}
function jwt(secret, payload) {
  const input = `${b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${b64url(JSON.stringify(payload))}`;
  return `${input}.${b64url(crypto.createHmac('sha256', secret).update(input).digest())}`;
}
function token(secret, sub, ttlS, extra = {}) {
  const now = Math.floor(Date.now() / 1000);
  return jwt(secret, { sub, iat: now, exp: now + ttlS, ...extra });
}

/* Redis stream ids "ms-seq" compared numerically. */
function cmpId(a, b) {
  if (a === b) return 0;
  const i = a.indexOf('-');
  const j = b.indexOf('-');
  const ma = Number(a.slice(0, i));
  const mb = Number(b.slice(0, j));
  if (ma !== mb) return ma < mb ? -1 : 1;
  const sa = Number(a.slice(i + 1));
  const sb = Number(b.slice(j + 1));
  return sa === sb ? 0 : (sa < sb ? -1 : 1);
}

const DURABLE = new Set(['new_notification', 'notification_sync']);

/* ======================================================================
 * child: the devices of some users
 * ==================================================================== */
function child() {
  const cfg = JSON.parse(process.env.SOAK_CHILD);
  const base = new URL(cfg.base);
  const localAddress = cfg.localAddress;
  const ttlS = cfg.tokenTtlS;
  const devices = [];
  const users = new Map(); /* user -> {devs, tok, expected: Map key->meta, acted:Set, pool:[]} */
  let running = true;   /* churn on */
  const stats = {
    connects: 0, connectFailures: 0, graceful: 0, rsts: 0, unexpectedCloses: {}, overflow: 0,
    ticks: 0, comments: 0, commentLists: 0, deviceStatus: 0, welcomes: 0, welcomeQueued: 0,
    actionsSent: 0, actionsOk: 0, actionsErr: {}, errors: {}, unexpected: 0, unexpectedKeys: [], rateLimitedCtx: [],
  };

  for (const u of cfg.users) {
    const rec = { name: u.name, devs: [], tok: token(cfg.secret, u.name, ttlS), expected: new Map(), acted: new Set(), pool: [] };
    users.set(u.name, rec);
    u.devices.forEach((d) => {
      const dev = {
        user: rec, id: d.id, ack: d.ack, ws: null, connNo: 0, open: false, connecting: false,
        got: new Map(),            /* key -> did (first) */
        seenDid: new Set(), lastFirst: null, conns: 0,
        lastAckSent: null, ackLog: [], ackConfirmed: null,
        rstAt: [], doubledQueuedTwice: 0, doubledInConn: 0, doubledAfterAck: 0, replayed: 0,
        disorder: 0, syncToSource: 0, dropTimer: null, backTimer: null, received: 0, sentAt: [],
      };
      rec.devs.push(dev);
      devices.push(dev);
    });
  }
  const pendingRefs = new Map(); /* ref -> {dev, nid} */
  let refSeq = 0;

  function sendJson(dev, obj) {
    if (!dev.ws || dev.ws.readyState !== WebSocket.OPEN) return false;
    try {
      dev.ws.send(JSON.stringify(obj));
      dev.sentAt.push(Date.now());
      if (dev.sentAt.length > 128) dev.sentAt.splice(0, 64);
      return true;
    } catch {
      return false;
    }
  }

  function onDurable(dev, m, connSeen) {
    const did = m.id;
    let key;
    if (m.type === 'new_notification') key = `n:${m.data && m.data.id}`;
    else key = `s:${m.data && m.data.notification_id}`;
    dev.received += 1;
    if (typeof did !== 'string') {
      stats.errors.no_id = (stats.errors.no_id || 0) + 1;
      return;
    }
    if (connSeen.has(did)) dev.doubledInConn += 1;
    connSeen.add(did);
    const prev = dev.got.get(key);
    if (prev !== undefined && prev !== did) dev.doubledQueuedTwice += 1;
    if (prev === undefined) dev.got.set(key, did);
    if (dev.seenDid.has(did)) {
      if (dev.ack && dev.ackConfirmed !== null && cmpId(did, dev.ackConfirmed) <= 0) dev.doubledAfterAck += 1;
      else dev.replayed += 1;
    } else {
      dev.seenDid.add(did);
      if (dev.lastFirst !== null && cmpId(did, dev.lastFirst) < 0) dev.disorder += 1;
      if (dev.lastFirst === null || cmpId(did, dev.lastFirst) > 0) dev.lastFirst = did;
    }
    if (m.type === 'notification_sync' && m.data && m.data.source_device === dev.id) dev.syncToSource += 1;
    if (m.type === 'new_notification' && m.data && m.data.id && !dev.user.acted.has(m.data.id)) {
      if (dev.user.pool.length < 50) dev.user.pool.push(m.data.id);
    }
    if (dev.ack) {
      if (sendJson(dev, { type: 'ack', data: { id: did } })) {
        if (dev.lastAckSent === null || cmpId(did, dev.lastAckSent) > 0) {
          dev.lastAckSent = did;
          dev.ackLog.push([Date.now(), did]);
          if (dev.ackLog.length > 64) dev.ackLog.splice(0, dev.ackLog.length - 64);
        }
      }
    }
  }

  function connect(dev) {
    if (dev.connecting || dev.open) return;
    dev.connecting = true;
    dev.connNo += 1;
    const no = dev.connNo;
    const q = `token=${encodeURIComponent(dev.user.tok)}&device_id=${encodeURIComponent(dev.id)}${dev.ack ? '&ack=1' : ''}&platform=soak`;
    const ws = new WebSocket(`ws://${base.host}/ws?${q}`, { localAddress, perMessageDeflate: false, handshakeTimeout: 20000 });
    dev.ws = ws;
    const connSeen = new Set();
    let welcomed = false;
    let byUs = false;
    ws.on('open', () => {
      dev.open = true;
      dev.connecting = false;
    });
    ws.on('message', (buf) => {
      let m;
      try {
        m = JSON.parse(buf.toString());
      } catch {
        stats.errors.bad_json_from_server = (stats.errors.bad_json_from_server || 0) + 1;
        return;
      }
      if (DURABLE.has(m.type)) {
        onDurable(dev, m, connSeen);
        return;
      }
      switch (m.type) {
        case 'welcome':
          welcomed = true;
          stats.welcomes += 1;
          stats.connects += 1;
          stats.welcomeQueued += (m.data && m.data.queued) || 0;
          if (running && !dev.dropTimer) scheduleDrop(dev, ws);
          break;
        case 'queue_overflow': stats.overflow += 1; break;
        case 'soak.tick': stats.ticks += 1; break;
        case 'comment.created': stats.comments += 1; break;
        case 'comments.list': stats.commentLists += 1; break;
        case 'device_status': stats.deviceStatus += 1; break;
        case 'ok': {
          const p = pendingRefs.get(m.ref);
          if (p) {
            pendingRefs.delete(m.ref);
            stats.actionsOk += 1;
            const meta = { at: p.at, done: Date.now() };
            for (const o of p.dev.user.devs) {
              if (o !== p.dev) o.user.expected.set(`s:${p.nid}@${o.id}`, meta);
            }
          }
          break;
        }
        case 'error': {
          const code = (m.data && m.data.code) || '?';
          if (m.ref && pendingRefs.has(m.ref)) {
            pendingRefs.delete(m.ref);
            stats.actionsErr[code] = (stats.actionsErr[code] || 0) + 1;
          } else {
            stats.errors[code] = (stats.errors[code] || 0) + 1;
            if (code === 'rate_limited' && stats.rateLimitedCtx.length < 20) {
              /* what this device had sent: messages in the last 1 s / 5 s */
              const now = Date.now();
              stats.rateLimitedCtx.push({
                device: `${dev.user.name}/${dev.id}`, ack: dev.ack, conn: no,
                sent1s: dev.sentAt.filter((t) => t > now - 1000).length,
                sent5s: dev.sentAt.filter((t) => t > now - 5000).length,
              });
            }
          }
          break;
        }
        default: break;
      }
    });
    ws.on('error', () => { /* close follows */ });
    ws.on('close', (code) => {
      const wasOpen = dev.open;
      dev.open = false;
      dev.connecting = false;
      if (dev.ws === ws) dev.ws = null;
      if (dev.dropTimer) {
        clearTimeout(dev.dropTimer);
        dev.dropTimer = null;
      }
      if (!wasOpen || !welcomed) stats.connectFailures += 1;
      if (!byUs && wasOpen) {
        stats.unexpectedCloses[code] = (stats.unexpectedCloses[code] || 0) + 1;
      }
      if (ws._soakByUs) return; /* the drop schedules the comeback */
      if (no === dev.connNo) {
        dev.backTimer = setTimeout(() => {
          dev.backTimer = null;
          connect(dev);
        }, 1000);
      }
    });
    ws._markByUs = () => {
      byUs = true;
      ws._soakByUs = true;
    };
  }

  function scheduleDrop(dev, ws) {
    dev.dropTimer = setTimeout(() => {
      dev.dropTimer = null;
      if (!running || dev.ws !== ws || !dev.open) return;
      ws._markByUs();
      if (Math.random() < cfg.rstShare) {
        stats.rsts += 1;
        const now = Date.now();
        dev.rstAt.push(now);
        /* acks sent >= 2 s before the RST count as confirmed */
        for (let i = dev.ackLog.length - 1; i >= 0; i -= 1) {
          if (dev.ackLog[i][0] <= now - 2000) {
            if (dev.ackConfirmed === null || cmpId(dev.ackLog[i][1], dev.ackConfirmed) > 0) dev.ackConfirmed = dev.ackLog[i][1];
            break;
          }
        }
        try {
          ws._socket.resetAndDestroy();
        } catch {
          ws.terminate();
        }
      } else {
        stats.graceful += 1;
        if (dev.lastAckSent !== null) dev.ackConfirmed = dev.lastAckSent;
        ws.close(1000, 'soak');
      }
      dev.backTimer = setTimeout(() => {
        dev.backTimer = null;
        if (running) connect(dev);
      }, rnd(cfg.offMinS, cfg.offMaxS) * 1000);
    }, rnd(cfg.dropMinS, cfg.dropMaxS) * 1000);
  }

  /* actions: one every actionEveryMs, on a notification some connected
   * device of a random user has received and nobody acted on yet */
  let actionTimer = null;
  function startActions() {
    const list = [...users.values()];
    actionTimer = setInterval(() => {
      for (let tries = 0; tries < 20; tries += 1) {
        const u = list[Math.floor(Math.random() * list.length)];
        if (!u.pool.length) continue;
        const nid = u.pool.shift();
        if (u.acted.has(nid)) continue;
        const holders = u.devs.filter((d) => d.open && d.got.has(`n:${nid}`));
        if (!holders.length) continue;
        const dev = holders[Math.floor(Math.random() * holders.length)];
        const ref = `a${++refSeq}`;
        if (sendJson(dev, { type: 'notification_action', ref, data: { notification_id: nid, action: 'read' } })) {
          u.acted.add(nid);
          pendingRefs.set(ref, { dev, nid, at: Date.now() });
          stats.actionsSent += 1;
        }
        return;
      }
    }, cfg.actionEveryMs);
  }

  async function connectAll(par = 40) {
    let i = 0;
    const workers = Array.from({ length: par }, async () => {
      while (i < devices.length) {
        const dev = devices[i++];
        connect(dev);
        const t0 = Date.now();
        while (!dev.open && Date.now() - t0 < 30000) await sleep(20);
      }
    });
    await Promise.all(workers);
  }

  function missingOf(dev) {
    let n = 0;
    for (const [key] of dev.user.expected) {
      if (key.startsWith('n:')) {
        if (!dev.got.has(key)) n += 1;
      } else {
        const at = key.lastIndexOf('@');
        if (key.slice(at + 1) === dev.id && !dev.got.has(key.slice(0, at))) n += 1;
      }
    }
    return n;
  }

  async function finish() {
    running = false;
    clearInterval(actionTimer);
    for (const d of devices) {
      if (d.dropTimer) { clearTimeout(d.dropTimer); d.dropTimer = null; }
      if (d.backTimer) { clearTimeout(d.backTimer); d.backTimer = null; }
    }
    /* wait for pending action replies (bounded) */
    for (let i = 0; i < 50 && pendingRefs.size; i += 1) await sleep(100);
    const unansweredActions = pendingRefs.size;
    /* every device connected again */
    const t0 = Date.now();
    for (;;) {
      let off = 0;
      for (const d of devices) if (!d.open) { off += 1; connect(d); }
      if (!off || Date.now() - t0 > 60000) break;
      await sleep(500);
    }
    /* drain: until nothing is missing, or nothing new arrives for 10 s (max 120 s) */
    let last = -1;
    let lastChange = Date.now();
    const d0 = Date.now();
    for (;;) {
      let missing = 0;
      let recv = 0;
      for (const d of devices) { missing += missingOf(d); recv += d.received; }
      if (!missing) break;
      if (recv !== last) { last = recv; lastChange = Date.now(); }
      if (Date.now() - lastChange > 10000 || Date.now() - d0 > 120000) break;
      await sleep(500);
    }
    const drainMs = Date.now() - d0;
    /* figures */
    const fig = {
      ack: { devices: 0, expected: 0, deliveries: 0, lost: 0, doubled: 0, doubledQueuedTwice: 0, doubledInConn: 0, doubledAfterAck: 0, replayed: 0, disorder: 0, syncToSource: 0, lostSync: 0 },
      plain: { devices: 0, expected: 0, deliveries: 0, lost: 0, lostAtRst: 0, doubled: 0, doubledQueuedTwice: 0, doubledInConn: 0, replayed: 0, disorder: 0, syncToSource: 0, lostSync: 0, lostSyncAtRst: 0 },
    };
    const lostSamples = [];
    for (const d of devices) {
      const f = d.ack ? fig.ack : fig.plain;
      f.devices += 1;
      f.deliveries += d.received;
      f.doubledQueuedTwice += d.doubledQueuedTwice;
      f.doubledInConn += d.doubledInConn;
      if (d.ack) f.doubledAfterAck += d.doubledAfterAck;
      f.replayed += d.replayed;
      f.disorder += d.disorder;
      f.syncToSource += d.syncToSource;
      for (const [key, meta] of d.user.expected) {
        let want = key;
        if (key.startsWith('s:')) {
          const at = key.lastIndexOf('@');
          if (key.slice(at + 1) !== d.id) continue;
          want = key.slice(0, at);
        }
        f.expected += 1;
        if (d.got.has(want)) continue;
        const sync = want.startsWith('s:');
        const atRst = !d.ack && d.rstAt.some((t) => t >= meta.at - 500 && t <= meta.done + 3000);
        if (atRst) {
          if (sync) f.lostSyncAtRst += 1;
          else f.lostAtRst += 1;
          continue;
        }
        if (sync) f.lostSync += 1;
        f.lost += 1;
        if (lostSamples.length < 20) lostSamples.push({ device: `${d.user.name}/${d.id}`, ack: d.ack, key: want, meta, rsts: d.rstAt.length });
      }
    }
    for (const f of [fig.ack, fig.plain]) f.doubled = f.doubledQueuedTwice + f.doubledInConn + (f.doubledAfterAck || 0);
    /* keys received that nobody posted (or whose post had no answer) */
    const known = new Set();
    for (const u of users.values()) for (const k of u.expected.keys()) known.add(k.startsWith('s:') ? k.slice(0, k.lastIndexOf('@')) : k);
    for (const d of devices) {
      for (const k of d.got.keys()) {
        if (!known.has(k) && k.startsWith('n:')) {
          stats.unexpected += 1;
          if (stats.unexpectedKeys.length < 200) stats.unexpectedKeys.push(k.slice(2));
        }
      }
    }
    for (const d of devices) if (d.ws) { d.ws._markByUs(); d.ws.close(1000, 'soak end'); }
    await sleep(1500);
    for (const d of devices) if (d.ws) d.ws.terminate();
    stats.unansweredActions = unansweredActions;
    return { fig, stats, drainMs, lostSamples };
  }

  process.on('message', async (msg) => {
    if (msg.t === 'n') {
      for (const [user, nid, at, done] of msg.items) {
        const u = users.get(user);
        if (u) u.expected.set(`n:${nid}`, { at, done });
      }
    } else if (msg.t === 'start') {
      await connectAll();
      let open = 0;
      for (const d of devices) if (d.open) open += 1;
      process.send({ t: 'connected', open });
    } else if (msg.t === 'churn') {
      startActions();
    } else if (msg.t === 'stat') {
      let open = 0;
      for (const d of devices) if (d.open) open += 1;
      process.send({ t: 'stat', open, connects: stats.connects, rsts: stats.rsts, graceful: stats.graceful });
    } else if (msg.t === 'finish') {
      const r = await finish();
      process.send({ t: 'result', r });
    } else if (msg.t === 'exit') {
      process.exit(0);
    }
  });
}

/* ======================================================================
 * parent: producers, broadcasts, comments, sampler, figures
 * ==================================================================== */
function readProc(pid) {
  let rss = null;
  let fds = null;
  try {
    const st = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /VmRSS:\s+(\d+)/.exec(st);
    rss = m ? Number(m[1]) : null;
  } catch { /* gone */ }
  try {
    fds = fs.readdirSync(`/proc/${pid}/fd`).length;
  } catch { /* gone */ }
  return { rss, fds };
}
function childPids(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number).sort((a, b) => a - b);
  } catch {
    return [];
  }
}
function sh(cmd, args, input) {
  return new Promise((resolve) => {
    const p = execFile(cmd, args, { maxBuffer: 64 << 20, timeout: 8000 }, (err, out) => resolve(err ? '' : out));
    if (input !== undefined) p.stdin.end(input);
  });
}

function linreg(xs, ys) {
  const n = xs.length;
  if (n < 2) return { slope: NaN, n };
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (let i = 0; i < n; i += 1) { sxy += (xs[i] - mx) * (ys[i] - my); sxx += (xs[i] - mx) ** 2; }
  return { slope: sxx ? sxy / sxx : NaN, n };
}

async function parent() {
  const a = argsOf(process.argv.slice(2));
  const base = a.base;
  const secret = a.secret;
  const minutes = Number(a.minutes || 2);
  const nDevices = Number(a.devices || 5000);
  const procs = Number(a.procs || 3);
  const rate = Number(a.rate || 200);
  const serverPid = Number(a['server-pid']);
  const redisPort = a['redis-port'];
  const csvPath = a.csv || 'soak.csv';
  const summaryPath = a.summary || 'soak-summary.json';
  const ackShare = Number(a['ack-share'] || 0.5);
  const runId = crypto.randomBytes(3).toString('hex');
  const nUsers = Math.ceil(nDevices / 3);
  const log = (...x) => console.log(`[soak ${new Date().toISOString().slice(11, 19)}]`, ...x);

  /* users and their devices: device d0 in ack mode, d1 plain, d2 ack or
   * plain by user (so ~half of the devices ack) */
  const users = [];
  let ackDevices = 0;
  for (let i = 0; i < nUsers; i += 1) {
    const name = `soak-${runId}-${i}`;
    const devs = [0, 1, 2].map((k) => {
      const ack = k === 0 ? true : (k === 1 ? false : (Math.random() < (ackShare * 3 - 1)));
      if (ack) ackDevices += 1;
      return { id: `dev-${k}`, ack };
    });
    users.push({ name, devices: devs });
  }
  const tokenTtlS = minutes * 60 + 1800;
  const svcToken = token(secret, 'soak-producer', tokenTtlS, { role: 'service' });
  const commentToken = token(secret, `soak-${runId}-commenter`, tokenTtlS, { name: 'soak commenter' });

  /* children */
  const kids = [];
  for (let k = 0; k < procs; k += 1) {
    const mine = users.filter((_, i) => i % procs === k);
    const cfg = {
      base, secret, tokenTtlS, users: mine, localAddress: `127.0.0.${2 + k}`,
      dropMinS: 30, dropMaxS: 120, offMinS: 1, offMaxS: 10, rstShare: 0.25,
      actionEveryMs: Math.round((1000 / 5) * procs),
    };
    const c = fork(__filename, ['--child'], { env: { ...process.env, SOAK_CHILD: JSON.stringify(cfg) }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: ['--max-old-space-size=4096'] });
    c.waiters = { connected: [], stat: [], result: [] };
    c.on('message', (m) => { const w = (c.waiters[m.t] || []).shift(); if (w) w(m); });
    c.on('exit', (code, sig) => {
      c.dead = true;
      if (code || sig) console.log(`[soak] device process ${k} exited: code ${code} signal ${sig}`);
      for (const q of Object.values(c.waiters)) while (q.length) q.shift()({ t: 'dead', open: 0, r: null });
    });
    kids.push(c);
  }
  const ownerOf = new Map();
  users.forEach((u, i) => ownerOf.set(u.name, i % procs));
  const replyOf = { start: 'connected', stat: 'stat', finish: 'result' };
  const ask = (c, msg) => new Promise((resolve) => {
    if (c.dead || !c.connected) { resolve({ t: 'dead', open: 0, r: null }); return; }
    c.waiters[replyOf[msg.t]].push(resolve);
    c.send(msg);
  });

  const netErrors = {};
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const u = new URL(base);
  function request(method, p, body, tok, timeoutMs = 15000) {
    return new Promise((resolve) => {
      const data = body === undefined ? null : Buffer.from(JSON.stringify(body));
      const headers = { 'Content-Type': 'application/json' };
      if (tok) headers.Authorization = `Bearer ${tok}`;
      if (data) headers['Content-Length'] = data.length;
      const req = http.request({ host: u.hostname, port: u.port, method, path: p, headers, agent, localAddress: '127.0.0.1' }, (res) => {
        const chunks = [];
        res.on('data', (x) => chunks.push(x));
        res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
        res.on('error', () => resolve({ status: 'net' }));
      });
      req.setTimeout(timeoutMs, () => req.destroy(new Error('timeout')));
      req.on('error', (e) => {
        const why = e.code || e.message;
        netErrors[why] = (netErrors[why] || 0) + 1;
        resolve({ status: 'net', why });
      });
      if (data) req.write(data);
      req.end();
    });
  }

  /* ---- sampler ---- */
  const csv = fs.openSync(csvPath, 'w');
  fs.writeSync(csv, 'time,elapsed_s,sup_rss_kb,w1_rss_kb,w2_rss_kb,workers_rss_kb,total_rss_kb,sup_fds,w1_fds,w2_fds,total_fds,worker_pids,redis_used_memory,redis_keys,queue_keys,queue_len_sum,server_connections,driver_open,posted_201,load1\n');
  const samples = [];
  const t0 = Date.now();
  let posted201 = 0;
  async function sample() {
    const sup = readProc(serverPid);
    const ws = childPids(serverPid);
    const w = ws.map(readProc);
    const wRss = w.reduce((s, x) => s + (x.rss || 0), 0);
    const wFds = w.reduce((s, x) => s + (x.fds || 0), 0);
    const info = await sh('redis-cli', ['-p', redisPort, 'INFO', 'memory']);
    const mm = /used_memory:(\d+)/.exec(info);
    const dbsize = Number((await sh('redis-cli', ['-p', redisPort, 'DBSIZE'])).trim()) || '';
    const keys = (await sh('redis-cli', ['-p', redisPort, '--scan', '--pattern', 'q:*'])).split('\n').filter(Boolean).slice(0, 50000);
    let qsum = 0;
    if (keys.length) {
      const out = await sh('redis-cli', ['-p', redisPort], keys.map((k) => `XLEN "${k}"`).join('\n') + '\n');
      for (const l of out.split('\n')) { const n = Number(l.replace(/^\(integer\) /, '')); if (Number.isFinite(n) && l.trim()) qsum += n; }
    }
    let sc = '';
    const r = await request('GET', '/api/v1/websocket/connections', undefined, null, 5000);
    try { sc = JSON.parse(r.body).connectionCount; } catch { sc = ''; }
    let open = 0;
    for (const c of kids) {
      if (!c.connected) continue;
      const s = await ask(c, { t: 'stat' });
      open += s.open;
    }
    const load1 = fs.readFileSync('/proc/loadavg', 'utf8').split(' ')[0];
    const row = {
      time: new Date().toISOString(), el: Math.round((Date.now() - t0) / 1000),
      supRss: sup.rss, w1: w[0] ? w[0].rss : '', w2: w[1] ? w[1].rss : '', wRss, total: (sup.rss || 0) + wRss,
      supFds: sup.fds, f1: w[0] ? w[0].fds : '', f2: w[1] ? w[1].fds : '', fds: (sup.fds || 0) + wFds,
      pids: ws.join(' '), redisMem: mm ? Number(mm[1]) : '', dbsize, qkeys: keys.length, qsum, sc, open, posted201, load1,
    };
    samples.push(row);
    fs.writeSync(csv, `${row.time},${row.el},${row.supRss},${row.w1},${row.w2},${row.wRss},${row.total},${row.supFds},${row.f1},${row.f2},${row.fds},${row.pids},${row.redisMem},${row.dbsize},${row.qkeys},${row.qsum},${row.sc},${row.open},${row.posted201},${row.load1}\n`);
    log(`t=${row.el}s rss=${(row.total / 1024).toFixed(1)}MB (w ${row.w1}/${row.w2} kB) fds=${row.fds} redis=${(row.redisMem / 1048576).toFixed(1)}MB/${row.dbsize}keys qkeys=${row.qkeys} qlen=${row.qsum} conns=${row.sc} open=${row.open} posted=${posted201} load=${load1}`);
  }

  /* ---- connect ---- */
  log(`${nUsers} users, ${nUsers * 3} devices (${ackDevices} ack, ${nUsers * 3 - ackDevices} plain) in ${procs} processes; ${minutes} min at ${rate}/s`);
  await sample();
  const tc = Date.now();
  const opened = await Promise.all(kids.map((c) => ask(c, { t: 'start' })));
  log(`connected ${opened.reduce((s, x) => s + x.open, 0)} devices in ${((Date.now() - tc) / 1000).toFixed(1)} s`);
  for (const c of kids) c.send({ t: 'churn' });

  /* ---- producers ---- */
  const post = { sent: 0, status: {}, inFlight: 0, skipped: 0, lat: [] };
  const maybe = []; /* unanswered posts: [user, nid] */
  const outbox = kids.map(() => []);
  const flushOutbox = () => {
    outbox.forEach((items, k) => {
      if (items.length && kids[k].connected) { kids[k].send({ t: 'n', items: items.splice(0) }); }
    });
  };
  const obTimer = setInterval(flushOutbox, 100);
  let seq = 0;
  function postOne() {
    seq += 1;
    const user = users[Math.floor(Math.random() * users.length)].name;
    const nid = crypto.randomUUID();
    const at = Date.now();
    post.sent += 1;
    post.inFlight += 1;
    request('POST', '/api/v1/notifications', { id: nid, user_id: user, app_name: 'soak', title: `soak ${seq}`, body: `soak notification ${seq}` }, svcToken)
      .then((r) => {
        post.inFlight -= 1;
        post.status[r.status] = (post.status[r.status] || 0) + 1;
        const done = Date.now();
        if (post.lat.length < 200000) post.lat.push(done - at);
        if (r.status === 201) {
          posted201 += 1;
          outbox[ownerOf.get(user)].push([user, nid, at, done]);
        } else if (r.status === 'net' || r.status >= 500) {
          maybe.push([user, nid]);
        }
      });
  }
  const every = 1000 / rate;
  const tp = Date.now();
  let fired = 0;
  const prodTimer = setInterval(() => {
    const owed = Math.floor((Date.now() - tp) / every) - fired;
    for (let i = 0; i < owed; i += 1) {
      fired += 1;
      if (post.inFlight >= 400) { post.skipped += 1; continue; }
      postOne();
    }
  }, 10);

  const bc = { sent: 0, status: {} };
  let bseq = 0;
  const bTimer = setInterval(async () => {
    bseq += 1;
    bc.sent += 1;
    const r = await request('POST', '/api/v1/broadcast', { type: 'soak.tick', data: { seq: bseq } }, svcToken);
    bc.status[r.status] = (bc.status[r.status] || 0) + 1;
  }, 1000);
  const cm = { sent: 0, status: {} };
  let cseq = 0;
  const cTimer = setInterval(async () => {
    cseq += 1;
    cm.sent += 1;
    const r = await request('POST', `/api/v1/notes/soak-${runId}-note-${cseq % 20}/comments`, { content: `soak comment ${cseq}` }, commentToken);
    cm.status[r.status] = (cm.status[r.status] || 0) + 1;
  }, 2000);

  const sTimer = setInterval(() => { sample().catch((e) => log('sample failed', e.message)); }, 10000);
  const endAt = tp + minutes * 60000;
  let stopping = false;
  const stop = () => { stopping = true; };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  while (Date.now() < endAt && !stopping) await sleep(250);

  /* ---- finish ---- */
  clearInterval(prodTimer);
  clearInterval(bTimer);
  clearInterval(cTimer);
  const runS = (Date.now() - tp) / 1000;
  log(`producers stopped after ${runS.toFixed(0)} s; waiting for ${post.inFlight} answers`);
  for (let i = 0; i < 200 && post.inFlight > 0; i += 1) await sleep(100);
  flushOutbox();
  clearInterval(obTimer);
  await sleep(300);
  clearInterval(sTimer);
  await sample();
  log('final drain: every device connected again');
  const got = await Promise.all(kids.map((c) => ask(c, { t: 'finish' })));
  const deadKids = got.filter((x) => !x.r).length;
  if (deadKids) log(`${deadKids} device process(es) died before reporting: their devices are not counted`);
  const results = got.filter((x) => x.r);
  for (const c of kids) c.send({ t: 'exit' });
  await sleep(3000);
  await sample();
  /* what is still queued after the drain (every device was connected and
   * then closed normally): device, length, first and last entry id */
  const leftover = [];
  {
    const keys = (await sh('redis-cli', ['-p', redisPort, '--scan', '--pattern', 'q:*'])).split('\n').filter(Boolean);
    const lens = (await sh('redis-cli', ['-p', redisPort], keys.map((k) => `XLEN "${k}"`).join('\n') + '\n')).split('\n');
    keys.forEach((k, i) => { const n = Number(String(lens[i]).replace(/^\(integer\) /, '')); if (n > 0) leftover.push({ key: k, len: n }); });
    for (const l of leftover.slice(0, 20)) {
      const m = /^q:\{(.*)\}:(.*)$/.exec(l.key);
      const u = m && users.find((x) => x.name === m[1]);
      const d = u && u.devices.find((x) => x.id === m[2]);
      l.ack = d ? d.ack : null;
      l.entries = (await sh('redis-cli', ['-p', redisPort, '--no-raw', 'XRANGE', l.key, '-', '+', 'COUNT', '3'])).split('\n').filter((x) => /\d+-\d+/.test(x)).slice(0, 3).map((x) => x.replace(/^.*"(\d+-\d+)".*$/, '$1'));
    }
  }
  if (leftover.length) log(`after the drain ${leftover.length} queue(s) still hold entries: ${JSON.stringify(leftover.slice(0, 8))}`);

  /* ---- figures ---- */
  const sum = (objs) => {
    const o = {};
    for (const x of objs) for (const [k, v] of Object.entries(x)) o[k] = (o[k] || 0) + v;
    return o;
  };
  const ack = sum(results.map((r) => r.r.fig.ack));
  const plain = sum(results.map((r) => r.r.fig.plain));
  const st = {};
  for (const r of results) {
    for (const [k, v] of Object.entries(r.r.stats)) {
      if (typeof v === 'number') st[k] = (st[k] || 0) + v;
      else if (Array.isArray(v)) st[k] = (st[k] || []).concat(v);
      else { st[k] = st[k] || {}; for (const [kk, vv] of Object.entries(v)) st[k][kk] = (st[k][kk] || 0) + vv; }
    }
  }
  const maybeSet = new Set(maybe.map((m) => m[1]));
  const unexpectedUnexplained = (st.unexpectedKeys || []).filter((k) => !maybeSet.has(k)).length;
  const lat = post.lat.slice().sort((x, y) => x - y);
  const pct = (p) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] : null);

  const lastWin = Math.min(20 * 60, minutes * 60);
  const runSamples = samples.slice(1, -1); /* without the pre-connect and post-drain rows */
  const endEl = runSamples.length ? runSamples[runSamples.length - 1].el : 0;
  const win = runSamples.filter((s) => s.el >= endEl - lastWin);
  const rssReg = linreg(win.map((s) => s.el / 60), win.map((s) => s.total / 1024));
  const wRssReg = linreg(win.map((s) => s.el / 60), win.map((s) => s.wRss / 1024));
  const fdReg = linreg(win.map((s) => s.el / 60), win.map((s) => s.fds));
  const fdNetReg = linreg(win.map((s) => s.el / 60), win.map((s) => s.fds - (Number(s.sc) || 0)));
  const first = runSamples[0] || samples[0];
  const last = runSamples[runSamples.length - 1] || samples[samples.length - 1];
  const summary = {
    runId, started: new Date(t0).toISOString(), ended: new Date().toISOString(), minutes, runS,
    users: nUsers, devices: nUsers * 3, ackDevices, plainDevices: nUsers * 3 - ackDevices, procs, rate,
    deadDeviceProcesses: deadKids, leftoverQueues: leftover.slice(0, 50), leftoverQueueCount: leftover.length, netErrors, posts: { ...post, lat: undefined, p50: pct(0.5), p99: pct(0.99), max: lat[lat.length - 1], maybe: maybe.length },
    broadcasts: bc, comments: cm, ack, plain, stats: { ...st, unexpectedKeys: undefined },
    rateLimitedCtx: st.rateLimitedCtx, unexpectedUnexplained,
    drainMs: results.map((r) => r.r.drainMs), lostSamples: results.flatMap((r) => r.r.lostSamples).slice(0, 20),
    rss: {
      startKB: first.total, endKB: last.total, minKB: Math.min(...runSamples.map((s) => s.total)), maxKB: Math.max(...runSamples.map((s) => s.total)),
      windowMin: lastWin / 60, slopeMBperMin: rssReg.slope, workersSlopeMBperMin: wRssReg.slope, samples: rssReg.n,
    },
    fds: { slopeMinusConnectionsPerMin: fdNetReg.slope, start: first.fds, end: last.fds, min: Math.min(...runSamples.map((s) => s.fds)), max: Math.max(...runSamples.map((s) => s.fds)), slopePerMin: fdReg.slope },
    redis: { startBytes: first.redisMem, endBytes: last.redisMem, maxBytes: Math.max(...runSamples.map((s) => s.redisMem || 0)), afterDrainBytes: samples[samples.length - 1].redisMem },
    queues: { maxLenSum: Math.max(...runSamples.map((s) => s.qsum)), endLenSum: last.qsum, afterDrainLenSum: samples[samples.length - 1].qsum, keys: last.qkeys },
    load1: { min: Math.min(...runSamples.map((s) => Number(s.load1))), max: Math.max(...runSamples.map((s) => Number(s.load1))), mean: runSamples.reduce((x, s) => x + Number(s.load1), 0) / Math.max(1, runSamples.length) },
  };
  fs.writeFileSync(summaryPath, `${JSON.stringify(summary, null, 2)}\n`);
  fs.closeSync(csv);

  log('=== SOAK FIGURES ===');
  log(`posts: ${post.sent} sent, status ${JSON.stringify(post.status)}, skipped ${post.skipped}; POST p50 ${pct(0.5)} ms p99 ${pct(0.99)} ms max ${lat[lat.length - 1]} ms; HTTP errors without an answer ${JSON.stringify(netErrors)}`);
  log(`broadcasts ${JSON.stringify(bc.status)}; comments ${JSON.stringify(cm.status)}; actions sent ${st.actionsSent} ok ${st.actionsOk} err ${JSON.stringify(st.actionsErr)} unanswered ${st.unansweredActions}`);
  log(`ack mode (${ack.devices} devices): expected ${ack.expected}, deliveries ${ack.deliveries}, lost ${ack.lost} (syncs ${ack.lostSync}), doubled ${ack.doubled} (queued twice ${ack.doubledQueuedTwice}, in one connection ${ack.doubledInConn}, after a confirmed ack ${ack.doubledAfterAck}), replayed ${ack.replayed}, out of order ${ack.disorder}, sync to source ${ack.syncToSource}`);
  log(`plain mode (${plain.devices} devices): expected ${plain.expected}, deliveries ${plain.deliveries}, lost ${plain.lost} (syncs ${plain.lostSync}) + at a RST ${plain.lostAtRst} (syncs ${plain.lostSyncAtRst}), doubled ${plain.doubled} (queued twice ${plain.doubledQueuedTwice}, in one connection ${plain.doubledInConn}), replayed ${plain.replayed}, out of order ${plain.disorder}, sync to source ${plain.syncToSource}`);
  log(`connects ${st.connects}, connect failures ${st.connectFailures}, normal drops ${st.graceful}, RSTs ${st.rsts}, server-side closes ${JSON.stringify(st.unexpectedCloses)}, queue_overflow ${st.overflow}, errors ${JSON.stringify(st.errors)}, unexpected notifications ${st.unexpected} (unexplained ${unexpectedUnexplained})`);
  log(`ticks received ${st.ticks}, comment.created ${st.comments}, device_status ${st.deviceStatus}; drain ${summary.drainMs.join('/')} ms`);
  log(`RSS (supervisor + workers) start ${(first.total / 1024).toFixed(1)} MB end ${(last.total / 1024).toFixed(1)} MB; slope over the last ${lastWin / 60} min ${rssReg.slope.toFixed(3)} MB/min (workers ${wRssReg.slope.toFixed(3)}), n=${rssReg.n}`);
  log(`fds start ${first.fds} end ${last.fds}; slope ${fdReg.slope.toFixed(2)} /min; fds minus open WebSockets: slope ${fdNetReg.slope.toFixed(2)} /min`);
  log(`redis used_memory start ${(first.redisMem / 1048576).toFixed(1)} MB end ${(last.redisMem / 1048576).toFixed(1)} MB max ${(summary.redis.maxBytes / 1048576).toFixed(1)} MB; queue length sum max ${summary.queues.maxLenSum} end ${last.qsum} after drain ${summary.queues.afterDrainLenSum}`);
  if (st.rateLimitedCtx && st.rateLimitedCtx.length) log('rate_limited replies (device: messages it sent in the last 1 s / 5 s):', JSON.stringify(st.rateLimitedCtx.slice(0, 8)));
  if (summary.lostSamples.length) log('lost samples:', JSON.stringify(summary.lostSamples.slice(0, 5)));
  const bad = (ack.lost || 0) + (ack.doubled || 0) + deadKids;
  log(bad ? `FAIL: ack mode lost ${ack.lost}, doubled ${ack.doubled}` : 'OK: ack mode 0 lost, 0 doubled');
  agent.destroy();
  process.exit(bad ? 1 : 0);
}

process.on('exit', (code) => { if (code) console.log(`[soak] ${process.argv.includes('--child') ? 'device process' : 'driver'} exits with ${code}`); });
if (process.argv.includes('--child')) child();
else parent().catch((e) => { console.error(e); process.exit(2); });
