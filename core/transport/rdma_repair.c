/* rdma_repair.c - re-establishing a rail that went down (rdma.h: the
 * repair of a rail), without relinking: a fresh QP on the rail's CQ and
 * PD, paired with a fresh QP of the peer through XRDMA_RAIL_RESET /
 * XRDMA_RAIL_RESET_OK on a data stream (rdma.c). The slot table, the CQ
 * and the rail's MRs stay; the old QP goes once nothing of it is left
 * (no chain in flight, no window bound through it). */
#include "transport/rdma_verbs_int.h"

#include <stdio.h>
#include <string.h>

#if LLK_HAVE_VERBS
#include <errno.h>
#include <sys/random.h>

#include "base/clock.h"
#include "base/log.h"
#include "transport/rdma_plan.h"

/* Attempts per rail: at most one a second, and after failed attempts
 * (the port ACTIVE, the peer not answering) twice as long each time up
 * to 8 s: a peer whose NIC stays down is not asked every second, and a
 * request that repairs before it sends pays for it rarely. */
#define REPAIR_EVERY_MS 1000
#define REPAIR_BACKOFF_MAX_MS 8000
/* How long a reset waits for the rail's last chains to be reaped. */
#define REPAIR_DRAIN_MS 200

bool llk_rdma_rail_repairable(llk_rdma_link_t *l, uint16_t k)
{
    if (!l || k >= l->nrails)
        return false;
    rail_t *rl = &l->rail[k];
    pthread_mutex_lock(&rl->mu);
    bool down = rl->failed;
    int64_t now = llk_now_ms();
    bool due = down && now >= rl->repair_at && !rl->repairing;
    if (due) {
        rl->repair_at = now + REPAIR_EVERY_MS;
        rl->repairing = true;
    }
    pthread_mutex_unlock(&rl->mu);
    if (!due)
        return false;
    struct ibv_port_attr pa;
    memset(&pa, 0, sizeof pa);
    if (l->r->v->query_port(rl->dev->ctx, rl->dev->port, &pa) == 0 &&
        pa.state == IBV_PORT_ACTIVE)
        return true;
    pthread_mutex_lock(&rl->mu);
    rl->repairing = false;
    pthread_mutex_unlock(&rl->mu);
    return false;
}

void llk_rdma_rail_repair_done(llk_rdma_link_t *l, uint16_t k)
{
    if (!l || k >= l->nrails)
        return;
    rail_t *rl = &l->rail[k];
    pthread_mutex_lock(&rl->mu);
    rl->repairing = false;
    /* from the end of this attempt, which may have waited for its answer
     * and probe, not from its start */
    if (rl->failed) {
        uint32_t b = rl->repair_backoff_ms ? 2 * rl->repair_backoff_ms : REPAIR_EVERY_MS;
        rl->repair_backoff_ms = b < REPAIR_BACKOFF_MAX_MS ? b : REPAIR_BACKOFF_MAX_MS;
    }
    rl->repair_at = llk_now_ms() + (rl->repair_backoff_ms ? rl->repair_backoff_ms
                                                           : REPAIR_EVERY_MS);
    pthread_mutex_unlock(&rl->mu);
}

uint16_t llk_rdma_link_rails_down(llk_rdma_link_t *l)
{
    if (!l)
        return 0;
    uint32_t up = atomic_load(&l->nup);
    return up >= l->nrails ? 0 : (uint16_t)(l->nrails - up);
}

bool llk_rdma_rail_repair_log_once(llk_rdma_link_t *l, uint16_t k)
{
    if (!l || k >= l->nrails)
        return false;
    rail_t *rl = &l->rail[k];
    pthread_mutex_lock(&rl->mu);
    bool first = !rl->repair_logged;
    rl->repair_logged = true;
    pthread_mutex_unlock(&rl->mu);
    return first;
}

/* Deallocates the windows that live grants of l bound on rail k (r->gmu
 * held): a window bound through the old QP holds it, and must stop
 * working with it; the grants stand on their other rails (grant_invalidate
 * skips a rail without windows). */
static void kill_rail_windows(llk_rdma_link_t *l, uint16_t k)
{
    for (llk_rdma_grant_t *g = l->r->grants; g; g = g->next) {
        if (g->l != l || !g->mw || g->nrails != l->nrails)
            continue;
        for (uint32_t i = 0; i < g->nmw / g->nrails; i++) {
            struct ibv_mw **mw = &g->mw[(size_t)i * g->nrails + k];
            if (*mw)
                ibv_dealloc_mw(*mw);
            *mw = NULL;
        }
    }
}

