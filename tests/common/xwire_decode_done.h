/*
 * xwire_decode_done.h - the plain XDONE decoder: exactly the 4-byte form
 * (status, no generation).
 *
 * Moved out of core/xfer/xfer_wire.c because the library never calls it:
 * the owner reads every XDONE with llk_xwire_decode_done_gen, which takes
 * both forms. The codec tests keep it to pin the 4-byte form's refusals
 * (a generation where none is expected is "trailing bytes").
 */
#ifndef XWIRE_DECODE_DONE_H
#define XWIRE_DECODE_DONE_H

#include <stddef.h>
#include <stdint.h>

int llk_xwire_decode_done(const uint8_t *payload, size_t len, uint32_t *status, const char **why);

#endif /* XWIRE_DECODE_DONE_H */
