/*
 * nsb_parent.h -- the coordinating parent: the fleet of child processes
 * (spawn, command, collect, stop), CPU accounting of watched processes over
 * a measured window, the --stat-cmd counters, and the aggregation of the
 * children's results.  Used by nsb_scen.c.
 */
#ifndef NSB_PARENT_H
#define NSB_PARENT_H

#include "nsb.h"

typedef struct nsb_proc {
  int pid;
  int ctrl;   /* write commands */
  int res;    /* read results */
  int role;
  uint32_t count;
} nsb_proc;

typedef struct nsb_fleet {
  nsb_proc p[NSB_MAX_PROCS];
  int n;
} nsb_fleet;

/* Forks one child running nsb_child_main().  Returns 0 or -1. */
int nsb_fleet_spawn(nsb_fleet *f, const nsb_opts *o, int role, int index,
                    uint32_t first, uint32_t count, uint32_t producer_id);
/* Sends a command to every child of `role`.  Returns 0 or -1. */
int nsb_fleet_cmd(nsb_fleet *f, int role, uint32_t type, const void *a,
                  size_t na, const void *b, size_t nb);
/* Receives one message of type `want` from every child of `role` before
 * `deadline_ns`, calling `cb` with each payload.  Returns 0, or -1 when a
 * child did not answer in time, died, or answered something else. */
int nsb_fleet_collect(nsb_fleet *f, int role, int want, int64_t deadline_ns,
                      void (*cb)(void *arg, const nsb_buf *m), void *arg);
/* Sends EXIT, waits up to 10 s, then kills what is left.  Idempotent. */
void nsb_fleet_stop(nsb_fleet *f);

/* CPU ticks of the watched process trees plus the bench itself, and the
 * machine's busy / total jiffies, at one instant. */
typedef struct nsb_cpu {
  int64_t t_ns;
  uint64_t ticks[NSB_MAX_WATCH + 1]; /* [nwatch] = notisync-bench */
  uint64_t busy, total;
  char stat_name[16][48];
  double stat_val[16];
  int nstat;
} nsb_cpu;

/* Takes a snapshot (and runs o->stat_cmd, if any). */
void nsb_cpu_snap(const nsb_opts *o, nsb_cpu *s);
/* Writes "notisyncd 97 %, redis 30 %, ...; machine 95 % of 2 cores" for the
 * window between `a` and `b` into `out`; when `items` > 0 the stat-cmd
 * deltas are also given per item into `stats`. */
void nsb_cpu_describe(const nsb_opts *o, const nsb_cpu *a, const nsb_cpu *b,
                      double items, char *out, size_t outlen, char *stats,
                      size_t statslen);
/* Percent of one core used by watch `i` (i == nwatch: the bench). */
double nsb_cpu_pct(const nsb_opts *o, const nsb_cpu *a, const nsb_cpu *b,
                   int i);

/* VmRSS in KiB of `pid` plus all its live descendants (nginx workers,
 * PostgreSQL backends). */
uint64_t nsb_rss_tree_kb(int pid);

/* Aggregates. */
typedef struct nsb_agg_ready {
  nsb_ready sum;
  int64_t max_elapsed;
} nsb_agg_ready;

typedef struct nsb_agg_prod {
  nsb_produced sum;
  int64_t t_start, t_last_done;
  nsb_buf pairs;   /* nsb_pair, sorted by seq after nsb_agg_prod_done() */
  nsb_buf lat;     /* uint32 µs, sorted after nsb_agg_prod_done() */
  char last_error[160];
} nsb_agg_prod;

typedef struct nsb_agg_rep {
  nsb_report sum;
  nsb_buf lat;      /* uint32 µs, sorted after nsb_agg_rep_done() */
  uint32_t *permax; /* per seq counter: max over children */
  uint32_t nmax;
} nsb_agg_rep;

/* TALLY answers merged; t_complete stays 0 unless every child had all. */
typedef struct nsb_agg_tally {
  nsb_tally sum;
  nsb_buf lat;      /* uint32 µs, sorted after nsb_agg_tally_done() */
  int incomplete, children;
} nsb_agg_tally;

void nsb_agg_ready_cb(void *arg, const nsb_buf *m);
void nsb_agg_tally_cb(void *arg, const nsb_buf *m);
void nsb_agg_tally_done(nsb_agg_tally *a);
void nsb_agg_prod_cb(void *arg, const nsb_buf *m);
void nsb_agg_prod_done(nsb_agg_prod *a);
void nsb_agg_rep_cb(void *arg, const nsb_buf *m);
void nsb_agg_rep_done(nsb_agg_rep *a);
void nsb_agg_free(nsb_agg_prod *p, nsb_agg_rep *r);

/* Nearest-rank percentile `p` (0-100) of sorted uint32 samples; 0 if none. */
double nsb_pct(const nsb_buf *sorted_u32, double p);

#endif
