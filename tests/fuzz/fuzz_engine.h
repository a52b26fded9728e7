/*
 * fuzz_engine.h - what the stateful fuzz targets share (fuzz_link_hs.c,
 * fuzz_attach.c): an engine without a reactor, connections on socketpairs,
 * a reader over the fuzz input, and the checks every target makes.
 *
 * Premise (as tests/common/link_fixture.h): the engine is made by
 * llk_engine_create, never llk_engine_init, so there is no reactor thread,
 * no epoll instance (e->epfd is -1: the epoll_ctl calls on the driven paths
 * fail with EBADF and change nothing) and no listener. Unlike the unit
 * fixture, connections have real descriptors: one end of an AF_UNIX
 * socketpair is the connection's fd, the harness holds the other (the
 * peer). Bytes from the input are written to the peer end and read by
 * conn.c's own llk_conn_on_readable, so the framing (partial headers,
 * frames split over reads, bad headers) is the production code's, and what
 * the engine answers is read back from the peer end and checked frame by
 * frame. fz_service() is the reactor's service pass (reactor.c) minus
 * client connects: flush, timers, flush, free the dead.
 *
 * Time is a fake clock (fz->now), advanced by the input.
 *
 * Header-only (static functions): each target is linked alone with the
 * static library (Makefile FUZZ_BINS), so shared code cannot be an object.
 */
#ifndef FUZZ_ENGINE_H
#define FUZZ_ENGINE_H

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/log.h"
#include "link/auth.h"
#include "link/engine.h"
#include "link/wire.h"
#include "llmlink.h"
#include "xfer/xfer.h"

#define FZ_CHECK(cond)                                                                  \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "fuzz invariant failed at %s:%d: %s\n", __FILE__, __LINE__, \
                    #cond);                                                             \
            abort();                                                                    \
        }                                                                               \
    } while (0)

/* ---- the input ------------------------------------------------------------ */

typedef struct fz_in {
    const uint8_t *p;
    size_t n, pos;
} fz_in_t;

static inline bool fz_left(const fz_in_t *in)
{
    return in->pos < in->n;
}

static inline uint8_t fz_u8(fz_in_t *in)
{
    return in->pos < in->n ? in->p[in->pos++] : 0;
}

static inline uint16_t fz_u16(fz_in_t *in)
{
    uint16_t hi = fz_u8(in);
    return (uint16_t)(hi << 8 | fz_u8(in));
}

static inline uint32_t fz_u32(fz_in_t *in)
{
    uint32_t hi = fz_u16(in);
    return hi << 16 | fz_u16(in);
}

static inline uint64_t fz_u64(fz_in_t *in)
{
    uint64_t hi = fz_u32(in);
    return hi << 32 | fz_u32(in);
}

/* Up to want bytes of the input (fewer at its end); *got says how many. */
static inline const uint8_t *fz_take(fz_in_t *in, size_t want, size_t *got)
{
    size_t left = in->n - in->pos;
    *got = want < left ? want : left;
    const uint8_t *p = in->p + in->pos;
    in->pos += *got;
    return p;
}

/* FZ_TRACE=1 in the environment: print what the engine answers and every
 * log line (for writing seeds and reading a crash). */
static inline bool fz_trace(void)
{
    static int on = -1;
    if (on < 0) {
        const char *v = getenv("FZ_TRACE");
        on = v && *v == '1';
    }
    return on;
}

/* ---- logging: every level formatted, nothing printed --------------------------- */

/* DEBUG on, so the formatting of every log line on the driven paths runs
 * under the sanitizers; a line must be a bounded C string. */
static inline void fz_log_cb(llmlink_log_level_t level, const char *message, void *user)
{
    (void)level;
    (void)user;
    FZ_CHECK(message != NULL);
    FZ_CHECK(strnlen(message, 8192) < 8192);
    if (fz_trace())
        fprintf(stderr, "fuzz trace: log: %s\n", message);
}

/* ---- the engine ----------------------------------------------------------------- */

#define FZ_T0 1000000 /* fake clock origin (ms); not 0: a deadline of 0 is "none" */
#define FZ_SRV_ID 100u
#define FZ_CLI_ID 200u
#define FZ_INCARNATION 0x1122334455667788ull
#define FZ_MAX_CONNS 40

