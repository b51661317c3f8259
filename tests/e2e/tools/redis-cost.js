'use strict';
/*
 * redis-cost.js -- what Redis sees per notification and per broadcast
 * (issue 5): commands (in total and by name), bytes in and bytes out, on a
 * small loopback run of three notisyncd instances that share one private
 * Redis + PostgreSQL (scripts/services in a temp directory).
 *
 * Usually run through scripts/redis-cost, which picks the binary.  By hand:
 *
 *   NS_BIN=build-release/notisyncd node tests/e2e/tools/redis-cost.js \
 *     [--out FILE] [--count N] [--batch N] [--idle S] [--only a,b,...]
 *     [--no-monitor] [--settle MS] [--keep-logs]
 *
 * Scenarios (a new user for each; every POST is awaited before the next):
 *   a  N single POST /api/v1/notifications, 3 devices online, one per instance
 *   b  the same with the 3 devices registered but offline (queue only)
 *   c  the same with 3 devices in ack mode (?ack=1) that ack every message
 *   d  N/B x POST /api/v1/notifications/batch of B (--batch), 3 devices online
 *   e  N POST /api/v1/broadcast (service token), 3 public listeners
 *   f  idle: S seconds with nothing posted (the background of 3 instances)
 *
 * Measurement: `CONFIG RESETSTAT` opens a window, one `INFO commandstats
 * stats` closes it.  Our own connection's part (the RESETSTAT and INFO
 * commands, their bytes) is subtracted exactly: we count what we send and
 * receive; a calibration on the idle Redis checks that this leaves 0.  The
 * instances' background work (canary PUBLISH every 2 s, liveness, stats)
 * lands in every window too: the idle rate (f, measured before and after
 * the scenarios, both windows together) times the window's duration is
 * subtracted, per command and for the byte counters.
 *
 * A second pass (off with --no-monitor) repeats every scenario with a Redis
 * MONITOR connection to split each command into top-level calls (network
 * round trips) and calls made from inside Lua scripts; INFO counts both
 * alike.  MONITOR adds its own output bytes, so bytes come from pass 1 only.
 *
 * Every process started here (Redis, PostgreSQL, 3 x notisyncd) is stopped
 * by PID at the end, also on error or Ctrl-C.
 */

function reexecQuietly() {
  if (process.execArgv.some((a) => a.startsWith('--test-reporter-destination'))) return false;
  const { spawn } = require('node:child_process');
  const child = spawn(process.execPath, [
    '--test-reporter=tap', '--test-reporter-destination=/dev/null',
    ...process.execArgv, __filename, ...process.argv.slice(2),
  ], { stdio: 'inherit' });
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => child.kill(sig));
  child.on('exit', (code, sig) => process.exit(code === null ? (sig === 'SIGINT' ? 130 : 1) : code));
  return true;
}

const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
let h; /* ../lib/harness, loaded in main() (see reexecQuietly) */

const SANITIZER_RE = /ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: UndefinedBehaviorSanitizer/;
const INSTANCES = 3;
const DELIVERY_TIMEOUT_MS = 120000;

function log(msg) {
  process.stderr.write(`redis-cost: ${msg}\n`);
}

/* ------------------------------------------------------------ arguments */

function usage(code) {
  const text = fs.readFileSync(__filename, 'utf8').split('\n').slice(2, 36)
    .map((l) => l.replace(/^ \*\/?/, '').replace(/^ /, '')).join('\n');
  (code ? process.stderr : process.stdout).write(`${text}\n`);
  process.exit(code);
}

function parseArgs(argv) {
  const o = {
    out: null, count: 200, batch: 100, idleS: 10, only: 'abcdef', monitor: true,
    settleMs: 500, keepLogs: false,
  };
  const num = (v, name, min, max) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) {
      log(`${name}: expected an integer ${min}..${max}, got '${v}'`);
      process.exit(2);
    }
    return n;
  };
  for (let i = 0; i < argv.length; i += 1) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) {
        log(`${a} needs a value`);
        process.exit(2);
      }
      i += 1;
      return argv[i];
    };
    switch (a) {
      case '--out': o.out = val(); break;
      case '--count': o.count = num(val(), a, 2, 100000); break;
      case '--batch': o.batch = num(val(), a, 1, 500); break;
      case '--idle': o.idleS = num(val(), a, 2, 600); break;
      case '--settle': o.settleMs = num(val(), a, 0, 10000); break;
      case '--only': o.only = val().replace(/[,\s]/g, ''); break;
      case '--no-monitor': o.monitor = false; break;
      case '--keep-logs': o.keepLogs = true; break;
      case '-h': case '--help': usage(0); break;
      default:
        log(`unknown argument '${a}' (see --help)`);
        process.exit(2);
    }
  }
  if (!/^[a-f]+$/.test(o.only)) {
    log(`--only: letters a-f, got '${o.only}'`);
    process.exit(2);
  }
  return o;
}

/* ---------------------------------------------------------------- RESP */

/* Parses one RESP2 reply from `buf` at `pos`: {value, end} or null when
 * the buffer does not hold all of it yet.  Errors become Error objects. */
