/* cancel_fx.c - the fixture of the cancel tests (cancel_fx.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cancel_fx.h"
#include "llk_test.h"
#include "base/clock.h"

/* ---- the owner process ---------------------------------------------------- */

static void child_main(const char *transport, const char *ip, uint8_t *rmem, int port_wr,
                       int hold_rd)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    char listen[80];
    snprintf(listen, sizeof listen, "%s:0", ip);
    const llmlink_option_t o[] = {{"llm.listenIpInfo", listen},
                                  {"llm.SyncKvCacheWaitTime", "5000"},
                                  {"llmlink.Transport", transport},
                                  {"llmlink.LivenessIntervalMs", "20000"}};
    llmlink_t *p = NULL;
    uint16_t port = 0;
    if (llmlink_create(&p, LLMLINK_ROLE_PROMPT, CFX_PROMPT_ID) || llmlink_init(p, o, 4) ||
        llmlink_get_listen_port(p, 0, &port))
        _exit(2);
    uint64_t addrs[CFX_NT];
    for (unsigned t = 0; t < CFX_NT; t++)
        addrs[t] = (uint64_t)(uintptr_t)(rmem + t * CFX_TENSOR_BYTES);
    llmlink_cache_desc_t d = {.num_tensors = CFX_NT, .data_type = LLMLINK_DT_UINT8,
                              .placement = LLMLINK_PLACEMENT_HOST, .num_dims = 2,
                              .shape = {CFX_NB, CFX_BS}};
    llmlink_cache_key_t key = {.type = LLMLINK_KEY_BLOCKS, .cluster_id = CFX_PROMPT_ID};
    int64_t id;
    if (llmlink_register_blocks_cache(p, &d, addrs, CFX_NT, &key, &id))
        _exit(3);
    if (write(port_wr, &port, sizeof port) != (ssize_t)sizeof port)
        _exit(4);
    char c;
    while (read(hold_rd, &c, 1) < 0 && errno == EINTR) /* until the test closes it */
        ;
    llmlink_destroy(p);
    _exit(0);
}

/* ---- fixture -------------------------------------------------------------- */

llmlink_status_t cfx_link_once(cfx_t *fx)
{
    llmlink_ip_info_t ip = {fx->ip, fx->port};
    llmlink_cluster_info_t c = {CFX_PROMPT_ID, LLMLINK_ROLE_PROMPT, NULL, 0, &ip, 1};
    llmlink_status_t cst[1] = {0};
    llmlink_status_t st = llmlink_link_clusters(fx->d, &c, 1, CFX_IO_MS, cst);
    return st == LLMLINK_SUCCESS ? cst[0] : st;
}

void cfx_relink(cfx_t *fx)
{
    int64_t until = llk_now_ms() + CFX_IO_MS;
    llmlink_status_t st;
    while ((st = cfx_link_once(fx)) != LLMLINK_SUCCESS && llk_now_ms() < until)
        poll(NULL, 0, 5);
    assert_status(st, LLMLINK_SUCCESS);
}

int cfx_setup(void **state, const char *transport)
{
    return cfx_setup_at(state, transport, "127.0.0.1");
}

int cfx_setup_at(void **state, const char *transport, const char *ip)
{
    cfx_t *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    *state = fx;
    fx->transport = transport;
    fx->ip = ip;
    fx->max_delay_us = CFX_MAX_DELAY_US;
    fx->port_rd = fx->hold_wr = -1;
    fx->rmem = mmap(NULL, CFX_CACHE_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                    -1, 0);
    fx->lmem = mmap(NULL, CFX_CACHE_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                    -1, 0);
    if (fx->rmem == MAP_FAILED || fx->lmem == MAP_FAILED)
        return -1;
    int pp[2], hp[2];
    if (pipe(pp))
        return -1;
    if (pipe(hp)) {
        close(pp[0]);
        close(pp[1]);
        return -1;
    }
    /* Before this process has an engine (no thread to lose in the fork). */
    fx->child = fork();
    if (fx->child == 0) {
        close(pp[0]);
        close(hp[1]);
        child_main(transport, ip, fx->rmem, pp[1], hp[0]);
    }
    close(pp[1]);
    close(hp[0]);
    fx->port_rd = pp[0];
    fx->hold_wr = hp[1];
    if (fx->child < 0)
        return -1;
    struct pollfd pf = {.fd = fx->port_rd, .events = POLLIN};
    if (poll(&pf, 1, CFX_IO_MS) != 1 || read(fx->port_rd, &fx->port, sizeof fx->port) != 2)
        return -1;
    const llmlink_option_t o[] = {{"llmlink.Transport", transport},
                                  {"llmlink.StreamsPerLink", "2"},
                                  {"llm.SyncKvCacheWaitTime", "5000"},
                                  {"llmlink.LivenessIntervalMs", "20000"}};
    if (llmlink_create(&fx->d, LLMLINK_ROLE_DECODER, CFX_DEC_ID) || llmlink_init(fx->d, o, 4))
        return -1;
    uint64_t addrs[CFX_NT];
    for (unsigned t = 0; t < CFX_NT; t++)
        addrs[t] = (uint64_t)(uintptr_t)(fx->lmem + t * CFX_TENSOR_BYTES);
    llmlink_cache_desc_t d = {.num_tensors = CFX_NT, .data_type = LLMLINK_DT_UINT8,
                              .placement = LLMLINK_PLACEMENT_HOST, .num_dims = 2,
                              .shape = {CFX_NB, CFX_BS}};
    if (llmlink_register_blocks_cache(fx->d, &d, addrs, CFX_NT, NULL, &fx->cache))
        return -1;
    if (cfx_link_once(fx) != LLMLINK_SUCCESS)
        return -1;
    const char *env = getenv("LLK_CANCEL_SEED");
    fx->seed = env ? (unsigned)strtoul(env, NULL, 0) : (unsigned)time(NULL) ^ (unsigned)getpid();
    print_message("cancel: %s seed %u (LLK_CANCEL_SEED replays it)\n", transport, fx->seed);
    return 0;
}

