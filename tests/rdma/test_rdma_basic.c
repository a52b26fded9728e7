/*
 * test_rdma_basic.c - the RDMA transport on soft-RoCE, both engines in this
 * process (run inside the VM by ci/rdma-vm.sh; see tests/rdma/README.md):
 * pull and push of blocks and of cache entries over one rail, two rails
 * (rxe0 and rxe1: active MTUs 1024 and 4096), an MTU cap
 * (llmlink.RdmaMtu), forced rdma against a tcp peer, a region that P
 * unregisters while D holds its grant (D's READ fails with a remote access
 * error, the link goes, relinking and a new registration work), and that
 * the bytes moved over RDMA (no tcp or shm request). Every byte is verified.
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
#include <time.h>

#include "kvfill.h"
#include "llk_test.h"
#include "llmlink.h"
#include "transport/rdma.h"
#include "transport/transport_testing.h"
#include "xfer/xfer.h"

#define NT 8
#define NB 32
#define BS (64u << 10) /* 64 KiB blocks: 16 MiB per cache */

static const char *ip0(void)
{
    const char *s = getenv("LLMLINK_RDMA_IP0");
    return s && *s ? s : "10.10.0.1";
}

static const char *ip1(void)
{
    const char *s = getenv("LLMLINK_RDMA_IP1");
    return s && *s ? s : "10.10.1.1";
}

typedef struct side {
    llmlink_t *e;
    uint8_t *mem[NT];
    int64_t cache;
} side_t;

static llmlink_t *engine_x(llmlink_role_t role, uint64_t id, const char *listen,
                           const char *transport, const char *mtu, const char *wait,
                           const char *post_delay)
{
    llmlink_t *e = NULL;
    assert_status(llmlink_create(&e, role, id), LLMLINK_SUCCESS);
    llmlink_option_t o[5] = {{"llmlink.Transport", transport},
                             {"llm.SyncKvCacheWaitTime", wait ? wait : "30000"}};
    size_t n = 2;
    if (listen)
        o[n++] = (llmlink_option_t){"llm.listenIpInfo", listen};
    if (mtu)
        o[n++] = (llmlink_option_t){"llmlink.RdmaMtu", mtu};
    assert_status(llmlink_init(e, o, n), LLMLINK_SUCCESS);
    /* The seam is internal (transport_testing.h), not an option. */
    if (post_delay)
        llk_test_set_rdma_post_delay_ms(e, (uint32_t)strtoul(post_delay, NULL, 10));
    return e;
}

static llmlink_t *engine(llmlink_role_t role, uint64_t id, const char *listen,
                         const char *transport, const char *mtu)
{
    return engine_x(role, id, listen, transport, mtu, NULL, NULL);
}

/* NT tensors of NB blocks of bs bytes, filled with seed's pattern. */
static void reg_bs(side_t *s, uint64_t key_cluster, uint64_t seed, uint64_t bs)
{
    llmlink_cache_desc_t d = {.num_tensors = NT, .data_type = LLMLINK_DT_UINT8,
                              .placement = LLMLINK_PLACEMENT_HOST, .num_dims = 2,
                              .shape = {NB, (int64_t)bs}};
    uint64_t addrs[NT];
    for (int t = 0; t < NT; t++) {
        s->mem[t] = aligned_alloc(4096, (size_t)NB * bs);
        assert_non_null(s->mem[t]);
        kvfill_fill(s->mem[t], (size_t)NB * bs, seed, (uint32_t)t, 0);
        addrs[t] = (uint64_t)(uintptr_t)s->mem[t];
    }
    llmlink_cache_key_t k = {.type = LLMLINK_KEY_BLOCKS, .cluster_id = key_cluster, .model_id = 1};
    assert_status(llmlink_register_blocks_cache(s->e, &d, addrs, NT, key_cluster ? &k : NULL,
                                                &s->cache),
                  LLMLINK_SUCCESS);
}

static void reg(side_t *s, uint64_t key_cluster, uint64_t seed)
{
    reg_bs(s, key_cluster, seed, BS);
}

static void unreg(side_t *s)
{
    assert_status(llmlink_unregister_cache(s->e, s->cache), LLMLINK_SUCCESS);
    for (int t = 0; t < NT; t++)
        free(s->mem[t]);
}

