/*
 * rdma_probe.h - rails paired by the data (LLK_EXT_RDMA_RAILS, link/wire.h):
 * the XRDMA_PROBE exchange before XRDMA_SETUP, as each side takes it
 * (rdma_probe.c; rdma.c calls it only on a link whose ends both announced
 * the extension).
 *
 * Candidate addresses. The client's: its local ip infos when the link was
 * given some (only those of them that are RDMA addresses of the engine),
 * else all of the engine's RDMA addresses (rdma.h, llk_rdma_local_addrs).
 * The server's: all of its RDMA addresses - the devices it opened
 * (llmlink.RdmaDevice / RdmaPort narrow them), not its listen address,
 * which is often a control network. Both ends run llk_rdma_pair on the
 * two lists as sent; without a usable pair (a routed fabric: no subnet in
 * common) both fall back to the rule of before, rails by position of the
 * client's ip infos, and log it.
 */
#ifndef LLK_RDMA_PROBE_H
#define LLK_RDMA_PROBE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "llmlink.h"
#include "transport/rdma_wire.h"

struct llmlink;
struct llk_xlink;
struct llk_xserve;

/* Why the client's probe failed. */
typedef struct llk_rdma_probe_out {
    llmlink_status_t st;
    uint32_t refusal; /* the owner refused (its status), 0 otherwise */
    char why[300];
} llk_rdma_probe_out_t;

/* Client, on the setup stream fd: XRDMA_PROBE, XRDMA_PROBE_OK, the pairs.
 * 0 with local[i] / target[i] for *n rails (*n 0: none usable by subnet,
 * keep the position rule); -1 with *out. */
int llk_rdma_probe_client(struct llmlink *e, struct llk_xlink *xl, int fd, int64_t deadline_ms,
                          struct sockaddr_storage *local, struct sockaddr_storage *target,
                          uint16_t *n, llk_rdma_probe_out_t *out);
/* Owner thread: the answer to an XRDMA_PROBE (its pairs recorded in the
 * link's RDMA state). 0, or -1 with q->why (the stream ends). */
int llk_rdma_serve_probe(struct llk_xserve *q);
/* Owner: the client's XRDMA_SETUP names exactly the pairs (pc[k] the
 * client's address, ps[k] this side's) of its run of the rule, each once,
 * each rail by its GID (the client address's GID form) and target_ip.
 * false with why naming the first rail that is not. */
bool llk_rdma_setup_paired(const llk_xrail_wire_t *rails, uint16_t n, const uint8_t (*pc)[16],
                           const uint8_t (*ps)[16], uint16_t npairs, char *why, size_t cap);

#endif /* LLK_RDMA_PROBE_H */
