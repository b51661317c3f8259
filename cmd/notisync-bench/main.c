/*
 * notisync-bench -- load generator for notisyncd.  argv -> options with
 * per-scenario defaults -> nsb_scenario_run().  See nsb.h for the process
 * model and docs/benchmarks.md for the figures and how to redo them.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nsb.h"

static void usage(FILE *f) {
  fprintf(f,
    "usage: notisync-bench SCENARIO [options]\n"
    "scenarios:\n"
    "  latency            U users x D devices connected; single POSTs at a fixed\n"
    "                     rate to random users; producer-send -> device-receive\n"
    "                     latency of every delivery, losses\n"
    "  throughput-single  N keep-alive producers posting single notifications as\n"
    "                     fast as answered (devices connected, then disconnected)\n"
    "  throughput-batch   the same with POST /api/v1/notifications/batch\n"
    "  fanout             C public connections (/ws/public), M broadcasts\n"
    "  idle               C connections held open; RSS of each --watch process\n"
    "                     before and 3 s after all are open (delta per conn)\n"
    "  bcast-throughput   C public subscribers; M broadcasts posted as fast as\n"
    "                     answered, at most --inflight in flight; deliveries/s,\n"
    "                     loss and duplicates per connection (bitmaps)\n"
    "  bcast-latency      C public subscribers; M broadcasts at --rate R/s;\n"
    "                     publish -> receive latency of every delivery\n"
    "  handshake          N connections, --connect-parallel K handshakes in\n"
    "                     flight per process; upgrades/s (and welcomes/s)\n"
    "  storm              U x D devices connect, disconnect; Q notifications\n"
    "                     queued per user; all reconnect at once: time to the\n"
    "                     last welcome and until every queue is drained\n"
"                     (notisync only)\n"
    "  sched-burst        U x D devices connected; U x Q notifications posted in\n"
    "                     batches (item i for user i %% U), all with the same\n"
    "                     deliver_at --lead seconds ahead (a whole second);\n"
    "                     from deliver_at: until GET /metrics shows every one\n"
    "                     in notisync_scheduled_queued_total, and until every\n"
    "                     device has every one (notisync only)\n"
    "  c100k              U x D devices (default 33334 x 3 = 100002) connected\n"
    "                     over --procs processes, each on its own loopback\n"
    "                     source address, --connect-parallel K handshakes in\n"
    "                     flight per process; time from the first connect() to\n"
    "                     the last `welcome`; RSS of every --watch tree before\n"
    "                     and 3 s after (per connection: the first --watch);\n"
    "                     then ONE notification to every user (batches of\n"
    "                     --batch, no target_devices: every device) and ONE\n"
    "                     broadcast, each counted once per connection within\n"
    "                     --grace (notisync only)\n"
    "  selftest           check the client's codecs and exit\n"
    "options (defaults per scenario in brackets):\n"
    "  --host A            server IPv4 address [127.0.0.1]\n"
    "  --port P            server port [8080]\n"
    "  --secret S          HS256 secret [$NOTISYNC_JWT_SECRET]\n"
    "  --users U --devices D   [1000 x 3]\n"
    "  --rate R            latency: POSTs/s [500]; fanout: broadcasts/s [2]\n"
    "  --duration T        seconds [latency 20, throughput 15]\n"
    "  --procs P           receiving client processes, each on its own source\n"
    "                      address 127.0.0.(2+i) [1; fanout: 1 per 10000]\n"
    "  --producer-procs Q  producing processes [1]\n"
    "  --concurrency N     producer connections [latency 8, throughput 16]\n"
    "  --batch B           notifications per batch request [100]\n"
    "  --conns C --messages M  fanout [2000 x 20]\n"
    "  --grace S           wait for deliveries after the end [5]\n"
    "  --connect-timeout S whole connect phase [120; c100k 300]\n"
    "  --connect-parallel K  handshakes in flight per process [200]\n"
    "  --phases LIST       throughput: connected,disconnected [both]\n"
    "  --settle S          throughput: pause after disconnecting the devices,\n"
    "                      so that their offline bookkeeping is not measured [5]\n"
    "  --prefix X          user-id prefix [random per run]\n"
    "  --out FILE          append a markdown section to FILE\n"
    "  --watch NAME=PID    report the CPU of PID and its descendants (repeat)\n"
    "  --stat-cmd CMD      shell command printing 'name value' lines, run\n"
    "                      before and after the measured window\n"
    "  --summary FILE      append machine-readable 'key value' lines to FILE\n"
    "idle, bcast-*, handshake, storm, c100k:\n"
    "  --target T          notisync | nchan [notisync]; notisync: public\n"
    "                      connections on /api/v1/ws, POST /api/v1/broadcast\n"
    "                      with a service token; nchan: WebSocket subscribers\n"
    "                      on --sub-path, raw body POSTed to --pub-path\n"
    "  --sub-path P        nchan subscriber path [/sub/bench]\n"
    "  --pub-path P        nchan publisher path [/pub/bench]\n"
    "  --kind K            idle, handshake: public | device [public]; device\n"
    "                      = U users x D devices on /ws?token=..&device_id=..\n"
    "                      (U = ceil(C / D) unless --users is given)\n"
    "  --conns C           connections [2000]\n"
    "  --messages M        bcast-throughput [200], bcast-latency [100]\n"
    "  --size B            bcast-*: bytes of the published JSON object [200]\n"
    "  --inflight K        bcast-*: publishes in flight [4]\n"
    "  --rate R            bcast-latency: broadcasts/s [10]\n"
    "  --grace S           bcast-*: wait for deliveries after the last\n"
    "                      publish [30]; storm: after the last welcome [60]\n"
    "  --users U --devices D --queued Q  storm [3334 x 3, 20 per user];\n"
    "                      sched-burst [1000 x 3, 10 per user = 10,000]\n"
    "  --lead S            sched-burst: deliver_at = the start of the second\n"
    "                      S seconds after the connect phase [5]\n"
    "  --batch B           sched-burst: notifications per batch POST [100]\n"
    "  --concurrency N     sched-burst: batch POSTs in flight [8]\n"
    "  --settle S          storm: pause after the disconnect [3]\n"
    "  --concurrency N     storm: batch POSTs in flight [16]\n"
    "  --procs P           [1 per 10000 connections; c100k: 1 per 16000; each\n"
    "                      process binds 127.0.0.(2+i) and holds at most 20000\n"
    "                      fds]\n"
    "c100k:\n"
    "  --users U --devices D  [33334 x 3]; or --conns C (U = ceil(C / D))\n"
    "  --batch B           users per notification batch POST [500]\n"
    "  --concurrency N     batch POSTs in flight [4]\n"
    "  --connect-timeout S whole connect phase [300]\n"
    "  --grace S           wait for each of the two deliveries [60]\n"
    "  summary keys c100k.*: wanted conns failed retries connect_s\n"
    "  rss_per_conn_b NAME_rss_before_kb NAME_rss_after_kb notif_accepted\n"
    "  notif_delivered notif_lost notif_dup notif_reach_all_s (-1 when some\n"
    "  connection missed it) notif_last_rx_s bcast_accepted bcast_delivered\n"
    "  bcast_lost bcast_dup bcast_reach_all_s bcast_last_rx_s misrouted\n"
    "  closed_by_server NAME_cpu_s (connect phase)\n"
    "exit status: 0 all delivered / connected; 1 error; 2 usage; 3 deliveries\n"
    "lost or doubled, or connections failed; 4 nothing accepted\n");
}

enum { O_HOST = 1000, O_PORT, O_SECRET, O_USERS, O_DEVICES, O_RATE,
       O_DURATION, O_PROCS, O_PPROCS, O_CONC, O_BATCH, O_CONNS, O_MESSAGES,
       O_GRACE, O_CTIMEOUT, O_CPAR, O_PHASES, O_PREFIX, O_OUT, O_WATCH,
       O_STATCMD, O_SUMMARY, O_SETTLE, O_TARGET, O_KIND, O_SUBPATH,
       O_PUBPATH, O_SIZE, O_INFLIGHT, O_QUEUED, O_LEAD, O_HELP };

static const struct option longopts[] = {
    {"host", 1, 0, O_HOST}, {"port", 1, 0, O_PORT},
    {"secret", 1, 0, O_SECRET}, {"users", 1, 0, O_USERS},
    {"devices", 1, 0, O_DEVICES}, {"rate", 1, 0, O_RATE},
    {"duration", 1, 0, O_DURATION}, {"procs", 1, 0, O_PROCS},
    {"producer-procs", 1, 0, O_PPROCS}, {"concurrency", 1, 0, O_CONC},
    {"batch", 1, 0, O_BATCH}, {"conns", 1, 0, O_CONNS},
    {"messages", 1, 0, O_MESSAGES}, {"grace", 1, 0, O_GRACE},
    {"connect-timeout", 1, 0, O_CTIMEOUT}, {"connect-parallel", 1, 0, O_CPAR},
    {"phases", 1, 0, O_PHASES}, {"prefix", 1, 0, O_PREFIX},
    {"out", 1, 0, O_OUT}, {"watch", 1, 0, O_WATCH},
    {"stat-cmd", 1, 0, O_STATCMD}, {"summary", 1, 0, O_SUMMARY},
    {"settle", 1, 0, O_SETTLE}, {"target", 1, 0, O_TARGET},
    {"kind", 1, 0, O_KIND}, {"sub-path", 1, 0, O_SUBPATH},
    {"pub-path", 1, 0, O_PUBPATH}, {"size", 1, 0, O_SIZE},
    {"inflight", 1, 0, O_INFLIGHT}, {"queued", 1, 0, O_QUEUED},
    {"lead", 1, 0, O_LEAD},
    {"help", 0, 0, O_HELP}, {0, 0, 0, 0}};

/* Parses a number in [lo, hi]; exits with a message naming the option. */
static double num(const char *opt, const char *s, double lo, double hi) {
  char *e;
  double v = strtod(s, &e);
  if (e == s || *e || v < lo || v > hi) {
    fprintf(stderr, "notisync-bench: bad value '%s' for --%s (%g..%g)\n", s,
            opt, lo, hi);
    exit(2);
  }
  return v;
}

