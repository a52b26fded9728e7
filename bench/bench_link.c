/*
 * bench_link.c - how fast llmlink links clusters, and what a link costs.
 *
 * The prefill side (PROMPT engines) runs in separate processes: each server
 * is a fork()ed child that creates one PROMPT engine listening on
 * 127.0.0.1:0, reports its port on a pipe, then answers line requests on
 * another pipe until told to quit:
 *     "rss"   -> "rss <VmRSS in KiB>"
 *     "stats" -> "stats <llmlink_get_stats fields>"
 *     "quit"  -> destroys its engine, answers "bye", exits 0
 * The decode side (DECODER engines) runs in this process. Figures:
 *   a  link 1 cluster: one DECODER to one PROMPT, link + unlink rounds
 *   b  link 16 clusters (16 server processes) in one llmlink_link_clusters
 *   c  link 512 clusters: 512 DECODER engines to one server, sequential
 *      calls and 8 threads in parallel
 *   d  handshakes per second: N threads, each with its own DECODER engine,
 *      link/unlink in a loop against one server
 *   e  server RSS: before any link, holding 512 idle links, after unlinking
 *
 * It measures and prints; it asserts no speed. The exit status is 1 only
 * when a section could not run (a server did not start, links failed).
 *
 * Usage: bench_link [--quick] [--only a,b,c,d,e] [--help]
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench_common.h"
#include "llmlink.h"

/* Server-side llmlink.MaxLinks: headroom over the 512 links sections c and
 * e hold, so no figure depends on the default landing exactly on 512. */
#define SERVER_MAX_LINKS "1024"
/* How long a request to a server child may take before it counts as dead. */
#define SERVER_REPLY_MS 10000
#define MAX_SERVERS 32

/* ------------------------------------------------------------------ */
/* Server processes                                                    */
/* ------------------------------------------------------------------ */

typedef struct server_stats {
    unsigned links, inbound, outbound, hs_in_progress, hs_peak;
    unsigned long long accepted, completed, rejected, timed_out, protocol_errors, links_lost;
} server_stats_t;

static bool stats_request(const char *line, char *out, size_t len, void *state)
{
    llmlink_t *e = state;
    if (strcmp(line, "stats") != 0)
        return false;
    llmlink_stats_t s = {.version = LLMLINK_STATS_VERSION};
    if (llmlink_get_stats(e, &s) != LLMLINK_SUCCESS)
        snprintf(out, len, "error %s\n", llmlink_last_error());
    else
        snprintf(out, len,
                 "stats %u %u %u %u %u %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64
                 " %" PRIu64 " %" PRIu64 "\n",
                 s.links, s.inbound_links, s.outbound_links, s.handshakes_in_progress,
                 s.handshakes_peak, s.handshakes_accepted, s.handshakes_completed,
                 s.handshakes_rejected, s.handshakes_timed_out, s.protocol_errors,
                 s.links_lost);
    return true;
}

/* The child: one PROMPT engine listening on LOCALHOST:0. */
static void server_child(const bench_child_t *c, const void *arg)
{
    char line[512];
    llmlink_t *e = NULL;
    llmlink_status_t st = llmlink_create(&e, LLMLINK_ROLE_PROMPT, c->cluster_id);
    if (st == LLMLINK_SUCCESS) {
        const llmlink_option_t opts[] = {
            {"llm.listenIpInfo", LOCALHOST ":0"},
            {"llmlink.MaxLinks", SERVER_MAX_LINKS},
        };
        st = llmlink_init(e, opts, sizeof opts / sizeof opts[0]);
    }
    uint16_t port = 0;
    if (st == LLMLINK_SUCCESS)
        st = llmlink_get_listen_port(e, 0, &port);
    if (st != LLMLINK_SUCCESS) {
        snprintf(line, sizeof line, "error %s: %s\n", llmlink_status_name(st),
                 llmlink_last_error());
        bench_write_all(c->rsp_w, line);
        llmlink_destroy(e);
        exit(1);
    }
    bench_child_ready(c, port);
    bench_child_serve(c, stats_request, e);
    llmlink_destroy(e);
    bench_child_exit(c, 0);
}

static bool server_start(bench_server_t *s, uint64_t cluster_id, char *err, size_t errlen)
{
    return bench_server_start(s, cluster_id, server_child, NULL, err, errlen);
}

