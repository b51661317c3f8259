/*
 * ns_presence.c -- device registration and presence: connect (presence
 * script, device row, welcome), disconnect (offline after presence_grace),
 * the device list, forgetting a device, and the presence events of the user
 * bus ("st" device status, "kick" one connection per device), which it
 * registers with ns_bus.
 *
 * Redis layout (docs/architecture.md "Redis keys"; the braces are literal,
 * a Redis Cluster hash tag that also keeps "q:{a:b}:c" and "q:{a}:b:c"
 * apart): presence:{user} hash device -> JSON
 * {status, instance, conn, gen, since, last_seen[, closed]} (closed: the
 * connection is gone, presence_grace runs; gen: the generation of the
 * instance's idev member, see ns_liveness.h); channel u:{user} carries
 * compact events between instances:
 *   {"k":"st","d":device,"s":"online"|"offline","ls":ms}   device status
 *   {"k":"kick","d":device,"c":conn_id}                     one conn per device
 * Presence changes run as Lua scripts so the read-modify-write and the
 * PUBLISH are atomic across instances.  Every script touches only keys of
 * the user's hash slot, all passed in KEYS (Redis Cluster): presence:{user},
 * u:{user} and q:{user}:<device>.  What lives in other slots is read or
 * written by single-key commands beside the scripts: the instances'
 * liveness keys inst:{<id>} (a device reading `online` whose instance key
 * has expired is reported offline: a crashed instance) and this instance's
 * idev:{<id>} set, where each connection is recorded (the members' shape is
 * defined here, ns__presence_idev_member) so that the reaper of
 * ns_liveness.c can find it.  The instance key, the heartbeat and the
 * reaping of crashed instances are ns_liveness.c.
 */
#include <hiredis/hiredis.h>
#include <json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ns_liveness.h"
#include "ns_log.h"
#include "ns_queue.h"
#include "ns_server_int.h"


/* Connect (KEYS: presence:{user}, u:{user}): counts the user's concurrent
 * devices other than this one against the cap -- an `online` entry whose
 * connection is still open ("closed" unset: SPEC §7 caps connections, and
 * a device in its presence_grace has none) on a live instance -- stores
 * the new presence, and publishes either a kick for the device's previous
 * connection (it was online, or closed less than presence_grace ago: no
 * online flap) or its online status.
 *
 * Every key it touches is in the user's hash slot (Redis Cluster): the
 * instances' liveness keys are not read here.  An instance is alive when it
 * is this one (ARGV[4]) -- except for an entry of this instance id older
 * than this process (generation below ARGV[9]): a previous life killed
 * before it could mark it offline, whose reaping (ns_liveness.c) may not
 * have reached it yet -- dead when listed in ARGV[8] (ids separated by
 * spaces), else unknown.  On the first try (ARGV[7] = '0'), when the
 * outcome depends on an unknown instance, the script writes nothing and
 * returns {-2, id, ...} (at most 16 ids); the caller reads their inst: keys
 * and tries again with ARGV[7] = '1', when an instance not listed dead
 * counts as alive.  The idev set is the caller's (another slot).
 * Returns -1 (cap reached), 1 (was online), 0 (came online). */
static const char LUA_CONNECT[] =
    "local dead, ask, nask = {}, {}, 0\n"
    "for id in string.gmatch(ARGV[8], '%S+') do dead[id] = true end\n"
    "local function unknown(id)\n"
    "  if ARGV[7] == '1' or id == ARGV[4] then return false end\n"
    "  if not ask[id] and nask < 16 then ask[id] = true; nask = nask + 1 end\n"
    "  return true\n"
    "end\n"
    "local h = redis.call('HGETALL', KEYS[1])\n"
    "local n, maybe, old, doubt = 0, 0, false, false\n"
    "for i = 1, #h, 2 do\n"
    "  local ok, t = pcall(cjson.decode, h[i+1])\n"
    "  if ok and type(t) == 'table' and t.status == 'online' then\n"
    "    local inst = tostring(t.instance)\n"
    "    if inst == ARGV[4] and (tonumber(t.gen) or 0) < tonumber(ARGV[9]) then\n"
    "      inst = ''\n"
    "    end\n"
    "    if inst == '' or dead[inst] then\n"
    "    elseif h[i] == ARGV[1] then\n"
    "      if t.closed or not unknown(inst) then old = true\n"
    "      else doubt = true end\n"
    "    elseif not t.closed then\n"
    "      if unknown(inst) then maybe = maybe + 1 else n = n + 1 end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local max = tonumber(ARGV[3])\n"
    "if n >= max then return -1 end\n"
    "if doubt or n + maybe >= max then\n"
    "  local out = {-2}\n"
    "  for id in pairs(ask) do out[#out+1] = id end\n"
    "  return out\n"
    "end\n"
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])\n"
    "if old then redis.call('PUBLISH', KEYS[2], ARGV[6]) return 1 end\n"
    "redis.call('PUBLISH', KEYS[2], ARGV[5])\n"
    "return 0\n";

/* Closed (KEYS: presence:{user}): the connection ARGV[2] of device ARGV[1]
 * has closed; while presence_grace runs its entry stays `online` (no
 * flap) but is marked closed, so it no longer counts against the cap.
 * Nothing when a newer connection owns the entry.  Returns 1 if marked. */
