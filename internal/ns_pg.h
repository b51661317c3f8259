/*
 * ns_pg.h -- one asynchronous PostgreSQL connection on the libuv loop, with
 * a bounded FIFO of queries (one in flight at a time) and reconnection with
 * backoff (100 ms doubling to 5 s).
 *
 * A query that has not completed after NS_PG_QUERY_TIMEOUT_MS drops the
 * connection: every queued query then completes with res == NULL, and the
 * connection is re-established.
 */
#ifndef NS_PG_H
#define NS_PG_H

#include <libpq-fe.h>
#include <uv.h>

#define NS_PG_MAX_QUEUED 10000
#define NS_PG_QUERY_TIMEOUT_MS 10000

typedef struct ns_pg ns_pg;

/* Completion: `res` is the query's result (the first failing one for a
 * multi-statement query), or NULL when the connection failed first.  `res`
 * belongs to ns_pg and is cleared after the callback returns. */
typedef void (*ns_pg_cb)(PGresult *res, void *arg);

/* State change: up = 1 after a connection is established, 0 when lost. */
typedef void (*ns_pg_state_cb)(void *arg, int up);

/* Starts connecting with `conninfo` (a URL or key=value string).  Never
 * fails for an unreachable server: it keeps retrying. */
int ns_pg_open(ns_pg **out, uv_loop_t *loop, const char *conninfo,
               ns_pg_state_cb on_state, void *arg);

/* Closes the connection; queued queries complete with res == NULL.  Memory
 * is released when the poll/timer handles have closed; *pg is cleared. */
void ns_pg_close(ns_pg **pg);

/* Queues a parameterised query (`params` are text, copied now; nparams may
 * be 0).  With nparams < 0, `sql` is sent with the simple protocol and may
 * hold several statements.  Returns 0 (cb is called exactly once later) or
 * NS_EUNAVAIL when not connected or the queue is full (cb is not called). */
int ns_pg_query(ns_pg *pg, const char *sql, int nparams,
                const char *const *params, ns_pg_cb cb, void *arg);

/* Like ns_pg_query, but the statement is prepared once per connection
 * under `stmt` (a static string; the same name must always carry the same
 * SQL) and executed prepared afterwards: hot statements skip parse and plan. */
int ns_pg_query_prepared(ns_pg *pg, const char *stmt, const char *sql,
                         int nparams, const char *const *params, ns_pg_cb cb,
                         void *arg);

int ns_pg_up(const ns_pg *pg);

/* Queries queued or in flight on this connection (at most
 * NS_PG_MAX_QUEUED), and how many were refused at that bound. */
size_t ns_pg_load(const ns_pg *pg);
unsigned long long ns_pg_overloads(const ns_pg *pg);

/* Checks the in-flight query's age; call once a second. */
void ns_pg_tick(ns_pg *pg);

#endif
