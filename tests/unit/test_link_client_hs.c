/*
 * test_link_client_hs.c - deterministic unit tests of the client side of the
 * link handshake (core/link/client.c): WELCOME / REJECT handling and the
 * attempt time-outs.
 *
 * Driven without sockets, threads or a real clock: see
 * tests/common/link_fixture.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "link_fixture.h"

/* ================================================================================ */
/* Client: WELCOME / REJECT                                                         */
/* ================================================================================ */

static void test_client_welcome_success(void **state)
{
    fx_t *fx = *state;
    llmlink_t *e = fx->e;
    llk_waiter_t w;
    waiter_init(&w);
    llk_conn_t *c = hello_sent_conn(fx, SRV_ID, LLMLINK_ROLE_PROMPT, T0 + 2000, &w, T0);
    assert_int_equal(llk_conn_count_links(e, true), 1);
    assert_int_equal(llk_conn_count_links(e, false), 0);
    assert_ptr_equal(llk_conn_find(e, SRV_ID, true), c);

    llk_msg_welcome_t m = welcome_msg(SRV_ID, LLMLINK_ROLE_PROMPT, 1500);
    send_welcome(fx, c, &m, T0 + 30);
    assert_state(c, LLK_CONN_LINKED);
    assert_waiter_done(&w, LLMLINK_SUCCESS);
    assert_null(c->waiter);
    assert_int_equal(c->remote_incarnation, m.incarnation);
    assert_int_equal(c->liveness_ms, 1500);
    assert_int_equal(c->deadline_ms, 0);
    assert_int_equal(c->last_rx_ms, T0 + 30);
    assert_int_equal(c->tx_len, 0); /* the client answers nothing */
    assert_int_equal(llk_conn_count_links(e, false), 1);
    assert_int_equal(e->protocol_errors, 0);
    assert_int_equal(e->hs_in_progress, 0); /* server-side counter untouched */

    /* The link deadline no longer applies. */
    send_simple(fx, c, LLK_MSG_HEARTBEAT, T0 + 1900);
    assert_true(timer(fx, c, T0 + 2000) != 0);
    assert_state(c, LLK_CONN_LINKED);
}

static void test_client_welcome_liveness_is_min(void **state)
{
    fx_t *fx = *state;
    static const struct {
        uint32_t server, client, want;
    } cases[] = {
        {1500, 3000, 1500}, {9000, 3000, 3000}, {3000, 3000, 3000},
        {LLK_LIVENESS_MAX_MS, LLK_LIVENESS_MIN_MS, LLK_LIVENESS_MIN_MS},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        fx->e->opts.liveness_interval_ms = cases[i].client;
        llk_conn_t *c = hello_sent_conn(fx, SRV_ID + i, 0, T0 + 1000, NULL, T0);
        llk_msg_welcome_t m = welcome_msg(SRV_ID + i, LLMLINK_ROLE_PROMPT, cases[i].server);
        send_welcome(fx, c, &m, T0);
        assert_state(c, LLK_CONN_LINKED);
        assert_int_equal(c->liveness_ms, cases[i].want);
    }
}

/* The server's llm.SyncKvCacheWaitTime in its WELCOME lands on the link;
 * the smaller of the two bounds its requests; a malformed one is ignored. */
static void test_client_welcome_wait_time(void **state)
{
    fx_t *fx = *state;
    static const uint8_t zero[4] = {0, 0, 0, 0};
    uint8_t buf[4];
    llk_ext_t ext[3];
    llk_wire_ext_wait_time(&ext[0], buf, 50);
    ext[1] = (llk_ext_t){LLK_EXT_WAIT_TIME, 4, zero};
    ext[2] = (llk_ext_t){LLK_EXT_WAIT_TIME, 5, (const uint8_t *)"abcde"};
    static const int32_t want[] = {50, 5000, 5000};
    for (size_t i = 0; i < ARRAY_LEN(want); i++) {
        llk_conn_t *c = hello_sent_conn(fx, SRV_ID + i, 0, T0 + 1000, NULL, T0);
        llk_msg_welcome_t m = welcome_msg(SRV_ID + i, LLMLINK_ROLE_PROMPT, 3000);
        m.num_ext = 2;
        m.ext[0] = (llk_ext_t){LLK_EXT_DATA_STREAMS, 0, NULL};
        m.ext[1] = ext[i];
        send_welcome(fx, c, &m, T0);
        assert_state(c, LLK_CONN_LINKED);
        assert_non_null(llk_xlink_of(c));
        assert_int_equal(llk_xlink_wait_ms(llk_xlink_of(c), 5000), want[i]);
    }
}

