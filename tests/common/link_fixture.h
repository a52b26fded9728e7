/*
 * link_fixture.h - an engine without sockets, for the deterministic unit
 * tests of the connection state machines (tests/unit/test_link_*.c:
 * core/link/conn.c, server.c, client.c, manager.c).
 *
 * Each test owns an engine made by llk_engine_create (never llk_engine_init:
 * no epoll instance, no eventfd, no listener, no thread; e->epfd and
 * e->wakefd stay -1). Connections are llk_conn_new(e, -1, ...): fd -1 is
 * what the code treats as "no socket", so llk_conn_close_fd and
 * llk_conn_set_events return before any system call, and with no listeners
 * llk_server_arm_listeners (called on every exit from SRV_HANDSHAKE) makes
 * no epoll call either. The only system call the driven paths make on a -1
 * descriptor is llk_reactor_wake's write(-1) after a forced unlink, which
 * fails with EBADF and is ignored.
 *
 * Time is a fake clock: every state-machine entry point takes `now`, and the
 * tests pass explicit values from T0, so every deadline is checked at the
 * exact millisecond (one before: nothing happens; at: it fires).
 *
 * Frames are built with the llk_wire_encode_* functions and handed to the
 * state machine that owns the connection's state by conn.c's own
 * llk_conn_dispatch (deliver()), payload on an exact-size heap copy so that
 * a read past the end is caught by AddressSanitizer. The library functions
 * that need e->mu are called holding it, as the reactor does.
 *
 * Waiters (llk_waiter_t) live on the test's stack, as on an API thread's;
 * the teardown detaches any still attached before destroying connections so
 * a failed test cannot make it write into a dead stack frame. The teardown
 * also checks that destroying every connection brings the server handshake
 * count back to 0 (the accounting invariant).
 *
 * Include after <cmocka.h> and its prerequisites. The helpers keep the
 * short names the tests were written with; only the test_link_* programs
 * include this header (tests/common objects are linked into every test
 * program, so none of those may define these names globally).
 */
#ifndef LINK_FIXTURE_H
#define LINK_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "link/engine.h"
#include "link/wire.h"
#include "llk_test.h"
#include "llmlink.h"

#ifndef ARRAY_LEN
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#endif

/* Fake clock origin (ms). Not 0: a deadline of 0 means "none". */
#define T0 1000000

#define SRV_ID 100u  /* PROMPT engine */
#define CLI_ID 200u  /* DECODER engine */
#define MIX_ID 300u  /* MIX engine */
#define ENGINE_INCARNATION 0x1122334455667788ull

/* Options every fixture engine starts with (tests change them as needed). */
#define OPT_MAX_LINKS 4u
#define OPT_MAX_HS 8u
#define OPT_HS_TIMEOUT 500u
#define OPT_LIVENESS 3000u

/* How long a CLOSING connection may take to flush (link/manager.c). */
#define CLOSE_GRACE_MS 1000

/* What a waiter's status holds until the code under test completes it. */
#define WAITER_UNSET 0x7777u

typedef struct fx {
    llmlink_t *e;
    uint8_t frame[LLK_WIRE_MAX_FRAME];
} fx_t;

/* One frame queued in c->tx. */
typedef struct tx_frame {
    llk_frame_header_t h;
    const uint8_t *payload;
} tx_frame_t;

#define assert_state(c, s)                                                                  \
    do {                                                                                    \
        if ((c)->state != (s))                                                              \
            fail_msg("state %s, expected %s", llk_conn_state_name((c)->state),              \
                     llk_conn_state_name(s));                                               \
    } while (0)

/* ---- group and test fixtures: an engine of each role ---- */
/* The group captures every log line, DEBUG included (see assert_logged). */
int link_fx_group_setup(void **state);
int link_fx_group_teardown(void **state);
int link_fx_setup_prompt(void **state);  /* PROMPT engine SRV_ID */
int link_fx_setup_decoder(void **state); /* DECODER engine CLI_ID */
int link_fx_setup_mix(void **state);     /* MIX engine MIX_ID */
int link_fx_teardown(void **state);

#define P(f) cmocka_unit_test_setup_teardown(f, link_fx_setup_prompt, link_fx_teardown)
#define D(f) cmocka_unit_test_setup_teardown(f, link_fx_setup_decoder, link_fx_teardown)
#define M(f) cmocka_unit_test_setup_teardown(f, link_fx_setup_mix, link_fx_teardown)

/* ---- log capture ---- */
void log_reset(void);
void assert_logged(const char *needle);

/* ---- driving the state machine (each takes e->mu as the reactor does) ---- */
llk_conn_t *conn_new(fx_t *fx, bool outbound, llk_conn_state_t s, uint64_t remote_id);
void set_state(fx_t *fx, llk_conn_t *c, llk_conn_state_t s);
int64_t timer(fx_t *fx, llk_conn_t *c, int64_t now);
void closed(fx_t *fx, llk_conn_t *c, int err);
void destroy(fx_t *fx, llk_conn_t *c);
void flushed(llk_conn_t *c, int64_t now);
llk_conn_t *accept_conn(fx_t *fx, int64_t now);
void deliver_payload(fx_t *fx, llk_conn_t *c, uint16_t type, const uint8_t *payload, size_t len,
                     int64_t now);
void deliver(fx_t *fx, llk_conn_t *c, const uint8_t *frame, size_t n, int64_t now);
llk_msg_hello_t hello_msg(uint64_t client_id, uint64_t target_id);
llk_msg_welcome_t welcome_msg(uint64_t server_id, uint32_t role, uint32_t liveness);
void send_hello(fx_t *fx, llk_conn_t *c, const llk_msg_hello_t *m, int64_t now);
void send_welcome(fx_t *fx, llk_conn_t *c, const llk_msg_welcome_t *w, int64_t now);
void send_reject(fx_t *fx, llk_conn_t *c, uint32_t status, const char *msg, int64_t now);
void send_simple(fx_t *fx, llk_conn_t *c, llk_msg_type_t type, int64_t now);

/* ---- reading what was queued in c->tx ---- */
size_t tx_frames(const llk_conn_t *c, tx_frame_t *out, size_t max);
tx_frame_t tx_only(const llk_conn_t *c, llk_msg_type_t type);
void assert_tx_reject(const llk_conn_t *c, llmlink_status_t status, llk_msg_reject_t *r);
void assert_tx_welcome(const llk_conn_t *c, llk_msg_welcome_t *w);
void assert_tx_simple(const llk_conn_t *c, llk_msg_type_t type);

/* ---- waiters ---- */
void waiter_init(llk_waiter_t *w);
void assert_waiter_pending(const llk_waiter_t *w);
void assert_waiter_done(const llk_waiter_t *w, llmlink_status_t st);

/* ---- composite helpers ---- */
llk_conn_t *inbound_link(fx_t *fx, uint64_t client_id, uint32_t liveness, int64_t now);
llk_conn_t *hello_sent_conn(fx_t *fx, uint64_t server_id, uint32_t expected_role,
                            int64_t deadline, llk_waiter_t *w, int64_t now);
llk_conn_t *outbound_link(fx_t *fx, uint64_t server_id, uint32_t liveness, int64_t now);

#endif /* LINK_FIXTURE_H */
