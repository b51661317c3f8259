'use strict';
/*
 * rcluster.js -- Redis Cluster helpers for the end-to-end tests (issue 13,
 * SPEC §10): the key slot (CRC16/XMODEM with hash tags, as Redis computes
 * it), a minimal RESP client over one TCP connection per command, the slot
 * map and node list of a running cluster, and PrivateCluster: a 3-master +
 * 3-replica cluster of a test file's own, run by scripts/redis-cluster in a
 * fresh directory under os.tmpdir(), whose nodes a test may kill.
 *
 * The harness (lib/harness.js) uses these for cluster mode; tests may use
 * them directly (e.g. to spread users over the masters).
 */
const { execFile } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

/* ------------------------------------------------------------ key slot */

/* CRC16/XMODEM (poly 0x1021, init 0), the CRC of Redis Cluster's keyslot. */
const CRC_TABLE = (() => {
  const t = new Uint16Array(256);
  for (let i = 0; i < 256; i += 1) {
    let c = i << 8;
    for (let k = 0; k < 8; k += 1) c = (c & 0x8000) ? ((c << 1) ^ 0x1021) & 0xffff : (c << 1) & 0xffff;
    t[i] = c;
  }
  return t;
})();

function crc16(buf) {
  let crc = 0;
  for (const b of buf) crc = ((crc << 8) & 0xffff) ^ CRC_TABLE[((crc >> 8) ^ b) & 0xff];
  return crc;
}

/* The hash slot of `key` (string or Buffer): only the part between the
 * first '{' and the first '}' after it is hashed, when that is non-empty. */
function keySlot(key) {
  const buf = Buffer.isBuffer(key) ? key : Buffer.from(String(key), 'utf8');
  const open = buf.indexOf(0x7b);
  if (open >= 0) {
    const close = buf.indexOf(0x7d, open + 1);
    if (close > open + 1) return crc16(buf.subarray(open + 1, close)) & 16383;
  }
  return crc16(buf) & 16383;
}

/* --------------------------------------------------------------- RESP */

/* Parses one RESP reply from `buf` at `pos`: {value, end} or null when
 * incomplete.  Errors are Error objects with .redis = true. */
function parseReply(buf, pos = 0) {
  const eol = buf.indexOf('\r\n', pos);
  if (eol < 0) return null;
  const type = String.fromCharCode(buf[pos]);
  const line = buf.toString('utf8', pos + 1, eol);
  const next = eol + 2;
  switch (type) {
    case '+': return { value: line, end: next };
    case '-': {
      const e = new Error(line);
      e.redis = true;
      return { value: e, end: next };
    }
    case ':': return { value: Number(line), end: next };
    case '$': {
      const n = Number(line);
      if (n < 0) return { value: null, end: next };
      if (buf.length < next + n + 2) return null;
      return { value: buf.toString('utf8', next, next + n), end: next + n + 2 };
    }
    case '*': {
      const n = Number(line);
      if (n < 0) return { value: null, end: next };
      const out = [];
      let p = next;
      for (let i = 0; i < n; i += 1) {
        const r = parseReply(buf, p);
        if (!r) return null;
        out.push(r.value);
        p = r.end;
      }
      return { value: out, end: p };
    }
    default:
      throw new Error(`RESP: unexpected type byte ${JSON.stringify(type)}`);
  }
}

function encode(args) {
  const parts = [`*${args.length}\r\n`];
  for (const a of args) {
    const b = Buffer.from(String(a), 'utf8');
    parts.push(`$${b.length}\r\n`, b, '\r\n');
  }
  return Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p))));
}

/* Sends one command to 127.0.0.1:`port` on a fresh connection and resolves
 * its reply (a Redis error reply resolves as an Error; a network error or
 * the timeout rejects). */
