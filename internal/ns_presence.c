/*
 * ns_presence.c -- device registration, presence and the per-user event bus.
 *
 * Redis layout (DESIGN.md; the braces are literal, a Redis Cluster hash tag
 * that also keeps "q:{a:b}:c" and "q:{a}:b:c" apart): presence:{user} hash
 * device -> JSON
 * {status, instance, conn, since, last_seen}; inst:{id} liveness key (TTL
 * 15 s, refreshed every 5 s); stats:conn hash instance -> connections;
 * channel u:{user} carries compact events between instances:
 *   {"k":"st","d":device,"s":"online"|"offline","ls":ms}   device status
 *   {"k":"kick","d":device,"c":conn_id}                     one conn per device
 * Presence changes run as Lua scripts so the read-modify-write and the
 * PUBLISH are atomic across instances.  A device reading `online` whose
 * instance key has expired is reported offline (crashed instance).
 *
 * Crashed instances: every instance records itself in the `instances` hash
 * (id -> last heartbeat ms) and each connection in `idev:{instance}` (a set
 * of "conn device user").  Every 5 s each instance runs LUA_REAP: for an
 * instance whose inst:{id} key has expired, it pops the members (at most
 * REAP_BATCH per run), marks offline each device whose presence still
 * belongs to that connection, publishes its offline status, and forgets the
 * instance once its set is empty.  SPOP makes each device reaped by exactly
 * one survivor.  At start-up an instance reaps its own set first (a
 * previous life with the same configured id may have been killed).
 */
#include <hiredis/hiredis.h>
#include <json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ns_log.h"
#include "ns_comments.h"
#include "ns_queue.h"
#include "ns_server_int.h"

#define INST_TTL_S 15
#define REAP_BATCH "500"

/* Connect: counts the user's live devices (other than this one) against the
 * cap, stores the new presence, records the connection in this instance's
 * idev set, and publishes either a kick for the device's previous
 * connection (it was online: no online flap) or its online status.
 * Returns -1 (cap reached), 1 (was online), 0 (came online). */
static const char LUA_CONNECT[] =
    "local h = redis.call('HGETALL', KEYS[1])\n"
    "local n, old = 0, false\n"
    "for i = 1, #h, 2 do\n"
    "  local ok, t = pcall(cjson.decode, h[i+1])\n"
    "  if ok and t.status == 'online' and (t.instance == ARGV[5] or\n"
    "     redis.call('EXISTS', ARGV[4] .. t.instance) == 1) then\n"
    "    if h[i] == ARGV[1] then old = true else n = n + 1 end\n"
    "  end\n"
    "end\n"
    "if n >= tonumber(ARGV[3]) then return -1 end\n"
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])\n"
    "redis.call('SADD', ARGV[8], ARGV[9])\n"
    "if old then redis.call('PUBLISH', KEYS[2], ARGV[7]) return 1 end\n"
    "redis.call('PUBLISH', KEYS[2], ARGV[6])\n"
    "return 0\n";

/* Offline: the connection leaves the instance's idev set; the device goes
 * offline only if the stored presence still belongs to this connection (a
 * reconnect or a newer connection elsewhere wins). */
static const char LUA_OFFLINE[] =
    "redis.call('SREM', ARGV[5], ARGV[6])\n"
    "local cur = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if not cur then return 0 end\n"
    "local ok, t = pcall(cjson.decode, cur)\n"
    "if not ok or t.conn ~= ARGV[2] then return 0 end\n"
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])\n"
    "redis.call('PUBLISH', KEYS[2], ARGV[4])\n"
    "return 1\n";

/* Reassert: a connected device's presence after a Redis outage.  Left alone
 * when it names this connection already, or another connection online (a
 * newer one elsewhere); else written and announced.  Returns 1 if
 * written. */
static const char LUA_REASSERT[] =
    "redis.call('SADD', ARGV[3], ARGV[4])\n"
    "local cur = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "local ok, t = false, nil\n"
    "if cur then ok, t = pcall(cjson.decode, cur) end\n"
    "if ok and t.status == 'online' then return 0 end\n"
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])\n"
    "redis.call('PUBLISH', KEYS[2], ARGV[5])\n"
    "return 1\n";

/* Read: [device, status, last_seen_ms, queued, ...]. */
static const char LUA_READ[] =
    "local h = redis.call('HGETALL', KEYS[1])\n"
    "local out = {}\n"
    "for i = 1, #h, 2 do\n"
    "  local ok, t = pcall(cjson.decode, h[i+1])\n"
    "  local st, ls = 'offline', 0\n"
    "  if ok then\n"
    "    ls = t.last_seen or 0\n"
    "    if t.status == 'online' and (t.instance == ARGV[3] or\n"
    "       redis.call('EXISTS', ARGV[1] .. t.instance) == 1) then\n"
    "      st = 'online' end\n"
    "  end\n"
    "  out[#out+1] = h[i]; out[#out+1] = st\n"
    "  out[#out+1] = string.format('%d', ls)\n"
    "  out[#out+1] = redis.call('XLEN', ARGV[2] .. h[i])\n"
    "end\n"
    "return out\n";

