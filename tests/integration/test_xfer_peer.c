/*
 * test_xfer_peer.c - the owner thread against a hand-driven peer: a raw
 * client links to a PROMPT engine (HELLO / WELCOME), attaches a data stream
 * (ATTACH / ATTACH_OK) and then sends data frames it built itself, good and
 * hostile, to check what the design promises of every byte from the
 * network:
 *
 *  - a good READ returns the registered bytes (the raw path works);
 *  - a request the cache cannot satisfy is refused with a status and a
 *    message, moves nothing, and the stream stays usable;
 *  - a malformed frame (bad magic, oversized, segments outside the request's
 *    own bounds, an XDONE for another request) ends the stream and the
 *    link: the engine frees it and stays usable for new links;
 *  - a WRITE that stops sending is ended after llm.SyncKvCacheWaitTime;
 *  - shm answers (the owner's addresses) only go to a peer whose claimed
 *    pid holds the other end of the stream; a claim naming another process
 *    gets FEATURE_NOT_ENABLED and no address;
 *  - ATTACH for a link that does not exist, or naming another host than the
 *    link's first stream, is refused;
 *  - the RDMA rail messages (XRDMA_PROBE, XRDMA_RAIL_RESET) on a link
 *    without RDMA get refusals naming why and the stream stays usable; a
 *    RAIL_RESET of the wrong length ends the link.
 *
 * Single process, loopback only, ports from 127.0.0.1:0, every wait bounded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "llmlink.h"
#include "llk_test.h"
#include "rawpeer.h"
#include "link/wire.h"
#include "xfer/xfer.h"
#include "xfer/xfer_wire.h"
#include "transport/rdma_wire.h"

#define PROMPT_ID 1u
#define CLIENT_ID 500u
#define CLIENT_INCARNATION 0x1122334455667788ull
#define NT 4
#define NB 8
#define BS 4096u
#define IO_MS 3000
#define STALL_MS 300 /* the engine's llm.SyncKvCacheWaitTime */

typedef struct fx {
    llmlink_t *p;
    uint16_t port;
    uint8_t mem[NT][NB * BS];
    int64_t cache;
    llmlink_cache_key_t key;
    int ctrl, data;       /* the raw client's control connection and data stream */
    uint64_t server_incarnation;
    uint64_t next_req;
} fx_t;

static uint8_t pattern(unsigned t, unsigned off) { return (uint8_t)(t * 31u + off * 7u + 1u); }

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    static const llmlink_option_t o[] = {{"llm.listenIpInfo", "127.0.0.1:0"},
                                         {"llm.SyncKvCacheWaitTime", "300"},
                                         {"llmlink.LivenessIntervalMs", "20000"}};
    if (llmlink_create(&fx->p, LLMLINK_ROLE_PROMPT, PROMPT_ID) || llmlink_init(fx->p, o, 3) ||
        llmlink_get_listen_port(fx->p, 0, &fx->port))
        return -1;
    uint64_t addrs[NT];
    for (unsigned t = 0; t < NT; t++) {
        for (unsigned i = 0; i < NB * BS; i++)
            fx->mem[t][i] = pattern(t, i);
        addrs[t] = (uint64_t)(uintptr_t)fx->mem[t];
    }
    llmlink_cache_desc_t d = {.num_tensors = NT, .data_type = LLMLINK_DT_UINT8,
                              .placement = LLMLINK_PLACEMENT_HOST, .num_dims = 2,
                              .shape = {NB, BS}};
    fx->key = (llmlink_cache_key_t){.type = LLMLINK_KEY_BLOCKS, .cluster_id = PROMPT_ID};
    if (llmlink_register_blocks_cache(fx->p, &d, addrs, NT, &fx->key, &fx->cache))
        return -1;
    fx->ctrl = fx->data = -1;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    rawpeer_close(fx->data);
    rawpeer_close(fx->ctrl);
    llmlink_destroy(fx->p);
    free(fx);
    return 0;
}