typedef struct fz_conn {
    llk_conn_t *c; /* NULL once the engine freed it */
    int peer;      /* the harness's end, -1 when closed */
    llk_conn_state_t last; /* state after the previous step */
    bool outbound;
    bool saw_reject, saw_welcome, saw_attach_ok;
    unsigned notify_acks; /* NOTIFY_ACK frames the engine sent */
    bool peer_wr_closed; /* the harness closed its sending side (EOF) */
    /* The last ATTACH the harness sent on it, when it decoded. */
    bool attach_known;
    llk_msg_attach_t attach;
    llk_waiter_t waiter; /* client side: the link_clusters call waiting */
    bool has_waiter;
    uint32_t reject_status; /* of the last REJECT the engine sent on it */
    /* Authentication (keyed mode, link/auth.h), what the harness knows of
     * the exchange on this connection. Server side: nc is the nonce of the
     * harness's first frame when that is an AUTH_HELLO (first[]: the bytes
     * the harness sent first, parsed as the engine will), ns the one of the
     * engine's AUTH_CHALLENGE. Client side: nc from the engine's
     * AUTH_HELLO, ns from the harness's first right AUTH_CHALLENGE. */
    uint8_t first[LLK_WIRE_HEADER_SIZE + 64];
    size_t first_len;
    uint8_t nc[LLK_AUTH_NONCE_SIZE], ns[LLK_AUTH_NONCE_SIZE];
    bool got_challenge;  /* server: the engine's AUTH_CHALLENGE read (ns) */
    bool proof_ok;       /* server: the harness sent the right AUTH_PROOF */
    bool got_auth_hello; /* client: the engine's AUTH_HELLO read (nc) */
    bool challenge_ok;   /* client: the harness sent a right AUTH_CHALLENGE */
    bool saw_hello;      /* client: the engine sent HELLO */
} fz_conn_t;

typedef struct fz {
    llmlink_t *e;
    int64_t now;
    fz_conn_t conn[FZ_MAX_CONNS];
    size_t nconn;
    /* Keyed mode: the key the harness's peers hold (the engine's own,
     * loaded separately, is e->auth); NULL when the engine has none. */
    const llk_auth_key_t *key;
} fz_t;

/* One engine per role for the whole process (creating one reads
 * /proc for the host identity: too slow per input); fz_reset() brings it
 * back to its first state after every input. reset_opts: options back to
 * the defaults too (not where another thread of the engine runs: options
 * do not change while an engine runs). */
static inline llmlink_t *fz_engine(llmlink_role_t role, uint64_t id, bool reset_opts)
{
    static llmlink_t *engines[3];
    static bool logs;
    if (!logs) {
        llk_log_set(fz_log_cb, NULL, LLMLINK_LOG_DEBUG);
        logs = true;
    }
    int k = role == LLMLINK_ROLE_PROMPT ? 0 : role == LLMLINK_ROLE_DECODER ? 1 : 2;
    if (!engines[k]) {
        FZ_CHECK(llk_engine_create(&engines[k], role, id) == LLMLINK_SUCCESS);
        engines[k]->incarnation = FZ_INCARNATION;
    }
    llmlink_t *e = engines[k];
    FZ_CHECK(e->conns == NULL && e->hs_in_progress == 0);
    /* Options and counters as a fresh engine has them. */
    if (reset_opts)
        llk_options_defaults(&e->opts);
    e->hs_peak = 0;
    e->hs_accepted = e->hs_completed = e->hs_rejected = e->hs_timed_out = 0;
    e->hs_first_frame_timeouts = 0;
    e->limit_warn_next_ms = 0;
    e->limit_warn_suppressed = 0;
    e->protocol_errors = e->links_lost = 0;
    e->auth = NULL; /* fz_set_key() gives it one */
    e->auth_failures = 0;
    return e;
}

/* ---- authentication -------------------------------------------------------------- */

/* Fixed test keys (llmlink.AuthKey is hex): the engines' and the honest
 * peers', and another one for peers with the wrong key. */
#define FZ_KEY_HEX "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define FZ_WRONG_KEY_HEX "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

