/*
 * test_metrics_class.c - the pure parts of the operator counters
 * (core/link/metrics.c): which class a transfer's status falls in, which
 * reason a refusal counts under, which histogram bucket a duration lands
 * in (at each bound exactly, one nanosecond past it, past the last), and
 * that recording adds exactly one to each series it touches.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "link/metrics.h"

static void test_result_classes(void **state)
{
    (void)state;
    assert_int_equal(llk_metrics_result_of(LLMLINK_SUCCESS, false), LLMLINK_METRICS_SUCCESS);
    assert_int_equal(llk_metrics_result_of(LLMLINK_CANCELLED, false), LLMLINK_METRICS_CANCELLED);
    assert_int_equal(llk_metrics_result_of(LLMLINK_CANCELLED_LINK_CLOSED, true),
                     LLMLINK_METRICS_CANCELLED);
    assert_int_equal(llk_metrics_result_of(LLMLINK_WAIT_PROCESS_TIMEOUT, true),
                     LLMLINK_METRICS_TIMED_OUT);
    assert_int_equal(llk_metrics_result_of(LLMLINK_NETWORK_ERROR, true), LLMLINK_METRICS_FAILED);
    assert_int_equal(llk_metrics_result_of(LLMLINK_PROTOCOL_ERROR, false), LLMLINK_METRICS_FAILED);
    assert_int_equal(llk_metrics_result_of(LLMLINK_NOT_YET_LINK, false), LLMLINK_METRICS_FAILED);
    /* the owner's answers leave the link: refusals, unless the link broke */
    assert_int_equal(llk_metrics_result_of(LLMLINK_KV_CACHE_NOT_EXIST, false),
                     LLMLINK_METRICS_REFUSED);
    assert_int_equal(llk_metrics_result_of(LLMLINK_PARAM_INVALID, false), LLMLINK_METRICS_REFUSED);
    assert_int_equal(llk_metrics_result_of(LLMLINK_ACCESS_DENIED, false), LLMLINK_METRICS_REFUSED);
    assert_int_equal(llk_metrics_result_of(LLMLINK_FAILED, true), LLMLINK_METRICS_FAILED);
}

static void test_refuse_reasons(void **state)
{
    (void)state;
    assert_int_equal(llk_metrics_refuse_reason(LLMLINK_AUTH_FAILED), LLMLINK_REFUSE_AUTH);
    assert_int_equal(llk_metrics_refuse_reason(LLMLINK_ACCESS_DENIED), LLMLINK_REFUSE_ACCESS);
    assert_int_equal(llk_metrics_refuse_reason(LLMLINK_ROLE_NOT_ALLOWED), LLMLINK_REFUSE_ACCESS);
    assert_int_equal(llk_metrics_refuse_reason(LLMLINK_VERSION_MISMATCH), LLMLINK_REFUSE_VERSION);
    assert_int_equal(llk_metrics_refuse_reason(LLMLINK_CLUSTER_ID_MISMATCH),
                     LLMLINK_REFUSE_CLUSTER_ID);
    assert_int_equal(llk_metrics_refuse_reason(LLMLINK_ALREADY_LINK), LLMLINK_REFUSE_CLUSTER_ID);
    assert_int_equal(llk_metrics_refuse_reason(LLMLINK_CLUSTER_NUM_EXCEED_LIMIT),
                     LLMLINK_REFUSE_LIMITS);
    assert_int_equal(llk_metrics_refuse_reason(LLMLINK_PROTOCOL_ERROR), LLMLINK_REFUSE_PROTOCOL);
    assert_int_equal(llk_metrics_refuse_reason(LLMLINK_LINK_FAILED), LLMLINK_REFUSE_CONNECT);
    assert_int_equal(llk_metrics_refuse_reason(LLMLINK_TIMEOUT), LLMLINK_REFUSE_TIMEOUT);
    assert_int_equal(llk_metrics_refuse_reason(LLMLINK_OUT_OF_MEMORY), LLMLINK_REFUSE_OTHER);

    llk_metrics_t m;
    memset(&m, 0, sizeof m);
    llk_metrics_hs_refused(&m, LLMLINK_LINK_FAILED); /* server: a transport conflict */
    llk_metrics_link_result(&m, LLMLINK_LINK_FAILED); /* client: no connection */
    llk_metrics_link_result(&m, LLMLINK_SUCCESS);
    llk_metrics_link_result(&m, LLMLINK_ALREADY_LINK);
    llmlink_metrics_t s;
    memset(&s, 0, sizeof s);
    llk_metrics_snapshot(&m, &s);
    for (unsigned i = 0; i < LLMLINK_METRICS_MAX_REASONS; i++) {
        assert_int_equal(s.handshakes_refused[i], i == LLMLINK_REFUSE_TRANSPORT);
        assert_int_equal(s.link_failures[i], i == LLMLINK_REFUSE_CONNECT);
    }
}