/* ---- the raw client --------------------------------------------------------- */

static void raw_link(fx_t *fx)
{
    fx->ctrl = rawpeer_connect(fx->port, IO_MS);
    assert_true(fx->ctrl >= 0);
    llk_msg_hello_t m = {.client_cluster_id = CLIENT_ID, .target_cluster_id = PROMPT_ID,
                         .client_role = LLMLINK_ROLE_DECODER, .incarnation = CLIENT_INCARNATION,
                         .liveness_ms = 20000};
    uint8_t f[LLK_WIRE_MAX_FRAME];
    size_t n = llk_wire_encode_hello(f, sizeof f, LLK_WIRE_VERSION, &m);
    assert_int_equal(rawpeer_send(fx->ctrl, f, n, IO_MS), RAWPEER_OK);
    llk_frame_header_t h;
    assert_int_equal(rawpeer_recv_frame(fx->ctrl, &h, f, sizeof f, IO_MS), RAWPEER_OK);
    assert_int_equal(h.type, LLK_MSG_WELCOME);
    llk_msg_welcome_t w;
    const char *why = NULL;
    assert_int_equal(llk_wire_decode_welcome(f, h.length, &w, &why), 0);
    fx->server_incarnation = w.incarnation;
    assert_status(llmlink_check_link_status(fx->p, CLIENT_ID), LLMLINK_SUCCESS);
}

/* Opens a data stream and sends ATTACH; returns the fd and the answer's
 * frame type (ATTACH_OK or REJECT) in *type, the REJECT's status in *st. */
static int raw_attach(fx_t *fx, uint64_t server_incarnation, uint32_t pid, uint16_t *type,
                      uint32_t *st)
{
    int fd = rawpeer_connect(fx->port, IO_MS);
    assert_true(fd >= 0);
    llk_host_id_t me;
    llk_host_id_self(&me);
    llk_msg_attach_t a = {.client_cluster_id = CLIENT_ID, .server_cluster_id = PROMPT_ID,
                          .client_incarnation = CLIENT_INCARNATION,
                          .server_incarnation = server_incarnation, .stream_index = 0,
                          .direction = 0, .transport = 0, .pidns = me.pidns, .pid = pid};
    memcpy(a.boot_id, me.boot_id, sizeof a.boot_id);
    uint8_t f[LLK_WIRE_MAX_FRAME];
    size_t n = llk_wire_encode_attach(f, sizeof f, LLK_WIRE_VERSION, &a);
    assert_int_equal(rawpeer_send(fd, f, n, IO_MS), RAWPEER_OK);
    llk_frame_header_t h;
    assert_int_equal(rawpeer_recv_frame(fd, &h, f, sizeof f, IO_MS), RAWPEER_OK);
    *type = h.type;
    *st = LLMLINK_SUCCESS;
    if (h.type == LLK_MSG_REJECT) {
        llk_msg_reject_t rj;
        const char *why = NULL;
        assert_int_equal(llk_wire_decode_reject(f, h.length, &rj, &why), 0);
        *st = rj.status;
    }
    return fd;
}

static void link_and_attach(fx_t *fx, uint32_t pid)
{
    raw_link(fx);
    uint16_t type;
    uint32_t st;
    fx->data = raw_attach(fx, fx->server_incarnation, pid, &type, &st);
    assert_int_equal(type, LLK_MSG_ATTACH_OK);
}

/* Sends an XREQ of nseg segments (tensor t, offset, length) over the
 * blocks cache. bound_end 0 means "the segments' own". */
