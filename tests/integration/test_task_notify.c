/*
 * test_task_notify.c - a task's attached notification
 * (llmlink_task_options_t.notify_data) between two processes: the peer
 * never receives it before the task's bytes are in place, exactly one per
 * successful task and none for a refused or cancelled one, a full queue
 * ends the task NOTIFY_QUEUE_FULL after its bytes moved, and attached
 * notifications keep the link's order.
 *
 * The PROMPT engine runs in a fork()ed child (its own engine, threads and
 * sockets); the DECODER is this process. The decoder's cache lives in a
 * MAP_SHARED mapping made before the fork, so that the child can look at
 * the decoder's memory too: the moment llmlink_get_notifies hands it a
 * notification (woken by the engine fd), the child checks every byte the
 * task moved - in its own cache for a push, in the decoder's for a pull -
 * and reports "N <kind> <round> OK|BAD <why>" on a pipe. Each message names
 * its round and its (src, dst) block pairs. The child has PR_SET_PDEATHSIG
 * and an alarm() backstop; the teardown kills and reaps it. Every wait is
 * bounded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvfill.h"
#include "llmlink.h"
#include "llk_test.h"
#include "proc.h"
#include "task_fx.h"

#define P_ID 7301u
#define D_ID 7302u
#define NT 2
#define BLOCK 4096   /* bytes per block and tensor */
#define SRC_BLOCKS 32 /* [0, 32) of each cache: sources */
#define K 2          /* blocks per task */
#define ROUNDS 200
#define BLOCKS (SRC_BLOCKS + ROUNDS * K) /* [32, ..): round r's destinations */
#define WINDOW 8     /* tasks in flight at once */
#define CHILD_LIFE_S 300
#define P_SEED kvfill_seed(P_ID, 1)
#define D_SEED kvfill_seed(D_ID, 1)

static int wait_ms(void)
{
    return proc_sanitized() ? 120000 : 30000;
}

typedef struct fx {
    const char *transport;
    uint8_t *shared;     /* the decoder's cache: NT tensors of BLOCKS blocks */
    pid_t child;
    int to_child, from_child;
    llmlink_t *d;
    int64_t dcache;
    kvfill_rng_t rng;
} fx_t;

static uint8_t *tensor_mem(uint8_t *shared, uint32_t t)
{
    return shared + (size_t)t * BLOCKS * BLOCK;
}

static uint64_t dst_block(int round, int j)
{
    return SRC_BLOCKS + (uint64_t)round * K + (uint64_t)j;
}

/* ---- pipes --------------------------------------------------------------- */

static int read_line(int fd, char *buf, size_t cap, int timeout_ms)
{
    size_t n = 0;
    int64_t deadline = proc_now_ms() + timeout_ms;
    while (n + 1 < cap) {
        int64_t left = deadline - proc_now_ms();
        if (left <= 0)
            return -1;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)left) <= 0)
            continue;
        ssize_t r = read(fd, buf + n, 1);
        if (r <= 0)
            return -1;
        if (buf[n] == '\n') {
            buf[n] = 0;
            return 0;
        }
        n++;
    }
    return -1;
}

static void write_line(int fd, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0 || n > (int)sizeof buf - 2)
        n = (int)sizeof buf - 2;
    buf[n++] = '\n';
    ssize_t w = write(fd, buf, (size_t)n);
    (void)w;
}

/* ---- the child (PROMPT) -------------------------------------------------- */

typedef struct child {
    llmlink_t *e;
    tfx_cache_t own;  /* the prompt's cache */
    tfx_cache_t peer; /* a view of the decoder's (the shared mapping) */
    int out;
} child_t;

/* The engine's threads write our cache for the peer's pushes in an order
 * that messages through the other process set, which ThreadSanitizer
 * cannot see; a call that takes the engine's registry lock (its threads
 * take it around every request) before and after our reads makes that
 * order visible to it (as llmlink-node's sync_with_engine). It waits for
 * nothing, so the check still runs the moment a notification is fetched. */
