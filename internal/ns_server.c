/*
 * ns_server.c -- builds an instance and runs its one libuv loop: lws (as a
 * foreign-loop user), Redis, PostgreSQL, the once-a-second cron and the
 * signal handlers, and the graceful shutdown (SPEC §8).
 *
 * Shutdown order (shared/STACK.md §1): close every WebSocket with 1001 and
 * let the disconnect path write presence; wait (bounded) until no socket and
 * no presence write is left; then lws_context_destroy, Redis, PostgreSQL,
 * our own handles; after uv_run returns, lws_context_destroy again.
 */
#define _GNU_SOURCE /* accept4 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "ns_comments.h"
#include "ns_log.h"
#include "ns_migrate.h"
#include "ns_sched.h"
#include "ns_queue.h"
#include "ns_server_int.h"

#define CRON_MS 1000
#define STOP_POLL_MS 50
#define STOP_DEADLINE_MS 8000
/* See the protocols table. */
#define NS_WS_RX_BUFFER 256
#define NS_WS_TX_PACKET 65536

/* Reap other instances only after being connected to Redis this long: after
 * an outage every instance's liveness key may have expired, and each needs
 * time (reconnect backoff <= 5 s) to refresh its own before it is judged. */
#define REAP_AFTER_UP_MS 20000
#define ACCEPT_GRACE_MS 5000  /* a worker accepts degraded after this */

int ns__server_redis_up(const ns_server *srv) { return ns_redis_up(srv->redis); }

static int is_http_reason(enum lws_callback_reasons r) {
  switch (r) {
  case LWS_CALLBACK_HTTP:
  case LWS_CALLBACK_HTTP_BODY:
  case LWS_CALLBACK_HTTP_BODY_COMPLETION:
  case LWS_CALLBACK_HTTP_WRITEABLE:
  case LWS_CALLBACK_CLOSED_HTTP:
  case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
    return 1;
  default:
    return 0;
  }
}

