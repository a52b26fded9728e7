/*
 * bench_xfer.c - how fast llmlink moves KV cache blocks between a prefill
 * (PROMPT) and a decode (DECODER) process, and what a transfer costs in
 * memory.
 *
 * P runs in a separate process: for every measured cell a fork()ed child
 * creates one PROMPT engine listening on 127.0.0.1:0, registers a blocks
 * cache (8 tensors, filled with a pattern), reports its port on a pipe,
 * then answers line requests on another pipe until told to quit:
 *     "rss"            -> "rss <VmRSS in KiB>"
 *     "xstats"         -> "xstats <llmlink_get_xfer_stats fields>"
 *     "verify SEED M"  -> "ok" or "bad <where>": checks that its cache
 *                         holds what D pushed (pattern SEED, block map M:
 *                         's' scattered, 'c' contiguous)
 *     "quit"           -> unregisters, destroys its engine, "bye", exit 0
 * D (this process) creates a DECODER engine, registers a cache of the
 * same geometry, links, and moves the whole cache:
 *   a  pull: llmlink_pull_blocks of every block of P's cache into D's
 *      (source blocks 0..n-1 -> destination blocks scattered, so that no
 *      two blocks merge into one run), tcp and shm, 16 KiB .. 4 MiB blocks
 *   b  push: llmlink_push_blocks of every block of D's cache into P's
 *      (push is symmetric: D's blocks go into P's cache), same cells
 *   c  pull at 256 KiB over tcp with llmlink.StreamsPerLink 1, 2, 4
 *   d  VmRSS of both processes before and after moving 1 GiB each way
 *   r  ratios: shm / tcp, 16 KiB / 1 MiB, and (when run.sh measured them)
 *      tcp pull / iperf3 single stream and / ucx_perftest ucp_get
 * The first transfer of every cell is checked by content (a pattern that
 * depends on tensor, block and offset), so that no figure is reported for
 * wrong bytes; the engine's transfer counters confirm which transport ran.
 *
 * It measures and prints; it asserts no speed. The exit status is 1 when a
 * cell could not run (the table then has a FAILED row saying why), 2 for a
 * usage error.
 *
 * Usage: bench_xfer [--quick] [--only a,b,c,d] [--streams N]
 *                   [--ref-iperf3 GBPS|TEXT] [--ref-ucx GBPS|TEXT] [--help]
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "llmlink.h"

#define LOCALHOST "127.0.0.1"
#define LINK_TIMEOUT_MS 5000
#define UNLINK_TIMEOUT_MS 5000
/* llm.SyncKvCacheWaitTime on both engines: one pull of 256 MiB on a busy
 * 2-core machine must never hit the 1000 ms default. */
#define XFER_WAIT_MS "30000"
/* How long a request to a P child may take before it counts as dead (it
 * fills or checks up to 256 MiB for some requests). */
#define SERVER_REPLY_MS 30000
#define SERVER_MAX_LIFE_MS (2LL * 3600 * 1000)
#define MAX_SERVERS 4

#define NTENSORS 8
#define KIB ((uint64_t)1024)
#define MIB ((uint64_t)1024 * 1024)
#define D_CLUSTER_ID 1
#define P_MODEL_ID 0

static const uint64_t BLOCK_SIZES[] = {16 * KIB, 64 * KIB, 256 * KIB, 1 * MIB, 4 * MIB};
#define NSIZES (sizeof BLOCK_SIZES / sizeof BLOCK_SIZES[0])
static const char *const TRANSPORTS[] = {"tcp", "shm"};
static const int STREAM_COUNTS[] = {1, 2, 4};
#define NSTREAMCASES (sizeof STREAM_COUNTS / sizeof STREAM_COUNTS[0])

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t now_ms(void) { return now_ns() / 1000000; }

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void progress(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_xfer: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, size_t n)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static long self_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

static const char *size_name(uint64_t bytes, char *buf, size_t len)
{
    if (bytes >= 1024 * MIB && bytes % (1024 * MIB) == 0)
        snprintf(buf, len, "%" PRIu64 " GiB", bytes / (1024 * MIB));
    else if (bytes >= MIB && bytes % MIB == 0)
        snprintf(buf, len, "%" PRIu64 " MiB", bytes / MIB);
    else if (bytes >= KIB && bytes % KIB == 0)
        snprintf(buf, len, "%" PRIu64 " KiB", bytes / KIB);
    else
        snprintf(buf, len, "%" PRIu64 " B", bytes);
    return buf;
}

/* "LLM_PARAM_INVALID (0x5010B005): <last error>" for call `fn`. */
static void api_error(char *err, size_t len, const char *fn, llmlink_status_t st)
{
    snprintf(err, len, "%s: %s (0x%08" PRIX32 "): %s", fn, llmlink_status_name(st), st,
             llmlink_last_error());
}

/* ------------------------------------------------------------------ */
/* Results table                                                       */
/* ------------------------------------------------------------------ */

typedef struct row {
    char sec;
    char figure[96];
    char value[24];
    char unit[16];
    char detail[360];
} row_t;

static row_t g_rows[160];
static size_t g_nrows;
static bool g_failed;

static void add_row(char sec, const char *figure, const char *unit, const char *detail,
                    const char *vfmt, ...) __attribute__((format(printf, 5, 6)));
static void add_row(char sec, const char *figure, const char *unit, const char *detail,
                    const char *vfmt, ...)
{
    if (g_nrows == sizeof g_rows / sizeof g_rows[0])
        return;
    row_t *r = &g_rows[g_nrows++];
    r->sec = sec;
    snprintf(r->figure, sizeof r->figure, "%s", figure);
    snprintf(r->unit, sizeof r->unit, "%s", unit);
    snprintf(r->detail, sizeof r->detail, "%s", detail ? detail : "");
    /* A '|' in a message would break the markdown table. */
    for (char *p = r->detail; *p; p++)
        if (*p == '|' || *p == '\n')
            *p = '/';
    va_list ap;
    va_start(ap, vfmt);
    vsnprintf(r->value, sizeof r->value, vfmt, ap);
    va_end(ap);
}

