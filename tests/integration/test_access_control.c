/*
 * test_access_control.c - access control (issue 14, point 3).
 *
 * Prefill (PROMPT, "P") and decode (DECODER, "D") engines run as separate
 * llmlink-node processes on 127.0.0.1 (kernel-chosen ports); the hostile
 * peer is a raw socket peer (tests/common/rawpeer.h), never llmlink's own
 * client. Every byte is checked with the node's pattern verifier.
 *
 *  - a cache registered LLMLINK_ACCESS_NONE: a peer's pull and push by
 *    BlocksCacheKey, CacheKey and CacheKeyByIdAndIndex (a batch index past
 *    its end included) get KV_CACHE_NOT_EXIST, word for word what a cache
 *    id nobody registered gets; a consuming pull of an allocated cache's
 *    CacheKey leaves the key; neither side's bytes change; the owner's own
 *    push from it works (local use is not access-controlled);
 *  - READ-only: pull ok, push ACCESS_DENIED; WRITE-only: push ok, pull
 *    ACCESS_DENIED; nothing moves on a refusal;
 *    each of these runs over tcp and over shm (grants);
 *  - llmlink.AllowedClusters: a listed decoder links, another gets
 *    ACCESS_DENIED and the server counts the refusal;
 *  - a raw HELLO claiming a linked, alive decoder's cluster id is refused
 *    (ALREADY_LINK) and the decoder then pulls fine; after that decoder is
 *    SIGKILLed a new process with its id links and pulls at once;
 *  - a raw peer links, attaches a data stream and asks for caches by
 *    sequential id (1..16): the hidden cache answers exactly as the ids
 *    nobody registered, and its memory never changes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "llmlink.h"
#include "proc.h"
#include "rawpeer.h"
#include "link/wire.h"
#include "xfer/xfer.h"
#include "xfer/xfer_wire.h"

#define MAX_PROCS 8
#define P_ID 1u
#define D_ID 101u
#define IO_MS 5000
#define SEED_P 11u
#define SEED_D 22u
/* Blocks caches: 4 tensors of 16 blocks of 8 x 128 fp16 (2 KiB). Batch
 * caches: 4 tensors of 4 entries of the same size. */
#define DIMS_BLOCKS "16,8,128"
#define DIMS_CACHE "4,8,128"

typedef struct fx {
    const char *transport;
    proc_t procs[MAX_PROCS];
    size_t nprocs;
} fx_t;

static int reply_ms(void)
{
    return proc_sanitized() ? 120000 : 30000;
}

static int fx_setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    f->transport = *state ? (const char *)*state : "tcp";
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    fx_t *f = *state;
    int rc = proc_stop_all(f->procs, f->nprocs, proc_sanitized() ? 60000 : 20000);
    free(f);
    return rc;
}

#define cmd(p, ...) proc_must_reply(proc_reply((p), reply_ms(), __VA_ARGS__))
#define expect(p, want, ...) ((void)proc_must(proc_expect((p), reply_ms(), (want), __VA_ARGS__)))

/* A node with llmlink.Transport = the fixture's and the extra option (or NULL). */
static proc_t *node(fx_t *f, const char *role, uint64_t id, const char *extra)
{
    char topt[64];
    snprintf(topt, sizeof topt, "llmlink.Transport=%s", f->transport);
    const char *opts[] = {topt, "llm.SyncKvCacheWaitTime=10000", extra, NULL};
    char lbuf[80];
    snprintf(lbuf, sizeof lbuf, "%s:0", proc_test_ip());
    proc_t *p = proc_node_add(f->procs, &f->nprocs, MAX_PROCS, role, id,
                              strcmp(role, "decoder") ? lbuf : NULL, opts, NULL, NULL,
                              reply_ms());
    if (!p)
        fail_msg("%s", proc_last_error());
    return p;
}