/* dst block b of every tensor holds src block map[b] (seed src), other blocks dst_seed. */
static void verify(const side_t *dst, const uint64_t *dblocks, const uint64_t *sblocks, size_t n,
                   uint64_t dst_seed, uint64_t src_seed)
{
    for (int t = 0; t < NT; t++)
        for (uint64_t b = 0; b < NB; b++) {
            uint64_t seed = dst_seed, off = b * BS;
            for (size_t i = 0; i < n; i++)
                if (dblocks[i] == b) {
                    seed = src_seed;
                    off = sblocks[i] * BS;
                }
            size_t bad = kvfill_check(dst->mem[t] + b * BS, BS, seed, (uint32_t)t, off);
            if (bad != SIZE_MAX)
                fail_msg("tensor %d block %llu: byte %zu differs", t, (unsigned long long)b, bad);
        }
}

static void link_ok(llmlink_t *d, uint64_t pid, const llmlink_ip_info_t *remote, size_t nr,
                    const llmlink_ip_info_t *local, size_t nl)
{
    llmlink_cluster_info_t ci = {.remote_cluster_id = pid, .remote_ip_infos = remote,
                                 .num_remote_ip_infos = nr, .local_ip_infos = local,
                                 .num_local_ip_infos = nl};
    llmlink_status_t st[1];
    assert_status(llmlink_link_clusters(d, &ci, 1, 20000, st), LLMLINK_SUCCESS);
}

static llmlink_xfer_stats_t xs(llmlink_t *e)
{
    llmlink_xfer_stats_t s = {.version = LLMLINK_XFER_STATS_VERSION};
    assert_status(llmlink_get_xfer_stats(e, &s), LLMLINK_SUCCESS);
    return s;
}

/* Pull a scattered map, push another, all over RDMA. */
static void round_trip(side_t *p, side_t *d, uint64_t pid, uint64_t ps, uint64_t ds)
{
    uint64_t sb[NB / 2], db[NB / 2];
    for (size_t i = 0; i < NB / 2; i++) {
        sb[i] = (i * 7 + 3) % NB;      /* scattered source blocks */
        db[i] = NB - 1 - i;            /* reversed destinations */
    }
    db[3] = 0, db[4] = 1, db[5] = 2;   /* a consecutive run merges into one WR chain */
    sb[3] = 10, sb[4] = 11, sb[5] = 12;
    llmlink_cache_key_t k = {.type = LLMLINK_KEY_BLOCKS, .cluster_id = pid, .model_id = 1};
    uint64_t before = xs(d->e).rdma_requests;
    assert_status(llmlink_pull_blocks(d->e, &k, d->cache, sb, NB / 2, db, NB / 2, NULL),
                  LLMLINK_SUCCESS);
    verify(d, db, sb, NB / 2, ds, ps);
    /* push D's blocks 0..3 (now holding P's 10..12 and D's own) into P's 20..23 */
    uint64_t psrc[4] = {0, 1, 2, 3}, pdst[4] = {20, 21, 22, 23};
    assert_status(llmlink_push_blocks(d->e, &k, d->cache, psrc, 4, pdst, 4, NULL),
                  LLMLINK_SUCCESS);
    for (int t = 0; t < NT; t++)
        for (int i = 0; i < 4; i++)
            assert_memory_equal(p->mem[t] + pdst[i] * BS, d->mem[t] + psrc[i] * BS, BS);
    llmlink_xfer_stats_t s = xs(d->e);
    assert_int_equal(s.tcp_requests, 0);
    assert_int_equal(s.shm_requests, 0);
    assert_true(s.rdma_requests >= before + 2);
    assert_true(xs(p->e).bytes_served >= (uint64_t)(NB / 2 + 4) * NT * BS);
}

static void one_rail(const char *mtu)
{
    char listen[64];
    snprintf(listen, sizeof listen, "%s:0", ip0());
    side_t p = {.e = engine(LLMLINK_ROLE_PROMPT, 11, listen, "rdma", mtu)};
    side_t d = {.e = engine(LLMLINK_ROLE_DECODER, 12, NULL, "rdma", NULL)};
    reg(&p, 11, kvfill_seed(11, 1));
    reg(&d, 0, kvfill_seed(12, 1));
    uint16_t port = 0;
    assert_status(llmlink_get_listen_port(p.e, 0, &port), LLMLINK_SUCCESS);
    llmlink_ip_info_t r = {ip0(), port};
    /* one local ip info: one rail (without any, the rails would be every
     * RDMA address of D paired by the data: both devices) */
    llmlink_ip_info_t l = {ip0(), 0};
    link_ok(d.e, 11, &r, 1, &l, 1);
    round_trip(&p, &d, 11, kvfill_seed(11, 1), kvfill_seed(12, 1));
    unreg(&d);
    unreg(&p);
    llmlink_destroy(d.e);
    llmlink_destroy(p.e);
}

