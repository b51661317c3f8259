'use strict';
/*
 * faultload.js -- the common load of the fault matrix (issue 10): producers
 * posting notifications at a steady rate while every target device receives
 * in ack mode, and the bookkeeping that turns a run into figures.
 *
 *   const load = new FaultLoad(srv, { users: 2, live: 2, offline: 1, rate: 60 });
 *   await load.start();            // devices registered and connected, producers on
 *   load.markFault();  ...fault...  load.markHeal();
 *   const f = await load.finish(); // producers off, every device drained, figures
 *   load.print('redis restart', f); assertNoLoss(f);
 *
 * Per user: `live` devices connected in ack mode the whole time (each
 * reconnects by itself, every 500 ms, when its connection ends: server
 * killed, 1011 backend unavailable, ...), and `offline` devices registered
 * at the start and connected again only at the end (everything they get is
 * replayed from their queue).  Every device acknowledges what it received
 * with one cumulative ack every 100 ms (ackPump below), and once more just
 * before it closes.
 *
 * Producers: `rate` POST /api/v1/notifications per second in all (users
 * taken in turn), each with its own id, at most `maxInFlight` unanswered at
 * once (a tick that finds that many waiting posts nothing and is counted as
 * `skipped`).  An answer 201 is "acknowledged"; 503 is "refused"; a network
 * error or no answer within `postTimeoutMs` is "unanswered".
 *
 * finish(): stops the producers, waits for every answer, waits (bounded) for
 * the live devices to hold every acknowledged notification of their user,
 * then closes every device and connects it once more in ack mode to drain
 * its queue (SPEC §5.4: whatever a device has not acknowledged is replayed).
 * The figures then count, per device:
 *   delivered  distinct acknowledged notifications received;
 *   lost       acknowledged notifications of its user never received;
 *   doubled    a notification received under two delivery ids (queued
 *              twice) or twice in one connection (SPEC §5.3, §5.5);
 *   replayed   a delivery id received again on a later connection (allowed:
 *              at-least-once for what was not yet acknowledged);
 *   disorder   a delivery id first seen after a later one (SPEC §5.3).
 *
 * A durable Redis for a row is the harness's `new PrivateRedis({aof: true})`.
 */
const {
  uid, sleep, until, newId, notificationBody, postNotification, cmpStreamId,
  drainUntilIdle,
} = require('./harness');

const DURABLE = new Set(['new_notification', 'notification_sync']);

class FaultDevice {
  constructor(load, user, deviceId, live) {
    this.load = load;
    this.user = user;
    this.deviceId = deviceId;
    this.live = live;
    this.conns = [];        /* every WsClient this device opened */
    this.reconnecting = false;
    this.active = false;    /* reconnect on close while true */
    this.reconnects = 0;
    this.connectFailures = 0;
  }

  get label() {
    return `${this.user}/${this.deviceId}`;
  }

  current() {
    return this.conns[this.conns.length - 1];
  }

  async connectOnce() {
    const srv = this.load.srv;
    const c = await srv.device(this.user, this.deviceId, {
      params: { ack: '1' }, label: `${this.label}#${this.conns.length + 1}`,
    });
    this.conns.push(c);
    ackPump(c);
    c.ws.on('close', () => {
      c.stopAcks();
      if (this.active) this.reconnectSoon();
    });
    return c;
  }

  /* Connects, retrying every 500 ms until `timeoutMs` has passed. */
  async connect(timeoutMs = 30000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        return await this.connectOnce();
      } catch (e) {
        this.connectFailures += 1;
        if (Date.now() >= deadline) throw new Error(`${this.label}: no connection within ${timeoutMs} ms: ${e.message}`);
        await sleep(500);
      }
    }
  }

  reconnectSoon() {
    if (this.reconnecting) return;
    this.reconnecting = true;
    (async () => {
      while (this.active) {
        await sleep(500);
        if (!this.active) break;
        try {
          await this.connectOnce();
          this.reconnects += 1;
          break;
        } catch {
          this.connectFailures += 1;
        }
      }
      this.reconnecting = false;
    })();
  }

  /* [{nid, did, conn}] of every new_notification received, arrival order. */
  records() {
    const out = [];
    this.conns.forEach((c, i) => {
      for (const m of c.messages()) {
        if (m.type === 'new_notification' && m.data) out.push({ nid: m.data.id, did: m.id, conn: i });
      }
    });
    return out;
  }

  async stop() {
    this.active = false;
    for (let i = 0; i < 40 && this.reconnecting; i += 1) await sleep(100);
    const c = this.current();
    if (c && c.isOpen()) {
      c.flushAck();
      await c.close();
    }
  }
}

