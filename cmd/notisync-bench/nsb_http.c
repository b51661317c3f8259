/*
 * nsb_http.c -- HTTP/1.1 response parsing for the bench's clients (the
 * WebSocket upgrade answer and the producers' keep-alive responses), plus one
 * blocking request helper for probes (/health, is /api/v1/broadcast there?).
 * The parsers are pure; nsb_http_once() owns one socket for one request.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nsb.h"

#define HEAD_MAX 16384

/* Case-insensitive "does header line [p, p+n) start with name:"; returns the
 * value start (spaces skipped) or NULL. */
static const char *header_value(const char *p, size_t n, const char *name,
                                size_t *vlen) {
  size_t k = strlen(name);
  const char *v, *e = p + n;
  if (n <= k || strncasecmp(p, name, k) != 0 || p[k] != ':')
    return NULL;
  v = p + k + 1;
  while (v < e && (*v == ' ' || *v == '\t'))
    v++;
  while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
    e--;
  *vlen = (size_t)(e - v);
  return v;
}

/* True when the comma-separated value [v, v+n) contains token `t`. */
static int has_token(const char *v, size_t n, const char *t) {
  size_t k = strlen(t), i;
  for (i = 0; i + k <= n; i++)
    if (strncasecmp(v + i, t, k) == 0)
      return 1;
  return 0;
}

/* Applies one header line to `r`. */
static void apply_header(const char *line, size_t n, nsb_http_resp *r) {
  const char *v;
  size_t vn;
  if ((v = header_value(line, n, "content-length", &vn))) {
    char tmp[24];
    if (vn && vn < sizeof(tmp)) {
      memcpy(tmp, v, vn);
      tmp[vn] = '\0';
      r->content_length = strtol(tmp, NULL, 10);
    }
  } else if ((v = header_value(line, n, "transfer-encoding", &vn))) {
    r->chunked = has_token(v, vn, "chunked");
  } else if ((v = header_value(line, n, "connection", &vn))) {
    if (has_token(v, vn, "close"))
      r->close = 1;
    else if (has_token(v, vn, "keep-alive"))
      r->close = 0;
  } else if ((v = header_value(line, n, "sec-websocket-accept", &vn))) {
    if (vn < sizeof(r->accept)) {
      memcpy(r->accept, v, vn);
      r->accept[vn] = '\0';
    }
  }
}

long nsb_http_parse_head(const char *p, size_t n, nsb_http_resp *r) {
  const char *end = NULL, *line, *eol;
  size_t i;
  for (i = 0; i + 3 < n && i < HEAD_MAX; i++)
    if (p[i] == '\r' && p[i + 1] == '\n' && p[i + 2] == '\r' && p[i + 3] == '\n') {
      end = p + i + 4;
      break;
    }
  if (!end)
    return n >= HEAD_MAX ? -1 : 0;
  memset(r, 0, sizeof(*r));
  r->content_length = -1;
  if (end - p < 14 || memcmp(p, "HTTP/1.", 7) != 0 || p[8] != ' ' ||
      p[9] < '1' || p[9] > '5' || p[10] < '0' || p[10] > '9' || p[11] < '0' ||
      p[11] > '9')
    return -1;
  r->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
  r->close = p[7] == '0'; /* HTTP/1.0 closes unless told keep-alive */
  line = memchr(p, '\n', (size_t)(end - p));
  if (!line)
    return -1;
  line++;
  while (line < end - 2) {
    eol = memchr(line, '\n', (size_t)(end - line));
    if (!eol)
      return -1;
    apply_header(line, (size_t)(eol - line) - (eol > line && eol[-1] == '\r'),
                 r);
    line = eol + 1;
  }
  r->head_len = (size_t)(end - p);
  return (long)r->head_len;
}

/* Chunked body: size line (hex, optional extensions), data, CRLF ... a zero
 * chunk, optional trailer lines, an empty line. */
static long chunked_len(const char *p, size_t n) {
  size_t off = 0;
  int guard;
  for (guard = 0; guard < 1000000; guard++) {
    const char *eol = memchr(p + off, '\n', n - off);
    char *num_end;
    unsigned long sz;
    if (!eol)
      return -2;
    sz = strtoul(p + off, &num_end, 16);
    if (num_end == p + off)
      return -1;
    off = (size_t)(eol - p) + 1;
    if (sz == 0) {
      int lines;
      for (lines = 0; lines < 100; lines++) {
        const char *e2 = memchr(p + off, '\n', n - off);
        size_t l;
        if (!e2)
          return -2;
        l = (size_t)(e2 - (p + off));
        off = (size_t)(e2 - p) + 1;
        if (l == 0 || (l == 1 && p[off - 2] == '\r'))
          return (long)off;
      }
      return -1;
    }
    if (n - off < sz + 2)
      return -2;
    off += sz + 2;
  }
  return -1;
}