static void cell_failed(char sec, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void cell_failed(char sec, const char *what, const char *fmt, ...)
{
    char detail[360];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    progress("%c %s: FAILED: %s", sec, what, detail);
    add_row(sec, what, "", detail, "FAILED");
    g_failed = true;
}

/* ------------------------------------------------------------------ */
/* KV memory and its pattern                                           */
/* ------------------------------------------------------------------ */

typedef struct kv {
    uint8_t *base; /* one mapping; tensor t at base + t * tensor_bytes */
    size_t bytes;
    uint32_t ntensors;
    uint64_t nblocks, block_bytes, tensor_bytes;
    uint64_t addrs[NTENSORS];
} kv_t;

static bool kv_alloc(kv_t *kv, uint32_t ntensors, uint64_t nblocks, uint64_t block_bytes)
{
    memset(kv, 0, sizeof *kv);
    kv->ntensors = ntensors;
    kv->nblocks = nblocks;
    kv->block_bytes = block_bytes;
    kv->tensor_bytes = nblocks * block_bytes;
    kv->bytes = (size_t)(kv->tensor_bytes * ntensors);
    void *p = mmap(NULL, kv->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        kv->base = NULL;
        return false;
    }
    kv->base = p;
    for (uint32_t t = 0; t < ntensors; t++)
        kv->addrs[t] = (uint64_t)(uintptr_t)(kv->base + t * kv->tensor_bytes);
    return true;
}

static void kv_free(kv_t *kv)
{
    if (kv->base)
        munmap(kv->base, kv->bytes);
    kv->base = NULL;
}

static uint8_t *kv_block(const kv_t *kv, uint32_t t, uint64_t b)
{
    return kv->base + t * kv->tensor_bytes + b * kv->block_bytes;
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 31;
    return x;
}

/* The 64-bit words of block b of tensor t under `seed`: distinct within a
 * block, different from block to block and tensor to tensor. */
static uint64_t pat_base(uint64_t seed, uint32_t t, uint64_t b)
{
    return mix64(seed ^ mix64(((uint64_t)t << 40) ^ (b + 1)));
}
#define PAT_STEP 0x9E3779B97F4A7C15ull

static void pat_fill(uint8_t *blk, uint64_t bytes, uint64_t base)
{
    uint64_t *w = (uint64_t *)(void *)blk, x = 0;
    for (uint64_t i = 0; i < bytes / 8; i++, x += PAT_STEP)
        w[i] = base ^ x;
}

/* Offset of the first wrong word, or -1. */
static int64_t pat_check(const uint8_t *blk, uint64_t bytes, uint64_t base)
{
    const uint64_t *w = (const uint64_t *)(const void *)blk;
    uint64_t x = 0;
    for (uint64_t i = 0; i < bytes / 8; i++, x += PAT_STEP)
        if (w[i] != (base ^ x))
            return (int64_t)(i * 8);
    return -1;
}

static void kv_fill(kv_t *kv, uint64_t seed)
{
    for (uint32_t t = 0; t < kv->ntensors; t++)
        for (uint64_t b = 0; b < kv->nblocks; b++)
            pat_fill(kv_block(kv, t, b), kv->block_bytes, pat_base(seed, t, b));
}

static uint64_t gcd64(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t r = a % b;
        a = b;
        b = r;
    }
    return a;
}

/* Where source block i lands. 's' (scattered): i * s mod n with s coprime
 * to n and s != 1 mod n, so no destination follows the previous one and
 * every block is its own run; 'c' (contiguous): i, one run per tensor. */
static void block_map(char kind, uint64_t n, uint64_t *src, uint64_t *dst)
{
    uint64_t s = n / 2 + 1;
    while (n >= 3 && gcd64(s, n) != 1)
        s++;
    for (uint64_t i = 0; i < n; i++) {
        src[i] = i;
        if (kind == 'c' || n == 1)
            dst[i] = i;
        else if (n == 2)
            dst[i] = 1 - i;
        else
            dst[i] = (i * s) % n;
    }
}

/* Checks that block dst[i] of every tensor of kv holds pattern `seed` of
 * block src[i]. */
static bool kv_check_mapped(const kv_t *kv, uint64_t seed, const uint64_t *src,
                            const uint64_t *dst, uint64_t n, char *err, size_t len)
{
    for (uint32_t t = 0; t < kv->ntensors; t++)
        for (uint64_t i = 0; i < n; i++) {
            int64_t off = pat_check(kv_block(kv, t, dst[i]), kv->block_bytes,
                                    pat_base(seed, t, src[i]));
            if (off >= 0) {
                snprintf(err, len, "wrong bytes: tensor %u, block %" PRIu64 " (from block %" PRIu64
                         "), offset %" PRId64, t, dst[i], src[i], off);
                return false;
            }
        }
    return true;
}

static llmlink_cache_desc_t kv_desc(const kv_t *kv)
{
    llmlink_cache_desc_t d;
    memset(&d, 0, sizeof d);
    d.num_tensors = kv->ntensors;
    d.data_type = LLMLINK_DT_FLOAT16;
    d.placement = LLMLINK_PLACEMENT_HOST;
    d.num_dims = 2;
    d.shape[0] = (int64_t)kv->nblocks;
    d.shape[1] = (int64_t)(kv->block_bytes / 2);
    return d;
}

static llmlink_cache_key_t blocks_key(uint64_t cluster_id)
{
    llmlink_cache_key_t k;
    memset(&k, 0, sizeof k);
    k.type = LLMLINK_KEY_BLOCKS;
    k.cluster_id = cluster_id;
    k.model_id = P_MODEL_ID;
    k.prefix_id = -1;
    return k;
}

/* ------------------------------------------------------------------ */
/* Engine options                                                      */
/* ------------------------------------------------------------------ */

typedef struct eopts {
    llmlink_option_t o[4];
    size_t n;
    char streams[16];
} eopts_t;

/* Fills *eo in place (its options point into it: do not copy it). */
static void eopts_build(eopts_t *eo, bool listen, const char *transport, int streams)
{
    eo->n = 0;
    if (listen)
        eo->o[eo->n++] = (llmlink_option_t){"llm.listenIpInfo", LOCALHOST ":0"};
    eo->o[eo->n++] = (llmlink_option_t){"llm.SyncKvCacheWaitTime", XFER_WAIT_MS};
    if (transport)
        eo->o[eo->n++] = (llmlink_option_t){"llmlink.Transport", transport};
    if (streams > 0) {
        snprintf(eo->streams, sizeof eo->streams, "%d", streams);
        eo->o[eo->n++] = (llmlink_option_t){"llmlink.StreamsPerLink", eo->streams};
    }
}

/* ------------------------------------------------------------------ */
/* P processes                                                         */
/* ------------------------------------------------------------------ */

typedef struct pconf {
    uint64_t cluster_id;
    const char *transport; /* "tcp", "shm" */
    int streams;           /* 0: the library's default */
    uint32_t ntensors;
    uint64_t nblocks, block_bytes;
    uint64_t seed; /* P's cache is filled with this pattern */
} pconf_t;

typedef struct server {
    pid_t pid;
    int cmd_w; /* parent -> child requests */
    int rsp_r; /* child -> parent replies */
    uint16_t port;
    uint64_t cluster_id;
} server_t;

static server_t *g_servers[MAX_SERVERS];
static bool g_is_child;

/* Reads one '\n'-terminated line from fd within timeout_ms (-1: forever).
 * Returns its length, 0 on EOF, -1 on error or timeout. */
static int read_line(int fd, char *buf, size_t len, int timeout_ms)
{
    size_t n = 0;
    int64_t deadline = timeout_ms < 0 ? 0 : now_ms() + timeout_ms;
    while (n + 1 < len) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int wait = -1;
        if (timeout_ms >= 0) {
            int64_t left = deadline - now_ms();
            if (left <= 0)
                return -1;
            wait = (int)left;
        }
        int r = poll(&p, 1, wait);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        char ch;
        ssize_t got = read(fd, &ch, 1);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return -1;
        if (got == 0)
            return n ? -1 : 0;
        if (ch == '\n') {
            buf[n] = '\0';
            return (int)n;
        }
        buf[n++] = ch;
    }
    return -1;
}

