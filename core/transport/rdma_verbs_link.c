/* rdma_verbs_link.c - devices, rails, MRs and the data path of the RDMA
 * transport (rdma.h), through the dlopen'ed verbs table (verbs.h). The
 * transport's table (transport.h) is in rdma.c. */
#include "transport/rdma.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/addr.h"
#include "base/log.h"
#include "transport/rdma_plan.h"
#include "transport/transport_testing.h"
#include "transport/verbs.h"

const char *llk_rdma_protection_name(llk_rdma_prot_t p)
{
    switch (p) {
    case LLK_RDMA_PROT_MW:
        return "mw";
    case LLK_RDMA_PROT_PD_PER_LINK:
        return "pd-per-link";
    default:
        return "unused";
    }
}

#if LLK_HAVE_VERBS
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/random.h>
#include <time.h>

#include <net/if.h>

#include "base/clock.h"

#include "transport/rdma_verbs_int.h"

void llk_rdma_set_post_delay_ms(llk_rdma_t *r, uint32_t ms)
{
    if (r)
        atomic_store(&r->post_delay_ms, ms);
}

uint32_t llk_rdma_post_delay_ms(llk_rdma_t *r)
{
    return r ? atomic_load_explicit(&r->post_delay_ms, memory_order_relaxed) : 0;
}


/* ---- devices ------------------------------------------------------------------- */

static void close_dev(const llk_verbs_t *v, rdma_dev_t *d)
{
    if (d->pd)
        v->dealloc_pd(d->pd);
    if (d->ctx)
        v->close_device(d->ctx);
    d->pd = NULL;
    d->ctx = NULL;
}

/* Opens dev if it has a usable port: true and *d filled. */
static bool open_dev(const llk_verbs_t *v, struct ibv_device *dev, const llk_options_t *o,
                     rdma_dev_t *d, char *why, size_t cap)
{
    memset(d, 0, sizeof *d);
    const char *name = v->get_device_name(dev);
    snprintf(d->name, sizeof d->name, "%s", name ? name : "?");
    d->ctx = v->open_device(dev);
    if (!d->ctx) {
        snprintf(why, cap, "%s: ibv_open_device: %s", d->name, strerror(errno));
        return false;
    }
    struct ibv_device_attr da;
    memset(&da, 0, sizeof da);
    if (v->query_device(d->ctx, &da) != 0) {
        snprintf(why, cap, "%s: ibv_query_device failed", d->name);
        close_dev(v, d);
        return false;
    }
    for (uint8_t p = 1; p <= da.phys_port_cnt && p != 0; p++) {
        if (o->rdma_port && p != o->rdma_port)
            continue;
        struct ibv_port_attr pa;
        memset(&pa, 0, sizeof pa);
        if (v->query_port(d->ctx, p, &pa) != 0 || pa.state != IBV_PORT_ACTIVE)
            continue;
        d->port = p;
        d->active_mtu = (uint8_t)pa.active_mtu;
        d->lid = pa.lid;
        d->is_ib = pa.link_layer == IBV_LINK_LAYER_INFINIBAND;
        d->gid_tbl_len = pa.gid_tbl_len > MAX_GIDS ? MAX_GIDS : pa.gid_tbl_len;
        break;
    }
    if (!d->port) {
        snprintf(why, cap, "%s: no active port%s", d->name,
                 o->rdma_port ? " (llmlink.RdmaPort)" : "");
        close_dev(v, d);
        return false;
    }
    d->max_qp_wr = (uint32_t)da.max_qp_wr;
    d->max_rd_atom = (uint32_t)da.max_qp_rd_atom;
    d->max_init_rd_atom = (uint32_t)da.max_qp_init_rd_atom;
    d->mw2 = (da.device_cap_flags & IBV_DEVICE_MEM_WINDOW_TYPE_2B) && da.max_mw > 0;
    /* Test hook: behave as a device without type-2 windows. */
    const char *nomw = secure_getenv("LLMLINK_TEST_RDMA_NO_MW");
    if (nomw && *nomw && strcmp(nomw, "0") != 0)
        d->mw2 = false;
    d->pd = v->alloc_pd(d->ctx);
    if (!d->pd) {
        snprintf(why, cap, "%s: ibv_alloc_pd: %s", d->name, strerror(errno));
        close_dev(v, d);
        return false;
    }
    return true;
}

llk_rdma_t *llk_rdma_open(const llk_options_t *o, uint64_t gen_seed, char *why, size_t cap)
{
    const char *lwhy = NULL;
    const llk_verbs_t *v = llk_verbs_load(&lwhy);
    if (!v) {
        snprintf(why, cap, "%s", lwhy);
        return NULL;
    }
    int num = 0;
    struct ibv_device **list = v->get_device_list(&num);
    if (!list || num <= 0) {
        snprintf(why, cap, "no RDMA device (ibv_get_device_list: %s)",
                 list ? "empty" : strerror(errno));
        if (list)
            v->free_device_list(list);
        return NULL;
    }
    llk_rdma_t *r = calloc(1, sizeof *r);
    if (!r) {
        v->free_device_list(list);
        snprintf(why, cap, "out of memory");
        return NULL;
    }
    r->v = v;
    r->o = *o;
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->gmu, NULL);
    /* 2^40 generations per incarnation; never 0 */
    atomic_store(&r->next_gen, ((gen_seed & 0xFFFFFFull) << 40) | 1);
    char last[256] = "";
    for (int i = 0; i < num && r->ndev < MAX_DEVS; i++) {
        const char *name = v->get_device_name(list[i]);
        if (o->rdma_device[0] && (!name || strcmp(name, o->rdma_device) != 0))
            continue;
        if (open_dev(v, list[i], o, &r->dev[r->ndev], last, sizeof last)) {
            r->dev[r->ndev].index = r->ndev;
            LLK_DEBUG("rdma: %s port %u active (mtu %u)", r->dev[r->ndev].name,
                      r->dev[r->ndev].port, llk_rdma_mtu_bytes(r->dev[r->ndev].active_mtu));
            r->ndev++;
        } else {
            LLK_DEBUG("rdma: %s", last);
        }
    }
    v->free_device_list(list);
    if (r->ndev == 0) {
        if (o->rdma_device[0] && !last[0])
            snprintf(why, cap, "no RDMA device named %s (llmlink.RdmaDevice)", o->rdma_device);
        else
            snprintf(why, cap, "no usable RDMA device (%s)", last[0] ? last : "none");
        pthread_mutex_destroy(&r->mu);
        pthread_mutex_destroy(&r->gmu);
        free(r);
        return NULL;
    }
    return r;
}

void llk_rdma_close(llk_rdma_t *r)
{
    if (!r)
        return;
    for (int i = r->ndev - 1; i >= 0; i--)
        close_dev(r->v, &r->dev[i]);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->gmu);
    free(r);
}

/* ---- GIDs and rails ------------------------------------------------------------------ */

/* RoCE v2? From the verbs when they can say, else sysfs. */
static bool gid_is_v2(const llk_verbs_t *v, const rdma_dev_t *d, int idx)
{
    if (v->query_gid_ex) {
        struct ibv_gid_entry ent;
        memset(&ent, 0, sizeof ent);
        if (v->query_gid_ex(d->ctx, d->port, (uint32_t)idx, &ent, 0, sizeof ent) == 0)
            return ent.gid_type == IBV_GID_TYPE_ROCE_V2;
    }
    char path[160], text[32] = "";
    snprintf(path, sizeof path, "/sys/class/infiniband/%s/ports/%u/gid_attrs/types/%d", d->name,
             d->port, idx);
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    bool ok = fgets(text, sizeof text, f) != NULL;
    fclose(f);
    return ok && strstr(text, "v2") != NULL;
}

