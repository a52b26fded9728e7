/*
 * test_metrics.c - the operator counters (llmlink_get_metrics,
 * llmlink_get_links; issue 17 point 2): after a known sequence of link
 * attempts, links, transfers and failures, every counter holds exactly the
 * expected value.
 *
 *  - one process, engines P (PROMPT, with a key and llmlink.AllowedClusters
 *    = {D}), D (DECODER, the right key), W (wrong key), X (right key, not
 *    allowed): W's and X's attempts are refused for "auth" and "access" on
 *    both sides; D links (one handshake ok, one link up each side, the
 *    iterator lists exactly that link with its direction, transport,
 *    streams, peer and start time); a link to a port where nothing listens
 *    is a "connect" failure; 3 pulls and 2 pushes succeed, a pull and a
 *    push are refused by P (block past the end): transfers by direction x
 *    transport x result, bytes, the latency histogram (its count is the
 *    number of transfers, its buckets add up to it, its sum is positive),
 *    the link's own counters; unlink: "unlinked" on D, "unlinked_by_peer"
 *    on P, and both iterators are empty;
 *  - P as an llmlink-node process (tcp): SIGSTOPped, D's pull times out
 *    (result timed_out, the link closed "transfer_failed"); linked again,
 *    P SIGSTOPped and then SIGKILLed while D's pull waits for it: the pull
 *    fails (result failed); the histogram counts both;
 *  - the pure parts: bucket bounds, label names, argument checks.
 *
 * Loopback only, ports from the kernel, every wait bounded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llmlink.h"
#include "llk_test.h"
#include "proc.h"

#define P_ID 1u
#define D_ID 2u
#define W_ID 3u
#define X_ID 4u
#define NOBODY_ID 9u
#define NT 4
#define NB 16
#define BS 4096u
#define KEY_P "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define KEY_W "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"
#define LINK_MS 5000
#define IO_MS 10000

typedef struct fx {
    llmlink_t *p, *d, *w, *x;
    uint16_t port;
    uint8_t pmem[NT][NB * BS], dmem[NT][NB * BS];
    int64_t pc, dc;
    llmlink_cache_key_t key;
    proc_t node;
} fx_t;

static llmlink_t *engine(llmlink_role_t role, uint64_t id, const llmlink_option_t *o, size_t n)
{
    llmlink_t *e = NULL;
    assert_status(llmlink_create(&e, role, id), LLMLINK_SUCCESS);
    assert_status(llmlink_init(e, o, n), LLMLINK_SUCCESS);
    return e;
}

static llmlink_metrics_t metrics(llmlink_t *e)
{
    llmlink_metrics_t m;
    memset(&m, 0, sizeof m);
    m.version = LLMLINK_METRICS_VERSION;
    assert_status(llmlink_get_metrics(e, &m), LLMLINK_SUCCESS);
    return m;
}

static size_t links(llmlink_t *e, llmlink_link_info_t *out, size_t max)
{
    size_t n = 99;
    out[0].version = LLMLINK_LINK_INFO_VERSION;
    assert_status(llmlink_get_links(e, out, max, &n), LLMLINK_SUCCESS);
    return n;
}

static llmlink_status_t link_to(llmlink_t *e, uint64_t id, uint16_t port)
{
    llmlink_ip_info_t ip = {"127.0.0.1", port};
    llmlink_cluster_info_t c = {.remote_cluster_id = id, .remote_role = LLMLINK_ROLE_PROMPT,
                                .remote_ip_infos = &ip, .num_remote_ip_infos = 1};
    llmlink_status_t one = LLMLINK_FAILED;
    llmlink_link_clusters(e, &c, 1, LINK_MS, &one);
    return one;
}

static uint64_t sum(const uint64_t *v, size_t n)
{
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++)
        s += v[i];
    return s;
}

/* Every element but v[keep] is 0 (keep may be past the end: all 0). */
static void assert_only(const uint64_t *v, size_t n, size_t keep, uint64_t want, const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] != (i == keep ? want : 0))
            fail_msg("%s[%zu] = %llu, expected %llu", what, i, (unsigned long long)v[i],
                     (unsigned long long)(i == keep ? want : 0));
}

