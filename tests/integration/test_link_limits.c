/*
 * test_link_limits.c - handshake limits that hold against a hostile peer
 * (issue 14, point 4): idle connections from raw sockets bound to
 * 127.0.0.2..127.0.0.5 must not keep an honest DECODER (from 127.0.0.1)
 * from linking to a PROMPT engine.
 *
 *  - llmlink.FirstFrameTimeoutMs: with 16 idle connections from 4 addresses
 *    (every slot taken), the honest client links
 *    once they are cut, well before llmlink.HandshakeTimeoutMs (10 s); with
 *    200 idle connections from 8 addresses, the same.
 *  - llmlink.MaxHandshakesPerAddress: 16 (and 200) idle connections from
 *    one address hold 4 slots, the rest wait parked, and the honest client
 *    from another address links within its usual time + 100 ms; the pool
 *    of parked connections is bounded (the oldest closed, counted).
 *  - data streams per link: a client that announced 4 streams in its HELLO
 *    (LLK_EXT_STREAM_COUNT) gets its 5th ATTACH refused with a reason, one
 *    that did not (an older client) keeps the old cap of 8 per direction
 *    (its 17th is refused), a malformed announcement refuses the HELLO, and
 *    an engine client with 8 streams per direction links.
 *  - heartbeat floor: a peer asking for a 30 ms liveness interval gets at
 *    most about one heartbeat per 100 ms.
 *
 * Times asserted are bounds that separate "let in" from "kept out for the
 * old 10 s handshake time-out", not speeds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "llmlink.h"
#include "rawpeer.h"
#include "transport/transport_testing.h"
#include "xfer/xfer.h"

#define PROMPT_ID 1u
#define DECODER_ID 2u
#define MAX_IDLE 256
#define LINK_TIMEOUT_MS 3000
#define WAIT_MS 3000 /* bound of every polling wait */

typedef struct fx {
    llmlink_t *prompt, *dec;
    uint16_t port;
    int idle[MAX_IDLE];
    size_t nidle;
    struct rlimit nofile; /* restored by the teardown when nofile_set */
    bool nofile_set;
} fx_t;

static llmlink_stats_t stats_of(llmlink_t *e)
{
    llmlink_stats_t s;
    memset(&s, 0, sizeof s);
    s.version = LLMLINK_STATS_VERSION;
    assert_int_equal(llmlink_get_stats(e, &s), LLMLINK_SUCCESS);
    return s;
}

static void start_prompt(fx_t *fx, const char *first_frame_ms)
{
    llmlink_option_t o[] = {{"llm.listenIpInfo", "127.0.0.1:0"},
                            {"llmlink.FirstFrameTimeoutMs", first_frame_ms}};
    assert_int_equal(llmlink_create(&fx->prompt, LLMLINK_ROLE_PROMPT, PROMPT_ID),
                     LLMLINK_SUCCESS);
    assert_int_equal(llmlink_init(fx->prompt, o, 2), LLMLINK_SUCCESS);
    assert_int_equal(llmlink_get_listen_port(fx->prompt, 0, &fx->port), LLMLINK_SUCCESS);
}

static int setup(void **state)
{
    fx_t *fx = test_calloc(1, sizeof *fx);
    assert_non_null(fx);
    assert_int_equal(llmlink_create(&fx->dec, LLMLINK_ROLE_DECODER, DECODER_ID),
                     LLMLINK_SUCCESS);
    assert_int_equal(llmlink_init(fx->dec, NULL, 0), LLMLINK_SUCCESS);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    for (size_t i = 0; i < fx->nidle; i++)
        rawpeer_close(fx->idle[i]);
    if (fx->nofile_set)
        setrlimit(RLIMIT_NOFILE, &fx->nofile);
    llmlink_destroy(fx->dec);
    if (fx->prompt)
        llmlink_destroy(fx->prompt);
    test_free(fx);
    return 0;
}

/* A connection from 127.0.0.<host> to the PROMPT engine that never sends a
 * byte. Non-blocking connect: the kernel completes it (or queues it) on its
 * own; the test does not wait for the engine to accept it. */
