/* rdma_addrs.c - the prefix length of a local IP address, for the RDMA
 * addresses an engine announces in XRDMA_PROBE / XRDMA_PROBE_OK (rdma.h,
 * llk_rdma_local_addrs). */
#include <ifaddrs.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "transport/rdma.h"
#include "transport/rdma_plan.h"

/* Set bits of a netmask (a contiguous one, as the kernel keeps them). */
static uint8_t mask_bits(const uint8_t *m, size_t len)
{
    uint8_t bits = 0;
    for (size_t i = 0; i < len; i++)
        for (int b = 7; b >= 0; b--)
            bits = (uint8_t)(bits + ((m[i] >> b) & 1));
    return bits;
}

uint8_t llk_rdma_ip_prefix(const uint8_t ip[16], const char *ifname)
{
    bool v4 = llk_rdma_ip_is_v4(ip);
    /* Unknown (no interface has it): a host route, so the address pairs
     * only with itself rather than with a neighbour it may not reach. */
    uint8_t prefix = v4 ? 32 : 128;
    struct ifaddrs *list = NULL;
    if (getifaddrs(&list) != 0)
        return prefix;
    for (struct ifaddrs *a = list; a; a = a->ifa_next) {
        if (!a->ifa_addr || !a->ifa_netmask ||
            (ifname && ifname[0] && (!a->ifa_name || strcmp(a->ifa_name, ifname) != 0)))
            continue;
        uint8_t gid[16];
        if (a->ifa_addr->sa_family != (v4 ? AF_INET : AF_INET6) ||
            !llk_rdma_ip_gid(a->ifa_addr, gid) || memcmp(gid, ip, 16) != 0)
            continue;
        if (v4)
            prefix = mask_bits((const uint8_t *)&((struct sockaddr_in *)a->ifa_netmask)->sin_addr,
                               4);
        else
            prefix = mask_bits(
                (const uint8_t *)&((struct sockaddr_in6 *)a->ifa_netmask)->sin6_addr, 16);
        break;
    }
    freeifaddrs(list);
    return prefix;
}
