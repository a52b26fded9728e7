/*
 * bench.c - `llmlink bench ADDR`: the transfer benchmark against a serving
 * engine (`llmlink serve --block-size LIST` on the other host). For each
 * transport (one engine each, llmlink.Transport forced), block size and
 * direction: one warm-up call, then whole-cache calls until --total bytes
 * have moved; bytes / seconds is the bandwidth. A table on stdout, or with
 * --json one JSON object per line (docs/cli.md, "bench --json").
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static const char usage_text[] =
    "usage: llmlink bench [OPTIONS] [ID@]IP:PORT\n"
    "  -b, --sizes LIST          block sizes (default 64K); serve needs a cache of each\n"
    "  -T, --transports LIST     tcp,shm,rdma,auto (default auto)\n"
    "  -d, --direction D         pull, push or both (default pull)\n"
    "  -n, --total N             bytes to move per point (default 256M)\n"
    "  -s, --cache-bytes N       the serving caches' bytes, all tensors (default 64M)\n"
    "  -t, --tensors N           the serving caches' tensors (default 2)\n"
    "  -j, --json                one JSON object per point on stdout (docs/cli.md)\n"
    "  -c, --cluster-id N        this engine's cluster id (default 1000)\n"
    "      --auth-key-file F     llmlink.AuthKeyFile\n"
    "  -o, --opt KEY=VALUE       any engine option (docs/options.md), repeatable\n"
    "  -h, --help                this text\n"
    "Pushes overwrite the serving caches. Exit status 1 when a point failed.\n";

#define MAX_TRANSPORTS 4

typedef struct bconf {
    cli_opts_t opts;
    cli_peer_t peer;
    uint64_t id, total, cache_bytes, tensors;
    uint64_t sizes[CLI_MAX_SIZES];
    size_t nsizes;
    char transports[MAX_TRANSPORTS][8];
    size_t ntransports;
    bool pull, push, json;
} bconf_t;

static bool parse_transports(const char *s, bconf_t *c)
{
    char buf[64];
    if (strlen(s) >= sizeof buf)
        return false;
    snprintf(buf, sizeof buf, "%s", s);
    c->ntransports = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (c->ntransports == MAX_TRANSPORTS ||
            (strcmp(t, "tcp") && strcmp(t, "shm") && strcmp(t, "rdma") && strcmp(t, "auto")))
            return false;
        snprintf(c->transports[c->ntransports++], sizeof c->transports[0], "%s", t);
    }
    return c->ntransports > 0;
}

static int parse(int argc, char **argv, bconf_t *c)
{
    static const struct option lo[] = {
        {"sizes", required_argument, NULL, 'b'},      {"transports", required_argument, NULL, 'T'},
        {"direction", required_argument, NULL, 'd'},  {"total", required_argument, NULL, 'n'},
        {"cache-bytes", required_argument, NULL, 's'}, {"tensors", required_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},             {"cluster-id", required_argument, NULL, 'c'},
        {"auth-key-file", required_argument, NULL, 'K'}, {"opt", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},             {NULL, 0, NULL, 0}};
    int ch;
    optind = 1;
    opterr = 0; /* our message, with the usage */
    while ((ch = getopt_long(argc, argv, "b:T:d:n:s:t:jc:o:h", lo, NULL)) != -1) {
        switch (ch) {
        case 'b':
            if (!cli_parse_sizes(optarg, c->sizes, CLI_MAX_SIZES, &c->nsizes))
                return cli_usage_error("bench", usage_text, "--sizes: '%s' is not a list of sizes", optarg);
            break;
        case 'T':
            if (!parse_transports(optarg, c))
                return cli_usage_error("bench", usage_text, "--transports: '%s' is not a list of "
                                       "tcp, shm, rdma, auto", optarg);
            break;
        case 'd':
            c->pull = !strcmp(optarg, "pull") || !strcmp(optarg, "both");
            c->push = !strcmp(optarg, "push") || !strcmp(optarg, "both");
            if (!c->pull && !c->push)
                return cli_usage_error("bench", usage_text, "--direction: '%s' is not pull, push "
                                       "or both", optarg);
            break;
        case 'n':
            if (!cli_parse_size(optarg, &c->total) || !c->total)
                return cli_usage_error("bench", usage_text, "--total: '%s' is not a size", optarg);
            break;
        case 's':
            if (!cli_parse_size(optarg, &c->cache_bytes) || !c->cache_bytes)
                return cli_usage_error("bench", usage_text, "--cache-bytes: '%s' is not a size", optarg);
            break;
        case 't':
            if (!cli_parse_u64(optarg, &c->tensors) || !c->tensors || c->tensors > CLI_MAX_TENSORS)
                return cli_usage_error("bench", usage_text, "--tensors: '%s' is not 1..64", optarg);
            break;
        case 'j':
            c->json = true;
            break;
        case 'c':
            if (!cli_parse_u64(optarg, &c->id))
                return cli_usage_error("bench", usage_text, "--cluster-id: '%s' is not a number", optarg);
            break;
        case 'K':
            if (!cli_opts_add(&c->opts, "llmlink.AuthKeyFile", optarg))
                return cli_usage_error("bench", usage_text, "too many options");
            break;
        case 'o':
            if (!cli_opts_add_kv(&c->opts, optarg))
                return cli_usage_error("bench", usage_text, "--opt: '%s' is not KEY=VALUE", optarg);
            break;
        case 'h':
            fputs(usage_text, stdout);
            return -1;
        default:
            return cli_usage_error("bench", usage_text, "bad option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 1)
        return cli_usage_error("bench", usage_text, argc - optind ? "one address only"
                                                                  : "no address given");
    if (!cli_parse_peer(argv[optind], &c->peer))
        return cli_usage_error("bench", usage_text, "'%s' is not [ID@]IP:PORT", argv[optind]);
    for (size_t i = 0; i < c->nsizes; i++)
        if (c->cache_bytes / c->tensors / c->sizes[i] == 0)
            return cli_usage_error("bench", usage_text, "--cache-bytes holds no block of %" PRIu64
                                   " bytes per tensor", c->sizes[i]);
    return CLI_OK;
}

typedef struct point {
    const char *transport, *used, *direction;
    uint64_t block, bytes, calls;
    double seconds;
    char error[256];
} point_t;

/* Whole-cache calls until total bytes moved (one warm-up call first). */
static void measure(llmlink_t *e, const bconf_t *c, point_t *p, bool push)
{
    uint64_t blocks = c->cache_bytes / c->tensors / p->block;
    if (blocks > LLMLINK_MAX_BLOCKS_PER_CALL)
        blocks = LLMLINK_MAX_BLOCKS_PER_CALL;
    cli_cache_t local;
    uint64_t *idx = malloc(blocks * sizeof *idx);
    llmlink_status_t st = idx ? cli_cache_alloc(e, &local, (uint32_t)c->tensors, p->block, blocks,
                                                NULL)
                              : LLMLINK_OUT_OF_MEMORY;
    if (st != LLMLINK_SUCCESS) {
        snprintf(p->error, sizeof p->error, "local cache: %s", llmlink_status_name(st));
        free(idx);
        return;
    }
    for (uint64_t i = 0; i < blocks; i++)
        idx[i] = i;
    llmlink_cache_key_t key = cli_serve_key(c->peer.id, p->block);
    uint64_t per = blocks * p->block * c->tensors;
    llmlink_metrics_t m0, m1;
    cli_metrics(e, &m0);
    double t0 = 0;
    for (uint64_t call = 0; st == LLMLINK_SUCCESS; call++) {
        if (call == 1)
            t0 = cli_now(); /* after the warm-up */
        if (call >= 1 && p->bytes >= c->total)
            break;
        st = push ? llmlink_push_blocks(e, &key, local.id, idx, blocks, idx, blocks, NULL)
                  : llmlink_pull_blocks(e, &key, local.id, idx, blocks, idx, blocks, NULL);
        if (call >= 1 && st == LLMLINK_SUCCESS) {
            p->bytes += per;
            p->calls++;
        }
    }
    p->seconds = cli_now() - t0;
    cli_metrics(e, &m1);
    p->used = cli_transport_used(&m0, &m1);
    if (st != LLMLINK_SUCCESS)
        snprintf(p->error, sizeof p->error, "%s: %s", llmlink_status_name(st), llmlink_last_error());
    llmlink_deallocate_cache(e, local.id);
    free(idx);
}

static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", *s);
        else
            putchar(*s);
    }
    putchar('"');
}

