/* serve.c - `llmlink serve`: a PROMPT engine on an address with caches it
 * maps, fills with the verifiable pattern (cli.h), its port
 * printed; optionally its metrics on --metrics ADDR (http.c). Runs until
 * SIGINT or SIGTERM, then unlinks every peer and exits 0. */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char usage_text[] =
    "usage: llmlink serve [OPTIONS]\n"
    "  -l, --listen IP:PORT      listen address (default 127.0.0.1:0: a free port)\n"
    "  -c, --cluster-id N        this engine's cluster id (default 1)\n"
    "  -b, --block-size LIST     block sizes, one cache each (default 64K; e.g. 4K,64K,1M)\n"
    "  -s, --cache-bytes N       bytes of each cache, all tensors (default 64M)\n"
    "  -t, --tensors N           tensors per cache (default 2, at most 64)\n"
    "      --seed N              fill pattern seed (default: the cluster id)\n"
    "      --transport T         llmlink.Transport: auto, tcp, shm, rdma (default auto)\n"
    "      --auth-key-file F     llmlink.AuthKeyFile (peers need the same key)\n"
    "  -o, --opt KEY=VALUE       any engine option (docs/options.md), repeatable\n"
    "  -m, --metrics IP:PORT     serve GET /metrics (Prometheus text) there\n"
    "  -h, --help                this text\n"
    "Prints port=, listen=, one cache= line per cache, metrics= and then ready\n"
    "on stdout. Cache of block size B: BlocksCacheKey(cluster id, model id B).\n";

typedef struct serve_conf {
    cli_opts_t opts;
    char listen[96];
    uint64_t id, seed, cache_bytes, tensors;
    bool seed_set;
    uint64_t sizes[CLI_MAX_SIZES];
    size_t nsizes;
    const char *metrics;
} serve_conf_t;

