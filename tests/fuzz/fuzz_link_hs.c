/*
 * fuzz_link_hs.c - stateful fuzz target for the link handshake: the server
 * side (core/link/server.c), the client side (client.c: WELCOME / REJECT),
 * and what an established link reads (manager.c), driven through conn.c's
 * real framing on socketpairs (see fuzz_engine.h).
 *
 * The input is a configuration byte pair, then a program of steps, each
 * one opcode byte and its operands:
 *   FRAME   a frame of a known type (fz_types[]) with a length from the
 *           input and as much payload as follows (a short last frame);
 *   RAW     raw bytes: bad headers, frames split anywhere;
 *   SPLIT   a frame written in chunks of an input-chosen size, the engine
 *           reading after each;
 *   HELLO / WELCOME / ATTACH
 *           a well-formed frame with fields from the input (right or wrong
 *           cluster ids, roles, incarnations, extensions from fz_exts[]),
 *           so that deep states are reached without guessing magic;
 *   TIME    the clock moves (deadlines, liveness, close grace);
 *   ACCEPT  a new server connection (or client attempt) becomes current;
 *   SWITCH  another connection becomes current;
 *   EOF     the current peer closes;
 *   AUTH_HELLO / AUTH_PROOF / AUTH_CHALLENGE
 *           the authentication exchange (link/wire.h), computed with
 *           auth's own functions (link/auth.h) from the nonces the engine
 *           sent: the right proof or challenge, or a wrong one (the wrong
 *           key, a reflected MAC, a stale Ns replayed, a flipped bit).
 * Keyed mode (the second configuration byte's 0x80): the engine has
 * llmlink.AuthKey (a fixed test key, fuzz_engine.h); its client attempts
 * open with AUTH_HELLO. Then also checked: no WELCOME before the peer's
 * proof checked, no HELLO before the server's, every REJECT before them
 * AUTH_FAILED (or VERSION_MISMATCH) and silent about the engine, the
 * engine's challenges fresh and right, a wrong proof or challenge read
 * whole ends the handshake with REJECT AUTH_FAILED (counted on the
 * server, the call's status on the client) and no link, and a link's
 * session key is the one the harness derives from the same nonces.
 * After every step the reactor's service pass runs and fz_check_engine()
 * checks the invariants: the handshake slots equal the connections in
 * handshake, links never exceed llmlink.MaxLinks, one live link per client
 * cluster, a handshake ends LINKED after a WELCOME, CLOSING after a REJECT
 * or dropped, a client's call completes exactly when its handshake ends
 * (SUCCESS iff LINKED), and everything the engine sent is well-formed.
 * No leak (ASan's leak check) and no crash, of course.
 *
 * Adding a message type (the AUTH_* frames) is one line in fz_types[]; an
 * extension, one line in fz_exts[]; a seed, one entry in
 * tests/fuzz/gen_seeds.py.
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_engine.h"

/* The control frame types a peer may send (wire.h llk_msg_type_t). */
static const uint16_t fz_types[] = {
    LLK_MSG_HELLO,  LLK_MSG_WELCOME,    LLK_MSG_REJECT, LLK_MSG_HEARTBEAT,
    LLK_MSG_UNLINK, LLK_MSG_UNLINK_ACK, LLK_MSG_ATTACH, LLK_MSG_ATTACH_OK,
    LLK_MSG_AUTH_HELLO, LLK_MSG_AUTH_CHALLENGE, LLK_MSG_AUTH_PROOF,
    LLK_MSG_NOTIFY, LLK_MSG_NOTIFY_ACK,
};

/* Extensions a HELLO / WELCOME step may carry (type, payload length). */
static const struct {
    uint16_t type, len;
} fz_exts[] = {
    {LLK_EXT_DATA_STREAMS, 0},    {LLK_EXT_RDMA, 0},         {LLK_EXT_WAIT_TIME, 4},
    {LLK_EXT_RDMA_READ_DEPTH, 0}, {0x7ff0u, 3},              {LLK_WIRE_EXT_CRITICAL | 0x0042u, 0},
    {LLK_EXT_WAIT_TIME, 2},       {LLK_EXT_NOTIFY, 0},
};

