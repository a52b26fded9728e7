/*
 * test_notify_wait.c - a sender of llk_notify_send (xfer/notify.c) waiting
 * for room in a connection's bulk queue: it times out with a message when
 * nobody drains it, ends NOT_YET_LINK at once when the link goes down, and
 * goes on when the queue drains (then completes on the ACK).
 *
 * The engine is made by llk_engine_create only and marked running (no
 * reactor: the test plays it, holding e->mu as the reactor does); the
 * link's fd is one end of a socketpair the test reads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "llmlink.h"
#include "llk_test.h"
#include "link/engine.h"
#include "xfer/notify.h"

#define PEER_ID 9u

typedef struct wfx {
    llmlink_t *e;
    llk_conn_t *c;
    int peer;
    pthread_t th;
    bool started;
    int32_t wait_ms;
    llmlink_status_t st;
    char why[256];
    int64_t elapsed;
} wfx_t;

static int setup(void **state)
{
    wfx_t *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    assert_int_equal(llk_engine_create(&fx->e, LLMLINK_ROLE_PROMPT, 1), LLMLINK_SUCCESS);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    fx->peer = sv[1];
    pthread_mutex_lock(&fx->e->mu);
    fx->e->state = LLK_ENGINE_RUNNING; /* the API checks it; nothing else runs */
    fx->c = llk_conn_new(fx->e, sv[0], false, LLK_CONN_LINKED);
    fx->c->remote_id = PEER_ID;
    fx->c->peer_notify = true;
    /* The bulk queue full: 16 frames of the largest size. */
    static uint8_t f[LLK_WIRE_MAX_NOTIFY_FRAME];
    static uint8_t data[LLK_NOTIFY_MAX_DATA];
    for (uint64_t i = 0; i < 16; i++) {
        size_t n = llk_wire_encode_notify(f, sizeof f, LLK_WIRE_VERSION, i, data, sizeof data);
        assert_true(llk_conn_queue_bulk(fx->c, f, n, LLK_NOTIFY_TX_LIMIT));
    }
    fx->c->notify_seq = 16; /* as if sent by senders that timed out */
    pthread_mutex_unlock(&fx->e->mu);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    wfx_t *fx = *state;
    pthread_mutex_lock(&fx->e->mu);
    if (fx->c)
        llk_conn_destroy(fx->e, fx->c); /* ends a sender still waiting */
    fx->e->state = LLK_ENGINE_FINALIZED;
    pthread_mutex_unlock(&fx->e->mu);
    if (fx->started)
        pthread_join(fx->th, NULL);
    close(fx->peer);
    llk_engine_free(fx->e);
    free(fx);
    return 0;
}

static void *sender(void *arg)
{
    wfx_t *fx = arg;
    static const char msg[] = "free 7";
    int64_t t0 = llk_now_ms();
    fx->st = llk_notify_send(fx->e, PEER_ID, msg, sizeof msg, t0 + fx->wait_ms, "test");
    fx->elapsed = llk_now_ms() - t0;
    snprintf(fx->why, sizeof fx->why, "%s", llmlink_last_error());
    return NULL;
}

static void start(wfx_t *fx, int32_t wait_ms)
{
    fx->wait_ms = wait_ms;
    assert_int_equal(pthread_create(&fx->th, NULL, sender, fx), 0);
    fx->started = true;
}

static void join(wfx_t *fx)
{
    pthread_join(fx->th, NULL);
    fx->started = false;
}

/* Waits (bounded) until the sender waits for room. */
static void wait_room_waiter(wfx_t *fx)
{
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&fx->e->mu);
        uint32_t n = fx->e->notify.room_waiters;
        pthread_mutex_unlock(&fx->e->mu);
        if (n)
            return;
        usleep(2000);
    }
    fail_msg("the sender never waited for room");
}

/* Nobody drains: TIMEOUT at its deadline, saying the peer is not reading. */
static void test_full_times_out(void **state)
{
    wfx_t *fx = *state;
    start(fx, 200);
    join(fx);
    assert_status(fx->st, LLMLINK_TIMEOUT);
    assert_true(fx->elapsed >= 200 && fx->elapsed < 2000);
    assert_non_null(strstr(fx->why, "not reading"));
}

/* The link goes down while the sender waits for room: NOT_YET_LINK at once. */
static void test_link_down_wakes(void **state)
{
    wfx_t *fx = *state;
    start(fx, 20000);
    wait_room_waiter(fx);
    pthread_mutex_lock(&fx->e->mu);
    llk_conn_set_state(fx->e, fx->c, LLK_CONN_DEAD);
    pthread_mutex_unlock(&fx->e->mu);
    join(fx);
    assert_status(fx->st, LLMLINK_NOT_YET_LINK);
    assert_true(fx->elapsed < 5000);
}

/* The reactor drains the queue: the sender queues its NOTIFY (seq 16),
 * and the ACK for it (after those of 0..15) completes it. */
static void test_drain_then_ack(void **state)
{
    wfx_t *fx = *state;
    llmlink_t *e = fx->e;
    start(fx, 20000);
    wait_room_waiter(fx);
    static uint8_t sink[1 << 16];
    bool queued = false;
    for (int round = 0; round < 2000 && !queued; round++) {
        pthread_mutex_lock(&e->mu);
        assert_int_equal(llk_conn_flush(e, fx->c, 1), 0);
        queued = fx->c->notify_seq == 17;
        pthread_mutex_unlock(&e->mu);
        while (recv(fx->peer, sink, sizeof sink, 0) > 0)
            ;
        usleep(1000);
    }
    assert_true(queued);
    /* The ACKs, as the reactor hands them on. */
    pthread_mutex_lock(&e->mu);
    for (uint64_t seq = 0; seq <= 16; seq++) {
        uint8_t f[LLK_WIRE_HEADER_SIZE + LLK_NOTIFY_ACK_PAYLOAD];
        size_t n = llk_wire_encode_notify_ack(f, sizeof f, LLK_WIRE_VERSION, seq,
                                              LLMLINK_SUCCESS);
        llk_frame_header_t h;
        llk_wire_read_header(f, &h);
        llk_conn_dispatch(e, fx->c, &h, f + LLK_WIRE_HEADER_SIZE, 1);
        assert_int_equal(n, sizeof f);
        assert_int_equal(fx->c->state, LLK_CONN_LINKED);
    }
    pthread_mutex_unlock(&e->mu);
    join(fx);
    assert_status(fx->st, LLMLINK_SUCCESS);
    assert_int_equal(atomic_load(&e->xstats.notifies_sent), 1);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_full_times_out),
        T(test_link_down_wakes),
        T(test_drain_then_ack),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
