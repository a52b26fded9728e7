/*
 * crypto.h - the few cryptographic primitives llmlink uses, from OpenSSL 3's
 * libcrypto (never written here). This is the only file of the library that
 * includes an OpenSSL header: the rest names these functions, so that the
 * crypto library could change in one place.
 *
 *   HMAC-SHA-256  (EVP_MAC "HMAC", digest SHA256)         RFC 2104 / 4231
 *   HKDF-SHA-256  (EVP_KDF "HKDF", extract-and-expand)     RFC 5869
 *   constant-time comparison (CRYPTO_memcmp)
 *   random bytes from the OpenSSL DRBG (RAND_bytes)
 *   wiping secrets (OPENSSL_cleanse: not optimised away)
 *
 * Every function is thread-safe and returns 0 on success, -1 on failure
 * (which, for HMAC/HKDF with valid arguments, means libcrypto itself is
 * unusable: no provider, out of memory).
 */
#ifndef LLK_CRYPTO_H
#define LLK_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LLK_SHA256_SIZE 32u

/* One piece of a message: MACs are taken over several concatenated parts
 * without copying them together. */
typedef struct llk_crypto_part {
    const void *p;
    size_t len;
} llk_crypto_part_t;

/* out = HMAC-SHA-256(key, parts[0] | parts[1] | ...). */
int llk_hmac_sha256(const uint8_t *key, size_t key_len, const llk_crypto_part_t *parts,
                    size_t nparts, uint8_t out[LLK_SHA256_SIZE]);

/* out (out_len bytes, at most 255 * 32) = HKDF-SHA-256(ikm, salt, info).
 * salt may be NULL (salt_len 0: a zero-filled salt, as RFC 5869 says). */
int llk_hkdf_sha256(const uint8_t *ikm, size_t ikm_len, const uint8_t *salt, size_t salt_len,
                    const uint8_t *info, size_t info_len, uint8_t *out, size_t out_len);

/* a and b (n bytes each) are equal; the time taken does not depend on where
 * they differ. */
bool llk_crypto_equal(const void *a, const void *b, size_t n);

/* n bytes from the DRBG; -1 when it cannot be seeded. */
int llk_crypto_random(void *out, size_t n);

/* Overwrites n bytes at p with zeros in a way the compiler keeps. */
void llk_crypto_wipe(void *p, size_t n);

#endif /* LLK_CRYPTO_H */
