/*
 * bench_async.c - many small transfers in flight on one link: how many
 * one-block pulls per second the task API (llmlink_pull_blocks_async,
 * llmlink_get_event_fd, llmlink_task_poll_done) completes, and how the
 * bandwidth at 16 KiB blocks compares with 1 MiB blocks.
 *
 * P runs in a separate process (small_session.h: one PROMPT engine, a
 * one-tensor blocks cache filled with a pattern); D (this process) links
 * to it and keeps DEPTH one-block pulls in flight: slot k pulls P's block
 * k into D's block k (distinct destinations, so tasks in flight never
 * write the same bytes). One thread waits on the engine's event fd
 * (poll), collects finished tasks with llmlink_task_poll_done, checks and
 * releases each, and submits the slot's next pull at once.
 *   a  requests/s: 16 KiB one-block pulls, DEPTH in flight, tcp and shm
 *   b  GB/s at 16 KiB and 1 MiB blocks (one block per task, DEPTH in
 *      flight), tcp and shm, and their ratio
 * Every slot's block is checked by content after its first pull and after
 * the last; the counters of D confirm the transport.
 *
 * It measures and prints; it asserts no speed. Exit status 1 when a cell
 * could not run (a FAILED row says why), 2 for a usage error.
 *
 * Built only once the library has the task API (see BENCH_NEEDS_TASKS in
 * the Makefile).
 *
 * Usage: bench_async [--quick] [--depth N] [--help]
 */
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "llmlink.h"
#include "small_session.h"

#define SERVER_REPLY_MS 10000
#define KIB ((uint64_t)1024)
#define MIB (KIB * 1024)
#define MAX_DEPTH 256
#define TASK_TIMEOUT_MS 5000
/* The event fd must wake within this long while tasks are in flight. */
#define FD_WAIT_MS 5000

static const char *const TRANSPORTS[] = {"tcp", "shm"};

typedef struct config {
    bool quick;
    int depth;      /* tasks in flight */
    int run_ms;     /* each cell submits for this long */
} config_t;

/* GB/s per [transport][0: 16 KiB, 1: 1 MiB], for the ratio rows. */
static double g_gbps[2][2];

typedef struct flight {
    small_session_t *s;
    int fd;
    llmlink_task_t *slot[MAX_DEPTH];
    uint64_t done, submitted;
    char err[400];
} flight_t;

static bool submit(flight_t *f, int k)
{
    uint64_t b = (uint64_t)k;
    llmlink_task_options_t o = LLMLINK_TASK_OPTIONS_INIT;
    o.timeout_ms = TASK_TIMEOUT_MS;
    o.user_data = (void *)(uintptr_t)(k + 1);
    llmlink_status_t st = llmlink_pull_blocks_async(f->s->d, &f->s->key, f->s->cache_id, &b, 1,
                                                    &b, 1, NULL, &o, &f->slot[k]);
    if (st != LLMLINK_SUCCESS) {
        small_api_error(f->err, sizeof f->err, "llmlink_pull_blocks_async", st);
        return false;
    }
    f->submitted++;
    return true;
}

/* Collects what finished; resubmits its slot while `more`. */
static bool collect(flight_t *f, bool more, bool check)
{
    llmlink_task_t *t[MAX_DEPTH];
    size_t n = 0;
    llmlink_status_t st = llmlink_task_poll_done(f->s->d, t, MAX_DEPTH, &n);
    if (st != LLMLINK_SUCCESS) {
        small_api_error(f->err, sizeof f->err, "llmlink_task_poll_done", st);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        uintptr_t k1 = (uintptr_t)llmlink_task_user_data(t[i]);
        llmlink_status_t ts = llmlink_task_status(t[i]);
        if (k1 == 0 || k1 > MAX_DEPTH || f->slot[k1 - 1] != t[i]) {
            snprintf(f->err, sizeof f->err, "llmlink_task_poll_done gave a task of no slot");
            return false;
        }
        if (ts != LLMLINK_SUCCESS) {
            snprintf(f->err, sizeof f->err, "task of slot %zu: %s: %s", (size_t)(k1 - 1),
                     llmlink_status_name(ts), llmlink_task_error(t[i]));
            return false;
        }
        llmlink_task_release(t[i]);
        f->slot[k1 - 1] = NULL;
        f->done++;
        uint64_t b = k1 - 1;
        if (check && !small_session_check(f->s, b, b, f->err, sizeof f->err))
            return false;
        if (more && !submit(f, (int)(k1 - 1)))
            return false;
    }
    return true;
}

