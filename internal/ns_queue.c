/*
 * ns_queue.c -- durable per-device queues on Redis Streams and their
 * delivery to a connection (see ns_queue.h for the key layout).
 *
 * A connection only ever reads its stream forward from the last id it put
 * in its ring, one fetch at a time; a live "q" event is just a nudge to
 * read.  So the per-connection order is the stream's order, a live message
 * can never overtake a queued one, and nothing is sent twice on one
 * connection.  Pages are NS_QUEUE_PAGE entries; the next page is read once
 * the ring has drained, so replay respects max_outbound_bytes.
 */
#include "ns_queue.h"

#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ns_log.h"

#define NS_QUEUE_PAGE 200
/* A later read deletes at most this many pages of aged entries. */
#define NS_QUEUE_AGE_ROUNDS "25"
/* A live-only entry (ttl 0) not read within this long is not delivered. */
#define NS_QUEUE_LIVE_MS 30000

/* KEYS: the marker qd:{user}:<id>, channel u:{user}, ql:{user} (the last
 * id issued for the user), cur:{user} (the devices' cursors: kept alive as
 * long as the queues), presence:{user}, then the n target queues, then --
 * with a collapse key only -- the n targets' collapse indexes
 * ck:{user}:<device> (hash: key -> stream id of the entry holding it).
 * ARGV: 1 ttl s, 2 maxlen, 3 type, 4 data, 5 commit ms, 6 '1' = use the
 * marker, 7 the targets (csv, in key order), 8 ttl ms, 9 collapse key or
 * '', 10 expires ms or '', 11 '1' = live only, 12 n, 13 marker ttl s.
 *
 * The new id is above the user's last id (and the clock); without ql
 * (first push, or after it expired) every target stream's
 * last-generated-id is read instead.  A device is "connected" when its
 * presence says online and its connection is not closed: it keeps every
 * entry (it sees each one live) and is the only kind of target a
 * live-only message goes to.  For any other target an older entry of the
 * same collapse key leaves the stream; it counts as settled
 * ("<device>:n") so it is never reported missed.  A collapse index is
 * pruned of entries already gone from the stream once it holds twice
 * maxlen keys: each push then checks 100 random keys (HRANDFIELD) and
 * drops those whose entry is gone.  Past that size at least half the keys
 * are gone (a stream holds at most maxlen), so each push removes ~50 while
 * adding one: the index stays near 2 x maxlen, and a push's work is
 * bounded (it used to read the whole index on every push once it stayed
 * above the size).
 *
 * Redis does not undo a script's writes when a later command fails, so
 * everything that can fail is checked before the first write (a key of
 * another type), and the exactly-once marker is written last: a push that
 * fails leaves no marker, and its retry queues again.  A marker 'x' is a
 * cancel (ns_queue_cancel): nothing is queued.
 * Returns {appended, collapsed}, or {-1, 0} (queued before), {-2, 0}
 * (canceled). */
