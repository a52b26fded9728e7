/*
 * test_link_server_hs.c - deterministic unit tests of the server side of the
 * link handshake (core/link/server.c): HELLO checks, the handshake
 * accounting and age-out, max_links.
 *
 * Driven without sockets, threads or a real clock: see
 * tests/common/link_fixture.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "base/cluster_list.h"
#include "link_fixture.h"

/* ================================================================================ */
/* Server handshake accounting: hs_in_progress drops exactly once per handshake.     */
/* ================================================================================ */

static void test_hs_accounting_welcome(void **state)
{
    fx_t *fx = *state;
    llmlink_t *e = fx->e;
    llk_conn_t *c = accept_conn(fx, T0);
    assert_int_equal(e->hs_in_progress, 1);

    llk_msg_hello_t m = hello_msg(CLI_ID, SRV_ID);
    send_hello(fx, c, &m, T0 + 10);
    assert_state(c, LLK_CONN_LINKED);
    assert_int_equal(e->hs_in_progress, 0);
    assert_int_equal(e->hs_completed, 1);
    assert_int_equal(e->hs_rejected, 0);

    /* Later moves of the link do not touch the handshake count. */
    set_state(fx, c, LLK_CONN_UNLINKING);
    set_state(fx, c, LLK_CONN_CLOSING);
    set_state(fx, c, LLK_CONN_DEAD);
    assert_int_equal(e->hs_in_progress, 0);
    destroy(fx, c);
    assert_int_equal(e->hs_in_progress, 0);
    assert_null(e->conns);
}

static void test_hs_accounting_reject(void **state)
{
    fx_t *fx = *state;
    llmlink_t *e = fx->e;
    llk_conn_t *c = accept_conn(fx, T0);
    llk_msg_hello_t m = hello_msg(CLI_ID, SRV_ID + 1);
    send_hello(fx, c, &m, T0);
    assert_state(c, LLK_CONN_CLOSING);
    assert_int_equal(e->hs_in_progress, 0);
    assert_int_equal(e->hs_rejected, 1);
    assert_int_equal(e->hs_completed, 0);

    /* The REJECT is still queued: the close grace starts now; its expiry
     * is not a handshake time-out and does not decrement again. */
    assert_int_equal(timer(fx, c, T0 + 1), T0 + 1 + CLOSE_GRACE_MS);
    assert_state(c, LLK_CONN_CLOSING);
    assert_int_equal(timer(fx, c, T0 + 1 + CLOSE_GRACE_MS), 0);
    assert_state(c, LLK_CONN_DEAD);
    assert_int_equal(e->hs_in_progress, 0);
    assert_int_equal(e->hs_timed_out, 0);
    destroy(fx, c);
    assert_int_equal(e->hs_in_progress, 0);
}

static void test_hs_accounting_age_out(void **state)
{
    fx_t *fx = *state;
    llmlink_t *e = fx->e;
    llk_conn_t *c = accept_conn(fx, T0);
    assert_int_equal(timer(fx, c, T0 + OPT_HS_TIMEOUT), 0);
    assert_state(c, LLK_CONN_DEAD);
    assert_int_equal(e->hs_in_progress, 0);
    assert_int_equal(e->hs_timed_out, 1);
    /* A dead connection is not aged out twice. */
    assert_int_equal(timer(fx, c, T0 + 10 * OPT_HS_TIMEOUT), 0);
    assert_int_equal(e->hs_timed_out, 1);
    destroy(fx, c);
    assert_int_equal(e->hs_in_progress, 0);
}

static void test_hs_accounting_close(void **state)
{
    fx_t *fx = *state;
    llmlink_t *e = fx->e;
    llk_conn_t *eof = accept_conn(fx, T0);
    llk_conn_t *rst = accept_conn(fx, T0);
    assert_int_equal(e->hs_in_progress, 2);

    closed(fx, eof, 0);
    assert_state(eof, LLK_CONN_DEAD);
    assert_int_equal(e->hs_in_progress, 1);
    closed(fx, rst, ECONNRESET);
    assert_state(rst, LLK_CONN_DEAD);
    assert_int_equal(e->hs_in_progress, 0);
    /* A close is neither a time-out nor a lost link. */
    assert_int_equal(e->hs_timed_out, 0);
    assert_int_equal(e->links_lost, 0);

    /* A second close report of a dead connection changes nothing. */
    closed(fx, eof, 0);
    assert_int_equal(e->hs_in_progress, 0);
    destroy(fx, eof);
    destroy(fx, rst);
    assert_int_equal(e->hs_in_progress, 0);
}

