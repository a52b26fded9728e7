/*
 * tls_env.h - runs a transfer test over mutual TLS when the environment
 * says so: with LLMLINK_TEST_TLS=1, llk_test_tls_options() appends
 * llmlink.TlsCertFile / TlsKeyFile / TlsCaFile (certificates of one test
 * CA, made at run time by tls_certs.h into a temporary directory, removed
 * at exit) to an option list; without it, it changes nothing. Tests that
 * honour it (their tcp cases): test_xfer_single, test_xfer_multiproc (its
 * llmlink-node processes get the files as --opt).
 */
#ifndef LLK_TEST_TLS_ENV_H
#define LLK_TEST_TLS_ENV_H

#include <stdbool.h>
#include <stddef.h>

#include "llmlink.h"

/* True when LLMLINK_TEST_TLS is set to 1. */
bool llk_test_tls_on(void);
/* Appends the three TLS options to o[0..n) when llk_test_tls_on() (o must
 * have room for n + 3); `server` picks the PROMPT side's certificate.
 * Returns the new count. Aborts the test program when the certificates
 * cannot be made. */
size_t llk_test_tls_options(llmlink_option_t *o, size_t n, bool server);
/* The path of one of the certificate files ("server.pem", "ca.pem", ...;
 * see tls_certs.h), made on first use; for options passed to child
 * processes (llmlink-node --opt). */
const char *llk_test_tls_path(const char *name);

#endif /* LLK_TEST_TLS_ENV_H */
