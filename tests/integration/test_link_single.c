/*
 * test_link_single.c - the link contract with several engines in one
 * process (plus raw fake servers from rawpeer.h where an engine cannot play
 * the part: a listener that accepts and never answers).
 *
 * Covers: link / check / unlink / relink, ALREADY_LINK, per-cluster
 * statuses with a dead address among good ones, timeouts (bounds of the
 * whole call), parallel linking, PROCESSING_LINK, NOT_YET_LINK, non-force
 * and force unlink, a server unlinking its client, the llm_datadist seed
 * example shape (local ip info = remote ip info), remote ip fallback,
 * address-family mismatch, cluster id and role mismatch, MIX engines
 * linking each other at once, llm.LinkRetryCount, llmlink.MaxLinks, 32
 * threads sharing one DECODER engine (the TSan workload), and the log
 * callback.
 *
 * Every engine, fake server, reserved port and thread lives in the fixture,
 * so a failing assertion still frees everything in teardown. Ports come
 * from 127.0.0.1:0; every wait is bounded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmlink.h"
#include "llk_test.h"
#include "rawpeer.h"

#define MAX_ENG 40
#define MAX_SRV 8
#define MAX_FDS 8
#define MAX_TH 40

/* Slack on top of an exact timeout for scheduling (the contract's bound
 * in the brief: [timeout, timeout + 250 ms]). */
#define TIMEOUT_SLACK_MS 250

/* A link call on another thread. */
typedef struct bg_link {
    llmlink_t *dd;
    uint64_t id;
    uint16_t port;
    int32_t timeout;
    pthread_barrier_t *barrier; /* optional: wait here first */
    llmlink_status_t overall, status;
    int64_t elapsed;
} bg_link_t;

typedef struct delayed_init {
    llmlink_t *e;
    const llmlink_option_t *opts;
    size_t n;
    int64_t start_at; /* rawpeer_now_ms() at which to call llmlink_init */
    llmlink_status_t status;
    int64_t ready_at;
} delayed_init_t;

/* Everything a test starts; teardown ends it, even after a failed
 * assertion. Thread arguments live here, not on the test's stack, so a
 * thread still running after a failure never writes into a dead frame. */
typedef struct fx {
    llmlink_t *eng[MAX_ENG];
    size_t neng;
    rawpeer_server_t *srv[MAX_SRV];
    size_t nsrv;
    int fds[MAX_FDS];
    size_t nfds;
    pthread_t th[MAX_TH];
    size_t nth;
    bg_link_t bg[2];
    delayed_init_t di;
} fx_t;

static bool under_sanitizer(void)
{
    const char *s = getenv("LLMLINK_SANITIZER");
    return s && *s;
}

/* ---- fixture helpers -------------------------------------------------- */

static llmlink_t *engine_created(fx_t *fx, llmlink_role_t role, uint64_t id)
{
    llmlink_t *e = NULL;
    assert_true(fx->neng < MAX_ENG);
    assert_int_equal(llmlink_create(&e, role, id), LLMLINK_SUCCESS);
    fx->eng[fx->neng++] = e;
    return e;
}

static llmlink_t *engine(fx_t *fx, llmlink_role_t role, uint64_t id, const llmlink_option_t *o,
                         size_t n)
{
    llmlink_t *e = engine_created(fx, role, id);
    llmlink_status_t st = llmlink_init(e, o, n);
    if (st != LLMLINK_SUCCESS)
        fail_msg("init of cluster %llu: %s: %s", (unsigned long long)id,
                 llmlink_status_name(st), llmlink_last_error());
    return e;
}

/* Destroys e now (a peer "dies"); teardown skips it. */
static void destroy_now(fx_t *fx, llmlink_t *e)
{
    for (size_t i = 0; i < fx->neng; i++)
        if (fx->eng[i] == e) {
            fx->eng[i] = NULL;
            llmlink_destroy(e);
            return;
        }
    fail_msg("destroy_now: not a fixture engine");
}

static llmlink_t *decoder(fx_t *fx, uint64_t id)
{
    return engine(fx, LLMLINK_ROLE_DECODER, id, NULL, 0);
}

/* An engine listening on 127.0.0.1:0 (plus the extra options). */
static llmlink_t *server(fx_t *fx, llmlink_role_t role, uint64_t id, uint16_t *port,
                         const llmlink_option_t *extra, size_t nextra)
{
    llmlink_option_t o[8] = {{"llm.listenIpInfo", "127.0.0.1:0"}};
    assert_true(nextra < 8);
    for (size_t i = 0; i < nextra; i++)
        o[1 + i] = extra[i];
    llmlink_t *e = engine(fx, role, id, o, 1 + nextra);
    assert_int_equal(llmlink_get_listen_port(e, 0, port), LLMLINK_SUCCESS);
    assert_true(*port != 0);
    return e;
}

static llmlink_t *prompt(fx_t *fx, uint64_t id, uint16_t *port)
{
    return server(fx, LLMLINK_ROLE_PROMPT, id, port, NULL, 0);
}

static rawpeer_server_t *fake(fx_t *fx, rawpeer_mode_t mode)
{
    assert_true(fx->nsrv < MAX_SRV);
    rawpeer_server_t *s = rawpeer_server_start(mode, NULL, 0);
    assert_non_null(s);
    fx->srv[fx->nsrv++] = s;
    return s;
}

/* A port where nothing listens (connect: ECONNREFUSED). */
static uint16_t dead_port(fx_t *fx)
{
    uint16_t port = 0;
    assert_true(fx->nfds < MAX_FDS);
    int fd = rawpeer_reserve_port(&port);
    assert_true(fd >= 0);
    fx->fds[fx->nfds++] = fd;
    return port;
}

static void spawn(fx_t *fx, void *(*fn)(void *), void *arg)
{
    assert_true(fx->nth < MAX_TH);
    assert_int_equal(pthread_create(&fx->th[fx->nth], NULL, fn, arg), 0);
    fx->nth++;
}

static void join_all(fx_t *fx)
{
    while (fx->nth > 0)
        pthread_join(fx->th[--fx->nth], NULL);
}

/* Log capture (the callback is process-wide; teardown removes it). */
static struct {
    pthread_mutex_t mu;
    unsigned info_linked;
    unsigned total;
    char first_linked[512];
} logcap = {PTHREAD_MUTEX_INITIALIZER, 0, 0, ""};

static void log_cb(llmlink_log_level_t level, const char *msg, void *user)
{
    (void)user;
    pthread_mutex_lock(&logcap.mu);
    logcap.total++;
    if (level == LLMLINK_LOG_INFO && strstr(msg, "linked to cluster")) {
        if (logcap.info_linked++ == 0)
            snprintf(logcap.first_linked, sizeof logcap.first_linked, "%s", msg);
    }
    pthread_mutex_unlock(&logcap.mu);
}

static int setup(void **state)
{
    fx_t *fx = test_calloc(1, sizeof *fx);
    assert_non_null(fx);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    join_all(fx); /* threads end within their own (bounded) calls */
    llmlink_set_log_callback(NULL, NULL, LLMLINK_LOG_NONE);
    for (size_t i = fx->neng; i-- > 0;)
        llmlink_destroy(fx->eng[i]);
    for (size_t i = 0; i < fx->nsrv; i++)
        rawpeer_server_stop(fx->srv[i]);
    for (size_t i = 0; i < fx->nfds; i++)
        rawpeer_close(fx->fds[i]);
    test_free(fx);
    return 0;
}

