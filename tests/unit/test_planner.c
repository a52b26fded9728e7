/*
 * test_planner.c - unit tests of the transfer planner (core/planner.c).
 *
 * The planner decides which local byte goes with which remote byte: a
 * mistake here silently corrupts a KV cache on the other side. So besides
 * the rules one by one (merging, slicing, grouping, order, local bounds),
 * a randomized test expands every plan byte by byte and compares it with
 * the block lists it came from.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmlink.h"
#include "llk_test.h"
#include "xfer/planner.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#define NT 6            /* local tensors of the fixture */
#define TBYTES 65536u   /* bytes of each */

/* ---- fixture ------------------------------------------------------------------ */

typedef struct plan_fixture {
    uint8_t *mem[NT];
    uint8_t *laddrs[NT];
    llk_plan_t plan;
} plan_fixture_t;

static int setup(void **state)
{
    plan_fixture_t *fx = test_calloc(1, sizeof *fx);
    assert_non_null(fx);
    for (int i = 0; i < NT; i++) {
        fx->mem[i] = test_malloc(TBYTES);
        assert_non_null(fx->mem[i]);
        fx->laddrs[i] = fx->mem[i];
    }
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    plan_fixture_t *fx = *state;
    llk_plan_free(&fx->plan);
    for (int i = 0; i < NT; i++)
        test_free(fx->mem[i]);
    test_free(fx);
    return 0;
}

/* ---- helpers ------------------------------------------------------------------ */

static void assert_error_names(const char *what)
{
    if (strstr(llmlink_last_error(), what) == NULL)
        fail_msg("last_error \"%s\" does not name \"%s\"", llmlink_last_error(), what);
}

static void assert_seg(const llk_xseg_t *s, uint32_t rtensor, uint64_t roff, const uint8_t *lptr,
                       uint64_t len)
{
    assert_int_equal(s->rtensor, rtensor);
    assert_int_equal(s->roff, roff);
    assert_ptr_equal(s->lptr, lptr);
    assert_int_equal(s->len, len);
}

/* Structure every plan must have: groups in order, none empty, covering
 * every segment; no segment over a slice; total = sum of lengths; each group
 * within one slice of an equal share. */
static void assert_plan_shape(const llk_plan_t *p, uint64_t slice, uint32_t nstreams)
{
    assert_true(p->ngroups >= 1);
    assert_true(p->ngroups <= nstreams);
    assert_true(p->ngroups <= p->nsegs);
    assert_int_equal(p->group_start[0], 0);
    assert_int_equal(p->group_start[p->ngroups], p->nsegs);
    uint64_t sum = 0;
    for (size_t i = 0; i < p->nsegs; i++) {
        assert_true(p->segs[i].len >= 1);
        assert_true(p->segs[i].len <= slice);
        sum += p->segs[i].len;
    }
    assert_int_equal(sum, p->total_bytes);
    for (uint32_t g = 0; g < p->ngroups; g++) {
        assert_true(p->group_start[g] < p->group_start[g + 1]);
        uint64_t bytes = 0;
        for (size_t i = p->group_start[g]; i < p->group_start[g + 1]; i++)
            bytes += p->segs[i].len;
        /* |bytes - total/ngroups| <= slice, without fractions */
        uint64_t scaled = bytes * p->ngroups, total = p->total_bytes;
        uint64_t diff = scaled > total ? scaled - total : total - scaled;
        if (diff > slice * p->ngroups)
            fail_msg("group %u has %" PRIu64 " bytes, equal share %" PRIu64 "/%u, slice %" PRIu64,
                     g, bytes, total, p->ngroups, slice);
    }
}

static llmlink_status_t build(plan_fixture_t *fx, const llk_byte_run_t *runs, size_t nruns,
                              uint32_t lt0, uint32_t rt0, uint32_t nt, uint64_t slice,
                              uint32_t nstreams)
{
    llk_plan_free(&fx->plan);
    return llk_plan_build(&fx->plan, runs, nruns, lt0, rt0, nt, fx->laddrs, TBYTES, slice,
                          nstreams);
}

/* ---- merge_blocks ------------------------------------------------------------- */

