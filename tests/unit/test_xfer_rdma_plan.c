/*
 * test_rdma_plan.c - the device-independent rules of the RDMA transport
 * (core/rdma_plan.c): MTU negotiation, the RC retry timeout from
 * llm.SyncKvCacheWaitTime, IP -> GID, GID (rail) selection, chaining,
 * rail spreading, the planner slicing at the RDMA slice size, and the
 * pairing of rails by the data (llk_rdma_pair, LLK_EXT_RDMA_RAILS). These run
 * on every host; the verbs themselves run in the soft-RoCE VM (tests/rdma).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/addr.h"
#include "link/engine.h"
#include "llmlink.h"
#include "xfer/planner.h"
#include "transport/rdma.h"
#include "transport/rdma_plan.h"

static void test_mtu_values(void **state)
{
    (void)state;
    assert_int_equal(llk_rdma_mtu_bytes(1), 256);
    assert_int_equal(llk_rdma_mtu_bytes(3), 1024);
    assert_int_equal(llk_rdma_mtu_bytes(5), 4096);
    assert_int_equal(llk_rdma_mtu_bytes(0), 0);
    assert_int_equal(llk_rdma_mtu_bytes(6), 0);
    assert_int_equal(llk_rdma_mtu_enum(2048), 4);
    assert_int_equal(llk_rdma_mtu_enum(1500), 0);
}

/* The rule the VM's two devices (1024 and 4096) exercise: min of both
 * sides, then the llmlink.RdmaMtu cap. */
static void test_mtu_negotiation(void **state)
{
    (void)state;
    assert_int_equal(llk_rdma_mtu_negotiate(3, 5, 0), 3); /* 1024 vs 4096 */
    assert_int_equal(llk_rdma_mtu_negotiate(5, 3, 0), 3); /* symmetric */
    assert_int_equal(llk_rdma_mtu_negotiate(5, 5, 0), 5);
    assert_int_equal(llk_rdma_mtu_negotiate(5, 5, 1024), 3); /* cap below both */
    assert_int_equal(llk_rdma_mtu_negotiate(2, 5, 4096), 2); /* cap above the min: no effect */
    assert_int_equal(llk_rdma_mtu_negotiate(5, 4, 256), 1);
    assert_int_equal(llk_rdma_mtu_negotiate(0, 5, 0), 0);    /* out of range */
    assert_int_equal(llk_rdma_mtu_negotiate(5, 6, 0), 0);
    assert_int_equal(llk_rdma_mtu_negotiate(5, 5, 1500), 0); /* not an MTU */
}

static void test_ack_timeout(void **state)
{
    (void)state;
    /* every retry of a WR (retry_cnt + 1 timeouts) within half the wait */
    int32_t waits[] = {1, 100, 1000, 20000, 600000, 2147483647};
    for (size_t i = 0; i < sizeof waits / sizeof waits[0]; i++) {
        uint8_t t = llk_rdma_ack_timeout(waits[i], 7);
        assert_true(t >= 10 && t <= 31);
        double per_ms = 4.096e-3 * (double)(1ull << t);
        if (t > 10) /* above the floor: fits, and the next one would not */
            assert_true(per_ms * 8 <= waits[i] / 2.0);
        if (t < 31 && t > 10)
            assert_true(per_ms * 2 * 8 > waits[i] / 2.0);
    }
    assert_int_equal(llk_rdma_ack_timeout(1000, 7), 13); /* 33.5 ms x 8 = 268 ms <= 500 */
    assert_int_equal(llk_rdma_ack_timeout(20000, 7), 18); /* 1.07 s x 8 <= 10 s */
    assert_int_equal(llk_rdma_ack_timeout(1, 7), 10);   /* floor */
    assert_true(llk_rdma_ack_timeout(1000, 0) > llk_rdma_ack_timeout(1000, 7));
}

