/*
 * test_notify.c - notifications between engines of one process
 * (llmlink_notify, llmlink_get_notifies): a full queue, the event
 * descriptor, an older peer without notifications, mutual TLS, argument
 * checks. Between processes (order, a dead peer): test_notify_multiproc.c;
 * a hostile peer: test_notify_peer.c.
 *
 * The event descriptor is read as e->events.fd (link/engine.h) until
 * llmlink_get_event_fd is merged.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmlink.h"
#include "llk_test.h"
#include "link/engine.h"
#include "notify_fx.h"
#include "rawpeer.h"
#include "tls_env.h"
#include "xfer/notify_testing.h"

#define P_ID 1u
#define D_ID 2u

typedef struct fx {
    llmlink_t *eng[4];
    size_t neng;
    pthread_t th;
    bool th_started;
    nfx_sender_t snd;
} fx_t;

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    if (fx->th_started)
        pthread_join(fx->th, NULL); /* every send is bounded by its timeout */
    for (size_t i = 0; i < fx->neng; i++)
        if (fx->eng[i])
            llmlink_destroy(fx->eng[i]);
    free(fx);
    return 0;
}

static llmlink_t *fx_prompt(fx_t *fx, uint64_t id, const char *depth, uint16_t *port)
{
    llmlink_t *e = nfx_prompt_engine(id, depth, port);
    assert_non_null(e);
    fx->eng[fx->neng++] = e;
    return e;
}

static llmlink_t *fx_decoder(fx_t *fx, uint64_t id, bool legacy)
{
    llmlink_t *e = NULL;
    assert_status(llmlink_create(&e, LLMLINK_ROLE_DECODER, id), LLMLINK_SUCCESS);
    fx->eng[fx->neng++] = e;
    if (legacy)
        llk_test_set_legacy_notify(e, true);
    assert_status(llmlink_init(e, NULL, 0), LLMLINK_SUCCESS);
    return e;
}

static void link_to(llmlink_t *d, uint64_t id, uint16_t port)
{
    llmlink_ip_info_t ip = {.ip = "127.0.0.1", .port = port};
    llmlink_cluster_info_t c;
    memset(&c, 0, sizeof c);
    c.remote_cluster_id = id;
    c.remote_ip_infos = &ip;
    c.num_remote_ip_infos = 1;
    llmlink_status_t st = 0;
    assert_status(llmlink_link_clusters(d, &c, 1, 10000, &st), LLMLINK_SUCCESS);
    assert_status(st, LLMLINK_SUCCESS);
}

/* NotifyQueueDepth 4: the 5th gets NOTIFY_QUEUE_FULL and is not queued;
 * fetch one and the next send succeeds; order kept; counters on both. */
static void test_full_queue(void **state)
{
    fx_t *fx = *state;
    uint16_t port;
    llmlink_t *p = fx_prompt(fx, P_ID, "4", &port);
    llmlink_t *d = fx_decoder(fx, D_ID, false);
    link_to(d, P_ID, port);
    char m[16];
    for (int i = 0; i < 4; i++) {
        snprintf(m, sizeof m, "n%d", i);
        assert_status(llmlink_notify(d, P_ID, m, strlen(m), 5000), LLMLINK_SUCCESS);
    }
    assert_status(llmlink_notify(d, P_ID, "n4", 2, 5000), LLMLINK_NOTIFY_QUEUE_FULL);
    assert_non_null(strstr(llmlink_last_error(), "full"));
    llmlink_notification_t out[8];
    size_t cnt = 0;
    assert_status(llmlink_get_notifies(p, out, 1, &cnt), LLMLINK_SUCCESS);
    assert_int_equal(cnt, 1);
    assert_memory_equal(out[0].data, "n0", 2);
    assert_status(llmlink_notify(d, P_ID, "n5", 2, 5000), LLMLINK_SUCCESS);
    assert_status(llmlink_get_notifies(p, out, 8, &cnt), LLMLINK_SUCCESS);
    assert_int_equal(cnt, 4);
    static const char *want[] = {"n1", "n2", "n3", "n5"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(out[i].len, 2);
        assert_int_equal(out[i].cluster_id, D_ID);
        assert_memory_equal(out[i].data, want[i], 2);
    }
    assert_int_equal(atomic_load(&p->xstats.notifies_received), 5);
    assert_int_equal(atomic_load(&p->xstats.notifies_refused_full), 1);
    assert_int_equal(atomic_load(&d->xstats.notifies_sent), 5);
    assert_int_equal(atomic_load(&d->xstats.notifies_refused_full), 1);
}