/* The GID index of d for ip_gid, or -1. */
static int find_gid(const llk_rdma_t *r, const rdma_dev_t *d, const uint8_t ip_gid[16],
                    union ibv_gid *out)
{
    static const uint8_t zero[16];
    llk_gid_info_t *tbl = calloc((size_t)d->gid_tbl_len + 1, sizeof *tbl);
    if (!tbl)
        return -1;
    for (int i = 0; i < d->gid_tbl_len; i++) {
        union ibv_gid g;
        if (r->v->query_gid(d->ctx, d->port, i, &g) != 0)
            continue;
        memcpy(tbl[i].gid, g.raw, 16);
        tbl[i].valid = memcmp(g.raw, zero, 16) != 0;
        /* only the entries that could match need their type */
        tbl[i].roce_v2 = tbl[i].valid && (r->o.rdma_gid_index >= 0 || !memcmp(g.raw, ip_gid, 16))
                             ? gid_is_v2(r->v, d, i)
                             : false;
    }
    int idx = llk_rdma_pick_gid(tbl, d->gid_tbl_len, ip_gid, r->o.rdma_gid_index, d->is_ib);
    if (idx >= 0)
        memcpy(out->raw, tbl[idx].gid, 16);
    free(tbl);
    return idx;
}

/* The netdev that holds GID idx of d ("" when neither the verbs nor sysfs
 * say): from ibv_query_gid_ex's ifindex, else gid_attrs/ndevs/<idx>. */
static void gid_netdev(const llk_verbs_t *v, const rdma_dev_t *d, int idx, char *name,
                       size_t cap)
{
    name[0] = '\0';
    if (v->query_gid_ex) {
        struct ibv_gid_entry ent;
        memset(&ent, 0, sizeof ent);
        char buf[IF_NAMESIZE];
        if (v->query_gid_ex(d->ctx, d->port, (uint32_t)idx, &ent, 0, sizeof ent) == 0 &&
            ent.ndev_ifindex && if_indextoname(ent.ndev_ifindex, buf)) {
            snprintf(name, cap, "%s", buf);
            return;
        }
    }
    char path[160];
    snprintf(path, sizeof path, "/sys/class/infiniband/%s/ports/%u/gid_attrs/ndevs/%d", d->name,
             d->port, idx);
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    if (fgets(name, (int)cap, f))
        name[strcspn(name, "\n")] = '\0';
    else
        name[0] = '\0';
    fclose(f);
}

size_t llk_rdma_local_addrs(llk_rdma_t *r, llk_rdma_addr_t *out, size_t cap)
{
    size_t n = 0;
    for (int i = 0; r && i < r->ndev; i++) {
        const rdma_dev_t *d = &r->dev[i];
        for (int k = 0; k < d->gid_tbl_len && n < cap; k++) {
            union ibv_gid g;
            if (r->v->query_gid(d->ctx, d->port, k, &g) != 0 || !llk_rdma_addr_routable(g.raw) ||
                !gid_is_v2(r->v, d, k))
                continue;
            bool dup = false; /* one address on two devices: the first serves it */
            for (size_t j = 0; j < n && !dup; j++)
                dup = !memcmp(out[j].ip, g.raw, 16);
            if (dup)
                continue;
            char ndev[IF_NAMESIZE + 1];
            gid_netdev(r->v, d, k, ndev, sizeof ndev);
            memcpy(out[n].ip, g.raw, 16);
            out[n].prefix = llk_rdma_ip_prefix(g.raw, ndev);
            out[n].mtu = d->active_mtu;
            n++;
        }
    }
    return n;
}

uint32_t llk_rv_sq_depth(const rdma_dev_t *d)
{
    uint32_t depth = SQ_DEPTH;
    if (d->max_qp_wr && depth > d->max_qp_wr)
        depth = d->max_qp_wr;
    return depth;
}

struct ibv_qp *llk_rv_qp_new(const llk_rdma_t *r, const rail_t *rl, uint32_t depth, char *why,
                             size_t cap)
{
    struct ibv_qp_init_attr ia;
    memset(&ia, 0, sizeof ia);
    ia.send_cq = rl->cq;
    ia.recv_cq = rl->cq;
    ia.qp_type = IBV_QPT_RC;
    ia.cap.max_send_wr = depth;
    ia.cap.max_recv_wr = 1;
    ia.cap.max_send_sge = 1;
    ia.cap.max_recv_sge = 1;
    ia.sq_sig_all = 0;
    struct ibv_qp *qp = r->v->create_qp(rl->pd, &ia);
    if (!qp)
        snprintf(why, cap, "%s: ibv_create_qp: %s", rl->dev->name, strerror(errno));
    return qp;
}

int llk_rv_to_init(const llk_verbs_t *v, rail_t *rl)
{
    struct ibv_qp_attr a;
    memset(&a, 0, sizeof a);
    a.qp_state = IBV_QPS_INIT;
    a.pkey_index = 0;
    a.port_num = rl->dev->port;
    a.qp_access_flags = IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_LOCAL_WRITE;
    return v->modify_qp(rl->qp, &a,
                        IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
}

/* QP, CQ, then the rail's own PD (its QP and MRs, link_mrs_drop, are gone
 * by then). Also what a failed rail_create leaves (no mutex yet). */
static void rail_undo(const llk_verbs_t *v, rail_t *rl)
{
    if (rl->qp)
        v->destroy_qp(rl->qp);
    if (rl->cq)
        v->destroy_cq(rl->cq);
    if (rl->own_pd && rl->pd)
        v->dealloc_pd(rl->pd);
    rl->qp = NULL;
    rl->cq = NULL;
    rl->pd = NULL;
}

static void rail_free(const llk_verbs_t *v, rail_t *rl)
{
    rail_undo(v, rl);
    pthread_mutex_destroy(&rl->mu);
}

static uint32_t cap_rd(uint32_t rd)
{
    return rd == 0 ? 1 : rd > RD_ATOM_CAP ? RD_ATOM_CAP : rd;
}

/* own_pd: the rail gets a PD of its own (mode PD_PER_LINK), as it does
 * anyway on a device without type-2 windows. */
static bool rail_create(llk_rdma_t *r, rail_t *rl, const struct sockaddr *ip, bool own_pd,
                        char *why, size_t cap)
{
    uint8_t ip_gid[16];
    if (!llk_rdma_ip_gid(ip, ip_gid)) {
        snprintf(why, cap, "not an IP address");
        return false;
    }
    memset(rl, 0, sizeof *rl);
    for (int i = 0; i < r->ndev && !rl->dev; i++) {
        int idx = find_gid(r, &r->dev[i], ip_gid, &rl->gid);
        if (idx >= 0) {
            rl->dev = &r->dev[i];
            rl->gid_index = idx;
        }
    }
    if (!rl->dev) {
        snprintf(why, cap, "no RDMA device has a RoCE v2 GID for this address%s",
                 r->o.rdma_gid_index >= 0 ? " (or GID index llmlink.RdmaGidIndex)" : "");
        return false;
    }
    rdma_dev_t *d = rl->dev;
    rl->own_pd = own_pd || !d->mw2;
    rl->pd = rl->own_pd ? r->v->alloc_pd(d->ctx) : d->pd;
    if (!rl->pd) {
        snprintf(why, cap, "%s: ibv_alloc_pd (the link's own): %s", d->name, strerror(errno));
        rl->own_pd = false;
        return false;
    }
    uint32_t depth = llk_rv_sq_depth(d);
    rl->cq = r->v->create_cq(d->ctx, (int)(2 * depth), NULL, NULL, 0);
    if (!rl->cq) {
        snprintf(why, cap, "%s: ibv_create_cq: %s", d->name, strerror(errno));
        rail_undo(r->v, rl);
        return false;
    }
    rl->qp = llk_rv_qp_new(r, rl, depth, why, cap);
    if (!rl->qp) {
        rail_undo(r->v, rl);
        return false;
    }
    if (llk_rv_to_init(r->v, rl) != 0) {
        snprintf(why, cap, "%s: QP to INIT: %s", d->name, strerror(errno));
        rail_undo(r->v, rl);
        return false;
    }
    uint32_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd)
        rnd = (uint32_t)llk_now_ms() * 2654435761u;
    rl->psn = rnd & 0xFFFFFFu;
    rl->free_wr = depth;
    /* Advertised rounded down to a power of two (rdma_plan.h): use what
     * is advertised, so the peer's view of this side is exact. */
    rl->rd_init = llk_rdma_rd_depth(llk_rdma_rd_nibble(cap_rd(d->max_init_rd_atom)));
    rl->rd_dest = llk_rdma_rd_depth(llk_rdma_rd_nibble(cap_rd(d->max_rd_atom)));
    rl->rd_max = rl->rd_init;
    pthread_mutex_init(&rl->mu, NULL);
    return true;
}

