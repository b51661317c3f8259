/*
 * ns_server.h -- one NotiSync instance: the libuv loop driving
 * libwebsockets (WebSocket + REST on one port), Redis and PostgreSQL.
 */
#ifndef NS_SERVER_H
#define NS_SERVER_H

#include "ns_config.h"

typedef struct ns_server ns_server;

/* Builds the instance from a validated config (which must outlive it):
 * binds the listener (or, with `listen_fd` >= 0, serves the connections it
 * accepts from that already listening socket, shared with other workers), starts connecting to Redis and PostgreSQL (failures
 * there are retried, not fatal).  Returns 0, or an NS_E* error with a
 * message in `err` (bad key file, port in use, ...). */
int ns_server_new(ns_server **out, const ns_config *cfg, int listen_fd,
                  char *err, size_t errlen);

/* Opens a non-blocking listening TCP socket on `listen` ("host:port") for
 * the workers to share.  Returns the fd, or -1 with a message in `err`. */
int ns_server_listen_socket(const char *addr, char *err, size_t errlen);

/* Runs the loop until SIGTERM/SIGINT has closed everything.  Returns 0. */
int ns_server_run(ns_server *srv);

void ns_server_free(ns_server **srv);

#endif
