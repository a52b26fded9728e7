/* api_link.c - link / unlink / check at the ABI: every argument is checked
 * here, before any network traffic, and converted for the core. */
#include "llmlink.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/addr.h"
#include "link/engine.h"
#include "base/err.h"

static void fill(llmlink_status_t *statuses, size_t n, llmlink_status_t st)
{
    if (statuses)
        for (size_t i = 0; i < n; i++)
            statuses[i] = st;
}

static llmlink_status_t check_ip_infos(const char *fn, size_t ci, const char *what,
                                       const llmlink_ip_info_t *infos, size_t n, bool need_port,
                                       struct sockaddr_storage *sa, socklen_t *len)
{
    if (n > LLMLINK_MAX_IP_INFOS)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: clusters[%zu].num_%s is %zu, more than %d", fn,
                       ci, what, n, LLMLINK_MAX_IP_INFOS);
    if (n && !infos)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: clusters[%zu].%s is NULL but num_%s is %zu",
                       fn, ci, what, what, n);
    for (size_t i = 0; i < n; i++) {
        if (!infos[i].ip)
            return llk_err(LLMLINK_PARAM_INVALID, "%s: clusters[%zu].%s[%zu].ip is NULL", fn, ci,
                           what, i);
        if (strnlen(infos[i].ip, 64) == 64 ||
            llk_addr_from_ip_port(infos[i].ip, infos[i].port, &sa[i], &len[i]) != 0)
            return llk_err(LLMLINK_PARAM_INVALID,
                           "%s: clusters[%zu].%s[%zu].ip \"%.63s\" is not an IPv4 or IPv6 literal",
                           fn, ci, what, i, infos[i].ip);
        if (need_port && infos[i].port == 0)
            return llk_err(LLMLINK_PARAM_INVALID, "%s: clusters[%zu].%s[%zu].port is 0", fn, ci,
                           what, i);
    }
    return LLMLINK_SUCCESS;
}

/* The checks both link and unlink share. */
static llmlink_status_t check_common(const char *fn, llmlink_t *dd,
                                     const llmlink_cluster_info_t *clusters, size_t n,
                                     int32_t timeout_ms)
{
    if (!dd)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: dd is NULL", fn);
    if (!clusters)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: clusters is NULL", fn);
    if (n == 0)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: num_clusters is 0", fn);
    if (n > LLMLINK_MAX_CLUSTERS_PER_CALL)
        return llk_err(LLMLINK_CLUSTER_NUM_EXCEED_LIMIT,
                       "%s: num_clusters is %zu, at most %d per call", fn, n,
                       LLMLINK_MAX_CLUSTERS_PER_CALL);
    if (timeout_ms <= 0)
        return llk_err(LLMLINK_PARAM_INVALID, "%s: timeout_ms is %d, must be > 0", fn,
                       (int)timeout_ms);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < i; j++)
            if (clusters[i].remote_cluster_id == clusters[j].remote_cluster_id)
                return llk_err(LLMLINK_PARAM_INVALID,
                               "%s: clusters[%zu] and clusters[%zu] both name remote cluster %llu",
                               fn, j, i, (unsigned long long)clusters[i].remote_cluster_id);
    return LLMLINK_SUCCESS;
}