static int proto_callback(struct lws *wsi, enum lws_callback_reasons reason,
                          void *user, void *in, size_t len) {
  if (is_http_reason(reason))
    return ns__http_callback(wsi, reason, user, in, len);
  if (user || reason == LWS_CALLBACK_HTTP_CONFIRM_UPGRADE)
    return ns__ws_callback(wsi, reason, user, in, len);
  return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static const struct lws_protocols protocols[] = {
    /* rx_buffer_size: lws gives each WebSocket a receive buffer of this
     * size for its whole life; a larger message arrives in pieces that
     * ns_ws assembles (bounded by max_message_bytes).  tx_packet_size: the
     * most lws hands the kernel per send, so a frame is not cut at 256. */
    {"notisync", proto_callback, sizeof(ns_session), NS_WS_RX_BUFFER, 0, NULL,
     NS_WS_TX_PACKET},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* ---- Redis and PostgreSQL state ---- */

static void on_redis_message(void *arg, const char *ch, size_t chlen,
                             const char *payload, size_t len) {
  ns_bus_dispatch(((ns_server *)arg)->bus, ch, chlen, payload, len);
}

static void on_acceptable(uv_poll_t *p, int status, int events);

/* A worker of `workers = N` takes connections from the shared socket only
 * once Redis and PostgreSQL are both up, or ACCEPT_GRACE_MS after start
 * (then it serves degraded, as a single process does).  Until then the
 * other workers accept everything: a worker restarted under load would
 * otherwise answer its share of connects 1011 for the ~100 ms its
 * backends take. */
static void maybe_accept(ns_server *srv) {
  if (srv->listen_fd < 0 || srv->accepting || srv->stopping)
    return;
  if (!(ns__server_redis_up(srv) && srv->pg_ready > 0) &&
      ns_now_ms() - srv->start_ms < ACCEPT_GRACE_MS)
    return;
  srv->accepting = 1;
  uv_poll_start(&srv->accept_poll, UV_READABLE, on_acceptable);
}

/* Cluster mode: a user channel Redis dropped on its own (its slot moved)
 * is still wanted while a device of that user is connected here. */
static int on_redis_wanted(void *arg, const char *ch, size_t len) {
  return ns_bus_channel_wanted(arg, ch, len);
}

static void on_redis_state(void *arg, int up, int sub_reconnected) {
  ns_server *srv = arg;
  int was_up = srv->redis_up_since_ms != 0;
  ns_comments_on_redis_state(srv, up, sub_reconnected); /* before the bus's */
  if (sub_reconnected) {
    if (srv->redis_seen_up)
      ns_metrics_inc(&srv->metrics, NS_M_CLUSTER, "subscriber_reconnects");
    ns_bus_resubscribe(srv->bus);
  }
  if (up && !srv->redis_seen_up) {
    srv->redis_seen_up = 1;
    ns_liveness_reap_own_past(srv);
  }
  if (up && !srv->redis_up_since_ms)
    srv->redis_up_since_ms = ns_mono_ms();
  else if (!up)
    srv->redis_up_since_ms = 0;
  if (up)
    ns_liveness_heartbeat(srv);
  if (up != was_up) /* transitions only: no "down" before the first "up" */
    ns_log(NS_LOG_INFO, "redis %s", up ? "up" : "down");
  maybe_accept(srv);
}

typedef struct pg_slot pg_slot;

ns_pg *ns__pg(ns_server *srv) {
  ns_pg *best = NULL;
  int i;
  for (i = 0; i < NS_PG_POOL; i++)
    if (srv->pg_conn_ready[i] &&
        (!best || ns_pg_load(srv->pg[i]) < ns_pg_load(best)))
      best = srv->pg[i];
  return best;
}

static void on_migrated(PGresult *res, void *arg) {
  pg_slot *slot = arg;
  ns_server *srv = slot->srv;
  if (res && PQresultStatus(res) != PGRES_FATAL_ERROR) {
    if (!srv->pg_conn_ready[slot->idx]) {
      srv->pg_conn_ready[slot->idx] = 1;
      if (srv->pg_ready++ == 0)
        ns_log(NS_LOG_INFO, "postgres up (migrations applied)");
      maybe_accept(srv);
    }
  } else {
    ns_log(NS_LOG_ERROR, "migrations failed: %s",
           res ? PQresultErrorMessage(res) : "connection lost");
  }
}

static void on_pg_state(void *arg, int up) {
  pg_slot *slot = arg;
  ns_server *srv = slot->srv;
  if (srv->pg_conn_ready[slot->idx]) {
    srv->pg_conn_ready[slot->idx] = 0;
    srv->pg_ready--;
  }
  if (up) {
    /* Each connection checks the schema; after the first it is a no-op. */
    char *sql = ns_migrate_script();
    ns_pg_query(srv->pg[slot->idx], sql, -1, NULL, on_migrated, slot);
    free(sql);
  } else if (srv->pg_ready == 0) {
    ns_log(NS_LOG_WARN, "postgres down");
  }
}

/* ---- cron: liveness checks, instance heartbeat, token expiry ---- */

/* One pass over the connections: heartbeat (ping, idle drop) and token
 * expiry.  A sweep a second costs ~1 ms per 100,000 connections, where one
 * lws timer per connection cost an O(n) sorted insert at every connect. */
static void sweep_conns(ns_server *srv) {
  int64_t now = ns_now_ms() / 1000, mono = ns_mono_ms();
  ns_conn *c;
  for (c = srv->conns; c; c = c->next) {
    if (!c->is_public && c->state == NS_CONN_READY &&
        c->who.exp + NS_AUTH_LEEWAY_S < now)
      ns_conn_close(c, 1008, "token expired");
    else
      ns_conn_heartbeat(c, mono);
  }
}

static void on_cron(uv_timer_t *t) {
  ns_server *srv = t->data;
  int i;
  unsigned long long lost;
  ns_redis_tick(srv->redis);
  lost = ns_redis_canary_losses(srv->redis);
  if (lost > srv->canary_losses_seen) {
    ns_metrics_add(&srv->metrics, NS_M_CLUSTER, "canary_losses",
                   lost - srv->canary_losses_seen);
    srv->canary_losses_seen = lost;
  }
  for (i = 0; i < NS_PG_POOL; i++)
    ns_pg_tick(srv->pg[i]);
  if (++srv->cron_ticks % 5 == 0)
    ns_liveness_heartbeat(srv);
  else if (srv->cron_ticks % 5 == 2 && ns__server_redis_up(srv) &&
           ns_mono_ms() - srv->redis_up_since_ms > REAP_AFTER_UP_MS)
    ns_liveness_reap(srv);
  ns_sched_cron(srv);
  maybe_accept(srv);
  sweep_conns(srv);
}

/* ---- shutdown ---- */

static void on_handle_closed(uv_handle_t *h) { (void)h; }

static void finish_stop(ns_server *srv) {
  ns_log(NS_LOG_INFO, "stopping: closing backends");
  uv_timer_stop(&srv->stop_timer);
  if (srv->ctx)
    lws_context_destroy(srv->ctx);
  ns_redis_close(&srv->redis);
  {
    int i;
    for (i = 0; i < NS_PG_POOL; i++)
      ns_pg_close(&srv->pg[i]);
  }
  ns_comments_flush(srv); /* releases what a last read left */
  uv_close((uv_handle_t *)&srv->bcast_check, on_handle_closed);
  uv_close((uv_handle_t *)&srv->cron, on_handle_closed);
  ns_sched_stop(srv);
  uv_close((uv_handle_t *)&srv->stop_timer, on_handle_closed);
  /* Past this point the process only exits (closing handles, freeing):
   * a repeated SIGTERM / SIGINT, as an orchestrator sends, must not turn
   * the clean exit into a death by signal. */
  signal(SIGTERM, SIG_IGN);
  signal(SIGINT, SIG_IGN);
  uv_close((uv_handle_t *)&srv->sig_term, on_handle_closed);
  uv_close((uv_handle_t *)&srv->sig_int, on_handle_closed);
  uv_close((uv_handle_t *)&srv->sig_hup, on_handle_closed);
}

static void on_stop_poll(uv_timer_t *t) {
  ns_server *srv = t->data;
  int64_t waited = ns_mono_ms() - srv->stop_started_ms;
  /* WebSockets closed and REST requests received before the signal
   * answered (a producer's POST commits and queues, or gets its 503). */
  if ((srv->nconns || srv->http_reqs) && waited < STOP_DEADLINE_MS)
    return;
  if (!srv->retired) {
    srv->retired = 1;
    ns_presence_flush_pending(srv);
    ns_liveness_retire(srv);
  }
  if (srv->pending_ops > 0 && waited < STOP_DEADLINE_MS)
    return;
  finish_stop(srv);
}

static void begin_stop(ns_server *srv) {
  ns_conn *c;
  if (srv->stopping)
    return;
  srv->stopping = 1;
  srv->stop_started_ms = ns_mono_ms();
  if (srv->listen_fd >= 0)
    uv_close((uv_handle_t *)&srv->accept_poll, on_handle_closed);
  ns_log(NS_LOG_INFO, "stopping: closing %zu connections with 1001, "
         "finishing %zu requests", srv->nconns, srv->http_reqs);
  for (c = srv->conns; c; c = c->next)
    ns_conn_close(c, 1001, "server shutting down");
  uv_timer_start(&srv->stop_timer, on_stop_poll, 0, STOP_POLL_MS);
}

static void on_signal(uv_signal_t *h, int signum) {
  ns_server *srv = h->data;
  if (signum == SIGHUP) {
    ns_log_reopen();
    return;
  }
  begin_stop(srv);
}

/* ---- construction ---- */

static int read_file(const char *path, char **out) {
  FILE *f = fopen(path, "rb");
  long n;
  char *buf;
  if (!f)
    return NS_EIO;
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fseek(f, 0, SEEK_SET);
  if (n < 0 || n > 1 << 20) {
    fclose(f);
    return NS_EIO;
  }
  buf = ns_xmalloc((size_t)n + 1);
  if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
    fclose(f);
    free(buf);
    return NS_EIO;
  }
  buf[n] = '\0';
  fclose(f);
  *out = buf;
  return 0;
}

static void make_instance_id(ns_server *srv) {
  unsigned char rnd[6];
  int fd;
  size_t i;
  if (srv->cfg->instance_id && *srv->cfg->instance_id) {
    snprintf(srv->instance_id, sizeof(srv->instance_id), "%s",
             srv->cfg->instance_id);
    return;
  }
  fd = open("/dev/urandom", O_RDONLY);
  if (fd < 0 || read(fd, rnd, sizeof(rnd)) != (ssize_t)sizeof(rnd))
    memset(rnd, 0x5a, sizeof(rnd));
  if (fd >= 0)
    close(fd);
  for (i = 0; i < sizeof(rnd); i++)
    snprintf(srv->instance_id + 2 * i, 3, "%02x", rnd[i]);
}

static int open_auth(ns_server *srv, char *err, size_t errlen) {
  ns_auth_opts o;
  char *pem = NULL;
  int rc;
  memset(&o, 0, sizeof(o));
  if (srv->cfg->jwt_public_key_file && *srv->cfg->jwt_public_key_file) {
    if (read_file(srv->cfg->jwt_public_key_file, &pem) != 0) {
      snprintf(err, errlen, "jwt_public_key_file: cannot read '%s'",
               srv->cfg->jwt_public_key_file);
      return NS_EINVAL;
    }
    o.public_key_pem = pem;
  } else {
    o.secret = srv->cfg->jwt_secret;
  }
  o.issuer = srv->cfg->jwt_issuer;
  o.audience = srv->cfg->jwt_audience;
  rc = ns_auth_open(&srv->auth, &o, err, errlen);
  free(pem);
  return rc;
}

static int split_listen(const char *listen, char *host, size_t hlen,
                        int *port) {
  const char *colon = strrchr(listen, ':');
  char *end;
  long p;
  if (!colon || (size_t)(colon - listen) >= hlen)
    return NS_EINVAL;
  memcpy(host, listen, (size_t)(colon - listen));
  host[colon - listen] = '\0';
  p = strtol(colon + 1, &end, 10);
  if (*end || p < 0 || p > 65535)
    return NS_EINVAL;
  *port = (int)p;
  return 0;
}

/* ---- a listening socket shared by the workers of `workers = N` ---- */

#define ACCEPT_BATCH 64

/* The shared socket is readable: every worker wakes, the ones that get a
 * connection hand it to lws as if its own listener had accepted it. */
static void on_acceptable(uv_poll_t *p, int status, int events) {
  ns_server *srv = p->data;
  int i, fd, one = 1;
  (void)events;
  if (status < 0 || srv->stopping)
    return;
  for (i = 0; i < ACCEPT_BATCH; i++) {
    fd = accept4(srv->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        ns_log(NS_LOG_WARN, "accept: %s", strerror(errno));
      return;
    }
    /* lws sets this on sockets its own listener accepts, not on adopted
     * ones: without it a reply written in two parts waits for the peer's
     * delayed ACK (40 ms per request, measured). */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (!lws_adopt_socket_vhost(srv->vhost, fd)) /* closes fd on failure */
      ns_log(NS_LOG_WARN, "accept: lws could not adopt a connection");
  }
}

int ns_server_listen_socket(const char *addr, char *err, size_t errlen) {
  struct addrinfo hints, *ai = NULL;
  char host[128], port_s[8];
  int port, fd, one = 1, rc;
  if (split_listen(addr, host, sizeof(host), &port) != 0) {
    snprintf(err, errlen, "bad value for key 'listen': expected host:port");
    return -1;
  }
  snprintf(port_s, sizeof(port_s), "%d", port);
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  rc = getaddrinfo(*host && strcmp(host, "0.0.0.0") != 0 ? host : NULL,
                   port_s, &hints, &ai);
  if (rc != 0 || !ai) {
    snprintf(err, errlen, "listen %s: %s", addr, gai_strerror(rc));
    return -1;
  }
  fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
      bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, SOMAXCONN)) {
    snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(errno));
    if (fd >= 0)
      close(fd);
    fd = -1;
  }
  freeaddrinfo(ai);
  return fd;
}

