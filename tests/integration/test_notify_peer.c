/*
 * test_notify_peer.c - a hostile or broken peer speaking NOTIFY /
 * NOTIFY_ACK by hand (tests/common/rawpeer.h) to a real engine: every
 * malformed or misplaced frame breaks the link with a message, and nothing
 * is queued. Also a well-formed NOTIFY from the raw peer, to pin the wire
 * format from the outside (the ACK it gets, the notification queued).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmlink.h"
#include "llk_test.h"
#include "be_put.h"
#include "link/engine.h"
#include "rawpeer.h"

#define P_ID 1u
#define RAW_ID 77u
#define CAP (LLK_WIRE_MAX_NOTIFY_FRAME + 2048)

/* llmlink_notify from the PROMPT engine to the raw peer, on a thread. */
typedef struct bg_notify {
    llmlink_t *e;
    int32_t timeout_ms;
    char msg[16];
    llmlink_status_t st;
    char why[256];
    pthread_t th;
    bool started;
} bg_notify_t;

typedef struct fx {
    bg_notify_t bg[2];
    llmlink_t *p, *d;
    uint16_t port;
    int fd;
    rawpeer_server_t *srv;
    uint8_t f[CAP];
    uint8_t payload[CAP];
} fx_t;

/* WARN lines of the engines (any thread), for the "with a message" part. */
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_buf[16384];

static void on_log(llmlink_log_level_t level, const char *msg, void *ud)
{
    (void)ud;
    (void)level;
    pthread_mutex_lock(&log_mu);
    size_t n = strlen(log_buf);
    if (n + strlen(msg) + 2 < sizeof log_buf)
        snprintf(log_buf + n, sizeof log_buf - n, "%s\n", msg);
    pthread_mutex_unlock(&log_mu);
}

static bool logged(const char *needle)
{
    pthread_mutex_lock(&log_mu);
    bool yes = strstr(log_buf, needle) != NULL;
    pthread_mutex_unlock(&log_mu);
    return yes;
}

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    fx->fd = -1;
    pthread_mutex_lock(&log_mu);
    log_buf[0] = 0;
    pthread_mutex_unlock(&log_mu);
    llmlink_set_log_callback(on_log, NULL, LLMLINK_LOG_WARN);
    llmlink_option_t o[] = {{"llm.listenIpInfo", "127.0.0.1:0"}};
    assert_status(llmlink_create(&fx->p, LLMLINK_ROLE_PROMPT, P_ID), LLMLINK_SUCCESS);
    assert_status(llmlink_init(fx->p, o, 1), LLMLINK_SUCCESS);
    assert_status(llmlink_get_listen_port(fx->p, 0, &fx->port), LLMLINK_SUCCESS);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    llmlink_set_log_callback(NULL, NULL, LLMLINK_LOG_WARN);
    rawpeer_close(fx->fd); /* ends any sender still waiting (NOT_YET_LINK) */
    for (int i = 0; i < 2; i++)
        if (fx->bg[i].started)
            pthread_join(fx->bg[i].th, NULL); /* each is bounded by its timeout */
    rawpeer_server_stop(fx->srv);
    llmlink_destroy(fx->d);
    llmlink_destroy(fx->p);
    free(fx);
    return 0;
}

/* Reads frames until one of `type` (heartbeats may come first). */
static void recv_type(fx_t *fx, uint16_t type, llk_frame_header_t *h)
{
    for (int i = 0; i < 16; i++) {
        int rc = rawpeer_recv_frame(fx->fd, h, fx->payload, sizeof fx->payload, 5000);
        if (rc != RAWPEER_OK)
            fail_msg("waiting for type %u: rawpeer %d", type, rc);
        if (h->type == type)
            return;
        if (h->type != LLK_MSG_HEARTBEAT)
            fail_msg("got type %u, want %u", h->type, type);
    }
    fail_msg("no frame of type %u", type);
}

