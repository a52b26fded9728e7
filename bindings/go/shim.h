/*
 * shim.h - the C side of the Go binding: one wrapper per ABI call that
 * makes the call AND copies llmlink_last_error() into a caller buffer.
 *
 * Why: llmlink_last_error() is thread-local, and a goroutine may move to
 * another OS thread between two cgo calls, so reading the message in a
 * second cgo call could read another goroutine's error (or none). Doing
 * both in one cgo call keeps them on the same thread.
 *
 * Every function is static inline: each cgo file includes this header in
 * its own translation unit and uses a few of them.
 */
#ifndef LLMLINK_GO_SHIM_H
#define LLMLINK_GO_SHIM_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmlink.h"

/* The major version this package was written for: a header of another
 * major version has another ABI, and compiling against it must fail. */
#define LLMLINK_GO_MAJOR 0
#if LLMLINK_VERSION_MAJOR != LLMLINK_GO_MAJOR
#error "llmlink Go binding: llmlink.h has another LLMLINK_VERSION_MAJOR than the major version 0 this package was written for"
#endif

/* Room for one failure message; longer ones are cut (they name the
 * argument first, so the useful part survives). */
#define GOLLK_MSG_CAP 1024

typedef struct gollk_err {
    llmlink_status_t status;
    char msg[GOLLK_MSG_CAP];
} gollk_err_t;

static inline llmlink_status_t gollk_done(llmlink_status_t st, gollk_err_t *err)
{
    err->status = st;
    err->msg[0] = '\0';
    if (st != LLMLINK_SUCCESS) {
        const char *m = llmlink_last_error();
        size_t n = strlen(m);
        if (n >= GOLLK_MSG_CAP)
            n = GOLLK_MSG_CAP - 1;
        memcpy(err->msg, m, n);
        err->msg[n] = '\0';
    }
    return st;
}

/* Engine ------------------------------------------------------------ */

static inline llmlink_status_t gollk_create(llmlink_t **out, llmlink_role_t role, uint64_t id,
                                            gollk_err_t *err)
{
    return gollk_done(llmlink_create(out, role, id), err);
}

static inline llmlink_status_t gollk_init(llmlink_t *dd, const llmlink_option_t *opts, size_t n,
                                          gollk_err_t *err)
{
    return gollk_done(llmlink_init(dd, opts, n), err);
}

static inline llmlink_status_t gollk_get_listen_port(llmlink_t *dd, size_t index, uint16_t *port,
                                                     gollk_err_t *err)
{
    return gollk_done(llmlink_get_listen_port(dd, index, port), err);
}

static inline llmlink_status_t gollk_get_stats(llmlink_t *dd, llmlink_stats_t *s, gollk_err_t *err)
{
    s->version = LLMLINK_STATS_VERSION;
    return gollk_done(llmlink_get_stats(dd, s), err);
}

static inline llmlink_status_t gollk_get_xfer_stats(llmlink_t *dd, llmlink_xfer_stats_t *s,
                                                    gollk_err_t *err)
{
    s->version = LLMLINK_XFER_STATS_VERSION;
    return gollk_done(llmlink_get_xfer_stats(dd, s), err);
}

static inline llmlink_status_t gollk_get_link_stats(llmlink_t *dd, uint64_t cluster_id,
                                                    llmlink_link_stats_t *s, gollk_err_t *err)
{
    s->version = LLMLINK_LINK_STATS_VERSION;
    return gollk_done(llmlink_get_link_stats(dd, cluster_id, s), err);
}

/* Links ------------------------------------------------------------- */

static inline llmlink_status_t gollk_link(llmlink_t *dd, const llmlink_cluster_info_t *c, size_t n,
                                          int32_t timeout_ms, llmlink_status_t *statuses,
                                          gollk_err_t *err)
{
    return gollk_done(llmlink_link_clusters(dd, c, n, timeout_ms, statuses), err);
}

static inline llmlink_status_t gollk_unlink(llmlink_t *dd, const llmlink_cluster_info_t *c,
                                            size_t n, int32_t timeout_ms, int force,
                                            llmlink_status_t *statuses, gollk_err_t *err)
{
    return gollk_done(llmlink_unlink_clusters(dd, c, n, timeout_ms, force != 0, statuses), err);
}

static inline llmlink_status_t gollk_check(llmlink_t *dd, uint64_t id, gollk_err_t *err)
{
    return gollk_done(llmlink_check_link_status(dd, id), err);
}

/* Caches ------------------------------------------------------------ */

/* The registration options of one call: only the access for now (Go
 * passes a plain number so cgo needs no struct of the caller's). */
static inline llmlink_register_options_t gollk_reg_opts(uint32_t access)
{
    llmlink_register_options_t o = LLMLINK_REGISTER_OPTIONS_INIT;
    o.access = access;
    return o;
}