static const char LUA_PUSH[] =
    "if ARGV[6] == '1' then\n"
    "  local m = redis.call('GET', KEYS[1])\n"
    "  if m == 'x' then return {-2, 0} end\n"
    "  if m then return {-1, 0} end\n"
    "end\n"
    "local n = tonumber(ARGV[12])\n"
    "local ck = ARGV[9] ~= ''\n"
    "local live = ARGV[11] == '1'\n"
    "local last = 5 + n\n"
    "if ck then last = 5 + 2 * n end\n"
    "for i = 6, last do\n"
    "  local ty = redis.call('TYPE', KEYS[i])['ok']\n"
    "  local want = 'stream'\n"
    "  if i > 5 + n then want = 'hash' end\n"
    "  if ty ~= want and ty ~= 'none' then\n"
    "    return redis.error_reply('queue key ' .. KEYS[i] .. ' holds a ' .. ty)\n"
    "  end\n"
    "end\n"
    "local devs, sel, conn = {}, {}, {}\n"
    "if live or ck then\n"
    "  for d in string.gmatch(ARGV[7], '[^,]+') do devs[#devs + 1] = d end\n"
    "  for i = 1, n do\n"
    "    local v = redis.call('HGET', KEYS[5], devs[i])\n"
    "    local ok, t = false, nil\n"
    "    if v then ok, t = pcall(cjson.decode, v) end\n"
    "    conn[i] = ok and type(t) == 'table' and t.status == 'online' and not t.closed\n"
    "    if not live or conn[i] then sel[#sel + 1] = i end\n"
    "  end\n"
    "else\n"
    "  for i = 1, n do sel[i] = i end\n"
    "end\n"
    "local t = redis.call('TIME')\n"
    "local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local seq = 0\n"
    "local function split(s)\n"
    "  local a, b = string.match(s, '^(%d+)-(%d+)$')\n"
    "  if a then return tonumber(a), tonumber(b) end\n"
    "end\n"
    "local function above(s)\n"
    "  local a, b = split(s)\n"
    "  if not a then return end\n"
    "  if a > ms then ms = a; seq = b + 1\n"
    "  elseif a == ms and b + 1 > seq then seq = b + 1 end\n"
    "end\n"
    "local ql = redis.call('GET', KEYS[3])\n"
    "if ql then above(ql) else\n"
    "  for _, i in ipairs(sel) do\n"
    "    local ok, info = pcall(redis.call, 'XINFO', 'STREAM', KEYS[5 + i])\n"
    "    if ok then\n"
    "      for j = 1, #info, 2 do\n"
    "        if info[j] == 'last-generated-id' then above(info[j+1]) end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local id = string.format('%.0f-%.0f', ms, seq)\n"
    "local f = {'t', ARGV[3], 'd', ARGV[4], 'c', ARGV[5]}\n"
    "if ARGV[10] ~= '' then f[#f + 1] = 'x'; f[#f + 1] = ARGV[10] end\n"
    "if live then f[#f + 1] = 'l'; f[#f + 1] = '1' end\n"
    "local collapsed, got = 0, {}\n"
    "for _, i in ipairs(sel) do\n"
    "  local q, h = KEYS[5 + i], KEYS[5 + n + i]\n"
    "  if ck and not conn[i] then\n"
    "    local old = redis.call('HGET', h, ARGV[9])\n"
    "    if old then\n"
    "      local k = redis.call('XDEL', q, old)\n"
    "      if k > 0 then\n"
    "        collapsed = collapsed + k\n"
    "        redis.call('HINCRBY', KEYS[4], devs[i] .. ':n', k)\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  redis.call('XADD', q, 'MAXLEN', ARGV[2], id, unpack(f))\n"
    "  redis.call('EXPIRE', q, ARGV[1])\n"
    "  if ck then\n"
    "    redis.call('HSET', h, ARGV[9], id)\n"
    "    redis.call('EXPIRE', h, ARGV[1])\n"
    "    if redis.call('HLEN', h) > 2 * tonumber(ARGV[2]) then\n"
    "      local some = redis.call('HRANDFIELD', h, 100, 'WITHVALUES')\n"
    "      for j = 1, #some, 2 do\n"
    "        if #redis.call('XRANGE', q, some[j + 1], some[j + 1]) == 0 then\n"
    "          redis.call('HDEL', h, some[j])\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  if live then got[#got + 1] = devs[i] end\n"
    "end\n"
    "if #sel > 0 then\n"
    "  redis.call('SET', KEYS[3], id, 'EX', ARGV[1])\n"
    "  redis.call('EXPIRE', KEYS[4], ARGV[1])\n"
    "end\n"
    "if ARGV[6] == '1' then redis.call('SET', KEYS[1], '1', 'EX', ARGV[13]) end\n"
    "if #sel > 0 then\n"
    "  local t = ARGV[7]\n"
    "  if live then t = table.concat(got, ',') end\n"
    "  redis.call('PUBLISH', KEYS[2], '{\"k\":\"q\",\"t\":\"' .. t .. '\"}')\n"
    "end\n"
    "return {#sel, collapsed}\n";

/* Every read first drops what is older than queue_ttl (SPEC §5.2: such an
 * entry is never delivered, also when a long replay reaches it pages
 * later), then reads a page after the cursor ARGV[2].
 *
 * The connect read (ARGV[5] = '1') trims the stream's head (XTRIM MINID)
 * and computes `missed` (and how many of them it dropped for age just now).
 * A later read must not touch what is at or before the cursor (this
 * connection's: in its ring, or written and awaiting an ack; LUA_TRIM or
 * the next connect read settles it): it deletes the aged entries after the
 * cursor -- never sent -- counts them as settled for the missed arithmetic
 * ("<device>:n") and reports them as `aged`.  It deletes at most ARGV[6]
 * rounds of ARGV[3]; when more may be left it reads no page and says
 * `more`.
 *
 * Expiry (SPEC §9.2): an entry of the page past its expiry (field x) is
 * deleted instead of returned, and so is a live-only entry (field l, ttl
 * 0) committed (field c) before this connection was born (ARGV[7]) or more
 * than ARGV[8] ms ago; both count as settled, not missed.  Entries further
 * on are judged when their page is read, so welcome.queued may still
 * count some that expire before they are reached.
 * Reply: {missed, len, entries, aged, more, expired}. */
