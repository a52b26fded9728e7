/*
 * test_link_conn_api.c - deterministic unit tests of the connection list
 * (llk_conn_find, llk_conn_count_links, llk_conn_queue) and the API side's
 * paths that complete without the reactor (core/link/conn.c, manager.c).
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

#include "base/err.h"
#include "link_fixture.h"

/* ================================================================================ */
/* llk_conn_find / llk_conn_count_links / llk_conn_queue                            */
/* ================================================================================ */

static void test_conn_find(void **state)
{
    fx_t *fx = *state;
    llmlink_t *e = fx->e;
    static const llk_conn_state_t all[] = {
        LLK_CONN_SRV_HANDSHAKE, LLK_CONN_SRV_PARKED, LLK_CONN_CLI_PENDING,
        LLK_CONN_CLI_CONNECTING, LLK_CONN_CLI_HELLO_SENT, LLK_CONN_LINKED, LLK_CONN_UNLINKING,
        LLK_CONN_CLOSING, LLK_CONN_DEAD,
    };
    for (size_t d = 0; d < 2; d++) {
        bool outbound = d == 0;
        for (size_t i = 0; i < ARRAY_LEN(all); i++) {
            uint64_t id = 1000 + i;
            llk_conn_t *c = conn_new(fx, outbound, all[i], id);
            if (all[i] == LLK_CONN_SRV_HANDSHAKE)
                e->hs_in_progress++; /* conn_new does not count it */
            bool hidden = all[i] == LLK_CONN_SRV_HANDSHAKE || all[i] == LLK_CONN_SRV_PARKED ||
                          all[i] == LLK_CONN_CLOSING ||
                          all[i] == LLK_CONN_DEAD;
            llk_conn_t *got = llk_conn_find(e, id, outbound);
            if (hidden && got)
                fail_msg("llk_conn_find found a %s connection", llk_conn_state_name(all[i]));
            if (!hidden && got != c)
                fail_msg("llk_conn_find missed a %s connection", llk_conn_state_name(all[i]));
            assert_null(llk_conn_find(e, id, !outbound));
            assert_string_not_equal(llk_conn_state_name(all[i]), "?");
            destroy(fx, c);
        }
    }
    /* Several for one id: a CLOSING old one is skipped, the live one found,
     * whatever the order in the list. */
    llk_conn_t *live = conn_new(fx, true, LLK_CONN_LINKED, 9);
    (void)conn_new(fx, true, LLK_CONN_CLOSING, 9);
    (void)conn_new(fx, true, LLK_CONN_DEAD, 9);
    (void)conn_new(fx, false, LLK_CONN_LINKED, 9);
    assert_ptr_equal(llk_conn_find(e, 9, true), live);
    assert_null(llk_conn_find(e, 10, true));
}

static void test_conn_count_links(void **state)
{
    fx_t *fx = *state;
    llmlink_t *e = fx->e;
    static const struct {
        llk_conn_state_t s;
        bool outbound;
        uint32_t links, with_pending;
    } cases[] = {
        {LLK_CONN_SRV_HANDSHAKE, false, 0, 0},
        {LLK_CONN_CLI_PENDING, true, 0, 1},
        {LLK_CONN_CLI_CONNECTING, true, 0, 1},
        {LLK_CONN_CLI_HELLO_SENT, true, 0, 1},
        {LLK_CONN_CLI_PENDING, false, 0, 0},
        {LLK_CONN_LINKED, true, 1, 1},
        {LLK_CONN_LINKED, false, 1, 1},
        {LLK_CONN_UNLINKING, true, 1, 1},
        {LLK_CONN_UNLINKING, false, 1, 1},
        {LLK_CONN_CLOSING, true, 0, 0},
        {LLK_CONN_CLOSING, false, 0, 0},
        {LLK_CONN_DEAD, true, 0, 0},
        {LLK_CONN_DEAD, false, 0, 0},
    };
    uint32_t links = 0, with_pending = 0;
    assert_int_equal(llk_conn_count_links(e, false), 0);
    assert_int_equal(llk_conn_count_links(e, true), 0);
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        llk_conn_t *c = conn_new(fx, cases[i].outbound, cases[i].s, 2000 + i);
        if (cases[i].s == LLK_CONN_SRV_HANDSHAKE)
            e->hs_in_progress++;
        assert_int_equal(llk_conn_is_link(c), cases[i].links == 1);
        links += cases[i].links;
        with_pending += cases[i].with_pending;
        if (llk_conn_count_links(e, false) != links ||
            llk_conn_count_links(e, true) != with_pending)
            fail_msg("after adding a %s %s connection: count %u/%u, expected %u/%u",
                     cases[i].outbound ? "outbound" : "inbound",
                     llk_conn_state_name(cases[i].s), llk_conn_count_links(e, false),
                     llk_conn_count_links(e, true), links, with_pending);
    }
    assert_int_equal(links, 4);
    assert_int_equal(with_pending, 7);
}

