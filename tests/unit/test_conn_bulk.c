/*
 * test_conn_bulk.c - a connection's bulk queue (c->ntx, link/conn.c): the
 * NOTIFY / NOTIFY_ACK frames too large for the 1 KiB tx buffer.
 *
 * The property that matters is on the byte stream: the socket is made small
 * so that writes stop in the middle of frames, control frames are queued
 * in tx while a bulk frame is half written, and the peer's bytes must still
 * be whole frames, in the order each queue got them. Also: the queue's
 * bound, and what is left goes when the connection is freed.
 *
 * The engine is made by llk_engine_create only (no reactor); the
 * connection's fd is one end of a non-blocking socketpair.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "llmlink.h"
#include "link/engine.h"
#include "link/wire.h"

#define NOTIFIES 6
#define STREAM_CAP (NOTIFIES * LLK_WIRE_MAX_NOTIFY_FRAME + 4096)

typedef struct bfx {
    llmlink_t *e;
    llk_conn_t *c;
    int peer;
    uint8_t *got;
    size_t got_len;
} bfx_t;

static int setup(void **state)
{
    bfx_t *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    assert_int_equal(llk_engine_create(&fx->e, LLMLINK_ROLE_PROMPT, 1), LLMLINK_SUCCESS);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    int small = 1; /* the kernel's minimum */
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    fx->peer = sv[1];
    pthread_mutex_lock(&fx->e->mu);
    fx->c = llk_conn_new(fx->e, sv[0], false, LLK_CONN_LINKED);
    pthread_mutex_unlock(&fx->e->mu);
    assert_non_null(fx->c);
    fx->got = malloc(STREAM_CAP);
    assert_non_null(fx->got);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    bfx_t *fx = *state;
    pthread_mutex_lock(&fx->e->mu);
    if (fx->c)
        llk_conn_destroy(fx->e, fx->c); /* closes sv[0], frees ntx */
    pthread_mutex_unlock(&fx->e->mu);
    close(fx->peer);
    llk_engine_free(fx->e);
    free(fx->got);
    free(fx);
    return 0;
}

/* Reads what the peer end has (at most max bytes). */
static void peer_read(bfx_t *fx, size_t max)
{
    while (max && fx->got_len < STREAM_CAP) {
        size_t want = STREAM_CAP - fx->got_len < max ? STREAM_CAP - fx->got_len : max;
        ssize_t r = recv(fx->peer, fx->got + fx->got_len, want, 0);
        if (r <= 0)
            return;
        fx->got_len += (size_t)r;
        max -= (size_t)r;
    }
}

static void queue_notify(bfx_t *fx, uint64_t seq)
{
    static uint8_t data[LLK_NOTIFY_MAX_DATA];
    static uint8_t f[LLK_WIRE_MAX_NOTIFY_FRAME];
    memset(data, (int)(0x40 + seq), sizeof data);
    size_t n = llk_wire_encode_notify(f, sizeof f, LLK_WIRE_VERSION, seq, data, sizeof data);
    assert_int_equal(n, LLK_WIRE_MAX_NOTIFY_FRAME);
    assert_true(llk_conn_queue_bulk(fx->c, f, n, NOTIFIES * LLK_WIRE_MAX_NOTIFY_FRAME));
}

/* Bulk frames cut by small writes, heartbeats queued meanwhile: the peer
 * reads whole frames only, the notifications in order. */
static void test_frames_never_interleave(void **state)
{
    bfx_t *fx = *state;
    llmlink_t *e = fx->e;
    pthread_mutex_lock(&e->mu);
    for (uint64_t i = 0; i < NOTIFIES; i++)
        queue_notify(fx, i);
    unsigned heartbeats = 0, partial = 0;
    for (int round = 0; round < 10000 && (fx->c->ntx_len || fx->c->tx_len); round++) {
        assert_int_equal(llk_conn_flush(e, fx->c, 1), 0);
        if (fx->c->ntx_frame_left)
            partial++;
        if (round % 3 == 0 && llk_conn_queue_simple(fx->c, LLK_MSG_HEARTBEAT))
            heartbeats++;
        peer_read(fx, 777); /* odd-sized reads: writes stop anywhere */
    }
    assert_int_equal(fx->c->ntx_len, 0);
    assert_int_equal(fx->c->tx_len, 0);
    pthread_mutex_unlock(&e->mu);
    peer_read(fx, STREAM_CAP);
    assert_true(partial > 0); /* the case under test did happen */
    assert_true(heartbeats > 0);

    size_t off = 0;
    uint64_t next_seq = 0;
    unsigned hb = 0;
    while (off < fx->got_len) {
        assert_true(fx->got_len - off >= LLK_WIRE_HEADER_SIZE);
        llk_frame_header_t h;
        llk_wire_read_header(fx->got + off, &h);
        assert_int_equal(llk_wire_check_header(&h), LLK_HDR_OK);
        assert_true(fx->got_len - off - LLK_WIRE_HEADER_SIZE >= h.length);
        const uint8_t *p = fx->got + off + LLK_WIRE_HEADER_SIZE;
        const char *why = NULL;
        if (h.type == LLK_MSG_NOTIFY) {
            uint64_t seq;
            const uint8_t *d;
            uint32_t len;
            assert_int_equal(llk_wire_decode_notify(p, h.length, &seq, &d, &len, &why), 0);
            assert_int_equal(seq, next_seq);
            for (uint32_t k = 0; k < len; k++)
                assert_int_equal(d[k], 0x40 + seq);
            next_seq++;
        } else {
            assert_int_equal(h.type, LLK_MSG_HEARTBEAT);
            hb++;
        }
        off += LLK_WIRE_HEADER_SIZE + h.length;
    }
    assert_int_equal(next_seq, NOTIFIES);
    assert_int_equal(hb, heartbeats);
}

/* The bound: a frame that would take the queue past the limit is refused
 * and leaves it as it was. */
static void test_bound(void **state)
{
    bfx_t *fx = *state;
    uint8_t f[64] = {0};
    pthread_mutex_lock(&fx->e->mu);
    assert_true(llk_conn_queue_bulk(fx->c, f, 40, 100));
    assert_true(llk_conn_queue_bulk(fx->c, f, 60, 100));
    assert_false(llk_conn_queue_bulk(fx->c, f, 1, 100));
    assert_false(llk_conn_queue_bulk(fx->c, f, 0, 100));
    assert_int_equal(fx->c->ntx_len, 100);
    assert_true(fx->c->ntx_cap <= 100 || fx->c->ntx_cap <= 2 * LLK_WIRE_MAX_NOTIFY_FRAME);
    pthread_mutex_unlock(&fx->e->mu);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {T(test_frames_never_interleave), T(test_bound)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
