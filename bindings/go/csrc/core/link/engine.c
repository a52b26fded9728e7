/* engine.c - engine lifecycle: create, init (listen + I/O thread),
 * finalize, free. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/addr.h"
#include "base/clock.h"
#include "link/engine.h"
#include "xfer/task.h"
#include "base/err.h"
#include "base/log.h"
#include "link/tls.h"
#include "transport/rdma.h"

/* Deep enough for the reactor's frames; small so that processes with many
 * engines (tests hold hundreds) stay light. */
#define IO_THREAD_STACK (256u * 1024u)
#define LISTEN_BACKLOG 4096

/* Who handles what conn.c hands on (llk_conn_handlers_t): the server
 * handshake, the client handshake, and established links (manager.c). */
static void server_slot_free(llmlink_t *e)
{
    llk_park_promote(e, llk_now_ms());
}

static const llk_conn_handlers_t conn_handlers = {
    .on_frame = {
        [LLK_CONN_SRV_HANDSHAKE] = llk_server_on_frame,
        [LLK_CONN_CLI_HELLO_SENT] = llk_client_on_frame,
        [LLK_CONN_LINKED] = llk_link_on_frame,
        [LLK_CONN_UNLINKING] = llk_link_on_frame,
    },
    .on_closed = llk_link_on_closed,
    .on_handshake_slot_free = server_slot_free,
    .on_link_down = llk_notify_on_link_down,
};

static uint64_t random_u64(void)
{
    uint64_t v;
    if (getrandom(&v, sizeof v, GRND_NONBLOCK) == (ssize_t)sizeof v)
        return v;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40);
}

llmlink_status_t llk_engine_create(llmlink_t **out, llmlink_role_t role, uint64_t cluster_id)
{
    llmlink_t *e = calloc(1, sizeof *e);
    if (!e)
        return llk_err(LLMLINK_OUT_OF_MEMORY, "llmlink_create: out of memory");
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (pthread_mutex_init(&e->mu, NULL) != 0) {
        pthread_condattr_destroy(&ca);
        free(e);
        return llk_err(LLMLINK_FAILED, "llmlink_create: pthread_mutex_init failed");
    }
    if (pthread_cond_init(&e->cv, &ca) != 0) {
        pthread_condattr_destroy(&ca);
        pthread_mutex_destroy(&e->mu);
        free(e);
        return llk_err(LLMLINK_FAILED, "llmlink_create: pthread_cond_init failed");
    }
    pthread_condattr_destroy(&ca);
    e->role = role;
    e->cluster_id = cluster_id;
    e->incarnation = random_u64();
    e->epfd = e->wakefd = -1;
    e->events.fd = -1;
    e->wake_tag = LLK_EV_WAKE;
    e->state = LLK_ENGINE_CREATED;
    e->conn_handlers = &conn_handlers;
    llk_options_defaults(&e->opts);
    llk_host_id_self(&e->host);
    *out = e;
    return LLMLINK_SUCCESS;
}

llmlink_role_t llk_engine_role(const llmlink_t *e)
{
    return e->role;
}

uint64_t llk_engine_cluster_id(const llmlink_t *e)
{
    return e->cluster_id;
}

llmlink_status_t llk_engine_listen_port(llmlink_t *e, size_t index, uint16_t *port,
                                        const char *fn)
{
    pthread_mutex_lock(&e->mu);
    llmlink_status_t st = llk_engine_check_running(e, fn);
    if (st == LLMLINK_SUCCESS) {
        if (index >= e->num_listeners)
            st = llk_err(LLMLINK_PARAM_INVALID,
                         "%s: index %zu, but the engine listens on %zu address(es)", fn, index,
                         e->num_listeners);
        else
            *port = e->listeners[index].port;
    }
    pthread_mutex_unlock(&e->mu);
    return st;
}