static bool write_all(int fd, const char *s)
{
    size_t len = strlen(s), off = 0;
    while (off < len) {
        ssize_t w = write(fd, s + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        off += (size_t)w;
    }
    return true;
}

/* In the child: close every inherited descriptor except stdio and ours. */
static void close_inherited_fds(int keep1, int keep2)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return;
    int fds[1024];
    size_t n = 0;
    struct dirent *de;
    int self = dirfd(d);
    while ((de = readdir(d)) != NULL && n < sizeof fds / sizeof fds[0]) {
        if (!isdigit((unsigned char)de->d_name[0]))
            continue;
        int fd = atoi(de->d_name);
        if (fd > 2 && fd != keep1 && fd != keep2 && fd != self)
            fds[n++] = fd;
    }
    closedir(d);
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
}

static void xstats_line(llmlink_t *e, char *out, size_t len)
{
    llmlink_xfer_stats_t s;
    memset(&s, 0, sizeof s);
    s.version = LLMLINK_XFER_STATS_VERSION;
    llmlink_status_t st = llmlink_get_xfer_stats(e, &s);
    if (st != LLMLINK_SUCCESS) {
        snprintf(out, len, "error llmlink_get_xfer_stats: %s: %s\n", llmlink_status_name(st),
                 llmlink_last_error());
        return;
    }
    snprintf(out, len,
             "xstats %u %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64
             " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n",
             s.caches, s.transfers, s.transfers_failed, s.transfers_timed_out, s.bytes_requested,
             s.bytes_served, s.requests_served, s.requests_refused, s.tcp_requests,
             s.shm_requests, s.shm_fallbacks);
}

static bool parse_xstats(const char *line, llmlink_xfer_stats_t *s)
{
    memset(s, 0, sizeof *s);
    unsigned long long v[10];
    unsigned caches;
    if (sscanf(line, "xstats %u %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &caches,
               &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]) != 11)
        return false;
    s->version = LLMLINK_XFER_STATS_VERSION;
    s->caches = caches;
    s->transfers = v[0];
    s->transfers_failed = v[1];
    s->transfers_timed_out = v[2];
    s->bytes_requested = v[3];
    s->bytes_served = v[4];
    s->requests_served = v[5];
    s->requests_refused = v[6];
    s->tcp_requests = v[7];
    s->shm_requests = v[8];
    s->shm_fallbacks = v[9];
    return true;
}

static void server_child(int cmd_r, int rsp_w, const pconf_t *pc, pid_t parent)
{
    g_is_child = true;
    memset(g_servers, 0, sizeof g_servers);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(1);
    close_inherited_fds(cmd_r, rsp_w);

    char line[512], err[400];
    kv_t kv;
    llmlink_t *e = NULL;
    int64_t cache_id = 0;
    if (!kv_alloc(&kv, pc->ntensors, pc->nblocks, pc->block_bytes)) {
        snprintf(line, sizeof line, "error mmap of %" PRIu64 " bytes: %s\n",
                 pc->nblocks * pc->block_bytes * pc->ntensors, strerror(errno));
        write_all(rsp_w, line);
        exit(1);
    }
    kv_fill(&kv, pc->seed);

    eopts_t eo;
    eopts_build(&eo, true, pc->transport, pc->streams);
    llmlink_status_t st = llmlink_create(&e, LLMLINK_ROLE_PROMPT, pc->cluster_id);
    if (st != LLMLINK_SUCCESS)
        api_error(err, sizeof err, "P llmlink_create", st);
    if (st == LLMLINK_SUCCESS && (st = llmlink_init(e, eo.o, eo.n)) != LLMLINK_SUCCESS)
        api_error(err, sizeof err, "P llmlink_init", st);
    uint16_t port = 0;
    if (st == LLMLINK_SUCCESS && (st = llmlink_get_listen_port(e, 0, &port)) != LLMLINK_SUCCESS)
        api_error(err, sizeof err, "P llmlink_get_listen_port", st);
    if (st == LLMLINK_SUCCESS) {
        llmlink_cache_desc_t desc = kv_desc(&kv);
        llmlink_cache_key_t key = blocks_key(pc->cluster_id);
        st = llmlink_register_blocks_cache(e, &desc, kv.addrs, kv.ntensors, &key, &cache_id);
        if (st != LLMLINK_SUCCESS)
            api_error(err, sizeof err, "P llmlink_register_blocks_cache", st);
    }
    if (st != LLMLINK_SUCCESS) {
        snprintf(line, sizeof line, "error %s\n", err);
        write_all(rsp_w, line);
        llmlink_destroy(e);
        kv_free(&kv);
        exit(1);
    }
    snprintf(line, sizeof line, "port %u\n", (unsigned)port);
    write_all(rsp_w, line);

    uint64_t *src = calloc(kv.nblocks, sizeof *src);
    uint64_t *dst = calloc(kv.nblocks, sizeof *dst);
    int64_t give_up = now_ms() + SERVER_MAX_LIFE_MS;
    while (now_ms() < give_up) {
        int n = read_line(cmd_r, line, sizeof line, 1000);
        if (n < 0) {
            if (getppid() != parent)
                break;
            continue;
        }
        if (n == 0 || strcmp(line, "quit") == 0)
            break;
        char out[512];
        unsigned long long seed;
        char map;
        if (strcmp(line, "rss") == 0) {
            snprintf(out, sizeof out, "rss %ld\n", self_rss_kib());
        } else if (strcmp(line, "xstats") == 0) {
            xstats_line(e, out, sizeof out);
        } else if (sscanf(line, "verify %llu %c", &seed, &map) == 2 && src && dst) {
            block_map(map, kv.nblocks, src, dst);
            if (kv_check_mapped(&kv, seed, src, dst, kv.nblocks, err, sizeof err))
                snprintf(out, sizeof out, "ok\n");
            else
                snprintf(out, sizeof out, "bad in P's cache: %s\n", err);
        } else {
            snprintf(out, sizeof out, "error unknown request \"%.64s\"\n", line);
        }
        if (!write_all(rsp_w, out))
            break;
    }
    free(src);
    free(dst);
    int status = 0;
    st = llmlink_unregister_cache(e, cache_id);
    if (st != LLMLINK_SUCCESS) {
        fprintf(stderr, "bench_xfer: P llmlink_unregister_cache: %s: %s\n",
                llmlink_status_name(st), llmlink_last_error());
        status = 1;
    }
    llmlink_destroy(e);
    kv_free(&kv);
    write_all(rsp_w, "bye\n");
    close(cmd_r);
    close(rsp_w);
    exit(status); /* exit(), not _exit(): LeakSanitizer checks the child too */
}

static void server_forget(server_t *s)
{
    for (size_t i = 0; i < MAX_SERVERS; i++)
        if (g_servers[i] == s)
            g_servers[i] = NULL;
}

/* "quit", then up to 10 s for the child to exit, then SIGKILL. Returns
 * false when it did not exit with status 0. */
