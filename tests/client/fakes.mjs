/*
 * fakes.mjs -- a fake clock (injected as the client's `clock`) and a fake
 * WebSocket class (injected as `WebSocket`) for the client's unit tests:
 * time only moves when a test advances it, and the test plays the server.
 */

/* Lets pending promise callbacks (the client's async steps) run. */
export async function flush(rounds = 5) {
  for (let i = 0; i < rounds; i += 1) await new Promise((r) => setImmediate(r));
}

export class FakeClock {
  constructor(start = 1_700_000_000_000) {
    this.t = start;
    this.q = [];
    this.seq = 0;
    this.now = () => this.t;
    this.setTimeout = (fn, ms) => {
      const id = ++this.seq;
      this.q.push({ id, at: this.t + Math.max(0, ms || 0), fn });
      return id;
    };
    this.clearTimeout = (id) => {
      this.q = this.q.filter((x) => x.id !== id);
    };
  }

  /* Runs every timer due within `ms` in time order (bounded count). */
  async advance(ms) {
    const end = this.t + ms;
    await flush();
    for (let i = 0; i < 100000; i += 1) {
      this.q.sort((a, b) => a.at - b.at || a.id - b.id);
      const n = this.q[0];
      if (!n || n.at > end) break;
      this.q.shift();
      this.t = n.at;
      n.fn();
      await flush();
    }
    this.t = end;
    await flush();
  }

  pending() {
    return this.q.length;
  }
}

/* A fresh fake WebSocket class whose instances are recorded in `.made`. */
export function fakeWebSocket() {
  class FakeWS {
    constructor(url) {
      this.url = url;
      this.sent = [];
      this.closedByClient = null;
      this.readyState = 0;
      FakeWS.made.push(this);
    }

    get query() {
      return new URL(this.url).searchParams;
    }

    send(s) {
      if (this.readyState !== 1) throw new Error('not open');
      this.sent.push(JSON.parse(s));
    }

    close(code) {
      this.closedByClient = code === undefined ? 1005 : code;
    }

    /* server side */
    open() {
      this.readyState = 1;
      if (this.onopen) this.onopen({});
    }

    recv(msg) {
      if (this.onmessage) this.onmessage({ data: typeof msg === 'string' ? msg : JSON.stringify(msg) });
    }

    /* Opens and sends a welcome (data merged over a default one). */
    welcome(data = {}) {
      this.open();
      this.recv({
        type: 'welcome',
        timestamp: new Date().toISOString(),
        data: {
          user_id: 'u1', device_id: this.query.get('device_id'), connection_id: `c${FakeWS.made.length}`,
          server_time: new Date().toISOString(), heartbeat_interval_s: 30, queued: 0,
          devices: [{ device_id: this.query.get('device_id'), status: 'online', last_seen: new Date().toISOString() }],
          ...data,
        },
      });
    }

    serverClose(code, reason = '') {
      this.readyState = 3;
      if (this.onclose) this.onclose({ code, reason });
    }

    sentOf(type) {
      return this.sent.filter((m) => m.type === type);
    }
  }
  FakeWS.made = [];
  FakeWS.last = () => FakeWS.made[FakeWS.made.length - 1];
  return FakeWS;
}

/* An unsigned JWT-shaped token whose payload carries `exp` (seconds). */
export function fakeJwt(payload) {
  const b = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b({ alg: 'HS256', typ: 'JWT' })}.${b(payload)}.sig`;
}