static const char LUA_CLOSED[] =
    "local cur = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if not cur then return 0 end\n"
    "local ok, t = pcall(cjson.decode, cur)\n"
    "if not ok or type(t) ~= 'table' or t.conn ~= ARGV[2] or\n"
    "   t.status ~= 'online' then return 0 end\n"
    "t.closed = true\n"
    "redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(t))\n"
    "return 1\n";

/* Offline (KEYS: presence:{user}, u:{user}): the device goes offline only
 * if the stored presence still belongs to this connection (a reconnect or
 * a newer connection elsewhere wins).  The connection leaves the
 * instance's idev set (another slot) after the script has answered
 * (mark_offline): a member left behind by a crash in between is harmless,
 * the reaper marks nothing offline that names another connection or is
 * offline already. */
static const char LUA_OFFLINE[] =
    "local cur = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if not cur then return 0 end\n"
    "local ok, t = pcall(cjson.decode, cur)\n"
    "if not ok or t.conn ~= ARGV[2] then return 0 end\n"
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])\n"
    "redis.call('PUBLISH', KEYS[2], ARGV[4])\n"
    "return 1\n";

/* Read (KEYS: presence:{user}, then q:{user}:<ARGV[i]> for each device
 * ARGV[i] the caller lists): per device [present, status, last_seen_ms,
 * queued, instance, gen]; present 0 when the device has no presence entry
 * (the rest is then empty).  status is the stored one: whether the
 * instance of an `online` entry is alive is the caller's to decide (its
 * liveness key is in another slot). */
static const char LUA_READ[] =
    "local out = {}\n"
    "for i = 1, #ARGV do\n"
    "  local v = redis.call('HGET', KEYS[1], ARGV[i])\n"
    "  if not v then\n"
    "    out[#out+1] = 0; out[#out+1] = ''; out[#out+1] = '0'\n"
    "    out[#out+1] = 0; out[#out+1] = ''; out[#out+1] = ''\n"
    "  else\n"
    "    local ok, t = pcall(cjson.decode, v)\n"
    "    local st, ls, inst, gen = 'offline', 0, '', ''\n"
    "    if ok and type(t) == 'table' then\n"
    "      ls = t.last_seen or 0\n"
    "      if t.status == 'online' then\n"
    "        st = 'online'; inst = tostring(t.instance)\n"
    "        gen = t.gen and tostring(t.gen) or ''\n"
    "      end\n"
    "    end\n"
    "    out[#out+1] = 1; out[#out+1] = st\n"
    "    out[#out+1] = string.format('%d', ls)\n"
    "    out[#out+1] = redis.call('XLEN', KEYS[i+1])\n"
    "    out[#out+1] = inst; out[#out+1] = gen\n"
    "  end\n"
    "end\n"
    "return out\n";

/* ---- small helpers ---- */

char *ns__presence_json(const char *status, const ns_server *srv,
                        const char *conn_id, int64_t gen, int64_t since,
                        int64_t ls) {
  char *s = ns_xmalloc(320);
  snprintf(s, 320,
           "{\"status\":\"%s\",\"instance\":\"%s\",\"conn\":\"%s\","
           "\"gen\":\"%lld\",\"since\":%lld,\"last_seen\":%lld}",
           status, srv->instance_id, conn_id, (long long)gen,
           (long long)since, (long long)ls);
  return s;
}

void ns__presence_idev_key(const ns_server *srv, const char *id, char *buf,
                           size_t n) {
  ns__key(srv, buf, n, "idev:{%s}", id ? id : srv->instance_id);
}

char *ns__presence_idev_member(const char *conn_id, int64_t gen,
                               const char *device, const char *user) {
  size_t n = strlen(conn_id) + strlen(device) + strlen(user) + 24 + 4;
  char *s = ns_xmalloc(n);
  snprintf(s, n, "%s %lld %s %s", conn_id, (long long)gen, device, user);
  return s;
}

char *ns__presence_status_event(const char *device, const char *status,
                                int64_t ls) {
  char *s = ns_xmalloc(160);
  snprintf(s, 160, "{\"k\":\"st\",\"d\":\"%s\",\"s\":\"%s\",\"ls\":%lld}",
           device, status, (long long)ls);
  return s;
}

static void op_done(redisReply *r, void *arg) {
  ns_server *srv = arg;
  (void)r;
  srv->pending_ops--;
}

/* ---- device list: PostgreSQL rows merged with Redis presence ---- */

/* An instance named by an `online` entry of the list: its liveness key is
 * read with EXISTS after the read script (another hash slot). */
typedef struct devlist_inst {
  char id[NS_INST_ID_MAX + 1];
  int alive;
} devlist_inst;

typedef struct devlist_op {
  ns_server *srv;
  char user[NS_SUB_MAX + 1];
  ns_devlist list;
  ns_devlist_cb cb;
  void *arg;
  /* per row: the instance of an online entry (index into inst[]), -1 when
   * the row is offline or online here */
  int *row_inst;
  devlist_inst *inst;
  size_t ninst, left;
  int failed;
} devlist_op;

static void devlist_finish(devlist_op *op, int rc) {
  op->cb(rc, &op->list, op->arg);
  free(op->list.rows);
  free(op->row_inst);
  free(op->inst);
  free(op);
}

/* Every liveness key read: a row online on a dead instance reads offline
 * (a crashed instance whose devices the reaper has not reached yet). */
static void devlist_probed(devlist_op *op) {
  size_t j;
  if (op->failed) {
    devlist_finish(op, NS_EUNAVAIL);
    return;
  }
  for (j = 0; j < op->list.n; j++)
    if (op->row_inst[j] >= 0 && !op->inst[op->row_inst[j]].alive)
      op->list.rows[j].online = 0;
  devlist_finish(op, 0);
}

