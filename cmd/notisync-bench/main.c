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
    "  --connect-timeout S whole connect phase [120]\n"
    "  --connect-parallel K  handshakes in flight per process [200]\n"
    "  --phases LIST       throughput: connected,disconnected [both]\n"
    "  --settle S          throughput: pause after disconnecting the devices,\n"
    "                      so that their offline bookkeeping is not measured [5]\n"
    "  --prefix X          user-id prefix [random per run]\n"
    "  --out FILE          append a markdown section to FILE\n"
    "  --watch NAME=PID    report the CPU of PID and its descendants (repeat)\n"
    "  --stat-cmd CMD      shell command printing 'name value' lines, run\n"
    "                      before and after the measured window\n"
    "  --summary FILE      append machine-readable 'key value' lines to FILE\n");
}

enum { O_HOST = 1000, O_PORT, O_SECRET, O_USERS, O_DEVICES, O_RATE,
       O_DURATION, O_PROCS, O_PPROCS, O_CONC, O_BATCH, O_CONNS, O_MESSAGES,
       O_GRACE, O_CTIMEOUT, O_CPAR, O_PHASES, O_PREFIX, O_OUT, O_WATCH,
       O_STATCMD, O_SUMMARY, O_SETTLE, O_HELP };

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
    {"settle", 1, 0, O_SETTLE},
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

/* Fills the options that depend on the scenario and were not given. */
static void defaults(nsb_opts *o) {
  int fan = strcmp(o->scenario, "fanout") == 0;
  int lat = strcmp(o->scenario, "latency") == 0;
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
  int c;

  memset(&o, 0, sizeof(o));
  o.host = "127.0.0.1";
  o.port = 8080;
  o.secret = getenv("NOTISYNC_JWT_SECRET");
  o.users = 1000;
  o.devices = 3;
  o.producer_procs = 1;
  o.batch = 100;
  o.conns = 2000;
  o.messages = 20;
  o.grace = 5;
  o.settle = 5;
  o.connect_timeout = 120;
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
      strcmp(o.scenario, "throughput-batch") && strcmp(o.scenario, "fanout")) {
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
    case O_USERS: o.users = (int)num("users", optarg, 1, 10000000); break;
    case O_DEVICES: o.devices = (int)num("devices", optarg, 1, 32); break;
    case O_RATE: o.rate = num("rate", optarg, 0.01, 1e6); break;
    case O_DURATION: o.duration = num("duration", optarg, 0.1, 86400); break;
    case O_PROCS: o.procs = (int)num("procs", optarg, 1, NSB_MAX_PROCS / 2); break;
    case O_PPROCS: o.producer_procs = (int)num("producer-procs", optarg, 1, 16); break;
    case O_CONC: o.concurrency = (int)num("concurrency", optarg, 1, 10000); break;
    case O_BATCH: o.batch = (int)num("batch", optarg, 1, 500); break;
    case O_CONNS: o.conns = (int)num("conns", optarg, 1, 1000000); break;
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
  defaults(&o);
  signal(SIGPIPE, SIG_IGN);
  nsb_raise_nofile();
  return nsb_scenario_run(&o);
}