static const char LUA_FETCH[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local cut = string.format('%.0f', now - tonumber(ARGV[4]))\n"
    "local missed, len, aged, more = 0, 0, 0, 0\n"
    "local from = '-'\n"
    "if ARGV[2] ~= '' then from = '(' .. ARGV[2] end\n"
    "if ARGV[5] == '1' then\n"
    "  aged = redis.call('XTRIM', KEYS[1], 'MINID', cut)\n"
    "  local ok, info = pcall(redis.call, 'XINFO', 'STREAM', KEYS[1])\n"
    "  if ok then\n"
    "    local added = 0\n"
    "    for j = 1, #info, 2 do\n"
    "      if info[j] == 'entries-added' then added = info[j+1] end\n"
    "    end\n"
    "    len = redis.call('XLEN', KEYS[1])\n"
    "    local done = tonumber(redis.call('HGET', KEYS[2], ARGV[1] .. ':n') or '0')\n"
    "    missed = added - done - len\n"
    "    if missed > 0 then\n"
    "      redis.call('HINCRBY', KEYS[2], ARGV[1] .. ':n', missed)\n"
    "    else missed = 0 end\n"
    "  else\n"
    "    redis.call('HDEL', KEYS[2], ARGV[1] .. ':n')\n"
    "  end\n"
    "  redis.call('PEXPIRE', KEYS[2], ARGV[4])\n"
    "else\n"
    "  local rounds, count = tonumber(ARGV[6]), tonumber(ARGV[3])\n"
    "  for round = 1, rounds do\n"
    "    local old = redis.call('XRANGE', KEYS[1], from, '(' .. cut .. '-0',\n"
    "                           'COUNT', count)\n"
    "    if #old == 0 then break end\n"
    "    local ids = {}\n"
    "    for i = 1, #old do ids[i] = old[i][1] end\n"
    "    aged = aged + redis.call('XDEL', KEYS[1], unpack(ids))\n"
    "    from = '(' .. ids[#ids]\n"
    "    if #old < count then break end\n"
    "    if round == rounds then more = 1 end\n"
    "  end\n"
    "  if aged > 0 then\n"
    "    redis.call('HINCRBY', KEYS[2], ARGV[1] .. ':n', aged)\n"
    "    if redis.call('PTTL', KEYS[2]) < 0 then\n"
    "      redis.call('PEXPIRE', KEYS[2], ARGV[4]) end\n"
    "  end\n"
    "end\n"
    "if more == 1 then return {missed, len, {}, aged, 1, 0} end\n"
    "local page = redis.call('XRANGE', KEYS[1], from, '+', 'COUNT', ARGV[3])\n"
    "if #page == tonumber(ARGV[3]) then more = 1 end\n"
    "local born, gone, dead = tonumber(ARGV[7]), {}, {}\n"
    "for i = 1, #page do\n"
    "  local fl = page[i][2]\n"
    "  if #fl > 6 then\n" /* t, d, c only: nothing to judge */
    "    local x, l, c = nil, false, nil\n"
    "    for j = 1, #fl, 2 do\n"
    "      if fl[j] == 'x' then x = tonumber(fl[j + 1])\n"
    "      elseif fl[j] == 'l' then l = true\n"
    "      elseif fl[j] == 'c' then c = tonumber(fl[j + 1]) end\n"
    "    end\n"
    "    if (l and (not c or c < born or now - c > tonumber(ARGV[8]))) or\n"
    "       (not l and x ~= nil and now >= x) then\n"
    "      gone[#gone + 1] = page[i][1]\n"
    "      dead[i] = true\n"
    "    end\n"
    "  end\n"
    "end\n"
    "if #gone == 0 then return {missed, len, page, aged, more, 0} end\n"
    "redis.call('XDEL', KEYS[1], unpack(gone))\n"
    "redis.call('HINCRBY', KEYS[2], ARGV[1] .. ':n', #gone)\n"
    "if redis.call('PTTL', KEYS[2]) < 0 then\n"
    "  redis.call('PEXPIRE', KEYS[2], ARGV[4]) end\n"
    "if ARGV[5] == '1' then len = len - #gone end\n"
    "local keep = {}\n"
    "for i = 1, #page do\n"
    "  if not dead[i] then keep[#keep + 1] = page[i] end\n"
    "end\n"
    "return {missed, len, keep, aged, more, #gone}\n";

/* Trims the device's stream up to ARGV[2] and moves its cursor there.  The
 * cursor hash gets its TTL when a field is created (pushes and connect reads
 * refresh it), not on every trim: one command less per delivery. */
static const char LUA_TRIM[] =
    "local a, b = string.match(ARGV[2], '^(%d+)-(%d+)$')\n"
    "if not a then return 0 end\n"
    "local n = redis.call('XTRIM', KEYS[1], 'MINID',\n"
    "                     a .. '-' .. string.format('%.0f', tonumber(b) + 1))\n"
    "if n > 0 then redis.call('HINCRBY', KEYS[2], ARGV[1] .. ':n', n) end\n"
    "if redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) == 1 then\n"
    "  redis.call('EXPIRE', KEYS[2], ARGV[3]) end\n"
    "return n\n";

/* Parses "a-b"; 0 on success. */
static int parse_id(const char *s, uint64_t *a, uint64_t *b) {
  return sscanf(s, "%" SCNu64 "-%" SCNu64, a, b) == 2 ? 0 : -1;
}

/* >0 when x is after y; empty ids sort first. */
static int id_cmp(const char *x, const char *y) {
  uint64_t xa = 0, xb = 0, ya = 0, yb = 0;
  if (!*x || !*y)
    return (*x != 0) - (*y != 0);
  parse_id(x, &xa, &xb);
  parse_id(y, &ya, &yb);
  if (xa != ya)
    return xa > ya ? 1 : -1;
  return xb > yb ? 1 : xb < yb ? -1 : 0;
}

static void qkeys(const ns_conn *c, char *q, size_t qn, char *cur, size_t cn) {
  ns__ukey(c->srv, q, qn, "q", c->who.sub, c->device);
  ns__ukey(c->srv, cur, cn, "cur", c->who.sub, NULL);
}

/* ---- push ---- */

typedef struct push_op {
  ns_queue_push_cb cb;
  void *arg;
  ns_server *srv;
  long long n;     /* entries appended, kept while WAIT runs */
  char mkey[300];  /* the marker key: where the push ran */
} push_op;

static void push_finish(push_op *op, int rc, long long n) {
  op->cb(rc, n, op->arg);
  free(op);
}

/* redis_wait_replicas: the push counts as done only once that many
 * replicas have it.  Short of them (timeout, a replica down) the producer
 * gets 503 and retries with its id; the stored notification is found and
 * nothing is queued twice. */
static void on_waited(redisReply *r, void *arg) {
  push_op *op = arg;
  int64_t want = op->srv->cfg->redis_wait_replicas;
  if (!r || r->type != REDIS_REPLY_INTEGER || r->integer < want) {
    ns_log(NS_LOG_WARN, "queue push: WAIT %lld: %s", (long long)want,
           r && r->type == REDIS_REPLY_INTEGER ? "too few replicas in time"
                                                : "no reply");
    ns_metrics_inc(&op->srv->metrics, NS_M_CLUSTER, "wait_replicas_short");
    push_finish(op, NS_EUNAVAIL, 0);
    return;
  }
  push_finish(op, 0, op->n);
}

/* The push's reply: done, or (redis_wait_replicas) a WAIT first, sent from
 * inside this reply's callback so that it goes on the connection that
 * wrote (cluster: the node that answered, also after a redirect). */
static void push_done(push_op *op, int rc, long long n) {
  const ns_config *cfg = op->srv->cfg;
  if (rc != 0 || cfg->redis_wait_replicas <= 0) {
    push_finish(op, rc, n);
    return;
  }
  op->n = n;
  if (ns_redis_wait(op->srv->redis, op->mkey, (int)cfg->redis_wait_replicas,
                    (int)cfg->redis_wait_timeout_ms, on_waited, op) != 0)
    push_finish(op, NS_EUNAVAIL, 0);
}

static void on_pushed(redisReply *r, void *arg) {
  push_op *op = arg;
  if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
      r->element[0]->type != REDIS_REPLY_INTEGER ||
      r->element[1]->type != REDIS_REPLY_INTEGER) {
    if (r && r->type == REDIS_REPLY_ERROR)
      ns_log(NS_LOG_ERROR, "queue push: %s", r->str);
    push_done(op, NS_EUNAVAIL, 0);
  } else if (r->element[0]->integer == -2) {
    push_done(op, NS_ECANCELED, 0);
  } else {
    long long n = r->element[0]->integer < 0 ? 0 : r->element[0]->integer;
    op->srv->metrics.queue_appends += (uint64_t)n;
    if (r->element[1]->integer > 0)
      ns_metrics_add(&op->srv->metrics, NS_M_QUEUE_DROPPED, "collapsed",
                     (uint64_t)r->element[1]->integer);
    push_done(op, 0, n);
  }
}

