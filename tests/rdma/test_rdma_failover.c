/*
 * test_rdma_failover.c - rail failover on soft-RoCE, both engines in this
 * process (run inside the VM by ci/rdma-vm.sh; see tests/rdma/README.md).
 * A link of two rails, rxe0 (dummy0) and rxe1 (dummy1), each device paired
 * with itself, so `ip link set dummy1 down` takes rail 1 down at both ends:
 * - a 128 MiB pull, dummy1 taken down once the first bytes moved: the call
 *   succeeds over rail 0, every byte verified; one failover, one rail up;
 * - the same for a push;
 * - two pulls at once when rail 1 fails: both succeed, one failover;
 * - dummy1 up again: the next pull re-establishes rail 1 without
 *   relinking (one repair, both rails up) and moves bytes over it;
 * - both dummies down during a pull: NETWORK_ERROR within the call's
 *   timeout naming each rail's real reason (a port state or a completion
 *   status, never "flushed"); both up: a relink works and moves data.
 * Every case restores the dummies (and waits for the ports) at teardown:
 * the programs after this one run in the same VM. The last two cases are
 * a program of their own, test_rdma_repair.c (this file with
 * RDMA_FAILOVER_PART2), so that each stays well inside the harness's
 * per-program timeout under ThreadSanitizer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <net/if.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "kvfill.h"
#include "llk_test.h"
#include "llmlink.h"
#include "transport/transport_testing.h"

#define NT 8
#define NB 32
#define NB_MAX NB
#define BS (512u << 10) /* 8 x 32 x 512 KiB = 128 MiB per cache */

static const char *env_or(const char *name, const char *dflt)
{
    const char *s = getenv(name);
    return s && *s ? s : dflt;
}

static const char *ip0(void) { return env_or("LLMLINK_RDMA_IP0", "10.10.0.1"); }
static const char *ip1(void) { return env_or("LLMLINK_RDMA_IP1", "10.10.1.1"); }
static const char *dev0(void) { return env_or("LLMLINK_RDMA_DEV0", "rxe0"); }
static const char *dev1(void) { return env_or("LLMLINK_RDMA_DEV1", "rxe1"); }
#define NETDEV0 "dummy0"
#define NETDEV1 "dummy1"

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* `ip link set netdev up|down`, by ioctl: microseconds, where forking ip
 * in the TCG guest takes long enough for a transfer to end meanwhile. */
static void set_link(const char *netdev, bool up)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", netdev);
    bool ok = fd >= 0 && ioctl(fd, SIOCGIFFLAGS, &ifr) == 0;
    if (ok) {
        if (up)
            ifr.ifr_flags |= IFF_UP;
        else
            ifr.ifr_flags &= ~IFF_UP;
        ok = ioctl(fd, SIOCSIFFLAGS, &ifr) == 0;
    }
    if (!ok)
        print_message("  ip link set %s %s: %s\n", netdev, up ? "up" : "down", strerror(errno));
    if (fd >= 0)
        close(fd);
}

/* The state of port 1 of an rxe device is ACTIVE (sysfs: "4: ACTIVE"). */
static bool port_active(const char *dev)
{
    char path[128], text[64] = "";
    snprintf(path, sizeof path, "/sys/class/infiniband/%s/ports/1/state", dev);
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    bool ok = fgets(text, sizeof text, f) != NULL;
    fclose(f);
    return ok && strstr(text, "ACTIVE") != NULL;
}

/* Both dummies up and both ports ACTIVE again, bounded (10 s). */
static int restore_links(void **state)
{
    (void)state;
    set_link(NETDEV0, true);
    set_link(NETDEV1, true);
    for (int i = 0; i < 200; i++) {
        if (port_active(dev0()) && port_active(dev1()))
            return 0;
        sleep_ms(50);
    }
    print_message("  ports not ACTIVE again within 10 s\n");
    return -1;
}

typedef struct side {
    llmlink_t *e;
    uint8_t *mem[NT];
    int64_t cache;
} side_t;

static llmlink_t *engine(llmlink_role_t role, uint64_t id, const char *listen, const char *wait)
{
    llmlink_t *e = NULL;
    assert_status(llmlink_create(&e, role, id), LLMLINK_SUCCESS);
    llmlink_option_t o[3] = {{"llmlink.Transport", "rdma"}, {"llm.SyncKvCacheWaitTime", wait}};
    size_t n = 2;
    if (listen)
        o[n++] = (llmlink_option_t){"llm.listenIpInfo", listen};
    assert_status(llmlink_init(e, o, n), LLMLINK_SUCCESS);
    return e;
}