static bool readable(const llmlink_t *e)
{
    struct pollfd p = {.fd = e->events.fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

/* The event descriptor is readable exactly while notifications wait, on
 * each side of the link (prompt -> decoder too). */
static void test_event_fd(void **state)
{
    fx_t *fx = *state;
    uint16_t port;
    llmlink_t *p = fx_prompt(fx, P_ID, NULL, &port);
    llmlink_t *d = fx_decoder(fx, D_ID, false);
    link_to(d, P_ID, port);
    assert_true(p->events.fd >= 0);
    assert_false(readable(p));
    assert_false(readable(d));
    assert_status(llmlink_notify(p, D_ID, "a", 1, 5000), LLMLINK_SUCCESS);
    assert_status(llmlink_notify(p, D_ID, "b", 1, 5000), LLMLINK_SUCCESS);
    /* SUCCESS means queued: readable already, and stays so when read. */
    assert_true(readable(d));
    assert_false(readable(p));
    llmlink_notification_t out[2];
    size_t cnt = 0;
    assert_status(llmlink_get_notifies(d, out, 1, &cnt), LLMLINK_SUCCESS);
    assert_int_equal(cnt, 1);
    assert_int_equal(out[0].cluster_id, P_ID);
    assert_true(readable(d));
    assert_status(llmlink_get_notifies(d, out, 2, &cnt), LLMLINK_SUCCESS);
    assert_int_equal(cnt, 1);
    assert_memory_equal(out[0].data, "b", 1);
    assert_false(readable(d));
    /* Nothing left: SUCCESS with 0; max 0 with out NULL is allowed. */
    assert_status(llmlink_get_notifies(d, out, 2, &cnt), LLMLINK_SUCCESS);
    assert_int_equal(cnt, 0);
    assert_status(llmlink_get_notifies(d, NULL, 0, &cnt), LLMLINK_SUCCESS);
    assert_false(readable(d));
}

/* A peer that did not announce notifications (an older llmlink): the send
 * is refused here, FEATURE_NOT_ENABLED, and the link stays up. */
static void test_peer_without_notifications(void **state)
{
    fx_t *fx = *state;
    uint16_t port;
    llmlink_t *p = fx_prompt(fx, P_ID, NULL, &port);
    llmlink_t *d = fx_decoder(fx, D_ID, true);
    link_to(d, P_ID, port);
    assert_status(llmlink_notify(d, P_ID, "x", 1, 2000), LLMLINK_FEATURE_NOT_ENABLED);
    assert_status(llmlink_notify(p, D_ID, "x", 1, 2000), LLMLINK_FEATURE_NOT_ENABLED);
    assert_non_null(strstr(llmlink_last_error(), "without notifications"));
    assert_status(llmlink_check_link_status(d, P_ID), LLMLINK_SUCCESS);
    assert_int_equal(stats_of(p).protocol_errors, 0);
}

static void test_arguments(void **state)
{
    fx_t *fx = *state;
    llmlink_t *e = NULL;
    assert_status(llmlink_create(&e, LLMLINK_ROLE_DECODER, D_ID), LLMLINK_SUCCESS);
    fx->eng[fx->neng++] = e;
    llmlink_notification_t out[1];
    size_t cnt = 7;
    uint8_t big[LLMLINK_MAX_NOTIFY_BYTES + 1] = {0};
    assert_status(llmlink_notify(e, P_ID, "x", 1, 100), LLMLINK_NOT_INITIALIZED);
    assert_status(llmlink_get_notifies(e, out, 1, &cnt), LLMLINK_NOT_INITIALIZED);
    assert_int_equal(cnt, 0);
    assert_status(llmlink_init(e, NULL, 0), LLMLINK_SUCCESS);
    const struct {
        llmlink_t *dd;
        const void *data;
        size_t len;
        int32_t timeout;
        const char *names;
    } bad[] = {
        {NULL, "x", 1, 100, "dd"},
        {(llmlink_t *)1, NULL, 1, 100, "data"},
        {(llmlink_t *)1, "x", 0, 100, "len"},
        {(llmlink_t *)1, big, LLMLINK_MAX_NOTIFY_BYTES + 1, 100, "len"},
        {(llmlink_t *)1, "x", 1, 0, "timeout_ms"},
        {(llmlink_t *)1, "x", 1, -1, "timeout_ms"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        llmlink_t *dd = bad[i].dd ? e : NULL;
        assert_status(llmlink_notify(dd, P_ID, bad[i].data, bad[i].len, bad[i].timeout),
                      LLMLINK_PARAM_INVALID);
        if (!strstr(llmlink_last_error(), bad[i].names))
            fail_msg("case %zu: \"%s\" does not name %s", i, llmlink_last_error(),
                     bad[i].names);
    }
    assert_status(llmlink_get_notifies(NULL, out, 1, &cnt), LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "dd"));
    assert_status(llmlink_get_notifies(e, NULL, 1, &cnt), LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "out"));
    assert_status(llmlink_get_notifies(e, out, 1, NULL), LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "count"));
    /* No link: NOT_YET_LINK at once. */
    assert_status(llmlink_notify(e, P_ID, "x", 1, 5000), LLMLINK_NOT_YET_LINK);
    assert_non_null(strstr(llmlink_last_error(), "no link"));
    llmlink_finalize(e);
    assert_status(llmlink_notify(e, P_ID, "x", 1, 100), LLMLINK_ENGINE_FINALIZED);
}