/* ---- call helpers ------------------------------------------------------- */

/* clusters entry for remote id at 127.0.0.1:port (remote_role any). */
static void cl(llmlink_cluster_info_t *c, llmlink_ip_info_t *ip, uint64_t id, uint16_t port)
{
    ip->ip = "127.0.0.1";
    ip->port = port;
    memset(c, 0, sizeof *c);
    c->remote_cluster_id = id;
    c->remote_role = 0;
    c->remote_ip_infos = ip;
    c->num_remote_ip_infos = 1;
}

/* Links one cluster; returns the overall status, *st the cluster's. */
static llmlink_status_t link1(llmlink_t *dd, uint64_t id, uint16_t port, int32_t timeout,
                              llmlink_status_t *st)
{
    llmlink_cluster_info_t c;
    llmlink_ip_info_t ip;
    cl(&c, &ip, id, port);
    *st = 0xDEADu;
    return llmlink_link_clusters(dd, &c, 1, timeout, st);
}

static llmlink_status_t unlink1(llmlink_t *dd, uint64_t id, int32_t timeout, bool force,
                                llmlink_status_t *st)
{
    llmlink_cluster_info_t c;
    memset(&c, 0, sizeof c);
    c.remote_cluster_id = id;
    *st = 0xDEADu;
    return llmlink_unlink_clusters(dd, &c, 1, timeout, force, st);
}

static void link_ok(llmlink_t *dd, uint64_t id, uint16_t port)
{
    llmlink_status_t st;
    assert_status(link1(dd, id, port, 5000, &st), LLMLINK_SUCCESS);
    assert_status(st, LLMLINK_SUCCESS);
}

/* Polls check_link_status until it returns want; the elapsed ms, or -1
 * if it did not within timeout_ms. */
static int64_t wait_check(llmlink_t *dd, uint64_t id, llmlink_status_t want, int timeout_ms)
{
    int64_t t0 = rawpeer_now_ms();
    for (int round = 0; round <= timeout_ms; round++) { /* sleeps >= 2 ms per round */
        if (llmlink_check_link_status(dd, id) == want)
            return rawpeer_now_ms() - t0;
        if (rawpeer_now_ms() - t0 > timeout_ms)
            break;
        rawpeer_sleep_ms(2);
    }
    return -1;
}

static void *bg_link_main(void *arg)
{
    bg_link_t *b = arg;
    if (b->barrier)
        pthread_barrier_wait(b->barrier);
    int64_t t0 = rawpeer_now_ms();
    b->overall = link1(b->dd, b->id, b->port, b->timeout, &b->status);
    b->elapsed = rawpeer_now_ms() - t0;
    return NULL;
}

/* ---- basic link / check / unlink ---------------------------------------- */

static void test_link_check_unlink_relink(void **state)
{
    fx_t *fx = *state;
    uint16_t port;
    llmlink_t *p = prompt(fx, 1, &port);
    llmlink_t *d = decoder(fx, 2);
    llmlink_status_t st;

    for (int round = 0; round < 3; round++) {
        assert_status(llmlink_check_link_status(d, 1), LLMLINK_NOT_YET_LINK);
        link_ok(d, 1, port);
        assert_status(llmlink_check_link_status(d, 1), LLMLINK_SUCCESS);
        assert_status(llmlink_check_link_status(p, 2), LLMLINK_SUCCESS);
        llmlink_stats_t sd = stats_of(d), sp = stats_of(p);
        assert_int_equal(sd.outbound_links, 1);
        assert_int_equal(sd.inbound_links, 0);
        assert_int_equal(sp.inbound_links, 1);
        assert_int_equal(sp.handshakes_completed, round + 1);

        /* Non-force unlink frees both ends before it returns. */
        assert_status(unlink1(d, 1, 5000, false, &st), LLMLINK_SUCCESS);
        assert_status(st, LLMLINK_SUCCESS);
        assert_status(llmlink_check_link_status(p, 2), LLMLINK_NOT_YET_LINK);
        assert_status(llmlink_check_link_status(d, 1), LLMLINK_NOT_YET_LINK);
        assert_int_equal(stats_of(p).inbound_links, 0);
        assert_int_equal(stats_of(d).links, 0);
    }
    assert_int_equal(stats_of(p).links_lost, 0);
    assert_int_equal(stats_of(d).links_lost, 0);
    /* The largest timeouts are fine too. */
    link_ok(d, 1, port);
    llmlink_status_t big;
    assert_status(link1(d, 1, port, INT32_MAX, &big), LLMLINK_LINK_FAILED);
    assert_status(big, LLMLINK_ALREADY_LINK);
    assert_status(unlink1(d, 1, INT32_MAX, false, &big), LLMLINK_SUCCESS);
    assert_status(link1(d, 1, port, INT32_MAX, &big), LLMLINK_SUCCESS);
}

static void test_already_link(void **state)
{
    fx_t *fx = *state;
    uint16_t port;
    llmlink_t *p = prompt(fx, 1, &port);
    llmlink_t *d = decoder(fx, 2);
    llmlink_status_t st;
    link_ok(d, 1, port);
    assert_status(link1(d, 1, port, 5000, &st), LLMLINK_LINK_FAILED);
    assert_status(st, LLMLINK_ALREADY_LINK);
    /* Without a statuses array: the overall status alone. */
    llmlink_cluster_info_t c1;
    llmlink_ip_info_t ip1;
    cl(&c1, &ip1, 1, port);
    assert_status(llmlink_link_clusters(d, &c1, 1, 5000, NULL), LLMLINK_LINK_FAILED);
    /* No second connection was made, and the link is intact. */
    assert_int_equal(stats_of(p).handshakes_accepted, 1);
    assert_status(llmlink_check_link_status(d, 1), LLMLINK_SUCCESS);
    assert_status(llmlink_check_link_status(p, 2), LLMLINK_SUCCESS);
    /* In a call with a new cluster: the new one links, the old reports. */
    uint16_t port3;
    prompt(fx, 3, &port3);
    llmlink_cluster_info_t c[2];
    llmlink_ip_info_t ip[2];
    llmlink_status_t sts[2];
    cl(&c[0], &ip[0], 1, port);
    cl(&c[1], &ip[1], 3, port3);
    assert_status(llmlink_link_clusters(d, c, 2, 5000, sts), LLMLINK_LINK_FAILED);
    assert_status(sts[0], LLMLINK_ALREADY_LINK);
    assert_status(sts[1], LLMLINK_SUCCESS);
    assert_status(llmlink_check_link_status(d, 3), LLMLINK_SUCCESS);
}