static void reg(side_t *s, uint64_t key_cluster, uint64_t seed)
{
    llmlink_cache_desc_t d = {.num_tensors = NT, .data_type = LLMLINK_DT_UINT8,
                              .placement = LLMLINK_PLACEMENT_HOST, .num_dims = 2,
                              .shape = {NB, (int64_t)BS}};
    uint64_t addrs[NT];
    for (int t = 0; t < NT; t++) {
        s->mem[t] = aligned_alloc(4096, (size_t)NB * BS);
        assert_non_null(s->mem[t]);
        kvfill_fill(s->mem[t], (size_t)NB * BS, seed, (uint32_t)t, 0);
        addrs[t] = (uint64_t)(uintptr_t)s->mem[t];
    }
    llmlink_cache_key_t k = {.type = LLMLINK_KEY_BLOCKS, .cluster_id = key_cluster, .model_id = 1};
    assert_status(llmlink_register_blocks_cache(s->e, &d, addrs, NT, key_cluster ? &k : NULL,
                                                &s->cache),
                  LLMLINK_SUCCESS);
}

static void unreg(side_t *s)
{
    assert_status(llmlink_unregister_cache(s->e, s->cache), LLMLINK_SUCCESS);
    for (int t = 0; t < NT; t++)
        free(s->mem[t]);
}

/* Every block of every tensor of dst holds seed's pattern. */
static void verify_all(const side_t *dst, uint64_t seed)
{
    for (int t = 0; t < NT; t++) {
        size_t bad = kvfill_check(dst->mem[t], (size_t)NB * BS, seed, (uint32_t)t, 0);
        if (bad != SIZE_MAX)
            fail_msg("tensor %d: byte %zu differs", t, bad);
    }
}

static llmlink_link_stats_t link_stats(llmlink_t *e, uint64_t remote)
{
    llmlink_link_stats_t s = {.version = LLMLINK_LINK_STATS_VERSION};
    assert_status(llmlink_get_link_stats(e, remote, &s), LLMLINK_SUCCESS);
    return s;
}

/* P (listening on both addresses) and D linked over two rails. */
typedef struct pair {
    side_t p, d;
    uint64_t pid, ps, ds;
    llmlink_ip_info_t r[2];
} pair_t;

static void pair_up(pair_t *x, uint64_t pid, const char *wait)
{
    char listen[128];
    snprintf(listen, sizeof listen, "%s:0;%s:0", ip0(), ip1());
    x->pid = pid;
    x->p.e = engine(LLMLINK_ROLE_PROMPT, pid, listen, wait);
    x->d.e = engine(LLMLINK_ROLE_DECODER, pid + 1, NULL, wait);
    x->ps = kvfill_seed(pid, 1);
    x->ds = kvfill_seed(pid + 1, 1);
    reg(&x->p, pid, x->ps);
    reg(&x->d, 0, x->ds);
    uint16_t p0 = 0, p1 = 0;
    assert_status(llmlink_get_listen_port(x->p.e, 0, &p0), LLMLINK_SUCCESS);
    assert_status(llmlink_get_listen_port(x->p.e, 1, &p1), LLMLINK_SUCCESS);
    x->r[0] = (llmlink_ip_info_t){ip0(), p0};
    x->r[1] = (llmlink_ip_info_t){ip1(), p1};
    llmlink_ip_info_t l[2] = {{ip0(), 0}, {ip1(), 0}};
    llmlink_cluster_info_t ci = {.remote_cluster_id = pid, .remote_ip_infos = x->r,
                                 .num_remote_ip_infos = 2, .local_ip_infos = l,
                                 .num_local_ip_infos = 2};
    llmlink_status_t st[1];
    assert_status(llmlink_link_clusters(x->d.e, &ci, 1, 20000, st), LLMLINK_SUCCESS);
    llmlink_link_stats_t s = link_stats(x->d.e, pid);
    assert_int_equal(s.rdma_rails, 2);
    assert_int_equal(s.rdma_rails_up, 2);
}

static void pair_down(pair_t *x)
{
    unreg(&x->d);
    unreg(&x->p);
    llmlink_destroy(x->d.e);
    llmlink_destroy(x->p.e);
}

/* Takes the dummies of `mask` down once D's rails moved `after` bytes
 * (counted per completed chain: the first chain's) - bounded: 30 s. */