static void sync_with_engine(llmlink_t *e)
{
    llmlink_xfer_stats_t s = {.version = LLMLINK_XFER_STATS_VERSION};
    (void)llmlink_get_xfer_stats(e, &s);
}

/* "<kind> <round> <n> s0 d0 s1 d1 ...": checks that every pair landed -
 * push: the decoder's src block in our dst block; pull: our src block in
 * the decoder's dst block. 0, or -1 with why. */
static int check_pairs(child_t *ch, const char *msg, char *kind, int *round, char *why,
                       size_t cap)
{
    int n = 0, off = 0;
    if (sscanf(msg, "%7s %d %d%n", kind, round, &n, &off) != 3 || n < 0 || n > 64) {
        snprintf(why, cap, "unparsable '%s'", msg);
        return -1;
    }
    if (strcmp(kind, "plain") == 0)
        return 0;
    bool push = strcmp(kind, "push") == 0;
    const char *p = msg + off;
    for (int i = 0; i < n; i++) {
        unsigned long long s, d;
        int used = 0;
        if (sscanf(p, " %llu %llu%n", &s, &d, &used) != 2 || s >= BLOCKS || d >= BLOCKS) {
            snprintf(why, cap, "unparsable pair %d of '%s'", i, msg);
            return -1;
        }
        p += used;
        const tfx_cache_t *c = push ? &ch->own : &ch->peer;
        sync_with_engine(ch->e);
        bool ok = tfx_block_holds(c, d, push ? D_SEED : P_SEED, s, why, cap);
        sync_with_engine(ch->e);
        if (!ok)
            return -1;
    }
    return 0;
}

/* Takes what waits and reports each: checked the moment it is fetched. */
static void child_fetch(child_t *ch, bool report_all)
{
    static llmlink_notification_t got[16];
    size_t n = 0;
    if (llmlink_get_notifies(ch->e, got, 16, &n) != LLMLINK_SUCCESS) {
        write_line(ch->out, "N fetch 0 BAD %s", llmlink_last_error());
        return;
    }
    for (size_t i = 0; i < n; i++) {
        char msg[LLMLINK_MAX_NOTIFY_BYTES + 1], kind[8] = "?", why[256] = "";
        memcpy(msg, got[i].data, got[i].len);
        msg[got[i].len < sizeof msg ? got[i].len : sizeof msg - 1] = 0;
        int round = -1;
        int rc = got[i].cluster_id == D_ID ? check_pairs(ch, msg, kind, &round, why, sizeof why)
                                           : (snprintf(why, sizeof why, "from cluster %llu",
                                                       (unsigned long long)got[i].cluster_id),
                                              -1);
        if (rc == 0)
            write_line(ch->out, "N %s %d OK", kind, round);
        else
            write_line(ch->out, "N %s %d BAD %s", kind, round, why);
    }
    if (report_all)
        write_line(ch->out, "FETCHED %zu", n);
}