/* A passphrase prompt would block a daemon on its terminal: refuse. */
static int tls_no_passphrase(char *buf, int size, int rwflag, void *u) {
  (void)buf; (void)size; (void)rwflag; (void)u;
  return 0;
}

/* The last OpenSSL reason (e.g. "no start line"), then an empty queue. */
static const char *tls_why(void) {
  const char *why = ERR_reason_error_string(ERR_peek_last_error());
  ERR_clear_error();
  return why ? why : "no PEM data";
}

/* Checks tls_cert / tls_key before lws sees them (lws reports a bad file
 * only as "cannot listen"): each readable and PEM, the key unencrypted and
 * matching the certificate.  An expired certificate is only a warning. */
static int check_tls_files(const ns_config *cfg, char *err, size_t errlen) {
  const char *what = NULL;
  X509 *cert = NULL;
  EVP_PKEY *key = NULL;
  FILE *f;
  ERR_clear_error();
  if (!(f = fopen(cfg->tls_cert, "r"))) {
    snprintf(err, errlen, "bad value for key 'tls_cert': cannot open '%s': %s",
             cfg->tls_cert, strerror(errno));
    return NS_EINVAL;
  }
  cert = PEM_read_X509(f, NULL, tls_no_passphrase, NULL);
  fclose(f);
  if (!cert) {
    snprintf(err, errlen, "bad value for key 'tls_cert': '%s' holds no PEM "
             "certificate (%s)", cfg->tls_cert, tls_why());
    return NS_EINVAL;
  }
  if (!(f = fopen(cfg->tls_key, "r"))) {
    snprintf(err, errlen, "bad value for key 'tls_key': cannot open '%s': %s",
             cfg->tls_key, strerror(errno));
    X509_free(cert);
    return NS_EINVAL;
  }
  key = PEM_read_PrivateKey(f, NULL, tls_no_passphrase, NULL);
  fclose(f);
  if (!key)
    what = "holds no unencrypted PEM private key";
  else if (X509_check_private_key(cert, key) != 1)
    what = "does not match the certificate of 'tls_cert'";
  if (what)
    snprintf(err, errlen, "bad value for key 'tls_key': '%s' %s (%s)",
             cfg->tls_key, what, tls_why());
  else if (X509_cmp_current_time(X509_get0_notAfter(cert)) < 0)
    ns_log(NS_LOG_WARN, "tls_cert '%s' has expired: clients will refuse it",
           cfg->tls_cert);
  ERR_clear_error();
  EVP_PKEY_free(key);
  X509_free(cert);
  return what ? NS_EINVAL : 0;
}