static bool server_stop(server_t *s)
{
    if (s->pid <= 0)
        return true;
    bool clean = true;
    if (s->cmd_w >= 0) {
        write_all(s->cmd_w, "quit\n");
        close(s->cmd_w);
        s->cmd_w = -1;
    }
    int status = 0;
    pid_t r = 0;
    for (int i = 0; i < 1000; i++) {
        r = waitpid(s->pid, &status, WNOHANG);
        if (r != 0)
            break;
        sleep_ms(10);
    }
    if (r == 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, &status, 0);
        clean = false;
        progress("P %" PRIu64 " (pid %d) did not exit within 10 s; killed", s->cluster_id,
                 (int)s->pid);
    } else if (r > 0 && (!WIFEXITED(status) || WEXITSTATUS(status) != 0)) {
        clean = false;
        if (WIFEXITED(status))
            progress("P %" PRIu64 " (pid %d) exited with status %d", s->cluster_id, (int)s->pid,
                     WEXITSTATUS(status));
        else
            progress("P %" PRIu64 " (pid %d) died of signal %d", s->cluster_id, (int)s->pid,
                     WTERMSIG(status));
    }
    if (s->rsp_r >= 0)
        close(s->rsp_r);
    s->rsp_r = -1;
    s->pid = 0;
    server_forget(s);
    return clean;
}

/* Forks a P child. Call only while this process runs no engine (fork
 * copies only the calling thread) and holds no large buffer. */
