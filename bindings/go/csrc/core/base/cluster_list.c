/* cluster_list.c - llmlink.AllowedClusters (see cluster_list.h). */
#include "base/cluster_list.h"

#include <string.h>

static bool blank(char c)
{
    return c == ' ' || c == '\t';
}

/* One entry s[0..n) (spaces not yet trimmed) to *id. 0, or -1 with *why. */
static int parse_id(const char *s, size_t n, uint64_t *id, const char **why)
{
    while (n && blank(*s)) {
        s++;
        n--;
    }
    while (n && blank(s[n - 1]))
        n--;
    if (n == 0) {
        *why = "empty entry (expected a decimal cluster id)";
        return -1;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            *why = "not a decimal cluster id (digits 0-9 only)";
            return -1;
        }
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10) {
            *why = "cluster id larger than 18446744073709551615";
            return -1;
        }
        v = v * 10 + d;
    }
    *id = v;
    return 0;
}

int llk_cluster_list_parse(llk_cluster_list_t *l, const char *s, const char **why, size_t *at)
{
    l->count = 0;
    *at = 0;
    size_t len = strlen(s), i = 0;
    while (i < len && blank(s[i]))
        i++;
    if (i == len)
        return 0; /* "" or blanks: any cluster */
    for (size_t start = 0, k = 0;; k++) {
        const char *comma = memchr(s + start, ',', len - start);
        size_t end = comma ? (size_t)(comma - s) : len;
        *at = k;
        if (k == LLK_MAX_ALLOWED_CLUSTERS) {
            *why = "more than 256 cluster ids";
            l->count = 0;
            return -1;
        }
        if (parse_id(s + start, end - start, &l->ids[k], why) != 0) {
            l->count = 0;
            return -1;
        }
        l->count = (uint32_t)k + 1;
        if (!comma)
            return 0;
        start = end + 1;
    }
}

bool llk_cluster_list_allows(const llk_cluster_list_t *l, uint64_t id)
{
    if (l->count == 0)
        return true;
    for (uint32_t i = 0; i < l->count; i++)
        if (l->ids[i] == id)
            return true;
    return false;
}
