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
#define INST_TTL_MS "15000"
#define REAP_BATCH 500
#define REAP_MAX_DEAD "64"     /* instances named by one run at most */
#define REAP_RECLAIM_MS "30000" /* a claim this old is taken again */

/* Heartbeat (KEYS: instances:{ns}): our entry, in Redis's clock, so that
 * the instances' clocks do not matter. */
static const char LUA_BEAT[] =
    "local t = redis.call('TIME')\n"
    "redis.call('HSET', KEYS[1], ARGV[1],\n"
    "  string.format('%.0f', tonumber(t[1]) * 1000 +\n"
    "                math.floor(tonumber(t[2]) / 1000)))\n"
    "return 1\n";

/* Reassert (KEYS: presence:{user}, u:{user}): a connected device's presence
 * after our liveness key had lapsed.  An entry naming this connection
 * online only takes the new generation ARGV[4] (silently); one naming
 * another connection online is left alone (a newer one elsewhere); else
 * the entry ARGV[2] is written and announced.  Returns 1 if announced. */
static const char LUA_REASSERT[] =
    "local cur = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "local ok, t = false, nil\n"
    "if cur then ok, t = pcall(cjson.decode, cur) end\n"
    "if ok and type(t) == 'table' and t.status == 'online' then\n"
    "  if t.conn == ARGV[5] then\n"
    "    t.gen = ARGV[4]\n"
    "    redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(t))\n"
    "  end\n"
    "  return 0\n"
    "end\n"
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])\n"
    "redis.call('PUBLISH', KEYS[2], ARGV[3])\n"
    "return 1\n";

/* Total (KEYS: stats:conn:{ns}, instances:{ns}; ARGV: TTL ms): the
 * connections of live instances.  A dead one still listed in instances is
 * left for the reaper to forget; a count without an instance is dropped. */
