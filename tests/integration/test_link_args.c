/*
 * test_link_args.c - argument checking and engine lifecycle at the ABI.
 *
 * The link contract says a bad argument is refused with PARAM_INVALID (or
 * CLUSTER_NUM_EXCEED_LIMIT for more than 16 clusters) BEFORE any network
 * traffic, and that llmlink_last_error() names the argument. To prove "no
 * traffic", each bad call also carries a valid cluster that points at a real
 * PROMPT engine, which must never accept a connection: its
 * handshakes_accepted counter stays 0 (and a final good link shows the
 * counter does count).
 *
 * Also: calls before init / after finalize, init twice, bad options (a
 * failed init loses nothing), listen conflicts, create/get_stats/
 * get_listen_port argument checks, unlink argument checks (an existing link
 * survives every refused unlink), and the per-thread last error.
 *
 * Single process, loopback only, ports from 127.0.0.1:0.
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

#define PROMPT_ID 1u
#define DECODER_ID 2u
#define MAXC (LLMLINK_MAX_CLUSTERS_PER_CALL + 1) /* room for 17 clusters */
#define SENTINEL 0xA5A5A5A5u

typedef struct fx {
    llmlink_t *prompt; /* a real server: must never see a connection */
    uint16_t port;
    llmlink_t *dec;
    llmlink_t *extra[8]; /* engines a test creates; destroyed in teardown */
    size_t nextra;
    llmlink_ip_info_t ips[MAXC][LLMLINK_MAX_IP_INFOS + 1];
    llmlink_ip_info_t local[MAXC][LLMLINK_MAX_IP_INFOS + 1];
    llmlink_cluster_info_t c[MAXC];
    llmlink_status_t st[MAXC];
} fx_t;

/* ---- helpers ---------------------------------------------------------- */

static llmlink_t *new_engine(fx_t *fx, llmlink_role_t role, uint64_t id)
{
    llmlink_t *e = NULL;
    assert_true(fx->nextra < sizeof fx->extra / sizeof fx->extra[0]);
    assert_int_equal(llmlink_create(&e, role, id), LLMLINK_SUCCESS);
    assert_non_null(e);
    fx->extra[fx->nextra++] = e;
    return e;
}

static const llmlink_option_t listen_any[] = {{"llm.listenIpInfo", "127.0.0.1:0"}};

/* clusters[i]: remote_cluster_id id, PROMPT, one remote ip info: the
 * fixture's real PROMPT engine. */
static void good_cluster(fx_t *fx, size_t i, uint64_t id)
{
    fx->ips[i][0].ip = "127.0.0.1";
    fx->ips[i][0].port = fx->port;
    memset(&fx->c[i], 0, sizeof fx->c[i]);
    fx->c[i].remote_cluster_id = id;
    fx->c[i].remote_role = LLMLINK_ROLE_PROMPT;
    fx->c[i].remote_ip_infos = fx->ips[i];
    fx->c[i].num_remote_ip_infos = 1;
}

/* Two good clusters (ids 100, 101): the tests then break clusters[1]. */
static void two_good(fx_t *fx)
{
    good_cluster(fx, 0, 100);
    good_cluster(fx, 1, 101);
}

static void reset_statuses(fx_t *fx)
{
    for (size_t i = 0; i < MAXC; i++)
        fx->st[i] = SENTINEL;
    llmlink_clear_error();
}

/* The real PROMPT engine never saw a connection. */
static void assert_no_traffic(fx_t *fx, const char *what)
{
    llmlink_stats_t s = stats_of(fx->prompt);
    if (s.handshakes_accepted != 0 || s.handshakes_in_progress != 0 || s.links != 0)
        fail_msg("%s: the PROMPT engine saw traffic (accepted %llu, in progress %u, links %u)",
                 what, (unsigned long long)s.handshakes_accepted, s.handshakes_in_progress,
                 s.links);
}

/* A refused call: exact status, every one of the n per-cluster statuses
 * set to it (n = 0: the array must be untouched), last_error naming the
 * argument (needle), and no traffic. */
static void check_refused(fx_t *fx, const char *what, llmlink_status_t got, llmlink_status_t want,
                          size_t n, const char *needle)
{
    const char *msg = llmlink_last_error();
    if (got != want)
        fail_msg("%s: returned %s (0x%08x), expected %s; last_error: %s", what,
                 llmlink_status_name(got), got, llmlink_status_name(want), msg);
    for (size_t i = 0; i < MAXC; i++) {
        llmlink_status_t exp = i < n ? want : SENTINEL;
        if (fx->st[i] != exp)
            fail_msg("%s: cluster_statuses[%zu] is 0x%08x (%s), expected 0x%08x", what, i,
                     fx->st[i], llmlink_status_name(fx->st[i]), exp);
    }
    if (llmlink_last_error_status() != want)
        fail_msg("%s: llmlink_last_error_status() is %s", what,
                 llmlink_status_name(llmlink_last_error_status()));
    if (!strstr(msg, needle))
        fail_msg("%s: last_error \"%s\" does not name \"%s\"", what, msg, needle);
    assert_no_traffic(fx, what);
}

/* A connection the engine might have started asynchronously would reach
 * the PROMPT engine within a few ms on loopback: wait a little, then look. */
static void settle_no_traffic(fx_t *fx)
{
    rawpeer_sleep_ms(50);
    assert_no_traffic(fx, "after settling");
}