/* "reg|alloc <kind> 4 fp16 <dims> key=<key> seed=<seed> access=<access>": the id. */
static int64_t add_cache(proc_t *p, const char *verb, const char *kind, const char *key,
                         const char *access, unsigned seed)
{
    char keyarg[96] = "", accarg[32] = "";
    if (key)
        snprintf(keyarg, sizeof keyarg, " key=%s", key);
    if (access)
        snprintf(accarg, sizeof accarg, " access=%s", access);
    const char *dims = strcmp(kind, "blocks") ? DIMS_CACHE : DIMS_BLOCKS;
    const char *got = cmd(p, "%s %s 4 fp16 %s%s seed=%u%s", verb, kind, dims, keyarg, seed,
                          accarg);
    char want[32];
    snprintf(want, sizeof want, "%s LLM_SUCCESS ", strcmp(verb, "reg") ? "ALLOC" : "REG");
    if (strncmp(got, want, strlen(want)) != 0)
        fail_msg("%s: %s answered '%s'", p->label, verb, got);
    return strtoll(got + strlen(want), NULL, 10);
}

/* A refused transfer: "<VERB> <status> | <message>"; returns the message. */
static const char *refused(proc_t *p, const char *got, const char *verb, llmlink_status_t st)
{
    char head[96];
    snprintf(head, sizeof head, "%s %s | ", verb, llmlink_status_name(st));
    if (strncmp(got, head, strlen(head)) != 0)
        fail_msg("%s: answered '%s'; expected '%s<message>'", p->label, got, head);
    return got + strlen(head);
}

static void verify(proc_t *p, int64_t id, unsigned seed)
{
    expect(p, "VERIFY OK", "verify %lld %u", (long long)id, seed);
}

static void link_ok(proc_t *d, proc_t *p)
{
    expect(d, "LINK LLM_SUCCESS LLM_SUCCESS", "link 10000 %s", proc_endpoint(p));
}

/* ------------------------------------------------------------------ */
/* Caches: none, read, write                                           */
/* ------------------------------------------------------------------ */

static void test_none_cache_is_not_there_for_peers(void **state)
{
    fx_t *f = *state;
    proc_t *p = node(f, "prompt", P_ID, NULL);
    proc_t *d = node(f, "decoder", D_ID, NULL);
    int64_t pb = add_cache(p, "reg", "blocks", "blocks:1:7", "none", SEED_P);
    int64_t pc = add_cache(p, "reg", "cache", "cache:1:100:7", "none", SEED_P);
    int64_t pa = add_cache(p, "alloc", "cache", "cache:1:200:7", "none", SEED_P);
    int64_t db = add_cache(d, "reg", "blocks", NULL, NULL, SEED_D);
    int64_t dc = add_cache(d, "reg", "cache", NULL, NULL, SEED_D);
    link_ok(d, p);

    const llmlink_status_t nx = LLMLINK_KV_CACHE_NOT_EXIST;
    refused(d, cmd(d, "pullblocks blocks:1:7 %lld 0,1 2,3", (long long)db), "PULL", nx);
    refused(d, cmd(d, "pushblocks blocks:1:7 %lld 0,1 2,3", (long long)db), "PUSH", nx);
    refused(d, cmd(d, "pullcache cache:1:100:7 %lld 0 -1", (long long)dc), "PULL", nx);
    refused(d, cmd(d, "pushcache cache:1:100:7 %lld 0 -1", (long long)dc), "PUSH", nx);
    refused(d, cmd(d, "pullblocks cache:1:100:7 %lld - 0,1", (long long)db), "PULL", nx);
    /* by id: word for word what an id nobody registered gets */
    char m_none[512], m_free[512];
    snprintf(m_none, sizeof m_none, "%s",
             refused(d, cmd(d, "pullcache idx:1:%lld:0 %lld 0 -1", (long long)pc, (long long)dc),
                     "PULL", nx));
    snprintf(m_free, sizeof m_free, "%s",
             refused(d, cmd(d, "pullcache idx:1:999:0 %lld 0 -1", (long long)dc), "PULL", nx));
    char id_text[32];
    snprintf(id_text, sizeof id_text, "%lld", (long long)pc);
    char *at = strstr(m_none, id_text);
    assert_non_null(at);
    char norm[512];
    snprintf(norm, sizeof norm, "%.*s999%s", (int)(at - m_none), m_none, at + strlen(id_text));
    if (strcmp(norm, m_free) != 0)
        fail_msg("a hidden cache is told apart by its message: '%s' vs '%s'", m_none, m_free);
    /* a batch index past its end is not a different answer (PARAM_INVALID
     * would say the id exists) */
    refused(d, cmd(d, "pullcache idx:1:%lld:3 %lld 0 -1", (long long)pc, (long long)dc), "PULL",
            nx);
    refused(d, cmd(d, "pushcache idx:1:%lld:0 %lld 0 -1", (long long)pc, (long long)dc), "PUSH",
            nx);
    refused(d, cmd(d, "pullcache idx:1:%lld:0 %lld 0 -1", (long long)pb, (long long)dc), "PULL",
            nx);
    /* a consuming pull of an allocated cache's CacheKey drops nothing */
    refused(d, cmd(d, "pullcache cache:1:200:7 %lld 1 -1", (long long)dc), "PULL", nx);
    expect(p, "RMKEY LLM_SUCCESS", "rmkey cache:1:200:7");
    (void)pa;

    /* no byte moved either way */
    verify(p, pb, SEED_P);
    verify(p, pc, SEED_P);
    verify(d, db, SEED_D);
    verify(d, dc, SEED_D);
    proc_xstats_t xs;
    proc_must(proc_node_xstats(p, &xs, reply_ms()));
    assert_int_equal(xs.served, 0);
    assert_int_equal(xs.bytes_served, 0);

    /* The owner's own use of it is not access-controlled: P pushes from
     * its hidden cache into D's. */
    expect(p, "PUSH LLM_SUCCESS", "pushcache idx:%u:%lld:2 %lld 0 -1", D_ID, (long long)dc,
           (long long)pc);
    expect(d, "VERIFY OK", "verifycache %lld %u %u 2 0 -1", (long long)dc, SEED_D, SEED_P);
}

