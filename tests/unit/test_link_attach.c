/*
 * test_link_attach.c - deterministic unit tests of an ATTACH arriving on a
 * server's handshake connection (core/xfer/streams.c llk_xfer_on_attach,
 * through server.c's frame handler): the refusals that come before any
 * ATTACH_OK.
 *
 * Driven without sockets, threads or a real clock: see
 * tests/common/link_fixture.h. A refused stream is CLOSING with its REJECT
 * queued; one that got as far as its ATTACH_OK would try to hand its
 * descriptor over, which fails here (no socket) and leaves it DEAD without
 * a REJECT: that difference is what these tests look at.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "base/options.h"
#include "link_fixture.h"
#include "xfer/xfer.h"

/* The ATTACH an honest client sends for stream `index` of the link that
 * inbound_link(fx, CLI_ID, ...) made (hello_msg's incarnation). */
static llk_msg_attach_t attach_msg(uint16_t index, uint8_t direction)
{
    llk_msg_attach_t m;
    memset(&m, 0, sizeof m);
    m.client_cluster_id = CLI_ID;
    m.server_cluster_id = SRV_ID;
    m.client_incarnation = 0xC0FFEE0000000000ull + CLI_ID;
    m.server_incarnation = ENGINE_INCARNATION;
    m.stream_index = index;
    m.direction = direction;
    m.transport = LLK_TRANSPORT_TCP;
    return m;
}

static void send_attach(fx_t *fx, llk_conn_t *c, const llk_msg_attach_t *m, int64_t now)
{
    size_t n = llk_wire_encode_attach(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, m);
    assert_true(n > 0);
    deliver(fx, c, fx->frame, n, now);
}

/* c was refused with a REJECT of this status whose message names `why`. */
static void assert_stream_refused(fx_t *fx, llk_conn_t *c, llmlink_status_t st, const char *why)
{
    assert_state(c, LLK_CONN_CLOSING);
    llk_msg_reject_t r;
    assert_tx_reject(c, st, &r);
    if (!strstr(r.message, why))
        fail_msg("REJECT message \"%s\" does not say \"%s\"", r.message, why);
    assert_int_equal(fx->e->hs_in_progress, 0);
}

static void test_attach_to_broken_link_refused(void **state)
{
    /* A transfer on the link failed: llk_xfer_kill_link breaks the xlink
     * first, and the reactor closes the control connection only at its
     * next timer pass. An ATTACH in between is refused before ATTACH_OK
     * (it used to be answered ATTACH_OK and then dropped: fuzz_attach). */
    fx_t *fx = *state;
    llk_conn_t *link = inbound_link(fx, CLI_ID, OPT_LIVENESS, T0);
    llk_xlink_t *xl = llk_xlink_of(link);
    assert_non_null(xl);
    llk_xlink_break(xl, "a transfer on the link failed");
    assert_state(link, LLK_CONN_LINKED);

    llk_conn_t *c = accept_conn(fx, T0 + 1);
    llk_msg_attach_t m = attach_msg(0, 0);
    send_attach(fx, c, &m, T0 + 1);
    assert_stream_refused(fx, c, LLMLINK_NOT_YET_LINK, "broken");
    /* Nothing was attached to the link. */
    for (int i = 0; i < LLK_MAX_STREAMS; i++) {
        assert_int_equal(xl->own_fd[i], -1);
        assert_int_equal(xl->req_fd[i], -1);
    }
}

static void test_attach_without_link_refused(void **state)
{
    /* The control: no link from that cluster at all. */
    fx_t *fx = *state;
    llk_conn_t *c = accept_conn(fx, T0);
    llk_msg_attach_t m = attach_msg(0, 1);
    send_attach(fx, c, &m, T0);
    assert_stream_refused(fx, c, LLMLINK_NOT_YET_LINK, "no link from cluster 200");
}

static void test_attach_to_live_link_goes_on(void **state)
{
    /* An unbroken link: the ATTACH passes every check and the stream is
     * handed over, which needs a socket (there is none here: it dies, no
     * REJECT). What the broken link's refusal is measured against. */
    fx_t *fx = *state;
    inbound_link(fx, CLI_ID, OPT_LIVENESS, T0);
    llk_conn_t *c = accept_conn(fx, T0 + 1);
    llk_msg_attach_t m = attach_msg(0, 1);
    send_attach(fx, c, &m, T0 + 1);
    assert_state(c, LLK_CONN_DEAD);
    assert_int_equal(fx->e->hs_in_progress, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        P(test_attach_to_broken_link_refused),
        P(test_attach_without_link_refused),
        P(test_attach_to_live_link_goes_on),
    };
    return cmocka_run_group_tests_name("link_attach: ATTACH on a server handshake connection",
                                       tests, link_fx_group_setup, link_fx_group_teardown);
}