static void test_one_rail(void **state)
{
    (void)state;
    one_rail(NULL);
}

/* P caps its MTU at 256: both ends must agree on the smaller path MTU
 * (rxe0's active MTU is 1024) for any byte to move. */
static void test_mtu_cap(void **state)
{
    (void)state;
    one_rail("256");
}

/* Two rails: rxe0 (1024) and rxe1 (4096), each device paired with itself. */
static void test_two_rails(void **state)
{
    (void)state;
    char listen[128];
    snprintf(listen, sizeof listen, "%s:0;%s:0", ip0(), ip1());
    side_t p = {.e = engine(LLMLINK_ROLE_PROMPT, 21, listen, "rdma", NULL)};
    side_t d = {.e = engine(LLMLINK_ROLE_DECODER, 22, NULL, "rdma", NULL)};
    reg(&p, 21, kvfill_seed(21, 1));
    reg(&d, 0, kvfill_seed(22, 1));
    uint16_t p0 = 0, p1 = 0;
    assert_status(llmlink_get_listen_port(p.e, 0, &p0), LLMLINK_SUCCESS);
    assert_status(llmlink_get_listen_port(p.e, 1, &p1), LLMLINK_SUCCESS);
    llmlink_ip_info_t r[2] = {{ip0(), p0}, {ip1(), p1}};
    llmlink_ip_info_t l[2] = {{ip0(), 0}, {ip1(), 0}};
    link_ok(d.e, 21, r, 2, l, 2);
    round_trip(&p, &d, 21, kvfill_seed(21, 1), kvfill_seed(22, 1));
    unreg(&d);
    unreg(&p);
    llmlink_destroy(d.e);
    llmlink_destroy(p.e);
}

/* rdma forced on one side, tcp on the other: the link fails and says why. */
static void test_forced_rdma_vs_tcp(void **state)
{
    (void)state;
    char listen[64];
    snprintf(listen, sizeof listen, "%s:0", ip0());
    llmlink_t *p = engine(LLMLINK_ROLE_PROMPT, 31, listen, "tcp", NULL);
    llmlink_t *d = engine(LLMLINK_ROLE_DECODER, 32, NULL, "rdma", NULL);
    uint16_t port = 0;
    assert_status(llmlink_get_listen_port(p, 0, &port), LLMLINK_SUCCESS);
    llmlink_ip_info_t r = {ip0(), port};
    llmlink_cluster_info_t ci = {.remote_cluster_id = 31, .remote_ip_infos = &r,
                                 .num_remote_ip_infos = 1};
    llmlink_status_t st[1];
    assert_status(llmlink_link_clusters(d, &ci, 1, 10000, st), LLMLINK_LINK_FAILED);
    assert_non_null(strstr(llmlink_last_error(), "rdma"));
    llmlink_destroy(d);
    llmlink_destroy(p);
}

/* Whether e's link with remote_id fills the READ-depth byte of its rail
 * records (the peer announced LLK_EXT_RDMA_READ_DEPTH). */
static bool sends_read_depth(llmlink_t *e, uint64_t remote_id)
{
    llk_xlink_t *xl = llk_xfer_find_link(e, remote_id, "test");
    assert_non_null(xl);
    pthread_mutex_lock(&xl->mu);
    bool on = llk_rdma_xlink(xl)->peer_read_depth;
    pthread_mutex_unlock(&xl->mu);
    llk_xlink_unref(xl);
    return on;
}

/* Wire compatibility with llmlink 0.3 (issue 13): 0.3 refuses a rail
 * record whose byte after mtu is set, and does not know
 * LLK_EXT_RDMA_READ_DEPTH. llk_test_set_legacy_rails makes one engine
 * behave so (it also refuses a set byte, as 0.3 does). Two current ends
 * exchange their depths; with a "0.3" end on either side of the link the
 * other sends its records with the byte 0, and RDMA works (forced rdma:
 * a refused record would fail the link). */