static void close_listeners(llmlink_t *e)
{
    /* As for connections (llk_conn_close_fd): a fork()ed child may hold a
     * copy, so deregister and shut the socket down, not only our fd. */
    for (size_t i = 0; i < e->num_listeners; i++) {
        epoll_ctl(e->epfd, EPOLL_CTL_DEL, e->listeners[i].fd, NULL);
        shutdown(e->listeners[i].fd, SHUT_RDWR);
        close(e->listeners[i].fd);
    }
    e->num_listeners = 0;
}

static llmlink_status_t open_listeners(llmlink_t *e)
{
    for (size_t i = 0; i < e->opts.num_listen; i++) {
        const llk_listen_addr_t *la = &e->opts.listen[i];
        llk_listener_t *l = &e->listeners[e->num_listeners];
        int fd = socket(la->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return llk_err(LLMLINK_NETWORK_ERROR, "llmlink_init: llm.listenIpInfo %s: socket: %s",
                           la->text, strerror(errno));
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (la->sa.ss_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (bind(fd, (const struct sockaddr *)&la->sa, la->sa_len) != 0) {
            int err = errno;
            close(fd);
            return llk_err(err == EADDRNOTAVAIL ? LLMLINK_PARAM_INVALID : LLMLINK_NETWORK_ERROR,
                           "llmlink_init: llm.listenIpInfo %s: bind: %s", la->text,
                           strerror(err));
        }
        if (listen(fd, LISTEN_BACKLOG) != 0) {
            int err = errno;
            close(fd);
            return llk_err(LLMLINK_NETWORK_ERROR, "llmlink_init: llm.listenIpInfo %s: listen: %s",
                           la->text, strerror(err));
        }
        struct sockaddr_storage got;
        socklen_t len = sizeof got;
        getsockname(fd, (struct sockaddr *)&got, &len);
        l->kind = LLK_EV_LISTENER;
        l->fd = fd;
        l->port = llk_addr_port((struct sockaddr *)&got);
        l->armed = true;
        llk_addr_format((struct sockaddr *)&got, l->text, sizeof l->text);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = l};
        if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            int err = errno;
            close(fd);
            return llk_err(LLMLINK_NETWORK_ERROR, "llmlink_init: epoll_ctl: %s", strerror(err));
        }
        e->num_listeners++;
        LLK_INFO("cluster %llu: listening on %s", (unsigned long long)e->cluster_id, l->text);
    }
    return LLMLINK_SUCCESS;
}

bool llk_engine_offers_rdma(const llmlink_t *e)
{
    return e->rdma && (e->opts.transport == LLK_TRANSPORT_AUTO ||
                       e->opts.transport == LLK_TRANSPORT_RDMA);
}

/* The devices, for a transport that may use them. Not finding any is no
 * failure here: auto moves data over tcp/shm, and a forced rdma fails each
 * link with rdma_why. */
static void open_rdma(llmlink_t *e)
{
    e->rdma_why[0] = '\0';
    if (e->opts.transport != LLK_TRANSPORT_AUTO && e->opts.transport != LLK_TRANSPORT_RDMA) {
        snprintf(e->rdma_why, sizeof e->rdma_why, "llmlink.Transport=%s",
                 llk_transport_name(e->opts.transport));
        return;
    }
    e->rdma = llk_rdma_open(&e->opts, e->incarnation, e->rdma_why, sizeof e->rdma_why);
    if (!e->rdma) {
        if (e->opts.transport == LLK_TRANSPORT_RDMA)
            LLK_WARN("cluster %llu: llmlink.Transport=rdma, but RDMA cannot be used: %s",
                     (unsigned long long)e->cluster_id, e->rdma_why);
        else
            LLK_DEBUG("cluster %llu: no RDMA (%s): tcp/shm", (unsigned long long)e->cluster_id,
                      e->rdma_why);
        return;
    }
    e->reg.xport_free = llk_rdma_cache_free;
    e->reg.xport_ctx = e->rdma;
}

