/* xfer.c - `llmlink pull` / `llmlink push`: move N blocks (or the whole
 * cache) from / into a serving engine's cache of one block size, verify
 * the pattern (cli.h), print bytes, time, GB/s and the transport used. A
 * progress bar on a terminal, plain lines otherwise. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char pull_usage[] =
    "usage: llmlink pull [OPTIONS] [ID@]IP:PORT\n"
    "  Pulls blocks 0..N-1 of the serving engine's cache of --block-size into a\n"
    "  local cache, and prints bytes, time, GB/s and the transport used.\n";
static const char push_usage[] =
    "usage: llmlink push [OPTIONS] [ID@]IP:PORT\n"
    "  Pushes a local cache filled with --seed into blocks 0..N-1 of the serving\n"
    "  engine's cache of --block-size (overwriting them), and prints bytes, time,\n"
    "  GB/s and the transport used; --verify pulls them back and checks them.\n";
static const char common_usage[] =
    "  -b, --block-size B        the serving cache's block size (default 64K)\n"
    "  -s, --cache-bytes N       the serving cache's bytes, all tensors (default 64M)\n"
    "  -t, --tensors N           the serving cache's tensors (default 2)\n"
    "  -n, --blocks N            blocks to move (default: the whole cache)\n"
    "      --seed N              pull: the serving engine's seed (default: its cluster id);\n"
    "                            push: the seed of the pushed pattern (default: this\n"
    "                            engine's cluster id)\n"
    "  -v, --verify              check every byte moved (exit 1 on a mismatch)\n"
    "  -c, --cluster-id N        this engine's cluster id (default 1000)\n"
    "      --transport T         llmlink.Transport: auto, tcp, shm, rdma (default auto)\n"
    "      --auth-key-file F     llmlink.AuthKeyFile\n"
    "  -o, --opt KEY=VALUE       any engine option (docs/options.md), repeatable\n"
    "  -w, --timeout-ms N        link within N ms (default 5000)\n"
    "  -h, --help                this text\n";

typedef struct xconf {
    bool push, verify, seed_set;
    const char *sub;
    cli_opts_t opts;
    cli_peer_t peer;
    uint64_t id, block, cache_bytes, tensors, blocks, seed, timeout;
} xconf_t;

static int usage_error(const xconf_t *c, const char *fmt, const char *arg)
{
    fprintf(stderr, "llmlink %s: ", c->sub);
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    fputs(c->push ? push_usage : pull_usage, stderr);
    fputs(common_usage, stderr);
    return CLI_USAGE;
}

static int parse(int argc, char **argv, xconf_t *c)
{
    static const struct option lo[] = {
        {"block-size", required_argument, NULL, 'b'}, {"cache-bytes", required_argument, NULL, 's'},
        {"tensors", required_argument, NULL, 't'},    {"blocks", required_argument, NULL, 'n'},
        {"seed", required_argument, NULL, 'S'},       {"verify", no_argument, NULL, 'v'},
        {"cluster-id", required_argument, NULL, 'c'}, {"transport", required_argument, NULL, 'T'},
        {"auth-key-file", required_argument, NULL, 'K'}, {"opt", required_argument, NULL, 'o'},
        {"timeout-ms", required_argument, NULL, 'w'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    int ch;
    optind = 1;
    opterr = 0; /* our message, with the usage */
    while ((ch = getopt_long(argc, argv, "b:s:t:n:vc:o:w:h", lo, NULL)) != -1) {
        switch (ch) {
        case 'b':
            if (!cli_parse_size(optarg, &c->block) || !c->block)
                return usage_error(c, "--block-size: '%s' is not a size", optarg);
            break;
        case 's':
            if (!cli_parse_size(optarg, &c->cache_bytes) || !c->cache_bytes)
                return usage_error(c, "--cache-bytes: '%s' is not a size", optarg);
            break;
        case 't':
            if (!cli_parse_u64(optarg, &c->tensors) || !c->tensors || c->tensors > CLI_MAX_TENSORS)
                return usage_error(c, "--tensors: '%s' is not 1..64", optarg);
            break;
        case 'n':
            if (!cli_parse_u64(optarg, &c->blocks) || !c->blocks)
                return usage_error(c, "--blocks: '%s' is not a positive number", optarg);
            break;
        case 'S':
            if (!cli_parse_u64(optarg, &c->seed))
                return usage_error(c, "--seed: '%s' is not a number", optarg);
            c->seed_set = true;
            break;
        case 'v':
            c->verify = true;
            break;
        case 'c':
            if (!cli_parse_u64(optarg, &c->id))
                return usage_error(c, "--cluster-id: '%s' is not a number", optarg);
            break;
        case 'T':
            if (!cli_opts_add(&c->opts, "llmlink.Transport", optarg))
                return usage_error(c, "%s: too many options", optarg);
            break;
        case 'K':
            if (!cli_opts_add(&c->opts, "llmlink.AuthKeyFile", optarg))
                return usage_error(c, "%s: too many options", optarg);
            break;
        case 'o':
            if (!cli_opts_add_kv(&c->opts, optarg))
                return usage_error(c, "--opt: '%s' is not KEY=VALUE", optarg);
            break;
        case 'w':
            if (!cli_parse_u64(optarg, &c->timeout) || !c->timeout || c->timeout > 3600000)
                return usage_error(c, "--timeout-ms: '%s' is not 1..3600000", optarg);
            break;
        case 'h':
            fputs(c->push ? push_usage : pull_usage, stdout);
            fputs(common_usage, stdout);
            return -1;
        default:
            return usage_error(c, "bad option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 1)
        return usage_error(c, "%s", argc - optind ? "one address only" : "no address given");
    if (!cli_parse_peer(argv[optind], &c->peer))
        return usage_error(c, "'%s' is not [ID@]IP:PORT", argv[optind]);
    uint64_t whole = c->cache_bytes / c->tensors / c->block;
    if (whole == 0)
        return usage_error(c, "%s", "--cache-bytes holds no block of --block-size per tensor");
    if (!c->blocks)
        c->blocks = whole;
    if (c->blocks > whole)
        return usage_error(c, "%s", "--blocks is more than the serving cache holds");
    if (!c->seed_set)
        c->seed = c->push ? c->id : c->peer.id;
    return CLI_OK;
}

/* Moves blocks [0, n) in steps, with the progress shown. */
static llmlink_status_t move(llmlink_t *e, const xconf_t *c, const cli_cache_t *local,
                             const llmlink_cache_key_t *key, bool push, const char *what)
{
    uint64_t step = c->blocks / 32 ? c->blocks / 32 : 1;
    if (step > LLMLINK_MAX_BLOCKS_PER_CALL)
        step = LLMLINK_MAX_BLOCKS_PER_CALL;
    uint64_t *idx = malloc(step * sizeof *idx);
    if (!idx)
        return LLMLINK_OUT_OF_MEMORY;
    llmlink_status_t st = LLMLINK_SUCCESS;
    cli_progress(what, 0, c->blocks);
    for (uint64_t b = 0; b < c->blocks && st == LLMLINK_SUCCESS; b += step) {
        uint64_t k = c->blocks - b < step ? c->blocks - b : step;
        for (uint64_t i = 0; i < k; i++)
            idx[i] = b + i;
        st = push ? llmlink_push_blocks(e, key, local->id, idx, k, idx, k, NULL)
                  : llmlink_pull_blocks(e, key, local->id, idx, k, idx, k, NULL);
        if (st == LLMLINK_SUCCESS)
            cli_progress(what, b + k, c->blocks);
    }
    free(idx);
    return st;
}

static bool verify(const xconf_t *c, const cli_cache_t *local, uint64_t seed)
{
    for (uint32_t t = 0; t < local->tensors; t++)
        if (!cli_check((const uint8_t *)(uintptr_t)local->addrs[t], 0, 0, c->blocks * c->block,
                       seed, t)) {
            fprintf(stderr, "llmlink %s: verify: tensor %u does not hold the pattern of seed %"
                    PRIu64 "\n", c->sub, t, seed);
            return false;
        }
    return true;
}

static int run(llmlink_t *e, const xconf_t *c)
{
    llmlink_status_t st[1];
    if (cli_link_peers(e, &c->peer, 1, (int32_t)c->timeout, st) != LLMLINK_SUCCESS)
        return cli_fail_status(c->sub, "link", st[0]);
    cli_cache_t local, back;
    llmlink_status_t s = cli_cache_alloc(e, &local, (uint32_t)c->tensors, c->block, c->blocks, NULL);
    if (s != LLMLINK_SUCCESS)
        return cli_fail_status(c->sub, "allocating the local cache", s);
    if (c->push)
        for (uint32_t t = 0; t < local.tensors; t++)
            cli_fill((uint8_t *)(uintptr_t)local.addrs[t], c->blocks * c->block, c->seed, t);
    llmlink_cache_key_t key = cli_serve_key(c->peer.id, c->block);
    llmlink_metrics_t m0, m1;
    cli_metrics(e, &m0);
    double t0 = cli_now();
    s = move(e, c, &local, &key, c->push, c->sub);
    double secs = cli_now() - t0;
    if (s != LLMLINK_SUCCESS)
        return cli_fail_status(c->sub, c->push ? "push" : "pull", s);
    cli_metrics(e, &m1);
    uint64_t bytes = c->blocks * c->block * c->tensors;
    char bt[32];
    printf("%s: %" PRIu64 " bytes (%s: %" PRIu64 " blocks of %" PRIu64 " bytes x %" PRIu64
           " tensors) in %.6f s, %.3f GB/s, transport %s\n", c->sub, bytes,
           cli_bytes_text(bytes, bt, sizeof bt), c->blocks, c->block, c->tensors, secs,
           secs > 0 ? (double)bytes / secs / 1e9 : 0.0, cli_transport_used(&m0, &m1));
    if (!c->verify)
        return CLI_OK;
    const cli_cache_t *check = &local;
    if (c->push) { /* read back what landed */
        s = cli_cache_alloc(e, &back, (uint32_t)c->tensors, c->block, c->blocks, NULL);
        if (s == LLMLINK_SUCCESS)
            s = move(e, c, &back, &key, false, "verify");
        if (s != LLMLINK_SUCCESS)
            return cli_fail_status(c->sub, "verify: pulling the pushed blocks back", s);
        check = &back;
    }
    if (!verify(c, check, c->seed))
        return CLI_FAIL;
    printf("verify: ok (%" PRIu64 " bytes, seed %" PRIu64 ")\n", bytes, c->seed);
    return CLI_OK;
}

static int xfer_main(int argc, char **argv, bool push)
{
    xconf_t c;
    memset(&c, 0, sizeof c);
    c.push = push;
    c.sub = push ? "push" : "pull";
    c.id = CLI_DEFAULT_CLIENT_ID;
    c.block = CLI_DEFAULT_BLOCK;
    c.cache_bytes = CLI_DEFAULT_CACHE_BYTES;
    c.tensors = CLI_DEFAULT_TENSORS;
    c.timeout = CLI_DEFAULT_LINK_MS;
    int rc = parse(argc, argv, &c);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    llmlink_t *e = cli_engine(c.sub, LLMLINK_ROLE_DECODER, c.id, &c.opts);
    if (!e)
        return CLI_FAIL;
    rc = run(e, &c);
    fflush(stdout);
    cli_unlink_all(e, false);
    llmlink_destroy(e);
    return rc;
}

int cli_pull(int argc, char **argv)
{
    return xfer_main(argc, argv, false);
}

int cli_push(int argc, char **argv)
{
    return xfer_main(argc, argv, true);
}
