/* rawpeer.c - raw TCP peers for single-process integration tests. */
#include "rawpeer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int64_t rawpeer_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void rawpeer_sleep_ms(int ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    for (int i = 0; i < 1000 && nanosleep(&ts, &ts) != 0 && errno == EINTR; i++)
        ;
}

/* Milliseconds left until deadline, at least 0. */
static int left_ms(int64_t deadline)
{
    int64_t l = deadline - rawpeer_now_ms();
    return l < 0 ? 0 : (int)l;
}

static void loopback(struct sockaddr_in *sa, uint16_t port)
{
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons(port);
    sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
}

/* ---- raw client ------------------------------------------------------- */

int rawpeer_connect(uint16_t port, int timeout_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa;
    loopback(&sa, port);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
        return fd;
    if (errno != EINPROGRESS) {
        int err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int r = -1;
    for (int i = 0; i < 100; i++) {
        r = poll(&p, 1, timeout_ms);
        if (!(r < 0 && errno == EINTR))
            break;
    }
    int err = 0;
    socklen_t len = sizeof err;
    if (r <= 0) {
        err = r == 0 ? ETIMEDOUT : errno;
    } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
        err = errno;
    }
    if (err) {
        close(fd);
        errno = err;
        return -1;
    }
    return fd;
}

int rawpeer_send(int fd, const void *buf, size_t len, int timeout_ms)
{
    const uint8_t *p = buf;
    size_t off = 0;
    int64_t deadline = rawpeer_now_ms() + timeout_ms;
    /* Bounded: each round either sends bytes or waits; the deadline ends it. */
    for (int round = 0; off < len && round < 100000; round++) {
        ssize_t w = send(fd, p + off, len - off, MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EPIPE || errno == ECONNRESET))
            return RAWPEER_CLOSED;
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return RAWPEER_ERROR;
        int ms = left_ms(deadline);
        if (ms == 0)
            return RAWPEER_TIMEOUT;
        struct pollfd pf = {.fd = fd, .events = POLLOUT};
        if (poll(&pf, 1, ms) < 0 && errno != EINTR)
            return RAWPEER_ERROR;
    }
    return off == len ? RAWPEER_OK : RAWPEER_TIMEOUT;
}

ssize_t rawpeer_recv(int fd, void *buf, size_t len, int timeout_ms)
{
    int64_t deadline = rawpeer_now_ms() + timeout_ms;
    for (int round = 0; round < 100000; round++) {
        ssize_t r = recv(fd, buf, len, 0);
        if (r > 0)
            return r;
        if (r == 0)
            return RAWPEER_CLOSED;
        if (errno == EINTR)
            continue;
        if (errno == ECONNRESET)
            return RAWPEER_CLOSED;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return RAWPEER_ERROR;
        int ms = left_ms(deadline);
        if (ms == 0)
            return RAWPEER_TIMEOUT;
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, ms) < 0 && errno != EINTR)
            return RAWPEER_ERROR;
    }
    return RAWPEER_TIMEOUT;
}

int rawpeer_recv_exact(int fd, void *buf, size_t len, int timeout_ms)
{
    uint8_t *p = buf;
    size_t off = 0;
    int64_t deadline = rawpeer_now_ms() + timeout_ms;
    for (int round = 0; off < len; round++) {
        if (round == 100000)
            return RAWPEER_TIMEOUT;
        ssize_t r = rawpeer_recv(fd, p + off, len - off, left_ms(deadline));
        if (r < 0)
            return (int)r;
        off += (size_t)r;
    }
    return RAWPEER_OK;
}