static bool server_stats(bench_server_t *s, server_stats_t *st)
{
    char line[512];
    memset(st, 0, sizeof *st);
    return bench_server_request(s, "stats", line, sizeof line) &&
           sscanf(line, "stats %u %u %u %u %u %llu %llu %llu %llu %llu %llu", &st->links,
                  &st->inbound, &st->outbound, &st->hs_in_progress, &st->hs_peak, &st->accepted,
                  &st->completed, &st->rejected, &st->timed_out, &st->protocol_errors,
                  &st->links_lost) == 11;
}

/* Polls until the server holds `links` links and no handshake is in
 * progress, or timeout_ms passes. */
static bool server_wait_links(bench_server_t *s, unsigned links, int timeout_ms)
{
    int64_t deadline = bench_now_ms() + timeout_ms;
    server_stats_t st;
    for (;;) {
        if (server_stats(s, &st) && st.links == links && st.hs_in_progress == 0)
            return true;
        if (bench_now_ms() >= deadline)
            return false;
        bench_sleep_ms(5);
    }
}

/* ------------------------------------------------------------------ */
/* Decoder engines and links                                           */
/* ------------------------------------------------------------------ */

typedef struct target {
    llmlink_ip_info_t ip;
    llmlink_cluster_info_t ci;
} target_t;

static void target_for(target_t *t, const bench_server_t *s)
{
    bench_server_target(s, &t->ip, &t->ci);
}

static llmlink_t *decoder_new(uint64_t cluster_id, char *err, size_t errlen)
{
    llmlink_t *e = NULL;
    llmlink_status_t st = llmlink_create(&e, LLMLINK_ROLE_DECODER, cluster_id);
    if (st == LLMLINK_SUCCESS)
        st = llmlink_init(e, NULL, 0);
    if (st != LLMLINK_SUCCESS) {
        snprintf(err, errlen, "decoder %" PRIu64 ": %s: %s", cluster_id,
                 llmlink_status_name(st), llmlink_last_error());
        llmlink_destroy(e);
        return NULL;
    }
    return e;
}

static void destroy_all(llmlink_t **e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        llmlink_destroy(e[i]);
        e[i] = NULL;
    }
}

static llmlink_status_t do_link(llmlink_t *e, const target_t *t)
{
    return llmlink_link_clusters(e, &t->ci, 1, LINK_TIMEOUT_MS, NULL);
}

static llmlink_status_t do_unlink(llmlink_t *e, const target_t *t)
{
    return llmlink_unlink_clusters(e, &t->ci, 1, UNLINK_TIMEOUT_MS, false, NULL);
}

/* Records the first failure of a run (thread-safe). */
typedef struct failures {
    pthread_mutex_t mu;
    unsigned long count;
    char first[200];
} failures_t;

static void failures_init(failures_t *f)
{
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
}

static void failures_add(failures_t *f, const char *op, llmlink_status_t st)
{
    pthread_mutex_lock(&f->mu);
    if (f->count++ == 0)
        snprintf(f->first, sizeof f->first, "%s: %s: %s", op, llmlink_status_name(st),
                 llmlink_last_error());
    pthread_mutex_unlock(&f->mu);
}

static void failures_fini(failures_t *f) { pthread_mutex_destroy(&f->mu); }

/* A FAILED row for `what` when a call failed. */
static void failures_report(const failures_t *f, char sec, const char *what)
{
    if (f->count)
        bench_failed(sec, what, "%lu failed calls; first: %s", f->count, f->first);
}

/* Runs fn on n threads (<= 64; the i-th gets jobs + i * job_size), each
 * waiting first on *go, a barrier for n + 1 initialised here. Then sets
 * *stop_at_ms (when not NULL) to run_ms from now, opens the barrier and
 * joins them: returns the ns from the opening to the last join. Aborts when
 * a thread cannot start (the barrier would never open). */
static int64_t run_threads(size_t n, void *(*fn)(void *), void *jobs, size_t job_size,
                           pthread_barrier_t *go, volatile int64_t *stop_at_ms, int run_ms)
{
    pthread_t th[64];
    pthread_barrier_init(go, NULL, (unsigned)n + 1);
    size_t started = 0;
    for (size_t k = 0; k < n && k < 64; k++) {
        if (pthread_create(&th[k], NULL, fn, (char *)jobs + k * job_size) != 0)
            break;
        started++;
    }
    if (started < n) {
        /* Cannot happen in practice; the barrier would never open. */
        fprintf(stderr, "bench_link: pthread_create failed; aborting\n");
        bench_stop_all_servers();
        abort();
    }
    if (stop_at_ms)
        *stop_at_ms = bench_now_ms() + run_ms;
    int64_t t0 = bench_now_ns();
    pthread_barrier_wait(go);
    for (size_t k = 0; k < started; k++)
        pthread_join(th[k], NULL);
    int64_t dt = bench_now_ns() - t0;
    pthread_barrier_destroy(go);
    return dt;
}

