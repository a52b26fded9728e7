/* link/client.c - opening a link: connect (with retries and fallback over
 * the remote ip infos), HELLO, then WELCOME or REJECT. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/addr.h"
#include "link/engine.h"
#include "link/tls.h"
#include "base/log.h"

/* Pause between two connection attempts to the same address, so that
 * llm.LinkRetryCount retries span a server's restart rather than burn out
 * in a microsecond. */
#define RETRY_BACKOFF_MS 50

static void close_socket(llmlink_t *e, llk_conn_t *c)
{
    llk_conn_close_fd(e, c);
    c->rx_len = c->tx_len = 0;
}

/* The connection to remote[remote_idx] failed with err: retry it, move on
 * to the next address, or give up. */
static void connect_failed(llmlink_t *e, llk_conn_t *c, int err, const char *what, int64_t now)
{
    char addr[72];
    llk_addr_format((struct sockaddr *)&c->remote[c->remote_idx], addr, sizeof addr);
    LLK_DEBUG("cluster %llu: %s %s (cluster %llu): %s", (unsigned long long)e->cluster_id, what,
              addr, (unsigned long long)c->remote_id, strerror(err));
    close_socket(e, c);
    if (c->tries_left > 1) {
        c->tries_left--;
        c->retry_at_ms = now + RETRY_BACKOFF_MS;
        llk_conn_set_state(e, c, LLK_CONN_CLI_PENDING);
        return;
    }
    if (c->remote_idx + 1 < c->num_remote) {
        c->remote_idx++;
        c->tries_left = e->opts.link_retry_count;
        c->retry_at_ms = now;
        llk_conn_set_state(e, c, LLK_CONN_CLI_PENDING);
        return;
    }
    llk_conn_complete(e, c, LLMLINK_LINK_FAILED, "%s %s: %s", what, addr, strerror(err));
    llk_conn_set_state(e, c, LLK_CONN_DEAD);
}

/* The local ip info to bind for remote[remote_idx]: the one at the same
 * index when it has the right family (one NIC per index), else the first of
 * the right family. NULL when none is given. */
static int pick_local(const llk_conn_t *c, int family)
{
    if (c->num_local == 0)
        return -1;
    if (c->remote_idx < c->num_local && c->local[c->remote_idx].ss_family == family)
        return (int)c->remote_idx;
    for (size_t i = 0; i < c->num_local; i++)
        if (c->local[i].ss_family == family)
            return (int)i;
    return -2;
}

/* TLS: the connected socket goes to a relay, and c reads and writes its
 * plaintext end; the relay's handshake runs while HELLO waits in it. */
