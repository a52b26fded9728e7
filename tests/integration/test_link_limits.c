/*
 * test_link_limits.c - handshake limits that hold against a hostile peer
 * (issue 14, point 4): idle connections from raw sockets bound to
 * 127.0.0.2..127.0.0.5 must not keep an honest DECODER (from 127.0.0.1)
 * from linking to a PROMPT engine.
 *
 *  - llmlink.FirstFrameTimeoutMs: with 16 idle connections from 4 addresses
 *    (every slot taken), the honest client links
 *    once they are cut, well before llmlink.HandshakeTimeoutMs (10 s).
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
#include <sys/socket.h>
#include <unistd.h>

#include "llmlink.h"
#include "rawpeer.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_every_address_idle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trickle_cut, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