function command(port, args, { host = '127.0.0.1', timeoutMs = 3000 } = {}) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port });
    let buf = Buffer.alloc(0);
    const finish = (err, v) => {
      clearTimeout(timer);
      s.destroy();
      if (err) reject(err);
      else resolve(v);
    };
    const timer = setTimeout(() => finish(new Error(`redis ${host}:${port} ${args[0]}: no reply within ${timeoutMs} ms`)), timeoutMs);
    s.on('connect', () => s.write(encode(args)));
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      let r;
      try {
        r = parseReply(buf, 0);
      } catch (e) {
        finish(e);
        return;
      }
      if (r) finish(null, r.value);
    });
    s.on('error', (e) => finish(new Error(`redis ${host}:${port} ${args[0]}: ${e.message}`)));
    s.on('close', () => finish(new Error(`redis ${host}:${port} ${args[0]}: connection closed`)));
  });
}

/* ---------------------------------------------------------- topology */

/* The ports of a cluster URL "redis://127.0.0.1:p1,127.0.0.1:p2,.../". */
function seedPorts(url) {
  const m = /^rediss?:\/\/(?:[^@/]*@)?([^/]*)/.exec(url || '');
  if (!m) return [];
  return m[1].split(',').map((hp) => Number(hp.split(':').pop())).filter((p) => p > 0);
}

/* CLUSTER NODES of the first of `ports` that answers, parsed:
 * [{id, port, flags:[...], master (id or '-'), role, fail, slots:[[a,b]...]}]. */
async function clusterNodes(ports) {
  let lastErr;
  for (const port of ports) {
    try {
      const text = await command(port, ['CLUSTER', 'NODES'], { timeoutMs: 1500 });
      if (text instanceof Error) throw text;
      return text.trim().split('\n').map((line) => {
        const f = line.split(' ');
        const flags = f[2].split(',');
        const slots = f.slice(8).filter((s) => !s.startsWith('[')).map((s) => {
          const [a, b] = s.split('-').map(Number);
          return [a, b === undefined ? a : b];
        });
        return {
          id: f[0],
          port: Number(f[1].split('@')[0].split(':').pop()),
          flags,
          master: f[3],
          role: flags.includes('master') ? 'master' : 'replica',
          fail: flags.includes('fail') || flags.includes('fail?'),
          connected: f[7] === 'connected',
          slots,
        };
      });
    } catch (e) {
      lastErr = e;
    }
  }
  throw new Error(`no cluster node answered CLUSTER NODES on ${ports.join(',')}: ${lastErr && lastErr.message}`);
}

/* The port of the master serving `slot`, as the first answering node of
 * `ports` sees it (undefined if none serves it). */
async function masterOfSlot(ports, slot) {
  const nodes = await clusterNodes(ports);
  const m = nodes.find((n) => n.role === 'master' && !n.fail && n.slots.some(([a, b]) => slot >= a && slot <= b));
  return m && m.port;
}

/* ------------------------------------------------------ private cluster */

function clusterScript() {
  const src = process.env.NS_SRC_DIR || path.resolve(__dirname, '..', '..', '..');
  return path.join(src, 'scripts', 'redis-cluster');
}

