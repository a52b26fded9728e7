/*
 * codec_check.c - see codec_check.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "codec_check.h"

/* Not 0: an encoder that zero-fills would go unnoticed. */
#define CANARY 0xA5

static void assert_untouched(const char *what, size_t cap, const uint8_t *buf, size_t from,
                             size_t to)
{
    for (size_t b = from; b < to; b++)
        if (buf[b] != CANARY)
            fail_msg("%s: capacity %zu: byte %zu written", what, cap, b);
}

size_t codec_check_capacity(const char *what, codec_encode_fn enc, void *ctx, uint8_t *buf,
                            size_t room)
{
    size_t full = enc(buf, room, ctx);
    if (full == 0 || full + CODEC_CHECK_SLACK > room)
        fail_msg("%s: frame of %zu bytes in a %zu-byte buffer: nothing to check", what, full,
                 room);
    size_t end = full + CODEC_CHECK_SLACK;
    for (size_t cap = 0; cap < full; cap++) {
        memset(buf, CANARY, end);
        size_t got = enc(buf, cap, ctx);
        if (got != 0)
            fail_msg("%s: capacity %zu of %zu returned %zu", what, cap, full, got);
        assert_untouched(what, cap, buf, cap, end);
    }
    memset(buf, CANARY, end);
    size_t got = enc(buf, full, ctx);
    if (got != full)
        fail_msg("%s: capacity %zu (exact fit) returned %zu", what, full, got);
    assert_untouched(what, full, buf, full, end);
    return full;
}
