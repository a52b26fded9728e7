/*
 * test_rdma_pairing.c - rails paired by the data (LLK_EXT_RDMA_RAILS): the
 * client sends its candidate RDMA addresses (XRDMA_PROBE), the server
 * answers with its own, and both pair them by subnet (rdma_plan.h,
 * llk_rdma_pair). Both engines in this process, in the soft-RoCE VM: rxe0
 * (10.10.0.1/24, active MTU 1024) and rxe1 (10.10.1.1/24, 4096); each
 * device reaches only itself, so the only usable pairs are
 * 10.10.0.1<->10.10.0.1 and 10.10.1.1<->10.10.1.1 - a rail of any other
 * pair never leaves RTR, and forced rdma would fail.
 *
 * Cases: the addresses an engine announces (prefix and MTU per device);
 * ip infos in opposite orders on the two sides (the position rule
 * of before would pair rxe0 with rxe1); a client without ip infos (rails
 * from its RDMA addresses); a client with two addresses against a server
 * that offers one subnet (exactly the usable rail); a client that names
 * crossed pairs in its setup (a test seam) refused by the server; and each end made
 * legacy (no LLK_EXT_RDMA_RAILS: rails by position, as before). Each case
 * checks the rails' count, devices and MTUs (link stats rdma_rail_mtu, at
 * both ends) and moves blocks both ways with every byte verified.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvfill.h"
#include "llk_test.h"
#include "link/engine.h"
#include "llmlink.h"
#include "transport/rdma.h"
#include "transport/transport_testing.h"
#include "xfer/xfer.h"

#define NT 4
#define NB 32
#define BS (64u << 10) /* 64 KiB blocks, one slice each: spread over the rails */

static const char *env_or(const char *name, const char *dflt)
{
    const char *s = getenv(name);
    return s && *s ? s : dflt;
}

static const char *ip0(void) { return env_or("LLMLINK_RDMA_IP0", "10.10.0.1"); }
static const char *ip1(void) { return env_or("LLMLINK_RDMA_IP1", "10.10.1.1"); }
static const char *dev0(void) { return env_or("LLMLINK_RDMA_DEV0", "rxe0"); }
static const char *dev1(void) { return env_or("LLMLINK_RDMA_DEV1", "rxe1"); }

typedef struct side {
    llmlink_t *e;
    uint64_t id, seed;
    uint8_t *mem[NT];
    int64_t cache;
} side_t;

typedef struct fx {
    side_t p, d;
    uint16_t port[2];
} fx_t;

/* Forced rdma (a rail that cannot connect fails the link, no tcp
 * fallback hides it); device: llmlink.RdmaDevice or NULL. */
static void side_new(side_t *s, llmlink_role_t role, uint64_t id, const char *listen,
                     const char *device, bool legacy)
{
    s->id = id;
    s->seed = kvfill_seed(id, 1);
    assert_status(llmlink_create(&s->e, role, id), LLMLINK_SUCCESS);
    llmlink_option_t o[4] = {{"llmlink.Transport", "rdma"}, {"llm.SyncKvCacheWaitTime", "20000"}};
    size_t n = 2;
    if (listen)
        o[n++] = (llmlink_option_t){"llm.listenIpInfo", listen};
    if (device)
        o[n++] = (llmlink_option_t){"llmlink.RdmaDevice", device};
    assert_status(llmlink_init(s->e, o, n), LLMLINK_SUCCESS);
    llk_test_set_legacy_rails(s->e, legacy);
    llmlink_cache_desc_t d = {.num_tensors = NT, .data_type = LLMLINK_DT_UINT8,
                              .placement = LLMLINK_PLACEMENT_HOST, .num_dims = 2,
                              .shape = {NB, BS}};
    uint64_t addrs[NT];
    for (int t = 0; t < NT; t++) {
        s->mem[t] = aligned_alloc(4096, (size_t)NB * BS);
        assert_non_null(s->mem[t]);
        kvfill_fill(s->mem[t], (size_t)NB * BS, s->seed, (uint32_t)t, 0);
        addrs[t] = (uint64_t)(uintptr_t)s->mem[t];
    }
    llmlink_cache_key_t k = {.type = LLMLINK_KEY_BLOCKS, .cluster_id = id, .model_id = 1};
    assert_status(llmlink_register_blocks_cache(s->e, &d, addrs, NT,
                                                role == LLMLINK_ROLE_PROMPT ? &k : NULL,
                                                &s->cache),
                  LLMLINK_SUCCESS);
}