static bool server_start(server_t *s, const pconf_t *pc, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    s->cmd_w = s->rsp_r = -1;
    s->cluster_id = pc->cluster_id;
    size_t slot = MAX_SERVERS;
    for (size_t i = 0; i < MAX_SERVERS; i++)
        if (!g_servers[i]) {
            slot = i;
            break;
        }
    if (slot == MAX_SERVERS) {
        snprintf(err, errlen, "more than %d P processes", MAX_SERVERS);
        return false;
    }
    int cmd[2], rsp[2];
    if (pipe2(cmd, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return false;
    }
    if (pipe2(rsp, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        close(cmd[0]);
        close(cmd[1]);
        return false;
    }
    pid_t parent = getpid();
    fflush(NULL); /* or the child's exit() flushes our buffers a second time */
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        close(cmd[0]);
        close(cmd[1]);
        close(rsp[0]);
        close(rsp[1]);
        return false;
    }
    if (pid == 0) {
        close(cmd[1]);
        close(rsp[0]);
        server_child(cmd[0], rsp[1], pc, parent);
        _exit(1); /* not reached */
    }
    close(cmd[0]);
    close(rsp[1]);
    s->pid = pid;
    s->cmd_w = cmd[1];
    s->rsp_r = rsp[0];
    g_servers[slot] = s;

    char line[512];
    int n = read_line(s->rsp_r, line, sizeof line, SERVER_REPLY_MS);
    unsigned port = 0;
    if (n > 0 && sscanf(line, "port %u", &port) == 1 && port > 0 && port < 65536) {
        s->port = (uint16_t)port;
        return true;
    }
    snprintf(err, errlen, "P %" PRIu64 " did not start: %.300s", pc->cluster_id,
             n > 0 ? line : n == 0 ? "it exited" : "no answer");
    server_stop(s);
    return false;
}

static bool server_request(server_t *s, const char *req, char *reply, size_t len)
{
    char msg[96];
    snprintf(msg, sizeof msg, "%s\n", req);
    if (s->pid <= 0 || !write_all(s->cmd_w, msg))
        return false;
    return read_line(s->rsp_r, reply, len, SERVER_REPLY_MS) > 0;
}

static long server_rss_kib(server_t *s)
{
    char line[512];
    long kib = -1;
    if (!server_request(s, "rss", line, sizeof line) || sscanf(line, "rss %ld", &kib) != 1)
        return -1;
    return kib;
}

static bool server_xstats(server_t *s, llmlink_xfer_stats_t *st)
{
    char line[512];
    return server_request(s, "xstats", line, sizeof line) && parse_xstats(line, st);
}

static void stop_all_servers(void)
{
    if (g_is_child)
        return;
    for (size_t i = 0; i < MAX_SERVERS; i++)
        if (g_servers[i])
            server_stop(g_servers[i]);
}

/* ------------------------------------------------------------------ */
/* A session: one P process, one D engine, linked, caches registered   */
/* ------------------------------------------------------------------ */

typedef struct session {
    pconf_t pc;
    server_t srv;
    bool have_srv;
    llmlink_t *d;
    kv_t kv;
    int64_t cache_id;
    bool linked;
    llmlink_ip_info_t ip;
    llmlink_cluster_info_t ci;
    llmlink_cache_key_t pkey;
    char map; /* 's' or 'c' */
    uint64_t *src, *dst, n;
    uint64_t bytes; /* per transfer: every block of every tensor */
    uint64_t d_seed;
} session_t;

static uint64_t g_next_cluster = 1000;

typedef struct config {
    bool quick;
    bool only[26];
    bool any_only;
    int streams;        /* --streams; 0: library default */
    uint64_t tensor_bytes; /* per tensor, so 8 x this per transfer */
    int reps;           /* transfers per run */
    int runs;           /* runs per cell (median) */
    int run_cap_ms;     /* a run stops after this, even short of reps */
    uint64_t rss_bytes; /* section d: bytes moved each way */
    const char *ref_iperf3, *ref_ucx;
} config_t;

/* Starts P, creates and links D, registers D's cache. D's cache holds
 * pattern d_seed when fill_d (push), else poison bytes (pull). */
static bool session_open(session_t *s, const config_t *cfg, const char *transport, int streams,
                         uint64_t block_bytes, char map, bool fill_d, char *err, size_t len)
{
    memset(s, 0, sizeof *s);
    s->map = map;
    s->pc.cluster_id = g_next_cluster++;
    s->pc.transport = transport;
    s->pc.streams = streams;
    s->pc.ntensors = NTENSORS;
    s->pc.block_bytes = block_bytes;
    s->pc.nblocks = cfg->tensor_bytes / block_bytes;
    s->pc.seed = 0x5EED0000ull + s->pc.cluster_id;
    s->d_seed = 0xD00D0000ull + s->pc.cluster_id;
    s->n = s->pc.nblocks;
    s->bytes = s->n * block_bytes * NTENSORS;
    if (s->n == 0) {
        snprintf(err, len, "tensor of %" PRIu64 " bytes is smaller than one block",
                 cfg->tensor_bytes);
        return false;
    }
    /* Fork first: this process holds no engine and no cache now. */
    if (!server_start(&s->srv, &s->pc, err, len))
        return false;
    s->have_srv = true;

    s->src = calloc(s->n, sizeof *s->src);
    s->dst = calloc(s->n, sizeof *s->dst);
    if (!s->src || !s->dst || !kv_alloc(&s->kv, NTENSORS, s->n, block_bytes)) {
        snprintf(err, len, "out of memory for D's cache (%" PRIu64 " bytes)", s->bytes);
        return false;
    }
    block_map(map, s->n, s->src, s->dst);
    if (fill_d)
        kv_fill(&s->kv, s->d_seed);
    else
        memset(s->kv.base, 0xA5, s->kv.bytes); /* and resident, as P's is */

    eopts_t eo;
    eopts_build(&eo, false, transport, streams);
    llmlink_status_t st = llmlink_create(&s->d, LLMLINK_ROLE_DECODER, D_CLUSTER_ID);
    if (st != LLMLINK_SUCCESS) {
        api_error(err, len, "llmlink_create", st);
        return false;
    }
    if ((st = llmlink_init(s->d, eo.o, eo.n)) != LLMLINK_SUCCESS) {
        api_error(err, len, "llmlink_init", st);
        return false;
    }
    llmlink_cache_desc_t desc = kv_desc(&s->kv);
    st = llmlink_register_blocks_cache(s->d, &desc, s->kv.addrs, NTENSORS, NULL, &s->cache_id);
    if (st != LLMLINK_SUCCESS) {
        api_error(err, len, "llmlink_register_blocks_cache", st);
        return false;
    }
    s->ip.ip = LOCALHOST;
    s->ip.port = s->srv.port;
    s->ci.remote_cluster_id = s->pc.cluster_id;
    s->ci.remote_role = LLMLINK_ROLE_PROMPT;
    s->ci.remote_ip_infos = &s->ip;
    s->ci.num_remote_ip_infos = 1;
    llmlink_status_t per = LLMLINK_FAILED;
    st = llmlink_link_clusters(s->d, &s->ci, 1, LINK_TIMEOUT_MS, &per);
    if (st != LLMLINK_SUCCESS) {
        api_error(err, len, "llmlink_link_clusters", st);
        size_t l = strlen(err);
        snprintf(err + l, len - l, " (per-cluster %s)", llmlink_status_name(per));
        return false;
    }
    s->linked = true;
    s->pkey = blocks_key(s->pc.cluster_id);
    return true;
}

/* One whole-cache transfer. */
static llmlink_status_t session_xfer(session_t *s, bool push)
{
    if (push)
        return llmlink_push_blocks(s->d, &s->pkey, s->cache_id, s->src, s->n, s->dst, s->n,
                                   NULL);
    return llmlink_pull_blocks(s->d, &s->pkey, s->cache_id, s->src, s->n, s->dst, s->n, NULL);
}

static bool d_xstats(session_t *s, llmlink_xfer_stats_t *st)
{
    memset(st, 0, sizeof *st);
    st->version = LLMLINK_XFER_STATS_VERSION;
    return llmlink_get_xfer_stats(s->d, st) == LLMLINK_SUCCESS;
}

/* Unlinks, unregisters, destroys D, stops P. Returns false (with err) when
 * a step failed or P did not exit cleanly. */
static bool session_close(session_t *s, char *err, size_t len)
{
    bool ok = true;
    if (s->linked) {
        llmlink_status_t per = LLMLINK_FAILED;
        llmlink_status_t st =
            llmlink_unlink_clusters(s->d, &s->ci, 1, UNLINK_TIMEOUT_MS, false, &per);
        if (st != LLMLINK_SUCCESS && ok) {
            api_error(err, len, "llmlink_unlink_clusters", st);
            ok = false;
        }
    }
    if (s->cache_id > 0) {
        llmlink_status_t st = llmlink_unregister_cache(s->d, s->cache_id);
        if (st != LLMLINK_SUCCESS && ok) {
            api_error(err, len, "llmlink_unregister_cache", st);
            ok = false;
        }
    }
    llmlink_destroy(s->d);
    s->d = NULL;
    kv_free(&s->kv);
    free(s->src);
    free(s->dst);
    s->src = s->dst = NULL;
    if (s->have_srv && !server_stop(&s->srv) && ok) {
        snprintf(err, len, "P process did not exit cleanly (see stderr)");
        ok = false;
    }
    s->have_srv = false;
    return ok;
}

/* Checks the first transfer's bytes: D's cache after a pull, P's after a
 * push. */
static bool session_verify(session_t *s, bool push, char *err, size_t len)
{
    if (!push)
        return kv_check_mapped(&s->kv, s->pc.seed, s->src, s->dst, s->n, err, len);
    char req[64], line[512];
    snprintf(req, sizeof req, "verify %" PRIu64 " %c", s->d_seed, s->map);
    if (!server_request(&s->srv, req, line, sizeof line)) {
        snprintf(err, len, "P did not answer \"verify\"");
        return false;
    }
    if (strcmp(line, "ok") != 0) {
        snprintf(err, len, "%.300s", line);
        return false;
    }
    return true;
}

/* ------------------------------------------------------------------ */
/* One bandwidth cell                                                  */
/* ------------------------------------------------------------------ */

typedef struct cell_res {
    bool ok;
    double gbps; /* median of the runs */
} cell_res_t;

static cell_res_t run_cell(const config_t *cfg, char sec, bool push, const char *transport,
                           int streams, uint64_t block_bytes, char map, const char *figure)
{
    cell_res_t res = {false, 0};
    char err[400], err2[400], bs[32], d[360];
    size_name(block_bytes, bs, sizeof bs);
    const char *op = push ? "llmlink_push_blocks" : "llmlink_pull_blocks";
    session_t s;
    if (!session_open(&s, cfg, transport, streams, block_bytes, map, push, err, sizeof err)) {
        cell_failed(sec, figure, "%s", err);
        session_close(&s, err2, sizeof err2);
        return res;
    }
    llmlink_xfer_stats_t x0, x1;
    if (!d_xstats(&s, &x0)) {
        api_error(err, sizeof err, "llmlink_get_xfer_stats", llmlink_last_error_status());
        cell_failed(sec, figure, "%s", err);
        session_close(&s, err2, sizeof err2);
        return res;
    }

    /* The first transfer: checked by content, timed on its own. */
    int64_t t0 = now_ns();
    llmlink_status_t st = session_xfer(&s, push);
    double first = (double)s.bytes / (double)(now_ns() - t0);
    if (st != LLMLINK_SUCCESS) {
        api_error(err, sizeof err, op, st);
        cell_failed(sec, figure, "first transfer: %s", err);
        session_close(&s, err2, sizeof err2);
        return res;
    }
    if (!session_verify(&s, push, err, sizeof err)) {
        cell_failed(sec, figure, "first transfer moved wrong data: %s", err);
        session_close(&s, err2, sizeof err2);
        return res;
    }

    double runs[16];
    int nruns = cfg->runs < 16 ? cfg->runs : 16;
    int min_reps = cfg->reps;
    for (int r = 0; r < nruns; r++) {
        int64_t start = now_ns();
        int k = 0;
        for (; k < cfg->reps; k++) {
            if (k > 0 && (now_ns() - start) / 1000000 > cfg->run_cap_ms)
                break;
            st = session_xfer(&s, push);
            if (st != LLMLINK_SUCCESS)
                break;
        }
        if (st != LLMLINK_SUCCESS) {
            api_error(err, sizeof err, op, st);
            cell_failed(sec, figure, "run %d, transfer %d: %s", r + 1, k + 1, err);
            session_close(&s, err2, sizeof err2);
            return res;
        }
        if (k < min_reps)
            min_reps = k;
        runs[r] = (double)s.bytes * k / (double)(now_ns() - start);
    }
    d_xstats(&s, &x1);
    uint64_t tcp = x1.tcp_requests - x0.tcp_requests;
    uint64_t shm = x1.shm_requests - x0.shm_requests;
    uint64_t fb = x1.shm_fallbacks - x0.shm_fallbacks;
    bool closed = session_close(&s, err2, sizeof err2);

    double sorted[16];
    memcpy(sorted, runs, sizeof runs[0] * (size_t)nruns);
    double med = median(sorted, (size_t)nruns);
    char runs_s[96] = "";
    for (int r = 0; r < nruns; r++) {
        size_t l = strlen(runs_s);
        snprintf(runs_s + l, sizeof runs_s - l, "%s%.2f", r ? " " : "", runs[r]);
    }
    char ts[48];
    snprintf(d, sizeof d,
             "median of %d runs (%s); %" PRIu64 " MiB per call = %u tensors x %" PRIu64
             " blocks (%s list), %d call%s per run; first call %.2f GB/s, verified; D sent %" PRIu64
             " tcp / %" PRIu64 " shm requests",
             nruns, runs_s, s.bytes / MIB, NTENSORS, s.n, map == 'c' ? "contiguous" : "scattered",
             min_reps, min_reps == 1 ? "" : "s", first, tcp, shm);
    if (fb)
        snprintf(ts, sizeof ts, ", %" PRIu64 " shm fallbacks", fb);
    else
        ts[0] = '\0';
    strncat(d, ts, sizeof d - strlen(d) - 1);
    add_row(sec, figure, "GB/s", d, "%.2f", med);
    progress("%c %s: %.2f GB/s (runs %s; first %.2f; verified)", sec, figure, med, runs_s, first);

    /* The counters say which transport really ran. */
    bool want_shm = strcmp(transport, "shm") == 0;
    if ((want_shm && (shm == 0 || tcp != 0 || fb != 0)) || (!want_shm && (tcp == 0 || shm != 0))) {
        cell_failed(sec, figure,
                    "transport check: asked for %s, D's counters say %" PRIu64 " tcp / %" PRIu64
                    " shm requests, %" PRIu64 " shm fallbacks (llmlink_get_xfer_stats)",
                    transport, tcp, shm, fb);
        return res;
    }
    /* The figure stands (its bytes were verified); a failed teardown is a
     * problem of its own. */
    res.ok = true;
    res.gbps = med;
    if (!closed) {
        char fig[128];
        snprintf(fig, sizeof fig, "%s: teardown", figure);
        cell_failed(sec, fig, "%s", err2);
    }
    return res;
}

/* ------------------------------------------------------------------ */
/* Sections                                                            */
/* ------------------------------------------------------------------ */

/* Figures kept for the summary and the ratios: [push][transport][size]. */
static double g_bw[2][2][NSIZES];
static double g_bw_contig[2]; /* pull, 16 KiB, contiguous list: [transport] */
static double g_bw_streams[NSTREAMCASES];

static bool size_in_run(const config_t *cfg, size_t i)
{
    if (BLOCK_SIZES[i] > cfg->tensor_bytes / 4)
        return false; /* fewer than 4 blocks per tensor: not a block list */
    /* --quick: 16 KiB, 256 KiB and 1 MiB (the ratios need them). */
    return !cfg->quick || BLOCK_SIZES[i] == 16 * KIB || BLOCK_SIZES[i] == 256 * KIB ||
           BLOCK_SIZES[i] == 1 * MIB;
}

static void section_bw(const config_t *cfg, bool push)
{
    char sec = push ? 'b' : 'a';
    progress("section %c: %s bandwidth, tcp and shm, %" PRIu64 " MiB per call", sec,
             push ? "push" : "pull", cfg->tensor_bytes * NTENSORS / MIB);
    for (size_t tr = 0; tr < 2; tr++)
        for (size_t i = 0; i < NSIZES; i++) {
            if (!size_in_run(cfg, i))
                continue;
            char fig[96], bs[32];
            snprintf(fig, sizeof fig, "%s, %s, %s blocks", push ? "push" : "pull", TRANSPORTS[tr],
                     size_name(BLOCK_SIZES[i], bs, sizeof bs));
            cell_res_t r =
                run_cell(cfg, sec, push, TRANSPORTS[tr], cfg->streams, BLOCK_SIZES[i], 's', fig);
            if (r.ok)
                g_bw[push][tr][i] = r.gbps;
        }
    if (push || cfg->quick)
        return;
    /* For contrast: a contiguous list merges into one run per tensor. */
    for (size_t tr = 0; tr < 2; tr++) {
        char fig[96];
        snprintf(fig, sizeof fig, "pull, %s, 16 KiB blocks, contiguous list (runs merge)",
                 TRANSPORTS[tr]);
        cell_res_t r = run_cell(cfg, sec, false, TRANSPORTS[tr], cfg->streams, 16 * KIB, 'c', fig);
        if (r.ok)
            g_bw_contig[tr] = r.gbps;
    }
}

static void section_c(const config_t *cfg)
{
    progress("section c: pull, tcp, 256 KiB blocks, llmlink.StreamsPerLink 1, 2, 4");
    for (size_t k = 0; k < NSTREAMCASES; k++) {
        char fig[96];
        snprintf(fig, sizeof fig, "pull, tcp, 256 KiB blocks, %d stream%s per link",
                 STREAM_COUNTS[k], STREAM_COUNTS[k] == 1 ? "" : "s");
        cell_res_t r = run_cell(cfg, 'c', false, "tcp", STREAM_COUNTS[k], 256 * KIB, 's', fig);
        if (r.ok)
            g_bw_streams[k] = r.gbps;
    }
}

/* d: VmRSS of P and D before and after moving rss_bytes each way, with
 * the caches resident from the start: what grows is the library's own
 * memory (a staging copy of the data would show as hundreds of MiB). */
static void section_d_one(const config_t *cfg, const char *tp)
{
    char err[400], err2[400], fig[96], d[360], ms[32];
    snprintf(fig, sizeof fig, "%s: RSS around pull + push", tp);
    session_t s;
    /* D's cache holds its own pattern (resident); the pull overwrites
     * it, and the push afterwards sends those bytes back to P. */
    if (!session_open(&s, cfg, tp, cfg->streams, 256 * KIB, 's', true, err, sizeof err)) {
        cell_failed('d', fig, "%s", err);
        session_close(&s, err2, sizeof err2);
        return;
    }
    sleep_ms(100);
    long p0 = server_rss_kib(&s.srv), d0 = self_rss_kib();
    uint64_t calls = cfg->rss_bytes / s.bytes ? cfg->rss_bytes / s.bytes : 1;
    llmlink_status_t st = LLMLINK_SUCCESS;
    uint64_t k = 0;
    for (; k < calls && st == LLMLINK_SUCCESS; k++)
        st = session_xfer(&s, false);
    if (st != LLMLINK_SUCCESS) {
        api_error(err, sizeof err, "llmlink_pull_blocks", st);
        cell_failed('d', fig, "pull %" PRIu64 ": %s", k, err);
        session_close(&s, err2, sizeof err2);
        return;
    }
    if (!kv_check_mapped(&s.kv, s.pc.seed, s.src, s.dst, s.n, err, sizeof err)) {
        cell_failed('d', fig, "pull moved wrong data: %s", err);
        session_close(&s, err2, sizeof err2);
        return;
    }
    long p1 = server_rss_kib(&s.srv), d1 = self_rss_kib();
    for (k = 0; k < calls && st == LLMLINK_SUCCESS; k++)
        st = session_xfer(&s, true);
    if (st != LLMLINK_SUCCESS) {
        api_error(err, sizeof err, "llmlink_push_blocks", st);
        cell_failed('d', fig, "push %" PRIu64 ": %s", k, err);
        session_close(&s, err2, sizeof err2);
        return;
    }
    long p2 = server_rss_kib(&s.srv), d2 = self_rss_kib();
    llmlink_xfer_stats_t px;
    bool have_px = server_xstats(&s.srv, &px);
    uint64_t moved = calls * s.bytes;
    size_name(moved, ms, sizeof ms);
    if (p0 < 0 || p1 < 0 || p2 < 0 || d0 < 0 || d1 < 0 || d2 < 0) {
        cell_failed('d', fig, "could not read VmRSS");
    } else {
        snprintf(d, sizeof d, "P: %ld -> %ld KiB; each process holds a %" PRIu64
                 " MiB cache; %" PRIu64 " pulls of 256 KiB blocks", p0, p1, s.bytes / MIB, calls);
        snprintf(fig, sizeof fig, "%s: P RSS growth, pulling %s", tp, ms);
        add_row('d', fig, "KiB", d, "%ld", p1 - p0);
        snprintf(d, sizeof d, "D: %ld -> %ld KiB", d0, d1);
        snprintf(fig, sizeof fig, "%s: D RSS growth, pulling %s", tp, ms);
        add_row('d', fig, "KiB", d, "%ld", d1 - d0);
        snprintf(d, sizeof d, "P: %ld -> %ld KiB", p1, p2);
        if (have_px) {
            size_t l = strlen(d);
            snprintf(d + l, sizeof d - l, "; P served %.2f GiB in all",
                     (double)px.bytes_served / (double)(1ull << 30));
        }
        snprintf(fig, sizeof fig, "%s: P RSS growth, then pushing %s", tp, ms);
        add_row('d', fig, "KiB", d, "%ld", p2 - p1);
        snprintf(d, sizeof d, "D: %ld -> %ld KiB", d1, d2);
        snprintf(fig, sizeof fig, "%s: D RSS growth, then pushing %s", tp, ms);
        add_row('d', fig, "KiB", d, "%ld", d2 - d1);
        progress("d %s: P %ld -> %ld -> %ld KiB, D %ld -> %ld -> %ld KiB", tp, p0, p1, p2, d0,
                 d1, d2);
    }
    if (!session_close(&s, err2, sizeof err2)) {
        snprintf(fig, sizeof fig, "%s: teardown", tp);
        cell_failed('d', fig, "%s", err2);
    }
}

static void section_d(const config_t *cfg)
{
    char ms[32];
    progress("section d: VmRSS of P and D before and after moving %s each way",
             size_name(cfg->rss_bytes, ms, sizeof ms));
    for (size_t tr = 0; tr < 2; tr++)
        section_d_one(cfg, TRANSPORTS[tr]);
}

/* A reference figure from run.sh: a number (GB/s) or a reason. */
static bool ref_value(const char *s, double *v)
{
    if (!s)
        return false;
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !(x > 0))
        return false;
    *v = x;
    return true;
}