/* A raw client linked to the PROMPT engine (HELLO -> WELCOME). */
static void raw_link(fx_t *fx)
{
    fx->fd = rawpeer_connect(fx->port, 5000);
    assert_true(fx->fd >= 0);
    size_t n = rawpeer_hello(fx->f, sizeof fx->f, LLK_WIRE_VERSION, RAW_ID, P_ID, 3000);
    assert_int_equal(rawpeer_send(fx->fd, fx->f, n, 5000), RAWPEER_OK);
    llk_frame_header_t h;
    recv_type(fx, LLK_MSG_WELCOME, &h);
}

/* A raw client that announces notifications (LLK_EXT_NOTIFY), so that the
 * engine sends it some. */
static void raw_link_notify(fx_t *fx)
{
    fx->fd = rawpeer_connect(fx->port, 5000);
    assert_true(fx->fd >= 0);
    llk_msg_hello_t m;
    memset(&m, 0, sizeof m);
    m.client_cluster_id = RAW_ID;
    m.target_cluster_id = P_ID;
    m.client_role = LLMLINK_ROLE_DECODER;
    m.incarnation = 5;
    m.liveness_ms = 3000;
    m.num_ext = 1;
    m.ext[0].type = LLK_EXT_NOTIFY;
    size_t n = llk_wire_encode_hello(fx->f, sizeof fx->f, LLK_WIRE_VERSION, &m);
    assert_int_equal(rawpeer_send(fx->fd, fx->f, n, 5000), RAWPEER_OK);
    llk_frame_header_t h;
    recv_type(fx, LLK_MSG_WELCOME, &h);
    llk_msg_welcome_t w;
    const char *why = NULL;
    assert_int_equal(llk_wire_decode_welcome(fx->payload, h.length, &w, &why), 0);
    assert_true(llk_wire_has_ext(w.ext, w.num_ext, LLK_EXT_NOTIFY));
}

static void *bg_notify_main(void *arg)
{
    bg_notify_t *b = arg;
    b->st = llmlink_notify(b->e, RAW_ID, b->msg, strlen(b->msg), b->timeout_ms);
    snprintf(b->why, sizeof b->why, "%s", llmlink_last_error());
    return NULL;
}

static void bg_start(fx_t *fx, int i, const char *msg, int32_t timeout_ms)
{
    bg_notify_t *b = &fx->bg[i];
    b->e = fx->p;
    b->timeout_ms = timeout_ms;
    snprintf(b->msg, sizeof b->msg, "%s", msg);
    assert_int_equal(pthread_create(&b->th, NULL, bg_notify_main, b), 0);
    b->started = true;
}

static llmlink_status_t bg_join(fx_t *fx, int i)
{
    pthread_join(fx->bg[i].th, NULL);
    fx->bg[i].started = false;
    return fx->bg[i].st;
}

/* Reads the engine's next NOTIFY: its seq; checks the data. */
static uint64_t recv_notify(fx_t *fx, const char *msg)
{
    llk_frame_header_t h;
    recv_type(fx, LLK_MSG_NOTIFY, &h);
    uint64_t seq;
    const uint8_t *d;
    uint32_t len;
    const char *why = NULL;
    assert_int_equal(llk_wire_decode_notify(fx->payload, h.length, &seq, &d, &len, &why), 0);
    assert_int_equal(len, strlen(msg));
    assert_memory_equal(d, msg, len);
    return seq;
}

static void send_ack(fx_t *fx, uint64_t seq, uint32_t status)
{
    size_t n = llk_wire_encode_notify_ack(fx->f, sizeof fx->f, LLK_WIRE_VERSION, seq, status);
    assert_int_equal(rawpeer_send(fx->fd, fx->f, n, 5000), RAWPEER_OK);
}

/* The engine's NOTIFY as the peer sees it; an ACK QUEUE_FULL reaches the
 * sender as LLMLINK_NOTIFY_QUEUE_FULL, SUCCESS as SUCCESS; seqs count up. */