static void child_main(int in, int out, uint8_t *shared, const char *transport, const char *depth,
                       bool autofetch)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    alarm(CHILD_LIFE_S);
    char topt[64], dopt[64];
    snprintf(topt, sizeof topt, "llmlink.Transport=%s", transport);
    snprintf(dopt, sizeof dopt, "llmlink.NotifyQueueDepth=%s", depth);
    const char *opts[] = {"llm.SyncKvCacheWaitTime=60000", topt, dopt, NULL};
    child_t ch = {.out = out};
    ch.e = tfx_engine(LLMLINK_ROLE_PROMPT, P_ID, opts);
    llmlink_cache_key_t key = tfx_blocks_key(P_ID, 1);
    if (!ch.e || tfx_cache(ch.e, &ch.own, true, NT, BLOCKS, BLOCK, P_SEED, &key, 1, NULL) != 0) {
        write_line(out, "FAIL init: %s", llmlink_last_error());
        _exit(2);
    }
    ch.peer.ntensors = NT;
    ch.peer.units = BLOCKS;
    ch.peer.unit_bytes = BLOCK;
    for (uint32_t t = 0; t < NT; t++)
        ch.peer.mem[t] = tensor_mem(shared, t);
    int efd = -1;
    if (llmlink_get_event_fd(ch.e, &efd) != LLMLINK_SUCCESS)
        _exit(2);
    uint16_t port = 0; /* the engine picked it (127.0.0.1:0) */
    if (llmlink_get_listen_port(ch.e, 0, &port) != LLMLINK_SUCCESS)
        _exit(2);
    write_line(out, "PORT %u", port);
    for (;;) {
        struct pollfd p[2] = {{.fd = in, .events = POLLIN}, {.fd = efd, .events = POLLIN}};
        if (poll(p, autofetch ? 2 : 1, 1000) < 0)
            continue;
        if (autofetch && (p[1].revents & POLLIN))
            child_fetch(&ch, false);
        if (!(p[0].revents & (POLLIN | POLLHUP)))
            continue;
        char line[1024];
        if (read_line(in, line, sizeof line, 5000) != 0)
            break;
        if (strcmp(line, "quit") == 0)
            break;
        if (strcmp(line, "fetch") == 0) {
            child_fetch(&ch, true);
        } else if (strncmp(line, "check ", 6) == 0) {
            char kind[8], why[256] = "";
            int round;
            if (check_pairs(&ch, line + 6, kind, &round, why, sizeof why) == 0)
                write_line(out, "CHECK OK");
            else
                write_line(out, "CHECK BAD %s", why);
        }
    }
    tfx_cache_free(ch.e, &ch.own);
    llmlink_destroy(ch.e);
    _exit(0);
}

/* ---- fixture ------------------------------------------------------------- */

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    f->transport = *state ? (const char *)*state : "tcp";
    f->to_child = f->from_child = -1;
    f->rng.s = 0x7a5c0de;
    size_t len = (size_t)NT * BLOCKS * BLOCK;
    f->shared = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (f->shared == MAP_FAILED) {
        free(f);
        return -1;
    }
    for (uint32_t t = 0; t < NT; t++)
        kvfill_fill(tensor_mem(f->shared, t), (size_t)BLOCKS * BLOCK, D_SEED, t, 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    if (f->child > 0) {
        kill(f->child, SIGKILL);
        waitpid(f->child, NULL, 0);
    }
    if (f->d) {
        llmlink_finalize(f->d);
        if (f->dcache > 0)
            llmlink_unregister_cache(f->d, f->dcache);
        llmlink_destroy(f->d);
    }
    if (f->to_child >= 0)
        close(f->to_child);
    if (f->from_child >= 0)
        close(f->from_child);
    munmap(f->shared, (size_t)NT * BLOCKS * BLOCK);
    free(f);
    return 0;
}

/* Forks the prompt child, then makes the decoder (with extra options),
 * registers the shared cache and links. */