#define N_TYPES (sizeof fz_types / sizeof fz_types[0])
#define N_EXTS (sizeof fz_exts / sizeof fz_exts[0])
#define MAX_STEPS 256

enum { OP_FRAME, OP_RAW, OP_SPLIT, OP_HELLO, OP_WELCOME, OP_ATTACH, OP_TIME, OP_ACCEPT,
       OP_SWITCH, OP_EOF, OP_AUTH_HELLO, OP_AUTH_PROOF, OP_AUTH_CHALLENGE, OP_COUNT };

static uint8_t frame[LLK_WIRE_MAX_NOTIFY_FRAME + 128];
static uint8_t ext_data[LLK_WIRE_MAX_EXTENSIONS][8];

/* Up to 3 extensions from the input (their data too). */
static uint16_t fill_exts(fz_in_t *in, llk_ext_t *ext)
{
    uint16_t n = fz_u8(in) % 4;
    for (uint16_t i = 0; i < n; i++) {
        uint8_t k = fz_u8(in) % N_EXTS;
        ext[i].type = fz_exts[k].type;
        ext[i].length = fz_exts[k].len;
        for (uint16_t b = 0; b < ext[i].length; b++)
            ext_data[i][b] = fz_u8(in);
        ext[i].data = ext_data[i];
    }
    return n;
}

/* A cluster id the engine knows (its own, the client's) or any. */
static uint64_t pick_id(fz_in_t *in, uint64_t usual)
{
    uint8_t k = fz_u8(in);
    if (k < 0xC0)
        return usual;
    return k < 0xF0 ? usual + (k & 3) : fz_u64(in);
}

static size_t build_hello(fz_t *fz, fz_in_t *in)
{
    llk_msg_hello_t m;
    memset(&m, 0, sizeof m);
    m.client_cluster_id = pick_id(in, FZ_CLI_ID);
    m.target_cluster_id = pick_id(in, fz->e->cluster_id);
    uint8_t r = fz_u8(in);
    m.client_role = r & 3;
    m.expected_server_role = (r >> 2) & 3;
    m.incarnation = 0xC0FFEE00u + fz_u8(in);
    m.liveness_ms = LLK_LIVENESS_MIN_MS + fz_u16(in);
    m.num_ext = fill_exts(in, m.ext);
    return llk_wire_encode_hello(frame, sizeof frame, LLK_WIRE_VERSION, &m);
}

static size_t build_welcome(fz_in_t *in)
{
    llk_msg_welcome_t w;
    memset(&w, 0, sizeof w);
    w.server_cluster_id = pick_id(in, FZ_SRV_ID);
    w.server_role = fz_u8(in) & 3;
    w.liveness_ms = LLK_LIVENESS_MIN_MS + fz_u16(in);
    w.incarnation = 0xBEEF0000u + fz_u8(in);
    w.num_ext = fill_exts(in, w.ext);
    return llk_wire_encode_welcome(frame, sizeof frame, LLK_WIRE_VERSION, &w);
}

static size_t build_attach(fz_t *fz, fz_in_t *in)
{
    llk_msg_attach_t m;
    memset(&m, 0, sizeof m);
    m.client_cluster_id = pick_id(in, FZ_CLI_ID);
    m.server_cluster_id = pick_id(in, fz->e->cluster_id);
    m.client_incarnation = 0xC0FFEE00u + fz_u8(in);
    m.server_incarnation = fz_u8(in) < 0xE0 ? fz->e->incarnation : fz_u64(in);
    m.stream_index = fz_u8(in);
    uint8_t d = fz_u8(in);
    m.direction = d & 1;
    m.transport = (d >> 1) % 4;
    m.pid = fz_u8(in);
    return llk_wire_encode_attach(frame, sizeof frame, LLK_WIRE_VERSION, &m);
}

