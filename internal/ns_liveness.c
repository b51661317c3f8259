/*
 * ns_liveness.c -- heartbeat, instance key, reassert after an outage,
 * reaper of crashed instances, retire, and the connection counter (see
 * ns_liveness.h).
 */
#include "ns_liveness.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ns_log.h"
#include "ns_server_int.h"

#define INST_TTL_S 15
#define REAP_BATCH "500"

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

static void op_done(redisReply *r, void *arg) {
  ns_server *srv = arg;
  (void)r;
  srv->pending_ops--;
}

static void on_counted(redisReply *r, void *arg) {
  ns_server *srv = arg;
  (void)r;
  srv->count_inflight = 0;
  if (srv->count_dirty)
    ns_liveness_count(srv);
}

/* One HSET in flight at most: connects and closes while it is out are
 * summed into the next one (a reconnect storm writes the count once per
 * Redis round trip, not once per connection). */
void ns_liveness_count(ns_server *srv) {
  char stats[96], n[24];
  if (srv->count_inflight) {
    srv->count_dirty = 1;
    return;
  }
  srv->count_dirty = 0;
  ns__key(srv, stats, sizeof(stats), "stats:conn");
  snprintf(n, sizeof(n), "%zu", srv->nconns);
  if (ns_redis_cmd(srv->redis, on_counted, srv, "HSET %s %s %s", stats,
                   srv->instance_id, n) == 0)
    srv->count_inflight = 1;
}

/* Our liveness key was gone when we refreshed it: Redis lost it (restart
 * without persistence) or it ran out (an outage, a stalled loop), and a
 * survivor may have reaped our devices.  They are still connected here. */
static void on_liveness(redisReply *r, void *arg) {
  ns_server *srv = arg;
  if (r && r->type == REDIS_REPLY_NIL && srv->nconns && !srv->stopping)
    ns_liveness_reassert(srv);
}

void ns_liveness_heartbeat(ns_server *srv) {
  char inst[160], insts[96], now[24];
  ns__key(srv, inst, sizeof(inst), "inst:%s", srv->instance_id);
  ns__key(srv, insts, sizeof(insts), "instances");
  snprintf(now, sizeof(now), "%lld", (long long)ns_now_ms());
  ns_redis_cmd(srv->redis, on_liveness, srv, "SET %s 1 EX %d GET", inst,
               INST_TTL_S);
  ns_redis_cmd(srv->redis, NULL, NULL, "HSET %s %s %s", insts,
               srv->instance_id, now);
  ns_liveness_count(srv);
}

void ns_liveness_retire(ns_server *srv) {
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
  return ns_redis_eval(srv->redis, on_reaped, srv, LUA_REAP, 2, args, 8);
}

void ns_liveness_reap(ns_server *srv) { reap(srv, NULL); }

void ns_liveness_reap_own_past(ns_server *srv) {
  reap(srv, srv->instance_id);
}

/* ---- after a Redis outage ---- */

void ns_liveness_reassert(ns_server *srv) {
  ns_conn *c;
  size_t n = 0;
  char key[256], ch[256], idev[160];
  const char *args[7];
  ns__presence_idev_key(srv, idev, sizeof(idev));
  for (c = srv->conns; c; c = c->next) {
    int64_t now = ns_now_ms();
    char *val, *member, *online;
    if (c->is_public || !c->in_hub || c->state != NS_CONN_READY)
      continue;
    ns__ukey(srv, key, sizeof(key), "presence", c->who.sub, NULL);
    ns_bus_user_channel(srv, c->who.sub, ch, sizeof(ch));
    val = ns__presence_json("online", srv, c->id, now, now);
    member = ns__presence_idev_member(c->id, c->device, c->who.sub);
    online = ns__presence_status_event(c->device, "online", now);
    args[0] = key;
    args[1] = ch;
    args[2] = c->device;
    args[3] = val;
    args[4] = idev;
    args[5] = member;
    args[6] = online;
    if (ns_redis_eval(srv->redis, NULL, NULL, LUA_REASSERT, 2, args, 7) == 0)
      n++;
    free(val);
    free(member);
    free(online);
  }
  if (n)
    ns_log(NS_LOG_WARN, "liveness key of this instance had lapsed: presence "
           "of %zu devices reasserted (rewritten where it was lost)", n);
}

/* ---- totals ---- */

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

int ns_liveness_total(ns_server *srv, ns_total_cb cb, void *arg) {
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
  if (ns_redis_eval(srv->redis, on_total, op, LUA_TOTAL, 2, args, 3) != 0) {
    free(op);
    return NS_EUNAVAIL;
  }
  return 0;
}