/* The n device ids of `csv` as keys "<kind>:{user}:<device>", into argv
 * from `at`; the copies go to owned[] (freed by the caller). */
static void device_keys(const ns_server *srv, const char *kind,
                        const char *user, const char *csv, size_t n,
                        const char **argv, char **owned) {
  const char *p = csv;
  size_t i;
  for (i = 0; i < n; i++) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    char key[300], dev[NS_DEVICE_ID_MAX + 1];
    snprintf(dev, sizeof(dev), "%.*s", (int)NS_MIN(len, sizeof(dev) - 1), p);
    ns__ukey(srv, key, sizeof(key), kind, user, dev);
    owned[i] = ns_xstrdup(key);
    argv[i] = owned[i];
    p = end ? end + 1 : p + len;
  }
}

int ns_queue_push(ns_server *srv, const char *user, const char *targets_csv,
                  const char *type, const char *data_json,
                  const ns_queue_opts *o, ns_queue_push_cb cb, void *arg) {
  const ns_config *cfg = srv->cfg;
  char ttl_s[24], maxlen[24], commit[24], ttl_ms[24], nkeys[16], ndevs[16];
  char expires[24] = "", mttl[24];
  char mkey[300], ch[256], ql[256], cur[256], pres[256];
  const char **argv;
  char **owned;
  size_t ndev = 0, nk, i, argc, at;
  int ck = o->collapse_key && *o->collapse_key;
  const char *p;
  push_op *op;
  int rc;

  for (p = targets_csv; *p; p++)
    ndev += *p == ',';
  if (*targets_csv)
    ndev++;
  nk = 5 + ndev * (ck ? 2 : 1);
  snprintf(ttl_s, sizeof(ttl_s), "%lld", (long long)(cfg->queue_ttl_ms / 1000));
  snprintf(ttl_ms, sizeof(ttl_ms), "%lld", (long long)cfg->queue_ttl_ms);
  snprintf(maxlen, sizeof(maxlen), "%lld", (long long)cfg->queue_max_messages);
  snprintf(commit, sizeof(commit), "%lld", (long long)o->commit_ms);
  snprintf(nkeys, sizeof(nkeys), "%zu", nk);
  snprintf(ndevs, sizeof(ndevs), "%zu", ndev);
  snprintf(mttl, sizeof(mttl), "%lld",
           (long long)(o->marker_ttl_s > 0 ? o->marker_ttl_s
                                           : cfg->queue_ttl_ms / 1000));
  if (o->expires_ms > 0)
    snprintf(expires, sizeof(expires), "%lld", (long long)o->expires_ms);
  ns__ukey(srv, mkey, sizeof(mkey), "qd", user, o->marker ? o->marker : "-");
  ns__ukey(srv, ch, sizeof(ch), "u", user, NULL);
  ns__ukey(srv, ql, sizeof(ql), "ql", user, NULL);
  ns__ukey(srv, cur, sizeof(cur), "cur", user, NULL);
  ns__ukey(srv, pres, sizeof(pres), "presence", user, NULL);

  argc = 3 + nk + 13;
  argv = ns_xcalloc(argc, sizeof(*argv));
  owned = ns_xcalloc(2 * ndev + 1, sizeof(*owned));
  argv[0] = "EVAL";
  argv[1] = LUA_PUSH;
  argv[2] = nkeys;
  argv[3] = mkey;
  argv[4] = ch;
  argv[5] = ql;
  argv[6] = cur;
  argv[7] = pres;
  device_keys(srv, "q", user, targets_csv, ndev, argv + 8, owned);
  if (ck)
    device_keys(srv, "ck", user, targets_csv, ndev, argv + 8 + ndev,
                owned + ndev);
  at = 3 + nk;
  argv[at + 0] = ttl_s;
  argv[at + 1] = maxlen;
  argv[at + 2] = type;
  argv[at + 3] = data_json;
  argv[at + 4] = commit;
  argv[at + 5] = o->marker ? "1" : "0";
  argv[at + 6] = targets_csv;
  argv[at + 7] = ttl_ms;
  argv[at + 8] = ck ? o->collapse_key : "";
  argv[at + 9] = expires;
  argv[at + 10] = o->live_only ? "1" : "0";
  argv[at + 11] = ndevs;
  argv[at + 12] = mttl;
  op = ns_xcalloc(1, sizeof(*op));
  op->cb = cb;
  op->arg = arg;
  op->srv = srv;
  snprintf(op->mkey, sizeof(op->mkey), "%s", mkey);
  rc = ns_redis_cmdargv(srv->redis, on_pushed, op, (int)argc, argv, NULL);
  for (i = 0; i < 2 * ndev; i++)
    free(owned[i]);
  free(owned);
  free(argv);
  if (rc != 0) {
    free(op);
    return NS_EUNAVAIL;
  }
  return 0;
}

