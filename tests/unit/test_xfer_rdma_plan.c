/*
 * test_rdma_plan.c - the device-independent rules of the RDMA transport
 * (core/rdma_plan.c): MTU negotiation, the RC retry timeout from
 * llm.SyncKvCacheWaitTime, IP -> GID, GID (rail) selection, chaining,
 * rail spreading, and the planner slicing at the RDMA slice size. These run
 * on every host; the verbs themselves run in the soft-RoCE VM (tests/rdma).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