static void start(fx_t *f, const char *depth, bool autofetch, const char *extra)
{
    int a[2], b[2];
    assert_int_equal(pipe(a), 0);
    assert_int_equal(pipe(b), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(a[1]);
        close(b[0]);
        child_main(a[0], b[1], f->shared, f->transport, depth, autofetch);
        _exit(1);
    }
    close(a[0]);
    close(b[1]);
    f->child = pid;
    f->to_child = a[1];
    f->from_child = b[0];
    char line[512];
    unsigned port = 0;
    assert_int_equal(read_line(f->from_child, line, sizeof line, wait_ms()), 0);
    if (sscanf(line, "PORT %u", &port) != 1)
        fail_msg("child: %s", line);

    char topt[64];
    snprintf(topt, sizeof topt, "llmlink.Transport=%s", f->transport);
    const char *opts[] = {"llm.SyncKvCacheWaitTime=60000", topt, extra, NULL};
    f->d = tfx_engine(LLMLINK_ROLE_DECODER, D_ID, opts);
    assert_non_null(f->d);
    llmlink_cache_desc_t desc;
    memset(&desc, 0, sizeof desc);
    desc.num_tensors = NT;
    desc.data_type = LLMLINK_DT_FLOAT;
    desc.placement = LLMLINK_PLACEMENT_HOST;
    desc.num_dims = 2;
    desc.shape[0] = BLOCKS;
    desc.shape[1] = BLOCK / 4;
    uint64_t addrs[NT];
    for (uint32_t t = 0; t < NT; t++)
        addrs[t] = (uint64_t)(uintptr_t)tensor_mem(f->shared, t);
    assert_status(llmlink_register_blocks_cache(f->d, &desc, addrs, NT, NULL, &f->dcache),
                  LLMLINK_SUCCESS);
    assert_status(tfx_link_port(f->d, P_ID, (uint16_t)port, wait_ms()), LLMLINK_SUCCESS);
}

/* The transport asked for is the one that moved the bytes. */
static void assert_transport_used(fx_t *f)
{
    llmlink_xfer_stats_t x = {.version = LLMLINK_XFER_STATS_VERSION};
    assert_status(llmlink_get_xfer_stats(f->d, &x), LLMLINK_SUCCESS);
    if (!strcmp(f->transport, "tcp"))
        assert_true(x.tcp_requests > 0 && x.shm_requests == 0);
    else
        assert_true(x.shm_requests > 0 && x.shm_fallbacks == 0);
}

static void quit_child(fx_t *f)
{
    write_line(f->to_child, "quit");
    int ws = 0;
    int64_t deadline = proc_now_ms() + wait_ms();
    pid_t r = 0;
    while ((r = waitpid(f->child, &ws, WNOHANG)) == 0 && proc_now_ms() < deadline)
        proc_sleep_ms(10);
    assert_int_equal(r, f->child);
    f->child = 0;
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
}

/* SIGSTOP, and wait (bounded) until the child is stopped: the signal is
 * delivered asynchronously, and a child still running a moment after
 * kill() returned could serve the next request. */
static void stop_child(fx_t *f)
{
    assert_int_equal(kill(f->child, SIGSTOP), 0);
    int ws = 0;
    int64_t deadline = proc_now_ms() + wait_ms();
    pid_t r = 0;
    while ((r = waitpid(f->child, &ws, WUNTRACED | WNOHANG)) == 0 && proc_now_ms() < deadline)
        proc_sleep_ms(1);
    assert_int_equal(r, f->child);
    assert_true(WIFSTOPPED(ws));
}

/* A task's message and block pairs: "<kind> <round> K s0 d0 s1 d1". */
typedef struct job {
    int round;
    uint64_t src[K], dst[K];
    char msg[256];
    llmlink_task_t *task;
} job_t;

static void job_make(fx_t *f, job_t *j, const char *kind, int round)
{
    j->round = round;
    int n = snprintf(j->msg, sizeof j->msg, "%s %d %d", kind, round, K);
    for (int i = 0; i < K; i++) {
        j->src[i] = kvfill_rng_below(&f->rng, SRC_BLOCKS);
        j->dst[i] = dst_block(round, i);
        n += snprintf(j->msg + n, sizeof j->msg - (size_t)n, " %llu %llu",
                      (unsigned long long)j->src[i], (unsigned long long)j->dst[i]);
    }
    j->task = NULL;
}

static llmlink_status_t job_submit(fx_t *f, job_t *j, bool push, bool notify)
{
    llmlink_task_options_t o = LLMLINK_TASK_OPTIONS_INIT;
    o.timeout_ms = wait_ms();
    if (notify) {
        o.notify_data = j->msg;
        o.notify_len = strlen(j->msg);
    }
    llmlink_cache_key_t k = tfx_blocks_key(P_ID, 1);
    return push ? llmlink_push_blocks_async(f->d, &k, f->dcache, j->src, K, j->dst, K, NULL, &o,
                                            &j->task)
                : llmlink_pull_blocks_async(f->d, &k, f->dcache, j->src, K, j->dst, K, NULL, &o,
                                            &j->task);
}

