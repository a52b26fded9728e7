/* test_rdma_matrix_data.c - the data-path cases of the transfer matrix
 * over RDMA (random block maps, whole and partial cache entries, pushes,
 * layer ranges, a cache entry seen as blocks, owner refusals); see
 * rdma_matrix.h. */
#include "rdma_matrix.h"

int main(void)
{
    rdma_matrix_env();
    const struct CMUnitTest tests[] = {
        RDMA(test_pull_blocks_random_maps),
        RDMA(test_pull_cache_whole_and_partial),
        RDMA(test_push_blocks_and_cache),
        RDMA(test_layer_ranges),
        RDMA(test_pull_blocks_from_cache_entry),
        RDMA(test_refusals_by_owner),
    };
    return cmocka_run_group_tests_name("rdma_matrix_data", tests, NULL, NULL);
}
