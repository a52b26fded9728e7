/* notify_testing.h - test seams of notifications (not exported). */
#ifndef LLK_NOTIFY_TESTING_H
#define LLK_NOTIFY_TESTING_H

#include <stdbool.h>

#include "llmlink.h"

/* Links made after this act as an llmlink without notifications: no
 * LLK_EXT_NOTIFY sent or honoured (link/notify_rx.c). */
void llk_test_set_legacy_notify(llmlink_t *e, bool on);

#endif