/* ---- cancel ---- */

typedef struct cancel_op {
  ns_queue_cancel_cb cb;
  void *arg;
} cancel_op;

/* Sets the marker to 'x' unless it exists; replies the marker's value
 * after that ('x': canceled, now or before; '1': already queued). */
static const char LUA_CANCEL[] =
    "if redis.call('SET', KEYS[1], 'x', 'NX', 'EX', ARGV[1]) then\n"
    "  return 'x' end\n"
    "return redis.call('GET', KEYS[1])\n";

static void on_canceled(redisReply *r, void *arg) {
  cancel_op *op = arg;
  if (!r || r->type == REDIS_REPLY_ERROR)
    op->cb(NS_EUNAVAIL, op->arg);
  else if (r->type == REDIS_REPLY_STRING && strcmp(r->str, "x") == 0)
    op->cb(0, op->arg);
  else if (r->type == REDIS_REPLY_STRING)
    op->cb(NS_ELIMIT, op->arg);
  else /* not a marker's value: nothing else writes the key */
    op->cb(NS_EUNAVAIL, op->arg);
  free(op);
}

int ns_queue_cancel(ns_server *srv, const char *user, const char *id,
                    int64_t ttl_s, ns_queue_cancel_cb cb, void *arg) {
  char mkey[300], ttl[24];
  const char *args[2];
  cancel_op *op = ns_xmalloc(sizeof(*op));
  ns__ukey(srv, mkey, sizeof(mkey), "qd", user, id);
  snprintf(ttl, sizeof(ttl), "%lld", (long long)NS_MAX(ttl_s, 1));
  args[0] = mkey;
  args[1] = ttl;
  op->cb = cb;
  op->arg = arg;
  if (ns_redis_eval(srv->redis, on_canceled, op, LUA_CANCEL, 1, args, 2) != 0) {
    free(op);
    return NS_EUNAVAIL;
  }
  return 0;
}