typedef struct devlist_probe {
  devlist_op *op;
  size_t i;
} devlist_probe;

static void on_devlist_probed(redisReply *r, void *arg) {
  devlist_probe *p = arg;
  devlist_op *op = p->op;
  if (!r || r->type != REDIS_REPLY_INTEGER)
    op->failed = 1;
  else
    op->inst[p->i].alive = r->integer == 1;
  free(p);
  if (--op->left == 0)
    devlist_probed(op);
}

/* The index of instance `id` in op->inst, added if new. */
static int devlist_inst_of(devlist_op *op, const char *id, size_t len) {
  size_t i;
  for (i = 0; i < op->ninst; i++)
    if (strlen(op->inst[i].id) == len && memcmp(op->inst[i].id, id, len) == 0)
      return (int)i;
  op->inst = ns_xrealloc(op->inst, (op->ninst + 1) * sizeof(*op->inst));
  memcpy(op->inst[op->ninst].id, id, len);
  op->inst[op->ninst].id[len] = '\0';
  op->inst[op->ninst].alive = 0;
  return (int)op->ninst++;
}

static void on_devlist_presence(redisReply *r, void *arg) {
  devlist_op *op = arg;
  ns_server *srv = op->srv;
  size_t i, j;
  if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 6 * op->list.n) {
    if (r && r->type == REDIS_REPLY_ERROR)
      ns_log(NS_LOG_ERROR, "presence read: %s", r->str);
    devlist_finish(op, NS_EUNAVAIL);
    return;
  }
  op->row_inst = ns_xmalloc((op->list.n ? op->list.n : 1) * sizeof(int));
  for (j = 0; j < op->list.n; j++) {
    redisReply **e = r->element + 6 * j;
    ns_devrow *row = &op->list.rows[j];
    long long ls;
    op->row_inst[j] = -1;
    if (e[0]->integer == 0)
      continue; /* no presence entry: the row stays as PostgreSQL has it */
    row->online = e[1]->str && strcmp(e[1]->str, "online") == 0;
    ls = e[2]->str ? atoll(e[2]->str) : 0;
    if (ls > row->last_seen_ms)
      row->last_seen_ms = ls;
    row->queued = e[3]->integer;
    if (!row->online || !e[4]->str)
      continue;
    if (strcmp(e[4]->str, srv->instance_id) == 0) {
      /* ours: alive, unless written by a previous life of this id */
      if (!e[5]->str || atoll(e[5]->str) < srv->start_ms)
        row->online = 0;
    } else if (e[4]->len == 0 || e[4]->len > NS_INST_ID_MAX) {
      row->online = 0;
    } else {
      op->row_inst[j] = devlist_inst_of(op, e[4]->str, e[4]->len);
    }
  }
  if (!op->ninst) {
    devlist_probed(op);
    return;
  }
  op->left = op->ninst + 1; /* one more, dropped below: no early finish */
  for (i = 0; i < op->ninst; i++) {
    char key[160];
    devlist_probe *p = ns_xmalloc(sizeof(*p));
    p->op = op;
    p->i = i;
    ns__key(srv, key, sizeof(key), "inst:{%s}", op->inst[i].id);
    if (ns_redis_cmd(srv->redis, on_devlist_probed, p, "EXISTS %s", key) !=
        0) {
      free(p);
      op->failed = 1;
      op->left--;
    }
  }
  if (--op->left == 0)
    devlist_probed(op);
}

/* Merges the user's Redis presence into op->list: 0 (on_devlist_presence
 * follows) or NS_EUNAVAIL.  One script on the user's slot reads the
 * presence entries and queue lengths of the listed devices; the liveness
 * keys of the instances they are online on are read after it. */
static int presence_read(devlist_op *op) {
  ns_server *srv = op->srv;
  size_t n = op->list.n, i, argc = 3 + 1 + 2 * n;
  char key[256], nkeys[24];
  const char **argv = ns_xcalloc(argc, sizeof(*argv));
  char **owned = ns_xcalloc(n ? n : 1, sizeof(*owned));
  int rc;
  ns__ukey(srv, key, sizeof(key), "presence", op->user, NULL);
  snprintf(nkeys, sizeof(nkeys), "%zu", n + 1);
  argv[0] = "EVAL";
  argv[1] = LUA_READ;
  argv[2] = nkeys;
  argv[3] = key;
  for (i = 0; i < n; i++) {
    char q[300];
    ns__ukey(srv, q, sizeof(q), "q", op->user, op->list.rows[i].device_id);
    owned[i] = ns_xstrdup(q);
    argv[4 + i] = owned[i];
    argv[4 + n + i] = op->list.rows[i].device_id;
  }
  rc = ns_redis_cmdargv(srv->redis, on_devlist_presence, op, (int)argc, argv,
                        NULL);
  for (i = 0; i < n; i++)
    free(owned[i]);
  free(owned);
  free(argv);
  return rc == 0 ? 0 : NS_EUNAVAIL;
}

int ns__presence_merge(ns_server *srv, const char *user, ns_devlist *l,
                       ns_devlist_cb cb, void *arg) {
  devlist_op *op = ns_xcalloc(1, sizeof(*op));
  op->srv = srv;
  snprintf(op->user, sizeof(op->user), "%s", user);
  op->list = *l;
  op->cb = cb;
  op->arg = arg;
  if (presence_read(op) != 0) {
    free(op); /* the rows stay the caller's */
    return NS_EUNAVAIL;
  }
  return 0;
}