static const char LUA_TOTAL[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local hb, ttl = {}, tonumber(ARGV[1])\n"
    "local l = redis.call('HGETALL', KEYS[2])\n"
    "for i = 1, #l, 2 do hb[l[i]] = tonumber(l[i+1]) or 0 end\n"
    "local h = redis.call('HGETALL', KEYS[1])\n"
    "local total = 0\n"
    "for i = 1, #h, 2 do\n"
    "  local b = hb[h[i]]\n"
    "  if b and now - b <= ttl then\n"
    "    total = total + (tonumber(h[i+1]) or 0)\n"
    "  elseif not b then\n"
    "    redis.call('HDEL', KEYS[1], h[i])\n"
    "  end\n"
    "end\n"
    "return total\n";

/* Reaper step 1 (KEYS: instances:{ns}; ARGV: TTL ms, our id, max): the
 * instances whose heartbeat is older than the TTL, [id, heartbeat, ...]. */
static const char LUA_DEAD[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local h = redis.call('HGETALL', KEYS[1])\n"
    "local out = {}\n"
    "for i = 1, #h, 2 do\n"
    "  if h[i] ~= ARGV[2] and\n"
    "     now - (tonumber(h[i+1]) or 0) > tonumber(ARGV[1]) then\n"
    "    out[#out+1] = h[i]; out[#out+1] = h[i+1]\n"
    "    if #out >= 2 * tonumber(ARGV[3]) then break end\n"
    "  end\n"
    "end\n"
    "return out\n";

/* Reaper step 2 (KEYS: inst:{id}, idev:{id}, idev:{id}:claim; ARGV: batch,
 * reclaim ms): {-1} while the instance is alive; else {0, member, ...}:
 * claims older than the reclaim age first, then members popped from the
 * set, all (re)claimed now. */
static const char LUA_CLAIM[] =
    "if redis.call('EXISTS', KEYS[1]) == 1 then return {-1} end\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local n = tonumber(ARGV[1])\n"
    "local ms = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf',\n"
    "  string.format('%.0f', now - tonumber(ARGV[2])), 'LIMIT', 0, n)\n"
    "if #ms < n then\n"
    "  for _, m in ipairs(redis.call('SPOP', KEYS[2], n - #ms)) do\n"
    "    ms[#ms+1] = m\n"
    "  end\n"
    "end\n"
    "local out, z = {0}, {}\n"
    "for _, m in ipairs(ms) do\n"
    "  out[#out+1] = m; z[#z+1] = string.format('%.0f', now); z[#z+1] = m\n"
    "end\n"
    "if #z > 0 then redis.call('ZADD', KEYS[3], unpack(z)) end\n"
    "return out\n";

/* Reaper step 3 (KEYS: presence:{user}, u:{user}; ARGV: device, conn, gen,
 * last seen, event): the device goes offline if its entry still names
 * that connection and generation online.  Returns 1 if marked. */
static const char LUA_REAP_DEV[] =
    "local cur = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if not cur then return 0 end\n"
    "local ok, t = pcall(cjson.decode, cur)\n"
    "if not ok or type(t) ~= 'table' or t.conn ~= ARGV[2] or\n"
    "   t.status ~= 'online' or tostring(t.gen) ~= ARGV[3] then\n"
    "  return 0\n"
    "end\n"
    "t.status = 'offline'\n"
    "t.last_seen = tonumber(ARGV[4])\n"
    "redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(t))\n"
    "redis.call('PUBLISH', KEYS[2], ARGV[5])\n"
    "return 1\n";

/* Reaper step 4a (KEYS: idev:{id}, idev:{id}:claim; ARGV: the handled
 * members): they leave the claim set; returns what is left in both. */
static const char LUA_RELEASE[] =
    "for i = 1, #ARGV, 500 do\n"
    "  redis.call('ZREM', KEYS[2], unpack(ARGV, i, math.min(i + 499, #ARGV)))\n"
    "end\n"
    "return redis.call('SCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2])\n";

/* Reaper step 4b (KEYS: instances:{ns}, stats:conn:{ns}; ARGV: id, TTL
 * ms): forgets the instance unless its heartbeat is young again.  Returns
 * 1 if forgotten. */
static const char LUA_FORGET[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local hb = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '')\n"
    "if hb and now - hb <= tonumber(ARGV[2]) then return 0 end\n"
    "redis.call('HDEL', KEYS[2], ARGV[1])\n"
    "return redis.call('HDEL', KEYS[1], ARGV[1])\n";

int64_t ns_liveness_gen(ns_server *srv) {
  if (!srv->gen)
    srv->gen = srv->start_ms;
  return srv->gen;
}

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
  ns__key(srv, stats, sizeof(stats), "stats:conn:{ns}");
  snprintf(n, sizeof(n), "%zu", srv->nconns);
  if (ns_redis_cmd(srv->redis, on_counted, srv, "HSET %s %s %s", stats,
                   srv->instance_id, n) == 0)
    srv->count_inflight = 1;
}

/* Our liveness key was gone when we refreshed it: Redis lost it (restart
 * without persistence) or it ran out (an outage, a stalled loop), and a
 * survivor may have reaped our devices, or hold claims on them that it
 * has not handled yet.  They are still connected here: a new generation,
 * so that those claims no longer match, and the presence written again. */
static void on_liveness(redisReply *r, void *arg) {
  ns_server *srv = arg;
  if (r && r->type == REDIS_REPLY_NIL && !srv->stopping) {
    int64_t now = ns_now_ms(), gen = ns_liveness_gen(srv);
    srv->gen = now > gen ? now : gen + 1;
    if (srv->nconns)
      ns_liveness_reassert(srv);
  }
}

void ns_liveness_heartbeat(ns_server *srv) {
  char inst[160], insts[96];
  const char *args[2];
  ns__key(srv, inst, sizeof(inst), "inst:{%s}", srv->instance_id);
  ns__key(srv, insts, sizeof(insts), "instances:{ns}");
  ns_redis_cmd(srv->redis, on_liveness, srv, "SET %s 1 EX %d GET", inst,
               INST_TTL_S);
  args[0] = insts;
  args[1] = srv->instance_id;
  ns_redis_eval(srv->redis, NULL, NULL, LUA_BEAT, 1, args, 2);
  ns_liveness_count(srv);
  if (srv->reassert_more && !srv->stopping)
    ns_liveness_reassert(srv); /* the rest of a large reassert */
}

void ns_liveness_retire(ns_server *srv) {
  char inst[160], stats[96];
  ns__key(srv, inst, sizeof(inst), "inst:{%s}", srv->instance_id);
  ns__key(srv, stats, sizeof(stats), "stats:conn:{ns}");
  if (ns_redis_cmd(srv->redis, op_done, srv, "DEL %s", inst) == 0)
    srv->pending_ops++;
  if (ns_redis_cmd(srv->redis, op_done, srv, "HDEL %s %s", stats,
                   srv->instance_id) == 0)
    srv->pending_ops++;
  ns__key(srv, stats, sizeof(stats), "instances:{ns}");
  if (ns_redis_cmd(srv->redis, op_done, srv, "HDEL %s %s", stats,
                   srv->instance_id) == 0)
    srv->pending_ops++;
}

/* ---- reaping crashed instances ---- */

/* One reaper run (others), or the drain of our own previous life (past).
 * Every step is one Redis call whose reply drives the next; a failed call
 * (Redis gone) ends the run, and what it left is taken up by a later one. */
typedef struct reap_run {
  ns_server *srv;
  int past;
  long budget;
  /* instances to reap (others), from step 1, and the one in hand */
  size_t ndead, at;
  char (*dead)[NS_INST_ID_MAX + 1];
  long long *dead_ls;
  long long marked; /* devices marked offline, for the one in hand */
  long long counted; /* of them, already in the metrics */
  /* the batch in hand: members, and step-3 replies still awaited */
  char **m;
  size_t nm, left;
  int failed; /* a step-3 call failed: the batch is not released */
  /* past: 0 before the SSCAN of our set, 1 during it (cursor), 2 reading
   * our claim set; found: whether any member of a previous life was */
  int phase, found;
  char cursor[32];
} reap_run;

static void run_next(reap_run *run);
static void past_next(reap_run *run);

static void batch_free(reap_run *run) {
  size_t i;
  for (i = 0; i < run->nm; i++)
    free(run->m[i]);
  free(run->m);
  run->m = NULL;
  run->nm = 0;
}

static void run_end(reap_run *run) {
  ns_server *srv = run->srv;
  batch_free(run);
  if (run->past) {
    srv->past_busy = 0;
    if (run->marked || run->found)
      ns_log(NS_LOG_INFO, "previous life of this instance: %lld devices "
             "offline", run->marked);
  } else {
    srv->reap_busy = 0;
  }
  free(run->dead);
  free(run->dead_ls);
  free(run);
}

static void batch_keep(reap_run *run, const char *s, size_t len) {
  run->m = ns_xrealloc(run->m, (run->nm + 1) * sizeof(*run->m));
  run->m[run->nm] = ns_xmalloc(len + 1);
  memcpy(run->m[run->nm], s, len);
  run->m[run->nm][len] = '\0';
  run->nm++;
}

/* "conn gen device user" -> its parts (pointers into `buf`, a copy). */
static int member_split(char *buf, char **conn, char **gen, char **dev,
                        char **user) {
  char *p = buf, *sp;
  char **parts[3];
  int i;
  parts[0] = conn;
  parts[1] = gen;
  parts[2] = dev;
  for (i = 0; i < 3; i++) {
    sp = strchr(p, ' ');
    if (!sp || sp == p)
      return -1;
    *sp = '\0';
    *parts[i] = p;
    p = sp + 1;
  }
  *user = p;
  return *p ? 0 : -1;
}

static void batch_handled(reap_run *run);

static void on_dev_reaped(redisReply *r, void *arg) {
  reap_run *run = arg;
  if (!r || r->type != REDIS_REPLY_INTEGER)
    run->failed = 1; /* not known to be offline: keep the claim */
  else if (r->integer == 1)
    run->marked++;
  if (--run->left == 0)
    batch_handled(run);
}

/* Step 3 for every member of the batch, pipelined. */
static void batch_reap(reap_run *run, long long ls) {
  ns_server *srv = run->srv;
  size_t i;
  char lss[24];
  snprintf(lss, sizeof(lss), "%lld", ls);
  run->left = run->nm + 1; /* one more, dropped below: no early finish */
  for (i = 0; i < run->nm; i++) {
    char *buf = ns_xstrdup(run->m[i]), *conn, *gen, *dev, *user, *ev;
    char key[256], ch[256];
    const char *args[7];
    if (member_split(buf, &conn, &gen, &dev, &user) != 0) {
      free(buf);
      run->left--;
      continue;
    }
    ns__ukey(srv, key, sizeof(key), "presence", user, NULL);
    ns_bus_user_channel(srv, user, ch, sizeof(ch));
    ev = ns__presence_status_event(dev, "offline", ls);
    args[0] = key;
    args[1] = ch;
    args[2] = dev;
    args[3] = conn;
    args[4] = gen;
    args[5] = lss;
    args[6] = ev;
    if (ns_redis_eval(srv->redis, on_dev_reaped, run, LUA_REAP_DEV, 2, args,
                      7) != 0) {
      run->failed = 1;
      run->left--;
    }
    free(ev);
    free(buf);
  }
  if (--run->left == 0)
    batch_handled(run);
}

/* Sends `cmd` (its first `nfixed` words, then the batch's members) as one
 * command; 0 or NS_EUNAVAIL. */
static int batch_cmd(reap_run *run, ns_redis_cb cb, const char **fixed,
                     size_t nfixed) {
  size_t i, argc = nfixed + run->nm;
  const char **argv = ns_xcalloc(argc, sizeof(*argv));
  int rc;
  for (i = 0; i < nfixed; i++)
    argv[i] = fixed[i];
  for (i = 0; i < run->nm; i++)
    argv[nfixed + i] = run->m[i];
  rc = ns_redis_cmdargv(run->srv->redis, cb, run, (int)argc, argv, NULL);
  free(argv);
  return rc;
}

/* ---- others: steps 1, 2, 4 ---- */

static void on_forgot(redisReply *r, void *arg) {
  reap_run *run = arg;
  ns_server *srv = run->srv;
  const char *id = run->dead[run->at];
  int done = r && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
  if (done)
    ns_metrics_inc(&srv->metrics, NS_M_CLUSTER, "instances_reaped");
  if (run->marked || done)
    ns_log(NS_LOG_INFO, "reaped instance %s: %lld devices offline", id,
           run->marked);
  run->at++;
  run_next(run);
}

static void on_released(redisReply *r, void *arg) {
  reap_run *run = arg;
  ns_server *srv = run->srv;
  char insts[96], stats[96];
  const char *args[4];
  batch_free(run);
  if (!r || r->type != REDIS_REPLY_INTEGER) {
    run_end(run);
    return;
  }
  if (r->integer > 0) { /* more to come, next run */
    if (run->marked)
      ns_log(NS_LOG_INFO, "reaped instance %s: %lld devices offline (more "
             "to come)", run->dead[run->at], run->marked);
    run->at++;
    run_next(run);
    return;
  }
  ns__key(srv, insts, sizeof(insts), "instances:{ns}");
  ns__key(srv, stats, sizeof(stats), "stats:conn:{ns}");
  args[0] = insts;
  args[1] = stats;
  args[2] = run->dead[run->at];
  args[3] = INST_TTL_MS;
  if (ns_redis_eval(srv->redis, on_forgot, run, LUA_FORGET, 2, args, 4) != 0)
    run_end(run);
}

static void batch_handled(reap_run *run) {
  ns_server *srv = run->srv;
  char idev[160], claim[180], nk[4] = "2";
  const char *fixed[5];
  ns_metrics_add(&srv->metrics, NS_M_CLUSTER, "devices_reaped",
                 (uint64_t)(run->marked - run->counted));
  run->counted = run->marked;
  if (run->failed) {
    /* Some member's offline step did not run: releasing the batch would
     * lose it.  Its claims are taken again after 30 s (a previous life's
     * members are still in our set for the resumed drain). */
    ns_log(NS_LOG_WARN, "reaper: an offline step failed: the batch is left "
           "for a later run");
    run_end(run);
    return;
  }
  if (run->past) {
    past_next(run);
    return;
  }
  ns__presence_idev_key(srv, run->dead[run->at], idev, sizeof(idev));
  snprintf(claim, sizeof(claim), "%s:claim", idev);
  fixed[0] = "EVAL";
  fixed[1] = LUA_RELEASE;
  fixed[2] = nk;
  fixed[3] = idev;
  fixed[4] = claim;
  if (batch_cmd(run, on_released, fixed, 5) != 0)
    run_end(run);
}

static void on_claimed(redisReply *r, void *arg) {
  reap_run *run = arg;
  size_t i;
  if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
      r->element[0]->type != REDIS_REPLY_INTEGER) {
    if (r && r->type == REDIS_REPLY_ERROR)
      ns_log(NS_LOG_ERROR, "reaper: %s", r->str);
    run_end(run);
    return;
  }
  if (r->element[0]->integer < 0) { /* alive after all */
    run->at++;
    run_next(run);
    return;
  }
  for (i = 1; i < r->elements; i++)
    if (r->element[i]->type == REDIS_REPLY_STRING)
      batch_keep(run, r->element[i]->str, r->element[i]->len);
  run->budget -= (long)run->nm;
  batch_reap(run, run->dead_ls[run->at]);
}