static void report(const bconf_t *c, const point_t *p, const char *date)
{
    double gbps = p->seconds > 0 && !p->error[0] ? (double)p->bytes / p->seconds / 1e9 : 0;
    if (!c->json) {
        if (p->error[0])
            printf("%-5s %-9s %-9s %12" PRIu64 "  FAILED: %s\n", p->direction, p->transport, "-",
                   p->block, p->error);
        else
            printf("%-5s %-9s %-9s %12" PRIu64 " %14" PRIu64 " %10.4f %9.3f\n", p->direction,
                   p->transport, p->used, p->block, p->bytes, p->seconds, gbps);
        fflush(stdout);
        return;
    }
    printf("{\"schema\": 1, \"tool\": \"llmlink bench\", \"version\": ");
    json_string(llmlink_version_string());
    printf(", \"date\": \"%s\", \"direction\": \"%s\", \"transport\": \"%s\", "
           "\"transport_used\": \"%s\", \"block_size\": %" PRIu64 ", \"tensors\": %" PRIu64
           ", \"bytes\": %" PRIu64 ", \"calls\": %" PRIu64 ", \"seconds\": %.9f, \"gbps\": %.6f, "
           "\"ok\": %s", date, p->direction, p->transport, p->used ? p->used : "none", p->block,
           c->tensors, p->bytes, p->calls, p->seconds, gbps, p->error[0] ? "false" : "true");
    if (p->error[0]) {
        printf(", \"error\": ");
        json_string(p->error);
    }
    printf("}\n");
    fflush(stdout);
}

