/*
 * test_wire_peer.c - the control-plane protocol against raw peers.
 *
 * Server side: a raw TCP client (rawpeer.h) speaks to a real PROMPT engine:
 * garbage, oversized and truncated frames, HELLOs of another version, with
 * an unknown critical extension or for another cluster, a second HELLO on
 * an established link, a peer that goes silent, and one that answers
 * heartbeats. The engine must close what is bad, REJECT what it can
 * explain (in a version-1 frame), count it in llmlink_get_stats, and keep
 * serving real clients.
 *
 * Client side: a raw fake server answers a real DECODER's HELLO with a
 * frame the test built: another version, another cluster id, REJECTs with
 * known and odd statuses, a close, garbage. Each must give the exact
 * per-cluster status, quickly (not by running into the timeout), and the
 * DECODER must close its connection.
 *
 * Single process, loopback only, ports from 127.0.0.1:0, bounded waits.
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
#include "link/wire.h"

#define PROMPT_ID 1u
#define DECODER_ID 2u
#define RAW_ID 77u /* the cluster id raw clients claim */
#define MAX_FDS 8
#define MAX_SRV 4
#define MAX_ENG 4
#define IO_MS 2000 /* bound of a raw read / close wait */

/* An unlink call on another thread (while the test plays the peer). */
typedef struct bg_unlink {
    llmlink_t *dd;
    uint64_t id;
    int32_t timeout;
    llmlink_status_t overall, status;
    int64_t elapsed;
    char error[512]; /* the thread's llmlink_last_error() after the call */
} bg_unlink_t;

typedef struct fx {
    llmlink_t *prompt;
    uint16_t port;
    llmlink_t *dec;
    llmlink_t *eng[MAX_ENG];
    size_t neng;
    int fds[MAX_FDS];
    size_t nfds;
    rawpeer_server_t *srv[MAX_SRV];
    size_t nsrv;
    uint8_t frame[LLK_WIRE_MAX_FRAME + 64];
    uint8_t payload[LLK_WIRE_MAX_PAYLOAD];
    char link_error[1024]; /* last_error right after fake_link's link call */
    pthread_t th;
    bool th_live;
    bg_unlink_t bg; /* lives here: a thread may outlive a failed assertion */
} fx_t;

static bool under_sanitizer(void)
{
    const char *s = getenv("LLMLINK_SANITIZER");
    return s && *s;
}

/* ---- fixture ---------------------------------------------------------- */

static llmlink_t *new_prompt(fx_t *fx, uint64_t id, const llmlink_option_t *extra, size_t n,
                             uint16_t *port)
{
    llmlink_option_t o[4] = {{"llm.listenIpInfo", "127.0.0.1:0"}};
    llmlink_t *e = NULL;
    assert_true(n < 4 && fx->neng < MAX_ENG);
    for (size_t i = 0; i < n; i++)
        o[1 + i] = extra[i];
    assert_int_equal(llmlink_create(&e, LLMLINK_ROLE_PROMPT, id), LLMLINK_SUCCESS);
    fx->eng[fx->neng++] = e;
    assert_int_equal(llmlink_init(e, o, 1 + n), LLMLINK_SUCCESS);
    assert_int_equal(llmlink_get_listen_port(e, 0, port), LLMLINK_SUCCESS);
    return e;
}

static int setup(void **state)
{
    fx_t *fx = test_calloc(1, sizeof *fx);
    assert_non_null(fx);
    *state = fx;
    fx->prompt = new_prompt(fx, PROMPT_ID, NULL, 0, &fx->port);
    assert_int_equal(llmlink_create(&fx->dec, LLMLINK_ROLE_DECODER, DECODER_ID), LLMLINK_SUCCESS);
    assert_int_equal(llmlink_init(fx->dec, NULL, 0), LLMLINK_SUCCESS);
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    if (fx->th_live)
        pthread_join(fx->th, NULL); /* bounded by its own timeout */
    llmlink_destroy(fx->dec);
    for (size_t i = 0; i < fx->neng; i++)
        llmlink_destroy(fx->eng[i]);
    for (size_t i = 0; i < fx->nfds; i++)
        rawpeer_close(fx->fds[i]);
    for (size_t i = 0; i < fx->nsrv; i++)
        rawpeer_server_stop(fx->srv[i]);
    test_free(fx);
    return 0;
}

/* ---- helpers ------------------------------------------------------------ */

/* Waits (bounded) until the engine has accepted n connections. */
static void wait_accepted(llmlink_t *e, uint64_t n)
{
    int64_t t0 = rawpeer_now_ms();
    for (int i = 0; i < IO_MS && stats_of(e).handshakes_accepted < n &&
                    rawpeer_now_ms() - t0 < IO_MS; i++)
        rawpeer_sleep_ms(2);
    assert_int_equal(stats_of(e).handshakes_accepted, n);
}

/* A raw connection to port, registered for teardown. */
static int raw_connect(fx_t *fx, uint16_t port)
{
    assert_true(fx->nfds < MAX_FDS);
    int fd = rawpeer_connect(port, IO_MS);
    assert_true(fd >= 0);
    fx->fds[fx->nfds++] = fd;
    return fd;
}

static void raw_send(int fd, const void *buf, size_t len)
{
    assert_int_equal(rawpeer_send(fd, buf, len, IO_MS), RAWPEER_OK);
}

static void assert_closed(int fd, const char *what)
{
    int rc = rawpeer_wait_closed(fd, IO_MS);
    if (rc != RAWPEER_OK)
        fail_msg("%s: the engine did not close the connection within %d ms (rc %d)", what, IO_MS,
                 rc);
}