/* Link (or unlink) engines[i] for every i, from `nthreads` threads, each
 * taking every nthreads-th engine. Returns the wall time in ns. */
typedef struct par_job {
    llmlink_t **engines;
    size_t n, nthreads, start;
    const target_t *t;
    bool unlink;
    pthread_barrier_t *go;
    failures_t *fail;
} par_job_t;

static void *par_worker(void *arg)
{
    par_job_t *j = arg;
    pthread_barrier_wait(j->go);
    for (size_t i = j->start; i < j->n; i += j->nthreads) {
        llmlink_status_t st = j->unlink ? do_unlink(j->engines[i], j->t)
                                        : do_link(j->engines[i], j->t);
        if (st != LLMLINK_SUCCESS)
            failures_add(j->fail, j->unlink ? "unlink" : "link", st);
    }
    return NULL;
}

/* With nthreads <= 1 the calls run on this thread, and each call's time
 * (us) lands in per_call[i] when per_call is not NULL. */
static int64_t run_parallel(llmlink_t **engines, size_t n, size_t nthreads, const target_t *t,
                            bool unlink, failures_t *fail, double *per_call)
{
    if (nthreads <= 1) {
        int64_t t0 = bench_now_ns(), prev = t0;
        for (size_t i = 0; i < n; i++) {
            llmlink_status_t st = unlink ? do_unlink(engines[i], t) : do_link(engines[i], t);
            if (st != LLMLINK_SUCCESS)
                failures_add(fail, unlink ? "unlink" : "link", st);
            int64_t now = bench_now_ns();
            if (per_call)
                per_call[i] = (double)(now - prev) / 1e3;
            prev = now;
        }
        return bench_now_ns() - t0;
    }
    par_job_t jobs[64];
    pthread_barrier_t go;
    if (nthreads > 64)
        nthreads = 64;
    for (size_t k = 0; k < nthreads; k++)
        jobs[k] = (par_job_t){engines, n, nthreads, k, t, unlink, &go, fail};
    return run_threads(nthreads, par_worker, jobs, sizeof jobs[0], &go, NULL, 0);
}

/* ------------------------------------------------------------------ */
/* Configuration                                                       */
/* ------------------------------------------------------------------ */

typedef struct config {
    bool quick;
    bool only[26];
    int rounds_a;
    int rounds_b;
    int engines_ce;       /* 512: the figure is defined for 512 links */
    int par_threads;      /* 8 */
    int hs_duration_ms;   /* per N in section d */
    int section_limit_ms; /* a section's timed loops stop after this */
} config_t;

static const int HS_THREADS[] = {1, 4, 16, 64};

/* Rows "<figure>, median" and (with p99) "<figure>, p99" of the call times
 * v[0..n) in us (sorts v). */
static void latency_rows(char sec, const char *figure, const char *detail, double *v, size_t n,
                         bool p99)
{
    char fig[96];
    snprintf(fig, sizeof fig, "%s, median", figure);
    bench_add_row(sec, fig, "us", detail, "%.1f", bench_percentile(v, n, 50));
    if (p99) {
        snprintf(fig, sizeof fig, "%s, p99", figure);
        bench_add_row(sec, fig, "us", detail, "%.1f", bench_percentile(v, n, 99));
    }
}

/* ------------------------------------------------------------------ */
/* a. link 1 cluster                                                   */
/* ------------------------------------------------------------------ */

/* The goal for one link on loopback (a figure to read, never asserted). */
#define A_TARGET_US 150.0
#define A_TARGET_TEXT "150"

