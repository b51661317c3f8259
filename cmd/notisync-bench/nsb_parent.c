/*
 * nsb_parent.c -- the parent's machinery: forking children with their two
 * pipes, sending commands and collecting answers with deadlines, stopping
 * them by PID; CPU accounting from /proc (a watched PID counts with all its
 * descendants: postgres backends, notisyncd workers); --stat-cmd counters;
 * merging the children's results.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nsb_parent.h"

/* ---- fleet -------------------------------------------------------------- */

int nsb_fleet_spawn(nsb_fleet *f, const nsb_opts *o, int role, int index,
                    uint32_t first, uint32_t count, uint32_t producer_id) {
  int ctl[2], res[2], i, pid;
  if (f->n >= NSB_MAX_PROCS || pipe(ctl) != 0)
    return -1;
  if (pipe(res) != 0) {
    close(ctl[0]);
    close(ctl[1]);
    return -1;
  }
  fflush(stdout);
  fflush(stderr);
  pid = fork();
  if (pid < 0) {
    close(ctl[0]); close(ctl[1]); close(res[0]); close(res[1]);
    return -1;
  }
  if (pid == 0) {
    nsb_job job;
    /* Keep no copy of a sibling's pipes: EOF must reach them when the
     * parent dies. */
    for (i = 0; i < f->n; i++) {
      close(f->p[i].ctrl);
      close(f->p[i].res);
    }
    close(ctl[1]);
    close(res[0]);
    memset(&job, 0, sizeof(job));
    job.o = o;
    job.role = role;
    job.index = index;
    job.first = first;
    job.count = count;
    job.ctrl_fd = ctl[0];
    job.res_fd = res[1];
    job.producer_id = producer_id;
    _exit(nsb_child_main(&job));
  }
  close(ctl[0]);
  close(res[1]);
  (void)fcntl(ctl[1], F_SETFD, FD_CLOEXEC);
  (void)fcntl(res[0], F_SETFD, FD_CLOEXEC);
  f->p[f->n].pid = pid;
  f->p[f->n].ctrl = ctl[1];
  f->p[f->n].res = res[0];
  f->p[f->n].role = role;
  f->p[f->n].count = count;
  f->n++;
  return 0;
}

int nsb_fleet_cmd(nsb_fleet *f, int role, uint32_t type, const void *a,
                  size_t na, const void *b, size_t nb) {
  int i, rc = 0;
  for (i = 0; i < f->n; i++)
    if (f->p[i].role == role && f->p[i].pid > 0 &&
        nsb_ipc_send(f->p[i].ctrl, type, a, na, b, nb, NULL, 0) != 0)
      rc = -1;
  return rc;
}

int nsb_fleet_collect(nsb_fleet *f, int role, int want, int64_t deadline_ns,
                      void (*cb)(void *arg, const nsb_buf *m), void *arg) {
  nsb_buf m = {0};
  int i, rc = 0;
  for (i = 0; i < f->n; i++) {
    int t;
    if (f->p[i].role != role || f->p[i].pid <= 0)
      continue;
    t = nsb_ipc_recv(f->p[i].res, deadline_ns, &m);
    if (t != want) {
      fprintf(stderr, "notisync-bench: child %d (pid %d): %s\n", i,
              f->p[i].pid, t == 0 ? "no answer in time" : "died or answered "
              "out of turn");
      rc = -1;
      continue;
    }
    if (cb)
      cb(arg, &m);
  }
  nsb_buf_free(&m);
  return rc;
}

void nsb_fleet_stop(nsb_fleet *f) {
  int i, left, step;
  for (i = 0; i < f->n; i++)
    if (f->p[i].pid > 0)
      (void)nsb_ipc_send(f->p[i].ctrl, NSB_CMD_EXIT, NULL, 0, NULL, 0, NULL, 0);
  for (step = 0; step < 200; step++) { /* 10 s */
    left = 0;
    for (i = 0; i < f->n; i++) {
      if (f->p[i].pid <= 0)
        continue;
      if (waitpid(f->p[i].pid, NULL, WNOHANG) == f->p[i].pid)
        f->p[i].pid = 0;
      else
        left++;
    }
    if (!left)
      break;
    usleep(50000);
  }
  for (i = 0; i < f->n; i++) {
    if (f->p[i].pid > 0) {
      fprintf(stderr, "notisync-bench: killing child pid %d\n", f->p[i].pid);
      kill(f->p[i].pid, SIGKILL);
      (void)waitpid(f->p[i].pid, NULL, 0);
      f->p[i].pid = 0;
    }
    if (f->p[i].ctrl >= 0)
      close(f->p[i].ctrl);
    if (f->p[i].res >= 0)
      close(f->p[i].res);
    f->p[i].ctrl = f->p[i].res = -1;
  }
}