static void send_req(fx_t *fx, uint8_t op, const llk_xseg_wire_t *segs, uint32_t nseg,
                     uint64_t bound_end)
{
    llk_xreq_t r = {.op = op, .kind = LLK_XKIND_BLOCKS, .key = fx->key, .unit_bytes = BS,
                    .num_tensors_hint = 0, .nseg = nseg};
    for (uint32_t i = 0; i < nseg; i++) {
        if (segs[i].tensor + 1 > r.num_tensors_hint)
            r.num_tensors_hint = segs[i].tensor + 1;
        if (!bound_end && segs[i].offset + segs[i].length > r.bound_end)
            r.bound_end = segs[i].offset + segs[i].length;
    }
    if (bound_end)
        r.bound_end = bound_end;
    static uint8_t f[LLK_XWIRE_HEADER_SIZE + LLK_XWIRE_MAX_PAYLOAD];
    size_t n = llk_xwire_encode_req(f, sizeof f, ++fx->next_req, &r, segs);
    assert_true(n > 0);
    assert_int_equal(rawpeer_send(fx->data, f, n, IO_MS), RAWPEER_OK);
}

/* Reads one data frame of type `type` answering request req_id into
 * buf; returns its payload length. */
static uint32_t recv_frame_of(fx_t *fx, uint16_t type, uint64_t req_id, uint8_t *buf, size_t cap)
{
    uint8_t hb[LLK_XWIRE_HEADER_SIZE];
    assert_int_equal(rawpeer_recv_exact(fx->data, hb, sizeof hb, IO_MS), RAWPEER_OK);
    llk_xframe_header_t h;
    const char *why = NULL;
    assert_int_equal(llk_xwire_read_header(hb, &h, &why), 0);
    assert_int_equal(h.type, type);
    assert_int_equal(h.req_id, req_id);
    assert_true(h.length <= cap);
    assert_int_equal(rawpeer_recv_exact(fx->data, buf, h.length, IO_MS), RAWPEER_OK);
    return h.length;
}

/* Reads one XRESP into *r (payload kept in buf). */
static void recv_resp(fx_t *fx, llk_xresp_t *r, uint8_t *buf, size_t cap)
{
    uint32_t len = recv_frame_of(fx, LLK_XMSG_RESP, fx->next_req, buf, cap);
    const char *why = NULL;
    assert_int_equal(llk_xwire_decode_resp(buf, len, r, &why), 0);
}

/* The engine ended the data stream and freed the link (bounded wait). */
static void assert_link_killed(fx_t *fx, const char *what)
{
    if (rawpeer_wait_closed(fx->data, IO_MS) != RAWPEER_OK)
        fail_msg("%s: the data stream was not closed", what);
    if (rawpeer_wait_closed(fx->ctrl, IO_MS) != RAWPEER_OK)
        fail_msg("%s: the control connection was not closed", what);
    int64_t until = rawpeer_now_ms() + IO_MS;
    while (llmlink_check_link_status(fx->p, CLIENT_ID) == LLMLINK_SUCCESS &&
           rawpeer_now_ms() < until)
        rawpeer_sleep_ms(10);
    assert_status(llmlink_check_link_status(fx->p, CLIENT_ID), LLMLINK_NOT_YET_LINK);
    rawpeer_close(fx->data);
    rawpeer_close(fx->ctrl);
    fx->data = fx->ctrl = -1;
}

/* A good READ: the bytes of tensor 2, blocks 3 and 4. */
static void good_read(fx_t *fx)
{
    llk_xseg_wire_t seg = {.tensor = 2, .offset = 3 * BS, .length = 2 * BS};
    send_req(fx, LLK_XOP_READ, &seg, 1, 0);
    uint8_t buf[1024];
    llk_xresp_t r;
    recv_resp(fx, &r, buf, sizeof buf);
    assert_status(r.status, LLMLINK_SUCCESS);
    assert_int_equal(r.total_bytes, 2 * BS);
    static uint8_t data[2 * BS];
    assert_int_equal(rawpeer_recv_exact(fx->data, data, sizeof data, IO_MS), RAWPEER_OK);
    assert_memory_equal(data, fx->mem[2] + 3 * BS, sizeof data);
}

