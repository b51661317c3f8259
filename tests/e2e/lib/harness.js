'use strict';
/*
 * harness.js -- runs real notisyncd processes (and, when a test needs one it
 * can stop, a private redis-server) for the end-to-end tests, and gives the
 * tests small clients: JWT minting, an HTTP helper and a recording WebSocket
 * client whose every wait is bounded.
 *
 * Environment (set by ctest, see tests/CMakeLists.txt):
 *   NS_BIN      path of the notisyncd binary
 *   NS_SVC_DIR  directory where `scripts/services start` wrote env.json
 *   NS_SRC_DIR  repository root
 * Cluster mode (issue 13, SPEC §10; the e2e_cluster ctest block):
 *   NS_REDIS_MODE=cluster  and  NS_CLUSTER_DIR = directory where
 *   `scripts/redis-cluster start` wrote env.json: servers get
 *   redis_mode=cluster and the cluster's seed URL instead of the services
 *   Redis (PostgreSQL stays the services one); useRedis() and
 *   useServices() start a private cluster instead of a private Redis.  A
 *   services env.json that itself says NOTISYNC_REDIS_MODE=cluster also
 *   means cluster mode.  See the "Redis Cluster" section at the end.
 *
 * Every process started here is stopped by PID in an after() hook (SIGTERM,
 * SIGKILL after 10 s).  A failing test prints the tail of every server log
 * of its file; the after() hook fails the file when a server log holds a
 * sanitizer report.  The logs are removed when every test of the file
 * passed (NS_KEEP_LOGS=1 keeps them).
 */
const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const nodeHttp = require('node:http');
const os = require('node:os');
const path = require('node:path');
const nodeTest = require('node:test');
const WebSocket = require('ws');

const READY_TIMEOUT_MS = 20000;
const STOP_GRACE_MS = 10000;
const DEFAULT_WAIT_MS = 10000;
const TEST_TIMEOUT_MS = 90000;

/* RFC 3339, UTC, millisecond precision (SPEC §3). */
const TS_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

const servers = [];      // every notisyncd started by this file
const redises = [];      // every private redis-server started by this file
let serverSeq = 0;
let failedTests = 0;     // a log is kept only when something failed

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/* A short random suffix so that parallel test files never share a user. */
function uid(prefix = 'u') {
  return `${prefix}-${crypto.randomBytes(6).toString('hex')}`;
}

/* Polls `fn` (sync or async) until it returns a truthy value; returns that
 * value.  Throws with `what` after `timeoutMs`.  Errors thrown by `fn` count
 * as "not yet" and the last one is reported. */