static void link_refused(fx_t *fx, const char *what, llmlink_t *dd, const llmlink_cluster_info_t *c,
                         size_t n, int32_t timeout, llmlink_status_t want, size_t n_statuses,
                         const char *needle)
{
    reset_statuses(fx);
    llmlink_status_t got = llmlink_link_clusters(dd, c, n, timeout, fx->st);
    check_refused(fx, what, got, want, n_statuses, needle);
}

static void unlink_refused(fx_t *fx, const char *what, llmlink_t *dd,
                           const llmlink_cluster_info_t *c, size_t n, int32_t timeout,
                           llmlink_status_t want, size_t n_statuses, const char *needle)
{
    reset_statuses(fx);
    llmlink_status_t got = llmlink_unlink_clusters(dd, c, n, timeout, false, fx->st);
    check_refused(fx, what, got, want, n_statuses, needle);
}

static void assert_contains(const char *hay, const char *needle)
{
    if (!hay || !strstr(hay, needle))
        fail_msg("\"%s\" does not contain \"%s\"", hay ? hay : "(null)", needle);
}

/* ---- fixture ---------------------------------------------------------- */

static int setup(void **state)
{
    fx_t *fx = test_calloc(1, sizeof *fx);
    assert_non_null(fx);
    *state = fx;
    assert_int_equal(llmlink_create(&fx->prompt, LLMLINK_ROLE_PROMPT, PROMPT_ID), LLMLINK_SUCCESS);
    assert_int_equal(llmlink_init(fx->prompt, listen_any, 1), LLMLINK_SUCCESS);
    assert_int_equal(llmlink_get_listen_port(fx->prompt, 0, &fx->port), LLMLINK_SUCCESS);
    assert_true(fx->port != 0);
    assert_int_equal(llmlink_create(&fx->dec, LLMLINK_ROLE_DECODER, DECODER_ID), LLMLINK_SUCCESS);
    assert_int_equal(llmlink_init(fx->dec, NULL, 0), LLMLINK_SUCCESS);
    reset_statuses(fx);
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    if (!fx)
        return 0;
    for (size_t i = 0; i < fx->nextra; i++)
        llmlink_destroy(fx->extra[i]);
    llmlink_destroy(fx->dec);
    llmlink_destroy(fx->prompt);
    test_free(fx);
    return 0;
}

/* ---- link_clusters: bad arguments ------------------------------------- */

static void test_link_null_dd_clusters_count(void **state)
{
    fx_t *fx = *state;
    two_good(fx);
    link_refused(fx, "dd NULL", NULL, fx->c, 2, 1000, LLMLINK_PARAM_INVALID, 2, "dd");
    /* clusters NULL: num_clusters cannot size the statuses: untouched. */
    link_refused(fx, "clusters NULL", fx->dec, NULL, 2, 1000, LLMLINK_PARAM_INVALID, 0,
                 "clusters is NULL");
    link_refused(fx, "clusters NULL, 0", fx->dec, NULL, 0, 1000, LLMLINK_PARAM_INVALID, 0,
                 "clusters");
    link_refused(fx, "num_clusters 0", fx->dec, fx->c, 0, 1000, LLMLINK_PARAM_INVALID, 0,
                 "num_clusters");
    /* statuses NULL is allowed with a bad argument too. */
    llmlink_clear_error();
    assert_int_equal(llmlink_link_clusters(fx->dec, fx->c, 0, 1000, NULL), LLMLINK_PARAM_INVALID);
    assert_contains(llmlink_last_error(), "num_clusters");
    assert_no_traffic(fx, "num_clusters 0, statuses NULL");
    settle_no_traffic(fx);
}

static void test_link_bad_timeout(void **state)
{
    fx_t *fx = *state;
    two_good(fx);
    link_refused(fx, "timeout 0", fx->dec, fx->c, 2, 0, LLMLINK_PARAM_INVALID, 2, "timeout_ms");
    link_refused(fx, "timeout -5", fx->dec, fx->c, 2, -5, LLMLINK_PARAM_INVALID, 2, "timeout_ms");
    link_refused(fx, "timeout INT32_MIN", fx->dec, fx->c, 2, INT32_MIN, LLMLINK_PARAM_INVALID, 2,
                 "timeout_ms");
    settle_no_traffic(fx);
}

static void test_link_17_clusters(void **state)
{
    fx_t *fx = *state;
    for (size_t i = 0; i < LLMLINK_MAX_CLUSTERS_PER_CALL + 1; i++)
        good_cluster(fx, i, 100 + i);
    link_refused(fx, "17 clusters", fx->dec, fx->c, LLMLINK_MAX_CLUSTERS_PER_CALL + 1, 1000,
                 LLMLINK_CLUSTER_NUM_EXCEED_LIMIT, LLMLINK_MAX_CLUSTERS_PER_CALL + 1,
                 "num_clusters");
    settle_no_traffic(fx);
}

static void test_link_duplicate_ids(void **state)
{
    fx_t *fx = *state;
    two_good(fx);
    fx->c[1].remote_cluster_id = fx->c[0].remote_cluster_id;
    link_refused(fx, "duplicate ids", fx->dec, fx->c, 2, 1000, LLMLINK_PARAM_INVALID, 2, "100");
    assert_contains(llmlink_last_error(), "clusters[1]");
    /* Not adjacent: 0 and 2 of three. */
    good_cluster(fx, 0, 7);
    good_cluster(fx, 1, 8);
    good_cluster(fx, 2, 7);
    link_refused(fx, "duplicate ids 0 and 2", fx->dec, fx->c, 3, 1000, LLMLINK_PARAM_INVALID, 3,
                 "clusters[2]");
    settle_no_traffic(fx);
}

