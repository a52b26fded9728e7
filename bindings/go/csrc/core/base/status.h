/* status.h - names and sentences of llmlink_status_t codes. */
#ifndef LLK_STATUS_H
#define LLK_STATUS_H

#include "llmlink.h"

/* llm_datadist's LLMStatusCode name ("LLM_SUCCESS"); our own codes carry
 * the LLMLINK_ prefix. "LLM_UNKNOWN_STATUS" for a code not in the table.
 * Never NULL; static storage. */
const char *llk_status_name(llmlink_status_t s);
/* One sentence saying what the code means; never NULL; static storage. */
const char *llk_status_text(llmlink_status_t s);

#endif /* LLK_STATUS_H */