/* This side's record of rail k (rl->mu held), as llk_rdma_link_local. */
static void rail_record(const llk_rdma_link_t *l, const rail_t *rl, llk_xrail_wire_t *out)
{
    memset(out, 0, sizeof *out);
    out->qpn = rl->qp->qp_num;
    out->psn = rl->psn;
    memcpy(out->gid, rl->gid.raw, 16);
    out->lid = rl->dev->lid;
    out->mtu = llk_rdma_mtu_negotiate(rl->dev->active_mtu, rl->dev->active_mtu, l->r->o.rdma_mtu);
    out->rd_init = (uint16_t)rl->rd_init;
    out->rd_dest = (uint16_t)rl->rd_dest;
}

/* Waits (bounded) until no chain of the rail is in flight (rl->mu held,
 * released while it sleeps): the chains of a running call are reaped by
 * that call, orphaned ones here. */
static bool drain(llk_rdma_link_t *l, rail_t *rl, uint16_t k)
{
    unsigned us = 10;
    for (int64_t until = llk_now_ms() + REPAIR_DRAIN_MS; llk_rv_slots_busy(rl);) {
        (void)llk_rv_poll_rail(l, rl, k);
        if (!llk_rv_slots_busy(rl))
            break;
        if (llk_now_ms() >= until)
            return false;
        pthread_mutex_unlock(&rl->mu);
        llk_rv_nap(&us);
        pthread_mutex_lock(&rl->mu);
    }
    return true;
}

int llk_rdma_rail_reset_begin(llk_rdma_link_t *l, uint16_t k, llk_xrail_wire_t *rec, char *why,
                              size_t cap)
{
    if (!l || k >= l->nrails) {
        snprintf(why, cap, "no rail %u", k);
        return -1;
    }
    llk_rdma_t *r = l->r;
    rail_t *rl = &l->rail[k];
    pthread_mutex_lock(&r->gmu); /* windows, then the rail (rdma_verbs_int.h) */
    pthread_mutex_lock(&rl->mu);
    /* the owner learns of the failure here: its QP of the rail goes too */
    llk_rv_rail_down(l, rl, k, "reset by the peer", false, false);
    llk_rv_qp_to_err(r, rl);
    int rc = -1;
    uint32_t depth = llk_rv_sq_depth(rl->dev);
    struct ibv_qp *qp = NULL;
    if (!drain(l, rl, k)) {
        snprintf(why, cap, "rail %u (%s): work requests still in flight", k, rl->dev->name);
        rc = 1;
    } else if ((qp = llk_rv_qp_new(r, rl, depth, why, cap)) != NULL) {
        kill_rail_windows(l, k);
        struct ibv_qp *old = rl->qp;
        rl->qp = qp;
        if (r->v->destroy_qp(old) != 0)
            LLK_WARN("rdma: rail %u (%s): ibv_destroy_qp of the failed QP: %s", k,
                     rl->dev->name, strerror(errno));
        rl->in_err = false;
        rl->free_wr = depth;
        rl->rd_inflight = 0;
        uint32_t rnd = 0;
        if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd)
            rnd = (uint32_t)llk_now_ms() * 2654435761u;
        rl->psn = rnd & 0xFFFFFFu;
        if (llk_rv_to_init(r->v, rl) == 0) {
            rail_record(l, rl, rec);
            rc = 0;
        } else {
            snprintf(why, cap, "%s: fresh QP to INIT: %s", rl->dev->name, strerror(errno));
            llk_rv_qp_to_err(r, rl);
        }
    }
    pthread_mutex_unlock(&rl->mu);
    pthread_mutex_unlock(&r->gmu);
    return rc;
}

/* Whether the peer answers on the rail's fresh QP (rl->mu held, released
 * while it waits; the rail still down, so no call posts on it): a
 * zero-length RDMA READ, which moves no byte and names no memory (no rkey
 * is checked for zero bytes), must complete with success within probe_ms.
 * Without it a rail whose port came back while the PEER's NIC is still
 * down would be declared up, and the next transfer would stall on it
 * until the stall check failed it over again. 0, or -1 with why (the QP
 * then in the error state; its flushed READ frees the slot later). */
