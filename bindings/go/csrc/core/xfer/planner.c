/*
 * planner.c - block lists to runs, runs to wire segments, segments to
 * per-stream groups (see planner.h).
 *
 * Everything is checked before the segment array is allocated, and its
 * size is computed exactly up front, so the emitting loops are bounded by
 * that count and never reallocate.
 */
#include "xfer/planner.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"

/* Segments one plan may hold (32 bytes each: 2 GiB). A request needing more
 * is refused rather than half-built. */
#define LLK_PLAN_MAX_SEGS ((uint64_t)1 << 26)

/* ---- block runs ---------------------------------------------------------- */

/* Whether (l, r) are the blocks right after run's last ones. Written as
 * differences so that a run ending at UINT64_MAX cannot wrap into block 0. */
static bool run_extends(const llk_block_run_t *run, uint64_t l, uint64_t r)
{
    return l >= run->local_block && l - run->local_block == run->count &&
           r >= run->remote_block && r - run->remote_block == run->count;
}

size_t llk_plan_merge_blocks(const uint64_t *local, const uint64_t *remote, size_t n,
                             llk_block_run_t *out)
{
    if (local == NULL || remote == NULL || out == NULL)
        return 0;
    size_t nruns = 0;
    for (size_t i = 0; i < n; i++) {
        if (nruns > 0 && run_extends(&out[nruns - 1], local[i], remote[i])) {
            out[nruns - 1].count++;
            continue;
        }
        out[nruns++] = (llk_block_run_t){local[i], remote[i], 1};
    }
    return nruns;
}

/* ---- checks ---------------------------------------------------------------- */

static llmlink_status_t check_args(const llk_byte_run_t *runs, size_t nruns, uint32_t ltensor0,
                                   uint32_t rtensor0, uint32_t ntensors,
                                   uint8_t *const *laddrs, uint64_t slice_bytes,
                                   uint32_t nstreams)
{
    if (nstreams < 1 || nstreams > LLK_MAX_STREAMS)
        return llk_err(LLMLINK_PARAM_INVALID, "transfer plan: %" PRIu32 " streams, must be 1..%d",
                       nstreams, LLK_MAX_STREAMS);
    if (slice_bytes == 0)
        return llk_err(LLMLINK_PARAM_INVALID, "transfer plan: slice size 0");
    if (runs == NULL || nruns == 0)
        return llk_err(LLMLINK_PARAM_INVALID, "transfer plan: no byte runs");
    if (laddrs == NULL || ntensors == 0)
        return llk_err(LLMLINK_PARAM_INVALID, "transfer plan: no tensors");
    if ((uint64_t)rtensor0 + ntensors - 1 > UINT32_MAX ||
        (uint64_t)ltensor0 + ntensors - 1 > UINT32_MAX)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "transfer plan: %" PRIu32 " tensors from local %" PRIu32 " / remote %" PRIu32
                       " run past tensor number 2^32", ntensors, ltensor0, rtensor0);
    for (uint32_t k = 0; k < ntensors; k++)
        if (laddrs[(size_t)ltensor0 + k] == NULL)
            return llk_err(LLMLINK_PARAM_INVALID, "transfer plan: local tensor %" PRIu64
                           " has no address", (uint64_t)ltensor0 + k);
    return LLMLINK_SUCCESS;
}

/* Checks each run against the local tensor and counts, per tensor pair, the
 * segments (after slicing) and bytes it makes. Stops counting past the
 * segment bound, so the sums cannot overflow. */
static llmlink_status_t check_runs(const llk_byte_run_t *runs, size_t nruns,
                                   uint64_t ltensor_bytes, uint64_t slice_bytes,
                                   uint64_t *segs_per_tensor, uint64_t *bytes_per_tensor)
{
    uint64_t segs = 0, bytes = 0;
    for (size_t j = 0; j < nruns; j++) {
        const llk_byte_run_t *u = &runs[j];
        if (u->len == 0)
            return llk_err(LLMLINK_PARAM_INVALID, "transfer plan: run %zu has length 0", j);
        if (u->loff > ltensor_bytes || u->len > ltensor_bytes - u->loff)
            return llk_err(LLMLINK_PARAM_INVALID,
                           "transfer plan: run %zu (local offset %" PRIu64 ", %" PRIu64
                           " bytes) ends past the local tensor (%" PRIu64 " bytes)",
                           j, u->loff, u->len, ltensor_bytes);
        if (u->roff > UINT64_MAX - u->len)
            return llk_err(LLMLINK_PARAM_INVALID,
                           "transfer plan: run %zu (remote offset %" PRIu64 ", %" PRIu64
                           " bytes) overflows", j, u->roff, u->len);
        if (bytes > UINT64_MAX - u->len)
            return llk_err(LLMLINK_PARAM_INVALID,
                           "transfer plan: the runs add up to more than 2^64 bytes (run %zu)", j);
        bytes += u->len;
        segs += u->len / slice_bytes + (u->len % slice_bytes != 0);
        if (segs > LLK_PLAN_MAX_SEGS)
            return llk_err(LLMLINK_PARAM_INVALID,
                           "transfer plan: more than %" PRIu64 " segments (run %zu, slice %" PRIu64
                           " bytes)", LLK_PLAN_MAX_SEGS, j, slice_bytes);
    }
    *segs_per_tensor = segs;
    *bytes_per_tensor = bytes;
    return LLMLINK_SUCCESS;
}