/* Total connections of live instances.  A dead one still listed in
 * `instances` (KEYS[2]) is left for LUA_REAP to forget. */
static const char LUA_TOTAL[] =
    "local h = redis.call('HGETALL', KEYS[1])\n"
    "local total = 0\n"
    "for i = 1, #h, 2 do\n"
    "  if redis.call('EXISTS', ARGV[1] .. h[i]) == 1 then\n"
    "    total = total + tonumber(h[i+1])\n"
    "  elseif redis.call('HEXISTS', KEYS[2], h[i]) == 0 then\n"
    "    redis.call('HDEL', KEYS[1], h[i])\n"
    "  end\n"
    "end\n"
    "return total\n";

/* Reap: KEYS[1] instances, KEYS[2] stats:conn; ARGV: inst: prefix, idev:
 * prefix, presence: prefix, u: prefix, batch, and optionally one instance
 * id to reap even though it is alive (our own previous life, at start-up).
 * Returns [id, devices marked offline, 1 if finished, ...]. */
static const char LUA_REAP[] =
    "local budget = tonumber(ARGV[5])\n"
    "local ids = redis.call('HKEYS', KEYS[1])\n"
    "local out = {}\n"
    "for _, id in ipairs(ids) do\n"
    "  if budget <= 0 then break end\n"
    "  if id == ARGV[6] or redis.call('EXISTS', ARGV[1] .. id) == 0 then\n"
    "    local set = ARGV[2] .. id\n"
    "    local ls = tonumber(redis.call('HGET', KEYS[1], id)) or 0\n"
    "    local ms = redis.call('SPOP', set, budget)\n"
    "    local n = 0\n"
    "    budget = budget - #ms\n"
    "    for _, m in ipairs(ms) do\n"
    "      local conn, dev, user = string.match(m, '^(%S+) (%S+) (.*)$')\n"
    "      local pk = conn and ARGV[3] .. '{' .. user .. '}'\n"
    "      local cur = conn and redis.call('HGET', pk, dev)\n"
    "      local ok, t = false, nil\n"
    "      if cur then ok, t = pcall(cjson.decode, cur) end\n"
    "      if ok and t.conn == conn and t.status == 'online' then\n"
    "        t.status = 'offline'\n"
    "        t.last_seen = ls\n"
    "        redis.call('HSET', pk, dev, cjson.encode(t))\n"
    "        redis.call('PUBLISH', ARGV[4] .. '{' .. user .. '}', cjson.encode(\n"
    "          {k = 'st', d = dev, s = 'offline', ls = ls}))\n"
    "        n = n + 1\n"
    "      end\n"
    "    end\n"
    "    local done = redis.call('SCARD', set) == 0\n"
    "    if done and id ~= ARGV[6] then\n"
    "      redis.call('HDEL', KEYS[1], id)\n"
    "      redis.call('HDEL', KEYS[2], id)\n"
    "    end\n"
    "    if n > 0 or done then\n"
    "      out[#out+1] = id; out[#out+1] = n; out[#out+1] = done and 1 or 0\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return out\n";

void ns__key(const ns_server *srv, char *buf, size_t n, const char *fmt, ...) {
  va_list ap;
  size_t p = (size_t)snprintf(buf, n, "%s", srv->prefix);
  va_start(ap, fmt);
  vsnprintf(buf + p, n - p, fmt, ap);
  va_end(ap);
}

void ns__ukey(const ns_server *srv, char *buf, size_t n, const char *kind,
              const char *user, const char *device) {
  if (device)
    ns__key(srv, buf, n, "%s:{%s}:%s", kind, user, device);
  else
    ns__key(srv, buf, n, "%s:{%s}", kind, user);
}

/* ---- small helpers ---- */

static char *presence_json(const char *status, const ns_server *srv,
                           const char *conn_id, int64_t since, int64_t ls) {
  char *s = ns_xmalloc(256);
  snprintf(s, 256,
           "{\"status\":\"%s\",\"instance\":\"%s\",\"conn\":\"%s\","
           "\"since\":%lld,\"last_seen\":%lld}",
           status, srv->instance_id, conn_id, (long long)since, (long long)ls);
  return s;
}

/* This instance's set of its connections. */
static void idev_key(const ns_server *srv, char *buf, size_t n) {
  ns__key(srv, buf, n, "idev:%s", srv->instance_id);
}

/* A connection's member of its instance's idev set: "conn device user"
 * (the user last: it may contain spaces; the others cannot). */
static char *idev_member(const char *conn_id, const char *device,
                         const char *user) {
  size_t n = strlen(conn_id) + strlen(device) + strlen(user) + 3;
  char *s = ns_xmalloc(n);
  snprintf(s, n, "%s %s %s", conn_id, device, user);
  return s;
}

static char *status_event(const char *device, const char *status, int64_t ls) {
  char *s = ns_xmalloc(160);
  snprintf(s, 160, "{\"k\":\"st\",\"d\":\"%s\",\"s\":\"%s\",\"ls\":%lld}",
           device, status, (long long)ls);
  return s;
}

