/* link.c - `llmlink link ADDR...`: link to prefill engines in one call and
 * print each cluster's status as a table; exit 1 when any failed, with
 * the library's reasons. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char usage_text[] =
    "usage: llmlink link [OPTIONS] [ID@]IP:PORT...\n"
    "  Links to each prefill engine (ID: its cluster id, default 1) in one call\n"
    "  (at most 16) and prints a table: cluster, address, status, transport.\n"
    "  -c, --cluster-id N        this engine's cluster id (default 1000)\n"
    "  -w, --timeout-ms N        link within N ms (default 5000)\n"
    "      --transport T         llmlink.Transport: auto, tcp, shm, rdma (default auto)\n"
    "      --auth-key-file F     llmlink.AuthKeyFile\n"
    "  -o, --opt KEY=VALUE       any engine option (docs/options.md), repeatable\n"
    "  -h, --help                this text\n"
    "Exit status 1 when any cluster did not link (the reasons on stderr).\n";

static const char *transport_of(llmlink_t *e, uint64_t id)
{
    llmlink_link_info_t li[LLMLINK_MAX_CLUSTERS_PER_CALL];
    size_t n = 0;
    li[0].version = LLMLINK_LINK_INFO_VERSION;
    if (llmlink_get_links(e, li, LLMLINK_MAX_CLUSTERS_PER_CALL, &n) != LLMLINK_SUCCESS)
        return "-";
    for (size_t i = 0; i < n && i < LLMLINK_MAX_CLUSTERS_PER_CALL; i++)
        if (li[i].cluster_id == id && li[i].direction == LLMLINK_LINK_OUTBOUND)
            return llmlink_metrics_label(LLMLINK_LABEL_TRANSPORT, li[i].transport);
    return "-";
}

int cli_link(int argc, char **argv)
{
    static const struct option lo[] = {
        {"cluster-id", required_argument, NULL, 'c'}, {"timeout-ms", required_argument, NULL, 'w'},
        {"transport", required_argument, NULL, 'T'}, {"auth-key-file", required_argument, NULL, 'K'},
        {"opt", required_argument, NULL, 'o'},        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    cli_opts_t opts;
    memset(&opts, 0, sizeof opts);
    uint64_t id = CLI_DEFAULT_CLIENT_ID, timeout = CLI_DEFAULT_LINK_MS;
    int ch;
    optind = 1;
    opterr = 0; /* our message, with the usage */
    while ((ch = getopt_long(argc, argv, "c:w:o:h", lo, NULL)) != -1) {
        switch (ch) {
        case 'c':
            if (!cli_parse_u64(optarg, &id))
                return cli_usage_error("link", usage_text, "--cluster-id: '%s' is not a number", optarg);
            break;
        case 'w':
            if (!cli_parse_u64(optarg, &timeout) || timeout == 0 || timeout > 3600000)
                return cli_usage_error("link", usage_text, "--timeout-ms: '%s' is not 1..3600000", optarg);
            break;
        case 'T':
            if (!cli_opts_add(&opts, "llmlink.Transport", optarg))
                return cli_usage_error("link", usage_text, "too many options");
            break;
        case 'K':
            if (!cli_opts_add(&opts, "llmlink.AuthKeyFile", optarg))
                return cli_usage_error("link", usage_text, "too many options");
            break;
        case 'o':
            if (!cli_opts_add_kv(&opts, optarg))
                return cli_usage_error("link", usage_text, "--opt: '%s' is not KEY=VALUE", optarg);
            break;
        case 'h':
            fputs(usage_text, stdout);
            return CLI_OK;
        default:
            return cli_usage_error("link", usage_text, "bad option '%s'", argv[optind - 1]);
        }
    }
    size_t n = (size_t)(argc - optind);
    if (n == 0)
        return cli_usage_error("link", usage_text, "no address given");
    if (n > LLMLINK_MAX_CLUSTERS_PER_CALL)
        return cli_usage_error("link", usage_text, "%zu addresses: at most %d", n,
                               LLMLINK_MAX_CLUSTERS_PER_CALL);
    cli_peer_t peers[LLMLINK_MAX_CLUSTERS_PER_CALL];
    for (size_t i = 0; i < n; i++)
        if (!cli_parse_peer(argv[optind + (int)i], &peers[i]))
            return cli_usage_error("link", usage_text, "'%s' is not [ID@]IP:PORT",
                                   argv[optind + (int)i]);

    llmlink_t *e = cli_engine("link", LLMLINK_ROLE_DECODER, id, &opts);
    if (!e)
        return CLI_FAIL;
    llmlink_status_t st[LLMLINK_MAX_CLUSTERS_PER_CALL];
    double t0 = cli_now();
    llmlink_status_t all = cli_link_peers(e, peers, n, (int32_t)timeout, st);
    double secs = cli_now() - t0;
    char why[1024];
    snprintf(why, sizeof why, "%s", llmlink_last_error());
    printf("%-20s %-40s %-28s %s\n", "CLUSTER", "ADDRESS", "STATUS", "TRANSPORT");
    size_t failed = 0;
    for (size_t i = 0; i < n; i++) {
        if (st[i] != LLMLINK_SUCCESS)
            failed++;
        char addr[80];
        snprintf(addr, sizeof addr, strchr(peers[i].ip, ':') ? "[%s]:%u" : "%s:%u", peers[i].ip,
                 peers[i].port);
        printf("%-20" PRIu64 " %-40s %-28s %s\n", peers[i].id, addr, llmlink_status_name(st[i]),
               st[i] == LLMLINK_SUCCESS ? transport_of(e, peers[i].id) : "-");
    }
    printf("%zu linked, %zu failed in %.3f s\n", n - failed, failed, secs);
    fflush(stdout);
    int rc = CLI_OK;
    if (all != LLMLINK_SUCCESS || failed) {
        for (size_t i = 0; i < n; i++)
            if (st[i] != LLMLINK_SUCCESS)
                fprintf(stderr, "llmlink link: cluster %" PRIu64 " at %s: %s (%s)\n", peers[i].id,
                        peers[i].text, llmlink_status_name(st[i]), llmlink_strerror(st[i]));
        cli_fail("link", "%s", why[0] ? why : llmlink_status_name(all));
        rc = CLI_FAIL;
    }
    cli_unlink_all(e, false);
    llmlink_destroy(e);
    return rc;
}