function parseReply(buf, pos) {
  const nl = buf.indexOf('\r\n', pos);
  if (nl < 0) return null;
  const type = String.fromCharCode(buf[pos]);
  const line = buf.toString('utf8', pos + 1, nl);
  const after = nl + 2;
  switch (type) {
    case '+': return { value: line, end: after };
    case '-': return { value: new Error(line), end: after };
    case ':': return { value: Number(line), end: after };
    case '$': {
      const n = Number(line);
      if (n < 0) return { value: null, end: after };
      if (buf.length < after + n + 2) return null;
      return { value: buf.toString('utf8', after, after + n), end: after + n + 2 };
    }
    case '*': {
      const n = Number(line);
      if (n < 0) return { value: null, end: after };
      const arr = [];
      let p = after;
      for (let i = 0; i < n; i += 1) {
        const r = parseReply(buf, p);
        if (!r) return null;
        arr.push(r.value);
        p = r.end;
      }
      return { value: arr, end: p };
    }
    default:
      throw new Error(`RESP: unexpected type byte ${JSON.stringify(type)}`);
  }
}

function encodeCommand(args) {
  const parts = [`*${args.length}\r\n`];
  for (const a of args) {
    const s = String(a);
    parts.push(`$${Buffer.byteLength(s)}\r\n${s}\r\n`);
  }
  return Buffer.from(parts.join(''));
}

/* A plain Redis connection that counts every byte it sends and receives
 * (so that its own share of Redis's counters can be taken out exactly).
 * In monitor mode every pushed line goes to `onPush`. */
class RespConn {
  constructor(port) {
    this.port = port;
    this.sent = 0;
    this.recv = 0;
    this.buf = Buffer.alloc(0);
    this.pending = [];
    this.onPush = null;
    this.closed = false;
  }