static void ratio_row(const char *fig, double num, double den, const char *detail)
{
    if (num > 0 && den > 0)
        add_row('r', fig, "x", detail, "%.2f", num / den);
    else
        add_row('r', fig, "x", "a figure it needs is missing", "n/a");
}

static size_t size_index(uint64_t bytes)
{
    for (size_t i = 0; i < NSIZES; i++)
        if (BLOCK_SIZES[i] == bytes)
            return i;
    return 0;
}

static void section_r(const config_t *cfg)
{
    char d[360];
    size_t i16 = size_index(16 * KIB), i256 = size_index(256 * KIB), i1m = size_index(1 * MIB);
    double iperf = 0, ucx = 0;
    bool have_iperf = ref_value(cfg->ref_iperf3, &iperf);
    bool have_ucx = ref_value(cfg->ref_ucx, &ucx);
    if (cfg->ref_iperf3 && have_iperf)
        add_row('r', "reference: iperf3, 1 TCP stream, 127.0.0.1", "GB/s",
                "measured by bench/run.sh just before this run (receiver sum)", "%.2f", iperf);
    else if (cfg->ref_iperf3)
        add_row('r', "reference: iperf3, 1 TCP stream, 127.0.0.1", "GB/s", cfg->ref_iperf3,
                "n/a");
    if (cfg->ref_ucx && have_ucx)
        add_row('r', "reference: ucx_perftest ucp_get, UCX_TLS=tcp, 256 KiB", "GB/s",
                "measured by bench/run.sh just before this run (UCX_NET_DEVICES=lo)", "%.2f",
                ucx);
    else if (cfg->ref_ucx)
        add_row('r', "reference: ucx_perftest ucp_get, UCX_TLS=tcp, 256 KiB", "GB/s",
                cfg->ref_ucx, "n/a");
    double tcp256 = g_bw[0][0][i256];
    if (cfg->ref_iperf3 && cfg->only[0]) {
        snprintf(d, sizeof d, "%.2f GB/s / %s", tcp256, have_iperf ? "iperf3" : cfg->ref_iperf3);
        ratio_row("pull tcp 256 KiB / iperf3 single stream", tcp256, iperf, d);
    }
    if (cfg->ref_iperf3 && cfg->only[2]) {
        snprintf(d, sizeof d, "%.2f GB/s (section c) / %s", g_bw_streams[0],
                 have_iperf ? "iperf3" : cfg->ref_iperf3);
        ratio_row("pull tcp 256 KiB, 1 stream per link / iperf3 single stream", g_bw_streams[0],
                  iperf, d);
    }
    if (cfg->ref_ucx && cfg->only[0]) {
        snprintf(d, sizeof d, "%.2f GB/s / %s", tcp256, have_ucx ? "ucp_get" : cfg->ref_ucx);
        ratio_row("pull tcp 256 KiB / ucx_perftest ucp_get (tcp)", tcp256, ucx, d);
    }
    for (int push = 0; push < 2; push++) {
        if (!cfg->only[push])
            continue;
        char fig[96];
        const char *op = push ? "push" : "pull";
        snprintf(fig, sizeof fig, "%s shm / tcp, 256 KiB", op);
        snprintf(d, sizeof d, "%.2f / %.2f GB/s", g_bw[push][1][i256], g_bw[push][0][i256]);
        ratio_row(fig, g_bw[push][1][i256], g_bw[push][0][i256], d);
        for (size_t tr = 0; tr < 2; tr++) {
            snprintf(fig, sizeof fig, "%s %s 16 KiB / 1 MiB blocks", op, TRANSPORTS[tr]);
            snprintf(d, sizeof d, "%.2f / %.2f GB/s: the cost of small blocks",
                     g_bw[push][tr][i16], g_bw[push][tr][i1m]);
            ratio_row(fig, g_bw[push][tr][i16], g_bw[push][tr][i1m], d);
        }
    }
    if (!cfg->quick && cfg->only[0])
        for (size_t tr = 0; tr < 2; tr++) {
            char fig[96];
            snprintf(fig, sizeof fig, "pull %s 16 KiB, contiguous / scattered list",
                     TRANSPORTS[tr]);
            snprintf(d, sizeof d, "%.2f / %.2f GB/s: what merging blocks into runs saves",
                     g_bw_contig[tr], g_bw[0][tr][i16]);
            ratio_row(fig, g_bw_contig[tr], g_bw[0][tr][i16], d);
        }
    if (cfg->only[2]) {
        snprintf(d, sizeof d, "%.2f / %.2f GB/s", g_bw_streams[NSTREAMCASES - 1], g_bw_streams[0]);
        ratio_row("pull tcp 256 KiB, 4 streams / 1 stream", g_bw_streams[NSTREAMCASES - 1],
                  g_bw_streams[0], d);
    }
}