/* One cluster whose address has nothing listening, among good ones. */
static void test_statuses_dead_among_good(void **state)
{
    fx_t *fx = *state;
    uint16_t p1, p3, p4;
    llmlink_t *s1 = prompt(fx, 1, &p1);
    prompt(fx, 3, &p3);
    prompt(fx, 4, &p4);
    uint16_t dead = dead_port(fx);
    llmlink_t *d = decoder(fx, 2);
    llmlink_cluster_info_t c[4];
    llmlink_ip_info_t ip[4];
    llmlink_status_t st[4];
    cl(&c[0], &ip[0], 1, p1);
    cl(&c[1], &ip[1], 77, dead);
    cl(&c[2], &ip[2], 3, p3);
    cl(&c[3], &ip[3], 4, p4);
    int64_t t0 = rawpeer_now_ms();
    llmlink_status_t overall = llmlink_link_clusters(d, c, 4, 5000, st);
    int64_t elapsed = rawpeer_now_ms() - t0;
    assert_status(overall, LLMLINK_LINK_FAILED);
    assert_status(st[0], LLMLINK_SUCCESS);
    assert_status(st[1], LLMLINK_LINK_FAILED);
    assert_status(st[2], LLMLINK_SUCCESS);
    assert_status(st[3], LLMLINK_SUCCESS);
    /* Refused at once, far below the 5 s timeout. */
    if (elapsed > 1000)
        fail_msg("a refused connection took %lld ms (timeout 5000)", (long long)elapsed);
    /* last_error names the cluster that failed. */
    if (!strstr(llmlink_last_error(), "77"))
        fail_msg("last_error does not name cluster 77: %s", llmlink_last_error());
    /* The good ones stay linked. */
    assert_status(llmlink_check_link_status(d, 1), LLMLINK_SUCCESS);
    assert_status(llmlink_check_link_status(d, 3), LLMLINK_SUCCESS);
    assert_status(llmlink_check_link_status(d, 4), LLMLINK_SUCCESS);
    assert_status(llmlink_check_link_status(d, 77), LLMLINK_NOT_YET_LINK);
    assert_status(llmlink_check_link_status(s1, 2), LLMLINK_SUCCESS);
    assert_int_equal(stats_of(d).outbound_links, 3);
}

/* ---- timeouts and parallelism ------------------------------------------- */

static void check_timeout(fx_t *fx, int32_t timeout)
{
    rawpeer_server_t *silent = fake(fx, RAWPEER_SILENT);
    llmlink_t *d = decoder(fx, 2);
    llmlink_status_t st;
    int64_t t0 = rawpeer_now_ms();
    llmlink_status_t overall = link1(d, 5, rawpeer_server_port(silent), timeout, &st);
    int64_t elapsed = rawpeer_now_ms() - t0;
    assert_status(overall, LLMLINK_LINK_FAILED);
    assert_status(st, LLMLINK_TIMEOUT);
    if (elapsed < timeout || elapsed > timeout + TIMEOUT_SLACK_MS)
        fail_msg("timeout %d ms: the call took %lld ms", timeout, (long long)elapsed);
    assert_int_equal(rawpeer_server_accepted(silent), 1);
    /* The attempt is gone: the connection is closed, nothing lingers. */
    assert_true(rawpeer_server_wait_all_closed(silent, 1000));
    assert_status(llmlink_check_link_status(d, 5), LLMLINK_NOT_YET_LINK);
    assert_int_equal(stats_of(d).links, 0);
}

static void test_timeout_200(void **state) { check_timeout(*state, 200); }
static void test_timeout_1000(void **state) { check_timeout(*state, 1000); }

/* Clusters are linked in parallel: 4 silent listeners cost one timeout. */
static void test_parallel_links(void **state)
{
    fx_t *fx = *state;
    uint16_t good;
    prompt(fx, 1, &good);
    llmlink_t *d = decoder(fx, 2);
    llmlink_cluster_info_t c[5];
    llmlink_ip_info_t ip[5];
    llmlink_status_t st[5];
    rawpeer_server_t *silent[4];
    for (size_t i = 0; i < 4; i++) {
        silent[i] = fake(fx, RAWPEER_SILENT);
        cl(&c[i], &ip[i], 10 + i, rawpeer_server_port(silent[i]));
    }
    cl(&c[4], &ip[4], 1, good);
    int64_t t0 = rawpeer_now_ms();
    llmlink_status_t overall = llmlink_link_clusters(d, c, 5, 500, st);
    int64_t elapsed = rawpeer_now_ms() - t0;
    assert_status(overall, LLMLINK_LINK_FAILED);
    for (size_t i = 0; i < 4; i++) {
        assert_status(st[i], LLMLINK_TIMEOUT);
        assert_int_equal(rawpeer_server_accepted(silent[i]), 1);
    }
    assert_status(st[4], LLMLINK_SUCCESS);
    if (elapsed < 500 || elapsed >= 900)
        fail_msg("5 clusters, 4 silent, timeout 500: took %lld ms (serial linking?)",
                 (long long)elapsed);
    assert_status(llmlink_check_link_status(d, 1), LLMLINK_SUCCESS);
}

/* A link of a cluster that another call is linking: PROCESSING_LINK. */
static void test_processing_link(void **state)
{
    fx_t *fx = *state;
    rawpeer_server_t *silent = fake(fx, RAWPEER_SILENT);
    llmlink_t *d = decoder(fx, 2);
    bg_link_t *a = &fx->bg[0];
    *a = (bg_link_t){.dd = d, .id = 500, .port = rawpeer_server_port(silent), .timeout = 1500};
    spawn(fx, bg_link_main, a);
    /* A has started once its connection reached the listener. */
    assert_true(rawpeer_server_wait_accepted(silent, 1, 1000));

    llmlink_status_t st;
    int64_t t0 = rawpeer_now_ms();
    assert_status(link1(d, 500, rawpeer_server_port(silent), 1000, &st), LLMLINK_LINK_FAILED);
    assert_status(st, LLMLINK_PROCESSING_LINK);
    assert_status(unlink1(d, 500, 1000, false, &st), LLMLINK_UNLINK_FAILED);
    assert_status(st, LLMLINK_PROCESSING_LINK);
    assert_status(unlink1(d, 500, 1000, true, &st), LLMLINK_UNLINK_FAILED);
    assert_status(st, LLMLINK_PROCESSING_LINK);
    assert_status(llmlink_check_link_status(d, 500), LLMLINK_NOT_YET_LINK);
    int64_t b_elapsed = rawpeer_now_ms() - t0;
    if (b_elapsed > 300)
        fail_msg("B's calls waited %lld ms for A's link", (long long)b_elapsed);
    /* B's calls made no connection of their own. */
    assert_int_equal(rawpeer_server_accepted(silent), 1);

    join_all(fx);
    assert_status(a->overall, LLMLINK_LINK_FAILED);
    assert_status(a->status, LLMLINK_TIMEOUT);
    if (a->elapsed < 1500 || a->elapsed > 1500 + TIMEOUT_SLACK_MS)
        fail_msg("A took %lld ms with timeout 1500", (long long)a->elapsed);
    /* After A: the id is free again, a new attempt is made. */
    assert_status(link1(d, 500, rawpeer_server_port(silent), 100, &st), LLMLINK_LINK_FAILED);
    assert_status(st, LLMLINK_TIMEOUT);
}

/* ---- unlink ----------------------------------------------------------- */

