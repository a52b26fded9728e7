/* base/events.c - the level-triggered engine descriptor (events.h). */
#include <errno.h>
#include <stdint.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include "base/events.h"

int llk_events_init(llk_events_t *ev)
{
    ev->pending = 0;
    ev->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ev->fd < 0)
        return -1;
    if (pthread_mutex_init(&ev->mu, NULL) != 0) {
        int err = errno;
        close(ev->fd);
        ev->fd = -1;
        errno = err ? err : ENOMEM;
        return -1;
    }
    return 0;
}

void llk_events_free(llk_events_t *ev)
{
    if (ev->fd < 0)
        return;
    close(ev->fd);
    ev->fd = -1;
    pthread_mutex_destroy(&ev->mu);
}

void llk_events_set(llk_events_t *ev, uint32_t bit, bool has)
{
    if (ev->fd < 0)
        return;
    pthread_mutex_lock(&ev->mu);
    uint32_t before = ev->pending;
    ev->pending = has ? before | bit : before & ~bit;
    if (!before && ev->pending) {
        uint64_t one = 1;
        /* Cannot fail: the counter is 0 here (we hold the only writer). */
        while (write(ev->fd, &one, sizeof one) < 0 && errno == EINTR)
            ;
    } else if (before && !ev->pending) {
        uint64_t v;
        while (read(ev->fd, &v, sizeof v) < 0 && errno == EINTR)
            ;
    }
    pthread_mutex_unlock(&ev->mu);
}