llmlink_status_t llk_engine_init(llmlink_t *e, const llk_options_t *opts)
{
    llmlink_status_t st;
    pthread_mutex_lock(&e->mu);
    if (e->state == LLK_ENGINE_RUNNING) {
        pthread_mutex_unlock(&e->mu);
        return llk_err(LLMLINK_ALREADY_INITIALIZED, "llmlink_init: engine (cluster %llu) is "
                       "already initialized", (unsigned long long)e->cluster_id);
    }
    if (e->state == LLK_ENGINE_FINALIZED) {
        pthread_mutex_unlock(&e->mu);
        return llk_engine_check_running(e, "llmlink_init");
    }
    e->opts = *opts;
    /* The caller's strings: used below, never kept. */
    e->opts.auth_key_file = e->opts.auth_key_hex = NULL;
    if (e->role == LLMLINK_ROLE_PROMPT && opts->num_listen == 0) {
        pthread_mutex_unlock(&e->mu);
        return llk_err(LLMLINK_PARAM_INVALID, "llmlink_init: option llm.listenIpInfo is required "
                       "for a PROMPT engine (decode engines link to it there)");
    }
    if (e->role == LLMLINK_ROLE_DECODER && opts->num_listen > 0) {
        LLK_WARN("cluster %llu: llm.listenIpInfo ignored: a DECODER engine does not accept links",
                 (unsigned long long)e->cluster_id);
        e->opts.num_listen = 0;
    }

    /* The TLS files first: a bad one fails init before anything listens. */
    if (!e->tls) {
        char terr[LLK_MAX_PATH + 512];
        st = llk_tls_load(&e->opts, &e->tls, terr, sizeof terr);
        if (st != LLMLINK_SUCCESS) {
            llk_options_defaults(&e->opts);
            pthread_mutex_unlock(&e->mu);
            return llk_err(st, "%s", terr);
        }
    }

    /* Acquire in order; on failure release in reverse (the ladder below). */
    if (opts->auth_key_file || opts->auth_key_hex) {
        char kerr[400];
        st = llk_auth_key_load(opts->auth_key_file, opts->auth_key_hex, &e->auth, kerr,
                               sizeof kerr);
        if (st != LLMLINK_SUCCESS) {
            st = llk_err(st, "llmlink_init: %s", kerr);
            goto fail_epoll;
        }
    }
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (e->epfd < 0) {
        st = llk_err(LLMLINK_FAILED, "llmlink_init: epoll_create1: %s", strerror(errno));
        goto fail_epoll;
    }
    e->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (e->wakefd < 0) {
        st = llk_err(LLMLINK_FAILED, "llmlink_init: eventfd: %s", strerror(errno));
        goto fail_eventfd;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &e->wake_tag};
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->wakefd, &ev) != 0) {
        st = llk_err(LLMLINK_FAILED, "llmlink_init: epoll_ctl: %s", strerror(errno));
        goto fail_listen;
    }
    st = open_listeners(e);
    if (st != LLMLINK_SUCCESS)
        goto fail_listen;
    if (llk_registry_init(&e->reg, e->opts.max_caches) != 0) {
        st = llk_err(LLMLINK_FAILED, "llmlink_init: cannot create the cache registry");
        goto fail_listen;
    }
    e->reg_ready = true;
    /* An unregister that times out on peers' tcp requests has the owner
     * thread cut them (xfer/owner.c). */
    e->reg.cut = llk_xserver_cut;
    e->reg.cut_ctx = e;
    open_rdma(e);
    st = llk_xserver_start(e);
    if (st != LLMLINK_SUCCESS)
        goto fail_xserver;
    if (e->events.fd < 0 && llk_events_init(&e->events) != 0) {
        st = llk_err(LLMLINK_FAILED, "llmlink_init: eventfd (engine events): %s",
                     strerror(errno));
        goto fail_tasks;
    }
    st = llk_tasks_start(e, e->opts.async_workers);
    if (st != LLMLINK_SUCCESS)
        goto fail_tasks;
    st = llk_rdma_mender_start(e);
    if (st != LLMLINK_SUCCESS)
        goto fail_mender;
    e->stop = false;
    e->state = LLK_ENGINE_RUNNING;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, IO_THREAD_STACK);
    int rc = pthread_create(&e->io_thread, &attr, llk_reactor_main, e);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        e->state = LLK_ENGINE_CREATED;
        st = llk_err(LLMLINK_FAILED, "llmlink_init: cannot start the I/O thread: %s",
                     strerror(rc));
        goto fail_thread;
    }
    e->io_started = true;
    pthread_mutex_unlock(&e->mu);
    return LLMLINK_SUCCESS;

