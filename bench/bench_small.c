/*
 * bench_small.c - what one small transfer costs: the latency of a blocking
 * one-block llmlink_pull_blocks between a prefill (PROMPT) and a decode
 * (DECODER) process, over tcp and shm. Paged KV pays this per request
 * (thousands of scattered 16 KiB blocks), so the fixed cost of a call
 * matters more there than bandwidth.
 *
 * P runs in a separate process (a fork()ed child, see bench_common.h): one
 * PROMPT engine on 127.0.0.1:0 with a blocks cache of one tensor of
 * NBLOCKS blocks, filled with a pattern. D (this process) creates a
 * DECODER engine with a cache of the same geometry, links, and pulls one
 * block (P's block 3 into D's block 5) again and again: every call moves
 * exactly one block of one tensor (4, 16 or 64 KiB).
 *   a  sync latency: WARMUP calls, then up to ITERS timed calls (each timed
 *      alone with CLOCK_MONOTONIC around llmlink_pull_blocks), median,
 *      p99, mean, calls per second from one thread; tcp and shm
 *      (llmlink.Transport), 4 KiB, 16 KiB, 64 KiB blocks
 *   r  ratios: shm / tcp median at 16 KiB, and the goal (<= 25 us median
 *      over tcp) side by side with the figure
 * The first call of every cell is checked by content, and D's transfer
 * counters confirm which transport ran.
 *
 * It measures and prints; it asserts no speed. Exit status 1 when a cell
 * could not run (a FAILED row says why), 2 for a usage error.
 *
 * Usage: bench_small [--quick] [--iters N] [--only a] [--transport tcp|shm]
 *                    [--size 4|16|64] [--help]
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench_common.h"
#include "llmlink.h"

#define XFER_WAIT_MS "5000"
#define SERVER_REPLY_MS 10000
#define NBLOCKS 16
#define SRC_BLOCK 3
#define DST_BLOCK 5
#define KIB ((uint64_t)1024)
#define D_CLUSTER_ID 1
#define MAX_ITERS 200000

static const uint64_t SIZES[] = {4 * KIB, 16 * KIB, 64 * KIB};
#define NSIZES (sizeof SIZES / sizeof SIZES[0])
static const char *const TRANSPORTS[] = {"tcp", "shm"};

typedef struct config {
    bool quick;
    bool only[26];
    bool any_only;
    int iters;      /* timed calls per cell, at most */
    int warmup;     /* untimed calls first */
    int cell_cap_ms; /* a cell stops timing after this, even short of iters */
    const char *transport; /* --transport: only this one (NULL: both) */
    uint64_t size;         /* --size: only this block size (0: all) */
} config_t;

/* Medians per [transport][size], for section r. */
static double g_med[2][NSIZES];

static void api_error(char *err, size_t len, const char *fn, llmlink_status_t st)
{
    snprintf(err, len, "%s: %s (0x%08" PRIX32 "): %s", fn, llmlink_status_name(st), st,
             llmlink_last_error());
}

/* The byte at offset i of block b under seed: differs per block and seed. */
static uint8_t pat(uint64_t seed, uint64_t b, uint64_t i)
{
    uint64_t x = (seed + b * 0x9E3779B97F4A7C15ull) ^ (i * 0xBF58476D1CE4E5B9ull);
    return (uint8_t)(x ^ (x >> 29) ^ (x >> 47));
}

static llmlink_cache_desc_t desc_of(uint64_t block_bytes)
{
    llmlink_cache_desc_t d;
    memset(&d, 0, sizeof d);
    d.num_tensors = 1;
    d.data_type = LLMLINK_DT_FLOAT16;
    d.placement = LLMLINK_PLACEMENT_HOST;
    d.num_dims = 2;
    d.shape[0] = NBLOCKS;
    d.shape[1] = (int64_t)(block_bytes / 2);
    return d;
}

static llmlink_cache_key_t key_of(uint64_t cluster_id)
{
    llmlink_cache_key_t k;
    memset(&k, 0, sizeof k);
    k.type = LLMLINK_KEY_BLOCKS;
    k.cluster_id = cluster_id;
    k.prefix_id = -1;
    return k;
}

