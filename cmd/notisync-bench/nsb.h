/*
 * nsb.h -- notisync-bench, the load generator: shared types and the
 * functions its files give each other.
 *
 * Process model: the parent only coordinates.  It forks "device" children
 * (WebSocket clients, each bound to its own loopback source address so that
 * no process needs more than ~20,000 descriptors and no source address runs
 * out of ports) and "producer" children (keep-alive HTTP clients that POST
 * notifications or broadcasts).  Each child is one single-threaded epoll
 * loop.  Parent and child talk through two pipes with length-prefixed binary
 * messages (nsb_ipc.c).  Times are CLOCK_MONOTONIC nanoseconds, which all
 * processes of one machine share: a producer writes its send time into the
 * notification body and the device that receives it computes the latency.
 *
 * Pure parts (no syscalls): base64, JWT minting, the WebSocket frame codec
 * and the HTTP response parser; `notisync-bench selftest` checks them.
 */
#ifndef NSB_H
#define NSB_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- options ------------------------------------------------------------ */

#define NSB_MAX_WATCH 8
#define NSB_MAX_PROCS 64

typedef struct nsb_watch {
  char name[32];
  int pid;
} nsb_watch;

typedef struct nsb_opts {
  const char *scenario;
  const char *host;
  int port;
  const char *secret;
  const char *prefix;       /* user-id prefix, unique per run by default */
  int users, devices;       /* latency / throughput */
  double rate;              /* per second; latency / fanout */
  double duration;          /* seconds */
  int procs;                /* receiving (device / public) client processes */
  int producer_procs;       /* producing client processes */
  int concurrency;          /* producer connections in total */
  int batch;                /* notifications per batch request */
  int conns;                /* fanout: public connections */
  int messages;             /* fanout: broadcasts */
  double grace;             /* seconds to wait for deliveries after the end */
  double settle;            /* throughput: pause after disconnecting devices */
  double connect_timeout;   /* seconds for the whole connect phase */
  int connect_parallel;     /* handshakes in flight per process */
  const char *phases;       /* throughput: "connected,disconnected" */
  const char *out;          /* markdown file to append to, or NULL */
  const char *stat_cmd;     /* shell command printing "name value" lines */
  const char *summary;      /* file to append "key value" lines to, or NULL */
  nsb_watch watch[NSB_MAX_WATCH];
  int nwatch;
  char cmdline[2048];       /* the command as run, secret redacted */

  /* idle, bcast-*, handshake, storm */
  int target;               /* NSB_T_NOTISYNC or NSB_T_NCHAN */
  int kind;                 /* NSB_K_PUBLIC or NSB_K_DEVICE */
  int users_given;          /* --users was on the command line */
  const char *sub_path;     /* nchan: subscriber WebSocket path */
  const char *pub_path;     /* nchan: publisher path */
  const char *public_path;  /* path of public connections, per target */
  int size;                 /* bcast-*: bytes of the published payload */
  int inflight;             /* bcast-*: publishes in flight */
  int queued;               /* storm: notifications queued per user;
                               sched-burst: notifications per user */
  double lead;              /* sched-burst: deliver_at this many seconds
                               after the posting starts (whole second) */
  int ws_ping;              /* count a connection open only after a JSON
                               ping was answered (the older scenarios) */
  int rx_mode;              /* NSB_RX_*: how receivers account deliveries */
  uint32_t nbits;           /* NSB_RX_BCAST: messages; NSB_RX_STORM: queued */
  uint32_t run_id;          /* random per run; bcast bodies carry it */
} nsb_opts;

enum { NSB_T_NOTISYNC = 0, NSB_T_NCHAN = 1 };
enum { NSB_K_PUBLIC = 0, NSB_K_DEVICE = 1 };
/* Receive accounting: LEGACY records every delivery for EXPECT; BCAST sets
 * bit `seq` of the connection's bitmap for every broadcast body of this run;
 * STORM sets bit `seq % queued` for every notification to the device's user
 * (seq = user * queued + k).  Both answer TALLY. */
enum { NSB_RX_LEGACY = 0, NSB_RX_BCAST, NSB_RX_STORM, NSB_RX_C100K };
/* NSB_RX_C100K (nbits 2): bit 0 = the one notification to the device's user
 * (body marker seq = user index), bit 1 = the broadcast (bench body seq 0). */

/* Maps one delivery to its bit of the connection's bitmap under `mode`:
 * `bcast` says whether it came as a broadcast body (nsb_bmark) or as a
 * `new_notification` (marker "nsb:<seq>:<t>"), `user` is the receiving
 * device's user index.  Returns 0 and sets `*bit`, 1 when it belongs to
 * another user (misrouted), 2 when it is not one this run expects. */