/* Reads frames until one of `type` (skipping HEARTBEATs). */
static void recv_type(fx_t *fx, int fd, uint16_t type, llk_frame_header_t *h)
{
    for (int i = 0; i < 64; i++) {
        int rc = rawpeer_recv_frame(fd, h, fx->payload, sizeof fx->payload, IO_MS);
        if (rc != RAWPEER_OK)
            fail_msg("waiting for message type %u: rc %d", type, rc);
        if (h->type == type)
            return;
        if (h->type != LLK_MSG_HEARTBEAT)
            fail_msg("waiting for message type %u, got type %u", type, h->type);
    }
    fail_msg("no message type %u among 64 frames", type);
}

/* Sends frame, expects a version-1 REJECT with `want`, then the close. */
static void expect_reject(fx_t *fx, int fd, const uint8_t *frame, size_t n, llmlink_status_t want)
{
    llk_frame_header_t h;
    llk_msg_reject_t r;
    const char *why = NULL;
    raw_send(fd, frame, n);
    int rc = rawpeer_recv_frame(fd, &h, fx->payload, sizeof fx->payload, IO_MS);
    if (rc != RAWPEER_OK)
        fail_msg("expected a REJECT (%s), got rc %d", llmlink_status_name(want), rc);
    assert_int_equal(h.magic, LLK_WIRE_MAGIC);
    assert_int_equal(h.version, LLK_WIRE_VERSION);
    assert_int_equal(h.type, LLK_MSG_REJECT);
    assert_int_equal(h.flags, 0);
    if (llk_wire_decode_reject(fx->payload, h.length, &r, &why) != 0)
        fail_msg("the REJECT does not decode: %s", why);
    if (r.status != want)
        fail_msg("REJECT status %s (0x%08x), expected %s; message: %s",
                 llmlink_status_name(r.status), r.status, llmlink_status_name(want), r.message);
    assert_true(r.message[0] != '\0');
    assert_closed(fd, "after REJECT");
}

/* A valid HELLO from RAW_ID; reads the WELCOME and checks it. */
static int raw_link(fx_t *fx, uint32_t liveness_ms)
{
    int fd = raw_connect(fx, fx->port);
    size_t n = rawpeer_hello(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, RAW_ID, PROMPT_ID,
                             liveness_ms);
    assert_true(n > 0);
    raw_send(fd, fx->frame, n);
    llk_frame_header_t h;
    assert_int_equal(rawpeer_recv_frame(fd, &h, fx->payload, sizeof fx->payload, IO_MS),
                     RAWPEER_OK);
    assert_int_equal(h.version, LLK_WIRE_VERSION);
    assert_int_equal(h.type, LLK_MSG_WELCOME);
    llk_msg_welcome_t w;
    const char *why = NULL;
    if (llk_wire_decode_welcome(fx->payload, h.length, &w, &why) != 0)
        fail_msg("the WELCOME does not decode: %s", why);
    assert_int_equal(w.server_cluster_id, PROMPT_ID);
    assert_int_equal(w.server_role, LLMLINK_ROLE_PROMPT);
    assert_status(llmlink_check_link_status(fx->prompt, RAW_ID), LLMLINK_SUCCESS);
    return fd;
}

static void header(uint8_t *out, uint16_t version, uint16_t type, uint32_t length, uint32_t flags)
{
    const uint8_t h[LLK_WIRE_HEADER_SIZE] = {
        'L', 'L', 'M', 'K',
        (uint8_t)(version >> 8), (uint8_t)version,
        (uint8_t)(type >> 8), (uint8_t)type,
        (uint8_t)(length >> 24), (uint8_t)(length >> 16), (uint8_t)(length >> 8), (uint8_t)length,
        (uint8_t)(flags >> 24), (uint8_t)(flags >> 16), (uint8_t)(flags >> 8), (uint8_t)flags,
    };
    memcpy(out, h, sizeof h);
}

static void link_dec_ok(fx_t *fx)
{
    llmlink_ip_info_t ip = {"127.0.0.1", fx->port};
    llmlink_cluster_info_t c = {PROMPT_ID, LLMLINK_ROLE_PROMPT, NULL, 0, &ip, 1};
    llmlink_status_t st = 0xDEADu;
    assert_status(llmlink_link_clusters(fx->dec, &c, 1, 5000, &st), LLMLINK_SUCCESS);
    assert_status(st, LLMLINK_SUCCESS);
}

/* ---- server side: bad bytes ---------------------------------------------- */