static void test_link_bad_remote_ip(void **state)
{
    fx_t *fx = *state;
    static const char *const bad[] = {"1.2.3", "localhost", "", "127.0.0.1:80", "256.1.1.1",
                                      " 127.0.0.1", "::1::2"};
    two_good(fx);
    fx->ips[1][0].ip = NULL;
    link_refused(fx, "remote ip NULL", fx->dec, fx->c, 2, 1000, LLMLINK_PARAM_INVALID, 2,
                 "clusters[1].remote_ip_infos[0].ip");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "remote ip \"%s\"", bad[i]);
        two_good(fx);
        fx->ips[1][0].ip = bad[i];
        link_refused(fx, what, fx->dec, fx->c, 2, 1000, LLMLINK_PARAM_INVALID, 2,
                     "clusters[1].remote_ip_infos[0].ip");
    }
    /* The second remote ip info of a cluster is checked too. */
    two_good(fx);
    fx->ips[1][1].ip = "1.2.3";
    fx->ips[1][1].port = fx->port;
    fx->c[1].num_remote_ip_infos = 2;
    link_refused(fx, "second remote ip bad", fx->dec, fx->c, 2, 1000, LLMLINK_PARAM_INVALID, 2,
                 "clusters[1].remote_ip_infos[1].ip");
    settle_no_traffic(fx);
}

static void test_link_remote_port_zero(void **state)
{
    fx_t *fx = *state;
    two_good(fx);
    fx->ips[1][0].port = 0;
    link_refused(fx, "remote port 0", fx->dec, fx->c, 2, 1000, LLMLINK_PARAM_INVALID, 2,
                 "clusters[1].remote_ip_infos[0].port");
    settle_no_traffic(fx);
}

static void test_link_remote_ip_count(void **state)
{
    fx_t *fx = *state;
    two_good(fx);
    fx->c[1].remote_ip_infos = NULL;
    fx->c[1].num_remote_ip_infos = 0;
    link_refused(fx, "no remote ip infos (NULL, 0)", fx->dec, fx->c, 2, 1000,
                 LLMLINK_PARAM_INVALID, 2, "clusters[1]");
    assert_contains(llmlink_last_error(), "remote ip info");

    two_good(fx);
    fx->c[1].num_remote_ip_infos = 0;
    link_refused(fx, "no remote ip infos (array, 0)", fx->dec, fx->c, 2, 1000,
                 LLMLINK_PARAM_INVALID, 2, "clusters[1]");

    two_good(fx);
    fx->c[1].remote_ip_infos = NULL;
    fx->c[1].num_remote_ip_infos = 1;
    link_refused(fx, "remote ip infos NULL, 1", fx->dec, fx->c, 2, 1000, LLMLINK_PARAM_INVALID,
                 2, "clusters[1].remote_ip_infos");

    two_good(fx);
    for (size_t i = 0; i < LLMLINK_MAX_IP_INFOS + 1; i++) {
        fx->ips[1][i].ip = "127.0.0.1";
        fx->ips[1][i].port = fx->port;
    }
    fx->c[1].num_remote_ip_infos = LLMLINK_MAX_IP_INFOS + 1;
    link_refused(fx, "17 remote ip infos", fx->dec, fx->c, 2, 1000, LLMLINK_PARAM_INVALID, 2,
                 "num_remote_ip_infos");
    settle_no_traffic(fx);
}

static void test_link_bad_local_ip(void **state)
{
    fx_t *fx = *state;
    static const char *const bad[] = {"127.0.0", "localhost", "", "eth0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "local ip \"%s\"", bad[i]);
        two_good(fx);
        fx->local[1][0].ip = bad[i];
        fx->local[1][0].port = 0;
        fx->c[1].local_ip_infos = fx->local[1];
        fx->c[1].num_local_ip_infos = 1;
        link_refused(fx, what, fx->dec, fx->c, 2, 1000, LLMLINK_PARAM_INVALID, 2,
                     "clusters[1].local_ip_infos[0].ip");
    }
    two_good(fx);
    fx->local[1][0].ip = NULL;
    fx->c[1].local_ip_infos = fx->local[1];
    fx->c[1].num_local_ip_infos = 1;
    link_refused(fx, "local ip NULL", fx->dec, fx->c, 2, 1000, LLMLINK_PARAM_INVALID, 2,
                 "clusters[1].local_ip_infos[0].ip");

    two_good(fx);
    fx->c[1].local_ip_infos = NULL;
    fx->c[1].num_local_ip_infos = 2;
    link_refused(fx, "local ip infos NULL, 2", fx->dec, fx->c, 2, 1000, LLMLINK_PARAM_INVALID, 2,
                 "clusters[1].local_ip_infos");

    two_good(fx);
    for (size_t i = 0; i < LLMLINK_MAX_IP_INFOS + 1; i++) {
        fx->local[1][i].ip = "127.0.0.1";
        fx->local[1][i].port = 0;
    }
    fx->c[1].local_ip_infos = fx->local[1];
    fx->c[1].num_local_ip_infos = LLMLINK_MAX_IP_INFOS + 1;
    link_refused(fx, "17 local ip infos", fx->dec, fx->c, 2, 1000, LLMLINK_PARAM_INVALID, 2,
                 "num_local_ip_infos");
    settle_no_traffic(fx);
}

static void test_link_bad_remote_role(void **state)
{
    fx_t *fx = *state;
    static const int bad[] = {LLMLINK_ROLE_DECODER, 4, 99, -1};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "remote_role %d", bad[i]);
        two_good(fx);
        fx->c[1].remote_role = (llmlink_role_t)bad[i];
        link_refused(fx, what, fx->dec, fx->c, 2, 1000, LLMLINK_PARAM_INVALID, 2,
                     "clusters[1].remote_role");
    }
    settle_no_traffic(fx);
}