static void test_engine_sends(void **state)
{
    fx_t *fx = *state;
    raw_link_notify(fx);
    bg_start(fx, 0, "first", 5000);
    assert_int_equal(recv_notify(fx, "first"), 0);
    send_ack(fx, 0, LLMLINK_NOTIFY_QUEUE_FULL);
    assert_status(bg_join(fx, 0), LLMLINK_NOTIFY_QUEUE_FULL);
    assert_int_equal(atomic_load(&fx->p->xstats.notifies_refused_full), 1);
    bg_start(fx, 0, "second", 5000);
    assert_int_equal(recv_notify(fx, "second"), 1);
    send_ack(fx, 1, LLMLINK_SUCCESS);
    assert_status(bg_join(fx, 0), LLMLINK_SUCCESS);
    assert_int_equal(atomic_load(&fx->p->xstats.notifies_sent), 1);
    assert_int_equal(stats_of(fx->p).protocol_errors, 0);
}

/* A sender that timed out leaves; its late ACK is taken in order and the
 * link stays; the next send works. */
static void test_late_ack(void **state)
{
    fx_t *fx = *state;
    raw_link_notify(fx);
    bg_start(fx, 0, "late", 200);
    assert_int_equal(recv_notify(fx, "late"), 0);
    assert_status(bg_join(fx, 0), LLMLINK_TIMEOUT);
    send_ack(fx, 0, LLMLINK_SUCCESS);
    bg_start(fx, 0, "next", 5000);
    assert_int_equal(recv_notify(fx, "next"), 1);
    send_ack(fx, 1, LLMLINK_SUCCESS);
    assert_status(bg_join(fx, 0), LLMLINK_SUCCESS);
    assert_int_equal(stats_of(fx->p).protocol_errors, 0);
    assert_status(llmlink_check_link_status(fx->p, RAW_ID), LLMLINK_SUCCESS);
}

/* ACKs out of order (seq 1 before seq 0): the link breaks with a message
 * and both senders end NOT_YET_LINK, long before their timeout. */
static void test_ack_out_of_order(void **state)
{
    fx_t *fx = *state;
    raw_link_notify(fx);
    bg_start(fx, 0, "zero", 20000);
    assert_int_equal(recv_notify(fx, "zero"), 0);
    bg_start(fx, 1, "one", 20000);
    assert_int_equal(recv_notify(fx, "one"), 1);
    int64_t t0 = rawpeer_now_ms();
    uint64_t before = stats_of(fx->p).protocol_errors;
    send_ack(fx, 1, LLMLINK_SUCCESS);
    assert_status(bg_join(fx, 0), LLMLINK_NOT_YET_LINK);
    assert_status(bg_join(fx, 1), LLMLINK_NOT_YET_LINK);
    assert_true(rawpeer_now_ms() - t0 < 5000);
    assert_non_null(strstr(fx->bg[0].why, "died"));
    assert_int_equal(rawpeer_wait_closed(fx->fd, 5000), RAWPEER_OK);
    assert_int_equal(stats_of(fx->p).protocol_errors, before + 1);
    assert_true(logged("not sent or already answered"));
}

/* A NOTIFY frame by hand: header length hdr_len, len field, n data bytes. */
static size_t hand_notify(fx_t *fx, uint32_t hdr_len, uint32_t len_field, size_t n)
{
    memcpy(fx->f, "LLMK", 4);
    put_be16(fx->f + 4, LLK_WIRE_VERSION);
    put_be16(fx->f + 6, LLK_MSG_NOTIFY);
    put_be32(fx->f + 8, hdr_len);
    put_be32(fx->f + 12, 0);
    put_be64(fx->f + 16, 0);
    put_be32(fx->f + 24, len_field);
    memset(fx->f + 28, 0xA5, n);
    return 28 + n;
}

/* The engine drops the connection, counts a protocol error, queues
 * nothing, and the link is gone. */
