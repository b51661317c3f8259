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
    {
      struct timespec ts = {.tv_sec = (time_t)o->settle,
                            .tv_nsec = (long)((o->settle - (double)(time_t)o->settle) * 1e9)};
      (void)nanosleep(&ts, NULL);
    }
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
  if (status != 200)
    fprintf(stderr, "notisync-bench: /health answered %d: %.200s\n", status,
            body);
  if (strcmp(o->scenario, "latency") == 0)
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