/* Step 2 for the next dead instance, or the end of the run. */
static void run_next(reap_run *run) {
  ns_server *srv = run->srv;
  char inst[160], idev[160], claim[180], batch[24];
  const char *args[5];
  run->marked = run->counted = 0;
  if (run->at >= run->ndead || run->budget <= 0) {
    run_end(run);
    return;
  }
  ns__key(srv, inst, sizeof(inst), "inst:{%s}", run->dead[run->at]);
  ns__presence_idev_key(srv, run->dead[run->at], idev, sizeof(idev));
  snprintf(claim, sizeof(claim), "%s:claim", idev);
  snprintf(batch, sizeof(batch), "%ld", run->budget);
  args[0] = inst;
  args[1] = idev;
  args[2] = claim;
  args[3] = batch;
  args[4] = REAP_RECLAIM_MS;
  if (ns_redis_eval(srv->redis, on_claimed, run, LUA_CLAIM, 3, args, 5) != 0)
    run_end(run);
}

static void on_dead(redisReply *r, void *arg) {
  reap_run *run = arg;
  size_t i, n;
  if (!r || r->type != REDIS_REPLY_ARRAY) {
    run_end(run);
    return;
  }
  n = r->elements / 2;
  run->dead = ns_xcalloc(n ? n : 1, sizeof(*run->dead));
  run->dead_ls = ns_xcalloc(n ? n : 1, sizeof(*run->dead_ls));
  for (i = 0; i < n; i++) {
    const redisReply *id = r->element[2 * i], *ls = r->element[2 * i + 1];
    if (id->type != REDIS_REPLY_STRING || id->len == 0 ||
        id->len > NS_INST_ID_MAX)
      continue;
    memcpy(run->dead[run->ndead], id->str, id->len);
    run->dead_ls[run->ndead] = ls->str ? atoll(ls->str) : 0;
    run->ndead++;
  }
  run_next(run);
}