int nsb_rx_bit(int mode, uint32_t nbits, uint32_t user, int bcast,
               uint32_t seq, uint32_t *bit);

/* ---- small utilities (nsb_util.c) -------------------------------------- */

typedef struct nsb_buf {
  uint8_t *p;
  size_t len, cap;
} nsb_buf;

/* Appends `n` bytes; aborts on OOM (the bench's own bookkeeping). */
void nsb_buf_add(nsb_buf *b, const void *p, size_t n);
/* Drops the first `n` bytes. */
void nsb_buf_consume(nsb_buf *b, size_t n);
/* Frees the storage and zeroes `b`. */
void nsb_buf_free(nsb_buf *b);
/* malloc/calloc/realloc that abort on failure. */
void *nsb_xmalloc(size_t n);
void *nsb_xcalloc(size_t n, size_t sz);
void *nsb_xrealloc(void *p, size_t n);

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t nsb_now_ns(void);
/* Next value of a splitmix64 generator whose state is `*s`. */
uint64_t nsb_rand(uint64_t *s);
/* Fills `p` with `n` bytes from the kernel's random source. */
void nsb_random_bytes(void *p, size_t n);

/* Base64 of `n` bytes into `out` (NUL-terminated); `url` selects the
 * URL-safe alphabet without padding.  `out` needs 4*((n+2)/3)+1 bytes.
 * Returns the length written. */
size_t nsb_b64(const uint8_t *in, size_t n, char *out, int url);
/* Sec-WebSocket-Accept for `key`: base64(SHA-1(key + RFC 6455 GUID)) into
 * `out` (29 bytes). */
void nsb_ws_accept(const char *key, char out[29]);

/* Raises RLIMIT_NOFILE to the hard limit; returns the new soft limit. */
long nsb_raise_nofile(void);
/* Starts a non-blocking TCP connect to `dst`, bound to `src` when it is
 * not NULL (port chosen at connect time, IP_BIND_ADDRESS_NO_PORT).  Returns
 * the socket, or -errno. */
int nsb_tcp_connect(const struct sockaddr_in *dst, const struct in_addr *src);
/* Resolves a dotted IPv4 host and port into `out`.  Returns 0 or -1. */
int nsb_addr(const char *host, int port, struct sockaddr_in *out);
/* Writes all of `n` bytes to a blocking descriptor; 0 or -errno. */
int nsb_write_all(int fd, const void *p, size_t n);
/* Formats a duration in microseconds as "1.23 ms" / "456 µs" / "2.1 s". */
const char *nsb_fmt_us(double us, char *out, size_t outlen);

/* ---- broadcast bodies (nsb_bmark.c) ------------------------------------ */

/* Builds the body of broadcast `seq` of run `run`, sent at `t_ns`: the JSON
 * object {"nsb_run":R,"nsb_seq":S,"nsb_t":T,"pad":"xx.."} padded to `size`
 * bytes when that is larger than the object without padding; with `wrap`
 * (notisyncd) it becomes {"type":"bench","data":<object>}, so that the
 * object arrives as the broadcast's `data`.  Returns the length written
 * (NUL-terminated), or -1 when `cap` is too small. */
int nsb_bmark_body(char *out, size_t cap, int wrap, uint32_t run, uint32_t seq,
                   int64_t t_ns, int size);
/* Finds "nsb_run", "nsb_seq" and "nsb_t" (unsigned integers, any order,
 * whitespace allowed around the colon) in the `n` bytes at `p`.  Returns 0
 * and fills the outputs, or -1 when one is missing or malformed. */
int nsb_bmark_parse(const char *p, size_t n, uint32_t *run, uint32_t *seq,
                    int64_t *t_ns);
/* Reads "nsb:<seq>:<t_ns>" at the start of `s`; 0 when it is one. */
int nsb_marker_parse(const char *s, uint32_t *seq, int64_t *t_ns);

/* ---- JWT (nsb_jwt.c) ---------------------------------------------------- */

/* Mints an HS256 token {"sub","iat","exp"=iat+ttl_s,"role"?} signed with
 * `secret` into `out` (NUL-terminated).  `sub` and `role` must need no JSON
 * escaping (checked).  Returns the length, or -1 when `out` is too small
 * or a string has a character outside [A-Za-z0-9._:@-]. */
int nsb_jwt_hs256(const char *secret, const char *sub, const char *role,
                  int64_t iat, int64_t ttl_s, char *out, size_t outlen);

/* ---- WebSocket codec (nsb_ws.c) ----------------------------------------- */

enum { NSB_WS_CONT = 0, NSB_WS_TEXT = 1, NSB_WS_BIN = 2, NSB_WS_CLOSE = 8,
       NSB_WS_PING = 9, NSB_WS_PONG = 10 };