static void section_a(const config_t *cfg)
{
    char err[256], d[160];
    bench_progress("section a: link 1 cluster, %d link+unlink rounds", cfg->rounds_a);
    bench_server_t srv;
    if (!server_start(&srv, 1000, err, sizeof err)) {
        bench_failed('a', "link 1 cluster", "%s", err);
        return;
    }
    llmlink_t *e = decoder_new(1, err, sizeof err);
    if (!e) {
        bench_failed('a', "link 1 cluster", "%s", err);
        bench_server_stop(&srv);
        return;
    }
    target_t t;
    target_for(&t, &srv);
    double *lk = calloc((size_t)cfg->rounds_a, sizeof *lk);
    double *ul = calloc((size_t)cfg->rounds_a, sizeof *ul);
    failures_t fail;
    failures_init(&fail);
    /* Warm-up: first connection, first allocations on both sides. */
    for (int i = 0; i < 5; i++)
        if (do_link(e, &t) == LLMLINK_SUCCESS)
            do_unlink(e, &t);
    int n = 0;
    int64_t limit = bench_now_ms() + cfg->section_limit_ms;
    for (int i = 0; i < cfg->rounds_a && bench_now_ms() < limit; i++) {
        int64_t t0 = bench_now_ns();
        llmlink_status_t st = do_link(e, &t);
        int64_t t1 = bench_now_ns();
        if (st != LLMLINK_SUCCESS) {
            failures_add(&fail, "link", st);
            continue;
        }
        st = do_unlink(e, &t);
        int64_t t2 = bench_now_ns();
        if (st != LLMLINK_SUCCESS)
            failures_add(&fail, "unlink", st);
        lk[n] = (double)(t1 - t0) / 1e3;
        ul[n] = (double)(t2 - t1) / 1e3;
        n++;
    }
    snprintf(d, sizeof d, "%d rounds, 1 DECODER -> 1 PROMPT process; link+unlink per round", n);
    if (n > 0) {
        /* Counted before latency_rows sorts lk. */
        int fast = 0;
        for (int i = 0; i < n; i++)
            if (lk[i] <= A_TARGET_US)
                fast++;
        latency_rows('a', "link 1 cluster", d, lk, (size_t)n, true);
        latency_rows('a', "unlink 1 cluster (non-force)", d, ul, (size_t)n, true);
        bench_add_row('a', "link 1 cluster, rounds within the target", "%",
                      "target: median <= " A_TARGET_TEXT " us on an idle 2-core machine", "%.0f",
                      100.0 * fast / n);
    }
    failures_report(&fail, 'a', "link 1 cluster");
    failures_fini(&fail);
    free(lk);
    free(ul);
    llmlink_destroy(e);
    if (!bench_server_stop(&srv))
        bench_failed('a', "server exit", "server process did not exit cleanly");
}

/* ------------------------------------------------------------------ */
/* b. link 16 clusters in one call                                     */
/* ------------------------------------------------------------------ */

#define B_CLUSTERS LLMLINK_MAX_CLUSTERS_PER_CALL
/* The goal for one call linking 16 clusters against 16 one-cluster calls. */
#define B_TARGET_TEXT "0.35"