void ns_liveness_reap(ns_server *srv) {
  char insts[96];
  const char *args[4];
  reap_run *run;
  if (srv->past_left && !srv->past_busy)
    ns_liveness_reap_own_past(srv); /* an earlier drain was cut short */
  if (srv->reap_busy)
    return;
  run = ns_xcalloc(1, sizeof(*run));
  run->srv = srv;
  run->budget = REAP_BATCH;
  ns__key(srv, insts, sizeof(insts), "instances:{ns}");
  args[0] = insts;
  args[1] = INST_TTL_MS;
  args[2] = srv->instance_id;
  args[3] = REAP_MAX_DEAD;
  srv->reap_busy = 1;
  if (ns_redis_eval(srv->redis, on_dead, run, LUA_DEAD, 1, args, 4) != 0)
    run_end(run);
}

/* ---- our own previous life ----
 * Its members are those of our idev set with a generation below this
 * process's start, read with SSCAN (our live members stay), then those of
 * our claim set (a reaper took them while we were dead and did not
 * finish).  Each batch: step 3, then SREM / ZREM of the batch. */

/* Keeps the members of `r` (an array of strings) of an older generation. */
static void past_keep(reap_run *run, const redisReply *r) {
  size_t i;
  for (i = 0; i < r->elements; i++) {
    const redisReply *e = r->element[i];
    const char *sp;
    if (e->type != REDIS_REPLY_STRING)
      continue;
    sp = memchr(e->str, ' ', e->len);
    if (sp && atoll(sp + 1) < run->srv->start_ms)
      batch_keep(run, e->str, e->len);
  }
}

