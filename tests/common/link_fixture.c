/*
 * link_fixture.c - the engine without sockets that the link state tests
 * (tests/unit/test_link_*.c) drive; see link_fixture.h for the premise.
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

#include "base/err.h"
#include "base/log.h"
#include "link_fixture.h"

/* ---- log capture ------------------------------------------------------------ */

/* Every level including DEBUG is enabled, so that the formatting of every
 * log line on the paths driven here runs (under the sanitizers too). */
static char log_buf[16384];
static size_t log_len;

static void log_cb(llmlink_log_level_t level, const char *message, void *user)
{
    (void)level;
    (void)user;
    size_t n = strlen(message);
    if (log_len + n + 2 > sizeof log_buf)
        log_len = 0; /* keep the newest lines */
    memcpy(log_buf + log_len, message, n);
    log_len += n;
    log_buf[log_len++] = '\n';
    log_buf[log_len] = '\0';
}

void log_reset(void)
{
    log_len = 0;
    log_buf[0] = '\0';
}

void assert_logged(const char *needle)
{
    if (!strstr(log_buf, needle))
        fail_msg("expected a log line containing \"%s\"; log:\n%s", needle, log_buf);
}

int link_fx_group_setup(void **state)
{
    (void)state;
    llk_log_set(log_cb, NULL, LLMLINK_LOG_DEBUG);
    return 0;
}

int link_fx_group_teardown(void **state)
{
    (void)state;
    llk_log_set(NULL, NULL, LLMLINK_LOG_NONE);
    return 0;
}

/* ---- fixture ---------------------------------------------------------------- */

static int setup_engine(void **state, llmlink_role_t role, uint64_t id)
{
    fx_t *fx = test_calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    if (llk_engine_create(&fx->e, role, id) != LLMLINK_SUCCESS) {
        test_free(fx);
        return -1;
    }
    llmlink_t *e = fx->e;
    /* The premise of every test here: nothing to poll, nothing to wake. */
    if (e->epfd != -1 || e->wakefd != -1 || e->num_listeners != 0 || e->io_started ||
        e->state != LLK_ENGINE_CREATED || e->conns != NULL) {
        llk_engine_free(e);
        test_free(fx);
        return -1;
    }
    e->opts.max_links = OPT_MAX_LINKS;
    e->opts.max_concurrent_handshakes = OPT_MAX_HS;
    e->opts.handshake_timeout_ms = OPT_HS_TIMEOUT;
    e->opts.first_frame_timeout_ms = OPT_HS_TIMEOUT; /* one deadline, as before */
    e->opts.liveness_interval_ms = OPT_LIVENESS;
    e->incarnation = ENGINE_INCARNATION;
    log_reset();
    *state = fx;
    return 0;
}

int link_fx_setup_prompt(void **state)
{
    return setup_engine(state, LLMLINK_ROLE_PROMPT, SRV_ID);
}

int link_fx_setup_decoder(void **state)
{
    return setup_engine(state, LLMLINK_ROLE_DECODER, CLI_ID);
}

int link_fx_setup_mix(void **state)
{
    return setup_engine(state, LLMLINK_ROLE_MIX, MIX_ID);
}

int link_fx_teardown(void **state)
{
    fx_t *fx = *state;
    llmlink_t *e = fx->e;
    e->state = LLK_ENGINE_CREATED;
    pthread_mutex_lock(&e->mu);
    while (e->conns) {
        llk_conn_t *c = e->conns;
        c->waiter = NULL; /* it may point into a test's finished stack frame */
        llk_conn_destroy(e, c);
    }
    uint32_t hs = e->hs_in_progress;
    int epfd = e->epfd, wakefd = e->wakefd;
    pthread_mutex_unlock(&e->mu);
    llk_engine_free(e);
    test_free(fx);
    if (hs != 0 || epfd != -1 || wakefd != -1) {
        print_error("teardown: hs_in_progress = %u after destroying every connection "
                    "(expected 0); epfd %d, wakefd %d (expected -1)\n",
                    hs, epfd, wakefd);
        return -1;
    }
    return 0;
}