static void test_hs_accounting_destroy(void **state)
{
    fx_t *fx = *state;
    llmlink_t *e = fx->e;
    llk_conn_t *a = accept_conn(fx, T0);
    llk_conn_t *b = accept_conn(fx, T0);
    llk_conn_t *dead = accept_conn(fx, T0);
    assert_int_equal(e->hs_in_progress, 3);
    assert_int_equal(e->hs_peak, 3);

    set_state(fx, dead, LLK_CONN_DEAD);
    assert_int_equal(e->hs_in_progress, 2);
    destroy(fx, dead); /* already counted out */
    assert_int_equal(e->hs_in_progress, 2);
    destroy(fx, a); /* destroyed mid-handshake (engine finalize) */
    assert_int_equal(e->hs_in_progress, 1);
    destroy(fx, b);
    assert_int_equal(e->hs_in_progress, 0);
    assert_int_equal(e->hs_peak, 3);
    assert_null(e->conns);
}

static void test_hs_accounting_welcome_does_not_fit(void **state)
{
    /* The WELCOME cannot be queued (the peer sent HELLO without reading
     * anything): the connection dies, and the slot is still freed. */
    fx_t *fx = *state;
    llmlink_t *e = fx->e;
    llk_conn_t *c = accept_conn(fx, T0);
    c->tx_len = LLK_TX_CAP - 8;
    llk_msg_hello_t m = hello_msg(CLI_ID, SRV_ID);
    send_hello(fx, c, &m, T0);
    assert_state(c, LLK_CONN_DEAD);
    assert_int_equal(c->tx_len, LLK_TX_CAP - 8);
    assert_int_equal(e->hs_in_progress, 0);
    assert_int_equal(e->hs_completed, 0);
    assert_null(llk_conn_find(e, CLI_ID, false));
}

static void test_hs_accounting_mixed_stats(void **state)
{
    /* Five handshakes end five different ways; the public counters add up. */
    fx_t *fx = *state;
    llmlink_t *e = fx->e;
    llk_conn_t *ok = accept_conn(fx, T0);
    llk_conn_t *bad = accept_conn(fx, T0);
    llk_conn_t *slow = accept_conn(fx, T0);
    llk_conn_t *gone = accept_conn(fx, T0 + 100);
    llk_conn_t *junk = accept_conn(fx, T0 + 100);

    llmlink_stats_t s = {.version = LLMLINK_STATS_VERSION};
    assert_int_equal(llk_engine_stats(e, &s), LLMLINK_SUCCESS);
    assert_int_equal(s.handshakes_in_progress, 5);
    assert_int_equal(s.handshakes_peak, 5);
    assert_int_equal(s.handshakes_accepted, 5);

    llk_msg_hello_t m = hello_msg(CLI_ID, SRV_ID);
    send_hello(fx, ok, &m, T0 + 1);
    m.target_cluster_id = 7;
    send_hello(fx, bad, &m, T0 + 1);
    closed(fx, gone, ECONNRESET);
    send_simple(fx, junk, LLK_MSG_HEARTBEAT, T0 + 101);
    assert_state(junk, LLK_CONN_CLOSING);
    assert_int_equal(timer(fx, slow, T0 + OPT_HS_TIMEOUT - 1), T0 + OPT_HS_TIMEOUT);
    assert_state(slow, LLK_CONN_SRV_HANDSHAKE);
    assert_int_equal(timer(fx, slow, T0 + OPT_HS_TIMEOUT), 0);

    assert_int_equal(llk_engine_stats(e, &s), LLMLINK_SUCCESS);
    assert_int_equal(s.handshakes_in_progress, 0);
    assert_int_equal(s.handshakes_peak, 5);
    assert_int_equal(s.handshakes_accepted, 5);
    assert_int_equal(s.handshakes_completed, 1);
    assert_int_equal(s.handshakes_rejected, 2);
    assert_int_equal(s.handshakes_timed_out, 1);
    assert_int_equal(s.protocol_errors, 1);
    assert_int_equal(s.links, 1);
    assert_int_equal(s.inbound_links, 1);
    assert_int_equal(s.outbound_links, 0);
    assert_int_equal(s.links_lost, 0);
}

/* ================================================================================ */
/* Handshake age-out                                                                */
/* ================================================================================ */