static void test_link_from_prompt_refused(void **state)
{
    fx_t *fx = *state;
    llmlink_t *p2 = new_engine(fx, LLMLINK_ROLE_PROMPT, 50);
    assert_int_equal(llmlink_init(p2, listen_any, 1), LLMLINK_SUCCESS);
    two_good(fx);
    link_refused(fx, "PROMPT links", p2, fx->c, 2, 1000, LLMLINK_ROLE_NOT_ALLOWED, 2, "PROMPT");
    settle_no_traffic(fx);
}

/* The final proof that the counter used above does count: a good link. */
static void test_good_link_is_counted(void **state)
{
    fx_t *fx = *state;
    good_cluster(fx, 0, PROMPT_ID);
    reset_statuses(fx);
    assert_int_equal(llmlink_link_clusters(fx->dec, fx->c, 1, 5000, fx->st), LLMLINK_SUCCESS);
    assert_int_equal(fx->st[0], LLMLINK_SUCCESS);
    assert_int_equal(fx->st[1], SENTINEL);
    llmlink_stats_t s = stats_of(fx->prompt);
    assert_int_equal(s.handshakes_accepted, 1);
    assert_int_equal(s.handshakes_completed, 1);
    assert_int_equal(s.inbound_links, 1);
}

/* ---- lifecycle -------------------------------------------------------- */

static void test_calls_before_init(void **state)
{
    fx_t *fx = *state;
    llmlink_t *d = new_engine(fx, LLMLINK_ROLE_DECODER, 60);
    llmlink_t *p = new_engine(fx, LLMLINK_ROLE_PROMPT, 61);
    two_good(fx);
    link_refused(fx, "link before init", d, fx->c, 2, 1000, LLMLINK_NOT_INITIALIZED, 2,
                 "llmlink_init");
    unlink_refused(fx, "unlink before init", d, fx->c, 2, 1000, LLMLINK_NOT_INITIALIZED, 2,
                   "llmlink_init");
    llmlink_clear_error();
    assert_int_equal(llmlink_check_link_status(d, 100), LLMLINK_NOT_INITIALIZED);
    assert_contains(llmlink_last_error(), "not initialized");
    uint16_t port = 7;
    assert_int_equal(llmlink_get_listen_port(p, 0, &port), LLMLINK_NOT_INITIALIZED);
    assert_int_equal(port, 7);
    /* Bad arguments are still reported as bad arguments. */
    link_refused(fx, "link before init, timeout 0", d, fx->c, 2, 0, LLMLINK_PARAM_INVALID, 2,
                 "timeout_ms");
    /* Accessors work at any time. */
    llmlink_role_t role = 0;
    uint64_t id = 0;
    assert_int_equal(llmlink_get_role(d, &role), LLMLINK_SUCCESS);
    assert_int_equal(role, LLMLINK_ROLE_DECODER);
    assert_int_equal(llmlink_get_cluster_id(d, &id), LLMLINK_SUCCESS);
    assert_int_equal(id, 60);
    /* Finalizing an engine that never ran is fine; init then refused. */
    llmlink_finalize(p);
    assert_int_equal(llmlink_init(p, listen_any, 1), LLMLINK_ENGINE_FINALIZED);
}

static void test_calls_after_finalize(void **state)
{
    fx_t *fx = *state;
    llmlink_t *d = new_engine(fx, LLMLINK_ROLE_DECODER, 70);
    llmlink_t *p = new_engine(fx, LLMLINK_ROLE_PROMPT, 71);
    assert_int_equal(llmlink_init(d, NULL, 0), LLMLINK_SUCCESS);
    assert_int_equal(llmlink_init(p, listen_any, 1), LLMLINK_SUCCESS);
    llmlink_finalize(d);
    llmlink_finalize(p);
    llmlink_finalize(d); /* twice is fine */
    llmlink_finalize(NULL);
    llmlink_destroy(NULL);
    two_good(fx);
    link_refused(fx, "link after finalize", d, fx->c, 2, 1000, LLMLINK_ENGINE_FINALIZED, 2,
                 "finalized");
    unlink_refused(fx, "unlink after finalize", d, fx->c, 2, 1000, LLMLINK_ENGINE_FINALIZED, 2,
                   "finalized");
    llmlink_clear_error();
    assert_int_equal(llmlink_check_link_status(d, 100), LLMLINK_ENGINE_FINALIZED);
    assert_contains(llmlink_last_error(), "finalized");
    uint16_t port = 0;
    assert_int_equal(llmlink_get_listen_port(p, 0, &port), LLMLINK_ENGINE_FINALIZED);
    assert_int_equal(llmlink_init(d, NULL, 0), LLMLINK_ENGINE_FINALIZED);
    assert_int_equal(llmlink_init(p, listen_any, 1), LLMLINK_ENGINE_FINALIZED);
}