/* A rail per address, all or nothing (the two ends pair their rails by
 * position); false: l freed, why says which address failed. */
static bool rails_create(llk_rdma_link_t *l, const struct sockaddr_storage *ips, size_t n,
                         bool own_pd, char *why, size_t cap)
{
    for (size_t i = 0; i < n && l->nrails < LLK_XWIRE_MAX_RAILS; i++) {
        char one[200];
        if (rail_create(l->r, &l->rail[l->nrails], (const struct sockaddr *)&ips[i], own_pd, one,
                        sizeof one)) {
            l->nrails++;
            continue;
        }
        char ip[72];
        llk_addr_format((const struct sockaddr *)&ips[i], ip, sizeof ip);
        snprintf(why, cap, "address %s: %s", ip, one);
        llk_rdma_link_free(l);
        return false;
    }
    if (l->nrails == 0) {
        snprintf(why, cap, "no local address");
        free(l);
        return false;
    }
    return true;
}

llk_rdma_link_t *llk_rdma_link_create(llk_rdma_t *r, const struct sockaddr_storage *ips,
                                      size_t n, int32_t wait_ms, char *why, size_t cap)
{
    llk_rdma_link_t *l = calloc(1, sizeof *l);
    if (!l) {
        snprintf(why, cap, "out of memory");
        return NULL;
    }
    l->r = r;
    l->wait_ms = wait_ms;
    if (!rails_create(l, ips, n, false, why, cap))
        return NULL;
    /* Windows only where every rail's device has them: a grant is one
     * mode on all its rails. Otherwise PD_PER_LINK, on every rail: a link
     * that mixes devices makes its rails again, each with a PD of its own
     * (a rail on the device's shared PD would let another link's keys in). */
    l->prot = LLK_RDMA_PROT_MW;
    bool shared = false;
    for (uint16_t i = 0; i < l->nrails; i++) {
        if (!l->rail[i].dev->mw2)
            l->prot = LLK_RDMA_PROT_PD_PER_LINK;
        shared = shared || !l->rail[i].own_pd;
    }
    if (l->prot == LLK_RDMA_PROT_PD_PER_LINK && shared) {
        for (int i = (int)l->nrails - 1; i >= 0; i--)
            rail_free(r->v, &l->rail[i]);
        l->nrails = 0;
        if (!rails_create(l, ips, n, true, why, cap))
            return NULL;
    }
    atomic_store(&l->nup, l->nrails);
    return l;
}

uint16_t llk_rdma_link_nrails(const llk_rdma_link_t *l)
{
    return l ? l->nrails : 0;
}

void llk_rdma_link_rail_stats(const llk_rdma_link_t *l, llmlink_link_stats_t *out)
{
    if (!l)
        return;
    llk_rdma_link_t *ml = (llk_rdma_link_t *)l; /* the rails' locks */
    out->rdma_rails = l->nrails;
    out->rdma_rail_failovers = atomic_load(&ml->failovers);
    out->rdma_rail_repairs = atomic_load(&ml->repairs);
    for (uint16_t i = 0; i < l->nrails && i < LLMLINK_MAX_RDMA_RAILS; i++) {
        rail_t *rl = &ml->rail[i];
        pthread_mutex_lock(&rl->mu);
        out->rdma_rail_mtu[i] = llk_rdma_mtu_bytes(rl->mtu);
        if (rl->mtu && !rl->failed && !rl->in_err)
            out->rdma_rails_up++;
        pthread_mutex_unlock(&rl->mu);
        out->rdma_rail_bytes[i] = atomic_load(&rl->bytes);
    }
}

void llk_rdma_link_local(const llk_rdma_link_t *l, llk_xrail_wire_t *out)
{
    for (uint16_t i = 0; i < l->nrails; i++) {
        const rail_t *rl = &l->rail[i];
        memset(&out[i], 0, sizeof out[i]);
        out[i].qpn = rl->qp->qp_num;
        out[i].psn = rl->psn;
        memcpy(out[i].gid, rl->gid.raw, 16);
        out[i].lid = rl->dev->lid;
        /* What this side can take, cap included: both ends then reach the
         * same path MTU (a one-sided cap would leave them disagreeing, and
         * the larger side's packets would be dropped). */
        out[i].mtu = llk_rdma_mtu_negotiate(rl->dev->active_mtu, rl->dev->active_mtu,
                                            l->r->o.rdma_mtu);
        out[i].rd_init = (uint16_t)rl->rd_init;
        out[i].rd_dest = (uint16_t)rl->rd_dest;
    }
}