typedef struct cutter {
    llmlink_t *d;
    uint64_t pid, after;
    unsigned mask;
    _Atomic bool cut;
    uint64_t at_bytes;
} cutter_t;

static void *cut_rails(void *arg)
{
    cutter_t *c = arg;
    for (int64_t until = now_ms() + 30000; now_ms() < until;) {
        llmlink_link_stats_t s = {.version = LLMLINK_LINK_STATS_VERSION};
        if (llmlink_get_link_stats(c->d, c->pid, &s) == LLMLINK_SUCCESS &&
            s.rdma_rail_bytes[0] + s.rdma_rail_bytes[1] >= c->after) {
            c->at_bytes = s.rdma_rail_bytes[0] + s.rdma_rail_bytes[1];
            if (c->mask & 2)
                set_link(NETDEV1, false);
            if (c->mask & 1)
                set_link(NETDEV0, false);
            atomic_store(&c->cut, true);
            return NULL;
        }
        sleep_ms(2);
    }
    return NULL;
}

static void all_blocks(uint64_t *b)
{
    for (uint64_t i = 0; i < NB; i++)
        b[i] = i;
}

#ifndef RDMA_FAILOVER_PART2
/* One rail fails under a transfer of the whole cache: the call succeeds
 * over the other, every byte right; one failover, one rail up. */
static void one_rail_fails(bool push, uint64_t pid)
{
    pair_t x;
    memset(&x, 0, sizeof x);
    pair_up(&x, pid, "30000");
    cutter_t c = {.d = x.d.e, .pid = pid, .after = 1, .mask = 2};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, cut_rails, &c), 0);
    uint64_t b[NB_MAX];
    all_blocks(b);
    llmlink_cache_key_t k = {.type = LLMLINK_KEY_BLOCKS, .cluster_id = pid, .model_id = 1};
    int64_t t0 = now_ms();
    llmlink_status_t st = push ? llmlink_push_blocks(x.d.e, &k, x.d.cache, b, NB, b, NB, NULL)
                               : llmlink_pull_blocks(x.d.e, &k, x.d.cache, b, NB, b, NB, NULL);
    int64_t took = now_ms() - t0;
    const char *err = st == LLMLINK_SUCCESS ? "" : llmlink_last_error();
    assert_int_equal(pthread_join(th, NULL), 0);
    llmlink_link_stats_t s = link_stats(x.d.e, pid);
    print_message("  %s of %u MiB: %s in %lld ms %s; cut after %llu bytes; rails up %u, "
                  "failovers %llu, bytes %llu + %llu\n",
                  push ? "push" : "pull", (unsigned)(NT * NB * BS >> 20),
                  llmlink_status_name(st), (long long)took, err,
                  (unsigned long long)c.at_bytes, s.rdma_rails_up,
                  (unsigned long long)s.rdma_rail_failovers,
                  (unsigned long long)s.rdma_rail_bytes[0],
                  (unsigned long long)s.rdma_rail_bytes[1]);
    assert_true(atomic_load(&c.cut)); /* the rail went down during the call */
    assert_status(st, LLMLINK_SUCCESS);
    verify_all(push ? &x.p : &x.d, push ? x.ds : x.ps);
    assert_int_equal(s.rdma_rails_up, 1);
    assert_int_equal(s.rdma_rail_failovers, 1);
    /* every byte was counted once per completed chain; the failed chains
     * went again over rail 0 */
    assert_true(s.rdma_rail_bytes[0] + s.rdma_rail_bytes[1] >= (uint64_t)NT * NB * BS);
    /* the link stays usable over rail 0: a second call, nothing down now */
    for (int t = 0; t < NT; t++)
        kvfill_fill((push ? x.p : x.d).mem[t], (size_t)NB * BS, 7, (uint32_t)t, 0);
    st = push ? llmlink_push_blocks(x.d.e, &k, x.d.cache, b, NB, b, NB, NULL)
              : llmlink_pull_blocks(x.d.e, &k, x.d.cache, b, NB, b, NB, NULL);
    assert_status(st, LLMLINK_SUCCESS);
    verify_all(push ? &x.p : &x.d, push ? x.ds : x.ps);
    llmlink_link_stats_t s2 = link_stats(x.d.e, pid);
    assert_int_equal(s2.rdma_rail_bytes[1], s.rdma_rail_bytes[1]); /* rail 1 skipped */
    assert_true(s2.rdma_rail_bytes[0] >= s.rdma_rail_bytes[0] + (uint64_t)NT * NB * BS);
    assert_int_equal(s2.rdma_rail_failovers, 1);
    pair_down(&x);
}

