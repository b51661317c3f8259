/*
 * ns_supervisor.c -- fork N workers, restart the ones that die (see
 * ns_supervisor.h).
 *
 * Signals are blocked and taken synchronously with sigtimedwait(), so there
 * are no handlers and no async-signal-safety questions: the loop reaps
 * children, starts due restarts, then sleeps until the next signal or the
 * next restart is due.
 */
#include "ns_supervisor.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ns_common.h"
#include "ns_log.h"

#define MAX_WORKERS 64
#define RESTART_MIN_MS 500
#define RESTART_MAX_MS 10000
#define CRASH_WINDOW_MS 10000 /* dying sooner than this after start backs off */
#define FIRST_START_MS 2000   /* an exit status this early at first start is fatal */
#define STOP_KILL_MS 9500     /* SIGKILL what still runs this long after SIGTERM */

typedef struct worker {
  pid_t pid;           /* 0 = not running */
  int64_t started_ms;  /* monotonic */
  int64_t restart_at;  /* monotonic; 0 = none due */
  int64_t backoff_ms;
  int starts;
} worker;

typedef struct sup {
  worker w[MAX_WORKERS];
  int n;
  ns_worker_fn fn;
  void *arg;
  sigset_t mask, old;
  pid_t self;
} sup;

static void describe_exit(int st, char *buf, size_t n) {
  if (WIFSIGNALED(st))
    snprintf(buf, n, "signal %d", WTERMSIG(st));
  else
    snprintf(buf, n, "status %d", WEXITSTATUS(st));
}

/* Forks worker `k` (0-based).  Returns 0, or -1 when fork failed. */
static int start_worker(sup *s, int k) {
  worker *w = &s->w[k];
  pid_t pid;
  fflush(NULL); /* nothing buffered is written twice */
  pid = fork();
  if (pid < 0) {
    ns_log(NS_LOG_ERROR, "supervisor: fork of worker %d: %s", k + 1,
           strerror(errno));
    return -1;
  }
  if (pid == 0) {
    struct sigaction dfl;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    sigaction(SIGCHLD, &dfl, NULL);
    sigprocmask(SIG_SETMASK, &s->old, NULL);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != s->self) /* the supervisor died before prctl */
      _exit(1);
    exit(s->fn(k + 1, s->arg));
  }
  w->pid = pid;
  w->started_ms = ns_mono_ms();
  w->restart_at = 0;
  w->starts++;
  ns_log(NS_LOG_INFO, "supervisor: worker %d started (pid %d)", k + 1,
         (int)pid);
  return 0;
}

static int running(const sup *s) {
  int i, n = 0;
  for (i = 0; i < s->n; i++)
    n += s->w[i].pid != 0;
  return n;
}

static void signal_all(sup *s, int sig) {
  int i;
  for (i = 0; i < s->n; i++)
    if (s->w[i].pid)
      kill(s->w[i].pid, sig);
}

/* Reaps every exited child.  Returns -1 when a worker failed its first
 * start (fatal), else 0. */
static int reap(sup *s, int stopping) {
  int st, i, fatal = 0;
  pid_t pid;
  char how[32];
  while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
    for (i = 0; i < s->n && s->w[i].pid != pid; i++)
      ;
    if (i == s->n)
      continue;
    {
      worker *w = &s->w[i];
      int64_t lived = ns_mono_ms() - w->started_ms;
      w->pid = 0;
      describe_exit(st, how, sizeof(how));
      if (stopping) {
        ns_log(NS_LOG_INFO, "supervisor: worker %d (pid %d) exited (%s)",
               i + 1, (int)pid, how);
        continue;
      }
      if (w->starts == 1 && WIFEXITED(st) && lived < FIRST_START_MS) {
        ns_log(NS_LOG_ERROR,
               "supervisor: worker %d (pid %d) failed at start-up (%s): "
               "stopping",
               i + 1, (int)pid, how);
        fatal = 1;
        continue;
      }
      w->backoff_ms = lived < CRASH_WINDOW_MS && w->backoff_ms
                          ? NS_MIN(w->backoff_ms * 2, RESTART_MAX_MS)
                          : RESTART_MIN_MS;
      w->restart_at = ns_mono_ms() + w->backoff_ms;
      ns_log(NS_LOG_WARN,
             "supervisor: worker %d (pid %d) exited (%s): restarting in "
             "%lld ms",
             i + 1, (int)pid, how, (long long)w->backoff_ms);
    }
  }
  return fatal ? -1 : 0;
}