long nsb_http_body_len(const char *p, size_t n, const nsb_http_resp *r) {
  if ((r->status >= 100 && r->status < 200) || r->status == 204 ||
      r->status == 304)
    return 0;
  if (r->chunked)
    return chunked_len(p, n);
  if (r->content_length >= 0)
    return n >= (size_t)r->content_length ? r->content_length : -2;
  return -2; /* delimited by close: never complete before EOF */
}

/* Waits for `ev` on `fd` until `deadline`; 1 ready, 0 timeout, -1 error. */
static int wait_fd(int fd, short ev, int64_t deadline) {
  for (;;) {
    struct pollfd pf = {.fd = fd, .events = ev};
    int64_t left = (deadline - nsb_now_ns()) / 1000000;
    int rc;
    if (left <= 0)
      return 0;
    rc = poll(&pf, 1, (int)left);
    if (rc < 0 && errno == EINTR)
      continue;
    return rc < 0 ? -1 : rc > 0;
  }
}

/* Sends `req` then reads one response into `in`; 0 or -1. */
static int exchange(int fd, const char *req, size_t reqlen, int64_t deadline,
                    nsb_buf *in, nsb_http_resp *r, long *body_off,
                    long *body_len) {
  size_t off = 0;
  char tmp[8192];
  while (off < reqlen) {
    ssize_t w;
    if (wait_fd(fd, POLLOUT, deadline) != 1)
      return -1;
    w = send(fd, req + off, reqlen - off, MSG_NOSIGNAL);
    if (w < 0 && errno != EAGAIN && errno != EINTR)
      return -1;
    if (w > 0)
      off += (size_t)w;
  }
  for (;;) {
    ssize_t got;
    long h = nsb_http_parse_head((const char *)in->p, in->len, r);
    if (h < 0)
      return -1;
    if (h > 0) {
      long b = nsb_http_body_len((const char *)in->p + h, in->len - (size_t)h, r);
      if (b == -1)
        return -1;
      if (b >= 0) {
        *body_off = h;
        *body_len = b;
        return 0;
      }
    }
    if (wait_fd(fd, POLLIN, deadline) != 1)
      return -1;
    got = recv(fd, tmp, sizeof(tmp), 0);
    if (got == 0 && h > 0 && r->content_length < 0 && !r->chunked) {
      *body_off = h; /* delimited by close */
      *body_len = (long)(in->len - (size_t)h);
      return 0;
    }
    if (got <= 0) {
      if (got < 0 && (errno == EAGAIN || errno == EINTR))
        continue;
      return -1;
    }
    nsb_buf_add(in, tmp, (size_t)got);
  }
}

int nsb_http_once(const struct sockaddr_in *dst, const char *method,
                  const char *path, const char *token, const char *body,
                  int timeout_ms, int *status, char *respbody, size_t bodycap) {
  int64_t deadline = nsb_now_ns() + (int64_t)timeout_ms * 1000000;
  char req[8192], auth[2200] = "";
  nsb_buf in = {0};
  nsb_http_resp r;
  long boff = 0, blen = 0;
  int fd, n, rc = -1, err = 0;
  socklen_t el = sizeof(err);

  *status = 0;
  if (respbody && bodycap)
    respbody[0] = '\0';
  if (token)
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", token);
  n = snprintf(req, sizeof(req),
               "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%sContent-Type: "
               "application/json\r\nContent-Length: %zu\r\nConnection: "
               "close\r\n\r\n%s",
               method, path, auth, body ? strlen(body) : 0, body ? body : "");
  if (n < 0 || (size_t)n >= sizeof(req))
    return -1;
  fd = nsb_tcp_connect(dst, NULL);
  if (fd < 0)
    return -1;
  if (wait_fd(fd, POLLOUT, deadline) != 1 ||
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0)
    goto done;
  if (exchange(fd, req, (size_t)n, deadline, &in, &r, &boff, &blen) != 0)
    goto done;
  *status = r.status;
  if (respbody && bodycap) {
    size_t k = (size_t)blen < bodycap - 1 ? (size_t)blen : bodycap - 1;
    memcpy(respbody, in.p + boff, k);
    respbody[k] = '\0';
  }
  rc = 0;
done:
  close(fd);
  nsb_buf_free(&in);
  return rc;
}