static inline llmlink_status_t gollk_register_blocks(llmlink_t *dd, const llmlink_cache_desc_t *d,
                                                     const uint64_t *addrs, size_t n,
                                                     const llmlink_cache_key_t *key, uint32_t access,
                                                     int64_t *id, gollk_err_t *err)
{
    llmlink_register_options_t o = gollk_reg_opts(access);
    return gollk_done(llmlink_register_blocks_cache_opts(dd, d, addrs, n, key, &o, id), err);
}

static inline llmlink_status_t gollk_register(llmlink_t *dd, const llmlink_cache_desc_t *d,
                                              const uint64_t *addrs, size_t n,
                                              const llmlink_cache_key_t *keys, size_t nkeys,
                                              uint32_t access, int64_t *id, gollk_err_t *err)
{
    llmlink_register_options_t o = gollk_reg_opts(access);
    return gollk_done(llmlink_register_cache_opts(dd, d, addrs, n, keys, nkeys, &o, id), err);
}

static inline llmlink_status_t gollk_unregister(llmlink_t *dd, int64_t id, gollk_err_t *err)
{
    return gollk_done(llmlink_unregister_cache(dd, id), err);
}

static inline llmlink_status_t gollk_allocate(llmlink_t *dd, const llmlink_cache_desc_t *d,
                                              const llmlink_cache_key_t *keys, size_t nkeys,
                                              uint32_t access, int64_t *id, uint64_t *addrs,
                                              size_t naddrs, gollk_err_t *err)
{
    llmlink_register_options_t o = gollk_reg_opts(access);
    return gollk_done(llmlink_allocate_cache_opts(dd, d, keys, nkeys, &o, id, addrs, naddrs), err);
}

static inline llmlink_status_t gollk_allocate_blocks(llmlink_t *dd, const llmlink_cache_desc_t *d,
                                                     const llmlink_cache_key_t *key, uint32_t access,
                                                     int64_t *id, uint64_t *addrs, size_t naddrs,
                                                     gollk_err_t *err)
{
    llmlink_register_options_t o = gollk_reg_opts(access);
    return gollk_done(llmlink_allocate_blocks_cache_opts(dd, d, key, &o, id, addrs, naddrs), err);
}

static inline llmlink_status_t gollk_deallocate(llmlink_t *dd, int64_t id, gollk_err_t *err)
{
    return gollk_done(llmlink_deallocate_cache(dd, id), err);
}

static inline llmlink_status_t gollk_remove_key(llmlink_t *dd, const llmlink_cache_key_t *key,
                                                gollk_err_t *err)
{
    return gollk_done(llmlink_remove_cache_key(dd, key), err);
}

/* An address the library returned, as a pointer Go can slice. Converting
 * in C keeps the uintptr -> unsafe.Pointer step out of Go (go vet's
 * unsafeptr check, and Go's rule that such conversions be immediate). */
static inline void *gollk_addr_ptr(uint64_t addr)
{
    return (void *)(uintptr_t)addr;
}

/* Transfers --------------------------------------------------------- */

static inline llmlink_status_t gollk_pull_blocks(llmlink_t *dd, const llmlink_cache_key_t *key,
                                                 int64_t dst, const uint64_t *src_blocks,
                                                 size_t nsrc, const uint64_t *dst_blocks,
                                                 size_t ndst, const llmlink_layer_range_t *layers,
                                                 gollk_err_t *err)
{
    return gollk_done(llmlink_pull_blocks(dd, key, dst, src_blocks, nsrc, dst_blocks, ndst, layers),
                      err);
}

static inline llmlink_status_t gollk_pull_cache(llmlink_t *dd, const llmlink_cache_key_t *key,
                                                int64_t dst, uint32_t batch, int64_t size,
                                                const llmlink_layer_range_t *layers,
                                                gollk_err_t *err)
{
    return gollk_done(llmlink_pull_cache(dd, key, dst, batch, size, layers), err);
}

static inline llmlink_status_t gollk_push_blocks(llmlink_t *dd, const llmlink_cache_key_t *key,
                                                 int64_t src, const uint64_t *src_blocks,
                                                 size_t nsrc, const uint64_t *dst_blocks,
                                                 size_t ndst, const llmlink_layer_range_t *layers,
                                                 gollk_err_t *err)
{
    return gollk_done(llmlink_push_blocks(dd, key, src, src_blocks, nsrc, dst_blocks, ndst, layers),
                      err);
}

static inline llmlink_status_t gollk_push_cache(llmlink_t *dd, const llmlink_cache_key_t *key,
                                                int64_t src, uint32_t batch, int64_t size,
                                                const llmlink_layer_range_t *layers,
                                                gollk_err_t *err)
{
    return gollk_done(llmlink_push_cache(dd, key, src, batch, size, layers), err);
}

/* Asynchronous transfers -------------------------------------------- */

/* The options of one submission from plain values (cgo builds no struct
 * of the caller's): the task's timeout and an attached notification. The
 * binding learns of completions through the engine fd, so no on_done. */