/* Milliseconds until the next due restart, at most `cap`. */
static int64_t next_wait(const sup *s, int64_t cap) {
  int64_t now = ns_mono_ms(), t = cap;
  int i;
  for (i = 0; i < s->n; i++)
    if (!s->w[i].pid && s->w[i].restart_at)
      t = NS_MIN(t, NS_MAX(s->w[i].restart_at - now, 0));
  return t;
}

int ns_supervise(int n, ns_worker_fn fn, void *arg) {
  sup *s = ns_xcalloc(1, sizeof(*s));
  int i, rc = 0, stopping = 0;
  int64_t kill_at = 0;

  s->n = NS_MIN(NS_MAX(n, 1), MAX_WORKERS);
  s->fn = fn;
  s->arg = arg;
  s->self = getpid();
  sigemptyset(&s->mask);
  sigaddset(&s->mask, SIGCHLD);
  sigaddset(&s->mask, SIGTERM);
  sigaddset(&s->mask, SIGINT);
  sigaddset(&s->mask, SIGHUP);
  sigprocmask(SIG_BLOCK, &s->mask, &s->old);
  ns_log(NS_LOG_INFO, "supervisor: pid %d starting %d workers", (int)s->self,
         s->n);

  for (i = 0; i < s->n; i++) {
    if (start_worker(s, i) != 0) {
      rc = 1;
      stopping = 1;
      kill_at = ns_mono_ms() + STOP_KILL_MS;
      signal_all(s, SIGTERM);
      break;
    }
  }

  for (;;) {
    struct timespec ts;
    siginfo_t si;
    int64_t wait_ms;
    int sig;

    if (reap(s, stopping) != 0 && !stopping) {
      rc = 1;
      stopping = 1;
      kill_at = ns_mono_ms() + STOP_KILL_MS;
      signal_all(s, SIGTERM);
    }
    if (stopping && running(s) == 0)
      break;
    if (stopping && ns_mono_ms() >= kill_at) {
      ns_log(NS_LOG_WARN, "supervisor: %d workers still running: SIGKILL",
             running(s));
      signal_all(s, SIGKILL);
      kill_at = ns_mono_ms() + STOP_KILL_MS;
    }
    for (i = 0; !stopping && i < s->n; i++) {
      worker *w = &s->w[i];
      if (!w->pid && w->restart_at && ns_mono_ms() >= w->restart_at &&
          start_worker(s, i) != 0)
        w->restart_at = ns_mono_ms() + RESTART_MAX_MS;
    }

    wait_ms = next_wait(s, 1000);
    ts.tv_sec = (time_t)(wait_ms / 1000);
    ts.tv_nsec = (long)(wait_ms % 1000) * 1000000L;
    sig = sigtimedwait(&s->mask, &si, &ts);
    if (sig == SIGHUP) {
      ns_log_reopen();
      signal_all(s, SIGHUP);
    }
    if ((sig == SIGTERM || sig == SIGINT) && !stopping) {
      ns_log(NS_LOG_INFO, "supervisor: %s: stopping %d workers",
             sig == SIGTERM ? "SIGTERM" : "SIGINT", running(s));
      stopping = 1;
      kill_at = ns_mono_ms() + STOP_KILL_MS;
      signal_all(s, SIGTERM);
    }
  }
  ns_log(NS_LOG_INFO, "supervisor: every worker exited");
  sigprocmask(SIG_SETMASK, &s->old, NULL);
  free(s);
  return rc;
}
