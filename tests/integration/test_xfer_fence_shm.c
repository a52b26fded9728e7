/*
 * test_xfer_fence_shm.c - shm grants and the owner's hold on its memory
 * (issue 13, shm part).
 *
 * With shm the requester's process copies into (or out of) the owner's
 * memory on its own, with process_vm_writev at the granted addresses; no
 * socket shutdown on the owner's side can stop it. So the owner (this
 * test process, an engine with a registered blocks cache) must keep its
 * hold on the cache until the requester says XDONE or its process is
 * gone, and llmlink_unregister_cache must answer CACHE_IN_USE meanwhile:
 * SUCCESS would let the user reuse memory that a peer still writes.
 *
 *  - A raw requester in a forked child (the frames of rawpeer.h, claiming
 *    its own pid, so the owner proves it and grants shm) gets a WRITE
 *    grant and then keeps writing at the granted address without ever
 *    saying XDONE, with its streams open (the owner's stall limit ends
 *    them) or closed. Unregister: CACHE_IN_USE while it lives, SUCCESS
 *    once it is killed and reaped; the memory, reused, stays unchanged.
 *  - The same requester saying XDONE with a failure status: the owner
 *    accepts it and releases at once (the process still lives).
 *  - The link's counters (llmlink_get_link_stats): a write grant's whole
 *    extent in peer_write_bytes from the grant on; a grant ended without a
 *    successful XDONE in requests_fenced.
 *  - A real requester (llmlink-node, llmlink.Transport=shm) stopped with
 *    SIGSTOP inside a 512 MiB push: CACHE_IN_USE until it is killed.
 *  - Mismatched llm.SyncKvCacheWaitTime (owner SHORT_WAIT_MS / requester
 *    LONG_WAIT_MS and the reverse), the requester stopped mid-copy longer
 *    than the smaller wait: its push times out, and no byte lands
 *    afterwards (the owner's memory is checksummed for 500 ms).
 *
 * Loopback only; every wait bounded; children die with the test
 * (PR_SET_PDEATHSIG) and are reaped in the teardown.
 */
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
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "llmlink.h"
#include "llk_test.h"
#include "proc.h"
#include "rawpeer.h"
#include "link/wire.h"
#include "transport/transport.h"
#include "xfer/xfer_wire.h"

#define PROMPT_ID 1u
#define CLIENT_ID 500u
#define CLIENT_INCARNATION 0x5566778899aabbccull
#define IO_MS 5000
#define CHILD_LIFE_MS 60000 /* a raw child's backstop */
#define FILL 0x11
#define PEER_BYTE 0xEE
#define REUSE 0x5A
#define QUIET_MS 500 /* how long the owner's memory must stay unchanged */

/* The raw peer's cache: 4 tensors of 8 blocks of 4 KiB. */
#define RAW_NT 4
#define RAW_NB 8
#define RAW_BS 4096u
#define RAW_WAIT_MS 300
/* The node's push: 64 tensors of 64 blocks of 128 KiB = 512 MiB. */
#define BIG_NT 64
#define BIG_NB 64
#define BIG_BS (128u * 1024u)
/* The mismatched waits: the shorter one must still let the push start on a
 * loaded 2-core machine (the first request proves the peer's pid through
 * /proc), the longer one outlast the whole test. Sanitized builds
 * (LLMLINK_SANITIZER) run several times slower: longer waits. */
#define SHORT_WAIT_MS (proc_sanitized() ? 5000 : 300)
#define LONG_WAIT_MS 20000
/* Replies of llmlink-node (a 512 MiB registration included). */
#define NODE_MS (proc_sanitized() ? 120000 : IO_MS)

typedef enum { CHILD_SILENT, CHILD_CLOSE, CHILD_DONE_FAILED } child_mode_t;

typedef struct fx {
    llmlink_t *p;
    uint16_t port;
    int nt, nb;
    size_t bs, tbytes, total;
    uint8_t *mem; /* nt tensors, one mapping */
    int64_t cache;
    bool registered;
    llmlink_cache_key_t key;
    pid_t child;
    int child_rd; /* the child's report pipe */
    proc_t node[1];
    size_t nnodes;
} fx_t;

static uint8_t *tensor(fx_t *fx, int t) { return fx->mem + (size_t)t * fx->tbytes; }