static void section_b(const config_t *cfg)
{
    char err[256], d[160];
    bench_progress("section b: link %d clusters (%d server processes) in one call, %d rounds",
                   B_CLUSTERS, B_CLUSTERS, cfg->rounds_b);
    bench_server_t srv[B_CLUSTERS];
    target_t t[B_CLUSTERS];
    llmlink_cluster_info_t ci[B_CLUSTERS];
    int started = 0;
    for (; started < B_CLUSTERS; started++) {
        if (!server_start(&srv[started], 2000 + (uint64_t)started, err, sizeof err))
            break;
        target_for(&t[started], &srv[started]);
        ci[started] = t[started].ci;
    }
    /* ci[i] points into t[i].ip, which stays put. */
    llmlink_t *e = NULL;
    if (started < B_CLUSTERS) {
        bench_failed('b', "link 16 clusters", "%s", err);
        goto out;
    }
    e = decoder_new(2, err, sizeof err);
    if (!e) {
        bench_failed('b', "link 16 clusters", "%s", err);
        goto out;
    }
    double *one = calloc((size_t)cfg->rounds_b, sizeof *one);
    double *seq = calloc((size_t)cfg->rounds_b, sizeof *seq);
    double *ul = calloc((size_t)cfg->rounds_b, sizeof *ul);
    failures_t fail;
    failures_init(&fail);
    llmlink_status_t cs[B_CLUSTERS];
    for (int i = 0; i < 3; i++) /* warm-up */
        if (llmlink_link_clusters(e, ci, B_CLUSTERS, LINK_TIMEOUT_MS, cs) == LLMLINK_SUCCESS)
            llmlink_unlink_clusters(e, ci, B_CLUSTERS, UNLINK_TIMEOUT_MS, false, cs);
    int n = 0;
    int64_t limit = bench_now_ms() + cfg->section_limit_ms;
    for (int r = 0; r < cfg->rounds_b && bench_now_ms() < limit; r++) {
        /* One call for all 16. */
        int64_t t0 = bench_now_ns();
        llmlink_status_t st = llmlink_link_clusters(e, ci, B_CLUSTERS, LINK_TIMEOUT_MS, cs);
        int64_t t1 = bench_now_ns();
        if (st != LLMLINK_SUCCESS) {
            failures_add(&fail, "link 16", st);
            llmlink_unlink_clusters(e, ci, B_CLUSTERS, UNLINK_TIMEOUT_MS, false, cs);
            continue;
        }
        st = llmlink_unlink_clusters(e, ci, B_CLUSTERS, UNLINK_TIMEOUT_MS, false, cs);
        int64_t t2 = bench_now_ns();
        if (st != LLMLINK_SUCCESS)
            failures_add(&fail, "unlink 16", st);
        /* For comparison: the same 16 links as 16 one-cluster calls. */
        int64_t t3 = bench_now_ns();
        for (int i = 0; i < B_CLUSTERS; i++) {
            st = do_link(e, &t[i]);
            if (st != LLMLINK_SUCCESS)
                failures_add(&fail, "link 1 of 16", st);
        }
        int64_t t4 = bench_now_ns();
        st = llmlink_unlink_clusters(e, ci, B_CLUSTERS, UNLINK_TIMEOUT_MS, false, cs);
        if (st != LLMLINK_SUCCESS)
            failures_add(&fail, "unlink 16", st);
        one[n] = (double)(t1 - t0) / 1e3;
        ul[n] = (double)(t2 - t1) / 1e3;
        seq[n] = (double)(t4 - t3) / 1e3;
        n++;
    }
    snprintf(d, sizeof d, "%d rounds; 16 PROMPT processes, distinct cluster ids", n);
    if (n > 0) {
        /* Each round times both ways back to back, so its own ratio is the
         * least disturbed by other load on the machine; the ratio of the
         * medians is the figure the target is stated in. Taken before
         * latency_rows sorts the arrays. */
        double *ratio = calloc((size_t)n, sizeof *ratio);
        for (int i = 0; ratio && i < n; i++)
            ratio[i] = seq[i] > 0 ? one[i] / seq[i] : 0;
        double med_one = bench_percentile(one, (size_t)n, 50);
        double med_seq = bench_percentile(seq, (size_t)n, 50);
        bench_add_row('b', "link 16 clusters: 1 call / 16 sequential calls, ratio of medians",
                      "x", "target <= " B_TARGET_TEXT " (linked in parallel)", "%.2f",
                      med_seq > 0 ? med_one / med_seq : 0);
        if (ratio)
            bench_add_row('b', "link 16 clusters: 1 call / 16 sequential calls, median per-round "
                          "ratio", "x", "target <= " B_TARGET_TEXT, "%.2f",
                          bench_percentile(ratio, (size_t)n, 50));
        free(ratio);
        latency_rows('b', "link 16 clusters in 1 call", d, one, (size_t)n, true);
        latency_rows('b', "unlink 16 clusters in 1 call", d, ul, (size_t)n, false);
        latency_rows('b', "for comparison: 16 sequential 1-cluster calls", d, seq, (size_t)n,
                     false);
    }
    failures_report(&fail, 'b', "link 16 clusters");
    failures_fini(&fail);
    free(one);
    free(seq);
    free(ul);
out:
    llmlink_destroy(e);
    bool clean = true;
    for (int i = 0; i < started; i++)
        clean = bench_server_stop(&srv[i]) && clean;
    if (!clean)
        bench_failed('b', "server exit", "a server process did not exit cleanly");
}

/* ------------------------------------------------------------------ */
/* c. link 512 clusters                                                */
/* ------------------------------------------------------------------ */

static bool create_decoders(llmlink_t **e, size_t n, uint64_t first_id, char *err, size_t len)
{
    for (size_t i = 0; i < n; i++) {
        e[i] = decoder_new(first_id + i, err, len);
        if (!e[i]) {
            destroy_all(e, i);
            return false;
        }
    }
    return true;
}