static void test_unlink_never_linked(void **state)
{
    fx_t *fx = *state;
    uint16_t port;
    llmlink_t *p = prompt(fx, 1, &port);
    llmlink_t *d = decoder(fx, 2);
    llmlink_status_t st;
    assert_status(unlink1(d, 999, 1000, false, &st), LLMLINK_UNLINK_FAILED);
    assert_status(st, LLMLINK_NOT_YET_LINK);
    assert_status(unlink1(d, 999, 1000, true, &st), LLMLINK_UNLINK_FAILED);
    assert_status(st, LLMLINK_NOT_YET_LINK);
    /* Mixed: a real link and a never-linked id in one call. */
    link_ok(d, 1, port);
    llmlink_cluster_info_t c[2];
    memset(c, 0, sizeof c);
    c[0].remote_cluster_id = 999;
    c[1].remote_cluster_id = 1;
    llmlink_status_t sts[2];
    assert_status(llmlink_unlink_clusters(d, c, 2, 1000, false, sts), LLMLINK_UNLINK_FAILED);
    assert_status(sts[0], LLMLINK_NOT_YET_LINK);
    assert_status(sts[1], LLMLINK_SUCCESS);
    assert_status(llmlink_check_link_status(d, 1), LLMLINK_NOT_YET_LINK);
    assert_status(llmlink_check_link_status(p, 2), LLMLINK_NOT_YET_LINK);
    /* And once more: now also NOT_YET_LINK. */
    assert_status(unlink1(d, 1, 1000, false, &st), LLMLINK_UNLINK_FAILED);
    assert_status(st, LLMLINK_NOT_YET_LINK);
    /* A PROMPT engine asked to unlink an id nobody linked from. */
    assert_status(unlink1(p, 12345, 1000, false, &st), LLMLINK_UNLINK_FAILED);
    assert_status(st, LLMLINK_NOT_YET_LINK);
}

static void test_force_unlink(void **state)
{
    fx_t *fx = *state;
    uint16_t port;
    llmlink_t *p = prompt(fx, 1, &port);
    llmlink_t *d = decoder(fx, 2);
    llmlink_status_t st;
    link_ok(d, 1, port);
    uint64_t lost0 = stats_of(p).links_lost;
    int64_t t0 = rawpeer_now_ms();
    assert_status(unlink1(d, 1, 5000, true, &st), LLMLINK_SUCCESS);
    assert_status(st, LLMLINK_SUCCESS);
    int64_t elapsed = rawpeer_now_ms() - t0;
    if (elapsed > 200)
        fail_msg("force unlink took %lld ms", (long long)elapsed);
    /* The local end is free at once. */
    assert_status(llmlink_check_link_status(d, 1), LLMLINK_NOT_YET_LINK);
    assert_int_equal(stats_of(d).links, 0);
    /* The server notices within 1 s (the connection closed). */
    int64_t noticed = wait_check(p, 2, LLMLINK_NOT_YET_LINK, 1000);
    if (noticed < 0)
        fail_msg("the PROMPT engine still holds the link 1 s after a force unlink");
    assert_int_equal(stats_of(p).links_lost, lost0 + 1);
    /* The same D links again at once. */
    link_ok(d, 1, port);
    assert_status(llmlink_check_link_status(p, 2), LLMLINK_SUCCESS);
}

/* Force unlink and relink at once, before the server may have noticed:
 * the server replaces the old link with the new one. */
static void test_force_unlink_relink_at_once(void **state)
{
    fx_t *fx = *state;
    uint16_t port;
    llmlink_t *p = prompt(fx, 1, &port);
    llmlink_t *d = decoder(fx, 2);
    llmlink_status_t st;
    for (int i = 0; i < 5; i++) {
        link_ok(d, 1, port);
        assert_status(unlink1(d, 1, 5000, true, &st), LLMLINK_SUCCESS);
    }
    link_ok(d, 1, port);
    /* Eventually exactly one link on the server, and it is live. */
    int64_t t0 = rawpeer_now_ms();
    for (int i = 0; i < 200 && stats_of(p).inbound_links != 1 && rawpeer_now_ms() - t0 < 1000; i++)
        rawpeer_sleep_ms(5);
    assert_int_equal(stats_of(p).inbound_links, 1);
    assert_status(llmlink_check_link_status(p, 2), LLMLINK_SUCCESS);
    assert_status(llmlink_check_link_status(d, 1), LLMLINK_SUCCESS);
    /* And a clean non-force unlink of the survivor. */
    assert_status(unlink1(d, 1, 5000, false, &st), LLMLINK_SUCCESS);
    assert_status(llmlink_check_link_status(p, 2), LLMLINK_NOT_YET_LINK);
}

/* A PROMPT engine unlinks its client by the decoder's cluster id. */
static void test_server_unlinks_client(void **state)
{
    fx_t *fx = *state;
    uint16_t port;
    llmlink_t *p = prompt(fx, 1, &port);
    llmlink_t *d = decoder(fx, 2);
    llmlink_status_t st;
    link_ok(d, 1, port);
    assert_status(unlink1(p, 2, 5000, false, &st), LLMLINK_SUCCESS);
    assert_status(st, LLMLINK_SUCCESS);
    assert_status(llmlink_check_link_status(p, 2), LLMLINK_NOT_YET_LINK);
    /* The client acknowledged, so it has already freed its end. */
    if (wait_check(d, 1, LLMLINK_NOT_YET_LINK, 1000) < 0)
        fail_msg("the DECODER still holds the link after the server unlinked it");
    assert_int_equal(stats_of(d).links, 0);
    /* The server unlinking by its own id (what the client calls it) is
     * not a link it has. */
    link_ok(d, 1, port);
    assert_status(unlink1(p, 1, 1000, false, &st), LLMLINK_UNLINK_FAILED);
    assert_status(st, LLMLINK_NOT_YET_LINK);
    /* Force from the server side: the client notices the close. */
    assert_status(unlink1(p, 2, 5000, true, &st), LLMLINK_SUCCESS);
    assert_status(llmlink_check_link_status(p, 2), LLMLINK_NOT_YET_LINK);
    if (wait_check(d, 1, LLMLINK_NOT_YET_LINK, 1000) < 0)
        fail_msg("the DECODER did not notice the server's force unlink within 1 s");
    assert_int_equal(stats_of(d).links_lost, 1);
    link_ok(d, 1, port);
}

/* ---- addresses --------------------------------------------------------- */

/* llm_datadist's example: the same ip:port as local and remote ip info. */
static void test_seed_example_shape(void **state)
{
    fx_t *fx = *state;
    uint16_t port;
    llmlink_t *p = prompt(fx, 1, &port);
    llmlink_t *d = decoder(fx, 2);
    llmlink_ip_info_t local = {"127.0.0.1", port}, remote = {"127.0.0.1", port};
    llmlink_cluster_info_t c = {1, LLMLINK_ROLE_PROMPT, &local, 1, &remote, 1};
    llmlink_status_t st = 0xDEADu;
    assert_status(llmlink_link_clusters(d, &c, 1, 5000, &st), LLMLINK_SUCCESS);
    assert_status(st, LLMLINK_SUCCESS);
    assert_status(llmlink_check_link_status(p, 2), LLMLINK_SUCCESS);
    assert_status(llmlink_unlink_clusters(d, &c, 1, 5000, false, &st), LLMLINK_SUCCESS);
    assert_status(llmlink_check_link_status(p, 2), LLMLINK_NOT_YET_LINK);
}