/* Builds the command line as run, the secret replaced by "$SECRET". */
static void build_cmdline(nsb_opts *o, int argc, char **argv) {
  size_t off = 0;
  int i, redact = 0;
  off += (size_t)snprintf(o->cmdline, sizeof(o->cmdline), "notisync-bench");
  for (i = 1; i < argc && off < sizeof(o->cmdline); i++) {
    const char *a = argv[i];
    if (redact)
      a = "\"$SECRET\"";
    redact = strcmp(argv[i], "--secret") == 0;
    if (strncmp(argv[i], "--secret=", 9) == 0)
      a = "--secret=\"$SECRET\"";
    if (strchr(a, ' ') || strchr(a, '$') || strchr(a, '|'))
      off += (size_t)snprintf(o->cmdline + off, sizeof(o->cmdline) - off,
                              a[0] == '"' ? " %s" : " '%s'", a);
    else
      off += (size_t)snprintf(o->cmdline + off, sizeof(o->cmdline) - off,
                              " %s", a);
  }
}

static void add_watch(nsb_opts *o, const char *arg) {
  const char *eq = strchr(arg, '=');
  if (!eq || eq == arg || o->nwatch >= NSB_MAX_WATCH ||
      (size_t)(eq - arg) >= sizeof(o->watch[0].name)) {
    fprintf(stderr, "notisync-bench: bad --watch '%s' (NAME=PID, at most %d)\n",
            arg, NSB_MAX_WATCH);
    exit(2);
  }
  memcpy(o->watch[o->nwatch].name, arg, (size_t)(eq - arg));
  o->watch[o->nwatch].name[eq - arg] = '\0';
  o->watch[o->nwatch].pid = (int)num("watch", eq + 1, 1, 1 << 30);
  o->nwatch++;
}

