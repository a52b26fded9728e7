/*
 * standalone_main.c - runs a libFuzzer-style target without libFuzzer.
 *
 * Linked with one tests/fuzz/fuzz_<name>.c, which defines
 *     int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
 * (and optionally LLVMFuzzerInitialize). Usage:
 *     fuzz_<name> [DIR_OR_FILE...]
 * It runs the target over
 *   1. every regular file in each directory argument (a file argument is run
 *      as is; a missing directory is reported and skipped),
 *   2. FUZZ_ITERATIONS (default 20000) pseudo-random inputs of 0..8192 bytes
 *      from a fixed-seed xorshift generator (FUZZ_SEED overrides the seed),
 *   3. as many mutations of the corpus files (bit flips, truncation, byte
 *      insertion, overwrites), when there is a corpus,
 * and prints a one-line summary. Every input sits in a buffer of exactly its
 * size, so AddressSanitizer catches any read past the end.
 *
 * If the target crashes (a signal, or a sanitizer abort), the input is saved
 * as crash-<target>-<n> in FUZZ_ARTIFACT_DIR (default: the working directory)
 * so it can be replayed by passing that file as the argument, alone with
 * FUZZ_ITERATIONS=0:  FUZZ_ITERATIONS=0 build-asan/tests/fuzz_wire crash-fuzz_wire-123
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
#include <time.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

#define MAX_RANDOM_SIZE 8192u
#define MAX_CORPUS_FILE (1u << 20) /* larger files are truncated */

typedef struct {
    uint8_t *data;
    size_t size;
} input_t;

static input_t *corpus;
static size_t corpus_len;
static size_t corpus_cap;

/* What is running now, for the crash handler. */
static const uint8_t *volatile cur_data;
static volatile size_t cur_size;
static volatile unsigned long cur_index;
static char crash_path[4096];
static const char *target_name = "fuzz";

static uint64_t rng_state;

static uint64_t xorshift64(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng_state = x;
    return x;
}

static size_t rnd_below(size_t n)
{
    return n == 0 ? 0 : (size_t)(xorshift64() % n);
}

/* --- crash artifact ------------------------------------------------ */

static void put_str(const char *s)
{
    ssize_t r = write(STDERR_FILENO, s, strlen(s));
    (void)r;
}

static void on_crash(int sig)
{
    /* Only async-signal-safe calls here. */
    int fd = open(crash_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        const uint8_t *p = cur_data;
        size_t left = cur_size;
        while (p && left > 0) {
            ssize_t w = write(fd, p, left);
            if (w <= 0)
                break;
            p += w;
            left -= (size_t)w;
        }
        close(fd);
        put_str("standalone fuzz driver: crashing input saved to ");
        put_str(crash_path);
        put_str("\n");
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void set_crash_path(void)
{
    const char *dir = getenv("FUZZ_ARTIFACT_DIR");
    snprintf(crash_path, sizeof crash_path, "%s/crash-%s-%lu", dir && *dir ? dir : ".",
             target_name, (unsigned long)cur_index);
}

static void run_one(const uint8_t *data, size_t size)
{
    /* Exactly-sized heap copy, so out-of-bounds reads are caught. */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) {
        fprintf(stderr, "standalone fuzz driver: out of memory\n");
        exit(2);
    }
    if (size)
        memcpy(buf, data, size);
    cur_data = buf;
    cur_size = size;
    set_crash_path();
    (void)LLVMFuzzerTestOneInput(buf, size);
    cur_data = NULL;
    cur_size = 0;
    cur_index++;
    free(buf);
}

/* --- corpus ---------------------------------------------------------- */

static int load_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "standalone fuzz driver: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    uint8_t *data = malloc(MAX_CORPUS_FILE);
    if (!data) {
        fclose(f);
        return -1;
    }
    size_t n = fread(data, 1, MAX_CORPUS_FILE, f);
    fclose(f);
    if (corpus_len == corpus_cap) {
        size_t cap = corpus_cap ? corpus_cap * 2 : 64;
        input_t *c = realloc(corpus, cap * sizeof *c);
        if (!c) {
            free(data);
            return -1;
        }
        corpus = c;
        corpus_cap = cap;
    }
    uint8_t *shrunk = realloc(data, n ? n : 1);
    corpus[corpus_len].data = shrunk ? shrunk : data;
    corpus[corpus_len].size = n;
    corpus_len++;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Loads the regular files of dir in name order (so runs are reproducible). */
static void load_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "standalone fuzz driver: no corpus at %s (%s), continuing\n", dir,
                strerror(errno));
        return;
    }
    char **names = NULL;
    size_t len = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (len == cap) {
            cap = cap ? cap * 2 : 64;
            char **n = realloc(names, cap * sizeof *n);
            if (!n)
                break;
            names = n;
        }
        size_t need = strlen(dir) + strlen(e->d_name) + 2;
        names[len] = malloc(need);
        if (!names[len])
            break;
        snprintf(names[len], need, "%s/%s", dir, e->d_name);
        len++;
    }
    closedir(d);
    if (len > 1)
        qsort(names, len, sizeof *names, cmp_str);
    for (size_t i = 0; i < len; i++) {
        struct stat st;
        if (stat(names[i], &st) == 0 && S_ISREG(st.st_mode))
            (void)load_file(names[i]);
        free(names[i]);
    }
    free(names);
}