/* Loaded once by auth's own loader (as llmlink_init loads llmlink.AuthKey);
 * which: 0 the engines' copy, 1 the peers' copy of the same key, 2 the
 * wrong key. Never freed: every engine of the process holds it. */
static inline llk_auth_key_t *fz_auth_key(int which)
{
    static llk_auth_key_t *k[3];
    if (!k[which]) {
        char err[256];
        FZ_CHECK(llk_auth_key_load(NULL, which == 2 ? FZ_WRONG_KEY_HEX : FZ_KEY_HEX, &k[which],
                                   err, sizeof err) == LLMLINK_SUCCESS);
    }
    return k[which];
}

/* The engine has the key (keyed) or none, for this input. e->mu held. */
static inline void fz_set_key(fz_t *fz, bool keyed)
{
    fz->e->auth = keyed ? fz_auth_key(0) : NULL;
    fz->key = keyed ? fz_auth_key(1) : NULL;
}

/* The nonce of the harness's first frame on fc when it is an AUTH_HELLO
 * the engine takes (scheme 1): what the engine's challenge must answer. */
static inline bool fz_first_auth_hello(const fz_conn_t *fc, uint8_t nc[LLK_AUTH_NONCE_SIZE])
{
    llk_frame_header_t h;
    llk_msg_auth_hello_t m;
    const char *why = NULL;
    if (fc->first_len < LLK_WIRE_HEADER_SIZE)
        return false;
    llk_wire_read_header(fc->first, &h);
    if (llk_wire_check_header(&h) != LLK_HDR_OK || h.type != LLK_MSG_AUTH_HELLO ||
        h.length > fc->first_len - LLK_WIRE_HEADER_SIZE ||
        llk_wire_decode_auth_hello(fc->first + LLK_WIRE_HEADER_SIZE, h.length, &m, &why) != 0 ||
        m.scheme != LLK_AUTH_SCHEME_PSK1)
        return false;
    memcpy(nc, m.nc, LLK_AUTH_NONCE_SIZE);
    return true;
}

/* The session key the link made on fc must hold (link/auth.h): the same
 * derivation from the nonces the harness saw. */
static inline void fz_check_session_key(fz_t *fz, fz_conn_t *fc)
{
    llk_xlink_t *xl = llk_xlink_of(fc->c);
    if (!xl)
        return; /* a client link without data streams has no record */
    uint8_t ks[32];
    FZ_CHECK(xl->has_ks);
    FZ_CHECK(llk_auth_session_key(fz->key, fc->nc, fc->ns, ks) == 0);
    FZ_CHECK(memcmp(ks, xl->ks, sizeof ks) == 0);
}

static inline void fz_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    FZ_CHECK(fl >= 0 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0);
}

/* A new connection on a socketpair: its fd is the engine's end. NULL when
 * the harness holds FZ_MAX_CONNS already. e->mu held. */
static inline fz_conn_t *fz_conn_new(fz_t *fz, bool outbound, llk_conn_state_t s)
{
    if (fz->nconn == FZ_MAX_CONNS)
        return NULL;
    int sv[2];
    FZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    fz_nonblock(sv[0]);
    fz_nonblock(sv[1]);
    fz_conn_t *fc = &fz->conn[fz->nconn++];
    memset(fc, 0, sizeof *fc);
    fc->c = llk_conn_new(fz->e, sv[0], outbound, s);
    FZ_CHECK(fc->c != NULL);
    fc->peer = sv[1];
    fc->outbound = outbound;
    fc->last = s;
    snprintf(fc->c->peer, sizeof fc->c->peer, "10.0.0.%zu:%u", fz->nconn, 40000u + (unsigned)fz->nconn);
    return fc;
}

/* A connection as llk_server_on_listener leaves it after accept4. */
static inline fz_conn_t *fz_accept(fz_t *fz)
{
    fz_conn_t *fc = fz_conn_new(fz, false, LLK_CONN_SRV_HANDSHAKE);
    if (fc)
        llk_server_begin_handshake(fz->e, fc->c, fz->now);
    return fc;
}

/* A client connection that sent its HELLO (client.c's send_hello), with
 * an API call waiting on it as llk_engine_link leaves it. */
