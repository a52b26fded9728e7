/*
 * kvfill.h - fill patterns for KV cache transfer tests, and a seeded RNG.
 *
 * Byte `off` of tensor `tensor` in a cache filled with `seed` is byte
 * (off % 8) (little-endian order) of the 64-bit word
 *
 *     kvfill_word(seed, tensor, off / 8)
 *
 * a strong 64-bit mix (splitmix64 finaliser) of all three. The offset is
 * counted from the tensor's base, so it encodes the block or batch entry
 * too: a byte that lands in the wrong cluster (seed), tensor, block or
 * position within a block is caught with probability ~1 - 2^-8 per byte
 * and ~1 - 2^-64 per word. Test seeds carry the cluster id (see
 * kvfill_seed), so two caches never share a pattern by accident.
 */
#ifndef LLK_TEST_KVFILL_H
#define LLK_TEST_KVFILL_H

#include <stddef.h>
#include <stdint.h>

static inline uint64_t kvfill_mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The pattern word number `word` (byte offset / 8) of tensor `tensor`. */
static inline uint64_t kvfill_word(uint64_t seed, uint64_t tensor, uint64_t word)
{
    return kvfill_mix64(kvfill_mix64(seed ^ (tensor << 40) ^ 0x5bd1e995ull) ^ word);
}

/* The pattern byte at byte offset `off` of tensor `tensor`. */
static inline uint8_t kvfill_byte(uint64_t seed, uint64_t tensor, uint64_t off)
{
    return (uint8_t)(kvfill_word(seed, tensor, off >> 3) >> ((off & 7) * 8));
}

/* A seed that names a cluster and a cache of it: distinct pairs give
 * distinct seeds. */
static inline uint64_t kvfill_seed(uint64_t cluster_id, uint64_t n)
{
    return (cluster_id << 20) ^ n;
}

/* Writes len pattern bytes (seed, tensor) for tensor offsets off.. to dst. */
void kvfill_fill(void *dst, size_t len, uint64_t seed, uint64_t tensor, uint64_t off);

/* Checks that p[0..len) holds the pattern (seed, tensor) of tensor offsets
 * off..; returns the index of the first byte that differs, or
 * KVFILL_OK when all match. */
#define KVFILL_OK ((size_t)-1)
size_t kvfill_check(const void *p, size_t len, uint64_t seed, uint64_t tensor, uint64_t off);

/* ---- a small seeded RNG (splitmix64) -------------------------------- */

typedef struct kvfill_rng {
    uint64_t s;
} kvfill_rng_t;

static inline uint64_t kvfill_rng_next(kvfill_rng_t *r)
{
    r->s += 0x9e3779b97f4a7c15ull;
    uint64_t z = r->s;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, n) (n >= 1; the modulo bias is irrelevant here). */
static inline uint64_t kvfill_rng_below(kvfill_rng_t *r, uint64_t n)
{
    return kvfill_rng_next(r) % n;
}

/* A random k-subset of [0, n) in random order into out[0..k) (k <= n).
 * Partial Fisher-Yates over a scratch array of n entries; returns -1 when
 * the scratch allocation fails. */
int kvfill_rng_pick(kvfill_rng_t *r, uint64_t n, uint64_t k, uint64_t *out);

#endif /* LLK_TEST_KVFILL_H */
