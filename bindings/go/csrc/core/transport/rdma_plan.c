/* rdma_plan.c - device-independent rules of the RDMA transport (rdma_plan.h). */
#include "transport/rdma_plan.h"

#include <netinet/in.h>
#include <string.h>

uint32_t llk_rdma_mtu_bytes(uint8_t m)
{
    return m >= 1 && m <= 5 ? 128u << m : 0;
}

uint8_t llk_rdma_mtu_enum(uint32_t bytes)
{
    for (uint8_t m = 1; m <= 5; m++)
        if (llk_rdma_mtu_bytes(m) == bytes)
            return m;
    return 0;
}

uint8_t llk_rdma_mtu_negotiate(uint8_t local, uint8_t remote, uint32_t cap_bytes)
{
    if (!llk_rdma_mtu_bytes(local) || !llk_rdma_mtu_bytes(remote))
        return 0;
    uint8_t m = local < remote ? local : remote;
    if (cap_bytes) {
        uint8_t cap = llk_rdma_mtu_enum(cap_bytes);
        if (!cap)
            return 0;
        if (cap < m)
            m = cap;
    }
    return m;
}

uint8_t llk_rdma_ack_timeout(int32_t wait_ms, uint8_t retry_cnt)
{
    if (wait_ms < 1)
        wait_ms = 1;
    /* budget per timeout in ns: wait/2 over (retry_cnt + 1) tries */
    uint64_t per_ns = (uint64_t)wait_ms * 1000000ull / 2 / ((uint64_t)retry_cnt + 1);
    /* Never below 2^10 (4 ms): shorter timeouts retransmit on any busy
     * fabric; a wait too short for that ends by the call's own deadline. */
    uint8_t t = 10;
    /* 4096 ns * 2^t <= per_ns */
    while (t < 31 && (4096ull << (t + 1)) <= per_ns)
        t++;
    return t;
}

bool llk_rdma_ip_gid(const struct sockaddr *sa, uint8_t gid[16])
{
    memset(gid, 0, 16);
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        gid[10] = gid[11] = 0xff;
        memcpy(gid + 12, &in->sin_addr, 4);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(gid, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        return true;
    }
    return false;
}

int llk_rdma_pick_gid(const llk_gid_info_t *tbl, int n, const uint8_t ip_gid[16], int want_index,
                      bool is_ib)
{
    if (want_index >= 0)
        return want_index < n && tbl[want_index].valid ? want_index : -1;
    for (int i = 0; i < n; i++)
        if (tbl[i].valid && tbl[i].roce_v2 && !memcmp(tbl[i].gid, ip_gid, 16))
            return i;
    if (is_ib && n > 0 && tbl[0].valid)
        return 0;
    return -1;
}

uint8_t llk_rdma_rd_nibble(uint32_t depth)
{
    uint8_t v = 0;
    while (depth > 0 && v < 15) {
        v++;
        depth >>= 1;
    }
    return v;
}

uint32_t llk_rdma_rd_depth(uint8_t nibble)
{
    nibble &= 0xF;
    return nibble ? 1u << (nibble - 1) : 0;
}

uint32_t llk_rdma_rd_initiator(uint32_t ours, uint32_t peer_dest)
{
    uint32_t d = peer_dest && peer_dest < ours ? peer_dest : ours;
    return d ? d : 1;
}
