/* spin.h - a short, bounded, adaptive look for an event before a thread
 * sleeps for it.
 *
 * Why: a small request's answer (and, on the owner side, the next request
 * of a requester making calls one after another) usually comes within tens
 * of microseconds. A thread that sleeps for it pays a wake-up, and on a VM
 * waking a halted vCPU (an IPI and an idle exit) is the larger part of a
 * small request's time. So the waiting thread first looks without sleeping
 * (poll / epoll_wait with timeout 0, yielding the CPU between looks so that
 * the thread it waits for can run on it), for at most LLK_SPIN_NS.
 *
 * Adaptive: when the CPUs are busy with other work, looks find nothing and
 * only burn time the others need; each look that ends empty-handed halves
 * the budget, and once it is below LLK_SPIN_MIN_NS the thread sleeps at
 * once for the next LLK_SPIN_COOLDOWN waits before trying again. A look
 * that finds its event restores the full budget. One llk_spin_t per
 * waiting thread (not shared: no lock).
 *
 * One spinner at a time per gate (llk_spin_enter; one gate for the
 * requesters of a process, one for its owner threads): with many threads
 * waiting at once (transfer workers, many tasks in flight, many engines)
 * their spins would only take the CPUs from the threads that make
 * progress; the others sleep at once, as before.
 */
#ifndef LLK_SPIN_H
#define LLK_SPIN_H

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/clock.h"

#define LLK_SPIN_NS 40000
#define LLK_SPIN_MIN_NS 5000
#define LLK_SPIN_COOLDOWN 64

typedef struct llk_spin {
    int32_t budget_ns; /* 0: not set yet (the full budget) */
    int32_t cooldown;  /* waits left that sleep at once */
} llk_spin_t;

/* How long to look this time; 0: sleep at once. */
static inline int64_t llk_spin_budget(llk_spin_t *sp)
{
    if (sp->cooldown > 0) {
        sp->cooldown--;
        if (sp->cooldown == 0)
            sp->budget_ns = LLK_SPIN_NS;
        return 0;
    }
    if (sp->budget_ns <= 0)
        sp->budget_ns = LLK_SPIN_NS;
    return sp->budget_ns;
}

/* What the look found: true when the event came while looking. */
static inline void llk_spin_result(llk_spin_t *sp, bool found)
{
    if (found) {
        sp->budget_ns = LLK_SPIN_NS;
        return;
    }
    sp->budget_ns /= 2;
    if (sp->budget_ns < LLK_SPIN_MIN_NS)
        sp->cooldown = LLK_SPIN_COOLDOWN;
}

/* Takes the gate (no other thread spins behind it): true; then
 * llk_spin_leave. */
static inline bool llk_spin_enter(atomic_int *gate)
{
    int free_ = 0;
    return atomic_load_explicit(gate, memory_order_relaxed) == 0 &&
           atomic_compare_exchange_strong(gate, &free_, 1);
}

static inline void llk_spin_leave(atomic_int *gate)
{
    atomic_store(gate, 0);
}

#endif /* LLK_SPIN_H */