/* ---- segments and groups ------------------------------------------------------ */

/* Appends run u of one tensor pair as slices of at most slice_bytes. The
 * offset only advances by what is left, so it never wraps. */
static size_t slice_run(llk_xseg_t *segs, size_t s, uint32_t rtensor, uint8_t *lbase,
                        const llk_byte_run_t *u, uint64_t slice_bytes)
{
    uint64_t off = 0;
    while (off < u->len) {
        uint64_t left = u->len - off;
        uint64_t piece = left < slice_bytes ? left : slice_bytes;
        segs[s++] = (llk_xseg_t){
            .rtensor = rtensor,
            .roff = u->roff + off,
            .lptr = lbase + u->loff + off,
            .len = piece,
        };
        off += piece;
    }
    return s;
}

/* total * k / n without overflow (n <= LLK_MAX_STREAMS, k <= n). */
static uint64_t share(uint64_t total, uint64_t k, uint64_t n)
{
    return total / n * k + total % n * k / n;
}

/*
 * Cuts segs into ngroups groups in order: group g closes once the bytes so
 * far reach g+1 shares of the total, or when the segments left are just
 * enough for one per remaining group (so none is empty). Segments are at
 * most one slice, so every group is within a slice of an equal share.
 */
static void make_groups(llk_plan_t *p, uint64_t slice_bytes, uint32_t nstreams)
{
    uint64_t want = p->total_bytes / slice_bytes + (p->total_bytes % slice_bytes != 0);
    uint64_t ng = nstreams;
    if (ng > p->nsegs)
        ng = p->nsegs;
    if (ng > want)
        ng = want;
    if (ng < 1)
        ng = 1;
    p->ngroups = (uint32_t)ng;
    p->group_start[0] = 0;
    uint32_t g = 0;
    uint64_t acc = 0;
    for (size_t i = 0; i < p->nsegs && g + 1 < ng; i++) {
        acc += p->segs[i].len;
        size_t segs_left = p->nsegs - i - 1;
        size_t groups_left = (size_t)(ng - g - 1);
        if (acc >= share(p->total_bytes, g + 1, ng) || segs_left == groups_left)
            p->group_start[++g] = i + 1;
    }
    p->group_start[ng] = p->nsegs;
}

llmlink_status_t llk_plan_build(llk_plan_t *p, const llk_byte_run_t *runs, size_t nruns,
                                uint32_t ltensor0, uint32_t rtensor0, uint32_t ntensors,
                                uint8_t *const *laddrs, uint64_t ltensor_bytes,
                                uint64_t slice_bytes, uint32_t nstreams)
{
    if (p == NULL)
        return llk_err(LLMLINK_PARAM_INVALID, "transfer plan: no plan to fill");
    memset(p, 0, sizeof *p);
    llmlink_status_t st = check_args(runs, nruns, ltensor0, rtensor0, ntensors, laddrs,
                                     slice_bytes, nstreams);
    uint64_t segs_per_tensor = 0, bytes_per_tensor = 0;
    if (st == LLMLINK_SUCCESS)
        st = check_runs(runs, nruns, ltensor_bytes, slice_bytes, &segs_per_tensor,
                        &bytes_per_tensor);
    if (st != LLMLINK_SUCCESS)
        return st;
    /* segs_per_tensor <= 2^26 and ntensors < 2^32: the product fits */
    uint64_t nsegs = segs_per_tensor * ntensors;
    if (nsegs > LLK_PLAN_MAX_SEGS)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "transfer plan: %" PRIu64 " segments over %" PRIu32 " tensors, more than %"
                       PRIu64, nsegs, ntensors, LLK_PLAN_MAX_SEGS);
    if (bytes_per_tensor > UINT64_MAX / ntensors)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "transfer plan: %" PRIu64 " bytes per tensor over %" PRIu32
                       " tensors overflow", bytes_per_tensor, ntensors);

    llk_xseg_t *segs = malloc((size_t)nsegs * sizeof *segs);
    if (segs == NULL)
        return llk_err(LLMLINK_OUT_OF_MEMORY, "transfer plan: no memory for %" PRIu64 " segments",
                       nsegs);
    size_t s = 0;
    for (uint32_t k = 0; k < ntensors; k++)
        for (size_t j = 0; j < nruns; j++)
            s = slice_run(segs, s, rtensor0 + k, laddrs[(size_t)ltensor0 + k], &runs[j],
                          slice_bytes);
    p->segs = segs;
    p->nsegs = s;
    p->total_bytes = bytes_per_tensor * ntensors;
    make_groups(p, slice_bytes, nstreams);
    return LLMLINK_SUCCESS;
}

void llk_plan_free(llk_plan_t *p)
{
    if (p == NULL)
        return;
    free(p->segs);
    memset(p, 0, sizeof *p);
}