static void print_summary(const config_t *cfg)
{
    bool any = false;
    for (int p = 0; p < 2; p++)
        for (int t = 0; t < 2; t++)
            for (size_t i = 0; i < NSIZES; i++)
                any |= g_bw[p][t][i] > 0;
    if (!any)
        return;
    printf("\nGB/s (1e9 bytes/s), median of %d runs; P and D on one machine:\n\n", cfg->runs);
    printf("| block | pull tcp | pull shm | push tcp | push shm |\n");
    printf("|------:|---------:|---------:|---------:|---------:|\n");
    for (size_t i = 0; i < NSIZES; i++) {
        if (!size_in_run(cfg, i))
            continue;
        char bs[32];
        printf("| %s |", size_name(BLOCK_SIZES[i], bs, sizeof bs));
        for (int p = 0; p < 2; p++)
            for (int t = 0; t < 2; t++) {
                if (g_bw[p][t][i] > 0)
                    printf(" %.2f |", g_bw[p][t][i]);
                else
                    printf(" - |");
            }
        printf("\n");
    }
}

/* ------------------------------------------------------------------ */
/* Main                                                                */
/* ------------------------------------------------------------------ */

static void cpu_model(char *buf, size_t len)
{
    snprintf(buf, len, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0)
            continue;
        char *p = strchr(line, ':');
        if (!p)
            continue;
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        p[strcspn(p, "\n")] = '\0';
        snprintf(buf, len, "%s", p);
        break;
    }
    fclose(f);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_xfer [--quick] [--only a,b,c,d] [--streams N]\n"
            "                  [--ref-iperf3 GBPS|TEXT] [--ref-ucx GBPS|TEXT]\n"
            "  a  pull bandwidth, tcp and shm, 16 KiB .. 4 MiB blocks\n"
            "  b  push bandwidth, the same cells\n"
            "  c  pull at 256 KiB over tcp with 1, 2, 4 streams per link\n"
            "  d  VmRSS of P and D before and after moving 1 GiB each way\n"
            "  (ratios, section r, follow from a, b and the references)\n"
            "  --quick        32 MiB per call, 16 KiB / 256 KiB / 1 MiB blocks (a smoke run)\n"
            "  --streams N    llmlink.StreamsPerLink (1..8) for a, b, d; default: the library's\n"
            "  --ref-iperf3, --ref-ucx  reference figures (GB/s) measured by bench/run.sh, or\n"
            "                 a reason why there is none; printed with our ratios to them\n");
}