static void test_client_welcome_cluster_mismatch(void **state)
{
    fx_t *fx = *state;
    llk_waiter_t w;
    waiter_init(&w);
    llk_conn_t *c = hello_sent_conn(fx, SRV_ID, 0, T0 + 2000, &w, T0);
    llk_msg_welcome_t m = welcome_msg(SRV_ID + 5, LLMLINK_ROLE_PROMPT, OPT_LIVENESS);
    send_welcome(fx, c, &m, T0 + 1);
    assert_state(c, LLK_CONN_DEAD);
    assert_waiter_done(&w, LLMLINK_CLUSTER_ID_MISMATCH);
    assert_non_null(strstr(w.detail, "105"));
    assert_null(c->waiter);
    assert_int_equal(llk_conn_count_links(fx->e, true), 0);
}

static void test_client_welcome_role_mismatch(void **state)
{
    fx_t *fx = *state;
    llk_waiter_t w;
    waiter_init(&w);
    llk_conn_t *c = hello_sent_conn(fx, SRV_ID, LLMLINK_ROLE_PROMPT, T0 + 2000, &w, T0);
    llk_msg_welcome_t m = welcome_msg(SRV_ID, LLMLINK_ROLE_MIX, OPT_LIVENESS);
    send_welcome(fx, c, &m, T0 + 1);
    assert_state(c, LLK_CONN_DEAD);
    assert_waiter_done(&w, LLMLINK_ROLE_NOT_ALLOWED);

    /* Expected role 0: any role is fine. */
    static const uint32_t roles[] = {LLMLINK_ROLE_PROMPT, LLMLINK_ROLE_DECODER, LLMLINK_ROLE_MIX};
    for (size_t i = 0; i < ARRAY_LEN(roles); i++) {
        waiter_init(&w);
        c = hello_sent_conn(fx, SRV_ID + 1 + i, 0, T0 + 2000, &w, T0);
        m = welcome_msg(SRV_ID + 1 + i, roles[i], OPT_LIVENESS);
        send_welcome(fx, c, &m, T0 + 1);
        assert_state(c, LLK_CONN_LINKED);
        assert_waiter_done(&w, LLMLINK_SUCCESS);
    }
}

static void test_client_welcome_critical_extension(void **state)
{
    fx_t *fx = *state;
    llk_waiter_t w;
    waiter_init(&w);
    llk_conn_t *c = hello_sent_conn(fx, SRV_ID, 0, T0 + 2000, &w, T0);
    llk_msg_welcome_t m = welcome_msg(SRV_ID, LLMLINK_ROLE_PROMPT, OPT_LIVENESS);
    m.num_ext = 2;
    m.ext[0] = (llk_ext_t){0x0005, 1, (const uint8_t *)"z"};
    m.ext[1] = (llk_ext_t){0xC001, 0, NULL};
    send_welcome(fx, c, &m, T0 + 1);
    assert_state(c, LLK_CONN_DEAD);
    assert_waiter_done(&w, LLMLINK_PROTOCOL_ERROR);
    assert_non_null(strstr(w.detail, "0xc001"));

    /* Non-critical only: linked. */
    waiter_init(&w);
    c = hello_sent_conn(fx, SRV_ID + 1, 0, T0 + 2000, &w, T0);
    m.server_cluster_id = SRV_ID + 1;
    m.num_ext = 1;
    send_welcome(fx, c, &m, T0 + 1);
    assert_state(c, LLK_CONN_LINKED);
    assert_waiter_done(&w, LLMLINK_SUCCESS);
}

