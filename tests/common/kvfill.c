/* kvfill.c - fill patterns for KV cache transfer tests (see kvfill.h). */
#include "kvfill.h"

#include <stdlib.h>
#include <string.h>

void kvfill_fill(void *dst, size_t len, uint64_t seed, uint64_t tensor, uint64_t off)
{
    uint8_t *p = dst;
    size_t i = 0;
    /* Head up to a word boundary of the tensor offset. */
    while (i < len && ((off + i) & 7) != 0) {
        p[i] = kvfill_byte(seed, tensor, off + i);
        i++;
    }
    uint64_t w = (off + i) >> 3;
    for (; i + 8 <= len; i += 8, w++) {
        uint64_t v = kvfill_word(seed, tensor, w);
        memcpy(p + i, &v, 8); /* little-endian hosts: byte k is bits 8k.. */
    }
    for (; i < len; i++)
        p[i] = kvfill_byte(seed, tensor, off + i);
}

size_t kvfill_check(const void *mem, size_t len, uint64_t seed, uint64_t tensor, uint64_t off)
{
    const uint8_t *p = mem;
    size_t i = 0;
    while (i < len && ((off + i) & 7) != 0) {
        if (p[i] != kvfill_byte(seed, tensor, off + i))
            return i;
        i++;
    }
    uint64_t w = (off + i) >> 3;
    for (; i + 8 <= len; i += 8, w++) {
        uint64_t v = kvfill_word(seed, tensor, w), got;
        memcpy(&got, p + i, 8);
        if (got != v) {
            for (size_t k = 0; k < 8; k++)
                if (p[i + k] != kvfill_byte(seed, tensor, off + i + k))
                    return i + k;
        }
    }
    for (; i < len; i++)
        if (p[i] != kvfill_byte(seed, tensor, off + i))
            return i;
    return KVFILL_OK;
}

int kvfill_rng_pick(kvfill_rng_t *r, uint64_t n, uint64_t k, uint64_t *out)
{
    if (k > n)
        return -1;
    uint64_t *a = malloc((n ? n : 1) * sizeof *a);
    if (!a)
        return -1;
    for (uint64_t i = 0; i < n; i++)
        a[i] = i;
    for (uint64_t i = 0; i < k; i++) {
        uint64_t j = i + kvfill_rng_below(r, n - i);
        uint64_t t = a[i];
        a[i] = a[j];
        a[j] = t;
        out[i] = a[i];
    }
    free(a);
    return 0;
}