/* Waits for the event fd (bounded), then collects. */
static bool wait_some(flight_t *f, bool more, bool check)
{
    struct pollfd p = {.fd = f->fd, .events = POLLIN};
    int r = poll(&p, 1, FD_WAIT_MS);
    if (r == 0) {
        snprintf(f->err, sizeof f->err, "the event fd stayed quiet for %d ms with %" PRIu64
                 " tasks in flight", FD_WAIT_MS, f->submitted - f->done);
        return false;
    }
    return r > 0 && collect(f, more, check);
}

/* Cancels and releases what is still in flight (after a failure). */
static void drop_all(flight_t *f, int depth)
{
    for (int k = 0; k < depth; k++)
        if (f->slot[k]) {
            llmlink_task_release(f->slot[k]);
            f->slot[k] = NULL;
        }
}

/* One round of `depth` first pulls, each checked. */
static bool first_round(flight_t *f, int depth)
{
    for (int k = 0; k < depth; k++)
        if (!submit(f, k))
            return false;
    while (f->done < f->submitted)
        if (!wait_some(f, false, true))
            return false;
    return true;
}

typedef struct cell_res {
    bool ok;
    double per_s, gbps;
    uint64_t tasks;
} cell_res_t;

static cell_res_t run_flight(const config_t *cfg, small_session_t *s, char *err, size_t len)
{
    cell_res_t res = {false, 0, 0, 0};
    flight_t f;
    memset(&f, 0, sizeof f);
    f.s = s;
    llmlink_status_t st = llmlink_get_event_fd(s->d, &f.fd);
    if (st != LLMLINK_SUCCESS) {
        small_api_error(err, len, "llmlink_get_event_fd", st);
        return res;
    }
    bool ok = first_round(&f, cfg->depth);
    uint64_t req0 = small_session_requests(s), done0 = f.done;
    int64_t t0 = bench_now_ns();
    for (int k = 0; ok && k < cfg->depth; k++)
        ok = submit(&f, k);
    while (ok && bench_now_ns() - t0 < (int64_t)cfg->run_ms * 1000000)
        ok = wait_some(&f, true, false);
    while (ok && f.done < f.submitted) /* drain: the last ones, checked */
        ok = wait_some(&f, false, true);
    double secs = (double)(bench_now_ns() - t0) / 1e9;
    if (!ok) {
        snprintf(err, len, "%s", f.err);
        drop_all(&f, cfg->depth);
        return res;
    }
    res.tasks = f.done - done0;
    if (small_session_requests(s) - req0 < res.tasks) {
        snprintf(err, len, "D's counters show fewer %s requests than tasks", s->pc.transport);
        return res;
    }
    res.ok = true;
    res.per_s = (double)res.tasks / secs;
    res.gbps = res.per_s * (double)s->pc.block_bytes / 1e9;
    return res;
}

static cell_res_t cell(const config_t *cfg, size_t ti, uint64_t block, const char *fig, char sec)
{
    char err[400], err2[400];
    small_session_t s;
    cell_res_t r = {false, 0, 0, 0};
    if (!small_session_open(&s, TRANSPORTS[ti], block, (uint64_t)cfg->depth, err, sizeof err)) {
        bench_failed(sec, fig, "%s", err);
        small_session_close(&s, err2, sizeof err2);
        return r;
    }
    r = run_flight(cfg, &s, err, sizeof err);
    if (!r.ok)
        bench_failed(sec, fig, "%s", err);
    if (!small_session_close(&s, err2, sizeof err2)) {
        bench_failed(sec, fig, "teardown: %s", err2);
        r.ok = false;
    }
    return r;
}