static int start_owner(fx_t *fx, int wait_ms, int nt, int nb, size_t bs)
{
    char wait[32];
    snprintf(wait, sizeof wait, "%d", wait_ms);
    const llmlink_option_t o[] = {{"llm.listenIpInfo", "127.0.0.1:0"},
                                  {"llm.SyncKvCacheWaitTime", wait},
                                  {"llmlink.LivenessIntervalMs", "20000"}};
    fx->nt = nt;
    fx->nb = nb;
    fx->bs = bs;
    fx->tbytes = (size_t)nb * bs;
    fx->total = fx->tbytes * (size_t)nt;
    fx->mem = mmap(NULL, fx->total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (fx->mem == MAP_FAILED) {
        fx->mem = NULL;
        return -1;
    }
    memset(fx->mem, FILL, fx->total);
    if (llmlink_create(&fx->p, LLMLINK_ROLE_PROMPT, PROMPT_ID) || llmlink_init(fx->p, o, 3) ||
        llmlink_get_listen_port(fx->p, 0, &fx->port))
        return -1;
    uint64_t addrs[BIG_NT];
    for (int t = 0; t < nt; t++)
        addrs[t] = (uint64_t)(uintptr_t)tensor(fx, t);
    llmlink_cache_desc_t d = {.num_tensors = (uint32_t)nt, .data_type = LLMLINK_DT_UINT8,
                              .placement = LLMLINK_PLACEMENT_HOST, .num_dims = 2,
                              .shape = {(int64_t)nb, (int64_t)bs}};
    fx->key = (llmlink_cache_key_t){.type = LLMLINK_KEY_BLOCKS, .cluster_id = PROMPT_ID};
    if (llmlink_register_blocks_cache(fx->p, &d, addrs, (size_t)nt, &fx->key, &fx->cache))
        return -1;
    fx->registered = true;
    return 0;
}

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    fx->child_rd = -1;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    /* Peers first: none may still write when the memory goes. */
    if (fx->child > 0) {
        kill(fx->child, SIGKILL);
        waitpid(fx->child, NULL, 0);
    }
    if (fx->child_rd >= 0)
        close(fx->child_rd);
    for (size_t i = 0; i < fx->nnodes; i++)
        proc_reap(&fx->node[i]);
    if (fx->p)
        llmlink_destroy(fx->p);
    if (fx->mem)
        munmap(fx->mem, fx->total);
    free(fx);
    return 0;
}

/* ---- the raw requester (child process: no cmocka, no malloc) ------------------ */

typedef struct child_args {
    uint16_t port;
    llk_host_id_t me; /* boot id and pid namespace, read before the fork */
    llmlink_cache_key_t key;
    pid_t owner;
    child_mode_t mode;
} child_args_t;