static void test_hs_age_out_exact(void **state)
{
    fx_t *fx = *state;
    llmlink_t *e = fx->e;
    e->opts.handshake_timeout_ms = 250;
    llk_conn_t *c = accept_conn(fx, T0);
    assert_int_equal(c->deadline_ms, T0 + 250);

    /* Before the deadline: nothing happens, and the deadline is reported
     * as the next thing to wake up for. */
    assert_int_equal(timer(fx, c, T0), T0 + 250);
    assert_int_equal(timer(fx, c, T0 + 249), T0 + 250);
    assert_state(c, LLK_CONN_SRV_HANDSHAKE);
    assert_int_equal(e->hs_timed_out, 0);
    assert_int_equal(e->hs_in_progress, 1);
    assert_int_equal(c->tx_len, 0); /* a half-open handshake is not answered */

    log_reset();
    assert_int_equal(timer(fx, c, T0 + 250), 0);
    assert_state(c, LLK_CONN_DEAD);
    assert_int_equal(e->hs_timed_out, 1);
    assert_int_equal(e->hs_in_progress, 0);
    assert_int_equal(e->hs_rejected, 0);
    assert_int_equal(c->tx_len, 0);
    assert_logged("dropped half-open handshake");
}

static void test_hs_age_out_late_timer(void **state)
{
    /* A timer pass that comes late still ages the handshake out once. */
    fx_t *fx = *state;
    llmlink_t *e = fx->e;
    llk_conn_t *a = accept_conn(fx, T0);
    llk_conn_t *b = accept_conn(fx, T0 + 200);
    assert_int_equal(timer(fx, a, T0 + OPT_HS_TIMEOUT + 5000), 0);
    assert_int_equal(timer(fx, b, T0 + OPT_HS_TIMEOUT + 199), T0 + 200 + OPT_HS_TIMEOUT);
    assert_state(a, LLK_CONN_DEAD);
    assert_state(b, LLK_CONN_SRV_HANDSHAKE);
    assert_int_equal(e->hs_timed_out, 1);
    assert_int_equal(e->hs_in_progress, 1);
}

/* ================================================================================ */
/* Server: HELLO                                                                    */
/* ================================================================================ */

static void test_server_hello_success(void **state)
{
    fx_t *fx = *state;
    llmlink_t *e = fx->e;
    llk_conn_t *c = accept_conn(fx, T0);
    llk_msg_hello_t m = hello_msg(CLI_ID, SRV_ID);
    m.liveness_ms = 1200;
    send_hello(fx, c, &m, T0 + 40);

    assert_state(c, LLK_CONN_LINKED);
    assert_false(c->outbound);
    assert_int_equal(c->remote_id, CLI_ID);
    assert_int_equal(c->remote_incarnation, m.incarnation);
    assert_int_equal(c->liveness_ms, 1200); /* min(1200, 3000) */
    assert_int_equal(c->deadline_ms, 0);
    assert_int_equal(c->last_rx_ms, T0 + 40);
    assert_int_equal(c->last_tx_ms, T0 + 40);

    llk_msg_welcome_t w;
    assert_tx_welcome(c, &w);
    assert_int_equal(w.server_cluster_id, SRV_ID);
    assert_int_equal(w.server_role, LLMLINK_ROLE_PROMPT);
    assert_int_equal(w.liveness_ms, OPT_LIVENESS); /* the server's own; the client takes the min */
    assert_int_equal(w.incarnation, ENGINE_INCARNATION);
    /* The server announces data streams (xfer.h), and made the link's
     * transfer side. */
    assert_int_equal(w.num_ext, 2);
    assert_int_equal(w.ext[0].type, LLK_EXT_DATA_STREAMS);
    assert_int_equal(w.ext[0].length, 0);
    /* ... and its llm.SyncKvCacheWaitTime. */
    uint32_t wait = 0;
    const char *why = NULL;
    assert_int_equal(llk_wire_find_wait_time(w.ext, w.num_ext, &wait, &why), 1);
    assert_int_equal(wait, (uint32_t)e->opts.sync_kv_wait_ms);
    assert_non_null(llk_xlink_of(c));
    /* The client sent none: the link uses the server's own. */
    assert_int_equal(llk_xlink_wait_ms(llk_xlink_of(c), 777), 777);
    assert_int_equal(llk_xlink_of(c)->remote_id, CLI_ID);
    assert_false(llk_xlink_of(c)->outbound);

    assert_ptr_equal(llk_conn_find(e, CLI_ID, false), c);
    assert_null(llk_conn_find(e, CLI_ID, true));
    assert_int_equal(llk_conn_count_links(e, false), 1);
    assert_int_equal(e->hs_completed, 1);
    assert_int_equal(e->protocol_errors, 0);
}