static void test_read_depth_vs_03_peer(void **state)
{
    (void)state;
    static const struct {
        bool p_legacy, d_legacy;
    } cases[] = {{false, false}, {false, true}, {true, false}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char listen[64];
        snprintf(listen, sizeof listen, "%s:0", ip0());
        uint64_t pid = 41 + 2 * i, did = 42 + 2 * i;
        side_t p = {.e = engine(LLMLINK_ROLE_PROMPT, pid, listen, "rdma", NULL)};
        side_t d = {.e = engine(LLMLINK_ROLE_DECODER, did, NULL, "rdma", NULL)};
        llk_test_set_legacy_rails(p.e, cases[i].p_legacy);
        llk_test_set_legacy_rails(d.e, cases[i].d_legacy);
        reg(&p, pid, kvfill_seed(pid, 1));
        reg(&d, 0, kvfill_seed(did, 1));
        uint16_t port = 0;
        assert_status(llmlink_get_listen_port(p.e, 0, &port), LLMLINK_SUCCESS);
        llmlink_ip_info_t r = {ip0(), port};
        link_ok(d.e, pid, &r, 1, NULL, 0);
        bool both = !cases[i].p_legacy && !cases[i].d_legacy;
        assert_int_equal(sends_read_depth(p.e, did), both);
        assert_int_equal(sends_read_depth(d.e, pid), both);
        round_trip(&p, &d, pid, kvfill_seed(pid, 1), kvfill_seed(did, 1));
        unreg(&d);
        unreg(&p);
        llmlink_destroy(d.e);
        llmlink_destroy(p.e);
    }
}

/* An engine with Transport=rdma, wait 30 s and the given key=value options. */
static llmlink_t *engine_kv(llmlink_role_t role, uint64_t id, const char *listen,
                            const char *const *kv, size_t nkv)
{
    llmlink_t *e = NULL;
    assert_status(llmlink_create(&e, role, id), LLMLINK_SUCCESS);
    llmlink_option_t o[8] = {{"llmlink.Transport", "rdma"},
                             {"llm.SyncKvCacheWaitTime", "30000"}};
    size_t n = 2;
    if (listen)
        o[n++] = (llmlink_option_t){"llm.listenIpInfo", listen};
    for (size_t i = 0; i < nkv && n < 8; i += 2)
        o[n++] = (llmlink_option_t){kv[i], kv[i + 1]};
    assert_status(llmlink_init(e, o, n), LLMLINK_SUCCESS);
    return e;
}

static const char *env_or(const char *name, const char *dflt)
{
    const char *s = getenv(name);
    return s && *s ? s : dflt;
}

/* Device, port and GID index named explicitly (the harness's rxe0 and its
 * RoCE v2 GID index) work; a decoder told to use rxe1 for rxe0's address
 * has no GID for it: forced rdma fails the link and says so. */
static void test_named_device(void **state)
{
    (void)state;
    char listen[64];
    snprintf(listen, sizeof listen, "%s:0", ip0());
    const char *pkv[] = {"llmlink.RdmaDevice", env_or("LLMLINK_RDMA_DEV0", "rxe0"),
                         "llmlink.RdmaPort", "1",
                         "llmlink.RdmaGidIndex", env_or("LLMLINK_RDMA_GID0", "1")};
    side_t p = {.e = engine_kv(LLMLINK_ROLE_PROMPT, 61, listen, pkv, 6)};
    side_t d = {.e = engine_kv(LLMLINK_ROLE_DECODER, 62, NULL, NULL, 0)};
    reg(&p, 61, kvfill_seed(61, 1));
    reg(&d, 0, kvfill_seed(62, 1));
    uint16_t port = 0;
    assert_status(llmlink_get_listen_port(p.e, 0, &port), LLMLINK_SUCCESS);
    llmlink_ip_info_t r = {ip0(), port};
    link_ok(d.e, 61, &r, 1, NULL, 0);
    round_trip(&p, &d, 61, kvfill_seed(61, 1), kvfill_seed(62, 1));

    const char *wrong[] = {"llmlink.RdmaDevice", env_or("LLMLINK_RDMA_DEV1", "rxe1")};
    llmlink_t *d2 = engine_kv(LLMLINK_ROLE_DECODER, 63, NULL, wrong, 2);
    llmlink_cluster_info_t ci = {.remote_cluster_id = 61, .remote_ip_infos = &r,
                                 .num_remote_ip_infos = 1};
    llmlink_status_t st[1];
    assert_status(llmlink_link_clusters(d2, &ci, 1, 10000, st), LLMLINK_LINK_FAILED);
    print_message("  rxe1 for rxe0's address: %s\n", llmlink_last_error());
    assert_non_null(strstr(llmlink_last_error(), "no RDMA device has a RoCE v2 GID"));
    llmlink_destroy(d2);
    unreg(&d);
    unreg(&p);
    llmlink_destroy(d.e);
    llmlink_destroy(p.e);
}

/* Verbs objects the kernel holds, as iproute2's `rdma resource show` lists
 * them (one line per object). All of them, not this pid's: an object made
 * by one of our threads shows that thread's id, and the VM runs one program
 * at a time, so the counts relative to the start are this test's. */
