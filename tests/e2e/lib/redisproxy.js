'use strict';
/*
 * redisproxy.js -- a small TCP proxy on 127.0.0.1:<free port> in front of a
 * real Redis, for the pub/sub liveness tests (cluster_pubsub.test.js).
 *
 * Every accepted connection is forwarded byte for byte to the target.  A
 * connection whose client bytes carry a SUBSCRIBE / PSUBSCRIBE command (RESP
 * bulk string, any case) is marked as a subscriber connection from then on.
 * The test can then
 *   freeze()          stop forwarding in both directions on the live
 *                     subscriber connection(s) without closing them: bytes
 *                     are read and dropped, nothing is answered, the TCP
 *                     connection stays established (a stalled subscription);
 *   killSubscriber()  destroy the live subscriber connection(s) outright
 *                     (both sockets: the client sees a reset/close).
 * New connections are forwarded normally whatever happened before.
 *
 * When the client side of a frozen connection goes away (the server dropped
 * it), its upstream socket is destroyed too, so that Redis does not keep a
 * dead subscriber.  close() destroys every socket and stops listening.
 */
const net = require('node:net');
const { listenLoopback } = require('./tcpproxy');

/* A RESP bulk string "SUBSCRIBE" or "PSUBSCRIBE" (the command name). */
const SUB_RE = /\$(9\r\nSUBSCRIBE|10\r\nPSUBSCRIBE)\r\n/i;

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

class RedisProxy {
  /* target: a redis:// URL (host, port and /db are kept for `url`). */
  constructor(targetUrl) {
    const u = new URL(targetUrl);
    this.targetHost = u.hostname;
    this.targetPort = Number(u.port || 6379);
    this.dbPath = u.pathname && u.pathname !== '/' ? u.pathname : '/0';
    this.server = null;
    this.port = null;
    this.conns = []; /* every connection ever accepted (see accept()) */
    this.seq = 0;
  }

  get url() {
    return `redis://127.0.0.1:${this.port}${this.dbPath}`;
  }

  /* Listens on 127.0.0.1:<free port>; resolves this. */
  async start() {
    ({ server: this.server, port: this.port } = await listenLoopback((client) => this.accept(client)));
    return this;
  }

  accept(client) {
    this.seq += 1;
    const c = {
      id: this.seq, client, upstream: null, sub: false, frozen: false, closed: false,
      openedAt: Date.now(), subAt: null, tail: '', dropped: 0,
    };
    this.conns.push(c);
    const upstream = net.connect({ host: this.targetHost, port: this.targetPort });
    c.upstream = upstream;
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    const finish = () => {
      if (c.closed) return;
      c.closed = true;
      c.closedAt = Date.now();
      client.destroy();
      upstream.destroy();
    };
    client.on('data', (buf) => {
      if (!c.sub) {
        /* a command name may straddle two reads: keep a short tail */
        const text = c.tail + buf.toString('latin1');
        if (SUB_RE.test(text)) {
          c.sub = true;
          c.subAt = Date.now();
        }
        c.tail = text.slice(-16);
      }
      if (c.frozen) {
        c.dropped += buf.length;
        return;
      }
      if (!upstream.write(buf)) {
        client.pause();
        upstream.once('drain', () => client.resume());
      }
    });
    upstream.on('data', (buf) => {
      if (c.frozen) {
        c.dropped += buf.length;
        return;
      }
      if (!client.write(buf)) {
        upstream.pause();
        client.once('drain', () => upstream.resume());
      }
    });
    /* The client going away always ends the pair.  Redis going away ends
     * it too unless the connection is frozen (a stall hides everything). */
    client.on('close', finish);
    client.on('error', finish);
    upstream.on('close', () => {
      if (!c.frozen) finish();
    });
    upstream.on('error', () => {
      if (!c.frozen) finish();
    });
  }

  /* Live (not closed) subscriber connections. */
  liveSubscribers() {
    return this.conns.filter((c) => c.sub && !c.closed);
  }

  /* How many subscriber connections were ever seen. */
  subscriberCount() {
    return this.conns.filter((c) => c.sub).length;
  }

  /* Waits (bounded) until at least `n` subscriber connections have been
   * seen in all; returns the newest one. */
  async waitSubscribers(n, timeoutMs = 10000) {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.subscriberCount() >= n) {
        const subs = this.conns.filter((c) => c.sub);
        return subs[subs.length - 1];
      }
      await sleep(50);
    }
    throw new Error(`redis proxy: ${this.subscriberCount()} subscriber connection(s) seen, wanted ${n} within ${timeoutMs} ms (${this.describe()})`);
  }

  /* Freezes every live subscriber connection; returns how many. */
  freeze() {
    const live = this.liveSubscribers().filter((c) => !c.frozen);
    if (!live.length) throw new Error(`redis proxy: no live subscriber connection to freeze (${this.describe()})`);
    for (const c of live) {
      c.frozen = true;
      c.frozenAt = Date.now();
    }
    return live.length;
  }

  /* Destroys every live subscriber connection; returns how many. */
  killSubscriber() {
    const live = this.liveSubscribers();
    if (!live.length) throw new Error(`redis proxy: no live subscriber connection to kill (${this.describe()})`);
    for (const c of live) {
      c.killed = true;
      c.client.destroy();
      c.upstream.destroy();
      c.closed = true;
      c.closedAt = Date.now();
    }
    return live.length;
  }

  describe() {
    return this.conns.map((c) => `#${c.id}${c.sub ? ' sub' : ''}${c.frozen ? ' frozen' : ''}${c.killed ? ' killed' : ''}${c.closed ? ' closed' : ' open'}`).join(', ');
  }

  /* Destroys every connection and stops listening. */
  async close() {
    for (const c of this.conns) {
      c.closed = true;
      c.client.destroy();
      if (c.upstream) c.upstream.destroy();
    }
    if (this.server) {
      await new Promise((resolve) => this.server.close(() => resolve()));
      this.server = null;
    }
  }
}

module.exports = { RedisProxy };