static void test_read_only_cache_pulls_and_refuses_pushes(void **state)
{
    fx_t *f = *state;
    proc_t *p = node(f, "prompt", P_ID, NULL);
    proc_t *d = node(f, "decoder", D_ID, NULL);
    int64_t pb = add_cache(p, "reg", "blocks", "blocks:1:7", "read", SEED_P);
    int64_t pc = add_cache(p, "reg", "cache", "cache:1:100:7", "read", SEED_P);
    int64_t db = add_cache(d, "reg", "blocks", NULL, NULL, SEED_D);
    int64_t dc = add_cache(d, "reg", "cache", NULL, NULL, SEED_D);
    link_ok(d, p);

    const llmlink_status_t den = LLMLINK_ACCESS_DENIED;
    const char *m = refused(d, cmd(d, "pushblocks blocks:1:7 %lld 0,1 2,3", (long long)db),
                            "PUSH", den);
    if (!strstr(m, "write"))
        fail_msg("ACCESS_DENIED message '%s' does not say what was refused", m);
    refused(d, cmd(d, "pushcache cache:1:100:7 %lld 0 -1", (long long)dc), "PUSH", den);
    refused(d, cmd(d, "pushcache idx:1:%lld:1 %lld 0 -1", (long long)pc, (long long)dc), "PUSH",
            den);
    verify(p, pb, SEED_P);
    verify(p, pc, SEED_P);
    verify(d, db, SEED_D);
    verify(d, dc, SEED_D);

    expect(d, "PULL LLM_SUCCESS", "pullblocks blocks:1:7 %lld 5,6 1,2", (long long)db);
    expect(d, "VERIFY OK", "verifyblocks %lld %u %u 5,6 1,2", (long long)db, SEED_D, SEED_P);
    expect(d, "PULL LLM_SUCCESS", "pullcache idx:1:%lld:3 %lld 0 -1", (long long)pc,
           (long long)dc);
    verify(p, pb, SEED_P);
}