typedef struct res { int qp, cq, mr, pd; } res_t;

static int count_res(const char *kind)
{
    char cmd[96], line[1024];
    snprintf(cmd, sizeof cmd, "rdma resource show %s 2>/dev/null", kind);
    FILE *f = popen(cmd, "r");
    if (!f)
        return -1;
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "link ") || strstr(line, "dev "))
            n++;
    int rc = pclose(f);
    return rc == 0 ? n : -1;
}

static res_t resources(void)
{
    res_t r = {count_res("qp"), count_res("cq"), count_res("mr"), count_res("pd")};
    return r;
}

static void print_res(const char *when, res_t r)
{
    print_message("  %-34s qp %d cq %d mr %d pd %d\n", when, r.qp, r.cq, r.mr, r.pd);
}

/* Polls (bounded) until this process holds `want` QPs. */
static res_t wait_qps(int want)
{
    res_t r = resources();
    for (int i = 0; i < 100 && r.qp != want; i++) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
        r = resources();
    }
    return r;
}

typedef struct puller {
    llmlink_t *d;
    uint64_t pid;
    int64_t cache;
    llmlink_status_t st;
    char msg[512];
} puller_t;

static void *pull_all(void *arg)
{
    puller_t *pl = arg;
    uint64_t b[NB];
    for (uint64_t i = 0; i < NB; i++)
        b[i] = i;
    llmlink_cache_key_t k = {.type = LLMLINK_KEY_BLOCKS, .cluster_id = pl->pid, .model_id = 1};
    pl->st = llmlink_pull_blocks(pl->d, &k, pl->cache, b, NB, b, NB, NULL);
    snprintf(pl->msg, sizeof pl->msg, "%s", llmlink_last_error());
    return NULL;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* P unregisters a cache while D holds a grant for it and has not read yet
 * (D waits 1.4 s between grant and READ: llk_test_set_rdma_post_delay_ms). P's
 * unregister waits its SyncKvCacheWaitTime (500 ms), then revokes the MRs
 * and returns SUCCESS (the memory is P's again), long before P's owner
 * stream would give up on the grant (a minute); D's READ fails with a
 * remote access error: NETWORK_ERROR naming it, the link unusable; a
 * relink and a new registration of the same memory (a new generation)
 * work. */
static void test_unregistered_before_read(void **state)
{
    (void)state;
    char listen[64];
    snprintf(listen, sizeof listen, "%s:0", ip0());
    side_t p = {.e = engine_x(LLMLINK_ROLE_PROMPT, 41, listen, "rdma", NULL, "500", NULL)};
    side_t d = {.e = engine_x(LLMLINK_ROLE_DECODER, 42, NULL, "rdma", NULL, "30000", "1400")};
    uint64_t ps = kvfill_seed(41, 1), ds = kvfill_seed(42, 1);
    reg(&p, 41, ps);
    reg(&d, 0, ds);
    uint16_t port = 0;
    assert_status(llmlink_get_listen_port(p.e, 0, &port), LLMLINK_SUCCESS);
    llmlink_ip_info_t r = {ip0(), port};
    /* D bounds its call by its own 30 s, as a 0.3 peer that does not learn
     * P's 500 ms: a new one would give up with P (the smaller wait), before
     * P's unregister revokes the grant. */
    llk_test_set_legacy_wait(d.e, true);
    link_ok(d.e, 41, &r, 1, NULL, 0);

    puller_t pl = {.d = d.e, .pid = 41, .cache = d.cache};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, pull_all, &pl), 0);
    struct timespec ts = {0, 300 * 1000 * 1000};
    nanosleep(&ts, NULL); /* the grant is out, the READ not posted */
    int64_t t0 = now_ms();
    assert_status(llmlink_unregister_cache(p.e, p.cache), LLMLINK_SUCCESS);
    int64_t took = now_ms() - t0;
    print_message("  unregister with a grant out: SUCCESS after %lld ms\n", (long long)took);
    assert_true(took >= 400 && took < 1300); /* it waited its 500 ms, not for D */
    /* The memory is P's again: scribble on it (no NIC may read it now). */
    for (int t = 0; t < NT; t++)
        kvfill_fill(p.mem[t], (size_t)NB * BS, ps + 99, (uint32_t)t, 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    print_message("  D's pull: %s | %s\n", llmlink_status_name(pl.st), pl.msg);
    assert_status(pl.st, LLMLINK_NETWORK_ERROR);
    assert_non_null(strstr(pl.msg, "remote"));
    assert_non_null(strstr(pl.msg, "RDMA READ completion"));
    assert_status(llmlink_check_link_status(d.e, 41), LLMLINK_NOT_YET_LINK);

    /* Register the same memory again (new generation), relink, pull. */
    llmlink_cache_desc_t desc = {.num_tensors = NT, .data_type = LLMLINK_DT_UINT8,
                                 .placement = LLMLINK_PLACEMENT_HOST, .num_dims = 2,
                                 .shape = {NB, BS}};
    uint64_t addrs[NT];
    for (int t = 0; t < NT; t++)
        addrs[t] = (uint64_t)(uintptr_t)p.mem[t];
    llmlink_cache_key_t k = {.type = LLMLINK_KEY_BLOCKS, .cluster_id = 41, .model_id = 1};
    assert_status(llmlink_register_blocks_cache(p.e, &desc, addrs, NT, &k, &p.cache),
                  LLMLINK_SUCCESS);
    llmlink_status_t st = LLMLINK_FAILED;
    for (int i = 0; i < 50 && st != LLMLINK_SUCCESS; i++) { /* P notices the old link go */
        llmlink_cluster_info_t ci = {.remote_cluster_id = 41, .remote_ip_infos = &r,
                                     .num_remote_ip_infos = 1};
        llmlink_status_t one[1];
        st = llmlink_link_clusters(d.e, &ci, 1, 10000, one);
        if (st != LLMLINK_SUCCESS) {
            struct timespec w = {0, 100 * 1000 * 1000};
            nanosleep(&w, NULL);
        }
    }
    assert_status(st, LLMLINK_SUCCESS);
    pl.st = LLMLINK_FAILED;
    pull_all(&pl); /* the post delay again, but nothing revokes now */
    assert_status(pl.st, LLMLINK_SUCCESS);
    uint64_t all[NB];
    for (uint64_t i = 0; i < NB; i++)
        all[i] = i;
    verify(&d, all, all, NB, ds, ps + 99);
    unreg(&d);
    unreg(&p);
    llmlink_destroy(d.e);
    llmlink_destroy(p.e);
}

/* P dies (destroyed) while D holds its grant; D's pull fails; D links to
 * a new P and moves data there: a survivor of a broken link makes working
 * rails again. */
static void test_peer_gone_then_relink(void **state)
{
    (void)state;
    char listen[64];
    snprintf(listen, sizeof listen, "%s:0", ip0());
    side_t p = {.e = engine_x(LLMLINK_ROLE_PROMPT, 51, listen, "rdma", NULL, "3000", NULL)};
    side_t d = {.e = engine_x(LLMLINK_ROLE_DECODER, 52, NULL, "rdma", NULL, "3000", "1000")};
    uint64_t ps = kvfill_seed(51, 1), ds = kvfill_seed(52, 1);
    reg(&p, 51, ps);
    reg(&d, 0, ds);
    uint16_t port = 0;
    assert_status(llmlink_get_listen_port(p.e, 0, &port), LLMLINK_SUCCESS);
    llmlink_ip_info_t r = {ip0(), port};
    link_ok(d.e, 51, &r, 1, NULL, 0);
    puller_t pl = {.d = d.e, .pid = 51, .cache = d.cache};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, pull_all, &pl), 0);
    struct timespec ts = {0, 300 * 1000 * 1000};
    nanosleep(&ts, NULL);
    llmlink_destroy(p.e); /* as a killed process: sockets and QPs go */
    assert_int_equal(pthread_join(th, NULL), 0);
    print_message("  D's pull with P gone: %s | %s\n", llmlink_status_name(pl.st), pl.msg);
    assert_true(pl.st != LLMLINK_SUCCESS);
    for (int t = 0; t < NT; t++)
        free(p.mem[t]);

    side_t p2 = {.e = engine_x(LLMLINK_ROLE_PROMPT, 53, listen, "rdma", NULL, "3000", NULL)};
    reg(&p2, 53, ps + 1);
    assert_status(llmlink_get_listen_port(p2.e, 0, &port), LLMLINK_SUCCESS);
    llmlink_ip_info_t r2 = {ip0(), port};
    link_ok(d.e, 53, &r2, 1, NULL, 0);
    pl.pid = 53;
    pull_all(&pl);
    print_message("  D's pull from the new P: %s | %s\n", llmlink_status_name(pl.st), pl.msg);
    assert_status(pl.st, LLMLINK_SUCCESS);
    uint64_t all[NB];
    for (uint64_t i = 0; i < NB; i++)
        all[i] = i;
    verify(&d, all, all, NB, ds, ps + 1);
    unreg(&d);
    unreg(&p2);
    llmlink_destroy(d.e);
    llmlink_destroy(p2.e);
}