static void idle_from(fx_t *fx, int host)
{
    assert_true(fx->nidle < MAX_IDLE);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    fx->idle[fx->nidle++] = fd;
    struct sockaddr_in src = {.sin_family = AF_INET};
    char ip[16];
    snprintf(ip, sizeof ip, "127.0.0.%d", host);
    assert_int_equal(inet_pton(AF_INET, ip, &src.sin_addr), 1);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0)
        fail_msg("bind %s: %s", ip, strerror(errno));
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(fx->port)};
    dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = connect(fd, (struct sockaddr *)&dst, sizeof dst);
    if (rc != 0 && errno != EINPROGRESS)
        fail_msg("connect from %s: %s", ip, strerror(errno));
}

/* Waits (bounded) until the engine has dealt with n accepted-or-refused
 * connections, so the flood is in place before the honest client comes. */
static void wait_seen(fx_t *fx, uint64_t n)
{
    int64_t t0 = rawpeer_now_ms();
    llmlink_stats_t s = stats_of(fx->prompt);
    for (int i = 0; i < WAIT_MS && s.handshakes_accepted + s.handshakes_rejected < n &&
                    rawpeer_now_ms() - t0 < WAIT_MS;
         i++) {
        rawpeer_sleep_ms(2);
        s = stats_of(fx->prompt);
    }
    if (s.handshakes_accepted + s.handshakes_rejected < n)
        fail_msg("the engine saw %llu of %llu connections",
                 (unsigned long long)(s.handshakes_accepted + s.handshakes_rejected),
                 (unsigned long long)n);
}

/* Waits (bounded) until the engine holds `handshakes` handshakes and
 * `parked` parked connections: the flood is in place. */
static void wait_parked(fx_t *fx, uint32_t handshakes, uint32_t parked)
{
    int64_t t0 = rawpeer_now_ms();
    llk_test_park_stats_t ps = {0};
    for (int i = 0; i < WAIT_MS && rawpeer_now_ms() - t0 < WAIT_MS; i++) {
        llk_test_park_stats(fx->prompt, &ps);
        if (ps.in_handshake == handshakes && ps.parked == parked)
            return;
        rawpeer_sleep_ms(2);
    }
    fail_msg("the engine holds %u handshakes and %u parked, expected %u and %u (ever parked "
             "%llu, dropped %llu, timed out %llu, let in %llu)",
             ps.in_handshake, ps.parked, handshakes, parked, (unsigned long long)ps.parked_total,
             (unsigned long long)ps.dropped, (unsigned long long)ps.timed_out,
             (unsigned long long)ps.promoted);
}

/* The honest DECODER links from 127.0.0.1: its status and elapsed ms. */
static int64_t honest_link(fx_t *fx, llmlink_status_t *st)
{
    llmlink_ip_info_t ip = {.ip = "127.0.0.1", .port = fx->port};
    llmlink_cluster_info_t c = {.remote_cluster_id = PROMPT_ID,
                                .remote_role = LLMLINK_ROLE_PROMPT,
                                .remote_ip_infos = &ip,
                                .num_remote_ip_infos = 1};
    llmlink_status_t one = LLMLINK_FAILED;
    int64_t t0 = rawpeer_now_ms();
    *st = llmlink_link_clusters(fx->dec, &c, 1, LINK_TIMEOUT_MS, &one);
    return rawpeer_now_ms() - t0;
}

/* 16 idle connections from 127.0.0.2..5 (4 each) fill
 * every slot; the honest client waits in the accept queue and links once
 * they are cut at FirstFrameTimeoutMs (300 ms), long before the 10 s
 * handshake time-out. */