/* ---- fixture: P, D, W, X in this process ---- */

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    llmlink_option_t po[] = {{"llm.listenIpInfo", "127.0.0.1:0"},
                             {"llmlink.Transport", "tcp"},
                             {"llmlink.StreamsPerLink", "2"},
                             {"llmlink.AuthKey", KEY_P},
                             {"llmlink.AllowedClusters", "2"}};
    llmlink_option_t dopt[] = {{"llmlink.Transport", "tcp"}, {"llmlink.StreamsPerLink", "2"},
                               {"llmlink.AuthKey", KEY_P}};
    llmlink_option_t wopt[] = {{"llmlink.Transport", "tcp"}, {"llmlink.AuthKey", KEY_W}};
    fx->p = engine(LLMLINK_ROLE_PROMPT, P_ID, po, 5);
    fx->d = engine(LLMLINK_ROLE_DECODER, D_ID, dopt, 3);
    fx->w = engine(LLMLINK_ROLE_DECODER, W_ID, wopt, 2);
    fx->x = engine(LLMLINK_ROLE_DECODER, X_ID, dopt, 3);
    assert_status(llmlink_get_listen_port(fx->p, 0, &fx->port), LLMLINK_SUCCESS);
    uint64_t pa[NT], da[NT];
    for (unsigned t = 0; t < NT; t++) {
        for (unsigned i = 0; i < NB * BS; i++)
            fx->pmem[t][i] = (uint8_t)(t * 31u + i * 7u + 1u);
        pa[t] = (uint64_t)(uintptr_t)fx->pmem[t];
        da[t] = (uint64_t)(uintptr_t)fx->dmem[t];
    }
    llmlink_cache_desc_t d = {.num_tensors = NT, .data_type = LLMLINK_DT_UINT8,
                              .placement = LLMLINK_PLACEMENT_HOST, .num_dims = 2,
                              .shape = {NB, BS}};
    fx->key = (llmlink_cache_key_t){.type = LLMLINK_KEY_BLOCKS, .cluster_id = P_ID};
    assert_status(llmlink_register_blocks_cache(fx->p, &d, pa, NT, &fx->key, &fx->pc),
                  LLMLINK_SUCCESS);
    assert_status(llmlink_register_blocks_cache(fx->d, &d, da, NT, NULL, &fx->dc),
                  LLMLINK_SUCCESS);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    llmlink_destroy(fx->x);
    llmlink_destroy(fx->w);
    llmlink_destroy(fx->d);
    llmlink_destroy(fx->p);
    proc_reap(&fx->node);
    free(fx);
    return 0;
}

/* Waits (bounded) until e has no link left. */
static void wait_no_links(llmlink_t *e)
{
    int64_t t0 = proc_now_ms();
    while (metrics(e).links_up != 0 && proc_now_ms() - t0 < IO_MS)
        proc_sleep_ms(2);
    assert_int_equal(metrics(e).links_up, 0);
}

/* ---- the known sequence, in one process ---- */