static int is(const nsb_opts *o, const char *name) {
  return strcmp(o->scenario, name) == 0;
}

/* The scenarios of issue 9: one connection model for notisyncd and Nchan. */
static int newer(const nsb_opts *o) {
  return is(o, "idle") || is(o, "bcast-throughput") ||
         is(o, "bcast-latency") || is(o, "handshake") || is(o, "storm") ||
         is(o, "c100k") || is(o, "sched-burst");
}

/* Defaults and checks of the newer scenarios; exits on a bad combination. */
static void defaults_newer(nsb_opts *o, int conns_given) {
  long total;
  int bc = is(o, "bcast-throughput") || is(o, "bcast-latency");
  if (o->queued <= 0)
    o->queued = is(o, "sched-burst") ? 10 : 20;
  if (is(o, "sched-burst")) {
    o->kind = NSB_K_DEVICE;
    if (o->target == NSB_T_NCHAN) {
      fprintf(stderr, "notisync-bench: sched-burst needs --target notisync\n");
      exit(2);
    }
    if ((uint64_t)o->users * (uint64_t)o->queued > 0xffffffULL) {
      fprintf(stderr, "notisync-bench: --users x --queued must be below 2^24\n");
      exit(2);
    }
    o->rx_mode = NSB_RX_STORM;
    o->nbits = (uint32_t)o->queued;
    if (o->concurrency <= 0)
      o->concurrency = 8;
    if (o->lead <= 0)
      o->lead = 5;
  } else if (is(o, "storm")) {
    o->kind = NSB_K_DEVICE;
    if (!o->users_given)
      o->users = 3334;
    if (o->target == NSB_T_NCHAN) {
      fprintf(stderr, "notisync-bench: storm needs --target notisync\n");
      exit(2);
    }
    if ((uint64_t)o->users * (uint64_t)o->queued > 0xffffffffULL) {
      fprintf(stderr, "notisync-bench: --users x --queued must fit 32 bits\n");
      exit(2);
    }
    o->rx_mode = NSB_RX_STORM;
    o->nbits = (uint32_t)o->queued;
  } else if (is(o, "c100k")) {
    o->kind = NSB_K_DEVICE;
    if (!o->users_given && !conns_given)
      o->users = 33334;
    if (o->target == NSB_T_NCHAN) {
      fprintf(stderr, "notisync-bench: c100k needs --target notisync\n");
      exit(2);
    }
    o->rx_mode = NSB_RX_C100K;
    o->nbits = 2;
    if (o->concurrency <= 0)
      o->concurrency = 4;
  } else if (bc) {
    o->kind = NSB_K_PUBLIC;
    o->rx_mode = NSB_RX_BCAST;
    if (o->messages <= 0)
      o->messages = is(o, "bcast-throughput") ? 200 : 100;
    o->nbits = (uint32_t)o->messages;
  }
  if (o->kind == NSB_K_DEVICE && o->target == NSB_T_NCHAN) {
    fprintf(stderr, "notisync-bench: --kind device needs --target notisync\n");
    exit(2);
  }
  if (o->kind == NSB_K_DEVICE && !o->users_given && conns_given)
    o->users = (o->conns + o->devices - 1) / o->devices;
  if (o->rate <= 0)
    o->rate = 10;
  if (o->grace < 0)
    o->grace = is(o, "storm") || is(o, "c100k") ? 60 : 30;
  if (o->settle < 0)
    o->settle = 3;
  o->producer_procs = 1;
  o->public_path = o->target == NSB_T_NCHAN ? o->sub_path : "/api/v1/ws";
  o->ws_ping = 0;
  total = o->kind == NSB_K_DEVICE ? (long)o->users * o->devices : o->conns;
  if (o->procs <= 0)
    o->procs = (int)(1 + (total - 1) / (is(o, "c100k") ? 16000 : 10000));
  if (o->procs > NSB_MAX_PROCS / 2)
    o->procs = NSB_MAX_PROCS / 2;
  if (o->nbits && (double)total / o->procs * ((o->nbits + 7) / 8) > 512e6) {
    fprintf(stderr, "notisync-bench: delivery bitmaps would need over 512 MB "
            "per process: fewer --messages or more --procs\n");
    exit(2);
  }
}