static void test_remote_ip_fallback(void **state)
{
    fx_t *fx = *state;
    uint16_t port;
    llmlink_t *p = prompt(fx, 1, &port);
    llmlink_t *d = decoder(fx, 2);
    uint16_t dead = dead_port(fx), dead2 = dead_port(fx);
    llmlink_ip_info_t remote[2] = {{"127.0.0.1", dead}, {"127.0.0.1", port}};
    llmlink_cluster_info_t c = {1, LLMLINK_ROLE_PROMPT, NULL, 0, remote, 2};
    llmlink_status_t st = 0xDEADu;
    assert_status(llmlink_link_clusters(d, &c, 1, 5000, &st), LLMLINK_SUCCESS);
    assert_status(st, LLMLINK_SUCCESS);
    assert_status(llmlink_check_link_status(p, 2), LLMLINK_SUCCESS);
    /* Every address dead: LINK_FAILED, quickly. */
    remote[1].port = dead2;
    c.remote_cluster_id = 3;
    int64_t t0 = rawpeer_now_ms();
    assert_status(llmlink_link_clusters(d, &c, 1, 5000, &st), LLMLINK_LINK_FAILED);
    assert_status(st, LLMLINK_LINK_FAILED);
    if (rawpeer_now_ms() - t0 > 1000)
        fail_msg("two refused addresses took %lld ms", (long long)(rawpeer_now_ms() - t0));
}

static void test_local_ip_other_family(void **state)
{
    fx_t *fx = *state;
    uint16_t port;
    llmlink_t *p = prompt(fx, 1, &port);
    llmlink_t *d = decoder(fx, 2);
    llmlink_ip_info_t local = {"::1", 0}, remote = {"127.0.0.1", port};
    llmlink_cluster_info_t c = {1, LLMLINK_ROLE_PROMPT, &local, 1, &remote, 1};
    llmlink_status_t st = 0xDEADu;
    int64_t t0 = rawpeer_now_ms();
    assert_status(llmlink_link_clusters(d, &c, 1, 5000, &st), LLMLINK_LINK_FAILED);
    assert_status(st, LLMLINK_LINK_FAILED);
    if (rawpeer_now_ms() - t0 > 1000)
        fail_msg("the family mismatch took %lld ms", (long long)(rawpeer_now_ms() - t0));
    if (!strstr(llmlink_last_error(), "family"))
        fail_msg("last_error does not explain the family mismatch: %s", llmlink_last_error());
    assert_int_equal(stats_of(p).handshakes_accepted, 0);
}

/* An engine listening on two addresses (IPv4 and IPv6 loopback) is
 * reachable on both; skipped where ::1 is not available. */
static void test_two_listen_addresses_ipv6(void **state)
{
    fx_t *fx = *state;
    static const llmlink_option_t two[] = {{"llm.listenIpInfo", "127.0.0.1:0;[::1]:0"}};
    llmlink_t *p = engine_created(fx, LLMLINK_ROLE_PROMPT, 1);
    llmlink_status_t st = llmlink_init(p, two, 1);
    if (st != LLMLINK_SUCCESS) {
        print_message("no IPv6 loopback here (%s); skipped\n", llmlink_last_error());
        skip();
    }
    uint16_t p4 = 0, p6 = 0, none;
    assert_status(llmlink_get_listen_port(p, 0, &p4), LLMLINK_SUCCESS);
    assert_status(llmlink_get_listen_port(p, 1, &p6), LLMLINK_SUCCESS);
    assert_status(llmlink_get_listen_port(p, 2, &none), LLMLINK_PARAM_INVALID);
    assert_true(p4 != 0 && p6 != 0);
    llmlink_t *d4 = decoder(fx, 2), *d6 = decoder(fx, 3);
    link_ok(d4, 1, p4);
    llmlink_ip_info_t local = {"::1", 0}, remote = {"::1", p6};
    llmlink_cluster_info_t c = {1, LLMLINK_ROLE_PROMPT, &local, 1, &remote, 1};
    assert_status(llmlink_link_clusters(d6, &c, 1, 5000, &st), LLMLINK_SUCCESS);
    assert_status(st, LLMLINK_SUCCESS);
    assert_status(llmlink_check_link_status(p, 2), LLMLINK_SUCCESS);
    assert_status(llmlink_check_link_status(p, 3), LLMLINK_SUCCESS);
    assert_int_equal(stats_of(p).inbound_links, 2);
}

/* ---- identity ----------------------------------------------------------- */

static void test_wrong_remote_cluster_id(void **state)
{
    fx_t *fx = *state;
    uint16_t port;
    llmlink_t *p = prompt(fx, 1, &port);
    llmlink_t *d = decoder(fx, 2);
    llmlink_status_t st;
    assert_status(link1(d, 99, port, 5000, &st), LLMLINK_LINK_FAILED);
    assert_status(st, LLMLINK_CLUSTER_ID_MISMATCH);
    assert_status(llmlink_check_link_status(d, 99), LLMLINK_NOT_YET_LINK);
    assert_status(llmlink_check_link_status(p, 2), LLMLINK_NOT_YET_LINK);
    llmlink_stats_t s = stats_of(p);
    assert_int_equal(s.handshakes_rejected, 1);
    assert_int_equal(s.links, 0);
    /* The right id then links. */
    link_ok(d, 1, port);
}

static void test_remote_role_mismatch(void **state)
{
    fx_t *fx = *state;
    uint16_t mport, pport;
    llmlink_t *mix = server(fx, LLMLINK_ROLE_MIX, 3, &mport, NULL, 0);
    prompt(fx, 1, &pport);
    llmlink_t *d = decoder(fx, 2);
    llmlink_ip_info_t ip;
    llmlink_cluster_info_t c;
    llmlink_status_t st = 0xDEADu;

    cl(&c, &ip, 3, mport);
    c.remote_role = LLMLINK_ROLE_PROMPT;
    assert_status(llmlink_link_clusters(d, &c, 1, 5000, &st), LLMLINK_LINK_FAILED);
    assert_status(st, LLMLINK_ROLE_NOT_ALLOWED);
    assert_status(llmlink_check_link_status(mix, 2), LLMLINK_NOT_YET_LINK);

    cl(&c, &ip, 1, pport);
    c.remote_role = LLMLINK_ROLE_MIX;
    assert_status(llmlink_link_clusters(d, &c, 1, 5000, &st), LLMLINK_LINK_FAILED);
    assert_status(st, LLMLINK_ROLE_NOT_ALLOWED);

    /* The right role, and "any", link. */
    cl(&c, &ip, 3, mport);
    c.remote_role = LLMLINK_ROLE_MIX;
    assert_status(llmlink_link_clusters(d, &c, 1, 5000, &st), LLMLINK_SUCCESS);
    cl(&c, &ip, 1, pport);
    c.remote_role = 0;
    assert_status(llmlink_link_clusters(d, &c, 1, 5000, &st), LLMLINK_SUCCESS);
}

