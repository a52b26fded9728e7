/*
 * async_pull.c - asynchronous pulls on loopback, prefill (P) and decode (D)
 * as two processes: D submits 64 one-block pulls at once and collects them
 * as they finish by waiting on the engine's event descriptor; then one
 * more pull carries a notification ("request 1: blocks read"), which P
 * receives - only once the pulled bytes are in D's cache - by waiting on
 * its own event descriptor.
 *
 * The function pull_many below is the example of docs/async.md ("Example"),
 * word for word (tests/docs/check_docs.py keeps the two the same).
 *
 * Usage: async_pull [auto|tcp|shm]   (llmlink.Transport on both engines)
 * Exit status 0: every pull succeeded, every byte is right, and P received
 * the notification.
 */
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "llmlink.h"

#define PROMPT_ID 1
#define DECODER_ID 2
#define TENSORS 4 /* 2 layers, K and V */
#define BLOCKS 64
#define BLOCK_BYTES 16384 /* one block of one tensor */
#define WAIT_MS 10000

/* [async.md example] */
/* Submit 64 pulls, then collect them as they finish. */
static int pull_many(llmlink_t *dd, const llmlink_cache_key_t *key, int64_t dst_cache,
                     const uint64_t *src, const uint64_t *dst)
{
    llmlink_task_t *tasks[64];
    for (int i = 0; i < 64; i++) {
        llmlink_task_options_t o = LLMLINK_TASK_OPTIONS_INIT;
        o.timeout_ms = 5000;
        o.user_data = (void *)(intptr_t)i;
        if (llmlink_pull_blocks_async(dd, key, dst_cache, &src[i], 1, &dst[i], 1, NULL, &o,
                                      &tasks[i]) != LLMLINK_SUCCESS) {
            fprintf(stderr, "pull %d: %s\n", i, llmlink_last_error()); /* no task made */
            while (i-- > 0)
                llmlink_task_release(tasks[i]); /* cancels those still running */
            return -1;
        }
    }
    int fd, failed = 0;
    if (llmlink_get_event_fd(dd, &fd) != LLMLINK_SUCCESS)
        return -1; /* not reached after a successful submit */
    for (int left = 64; left > 0;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        poll(&p, 1, -1); /* an event loop would wait here with everything else */
        llmlink_task_t *done[16];
        size_t n = 0;
        llmlink_task_poll_done(dd, done, 16, &n);
        for (size_t k = 0; k < n; k++, left--) {
            if (llmlink_task_status(done[k]) != LLMLINK_SUCCESS) {
                fprintf(stderr, "pull %d: %s\n", (int)(intptr_t)llmlink_task_user_data(done[k]),
                        llmlink_task_error(done[k]));
                failed = 1;
            }
            llmlink_task_release(done[k]);
        }
    }
    return failed ? -1 : 0;
}
/* [end of the async.md example] */

/* Byte i of block b of tensor t in P's cache. */
static uint8_t pattern(uint32_t t, uint64_t b, uint64_t i)
{
    uint64_t x = ((uint64_t)t << 40) ^ (b << 20) ^ i;
    x *= 0x9E3779B97F4A7C15ull;
    return (uint8_t)(x >> 56);
}

static llmlink_t *engine(llmlink_role_t role, uint64_t id, const char *transport,
                         uint8_t *cache, const llmlink_cache_key_t *key, int64_t *cache_id)
{
    llmlink_option_t opts[] = {
        {"llmlink.Transport", transport},
        {"llm.listenIpInfo", "127.0.0.1:0"}, /* the prefill only */
    };
    llmlink_cache_desc_t d;
    memset(&d, 0, sizeof d);
    d.num_tensors = TENSORS;
    d.data_type = LLMLINK_DT_UINT8;
    d.placement = LLMLINK_PLACEMENT_HOST;
    d.num_dims = 2;
    d.shape[0] = BLOCKS;
    d.shape[1] = BLOCK_BYTES;
    uint64_t addrs[TENSORS];
    for (uint32_t t = 0; t < TENSORS; t++)
        addrs[t] = (uint64_t)(uintptr_t)(cache + (size_t)t * BLOCKS * BLOCK_BYTES);
    llmlink_t *e = NULL;
    if (llmlink_create(&e, role, id) != LLMLINK_SUCCESS ||
        llmlink_init(e, opts, role == LLMLINK_ROLE_PROMPT ? 2 : 1) != LLMLINK_SUCCESS ||
        llmlink_register_blocks_cache(e, &d, addrs, TENSORS, key, cache_id) !=
            LLMLINK_SUCCESS) {
        fprintf(stderr, "%s: %s\n", role == LLMLINK_ROLE_PROMPT ? "prefill" : "decode",
                llmlink_last_error());
        llmlink_destroy(e);
        return NULL;
    }
    return e;
}

static llmlink_cache_key_t prompt_key(void)
{
    llmlink_cache_key_t k;
    memset(&k, 0, sizeof k);
    k.type = LLMLINK_KEY_BLOCKS;
    k.cluster_id = PROMPT_ID;
    k.prefix_id = -1;
    return k;
}

/* The prefill process: serves its cache, prints the notification it gets
 * (waiting on its event descriptor), then quits when the pipe closes. */
