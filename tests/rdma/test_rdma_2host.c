/*
 * test_rdma_2host.c - RDMA between two machines (issue 18): run in guest B
 * of the two-guest VM (ci/rdma-vm.sh --two-guest; see tests/rdma/README.md),
 * with P an llmlink-node in guest A (started through the agent, proc.c) and
 * D an engine in this process, so that the test reads D's link stats
 * (version 2: rails, rails up, failovers, bytes and MTU per rail) itself.
 *
 * P listens on A's two rail addresses; D links with its own rail addresses
 * as local ip infos, so rail i joins B's rxe<i> and A's rxe<i> over rail
 * network i (the two guests' NICs of rail 1 have different MTUs).
 *
 * Group "across the guests", in this order:
 *   - pull and push over rail 0 alone, rail 1 alone and both: blocks of
 *     16 KiB, 256 KiB and 4 MiB, every byte verified (P fills a pattern, D
 *     checks it; D fills, P verifies what D pushed); each rail's MTU in the
 *     link stats is the smaller of both guests' active MTUs, as ibv_devinfo
 *     reports them in each guest.
 *   - B's NIC of rail 1 down during a 256 MiB pull over both rails: the pull
 *     completes and is right, one failover, one rail up; NIC up again: the
 *     rail comes back (bounded wait) and the next pull moves bytes on both.
 *   - both NICs down during a pull: it fails within its timeout with
 *     NETWORK_ERROR naming the verbs status (not "flushed"); NICs up: a
 *     relink works.
 *   - last: guest A killed (the line "RDMA-CTL kill-peer" asks the harness)
 *     during a pull: D's call fails within its timeout, the kernel's verbs
 *     objects in B return to their count before D's link, and D links to a
 *     P started in B itself and pulls from it.
 * Outside the two-guest VM (LLMLINK_RDMA_2HOST unset) every case is skipped.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "kvfill.h"
#include "llk_test.h"
#include "llmlink.h"
#include "proc.h"

#define PID 1          /* P's cluster id */
#define P_PORT 17811   /* P listens here on both of A's rail addresses */
#define REPLY_MS 60000 /* one llmlink-node command (a verify of 256 MiB under TCG) */
#define NT 2           /* tensors per cache */

/* The small caches of the per-rail cases: NSB blocks per tensor, of 16 KiB,
 * 256 KiB and 4 MiB (model ids 1, 2, 3 of P's keys). */
#define NSB 4
static const uint64_t small_bs[3] = {16u << 10, 256u << 10, 4u << 20};
/* The big cache: 2 tensors x 32 blocks of 4 MiB = 256 MiB (model id 9). */
#define BIG_NB 32
#define BIG_BS (4ull << 20)
#define BIG_MODEL 9

static const char *env_or(const char *name, const char *dflt)
{
    const char *s = getenv(name);
    return s && *s ? s : dflt;
}

static const char *b_ip(int rail)
{
    return rail ? env_or("LLMLINK_RDMA_IP1", "10.10.1.2") : env_or("LLMLINK_RDMA_IP0", "10.10.0.2");
}

static const char *a_ip(int rail)
{
    return rail ? env_or("LLMLINK_RDMA_PEER_IP1", "10.10.1.1")
                : env_or("LLMLINK_RDMA_PEER_IP0", "10.10.0.1");
}

static const char *b_dev(int rail)
{
    return rail ? env_or("LLMLINK_RDMA_DEV1", "rxe1") : env_or("LLMLINK_RDMA_DEV0", "rxe0");
}

/* A's devices: the harness names them as B's (rxe<i> on eth<i>). */
static const char *a_dev(int rail)
{
    return rail ? env_or("LLMLINK_RDMA_PEER_DEV1", "rxe1")
                : env_or("LLMLINK_RDMA_PEER_DEV0", "rxe0");
}

static const char *b_netdev(int rail)
{
    return rail ? env_or("LLMLINK_RDMA_NETDEV1", "eth1") : env_or("LLMLINK_RDMA_NETDEV0", "eth0");
}

static uint64_t p_seed(int model)
{
    return kvfill_seed(PID, (uint64_t)model);
}

/* ---- the group: P in guest A, its caches ------------------------------- */

typedef struct grp {
    bool skip;        /* not in the two-guest VM */
    proc_t p;         /* P, in guest A */
    bool p_gone;      /* guest A was killed: nothing to stop */
    long long small[3], big; /* P's cache ids */
    int a_mtu[2];     /* A's active MTUs of rail 0 and 1 */
} grp_t;

static grp_t G;

#define cmd(p, ...) proc_must_reply(proc_reply((p), REPLY_MS, __VA_ARGS__))

static long long p_reg(proc_t *p, uint64_t nb, uint64_t bs, int model)
{
    const char *got = proc_reply(p, REPLY_MS, "reg blocks %d uint8 %llu,%llu key=blocks:%d:%d seed=%llu",
                                 NT, (unsigned long long)nb, (unsigned long long)bs, PID, model,
                                 (unsigned long long)p_seed(model));
    long long id;
    if (!got || sscanf(got, "REG LLM_SUCCESS %lld", &id) != 1) {
        fprintf(stderr, "P: reg answered '%s' (%s)\n", got ? got : "", proc_last_error());
        return -1;
    }
    return id;
}

/* The active MTU in bytes from `ibv_devinfo -d <dev>` output, or -1. */
static int parse_active_mtu(const char *text)
{
    const char *s = strstr(text, "active_mtu:");
    int mtu = -1;
    if (s && sscanf(s + strlen("active_mtu:"), " %d", &mtu) != 1)
        mtu = -1;
    return mtu;
}