static void test_pull_rail_fails(void **state)
{
    (void)state;
    one_rail_fails(false, 61);
}

static void test_push_rail_fails(void **state)
{
    (void)state;
    one_rail_fails(true, 71);
}

typedef struct puller {
    llmlink_t *d;
    uint64_t pid;
    int64_t cache;
    uint64_t blocks[NB_MAX / 2];
    llmlink_status_t st;
} puller_t;

static void *pull_half(void *arg)
{
    puller_t *pl = arg;
    llmlink_cache_key_t k = {.type = LLMLINK_KEY_BLOCKS, .cluster_id = pl->pid, .model_id = 1};
    pl->st = llmlink_pull_blocks(pl->d, &k, pl->cache, pl->blocks, NB / 2, pl->blocks, NB / 2,
                                 NULL);
    return NULL;
}

/* Two calls share the rails when rail 1 fails: the one that sees it marks
 * it down for both, both succeed, and the link counts one failover. */
static void test_concurrent_calls(void **state)
{
    (void)state;
    pair_t x;
    memset(&x, 0, sizeof x);
    pair_up(&x, 91, "30000");
    puller_t pl[2];
    for (int i = 0; i < 2; i++) {
        pl[i] = (puller_t){.d = x.d.e, .pid = 91, .cache = x.d.cache, .st = LLMLINK_FAILED};
        for (uint64_t b = 0; b < NB / 2; b++)
            pl[i].blocks[b] = 2 * b + (uint64_t)i; /* even / odd blocks */
    }
    cutter_t c = {.d = x.d.e, .pid = 91, .after = 1, .mask = 2};
    pthread_t th, tp[2];
    assert_int_equal(pthread_create(&th, NULL, cut_rails, &c), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&tp[i], NULL, pull_half, &pl[i]), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(tp[i], NULL), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    llmlink_link_stats_t s = link_stats(x.d.e, 91);
    print_message("  two pulls of %u MiB: %s, %s; cut after %llu bytes; rails up %u, "
                  "failovers %llu\n", (unsigned)(NT * NB * BS >> 21),
                  llmlink_status_name(pl[0].st), llmlink_status_name(pl[1].st),
                  (unsigned long long)c.at_bytes, s.rdma_rails_up,
                  (unsigned long long)s.rdma_rail_failovers);
    assert_true(atomic_load(&c.cut));
    assert_status(pl[0].st, LLMLINK_SUCCESS);
    assert_status(pl[1].st, LLMLINK_SUCCESS);
    verify_all(&x.d, x.ps);
    assert_int_equal(s.rdma_rails_up, 1);
    assert_int_equal(s.rdma_rail_failovers, 1);
    pair_down(&x);
}

#else /* RDMA_FAILOVER_PART2: test_rdma_repair.c */
/* A whole-cache pull of x's D from key k that loses rail 1 under it (its
 * dummy down once the first byte moved) and succeeds over rail 0: one
 * failover, one rail up, no repair. Returns the stats after it. */
static llmlink_link_stats_t lose_rail1(pair_t *x, const llmlink_cache_key_t *k, uint64_t *b)
{
    cutter_t c = {.d = x->d.e, .pid = x->pid, .after = 1, .mask = 2};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, cut_rails, &c), 0);
    assert_status(llmlink_pull_blocks(x->d.e, k, x->d.cache, b, NB, b, NB, NULL),
                  LLMLINK_SUCCESS);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_true(atomic_load(&c.cut));
    llmlink_link_stats_t s = link_stats(x->d.e, x->pid);
    assert_int_equal(s.rdma_rails_up, 1);
    assert_int_equal(s.rdma_rail_failovers, 1);
    assert_int_equal(s.rdma_rail_repairs, 0);
    return s;
}

/* A rail lost under a pull comes back without relinking once its port is
 * ACTIVE again: the engine's mender thread re-establishes it in the
 * background (XRDMA_RAIL_RESET over an idle data stream), and the next pull
 * moves bytes on both rails. */
