/* api_metrics.c - operator metrics at the ABI (llmlink_get_metrics,
 * llmlink_get_links, labels and bucket bounds): argument checks, then core
 * (link/metrics.c, xfer/xfer_metrics.c). */
#include "llmlink.h"

#include <stddef.h>
#include <string.h>

#include "link/engine.h"
#include "base/err.h"

LLMLINK_EXTERN llmlink_status_t llmlink_get_metrics(llmlink_t *dd, llmlink_metrics_t *metrics)
{
    static const char fn[] = "llmlink_get_metrics";
    if (!dd || !metrics)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: %s is NULL", fn, dd ? "metrics" : "dd");
    if (metrics->version != LLMLINK_METRICS_VERSION)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: metrics->version is %u, expected LLMLINK_METRICS_VERSION (%u)", fn,
                       metrics->version, LLMLINK_METRICS_VERSION);
    /* Answers on a finalized engine too (as llmlink_get_stats). */
    llmlink_metrics_t all;
    memset(&all, 0, sizeof all);
    llk_engine_metrics(dd, &all);
    all.version = LLMLINK_METRICS_VERSION;
    *metrics = all;
    return LLMLINK_SUCCESS;
}

LLMLINK_EXTERN llmlink_status_t llmlink_get_links(llmlink_t *dd, llmlink_link_info_t *out,
                                                  size_t max, size_t *count)
{
    static const char fn[] = "llmlink_get_links";
    if (!dd || !count)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: %s is NULL", fn, dd ? "count" : "dd");
    *count = 0;
    if (!out && max)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: out is NULL but max is %zu", fn, max);
    uint32_t version = max ? out[0].version : LLMLINK_LINK_INFO_VERSION;
    if (version < 1 || version > LLMLINK_LINK_INFO_VERSION)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "%s: out[0].version is %u, expected 1..LLMLINK_LINK_INFO_VERSION (%u)", fn,
                       version, LLMLINK_LINK_INFO_VERSION);
    if (max > (size_t)1 << 20)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: max %zu exceeds 1048576", fn, max);
    /* A version-1 caller's array is of the struct that ended at peer: its
     * stride is that size, and nothing past it is written. */
    size_t stride = version == 1 ? offsetof(llmlink_link_info_t, rdma_rails) : sizeof *out;
    return llk_xfer_links(dd, out, version, stride, max, count);
}

LLMLINK_EXTERN double llmlink_metrics_bucket_bound_seconds(size_t i)
{
    return llk_metrics_bound_seconds(i);
}

LLMLINK_EXTERN const char *llmlink_metrics_label(llmlink_metrics_label_kind_t kind,
                                                 uint32_t value)
{
    return llk_metrics_label(kind, value);
}