static int b_active_mtu(int rail)
{
    char cmdline[96], out[8192];
    snprintf(cmdline, sizeof cmdline, "ibv_devinfo -d %s 2>&1", b_dev(rail));
    FILE *f = popen(cmdline, "r");
    if (!f)
        return -1;
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = 0;
    return pclose(f) == 0 ? parse_active_mtu(out) : -1;
}

static int a_active_mtu(int rail)
{
    char cmdline[96], out[8192] = "";
    snprintf(cmdline, sizeof cmdline, "ibv_devinfo -d %s", a_dev(rail));
    int rc = proc_agent_sh(cmdline, out, sizeof out, 20000);
    return rc == 0 ? parse_active_mtu(out) : -1;
}

/* Starts P in guest A (through the agent: proc_node_start_remote) on both
 * of A's rail addresses, and registers its caches. */
static int grp_setup(void **state)
{
    (void)state;
    memset(&G, 0, sizeof G);
    if (strcmp(env_or("LLMLINK_RDMA_2HOST", "0"), "1") != 0) {
        G.skip = true;
        return 0;
    }
    for (int r = 0; r < 2; r++) {
        G.a_mtu[r] = a_active_mtu(r);
        if (G.a_mtu[r] <= 0) {
            fprintf(stderr, "cannot read guest A's active MTU of %s: %s\n", a_dev(r),
                    proc_last_error());
            return -1;
        }
    }
    char listen[128];
    snprintf(listen, sizeof listen, "%s:%d;%s:%d", a_ip(0), P_PORT, a_ip(1), P_PORT);
    static const char *const opts[] = {"llmlink.Transport=rdma", "llm.SyncKvCacheWaitTime=60000",
                                       NULL};
    if (proc_node_start_remote(&G.p, "prompt", PID, listen, opts, NULL, 60000) != 0) {
        fprintf(stderr, "starting P in guest A: %s\n", proc_last_error());
        return -1;
    }
    for (int i = 0; i < 3; i++)
        if ((G.small[i] = p_reg(&G.p, NSB, small_bs[i], i + 1)) < 0)
            return -1;
    if ((G.big = p_reg(&G.p, BIG_NB, BIG_BS, BIG_MODEL)) < 0)
        return -1;
    return 0;
}

static int grp_teardown(void **state)
{
    (void)state;
    if (G.skip || G.p.pid == 0)
        return 0;
    if (G.p_gone) {
        /* guest A is gone with its agent: only our end of P's connection
         * is left (proc_reap would ask the dead agent, bounded but slow) */
        if (G.p.out_fd >= 0 && G.p.out_fd != G.p.in_fd)
            close(G.p.out_fd);
        if (G.p.in_fd >= 0)
            close(G.p.in_fd);
        G.p.in_fd = G.p.out_fd = -1;
        G.p.pid = 0;
        return 0;
    }
    return proc_stop(&G.p, 30000) == 0 ? 0 : -1;
}

/* ---- D: an engine in this process, per case ----------------------------- */

typedef struct dcache {
    uint8_t *mem[NT];
    uint64_t nb, bs, seed;
    int64_t id;
} dcache_t;

typedef struct fx {
    llmlink_t *d;
    uint64_t did;
    dcache_t c[4]; /* the per-rail cases hold three */
    size_t nc;
    bool down[2];    /* B's netdev of rail i is down (teardown brings it up) */
    bool a_down1;    /* A's netdev of rail 1 is down (teardown brings it up) */
    bool neigh1;     /* B's bogus neighbour entry for A's rail 1 (teardown deletes it) */
    proc_t local_p;  /* a P in guest B itself (the kill case) */
} fx_t;

static int setup(void **state)
{
    if (G.skip)
        return 0; /* the case skips itself */
    fx_t *f = calloc(1, sizeof *f);
    *state = f;
    return f ? 0 : -1;
}

static int set_link(int rail, bool up);
static int set_a_link1(bool up);
static int set_neigh1(bool bogus);

static void d_free(fx_t *f)
{
    for (size_t i = f->nc; i-- > 0;) {
        if (f->d)
            llmlink_unregister_cache(f->d, f->c[i].id);
        for (int t = 0; t < NT; t++)
            free(f->c[i].mem[t]);
    }
    f->nc = 0;
    if (f->d)
        llmlink_destroy(f->d);
    f->d = NULL;
}

/* Reverse order: D's caches and engine, the local P, the NICs. */
static int teardown(void **state)
{
    fx_t *f = *state;
    if (!f)
        return 0;
    int rc = 0;
    d_free(f);
    if (f->local_p.pid && proc_stop(&f->local_p, 30000) != 0)
        rc = -1;
    proc_reap(&f->local_p);
    for (int r = 1; r >= 0; r--)
        if (f->down[r] && set_link(r, true) != 0)
            rc = -1;
    if (f->a_down1 && set_a_link1(true) != 0)
        rc = -1;
    if (f->neigh1 && set_neigh1(false) != 0)
        rc = -1;
    free(f);
    return rc;
}

static void skip_outside_vm(void)
{
    if (G.skip) {
        print_message("  not in the two-guest VM (LLMLINK_RDMA_2HOST unset): skipped\n");
        skip();
    }
}

static void d_new(fx_t *f, uint64_t did, int wait_ms)
{
    char wait[16];
    snprintf(wait, sizeof wait, "%d", wait_ms);
    llmlink_option_t o[] = {{"llmlink.Transport", "rdma"}, {"llm.SyncKvCacheWaitTime", wait}};
    assert_status(llmlink_create(&f->d, LLMLINK_ROLE_DECODER, did), LLMLINK_SUCCESS);
    assert_status(llmlink_init(f->d, o, 2), LLMLINK_SUCCESS);
    f->did = did;
}