static void test_init_twice(void **state)
{
    fx_t *fx = *state;
    uint16_t before = 0, after = 0;
    assert_int_equal(llmlink_get_listen_port(fx->prompt, 0, &before), LLMLINK_SUCCESS);
    llmlink_clear_error();
    assert_int_equal(llmlink_init(fx->prompt, listen_any, 1), LLMLINK_ALREADY_INITIALIZED);
    assert_contains(llmlink_last_error(), "already initialized");
    assert_int_equal(llmlink_init(fx->dec, NULL, 0), LLMLINK_ALREADY_INITIALIZED);
    /* Bad options on a running engine: the options are what is wrong. */
    static const llmlink_option_t bad[] = {{"llm.NoSuchKey", "1"}};
    assert_int_equal(llmlink_init(fx->prompt, bad, 1), LLMLINK_PARAM_INVALID);
    assert_int_equal(llmlink_get_listen_port(fx->prompt, 0, &after), LLMLINK_SUCCESS);
    assert_int_equal(before, after);
    /* The engine still works. */
    good_cluster(fx, 0, PROMPT_ID);
    assert_int_equal(llmlink_link_clusters(fx->dec, fx->c, 1, 5000, NULL), LLMLINK_SUCCESS);
}

static void test_init_bad_options_then_good(void **state)
{
    fx_t *fx = *state;
    static const struct {
        llmlink_option_t opt;
        const char *needle;
    } bad[] = {
        {{"llm.NoSuchKey", "1"}, "llm.NoSuchKey"},
        {{"llmlink.maxlinks", "5"}, "llmlink.maxlinks"}, /* keys are case-sensitive */
        {{"llmlink.MaxLinks", "0"}, "llmlink.MaxLinks"},
        {{"llmlink.MaxLinks", "65537"}, "llmlink.MaxLinks"},
        {{"llm.LinkRetryCount", "0"}, "llm.LinkRetryCount"},
        {{"llm.LinkRetryCount", "101"}, "llm.LinkRetryCount"},
        {{"llmlink.HandshakeTimeoutMs", "9"}, "llmlink.HandshakeTimeoutMs"},
        {{"llmlink.LivenessIntervalMs", "29"}, "llmlink.LivenessIntervalMs"},
        {{"llmlink.LivenessIntervalMs", "600001"}, "llmlink.LivenessIntervalMs"},
        {{"llm.SyncKvCacheWaitTime", "-1"}, "llm.SyncKvCacheWaitTime"},
        {{"llm.RdmaServiceLevel", "8"}, "llm.RdmaServiceLevel"},
        {{"llm.listenIpInfo", "localhost:0"}, "llm.listenIpInfo"},
        {{"llm.listenIpInfo", "127.0.0.1:65536"}, "llm.listenIpInfo"},
        {{"llmlink.Transport", "udp"}, "llmlink.Transport"},
        {{"llm.EnableSwitchRole", "2"}, "llm.EnableSwitchRole"},
    };
    llmlink_t *p = new_engine(fx, LLMLINK_ROLE_PROMPT, 80);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        /* The bad option after a good one, so a partial apply would show. */
        llmlink_option_t opts[2] = {{"llm.listenIpInfo", "127.0.0.1:0"}, bad[i].opt};
        llmlink_clear_error();
        llmlink_status_t st = llmlink_init(p, opts, 2);
        if (st != LLMLINK_PARAM_INVALID)
            fail_msg("option %s=%s: init returned %s", bad[i].opt.key, bad[i].opt.value,
                     llmlink_status_name(st));
        assert_int_equal(llmlink_last_error_status(), LLMLINK_PARAM_INVALID);
        assert_contains(llmlink_last_error(), bad[i].needle);
        /* Nothing started: the engine is still uninitialized. */
        uint16_t port;
        assert_int_equal(llmlink_get_listen_port(p, 0, &port), LLMLINK_NOT_INITIALIZED);
    }
    /* NULL key / value, NULL options with a count. */
    llmlink_option_t nullkey[] = {{NULL, "1"}};
    llmlink_option_t nullval[] = {{"llmlink.MaxLinks", NULL}};
    assert_int_equal(llmlink_init(p, nullkey, 1), LLMLINK_PARAM_INVALID);
    assert_contains(llmlink_last_error(), "key");
    assert_int_equal(llmlink_init(p, nullval, 1), LLMLINK_PARAM_INVALID);
    assert_contains(llmlink_last_error(), "llmlink.MaxLinks");
    assert_int_equal(llmlink_init(p, NULL, 3), LLMLINK_PARAM_INVALID);
    assert_contains(llmlink_last_error(), "options");

    /* A failed init loses nothing: the same engine now inits and serves. */
    static const llmlink_option_t good[] = {{"llm.listenIpInfo", "127.0.0.1:0"},
                                            {"llmlink.MaxLinks", "4"},
                                            {"llm.LinkRetryCount", "2"}};
    assert_int_equal(llmlink_init(p, good, 3), LLMLINK_SUCCESS);
    uint16_t port = 0;
    assert_int_equal(llmlink_get_listen_port(p, 0, &port), LLMLINK_SUCCESS);
    assert_true(port != 0);
    llmlink_ip_info_t ip = {"127.0.0.1", port};
    llmlink_cluster_info_t c = {80, LLMLINK_ROLE_PROMPT, NULL, 0, &ip, 1};
    llmlink_status_t st1 = SENTINEL;
    assert_int_equal(llmlink_link_clusters(fx->dec, &c, 1, 5000, &st1), LLMLINK_SUCCESS);
    assert_int_equal(st1, LLMLINK_SUCCESS);
    assert_int_equal(llmlink_check_link_status(p, DECODER_ID), LLMLINK_SUCCESS);
}