/* Two MIX engines link each other at the same time. */
static void test_mix_cross_link(void **state)
{
    fx_t *fx = *state;
    uint16_t pa, pb;
    llmlink_t *a = server(fx, LLMLINK_ROLE_MIX, 10, &pa, NULL, 0);
    llmlink_t *b = server(fx, LLMLINK_ROLE_MIX, 11, &pb, NULL, 0);
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, 2);
    bg_link_t *ab = &fx->bg[0], *ba = &fx->bg[1];
    *ab = (bg_link_t){.dd = a, .id = 11, .port = pb, .timeout = 5000, .barrier = &barrier};
    *ba = (bg_link_t){.dd = b, .id = 10, .port = pa, .timeout = 5000, .barrier = &barrier};
    spawn(fx, bg_link_main, ab);
    spawn(fx, bg_link_main, ba);
    join_all(fx);
    pthread_barrier_destroy(&barrier);
    assert_status(ab->overall, LLMLINK_SUCCESS);
    assert_status(ab->status, LLMLINK_SUCCESS);
    assert_status(ba->overall, LLMLINK_SUCCESS);
    assert_status(ba->status, LLMLINK_SUCCESS);
    llmlink_stats_t sa = stats_of(a), sb = stats_of(b);
    assert_int_equal(sa.outbound_links, 1);
    assert_int_equal(sa.inbound_links, 1);
    assert_int_equal(sb.outbound_links, 1);
    assert_int_equal(sb.inbound_links, 1);
    assert_status(llmlink_check_link_status(a, 11), LLMLINK_SUCCESS);
    assert_status(llmlink_check_link_status(b, 10), LLMLINK_SUCCESS);
    /* A second link A -> B is ALREADY_LINK even though B -> A exists too. */
    llmlink_status_t st;
    assert_status(link1(a, 11, pb, 5000, &st), LLMLINK_LINK_FAILED);
    assert_status(st, LLMLINK_ALREADY_LINK);
}

/* ---- peers going away, both ends unlinking, liveness --------------------- */

/* The server engine goes away: the client notices at once (the sockets
 * close) and links to a new server with the same id. */
static void test_server_destroyed_client_notices(void **state)
{
    fx_t *fx = *state;
    uint16_t port;
    llmlink_t *p = prompt(fx, 1, &port);
    llmlink_t *d = decoder(fx, 2);
    link_ok(d, 1, port);
    destroy_now(fx, p);
    if (wait_check(d, 1, LLMLINK_NOT_YET_LINK, 1000) < 0)
        fail_msg("the DECODER still holds the link 1 s after the server was destroyed");
    assert_int_equal(stats_of(d).links_lost, 1);
    uint16_t port2;
    llmlink_t *p2 = prompt(fx, 1, &port2);
    link_ok(d, 1, port2);
    assert_status(llmlink_check_link_status(p2, 2), LLMLINK_SUCCESS);
    /* And the other way: the client goes away, the server notices. */
    destroy_now(fx, d);
    if (wait_check(p2, 2, LLMLINK_NOT_YET_LINK, 1000) < 0)
        fail_msg("the PROMPT engine still holds the link 1 s after the client was destroyed");
}

/* Both ends unlink at the same time: each call succeeds or finds the link
 * already gone, and both ends are free afterwards. */
typedef struct bg_unlink {
    llmlink_t *dd;
    uint64_t id;
    pthread_barrier_t *barrier;
    llmlink_status_t overall, status;
} bg_unlink_t;

static void *bg_unlink_main(void *arg)
{
    bg_unlink_t *b = arg;
    pthread_barrier_wait(b->barrier);
    b->overall = unlink1(b->dd, b->id, 5000, false, &b->status);
    return NULL;
}

static void test_unlink_both_ends_at_once(void **state)
{
    fx_t *fx = *state;
    uint16_t port;
    llmlink_t *p = prompt(fx, 1, &port);
    llmlink_t *d = decoder(fx, 2);
    static bg_unlink_t u[2];
    for (int round = 0; round < 10; round++) {
        link_ok(d, 1, port);
        pthread_barrier_t barrier;
        pthread_barrier_init(&barrier, NULL, 2);
        u[0] = (bg_unlink_t){.dd = d, .id = 1, .barrier = &barrier};
        u[1] = (bg_unlink_t){.dd = p, .id = 2, .barrier = &barrier};
        spawn(fx, bg_unlink_main, &u[0]);
        spawn(fx, bg_unlink_main, &u[1]);
        join_all(fx);
        pthread_barrier_destroy(&barrier);
        for (int i = 0; i < 2; i++) {
            bool ok = (u[i].overall == LLMLINK_SUCCESS && u[i].status == LLMLINK_SUCCESS) ||
                      (u[i].overall == LLMLINK_UNLINK_FAILED &&
                       u[i].status == LLMLINK_NOT_YET_LINK);
            if (!ok)
                fail_msg("round %d: %s's unlink: %s / %s", round, i ? "PROMPT" : "DECODER",
                         llmlink_status_name(u[i].overall), llmlink_status_name(u[i].status));
        }
        if (u[0].status != LLMLINK_SUCCESS && u[1].status != LLMLINK_SUCCESS)
            fail_msg("round %d: neither unlink succeeded", round);
        assert_status(llmlink_check_link_status(d, 1), LLMLINK_NOT_YET_LINK);
        if (wait_check(p, 2, LLMLINK_NOT_YET_LINK, 1000) < 0)
            fail_msg("round %d: the PROMPT engine still holds the link", round);
    }
    assert_int_equal(stats_of(p).links_lost, 0);
    assert_int_equal(stats_of(d).links_lost, 0);
}

/* Heartbeats keep a link between two engines alive over many liveness
 * intervals (the shorter interval of the two ends is used). */
static void test_heartbeats_keep_link(void **state)
{
    fx_t *fx = *state;
    static const llmlink_option_t fast[] = {{"llmlink.LivenessIntervalMs", "150"}};
    uint16_t port;
    llmlink_t *p = server(fx, LLMLINK_ROLE_PROMPT, 1, &port, fast, 1);
    llmlink_t *d = decoder(fx, 2); /* default 3000 ms: 150 ms wins */
    link_ok(d, 1, port);
    int64_t t0 = rawpeer_now_ms();
    for (int i = 0; i < 50 && rawpeer_now_ms() - t0 < 1000; i++) { /* > 6 intervals */
        assert_status(llmlink_check_link_status(d, 1), LLMLINK_SUCCESS);
        assert_status(llmlink_check_link_status(p, 2), LLMLINK_SUCCESS);
        rawpeer_sleep_ms(20);
    }
    assert_int_equal(stats_of(p).links_lost, 0);
    assert_int_equal(stats_of(d).links_lost, 0);
}

/* ---- options ------------------------------------------------------------ */