static void on_past_read(redisReply *r, void *arg) {
  reap_run *run = arg;
  const redisReply *list = r;
  if (!r || r->type != REDIS_REPLY_ARRAY) {
    run_end(run);
    return;
  }
  if (run->phase == 1) { /* SSCAN: [cursor, members] */
    if (r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[1]->type != REDIS_REPLY_ARRAY) {
      run_end(run);
      return;
    }
    snprintf(run->cursor, sizeof(run->cursor), "%s", r->element[0]->str);
    list = r->element[1];
  }
  past_keep(run, list);
  run->found |= run->nm > 0;
  if (run->phase == 2 && !run->nm) { /* nothing (left) to do */
    run->srv->past_left = 0;
    run_end(run);
    return;
  }
  batch_reap(run, run->srv->past_ls);
}

static void on_past_removed(redisReply *r, void *arg) {
  reap_run *run = arg;
  batch_free(run);
  if (!r || r->type == REDIS_REPLY_ERROR) {
    run_end(run);
    return;
  }
  past_next(run);
}

/* After a batch: remove it, then read the next one. */
static void past_next(reap_run *run) {
  ns_server *srv = run->srv;
  char idev[160], claim[180];
  const char *fixed[2];
  ns__presence_idev_key(srv, NULL, idev, sizeof(idev));
  snprintf(claim, sizeof(claim), "%s:claim", idev);
  if (run->nm) {
    fixed[0] = run->phase == 2 ? "ZREM" : "SREM";
    fixed[1] = run->phase == 2 ? claim : idev;
    if (batch_cmd(run, on_past_removed, fixed, 2) != 0)
      run_end(run);
    return;
  }
  if (run->phase == 1 && strcmp(run->cursor, "0") == 0)
    run->phase = 2; /* the scan is over */
  else if (run->phase == 0)
    run->phase = 1;
  if (run->phase == 2) {
    if (ns_redis_cmd(srv->redis, on_past_read, run, "ZRANGE %s 0 %d", claim,
                     REAP_BATCH - 1) != 0)
      run_end(run);
  } else {
    if (ns_redis_cmd(srv->redis, on_past_read, run, "SSCAN %s %s COUNT %d",
                     idev, run->cursor, REAP_BATCH) != 0)
      run_end(run);
  }
}