static void test_merge_consecutive_pairs_make_one_run(void **state)
{
    const uint64_t l[] = {10, 11, 12, 13}, r[] = {100, 101, 102, 103};
    llk_block_run_t out[4];
    assert_int_equal(llk_plan_merge_blocks(l, r, 4, out), 1);
    assert_int_equal(out[0].local_block, 10);
    assert_int_equal(out[0].remote_block, 100);
    assert_int_equal(out[0].count, 4);
}

static void test_merge_broken_by_local_side(void **state)
{
    const uint64_t l[] = {10, 11, 20, 21}, r[] = {100, 101, 102, 103};
    llk_block_run_t out[4];
    assert_int_equal(llk_plan_merge_blocks(l, r, 4, out), 2);
    assert_int_equal(out[0].count, 2);
    assert_int_equal(out[1].local_block, 20);
    assert_int_equal(out[1].remote_block, 102);
    assert_int_equal(out[1].count, 2);
}

static void test_merge_broken_by_remote_side(void **state)
{
    const uint64_t l[] = {10, 11, 12, 13}, r[] = {100, 101, 7, 8};
    llk_block_run_t out[4];
    assert_int_equal(llk_plan_merge_blocks(l, r, 4, out), 2);
    assert_int_equal(out[0].count, 2);
    assert_int_equal(out[1].local_block, 12);
    assert_int_equal(out[1].remote_block, 7);
    assert_int_equal(out[1].count, 2);
}

static void test_merge_duplicates_and_descending_do_not_merge(void **state)
{
    const uint64_t l[] = {5, 5, 4, 3}, r[] = {5, 5, 4, 3};
    llk_block_run_t out[4];
    assert_int_equal(llk_plan_merge_blocks(l, r, 4, out), 4);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(out[i].local_block, l[i]);
        assert_int_equal(out[i].remote_block, r[i]);
        assert_int_equal(out[i].count, 1);
    }
}

static void test_merge_single_and_empty(void **state)
{
    const uint64_t l[] = {42}, r[] = {7};
    llk_block_run_t out[1] = {{0, 0, 0}};
    assert_int_equal(llk_plan_merge_blocks(l, r, 1, out), 1);
    assert_int_equal(out[0].local_block, 42);
    assert_int_equal(out[0].remote_block, 7);
    assert_int_equal(out[0].count, 1);
    assert_int_equal(llk_plan_merge_blocks(l, r, 0, out), 0);
}

/* A run ending at the last block number must not wrap into block 0. */
static void test_merge_does_not_wrap_at_uint64_max(void **state)
{
    const uint64_t l[] = {UINT64_MAX, 0}, r[] = {3, 4};
    llk_block_run_t out[2];
    assert_int_equal(llk_plan_merge_blocks(l, r, 2, out), 2);
    assert_int_equal(llk_plan_merge_blocks(r, l, 2, out), 2);
    const uint64_t l2[] = {UINT64_MAX - 1, UINT64_MAX}, r2[] = {3, 4};
    assert_int_equal(llk_plan_merge_blocks(l2, r2, 2, out), 1);
    assert_int_equal(out[0].count, 2);
}

/* ---- slicing ------------------------------------------------------------------ */

static void test_slice_exact_multiple(void **state)
{
    plan_fixture_t *fx = *state;
    const llk_byte_run_t run = {.loff = 1024, .roff = 5000, .len = 4096};
    assert_status(build(fx, &run, 1, 0, 0, 1, 1024, 1), LLMLINK_SUCCESS);
    assert_int_equal(fx->plan.nsegs, 4);
    for (size_t i = 0; i < 4; i++)
        assert_seg(&fx->plan.segs[i], 0, 5000 + 1024 * i, fx->mem[0] + 1024 + 1024 * i, 1024);
    assert_int_equal(fx->plan.total_bytes, 4096);
    assert_plan_shape(&fx->plan, 1024, 1);
}

static void test_slice_remainder(void **state)
{
    plan_fixture_t *fx = *state;
    const llk_byte_run_t run = {.loff = 0, .roff = 0, .len = 4100};
    assert_status(build(fx, &run, 1, 0, 0, 1, 1024, 1), LLMLINK_SUCCESS);
    assert_int_equal(fx->plan.nsegs, 5);
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(fx->plan.segs[i].len, 1024);
    assert_seg(&fx->plan.segs[4], 0, 4096, fx->mem[0] + 4096, 4);
    assert_int_equal(fx->plan.total_bytes, 4100);
}

