/*
 * http.c - `llmlink serve --metrics ADDR`: GET /metrics answered with the
 * Prometheus text of the engine (prom.c), through libmicrohttpd (Debian
 * libmicrohttpd-dev; a dependency of this command only, never of
 * libllmlink). Built without it (the Makefile probes microhttpd.h), the
 * option fails with a message that says so.
 *
 * libmicrohttpd runs its own thread (MHD_USE_INTERNAL_POLLING_THREAD);
 * each request takes a snapshot through the ABI, which is thread-safe.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "cli.h"

/* The Makefile records whether microhttpd.h exists in llk_config.h (so
 * installing libmicrohttpd-dev rebuilds this file); other builds ask the
 * compiler. */
#if defined(LLK_HAVE_CONFIG_H)
#include "llk_config.h"
#elif defined(__has_include)
#if __has_include(<microhttpd.h>)
#define LLK_HAVE_MICROHTTPD_H 1
#endif
#endif

#if LLK_HAVE_MICROHTTPD_H
#include <microhttpd.h>

#if MHD_VERSION < 0x00097002
typedef int mhd_result_t;
#else
typedef enum MHD_Result mhd_result_t;
#endif

#define MAX_LINKS 4096

struct cli_http {
    struct MHD_Daemon *d;
    llmlink_t *e;
};

/* The exposition of e, malloc'd (NULL when out of memory). */
static char *render(llmlink_t *e, size_t *len)
{
    llmlink_metrics_t m;
    if (!cli_metrics(e, &m))
        return NULL;
    llmlink_link_info_t *li = calloc(MAX_LINKS, sizeof *li);
    if (!li)
        return NULL;
    size_t n = 0;
    li[0].version = LLMLINK_LINK_INFO_VERSION;
    if (llmlink_get_links(e, li, MAX_LINKS, &n) != LLMLINK_SUCCESS)
        n = 0;
    if (n > MAX_LINKS)
        n = MAX_LINKS;
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    if (f) {
        cli_prom_render(f, &m, li, n);
        if (fclose(f) != 0) {
            free(buf);
            buf = NULL;
        }
    }
    free(li);
    return buf;
}

static mhd_result_t reply(struct MHD_Connection *conn, unsigned code, const char *type,
                          char *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    mhd_result_t ret = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    return ret;
}

static mhd_result_t on_request(void *cls, struct MHD_Connection *conn, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **con_cls)
{
    (void)version;
    (void)upload;
    cli_http_t *h = cls;
    if (*upload_size) /* no body is read: refuse what sends one */
        return MHD_NO;
    (void)con_cls;
    static char not_found[] = "not found: GET /metrics\n";
    static char bad_method[] = "only GET\n";
    if (strcmp(method, "GET") && strcmp(method, "HEAD"))
        return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", bad_method,
                     strlen(bad_method), MHD_RESPMEM_PERSISTENT);
    if (strcmp(url, "/metrics"))
        return reply(conn, MHD_HTTP_NOT_FOUND, "text/plain", not_found, strlen(not_found),
                     MHD_RESPMEM_PERSISTENT);
    size_t len = 0;
    char *body = render(h->e, &len);
    if (!body) {
        static char oom[] = "out of memory\n";
        return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain", oom, strlen(oom),
                     MHD_RESPMEM_PERSISTENT);
    }
    return reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body, len,
                 MHD_RESPMEM_MUST_FREE);
}

cli_http_t *cli_http_start(llmlink_t *e, const char *ip, uint16_t port, uint16_t *bound_port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, ip, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
    } else if (inet_pton(AF_INET6, ip, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        flags |= MHD_USE_IPv6;
    } else {
        cli_fail("serve", "--metrics: '%s' is not an IP address", ip);
        return NULL;
    }
    cli_http_t *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->e = e;
    h->d = MHD_start_daemon(flags, port, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR,
                            (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT, 64u,
                            MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
    if (!h->d) {
        cli_fail("serve", "--metrics: cannot serve HTTP on %s port %u (address in use, or not "
                 "this host's?)", ip, port);
        free(h);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    *bound_port = info ? info->port : port;
    return h;
}

void cli_http_stop(cli_http_t *h)
{
    if (!h)
        return;
    MHD_stop_daemon(h->d);
    free(h);
}

#else /* !LLK_HAVE_MICROHTTPD_H */

cli_http_t *cli_http_start(llmlink_t *e, const char *ip, uint16_t port, uint16_t *bound_port)
{
    (void)e;
    (void)ip;
    (void)port;
    (void)bound_port;
    cli_fail("serve", "--metrics: this llmlink was built without libmicrohttpd (install "
             "libmicrohttpd-dev and rebuild)");
    return NULL;
}

void cli_http_stop(cli_http_t *h)
{
    (void)h;
}

#endif