static void test_write_only_cache_takes_pushes_and_refuses_pulls(void **state)
{
    fx_t *f = *state;
    proc_t *p = node(f, "prompt", P_ID, NULL);
    proc_t *d = node(f, "decoder", D_ID, NULL);
    int64_t pb = add_cache(p, "reg", "blocks", "blocks:1:7", "write", SEED_P);
    int64_t pa = add_cache(p, "alloc", "cache", "cache:1:200:7", "write", SEED_P);
    int64_t db = add_cache(d, "reg", "blocks", NULL, NULL, SEED_D);
    int64_t dc = add_cache(d, "reg", "cache", NULL, NULL, SEED_D);
    link_ok(d, p);

    const llmlink_status_t den = LLMLINK_ACCESS_DENIED;
    const char *m = refused(d, cmd(d, "pullblocks blocks:1:7 %lld 0,1 2,3", (long long)db),
                            "PULL", den);
    if (!strstr(m, "read"))
        fail_msg("ACCESS_DENIED message '%s' does not say what was refused", m);
    refused(d, cmd(d, "pullcache cache:1:200:7 %lld 0 -1", (long long)dc), "PULL", den);
    refused(d, cmd(d, "pullcache idx:1:%lld:0 %lld 0 -1", (long long)pa, (long long)dc), "PULL",
            den);
    expect(p, "RMKEY LLM_SUCCESS", "rmkey cache:1:200:7"); /* not consumed */
    verify(d, db, SEED_D);
    verify(d, dc, SEED_D);
    verify(p, pb, SEED_P);

    expect(d, "PUSH LLM_SUCCESS", "pushblocks blocks:1:7 %lld 4,5 9,10", (long long)db);
    expect(p, "VERIFY OK", "verifyblocks %lld %u %u 4,5 9,10", (long long)pb, SEED_P, SEED_D);
}

/* ------------------------------------------------------------------ */
/* Who may link                                                        */
/* ------------------------------------------------------------------ */

static void test_allowed_clusters(void **state)
{
    fx_t *f = *state;
    proc_t *p = node(f, "prompt", P_ID, "llmlink.AllowedClusters=101, 103");
    proc_t *d1 = node(f, "decoder", D_ID, NULL);
    proc_t *d2 = node(f, "decoder", 102, NULL);
    proc_stats_t s0;
    proc_must(proc_node_stats(p, &s0, reply_ms()));
    expect(d2, "LINK LLM_LINK_FAILED LLMLINK_ACCESS_DENIED", "link 5000 %s", proc_endpoint(p));
    link_ok(d1, p);
    proc_stats_t s;
    proc_must(proc_node_stats(p, &s, reply_ms()));
    assert_int_equal(s.rejected, s0.rejected + 1);
    assert_int_equal(s.links, 1);
    expect(p, "CHECK LLM_NOT_YET_LINK", "check 102");
    expect(p, "CHECK LLM_SUCCESS", "check 101");
}

static void test_allowed_clusters_junk_fails_init(void **state)
{
    (void)state;
    llmlink_t *e = NULL;
    assert_int_equal(llmlink_create(&e, LLMLINK_ROLE_PROMPT, P_ID), LLMLINK_SUCCESS);
    const llmlink_option_t o[] = {{"llm.listenIpInfo", "127.0.0.1:0"},
                                  {"llmlink.AllowedClusters", "101,,102"}};
    assert_int_equal(llmlink_init(e, o, 2), LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "llmlink.AllowedClusters"));
    llmlink_destroy(e);
}

/* A raw HELLO claiming client_id: the REJECT's status, or SUCCESS for a
 * WELCOME (the socket is closed either way). */
static llmlink_status_t raw_claim(uint16_t port, uint64_t client_id)
{
    int fd = rawpeer_connect(port, IO_MS);
    assert_true(fd >= 0);
    uint8_t f[LLK_WIRE_MAX_FRAME];
    size_t n = rawpeer_hello(f, sizeof f, LLK_WIRE_VERSION, client_id, P_ID, 3000);
    assert_true(n > 0);
    assert_int_equal(rawpeer_send(fd, f, n, IO_MS), RAWPEER_OK);
    llk_frame_header_t h;
    assert_int_equal(rawpeer_recv_frame(fd, &h, f, sizeof f, IO_MS), RAWPEER_OK);
    llmlink_status_t st = LLMLINK_SUCCESS;
    if (h.type == LLK_MSG_REJECT) {
        llk_msg_reject_t r;
        const char *why = NULL;
        assert_int_equal(llk_wire_decode_reject(f, h.length, &r, &why), 0);
        st = r.status;
    } else {
        assert_int_equal(h.type, LLK_MSG_WELCOME);
    }
    rawpeer_close(fd);
    return st;
}