/* Over mutual TLS the control connection is wrapped by the relays: 500
 * notifications of 1..4096 bytes each way at once arrive whole and in
 * order (frames above the old 4096-byte limit cross the relay too). */
static void test_tls(void **state)
{
    fx_t *fx = *state;
    llmlink_option_t po[] = {{"llm.listenIpInfo", "127.0.0.1:0"},
                             {"llmlink.TlsCertFile", llk_test_tls_path("server.pem")},
                             {"llmlink.TlsKeyFile", llk_test_tls_path("server.key")},
                             {"llmlink.TlsCaFile", llk_test_tls_path("ca.pem")}};
    llmlink_option_t dop[] = {{"llmlink.TlsCertFile", llk_test_tls_path("client.pem")},
                              {"llmlink.TlsKeyFile", llk_test_tls_path("client.key")},
                              {"llmlink.TlsCaFile", llk_test_tls_path("ca.pem")}};
    llmlink_t *p = NULL, *d = NULL;
    assert_status(llmlink_create(&p, LLMLINK_ROLE_PROMPT, P_ID), LLMLINK_SUCCESS);
    fx->eng[fx->neng++] = p;
    assert_status(llmlink_init(p, po, 4), LLMLINK_SUCCESS);
    assert_status(llmlink_create(&d, LLMLINK_ROLE_DECODER, D_ID), LLMLINK_SUCCESS);
    fx->eng[fx->neng++] = d;
    assert_status(llmlink_init(d, dop, 3), LLMLINK_SUCCESS);
    uint16_t port = 0;
    assert_status(llmlink_get_listen_port(p, 0, &port), LLMLINK_SUCCESS);
    link_to(d, P_ID, port);
    fx->snd = (nfx_sender_t){.e = p, .peer = D_ID, .n = 500};
    assert_int_equal(pthread_create(&fx->th, NULL, nfx_send_all, &fx->snd), 0);
    fx->th_started = true;
    char why[512];
    if (nfx_exchange(d, P_ID, 500, why, sizeof why) != 0)
        fail_msg("decoder side: %s", why);
    if (nfx_receive_all(p, D_ID, 500, why, sizeof why) != 0)
        fail_msg("prompt side: %s", why);
    pthread_join(fx->th, NULL);
    fx->th_started = false;
    if (fx->snd.bad)
        fail_msg("prompt send %d: %s: %s", fx->snd.bad_index, llmlink_status_name(fx->snd.bad),
                 fx->snd.why);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        T(test_arguments),       T(test_full_queue),
        T(test_event_fd),        T(test_peer_without_notifications),
        T(test_tls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