typedef struct nsb_ws_frame {
  int fin;
  int opcode;
  uint8_t *payload;   /* points into the parsed buffer, unmasked */
  uint64_t len;
} nsb_ws_frame;

/* Parses one frame at `p` (`n` bytes available).  Returns the frame's total
 * size when complete (payload unmasked in place if it was masked), 0 when
 * more bytes are needed, -1 on a protocol error (reserved bits, control frame
 * fragmented or over 125 bytes, 64-bit length with the top bit set, unknown
 * opcode), -2 when the payload exceeds `max_payload`. */
long nsb_ws_parse(uint8_t *p, size_t n, uint64_t max_payload, nsb_ws_frame *f);

/* Encodes a final client frame, masked with `mask`, into `out` (`cap`
 * bytes).  Returns its size, or 0 when `cap` is too small. */
size_t nsb_ws_encode(uint8_t *out, size_t cap, int opcode, const void *payload,
                     size_t len, uint32_t mask);

/* ---- HTTP response parser (nsb_http.c) ---------------------------------- */

typedef struct nsb_http_resp {
  int status;
  long content_length;  /* -1 when absent */
  int chunked;
  int close;            /* Connection: close, or HTTP/1.0 without keep-alive */
  char accept[64];      /* Sec-WebSocket-Accept, "" when absent */
  size_t head_len;      /* bytes of the status line and headers */
} nsb_http_resp;

/* Parses the status line and headers at `p`.  Returns the head length (> 0)
 * when complete, 0 when more bytes are needed, -1 when malformed or the
 * head exceeds 16 KiB. */
long nsb_http_parse_head(const char *p, size_t n, nsb_http_resp *r);

/* Given the body bytes after the head (`n` of them), returns how many bytes
 * the body occupies (>= 0) when it is complete, -2 when more are needed, -1
 * when malformed.  Content-Length and chunked bodies; a body delimited by close
 * is reported incomplete until the caller sees EOF. */
long nsb_http_body_len(const char *p, size_t n, const nsb_http_resp *r);

/* One blocking request (own connection, `timeout_ms` in total): fills
 * `status` and up to `bodycap`-1 bytes of body.  Returns 0 or -1 on
 * connect / timeout / parse failure. */
int nsb_http_once(const struct sockaddr_in *dst, const char *method,
                  const char *path, const char *token, const char *body,
                  int timeout_ms, int *status, char *respbody, size_t bodycap);

/* ---- parent <-> child messages (nsb_ipc.c) ------------------------------ */

enum {
  NSB_CMD_CONNECT = 1, NSB_CMD_DISCONNECT, NSB_CMD_PRODUCE, NSB_CMD_EXPECT,
  NSB_CMD_EXIT, NSB_CMD_TALLY,
  NSB_R_READY = 101, NSB_R_DONE, NSB_R_PRODUCED, NSB_R_REPORT, NSB_R_TALLY
};

/* Sends one message: type plus the concatenation of up to three parts. */
int nsb_ipc_send(int fd, uint32_t type, const void *a, size_t na,
                 const void *b, size_t nb, const void *c, size_t nc);
/* Receives one message into `payload` (replaced), waiting at most until
 * `deadline_ns`.  Returns the type, 0 on timeout, -1 on EOF or error. */
int nsb_ipc_recv(int fd, int64_t deadline_ns, nsb_buf *payload);

/* One (notification, user) pair the server accepted; user = NSB_ALL for a
 * broadcast (every public connection expects it). */
#define NSB_ALL UINT32_MAX
typedef struct nsb_pair {
  uint32_t seq;
  uint32_t user;
} nsb_pair;

/* Producer kinds.  BCAST posts nsb_bmark_body() bodies to the target's
 * publish endpoint, seq = the request counter (0..); STORM posts, for user
 * 0, 1, .. in turn, batches holding that user's `batch` notifications, seq =
 * user * batch + k. */
enum { NSB_P_SINGLE = 1, NSB_P_BATCH, NSB_P_BROADCAST, NSB_P_BCAST,
       NSB_P_STORM, NSB_P_PERUSER, NSB_P_SCHED };
/* NSB_P_PERUSER: request r is one batch with one notification for each of
 * the users r * batch .. r * batch + batch - 1 (below o->users), seq = the
 * user index (one producer process).
 * NSB_P_SCHED: request r is one batch of items r * batch .. (below
 * users * queued), item i for user i % users, seq = user * queued + i /
 * users (NSB_RX_STORM accounting), every one with the same deliver_at
 * (deliver_at_s, Unix seconds, RFC 3339 UTC); one producer process. */

