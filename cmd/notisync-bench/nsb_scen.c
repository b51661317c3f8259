/*
 * nsb_scen.c -- the scenarios, as the parent runs them:
 *   latency            devices connect; one producer posts single
 *                      notifications at a fixed rate to random users; every
 *                      delivery's producer-send -> device-receive latency.
 *   throughput-single  producers post single notifications as fast as the
 *   throughput-batch   server answers (batches of --batch), first with every
 *                      device connected, then with all disconnected.
 *   fanout             public connections; the producer posts broadcasts;
 *                      "not available" when POST /api/v1/broadcast is 404.
 *   idle, bcast-*, handshake, storm (issue 9, also against Nchan),
 *   sched-burst        devices connected; U x Q notifications all with the
 *                      same deliver_at: deliver_at -> all counted in
 *                      notisync_scheduled_queued_total, -> all delivered;
 *   c100k              U x D devices held over several processes; RSS per
 *                      connection, time to the last welcome, then one
 *                      notification per user and one broadcast, each
 *                      counted once per connection.
 * Each prints one result line on stdout and, with --out, appends a markdown
 * section with the command, the figures and the CPU use of the watched
 * processes during the measured window.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nsb_parent.h"

#define NS_PER_S 1000000000LL

typedef struct run {
  nsb_opts *o;
  nsb_fleet fleet;
  int recv_role;
  nsb_agg_ready ready;
  char md[16384];
  size_t mdlen;
} run;

void nsb_user_id(const char *prefix, uint32_t u, char *out, size_t outlen) {
  snprintf(out, outlen, "%su%u", prefix, u);
}

/* printf into the run's markdown buffer. */
__attribute__((format(printf, 2, 3))) static void md(run *r, const char *fmt,
                                                     ...) {
  va_list ap;
  int n;
  if (r->mdlen >= sizeof(r->md))
    return;
  va_start(ap, fmt);
  n = vsnprintf(r->md + r->mdlen, sizeof(r->md) - r->mdlen, fmt, ap);
  va_end(ap);
  if (n > 0)
    r->mdlen += (size_t)n;
  if (r->mdlen > sizeof(r->md))
    r->mdlen = sizeof(r->md);
}

static void md_flush(run *r) {
  FILE *fp;
  if (!r->o->out || !r->mdlen)
    return;
  fp = fopen(r->o->out, "a");
  if (!fp) {
    perror(r->o->out);
    return;
  }
  fwrite(r->md, 1, r->mdlen, fp);
  fclose(fp);
}

/* Appends "<scenario>.<key> <value>" to --summary. */
static void summ(run *r, const char *key, double v) {
  FILE *fp;
  if (!r->o->summary || !(fp = fopen(r->o->summary, "a")))
    return;
  fprintf(fp, "%s.%s %.3f\n", r->o->scenario, key, v);
  fclose(fp);
}