static void test_hello_claiming_a_live_decoder_is_refused(void **state)
{
    fx_t *f = *state;
    proc_t *p = node(f, "prompt", P_ID, NULL);
    proc_t *d = node(f, "decoder", D_ID, NULL);
    int64_t pb = add_cache(p, "reg", "blocks", "blocks:1:7", "rw", SEED_P);
    int64_t db = add_cache(d, "reg", "blocks", NULL, NULL, SEED_D);
    link_ok(d, p);

    assert_int_equal(raw_claim(p->port, D_ID), LLMLINK_ALREADY_LINK);
    assert_int_equal(raw_claim(p->port, D_ID), LLMLINK_ALREADY_LINK);
    expect(p, "CHECK LLM_SUCCESS", "check %u", D_ID);
    expect(d, "CHECK LLM_SUCCESS", "check %u", P_ID);
    expect(d, "PULL LLM_SUCCESS", "pullblocks blocks:1:7 %lld 3,4 0,1", (long long)db);
    expect(d, "VERIFY OK", "verifyblocks %lld %u %u 3,4 0,1", (long long)db, SEED_D, SEED_P);
    proc_stats_t s;
    proc_must(proc_node_stats(p, &s, reply_ms()));
    assert_int_equal(s.links, 1);
    assert_int_equal(s.lost, 0);

    /* The decoder dies (its kernel closes the connection): a new process
     * with its id links at once and pulls. */
    int64_t t0 = proc_now_ms();
    assert_int_equal(proc_kill(d, SIGKILL), 0);
    proc_reap(d);
    proc_must(proc_wait_check(p, D_ID, "LLM_NOT_YET_LINK", t0, 1500, reply_ms()));
    proc_t *d2 = node(f, "decoder", D_ID, NULL);
    int64_t db2 = add_cache(d2, "reg", "blocks", NULL, NULL, SEED_D);
    link_ok(d2, p);
    expect(d2, "PULL LLM_SUCCESS", "pullblocks blocks:1:7 %lld 8 8", (long long)db2);
    expect(d2, "VERIFY OK", "verifyblocks %lld %u %u 8 8", (long long)db2, SEED_D, SEED_P);
    verify(p, pb, SEED_P);
}

/* ------------------------------------------------------------------ */
/* A raw peer scanning cache ids                                       */
/* ------------------------------------------------------------------ */

#define RAW_ID 900u
#define RAW_INC 0x5151ull
#define RAW_BYTES 4096u

typedef struct raw_fx {
    llmlink_t *p;
    uint16_t port;
    uint8_t mem[2][RAW_BYTES]; /* a hidden cache, a read-only one */
    int64_t id[2];
    int ctrl, data;
    uint64_t server_inc;
} raw_fx_t;

static int raw_setup(void **state)
{
    raw_fx_t *r = calloc(1, sizeof *r);
    if (!r)
        return -1;
    r->ctrl = r->data = -1;
    const llmlink_option_t o[] = {{"llm.listenIpInfo", "127.0.0.1:0"},
                                  {"llmlink.Transport", "tcp"}};
    if (llmlink_create(&r->p, LLMLINK_ROLE_PROMPT, P_ID) || llmlink_init(r->p, o, 2) ||
        llmlink_get_listen_port(r->p, 0, &r->port))
        return -1;
    llmlink_cache_desc_t d = {.num_tensors = 1, .data_type = LLMLINK_DT_UINT8,
                              .placement = LLMLINK_PLACEMENT_HOST, .num_dims = 2,
                              .shape = {4, RAW_BYTES / 4}};
    static const uint32_t access[2] = {LLMLINK_ACCESS_NONE, LLMLINK_ACCESS_READ};
    for (int i = 0; i < 2; i++) {
        memset(r->mem[i], 0xA0 + i, RAW_BYTES);
        uint64_t a = (uint64_t)(uintptr_t)r->mem[i];
        llmlink_register_options_t ro;
        if (llmlink_register_options_init(&ro, LLMLINK_REGISTER_OPTIONS_VERSION))
            return -1;
        ro.access = access[i];
        if (llmlink_register_cache_opts(r->p, &d, &a, 1, NULL, 0, &ro, &r->id[i]))
            return -1;
    }
    *state = r;
    return 0;
}