static void test_garbage_closed(void **state)
{
    fx_t *fx = *state;
    static const char garbage[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    int fd = raw_connect(fx, fx->port);
    wait_accepted(fx->prompt, 1);
    raw_send(fd, garbage, sizeof garbage - 1);
    assert_closed(fd, "garbage");
    llmlink_stats_t s = stats_of(fx->prompt);
    assert_int_equal(s.protocol_errors, 1);
    assert_int_equal(s.handshakes_in_progress, 0);
    assert_int_equal(s.links, 0);
    /* A real client still links. */
    link_dec_ok(fx);
    s = stats_of(fx->prompt);
    assert_int_equal(s.handshakes_completed, 1);
    assert_int_equal(s.protocol_errors, 1);
}

static void test_oversized_frame_closed(void **state)
{
    fx_t *fx = *state;
    static const uint32_t lengths[] = {LLK_WIRE_MAX_PAYLOAD + 1, 0xFFFFFFFFu};
    for (size_t i = 0; i < 2; i++) {
        int fd = raw_connect(fx, fx->port);
        header(fx->frame, LLK_WIRE_VERSION, LLK_MSG_HELLO, lengths[i], 0);
        raw_send(fd, fx->frame, LLK_WIRE_HEADER_SIZE);
        assert_closed(fd, "length > 4096");
        assert_int_equal(stats_of(fx->prompt).protocol_errors, i + 1);
    }
    assert_int_equal(stats_of(fx->prompt).handshakes_in_progress, 0);
    link_dec_ok(fx);
}

/* Unknown type, reserved flags: closed as protocol errors too. */
static void test_bad_type_or_flags_closed(void **state)
{
    fx_t *fx = *state;
    int fd = raw_connect(fx, fx->port);
    header(fx->frame, LLK_WIRE_VERSION, 99, 0, 0);
    raw_send(fd, fx->frame, LLK_WIRE_HEADER_SIZE);
    assert_closed(fd, "type 99");
    fd = raw_connect(fx, fx->port);
    size_t n = rawpeer_hello(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, RAW_ID, PROMPT_ID,
                             3000);
    fx->frame[15] = 1; /* flags */
    raw_send(fd, fx->frame, n);
    assert_closed(fd, "flags 1");
    /* A HEARTBEAT where a HELLO must come: refused. */
    fd = raw_connect(fx, fx->port);
    header(fx->frame, LLK_WIRE_VERSION, LLK_MSG_HEARTBEAT, 0, 0);
    raw_send(fd, fx->frame, LLK_WIRE_HEADER_SIZE);
    int rc = rawpeer_wait_closed(fd, IO_MS);
    assert_int_equal(rc, RAWPEER_OK);
    llmlink_stats_t s = stats_of(fx->prompt);
    assert_int_equal(s.protocol_errors, 3);
    assert_int_equal(s.links, 0);
    assert_int_equal(s.handshakes_in_progress, 0);
}

static void test_truncated_hello_times_out(void **state)
{
    fx_t *fx = *state;
    static const llmlink_option_t hs300[] = {{"llmlink.HandshakeTimeoutMs", "300"}};
    uint16_t port;
    llmlink_t *p = new_prompt(fx, 5, hs300, 1, &port);
    int64_t t0 = rawpeer_now_ms();
    int fd = raw_connect(fx, port);
    header(fx->frame, LLK_WIRE_VERSION, LLK_MSG_HELLO, 60, 0);
    memset(fx->frame + LLK_WIRE_HEADER_SIZE, 0, 10);
    raw_send(fd, fx->frame, LLK_WIRE_HEADER_SIZE + 10);
    wait_accepted(p, 1);
    assert_int_equal(stats_of(p).handshakes_in_progress, 1);
    assert_closed(fd, "truncated HELLO");
    int64_t elapsed = rawpeer_now_ms() - t0;
    if (elapsed < 290 || elapsed > 300 + 400)
        fail_msg("a half-open handshake (timeout 300 ms) was dropped after %lld ms",
                 (long long)elapsed);
    llmlink_stats_t s = stats_of(p);
    assert_int_equal(s.handshakes_timed_out, 1);
    assert_int_equal(s.handshakes_in_progress, 0);
    assert_int_equal(s.protocol_errors, 0);
    /* A connection that sends nothing at all: the same. */
    fd = raw_connect(fx, port);
    assert_closed(fd, "silent client");
    assert_int_equal(stats_of(p).handshakes_timed_out, 2);
}

/* ---- server side: refused HELLOs ----------------------------------------- */

static void test_hello_version2_rejected(void **state)
{
    fx_t *fx = *state;
    int fd = raw_connect(fx, fx->port);
    size_t n = rawpeer_hello(fx->frame, sizeof fx->frame, 2, RAW_ID, PROMPT_ID, 3000);
    expect_reject(fx, fd, fx->frame, n, LLMLINK_VERSION_MISMATCH);
    llmlink_stats_t s = stats_of(fx->prompt);
    assert_int_equal(s.handshakes_rejected, 1);
    assert_int_equal(s.links, 0);
    assert_int_equal(s.handshakes_in_progress, 0);
    assert_status(llmlink_check_link_status(fx->prompt, RAW_ID), LLMLINK_NOT_YET_LINK);
    /* Version 0 and a future version with another payload size alike. */
    fd = raw_connect(fx, fx->port);
    header(fx->frame, 0, LLK_MSG_HELLO, 0, 0);
    expect_reject(fx, fd, fx->frame, LLK_WIRE_HEADER_SIZE, LLMLINK_VERSION_MISMATCH);
    fd = raw_connect(fx, fx->port);
    header(fx->frame, 0xFFFF, 1, 7, 0xFFFFFFFFu);
    memset(fx->frame + LLK_WIRE_HEADER_SIZE, 0xEE, 7);
    expect_reject(fx, fd, fx->frame, LLK_WIRE_HEADER_SIZE + 7, LLMLINK_VERSION_MISMATCH);
    link_dec_ok(fx);
}

static void test_hello_unknown_critical_extension(void **state)
{
    fx_t *fx = *state;
    llk_msg_hello_t m;
    memset(&m, 0, sizeof m);
    m.client_cluster_id = RAW_ID;
    m.target_cluster_id = PROMPT_ID;
    m.client_role = LLMLINK_ROLE_DECODER;
    m.liveness_ms = 3000;
    m.num_ext = 2;
    m.ext[0] = (llk_ext_t){0x0042, 3, (const uint8_t *)"abc"}; /* unknown, not critical */
    m.ext[1] = (llk_ext_t){0x8042, 1, (const uint8_t *)"x"};   /* unknown, critical */
    size_t n = llk_wire_encode_hello(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, &m);
    assert_true(n > 0);
    int fd = raw_connect(fx, fx->port);
    expect_reject(fx, fd, fx->frame, n, LLMLINK_PROTOCOL_ERROR);
    assert_status(llmlink_check_link_status(fx->prompt, RAW_ID), LLMLINK_NOT_YET_LINK);
    /* Without the critical one, the unknown extension is skipped. */
    m.num_ext = 1;
    n = llk_wire_encode_hello(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, &m);
    fd = raw_connect(fx, fx->port);
    raw_send(fd, fx->frame, n);
    llk_frame_header_t h;
    recv_type(fx, fd, LLK_MSG_WELCOME, &h);
    assert_status(llmlink_check_link_status(fx->prompt, RAW_ID), LLMLINK_SUCCESS);
}

static void test_hello_wrong_target(void **state)
{
    fx_t *fx = *state;
    int fd = raw_connect(fx, fx->port);
    size_t n = rawpeer_hello(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, RAW_ID, 99, 3000);
    expect_reject(fx, fd, fx->frame, n, LLMLINK_CLUSTER_ID_MISMATCH);
    llmlink_stats_t s = stats_of(fx->prompt);
    assert_int_equal(s.handshakes_rejected, 1);
    assert_int_equal(s.links, 0);
    assert_status(llmlink_check_link_status(fx->prompt, RAW_ID), LLMLINK_NOT_YET_LINK);
}

/* A HELLO that claims to come from a PROMPT engine: only clients link. */
static void test_hello_from_prompt_role(void **state)
{
    fx_t *fx = *state;
    llk_msg_hello_t m;
    memset(&m, 0, sizeof m);
    m.client_cluster_id = RAW_ID;
    m.target_cluster_id = PROMPT_ID;
    m.client_role = LLMLINK_ROLE_PROMPT;
    m.liveness_ms = 3000;
    size_t n = llk_wire_encode_hello(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, &m);
    int fd = raw_connect(fx, fx->port);
    expect_reject(fx, fd, fx->frame, n, LLMLINK_ROLE_NOT_ALLOWED);
    /* Expecting a MIX server at a PROMPT engine: refused as well. */
    m.client_role = LLMLINK_ROLE_DECODER;
    m.expected_server_role = LLMLINK_ROLE_MIX;
    n = llk_wire_encode_hello(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, &m);
    fd = raw_connect(fx, fx->port);
    expect_reject(fx, fd, fx->frame, n, LLMLINK_ROLE_NOT_ALLOWED);
    assert_int_equal(stats_of(fx->prompt).links, 0);
}

/* ---- server side: established links -------------------------------------- */

static void test_second_hello_on_link(void **state)
{
    fx_t *fx = *state;
    int fd = raw_link(fx, 3000);
    llmlink_stats_t before = stats_of(fx->prompt);
    assert_int_equal(before.inbound_links, 1);
    size_t n = rawpeer_hello(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, RAW_ID, PROMPT_ID,
                             3000);
    raw_send(fd, fx->frame, n);
    assert_closed(fd, "second HELLO");
    assert_status(llmlink_check_link_status(fx->prompt, RAW_ID), LLMLINK_NOT_YET_LINK);
    llmlink_stats_t s = stats_of(fx->prompt);
    assert_int_equal(s.protocol_errors, before.protocol_errors + 1);
    assert_int_equal(s.links_lost, before.links_lost + 1);
    assert_int_equal(s.links, 0);
    link_dec_ok(fx);
}

/* Linked, then silent: the server frees the link within the liveness
 * interval the peer asked for. */
static void test_silent_peer_link_freed(void **state)
{
    fx_t *fx = *state;
    const int liveness = 300;
    int fd = raw_link(fx, (uint32_t)liveness);
    int64_t t0 = rawpeer_now_ms();
    int64_t t = -1;
    for (int i = 0; i < 3000 && rawpeer_now_ms() - t0 < 3000; i++) {
        if (llmlink_check_link_status(fx->prompt, RAW_ID) == LLMLINK_NOT_YET_LINK) {
            t = rawpeer_now_ms() - t0;
            break;
        }
        rawpeer_sleep_ms(2);
    }
    int margin = under_sanitizer() ? 500 : 250;
    if (t < 0 || t > liveness + margin)
        fail_msg("a silent peer (liveness %d ms) was dropped after %lld ms", liveness,
                 (long long)t);
    /* The WELCOME was read at t0: the link cannot have died much earlier. */
    if (t < liveness - 50)
        fail_msg("a peer (liveness %d ms) was dropped after only %lld ms", liveness,
                 (long long)t);
    assert_closed(fd, "silent peer");
    llmlink_stats_t s = stats_of(fx->prompt);
    assert_int_equal(s.links_lost, 1);
    assert_int_equal(s.links, 0);
}

/* A peer that answers heartbeats stays linked over 3 intervals; then it
 * unlinks with UNLINK and gets UNLINK_ACK. */
static void test_heartbeat_peer_stays_linked(void **state)
{
    fx_t *fx = *state;
    const int liveness = 300;
    int fd = raw_link(fx, (uint32_t)liveness);
    uint8_t hb[LLK_WIRE_HEADER_SIZE];
    assert_int_equal(llk_wire_encode_simple(hb, sizeof hb, LLK_WIRE_VERSION, LLK_MSG_HEARTBEAT),
                     sizeof hb);
    int beats = 0;
    int64_t t0 = rawpeer_now_ms();
    for (int i = 0; i < 1000 && rawpeer_now_ms() - t0 < 3 * liveness + 100; i++) {
        llk_frame_header_t h;
        int rc = rawpeer_recv_frame(fd, &h, fx->payload, sizeof fx->payload, 50);
        if (rc == RAWPEER_OK) {
            if (h.type != LLK_MSG_HEARTBEAT || h.length != 0)
                fail_msg("unexpected frame type %u (length %u) on the link", h.type, h.length);
            beats++;
            raw_send(fd, hb, sizeof hb);
        } else if (rc != RAWPEER_TIMEOUT) {
            fail_msg("the link broke after %lld ms and %d heartbeats (rc %d)",
                     (long long)(rawpeer_now_ms() - t0), beats, rc);
        }
        assert_status(llmlink_check_link_status(fx->prompt, RAW_ID), LLMLINK_SUCCESS);
    }
    /* The server beats about 3 times per interval. */
    if (beats < 3)
        fail_msg("only %d heartbeats in %d ms", beats, 3 * liveness + 100);
    llmlink_stats_t s = stats_of(fx->prompt);
    assert_int_equal(s.links_lost, 0);
    assert_int_equal(s.inbound_links, 1);

    /* The raw peer unlinks: the server acknowledges and frees the link. */
    uint8_t ul[LLK_WIRE_HEADER_SIZE + 4];
    assert_int_equal(llk_wire_encode_simple(ul, sizeof ul, LLK_WIRE_VERSION, LLK_MSG_UNLINK),
                     sizeof ul);
    raw_send(fd, ul, sizeof ul);
    llk_frame_header_t h;
    recv_type(fx, fd, LLK_MSG_UNLINK_ACK, &h);
    assert_int_equal(h.length, 0);
    assert_status(llmlink_check_link_status(fx->prompt, RAW_ID), LLMLINK_NOT_YET_LINK);
    assert_int_equal(stats_of(fx->prompt).links_lost, 0);
}

static void *bg_unlink_main(void *arg)
{
    bg_unlink_t *b = arg;
    llmlink_cluster_info_t c;
    memset(&c, 0, sizeof c);
    c.remote_cluster_id = b->id;
    int64_t t0 = rawpeer_now_ms();
    b->overall = llmlink_unlink_clusters(b->dd, &c, 1, b->timeout, false, &b->status);
    b->elapsed = rawpeer_now_ms() - t0;
    snprintf(b->error, sizeof b->error, "%s", llmlink_last_error());
    return NULL;
}

static void start_unlink(fx_t *fx, llmlink_t *dd, uint64_t id, int32_t timeout)
{
    fx->bg = (bg_unlink_t){.dd = dd, .id = id, .timeout = timeout, .status = 0xDEADu};
    assert_int_equal(pthread_create(&fx->th, NULL, bg_unlink_main, &fx->bg), 0);
    fx->th_live = true;
}

static void join_unlink(fx_t *fx)
{
    pthread_join(fx->th, NULL);
    fx->th_live = false;
}

/* The background unlink's result. */
static void assert_bg_unlink(fx_t *fx, llmlink_status_t overall, llmlink_status_t status)
{
    if (fx->bg.overall != overall || fx->bg.status != status)
        fail_msg("unlink of cluster %llu: %s / per-cluster %s, expected %s / %s; "
                 "last_error: %s", (unsigned long long)fx->bg.id,
                 llmlink_status_name(fx->bg.overall), llmlink_status_name(fx->bg.status),
                 llmlink_status_name(overall), llmlink_status_name(status), fx->bg.error);
}

/* The server unlinks a raw peer: UNLINK arrives, the peer's UNLINK_ACK
 * completes the call. */
static void test_server_unlink_raw_peer(void **state)
{
    fx_t *fx = *state;
    int fd = raw_link(fx, 3000);
    start_unlink(fx, fx->prompt, RAW_ID, 2000);
    llk_frame_header_t h;
    recv_type(fx, fd, LLK_MSG_UNLINK, &h);
    assert_int_equal(h.length, 4);
    uint8_t ack[LLK_WIRE_HEADER_SIZE];
    assert_int_equal(llk_wire_encode_simple(ack, sizeof ack, LLK_WIRE_VERSION,
                                            LLK_MSG_UNLINK_ACK), sizeof ack);
    raw_send(fd, ack, sizeof ack);
    join_unlink(fx);
    assert_bg_unlink(fx, LLMLINK_SUCCESS, LLMLINK_SUCCESS);
    if (fx->bg.elapsed > 1000)
        fail_msg("the unlink took %lld ms after the ACK", (long long)fx->bg.elapsed);
    assert_closed(fd, "after UNLINK_ACK");
    assert_status(llmlink_check_link_status(fx->prompt, RAW_ID), LLMLINK_NOT_YET_LINK);
}

/* The server unlinks a raw peer that answers the UNLINK with a bad frame:
 * the unlink fails with one of the unlink statuses, and the link is freed.
 * Two kinds of bad frame: a well-formed header of the wrong type (a HELLO)
 * and bytes that are not a frame at all. */
static void unlink_answered_badly(fx_t *fx, const void *answer, size_t n)
{
    int fd = raw_link(fx, 3000);
    uint64_t lost0 = stats_of(fx->prompt).links_lost;
    start_unlink(fx, fx->prompt, RAW_ID, 2000);
    llk_frame_header_t h;
    recv_type(fx, fd, LLK_MSG_UNLINK, &h);
    raw_send(fd, answer, n);
    join_unlink(fx);
    /* A PROMPT engine's unlink of an inbound link: UNLINK_FAILED (the
     * header lists SUCCESS, NOT_YET_LINK, PROCESSING_LINK,
     * NOTIFY_PROMPT_UNLINK_FAILED, UNLINK_FAILED). */
    assert_bg_unlink(fx, LLMLINK_UNLINK_FAILED, LLMLINK_UNLINK_FAILED);
    if (fx->bg.elapsed > 1000)
        fail_msg("the unlink took %lld ms after the bad answer", (long long)fx->bg.elapsed);
    assert_closed(fd, "after a bad answer to UNLINK");
    assert_status(llmlink_check_link_status(fx->prompt, RAW_ID), LLMLINK_NOT_YET_LINK);
    assert_int_equal(stats_of(fx->prompt).links_lost, lost0 + 1);
}

static void test_unlink_answered_with_wrong_frame(void **state)
{
    fx_t *fx = *state;
    size_t n = rawpeer_hello(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, RAW_ID, PROMPT_ID,
                             3000);
    unlink_answered_badly(fx, fx->frame, n);
}

static void test_unlink_answered_with_garbage(void **state)
{
    fx_t *fx = *state;
    static const char garbage[] = "this is not an llmlink frame";
    unlink_answered_badly(fx, garbage, sizeof garbage - 1);
}

/* A handshake slot held by a silent client: with one slot, the next
 * client waits in the accept queue (within its timeout) until the silent
 * one is aged out, then links. */
static void test_handshake_slot_waits(void **state)
{
    fx_t *fx = *state;
    static const llmlink_option_t opts[] = {{"llmlink.MaxConcurrentHandshakes", "1"},
                                            {"llmlink.HandshakeTimeoutMs", "300"}};
    uint16_t port;
    llmlink_t *p = new_prompt(fx, 6, opts, 2, &port);
    int64_t t0 = rawpeer_now_ms();
    int fd = raw_connect(fx, port);
    wait_accepted(p, 1);
    llmlink_ip_info_t ip = {"127.0.0.1", port};
    llmlink_cluster_info_t c = {6, LLMLINK_ROLE_PROMPT, NULL, 0, &ip, 1};
    llmlink_status_t st = 0xDEADu;
    assert_status(llmlink_link_clusters(fx->dec, &c, 1, 3000, &st), LLMLINK_SUCCESS);
    assert_status(st, LLMLINK_SUCCESS);
    int64_t elapsed = rawpeer_now_ms() - t0;
    if (elapsed < 290 || elapsed > 300 + 700)
        fail_msg("the second client linked after %lld ms (slot freed at ~300 ms)",
                 (long long)elapsed);
    assert_closed(fd, "aged-out handshake");
    llmlink_stats_t s = stats_of(p);
    assert_int_equal(s.handshakes_peak, 1);
    assert_int_equal(s.handshakes_timed_out, 1);
    assert_int_equal(s.handshakes_accepted, 2);
    assert_int_equal(s.inbound_links, 1);
}

/* ---- client side: a fake server answers the DECODER's HELLO --------------- */

/* Starts a fake server answering with reply, links the DECODER to it as
 * cluster `target`, expects per-cluster `want`, quickly, and checks the
 * HELLO the fake server got. */
static void fake_link(fx_t *fx, rawpeer_mode_t mode, const void *reply, size_t reply_len,
                      uint64_t target, llmlink_role_t remote_role, llmlink_status_t want)
{
    assert_true(fx->nsrv < MAX_SRV);
    rawpeer_server_t *srv = rawpeer_server_start(mode, reply, reply_len);
    assert_non_null(srv);
    fx->srv[fx->nsrv++] = srv;
    llmlink_ip_info_t ip = {"127.0.0.1", rawpeer_server_port(srv)};
    llmlink_cluster_info_t c = {target, remote_role, NULL, 0, &ip, 1};
    llmlink_status_t st = 0xDEADu;
    llmlink_clear_error();
    int64_t t0 = rawpeer_now_ms();
    llmlink_status_t overall = llmlink_link_clusters(fx->dec, &c, 1, 5000, &st);
    int64_t elapsed = rawpeer_now_ms() - t0;
    snprintf(fx->link_error, sizeof fx->link_error, "%s", llmlink_last_error());
    if (st != want)
        fail_msg("per-cluster status %s (0x%08x), expected %s; last_error: %s",
                 llmlink_status_name(st), st, llmlink_status_name(want), fx->link_error);
    assert_status(overall, want == LLMLINK_SUCCESS ? LLMLINK_SUCCESS : LLMLINK_LINK_FAILED);
    if (elapsed > 1000)
        fail_msg("the answer took %lld ms to act on (timeout 5000)", (long long)elapsed);

    llk_frame_header_t h;
    llk_msg_hello_t m;
    if (!rawpeer_server_last_hello(srv, &h, &m))
        fail_msg("the fake server got no valid HELLO");
    assert_int_equal(h.version, LLK_WIRE_VERSION);
    assert_int_equal(h.type, LLK_MSG_HELLO);
    assert_int_equal(m.client_cluster_id, DECODER_ID);
    assert_int_equal(m.target_cluster_id, target);
    assert_int_equal(m.client_role, LLMLINK_ROLE_DECODER);
    assert_int_equal(m.expected_server_role, (uint32_t)remote_role);
    assert_int_equal(m.liveness_ms, 3000); /* the default llmlink.LivenessIntervalMs */
    assert_int_equal(rawpeer_server_accepted(srv), 1);
    if (want != LLMLINK_SUCCESS) {
        /* Refused: the DECODER holds nothing and closed its socket. */
        assert_status(llmlink_check_link_status(fx->dec, target), LLMLINK_NOT_YET_LINK);
        assert_int_equal(stats_of(fx->dec).links, 0);
        if (!rawpeer_server_wait_all_closed(srv, 1000))
            fail_msg("the DECODER kept its connection open after a refused link");
    }
}

static void test_fake_welcome_version2(void **state)
{
    fx_t *fx = *state;
    size_t n = rawpeer_welcome(fx->frame, sizeof fx->frame, 2, 40, LLMLINK_ROLE_PROMPT);
    fake_link(fx, RAWPEER_REPLY, fx->frame, n, 40, LLMLINK_ROLE_PROMPT,
              LLMLINK_VERSION_MISMATCH);
    n = llk_wire_encode_reject(fx->frame, sizeof fx->frame, 2, LLMLINK_VERSION_MISMATCH, "v2");
    fake_link(fx, RAWPEER_REPLY, fx->frame, n, 41, LLMLINK_ROLE_PROMPT,
              LLMLINK_VERSION_MISMATCH);
}

static void test_fake_welcome_other_cluster_id(void **state)
{
    fx_t *fx = *state;
    size_t n = rawpeer_welcome(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, 4242,
                               LLMLINK_ROLE_PROMPT);
    fake_link(fx, RAWPEER_REPLY, fx->frame, n, 40, LLMLINK_ROLE_PROMPT,
              LLMLINK_CLUSTER_ID_MISMATCH);
}

/* Control: the fake server's WELCOME is right, so the link is made. */
static void test_fake_welcome_ok(void **state)
{
    fx_t *fx = *state;
    size_t n = rawpeer_welcome(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, 40,
                               LLMLINK_ROLE_PROMPT);
    fake_link(fx, RAWPEER_REPLY, fx->frame, n, 40, LLMLINK_ROLE_PROMPT, LLMLINK_SUCCESS);
    assert_status(llmlink_check_link_status(fx->dec, 40), LLMLINK_SUCCESS);
}

/* The client asked for a PROMPT engine; the WELCOME says MIX. A server
 * that does not check the role itself must not get the client linked. */
static void test_fake_welcome_wrong_role(void **state)
{
    fx_t *fx = *state;
    size_t n = rawpeer_welcome(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, 40,
                               LLMLINK_ROLE_MIX);
    fake_link(fx, RAWPEER_REPLY, fx->frame, n, 40, LLMLINK_ROLE_PROMPT,
              LLMLINK_ROLE_NOT_ALLOWED);
}

static void test_fake_reject_exceed_limit(void **state)
{
    fx_t *fx = *state;
    size_t n = llk_wire_encode_reject(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION,
                                      LLMLINK_CLUSTER_NUM_EXCEED_LIMIT, "full");
    fake_link(fx, RAWPEER_REPLY, fx->frame, n, 40, LLMLINK_ROLE_PROMPT,
              LLMLINK_CLUSTER_NUM_EXCEED_LIMIT);
    /* The server's message reaches last_error. */
    if (!strstr(fx->link_error, "full"))
        fail_msg("last_error lacks the REJECT message: %s", fx->link_error);
}

static void test_fake_reject_odd_status(void **state)
{
    fx_t *fx = *state;
    size_t n = llk_wire_encode_reject(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, 0x12345u,
                                      "odd");
    fake_link(fx, RAWPEER_REPLY, fx->frame, n, 40, LLMLINK_ROLE_PROMPT, LLMLINK_LINK_FAILED);
    /* A REJECT that carries SUCCESS is still a refusal. */
    n = llk_wire_encode_reject(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, LLMLINK_SUCCESS,
                               "ok?");
    fake_link(fx, RAWPEER_REPLY, fx->frame, n, 41, LLMLINK_ROLE_PROMPT, LLMLINK_LINK_FAILED);
    /* ALREADY_LINK is the server's word now (it holds a live link with our
     * id and keeps it): passed through, a refusal all the same. */
    n = llk_wire_encode_reject(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION,
                               LLMLINK_ALREADY_LINK, "");
    fake_link(fx, RAWPEER_REPLY, fx->frame, n, 42, LLMLINK_ROLE_PROMPT, LLMLINK_ALREADY_LINK);
}

static void test_fake_close_after_hello(void **state)
{
    fx_t *fx = *state;
    fake_link(fx, RAWPEER_CLOSE_AFTER_HELLO, NULL, 0, 40, LLMLINK_ROLE_PROMPT,
              LLMLINK_LINK_FAILED);
}

static void test_fake_garbage(void **state)
{
    fx_t *fx = *state;
    static const char garbage[] = "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n";
    fake_link(fx, RAWPEER_REPLY, garbage, sizeof garbage - 1, 40, LLMLINK_ROLE_PROMPT,
              LLMLINK_PROTOCOL_ERROR);
    assert_int_equal(stats_of(fx->dec).protocol_errors, 1);
}

/* Well-framed but wrong answers: a HEARTBEAT instead of a WELCOME, a
 * WELCOME with a bad field or an unknown critical extension. */
static void test_fake_bad_welcome(void **state)
{
    fx_t *fx = *state;
    size_t n = llk_wire_encode_simple(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION,
                                      LLK_MSG_HEARTBEAT);
    fake_link(fx, RAWPEER_REPLY, fx->frame, n, 40, LLMLINK_ROLE_PROMPT, LLMLINK_PROTOCOL_ERROR);

    n = rawpeer_welcome(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, 41, LLMLINK_ROLE_PROMPT);
    fx->frame[LLK_WIRE_HEADER_SIZE + 12] = 0; /* liveness_ms = 0 */
    fx->frame[LLK_WIRE_HEADER_SIZE + 13] = 0;
    fx->frame[LLK_WIRE_HEADER_SIZE + 14] = 0;
    fx->frame[LLK_WIRE_HEADER_SIZE + 15] = 0;
    fake_link(fx, RAWPEER_REPLY, fx->frame, n, 41, LLMLINK_ROLE_PROMPT, LLMLINK_PROTOCOL_ERROR);

    llk_msg_welcome_t w;
    memset(&w, 0, sizeof w);
    w.server_cluster_id = 42;
    w.server_role = LLMLINK_ROLE_PROMPT;
    w.liveness_ms = 3000;
    w.num_ext = 1;
    w.ext[0] = (llk_ext_t){0x8123, 0, NULL};
    n = llk_wire_encode_welcome(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, &w);
    fake_link(fx, RAWPEER_REPLY, fx->frame, n, 42, LLMLINK_ROLE_PROMPT, LLMLINK_PROTOCOL_ERROR);
}

/* The fake server WELCOMEs with liveness 300 ms, then never speaks: the
 * DECODER frees the link within that interval. */
static void test_fake_server_goes_silent(void **state)
{
    fx_t *fx = *state;
    llk_msg_welcome_t w;
    memset(&w, 0, sizeof w);
    w.server_cluster_id = 40;
    w.server_role = LLMLINK_ROLE_PROMPT;
    w.liveness_ms = 300;
    size_t n = llk_wire_encode_welcome(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, &w);
    fake_link(fx, RAWPEER_REPLY, fx->frame, n, 40, LLMLINK_ROLE_PROMPT, LLMLINK_SUCCESS);
    int64_t t0 = rawpeer_now_ms();
    int64_t t = -1;
    for (int i = 0; i < 3000 && rawpeer_now_ms() - t0 < 3000; i++) {
        if (llmlink_check_link_status(fx->dec, 40) == LLMLINK_NOT_YET_LINK) {
            t = rawpeer_now_ms() - t0;
            break;
        }
        rawpeer_sleep_ms(2);
    }
    int margin = under_sanitizer() ? 500 : 250;
    if (t < 0 || t > 300 + margin)
        fail_msg("a silent server (liveness 300 ms) was dropped after %lld ms", (long long)t);
    assert_int_equal(stats_of(fx->dec).links_lost, 1);
    if (!rawpeer_server_wait_all_closed(fx->srv[fx->nsrv - 1], 1000))
        fail_msg("the DECODER kept the dead link's socket open");
}

/* The fake server WELCOMEs, then never acknowledges the UNLINK: the
 * DECODER's unlink reports NOTIFY_PROMPT_UNLINK_FAILED at its timeout and
 * frees its own end. */
static void test_fake_server_never_acks_unlink(void **state)
{
    fx_t *fx = *state;
    size_t n = rawpeer_welcome(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, 40,
                               LLMLINK_ROLE_PROMPT);
    fake_link(fx, RAWPEER_REPLY, fx->frame, n, 40, LLMLINK_ROLE_PROMPT, LLMLINK_SUCCESS);
    llmlink_cluster_info_t c;
    memset(&c, 0, sizeof c);
    c.remote_cluster_id = 40;
    llmlink_status_t st = 0xDEADu;
    int64_t t0 = rawpeer_now_ms();
    assert_status(llmlink_unlink_clusters(fx->dec, &c, 1, 300, false, &st),
                  LLMLINK_UNLINK_FAILED);
    int64_t elapsed = rawpeer_now_ms() - t0;
    assert_status(st, LLMLINK_NOTIFY_PROMPT_UNLINK_FAILED);
    if (elapsed < 300 || elapsed > 300 + 250)
        fail_msg("unlink with timeout 300 took %lld ms", (long long)elapsed);
    assert_status(llmlink_check_link_status(fx->dec, 40), LLMLINK_NOT_YET_LINK);
    assert_int_equal(stats_of(fx->dec).links, 0);
}

/* While one call unlinks a cluster (the peer is slow to acknowledge),
 * another call's unlink or link of it gets PROCESSING_LINK. */
static void test_processing_unlink(void **state)
{
    fx_t *fx = *state;
    size_t n = rawpeer_welcome(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, 40,
                               LLMLINK_ROLE_PROMPT);
    fake_link(fx, RAWPEER_REPLY, fx->frame, n, 40, LLMLINK_ROLE_PROMPT, LLMLINK_SUCCESS);
    rawpeer_server_t *srv = fx->srv[fx->nsrv - 1];
    start_unlink(fx, fx->dec, 40, 1000);
    /* The unlink has started once the link no longer counts as live. */
    int64_t t0 = rawpeer_now_ms();
    for (int i = 0; i < IO_MS && llmlink_check_link_status(fx->dec, 40) == LLMLINK_SUCCESS &&
                    rawpeer_now_ms() - t0 < IO_MS; i++)
        rawpeer_sleep_ms(1);
    assert_status(llmlink_check_link_status(fx->dec, 40), LLMLINK_NOT_YET_LINK);
    llmlink_cluster_info_t c;
    llmlink_ip_info_t ip = {"127.0.0.1", rawpeer_server_port(srv)};
    memset(&c, 0, sizeof c);
    c.remote_cluster_id = 40;
    c.remote_ip_infos = &ip;
    c.num_remote_ip_infos = 1;
    llmlink_status_t st = 0xDEADu;
    assert_status(llmlink_unlink_clusters(fx->dec, &c, 1, 1000, false, &st),
                  LLMLINK_UNLINK_FAILED);
    assert_status(st, LLMLINK_PROCESSING_LINK);
    assert_status(llmlink_unlink_clusters(fx->dec, &c, 1, 1000, true, &st),
                  LLMLINK_UNLINK_FAILED);
    assert_status(st, LLMLINK_PROCESSING_LINK);
    assert_status(llmlink_link_clusters(fx->dec, &c, 1, 1000, &st), LLMLINK_LINK_FAILED);
    assert_status(st, LLMLINK_PROCESSING_LINK);
    join_unlink(fx);
    assert_bg_unlink(fx, LLMLINK_UNLINK_FAILED, LLMLINK_NOTIFY_PROMPT_UNLINK_FAILED);
    /* No second connection was made by the refused calls. */
    assert_int_equal(rawpeer_server_accepted(srv), 1);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_garbage_closed),
        T(test_oversized_frame_closed),
        T(test_bad_type_or_flags_closed),
        T(test_truncated_hello_times_out),
        T(test_hello_version2_rejected),
        T(test_hello_unknown_critical_extension),
        T(test_hello_wrong_target),
        T(test_hello_from_prompt_role),
        T(test_second_hello_on_link),
        T(test_silent_peer_link_freed),
        T(test_heartbeat_peer_stays_linked),
        T(test_server_unlink_raw_peer),
        T(test_unlink_answered_with_wrong_frame),
        T(test_unlink_answered_with_garbage),
        T(test_handshake_slot_waits),
        T(test_fake_welcome_version2),
        T(test_fake_welcome_other_cluster_id),
        T(test_fake_welcome_ok),
        T(test_fake_welcome_wrong_role),
        T(test_fake_reject_exceed_limit),
        T(test_fake_reject_odd_status),
        T(test_fake_close_after_hello),
        T(test_fake_garbage),
        T(test_fake_bad_welcome),
        T(test_fake_server_goes_silent),
        T(test_fake_server_never_acks_unlink),
        T(test_processing_unlink),
    };
#undef T
    return cmocka_run_group_tests_name("control-plane protocol against raw peers", tests, NULL,
                                       NULL);
}
