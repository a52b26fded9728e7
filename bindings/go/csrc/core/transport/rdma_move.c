/* rdma_move.c - the data path of the RDMA transport (rdma.h: llk_rdma_move,
 * llk_rdma_link_abort): chains of RDMA READ / WRITE work requests over a
 * link's rails, and rail failover - a rail that fails under a call is
 * marked down for the link and the call's unfinished slices go again over
 * the rails still up. Devices, rails, MRs and grants: rdma_verbs_link.c. */
#include "transport/rdma_verbs_int.h"

#if LLK_HAVE_VERBS
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/log.h"
#include "transport/rdma_plan.h"

/* ---- the data path --------------------------------------------------------------------------- */

static const char *port_state_name(int st)
{
    static const char *const names[] = {"NOP", "DOWN", "INIT", "ARMED", "ACTIVE", "ACTIVE_DEFER"};
    return st >= 0 && st < 6 ? names[st] : "unknown";
}

/* Marks rail k down (rl->mu held), once; why is kept while it is the first
 * real reason (a flush is not one: it is only the echo of a QP moved to
 * the error state). count: a failover when other rails are still up (not
 * for a link that is being aborted whole). */
void llk_rv_rail_down(llk_rdma_link_t *l, rail_t *rl, uint16_t k, const char *why, bool real,
                      bool count)
{
    if (!rl->failed) {
        rl->failed = true;
        uint32_t left = atomic_fetch_sub(&l->nup, 1) - 1;
        if (count && left > 0) {
            atomic_fetch_add(&l->failovers, 1);
            LLK_WARN("rdma: rail %u (%s) down: %s; its work goes on over %u other rail(s)", k,
                     rl->dev->name, why, left);
        } else if (count) {
            LLK_WARN("rdma: rail %u (%s) down: %s; no rail left", k, rl->dev->name, why);
        }
    }
    if (real && !rl->why_real) {
        snprintf(rl->down_why, sizeof rl->down_why, "%s", why);
        rl->why_real = true;
    } else if (!rl->down_why[0]) {
        snprintf(rl->down_why, sizeof rl->down_why, "%s", why);
    }
}

/* Moves the rail's QP to the error state (rl->mu held): the device stops
 * every work request on it and completes them (flushed), and the peer can
 * no longer reach this side's memory through it. Once per QP. */
void llk_rv_qp_to_err(const llk_rdma_t *r, rail_t *rl)
{
    if (rl->in_err || !rl->qp)
        return;
    struct ibv_qp_attr a;
    memset(&a, 0, sizeof a);
    a.qp_state = IBV_QPS_ERR;
    (void)r->v->modify_qp(rl->qp, &a, IBV_QP_STATE);
    rl->in_err = true;
}

/* Hands one completion to the chain it ends (rl->mu held). */
static void on_wc(llk_rdma_link_t *l, rail_t *rl, const struct ibv_wc *wc, uint16_t rail_no)
{
    uint32_t si = (uint32_t)(wc->wr_id & 0xFFFFu), seq = (uint32_t)(wc->wr_id >> 16);
    if (si >= RAIL_SLOTS)
        return;
    slot_t *s = &rl->slot[si];
    /* After an error every later WR of the chain completes too (flushed):
     * those find the slot free or reused (another seq) and are dropped. */
    if (!s->busy || s->seq != seq)
        return;
    move_op_t *op = s->op;
    rl->progress_ms = llk_now_ms();
    if (wc->status != IBV_WC_SUCCESS) {
        char why[160];
        snprintf(why, sizeof why, "%s completion: %s (status %d)",
                 op && !op->state ? "memory window operation"
                                  : s->read ? "RDMA READ" : "RDMA WRITE",
                 l->r->v->wc_status_str(wc->status), (int)wc->status);
        llk_rv_rail_down(l, rl, rail_no, why, wc->status != IBV_WC_WR_FLUSH_ERR, true);
        /* the rest of the rail's chains stop now, not at their retry timeout */
        llk_rv_qp_to_err(l->r, rl);
        if (op && op->state) {
            /* the chain's slices go again over another rail */
            for (uint32_t j = 0; j < s->nwr; j++)
                atomic_store(&op->state[s->sidx[j]], SG_PENDING);
            atomic_fetch_add(&op->requeued, 1);
        } else if (op && !atomic_load(&op->failed)) {
            op->st = wc->status;
            op->rail = rail_no;
            atomic_store(&op->failed, true);
        }
    } else if (op && op->state) {
        for (uint32_t j = 0; j < s->nwr; j++)
            atomic_store(&op->state[s->sidx[j]], SG_DONE);
        atomic_fetch_add(&op->done, s->nwr);
        atomic_fetch_add(&rl->bytes, s->bytes);
    }
    if (op)
        atomic_fetch_sub(&op->chains, 1);
    rl->free_wr += s->nwr;
    if (s->read)
        rl->rd_inflight -= s->nwr;
    s->busy = false;
    s->op = NULL;
}