static void test_buckets(void **state)
{
    (void)state;
    assert_int_equal(llk_metrics_bucket_of(0), 0);
    for (uint32_t i = 0; i < LLMLINK_METRICS_BUCKETS; i++) {
        uint64_t bound = 8000ull << i;
        assert_int_equal(llk_metrics_bucket_of(bound), i);     /* le: at the bound */
        assert_int_equal(llk_metrics_bucket_of(bound + 1), i + 1);
        assert_true(llk_metrics_bound_seconds(i) * 1e9 > (double)bound - 0.5 &&
                    llk_metrics_bound_seconds(i) * 1e9 < (double)bound + 0.5);
    }
    assert_int_equal(llk_metrics_bucket_of(UINT64_MAX), LLMLINK_METRICS_BUCKETS);
}

static void test_record_once(void **state)
{
    (void)state;
    llk_metrics_t m;
    memset(&m, 0, sizeof m);
    llk_metrics_transfer(&m, true, LLMLINK_METRICS_TRANSPORT_SHM, LLMLINK_METRICS_SUCCESS, 4096,
                         20000);
    llk_metrics_transfer(&m, true, LLMLINK_METRICS_TRANSPORT_SHM, LLMLINK_METRICS_REFUSED, 4096,
                         100000000000LL); /* 100 s: past the last bound */
    llk_metrics_link_up(&m, false);
    llk_metrics_link_closed(&m, LLMLINK_CLOSE_LIVENESS);
    llmlink_metrics_t s;
    memset(&s, 0, sizeof s);
    llk_metrics_snapshot(&m, &s);
    assert_int_equal(s.transfers[1][LLMLINK_METRICS_TRANSPORT_SHM][LLMLINK_METRICS_SUCCESS], 1);
    assert_int_equal(s.transfers[1][LLMLINK_METRICS_TRANSPORT_SHM][LLMLINK_METRICS_REFUSED], 1);
    assert_int_equal(s.bytes[1][LLMLINK_METRICS_TRANSPORT_SHM], 4096); /* success only */
    assert_int_equal(s.latency_count[1], 2);
    assert_int_equal(s.latency_buckets[1][2], 1); /* 20 us: (16, 32] us */
    uint64_t in_buckets = 0;
    for (int i = 0; i < LLMLINK_METRICS_BUCKETS; i++)
        in_buckets += s.latency_buckets[1][i];
    assert_int_equal(in_buckets, 1); /* the 100 s one is only in the count */
    assert_int_equal(s.latency_sum_ns[1], 100000020000ull);
    assert_int_equal(s.latency_count[0], 0);
    assert_int_equal(s.links_established[LLMLINK_LINK_INBOUND], 1);
    assert_int_equal(s.links_closed[LLMLINK_CLOSE_LIVENESS], 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_result_classes),
        cmocka_unit_test(test_refuse_reasons),
        cmocka_unit_test(test_buckets),
        cmocka_unit_test(test_record_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