/* NT tensors of nb blocks of bs bytes, filled with seed's pattern. */
static dcache_t *d_reg(fx_t *f, uint64_t nb, uint64_t bs, uint64_t seed)
{
    assert_true(f->nc < sizeof f->c / sizeof f->c[0]);
    dcache_t *c = &f->c[f->nc];
    memset(c, 0, sizeof *c);
    c->nb = nb, c->bs = bs, c->seed = seed;
    uint64_t addrs[NT];
    for (int t = 0; t < NT; t++) {
        c->mem[t] = aligned_alloc(4096, (size_t)(nb * bs));
        assert_non_null(c->mem[t]);
        kvfill_fill(c->mem[t], (size_t)(nb * bs), seed, (uint32_t)t, 0);
        addrs[t] = (uint64_t)(uintptr_t)c->mem[t];
    }
    f->nc++; /* owned by the fixture from here (teardown frees the memory) */
    llmlink_cache_desc_t d = {.num_tensors = NT, .data_type = LLMLINK_DT_UINT8,
                              .placement = LLMLINK_PLACEMENT_HOST, .num_dims = 2,
                              .shape = {(int64_t)nb, (int64_t)bs}};
    assert_status(llmlink_register_blocks_cache(f->d, &d, addrs, NT, NULL, &c->id),
                  LLMLINK_SUCCESS);
    return c;
}

/* Links D to the P at `addr` (rail network `rail`'s address of either
 * guest) over the rails in mask (bit i: rail i), D's rail addresses as
 * local ip infos: rail i joins B's rxe<i> and the device of that address. */
static llmlink_status_t d_link_to(fx_t *f, uint64_t pid, const char *const addr[2], uint16_t port,
                                  unsigned mask, int timeout_ms)
{
    llmlink_ip_info_t rem[2], loc[2];
    size_t n = 0;
    for (int r = 0; r < 2; r++)
        if (mask & (1u << r)) {
            rem[n] = (llmlink_ip_info_t){addr[r], port};
            loc[n] = (llmlink_ip_info_t){b_ip(r), 0};
            n++;
        }
    llmlink_cluster_info_t ci = {.remote_cluster_id = pid, .remote_ip_infos = rem,
                                 .num_remote_ip_infos = n, .local_ip_infos = loc,
                                 .num_local_ip_infos = n};
    llmlink_status_t st[1];
    llmlink_status_t s = llmlink_link_clusters(f->d, &ci, 1, timeout_ms, st);
    if (s != LLMLINK_SUCCESS)
        print_message("  link over rails 0x%x: %s | %s\n", mask, llmlink_status_name(s),
                      llmlink_last_error());
    return s;
}

static void d_link(fx_t *f, unsigned mask)
{
    const char *a[2] = {a_ip(0), a_ip(1)};
    assert_status(d_link_to(f, PID, a, P_PORT, mask, 30000), LLMLINK_SUCCESS);
}

static llmlink_link_stats_t lstats(fx_t *f, uint64_t pid)
{
    llmlink_link_stats_t s;
    memset(&s, 0, sizeof s);
    s.version = LLMLINK_LINK_STATS_VERSION;
    assert_status(llmlink_get_link_stats(f->d, pid, &s), LLMLINK_SUCCESS);
    return s;
}

static void print_rails(const char *when, const llmlink_link_stats_t *s)
{
    print_message("  %s: rails %u up %u failovers %llu repairs %llu bytes %llu/%llu mtu %u/%u\n",
                  when, s->rdma_rails, s->rdma_rails_up,
                  (unsigned long long)s->rdma_rail_failovers,
                  (unsigned long long)s->rdma_rail_repairs,
                  (unsigned long long)s->rdma_rail_bytes[0],
                  (unsigned long long)s->rdma_rail_bytes[1], s->rdma_rail_mtu[0],
                  s->rdma_rail_mtu[1]);
}

/* Each dst block dblk[i] of every tensor holds P's block sblk[i] (seed ps);
 * the other blocks still hold D's own pattern. */
static void verify_pull(const dcache_t *c, const uint64_t *sblk, const uint64_t *dblk, size_t n,
                        uint64_t ps)
{
    for (int t = 0; t < NT; t++)
        for (uint64_t b = 0; b < c->nb; b++) {
            uint64_t seed = c->seed, off = b * c->bs;
            for (size_t i = 0; i < n; i++)
                if (dblk[i] == b)
                    seed = ps, off = sblk[i] * c->bs;
            size_t bad = kvfill_check(c->mem[t] + b * c->bs, (size_t)c->bs, seed, (uint32_t)t, off);
            if (bad != KVFILL_OK)
                fail_msg("tensor %d block %llu (%llu bytes): byte %zu differs", t,
                         (unsigned long long)b, (unsigned long long)c->bs, bad);
        }
}

static llmlink_cache_key_t pkey(int model)
{
    return (llmlink_cache_key_t){.type = LLMLINK_KEY_BLOCKS, .cluster_id = PID,
                                 .model_id = (uint64_t)model};
}

/* ---- case 1: each rail alone and both ---------------------------------- */

/* Pull P's blocks {2, 0, 3} into D's {0, 1, 3} (a run and a gap), check
 * every byte; push D's block 3 and 1 into P's 0 and 2, P verifies them and
 * that the rest of its cache is untouched, then P refills its pattern for
 * the next case. */