static void assert_broken(fx_t *fx, uint64_t errors_before)
{
    assert_int_equal(rawpeer_wait_closed(fx->fd, 5000), RAWPEER_OK);
    int64_t deadline = rawpeer_now_ms() + 5000;
    while (stats_of(fx->p).protocol_errors == errors_before && rawpeer_now_ms() < deadline)
        rawpeer_sleep_ms(5);
    assert_int_equal(stats_of(fx->p).protocol_errors, errors_before + 1);
    llmlink_notification_t out[1];
    size_t cnt = 9;
    assert_status(llmlink_get_notifies(fx->p, out, 1, &cnt), LLMLINK_SUCCESS);
    assert_int_equal(cnt, 0);
    assert_int_equal(atomic_load(&fx->p->xstats.notifies_received), 0);
    assert_status(llmlink_check_link_status(fx->p, RAW_ID), LLMLINK_NOT_YET_LINK);
}

/* Sends the frame; the link breaks with a WARN that contains `why`. */
static void send_bad(fx_t *fx, size_t n, const char *why)
{
    uint64_t before = stats_of(fx->p).protocol_errors;
    assert_int_equal(rawpeer_send(fx->fd, fx->f, n, 5000), RAWPEER_OK);
    assert_broken(fx, before);
    if (!logged(why)) {
        pthread_mutex_lock(&log_mu);
        fail_msg("no WARN with \"%s\" in:\n%s", why, log_buf);
    }
}

/* A well-formed NOTIFY: ACK SUCCESS with its seq, queued with the
 * sender's cluster id, the event descriptor set. */
