/*
 * transport/rdma_mender.c - the engine's thread that re-establishes failed
 * RDMA rails in the background.
 *
 * A rail that failed under a transfer is marked down (rdma_move.c) and the
 * transfer goes on over the other rails. It comes back through the
 * XRDMA_RAIL_RESET exchange (rdma_repair.c, rdma.c) once its port is
 * ACTIVE again, which needs an idle data stream of the link. Requests do
 * it before they send, but a link that moves nothing would then keep its
 * rail down until its next transfer, and its first transfer would pay for
 * the exchange. So one thread per engine with RDMA looks at the links it
 * is the client of every MEND_EVERY_MS and mends those with a rail down
 * over an idle stream; it never waits for a stream (a busy link's next
 * request does it) and each rail is tried at most once a second, less
 * often after failed attempts (llk_rdma_rail_repairable).
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "link/engine.h"
#include "link/link_api.h"
#include "transport/rdma.h"
#include "transport/transport_testing.h"
#include "xfer/xfer.h"

#define MEND_EVERY_MS 200

struct llk_rdma_mender {
    llmlink_t *e;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    bool paused; /* test seam: rounds skipped (transport_testing.h) */
};

typedef struct {
    llk_xlink_t **v;
    size_t n, cap;
} xl_list_t;

/* e->mu held: a reference to every link this engine is the client of. */
static void collect(void *arg, void *xfer_ctx, bool outbound, uint64_t remote_id,
                    const char *peer)
{
    (void)remote_id;
    (void)peer;
    xl_list_t *l = arg;
    llk_xlink_t *xl = xfer_ctx;
    if (!outbound || llk_xlink_is_broken(xl))
        return;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        llk_xlink_t **v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return; /* the next round tries again */
        l->v = v;
        l->cap = cap;
    }
    llk_xlink_ref(xl);
    l->v[l->n++] = xl;
}

static void mend_round(llmlink_t *e)
{
    xl_list_t l = {0};
    llk_link_lock(e);
    llk_link_each_locked(e, collect, &l);
    llk_link_unlock(e);
    for (size_t i = 0; i < l.n; i++) {
        int n = llk_rdma_xlink_mend(l.v[i]);
        if (n > 0)
            LLK_INFO("cluster %llu: %d RDMA rail%s of the link with cluster %llu "
                     "re-established in the background", (unsigned long long)e->cluster_id, n,
                     n == 1 ? "" : "s", (unsigned long long)l.v[i]->remote_id);
        llk_xlink_unref(l.v[i]);
    }
    free(l.v);
}

static void *mender_main(void *arg)
{
    struct llk_rdma_mender *m = arg;
    pthread_mutex_lock(&m->mu);
    while (!m->stop) {
        struct timespec ts = llk_ms_timespec(llk_now_ms() + MEND_EVERY_MS);
        pthread_cond_timedwait(&m->cv, &m->mu, &ts);
        if (m->stop)
            break;
        bool paused = m->paused;
        pthread_mutex_unlock(&m->mu);
        if (!paused)
            mend_round(m->e);
        pthread_mutex_lock(&m->mu);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

llmlink_status_t llk_rdma_mender_start(llmlink_t *e)
{
    if (!e->rdma || e->rdma_mender)
        return LLMLINK_SUCCESS;
    struct llk_rdma_mender *m = calloc(1, sizeof *m);
    if (!m)
        return llk_err(LLMLINK_OUT_OF_MEMORY, "llmlink_init: out of memory (RDMA rail mender)");
    m->e = e;
    pthread_mutex_init(&m->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* llk_ms_timespec's clock */
    pthread_cond_init(&m->cv, &ca);
    pthread_condattr_destroy(&ca);
    int rc = pthread_create(&m->th, NULL, mender_main, m);
    if (rc != 0) {
        pthread_cond_destroy(&m->cv);
        pthread_mutex_destroy(&m->mu);
        free(m);
        return llk_err(LLMLINK_FAILED, "llmlink_init: cannot start the RDMA rail mender: %s",
                       strerror(rc));
    }
    e->rdma_mender = m;
    return LLMLINK_SUCCESS;
}

void llk_test_set_rdma_mender_paused(llmlink_t *e, bool on)
{
    struct llk_rdma_mender *m = e ? e->rdma_mender : NULL;
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->paused = on;
    pthread_mutex_unlock(&m->mu);
}

void llk_rdma_mender_stop(llmlink_t *e)
{
    struct llk_rdma_mender *m = e->rdma_mender;
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->stop = true;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
    pthread_join(m->th, NULL);
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    free(m);
    e->rdma_mender = NULL;
}