int llk_rv_poll_rail(llk_rdma_link_t *l, rail_t *rl, uint16_t rail_no)
{
    struct ibv_wc wc[POLL_BATCH];
    int got = ibv_poll_cq(rl->cq, POLL_BATCH, wc);
    if (got < 0) {
        llk_rv_rail_down(l, rl, rail_no, "ibv_poll_cq failed", true, true);
        llk_rv_qp_to_err(l->r, rl);
        return -1;
    }
    for (int i = 0; i < got; i++)
        on_wc(l, rl, &wc[i], rail_no);
    return got;
}

int llk_rv_free_slot(rail_t *rl)
{
    for (uint32_t i = 0; i < RAIL_SLOTS; i++)
        if (!rl->slot[i].busy)
            return (int)i;
    return -1;
}

/* A slice's view of the call: its rail now (asg) and the cursor of each
 * rail (no slice of rail k waits before cur[k]). */
typedef struct move_plan {
    const llk_rdma_sge_t *sg;
    size_t n;
    uint16_t *asg;
    size_t cur[LLK_XWIRE_MAX_RAILS];
} move_plan_t;

void llk_rv_slot_take(rail_t *rl, int si, uint32_t seq, uint32_t nwr, bool read, move_op_t *op)
{
    slot_t *s = &rl->slot[si];
    s->busy = true;
    s->read = read;
    s->seq = seq;
    s->nwr = nwr;
    s->op = op;
    s->bytes = 0;
    if (op)
        atomic_fetch_add(&op->chains, 1);
    rl->free_wr -= nwr;
    if (read)
        rl->rd_inflight += nwr;
}

/* Accounts a chain of nwr slices idx[] posted in slot si (rl->mu held). */
static void chain_taken(rail_t *rl, int si, uint32_t seq, bool write, const move_plan_t *p,
                        const uint32_t *idx, uint32_t nwr, move_op_t *op)
{
    if (!llk_rv_slots_busy(rl))
        rl->progress_ms = llk_now_ms(); /* idle until now: the stall clock starts */
    llk_rv_slot_take(rl, si, seq, nwr, !write, op);
    slot_t *s = &rl->slot[si];
    for (uint32_t j = 0; j < nwr; j++) {
        s->sidx[j] = idx[j];
        s->bytes += p->sg[idx[j]].len;
        atomic_store(&op->state[idx[j]], SG_POSTED);
    }
}

/* Posts the next chain of rail k's waiting slices (rl->mu held, the rail
 * up). 1 posted, 0 no room now or nothing to post, -1 post failed: the
 * rail is down (its reason says why), the slices not posted still wait. */