static int reach(llk_rdma_link_t *l, rail_t *rl, uint16_t k, int probe_ms, char *why, size_t cap)
{
    int si = llk_rv_free_slot(rl);
    if (si < 0 || rl->free_wr < 1 || rl->rd_max <= rl->rd_inflight) {
        snprintf(why, cap, "%s: no room on the fresh QP for its reachability probe",
                 rl->dev->name);
        return -1;
    }
    /* the rail's reason from here on is the probe's (on_wc records a
     * failed completion there; a timeout is written below) */
    rl->why_real = false;
    rl->down_why[0] = '\0';
    uint32_t seq = ++rl->seq;
    struct ibv_send_wr wr, *bad = NULL;
    memset(&wr, 0, sizeof wr);
    wr.wr_id = ((uint64_t)seq << 16) | (uint32_t)si;
    wr.opcode = IBV_WR_RDMA_READ;
    wr.send_flags = IBV_SEND_SIGNALED;
    wr.num_sge = 0; /* zero bytes: nothing lands anywhere */
    int prc = ibv_post_send(rl->qp, &wr, &bad);
    if (prc != 0) {
        snprintf(why, cap, "%s: reachability probe: ibv_post_send: %s", rl->dev->name,
                 strerror(prc));
        return -1;
    }
    /* op NULL: on_wc only gives the slot back (or downs the QP) */
    llk_rv_slot_take(rl, si, seq, 1, true, NULL);
    const slot_t *s = &rl->slot[si];
    int64_t t0 = llk_now_ms();
    unsigned us = 10;
    while (llk_rv_poll_rail(l, rl, k) >= 0 && s->busy && s->seq == seq) {
        if (llk_now_ms() - t0 >= probe_ms) {
            snprintf(rl->down_why, sizeof rl->down_why,
                     "the peer did not answer a zero-length RDMA READ on a fresh QP within %d ms",
                     probe_ms);
            rl->why_real = true;
            snprintf(why, cap, "%s: %s (unreachable on this rail)", rl->dev->name, rl->down_why);
            llk_rv_qp_to_err(l->r, rl);
            return -1;
        }
        pthread_mutex_unlock(&rl->mu);
        llk_rv_nap(&us);
        pthread_mutex_lock(&rl->mu);
    }
    if (rl->in_err) {
        /* on_wc (or the failed poll) wrote the rail's reason */
        snprintf(why, cap, "%s: reachability probe on the fresh QP: %s", rl->dev->name,
                 rl->down_why);
        return -1;
    }
    LLK_DEBUG("rdma: rail %u (%s): the peer answered the reachability probe in %lld ms", k,
              rl->dev->name, (long long)(llk_now_ms() - t0));
    return 0;
}

int llk_rdma_rail_reset_end(llk_rdma_link_t *l, uint16_t k, const llk_xrail_wire_t *rem,
                            int probe_ms, char *why, size_t cap)
{
    if (!l || k >= l->nrails) {
        snprintf(why, cap, "no rail %u", k);
        return -1;
    }
    rail_t *rl = &l->rail[k];
    pthread_mutex_lock(&rl->mu);
    int rc = -1;
    if (rl->in_err)
        snprintf(why, cap, "rail %u (%s) failed again during its repair", k, rl->dev->name);
    else if ((rc = llk_rv_rail_connect(l, rl, rem, why, cap)) == 0 && probe_ms > 0 && rl->failed)
        rc = reach(l, rl, k, probe_ms, why, cap);
    if (rc == 0 && rl->failed) {
        rl->failed = false;
        rl->why_real = false;
        rl->down_why[0] = '\0';
        rl->repair_logged = false;
        rl->repair_backoff_ms = 0;
        atomic_fetch_add(&l->nup, 1);
        atomic_fetch_add(&l->repairs, 1);
        LLK_INFO("rdma: rail %u (%s) re-established: QP %u -> QP %u", k, rl->dev->name,
                 rl->qp->qp_num, rem->qpn);
    } else if (rc != 0) {
        llk_rv_qp_to_err(l->r, rl);
    }
    pthread_mutex_unlock(&rl->mu);
    return rc;
}

#else /* !LLK_HAVE_VERBS */

uint16_t llk_rdma_link_rails_down(llk_rdma_link_t *l)
{
    (void)l;
    return 0;
}

bool llk_rdma_rail_repair_log_once(llk_rdma_link_t *l, uint16_t k)
{
    (void)l;
    (void)k;
    return false;
}
bool llk_rdma_rail_repairable(llk_rdma_link_t *l, uint16_t k)
{
    (void)l;
    (void)k;
    return false;
}
void llk_rdma_rail_repair_done(llk_rdma_link_t *l, uint16_t k)
{
    (void)l;
    (void)k;
}
int llk_rdma_rail_reset_begin(llk_rdma_link_t *l, uint16_t k, llk_xrail_wire_t *rec, char *why,
                              size_t cap)
{
    (void)l;
    (void)k;
    (void)rec;
    snprintf(why, cap, "built without libibverbs headers");
    return -1;
}
int llk_rdma_rail_reset_end(llk_rdma_link_t *l, uint16_t k, const llk_xrail_wire_t *rem,
                            int probe_ms, char *why, size_t cap)
{
    (void)l;
    (void)k;
    (void)rem;
    (void)probe_ms;
    snprintf(why, cap, "built without libibverbs headers");
    return -1;
}
#endif
