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
 * The configuration byte also chooses the stream count the links' HELLOs
 * announce (LLK_EXT_STREAM_COUNT, or none: LLK_MAX_STREAMS per direction)
 * and, with 0x10, keyed mode: the engine has llmlink.AuthKey, every
 * connection the harness opens runs the authentication exchange first
 * (link/wire.h "Authentication", computed with auth's own functions from
 * the nonces the engine sent), and each STREAM / AGAIN step takes an
 * auth byte: the right proof and ATTACH MAC (made with the link's session
 * key, derived by the harness from the control connection's nonces and
 * checked equal to the link record's), or no exchange, no MAC, another
 * link's key, a replayed MAC (the previous stream's nonces), a wrong proof,
 * a flipped bit. Checked besides: an ATTACH_OK only for the right MAC of
 * the link the ATTACH names; a wrong MAC for a live link, a wrong proof or
 * none end in REJECT AUTH_FAILED, counted.
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

enum { OP_STREAM, OP_FRAME, OP_AGAIN, OP_TIME, OP_DROP, OP_RELINK, OP_BREAK, OP_COUNT };

/* Keyed mode: what a STREAM / AGAIN step's auth byte asks for (& 15). */
enum { A_RIGHT_LAST = 7, A_NONE, A_NO_MAC, A_OTHER_KS, A_STALE, A_BAD_PROOF, A_FLIP };

static uint8_t frame[LLK_WIRE_MAX_FRAME + 64];

/* What the harness knows of one link of the engine. */
typedef struct link {
    fz_conn_t *ctl;      /* its control connection */
    uint64_t client_id;
    llk_xlink_t *xl;     /* while ctl lives */
    uint8_t accepted[2][LLK_MAX_STREAMS]; /* ATTACH_OKs per direction and index */
    fz_conn_t *holder[2][LLK_MAX_STREAMS]; /* the connection of the last one */
    /* The most data streams it may have per direction: what its HELLO
     * announced (LLK_EXT_STREAM_COUNT / 2), LLK_MAX_STREAMS without. */
    uint32_t per_dir;
    uint8_t ks[32]; /* keyed: its session key, as the harness derived it */
} link_t;

static link_t links[4];
static size_t nlinks;
/* Streams per direction the HELLOs announce (0: no extension). */
static uint32_t announce;
/* The nonces of the last stream's exchange (a replayed MAC uses them). */
static uint8_t last_nc[LLK_AUTH_NONCE_SIZE], last_ns[LLK_AUTH_NONCE_SIZE];
static uint8_t nonce_seq;

/* HELLO at frame + off; its length. */
static size_t hello(fz_t *fz, size_t off, uint64_t client_id)
{
    llk_msg_hello_t m;
    memset(&m, 0, sizeof m);
    m.client_cluster_id = client_id;
    m.target_cluster_id = fz->e->cluster_id;
    m.client_role = LLMLINK_ROLE_DECODER;
    m.incarnation = CLI_INCARNATION + (client_id - FZ_CLI_ID);
    m.liveness_ms = 1000;
    uint8_t count[2];
    if (announce)
        llk_wire_ext_stream_count(&m.ext[m.num_ext++], count, (uint16_t)(2 * announce));
    return llk_wire_encode_hello(frame + off, sizeof frame - off, LLK_WIRE_VERSION, &m);
}

/* A link's control connection died since the last step: it has no xlink
 * the harness may look at any more. */
static void forget_dead_links(void)
{
    for (size_t i = 0; i < nlinks; i++)
        if (!fz_live(links[i].ctl) || !llk_conn_is_link(links[i].ctl->c))
            links[i].xl = NULL;
}

/* Keyed: AUTH_HELLO with a new nonce on the fresh connection fc, and the
 * engine's challenge read back (fz_read_answers checks its MAC_s and
 * records Ns). true when it came. */
static bool auth_hello(fz_t *fz, fz_conn_t *fc)
{
    llk_msg_auth_hello_t m = {.scheme = LLK_AUTH_SCHEME_PSK1};
    nonce_seq++;
    for (unsigned i = 0; i < sizeof m.nc; i++)
        m.nc[i] = (uint8_t)(nonce_seq * 31 + i);
    size_t n = llk_wire_encode_auth_hello(frame, sizeof frame, LLK_WIRE_VERSION, &m);
    fz_send(fz, fc, frame, n);
    fz_service(fz); /* the reactor's pass: the challenge goes out */
    forget_dead_links();
    return fc->got_challenge;
}

