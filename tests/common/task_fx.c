/* task_fx.c - helpers of the asynchronous-transfer tests (task_fx.h). */
#include "task_fx.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvfill.h"

llmlink_t *tfx_engine(llmlink_role_t role, uint64_t cluster_id, const char *const *opts)
{
    llmlink_t *e = NULL;
    if (llmlink_create(&e, role, cluster_id) != LLMLINK_SUCCESS) {
        fprintf(stderr, "tfx_engine: create: %s\n", llmlink_last_error());
        return NULL;
    }
    llmlink_option_t o[24];
    char kv[24][128];
    size_t n = 0;
    if (role != LLMLINK_ROLE_DECODER) {
        o[n].key = "llm.listenIpInfo";
        o[n].value = "127.0.0.1:0";
        n++;
    }
    for (size_t i = 0; opts && opts[i] && n < 24; i++) {
        snprintf(kv[n], sizeof kv[n], "%s", opts[i]);
        char *eq = strchr(kv[n], '=');
        if (!eq)
            continue;
        *eq = '\0';
        o[n].key = kv[n];
        o[n].value = eq + 1;
        n++;
    }
    if (llmlink_init(e, o, n) != LLMLINK_SUCCESS) {
        fprintf(stderr, "tfx_engine: init: %s\n", llmlink_last_error());
        llmlink_destroy(e);
        return NULL;
    }
    return e;
}

int tfx_cache(llmlink_t *e, tfx_cache_t *c, bool blocks, uint32_t ntensors, uint64_t units,
              uint64_t unit_bytes, uint64_t seed, const llmlink_cache_key_t *keys,
              size_t num_keys, void *(*alloc)(size_t))
{
    memset(c, 0, sizeof *c);
    if (ntensors > TFX_MAX_TENSORS || unit_bytes % 4)
        return -1;
    c->ntensors = ntensors;
    c->units = units;
    c->unit_bytes = unit_bytes;
    c->seed = seed;
    uint64_t addrs[TFX_MAX_TENSORS];
    for (uint32_t t = 0; t < ntensors; t++) {
        c->mem[t] = alloc ? alloc(units * unit_bytes) : malloc(units * unit_bytes);
        if (!c->mem[t])
            return -1;
        kvfill_fill(c->mem[t], units * unit_bytes, seed, t, 0);
        addrs[t] = (uint64_t)(uintptr_t)c->mem[t];
    }
    llmlink_cache_desc_t d;
    memset(&d, 0, sizeof d);
    d.num_tensors = ntensors;
    d.data_type = LLMLINK_DT_FLOAT;
    d.placement = LLMLINK_PLACEMENT_HOST;
    d.num_dims = 2;
    d.shape[0] = (int64_t)units;
    d.shape[1] = (int64_t)(unit_bytes / 4);
    llmlink_status_t st =
        blocks ? llmlink_register_blocks_cache(e, &d, addrs, ntensors, num_keys ? keys : NULL,
                                               &c->id)
               : llmlink_register_cache(e, &d, addrs, ntensors, keys, num_keys, &c->id);
    if (st != LLMLINK_SUCCESS) {
        fprintf(stderr, "tfx_cache: register: %s\n", llmlink_last_error());
        return -1;
    }
    return 0;
}

void tfx_cache_free(llmlink_t *e, tfx_cache_t *c)
{
    if (e && c->id > 0)
        llmlink_unregister_cache(e, c->id);
    c->id = 0;
    for (uint32_t t = 0; t < c->ntensors; t++) {
        free(c->mem[t]);
        c->mem[t] = NULL;
    }
}

llmlink_status_t tfx_link_port(llmlink_t *e, uint64_t id, uint16_t port, int timeout_ms)
{
    llmlink_ip_info_t rip = {"127.0.0.1", port};
    llmlink_cluster_info_t ci;
    memset(&ci, 0, sizeof ci);
    ci.remote_cluster_id = id;
    ci.remote_ip_infos = &rip;
    ci.num_remote_ip_infos = 1;
    llmlink_status_t one = LLMLINK_FAILED;
    llmlink_status_t st = llmlink_link_clusters(e, &ci, 1, timeout_ms, &one);
    return st == LLMLINK_SUCCESS ? one : (one != LLMLINK_SUCCESS ? one : st);
}

llmlink_status_t tfx_link(llmlink_t *e, const proc_t *p, int timeout_ms)
{
    return tfx_link_port(e, p->cluster_id, p->port, timeout_ms);
}

bool tfx_block_holds(const tfx_cache_t *c, uint64_t dst, uint64_t seed, uint64_t src_block,
                     char *why, size_t wlen)
{
    for (uint32_t t = 0; t < c->ntensors; t++) {
        size_t bad = kvfill_check(c->mem[t] + dst * c->unit_bytes, c->unit_bytes, seed, t,
                                  src_block * c->unit_bytes);
        if (bad != KVFILL_OK) {
            snprintf(why, wlen, "tensor %u block %llu byte %zu: not seed %llu's block %llu", t,
                     (unsigned long long)dst, bad, (unsigned long long)seed,
                     (unsigned long long)src_block);
            return false;
        }
    }
    return true;
}

llmlink_cache_key_t tfx_blocks_key(uint64_t cluster, uint64_t model)
{
    llmlink_cache_key_t k;
    memset(&k, 0, sizeof k);
    k.type = LLMLINK_KEY_BLOCKS;
    k.cluster_id = cluster;
    k.model_id = model;
    k.prefix_id = -1;
    return k;
}

llmlink_cache_key_t tfx_idx_key(uint64_t cluster, int64_t cache_id, uint32_t batch)
{
    llmlink_cache_key_t k;
    memset(&k, 0, sizeof k);
    k.type = LLMLINK_KEY_ID_AND_INDEX;
    k.cluster_id = cluster;
    k.cache_id = cache_id;
    k.batch_index = batch;
    k.prefix_id = -1;
    return k;
}

bool tfx_readable(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}
