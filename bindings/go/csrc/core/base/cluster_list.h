/*
 * cluster_list.h - llmlink.AllowedClusters: the client cluster ids a
 * server lets link. Parsing is strict (an option that would silently let
 * the wrong peers in is worse than one refused at init).
 */
#ifndef LLK_CLUSTER_LIST_H
#define LLK_CLUSTER_LIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LLK_MAX_ALLOWED_CLUSTERS 256

typedef struct llk_cluster_list {
    uint64_t ids[LLK_MAX_ALLOWED_CLUSTERS];
    uint32_t count; /* 0: every cluster id is allowed */
} llk_cluster_list_t;

/*
 * Parses "id[,id...]": decimal ids 0..2^64-1, comma-separated, ASCII spaces
 * or tabs around an id allowed; "" (or only spaces) is the empty list.
 * Refused: an empty entry ("1,,2", a trailing comma), a sign, hex, any
 * other character, a value past 2^64-1, more than LLK_MAX_ALLOWED_CLUSTERS
 * entries. A duplicate is harmless and kept (lists are pasted from
 * configuration). Returns 0, or -1 with *why (static text) and *at (the
 * 0-based entry) set; the list is then empty.
 */
int llk_cluster_list_parse(llk_cluster_list_t *l, const char *s, const char **why, size_t *at);

/* True when the list is empty (any) or holds id. */
bool llk_cluster_list_allows(const llk_cluster_list_t *l, uint64_t id);

#endif /* LLK_CLUSTER_LIST_H */