/* AUTH_PROOF for fc's exchange at frame[0..); its length. wrong: made
 * with the wrong key. */
static size_t auth_proof(fz_t *fz, fz_conn_t *fc, bool wrong)
{
    uint8_t mac[LLK_AUTH_MAC_SIZE];
    FZ_CHECK(llk_auth_mac(wrong ? fz_auth_key(2) : fz->key, false, fc->nc, fc->ns, mac) == 0);
    return llk_wire_encode_auth_proof(frame, sizeof frame, LLK_WIRE_VERSION, mac);
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
    size_t n = 0;
    if (fz->key) {
        FZ_CHECK(auth_hello(fz, fc));
        n = auth_proof(fz, fc, false);
        fc->proof_ok = true;
    }
    n += hello(fz, n, client_id); /* keyed: in the proof's write, as a client sends it */
    fz_send(fz, fc, frame, n);
    fz_service(fz);
    fz_check_engine(fz); /* keyed: checks the link's session key */
    link_t *l = &links[nlinks++];
    memset(l, 0, sizeof *l);
    l->ctl = fc;
    l->client_id = client_id;
    l->per_dir = announce ? announce : LLK_MAX_STREAMS;
    l->xl = fz_live(fc) && fc->c->state == LLK_CONN_LINKED ? llk_xlink_of(fc->c) : NULL;
    /* A well-formed HELLO within MaxLinks links, unless it claims the id of
     * a link that is still alive (access control: that one is kept, the
     * newcomer refused with ALREADY_LINK). */
    if (!l->xl && had_live) {
        nlinks--;
        return;
    }
    FZ_CHECK(l->xl != NULL);
    if (fz->key)
        FZ_CHECK(llk_auth_session_key(fz->key, fc->nc, fc->ns, l->ks) == 0);
}

/* An ATTACH at frame + off from the input; its length. The message is
 * left in *out (keyed: its MAC is added by add_mac). */
static size_t build_attach_at(fz_t *fz, fz_in_t *in, size_t off, llk_msg_attach_t *out)
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
    *out = m;
    return llk_wire_encode_attach(frame + off, sizeof frame - off, LLK_WIRE_VERSION, &m);
}

static size_t build_attach(fz_t *fz, fz_in_t *in)
{
    llk_msg_attach_t m;
    return build_attach_at(fz, in, 0, &m);
}

static link_t *link_of(uint64_t client_id)
{
    for (size_t i = nlinks; i-- > 0;)
        if (links[i].client_id == client_id && links[i].xl)
            return &links[i];
    return NULL;
}

/* ---- keyed mode: a data stream's authentication (link/wire.h) ---- */

/* The ATTACH m at frame + off gets LLK_EXT_ATTACH_MAC, made with ks over
 * the nonces nc | ns and the ATTACH's fixed bytes (bit flip < 256: that
 * bit of the MAC flipped); its new length. */
static size_t add_mac(size_t off, llk_msg_attach_t *m, const uint8_t ks[32], const uint8_t *nc,
                      const uint8_t *ns, int flip)
{
    m->has_mac = false;
    size_t a = llk_wire_encode_attach(frame + off, sizeof frame - off, LLK_WIRE_VERSION, m);
    FZ_CHECK(a > 0);
    FZ_CHECK(llk_auth_attach_mac(ks, nc, ns, frame + off + LLK_WIRE_HEADER_SIZE, m->mac) == 0);
    if (flip >= 0)
        m->mac[(flip >> 3) % LLK_AUTH_MAC_SIZE] ^= (uint8_t)(1u << (flip & 7));
    m->has_mac = true;
    return llk_wire_encode_attach(frame + off, sizeof frame - off, LLK_WIRE_VERSION, m);
}

/* A fresh stream connection fc: the step's auth byte, and unless it says
 * A_NONE the exchange up to the engine's challenge. */
static uint8_t keyed_open(fz_t *fz, fz_in_t *in, fz_conn_t *fc)
{
    uint8_t how = fz_u8(in) & 15;
    if (how != A_NONE)
        auth_hello(fz, fc);
    return how;
}

/* What the harness knows of the frames it sends on a stream connection:
 * good, the ATTACH may be accepted (its proof and MAC are right for the
 * link it names, or there is no key); auth_fails, it must be refused with
 * AUTH_FAILED (a missing or wrong proof on a fresh connection; a missing
 * or wrong MAC on an ATTACH naming a live, unbroken link exactly). */