static int post_chain(llk_rdma_link_t *l, rail_t *rl, bool write, move_plan_t *p, uint16_t k,
                      move_op_t *op)
{
    uint32_t idx[MAX_CHAIN], left = 0;
    size_t i = p->cur[k];
    for (; i < p->n && left < MAX_CHAIN; i++)
        if (p->asg[i] == k && atomic_load(&op->state[i]) == SG_PENDING) {
            if (left == 0)
                p->cur[k] = i;
            idx[left++] = (uint32_t)i;
        }
    if (left == 0) {
        p->cur[k] = p->n;
        return 0;
    }
    uint32_t credits = rl->free_wr;
    if (!write && rl->rd_max - rl->rd_inflight < credits)
        credits = rl->rd_max - rl->rd_inflight;
    uint32_t len = llk_rdma_chain_len(left, credits, MAX_CHAIN);
    int si = llk_rv_free_slot(rl);
    if (len == 0 || si < 0)
        return 0;
    struct ibv_send_wr wr[MAX_CHAIN];
    struct ibv_sge sge[MAX_CHAIN];
    uint32_t seq = ++rl->seq;
    uint64_t wr_id = ((uint64_t)seq << 16) | (uint32_t)si;
    for (uint32_t w = 0; w < len; w++) {
        const llk_rdma_sge_t *g = &p->sg[idx[w]];
        memset(&wr[w], 0, sizeof wr[w]);
        sge[w].addr = g->laddr;
        sge[w].length = (uint32_t)g->len;
        sge[w].lkey = g->lkey[k];
        wr[w].wr_id = wr_id;
        wr[w].sg_list = &sge[w];
        wr[w].num_sge = 1;
        wr[w].opcode = write ? IBV_WR_RDMA_WRITE : IBV_WR_RDMA_READ;
        wr[w].wr.rdma.remote_addr = g->raddr;
        wr[w].wr.rdma.rkey = g->rkey[k];
        wr[w].next = w + 1 < len ? &wr[w + 1] : NULL;
    }
    wr[len - 1].send_flags = IBV_SEND_SIGNALED;
    struct ibv_send_wr *bad = NULL;
    int rc = ibv_post_send(rl->qp, wr, &bad);
    if (rc != 0) {
        char why[160];
        snprintf(why, sizeof why, "ibv_post_send: %s", strerror(rc));
        llk_rv_rail_down(l, rl, k, why, true, true);
        llk_rv_qp_to_err(l->r, rl);
        /* The WRs before `bad` are on the send queue and may still move
         * bytes: keep a slot for them until their (flush) completion
         * gives them back; the rest wait for another rail. */
        uint32_t posted = 0;
        while (bad && posted < len && &wr[posted] != bad)
            posted++;
        if (bad && posted > 0)
            chain_taken(rl, si, seq, write, p, idx, posted, op);
        return -1;
    }
    chain_taken(rl, si, seq, write, p, idx, len, op);
    p->cur[k] = idx[len - 1] + 1;
    return 1;
}

bool llk_rv_slots_busy(const rail_t *rl)
{
    for (uint32_t i = 0; i < RAIL_SLOTS; i++)
        if (rl->slot[i].busy)
            return true;
    return false;
}

/* How long a rail may have work in flight with no completion at all
 * before this side gives up on it: the NIC's own budget (every retry of a
 * work request fits in half of llm.SyncKvCacheWaitTime, rdma_plan.h) and
 * a second more. A device should have failed the work with
 * IBV_WC_RETRY_EXC_ERR by then; one that stays silent (soft-RoCE was seen
 * to, with the peer's NIC down) would otherwise hold the call to its
 * deadline instead of failing over. */
static int64_t stall_ms(const llk_rdma_link_t *l)
{
    return (int64_t)l->wait_ms / 2 + 1000;
}

/* Marks every rail down whose device port is not ACTIVE, or whose work
 * has been in flight past stall_ms with no completion, at most every
 * LLK_RDMA_PORT_CHECK_MS per link (whichever call comes first does it):
 * its QP goes to the error state at once, rather than after the ACK
 * timeout x retry count of its first work request. */
static void check_ports(llk_rdma_link_t *l)
{
    int64_t now = llk_now_ms(), due = atomic_load(&l->port_due);
    if (now < due ||
        !atomic_compare_exchange_strong(&l->port_due, &due, now + LLK_RDMA_PORT_CHECK_MS))
        return;
    for (uint16_t k = 0; k < l->nrails; k++) {
        rail_t *rl = &l->rail[k];
        pthread_mutex_lock(&rl->mu);
        int64_t quiet = llk_rv_slots_busy(rl) ? now - rl->progress_ms : 0;
        if (!rl->failed && quiet > stall_ms(l)) {
            char why[200];
            snprintf(why, sizeof why, "no completion for %lld ms with work in flight (past the "
                     "ACK timeout x retry budget: the peer or the path stopped answering)",
                     (long long)quiet);
            llk_rv_rail_down(l, rl, k, why, true, true);
            llk_rv_qp_to_err(l->r, rl);
        }
        pthread_mutex_unlock(&rl->mu);
        struct ibv_port_attr pa;
        memset(&pa, 0, sizeof pa);
        if (l->r->v->query_port(rl->dev->ctx, rl->dev->port, &pa) != 0 ||
            pa.state == IBV_PORT_ACTIVE)
            continue;
        char why[160];
        snprintf(why, sizeof why, "port %u of %s is %s (ibv_query_port)", rl->dev->port,
                 rl->dev->name, port_state_name((int)pa.state));
        pthread_mutex_lock(&rl->mu);
        if (!rl->failed) {
            llk_rv_rail_down(l, rl, k, why, true, true);
            llk_rv_qp_to_err(l->r, rl);
        }
        pthread_mutex_unlock(&rl->mu);
    }
}

