/*
 * replay_main.c -- a main() that turns a libFuzzer target into an ordinary
 * test for builds without libFuzzer (gcc, the sanitized ctest build).
 *
 *   replay_fuzz_<name> CORPUS_DIR
 *
 * Feeds LLVMFuzzerTestOneInput every regular file in CORPUS_DIR (in name
 * order), then a fixed number of mutants of each file, made by a xorshift
 * generator with a fixed seed: bit flips, byte sets (JSON syntax and UTF-8
 * edge bytes), truncations, deletions, insertions, duplications and splices
 * from other corpus files.  The run is deterministic, so a failure
 * reproduces exactly.  Every input is copied into a heap buffer of exactly
 * its size, so a sanitizer sees any read past the end.
 *
 * Prints "replayed N inputs" and exits 0; a crash or sanitizer report ends
 * the process (and the test) before that, after naming the input on stderr
 * and saving its bytes to ./replay-crash-input for a rerun under the real
 * fuzzer or a debugger.  Exits 1 on usage errors, an
 * unreadable or empty corpus, or a corpus file over MAX_FILE bytes.
 * NS_REPLAY_MUTATIONS=N overrides the mutants per file (0..1000000).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define DEFAULT_MUTATIONS 2000
#define MAX_MUTATIONS 1000000
#define MAX_FILE (1u << 20)
#define MAX_STEPS 4       /* edits per mutant */
#define MAX_CHUNK 64      /* bytes moved/inserted by one edit */
#define GROWTH 4096       /* a mutant may be this much larger than its seed */

typedef struct input {
  char *name;
  uint8_t *data;
  size_t size;
} input;

typedef struct corpus {
  input *files;
  size_t count;
} corpus;

static const uint8_t interesting[] = {
    '"', '\\', '{', '}', '[', ']', ':', ',', ' ', '\n', '0', '1', '9', '-',
    '+', '.', 'e', 'E', 'u', 'n', 't', 'f', 'a', 'd', 0x00, 0x1f, 0x7f, 0x80,
    0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xff,
};

