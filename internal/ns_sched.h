/*
 * ns_sched.h -- scheduled notifications (SPEC §9.3) and retention (§9.6);
 * see ns_sched.c.
 */
#ifndef NS_SCHED_H
#define NS_SCHED_H

#include "ns_server_int.h"

/* Starts the scheduler's timer on the server's loop. */
void ns_sched_start(ns_server *srv);
/* Closes the timer (finish_stop). */
void ns_sched_stop(ns_server *srv);
/* Called from the once-a-second cron: runs retention every few ticks. */
void ns_sched_cron(ns_server *srv);

#endif