static void test_client_reject_status_mapping(void **state)
{
    fx_t *fx = *state;
    llmlink_t *e = fx->e;
    static const struct {
        uint32_t wire;
        llmlink_status_t want;
    } cases[] = {
        /* What a server sends passes through. */
        {LLMLINK_CLUSTER_NUM_EXCEED_LIMIT, LLMLINK_CLUSTER_NUM_EXCEED_LIMIT},
        {LLMLINK_VERSION_MISMATCH, LLMLINK_VERSION_MISMATCH},
        {LLMLINK_CLUSTER_ID_MISMATCH, LLMLINK_CLUSTER_ID_MISMATCH},
        {LLMLINK_ROLE_NOT_ALLOWED, LLMLINK_ROLE_NOT_ALLOWED},
        {LLMLINK_PROTOCOL_ERROR, LLMLINK_PROTOCOL_ERROR},
        {LLMLINK_LINK_FAILED, LLMLINK_LINK_FAILED},
        /* The server holds a live link with our id (access control). */
        {LLMLINK_ALREADY_LINK, LLMLINK_ALREADY_LINK},
        {LLMLINK_AUTH_FAILED, LLMLINK_AUTH_FAILED},
        {LLMLINK_ACCESS_DENIED, LLMLINK_ACCESS_DENIED},
        /* Anything else: LINK_FAILED, never a misleading code, and never
         * SUCCESS for a refusal. */
        {LLMLINK_SUCCESS, LLMLINK_LINK_FAILED},
        {LLMLINK_FAILED, LLMLINK_LINK_FAILED},
        {LLMLINK_TIMEOUT, LLMLINK_LINK_FAILED},
        {LLMLINK_PARAM_INVALID, LLMLINK_LINK_FAILED},
        {LLMLINK_ENGINE_FINALIZED, LLMLINK_LINK_FAILED},
        {LLMLINK_NOT_INITIALIZED, LLMLINK_LINK_FAILED},
        {0x12345678u, LLMLINK_LINK_FAILED},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        llk_waiter_t w;
        waiter_init(&w);
        llk_conn_t *c = hello_sent_conn(fx, SRV_ID, 0, T0 + 2000, &w, T0);
        send_reject(fx, c, cases[i].wire, "go away", T0 + 1);
        assert_state(c, LLK_CONN_DEAD);
        if (w.status != cases[i].want)
            fail_msg("REJECT status 0x%08x gave %s, expected %s", cases[i].wire,
                     llmlink_status_name(w.status), llmlink_status_name(cases[i].want));
        assert_waiter_done(&w, cases[i].want);
        assert_non_null(strstr(w.detail, "go away"));
        assert_null(c->waiter);
        destroy(fx, c);
    }
    assert_int_equal(e->protocol_errors, 0);
}

