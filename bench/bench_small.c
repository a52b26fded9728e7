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
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "llmlink.h"
#include "small_session.h"

#define SERVER_REPLY_MS 10000
#define NBLOCKS 16
#define SRC_BLOCK 3
#define DST_BLOCK 5
#define KIB ((uint64_t)1024)
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

static void cell(const config_t *cfg, size_t ti, size_t si, double *lat)
{
    const char *tp = TRANSPORTS[ti];
    char err[400], err2[400], fig[96], d[360];
    uint64_t kib = SIZES[si] / KIB;
    snprintf(fig, sizeof fig, "pull %s %" PRIu64 " KiB, 1 block", tp, kib);
    small_session_t s;
    if (!small_session_open(&s, tp, SIZES[si], NBLOCKS, err, sizeof err)) {
        bench_failed('a', fig, "%s", err);
        small_session_close(&s, err2, sizeof err2);
        return;
    }
    llmlink_status_t st = small_session_pull(&s, SRC_BLOCK, DST_BLOCK);
    if (st != LLMLINK_SUCCESS) {
        small_api_error(err, sizeof err, "llmlink_pull_blocks", st);
        bench_failed('a', fig, "first call: %s", err);
        small_session_close(&s, err2, sizeof err2);
        return;
    }
    if (!small_session_check(&s, SRC_BLOCK, DST_BLOCK, err, sizeof err)) {
        bench_failed('a', fig, "first call: %s", err);
        small_session_close(&s, err2, sizeof err2);
        return;
    }
    for (int k = 0; k < cfg->warmup && st == LLMLINK_SUCCESS; k++)
        st = small_session_pull(&s, SRC_BLOCK, DST_BLOCK);
    uint64_t req0 = small_session_requests(&s);
    int n = 0;
    int64_t start = bench_now_ns();
    for (; n < cfg->iters && st == LLMLINK_SUCCESS; n++) {
        if ((n & 63) == 0 && (bench_now_ns() - start) / 1000000 > cfg->cell_cap_ms)
            break;
        int64_t t0 = bench_now_ns();
        st = small_session_pull(&s, SRC_BLOCK, DST_BLOCK);
        lat[n] = (double)(bench_now_ns() - t0) / 1000.0;
    }
    double wall_s = (double)(bench_now_ns() - start) / 1e9;
    uint64_t reqs = small_session_requests(&s) - req0;
    if (st != LLMLINK_SUCCESS) {
        small_api_error(err, sizeof err, "llmlink_pull_blocks", st);
        bench_failed('a', fig, "call %d: %s", n, err);
        small_session_close(&s, err2, sizeof err2);
        return;
    }
    if (reqs < (uint64_t)n) {
        bench_failed('a', fig, "D's counters show %" PRIu64 " %s requests for %d calls", reqs, tp,
                     n);
        small_session_close(&s, err2, sizeof err2);
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
    if (!small_session_close(&s, err2, sizeof err2))
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
