/*
 * be_put.h - big-endian stores for the codec tests that build frames by
 * hand (the library's own writers are what is under test, so the tests do
 * not use them).
 */
#ifndef BE_PUT_H
#define BE_PUT_H

#include <stdint.h>

static inline void put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void put_be32(uint8_t *p, uint32_t v)
{
    put_be16(p, (uint16_t)(v >> 16));
    put_be16(p + 2, (uint16_t)v);
}

static inline void put_be64(uint8_t *p, uint64_t v)
{
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}

#endif /* BE_PUT_H */
