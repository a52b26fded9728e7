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

/* ---- rails paired by the data ---------------------------------------------- */

static const uint8_t V4MAPPED[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

bool llk_rdma_ip_is_v4(const uint8_t ip[16])
{
    return memcmp(ip, V4MAPPED, 12) == 0;
}

bool llk_rdma_prefix_ok(const uint8_t ip[16], uint8_t prefix)
{
    return prefix <= (llk_rdma_ip_is_v4(ip) ? 32 : 128);
}

bool llk_rdma_addr_routable(const uint8_t ip[16])
{
    static const uint8_t zero[16];
    if (!memcmp(ip, zero, 16))
        return false;
    if (llk_rdma_ip_is_v4(ip))
        return memcmp(ip + 12, zero, 4) != 0 && (ip[12] & 0xf0) != 0xe0; /* not 0, not 224/4 */
    if (ip[0] == 0xfe && (ip[1] & 0xc0) == 0x80)
        return false; /* fe80::/10 */
    return ip[0] != 0xff;
}

/* The first `bits` bits of x and y agree (bits counted within the family's
 * own address: the last 4 bytes of an IPv4). */
static bool same_prefix(const uint8_t *x, const uint8_t *y, unsigned bits)
{
    unsigned whole = bits / 8, rest = bits % 8;
    if (memcmp(x, y, whole) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xffu << (8 - rest));
    return (x[whole] & mask) == (y[whole] & mask);
}

bool llk_rdma_pair_usable(const llk_rdma_addr_t *a, const llk_rdma_addr_t *b)
{
    bool v4 = llk_rdma_ip_is_v4(a->ip);
    if (v4 != llk_rdma_ip_is_v4(b->ip) || !llk_rdma_mtu_bytes(a->mtu) ||
        !llk_rdma_mtu_bytes(b->mtu) || !llk_rdma_prefix_ok(a->ip, a->prefix) ||
        !llk_rdma_prefix_ok(b->ip, b->prefix))
        return false;
    unsigned off = v4 ? 12 : 0;
    /* both subnets contain the other address: the longer prefix decides */
    unsigned bits = a->prefix > b->prefix ? a->prefix : b->prefix;
    return same_prefix(a->ip + off, b->ip + off, bits);
}

static bool have_pair(const llk_rdma_pair_t *p, size_t n, size_t c, size_t s)
{
    for (size_t i = 0; i < n; i++)
        if (p[i].client == c && p[i].server == s)
            return true;
    return false;
}

size_t llk_rdma_pair(const llk_rdma_addr_t *client, size_t nc, const llk_rdma_addr_t *server,
                     size_t ns, size_t max, llk_rdma_pair_t *out)
{
    if (nc > LLK_RDMA_MAX_ADDRS)
        nc = LLK_RDMA_MAX_ADDRS;
    if (ns > LLK_RDMA_MAX_ADDRS)
        ns = LLK_RDMA_MAX_ADDRS;
    bool cused[LLK_RDMA_MAX_ADDRS] = {false}, sused[LLK_RDMA_MAX_ADDRS] = {false};
    size_t n = 0;
    /* 1: one rail per client address to a server address nobody has yet */
    for (size_t c = 0; c < nc && n < max; c++)
        for (size_t s = 0; s < ns && !cused[c]; s++)
            if (!sused[s] && llk_rdma_pair_usable(&client[c], &server[s])) {
                out[n++] = (llk_rdma_pair_t){(uint8_t)c, (uint8_t)s};
                cused[c] = sused[s] = true;
            }
    /* 2: client addresses left alone share a server address */
    for (size_t c = 0; c < nc && n < max; c++)
        for (size_t s = 0; s < ns && !cused[c]; s++)
            if (llk_rdma_pair_usable(&client[c], &server[s]) && !have_pair(out, n, c, s)) {
                out[n++] = (llk_rdma_pair_t){(uint8_t)c, (uint8_t)s};
                cused[c] = sused[s] = true;
            }
    /* 3: server addresses left alone share a client address */
    for (size_t s = 0; s < ns && n < max; s++)
        for (size_t c = 0; c < nc && !sused[s]; c++)
            if (llk_rdma_pair_usable(&client[c], &server[s]) && !have_pair(out, n, c, s)) {
                out[n++] = (llk_rdma_pair_t){(uint8_t)c, (uint8_t)s};
                cused[c] = sused[s] = true;
            }
    return n;
}

size_t llk_rdma_candidates(const llk_rdma_addr_t *mine, size_t nmine,
                           const struct sockaddr_storage *given, size_t ngiven,
                           llk_rdma_addr_t *out, size_t cap)
{
    size_t n = 0;
    if (ngiven == 0) {
        for (size_t i = 0; i < nmine && n < cap; i++)
            out[n++] = mine[i];
        return n;
    }
    for (size_t g = 0; g < ngiven && n < cap; g++) {
        uint8_t ip[16];
        if (!llk_rdma_ip_gid((const struct sockaddr *)&given[g], ip))
            continue;
        for (size_t i = 0; i < nmine; i++)
            if (!memcmp(mine[i].ip, ip, 16)) {
                out[n++] = mine[i];
                break;
            }
    }
    return n;
}