static int eval(ns_server *srv, ns_redis_cb cb, void *arg, const char *script,
                int nkeys, const char **args, int nargs) {
  const char *argv[16];
  char nk[8];
  int i;
  argv[0] = "EVAL";
  argv[1] = script;
  snprintf(nk, sizeof(nk), "%d", nkeys);
  argv[2] = nk;
  for (i = 0; i < nargs && i < 13; i++)
    argv[3 + i] = args[i];
  return ns_redis_cmdargv(srv->redis, cb, arg, 3 + nargs, argv, NULL);
}

static void op_done(redisReply *r, void *arg) {
  ns_server *srv = arg;
  (void)r;
  srv->pending_ops--;
}

static void op_done_pg(PGresult *r, void *arg) {
  ns_server *srv = arg;
  (void)r;
  srv->pending_ops--;
}

void ns_presence_count(ns_server *srv) {
  char stats[96], n[24];
  ns__key(srv, stats, sizeof(stats), "stats:conn");
  snprintf(n, sizeof(n), "%zu", srv->nconns);
  ns_redis_cmd(srv->redis, NULL, NULL, "HSET %s %s %s", stats,
               srv->instance_id, n);
}

/* Our liveness key was gone when we refreshed it: Redis lost it (restart
 * without persistence) or it ran out (an outage, a stalled loop), and a
 * survivor may have reaped our devices.  They are still connected here. */
static void on_liveness(redisReply *r, void *arg) {
  ns_server *srv = arg;
  if (r && r->type == REDIS_REPLY_NIL && srv->nconns && !srv->stopping)
    ns_presence_reassert(srv);
}

void ns_presence_heartbeat(ns_server *srv) {
  char inst[160], insts[96], now[24];
  ns__key(srv, inst, sizeof(inst), "inst:%s", srv->instance_id);
  ns__key(srv, insts, sizeof(insts), "instances");
  snprintf(now, sizeof(now), "%lld", (long long)ns_now_ms());
  ns_redis_cmd(srv->redis, on_liveness, srv, "SET %s 1 EX %d GET", inst,
               INST_TTL_S);
  ns_redis_cmd(srv->redis, NULL, NULL, "HSET %s %s %s", insts,
               srv->instance_id, now);
  ns_presence_count(srv);
}

void ns_presence_retire(ns_server *srv) {
  char inst[160], stats[96];
  ns__key(srv, inst, sizeof(inst), "inst:%s", srv->instance_id);
  ns__key(srv, stats, sizeof(stats), "stats:conn");
  if (ns_redis_cmd(srv->redis, op_done, srv, "DEL %s", inst) == 0)
    srv->pending_ops++;
  if (ns_redis_cmd(srv->redis, op_done, srv, "HDEL %s %s", stats,
                   srv->instance_id) == 0)
    srv->pending_ops++;
  ns__key(srv, stats, sizeof(stats), "instances");
  if (ns_redis_cmd(srv->redis, op_done, srv, "HDEL %s %s", stats,
                   srv->instance_id) == 0)
    srv->pending_ops++;
}

/* ---- reaping crashed instances ---- */

static void on_reaped(redisReply *r, void *arg) {
  ns_server *srv = arg;
  size_t i;
  if (!r || r->type != REDIS_REPLY_ARRAY)
    return;
  for (i = 0; i + 2 < r->elements; i += 3) {
    const char *id = r->element[i]->str ? r->element[i]->str : "?";
    long long n = r->element[i + 1]->integer;
    ns_metrics_add(&srv->metrics, NS_M_CLUSTER, "devices_reaped",
                   (uint64_t)n);
    if (r->element[i + 2]->integer && strcmp(id, srv->instance_id) != 0)
      ns_metrics_inc(&srv->metrics, NS_M_CLUSTER, "instances_reaped");
    if (strcmp(id, srv->instance_id) == 0)
      ns_log(NS_LOG_INFO, "previous life of this instance: %lld devices "
             "offline", n);
    else
      ns_log(NS_LOG_INFO, "reaped instance %s: %lld devices offline%s", id,
             n, r->element[i + 2]->integer ? "" : " (more to come)");
  }
}

static int reap(ns_server *srv, const char *self) {
  char insts[96], stats[96], iprefix[96], dprefix[96], pprefix[96],
      uprefix[96];
  const char *args[8];
  ns__key(srv, insts, sizeof(insts), "instances");
  ns__key(srv, stats, sizeof(stats), "stats:conn");
  ns__key(srv, iprefix, sizeof(iprefix), "inst:");
  ns__key(srv, dprefix, sizeof(dprefix), "idev:");
  ns__key(srv, pprefix, sizeof(pprefix), "presence:");
  ns__key(srv, uprefix, sizeof(uprefix), "u:");
  args[0] = insts;
  args[1] = stats;
  args[2] = iprefix;
  args[3] = dprefix;
  args[4] = pprefix;
  args[5] = uprefix;
  /* our own previous life is reaped whole: later runs must not pop the
   * connections of this one */
  args[6] = self ? "1000000000" : REAP_BATCH;
  args[7] = self ? self : "";
  return eval(srv, on_reaped, srv, LUA_REAP, 2, args, 8);
}