static void test_prompt_needs_listen(void **state)
{
    fx_t *fx = *state;
    llmlink_t *p = new_engine(fx, LLMLINK_ROLE_PROMPT, 90);
    llmlink_clear_error();
    assert_int_equal(llmlink_init(p, NULL, 0), LLMLINK_PARAM_INVALID);
    assert_contains(llmlink_last_error(), "llm.listenIpInfo");
    static const llmlink_option_t other[] = {{"llmlink.MaxLinks", "8"}};
    assert_int_equal(llmlink_init(p, other, 1), LLMLINK_PARAM_INVALID);
    assert_contains(llmlink_last_error(), "llm.listenIpInfo");
    /* Then it inits fine, and the alias key works too. */
    static const llmlink_option_t alias[] = {{"llm.ListenIpInfo", "127.0.0.1:0"}};
    assert_int_equal(llmlink_init(p, alias, 1), LLMLINK_SUCCESS);
    uint16_t port = 0;
    assert_int_equal(llmlink_get_listen_port(p, 0, &port), LLMLINK_SUCCESS);
    assert_true(port != 0);
}

static void test_listen_port_in_use(void **state)
{
    fx_t *fx = *state;
    char addr[64], opt_val[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", fx->port);
    snprintf(opt_val, sizeof opt_val, "%s", addr);
    llmlink_option_t opts[] = {{"llm.listenIpInfo", opt_val}};
    llmlink_t *p = new_engine(fx, LLMLINK_ROLE_PROMPT, 95);
    llmlink_clear_error();
    llmlink_status_t st = llmlink_init(p, opts, 1);
    if (st != LLMLINK_NETWORK_ERROR)
        fail_msg("listen on %s (in use): %s, expected LLMLINK_NETWORK_ERROR; last_error: %s",
                 addr, llmlink_status_name(st), llmlink_last_error());
    assert_contains(llmlink_last_error(), addr);
    /* Two addresses, the second in use: the first is released again. */
    char two[128];
    uint16_t reserved = 0;
    int rfd = rawpeer_reserve_port(&reserved);
    assert_true(rfd >= 0);
    rawpeer_close(rfd); /* free now; the engine binds it first, below */
    snprintf(two, sizeof two, "127.0.0.1:%u;%s", reserved, addr);
    opts[0].value = two;
    assert_int_equal(llmlink_init(p, opts, 1), LLMLINK_NETWORK_ERROR);
    assert_contains(llmlink_last_error(), addr);
    /* The same engine then listens elsewhere, including on `reserved`. */
    snprintf(two, sizeof two, "127.0.0.1:%u;127.0.0.1:0", reserved);
    assert_int_equal(llmlink_init(p, opts, 1), LLMLINK_SUCCESS);
    uint16_t p0 = 0, p1 = 0;
    assert_int_equal(llmlink_get_listen_port(p, 0, &p0), LLMLINK_SUCCESS);
    assert_int_equal(llmlink_get_listen_port(p, 1, &p1), LLMLINK_SUCCESS);
    assert_int_equal(p0, reserved);
    assert_true(p1 != 0 && p1 != reserved);
    /* The original server is untouched. */
    good_cluster(fx, 0, PROMPT_ID);
    assert_int_equal(llmlink_link_clusters(fx->dec, fx->c, 1, 5000, NULL), LLMLINK_SUCCESS);
}

static void test_create_bad_args(void **state)
{
    (void)state;
    llmlink_t *e = (llmlink_t *)(uintptr_t)0x1;
    llmlink_clear_error();
    assert_int_equal(llmlink_create(&e, (llmlink_role_t)0, 1), LLMLINK_PARAM_INVALID);
    assert_null(e);
    assert_contains(llmlink_last_error(), "role");
    e = (llmlink_t *)(uintptr_t)0x1;
    assert_int_equal(llmlink_create(&e, (llmlink_role_t)4, 1), LLMLINK_PARAM_INVALID);
    assert_null(e);
    assert_contains(llmlink_last_error(), "role 4");
    assert_int_equal(llmlink_create(NULL, LLMLINK_ROLE_DECODER, 1), LLMLINK_PARAM_INVALID);
    assert_contains(llmlink_last_error(), "out");
    assert_int_equal(llmlink_init(NULL, NULL, 0), LLMLINK_PARAM_INVALID);
    assert_contains(llmlink_last_error(), "dd");
    assert_int_equal(llmlink_check_link_status(NULL, 1), LLMLINK_PARAM_INVALID);
    assert_contains(llmlink_last_error(), "dd");
}

static void test_get_stats_and_port_args(void **state)
{
    fx_t *fx = *state;
    llmlink_stats_t s;
    memset(&s, 0, sizeof s);
    s.version = 0;
    llmlink_clear_error();
    assert_int_equal(llmlink_get_stats(fx->prompt, &s), LLMLINK_PARAM_INVALID);
    assert_contains(llmlink_last_error(), "version");
    s.version = LLMLINK_STATS_VERSION + 1;
    assert_int_equal(llmlink_get_stats(fx->prompt, &s), LLMLINK_PARAM_INVALID);
    assert_contains(llmlink_last_error(), "version");
    assert_int_equal(llmlink_get_stats(fx->prompt, NULL), LLMLINK_PARAM_INVALID);
    assert_contains(llmlink_last_error(), "stats");
    s.version = LLMLINK_STATS_VERSION;
    assert_int_equal(llmlink_get_stats(NULL, &s), LLMLINK_PARAM_INVALID);
    assert_contains(llmlink_last_error(), "dd");

    uint16_t port = 1234;
    assert_int_equal(llmlink_get_listen_port(fx->prompt, 1, &port), LLMLINK_PARAM_INVALID);
    assert_contains(llmlink_last_error(), "index 1");
    assert_int_equal(port, 1234);
    assert_int_equal(llmlink_get_listen_port(fx->prompt, SIZE_MAX, &port), LLMLINK_PARAM_INVALID);
    assert_contains(llmlink_last_error(), "index");
    /* A DECODER listens nowhere. */
    assert_int_equal(llmlink_get_listen_port(fx->dec, 0, &port), LLMLINK_PARAM_INVALID);
    assert_contains(llmlink_last_error(), "index 0");
    assert_int_equal(llmlink_get_listen_port(fx->prompt, 0, NULL), LLMLINK_PARAM_INVALID);
    assert_contains(llmlink_last_error(), "port");
    assert_int_equal(llmlink_get_listen_port(NULL, 0, &port), LLMLINK_PARAM_INVALID);
    assert_contains(llmlink_last_error(), "dd");
    assert_int_equal(port, 1234);
}

/* Every refused unlink leaves an existing link alone (both ends). */
static void test_unlink_bad_args(void **state)
{
    fx_t *fx = *state;
    good_cluster(fx, 0, PROMPT_ID);
    assert_int_equal(llmlink_link_clusters(fx->dec, fx->c, 1, 5000, NULL), LLMLINK_SUCCESS);
    llmlink_stats_t before = stats_of(fx->prompt);
    assert_int_equal(before.inbound_links, 1);

    llmlink_cluster_info_t c[MAXC];
    llmlink_status_t st[MAXC];
    memset(c, 0, sizeof c);
    for (size_t i = 0; i < MAXC; i++)
        c[i].remote_cluster_id = PROMPT_ID + 1000 * i; /* c[0] is the live link */

    struct {
        const char *what;
        llmlink_t *dd;
        const llmlink_cluster_info_t *c;
        size_t n;
        int32_t timeout;
        llmlink_status_t want;
        size_t n_statuses;
        const char *needle;
    } cases[] = {
        {"unlink dd NULL", NULL, c, 2, 1000, LLMLINK_PARAM_INVALID, 2, "dd"},
        {"unlink clusters NULL", fx->dec, NULL, 2, 1000, LLMLINK_PARAM_INVALID, 0, "clusters"},
        {"unlink num_clusters 0", fx->dec, c, 0, 1000, LLMLINK_PARAM_INVALID, 0, "num_clusters"},
        {"unlink timeout 0", fx->dec, c, 2, 0, LLMLINK_PARAM_INVALID, 2, "timeout_ms"},
        {"unlink timeout -5", fx->dec, c, 2, -5, LLMLINK_PARAM_INVALID, 2, "timeout_ms"},
        {"unlink 17 clusters", fx->dec, c, MAXC, 1000, LLMLINK_CLUSTER_NUM_EXCEED_LIMIT, MAXC,
         "num_clusters"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (size_t k = 0; k < MAXC; k++)
            fx->st[k] = SENTINEL;
        llmlink_clear_error();
        llmlink_status_t got = llmlink_unlink_clusters(cases[i].dd, cases[i].c, cases[i].n,
                                                       cases[i].timeout, false, fx->st);
        if (got != cases[i].want)
            fail_msg("%s: %s, expected %s", cases[i].what, llmlink_status_name(got),
                     llmlink_status_name(cases[i].want));
        for (size_t k = 0; k < MAXC; k++) {
            llmlink_status_t exp = k < cases[i].n_statuses ? cases[i].want : SENTINEL;
            if (fx->st[k] != exp)
                fail_msg("%s: statuses[%zu] is 0x%08x", cases[i].what, k, fx->st[k]);
        }
        assert_contains(llmlink_last_error(), cases[i].needle);
    }

    /* Duplicate ids, bad ip infos (only checked when given). */
    llmlink_ip_info_t bad_ip = {"1.2.3", 1};
    llmlink_ip_info_t ok_ip = {"127.0.0.1", 0};
    memset(st, 0, sizeof st);
    c[1].remote_cluster_id = PROMPT_ID;
    assert_int_equal(llmlink_unlink_clusters(fx->dec, c, 2, 1000, false, st), LLMLINK_PARAM_INVALID);
    assert_int_equal(st[0], LLMLINK_PARAM_INVALID);
    assert_int_equal(st[1], LLMLINK_PARAM_INVALID);
    assert_contains(llmlink_last_error(), "clusters[1]");
    c[1].remote_cluster_id = 5;
    c[1].remote_ip_infos = &bad_ip;
    c[1].num_remote_ip_infos = 1;
    assert_int_equal(llmlink_unlink_clusters(fx->dec, c, 2, 1000, true, st), LLMLINK_PARAM_INVALID);
    assert_contains(llmlink_last_error(), "clusters[1].remote_ip_infos[0].ip");
    c[1].remote_ip_infos = &ok_ip; /* port 0 is fine for unlink: only the id counts */
    c[1].local_ip_infos = &bad_ip;
    c[1].num_local_ip_infos = 1;
    assert_int_equal(llmlink_unlink_clusters(fx->dec, c, 2, 1000, true, st), LLMLINK_PARAM_INVALID);
    assert_contains(llmlink_last_error(), "clusters[1].local_ip_infos[0].ip");
    c[1].local_ip_infos = NULL;
    c[1].num_local_ip_infos = 0;
    c[1].remote_ip_infos = NULL;
    c[1].num_remote_ip_infos = 3;
    assert_int_equal(llmlink_unlink_clusters(fx->dec, c, 2, 1000, true, st), LLMLINK_PARAM_INVALID);
    assert_contains(llmlink_last_error(), "remote_ip_infos");
    c[1].num_remote_ip_infos = LLMLINK_MAX_IP_INFOS + 1;
    c[1].remote_ip_infos = fx->ips[0];
    assert_int_equal(llmlink_unlink_clusters(fx->dec, c, 2, 1000, true, st), LLMLINK_PARAM_INVALID);
    assert_contains(llmlink_last_error(), "num_remote_ip_infos");

    /* The link survived every refused call, on both ends. */
    assert_int_equal(llmlink_check_link_status(fx->dec, PROMPT_ID), LLMLINK_SUCCESS);
    assert_int_equal(llmlink_check_link_status(fx->prompt, DECODER_ID), LLMLINK_SUCCESS);
    llmlink_stats_t after = stats_of(fx->prompt);
    assert_int_equal(after.inbound_links, 1);
    assert_int_equal(after.links_lost, before.links_lost);
    assert_int_equal(after.handshakes_accepted, before.handshakes_accepted);

    /* And a good unlink after all that. */
    c[0].remote_cluster_id = PROMPT_ID;
    assert_int_equal(llmlink_unlink_clusters(fx->dec, c, 1, 5000, false, st), LLMLINK_SUCCESS);
    assert_int_equal(st[0], LLMLINK_SUCCESS);
    assert_int_equal(llmlink_check_link_status(fx->prompt, DECODER_ID), LLMLINK_NOT_YET_LINK);
}

/* ---- last_error is per thread ----------------------------------------- */

typedef struct err_thread {
    llmlink_t *dec;
    const llmlink_cluster_info_t *c;
    llmlink_status_t call_status;
    llmlink_status_t seen_status;
    char seen[256];
} err_thread_t;

/* Thread A: fails a call, records its own last error. */
static void *thread_a(void *arg)
{
    err_thread_t *t = arg;
    t->call_status = llmlink_link_clusters(t->dec, t->c, 1, -5, NULL);
    t->seen_status = llmlink_last_error_status();
    snprintf(t->seen, sizeof t->seen, "%s", llmlink_last_error());
    return NULL;
}

/* Thread B: makes no failing call; reads its last error. */
static void *thread_b(void *arg)
{
    err_thread_t *t = arg;
    t->seen_status = llmlink_last_error_status();
    snprintf(t->seen, sizeof t->seen, "%s", llmlink_last_error());
    return NULL;
}

static void test_last_error_per_thread(void **state)
{
    fx_t *fx = *state;
    good_cluster(fx, 0, PROMPT_ID);
    /* Main thread: an error of its own. */
    assert_int_equal(llmlink_link_clusters(NULL, fx->c, 1, 1000, NULL), LLMLINK_PARAM_INVALID);
    char mine[256];
    snprintf(mine, sizeof mine, "%s", llmlink_last_error());
    assert_contains(mine, "dd is NULL");

    err_thread_t a = {.dec = fx->dec, .c = fx->c}, b = {.dec = fx->dec, .c = fx->c};
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, thread_a, &a), 0);
    assert_int_equal(pthread_join(ta, NULL), 0);
    assert_int_equal(pthread_create(&tb, NULL, thread_b, &b), 0);
    assert_int_equal(pthread_join(tb, NULL), 0);

    assert_int_equal(a.call_status, LLMLINK_PARAM_INVALID);
    assert_int_equal(a.seen_status, LLMLINK_PARAM_INVALID);
    assert_contains(a.seen, "timeout_ms is -5");
    /* B never failed: it sees nothing of A's (or main's) error. */
    assert_int_equal(b.seen_status, LLMLINK_SUCCESS);
    assert_string_equal(b.seen, "");
    /* Main still sees its own. */
    assert_string_equal(llmlink_last_error(), mine);
    assert_int_equal(llmlink_last_error_status(), LLMLINK_PARAM_INVALID);
    llmlink_clear_error();
    assert_string_equal(llmlink_last_error(), "");
    assert_int_equal(llmlink_last_error_status(), LLMLINK_SUCCESS);
}