typedef struct nsb_produce_args {
  int32_t kind;
  int32_t conns;
  int32_t batch;
  int32_t pad;
  double rate;         /* requests per second over all producers; 0 = max */
  int64_t duration_ns;
  int64_t max_requests; /* 0 = unbounded */
  int64_t deliver_at_s; /* NSB_P_SCHED: Unix seconds of every deliver_at */
} nsb_produce_args;

typedef struct nsb_expect_args {
  int64_t grace_ns;
  uint32_t npairs;
  uint32_t max_local;   /* per-seq maxima wanted for seq counters < this */
} nsb_expect_args;

/* Child -> parent: connect phase result. */
typedef struct nsb_ready {
  uint32_t wanted, connected, failed, retries;
  uint32_t fail_tcp, fail_timeout, fail_http, fail_close;
  uint32_t http_429, http_other_status, close_code_last, pad;
  int64_t elapsed_ns;
  uint32_t upgraded, welcomed;  /* 101s and `welcome`s in this phase */
  int64_t t_first_connect;      /* first connect() of the phase, 0 if none */
  int64_t t_last_upgrade, t_last_welcome;
} nsb_ready;

/* Parent -> child: TALLY waits until every connection has every accepted
 * message or `grace_ns` passed, then answers with an nsb_tally.  Followed by
 * the bitmap of the accepted seqs (`acc_bytes`, NSB_RX_BCAST: those whose
 * publish was answered 2xx); without one every one of the o->nbits is
 * expected. */
typedef struct nsb_tally_args {
  int64_t grace_ns;
  uint32_t acc_bytes, pad;
} nsb_tally_args;

/* Child -> parent: followed by `nlat` latencies (uint32 µs, one per unique
 * delivery, up to a cap). */
typedef struct nsb_tally {
  uint64_t conns;          /* connections accounted (open, or every device) */
  uint64_t unique, dups, foreign, misrouted;
  uint64_t conns_with_loss;  /* missing an accepted message */
  uint64_t lost_accepted;    /* accepted messages missing, summed */
  uint64_t closed_by_server;
  int64_t t_first_rx, t_last_rx;
  int64_t t_complete;      /* when the last connection got its last bit; 0
                              while some connection misses one */
  uint32_t nlat, lat_capped;
  /* NSB_RX_C100K, per bit ([0] notification, [1] broadcast), counted since
   * the connect phase: connections that have it, extra copies, the latest
   * first arrival. */
  uint64_t bit_conns[2], bit_dups[2];
  int64_t bit_t_last[2];
} nsb_tally;

/* Child -> parent: a producing phase's result; followed by `npairs` pairs and
 * `nlat` request latencies (uint32 microseconds). */
typedef struct nsb_produced {
  uint64_t requests, items_ok, items_sent, conn_errors, late, timeouts;
  uint64_t status[6];   /* 2xx(other than ok) 400 401/403 404 429/503 other */
  uint64_t st_ok;       /* requests with the success status */
  int64_t t_start, t_first_send, t_last_done;
  uint32_t npairs, nlat;
  char last_error[160];
} nsb_produced;

/* Child -> parent: delivery check; followed by `nlat` latencies (uint32 µs,
 * one per matched delivery) and `nmax` per-seq maxima (uint32 µs). */
typedef struct nsb_report {
  uint64_t frames, records, expected, matched, dups, misrouted, unknown;
  uint64_t lost, unarmed, welcome, pong, device_status, overflow, errors,
      other, closed_by_server, pings;
  int64_t t_last_rx;
  uint32_t nlat, nmax;
  uint32_t close_codes[8][2];  /* (code, count) */
} nsb_report;

/* ---- children (nsb_child.c) --------------------------------------------- */

enum { NSB_ROLE_DEVICES = 1, NSB_ROLE_PUBLIC, NSB_ROLE_PRODUCER };

typedef struct nsb_job {
  const nsb_opts *o;
  int role;
  int index;               /* 0.. : source address 127.0.0.(2+index) */
  uint32_t first, count;   /* device role: global device indices;
                              public role: connection count in `count` */
  int ctrl_fd, res_fd;     /* read commands / write results */
  uint32_t producer_id;    /* producer role: high 8 bits of every seq */
} nsb_job;

/* Runs a child until NSB_CMD_EXIT, parent EOF or its watchdog.  Returns the
 * exit status. */
int nsb_child_main(const nsb_job *job);

/* ---- parent (nsb_parent.c, nsb_scen.c) ---------------------------------- */

/* Runs the scenario named in `o->scenario`; returns the exit status. */
int nsb_scenario_run(nsb_opts *o);

/* Runs the pure self checks; returns 0 when all pass. */
int nsb_selftest(void);

/* Builds the user id of user `u` ("<prefix>u<u>") into `out`. */
void nsb_user_id(const char *prefix, uint32_t u, char *out, size_t outlen);

#endif