/* llm.LinkTotalTime caps a call's timeout. */
static void test_link_total_time(void **state)
{
    fx_t *fx = *state;
    rawpeer_server_t *silent = fake(fx, RAWPEER_SILENT);
    static const llmlink_option_t cap[] = {{"llm.LinkTotalTime", "200"}};
    llmlink_t *d = engine(fx, LLMLINK_ROLE_DECODER, 2, cap, 1);
    llmlink_status_t st;
    int64_t t0 = rawpeer_now_ms();
    assert_status(link1(d, 5, rawpeer_server_port(silent), 5000, &st), LLMLINK_LINK_FAILED);
    int64_t elapsed = rawpeer_now_ms() - t0;
    assert_status(st, LLMLINK_TIMEOUT);
    if (elapsed < 200 || elapsed > 200 + TIMEOUT_SLACK_MS)
        fail_msg("llm.LinkTotalTime 200, timeout 5000: took %lld ms", (long long)elapsed);
    /* A call timeout below the cap is the call's own. */
    t0 = rawpeer_now_ms();
    assert_status(link1(d, 6, rawpeer_server_port(silent), 100, &st), LLMLINK_LINK_FAILED);
    elapsed = rawpeer_now_ms() - t0;
    assert_status(st, LLMLINK_TIMEOUT);
    if (elapsed < 100 || elapsed > 100 + TIMEOUT_SLACK_MS)
        fail_msg("llm.LinkTotalTime 200, timeout 100: took %lld ms", (long long)elapsed);
}

/* Retries never outlast the call: 100 attempts at a dead port, 300 ms. */
static void test_retries_bounded_by_timeout(void **state)
{
    fx_t *fx = *state;
    static const llmlink_option_t many[] = {{"llm.LinkRetryCount", "100"}};
    llmlink_t *d = engine(fx, LLMLINK_ROLE_DECODER, 2, many, 1);
    uint16_t dead = dead_port(fx);
    llmlink_status_t st;
    int64_t t0 = rawpeer_now_ms();
    assert_status(link1(d, 5, dead, 300, &st), LLMLINK_LINK_FAILED);
    int64_t elapsed = rawpeer_now_ms() - t0;
    assert_status(st, LLMLINK_TIMEOUT);
    if (elapsed < 300 || elapsed > 300 + TIMEOUT_SLACK_MS)
        fail_msg("100 retries within timeout 300: took %lld ms", (long long)elapsed);
}

static void *delayed_init_main(void *arg)
{
    delayed_init_t *t = arg;
    rawpeer_sleep_ms((int)(t->start_at - rawpeer_now_ms()));
    t->status = llmlink_init(t->e, t->opts, t->n);
    t->ready_at = rawpeer_now_ms();
    return NULL;
}

/* llm.LinkRetryCount: attempts span a server that starts listening late. */
static void test_link_retry_count(void **state)
{
    fx_t *fx = *state;
    uint16_t port = dead_port(fx);
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%u", port);
    llmlink_option_t popt[] = {{"llm.listenIpInfo", listen}};
    static const llmlink_option_t once[] = {{"llm.LinkRetryCount", "1"}};
    static const llmlink_option_t thrice[] = {{"llm.LinkRetryCount", "3"}};
    llmlink_t *d1 = engine(fx, LLMLINK_ROLE_DECODER, 2, once, 1);
    llmlink_t *d3 = engine(fx, LLMLINK_ROLE_DECODER, 3, thrice, 1);
    llmlink_t *p = engine_created(fx, LLMLINK_ROLE_PROMPT, 1);
    llmlink_status_t st;

    /* Count 1: one refused attempt, LINK_FAILED at once. */
    int64_t t0 = rawpeer_now_ms();
    assert_status(link1(d1, 1, port, 3000, &st), LLMLINK_LINK_FAILED);
    assert_status(st, LLMLINK_LINK_FAILED);
    if (rawpeer_now_ms() - t0 > 500)
        fail_msg("one refused attempt took %lld ms", (long long)(rawpeer_now_ms() - t0));

    /* Count 3: the server starts listening ~70 ms after the call. The
     * attempts are at ~0, >= 50 and >= 100 ms (RETRY_BACKOFF_MS 50 in
     * core/link/client.c): the first surely fails, the third finds the
     * listener. */
    delayed_init_t *di = &fx->di;
    t0 = rawpeer_now_ms();
    *di = (delayed_init_t){.e = p, .opts = popt, .n = 1, .start_at = t0 + 70};
    spawn(fx, delayed_init_main, di);
    llmlink_status_t overall = link1(d3, 1, port, 3000, &st);
    int64_t elapsed = rawpeer_now_ms() - t0;
    join_all(fx);
    assert_status(di->status, LLMLINK_SUCCESS);
    if (overall != LLMLINK_SUCCESS)
        fail_msg("retry: %s / %s after %lld ms (server ready after %lld ms): %s",
                 llmlink_status_name(overall), llmlink_status_name(st), (long long)elapsed,
                 (long long)(di->ready_at - t0), llmlink_last_error());
    assert_status(st, LLMLINK_SUCCESS);
    assert_status(llmlink_check_link_status(p, 3), LLMLINK_SUCCESS);

    /* Count 1 against the now-listening server works. */
    link_ok(d1, 1, port);
}

/* llmlink.MaxLinks on the client side. */
static void test_max_links_decoder(void **state)
{
    fx_t *fx = *state;
    uint16_t port[3];
    for (int i = 0; i < 3; i++)
        prompt(fx, 1 + (uint64_t)i, &port[i]);
    static const llmlink_option_t two[] = {{"llmlink.MaxLinks", "2"}};
    llmlink_t *d = engine(fx, LLMLINK_ROLE_DECODER, 9, two, 1);
    llmlink_cluster_info_t c[3];
    llmlink_ip_info_t ip[3];
    llmlink_status_t st[3];
    for (int i = 0; i < 3; i++)
        cl(&c[i], &ip[i], 1 + (uint64_t)i, port[i]);
    assert_status(llmlink_link_clusters(d, c, 3, 5000, st), LLMLINK_LINK_FAILED);
    assert_status(st[0], LLMLINK_SUCCESS);
    assert_status(st[1], LLMLINK_SUCCESS);
    assert_status(st[2], LLMLINK_CLUSTER_NUM_EXCEED_LIMIT);
    assert_int_equal(stats_of(d).outbound_links, 2);
    assert_status(llmlink_check_link_status(d, 3), LLMLINK_NOT_YET_LINK);
    /* Again alone: still over the limit. */
    llmlink_status_t s1;
    assert_status(link1(d, 3, port[2], 5000, &s1), LLMLINK_LINK_FAILED);
    assert_status(s1, LLMLINK_CLUSTER_NUM_EXCEED_LIMIT);
    /* Free one: the third links. */
    assert_status(unlink1(d, 1, 5000, false, &s1), LLMLINK_SUCCESS);
    link_ok(d, 3, port[2]);
    assert_int_equal(stats_of(d).outbound_links, 2);
}

/* llmlink.MaxLinks on the server side: the next client is refused with
 * CLUSTER_NUM_EXCEED_LIMIT (passed through from the server's REJECT). */