/* ---- delivery to one connection ---- */

static void fetch(ns_conn *c, int first);

/* Builds the ring message of one stream entry [id, [field, value, ...]]. */
static ns_msg *entry_msg(redisReply *e) {
  redisReply *f;
  const char *type = NULL, *data = NULL;
  long long commit = 0, expires = 0;
  int live = 0;
  size_t i, len;
  char *buf;
  ns_msg *m;
  if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
      e->element[0]->type != REDIS_REPLY_STRING)
    return NULL;
  f = e->element[1];
  for (i = 0; f->type == REDIS_REPLY_ARRAY && i + 1 < f->elements; i += 2) {
    const char *k = f->element[i]->str, *v = f->element[i + 1]->str;
    if (!k || !v)
      continue;
    if (strcmp(k, "t") == 0)
      type = v;
    else if (strcmp(k, "d") == 0)
      data = v;
    else if (strcmp(k, "c") == 0)
      commit = atoll(v);
    else if (strcmp(k, "x") == 0)
      expires = atoll(v);
    else if (strcmp(k, "l") == 0)
      live = 1;
  }
  if (!type || !data)
    return NULL;
  buf = ns_proto_envelope_raw(type, e->element[0]->str, data, ns_now_ms(),
                              LWS_PRE, &len);
  m = ns_msg_wrap(buf, len,
                  strcmp(type, "notification_sync") == 0 ? "notification_sync"
                                                         : "new_notification");
  if (!m)
    return NULL;
  m->durable = 1;
  snprintf(m->qid, sizeof(m->qid), "%s", e->element[0]->str);
  m->commit_ms = commit;
  /* A live-only entry (ttl 0) expires at its creation: it is this
   * connection's (LUA_FETCH checked that), written within the live window. */
  m->expires_ms = live ? commit + NS_QUEUE_LIVE_MS : expires;
  return m;
}

/* `missed` messages this device never got; `aged` of them were old enough
 * for the age trim of this read, the rest went to the cap (or to age in an
 * earlier life of the stream, which the server can no longer tell apart). */
static void send_overflow(ns_conn *c, long long missed, long long aged) {
  json_object *d = json_object_new_object();
  json_object_object_add(d, "missed", json_object_new_int64(missed));
  ns_conn_send_json(c, "queue_overflow", d, NULL);
  aged = NS_MIN(NS_MAX(aged, 0), missed);
  if (aged > 0)
    ns_metrics_add(&c->srv->metrics, NS_M_QUEUE_DROPPED, "age", (uint64_t)aged);
  if (missed > aged)
    ns_metrics_add(&c->srv->metrics, NS_M_QUEUE_DROPPED, "cap",
                   (uint64_t)(missed - aged));
}