static void test_server_hello_liveness_is_min(void **state)
{
    fx_t *fx = *state;
    static const struct {
        uint32_t client, server, want;
    } cases[] = {
        {1200, 3000, 1200},
        {9000, 3000, 3000},
        {3000, 3000, 3000},
        {LLK_LIVENESS_MIN_MS, LLK_LIVENESS_MAX_MS, LLK_LIVENESS_MIN_MS},
        {LLK_LIVENESS_MAX_MS, LLK_LIVENESS_MIN_MS, LLK_LIVENESS_MIN_MS},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        fx->e->opts.liveness_interval_ms = cases[i].server;
        llk_conn_t *c = accept_conn(fx, T0);
        llk_msg_hello_t m = hello_msg(1000 + i, SRV_ID);
        m.liveness_ms = cases[i].client;
        send_hello(fx, c, &m, T0);
        assert_state(c, LLK_CONN_LINKED);
        assert_int_equal(c->liveness_ms, cases[i].want);
        llk_msg_welcome_t w;
        assert_tx_welcome(c, &w);
        assert_int_equal(w.liveness_ms, cases[i].server);
        destroy(fx, c);
    }
}

static void server_refuses(fx_t *fx, const llk_msg_hello_t *m, llmlink_status_t want,
                           const char *msg_part)
{
    llmlink_t *e = fx->e;
    uint64_t rejected = e->hs_rejected, completed = e->hs_completed;
    uint32_t hs = e->hs_in_progress;
    uint32_t links = llk_conn_count_links(e, true);
    llk_conn_t *old = llk_conn_find(e, m->client_cluster_id, false);
    llk_conn_t *c = accept_conn(fx, T0);
    send_hello(fx, c, m, T0 + 1);
    assert_state(c, LLK_CONN_CLOSING);
    assert_int_equal(c->deadline_ms, 0); /* the close grace is set by the timer pass */
    llk_msg_reject_t r;
    assert_tx_reject(c, want, &r);
    if (msg_part && !strstr(r.message, msg_part))
        fail_msg("REJECT message \"%s\" does not mention \"%s\"", r.message, msg_part);
    assert_int_equal(e->hs_rejected, rejected + 1);
    assert_int_equal(e->hs_in_progress, hs);
    assert_int_equal(e->hs_completed, completed);
    /* A refused connection is never found as a link and never counted. */
    assert_ptr_equal(llk_conn_find(e, m->client_cluster_id, false), old);
    assert_int_equal(llk_conn_count_links(e, true), links);
    /* The timer pass lets the REJECT drain and then drops it. */
    assert_int_equal(timer(fx, c, T0 + 2), T0 + 2 + CLOSE_GRACE_MS);
    flushed(c, T0 + 3);
    assert_int_equal(timer(fx, c, T0 + 3), 0);
    assert_state(c, LLK_CONN_DEAD);
    destroy(fx, c);
}

static void test_server_hello_wrong_target(void **state)
{
    fx_t *fx = *state;
    llk_msg_hello_t m = hello_msg(CLI_ID, SRV_ID + 1);
    server_refuses(fx, &m, LLMLINK_CLUSTER_ID_MISMATCH, "101");
    assert_int_equal(fx->e->protocol_errors, 0);
}

static void test_server_hello_expected_role(void **state)
{
    fx_t *fx = *state;
    llk_msg_hello_t m = hello_msg(CLI_ID, SRV_ID);
    m.expected_server_role = LLMLINK_ROLE_DECODER;
    server_refuses(fx, &m, LLMLINK_ROLE_NOT_ALLOWED, NULL);
    m.expected_server_role = LLMLINK_ROLE_MIX;
    server_refuses(fx, &m, LLMLINK_ROLE_NOT_ALLOWED, NULL);

    /* 0 = any role, and the engine's own role, are accepted. */
    static const uint32_t ok[] = {0, LLMLINK_ROLE_PROMPT};
    for (size_t i = 0; i < ARRAY_LEN(ok); i++) {
        llk_conn_t *c = accept_conn(fx, T0);
        m = hello_msg(CLI_ID + 1 + i, SRV_ID);
        m.expected_server_role = ok[i];
        send_hello(fx, c, &m, T0);
        assert_state(c, LLK_CONN_LINKED);
    }
}

static void test_server_hello_expected_role_mix_engine(void **state)
{
    /* A MIX engine answers to "MIX" and "any", not to "PROMPT". */
    fx_t *fx = *state;
    llk_msg_hello_t m = hello_msg(CLI_ID, MIX_ID);
    m.expected_server_role = LLMLINK_ROLE_PROMPT;
    server_refuses(fx, &m, LLMLINK_ROLE_NOT_ALLOWED, NULL);
    m.expected_server_role = LLMLINK_ROLE_MIX;
    llk_conn_t *c = accept_conn(fx, T0);
    send_hello(fx, c, &m, T0);
    assert_state(c, LLK_CONN_LINKED);
    llk_msg_welcome_t w;
    assert_tx_welcome(c, &w);
    assert_int_equal(w.server_role, LLMLINK_ROLE_MIX);
}

