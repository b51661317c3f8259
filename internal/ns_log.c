/*
 * ns_log.c -- the log sink: one line per event on stderr, text or JSON.
 * The only mutable globals of the server live here (the sink settings).
 */
#include "ns_log.h"

#include <errno.h>
#include <fcntl.h>
#include <libwebsockets.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ns_common.h"

int ns_log_min_level = NS_LOG_INFO;
static int log_json;
static char log_path[PATH_MAX]; /* empty: the inherited stderr */

static const char *level_names[] = {"debug", "info", "warn", "error"};

int ns_log_setup(const char *level, const char *format) {
  size_t i;
  int found = 0;
  for (i = 0; i < NS_ARRAY_SIZE(level_names); i++) {
    if (level && strcmp(level, level_names[i]) == 0) {
      ns_log_min_level = (int)i;
      found = 1;
    }
  }
  if (!found)
    return NS_EINVAL;
  if (format && strcmp(format, "json") == 0)
    log_json = 1;
  else if (format && strcmp(format, "text") == 0)
    log_json = 0;
  else
    return NS_EINVAL;
  return 0;
}

int ns_log_open(const char *path) {
  int fd;
  if (strlen(path) >= sizeof(log_path))
    return ENAMETOOLONG;
  fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0)
    return errno;
  fflush(stderr);
  if (dup2(fd, STDERR_FILENO) < 0) {
    int e = errno;
    close(fd);
    return e;
  }
  close(fd);
  snprintf(log_path, sizeof(log_path), "%s", path);
  return 0;
}

int ns_log_reopen(void) {
  char path[PATH_MAX];
  int rc;
  if (!log_path[0]) {
    ns_log(NS_LOG_INFO, "SIGHUP: logs go to stderr: nothing to reopen");
    return -1;
  }
  snprintf(path, sizeof(path), "%s", log_path);
  if ((rc = ns_log_open(path)) != 0)
    ns_log(NS_LOG_WARN, "SIGHUP: cannot reopen the log file: %s", strerror(rc));
  else
    ns_log(NS_LOG_INFO, "SIGHUP: log file reopened");
  return rc;
}

/* Writes `s` as a JSON string body (no quotes). */
static void json_escape(FILE *f, const char *s) {
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\')
      fprintf(f, "\\%c", ch);
    else if (ch < 0x20)
      fprintf(f, "\\u%04x", ch);
    else
      fputc(ch, f);
  }
}

void ns_log_write(ns_log_level lvl, const char *fmt, ...) {
  char msg[1024], ts[NS_TS_LEN];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  ns_format_ts(ns_now_ms(), ts);
  if (log_json) {
    fprintf(stderr, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"", ts,
            level_names[lvl]);
    json_escape(stderr, msg);
    fputs("\"}\n", stderr);
  } else {
    fprintf(stderr, "%s %-5s %s\n", ts, level_names[lvl], msg);
  }
}

static void lws_sink(int level, const char *line) {
  char buf[512];
  size_t n = strlen(line);
  /* lws lines start with its own timestamp and end with a newline. */
  const char *p = strchr(line, ']');
  p = p ? p + 2 : line;
  n = strlen(p);
  if (n >= sizeof(buf))
    n = sizeof(buf) - 1;
  memcpy(buf, p, n);
  buf[n] = '\0';
  while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
    buf[--n] = '\0';
  ns_log(level == LLL_ERR ? NS_LOG_ERROR : NS_LOG_WARN, "lws: %s", buf);
}

void ns_log_route_lws(void) {
  lws_set_log_level(LLL_ERR | LLL_WARN, lws_sink);
}