static void sleep_s(double s) {
  struct timespec ts = {.tv_sec = (time_t)s,
                        .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
  (void)nanosleep(&ts, NULL);
}

static void md_header(run *r, const char *title) {
  char when[64];
  time_t t = time(NULL);
  strftime(when, sizeof(when), "%Y-%m-%d %H:%M UTC", gmtime(&t));
  md(r, "\n### %s\n\n`%s`  \nrun %s\n\n| | |\n|---|---|\n", title,
     r->o->cmdline, when);
}

/* "p50 1.10 ms · p90 … · p99 … · max …" of sorted samples. */
static const char *pcts(const nsb_buf *lat, char *out, size_t outlen) {
  char a[32], b[32], c[32], d[32];
  if (!lat->len) {
    snprintf(out, outlen, "no samples");
    return out;
  }
  snprintf(out, outlen, "p50 %s · p90 %s · p99 %s · max %s",
           nsb_fmt_us(nsb_pct(lat, 50), a, sizeof(a)),
           nsb_fmt_us(nsb_pct(lat, 90), b, sizeof(b)),
           nsb_fmt_us(nsb_pct(lat, 99), c, sizeof(c)),
           nsb_fmt_us(nsb_pct(lat, 100), d, sizeof(d)));
  return out;
}

/* "none" or "400 ×3, 429/503 ×10, connection 2 (last: …)". */
static const char *errors(const nsb_agg_prod *p, char *out, size_t outlen) {
  static const char *names[6] = {"other 2xx", "400", "401/403", "404",
                                 "429/503", "other"};
  size_t off = 0;
  int i;
  out[0] = '\0';
  for (i = 0; i < 6; i++)
    if (p->sum.status[i] && off < outlen)
      off += (size_t)snprintf(out + off, outlen - off, "%s%s ×%llu",
                              off ? ", " : "", names[i],
                              (unsigned long long)p->sum.status[i]);
  if (p->sum.conn_errors && off < outlen)
    off += (size_t)snprintf(out + off, outlen - off, "%sconnection errors %llu",
                            off ? ", " : "",
                            (unsigned long long)p->sum.conn_errors);
  if (p->sum.timeouts && off < outlen)
    off += (size_t)snprintf(out + off, outlen - off, "%sunanswered %llu",
                            off ? ", " : "", (unsigned long long)p->sum.timeouts);
  if (!off)
    snprintf(out, outlen, "none");
  else if (p->last_error[0] && off < outlen)
    snprintf(out + off, outlen - off, " (last: %s)", p->last_error);
  return out;
}

static int spawn_all(run *r, int role, uint32_t total, int producers) {
  nsb_opts *o = r->o;
  long nofile = nsb_raise_nofile();
  int i;
  r->recv_role = role;
  if (total && (long)(total / (uint32_t)o->procs) + 64 > nofile) {
    fprintf(stderr,
            "notisync-bench: %u connections over %d processes exceed the "
            "descriptor limit %ld per process: raise --procs\n",
            total, o->procs, nofile);
    return -1;
  }
  for (i = 0; total && i < o->procs; i++) {
    uint32_t first = (uint32_t)((uint64_t)total * (uint64_t)i / (uint64_t)o->procs);
    uint32_t end = (uint32_t)((uint64_t)total * (uint64_t)(i + 1) / (uint64_t)o->procs);
    if (nsb_fleet_spawn(&r->fleet, o, role, i, first, end - first, 0) != 0)
      return -1;
  }
  for (i = 0; i < producers; i++)
    if (nsb_fleet_spawn(&r->fleet, o, NSB_ROLE_PRODUCER, o->procs + i, 0, 0,
                        (uint32_t)(i + 1)) != 0)
      return -1;
  return 0;
}

/* CONNECT every receiving child; fills r->ready.  0, or -1 when a child
 * failed to answer. */
static int connect_all(run *r) {
  int64_t dl = nsb_now_ns() + (int64_t)((r->o->connect_timeout + 30) * 1e9);
  memset(&r->ready, 0, sizeof(r->ready));
  if (nsb_fleet_cmd(&r->fleet, r->recv_role, NSB_CMD_CONNECT, NULL, 0, NULL,
                    0) != 0)
    return -1;
  return nsb_fleet_collect(&r->fleet, r->recv_role, NSB_R_READY, dl,
                           nsb_agg_ready_cb, &r->ready);
}

static const char *ready_text(const run *r, const char *what, char *out,
                              size_t outlen) {
  const nsb_ready *s = &r->ready.sum;
  double secs = (double)r->ready.max_elapsed / 1e9;
  int n = snprintf(out, outlen, "%u of %u %s connected in %.1f s (%.0f/s)",
                   s->connected, s->wanted, what, secs,
                   secs > 0 ? s->connected / secs : 0.0);
  if (n > 0 && (size_t)n < outlen && (s->retries || s->failed))
    snprintf(out + n, outlen - (size_t)n,
             "; retries %u, failed %u (tcp %u, timeout %u, http %u [429 ×%u, "
             "last other %u], closed %u [last code %u])",
             s->retries, s->failed, s->fail_tcp, s->fail_timeout, s->fail_http,
             s->http_429, s->http_other_status, s->fail_close,
             s->close_code_last);
  return out;
}

/* PRODUCE on every producer child, splitting conns / rate / count, and
 * collects the merged result into `p` (sorted).  CPU snapshots around. */
static int produce(run *r, const nsb_produce_args *base, nsb_agg_prod *p,
                   nsb_cpu *c0, nsb_cpu *c1) {
  int i, j = 0, q = r->o->producer_procs, rc;
  int64_t dl;
  memset(p, 0, sizeof(*p));
  nsb_cpu_snap(r->o, c0);
  for (i = 0; i < r->fleet.n; i++) {
    nsb_produce_args a = *base;
    if (r->fleet.p[i].role != NSB_ROLE_PRODUCER)
      continue;
    a.conns = base->conns / q + (j < base->conns % q);
    if (a.conns < 1)
      a.conns = 1;
    a.rate = base->rate / q;
    a.max_requests = base->max_requests / q + (j < base->max_requests % q);
    j++;
    if (nsb_ipc_send(r->fleet.p[i].ctrl, NSB_CMD_PRODUCE, &a, sizeof(a), NULL,
                     0, NULL, 0) != 0)
      return -1;
  }
  dl = nsb_now_ns() + base->duration_ns + 90 * NS_PER_S;
  rc = nsb_fleet_collect(&r->fleet, NSB_ROLE_PRODUCER, NSB_R_PRODUCED, dl,
                         nsb_agg_prod_cb, p);
  nsb_cpu_snap(r->o, c1);
  nsb_agg_prod_done(p);
  return rc;
}

/* EXPECT the accepted pairs on every receiving child; merged into `rep`. */
static int expect(run *r, const nsb_agg_prod *p, uint32_t max_local,
                  nsb_agg_rep *rep) {
  nsb_expect_args a;
  int64_t dl;
  memset(rep, 0, sizeof(*rep));
  memset(&a, 0, sizeof(a));
  a.grace_ns = (int64_t)(r->o->grace * 1e9);
  a.npairs = (uint32_t)(p->pairs.len / sizeof(nsb_pair));
  a.max_local = max_local;
  if (nsb_fleet_cmd(&r->fleet, r->recv_role, NSB_CMD_EXPECT, &a, sizeof(a),
                    p->pairs.p, p->pairs.len) != 0)
    return -1;
  dl = nsb_now_ns() + a.grace_ns + 60 * NS_PER_S;
  if (nsb_fleet_collect(&r->fleet, r->recv_role, NSB_R_REPORT, dl,
                        nsb_agg_rep_cb, rep) != 0)
    return -1;
  nsb_agg_rep_done(rep);
  return 0;
}

static const char *delivery_text(const nsb_agg_rep *rep, char *out,
                                 size_t outlen) {
  int n = snprintf(out, outlen,
                   "%llu of %llu expected; lost %llu, duplicates %llu, "
                   "misrouted %llu",
                   (unsigned long long)rep->sum.matched,
                   (unsigned long long)rep->sum.expected,
                   (unsigned long long)rep->sum.lost,
                   (unsigned long long)rep->sum.dups,
                   (unsigned long long)rep->sum.misrouted);
  if (n > 0 && (size_t)n < outlen &&
      (rep->sum.unknown || rep->sum.closed_by_server || rep->sum.overflow))
    n += snprintf(out + n, outlen - (size_t)n,
                  ", unknown %llu, closed by server %llu, queue_overflow %llu",
                  (unsigned long long)rep->sum.unknown,
                  (unsigned long long)rep->sum.closed_by_server,
                  (unsigned long long)rep->sum.overflow);
  if (n > 0 && (size_t)n < outlen && rep->sum.pings)
    snprintf(out + n, outlen - (size_t)n, "; server pings answered %llu",
             (unsigned long long)rep->sum.pings);
  return out;
}

/* The CPU row, the counters row, and (when `reading`) a one-line reading of
 * what the CPU figures say about the limit -- meaningless for a paced
 * scenario whose window is mostly idle. */
static void md_cpu(run *r, const nsb_cpu *a, const nsb_cpu *b, double items,
                   const char *phase, int reading) {
  const nsb_opts *o = r->o;
  char cpu[1024], st[1024], key[128], lab[40], kp[40];
  double busy = b->total > a->total ? 100.0 * (double)(b->busy - a->busy) /
                                          (double)(b->total - a->total) : 0;
  double top = -1;
  int i, ti = -1;
  snprintf(lab, sizeof(lab), "%s%s", phase, phase[0] ? ": " : "");
  snprintf(kp, sizeof(kp), "%s%s", phase, phase[0] ? "_" : "");
  nsb_cpu_describe(o, a, b, items, cpu, sizeof(cpu), st, sizeof(st));
  md(r, "| %sCPU in the %.1f s window (%% of one core) | %s |\n", lab,
     (double)(b->t_ns - a->t_ns) / 1e9, cpu);
  if (st[0])
    md(r, "| %scounters (--stat-cmd) in the window | %s |\n", lab, st);
  for (i = 0; i <= o->nwatch; i++) {
    double p = nsb_cpu_pct(o, a, b, i);
    snprintf(key, sizeof(key), "%scpu_%s", kp,
             i < o->nwatch ? o->watch[i].name : "bench");
    summ(r, key, p);
    if (i < o->nwatch && p > top) {
      top = p;
      ti = i;
    }
  }
  snprintf(key, sizeof(key), "%scpu_machine", kp);
  summ(r, key, busy);
  if (ti < 0 || !reading)
    return;
  if (top >= 85)
    md(r, "| %sCPU reading | %s at %.0f %% of one core: saturated if its work "
          "runs in one process (one event loop, or one PostgreSQL backend per "
          "connection), the likely bottleneck; machine %.0f %% busy |\n",
       lab, o->watch[ti].name, top, busy);
  else if (busy >= 80)
    md(r, "| %sCPU reading | the machine's cores are saturated (%.0f %% busy, "
          "shared by the server, Redis, PostgreSQL and the bench); largest "
          "share: %s %.0f %% |\n", lab, busy, o->watch[ti].name, top);
  else
    md(r, "| %sCPU reading | no process saturates a core (largest: %s %.0f "
          "%%) and the machine is %.0f %% busy: the figure is bound by waiting "
          "(round trips, commits), not by CPU |\n",
       lab, o->watch[ti].name, top, busy);
}

/* ---- latency ------------------------------------------------------------ */

static int scen_latency(run *r) {
  nsb_opts *o = r->o;
  nsb_produce_args a;
  nsb_agg_prod p;
  nsb_agg_rep rep;
  nsb_cpu c0, c1;
  char t1[512], t2[512], t3[256], t4[256], t5[512];
  int rc = 1;

  memset(&p, 0, sizeof(p));
  memset(&rep, 0, sizeof(rep));
  if (spawn_all(r, NSB_ROLE_DEVICES, (uint32_t)(o->users * o->devices),
                o->producer_procs) != 0 ||
      connect_all(r) != 0)
    goto done;
  fprintf(stderr, "notisync-bench: %s\n", ready_text(r, "devices", t1, sizeof(t1)));
  memset(&a, 0, sizeof(a));
  a.kind = NSB_P_SINGLE;
  a.conns = o->concurrency;
  a.rate = o->rate;
  a.duration_ns = (int64_t)(o->duration * 1e9);
  a.max_requests = (int64_t)(o->rate * o->duration + 0.5);
  if (produce(r, &a, &p, &c0, &c1) != 0 || expect(r, &p, 0, &rep) != 0)
    goto done;
  printf("latency: %u/%u devices (%d users x %d); posted %llu/%llu 201 at "
         "%.0f/s for %.0f s (late %llu; errors: %s); deliveries %s; "
         "producer-send -> device-receive %s; POST %s\n",
         r->ready.sum.connected, r->ready.sum.wanted, o->users, o->devices,
         (unsigned long long)p.sum.items_ok,
         (unsigned long long)p.sum.items_sent, o->rate, o->duration,
         (unsigned long long)p.sum.late, errors(&p, t5, sizeof(t5)),
         delivery_text(&rep, t2, sizeof(t2)), pcts(&rep.lat, t3, sizeof(t3)),
         pcts(&p.lat, t4, sizeof(t4)));
  md_header(r, "latency: producer → every device of the user");
  md(r, "| devices | %s |\n", ready_text(r, "devices", t1, sizeof(t1)));
  md(r, "| posted | %llu single POSTs at %.0f/s for %.0f s over %d "
        "connections: %llu × 201; %llu left > 5 ms after their slot; errors: %s |\n",
     (unsigned long long)p.sum.items_sent, o->rate, o->duration, o->concurrency,
     (unsigned long long)p.sum.items_ok, (unsigned long long)p.sum.late, t5);
  md(r, "| deliveries (`new_notification`) | %s |\n", t2);
  md(r, "| **latency, producer send → device receive** | **%s** |\n", t3);
  md(r, "| producer POST round trip | %s |\n", t4);
  md_cpu(r, &c0, &c1, (double)p.sum.items_ok, "", 1);
  summ(r, "posted_ok", (double)p.sum.items_ok);
  summ(r, "lost", (double)rep.sum.lost);
  summ(r, "p50_ms", nsb_pct(&rep.lat, 50) / 1000);
  summ(r, "p99_ms", nsb_pct(&rep.lat, 99) / 1000);
  summ(r, "max_ms", nsb_pct(&rep.lat, 100) / 1000);
  rc = !p.sum.items_ok ? 4 : rep.sum.lost || rep.sum.misrouted ? 3 : 0;
done:
  nsb_agg_free(&p, &rep);
  return rc;
}

/* ---- throughput --------------------------------------------------------- */

/* One measured phase; prints its part of the line and its markdown rows. */
static int thr_phase(run *r, int kind, int connected) {
  nsb_opts *o = r->o;
  nsb_produce_args a;
  nsb_agg_prod p;
  nsb_agg_rep rep;
  nsb_cpu c0, c1;
  char t1[512], t2[512], t3[256];
  double secs, rate;
  int rc = -1;

  memset(&p, 0, sizeof(p));
  memset(&rep, 0, sizeof(rep));
  memset(&a, 0, sizeof(a));
  a.kind = kind;
  a.conns = o->concurrency;
  a.batch = kind == NSB_P_BATCH ? o->batch : 1;
  a.duration_ns = (int64_t)(o->duration * 1e9);
  if (produce(r, &a, &p, &c0, &c1) != 0)
    goto done;
  if (connected && expect(r, &p, 0, &rep) != 0)
    goto done;
  secs = (double)(p.t_last_done - p.t_start) / 1e9;
  rate = secs > 0 ? (double)p.sum.items_ok / secs : 0;
  printf("%s %s: %.0f notifications/s (%llu in %.1f s, %llu requests, "
         "%.0f req/s; errors: %s; POST %s)",
         connected ? "" : ";", connected ? "devices connected" :
         "devices disconnected", rate, (unsigned long long)p.sum.items_ok, secs,
         (unsigned long long)p.sum.requests,
         secs > 0 ? (double)p.sum.st_ok / secs : 0.0,
         errors(&p, t1, sizeof(t1)), pcts(&p.lat, t3, sizeof(t3)));
  if (connected)
    printf(", deliveries %s", delivery_text(&rep, t2, sizeof(t2)));
  md(r, "| **%s: notifications/s** | **%.0f** (%llu × 201 with %llu "
        "notifications in %.1f s; %.0f requests/s) |\n",
     connected ? "devices connected" : "devices disconnected", rate,
     (unsigned long long)p.sum.st_ok, (unsigned long long)p.sum.items_ok, secs,
     secs > 0 ? (double)p.sum.st_ok / secs : 0.0);
  md(r, "| %s: errors | %s |\n", connected ? "connected" : "disconnected", t1);
  md(r, "| %s: POST round trip | %s |\n",
     connected ? "connected" : "disconnected", t3);
  if (connected)
    md(r, "| connected: deliveries | %s; %s |\n", t2,
       pcts(&rep.lat, t3, sizeof(t3)));
  md_cpu(r, &c0, &c1, (double)p.sum.items_ok,
         connected ? "connected" : "disconnected", 1);
  summ(r, connected ? "connected_rate" : "disconnected_rate", rate);
  if (connected)
    summ(r, "connected_lost", (double)rep.sum.lost);
  rc = !p.sum.items_ok ? 4
       : connected && (rep.sum.lost || rep.sum.misrouted) ? 3 : 0;
done:
  nsb_agg_free(&p, &rep);
  return rc;
}

/* True when the comma-separated list `list` holds `name`. */
static int has_phase(const char *list, const char *name) {
  size_t k = strlen(name);
  const char *p = list;
  while (p && *p) {
    const char *e = strchr(p, ',');
    size_t n = e ? (size_t)(e - p) : strlen(p);
    if (n == k && strncmp(p, name, k) == 0)
      return 1;
    p = e ? e + 1 : NULL;
  }
  return 0;
}

static int scen_throughput(run *r, int kind) {
  nsb_opts *o = r->o;
  char t1[512], title[160];
  int rc = 0, want_conn = has_phase(o->phases, "connected"),
      want_disc = has_phase(o->phases, "disconnected");
  int64_t dl;

  if (spawn_all(r, NSB_ROLE_DEVICES, (uint32_t)(o->users * o->devices),
                o->producer_procs) != 0 ||
      connect_all(r) != 0)
    return 1;
  fprintf(stderr, "notisync-bench: %s\n", ready_text(r, "devices", t1, sizeof(t1)));
  snprintf(title, sizeof(title), "%s: %d producers, %d users × %d devices%s",
           kind == NSB_P_BATCH ? "throughput-batch" : "throughput-single",
           o->concurrency, o->users, o->devices,
           kind == NSB_P_BATCH ? ", batches of --batch" : "");
  md_header(r, title);
  if (kind == NSB_P_BATCH)
    md(r, "| batch size | %d notifications per request |\n", o->batch);
  md(r, "| devices registered | %s |\n", t1);
  printf("%s:", kind == NSB_P_BATCH ? "throughput-batch" : "throughput-single");
  if (want_conn && (rc = thr_phase(r, kind, 1)) < 0)
    return 1;
  if (want_disc) {
    int rc2;
    dl = nsb_now_ns() + 60 * NS_PER_S;
    if (nsb_fleet_cmd(&r->fleet, NSB_ROLE_DEVICES, NSB_CMD_DISCONNECT, NULL, 0,
                      NULL, 0) != 0 ||
        nsb_fleet_collect(&r->fleet, NSB_ROLE_DEVICES, NSB_R_DONE, dl, NULL,
                          NULL) != 0)
      return 1;
    /* Offline presence (after presence_grace) and last_seen updates of every
     * device happen now: let them pass before measuring. */
    sleep_s(o->settle);
    md(r, "| devices disconnected | all, then %.0f s pause before measuring |\n",
       o->settle);
    if ((rc2 = thr_phase(r, kind, 0)) < 0)
      return 1;
    if (rc2 > rc)
      rc = rc2;
  }
  printf("\n");
  return rc;
}

/* ---- fanout ------------------------------------------------------------- */

/* POSTs one broadcast with a service token; fills the status and body. */
static int probe_broadcast(const nsb_opts *o, int *status, char *body,
                           size_t bodylen) {
  struct sockaddr_in dst;
  char tok[1024];
  if (nsb_addr(o->host, o->port, &dst) != 0 ||
      nsb_jwt_hs256(o->secret, "notisync-bench-producer", "service", time(NULL),
                    600, tok, sizeof(tok)) < 0)
    return -1;
  return nsb_http_once(&dst, "POST", "/api/v1/broadcast", tok,
                       "{\"type\":\"test\",\"data\":{\"message\":\"probe\"}}",
                       5000, status, body, bodylen);
}

/* Prints the fanout result line and its markdown rows. */
static void fanout_report(run *r, const nsb_agg_prod *p, const nsb_agg_rep *rep,
                          const nsb_cpu *c0, const nsb_cpu *c1) {
  const nsb_opts *o = r->o;
  char t1[512], t2[32], t2b[32], t3[256], t4[512];
  uint32_t i, nall = 0;
  double sum_all = 0, max_all = 0;

  for (i = 0; i < rep->nmax; i++)
    if (rep->permax[i]) {
      nall++;
      sum_all += rep->permax[i];
      if (rep->permax[i] > max_all)
        max_all = rep->permax[i];
    }
  snprintf(t4, sizeof(t4), "mean %s, max %s",
           nsb_fmt_us(nall ? sum_all / nall : 0, t2, sizeof(t2)),
           nsb_fmt_us(max_all, t2b, sizeof(t2b)));
  printf("fanout: %u/%u public connections; %llu/%llu broadcasts 202 at %.1f/s; "
         "deliveries %s; post -> receive %s; time to reach all: %s "
         "(%.0f connections/s)\n",
         r->ready.sum.connected, r->ready.sum.wanted,
         (unsigned long long)p->sum.items_ok,
         (unsigned long long)p->sum.items_sent, o->rate,
         delivery_text(rep, t1, sizeof(t1)), pcts(&rep->lat, t3, sizeof(t3)),
         t4, nall && sum_all > 0 ? r->ready.sum.connected / (sum_all / nall / 1e6)
                                  : 0.0);
  md(r, "| broadcasts | %llu of %llu answered 202, %.1f per second |\n",
     (unsigned long long)p->sum.items_ok, (unsigned long long)p->sum.items_sent,
     o->rate);
  md(r, "| deliveries | %s |\n", t1);
  md(r, "| **latency, POST → each connection** | **%s** |\n", t3);
  md(r, "| time until the last connection has a broadcast | %s |\n", t4);
  md_cpu(r, c0, c1, (double)rep->sum.matched, "", 0);
  for (i = 0; i < (uint32_t)o->nwatch; i++)
    if (strcmp(o->watch[i].name, "notisyncd") == 0 && rep->sum.matched) {
      double us = nsb_cpu_pct(o, c0, c1, (int)i) / 100.0 *
                  (double)(c1->t_ns - c0->t_ns) / 1e3 / (double)rep->sum.matched;
      md(r, "| notisyncd CPU per delivery | %.1f µs (its CPU in the window ÷ "
            "deliveries): one broadcast to %u connections ≈ %.0f ms of one "
            "core; the window is mostly idle between broadcasts |\n",
         us, r->ready.sum.connected, us * r->ready.sum.connected / 1000);
      summ(r, "notisyncd_us_per_delivery", us);
    }
  summ(r, "conns", r->ready.sum.connected);
  summ(r, "lost", (double)rep->sum.lost);
  summ(r, "p99_ms", nsb_pct(&rep->lat, 99) / 1000);
  summ(r, "reach_all_mean_ms", nall ? sum_all / nall / 1000 : 0);
}

static int scen_fanout(run *r) {
  nsb_opts *o = r->o;
  nsb_produce_args a;
  nsb_agg_prod p;
  nsb_agg_rep rep;
  nsb_cpu c0, c1;
  char body[512], t1[512];
  int status = 0, rc = 1;

  memset(&p, 0, sizeof(p));
  memset(&rep, 0, sizeof(rep));
  /* Connect first: the connection figures stand even without broadcasts. */
  if (spawn_all(r, NSB_ROLE_PUBLIC, (uint32_t)o->conns, 1) != 0 ||
      connect_all(r) != 0)
    goto done;
  fprintf(stderr, "notisync-bench: %s\n",
          ready_text(r, "public connections", t1, sizeof(t1)));
  md_header(r, "fanout: broadcasts to public connections");
  md(r, "| connections (`/ws/public`, each answered a JSON ping) | %s |\n", t1);
  if (probe_broadcast(o, &status, body, sizeof(body)) != 0) {
    fprintf(stderr, "notisync-bench: broadcast probe failed\n");
    goto done;
  }
  if (status == 404 || status == 405) {
    printf("fanout: %u/%u public connections; broadcasts not available "
           "(POST /api/v1/broadcast answered %d)\n", r->ready.sum.connected,
           r->ready.sum.wanted, status);
    md(r, "| broadcasts | not available: `POST /api/v1/broadcast` answered %d |\n",
       status);
    summ(r, "conns", r->ready.sum.connected);
    summ(r, "not_available", 1);
    rc = 0;
    goto done;
  }
  if (status != 202) {
    printf("fanout: probe answered %d: %.200s\n", status, body);
    goto done;
  }
  memset(&a, 0, sizeof(a));
  a.kind = NSB_P_BROADCAST;
  a.conns = 1;
  a.rate = o->rate;
  a.max_requests = o->messages;
  a.duration_ns = (int64_t)(((double)o->messages / o->rate + 1) * 1e9);
  if (produce(r, &a, &p, &c0, &c1) != 0 ||
      expect(r, &p, (uint32_t)o->messages + 1, &rep) != 0)
    goto done;
  fanout_report(r, &p, &rep, &c0, &c1);
  rc = rep.sum.lost ? 3 : 0;
done:
  nsb_agg_free(&p, &rep);
  return rc;
}

/* ---- idle, bcast-throughput, bcast-latency, handshake, storm ------------- */

/* Appends "<scenario>.<key> <text>" to --summary. */
static void summ_str(run *r, const char *key, const char *v) {
  FILE *fp;
  if (!r->o->summary || !(fp = fopen(r->o->summary, "a")))
    return;
  fprintf(fp, "%s.%s %s\n", r->o->scenario, key, v);
  fclose(fp);
}

static const char *target_name(const nsb_opts *o) {
  return o->target == NSB_T_NCHAN ? "nchan" : "notisync";
}

static double secs_between(int64_t a, int64_t b) {
  return a && b > a ? (double)(b - a) / 1e9 : 0;
}

/* Spawns the receivers of the newer scenarios: U x D devices or C public
 * connections, plus `producers` producer processes. */
static int spawn_receivers(run *r, int producers) {
  nsb_opts *o = r->o;
  if (o->kind == NSB_K_DEVICE)
    return spawn_all(r, NSB_ROLE_DEVICES, (uint32_t)(o->users * o->devices),
                     producers);
  return spawn_all(r, NSB_ROLE_PUBLIC, (uint32_t)o->conns, producers);
}

static const char *conn_what(const nsb_opts *o) {
  return o->kind == NSB_K_DEVICE ? "devices" : "public connections";
}

static int tally_acc(run *r, const uint8_t *acc, uint32_t acc_bytes,
                     nsb_agg_tally *t);

/* TALLY on every receiver, merged into `t` (sorted latencies).  With `p`
 * (broadcasts) only the seqs it accepted are waited for. */
static int tally(run *r, const nsb_agg_prod *p, nsb_agg_tally *t) {
  uint8_t *acc = NULL;
  uint32_t acc_bytes = 0;
  int rc;
  if (p && r->o->nbits) {
    size_t i, n = p->pairs.len / sizeof(nsb_pair);
    acc_bytes = (r->o->nbits + 7) / 8;
    acc = nsb_xcalloc(acc_bytes, 1);
    for (i = 0; i < n; i++) {
      nsb_pair pr;
      memcpy(&pr, p->pairs.p + i * sizeof(pr), sizeof(pr));
      if ((pr.seq & 0xffffffu) < r->o->nbits)
        acc[(pr.seq & 0xffffffu) / 8] |= (uint8_t)(1u << (pr.seq % 8));
    }
  }
  rc = tally_acc(r, acc, acc_bytes, t);
  free(acc);
  return rc;
}

/* TALLY with an explicit bitmap of the awaited bits (`acc`, `acc_bytes`;
 * NULL: all of o->nbits), merged into `t`. */
static int tally_acc(run *r, const uint8_t *acc, uint32_t acc_bytes,
                     nsb_agg_tally *t) {
  nsb_tally_args a;
  int64_t dl;
  memset(t, 0, sizeof(*t));
  memset(&a, 0, sizeof(a));
  a.grace_ns = (int64_t)(r->o->grace * 1e9);
  a.acc_bytes = acc ? acc_bytes : 0;
  if (nsb_fleet_cmd(&r->fleet, r->recv_role, NSB_CMD_TALLY, &a, sizeof(a),
                    acc, a.acc_bytes) != 0)
    return -1;
  dl = nsb_now_ns() + a.grace_ns + 60 * NS_PER_S;
  if (nsb_fleet_collect(&r->fleet, r->recv_role, NSB_R_TALLY, dl,
                        nsb_agg_tally_cb, t) != 0)
    return -1;
  nsb_agg_tally_done(t);
  return 0;
}

/* "<name>_cpu_s" of every watched process (CPU seconds in the window). */
static void summ_cpu_s(run *r, const nsb_cpu *a, const nsb_cpu *b) {
  const nsb_opts *o = r->o;
  double secs = (double)(b->t_ns - a->t_ns) / 1e9;
  char key[64];
  int i;
  for (i = 0; i <= o->nwatch; i++) {
    snprintf(key, sizeof(key), "%s_cpu_s",
             i < o->nwatch ? o->watch[i].name : "bench");
    summ(r, key, nsb_cpu_pct(o, a, b, i) / 100.0 * secs);
  }
}

static int scen_idle(run *r) {
  nsb_opts *o = r->o;
  uint64_t before[NSB_MAX_WATCH], after[NSB_MAX_WATCH];
  char t1[512], key[80], row[1024];
  size_t off = 0;
  double per = 0;
  int i, rc;

  if (spawn_receivers(r, 0) != 0)
    return 1;
  for (i = 0; i < o->nwatch; i++)
    before[i] = nsb_rss_tree_kb(o->watch[i].pid);
  if (connect_all(r) != 0)
    return 1;
  fprintf(stderr, "notisync-bench: %s\n", ready_text(r, conn_what(o), t1, sizeof(t1)));
  sleep_s(3);
  row[0] = '\0';
  for (i = 0; i < o->nwatch; i++) {
    double d;
    after[i] = nsb_rss_tree_kb(o->watch[i].pid);
    d = ((double)after[i] - (double)before[i]) * 1024.0 /
        (r->ready.sum.connected ? r->ready.sum.connected : 1);
    if (i == 0)
      per = d;
    if (off < sizeof(row))
      off += (size_t)snprintf(row + off, sizeof(row) - off,
                              "%s%s %.1f → %.1f MiB (%.0f B per connection)",
                              i ? "; " : "", o->watch[i].name,
                              (double)before[i] / 1024, (double)after[i] / 1024, d);
    snprintf(key, sizeof(key), "%s_rss_before_kb", o->watch[i].name);
    summ(r, key, (double)before[i]);
    snprintf(key, sizeof(key), "%s_rss_after_kb", o->watch[i].name);
    summ(r, key, (double)after[i]);
  }
  printf("idle (%s, %s): %s; RSS %s\n", target_name(o),
         o->kind == NSB_K_DEVICE ? "device" : "public", t1,
         o->nwatch ? row : "(no --watch)");
  md_header(r, "idle: memory per open connection");
  md(r, "| target, kind | %s, %s |\n", target_name(o),
     o->kind == NSB_K_DEVICE ? "device" : "public");
  md(r, "| connections | %s |\n", t1);
  md(r, "| **RSS before opening → 3 s after all are open** | **%s** |\n",
     o->nwatch ? row : "no --watch");
  summ(r, "conns", r->ready.sum.connected);
  summ(r, "rss_per_conn_b", per);
  summ(r, "connect_s", (double)r->ready.max_elapsed / 1e9);
  summ(r, "failed", r->ready.sum.failed);
  rc = r->ready.sum.connected < r->ready.sum.wanted ? 3 : 0;
  return rc;
}

/* bcast-throughput (`paced` 0) and bcast-latency (`paced` 1). */
static int scen_bcast(run *r, int paced) {
  nsb_opts *o = r->o;
  nsb_produce_args a;
  nsb_agg_prod p;
  nsb_agg_tally t;
  nsb_cpu c0, c1, c1p;
  char t1[512], t2[256], t3[512], cpu[1024];
  double secs, rate;
  uint64_t expected, lost, failed;
  int rc = 1;

  memset(&p, 0, sizeof(p));
  memset(&t, 0, sizeof(t));
  if (spawn_receivers(r, 1) != 0 || connect_all(r) != 0)
    goto done;
  fprintf(stderr, "notisync-bench: %s\n", ready_text(r, conn_what(o), t1, sizeof(t1)));
  memset(&a, 0, sizeof(a));
  a.kind = NSB_P_BCAST;
  a.conns = o->inflight;
  a.rate = paced ? o->rate : 0;
  a.max_requests = o->messages;
  a.duration_ns = paced ? (int64_t)(((double)o->messages / o->rate + 10) * 1e9)
                        : (int64_t)((120 + (double)o->messages / 20) * 1e9);
  if (produce(r, &a, &p, &c0, &c1p) != 0 || tally(r, &p, &t) != 0)
    goto done;
  nsb_cpu_snap(o, &c1);
  expected = t.sum.conns * (uint64_t)o->messages;
  lost = expected > t.sum.unique ? expected - t.sum.unique : 0;
  failed = (uint64_t)o->messages > p.sum.st_ok ? (uint64_t)o->messages - p.sum.st_ok : 0;
  secs = secs_between(p.sum.t_first_send, t.sum.t_last_rx);
  rate = secs > 0 ? (double)t.sum.unique / secs : 0;
  nsb_cpu_describe(o, &c0, &c1, 0, cpu, sizeof(cpu), NULL, 0);
  snprintf(t3, sizeof(t3), "%llu of %llu expected (%llu connections x %d); "
           "lost %llu, of accepted broadcasts %llu on %llu connections; "
           "duplicates %llu, foreign %llu, closed by server %llu",
           (unsigned long long)t.sum.unique, (unsigned long long)expected,
           (unsigned long long)t.sum.conns, o->messages,
           (unsigned long long)lost, (unsigned long long)t.sum.lost_accepted,
           (unsigned long long)t.sum.conns_with_loss,
           (unsigned long long)t.sum.dups, (unsigned long long)t.sum.foreign,
           (unsigned long long)t.sum.closed_by_server);
  pcts(&t.lat, t2, sizeof(t2));
  if (paced)
    printf("bcast-latency (%s): %u/%u subscribers; %llu/%d publishes 2xx at "
           "%.0f/s (late %llu; errors: %s); deliveries %s; publish -> receive "
           "%s%s\n", target_name(o), r->ready.sum.connected, r->ready.sum.wanted,
           (unsigned long long)p.sum.st_ok, o->messages, o->rate,
           (unsigned long long)p.sum.late, errors(&p, t1, sizeof(t1)), t3, t2,
           t.sum.lat_capped ? " (samples capped)" : "");
  else
    printf("bcast-throughput (%s): %u/%u subscribers; %llu/%d publishes 2xx, "
           "%d in flight (errors: %s); %.0f deliveries/s over %.2f s; "
           "deliveries %s; publish -> receive %s; CPU %s\n", target_name(o),
           r->ready.sum.connected, r->ready.sum.wanted,
           (unsigned long long)p.sum.st_ok, o->messages, o->inflight,
           errors(&p, t1, sizeof(t1)), rate, secs, t3, t2, cpu);
  md_header(r, paced ? "bcast-latency: broadcast publish → every subscriber"
                     : "bcast-throughput: broadcast deliveries per second");
  md(r, "| target | %s; %d-byte payload |\n", target_name(o), o->size);
  md(r, "| subscribers | %s |\n", ready_text(r, "public connections", t1, sizeof(t1)));
  md(r, "| publishes | %llu of %d answered 2xx, %s; errors: %s |\n",
     (unsigned long long)p.sum.st_ok, o->messages,
     paced ? "paced" : "as fast as answered", errors(&p, t1, sizeof(t1)));
  if (!paced)
    md(r, "| **deliveries/s** | **%.0f** (%llu unique deliveries from the first "
          "publish to the last delivery, %.2f s) |\n", rate,
       (unsigned long long)t.sum.unique, secs);
  md(r, "| deliveries | %s |\n", t3);
  md(r, "| %slatency, publish → receive%s | %s%s%s |\n", paced ? "**" : "",
     paced ? "**" : "", paced ? "**" : "", t2, paced ? "**" : "");
  md(r, "| CPU from the first publish to the tally (%% of one core) | %s |\n", cpu);
  if (paced) {
    summ(r, "p50_ms", nsb_pct(&t.lat, 50) / 1000);
    summ(r, "p99_ms", nsb_pct(&t.lat, 99) / 1000);
    summ(r, "max_ms", nsb_pct(&t.lat, 100) / 1000);
    summ(r, "lost", (double)lost);
    summ(r, "lost_accepted", (double)t.sum.lost_accepted);
    summ(r, "failed_publishes", (double)failed);
  } else {
    summ(r, "deliveries_per_s", rate);
    summ(r, "lost", (double)lost);
    summ(r, "lost_accepted", (double)t.sum.lost_accepted);
    summ(r, "dup", (double)t.sum.dups);
    summ(r, "failed_publishes", (double)failed);
    summ(r, "conns_with_loss", (double)t.sum.conns_with_loss);
    summ(r, "p50_ms", nsb_pct(&t.lat, 50) / 1000);
    summ(r, "p99_ms", nsb_pct(&t.lat, 99) / 1000);
    summ_cpu_s(r, &c0, &c1);
  }
  summ(r, "conns", r->ready.sum.connected);
  rc = !p.sum.st_ok ? 4 : lost || t.sum.dups ? 3 : 0;
done:
  nsb_agg_free(&p, NULL);
  nsb_buf_free(&t.lat);
  return rc;
}

static int scen_handshake(run *r) {
  nsb_opts *o = r->o;
  const nsb_ready *s = &r->ready.sum;
  nsb_cpu c0, c1;
  char t1[512], cpu[1024];
  double up_s, wel_s, rate, wrate = 0;
  int dev = o->kind == NSB_K_DEVICE;

  if (spawn_receivers(r, 0) != 0)
    return 1;
  nsb_cpu_snap(o, &c0);
  if (connect_all(r) != 0)
    return 1;
  nsb_cpu_snap(o, &c1);
  nsb_cpu_describe(o, &c0, &c1, 0, cpu, sizeof(cpu), NULL, 0);
  up_s = secs_between(s->t_first_connect, s->t_last_upgrade);
  wel_s = secs_between(s->t_first_connect, s->t_last_welcome);
  rate = up_s > 0 ? s->upgraded / up_s : 0;
  if (dev)
    wrate = wel_s > 0 ? s->welcomed / wel_s : 0;
  ready_text(r, conn_what(o), t1, sizeof(t1));
  printf("handshake (%s, %s, %d in flight per process x %d): %s; %u upgrades "
         "in %.2f s = %.0f/s", target_name(o), dev ? "device" : "public",
         o->connect_parallel, o->procs, t1, s->upgraded, up_s, rate);
  if (dev)
    printf("; %u welcomes in %.2f s = %.0f/s", s->welcomed, wel_s, wrate);
  printf("; CPU %s\n", cpu);
  md_header(r, "handshake: connections opened per second");
  md(r, "| target, kind | %s, %s; %d handshakes in flight per process, %d "
        "processes |\n", target_name(o), dev ? "device" : "public",
     o->connect_parallel, o->procs);
  md(r, "| connections | %s |\n", t1);
  md(r, "| **upgrades/s** (first connect() → last 101) | **%.0f** (%u in %.2f s) |\n",
     rate, s->upgraded, up_s);
  if (dev)
    md(r, "| **welcomes/s** (first connect() → last `welcome`) | **%.0f** (%u "
          "in %.2f s) |\n", wrate, s->welcomed, wel_s);
  md(r, "| CPU of the connect phase (%% of one core) | %s |\n", cpu);
  summ_cpu_s(r, &c0, &c1);
  summ_str(r, "kind", dev ? "device" : "public");
  summ(r, "rate", rate);
  if (dev)
    summ(r, "welcome_rate", wrate);
  summ(r, "failed", s->failed);
  summ(r, "retries", s->retries);
  summ(r, "conns", s->connected);
  return s->connected < s->wanted ? 3 : 0;
}

static int scen_storm(run *r) {
  nsb_opts *o = r->o;
  nsb_produce_args a;
  nsb_agg_prod p;
  nsb_agg_tally t;
  nsb_cpu c0, c1, cp0, cp1;
  char t1[512], t2[512], t3[256], cpu[1024];
  uint32_t chunks = (uint32_t)(o->queued + 499) / 500;
  uint64_t devs = (uint64_t)o->users * (uint64_t)o->devices, expected, lost;
  double welcome_s, drained_s, last_rx_s;
  int64_t dl, t0;
  int rc = 1;

  memset(&p, 0, sizeof(p));
  memset(&t, 0, sizeof(t));
  if (spawn_all(r, NSB_ROLE_DEVICES, (uint32_t)devs, 1) != 0 ||
      connect_all(r) != 0)
    goto done;
  fprintf(stderr, "notisync-bench: registered: %s\n",
          ready_text(r, "devices", t1, sizeof(t1)));
  dl = nsb_now_ns() + 60 * NS_PER_S;
  if (nsb_fleet_cmd(&r->fleet, NSB_ROLE_DEVICES, NSB_CMD_DISCONNECT, NULL, 0,
                    NULL, 0) != 0 ||
      nsb_fleet_collect(&r->fleet, NSB_ROLE_DEVICES, NSB_R_DONE, dl, NULL,
                        NULL) != 0)
    goto done;
  sleep_s(o->settle);
  memset(&a, 0, sizeof(a));
  a.kind = NSB_P_STORM;
  a.conns = o->concurrency;
  a.batch = o->queued < 500 ? o->queued : 500;
  a.max_requests = (int64_t)o->users * chunks;
  a.duration_ns = 600 * NS_PER_S;
  if (produce(r, &a, &p, &cp0, &cp1) != 0)
    goto done;
  fprintf(stderr, "notisync-bench: queued %llu of %llu notifications in %.1f s "
          "(errors: %s)\n", (unsigned long long)p.sum.items_ok,
          (unsigned long long)o->users * (unsigned long long)o->queued,
          secs_between(p.t_start, p.t_last_done), errors(&p, t3, sizeof(t3)));
  nsb_cpu_snap(o, &c0);
  if (connect_all(r) != 0 || tally(r, NULL, &t) != 0)
    goto done;
  nsb_cpu_snap(o, &c1);
  t0 = r->ready.sum.t_first_connect;
  welcome_s = secs_between(t0, r->ready.sum.t_last_welcome);
  drained_s = t.sum.t_complete ? secs_between(t0, t.sum.t_complete) : -1;
  last_rx_s = secs_between(t0, t.sum.t_last_rx);
  expected = t.sum.conns * (uint64_t)o->queued;
  lost = expected > t.sum.unique ? expected - t.sum.unique : 0;
  nsb_cpu_describe(o, &c0, &c1, 0, cpu, sizeof(cpu), NULL, 0);
  ready_text(r, "devices", t1, sizeof(t1));
  snprintf(t2, sizeof(t2), "%llu of %llu; lost %llu (%llu devices short), "
           "doubled %llu, misrouted %llu, other bodies %llu",
           (unsigned long long)t.sum.unique, (unsigned long long)expected,
           (unsigned long long)lost, (unsigned long long)t.sum.conns_with_loss,
           (unsigned long long)t.sum.dups, (unsigned long long)t.sum.misrouted,
           (unsigned long long)t.sum.foreign);
  printf("storm: %llu devices (%d users x %d), %d queued each; reconnect %s; "
         "last welcome %.2f s, drained %s%.2f s (last delivery %.2f s); "
         "deliveries %s; CPU %s\n", (unsigned long long)devs, o->users,
         o->devices, o->queued, t1, welcome_s,
         drained_s < 0 ? "NOT in grace, " : "", drained_s, last_rx_s, t2, cpu);
  md_header(r, "storm: every device reconnects at once to a full queue");
  md(r, "| devices | %llu (%d users × %d), each with %d queued notifications "
        "(%llu of %llu accepted; errors: %s) |\n", (unsigned long long)devs,
     o->users, o->devices, o->queued, (unsigned long long)p.sum.items_ok,
     (unsigned long long)o->users * (unsigned long long)o->queued, t3);
  md(r, "| reconnect (%d in flight per process) | %s |\n", o->connect_parallel, t1);
  md(r, "| **first reconnect → last `welcome`** | **%.2f s** |\n", welcome_s);
  if (drained_s >= 0)
    md(r, "| **first reconnect → every queue drained** | **%.2f s** |\n", drained_s);
  else
    md(r, "| **first reconnect → every queue drained** | **not within %.0f s** "
          "(last delivery at %.2f s) |\n", o->grace, last_rx_s);
  md(r, "| deliveries | %s |\n", t2);
  md(r, "| CPU from the first reconnect to the tally (%% of one core) | %s |\n", cpu);
  summ(r, "devices", (double)devs);
  summ(r, "queued_each", o->queued);
  summ(r, "last_welcome_s", welcome_s);
  summ(r, "drained_s", drained_s);
  summ(r, "last_rx_s", last_rx_s);
  summ(r, "lost", (double)lost);
  summ(r, "doubled", (double)t.sum.dups);
  summ(r, "failed_posts", (double)((uint64_t)o->users * (uint64_t)o->queued -
                                   (p.sum.items_ok < (uint64_t)o->users *
                                    (uint64_t)o->queued ? p.sum.items_ok
                                    : (uint64_t)o->users * (uint64_t)o->queued)));
  summ_cpu_s(r, &c0, &c1);
  rc = !p.sum.items_ok ? 4 : lost || t.sum.dups || t.sum.misrouted ? 3 : 0;
done:
  nsb_agg_free(&p, NULL);
  nsb_buf_free(&t.lat);
  return rc;
}

/* ---- sched-burst ---------------------------------------------------------- */

/* CLOCK_REALTIME in nanoseconds. */
static int64_t real_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

/* Reads counter / gauge `name` (no labels) from GET /metrics into `*v`.
 * Returns 0, or -1 when the request failed or the line is absent. */
static int metric(const nsb_opts *o, const char *name, double *v) {
  static char buf[1 << 18];
  struct sockaddr_in dst;
  size_t k = strlen(name);
  const char *p;
  int status = 0;
  if (nsb_addr(o->host, o->port, &dst) != 0 ||
      nsb_http_once(&dst, "GET", "/metrics", NULL, NULL, 2000, &status, buf,
                    sizeof(buf)) != 0 || status != 200)
    return -1;
  for (p = buf; (p = strstr(p, name)) != NULL; p += k)
    if ((p == buf || p[-1] == '\n') && p[k] == ' ') {
      *v = strtod(p + k + 1, NULL);
      return 0;
    }
  return -1;
}

/* U x D devices connect; U x Q notifications are posted in batches, all
 * with one deliver_at (a whole second, --lead s after the connect phase);
 * then GET /metrics is polled until notisync_scheduled_queued_total grew by
 * the number accepted, and every device is waited for until it has all of
 * its user's Q.  Times are from deliver_at. */
static int scen_sched_burst(run *r) {
  nsb_opts *o = r->o;
  nsb_produce_args a;
  nsb_agg_prod p;
  nsb_agg_tally t;
  nsb_cpu c0, c1, cp0, cp1;
  uint64_t devs = (uint64_t)o->users * (uint64_t)o->devices;
  uint64_t total = (uint64_t)o->users * (uint64_t)o->queued, expected, lost;
  char t1[512], t2[512], t3[256], cpu[1024], at[40], qtxt[256];
  double base = 0, cur = 0, lag = -1, queued_s = -1, first_q_s = -1;
  double delivered_s, first_rx_s, last_rx_s, post_s, post_end_s;
  int64_t due_real, due_mono, now_r, now_m, dl;
  int have_metric, polls = 0, rc = 1;
  time_t due_t;
  struct tm tmv;

  memset(&p, 0, sizeof(p));
  memset(&t, 0, sizeof(t));
  if (spawn_all(r, NSB_ROLE_DEVICES, (uint32_t)devs, 1) != 0 ||
      connect_all(r) != 0)
    goto done;
  ready_text(r, "devices", t1, sizeof(t1));
  fprintf(stderr, "notisync-bench: connected: %s\n", t1);
  have_metric = metric(o, "notisync_scheduled_queued_total", &base) == 0;
  if (!have_metric)
    fprintf(stderr, "notisync-bench: GET /metrics has no "
            "notisync_scheduled_queued_total: only deliveries are timed\n");
  now_r = real_ns();
  now_m = nsb_now_ns();
  due_t = (time_t)(now_r / NS_PER_S + (int64_t)(o->lead + 0.999));
  due_real = (int64_t)due_t * NS_PER_S;
  due_mono = now_m + (due_real - now_r);
  gmtime_r(&due_t, &tmv);
  strftime(at, sizeof(at), "%Y-%m-%dT%H:%M:%SZ", &tmv);

  memset(&a, 0, sizeof(a));
  a.kind = NSB_P_SCHED;
  a.conns = o->concurrency;
  a.batch = o->batch;
  a.max_requests = (int64_t)((total + (uint64_t)o->batch - 1) / (uint64_t)o->batch);
  a.duration_ns = 600 * NS_PER_S;
  a.deliver_at_s = (int64_t)due_t;
  if (produce(r, &a, &p, &cp0, &cp1) != 0)
    goto done;
  post_s = secs_between(p.t_start, p.t_last_done);
  post_end_s = (double)(p.t_last_done - due_mono) / 1e9;
  fprintf(stderr, "notisync-bench: scheduled %llu of %llu for %s in %.2f s "
          "(last answer %.2f s %s deliver_at; errors: %s)\n",
          (unsigned long long)p.sum.items_ok, (unsigned long long)total, at,
          post_s, post_end_s < 0 ? -post_end_s : post_end_s,
          post_end_s < 0 ? "before" : "AFTER", errors(&p, t3, sizeof(t3)));

  /* From just before deliver_at: poll the counter every 20 ms. */
  nsb_cpu_snap(o, &c0);
  dl = due_mono + (int64_t)(o->grace * 1e9);
  if (have_metric && p.sum.items_ok) {
    for (;;) {
      int64_t t_req = nsb_now_ns(), t_ans;
      if (t_req > dl)
        break;
      if (t_req < due_mono - NS_PER_S / 5) {
        sleep_s((double)(due_mono - NS_PER_S / 5 - t_req) / 1e9);
        continue;
      }
      if (metric(o, "notisync_scheduled_queued_total", &cur) != 0) {
        sleep_s(0.02);
        continue;
      }
      t_ans = nsb_now_ns();
      polls++;
      /* The counter was read between t_req and t_ans: credit t_ans. */
      if (first_q_s < 0 && cur > base)
        first_q_s = (double)(t_ans - due_mono) / 1e9;
      if (cur - base >= (double)p.sum.items_ok) {
        queued_s = (double)(t_ans - due_mono) / 1e9;
        break;
      }
      sleep_s(0.02);
    }
    (void)metric(o, "notisync_scheduler_lag_seconds", &lag);
  }
  if (tally(r, NULL, &t) != 0)
    goto done;
  nsb_cpu_snap(o, &c1);
  expected = t.sum.conns * (uint64_t)o->queued;
  lost = expected > t.sum.unique ? expected - t.sum.unique : 0;
  delivered_s = t.sum.t_complete ? (double)(t.sum.t_complete - due_mono) / 1e9 : -1;
  first_rx_s = t.sum.t_first_rx ? (double)(t.sum.t_first_rx - due_mono) / 1e9 : 0;
  last_rx_s = t.sum.t_last_rx ? (double)(t.sum.t_last_rx - due_mono) / 1e9 : 0;
  nsb_cpu_describe(o, &c0, &c1, 0, cpu, sizeof(cpu), NULL, 0);
  snprintf(t2, sizeof(t2), "%llu of %llu; lost %llu (%llu devices short), "
           "doubled %llu, misrouted %llu, other bodies %llu",
           (unsigned long long)t.sum.unique, (unsigned long long)expected,
           (unsigned long long)lost, (unsigned long long)t.sum.conns_with_loss,
           (unsigned long long)t.sum.dups, (unsigned long long)t.sum.misrouted,
           (unsigned long long)t.sum.foreign);
  if (!have_metric)
    snprintf(qtxt, sizeof(qtxt), "not available (no notisync_scheduled_queued_total)");
  else if (queued_s >= 0)
    snprintf(qtxt, sizeof(qtxt), "%.2f s (first counted %.2f s; %d polls; "
             "scheduler lag gauge %.3f s)", queued_s, first_q_s, polls, lag);
  else
    snprintf(qtxt, sizeof(qtxt), "NOT within %.0f s (%.0f of %llu counted)",
             o->grace, cur - base, (unsigned long long)p.sum.items_ok);
  printf("sched-burst: %llu notifications (%d users x %d, each to %d devices) "
         "due %s; posted in %.2f s; deliver_at -> all queued %s; -> all "
         "delivered %s%.2f s (first delivery %+.2f s, last %.2f s); "
         "deliveries %s; CPU %s\n", (unsigned long long)p.sum.items_ok,
         o->users, o->queued, o->devices, at, post_s, qtxt,
         delivered_s < 0 ? "NOT in grace, " : "", delivered_s, first_rx_s,
         last_rx_s, t2, cpu);
  md_header(r, "sched-burst: notifications due in the same second");
  md(r, "| devices | %s |\n", t1);
  md(r, "| scheduled | %llu of %llu accepted (%d users × %d, batches of %d, "
        "%d in flight) in %.2f s, all with `deliver_at` %s; last answer "
        "%.2f s %s it; errors: %s |\n", (unsigned long long)p.sum.items_ok,
     (unsigned long long)total, o->users, o->queued, o->batch, o->concurrency,
     post_s, at, post_end_s < 0 ? -post_end_s : post_end_s,
     post_end_s < 0 ? "before" : "**after**", t3);
  md(r, "| **deliver_at → all counted in `notisync_scheduled_queued_total`** "
        "| **%s** |\n", qtxt);
  if (delivered_s >= 0)
    md(r, "| **deliver_at → every device has all of its user's** | **%.2f s** "
          "(first delivery %+.2f s) |\n", delivered_s, first_rx_s);
  else
    md(r, "| **deliver_at → every device has all of its user's** | **not "
          "within %.0f s** (last delivery %.2f s) |\n", o->grace, last_rx_s);
  md(r, "| deliveries | %s |\n", t2);
  md(r, "| CPU from deliver_at − 0.2 s to the tally (%% of one core) | %s |\n", cpu);
  summ(r, "accepted", (double)p.sum.items_ok);
  summ(r, "post_s", post_s);
  summ(r, "post_end_s", post_end_s);
  summ(r, "queued_s", queued_s);
  summ(r, "first_queued_s", first_q_s);
  summ(r, "lag_gauge_s", lag);
  summ(r, "delivered_s", delivered_s);
  summ(r, "first_rx_s", first_rx_s);
  summ(r, "last_rx_s", last_rx_s);
  summ(r, "lost", (double)lost);
  summ(r, "doubled", (double)t.sum.dups);
  summ(r, "misrouted", (double)t.sum.misrouted);
  summ(r, "early", first_rx_s < 0 ? 1 : 0);
  summ_cpu_s(r, &c0, &c1);
  rc = !p.sum.items_ok ? 4
       : lost || t.sum.dups || t.sum.misrouted || first_rx_s < 0 ? 3 : 0;
done:
  nsb_agg_free(&p, NULL);
  nsb_buf_free(&t.lat);
  return rc;
}

/* ---- c100k -------------------------------------------------------------- */

/* RSS (KiB, process tree) of every --watch process into `kb`. */
static void rss_all(const nsb_opts *o, uint64_t *kb) {
  int i;
  for (i = 0; i < o->nwatch; i++)
    kb[i] = nsb_rss_tree_kb(o->watch[i].pid);
}

/* "delivered D of C connections (lost L, doubled X); last first copy T s
 * after the first POST" for bit `k` of the c100k tallies. */
static const char *c100k_text(const nsb_agg_tally *t, const nsb_agg_tally *fin,
                              int k, double reach_s, char *out, size_t outlen) {
  uint64_t conns = t->sum.conns, got = t->sum.bit_conns[k];
  snprintf(out, outlen, "%llu of %llu connections, lost %llu, doubled %llu; "
           "POST → last connection's copy %.2f s",
           (unsigned long long)got, (unsigned long long)conns,
           (unsigned long long)(conns > got ? conns - got : 0),
           (unsigned long long)fin->sum.bit_dups[k], reach_s);
  return out;
}

/* U x D devices connect (K in flight per process, one source address per
 * process); RSS of the watched trees before / 3 s after; then ONE batch
 * notification per user (no target_devices: every device) and ONE
 * broadcast, each counted once per connection. */
static int scen_c100k(run *r) {
  nsb_opts *o = r->o;
  const nsb_ready *s = &r->ready.sum;
  nsb_produce_args a;
  nsb_agg_prod pn, pb;
  nsb_agg_tally tn, tb;
  nsb_cpu c0, c1, cp0, cp1;
  uint64_t before[NSB_MAX_WATCH], after[NSB_MAX_WATCH];
  uint64_t devs = (uint64_t)o->users * (uint64_t)o->devices, conns, nl, bl;
  uint64_t nposts = ((uint64_t)o->users + (uint64_t)o->batch - 1) / (uint64_t)o->batch;
  char t1[512], t2[512], t3[512], t4[512], row[1024], key[96], cpu[1024];
  double connect_s, per = 0, nreach, breach;
  uint8_t acc;
  size_t off = 0;
  int i, rc = 1;

  memset(&pn, 0, sizeof(pn));
  memset(&pb, 0, sizeof(pb));
  memset(&tn, 0, sizeof(tn));
  memset(&tb, 0, sizeof(tb));
  if (spawn_all(r, NSB_ROLE_DEVICES, (uint32_t)devs, 1) != 0)
    goto done;
  rss_all(o, before);
  nsb_cpu_snap(o, &c0);
  if (connect_all(r) != 0)
    goto done;
  nsb_cpu_snap(o, &c1);
  connect_s = secs_between(s->t_first_connect, s->t_last_welcome);
  ready_text(r, "devices", t1, sizeof(t1));
  nsb_cpu_describe(o, &c0, &c1, 0, cpu, sizeof(cpu), NULL, 0);
  fprintf(stderr, "notisync-bench: %s; first connect() -> last welcome "
          "%.2f s\n", t1, connect_s);
  sleep_s(3);
  rss_all(o, after);
  row[0] = '\0';
  for (i = 0; i < o->nwatch; i++) {
    double d = ((double)after[i] - (double)before[i]) * 1024.0 /
               (s->connected ? s->connected : 1);
    if (i == 0)
      per = d;
    if (off < sizeof(row))
      off += (size_t)snprintf(row + off, sizeof(row) - off,
                              "%s%s %.1f → %.1f MiB (%.0f B per connection)",
                              i ? "; " : "", o->watch[i].name,
                              (double)before[i] / 1024, (double)after[i] / 1024, d);
  }
  fprintf(stderr, "notisync-bench: RSS %s\n", o->nwatch ? row : "(no --watch)");

  /* One notification to every user: batches of --batch users. */
  memset(&a, 0, sizeof(a));
  a.kind = NSB_P_PERUSER;
  a.conns = o->concurrency;
  a.batch = o->batch;
  a.max_requests = (int64_t)nposts;
  a.duration_ns = 600 * NS_PER_S;
  if (produce(r, &a, &pn, &cp0, &cp1) != 0)
    goto done;
  fprintf(stderr, "notisync-bench: notification: %llu of %d users accepted in "
          "%llu POSTs (errors: %s)\n", (unsigned long long)pn.sum.items_ok,
          o->users, (unsigned long long)pn.sum.requests, errors(&pn, t3, sizeof(t3)));
  acc = 1; /* bit 0 */
  if (tally_acc(r, &acc, 1, &tn) != 0)
    goto done;
  /* One broadcast. */
  memset(&a, 0, sizeof(a));
  a.kind = NSB_P_BCAST;
  a.conns = 1;
  a.max_requests = 1;
  a.duration_ns = 60 * NS_PER_S;
  if (produce(r, &a, &pb, &cp0, &cp1) != 0)
    goto done;
  fprintf(stderr, "notisync-bench: broadcast: %llu of 1 accepted (errors: %s)\n",
          (unsigned long long)pb.sum.st_ok, errors(&pb, t4, sizeof(t4)));
  acc = 2; /* bit 1 */
  if (tally_acc(r, &acc, 1, &tb) != 0)
    goto done;

  conns = tb.sum.conns;
  nl = tn.sum.conns > tn.sum.bit_conns[0] ? tn.sum.conns - tn.sum.bit_conns[0] : 0;
  bl = conns > tb.sum.bit_conns[1] ? conns - tb.sum.bit_conns[1] : 0;
  nreach = secs_between(pn.sum.t_first_send, tn.sum.bit_t_last[0]);
  breach = secs_between(pb.sum.t_first_send, tb.sum.bit_t_last[1]);
  c100k_text(&tn, &tb, 0, nreach, t3, sizeof(t3));
  c100k_text(&tb, &tb, 1, breach, t4, sizeof(t4));
  printf("c100k: %llu devices (%d users x %d) over %d processes, %d in flight "
         "each: %s; first connect() -> last welcome %.2f s; RSS %s; "
         "notification (%llu/%d users accepted): %s; broadcast (%llu/1 "
         "accepted): %s; misrouted %llu, other bodies %llu, closed by server "
         "%llu; connect CPU %s\n", (unsigned long long)devs, o->users,
         o->devices, o->procs, o->connect_parallel, t1, connect_s,
         o->nwatch ? row : "(no --watch)", (unsigned long long)pn.sum.items_ok,
         o->users, t3, (unsigned long long)pb.sum.st_ok, t4,
         (unsigned long long)tb.sum.misrouted, (unsigned long long)tb.sum.foreign,
         (unsigned long long)tb.sum.closed_by_server, cpu);
  md_header(r, "c100k: device connections held, one notification and one "
               "broadcast to all");
  md(r, "| devices | %llu (%d users × %d), %d client processes (one loopback "
        "source address each), %d handshakes in flight per process |\n",
     (unsigned long long)devs, o->users, o->devices, o->procs,
     o->connect_parallel);
  md(r, "| connections | %s |\n", t1);
  md(r, "| **first connect() → last `welcome`** | **%.2f s** (%.0f/s) |\n",
     connect_s, connect_s > 0 ? s->welcomed / connect_s : 0.0);
  md(r, "| **RSS before connecting → 3 s after all are open** | **%s** |\n",
     o->nwatch ? row : "no --watch");
  md(r, "| CPU of the connect phase (%% of one core) | %s |\n", cpu);
  md(r, "| notification: one per user, batches of %d | %llu of %d accepted "
        "in %llu POSTs; errors: %s |\n", o->batch,
     (unsigned long long)pn.sum.items_ok, o->users,
     (unsigned long long)pn.sum.requests, errors(&pn, t2, sizeof(t2)));
  md(r, "| **notification deliveries** | **%s** |\n", t3);
  md(r, "| broadcast | %llu of 1 accepted; errors: %s |\n",
     (unsigned long long)pb.sum.st_ok, errors(&pb, t2, sizeof(t2)));
  md(r, "| **broadcast deliveries** | **%s** |\n", t4);
  summ(r, "wanted", (double)devs);
  summ(r, "conns", s->connected);
  summ(r, "failed", s->failed);
  summ(r, "retries", s->retries);
  summ(r, "connect_s", connect_s);
  summ(r, "rss_per_conn_b", per);
  for (i = 0; i < o->nwatch; i++) {
    snprintf(key, sizeof(key), "%s_rss_before_kb", o->watch[i].name);
    summ(r, key, (double)before[i]);
    snprintf(key, sizeof(key), "%s_rss_after_kb", o->watch[i].name);
    summ(r, key, (double)after[i]);
  }
  summ_cpu_s(r, &c0, &c1);
  summ(r, "notif_accepted", (double)pn.sum.items_ok);
  summ(r, "notif_delivered", (double)tn.sum.bit_conns[0]);
  summ(r, "notif_lost", (double)nl);
  summ(r, "notif_dup", (double)tb.sum.bit_dups[0]);
  summ(r, "notif_reach_all_s", nl ? -1 : nreach);
  summ(r, "notif_last_rx_s", nreach);
  summ(r, "bcast_accepted", (double)pb.sum.st_ok);
  summ(r, "bcast_delivered", (double)tb.sum.bit_conns[1]);
  summ(r, "bcast_lost", (double)bl);
  summ(r, "bcast_dup", (double)tb.sum.bit_dups[1]);
  summ(r, "bcast_reach_all_s", bl ? -1 : breach);
  summ(r, "bcast_last_rx_s", breach);
  summ(r, "misrouted", (double)tb.sum.misrouted);
  summ(r, "closed_by_server", (double)tb.sum.closed_by_server);
  rc = !pn.sum.items_ok && !pb.sum.st_ok ? 4
       : s->connected < s->wanted || nl || bl || tb.sum.bit_dups[0] ||
                 tb.sum.bit_dups[1] || tb.sum.misrouted ? 3 : 0;
done:
  nsb_agg_free(&pn, NULL);
  nsb_agg_free(&pb, NULL);
  nsb_buf_free(&tn.lat);
  nsb_buf_free(&tb.lat);
  return rc;
}

int nsb_scenario_run(nsb_opts *o) {
  run *r = nsb_xcalloc(1, sizeof(run));
  struct sockaddr_in dst;
  char body[512];
  int status = 0, rc;
  r->o = o;
  if (nsb_addr(o->host, o->port, &dst) != 0 ||
      nsb_http_once(&dst, "GET", "/health", NULL, NULL, 5000, &status, body,
                    sizeof(body)) != 0) {
    fprintf(stderr, "notisync-bench: no server answers on %s:%d\n", o->host,
            o->port);
    free(r);
    return 1;
  }
  if (status != 200 && o->target == NSB_T_NOTISYNC)
    fprintf(stderr, "notisync-bench: /health answered %d: %.200s\n", status,
            body);
  if (strcmp(o->scenario, "idle") == 0)
    rc = scen_idle(r);
  else if (strcmp(o->scenario, "bcast-throughput") == 0)
    rc = scen_bcast(r, 0);
  else if (strcmp(o->scenario, "bcast-latency") == 0)
    rc = scen_bcast(r, 1);
  else if (strcmp(o->scenario, "handshake") == 0)
    rc = scen_handshake(r);
  else if (strcmp(o->scenario, "storm") == 0)
    rc = scen_storm(r);
  else if (strcmp(o->scenario, "c100k") == 0)
    rc = scen_c100k(r);
  else if (strcmp(o->scenario, "sched-burst") == 0)
    rc = scen_sched_burst(r);
  else if (strcmp(o->scenario, "latency") == 0)
    rc = scen_latency(r);
  else if (strcmp(o->scenario, "throughput-single") == 0)
    rc = scen_throughput(r, NSB_P_SINGLE);
  else if (strcmp(o->scenario, "throughput-batch") == 0)
    rc = scen_throughput(r, NSB_P_BATCH);
  else
    rc = scen_fanout(r);
  fflush(stdout);
  nsb_fleet_stop(&r->fleet);
  md_flush(r);
  free(r);
  return rc;
}
