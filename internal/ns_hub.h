/*
 * ns_hub.h -- who is connected to this instance: user -> device -> connection.
 * Pure bookkeeping (no I/O); connections are opaque pointers owned elsewhere.
 *
 * Invariants: at most one connection per (user, device); a user entry exists
 * exactly while it has at least one device; counts are O(1).
 */
#ifndef NS_HUB_H
#define NS_HUB_H

#include <stddef.h>

typedef struct ns_hub ns_hub;

ns_hub *ns_hub_new(void);

/* Frees the registry (not the connections it points to); clears *h. */
void ns_hub_free(ns_hub **h);

/* Makes `conn` the connection of (user, device).  When the device already had
 * one, it is returned in *old (the caller closes it with 4000) and replaced;
 * otherwise *old is NULL.  Returns the number of this user's devices on this
 * instance after the call. */
size_t ns_hub_add(ns_hub *h, const char *user, const char *device, void *conn,
                  void **old);

/* Removes (user, device) if `conn` is its current connection.  Returns 1 when
 * removed, 0 when `conn` was not (or no longer) registered, e.g. replaced. */
int ns_hub_remove(ns_hub *h, const char *user, const char *device, void *conn);

void *ns_hub_get(const ns_hub *h, const char *user, const char *device);

/* Devices of `user` connected here. */
size_t ns_hub_user_devices(const ns_hub *h, const char *user);

size_t ns_hub_user_count(const ns_hub *h);   /* users with >= 1 device */
size_t ns_hub_conn_count(const ns_hub *h);   /* registered connections */

typedef void (*ns_hub_fn)(void *conn, void *arg);

/* Calls fn for each connection of `user` (every user when user is NULL).
 * fn must not add or remove entries. */
void ns_hub_each(const ns_hub *h, const char *user, ns_hub_fn fn, void *arg);

#endif