int cfx_teardown(void **state)
{
    cfx_t *fx = *state;
    if (!fx)
        return 0;
    if (fx->d)
        llmlink_destroy(fx->d);
    int rc = 0;
    if (fx->hold_wr >= 0)
        close(fx->hold_wr); /* the child destroys its engine and exits */
    if (fx->port_rd >= 0)
        close(fx->port_rd);
    if (fx->child > 0) {
        int st = 0;
        int64_t until = llk_now_ms() + CFX_IO_MS;
        pid_t r;
        while ((r = waitpid(fx->child, &st, WNOHANG)) == 0 && llk_now_ms() < until)
            poll(NULL, 0, 10);
        if (r == 0) {
            kill(fx->child, SIGKILL);
            waitpid(fx->child, &st, 0);
            rc = -1;
        }
    }
    if (fx->rmem != MAP_FAILED && fx->rmem)
        munmap(fx->rmem, CFX_CACHE_BYTES);
    if (fx->lmem != MAP_FAILED && fx->lmem)
        munmap(fx->lmem, CFX_CACHE_BYTES);
    free(fx);
    return rc;
}

/* ---- ranges and checksums --------------------------------------------------- */

uint8_t *cfx_range_at(uint8_t *mem, unsigned t, unsigned r)
{
    return mem + t * CFX_TENSOR_BYTES + (size_t)r * CFX_RANGE_BLOCKS * CFX_BS;
}

uint64_t cfx_range_sum(uint8_t *mem, unsigned r)
{
    uint64_t h = 1469598103934665603ull;
    for (unsigned t = 0; t < CFX_NT; t++) {
        const uint64_t *w = (const uint64_t *)(const void *)cfx_range_at(mem, t, r);
        for (size_t i = 0; i < CFX_RANGE_BLOCKS * CFX_BS / 8; i++)
            h = (h ^ w[i]) * 1099511628211ull + (i & 0xff);
    }
    return h;
}

void cfx_fill_range(uint8_t *mem, unsigned r, uint8_t v)
{
    for (unsigned t = 0; t < CFX_NT; t++)
        memset(cfx_range_at(mem, t, r), v + (uint8_t)t, CFX_RANGE_BLOCKS * CFX_BS);
}

bool cfx_range_is(uint8_t *mem, unsigned r, uint8_t v)
{
    for (unsigned t = 0; t < CFX_NT; t++) {
        const uint8_t *p = cfx_range_at(mem, t, r);
        for (size_t i = 0; i < CFX_RANGE_BLOCKS * CFX_BS; i++)
            if (p[i] != (uint8_t)(v + t))
                return false;
    }
    return true;
}

void cfx_watch(cfx_t *fx, unsigned r, uint64_t sum, int64_t fenced, int round)
{
    fx->w[r] = (cfx_watch_t){.on = true, .sum = sum, .until = fenced + CFX_QUIET_MS,
                             .round = round};
}

void cfx_check_watches(cfx_t *fx, bool push)
{
    uint8_t *dst = push ? fx->rmem : fx->lmem;
    int64_t now = llk_now_ms();
    for (unsigned r = 0; r < CFX_NRANGES; r++) {
        cfx_watch_t *w = &fx->w[r];
        if (!w->on)
            continue;
        if (cfx_range_sum(dst, r) != w->sum)
            fail_msg("%s %s: range %u changed %lld ms after the cancel of round %d returned "
                     "(seed %u)", fx->transport, push ? "push" : "pull", r,
                     (long long)(now - (w->until - CFX_QUIET_MS)), w->round, fx->seed);
        if (now >= w->until)
            w->on = false;
    }
}

unsigned cfx_free_range(cfx_t *fx, bool push, unsigned hint)
{
    for (int guard = 0; guard < 10000; guard++) {
        for (unsigned k = 0; k < CFX_NRANGES; k++) {
            unsigned r = (hint + k) % CFX_NRANGES;
            if (!fx->w[r].on)
                return r;
        }
        poll(NULL, 0, 2);
        cfx_check_watches(fx, push);
    }
    fail_msg("no range came out of its window");
    return 0;
}

void cfx_drain_watches(cfx_t *fx, bool push)
{
    for (int guard = 0; guard < 10000; guard++) {
        cfx_check_watches(fx, push);
        bool any = false;
        for (unsigned r = 0; r < CFX_NRANGES; r++)
            any |= fx->w[r].on;
        if (!any)
            return;
        poll(NULL, 0, 5);
    }
    fail_msg("windows did not end");
}

unsigned cfx_delay_us(cfx_t *fx)
{
    return rand_r(&fx->seed) % 8 == 0 ? 0 : rand_r(&fx->seed) % fx->max_delay_us;
}

int cfx_rounds(int full)
{
    /* Slower by 5-15x under a sanitizer; nothing is skipped. */
    return getenv("LLMLINK_SANITIZER") ? full / 5 : full;
}