static void test_server_hello_client_role(void **state)
{
    fx_t *fx = *state;
    llk_msg_hello_t m = hello_msg(CLI_ID, SRV_ID);
    m.client_role = LLMLINK_ROLE_PROMPT;
    server_refuses(fx, &m, LLMLINK_ROLE_NOT_ALLOWED, "PROMPT");

    /* DECODER and MIX clients may link. */
    static const uint32_t ok[] = {LLMLINK_ROLE_DECODER, LLMLINK_ROLE_MIX};
    for (size_t i = 0; i < ARRAY_LEN(ok); i++) {
        llk_conn_t *c = accept_conn(fx, T0);
        m = hello_msg(CLI_ID + 1 + i, SRV_ID);
        m.client_role = ok[i];
        send_hello(fx, c, &m, T0);
        assert_state(c, LLK_CONN_LINKED);
    }
}

static void test_server_hello_extensions(void **state)
{
    fx_t *fx = *state;
    llk_msg_hello_t m = hello_msg(CLI_ID, SRV_ID);
    m.num_ext = 2;
    m.ext[0] = (llk_ext_t){0x0001, 3, (const uint8_t *)"abc"};
    m.ext[1] = (llk_ext_t){0x8123, 0, NULL};
    server_refuses(fx, &m, LLMLINK_PROTOCOL_ERROR, "0x8123");

    /* Unknown non-critical extensions are skipped. */
    m.num_ext = 2;
    m.ext[1] = (llk_ext_t){0x7123, 2, (const uint8_t *)"xy"};
    llk_conn_t *c = accept_conn(fx, T0);
    send_hello(fx, c, &m, T0);
    assert_state(c, LLK_CONN_LINKED);
}

/* The client's llm.SyncKvCacheWaitTime lands on the link; the smaller of
 * the two bounds its requests. A malformed one is ignored: the link is
 * made, with the server's own. */
static void test_server_hello_wait_time(void **state)
{
    fx_t *fx = *state;
    uint8_t buf[4];
    llk_msg_hello_t m = hello_msg(CLI_ID, SRV_ID);
    m.num_ext = 1;
    llk_wire_ext_wait_time(&m.ext[0], buf, 50);
    llk_conn_t *c = accept_conn(fx, T0);
    send_hello(fx, c, &m, T0);
    assert_state(c, LLK_CONN_LINKED);
    assert_int_equal(llk_xlink_wait_ms(llk_xlink_of(c), 5000), 50);
    assert_int_equal(llk_xlink_wait_ms(llk_xlink_of(c), 20), 20);
    destroy(fx, c);

    static const uint8_t zero[4] = {0, 0, 0, 0};
    m.ext[0] = (llk_ext_t){LLK_EXT_WAIT_TIME, 4, zero};
    c = accept_conn(fx, T0);
    send_hello(fx, c, &m, T0);
    assert_state(c, LLK_CONN_LINKED);
    assert_int_equal(llk_xlink_wait_ms(llk_xlink_of(c), 5000), 5000);
    destroy(fx, c);

    m.ext[0] = (llk_ext_t){LLK_EXT_WAIT_TIME, 2, zero}; /* bad length */
    c = accept_conn(fx, T0);
    send_hello(fx, c, &m, T0);
    assert_state(c, LLK_CONN_LINKED);
    assert_int_equal(llk_xlink_wait_ms(llk_xlink_of(c), 5000), 5000);
}

static void test_server_not_hello_first(void **state)
{
    fx_t *fx = *state;
    llmlink_t *e = fx->e;
    static const llk_msg_type_t types[] = {LLK_MSG_HEARTBEAT, LLK_MSG_UNLINK, LLK_MSG_UNLINK_ACK};
    for (size_t i = 0; i < ARRAY_LEN(types); i++) {
        llk_conn_t *c = accept_conn(fx, T0);
        send_simple(fx, c, types[i], T0);
        assert_state(c, LLK_CONN_CLOSING);
        llk_msg_reject_t r;
        assert_tx_reject(c, LLMLINK_PROTOCOL_ERROR, &r);
        assert_non_null(strstr(r.message, "HELLO"));
        assert_int_equal(e->protocol_errors, i + 1);
        assert_int_equal(e->hs_rejected, i + 1);
        assert_int_equal(e->hs_in_progress, 0);
        destroy(fx, c);
    }
    /* A WELCOME sent to a server is refused the same way. */
    llk_conn_t *c = accept_conn(fx, T0);
    llk_msg_welcome_t w = welcome_msg(SRV_ID, LLMLINK_ROLE_PROMPT, OPT_LIVENESS);
    send_welcome(fx, c, &w, T0);
    assert_state(c, LLK_CONN_CLOSING);
    llk_msg_reject_t r;
    assert_tx_reject(c, LLMLINK_PROTOCOL_ERROR, &r);
}