static void section_c(const config_t *cfg)
{
    char err[256], d[160];
    size_t n = (size_t)cfg->engines_ce;
    bench_progress("section c: link %zu clusters (%zu DECODER engines -> 1 server), sequential and "
                   "%d threads", n, n, cfg->par_threads);
    bench_server_t srv;
    if (!server_start(&srv, 3000, err, sizeof err)) {
        bench_failed('c', "link 512 clusters", "%s", err);
        return;
    }
    target_t t;
    target_for(&t, &srv);
    llmlink_t **e = calloc(n, sizeof *e);
    int64_t t0 = bench_now_ns();
    if (!create_decoders(e, n, 100000, err, sizeof err)) {
        bench_failed('c', "link 512 clusters", "%s", err);
        goto out;
    }
    double create_ms = (double)(bench_now_ns() - t0) / 1e6;
    snprintf(d, sizeof d, "llmlink_create + llmlink_init of %zu DECODER engines (not in the "
             "figures below)", n);
    bench_add_row('c', "create 512 engines", "ms", d, "%.1f", create_ms);

    for (int pass = 0; pass < 2; pass++) {
        size_t threads = pass == 0 ? 1 : (size_t)cfg->par_threads;
        failures_t fail;
        failures_init(&fail);
        double *per = threads == 1 ? calloc(n, sizeof *per) : NULL;
        int64_t lk = run_parallel(e, n, threads, &t, false, &fail, per);
        server_stats_t ss;
        bool held = server_wait_links(&srv, (unsigned)n, 5000);
        server_stats(&srv, &ss);
        int64_t ul = run_parallel(e, n, threads, &t, true, &fail, NULL);
        bool freed = server_wait_links(&srv, 0, 10000);
        char fig[80];
        if (threads == 1)
            snprintf(d, sizeof d, "%zu sequential 1-cluster calls; %.1f us per link, %.0f "
                     "links/s", n, (double)lk / 1e3 / (double)n, (double)n * 1e9 / (double)lk);
        else
            snprintf(d, sizeof d, "%zu threads x %zu calls; %.0f links/s", threads, n / threads,
                     (double)n * 1e9 / (double)lk);
        snprintf(fig, sizeof fig, "link 512 clusters, %s, total",
                 threads == 1 ? "sequential" : "parallel");
        bench_add_row('c', fig, "ms", d, "%.1f", (double)lk / 1e6);
        if (per && n >= 128) {
            /* Does a link cost more when the server already holds many? */
            double first = bench_percentile(per, 64, 50);
            double last = bench_percentile(per + n - 64, 64, 50);
            bench_add_row('c', "link 512 clusters, sequential, links 1-64: median", "us",
                          "server holds 0-63 links when each call starts", "%.1f", first);
            snprintf(d, sizeof d, "server holds %zu-%zu links when each call starts", n - 64,
                     n - 1);
            bench_add_row('c', "link 512 clusters, sequential, links 449-512: median", "us", d,
                          "%.1f", last);
        }
        free(per);
        snprintf(fig, sizeof fig, "unlink 512 clusters, %s, total",
                 threads == 1 ? "sequential" : "parallel");
        snprintf(d, sizeof d, "non-force; server links after: %s", freed ? "0" : "NOT 0");
        bench_add_row('c', fig, "ms", d, "%.1f", (double)ul / 1e6);
        if (!held)
            bench_failed('c', "link 512 clusters", "server reports %u links, expected %zu",
                         ss.links, n);
        failures_report(&fail, 'c', "link 512 clusters");
        failures_fini(&fail);
    }
out:
    destroy_all(e, n);
    free(e);
    if (!bench_server_stop(&srv))
        bench_failed('c', "server exit", "server process did not exit cleanly");
}

/* ------------------------------------------------------------------ */
/* d. handshakes per second                                            */
/* ------------------------------------------------------------------ */

typedef struct hs_job {
    llmlink_t *e;
    const target_t *t;
    pthread_barrier_t *go;
    const volatile int64_t *stop_at_ms; /* set before the barrier opens */
    unsigned long handshakes;
    failures_t *fail;
} hs_job_t;

static void *hs_worker(void *arg)
{
    hs_job_t *j = arg;
    pthread_barrier_wait(j->go);
    int64_t stop_at = *j->stop_at_ms;
    /* Bounded by time and by a count no loop can reach in the time. */
    for (unsigned long it = 0; it < 100000000ul && bench_now_ms() < stop_at; it++) {
        llmlink_status_t st = do_link(j->e, j->t);
        if (st != LLMLINK_SUCCESS) {
            failures_add(j->fail, "link", st);
            continue;
        }
        j->handshakes++;
        st = do_unlink(j->e, j->t);
        if (st != LLMLINK_SUCCESS)
            failures_add(j->fail, "unlink", st);
    }
    return NULL;
}