static void refused_attempts(fx_t *fx)
{
    assert_status(link_to(fx->w, P_ID, fx->port), LLMLINK_AUTH_FAILED);
    assert_status(link_to(fx->x, P_ID, fx->port), LLMLINK_ACCESS_DENIED);
    uint16_t nobody = proc_unused_port("127.0.0.1");
    llmlink_status_t st = link_to(fx->d, NOBODY_ID, nobody);
    assert_true(st == LLMLINK_LINK_FAILED);

    llmlink_metrics_t w = metrics(fx->w), x = metrics(fx->x), d = metrics(fx->d);
    assert_only(w.link_failures, LLMLINK_METRICS_MAX_REASONS, LLMLINK_REFUSE_AUTH, 1,
                "W link_failures");
    assert_only(x.link_failures, LLMLINK_METRICS_MAX_REASONS, LLMLINK_REFUSE_ACCESS, 1,
                "X link_failures");
    assert_only(d.link_failures, LLMLINK_METRICS_MAX_REASONS, LLMLINK_REFUSE_CONNECT, 1,
                "D link_failures");
    /* The server counts the auth refusal when the client's REJECT (or its
     * missing proof) arrives: wait for it, bounded. */
    int64_t t0 = proc_now_ms();
    llmlink_metrics_t p = metrics(fx->p);
    while (sum(p.handshakes_refused, LLMLINK_METRICS_MAX_REASONS) < 2 &&
           proc_now_ms() - t0 < IO_MS) {
        proc_sleep_ms(2);
        p = metrics(fx->p);
    }
    for (size_t i = 0; i < LLMLINK_METRICS_MAX_REASONS; i++) {
        uint64_t want = i == LLMLINK_REFUSE_AUTH || i == LLMLINK_REFUSE_ACCESS ? 1 : 0;
        if (p.handshakes_refused[i] != want)
            fail_msg("P handshakes_refused[%s] = %llu, expected %llu",
                     llmlink_metrics_label(LLMLINK_LABEL_REFUSE_REASON, (uint32_t)i),
                     (unsigned long long)p.handshakes_refused[i], (unsigned long long)want);
    }
    assert_int_equal(p.handshakes_ok, 0);
    assert_int_equal(p.links_up, 0);
    assert_int_equal(sum(p.links_established, 2), 0);
}

/* A version-1 caller's array is of the struct that ended at peer: its
 * element is filled at that stride, and nothing past it is written (here
 * the second element, as there is one link). */
static void check_version_1(fx_t *fx, const char *want_peer)
{
    const size_t v1 = offsetof(llmlink_link_info_t, rdma_rails);
    unsigned char buf[2 * sizeof(llmlink_link_info_t)];
    memset(buf, 0xAB, sizeof buf);
    llmlink_link_info_t *out = (llmlink_link_info_t *)buf;
    out->version = 1;
    size_t n = 0;
    assert_status(llmlink_get_links(fx->d, out, 2, &n), LLMLINK_SUCCESS);
    assert_int_equal(n, 1);
    assert_int_equal(out->version, 1);
    assert_int_equal(out->cluster_id, P_ID);
    assert_string_equal(out->peer, want_peer);
    for (size_t i = v1; i < sizeof buf; i++)
        if (buf[i] != 0xAB)
            fail_msg("llmlink_get_links version 1 wrote byte %zu (the struct ends at %zu)", i, v1);
}

static void check_linked(fx_t *fx, int64_t before_ms)
{
    llmlink_metrics_t d = metrics(fx->d), p = metrics(fx->p);
    assert_int_equal(d.links_up, 1);
    assert_int_equal(p.links_up, 1);
    assert_only(d.links_established, 2, LLMLINK_LINK_OUTBOUND, 1, "D links_established");
    assert_only(p.links_established, 2, LLMLINK_LINK_INBOUND, 1, "P links_established");
    assert_int_equal(p.handshakes_ok, 1);
    assert_int_equal(sum(d.links_closed, LLMLINK_METRICS_MAX_REASONS), 0);

    llmlink_link_info_t li[4];
    memset(li, 0, sizeof li);
    assert_int_equal(links(fx->d, li, 4), 1);
    assert_int_equal(li[0].version, LLMLINK_LINK_INFO_VERSION);
    assert_int_equal(li[0].cluster_id, P_ID);
    assert_int_equal(li[0].direction, LLMLINK_LINK_OUTBOUND);
    assert_int_equal(li[0].transport, LLMLINK_METRICS_TRANSPORT_TCP);
    assert_int_equal(li[0].streams, 2);
    char want_peer[32];
    snprintf(want_peer, sizeof want_peer, "127.0.0.1:%u", fx->port);
    assert_string_equal(li[0].peer, want_peer);
    assert_true(li[0].up_since_ms >= before_ms - 1000 && li[0].up_since_ms <= before_ms + 60000);
    assert_int_equal(li[0].transfers_ok + li[0].transfers_failed, 0);
    /* No RDMA on this link: the rail fields (version 2) are written as 0. */
    assert_int_equal(li[0].rdma_rails, 0);
    assert_int_equal(li[0].rdma_rails_up, 0);
    assert_int_equal(li[0].rdma_rail_failovers + li[0].rdma_rail_repairs, 0);
    assert_int_equal(li[0].rdma_rail_bytes[0] + li[0].rdma_rail_mtu[0], 0);
    check_version_1(fx, want_peer);
    memset(li, 0, sizeof li);
    assert_int_equal(links(fx->p, li, 4), 1);
    assert_int_equal(li[0].cluster_id, D_ID);
    assert_int_equal(li[0].direction, LLMLINK_LINK_INBOUND);
    /* max 0: only the count */
    size_t n = 0;
    assert_status(llmlink_get_links(fx->p, NULL, 0, &n), LLMLINK_SUCCESS);
    assert_int_equal(n, 1);
}