static void test_every_address_idle(void **state)
{
    fx_t *fx = *state;
    start_prompt(fx, "300");
    for (int host = 2; host <= 5; host++)
        for (int i = 0; i < 4; i++)
            idle_from(fx, host);
    wait_seen(fx, 16);
    assert_int_equal(stats_of(fx->prompt).handshakes_in_progress, 16);
    llmlink_status_t st;
    int64_t ms = honest_link(fx, &st);
    if (st != LLMLINK_SUCCESS || ms > 300 + 1000)
        fail_msg("with every slot idle the honest client got %s after %lld ms: %s",
                 llmlink_status_name(st), (long long)ms, llmlink_last_error());
    llmlink_stats_t s = stats_of(fx->prompt);
    assert_int_equal(s.inbound_links, 1);
    assert_true(s.handshakes_timed_out >= 16);
    /* The idle connections were closed by the engine. */
    for (size_t i = 0; i < fx->nidle; i++)
        assert_int_equal(rawpeer_wait_closed(fx->idle[i], WAIT_MS), RAWPEER_OK);
}

/* The honest client's usual link time here and now: the longer of two
 * link + unlink rounds with no flood. */
static int64_t usual_link_ms(fx_t *fx)
{
    int64_t usual = 0;
    for (int i = 0; i < 2; i++) {
        llmlink_status_t st;
        int64_t ms = honest_link(fx, &st);
        if (st != LLMLINK_SUCCESS)
            fail_msg("baseline link: %s: %s", llmlink_status_name(st), llmlink_last_error());
        usual = ms > usual ? ms : usual;
        llmlink_cluster_info_t c = {.remote_cluster_id = PROMPT_ID};
        llmlink_status_t one;
        assert_int_equal(llmlink_unlink_clusters(fx->dec, &c, 1, LINK_TIMEOUT_MS, false, &one),
                         LLMLINK_SUCCESS);
        int64_t t0 = rawpeer_now_ms();
        while (stats_of(fx->prompt).links != 0 && rawpeer_now_ms() - t0 < WAIT_MS)
            rawpeer_sleep_ms(2);
        assert_int_equal(stats_of(fx->prompt).links, 0);
    }
    return usual;
}

/* n idle connections from 127.0.0.2: 4 hold handshake slots (the cap per
 * address), the rest wait parked; an honest client from 127.0.0.1 links in
 * its usual time + 100 ms, while the idle ones still sit there. Without
 * the cap they would take all 16 slots for FirstFrameTimeoutMs (1000 ms). */
static void one_address_idle(fx_t *fx, int n)
{
    start_prompt(fx, "1000");
    int64_t usual = usual_link_ms(fx);
    for (int i = 0; i < n; i++)
        idle_from(fx, 2);
    wait_parked(fx, 4, (uint32_t)n - 4);
    llmlink_status_t st;
    int64_t ms = honest_link(fx, &st);
    print_message("honest link: %lld ms with %d idle connections from one address (usual "
                  "%lld ms)\n", (long long)ms, n, (long long)usual);
    if (st != LLMLINK_SUCCESS || ms > usual + 100)
        fail_msg("with %d idle connections from 127.0.0.2 the honest client got %s after %lld ms "
                 "(usual %lld ms): %s",
                 n, llmlink_status_name(st), (long long)ms, (long long)usual,
                 llmlink_last_error());
    llk_test_park_stats_t ps;
    llk_test_park_stats(fx->prompt, &ps);
    assert_true(ps.in_handshake <= 4); /* the idle ones never took more */
    assert_int_equal(ps.parked, (uint32_t)n - 4);
    assert_int_equal(stats_of(fx->prompt).inbound_links, 1);
    /* They are still cut at their first-frame deadline, parked or not. */
    for (size_t i = 0; i < fx->nidle; i++)
        assert_int_equal(rawpeer_wait_closed(fx->idle[i], WAIT_MS), RAWPEER_OK);
    llk_test_park_stats(fx->prompt, &ps);
    assert_int_equal(ps.parked, 0);
    assert_int_equal(ps.in_handshake, 0);
}

static void test_one_address_16_idle(void **state)
{
    one_address_idle(*state, 16);
}

static void test_one_address_200_idle(void **state)
{
    one_address_idle(*state, 200);
}

/* The parking pool is bounded (a quarter of RLIMIT_NOFILE here, 150): 200
 * idle connections from one address leave 4 in handshake and 150 parked,
 * the 46 oldest parked are closed and counted (dropped), and the honest client still
 * links in its usual time + 100 ms. */
