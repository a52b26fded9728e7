/*
 * bytes.h - big-endian cursors shared by the two codecs: wire.c (control
 * plane) and xfer_wire.c (data stream). Private to core/.
 *
 * Both codecs write and read fixed-width big-endian fields through a
 * bounds-checked cursor. A write that does not fit sets `overflow`, a read
 * past the end sets `short_read` (and yields zeros); later calls on that
 * cursor do nothing. So an encoder or decoder writes its fields one after
 * another and checks the flag once, instead of failing each call.
 *
 * Static inline: each codec uses what it needs, and the unused ones do not
 * warn.
 */
#ifndef LLK_BYTES_H
#define LLK_BYTES_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- writing ---------------------------------------------------------- */

typedef struct {
    uint8_t *p;
    size_t len, cap;
    int overflow;
} wbuf_t;

static inline void put_bytes(wbuf_t *w, const void *src, size_t n)
{
    if (w->overflow || w->cap - w->len < n) {
        w->overflow = 1;
        return;
    }
    memcpy(w->p + w->len, src, n);
    w->len += n;
}

static inline void put_u8(wbuf_t *w, uint8_t v)
{
    put_bytes(w, &v, 1);
}

static inline void put_u16(wbuf_t *w, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    put_bytes(w, b, 2);
}

static inline void put_u32(wbuf_t *w, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    put_bytes(w, b, 4);
}

static inline void put_u64(wbuf_t *w, uint64_t v)
{
    put_u32(w, (uint32_t)(v >> 32));
    put_u32(w, (uint32_t)v);
}

/* ---- reading ---------------------------------------------------------- */

typedef struct {
    const uint8_t *p;
    size_t len, pos;
    int short_read;
} rbuf_t;

/* Copies n bytes to dst (or skips them when dst is NULL). Returns 0, or -1
 * and sets short_read when fewer than n bytes are left. */
static inline int get_bytes(rbuf_t *r, void *dst, size_t n)
{
    if (r->short_read || r->len - r->pos < n) {
        r->short_read = 1;
        return -1;
    }
    if (dst)
        memcpy(dst, r->p + r->pos, n);
    r->pos += n;
    return 0;
}

static inline uint8_t get_u8(rbuf_t *r)
{
    uint8_t b = 0;
    get_bytes(r, &b, 1);
    return b;
}

static inline uint16_t get_u16(rbuf_t *r)
{
    uint8_t b[2] = {0, 0};
    get_bytes(r, b, 2);
    return (uint16_t)((b[0] << 8) | b[1]);
}

static inline uint32_t get_u32(rbuf_t *r)
{
    uint8_t b[4] = {0, 0, 0, 0};
    get_bytes(r, b, 4);
    return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3];
}

static inline uint64_t get_u64(rbuf_t *r)
{
    uint64_t hi = get_u32(r);
    return (hi << 32) | get_u32(r);
}

/* What a decoder says when a text is cut short, over max, or longer than
 * the frame (static strings, for its *why). */
typedef struct {
    const char *truncated, *too_long, *past_end;
} text_why_t;

/* A u16 length and that many bytes of text into dst (room for max + 1):
 * NUL-terminated, and every byte outside printable ASCII replaced by '?',
 * since peers' texts end up in llmlink_last_error() and in logs. Returns 0,
 * or -1 with the matching reason of w in *why. */
static inline int get_text(rbuf_t *r, char *dst, uint16_t max, const text_why_t *w,
                           const char **why)
{
    uint16_t n = get_u16(r);
    const char *bad = r->short_read ? w->truncated : n > max ? w->too_long : NULL;
    if (!bad && get_bytes(r, dst, n) != 0)
        bad = w->past_end;
    if (bad) {
        *why = bad;
        return -1;
    }
    dst[n] = '\0';
    for (uint16_t i = 0; i < n; i++)
        if (dst[i] < 0x20 || dst[i] > 0x7e)
            dst[i] = '?';
    return 0;
}

#endif /* LLK_BYTES_H */