static void side_free(side_t *s)
{
    if (!s->e)
        return;
    llmlink_destroy(s->e);
    for (int t = 0; t < NT; t++)
        free(s->mem[t]);
    s->e = NULL;
}

static int setup(void **state)
{
    *state = calloc(1, sizeof(fx_t));
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    /* reverse order of creation */
    side_free(&f->d);
    side_free(&f->p);
    free(f);
    return 0;
}

/* P listening on `listen` (one or two addresses), D made. */
static void make(fx_t *f, const char *listen, const char *p_device, bool p_legacy,
                 bool d_legacy)
{
    side_new(&f->p, LLMLINK_ROLE_PROMPT, 81, listen, p_device, p_legacy);
    side_new(&f->d, LLMLINK_ROLE_DECODER, 82, NULL, NULL, d_legacy);
    assert_status(llmlink_get_listen_port(f->p.e, 0, &f->port[0]), LLMLINK_SUCCESS);
    if (strchr(listen, ';'))
        assert_status(llmlink_get_listen_port(f->p.e, 1, &f->port[1]), LLMLINK_SUCCESS);
}

static void link_ok(fx_t *f, const llmlink_ip_info_t *remote, size_t nr,
                    const llmlink_ip_info_t *local, size_t nl)
{
    llmlink_cluster_info_t ci = {.remote_cluster_id = f->p.id, .remote_ip_infos = remote,
                                 .num_remote_ip_infos = nr, .local_ip_infos = local,
                                 .num_local_ip_infos = nl};
    llmlink_status_t st[1];
    assert_status(llmlink_link_clusters(f->d.e, &ci, 1, 20000, st), LLMLINK_SUCCESS);
}

/* e's link with remote: its rails' description ("rxe0 port 1 gid 1 mtu
 * 1024, ...") and whether both ends announced LLK_EXT_RDMA_RAILS. */
static bool rails_of(llmlink_t *e, uint64_t remote, char *desc, size_t cap)
{
    llk_xlink_t *xl = llk_xfer_find_link(e, remote, "test");
    assert_non_null(xl);
    pthread_mutex_lock(&xl->mu);
    llk_rdma_xlink_t *rx = llk_rdma_xlink(xl);
    bool on = rx->peer_rails;
    llk_rdma_link_describe(rx->link, desc, cap);
    pthread_mutex_unlock(&xl->mu);
    llk_xlink_unref(xl);
    return on;
}

/* Both ends of the link have rails on devs[i] with MTU mtus[i], in that
 * order, and no more; peer_rails as expected at both ends. */
static void expect_rails(fx_t *f, size_t n, const char *const *devs, const uint32_t *mtus,
                         bool paired)
{
    side_t *ends[2] = {&f->d, &f->p};
    for (int k = 0; k < 2; k++) {
        uint64_t other = k == 0 ? f->p.id : f->d.id;
        llmlink_link_stats_t s = {.version = LLMLINK_LINK_STATS_VERSION};
        assert_status(llmlink_get_link_stats(ends[k]->e, other, &s), LLMLINK_SUCCESS);
        char desc[256];
        bool on = rails_of(ends[k]->e, other, desc, sizeof desc);
        print_message("  %s: %u rail(s): %s (paired by the data: %s)\n", k ? "P" : "D",
                      s.rdma_rails, desc, on ? "yes" : "no");
        assert_int_equal(on, paired);
        assert_int_equal(s.rdma_rails, n);
        assert_int_equal(s.rdma_rails_up, n);
        const char *at = desc;
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(s.rdma_rail_mtu[i], mtus[i]);
            /* the rail's device, in rail order */
            char want[64];
            snprintf(want, sizeof want, "%s port", devs[i]);
            const char *hit = strstr(at, want);
            if (!hit)
                fail_msg("rail %zu is not on %s: %s", i, devs[i], desc);
            at = hit + 1;
        }
    }
}

/* Pull every block of P (in a scattered order), push some back: every
 * byte checked, every request over RDMA. */