typedef struct pconf {
    uint64_t cluster_id, block_bytes, seed;
    const char *transport;
} pconf_t;

static void opts_build(llmlink_option_t *o, size_t *n, char *listen, size_t llen, bool srv,
                       const char *transport)
{
    *n = 0;
    snprintf(listen, llen, "%s:0", bench_ip());
    if (srv)
        o[(*n)++] = (llmlink_option_t){"llm.listenIpInfo", listen};
    o[(*n)++] = (llmlink_option_t){"llm.SyncKvCacheWaitTime", XFER_WAIT_MS};
    o[(*n)++] = (llmlink_option_t){"llmlink.Transport", transport};
}

static void server_child(const bench_child_t *c, const void *arg)
{
    const pconf_t *pc = arg;
    char line[512], err[400] = "";
    size_t bytes = (size_t)(pc->block_bytes * NBLOCKS);
    uint8_t *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        snprintf(line, sizeof line, "error mmap: %s\n", strerror(errno));
        bench_write_all(c->rsp_w, line);
        exit(1);
    }
    for (uint64_t b = 0; b < NBLOCKS; b++)
        for (uint64_t i = 0; i < pc->block_bytes; i++)
            mem[b * pc->block_bytes + i] = pat(pc->seed, b, i);
    llmlink_option_t o[4];
    size_t n;
    char listen[80];
    opts_build(o, &n, listen, sizeof listen, true, pc->transport);
    llmlink_t *e = NULL;
    int64_t cache_id = 0;
    uint16_t port = 0;
    llmlink_status_t st = llmlink_create(&e, LLMLINK_ROLE_PROMPT, pc->cluster_id);
    if (st != LLMLINK_SUCCESS)
        api_error(err, sizeof err, "P llmlink_create", st);
    if (st == LLMLINK_SUCCESS && (st = llmlink_init(e, o, n)) != LLMLINK_SUCCESS)
        api_error(err, sizeof err, "P llmlink_init", st);
    if (st == LLMLINK_SUCCESS && (st = llmlink_get_listen_port(e, 0, &port)) != LLMLINK_SUCCESS)
        api_error(err, sizeof err, "P llmlink_get_listen_port", st);
    if (st == LLMLINK_SUCCESS) {
        llmlink_cache_desc_t desc = desc_of(pc->block_bytes);
        llmlink_cache_key_t key = key_of(pc->cluster_id);
        uint64_t addr = (uint64_t)(uintptr_t)mem;
        st = llmlink_register_blocks_cache(e, &desc, &addr, 1, &key, &cache_id);
        if (st != LLMLINK_SUCCESS)
            api_error(err, sizeof err, "P llmlink_register_blocks_cache", st);
    }
    if (st != LLMLINK_SUCCESS) {
        snprintf(line, sizeof line, "error %s\n", err);
        bench_write_all(c->rsp_w, line);
        llmlink_destroy(e);
        exit(1);
    }
    bench_child_ready(c, port);
    bench_child_serve(c, NULL, NULL);
    int status = llmlink_unregister_cache(e, cache_id) == LLMLINK_SUCCESS ? 0 : 1;
    llmlink_destroy(e);
    munmap(mem, bytes);
    bench_child_exit(c, status);
}

/* One P process and one linked D engine. */
typedef struct session {
    pconf_t pc;
    bench_server_t srv;
    bool have_srv, linked;
    llmlink_t *d;
    uint8_t *mem;
    size_t bytes;
    int64_t cache_id;
    llmlink_ip_info_t ip;
    llmlink_cluster_info_t ci;
    llmlink_cache_key_t key;
} session_t;

static uint64_t g_next_cluster = 3000;