static void transfers(fx_t *fx)
{
    uint64_t src[] = {1, 2}, dst[] = {3, 4}, bad[] = {NB + 5, 0};
    for (int i = 0; i < 3; i++)
        assert_status(llmlink_pull_blocks(fx->d, &fx->key, fx->dc, src, 2, dst, 2, NULL),
                      LLMLINK_SUCCESS);
    for (unsigned t = 0; t < NT; t++)
        assert_memory_equal(fx->dmem[t] + 3 * BS, fx->pmem[t] + 1 * BS, 2 * BS);
    for (int i = 0; i < 2; i++)
        assert_status(llmlink_push_blocks(fx->d, &fx->key, fx->dc, dst, 2, src, 2, NULL),
                      LLMLINK_SUCCESS);
    /* P refuses a block past the end of its cache: no byte moves, the link stays. */
    assert_true(llmlink_pull_blocks(fx->d, &fx->key, fx->dc, bad, 2, dst, 2, NULL) !=
                LLMLINK_SUCCESS);
    assert_true(llmlink_push_blocks(fx->d, &fx->key, fx->dc, src, 2, bad, 2, NULL) !=
                LLMLINK_SUCCESS);
    assert_status(llmlink_check_link_status(fx->d, P_ID), LLMLINK_SUCCESS);

    const uint64_t per = 2ull * BS * NT;
    llmlink_metrics_t m = metrics(fx->d);
    for (unsigned dir = 0; dir < LLMLINK_METRICS_MAX_DIRS; dir++)
        for (unsigned t = 0; t < LLMLINK_METRICS_MAX_TRANSPORTS; t++)
            for (unsigned r = 0; r < LLMLINK_METRICS_MAX_RESULTS; r++) {
                uint64_t want = 0;
                if (t == LLMLINK_METRICS_TRANSPORT_TCP && r == LLMLINK_METRICS_SUCCESS)
                    want = dir == LLMLINK_METRICS_PULL ? 3 : 2;
                if (t == LLMLINK_METRICS_TRANSPORT_TCP && r == LLMLINK_METRICS_REFUSED)
                    want = 1;
                if (m.transfers[dir][t][r] != want)
                    fail_msg("transfers[%s][%s][%s] = %llu, expected %llu",
                             llmlink_metrics_label(LLMLINK_LABEL_DIR, dir),
                             llmlink_metrics_label(LLMLINK_LABEL_TRANSPORT, t),
                             llmlink_metrics_label(LLMLINK_LABEL_RESULT, r),
                             (unsigned long long)m.transfers[dir][t][r],
                             (unsigned long long)want);
            }
    assert_only(m.bytes[LLMLINK_METRICS_PULL], LLMLINK_METRICS_MAX_TRANSPORTS,
                LLMLINK_METRICS_TRANSPORT_TCP, 3 * per, "bytes[pull]");
    assert_only(m.bytes[LLMLINK_METRICS_PUSH], LLMLINK_METRICS_MAX_TRANSPORTS,
                LLMLINK_METRICS_TRANSPORT_TCP, 2 * per, "bytes[push]");
    assert_int_equal(m.latency_count[LLMLINK_METRICS_PULL], 4);
    assert_int_equal(m.latency_count[LLMLINK_METRICS_PUSH], 3);
    /* every transfer took less than the last bound (67 s): all in buckets */
    assert_int_equal(sum(m.latency_buckets[LLMLINK_METRICS_PULL], LLMLINK_METRICS_BUCKETS), 4);
    assert_int_equal(sum(m.latency_buckets[LLMLINK_METRICS_PUSH], LLMLINK_METRICS_BUCKETS), 3);
    assert_true(m.latency_sum_ns[LLMLINK_METRICS_PULL] > 0);
    assert_true(m.latency_sum_ns[LLMLINK_METRICS_PUSH] > 0);
    /* P served and refused peers' requests; it made no call itself */
    llmlink_metrics_t p = metrics(fx->p);
    assert_true(p.requests_served >= 5);
    assert_true(p.requests_refused >= 2);
    assert_int_equal(p.latency_count[0] + p.latency_count[1], 0);

    llmlink_link_info_t li[2];
    memset(li, 0, sizeof li);
    assert_int_equal(links(fx->d, li, 2), 1);
    assert_int_equal(li[0].transfers_ok, 5);
    assert_int_equal(li[0].transfers_failed, 2);
    assert_int_equal(li[0].bytes_pulled, 3 * per);
    assert_int_equal(li[0].bytes_pushed, 2 * per);
    memset(li, 0, sizeof li);
    assert_int_equal(links(fx->p, li, 2), 1);
    assert_int_equal(li[0].peer_write_bytes, 2 * per); /* D's pushes wrote into P */
    assert_int_equal(li[0].peer_read_bytes, 3 * per);
    assert_int_equal(li[0].transfers_ok + li[0].transfers_failed, 0);
}

