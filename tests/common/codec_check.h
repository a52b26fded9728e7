/*
 * codec_check.h - the capacity check every frame encoder gets, shared by the
 * codec tests (test_wire*.c, test_xfer_wire*.c).
 *
 * An encoder takes (out, cap) and must either write the whole frame or
 * return 0 having written nothing at or past out[cap]: its callers size
 * buffers from peer-controlled counts, so one byte written past cap is a
 * heap overflow.
 */
#ifndef CODEC_CHECK_H
#define CODEC_CHECK_H

#include <stddef.h>
#include <stdint.h>

/* Encodes one fixed message into out[0..cap); returns the frame size or 0. */
typedef size_t (*codec_encode_fn)(uint8_t *out, size_t cap, void *ctx);

/* Bytes past the frame that must stay untouched; buf needs this much room
 * beyond the largest frame checked. */
#define CODEC_CHECK_SLACK 8u

/*
 * Calls enc(buf, room) to learn the frame size `full`, then checks, for
 * every cap below it, that enc returns 0 and leaves buf[cap .. full +
 * CODEC_CHECK_SLACK) as it was, and that at exactly `full` it returns
 * `full` and leaves buf[full .. full + CODEC_CHECK_SLACK) alone. Fails the
 * test naming `what` and the capacity. Returns `full` so that the caller can
 * check the size itself.
 */
size_t codec_check_capacity(const char *what, codec_encode_fn enc, void *ctx, uint8_t *buf,
                            size_t room);

#endif /* CODEC_CHECK_H */