void ns_presence_reap(ns_server *srv) { reap(srv, NULL); }

void ns_presence_reap_own_past(ns_server *srv) {
  reap(srv, srv->instance_id);
}

static void user_channel(const ns_server *srv, const char *user, char *buf,
                         size_t n) {
  ns__ukey(srv, buf, n, "u", user, NULL);
}

/* ---- device list: PostgreSQL rows merged with Redis presence ---- */

typedef struct devlist_op {
  ns_server *srv;
  char user[NS_SUB_MAX + 1];
  ns_devlist list;
  ns_devlist_cb cb;
  void *arg;
} devlist_op;

static void devlist_finish(devlist_op *op, int rc) {
  op->cb(rc, &op->list, op->arg);
  free(op->list.rows);
  free(op);
}

static void on_devlist_presence(redisReply *r, void *arg) {
  devlist_op *op = arg;
  size_t i, j;
  if (!r || r->type != REDIS_REPLY_ARRAY) {
    devlist_finish(op, NS_EUNAVAIL);
    return;
  }
  for (i = 0; i + 3 < r->elements; i += 4) {
    const char *dev = r->element[i]->str;
    for (j = 0; dev && j < op->list.n; j++) {
      ns_devrow *row = &op->list.rows[j];
      long long ls;
      if (strcmp(row->device_id, dev) != 0)
        continue;
      row->online = r->element[i + 1]->str &&
                    strcmp(r->element[i + 1]->str, "online") == 0;
      ls = r->element[i + 2]->str ? atoll(r->element[i + 2]->str) : 0;
      if (ls > row->last_seen_ms)
        row->last_seen_ms = ls;
      row->queued = r->element[i + 3]->integer;
    }
  }
  devlist_finish(op, 0);
}

static void on_devlist_rows(PGresult *res, void *arg) {
  devlist_op *op = arg;
  ns_server *srv = op->srv;
  char key[256], iprefix[96], qprefix[256];
  const char *args[4];
  int i, n;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
    devlist_finish(op, NS_EUNAVAIL);
    return;
  }
  n = PQntuples(res);
  op->list.rows = ns_xcalloc((size_t)(n ? n : 1), sizeof(ns_devrow));
  op->list.n = (size_t)n;
  for (i = 0; i < n; i++) {
    ns_devrow *row = &op->list.rows[i];
    snprintf(row->device_id, sizeof(row->device_id), "%s",
             PQgetvalue(res, i, 0));
    snprintf(row->name, sizeof(row->name), "%s", PQgetvalue(res, i, 1));
    snprintf(row->platform, sizeof(row->platform), "%s",
             PQgetvalue(res, i, 2));
    row->first_seen_ms = atoll(PQgetvalue(res, i, 3));
    row->last_seen_ms = atoll(PQgetvalue(res, i, 4));
  }
  ns__ukey(srv, key, sizeof(key), "presence", op->user, NULL);
  ns__key(srv, iprefix, sizeof(iprefix), "inst:");
  ns__ukey(srv, qprefix, sizeof(qprefix), "q", op->user, "");
  args[0] = key;
  args[1] = iprefix;
  args[2] = qprefix;
  args[3] = srv->instance_id;
  if (eval(srv, on_devlist_presence, op, LUA_READ, 1, args, 4) != 0)
    devlist_finish(op, NS_EUNAVAIL);
}

int ns_presence_devices(ns_server *srv, const char *user, ns_devlist_cb cb,
                        void *arg) {
  static const char sql[] =
      "SELECT device_id, coalesce(device_name, ''), coalesce(platform, ''), "
      "(extract(epoch FROM first_seen) * 1000)::bigint, "
      "(extract(epoch FROM last_seen) * 1000)::bigint "
      "FROM devices WHERE user_id = $1 ORDER BY first_seen, device_id";
  devlist_op *op;
  const char *params[1] = {user};
  if (!srv->pg_ready || !ns__server_redis_up(srv))
    return NS_EUNAVAIL;
  op = ns_xcalloc(1, sizeof(*op));
  op->srv = srv;
  snprintf(op->user, sizeof(op->user), "%s", user);
  op->cb = cb;
  op->arg = arg;
  if (ns_pg_query(ns__pg(srv), sql, 1, params, on_devlist_rows, op) != 0) {
    free(op);
    return NS_EUNAVAIL;
  }
  return 0;
}

/* ---- connect: presence, device row, welcome ---- */

static void fail_connect(ns_conn *c, int code, const char *why) {
  ns_log(NS_LOG_WARN, "conn %s: connect failed: %s", c->id, why);
  ns_conn_close(c, code, why);
}

static void json_add_str(json_object *o, const char *k, const char *v) {
  json_object_object_add(o, k, json_object_new_string(v));
}