static void test_client_bad_payloads(void **state)
{
    fx_t *fx = *state;
    llmlink_t *e = fx->e;
    llk_msg_welcome_t m = welcome_msg(SRV_ID, LLMLINK_ROLE_PROMPT, OPT_LIVENESS);
    size_t n = llk_wire_encode_welcome(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, &m);
    size_t len = n - LLK_WIRE_HEADER_SIZE;
    uint8_t welcome[64] = {0};
    assert_true(len + 1 <= sizeof welcome);
    memcpy(welcome, fx->frame + LLK_WIRE_HEADER_SIZE, len);
    /* REJECT whose message length says 10 but carries 3 bytes. */
    static const uint8_t bad_reject[] = {0x50, 0x10, 0xB0, 0x09, 0x00, 0x0A, 'a', 'b', 'c'};
    uint8_t bad_role[64];
    memcpy(bad_role, welcome, len);
    bad_role[11] = 9; /* server_role low byte: out of range */

    struct {
        uint16_t type;
        const uint8_t *p;
        size_t len;
    } cases[] = {
        {LLK_MSG_WELCOME, welcome, 0},
        {LLK_MSG_WELCOME, welcome, len - 1},
        {LLK_MSG_WELCOME, welcome, len + 1},
        {LLK_MSG_WELCOME, bad_role, len},
        {LLK_MSG_REJECT, bad_reject, sizeof bad_reject},
        {LLK_MSG_REJECT, bad_reject, 3},
        /* A message that has no place in the handshake. */
        {LLK_MSG_HEARTBEAT, welcome, 0},
        {LLK_MSG_UNLINK_ACK, welcome, 0},
        {LLK_MSG_HELLO, welcome, len},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        llk_waiter_t w;
        waiter_init(&w);
        llk_conn_t *c = hello_sent_conn(fx, SRV_ID, 0, T0 + 2000, &w, T0);
        deliver_payload(fx, c, cases[i].type, cases[i].p, cases[i].len, T0 + 1);
        assert_state(c, LLK_CONN_DEAD);
        assert_waiter_done(&w, LLMLINK_PROTOCOL_ERROR);
        assert_int_equal(e->protocol_errors, i + 1);
        assert_null(c->waiter);
        destroy(fx, c);
    }
}

/* ================================================================================ */
/* Client time-outs                                                                 */
/* ================================================================================ */

static void test_client_timeouts(void **state)
{
    fx_t *fx = *state;
    static const llk_conn_state_t states[] = {LLK_CONN_CLI_PENDING, LLK_CONN_CLI_CONNECTING,
                                              LLK_CONN_CLI_HELLO_SENT};
    for (size_t i = 0; i < ARRAY_LEN(states); i++) {
        llk_waiter_t w;
        waiter_init(&w);
        llk_conn_t *c = conn_new(fx, true, states[i], SRV_ID);
        c->waiter = &w;
        c->deadline_ms = T0 + 700;
        c->retry_at_ms = 0;
        assert_int_equal(timer(fx, c, T0), T0 + 700);
        assert_int_equal(timer(fx, c, T0 + 699), T0 + 700);
        assert_state(c, states[i]);
        assert_waiter_pending(&w);
        assert_int_equal(timer(fx, c, T0 + 700), 0);
        assert_state(c, LLK_CONN_DEAD);
        assert_waiter_done(&w, LLMLINK_TIMEOUT);
        assert_non_null(strstr(w.detail, llk_conn_state_name(states[i])));
        assert_null(c->waiter);
        assert_int_equal(c->tx_len, 0);
        destroy(fx, c);
    }
    assert_int_equal(fx->e->links_lost, 0);
    assert_int_equal(fx->e->hs_timed_out, 0);
}

static void test_client_pending_retry_deadline(void **state)
{
    fx_t *fx = *state;
    llk_conn_t *c = conn_new(fx, true, LLK_CONN_CLI_PENDING, SRV_ID);
    c->deadline_ms = T0 + 700;
    c->retry_at_ms = T0 + 50;
    assert_int_equal(timer(fx, c, T0), T0 + 50);
    c->retry_at_ms = T0 + 900; /* a retry after the deadline never comes */
    assert_int_equal(timer(fx, c, T0), T0 + 700);
    assert_int_equal(timer(fx, c, T0 + 700), 0);
    assert_state(c, LLK_CONN_DEAD);
}

/* ---- main ------------------------------------------------------------------------ */

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* client WELCOME / REJECT */
        D(test_client_welcome_success),
        D(test_client_welcome_liveness_is_min),
        D(test_client_welcome_wait_time),
        D(test_client_welcome_cluster_mismatch),
        D(test_client_welcome_role_mismatch),
        D(test_client_welcome_critical_extension),
        D(test_client_reject_status_mapping),
        D(test_client_bad_payloads),
        /* client time-outs */
        D(test_client_timeouts),
        D(test_client_pending_retry_deadline),
    };
    return cmocka_run_group_tests_name("link_client_hs: client handshake and time-outs", tests,
                                       link_fx_group_setup, link_fx_group_teardown);
}