static bool session_open(session_t *s, const char *transport, uint64_t block_bytes, char *err,
                         size_t len)
{
    memset(s, 0, sizeof *s);
    s->pc = (pconf_t){g_next_cluster++, block_bytes, 0, transport};
    s->pc.seed = 0x5EED0000ull + s->pc.cluster_id;
    if (!bench_server_start(&s->srv, s->pc.cluster_id, server_child, &s->pc, err, len))
        return false;
    s->have_srv = true;
    s->bytes = (size_t)(block_bytes * NBLOCKS);
    s->mem = mmap(NULL, s->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (s->mem == MAP_FAILED) {
        s->mem = NULL;
        snprintf(err, len, "mmap: %s", strerror(errno));
        return false;
    }
    memset(s->mem, 0xA5, s->bytes);
    llmlink_option_t o[4];
    size_t n;
    char listen[80];
    opts_build(o, &n, listen, sizeof listen, false, transport);
    llmlink_status_t st = llmlink_create(&s->d, LLMLINK_ROLE_DECODER, D_CLUSTER_ID);
    if (st != LLMLINK_SUCCESS) {
        api_error(err, len, "llmlink_create", st);
        return false;
    }
    if ((st = llmlink_init(s->d, o, n)) != LLMLINK_SUCCESS) {
        api_error(err, len, "llmlink_init", st);
        return false;
    }
    llmlink_cache_desc_t desc = desc_of(block_bytes);
    uint64_t addr = (uint64_t)(uintptr_t)s->mem;
    st = llmlink_register_blocks_cache(s->d, &desc, &addr, 1, NULL, &s->cache_id);
    if (st != LLMLINK_SUCCESS) {
        api_error(err, len, "llmlink_register_blocks_cache", st);
        return false;
    }
    bench_server_target(&s->srv, &s->ip, &s->ci);
    llmlink_status_t per = LLMLINK_FAILED;
    st = llmlink_link_clusters(s->d, &s->ci, 1, LINK_TIMEOUT_MS, &per);
    if (st != LLMLINK_SUCCESS) {
        api_error(err, len, "llmlink_link_clusters", st);
        return false;
    }
    s->linked = true;
    s->key = key_of(s->pc.cluster_id);
    return true;
}

static llmlink_status_t session_pull(session_t *s)
{
    static const uint64_t src = SRC_BLOCK, dst = DST_BLOCK;
    return llmlink_pull_blocks(s->d, &s->key, s->cache_id, &src, 1, &dst, 1, NULL);
}

static bool session_verify(const session_t *s, char *err, size_t len)
{
    const uint8_t *b = s->mem + DST_BLOCK * s->pc.block_bytes;
    for (uint64_t i = 0; i < s->pc.block_bytes; i++)
        if (b[i] != pat(s->pc.seed, SRC_BLOCK, i)) {
            snprintf(err, len, "wrong byte at offset %" PRIu64 " of the pulled block", i);
            return false;
        }
    return true;
}

static bool session_close(session_t *s, char *err, size_t len)
{
    bool ok = true;
    if (s->linked) {
        llmlink_status_t per = LLMLINK_FAILED;
        llmlink_status_t st =
            llmlink_unlink_clusters(s->d, &s->ci, 1, UNLINK_TIMEOUT_MS, false, &per);
        if (st != LLMLINK_SUCCESS) {
            api_error(err, len, "llmlink_unlink_clusters", st);
            ok = false;
        }
    }
    if (s->cache_id > 0 && llmlink_unregister_cache(s->d, s->cache_id) != LLMLINK_SUCCESS &&
        ok) {
        api_error(err, len, "llmlink_unregister_cache", llmlink_last_error_status());
        ok = false;
    }
    llmlink_destroy(s->d);
    s->d = NULL;
    if (s->mem)
        munmap(s->mem, s->bytes);
    s->mem = NULL;
    if (s->have_srv && !bench_server_stop(&s->srv) && ok) {
        snprintf(err, len, "P process did not exit cleanly (see stderr)");
        ok = false;
    }
    s->have_srv = false;
    return ok;
}

/* Requests of `tp` that D's counters show: the transport really ran. */
static uint64_t tp_requests(llmlink_t *d, const char *tp)
{
    llmlink_xfer_stats_t x;
    memset(&x, 0, sizeof x);
    x.version = LLMLINK_XFER_STATS_VERSION;
    if (llmlink_get_xfer_stats(d, &x) != LLMLINK_SUCCESS)
        return 0;
    return strcmp(tp, "shm") == 0 ? x.shm_requests : x.tcp_requests;
}

static void cell(const config_t *cfg, size_t ti, size_t si, double *lat)
{
    const char *tp = TRANSPORTS[ti];
    char err[400], err2[400], fig[96], d[360];
    uint64_t kib = SIZES[si] / KIB;
    snprintf(fig, sizeof fig, "pull %s %" PRIu64 " KiB, 1 block", tp, kib);
    session_t s;
    if (!session_open(&s, tp, SIZES[si], err, sizeof err)) {
        bench_failed('a', fig, "%s", err);
        session_close(&s, err2, sizeof err2);
        return;
    }
    llmlink_status_t st = session_pull(&s);
    if (st != LLMLINK_SUCCESS) {
        api_error(err, sizeof err, "llmlink_pull_blocks", st);
        bench_failed('a', fig, "first call: %s", err);
        session_close(&s, err2, sizeof err2);
        return;
    }
    if (!session_verify(&s, err, sizeof err)) {
        bench_failed('a', fig, "first call: %s", err);
        session_close(&s, err2, sizeof err2);
        return;
    }
    for (int k = 0; k < cfg->warmup && st == LLMLINK_SUCCESS; k++)
        st = session_pull(&s);
    uint64_t req0 = tp_requests(s.d, tp);
    int n = 0;
    int64_t start = bench_now_ns();
    for (; n < cfg->iters && st == LLMLINK_SUCCESS; n++) {
        if ((n & 63) == 0 && (bench_now_ns() - start) / 1000000 > cfg->cell_cap_ms)
            break;
        int64_t t0 = bench_now_ns();
        st = session_pull(&s);
        lat[n] = (double)(bench_now_ns() - t0) / 1000.0;
    }
    double wall_s = (double)(bench_now_ns() - start) / 1e9;
    uint64_t reqs = tp_requests(s.d, tp) - req0;
    if (st != LLMLINK_SUCCESS) {
        api_error(err, sizeof err, "llmlink_pull_blocks", st);
        bench_failed('a', fig, "call %d: %s", n, err);
        session_close(&s, err2, sizeof err2);
        return;
    }
    if (reqs < (uint64_t)n) {
        bench_failed('a', fig, "D's counters show %" PRIu64 " %s requests for %d calls", reqs, tp,
                     n);
        session_close(&s, err2, sizeof err2);
        return;
    }
    double mean = 0;
    for (int k = 0; k < n; k++)
        mean += lat[k];
    mean /= n;
    double med = bench_median(lat, (size_t)n);
    double p99 = bench_percentile(lat, (size_t)n, 99);
    g_med[ti][si] = med;
    snprintf(d, sizeof d, "%d calls after %d warm-up, 1 thread; p99 %.1f us, mean %.1f us, "
             "%.0f calls/s", n, cfg->warmup, p99, mean, (double)n / wall_s);
    char f2[120];
    snprintf(f2, sizeof f2, "%s: median", fig);
    bench_add_row('a', f2, "us", d, "%.1f", med);
    snprintf(f2, sizeof f2, "%s: p99", fig);
    bench_add_row('a', f2, "us", "", "%.1f", p99);
    bench_progress("a %s: median %.1f us, p99 %.1f us, %d calls", fig, med, p99, n);
    if (!session_close(&s, err2, sizeof err2))
        bench_failed('a', fig, "teardown: %s", err2);
}

static void section_a(const config_t *cfg)
{
    bench_progress("section a: one-block pull_blocks latency, tcp and shm, 4/16/64 KiB");
    double *lat = calloc((size_t)cfg->iters, sizeof *lat);
    if (!lat) {
        bench_failed('a', "latency", "out of memory");
        return;
    }
    for (size_t ti = 0; ti < 2; ti++)
        for (size_t si = 0; si < NSIZES; si++)
            if ((!cfg->transport || strcmp(cfg->transport, TRANSPORTS[ti]) == 0) &&
                (!cfg->size || cfg->size == SIZES[si]))
                cell(cfg, ti, si, lat);
    free(lat);
}

static void section_r(void)
{
    char d[200];
    const size_t i16 = 1;
    if (g_med[0][i16] > 0 && g_med[1][i16] > 0) {
        snprintf(d, sizeof d, "%.1f / %.1f us medians (goal: <= 1, shm no slower than tcp)",
                 g_med[1][i16], g_med[0][i16]);
        bench_add_row('r', "shm / tcp latency, 16 KiB", "x", d, "%.2f",
                      g_med[1][i16] / g_med[0][i16]);
    }
    if (g_med[0][i16] > 0)
        bench_add_row('r', "tcp 16 KiB median vs goal", "us", "goal: <= 25 us median", "%.1f",
                      g_med[0][i16]);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_small [--quick] [--iters N] [--only a] [--transport tcp|shm]\n"
               "                   [--size 4|16|64]\n"
               "  a  one-block pull_blocks latency, tcp and shm, 4 / 16 / 64 KiB blocks\n"
               "  --transport, --size  only those cells (for profiling one path)\n"
               "  --iters N   timed calls per cell (100..%d; default 20000, --quick 2000)\n"
               "  --quick     fewer calls (a smoke run, not figures)\n",
            MAX_ITERS);
}