static void test_slice_larger_than_run_keeps_it_whole(void **state)
{
    plan_fixture_t *fx = *state;
    const llk_byte_run_t run = {.loff = 8, .roff = 16, .len = 100};
    assert_status(build(fx, &run, 1, 0, 0, 1, 101, 4), LLMLINK_SUCCESS);
    assert_int_equal(fx->plan.nsegs, 1);
    assert_seg(&fx->plan.segs[0], 0, 16, fx->mem[0] + 8, 100);
    assert_int_equal(fx->plan.ngroups, 1);
}

/* ---- order ---------------------------------------------------------------------- */

/* Tensor-major: every run of tensor pair 0, then of pair 1, ...; tensor
 * numbers offset by ltensor0 / rtensor0, runs in the given order. */
static void test_segments_are_tensor_major(void **state)
{
    plan_fixture_t *fx = *state;
    const llk_byte_run_t runs[] = {{.loff = 300, .roff = 7, .len = 10},
                                   {.loff = 100, .roff = 900, .len = 20}};
    assert_status(build(fx, runs, 2, 2, 10, 3, 4096, 1), LLMLINK_SUCCESS);
    assert_int_equal(fx->plan.nsegs, 6);
    for (uint32_t k = 0; k < 3; k++) {
        assert_seg(&fx->plan.segs[2 * k], 10 + k, 7, fx->mem[2 + k] + 300, 10);
        assert_seg(&fx->plan.segs[2 * k + 1], 10 + k, 900, fx->mem[2 + k] + 100, 20);
    }
    assert_int_equal(fx->plan.total_bytes, 90);
}

/* ---- groups ---------------------------------------------------------------------- */

static void test_groups_balanced_over_streams(void **state)
{
    plan_fixture_t *fx = *state;
    const llk_byte_run_t run = {.loff = 0, .roff = 0, .len = 8000};
    assert_status(build(fx, &run, 1, 0, 0, 4, 1000, 4), LLMLINK_SUCCESS);
    /* 32 segments of 1000 bytes over 4 groups: 8 each */
    assert_int_equal(fx->plan.nsegs, 32);
    assert_int_equal(fx->plan.ngroups, 4);
    for (uint32_t g = 0; g <= 4; g++)
        assert_int_equal(fx->plan.group_start[g], 8 * g);
    assert_plan_shape(&fx->plan, 1000, 4);
}

/* Fewer groups than streams when there is too little to spread: total under
 * one slice is one group; fewer segments than streams is one group each. */
static void test_groups_fewer_when_little_to_spread(void **state)
{
    plan_fixture_t *fx = *state;
    const llk_byte_run_t small[] = {{.loff = 0, .roff = 0, .len = 10},
                                    {.loff = 100, .roff = 100, .len = 10}};
    assert_status(build(fx, small, 2, 0, 0, 2, 1000, 8), LLMLINK_SUCCESS);
    assert_int_equal(fx->plan.nsegs, 4);
    assert_int_equal(fx->plan.ngroups, 1);
    assert_plan_shape(&fx->plan, 1000, 8);

    const llk_byte_run_t big = {.loff = 0, .roff = 0, .len = 3000};
    assert_status(build(fx, &big, 1, 0, 0, 1, 1000, 8), LLMLINK_SUCCESS);
    assert_int_equal(fx->plan.nsegs, 3);
    assert_int_equal(fx->plan.ngroups, 3);
    assert_plan_shape(&fx->plan, 1000, 8);
}

/* Unequal segments: the small ones at the front must not leave a later
 * group empty, and no group strays more than a slice from an equal share. */