  connect(timeoutMs = 5000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`redis 127.0.0.1:${this.port}: connect timed out`)), timeoutMs);
      this.sock = net.connect({ host: '127.0.0.1', port: this.port }, () => {
        clearTimeout(timer);
        this.sock.setNoDelay(true);
        resolve(this);
      });
      this.sock.on('error', (e) => {
        clearTimeout(timer);
        this.fail(e);
        reject(e);
      });
      this.sock.on('close', () => {
        this.closed = true;
        this.fail(new Error('redis connection closed'));
      });
      this.sock.on('data', (d) => this.onData(d));
    });
  }

  fail(e) {
    const p = this.pending;
    this.pending = [];
    for (const w of p) w.reject(e);
  }

  onData(d) {
    this.recv += d.length;
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    let pos = 0;
    for (;;) {
      const r = parseReply(this.buf, pos);
      if (!r) break;
      pos = r.end;
      const w = this.pending.shift();
      if (w) {
        w.recvAtReply = this.recv;
        if (r.value instanceof Error) w.reject(r.value);
        else w.resolve(r.value);
      } else if (this.onPush) {
        this.onPush(r.value);
      }
    }
    this.buf = pos >= this.buf.length ? Buffer.alloc(0) : this.buf.subarray(pos);
  }

  /* Sends one command; resolves with the reply (bounded). */
  cmd(args, timeoutMs = 10000) {
    return new Promise((resolve, reject) => {
      const data = encodeCommand(args);
      let timer = null;
      const w = {
        resolve: (v) => { clearTimeout(timer); resolve(v); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      };
      timer = setTimeout(() => {
        const i = this.pending.indexOf(w);
        if (i >= 0) this.pending.splice(i, 1);
        reject(new Error(`redis ${args[0]}: no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.push(w);
      this.sent += data.length;
      this.sock.write(data);
    });
  }

  close() {
    if (this.sock && !this.closed) this.sock.destroy();
  }
}

/* ---------------------------------------------------- Redis statistics */

/* {stats: {total_commands_processed, ...}, cmds: {name: {calls, failed}}}
 * from the text of INFO commandstats stats. */
function parseInfo(text) {
  const stats = {};
  const cmds = {};
  for (const line of text.split('\r\n')) {
    let m = /^cmdstat_([^:]+):calls=(\d+).*?(?:,rejected_calls=(\d+),failed_calls=(\d+))?$/.exec(line);
    if (m) {
      cmds[m[1]] = { calls: Number(m[2]), failed: Number(m[3] || 0) + Number(m[4] || 0) };
      continue;
    }
    m = /^([a-z_]+):(\d+)$/.exec(line);
    if (m) stats[m[1]] = Number(m[2]);
  }
  return { stats, cmds };
}

/* Our own commands, taken out of every window. */
const OWN_CMDS = new Set(['config|resetstat', 'info']);

/* Opens a counting window on connection `rc`; returns a function that
 * closes it and resolves {ms, commands, bytesIn, bytesOut, byCmd, failed}
 * with our own connection's share removed (failed: command name -> its
 * failed + rejected calls). */
async function openWindow(rc) {
  const sent0 = rc.sent;
  const recv0 = rc.recv;
  await rc.cmd(['CONFIG', 'RESETSTAT']);
  const t0 = process.hrtime.bigint();
  return async () => {
    const recvBefore = rc.recv;
    const text = await rc.cmd(['INFO', 'commandstats', 'stats']);
    const t1 = process.hrtime.bigint();
    const { stats, cmds } = parseInfo(text);
    for (const k of ['total_commands_processed', 'total_net_input_bytes', 'total_net_output_bytes']) {
      if (!(k in stats)) throw new Error(`INFO stats has no ${k}`);
    }
    /* Redis counted: the input of every command we sent after RESETSTAT was
     * read (the closing INFO included; RESETSTAT's own input was counted
     * before the reset), and every reply byte written before INFO ran
     * (RESETSTAT's +OK included).  RESETSTAT and every INFO before the
     * closing one count as commands. */
    const resetCmd = encodeCommand(['CONFIG', 'RESETSTAT']).length;
    const ownIn = (rc.sent - sent0) - resetCmd;
    const ownOut = recvBefore - recv0;
    let ownCmds = 0;
    const byCmd = {};
    const failed = {};
    for (const [name, v] of Object.entries(cmds)) {
      if (OWN_CMDS.has(name)) {
        ownCmds += v.calls;
        continue;
      }
      byCmd[name] = v.calls;
      if (v.failed) failed[name] = v.failed;
    }
    return {
      ms: Number(t1 - t0) / 1e6,
      commands: stats.total_commands_processed - ownCmds,
      bytesIn: stats.total_net_input_bytes - ownIn,
      bytesOut: stats.total_net_output_bytes - ownOut,
      byCmd,
      failed,
    };
  };
}

/* --------------------------------------------------------- MONITOR pass */

const CONTAINER_CMDS = new Set(['script', 'client', 'config', 'xinfo', 'xgroup', 'object', 'function',
  'pubsub', 'memory', 'command', 'cluster', 'acl', 'latency', 'module', 'slowlog']);

const MONITOR_RE = /^\d+\.\d+ \[\d+ ([^\]]+)\] "((?:[^"\\]|\\.)*)"(?: "((?:[^"\\]|\\.)*)")?/;

/* A MONITOR connection that counts commands per name, split into
 * top-level calls and calls from Lua, between two ECHO markers that the
 * control connection sends. */
class Monitor {
  constructor(port) {
    this.conn = new RespConn(port);
    this.active = null;   // {mark, counts} while a window is open
    this.waitMark = null; // {mark, resolve}
    this.bad = 0;
  }

  async start() {
    await this.conn.connect();
    await this.conn.cmd(['MONITOR']);
    this.conn.onPush = (line) => this.onLine(line);
  }

  onLine(line) {
    if (typeof line !== 'string') return;
    const m = MONITOR_RE.exec(line);
    if (!m) {
      this.bad += 1;
      return;
    }
    const who = m[1];
    let name = m[2].toLowerCase();
    if (name === 'echo' && m[3] && m[3].startsWith('redis-cost-mark-')) {
      if (this.waitMark && this.waitMark.mark === m[3]) {
        const w = this.waitMark;
        this.waitMark = null;
        w.resolve();
      }
      return;
    }
    if (!this.active) return;
    if (CONTAINER_CMDS.has(name) && m[3]) name = `${name}|${m[3].toLowerCase()}`;
    const c = this.active.counts[name] || (this.active.counts[name] = { top: 0, lua: 0 });
    if (who === 'lua') {
      c.lua += 1;
    } else {
      c.top += 1;
      /* MONITOR shows arguments escaped (\n, \", \xHH): count raw bytes */
      if (name === 'eval' && m[3]) this.active.luaSrc += Buffer.byteLength(m[3].replace(/\\x[0-9a-fA-F]{2}|\\./g, '_'));
    }
  }

  /* Sends an ECHO marker on `rc` and waits until MONITOR has shown it. */
  async mark(rc) {
    const mark = `redis-cost-mark-${crypto.randomBytes(6).toString('hex')}`;
    const seen = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('MONITOR did not show our marker within 10 s')), 10000);
      this.waitMark = { mark, resolve: () => { clearTimeout(timer); resolve(); } };
    });
    await rc.cmd(['ECHO', mark]);
    await seen;
  }

  async open(rc) {
    await this.mark(rc);
    this.active = { counts: {}, luaSrc: 0 };
    const t0 = process.hrtime.bigint();
    return async () => {
      await this.mark(rc);
      const w = this.active;
      this.active = null;
      return { ms: Number(process.hrtime.bigint() - t0) / 1e6, counts: w.counts, luaSrc: w.luaSrc };
    };
  }

  close() {
    this.conn.close();
  }
}

/* -------------------------------------------------------------- helpers */

async function settle(ms) {
  if (ms > 0) await h.sleep(ms);
}

/* Waits until every client has received `n` messages matching `pred`. */
async function waitAll(clients, n, pred, what) {
  const count = (c) => c.frames.reduce((k, f) => k + (f.msg && pred(f.msg) ? 1 : 0), 0);
  await h.until(() => clients.every((c) => count(c) >= n), {
    timeoutMs: DELIVERY_TIMEOUT_MS, intervalMs: 20,
    what: `${what} (got ${clients.map(count).join('/')} of ${n})`,
  });
  return clients.map(count);
}

/* The devices of `user` as GET /api/v1/devices reports them. */
async function devicesOf(srv, user) {
  const r = await srv.http('GET', '/api/v1/devices', { token: srv.token(user) });
  if (r.status !== 200 || !r.json || !Array.isArray(r.json.devices)) {
    throw new Error(`GET /api/v1/devices: ${r.status} ${r.text}`);
  }
  return r.json.devices;
}

function expectStatus(r, want, what) {
  if (r.status !== want) throw new Error(`${what}: HTTP ${r.status} ${r.text}`);
}

/* ------------------------------------------------------------ scenarios */

/* Each scenario: prepare() (outside the window) returns a context; run(ctx)
 * is measured; check(ctx) (outside the window) returns a sanity line;
 * cleanup(ctx) closes its clients.  `per` lists the divisors. */
function scenarios(opt, servers) {
  const N = opt.count;
  const nBatches = Math.max(1, Math.round(N / opt.batch));
  const perBatch = opt.batch;
  const tag = () => crypto.randomBytes(4).toString('hex');

  const devicesOnline = async (user, params = {}) => {
    const cs = [];
    for (let i = 0; i < INSTANCES; i += 1) {
      cs.push(await servers[i].device(user, `dev${i + 1}`, { params, label: `${user}/dev${i + 1}@s${i + 1}` }));
    }
    return cs;
  };
  const closeAll = async (cs) => {
    for (const c of cs) await c.close();
  };
  const postSingles = async (ctx) => {
    for (let i = 0; i < N; i += 1) {
      const id = h.newId();
      ctx.ids.add(id);
      const r = await h.postNotification(servers[i % INSTANCES], ctx.user, { id });
      expectStatus(r, 201, `POST /api/v1/notifications #${i + 1}`);
    }
  };
  const waitNotifs = (ctx) => waitAll(ctx.clients, N, (m) => m.type === 'new_notification' && m.data && ctx.ids.has(m.data.id),
    'every device to receive every notification');
  const queuedLine = async (ctx) => {
    const devs = await devicesOf(servers[0], ctx.user);
    return `queued after the window (GET /api/v1/devices): ${devs.map((d) => `${d.device_id}=${d.queued}`).join(', ')}`;
  };
  const onlineCheck = async (ctx) => {
    const counts = ctx.received;
    return `received by each device: ${counts.join(' / ')} of ${N}; ${await queuedLine(ctx)}`;
  };

  const notifPer = [{ label: 'per notification', n: N }];

  return {
    a: {
      title: `a. notification, 3 devices online (one per instance)`,
      what: `${N} × \`POST /api/v1/notifications\` one after another (round-robin over the 3 instances, each awaited), `
        + 'no source device: all 3 devices are targets; the window ends when every device has every notification',
      per: notifPer,
      prepare: async () => {
        const user = h.uid('cost-a');
        return { user, ids: new Set(), clients: await devicesOnline(user) };
      },
      run: async (ctx) => {
        await postSingles(ctx);
        ctx.received = await waitNotifs(ctx);
      },
      check: onlineCheck,
      cleanup: (ctx) => closeAll(ctx.clients),
    },
    b: {
      title: 'b. notification, 3 devices offline (queue only)',
      what: `${N} × \`POST /api/v1/notifications\` for a user whose 3 devices were registered (connected once, one per `
        + 'instance) and are now offline',
      per: notifPer,
      prepare: async () => {
        const user = h.uid('cost-b');
        const cs = await devicesOnline(user);
        await closeAll(cs);
        await h.until(async () => {
          const devs = await devicesOf(servers[0], user);
          return devs.length === INSTANCES && devs.every((d) => d.status === 'offline');
        }, { timeoutMs: 15000, what: 'the 3 devices to be offline' });
        return { user, ids: new Set(), clients: [] };
      },
      run: postSingles,
      check: async (ctx) => {
        const devs = await devicesOf(servers[0], ctx.user);
        const line = await queuedLine(ctx);
        const ok = devs.every((d) => d.status === 'offline' && d.queued === N);
        return `${line}${ok ? ` (all ${N}, as expected)` : ` (EXPECTED ${N} each, offline)`}`;
      },
      cleanup: async () => {},
    },
    c: {
      title: 'c. notification, 3 devices online in ack mode (`?ack=1`, every message acked)',
      what: `${N} × \`POST /api/v1/notifications\` as in a; each device connected with \`ack=1\` acks every durable `
        + 'message as soon as it arrives (one cumulative `ack` each); the window ends when every device has every '
        + 'notification and then the settle time has passed (acks and their trims land in the window)',
      per: notifPer,
      prepare: async () => {
        const user = h.uid('cost-c');
        const clients = await devicesOnline(user, { ack: 1 });
        const stops = clients.map((c) => h.autoAck(c));
        return { user, ids: new Set(), clients, stops };
      },
      run: async (ctx) => {
        await postSingles(ctx);
        ctx.received = await waitNotifs(ctx);
      },
      check: onlineCheck,
      cleanup: async (ctx) => {
        for (const s of ctx.stops) s();
        await closeAll(ctx.clients);
      },
    },
    d: {
      title: `d. batch: ${nBatches} × \`POST /api/v1/notifications/batch\` of ${perBatch}, 3 devices online`,
      what: `${nBatches} batch requests of ${perBatch} notifications each (round-robin over the instances, each awaited), `
        + 'all 3 devices online, one per instance; the window ends when every device has every notification',
      per: [{ label: 'per notification', n: nBatches * perBatch }, { label: 'per request', n: nBatches }],
      prepare: async () => {
        const user = h.uid('cost-d');
        return { user, ids: new Set(), clients: await devicesOnline(user) };
      },
      run: async (ctx) => {
        for (let b = 0; b < nBatches; b += 1) {
          const items = [];
          for (let i = 0; i < perBatch; i += 1) {
            const id = h.newId();
            ctx.ids.add(id);
            items.push(h.notificationBody({ id }));
          }
          const r = await h.postBatch(servers[b % INSTANCES], ctx.user, items, { timeoutMs: 60000 });
          expectStatus(r, 201, `POST /api/v1/notifications/batch #${b + 1}`);
        }
        ctx.received = await waitAll(ctx.clients, nBatches * perBatch,
          (m) => m.type === 'new_notification' && m.data && ctx.ids.has(m.data.id), 'every device to receive every notification');
      },
      check: async (ctx) => `received by each device: ${ctx.received.join(' / ')} of ${nBatches * perBatch}; ${await queuedLine(ctx)}`,
      cleanup: (ctx) => closeAll(ctx.clients),
    },
    e: {
      title: 'e. broadcast, 3 public listeners (one per instance)',
      what: `${N} × \`POST /api/v1/broadcast\` (service token, type \`blog_update\`, round-robin over the instances, each `
        + 'awaited); 3 anonymous listeners on `/api/v1/ws`, one per instance; the window ends when every listener has '
        + 'every broadcast',
      per: [{ label: 'per broadcast', n: N }],
      prepare: async () => {
        const clients = [];
        for (let i = 0; i < INSTANCES; i += 1) clients.push(await h.publicClient(servers[i], '/api/v1/ws', { label: `public@s${i + 1}` }));
        return { run: tag(), clients, counts: [] };
      },
      run: async (ctx) => {
        const tokens = servers.map((s) => h.serviceToken(s));
        for (let i = 0; i < N; i += 1) {
          const k = i % INSTANCES;
          const r = await h.broadcast(servers[k], 'blog_update', { run: ctx.run, seq: i }, { token: tokens[k] });
          expectStatus(r, 202, `POST /api/v1/broadcast #${i + 1}`);
          ctx.counts.push(r.json && r.json.connectionCount);
        }
        ctx.received = await waitAll(ctx.clients, N, (m) => m.type === 'blog_update' && m.data && m.data.run === ctx.run,
          'every listener to receive every broadcast');
      },
      check: async (ctx) => {
        const cc = [...new Set(ctx.counts)].join(', ');
        return `received by each listener: ${ctx.received.join(' / ')} of ${N}; connectionCount answered: ${cc}`;
      },
      cleanup: (ctx) => closeAll(ctx.clients),
    },
  };
}

/* The idle scenario's clients: one user's 3 devices (one per instance) and
 * 3 public listeners; they stay connected for the whole run, so the idle
 * rate is the background of every window. */
async function idleClients(servers) {
  const user = h.uid('cost-idle');
  const clients = [];
  for (let i = 0; i < INSTANCES; i += 1) clients.push(await servers[i].device(user, `dev${i + 1}`));
  for (let i = 0; i < INSTANCES; i += 1) clients.push(await h.publicClient(servers[i], '/api/v1/ws'));
  return clients;
}

/* -------------------------------------------------------------- figures */

/* Net counts of a window: window minus rate × its duration. */
function netOf(win, rate) {
  const sec = win.ms / 1000;
  const names = new Set([...Object.keys(win.byCmd), ...Object.keys(rate.byCmd)]);
  const byCmd = {};
  const bgCmd = {};
  for (const n of names) {
    bgCmd[n] = (rate.byCmd[n] || 0) * sec;
    byCmd[n] = (win.byCmd[n] || 0) - bgCmd[n];
  }
  return {
    commands: win.commands - rate.commands * sec,
    bytesIn: win.bytesIn - rate.bytesIn * sec,
    bytesOut: win.bytesOut - rate.bytesOut * sec,
    bg: { commands: rate.commands * sec, bytesIn: rate.bytesIn * sec, bytesOut: rate.bytesOut * sec, byCmd: bgCmd },
    byCmd,
  };
}

/* Two windows as one (counts added, durations added). */
function sumWins(wins) {
  const s = { ms: 0, commands: 0, bytesIn: 0, bytesOut: 0, byCmd: {} };
  for (const w of wins) {
    s.ms += w.ms;
    s.commands += w.commands;
    s.bytesIn += w.bytesIn;
    s.bytesOut += w.bytesOut;
    for (const [n, v] of Object.entries(w.byCmd)) s.byCmd[n] = (s.byCmd[n] || 0) + v;
  }
  return s;
}

function rateOf(win) {
  const sec = win.ms / 1000;
  const byCmd = {};
  for (const [n, v] of Object.entries(win.byCmd)) byCmd[n] = v / sec;
  return { commands: win.commands / sec, bytesIn: win.bytesIn / sec, bytesOut: win.bytesOut / sec, byCmd };
}

function monRate(mon) {
  const sec = mon.ms / 1000;
  const counts = {};
  for (const [n, v] of Object.entries(mon.counts)) counts[n] = { top: v.top / sec, lua: v.lua / sec };
  return { counts, luaSrc: mon.luaSrc / sec };
}

function fmt(x, digits = 2) {
  if (x === undefined || x === null || Number.isNaN(x)) return '–';
  const v = Math.abs(x) < 0.5 * 10 ** -digits ? 0 : x;
  return v.toFixed(digits);
}

function fmtInt(x) {
  return Math.round(x).toLocaleString('en-US');
}

/* The markdown section of one measured scenario. */
function section(sc, win, rate, mon, monIdle) {
  const n = netOf(win, rate);
  const lines = [];
  lines.push(`### ${sc.title}`, '');
  lines.push(`${sc.what}.`, '');
  lines.push(`Window ${fmt(win.ms / 1000)} s; background subtracted: ${fmt(win.ms / 1000)} s × the idle rate `
    + `(${fmt(rate.commands, 1)} commands/s for the 3 instances).`);
  if (sc.checkLine) lines.push(`Check: ${sc.checkLine}.`);
  const failed = Object.entries(win.failed);
  if (failed.length) {
    lines.push(`Failed or rejected calls (commandstats): ${failed.map(([k, v]) => `\`${k}\` ${v}`).join(', ')}`
      + `${failed.every(([k]) => k === 'xinfo|stream') ? ' (XINFO STREAM of a stream that does not exist yet, '
        + 'under `pcall` in a script: expected for a user\'s first notification)' : ''}.`);
  }
  if (mon && mon.luaSrc !== undefined) {
    const sec = mon.ms / 1000;
    const src = mon.luaSrc - (monIdle.luaSrc || 0) * sec;
    const n0 = sc.per[0].n;
    lines.push(`MONITOR pass: the top-level \`eval\` calls carried ${fmtInt(src / n0)} bytes of Lua source `
      + `${sc.per[0].label} (of ${fmtInt(n.bytesIn / n0)} bytes in).`);
  }
  lines.push('');
  const perCols = sc.per.map((p) => `${p.label} (÷${p.n})`);
  const head = ['', 'window', 'background (est.)', ...perCols];
  if (mon) head.push(`top-level + in Lua, ${sc.per[0].label} (MONITOR pass)`);
  lines.push(`| ${head.join(' | ')} |`);
  lines.push(`|${head.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`);
  const monNet = {};
  if (mon) {
    const sec = mon.ms / 1000;
    const names = new Set([...Object.keys(mon.counts), ...Object.keys(monIdle.counts)]);
    for (const nm of names) {
      const c = mon.counts[nm] || { top: 0, lua: 0 };
      const bg = monIdle.counts[nm] || { top: 0, lua: 0 };
      monNet[nm] = { top: c.top - bg.top * sec, lua: c.lua - bg.lua * sec };
    }
  }
  const monCell = (nm) => {
    if (!mon) return [];
    const p = sc.per[0].n;
    if (nm === null) {
      let top = 0;
      let lua = 0;
      for (const v of Object.values(monNet)) {
        top += v.top;
        lua += v.lua;
      }
      return [`${fmt(top / p)} + ${fmt(lua / p)}`];
    }
    const v = monNet[nm];
    return [v ? `${fmt(v.top / p)} + ${fmt(v.lua / p)}` : '–'];
  };
  const row = (label, w, bg, nv, monPart, digits = 2) => {
    const cells = [label, fmtInt(w), fmt(bg, 1), ...sc.per.map((p) => fmt(nv / p.n, digits)), ...monPart];
    lines.push(`| ${cells.join(' | ')} |`);
  };
  row('**commands**', win.commands, n.bg.commands, n.commands, monCell(null));
  const names = Object.keys(n.byCmd).sort((x, y) => (n.byCmd[y] - n.byCmd[x]) || x.localeCompare(y));
  for (const nm of names) {
    row(`\`${nm}\``, win.byCmd[nm] || 0, n.bg.byCmd[nm], n.byCmd[nm], monCell(nm));
  }
  row('**bytes in** (clients → Redis)', win.bytesIn, n.bg.bytesIn, n.bytesIn, mon ? [''] : [], 0);
  row('**bytes out** (Redis → clients)', win.bytesOut, n.bg.bytesOut, n.bytesOut, mon ? [''] : [], 0);
  lines.push('');
  return lines.join('\n');
}

function idleSection(idleWins, mon) {
  const lines = [];
  lines.push('### f. idle: background of 3 instances', '');
  lines.push('3 instances, one user\'s 3 devices (one per instance) and 3 public listeners connected, nothing posted. '
    + 'Both windows together give the rate that every other window had subtracted; the MONITOR pass has an '
    + 'idle window of its own for its subtraction.', '');
  const head = ['', ...idleWins.map((w) => `${w.label}: window (${fmt(w.win.ms / 1000)} s)`),
    ...idleWins.map((w) => `${w.label}: per s, per instance`)];
  if (mon) head.push(`MONITOR pass: top-level + in Lua, per s, per instance (${fmt(mon.ms / 1000)} s)`);
  lines.push(`| ${head.join(' | ')} |`);
  lines.push(`|${head.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`);
  const names = new Set();
  for (const w of idleWins) for (const k of Object.keys(w.win.byCmd)) names.add(k);
  const sorted = [...names].sort((x, y) => (idleWins[0].win.byCmd[y] || 0) - (idleWins[0].win.byCmd[x] || 0) || x.localeCompare(y));
  const monCell = (nm) => {
    if (!mon) return [];
    const sec = mon.ms / 1000;
    let top = 0;
    let lua = 0;
    if (nm === null) {
      for (const v of Object.values(mon.counts)) {
        top += v.top;
        lua += v.lua;
      }
    } else if (mon.counts[nm]) {
      ({ top, lua } = mon.counts[nm]);
    }
    return [`${fmt(top / sec / INSTANCES)} + ${fmt(lua / sec / INSTANCES)}`];
  };
  const row = (label, get, monPart, digits = 2) => {
    const cells = [label, ...idleWins.map((w) => fmtInt(get(w.win))),
      ...idleWins.map((w) => fmt(get(w.win) / (w.win.ms / 1000) / INSTANCES, digits)), ...monPart];
    lines.push(`| ${cells.join(' | ')} |`);
  };
  row('**commands**', (w) => w.commands, monCell(null));
  for (const nm of sorted) row(`\`${nm}\``, (w) => w.byCmd[nm] || 0, monCell(nm));
  row('**bytes in**', (w) => w.bytesIn, mon ? [''] : [], 0);
  row('**bytes out**', (w) => w.bytesOut, mon ? [''] : [], 0);
  lines.push('');
  return lines.join('\n');
}

/* ------------------------------------------------------------------ main */

async function main() {
  const opt = parseArgs(process.argv.slice(2));
  h = require('../lib/harness');
  const bin = h.binPath();
  process.env.NS_SRC_DIR = process.env.NS_SRC_DIR || path.resolve(__dirname, '..', '..', '..');
  const cmdline = process.env.NS_COST_CMDLINE
    || ['node', path.relative(process.env.NS_SRC_DIR, __filename), ...process.argv.slice(2)].join(' ');

  const svc = new h.PrivateServices();
  const servers = [];
  const rc = { conn: null };
  let monitor = null;
  let ok = false;
  let stopping = null;
  const stopAll = async () => {
    if (stopping) return stopping;
    stopping = (async () => {
      if (monitor) monitor.close();
      if (rc.conn) rc.conn.close();
      for (const s of servers) {
        try {
          const res = await s.stop();
          if (!res || res.killed) log(`notisyncd ${s.pid} had to be killed`);
        } catch (e) {
          log(`stopping notisyncd ${s.pid}: ${e.message}`);
        }
      }
      await svc.stop();
    })();
    return stopping;
  };
  const onSignal = (sig) => {
    log(`${sig}: stopping everything`);
    stopAll().finally(() => {
      for (const s of servers) if (s.logFile) log(`server log: ${s.logFile}`);
      process.exit(130);
    });
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    log(`binary ${bin}`);
    log('starting a private Redis + PostgreSQL (scripts/services)');
    await svc.start();
    process.env.NS_SVC_DIR = svc.dir;
    const redisPort = svc.env.REDIS_PORT;
    rc.conn = await new RespConn(redisPort).connect();
    const versionText = await rc.conn.cmd(['INFO', 'server']);
    const redisVersion = (/redis_version:([^\r\n]+)/.exec(versionText) || [])[1] || '?';

    /* Calibration: nothing else talks to this Redis yet, so a window must
     * come out empty once our own share is taken out. */
    const calib = [];
    for (let i = 0; i < 3; i += 1) {
      const close = await openWindow(rc.conn);
      await rc.conn.cmd(['INFO', 'stats']); // an extra command inside the window, like a poll
      calib.push(await close());
    }
    for (const c of calib) {
      if (c.commands !== 0 || c.bytesIn !== 0 || c.bytesOut !== 0 || Object.keys(c.byCmd).length) {
        throw new Error(`calibration: an empty window did not come out empty: ${JSON.stringify(c)}`);
      }
    }
    log('calibration: an idle window with only our own commands counts 0 commands, 0 bytes: ok');

    const secret = crypto.randomBytes(24).toString('hex');
    for (let i = 0; i < INSTANCES; i += 1) {
      servers.push(h.newServer({
        secret,
        instanceId: `cost-${i + 1}-${crypto.randomBytes(3).toString('hex')}`,
        env: {
          NOTISYNC_LOG_LEVEL: 'warn',
          /* ack mode sends one ack per message, far above the default
           * 20 messages/s per connection; no Redis work depends on it */
          NOTISYNC_CLIENT_MSG_RATE: '0',
        },
      }));
    }
    for (const s of servers) await s.start();
    log(`3 instances on ports ${servers.map((s) => s.port).join(', ')} (pids ${servers.map((s) => s.pid).join(', ')})`);

    const idleConns = await idleClients(servers);
    const idleWins = [];
    const runIdle = async (label) => {
      await settle(Math.max(opt.settleMs, 1000));
      const close = await openWindow(rc.conn);
      await h.sleep(opt.idleS * 1000);
      const win = await close();
      idleWins.push({ label, win });
      log(`idle (${label}): ${win.commands} commands in ${fmt(win.ms / 1000)} s`);
      return win;
    };
    await runIdle('before');

    const all = scenarios(opt, servers);
    const order = ['a', 'b', 'c', 'd', 'e'].filter((k) => opt.only.includes(k));
    const results = {};
    for (const k of order) {
      const sc = all[k];
      log(`scenario ${sc.title}`);
      const ctx = await sc.prepare();
      await settle(Math.max(opt.settleMs, 1000));
      const close = await openWindow(rc.conn);
      await sc.run(ctx);
      await settle(opt.settleMs);
      const win = await close();
      const checkLine = await sc.check(ctx);
      await sc.cleanup(ctx);
      results[k] = { win, checkLine };
      const n = netOf(win, rateOf(idleWins[0].win));
      log(`  ${fmt(n.commands / sc.per[0].n)} commands ${sc.per[0].label}; ${checkLine}`);
    }
    await runIdle('after');
    const rate = rateOf(sumWins(idleWins.map((w) => w.win)));

    /* Pass 2: MONITOR for the top-level / Lua split. */
    const monRes = {};
    let monIdle = null;
    if (opt.monitor) {
      log('pass 2: MONITOR (top-level calls vs calls from Lua)');
      monitor = new Monitor(redisPort);
      await monitor.start();
      await settle(1000);
      let close = await monitor.open(rc.conn);
      await h.sleep(opt.idleS * 1000);
      monIdle = await close();
      const monIdleRate = monRate(monIdle);
      for (const k of order) {
        const sc = all[k];
        const ctx = await sc.prepare();
        await settle(Math.max(opt.settleMs, 1000));
        close = await monitor.open(rc.conn);
        await sc.run(ctx);
        await settle(opt.settleMs);
        monRes[k] = await close();
        await sc.cleanup(ctx);
        log(`  ${k}: done (${fmt(monRes[k].ms / 1000)} s)`);
      }
      monIdle.rate = monIdleRate;
      if (monitor.bad) log(`MONITOR: ${monitor.bad} lines not understood`);
      monitor.close();
      monitor = null;
    }
    for (const c of idleConns) await c.close();

    /* The report. */
    const sanitized = /sanitize|asan|build-test/i.test(bin) || (() => {
      try {
        return fs.readFileSync(bin).includes('AddressSanitizer');
      } catch {
        return false;
      }
    })();
    const out = [];
    out.push('## What Redis sees per notification and per broadcast', '');
    out.push('```', cmdline, '```', '');
    out.push(`- binary: \`${path.relative(process.env.NS_SRC_DIR, path.resolve(bin))}\``
      + `${sanitized ? ' (ASan/UBSan build: sanitizers change timing, not the Redis commands or bytes)' : ''}`);
    out.push(`- Redis ${redisVersion}, PostgreSQL from scripts/services, 3 notisyncd instances on 127.0.0.1 sharing both `
      + '(same JWT secret, `log_level=warn`, `client_msg_rate=0`, `presence_grace=0`, other keys at their defaults)');
    out.push(`- ${new Date().toISOString()}, ${os.cpus().length} CPUs, ${os.type()} ${os.release()}`);
    out.push('- each window: `CONFIG RESETSTAT` … `INFO commandstats stats` (`total_commands_processed`, '
      + '`total_net_input_bytes`, `total_net_output_bytes`, `cmdstat_*`); our own RESETSTAT/INFO and their bytes '
      + 'taken out exactly (checked on the idle Redis before the instances started: 0 left)');
    out.push('- commands: Redis counts a command called from a Lua script like one sent by a client, so a script '
      + 'call (`eval` or `evalsha`) and the commands inside it are each one; the MONITOR column splits them into top-level '
      + 'calls (network round trips) and calls from inside Lua');
    out.push('- background (canary PUBLISH, liveness and stats keys of the 3 instances, and whatever the idle '
      + 'connections cost) is subtracted as idle rate × window duration; "window" is the raw count, the per-op '
      + 'columns are net. Background commands come in bursts (every 2–5 s), so a name the scenario never uses '
      + 'can show a small positive or negative remainder');
    out.push(`- bytes out include what Redis writes to subscribers (pub/sub messages to each instance)`);
    out.push(`- settle time after the last delivery or reply: ${opt.settleMs} ms (inside the window)`, '');
    for (const k of order) {
      out.push(section({ ...all[k], checkLine: results[k].checkLine }, results[k].win, rate,
        monRes[k] || null, monIdle ? monIdle.rate : null));
    }
    out.push(idleSection(idleWins, monIdle));
    const report = out.join('\n');
    process.stdout.write(report);
    if (opt.out) {
      fs.writeFileSync(opt.out, report);
      log(`written to ${opt.out}`);
    }
    ok = true;
  } finally {
    await stopAll();
    const bad = servers.filter((s) => SANITIZER_RE.test(s.log()));
    for (const s of bad) log(`sanitizer report in ${s.logFile}`);
    const errs = servers.filter((s) => s.exit && s.exit.code !== 0);
    for (const s of errs) log(`notisyncd ${s.pid} exited with ${JSON.stringify(s.exit)}; log ${s.logFile}`);
    if (bad.length) ok = false;
    if (ok && !opt.keepLogs) {
      for (const s of servers) if (s.logFile) fs.rmSync(s.logFile, { force: true });
    } else {
      for (const s of servers) if (s.logFile) log(`server log: ${s.logFile}`);
    }
    process.exitCode = ok ? 0 : 1;
  }
}

if (!reexecQuietly()) {
  main().catch((e) => {
    log(`failed: ${e && e.stack ? e.stack : e}`);
    process.exitCode = 1;
  });
}

