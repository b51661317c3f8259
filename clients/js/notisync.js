/*
 * notisync.js -- the NotiSync client (ES module, no dependencies).
 *
 * Works wherever a WebSocket constructor exists: browsers, React Native,
 * Node >= 22 (global WebSocket), older Node with the `WebSocket` option
 * (e.g. the npm `ws` package).  Wire contract: SPEC.md §2-§5, §9 and
 * docs/protocol.md; the behaviour is documented in clients/js/README.md.
 *
 *   const ns = new NotiSync({ url: 'wss://host/ws', token: getToken, deviceId: 'phone-1', ack: true });
 *   ns.on('new_notification', (n) => show(n));
 *   ns.onState((s) => render(s));
 *   await ns.action(n.id, 'read');
 */

const DURABLE = new Set(['new_notification', 'notification_sync']);
/* Events the client itself emits (a broadcast of the same type reaches '*' only). */
const LOCAL_EVENTS = new Set(['*', 'auth_failed', 'replaced', 'disconnect', 'client_error']);
const DEVICE_ID_RE = /^[A-Za-z0-9._:-]{1,64}$/;
const ACTIONS = new Set(['read', 'unread', 'dismiss']);
/* 1008 reasons a fresh token may cure (SPEC §2). */
const AUTH_REASON_RE = /token/i;
/* 1008 reasons no retry can cure: a configuration error. */
const FATAL_REASON_RE = /device_id|origin/i;

const DEFAULTS = {
  ack: false,
  backoffBaseMs: 1000,
  backoffMaxMs: 30000,
  stableMs: 10000,
  connectTimeoutMs: 15000,
  heartbeatIntervalS: 30,
  pongTimeoutMs: 10000,
  ackDelayMs: 100,
  dedupeSize: 2000,
  maxQueued: 100,
  requestTimeoutMs: 60000,
  refreshLeadMs: 60000,
  sendRate: 15,
  sendBurst: 30,
  maxSubscriptions: 100,
};

class NotiSyncError extends Error {
  constructor(code, message, extra) {
    super(message || code);
    this.name = 'NotiSyncError';
    this.code = code;
    if (extra) Object.assign(this, extra);
  }
}

function jwtExpMs(token) {
  try {
    const part = String(token).split('.')[1];
    if (!part) return null;
    let b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    while (b64.length % 4) b64 += '=';
    const json = typeof atob === 'function'
      ? decodeURIComponent(Array.from(atob(b64), (c) => `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`).join(''))
      : null;
    if (!json) return null;
    const exp = JSON.parse(json).exp;
    return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : null;
  } catch {
    return null;
  }
}

/* ws(s):// URL from what the app gave: ws(s)://, http(s):// or a path
 * resolved against the page's location. */