static void section_d(const config_t *cfg)
{
    char err[256], d[160], fig[80];
    bench_progress("section d: handshakes/s with 1, 4, 16, 64 concurrent clients, %.2f s each",
                   cfg->hs_duration_ms / 1000.0);
    for (size_t k = 0; k < sizeof HS_THREADS / sizeof HS_THREADS[0]; k++) {
        size_t nt = (size_t)HS_THREADS[k];
        bench_progress("section d: %zu client(s)", nt);
        snprintf(fig, sizeof fig, "handshakes/s, %zu client%s", nt, nt == 1 ? "" : "s");
        /* A fresh server per N: its handshake peak is this run's. */
        bench_server_t srv;
        if (!server_start(&srv, 4000 + k, err, sizeof err)) {
            bench_failed('d', fig, "%s", err);
            break;
        }
        target_t t;
        target_for(&t, &srv);
        llmlink_t *e[64];
        if (!create_decoders(e, nt, 200000 + 1000 * k, err, sizeof err)) {
            bench_failed('d', fig, "%s", err);
            bench_server_stop(&srv);
            break;
        }
        failures_t fail;
        failures_init(&fail);
        pthread_barrier_t go;
        hs_job_t jobs[64];
        volatile int64_t stop_at = 0;
        for (size_t i = 0; i < nt; i++)
            jobs[i] = (hs_job_t){e[i], &t, &go, &stop_at, 0, &fail};
        int64_t dt = run_threads(nt, hs_worker, jobs, sizeof jobs[0], &go, &stop_at,
                                 cfg->hs_duration_ms);
        unsigned long total = 0;
        for (size_t i = 0; i < nt; i++)
            total += jobs[i].handshakes;
        bool freed = server_wait_links(&srv, 0, 10000);
        server_stats_t ss;
        server_stats(&srv, &ss);
        snprintf(d, sizeof d, "%lu handshakes in %.2f s (link+unlink loop); server: %u "
                 "handshakes at once at most, %llu rejected", total, (double)dt / 1e9,
                 ss.hs_peak, ss.rejected);
        bench_add_row('d', fig, "1/s", d, "%.0f", (double)total * 1e9 / (double)dt);
        failures_report(&fail, 'd', fig);
        if (!freed)
            bench_failed('d', fig, "server still holds links after the run");
        failures_fini(&fail);
        destroy_all(e, nt);
        if (!bench_server_stop(&srv))
            bench_failed('d', "server exit", "server process did not exit cleanly");
    }
}

/* ------------------------------------------------------------------ */
/* e. server memory for 512 idle links                                 */
/* ------------------------------------------------------------------ */

/* The server is started by main() before any other section runs, so that
 * its baseline is a fresh fork of a small process rather than a copy of a
 * parent that has already run hundreds of engines. */
static bool section_e_server(bench_server_t *srv)
{
    char err[256];
    if (server_start(srv, 5000, err, sizeof err))
        return true;
    bench_failed('e', "server RSS", "%s", err);
    return false;
}

static void section_e(const config_t *cfg, bench_server_t *srv)
{
    char err[256], d[160];
    size_t n = (size_t)cfg->engines_ce;
    bench_progress("section e: server RSS holding %zu idle links", n);
    target_t t;
    target_for(&t, srv);
    llmlink_t **e = calloc(n, sizeof *e);
    failures_t fail;
    failures_init(&fail);
    bench_sleep_ms(200); /* let the server's I/O thread settle */
    long rss0 = bench_server_rss_kib(srv);
    long self0 = bench_self_rss_kib();
    if (!create_decoders(e, n, 300000, err, sizeof err)) {
        bench_failed('e', "server RSS", "%s", err);
        goto out;
    }
    long self1 = bench_self_rss_kib();
    run_parallel(e, n, (size_t)cfg->par_threads, &t, false, &fail, NULL);
    bool held = server_wait_links(srv, (unsigned)n, 5000);
    /* Idle: a few heartbeat periods (default liveness 3000 ms, a beat
     * every 1000 ms) so every link has sent and received traffic. */
    bench_sleep_ms(cfg->quick ? 1200 : 2500);
    server_stats_t ss;
    server_stats(srv, &ss);
    long rss1 = bench_server_rss_kib(srv);
    long self2 = bench_self_rss_kib();
    run_parallel(e, n, (size_t)cfg->par_threads, &t, true, &fail, NULL);
    bool freed = server_wait_links(srv, 0, 10000);
    bench_sleep_ms(500);
    long rss2 = bench_server_rss_kib(srv);

    if (rss0 < 0 || rss1 < 0 || rss2 < 0) {
        bench_failed('e', "server RSS", "could not read the server's VmRSS");
        goto out;
    }
    bench_add_row('e', "server RSS, before any link", "KiB", "PROMPT engine listening, idle", "%ld",
                  rss0);
    snprintf(d, sizeof d, "server reports %u links, %llu lost", ss.links, ss.links_lost);
    bench_add_row('e', "server RSS, holding 512 idle links", "KiB", d, "%ld", rss1);
    bench_add_row('e', "server RSS growth per link", "KiB",
                  "(holding - before) / 512; project goal: < 64 KiB per link", "%.1f",
                  (double)(rss1 - rss0) / (double)n);
    snprintf(d, sizeof d, "non-force unlink of all; server links after: %s",
             freed ? "0" : "NOT 0");
    bench_add_row('e', "server RSS, after unlinking all", "KiB", d, "%ld", rss2);
    if (self0 >= 0 && self1 >= 0 && self2 >= 0) {
        bench_add_row('e', "for comparison: client RSS per DECODER engine", "KiB",
                      "this process, (after create+init - before) / 512, no link", "%.1f",
                      (double)(self1 - self0) / (double)n);
        bench_add_row('e', "for comparison: client RSS per outbound link", "KiB",
                      "this process, (linked - engines only) / 512", "%.1f",
                      (double)(self2 - self1) / (double)n);
    }
    if (!held)
        bench_failed('e', "server RSS", "server reports %u links, expected %zu", ss.links, n);
    failures_report(&fail, 'e', "server RSS");
out:
    failures_fini(&fail);
    destroy_all(e, n);
    free(e);
    if (!bench_server_stop(srv))
        bench_failed('e', "server exit", "server process did not exit cleanly");
}