static void *pull_all(void *arg);

/* QPs, CQs, MRs and PDs come back to what the process had: unlink frees
 * the link's QPs and CQs, a peer that dies mid-transfer too (on the side
 * that survives), unregister the cache's MRs, destroy the PDs. Counted by
 * the kernel (rdma resource show), not by the library's word. */
static void test_resources_released(void **state)
{
    (void)state;
    res_t base = resources();
    if (base.qp < 0 || base.pd < 0)
        fail_msg("cannot count RDMA resources: `rdma resource show` failed");
    print_res("before", base);
    char listen[64];
    snprintf(listen, sizeof listen, "%s:0", ip0());
    side_t p = {.e = engine_x(LLMLINK_ROLE_PROMPT, 71, listen, "rdma", NULL, "3000", NULL)};
    side_t d = {.e = engine_x(LLMLINK_ROLE_DECODER, 72, NULL, "rdma", NULL, "3000", "800")};
    res_t eng = resources();
    print_res("two engines", eng);
    assert_true(eng.pd >= base.pd + 2); /* a PD per device and engine */
    assert_int_equal(eng.qp, base.qp);
    reg(&p, 71, kvfill_seed(71, 1));
    reg(&d, 0, kvfill_seed(72, 1));
    uint16_t port = 0;
    assert_status(llmlink_get_listen_port(p.e, 0, &port), LLMLINK_SUCCESS);
    llmlink_ip_info_t r = {ip0(), port};
    llmlink_ip_info_t l = {ip0(), 0}; /* one rail (test_rdma_pairing: without, two) */
    link_ok(d.e, 71, &r, 1, &l, 1);
    res_t linked = resources();
    print_res("linked", linked);
    assert_int_equal(linked.qp, base.qp + 2); /* one rail: a QP on each end */
    assert_int_equal(linked.cq, base.cq + 2);
    puller_t pl = {.d = d.e, .pid = 71, .cache = d.cache};
    pull_all(&pl);
    assert_status(pl.st, LLMLINK_SUCCESS);
    res_t moved = resources();
    print_res("after a pull", moved);
    assert_true(moved.mr >= eng.mr + 2 * NT); /* both caches, one MR per tensor */

    llmlink_cluster_info_t ci = {.remote_cluster_id = 71, .remote_ip_infos = &r,
                                 .num_remote_ip_infos = 1};
    llmlink_status_t st[1];
    assert_status(llmlink_unlink_clusters(d.e, &ci, 1, 5000, false, st), LLMLINK_SUCCESS);
    res_t unlinked = wait_qps(base.qp);
    print_res("unlinked", unlinked);
    assert_int_equal(unlinked.qp, base.qp);
    assert_int_equal(unlinked.cq, base.cq);

    /* again, and P dies while D holds a grant */
    link_ok(d.e, 71, &r, 1, &l, 1);
    assert_int_equal(resources().qp, base.qp + 2);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, pull_all, &pl), 0);
    struct timespec ts = {0, 300 * 1000 * 1000};
    nanosleep(&ts, NULL);
    llmlink_destroy(p.e);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_true(pl.st != LLMLINK_SUCCESS);
    res_t died = wait_qps(base.qp);
    print_res("peer died mid-pull", died);
    assert_int_equal(died.qp, base.qp);
    assert_int_equal(died.cq, base.cq);
    for (int t = 0; t < NT; t++)
        free(p.mem[t]);
    unreg(&d);
    llmlink_destroy(d.e);
    res_t end = resources();
    print_res("both destroyed", end);
    assert_int_equal(end.qp, base.qp);
    assert_int_equal(end.cq, base.cq);
    assert_int_equal(end.mr, base.mr);
    assert_int_equal(end.pd, base.pd);
}