static void on_welcome_devices(int rc, const ns_devlist *l, void *arg) {
  ns_conn *c = arg;
  json_object *d, *arr;
  char ts[NS_TS_LEN];
  size_t i, len;
  char *buf;
  ns_msg *m;
  if (!c->wsi || c->state == NS_CONN_CLOSING) {
    ns_conn_unref(c);
    return;
  }
  if (rc != 0) {
    fail_connect(c, 1011, "backend unavailable");
    ns_conn_unref(c);
    return;
  }
  d = json_object_new_object();
  json_add_str(d, "user_id", c->who.sub);
  json_add_str(d, "device_id", c->device);
  json_add_str(d, "connection_id", c->id);
  ns_format_ts(ns_now_ms(), ts);
  json_add_str(d, "server_time", ts);
  json_object_object_add(
      d, "heartbeat_interval_s",
      json_object_new_int64(c->srv->cfg->heartbeat_interval_ms / 1000));
  json_object_object_add(d, "queued", json_object_new_int64(c->queued));
  arr = json_object_new_array();
  for (i = 0; i < l->n; i++) {
    json_object *e = json_object_new_object();
    int self = strcmp(l->rows[i].device_id, c->device) == 0;
    json_add_str(e, "device_id", l->rows[i].device_id);
    json_add_str(e, "status", self || l->rows[i].online ? "online" : "offline");
    ns_format_ts(l->rows[i].last_seen_ms, ts);
    json_add_str(e, "last_seen", ts);
    json_object_array_add(arr, e);
  }
  json_object_object_add(d, "devices", arr);
  buf = ns_proto_envelope("welcome", d, NULL, NULL, ns_now_ms(), LWS_PRE, &len);
  m = ns_msg_wrap(buf, len, "welcome");
  if (m) {
    ns_conn_send_front(c, m);
    ns_msg_unref(&m);
  }
  c->state = NS_CONN_READY;
  if (c->wsi)
    lws_callback_on_writable(c->wsi);
  ns_log(NS_LOG_INFO, "conn %s: device %s of user %s online", c->id, c->device,
         c->who.sub);
  ns_conn_unref(c);
}

/* The first page of the device's queue is in the ring: now the welcome,
 * which needs the device list. */
static void on_queue_ready(int rc, ns_conn *c) {
  if (rc != 0 || !c->wsi || c->state == NS_CONN_CLOSING ||
      ns_presence_devices(c->srv, c->who.sub, on_welcome_devices, c) != 0) {
    fail_connect(c, 1011, "backend unavailable");
    ns_conn_unref(c);
  }
}

static void on_device_upserted(PGresult *res, void *arg) {
  ns_conn *c = arg;
  if (!c->wsi || c->state == NS_CONN_CLOSING) {
    ns_conn_unref(c);
    return;
  }
  if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
    fail_connect(c, 1011, "backend unavailable");
    ns_conn_unref(c);
    return;
  }
  ns_queue_attach(c, on_queue_ready); /* our reference moves along */
}

static void hub_leave(ns_conn *c) {
  ns_server *srv = c->srv;
  char ch[256];
  if (!c->in_hub)
    return;
  c->in_hub = 0;
  if (ns_hub_remove(srv->hub, c->who.sub, c->device, c) &&
      ns_hub_user_devices(srv->hub, c->who.sub) == 0) {
    user_channel(srv, c->who.sub, ch, sizeof(ch));
    ns_redis_unsubscribe(srv->redis, ch);
  }
}

static void on_connect_script(redisReply *r, void *arg) {
  static const char sql[] =
      "INSERT INTO devices (user_id, device_id, device_name, platform) "
      "VALUES ($1, $2, nullif($3, ''), nullif($4, '')) "
      "ON CONFLICT (user_id, device_id) DO UPDATE SET last_seen = now(), "
      "device_name = coalesce(excluded.device_name, devices.device_name), "
      "platform = coalesce(excluded.platform, devices.platform)";
  ns_conn *c = arg;
  const char *params[4];
  if (!c->wsi || c->state == NS_CONN_CLOSING) {
    ns_conn_unref(c);
    return;
  }
  if (!r || r->type != REDIS_REPLY_INTEGER) {
    fail_connect(c, 1011, "backend unavailable");
    ns_conn_unref(c);
    return;
  }
  if (r->integer < 0) {
    hub_leave(c);
    ns_metrics_inc(&c->srv->metrics, NS_M_HANDSHAKES, "too many devices");
    ns_conn_close(c, 1008, "too many devices");
    ns_conn_unref(c);
    return;
  }
  params[0] = c->who.sub;
  params[1] = c->device;
  params[2] = c->device_name;
  params[3] = c->platform;
  if (!c->srv->pg_ready ||
      ns_pg_query(ns__pg(c->srv), sql, 4, params, on_device_upserted, c) != 0) {
    fail_connect(c, 1011, "backend unavailable");
    ns_conn_unref(c);
  }
}