static void test_groups_never_empty_with_unequal_segments(void **state)
{
    plan_fixture_t *fx = *state;
    const llk_byte_run_t runs[] = {{.loff = 0, .roff = 0, .len = 1},
                                   {.loff = 10, .roff = 10, .len = 1},
                                   {.loff = 20, .roff = 20, .len = 1},
                                   {.loff = 1000, .roff = 1000, .len = 100},
                                   {.loff = 2000, .roff = 2000, .len = 100}};
    assert_status(build(fx, runs, 5, 0, 0, 1, 100, 3), LLMLINK_SUCCESS);
    assert_int_equal(fx->plan.ngroups, 3);
    assert_plan_shape(&fx->plan, 100, 3);

    const llk_byte_run_t tail[] = {{.loff = 0, .roff = 0, .len = 100},
                                   {.loff = 1000, .roff = 1000, .len = 100},
                                   {.loff = 2000, .roff = 2000, .len = 1},
                                   {.loff = 3000, .roff = 3000, .len = 1}};
    assert_status(build(fx, tail, 4, 0, 0, 1, 100, 8), LLMLINK_SUCCESS);
    assert_int_equal(fx->plan.ngroups, 3);
    assert_plan_shape(&fx->plan, 100, 8);
}

/* ---- refusals ----------------------------------------------------------------------- */

static void assert_refused_zeroed(plan_fixture_t *fx, llmlink_status_t st, const char *what)
{
    assert_status(st, LLMLINK_PARAM_INVALID);
    assert_error_names(what);
    assert_null(fx->plan.segs);
    assert_int_equal(fx->plan.nsegs, 0);
    assert_int_equal(fx->plan.ngroups, 0);
}

static void test_run_past_local_tensor_refused(void **state)
{
    plan_fixture_t *fx = *state;
    const llk_byte_run_t runs[] = {{.loff = 0, .roff = 0, .len = 16},
                                   {.loff = TBYTES - 8, .roff = 0, .len = 9}};
    assert_refused_zeroed(fx, build(fx, runs, 2, 0, 0, 1, 4096, 1), "run 1");
    assert_error_names("65536 bytes");
    /* ending exactly at the end is fine */
    const llk_byte_run_t last = {.loff = TBYTES - 8, .roff = 0, .len = 8};
    assert_status(build(fx, &last, 1, 0, 0, 1, 4096, 1), LLMLINK_SUCCESS);
}

static void test_run_offsets_that_overflow_refused(void **state)
{
    plan_fixture_t *fx = *state;
    const llk_byte_run_t lwrap = {.loff = UINT64_MAX, .roff = 0, .len = 2};
    assert_refused_zeroed(fx, build(fx, &lwrap, 1, 0, 0, 1, 4096, 1), "run 0");
    const llk_byte_run_t lwrap2 = {.loff = 16, .roff = 0, .len = UINT64_MAX - 8};
    assert_refused_zeroed(fx, build(fx, &lwrap2, 1, 0, 0, 1, 4096, 1), "run 0");
    const llk_byte_run_t rwrap = {.loff = 0, .roff = UINT64_MAX - 3, .len = 8};
    assert_refused_zeroed(fx, build(fx, &rwrap, 1, 0, 0, 1, 4096, 1), "remote offset");
}

static void test_zero_length_run_refused(void **state)
{
    plan_fixture_t *fx = *state;
    const llk_byte_run_t runs[] = {{.loff = 0, .roff = 0, .len = 16},
                                   {.loff = 0, .roff = 0, .len = 16},
                                   {.loff = 32, .roff = 32, .len = 0}};
    assert_refused_zeroed(fx, build(fx, runs, 3, 0, 0, 1, 4096, 1), "run 2");
}

static void test_bad_arguments_refused(void **state)
{
    plan_fixture_t *fx = *state;
    const llk_byte_run_t run = {.loff = 0, .roff = 0, .len = 16};
    assert_refused_zeroed(fx, build(fx, &run, 1, 0, 0, 1, 4096, 0), "streams");
    assert_refused_zeroed(fx, build(fx, &run, 1, 0, 0, 1, 4096, LLK_MAX_STREAMS + 1), "streams");
    assert_refused_zeroed(fx, build(fx, &run, 1, 0, 0, 1, 0, 1), "slice");
    assert_refused_zeroed(fx, build(fx, &run, 0, 0, 0, 1, 4096, 1), "runs");
    assert_refused_zeroed(fx, build(fx, NULL, 1, 0, 0, 1, 4096, 1), "runs");
    assert_refused_zeroed(fx, build(fx, &run, 1, 0, 0, 0, 4096, 1), "tensors");
    assert_refused_zeroed(fx, build(fx, &run, 1, 0, UINT32_MAX, 2, 4096, 1), "2^32");
    fx->laddrs[1] = NULL;
    assert_refused_zeroed(fx, build(fx, &run, 1, 0, 0, 2, 4096, 1), "local tensor 1");
    assert_status(llk_plan_build(NULL, &run, 1, 0, 0, 1, fx->laddrs, TBYTES, 4096, 1),
                  LLMLINK_PARAM_INVALID);
}