/* ---- CPU accounting ------------------------------------------------------ */

typedef struct pstat {
  int pid, ppid;
  uint64_t own, children; /* utime+stime, cutime+cstime */
} pstat;

/* Reads /proc/<pid>/stat; 0 or -1. */
static int read_pstat(int pid, pstat *out) {
  char path[64], buf[1024], *p;
  unsigned long long v[20];
  int fd, n, i;
  snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  n = (int)read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0)
    return -1;
  buf[n] = '\0';
  p = strrchr(buf, ')');
  if (!p || p[1] != ' ')
    return -1;
  p += 4; /* ") S " : fields from ppid (4th) on */
  for (i = 0; i < 14; i++) {
    char *e;
    v[i] = strtoull(p, &e, 10);
    if (e == p)
      return -1;
    p = e;
  }
  out->pid = pid;
  out->ppid = (int)v[0];          /* field 4 */
  out->own = v[10] + v[11];       /* fields 14, 15 */
  out->children = v[12] + v[13];  /* fields 16, 17 */
  return 0;
}

/* Every process on the machine (bounded: 65536). */
static int all_pstats(pstat **out) {
  DIR *d = opendir("/proc");
  struct dirent *e;
  int n = 0, cap = 1024;
  pstat *v = nsb_xmalloc((size_t)cap * sizeof(pstat));
  if (!d) {
    *out = v;
    return 0;
  }
  while ((e = readdir(d)) && n < 65536) {
    int pid = atoi(e->d_name);
    if (pid <= 0)
      continue;
    if (n == cap) {
      cap *= 2;
      v = nsb_xrealloc(v, (size_t)cap * sizeof(pstat));
    }
    if (read_pstat(pid, &v[n]) == 0)
      n++;
  }
  closedir(d);
  *out = v;
  return n;
}

/* Ticks of `root` including reaped children, plus live descendants. */
static uint64_t tree_ticks(const pstat *v, int n, int root) {
  int *queue = nsb_xmalloc((size_t)(n + 1) * sizeof(int)), qh = 0, qt = 0, i;
  uint64_t sum = 0;
  for (i = 0; i < n; i++)
    if (v[i].pid == root)
      sum += v[i].own + v[i].children;
  queue[qt++] = root;
  while (qh < qt) {
    int parent = queue[qh++];
    for (i = 0; i < n && qt <= n; i++)
      if (v[i].ppid == parent && v[i].pid != root) {
        sum += v[i].own;
        queue[qt++] = v[i].pid;
      }
  }
  free(queue);
  return sum;
}

static void read_machine(uint64_t *busy, uint64_t *total) {
  unsigned long long f[8] = {0};
  FILE *fp = fopen("/proc/stat", "r");
  *busy = *total = 0;
  if (!fp)
    return;
  if (fscanf(fp, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &f[0], &f[1],
             &f[2], &f[3], &f[4], &f[5], &f[6], &f[7]) == 8) {
    int i;
    for (i = 0; i < 8; i++)
      *total += f[i];
    *busy = *total - f[3] - f[4];
  }
  fclose(fp);
}

static void run_stat_cmd(const char *cmd, nsb_cpu *s) {
  char line[256];
  FILE *fp = popen(cmd, "r");
  s->nstat = 0;
  if (!fp)
    return;
  while (fgets(line, sizeof(line), fp)) {
    char name[48];
    double val;
    if (s->nstat < 16 && sscanf(line, "%47s %lf", name, &val) == 2) {
      snprintf(s->stat_name[s->nstat], sizeof(s->stat_name[0]), "%s", name);
      s->stat_val[s->nstat++] = val;
    }
  }
  (void)pclose(fp);
}