static inline fz_conn_t *fz_hello_sent(fz_t *fz, uint64_t server_id, uint32_t expected_role)
{
    fz_conn_t *fc = fz_conn_new(fz, true, LLK_CONN_CLI_HELLO_SENT);
    if (!fc)
        return NULL;
    fc->c->remote_id = server_id;
    fc->c->expected_role = expected_role;
    fc->c->deadline_ms = fz->now + 3000;
    fc->c->last_tx_ms = fz->now;
    memset(&fc->waiter, 0, sizeof fc->waiter);
    fc->c->waiter = &fc->waiter;
    fc->has_waiter = true;
    /* Keyed: AUTH_HELLO instead of HELLO (client.c send_hello). */
    if (fz->e->auth)
        FZ_CHECK(llk_auth_client_hello(fz->e, fc->c));
    return fc;
}

/* The engine still holds fc's connection (the reactor frees only in
 * fz_service, which clears fc->c). */
static inline bool fz_live(const fz_conn_t *fc)
{
    return fc->c != NULL;
}

/* Records the ATTACH in a frame the harness is about to send on fc (the
 * checks need to know which stream it asked for). */
static inline void fz_note_attach(fz_conn_t *fc, const uint8_t *f, size_t n)
{
    llk_frame_header_t h;
    const char *why = NULL;
    if (n < LLK_WIRE_HEADER_SIZE)
        return;
    llk_wire_read_header(f, &h);
    if (llk_wire_check_header(&h) != LLK_HDR_OK || h.type != LLK_MSG_ATTACH ||
        n - LLK_WIRE_HEADER_SIZE < h.length)
        return;
    fc->attach_known =
        llk_wire_decode_attach(f + LLK_WIRE_HEADER_SIZE, h.length, &fc->attach, &why) == 0;
}

/* Writes bytes to the peer end, then lets the engine read them. Bytes the
 * socket does not take (the engine stopped reading) are dropped, as a
 * peer's would be. e->mu held. */