/* ---- driving the state machine ---------------------------------------------- */

llk_conn_t *conn_new(fx_t *fx, bool outbound, llk_conn_state_t s, uint64_t remote_id)
{
    pthread_mutex_lock(&fx->e->mu);
    llk_conn_t *c = llk_conn_new(fx->e, -1, outbound, s);
    pthread_mutex_unlock(&fx->e->mu);
    assert_non_null(c);
    assert_int_equal(c->fd, -1);
    c->remote_id = remote_id;
    snprintf(c->peer, sizeof c->peer, "%s-peer-%llu", outbound ? "out" : "in",
             (unsigned long long)remote_id);
    return c;
}

void set_state(fx_t *fx, llk_conn_t *c, llk_conn_state_t s)
{
    pthread_mutex_lock(&fx->e->mu);
    llk_conn_set_state(fx->e, c, s);
    pthread_mutex_unlock(&fx->e->mu);
}

int64_t timer(fx_t *fx, llk_conn_t *c, int64_t now)
{
    pthread_mutex_lock(&fx->e->mu);
    int64_t next = llk_link_on_timer(fx->e, c, now);
    pthread_mutex_unlock(&fx->e->mu);
    return next;
}

void closed(fx_t *fx, llk_conn_t *c, int err)
{
    pthread_mutex_lock(&fx->e->mu);
    llk_link_on_closed(fx->e, c, err);
    pthread_mutex_unlock(&fx->e->mu);
}

void destroy(fx_t *fx, llk_conn_t *c)
{
    pthread_mutex_lock(&fx->e->mu);
    llk_conn_destroy(fx->e, c);
    pthread_mutex_unlock(&fx->e->mu);
}

/* What llk_conn_flush does once the socket took everything. */
void flushed(llk_conn_t *c, int64_t now)
{
    c->tx_len = 0;
    c->last_tx_ms = now;
}

/* A server connection as llk_server_on_listener leaves it after accept4. */
llk_conn_t *accept_conn(fx_t *fx, int64_t now)
{
    llmlink_t *e = fx->e;
    llk_conn_t *c = conn_new(fx, false, LLK_CONN_SRV_HANDSHAKE, 0);
    snprintf(c->peer, sizeof c->peer, "10.0.0.%u:%u", (unsigned)(e->hs_accepted % 250) + 1,
             40000u + (unsigned)e->hs_accepted);
    llk_server_begin_handshake(e, c, now);
    return c;
}

/* Hands one frame (type + payload) to the state machine that owns c's
 * state through conn.c's own llk_conn_dispatch, as drain_frames does. A
 * state that reads no frames fails the test here: llk_conn_dispatch would
 * drop the frame silently and the test would check nothing. */
void deliver_payload(fx_t *fx, llk_conn_t *c, uint16_t type, const uint8_t *payload, size_t len,
                     int64_t now)
{
    llk_frame_header_t h = {LLK_WIRE_MAGIC, (uint16_t)LLK_WIRE_VERSION, type, (uint32_t)len, 0};
    assert_int_equal(llk_wire_check_header(&h), LLK_HDR_OK);
    llk_conn_state_t s = c->state;
    if (s != LLK_CONN_SRV_HANDSHAKE && s != LLK_CONN_CLI_HELLO_SENT && s != LLK_CONN_LINKED &&
        s != LLK_CONN_UNLINKING)
        fail_msg("deliver: a connection in state %s reads no frames", llk_conn_state_name(s));
    uint8_t *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    if (len)
        memcpy(copy, payload, len);
    pthread_mutex_lock(&fx->e->mu);
    c->last_rx_ms = now;
    llk_conn_dispatch(fx->e, c, &h, copy, now);
    pthread_mutex_unlock(&fx->e->mu);
    free(copy);
}