static void on_past_ls(redisReply *r, void *arg) {
  reap_run *run = arg;
  if (!r || r->type == REDIS_REPLY_ERROR) {
    run_end(run);
    return;
  }
  run->srv->past_ls = r->type == REDIS_REPLY_STRING ? atoll(r->str) : 0;
  past_next(run);
}

void ns_liveness_reap_own_past(ns_server *srv) {
  char insts[96];
  reap_run *run;
  if (srv->past_busy)
    return;
  run = ns_xcalloc(1, sizeof(*run));
  run->srv = srv;
  run->past = 1;
  snprintf(run->cursor, sizeof(run->cursor), "0");
  srv->past_busy = 1;
  if (srv->past_left) { /* resumed: the previous heartbeat is known */
    past_next(run);
    return;
  }
  srv->past_left = 1;
  /* the previous life's last heartbeat, read before ours replaces it */
  ns__key(srv, insts, sizeof(insts), "instances:{ns}");
  if (ns_redis_cmd(srv->redis, on_past_ls, run, "HGET %s %s", insts,
                   srv->instance_id) != 0)
    run_end(run);
}

/* ---- after a Redis outage ---- */

/* At most this many connections per call (3 commands each), well within
 * NS_REDIS_MAX_INFLIGHT; the rest follow at the next heartbeats. */
