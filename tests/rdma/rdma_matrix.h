/*
 * rdma_matrix.h - tests/integration/test_xfer_multiproc.c compiled for the
 * soft-RoCE VM: the same cases, P and D as separate llmlink-node
 * processes, llmlink.Transport=rdma on both, on rxe0's netdev address
 * ($LLMLINK_RDMA_IP0), every byte verified, every request over RDMA (the
 * transport check asserts rdma > 0, tcp = 0, shm = 0). Each
 * tests/rdma/test_rdma_matrix_*.c runs a share of the cases (the harness
 * gives every program its own time limit).
 *
 * In the two-guest VM (ci/rdma-vm.sh --two-guest, LLMLINK_RDMA_2HOST=1)
 * every P node runs in guest A through its agent (LLMLINK_RDMA_AGENT,
 * tests/common/proc.c) on A's rail 0 address ($LLMLINK_RDMA_PEER_IP0), and
 * every D here in guest B: the same cases across two kernels.
 *
 * Sizes: the cases' sanitizer sizes (LLMLINK_SANITIZER set to "rdma-vm"
 * unless already set), i.e. caches of a few MiB, so soft-RoCE under TCG
 * moves tens of MiB per program, with the longer timeouts of that mode.
 */
#ifndef LLK_RDMA_MATRIX_H
#define LLK_RDMA_MATRIX_H

#define LLK_RDMA_MATRIX 1
#pragma GCC diagnostic ignored "-Wunused-function"
#include "../integration/test_xfer_multiproc.c"

#define RDMA(fn) { #fn "/rdma", fn, fx_setup, fx_teardown, (void *)"rdma" }

static void rdma_matrix_env(void)
{
    /* The two-guest VM (LLMLINK_RDMA_2HOST=1): every P runs in guest A
     * (proc.c, through the agent) and listens on A's rail 0 address, which
     * D (here, in guest B) links to; D's rails are B's own devices. */
    const char *two = getenv("LLMLINK_RDMA_2HOST");
    bool remote = two && !strcmp(two, "1");
    const char *ip = getenv(remote ? "LLMLINK_RDMA_PEER_IP0" : "LLMLINK_RDMA_IP0");
    setenv("LLMLINK_TEST_IP", ip && *ip ? ip : "10.10.0.1", 1);
    setenv("LLMLINK_SANITIZER", "rdma-vm", 0);
}

#endif /* LLK_RDMA_MATRIX_H */