/* Fills the options that depend on the scenario and were not given. */
static void defaults(nsb_opts *o, int conns_given) {
  int fan = strcmp(o->scenario, "fanout") == 0;
  int lat = strcmp(o->scenario, "latency") == 0;
  if (o->batch <= 0)
    o->batch = is(o, "c100k") ? 500 : 100;
  if (o->connect_timeout <= 0)
    o->connect_timeout = is(o, "c100k") ? 300 : 120;
  if (newer(o)) {
    defaults_newer(o, conns_given);
    return;
  }
  o->public_path = "/ws/public";
  o->ws_ping = 1;
  if (o->messages <= 0)
    o->messages = 20;
  if (o->grace < 0)
    o->grace = 5;
  if (o->settle < 0)
    o->settle = 5;
  if (o->rate <= 0)
    o->rate = fan ? 2 : 500;
  if (o->duration <= 0)
    o->duration = lat ? 20 : 15;
  if (o->concurrency <= 0)
    o->concurrency = lat ? 8 : 16;
  if (o->procs <= 0)
    o->procs = fan ? 1 + (o->conns - 1) / 10000 : 1 + (o->users * o->devices - 1) / 15000;
  if (o->procs > NSB_MAX_PROCS / 2)
    o->procs = NSB_MAX_PROCS / 2;
}