static void on_devlist_rows(PGresult *res, void *arg) {
  devlist_op *op = arg;
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
  if (presence_read(op) != 0)
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
  json_object_object_add(d, "unread", json_object_new_int64(c->unread));
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
  ns_conn_flush(c);
  ns_log(NS_LOG_INFO, "conn %s: device %s of user %s online", c->id, c->device,
         c->who.sub);
  ns_conn_unref(c);
}

/* The welcome waits for two parts, read in parallel after the connect
 * script: the device queue's first page (in the ring) and the device list
 * (registration batch + presence).  Each part holds a reference; the last
 * one builds the welcome. */
static void reg_part_done(ns_conn *c) {
  ns_devlist *l;
  if (--c->reg_parts > 0) {
    ns_conn_unref(c);
    return;
  }
  l = c->reg_list; /* held only until the welcome is built */
  c->reg_list = NULL;
  on_welcome_devices(0, l, c); /* takes our reference */
  free(l->rows);
  free(l);
}

static void on_queue_ready(int rc, ns_conn *c) {
  if (!c->wsi || c->state == NS_CONN_CLOSING) {
    ns_conn_unref(c);
    return;
  }
  if (rc != 0) {
    fail_connect(c, 1011, "backend unavailable");
    ns_conn_unref(c);
    return;
  }
  reg_part_done(c);
}

/* The device list merged with Redis presence: kept for the welcome. */
static void on_reg_listed(int rc, const ns_devlist *l, void *arg) {
  ns_conn *c = arg;
  if (!c->wsi || c->state == NS_CONN_CLOSING) {
    ns_conn_unref(c);
    return;
  }
  if (rc != 0) {
    fail_connect(c, 1011, "backend unavailable");
    ns_conn_unref(c);
    return;
  }
  c->reg_list = ns_xcalloc(1, sizeof(*c->reg_list));
  c->reg_list->n = l->n;
  c->reg_list->rows = ns_xmalloc((l->n ? l->n : 1) * sizeof(ns_devrow));
  memcpy(c->reg_list->rows, l->rows, l->n * sizeof(ns_devrow));
  reg_part_done(c);
}

/* ---- registration batches ----
 *
 * A connect's device row and its user's device list take one PostgreSQL
 * statement per batch of connects, not two statements per connect: while
 * NS_REG_INFLIGHT batches are out, later connects wait in srv->reg_head and
 * go in the next one.  One connect alone goes at once (a batch of one), so
 * the batch costs no latency when the server is quiet.  The input is sorted
 * by (user, device), so concurrent batches lock rows in one order. */

#define NS_REG_INFLIGHT 2
#define NS_REG_BATCH_MAX 256

static const char REG_SQL[] =
    "WITH input AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS t("
    "user_id text, device_id text, device_name text, platform text)), "
    "up AS (INSERT INTO devices (user_id, device_id, device_name, platform) "
    "SELECT DISTINCT ON (user_id, device_id) user_id, device_id, "
    "nullif(device_name, ''), nullif(platform, '') FROM input "
    "ORDER BY user_id, device_id "
    "ON CONFLICT (user_id, device_id) DO UPDATE SET last_seen = now(), "
    "device_name = coalesce(excluded.device_name, devices.device_name), "
    "platform = coalesce(excluded.platform, devices.platform)) "
    "SELECT u.user_id, d.device_id, coalesce(d.device_name, ''), "
    "coalesce(d.platform, ''), (extract(epoch FROM d.first_seen) * 1000)::bigint, "
    "(extract(epoch FROM d.last_seen) * 1000)::bigint, coalesce(k.unread, 0) "
    "FROM (SELECT DISTINCT user_id FROM input) u "
    "LEFT JOIN devices d ON d.user_id = u.user_id "
    "LEFT JOIN notification_counts k ON k.user_id = u.user_id "
    "ORDER BY u.user_id COLLATE \"C\", d.first_seen, d.device_id";

typedef struct reg_batch {
  ns_server *srv;
  size_t n;
  ns_conn *c[NS_REG_BATCH_MAX];
} reg_batch;

/* The JSON text of `rows` (an array of flat objects), the one parameter of
 * a batch statement (jsonb_to_recordset, as ns_notify's inserts); frees
 * `rows`.  The caller frees the result. */
