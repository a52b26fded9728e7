/*
 * proc_agent.h - internal to tests/common: proc.c's remote processes
 * through the two-guest VM's agent (tests/rdma/vm_agent.c); see proc.h.
 */
#ifndef LLK_TEST_PROC_AGENT_H
#define LLK_TEST_PROC_AGENT_H

#include <stdbool.h>

#include "proc.h"

/* proc.c's error setter (proc_last_error()); always returns -1. */
int proc_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* $LLMLINK_RDMA_AGENT is set (the two-guest VM's guest B). */
bool proc_agent_on(void);
/* EXEC argv in guest A: p as proc_spawn leaves it, remote, pid = A's. */
int proc_agent_spawn(proc_t *p, char *const argv[], int timeout_ms);
/* KILL (SIGSTOP: answered once stopped) and WAIT of a remote p. */
int proc_agent_kill(proc_t *p, int sig);
int proc_agent_wait(proc_t *p, int timeout_ms);

#endif /* LLK_TEST_PROC_AGENT_H */
