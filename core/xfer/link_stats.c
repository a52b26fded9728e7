/* xfer/link_stats.c - llmlink_get_link_stats: what one link's peer did to
 * this engine's memory (the counters of llk_xlink_t, see xfer.h), and how
 * the NIC enforces the link's RDMA grants. */
#include <stdatomic.h>

#include "link/engine.h"
#include "base/err.h"
#include "transport/rdma.h"

llmlink_status_t llk_xfer_link_stats(llmlink_t *e, uint64_t cluster_id, const char *fn,
                                     llmlink_link_stats_t *out)
{
    /* A link exists only on a running engine: a finalized one says so
     * rather than NOT_YET_LINK. */
    if (!e->reg_ready)
        return llk_engine_check_running(e, fn);
    llk_xlink_t *xl = llk_xfer_find_link(e, cluster_id, fn);
    if (!xl) {
        llmlink_status_t st = llk_err_status();
        return st == LLMLINK_SUCCESS ? LLMLINK_NOT_YET_LINK : st;
    }
    out->peer_write_bytes = atomic_load(&xl->peer_write_bytes);
    out->peer_read_bytes = atomic_load(&xl->peer_read_bytes);
    out->requests_fenced = atomic_load(&xl->requests_fenced);
    out->rdma_protection = llk_rdma_stats_protection(xl);
    llk_rdma_xlink_rail_stats(xl, out);
    llk_xlink_unref(xl);
    return LLMLINK_SUCCESS;
}