static int raw_teardown(void **state)
{
    raw_fx_t *r = *state;
    rawpeer_close(r->ctrl);
    rawpeer_close(r->data);
    llmlink_destroy(r->p);
    free(r);
    return 0;
}

/* HELLO then a forward data stream (ATTACH). */
static void raw_link(raw_fx_t *r)
{
    r->ctrl = rawpeer_connect(r->port, IO_MS);
    assert_true(r->ctrl >= 0);
    llk_msg_hello_t m = {.client_cluster_id = RAW_ID, .target_cluster_id = P_ID,
                         .client_role = LLMLINK_ROLE_DECODER, .incarnation = RAW_INC,
                         .liveness_ms = 20000};
    uint8_t f[LLK_WIRE_MAX_FRAME];
    size_t n = llk_wire_encode_hello(f, sizeof f, LLK_WIRE_VERSION, &m);
    assert_int_equal(rawpeer_send(r->ctrl, f, n, IO_MS), RAWPEER_OK);
    llk_frame_header_t h;
    assert_int_equal(rawpeer_recv_frame(r->ctrl, &h, f, sizeof f, IO_MS), RAWPEER_OK);
    assert_int_equal(h.type, LLK_MSG_WELCOME);
    llk_msg_welcome_t w;
    const char *why = NULL;
    assert_int_equal(llk_wire_decode_welcome(f, h.length, &w, &why), 0);
    r->server_inc = w.incarnation;

    r->data = rawpeer_connect(r->port, IO_MS);
    assert_true(r->data >= 0);
    llk_host_id_t me;
    llk_host_id_self(&me);
    llk_msg_attach_t a = {.client_cluster_id = RAW_ID, .server_cluster_id = P_ID,
                          .client_incarnation = RAW_INC, .server_incarnation = r->server_inc,
                          .stream_index = 0, .direction = 0, .transport = 0,
                          .pidns = me.pidns, .pid = (uint32_t)getpid()};
    memcpy(a.boot_id, me.boot_id, sizeof a.boot_id);
    n = llk_wire_encode_attach(f, sizeof f, LLK_WIRE_VERSION, &a);
    assert_int_equal(rawpeer_send(r->data, f, n, IO_MS), RAWPEER_OK);
    assert_int_equal(rawpeer_recv_frame(r->data, &h, f, sizeof f, IO_MS), RAWPEER_OK);
    assert_int_equal(h.type, LLK_MSG_ATTACH_OK);
}

/* One READ or WRITE of batch entry `batch` of cache `id` (whole entry, by
 * KEY_ID_AND_INDEX); the XRESP's status and message (msg, cap). */
static uint32_t raw_request(raw_fx_t *r, uint8_t op, int64_t id, uint32_t batch, char *msg,
                            size_t cap)
{
    static uint64_t req_id;
    uint32_t entry = RAW_BYTES / 4;
    llk_xseg_wire_t seg = {.tensor = 0, .offset = 0, .length = entry};
    llk_xreq_t q = {.op = op, .kind = LLK_XKIND_CACHE,
                    .key = {.type = LLMLINK_KEY_ID_AND_INDEX, .cluster_id = P_ID,
                            .cache_id = id, .batch_index = batch},
                    .unit_bytes = entry, .num_tensors_hint = 1, .nseg = 1, .bound_end = entry};
    uint8_t f[LLK_XWIRE_HEADER_SIZE + 256];
    size_t n = llk_xwire_encode_req(f, sizeof f, ++req_id, &q, &seg);
    assert_true(n > 0);
    assert_int_equal(rawpeer_send(r->data, f, n, IO_MS), RAWPEER_OK);
    uint8_t hb[LLK_XWIRE_HEADER_SIZE], buf[1024];
    assert_int_equal(rawpeer_recv_exact(r->data, hb, sizeof hb, IO_MS), RAWPEER_OK);
    llk_xframe_header_t h;
    const char *why = NULL;
    assert_int_equal(llk_xwire_read_header(hb, &h, &why), 0);
    assert_int_equal(h.type, LLK_XMSG_RESP);
    assert_true(h.length <= sizeof buf);
    assert_int_equal(rawpeer_recv_exact(r->data, buf, h.length, IO_MS), RAWPEER_OK);
    llk_xresp_t x;
    assert_int_equal(llk_xwire_decode_resp(buf, h.length, &x, &why), 0);
    snprintf(msg, cap, "%s", x.msg);
    return x.status;
}