void nsb_cpu_snap(const nsb_opts *o, nsb_cpu *s) {
  pstat *v;
  int n, i;
  memset(s, 0, sizeof(*s));
  if (o->stat_cmd)
    run_stat_cmd(o->stat_cmd, s);
  n = all_pstats(&v);
  for (i = 0; i < o->nwatch; i++)
    s->ticks[i] = tree_ticks(v, n, o->watch[i].pid);
  s->ticks[o->nwatch] = tree_ticks(v, n, (int)getpid());
  read_machine(&s->busy, &s->total);
  s->t_ns = nsb_now_ns();
  free(v);
}

double nsb_cpu_pct(const nsb_opts *o, const nsb_cpu *a, const nsb_cpu *b,
                   int i) {
  double secs = (double)(b->t_ns - a->t_ns) / 1e9;
  long hz = sysconf(_SC_CLK_TCK);
  (void)o;
  if (secs <= 0 || hz <= 0 || b->ticks[i] < a->ticks[i])
    return 0;
  return 100.0 * (double)(b->ticks[i] - a->ticks[i]) / (double)hz / secs;
}

void nsb_cpu_describe(const nsb_opts *o, const nsb_cpu *a, const nsb_cpu *b,
                      double items, char *out, size_t outlen, char *stats,
                      size_t statslen) {
  size_t off = 0;
  int i, j;
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  double sum = 0, busy;
  out[0] = '\0';
  for (i = 0; i <= o->nwatch && off < outlen; i++) {
    double p = nsb_cpu_pct(o, a, b, i);
    sum += p;
    off += (size_t)snprintf(out + off, outlen - off, "%s %.0f %%, ",
                            i < o->nwatch ? o->watch[i].name : "notisync-bench",
                            p);
  }
  if (off < outlen && b->total > a->total) {
    busy = 100.0 * (double)(b->busy - a->busy) / (double)(b->total - a->total);
    /* What the machine did besides the processes above: other work on a
     * shared machine, and kernel time not charged to any process. */
    off += (size_t)snprintf(out + off, outlen - off,
                            "everything else %.0f %%; machine %.0f %% busy of "
                            "%ld cores", busy * (double)ncpu - sum > 0
                                ? busy * (double)ncpu - sum : 0.0,
                            busy, ncpu);
  }
  if (!stats || !statslen)
    return;
  stats[0] = '\0';
  off = 0;
  for (i = 0; i < b->nstat && off < statslen; i++)
    for (j = 0; j < a->nstat; j++)
      if (strcmp(a->stat_name[j], b->stat_name[i]) == 0) {
        double d = b->stat_val[i] - a->stat_val[j];
        if (items > 0)
          off += (size_t)snprintf(stats + off, statslen - off,
                                  "%s%s +%.0f (%.2f per item)", off ? ", " : "",
                                  b->stat_name[i], d, d / items);
        else
          off += (size_t)snprintf(stats + off, statslen - off, "%s%s +%.0f",
                                  off ? ", " : "", b->stat_name[i], d);
        break;
      }
}

/* ---- memory --------------------------------------------------------------- */

/* VmRSS of one process in KiB; 0 when it is gone. */
static uint64_t rss_kb(int pid) {
  char path[64], line[256];
  unsigned long long kb = 0;
  FILE *fp;
  snprintf(path, sizeof(path), "/proc/%d/status", pid);
  if (!(fp = fopen(path, "r")))
    return 0;
  while (fgets(line, sizeof(line), fp))
    if (sscanf(line, "VmRSS: %llu kB", &kb) == 1)
      break;
  fclose(fp);
  return kb;
}

uint64_t nsb_rss_tree_kb(int root) {
  pstat *v;
  int n = all_pstats(&v), *queue, qh = 0, qt = 0, i;
  uint64_t sum = rss_kb(root);
  queue = nsb_xmalloc((size_t)(n + 1) * sizeof(int));
  queue[qt++] = root;
  while (qh < qt) {
    int parent = queue[qh++];
    for (i = 0; i < n && qt <= n; i++)
      if (v[i].ppid == parent && v[i].pid != root) {
        sum += rss_kb(v[i].pid);
        queue[qt++] = v[i].pid;
      }
  }
  free(queue);
  free(v);
  return sum;
}

/* ---- aggregation --------------------------------------------------------- */