static void test_server_bad_hello_payload(void **state)
{
    fx_t *fx = *state;
    llmlink_t *e = fx->e;
    llk_msg_hello_t m = hello_msg(CLI_ID, SRV_ID);
    size_t n = llk_wire_encode_hello(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, &m);
    assert_true(n > LLK_WIRE_HEADER_SIZE);
    size_t len = n - LLK_WIRE_HEADER_SIZE;
    uint8_t payload[128];
    assert_true(len + 1 <= sizeof payload);
    memcpy(payload, fx->frame + LLK_WIRE_HEADER_SIZE, len);

    /* Truncated, and with a trailing byte. */
    const size_t lens[] = {0, 8, len - 1, len + 1};
    payload[len] = 0;
    for (size_t i = 0; i < ARRAY_LEN(lens); i++) {
        llk_conn_t *c = accept_conn(fx, T0);
        deliver_payload(fx, c, LLK_MSG_HELLO, payload, lens[i], T0);
        assert_state(c, LLK_CONN_CLOSING);
        llk_msg_reject_t r;
        assert_tx_reject(c, LLMLINK_PROTOCOL_ERROR, &r);
        assert_int_equal(e->protocol_errors, i + 1);
        destroy(fx, c);
    }
    /* Liveness out of range. */
    m.liveness_ms = LLK_LIVENESS_MIN_MS - 1;
    llk_conn_t *c = accept_conn(fx, T0);
    send_hello(fx, c, &m, T0);
    llk_msg_reject_t r;
    assert_tx_reject(c, LLMLINK_PROTOCOL_ERROR, &r);
    assert_non_null(strstr(r.message, "liveness"));
    assert_int_equal(e->hs_in_progress, 0);
    assert_int_equal(e->hs_completed, 0);
}

/* max_links counts LINKED + UNLINKING + outbound attempts in progress. */
static void test_server_link_limit(void **state)
{
    fx_t *fx = *state; /* MIX engine: it both links out and accepts */
    llmlink_t *e = fx->e;
    e->opts.max_links = 3;

    /* What does not count: handshakes, closing and dead connections, and
     * inbound connections in client states (none exist, but the rule is
     * "outbound attempts"). */
    (void)accept_conn(fx, T0);
    (void)conn_new(fx, false, LLK_CONN_CLOSING, 11);
    (void)conn_new(fx, true, LLK_CONN_CLOSING, 12);
    (void)conn_new(fx, true, LLK_CONN_DEAD, 13);
    (void)conn_new(fx, false, LLK_CONN_CLI_PENDING, 14);
    assert_int_equal(llk_conn_count_links(e, true), 0);

    /* One link, one unlinking link, one pending outbound attempt. */
    llk_conn_t *l1 = inbound_link(fx, 21, OPT_LIVENESS, T0);
    llk_conn_t *l2 = inbound_link(fx, 22, OPT_LIVENESS, T0);
    set_state(fx, l2, LLK_CONN_UNLINKING);
    llk_conn_t *p = conn_new(fx, true, LLK_CONN_CLI_PENDING, 23);
    assert_int_equal(llk_conn_count_links(e, true), 3);
    assert_int_equal(llk_conn_count_links(e, false), 2);

    llk_msg_hello_t m = hello_msg(24, MIX_ID);
    m.expected_server_role = 0;
    llk_conn_t *c = accept_conn(fx, T0);
    send_hello(fx, c, &m, T0);
    assert_state(c, LLK_CONN_CLOSING);
    llk_msg_reject_t r;
    assert_tx_reject(c, LLMLINK_CLUSTER_NUM_EXCEED_LIMIT, &r);
    assert_non_null(strstr(r.message, "3 links"));
    assert_int_equal(e->hs_completed, 2);
    assert_int_equal(e->hs_rejected, 1);

    /* Each kind frees a slot when it goes: the attempt moving through its
     * states still counts, until it dies. */
    set_state(fx, p, LLK_CONN_CLI_CONNECTING);
    c = accept_conn(fx, T0);
    send_hello(fx, c, &m, T0);
    assert_tx_reject(c, LLMLINK_CLUSTER_NUM_EXCEED_LIMIT, &r);
    set_state(fx, p, LLK_CONN_CLI_HELLO_SENT);
    c = accept_conn(fx, T0);
    send_hello(fx, c, &m, T0);
    assert_tx_reject(c, LLMLINK_CLUSTER_NUM_EXCEED_LIMIT, &r);

    set_state(fx, p, LLK_CONN_DEAD);
    c = accept_conn(fx, T0);
    send_hello(fx, c, &m, T0);
    assert_state(c, LLK_CONN_LINKED);
    assert_int_equal(llk_conn_count_links(e, true), 3);

    /* Full again; an unlinking link that finishes frees its slot. */
    m.client_cluster_id = 25;
    c = accept_conn(fx, T0);
    send_hello(fx, c, &m, T0);
    assert_tx_reject(c, LLMLINK_CLUSTER_NUM_EXCEED_LIMIT, &r);
    set_state(fx, l2, LLK_CONN_CLOSING);
    c = accept_conn(fx, T0);
    send_hello(fx, c, &m, T0);
    assert_state(c, LLK_CONN_LINKED);
    assert_state(l1, LLK_CONN_LINKED);
    assert_int_equal(e->hs_in_progress, 1); /* the first, never answered */
}

