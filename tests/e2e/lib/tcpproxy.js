'use strict';
/*
 * tcpproxy.js -- a generic TCP proxy on 127.0.0.1:<free port> in front of a
 * real server (Redis, PostgreSQL), for the fault matrix (issue 10).  Modes,
 * switched at any time and applied to every connection, live and new:
 *
 *   pass()       forward bytes both ways as they come;
 *   blackhole()  a network that swallows packets: every connection stays
 *                open and the proxy keeps reading from both sides, but
 *                nothing is forwarded (held in memory instead); a new
 *                connection is accepted and read, but its upstream is only
 *                dialled when the black hole ends.  Nothing is ever answered
 *                meanwhile, nothing is closed.
 *                Leaving the black hole (pass() or delay()) is a healed
 *                partition: what was held is forwarded in order, as TCP
 *                retransmission would, and the connections go on;
 *   delay(ms)    every chunk the client sends reaches the server `ms` later
 *                (order kept: a chunk never overtakes an earlier one); the
 *                answers are not delayed.  For a request/response protocol
 *                with one request in flight per connection (libpq) that is
 *                `ms` added to every statement.
 *
 * close() destroys every socket and stops listening.  Counters: accepted,
 * bytes held, chunks delayed.
 */
const net = require('node:net');

/* A server on 127.0.0.1:<free port> handing each connection to `onConn`,
 * unref'd (it never keeps a test file alive): resolves {server, port}. */
function listenLoopback(onConn) {
  return new Promise((resolve, reject) => {
    const server = net.createServer(onConn);
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.unref();
      resolve({ server, port: server.address().port });
    });
  });
}

class TcpProxy {
  /* target: {host, port}, or a URL whose host and port are taken. */
  constructor(target) {
    if (typeof target === 'string') {
      const u = new URL(target);
      this.targetHost = u.hostname || '127.0.0.1';
      this.targetPort = Number(u.port);
    } else {
      this.targetHost = target.host || '127.0.0.1';
      this.targetPort = Number(target.port);
    }
    this.mode = 'pass';
    this.delayMs = 0;
    this.server = null;
    this.port = null;
    this.conns = new Set();
    this.accepted = 0;
    this.heldBytes = 0;
    this.delayedChunks = 0;
  }

  /* Listens on 127.0.0.1:<free port>; resolves this. */
  async start() {
    ({ server: this.server, port: this.port } = await listenLoopback((client) => this.accept(client)));
    return this;
  }

  accept(client) {
    this.accepted += 1;
    const c = {
      client, upstream: null, closed: false,
      toUp: [],        /* client chunks held (black hole) or not yet connected */
      toClient: [],    /* server chunks held (black hole) */
      upReady: false,
      lastDue: 0,      /* delay mode: when the last scheduled chunk goes */
      timers: new Set(),
    };
    this.conns.add(c);
    client.setNoDelay(true);
    const finish = () => {
      if (c.closed) return;
      c.closed = true;
      for (const t of c.timers) clearTimeout(t);
      c.timers.clear();
      client.destroy();
      if (c.upstream) c.upstream.destroy();
      this.conns.delete(c);
    };
    c.finish = finish;
    client.on('data', (buf) => this.fromClient(c, buf));
    client.on('close', finish);
    client.on('error', finish);
    if (this.mode !== 'blackhole') this.dial(c);
  }

  /* Connects the upstream side of `c` (once). */
  dial(c) {
    if (c.upstream || c.closed) return;
    const up = net.connect({ host: this.targetHost, port: this.targetPort });
    c.upstream = up;
    up.setNoDelay(true);
    up.on('connect', () => {
      c.upReady = true;
      this.flush(c);
    });
    up.on('data', (buf) => {
      if (this.mode === 'blackhole') {
        c.toClient.push(buf);
        this.heldBytes += buf.length;
        return;
      }
      c.client.write(buf);
    });
    up.on('close', () => c.finish());
    up.on('error', () => c.finish());
  }

  fromClient(c, buf) {
    if (this.mode === 'blackhole') {
      c.toUp.push(buf);
      this.heldBytes += buf.length;
      return;
    }
    if (this.mode === 'delay' && this.delayMs > 0) {
      this.delayedChunks += 1;
      const due = Math.max(Date.now() + this.delayMs, c.lastDue);
      c.lastDue = due;
      const t = setTimeout(() => {
        c.timers.delete(t);
        this.sendUp(c, buf);
      }, due - Date.now());
      c.timers.add(t);
      return;
    }
    if (c.lastDue > Date.now()) {
      /* chunks delayed before a switch to pass still go first */
      const t = setTimeout(() => {
        c.timers.delete(t);
        this.sendUp(c, buf);
      }, c.lastDue - Date.now());
      c.timers.add(t);
      return;
    }
    this.sendUp(c, buf);
  }

  sendUp(c, buf) {
    if (c.closed) return;
    if (!c.upReady || c.toUp.length) {
      c.toUp.push(buf);
      return;
    }
    c.upstream.write(buf);
  }

  /* Forwards what `c` holds (leaving a black hole, or once connected). */
  flush(c) {
    if (c.closed || this.mode === 'blackhole') return;
    if (c.upReady) {
      const up = c.toUp;
      c.toUp = [];
      for (const b of up) c.upstream.write(b);
    }
    const down = c.toClient;
    c.toClient = [];
    for (const b of down) c.client.write(b);
  }

  setMode(mode, delayMs = 0) {
    this.mode = mode;
    this.delayMs = delayMs;
    if (mode === 'blackhole') return;
    for (const c of this.conns) {
      if (!c.upstream) this.dial(c);
      else this.flush(c);
    }
  }

  pass() { this.setMode('pass'); }

  blackhole() { this.setMode('blackhole'); }

  delay(ms) { this.setMode('delay', ms); }

  /* Live connections. */
  get connections() {
    return this.conns.size;
  }

  async close() {
    for (const c of [...this.conns]) c.finish();
    if (this.server) {
      await new Promise((resolve) => this.server.close(() => resolve()));
      this.server = null;
    }
  }
}

module.exports = { TcpProxy, listenLoopback };