typedef struct verdict {
    bool good, auth_fails, names_link;
    link_t *mac_link; /* auth_fails for the MAC: the link the ATTACH names */
} verdict_t;

/* The link whose MAC the last step's ATTACH got wrong (NULL: none). */
static link_t *mac_link;

/* Keyed: the rest of a stream's frames on fc, at frame[0..): the proof
 * (fresh: after keyed_open), then the ATTACH (from the input) with the MAC
 * how asks for, starting at *off; the total length. */
static size_t keyed_attach(fz_t *fz, fz_in_t *in, fz_conn_t *fc, uint8_t how, bool fresh,
                           size_t *off, verdict_t *v)
{
    static const uint8_t zero_ks[32];
    size_t n = 0;
    bool proof_right = fc->proof_ok;
    if (fresh && how != A_NONE) {
        n = auth_proof(fz, fc, how == A_BAD_PROOF);
        proof_right = fc->got_challenge && how != A_BAD_PROOF;
        fc->proof_ok = proof_right;
    }
    llk_msg_attach_t m;
    size_t a = build_attach_at(fz, in, n, &m);
    link_t *l = link_of(m.client_cluster_id);
    const uint8_t *ks = l ? l->ks : zero_ks;
    if (how == A_OTHER_KS) {
        const uint8_t *other = zero_ks;
        for (size_t i = 0; i < nlinks; i++)
            if (memcmp(links[i].ks, ks, 32) != 0)
                other = links[i].ks;
        ks = other;
    }
    const uint8_t *nc = how == A_STALE ? last_nc : fc->nc, *ns = how == A_STALE ? last_ns : fc->ns;
    if (how != A_NONE && how != A_NO_MAC)
        a = add_mac(n, &m, ks, nc, ns, how == A_FLIP ? fz_u8(in) : -1);
    bool mac_right = how <= A_RIGHT_LAST || how > A_FLIP;
    v->names_link = l && m.server_cluster_id == fz->e->cluster_id &&
                    m.server_incarnation == fz->e->incarnation &&
                    m.client_incarnation == CLI_INCARNATION + (m.client_cluster_id - FZ_CLI_ID);
    v->good = proof_right && mac_right && l;
    v->auth_fails = fresh && (how == A_NONE || (how == A_BAD_PROOF && fc->got_challenge));
    v->mac_link = NULL;
    if (!v->auth_fails && proof_right && !mac_right && v->names_link) {
        v->auth_fails = true; /* unless the link is broken: send_on */
        v->mac_link = l;
    }
    if (fc->got_challenge) {
        memcpy(last_nc, fc->nc, sizeof last_nc);
        memcpy(last_ns, fc->ns, sizeof last_ns);
    }
    *off = n;
    return n + a;
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
static void check_answer(fz_t *fz, fz_conn_t *fc, bool had_ok, link_t *l, bool was_broken,
                         bool good)
{
    if (!fc->saw_attach_ok || had_ok)
        return;
    /* Keyed: only a stream that proved the key and the link. */
    FZ_CHECK(!fz->key || good);
    /* Accepted: the ATTACH decoded and named a live, unbroken link of this
     * engine, with the incarnations of both ends. */
    FZ_CHECK(fc->attach_known);
    const llk_msg_attach_t *m = &fc->attach;
    FZ_CHECK(m->server_cluster_id == fz->e->cluster_id);
    FZ_CHECK(m->server_incarnation == fz->e->incarnation);
    FZ_CHECK(l != NULL && l->client_id == m->client_cluster_id);
    FZ_CHECK(!was_broken);
    FZ_CHECK(m->client_incarnation == CLI_INCARNATION + (m->client_cluster_id - FZ_CLI_ID));
    FZ_CHECK(m->stream_index < l->per_dir && m->direction <= 1);
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
        FZ_CHECK(own <= links[i].per_dir && req <= links[i].per_dir);
        /* every stream held was accepted with an ATTACH_OK */
        for (int k = 0; k < LLK_MAX_STREAMS && !broken; k++) {
            if (own_held[k])
                FZ_CHECK(links[i].accepted[0][k] > 0);
            if (req_held[k])
                FZ_CHECK(links[i].accepted[1][k] > 0);
        }
    }
}

/* Sends frame[0..n) on fc, the ATTACH at frame + off, and checks the
 * answer before the service pass (whose timers may close the link
 * meanwhile). v: what keyed mode expects (NULL: no key). true when the
 * frames must be refused with AUTH_FAILED (checked after the pass). */