async function until(fn, { timeoutMs = DEFAULT_WAIT_MS, intervalMs = 200, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  let lastErr;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() >= deadline) break;
    await sleep(intervalMs);
  }
  const detail = lastErr ? ` (last error: ${lastErr.message})` : ` (last value: ${JSON.stringify(last)})`;
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail}`);
}

/* Picks a free TCP port on 127.0.0.1: listen on 0, read it, close. */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/* The shared services started by scripts/services (env.json in NS_SVC_DIR). */
function services() {
  const dir = process.env.NS_SVC_DIR;
  if (!dir) throw new Error('NS_SVC_DIR is not set (run through ctest, or set it by hand)');
  const file = path.join(dir, 'env.json');
  let env;
  try {
    env = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`cannot read ${file}: ${e.message} (did scripts/services start run?)`);
  }
  for (const k of ['NOTISYNC_REDIS_URL', 'NOTISYNC_DATABASE_URL']) {
    if (!env[k]) throw new Error(`${file} has no ${k}`);
  }
  if (env.NOTISYNC_REDIS_MODE === 'cluster') {
    clusterUrls.add(env.NOTISYNC_REDIS_URL);
  } else if (process.env.NS_REDIS_MODE === 'cluster') {
    /* the shared cluster replaces the services Redis; its REDIS_PORT and
     * REDIS_PIDFILE are dropped so that nothing talks to that one by mistake */
    const c = sharedClusterEnv();
    delete env.REDIS_PORT;
    delete env.REDIS_PIDFILE;
    Object.assign(env, {
      NOTISYNC_REDIS_MODE: 'cluster',
      NOTISYNC_REDIS_URL: c.NOTISYNC_REDIS_URL,
      NS_CLUSTER_PORTS: c.NS_CLUSTER_PORTS,
      NS_CLUSTER_MASTERS: c.NS_CLUSTER_MASTERS,
      NS_CLUSTER_DIR: c.NS_CLUSTER_DIR,
    });
    clusterUrls.add(c.NOTISYNC_REDIS_URL);
    clusterPorts.set(c.NOTISYNC_REDIS_URL, c.ports);
  }
  return env;
}

/* Every Redis URL known to be a cluster's (the shared one, private ones):
 * a server whose redis_url is one of them runs with redis_mode=cluster. */
const clusterUrls = new Set();
const clusterPorts = new Map(); /* url -> every node's port, when known */

/* The env.json of the shared cluster (NS_CLUSTER_DIR). */
function sharedClusterEnv() {
  const dir = process.env.NS_CLUSTER_DIR;
  if (!dir) throw new Error('NS_REDIS_MODE=cluster needs NS_CLUSTER_DIR (where scripts/redis-cluster start wrote env.json)');
  return require('./rcluster').readClusterEnv(dir);
}

/* True when this run is the cluster variant (NS_REDIS_MODE=cluster, or a
 * services env.json with NOTISYNC_REDIS_MODE=cluster). */
let clusterModeCache;
function clusterMode() {
  if (clusterModeCache === undefined) {
    clusterModeCache = process.env.NS_REDIS_MODE === 'cluster';
    if (!clusterModeCache && process.env.NS_SVC_DIR) {
      try {
        const e = JSON.parse(fs.readFileSync(path.join(process.env.NS_SVC_DIR, 'env.json'), 'utf8'));
        clusterModeCache = e.NOTISYNC_REDIS_MODE === 'cluster';
      } catch {
        clusterModeCache = false;
      }
    }
  }
  return clusterModeCache;
}

/* For a test's `skip` option: the reason (a string, so node:test skips the
 * test and prints it) in cluster mode, false otherwise.  For cases that
 * inspect what only a single Redis has (INFO, MONITOR, SELECT, CLIENT KILL,
 * a fault proxy in front of the one Redis). */
function standaloneOnly(reason) {
  return clusterMode() ? `standalone Redis only: ${reason}` : false;
}

function binPath() {
  const bin = process.env.NS_BIN;
  if (!bin) throw new Error('NS_BIN is not set (path of the notisyncd binary)');
  if (!fs.existsSync(bin)) throw new Error(`NS_BIN=${bin} does not exist`);
  return bin;
}

function logName(kind) {
  const base = path.basename(process.argv[1] || 'e2e', '.js').replace(/[^A-Za-z0-9._-]/g, '_');
  serverSeq += 1;
  return path.join(os.tmpdir(), `notisync-e2e-${base}-${kind}-${process.pid}-${serverSeq}.log`);
}

function tailFile(file, lines = 150) {
  try {
    const all = fs.readFileSync(file, 'utf8').split('\n');
    return all.slice(-lines).join('\n');
  } catch (e) {
    return `(cannot read ${file}: ${e.message})`;
  }
}

/* Environment for a child: the parent's, minus any NOTISYNC_* it carried. */
function baseEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('NOTISYNC_')) env[k] = v;
  }
  if (!env.ASAN_OPTIONS) env.ASAN_OPTIONS = 'detect_leaks=1:abort_on_error=0';
  if (!env.UBSAN_OPTIONS) env.UBSAN_OPTIONS = 'print_stacktrace=1';
  return env;
}

/* ------------------------------------------------------------------ JWT */

function b64url(buf) {
  return Buffer.from(buf).toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
}

/* Signs an arbitrary token.  `alg` picks the signature: HS256/HS384/HS512
 * (key = secret string or Buffer), RS256 (key = RSA private KeyObject/PEM),
 * ES256 (key = EC P-256 private key), none (empty signature).  `header`
 * overrides/extends the header (default {alg, typ:"JWT"}). */
function signJwt({ alg = 'HS256', key, payload, header = {} }) {
  const h = { alg, typ: 'JWT', ...header };
  const input = `${b64url(JSON.stringify(h))}.${b64url(JSON.stringify(payload))}`;
  let sig;
  switch (alg) {
    case 'HS256':
    case 'HS384':
    case 'HS512': {
      const hash = { HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' }[alg];
      sig = crypto.createHmac(hash, key).update(input).digest();
      break;
    }
    case 'RS256':
      sig = crypto.sign('sha256', Buffer.from(input), key);
      break;
    case 'ES256':
      sig = crypto.sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
      break;
    case 'none':
      sig = Buffer.alloc(0);
      break;
    default:
      throw new Error(`signJwt: unsupported alg ${alg}`);
  }
  return `${input}.${b64url(sig)}`;
}

function nowS() {
  return Math.floor(Date.now() / 1000);
}

/* Standard claims for `sub`, valid for an hour; `extra` overrides. */
function claims(sub, extra = {}) {
  const now = nowS();
  return { sub, iat: now, exp: now + 3600, ...extra };
}

/* Key pairs generated once per process (RSA 2048 and EC P-256), with the
 * public key as SPKI PEM text. */
let keyCache = null;
function keys() {
  if (keyCache) return keyCache;
  const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const rsa2 = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const ec2 = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const pem = (k) => k.export({ type: 'spki', format: 'pem' });
  keyCache = {
    rsa: { privateKey: rsa.privateKey, publicPem: pem(rsa.publicKey) },
    rsaOther: { privateKey: rsa2.privateKey, publicPem: pem(rsa2.publicKey) },
    ec: { privateKey: ec.privateKey, publicPem: pem(ec.publicKey) },
    ecOther: { privateKey: ec2.privateKey, publicPem: pem(ec2.publicKey) },
  };
  return keyCache;
}

/* Writes `text` to a fresh file under os.tmpdir() and returns its path. */
function tmpFile(name, text) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'notisync-e2e-'));
  const file = path.join(dir, name);
  fs.writeFileSync(file, text);
  return file;
}

/* ----------------------------------------------------------------- HTTP */

/* One HTTP request without keep-alive.  Returns {status, headers, text,
 * json} (json = parsed body or undefined).  Bounded by `timeoutMs`. */
function httpRequest(base, method, urlPath, { token, body, headers = {}, timeoutMs = DEFAULT_WAIT_MS } = {}) {
  return new Promise((resolve, reject) => {
    const u = new URL(urlPath, base);
    const h = { Connection: 'close', ...headers };
    let payload;
    if (body !== undefined) {
      payload = Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
      if (!Object.keys(h).some((k) => k.toLowerCase() === 'content-type')) h['Content-Type'] = 'application/json';
      h['Content-Length'] = String(payload.length);
    }
    if (token) h.Authorization = `Bearer ${token}`;
    const req = nodeHttp.request(
      { host: u.hostname, port: u.port, path: u.pathname + u.search, method, headers: h, agent: false },
      (res) => {
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
          resolve({ status: res.statusCode, headers: res.headers, text, json });
        });
      },
    );
    const timer = setTimeout(() => {
      req.destroy(new Error(`HTTP ${method} ${urlPath}: no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    req.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    if (payload) req.write(payload);
    req.end();
  });
}

/* ------------------------------------------------------------ WebSocket */

/* A WebSocket client that records every frame (parsed when JSON), every
 * ping it got, and the close code/reason.  Waits are bounded and consume
 * frames in order: next()/waitFor() search from a cursor and move it past
 * the frame they return. */
class WsClient {
  constructor(url, { headers = {}, autoPong = true, label = '', maxPayload, localAddress } = {}) {
    this.url = url;
    this.label = label || url.replace(/token=[^&]*/, 'token=…');
    this.frames = [];      // {raw, msg, binary, at}
    this.pings = 0;
    this.cursor = 0;
    this.closeInfo = null; // {code, reason, at}
    this.error = null;
    this.httpStatus = null;
    this.opened = false;
    this.waiters = new Set();
    const opts = { headers, autoPong, handshakeTimeout: DEFAULT_WAIT_MS };
    if (maxPayload) opts.maxPayload = maxPayload;
    if (localAddress) opts.localAddress = localAddress; /* another loopback source, e.g. 127.0.0.2 */
    this.ws = new WebSocket(url, opts);
    this.openPromise = new Promise((resolve, reject) => {
      this.ws.on('open', () => {
        this.opened = true;
        resolve(this);
      });
      this.ws.on('unexpected-response', (req, res) => {
        this.httpStatus = res.statusCode;
        const err = new Error(`${this.label}: upgrade refused with HTTP ${res.statusCode}`);
        this.error = err;
        res.resume();
        req.destroy();
        this.closeInfo = this.closeInfo || { code: -1, reason: `http ${res.statusCode}`, at: Date.now() };
        this.notify();
        reject(err);
      });
      this.ws.on('error', (e) => {
        this.error = e;
        if (!this.opened) reject(new Error(`${this.label}: ${e.message}`));
        this.notify();
      });
    });
    this.openPromise.catch(() => {});
    this.ws.on('message', (data, isBinary) => {
      const raw = isBinary ? data : data.toString('utf8');
      let msg = null;
      if (!isBinary) {
        try {
          msg = JSON.parse(raw);
        } catch {
          msg = null;
        }
      }
      this.frames.push({ raw, msg, binary: isBinary, at: Date.now() });
      this.notify();
    });
    this.ws.on('ping', () => {
      this.pings += 1;
    });
    this.ws.on('close', (code, reason) => {
      this.closeInfo = this.closeInfo || { code, reason: reason.toString('utf8'), at: Date.now() };
      this.notify();
    });
  }

