/* killpeer.c - selftest stand-in for the two-guest harness: checks the
 * two-guest environment, reaches guest A's agent, prints "RDMA-CTL
 * kill-peer", then expects the agent gone within 5 s (A powered off). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int agent_up(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(7700)};
    inet_pton(AF_INET, "10.10.9.1", &sa.sin_addr);
    /* Non-blocking, 500 ms: a powered-off host never answers the SYN. */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int up = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    if (!up) {
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        int err = 1;
        socklen_t len = sizeof err;
        up = poll(&pfd, 1, 500) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 &&
             err == 0;
    }
    close(fd);
    return up;
}

int main(void)
{
    const char *two = getenv("LLMLINK_RDMA_2HOST"), *ag = getenv("LLMLINK_RDMA_AGENT");
    const char *pip = getenv("LLMLINK_RDMA_PEER_IP1"), *ip = getenv("LLMLINK_RDMA_IP1");
    if (!two || strcmp(two, "1") || !ag || strcmp(ag, "10.10.9.1:7700") || !pip ||
        strcmp(pip, "10.10.1.1") || !ip || strcmp(ip, "10.10.1.2")) {
        printf("two-guest environment wrong\n");
        return 1;
    }
    if (!agent_up()) {
        printf("agent not reachable before the kill\n");
        return 1;
    }
    printf("RDMA-CTL kill-peer\n");
    fflush(stdout);
    for (int i = 0; i < 20; i++) {
        usleep(500000);
        if (!agent_up()) {
            printf("guest A gone (try %d)\n", i + 1);
            return 0;
        }
    }
    printf("guest A still answers 20 tries (>= 10 s) after kill-peer\n");
    return 1;
}
