/*
 * verbs.h - libibverbs, loaded at run time.
 *
 * The library never links -libverbs: the first user calls llk_verbs_load(),
 * which dlopen()s "libibverbs.so.1" and resolves every verb the RDMA
 * transport calls into one table (as NCCL's ibvwrap does), so that
 * libllmlink.a, the shared library and every binding load and run on hosts
 * without any RDMA stack. Verbs that libibverbs implements as static inline
 * functions through ctx->ops (ibv_post_send, ibv_poll_cq) need no symbol.
 *
 * Built without <infiniband/verbs.h> (LLK_HAVE_VERBS 0) the table is empty
 * and llk_verbs_load() reports "built without libibverbs headers".
 *
 * Test hook: the environment variable LLMLINK_IBVERBS names another file to
 * dlopen instead of libibverbs.so.1 (e.g. a path that does not exist, to see
 * the fallback of a host without the library).
 */
#ifndef LLK_VERBS_H
#define LLK_VERBS_H

#include <stdbool.h>

/* -DLLK_NO_VERBS builds the stubs even where the headers exist (to check
 * that configuration compiles).
 * The Makefile probes for the headers on every run and records the answer
 * in $(BUILD)/gen/llk_config.h (-DLLK_HAVE_CONFIG_H): the objects' dependency
 * files then name that header, so installing or removing libibverbs-dev
 * rebuilds what includes this file. Builds without it (setup.py, build.rs,
 * cgo) compile from scratch each time and ask the compiler directly. */
#if defined(LLK_HAVE_CONFIG_H)
#include "llk_config.h"
#if LLK_HAVE_VERBS_H && !defined(LLK_NO_VERBS)
#define LLK_HAVE_VERBS 1
#endif
#elif defined(__has_include) && !defined(LLK_NO_VERBS)
#if __has_include(<infiniband/verbs.h>)
#define LLK_HAVE_VERBS 1
#endif
#endif
#ifndef LLK_HAVE_VERBS
#define LLK_HAVE_VERBS 0
#endif

#if LLK_HAVE_VERBS
#include <infiniband/verbs.h>

typedef struct llk_verbs {
    struct ibv_device **(*get_device_list)(int *num);
    void (*free_device_list)(struct ibv_device **list);
    const char *(*get_device_name)(struct ibv_device *dev);
    struct ibv_context *(*open_device)(struct ibv_device *dev);
    int (*close_device)(struct ibv_context *ctx);
    int (*query_device)(struct ibv_context *ctx, struct ibv_device_attr *attr);
    /* The exported ibv_query_port fills the leading part of ibv_port_attr
     * that every version has (the header's macro adds newer fields). */
    int (*query_port)(struct ibv_context *ctx, uint8_t port, struct ibv_port_attr *attr);
    int (*query_gid)(struct ibv_context *ctx, uint8_t port, int index, union ibv_gid *gid);
    /* Optional (rdma-core >= 32): the GID's type; NULL where missing (then sysfs). */
    int (*query_gid_ex)(struct ibv_context *ctx, uint32_t port, uint32_t index,
                        struct ibv_gid_entry *entry, uint32_t flags, size_t entry_size);
    struct ibv_pd *(*alloc_pd)(struct ibv_context *ctx);
    int (*dealloc_pd)(struct ibv_pd *pd);
    struct ibv_mr *(*reg_mr)(struct ibv_pd *pd, void *addr, size_t len, int access);
    int (*dereg_mr)(struct ibv_mr *mr);
    struct ibv_cq *(*create_cq)(struct ibv_context *ctx, int cqe, void *cq_context,
                                struct ibv_comp_channel *ch, int comp_vector);
    int (*destroy_cq)(struct ibv_cq *cq);
    struct ibv_qp *(*create_qp)(struct ibv_pd *pd, struct ibv_qp_init_attr *attr);
    int (*modify_qp)(struct ibv_qp *qp, struct ibv_qp_attr *attr, int mask);
    int (*destroy_qp)(struct ibv_qp *qp);
    const char *(*wc_status_str)(enum ibv_wc_status status);
} llk_verbs_t;

/* The table, or NULL with the reason in *why (static or per-process text).
 * Loads once per process; thread-safe. */
const llk_verbs_t *llk_verbs_load(const char **why);
#else
typedef struct llk_verbs llk_verbs_t;
const llk_verbs_t *llk_verbs_load(const char **why);
#endif

#endif /* LLK_VERBS_H */