static void rail_abort(llk_rdma_link_t *l, rail_t *rl, uint16_t k)
{
    llk_rv_rail_down(l, rl, k, "the link was aborted", false, false);
    llk_rv_qp_to_err(l->r, rl);
}

void llk_rdma_link_abort(llk_rdma_link_t *l)
{
    if (!l)
        return;
    for (uint16_t k = 0; k < l->nrails; k++) {
        rail_t *rl = &l->rail[k];
        pthread_mutex_lock(&rl->mu);
        rail_abort(l, rl, k);
        pthread_mutex_unlock(&rl->mu);
    }
}

/* Reaps op's chains on the rails of `mask` (their QPs already in the error
 * state: the completions come flushed), bounded by DRAIN_MS. */
#define DRAIN_MS 2000
void llk_rv_reap(llk_rdma_link_t *l, move_op_t *op, uint32_t mask)
{
    int64_t until = llk_now_ms() + DRAIN_MS;
    unsigned us = 10;
    while (atomic_load(&op->chains) > 0 && llk_now_ms() < until) {
        bool got = false;
        for (uint16_t k = 0; k < l->nrails; k++) {
            if (!(mask & (1u << k)))
                continue;
            rail_t *rl = &l->rail[k];
            pthread_mutex_lock(&rl->mu);
            if (llk_rv_poll_rail(l, rl, k) > 0)
                got = true;
            pthread_mutex_unlock(&rl->mu);
        }
        if (!got)
            llk_rv_nap(&us);
    }
}

/* A call that gives up (no rail left, deadline, broken link) must not
 * return while its work requests can still move bytes into or out of
 * memory the caller is about to reuse: abort every rail of the link (the
 * link is dead anyway: the caller kills it), then reap the flushed
 * completions of this call's chains. Only what is still left after that
 * (a device that never flushes) is orphaned. */
static void quiesce(llk_rdma_link_t *l, move_op_t *op)
{
    llk_rdma_link_abort(l);
    llk_rv_reap(l, op, ~0u);
}

void llk_rv_orphan(llk_rdma_link_t *l, move_op_t *op)
{
    for (uint16_t k = 0; k < l->nrails; k++) {
        rail_t *rl = &l->rail[k];
        pthread_mutex_lock(&rl->mu);
        for (uint32_t i = 0; i < RAIL_SLOTS; i++)
            if (rl->slot[i].busy && rl->slot[i].op == op)
                rl->slot[i].op = NULL;
        pthread_mutex_unlock(&rl->mu);
    }
}

void llk_rv_nap(unsigned *us)
{
    struct timespec ts = {0, (long)*us * 1000};
    nanosleep(&ts, NULL);
    if (*us < 1000)
        *us *= 2;
}

/* The rails up now, as a mask. */
uint32_t llk_rv_rails_up(llk_rdma_link_t *l)
{
    uint32_t up = 0;
    for (uint16_t k = 0; k < l->nrails; k++) {
        rail_t *rl = &l->rail[k];
        pthread_mutex_lock(&rl->mu);
        if (!rl->failed)
            up |= 1u << k;
        pthread_mutex_unlock(&rl->mu);
    }
    return up;
}

/* Gives every waiting slice whose rail is down to a rail that is up
 * (llk_rdma_rail_pick: round robin over them), and restarts the cursors. */
static void replan(move_plan_t *p, move_op_t *op, uint32_t up, uint16_t nrails)
{
    for (size_t i = 0; i < p->n; i++)
        if (!(up & (1u << p->asg[i])) && atomic_load(&op->state[i]) == SG_PENDING)
            p->asg[i] = (uint16_t)llk_rdma_rail_pick((uint32_t)i, up, nrails);
    for (uint16_t k = 0; k < nrails; k++)
        p->cur[k] = 0;
}

/* "rail 0 (rxe0): <reason>; rail 1 (rxe1): <reason>" - each rail's first
 * real reason to be down. */
static void down_reasons(llk_rdma_link_t *l, char *out, size_t cap)
{
    size_t off = 0;
    out[0] = '\0';
    for (uint16_t k = 0; k < l->nrails && off < cap; k++) {
        rail_t *rl = &l->rail[k];
        pthread_mutex_lock(&rl->mu);
        int w = snprintf(out + off, cap - off, "%srail %u (%s): %s", k ? "; " : "", k,
                         rl->dev->name, rl->down_why[0] ? rl->down_why : "up");
        pthread_mutex_unlock(&rl->mu);
        if (w < 0)
            break;
        off += (size_t)w;
    }
}