static int open_lws(ns_server *srv, char *err, size_t errlen) {
  struct lws_context_creation_info info;
  void *foreign[1];
  char host[128];
  int port;
  if (split_listen(srv->cfg->listen, host, sizeof(host), &port) != 0) {
    snprintf(err, errlen, "bad value for key 'listen': expected host:port");
    return NS_EINVAL;
  }
  foreign[0] = &srv->loop;
  memset(&info, 0, sizeof(info));
  info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_EXPLICIT_VHOSTS |
                 LWS_SERVER_OPTION_UV_NO_SIGSEGV_SIGFPE_SPIN;
  info.foreign_loops = foreign;
  info.pcontext = &srv->ctx;
  info.user = srv;
  info.port = srv->listen_fd >= 0 ? CONTEXT_PORT_NO_LISTEN_SERVER : port;
  info.iface = strcmp(host, "0.0.0.0") == 0 || !*host ? NULL : host;
  info.protocols = protocols;
  info.max_http_header_data = NS_TOKEN_MAX + 2048;
  info.timeout_secs = 20;
  /* No lws validity timers: the heartbeat is the cron's sweep
   * (ns_conn_heartbeat).  lws keeps its timers in one sorted list, and an
   * insert walks it: with a timer per connection every connect cost O(n). */
  srv->retry_policy.secs_since_valid_ping = 0;
  srv->retry_policy.secs_since_valid_hangup = 0;
  info.retry_and_idle_policy = &srv->retry_policy;
  if (srv->cfg->tls_cert && *srv->cfg->tls_cert) {
    int rc = check_tls_files(srv->cfg, err, errlen);
    if (rc != 0)
      return rc;
    info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    /* No h2: WebSocket frames are written straight to the socket (never
     * valid on an h2 stream), and a WebSocket over h2 (RFC 8441, which
     * browsers use on an h2 connection) reached on_established without its
     * session's auth and crashed the server. */
    info.alpn = "http/1.1";
    info.ssl_cert_filepath = srv->cfg->tls_cert;
    info.ssl_private_key_filepath = srv->cfg->tls_key;
  }
  srv->ctx = lws_create_context(&info);
  if (!srv->ctx) {
    snprintf(err, errlen, "cannot create the lws context (is the "
                          "libwebsockets-evlib-uv package installed?)");
    return NS_EIO;
  }
  srv->vhost = lws_create_vhost(srv->ctx, &info);
  if (!srv->vhost) {
    snprintf(err, errlen, "cannot listen on %s", srv->cfg->listen);
    return NS_EIO;
  }
  if (srv->listen_fd >= 0) {
    uv_poll_init(&srv->loop, &srv->accept_poll, srv->listen_fd);
    srv->accept_poll.data = srv;
    /* started by maybe_accept */
  }
  return 0;
}

