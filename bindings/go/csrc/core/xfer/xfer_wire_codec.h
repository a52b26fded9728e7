/*
 * xfer_wire_codec.h - the frame helpers of xfer_wire.c, for the codecs of
 * the messages a transport owns (its codec in core/transport/): one header
 * format, one way to end a frame and to check a record list, so that every
 * data-stream message is framed alike. Internal to the library.
 */
#ifndef LLK_XFER_WIRE_CODEC_H
#define LLK_XFER_WIRE_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "base/bytes.h"
#include "xfer/xfer_wire.h"

/* Big-endian loads from a record already known to be inside the buffer. */
static inline uint32_t load_u32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline uint64_t load_u64(const uint8_t *p)
{
    return ((uint64_t)load_u32(p) << 32) | load_u32(p + 4);
}

/* Writes a frame header for a payload of `length` bytes. */
void llk_xwire_put_header(wbuf_t *w, llk_xmsg_type_t type, uint32_t length, uint64_t req_id);
/* The payload length is known up front, so the header is written first and
 * the result is either the whole frame (its size, want) or 0. */
size_t llk_xwire_end_frame(const wbuf_t *w, size_t want);
/* Checks that exactly `count` records of `rec` bytes are what is left. */
int llk_xwire_records_fill_rest(const rbuf_t *r, uint32_t count, size_t rec,
                                const char *short_why, const char *long_why, const char **why);

#endif /* LLK_XFER_WIRE_CODEC_H */