static void sections(const config_t *cfg)
{
    bench_progress("sections a, b: %d one-block pulls in flight on one link", cfg->depth);
    for (size_t ti = 0; ti < 2; ti++) {
        char fig[96], d[360];
        const char *tp = TRANSPORTS[ti];
        snprintf(fig, sizeof fig, "pull %s 16 KiB, 1 block, %d in flight", tp, cfg->depth);
        cell_res_t r = cell(cfg, ti, 16 * KIB, fig, 'a');
        if (r.ok) {
            snprintf(d, sizeof d, "%" PRIu64 " tasks in %.1f s, 1 thread on the event fd; "
                     "goal: >= 150000", r.tasks, (double)cfg->run_ms / 1000);
            bench_add_row('a', fig, "1/s", d, "%.0f", r.per_s);
            snprintf(fig, sizeof fig, "pull %s 16 KiB blocks, %d in flight", tp, cfg->depth);
            bench_add_row('b', fig, "GB/s", "from a", "%.2f", r.gbps);
            g_gbps[ti][0] = r.gbps;
            bench_progress("a %s: %.0f requests/s", tp, r.per_s);
        }
        snprintf(fig, sizeof fig, "pull %s 1 MiB blocks, %d in flight", tp, cfg->depth);
        r = cell(cfg, ti, MIB, fig, 'b');
        if (r.ok) {
            snprintf(d, sizeof d, "%" PRIu64 " tasks of one 1 MiB block", r.tasks);
            bench_add_row('b', fig, "GB/s", d, "%.2f", r.gbps);
            g_gbps[ti][1] = r.gbps;
        }
        if (g_gbps[ti][0] > 0 && g_gbps[ti][1] > 0) {
            snprintf(fig, sizeof fig, "pull %s 16 KiB / 1 MiB blocks", tp);
            snprintf(d, sizeof d, "%.2f / %.2f GB/s; goal: >= 0.8", g_gbps[ti][0],
                     g_gbps[ti][1]);
            bench_add_row('b', fig, "x", d, "%.2f", g_gbps[ti][0] / g_gbps[ti][1]);
        }
    }
}

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_async [--quick] [--depth N]\n"
               "  a  one-block 16 KiB pulls per second, N in flight on one link (tcp, shm)\n"
               "  b  GB/s at 16 KiB and 1 MiB blocks, N in flight, and the ratio\n"
               "  --depth N   tasks in flight (1..%d; default 64)\n"
               "  --quick     0.5 s per cell instead of 3 s (a smoke run, not figures)\n",
            MAX_DEPTH);
}

int main(int argc, char **argv)
{
    static const bench_conf_t conf = {
        .name = "bench_async",
        .fail_as_cell = true,
        .server_label = "P",
        .max_servers = 2,
        .server_reply_ms = SERVER_REPLY_MS,
        .server_stop_ms = 10000,
    };
    bench_init(&conf);
    config_t cfg = {false, 64, 3000};
    for (int i = 1; i < argc; i++) {
        const char *val = NULL;
        int got;
        if (strcmp(argv[i], "--quick") == 0) {
            cfg.quick = true;
            cfg.run_ms = 500;
        } else if ((got = bench_opt_value(argc, argv, &i, "--depth", &val)) != 0) {
            char *end = NULL;
            long d = got > 0 ? strtol(val, &end, 10) : 0;
            if (got < 0 || *val == '\0' || *end != '\0' || d < 1 || d > MAX_DEPTH) {
                fprintf(stderr, "bench_async: --depth takes 1..%d\n", MAX_DEPTH);
                return 2;
            }
            cfg.depth = (int)d;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "bench_async: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    char tail[64];
    snprintf(tail, sizeof tail, " | %d in flight", cfg.depth);
    bench_print_header("llmlink async benchmark", " (P and D share them)", cfg.quick, false, tail);
    int64_t t0 = bench_now_ms();
    sections(&cfg);
    bench_progress("done in %.1f s", (double)(bench_now_ms() - t0) / 1000.0);
    bench_print_table();
    fflush(stdout);
    bench_stop_all_servers();
    return bench_any_failed() ? 1 : 0;
}