/* ------------------------------------------------------------------ */
/* Main                                                                */
/* ------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_link [--quick] [--only a,b,c,d,e]\n"
            "  a  link 1 cluster (median, p99 over link+unlink rounds)\n"
            "  b  link 16 clusters (16 server processes) in one call\n"
            "  c  link 512 clusters: 512 DECODER engines, sequential and 8 threads\n"
            "  d  handshakes/s with 1, 4, 16, 64 concurrent clients\n"
            "  e  server RSS before, holding 512 idle links, after unlinking\n"
            "  --quick  fewer rounds and shorter runs (a smoke test)\n");
}

int main(int argc, char **argv)
{
    static const bench_conf_t conf = {
        .name = "bench_link",
        .server_label = "server",
        .max_servers = MAX_SERVERS,
        .server_reply_ms = SERVER_REPLY_MS,
        .server_stop_ms = 5000,
    };
    bench_init(&conf);
    config_t cfg = {0};
    bool any_only = false;
    for (int i = 1; i < argc; i++) {
        const char *list = NULL;
        int got;
        if (strcmp(argv[i], "--quick") == 0) {
            cfg.quick = true;
        } else if ((got = bench_opt_value(argc, argv, &i, "--only", &list)) != 0) {
            int named = got > 0 && *list ? bench_parse_only(list, 'e', cfg.only) : -1;
            if (named < 0) {
                usage(stderr);
                return 2;
            }
            any_only = any_only || named > 0;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "bench_link: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!any_only)
        for (int i = 0; i < 5; i++)
            cfg.only[i] = true;
    cfg.rounds_a = cfg.quick ? 20 : 200;
    cfg.rounds_b = cfg.quick ? 5 : 50;
    cfg.engines_ce = 512;
    cfg.par_threads = 8;
    cfg.hs_duration_ms = cfg.quick ? 250 : 2000;
    cfg.section_limit_ms = cfg.quick ? 60000 : 120000;

    /* 512 engines here hold ~3 descriptors each, the server 512 sockets. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            bench_progress("setrlimit(RLIMIT_NOFILE): %s", strerror(errno));
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur < 2200)
        bench_progress("warning: open-files limit %llu is low; sections c and e need ~2100",
                       (unsigned long long)rl.rlim_cur);

    bench_print_header("llmlink link benchmark", "", cfg.quick, any_only, "");

    bench_server_t srv_e;
    bool have_e = cfg.only[4] && section_e_server(&srv_e);
    int64_t t0 = bench_now_ms();
    if (cfg.only[0])
        section_a(&cfg);
    if (cfg.only[1])
        section_b(&cfg);
    if (cfg.only[2])
        section_c(&cfg);
    if (cfg.only[3])
        section_d(&cfg);
    if (have_e)
        section_e(&cfg, &srv_e);
    bench_progress("done in %.1f s", (double)(bench_now_ms() - t0) / 1000.0);

    bench_print_table();
    fflush(stdout);
    bench_stop_all_servers();
    return bench_any_failed() ? 1 : 0;
}