static inline void fz_send(fz_t *fz, fz_conn_t *fc, const uint8_t *p, size_t n)
{
    if (fc->peer < 0)
        return;
    if (fc->first_len < sizeof fc->first) {
        size_t k = sizeof fc->first - fc->first_len < n ? sizeof fc->first - fc->first_len : n;
        memcpy(fc->first + fc->first_len, p, k);
        fc->first_len += k;
    }
    while (n > 0) {
        ssize_t w = send(fc->peer, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        p += w;
        n -= (size_t)w;
    }
    if (fz_live(fc) && fc->c->fd >= 0)
        llk_conn_on_readable(fz->e, fc->c, fz->now);
}

/* The peer closes its end (EOF for the engine). */
static inline void fz_peer_close(fz_t *fz, fz_conn_t *fc)
{
    if (fc->peer < 0)
        return;
    shutdown(fc->peer, SHUT_WR);
    fc->peer_wr_closed = true;
    if (fz_live(fc) && fc->c->fd >= 0)
        llk_conn_on_readable(fz->e, fc->c, fz->now);
}

/* Reads what the engine sent to fc's peer and checks it frame by frame:
 * every frame has a valid header, a type the engine sends, and a payload
 * its decoder takes. Frames are whole (the engine queues whole frames and
 * a socketpair takes them at once). */
static inline void fz_read_answers(fz_t *fz, fz_conn_t *fc)
{
    static uint8_t buf[1 << 16];
    if (fc->peer < 0)
        return;
    size_t len = 0;
    for (;;) {
        ssize_t r = recv(fc->peer, buf + len, sizeof buf - len, 0);
        if (r <= 0)
            break;
        len += (size_t)r;
        if (len == sizeof buf)
            break;
    }
    size_t off = 0;
    while (off < len) {
        FZ_CHECK(len - off >= LLK_WIRE_HEADER_SIZE);
        llk_frame_header_t h;
        llk_wire_read_header(buf + off, &h);
        FZ_CHECK(llk_wire_check_header(&h) == LLK_HDR_OK);
        FZ_CHECK(len - off - LLK_WIRE_HEADER_SIZE >= h.length);
        const uint8_t *p = buf + off + LLK_WIRE_HEADER_SIZE;
        const char *why = NULL;
        if (fz_trace())
            fprintf(stderr, "fuzz trace: conn %td got frame type %u (%u bytes)\n",
                    fc - fz->conn, h.type, h.length);
        switch (h.type) {
        case LLK_MSG_WELCOME: {
            llk_msg_welcome_t w;
            FZ_CHECK(llk_wire_decode_welcome(p, h.length, &w, &why) == 0);
            FZ_CHECK(w.server_cluster_id == fz->e->cluster_id);
            /* Nothing about this engine before the peer proved the key. */
            FZ_CHECK(!fz->e->auth || fc->proof_ok);
            fc->saw_welcome = true;
            break;
        }
        case LLK_MSG_REJECT: {
            llk_msg_reject_t rj;
            FZ_CHECK(llk_wire_decode_reject(p, h.length, &rj, &why) == 0);
            FZ_CHECK(rj.status != LLMLINK_SUCCESS);
            /* Before the peer proved the key, a refusal says why and
             * nothing about this engine (its cluster id, its links). */
            if (fz->e->auth && !fc->proof_ok && !fc->challenge_ok) {
                FZ_CHECK(rj.status == LLMLINK_AUTH_FAILED ||
                         rj.status == LLMLINK_VERSION_MISMATCH || rj.status == LLMLINK_FAILED);
                FZ_CHECK(strstr(rj.message, "cluster") == NULL);
            }
            fc->saw_reject = true;
            fc->reject_status = rj.status;
            if (fz_trace())
                fprintf(stderr, "fuzz trace: conn %td REJECT %s: %s\n", fc - fz->conn,
                        llmlink_status_name(rj.status), rj.message);
            break;
        }
        case LLK_MSG_HELLO: {
            /* A keyed client: HELLO after the server's proof checked. */
            llk_msg_hello_t m;
            FZ_CHECK(fc->outbound && fz->e->auth && fc->challenge_ok);
            FZ_CHECK(llk_wire_decode_hello(p, h.length, &m, &why) == 0);
            FZ_CHECK(m.client_cluster_id == fz->e->cluster_id);
            fc->saw_hello = true;
            break;
        }
        case LLK_MSG_AUTH_HELLO: {
            /* A keyed client's first frame, once. */
            llk_msg_auth_hello_t m;
            FZ_CHECK(fc->outbound && fz->e->auth && !fc->got_auth_hello);
            FZ_CHECK(llk_wire_decode_auth_hello(p, h.length, &m, &why) == 0);
            FZ_CHECK(m.scheme == LLK_AUTH_SCHEME_PSK1);
            memcpy(fc->nc, m.nc, sizeof fc->nc);
            fc->got_auth_hello = true;
            break;
        }
        case LLK_MSG_AUTH_CHALLENGE: {
            /* A keyed server answers an AUTH_HELLO first frame, once, with
             * a fresh nonce and the right MAC_s for it. */
            static uint8_t prev_ns[LLK_AUTH_NONCE_SIZE];
            llk_msg_auth_challenge_t ch;
            FZ_CHECK(!fc->outbound && fz->e->auth && !fc->got_challenge);
            FZ_CHECK(llk_wire_decode_auth_challenge(p, h.length, &ch, &why) == 0);
            FZ_CHECK(fz_first_auth_hello(fc, fc->nc));
            FZ_CHECK(llk_auth_mac_ok(fz->key, true, fc->nc, ch.ns, ch.mac));
            FZ_CHECK(memcmp(ch.ns, prev_ns, sizeof prev_ns) != 0);
            memcpy(prev_ns, ch.ns, sizeof prev_ns);
            memcpy(fc->ns, ch.ns, sizeof fc->ns);
            fc->got_challenge = true;
            break;
        }
        case LLK_MSG_AUTH_PROOF: {
            /* A keyed client proves the key only to a server that did. */
            uint8_t mac[LLK_AUTH_MAC_SIZE];
            FZ_CHECK(fc->outbound && fz->e->auth && fc->challenge_ok && !fc->saw_hello);
            FZ_CHECK(llk_wire_decode_auth_proof(p, h.length, mac, &why) == 0);
            FZ_CHECK(llk_auth_mac_ok(fz->key, false, fc->nc, fc->ns, mac));
            break;
        }
        case LLK_MSG_ATTACH_OK: {
            llk_msg_attach_ok_t ok;
            FZ_CHECK(llk_wire_decode_attach_ok(p, h.length, &ok, &why) == 0);
            fc->saw_attach_ok = true;
            break;
        }
        case LLK_MSG_HEARTBEAT:
        case LLK_MSG_UNLINK:
        case LLK_MSG_UNLINK_ACK:
            FZ_CHECK(llk_wire_decode_simple((llk_msg_type_t)h.type, p, h.length, &why) == 0);
            break;
        case LLK_MSG_NOTIFY_ACK: {
            /* The answer to a NOTIFY the harness sent on a link. */
            uint64_t seq;
            uint32_t st;
            FZ_CHECK(llk_wire_decode_notify_ack(p, h.length, &seq, &st, &why) == 0);
            fc->notify_acks++;
            break;
        }
        default:
            FZ_CHECK(!"the engine sent a frame type it never sends");
        }
        off += LLK_WIRE_HEADER_SIZE + h.length;
    }
}

/* The reactor's service pass (reactor.c) for the harness's connections:
 * flush, timers, flush, free the dead; then what each sent is read back
 * and checked. e->mu held. */
static inline void fz_service(fz_t *fz)
{
    for (size_t i = 0; i < fz->nconn; i++) {
        fz_conn_t *fc = &fz->conn[i];
        if (!fz_live(fc))
            continue;
        llk_conn_t *c = fc->c;
        if (c->state != LLK_CONN_DEAD && (c->tx_len || c->ntx_len) &&
            llk_conn_flush(fz->e, c, fz->now) != 0)
            llk_link_on_closed(fz->e, c, errno);
        if (c->state != LLK_CONN_DEAD)
            llk_link_on_timer(fz->e, c, fz->now);
        if (c->state != LLK_CONN_DEAD && (c->tx_len || c->ntx_len) &&
            llk_conn_flush(fz->e, c, fz->now) != 0)
            llk_link_on_closed(fz->e, c, errno);
        fz_read_answers(fz, fc);
        if (c->state == LLK_CONN_DEAD) {
            if (c->waiter)
                FZ_CHECK(fc->has_waiter); /* only the harness's call waits */
            llk_conn_destroy(fz->e, c);
            fc->c = NULL;
        }
    }
}

/* Invariants of the engine after every step. e->mu held. */
static inline void fz_check_engine(fz_t *fz)
{
    llmlink_t *e = fz->e;
    uint32_t hs = 0, links_in = 0;
    for (llk_conn_t *c = e->conns; c; c = c->next) {
        FZ_CHECK((unsigned)c->state < LLK_CONN_NUM_STATES);
        if (c->state == LLK_CONN_SRV_HANDSHAKE)
            hs++;
        if (!c->outbound && llk_conn_is_link(c)) {
            links_in++;
            /* One live link per client cluster: a second HELLO replaces. */
            for (llk_conn_t *d = c->next; d; d = d->next)
                FZ_CHECK(d->outbound || !llk_conn_is_link(d) || d->remote_id != c->remote_id);
        }
    }
    /* The handshake accounting: one slot per connection in handshake. */
    FZ_CHECK(e->hs_in_progress == hs);
    /* The received notifications stay within llmlink.NotifyQueueDepth. */
    FZ_CHECK(e->notify.count <= e->opts.notify_queue_depth);
    FZ_CHECK(e->hs_in_progress <= FZ_MAX_CONNS);
    FZ_CHECK(links_in <= e->opts.max_links);
    for (size_t i = 0; i < fz->nconn; i++) {
        fz_conn_t *fc = &fz->conn[i];
        llk_conn_state_t now = fz_live(fc) ? fc->c->state : LLK_CONN_DEAD;
        /* A server handshake either progresses (LINKED, after a WELCOME) or
         * ends: refused with a REJECT (CLOSING), or dropped (DEAD: a bad
         * header, a data stream handed over, its peer gone, its deadline,
         * a keyed client's REJECT of our proof). The authentication
         * exchange adds no state: it runs inside SRV_HANDSHAKE /
         * CLI_HELLO_SENT (llk_conn_t.auth.stage), on the same slot. */
        if (fc->last == LLK_CONN_SRV_HANDSHAKE && now != LLK_CONN_SRV_HANDSHAKE) {
            FZ_CHECK(now == LLK_CONN_LINKED || now == LLK_CONN_CLOSING || now == LLK_CONN_DEAD);
            if (now == LLK_CONN_LINKED)
                FZ_CHECK(fc->saw_welcome && !fc->saw_reject);
            if (now == LLK_CONN_CLOSING)
                FZ_CHECK(fc->saw_reject && !fc->saw_welcome && !fc->saw_attach_ok);
            /* A data stream is answered once: ATTACH_OK or REJECT. */
            FZ_CHECK(!(fc->saw_attach_ok && (fc->saw_reject || fc->saw_welcome)));
        }
        if (now == LLK_CONN_LINKED && !fc->outbound)
            FZ_CHECK(fc->saw_welcome);
        /* Keyed: a link only after both proofs, with the session key
         * both ends derive from this connection's nonces. */
        if (e->auth && now == LLK_CONN_LINKED && fc->last != LLK_CONN_LINKED) {
            FZ_CHECK(fc->outbound ? fc->challenge_ok && fc->saw_hello : fc->proof_ok);
            FZ_CHECK(fc->c->auth.stage == LLK_AUTH_DONE);
            fz_check_session_key(fz, fc);
        }
        /* The client's call completes exactly when the handshake ends:
         * SUCCESS with a link, a failure without one. */
        if (fc->has_waiter) {
            bool pending = fz_live(fc) && fc->c->waiter == &fc->waiter;
            if (fc->last == LLK_CONN_CLI_HELLO_SENT) {
                FZ_CHECK(pending == (now == LLK_CONN_CLI_HELLO_SENT));
                if (!pending) {
                    FZ_CHECK(fc->waiter.done);
                    FZ_CHECK((fc->waiter.status == LLMLINK_SUCCESS) == (now == LLK_CONN_LINKED));
                    FZ_CHECK(memchr(fc->waiter.detail, '\0', sizeof fc->waiter.detail));
                    FZ_CHECK(fc->waiter.detail[0] != '\0');
                }
            }
            if (now == LLK_CONN_LINKED && fc->outbound)
                FZ_CHECK(fc->waiter.done && fc->waiter.status == LLMLINK_SUCCESS);
        }
        fc->last = now;
    }
}

/* Frees every connection and closes the peers; the engine is as
 * fz_engine() found it. e->mu held. */
static inline void fz_reset(fz_t *fz)
{
    llmlink_t *e = fz->e;
    while (e->conns) {
        llk_conn_t *c = e->conns;
        c->waiter = NULL;
        llk_conn_destroy(e, c);
    }
    FZ_CHECK(e->hs_in_progress == 0);
    for (size_t i = 0; i < fz->nconn; i++)
        if (fz->conn[i].peer >= 0)
            close(fz->conn[i].peer);
    fz->nconn = 0;
}

/* ---- building frames ----------------------------------------------------------- */

/* A header for a payload of len bytes (which may not all follow). */
static inline void fz_header(uint8_t *out, uint16_t type, uint32_t len)
{
    /* wire.h's layout, big-endian: magic, version, type, length, flags. */
    out[0] = (uint8_t)(LLK_WIRE_MAGIC >> 24);
    out[1] = (uint8_t)(LLK_WIRE_MAGIC >> 16);
    out[2] = (uint8_t)(LLK_WIRE_MAGIC >> 8);
    out[3] = (uint8_t)LLK_WIRE_MAGIC;
    out[4] = 0;
    out[5] = (uint8_t)LLK_WIRE_VERSION;
    out[6] = (uint8_t)(type >> 8);
    out[7] = (uint8_t)type;
    out[8] = (uint8_t)(len >> 24);
    out[9] = (uint8_t)(len >> 16);
    out[10] = (uint8_t)(len >> 8);
    out[11] = (uint8_t)len;
    memset(out + 12, 0, 4);
}

#endif /* FUZZ_ENGINE_H */