int cli_bench(int argc, char **argv)
{
    bconf_t c;
    memset(&c, 0, sizeof c);
    c.id = CLI_DEFAULT_CLIENT_ID;
    c.total = 256ull << 20;
    c.cache_bytes = CLI_DEFAULT_CACHE_BYTES;
    c.tensors = CLI_DEFAULT_TENSORS;
    c.sizes[0] = CLI_DEFAULT_BLOCK;
    c.nsizes = 1;
    snprintf(c.transports[0], sizeof c.transports[0], "auto");
    c.ntransports = 1;
    c.pull = true;
    int rc = parse(argc, argv, &c);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    char date[32];
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    if (!c.json)
        printf("%-5s %-9s %-9s %12s %14s %10s %9s\n", "DIR", "TRANSPORT", "USED", "BLOCK_SIZE",
               "BYTES", "SECONDS", "GB/S");
    int failed = 0;
    for (size_t t = 0; t < c.ntransports; t++) {
        cli_opts_t o = c.opts;
        /* o.o[] point into o.buf of the copy: rebuild them */
        for (size_t i = 0; i < o.n; i++) {
            o.o[i].key = o.buf[i];
            o.o[i].value = o.buf[i] + strlen(o.buf[i]) + 1;
        }
        if (strcmp(c.transports[t], "auto"))
            cli_opts_add(&o, "llmlink.Transport", c.transports[t]);
        llmlink_t *e = cli_engine("bench", LLMLINK_ROLE_DECODER, c.id, &o);
        llmlink_status_t st[1] = {LLMLINK_FAILED};
        if (e && cli_link_peers(e, &c.peer, 1, CLI_DEFAULT_LINK_MS, st) != LLMLINK_SUCCESS)
            st[0] = st[0] == LLMLINK_SUCCESS ? LLMLINK_FAILED : st[0];
        for (size_t s = 0; s < c.nsizes; s++)
            for (int d = 0; d < 2; d++) {
                if ((d == 0 && !c.pull) || (d == 1 && !c.push))
                    continue;
                point_t p = {.transport = c.transports[t], .direction = d ? "push" : "pull",
                             .block = c.sizes[s]};
                if (!e || st[0] != LLMLINK_SUCCESS)
                    snprintf(p.error, sizeof p.error, "link: %s: %s",
                             llmlink_status_name(e ? st[0] : LLMLINK_FAILED), llmlink_last_error());
                else
                    measure(e, &c, &p, d == 1);
                if (p.error[0])
                    failed++;
                report(&c, &p, date);
            }
        if (e)
            cli_unlink_all(e, false);
        llmlink_destroy(e);
    }
    if (failed)
        return cli_fail("bench", "%d point(s) failed", failed);
    return CLI_OK;
}