static char *batch_param(json_object *rows) {
  char *text = ns_xstrdup(json_object_to_json_string_ext(
      rows, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
  json_object_put(rows);
  return text;
}

static int reg_cmp(const void *a, const void *b) {
  const ns_conn *x = *(ns_conn *const *)a, *y = *(ns_conn *const *)b;
  int r = strcmp(x->who.sub, y->who.sub);
  return r ? r : strcmp(x->device, y->device);
}

static void reg_flush(ns_server *srv);

/* Adds row (device, first/last seen) to `l` unless the device is there. */
static void list_add(ns_devlist *l, size_t *cap, const char *device,
                     const char *name, const char *platform, int64_t first,
                     int64_t last) {
  size_t i;
  ns_devrow *row;
  for (i = 0; i < l->n; i++)
    if (strcmp(l->rows[i].device_id, device) == 0)
      return;
  if (l->n == *cap) {
    *cap = *cap ? *cap * 2 : 8;
    l->rows = ns_xrealloc(l->rows, *cap * sizeof(*l->rows));
  }
  row = &l->rows[l->n++];
  memset(row, 0, sizeof(*row));
  snprintf(row->device_id, sizeof(row->device_id), "%s", device);
  snprintf(row->name, sizeof(row->name), "%s", name);
  snprintf(row->platform, sizeof(row->platform), "%s", platform);
  row->first_seen_ms = first;
  row->last_seen_ms = last;
}

static void on_reg_batch(PGresult *res, void *arg) {
  reg_batch *b = arg;
  ns_server *srv = b->srv;
  int ok = res && PQresultStatus(res) == PGRES_TUPLES_OK;
  int nrows = ok ? PQntuples(res) : 0, r = 0;
  size_t i, j;
  int64_t now = ns_now_ms();
  srv->reg_inflight--;
  /* b->c is sorted by user and so are the rows: one merge pass. */
  for (i = 0; i < b->n; i++) {
    ns_conn *c = b->c[i];
    ns_devlist l = {NULL, 0};
    size_t cap = 0;
    int start;
    if (!c->wsi || c->state == NS_CONN_CLOSING) {
      ns_conn_unref(c);
      continue;
    }
    if (!ok) {
      fail_connect(c, 1011, "backend unavailable");
      ns_conn_unref(c);
      continue;
    }
    while (r < nrows && strcmp(PQgetvalue(res, r, 0), c->who.sub) < 0)
      r++;
    /* One row per known device, or one without a device for a user who
     * has none yet; each carries the user's unread count (SPEC §9.4). */
    for (start = r; start < nrows &&
                    strcmp(PQgetvalue(res, start, 0), c->who.sub) == 0;
         start++) {
      c->unread = atoll(PQgetvalue(res, start, 6));
      if (!PQgetisnull(res, start, 1))
        list_add(&l, &cap, PQgetvalue(res, start, 1), PQgetvalue(res, start, 2),
                 PQgetvalue(res, start, 3), atoll(PQgetvalue(res, start, 4)),
                 atoll(PQgetvalue(res, start, 5)));
    }
    /* The statement reads the table as it was before its own insert: a
     * device new in this batch (this one, or another of the user's) is
     * added here. */
    for (j = 0; j < b->n; j++)
      if (strcmp(b->c[j]->who.sub, c->who.sub) == 0)
        list_add(&l, &cap, b->c[j]->device, b->c[j]->device_name,
                 b->c[j]->platform, now, now);
    if (ns__presence_merge(srv, c->who.sub, &l, on_reg_listed, c) != 0) {
      free(l.rows);
      fail_connect(c, 1011, "backend unavailable");
      ns_conn_unref(c);
    }
  }
  free(b);
  reg_flush(srv);
}

/* Sends the waiting connects (up to NS_REG_BATCH_MAX) as one statement;
 * a connect closed while it waited is left out. */
static void reg_flush(ns_server *srv) {
  json_object *rows;
  char *param;
  reg_batch *b;
  size_t i;
  if (!srv->reg_head || srv->reg_inflight >= NS_REG_INFLIGHT)
    return;
  b = ns_xcalloc(1, sizeof(*b));
  b->srv = srv;
  while (srv->reg_head && b->n < NS_REG_BATCH_MAX) {
    ns_conn *c = srv->reg_head;
    srv->reg_head = c->reg_next;
    c->reg_next = NULL;
    srv->reg_waiting--;
    if (!c->wsi || c->state == NS_CONN_CLOSING)
      ns_conn_unref(c);
    else
      b->c[b->n++] = c;
  }
  if (!srv->reg_head)
    srv->reg_tail = NULL;
  if (!b->n) {
    free(b);
    return;
  }
  qsort(b->c, b->n, sizeof(b->c[0]), reg_cmp);
  rows = json_object_new_array();
  for (i = 0; i < b->n; i++) {
    json_object *o = json_object_new_object();
    json_add_str(o, "user_id", b->c[i]->who.sub);
    json_add_str(o, "device_id", b->c[i]->device);
    json_add_str(o, "device_name", b->c[i]->device_name);
    json_add_str(o, "platform", b->c[i]->platform);
    json_object_array_add(rows, o);
  }
  param = batch_param(rows);
  srv->reg_inflight++;
  if (!srv->pg_ready ||
      ns_pg_query_prepared(ns__pg(srv), "reg_batch", REG_SQL, 1,
                           (const char *const *)&param, on_reg_batch, b) != 0)
    on_reg_batch(NULL, b);
  free(param);
}

/* Takes the caller's reference of `c`. */
static void reg_enqueue(ns_conn *c) {
  ns_server *srv = c->srv;
  c->reg_next = NULL;
  if (srv->reg_tail)
    srv->reg_tail->reg_next = c;
  else
    srv->reg_head = c;
  srv->reg_tail = c;
  srv->reg_waiting++;
  reg_flush(srv);
}

static void hub_leave(ns_conn *c) {
  ns_server *srv = c->srv;
  char ch[256];
  if (!c->in_hub)
    return;
  c->in_hub = 0;
  if (ns_hub_remove(srv->hub, c->who.sub, c->device, c) &&
      ns_hub_user_devices(srv->hub, c->who.sub) == 0) {
    ns_bus_user_channel(srv, c->who.sub, ch, sizeof(ch));
    ns_redis_unsubscribe(srv->redis, ch);
  }
}

/* The connection's member of this instance's idev set (ns_liveness reaps
 * from it), added before the connect script and removed when the script
 * refuses: the set is in another hash slot than the user's keys.  Added
 * first, so that a crash between the two leaves at worst a member whose
 * presence entry was never written (the reaper skips it), never a
 * presence entry the reaper cannot find. */
static void idev_update(ns_conn *c, const char *cmd) {
  char idev[160];
  char *member =
      ns__presence_idev_member(c->id, c->idev_gen, c->device, c->who.sub);
  ns__presence_idev_key(c->srv, NULL, idev, sizeof(idev));
  ns_redis_cmd(c->srv->redis, NULL, NULL, "%s %s %s", cmd, idev, member);
  free(member);
}

static void refuse_connect(ns_conn *c) {
  idev_update(c, "SREM");
  hub_leave(c);
  ns_metrics_inc(&c->srv->metrics, NS_M_HANDSHAKES, "too many devices");
  ns_conn_close(c, 1008, "too many devices");
}

static int connect_eval(ns_conn *c, const char *checked, const char *dead);

/* ---- instances whose liveness decides a connect ----
 * LUA_CONNECT does not read inst:<id> keys (other hash slots): when its
 * outcome depends on them it names them, and they are read here, one
 * EXISTS each, before the script runs again with the dead ones. */

#define NS_INST_CHECK_MAX 16 /* LUA_CONNECT names at most this many */

typedef struct inst_check inst_check;

typedef struct inst_probe {
  inst_check *k;
  char id[NS_INST_ID_MAX + 1];
} inst_probe;

struct inst_check {
  ns_conn *c; /* holds a reference */
  size_t n, left;
  int failed;
  char dead[NS_INST_CHECK_MAX * (NS_INST_ID_MAX + 1) + 1];
  inst_probe probe[NS_INST_CHECK_MAX];
};

/* All replies are in: the script again (the check holds the reference
 * the connect script had). */
static void inst_check_done(inst_check *k) {
  ns_conn *c = k->c;
  if (!c->wsi || c->state == NS_CONN_CLOSING) {
    ns_conn_unref(c);
  } else if (k->failed || connect_eval(c, "1", k->dead) != 0) {
    fail_connect(c, 1011, "backend unavailable");
    ns_conn_unref(c);
  }
  free(k);
}

static void on_inst_probed(redisReply *r, void *arg) {
  inst_probe *p = arg;
  inst_check *k = p->k;
  if (!r || r->type != REDIS_REPLY_INTEGER) {
    k->failed = 1;
  } else if (r->integer == 0) {
    size_t used = strlen(k->dead);
    snprintf(k->dead + used, sizeof(k->dead) - used, "%s%s", used ? " " : "",
             p->id);
  }
  if (--k->left == 0)
    inst_check_done(k);
}

/* `r` is {-2, id, ...}: reads each instance's liveness key.  Takes the
 * caller's reference of `c`. */
static void inst_check_start(ns_conn *c, const redisReply *r) {
  inst_check *k = ns_xcalloc(1, sizeof(*k));
  size_t i;
  k->c = c;
  for (i = 1; i < r->elements && k->n < NS_INST_CHECK_MAX; i++) {
    const redisReply *e = r->element[i];
    if (e->type == REDIS_REPLY_STRING && e->len > 0 &&
        e->len <= NS_INST_ID_MAX && !strpbrk(e->str, " \t\r\n")) {
      k->probe[k->n].k = k;
      memcpy(k->probe[k->n].id, e->str, e->len);
      k->n++;
    }
  }
  k->left = k->n + 1; /* one more, dropped below: no early finish */
  for (i = 0; i < k->n; i++) {
    char key[160];
    ns__key(c->srv, key, sizeof(key), "inst:{%s}", k->probe[i].id);
    if (ns_redis_cmd(c->srv->redis, on_inst_probed, &k->probe[i], "EXISTS %s",
                     key) != 0) {
      k->failed = 1;
      k->left--;
    }
  }
  if (--k->left == 0)
    inst_check_done(k);
}

static void on_connect_script(redisReply *r, void *arg) {
  ns_conn *c = arg;
  if (!c->wsi || c->state == NS_CONN_CLOSING) {
    ns_conn_unref(c);
    return;
  }
  if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
      r->element[0]->type == REDIS_REPLY_INTEGER &&
      r->element[0]->integer == -2) {
    inst_check_start(c, r); /* takes our reference */
    return;
  }
  if (!r || r->type != REDIS_REPLY_INTEGER) {
    if (r && r->type == REDIS_REPLY_ERROR)
      ns_log(NS_LOG_ERROR, "presence connect: %s", r->str);
    fail_connect(c, 1011, "backend unavailable");
    ns_conn_unref(c);
    return;
  }
  if (r->integer < 0) {
    refuse_connect(c);
    ns_conn_unref(c);
    return;
  }
  /* The queue's first page and the registration go in parallel. */
  c->reg_parts = 2;
  ns_conn_ref(c);
  ns_queue_attach(c, on_queue_ready); /* that reference moves along */
  reg_enqueue(c);                     /* and ours */
}

/* Runs LUA_CONNECT for `c` (`checked` "0" on the first try, "1" with the
 * instances found `dead`); on_connect_script takes a reference of `c`
 * that the caller has taken.  Returns 0 or NS_EUNAVAIL / NS_EINVAL (no
 * callback). */
static int connect_eval(ns_conn *c, const char *checked, const char *dead) {
  ns_server *srv = c->srv;
  char key[256], ch[256], max[24], kick[200], life[24];
  char *val, *online;
  const char *args[11];
  int64_t now = ns_now_ms();
  int rc;
  ns__ukey(srv, key, sizeof(key), "presence", c->who.sub, NULL);
  ns_bus_user_channel(srv, c->who.sub, ch, sizeof(ch));
  snprintf(max, sizeof(max), "%lld", (long long)srv->cfg->max_devices_per_user);
  val = ns__presence_json("online", srv, c->id, c->idev_gen, now, now);
  online = ns__presence_status_event(c->device, "online", now);
  snprintf(life, sizeof(life), "%lld", (long long)srv->start_ms);
  snprintf(kick, sizeof(kick), "{\"k\":\"kick\",\"d\":\"%s\",\"c\":\"%s\"}",
           c->device, c->id);
  args[0] = key;
  args[1] = ch;
  args[2] = c->device;
  args[3] = val;
  args[4] = max;
  args[5] = srv->instance_id;
  args[6] = online;
  args[7] = kick;
  args[8] = checked;
  args[9] = dead;
  args[10] = life;
  rc = ns_redis_eval(srv->redis, on_connect_script, c, LUA_CONNECT, 2, args,
                     11);
  free(val);
  free(online);
  return rc;
}

void ns_presence_connect(ns_conn *c) {
  ns_server *srv = c->srv;
  void *old = NULL;
  char ch[256];

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
  ns_bus_user_channel(srv, c->who.sub, ch, sizeof(ch));
  if (ns_hub_user_devices(srv->hub, c->who.sub) == 1)
    ns_redis_subscribe(srv->redis, ch);

  c->idev_gen = ns_liveness_gen(srv);
  idev_update(c, "SADD"); /* before the script, on the same connection */
  ns_conn_ref(c);
  if (connect_eval(c, "0", "") != 0) {
    ns_conn_unref(c);
    fail_connect(c, 1011, "backend unavailable");
  }
}

/* ---- disconnect ---- */

typedef struct ns_pending_off {
  uv_timer_t timer;
  ns_server *srv;
  struct ns_pending_off *prev, *next;
  char user[NS_SUB_MAX + 1];
  char device[NS_DEVICE_ID_MAX + 1];
  char conn_id[96];
  int64_t gen;
} pending_off;

typedef struct offline_op {
  ns_server *srv;
  char *member; /* of the idev set, removed once the script answered */
} offline_op;

static void on_offline(redisReply *r, void *arg) {
  offline_op *op = arg;
  ns_server *srv = op->srv;
  char idev[160];
  if (r && r->type != REDIS_REPLY_ERROR) {
    ns__presence_idev_key(srv, NULL, idev, sizeof(idev));
    if (ns_redis_cmd(srv->redis, op_done, srv, "SREM %s %s", idev,
                     op->member) == 0)
      srv->pending_ops++;
  }
  srv->pending_ops--;
  free(op->member);
  free(op);
}

/* LUA_OFFLINE, then (once it has answered) the connection's member leaves
 * the idev set: in that order a crash in between leaves a member whose
 * presence is offline already, which the reaper skips.  When the script
 * fails the member stays, as the presence entry does. */
static void mark_offline(ns_server *srv, const char *user, const char *device,
                         const char *conn_id, int64_t gen) {
  char key[256], ch[256];
  int64_t now = ns_now_ms();
  char *val = ns__presence_json("offline", srv, conn_id, gen, now, now);
  char *ev = ns__presence_status_event(device, "offline", now);
  const char *args[6];
  offline_op *op = ns_xmalloc(sizeof(*op));
  op->srv = srv;
  op->member = ns__presence_idev_member(conn_id, gen, device, user);
  ns__ukey(srv, key, sizeof(key), "presence", user, NULL);
  ns_bus_user_channel(srv, user, ch, sizeof(ch));
  args[0] = key;
  args[1] = ch;
  args[2] = device;
  args[3] = conn_id;
  args[4] = val;
  args[5] = ev;
  if (ns_redis_eval(srv->redis, on_offline, op, LUA_OFFLINE, 2, args, 6) == 0) {
    srv->pending_ops++;
  } else {
    free(op->member);
    free(op);
  }
  free(val);
  free(ev);
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
  mark_offline(srv, p->user, p->device, p->conn_id, p->gen);
  uv_timer_stop(&p->timer);
  uv_close((uv_handle_t *)&p->timer, pending_closed);
}

static void on_grace_over(uv_timer_t *t) { pending_fire(t->data); }

void ns_presence_flush_pending(ns_server *srv) {
  while (srv->offline)
    pending_fire(srv->offline);
}

/* ---- last_seen of closed devices, in batches ----
 * As with registration: one UPDATE per batch of closes while one is out,
 * sorted so that concurrent batches lock rows in one order.  Each waiting
 * entry counts in pending_ops (shutdown waits for it). */

#define NS_SEEN_BATCH_MAX 512
/* Closes waiting at most while PostgreSQL is slow; past it a close's
 * last_seen is dropped and counted (the next connect writes it anyway). */
#define NS_SEEN_MAX_WAITING 100000

typedef struct seen_pair {
  char user[NS_SUB_MAX + 1];
  char device[NS_DEVICE_ID_MAX + 1];
} seen_pair;

struct ns_seen_wait {
  seen_pair *p;
  size_t n, cap;
};

void ns_presence_seen_stats(const ns_server *srv, uint64_t *waiting,
                            uint64_t *limit, uint64_t *dropped) {
  *waiting = srv->seen ? srv->seen->n : 0;
  *limit = NS_SEEN_MAX_WAITING;
  *dropped = srv->seen_dropped;
}

typedef struct seen_batch {
  ns_server *srv;
  size_t n;
} seen_batch;

static int seen_cmp(const void *a, const void *b) {
  const seen_pair *x = a, *y = b;
  int r = strcmp(x->user, y->user);
  return r ? r : strcmp(x->device, y->device);
}

static void seen_flush(ns_server *srv);

static void on_seen_batch(PGresult *res, void *arg) {
  seen_batch *b = arg;
  ns_server *srv = b->srv;
  (void)res; /* best effort, as before: last_seen is refreshed at connect */
  srv->seen_inflight = 0;
  srv->pending_ops -= (int)b->n;
  free(b);
  seen_flush(srv);
}

static void seen_flush(ns_server *srv) {
  static const char sql[] =
      "UPDATE devices d SET last_seen = now() FROM jsonb_to_recordset("
      "$1::jsonb) AS t(u text, dv text) "
      "WHERE d.user_id = t.u AND d.device_id = t.dv";
  struct ns_seen_wait *w = srv->seen;
  json_object *rows;
  char *param;
  seen_batch *b;
  size_t i, n;
  if (!w || !w->n || srv->seen_inflight)
    return;
  n = w->n < NS_SEEN_BATCH_MAX ? w->n : NS_SEEN_BATCH_MAX;
  qsort(w->p, n, sizeof(*w->p), seen_cmp);
  rows = json_object_new_array();
  for (i = 0; i < n; i++) {
    json_object *o = json_object_new_object();
    json_add_str(o, "u", w->p[i].user);
    json_add_str(o, "dv", w->p[i].device);
    json_object_array_add(rows, o);
  }
  param = batch_param(rows);
  memmove(w->p, w->p + n, (w->n - n) * sizeof(*w->p));
  w->n -= n;
  if (!w->n) {
    free(w->p);
    free(w);
    srv->seen = NULL;
  }
  b = ns_xcalloc(1, sizeof(*b));
  b->srv = srv;
  b->n = n;
  srv->seen_inflight = 1;
  if (!srv->pg_ready ||
      ns_pg_query_prepared(ns__pg(srv), "seen_batch", sql, 1,
                           (const char *const *)&param, on_seen_batch, b) != 0)
    on_seen_batch(NULL, b);
  free(param);
}

static void seen_enqueue(ns_server *srv, const char *user, const char *device) {
  struct ns_seen_wait *w = srv->seen;
  if (w && w->n >= NS_SEEN_MAX_WAITING) {
    srv->seen_dropped++;
    return;
  }
  if (!w)
    w = srv->seen = ns_xcalloc(1, sizeof(*w));
  if (w->n == w->cap) {
    w->cap = w->cap ? w->cap * 2 : 64;
    w->p = ns_xrealloc(w->p, w->cap * sizeof(*w->p));
  }
  snprintf(w->p[w->n].user, sizeof(w->p[w->n].user), "%s", user);
  snprintf(w->p[w->n].device, sizeof(w->p[w->n].device), "%s", device);
  w->n++;
  srv->pending_ops++;
  seen_flush(srv);
}

/* The device stays `online` through presence_grace, but its connection no
 * longer counts against max_devices_per_user (LUA_CLOSED). */
static void mark_closed(ns_conn *c) {
  ns_server *srv = c->srv;
  char key[256];
  const char *args[3];
  ns__ukey(srv, key, sizeof(key), "presence", c->who.sub, NULL);
  args[0] = key;
  args[1] = c->device;
  args[2] = c->id;
  if (ns_redis_eval(srv->redis, op_done, srv, LUA_CLOSED, 1, args, 3) == 0)
    srv->pending_ops++;
}

void ns_presence_disconnect(ns_conn *c) {
  ns_server *srv = c->srv;
  hub_leave(c);
  if (srv->pg_ready)
    seen_enqueue(srv, c->who.sub, c->device);
  if (srv->cfg->presence_grace_ms <= 0 || srv->stopping) {
    mark_offline(srv, c->who.sub, c->device, c->id, c->idev_gen);
  } else {
    pending_off *p = ns_xcalloc(1, sizeof(*p));
    mark_closed(c);
    p->srv = srv;
    snprintf(p->user, sizeof(p->user), "%s", c->who.sub);
    snprintf(p->device, sizeof(p->device), "%s", c->device);
    snprintf(p->conn_id, sizeof(p->conn_id), "%s", c->id);
    p->gen = c->idev_gen;
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

/* ---- presence events on the user bus ---- */

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

/* Another connection of the device, here or on another instance, took
 * over: this one is closed (4000) unless it is that connection. */
static void on_kick_event(ns_server *srv, const char *user, json_object *ev) {
  json_object *d, *cid;
  ns_conn *c;
  if (!json_object_object_get_ex(ev, "d", &d) ||
      !json_object_object_get_ex(ev, "c", &cid))
    return;
  c = ns_hub_get(srv->hub, user, json_object_get_string(d));
  if (c && strcmp(c->id, json_object_get_string(cid)) != 0) {
    hub_leave(c);
    ns_conn_close(c, 4000, "replaced");
  }
}

void ns_presence_bus_register(ns_bus *b) {
  ns_bus_on_event(b, "st", on_status_event);
  ns_bus_on_event(b, "kick", on_kick_event);
}

/* ---- forgetting a device ---- */

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