int rawpeer_recv_frame(int fd, llk_frame_header_t *h, uint8_t *payload, size_t cap,
                       int timeout_ms)
{
    uint8_t hdr[LLK_WIRE_HEADER_SIZE];
    int64_t deadline = rawpeer_now_ms() + timeout_ms;
    int rc = rawpeer_recv_exact(fd, hdr, sizeof hdr, timeout_ms);
    if (rc != RAWPEER_OK)
        return rc;
    llk_wire_read_header(hdr, h);
    if (h->magic != LLK_WIRE_MAGIC || h->length > LLK_WIRE_MAX_PAYLOAD || h->length > cap)
        return RAWPEER_BAD_FRAME;
    if (h->length == 0)
        return RAWPEER_OK;
    return rawpeer_recv_exact(fd, payload, h->length, left_ms(deadline));
}

int rawpeer_wait_closed(int fd, int timeout_ms)
{
    uint8_t sink[4096];
    int64_t deadline = rawpeer_now_ms() + timeout_ms;
    for (int round = 0; round < 100000; round++) {
        ssize_t r = rawpeer_recv(fd, sink, sizeof sink, left_ms(deadline));
        if (r == RAWPEER_CLOSED)
            return RAWPEER_OK;
        if (r == RAWPEER_TIMEOUT || r == RAWPEER_ERROR)
            return (int)r;
        if (left_ms(deadline) == 0)
            return RAWPEER_TIMEOUT;
    }
    return RAWPEER_TIMEOUT;
}

void rawpeer_close(int fd)
{
    if (fd >= 0)
        close(fd);
}

int rawpeer_reserve_port(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa;
    loopback(&sa, 0);
    socklen_t len = sizeof sa;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

/* ---- frames ----------------------------------------------------------- */

size_t rawpeer_hello(uint8_t *out, size_t cap, uint16_t version, uint64_t client_id,
                     uint64_t target_id, uint32_t liveness_ms)
{
    llk_msg_hello_t m;
    memset(&m, 0, sizeof m);
    m.client_cluster_id = client_id;
    m.target_cluster_id = target_id;
    m.client_role = 2; /* DECODER */
    m.expected_server_role = 0;
    m.incarnation = 0x5241575045455231ull; /* "RAWPEER1" */
    m.liveness_ms = liveness_ms;
    return llk_wire_encode_hello(out, cap, version, &m);
}

size_t rawpeer_welcome(uint8_t *out, size_t cap, uint16_t version, uint64_t server_id,
                       uint32_t server_role)
{
    llk_msg_welcome_t m;
    memset(&m, 0, sizeof m);
    m.server_cluster_id = server_id;
    m.server_role = server_role;
    m.liveness_ms = 3000;
    m.incarnation = 0x5241575345525631ull; /* "RAWSERV1" */
    return llk_wire_encode_welcome(out, cap, version, &m);
}

/* ---- raw fake server ---------------------------------------------------- */

typedef struct srv_conn {
    int fd;
    bool hello_done;
    size_t rx_len;
    uint8_t rx[LLK_WIRE_MAX_FRAME];
} srv_conn_t;

struct rawpeer_server {
    rawpeer_mode_t mode;
    int listen_fd;
    int wake[2]; /* pipe: stop request */
    uint16_t port;
    pthread_t thread;
    uint8_t reply[RAWPEER_MAX_REPLY];
    size_t reply_len;
    srv_conn_t *conns[RAWPEER_SERVER_MAX_CONNS];

    pthread_mutex_t mu; /* guards the fields below */
    unsigned accepted, hellos, open;
    bool have_hello, hello_ok;
    llk_frame_header_t hello_hdr;
    llk_msg_hello_t hello;
};

static void srv_close_conn(rawpeer_server_t *s, size_t i)
{
    close(s->conns[i]->fd);
    free(s->conns[i]);
    s->conns[i] = NULL;
    pthread_mutex_lock(&s->mu);
    s->open--;
    pthread_mutex_unlock(&s->mu);
}

static void srv_accept(rawpeer_server_t *s)
{
    for (int round = 0; round < RAWPEER_SERVER_MAX_CONNS; round++) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        size_t slot = RAWPEER_SERVER_MAX_CONNS;
        for (size_t i = 0; i < RAWPEER_SERVER_MAX_CONNS; i++)
            if (!s->conns[i]) {
                slot = i;
                break;
            }
        srv_conn_t *c = slot < RAWPEER_SERVER_MAX_CONNS ? calloc(1, sizeof *c) : NULL;
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        s->conns[slot] = c;
        pthread_mutex_lock(&s->mu);
        s->accepted++;
        s->open++;
        pthread_mutex_unlock(&s->mu);
    }
}