static void pull_push(fx_t *f, int i)
{
    dcache_t *c = d_reg(f, NSB, small_bs[i], kvfill_seed(f->did, (uint64_t)i + 1));
    llmlink_cache_key_t k = pkey(i + 1);
    uint64_t sb[3] = {2, 0, 3}, db[3] = {0, 1, 3};
    assert_status(llmlink_pull_blocks(f->d, &k, c->id, sb, 3, db, 3, NULL), LLMLINK_SUCCESS);
    verify_pull(c, sb, db, 3, p_seed(i + 1));
    /* D's blocks 3 and 1 hold P's 3 and 0 now: push D's own pattern instead */
    kvfill_fill(c->mem[0] + 3 * c->bs, (size_t)c->bs, c->seed, 0, 3 * c->bs);
    kvfill_fill(c->mem[1] + 3 * c->bs, (size_t)c->bs, c->seed, 1, 3 * c->bs);
    kvfill_fill(c->mem[0] + 2 * c->bs, (size_t)c->bs, c->seed, 0, 2 * c->bs);
    kvfill_fill(c->mem[1] + 2 * c->bs, (size_t)c->bs, c->seed, 1, 2 * c->bs);
    uint64_t psrc[2] = {3, 2}, pdst[2] = {0, 2};
    assert_status(llmlink_push_blocks(f->d, &k, c->id, psrc, 2, pdst, 2, NULL), LLMLINK_SUCCESS);
    const char *v = cmd(&G.p, "verifyblocks %lld %llu %llu 3,2 0,2", G.small[i],
                        (unsigned long long)p_seed(i + 1), (unsigned long long)c->seed);
    if (strcmp(v, "VERIFY OK") != 0)
        fail_msg("P after D's push of %llu-byte blocks: %s", (unsigned long long)c->bs, v);
    v = cmd(&G.p, "fill %lld %llu", G.small[i], (unsigned long long)p_seed(i + 1));
    assert_string_equal(v, "FILL OK");
}

static int min_int(int a, int b)
{
    return a < b ? a : b;
}

static void rails_case(void **state, unsigned mask, uint64_t did)
{
    skip_outside_vm();
    fx_t *f = *state;
    d_new(f, did, 30000);
    d_link(f, mask);
    for (int i = 0; i < 3; i++)
        pull_push(f, i);
    llmlink_link_stats_t s = lstats(f, PID);
    print_rails("after 16 KiB, 256 KiB and 4 MiB blocks", &s);
    uint32_t n = 0;
    for (int r = 0; r < 2; r++) {
        if (!(mask & (1u << r)))
            continue;
        int b = b_active_mtu(r), want = min_int(b, G.a_mtu[r]);
        print_message("  rail %u (%s): B active MTU %d, A %d: link MTU %u\n", n, b_dev(r), b,
                      G.a_mtu[r], s.rdma_rail_mtu[n]);
        assert_true(b > 0);
        assert_int_equal(s.rdma_rail_mtu[n], want);
        n++;
    }
    assert_int_equal(s.rdma_rails, n);
    assert_int_equal(s.rdma_rails_up, n);
    assert_int_equal(s.rdma_rail_failovers, 0);
}

static void test_rail0_alone(void **state)
{
    rails_case(state, 1u, 101);
}

static void test_rail1_alone(void **state)
{
    rails_case(state, 2u, 102);
}

static void test_both_rails(void **state)
{
    rails_case(state, 3u, 103);
}

/* ---- a pull in a thread, NICs and timing ------------------------------- */

typedef struct puller {
    llmlink_t *d;
    int model;
    int64_t cache;
    uint64_t nblocks;
    llmlink_status_t st;
    int64_t t0, t1; /* ms: the call's start and return */
    volatile int done;
    char msg[1024];
} puller_t;

