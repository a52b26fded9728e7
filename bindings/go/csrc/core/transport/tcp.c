/* transport/tcp.c - the bytes travel on the data stream itself, straight
 * from and into the registered memory (sendmsg/recvmsg with iovecs over
 * the segments): the requester's poll loop and the owner's epoll loop move
 * them, so this table has no move or grant hooks. Works everywhere; the
 * last in the order of preference, and the fallback of the others. */
#include <sys/socket.h>

#include "link/engine.h"
#include "transport/transport.h"

/* Slices no longer than this spread a large run over the streams. */
#define TCP_SLICE_BYTES (1u << 20)

static bool tcp_link_usable(llk_xlink_t *xl)
{
    (void)xl;
    return true;
}

/*
 * shutdown, not close: a borrower or the owner thread may be inside a call
 * on the descriptor; it sees EOF/EPIPE and lets go.
 *
 * A shutdown does not discard what the socket already received, and
 * recvmsg goes on returning it: the owner thread itself stops consuming a
 * broken link's payload (it checks xl->broken_now before every step,
 * xfer/owner.c), and the shutdown here only wakes it (epoll reports
 * EPOLLIN|EPOLLRDHUP). Owner streams are shut for reading only, so that
 * their peer hears nothing until the owner thread has closed the stream
 * (FIN, or RST when payload was left unread): a requester whose write
 * failed waits for exactly that before its call returns (xfer/requester.c,
 * wait_owner_fenced), and so knows no byte of it lands later.
 */
static void tcp_fence(llk_xlink_t *xl)
{
    for (int i = 0; i < LLK_MAX_STREAMS; i++) {
        if (xl->req_fd[i] >= 0)
            shutdown(xl->req_fd[i], SHUT_RDWR);
        if (xl->own_fd[i] >= 0)
            shutdown(xl->own_fd[i], SHUT_RD);
    }
}

static void tcp_add_stats(llk_xstats_t *x, uint64_t requests, uint64_t fallbacks)
{
    (void)fallbacks;
    atomic_fetch_add(&x->tcp_requests, requests);
}

const llk_transport_ops_t llk_transport_tcp = {
    .name = "tcp",
    .title = "tcp",
    .index = LLK_XPORT_TCP,
    .id = LLK_TRANSPORT_TCP,
    .op_read = LLK_XOP_READ,
    .op_write = LLK_XOP_WRITE,
    .answer_type = LLK_XMSG_RESP,
    .on_stream = true,
    .slice_bytes = TCP_SLICE_BYTES,
    .fence = tcp_fence,
    .link_usable = tcp_link_usable,
    .add_stats = tcp_add_stats,
};