static void test_park_pool_bounded(void **state)
{
    fx_t *fx = *state;
    struct rlimit low;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &fx->nofile), 0);
    fx->nofile_set = true; /* the teardown puts it back */
    low = fx->nofile;
    low.rlim_cur = 600;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    start_prompt(fx, "3000"); /* the flood stays in place while the test looks */
    int64_t usual = usual_link_ms(fx);
    llk_test_park_stats_t ps0, ps;
    llk_test_park_stats(fx->prompt, &ps0);
    for (int i = 0; i < 200; i++)
        idle_from(fx, 2);
    wait_parked(fx, 4, 150);
    /* Bounded: the engine may still be closing the last of the 46. */
    int64_t t0 = rawpeer_now_ms();
    do {
        llk_test_park_stats(fx->prompt, &ps);
        if (ps.dropped < 46)
            rawpeer_sleep_ms(2);
    } while (ps.dropped < 46 && rawpeer_now_ms() - t0 < WAIT_MS);
    assert_int_equal(ps.dropped, 46);
    /* Every accepted connection is parked first, those let in at once too. */
    assert_int_equal(ps.parked_total - ps0.parked_total, 200);
    llmlink_status_t st;
    int64_t ms = honest_link(fx, &st);
    if (st != LLMLINK_SUCCESS || ms > usual + 100)
        fail_msg("with the parking pool full the honest client got %s after %lld ms (usual "
                 "%lld ms): %s", llmlink_status_name(st), (long long)ms, (long long)usual,
                 llmlink_last_error());
}

/* 200 idle connections from 127.0.0.2..9 (25 each): 16 hold every slot,
 * 184 wait parked ahead of the honest client. It is let in, in arrival
 * order, once they reach their deadline (measured from their accept, so
 * all at about the same time), within FirstFrameTimeoutMs + its usual
 * time. */
static void test_every_address_idle_200(void **state)
{
    fx_t *fx = *state;
    start_prompt(fx, "300");
    int64_t usual = usual_link_ms(fx);
    int64_t t0 = rawpeer_now_ms();
    for (int i = 0; i < 25; i++)
        for (int host = 2; host <= 9; host++)
            idle_from(fx, host);
    wait_parked(fx, 16, 184);
    llmlink_status_t st;
    int64_t ms = honest_link(fx, &st);
    int64_t since_flood = rawpeer_now_ms() - t0;
    print_message("honest link: %lld ms after the 200 idle connections came (usual %lld ms)\n",
                  (long long)since_flood, (long long)usual);
    if (st != LLMLINK_SUCCESS || ms > 300 + usual + 100)
        fail_msg("with every slot idle the honest client got %s after %lld ms (usual %lld ms): %s",
                 llmlink_status_name(st), (long long)ms, (long long)usual, llmlink_last_error());
    for (size_t i = 0; i < fx->nidle; i++)
        assert_int_equal(rawpeer_wait_closed(fx->idle[i], WAIT_MS), RAWPEER_OK);
    llk_test_park_stats_t ps;
    llk_test_park_stats(fx->prompt, &ps);
    assert_int_equal(ps.parked, 0);
    /* Every idle one was cut at its deadline, parked or let in. */
    assert_true(stats_of(fx->prompt).handshakes_timed_out >= 200);
}

/* A trickle (one byte every 100 ms, never a whole HELLO) is cut too. */
static void test_trickle_cut(void **state)
{
    fx_t *fx = *state;
    start_prompt(fx, "300");
    int fd = rawpeer_connect(fx->port, WAIT_MS);
    assert_true(fd >= 0);
    fx->idle[fx->nidle++] = fd;
    uint8_t hello[LLK_WIRE_HEADER_SIZE + 256];
    size_t n = rawpeer_hello(hello, sizeof hello, LLK_WIRE_VERSION, 77, PROMPT_ID, 3000);
    assert_true(n > 10);
    int64_t t0 = rawpeer_now_ms();
    int rc = RAWPEER_OK;
    for (size_t i = 0; i < n - 1 && rc == RAWPEER_OK && rawpeer_now_ms() - t0 < WAIT_MS; i++) {
        rc = rawpeer_send(fd, hello + i, 1, 100);
        rawpeer_sleep_ms(100);
    }
    assert_int_equal(rawpeer_wait_closed(fd, WAIT_MS), RAWPEER_OK);
    int64_t ms = rawpeer_now_ms() - t0;
    if (ms > 300 + 1000)
        fail_msg("a trickling connection was cut after %lld ms (FirstFrameTimeoutMs 300)",
                 (long long)ms);
    assert_int_equal(stats_of(fx->prompt).handshakes_timed_out, 1);
    assert_int_equal(stats_of(fx->prompt).links, 0);
}