/* Acknowledges like a real ack-mode client: one cumulative ack (SPEC §4)
 * of the newest durable id every ACK_EVERY_MS while something new arrived,
 * not one per message: acks are inbound messages, and one per message at
 * 30 notifications/s per device is over client_msg_rate (20/s), which
 * ends in error rate_limited and close 1008 (SPEC §7). */
const ACK_EVERY_MS = 100;
function ackPump(c) {
  let newest = null;
  let sent = null;
  c.ws.on('message', () => {
    const f = c.frames[c.frames.length - 1];
    const m = f && f.msg;
    if (m && DURABLE.has(m.type) && typeof m.id === 'string'
      && (newest === null || cmpStreamId(m.id, newest) > 0)) newest = m.id;
  });
  c.flushAck = () => {
    if (newest === null || newest === sent || !c.isOpen()) return;
    try {
      c.send({ type: 'ack', data: { id: newest } });
      sent = newest;
    } catch {
      /* closing */
    }
  };
  const timer = setInterval(c.flushAck, ACK_EVERY_MS);
  c.stopAcks = () => clearInterval(timer);
}

class FaultLoad {
  constructor(srv, {
    users = 2, live = 2, offline = 1, rate = 60, maxInFlight = 200, postTimeoutMs = 15000, prefix = 'fault',
  } = {}) {
    this.srv = srv;
    this.rate = rate;
    this.maxInFlight = maxInFlight;
    this.postTimeoutMs = postTimeoutMs;
    this.users = Array.from({ length: users }, () => uid(prefix));
    this.devices = [];
    for (const u of this.users) {
      for (let i = 0; i < live; i += 1) this.devices.push(new FaultDevice(this, u, `live${i + 1}`, true));
      for (let i = 0; i < offline; i += 1) this.devices.push(new FaultDevice(this, u, `off${i + 1}`, false));
    }
    this.posts = [];         /* {id, user, at, status, ms} */
    this.inFlight = 0;
    this.skipped = 0;
    this.timer = null;
    this.seq = 0;
    this.faultAt = null;
    this.healAt = null;
    this.health = [];        /* {at, status} of the /health probes */
    this.probing = false;
  }

  async start() {
    for (const d of this.devices) {
      await d.connect();
      if (d.live) {
        d.active = true;
      } else {
        await d.current().close();
      }
    }
    this.startProducers();
    this.startProbe();
    return this;
  }

  startProducers() {
    const every = 1000 / this.rate;
    const t0 = Date.now();
    let fired = 0;
    /* A 10 ms tick fires what the rate owes since t0 (no drift). */
    this.timer = setInterval(() => {
      const owed = Math.floor((Date.now() - t0) / every) - fired;
      for (let i = 0; i < owed; i += 1) {
        fired += 1;
        if (this.inFlight >= this.maxInFlight) {
          this.skipped += 1;
          continue;
        }
        this.postOne();
      }
    }, 10);
  }

  postOne() {
    this.seq += 1;
    const user = this.users[this.seq % this.users.length];
    const body = notificationBody({ id: newId(), title: `fault ${this.seq}` });
    const rec = { id: body.id, user, at: Date.now(), status: null, ms: null };
    this.posts.push(rec);
    this.inFlight += 1;
    postNotification(this.srv, user, {}, { raw: body, timeoutMs: this.postTimeoutMs })
      .then((r) => {
        rec.status = r.status;
      }, (e) => {
        rec.status = 'net';
        rec.error = e.message;
      })
      .finally(() => {
        rec.ms = Date.now() - rec.at;
        rec.doneAt = Date.now();
        this.inFlight -= 1;
      });
  }

  startProbe() {
    this.probing = true;
    this.probeDone = (async () => {
      while (this.probing) {
        const at = Date.now();
        let status;
        try {
          status = (await this.srv.http('GET', '/health', { timeoutMs: 2000 })).status;
        } catch {
          status = 'net';
        }
        this.health.push({ at, doneAt: Date.now(), status });
        await sleep(100);
      }
    })();
  }