static void test_max_links_server(void **state)
{
    fx_t *fx = *state;
    static const llmlink_option_t one[] = {{"llmlink.MaxLinks", "1"}};
    uint16_t port;
    llmlink_t *p = server(fx, LLMLINK_ROLE_PROMPT, 1, &port, one, 1);
    llmlink_t *d1 = decoder(fx, 21), *d2 = decoder(fx, 22);
    llmlink_status_t st;
    link_ok(d1, 1, port);
    assert_status(link1(d2, 1, port, 5000, &st), LLMLINK_LINK_FAILED);
    assert_status(st, LLMLINK_CLUSTER_NUM_EXCEED_LIMIT);
    llmlink_stats_t s = stats_of(p);
    assert_int_equal(s.handshakes_rejected, 1);
    assert_int_equal(s.inbound_links, 1);
    assert_status(llmlink_check_link_status(d2, 1), LLMLINK_NOT_YET_LINK);
    /* The same client again (not a new link): it replaces its old link. */
    assert_status(unlink1(d1, 1, 5000, true, &st), LLMLINK_SUCCESS);
    link_ok(d1, 1, port);
    /* A free slot: the other client links. */
    assert_status(unlink1(d1, 1, 5000, false, &st), LLMLINK_SUCCESS);
    link_ok(d2, 1, port);
}

/* ---- many threads, one engine ------------------------------------------- */

#define N_THREADS 32

typedef struct worker {
    llmlink_t *dec;
    llmlink_t *srv;
    uint64_t dec_id, srv_id;
    uint16_t port;
    int iterations;
    pthread_barrier_t *barrier;
    int done;
    char failure[256]; /* first failure, "" if none */
} worker_t;

#define WORKER_EXPECT(w, got, want, what)                                                   \
    do {                                                                                    \
        llmlink_status_t g_ = (got);                                                        \
        if (g_ != (want)) {                                                                 \
            snprintf((w)->failure, sizeof (w)->failure, "iteration %d: %s: %s, expected %s", \
                     i, what, llmlink_status_name(g_), llmlink_status_name(want));          \
            return NULL;                                                                    \
        }                                                                                   \
    } while (0)

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    pthread_barrier_wait(w->barrier);
    for (int i = 0; i < w->iterations; i++) {
        llmlink_status_t st;
        bool force = i % 4 == 3;
        WORKER_EXPECT(w, link1(w->dec, w->srv_id, w->port, 10000, &st), LLMLINK_SUCCESS, "link");
        WORKER_EXPECT(w, st, LLMLINK_SUCCESS, "link status");
        WORKER_EXPECT(w, llmlink_check_link_status(w->dec, w->srv_id), LLMLINK_SUCCESS,
                      "client check after link");
        WORKER_EXPECT(w, llmlink_check_link_status(w->srv, w->dec_id), LLMLINK_SUCCESS,
                      "server check after link");
        WORKER_EXPECT(w, unlink1(w->dec, w->srv_id, 10000, force, &st), LLMLINK_SUCCESS,
                      force ? "force unlink" : "unlink");
        WORKER_EXPECT(w, st, LLMLINK_SUCCESS, "unlink status");
        WORKER_EXPECT(w, llmlink_check_link_status(w->dec, w->srv_id), LLMLINK_NOT_YET_LINK,
                      "client check after unlink");
        if (!force)
            WORKER_EXPECT(w, llmlink_check_link_status(w->srv, w->dec_id), LLMLINK_NOT_YET_LINK,
                          "server check after unlink");
        w->done = i + 1;
    }
    return NULL;
}

static void test_32_threads_one_decoder(void **state)
{
    fx_t *fx = *state;
    llmlink_t *d = decoder(fx, 7);
    static worker_t w[N_THREADS];
    pthread_barrier_t barrier;
    int iterations = under_sanitizer() ? 12 : 25;
    memset(w, 0, sizeof w);
    for (int i = 0; i < N_THREADS; i++) {
        w[i].dec = d;
        w[i].dec_id = 7;
        w[i].srv_id = 100 + (uint64_t)i;
        w[i].srv = prompt(fx, w[i].srv_id, &w[i].port);
        w[i].iterations = iterations;
        w[i].barrier = &barrier;
    }
    pthread_barrier_init(&barrier, NULL, N_THREADS);
    for (int i = 0; i < N_THREADS; i++)
        spawn(fx, worker_main, &w[i]);
    join_all(fx);
    pthread_barrier_destroy(&barrier);
    for (int i = 0; i < N_THREADS; i++)
        if (w[i].failure[0] || w[i].done != iterations)
            fail_msg("thread %d (server %llu): %s (completed %d of %d)", i,
                     (unsigned long long)w[i].srv_id, w[i].failure, w[i].done, iterations);
    llmlink_stats_t s = stats_of(d);
    assert_int_equal(s.links, 0);
    /* Every server ends with no link (force-unlinked ones notice EOF). */
    for (int i = 0; i < N_THREADS; i++)
        if (wait_check(w[i].srv, 7, LLMLINK_NOT_YET_LINK, 1000) < 0)
            fail_msg("server %llu still holds a link", (unsigned long long)w[i].srv_id);
}

/* ---- log callback -------------------------------------------------------- */

static void test_log_callback_info(void **state)
{
    fx_t *fx = *state;
    uint16_t port;
    pthread_mutex_lock(&logcap.mu);
    logcap.info_linked = logcap.total = 0;
    logcap.first_linked[0] = '\0';
    pthread_mutex_unlock(&logcap.mu);
    llmlink_set_log_callback(log_cb, NULL, LLMLINK_LOG_INFO);
    prompt(fx, 1, &port);
    llmlink_t *d = decoder(fx, 2);
    link_ok(d, 1, port);
    pthread_mutex_lock(&logcap.mu);
    unsigned n = logcap.info_linked;
    char first[512];
    snprintf(first, sizeof first, "%s", logcap.first_linked);
    pthread_mutex_unlock(&logcap.mu);
    llmlink_set_log_callback(NULL, NULL, LLMLINK_LOG_NONE);
    if (n != 1)
        fail_msg("%u INFO \"linked to cluster\" messages for one link", n);
    /* It names both ends. */
    if (!strstr(first, "cluster 2") || !strstr(first, "cluster 1"))
        fail_msg("the link message does not name both clusters: %s", first);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_link_check_unlink_relink),
        T(test_already_link),
        T(test_statuses_dead_among_good),
        T(test_timeout_200),
        T(test_timeout_1000),
        T(test_parallel_links),
        T(test_processing_link),
        T(test_unlink_never_linked),
        T(test_force_unlink),
        T(test_force_unlink_relink_at_once),
        T(test_server_unlinks_client),
        T(test_seed_example_shape),
        T(test_remote_ip_fallback),
        T(test_local_ip_other_family),
        T(test_two_listen_addresses_ipv6),
        T(test_wrong_remote_cluster_id),
        T(test_remote_role_mismatch),
        T(test_mix_cross_link),
        T(test_server_destroyed_client_notices),
        T(test_heartbeats_keep_link),
        T(test_unlink_both_ends_at_once),
        T(test_link_total_time),
        T(test_retries_bounded_by_timeout),
        T(test_link_retry_count),
        T(test_max_links_decoder),
        T(test_max_links_server),
        T(test_32_threads_one_decoder),
        T(test_log_callback_info),
    };
#undef T
    return cmocka_run_group_tests_name("links between engines in one process", tests, NULL, NULL);
}