/* ---- authentication steps (keyed mode: the harness is the peer that
 * holds the key, or pretends to) ---- */

/* A nonce from one input byte (a whole 32 bytes would mostly be noise). */
static void fill_nonce(uint8_t out[LLK_AUTH_NONCE_SIZE], uint8_t seed)
{
    for (unsigned i = 0; i < LLK_AUTH_NONCE_SIZE; i++)
        out[i] = (uint8_t)(seed + 7 * i);
}

/* AUTH_HELLO as a client sends it: scheme 1 mostly (another: refused). */
static size_t build_auth_hello(fz_in_t *in)
{
    llk_msg_auth_hello_t m;
    uint8_t s = fz_u8(in);
    m.scheme = s < 0xF0 ? LLK_AUTH_SCHEME_PSK1 : (uint8_t)(s & 0x0f);
    fill_nonce(m.nc, fz_u8(in));
    return llk_wire_encode_auth_hello(frame, sizeof frame, LLK_WIRE_VERSION, &m);
}

/* The Ns of the previous connection's challenge: a replayed proof. */
static uint8_t stale_ns[LLK_AUTH_NONCE_SIZE];

/* AUTH_PROOF to the engine's challenge on fc: right (made with the key
 * from the nonces the engine and the harness sent) or wrong (the wrong
 * key, the engine's own MAC_s reflected, a stale Ns replayed, one bit
 * flipped); with 0x40 a HELLO follows in the same write, as a client
 * sends it. fc->proof_ok says the right one went out after a challenge. */
static size_t build_auth_proof(fz_t *fz, fz_in_t *in, fz_conn_t *fc, bool *wrong)
{
    uint8_t how = fz_u8(in);
    const llk_auth_key_t *key = fz->key ? fz->key : fz_auth_key(1);
    uint8_t mac[LLK_AUTH_MAC_SIZE];
    int kind = how & 7;
    *wrong = kind >= 4;
    switch (kind) {
    case 4: FZ_CHECK(llk_auth_mac(fz_auth_key(2), false, fc->nc, fc->ns, mac) == 0); break;
    case 5: FZ_CHECK(llk_auth_mac(key, true, fc->nc, fc->ns, mac) == 0); break;
    case 6: FZ_CHECK(llk_auth_mac(key, false, fc->nc, stale_ns, mac) == 0); break;
    default: FZ_CHECK(llk_auth_mac(key, false, fc->nc, fc->ns, mac) == 0); break;
    }
    if (kind == 7)
        mac[fz_u8(in) % LLK_AUTH_MAC_SIZE] ^= (uint8_t)(1u << (how >> 5 & 7));
    if (!*wrong && fc->got_challenge)
        fc->proof_ok = true;
    size_t n = llk_wire_encode_auth_proof(frame, sizeof frame, LLK_WIRE_VERSION, mac);
    if (how & 0x40) {
        size_t proof = n;
        static uint8_t keep[LLK_WIRE_HEADER_SIZE + LLK_AUTH_MAC_SIZE];
        memcpy(keep, frame, proof);
        n = build_hello(fz, in); /* writes frame[] */
        memmove(frame + proof, frame, n);
        memcpy(frame, keep, proof);
        n += proof;
    }
    return n;
}

/* AUTH_CHALLENGE to a keyed client's AUTH_HELLO on fc: Ns from the input,
 * MAC_s right, made with the wrong key, or the client label (a reflected
 * MAC_c). fc->challenge_ok: the first right one after the engine's AUTH_HELLO. */