  markFault() {
    this.faultAt = Date.now();
  }

  markHeal() {
    this.healAt = Date.now();
  }

  acknowledged(user) {
    return this.posts.filter((p) => p.status === 201 && (!user || p.user === user));
  }

  /* Waits until /health answers 200 (bounded); returns the ms since heal. */
  async waitHealthy(timeoutMs = 30000) {
    await until(async () => (await this.srv.http('GET', '/health', { timeoutMs: 2000 })).status === 200, {
      timeoutMs, intervalMs: 100, what: '/health 200',
    });
    return this.healAt ? Date.now() - this.healAt : null;
  }

  /* Waits until a post made after now is answered 201 (bounded). */
  async waitAcknowledging(timeoutMs = 30000) {
    const from = Date.now();
    await until(() => this.posts.some((p) => p.at >= from && p.status === 201), {
      timeoutMs, intervalMs: 100, what: 'a 201 for a post made after the fault ended',
    });
  }

  async finish({ liveWaitMs = 20000 } = {}) {
    clearInterval(this.timer);
    this.timer = null;
    const stoppedAt = Date.now();
    await until(() => this.inFlight === 0, {
      timeoutMs: this.postTimeoutMs + 5000, intervalMs: 100, what: 'every post answered',
    });
    this.probing = false;
    await this.probeDone;
    /* live devices: wait until each holds every acknowledged notification */
    const liveStart = Date.now();
    const missingLive = (d) => {
      const got = new Set(d.records().map((r) => r.nid));
      return this.acknowledged(d.user).filter((p) => !got.has(p.id)).length;
    };
    const live = this.devices.filter((d) => d.live);
    try {
      await until(() => live.every((d) => missingLive(d) === 0), {
        timeoutMs: liveWaitMs, intervalMs: 200, what: 'live devices complete',
      });
    } catch {
      /* the drain below decides */
    }
    const liveMs = Date.now() - liveStart;
    const missingBeforeDrain = Object.fromEntries(live.map((d) => [d.label, missingLive(d)]));
    /* final drain: every device, one fresh ack-mode connection */
    for (const d of this.devices) await d.stop();
    for (const d of this.devices) {
      const c = await d.connect(30000);
      await drainUntilIdle(c, { idleMs: 1500, maxMs: 30000 });
    }
    for (const d of this.devices) await d.stop();
    return this.figures({ stoppedAt, liveMs, missingBeforeDrain });
  }