int main(int argc, char **argv)
{
    static const bench_conf_t conf = {
        .name = "bench_small",
        .fail_as_cell = true,
        .server_label = "P",
        .max_servers = 2,
        .server_reply_ms = SERVER_REPLY_MS,
        .server_stop_ms = 10000,
    };
    bench_init(&conf);
    config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    long iters = 0;
    for (int i = 1; i < argc; i++) {
        const char *val = NULL;
        int got;
        if (strcmp(argv[i], "--quick") == 0) {
            cfg.quick = true;
        } else if ((got = bench_opt_value(argc, argv, &i, "--iters", &val)) != 0) {
            char *end = NULL;
            iters = got > 0 ? strtol(val, &end, 10) : 0;
            if (got < 0 || *val == '\0' || *end != '\0' || iters < 100 || iters > MAX_ITERS) {
                fprintf(stderr, "bench_small: --iters takes 100..%d\n", MAX_ITERS);
                return 2;
            }
        } else if ((got = bench_opt_value(argc, argv, &i, "--transport", &val)) != 0) {
            if (got < 0 || (strcmp(val, "tcp") != 0 && strcmp(val, "shm") != 0)) {
                fprintf(stderr, "bench_small: --transport takes tcp or shm\n");
                return 2;
            }
            cfg.transport = val;
        } else if ((got = bench_opt_value(argc, argv, &i, "--size", &val)) != 0) {
            long kib = got > 0 ? strtol(val, NULL, 10) : 0;
            cfg.size = (uint64_t)kib * KIB;
            if (kib != 4 && kib != 16 && kib != 64) {
                fprintf(stderr, "bench_small: --size takes 4, 16 or 64 (KiB)\n");
                return 2;
            }
        } else if ((got = bench_opt_value(argc, argv, &i, "--only", &val)) != 0) {
            if (got < 0 || bench_parse_only(val, 'a', cfg.only) <= 0) {
                usage(stderr);
                return 2;
            }
            cfg.any_only = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "bench_small: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!cfg.any_only)
        cfg.only[0] = true;
    cfg.iters = iters ? (int)iters : cfg.quick ? 2000 : 20000;
    cfg.warmup = cfg.quick ? 100 : 1000;
    cfg.cell_cap_ms = cfg.quick ? 1000 : 5000;
    bench_print_header("llmlink small-request benchmark", " (P and D share them)", cfg.quick,
                       cfg.any_only, "");
    int64_t t0 = bench_now_ms();
    if (cfg.only[0])
        section_a(&cfg);
    section_r();
    bench_progress("done in %.1f s", (double)(bench_now_ms() - t0) / 1000.0);
    bench_print_table();
    fflush(stdout);
    bench_stop_all_servers();
    return bench_any_failed() ? 1 : 0;
}