static void test_conn_queue_capacity(void **state)
{
    fx_t *fx = *state;
    llk_conn_t *c = conn_new(fx, true, LLK_CONN_LINKED, 1);
    uint8_t big[LLK_TX_CAP + 1];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)i;

    assert_false(llk_conn_queue(c, big, 0));
    assert_false(llk_conn_queue(c, big, LLK_TX_CAP + 1));
    assert_int_equal(c->tx_len, 0);
    assert_true(llk_conn_queue(c, big, LLK_TX_CAP));
    assert_int_equal(c->tx_len, LLK_TX_CAP);
    assert_memory_equal(c->tx, big, LLK_TX_CAP);
    assert_false(llk_conn_queue(c, big, 1));
    assert_false(llk_conn_queue_simple(c, LLK_MSG_HEARTBEAT));
    assert_int_equal(c->tx_len, LLK_TX_CAP);

    /* Frames are queued whole or not at all. */
    c->tx_len = LLK_TX_CAP - LLK_WIRE_HEADER_SIZE;
    assert_false(llk_conn_queue_simple(c, LLK_MSG_UNLINK)); /* 20 bytes */
    assert_int_equal(c->tx_len, LLK_TX_CAP - LLK_WIRE_HEADER_SIZE);
    assert_true(llk_conn_queue_simple(c, LLK_MSG_HEARTBEAT)); /* 16: exactly fits */
    assert_int_equal(c->tx_len, LLK_TX_CAP);

    c->tx_len = LLK_TX_CAP - 10;
    assert_false(llk_conn_queue_reject(c, LLMLINK_LINK_FAILED, "no"));
    assert_int_equal(c->tx_len, LLK_TX_CAP - 10);

    /* The largest REJECT fits an empty queue, its message cut to the limit. */
    c->tx_len = 0;
    char msg[LLK_WIRE_MAX_REJECT_MSG + 50];
    memset(msg, 'x', sizeof msg - 1);
    msg[sizeof msg - 1] = '\0';
    assert_true(llk_conn_queue_reject(c, LLMLINK_LINK_FAILED, "%s", msg));
    llk_msg_reject_t r;
    assert_tx_reject(c, LLMLINK_LINK_FAILED, &r);
    assert_int_equal(strlen(r.message), LLK_WIRE_MAX_REJECT_MSG);
}

/* ================================================================================ */
/* API side, with e->state RUNNING (paths that complete without the reactor)        */
/* ================================================================================ */

static void test_api_requires_running(void **state)
{
    fx_t *fx = *state;
    llmlink_t *e = fx->e;
    (void)outbound_link(fx, SRV_ID, OPT_LIVENESS, T0);
    assert_status(llk_engine_check_link(e, SRV_ID), LLMLINK_NOT_INITIALIZED);
    e->state = LLK_ENGINE_FINALIZED;
    assert_status(llk_engine_check_link(e, SRV_ID), LLMLINK_ENGINE_FINALIZED);
    llk_link_req_t req;
    memset(&req, 0, sizeof req);
    req.remote_id = SRV_ID + 1;
    llmlink_status_t st[1] = {WAITER_UNSET};
    assert_status(llk_engine_link(e, &req, 1, 1000, st), LLMLINK_ENGINE_FINALIZED);
    assert_int_equal(st[0], WAITER_UNSET); /* not touched */
    e->state = LLK_ENGINE_CREATED;
}

static void test_api_check_link(void **state)
{
    fx_t *fx = *state; /* MIX */
    llmlink_t *e = fx->e;
    e->state = LLK_ENGINE_RUNNING;
    llk_conn_t *out = outbound_link(fx, 1, OPT_LIVENESS, T0);
    llk_conn_t *in = inbound_link(fx, 2, OPT_LIVENESS, T0);
    (void)conn_new(fx, true, LLK_CONN_CLI_HELLO_SENT, 3);
    llk_conn_t *u = inbound_link(fx, 4, OPT_LIVENESS, T0);
    set_state(fx, u, LLK_CONN_UNLINKING);

    assert_status(llk_engine_check_link(e, 1), LLMLINK_SUCCESS);
    assert_status(llk_engine_check_link(e, 2), LLMLINK_SUCCESS);
    assert_status(llk_engine_check_link(e, 3), LLMLINK_NOT_YET_LINK);
    assert_status(llk_engine_check_link(e, 4), LLMLINK_NOT_YET_LINK);
    assert_status(llk_engine_check_link(e, 5), LLMLINK_NOT_YET_LINK);
    assert_non_null(strstr(llk_err_message(), "5"));

    set_state(fx, out, LLK_CONN_CLOSING);
    set_state(fx, in, LLK_CONN_DEAD);
    assert_status(llk_engine_check_link(e, 1), LLMLINK_NOT_YET_LINK);
    assert_status(llk_engine_check_link(e, 2), LLMLINK_NOT_YET_LINK);
    e->state = LLK_ENGINE_CREATED;
}