int main(int argc, char **argv)
{
    config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        size_t alen = strcspn(a, "=");
#define OPT_IS(name) (alen == strlen(name) && strncmp(a, name, alen) == 0)
        bool takes = OPT_IS("--only") || OPT_IS("--streams") || OPT_IS("--ref-iperf3") ||
                     OPT_IS("--ref-ucx");
        if (takes) {
            if (a[alen] == '=')
                val = a + alen + 1;
            else if (i + 1 < argc)
                val = argv[++i];
            if (!val) {
                fprintf(stderr, "bench_xfer: %s needs a value\n", a);
                usage(stderr);
                return 2;
            }
        }
        if (strcmp(a, "--quick") == 0) {
            cfg.quick = true;
        } else if (takes && OPT_IS("--only")) {
            for (const char *p = val; *p; p++) {
                if (*p == ',' || *p == ' ')
                    continue;
                char c = (char)tolower((unsigned char)*p);
                if (c < 'a' || c > 'd') {
                    fprintf(stderr, "bench_xfer: unknown section '%c'\n", *p);
                    usage(stderr);
                    return 2;
                }
                cfg.only[c - 'a'] = true;
                cfg.any_only = true;
            }
            if (!cfg.any_only) {
                usage(stderr);
                return 2;
            }
        } else if (takes && OPT_IS("--streams")) {
            char *end;
            long n = strtol(val, &end, 10);
            if (*val == '\0' || *end != '\0' || n < 1 || n > 8) {
                fprintf(stderr, "bench_xfer: --streams takes 1..8, not '%s'\n", val);
                return 2;
            }
            cfg.streams = (int)n;
        } else if (takes && OPT_IS("--ref-iperf3")) {
            cfg.ref_iperf3 = val;
        } else if (takes && OPT_IS("--ref-ucx")) {
            cfg.ref_ucx = val;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "bench_xfer: unknown argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!cfg.any_only)
        for (int i = 0; i < 4; i++)
            cfg.only[i] = true;
    cfg.tensor_bytes = cfg.quick ? 4 * MIB : 32 * MIB; /* 8 tensors: 32 / 256 MiB per call */
    cfg.reps = cfg.quick ? 2 : 4;                     /* 64 MiB / 1 GiB per run */
    cfg.runs = 3;
    cfg.run_cap_ms = cfg.quick ? 2000 : 5000;
    cfg.rss_bytes = cfg.quick ? 256 * MIB : 1024 * MIB;

    signal(SIGPIPE, SIG_IGN);
    atexit(stop_all_servers);

    char date[64], cpu[256];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S %Z", &tm);
    struct utsname un;
    if (uname(&un) != 0)
        snprintf(un.release, sizeof un.release, "unknown");
    cpu_model(cpu, sizeof cpu);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    char streams[32];
    if (cfg.streams)
        snprintf(streams, sizeof streams, "%d", cfg.streams);
    else
        snprintf(streams, sizeof streams, "library default");

    printf("# llmlink transfer benchmark\n\n");
    printf("date %s | kernel %s | cpu %s | %ld cores (P and D share them) | llmlink %s | %s "
           "run%s | StreamsPerLink %s\n\n",
           date, un.release, cpu, cores, llmlink_version_string(), cfg.quick ? "quick" : "full",
           cfg.any_only ? " (--only)" : "", streams);
    fflush(stdout);

    int64_t t0 = now_ms();
    if (cfg.only[0])
        section_bw(&cfg, false);
    if (cfg.only[1])
        section_bw(&cfg, true);
    if (cfg.only[2])
        section_c(&cfg);
    if (cfg.only[3])
        section_d(&cfg);
    if (cfg.only[0] || cfg.only[1] || cfg.only[2])
        section_r(&cfg);
    progress("done in %.1f s", (double)(now_ms() - t0) / 1000.0);

    printf("| # | figure | value | unit | detail |\n");
    printf("|---|--------|------:|------|--------|\n");
    for (size_t i = 0; i < g_nrows; i++)
        printf("| %c | %s | %s | %s | %s |\n", g_rows[i].sec, g_rows[i].figure, g_rows[i].value,
               g_rows[i].unit, g_rows[i].detail);
    print_summary(&cfg);
    fflush(stdout);
    stop_all_servers();
    return g_failed ? 1 : 0;
}