int ns_server_new(ns_server **out, const ns_config *cfg, int listen_fd,
                  char *err, size_t errlen) {
  ns_server *srv;
  ns_redis_handlers rh;
  char canary[160];
  int rc, i, cluster;
  cluster = cfg->redis_mode && strcmp(cfg->redis_mode, "cluster") == 0;
  if (ns_redis_url_valid(cfg->redis_url, cluster) != 0) {
    snprintf(err, errlen, "bad value for key 'redis_url': expected %s",
             cluster ? "redis://host[:port][,host[:port]...][/0] (seed nodes "
                       "of the cluster)"
                     : "redis://host[:port][/db]");
    return NS_EINVAL;
  }
  srv = ns_xcalloc(1, sizeof(*srv));
  srv->cfg = cfg;
  srv->listen_fd = listen_fd;
  srv->start_ms = ns_now_ms();
  snprintf(srv->prefix, sizeof(srv->prefix), "%s",
           cfg->redis_prefix ? cfg->redis_prefix : "");
  make_instance_id(srv);
  ns_metrics_init(&srv->metrics);
  srv->hub = ns_hub_new();
  /* the bus first, then the modules that consume its messages */
  srv->bus = ns_bus_new(srv);
  ns_presence_bus_register(srv->bus);
  ns_queue_bus_register(srv->bus);
  ns_comments_bus_register(srv->bus);
  srv->iplimit = ns_iplimit_new(NS_IPLIMIT_ENTRIES, (double)cfg->handshake_rate_per_ip,
                                (double)cfg->handshake_burst_per_ip);
  uv_loop_init(&srv->loop);
  if ((rc = open_auth(srv, err, errlen)) != 0)
    goto fail_auth;
  ns_log_route_lws();
  if ((rc = open_lws(srv, err, errlen)) != 0)
    goto fail_lws;
  memset(&rh, 0, sizeof(rh));
  rh.on_message = on_redis_message;
  rh.on_state = on_redis_state;
  rh.wanted = on_redis_wanted;
  rh.cluster = cluster;
  rh.arg = srv;
  ns__key(srv, canary, sizeof(canary), "canary:%s", srv->instance_id);
  rh.canary_channel = canary; /* copied by ns_redis_open */
  if ((rc = ns_redis_open(&srv->redis, &srv->loop, cfg->redis_url, &rh)) != 0) {
    snprintf(err, errlen, "bad value for key 'redis_url': expected "
                          "redis://host[:port][/db]%s",
             cluster ? " or a list of seed nodes" : "");
    goto fail_redis;
  }
  for (i = 0; i < NS_PG_POOL; i++) {
    srv->pg_slots[i].srv = srv;
    srv->pg_slots[i].idx = i;
    ns_pg_open(&srv->pg[i], &srv->loop, cfg->database_url, on_pg_state,
               &srv->pg_slots[i]);
  }
  uv_check_init(&srv->loop, &srv->bcast_check);
  srv->bcast_check.data = srv;
  uv_timer_init(&srv->loop, &srv->cron);
  srv->cron.data = srv;
  uv_timer_start(&srv->cron, on_cron, CRON_MS, CRON_MS);
  ns_sched_start(srv);
  uv_timer_init(&srv->loop, &srv->stop_timer);
  srv->stop_timer.data = srv;
  uv_signal_init(&srv->loop, &srv->sig_term);
  uv_signal_init(&srv->loop, &srv->sig_int);
  uv_signal_init(&srv->loop, &srv->sig_hup);
  srv->sig_term.data = srv->sig_int.data = srv->sig_hup.data = srv;
  uv_signal_start(&srv->sig_term, on_signal, SIGTERM);
  uv_signal_start(&srv->sig_int, on_signal, SIGINT);
  uv_signal_start(&srv->sig_hup, on_signal, SIGHUP);
  ns_log(NS_LOG_INFO, "notisyncd %s instance %s listening on %s", NS_VERSION,
         srv->instance_id, cfg->listen);
  *out = srv;
  return 0;

fail_redis:
  if (srv->listen_fd >= 0)
    uv_close((uv_handle_t *)&srv->accept_poll, on_handle_closed);
fail_lws:
  if (srv->ctx) {
    /* With a foreign loop the destroy finishes on the loop (STACK.md §1). */
    lws_context_destroy(srv->ctx);
    uv_run(&srv->loop, UV_RUN_DEFAULT);
    if (srv->ctx)
      lws_context_destroy(srv->ctx);
  }
  ns_auth_free(&srv->auth);
fail_auth:
  uv_loop_close(&srv->loop);
  ns_bus_free(&srv->bus);
  ns_hub_free(&srv->hub);
  ns_iplimit_free(&srv->iplimit);
  free(srv);
  return rc;
}

int ns_server_run(ns_server *srv) {
  uv_run(&srv->loop, UV_RUN_DEFAULT);
  if (srv->ctx)
    lws_context_destroy(srv->ctx);
  ns_log(NS_LOG_INFO, "stopped");
  return 0;
}

void ns_server_free(ns_server **sp) {
  ns_server *srv = *sp;
  *sp = NULL;
  if (!srv)
    return;
  uv_run(&srv->loop, UV_RUN_NOWAIT);
  if (uv_loop_close(&srv->loop) != 0)
    ns_log(NS_LOG_WARN, "loop closed with handles still open");
  ns_auth_free(&srv->auth);
  ns_comments_free(srv);
  ns_bus_free(&srv->bus);
  ns_hub_free(&srv->hub);
  ns_iplimit_free(&srv->iplimit);
  free(srv);
}