/* The message with the decimal id replaced by "N", to compare refusals. */
static void normalize(char *msg, int64_t id)
{
    char t[32], out[512];
    snprintf(t, sizeof t, "%lld", (long long)id);
    char *at = strstr(msg, t);
    if (!at)
        return;
    snprintf(out, sizeof out, "%.*sN%s", (int)(at - msg), msg, at + strlen(t));
    strcpy(msg, out);
}

static bool all_bytes(const uint8_t *m, uint8_t b)
{
    for (size_t i = 0; i < RAW_BYTES; i++)
        if (m[i] != b)
            return false;
    return true;
}

static void test_raw_peer_scanning_ids_finds_no_hidden_cache(void **state)
{
    raw_fx_t *r = *state;
    raw_link(r);
    char unknown[512];
    /* an id nobody registered: the reference answer */
    assert_int_equal(raw_request(r, LLK_XOP_READ, 1000, 0, unknown, sizeof unknown),
                     LLMLINK_KV_CACHE_NOT_EXIST);
    normalize(unknown, 1000);
    for (int64_t id = 1; id <= 16; id++) {
        for (int w = 0; w < 2; w++) {
            uint8_t op = w ? LLK_XOP_WRITE : LLK_XOP_READ;
            char msg[512];
            uint32_t st = raw_request(r, op, id, 0, msg, sizeof msg);
            if (id == r->id[1]) { /* the read-only cache */
                assert_int_equal(st, w ? LLMLINK_ACCESS_DENIED : LLMLINK_SUCCESS);
                if (!w) { /* drain the entry it sends */
                    uint8_t got[RAW_BYTES / 4];
                    assert_int_equal(rawpeer_recv_exact(r->data, got, sizeof got, IO_MS),
                                     RAWPEER_OK);
                    assert_int_equal(got[0], 0xA1);
                }
                continue;
            }
            normalize(msg, id);
            if (st != LLMLINK_KV_CACHE_NOT_EXIST || strcmp(msg, unknown) != 0)
                fail_msg("id %lld (%s): 0x%x '%s', an unknown id gets '%s'", (long long)id,
                         w ? "WRITE" : "READ", st, msg, unknown);
        }
        /* a batch index past the end of the hidden cache says nothing more */
        char msg[512];
        uint32_t st = raw_request(r, LLK_XOP_READ, r->id[0], 9, msg, sizeof msg);
        normalize(msg, r->id[0]);
        assert_int_equal(st, LLMLINK_KV_CACHE_NOT_EXIST);
        assert_string_equal(msg, unknown);
    }
    assert_true(all_bytes(r->mem[0], 0xA0));
    assert_true(all_bytes(r->mem[1], 0xA1));
    /* the link stayed usable through the refusals */
    assert_int_equal(llmlink_check_link_status(r->p, RAW_ID), LLMLINK_SUCCESS);
}

/* ------------------------------------------------------------------ */
/* The C ABI                                                           */
/* ------------------------------------------------------------------ */