static void test_good_notify(void **state)
{
    fx_t *fx = *state;
    raw_link(fx);
    size_t n = hand_notify(fx, 12 + 4096, 4096, 4096);
    put_be64(fx->f + 16, 0); /* seq 0 */
    assert_int_equal(rawpeer_send(fx->fd, fx->f, n, 5000), RAWPEER_OK);
    llk_frame_header_t h;
    recv_type(fx, LLK_MSG_NOTIFY_ACK, &h);
    assert_int_equal(h.length, 12);
    static const uint8_t ack[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    assert_memory_equal(fx->payload, ack, 12); /* seq 0, SUCCESS */
    llmlink_notification_t *out = malloc(sizeof *out);
    size_t cnt = 0;
    assert_status(llmlink_get_notifies(fx->p, out, 1, &cnt), LLMLINK_SUCCESS);
    assert_int_equal(cnt, 1);
    assert_int_equal(out->cluster_id, RAW_ID);
    assert_int_equal(out->len, 4096);
    for (size_t i = 0; i < 4096; i++)
        assert_int_equal(out->data[i], 0xA5);
    free(out);
    assert_int_equal(stats_of(fx->p).protocol_errors, 0);
}

/* len 5000 with 5000 bytes: the frame is over NOTIFY's limit (header). */
static void test_len_5000(void **state)
{
    fx_t *fx = *state;
    raw_link(fx);
    send_bad(fx, hand_notify(fx, 12 + 5000, 5000, 5000), "frame larger than the maximum");
}

/* len 5000 in a frame of legal size: the decoder refuses it. */
static void test_len_5000_short_frame(void **state)
{
    fx_t *fx = *state;
    raw_link(fx);
    send_bad(fx, hand_notify(fx, 12 + 100, 5000, 100), "longer than 4096");
}

static void test_len_0(void **state)
{
    fx_t *fx = *state;
    raw_link(fx);
    send_bad(fx, hand_notify(fx, 12, 0, 0), "empty notification");
}

static void test_len_mismatch(void **state)
{
    fx_t *fx = *state;
    raw_link(fx);
    send_bad(fx, hand_notify(fx, 12 + 50, 49, 50), "disagrees");
}

/* NOTIFY as the first frame, before any HELLO / WELCOME. */
static void test_notify_before_hello(void **state)
{
    fx_t *fx = *state;
    fx->fd = rawpeer_connect(fx->port, 5000);
    assert_true(fx->fd >= 0);
    size_t n = hand_notify(fx, 12 + 10, 10, 10);
    assert_int_equal(rawpeer_send(fx->fd, fx->f, n, 5000), RAWPEER_OK);
    llk_frame_header_t h;
    recv_type(fx, LLK_MSG_REJECT, &h);
    llk_msg_reject_t r;
    const char *why = NULL;
    assert_int_equal(llk_wire_decode_reject(fx->payload, h.length, &r, &why), 0);
    assert_int_equal(r.status, LLMLINK_PROTOCOL_ERROR);
    assert_non_null(strstr(r.message, "expected HELLO, got message type 13"));
    assert_int_equal(rawpeer_wait_closed(fx->fd, 5000), RAWPEER_OK);
    size_t cnt = 9;
    llmlink_notification_t out[1];
    assert_status(llmlink_get_notifies(fx->p, out, 1, &cnt), LLMLINK_SUCCESS);
    assert_int_equal(cnt, 0);
}

/* A server that answers HELLO with a NOTIFY instead of WELCOME: the
 * client's link fails and nothing is queued. */
static void test_notify_before_welcome(void **state)
{
    fx_t *fx = *state;
    size_t n = hand_notify(fx, 12 + 10, 10, 10);
    fx->srv = rawpeer_server_start(RAWPEER_REPLY, fx->f, n);
    assert_non_null(fx->srv);
    assert_status(llmlink_create(&fx->d, LLMLINK_ROLE_DECODER, 2), LLMLINK_SUCCESS);
    assert_status(llmlink_init(fx->d, NULL, 0), LLMLINK_SUCCESS);
    llmlink_ip_info_t ip = {.ip = "127.0.0.1", .port = rawpeer_server_port(fx->srv)};
    llmlink_cluster_info_t c;
    memset(&c, 0, sizeof c);
    c.remote_cluster_id = 9;
    c.remote_ip_infos = &ip;
    c.num_remote_ip_infos = 1;
    llmlink_status_t st = 0;
    assert_int_not_equal(llmlink_link_clusters(fx->d, &c, 1, 3000, &st), LLMLINK_SUCCESS);
    assert_status(st, LLMLINK_PROTOCOL_ERROR);
    assert_non_null(strstr(llmlink_last_error(), "type 13 during the handshake"));
    size_t cnt = 9;
    llmlink_notification_t out[1];
    assert_status(llmlink_get_notifies(fx->d, out, 1, &cnt), LLMLINK_SUCCESS);
    assert_int_equal(cnt, 0);
}

/* An ACK for a notification never sent. */
static void test_ack_unknown_seq(void **state)
{
    fx_t *fx = *state;
    raw_link(fx);
    size_t n = llk_wire_encode_notify_ack(fx->f, sizeof fx->f, LLK_WIRE_VERSION, 0,
                                          LLMLINK_SUCCESS);
    send_bad(fx, n, "not sent or already answered");
}

/* An ACK with a status other than SUCCESS / QUEUE_FULL. */
static void test_ack_bad_status(void **state)
{
    fx_t *fx = *state;
    raw_link(fx);
    size_t n = llk_wire_encode_notify_ack(fx->f, sizeof fx->f, LLK_WIRE_VERSION, 0,
                                          LLMLINK_SUCCESS);
    put_be32(fx->f + 24, LLMLINK_FAILED);
    send_bad(fx, n, "neither SUCCESS nor");
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        T(test_good_notify),         T(test_len_5000),
        T(test_len_5000_short_frame), T(test_len_0),
        T(test_len_mismatch),        T(test_notify_before_hello),
        T(test_notify_before_welcome), T(test_ack_unknown_seq),
        T(test_ack_bad_status),      T(test_engine_sends),
        T(test_late_ack),            T(test_ack_out_of_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
