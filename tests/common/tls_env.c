/* tls_env.c - see tls_env.h. */
#include "tls_env.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <string.h>
#include <unistd.h>

#include "tls_certs.h"

static char dir[64];
static char files[5][128];
static pid_t maker; /* only the process that made the files removes them */

static void remove_certs(void)
{
    static const char *const names[] = {"ca.pem", "other_ca.pem", "server.pem", "server.key",
                                        "client.pem", "client.key", "other.pem", "other.key",
                                        "expired.pem", "expired.key"};
    char p[128];
    if (getpid() != maker)
        return;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        unlink(p);
    }
    rmdir(dir);
}

bool llk_test_tls_on(void)
{
    const char *v = getenv("LLMLINK_TEST_TLS");
    return v && strcmp(v, "1") == 0;
}

static void make_once(void)
{
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/llk_tls_env_XXXXXX");
        if (!mkdtemp(dir) || tls_certs_make(dir) != 0) {
            fprintf(stderr, "LLMLINK_TEST_TLS: cannot make test certificates\n");
            abort();
        }
        atexit(remove_certs);
        const char *names[5] = {"server.pem", "server.key", "client.pem", "client.key",
                                "ca.pem"};
        for (int i = 0; i < 5; i++)
            snprintf(files[i], sizeof files[i], "%s/%s", dir, names[i]);
        maker = getpid();
    }
}

const char *llk_test_tls_path(const char *name)
{
    static char paths[8][128];
    static int next;
    make_once();
    char *p = paths[next++ % 8];
    snprintf(p, sizeof paths[0], "%s/%s", dir, name);
    return p;
}

size_t llk_test_tls_options(llmlink_option_t *o, size_t n, bool server)
{
    if (!llk_test_tls_on())
        return n;
    make_once();
    o[n++] = (llmlink_option_t){"llmlink.TlsCertFile", files[server ? 0 : 2]};
    o[n++] = (llmlink_option_t){"llmlink.TlsKeyFile", files[server ? 1 : 3]};
    o[n++] = (llmlink_option_t){"llmlink.TlsCaFile", files[4]};
    return n;
}
