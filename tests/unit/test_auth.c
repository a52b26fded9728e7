/*
 * test_auth.c - the crypto module (base/crypto.h) against the published
 * vectors, and the key handling of link/auth.h:
 *  - HMAC-SHA-256: RFC 4231 test cases 1, 2, 6 and 7 (keys shorter and
 *    longer than the block, data in several parts);
 *  - HKDF-SHA-256: RFC 5869 test cases 1 and 3 (with and without salt and
 *    info);
 *  - constant-time equality, random bytes;
 *  - llmlink.AuthKey hex: odd length, non-hex, too short, too long refused
 *    (the reason never quotes the value), good keys decoded;
 *  - the handshake MACs: server and client labels differ (no reflection),
 *    another nonce gives another MAC (no replay), another key fails.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/crypto.h"
#include "link/auth.h"

/* Hex text to bytes (test vectors only: well-formed input). */
static size_t unhex(const char *h, uint8_t *out)
{
    size_t n = strlen(h) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
    return n;
}

static void assert_hex(const uint8_t *got, size_t n, const char *want_hex)
{
    uint8_t want[256];
    assert_int_equal(unhex(want_hex, want), n);
    assert_memory_equal(got, want, n);
}

static void test_hmac_rfc4231(void **state)
{
    (void)state;
    uint8_t key[131], mac[32];
    /* Test case 1: key 20 x 0x0b, "Hi There". */
    memset(key, 0x0b, 20);
    llk_crypto_part_t p1 = {"Hi There", 8};
    assert_int_equal(llk_hmac_sha256(key, 20, &p1, 1, mac), 0);
    assert_hex(mac, 32, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    /* Test case 2: key "Jefe", data in two parts. */
    llk_crypto_part_t p2[] = {{"what do ya want ", 16}, {"for nothing?", 12}};
    assert_int_equal(llk_hmac_sha256((const uint8_t *)"Jefe", 4, p2, 2, mac), 0);
    assert_hex(mac, 32, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    /* Test case 6: a 131-byte key (longer than the block: hashed first). */
    memset(key, 0xaa, sizeof key);
    const char *d6 = "Test Using Larger Than Block-Size Key - Hash Key First";
    llk_crypto_part_t p6 = {d6, strlen(d6)};
    assert_int_equal(llk_hmac_sha256(key, sizeof key, &p6, 1, mac), 0);
    assert_hex(mac, 32, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    /* Test case 7: large key and large data, split in three parts. */
    const char *d7 = "This is a test using a larger than block-size key and a larger than "
                     "block-size data. The key needs to be hashed before being used by the "
                     "HMAC algorithm.";
    size_t l7 = strlen(d7);
    llk_crypto_part_t p7[] = {{d7, 10}, {d7 + 10, 0}, {d7 + 10, l7 - 10}};
    assert_int_equal(llk_hmac_sha256(key, sizeof key, p7, 3, mac), 0);
    assert_hex(mac, 32, "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
}

static void test_hkdf_rfc5869(void **state)
{
    (void)state;
    uint8_t ikm[80], salt[80], info[80], okm[82];
    /* Test case 1. */
    memset(ikm, 0x0b, 22);
    size_t ns = unhex("000102030405060708090a0b0c", salt);
    size_t ni = unhex("f0f1f2f3f4f5f6f7f8f9", info);
    assert_int_equal(llk_hkdf_sha256(ikm, 22, salt, ns, info, ni, okm, 42), 0);
    assert_hex(okm, 42, "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
                        "34007208d5b887185865");
    /* Test case 3: no salt, no info. */
    assert_int_equal(llk_hkdf_sha256(ikm, 22, NULL, 0, NULL, 0, okm, 42), 0);
    assert_hex(okm, 42, "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
                        "9d201395faa4b61a96c8");
}

static void test_equal_and_random(void **state)
{
    (void)state;
    uint8_t a[32] = {0}, b[32] = {0};
    assert_true(llk_crypto_equal(a, b, 32));
    b[31] = 1;
    assert_false(llk_crypto_equal(a, b, 32));
    b[31] = 0;
    b[0] = 0x80;
    assert_false(llk_crypto_equal(a, b, 32));
    uint8_t r1[32], r2[32];
    assert_int_equal(llk_crypto_random(r1, sizeof r1), 0);
    assert_int_equal(llk_crypto_random(r2, sizeof r2), 0);
    assert_false(llk_crypto_equal(r1, r2, 32)); /* 2^-256 */
    llk_crypto_wipe(r1, sizeof r1);
    assert_true(llk_crypto_equal(r1, a, 32));
}

static const char *GOOD_HEX =
    "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";

static void test_hex_key_parsing(void **state)
{
    (void)state;
    uint8_t out[LLK_AUTH_KEY_MAX];
    size_t len = 0;
    const char *why = NULL;
    assert_int_equal(llk_auth_hex_decode(GOOD_HEX, out, sizeof out, &len, &why), 0);
    assert_int_equal(len, 32);
    assert_int_equal(out[0], 0x00);
    assert_int_equal(out[15], 0xff);
    assert_int_equal(out[31], 0xff);
    /* odd length */
    char bad[2 * LLK_AUTH_KEY_MAX + 4];
    snprintf(bad, sizeof bad, "%s0", GOOD_HEX);
    assert_int_equal(llk_auth_hex_decode(bad, out, sizeof out, &len, &why), -1);
    assert_non_null(strstr(why, "odd"));
    /* not hex */
    snprintf(bad, sizeof bad, "%s", GOOD_HEX);
    bad[10] = 'g';
    assert_int_equal(llk_auth_hex_decode(bad, out, sizeof out, &len, &why), -1);
    assert_non_null(strstr(why, "not hex"));
    assert_null(strstr(why, "g")); /* the value is never quoted */
    bad[10] = ' ';
    assert_int_equal(llk_auth_hex_decode(bad, NULL, 0, &len, &why), -1);
    /* too short: 31 bytes */
    snprintf(bad, sizeof bad, "%.62s", GOOD_HEX);
    assert_int_equal(llk_auth_hex_decode(bad, out, sizeof out, &len, &why), -1);
    assert_non_null(strstr(why, "shorter"));
    assert_int_equal(llk_auth_hex_decode("", NULL, 0, &len, &why), -1);
    /* too long: 4097 bytes */
    memset(bad, 'a', 2 * LLK_AUTH_KEY_MAX + 2);
    bad[2 * LLK_AUTH_KEY_MAX + 2] = '\0';
    assert_int_equal(llk_auth_hex_decode(bad, NULL, 0, &len, &why), -1);
    assert_non_null(strstr(why, "longer"));
    /* the longest allowed */
    bad[2 * LLK_AUTH_KEY_MAX] = '\0';
    assert_int_equal(llk_auth_hex_decode(bad, out, sizeof out, &len, &why), 0);
    assert_int_equal(len, LLK_AUTH_KEY_MAX);
}

static void test_handshake_macs(void **state)
{
    (void)state;
    llk_auth_key_t *k = NULL, *k2 = NULL;
    char err[256];
    assert_int_equal(llk_auth_key_load(NULL, GOOD_HEX, &k, err, sizeof err), LLMLINK_SUCCESS);
    char other[80];
    snprintf(other, sizeof other, "%s", GOOD_HEX);
    other[0] = '1';
    assert_int_equal(llk_auth_key_load(NULL, other, &k2, err, sizeof err), LLMLINK_SUCCESS);
    uint8_t nc[32], ns[32], ns2[32], ms[32], mc[32];
    assert_int_equal(llk_auth_nonce(nc), 0);
    assert_int_equal(llk_auth_nonce(ns), 0);
    assert_int_equal(llk_auth_nonce(ns2), 0);
    assert_int_equal(llk_auth_mac(k, true, nc, ns, ms), 0);
    assert_int_equal(llk_auth_mac(k, false, nc, ns, mc), 0);
    assert_false(llk_crypto_equal(ms, mc, 32));           /* labels differ */
    assert_true(llk_auth_mac_ok(k, true, nc, ns, ms));
    assert_true(llk_auth_mac_ok(k, false, nc, ns, mc));
    assert_false(llk_auth_mac_ok(k, false, nc, ns, ms));  /* reflected */
    assert_false(llk_auth_mac_ok(k, false, nc, ns2, mc)); /* replayed on a fresh Ns */
    assert_false(llk_auth_mac_ok(k2, false, nc, ns, mc)); /* other key */
    /* K is HKDF(key, "llmlink auth v1", "mac"), as link/wire.h says. */
    uint8_t raw[32], kmac[32];
    size_t len;
    const char *why;
    assert_int_equal(llk_auth_hex_decode(GOOD_HEX, raw, sizeof raw, &len, &why), 0);
    assert_int_equal(llk_hkdf_sha256(raw, 32, (const uint8_t *)"llmlink auth v1", 15,
                                     (const uint8_t *)"mac", 3, kmac, 32),
                     0);
    assert_memory_equal(kmac, k->k_mac, 32);
    uint8_t ks[32], ks2[32];
    assert_int_equal(llk_auth_session_key(k, nc, ns, ks), 0);
    assert_int_equal(llk_auth_session_key(k, nc, ns2, ks2), 0);
    assert_false(llk_crypto_equal(ks, ks2, 32));
    llk_auth_key_free(k);
    llk_auth_key_free(k2);
    llk_auth_key_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hmac_rfc4231),     cmocka_unit_test(test_hkdf_rfc5869),
        cmocka_unit_test(test_equal_and_random), cmocka_unit_test(test_hex_key_parsing),
        cmocka_unit_test(test_handshake_macs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