static int child_link(const child_args_t *a, int *ctrl, int *data, uint64_t *grant)
{
    uint8_t f[LLK_WIRE_MAX_FRAME];
    *ctrl = rawpeer_connect(a->port, IO_MS);
    if (*ctrl < 0)
        return 1;
    llk_msg_hello_t m = {.client_cluster_id = CLIENT_ID, .target_cluster_id = PROMPT_ID,
                         .client_role = LLMLINK_ROLE_DECODER, .incarnation = CLIENT_INCARNATION,
                         .liveness_ms = 20000};
    size_t n = llk_wire_encode_hello(f, sizeof f, LLK_WIRE_VERSION, &m);
    llk_frame_header_t h;
    llk_msg_welcome_t w;
    const char *why;
    if (rawpeer_send(*ctrl, f, n, IO_MS) != RAWPEER_OK ||
        rawpeer_recv_frame(*ctrl, &h, f, sizeof f, IO_MS) != RAWPEER_OK ||
        h.type != LLK_MSG_WELCOME || llk_wire_decode_welcome(f, h.length, &w, &why) != 0)
        return 2;
    *data = rawpeer_connect(a->port, IO_MS);
    if (*data < 0)
        return 3;
    llk_msg_attach_t at = {.client_cluster_id = CLIENT_ID, .server_cluster_id = PROMPT_ID,
                           .client_incarnation = CLIENT_INCARNATION,
                           .server_incarnation = w.incarnation, .pidns = a->me.pidns,
                           .pid = (uint32_t)getpid()};
    memcpy(at.boot_id, a->me.boot_id, sizeof at.boot_id);
    n = llk_wire_encode_attach(f, sizeof f, LLK_WIRE_VERSION, &at);
    if (rawpeer_send(*data, f, n, IO_MS) != RAWPEER_OK ||
        rawpeer_recv_frame(*data, &h, f, sizeof f, IO_MS) != RAWPEER_OK ||
        h.type != LLK_MSG_ATTACH_OK)
        return 4;
    /* An shm WRITE of tensor 1, blocks 0..3. */
    llk_xseg_wire_t seg = {.tensor = 1, .offset = 0, .length = 4 * RAW_BS};
    llk_xreq_t r = {.op = LLK_XOP_SHM_WRITE, .kind = LLK_XKIND_BLOCKS, .key = a->key,
                    .unit_bytes = RAW_BS, .num_tensors_hint = 2, .nseg = 1,
                    .bound_end = 4 * RAW_BS};
    n = llk_xwire_encode_req(f, sizeof f, 1, &r, &seg);
    uint8_t hb[LLK_XWIRE_HEADER_SIZE];
    llk_xframe_header_t xh;
    llk_xresp_t resp;
    if (n == 0 || rawpeer_send(*data, f, n, IO_MS) != RAWPEER_OK ||
        rawpeer_recv_exact(*data, hb, sizeof hb, IO_MS) != RAWPEER_OK ||
        llk_xwire_read_header(hb, &xh, &why) != 0 || xh.type != LLK_XMSG_RESP ||
        xh.length > sizeof f || rawpeer_recv_exact(*data, f, xh.length, IO_MS) != RAWPEER_OK ||
        llk_xwire_decode_resp(f, xh.length, &resp, &why) != 0)
        return 5;
    if (resp.status != LLMLINK_SUCCESS || resp.niov != 1)
        return 6;
    uint64_t len;
    llk_xwire_iov_at(resp.iovs, 0, grant, &len);
    return len == 4 * RAW_BS ? 0 : 7;
}

/* Writes PEER_BYTE at the granted address every 5 ms, as a requester that
 * is still copying would, until killed (or the backstop). */
static void child_keep_writing(const child_args_t *a, uint64_t grant)
{
    static uint8_t buf[4 * RAW_BS];
    memset(buf, PEER_BYTE, sizeof buf);
    struct iovec l = {buf, sizeof buf}, r = {(void *)(uintptr_t)grant, sizeof buf};
    for (int64_t end = rawpeer_now_ms() + CHILD_LIFE_MS; rawpeer_now_ms() < end;) {
        process_vm_writev(a->owner, &l, 1, &r, 1, 0);
        rawpeer_sleep_ms(5);
    }
}

static void child_main(const child_args_t *a, int wfd)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int ctrl = -1, data = -1;
    uint64_t grant = 0;
    int rc = child_link(a, &ctrl, &data, &grant);
    char report = rc == 0 ? 'G' : (char)('0' + rc);
    if (write(wfd, &report, 1) != 1 || rc != 0)
        _exit(1);
    if (a->mode == CHILD_DONE_FAILED) {
        uint8_t f[LLK_XWIRE_HEADER_SIZE + 4];
        size_t n = llk_xwire_encode_done(f, sizeof f, 1, LLMLINK_WAIT_PROCESS_TIMEOUT);
        rawpeer_send(data, f, n, IO_MS);
        rawpeer_sleep_ms(CHILD_LIFE_MS); /* alive, touching nothing */
        _exit(0);
    }
    if (a->mode == CHILD_CLOSE) {
        close(data);
        close(ctrl);
    }
    child_keep_writing(a, grant);
    _exit(0);
}

/* Forks the raw requester and waits for its grant. */
static void start_child(fx_t *fx, child_mode_t mode)
{
    child_args_t a = {.port = fx->port, .key = fx->key, .owner = getpid(), .mode = mode};
    llk_host_id_self(&a.me);
    int p[2];
    assert_int_equal(pipe(p), 0);
    fx->child = fork();
    assert_true(fx->child >= 0);
    if (fx->child == 0) {
        close(p[0]);
        child_main(&a, p[1]);
    }
    close(p[1]);
    fx->child_rd = p[0];
    struct pollfd pf = {.fd = p[0], .events = POLLIN};
    char c = 0;
    assert_int_equal(poll(&pf, 1, 3 * IO_MS), 1);
    assert_int_equal(read(p[0], &c, 1), 1);
    if (c != 'G')
        fail_msg("the raw requester got no shm grant (step %c failed)", c);
}