/* Hands a whole encoded frame (header + payload) over. */
void deliver(fx_t *fx, llk_conn_t *c, const uint8_t *frame, size_t n, int64_t now)
{
    assert_true(n >= LLK_WIRE_HEADER_SIZE);
    llk_frame_header_t h;
    llk_wire_read_header(frame, &h);
    assert_int_equal(llk_wire_check_header(&h), LLK_HDR_OK);
    assert_int_equal(h.length, n - LLK_WIRE_HEADER_SIZE);
    deliver_payload(fx, c, h.type, frame + LLK_WIRE_HEADER_SIZE, h.length, now);
}

llk_msg_hello_t hello_msg(uint64_t client_id, uint64_t target_id)
{
    llk_msg_hello_t m;
    memset(&m, 0, sizeof m);
    m.client_cluster_id = client_id;
    m.target_cluster_id = target_id;
    m.client_role = LLMLINK_ROLE_DECODER;
    m.expected_server_role = LLMLINK_ROLE_PROMPT;
    m.incarnation = 0xC0FFEE0000000000ull + client_id;
    m.liveness_ms = OPT_LIVENESS;
    return m;
}

llk_msg_welcome_t welcome_msg(uint64_t server_id, uint32_t role, uint32_t liveness)
{
    llk_msg_welcome_t w;
    memset(&w, 0, sizeof w);
    w.server_cluster_id = server_id;
    w.server_role = role;
    w.liveness_ms = liveness;
    w.incarnation = 0xBEEF000000000000ull + server_id;
    return w;
}

void send_hello(fx_t *fx, llk_conn_t *c, const llk_msg_hello_t *m, int64_t now)
{
    size_t n = llk_wire_encode_hello(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, m);
    assert_true(n > 0);
    deliver(fx, c, fx->frame, n, now);
}

void send_welcome(fx_t *fx, llk_conn_t *c, const llk_msg_welcome_t *w, int64_t now)
{
    size_t n = llk_wire_encode_welcome(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, w);
    assert_true(n > 0);
    deliver(fx, c, fx->frame, n, now);
}

void send_reject(fx_t *fx, llk_conn_t *c, uint32_t status, const char *msg, int64_t now)
{
    size_t n = llk_wire_encode_reject(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, status, msg);
    assert_true(n > 0);
    deliver(fx, c, fx->frame, n, now);
}

void send_simple(fx_t *fx, llk_conn_t *c, llk_msg_type_t type, int64_t now)
{
    size_t n = llk_wire_encode_simple(fx->frame, sizeof fx->frame, LLK_WIRE_VERSION, type);
    assert_true(n > 0);
    deliver(fx, c, fx->frame, n, now);
}

/* ---- reading what was queued in c->tx --------------------------------------- */

/* Splits c->tx into frames; every one must have a valid header, and they
 * must end exactly at tx_len. Returns the count. */
size_t tx_frames(const llk_conn_t *c, tx_frame_t *out, size_t max)
{
    size_t off = 0, n = 0;
    while (off < c->tx_len) {
        assert_true(c->tx_len - off >= LLK_WIRE_HEADER_SIZE);
        llk_frame_header_t h;
        llk_wire_read_header(c->tx + off, &h);
        assert_int_equal(llk_wire_check_header(&h), LLK_HDR_OK);
        assert_true(c->tx_len - off - LLK_WIRE_HEADER_SIZE >= h.length);
        if (n < max) {
            out[n].h = h;
            out[n].payload = c->tx + off + LLK_WIRE_HEADER_SIZE;
        }
        n++;
        off += LLK_WIRE_HEADER_SIZE + h.length;
    }
    assert_int_equal(off, c->tx_len);
    return n;
}

/* c->tx holds exactly one frame, of this type; returns it. */
tx_frame_t tx_only(const llk_conn_t *c, llk_msg_type_t type)
{
    tx_frame_t f[4];
    size_t n = tx_frames(c, f, ARRAY_LEN(f));
    if (n != 1)
        fail_msg("expected exactly one queued frame, found %zu", n);
    assert_int_equal(f[0].h.type, type);
    return f[0];
}

