/* test_rdma_repair.c - the second half of test_rdma_failover.c (see
 * there): a rail lost under a pull is re-established without relinking
 * once its port is ACTIVE again (XRDMA_RAIL_RESET), and a call with no
 * rail left fails naming the rails' real reasons, then a relink works. */
#define RDMA_FAILOVER_PART2 1
#include "test_rdma_failover.c"