static void test_status_names(void **state)
{
    (void)state;
    assert_string_equal(llmlink_status_name(LLMLINK_SUCCESS), "LLM_SUCCESS");
    assert_string_equal(llmlink_status_name(LLMLINK_PARAM_INVALID), "LLM_PARAM_INVALID");
    assert_string_equal(llmlink_status_name(LLMLINK_CLUSTER_NUM_EXCEED_LIMIT),
                        "LLM_CLUSTER_NUM_EXCEED_LIMIT");
    assert_string_equal(llmlink_status_name(0x12345u), "LLM_UNKNOWN_STATUS");
    assert_non_null(llmlink_strerror(0x12345u));
    assert_int_equal(llmlink_version_number(), LLMLINK_VERSION_NUMBER);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_link_null_dd_clusters_count),
        T(test_link_bad_timeout),
        T(test_link_17_clusters),
        T(test_link_duplicate_ids),
        T(test_link_bad_remote_ip),
        T(test_link_remote_port_zero),
        T(test_link_remote_ip_count),
        T(test_link_bad_local_ip),
        T(test_link_bad_remote_role),
        T(test_link_from_prompt_refused),
        T(test_good_link_is_counted),
        T(test_calls_before_init),
        T(test_calls_after_finalize),
        T(test_init_twice),
        T(test_init_bad_options_then_good),
        T(test_prompt_needs_listen),
        T(test_listen_port_in_use),
        T(test_create_bad_args),
        T(test_get_stats_and_port_args),
        T(test_unlink_bad_args),
        T(test_last_error_per_thread),
        T(test_status_names),
    };
#undef T
    return cmocka_run_group_tests_name("link arguments and lifecycle", tests, NULL, NULL);
}