void nsb_agg_ready_cb(void *arg, const nsb_buf *m) {
  nsb_agg_ready *a = arg;
  nsb_ready r;
  if (m->len < sizeof(r))
    return;
  memcpy(&r, m->p, sizeof(r));
  a->sum.wanted += r.wanted;
  a->sum.connected += r.connected;
  a->sum.failed += r.failed;
  a->sum.retries += r.retries;
  a->sum.fail_tcp += r.fail_tcp;
  a->sum.fail_timeout += r.fail_timeout;
  a->sum.fail_http += r.fail_http;
  a->sum.fail_close += r.fail_close;
  a->sum.http_429 += r.http_429;
  if (r.http_other_status)
    a->sum.http_other_status = r.http_other_status;
  if (r.close_code_last)
    a->sum.close_code_last = r.close_code_last;
  if (r.elapsed_ns > a->max_elapsed)
    a->max_elapsed = r.elapsed_ns;
  a->sum.upgraded += r.upgraded;
  a->sum.welcomed += r.welcomed;
  if (r.t_first_connect &&
      (!a->sum.t_first_connect || r.t_first_connect < a->sum.t_first_connect))
    a->sum.t_first_connect = r.t_first_connect;
  if (r.t_last_upgrade > a->sum.t_last_upgrade)
    a->sum.t_last_upgrade = r.t_last_upgrade;
  if (r.t_last_welcome > a->sum.t_last_welcome)
    a->sum.t_last_welcome = r.t_last_welcome;
}

