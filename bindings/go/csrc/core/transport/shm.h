/*
 * transport/shm.h - the requester's batching of an shm copy (shm.c),
 * apart so that its bounds can be tested without a second process.
 *
 * A granted request is a list of runs (local pointer, owner address,
 * length). The copy goes one process_vm_readv/writev call per batch, and
 * the requester looks at its deadline before each: a batch moves at most
 * LLK_SHM_BATCH_BYTES (a few ms of copying), in at most LLK_SHM_BATCH_IOV
 * iovecs (the kernel's IOV_MAX), a run longer than that split across
 * batches. So a requester stops within one batch of its deadline, and the
 * owner's wait for its XDONE is short.
 */
#ifndef LLK_SHM_H
#define LLK_SHM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define LLK_SHM_BATCH_BYTES (64ull << 20)
#define LLK_SHM_BATCH_IOV 1024

typedef struct llk_shm_run {
    void *local;     /* this process's bytes */
    uint64_t remote; /* the owner's address */
    uint64_t len;
} llk_shm_run_t;

/* Where the copy stands: run index, offset within it. Start at {0, 0}. */
typedef struct llk_shm_cursor {
    size_t run;
    uint64_t off;
} llk_shm_cursor_t;

/* Fills liov/riov (LLK_SHM_BATCH_IOV entries each) with the next batch
 * from cur and advances cur past it. Returns the iovec count (0: nothing
 * left) and the batch's bytes in *bytes (<= LLK_SHM_BATCH_BYTES). Runs of
 * length 0 are skipped. */
size_t llk_shm_next_batch(const llk_shm_run_t *runs, size_t nruns, llk_shm_cursor_t *cur,
                          struct iovec *liov, struct iovec *riov, uint64_t *bytes);

#endif /* LLK_SHM_H */