static void test_known_sequence(void **state)
{
    fx_t *fx = *state;
    refused_attempts(fx);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t before = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    assert_status(link_to(fx->d, P_ID, fx->port), LLMLINK_SUCCESS);
    check_linked(fx, before);
    transfers(fx);

    llmlink_status_t st = LLMLINK_FAILED;
    llmlink_cluster_info_t c = {.remote_cluster_id = P_ID};
    assert_status(llmlink_unlink_clusters(fx->d, &c, 1, LINK_MS, false, &st), LLMLINK_SUCCESS);
    wait_no_links(fx->p);
    llmlink_metrics_t d = metrics(fx->d), p = metrics(fx->p);
    assert_only(d.links_closed, LLMLINK_METRICS_MAX_REASONS, LLMLINK_CLOSE_UNLINKED, 1,
                "D links_closed");
    assert_only(p.links_closed, LLMLINK_METRICS_MAX_REASONS, LLMLINK_CLOSE_UNLINKED_BY_PEER, 1,
                "P links_closed");
    assert_int_equal(d.links_up, 0);
    llmlink_link_info_t li[2];
    assert_int_equal(links(fx->d, li, 2), 0);
    assert_int_equal(links(fx->p, li, 2), 0);

    /* Counters stay readable after finalize; links_up is 0. */
    llmlink_finalize(fx->d);
    d = metrics(fx->d);
    assert_int_equal(d.latency_count[LLMLINK_METRICS_PULL], 4);
    assert_int_equal(d.links_up, 0);
}

/* ---- timed out and failed, against P in its own process ---- */

typedef struct {
    fx_t *fx;
    llmlink_status_t st;
} pull_job_t;

static void *pull_thread(void *arg)
{
    pull_job_t *j = arg;
    uint64_t src[] = {1}, dst[] = {2};
    j->st = llmlink_pull_blocks(j->fx->d, &j->fx->key, j->fx->dc, src, 1, dst, 1, NULL);
    return NULL;
}

static uint64_t results(const llmlink_metrics_t *m, unsigned dir, unsigned res)
{
    uint64_t s = 0;
    for (unsigned t = 0; t < LLMLINK_METRICS_MAX_TRANSPORTS; t++)
        s += m->transfers[dir][t][res];
    return s;
}