function resolveWsUrl(url) {
  let u = String(url);
  if (u.startsWith('/') && !u.startsWith('//')) {
    const loc = globalThis.location;
    if (!loc || !loc.host) throw new TypeError('NotiSync: a relative url needs a page location; give ws(s)://host/path');
    u = `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}${u}`;
  }
  u = u.replace(/^http(s?):\/\//i, 'ws$1://');
  if (!/^wss?:\/\//i.test(u)) throw new TypeError(`NotiSync: url must be ws://, wss://, http(s):// or a path: ${url}`);
  return u;
}

/* The REST base (http(s)://host[/prefix]) of a WebSocket endpoint URL. */
function httpBaseOf(wsUrl) {
  // a regex, not URL: React Native's URL has no pathname/host getters
  const m = /^(wss?):\/\/([^/?#]+)([^?#]*)/i.exec(wsUrl);
  const proto = m[1].toLowerCase() === 'wss' ? 'https:' : 'http:';
  let p = m[3].replace(/\/+$/, '');
  for (const suffix of ['/api/v1/ws', '/ws/public', '/ws']) {
    if (p.endsWith(suffix)) {
      p = p.slice(0, -suffix.length);
      break;
    }
  }
  return `${proto}//${m[2]}${p}`;
}

function defaultClock() {
  return {
    now: () => Date.now(),
    setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
    clearTimeout: (t) => globalThis.clearTimeout(t),
  };
}

function persistentDeviceId() {
  const key = 'notisync.deviceId';
  try {
    const ls = globalThis.localStorage;
    const have = ls && ls.getItem(key);
    if (have && DEVICE_ID_RE.test(have)) return have;
    const id = globalThis.crypto && globalThis.crypto.randomUUID
      ? globalThis.crypto.randomUUID()
      : `d-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
    if (ls) ls.setItem(key, id);
    return id;
  } catch {
    return `d-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
  }
}

export class NotiSync {
  /**
   * @param {object} opts see notisync.d.ts (NotiSyncOptions)
   */
  constructor(opts = {}) {
    if (!opts || !opts.url) throw new TypeError('NotiSync: url is required');
    this._o = { ...DEFAULTS, ...opts };
    this._public = !!opts.public || opts.token === undefined || opts.token === null;
    this._url = resolveWsUrl(opts.url);
    this._httpBase = opts.httpUrl ? String(opts.httpUrl).replace(/\/+$/, '') : httpBaseOf(this._url);
    this._WS = opts.WebSocket || globalThis.WebSocket;
    if (typeof this._WS !== 'function') {
      throw new TypeError('NotiSync: no WebSocket constructor; pass one as the `WebSocket` option (e.g. from the npm "ws" package)');
    }
    this._clock = { ...defaultClock(), ...(opts.clock || {}) };
    this._random = opts.random || Math.random;
    this._fetch = opts.fetch || (typeof globalThis.fetch === 'function' ? globalThis.fetch.bind(globalThis) : null);
    if (!this._public) {
      this._deviceId = opts.deviceId === undefined ? persistentDeviceId() : String(opts.deviceId);
      if (!DEVICE_ID_RE.test(this._deviceId)) {
        throw new TypeError('NotiSync: deviceId must be 1-64 characters of [A-Za-z0-9._:-]');
      }
      this._tokenFn = typeof opts.token === 'function' ? opts.token : null;
      this._token = this._tokenFn ? null : String(opts.token);
    } else {
      this._deviceId = null;
      this._tokenFn = null;
      this._token = null;
    }
    this._ackMode = !this._public && !!this._o.ack;

    this._handlers = new Map();
    this._stateFns = new Set();
    this._state = Object.freeze({
      status: 'connecting',
      devices: [],
      lastLatencyMs: null,
      reconnects: 0,
      unread: null,
      userId: null,
      deviceId: this._deviceId,
      connectionId: null,
      lastClose: null,
      nextRetryAt: null,
    });

    this._gen = 0;
    this._ws = null;
    this._ready = false;          // welcome seen (device) / open (public)
    this._everReady = false;
    this._closed = false;
    this._attempt = 0;
    this._authRetry = false;      // the current attempt uses a token asked for after a 1008
    this._paused = false;         // offline: waiting for 'online'
    this._t = {};                 // named timers
    this._seq = 0;
    this._pending = new Map();    // ref -> request entry (unsettled)
    this._outbox = [];            // entries waiting to be sent
    this._tokens = this._o.sendBurst;
    this._tokensAt = this._clock.now();
    this._seen = new Map();       // dedupe LRU: key -> true
    this._chain = Promise.resolve();
    this._ackId = null;
    this._subs = new Set();       // postIds re-requested after a reconnect
    this._ping = null;            // {ref, at, gen}
    this._pingWaiters = new Map(); // ref -> {resolve, reject, at}

    this._setupNetwork();
    this._connect('connect');
  }

  /** A receive-only client of the public comment channel (no token). */
  static public(opts = {}) {
    return new NotiSync({ ...opts, public: true, token: undefined, deviceId: undefined, ack: false });
  }

  /* ------------------------------------------------------------ events */

  /** Registers `fn` for server messages of `type` (or a local event); returns an unsubscribe function. */
  on(type, fn) {
    if (typeof fn !== 'function') throw new TypeError('NotiSync.on: handler must be a function');
    let set = this._handlers.get(type);
    if (!set) {
      set = new Set();
      this._handlers.set(type, set);
    }
    set.add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    const set = this._handlers.get(type);
    if (set) set.delete(fn);
  }

  /** Calls every handler of `type`; returns the promises of async handlers. */
  _emit(type, ...args) {
    const set = this._handlers.get(type);
    const waits = [];
    if (!set) return waits;
    for (const fn of [...set]) {
      try {
        const r = fn(...args);
        if (r && typeof r.then === 'function') {
          waits.push(Promise.resolve(r).catch((e) => this._clientError(e)));
        }
      } catch (e) {
        if (type === 'client_error') continue;
        this._clientError(e);
      }
    }
    return waits;
  }

  _clientError(e) {
    this._emit('client_error', e instanceof Error ? e : new Error(String(e)));
  }

  /* ------------------------------------------------------------- state */

  getState() {
    return this._state;
  }

  /** Calls `fn(state)` on every change; returns an unsubscribe function. */
  onState(fn) {
    this._stateFns.add(fn);
    return () => this._stateFns.delete(fn);
  }

  _set(patch) {
    let changed = false;
    for (const k of Object.keys(patch)) {
      if (this._state[k] !== patch[k]) {
        changed = true;
        break;
      }
    }
    if (!changed) return;
    this._state = Object.freeze({ ...this._state, ...patch });
    for (const fn of [...this._stateFns]) {
      try {
        fn(this._state);
      } catch (e) {
        this._clientError(e);
      }
    }
  }

  /* ------------------------------------------------------------ timers */

  _timer(name, ms, fn) {
    this._clear(name);
    this._t[name] = this._clock.setTimeout(() => {
      delete this._t[name];
      fn();
    }, Math.max(0, ms));
  }

  _clear(name) {
    if (this._t[name] !== undefined) {
      this._clock.clearTimeout(this._t[name]);
      delete this._t[name];
    }
  }

  /* ----------------------------------------------------------- network */

  _setupNetwork() {
    const target = this._o.window !== undefined ? this._o.window : globalThis;
    const nav = this._o.navigator !== undefined ? this._o.navigator : globalThis.navigator;
    this._nav = nav && typeof nav.onLine === 'boolean' ? nav : null;
    if (!target || typeof target.addEventListener !== 'function' || !this._nav) return;
    this._netTarget = target;
    this._onOnline = () => {
      if (this._closed) return;
      if (this._paused || this._t.reconnect !== undefined) {
        this._paused = false;
        this._clear('reconnect');
        this._connect('reconnect');
      }
    };
    this._onOffline = () => {
      if (this._closed) return;
      if (this._t.reconnect !== undefined) {
        this._clear('reconnect');
        this._paused = true;
        this._set({ nextRetryAt: null });
      } else if (this._ready) {
        this._sendPing(); // a dead link shows as a missing pong
      }
    };
    target.addEventListener('online', this._onOnline);
    target.addEventListener('offline', this._onOffline);
  }

  _offline() {
    return !!this._nav && this._nav.onLine === false;
  }

  /* ---------------------------------------------------------- connect */

  async _connect(reason) {
    if (this._closed) return;
    const gen = ++this._gen;
    this._ready = false;
    this._set({ status: this._everReady || this._attempt > 0 ? 'reconnecting' : 'connecting', nextRetryAt: null });
    let token = this._token;
    if (this._tokenFn) {
      try {
        token = await this._tokenFn({ reason: this._authRetry ? 'rejected' : reason });
      } catch (e) {
        if (gen !== this._gen || this._closed) return;
        this._clientError(e);
        this._scheduleReconnect();
        return;
      }
      if (gen !== this._gen || this._closed) return;
      if (typeof token !== 'string' || !token) {
        this._clientError(new NotiSyncError('bad_token', 'NotiSync: the token function returned no token'));
        this._scheduleReconnect();
        return;
      }
      this._token = token;
    }
    let url = this._url;
    if (!this._public) {
      const q = new URLSearchParams();
      q.set('token', token);
      q.set('device_id', this._deviceId);
      if (this._o.deviceName) q.set('device_name', String(this._o.deviceName));
      if (this._o.platform) q.set('platform', String(this._o.platform));
      if (this._ackMode) q.set('ack', '1');
      url += (url.includes('?') ? '&' : '?') + q.toString();
    }
    let ws;
    try {
      ws = new this._WS(url);
    } catch (e) {
      this._clientError(e);
      this._scheduleReconnect();
      return;
    }
    this._ws = ws;
    this._timer('connect', this._o.connectTimeoutMs, () => this._abandon(1006, 'connect timeout'));
    ws.onerror = () => {};
    ws.onopen = () => {
      if (gen !== this._gen) return;
      if (this._public) this._onReady(gen, null);
    };
    ws.onmessage = (ev) => {
      if (gen !== this._gen) return;
      this._onFrame(gen, ev.data);
    };
    ws.onclose = (ev) => {
      if (gen !== this._gen) return;
      this._onClose(ev && typeof ev.code === 'number' ? ev.code : 1006, (ev && ev.reason) || '');
    };
  }

  /* Gives up on the current socket now (no close handshake waited for). */
  _abandon(code, reason) {
    const ws = this._ws;
    this._gen += 1; // late events of `ws` are ignored from here
    if (ws) {
      try {
        ws.close(1000);
      } catch {
        /* already closing */
      }
    }
    this._onClose(code, reason);
  }

  _onReady(gen, welcome) {
    this._clear('connect');
    this._ready = true;
    const patch = { status: 'connected', nextRetryAt: null };
    if (this._everReady) patch.reconnects = this._state.reconnects + 1;
    this._everReady = true;
    this._authRetry = false;
    if (welcome) {
      patch.userId = welcome.user_id ?? null;
      patch.connectionId = welcome.connection_id ?? null;
      if (Array.isArray(welcome.devices)) patch.devices = welcome.devices.map((d) => ({ ...d }));
      if (typeof welcome.unread === 'number') patch.unread = welcome.unread;
    }
    this._set(patch);
    const hb = welcome && Number(welcome.heartbeat_interval_s) > 0 ? Number(welcome.heartbeat_interval_s) : this._o.heartbeatIntervalS;
    this._hbMs = hb * 1000;
    this._timer('stable', this._o.stableMs, () => {
      this._attempt = 0;
    });
    this._sendPing();
    this._scheduleRefresh();
    // requests that waited go out first, then the note snapshots again
    this._outbox = [...this._pending.values()].filter((e) => !e.sent).sort((a, b) => a.seq - b.seq);
    for (const postId of this._subs) {
      this._outbox.push({ seq: ++this._seq, msg: { type: 'subscribe', data: { postId } }, fire: true });
    }
    this._pump();
  }

  _onClose(code, reason) {
    this._clearConnTimers();
    this._ws = null;
    this._ready = false;
    this._ackId = null; // unacked messages are replayed and deduped
    for (const e of [...this._pending.values()]) {
      if (e.kind === 'refresh') this._settle(e, new NotiSyncError('disconnected', 'connection lost'));
      else e.sent = false;
    }
    for (const [ref, w] of this._pingWaiters) {
      this._pingWaiters.delete(ref);
      w.reject(new NotiSyncError('disconnected', 'connection lost'));
    }
    this._outbox = [];
    if (this._closed) return;
    const info = { code, reason };
    this._set({ lastClose: info });

    if (code === 4000) {
      this._stop('replaced', info);
      return;
    }
    if (code === 1008 && !this._public) {
      if (FATAL_REASON_RE.test(reason)) {
        this._stop('auth_failed', info);
        return;
      }
      if (AUTH_REASON_RE.test(reason)) {
        if (!this._tokenFn || this._authRetry) {
          this._stop('auth_failed', info);
          return;
        }
        this._authRetry = true;
        this._emit('disconnect', { ...info, willReconnect: true, delayMs: 0 });
        this._set({ status: 'reconnecting' });
        this._connect('rejected');
        return;
      }
    }
    const delayMs = this._scheduleReconnect();
    this._emit('disconnect', { ...info, willReconnect: true, delayMs });
  }

  _clearConnTimers() {
    for (const n of ['connect', 'heartbeat', 'pong', 'stable', 'ack', 'refresh', 'pump', 'refreshRetry']) this._clear(n);
    this._ping = null;
  }

  /** Delay before attempt `n` (0-based): full jitter under min(max, base·2ⁿ). */
  _backoff(n) {
    const cap = Math.min(this._o.backoffMaxMs, this._o.backoffBaseMs * 2 ** Math.min(n, 30));
    return Math.floor(this._random() * cap);
  }

  _scheduleReconnect() {
    if (this._closed) return null;
    this._set({ status: 'reconnecting' });
    if (this._offline()) {
      this._paused = true;
      this._set({ nextRetryAt: null });
      return null;
    }
    const delay = this._backoff(this._attempt);
    this._attempt += 1;
    this._set({ nextRetryAt: this._clock.now() + delay });
    this._timer('reconnect', delay, () => this._connect('reconnect'));
    return delay;
  }

  _stop(event, info) {
    this._shutdown();
    this._emit(event, info);
  }

  _shutdown() {
    this._closed = true;
    this._paused = false;
    for (const n of Object.keys(this._t)) this._clear(n);
    this._ping = null;
    if (this._netTarget) {
      try {
        this._netTarget.removeEventListener('online', this._onOnline);
        this._netTarget.removeEventListener('offline', this._onOffline);
      } catch {
        /* ignore */
      }
    }
    for (const e of [...this._pending.values()]) this._settle(e, new NotiSyncError('closed', 'client closed'));
    for (const [ref, w] of this._pingWaiters) {
      this._pingWaiters.delete(ref);
      w.reject(new NotiSyncError('closed', 'client closed'));
    }
    this._outbox = [];
    this._set({ status: 'closed', nextRetryAt: null });
  }

  /** Ends the client for good: flushes a pending ack, closes with 1000, never reconnects. */
  close() {
    if (this._closed) return;
    const ws = this._ws;
    if (ws && this._ready) this._flushAck();
    this._gen += 1;
    this._ws = null;
    this._ready = false;
    this._shutdown();
    if (ws) {
      try {
        ws.close(1000);
      } catch {
        /* ignore */
      }
    }
  }

  /* ---------------------------------------------------------- inbound */

  _onFrame(gen, data) {
    if (typeof data !== 'string') return; // the server sends text only
    let msg;
    try {
      msg = JSON.parse(data);
    } catch (e) {
      this._clientError(e);
      return;
    }
    if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') return;
    const d = msg.data && typeof msg.data === 'object' ? msg.data : {};
    switch (msg.type) {
      case 'welcome':
        this._onReady(gen, d);
        break;
      case 'pong':
        this._onPong(msg);
        break;
      case 'device_status':
        this._onDeviceStatus(d);
        break;
      case 'ok':
      case 'error':
      case 'comments.list':
        this._onReply(msg, d);
        break;
      default:
        break;
    }
    if (DURABLE.has(msg.type) && !this._public) {
      this._chain = this._chain.then(() => this._onDurable(gen, msg, d));
      return;
    }
    this._dispatch(msg, d);
  }

  _dispatch(msg, d) {
    const waits = this._emit('*', msg);
    if (!LOCAL_EVENTS.has(msg.type)) waits.push(...this._emit(msg.type, d, msg));
    return waits;
  }

  _dedupeKeys(msg, d) {
    const keys = [];
    if (typeof msg.id === 'string') keys.push(`i:${msg.id}`);
    if (msg.type === 'new_notification' && typeof d.id === 'string') keys.push(`n:${d.id}`);
    return keys;
  }

  _seenHas(keys) {
    for (const k of keys) {
      if (this._seen.has(k)) return true;
    }
    return false;
  }

  _remember(keys) {
    for (const k of keys) {
      this._seen.delete(k);
      this._seen.set(k, true);
    }
    while (this._seen.size > this._o.dedupeSize) this._seen.delete(this._seen.keys().next().value);
  }

  async _onDurable(gen, msg, d) {
    const keys = this._dedupeKeys(msg, d);
    if (keys.length && this._seenHas(keys)) {
      this._remember(keys); // refresh the LRU position
      this._markHandled(gen, msg);
      return;
    }
    this._remember(keys);
    if (typeof d.unread === 'number') this._set({ unread: d.unread });
    const waits = this._dispatch(msg, d);
    if (waits.length) await Promise.all(waits);
    this._markHandled(gen, msg);
  }

  /* The app's handlers returned for `msg`: ack it (cumulatively, batched). */
  _markHandled(gen, msg) {
    if (!this._ackMode || typeof msg.id !== 'string' || gen !== this._gen || !this._ready) return;
    this._ackId = msg.id;
    if (this._t.ack === undefined) this._timer('ack', this._o.ackDelayMs, () => this._flushAck());
  }

  _flushAck() {
    this._clear('ack');
    if (this._ackId === null) return;
    const id = this._ackId;
    this._ackId = null;
    this._rawSend({ type: 'ack', data: { id } });
  }

  _onDeviceStatus(d) {
    if (typeof d.device_id !== 'string') return;
    const devices = this._state.devices.slice();
    const i = devices.findIndex((x) => x.device_id === d.device_id);
    const entry = { ...(i >= 0 ? devices[i] : {}), device_id: d.device_id, status: d.status, last_seen: d.last_seen };
    if (i >= 0) devices[i] = entry;
    else devices.push(entry);
    this._set({ devices });
  }

  _onReply(msg, d) {
    if (msg.type === 'ok' && typeof d.unread === 'number') this._set({ unread: d.unread });
    if (typeof msg.ref !== 'string') return;
    const e = this._pending.get(msg.ref);
    if (!e) return;
    if (msg.type === 'error') {
      if (d.code === 'rate_limited' && (e.retries || 0) < 5) {
        e.retries = (e.retries || 0) + 1;
        e.sent = false;
        this._clock.setTimeout(() => {
          if (this._pending.get(e.ref) === e && !e.sent && this._ready) {
            this._outbox.push(e);
            this._pump();
          }
        }, 1000 * e.retries);
        return;
      }
      this._settle(e, new NotiSyncError(d.code || 'error', d.message || d.code, { ref: msg.ref }));
      return;
    }
    if (e.expect && e.expect !== msg.type) return;
    this._settle(e, null, d);
  }

  /* ---------------------------------------------------------- outbound */

  _rawSend(msg) {
    const ws = this._ws;
    if (!ws || !this._ready) return false;
    try {
      ws.send(JSON.stringify(msg));
      return true;
    } catch (e) {
      this._clientError(e);
      return false;
    }
  }

  /* Sends queued requests while the client-side token bucket allows
   * (the server refuses more than ~20 messages/s per connection). */
  _pump() {
    this._clear('pump');
    if (!this._ready) return;
    const now = this._clock.now();
    this._tokens = Math.min(this._o.sendBurst, this._tokens + ((now - this._tokensAt) * this._o.sendRate) / 1000);
    this._tokensAt = now;
    while (this._outbox.length && this._tokens >= 1) {
      const e = this._outbox.shift();
      if (!e.fire && (this._pending.get(e.ref) !== e || e.sent)) continue;
      if (!this._rawSend(e.msg)) {
        this._outbox.unshift(e);
        return;
      }
      this._tokens -= 1;
      if (!e.fire) e.sent = true;
    }
    if (this._outbox.length) {
      this._timer('pump', Math.ceil(((1 - this._tokens) * 1000) / this._o.sendRate), () => this._pump());
    }
  }

  /* A request whose reply (`ok`, `error`, or `expect`) carries its ref. */
  _request(type, data, { kind = type, expect = null, queue = true } = {}) {
    if (this._closed) return Promise.reject(new NotiSyncError('closed', 'client closed'));
    if (this._pending.size >= this._o.maxQueued) {
      return Promise.reject(new NotiSyncError('queue_full', `more than ${this._o.maxQueued} requests waiting`));
    }
    if (!queue && !this._ready) return Promise.reject(new NotiSyncError('disconnected', 'not connected'));
    return new Promise((resolve, reject) => {
      const seq = ++this._seq;
      const ref = `r${seq}`;
      const e = { seq, ref, kind, expect, resolve, reject, sent: false, msg: { type, ref, data } };
      this._pending.set(ref, e);
      if (this._o.requestTimeoutMs > 0) {
        e.timer = this._clock.setTimeout(() => {
          this._settle(e, new NotiSyncError('timeout', `no reply to ${type} within ${this._o.requestTimeoutMs} ms`));
        }, this._o.requestTimeoutMs);
      }
      if (this._ready) {
        this._outbox.push(e);
        this._pump();
      }
    });
  }

  _settle(e, err, value) {
    if (this._pending.get(e.ref) !== e) return;
    this._pending.delete(e.ref);
    if (e.timer !== undefined) this._clock.clearTimeout(e.timer);
    if (err) e.reject(err);
    else e.resolve(value);
  }

  /**
   * Marks notification `id` read, unread or dismissed; resolves with the
   * `ok` data, rejects with a NotiSyncError whose `code` is the server's.
   * Waits (bounded by maxQueued / requestTimeoutMs) while disconnected.
   */
  action(id, action) {
    if (this._public) return Promise.reject(new NotiSyncError('read_only', 'the public channel is receive-only'));
    if (typeof id !== 'string' || !id) return Promise.reject(new TypeError('action: notification id must be a string'));
    if (!ACTIONS.has(action)) return Promise.reject(new TypeError("action: must be 'read', 'unread' or 'dismiss'"));
    return this._request('notification_action', { notification_id: id, action });
  }

  /** Bulk action (SPEC §9.5): every notification (up to `before`) read or dismissed; resolves {updated, unread}. */
  actionAll(action, { before } = {}) {
    if (this._public) return Promise.reject(new NotiSyncError('read_only', 'the public channel is receive-only'));
    if (action !== 'read' && action !== 'dismiss') return Promise.reject(new TypeError("actionAll: must be 'read' or 'dismiss'"));
    const data = { all: true, action };
    if (before) data.before = before;
    return this._request('notification_action', data);
  }

  /**
   * Asks for note `postId`'s comment snapshot; resolves with the
   * `comments.list` data (also delivered to on('comments.list')).  The
   * snapshot is asked again after every reconnect.
   */
  subscribe(postId) {
    const id = String(postId);
    if (!this._subs.has(id)) {
      if (this._subs.size >= this._o.maxSubscriptions) this._subs.delete(this._subs.values().next().value);
      this._subs.add(id);
    }
    const p = this._request('subscribe', { postId: id }, { expect: 'comments.list' });
    p.catch(() => {}); // often called without awaiting: a close() must not raise an unhandled rejection
    return p;
  }

  /** Stops re-asking `postId`'s snapshot after reconnects. */
  unsubscribe(postId) {
    this._subs.delete(String(postId));
  }

  /** Sends a `ping` now; resolves with the round-trip time in ms. */
  ping() {
    if (!this._ready) return Promise.reject(new NotiSyncError('disconnected', 'not connected'));
    return new Promise((resolve, reject) => {
      const at = this._clock.now();
      const ref = this._sendPing();
      if (!ref) reject(new NotiSyncError('disconnected', 'not connected'));
      else this._pingWaiters.set(ref, { resolve, reject, at });
    });
  }

  /* --------------------------------------------------------- heartbeat */

  _sendPing() {
    if (!this._ready) return null;
    const ref = `p${++this._seq}`;
    const at = this._clock.now();
    if (!this._rawSend({ type: 'ping', ref, data: {} })) return null;
    if (!this._ping) {
      this._ping = { ref, at };
      this._timer('pong', Math.min(this._o.pongTimeoutMs, Math.max(this._hbMs, 1000)), () => {
        this._abandon(1006, 'heartbeat timeout');
      });
    }
    this._clear('heartbeat');
    this._timer('heartbeat', this._hbMs, () => this._sendPing());
    return ref;
  }

  _onPong(msg) {
    const now = this._clock.now();
    if (this._ping && msg.ref === this._ping.ref) {
      this._set({ lastLatencyMs: now - this._ping.at });
    }
    // any pong proves the link is alive
    this._ping = null;
    this._clear('pong');
    const w = this._pingWaiters.get(msg.ref);
    if (w) {
      this._pingWaiters.delete(msg.ref);
      w.resolve(now - w.at);
    }
  }

  /* ----------------------------------------------------------- refresh */

  _scheduleRefresh() {
    this._clear('refresh');
    if (!this._tokenFn || !this._token) return;
    const exp = jwtExpMs(this._token);
    if (exp === null) return;
    const left = exp - this._clock.now();
    const lead = Math.min(this._o.refreshLeadMs, Math.max(0, left / 2));
    this._timer('refresh', Math.max(1000, left - lead), () => this._refresh(exp));
  }

  async _refresh(oldExp) {
    const gen = this._gen;
    let tok;
    try {
      tok = await this._tokenFn({ reason: 'refresh' });
      if (typeof tok !== 'string' || !tok) throw new NotiSyncError('bad_token', 'the token function returned no token');
    } catch (e) {
      if (gen === this._gen && !this._closed) {
        this._clientError(e);
        this._retryRefresh(oldExp);
      }
      return;
    }
    if (gen !== this._gen || this._closed || !this._ready) return;
    try {
      await this._request('refresh', { token: tok }, { kind: 'refresh', queue: false });
      if (gen !== this._gen) return;
      this._token = tok;
      this._scheduleRefresh();
    } catch (e) {
      if (gen !== this._gen || this._closed) return;
      this._clientError(e);
      this._retryRefresh(oldExp);
    }
  }

  /* A refused or failed refresh is tried again while the server would still
   * take one (exp + 30 s leeway); after that it closes 1008 and the
   * reconnect asks the token function anyway. */
  _retryRefresh(exp) {
    if (this._clock.now() < exp + 25000) this._timer('refreshRetry', 5000, () => this._refresh(exp));
  }

  /* -------------------------------------------------------------- REST */

  /** The REST base URL (http(s)://host[/prefix]) derived from the WebSocket URL. */
  get httpUrl() {
    return this._httpBase;
  }

  /**
   * An authenticated REST call: resolves with the parsed JSON body (null
   * for 204); rejects with NotiSyncError {code, status, field}.  A 401 asks
   * the token function for a fresh token and tries once more.
   */
  async request(method, path, body, { headers = {} } = {}) {
    if (!this._fetch) throw new NotiSyncError('no_fetch', 'no fetch(); pass the `fetch` option');
    for (let tries = 0; ; tries += 1) {
      let token = this._token;
      if (this._tokenFn && (!token || tries > 0)) {
        token = await this._tokenFn({ reason: tries > 0 ? 'rejected' : 'http' });
        this._token = token;
      }
      const h = { Accept: 'application/json', ...headers };
      if (token) h.Authorization = `Bearer ${token}`;
      if (this._deviceId && !('X-Device-ID' in h)) h['X-Device-ID'] = this._deviceId;
      const init = { method, headers: h };
      if (body !== undefined) {
        h['Content-Type'] = 'application/json';
        init.body = JSON.stringify(body);
      }
      const res = await this._fetch(this._httpBase + path, init);
      const text = await res.text();
      let json = null;
      if (text) {
        try {
          json = JSON.parse(text);
        } catch {
          json = null;
        }
      }
      if (res.status === 401 && this._tokenFn && tries === 0) continue;
      if (!res.ok) {
        const er = (json && json.error) || {};
        throw new NotiSyncError(er.code || `http_${res.status}`, er.message || `HTTP ${res.status}`, { status: res.status, field: er.field });
      }
      return json;
    }
  }

  /**
   * Fetches the notification list through GET /api/v1/notifications (what
   * to do after `queue_overflow`): resolves {notifications, next_before}.
   * `pages` > 1 follows next_before.  Also refreshes state.unread when the
   * server has GET /api/v1/notifications/unread_count.
   */
  async resync({ limit = 50, unread = false, before, pages = 1 } = {}) {
    if (this._public) throw new NotiSyncError('read_only', 'the public channel has no notifications');
    const all = [];
    let cursor = before;
    let next = null;
    for (let p = 0; p < Math.max(1, pages); p += 1) {
      const q = new URLSearchParams({ limit: String(limit) });
      if (unread) q.set('unread', '1');
      if (cursor) q.set('before', cursor);
      const r = await this.request('GET', `/api/v1/notifications?${q}`);
      const list = (r && r.notifications) || [];
      all.push(...list);
      next = (r && r.next_before) || null;
      if (!next || !list.length) break;
      cursor = next;
    }
    for (const n of all) {
      if (n && typeof n.id === 'string') this._remember([`n:${n.id}`]);
    }
    try {
      const u = await this.request('GET', '/api/v1/notifications/unread_count');
      if (u && typeof u.unread === 'number') this._set({ unread: u.unread });
    } catch {
      /* older server */
    }
    return { notifications: all, next_before: next };
  }
}

NotiSync.Error = NotiSyncError;
export { NotiSyncError };
export default NotiSync;