static size_t build_auth_challenge(fz_t *fz, fz_in_t *in, fz_conn_t *fc, bool *wrong)
{
    uint8_t how = fz_u8(in);
    llk_msg_auth_challenge_t ch;
    const llk_auth_key_t *key = fz->key ? fz->key : fz_auth_key(1);
    fill_nonce(ch.ns, fz_u8(in));
    int kind = how & 3;
    *wrong = kind >= 2;
    FZ_CHECK(llk_auth_mac(kind == 2 ? fz_auth_key(2) : key, kind != 3, fc->nc, ch.ns, ch.mac) ==
             0);
    if (!*wrong && fc->got_auth_hello && !fc->challenge_ok) {
        memcpy(fc->ns, ch.ns, sizeof fc->ns);
        fc->challenge_ok = true;
    }
    return llk_wire_encode_auth_challenge(frame, sizeof frame, LLK_WIRE_VERSION, &ch);
}

/* The connection waits for the frame the step sends next, and nothing of
 * an earlier frame is half read (the step's frame is read whole). */
static bool waits(const fz_conn_t *fc, llk_conn_state_t s, llk_auth_stage_t stage)
{
    return fz_live(fc) && fc->c->state == s && fc->c->auth.stage == stage && fc->c->rx_len == 0 &&
           fc->c->fd >= 0 && fc->peer >= 0 && !fc->peer_wr_closed;
}

/* After a wrong proof or challenge the step's frame was read whole
 * against: the exchange failed with AUTH_FAILED, counted, and no link. */
static void check_auth_failed(fz_t *fz, fz_conn_t *fc, uint64_t failures_before)
{
    llk_conn_state_t now = fz_live(fc) ? fc->c->state : LLK_CONN_DEAD;
    FZ_CHECK(now == LLK_CONN_CLOSING || now == LLK_CONN_DEAD);
    FZ_CHECK(!fc->saw_welcome && !fc->saw_hello);
    FZ_CHECK(fc->saw_reject && fc->reject_status == LLMLINK_AUTH_FAILED);
    if (fc->outbound)
        FZ_CHECK(fc->waiter.done && fc->waiter.status == LLMLINK_AUTH_FAILED);
    else
        FZ_CHECK(fz->e->auth_failures > failures_before);
}

/* A frame of a known type, length from the input, payload what follows. */
static size_t build_frame(fz_in_t *in)
{
    uint16_t type = fz_types[fz_u8(in) % N_TYPES];
    /* NOTIFY may be longer than the rest (wire.h): its limit, and over. */
    uint32_t len = fz_u16(in) % (LLK_WIRE_MAX_NOTIFY_PAYLOAD + 64);
    size_t got;
    const uint8_t *p = fz_take(in, len, &got);
    fz_header(frame, type, len);
    memcpy(frame + LLK_WIRE_HEADER_SIZE, p, got);
    return LLK_WIRE_HEADER_SIZE + got;
}

/* A new connection of the kind the engine's role takes: a server
 * handshake (PROMPT, MIX) or a client attempt (DECODER, MIX). */
static fz_conn_t *new_conn(fz_t *fz, uint8_t pick, uint32_t expected_role)
{
    bool client = fz->e->role == LLMLINK_ROLE_DECODER ||
                  (fz->e->role == LLMLINK_ROLE_MIX && (pick & 1));
    return client ? fz_hello_sent(fz, FZ_SRV_ID, expected_role) : fz_accept(fz);
}