static void test_timeout_and_failure(void **state)
{
    fx_t *fx = *state;
    /* D anew, with a short transfer wait and liveness far beyond it. */
    llmlink_destroy(fx->d);
    llmlink_option_t dopt[] = {{"llmlink.Transport", "tcp"},
                               {"llm.SyncKvCacheWaitTime", "400"},
                               {"llmlink.LivenessIntervalMs", "30000"}};
    fx->d = engine(LLMLINK_ROLE_DECODER, D_ID, dopt, 3);
    uint64_t da[NT];
    for (unsigned t = 0; t < NT; t++)
        da[t] = (uint64_t)(uintptr_t)fx->dmem[t];
    llmlink_cache_desc_t d = {.num_tensors = NT, .data_type = LLMLINK_DT_UINT8,
                              .placement = LLMLINK_PLACEMENT_HOST, .num_dims = 2,
                              .shape = {NB, BS}};
    assert_status(llmlink_register_blocks_cache(fx->d, &d, da, NT, NULL, &fx->dc),
                  LLMLINK_SUCCESS);

    const char *opts[] = {"llmlink.Transport=tcp", "llmlink.LivenessIntervalMs=30000", NULL};
    assert_int_equal(proc_node_start(&fx->node, "prompt", P_ID, "127.0.0.1:0", opts, NULL,
                                     IO_MS), 0);
    uint16_t port = fx->node.port;
    char reply[256];
    assert_int_equal(proc_cmd(&fx->node, reply, sizeof reply, IO_MS,
                              "reg blocks %d uint8 %u,%u key=blocks:%u:0", NT, NB, BS, P_ID), 0);
    if (strncmp(reply, "REG LLM_SUCCESS", 15) != 0)
        fail_msg("node: %s", reply);
    fx->key = (llmlink_cache_key_t){.type = LLMLINK_KEY_BLOCKS, .cluster_id = P_ID};

    /* 1: P stopped, the pull times out and the link is closed. */
    assert_status(link_to(fx->d, P_ID, port), LLMLINK_SUCCESS);
    assert_int_equal(proc_kill(&fx->node, SIGSTOP), 0);
    pull_job_t j = {fx, LLMLINK_FAILED};
    pull_thread(&j);
    assert_status(j.st, LLMLINK_WAIT_PROCESS_TIMEOUT);
    assert_int_equal(proc_kill(&fx->node, SIGCONT), 0);
    llmlink_metrics_t m = metrics(fx->d);
    assert_int_equal(m.transfers[0][LLMLINK_METRICS_TRANSPORT_TCP][LLMLINK_METRICS_TIMED_OUT], 1);
    assert_int_equal(results(&m, 0, LLMLINK_METRICS_TIMED_OUT), 1);
    assert_int_equal(m.links_closed[LLMLINK_CLOSE_TRANSFER_FAILED], 1);
    assert_int_equal(m.links_up, 0);

    /* 2: linked again; P stopped, then killed while the pull waits. */
    int64_t t0 = proc_now_ms();
    llmlink_status_t st;
    while ((st = link_to(fx->d, P_ID, port)) != LLMLINK_SUCCESS && proc_now_ms() - t0 < IO_MS)
        proc_sleep_ms(20); /* P may still be closing the old link */
    assert_status(st, LLMLINK_SUCCESS);
    assert_int_equal(proc_kill(&fx->node, SIGSTOP), 0);
    pthread_t th;
    j.st = LLMLINK_FAILED;
    assert_int_equal(pthread_create(&th, NULL, pull_thread, &j), 0);
    proc_sleep_ms(150); /* the pull waits for P's answer (it has 400 ms) */
    assert_int_equal(proc_kill(&fx->node, SIGKILL), 0);
    pthread_join(th, NULL);
    assert_true(j.st != LLMLINK_SUCCESS);
    m = metrics(fx->d);
    uint64_t failed = results(&m, 0, LLMLINK_METRICS_FAILED);
    uint64_t timed_out = results(&m, 0, LLMLINK_METRICS_TIMED_OUT);
    if (failed != 1 || timed_out != 1)
        fail_msg("after the kill: failed %llu timed_out %llu (pull: %s), expected 1 and 1",
                 (unsigned long long)failed, (unsigned long long)timed_out,
                 llmlink_status_name(j.st));
    assert_int_equal(m.latency_count[LLMLINK_METRICS_PULL], 2);
    assert_int_equal(sum(m.latency_buckets[LLMLINK_METRICS_PULL], LLMLINK_METRICS_BUCKETS), 2);
    /* the timed-out pull waited its 400 ms: its bucket's bound is above that */
    assert_true(m.latency_sum_ns[LLMLINK_METRICS_PULL] >= 400000000ull);
    assert_int_equal(sum(m.links_established, 2), 2);
    proc_wait(&fx->node, IO_MS);
}

