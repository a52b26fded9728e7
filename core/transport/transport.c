/* transport/transport.c - the registry of transports (transport.h), what
 * every link decides about them when its first stream attaches, and the
 * host identity the same-host transport relies on. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "link/engine.h"
#include "transport/transport.h"

/* tcp last: it serves every link (LLK_TRANSPORT_ON_STREAM). */
_Static_assert(LLK_XPORT_TCP == LLK_NXPORTS - 1, "tcp is the last resort");
const llk_transport_ops_t *const llk_transports[LLK_NXPORTS] = {
    [LLK_XPORT_SHM] = &llk_transport_shm,
    [LLK_XPORT_RDMA] = &llk_transport_rdma,
    [LLK_XPORT_TCP] = &llk_transport_tcp,
};

/* ---- host identity ------------------------------------------------------ */

void llk_host_id_self(llk_host_id_t *h)
{
    memset(h, 0, sizeof *h);
    h->pid = (uint32_t)getpid();
    /* boot_id is "xxxxxxxx-xxxx-...": 32 hex digits, dashes skipped. */
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        char text[64] = {0};
        ssize_t n = read(fd, text, sizeof text - 1);
        close(fd);
        size_t o = 0;
        for (ssize_t i = 0; i + 1 < n && o < sizeof h->boot_id; i++) {
            if (text[i] == '-')
                continue;
            unsigned v;
            if (sscanf(text + i, "%2x", &v) != 1)
                break;
            h->boot_id[o++] = (uint8_t)v;
            i++;
        }
    }
    struct stat st;
    if (stat("/proc/self/ns/pid", &st) == 0)
        h->pidns = (uint64_t)st.st_ino;
}

bool llk_host_id_same_host(const llk_host_id_t *a, const llk_host_id_t *b)
{
    static const uint8_t zero[16];
    /* Without a boot id nothing proves the same kernel: say no. The pid
     * namespace must match too, or the pid would name another process. */
    if (!memcmp(a->boot_id, zero, sizeof zero))
        return false;
    return !memcmp(a->boot_id, b->boot_id, sizeof a->boot_id) && a->pidns == b->pidns &&
           a->pidns != 0;
}

/* ---- lookups ---------------------------------------------------------------- */

const llk_transport_ops_t *llk_transport_by_op(uint8_t op)
{
    for (int i = 0; i < LLK_NXPORTS; i++)
        if (op == llk_transports[i]->op_read || op == llk_transports[i]->op_write)
            return llk_transports[i];
    return NULL;
}

const llk_transport_ops_t *llk_transport_by_setup(uint16_t type)
{
    for (int i = 0; i < LLK_NXPORTS; i++)
        if ((llk_transports[i]->setup_type && type == llk_transports[i]->setup_type) ||
            (llk_transports[i]->repair_type && type == llk_transports[i]->repair_type))
            return llk_transports[i];
    return NULL;
}

const llk_transport_ops_t *llk_transport_for_link(llk_xlink_t *xl)
{
    for (int i = 0; i < LLK_NXPORTS; i++)
        if (llk_transports[i]->link_usable(xl))
            return llk_transports[i];
    return &llk_transport_tcp;
}

const llk_transport_ops_t *llk_transport_choose(llk_xfer_ctx_t *ctx, int fd,
                                                llk_xmove_out_t *out)
{
    for (int i = 0; i < LLK_NXPORTS; i++) {
        const llk_transport_ops_t *t = llk_transports[i];
        llk_xuse_t u = t->request_usable ? t->request_usable(ctx, fd, out)
                                         : t->link_usable(ctx->xl) ? LLK_XUSE_YES : LLK_XUSE_NO;
        if (u == LLK_XUSE_YES)
            return t;
        if (u == LLK_XUSE_STOP)
            return NULL;
    }
    return &llk_transport_tcp; /* not reached: tcp is always usable */
}

/* ---- link lifetime ---------------------------------------------------------- */

int llk_transport_link_new(llk_xport_link_t *x)
{
    for (int i = 0; i < LLK_NXPORTS; i++) {
        if (!llk_transports[i]->link_new)
            continue;
        x->state[i] = llk_transports[i]->link_new();
        if (!x->state[i]) {
            llk_transport_link_free(x);
            return -1;
        }
    }
    return 0;
}

void llk_transport_link_free(llk_xport_link_t *x)
{
    /* Reverse order of creation. */
    for (int i = LLK_NXPORTS - 1; i >= 0; i--) {
        if (x->state[i] && llk_transports[i]->link_free)
            llk_transports[i]->link_free(x->state[i]);
        x->state[i] = NULL;
    }
}

void llk_transport_fence(llk_xlink_t *xl)
{
    for (int i = 0; i < LLK_NXPORTS; i++)
        if (llk_transports[i]->fence)
            llk_transports[i]->fence(xl);
}

/* ---- choosing a link's transports --------------------------------------------- */

bool llk_transport_allowed(const llmlink_t *e, const llk_xlink_t *xl, const llk_transport_ops_t *t)
{
    uint8_t mine = (uint8_t)e->opts.transport, theirs = xl->xport.remote_transport;
    return (mine == LLK_TRANSPORT_AUTO || mine == t->id) &&
           (theirs == LLK_TRANSPORT_AUTO || theirs == t->id);
}

const char *llk_transport_conflict(llmlink_t *e, llk_xlink_t *xl, const llk_host_id_t *remote,
                                   uint8_t remote_transport, char *buf, size_t cap)
{
    /* Reverse order of preference (see link_conflict in transport.h). */
    for (int i = LLK_NXPORTS - 1; i >= 0; i--) {
        const llk_transport_ops_t *t = llk_transports[i];
        const char *why =
            t->link_conflict ? t->link_conflict(e, xl, remote, remote_transport, buf, cap) : NULL;
        if (why)
            return why;
    }
    return NULL;
}

bool llk_transport_record(llmlink_t *e, llk_xlink_t *xl, const llk_host_id_t *remote,
                          uint8_t remote_transport)
{
    pthread_mutex_lock(&xl->mu);
    llk_xport_link_t *x = &xl->xport;
    bool ok = true;
    if (x->set) {
        /* The transport of a link never changes under a running transfer. */
        ok = !memcmp(&x->remote_host, remote, sizeof *remote) &&
             x->remote_transport == remote_transport;
    } else {
        x->set = true;
        x->remote_transport = remote_transport;
        x->remote_host = *remote;
        for (int i = 0; i < LLK_NXPORTS; i++)
            if (llk_transports[i]->link_record)
                llk_transports[i]->link_record(e, xl);
    }
    pthread_mutex_unlock(&xl->mu);
    return ok;
}

llmlink_status_t llk_transport_setup_client(llmlink_t *e, llk_xlink_t *xl, int fd,
                                            int64_t deadline_ms, char *detail, size_t dlen)
{
    for (int i = 0; i < LLK_NXPORTS; i++) {
        if (!llk_transports[i]->setup_client)
            continue;
        llmlink_status_t st = llk_transports[i]->setup_client(e, xl, fd, deadline_ms, detail, dlen);
        if (st != LLMLINK_SUCCESS)
            return st;
    }
    return LLMLINK_SUCCESS;
}
