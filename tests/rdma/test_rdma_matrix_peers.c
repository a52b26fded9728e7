/* test_rdma_matrix_peers.c - the concurrency and failure cases of the
 * transfer matrix over RDMA: four decoders at once, eight threads on one
 * decoder (rails shared by many calls), unregister while pulling, a peer
 * killed (SIGKILL) or stopped (SIGSTOP) mid-pull, then relink; see
 * rdma_matrix.h. */
#include "rdma_matrix.h"

int main(void)
{
    rdma_matrix_env();
    const struct CMUnitTest tests[] = {
        RDMA(test_four_decoders_at_once),
        RDMA(test_eight_threads_one_decoder),
        RDMA(test_unregister_while_pulling),
        RDMA(test_kill_prompt_mid_pull),
        RDMA(test_kill_decoder_mid_pull),
        RDMA(test_stop_prompt_mid_pull),
    };
    return cmocka_run_group_tests_name("rdma_matrix_peers", tests, NULL, NULL);
}