static int run_prompt(const char *transport, int port_w, int quit_r)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    static uint8_t cache[(size_t)TENSORS * BLOCKS * BLOCK_BYTES];
    for (uint32_t t = 0; t < TENSORS; t++)
        for (uint64_t b = 0; b < BLOCKS; b++)
            for (uint64_t i = 0; i < BLOCK_BYTES; i++)
                cache[((size_t)t * BLOCKS + b) * BLOCK_BYTES + i] = pattern(t, b, i);
    llmlink_cache_key_t key = prompt_key();
    int64_t id = 0;
    uint16_t port = 0;
    int fd = -1;
    llmlink_t *p = engine(LLMLINK_ROLE_PROMPT, PROMPT_ID, transport, cache, &key, &id);
    if (!p || llmlink_get_listen_port(p, 0, &port) != LLMLINK_SUCCESS ||
        llmlink_get_event_fd(p, &fd) != LLMLINK_SUCCESS)
        return 1;
    if (write(port_w, &port, sizeof port) != (ssize_t)sizeof port)
        return 1;
    int got = 0;
    struct pollfd w[2] = {{.fd = fd, .events = POLLIN}, {.fd = quit_r, .events = POLLIN}};
    for (;;) {
        int r = poll(w, 2, WAIT_MS);
        /* Fetched before looking at the pipe: D closes it only after the
         * notification was queued here. */
        llmlink_notification_t n;
        size_t count = 0;
        llmlink_get_notifies(p, &n, 1, &count);
        if (count == 1) {
            printf("prefill: from cluster %llu: %.*s\n", (unsigned long long)n.cluster_id,
                   (int)n.len, (const char *)n.data);
            got++;
        }
        if (r <= 0 || (w[1].revents & (POLLIN | POLLHUP)))
            break;
    }
    llmlink_destroy(p);
    fflush(stdout); /* the child ends with _exit */
    return got == 1 ? 0 : 1;
}

static int run_decode(const char *transport, uint16_t port)
{
    static uint8_t cache[(size_t)TENSORS * BLOCKS * BLOCK_BYTES];
    int64_t id = 0;
    llmlink_t *d = engine(LLMLINK_ROLE_DECODER, DECODER_ID, transport, cache, NULL, &id);
    if (!d)
        return 1;
    llmlink_ip_info_t ip = {"127.0.0.1", port};
    llmlink_cluster_info_t c;
    memset(&c, 0, sizeof c);
    c.remote_cluster_id = PROMPT_ID;
    c.remote_ip_infos = &ip;
    c.num_remote_ip_infos = 1;
    llmlink_status_t one = LLMLINK_FAILED;
    int rc = 1;
    if (llmlink_link_clusters(d, &c, 1, WAIT_MS, &one) != LLMLINK_SUCCESS ||
        one != LLMLINK_SUCCESS) {
        fprintf(stderr, "decode: link: %s\n", llmlink_last_error());
        goto out;
    }
    /* Block i of P into block 63 - i of D. */
    uint64_t src[BLOCKS], dst[BLOCKS];
    for (uint64_t i = 0; i < BLOCKS; i++) {
        src[i] = i;
        dst[i] = BLOCKS - 1 - i;
    }
    llmlink_cache_key_t key = prompt_key();
    if (pull_many(d, &key, id, src, dst) != 0)
        goto out;
    for (uint32_t t = 0; t < TENSORS; t++)
        for (uint64_t b = 0; b < BLOCKS; b++)
            for (uint64_t i = 0; i < BLOCK_BYTES; i++)
                if (cache[((size_t)t * BLOCKS + dst[b]) * BLOCK_BYTES + i] != pattern(t, b, i)) {
                    fprintf(stderr, "decode: tensor %u block %llu byte %llu is wrong\n", t,
                            (unsigned long long)dst[b], (unsigned long long)i);
                    goto out;
                }
    printf("decode: 64 pulls done, every byte right\n");

    /* One more pull, with a notification P gets once the bytes are here. */
    static const char msg[] = "request 1: blocks read";
    llmlink_task_options_t o = LLMLINK_TASK_OPTIONS_INIT;
    o.notify_data = msg;
    o.notify_len = sizeof msg - 1;
    llmlink_task_t *task = NULL;
    if (llmlink_pull_blocks_async(d, &key, id, src, 1, dst, 1, NULL, &o, &task) !=
        LLMLINK_SUCCESS) {
        fprintf(stderr, "decode: %s\n", llmlink_last_error());
        goto out;
    }
    llmlink_status_t st = llmlink_task_wait(task, WAIT_MS);
    if (st != LLMLINK_SUCCESS)
        fprintf(stderr, "decode: pull with a notification: %s: %s\n", llmlink_status_name(st),
                llmlink_task_error(task));
    else
        rc = 0;
    llmlink_task_release(task);
out:
    llmlink_destroy(d);
    return rc;
}

int main(int argc, char **argv)
{
    const char *transport = argc > 1 ? argv[1] : "auto";
    setvbuf(stdout, NULL, _IOLBF, 0); /* both processes print in order */
    int port_pipe[2], quit_pipe[2];
    if (pipe(port_pipe) != 0 || pipe(quit_pipe) != 0)
        return 1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return 1;
    if (pid == 0) {
        close(quit_pipe[1]);
        _exit(run_prompt(transport, port_pipe[1], quit_pipe[0]));
    }
    close(quit_pipe[0]);
    uint16_t port = 0;
    int rc = 1;
    struct pollfd w = {.fd = port_pipe[0], .events = POLLIN};
    if (poll(&w, 1, WAIT_MS) == 1 && read(port_pipe[0], &port, sizeof port) == sizeof port)
        rc = run_decode(transport, port);
    close(quit_pipe[1]); /* the prefill quits */
    int ws = 0;
    if (waitpid(pid, &ws, 0) != pid || !WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
        rc = 1;
    printf("async_pull: %s\n", rc == 0 ? "OK" : "FAILED");
    return rc;
}