static void test_api_link_limits(void **state)
{
    /* The link call's own checks, which complete at once (no reactor). */
    fx_t *fx = *state; /* DECODER */
    llmlink_t *e = fx->e;
    e->state = LLK_ENGINE_RUNNING;
    e->opts.max_links = 3;
    (void)outbound_link(fx, 1, OPT_LIVENESS, T0);
    (void)conn_new(fx, true, LLK_CONN_CLI_CONNECTING, 2);
    (void)conn_new(fx, true, LLK_CONN_CLOSING, 3); /* does not count */
    llk_conn_t *u = outbound_link(fx, 4, OPT_LIVENESS, T0);
    set_state(fx, u, LLK_CONN_UNLINKING);
    assert_int_equal(llk_conn_count_links(e, true), 3);

    llk_link_req_t reqs[4];
    memset(reqs, 0, sizeof reqs);
    reqs[0].remote_id = 1; /* linked */
    reqs[1].remote_id = 2; /* attempt in progress */
    reqs[2].remote_id = 4; /* unlinking */
    reqs[3].remote_id = 5; /* new: over the limit */
    llmlink_status_t st[4];
    assert_status(llk_engine_link(e, reqs, 4, 1000, st), LLMLINK_LINK_FAILED);
    assert_status(st[0], LLMLINK_ALREADY_LINK);
    assert_status(st[1], LLMLINK_PROCESSING_LINK);
    assert_status(st[2], LLMLINK_PROCESSING_LINK);
    assert_status(st[3], LLMLINK_CLUSTER_NUM_EXCEED_LIMIT);
    assert_status(llk_err_status(), LLMLINK_LINK_FAILED);
    assert_non_null(strstr(llk_err_message(), "cluster 5"));
    /* Nothing new was created. */
    assert_int_equal(llk_conn_count_links(e, true), 3);
    size_t n = 0;
    for (llk_conn_t *c = e->conns; c; c = c->next)
        n++;
    assert_int_equal(n, 4);
    e->state = LLK_ENGINE_CREATED;
}

static void test_api_unlink_immediate(void **state)
{
    /* The unlink call's paths that need no answer from the peer. */
    fx_t *fx = *state; /* DECODER: unlinks outbound links only */
    llmlink_t *e = fx->e;
    e->state = LLK_ENGINE_RUNNING;
    llk_conn_t *forced = outbound_link(fx, 1, OPT_LIVENESS, T0);
    llk_conn_t *full = outbound_link(fx, 2, OPT_LIVENESS, T0);
    full->tx_len = LLK_TX_CAP - 19; /* UNLINK (20 bytes) does not fit */
    llk_conn_t *pending = conn_new(fx, true, LLK_CONN_CLI_HELLO_SENT, 3);
    llk_conn_t *inbound = conn_new(fx, false, LLK_CONN_LINKED, 4); /* not ours */

    uint64_t ids[2] = {1, 9};
    llmlink_status_t st[2];
    /* force: freed at once; the reactor wake is a write to wakefd -1
     * (EBADF, ignored). */
    assert_status(llk_engine_unlink(e, ids, 2, 1000, true, st), LLMLINK_UNLINK_FAILED);
    assert_status(st[0], LLMLINK_SUCCESS);
    assert_status(st[1], LLMLINK_NOT_YET_LINK);
    assert_state(forced, LLK_CONN_DEAD);
    assert_int_equal(e->links_lost, 0);

    uint64_t ids2[3] = {2, 3, 4};
    llmlink_status_t st2[3];
    assert_status(llk_engine_unlink(e, ids2, 3, 1000, false, st2), LLMLINK_UNLINK_FAILED);
    assert_status(st2[0], LLMLINK_NOTIFY_PROMPT_UNLINK_FAILED);
    assert_status(st2[1], LLMLINK_PROCESSING_LINK);
    assert_status(st2[2], LLMLINK_NOT_YET_LINK);
    assert_state(full, LLK_CONN_DEAD);
    assert_int_equal(full->tx_len, LLK_TX_CAP - 19);
    assert_state(pending, LLK_CONN_CLI_HELLO_SENT);
    assert_state(inbound, LLK_CONN_LINKED);
    assert_null(pending->waiter);
    e->state = LLK_ENGINE_CREATED;
}

/* ---- main ------------------------------------------------------------------------ */

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* connection list helpers */
        M(test_conn_find),
        M(test_conn_count_links),
        D(test_conn_queue_capacity),
        /* API side */
        D(test_api_requires_running),
        M(test_api_check_link),
        D(test_api_link_limits),
        D(test_api_unlink_immediate),
    };
    return cmocka_run_group_tests_name("link_conn_api: connection list and API side", tests,
                                       link_fx_group_setup, link_fx_group_teardown);
}
