/*
 * ns_log.h -- one logging macro.  The level is checked before the arguments
 * are evaluated.  Lines go to stderr as text or JSON (log_format); with
 * log_file, stderr is that file, reopened on SIGHUP.  Nothing that logs may
 * be handed a raw frame, a body or a token.
 */
#ifndef NS_LOG_H
#define NS_LOG_H

typedef enum { NS_LOG_DEBUG = 0, NS_LOG_INFO, NS_LOG_WARN, NS_LOG_ERROR } ns_log_level;

extern int ns_log_min_level;

/* Sets the minimum level and format from their config names.  Returns 0 or
 * NS_EINVAL for an unknown name. */
int ns_log_setup(const char *level, const char *format);

/* Makes `path` (appended to, created 0640) this process's stderr, so every
 * line (ours, libwebsockets', a sanitizer's) goes there.  Returns 0 or an
 * errno value; stderr is unchanged on failure. */
int ns_log_open(const char *path);

/* Opens the log file's path again (after logrotate moved it) and logs the
 * outcome.  Returns 0, -1 when logs go to the inherited stderr (nothing to
 * reopen), or an errno value (the old file stays in use). */
int ns_log_reopen(void);

/* Routes libwebsockets' own log lines (warnings and errors) through ns_log. */
void ns_log_route_lws(void);

void ns_log_write(ns_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define ns_log(lvl, ...)                 \
  do {                                   \
    if ((int)(lvl) >= ns_log_min_level)  \
      ns_log_write((lvl), __VA_ARGS__);  \
  } while (0)

#endif