static void kill_child(fx_t *fx)
{
    assert_int_equal(kill(fx->child, SIGKILL), 0);
    assert_int_equal(waitpid(fx->child, NULL, 0), fx->child);
    fx->child = 0;
}

/* ---- owner-side checks --------------------------------------------------------- */

static bool all_bytes(const uint8_t *p, size_t n, uint8_t v)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != v)
            return false;
    return true;
}

/* Waits (bounded) until the peer's bytes show at the start of tensor 1. */
static void wait_peer_writes(fx_t *fx)
{
    int64_t until = rawpeer_now_ms() + IO_MS;
    while (!all_bytes(tensor(fx, 1), 4 * RAW_BS, PEER_BYTE) && rawpeer_now_ms() < until)
        rawpeer_sleep_ms(2);
    assert_true(all_bytes(tensor(fx, 1), 4 * RAW_BS, PEER_BYTE));
}

static void wait_link_gone(fx_t *fx, uint64_t remote, int max_ms)
{
    int64_t until = rawpeer_now_ms() + max_ms;
    while (llmlink_check_link_status(fx->p, remote) == LLMLINK_SUCCESS &&
           rawpeer_now_ms() < until)
        rawpeer_sleep_ms(10);
    assert_status(llmlink_check_link_status(fx->p, remote), LLMLINK_NOT_YET_LINK);
}

/* Unregister until SUCCESS, at most `tries` calls (each waits up to the
 * engine's llm.SyncKvCacheWaitTime). */
static void unregister_soon(fx_t *fx, int tries)
{
    llmlink_status_t st = LLMLINK_FAILED;
    for (int i = 0; i < tries && st != LLMLINK_SUCCESS; i++) {
        st = llmlink_unregister_cache(fx->p, fx->cache);
        if (st != LLMLINK_SUCCESS)
            rawpeer_sleep_ms(20);
    }
    assert_status(st, LLMLINK_SUCCESS);
    fx->registered = false;
}

static uint64_t checksum(const fx_t *fx)
{
    const uint64_t *w = (const uint64_t *)fx->mem;
    uint64_t h = 0;
    for (size_t i = 0; i < fx->total / 8; i++)
        h = h * 31 + w[i];
    return h;
}

/* The owner's memory does not change for QUIET_MS. */
static void assert_quiet(const fx_t *fx, uint64_t want, const char *when)
{
    int64_t until = rawpeer_now_ms() + QUIET_MS;
    int passes = 0;
    do {
        if (checksum(fx) != want)
            fail_msg("a byte landed in the owner's memory %s (pass %d)", when, passes);
        passes++;
    } while (rawpeer_now_ms() < until);
}

/* The memory is the user's again: reuse it, and nothing else writes it. */
static void reuse_and_check(fx_t *fx)
{
    memset(fx->mem, REUSE, fx->total);
    assert_quiet(fx, checksum(fx), "after unregister returned SUCCESS and the memory was reused");
    assert_true(all_bytes(fx->mem, fx->total, REUSE));
}

/* The link's counters (llmlink_get_link_stats) reach want_fenced within
 * IO_MS; the write grant's whole extent is counted from the grant on. */
static void assert_link_counters(fx_t *fx, uint64_t want_fenced)
{
    llmlink_link_stats_t ls = {.version = LLMLINK_LINK_STATS_VERSION};
    int64_t until = rawpeer_now_ms() + IO_MS;
    do {
        assert_status(llmlink_get_link_stats(fx->p, CLIENT_ID, &ls), LLMLINK_SUCCESS);
        if (ls.requests_fenced >= want_fenced)
            break;
        rawpeer_sleep_ms(5);
    } while (rawpeer_now_ms() < until);
    assert_int_equal(ls.peer_write_bytes, 4 * RAW_BS);
    assert_int_equal(ls.peer_read_bytes, 0);
    assert_int_equal(ls.requests_fenced, want_fenced);
}

/* ---- raw requester tests ----------------------------------------------------------- */