static void run(fz_t *fz, fz_in_t *in, uint32_t expected_role)
{
    fz_conn_t *cur = new_conn(fz, fz_u8(in), expected_role);
    fz_service(fz); /* a keyed client's AUTH_HELLO goes out */
    fz_check_engine(fz);
    for (int step = 0; step < MAX_STEPS && fz_left(in); step++) {
        size_t n = 0;
        /* A wrong proof or challenge the engine reads whole, waiting for it. */
        bool wrong = false, must_fail = false;
        uint64_t failures = fz->e->auth_failures;
        switch (fz_u8(in) % OP_COUNT) {
        case OP_FRAME: n = build_frame(in); break;
        case OP_HELLO: n = build_hello(fz, in); break;
        case OP_WELCOME: n = build_welcome(in); break;
        case OP_ATTACH: n = build_attach(fz, in); break;
        case OP_RAW: {
            size_t got;
            const uint8_t *p = fz_take(in, fz_u8(in), &got);
            fz_send(fz, cur, p, got);
            break;
        }
        case OP_SPLIT: {
            size_t chunk = 1 + fz_u8(in) % 24;
            size_t len = build_frame(in);
            for (size_t off = 0; off < len; off += chunk)
                fz_send(fz, cur, frame + off, len - off < chunk ? len - off : chunk);
            break;
        }
        case OP_TIME: fz->now += (int64_t)fz_u16(in) * 4; break;
        case OP_ACCEPT: {
            fz_conn_t *fc = new_conn(fz, fz_u8(in), expected_role);
            if (fc)
                cur = fc;
            break;
        }
        case OP_SWITCH: cur = &fz->conn[fz_u8(in) % fz->nconn]; break;
        case OP_EOF: fz_peer_close(fz, cur); break;
        case OP_AUTH_HELLO: n = build_auth_hello(in); break;
        case OP_AUTH_PROOF:
            n = build_auth_proof(fz, in, cur, &wrong);
            must_fail = wrong && fz->e->auth && cur->got_challenge &&
                        waits(cur, LLK_CONN_SRV_HANDSHAKE, LLK_AUTH_SRV_CHALLENGED);
            break;
        case OP_AUTH_CHALLENGE:
            n = build_auth_challenge(fz, in, cur, &wrong);
            must_fail = wrong && fz->e->auth && cur->got_auth_hello &&
                        waits(cur, LLK_CONN_CLI_HELLO_SENT, LLK_AUTH_CLI_WAIT_CHALLENGE);
            break;
        }
        if (n)
            fz_send(fz, cur, frame, n);
        fz_service(fz);
        if (must_fail)
            check_auth_failed(fz, cur, failures);
        fz_check_engine(fz);
    }
    for (size_t i = 0; i < fz->nconn; i++)
        if (fz->conn[i].got_challenge)
            memcpy(stale_ns, fz->conn[i].ns, sizeof stale_ns);
    /* The end of the input: the peers go, the timers run out. */
    for (size_t i = 0; i < fz->nconn; i++)
        fz_peer_close(fz, &fz->conn[i]);
    fz->now += 10000;
    fz_service(fz);
    fz_check_engine(fz);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in_t in = {data, size, 0};
    uint8_t cfg = fz_u8(&in), cfg2 = fz_u8(&in);
    static const llmlink_role_t roles[4] = {LLMLINK_ROLE_PROMPT, LLMLINK_ROLE_MIX,
                                            LLMLINK_ROLE_DECODER, LLMLINK_ROLE_MIX};
    static const uint64_t ids[4] = {FZ_SRV_ID, 300, FZ_CLI_ID, 300};
    fz_t fz = {.now = FZ_T0};
    fz.e = fz_engine(roles[cfg & 3], ids[cfg & 3], true);
    llmlink_t *e = fz.e;
    e->opts.max_links = 1 + ((cfg >> 2) & 3);
    e->test_legacy_wait = cfg & 0x10;
    e->test_legacy_rails = cfg & 0x20;
    e->opts.max_concurrent_handshakes = FZ_MAX_CONNS;
    e->opts.handshake_timeout_ms = 500;
    e->opts.first_frame_timeout_ms = 1 + (uint32_t)(cfg2 & 0x7f) * 8;
    e->opts.liveness_interval_ms = 1000;
    uint32_t expected_role = (cfg >> 6) & 3;

    pthread_mutex_lock(&e->mu);
    /* 0x80: the engine has the key (llmlink.AuthKey), the harness's
     * peers too (or pretend to: the wrong-key steps). */
    fz_set_key(&fz, cfg2 & 0x80);
    run(&fz, &in, expected_role);
    fz_reset(&fz);
    pthread_mutex_unlock(&e->mu);
    return 0;
}