static void move_and_verify(fx_t *f)
{
    uint64_t sb[NB], db[NB];
    for (uint64_t i = 0; i < NB; i++) {
        sb[i] = (i * 7 + 3) % NB;
        db[i] = i;
    }
    llmlink_cache_key_t k = {.type = LLMLINK_KEY_BLOCKS, .cluster_id = f->p.id, .model_id = 1};
    assert_status(llmlink_pull_blocks(f->d.e, &k, f->d.cache, sb, NB, db, NB, NULL),
                  LLMLINK_SUCCESS);
    for (int t = 0; t < NT; t++)
        for (uint64_t i = 0; i < NB; i++) {
            size_t bad = kvfill_check(f->d.mem[t] + db[i] * BS, BS, f->p.seed, (uint32_t)t,
                                      sb[i] * BS);
            if (bad != SIZE_MAX)
                fail_msg("pull: tensor %d block %llu byte %zu differs", t,
                         (unsigned long long)db[i], bad);
        }
    /* D's blocks 0..7 (P's sb[0..7] now) into P's 16..23 */
    uint64_t ps[8], pd[8];
    for (int i = 0; i < 8; i++) {
        ps[i] = (uint64_t)i;
        pd[i] = 16 + (uint64_t)i;
    }
    assert_status(llmlink_push_blocks(f->d.e, &k, f->d.cache, ps, 8, pd, 8, NULL),
                  LLMLINK_SUCCESS);
    for (int t = 0; t < NT; t++)
        for (int i = 0; i < 8; i++)
            if (kvfill_check(f->p.mem[t] + pd[i] * BS, BS, f->p.seed, (uint32_t)t,
                             sb[i] * BS) != SIZE_MAX)
                fail_msg("push: tensor %d block %llu differs", t, (unsigned long long)pd[i]);
    llmlink_xfer_stats_t s = {.version = LLMLINK_XFER_STATS_VERSION};
    assert_status(llmlink_get_xfer_stats(f->d.e, &s), LLMLINK_SUCCESS);
    assert_int_equal(s.tcp_requests, 0);
    assert_int_equal(s.shm_requests, 0);
    assert_true(s.rdma_requests >= 2);
}

/* What an engine announces in the probe: rxe0's 10.10.0.1 with its
 * netdev's /24 and MTU 1024, rxe1's 10.10.1.1 /24 4096 (the prefix from
 * the GID's netdev), and no IPv6 link-local GID (fe80::/64 on every
 * netdev would pair any two devices). */
static void test_local_addresses(void **state)
{
    fx_t *f = *state;
    side_new(&f->d, LLMLINK_ROLE_DECODER, 82, NULL, NULL, false);
    llk_rdma_addr_t a[LLK_RDMA_MAX_ADDRS];
    size_t n = llk_rdma_local_addrs(f->d.e->rdma, a, LLK_RDMA_MAX_ADDRS);
    const char *ips[2] = {ip0(), ip1()};
    const uint8_t mtus[2] = {3, 5};
    int found[2] = {0, 0};
    for (size_t i = 0; i < n; i++) {
        char text[64];
        bool v4 = llk_rdma_ip_is_v4(a[i].ip);
        inet_ntop(v4 ? AF_INET : AF_INET6, v4 ? a[i].ip + 12 : a[i].ip, text, sizeof text);
        print_message("  %s/%u mtu %u\n", text, a[i].prefix, llk_rdma_mtu_bytes(a[i].mtu));
        assert_true(llk_rdma_addr_routable(a[i].ip));
        for (int k = 0; k < 2; k++)
            if (!strcmp(text, ips[k])) {
                found[k]++;
                assert_int_equal(a[i].prefix, 24);
                assert_int_equal(a[i].mtu, mtus[k]);
            }
    }
    assert_int_equal(found[0], 1);
    assert_int_equal(found[1], 1);
}

/* ip infos in opposite orders: D's local (ip0, ip1), its remote (ip1,
 * ip0). By position rail 0 would join rxe0 to rxe1's address; by the
 * data: rxe0<->rxe0 (1024) and rxe1<->rxe1 (4096). */
static void test_opposite_order(void **state)
{
    fx_t *f = *state;
    char listen[128];
    snprintf(listen, sizeof listen, "%s:0;%s:0", ip1(), ip0());
    make(f, listen, NULL, false, false);
    llmlink_ip_info_t r[2] = {{ip1(), f->port[0]}, {ip0(), f->port[1]}};
    llmlink_ip_info_t l[2] = {{ip0(), 0}, {ip1(), 0}};
    link_ok(f, r, 2, l, 2);
    const char *devs[2] = {dev0(), dev1()};
    const uint32_t mtus[2] = {1024, 4096};
    expect_rails(f, 2, devs, mtus, true);
    move_and_verify(f);
}