fail_thread:
    llk_rdma_mender_stop(e);
fail_mender:
    llk_tasks_stop_begin(e);
    llk_tasks_join(e);
    llk_tasks_free(e);
fail_tasks:
    llk_xserver_stop(e);
fail_xserver:
    llk_registry_destroy(&e->reg);
    e->reg_ready = false;
    llk_rdma_close(e->rdma);
    e->rdma = NULL;
fail_listen:
    close_listeners(e);
    close(e->wakefd);
    e->wakefd = -1;
fail_eventfd:
    close(e->epfd);
    e->epfd = -1;
fail_epoll:
    llk_auth_key_free(e->auth);
    e->auth = NULL;
    llk_tls_release(e->tls);
    e->tls = NULL;
    llk_options_defaults(&e->opts);
    pthread_mutex_unlock(&e->mu);
    return st;
}

void llk_engine_finalize(llmlink_t *e)
{
    pthread_mutex_lock(&e->mu);
    if (e->state != LLK_ENGINE_RUNNING) {
        e->state = LLK_ENGINE_FINALIZED;
        pthread_mutex_unlock(&e->mu);
        return;
    }
    e->state = LLK_ENGINE_FINALIZED;
    pthread_mutex_unlock(&e->mu);
    /* Tasks first: no new ones, queued ones end CANCELLED, running ones
     * are asked to stop; the links' breaks below end their transfers. */
    llk_tasks_stop_begin(e);
    /* No more background rail repairs: they borrow the links' streams. */
    llk_rdma_mender_stop(e);
    pthread_mutex_lock(&e->mu);
    e->stop = true;
    llk_reactor_wake(e);
    pthread_mutex_unlock(&e->mu);
    if (e->io_started)
        pthread_join(e->io_thread, NULL);
    e->io_started = false;

    /* The I/O thread is gone: this thread now owns everything. Closing the
     * sockets is what tells the peers (they see EOF at once). */
    pthread_mutex_lock(&e->mu);
    while (e->conns) {
        llk_conn_t *c = e->conns;
        llk_conn_complete(e, c, LLMLINK_ENGINE_FINALIZED, "engine finalized");
        llk_conn_destroy(e, c);
    }
    close_listeners(e);
    pthread_mutex_unlock(&e->mu);
    /* Every link is broken: running tasks end now (handles stay valid). */
    llk_tasks_join(e);
    /* The links are broken: the owner thread ends their streams. Caches stay
     * registered (their count is still readable) until llk_engine_free. */
    llk_xserver_stop(e);
    pthread_mutex_lock(&e->mu);
    close(e->wakefd);
    close(e->epfd);
    e->wakefd = e->epfd = -1;
    pthread_mutex_unlock(&e->mu);
    LLK_INFO("cluster %llu: finalized", (unsigned long long)e->cluster_id);
}

void llk_engine_free(llmlink_t *e)
{
    /* Reverse order of creation: the links' QPs and CQs went with the
     * links (finalize), the caches' MRs go with the registry, then the
     * protection domains and devices. */
    llk_tasks_free(e);
    llk_events_free(&e->events);
    if (e->reg_ready) {
        llk_registry_destroy(&e->reg);
        e->reg_ready = false;
    }
    llk_rdma_close(e->rdma);
    e->rdma = NULL;
    llk_auth_key_free(e->auth); /* wiped */
    e->auth = NULL;
    llk_tls_release(e->tls); /* running relays hold their own reference */
    e->tls = NULL;
    llk_notify_state_free(&e->notify);
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->mu);
    free(e);
}