int llk_rv_rail_connect(llk_rdma_link_t *l, rail_t *rl, const llk_xrail_wire_t *rem, char *why,
                        size_t cap)
{
    const llk_rdma_t *r = l->r;
    if (rl->peer_gid_set && memcmp(rl->peer_gid, rem->gid, 16) != 0) {
        snprintf(why, cap, "the peer's GID of the rail on %s differs from the one it was set up "
                 "with", rl->dev->name);
        return -1;
    }
    rl->mtu = llk_rdma_mtu_negotiate(rl->dev->active_mtu, rem->mtu, r->o.rdma_mtu);
    if (!rl->mtu) {
        snprintf(why, cap, "no common MTU (local %u, remote %u)", rl->dev->active_mtu, rem->mtu);
        return -1;
    }
    struct ibv_qp_attr a;
    memset(&a, 0, sizeof a);
    a.qp_state = IBV_QPS_RTR;
    a.path_mtu = (enum ibv_mtu)rl->mtu;
    a.dest_qp_num = rem->qpn;
    a.rq_psn = rem->psn;
    /* as responder: what this side advertised; as initiator: no more
     * than the peer accepts */
    rl->rd_max = llk_rdma_rd_initiator(rl->rd_init, rem->rd_dest);
    a.max_dest_rd_atomic = (uint8_t)rl->rd_dest;
    a.min_rnr_timer = 12;
    a.ah_attr.is_global = 1;
    memcpy(a.ah_attr.grh.dgid.raw, rem->gid, 16);
    a.ah_attr.grh.sgid_index = (uint8_t)rl->gid_index;
    a.ah_attr.grh.hop_limit = 64;
    a.ah_attr.grh.traffic_class = (uint8_t)r->o.rdma_traffic_class;
    a.ah_attr.grh.flow_label = 0;
    a.ah_attr.sl = (uint8_t)r->o.rdma_service_level;
    a.ah_attr.dlid = rem->lid;
    a.ah_attr.port_num = rl->dev->port;
    if (r->v->modify_qp(rl->qp, &a,
                        IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
                            IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC |
                            IBV_QP_MIN_RNR_TIMER) != 0) {
        snprintf(why, cap, "%s: QP to RTR: %s", rl->dev->name, strerror(errno));
        return -1;
    }
    memset(&a, 0, sizeof a);
    a.qp_state = IBV_QPS_RTS;
    a.timeout = llk_rdma_ack_timeout(l->wait_ms, RETRY_CNT);
    a.retry_cnt = RETRY_CNT;
    a.rnr_retry = 7;
    a.sq_psn = rl->psn;
    a.max_rd_atomic = (uint8_t)rl->rd_max;
    if (r->v->modify_qp(rl->qp, &a,
                        IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                            IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC) != 0) {
        snprintf(why, cap, "%s: QP to RTS: %s", rl->dev->name, strerror(errno));
        return -1;
    }
    memcpy(rl->peer_gid, rem->gid, 16);
    rl->peer_gid_set = true;
    return 0;
}

int llk_rdma_link_connect(llk_rdma_link_t *l, const llk_xrail_wire_t *remote, uint16_t n,
                          char *why, size_t cap)
{
    if (n != l->nrails) {
        snprintf(why, cap, "the peer has %u rails, this side %u", n, l->nrails);
        return -1;
    }
    for (uint16_t i = 0; i < n; i++) {
        char one[160];
        if (llk_rv_rail_connect(l, &l->rail[i], &remote[i], one, sizeof one) != 0) {
            snprintf(why, cap, "rail %u: %s", i, one);
            return -1;
        }
        LLK_DEBUG("rdma: rail %u: QP %u (psn %u) on %s -> QP %u (psn %u), mtu %u, timeout %u",
                  i, l->rail[i].qp->qp_num, l->rail[i].psn, l->rail[i].dev->name, remote[i].qpn,
                  remote[i].psn, llk_rdma_mtu_bytes(l->rail[i].mtu),
                  llk_rdma_ack_timeout(l->wait_ms, RETRY_CNT));
    }
    return 0;
}

void llk_rdma_link_describe(const llk_rdma_link_t *l, char *out, size_t cap)
{
    size_t off = 0;
    out[0] = '\0';
    for (uint16_t i = 0; i < l->nrails && off < cap; i++) {
        const rail_t *rl = &l->rail[i];
        int w = snprintf(out + off, cap - off, "%s%s port %u gid %d mtu %u reads %u", i ? ", " : "",
                         rl->dev->name, rl->dev->port, rl->gid_index,
                         llk_rdma_mtu_bytes(rl->mtu ? rl->mtu : rl->dev->active_mtu), rl->rd_max);
        if (w < 0)
            break;
        off += (size_t)w;
    }
    if (off < cap)
        snprintf(out + off, cap - off, "; protection %s%s", llk_rdma_protection_name(l->prot),
                 l->prot == LLK_RDMA_PROT_MW ? " (a window per grant)"
                                             : " (a rail without type-2 memory windows: a PD "
                                               "per link, read-only / write-only MRs per cache, "
                                               "their rkeys cover whole tensors until the link "
                                               "or the cache goes)");
}

static void kill_link_windows(llk_rdma_link_t *l);

/* ---- mode PD_PER_LINK: the MRs of a link ---------------------------------------------- */

static void lmrs_free(llk_rdma_t *r, link_mrs_t *x, uint32_t nslots)
{
    for (uint32_t k = 0; x->mr && k < nslots; k++)
        if (x->mr[k] && r->v->dereg_mr(x->mr[k]) != 0)
            LLK_WARN("rdma: ibv_dereg_mr (a link's): %s", strerror(errno));
    free(x->mr);
    free(x);
}

/* Takes out of r->lmrs every set of link l (l != NULL) or of cache m, and
 * deregisters them: before the link's PDs go (link free) or the cache's
 * memory (cache free, also the revoke of an unregister: the peer's keys of
 * the cache stop working). */
static void link_mrs_drop(llk_rdma_t *r, const llk_rdma_link_t *l, const llk_rdma_mrs_t *m)
{
    link_mrs_t *gone = NULL;
    pthread_mutex_lock(&r->mu);
    for (link_mrs_t **pp = &r->lmrs; *pp;) {
        link_mrs_t *x = *pp;
        if (l ? x->l == l : x->m == m) {
            *pp = x->next;
            x->next = gone;
            gone = x;
        } else {
            pp = &x->next;
        }
    }
    pthread_mutex_unlock(&r->mu);
    while (gone) {
        link_mrs_t *x = gone;
        gone = x->next;
        lmrs_free(r, x, LMR_KINDS * (uint32_t)x->l->nrails * x->m->nt);
    }
}

/* The key of kind `kind` (LMR_*) of tensor t of m on rail `rail` of l:
 * the MR is registered in the rail's own PD on first use. 0, or -1 with
 * why (out of memory, ibv_reg_mr failed). Registration runs under r->mu:
 * the first grant of a cache over a link pins it once more (the known
 * cost of the mode: up to three MRs per tensor, link and rail). */
static int link_key(llk_rdma_link_t *l, const llk_rdma_mrs_t *m, int kind, uint16_t rail,
                    uint32_t t, uint32_t *key, char *why, size_t cap)
{
    static const int access[LMR_KINDS] = {
        IBV_ACCESS_REMOTE_READ, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE,
        IBV_ACCESS_LOCAL_WRITE};
    llk_rdma_t *r = l->r;
    pthread_mutex_lock(&r->mu);
    link_mrs_t *x = r->lmrs;
    while (x && (x->l != l || x->m != m))
        x = x->next;
    if (!x) {
        x = calloc(1, sizeof *x);
        if (x)
            x->mr = calloc((size_t)LMR_KINDS * l->nrails * m->nt, sizeof *x->mr);
        if (!x || !x->mr) {
            free(x);
            pthread_mutex_unlock(&r->mu);
            snprintf(why, cap, "out of memory for the link's MRs");
            return -1;
        }
        x->l = l;
        x->m = m;
        x->next = r->lmrs;
        r->lmrs = x;
    }
    struct ibv_mr **mr = &x->mr[((size_t)kind * l->nrails + rail) * m->nt + t];
    if (!*mr)
        *mr = r->v->reg_mr(l->rail[rail].pd, m->addrs[t], (size_t)m->tensor_bytes, access[kind]);
    if (!*mr) {
        pthread_mutex_unlock(&r->mu);
        snprintf(why, cap, "%s: ibv_reg_mr of tensor %u in the link's PD (%llu bytes): %s",
                 l->rail[rail].dev->name, t, (unsigned long long)m->tensor_bytes,
                 strerror(errno));
        return -1;
    }
    *key = kind == LMR_LOCAL ? (*mr)->lkey : (*mr)->rkey;
    pthread_mutex_unlock(&r->mu);
    return 0;
}