/* Ends the connect read: the callback runs once and is forgotten. */
static void attach_done(ns_conn *c, int rc) {
  void (*ready)(int, ns_conn *) = c->q_ready;
  c->q_ready = NULL;
  ready(rc, c);
}

static void on_fetched(redisReply *r, void *arg) {
  ns_conn *c = arg;
  int first = c->q_ready != NULL;
  size_t i;
  c->q_fetching = 0;
  if (!c->wsi || c->state == NS_CONN_CLOSING) {
    if (first)
      attach_done(c, NS_EUNAVAIL);
    ns_conn_unref(c);
    return;
  }
  if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 6) {
    if (r && r->type == REDIS_REPLY_ERROR)
      ns_log(NS_LOG_ERROR, "queue fetch: %s", r->str);
    if (first)
      attach_done(c, NS_EUNAVAIL);
    /* Otherwise Redis went away mid-read: the entries stay queued and the
     * re-subscription after the reconnect makes every device read again. */
    ns_conn_unref(c);
    return;
  }
  if (first) {
    c->queued = r->element[1]->integer;
    if (r->element[0]->integer > 0)
      send_overflow(c, r->element[0]->integer, r->element[3]->integer);
  } else if (r->element[3]->integer > 0) {
    /* entries that aged out before this page was read: never sent */
    send_overflow(c, r->element[3]->integer, r->element[3]->integer);
  }
  if (r->element[5]->integer > 0)
    ns_metrics_add(&c->srv->metrics, NS_M_QUEUE_DROPPED, "expired",
                   (uint64_t)r->element[5]->integer);
  c->q_more = r->element[4]->integer != 0;
  for (i = 0; i < r->element[2]->elements; i++) {
    ns_msg *m = entry_msg(r->element[2]->element[i]);
    if (!m)
      continue;
    /* Keep replay within half the outbound bound; the rest is read again
     * (from q_last) once the ring has drained. */
    if (c->ring_len > 0 &&
        c->out_bytes + m->len > (size_t)c->srv->cfg->max_outbound_bytes / 2) {
      ns_msg_unref(&m);
      c->q_more = 1;
      break;
    }
    if (id_cmp(m->qid, c->q_last) > 0) {
      snprintf(c->q_last, sizeof(c->q_last), "%s", m->qid);
      ns_conn_send(c, m);
    }
    ns_msg_unref(&m);
  }
  if (first)
    attach_done(c, 0);
  if (c->q_refetch || (c->q_more && c->ring_len == 0)) {
    c->q_refetch = 0;
    fetch(c, 0);
  }
  ns_conn_unref(c);
}

static void fetch(ns_conn *c, int first) {
  char q[300], cur[256], count[16], ttl[24], born[24], live[24];
  const char *argv[13];
  if (c->q_fetching) {
    c->q_refetch = 1;
    return;
  }
  qkeys(c, q, sizeof(q), cur, sizeof(cur));
  snprintf(count, sizeof(count), "%d", NS_QUEUE_PAGE);
  snprintf(ttl, sizeof(ttl), "%lld", (long long)c->srv->cfg->queue_ttl_ms);
  argv[0] = "EVAL";
  argv[1] = LUA_FETCH;
  argv[2] = "2";
  argv[3] = q;
  argv[4] = cur;
  argv[5] = c->device;
  argv[6] = c->q_last;
  argv[7] = count;
  argv[8] = ttl;
  argv[9] = first ? "1" : "0";
  argv[10] = NS_QUEUE_AGE_ROUNDS;
  snprintf(born, sizeof(born), "%lld", (long long)c->born_ms);
  snprintf(live, sizeof(live), "%d", NS_QUEUE_LIVE_MS);
  argv[11] = born;
  argv[12] = live;
  ns_conn_ref(c);
  c->q_fetching = 1;
  if (ns_redis_cmdargv(c->srv->redis, on_fetched, c, 13, argv, NULL) != 0) {
    c->q_fetching = 0;
    on_fetched(NULL, c);
  }
}

void ns_queue_attach(ns_conn *c, ns_queue_ready_cb done) {
  c->q_attached = 1;
  c->q_ready = done;
  fetch(c, 1);
}

void ns_queue_kick(ns_conn *c) {
  if (c->q_attached && c->wsi && c->state != NS_CONN_CLOSING)
    fetch(c, 0);
}