static void test_ip_gid(void **state)
{
    (void)state;
    struct sockaddr_in in = {.sin_family = AF_INET};
    inet_pton(AF_INET, "10.11.12.13", &in.sin_addr);
    uint8_t g[16];
    assert_true(llk_rdma_ip_gid((struct sockaddr *)&in, g));
    static const uint8_t want4[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 11, 12, 13};
    assert_memory_equal(g, want4, 16);
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "fd00::42", &in6.sin6_addr);
    assert_true(llk_rdma_ip_gid((struct sockaddr *)&in6, g));
    assert_memory_equal(g, &in6.sin6_addr, 16);
    struct sockaddr un = {.sa_family = AF_UNIX};
    assert_false(llk_rdma_ip_gid(&un, g));
}

/* A table as rxe shows it for one netdev with an IPv6 link-local and an
 * IPv4 address: each as RoCE v1 and v2. */
static void fill_table(llk_gid_info_t *t, const uint8_t ip4[16], const uint8_t ll[16])
{
    memset(t, 0, 6 * sizeof *t);
    memcpy(t[0].gid, ll, 16), t[0].valid = true, t[0].roce_v2 = false;
    memcpy(t[1].gid, ll, 16), t[1].valid = true, t[1].roce_v2 = true;
    memcpy(t[2].gid, ip4, 16), t[2].valid = true, t[2].roce_v2 = false;
    memcpy(t[3].gid, ip4, 16), t[3].valid = true, t[3].roce_v2 = true;
    /* 4, 5 empty */
}

