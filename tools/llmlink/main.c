/*
 * main.c - `llmlink`, the operator's command: serve a cache, link, move
 * blocks, benchmark, read a running engine's counters, check a host.
 * docs/cli.md describes every subcommand; each lives in a file of its own
 * (serve.c, link.c, xfer.c, bench.c, stats.c, doctor.c).
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const cli_cmd_t cmds[] = {
    {"serve", "run a PROMPT engine with a filled cache until SIGINT/SIGTERM", cli_serve},
    {"link", "link to prefill engines and print each cluster's status", cli_link},
    {"pull", "pull blocks from a serving engine, verify them, print the speed", cli_pull},
    {"push", "push blocks into a serving engine, verify them, print the speed", cli_push},
    {"bench", "transfer benchmark against a serving engine (table or --json)", cli_bench},
    {"stats", "the counters of a running `llmlink serve` (its --metrics endpoint)", cli_stats},
    {"doctor", "check this host for what breaks links, with a fix for each finding", cli_doctor},
};
#define NCMDS (sizeof cmds / sizeof cmds[0])

static void usage(FILE *f)
{
    fprintf(f, "usage: llmlink [--help | --version] COMMAND [ARGS...]\n\ncommands:\n");
    for (size_t i = 0; i < NCMDS; i++)
        fprintf(f, "  %-8s %s\n", cmds[i].name, cmds[i].summary);
    fprintf(f, "\n`llmlink COMMAND --help` describes a command's options.\n"
               "exit status: 0 success, 1 failure (the reason on stderr), 2 bad arguments\n"
               "(usage on stderr). See docs/cli.md.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "llmlink: a command is needed\n");
        usage(stderr);
        return CLI_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return CLI_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("llmlink %s\n", llmlink_version_string());
        return CLI_OK;
    }
    for (size_t i = 0; i < NCMDS; i++)
        if (!strcmp(argv[1], cmds[i].name))
            return cmds[i].main(argc - 1, argv + 1);
    fprintf(stderr, "llmlink: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return CLI_USAGE;
}
