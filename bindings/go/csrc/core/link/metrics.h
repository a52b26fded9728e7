/*
 * metrics.h - the engine's operator counters behind llmlink_get_metrics
 * (llmlink_metrics_t in llmlink.h; docs/metrics.md says what each means).
 *
 * Every counter is an atomic updated with relaxed additions: the transfer
 * path (xfer/run.c) records a call with a handful of them and takes no
 * lock; the link plane records link and handshake events where they
 * happen (it holds e->mu there, but the counters do not need it). A
 * snapshot reads each counter once; counters that belong together may be
 * one event apart in a snapshot taken while calls run, and are exact once
 * they returned.
 *
 * The classification of statuses into the ABI's enums is pure (no engine)
 * so that the unit test checks it alone.
 */
#ifndef LLK_METRICS_H
#define LLK_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "llmlink.h"

typedef struct llk_metrics {
    _Atomic uint64_t links_established[LLMLINK_METRICS_MAX_LINK_DIRS];
    _Atomic uint64_t links_closed[LLMLINK_METRICS_MAX_REASONS];
    _Atomic uint64_t hs_refused[LLMLINK_METRICS_MAX_REASONS];
    _Atomic uint64_t link_failures[LLMLINK_METRICS_MAX_REASONS];
    _Atomic uint64_t transfers[LLMLINK_METRICS_MAX_DIRS][LLMLINK_METRICS_MAX_TRANSPORTS]
                              [LLMLINK_METRICS_MAX_RESULTS];
    _Atomic uint64_t bytes[LLMLINK_METRICS_MAX_DIRS][LLMLINK_METRICS_MAX_TRANSPORTS];
    _Atomic uint64_t lat_buckets[LLMLINK_METRICS_MAX_DIRS][LLMLINK_METRICS_BUCKETS];
    _Atomic uint64_t lat_count[LLMLINK_METRICS_MAX_DIRS];
    _Atomic uint64_t lat_sum_ns[LLMLINK_METRICS_MAX_DIRS];
} llk_metrics_t;

/* ---- pure classification (unit-tested) ---- */
/* The result class of a transfer's final status; link_failed: the call
 * broke the link (xfer/run.c knows). */
llmlink_metrics_result_t llk_metrics_result_of(llmlink_status_t st, bool link_failed);
/* Why a handshake was refused / a link attempt failed, from its status. */
llmlink_refuse_reason_t llk_metrics_refuse_reason(llmlink_status_t st);
/* The histogram bucket of a duration (LLMLINK_METRICS_BUCKETS: over the
 * last bound). */
uint32_t llk_metrics_bucket_of(uint64_t ns);
/* llmlink_metrics_bucket_bound_seconds and llmlink_metrics_label. */
double llk_metrics_bound_seconds(size_t i);
const char *llk_metrics_label(llmlink_metrics_label_kind_t kind, uint32_t value);
/* Monotonic nanoseconds, for transfer durations. */
int64_t llk_metrics_now_ns(void);

/* ---- recording (any thread; no lock needed) ---- */
/* One transfer call that reached a link: direction, the transport that
 * carried most of its requests, its result class, its payload bytes
 * (counted for SUCCESS only) and duration. */
void llk_metrics_transfer(llk_metrics_t *m, bool push, llmlink_metrics_transport_t t,
                          llmlink_metrics_result_t res, uint64_t bytes, int64_t dur_ns);
void llk_metrics_link_up(llk_metrics_t *m, bool outbound);
void llk_metrics_link_closed(llk_metrics_t *m, llmlink_close_reason_t why);
/* A server handshake (or a data stream's ATTACH) refused with st. */
void llk_metrics_hs_refused(llk_metrics_t *m, llmlink_status_t st);
/* A cluster of a link_clusters call ended with st (SUCCESS and
 * ALREADY_LINK are not failures: nothing is counted for them). */
void llk_metrics_link_result(llk_metrics_t *m, llmlink_status_t st);

/* ---- reading ---- */
/* Copies the counters kept here into out (the fields the engine keeps
 * elsewhere are filled by llk_engine_metrics). */
void llk_metrics_snapshot(const llk_metrics_t *m, llmlink_metrics_t *out);

#endif /* LLK_METRICS_H */