/* c->tx holds exactly one REJECT with this status; its message is returned
 * in *r (non-empty). */
void assert_tx_reject(const llk_conn_t *c, llmlink_status_t status, llk_msg_reject_t *r)
{
    tx_frame_t f = tx_only(c, LLK_MSG_REJECT);
    const char *why = NULL;
    assert_int_equal(llk_wire_decode_reject(f.payload, f.h.length, r, &why), 0);
    if (r->status != status)
        fail_msg("REJECT status %s (0x%08x), expected %s (0x%08x): \"%s\"",
                 llmlink_status_name(r->status), r->status, llmlink_status_name(status), status,
                 r->message);
    assert_true(strlen(r->message) > 0);
}

void assert_tx_welcome(const llk_conn_t *c, llk_msg_welcome_t *w)
{
    tx_frame_t f = tx_only(c, LLK_MSG_WELCOME);
    const char *why = NULL;
    assert_int_equal(llk_wire_decode_welcome(f.payload, f.h.length, w, &why), 0);
}

void assert_tx_simple(const llk_conn_t *c, llk_msg_type_t type)
{
    tx_frame_t f = tx_only(c, type);
    const char *why = NULL;
    assert_int_equal(llk_wire_decode_simple(type, f.payload, f.h.length, &why), 0);
}

/* ---- waiters ------------------------------------------------------------------ */

void waiter_init(llk_waiter_t *w)
{
    memset(w, 0, sizeof *w);
    w->status = WAITER_UNSET;
}

void assert_waiter_pending(const llk_waiter_t *w)
{
    assert_false(w->done);
    assert_int_equal(w->status, WAITER_UNSET);
}

void assert_waiter_done(const llk_waiter_t *w, llmlink_status_t st)
{
    if (!w->done)
        fail_msg("waiter not completed (expected %s)", llmlink_status_name(st));
    assert_status(w->status, st);
    assert_true(w->detail[0] != '\0');
    assert_non_null(memchr(w->detail, '\0', sizeof w->detail));
}

/* ---- composite helpers ----------------------------------------------------------- */

/* An inbound link made by the server handshake (accept + HELLO), its
 * WELCOME flushed at `now`. */
llk_conn_t *inbound_link(fx_t *fx, uint64_t client_id, uint32_t liveness, int64_t now)
{
    llk_conn_t *c = accept_conn(fx, now);
    llk_msg_hello_t m = hello_msg(client_id, fx->e->cluster_id);
    m.expected_server_role = 0;
    m.liveness_ms = liveness;
    send_hello(fx, c, &m, now);
    assert_state(c, LLK_CONN_LINKED);
    assert_int_equal(c->remote_id, client_id);
    flushed(c, now);
    return c;
}

/* A client connection that sent its HELLO at `now`. */
llk_conn_t *hello_sent_conn(fx_t *fx, uint64_t server_id, uint32_t expected_role,
                            int64_t deadline, llk_waiter_t *w, int64_t now)
{
    llk_conn_t *c = conn_new(fx, true, LLK_CONN_CLI_HELLO_SENT, server_id);
    c->expected_role = expected_role;
    c->deadline_ms = deadline;
    c->last_tx_ms = now;
    c->waiter = w;
    return c;
}

/* An outbound link made by the client handshake (HELLO_SENT + WELCOME). */
llk_conn_t *outbound_link(fx_t *fx, uint64_t server_id, uint32_t liveness, int64_t now)
{
    llk_conn_t *c = hello_sent_conn(fx, server_id, 0, now + 5000, NULL, now);
    llk_msg_welcome_t w = welcome_msg(server_id, LLMLINK_ROLE_PROMPT, liveness);
    send_welcome(fx, c, &w, now);
    assert_state(c, LLK_CONN_LINKED);
    return c;
}