static void *pull_run(void *arg)
{
    puller_t *pl = arg;
    uint64_t b[BIG_NB];
    for (uint64_t i = 0; i < pl->nblocks; i++)
        b[i] = i;
    llmlink_cache_key_t k = pkey(pl->model);
    pl->t0 = proc_now_ms();
    pl->st = llmlink_pull_blocks(pl->d, &k, pl->cache, b, pl->nblocks, b, pl->nblocks, NULL);
    pl->t1 = proc_now_ms();
    snprintf(pl->msg, sizeof pl->msg, "%s", llmlink_last_error());
    __atomic_store_n(&pl->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static bool pull_done(const puller_t *pl)
{
    return __atomic_load_n(&pl->done, __ATOMIC_ACQUIRE) != 0;
}

/* Waits (bounded) until the pull has moved at least `bytes` by the link's
 * per-rail counters; where they do not count (yet), until min_ms passed
 * once the first byte cannot be seen within max_ms. Returns whether the
 * pull is still running. */
static bool wait_under_way(fx_t *f, const puller_t *pl, uint64_t bytes, int min_ms, int max_ms)
{
    int64_t t0 = proc_now_ms();
    proc_sleep_ms(min_ms);
    while (!pull_done(pl) && proc_now_ms() - t0 < max_ms) {
        llmlink_link_stats_t s;
        memset(&s, 0, sizeof s);
        s.version = LLMLINK_LINK_STATS_VERSION;
        if (llmlink_get_link_stats(f->d, PID, &s) == LLMLINK_SUCCESS &&
            s.rdma_rail_bytes[0] + s.rdma_rail_bytes[1] >= bytes)
            break;
        proc_sleep_ms(20);
    }
    print_message("  pull under way after %lld ms\n", (long long)(proc_now_ms() - t0));
    return !pull_done(pl);
}

/* B's netdev of rail `rail` up or down (`ip link set`). */
static int set_link(int rail, bool up)
{
    char c[96];
    snprintf(c, sizeof c, "ip link set %s %s", b_netdev(rail), up ? "up" : "down");
    int rc = system(c);
    print_message("  %s: rc %d\n", c, rc);
    return rc == 0 ? 0 : -1;
}

/* A's netdev of rail 1 up or down, through the agent. */
static int set_a_link1(bool up)
{
    char c[96], out[1024] = "";
    snprintf(c, sizeof c, "ip link set %s %s", env_or("LLMLINK_RDMA_PEER_NETDEV1", "eth1"),
             up ? "up" : "down");
    int rc = proc_agent_sh(c, out, sizeof out, 20000);
    print_message("  guest A: %s: rc %d %s%s\n", c, rc, out, rc < 0 ? proc_last_error() : "");
    return rc == 0 ? 0 : -1;
}

/* B's neighbour entry for A's rail-1 address: bogus = a permanent entry
 * naming a MAC no guest has (A's virtio NIC drops the frames: not its
 * address), so B's packets on rail 1 go nowhere while both ports stay
 * ACTIVE and both routes exist; !bogus = the entry deleted (ARP again). */
static int set_neigh1(bool bogus)
{
    /* iproute2's ip by its path: the guest's busybox sh runs its own
     * applet for a bare "ip", and that one has no "neigh replace" */
    char c[192];
    if (bogus)
        snprintf(c, sizeof c,
                 "/usr/bin/ip neigh replace %s lladdr 52:54:00:0a:01:99 dev %s nud permanent",
                 a_ip(1), b_netdev(1));
    else
        snprintf(c, sizeof c, "/usr/bin/ip neigh del %s dev %s", a_ip(1), b_netdev(1));
    int rc = system(c);
    print_message("  %s: rc %d\n", c, rc);
    return rc == 0 ? 0 : -1;
}

static void nic(fx_t *f, int rail, bool up)
{
    assert_int_equal(set_link(rail, up), 0);
    f->down[rail] = !up;
}

static void verify_big(const dcache_t *c, uint64_t nblocks)
{
    uint64_t b[BIG_NB];
    for (uint64_t i = 0; i < nblocks; i++)
        b[i] = i;
    verify_pull(c, b, b, nblocks, p_seed(BIG_MODEL));
}

/* Links again (bounded: the kernel brings the rail's address and GID back
 * a moment after the NIC comes up, and P must notice the old link go). */
static void relink(fx_t *f, unsigned mask)
{
    const char *a[2] = {a_ip(0), a_ip(1)};
    llmlink_status_t s = LLMLINK_FAILED;
    for (int i = 0; i < 20 && s != LLMLINK_SUCCESS; i++) {
        s = d_link_to(f, PID, a, P_PORT, mask, 5000);
        if (s != LLMLINK_SUCCESS)
            proc_sleep_ms(500);
    }
    assert_status(s, LLMLINK_SUCCESS);
}

/* ---- case 2: one NIC of rail 1 down during a 256 MiB pull --------------- */

/* B's device of rail `rail` has its port ACTIVE (sysfs, as ibv_devinfo). */
static bool port_active(int rail)
{
    char path[128], buf[64] = "";
    snprintf(path, sizeof path, "/sys/class/infiniband/rxe%d/ports/1/state", rail);
    FILE *fp = fopen(path, "re");
    if (!fp)
        return false;
    bool ok = fgets(buf, sizeof buf, fp) && strstr(buf, "ACTIVE");
    fclose(fp);
    return ok;
}

/* After a pull that lost rail 1 under it: it succeeded, every byte
 * right, one failover, one rail of two up. Returns the stats. */
static llmlink_link_stats_t failed_over(fx_t *f, const puller_t *pl, const dcache_t *c,
                                        uint64_t nb)
{
    assert_status(pl->st, LLMLINK_SUCCESS);
    verify_big(c, nb);
    llmlink_link_stats_t s = lstats(f, PID);
    print_rails("after the pull", &s);
    assert_int_equal(s.rdma_rails, 2);
    assert_int_equal(s.rdma_rail_failovers, 1);
    assert_int_equal(s.rdma_rails_up, 1);
    return s;
}

/* Rail 1 of the link with P is down and B's port ACTIVE, so the mender
 * tries repairs; the peer cannot answer, so for 3.5 s the rail must stay
 * down with no repair counted (a rail declared up here would stall the
 * next transfer). Returns the last stats. */
static llmlink_link_stats_t rail1_stays_down(fx_t *f, const char *what)
{
    int64_t t0 = proc_now_ms();
    llmlink_link_stats_t s = lstats(f, PID);
    while (proc_now_ms() - t0 < 3500 && s.rdma_rails_up == 1) {
        proc_sleep_ms(100);
        s = lstats(f, PID);
    }
    print_rails(what, &s);
    assert_int_equal(s.rdma_rails_up, 1);
    assert_int_equal(s.rdma_rail_repairs, 0);
    return s;
}

/* The NIC of rail 1 goes down under a pull. In B (peer = false): D sees
 * its port go down within ms and fails over; 256 MiB, which take 13 s on
 * an idle 2-core host under TCG and twice that on a busy one: D waits up
 * to 60 s. In A (peer = true): B's port stays up and nothing tells D but
 * silence - soft-RoCE under TCG never failed the work with a retry error
 * here - so D's stall check gives up on the rail (no completion for half
 * the wait + 1 s: 16 s of 30 s) and fails over; 64 MiB then, so that the
 * call ends inside its 30 s. */
static void rail1_down(fx_t *f, bool peer, uint64_t did)
{
    uint64_t nb = peer ? BIG_NB / 4 : BIG_NB;
    d_new(f, did, peer ? 30000 : 60000);
    dcache_t *c = d_reg(f, BIG_NB, BIG_BS, kvfill_seed(did, 1));
    d_link(f, 3u);
    puller_t pl = {.d = f->d, .model = BIG_MODEL, .cache = c->id, .nblocks = nb};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, pull_run, &pl), 0);
    bool running = wait_under_way(f, &pl, (peer ? 8ull : 32ull) << 20, 200, 3000);
    if (running && peer) {
        f->a_down1 = set_a_link1(false) == 0;
        assert_true(f->a_down1);
    } else if (running) {
        nic(f, 1, false);
    }
    assert_int_equal(pthread_join(th, NULL), 0);
    print_message("  %llu MiB pull, %s's NIC of rail 1 down under it: %s after %lld ms | %s\n",
                  (unsigned long long)(NT * nb * BIG_BS >> 20), peer ? "A" : "B",
                  llmlink_status_name(pl.st), (long long)(pl.t1 - pl.t0), pl.msg);
    if (!running)
        fail_msg("the pull ended before the NIC went down: nothing was tested");
    llmlink_link_stats_t s = failed_over(f, &pl, c, nb);
    if (peer) {
        /* B's port never went down, so the mender tries a repair every
         * second; A's NIC is still down, so the peer cannot answer the
         * fresh QP's reachability probe and the rail must stay down (a
         * rail declared up here would stall the next transfer). */
        rail1_stays_down(f, "3.5 s later, A's NIC still down");
    }

    if (peer) {
        assert_int_equal(set_a_link1(true), 0);
        f->a_down1 = false;
    } else {
        nic(f, 1, true);
    }
    /* Once the rail's port is ACTIVE again the engine's mender thread
     * re-establishes the rail in the background (a fresh QP pair over an
     * idle data stream): no transfer runs until it is up. */
    int64_t t0 = proc_now_ms();
    while (!port_active(1) && proc_now_ms() - t0 < 15000)
        proc_sleep_ms(100);
    print_message("  port of rail 1 ACTIVE after %lld ms\n", (long long)(proc_now_ms() - t0));
    assert_true(port_active(1));
    llmlink_link_stats_t sb = s;
    t0 = proc_now_ms();
    while (sb.rdma_rails_up != 2 && proc_now_ms() - t0 < 15000) {
        proc_sleep_ms(100);
        sb = lstats(f, PID);
    }
    print_rails("after the NIC came back", &sb);
    print_message("  rail back after %lld ms, no transfer meanwhile\n",
                  (long long)(proc_now_ms() - t0));
    assert_int_equal(sb.rdma_rails_up, 2);
    assert_true(sb.rdma_rail_repairs >= 1);
    assert_true(sb.rdma_rail_bytes[1] == s.rdma_rail_bytes[1]);

    /* D's pattern again, and a pull of 8 blocks (16 slices over two rails) */
    for (int t = 0; t < NT; t++)
        kvfill_fill(c->mem[t], (size_t)(BIG_NB * BIG_BS), c->seed, (uint32_t)t, 0);
    pl.nblocks = 8;
    pl.done = 0;
    pull_run(&pl);
    assert_status(pl.st, LLMLINK_SUCCESS);
    verify_big(c, 8);
    llmlink_link_stats_t s2 = lstats(f, PID);
    print_rails("after the next pull", &s2);
    assert_int_equal(s2.rdma_rails_up, 2);
    assert_int_equal(s2.rdma_rail_repairs, 1);
    assert_true(s2.rdma_rail_bytes[0] > s.rdma_rail_bytes[0]);
    assert_true(s2.rdma_rail_bytes[1] > s.rdma_rail_bytes[1]);
    assert_int_equal(s2.rdma_rail_failovers, 1);
}