/* ---- tests -------------------------------------------------------------------- */

static void test_good_read_then_refusals_keep_stream(void **state)
{
    fx_t *fx = *state;
    link_and_attach(fx, (uint32_t)getpid());
    good_read(fx);
    /* Block 8 of 8: past the end. Refused, the stream stays usable. */
    llk_xseg_wire_t past = {.tensor = 0, .offset = NB * BS, .length = BS};
    uint8_t buf[1024];
    llk_xresp_t r;
    send_req(fx, LLK_XOP_READ, &past, 1, 0);
    recv_resp(fx, &r, buf, sizeof buf);
    assert_status(r.status, LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(r.msg, "past the end"));
    /* Tensor 4 of 4. */
    llk_xseg_wire_t tensor = {.tensor = NT, .offset = 0, .length = BS};
    send_req(fx, LLK_XOP_READ, &tensor, 1, 0);
    recv_resp(fx, &r, buf, sizeof buf);
    assert_status(r.status, LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(r.msg, "tensor"));
    good_read(fx);
    llmlink_xfer_stats_t s = {.version = LLMLINK_XFER_STATS_VERSION};
    assert_status(llmlink_get_xfer_stats(fx->p, &s), LLMLINK_SUCCESS);
    assert_int_equal(s.requests_refused, 2);
    assert_int_equal(s.requests_served, 2);
}

static void test_segment_outside_its_own_bounds_kills_link(void **state)
{
    fx_t *fx = *state;
    link_and_attach(fx, (uint32_t)getpid());
    /* The request claims its transfer ends at byte BS but its segment goes
     * further: a lie the decoder refuses; the peer is not trusted again. */
    llk_xseg_wire_t seg = {.tensor = 0, .offset = 0, .length = 2 * BS};
    send_req(fx, LLK_XOP_READ, &seg, 1, BS);
    assert_link_killed(fx, "segment past bound_end");
    /* The engine stays usable: a new peer links and reads. */
    link_and_attach(fx, (uint32_t)getpid());
    good_read(fx);
}

