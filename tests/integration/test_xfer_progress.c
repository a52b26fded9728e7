/*
 * test_xfer_progress.c - a tcp request that makes no real progress cannot
 * pin a cache (issue 14, point 4). A raw client (not llmlink's own) links
 * to a PROMPT engine, attaches a data stream and pushes (WRITE) into its
 * registered blocks cache:
 *
 *  - one byte every 400 ms (each byte resets the stall clock, which is
 *    llm.SyncKvCacheWaitTime = 1000 ms): the owner cuts the request at the
 *    progress floor (1 MiB/s over a window of the wait), the link breaks
 *    and the request counts as fenced; an unregister called meanwhile
 *    returns SUCCESS (not CACHE_IN_USE), and the cache's memory does not
 *    change after it returns while the client keeps sending;
 *  - a push above the floor (about 3 MiB/s) but slower than the
 *    unregister's wait: the
 *    unregister times out on that tcp hold, has the owner thread cut it,
 *    and succeeds, memory unchanged after it returns;
 *  - a small push that completes at once is not cut, and the stream stays
 *    usable.
 *
 * Single process, loopback only, every wait bounded. No speed is asserted:
 * the times checked separate "cut" from "held until the transfer ends".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
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

#define PROMPT_ID 1u
#define CLIENT_ID 600u
#define CLIENT_INCARNATION 0x0102030405060708ull
#define NT 2
#define NB 128
#define BS (64u * 1024u) /* 8 MiB per tensor */
#define IO_MS 3000
#define WAIT_MS 1000 /* the engine's llm.SyncKvCacheWaitTime */
#define FILL 0xA5

typedef struct fx {
    llmlink_t *p;
    uint16_t port;
    uint8_t *mem[NT];
    uint8_t *snap;
    int64_t cache;
    llmlink_cache_key_t key;
    int ctrl, data;
    uint64_t server_incarnation;
    uint64_t next_req;
    llk_xlink_t *xl; /* a reference, for the link's counters */
} fx_t;

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    static const llmlink_option_t o[] = {{"llm.listenIpInfo", "127.0.0.1:0"},
                                         {"llm.SyncKvCacheWaitTime", "1000"},
                                         {"llmlink.LivenessIntervalMs", "20000"}};
    if (!fx || llmlink_create(&fx->p, LLMLINK_ROLE_PROMPT, PROMPT_ID) ||
        llmlink_init(fx->p, o, 3) || llmlink_get_listen_port(fx->p, 0, &fx->port))
        return -1;
    uint64_t addrs[NT];
    for (unsigned t = 0; t < NT; t++) {
        fx->mem[t] = malloc((size_t)NB * BS);
        if (!fx->mem[t])
            return -1;
        memset(fx->mem[t], FILL, (size_t)NB * BS);
        addrs[t] = (uint64_t)(uintptr_t)fx->mem[t];
    }
    fx->snap = malloc((size_t)NB * BS);
    if (!fx->snap)
        return -1;
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
    if (fx->xl)
        llk_xlink_unref(fx->xl);
    rawpeer_close(fx->data);
    rawpeer_close(fx->ctrl);
    llmlink_destroy(fx->p);
    for (unsigned t = 0; t < NT; t++)
        free(fx->mem[t]);
    free(fx->snap);
    free(fx);
    return 0;
}

/* ---- the raw client --------------------------------------------------------- */

