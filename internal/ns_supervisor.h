/*
 * ns_supervisor.h -- `workers = N`: one process forks N workers and keeps
 * them running.
 *
 * Each worker is a full instance (its own loop, Redis and PostgreSQL
 * connections) serving the same port; instances join through Redis exactly
 * as instances on different hosts do.  The supervisor binds the listening
 * socket before forking (lws 4.1 sets no SO_REUSEPORT on Linux, and a bind
 * error is then reported once, at once); every worker polls that one socket
 * and accepts from it, so a connection goes to whichever worker is free
 * first, and connections waiting in the backlog survive a worker's death.
 * Beyond the socket the supervisor only forks, waits and signals, so a bug
 * in the serving code cannot take it down.
 *
 *   - a worker that exits while the supervisor is not stopping is restarted
 *     after 500 ms, doubling (at most 10 s) while it keeps dying within 10 s
 *     of its start;
 *   - a worker that fails at its very first start with an exit status (not a
 *     signal) within 2 s -- a bind or configuration error -- stops the
 *     supervisor: restarting would fail the same way;
 *   - SIGTERM / SIGINT are forwarded to every worker; the supervisor returns
 *     once all have exited (SIGKILL to those still running after 9.5 s:
 *     a worker gives up on its own after 8 s, and SPEC §8 allows 10 s);
 *   - workers get PR_SET_PDEATHSIG(SIGTERM): a supervisor killed with -9
 *     does not leave them behind.
 */
#ifndef NS_SUPERVISOR_H
#define NS_SUPERVISOR_H

/* Runs in the child: returns its exit status.  `k` is 1..n. */
typedef int (*ns_worker_fn)(int k, void *arg);

/* Supervises `n` workers (n >= 1) until told to stop.  Returns the
 * supervisor's exit status: 0 after a requested stop, 1 when a worker could
 * not start at all or fork failed. */
int ns_supervise(int n, ns_worker_fn fn, void *arg);

#endif