static uint64_t xorshift(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

/* A value in [0, n); 0 when n is 0. */
static size_t below(uint64_t *s, size_t n) {
  return n ? (size_t)(xorshift(s) % n) : 0;
}

static uint64_t seed_for(size_t index) {
  uint64_t s = 0x9e3779b97f4a7c15ull ^ ((uint64_t)index * 0xbf58476d1ce4e5b9ull);
  return s ? s : 1;
}

/* What is running now, for the crash reporter.  File-static because a
 * signal handler and the sanitizer death callback can reach nothing else. */
static struct {
  const char *name;
  long mutant; /* -1: the corpus file itself */
  const uint8_t *data;
  size_t size;
} current;

/* Provided by the ASan/UBSan runtimes; absent (NULL) in plain builds. */
extern void __sanitizer_set_death_callback(void (*cb)(void))
    __attribute__((weak));

static void say(const char *s) {
  ssize_t r = write(2, s, strlen(s));
  (void)r;
}

/* Async-signal-safe: names the input and saves it, using write(2) only. */
static void report_crash(void) {
  char num[24];
  size_t i = sizeof(num) - 1;
  unsigned long v = current.mutant < 0 ? 0 : (unsigned long)current.mutant;
  int fd;

  if (!current.data && !current.name)
    return;
  num[i] = '\0';
  do {
    num[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v && i > 0);
  say("replay: crashed on ");
  say(current.name ? current.name : "?");
  say(current.mutant < 0 ? " (as is)" : " mutant #");
  if (current.mutant >= 0)
    say(num + i);
  say(", input saved to ./replay-crash-input\n");
  fd = open("replay-crash-input", O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0) {
    ssize_t r = write(fd, current.data, current.size);
    (void)r;
    close(fd);
  }
}

static void on_fatal_signal(int sig) {
  report_crash();
  signal(sig, SIG_DFL);
  raise(sig);
}

static void install_crash_reporter(void) {
  static const int sigs[] = {SIGILL, SIGABRT, SIGSEGV, SIGBUS, SIGFPE};
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_fatal_signal;
  sa.sa_flags = SA_RESETHAND;
  for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
    sigaction(sigs[i], &sa, NULL);
  if (__sanitizer_set_death_callback)
    __sanitizer_set_death_callback(report_crash);
}

/* Reads `path` whole into a fresh buffer; -1 on error or when too large. */
static int read_file(int dirfd, const char *name, input *out) {
  struct stat st;
  int fd = openat(dirfd, name, O_RDONLY);
  ssize_t got;
  int rc = -1;

  if (fd < 0)
    return -1;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
    goto done;
  if ((uintmax_t)st.st_size > MAX_FILE) {
    fprintf(stderr, "replay: %s is larger than %u bytes\n", name, MAX_FILE);
    goto done;
  }
  out->size = (size_t)st.st_size;
  out->data = malloc(out->size ? out->size : 1);
  if (!out->data)
    goto done;
  got = read(fd, out->data, out->size);
  if (got < 0 || (size_t)got != out->size)
    goto done;
  rc = 0;
done:
  close(fd);
  return rc;
}

static int is_regular(int dirfd, const char *name) {
  struct stat st;
  return fstatat(dirfd, name, &st, 0) == 0 && S_ISREG(st.st_mode);
}

/* Loads every regular file of `dir`, sorted by name. */
static int load_corpus(const char *dir, corpus *c) {
  struct dirent **names = NULL;
  int n = scandir(dir, &names, NULL, alphasort);
  int dirfd = open(dir, O_RDONLY | O_DIRECTORY);
  int rc = 0;

  if (n < 0 || dirfd < 0) {
    fprintf(stderr, "replay: cannot read %s: %s\n", dir, strerror(errno));
    rc = -1;
    goto done;
  }
  c->files = calloc((size_t)n + 1, sizeof(*c->files));
  if (!c->files) {
    rc = -1;
    goto done;
  }
  for (int i = 0; i < n && rc == 0; i++) {
    if (!is_regular(dirfd, names[i]->d_name))
      continue;
    if (read_file(dirfd, names[i]->d_name, &c->files[c->count]) < 0) {
      fprintf(stderr, "replay: cannot load %s/%s\n", dir, names[i]->d_name);
      rc = -1;
      free(c->files[c->count].data);
      break;
    }
    c->files[c->count].name = strdup(names[i]->d_name);
    if (!c->files[c->count].name) {
      free(c->files[c->count].data);
      rc = -1;
      break;
    }
    c->count++;
  }
done:
  for (int i = 0; i < n; i++)
    free(names[i]);
  free(names);
  if (dirfd >= 0)
    close(dirfd);
  return rc;
}

/* Makes room for `k` bytes at `pos` (k <= cap - n); returns the new size. */
static size_t open_gap(uint8_t *buf, size_t n, size_t pos, size_t k) {
  memmove(buf + pos + k, buf + pos, n - pos);
  return n + k;
}

/* Applies one random edit to buf[0..n) (capacity cap); returns the size. */
static size_t edit(uint64_t *s, uint8_t *buf, size_t n, size_t cap,
                   const corpus *c) {
  size_t pos = below(s, n + 1), k, from;
  uint8_t chunk[MAX_CHUNK];
  const input *other;

  switch (below(s, 8)) {
  case 0: /* bit flip */
    if (n)
      buf[pos % n] ^= (uint8_t)(1u << below(s, 8));
    return n;
  case 1: /* interesting byte */
    if (n)
      buf[pos % n] = interesting[below(s, sizeof(interesting))];
    return n;
  case 2: /* random byte */
    if (n)
      buf[pos % n] = (uint8_t)xorshift(s);
    return n;
  case 3: /* truncate */
    return pos;
  case 4: /* delete a range */
    k = 1 + below(s, MAX_CHUNK);
    if (k > n - pos)
      k = n - pos;
    memmove(buf + pos, buf + pos + k, n - pos - k);
    return n - k;
  case 5: /* insert interesting bytes */
    k = 1 + below(s, 8);
    if (k > cap - n)
      return n;
    n = open_gap(buf, n, pos, k);
    for (size_t i = 0; i < k; i++)
      buf[pos + i] = interesting[below(s, sizeof(interesting))];
    return n;
  case 6: /* duplicate a range of itself */
    from = below(s, n);
    k = 1 + below(s, MAX_CHUNK);
    if (!n || k > n - from || k > cap - n)
      return n;
    memcpy(chunk, buf + from, k);
    n = open_gap(buf, n, pos, k);
    memcpy(buf + pos, chunk, k);
    return n;
  default: /* splice a range of another corpus file */
    other = &c->files[below(s, c->count)];
    from = below(s, other->size);
    k = 1 + below(s, MAX_CHUNK);
    if (!other->size || k > other->size - from || k > cap - n)
      return n;
    n = open_gap(buf, n, pos, k);
    memcpy(buf + pos, other->data + from, k);
    return n;
  }
}

/* Runs the target on a heap copy of exactly `n` bytes; `name` and `mutant`
 * identify the input if it crashes. */
static void run_one(const char *name, long mutant, const uint8_t *data,
                    size_t n) {
  uint8_t *copy = malloc(n ? n : 1);
  if (!copy) {
    fprintf(stderr, "replay: out of memory\n");
    exit(1);
  }
  if (n)
    memcpy(copy, data, n);
  current.name = name;
  current.mutant = mutant;
  current.data = data;
  current.size = n;
  LLVMFuzzerTestOneInput(copy, n);
  free(copy);
}

static long mutations_wanted(void) {
  const char *env = getenv("NS_REPLAY_MUTATIONS");
  char *end;
  long v;
  if (!env)
    return DEFAULT_MUTATIONS;
  errno = 0;
  v = strtol(env, &end, 10);
  if (errno || end == env || *end || v < 0 || v > MAX_MUTATIONS) {
    fprintf(stderr, "replay: bad NS_REPLAY_MUTATIONS '%s'\n", env);
    exit(1);
  }
  return v;
}

int main(int argc, char **argv) {
  corpus c = {NULL, 0};
  long mutations = mutations_wanted();
  unsigned long long total = 0;
  int rc = 1;

  if (argc != 2) {
    fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 1;
  }
  if (load_corpus(argv[1], &c) < 0)
    goto done;
  if (c.count == 0) {
    fprintf(stderr, "replay: no corpus files in %s\n", argv[1]);
    goto done;
  }
  install_crash_reporter();
  for (size_t i = 0; i < c.count; i++, total++)
    run_one(c.files[i].name, -1, c.files[i].data, c.files[i].size);
  for (size_t i = 0; i < c.count; i++) {
    size_t cap = c.files[i].size + GROWTH;
    uint8_t *buf = malloc(cap);
    uint64_t s = seed_for(i);
    if (!buf)
      goto done;
    for (long m = 0; m < mutations; m++, total++) {
      size_t n = c.files[i].size;
      size_t steps = 1 + below(&s, MAX_STEPS);
      memcpy(buf, c.files[i].data, n);
      for (size_t k = 0; k < steps; k++)
        n = edit(&s, buf, n, cap, &c);
      run_one(c.files[i].name, m, buf, n);
    }
    free(buf);
  }
  printf("replayed %llu inputs\n", total);
  rc = 0;
done:
  for (size_t i = 0; i < c.count; i++) {
    free(c.files[i].data);
    free(c.files[i].name);
  }
  free(c.files);
  return rc;
}