/* Waits for the task (bounded), releases it, returns its status; on a
 * failure the message goes to why. */
static llmlink_status_t job_wait(job_t *j, char *why, size_t cap)
{
    llmlink_status_t st = llmlink_task_wait(j->task, wait_ms());
    snprintf(why, cap, "%s", llmlink_task_error(j->task));
    llmlink_task_release(j->task);
    j->task = NULL;
    return st;
}

/* The child's next line, which must be want. */
static void expect_line(fx_t *f, const char *want)
{
    char line[1024];
    if (read_line(f->from_child, line, sizeof line, wait_ms()) != 0)
        fail_msg("no line from the child within %d ms (expected '%s')", wait_ms(), want);
    if (strcmp(line, want) != 0)
        fail_msg("child said '%s', expected '%s'", line, want);
}

/* A plain notification "plain <round> 0" and its report: everything
 * attached before it on the link has been reported by then. */
static void fence_plain(fx_t *f, int round)
{
    char msg[64], want[64];
    snprintf(msg, sizeof msg, "plain %d 0", round);
    assert_status(llmlink_notify(f->d, P_ID, msg, strlen(msg), wait_ms()), LLMLINK_SUCCESS);
    snprintf(want, sizeof want, "N plain %d OK", round);
    expect_line(f, want);
}

/* ---- tests --------------------------------------------------------------- */

/* push_blocks_async with a notification, ROUNDS times, WINDOW in flight:
 * the child, the moment it fetches each notification, finds every byte of
 * that task in its cache; each round reported exactly once. */
static void test_push_bytes_before_notify(void **state)
{
    fx_t *f = *state;
    start(f, "1024", true, NULL);
    static job_t jobs[ROUNDS];
    bool seen[ROUNDS] = {false};
    char why[512];
    for (int base = 0; base < ROUNDS; base += WINDOW) {
        int end = base + WINDOW < ROUNDS ? base + WINDOW : ROUNDS;
        for (int r = base; r < end; r++) {
            job_make(f, &jobs[r], "push", r);
            assert_status(job_submit(f, &jobs[r], true, true), LLMLINK_SUCCESS);
        }
        for (int r = base; r < end; r++) {
            llmlink_status_t st = job_wait(&jobs[r], why, sizeof why);
            if (st != LLMLINK_SUCCESS)
                fail_msg("push %d: %s: %s", r, llmlink_status_name(st), why);
        }
    }
    /* Every notification was queued by the child's engine before its task
     * ended; the child reports them as it fetches them. */
    for (int i = 0; i < ROUNDS; i++) {
        char line[1024], kind[8];
        int r = -1, used = 0;
        if (read_line(f->from_child, line, sizeof line, wait_ms()) != 0)
            fail_msg("%d of %d notifications reported", i, ROUNDS);
        if (sscanf(line, "N %7s %d %n", kind, &r, &used) != 2 || strcmp(kind, "push") != 0 ||
            r < 0 || r >= ROUNDS || strcmp(line + used, "OK") != 0)
            fail_msg("child: %s", line);
        if (seen[r])
            fail_msg("round %d notified twice", r);
        seen[r] = true;
    }
    fence_plain(f, -1); /* nothing more came before it */
    assert_transport_used(f);
    quit_child(f);
}

/* pull_blocks_async with a notification: the child finds the pulled bytes
 * in the decoder's cache the moment it fetches the notification; exactly
 * one per successful task, none for a task the peer refused (unknown key)
 * or one cancelled while queued (AsyncWorkers=1, the child stopped so that
 * the task ahead of it stays running). */