  figures(extra = {}) {
    const count = (pred) => this.posts.filter(pred).length;
    const statusCount = {};
    for (const p of this.posts) statusCount[p.status] = (statusCount[p.status] || 0) + 1;
    const perDevice = {};
    let lost = 0;
    let doubled = 0;
    let replayed = 0;
    let disorder = 0;
    const lostIds = [];
    for (const d of this.devices) {
      const recs = d.records();
      const byNid = new Map();
      const seenDid = new Set();
      const perConn = new Map();
      let devDoubled = 0;
      let devReplayed = 0;
      let devDisorder = 0;
      let lastFirstSeen = null;
      for (const r of recs) {
        if (!byNid.has(r.nid)) byNid.set(r.nid, new Set());
        const dids = byNid.get(r.nid);
        const key = `${r.conn}|${r.nid}`;
        if (perConn.has(key)) devDoubled += 1;                 /* twice in one connection */
        perConn.set(key, true);
        if (dids.size && !dids.has(r.did)) devDoubled += 1;    /* queued twice */
        dids.add(r.did);
        if (seenDid.has(r.did)) {
          devReplayed += 1;
        } else {
          seenDid.add(r.did);
          if (lastFirstSeen !== null && cmpStreamId(r.did, lastFirstSeen) < 0) devDisorder += 1;
          lastFirstSeen = r.did;
        }
      }
      const acked = this.acknowledged(d.user);
      const missing = acked.filter((p) => !byNid.has(p.id));
      lost += missing.length;
      lostIds.push(...missing.map((p) => `${d.label}:${p.id}`));
      doubled += devDoubled;
      replayed += devReplayed;
      disorder += devDisorder;
      perDevice[d.label.replace(/^.*?-([0-9a-f]{4})[0-9a-f]*\//, '$1/')] = {
        delivered: acked.length - missing.length,
        lost: missing.length,
        doubled: devDoubled,
        replayed: devReplayed,
        disorder: devDisorder,
        connections: d.conns.length,
        /* how each connection but the final drain's ended (1013, 1011, 1006...) */
        closes: d.conns.slice(0, -1).map((c) => (c.closeInfo ? c.closeInfo.code : null)),
      };
    }
    const after = (t) => (p) => t !== null && p.at >= t;
    const firstBad = this.faultAt === null ? null
      : this.health.find((h) => h.at >= this.faultAt && h.status !== 200);
    const firstRefused = this.faultAt === null ? null
      : this.posts.filter((p) => p.at >= this.faultAt && p.status !== 201 && p.status !== null)
        .sort((a, b) => a.doneAt - b.doneAt)[0];
    const firstGood = this.healAt === null ? null
      : this.health.find((h) => h.at >= this.healAt && h.status === 200);
    const firstAck = this.healAt === null ? null
      : this.posts.filter((p) => p.at >= this.healAt && p.status === 201).sort((a, b) => a.doneAt - b.doneAt)[0];
    const answered = this.posts.filter((p) => typeof p.status === 'number');
    const ms = (ps) => ps.map((p) => p.ms).sort((a, b) => a - b);
    const pct = (arr, q) => (arr.length ? arr[Math.min(arr.length - 1, Math.floor(q * arr.length))] : null);
    const refusedMs = ms(this.posts.filter((p) => p.status === 503));
    const during = this.faultAt === null ? [] : this.posts.filter(
      (p) => p.at >= this.faultAt && (this.healAt === null || p.at < this.healAt),
    );
    return {
      posted: this.posts.length,
      acknowledged: count((p) => p.status === 201),
      refused: count((p) => p.status === 503),
      unanswered: count((p) => p.status === 'net'),
      statuses: statusCount,
      skipped: this.skipped,
      during_fault: {
        posted: during.length,
        acknowledged: during.filter((p) => p.status === 201).length,
        refused: during.filter((p) => p.status === 503).length,
      },
      delivered: perDevice,
      lost,
      doubled,
      replayed,
      disorder,
      lost_ids: lostIds.slice(0, 10),
      detection_ms: firstBad ? firstBad.doneAt - this.faultAt : null,
      first_refusal_ms: firstRefused ? firstRefused.doneAt - this.faultAt : null,
      recovery_ms: firstGood ? firstGood.doneAt - this.healAt : null,
      first_ack_after_heal_ms: firstAck ? firstAck.doneAt - this.healAt : null,
      fault_ms: this.faultAt !== null && this.healAt !== null ? this.healAt - this.faultAt : null,
      post_ms_max: answered.length ? Math.max(...answered.map((p) => p.ms)) : null,
      refused_ms_p50: pct(refusedMs, 0.5),
      refused_ms_max: refusedMs.length ? refusedMs[refusedMs.length - 1] : null,
      health_probes: this.health.length,
      health_not_200: this.health.filter((h) => h.status !== 200).length,
      /* /health said 200 again after the fault was detected, before it ended */
      health_200_during_fault: firstBad ? this.health.filter(
        (h) => h.at > firstBad.at && (this.healAt === null || h.doneAt < this.healAt) && h.status === 200,
      ).length : null,
      ...extra,
    };
  }

  /* One line for the ctest log and docs/reliability.md. */
  static print(row, figures) {
    const f = { row, ...figures };
    console.log(`# FAULT FIGURES ${JSON.stringify(f)}`);
  }
}

/* The heart of every row: nothing acknowledged is lost or doubled. */
function assertNoLoss(assert, f) {
  assert.ok(f.acknowledged > 0, `some posts were acknowledged (${JSON.stringify(f.statuses)})`);
  assert.equal(f.lost, 0, `0 acknowledged notifications lost (lost: ${f.lost_ids.join(', ')})`);
  assert.equal(f.doubled, 0, '0 notifications delivered twice under different ids or in one connection');
  assert.equal(f.disorder, 0, 'every device got its queue in order');
}

module.exports = { FaultLoad, FaultDevice, assertNoLoss, DURABLE };