void nsb_agg_prod_cb(void *arg, const nsb_buf *m) {
  nsb_agg_prod *a = arg;
  nsb_produced p;
  size_t need;
  int i;
  if (m->len < sizeof(p))
    return;
  memcpy(&p, m->p, sizeof(p));
  need = sizeof(p) + (size_t)p.npairs * sizeof(nsb_pair) +
         (size_t)p.nlat * sizeof(uint32_t);
  if (m->len < need)
    return;
  a->sum.requests += p.requests;
  a->sum.items_ok += p.items_ok;
  a->sum.items_sent += p.items_sent;
  a->sum.conn_errors += p.conn_errors;
  a->sum.late += p.late;
  a->sum.timeouts += p.timeouts;
  a->sum.st_ok += p.st_ok;
  for (i = 0; i < 6; i++)
    a->sum.status[i] += p.status[i];
  if (p.t_start && (!a->t_start || p.t_start < a->t_start))
    a->t_start = p.t_start;
  if (p.t_first_send &&
      (!a->sum.t_first_send || p.t_first_send < a->sum.t_first_send))
    a->sum.t_first_send = p.t_first_send;
  if (p.t_last_done > a->t_last_done)
    a->t_last_done = p.t_last_done;
  if (p.last_error[0])
    memcpy(a->last_error, p.last_error, sizeof(a->last_error));
  nsb_buf_add(&a->pairs, m->p + sizeof(p), (size_t)p.npairs * sizeof(nsb_pair));
  nsb_buf_add(&a->lat, m->p + sizeof(p) + (size_t)p.npairs * sizeof(nsb_pair),
              (size_t)p.nlat * sizeof(uint32_t));
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

static int cmp_pair(const void *a, const void *b) {
  return cmp_u32(&((const nsb_pair *)a)->seq, &((const nsb_pair *)b)->seq);
}

void nsb_agg_prod_done(nsb_agg_prod *a) {
  if (a->pairs.len)
    qsort(a->pairs.p, a->pairs.len / sizeof(nsb_pair), sizeof(nsb_pair),
          cmp_pair);
  if (a->lat.len)
    qsort(a->lat.p, a->lat.len / sizeof(uint32_t), sizeof(uint32_t), cmp_u32);
}

void nsb_agg_rep_cb(void *arg, const nsb_buf *m) {
  nsb_agg_rep *a = arg;
  nsb_report r;
  const uint32_t *mx;
  uint32_t i;
  int k, j;
  if (m->len < sizeof(r))
    return;
  memcpy(&r, m->p, sizeof(r));
  if (m->len < sizeof(r) + ((size_t)r.nlat + r.nmax) * sizeof(uint32_t))
    return;
#define ADD(f) a->sum.f += r.f
  ADD(frames); ADD(records); ADD(expected); ADD(matched); ADD(dups);
  ADD(misrouted); ADD(unknown); ADD(lost); ADD(unarmed); ADD(welcome);
  ADD(pong); ADD(device_status); ADD(overflow); ADD(errors); ADD(other);
  ADD(closed_by_server); ADD(pings);
#undef ADD
  if (r.t_last_rx > a->sum.t_last_rx)
    a->sum.t_last_rx = r.t_last_rx;
  for (k = 0; k < 8 && r.close_codes[k][1]; k++)
    for (j = 0; j < 8; j++)
      if (a->sum.close_codes[j][0] == r.close_codes[k][0] ||
          !a->sum.close_codes[j][1]) {
        a->sum.close_codes[j][0] = r.close_codes[k][0];
        a->sum.close_codes[j][1] += r.close_codes[k][1];
        break;
      }
  nsb_buf_add(&a->lat, m->p + sizeof(r), (size_t)r.nlat * sizeof(uint32_t));
  mx = (const uint32_t *)(const void *)(m->p + sizeof(r) +
                                        (size_t)r.nlat * sizeof(uint32_t));
  if (r.nmax > a->nmax) {
    a->permax = nsb_xrealloc(a->permax, r.nmax * sizeof(uint32_t));
    memset(a->permax + a->nmax, 0, (r.nmax - a->nmax) * sizeof(uint32_t));
    a->nmax = r.nmax;
  }
  for (i = 0; i < r.nmax; i++) {
    uint32_t v;
    memcpy(&v, mx + i, sizeof(v));
    if (v > a->permax[i])
      a->permax[i] = v;
  }
}

void nsb_agg_tally_cb(void *arg, const nsb_buf *m) {
  nsb_agg_tally *a = arg;
  nsb_tally t;
  if (m->len < sizeof(t))
    return;
  memcpy(&t, m->p, sizeof(t));
  if (m->len < sizeof(t) + (size_t)t.nlat * sizeof(uint32_t))
    return;
#define ADD(f) a->sum.f += t.f
  ADD(conns); ADD(unique); ADD(dups); ADD(foreign); ADD(misrouted);
  ADD(conns_with_loss); ADD(lost_accepted); ADD(closed_by_server);
#undef ADD
  if (t.t_first_rx && (!a->sum.t_first_rx || t.t_first_rx < a->sum.t_first_rx))
    a->sum.t_first_rx = t.t_first_rx;
  if (t.t_last_rx > a->sum.t_last_rx)
    a->sum.t_last_rx = t.t_last_rx;
  if (!t.t_complete)
    a->incomplete = 1;
  if (t.t_complete > a->sum.t_complete)
    a->sum.t_complete = t.t_complete;
  a->sum.lat_capped |= t.lat_capped;
  for (int k = 0; k < 2; k++) {
    a->sum.bit_conns[k] += t.bit_conns[k];
    a->sum.bit_dups[k] += t.bit_dups[k];
    if (t.bit_t_last[k] > a->sum.bit_t_last[k])
      a->sum.bit_t_last[k] = t.bit_t_last[k];
  }
  a->children++;
  nsb_buf_add(&a->lat, m->p + sizeof(t), (size_t)t.nlat * sizeof(uint32_t));
}

void nsb_agg_tally_done(nsb_agg_tally *a) {
  if (a->lat.len)
    qsort(a->lat.p, a->lat.len / sizeof(uint32_t), sizeof(uint32_t), cmp_u32);
  if (a->incomplete || !a->children)
    a->sum.t_complete = 0;
}

void nsb_agg_rep_done(nsb_agg_rep *a) {
  if (a->lat.len)
    qsort(a->lat.p, a->lat.len / sizeof(uint32_t), sizeof(uint32_t), cmp_u32);
}

void nsb_agg_free(nsb_agg_prod *p, nsb_agg_rep *r) {
  if (p) {
    nsb_buf_free(&p->pairs);
    nsb_buf_free(&p->lat);
  }
  if (r) {
    nsb_buf_free(&r->lat);
    free(r->permax);
    r->permax = NULL;
    r->nmax = 0;
  }
}

double nsb_pct(const nsb_buf *sorted, double p) {
  size_t n = sorted->len / sizeof(uint32_t), k;
  uint32_t v;
  if (!n)
    return 0;
  k = (size_t)(p / 100.0 * (double)n + 0.999999);
  if (k < 1)
    k = 1;
  if (k > n)
    k = n;
  memcpy(&v, sorted->p + (k - 1) * sizeof(uint32_t), sizeof(v));
  return v;
}