/* ---- data streams per link ------------------------------------------------ */

#define RAW_CLIENT_ID 900u
#define RAW_INCARNATION 0x5566778899aabbccull

/* A raw DECODER's HELLO with these extension bytes for
 * LLK_EXT_STREAM_COUNT (len 0: no such extension): the answer's type and,
 * for a REJECT, its status and message. Returns the control fd (kept open:
 * the link lives while it does) and the server's incarnation. */
static int raw_hello(fx_t *fx, const uint8_t *count, uint16_t len, uint16_t *type,
                     llk_msg_reject_t *rj, uint64_t *incarnation)
{
    int fd = rawpeer_connect(fx->port, WAIT_MS);
    assert_true(fd >= 0);
    assert_true(fx->nidle < MAX_IDLE);
    fx->idle[fx->nidle++] = fd;
    llk_msg_hello_t m = {.client_cluster_id = RAW_CLIENT_ID, .target_cluster_id = PROMPT_ID,
                         .client_role = LLMLINK_ROLE_DECODER, .incarnation = RAW_INCARNATION,
                         .liveness_ms = 20000};
    if (len) {
        m.ext[0] = (llk_ext_t){.type = LLK_EXT_STREAM_COUNT, .length = len, .data = count};
        m.num_ext = 1;
    }
    uint8_t f[LLK_WIRE_MAX_FRAME];
    size_t n = llk_wire_encode_hello(f, sizeof f, LLK_WIRE_VERSION, &m);
    assert_true(n > 0);
    assert_int_equal(rawpeer_send(fd, f, n, WAIT_MS), RAWPEER_OK);
    llk_frame_header_t h;
    assert_int_equal(rawpeer_recv_frame(fd, &h, f, sizeof f, WAIT_MS), RAWPEER_OK);
    *type = h.type;
    const char *why = NULL;
    if (h.type == LLK_MSG_REJECT) {
        assert_int_equal(llk_wire_decode_reject(f, h.length, rj, &why), 0);
    } else {
        llk_msg_welcome_t w;
        assert_int_equal(h.type, LLK_MSG_WELCOME);
        assert_int_equal(llk_wire_decode_welcome(f, h.length, &w, &why), 0);
        *incarnation = w.incarnation;
    }
    return fd;
}

/* ATTACH of stream (index, direction) to the raw link: the answer's type,
 * and the REJECT's status and message. The stream stays open (fx->idle). */
static uint16_t raw_attach(fx_t *fx, uint64_t incarnation, uint16_t index, uint8_t dir,
                           llk_msg_reject_t *rj)
{
    int fd = rawpeer_connect(fx->port, WAIT_MS);
    assert_true(fd >= 0);
    assert_true(fx->nidle < MAX_IDLE);
    fx->idle[fx->nidle++] = fd;
    llk_host_id_t me;
    llk_host_id_self(&me);
    llk_msg_attach_t a = {.client_cluster_id = RAW_CLIENT_ID, .server_cluster_id = PROMPT_ID,
                          .client_incarnation = RAW_INCARNATION,
                          .server_incarnation = incarnation, .stream_index = index,
                          .direction = dir, .transport = 0, .pidns = me.pidns, .pid = me.pid};
    memcpy(a.boot_id, me.boot_id, sizeof a.boot_id);
    uint8_t f[LLK_WIRE_MAX_FRAME];
    size_t n = llk_wire_encode_attach(f, sizeof f, LLK_WIRE_VERSION, &a);
    assert_int_equal(rawpeer_send(fd, f, n, WAIT_MS), RAWPEER_OK);
    llk_frame_header_t h;
    assert_int_equal(rawpeer_recv_frame(fd, &h, f, sizeof f, WAIT_MS), RAWPEER_OK);
    if (h.type == LLK_MSG_REJECT) {
        const char *why = NULL;
        assert_int_equal(llk_wire_decode_reject(f, h.length, rj, &why), 0);
    }
    return h.type;
}

