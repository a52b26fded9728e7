/*
 * test_rdma_rails.c - two rails between two processes: P (llmlink-node)
 * listens on rxe0's and rxe1's addresses, D links with local ip infos on
 * both (node syntax "<id>@<ep0>,<ep1>/<ip0>,<ip1>"), so the link has rail 0
 * on rxe0 (MTU 1024) and rail 1 on rxe1 (MTU 4096); a pull of scattered
 * 256 KiB blocks (one slice each, spread over both rails) and a push, every byte
 * verified, every request over RDMA. A decoder with one local ip info on
 * rxe1 only gets one rail there and moves the same bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvfill.h"
#include "llmlink.h"
#include "proc.h"

#define REPLY_MS 60000
#define cmd(p, ...) proc_must_reply(proc_reply((p), REPLY_MS, __VA_ARGS__))
#define expect(p, want, ...) ((void)proc_must(proc_expect((p), REPLY_MS, (want), __VA_ARGS__)))

static const char *env_or(const char *name, const char *dflt)
{
    const char *s = getenv(name);
    return s && *s ? s : dflt;
}

/* RC QPs the kernel holds on device dev (rdma resource show qp). */
static int rc_qps_on(const char *dev)
{
    char line[1024], tag[64];
    snprintf(tag, sizeof tag, "link %s/", dev);
    FILE *f = popen("rdma resource show qp 2>/dev/null", "r");
    if (!f)
        return -1;
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, tag) && strstr(line, " RC "))
            n++;
    return pclose(f) == 0 ? n : -1;
}

typedef struct fx {
    proc_t procs[4];
    size_t n;
} fx_t;

static int setup(void **state)
{
    *state = calloc(1, sizeof(fx_t));
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    int rc = proc_stop_all(f->procs, f->n, 30000);
    free(f);
    return rc;
}

static long long reg(proc_t *p, const char *key, uint64_t seed)
{
    const char *got = cmd(p, "reg blocks 8 fp16 16,1024,128%s seed=%llu", key,
                          (unsigned long long)seed);
    long long id;
    if (sscanf(got, "REG LLM_SUCCESS %lld", &id) != 1)
        fail_msg("%s: reg answered '%s'", p->label, got);
    return id;
}

static void check_rdma_only(proc_t *d, unsigned long long want)
{
    proc_xstats_t s;
    if (proc_node_xstats(d, &s, REPLY_MS) != 0)
        fail_msg("%s", proc_last_error());
    print_message("  %s: transfers=%llu rdma=%llu tcp=%llu shm=%llu\n", d->label, s.transfers,
                  s.rdma, s.tcp, s.shm);
    assert_true(s.rdma >= want);
    assert_int_equal(s.tcp, 0);
    assert_int_equal(s.shm, 0);
}

static void test_two_rails_two_processes(void **state)
{
    fx_t *f = *state;
    const char *ip0 = env_or("LLMLINK_RDMA_IP0", "10.10.0.1");
    const char *ip1 = env_or("LLMLINK_RDMA_IP1", "10.10.1.1");
    uint16_t p0 = proc_unused_port(ip0), p1 = proc_unused_port(ip1);
    assert_true(p0 && p1);
    char listen[128];
    snprintf(listen, sizeof listen, "%s:%u;%s:%u", ip0, p0, ip1, p1);
    static const char *const opts[] = {"llmlink.Transport=rdma", "llm.SyncKvCacheWaitTime=30000",
                                       NULL};
    proc_t *p = proc_node_add(f->procs, &f->n, 4, "prompt", 1, listen, opts, NULL, NULL, REPLY_MS);
    proc_t *d = proc_node_add(f->procs, &f->n, 4, "decoder", 101, NULL, opts, NULL, NULL, REPLY_MS);
    proc_t *d1 = proc_node_add(f->procs, &f->n, 4, "decoder", 102, NULL, opts, NULL, NULL,
                               REPLY_MS);
    if (!p || !d || !d1)
        fail_msg("%s", proc_last_error());
    /* 8 tensors x 16 blocks of 256 KiB = 32 MiB per cache */
    uint64_t sp = kvfill_seed(1, 1), sd = kvfill_seed(101, 1), sd1 = kvfill_seed(102, 1);
    long long pc = reg(p, " key=blocks:1:7", sp);
    long long dc = reg(d, "", sd);
    long long dc1 = reg(d1, "", sd1);

    const char *dev0 = env_or("LLMLINK_RDMA_DEV0", "rxe0"), *dev1 = env_or("LLMLINK_RDMA_DEV1", "rxe1");
    int q0 = rc_qps_on(dev0), q1 = rc_qps_on(dev1);
    expect(d, "LINK LLM_SUCCESS LLM_SUCCESS", "link 20000 1@%s:%u,%s:%u/%s,%s", ip0, p0, ip1,
           p1, ip0, ip1);
    /* a rail per device, a QP on each end of it */
    print_message("  RC QPs: %s %d -> %d, %s %d -> %d\n", dev0, q0, rc_qps_on(dev0), dev1, q1,
                  rc_qps_on(dev1));
    assert_int_equal(rc_qps_on(dev0), q0 + 2);
    assert_int_equal(rc_qps_on(dev1), q1 + 2);
    const char *src = "0-2,5,9,11-15", *dst = "15,3-4,0,8,1,10,6,7,12";
    expect(d, "PULL LLM_SUCCESS", "pullblocks blocks:1:7 %lld %s %s", dc, src, dst);
    const char *v = cmd(d, "verifyblocks %lld %llu %llu %s %s", dc, (unsigned long long)sd,
                        (unsigned long long)sp, src, dst);
    if (strcmp(v, "VERIFY OK"))
        fail_msg("%s: %s", d->label, v);
    /* push D's block 15 (P's block 0 now) into P's block 4 */
    expect(d, "PUSH LLM_SUCCESS", "pushblocks blocks:1:7 %lld 15 4", dc);
    v = cmd(p, "verifyblocks %lld %llu %llu 0 4", pc, (unsigned long long)sp,
            (unsigned long long)sp);
    if (strcmp(v, "VERIFY OK"))
        fail_msg("%s: %s", p->label, v);
    check_rdma_only(d, 2);

    /* one rail, on rxe1 only: every block, P's block 4 being its block 0 */
    expect(d1, "LINK LLM_SUCCESS LLM_SUCCESS", "link 20000 1@%s:%u/%s", ip1, p1, ip1);
    expect(d1, "PULL LLM_SUCCESS", "pullblocks blocks:1:7 %lld 0-15 0-15", dc1);
    v = cmd(d1, "verifyblocks %lld %llu %llu 0-3,0,5-15 0-15", dc1, (unsigned long long)sd1,
            (unsigned long long)sp);
    if (strcmp(v, "VERIFY OK"))
        fail_msg("%s: %s", d1->label, v);
    check_rdma_only(d1, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_two_rails_two_processes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