LLMLINK_EXTERN llmlink_status_t llmlink_link_clusters(llmlink_t *dd,
                                                      const llmlink_cluster_info_t *clusters,
                                                      size_t num_clusters, int32_t timeout_ms,
                                                      llmlink_status_t *cluster_statuses)
{
    static const char fn[] = "llmlink_link_clusters";
    llmlink_status_t st = check_common(fn, dd, clusters, num_clusters, timeout_ms);
    if (st != LLMLINK_SUCCESS) {
        /* The caller's statuses get an answer too (with more than 16
         * clusters: all CLUSTER_NUM_EXCEED_LIMIT), unless clusters is NULL
         * and num_clusters cannot be trusted to size the array. */
        if (clusters)
            fill(cluster_statuses, num_clusters, st);
        return st;
    }
    if (llk_engine_role(dd) == LLMLINK_ROLE_PROMPT) {
        st = llk_err(LLMLINK_ROLE_NOT_ALLOWED, "%s: a PROMPT engine does not link; decode "
                     "engines (DECODER or MIX) link to it", fn);
        fill(cluster_statuses, num_clusters, st);
        return st;
    }
    llk_link_req_t *reqs = calloc(num_clusters, sizeof *reqs);
    if (!reqs) {
        st = llk_err(LLMLINK_OUT_OF_MEMORY, "%s: out of memory", fn);
        fill(cluster_statuses, num_clusters, st);
        return st;
    }
    for (size_t i = 0; i < num_clusters && st == LLMLINK_SUCCESS; i++) {
        const llmlink_cluster_info_t *c = &clusters[i];
        llk_link_req_t *r = &reqs[i];
        r->remote_id = c->remote_cluster_id;
        if (c->remote_role != 0 && c->remote_role != LLMLINK_ROLE_PROMPT &&
            c->remote_role != LLMLINK_ROLE_MIX) {
            st = llk_err(LLMLINK_PARAM_INVALID,
                         "%s: clusters[%zu].remote_role is %d; a link goes to a PROMPT (1) or "
                         "MIX (3) engine, or 0 for either", fn, i, (int)c->remote_role);
            break;
        }
        r->remote_role = (uint32_t)c->remote_role;
        if (c->num_remote_ip_infos == 0) {
            st = llk_err(LLMLINK_PARAM_INVALID, "%s: clusters[%zu] has no remote ip info", fn, i);
            break;
        }
        st = check_ip_infos(fn, i, "remote_ip_infos", c->remote_ip_infos, c->num_remote_ip_infos,
                            true, r->remote, r->remote_len);
        if (st != LLMLINK_SUCCESS)
            break;
        r->num_remote = c->num_remote_ip_infos;
        st = check_ip_infos(fn, i, "local_ip_infos", c->local_ip_infos, c->num_local_ip_infos,
                            false, r->local, r->local_len);
        r->num_local = c->num_local_ip_infos;
    }
    if (st != LLMLINK_SUCCESS) {
        free(reqs);
        fill(cluster_statuses, num_clusters, st);
        return st;
    }
    st = llk_engine_link(dd, reqs, num_clusters, timeout_ms, cluster_statuses);
    free(reqs);
    if (st == LLMLINK_NOT_INITIALIZED || st == LLMLINK_ENGINE_FINALIZED)
        fill(cluster_statuses, num_clusters, st);
    return st;
}

LLMLINK_EXTERN llmlink_status_t llmlink_unlink_clusters(llmlink_t *dd,
                                                        const llmlink_cluster_info_t *clusters,
                                                        size_t num_clusters, int32_t timeout_ms,
                                                        bool force,
                                                        llmlink_status_t *cluster_statuses)
{
    static const char fn[] = "llmlink_unlink_clusters";
    llmlink_status_t st = check_common(fn, dd, clusters, num_clusters, timeout_ms);
    uint64_t ids[LLMLINK_MAX_CLUSTERS_PER_CALL];
    /* Only the id names the link, but ip infos that are given must be
     * well-formed: a typo should not pass silently. */
    for (size_t i = 0; i < num_clusters && st == LLMLINK_SUCCESS; i++) {
        struct sockaddr_storage sa[LLMLINK_MAX_IP_INFOS];
        socklen_t len[LLMLINK_MAX_IP_INFOS];
        ids[i] = clusters[i].remote_cluster_id;
        st = check_ip_infos(fn, i, "remote_ip_infos", clusters[i].remote_ip_infos,
                            clusters[i].num_remote_ip_infos, false, sa, len);
        if (st == LLMLINK_SUCCESS)
            st = check_ip_infos(fn, i, "local_ip_infos", clusters[i].local_ip_infos,
                                clusters[i].num_local_ip_infos, false, sa, len);
    }
    if (st != LLMLINK_SUCCESS) {
        if (clusters)
            fill(cluster_statuses, num_clusters, st);
        return st;
    }
    st = llk_engine_unlink(dd, ids, num_clusters, timeout_ms, force, cluster_statuses);
    if (st == LLMLINK_NOT_INITIALIZED || st == LLMLINK_ENGINE_FINALIZED)
        fill(cluster_statuses, num_clusters, st);
    return st;
}

LLMLINK_EXTERN llmlink_status_t llmlink_check_link_status(llmlink_t *dd, uint64_t remote_cluster_id)
{
    if (!dd)
        return llk_err(LLMLINK_PARAM_INVALID, "llmlink_check_link_status: dd is NULL");
    return llk_engine_check_link(dd, remote_cluster_id);
}