static void test_server_link_limit_boundary(void **state)
{
    fx_t *fx = *state;
    llmlink_t *e = fx->e;
    e->opts.max_links = 2;
    (void)inbound_link(fx, 31, OPT_LIVENESS, T0);
    (void)inbound_link(fx, 32, OPT_LIVENESS, T0); /* the limit itself is reachable */
    assert_int_equal(llk_conn_count_links(e, true), 2);
    llk_msg_hello_t m = hello_msg(33, SRV_ID);
    server_refuses(fx, &m, LLMLINK_CLUSTER_NUM_EXCEED_LIMIT, "2 links");
    assert_int_equal(llk_conn_count_links(e, true), 2);
}

static void test_server_hello_replaces_silent_link(void **state)
{
    /* The old link's peer sent nothing for its whole liveness interval:
     * it is dead (the timer pass would free it), and the same cluster
     * linking again replaces it. */
    fx_t *fx = *state;
    llmlink_t *e = fx->e;
    llk_conn_t *old = inbound_link(fx, CLI_ID, OPT_LIVENESS, T0);
    llk_conn_t *other = inbound_link(fx, CLI_ID + 1, OPT_LIVENESS, T0);

    int64_t later = T0 + OPT_LIVENESS;
    llk_conn_t *c = accept_conn(fx, later);
    llk_msg_hello_t m = hello_msg(CLI_ID, SRV_ID);
    m.incarnation = 0xABCDEFull; /* restarted */
    send_hello(fx, c, &m, later);
    assert_state(c, LLK_CONN_LINKED);
    assert_state(old, LLK_CONN_DEAD);
    assert_state(other, LLK_CONN_LINKED);
    assert_int_equal(c->remote_incarnation, 0xABCDEFull);
    assert_ptr_equal(llk_conn_find(e, CLI_ID, false), c);
    assert_int_equal(llk_conn_count_links(e, false), 2);
    assert_int_equal(e->hs_completed, 3);
    assert_int_equal(e->links_lost, 0);
    llk_msg_welcome_t w;
    assert_tx_welcome(c, &w);
}

static void test_server_hello_keeps_live_link(void **state)
{
    /* A HELLO claiming the cluster id of a link whose peer was heard within
     * its liveness interval is refused (ALREADY_LINK): the link stays, and
     * gets a heartbeat at once (a gone peer then fails it now). */
    fx_t *fx = *state;
    llmlink_t *e = fx->e;
    llk_conn_t *old = inbound_link(fx, CLI_ID, OPT_LIVENESS, T0);
    old->last_rx_ms = T0 - (int64_t)OPT_LIVENESS + 2; /* heard just within it at T0 + 1 */
    old->last_tx_ms = T0 - 100;
    llk_msg_hello_t m = hello_msg(CLI_ID, SRV_ID);
    m.incarnation = 0xBADull;
    server_refuses(fx, &m, LLMLINK_ALREADY_LINK, "linked already");
    assert_state(old, LLK_CONN_LINKED);
    assert_int_equal(old->remote_incarnation, hello_msg(CLI_ID, SRV_ID).incarnation);
    assert_int_equal(e->hs_claimed_live, 1);
    assert_tx_simple(old, LLK_MSG_HEARTBEAT);
    assert_int_equal(e->links_lost, 0);
}

static void test_server_hello_allowed_clusters(void **state)
{
    /* llmlink.AllowedClusters: an unlisted client is refused with
     * ACCESS_DENIED before its target id is even looked at (nothing about
     * this engine in the answer); a listed one links. */
    fx_t *fx = *state;
    llmlink_t *e = fx->e;
    const char *why = NULL;
    size_t at = 0;
    assert_int_equal(llk_cluster_list_parse(&e->opts.allowed_clusters, "7, 8", &why, &at), 0);
    llk_msg_hello_t m = hello_msg(CLI_ID, SRV_ID + 1); /* wrong target too */
    server_refuses(fx, &m, LLMLINK_ACCESS_DENIED, "AllowedClusters");
    assert_int_equal(e->hs_access_denied, 1);
    llk_conn_t *c = accept_conn(fx, T0);
    m = hello_msg(8, SRV_ID);
    send_hello(fx, c, &m, T0);
    assert_state(c, LLK_CONN_LINKED);
    assert_int_equal(e->hs_access_denied, 1);
}