void llk_rdma_link_free(llk_rdma_link_t *l)
{
    if (!l)
        return;
    /* Windows first: a bound one holds its QP and its MR. */
    kill_link_windows(l);
    /* Then the link's own MRs (mode PD_PER_LINK), before their PDs. */
    link_mrs_drop(l->r, l, NULL);
    for (int i = (int)l->nrails - 1; i >= 0; i--) {
        LLK_DEBUG("rdma: rail %d: QP %u on %s destroyed", i,
                  l->rail[i].qp ? l->rail[i].qp->qp_num : 0, l->rail[i].dev->name);
        rail_free(l->r->v, &l->rail[i]);
    }
    free(l);
}

/* ---- memory regions ------------------------------------------------------------------------ */

static void mrs_free(const llk_verbs_t *v, llk_rdma_mrs_t *m)
{
    if (!m)
        return;
    for (int k = m->mr ? m->ndev * (int)m->nt - 1 : -1; k >= 0; k--)
        if (m->mr[k] && v->dereg_mr(m->mr[k]) != 0)
            /* rxe: EINVAL while a window is bound to it (none should be:
             * cache_free kills them first) */
            LLK_WARN("rdma: ibv_dereg_mr: %s", strerror(errno));
    free(m->mr);
    free(m->order);
    free(m);
}

static int by_addr(const void *a, const void *b, void *arg)
{
    uint8_t *const *addrs = arg;
    uintptr_t x = (uintptr_t)addrs[*(const uint32_t *)a];
    uintptr_t y = (uintptr_t)addrs[*(const uint32_t *)b];
    return x < y ? -1 : x > y;
}

const llk_rdma_mrs_t *llk_rdma_cache_mrs(llk_rdma_t *r, llk_cache_t *c, char *why, size_t cap)
{
    pthread_mutex_lock(&r->mu);
    llk_rdma_mrs_t *m = c->xport;
    if (m) {
        pthread_mutex_unlock(&r->mu);
        return m;
    }
    m = calloc(1, sizeof *m);
    if (m) {
        m->nt = c->num_tensors;
        m->ndev = r->ndev;
        m->addrs = c->addrs;
        m->tensor_bytes = c->tensor_bytes;
        m->mr = calloc((size_t)m->ndev * m->nt, sizeof *m->mr);
        m->order = calloc(m->nt, sizeof *m->order);
    }
    if (!m || !m->mr || !m->order) {
        snprintf(why, cap, "out of memory for the MRs of cache %lld", (long long)c->id);
        mrs_free(r->v, m);
        pthread_mutex_unlock(&r->mu);
        return NULL;
    }
    for (int d = 0; d < m->ndev; d++)
        for (uint32_t t = 0; t < m->nt && r->dev[d].mw2; t++) {
            /* With type-2 windows the MR itself is local-only: a peer
             * reaches it only through a window bound for one grant (so
             * this engine's own regions, as a requester, are never
             * remotely accessible). A device without windows has no MR
             * here: its links run PD_PER_LINK, with MRs of their own
             * (link_key). */
            int access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_MW_BIND;
            struct ibv_mr *mr = r->v->reg_mr(r->dev[d].pd, c->addrs[t], (size_t)c->tensor_bytes,
                                             access);
            if (!mr) {
                snprintf(why, cap, "%s: ibv_reg_mr of tensor %u of cache %lld (%llu bytes): %s",
                         r->dev[d].name, t, (long long)c->id,
                         (unsigned long long)c->tensor_bytes, strerror(errno));
                mrs_free(r->v, m);
                pthread_mutex_unlock(&r->mu);
                return NULL;
            }
            m->mr[(size_t)d * m->nt + t] = mr;
        }
    for (uint32_t t = 0; t < m->nt; t++)
        m->order[t] = t;
    qsort_r(m->order, m->nt, sizeof *m->order, by_addr, c->addrs);
    m->gen = atomic_fetch_add(&r->next_gen, 1);
    c->xport = m;
    pthread_mutex_unlock(&r->mu);
    LLK_DEBUG("rdma: cache %lld registered on %d device(s), generation %llu", (long long)c->id,
              m->ndev, (unsigned long long)m->gen);
    return m;
}

static void kill_mrs_windows(llk_rdma_t *r, const llk_rdma_mrs_t *m);

void llk_rdma_cache_free(void *rdma, llk_cache_t *c)
{
    llk_rdma_t *r = rdma;
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    llk_rdma_mrs_t *m = c->xport;
    c->xport = NULL;
    pthread_mutex_unlock(&r->mu);
    /* The revoke of an unregister that timed out on grants: their windows
     * go first (the peer's next access fails, and rxe refuses to
     * deregister an MR with windows bound). */
    if (m)
        kill_mrs_windows(r, m);
    /* mode PD_PER_LINK: every link's MRs of the cache (the peer's keys
     * of them stop working) */
    if (m)
        link_mrs_drop(r, NULL, m);
    if (m)
        LLK_DEBUG("rdma: cache %lld: MRs of generation %llu released", (long long)c->id,
                  (unsigned long long)m->gen);
    mrs_free(r->v, m);
}

uint64_t llk_rdma_mrs_generation(const llk_rdma_mrs_t *m)
{
    return m->gen;
}

