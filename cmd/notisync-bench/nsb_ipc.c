/*
 * nsb_ipc.c -- parent <-> child messages over pipes: a 16-byte header
 * {type, 0, payload length} and the payload.  Writers block (a message is
 * written whole); readers wait with a deadline, so a hung peer cannot hang
 * the other side forever.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "nsb.h"

#define IPC_MAX (512u << 20) /* no message is near this; guards a bad length */

typedef struct ipc_hdr {
  uint32_t type;
  uint32_t zero;
  uint64_t len;
} ipc_hdr;

int nsb_ipc_send(int fd, uint32_t type, const void *a, size_t na,
                 const void *b, size_t nb, const void *c, size_t nc) {
  ipc_hdr h = {.type = type, .zero = 0, .len = na + nb + nc};
  int rc;
  if ((rc = nsb_write_all(fd, &h, sizeof(h))) != 0)
    return rc;
  if (na && (rc = nsb_write_all(fd, a, na)) != 0)
    return rc;
  if (nb && (rc = nsb_write_all(fd, b, nb)) != 0)
    return rc;
  if (nc && (rc = nsb_write_all(fd, c, nc)) != 0)
    return rc;
  return 0;
}

/* Reads exactly `n` bytes before `deadline_ns`; 1 done, 0 timeout, -1 EOF. */
static int read_exact(int fd, void *p, size_t n, int64_t deadline_ns) {
  uint8_t *q = p;
  size_t off = 0;
  while (off < n) {
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    int64_t left = (deadline_ns - nsb_now_ns()) / 1000000;
    ssize_t r;
    int pr;
    if (left < 0)
      left = 0;
    pr = poll(&pf, 1, (int)(left > 3600000 ? 3600000 : left));
    if (pr < 0 && errno == EINTR)
      continue;
    if (pr < 0)
      return -1;
    if (pr == 0) {
      if (nsb_now_ns() >= deadline_ns)
        return 0;
      continue;
    }
    r = read(fd, q + off, n - off);
    if (r < 0 && (errno == EINTR || errno == EAGAIN))
      continue;
    if (r <= 0)
      return -1;
    off += (size_t)r;
  }
  return 1;
}

int nsb_ipc_recv(int fd, int64_t deadline_ns, nsb_buf *payload) {
  ipc_hdr h;
  int rc = read_exact(fd, &h, sizeof(h), deadline_ns);
  if (rc <= 0)
    return rc;
  if (h.len > IPC_MAX || h.zero != 0 || h.type == 0)
    return -1;
  payload->len = 0;
  if (h.len > payload->cap) {
    payload->p = nsb_xrealloc(payload->p, (size_t)h.len);
    payload->cap = (size_t)h.len;
  }
  /* The header came: the rest follows at once; allow 30 s more for it. */
  if (h.len &&
      read_exact(fd, payload->p, (size_t)h.len, nsb_now_ns() + 30000000000LL) != 1)
    return -1;
  payload->len = (size_t)h.len;
  return (int)h.type;
}