static void test_pull_once_per_success(void **state)
{
    fx_t *f = *state;
    start(f, "1024", true, "llmlink.AsyncWorkers=1");
    char why[512], want[64];
    int round = 0;
    for (; round < ROUNDS / 2; round++) {
        job_t j;
        job_make(f, &j, "pull", round);
        assert_status(job_submit(f, &j, false, true), LLMLINK_SUCCESS);
        llmlink_status_t st = job_wait(&j, why, sizeof why);
        if (st != LLMLINK_SUCCESS)
            fail_msg("pull %d: %s: %s", round, llmlink_status_name(st), why);
        snprintf(want, sizeof want, "N pull %d OK", round);
        expect_line(f, want);
    }

    /* Refused by the peer: no such key there. */
    job_t bad;
    job_make(f, &bad, "pull", round++);
    llmlink_task_options_t o = LLMLINK_TASK_OPTIONS_INIT;
    o.timeout_ms = wait_ms();
    o.notify_data = bad.msg;
    o.notify_len = strlen(bad.msg);
    llmlink_cache_key_t unknown = tfx_blocks_key(P_ID, 99);
    assert_status(llmlink_pull_blocks_async(f->d, &unknown, f->dcache, bad.src, K, bad.dst, K,
                                            NULL, &o, &bad.task),
                  LLMLINK_SUCCESS);
    llmlink_status_t st = job_wait(&bad, why, sizeof why);
    if (st == LLMLINK_SUCCESS || st == LLMLINK_TASK_PENDING)
        fail_msg("a pull of an unknown key ended %s", llmlink_status_name(st));

    /* Cancelled before it ran: the only worker holds a pull from a stopped
     * peer. */
    job_t ahead, queued;
    job_make(f, &ahead, "pull", round++);
    job_make(f, &queued, "pull", round++);
    stop_child(f);
    assert_status(job_submit(f, &ahead, false, true), LLMLINK_SUCCESS);
    assert_status(job_submit(f, &queued, false, true), LLMLINK_SUCCESS);
    assert_status(llmlink_task_cancel(queued.task), LLMLINK_CANCELLED);
    llmlink_task_release(queued.task);
    assert_int_equal(kill(f->child, SIGCONT), 0);
    st = job_wait(&ahead, why, sizeof why);
    if (st != LLMLINK_SUCCESS)
        fail_msg("the pull ahead: %s: %s", llmlink_status_name(st), why);
    snprintf(want, sizeof want, "N pull %d OK", ahead.round);
    expect_line(f, want);
    fence_plain(f, -1); /* neither the refused nor the cancelled one came */
    assert_transport_used(f);
    quit_child(f);
}

/* The child's queue holds one and it does not fetch: the second task's
 * bytes move and it ends NOTIFY_QUEUE_FULL saying so; a blocking call
 * (no notification) is unaffected; the queue holds the first one only. */