static void raw_link_and_attach(fx_t *fx)
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

    fx->data = rawpeer_connect(fx->port, IO_MS);
    assert_true(fx->data >= 0);
    llk_host_id_t me;
    llk_host_id_self(&me);
    llk_msg_attach_t a = {.client_cluster_id = CLIENT_ID, .server_cluster_id = PROMPT_ID,
                          .client_incarnation = CLIENT_INCARNATION,
                          .server_incarnation = fx->server_incarnation, .stream_index = 0,
                          .direction = 0, .transport = 0, .pidns = me.pidns, .pid = me.pid};
    memcpy(a.boot_id, me.boot_id, sizeof a.boot_id);
    n = llk_wire_encode_attach(f, sizeof f, LLK_WIRE_VERSION, &a);
    assert_int_equal(rawpeer_send(fx->data, f, n, IO_MS), RAWPEER_OK);
    assert_int_equal(rawpeer_recv_frame(fx->data, &h, f, sizeof f, IO_MS), RAWPEER_OK);
    assert_int_equal(h.type, LLK_MSG_ATTACH_OK);
    fx->xl = llk_xfer_find_link(fx->p, CLIENT_ID, "test");
    assert_non_null(fx->xl);
}

/* A WRITE of `length` bytes at the start of tensor 0, and its "go". */
static void start_write(fx_t *fx, uint64_t length)
{
    llk_xseg_wire_t seg = {.tensor = 0, .offset = 0, .length = length};
    llk_xreq_t r = {.op = LLK_XOP_WRITE, .kind = LLK_XKIND_BLOCKS, .key = fx->key,
                    .unit_bytes = BS, .num_tensors_hint = 1, .nseg = 1, .bound_end = length};
    static uint8_t f[LLK_XWIRE_HEADER_SIZE + LLK_XWIRE_MAX_PAYLOAD];
    size_t n = llk_xwire_encode_req(f, sizeof f, ++fx->next_req, &r, &seg);
    assert_true(n > 0);
    assert_int_equal(rawpeer_send(fx->data, f, n, IO_MS), RAWPEER_OK);
    uint8_t hb[LLK_XWIRE_HEADER_SIZE], buf[1024];
    assert_int_equal(rawpeer_recv_exact(fx->data, hb, sizeof hb, IO_MS), RAWPEER_OK);
    llk_xframe_header_t h;
    const char *why = NULL;
    assert_int_equal(llk_xwire_read_header(hb, &h, &why), 0);
    assert_int_equal(h.type, LLK_XMSG_RESP);
    assert_true(h.length <= sizeof buf);
    assert_int_equal(rawpeer_recv_exact(fx->data, buf, h.length, IO_MS), RAWPEER_OK);
    llk_xresp_t resp;
    assert_int_equal(llk_xwire_decode_resp(buf, h.length, &resp, &why), 0);
    assert_int_equal(resp.status, LLMLINK_SUCCESS); /* go */
}

/* ---- a thread that unregisters while the client sends ------------------------ */

typedef struct unreg {
    fx_t *fx;
    int delay_ms;
    llmlink_status_t st;
    int64_t returned_ms;
    _Atomic int done;
} unreg_t;

static void *unreg_main(void *arg)
{
    unreg_t *u = arg;
    rawpeer_sleep_ms(u->delay_ms);
    u->st = llmlink_unregister_cache(u->fx->p, u->fx->cache);
    u->returned_ms = rawpeer_now_ms();
    /* What the cache holds the moment the call returned. */
    memcpy(u->fx->snap, u->fx->mem[0], (size_t)NB * BS);
    atomic_store(&u->done, 1);
    return NULL;
}

/* After the unregister returned: the client keeps sending for 300 ms (what
 * it can; the stream is gone), and not one byte of tensor 0 changes. */
static void assert_unchanged_after(fx_t *fx, const uint8_t *chunk, size_t len)
{
    int64_t t0 = rawpeer_now_ms();
    for (int i = 0; i < 30 && rawpeer_now_ms() - t0 < 300; i++) {
        if (rawpeer_send(fx->data, chunk, len, 10) == RAWPEER_CLOSED)
            break;
        rawpeer_sleep_ms(10);
    }
    rawpeer_sleep_ms(100);
    assert_memory_equal(fx->snap, fx->mem[0], (size_t)NB * BS);
}