static inline llmlink_task_options_t gollk_task_opts(int32_t timeout_ms, const void *nd, size_t nl)
{
    llmlink_task_options_t o = LLMLINK_TASK_OPTIONS_INIT;
    o.timeout_ms = timeout_ms;
    o.notify_data = nl ? nd : NULL;
    o.notify_len = nl;
    return o;
}

static inline llmlink_status_t gollk_pull_blocks_async(
    llmlink_t *dd, const llmlink_cache_key_t *key, int64_t dst, const uint64_t *src_blocks,
    size_t nsrc, const uint64_t *dst_blocks, size_t ndst, const llmlink_layer_range_t *layers,
    int32_t timeout_ms, const void *nd, size_t nl, llmlink_task_t **task, gollk_err_t *err)
{
    llmlink_task_options_t o = gollk_task_opts(timeout_ms, nd, nl);
    return gollk_done(llmlink_pull_blocks_async(dd, key, dst, src_blocks, nsrc, dst_blocks, ndst,
                                                layers, &o, task),
                      err);
}

static inline llmlink_status_t gollk_pull_cache_async(llmlink_t *dd, const llmlink_cache_key_t *key,
                                                      int64_t dst, uint32_t batch, int64_t size,
                                                      const llmlink_layer_range_t *layers,
                                                      int32_t timeout_ms, const void *nd, size_t nl,
                                                      llmlink_task_t **task, gollk_err_t *err)
{
    llmlink_task_options_t o = gollk_task_opts(timeout_ms, nd, nl);
    return gollk_done(llmlink_pull_cache_async(dd, key, dst, batch, size, layers, &o, task), err);
}

static inline llmlink_status_t gollk_push_blocks_async(
    llmlink_t *dd, const llmlink_cache_key_t *key, int64_t src, const uint64_t *src_blocks,
    size_t nsrc, const uint64_t *dst_blocks, size_t ndst, const llmlink_layer_range_t *layers,
    int32_t timeout_ms, const void *nd, size_t nl, llmlink_task_t **task, gollk_err_t *err)
{
    llmlink_task_options_t o = gollk_task_opts(timeout_ms, nd, nl);
    return gollk_done(llmlink_push_blocks_async(dd, key, src, src_blocks, nsrc, dst_blocks, ndst,
                                                layers, &o, task),
                      err);
}

static inline llmlink_status_t gollk_push_cache_async(llmlink_t *dd, const llmlink_cache_key_t *key,
                                                      int64_t src, uint32_t batch, int64_t size,
                                                      const llmlink_layer_range_t *layers,
                                                      int32_t timeout_ms, const void *nd, size_t nl,
                                                      llmlink_task_t **task, gollk_err_t *err)
{
    llmlink_task_options_t o = gollk_task_opts(timeout_ms, nd, nl);
    return gollk_done(llmlink_push_cache_async(dd, key, src, batch, size, layers, &o, task), err);
}

/* The task's message into err (status given): read while the handle is
 * valid, so the caller holds it. */
static inline void gollk_task_msg(llmlink_task_t *task, llmlink_status_t st, gollk_err_t *err)
{
    const char *m = llmlink_task_error(task);
    size_t n = strlen(m);
    if (n >= GOLLK_MSG_CAP)
        n = GOLLK_MSG_CAP - 1;
    err->status = st;
    memcpy(err->msg, m, n);
    err->msg[n] = '\0';
}

/* The engine fd, duplicated (close-on-exec) for Go's netpoller: Go closes
 * its copy when it stops watching, and the engine keeps its own. The
 * duplicate shares the file description, so it is non-blocking as the
 * engine's eventfd is, which is what makes os.NewFile register it with
 * the netpoller. -1 with err set on failure. */
static inline int gollk_dup_event_fd(llmlink_t *dd, gollk_err_t *err)
{
    int fd = -1;
    if (gollk_done(llmlink_get_event_fd(dd, &fd), err) != LLMLINK_SUCCESS)
        return -1;
    int dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0) {
        err->status = LLMLINK_FAILED;
        snprintf(err->msg, GOLLK_MSG_CAP, "dup of the engine fd %d: %s", fd, strerror(errno));
    }
    return dup;
}

/* Notifications ----------------------------------------------------- */

static inline llmlink_status_t gollk_notify(llmlink_t *dd, uint64_t cluster_id, const void *data,
                                            size_t len, int32_t timeout_ms, gollk_err_t *err)
{
    return gollk_done(llmlink_notify(dd, cluster_id, data, len, timeout_ms), err);
}

static inline llmlink_status_t gollk_get_notifies(llmlink_t *dd, llmlink_notification_t *out,
                                                  size_t max, size_t *count, gollk_err_t *err)
{
    return gollk_done(llmlink_get_notifies(dd, out, max, count), err);
}

#endif /* LLMLINK_GO_SHIM_H */