/* A whole HELLO is in c->rx: record it and act. Returns false when the
 * connection is to be closed. */
static bool srv_on_hello(rawpeer_server_t *s, srv_conn_t *c, size_t frame_len)
{
    llk_frame_header_t h;
    llk_msg_hello_t m;
    const char *why = NULL;
    llk_wire_read_header(c->rx, &h);
    bool ok = llk_wire_decode_hello(c->rx + LLK_WIRE_HEADER_SIZE, frame_len - LLK_WIRE_HEADER_SIZE,
                                    &m, &why) == 0;
    for (size_t i = 0; i < LLK_WIRE_MAX_EXTENSIONS; i++)
        m.ext[i].data = NULL;
    pthread_mutex_lock(&s->mu);
    s->hellos++;
    s->have_hello = true;
    s->hello_ok = ok;
    s->hello_hdr = h;
    s->hello = m;
    pthread_mutex_unlock(&s->mu);
    c->hello_done = true;
    if (s->mode == RAWPEER_CLOSE_AFTER_HELLO)
        return false;
    if (s->mode == RAWPEER_REPLY && s->reply_len)
        return rawpeer_send(c->fd, s->reply, s->reply_len, 1000) == RAWPEER_OK;
    return true;
}

/* Reads what c has; false when it is to be closed. */
static bool srv_on_readable(rawpeer_server_t *s, srv_conn_t *c)
{
    for (int round = 0; round < 16; round++) {
        if (c->hello_done || s->mode == RAWPEER_SILENT)
            c->rx_len = 0; /* discard */
        ssize_t r = recv(c->fd, c->rx + c->rx_len, sizeof c->rx - c->rx_len, 0);
        if (r == 0)
            return false;
        if (r < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
        c->rx_len += (size_t)r;
        if (c->hello_done || s->mode == RAWPEER_SILENT || c->rx_len < LLK_WIRE_HEADER_SIZE)
            continue;
        llk_frame_header_t h;
        llk_wire_read_header(c->rx, &h);
        size_t want = LLK_WIRE_HEADER_SIZE +
                      (h.length > LLK_WIRE_MAX_PAYLOAD ? LLK_WIRE_MAX_PAYLOAD : h.length);
        if (c->rx_len >= want && !srv_on_hello(s, c, want))
            return false;
    }
    return true;
}

static void *srv_main(void *arg)
{
    rawpeer_server_t *s = arg;
    int64_t end = rawpeer_now_ms() + RAWPEER_SERVER_MAX_LIFE_MS;
    struct pollfd pf[2 + RAWPEER_SERVER_MAX_CONNS];
    size_t map[2 + RAWPEER_SERVER_MAX_CONNS];
    /* Bounded by time (the backstop) and so by count: poll waits <= 100 ms. */
    for (long round = 0; round < RAWPEER_SERVER_MAX_LIFE_MS && rawpeer_now_ms() < end; round++) {
        size_t n = 0;
        pf[n++] = (struct pollfd){.fd = s->wake[0], .events = POLLIN};
        pf[n++] = (struct pollfd){.fd = s->listen_fd, .events = POLLIN};
        for (size_t i = 0; i < RAWPEER_SERVER_MAX_CONNS; i++)
            if (s->conns[i]) {
                map[n] = i;
                pf[n++] = (struct pollfd){.fd = s->conns[i]->fd, .events = POLLIN};
            }
        int r = poll(pf, (nfds_t)n, 100);
        if (r < 0 && errno != EINTR)
            break;
        if (r <= 0)
            continue;
        if (pf[0].revents)
            break; /* stop requested */
        for (size_t k = 2; k < n; k++)
            if (pf[k].revents && !srv_on_readable(s, s->conns[map[k]]))
                srv_close_conn(s, map[k]);
        if (pf[1].revents & POLLIN)
            srv_accept(s);
    }
    return NULL;
}

rawpeer_server_t *rawpeer_server_start(rawpeer_mode_t mode, const void *reply, size_t reply_len)
{
    if (reply_len > RAWPEER_MAX_REPLY)
        return NULL;
    rawpeer_server_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->mode = mode;
    s->wake[0] = s->wake[1] = -1;
    if (reply_len)
        memcpy(s->reply, reply, reply_len);
    s->reply_len = reply_len;
    pthread_mutex_init(&s->mu, NULL);
    s->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa;
    loopback(&sa, 0);
    socklen_t len = sizeof sa;
    if (s->listen_fd < 0 || bind(s->listen_fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(s->listen_fd, 64) != 0 ||
        getsockname(s->listen_fd, (struct sockaddr *)&sa, &len) != 0 ||
        pipe2(s->wake, O_CLOEXEC) != 0)
        goto fail;
    s->port = ntohs(sa.sin_port);
    if (pthread_create(&s->thread, NULL, srv_main, s) != 0)
        goto fail;
    return s;
fail:
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    rawpeer_close(s->wake[0]);
    rawpeer_close(s->wake[1]);
    pthread_mutex_destroy(&s->mu);
    free(s);
    return NULL;
}

uint16_t rawpeer_server_port(const rawpeer_server_t *s)
{
    return s->port;
}

unsigned rawpeer_server_accepted(rawpeer_server_t *s)
{
    pthread_mutex_lock(&s->mu);
    unsigned n = s->accepted;
    pthread_mutex_unlock(&s->mu);
    return n;
}

unsigned rawpeer_server_hellos(rawpeer_server_t *s)
{
    pthread_mutex_lock(&s->mu);
    unsigned n = s->hellos;
    pthread_mutex_unlock(&s->mu);
    return n;
}

bool rawpeer_server_wait_accepted(rawpeer_server_t *s, unsigned n, int timeout_ms)
{
    int64_t deadline = rawpeer_now_ms() + timeout_ms;
    for (int round = 0; round <= timeout_ms; round++) {
        if (rawpeer_server_accepted(s) >= n)
            return true;
        if (rawpeer_now_ms() >= deadline)
            break;
        rawpeer_sleep_ms(2);
    }
    return rawpeer_server_accepted(s) >= n;
}

bool rawpeer_server_wait_all_closed(rawpeer_server_t *s, int timeout_ms)
{
    int64_t deadline = rawpeer_now_ms() + timeout_ms;
    for (int round = 0; round <= timeout_ms; round++) {
        pthread_mutex_lock(&s->mu);
        unsigned open = s->open;
        pthread_mutex_unlock(&s->mu);
        if (open == 0)
            return true;
        if (rawpeer_now_ms() >= deadline)
            break;
        rawpeer_sleep_ms(2);
    }
    return false;
}

bool rawpeer_server_last_hello(rawpeer_server_t *s, llk_frame_header_t *h, llk_msg_hello_t *m)
{
    pthread_mutex_lock(&s->mu);
    bool ok = s->have_hello && s->hello_ok;
    if (s->have_hello) {
        *h = s->hello_hdr;
        *m = s->hello;
    }
    pthread_mutex_unlock(&s->mu);
    return ok;
}

void rawpeer_server_stop(rawpeer_server_t *s)
{
    if (!s)
        return;
    ssize_t w = write(s->wake[1], "x", 1);
    (void)w;
    pthread_join(s->thread, NULL);
    for (size_t i = 0; i < RAWPEER_SERVER_MAX_CONNS; i++)
        if (s->conns[i])
            srv_close_conn(s, i);
    close(s->listen_fd);
    close(s->wake[0]);
    close(s->wake[1]);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
