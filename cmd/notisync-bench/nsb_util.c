/*
 * nsb_util.c -- the bench's small utilities: growable byte buffers,
 * allocation that aborts, the monotonic clock, randomness, base64, the
 * WebSocket accept hash, descriptor limits and non-blocking TCP connects
 * bound to a chosen loopback source address.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "nsb.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

void *nsb_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) {
    fprintf(stderr, "notisync-bench: out of memory (%zu bytes)\n", n);
    abort();
  }
  return p;
}

void *nsb_xcalloc(size_t n, size_t sz) {
  void *p = calloc(n ? n : 1, sz ? sz : 1);
  if (!p) {
    fprintf(stderr, "notisync-bench: out of memory (%zu x %zu)\n", n, sz);
    abort();
  }
  return p;
}

void *nsb_xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) {
    fprintf(stderr, "notisync-bench: out of memory (%zu bytes)\n", n);
    abort();
  }
  return q;
}

/* Appends `n` bytes, growing the capacity geometrically. */
void nsb_buf_add(nsb_buf *b, const void *p, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n)
      cap *= 2;
    b->p = nsb_xrealloc(b->p, cap);
    b->cap = cap;
  }
  if (n)
    memcpy(b->p + b->len, p, n);
  b->len += n;
}

/* Drops the first `n` bytes (all of them when n >= len). */
void nsb_buf_consume(nsb_buf *b, size_t n) {
  if (n >= b->len) {
    b->len = 0;
    return;
  }
  memmove(b->p, b->p + n, b->len - n);
  b->len -= n;
}

void nsb_buf_free(nsb_buf *b) {
  free(b->p);
  memset(b, 0, sizeof(*b));
}

int64_t nsb_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* splitmix64: fast, good enough to pick target users. */
uint64_t nsb_rand(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* getrandom() for WebSocket keys, masks and seeds; falls back to the clock
 * and pid only if the kernel call fails (it does not on Linux >= 3.17). */
void nsb_random_bytes(void *p, size_t n) {
  uint8_t *q = p;
  size_t got = 0;
  int tries;
  for (tries = 0; got < n && tries < 8; tries++) {
    ssize_t r = getrandom(q + got, n - got, 0);
    if (r > 0)
      got += (size_t)r;
  }
  if (got < n) {
    uint64_t s = (uint64_t)nsb_now_ns() ^ ((uint64_t)getpid() << 32);
    for (; got < n; got++)
      q[got] = (uint8_t)nsb_rand(&s);
  }
}

size_t nsb_b64(const uint8_t *in, size_t n, char *out, int url) {
  static const char std[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  static const char urls[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const char *a = url ? urls : std;
  size_t i, o = 0;
  for (i = 0; i + 2 < n; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    out[o++] = a[v >> 18];
    out[o++] = a[(v >> 12) & 63];
    out[o++] = a[(v >> 6) & 63];
    out[o++] = a[v & 63];
  }
  if (n - i == 1) {
    uint32_t v = (uint32_t)in[i] << 16;
    out[o++] = a[v >> 18];
    out[o++] = a[(v >> 12) & 63];
    if (!url) {
      out[o++] = '=';
      out[o++] = '=';
    }
  } else if (n - i == 2) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
    out[o++] = a[v >> 18];
    out[o++] = a[(v >> 12) & 63];
    out[o++] = a[(v >> 6) & 63];
    if (!url)
      out[o++] = '=';
  }
  out[o] = '\0';
  return o;
}

void nsb_ws_accept(const char *key, char out[29]) {
  static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  char cat[128];
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  int n = snprintf(cat, sizeof(cat), "%s%s", key, guid);
  if (n < 0 || (size_t)n >= sizeof(cat) ||
      !EVP_Digest(cat, (size_t)n, md, &mdlen, EVP_sha1(), NULL) ||
      mdlen != 20) {
    out[0] = '\0';
    return;
  }
  nsb_b64(md, 20, out, 0);
}

long nsb_raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return -1;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &rl);
    (void)getrlimit(RLIMIT_NOFILE, &rl);
  }
  return (long)rl.rlim_cur;
}

int nsb_addr(const char *host, int port, struct sockaddr_in *out) {
  memset(out, 0, sizeof(*out));
  out->sin_family = AF_INET;
  out->sin_port = htons((uint16_t)port);
  if (port <= 0 || port > 65535 || inet_pton(AF_INET, host, &out->sin_addr) != 1)
    return -1;
  return 0;
}

int nsb_tcp_connect(const struct sockaddr_in *dst, const struct in_addr *src) {
  int one = 1, rc;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (src) {
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr = *src;
    (void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one,
                     sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
      goto fail;
  }
  rc = connect(fd, (const struct sockaddr *)dst, sizeof(*dst));
  if (rc != 0 && errno != EINPROGRESS)
    goto fail;
  return fd;
fail:
  rc = -errno;
  close(fd);
  return rc;
}

int nsb_write_all(int fd, const void *p, size_t n) {
  const uint8_t *q = p;
  size_t off = 0;
  while (off < n) {
    ssize_t w = write(fd, q + off, n - off);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    off += (size_t)w;
  }
  return 0;
}

const char *nsb_fmt_us(double us, char *out, size_t outlen) {
  if (us < 1000)
    snprintf(out, outlen, "%.0f µs", us);
  else if (us < 10000)
    snprintf(out, outlen, "%.2f ms", us / 1000);
  else if (us < 1000000)
    snprintf(out, outlen, "%.1f ms", us / 1000);
  else
    snprintf(out, outlen, "%.2f s", us / 1e6);
  return out;
}
