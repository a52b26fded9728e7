/*
 * planner.h - turns a transfer request into segments for the wire.
 *
 * A transfer pairs local bytes with remote bytes, tensor by tensor. The
 * planner (1) merges block lists into runs: consecutive local and remote
 * blocks become one run; (2) lays the runs over every tensor pair; (3)
 * slices segments longer than slice_bytes; (4) cuts the segment list into
 * at most nstreams groups of about equal bytes, one per stream.
 *
 * Pure computation: no I/O, no locks, no registry. The remote side's
 * offsets are checked by the remote side; the planner checks only what it
 * can see (the local side) and arithmetic overflow.
 */
#ifndef LLK_PLANNER_H
#define LLK_PLANNER_H

#include <stddef.h>
#include <stdint.h>

#include "llmlink.h"

#define LLK_MAX_STREAMS 8

/* A run of blocks: `count` blocks from local_block and remote_block on. */
typedef struct llk_block_run {
    uint64_t local_block;
    uint64_t remote_block;
    uint64_t count;
} llk_block_run_t;

/* A run of bytes within one tensor (local offset from the tensor base;
 * remote offset in the remote side's frame, see llk_xseg_t). */
typedef struct llk_byte_run {
    uint64_t loff;
    uint64_t roff;
    uint64_t len;
} llk_byte_run_t;

/* One segment: len bytes at local address lptr <-> remote tensor rtensor,
 * offset roff (from the remote tensor's base for blocks; from the start
 * of the addressed batch entry for cache transfers). */
typedef struct llk_xseg {
    uint32_t rtensor;
    uint64_t roff;
    uint8_t *lptr;
    uint64_t len;
} llk_xseg_t;

typedef struct llk_plan {
    llk_xseg_t *segs; /* malloc'd */
    size_t nsegs;
    /* Group g is segs[group_start[g] .. group_start[g + 1]). */
    size_t group_start[LLK_MAX_STREAMS + 1];
    uint32_t ngroups;
    uint64_t total_bytes;
} llk_plan_t;

/*
 * Merges local[i] <-> remote[i] (n pairs) into runs, in order: a pair
 * extends the previous run when both its blocks follow that run's last
 * ones. out has room for n runs. Returns the number of runs.
 */
size_t llk_plan_merge_blocks(const uint64_t *local, const uint64_t *remote, size_t n,
                             llk_block_run_t *out);

/*
 * Builds the plan for `nruns` byte runs applied to `ntensors` tensor pairs:
 * local tensor ltensor0 + k <-> remote tensor rtensor0 + k, for k in
 * [0, ntensors). laddrs are the local tensor bases (indexed by local tensor
 * number), ltensor_bytes their size: every local run must lie within it
 * (else PARAM_INVALID naming the run). Segment order: tensor-major, runs in
 * the given order; the byte stream on the wire follows it. slice_bytes > 0,
 * 1 <= nstreams <= LLK_MAX_STREAMS; fewer groups are made when there is
 * too little to spread. Returns SUCCESS, PARAM_INVALID or OUT_OF_MEMORY
 * (with llk_err()); on failure p holds nothing to free. An empty request
 * (no run or no tensor) and one of more than 2^26 segments are
 * PARAM_INVALID.
 */
llmlink_status_t llk_plan_build(llk_plan_t *p, const llk_byte_run_t *runs, size_t nruns,
                                uint32_t ltensor0, uint32_t rtensor0, uint32_t ntensors,
                                uint8_t *const *laddrs, uint64_t ltensor_bytes,
                                uint64_t slice_bytes, uint32_t nstreams);

void llk_plan_free(llk_plan_t *p);

#endif /* LLK_PLANNER_H */