static bool start_tls(llmlink_t *e, llk_conn_t *c, int64_t now)
{
    if (!e->tls)
        return true;
    epoll_ctl(e->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    int fd = llk_tls_wrap(e->tls, c->fd, false, e->opts.handshake_timeout_ms, c->peer);
    c->fd = -1;
    c->want_out = false;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
    if (fd < 0 || epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        int err = errno;
        if (fd >= 0)
            close(fd);
        connect_failed(e, c, err, "TLS relay for", now);
        return false;
    }
    c->fd = fd;
    return true;
}

/* Queues HELLO; false when it does not fit. */
static bool queue_hello(llmlink_t *e, llk_conn_t *c)
{
    llk_msg_hello_t m = {0};
    m.client_cluster_id = e->cluster_id;
    m.target_cluster_id = c->remote_id;
    m.client_role = (uint32_t)e->role;
    m.expected_server_role = c->expected_role;
    m.incarnation = e->incarnation;
    m.liveness_ms = e->opts.liveness_interval_ms;
    if (llk_engine_offers_rdma(e)) {
        m.ext[m.num_ext++].type = LLK_EXT_RDMA;
        if (!e->test_legacy_rails) {
            m.ext[m.num_ext++].type = LLK_EXT_RDMA_READ_DEPTH;
            m.ext[m.num_ext++].type = LLK_EXT_RDMA_RAILS;
        }
    }
    uint8_t wait[4];
    if (!e->test_legacy_wait)
        llk_wire_ext_wait_time(&m.ext[m.num_ext++], wait, (uint32_t)e->opts.sync_kv_wait_ms);
    /* What the server will let us attach (wire.h, LLK_EXT_STREAM_COUNT). */
    uint8_t count[2];
    llk_wire_ext_stream_count(&m.ext[m.num_ext++], count,
                              (uint16_t)(2 * e->opts.streams_per_link));
    if (!e->test_legacy_notify)
        m.ext[m.num_ext++].type = LLK_EXT_NOTIFY; /* we take NOTIFY (wire.h) */
    uint8_t f[LLK_WIRE_HEADER_SIZE + 128];
    size_t n = llk_wire_encode_hello(f, sizeof f, LLK_WIRE_VERSION, &m);
    return llk_conn_queue(c, f, n);
}

/* Connected: HELLO, or with a key AUTH_HELLO first (HELLO follows the
 * server's proof, llk_client_on_frame). */
static void send_hello(llmlink_t *e, llk_conn_t *c, int64_t now)
{
    if (!start_tls(e, c, now))
        return;
    c->rx_len = 0;
    c->auth.stage = LLK_AUTH_NONE;
    if (e->auth) {
        if (!llk_auth_client_hello(e, c))
            return;
    } else if (!queue_hello(e, c)) {
        connect_failed(e, c, ENOBUFS, "queue HELLO for", now);
        return;
    }
    llk_conn_set_state(e, c, LLK_CONN_CLI_HELLO_SENT);
    if (llk_conn_flush(e, c, now) != 0)
        connect_failed(e, c, errno, "send HELLO to", now);
}

void llk_client_start(llmlink_t *e, llk_conn_t *c, int64_t now)
{
    struct sockaddr_storage *ra = &c->remote[c->remote_idx];
    llk_addr_format((struct sockaddr *)ra, c->peer, sizeof c->peer);
    int li = pick_local(c, ra->ss_family);
    if (li == -2) {
        llk_conn_complete(e, c, LLMLINK_LINK_FAILED,
                          "no local ip info of the same address family as %s", c->peer);
        llk_conn_set_state(e, c, LLK_CONN_DEAD);
        return;
    }
    int fd = socket(ra->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        connect_failed(e, c, errno, "socket for", now);
        return;
    }
    c->fd = fd;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (li >= 0) {
        /* The local port is advisory (llm_datadist examples give the same
         * ip:port on both sides): bind the address, let the kernel pick. */
        struct sockaddr_storage la = c->local[li];
        llk_addr_set_port((struct sockaddr *)&la, 0);
        if (bind(fd, (struct sockaddr *)&la, c->local_len[li]) != 0) {
            int err = errno;
            char lt[72];
            llk_addr_format((struct sockaddr *)&la, lt, sizeof lt);
            close_socket(e, c);
            llk_conn_complete(e, c, LLMLINK_LINK_FAILED, "bind local ip %s: %s", lt,
                              strerror(err));
            llk_conn_set_state(e, c, LLK_CONN_DEAD);
            return;
        }
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = c};
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        connect_failed(e, c, errno, "epoll_ctl for", now);
        return;
    }
    c->want_out = true;
    int r = connect(fd, (struct sockaddr *)ra, c->remote_len[c->remote_idx]);
    if (r == 0) {
        send_hello(e, c, now);
        return;
    }
    if (errno == EINPROGRESS) {
        llk_conn_set_state(e, c, LLK_CONN_CLI_CONNECTING);
        return;
    }
    connect_failed(e, c, errno, "connect to", now);
}

void llk_client_on_writable(llmlink_t *e, llk_conn_t *c, int64_t now)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err) {
        connect_failed(e, c, err, "connect to", now);
        return;
    }
    send_hello(e, c, now);
}

static llmlink_status_t map_reject(uint32_t s)
{
    /* Only statuses a server sends in a REJECT pass through: anything else
     * from the wire becomes LINK_FAILED rather than a misleading code. */
    switch (s) {
    case LLMLINK_CLUSTER_NUM_EXCEED_LIMIT:
    case LLMLINK_VERSION_MISMATCH:
    case LLMLINK_CLUSTER_ID_MISMATCH:
    case LLMLINK_ROLE_NOT_ALLOWED:
    case LLMLINK_PROTOCOL_ERROR:
    case LLMLINK_LINK_FAILED:
    case LLMLINK_AUTH_FAILED: /* a TLS server to a plaintext client */
    case LLMLINK_ACCESS_DENIED: /* llmlink.AllowedClusters */
    case LLMLINK_ALREADY_LINK:  /* the server holds a live link with our id */
        return s;
    default:
        return LLMLINK_LINK_FAILED;
    }
}