static void test_bad_frames_kill_link(void **state)
{
    fx_t *fx = *state;
    static const struct {
        const char *what;
        uint8_t bytes[LLK_XWIRE_HEADER_SIZE];
    } cases[] = {
        {"bad magic", {'X', 'X', 'X', 'X', 0, 1, 0, 1}},
        /* type REQ with a length over the maximum */
        {"oversized", {'L', 'L', 'M', 'D', 0, 1, 0, 1, 0x7f, 0xff, 0xff, 0xff}},
        /* a RESP where only requests may come */
        {"unexpected type", {'L', 'L', 'M', 'D', 0, 1, 0, 2, 0, 0, 0, 0}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        link_and_attach(fx, (uint32_t)getpid());
        assert_int_equal(rawpeer_send(fx->data, cases[i].bytes, sizeof cases[i].bytes, IO_MS),
                         RAWPEER_OK);
        assert_link_killed(fx, cases[i].what);
    }
}

/* The RDMA rail messages (XRDMA_PROBE, XRDMA_RAIL_RESET) from a peer of a
 * link that has no RDMA (this raw client never announced it): each gets a
 * refusal naming why, nothing is set up, and the stream still serves a
 * READ; a RAIL_RESET frame of the wrong length kills the link. */
static void test_rdma_rail_messages_without_rdma(void **state)
{
    fx_t *fx = *state;
    link_and_attach(fx, (uint32_t)getpid());
    uint8_t f[512], buf[512];
    const char *why = NULL;

    llk_rdma_addr_t a = {.ip = {[10] = 0xff, [11] = 0xff, [12] = 10, [13] = 9, [14] = 8, [15] = 7},
                         .prefix = 24, .mtu = 3};
    size_t n = llk_xwire_encode_rdma_probe(f, sizeof f, ++fx->next_req, &a, 1);
    assert_true(n > 0);
    assert_int_equal(rawpeer_send(fx->data, f, n, IO_MS), RAWPEER_OK);
    uint32_t len = recv_frame_of(fx, LLK_XMSG_RDMA_PROBE_OK, fx->next_req, buf, sizeof buf);
    llk_xrdma_probe_t po;
    assert_int_equal(llk_xwire_decode_rdma_probe_ok(buf, len, &po, &why), 0);
    assert_int_not_equal(po.status, LLMLINK_SUCCESS);
    assert_int_equal(po.naddr, 0);
    assert_true(po.msg[0] != '\0');
    print_message("  XRDMA_PROBE: %s | %s\n", llmlink_status_name(po.status), po.msg);
    good_read(fx);

    llk_xrail_wire_t rec = {.qpn = 17, .psn = 5, .mtu = 3};
    memcpy(rec.gid, a.ip, 16);
    n = llk_xwire_encode_rail_reset(f, sizeof f, ++fx->next_req, 0, &rec);
    assert_true(n > 0);
    assert_int_equal(rawpeer_send(fx->data, f, n, IO_MS), RAWPEER_OK);
    len = recv_frame_of(fx, LLK_XMSG_RDMA_RAIL_RESET_OK, fx->next_req, buf, sizeof buf);
    llk_xrail_reset_ok_t ro;
    assert_int_equal(llk_xwire_decode_rail_reset_ok(buf, len, &ro, &why), 0);
    assert_status(ro.status, LLMLINK_FEATURE_NOT_ENABLED);
    assert_int_equal(ro.rail, 0);
    assert_non_null(strstr(ro.msg, "no RDMA rail"));
    good_read(fx);

    /* one byte short: the frame itself is refused, the link goes */
    n = llk_xwire_encode_rail_reset(f, sizeof f, ++fx->next_req, 0, &rec);
    llk_xwire_write_header(f, LLK_XMSG_RDMA_RAIL_RESET, (uint32_t)(n - LLK_XWIRE_HEADER_SIZE - 1),
                           fx->next_req);
    assert_int_equal(rawpeer_send(fx->data, f, n - 1, IO_MS), RAWPEER_OK);
    assert_link_killed(fx, "XRDMA_RAIL_RESET one byte short");
}

static void test_stalled_write_is_ended(void **state)
{
    fx_t *fx = *state;
    link_and_attach(fx, (uint32_t)getpid());
    llk_xseg_wire_t seg = {.tensor = 1, .offset = 0, .length = 4 * BS};
    send_req(fx, LLK_XOP_WRITE, &seg, 1, 0);
    uint8_t buf[1024];
    llk_xresp_t r;
    recv_resp(fx, &r, buf, sizeof buf); /* go */
    assert_status(r.status, LLMLINK_SUCCESS);
    static uint8_t some[BS];
    memset(some, 0x5A, sizeof some);
    assert_int_equal(rawpeer_send(fx->data, some, sizeof some, IO_MS), RAWPEER_OK);
    /* ... and nothing more: the owner ends the stream after STALL_MS
     * without progress, which frees the link and the cache. */
    int64_t t0 = rawpeer_now_ms();
    assert_link_killed(fx, "stalled WRITE");
    assert_true(rawpeer_now_ms() - t0 < IO_MS);
    /* The cache is free again: unregister does not wait. */
    assert_status(llmlink_unregister_cache(fx->p, fx->cache), LLMLINK_SUCCESS);
}

static void test_shm_answer_needs_proven_pid(void **state)
{
    fx_t *fx = *state;
    /* A claim naming another process (pid 1 does not hold this stream). */
    link_and_attach(fx, 1);
    llk_xseg_wire_t seg = {.tensor = 0, .offset = 0, .length = BS};
    uint8_t buf[1024];
    llk_xresp_t r;
    send_req(fx, LLK_XOP_SHM_READ, &seg, 1, 0);
    recv_resp(fx, &r, buf, sizeof buf);
    assert_status(r.status, LLMLINK_FEATURE_NOT_ENABLED);
    assert_int_equal(r.niov, 0);
    good_read(fx); /* tcp still works on the stream */
}

static void test_shm_done_for_another_request_kills_link(void **state)
{
    fx_t *fx = *state;
    /* This process holds the stream: the claim is proven, the answer comes
     * with the owner's address of the segment. */
    link_and_attach(fx, (uint32_t)getpid());
    llk_xseg_wire_t seg = {.tensor = 3, .offset = BS, .length = BS};
    uint8_t buf[1024];
    llk_xresp_t r;
    send_req(fx, LLK_XOP_SHM_READ, &seg, 1, 0);
    recv_resp(fx, &r, buf, sizeof buf);
    assert_status(r.status, LLMLINK_SUCCESS);
    assert_int_equal(r.niov, 1);
    uint64_t addr, len;
    llk_xwire_iov_at(r.iovs, 0, &addr, &len);
    assert_int_equal(addr, (uint64_t)(uintptr_t)(fx->mem[3] + BS));
    assert_int_equal(len, BS);
    /* An XDONE naming another request. */
    uint8_t f[LLK_XWIRE_HEADER_SIZE + 4];
    size_t n = llk_xwire_encode_done(f, sizeof f, fx->next_req + 7, LLMLINK_SUCCESS);
    assert_int_equal(rawpeer_send(fx->data, f, n, IO_MS), RAWPEER_OK);
    assert_link_killed(fx, "XDONE for another request");
}

static void test_attach_refusals(void **state)
{
    fx_t *fx = *state;
    uint16_t type;
    uint32_t st;
    /* No link yet: nothing to attach to. */
    int fd = raw_attach(fx, 0, (uint32_t)getpid(), &type, &st);
    assert_int_equal(type, LLK_MSG_REJECT);
    assert_status(st, LLMLINK_NOT_YET_LINK);
    rawpeer_close(fd);
    raw_link(fx);
    /* The server's incarnation wrong: another link's stream. */
    fd = raw_attach(fx, fx->server_incarnation + 1, (uint32_t)getpid(), &type, &st);
    assert_int_equal(type, LLK_MSG_REJECT);
    assert_status(st, LLMLINK_NOT_YET_LINK);
    rawpeer_close(fd);
    /* The first stream fixes the link's host; a second one naming another
     * pid is refused. */
    fx->data = raw_attach(fx, fx->server_incarnation, (uint32_t)getpid(), &type, &st);
    assert_int_equal(type, LLK_MSG_ATTACH_OK);
    fd = raw_attach(fx, fx->server_incarnation, 1, &type, &st);
    assert_int_equal(type, LLK_MSG_REJECT);
    assert_status(st, LLMLINK_PROTOCOL_ERROR);
    rawpeer_close(fd);
    /* A second stream on an index already attached (issue 14): REJECT with
     * a reason, not an ATTACH_OK followed by a close; the first stays. */
    fd = raw_attach(fx, fx->server_incarnation, (uint32_t)getpid(), &type, &st);
    assert_int_equal(type, LLK_MSG_REJECT);
    assert_status(st, LLMLINK_PROTOCOL_ERROR);
    rawpeer_close(fd);
    good_read(fx);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_good_read_then_refusals_keep_stream),
        T(test_segment_outside_its_own_bounds_kills_link),
        T(test_bad_frames_kill_link),
        T(test_rdma_rail_messages_without_rdma),
        T(test_stalled_write_is_ended),
        T(test_shm_answer_needs_proven_pid),
        T(test_shm_done_for_another_request_kills_link),
        T(test_attach_refusals),
    };
    return cmocka_run_group_tests_name("xfer_peer", tests, NULL, NULL);
}