int main(int argc, char **argv) {
  static char prefix[32];
  nsb_opts o;
  uint8_t rnd[4];
  int c, conns_given = 0;

  memset(&o, 0, sizeof(o));
  o.host = "127.0.0.1";
  o.port = 8080;
  o.secret = getenv("NOTISYNC_JWT_SECRET");
  o.users = 1000;
  o.devices = 3;
  o.producer_procs = 1;
  o.batch = 0;        /* per scenario */
  o.conns = 2000;
  o.messages = 0;     /* per scenario */
  o.grace = -1;       /* per scenario */
  o.settle = -1;      /* per scenario */
  o.sub_path = "/sub/bench";
  o.pub_path = "/pub/bench";
  o.size = 200;
  o.inflight = 4;
  o.queued = 0;       /* per scenario */
  o.connect_timeout = 0; /* per scenario */
  o.connect_parallel = 200;
  o.phases = "connected,disconnected";
  if (argc < 2 || argv[1][0] == '-') {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  o.scenario = argv[1];
  if (strcmp(o.scenario, "selftest") == 0)
    return nsb_selftest();
  if (strcmp(o.scenario, "latency") && strcmp(o.scenario, "throughput-single") &&
      strcmp(o.scenario, "throughput-batch") && strcmp(o.scenario, "fanout") &&
      !newer(&o)) {
    fprintf(stderr, "notisync-bench: unknown scenario '%s'\n", o.scenario);
    usage(stderr);
    return 2;
  }
  build_cmdline(&o, argc, argv);
  optind = 2;
  while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    switch (c) {
    case O_HOST: o.host = optarg; break;
    case O_PORT: o.port = (int)num("port", optarg, 1, 65535); break;
    case O_SECRET: o.secret = optarg; break;
    case O_USERS:
      o.users = (int)num("users", optarg, 1, 10000000);
      o.users_given = 1;
      break;
    case O_DEVICES: o.devices = (int)num("devices", optarg, 1, 32); break;
    case O_RATE: o.rate = num("rate", optarg, 0.01, 1e6); break;
    case O_DURATION: o.duration = num("duration", optarg, 0.1, 86400); break;
    case O_PROCS: o.procs = (int)num("procs", optarg, 1, NSB_MAX_PROCS / 2); break;
    case O_PPROCS: o.producer_procs = (int)num("producer-procs", optarg, 1, 16); break;
    case O_CONC: o.concurrency = (int)num("concurrency", optarg, 1, 10000); break;
    case O_BATCH: o.batch = (int)num("batch", optarg, 1, 500); break;
    case O_CONNS:
      o.conns = (int)num("conns", optarg, 1, 1000000);
      conns_given = 1;
      break;
    case O_MESSAGES: o.messages = (int)num("messages", optarg, 1, 1000000); break;
    case O_GRACE: o.grace = num("grace", optarg, 0, 3600); break;
    case O_CTIMEOUT: o.connect_timeout = num("connect-timeout", optarg, 1, 3600); break;
    case O_CPAR: o.connect_parallel = (int)num("connect-parallel", optarg, 1, 100000); break;
    case O_PHASES: o.phases = optarg; break;
    case O_PREFIX: o.prefix = optarg; break;
    case O_OUT: o.out = optarg; break;
    case O_WATCH: add_watch(&o, optarg); break;
    case O_STATCMD: o.stat_cmd = optarg; break;
    case O_SUMMARY: o.summary = optarg; break;
    case O_SETTLE: o.settle = num("settle", optarg, 0, 600); break;
    case O_TARGET:
      if (strcmp(optarg, "notisync") && strcmp(optarg, "nchan")) {
        fprintf(stderr, "notisync-bench: --target is notisync or nchan\n");
        return 2;
      }
      o.target = strcmp(optarg, "nchan") == 0 ? NSB_T_NCHAN : NSB_T_NOTISYNC;
      break;
    case O_KIND:
      if (strcmp(optarg, "public") && strcmp(optarg, "device")) {
        fprintf(stderr, "notisync-bench: --kind is public or device\n");
        return 2;
      }
      o.kind = strcmp(optarg, "device") == 0 ? NSB_K_DEVICE : NSB_K_PUBLIC;
      break;
    case O_SUBPATH: o.sub_path = optarg; break;
    case O_PUBPATH: o.pub_path = optarg; break;
    case O_SIZE: o.size = (int)num("size", optarg, 1, 60000); break;
    case O_INFLIGHT: o.inflight = (int)num("inflight", optarg, 1, 1000); break;
    case O_QUEUED: o.queued = (int)num("queued", optarg, 1, 100000); break;
    case O_LEAD: o.lead = num("lead", optarg, 1, 3600); break;
    case O_HELP: usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (!o.secret || !*o.secret) {
    fprintf(stderr, "notisync-bench: --secret (or NOTISYNC_JWT_SECRET) is required\n");
    return 2;
  }
  if (!o.prefix) {
    nsb_random_bytes(rnd, sizeof(rnd));
    snprintf(prefix, sizeof(prefix), "nsb%02x%02x%02x%02x-", rnd[0], rnd[1],
             rnd[2], rnd[3]);
    o.prefix = prefix;
  }
  if (o.sub_path[0] != '/' || strlen(o.sub_path) > 1000 ||
      o.pub_path[0] != '/' || strlen(o.pub_path) > 1000) {
    fprintf(stderr, "notisync-bench: --sub-path / --pub-path must start "
            "with '/' (at most 1000 bytes)\n");
    return 2;
  }
  nsb_random_bytes(&o.run_id, sizeof(o.run_id));
  defaults(&o, conns_given);
  signal(SIGPIPE, SIG_IGN);
  nsb_raise_nofile();
  return nsb_scenario_run(&o);
}
