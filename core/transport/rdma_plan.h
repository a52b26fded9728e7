/*
 * rdma_plan.h - the parts of the RDMA transport that need no device: rules
 * and arithmetic the verbs code (rdma.c) applies, kept pure so that unit
 * tests cover them on hosts without RDMA.
 */
#ifndef LLK_RDMA_PLAN_H
#define LLK_RDMA_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* ibv_mtu values (1 = 256 .. 5 = 4096) <-> bytes; 0 for anything else. */
uint32_t llk_rdma_mtu_bytes(uint8_t ibv_mtu);
uint8_t llk_rdma_mtu_enum(uint32_t bytes);

/* The path MTU of a rail: the smaller of both sides' active MTUs (ibv_mtu
 * values), and no more than cap_bytes when that is not 0 (llmlink.RdmaMtu).
 * 0 if an input is out of range. */
uint8_t llk_rdma_mtu_negotiate(uint8_t local, uint8_t remote, uint32_t cap_bytes);

/* RC retry policy from llm.SyncKvCacheWaitTime: the local ACK timeout
 * exponent (4.096 us * 2^t, 10..31) such that all retries of one WR
 * (retry_cnt + 1 timeouts) fit in half the wait, so a dead peer fails the
 * transfer with a completion error before its deadline; never below 10. */
uint8_t llk_rdma_ack_timeout(int32_t wait_ms, uint8_t retry_cnt);

/* The 16-byte GID form of an IP: IPv4 as ::ffff:a.b.c.d (RoCE v2), IPv6 as is.
 * false for another family. */
bool llk_rdma_ip_gid(const struct sockaddr *sa, uint8_t gid[16]);

/* A GID table entry as the verbs report it. */
typedef struct llk_gid_info {
    uint8_t gid[16];
    bool roce_v2;  /* type RoCE v2 (routable over UDP/IP) */
    bool valid;    /* a non-zero entry */
} llk_gid_info_t;

/* The GID index to use for local address `ip_gid`: want_index >= 0 takes
 * that entry (if valid); else the RoCE v2 entry equal to ip_gid, else (for
 * an InfiniBand port, is_ib) index 0. -1 when none fits. */
int llk_rdma_pick_gid(const llk_gid_info_t *tbl, int n, const uint8_t ip_gid[16], int want_index,
                      bool is_ib);

/* Which rail carries segment i of a request, of nrails (>= 1): slices
 * round robin, so one large run is spread over every rail. */
static inline uint32_t llk_rdma_rail_of(uint32_t seg, uint32_t nrails)
{
    return nrails ? seg % nrails : 0;
}

/* The rail of slice i when only the rails of mask `up` (bit k: rail k) are
 * up: round robin over them; 0 for an empty mask. */
static inline uint32_t llk_rdma_rail_pick(uint32_t i, uint32_t up, uint32_t nrails)
{
    uint32_t cnt = 0;
    for (uint32_t k = 0; k < nrails && k < 32; k++)
        cnt += (up >> k) & 1u;
    if (cnt == 0)
        return 0;
    uint32_t want = i % cnt;
    for (uint32_t k = 0; k < nrails && k < 32; k++)
        if ((up >> k) & 1u) {
            if (want == 0)
                return k;
            want--;
        }
    return 0;
}

/* How many work requests the next chain posts: at most max_chain, at most
 * `left` still to post, at most `credits` (free send-queue slots, and for
 * READs the rd_atomic slots left). 0 = wait for completions. */
static inline uint32_t llk_rdma_chain_len(uint32_t left, uint32_t credits, uint32_t max_chain)
{
    uint32_t n = left < credits ? left : credits;
    return n < max_chain ? n : max_chain;
}

/*
 * Outstanding RDMA READs. A rail record advertises two depths: how many
 * READs this side issues at once (initiator, the QP's max_rd_atomic) and
 * how many it accepts as responder (max_dest_rd_atomic). Each travels as
 * one nibble of the record's former reserved byte: 0 = not advertised (a
 * peer from before this field), v = 1..15 = 2^(v-1); a depth is rounded
 * down to a power of two, so a side never advertises more than it has.
 */
uint8_t llk_rdma_rd_nibble(uint32_t depth);
uint32_t llk_rdma_rd_depth(uint8_t nibble);
/* The initiator depth a rail uses: ours, but no more than the peer accepts
 * as responder (peer_dest; 0 = the peer did not say: ours, as before the
 * field existed); never 0. */
uint32_t llk_rdma_rd_initiator(uint32_t ours, uint32_t peer_dest);

#endif /* LLK_RDMA_PLAN_H */