#define REASSERT_BATCH 10000

void ns_liveness_reassert(ns_server *srv) {
  ns_conn *c;
  size_t n = 0, budget = REASSERT_BATCH;
  char key[256], ch[256], idev[160], gen[24];
  const char *args[7];
  int64_t g = ns_liveness_gen(srv);
  snprintf(gen, sizeof(gen), "%lld", (long long)g);
  ns__presence_idev_key(srv, NULL, idev, sizeof(idev));
  for (c = srv->conns; c; c = c->next) {
    int64_t now = ns_now_ms();
    char *val, *member, *online;
    if (c->is_public || !c->in_hub || c->state != NS_CONN_READY ||
        c->idev_gen == g) /* connected since the lapse, or done */
      continue;
    if (budget-- == 0)
      break;
    /* the member of the new generation first (the reaper must be able to
     * find the entry the script writes), then the old one goes; a
     * connection whose SADD Redis refused stays for the next call */
    member = ns__presence_idev_member(c->id, g, c->device, c->who.sub);
    if (ns_redis_cmd(srv->redis, NULL, NULL, "SADD %s %s", idev, member) != 0) {
      free(member);
      break;
    }
    free(member);
    member = ns__presence_idev_member(c->id, c->idev_gen, c->device,
                                      c->who.sub);
    ns_redis_cmd(srv->redis, NULL, NULL, "SREM %s %s", idev, member);
    free(member);
    c->idev_gen = g;
    ns__ukey(srv, key, sizeof(key), "presence", c->who.sub, NULL);
    ns_bus_user_channel(srv, c->who.sub, ch, sizeof(ch));
    val = ns__presence_json("online", srv, c->id, g, now, now);
    online = ns__presence_status_event(c->device, "online", now);
    args[0] = key;
    args[1] = ch;
    args[2] = c->device;
    args[3] = val;
    args[4] = online;
    args[5] = gen;
    args[6] = c->id;
    if (ns_redis_eval(srv->redis, NULL, NULL, LUA_REASSERT, 2, args, 7) == 0)
      n++;
    free(val);
    free(online);
  }
  srv->reassert_more = c != NULL; /* stopped early: more at the heartbeat */
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
  char key[96], insts[96];
  const char *args[3];
  total_op *op = ns_xmalloc(sizeof(*op));
  ns__key(srv, key, sizeof(key), "stats:conn:{ns}");
  ns__key(srv, insts, sizeof(insts), "instances:{ns}");
  args[0] = key;
  args[1] = insts;
  args[2] = INST_TTL_MS;
  op->cb = cb;
  op->arg = arg;
  if (ns_redis_eval(srv->redis, on_total, op, LUA_TOTAL, 2, args, 3) != 0) {
    free(op);
    return NS_EUNAVAIL;
  }
  return 0;
}
