/*
 * fuzz_attach.c - stateful fuzz target for ATTACH handling on the server
 * (core/xfer/streams.c llk_xfer_on_attach, link/link_api.c): data streams
 * joining a real link, made by the real server handshake, of a PROMPT
 * engine whose owner thread runs (llk_xserver_start), so an accepted owner
 * stream is adopted by it exactly as in production.
 *
 * Each input: a link from cluster FZ_CLI_ID (HELLO on a socketpair, see
 * fuzz_engine.h), optionally a second from FZ_CLI_ID + 1, then steps:
 *   STREAM  a new connection carrying an ATTACH with fields from the input
 *           (the right or a wrong client / server id and incarnation, any
 *           index, direction, transport, host id);
 *   FRAME   a new connection carrying any frame bytes (a bad ATTACH);
 *   AGAIN   another ATTACH on the current stream connection;
 *   TIME    the clock moves; DROP the client closes a link's control
 *           connection (the link dies, its streams with it);
 *   RELINK  the client sends HELLO again on a new connection;
 *   BREAK   a link's transfer side breaks (as when a transfer on it fails:
 *           llk_xfer_kill_link) and an ATTACH for it comes before the
 *           reactor closes its control connection.
 * Checked after every step (besides fz_check_engine): a stream is answered
 * once, ATTACH_OK or REJECT; an ATTACH_OK names a link that was live and
 * not broken when the ATTACH came, with the incarnations of this engine and
 * of that link; each
 * (link, direction, index) holds one stream at a time (a duplicate is
 * refused, issue 14; a second is accepted only once the first ended);
 * every stream a link holds was answered ATTACH_OK; no link holds more
 * data streams than
 * 2 x LLK_MAX_STREAMS; a stream the engine accepted left the reactor (its
 * connection is dead and has no descriptor).
 *
 * After merging `limits` (streams capped at the negotiated count): lower
 * MAX_PER_DIR to the count the HELLO negotiates (LLK_EXT 0x0005).
 */
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "base/clock.h"
#include "fuzz_engine.h"
#include "xfer/xfer.h"

#define MAX_STEPS 128
#define CLI_INCARNATION 0xC0FFEE0000000001ull
/* The most data streams one link may have per direction. */
#define MAX_PER_DIR LLK_MAX_STREAMS

enum { OP_STREAM, OP_FRAME, OP_AGAIN, OP_TIME, OP_DROP, OP_RELINK, OP_BREAK, OP_COUNT };

static uint8_t frame[LLK_WIRE_MAX_FRAME + 64];

/* What the harness knows of one link of the engine. */
typedef struct link {
    fz_conn_t *ctl;      /* its control connection */
    uint64_t client_id;
    llk_xlink_t *xl;     /* while ctl lives */
    uint8_t accepted[2][LLK_MAX_STREAMS]; /* ATTACH_OKs per direction and index */
    fz_conn_t *holder[2][LLK_MAX_STREAMS]; /* the connection of the last one */
} link_t;

static link_t links[4];
static size_t nlinks;

static void hello(fz_t *fz, fz_conn_t *fc, uint64_t client_id)
{
    llk_msg_hello_t m;
    memset(&m, 0, sizeof m);
    m.client_cluster_id = client_id;
    m.target_cluster_id = fz->e->cluster_id;
    m.client_role = LLMLINK_ROLE_DECODER;
    m.incarnation = CLI_INCARNATION + (client_id - FZ_CLI_ID);
    m.liveness_ms = 1000;
    size_t n = llk_wire_encode_hello(frame, sizeof frame, LLK_WIRE_VERSION, &m);
    fz_send(fz, fc, frame, n);
}

static link_t *link_of(uint64_t client_id);

static void new_link(fz_t *fz, uint64_t client_id)
{
    bool had_live = link_of(client_id) != NULL;
    if (nlinks == sizeof links / sizeof links[0])
        return;
    fz_conn_t *fc = fz_accept(fz);
    if (!fc)
        return;
    hello(fz, fc, client_id);
    fz_service(fz);
    fz_check_engine(fz);
    link_t *l = &links[nlinks++];
    memset(l, 0, sizeof *l);
    l->ctl = fc;
    l->client_id = client_id;
    l->xl = fz_live(fc) && fc->c->state == LLK_CONN_LINKED ? llk_xlink_of(fc->c) : NULL;
    /* A well-formed HELLO within MaxLinks links, unless it claims the id of
     * a link that is still alive (access control: that one is kept, the
     * newcomer refused with ALREADY_LINK). */
    if (!l->xl && had_live) {
        nlinks--;
        return;
    }
    FZ_CHECK(l->xl != NULL);
}

/* A link's control connection died since the last step: it has no xlink
 * the harness may look at any more. */