static void test_pick_gid(void **state)
{
    (void)state;
    uint8_t ip4[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 168, 7, 1};
    uint8_t other[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 168, 7, 2};
    uint8_t ll[16] = {0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    llk_gid_info_t t[6];
    fill_table(t, ip4, ll);
    assert_int_equal(llk_rdma_pick_gid(t, 6, ip4, -1, false), 3); /* the v2 one, not v1 (2) */
    assert_int_equal(llk_rdma_pick_gid(t, 6, ll, -1, false), 1);
    assert_int_equal(llk_rdma_pick_gid(t, 6, other, -1, false), -1); /* another host's IP */
    assert_int_equal(llk_rdma_pick_gid(t, 6, other, -1, true), 0);   /* InfiniBand: index 0 */
    assert_int_equal(llk_rdma_pick_gid(t, 6, other, 2, false), 2);   /* explicit index */
    assert_int_equal(llk_rdma_pick_gid(t, 6, ip4, 4, false), -1);    /* an empty entry */
    assert_int_equal(llk_rdma_pick_gid(t, 6, ip4, 6, false), -1);    /* past the table */
    t[3].roce_v2 = false; /* only v1 for this IP: not routable, refused */
    assert_int_equal(llk_rdma_pick_gid(t, 6, ip4, -1, false), -1);
}

static void test_chains_and_rails(void **state)
{
    (void)state;
    assert_int_equal(llk_rdma_chain_len(100, 128, 8), 8);
    assert_int_equal(llk_rdma_chain_len(3, 128, 8), 3);
    assert_int_equal(llk_rdma_chain_len(100, 5, 8), 5); /* READs: rd_atomic left */
    assert_int_equal(llk_rdma_chain_len(100, 0, 8), 0); /* wait for completions */
    uint32_t per[3] = {0};
    for (uint32_t i = 0; i < 300; i++)
        per[llk_rdma_rail_of(i, 3)]++;
    assert_int_equal(per[0], 100);
    assert_int_equal(per[1], 100);
    assert_int_equal(per[2], 100);
    assert_int_equal(llk_rdma_rail_of(7, 1), 0);
}

/* Failover: slices go round robin over the rails that are up only. */
static void test_rail_pick(void **state)
{
    (void)state;
    uint32_t per[4] = {0};
    for (uint32_t i = 0; i < 300; i++)
        per[llk_rdma_rail_pick(i, 0x5u, 4)]++; /* rails 0 and 2 up */
    assert_int_equal(per[0], 150);
    assert_int_equal(per[1], 0);
    assert_int_equal(per[2], 150);
    assert_int_equal(per[3], 0);
    for (uint32_t i = 0; i < 10; i++)
        assert_int_equal(llk_rdma_rail_pick(i, 0x2u, 2), 1); /* rail 1 alone */
    /* every rail up: the planner's own round robin */
    for (uint32_t i = 0; i < 20; i++)
        assert_int_equal(llk_rdma_rail_pick(i, 0x7u, 3), llk_rdma_rail_of(i, 3));
    /* bits past the link's rails count for nothing; an empty mask gives 0 */
    assert_int_equal(llk_rdma_rail_pick(1, 0x9u, 2), 0);
    assert_int_equal(llk_rdma_rail_pick(5, 0, 2), 0);
}

/* The data path slices runs at 1 MiB (one WR each): a 5.5 MiB run over
 * two tensors is 12 WRs, none longer than the slice, covering every byte. */
static void test_slicing(void **state)
{
    (void)state;
    const uint64_t slice = 1u << 20, tb = 6u << 20;
    uint8_t *mem = malloc(2 * tb);
    assert_non_null(mem);
    uint8_t *addrs[2] = {mem, mem + tb};
    llk_byte_run_t run = {.loff = 0, .roff = 4096, .len = (11u << 19)};
    llk_plan_t p;
    memset(&p, 0, sizeof p);
    assert_int_equal(llk_plan_build(&p, &run, 1, 0, 0, 2, addrs, tb, slice, 1), LLMLINK_SUCCESS);
    assert_int_equal(p.nsegs, 12);
    uint64_t total = 0;
    for (size_t i = 0; i < p.nsegs; i++) {
        assert_true(p.segs[i].len <= slice && p.segs[i].len > 0);
        total += p.segs[i].len;
    }
    assert_int_equal(total, 2 * run.len);
    assert_int_equal(p.total_bytes, total);
    /* contiguous on both sides within a tensor */
    for (size_t i = 1; i < 6; i++) {
        assert_ptr_equal(p.segs[i].lptr, p.segs[i - 1].lptr + p.segs[i - 1].len);
        assert_int_equal(p.segs[i].roff, p.segs[i - 1].roff + p.segs[i - 1].len);
    }
    llk_plan_free(&p);
    free(mem);
}

static struct sockaddr_storage sa(const char *ip)
{
    struct sockaddr_storage s;
    socklen_t len = sizeof s;
    assert_int_equal(llk_addr_from_ip_port(ip, 0, &s, &len), 0);
    return s;
}

static void assert_ip(const struct sockaddr_storage *s, const char *want)
{
    char got[72], exp[72];
    llk_addr_format((const struct sockaddr *)s, got, sizeof got);
    struct sockaddr_storage w = sa(want);
    llk_addr_format((const struct sockaddr *)&w, exp, sizeof exp);
    /* compare without the ports */
    *strrchr(got, ':') = '\0';
    *strrchr(exp, ':') = '\0';
    assert_string_equal(got, exp);
}

/* Rail selection of a client link: rail i is local ip info i with remote
 * ip info i (mod their count), one address family per rail, at most 4. */
static void test_rail_addresses(void **state)
{
    (void)state;
    llk_conn_t *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->fd = -1;
    const char *loc[] = {"10.0.0.1", "10.0.1.1", "fd00::1", "10.0.2.1", "10.0.3.1", "10.0.4.1"};
    const char *rem[] = {"10.0.0.9", "10.0.1.9"};
    for (int i = 0; i < 6; i++)
        c->local[i] = sa(loc[i]);
    c->num_local = 6;
    for (int i = 0; i < 2; i++)
        c->remote[i] = sa(rem[i]);
    c->num_remote = 2;
    llk_xlink_t *xl = llk_xlink_new(1, true, 2, "peer");
    assert_non_null(xl);
    const llk_rdma_xlink_t *rx = llk_rdma_xlink(xl); /* the RDMA transport's link state */
    llk_xlink_set_rails(xl, c, true);
    assert_true(rx->peer);
    /* fd00::1 has no IPv6 remote to pair with (remote 2 % 2 = 10.0.0.9): skipped */
    assert_int_equal(rx->nrail_addrs, 4);
    assert_ip(&rx->rail_local[0], "10.0.0.1");
    assert_ip(&rx->rail_target[0], "10.0.0.9");
    assert_ip(&rx->rail_local[1], "10.0.1.1");
    assert_ip(&rx->rail_target[1], "10.0.1.9");
    assert_ip(&rx->rail_local[2], "10.0.2.1");
    assert_ip(&rx->rail_target[2], "10.0.1.9"); /* local 3 -> remote 3 % 2 */
    assert_ip(&rx->rail_local[3], "10.0.3.1");
    assert_ip(&rx->rail_target[3], "10.0.0.9");
    /* no ip infos and no connected socket: no rail address (auto falls back) */
    c->num_local = 0;
    llk_xlink_set_rails(xl, c, true);
    assert_int_equal(rx->nrail_addrs, 0);
    /* the server side only learns that the peer offers RDMA */
    llk_xlink_set_rails(xl, NULL, false);
    assert_false(rx->peer);
    llk_xlink_unref(xl);
    free(c);
}

/* The READ depth on the wire (a nibble) and the rule of a rail: as
 * responder what this side accepts; as initiator no more than the peer
 * accepts; an old peer (0) leaves this side's own depth. */
static void test_read_depths(void **state)
{
    (void)state;
    assert_int_equal(llk_rdma_rd_nibble(0), 0);
    assert_int_equal(llk_rdma_rd_nibble(1), 1);
    assert_int_equal(llk_rdma_rd_nibble(2), 2);
    assert_int_equal(llk_rdma_rd_nibble(3), 2);
    assert_int_equal(llk_rdma_rd_nibble(16), 5);
    assert_int_equal(llk_rdma_rd_nibble(128), 8);
    assert_int_equal(llk_rdma_rd_nibble(UINT32_MAX), 15);
    assert_int_equal(llk_rdma_rd_depth(0), 0);
    assert_int_equal(llk_rdma_rd_depth(1), 1);
    assert_int_equal(llk_rdma_rd_depth(5), 16);
    assert_int_equal(llk_rdma_rd_depth(15), 16384);
    assert_int_equal(llk_rdma_rd_depth(0x35), 16); /* only the low nibble */
    /* never more than the depth, never less than half of it (up to the cap) */
    for (uint32_t d = 1; d < 70000; d++) {
        uint32_t back = llk_rdma_rd_depth(llk_rdma_rd_nibble(d));
        uint32_t want = d < 16384 ? d : 16384;
        if (back > want || back * 2 <= want)
            fail_msg("depth %u encodes as %u", d, back);
    }
    assert_int_equal(llk_rdma_rd_initiator(16, 4), 4);  /* the peer accepts fewer */
    assert_int_equal(llk_rdma_rd_initiator(4, 16), 4);  /* we issue fewer */
    assert_int_equal(llk_rdma_rd_initiator(16, 0), 16); /* an old peer: ours */
    assert_int_equal(llk_rdma_rd_initiator(0, 0), 1);   /* never 0 */
    assert_int_equal(llk_rdma_rd_initiator(0, 8), 1);
}

/* ---- rails paired by the data (llk_rdma_pair) -------------------------------- */

/* An IPv4 RDMA address a.b.c.d/prefix, mtu m. */
static llk_rdma_addr_t v4(const char *ip, uint8_t prefix, uint8_t mtu)
{
    llk_rdma_addr_t a;
    memset(&a, 0, sizeof a);
    a.ip[10] = a.ip[11] = 0xff;
    assert_int_equal(inet_pton(AF_INET, ip, a.ip + 12), 1);
    a.prefix = prefix;
    a.mtu = mtu;
    return a;
}

static llk_rdma_addr_t v6(const char *ip, uint8_t prefix, uint8_t mtu)
{
    llk_rdma_addr_t a;
    memset(&a, 0, sizeof a);
    assert_int_equal(inet_pton(AF_INET6, ip, a.ip), 1);
    a.prefix = prefix;
    a.mtu = mtu;
    return a;
}

/* out[0..n) is exactly want[0..nw) ({client, server} in order). */
static void expect_pairs(const llk_rdma_pair_t *out, size_t n, const llk_rdma_pair_t *want,
                         size_t nw)
{
    assert_int_equal(n, nw);
    for (size_t i = 0; i < n; i++)
        if (out[i].client != want[i].client || out[i].server != want[i].server)
            fail_msg("pair %zu is (%u, %u), want (%u, %u)", i, out[i].client, out[i].server,
                     want[i].client, want[i].server);
}

static void test_pair_usable(void **state)
{
    (void)state;
    llk_rdma_addr_t a = v4("10.10.0.1", 24, 3), b = v4("10.10.0.2", 24, 5);
    assert_true(llk_rdma_pair_usable(&a, &b));
    llk_rdma_addr_t c = v4("10.10.1.1", 24, 3);
    assert_false(llk_rdma_pair_usable(&c, &b)); /* another subnet */
    /* each subnet must contain the other address: a /16 on one side does
     * not reach into another /24 of the other's */
    llk_rdma_addr_t wide = v4("10.10.1.1", 16, 3);
    assert_false(llk_rdma_pair_usable(&wide, &b));
    llk_rdma_addr_t wide2 = v4("10.10.0.9", 16, 3);
    assert_true(llk_rdma_pair_usable(&wide2, &b)); /* 10.10.0.0/24 holds 10.10.0.9 */
    llk_rdma_addr_t nomtu = v4("10.10.0.3", 24, 0);
    assert_false(llk_rdma_pair_usable(&nomtu, &b));
    llk_rdma_addr_t six = v6("2001:db8::1", 64, 3);
    assert_false(llk_rdma_pair_usable(&six, &b)); /* families differ */
    /* a host prefix pairs with itself only (the VM's one guest) */
    llk_rdma_addr_t h1 = v4("10.10.0.1", 32, 3);
    assert_true(llk_rdma_pair_usable(&h1, &a));
    assert_false(llk_rdma_pair_usable(&h1, &b));
    /* odd prefixes */
    llk_rdma_addr_t p1 = v4("10.10.0.130", 25, 3), p2 = v4("10.10.0.200", 25, 3),
                    p3 = v4("10.10.0.100", 25, 3);
    assert_true(llk_rdma_pair_usable(&p1, &p2));
    assert_false(llk_rdma_pair_usable(&p1, &p3));
    /* what may end a rail at all */
    assert_false(llk_rdma_addr_routable(v6("fe80::1", 64, 3).ip));
    assert_false(llk_rdma_addr_routable(v6("ff02::1", 64, 3).ip));
    assert_false(llk_rdma_addr_routable(v4("0.0.0.0", 0, 3).ip));
    assert_false(llk_rdma_addr_routable(v4("224.0.0.1", 4, 3).ip));
    assert_true(llk_rdma_addr_routable(v6("2001:db8::1", 64, 3).ip));
    assert_true(llk_rdma_addr_routable(v4("10.0.0.1", 8, 3).ip));
}

/* Two NICs each side in two subnets, the lists in other orders: the rails
 * follow the subnets, not the positions. */
static void test_pair_other_order(void **state)
{
    (void)state;
    llk_rdma_addr_t c[2] = {v4("10.10.0.1", 24, 3), v4("10.10.1.1", 24, 5)};
    llk_rdma_addr_t s[2] = {v4("10.10.1.2", 24, 5), v4("10.10.0.2", 24, 3)};
    llk_rdma_pair_t out[4];
    size_t n = llk_rdma_pair(c, 2, s, 2, 4, out);
    const llk_rdma_pair_t want[] = {{0, 1}, {1, 0}};
    expect_pairs(out, n, want, 2);
    /* the same two lists give the same pairs on the other end */
    llk_rdma_pair_t again[4];
    expect_pairs(again, llk_rdma_pair(c, 2, s, 2, 4, again), want, 2);
    /* equal order: by position */
    llk_rdma_addr_t s2[2] = {s[1], s[0]};
    const llk_rdma_pair_t want2[] = {{0, 0}, {1, 1}};
    expect_pairs(out, llk_rdma_pair(c, 2, s2, 2, 4, out), want2, 2);
}

/* Unequal counts in one subnet: every address carries a rail. */
static void test_pair_unequal(void **state)
{
    (void)state;
    llk_rdma_addr_t c2[2] = {v4("10.10.0.1", 24, 3), v4("10.10.0.3", 24, 3)};
    llk_rdma_addr_t s1[1] = {v4("10.10.0.2", 24, 5)};
    llk_rdma_pair_t out[4];
    const llk_rdma_pair_t w21[] = {{0, 0}, {1, 0}}; /* two rails to the one server NIC */
    expect_pairs(out, llk_rdma_pair(c2, 2, s1, 1, 4, out), w21, 2);
    llk_rdma_addr_t c1[1] = {v4("10.10.0.1", 24, 3)};
    llk_rdma_addr_t s2[2] = {v4("10.10.0.2", 24, 5), v4("10.10.0.4", 24, 5)};
    const llk_rdma_pair_t w12[] = {{0, 0}, {0, 1}}; /* two rails from the one client NIC */
    expect_pairs(out, llk_rdma_pair(c1, 1, s2, 2, 4, out), w12, 2);
    /* 2x2 in two subnets, one of each side per subnet */
    llk_rdma_addr_t c[2] = {v4("10.10.0.1", 24, 3), v4("10.10.1.1", 24, 3)};
    llk_rdma_addr_t s[2] = {v4("10.10.0.2", 24, 3), v4("10.10.1.2", 24, 3)};
    const llk_rdma_pair_t w22[] = {{0, 0}, {1, 1}};
    expect_pairs(out, llk_rdma_pair(c, 2, s, 2, 4, out), w22, 2);
    /* 2 client NICs against a server with one of the two subnets: one rail */
    llk_rdma_addr_t sone[1] = {v4("10.10.1.2", 24, 3)};
    const llk_rdma_pair_t w1[] = {{1, 0}};
    expect_pairs(out, llk_rdma_pair(c, 2, sone, 1, 4, out), w1, 1);
}

/* Pairs that cannot carry a rail are dropped; IPv6 pairs like IPv4. */
static void test_pair_unreachable_and_v6(void **state)
{
    (void)state;
    llk_rdma_addr_t c[3] = {v4("192.168.5.1", 24, 3), v6("2001:db8:1::1", 64, 5),
                            v4("10.10.0.1", 24, 0)};
    llk_rdma_addr_t s[3] = {v4("10.10.0.2", 24, 3), v6("2001:db8:1::2", 64, 4),
                            v6("2001:db8:2::2", 64, 4)};
    llk_rdma_pair_t out[4];
    const llk_rdma_pair_t want[] = {{1, 1}};
    expect_pairs(out, llk_rdma_pair(c, 3, s, 3, 4, out), want, 1);
}

/* Never more than max rails, no pair twice; none usable by subnet: 0 (the
 * caller falls back to the position rule). */
static void test_pair_cap_and_fallback(void **state)
{
    (void)state;
    llk_rdma_addr_t c[6], s[6];
    char ip[32];
    for (int i = 0; i < 6; i++) {
        snprintf(ip, sizeof ip, "10.20.0.%d", 1 + i);
        c[i] = v4(ip, 16, 3);
        snprintf(ip, sizeof ip, "10.20.1.%d", 1 + i);
        s[i] = v4(ip, 16, 5);
    }
    llk_rdma_pair_t out[LLK_XWIRE_MAX_RAILS];
    size_t n = llk_rdma_pair(c, 6, s, 6, LLK_XWIRE_MAX_RAILS, out);
    const llk_rdma_pair_t want[] = {{0, 0}, {1, 1}, {2, 2}, {3, 3}};
    expect_pairs(out, n, want, 4);
    /* 1 client address, 6 server addresses: 4 distinct rails */
    n = llk_rdma_pair(c, 1, s, 6, LLK_XWIRE_MAX_RAILS, out);
    const llk_rdma_pair_t want1[] = {{0, 0}, {0, 1}, {0, 2}, {0, 3}};
    expect_pairs(out, n, want1, 4);
    /* routed: no subnet in common */
    llk_rdma_addr_t r1[2] = {v4("10.1.0.1", 24, 3), v4("10.1.1.1", 24, 3)};
    llk_rdma_addr_t r2[2] = {v4("10.2.0.1", 24, 3), v4("10.2.1.1", 24, 3)};
    assert_int_equal(llk_rdma_pair(r1, 2, r2, 2, 4, out), 0);
    assert_int_equal(llk_rdma_pair(r1, 0, r2, 2, 4, out), 0);
    assert_int_equal(llk_rdma_pair(r1, 2, r2, 0, 4, out), 0);
}

/* The client's candidates: its given ip infos that are RDMA addresses (in
 * their order), else every RDMA address. */
static void test_pair_candidates(void **state)
{
    (void)state;
    llk_rdma_addr_t mine[2] = {v4("10.10.0.1", 24, 3), v4("10.10.1.1", 24, 5)};
    llk_rdma_addr_t out[4];
    assert_int_equal(llk_rdma_candidates(mine, 2, NULL, 0, out, 4), 2);
    assert_int_equal(out[1].mtu, 5);
    struct sockaddr_storage given[3];
    memset(given, 0, sizeof given);
    struct sockaddr_in *g0 = (struct sockaddr_in *)&given[0], *g1 = (struct sockaddr_in *)&given[1],
                       *g2 = (struct sockaddr_in *)&given[2];
    g0->sin_family = g1->sin_family = g2->sin_family = AF_INET;
    inet_pton(AF_INET, "10.10.1.1", &g0->sin_addr);
    inet_pton(AF_INET, "192.0.2.7", &g1->sin_addr); /* no RDMA device has it */
    inet_pton(AF_INET, "10.10.0.1", &g2->sin_addr);
    assert_int_equal(llk_rdma_candidates(mine, 2, given, 3, out, 4), 2);
    assert_memory_equal(out[0].ip, mine[1].ip, 16);
    assert_memory_equal(out[1].ip, mine[0].ip, 16);
    assert_int_equal(llk_rdma_candidates(mine, 2, given + 1, 1, out, 4), 0);
}

/* The prefix length of a local address, from the kernel's interfaces
 * (getifaddrs): loopback's 127.0.0.1 is a /8 on lo; on an interface that
 * does not hold it, or an address no interface holds: a host prefix. */
static void test_ip_prefix(void **state)
{
    (void)state;
    llk_rdma_addr_t lo = v4("127.0.0.1", 0, 3);
    assert_int_equal(llk_rdma_ip_prefix(lo.ip, "lo"), 8);
    assert_int_equal(llk_rdma_ip_prefix(lo.ip, ""), 8);
    assert_int_equal(llk_rdma_ip_prefix(lo.ip, NULL), 8);
    assert_int_equal(llk_rdma_ip_prefix(lo.ip, "llk-nosuch0"), 32);
    llk_rdma_addr_t none = v4("192.0.2.55", 0, 3); /* TEST-NET-1: on no host */
    assert_int_equal(llk_rdma_ip_prefix(none.ip, NULL), 32);
    llk_rdma_addr_t none6 = v6("2001:db8::55", 0, 3);
    assert_int_equal(llk_rdma_ip_prefix(none6.ip, NULL), 128);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mtu_values),     cmocka_unit_test(test_mtu_negotiation),
        cmocka_unit_test(test_ack_timeout),    cmocka_unit_test(test_ip_gid),
        cmocka_unit_test(test_pick_gid),       cmocka_unit_test(test_chains_and_rails),
        cmocka_unit_test(test_slicing),
        cmocka_unit_test(test_rail_addresses),
        cmocka_unit_test(test_rail_pick),
        cmocka_unit_test(test_read_depths),
        cmocka_unit_test(test_pair_usable),
        cmocka_unit_test(test_pair_other_order),
        cmocka_unit_test(test_pair_unequal),
        cmocka_unit_test(test_pair_unreachable_and_v6),
        cmocka_unit_test(test_pair_cap_and_fallback),
        cmocka_unit_test(test_pair_candidates),
        cmocka_unit_test(test_ip_prefix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