/* The link broke for this reason (the owner's words). */
static void assert_broke_for(fx_t *fx, const char *what)
{
    pthread_mutex_lock(&fx->xl->mu);
    bool broken = fx->xl->broken;
    char why[sizeof fx->xl->why];
    memcpy(why, fx->xl->why, sizeof why);
    pthread_mutex_unlock(&fx->xl->mu);
    assert_true(broken);
    if (!strstr(why, what))
        fail_msg("the link broke for '%s', expected '%s'", why, what);
}

/* The engine ended the data stream and freed the link (bounded wait). */
static void assert_link_killed(fx_t *fx)
{
    assert_int_equal(rawpeer_wait_closed(fx->data, IO_MS), RAWPEER_OK);
    int64_t until = rawpeer_now_ms() + IO_MS;
    while (llmlink_check_link_status(fx->p, CLIENT_ID) == LLMLINK_SUCCESS &&
           rawpeer_now_ms() < until)
        rawpeer_sleep_ms(10);
    assert_int_equal(llmlink_check_link_status(fx->p, CLIENT_ID), LLMLINK_NOT_YET_LINK);
}

/* ---- tests -------------------------------------------------------------------- */

/* One byte every 400 ms into a 1 MiB push: cut within one window of the
 * wait (1000 ms) after admission; the unregister called at 200 ms returns
 * SUCCESS then (it waits 1000 ms), and the memory stays as it was. */
static void test_trickled_push_cut_and_unregister_succeeds(void **state)
{
    fx_t *fx = *state;
    raw_link_and_attach(fx);
    start_write(fx, 1u << 20);
    int64_t t0 = rawpeer_now_ms();
    unreg_t u = {.fx = fx, .delay_ms = 200};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, unreg_main, &u), 0);
    uint8_t b = 0x11;
    int sent = 0;
    /* Bounded: at most 4 s of trickling, ends when the stream does. */
    for (int i = 0; i < 10 && !atomic_load(&u.done); i++) {
        if (rawpeer_send(fx->data, &b, 1, 100) != RAWPEER_OK)
            break;
        sent++;
        for (int k = 0; k < 40 && !atomic_load(&u.done); k++)
            rawpeer_sleep_ms(10);
    }
    pthread_join(th, NULL);
    int64_t held = u.returned_ms - t0;
    print_message("trickled push: %d bytes sent, unregister returned %s after %lld ms\n", sent,
                  llmlink_status_name(u.st), (long long)held);
    if (u.st != LLMLINK_SUCCESS)
        fail_msg("unregister during a 1-byte-per-400-ms push returned %s: %s",
                 llmlink_status_name(u.st), llmlink_last_error());
    assert_true(held < WAIT_MS + 1000); /* cut at the floor, not after the whole push */
    assert_unchanged_after(fx, &b, 1);
    assert_link_killed(fx);
    assert_broke_for(fx, "below the floor");
    assert_int_equal(atomic_load(&fx->xl->requests_fenced), 1);
}

/* The floor alone, without an unregister: the stream ends within about one
 * window, the link is gone, and the cache is free at once. */
static void test_trickled_push_is_cut(void **state)
{
    fx_t *fx = *state;
    raw_link_and_attach(fx);
    start_write(fx, 1u << 20);
    int64_t t0 = rawpeer_now_ms();
    uint8_t b = 0x22;
    int rc = RAWPEER_OK;
    for (int i = 0; i < 10 && rc == RAWPEER_OK; i++) {
        rc = rawpeer_send(fx->data, &b, 1, 100);
        if (rawpeer_wait_closed(fx->data, 400) == RAWPEER_OK)
            break;
    }
    int64_t ms = rawpeer_now_ms() - t0;
    print_message("trickled push cut after %lld ms\n", (long long)ms);
    if (ms >= 3 * WAIT_MS)
        fail_msg("a 1-byte-per-400-ms push was not cut within %d ms", 3 * WAIT_MS);
    assert_link_killed(fx);
    assert_broke_for(fx, "below the floor");
    assert_int_equal(atomic_load(&fx->xl->requests_fenced), 1);
    /* The cache is free again: unregister does not wait. */
    int64_t t1 = rawpeer_now_ms();
    assert_int_equal(llmlink_unregister_cache(fx->p, fx->cache), LLMLINK_SUCCESS);
    assert_true(rawpeer_now_ms() - t1 < WAIT_MS);
}

