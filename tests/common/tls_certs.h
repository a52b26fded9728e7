/*
 * tls_certs.h - test certificates made at run time with the OpenSSL API
 * (EC P-256 keys, X509_sign), written as PEM into a fresh directory: no
 * openssl binary, no fixed files that expire. Header-only (static
 * functions) so that the benchmark (bench/bench_tls.c) uses it too.
 *
 * tls_certs_make(dir) writes, into dir:
 *   ca.pem                 the deployment's CA (self-signed, CA:TRUE)
 *   server.pem, server.key a certificate of the CA for the PROMPT side
 *   client.pem, client.key one for the DECODER side
 *   other_ca.pem           a second CA
 *   other.pem, other.key   a certificate of the second CA
 *   expired.pem, expired.key  one of the first CA, expired a day ago
 * Keys are written with mode 0600.
 */
#ifndef LLK_TEST_TLS_CERTS_H
#define LLK_TEST_TLS_CERTS_H

#include <fcntl.h>
#include <sys/stat.h>
#include <stdbool.h>
#include <stdio.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

static int tls_certs_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (!ext)
        return -1;
    int ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

/* A certificate for key, signed by issuer (NULL: self-signed), valid from
 * now + from_s to now + to_s seconds. */
static X509 *tls_certs_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
                            bool ca, long from_s, long to_s)
{
    static long serial = 1;
    X509 *x = X509_new();
    if (!x)
        return NULL;
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), from_s);
    X509_gmtime_adj(X509_getm_notAfter(x), to_s);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
    X509 *iss = issuer ? issuer : x;
    int rc = tls_certs_ext(x, iss, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
    rc |= tls_certs_ext(x, iss, NID_key_usage,
                        ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
    rc |= tls_certs_ext(x, iss, NID_subject_key_identifier, "hash");
    if (!ca)
        rc |= tls_certs_ext(x, iss, NID_ext_key_usage, "serverAuth,clientAuth");
    if (rc != 0 || !X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256())) {
        X509_free(x);
        return NULL;
    }
    return x;
}

static int tls_certs_write_cert(const char *dir, const char *name, X509 *x)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    int ok = PEM_write_X509(f, x);
    return fclose(f) == 0 && ok ? 0 : -1;
}

static int tls_certs_write_key(const char *dir, const char *name, EVP_PKEY *k, int mode)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -1;
    fchmod(fd, (mode_t)mode);
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        return -1;
    }
    int ok = PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    return fclose(f) == 0 && ok ? 0 : -1;
}

/* A leaf key + certificate of (ca, ca_key), written as NAME.pem / NAME.key. */
static int tls_certs_leaf(const char *dir, const char *name, X509 *ca, EVP_PKEY *ca_key,
                          long from_s, long to_s)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = k ? tls_certs_cert(k, name, ca, ca_key, false, from_s, to_s) : NULL;
    char pem[64], key[64];
    snprintf(pem, sizeof pem, "%s.pem", name);
    snprintf(key, sizeof key, "%s.key", name);
    int rc = x && tls_certs_write_cert(dir, pem, x) == 0 &&
                     tls_certs_write_key(dir, key, k, 0600) == 0
                 ? 0
                 : -1;
    X509_free(x);
    EVP_PKEY_free(k);
    return rc;
}

static int tls_certs_make(const char *dir)
{
    const long day = 86400;
    EVP_PKEY *ca_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY *other_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *ca = ca_key ? tls_certs_cert(ca_key, "llmlink test CA", NULL, NULL, true, -day, day)
                      : NULL;
    X509 *other = other_key ? tls_certs_cert(other_key, "another CA", NULL, NULL, true, -day, day)
                            : NULL;
    int rc = -1;
    if (ca && other && tls_certs_write_cert(dir, "ca.pem", ca) == 0 &&
        tls_certs_write_cert(dir, "other_ca.pem", other) == 0 &&
        tls_certs_leaf(dir, "server", ca, ca_key, -day, day) == 0 &&
        tls_certs_leaf(dir, "client", ca, ca_key, -day, day) == 0 &&
        tls_certs_leaf(dir, "other", other, other_key, -day, day) == 0 &&
        tls_certs_leaf(dir, "expired", ca, ca_key, -2 * day, -day) == 0)
        rc = 0;
    X509_free(ca);
    X509_free(other);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(other_key);
    return rc;
}

#endif /* LLK_TEST_TLS_CERTS_H */