/* A request that would need more segments than the bound is refused before
 * anything is allocated (the fake tensor is never touched). */
static void test_too_many_segments_refused(void **state)
{
    plan_fixture_t *fx = *state;
    uint8_t *fake[1] = {(uint8_t *)(uintptr_t)0x10000};
    const llk_byte_run_t run = {.loff = 0, .roff = 0, .len = (uint64_t)1 << 40};
    llmlink_status_t st = llk_plan_build(&fx->plan, &run, 1, 0, 0, 1, fake, (uint64_t)1 << 40, 1, 1);
    assert_refused_zeroed(fx, st, "segments");
    /* the bound also applies across tensors */
    const llk_byte_run_t mid = {.loff = 0, .roff = 0, .len = (uint64_t)1 << 24};
    uint8_t *fakes[NT];
    for (int i = 0; i < NT; i++)
        fakes[i] = (uint8_t *)(uintptr_t)(0x10000 * (i + 1));
    st = llk_plan_build(&fx->plan, &mid, 1, 0, 0, NT, fakes, (uint64_t)1 << 24, 1, 1);
    assert_refused_zeroed(fx, st, "segments");
}

static void test_free_is_safe_on_zeroed_and_twice(void **state)
{
    plan_fixture_t *fx = *state;
    llk_plan_t z;
    memset(&z, 0, sizeof z);
    llk_plan_free(&z);
    llk_plan_free(NULL);
    const llk_byte_run_t run = {.loff = 0, .roff = 0, .len = 16};
    assert_status(build(fx, &run, 1, 0, 0, 1, 4096, 1), LLMLINK_SUCCESS);
    llk_plan_free(&fx->plan);
    assert_null(fx->plan.segs);
    assert_int_equal(fx->plan.nsegs, 0);
    assert_int_equal(fx->plan.total_bytes, 0);
    llk_plan_free(&fx->plan);
}

/* ---- randomized property test ---------------------------------------------------------- */

/* xorshift64*: reproducible from the printed seed. */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static uint64_t rnd_below(uint64_t *s, uint64_t n) { return rnd(s) % n; }

/* Walks a plan byte by byte. */
typedef struct seg_cursor {
    const llk_plan_t *p;
    size_t seg;
    uint64_t off;
} seg_cursor_t;

static bool cursor_next(seg_cursor_t *c, uint32_t *rt, uint64_t *roff, const uint8_t **lptr)
{
    while (c->seg < c->p->nsegs && c->off == c->p->segs[c->seg].len) {
        c->seg++;
        c->off = 0;
    }
    if (c->seg == c->p->nsegs)
        return false;
    const llk_xseg_t *s = &c->p->segs[c->seg];
    *rt = s->rtensor;
    *roff = s->roff + c->off;
    *lptr = s->lptr + c->off;
    c->off++;
    return true;
}

/* Random block lists (with runs, breaks and repeats) -> merge -> byte runs
 * -> plan. The plan's bytes, in order, must be exactly: for each tensor
 * pair, for each pair i, the bytes of local block local[i] with those of
 * remote block remote[i]; every local byte is then covered as often as its
 * block appears. */