void llk_client_on_frame(llmlink_t *e, llk_conn_t *c, const llk_frame_header_t *h,
                         const uint8_t *payload, int64_t now)
{
    const char *why = NULL;
    if (h->type == LLK_MSG_REJECT) {
        llk_msg_reject_t r;
        if (llk_wire_decode_reject(payload, h->length, &r, &why) != 0) {
            e->protocol_errors++;
            llk_conn_complete(e, c, LLMLINK_PROTOCOL_ERROR, "peer %s sent a bad REJECT: %s",
                              c->peer, why);
        } else {
            llk_conn_complete(e, c, map_reject(r.status), "refused by %s: %s (%s)", c->peer,
                              r.message, llmlink_status_name(r.status));
        }
        llk_conn_set_state(e, c, LLK_CONN_DEAD);
        return;
    }
    if (c->auth.stage == LLK_AUTH_CLI_WAIT_CHALLENGE) {
        /* The server proved the key: the proof, then HELLO, in one write. */
        if (!llk_auth_client_on_challenge(e, c, h, payload, now))
            return;
        if (!queue_hello(e, c)) {
            llk_conn_complete(e, c, LLMLINK_LINK_FAILED, "cannot queue HELLO for %s", c->peer);
            llk_conn_set_state(e, c, LLK_CONN_DEAD);
        }
        return;
    }
    if (h->type != LLK_MSG_WELCOME) {
        e->protocol_errors++;
        llk_conn_complete(e, c, LLMLINK_PROTOCOL_ERROR,
                          "peer %s sent message type %u during the handshake", c->peer, h->type);
        llk_conn_set_state(e, c, LLK_CONN_DEAD);
        return;
    }
    llk_msg_welcome_t w;
    if (llk_wire_decode_welcome(payload, h->length, &w, &why) != 0) {
        e->protocol_errors++;
        llk_conn_complete(e, c, LLMLINK_PROTOCOL_ERROR, "peer %s sent a bad WELCOME: %s",
                          c->peer, why);
        llk_conn_set_state(e, c, LLK_CONN_DEAD);
        return;
    }
    if (w.server_cluster_id != c->remote_id) {
        llk_conn_complete(e, c, LLMLINK_CLUSTER_ID_MISMATCH,
                          "peer %s is cluster %llu, not cluster %llu", c->peer,
                          (unsigned long long)w.server_cluster_id,
                          (unsigned long long)c->remote_id);
        llk_conn_set_state(e, c, LLK_CONN_DEAD);
        return;
    }
    /* The server checks the expected role too, but a client does not rely
     * on its peer to keep the contract. */
    if (c->expected_role != 0 && w.server_role != c->expected_role) {
        llk_conn_complete(e, c, LLMLINK_ROLE_NOT_ALLOWED,
                          "peer %s has role %u, the link asked for role %u", c->peer,
                          w.server_role, c->expected_role);
        llk_conn_set_state(e, c, LLK_CONN_DEAD);
        return;
    }
    int crit = llk_wire_find_unknown_critical(w.ext, w.num_ext);
    if (crit >= 0) {
        llk_conn_complete(e, c, LLMLINK_PROTOCOL_ERROR,
                          "peer %s requires unsupported extension 0x%04x", c->peer,
                          w.ext[crit].type);
        llk_conn_set_state(e, c, LLK_CONN_DEAD);
        return;
    }
    /* A server that accepts data streams says so; the streams are attached
     * by the API thread once the link is up (llk_engine_link). */
    llk_xlink_t *xl = NULL;
    for (uint16_t i = 0; i < w.num_ext && !xl; i++)
        if (w.ext[i].type == LLK_EXT_DATA_STREAMS) {
            xl = llk_xlink_install(c, c->remote_id, true, e->opts.streams_per_link, c->peer);
            if (!xl) {
                llk_conn_complete(e, c, LLMLINK_OUT_OF_MEMORY, "out of memory for the link");
                llk_conn_set_state(e, c, LLK_CONN_DEAD);
                return;
            }
        }
    if (xl && !llk_auth_bind_link(e, c, xl)) {
        llk_conn_complete(e, c, LLMLINK_FAILED, "libcrypto: cannot derive the session key");
        llk_conn_set_state(e, c, LLK_CONN_DEAD);
        return;
    }
    if (xl)
        llk_xlink_take_peer_wait(e, xl, w.ext, w.num_ext);
    if (xl && llk_engine_offers_rdma(e))
        for (uint16_t i = 0; i < w.num_ext; i++)
            if (w.ext[i].type == LLK_EXT_RDMA) {
                llk_xlink_set_rails(xl, c, true);
                llk_xlink_set_peer_read_depth(
                    xl, !e->test_legacy_rails &&
                            llk_wire_has_ext(w.ext, w.num_ext, LLK_EXT_RDMA_READ_DEPTH));
                llk_xlink_set_peer_rails(
                    xl, !e->test_legacy_rails &&
                            llk_wire_has_ext(w.ext, w.num_ext, LLK_EXT_RDMA_RAILS));
            }
    c->remote_incarnation = w.incarnation;
    c->peer_notify = !e->test_legacy_notify &&
                     llk_wire_has_ext(w.ext, w.num_ext, LLK_EXT_NOTIFY);
    c->liveness_ms = w.liveness_ms < e->opts.liveness_interval_ms ? w.liveness_ms
                                                                   : e->opts.liveness_interval_ms;
    c->deadline_ms = 0;
    c->last_rx_ms = now;
    llk_conn_set_state(e, c, LLK_CONN_LINKED);
    llk_conn_complete(e, c, LLMLINK_SUCCESS, "linked");
    LLK_INFO("cluster %llu: linked to cluster %llu at %s (liveness %u ms)",
             (unsigned long long)e->cluster_id, (unsigned long long)c->remote_id, c->peer,
             c->liveness_ms);
}