/* One pass over the rails: post what fits on every rail that is up, poll
 * every rail (a down one to reap its flushes). true: something moved. */
static bool move_round(llk_rdma_link_t *l, bool write, move_plan_t *p, move_op_t *op)
{
    bool progress = false;
    for (uint16_t k = 0; k < l->nrails; k++) {
        rail_t *rl = &l->rail[k];
        pthread_mutex_lock(&rl->mu);
        while (!rl->failed && post_chain(l, rl, write, p, k, op) > 0)
            progress = true;
        if (llk_rv_poll_rail(l, rl, k) > 0)
            progress = true;
        pthread_mutex_unlock(&rl->mu);
    }
    return progress;
}

static llmlink_status_t move_fail(llk_rdma_link_t *l, move_op_t *op, llmlink_status_t st,
                                  bool (*aborted)(void *), void *actx, const char *what,
                                  char *msg, size_t cap)
{
    unsigned pending = (unsigned)atomic_load(&op->chains);
    bool broke = aborted && aborted(actx);
    char why[400];
    down_reasons(l, why, sizeof why); /* before quiesce marks the rest aborted */
    quiesce(l, op);
    llk_rv_orphan(l, op);
    if (broke) {
        snprintf(msg, cap, "%s: the link broke during the transfer", what);
        return LLMLINK_NOT_YET_LINK;
    }
    if (st == LLMLINK_WAIT_PROCESS_TIMEOUT)
        snprintf(msg, cap, "%s: %u chain(s) not completed within llm.SyncKvCacheWaitTime",
                 what, pending);
    else
        snprintf(msg, cap, "%s: no rail left: %s", what, why);
    return st;
}

llmlink_status_t llk_rdma_move(llk_rdma_link_t *l, bool write, const llk_rdma_sge_t *sg,
                               size_t n, int64_t deadline_ms, bool (*aborted)(void *), void *actx,
                               char *msg, size_t cap)
{
    const char *what = write ? "RDMA WRITE" : "RDMA READ";
    if (n == 0)
        return LLMLINK_SUCCESS;
    move_op_t op;
    memset(&op, 0, sizeof op);
    atomic_init(&op.chains, 0);
    atomic_init(&op.failed, false);
    atomic_init(&op.done, 0);
    atomic_init(&op.requeued, 0);
    move_plan_t p = {.sg = sg, .n = n};
    op.state = calloc(n, sizeof *op.state);
    p.asg = malloc(n * sizeof *p.asg);
    if (!op.state || !p.asg) {
        free(op.state);
        free(p.asg);
        snprintf(msg, cap, "%s: out of memory for %zu slices", what, n);
        return LLMLINK_OUT_OF_MEMORY;
    }
    for (size_t i = 0; i < n; i++)
        p.asg[i] = sg[i].rail < l->nrails ? sg[i].rail : 0;
    uint32_t planned_up = 0, seen = UINT32_MAX;
    unsigned us = 10;
    llmlink_status_t st = LLMLINK_SUCCESS;
    for (uint64_t round = 0;; round++) {
        check_ports(l);
        uint32_t up = llk_rv_rails_up(l), rq = atomic_load(&op.requeued);
        if (up == 0) {
            st = move_fail(l, &op, LLMLINK_NETWORK_ERROR, aborted, actx, what, msg, cap);
            break;
        }
        if (up != planned_up || rq != seen) {
            replan(&p, &op, up, l->nrails);
            planned_up = up;
            seen = rq;
        }
        bool progress = move_round(l, write, &p, &op);
        if (atomic_load(&op.done) == n && atomic_load(&op.chains) == 0)
            break;
        if (llk_now_ms() >= deadline_ms) {
            st = move_fail(l, &op, LLMLINK_WAIT_PROCESS_TIMEOUT, aborted, actx, what, msg, cap);
            break;
        }
        if ((round & 63) == 0 && aborted && aborted(actx)) {
            st = move_fail(l, &op, LLMLINK_NOT_YET_LINK, aborted, actx, what, msg, cap);
            break;
        }
        if (progress)
            us = 10;
        else
            llk_rv_nap(&us);
    }
    free(op.state);
    free(p.asg);
    return st;
}

#endif /* LLK_HAVE_VERBS */
