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
 *   EOF     the current peer closes.
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
};

/* Extensions a HELLO / WELCOME step may carry (type, payload length). */
static const struct {
    uint16_t type, len;
} fz_exts[] = {
    {LLK_EXT_DATA_STREAMS, 0},    {LLK_EXT_RDMA, 0},         {LLK_EXT_WAIT_TIME, 4},
    {LLK_EXT_RDMA_READ_DEPTH, 0}, {0x7ff0u, 3},              {LLK_WIRE_EXT_CRITICAL | 0x0042u, 0},
    {LLK_EXT_WAIT_TIME, 2},
};

#define N_TYPES (sizeof fz_types / sizeof fz_types[0])
#define N_EXTS (sizeof fz_exts / sizeof fz_exts[0])
#define MAX_STEPS 256

enum { OP_FRAME, OP_RAW, OP_SPLIT, OP_HELLO, OP_WELCOME, OP_ATTACH, OP_TIME, OP_ACCEPT,
       OP_SWITCH, OP_EOF, OP_COUNT };

static uint8_t frame[LLK_WIRE_MAX_FRAME + 128];
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

/* A frame of a known type, length from the input, payload what follows. */
static size_t build_frame(fz_in_t *in)
{
    uint16_t type = fz_types[fz_u8(in) % N_TYPES];
    uint32_t len = fz_u16(in) % (LLK_WIRE_MAX_PAYLOAD + 64);
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
    fz_check_engine(fz);
    for (int step = 0; step < MAX_STEPS && fz_left(in); step++) {
        size_t n = 0;
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
        }
        if (n)
            fz_send(fz, cur, frame, n);
        fz_service(fz);
        fz_check_engine(fz);
    }
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
    run(&fz, &in, expected_role);
    fz_reset(&fz);
    pthread_mutex_unlock(&e->mu);
    return 0;
}
