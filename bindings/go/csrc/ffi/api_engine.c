/* api_engine.c - engine lifecycle at the ABI: argument checks, then core. */
#include "llmlink.h"

#include <stdio.h>

#include "link/engine.h"
#include "base/err.h"
#include "base/options.h"

static bool role_valid(llmlink_role_t r)
{
    return r == LLMLINK_ROLE_PROMPT || r == LLMLINK_ROLE_DECODER || r == LLMLINK_ROLE_MIX;
}

LLMLINK_EXTERN llmlink_status_t llmlink_create(llmlink_t **out, llmlink_role_t role,
                                               uint64_t cluster_id)
{
    if (!out)
        return llk_err(LLMLINK_PARAM_INVALID, "llmlink_create: out is NULL");
    *out = NULL;
    if (!role_valid(role))
        return llk_err(LLMLINK_PARAM_INVALID,
                       "llmlink_create: role %d is not PROMPT (1), DECODER (2) or MIX (3)",
                       (int)role);
    return llk_engine_create(out, role, cluster_id);
}

LLMLINK_EXTERN llmlink_status_t llmlink_init(llmlink_t *dd, const llmlink_option_t *options,
                                             size_t num_options)
{
    if (!dd)
        return llk_err(LLMLINK_PARAM_INVALID, "llmlink_init: dd is NULL");
    if (!options && num_options)
        return llk_err(LLMLINK_PARAM_INVALID, "llmlink_init: options is NULL but num_options is %zu",
                       num_options);
    if (num_options > 1024)
        return llk_err(LLMLINK_PARAM_INVALID, "llmlink_init: num_options %zu exceeds 1024",
                       num_options);
    llk_options_t o;
    char msg[512];
    if (llk_options_parse(&o, options, num_options, msg, sizeof msg) != LLMLINK_SUCCESS)
        return llk_err(LLMLINK_PARAM_INVALID, "llmlink_init: %s", msg);
    return llk_engine_init(dd, &o);
}

LLMLINK_EXTERN void llmlink_finalize(llmlink_t *dd)
{
    if (dd)
        llk_engine_finalize(dd);
}

LLMLINK_EXTERN void llmlink_destroy(llmlink_t *dd)
{
    if (!dd)
        return;
    llk_engine_finalize(dd);
    llk_engine_free(dd);
}

LLMLINK_EXTERN llmlink_status_t llmlink_get_role(const llmlink_t *dd, llmlink_role_t *role)
{
    if (!dd || !role)
        return llk_err(LLMLINK_PARAM_INVALID, "llmlink_get_role: %s is NULL", dd ? "role" : "dd");
    *role = llk_engine_role(dd);
    return LLMLINK_SUCCESS;
}

LLMLINK_EXTERN llmlink_status_t llmlink_get_cluster_id(const llmlink_t *dd, uint64_t *cluster_id)
{
    if (!dd || !cluster_id)
        return llk_err(LLMLINK_PARAM_INVALID, "llmlink_get_cluster_id: %s is NULL",
                       dd ? "cluster_id" : "dd");
    *cluster_id = llk_engine_cluster_id(dd);
    return LLMLINK_SUCCESS;
}

LLMLINK_EXTERN llmlink_status_t llmlink_get_listen_port(llmlink_t *dd, size_t index,
                                                        uint16_t *port)
{
    if (!dd || !port)
        return llk_err(LLMLINK_PARAM_INVALID, "llmlink_get_listen_port: %s is NULL",
                       dd ? "port" : "dd");
    return llk_engine_listen_port(dd, index, port, "llmlink_get_listen_port");
}

LLMLINK_EXTERN llmlink_status_t llmlink_get_stats(llmlink_t *dd, llmlink_stats_t *stats)
{
    if (!dd || !stats)
        return llk_err(LLMLINK_PARAM_INVALID, "llmlink_get_stats: %s is NULL",
                       dd ? "stats" : "dd");
    if (stats->version != LLMLINK_STATS_VERSION)
        return llk_err(LLMLINK_PARAM_INVALID,
                       "llmlink_get_stats: stats->version is %u, expected LLMLINK_STATS_VERSION (%u)",
                       stats->version, LLMLINK_STATS_VERSION);
    return llk_engine_stats(dd, stats);
}