void ns_presence_connect(ns_conn *c) {
  ns_server *srv = c->srv;
  void *old = NULL;
  char key[256], ch[256], iprefix[96], max[24];
  char *val, *online, *member, kick[200], idev[160];
  const char *args[11];
  int64_t now = ns_now_ms();
  int rc;

  if (!ns__server_redis_up(srv) || !srv->pg_ready) {
    fail_connect(c, 1011, "backend unavailable");
    return;
  }
  ns_hub_add(srv->hub, c->who.sub, c->device, c, &old);
  c->in_hub = 1;
  if (old) {
    ((ns_conn *)old)->in_hub = 0;
    ns_conn_close(old, 4000, "replaced");
  }
  user_channel(srv, c->who.sub, ch, sizeof(ch));
  if (ns_hub_user_devices(srv->hub, c->who.sub) == 1)
    ns_redis_subscribe(srv->redis, ch);

  ns__ukey(srv, key, sizeof(key), "presence", c->who.sub, NULL);
  ns__key(srv, iprefix, sizeof(iprefix), "inst:");
  snprintf(max, sizeof(max), "%lld", (long long)srv->cfg->max_devices_per_user);
  val = presence_json("online", srv, c->id, now, now);
  online = status_event(c->device, "online", now);
  snprintf(kick, sizeof(kick), "{\"k\":\"kick\",\"d\":\"%s\",\"c\":\"%s\"}",
           c->device, c->id);
  idev_key(srv, idev, sizeof(idev));
  member = idev_member(c->id, c->device, c->who.sub);
  args[0] = key;
  args[1] = ch;
  args[2] = c->device;
  args[3] = val;
  args[4] = max;
  args[5] = iprefix;
  args[6] = srv->instance_id;
  args[7] = online;
  args[8] = kick;
  args[9] = idev;
  args[10] = member;
  ns_conn_ref(c);
  rc = eval(srv, on_connect_script, c, LUA_CONNECT, 2, args, 11);
  free(val);
  free(online);
  free(member);
  if (rc != 0) {
    ns_conn_unref(c);
    fail_connect(c, 1011, "backend unavailable");
  }
}

/* ---- after a Redis outage ---- */

void ns_presence_reassert(ns_server *srv) {
  ns_conn *c;
  size_t n = 0;
  char key[256], ch[256], idev[160];
  const char *args[7];
  idev_key(srv, idev, sizeof(idev));
  for (c = srv->conns; c; c = c->next) {
    int64_t now = ns_now_ms();
    char *val, *member, *online;
    if (c->is_public || !c->in_hub || c->state != NS_CONN_READY)
      continue;
    ns__ukey(srv, key, sizeof(key), "presence", c->who.sub, NULL);
    user_channel(srv, c->who.sub, ch, sizeof(ch));
    val = presence_json("online", srv, c->id, now, now);
    member = idev_member(c->id, c->device, c->who.sub);
    online = status_event(c->device, "online", now);
    args[0] = key;
    args[1] = ch;
    args[2] = c->device;
    args[3] = val;
    args[4] = idev;
    args[5] = member;
    args[6] = online;
    if (eval(srv, NULL, NULL, LUA_REASSERT, 2, args, 7) == 0)
      n++;
    free(val);
    free(member);
    free(online);
  }
  if (n)
    ns_log(NS_LOG_WARN, "liveness key of this instance had lapsed: presence "
           "of %zu devices reasserted (rewritten where it was lost)", n);
}

/* ---- disconnect ---- */

typedef struct ns_pending_off {
  uv_timer_t timer;
  ns_server *srv;
  struct ns_pending_off *prev, *next;
  char user[NS_SUB_MAX + 1];
  char device[NS_DEVICE_ID_MAX + 1];
  char conn_id[96];
} pending_off;

static void mark_offline(ns_server *srv, const char *user, const char *device,
                         const char *conn_id) {
  char key[256], ch[256];
  int64_t now = ns_now_ms();
  char *val = presence_json("offline", srv, conn_id, now, now);
  char *ev = status_event(device, "offline", now);
  char *member = idev_member(conn_id, device, user);
  char idev[160];
  const char *args[8];
  ns__ukey(srv, key, sizeof(key), "presence", user, NULL);
  user_channel(srv, user, ch, sizeof(ch));
  args[0] = key;
  args[1] = ch;
  args[2] = device;
  args[3] = conn_id;
  args[4] = val;
  args[5] = ev;
  idev_key(srv, idev, sizeof(idev));
  args[6] = idev;
  args[7] = member;
  if (eval(srv, op_done, srv, LUA_OFFLINE, 2, args, 8) == 0)
    srv->pending_ops++;
  free(val);
  free(ev);
  free(member);
}

static void pending_closed(uv_handle_t *h) { free(h->data); }

static void pending_fire(pending_off *p) {
  ns_server *srv = p->srv;
  if (p->prev)
    p->prev->next = p->next;
  else
    srv->offline = p->next;
  if (p->next)
    p->next->prev = p->prev;
  mark_offline(srv, p->user, p->device, p->conn_id);
  uv_timer_stop(&p->timer);
  uv_close((uv_handle_t *)&p->timer, pending_closed);
}

static void on_grace_over(uv_timer_t *t) { pending_fire(t->data); }

void ns_presence_flush_pending(ns_server *srv) {
  while (srv->offline)
    pending_fire(srv->offline);
}