/* Announced 4 (2 per direction): those 4 attach; index 2 in either
 * direction is refused with PROTOCOL_ERROR and a reason, and the link stays. */
static void test_attach_beyond_announced_refused(void **state)
{
    fx_t *fx = *state;
    start_prompt(fx, "1000");
    static const uint8_t four[2] = {0, 4};
    uint16_t type;
    llk_msg_reject_t rj;
    uint64_t inc = 0;
    raw_hello(fx, four, 2, &type, &rj, &inc);
    assert_int_equal(type, LLK_MSG_WELCOME);
    for (uint8_t dir = 0; dir < 2; dir++)
        for (uint16_t i = 0; i < 2; i++)
            if (raw_attach(fx, inc, i, dir, &rj) != LLK_MSG_ATTACH_OK)
                fail_msg("announced stream %u (direction %u) refused: %s", i, dir, rj.message);
    for (uint8_t dir = 0; dir < 2; dir++) {
        if (raw_attach(fx, inc, 2, dir, &rj) != LLK_MSG_REJECT)
            fail_msg("a 5th data stream (index 2, direction %u) was accepted after 4 announced",
                     dir);
        assert_int_equal(rj.status, LLMLINK_PROTOCOL_ERROR);
        assert_non_null(strstr(rj.message, "announced"));
    }
    assert_int_equal(llmlink_check_link_status(fx->prompt, RAW_CLIENT_ID), LLMLINK_SUCCESS);
}

/* No announcement (an older client): 8 per direction, the old cap; the 17th
 * stream is refused. */
static void test_attach_17th_refused(void **state)
{
    fx_t *fx = *state;
    start_prompt(fx, "1000");
    uint16_t type;
    llk_msg_reject_t rj;
    uint64_t inc = 0;
    raw_hello(fx, NULL, 0, &type, &rj, &inc);
    assert_int_equal(type, LLK_MSG_WELCOME);
    for (uint8_t dir = 0; dir < 2; dir++)
        for (uint16_t i = 0; i < 8; i++)
            if (raw_attach(fx, inc, i, dir, &rj) != LLK_MSG_ATTACH_OK)
                fail_msg("stream %u (direction %u) refused: %s", i, dir, rj.message);
    assert_int_equal(raw_attach(fx, inc, 8, 0, &rj), LLK_MSG_REJECT);
    assert_int_equal(raw_attach(fx, inc, 0, 0, &rj), LLK_MSG_REJECT); /* taken */
    assert_int_equal(rj.status, LLMLINK_PROTOCOL_ERROR);
    assert_int_equal(llmlink_check_link_status(fx->prompt, RAW_CLIENT_ID), LLMLINK_SUCCESS);
}

/* A malformed announcement refuses the HELLO with PROTOCOL_ERROR and a
 * reason, and makes no link: 0, odd, above 16, the wrong length. */
static void test_bad_stream_count_refused(void **state)
{
    fx_t *fx = *state;
    start_prompt(fx, "1000");
    static const struct {
        uint8_t b[3];
        uint16_t len;
    } bad[] = {{{0, 0}, 2}, {{0, 3}, 2}, {{0, 18}, 2}, {{0xFF, 0xFE}, 2}, {{0, 4, 0}, 3},
               {{4}, 1}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint16_t type;
        llk_msg_reject_t rj;
        uint64_t inc = 0;
        int fd = raw_hello(fx, bad[i].b, bad[i].len, &type, &rj, &inc);
        if (type != LLK_MSG_REJECT)
            fail_msg("stream count case %zu was accepted", i);
        assert_int_equal(rj.status, LLMLINK_PROTOCOL_ERROR);
        assert_non_null(strstr(rj.message, "stream-count"));
        assert_int_equal(rawpeer_wait_closed(fd, WAIT_MS), RAWPEER_OK);
    }
    assert_int_equal(stats_of(fx->prompt).links, 0);
}