/* A pull that times out must not return while its READs can still land:
 * the destination is the caller's again the moment the call returns. D's
 * SyncKvCacheWaitTime (100 ms) ends a 64 MiB pull (32 MiB sanitized) early;
 * the destination must not change after the call returned (llk_rdma_move
 * aborts the QPs and reaps its chains' flushed completions first).
 * Limit: rxe under TCG mostly completes a chain inside ibv_post_send, so
 * here few or no chains are in flight at the deadline and this test rarely
 * sees the orphaned-READ bug it guards against; on an asynchronous NIC it
 * would. The message prints how many chains were pending. */
/* 256 KiB blocks: 64 MiB per cache; 128 KiB (32 MiB) under a sanitizer,
 * whose shadow memory must fit the VM too. */
static uint64_t big_bs(void)
{
    const char *san = getenv("LLMLINK_SANITIZER");
    return san && *san ? BS * 2 : BS * 4;
}
#define BIG_BS big_bs()

/* FNV-1a of a tensor: a fingerprint instead of a copy (memory is short in
 * the VM). */
static uint64_t fingerprint(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static void test_timed_out_pull_stops_writing(void **state)
{
    (void)state;
    char listen[64];
    snprintf(listen, sizeof listen, "%s:0", ip0());
    side_t p = {.e = engine_x(LLMLINK_ROLE_PROMPT, 51, listen, "rdma", NULL, "30000", NULL)};
    side_t d = {.e = engine_x(LLMLINK_ROLE_DECODER, 52, NULL, "rdma", NULL, "100", NULL)};
    reg_bs(&p, 51, kvfill_seed(51, 1), BIG_BS);
    reg_bs(&d, 0, kvfill_seed(52, 1), BIG_BS);
    uint16_t port = 0;
    assert_status(llmlink_get_listen_port(p.e, 0, &port), LLMLINK_SUCCESS);
    llmlink_ip_info_t r = {ip0(), port};
    link_ok(d.e, 51, &r, 1, NULL, 0);

    /* Warm-up: one block, so that both sides' memory regions (made on
     * first use, pinning 64 MiB each) exist before the timed pull; it may
     * itself run out of time while they are made: then link again. */
    llmlink_cache_key_t k = {.type = LLMLINK_KEY_BLOCKS, .cluster_id = 51, .model_id = 1};
    uint64_t one = 0;
    for (int i = 0; i < 5; i++) {
        if (llmlink_pull_blocks(d.e, &k, d.cache, &one, 1, &one, 1, NULL) == LLMLINK_SUCCESS)
            break;
        for (int j = 0; j < 50 && llmlink_check_link_status(d.e, 51) != LLMLINK_SUCCESS; j++) {
            llmlink_cluster_info_t ci = {.remote_cluster_id = 51, .remote_ip_infos = &r,
                                         .num_remote_ip_infos = 1};
            llmlink_status_t st1[1];
            if (llmlink_link_clusters(d.e, &ci, 1, 10000, st1) != LLMLINK_SUCCESS) {
                struct timespec w = {0, 100 * 1000 * 1000};
                nanosleep(&w, NULL);
            }
        }
    }
    assert_status(llmlink_check_link_status(d.e, 51), LLMLINK_SUCCESS);

    puller_t pl = {.d = d.e, .pid = 51, .cache = d.cache};
    int64_t t0 = now_ms();
    pull_all(&pl);
    print_message("  big pull with a 100 ms budget: %s after %lld ms | %s\n",
                  llmlink_status_name(pl.st), (long long)(now_ms() - t0), pl.msg);
    if (pl.st == LLMLINK_SUCCESS) {
        /* a machine that moves it all in 100 ms leaves nothing in flight to check */
        print_message("  (the pull finished in time: nothing in flight to check)\n");
    } else {
        assert_status(pl.st, LLMLINK_WAIT_PROCESS_TIMEOUT);
        size_t bytes = (size_t)NB * BIG_BS;
        uint64_t before[NT];
        for (int t = 0; t < NT; t++)
            before[t] = fingerprint(d.mem[t], bytes);
        struct timespec w = {0, 600 * 1000 * 1000};
        nanosleep(&w, NULL);
        for (int t = 0; t < NT; t++)
            if (fingerprint(d.mem[t], bytes) != before[t])
                fail_msg("tensor %d changed after the timed-out pull returned", t);
        assert_status(llmlink_check_link_status(d.e, 51), LLMLINK_NOT_YET_LINK);
    }
    unreg(&d);
    unreg(&p);
    llmlink_destroy(d.e);
    llmlink_destroy(p.e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_rail),
        cmocka_unit_test(test_mtu_cap),
        cmocka_unit_test(test_two_rails),
        cmocka_unit_test(test_forced_rdma_vs_tcp),
        cmocka_unit_test(test_read_depth_vs_03_peer),
        cmocka_unit_test(test_unregistered_before_read),
        cmocka_unit_test(test_timed_out_pull_stops_writing),
        cmocka_unit_test(test_peer_gone_then_relink),
        cmocka_unit_test(test_named_device),
        cmocka_unit_test(test_resources_released),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