static void test_register_options_are_checked(void **state)
{
    (void)state;
    llmlink_t *e = NULL;
    assert_int_equal(llmlink_create(&e, LLMLINK_ROLE_PROMPT, P_ID), LLMLINK_SUCCESS);
    const llmlink_option_t o[] = {{"llm.listenIpInfo", "127.0.0.1:0"}};
    assert_int_equal(llmlink_init(e, o, 1), LLMLINK_SUCCESS);
    static uint8_t mem[4096];
    uint64_t a = (uint64_t)(uintptr_t)mem, out[1];
    llmlink_cache_desc_t d = {.num_tensors = 1, .data_type = LLMLINK_DT_UINT8,
                              .placement = LLMLINK_PLACEMENT_HOST, .num_dims = 2,
                              .shape = {4, 1024}};
    llmlink_register_options_t ro = LLMLINK_REGISTER_OPTIONS_INIT;
    assert_int_equal(ro.version, LLMLINK_REGISTER_OPTIONS_VERSION);
    assert_int_equal(ro.access, LLMLINK_ACCESS_READ_WRITE);
    int64_t id = 0;

    ro.version = 2;
    assert_int_equal(llmlink_register_cache_opts(e, &d, &a, 1, NULL, 0, &ro, &id),
                     LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "opts->version"));
    ro.version = 0;
    assert_int_equal(llmlink_allocate_blocks_cache_opts(e, &d, NULL, &ro, &id, out, 1),
                     LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "opts->version"));
    ro.version = LLMLINK_REGISTER_OPTIONS_VERSION;
    ro.access = 4;
    assert_int_equal(llmlink_register_blocks_cache_opts(e, &d, &a, 1, NULL, &ro, &id),
                     LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "opts->access"));
    assert_non_null(strstr(llmlink_last_error(), "llmlink_register_blocks_cache_opts"));
    ro.access = UINT32_MAX;
    assert_int_equal(llmlink_allocate_cache_opts(e, &d, NULL, 0, &ro, &id, out, 1),
                     LLMLINK_PARAM_INVALID);
    assert_non_null(strstr(llmlink_last_error(), "opts->access"));
    llmlink_xfer_stats_t xs = {.version = LLMLINK_XFER_STATS_VERSION};
    assert_int_equal(llmlink_get_xfer_stats(e, &xs), LLMLINK_SUCCESS);
    assert_int_equal(xs.caches, 0); /* nothing was registered by a refused call */

    /* NULL options and each access value register */
    for (uint32_t acc = 0; acc <= LLMLINK_ACCESS_READ_WRITE; acc++) {
        ro.access = acc;
        assert_int_equal(llmlink_allocate_cache_opts(e, &d, NULL, 0, &ro, &id, out, 1),
                         LLMLINK_SUCCESS);
        assert_int_equal(llmlink_deallocate_cache(e, id), LLMLINK_SUCCESS);
    }
    assert_int_equal(llmlink_register_cache_opts(e, &d, &a, 1, NULL, 0, NULL, &id),
                     LLMLINK_SUCCESS);
    assert_int_equal(llmlink_unregister_cache(e, id), LLMLINK_SUCCESS);

    assert_int_equal(llmlink_register_options_init(NULL, 1), LLMLINK_PARAM_INVALID);
    assert_int_equal(llmlink_register_options_init(&ro, 7), LLMLINK_PARAM_INVALID);
    memset(&ro, 0x5A, sizeof ro);
    assert_int_equal(llmlink_register_options_init(&ro, LLMLINK_REGISTER_OPTIONS_VERSION),
                     LLMLINK_SUCCESS);
    assert_int_equal(ro.access, LLMLINK_ACCESS_READ_WRITE);
    assert_string_equal(llmlink_status_name(LLMLINK_ACCESS_DENIED), "LLMLINK_ACCESS_DENIED");
    llmlink_destroy(e);
}

#define PER_TRANSPORT(f)                                                                  \
    cmocka_unit_test_prestate_setup_teardown(f, fx_setup, fx_teardown, (void *)"tcp"),    \
        cmocka_unit_test_prestate_setup_teardown(f, fx_setup, fx_teardown, (void *)"shm")

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_register_options_are_checked),
        cmocka_unit_test(test_allowed_clusters_junk_fails_init),
        PER_TRANSPORT(test_none_cache_is_not_there_for_peers),
        PER_TRANSPORT(test_read_only_cache_pulls_and_refuses_pushes),
        PER_TRANSPORT(test_write_only_cache_takes_pushes_and_refuses_pulls),
        cmocka_unit_test_setup_teardown(test_allowed_clusters, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_hello_claiming_a_live_decoder_is_refused, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_raw_peer_scanning_ids_finds_no_hidden_cache,
                                        raw_setup, raw_teardown),
    };
    return cmocka_run_group_tests_name("access control", tests, NULL, NULL);
}