static void silent_requester_holds_cache(fx_t *fx, child_mode_t mode)
{
    assert_int_equal(start_owner(fx, RAW_WAIT_MS, RAW_NT, RAW_NB, RAW_BS), 0);
    start_child(fx, mode);
    wait_peer_writes(fx); /* the grant is live: the peer writes on its own */
    if (mode == CHILD_SILENT) /* the link is still up (its stall limit is later) */
        assert_link_counters(fx, 0);
    /* Open streams: the owner's stall limit (wait + grace) ends them; closed
     * ones: at once. Either way the link goes, the grant does not. */
    wait_link_gone(fx, CLIENT_ID, IO_MS);
    assert_status(llmlink_unregister_cache(fx->p, fx->cache), LLMLINK_CACHE_IN_USE);
    /* ... rightly: the peer still writes there. */
    memset(tensor(fx, 1), FILL, 4 * RAW_BS);
    wait_peer_writes(fx);
    assert_status(llmlink_unregister_cache(fx->p, fx->cache), LLMLINK_CACHE_IN_USE);
    kill_child(fx);
    unregister_soon(fx, 20);
    reuse_and_check(fx);
}

static void test_silent_requester_holds_cache(void **state)
{
    silent_requester_holds_cache(*state, CHILD_SILENT);
}

static void test_closed_stream_without_done_holds_cache(void **state)
{
    silent_requester_holds_cache(*state, CHILD_CLOSE);
}

static void test_failed_done_releases(void **state)
{
    fx_t *fx = *state;
    assert_int_equal(start_owner(fx, RAW_WAIT_MS, RAW_NT, RAW_NB, RAW_BS), 0);
    start_child(fx, CHILD_DONE_FAILED);
    /* The XDONE with a failure status is the peer's word that it stopped:
     * released while the process lives, the link kept. */
    unregister_soon(fx, 10);
    assert_status(llmlink_check_link_status(fx->p, CLIENT_ID), LLMLINK_SUCCESS);
    assert_link_counters(fx, 1); /* granted, ended unfinished */
    reuse_and_check(fx);
}

/* ---- llmlink-node requester tests ----------------------------------------------------- */

#define cmd(p, ...) proc_must_reply(proc_reply((p), NODE_MS, __VA_ARGS__))

/* A decoder node forcing shm with wait_ms, a 512 MiB cache, linked to this
 * engine; then its push of the whole cache, started (reply not read). */
static proc_t *start_push(fx_t *fx, int wait_ms)
{
    char wopt[64];
    snprintf(wopt, sizeof wopt, "llm.SyncKvCacheWaitTime=%d", wait_ms);
    /* Liveness longer than any stop here: only the waits end requests. */
    const char *opts[] = {"llmlink.Transport=shm", wopt, "llmlink.LivenessIntervalMs=20000", NULL};
    proc_t *n = &fx->node[0];
    fx->nnodes = 1;
    proc_must(proc_node_start(n, "decoder", 2, NULL, opts, NULL, NODE_MS));
    const char *got = cmd(n, "reg blocks %d uint8 %d,%u seed=7", BIG_NT, BIG_NB, BIG_BS);
    long long cid = -1;
    if (sscanf(got, "REG LLM_SUCCESS %lld", &cid) != 1)
        fail_msg("reg: %s", got);
    got = cmd(n, "link %d %u@127.0.0.1:%u", IO_MS, PROMPT_ID, fx->port);
    if (strcmp(got, "LINK LLM_SUCCESS LLM_SUCCESS") != 0)
        fail_msg("link: %s", got);
    proc_must(proc_send(n, NODE_MS, "pushblocks blocks:%u:0 %lld 0-%d 0-%d", PROMPT_ID, cid,
                        BIG_NB - 1, BIG_NB - 1));
    return n;
}

/* Has the push reached the owner's memory: any tensor's first bytes changed. */
static bool push_started(fx_t *fx)
{
    for (int t = 0; t < fx->nt; t++)
        if (!all_bytes(tensor(fx, t), 64, FILL))
            return true;
    return false;
}

/* Stops the node with SIGSTOP as soon as its copy has begun. */
static void stop_mid_copy(fx_t *fx, proc_t *n)
{
    int64_t until = rawpeer_now_ms() + 4 * NODE_MS;
    while (!push_started(fx) && rawpeer_now_ms() < until)
        ;
    assert_true(push_started(fx));
    assert_int_equal(proc_kill(n, SIGSTOP), 0);
    rawpeer_sleep_ms(50); /* a batch in flight finishes before the stop */
    /* The push must still be unfinished, or there is nothing to test. */
    int done = 0;
    for (int t = 0; t < fx->nt; t++)
        done += !all_bytes(tensor(fx, t) + fx->tbytes - 64, 64, FILL);
    if (done == fx->nt)
        fail_msg("the 512 MiB push was done before SIGSTOP landed");
    print_message("  stopped the requester with %d of %d tensors written to their end\n", done,
                  fx->nt);
}