  notify() {
    for (const w of [...this.waiters]) w();
  }

  /* Resolves when the upgrade completed; rejects on refusal or error. */
  open() {
    return withTimeout(this.openPromise, DEFAULT_WAIT_MS, `${this.label}: open`);
  }

  messages() {
    return this.frames.filter((f) => f.msg).map((f) => f.msg);
  }

  describe() {
    const shown = this.frames.slice(-20).map((f) => (typeof f.raw === 'string' ? f.raw : `<binary ${f.raw.length}>`));
    return `frames=[${shown.join(', ')}] close=${JSON.stringify(this.closeInfo)}`;
  }

  /* Waits for the first frame at or after the cursor whose parsed message
   * satisfies `pred`; returns the message and moves the cursor past it. */
  waitFor(pred, timeoutMs = DEFAULT_WAIT_MS, what = 'matching frame') {
    return new Promise((resolve, reject) => {
      let timer = null;
      const check = () => {
        for (let i = this.cursor; i < this.frames.length; i += 1) {
          const f = this.frames[i];
          if (f.msg && pred(f.msg)) {
            this.cursor = i + 1;
            done();
            resolve(f.msg);
            return;
          }
        }
        if (this.closeInfo) {
          done();
          reject(new Error(`${this.label}: closed while waiting for ${what}: ${this.describe()}`));
        }
      };
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      timer = setTimeout(() => {
        done();
        reject(new Error(`${this.label}: no ${what} within ${timeoutMs} ms: ${this.describe()}`));
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  /* The next frame of `type` (see waitFor). */
  next(type, timeoutMs = DEFAULT_WAIT_MS) {
    return this.waitFor((m) => m.type === type, timeoutMs, `'${type}' frame`);
  }

  /* Resolves {code, reason} when the connection closes (bounded). */
  closed(timeoutMs = DEFAULT_WAIT_MS) {
    return new Promise((resolve, reject) => {
      let timer = null;
      const check = () => {
        if (this.closeInfo) {
          clearTimeout(timer);
          this.waiters.delete(check);
          resolve(this.closeInfo);
        }
      };
      timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`${this.label}: not closed within ${timeoutMs} ms: ${this.describe()}`));
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  /* Waits `ms` and returns every parsed message that arrived meanwhile
   * (from the moment of the call) and satisfies `pred`. */
  async collect(ms, pred = () => true) {
    const from = this.frames.length;
    await sleep(ms);
    return this.frames.slice(from).filter((f) => f.msg && pred(f.msg)).map((f) => f.msg);
  }

  isOpen() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  send(msg) {
    this.ws.send(typeof msg === 'string' || Buffer.isBuffer(msg) ? msg : JSON.stringify(msg));
  }

  /* Sends a ping message and returns the matching pong. */
  async ping(ref = uid('ref'), timeoutMs = DEFAULT_WAIT_MS) {
    this.send({ type: 'ping', ref, data: {} });
    return this.waitFor((m) => m.type === 'pong' && m.ref === ref, timeoutMs, `pong ref=${ref}`);
  }

  /* Closes normally and waits (bounded) for the close to complete. */
  async close(code = 1000) {
    if (this.closeInfo) return this.closeInfo;
    try {
      this.ws.close(code);
    } catch {
      this.ws.terminate();
    }
    try {
      return await this.closed(DEFAULT_WAIT_MS);
    } catch {
      this.ws.terminate();
      return this.closeInfo;
    }
  }

  terminate() {
    this.ws.terminate();
  }
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/* -------------------------------------------------------------- servers */

class Server {
  constructor(opts) {
    this.opts = opts;
    this.secret = opts.secret;
    this.clients = [];
    this.exit = null;   // {code, signal} once exited
    this.stopped = false;
  }

  get base() {
    return `http://127.0.0.1:${this.port}`;
  }

  /* Spawns `notisyncd serve` and waits for /health: 200, or 503 for 3 s. */
  async start() {
    const svc = this.opts.services === false ? {} : services();
    this.port = this.opts.port || (await freePort());
    const env = baseEnv();
    env.NOTISYNC_LISTEN = `127.0.0.1:${this.port}`;
    if (svc.NOTISYNC_REDIS_URL) env.NOTISYNC_REDIS_URL = svc.NOTISYNC_REDIS_URL;
    if (svc.NOTISYNC_DATABASE_URL) env.NOTISYNC_DATABASE_URL = svc.NOTISYNC_DATABASE_URL;
    if (this.secret) env.NOTISYNC_JWT_SECRET = this.secret;
    env.NOTISYNC_PRESENCE_GRACE = '0';
    env.NOTISYNC_LOG_LEVEL = 'debug';
    env.NOTISYNC_INSTANCE_ID = this.opts.instanceId || uid('e2e');
    /* Handshake limits are per client IP and every test connects from
     * 127.0.0.1: leave them on (defaults) unless a test overrides. */
    for (const [k, v] of Object.entries(this.opts.env || {})) {
      if (v === null || v === undefined) delete env[k];
      else env[k] = String(v);
    }
    /* redis_mode follows the URL (unless the test sets it): cluster for a
     * cluster's seed list, standalone (the default) for anything else, e.g.
     * a private redis-server of the test's own */
    if (!Object.prototype.hasOwnProperty.call(this.opts.env || {}, 'NOTISYNC_REDIS_MODE')) {
      if (clusterUrls.has(env.NOTISYNC_REDIS_URL)) env.NOTISYNC_REDIS_MODE = 'cluster';
      else delete env.NOTISYNC_REDIS_MODE;
    }
    this.env = env;
    this.logFile = this.logFile || logName('notisyncd');
    const fd = fs.openSync(this.logFile, 'a');
    fs.writeSync(fd, `=== ${new Date().toISOString()} start ${binPath()} serve on port ${this.port}\n`);
    this.exit = null;
    this.stopped = false;
    this.proc = spawn(binPath(), ['serve'], { env, stdio: ['ignore', fd, fd] });
    fs.closeSync(fd);
    this.pid = this.proc.pid;
    this.exitPromise = new Promise((resolve) => {
      this.proc.on('exit', (code, signal) => {
        this.exit = { code, signal, at: Date.now() };
        resolve(this.exit);
      });
      this.proc.on('error', (e) => {
        this.exit = { code: null, signal: null, error: e.message, at: Date.now() };
        resolve(this.exit);
      });
    });
    if (!servers.includes(this)) servers.push(this);
    const deadline = Date.now() + READY_TIMEOUT_MS;
    /* 200 = Redis and PostgreSQL up: ready.  503 is accepted only once it
     * has lasted a while (a test that starts with a backend down), not
     * during the first milliseconds when the PostgreSQL pool is still
     * connecting (a device connecting then is refused 1011, correctly). */
    let first503 = 0;
    for (;;) {
      if (this.exit) {
        throw new Error(`notisyncd exited during start-up (${JSON.stringify(this.exit)}); log ${this.logFile}:\n${tailFile(this.logFile)}`);
      }
      try {
        const r = await this.http('GET', '/health', { timeoutMs: 2000 });
        if (r.status === 200) break;
        if (r.status === 503) {
          first503 = first503 || Date.now();
          if (Date.now() - first503 >= 3000) break;
        }
      } catch {
        /* not listening yet */
      }
      if (Date.now() >= deadline) {
        throw new Error(`notisyncd not ready within ${READY_TIMEOUT_MS} ms; log ${this.logFile}:\n${tailFile(this.logFile)}`);
      }
      await sleep(150);
    }
    return this;
  }

  /* True while the process runs. */
  alive() {
    return this.exit === null && !!this.proc;
  }

  /* Sends `sig` and waits (bounded) for the exit; returns {code, signal, ms}
   * or null when it did not exit in time. */
  async signalAndWait(sig, timeoutMs) {
    if (!this.alive()) return this.exit;
    const t0 = Date.now();
    try {
      process.kill(this.pid, sig);
    } catch {
      /* already gone */
    }
    const res = await Promise.race([this.exitPromise, sleep(timeoutMs).then(() => null)]);
    return res ? { ...res, ms: Date.now() - t0 } : null;
  }

  /* SIGTERM, then SIGKILL after 10 s.  Returns the exit record. */
  async stop() {
    for (const c of this.clients) {
      try {
        c.terminate();
      } catch {
        /* ignore */
      }
    }
    if (!this.proc) return null;
    this.stopped = true;
    let res = await this.signalAndWait('SIGTERM', STOP_GRACE_MS);
    if (!res) {
      fs.appendFileSync(this.logFile, `=== harness: no exit ${STOP_GRACE_MS} ms after SIGTERM, sending SIGKILL\n`);
      res = await this.signalAndWait('SIGKILL', STOP_GRACE_MS);
      if (res) res.killed = true;
    }
    return res;
  }

  log() {
    try {
      return fs.readFileSync(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  /* An HS256 token for `sub` signed with this server's secret. */
  token(sub, extra = {}) {
    return signJwt({ alg: 'HS256', key: this.secret, payload: claims(sub, extra) });
  }

  http(method, urlPath, opts) {
    return httpRequest(this.base, method, urlPath, opts);
  }

  /* ws://127.0.0.1:PORT/ws?… with the given query parameters (undefined
   * values left out). */
  wsUrl(params = {}, wsPath = '/ws') {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) q.append(k, v);
    const qs = q.toString();
    return `ws://127.0.0.1:${this.port}${wsPath}${qs ? `?${qs}` : ''}`;
  }

  /* Opens a WebSocket (does not wait for anything). */
  ws(url, opts = {}) {
    const c = new WsClient(url, opts);
    this.clients.push(c);
    return c;
  }

  /* Connects device `deviceId` of `user` with a fresh token, waits for the
   * upgrade and the welcome frame; returns the client with `.welcome`. */
  async device(user, deviceId, { params = {}, token, headers, autoPong, label } = {}) {
    const tok = token || this.token(user);
    const c = this.ws(this.wsUrl({ token: tok, device_id: deviceId, ...params }), {
      headers,
      autoPong,
      label: label || `${user}/${deviceId}`,
    });
    await c.open();
    c.welcome = await c.next('welcome');
    return c;
  }
}

/* Creates (does not start) a server.  opts: env (extra/overriding
 * NOTISYNC_* vars; null deletes), secret (HS256 secret; null = none),
 * port, instanceId. */
function newServer(opts = {}) {
  const secret = opts.secret === null ? null : opts.secret || crypto.randomBytes(24).toString('hex');
  return new Server({ ...opts, secret });
}

/* Set-up steps of this file run one after another on one promise chain
 * that every test() awaits first.  (node 20 runs a top-level before() hook
 * at once when it is registered, so several of them would run
 * concurrently.)  A failed step fails every test with its error. */
let setupChain = Promise.resolve();

/* Queues `fn` (async) after the steps queued earlier. */
function setup(fn) {
  setupChain = setupChain.then(() => fn());
  setupChain.catch(() => {});
}

/* Starts a server before the first test of the current file; the after()
 * hook registered by this module stops it.  Returns the Server (usable once
 * set-up ran). */
function useServer(opts = {}) {
  const srv = newServer(opts);
  setup(() => srv.start());
  return srv;
}

/* ---------------------------------------------------------- redis-server */

/* Sends PING over RESP; resolves true on +PONG. */
function redisPing(port, timeoutMs = 1000) {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    let buf = '';
    const finish = (v) => {
      clearTimeout(timer);
      s.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => {
      buf += d.toString();
      if (buf.includes('\r\n')) finish(buf.startsWith('+PONG'));
    });
    s.on('error', () => finish(false));
  });
}

/* A private redis-server on a free port, run in the foreground so it is
 * stopped by PID.  No persistence, or with {aof: true} an append-only file
 * fsynced at every write (appendfsync always), kept across restarts on the
 * same port: what a restart of a durable Redis keeps. */
class PrivateRedis {
  constructor(opts = {}) {
    this.proc = null;
    this.exit = null;
    this.aof = !!opts.aof;
  }

  get url() {
    return `redis://127.0.0.1:${this.port}/0`;
  }

  /* Starts (or restarts on the same port) and waits for PONG. */
  async start(port) {
    if (this.proc && !this.exit) throw new Error('redis already running');
    this.port = port || this.port || (await freePort());
    this.dir = this.dir || fs.mkdtempSync(path.join(os.tmpdir(), 'notisync-e2e-redis-'));
    this.logFile = this.logFile || logName('redis');
    const fd = fs.openSync(this.logFile, 'a');
    this.exit = null;
    const persist = this.aof ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no'];
    this.proc = spawn('redis-server', [
      '--port', String(this.port), '--bind', '127.0.0.1', '--save', '', ...persist,
      '--dir', this.dir, '--daemonize', 'no',
    ], { stdio: ['ignore', fd, fd] });
    fs.closeSync(fd);
    this.pid = this.proc.pid;
    this.exitPromise = new Promise((resolve) => {
      this.proc.on('exit', (code, signal) => {
        this.exit = { code, signal };
        resolve(this.exit);
      });
      this.proc.on('error', (e) => {
        this.exit = { error: e.message };
        resolve(this.exit);
      });
    });
    if (!redises.includes(this)) redises.push(this);
    await until(async () => {
      if (this.exit) throw new Error(`redis-server exited: ${JSON.stringify(this.exit)} ${tailFile(this.logFile, 20)}`);
      return redisPing(this.port);
    }, { timeoutMs: 15000, intervalMs: 100, what: `redis-server on port ${this.port}` });
    return this;
  }

  /* Sends `sig` and waits (bounded) for the exit: null if it did not. */
  async kill(sig = 'SIGKILL') {
    if (!this.proc || this.exit) return this.exit;
    try {
      process.kill(this.pid, sig);
    } catch {
      /* gone */
    }
    return Promise.race([this.exitPromise, sleep(STOP_GRACE_MS).then(() => null)]);
  }

  /* SIGTERM (SIGKILL after 10 s) and wait for the exit. */
  async stop() {
    if (!this.proc || this.exit) return this.exit;
    try {
      process.kill(this.pid, 'SIGTERM');
    } catch {
      /* gone */
    }
    let res = await Promise.race([this.exitPromise, sleep(STOP_GRACE_MS).then(() => null)]);
    if (!res) {
      try {
        process.kill(this.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      res = await Promise.race([this.exitPromise, sleep(STOP_GRACE_MS).then(() => null)]);
    }
    return res;
  }
}

/* A private Redis started before the first test: a redis-server, or in
 * cluster mode a private 3-master + 3-replica cluster (same `url`). */
function useRedis() {
  const r = clusterMode() ? new (require('./rcluster').PrivateCluster)() : new PrivateRedis();
  setup(async () => {
    await r.start();
    if (r.env) {
      clusterUrls.add(r.url);
      clusterPorts.set(r.url, r.ports);
    }
  });
  return r;
}

/* ----------------------------------------------------- hooks and checks */

const SANITIZER_RE = /ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: UndefinedBehaviorSanitizer/;

function dumpLogs(reason) {
  for (const s of servers) {
    if (!s.logFile) continue;
    process.stderr.write(`\n----- ${reason}: notisyncd log ${s.logFile} (port ${s.port}, exit ${JSON.stringify(s.exit)}) -----\n`);
    process.stderr.write(`${tailFile(s.logFile)}\n`);
  }
}

/* Every process this file started is stopped here, by PID.  A sanitizer
 * report in a server log fails the file. */
nodeTest.after(async () => {
  const problems = [];
  /* A file whose every test is skipped gets here before its set-up steps
   * ran: let them finish, so that what they start is stopped too (it was
   * left running, and held the file open until ctest's timeout). */
  await setupChain.catch(() => {});
  for (const s of servers) {
    await s.stop();
    if (SANITIZER_RE.test(s.log())) problems.push(`sanitizer report in ${s.logFile}`);
  }
  for (const r of redises) {
    await r.stop();
    if (r.dir && r.exit) fs.rmSync(r.dir, { recursive: true, force: true });
  }
  if (problems.length) {
    dumpLogs('sanitizer');
    throw new Error(problems.join('; '));
  }
});

/* A file whose every test passed leaves no logs behind in $TMPDIR (the
 * runner has set the exit code by now; NS_KEEP_LOGS=1 keeps them). */
process.on('exit', (code) => {
  if (code !== 0 || failedTests > 0 || process.env.NS_KEEP_LOGS) return;
  for (const p of [...servers, ...redises]) {
    if (p.logFile) fs.rmSync(p.logFile, { force: true });
  }
});

/* node:test's test() with a default timeout and, on failure, the tail of
 * every server log of this file on stderr and the log paths in the error. */
function test(name, opts, fn) {
  if (typeof opts === 'function') {
    fn = opts;
    opts = {};
  }
  const wrapped = async (t) => {
    try {
      await setupChain;
      await fn(t);
    } catch (e) {
      failedTests += 1;
      dumpLogs(`FAILED: ${name}`);
      if (e && typeof e.message === 'string') {
        const logs = servers.map((s) => s.logFile).filter(Boolean);
        try {
          e.message += `\n(server logs: ${logs.join(', ')})`;
        } catch {
          /* read-only message */
        }
      }
      throw e;
    }
  };
  return nodeTest.test(name, { timeout: TEST_TIMEOUT_MS, ...opts }, wrapped);
}

/* ------------------------------------------------------------ assertions */

function isTimestamp(s) {
  return typeof s === 'string' && TS_RE.test(s) && !Number.isNaN(Date.parse(s));
}

/* A date string a client can parse (used for last_seen / first_seen, whose
 * format SPEC does not pin: we expect RFC 3339). */
function isDateString(s) {
  return typeof s === 'string' && /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}/.test(s) && !Number.isNaN(Date.parse(s));
}

module.exports = {
  baseEnv,
  TS_RE,
  SANITIZER_RE,
  DEFAULT_WAIT_MS,
  sleep,
  uid,
  until,
  freePort,
  services,
  binPath,
  signJwt,
  claims,
  nowS,
  keys,
  tmpFile,
  httpRequest,
  WsClient,
  Server,
  newServer,
  useServer,
  setup,
  PrivateRedis,
  useRedis,
  redisPing,
  test,
  dumpLogs,
  tailFile,
  isTimestamp,
  isDateString,
  servers,
};

/* ================================================================
 * Notification pipeline helpers (issue 3), appended: producers
 * (postNotification), durable-message views of a WsClient, auto-ack,
 * stream-id ordering, Prometheus reads, and a private Redis + PostgreSQL
 * pair (scripts/services in a directory of this file's own) that a test
 * may stop and start.
 * ================================================================ */
const { execFile } = require('node:child_process');

const DURABLE_TYPES = new Set(['new_notification', 'notification_sync']);

/* A fresh UUID (v4) for a client-supplied notification id. */
function newId() {
  return crypto.randomUUID();
}

/* A valid producer body: defaults for the required fields, `fields`
 * overrides or adds (e.g. id, source_device, user_id). */
function notificationBody(fields = {}) {
  return { app_name: 'e2e', title: `title ${uid('t')}`, body: 'hello from e2e', ...fields };
}

/* POST /api/v1/notifications as `user` (token minted by `srv` unless
 * `token` is given).  `fields` are merged over notificationBody(); pass
 * `raw` to send a body as is.  Returns the httpRequest result. */
function postNotification(srv, user, fields = {}, { token, raw, timeoutMs = 15000, headers } = {}) {
  const body = raw !== undefined ? raw : notificationBody(fields);
  return srv.http('POST', '/api/v1/notifications', {
    token: token || srv.token(user), body, timeoutMs, headers,
  });
}

/* POST /api/v1/notifications/batch with `items` as given. */
function postBatch(srv, user, items, { token, timeoutMs = 30000 } = {}) {
  return srv.http('POST', '/api/v1/notifications/batch', {
    token: token || srv.token(user), body: { notifications: items }, timeoutMs,
  });
}

/* Every durable message a client has received so far (optionally only of
 * `type`), in arrival order, from the first frame on (not the cursor). */
function durables(client, type) {
  return client.messages().filter((m) => (type ? m.type === type : DURABLE_TYPES.has(m.type)));
}

/* The notification ids (data.id) of every new_notification received. */
function notifIds(client) {
  return durables(client, 'new_notification').map((m) => m.data && m.data.id);
}

/* Makes `client` acknowledge every durable message it has received or will
 * receive (one cumulative ack per message, as soon as it is recorded).
 * Returns a function that stops the acking. */
function autoAck(client) {
  let done = 0;
  let on = true;
  const pump = () => {
    for (; on && done < client.frames.length; done += 1) {
      const m = client.frames[done].msg;
      if (m && DURABLE_TYPES.has(m.type) && typeof m.id === 'string' && client.isOpen()) {
        try {
          client.send({ type: 'ack', data: { id: m.id } });
        } catch {
          /* closing */
        }
      }
    }
  };
  client.ws.on('message', pump);
  pump();
  return () => {
    on = false;
  };
}

/* Compares two delivery ids.  Redis stream ids ("ms-seq") are compared
 * numerically; anything else as strings. */
function cmpStreamId(a, b) {
  const re = /^(\d+)-(\d+)$/;
  const ma = re.exec(a);
  const mb = re.exec(b);
  if (ma && mb) {
    const x = BigInt(ma[1]) - BigInt(mb[1]);
    if (x !== 0n) return x < 0n ? -1 : 1;
    const y = BigInt(ma[2]) - BigInt(mb[2]);
    return y === 0n ? 0 : (y < 0n ? -1 : 1);
  }
  return a < b ? -1 : (a > b ? 1 : 0);
}

/* Waits until `client` has received no new frame matching `pred` for
 * `idleMs`, bounded by `maxMs` overall (then returns anyway; the caller's
 * assertions decide).  Returns the number of matching frames. */
async function drainUntilIdle(client, { idleMs = 2000, maxMs = 60000, pred = (m) => DURABLE_TYPES.has(m.type) } = {}) {
  const t0 = Date.now();
  const count = () => client.frames.filter((f) => f.msg && pred(f.msg)).length;
  let last = count();
  let lastChange = Date.now();
  while (Date.now() - t0 < maxMs) {
    await sleep(100);
    const n = count();
    if (n !== last) {
      last = n;
      lastChange = Date.now();
    } else if (Date.now() - lastChange >= idleMs) {
      break;
    }
    if (client.closeInfo) break;
  }
  return last;
}

/* Sum of every sample of the Prometheus series `name` (with or without
 * labels; `labelRe` filters on the label text) in GET /metrics; undefined
 * when the series is absent. */
async function metricSum(srv, name, labelRe) {
  const r = await srv.http('GET', '/metrics');
  if (r.status !== 200) throw new Error(`/metrics answered ${r.status}`);
  const re = new RegExp(`^${name}(\\{[^}]*\\})? ([0-9.eE+-]+|NaN|\\+Inf)$`, 'gm');
  let sum;
  for (const m of r.text.matchAll(re)) {
    if (labelRe && !labelRe.test(m[1] || '')) continue;
    sum = (sum || 0) + Number(m[2]);
  }
  return sum;
}

/* ------------------------------------------- private Redis + PostgreSQL */

const privateServices = [];

function servicesScript() {
  const src = process.env.NS_SRC_DIR || path.resolve(__dirname, '..', '..', '..');
  return path.join(src, 'scripts', 'services');
}

/* A Redis (appendonly) + PostgreSQL pair of this file's own, run by
 * scripts/services in a fresh directory under os.tmpdir(): a test may stop
 * and restart either on the same port and data (stopPg/startPg,
 * stopRedis/startRedis).  Stopped in an after() hook. */
class PrivateServices {
  constructor() {
    this.dir = null;
    this.env = null;
  }

  get redisUrl() {
    return this.env.NOTISYNC_REDIS_URL;
  }

  get databaseUrl() {
    return this.env.NOTISYNC_DATABASE_URL;
  }

  /* Runs `scripts/services CMD DIR` (bounded); rejects on failure. */
  run(cmd, timeoutMs = 120000) {
    return new Promise((resolve, reject) => {
      execFile(servicesScript(), [cmd, this.dir], { timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
        if (err) {
          reject(new Error(`scripts/services ${cmd} ${this.dir} failed: ${err.message}\n${stderr}`));
          return;
        }
        resolve({ stdout, stderr });
      });
    });
  }

  /* In cluster mode the Redis is a private cluster with appendonly
   * (this.cluster): stopRedis/startRedis stop and restart all six nodes on
   * the same ports and data, and the services' own redis-server is stopped
   * at once (nothing may talk to it by mistake). */
  async start() {
    this.dir = this.dir || fs.mkdtempSync(path.join(os.tmpdir(), 'notisync-e2e-svc-'));
    if (!privateServices.includes(this)) privateServices.push(this);
    if (clusterMode() && !this.cluster) this.cluster = new (require('./rcluster').PrivateCluster)({ aof: true });
    await Promise.all([this.run('start'), this.cluster ? this.cluster.start() : null]);
    this.env = JSON.parse(fs.readFileSync(path.join(this.dir, 'env.json'), 'utf8'));
    if (this.cluster) {
      await this.run('stop-redis', 60000);
      delete this.env.REDIS_PORT;
      delete this.env.REDIS_PIDFILE;
      Object.assign(this.env, {
        NOTISYNC_REDIS_MODE: 'cluster',
        NOTISYNC_REDIS_URL: this.cluster.url,
        NS_CLUSTER_PORTS: this.cluster.env.NS_CLUSTER_PORTS,
        NS_CLUSTER_DIR: this.cluster.dir,
      });
      clusterUrls.add(this.cluster.url);
      clusterPorts.set(this.cluster.url, this.cluster.ports);
    }
    return this;
  }

  stopPg() { return this.run('stop-pg', 60000); }

  startPg() { return this.run('start-pg', 60000); }

  stopRedis() { return this.cluster ? this.cluster.stopNodes() : this.run('stop-redis', 60000); }

  startRedis() { return this.cluster ? this.cluster.startNodes() : this.run('start-redis', 60000); }

  async stop() {
    if (this.cluster) await this.cluster.stop();
    if (!this.dir) return;
    try {
      await this.run('stop', 60000);
      fs.rmSync(this.dir, { recursive: true, force: true });
    } catch (e) {
      process.stderr.write(`${e.message}\n`);
    }
  }
}

/* Starts a private Redis + PostgreSQL pair before the first test. */
function useServices() {
  const s = new PrivateServices();
  setup(() => s.start());
  return s;
}

/* Registered after the hook above, so the servers are stopped first. */
nodeTest.after(async () => {
  for (const s of privateServices) await s.stop();
});

Object.assign(module.exports, {
  DURABLE_TYPES,
  newId,
  notificationBody,
  postNotification,
  postBatch,
  durables,
  notifIds,
  autoAck,
  cmpStreamId,
  drainUntilIdle,
  metricSum,
  PrivateServices,
  useServices,
});

/* ================================================================
 * Comment channel helpers (issue 4), appended: public WebSocket
 * clients, the comment REST routes and their aliases, service tokens and
 * POST /api/v1/broadcast, and checks of the comment shape (SPEC §4).
 * ================================================================ */

const assert = require('node:assert/strict');

/* The public receive-only endpoints (SPEC §2). */
const PUBLIC_PATHS = ['/api/v1/ws', '/ws/public', '/'];

/* The comment collection routes of a note: the primary one first, then
 * the aliases (SPEC §6). */
const COMMENT_ROUTES = [
  (postId) => `/api/v1/notes/${postId}/comments`,
  (postId) => `/notes/${postId}/comments`,
  (postId) => `/me/notes/${postId}/comments`,
  (postId) => `/api/v1/posts/${postId}/comments`,
];

/* The collection path of `postId` under route `alias` (index into
 * COMMENT_ROUTES, default the primary), or one comment's path when `cid`
 * is given. */
function commentPath(postId, cid, alias = 0) {
  const base = COMMENT_ROUTES[alias](postId);
  return cid === undefined ? base : `${base}/${cid}`;
}

/* A unique note id made only of the allowed bytes [A-Za-z0-9._:-]. */
function newPostId(prefix = 'note') {
  return `${prefix}-${crypto.randomUUID()}`;
}

/* Opens an anonymous WebSocket on public path `wsPath` (query string in
 * `query`, headers, localAddress as for WsClient), waits for the upgrade
 * and for the answer to one `ping` (so the server has registered the
 * connection before the caller produces events); returns the client. */
async function publicClient(srv, wsPath = '/api/v1/ws', { query = '', headers, localAddress, label, ping = true } = {}) {
  const c = srv.ws(`ws://127.0.0.1:${srv.port}${wsPath}${query}`, {
    headers, localAddress, label: label || `public ${wsPath}${query}`,
  });
  await c.open();
  if (ping) await c.ping();
  return c;
}

/* POST a comment as `user` (token claims `claimsExtra`, or `token`;
 * token: null sends none).  `body` replaces {content}.  Returns the
 * httpRequest result. */
function postComment(srv, user, postId, content, { alias = 0, token, claimsExtra = {}, body, headers } = {}) {
  const tok = token === null ? undefined : token || srv.token(user, claimsExtra);
  return srv.http('POST', commentPath(postId, undefined, alias), {
    token: tok, body: body !== undefined ? body : { content }, headers,
  });
}

/* GET the comment list of `postId` (no token unless given). */
function listComments(srv, postId, { alias = 0, token } = {}) {
  return srv.http('GET', commentPath(postId, undefined, alias), { token });
}

/* PUT new `content` into comment `cid` as `user` (see postComment). */
function editComment(srv, user, postId, cid, content, { alias = 0, token, claimsExtra = {}, body } = {}) {
  const tok = token === null ? undefined : token || srv.token(user, claimsExtra);
  return srv.http('PUT', commentPath(postId, cid, alias), {
    token: tok, body: body !== undefined ? body : { content },
  });
}

/* DELETE comment `cid` as `user` (see postComment). */
function deleteComment(srv, user, postId, cid, { alias = 0, token } = {}) {
  const tok = token === null ? undefined : token || srv.token(user);
  return srv.http('DELETE', commentPath(postId, cid, alias), { token: tok });
}

/* A service token (role `service`, or `admin` when asked). */
function serviceToken(srv, role = 'service') {
  return srv.token(uid('svc'), { role });
}

/* POST /api/v1/broadcast with {type, data} (`raw` sends a body as is;
 * token: null sends none; default a service token). */
function broadcast(srv, type, data, { token, raw, timeoutMs = 15000 } = {}) {
  const tok = token === null ? undefined : token || serviceToken(srv);
  let body = raw;
  if (body === undefined) {
    body = { type };
    if (data !== undefined) body.data = data;
  }
  return srv.http('POST', '/api/v1/broadcast', { token: tok, body, timeoutMs });
}

/* Every message of `type` a client has received (from its first frame)
 * whose data.postId is `postId`. */
function postEvents(client, postId, type) {
  return client.messages().filter((m) => (!type || m.type === type) && m.data && m.data.postId === postId);
}

/* Asserts the comment object of SPEC §4 (`expect` fields compared too). */
function assertComment(c, expect = {}) {
  assert.ok(c && typeof c === 'object' && !Array.isArray(c), `comment object: ${JSON.stringify(c)}`);
  for (const k of ['id', 'content', 'username', 'userId', 'createdAt', 'updatedAt', 'postId']) {
    assert.equal(typeof c[k], 'string', `comment.${k} is a string: ${JSON.stringify(c)}`);
  }
  assert.ok(c.id.length > 0, 'comment.id not empty');
  assert.ok(isDateString(c.createdAt), `createdAt is a date: ${c.createdAt}`);
  assert.ok(isDateString(c.updatedAt), `updatedAt is a date: ${c.updatedAt}`);
  assert.ok(Date.parse(c.updatedAt) >= Date.parse(c.createdAt), `updatedAt >= createdAt: ${JSON.stringify(c)}`);
  for (const [k, v] of Object.entries(expect)) assert.equal(c[k], v, `comment.${k}: ${JSON.stringify(c)}`);
}

/* Asserts an error reply {"error":{"code","message"}} with `status`, and
 * (when given) that the error text names `field`. */
function assertHttpError(r, status, field) {
  assert.equal(r.status, status, `status ${r.status}: ${r.text}`);
  assert.ok(r.json && r.json.error && typeof r.json.error.code === 'string'
    && typeof r.json.error.message === 'string', `error shape: ${r.text}`);
  if (field) assert.ok(r.text.includes(field), `error names ${field}: ${r.text}`);
}

Object.assign(module.exports, {
  PUBLIC_PATHS,
  COMMENT_ROUTES,
  commentPath,
  newPostId,
  publicClient,
  postComment,
  listComments,
  editComment,
  deleteComment,
  serviceToken,
  broadcast,
  postEvents,
  assertComment,
  assertHttpError,
});

/* ================================================================
 * Redis Cluster (issue 13, SPEC §10), appended: talking to the Redis of
 * a test -- one redis-server or a cluster -- from the test itself.
 * lib/rcluster.js has the key slot, the RESP client and PrivateCluster.
 * ================================================================ */
const rcluster = require('./rcluster');

/* True when `url` is a cluster's seed list (a known one, or several
 * host:port separated by commas). */
function isClusterUrl(url) {
  return clusterUrls.has(url) || /^rediss?:\/\/[^/]*,/.test(url || '');
}

/* Commands whose first argument is not a key: sent to any master (the
 * caller decides whether that means anything on a cluster). */
const KEYLESS = new Set(['PING', 'INFO', 'FLUSHALL', 'FLUSHDB', 'DBSIZE', 'CLUSTER', 'KEYS', 'SCAN',
  'CONFIG', 'CLIENT', 'MONITOR', 'SELECT', 'TIME', 'SCRIPT', 'FUNCTION']);

/* The port to send `args` to on the cluster of `url`: the master of the
 * slot of its key (for PUBSUB SHARDNUMSUB/SHARDCHANNELS, of the channel). */
async function clusterPortFor(url, args) {
  const ports = clusterPorts.get(url) || rcluster.seedPorts(url);
  const cmd = String(args[0]).toUpperCase();
  let key;
  if (cmd === 'PUBSUB' || cmd === 'SPUBLISH' || cmd === 'SSUBSCRIBE') {
    key = cmd === 'PUBSUB' ? (/^SHARD/i.test(String(args[1])) ? args[2] : undefined) : args[1];
  } else if (!KEYLESS.has(cmd)) {
    key = args[1];
  }
  if (key === undefined) {
    const nodes = await rcluster.clusterNodes(ports);
    const m = nodes.find((n) => n.role === 'master' && !n.fail);
    return m ? m.port : ports[0];
  }
  return (await rcluster.masterOfSlot(ports, rcluster.keySlot(key))) || ports[0];
}

/* One redis-cli command on the Redis of `url` (a redis:// URL of one
 * server, or a cluster's seed list: then sent with -c to the master of the
 * key's slot, redirects followed); resolves its --raw output, trimmed. */
async function redisCli(url, ...args) {
  const conn = isClusterUrl(url)
    ? ['-c', '-h', '127.0.0.1', '-p', String(await clusterPortFor(url, args))]
    : ['-u', url];
  return new Promise((resolve, reject) => {
    execFile('redis-cli', [...conn, '--raw', ...args], { timeout: 5000, killSignal: 'SIGKILL' }, (err, out, stderr) => {
      if (err) reject(new Error(`redis-cli ${args.join(' ')}: ${err.message} ${stderr}`));
      else resolve(out.trim());
    });
  });
}

/* FLUSHALL on the Redis of `url`: every master of a cluster.  Only for a
 * Redis of the test's own (the shared one serves parallel test files). */
async function redisFlushAll(url) {
  if (!isClusterUrl(url)) {
    await redisCli(url, 'FLUSHALL');
    return;
  }
  const ports = clusterPorts.get(url) || rcluster.seedPorts(url);
  const masters = (await rcluster.clusterNodes(ports)).filter((n) => n.role === 'master' && !n.fail);
  for (const m of masters) {
    const r = await rcluster.command(m.port, ['FLUSHALL']);
    if (r instanceof Error) throw r;
  }
}

/* A private cluster (3 masters + 3 replicas, scripts/redis-cluster) started
 * before the first test; opts {aof}.  Whatever the mode: for tests that kill
 * nodes (cluster_failover). */
function useCluster(opts = {}) {
  const c = new rcluster.PrivateCluster(opts);
  setup(async () => {
    await c.start();
    clusterUrls.add(c.url);
    clusterPorts.set(c.url, c.ports);
  });
  return c;
}

/* Registered last: the servers are stopped first, then every private
 * cluster (by PID through scripts/redis-cluster) and its directory. */
nodeTest.after(async () => {
  await setupChain.catch(() => {});
  await rcluster.stopAllPrivateClusters();
});

Object.assign(module.exports, {
  clusterMode,
  standaloneOnly,
  isClusterUrl,
  redisCli,
  redisFlushAll,
  useCluster,
  PrivateCluster: rcluster.PrivateCluster,
  keySlot: rcluster.keySlot,
  clusterNodes: rcluster.clusterNodes,
  redisCommand: rcluster.command,
});