/* An 8 MiB push at about 3 MiB/s (above the floor, so not cut by it) holds
 * the cache past the unregister's wait: the unregister then has the owner
 * thread cut it and returns SUCCESS, memory unchanged after it returns. */
static void test_unregister_cuts_slow_push(void **state)
{
    fx_t *fx = *state;
    raw_link_and_attach(fx);
    start_write(fx, (uint64_t)NB * BS);
    int64_t t0 = rawpeer_now_ms();
    unreg_t u = {.fx = fx, .delay_ms = 100};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, unreg_main, &u), 0);
    static uint8_t chunk[48 * 1024];
    memset(chunk, 0x33, sizeof chunk);
    /* 48 KiB every 15 ms, about 3 MiB/s: 8 MiB take about 2.5 s. Bounded by
     * the chunk count and the unregister. */
    for (int i = 0; i < 170 && !atomic_load(&u.done); i++) {
        if (rawpeer_send(fx->data, chunk, sizeof chunk, 100) != RAWPEER_OK)
            break;
        rawpeer_sleep_ms(15);
    }
    pthread_join(th, NULL);
    int64_t held = u.returned_ms - t0;
    print_message("slow push: unregister returned %s after %lld ms\n",
                  llmlink_status_name(u.st), (long long)held);
    if (u.st != LLMLINK_SUCCESS)
        fail_msg("unregister during a slow tcp push returned %s: %s", llmlink_status_name(u.st),
                 llmlink_last_error());
    assert_unchanged_after(fx, chunk, sizeof chunk);
    assert_link_killed(fx);
    assert_broke_for(fx, "llmlink_unregister_cache");
    assert_int_equal(atomic_load(&fx->xl->requests_fenced), 1);
}

/* A small push that completes at once is not cut, and the stream serves
 * the next one. */
static void test_quick_push_not_cut(void **state)
{
    fx_t *fx = *state;
    raw_link_and_attach(fx);
    static uint8_t chunk[BS];
    for (int round = 0; round < 2; round++) {
        memset(chunk, 0x40 + round, sizeof chunk);
        start_write(fx, sizeof chunk);
        assert_int_equal(rawpeer_send(fx->data, chunk, sizeof chunk, IO_MS), RAWPEER_OK);
        uint8_t hb[LLK_XWIRE_HEADER_SIZE], buf[1024];
        assert_int_equal(rawpeer_recv_exact(fx->data, hb, sizeof hb, IO_MS), RAWPEER_OK);
        llk_xframe_header_t h;
        const char *why = NULL;
        assert_int_equal(llk_xwire_read_header(hb, &h, &why), 0);
        assert_true(h.length <= sizeof buf);
        assert_int_equal(rawpeer_recv_exact(fx->data, buf, h.length, IO_MS), RAWPEER_OK);
        llk_xresp_t resp;
        assert_int_equal(llk_xwire_decode_resp(buf, h.length, &resp, &why), 0);
        assert_int_equal(resp.status, LLMLINK_SUCCESS);
        assert_memory_equal(fx->mem[0], chunk, sizeof chunk);
        rawpeer_sleep_ms(WAIT_MS + 200); /* past a window: idle streams are not judged */
    }
    assert_int_equal(llmlink_check_link_status(fx->p, CLIENT_ID), LLMLINK_SUCCESS);
    assert_int_equal(atomic_load(&fx->xl->requests_fenced), 0);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_trickled_push_cut_and_unregister_succeeds),
        T(test_trickled_push_is_cut),
        T(test_unregister_cuts_slow_push),
        T(test_quick_push_not_cut),
    };
    return cmocka_run_group_tests_name("xfer_progress", tests, NULL, NULL);
}