static void test_sigstopped_requester_holds_cache(void **state)
{
    fx_t *fx = *state;
    assert_int_equal(start_owner(fx, 1000, BIG_NT, BIG_NB, BIG_BS), 0);
    proc_t *n = start_push(fx, 20000);
    stop_mid_copy(fx, n);
    /* The owner ends the silent stream (its stall limit), not the hold. */
    wait_link_gone(fx, 2, NODE_MS);
    uint64_t sum = checksum(fx);
    assert_status(llmlink_unregister_cache(fx->p, fx->cache), LLMLINK_CACHE_IN_USE);
    assert_int_equal(proc_kill(n, SIGKILL), 0);
    proc_reap(n);
    assert_true(checksum(fx) == sum);
    unregister_soon(fx, 20);
    reuse_and_check(fx);
}

/* Owner short, requester long: the requester's call uses the short wait,
 * so once resumed it stops at its next deadline check, long past. */
static void test_owner_shorter_wait_no_late_byte(void **state)
{
    fx_t *fx = *state;
    assert_int_equal(start_owner(fx, SHORT_WAIT_MS, BIG_NT, BIG_NB, BIG_BS), 0);
    proc_t *n = start_push(fx, LONG_WAIT_MS);
    stop_mid_copy(fx, n);
    /* The owner gave up on the request (and its link) while it was stopped. */
    wait_link_gone(fx, 2, NODE_MS);
    uint64_t sum = checksum(fx);
    assert_int_equal(proc_kill(n, SIGCONT), 0);
    char line[PROC_LINE_MAX];
    proc_must(proc_read_line(n, line, sizeof line, NODE_MS));
    if (strncmp(line, "PUSH LLM_WAIT_PROCESS_TIMEOUT", 29) != 0)
        fail_msg("the push should time out after %d ms: %s", SHORT_WAIT_MS, line);
    assert_quiet(fx, sum, "after the owner gave up and the push returned");
    /* The requester's XDONE could not reach the closed stream: the hold
     * lasts until its process is gone. */
    assert_status(llmlink_unregister_cache(fx->p, fx->cache), LLMLINK_CACHE_IN_USE);
    assert_int_equal(proc_stop(n, NODE_MS), 0);
    unregister_soon(fx, 20);
    reuse_and_check(fx);
}

/* Owner long, requester short: stopped past its deadline, the requester
 * stops at its next check and says XDONE, which the owner (its stall limit
 * the smaller wait plus a grace) still hears: released while it lives. */
static void test_requester_shorter_wait_no_late_byte(void **state)
{
    fx_t *fx = *state;
    assert_int_equal(start_owner(fx, LONG_WAIT_MS, BIG_NT, BIG_NB, BIG_BS), 0);
    proc_t *n = start_push(fx, SHORT_WAIT_MS);
    stop_mid_copy(fx, n);
    rawpeer_sleep_ms(SHORT_WAIT_MS + 200); /* < SHORT_WAIT_MS + the owner's grace */
    assert_int_equal(proc_kill(n, SIGCONT), 0);
    char line[PROC_LINE_MAX];
    proc_must(proc_read_line(n, line, sizeof line, NODE_MS));
    if (strncmp(line, "PUSH LLM_WAIT_PROCESS_TIMEOUT", 29) != 0)
        fail_msg("the push should time out after %d ms: %s", SHORT_WAIT_MS, line);
    assert_quiet(fx, checksum(fx), "after the push returned");
    assert_true(proc_running(n));
    unregister_soon(fx, 10);
    reuse_and_check(fx);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_silent_requester_holds_cache),
        T(test_closed_stream_without_done_holds_cache),
        T(test_failed_done_releases),
        T(test_sigstopped_requester_holds_cache),
        T(test_owner_shorter_wait_no_late_byte),
        T(test_requester_shorter_wait_no_late_byte),
    };
    return cmocka_run_group_tests_name("xfer_fence_shm", tests, NULL, NULL);
}
