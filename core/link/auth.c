/* link/auth.c - the pre-shared key: loading it, and the derivations and
 * MACs of the authentication exchange (link/wire.h). */
#include "link/auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/crypto.h"

/* Labels: each use of the key has its own, so that no MAC or key made for
 * one purpose is ever valid for another (a server MAC reflected as a
 * client proof, a handshake MAC as an ATTACH MAC). */
static const char SALT_AUTH[] = "llmlink auth v1";
static const char INFO_MAC[] = "mac";
static const char LABEL_SERVER[] = "llmlink server v1";
static const char LABEL_CLIENT[] = "llmlink client v1";
static const char INFO_SESSION[] = "llmlink session v1";
static const char LABEL_ATTACH[] = "llmlink attach v1";

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int llk_auth_hex_decode(const char *hex, uint8_t *out, size_t cap, size_t *len,
                        const char **why)
{
    size_t n = strnlen(hex, 2 * LLK_AUTH_KEY_MAX + 1);
    if (n > 2 * LLK_AUTH_KEY_MAX) {
        *why = "longer than 8192 hex digits (4096 bytes)";
        return -1;
    }
    if (n % 2) {
        *why = "an odd number of hex digits";
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if (hexval(hex[i]) < 0) {
            *why = "not hex (only 0-9, a-f, A-F)";
            return -1;
        }
    if (n < 2 * LLK_AUTH_KEY_MIN) {
        *why = "shorter than 64 hex digits (32 bytes)";
        return -1;
    }
    if (out) {
        if (cap < n / 2) {
            *why = "longer than the buffer";
            return -1;
        }
        for (size_t i = 0; i < n / 2; i++)
            out[i] = (uint8_t)(hexval(hex[2 * i]) << 4 | hexval(hex[2 * i + 1]));
    }
    *len = n / 2;
    return 0;
}

/* Reads the key file into a new buffer: *raw, *len. Checks the descriptor
 * it reads (fstat after open), so that the file checked is the file read. */
static llmlink_status_t read_key_file(const char *path, uint8_t **raw, size_t *len, char *err,
                                      size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        snprintf(err, errlen, "option llmlink.AuthKeyFile: cannot open %.200s: %s", path,
                 strerror(errno));
        return LLMLINK_PARAM_INVALID;
    }
    struct stat st;
    const char *bad = NULL;
    char what[96];
    if (fstat(fd, &st) != 0) {
        snprintf(what, sizeof what, "fstat: %s", strerror(errno));
        bad = what;
    } else if (!S_ISREG(st.st_mode)) {
        bad = "not a regular file";
    } else if (st.st_mode & 077) {
        snprintf(what, sizeof what, "mode 0%03o: readable or writable by group or others; "
                 "chmod 600 it", (unsigned)(st.st_mode & 0777));
        bad = what;
    } else if (st.st_size < (off_t)LLK_AUTH_KEY_MIN) {
        snprintf(what, sizeof what, "%lld bytes, fewer than %u", (long long)st.st_size,
                 LLK_AUTH_KEY_MIN);
        bad = what;
    } else if (st.st_size > (off_t)LLK_AUTH_KEY_MAX) {
        snprintf(what, sizeof what, "%lld bytes, more than %u", (long long)st.st_size,
                 LLK_AUTH_KEY_MAX);
        bad = what;
    }
    if (bad) {
        close(fd);
        snprintf(err, errlen, "option llmlink.AuthKeyFile: %.200s: %s", path, bad);
        return LLMLINK_PARAM_INVALID;
    }
    size_t want = (size_t)st.st_size, got = 0;
    uint8_t *buf = malloc(want);
    if (!buf) {
        close(fd);
        snprintf(err, errlen, "option llmlink.AuthKeyFile: out of memory");
        return LLMLINK_OUT_OF_MEMORY;
    }
    while (got < want) {
        ssize_t r = read(fd, buf + got, want - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    int rerr = errno;
    close(fd);
    if (got != want) {
        llk_crypto_wipe(buf, want);
        free(buf);
        snprintf(err, errlen, "option llmlink.AuthKeyFile: %.200s: read %zu of %zu bytes%s%s",
                 path, got, want, got < want ? ": " : "", got < want ? strerror(rerr) : "");
        return LLMLINK_PARAM_INVALID;
    }
    *raw = buf;
    *len = want;
    return LLMLINK_SUCCESS;
}

llmlink_status_t llk_auth_key_load(const char *file, const char *hex, llk_auth_key_t **out,
                                   char *err, size_t errlen)
{
    *out = NULL;
    llk_auth_key_t *k = calloc(1, sizeof *k);
    if (!k) {
        snprintf(err, errlen, "out of memory for the authentication key");
        return LLMLINK_OUT_OF_MEMORY;
    }
    llmlink_status_t st = LLMLINK_SUCCESS;
    if (file) {
        st = read_key_file(file, &k->raw, &k->raw_len, err, errlen);
    } else {
        const char *why = "?";
        size_t n = strnlen(hex, 2 * LLK_AUTH_KEY_MAX + 1) / 2;
        k->raw = malloc(n ? n : 1);
        if (!k->raw) {
            snprintf(err, errlen, "out of memory for the authentication key");
            st = LLMLINK_OUT_OF_MEMORY;
        } else if (llk_auth_hex_decode(hex, k->raw, n, &k->raw_len, &why) != 0) {
            snprintf(err, errlen, "option llmlink.AuthKey: %s", why);
            st = LLMLINK_PARAM_INVALID;
        }
    }
    if (st == LLMLINK_SUCCESS &&
        llk_hkdf_sha256(k->raw, k->raw_len, (const uint8_t *)SALT_AUTH, strlen(SALT_AUTH),
                        (const uint8_t *)INFO_MAC, strlen(INFO_MAC), k->k_mac,
                        sizeof k->k_mac) != 0) {
        snprintf(err, errlen, "libcrypto: HKDF-SHA-256 failed (is OpenSSL's default provider "
                 "available?)");
        st = LLMLINK_FAILED;
    }
    if (st != LLMLINK_SUCCESS) {
        llk_auth_key_free(k);
        return st;
    }
    *out = k;
    return LLMLINK_SUCCESS;
}

void llk_auth_key_free(llk_auth_key_t *k)
{
    if (!k)
        return;
    if (k->raw) {
        llk_crypto_wipe(k->raw, k->raw_len);
        free(k->raw);
    }
    llk_crypto_wipe(k, sizeof *k);
    free(k);
}

int llk_auth_nonce(uint8_t out[LLK_AUTH_NONCE_SIZE])
{
    return llk_crypto_random(out, LLK_AUTH_NONCE_SIZE);
}

int llk_auth_mac(const llk_auth_key_t *k, bool server, const uint8_t nc[LLK_AUTH_NONCE_SIZE],
                 const uint8_t ns[LLK_AUTH_NONCE_SIZE], uint8_t out[LLK_AUTH_MAC_SIZE])
{
    const char *label = server ? LABEL_SERVER : LABEL_CLIENT;
    llk_crypto_part_t parts[] = {
        {label, strlen(label)}, {nc, LLK_AUTH_NONCE_SIZE}, {ns, LLK_AUTH_NONCE_SIZE}};
    return llk_hmac_sha256(k->k_mac, sizeof k->k_mac, parts, 3, out);
}

bool llk_auth_mac_ok(const llk_auth_key_t *k, bool server, const uint8_t nc[LLK_AUTH_NONCE_SIZE],
                     const uint8_t ns[LLK_AUTH_NONCE_SIZE], const uint8_t mac[LLK_AUTH_MAC_SIZE])
{
    uint8_t want[LLK_AUTH_MAC_SIZE];
    bool ok = llk_auth_mac(k, server, nc, ns, want) == 0 &&
              llk_crypto_equal(want, mac, LLK_AUTH_MAC_SIZE);
    llk_crypto_wipe(want, sizeof want);
    return ok;
}

int llk_auth_session_key(const llk_auth_key_t *k, const uint8_t nc[LLK_AUTH_NONCE_SIZE],
                         const uint8_t ns[LLK_AUTH_NONCE_SIZE], uint8_t ks[32])
{
    uint8_t salt[2 * LLK_AUTH_NONCE_SIZE];
    memcpy(salt, nc, LLK_AUTH_NONCE_SIZE);
    memcpy(salt + LLK_AUTH_NONCE_SIZE, ns, LLK_AUTH_NONCE_SIZE);
    return llk_hkdf_sha256(k->raw, k->raw_len, salt, sizeof salt, (const uint8_t *)INFO_SESSION,
                           strlen(INFO_SESSION), ks, 32);
}

int llk_auth_attach_mac(const uint8_t ks[32], const uint8_t nc[LLK_AUTH_NONCE_SIZE],
                        const uint8_t ns[LLK_AUTH_NONCE_SIZE],
                        const uint8_t fixed[LLK_WIRE_ATTACH_FIXED], uint8_t out[LLK_AUTH_MAC_SIZE])
{
    llk_crypto_part_t parts[] = {{LABEL_ATTACH, strlen(LABEL_ATTACH)},
                                 {nc, LLK_AUTH_NONCE_SIZE},
                                 {ns, LLK_AUTH_NONCE_SIZE},
                                 {fixed, LLK_WIRE_ATTACH_FIXED}};
    return llk_hmac_sha256(ks, 32, parts, 4, out);
}