/* ---- pure parts and argument checks ---- */

static void test_bounds_and_labels(void **state)
{
    (void)state;
    assert_true(fabs(llmlink_metrics_bucket_bound_seconds(0) - 8e-6) < 1e-12);
    for (size_t i = 1; i < LLMLINK_METRICS_BUCKETS; i++)
        assert_true(llmlink_metrics_bucket_bound_seconds(i) ==
                    2 * llmlink_metrics_bucket_bound_seconds(i - 1));
    assert_true(isinf(llmlink_metrics_bucket_bound_seconds(LLMLINK_METRICS_BUCKETS)));
    assert_string_equal(llmlink_metrics_label(LLMLINK_LABEL_DIR, LLMLINK_METRICS_PUSH), "push");
    assert_string_equal(llmlink_metrics_label(LLMLINK_LABEL_TRANSPORT,
                                              LLMLINK_METRICS_TRANSPORT_RDMA), "rdma");
    assert_string_equal(llmlink_metrics_label(LLMLINK_LABEL_RESULT, LLMLINK_METRICS_TIMED_OUT),
                        "timed_out");
    assert_string_equal(llmlink_metrics_label(LLMLINK_LABEL_CLOSE_REASON,
                                              LLMLINK_CLOSE_REPLACED), "replaced");
    assert_string_equal(llmlink_metrics_label(LLMLINK_LABEL_REFUSE_REASON,
                                              LLMLINK_REFUSE_TIMEOUT), "timeout");
    assert_string_equal(llmlink_metrics_label(LLMLINK_LABEL_REFUSE_REASON,
                                              LLMLINK_REFUSE_TRANSPORT), "transport");
    assert_string_equal(llmlink_metrics_label(LLMLINK_LABEL_LINK_DIR, LLMLINK_LINK_INBOUND),
                        "inbound");
    assert_null(llmlink_metrics_label(LLMLINK_LABEL_DIR, 2));
    assert_null(llmlink_metrics_label(LLMLINK_LABEL_REFUSE_REASON, LLMLINK_METRICS_MAX_REASONS));
    assert_null(llmlink_metrics_label((llmlink_metrics_label_kind_t)99, 0));
}

static void test_arguments(void **state)
{
    fx_t *fx = *state;
    llmlink_metrics_t m;
    memset(&m, 0, sizeof m);
    assert_status(llmlink_get_metrics(fx->p, NULL), LLMLINK_PARAM_INVALID);
    assert_status(llmlink_get_metrics(NULL, &m), LLMLINK_PARAM_INVALID);
    m.version = 2;
    assert_status(llmlink_get_metrics(fx->p, &m), LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "metrics->version"));
    llmlink_link_info_t li[1];
    memset(li, 0, sizeof li);
    size_t n = 7;
    assert_status(llmlink_get_links(fx->p, li, 1, NULL), LLMLINK_PARAM_INVALID);
    assert_status(llmlink_get_links(fx->p, NULL, 1, &n), LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "out is NULL"));
    assert_status(llmlink_get_links(fx->p, li, 1, &n), LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "out[0].version"));
    li[0].version = LLMLINK_LINK_INFO_VERSION + 1;
    assert_status(llmlink_get_links(fx->p, li, 1, &n), LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "1..LLMLINK_LINK_INFO_VERSION"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_known_sequence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_and_failure, setup, teardown),
        cmocka_unit_test(test_bounds_and_labels),
        cmocka_unit_test_setup_teardown(test_arguments, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
