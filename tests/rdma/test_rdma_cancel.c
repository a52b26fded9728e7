/* test_rdma_cancel.c - test_task_cancel.c's rounds over RDMA (soft-RoCE VM,
 * tests/rdma/README.md): a cancel with work posted closes the link
 * (CANCELLED_LINK_CLOSED: every QP to the error state, completions reaped),
 * one before any work was posted ends its grant unused (CANCELLED); either
 * way the destination stays unchanged for 200 ms after the cancel returns,
 * and a relink works. The owner listens on LLMLINK_RDMA_IP0 (rxe0). */
#define LLK_CANCEL_RDMA 1
#define ROUNDS 60 /* soft-RoCE is slow; relinks cost */
#include "../integration/test_task_cancel.c"

static const char *ip0(void)
{
    const char *s = getenv("LLMLINK_RDMA_IP0");
    return s && *s ? s : "10.10.0.1";
}

/* soft-RoCE under emulation takes milliseconds to grant: later cancels too,
 * so that some find RDMA work posted. */
#define RDMA_MAX_DELAY_US 40000

static int setup_rdma(void **state)
{
    int rc = cfx_setup_at(state, "rdma", ip0());
    if (rc == 0)
        ((cfx_t *)*state)->max_delay_us = RDMA_MAX_DELAY_US;
    return rc;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pull, setup_rdma, cfx_teardown),
        cmocka_unit_test_setup_teardown(test_push, setup_rdma, cfx_teardown),
    };
    return cmocka_run_group_tests_name("rdma_cancel", tests, NULL, NULL);
}