static void test_rail1_down_during_pull(void **state)
{
    skip_outside_vm();
    rail1_down(*state, false, 201);
}

static void test_peer_rail1_down_during_pull(void **state)
{
    skip_outside_vm();
    rail1_down(*state, true, 202);
}

/* ---- case 2b: a repair waits until the peer answers --------------------- */

/* D's wait: the stall check gives up on rail 1 after half of it + 1 s
 * (7 s), and rail 0 still has the call's 32 MiB to finish after that. */
#define UNREACH_WAIT_MS 12000

/* Rail 1 stops reaching A with every port ACTIVE (a bogus neighbour entry
 * in B): D's stall check fails the rail over under a pull. The mender then
 * tries a repair every second - the port is ACTIVE and the owner answers
 * the reset over rail 0's stream - and each must fail at the fresh QP's
 * reachability probe (a zero-length RDMA READ that never arrives): the
 * rail stays down, no repair counted. Once the path is back the rail
 * comes back and the next pull uses both rails. Without the probe the
 * rail would be declared up at once and the next pull would stall on it. */
static void test_repair_waits_for_the_peer(void **state)
{
    skip_outside_vm();
    fx_t *f = *state;
    d_new(f, 203, UNREACH_WAIT_MS);
    uint64_t nb = BIG_NB / 8;
    dcache_t *c = d_reg(f, nb, BIG_BS, kvfill_seed(203, 1));
    d_link(f, 3u);
    f->neigh1 = set_neigh1(true) == 0;
    assert_true(f->neigh1);
    puller_t pl = {.d = f->d, .model = BIG_MODEL, .cache = c->id, .nblocks = nb};
    pull_run(&pl);
    print_message("  %llu MiB pull, rail 1 unreachable: %s after %lld ms | %s\n",
                  (unsigned long long)(NT * nb * BIG_BS >> 20), llmlink_status_name(pl.st),
                  (long long)(pl.t1 - pl.t0), pl.msg);
    (void)failed_over(f, &pl, c, nb);
    assert_true(port_active(1));

    llmlink_link_stats_t sd = rail1_stays_down(f, "3.5 s later, port ACTIVE, path still broken");

    assert_int_equal(set_neigh1(false), 0);
    f->neigh1 = false;
    int64_t t0 = proc_now_ms();
    while (sd.rdma_rails_up != 2 && proc_now_ms() - t0 < 15000) {
        proc_sleep_ms(100);
        sd = lstats(f, PID);
    }
    print_rails("after the path came back", &sd);
    print_message("  rail back after %lld ms\n", (long long)(proc_now_ms() - t0));
    assert_int_equal(sd.rdma_rails_up, 2);
    assert_int_equal(sd.rdma_rail_repairs, 1);

    for (int t = 0; t < NT; t++)
        kvfill_fill(c->mem[t], (size_t)(nb * BIG_BS), c->seed, (uint32_t)t, 0);
    pull_run(&pl); /* nb blocks: 2 nb slices, round robin over both rails */
    assert_status(pl.st, LLMLINK_SUCCESS);
    verify_big(c, nb);
    llmlink_link_stats_t s2 = lstats(f, PID);
    print_rails("after the next pull", &s2);
    assert_true(s2.rdma_rail_bytes[0] > sd.rdma_rail_bytes[0]);
    assert_true(s2.rdma_rail_bytes[1] > sd.rdma_rail_bytes[1]);
    assert_int_equal(s2.rdma_rail_failovers, 1);
}