/* An engine client announces what it attaches: with 8 streams per
 * direction (the most) it links, all 16 attached. */
static void test_engine_client_announces(void **state)
{
    fx_t *fx = *state;
    start_prompt(fx, "1000");
    llmlink_destroy(fx->dec);
    llmlink_option_t o = {"llmlink.StreamsPerLink", "8"};
    assert_int_equal(llmlink_create(&fx->dec, LLMLINK_ROLE_DECODER, DECODER_ID),
                     LLMLINK_SUCCESS);
    assert_int_equal(llmlink_init(fx->dec, &o, 1), LLMLINK_SUCCESS);
    llmlink_status_t st;
    honest_link(fx, &st);
    if (st != LLMLINK_SUCCESS)
        fail_msg("link with 8 streams per direction: %s", llmlink_last_error());
    assert_int_equal(stats_of(fx->prompt).protocol_errors, 0);
}

/* ---- heartbeat floor -------------------------------------------------------- */

/* A raw peer that asks for a 30 ms liveness interval (the least allowed)
 * and keeps the link alive with a heartbeat every 10 ms gets at most about
 * one heartbeat per 100 ms from the engine (default 3000 ms of its own),
 * not one every 10 ms (a third of 30). */
static void test_heartbeat_floor(void **state)
{
    fx_t *fx = *state;
    start_prompt(fx, "1000");
    int fd = rawpeer_connect(fx->port, WAIT_MS);
    assert_true(fd >= 0);
    fx->idle[fx->nidle++] = fd;
    uint8_t f[LLK_WIRE_MAX_FRAME];
    size_t n = rawpeer_hello(f, sizeof f, LLK_WIRE_VERSION, RAW_CLIENT_ID, PROMPT_ID, 30);
    assert_int_equal(rawpeer_send(fd, f, n, WAIT_MS), RAWPEER_OK);
    llk_frame_header_t h;
    assert_int_equal(rawpeer_recv_frame(fd, &h, f, sizeof f, WAIT_MS), RAWPEER_OK);
    assert_int_equal(h.type, LLK_MSG_WELCOME);
    uint8_t beat[LLK_WIRE_HEADER_SIZE + 8];
    size_t bn = llk_wire_encode_simple(beat, sizeof beat, LLK_WIRE_VERSION, LLK_MSG_HEARTBEAT);
    int beats = 0;
    int64_t t0 = rawpeer_now_ms();
    for (int i = 0; i < 200 && rawpeer_now_ms() - t0 < 1000; i++) {
        assert_int_equal(rawpeer_send(fd, beat, bn, WAIT_MS), RAWPEER_OK);
        /* Whatever came within 10 ms: heartbeats only (the link stays). */
        int64_t t1 = rawpeer_now_ms();
        while (rawpeer_now_ms() - t1 < 10) {
            int rc = rawpeer_recv_frame(fd, &h, f, sizeof f, 2);
            if (rc == RAWPEER_TIMEOUT)
                continue;
            assert_int_equal(rc, RAWPEER_OK);
            assert_int_equal(h.type, LLK_MSG_HEARTBEAT);
            beats++;
        }
    }
    int64_t ms = rawpeer_now_ms() - t0;
    print_message("%d heartbeats in %lld ms for a peer asking 30 ms\n", beats, (long long)ms);
    assert_int_equal(llmlink_check_link_status(fx->prompt, RAW_CLIENT_ID), LLMLINK_SUCCESS);
    assert_true(beats >= 3);                     /* it does beat */
    assert_true(beats <= (int)(ms / 100) + 3);  /* at most one per 100 ms */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_every_address_idle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trickle_cut, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_address_16_idle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_address_200_idle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_address_idle_200, setup, teardown),
        cmocka_unit_test_setup_teardown(test_park_pool_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_attach_beyond_announced_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_attach_17th_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_stream_count_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_engine_client_announces, setup, teardown),
        cmocka_unit_test_setup_teardown(test_heartbeat_floor, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