void ns_presence_disconnect(ns_conn *c) {
  static const char sql[] = "UPDATE devices SET last_seen = now() "
                            "WHERE user_id = $1 AND device_id = $2";
  ns_server *srv = c->srv;
  const char *params[2] = {c->who.sub, c->device};
  hub_leave(c);
  if (srv->pg_ready &&
      ns_pg_query(ns__pg(srv), sql, 2, params, op_done_pg, srv) == 0)
    srv->pending_ops++;
  if (srv->cfg->presence_grace_ms <= 0 || srv->stopping) {
    mark_offline(srv, c->who.sub, c->device, c->id);
  } else {
    pending_off *p = ns_xcalloc(1, sizeof(*p));
    p->srv = srv;
    snprintf(p->user, sizeof(p->user), "%s", c->who.sub);
    snprintf(p->device, sizeof(p->device), "%s", c->device);
    snprintf(p->conn_id, sizeof(p->conn_id), "%s", c->id);
    uv_timer_init(&srv->loop, &p->timer);
    p->timer.data = p;
    p->next = srv->offline;
    if (srv->offline)
      srv->offline->prev = p;
    srv->offline = p;
    uv_timer_start(&p->timer, on_grace_over,
                   (uint64_t)srv->cfg->presence_grace_ms, 0);
  }
}

/* ---- the user bus ---- */

typedef struct status_fan {
  const char *device;
  ns_msg *msg;
} status_fan;

static void fan_status(void *conn, void *arg) {
  ns_conn *c = conn;
  status_fan *f = arg;
  if (c->state == NS_CONN_READY && strcmp(c->device, f->device) != 0)
    ns_conn_send(c, f->msg);
}

static void on_status_event(ns_server *srv, const char *user,
                            json_object *ev) {
  json_object *d, *s, *ls;
  json_object *data;
  status_fan f;
  char ts[NS_TS_LEN];
  size_t len;
  char *buf;
  if (!json_object_object_get_ex(ev, "d", &d) ||
      !json_object_object_get_ex(ev, "s", &s) ||
      !json_object_object_get_ex(ev, "ls", &ls))
    return;
  data = json_object_new_object();
  json_add_str(data, "device_id", json_object_get_string(d));
  json_add_str(data, "status", json_object_get_string(s));
  ns_format_ts(json_object_get_int64(ls), ts);
  json_add_str(data, "last_seen", ts);
  buf = ns_proto_envelope("device_status", data, NULL, NULL, ns_now_ms(),
                          LWS_PRE, &len);
  f.device = json_object_get_string(d);
  f.msg = ns_msg_wrap(buf, len, "device_status");
  if (!f.msg)
    return;
  ns_hub_each(srv->hub, user, fan_status, &f);
  ns_msg_unref(&f.msg);
}

/* A durable message was queued for these devices: each one connected here
 * reads its stream. */
static void kick_targets(ns_server *srv, const char *user, const char *csv) {
  while (csv && *csv) {
    const char *end = strchr(csv, ',');
    size_t n = end ? (size_t)(end - csv) : strlen(csv);
    char dev[NS_DEVICE_ID_MAX + 1];
    ns_conn *c;
    if (n < sizeof(dev)) {
      memcpy(dev, csv, n);
      dev[n] = '\0';
      if ((c = ns_hub_get(srv->hub, user, dev)) != NULL)
        ns_queue_kick(c);
    }
    csv = end ? end + 1 : NULL;
  }
}

void ns_presence_on_message(ns_server *srv, const char *ch, size_t chlen,
                            const char *payload, size_t len) {
  char user[NS_SUB_MAX + 1];
  size_t plen = strlen(srv->prefix) + 2;
  json_object *ev, *k, *d, *cid;
  if (chlen == plen + 3 && memcmp(ch + strlen(srv->prefix), "bcast", 5) == 0) {
    ns_comments_on_bcast(srv, payload, len);
    return;
  }
  /* u:{user} */
  if (chlen < plen + 3 || chlen - plen - 2 > NS_SUB_MAX || ch[plen] != '{' ||
      ch[chlen - 1] != '}')
    return;
  memcpy(user, ch + plen + 1, chlen - plen - 2);
  user[chlen - plen - 2] = '\0';
  {
    json_tokener *tok = json_tokener_new();
    ev = json_tokener_parse_ex(tok, payload, (int)len);
    json_tokener_free(tok);
  }
  if (!ev)
    return;
  if (json_object_object_get_ex(ev, "k", &k)) {
    const char *kind = json_object_get_string(k);
    if (strcmp(kind, "st") == 0) {
      on_status_event(srv, user, ev);
    } else if (strcmp(kind, "q") == 0 &&
               json_object_object_get_ex(ev, "t", &d)) {
      kick_targets(srv, user, json_object_get_string(d));
    } else if (strcmp(kind, "kick") == 0 &&
               json_object_object_get_ex(ev, "d", &d) &&
               json_object_object_get_ex(ev, "c", &cid)) {
      ns_conn *c = ns_hub_get(srv->hub, user, json_object_get_string(d));
      if (c && strcmp(c->id, json_object_get_string(cid)) != 0) {
        hub_leave(c);
        ns_conn_close(c, 4000, "replaced");
      }
    }
  }
  json_object_put(ev);
}