bool llk_rdma_lkey(const llk_rdma_mrs_t *m, llk_rdma_link_t *l, uint16_t rail,
                   const uint8_t *addr, uint64_t len, uint32_t *lkey)
{
    /* the last tensor that starts at or before addr */
    size_t lo = 0, hi = m->nt;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if ((uintptr_t)m->addrs[m->order[mid]] <= (uintptr_t)addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return false;
    uint32_t t = m->order[lo - 1];
    uintptr_t base = (uintptr_t)m->addrs[t];
    if ((uintptr_t)addr - base > m->tensor_bytes || len > m->tensor_bytes - ((uintptr_t)addr - base))
        return false;
    if (l->prot == LLK_RDMA_PROT_PD_PER_LINK) {
        /* the QP's PD is the link's: a local-only MR there */
        char why[200];
        if (link_key(l, m, LMR_LOCAL, rail, t, lkey, why, sizeof why) != 0) {
            LLK_WARN("rdma: %s", why);
            return false;
        }
        return true;
    }
    *lkey = m->mr[(size_t)l->rail[rail].dev->index * m->nt + t]->lkey;
    return true;
}

/* ---- grants: type-2 memory windows ------------------------------------------------------- */

/* Longest chain of window binds / invalidations with one signaled WR. */
#define LOCAL_CHAIN 64u
/* Polls of a window operation that yield before it sleeps, and the
 * longest sleep between polls. */
#define LOCAL_SPINS 64u
#define LOCAL_NAP_MAX_US 32u
/* Windows kept per rail for later grants; more are deallocated. */
#define POOL_MAX 4096u

/* Accounts one posted chain of nwr WRs in slot si (rl->mu held). */
/* Posts what fits of wr[*next, n) on rail rl as chains, the last WR of
 * each signaled (rl->mu held). 0, or -1 when a post failed (why). */
static int post_local(llk_rdma_link_t *l, uint16_t k, rail_t *rl, struct ibv_send_wr *wr,
                      uint32_t n, uint32_t *next, move_op_t *op, char *why, size_t cap)
{
    while (*next < n && !atomic_load(&op->failed)) {
        int si = llk_rv_free_slot(rl);
        uint32_t len = llk_rdma_chain_len(n - *next, rl->free_wr, LOCAL_CHAIN);
        if (si < 0 || len == 0)
            return 0;
        uint32_t seq = ++rl->seq;
        struct ibv_send_wr *w = &wr[*next];
        for (uint32_t i = 0; i < len; i++) {
            w[i].wr_id = ((uint64_t)seq << 16) | (uint32_t)si;
            w[i].send_flags = i + 1 == len ? IBV_SEND_SIGNALED : 0;
            w[i].next = i + 1 < len ? &w[i + 1] : NULL;
        }
        struct ibv_send_wr *bad = NULL;
        int rc = ibv_post_send(rl->qp, w, &bad);
        if (rc != 0) {
            snprintf(why, cap, "ibv_post_send (memory windows) on %s: %s", rl->dev->name,
                     strerror(rc));
            uint32_t posted = 0;
            while (bad && posted < len && &w[posted] != bad)
                posted++;
            if (bad && posted > 0) /* they complete (flushed): wait for them */
                llk_rv_slot_take(rl, si, seq, posted, false, op);
            llk_rv_rail_down(l, rl, k, why, true, true);
            llk_rv_qp_to_err(l->r, rl);
            return -1;
        }
        llk_rv_slot_take(rl, si, seq, len, false, op);
        *next += len;
    }
    return 0;
}

/*
 * Runs n local work requests (window binds or invalidations) on rail k:
 * one chain with one signaled completion when the send queue has room (it
 * has: the owner's QP carries no other work), and waits for it, bounded by
 * deadline_ms. 0; or -1 with why, and then rail k is down, its QP in the
 * error state (a failed local operation leaves the QP so anyway; the other
 * rails stay), and the caller deallocates the windows of that rail,
 * whatever state they are in.
 */
static int run_local(llk_rdma_link_t *l, uint16_t k, struct ibv_send_wr *wr, uint32_t n,
                     int64_t deadline_ms, char *why, size_t cap)
{
    rail_t *rl = &l->rail[k];
    move_op_t op;
    memset(&op, 0, sizeof op);
    atomic_init(&op.chains, 0);
    atomic_init(&op.failed, false);
    op.st = IBV_WC_SUCCESS;
    op.rail = k;
    uint32_t next = 0;
    unsigned us = 2, spins = 0;
    for (;;) {
        pthread_mutex_lock(&rl->mu);
        int rc = 0;
        if (rl->failed) {
            snprintf(why, cap, "rail %u (%s) is down", k, rl->dev->name);
            rc = -1;
        } else {
            rc = post_local(l, k, rl, wr, n, &next, &op, why, cap);
        }
        bool got = llk_rv_poll_rail(l, rl, k) > 0;
        pthread_mutex_unlock(&rl->mu);
        if (rc != 0)
            break;
        if (atomic_load(&op.failed)) {
            snprintf(why, cap, "memory window operation on rail %u (%s): %s (status %d)", k,
                     rl->dev->name, l->r->v->wc_status_str(op.st), (int)op.st);
            break;
        }
        if (next == n && atomic_load(&op.chains) == 0)
            return 0;
        if (llk_now_ms() >= deadline_ms) {
            snprintf(why, cap, "memory window operations on rail %u (%s) not completed in time",
                     k, rl->dev->name);
            break;
        }
        if (got) {
            us = 2;
            spins = 0;
        } else if (spins < LOCAL_SPINS) {
            /* A bind or invalidation completes in microseconds on a NIC
             * (and soft-RoCE runs it on a kernel thread): yield rather
             * than sleep at first, the owner thread waits on it. */
            spins++;
            sched_yield();
        } else {
            struct timespec ts = {0, (long)us * 1000};
            nanosleep(&ts, NULL);
            if (us < LOCAL_NAP_MAX_US)
                us *= 2;
        }
    }
    /* this rail only: the link's other rails keep serving */
    pthread_mutex_lock(&rl->mu);
    llk_rv_rail_down(l, rl, k, why, true, true);
    llk_rv_qp_to_err(l->r, rl);
    pthread_mutex_unlock(&rl->mu);
    llk_rv_reap(l, &op, 1u << k);
    llk_rv_orphan(l, &op);
    return -1;
}

/* A free window for rail k (r->gmu held): from the pool, else a new one. */
static struct ibv_mw *mw_get(llk_rdma_link_t *l, uint16_t k)
{
    rail_t *rl = &l->rail[k];
    if (rl->npool > 0)
        return rl->pool[--rl->npool];
    return ibv_alloc_mw(rl->dev->pd, IBV_MW_TYPE_2);
}

/* Back to rail k's pool (unbound), or deallocated (r->gmu held). */
static void mw_put(llk_rdma_link_t *l, uint16_t k, struct ibv_mw *mw)
{
    rail_t *rl = &l->rail[k];
    if (rl->npool == rl->pool_cap && rl->pool_cap < POOL_MAX) {
        uint32_t cap = rl->pool_cap ? rl->pool_cap * 2 : 64;
        struct ibv_mw **p = realloc(rl->pool, cap * sizeof *p);
        if (p) {
            rl->pool = p;
            rl->pool_cap = cap;
        }
    }
    if (rl->npool < rl->pool_cap)
        rl->pool[rl->npool++] = mw;
    else
        ibv_dealloc_mw(mw);
}

/* Deallocates every window of g, bound or not (r->gmu held): a bound one
 * stops working at once (and releases its MR and QP). */
static void grant_kill(llk_rdma_grant_t *g)
{
    for (uint32_t i = 0; i < g->nmw; i++)
        if (g->mw[i])
            ibv_dealloc_mw(g->mw[i]);
    g->dead = true;
}

static void grant_unlist(llk_rdma_t *r, llk_rdma_grant_t *g)
{
    if (g->prev)
        g->prev->next = g->next;
    else if (r->grants == g)
        r->grants = g->next;
    if (g->next)
        g->next->prev = g->prev;
    g->prev = g->next = NULL;
}

static void kill_mrs_windows(llk_rdma_t *r, const llk_rdma_mrs_t *m)
{
    pthread_mutex_lock(&r->gmu);
    for (llk_rdma_grant_t *g = r->grants, *nx; g; g = nx) {
        nx = g->next;
        if (g->m == m) {
            grant_kill(g);
            grant_unlist(r, g);
        }
    }
    pthread_mutex_unlock(&r->gmu);
}

static void kill_link_windows(llk_rdma_link_t *l)
{
    llk_rdma_t *r = l->r;
    pthread_mutex_lock(&r->gmu);
    for (llk_rdma_grant_t *g = r->grants, *nx; g; g = nx) {
        nx = g->next;
        if (g->l == l) {
            grant_kill(g);
            grant_unlist(r, g);
        }
    }
    for (uint16_t k = 0; k < l->nrails; k++) {
        rail_t *rl = &l->rail[k];
        while (rl->npool > 0)
            ibv_dealloc_mw(rl->pool[--rl->npool]);
        free(rl->pool);
        rl->pool = NULL;
        rl->pool_cap = 0;
    }
    pthread_mutex_unlock(&r->gmu);
}

/* The test seam's copy of the grant just made (r->gmu held). */
static void capture(llk_rdma_t *r, bool write, const uint64_t *segv, uint32_t nseg,
                    uint16_t nrails, const uint32_t *rkeys, llk_rdma_prot_t prot)
{
    llk_test_rdma_grant_t *t = &r->last;
    t->seq++;
    t->write = write;
    t->nseg = nseg;
    t->nrails = nrails;
    t->prot = (int)prot;
    for (uint32_t i = 0; i < nseg && i < LLK_TEST_RDMA_GRANT_SEGS; i++) {
        t->addr[i] = segv[2 * (size_t)i];
        t->len[i] = segv[2 * (size_t)i + 1];
        for (uint16_t k = 0; k < nrails && k < LLK_TEST_RDMA_MAX_RAILS; k++)
            t->rkey[i][k] = rkeys[(size_t)i * nrails + k];
    }
}

void llk_rdma_test_last_grant(llk_rdma_t *r, llk_test_rdma_grant_t *out)
{
    memset(out, 0, sizeof *out);
    if (!r)
        return;
    pthread_mutex_lock(&r->gmu);
    *out = r->last;
    pthread_mutex_unlock(&r->gmu);
}

unsigned llk_rdma_test_live_grants(llk_rdma_t *r)
{
    unsigned n = 0;
    if (!r)
        return 0;
    pthread_mutex_lock(&r->gmu);
    for (llk_rdma_grant_t *g = r->grants; g; g = g->next)
        n++;
    pthread_mutex_unlock(&r->gmu);
    return n;
}

bool llk_rdma_test_rail(llk_rdma_link_t *l, uint16_t rail, void **qp, void **cq)
{
    if (!l || rail >= l->nrails)
        return false;
    *qp = l->rail[rail].qp;
    *cq = l->rail[rail].cq;
    return true;
}

bool llk_rdma_test_mr_keys(const llk_rdma_mrs_t *m, uint32_t tensor, uint32_t *lkey,
                           uint32_t *rkey)
{
    if (!m || tensor >= m->nt || !m->mr[tensor])
        return false;
    *lkey = m->mr[tensor]->lkey; /* device 0 */
    *rkey = m->mr[tensor]->rkey;
    return true;
}

llk_rdma_prot_t llk_rdma_link_protection(const llk_rdma_link_t *l)
{
    return l ? l->prot : LLK_RDMA_PROT_UNUSED;
}

/* The bind WR of window mw for segment (addr, len) of tensor t on rail k. */
static void bind_wr(struct ibv_send_wr *w, const llk_rdma_mrs_t *m, const rail_t *rl,
                    struct ibv_mw *mw, uint32_t t, uint64_t addr, uint64_t len, bool write)
{
    memset(w, 0, sizeof *w);
    w->opcode = IBV_WR_BIND_MW;
    w->bind_mw.mw = mw;
    /* a new key for every binding: an rkey of an earlier grant of this
     * window never matches again */
    w->bind_mw.rkey = ibv_inc_rkey(mw->rkey);
    w->bind_mw.bind_info.mr = m->mr[(size_t)rl->dev->index * m->nt + t];
    w->bind_mw.bind_info.addr = addr;
    w->bind_mw.bind_info.length = len;
    w->bind_mw.bind_info.mw_access_flags = write ? IBV_ACCESS_REMOTE_WRITE
                                                 : IBV_ACCESS_REMOTE_READ;
}

/* Binds g's windows rail by rail (r->gmu held). 0; 1 refusal (no window
 * to be had: the link stays); -1 the binds failed (the link is down). */
static int grant_bind(llk_rdma_grant_t *g, bool write, const uint64_t *segv, const uint32_t *segt,
                      uint32_t nseg, uint32_t *rkeys, int64_t deadline_ms, char *why, size_t cap)
{
    llk_rdma_link_t *l = g->l;
    struct ibv_send_wr *wr = malloc((size_t)nseg * sizeof *wr);
    if (!wr) {
        snprintf(why, cap, "out of memory for %u window binds", nseg);
        return 1;
    }
    uint32_t up = llk_rv_rails_up(l), bound = 0;
    for (uint16_t k = 0; k < g->nrails; k++)
        for (uint32_t i = 0; i < nseg && l->rail[k].dev->mw2 && (up & (1u << k)); i++) {
            struct ibv_mw *mw = mw_get(l, k);
            if (!mw) {
                snprintf(why, cap, "ibv_alloc_mw on %s: %s (device max_mw reached?)",
                         l->rail[k].dev->name, strerror(errno));
                free(wr);
                return 1;
            }
            g->mw[(size_t)i * g->nrails + k] = mw;
        }
    for (uint16_t k = 0; k < g->nrails; k++) {
        if (!(up & (1u << k))) {
            /* a rail that is down gets no window: key 0 there, the
             * requester's slices go over the others */
            for (uint32_t i = 0; i < nseg; i++)
                rkeys[(size_t)i * g->nrails + k] = 0;
            continue;
        }
        for (uint32_t i = 0; i < nseg; i++)
            bind_wr(&wr[i], g->m, &l->rail[k], g->mw[(size_t)i * g->nrails + k], segt[i],
                    segv[2 * (size_t)i], segv[2 * (size_t)i + 1], write);
        if (run_local(l, k, wr, nseg, deadline_ms, why, cap) != 0) {
            /* the rail went down: its windows go, the grant stands on the others */
            LLK_DEBUG("rdma: binding a grant's windows on rail %u: %s", k, why);
            for (uint32_t i = 0; i < nseg; i++) {
                struct ibv_mw **mw = &g->mw[(size_t)i * g->nrails + k];
                ibv_dealloc_mw(*mw);
                *mw = NULL;
                rkeys[(size_t)i * g->nrails + k] = 0;
            }
            continue;
        }
        bound++;
        for (uint32_t i = 0; i < nseg; i++) {
            struct ibv_mw *mw = g->mw[(size_t)i * g->nrails + k];
            mw->rkey = wr[i].bind_mw.rkey; /* the key the device now holds */
            rkeys[(size_t)i * g->nrails + k] = mw->rkey;
        }
    }
    free(wr);
    if (bound == 0) {
        snprintf(why, cap, "no rail of the link is up to bind a grant's windows");
        return -1;
    }
    return 0;
}

int llk_rdma_grant_new(llk_rdma_link_t *l, const llk_rdma_mrs_t *m, bool write,
                       const uint64_t *segv, const uint32_t *segt, uint32_t nseg,
                       uint32_t *rkeys, int64_t deadline_ms, llk_rdma_grant_t **out, char *why,
                       size_t cap)
{
    llk_rdma_t *r = l->r;
    *out = NULL;
    /* windows on every rail (mode MW), or the link's read-only /
     * write-only MRs (PD_PER_LINK) */
    bool mw = l->prot == LLK_RDMA_PROT_MW;
    llk_rdma_grant_t *g = calloc(1, sizeof *g);
    if (g && mw)
        g->mw = calloc((size_t)nseg * l->nrails, sizeof *g->mw);
    if (!g || (mw && !g->mw)) {
        free(g);
        snprintf(why, cap, "out of memory for a grant of %u windows", nseg * l->nrails);
        return 1;
    }
    g->r = r;
    g->l = l;
    g->m = m;
    g->nrails = l->nrails;
    if (!mw) {
        /* PD_PER_LINK: the keys of the link's read-only (pull) or
         * write-only (push) MRs, which stay valid until the link or the
         * cache goes; the grant is only a handle to end */
        for (uint32_t i = 0; i < nseg; i++)
            for (uint16_t k = 0; k < l->nrails; k++)
                if (link_key(l, m, write ? LMR_WRITE : LMR_READ, k, segt[i],
                             &rkeys[(size_t)i * l->nrails + k], why, cap) != 0) {
                    free(g);
                    return 1;
                }
        pthread_mutex_lock(&r->gmu);
        capture(r, write, segv, nseg, l->nrails, rkeys, l->prot);
        pthread_mutex_unlock(&r->gmu);
        *out = g;
        return 0;
    }
    g->nmw = nseg * l->nrails;
    pthread_mutex_lock(&r->gmu);
    int rc = grant_bind(g, write, segv, segt, nseg, rkeys, deadline_ms, why, cap);
    if (rc == 1) {
        /* nothing was posted: the windows taken go back unbound */
        for (uint32_t i = 0; i < g->nmw; i++)
            if (g->mw[i])
                mw_put(l, (uint16_t)(i % g->nrails), g->mw[i]);
    } else if (rc < 0) {
        grant_kill(g);
    } else {
        g->next = r->grants;
        if (r->grants)
            r->grants->prev = g;
        r->grants = g;
        capture(r, write, segv, nseg, l->nrails, rkeys, l->prot);
    }
    pthread_mutex_unlock(&r->gmu);
    if (rc != 0) {
        free(g->mw);
        free(g);
        return rc;
    }
    *out = g;
    return 0;
}

/* Invalidates g's windows on their rails' QPs and pools them (r->gmu
 * held); a rail that cannot (down, failed) deallocates its windows
 * instead: either way none works after this. */
static void grant_invalidate(llk_rdma_grant_t *g, int64_t deadline_ms)
{
    llk_rdma_link_t *l = g->l;
    uint32_t nseg = g->nmw / g->nrails;
    struct ibv_send_wr *wr = malloc((size_t)nseg * sizeof *wr);
    for (uint16_t k = 0; k < g->nrails; k++) {
        if (!l->rail[k].dev->mw2 || !g->mw[k])
            continue; /* no windows on this rail (a rail down at the grant) */
        bool ok = false;
        if (wr) {
            for (uint32_t i = 0; i < nseg; i++) {
                memset(&wr[i], 0, sizeof wr[i]);
                wr[i].opcode = IBV_WR_LOCAL_INV;
                wr[i].invalidate_rkey = g->mw[(size_t)i * g->nrails + k]->rkey;
            }
            char why[200];
            ok = run_local(l, k, wr, nseg, deadline_ms, why, sizeof why) == 0;
            if (!ok)
                LLK_DEBUG("rdma: invalidating a grant's windows: %s: deallocated", why);
        }
        for (uint32_t i = 0; i < nseg; i++) {
            struct ibv_mw **mw = &g->mw[(size_t)i * g->nrails + k];
            if (ok)
                mw_put(l, k, *mw);
            else
                ibv_dealloc_mw(*mw);
            *mw = NULL;
        }
    }
    free(wr);
}

void llk_rdma_grant_end(llk_rdma_grant_t *g, int64_t deadline_ms)
{
    if (!g)
        return;
    llk_rdma_t *r = g->r;
    pthread_mutex_lock(&r->gmu);
    if (!g->dead && g->nmw > 0) {
        grant_unlist(r, g);
        grant_invalidate(g, deadline_ms);
    }
    pthread_mutex_unlock(&r->gmu);
    free(g->mw);
    free(g);
}

#else /* !LLK_HAVE_VERBS */

llk_rdma_t *llk_rdma_open(const llk_options_t *o, uint64_t gen_seed, char *why, size_t cap)
{
    const char *w = NULL;
    llk_verbs_load(&w);
    snprintf(why, cap, "%s", w);
    return NULL;
}
void llk_rdma_close(llk_rdma_t *r) {}
void llk_rdma_set_post_delay_ms(llk_rdma_t *r, uint32_t ms) {}
uint32_t llk_rdma_post_delay_ms(llk_rdma_t *r) { return 0; }
void llk_rdma_cache_free(void *rdma, llk_cache_t *c) {}
llk_rdma_link_t *llk_rdma_link_create(llk_rdma_t *r, const struct sockaddr_storage *ips,
                                      size_t n, int32_t wait_ms, char *why, size_t cap)
{
    snprintf(why, cap, "built without libibverbs headers");
    return NULL;
}
uint16_t llk_rdma_link_nrails(const llk_rdma_link_t *l) { return 0; }
size_t llk_rdma_local_addrs(llk_rdma_t *r, llk_rdma_addr_t *out, size_t cap) { return 0; }
void llk_rdma_link_local(const llk_rdma_link_t *l, llk_xrail_wire_t *out) {}
int llk_rdma_link_connect(llk_rdma_link_t *l, const llk_xrail_wire_t *remote, uint16_t n,
                          char *why, size_t cap)
{
    snprintf(why, cap, "built without libibverbs headers");
    return -1;
}
void llk_rdma_link_describe(const llk_rdma_link_t *l, char *out, size_t cap)
{
    if (cap)
        out[0] = '\0';
}
void llk_rdma_link_free(llk_rdma_link_t *l) {}
void llk_rdma_link_rail_stats(const llk_rdma_link_t *l, llmlink_link_stats_t *out) {}
void llk_rdma_link_abort(llk_rdma_link_t *l) {}
const llk_rdma_mrs_t *llk_rdma_cache_mrs(llk_rdma_t *r, llk_cache_t *c, char *why, size_t cap)
{
    snprintf(why, cap, "built without libibverbs headers");
    return NULL;
}
uint64_t llk_rdma_mrs_generation(const llk_rdma_mrs_t *m) { return 0; }
bool llk_rdma_lkey(const llk_rdma_mrs_t *m, llk_rdma_link_t *l, uint16_t rail,
                   const uint8_t *addr, uint64_t len, uint32_t *lkey) { return false; }
llmlink_status_t llk_rdma_move(llk_rdma_link_t *l, bool write, const llk_rdma_sge_t *sg,
                               size_t n, int64_t deadline_ms, bool (*aborted)(void *), void *actx,
                               char *msg, size_t cap)
{
    snprintf(msg, cap, "built without libibverbs headers");
    return LLMLINK_FEATURE_NOT_ENABLED;
}
int llk_rdma_grant_new(llk_rdma_link_t *l, const llk_rdma_mrs_t *m, bool write,
                       const uint64_t *segv, const uint32_t *segt, uint32_t nseg,
                       uint32_t *rkeys, int64_t deadline_ms, llk_rdma_grant_t **out, char *why,
                       size_t cap)
{
    *out = NULL;
    snprintf(why, cap, "built without libibverbs headers");
    return 1;
}
void llk_rdma_grant_end(llk_rdma_grant_t *g, int64_t deadline_ms) {}
llk_rdma_prot_t llk_rdma_link_protection(const llk_rdma_link_t *l) { return LLK_RDMA_PROT_UNUSED; }
void llk_rdma_test_last_grant(llk_rdma_t *r, llk_test_rdma_grant_t *out)
{
    memset(out, 0, sizeof *out);
}
unsigned llk_rdma_test_live_grants(llk_rdma_t *r) { return 0; }
bool llk_rdma_test_rail(llk_rdma_link_t *l, uint16_t rail, void **qp, void **cq) { return false; }
bool llk_rdma_test_mr_keys(const llk_rdma_mrs_t *m, uint32_t tensor, uint32_t *lkey,
                           uint32_t *rkey) { return false; }
#endif