/* ---- case 3: both NICs down during a pull ------------------------------ */

#define DOWN_WAIT_MS 8000 /* D's SyncKvCacheWaitTime: the pull's timeout */
#define MARGIN_MS 3000    /* the call's own cleanup under TCG */

static void test_both_nics_down(void **state)
{
    skip_outside_vm();
    fx_t *f = *state;
    d_new(f, 301, DOWN_WAIT_MS);
    dcache_t *c = d_reg(f, BIG_NB / 2, BIG_BS, kvfill_seed(301, 1));
    d_link(f, 3u);
    puller_t pl = {.d = f->d, .model = BIG_MODEL, .cache = c->id, .nblocks = BIG_NB / 2};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, pull_run, &pl), 0);
    bool running = wait_under_way(f, &pl, 8ull << 20, 200, 2000);
    if (running) {
        nic(f, 0, false);
        nic(f, 1, false);
    }
    assert_int_equal(pthread_join(th, NULL), 0);
    long long took = (long long)(pl.t1 - pl.t0);
    print_message("  pull with both NICs down: %s after %lld ms (timeout %d) | %s\n",
                  llmlink_status_name(pl.st), took, DOWN_WAIT_MS, pl.msg);
    if (!running)
        fail_msg("the pull ended before the NICs went down: nothing was tested");
    assert_status(pl.st, LLMLINK_NETWORK_ERROR);
    assert_true(took <= DOWN_WAIT_MS + MARGIN_MS);
    /* the first real status, not the flush of the work queued behind it */
    if (strcasestr(pl.msg, "flush"))
        fail_msg("the message names a flush, not the first verbs status: %s", pl.msg);
    assert_non_null(strcasestr(pl.msg, "rail"));

    nic(f, 1, true);
    nic(f, 0, true);
    relink(f, 3u);
    for (int t = 0; t < NT; t++)
        kvfill_fill(c->mem[t], (size_t)(c->nb * BIG_BS), c->seed, (uint32_t)t, 0);
    pl.nblocks = 4;
    pull_run(&pl);
    print_message("  pull after the relink: %s | %s\n", llmlink_status_name(pl.st), pl.msg);
    assert_status(pl.st, LLMLINK_SUCCESS);
    verify_big(c, 4);
    llmlink_link_stats_t s = lstats(f, PID);
    print_rails("relinked", &s);
    assert_int_equal(s.rdma_rails_up, 2);
}

/* ---- case 4 (last): guest A killed during a pull ------------------------ */

/* Verbs objects of B's kernel on B's rail devices, as `rdma resource show`
 * lists them: kernel-wide, not this process's (an object made by one of
 * our threads shows that thread's id); B runs one program at a time. */
typedef struct res {
    int qp, cq, mr, pd;
} res_t;

static int count_res(const char *kind)
{
    char c[96], line[1024];
    snprintf(c, sizeof c, "rdma resource show %s 2>/dev/null", kind);
    FILE *f = popen(c, "r");
    if (!f)
        return -1;
    int n = 0;
    char d0[40], d1[40];
    snprintf(d0, sizeof d0, "%s/", b_dev(0)); /* qp lines: "link rxe0/1 ..." */
    snprintf(d1, sizeof d1, "%s/", b_dev(1));
    char e0[40], e1[40];
    snprintf(e0, sizeof e0, "dev %s ", b_dev(0)); /* cq, mr, pd lines */
    snprintf(e1, sizeof e1, "dev %s ", b_dev(1));
    while (fgets(line, sizeof line, f))
        if (strstr(line, d0) || strstr(line, d1) || strstr(line, e0) || strstr(line, e1))
            n++;
    return pclose(f) == 0 ? n : -1;
}

static res_t resources(void)
{
    return (res_t){count_res("qp"), count_res("cq"), count_res("mr"), count_res("pd")};
}

static void print_res(const char *when, res_t r)
{
    print_message("  %-28s qp %d cq %d mr %d pd %d\n", when, r.qp, r.cq, r.mr, r.pd);
}

/* Polls (bounded) until B's kernel holds `want`'s QPs and CQs again. */
static res_t wait_res(res_t want)
{
    res_t r = resources();
    for (int i = 0; i < 100 && (r.qp != want.qp || r.cq != want.cq); i++) {
        proc_sleep_ms(50);
        r = resources();
    }
    return r;
}

#define KILL_WAIT_MS 15000 /* D's timeout in the kill case */