typedef struct resub {
  ns_server *srv;
  const char *last;
} resub;

static void resub_one(void *conn, void *arg) {
  ns_conn *c = conn;
  resub *r = arg;
  char ch[256];
  /* ns_hub_each visits a user's devices consecutively. */
  if (r->last && strcmp(r->last, c->who.sub) == 0)
    return;
  r->last = c->who.sub;
  user_channel(r->srv, c->who.sub, ch, sizeof(ch));
  ns_redis_subscribe(r->srv->redis, ch);
}

static void kick_one(void *conn, void *arg) {
  (void)arg;
  ns_queue_kick(conn);
}

/* Events published while the subscription was down are lost (pub/sub is
 * at-most-once): once the new subscriptions are in effect (so nothing
 * queued after the read can be missed), every device re-reads its stream. */
static void kick_all(void *arg) {
  ns_server *srv = arg;
  ns_hub_each(srv->hub, NULL, kick_one, NULL);
}

void ns_presence_resubscribe(ns_server *srv) {
  resub r = {srv, NULL};
  char ch[96];
  ns__key(srv, ch, sizeof(ch), "bcast");
  ns_redis_subscribe(srv->redis, ch);
  ns_hub_each(srv->hub, NULL, resub_one, &r);
  ns_redis_after_subscribes(srv->redis, kick_all, srv);
}

/* ---- totals and forgetting ---- */

typedef struct total_op {
  ns_total_cb cb;
  void *arg;
} total_op;

static void on_total(redisReply *r, void *arg) {
  total_op *op = arg;
  if (r && r->type == REDIS_REPLY_INTEGER)
    op->cb(0, r->integer, op->arg);
  else
    op->cb(NS_EUNAVAIL, 0, op->arg);
  free(op);
}

int ns_presence_total(ns_server *srv, ns_total_cb cb, void *arg) {
  char key[96], insts[96], iprefix[96];
  const char *args[3];
  total_op *op = ns_xmalloc(sizeof(*op));
  ns__key(srv, key, sizeof(key), "stats:conn");
  ns__key(srv, insts, sizeof(insts), "instances");
  ns__key(srv, iprefix, sizeof(iprefix), "inst:");
  args[0] = key;
  args[1] = insts;
  args[2] = iprefix;
  op->cb = cb;
  op->arg = arg;
  if (eval(srv, on_total, op, LUA_TOTAL, 2, args, 3) != 0) {
    free(op);
    return NS_EUNAVAIL;
  }
  return 0;
}

typedef struct forget_op {
  ns_server *srv;
  char user[NS_SUB_MAX + 1];
  char device[NS_DEVICE_ID_MAX + 1];
  ns_done_cb cb;
  void *arg;
} forget_op;

static void on_forget_redis(redisReply *r, void *arg) {
  forget_op *op = arg;
  op->cb(r ? 0 : NS_EUNAVAIL, op->arg);
  free(op);
}

static void on_forget_row(PGresult *res, void *arg) {
  forget_op *op = arg;
  ns_server *srv = op->srv;
  char pkey[256], qkey[300], ckey[256];
  if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
    op->cb(NS_EUNAVAIL, op->arg);
    free(op);
    return;
  }
  if (strcmp(PQcmdTuples(res), "0") == 0) {
    op->cb(NS_ENOTFOUND, op->arg);
    free(op);
    return;
  }
  ns__ukey(srv, pkey, sizeof(pkey), "presence", op->user, NULL);
  ns__ukey(srv, qkey, sizeof(qkey), "q", op->user, op->device);
  ns__ukey(srv, ckey, sizeof(ckey), "cur", op->user, NULL);
  ns_redis_cmd(srv->redis, NULL, NULL, "HDEL %s %s", pkey, op->device);
  ns_redis_cmd(srv->redis, NULL, NULL, "HDEL %s %s", ckey, op->device);
  if (ns_redis_cmd(srv->redis, on_forget_redis, op, "DEL %s", qkey) != 0) {
    op->cb(NS_EUNAVAIL, op->arg);
    free(op);
  }
}

int ns_presence_forget(ns_server *srv, const char *user, const char *device,
                       ns_done_cb cb, void *arg) {
  static const char sql[] =
      "DELETE FROM devices WHERE user_id = $1 AND device_id = $2";
  const char *params[2] = {user, device};
  forget_op *op;
  if (!srv->pg_ready || !ns__server_redis_up(srv))
    return NS_EUNAVAIL;
  op = ns_xcalloc(1, sizeof(*op));
  op->srv = srv;
  snprintf(op->user, sizeof(op->user), "%s", user);
  snprintf(op->device, sizeof(op->device), "%s", device);
  op->cb = cb;
  op->arg = arg;
  if (ns_pg_query(ns__pg(srv), sql, 2, params, on_forget_row, op) != 0) {
    free(op);
    return NS_EUNAVAIL;
  }
  return 0;
}
