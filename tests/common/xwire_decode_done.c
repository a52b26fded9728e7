/* xwire_decode_done.c - see xwire_decode_done.h. */
#include "xwire_decode_done.h"

#include "base/bytes.h"

int llk_xwire_decode_done(const uint8_t *payload, size_t len, uint32_t *status, const char **why)
{
    rbuf_t b = {payload, len, 0, 0};
    *status = get_u32(&b);
    if (b.short_read) {
        *status = 0;
        *why = "truncated XDONE";
        return -1;
    }
    if (b.pos != b.len) {
        *why = "trailing bytes after XDONE";
        return -1;
    }
    return 0;
}
