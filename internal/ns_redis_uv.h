/*
 * ns_redis_uv.h -- attaches a hiredis async context to a libuv loop.
 *
 * Our own adapter instead of hiredis 0.14's adapters/libuv.h, which ignores a
 * failed poll status so a refused connect never reaches the connect callback
 * (shared/STACK.md §4).  Here a poll error is reported to hiredis as both
 * readable and writable, so hiredis runs its own error path.
 */
#ifndef NS_REDIS_UV_H
#define NS_REDIS_UV_H

#include <hiredis/async.h>
#include <uv.h>

/* Returns 0, or NS_EINVAL when the context already has an adapter. */
int ns_redis_uv_attach(redisAsyncContext *ac, uv_loop_t *loop);

#endif