static void check_random_plan(plan_fixture_t *fx, uint64_t *seed)
{
    enum { MAXN = 64 };
    uint64_t bs = 1 + rnd_below(seed, 40);
    uint64_t nblocks = TBYTES / bs < 200 ? TBYTES / bs : 200;
    size_t n = 1 + rnd_below(seed, MAXN);
    uint64_t local[MAXN], remote[MAXN];
    uint64_t l = rnd_below(seed, nblocks), r = rnd_below(seed, 1000);
    for (size_t i = 0; i < n; i++) {
        switch (rnd_below(seed, 4)) {
        case 0: /* continue the run */
            break;
        case 1: /* break the local side */
            l = rnd_below(seed, nblocks);
            break;
        case 2: /* break the remote side */
            r = rnd_below(seed, 1000);
            break;
        default: /* repeat the previous pair */
            if (i > 0) {
                l = local[i - 1];
                r = remote[i - 1];
            }
            break;
        }
        if (l >= nblocks)
            l = 0;
        local[i] = l++;
        remote[i] = r++;
    }
    llk_block_run_t bruns[MAXN];
    size_t nruns = llk_plan_merge_blocks(local, remote, n, bruns);
    assert_true(nruns >= 1 && nruns <= n);
    llk_byte_run_t runs[MAXN];
    uint64_t blocks_in_runs = 0;
    for (size_t j = 0; j < nruns; j++) {
        if (j > 0) /* maximal: a run never continues the previous one */
            assert_false(bruns[j].local_block == bruns[j - 1].local_block + bruns[j - 1].count &&
                         bruns[j].remote_block == bruns[j - 1].remote_block + bruns[j - 1].count);
        runs[j] = (llk_byte_run_t){bruns[j].local_block * bs, bruns[j].remote_block * bs,
                                   bruns[j].count * bs};
        blocks_in_runs += bruns[j].count;
    }
    assert_int_equal(blocks_in_runs, n);

    uint32_t nt = 1 + (uint32_t)rnd_below(seed, 3);
    uint32_t lt0 = (uint32_t)rnd_below(seed, NT - nt + 1), rt0 = (uint32_t)rnd_below(seed, 50);
    uint64_t slice = 1 + rnd_below(seed, 3 * bs);
    uint32_t nstreams = 1 + (uint32_t)rnd_below(seed, LLK_MAX_STREAMS);
    assert_status(build(fx, runs, nruns, lt0, rt0, nt, slice, nstreams), LLMLINK_SUCCESS);
    assert_plan_shape(&fx->plan, slice, nstreams);
    assert_int_equal(fx->plan.total_bytes, (uint64_t)n * bs * nt);

    seg_cursor_t cur = {&fx->plan, 0, 0};
    for (uint32_t k = 0; k < nt; k++)
        for (size_t i = 0; i < n; i++)
            for (uint64_t b = 0; b < bs; b++) {
                uint32_t rt;
                uint64_t roff;
                const uint8_t *lp;
                assert_true(cursor_next(&cur, &rt, &roff, &lp));
                assert_int_equal(rt, rt0 + k);
                assert_int_equal(roff, remote[i] * bs + b);
                assert_ptr_equal(lp, fx->mem[lt0 + k] + local[i] * bs + b);
            }
    uint32_t rt;
    uint64_t roff;
    const uint8_t *lp;
    assert_false(cursor_next(&cur, &rt, &roff, &lp));
}

static void test_random_plans_cover_exactly_the_blocks(void **state)
{
    plan_fixture_t *fx = *state;
    const uint64_t seed0 = 0x9e3779b97f4a7c15ull;
    for (int iter = 0; iter < 400; iter++) {
        /* each iteration has its own fixed seed: a failure reproduces */
        uint64_t s = seed0 + (uint64_t)iter * 0x100000001b3ull;
        check_random_plan(fx, &s);
    }
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_merge_consecutive_pairs_make_one_run),
        T(test_merge_broken_by_local_side),
        T(test_merge_broken_by_remote_side),
        T(test_merge_duplicates_and_descending_do_not_merge),
        T(test_merge_single_and_empty),
        T(test_merge_does_not_wrap_at_uint64_max),
        T(test_slice_exact_multiple),
        T(test_slice_remainder),
        T(test_slice_larger_than_run_keeps_it_whole),
        T(test_segments_are_tensor_major),
        T(test_groups_balanced_over_streams),
        T(test_groups_fewer_when_little_to_spread),
        T(test_groups_never_empty_with_unequal_segments),
        T(test_run_past_local_tensor_refused),
        T(test_run_offsets_that_overflow_refused),
        T(test_zero_length_run_refused),
        T(test_bad_arguments_refused),
        T(test_too_many_segments_refused),
        T(test_free_is_safe_on_zeroed_and_twice),
        T(test_random_plans_cover_exactly_the_blocks),
    };
#undef T
    return cmocka_run_group_tests_name("planner: block runs, slices, stream groups", tests, NULL,
                                       NULL);
}