static int parse(int argc, char **argv, serve_conf_t *c)
{
    static const struct option lo[] = {
        {"listen", required_argument, NULL, 'l'},   {"cluster-id", required_argument, NULL, 'c'},
        {"block-size", required_argument, NULL, 'b'}, {"cache-bytes", required_argument, NULL, 's'},
        {"tensors", required_argument, NULL, 't'},  {"seed", required_argument, NULL, 'S'},
        {"transport", required_argument, NULL, 'T'}, {"auth-key-file", required_argument, NULL, 'K'},
        {"opt", required_argument, NULL, 'o'},      {"metrics", required_argument, NULL, 'm'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
    memset(c, 0, sizeof *c);
    snprintf(c->listen, sizeof c->listen, "127.0.0.1:0");
    c->id = CLI_DEFAULT_SERVE_ID;
    c->cache_bytes = CLI_DEFAULT_CACHE_BYTES;
    c->tensors = CLI_DEFAULT_TENSORS;
    c->sizes[0] = CLI_DEFAULT_BLOCK;
    c->nsizes = 1;
    int ch;
    optind = 1;
    opterr = 0; /* our message, with the usage */
    while ((ch = getopt_long(argc, argv, "l:c:b:s:t:o:m:h", lo, NULL)) != -1) {
        char ip[64];
        uint16_t port;
        switch (ch) {
        case 'l':
            if (!cli_parse_hostport(optarg, ip, sizeof ip, &port))
                return cli_usage_error("serve", usage_text, "--listen: '%s' is not IP:PORT", optarg);
            snprintf(c->listen, sizeof c->listen, "%s", optarg);
            break;
        case 'c':
            if (!cli_parse_u64(optarg, &c->id))
                return cli_usage_error("serve", usage_text, "--cluster-id: '%s' is not a number", optarg);
            break;
        case 'b':
            if (!cli_parse_sizes(optarg, c->sizes, CLI_MAX_SIZES, &c->nsizes))
                return cli_usage_error("serve", usage_text, "--block-size: '%s' is not a list of "
                                       "sizes (e.g. 4K,64K,1M; at most %d)", optarg, CLI_MAX_SIZES);
            break;
        case 's':
            if (!cli_parse_size(optarg, &c->cache_bytes) || c->cache_bytes == 0)
                return cli_usage_error("serve", usage_text, "--cache-bytes: '%s' is not a size", optarg);
            break;
        case 't':
            if (!cli_parse_u64(optarg, &c->tensors) || c->tensors == 0 || c->tensors > CLI_MAX_TENSORS)
                return cli_usage_error("serve", usage_text, "--tensors: '%s' is not 1..%d", optarg,
                                       CLI_MAX_TENSORS);
            break;
        case 'S':
            if (!cli_parse_u64(optarg, &c->seed))
                return cli_usage_error("serve", usage_text, "--seed: '%s' is not a number", optarg);
            c->seed_set = true;
            break;
        case 'T':
            if (!cli_opts_add(&c->opts, "llmlink.Transport", optarg))
                return cli_usage_error("serve", usage_text, "too many options");
            break;
        case 'K':
            if (!cli_opts_add(&c->opts, "llmlink.AuthKeyFile", optarg))
                return cli_usage_error("serve", usage_text, "too many options");
            break;
        case 'o':
            if (!cli_opts_add_kv(&c->opts, optarg))
                return cli_usage_error("serve", usage_text, "--opt: '%s' is not KEY=VALUE", optarg);
            break;
        case 'm':
            if (!cli_parse_hostport(optarg, ip, sizeof ip, &port))
                return cli_usage_error("serve", usage_text, "--metrics: '%s' is not IP:PORT", optarg);
            c->metrics = optarg;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return -1;
        default:
            return cli_usage_error("serve", usage_text, "bad option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_usage_error("serve", usage_text, "unexpected argument '%s'", argv[optind]);
    if (!c->seed_set)
        c->seed = c->id;
    if (!cli_opts_add(&c->opts, "llm.listenIpInfo", c->listen))
        return cli_usage_error("serve", usage_text, "too many options");
    for (size_t i = 0; i < c->nsizes; i++)
        if (c->cache_bytes / c->tensors / c->sizes[i] == 0)
            return cli_usage_error("serve", usage_text, "--cache-bytes %" PRIu64 " holds no block "
                                   "of %" PRIu64 " bytes in each of %" PRIu64 " tensors",
                                   c->cache_bytes, c->sizes[i], c->tensors);
    return CLI_OK;
}

/* One cache per block size, filled, printed. */
static int make_caches(llmlink_t *e, const serve_conf_t *c)
{
    for (size_t i = 0; i < c->nsizes; i++) {
        uint64_t blocks = c->cache_bytes / c->tensors / c->sizes[i];
        llmlink_cache_key_t key = cli_serve_key(c->id, c->sizes[i]);
        cli_cache_t cc;
        llmlink_status_t st =
            cli_cache_filled(e, &cc, (uint32_t)c->tensors, c->sizes[i], blocks, &key, c->seed);
        if (st != LLMLINK_SUCCESS)
            return cli_fail_status("serve", "registering a cache", st);
        printf("cache=%" PRId64 " block_size=%" PRIu64 " blocks=%" PRIu64 " tensors=%" PRIu64
               " seed=%" PRIu64 " key=blocks:%" PRIu64 ":%" PRIu64 "\n",
               cc.id, c->sizes[i], blocks, c->tensors, c->seed, c->id, c->sizes[i]);
    }
    return CLI_OK;
}

int cli_serve(int argc, char **argv)
{
    serve_conf_t c;
    int rc = parse(argc, argv, &c);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    /* Every thread the engine starts inherits this mask: only sigwait
     * below sees SIGINT / SIGTERM. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    llmlink_t *e = cli_engine("serve", LLMLINK_ROLE_PROMPT, c.id, &c.opts);
    if (!e)
        return CLI_FAIL;
    uint16_t port = 0;
    llmlink_get_listen_port(e, 0, &port);
    char ip[64];
    uint16_t unused;
    cli_parse_hostport(c.listen, ip, sizeof ip, &unused);
    printf("port=%u\n", port);
    printf(strchr(ip, ':') ? "listen=[%s]:%u cluster_id=%" PRIu64 "\n"
                           : "listen=%s:%u cluster_id=%" PRIu64 "\n", ip, port, c.id);
    rc = make_caches(e, &c);
    cli_http_t *http = NULL;
    if (rc == CLI_OK && c.metrics) {
        char mip[64];
        uint16_t mport, bound = 0;
        cli_parse_hostport(c.metrics, mip, sizeof mip, &mport);
        http = cli_http_start(e, mip, mport, &bound);
        if (!http)
            rc = CLI_FAIL;
        else
            printf(strchr(mip, ':') ? "metrics=http://[%s]:%u/metrics\n"
                                    : "metrics=http://%s:%u/metrics\n", mip, bound);
    }
    if (rc == CLI_OK) {
        printf("ready\n");
        fflush(stdout);
        int sig = 0;
        sigwait(&set, &sig);
        printf("signal=%s\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
        cli_unlink_all(e, true);
    }
    cli_http_stop(http);
    llmlink_destroy(e);
    if (rc == CLI_OK)
        printf("stopped\n");
    fflush(stdout);
    return rc;
}