void ns_queue_on_drained(ns_conn *c) {
  if (c->q_attached && c->q_more && !c->q_fetching)
    fetch(c, 0);
}

/* At most this many trims in flight for one connection: acks (already
 * bounded by the connection's message rate) are pipelined up to it. */
#define TRIM_INFLIGHT_MAX 4

static void trim(ns_conn *c, int pipelined);

static void on_trimmed(redisReply *r, void *arg) {
  ns_conn *c = arg;
  c->q_trimming--;
  /* Goes on after the socket closed: what was written is delivered and
   * must not be replayed to the next connection. */
  if (r && r->type == REDIS_REPLY_INTEGER &&
      id_cmp(c->q_written, c->q_trimmed) > 0)
    trim(c, 0);
  ns_conn_unref(c);
}

/* Trims everything up to q_written.  Deliveries in non-ack mode keep one
 * EVAL in flight per connection (the next one covers whatever was written
 * meanwhile); an explicit ack (`pipelined`) goes out at once, so that a
 * device that acks, closes and reconnects at once is not replayed what it
 * acked: its trim is on the command connection before the new
 * connection's read (one connection, executed in order). */
static void trim(ns_conn *c, int pipelined) {
  char q[300], cur[256], ttl_s[24];
  const char *argv[8];
  if (id_cmp(c->q_written, c->q_trimmed) <= 0)
    return;
  if (c->q_trimming && (!pipelined || c->q_trimming >= TRIM_INFLIGHT_MAX))
    return;
  qkeys(c, q, sizeof(q), cur, sizeof(cur));
  snprintf(c->q_trimmed, sizeof(c->q_trimmed), "%s", c->q_written);
  argv[0] = "EVAL";
  argv[1] = LUA_TRIM;
  argv[2] = "2";
  argv[3] = q;
  argv[4] = cur;
  argv[5] = c->device;
  argv[6] = c->q_trimmed;
  snprintf(ttl_s, sizeof(ttl_s), "%lld",
           (long long)(c->srv->cfg->queue_ttl_ms / 1000));
  argv[7] = ttl_s;
  ns_conn_ref(c);
  c->q_trimming++;
  if (ns_redis_cmdargv(c->srv->redis, on_trimmed, c, 8, argv, NULL) != 0) {
    /* Redis is down: the entries stay queued and are replayed later. */
    c->q_trimming--;
    c->q_trimmed[0] = '\0';
    ns_conn_unref(c);
  }
}

/* Non-ack mode: the entry of `m` is done with (written, or dropped as
 * expired): the cursor moves past it and the queue is trimmed.  In ack
 * mode the ack of a later entry trims it, or the next connect read. */
static void settle(ns_conn *c, const ns_msg *m) {
  if (c->ack_mode)
    return;
  if (id_cmp(m->qid, c->q_written) > 0)
    snprintf(c->q_written, sizeof(c->q_written), "%s", m->qid);
  trim(c, 0);
}

void ns_queue_on_written(ns_conn *c, const ns_msg *m) {
  if (!m->durable)
    return;
  if (m->commit_ms > 0)
    ns_metrics_observe_latency(&c->srv->metrics,
                               (double)(ns_now_ms() - m->commit_ms) / 1000.0);
  settle(c, m);
}

void ns_queue_on_expired(ns_conn *c, const ns_msg *m) {
  ns_metrics_inc(&c->srv->metrics, NS_M_QUEUE_DROPPED, "expired");
  settle(c, m);
}

void ns_queue_ack(ns_conn *c, const char *id) {
  if (id_cmp(id, c->q_written) > 0)
    snprintf(c->q_written, sizeof(c->q_written), "%s", id);
  trim(c, 1);
}

/* ---- events on the user bus ---- */

/* A durable message was queued for these devices ({"k":"q","t":csv}):
 * each one connected here reads its stream. */
static void on_queued_event(ns_server *srv, const char *user, json_object *ev) {
  json_object *t;
  const char *csv;
  if (!json_object_object_get_ex(ev, "t", &t))
    return;
  csv = json_object_get_string(t);
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

static void kick_one(void *conn, void *arg) {
  (void)arg;
  ns_queue_kick(conn);
}

/* Events published while the subscription was down are lost (pub/sub is
 * at-most-once): once the new subscriptions are in effect (so nothing
 * queued after the read can be missed), every device re-reads its stream. */
static void on_resubscribed(ns_server *srv) {
  ns_hub_each(srv->hub, NULL, kick_one, NULL);
}

void ns_queue_bus_register(ns_bus *b) {
  ns_bus_on_event(b, "q", on_queued_event);
  ns_bus_on_resubscribed(b, on_resubscribed);
}