static void test_queue_full(void **state)
{
    fx_t *f = *state;
    start(f, "1", false, NULL);
    char why[512], reply[1024];
    job_t j0, j1, j3;
    job_make(f, &j0, "push", 0);
    assert_status(job_submit(f, &j0, true, true), LLMLINK_SUCCESS);
    assert_status(job_wait(&j0, why, sizeof why), LLMLINK_SUCCESS);

    job_make(f, &j1, "push", 1);
    assert_status(job_submit(f, &j1, true, true), LLMLINK_SUCCESS);
    llmlink_status_t st = job_wait(&j1, why, sizeof why);
    if (st != LLMLINK_NOTIFY_QUEUE_FULL || !strstr(why, "moved"))
        fail_msg("push into a full queue: %s: %s", llmlink_status_name(st), why);
    write_line(f->to_child, "check %s", j1.msg);
    assert_int_equal(read_line(f->from_child, reply, sizeof reply, wait_ms()), 0);
    assert_string_equal(reply, "CHECK OK");

    /* A blocking push: no notification, SUCCESS. */
    job_t j2;
    job_make(f, &j2, "push", 2);
    llmlink_cache_key_t k = tfx_blocks_key(P_ID, 1);
    assert_status(llmlink_push_blocks(f->d, &k, f->dcache, j2.src, K, j2.dst, K, NULL),
                  LLMLINK_SUCCESS);
    write_line(f->to_child, "check %s", j2.msg);
    assert_int_equal(read_line(f->from_child, reply, sizeof reply, wait_ms()), 0);
    assert_string_equal(reply, "CHECK OK");

    /* A pull: its bytes land here, its notification is refused. */
    job_make(f, &j3, "pull", 3);
    assert_status(job_submit(f, &j3, false, true), LLMLINK_SUCCESS);
    st = job_wait(&j3, why, sizeof why);
    if (st != LLMLINK_NOTIFY_QUEUE_FULL || !strstr(why, "moved"))
        fail_msg("pull with a full queue: %s: %s", llmlink_status_name(st), why);
    char bwhy[256];
    tfx_cache_t view = {.ntensors = NT, .units = BLOCKS, .unit_bytes = BLOCK};
    for (uint32_t t = 0; t < NT; t++)
        view.mem[t] = tensor_mem(f->shared, t);
    for (int i = 0; i < K; i++)
        if (!tfx_block_holds(&view, j3.dst[i], P_SEED, j3.src[i], bwhy, sizeof bwhy))
            fail_msg("pull 3: %s", bwhy);

    write_line(f->to_child, "fetch");
    expect_line(f, "N push 0 OK");
    expect_line(f, "FETCHED 1");
    quit_child(f);
}

/* Tasks completed one after the other on one link, pulls and pushes, with
 * plain notifications in between: the child receives them in that order. */
static void test_order(void **state)
{
    fx_t *f = *state;
    start(f, "1024", false, NULL);
    enum { N = 60 };
    char why[512], want[64];
    for (int r = 0; r < N; r++) {
        if (r % 3 == 2) {
            char msg[64];
            snprintf(msg, sizeof msg, "plain %d 0", r);
            assert_status(llmlink_notify(f->d, P_ID, msg, strlen(msg), wait_ms()),
                          LLMLINK_SUCCESS);
            continue;
        }
        job_t j;
        job_make(f, &j, r % 2 ? "pull" : "push", r);
        assert_status(job_submit(f, &j, r % 2 == 0, true), LLMLINK_SUCCESS);
        llmlink_status_t st = job_wait(&j, why, sizeof why);
        if (st != LLMLINK_SUCCESS)
            fail_msg("task %d: %s: %s", r, llmlink_status_name(st), why);
    }
    /* Fetched only now (the queue holds all N): in the order sent. */
    int got = 0;
    while (got < N) {
        write_line(f->to_child, "fetch");
        for (;;) {
            char line[1024];
            if (read_line(f->from_child, line, sizeof line, wait_ms()) != 0)
                fail_msg("after %d of %d: no answer to fetch", got, N);
            size_t n = 0;
            if (sscanf(line, "FETCHED %zu", &n) == 1) {
                if (n == 0)
                    fail_msg("after %d of %d: the queue is empty", got, N);
                break;
            }
            snprintf(want, sizeof want, "N %s %d OK",
                     got % 3 == 2 ? "plain" : (got % 2 ? "pull" : "push"), got);
            if (strcmp(line, want) != 0)
                fail_msg("notification %d: child said '%s', expected '%s'", got, line, want);
            got++;
        }
    }
    quit_child(f);
}

#define T(f, tr) {#f "/" tr, f, setup, teardown, (void *)tr}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        T(test_push_bytes_before_notify, "tcp"),
        T(test_push_bytes_before_notify, "shm"),
        T(test_pull_once_per_success, "tcp"),
        T(test_pull_once_per_success, "shm"),
        T(test_queue_full, "tcp"),
        T(test_order, "tcp"),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