static void forget_dead_links(void)
{
    for (size_t i = 0; i < nlinks; i++)
        if (!fz_live(links[i].ctl) || !llk_conn_is_link(links[i].ctl->c))
            links[i].xl = NULL;
}

static size_t build_attach(fz_t *fz, fz_in_t *in)
{
    llk_msg_attach_t m;
    memset(&m, 0, sizeof m);
    uint8_t who = fz_u8(in);
    m.client_cluster_id = who < 0xF0 ? FZ_CLI_ID + (who & 1) : fz_u64(in);
    m.server_cluster_id = fz_u8(in) < 0xF0 ? fz->e->cluster_id : fz_u64(in);
    m.client_incarnation = CLI_INCARNATION + (m.client_cluster_id - FZ_CLI_ID);
    if (fz_u8(in) >= 0xF0)
        m.client_incarnation = fz_u64(in);
    m.server_incarnation = fz_u8(in) < 0xF0 ? fz->e->incarnation : fz_u64(in);
    uint8_t idx = fz_u8(in);
    m.stream_index = idx < 0xF0 ? idx % (LLK_MAX_STREAMS + 2) : fz_u16(in);
    uint8_t d = fz_u8(in);
    m.direction = d & 1;
    /* tcp mostly; auto / shm / rdma check the host id and transport rules */
    m.transport = (d >> 1) & 3;
    if (d & 0x08)
        memcpy(m.boot_id, fz->e->host.boot_id, sizeof m.boot_id);
    m.pidns = d & 0x10 ? fz->e->host.pidns : fz_u8(in);
    m.pid = d & 0x20 ? fz->e->host.pid : fz_u32(in);
    return llk_wire_encode_attach(frame, sizeof frame, LLK_WIRE_VERSION, &m);
}

static link_t *link_of(uint64_t client_id)
{
    for (size_t i = nlinks; i-- > 0;)
        if (links[i].client_id == client_id && links[i].xl)
            return &links[i];
    return NULL;
}

/* The engine closed fc's stream: its peer reads EOF (or a reset) within
 * a second, after whatever the engine sent before. */
