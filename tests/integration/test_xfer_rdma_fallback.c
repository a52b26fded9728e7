/*
 * test_rdma_fallback.c - the RDMA transport where RDMA cannot be used,
 * which is every host outside the soft-RoCE VM: llmlink.Transport=auto
 * falls back to tcp/shm and moves every byte; llmlink.Transport=rdma (on
 * either side) fails the link with LLMLINK_LINK_FAILED and a message that
 * says why. Two situations, each in its own process (libibverbs is loaded
 * once per process):
 *   - no libibverbs at all (LLMLINK_IBVERBS names a file that does not
 *     exist), as on a host without rdma-core;
 *   - whatever this host has: no library, or libibverbs without any RDMA
 *     device (CI with libibverbs-dev installed and no kernel RDMA).
 * Plus the new option keys (llmlink.RdmaDevice, RdmaPort, RdmaGidIndex,
 * RdmaMtu): accepted in range, refused out of it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kvfill.h"
#include "llk_test.h"
#include "llmlink.h"

#define NT 4
#define NB 16
#define BS 4096u

static llmlink_t *engine(llmlink_role_t role, uint64_t id, const char *transport)
{
    llmlink_t *e = NULL;
    if (llmlink_create(&e, role, id) != LLMLINK_SUCCESS)
        return NULL;
    llmlink_option_t o[3] = {{"llmlink.Transport", transport},
                             {"llm.SyncKvCacheWaitTime", "10000"},
                             {"llm.listenIpInfo", "127.0.0.1:0"}};
    if (llmlink_init(e, o, role == LLMLINK_ROLE_PROMPT ? 3 : 2) != LLMLINK_SUCCESS) {
        llmlink_destroy(e);
        return NULL;
    }
    return e;
}

/* Links d to p; the status, and the message in msg. */
static llmlink_status_t link_pd(llmlink_t *d, llmlink_t *p, uint64_t pid, char *msg, size_t cap)
{
    uint16_t port = 0;
    llmlink_get_listen_port(p, 0, &port);
    llmlink_ip_info_t r = {"127.0.0.1", port};
    llmlink_cluster_info_t ci = {.remote_cluster_id = pid, .remote_ip_infos = &r,
                                 .num_remote_ip_infos = 1};
    llmlink_status_t st[1] = {0};
    llmlink_status_t rc = llmlink_link_clusters(d, &ci, 1, 10000, st);
    snprintf(msg, cap, "%s", llmlink_last_error());
    return rc;
}

/* In the child: 0, or 1 after printing what failed. */
#define CHILD_CHECK(cond, ...)                                                                \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "child check failed at line %d: %s: ", __LINE__, #cond);          \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fprintf(stderr, "\n");                                                             \
            return 1;                                                                          \
        }                                                                                      \
    } while (0)