/* Runs `scripts/redis-cluster ...args` (bounded); resolves {stdout, stderr}. */
function runClusterScript(args, timeoutMs = 60000) {
  return new Promise((resolve, reject) => {
    execFile(clusterScript(), args, { timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`scripts/redis-cluster ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else resolve({ stdout, stderr });
    });
  });
}

/* Reads DIR/env.json written by scripts/redis-cluster start. */
function readClusterEnv(dir) {
  const file = path.join(dir, 'env.json');
  let env;
  try {
    env = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`cannot read ${file}: ${e.message} (did scripts/redis-cluster start run?)`);
  }
  if (env.NOTISYNC_REDIS_MODE !== 'cluster' || !env.NOTISYNC_REDIS_URL) throw new Error(`${file} is not a cluster env: ${JSON.stringify(env)}`);
  env.ports = String(env.NS_CLUSTER_PORTS).split(',').map(Number);
  return env;
}

const privateClusters = [];

/* A 3-master + 3-replica cluster of this file's own (scripts/redis-cluster
 * in a fresh directory under os.tmpdir()).  {aof: true}: appendonly, so
 * that stopNodes()/startNodes() keep the data.  Stopped (by PID, through
 * the script) and its directory removed by stopAllPrivateClusters(), which
 * the harness calls from an after() hook. */
class PrivateCluster {
  constructor(opts = {}) {
    this.aof = !!opts.aof;
    this.dir = null;
    this.env = null;
  }

  get url() {
    return this.env.NOTISYNC_REDIS_URL;
  }

  get ports() {
    return this.env.ports;
  }

  async start() {
    this.dir = this.dir || fs.mkdtempSync(path.join(os.tmpdir(), 'notisync-e2e-cluster-'));
    if (!privateClusters.includes(this)) privateClusters.push(this);
    const t0 = Date.now();
    await runClusterScript(['start', ...(this.aof ? ['--aof'] : []), this.dir], 90000);
    this.startMs = Date.now() - t0;
    this.env = readClusterEnv(this.dir);
    return this;
  }

  /* The node directory's redis.pid for `port` (null when not running). */
  pidOf(port) {
    const n = this.ports.indexOf(port) + 1;
    if (!n) throw new Error(`no node on port ${port}`);
    try {
      return Number(fs.readFileSync(path.join(this.dir, `node-${n}`, 'redis.pid'), 'utf8').trim());
    } catch {
      return null;
    }
  }

  logOf(port) {
    return path.join(this.dir, `node-${this.ports.indexOf(port) + 1}`, 'redis.log');
  }

  nodes() { return clusterNodes(this.ports); }

  /* Ports of the live masters (ascending). */
  async masters() {
    return (await this.nodes()).filter((n) => n.role === 'master' && !n.fail).map((n) => n.port).sort((a, b) => a - b);
  }

  masterOf(key) { return masterOfSlot(this.ports, keySlot(key)); }

  /* kill -SIG one node (default KILL) and wait until it is gone. */
  killNode(port, sig = 'KILL') { return runClusterScript(['kill-node', this.dir, String(port), sig]); }

  startNode(port) { return runClusterScript(['start-node', this.dir, String(port)]); }

  waitOk(seconds = 15) { return runClusterScript(['wait-ok', this.dir, String(seconds)], (seconds + 10) * 1000); }

  stopNodes() { return runClusterScript(['stop-nodes', this.dir]); }

  startNodes() { return runClusterScript(['start-nodes', this.dir], 60000); }

  /* FLUSHALL on every live master. */
  async flushAll() {
    for (const p of await this.masters()) {
      const r = await command(p, ['FLUSHALL']);
      if (r instanceof Error) throw r;
    }
  }

  async stop() {
    if (!this.dir) return;
    try {
      await runClusterScript(['stop', this.dir]);
      fs.rmSync(this.dir, { recursive: true, force: true });
    } catch (e) {
      process.stderr.write(`${e.message}\n`);
    }
  }
}

async function stopAllPrivateClusters() {
  for (const c of privateClusters) await c.stop();
}

/* Polls /health of `srv` (a harness server) every 100 ms until stopped:
 * samples {at, status, redis}. */
function healthPoll(srv) {
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const w = { samples: [], on: true };
  w.done = (async () => {
    while (w.on) {
      const at = Date.now();
      try {
        const r = await srv.http('GET', '/health', { timeoutMs: 2000 });
        w.samples.push({ at, status: r.status, redis: r.json && r.json.redis });
      } catch (e) {
        w.samples.push({ at, status: 'net', error: e.message });
      }
      await sleep(100);
    }
  })();
  w.stop = async () => {
    w.on = false;
    await w.done;
  };
  return w;
}

module.exports = {
  healthPoll,
  crc16,
  keySlot,
  parseReply,
  command,
  seedPorts,
  clusterNodes,
  masterOfSlot,
  readClusterEnv,
  runClusterScript,
  PrivateCluster,
  stopAllPrivateClusters,
};