static void test_server_hello_replaces_unlinking_link(void **state)
{
    /* The old link was being unlinked by this side: its waiter learns the
     * unlink failed (the peer never acknowledged it). */
    fx_t *fx = *state;
    llk_conn_t *old = inbound_link(fx, CLI_ID, OPT_LIVENESS, T0);
    llk_waiter_t w;
    waiter_init(&w);
    set_state(fx, old, LLK_CONN_UNLINKING);
    old->waiter = &w;
    old->deadline_ms = T0 + 1000;

    llk_conn_t *c = accept_conn(fx, T0 + 10);
    llk_msg_hello_t m = hello_msg(CLI_ID, SRV_ID);
    send_hello(fx, c, &m, T0 + 10);
    assert_state(c, LLK_CONN_LINKED);
    assert_state(old, LLK_CONN_DEAD);
    assert_waiter_done(&w, LLMLINK_UNLINK_FAILED);
    assert_null(old->waiter);
}

static void test_server_hello_replaces_at_limit(void **state)
{
    /* At the limit, the same cluster linking again takes its old slot. */
    fx_t *fx = *state;
    llmlink_t *e = fx->e;
    e->opts.max_links = 1;
    llk_conn_t *old = inbound_link(fx, CLI_ID, OPT_LIVENESS, T0);
    llk_conn_t *c = accept_conn(fx, T0 + OPT_LIVENESS);
    llk_msg_hello_t m = hello_msg(CLI_ID, SRV_ID);
    send_hello(fx, c, &m, T0 + OPT_LIVENESS); /* the old one fell silent */
    assert_state(old, LLK_CONN_DEAD);
    assert_state(c, LLK_CONN_LINKED);
    assert_int_equal(llk_conn_count_links(e, true), 1);

    /* Another cluster is still refused. */
    m = hello_msg(CLI_ID + 1, SRV_ID);
    server_refuses(fx, &m, LLMLINK_CLUSTER_NUM_EXCEED_LIMIT, NULL);
    assert_state(c, LLK_CONN_LINKED);
}

static void test_server_hello_keeps_outbound_link(void **state)
{
    /* MIX engine: its outbound link to cluster X is not the inbound link
     * from X; X linking in replaces nothing. */
    fx_t *fx = *state;
    llk_conn_t *out = outbound_link(fx, 42, OPT_LIVENESS, T0);
    llk_conn_t *c = accept_conn(fx, T0);
    llk_msg_hello_t m = hello_msg(42, MIX_ID);
    m.expected_server_role = 0;
    send_hello(fx, c, &m, T0);
    assert_state(c, LLK_CONN_LINKED);
    assert_state(out, LLK_CONN_LINKED);
    assert_ptr_equal(llk_conn_find(fx->e, 42, true), out);
    assert_ptr_equal(llk_conn_find(fx->e, 42, false), c);
}

/* ---- main ------------------------------------------------------------------------ */

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* server handshake accounting and age-out */
        P(test_hs_accounting_welcome),
        P(test_hs_accounting_reject),
        P(test_hs_accounting_age_out),
        P(test_hs_accounting_close),
        P(test_hs_accounting_destroy),
        P(test_hs_accounting_welcome_does_not_fit),
        P(test_hs_accounting_mixed_stats),
        P(test_hs_age_out_exact),
        P(test_hs_age_out_late_timer),
        /* server HELLO */
        P(test_server_hello_success),
        P(test_server_hello_liveness_is_min),
        P(test_server_hello_wrong_target),
        P(test_server_hello_expected_role),
        M(test_server_hello_expected_role_mix_engine),
        P(test_server_hello_client_role),
        P(test_server_hello_extensions),
        P(test_server_hello_wait_time),
        P(test_server_not_hello_first),
        P(test_server_bad_hello_payload),
        M(test_server_link_limit),
        P(test_server_link_limit_boundary),
        P(test_server_hello_replaces_silent_link),
        P(test_server_hello_keeps_live_link),
        P(test_server_hello_allowed_clusters),
        P(test_server_hello_replaces_unlinking_link),
        P(test_server_hello_replaces_at_limit),
        M(test_server_hello_keeps_outbound_link),
    };
    return cmocka_run_group_tests_name("link_server_hs: server handshake and limits", tests,
                                       link_fx_group_setup, link_fx_group_teardown);
}