/* auto on both sides: a pull and a push move every byte (over tcp/shm). */
static int auto_moves_data(void)
{
    llmlink_t *p = engine(LLMLINK_ROLE_PROMPT, 101, "auto");
    llmlink_t *d = engine(LLMLINK_ROLE_DECODER, 102, "auto");
    CHILD_CHECK(p && d, "%s", llmlink_last_error());
    char msg[512];
    CHILD_CHECK(link_pd(d, p, 101, msg, sizeof msg) == LLMLINK_SUCCESS, "link: %s", msg);
    llmlink_cache_desc_t desc = {.num_tensors = NT, .data_type = LLMLINK_DT_UINT8,
                                 .num_dims = 2, .shape = {NB, BS}};
    static uint8_t pm[NT][NB * BS], dm[NT][NB * BS];
    uint64_t pa[NT], da[NT];
    for (int t = 0; t < NT; t++) {
        kvfill_fill(pm[t], sizeof pm[t], 7, (uint64_t)t, 0);
        kvfill_fill(dm[t], sizeof dm[t], 8, (uint64_t)t, 0);
        pa[t] = (uint64_t)(uintptr_t)pm[t];
        da[t] = (uint64_t)(uintptr_t)dm[t];
    }
    llmlink_cache_key_t k = {.type = LLMLINK_KEY_BLOCKS, .cluster_id = 101, .model_id = 3};
    int64_t pc = 0, dc = 0;
    CHILD_CHECK(llmlink_register_blocks_cache(p, &desc, pa, NT, &k, &pc) == LLMLINK_SUCCESS,
                "%s", llmlink_last_error());
    CHILD_CHECK(llmlink_register_blocks_cache(d, &desc, da, NT, NULL, &dc) == LLMLINK_SUCCESS,
                "%s", llmlink_last_error());
    uint64_t sb[3] = {5, 6, 15}, db[3] = {0, 9, 1};
    CHILD_CHECK(llmlink_pull_blocks(d, &k, dc, sb, 3, db, 3, NULL) == LLMLINK_SUCCESS, "pull: %s",
                llmlink_last_error());
    for (int t = 0; t < NT; t++)
        for (int i = 0; i < 3; i++)
            CHILD_CHECK(kvfill_check(dm[t] + db[i] * BS, BS, 7, (uint64_t)t, sb[i] * BS) ==
                            KVFILL_OK,
                        "tensor %d block %llu", t, (unsigned long long)db[i]);
    uint64_t ps[1] = {9}, pd[1] = {2};
    CHILD_CHECK(llmlink_push_blocks(d, &k, dc, ps, 1, pd, 1, NULL) == LLMLINK_SUCCESS, "push: %s",
                llmlink_last_error());
    for (int t = 0; t < NT; t++)
        CHILD_CHECK(!memcmp(pm[t] + 2 * BS, dm[t] + 9 * BS, BS), "pushed tensor %d", t);
    llmlink_xfer_stats_t s = {.version = LLMLINK_XFER_STATS_VERSION};
    llmlink_get_xfer_stats(d, &s);
    CHILD_CHECK(s.transfers == 2 && s.tcp_requests + s.shm_requests >= 2,
                "transfers %llu tcp %llu shm %llu", (unsigned long long)s.transfers,
                (unsigned long long)s.tcp_requests, (unsigned long long)s.shm_requests);
    llmlink_unregister_cache(d, dc);
    llmlink_unregister_cache(p, pc);
    llmlink_destroy(d);
    llmlink_destroy(p);
    return 0;
}

/* One of the '|'-separated alternatives of alts is in msg. */
static bool mentions(const char *msg, const char *alts)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", alts);
    char *save = NULL;
    for (char *a = strtok_r(buf, "|", &save); a; a = strtok_r(NULL, "|", &save))
        if (strstr(msg, a))
            return true;
    return false;
}

/* rdma forced by the decoder, by the prompt, or by both: LINK_FAILED and a
 * message naming rdma and (why_text, alternatives split by '|') why; the
 * engines stay usable. */
static int forced_rdma_fails(const char *why_text)
{
    const char *modes[3][2] = {{"auto", "rdma"}, {"rdma", "auto"}, {"rdma", "rdma"}};
    for (int m = 0; m < 3; m++) {
        llmlink_t *p = engine(LLMLINK_ROLE_PROMPT, 201, modes[m][0]);
        llmlink_t *d = engine(LLMLINK_ROLE_DECODER, 202, modes[m][1]);
        CHILD_CHECK(p && d, "init with Transport=rdma must succeed: %s", llmlink_last_error());
        char msg[512];
        llmlink_status_t st = link_pd(d, p, 201, msg, sizeof msg);
        CHILD_CHECK(st == LLMLINK_LINK_FAILED, "P %s, D %s: link gave %s (%s)", modes[m][0],
                    modes[m][1], llmlink_status_name(st), msg);
        CHILD_CHECK(strstr(msg, "llmlink.Transport=rdma") != NULL, "message: %s", msg);
        CHILD_CHECK(mentions(msg, why_text), "message lacks '%s': %s", why_text, msg);
        CHILD_CHECK(llmlink_check_link_status(d, 201) == LLMLINK_NOT_YET_LINK,
                    "a failed link must not stay");
        llmlink_destroy(d);
        llmlink_destroy(p);
    }
    /* rdma against tcp: refused whatever the devices */
    llmlink_t *p = engine(LLMLINK_ROLE_PROMPT, 301, "tcp");
    llmlink_t *d = engine(LLMLINK_ROLE_DECODER, 302, "rdma");
    CHILD_CHECK(p && d, "%s", llmlink_last_error());
    char msg[512];
    CHILD_CHECK(link_pd(d, p, 301, msg, sizeof msg) == LLMLINK_LINK_FAILED, "rdma vs tcp: %s", msg);
    CHILD_CHECK(strstr(msg, "rdma") != NULL, "message: %s", msg);
    llmlink_destroy(d);
    llmlink_destroy(p);
    return 0;
}