static void test_rail_repaired(void **state)
{
    (void)state;
    pair_t x;
    memset(&x, 0, sizeof x);
    pair_up(&x, 101, "30000");
    uint64_t b[NB_MAX];
    all_blocks(b);
    llmlink_cache_key_t k = {.type = LLMLINK_KEY_BLOCKS, .cluster_id = 101, .model_id = 1};
    llmlink_link_stats_t s = lose_rail1(&x, &k, b);

    assert_int_equal(restore_links(NULL), 0);
    /* With the port back, the engine's mender thread re-establishes the
     * rail in the background: no transfer runs until it is up (bounded:
     * the port comes up, then one attempt a second per rail). */
    for (int t = 0; t < NT; t++)
        kvfill_fill(x.d.mem[t], (size_t)NB * BS, 5, (uint32_t)t, 0);
    llmlink_link_stats_t s2 = s;
    int64_t t0 = now_ms();
    while (s2.rdma_rails_up < 2 && now_ms() - t0 < 10000) {
        sleep_ms(100);
        s2 = link_stats(x.d.e, 101);
    }
    print_message("  after the port came back: rails up %u, repairs %llu after %lld ms, "
                  "no transfer meanwhile\n", s2.rdma_rails_up,
                  (unsigned long long)s2.rdma_rail_repairs, (long long)(now_ms() - t0));
    assert_int_equal(s2.rdma_rails_up, 2);
    assert_int_equal(s2.rdma_rail_repairs, 1);
    /* nothing moved while it came back */
    assert_int_equal(s2.rdma_rail_bytes[0], s.rdma_rail_bytes[0]);
    assert_int_equal(s2.rdma_rail_bytes[1], s.rdma_rail_bytes[1]);
    uint64_t b1 = s2.rdma_rail_bytes[1];
    assert_status(llmlink_pull_blocks(x.d.e, &k, x.d.cache, b, NB, b, NB, NULL), LLMLINK_SUCCESS);
    verify_all(&x.d, x.ps);
    llmlink_link_stats_t s3 = link_stats(x.d.e, 101);
    print_message("  pull over the repaired link: rail bytes %llu + %llu (rail 1 had %llu)\n",
                  (unsigned long long)s3.rdma_rail_bytes[0],
                  (unsigned long long)s3.rdma_rail_bytes[1], (unsigned long long)b1);
    assert_true(s3.rdma_rail_bytes[1] > b1); /* rail 1 carries bytes again */
    assert_int_equal(s3.rdma_rails_up, 2);
    assert_int_equal(s3.rdma_rail_failovers, 1);
    /* and P still serves a push through its fresh QP of rail 1 */
    assert_status(llmlink_push_blocks(x.d.e, &k, x.d.cache, b, NB, b, NB, NULL), LLMLINK_SUCCESS);
    verify_all(&x.p, x.ps);
    pair_down(&x);
}

/* With the mender paused, the request repairs: a pull that starts once
 * the port is back re-establishes the rail before it sends (it has more
 * than the exchange's 8 s left), and its own slices use the rail. */
static void test_rail_repaired_by_request(void **state)
{
    (void)state;
    pair_t x;
    memset(&x, 0, sizeof x);
    pair_up(&x, 111, "30000");
    llk_test_set_rdma_mender_paused(x.d.e, true);
    uint64_t b[NB_MAX];
    all_blocks(b);
    llmlink_cache_key_t k = {.type = LLMLINK_KEY_BLOCKS, .cluster_id = 111, .model_id = 1};
    (void)lose_rail1(&x, &k, b);

    assert_int_equal(restore_links(NULL), 0);
    /* the mender is paused: nothing brings the rail back by itself (past
     * the one attempt a second a rail may have) */
    sleep_ms(1500);
    llmlink_link_stats_t s2 = link_stats(x.d.e, 111);
    assert_int_equal(s2.rdma_rails_up, 1);
    assert_int_equal(s2.rdma_rail_repairs, 0);
    for (int t = 0; t < NT; t++)
        kvfill_fill(x.d.mem[t], (size_t)NB * BS, 7, (uint32_t)t, 0);
    assert_status(llmlink_pull_blocks(x.d.e, &k, x.d.cache, b, NB, b, NB, NULL), LLMLINK_SUCCESS);
    verify_all(&x.d, x.ps);
    llmlink_link_stats_t s3 = link_stats(x.d.e, 111);
    print_message("  pull after the port came back, mender paused: rails up %u, repairs %llu, "
                  "rail bytes %llu + %llu (rail 1 had %llu)\n", s3.rdma_rails_up,
                  (unsigned long long)s3.rdma_rail_repairs,
                  (unsigned long long)s3.rdma_rail_bytes[0],
                  (unsigned long long)s3.rdma_rail_bytes[1],
                  (unsigned long long)s2.rdma_rail_bytes[1]);
    assert_int_equal(s3.rdma_rails_up, 2);
    assert_int_equal(s3.rdma_rail_repairs, 1);
    assert_true(s3.rdma_rail_bytes[1] > s2.rdma_rail_bytes[1]);
    llk_test_set_rdma_mender_paused(x.d.e, false);
    pair_down(&x);
}