/* --- generation ------------------------------------------------------ */

static size_t random_size(void)
{
    /* Favour small inputs (headers, short frames) but reach 8192. */
    static const size_t limits[] = {16, 64, 512, MAX_RANDOM_SIZE};
    return rnd_below(limits[rnd_below(4)] + 1);
}

static void fill_random(uint8_t *p, size_t n)
{
    /* Mostly random bytes, sometimes runs of 0x00/0xff, which make lengths
     * and counts in headers extreme. */
    unsigned mode = (unsigned)rnd_below(8);
    for (size_t i = 0; i < n; i++) {
        if (mode == 0)
            p[i] = 0;
        else if (mode == 1)
            p[i] = 0xff;
        else
            p[i] = (uint8_t)xorshift64();
    }
}

static const uint8_t interesting[] = {0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff};

/* Builds one mutation of src into a new buffer; returns its size. */
static uint8_t *mutate(const input_t *src, size_t *out_size)
{
    size_t cap = src->size + 64;
    uint8_t *p = malloc(cap);
    if (!p)
        return NULL;
    size_t n = src->size;
    if (n)
        memcpy(p, src->data, n);
    unsigned rounds = 1 + (unsigned)rnd_below(4);
    for (unsigned r = 0; r < rounds; r++) {
        switch (rnd_below(5)) {
        case 0: /* bit flip */
            if (n)
                p[rnd_below(n)] ^= (uint8_t)(1u << rnd_below(8));
            break;
        case 1: /* truncation */
            n = rnd_below(n + 1);
            break;
        case 2: /* byte insertion */
            if (n < cap) {
                size_t at = rnd_below(n + 1);
                memmove(p + at + 1, p + at, n - at);
                p[at] = (uint8_t)xorshift64();
                n++;
            }
            break;
        case 3: /* overwrite with an interesting byte */
            if (n)
                p[rnd_below(n)] = interesting[rnd_below(sizeof interesting)];
            break;
        default: /* byte deletion */
            if (n) {
                size_t at = rnd_below(n);
                memmove(p + at, p + at + 1, n - at - 1);
                n--;
            }
            break;
        }
    }
    *out_size = n;
    return p;
}

static unsigned long env_ulong(const char *name, unsigned long def)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return def;
    char *end;
    errno = 0;
    unsigned long x = strtoul(v, &end, 0);
    if (errno || *end) {
        fprintf(stderr, "standalone fuzz driver: ignoring bad %s=%s\n", name, v);
        return def;
    }
    return x;
}

int main(int argc, char **argv)
{
    const char *slash = strrchr(argv[0], '/');
    target_name = slash ? slash + 1 : argv[0];

    if (LLVMFuzzerInitialize)
        (void)LLVMFuzzerInitialize(&argc, &argv);

    static const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        signal(sigs[i], on_crash);

    unsigned long iterations = env_ulong("FUZZ_ITERATIONS", 20000);
    rng_state = env_ulong("FUZZ_SEED", 0x9e3779b97f4a7c15ul);
    if (rng_state == 0)
        rng_state = 1; /* xorshift's one fixed point */

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);

    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) == 0 && S_ISREG(st.st_mode))
            (void)load_file(argv[i]);
        else
            load_dir(argv[i]); /* reports a missing dir and goes on */
    }
    for (size_t i = 0; i < corpus_len; i++)
        run_one(corpus[i].data, corpus[i].size);

    uint8_t *buf = malloc(MAX_RANDOM_SIZE);
    if (!buf)
        return 2;
    for (unsigned long i = 0; i < iterations; i++) {
        size_t n = random_size();
        fill_random(buf, n);
        run_one(buf, n);
    }
    free(buf);

    unsigned long mutations = corpus_len ? iterations : 0;
    for (unsigned long i = 0; i < mutations; i++) {
        size_t n;
        uint8_t *m = mutate(&corpus[i % corpus_len], &n);
        if (!m)
            return 2;
        run_one(m, n);
        free(m);
    }

    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("%s: %zu corpus + %lu random + %lu mutated inputs, no crash (%.2f s)\n", target_name,
           corpus_len, iterations, mutations, secs);

    for (size_t i = 0; i < corpus_len; i++)
        free(corpus[i].data);
    free(corpus);
    return 0;
}