/* Runs fn in a child (with LLMLINK_IBVERBS=ibverbs unless NULL), bounded. */
static void in_child(int (*fn)(const char *), const char *ibverbs, const char *why_text)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (ibverbs)
            setenv("LLMLINK_IBVERBS", ibverbs, 1);
        else
            unsetenv("LLMLINK_IBVERBS");
        alarm(60);
        _exit(fn(why_text));
    }
    int status = 0;
    for (int i = 0; i < 1200; i++) { /* 60 s */
        if (waitpid(pid, &status, WNOHANG) == pid)
            break;
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
        if (i == 1199) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fail_msg("child timed out");
        }
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("child failed (status 0x%x): see its message above", status);
}

static int run_auto(const char *unused)
{
    (void)unused;
    return auto_moves_data();
}

static void test_no_library_auto_uses_tcp(void **state)
{
    (void)state;
    in_child(run_auto, "/nonexistent/libibverbs.so.1", NULL);
}

static void test_no_library_rdma_fails(void **state)
{
    (void)state;
    /* the dlopen failure is in the message (or, built without the verbs
     * headers, that) */
    in_child(forced_rdma_fails, "/nonexistent/libibverbs.so.1",
             "cannot load /nonexistent/libibverbs.so.1|built without libibverbs headers");
}

/* This host's stack as it is: no library, or one without devices. Either
 * way RDMA is not usable and the message says RDMA cannot be used. */
static void test_host_stack_auto_uses_tcp(void **state)
{
    (void)state;
    in_child(run_auto, NULL, NULL);
}

static void test_host_stack_rdma_fails(void **state)
{
    (void)state;
    if (access("/dev/infiniband/uverbs0", F_OK) == 0)
        skip(); /* a real device: this host can do RDMA (tests/rdma cover it) */
    in_child(forced_rdma_fails, NULL, "RDMA cannot be used");
}

static void test_rdma_options(void **state)
{
    (void)state;
    struct {
        const char *key, *value;
        llmlink_status_t want;
    } cases[] = {
        {"llmlink.RdmaDevice", "mlx5_0", LLMLINK_SUCCESS},
        {"llmlink.RdmaDevice", "", LLMLINK_SUCCESS},
        {"llmlink.RdmaDevice", "bad name", LLMLINK_PARAM_INVALID},
        {"llmlink.RdmaDevice", "a123456789012345678901234567890123456789012345678901234567890123",
         LLMLINK_PARAM_INVALID},
        {"llmlink.RdmaPort", "0", LLMLINK_SUCCESS},
        {"llmlink.RdmaPort", "2", LLMLINK_SUCCESS},
        {"llmlink.RdmaPort", "256", LLMLINK_PARAM_INVALID},
        {"llmlink.RdmaGidIndex", "-1", LLMLINK_SUCCESS},
        {"llmlink.RdmaGidIndex", "3", LLMLINK_SUCCESS},
        {"llmlink.RdmaGidIndex", "-2", LLMLINK_PARAM_INVALID},
        {"llmlink.RdmaGidIndex", "256", LLMLINK_PARAM_INVALID},
        {"llmlink.RdmaMtu", "0", LLMLINK_SUCCESS},
        {"llmlink.RdmaMtu", "1024", LLMLINK_SUCCESS},
        {"llmlink.RdmaMtu", "4096", LLMLINK_SUCCESS},
        {"llmlink.RdmaMtu", "1500", LLMLINK_PARAM_INVALID},
        {"llmlink.RdmaMtu", "8192", LLMLINK_PARAM_INVALID},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        llmlink_t *e = NULL;
        assert_status(llmlink_create(&e, LLMLINK_ROLE_DECODER, 1), LLMLINK_SUCCESS);
        llmlink_option_t o[2] = {{"llmlink.Transport", "tcp"}, {cases[i].key, cases[i].value}};
        llmlink_status_t st = llmlink_init(e, o, 2);
        if (st != cases[i].want)
            fail_msg("%s=%s: %s, expected %s (%s)", cases[i].key, cases[i].value,
                     llmlink_status_name(st), llmlink_status_name(cases[i].want),
                     llmlink_last_error());
        if (st != LLMLINK_SUCCESS)
            assert_non_null(strstr(llmlink_last_error(), cases[i].key));
        llmlink_destroy(e);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_library_auto_uses_tcp),
        cmocka_unit_test(test_no_library_rdma_fails),
        cmocka_unit_test(test_host_stack_auto_uses_tcp),
        cmocka_unit_test(test_host_stack_rdma_fails),
        cmocka_unit_test(test_rdma_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