/* No local ip info: D's candidates are all its RDMA addresses, so it gets
 * both rails though it connected to one address only (before: one rail,
 * from the control connection's address). */
static void test_no_ip_infos(void **state)
{
    fx_t *f = *state;
    char listen[64];
    snprintf(listen, sizeof listen, "%s:0", ip0());
    make(f, listen, NULL, false, false);
    llmlink_ip_info_t r = {ip0(), f->port[0]};
    link_ok(f, &r, 1, NULL, 0);
    const char *devs[2] = {dev0(), dev1()};
    const uint32_t mtus[2] = {1024, 4096};
    expect_rails(f, 2, devs, mtus, true);
    move_and_verify(f);
}

/* P offers rxe1 only (llmlink.RdmaDevice): D, with local ip infos on both
 * devices and P's control address on rxe0's subnet, gets exactly the one
 * usable rail, rxe1<->rxe1 (before: rail 0 for rxe0's address, which P
 * has no device for - the link failed). */
static void test_server_one_subnet(void **state)
{
    fx_t *f = *state;
    char listen[64];
    snprintf(listen, sizeof listen, "%s:0", ip0());
    make(f, listen, dev1(), false, false);
    llmlink_ip_info_t r = {ip0(), f->port[0]};
    llmlink_ip_info_t l[2] = {{ip0(), 0}, {ip1(), 0}};
    link_ok(f, &r, 1, l, 2);
    const char *devs[1] = {dev1()};
    const uint32_t mtus[1] = {4096};
    expect_rails(f, 1, devs, mtus, true);
    move_and_verify(f);
}

/* A client that names crossed pairs in its XRDMA_SETUP (the seam
 * llk_test_set_rdma_cross_pairs: rxe0's address to rxe1's and back) is
 * refused by P's check of the probe's pairs, which names the rail; forced
 * rdma fails the link with that message. Without the seam the same link
 * comes up (test_opposite_order). */
static void test_crossed_pairs_refused(void **state)
{
    fx_t *f = *state;
    char listen[128];
    snprintf(listen, sizeof listen, "%s:0;%s:0", ip0(), ip1());
    make(f, listen, NULL, false, false);
    llk_test_set_rdma_cross_pairs(f->d.e, true);
    llmlink_ip_info_t r[2] = {{ip0(), f->port[0]}, {ip1(), f->port[1]}};
    llmlink_ip_info_t l[2] = {{ip0(), 0}, {ip1(), 0}};
    llmlink_cluster_info_t ci = {.remote_cluster_id = f->p.id, .remote_ip_infos = r,
                                 .num_remote_ip_infos = 2, .local_ip_infos = l,
                                 .num_local_ip_infos = 2};
    llmlink_status_t st[1];
    assert_status(llmlink_link_clusters(f->d.e, &ci, 1, 20000, st), LLMLINK_LINK_FAILED);
    const char *msg = llmlink_last_error();
    print_message("  crossed pairs: %s\n", msg);
    char want[96];
    snprintf(want, sizeof want, "(%s -> %s) is not a pair of the probe", ip0(), ip1());
    assert_non_null(strstr(msg, want));
}

/* An end without LLK_EXT_RDMA_RAILS (llk_test_set_legacy_rails: as
 * llmlink 0.3, no probe sent or answered): rails by position as before,
 * wire compatible - the ip infos in the same order give two working rails. */
static void legacy_case(void **state, bool p_legacy, bool d_legacy)
{
    fx_t *f = *state;
    char listen[128];
    snprintf(listen, sizeof listen, "%s:0;%s:0", ip0(), ip1());
    make(f, listen, NULL, p_legacy, d_legacy);
    llmlink_ip_info_t r[2] = {{ip0(), f->port[0]}, {ip1(), f->port[1]}};
    llmlink_ip_info_t l[2] = {{ip0(), 0}, {ip1(), 0}};
    link_ok(f, r, 2, l, 2);
    const char *devs[2] = {dev0(), dev1()};
    const uint32_t mtus[2] = {1024, 4096};
    expect_rails(f, 2, devs, mtus, false);
    move_and_verify(f);
}

static void test_legacy_server(void **state)
{
    legacy_case(state, true, false);
}

static void test_legacy_client(void **state)
{
    legacy_case(state, false, true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_local_addresses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_opposite_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_ip_infos, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_one_subnet, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crossed_pairs_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_legacy_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_legacy_client, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