static bool send_on(fz_t *fz, fz_conn_t *fc, size_t off, size_t n, const verdict_t *v)
{
    bool had_ok = fc->saw_attach_ok;
    fz_note_attach(fc, frame + off, n - off);
    link_t *l = fc->attach_known ? link_of(fc->attach.client_cluster_id) : NULL;
    bool was_broken = l && llk_xlink_is_broken(l->xl);
    fz_send(fz, fc, frame, n);
    fz_read_answers(fz, fc);
    check_answer(fz, fc, had_ok, l, was_broken, !v || v->good);
    /* A wrong MAC for a broken link is refused for the break first. */
    mac_link = v ? v->mac_link : NULL;
    return v && v->auth_fails && !(was_broken && v->names_link && fc->proof_ok);
}

/* A STREAM / AGAIN / BREAK step's frames on fc (fresh: a new connection);
 * keyed mode as keyed_attach, how from keyed_open (fresh) or the input. */
static bool stream_step(fz_t *fz, fz_in_t *in, fz_conn_t *fc, bool fresh, int how)
{
    if (!fz->key)
        return send_on(fz, fc, 0, build_attach(fz, in), NULL);
    verdict_t v;
    size_t off;
    if (how < 0)
        how = fz_u8(in) & 15;
    size_t n = keyed_attach(fz, in, fc, (uint8_t)how, fresh, &off, &v);
    return send_on(fz, fc, off, n, &v);
}

static void run(fz_t *fz, fz_in_t *in)
{
    uint8_t cfg = fz_u8(in);
    /* bits 1-3: streams per direction the HELLOs announce (0: none) */
    announce = (cfg >> 1) & 7;
    fz_set_key(fz, cfg & 0x10);
    new_link(fz, FZ_CLI_ID);
    if (cfg & 1)
        new_link(fz, FZ_CLI_ID + 1);
    fz_conn_t *cur = NULL;
    for (int step = 0; step < MAX_STEPS && fz_left(in); step++) {
        bool auth_fails = false;
        uint64_t failures = fz->e->auth_failures;
        switch (fz_u8(in) % OP_COUNT) {
        case OP_STREAM:
        case OP_FRAME: {
            bool raw = in->pos > 0 && in->p[in->pos - 1] % OP_COUNT == OP_FRAME;
            fz_conn_t *fc = fz_accept(fz);
            if (!fc)
                break;
            cur = fc;
            if (raw) {
                size_t n;
                uint32_t len = fz_u8(in);
                const uint8_t *p = fz_take(in, len, &n);
                fz_header(frame, LLK_MSG_ATTACH, len);
                memcpy(frame + LLK_WIRE_HEADER_SIZE, p, n);
                n += LLK_WIRE_HEADER_SIZE;
                send_on(fz, fc, 0, n, NULL);
            } else {
                int how = fz->key ? keyed_open(fz, in, fc) : -1;
                auth_fails = stream_step(fz, in, fc, true, how);
            }
            break;
        }
        case OP_AGAIN:
            if (cur)
                stream_step(fz, in, cur, false, -1);
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
            fz_conn_t *fc = fz_accept(fz);
            /* keyed: the stream's exchange first (a reactor pass), so
             * that the ATTACH still comes before the link is closed */
            int how = fc && fz->key ? keyed_open(fz, in, fc) : -1;
            if (l && l->xl)
                llk_xlink_break(l->xl, "fuzz: a transfer on the link failed");
            if (fc) {
                cur = fc;
                auth_fails = stream_step(fz, in, fc, true, how);
            }
            break;
        }
        }
        fz_service(fz);
        forget_dead_links();
        fz_check_engine(fz);
        check_links();
        if (auth_fails) {
            FZ_CHECK(cur->saw_reject && !cur->saw_attach_ok);
            /* An ATTACH with a wrong MAC for a link the owner thread broke
             * meanwhile (an AGAIN step's bytes on one of its streams are a
             * bad request: it breaks the link, asynchronously) is refused
             * for the break, checked first. The proof is checked before
             * anything: always AUTH_FAILED. */
            bool broke = mac_link && (!mac_link->xl || llk_xlink_is_broken(mac_link->xl));
            if (cur->reject_status == LLMLINK_AUTH_FAILED)
                FZ_CHECK(fz->e->auth_failures > failures);
            else
                FZ_CHECK(broke && cur->reject_status == LLMLINK_NOT_YET_LINK);
        }
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