/* Starts an llmlink-node P in guest B itself (no agent), on B's rail 0
 * address: rxe0 reaches itself. */
static void start_local_p(fx_t *f, uint64_t pid, uint16_t port)
{
    char listen[64];
    snprintf(listen, sizeof listen, "%s:%u", b_ip(0), port);
    static const char *const opts[] = {"llmlink.Transport=rdma", "llm.SyncKvCacheWaitTime=30000",
                                       NULL};
    /* proc.c sends prompt nodes to guest A while LLMLINK_RDMA_AGENT is set */
    char *agent = getenv("LLMLINK_RDMA_AGENT");
    char saved[128] = "";
    if (agent)
        snprintf(saved, sizeof saved, "%s", agent);
    unsetenv("LLMLINK_RDMA_AGENT");
    int rc = proc_node_start(&f->local_p, "prompt", pid, listen, opts, NULL, 60000);
    if (saved[0])
        setenv("LLMLINK_RDMA_AGENT", saved, 1);
    if (rc != 0)
        fail_msg("starting P in guest B: %s", proc_last_error());
}

static void test_peer_guest_killed(void **state)
{
    skip_outside_vm();
    fx_t *f = *state;
    res_t base = resources();
    print_res("before D", base);
    if (base.qp < 0 || base.pd < 0)
        fail_msg("cannot count RDMA resources: `rdma resource show` failed");
    d_new(f, 401, KILL_WAIT_MS);
    dcache_t *c = d_reg(f, BIG_NB, BIG_BS, kvfill_seed(401, 1));
    d_link(f, 3u);
    print_res("linked", resources());
    puller_t pl = {.d = f->d, .model = BIG_MODEL, .cache = c->id, .nblocks = BIG_NB};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, pull_run, &pl), 0);
    bool running = wait_under_way(f, &pl, 16ull << 20, 200, 3000);
    /* The harness kills guest A's QEMU when this line reaches the console. */
    printf("RDMA-CTL kill-peer\n");
    fflush(stdout);
    G.p_gone = true;
    assert_int_equal(pthread_join(th, NULL), 0);
    long long took = (long long)(pl.t1 - pl.t0);
    print_message("  pull with guest A killed: %s after %lld ms (timeout %d) | %s\n",
                  llmlink_status_name(pl.st), took, KILL_WAIT_MS, pl.msg);
    if (!running)
        fail_msg("the pull ended before guest A was killed: nothing was tested");
    assert_true(pl.st != LLMLINK_SUCCESS);
    assert_true(took <= KILL_WAIT_MS + MARGIN_MS);

    /* The failed call killed the link: its QPs and CQs go. */
    res_t gone = wait_res(base);
    print_res("link gone", gone);
    assert_int_equal(gone.qp, base.qp);
    assert_int_equal(gone.cq, base.cq);

    /* Another P, in guest B itself, on B's rail 0 address: 4 blocks of
     * D's size (B holds D's 256 MiB already). */
    start_local_p(f, 2, P_PORT);
    long long pc2;
    const char *got = cmd(&f->local_p, "reg blocks %d uint8 4,%llu key=blocks:2:%d seed=%llu",
                          NT, (unsigned long long)BIG_BS, BIG_MODEL,
                          (unsigned long long)kvfill_seed(2, BIG_MODEL));
    if (sscanf(got, "REG LLM_SUCCESS %lld", &pc2) != 1)
        fail_msg("local P: reg answered '%s'", got);
    const char *b[2] = {b_ip(0), b_ip(1)};
    assert_status(d_link_to(f, 2, b, P_PORT, 1u, 30000), LLMLINK_SUCCESS);
    uint64_t blocks[4] = {0, 1, 2, 3};
    llmlink_cache_key_t k = {.type = LLMLINK_KEY_BLOCKS, .cluster_id = 2, .model_id = BIG_MODEL};
    for (int t = 0; t < NT; t++)
        kvfill_fill(c->mem[t], (size_t)(BIG_NB * BIG_BS), c->seed, (uint32_t)t, 0);
    assert_status(llmlink_pull_blocks(f->d, &k, c->id, blocks, 4, blocks, 4, NULL),
                  LLMLINK_SUCCESS);
    verify_pull(c, blocks, blocks, 4, kvfill_seed(2, BIG_MODEL));

    /* D and the local P released: every object of B's devices is back. */
    d_free(f);
    assert_int_equal(proc_stop(&f->local_p, 30000), 0);
    res_t end = wait_res(base);
    print_res("D and local P released", end);
    assert_int_equal(end.qp, base.qp);
    assert_int_equal(end.cq, base.cq);
    assert_int_equal(end.mr, base.mr);
    assert_int_equal(end.pd, base.pd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rail0_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rail1_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_both_rails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rail1_down_during_pull, setup, teardown),
        cmocka_unit_test_setup_teardown(test_peer_rail1_down_during_pull, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repair_waits_for_the_peer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_both_nics_down, setup, teardown),
        /* last: guest A does not come back */
        cmocka_unit_test_setup_teardown(test_peer_guest_killed, setup, teardown),
    };
    /* By hand: LLMLINK_TEST_FILTER / LLMLINK_TEST_SKIP, cmocka's patterns
     * ('*' and '?') of the cases to run / to leave out. */
    const char *only = getenv("LLMLINK_TEST_FILTER"), *skipped = getenv("LLMLINK_TEST_SKIP");
    if (only && *only)
        cmocka_set_test_filter(only);
    if (skipped && *skipped)
        cmocka_set_skip_filter(skipped);
    return cmocka_run_group_tests_name("across the guests", tests, grp_setup, grp_teardown);
}
