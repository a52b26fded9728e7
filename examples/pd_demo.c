/*
 * pd_demo.c - a prefill/decode link demo on loopback, P and D as two
 * processes.
 *
 * The prefill process (PROMPT, the server) listens on 127.0.0.1 with a port
 * the kernel picks and hands it to the decode process (DECODER, the
 * client) over a pipe. The decode process links to it the way the
 * llm_datadist example does (same ip and port in the local and remote ip
 * infos), checks the link from both sides, unlinks and links again, and
 * prints what it measured. Exit status 0 means every step did what the
 * contract says.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "llmlink.h"

#define PROMPT_ID 1
#define DECODER_ID 2

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int check(const char *what, llmlink_status_t got, llmlink_status_t want)
{
    printf("  %-48s %-20s %s\n", what, llmlink_status_name(got), got == want ? "ok" : "UNEXPECTED");
    if (got != want) {
        printf("    expected %s; detail: %s\n", llmlink_status_name(want), llmlink_last_error());
        return 1;
    }
    return 0;
}

/* The prefill process: serve until the decode process says "done" (or
 * closes the pipe), answering "check" requests about its side of the link. */
static int run_prompt(int port_w, int cmd_r, int ans_w)
{
    llmlink_t *p = NULL;
    llmlink_option_t opts[] = {{"llm.listenIpInfo", "127.0.0.1:0"}};
    uint16_t port = 0;
    if (llmlink_create(&p, LLMLINK_ROLE_PROMPT, PROMPT_ID) != LLMLINK_SUCCESS ||
        llmlink_init(p, opts, 1) != LLMLINK_SUCCESS ||
        llmlink_get_listen_port(p, 0, &port) != LLMLINK_SUCCESS) {
        fprintf(stderr, "prefill: %s\n", llmlink_last_error());
        llmlink_destroy(p);
        return 1;
    }
    if (write(port_w, &port, sizeof port) != (ssize_t)sizeof port)
        return 1;
    char c;
    while (read(cmd_r, &c, 1) == 1 && c == 'c') {
        llmlink_status_t st = llmlink_check_link_status(p, DECODER_ID);
        if (write(ans_w, &st, sizeof st) != (ssize_t)sizeof st)
            break;
    }
    llmlink_destroy(p);
    return 0;
}

int main(void)
{
    int port_pipe[2], cmd_pipe[2], ans_pipe[2];
    if (pipe(port_pipe) || pipe(cmd_pipe) || pipe(ans_pipe)) {
        perror("pipe");
        return 1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0)
        _exit(run_prompt(port_pipe[1], cmd_pipe[0], ans_pipe[1]));

    int bad = 0;
    uint16_t port = 0;
    if (read(port_pipe[0], &port, sizeof port) != (ssize_t)sizeof port) {
        fprintf(stderr, "decode: the prefill process did not start\n");
        return 1;
    }
    printf("llmlink %s P/D demo on loopback\n", llmlink_version_string());
    printf("  prefill (PROMPT, cluster %d) pid %d listens on 127.0.0.1:%u\n", PROMPT_ID, (int)pid,
           port);

    llmlink_t *d = NULL;
    bad |= check("decode: create", llmlink_create(&d, LLMLINK_ROLE_DECODER, DECODER_ID),
                 LLMLINK_SUCCESS);
    bad |= check("decode: init", llmlink_init(d, NULL, 0), LLMLINK_SUCCESS);

    /* As in the llm_datadist example: the same ip and port on both sides. */
    llmlink_ip_info_t ip = {"127.0.0.1", port};
    llmlink_cluster_info_t cluster = {PROMPT_ID, LLMLINK_ROLE_PROMPT, &ip, 1, &ip, 1};
    llmlink_status_t per[1];

    double t0 = now_ms();
    bad |= check("decode: link_clusters([prefill], 3000)",
                 llmlink_link_clusters(d, &cluster, 1, 3000, per), LLMLINK_SUCCESS);
    double link_ms = now_ms() - t0;
    bad |= check("  per-cluster status", per[0], LLMLINK_SUCCESS);
    bad |= check("decode: check_link_status(prefill)", llmlink_check_link_status(d, PROMPT_ID),
                 LLMLINK_SUCCESS);
    llmlink_status_t pst = LLMLINK_FAILED;
    if (write(cmd_pipe[1], "c", 1) != 1 || read(ans_pipe[0], &pst, sizeof pst) != sizeof pst)
        pst = LLMLINK_FAILED;
    bad |= check("prefill: check_link_status(decode)", pst, LLMLINK_SUCCESS);
    bad |= check("decode: link again -> per-cluster ALREADY_LINK",
                 llmlink_link_clusters(d, &cluster, 1, 3000, per), LLMLINK_LINK_FAILED);
    bad |= check("  per-cluster status", per[0], LLMLINK_ALREADY_LINK);

    t0 = now_ms();
    bad |= check("decode: unlink_clusters(force=false)",
                 llmlink_unlink_clusters(d, &cluster, 1, 3000, false, per), LLMLINK_SUCCESS);
    double unlink_ms = now_ms() - t0;
    if (write(cmd_pipe[1], "c", 1) != 1 || read(ans_pipe[0], &pst, sizeof pst) != sizeof pst)
        pst = LLMLINK_FAILED;
    bad |= check("prefill: check_link_status(decode)", pst, LLMLINK_NOT_YET_LINK);

    /* Relink many times: the per-link cost a scheduler pays. */
    const int rounds = 200;
    t0 = now_ms();
    for (int i = 0; i < rounds && !bad; i++) {
        if (llmlink_link_clusters(d, &cluster, 1, 3000, per) != LLMLINK_SUCCESS ||
            llmlink_unlink_clusters(d, &cluster, 1, 3000, false, per) != LLMLINK_SUCCESS) {
            bad |= check("decode: link/unlink round", llmlink_last_error_status(), LLMLINK_SUCCESS);
        }
    }
    double round_ms = (now_ms() - t0) / rounds;
    bad |= check("decode: link once more", llmlink_link_clusters(d, &cluster, 1, 3000, per),
                 LLMLINK_SUCCESS);

    /* The prefill process exits: the decode side notices and frees the link. */
    if (write(cmd_pipe[1], "q", 1) != 1)
        bad = 1;
    int wst = 0;
    waitpid(pid, &wst, 0);
    llmlink_status_t after = LLMLINK_SUCCESS;
    for (int i = 0; i < 100 && after == LLMLINK_SUCCESS; i++) {
        usleep(20000);
        after = llmlink_check_link_status(d, PROMPT_ID);
    }
    bad |= check("decode: link freed after the prefill exits", after, LLMLINK_NOT_YET_LINK);
    llmlink_destroy(d);

    printf("\n  link time (first link, incl. TCP connect)   %8.3f ms\n", link_ms);
    printf("  unlink time (both ends)                     %8.3f ms\n", unlink_ms);
    printf("  link + unlink round trip, mean of %d       %8.3f ms\n", rounds, round_ms);
    printf("\n%s\n", bad ? "demo FAILED" : "demo passed: link, check, unlink, relink and peer exit "
                                          "behave as the contract says");
    return bad ? 1 : 0;
}