static bool peer_sees_eof(fz_conn_t *fc)
{
    uint8_t buf[4096];
    int64_t end = llk_now_ms() + 1000;
    while (fc->peer >= 0 && llk_now_ms() < end) {
        struct pollfd p = {.fd = fc->peer, .events = POLLIN | POLLRDHUP};
        if (poll(&p, 1, 50) <= 0)
            continue;
        ssize_t r = recv(fc->peer, buf, sizeof buf, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
            return true;
    }
    return false;
}

/* The answer to the ATTACH on fc was just read: check it against the
 * link it named, l, as it was when the ATTACH was sent (NULL: no live link
 * of that client; was_broken: its xlink was broken then). */
static void check_answer(fz_t *fz, fz_conn_t *fc, bool had_ok, link_t *l, bool was_broken)
{
    if (!fc->saw_attach_ok || had_ok)
        return;
    /* Accepted: the ATTACH decoded and named a live, unbroken link of this
     * engine, with the incarnations of both ends. */
    FZ_CHECK(fc->attach_known);
    const llk_msg_attach_t *m = &fc->attach;
    FZ_CHECK(m->server_cluster_id == fz->e->cluster_id);
    FZ_CHECK(m->server_incarnation == fz->e->incarnation);
    FZ_CHECK(l != NULL && l->client_id == m->client_cluster_id);
    FZ_CHECK(!was_broken);
    FZ_CHECK(m->client_incarnation == CLI_INCARNATION + (m->client_cluster_id - FZ_CLI_ID));
    FZ_CHECK(m->stream_index < MAX_PER_DIR && m->direction <= 1);
    /* Never two streams on one index and direction of a link at once: a
     * second is accepted only after the first ended (the owner thread
     * closed it: its peer sees EOF, within a bounded wait). */
    fz_conn_t *prev = l->holder[m->direction][m->stream_index];
    if (prev)
        FZ_CHECK(peer_sees_eof(prev));
    l->holder[m->direction][m->stream_index] = fc;
    if (l->accepted[m->direction][m->stream_index] < 255)
        l->accepted[m->direction][m->stream_index]++;
    /* The stream left the reactor: the connection is dead, fd taken. */
    FZ_CHECK(!fz_live(fc) || (fc->c->state == LLK_CONN_DEAD && fc->c->fd < 0));
}

/* No link holds more streams than it may; counted on the xlink itself
 * (owner streams the owner thread has not ended, requester streams). */
static void check_links(void)
{
    for (size_t i = 0; i < nlinks; i++) {
        llk_xlink_t *xl = links[i].xl;
        if (!xl)
            continue;
        uint32_t own = 0, req = 0;
        bool own_held[LLK_MAX_STREAMS], req_held[LLK_MAX_STREAMS];
        pthread_mutex_lock(&xl->mu); /* the owner thread ends streams under it */
        for (int k = 0; k < LLK_MAX_STREAMS; k++) {
            own_held[k] = xl->own_fd[k] >= 0;
            req_held[k] = xl->req_fd[k] >= 0;
            own += own_held[k];
            req += req_held[k];
        }
        bool broken = xl->broken;
        pthread_mutex_unlock(&xl->mu);
        FZ_CHECK(own <= MAX_PER_DIR && req <= MAX_PER_DIR);
        /* every stream held was accepted with an ATTACH_OK */
        for (int k = 0; k < LLK_MAX_STREAMS && !broken; k++) {
            if (own_held[k])
                FZ_CHECK(links[i].accepted[0][k] > 0);
            if (req_held[k])
                FZ_CHECK(links[i].accepted[1][k] > 0);
        }
    }
}

/* Sends frame[0..n) on fc and checks the answer before the service pass
 * (whose timers may close the link meanwhile). */
static void send_on(fz_t *fz, fz_conn_t *fc, size_t n)
{
    bool had_ok = fc->saw_attach_ok;
    fz_note_attach(fc, frame, n);
    link_t *l = fc->attach_known ? link_of(fc->attach.client_cluster_id) : NULL;
    bool was_broken = l && llk_xlink_is_broken(l->xl);
    fz_send(fz, fc, frame, n);
    fz_read_answers(fz, fc);
    check_answer(fz, fc, had_ok, l, was_broken);
}

static void run(fz_t *fz, fz_in_t *in)
{
    uint8_t cfg = fz_u8(in);
    new_link(fz, FZ_CLI_ID);
    if (cfg & 1)
        new_link(fz, FZ_CLI_ID + 1);
    fz_conn_t *cur = NULL;
    for (int step = 0; step < MAX_STEPS && fz_left(in); step++) {
        switch (fz_u8(in) % OP_COUNT) {
        case OP_STREAM:
        case OP_FRAME: {
            bool raw = in->pos > 0 && in->p[in->pos - 1] % OP_COUNT == OP_FRAME;
            fz_conn_t *fc = fz_accept(fz);
            if (!fc)
                break;
            cur = fc;
            size_t n;
            if (raw) {
                uint32_t len = fz_u8(in);
                const uint8_t *p = fz_take(in, len, &n);
                fz_header(frame, LLK_MSG_ATTACH, len);
                memcpy(frame + LLK_WIRE_HEADER_SIZE, p, n);
                n += LLK_WIRE_HEADER_SIZE;
            } else {
                n = build_attach(fz, in);
            }
            send_on(fz, fc, n);
            break;
        }
        case OP_AGAIN:
            if (cur)
                send_on(fz, cur, build_attach(fz, in));
            break;
        case OP_TIME: fz->now += (int64_t)fz_u16(in) * 8; break;
        case OP_DROP:
            if (nlinks)
                fz_peer_close(fz, links[fz_u8(in) % nlinks].ctl);
            break;
        case OP_RELINK: new_link(fz, FZ_CLI_ID + (fz_u8(in) & 1)); break;
        case OP_BREAK: {
            /* A transfer on the link failed: llk_xfer_kill_link breaks the
             * xlink first, and the control connection closes only at the
             * reactor's next pass. An ATTACH in between must be refused. */
            link_t *l = nlinks ? &links[fz_u8(in) % nlinks] : NULL;
            if (l && l->xl)
                llk_xlink_break(l->xl, "fuzz: a transfer on the link failed");
            fz_conn_t *fc = fz_accept(fz);
            if (fc) {
                cur = fc;
                send_on(fz, fc, build_attach(fz, in));
            }
            break;
        }
        }
        fz_service(fz);
        forget_dead_links();
        fz_check_engine(fz);
        check_links();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static llmlink_t *e;
    fz_t fz = {.now = FZ_T0};
    fz.e = fz_engine(LLMLINK_ROLE_PROMPT, FZ_SRV_ID, false);
    if (!e) {
        e = fz.e;
        /* Set once: the owner thread reads them. */
        e->opts.max_links = 4;
        e->opts.max_concurrent_handshakes = FZ_MAX_CONNS;
        e->opts.liveness_interval_ms = 1000;
        /* The owner thread adopts accepted owner streams; it lives as long
         * as the process (the engine is never finalized). */
        FZ_CHECK(llk_xserver_start(e) == LLMLINK_SUCCESS);
    }
    nlinks = 0;
    fz_in_t in = {data, size, 0};
    pthread_mutex_lock(&e->mu);
    run(&fz, &in);
    fz_reset(&fz);
    pthread_mutex_unlock(&e->mu);
    return 0;
}