/* Both rails down: the call fails within its timeout naming the real
 * reasons; with the ports back, a relink moves data. */
static void test_no_rail_left(void **state)
{
    (void)state;
    pair_t x;
    memset(&x, 0, sizeof x);
    pair_up(&x, 81, "20000");
    cutter_t c = {.d = x.d.e, .pid = 81, .after = 1, .mask = 3};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, cut_rails, &c), 0);
    uint64_t b[NB_MAX];
    all_blocks(b);
    llmlink_cache_key_t k = {.type = LLMLINK_KEY_BLOCKS, .cluster_id = 81, .model_id = 1};
    int64_t t0 = now_ms();
    llmlink_status_t st = llmlink_pull_blocks(x.d.e, &k, x.d.cache, b, NB, b, NB, NULL);
    int64_t took = now_ms() - t0;
    char err[1024];
    snprintf(err, sizeof err, "%s", llmlink_last_error());
    assert_int_equal(pthread_join(th, NULL), 0);
    print_message("  pull with both rails cut: %s after %lld ms: %s\n", llmlink_status_name(st),
                  (long long)took, err);
    assert_true(atomic_load(&c.cut));
    assert_status(st, LLMLINK_NETWORK_ERROR);
    assert_true(took < 20000);
    assert_non_null(strstr(err, "no rail left"));
    /* each rail's real reason: the port state seen by the check, or a
     * completion status - not just the flush that follows it */
    assert_true(strstr(err, "ibv_query_port") || strstr(err, "completion:"));
    assert_null(strstr(err, "rail 0 (rxe0): RDMA READ completion: Work Request Flushed"));
    assert_null(strstr(err, "rail 1 (rxe1): RDMA READ completion: Work Request Flushed"));
    assert_null(strstr(err, "the link was aborted"));

    assert_int_equal(restore_links(NULL), 0);
    /* relink (P may need a moment to notice the old link go) and pull */
    llmlink_ip_info_t l[2] = {{ip0(), 0}, {ip1(), 0}};
    llmlink_cluster_info_t ci = {.remote_cluster_id = 81, .remote_ip_infos = x.r,
                                 .num_remote_ip_infos = 2, .local_ip_infos = l,
                                 .num_local_ip_infos = 2};
    st = LLMLINK_FAILED;
    int tries = 0;
    t0 = now_ms();
    for (int64_t until = t0 + 20000; st != LLMLINK_SUCCESS && now_ms() < until; tries++) {
        llmlink_status_t one[1];
        if (llmlink_check_link_status(x.d.e, 81) == LLMLINK_SUCCESS)
            (void)llmlink_unlink_clusters(x.d.e, &ci, 1, 5000, true, one);
        st = llmlink_link_clusters(x.d.e, &ci, 1, 5000, one);
        if (st != LLMLINK_SUCCESS)
            sleep_ms(100);
    }
    print_message("  relink: %s after %d attempt(s), %lld ms\n", llmlink_status_name(st), tries,
                  (long long)(now_ms() - t0));
    assert_status(st, LLMLINK_SUCCESS);
    llmlink_link_stats_t s = link_stats(x.d.e, 81);
    assert_int_equal(s.rdma_rails_up, 2);
    assert_status(llmlink_pull_blocks(x.d.e, &k, x.d.cache, b, NB, b, NB, NULL),
                  LLMLINK_SUCCESS);
    verify_all(&x.d, x.ps);
    s = link_stats(x.d.e, 81);
    assert_true(s.rdma_rail_bytes[0] > 0 && s.rdma_rail_bytes[1] > 0);
    pair_down(&x);
}

#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
#ifndef RDMA_FAILOVER_PART2
        cmocka_unit_test_setup_teardown(test_pull_rail_fails, restore_links, restore_links),
        cmocka_unit_test_setup_teardown(test_push_rail_fails, restore_links, restore_links),
        cmocka_unit_test_setup_teardown(test_concurrent_calls, restore_links, restore_links),
#else
        cmocka_unit_test_setup_teardown(test_rail_repaired, restore_links, restore_links),
        cmocka_unit_test_setup_teardown(test_rail_repaired_by_request, restore_links,
                                        restore_links),
        cmocka_unit_test_setup_teardown(test_no_rail_left, restore_links, restore_links),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
