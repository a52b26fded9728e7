/*
 * doctor.c - `llmlink doctor`: checks this host for what breaks links and
 * prints one finding per line, OK / WARN / FAIL (or SKIP), each WARN and
 * FAIL with a fix. Exit 1 when any FAIL.
 *
 * What it reads: /sys/class/infiniband (RDMA devices, ports, states, link
 * layers, RoCE v2 GIDs and the netdev behind each, whose MTU bounds the
 * active one), whether libibverbs.so.1 loads (the library dlopens it),
 * RLIMIT_MEMLOCK against --cache-bytes (RDMA registers the caches),
 * /proc/sys/kernel/yama/ptrace_scope and the user (shm's
 * process_vm_readv), /proc/sys/net/ipv4/tcp_available_ulp (kTLS), a bind
 * test of --listen, the clock source, RLIMIT_NOFILE. --root DIR reads
 * those /sys and /proc files under DIR instead (a test's fake tree).
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli.h"

static const char usage_text[] =
    "usage: llmlink doctor [OPTIONS]\n"
    "  Checks this host: RDMA devices, ports, states, RoCE v2 GIDs, MTUs; ulimit -l;\n"
    "  Yama ptrace_scope and user (shm); kTLS; a listen address; clock source; open\n"
    "  files. One line per finding: OK, WARN, FAIL or SKIP, with a fix.\n"
    "  -s, --cache-bytes N       bytes of caches this host will register (memlock check)\n"
    "  -l, --listen IP:PORT      check that an engine can listen there\n"
    "      --root DIR            read /sys and /proc under DIR (tests)\n"
    "  -h, --help                this text\n"
    "Exit status 1 when any finding is FAIL.\n";

typedef struct doc {
    const char *root;
    uint64_t cache_bytes;
    const char *listen;
    int fails, warns;
    unsigned rdma_ports_active;
} doc_t;

static void finding(doc_t *d, const char *level, const char *check, const char *fix,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void finding(doc_t *d, const char *level, const char *check, const char *fix,
                    const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%-4s  %-9s ", level, check);
    vprintf(fmt, ap);
    putchar('\n');
    va_end(ap);
    if (fix)
        printf("      %-9s fix: %s\n", "", fix);
    if (!strcmp(level, "FAIL"))
        d->fails++;
    if (!strcmp(level, "WARN"))
        d->warns++;
}

/* The first line of root + path (trailing newline cut); false if unreadable. */
static bool read_line(const doc_t *d, const char *path, char *out, size_t cap)
{
    char full[2048];
    out[0] = '\0'; /* callers print it even when unreadable */
    snprintf(full, sizeof full, "%s%s", d->root, path);
    FILE *f = fopen(full, "re");
    if (!f)
        return false;
    bool ok = fgets(out, (int)cap, f) != NULL;
    fclose(f);
    if (ok)
        out[strcspn(out, "\n")] = '\0';
    return ok;
}

/* ---- RDMA ---- */

/* The largest IB MTU that fits a netdev MTU (RoCE: IB MTU + 58 header bytes
 * must fit the Ethernet frame's payload). */
static unsigned ib_mtu_for(unsigned netdev_mtu)
{
    static const unsigned m[] = {4096, 2048, 1024, 512, 256};
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
        if (netdev_mtu >= m[i] + 58)
            return m[i];
    return 0;
}

static void check_gids(doc_t *d, const char *dev, const char *port, unsigned *v2, char *ndev,
                       size_t ndev_cap)
{
    char path[1024], line[128];
    for (unsigned i = 0; i < 256; i++) {
        snprintf(path, sizeof path, "/sys/class/infiniband/%s/ports/%s/gids/%u", dev, port, i);
        if (!read_line(d, path, line, sizeof line))
            break;
        if (!strcmp(line, "0000:0000:0000:0000:0000:0000:0000:0000") ||
            !strcmp(line, "fe80:0000:0000:0000:0000:0000:0000:0000"))
            continue;
        char type[64] = "", nd[64] = "";
        snprintf(path, sizeof path, "/sys/class/infiniband/%s/ports/%s/gid_attrs/types/%u", dev,
                 port, i);
        read_line(d, path, type, sizeof type);
        snprintf(path, sizeof path, "/sys/class/infiniband/%s/ports/%s/gid_attrs/ndevs/%u", dev,
                 port, i);
        read_line(d, path, nd, sizeof nd);
        if (strstr(type, "v2")) {
            (*v2)++;
            if (nd[0] && !ndev[0])
                snprintf(ndev, ndev_cap, "%s", nd);
            printf("      %-9s %s port %s gid %u %s (%s%s%s)\n", "", dev, port, i, line, type,
                   nd[0] ? ", " : "", nd);
        }
    }
}

static void check_port(doc_t *d, const char *dev, const char *port)
{
    char path[1024], state[64] = "?", layer[64] = "?";
    snprintf(path, sizeof path, "/sys/class/infiniband/%s/ports/%s/state", dev, port);
    read_line(d, path, state, sizeof state);
    snprintf(path, sizeof path, "/sys/class/infiniband/%s/ports/%s/link_layer", dev, port);
    read_line(d, path, layer, sizeof layer);
    bool active = strstr(state, "ACTIVE") != NULL;
    if (!active) {
        finding(d, "FAIL", "rdma", "bring the link up (`ip link set <netdev> up`, check the "
                "cable / switch port), or pick another port (llmlink.RdmaPort)",
                "%s port %s: state %s (%s): this port cannot carry RDMA", dev, port, state, layer);
        return;
    }
    d->rdma_ports_active++;
    if (strcmp(layer, "Ethernet")) {
        finding(d, "OK", "rdma", NULL, "%s port %s: %s, %s", dev, port, state, layer);
        return;
    }
    unsigned v2 = 0;
    char ndev[64] = "";
    check_gids(d, dev, port, &v2, ndev, sizeof ndev);
    if (!v2) {
        finding(d, "WARN", "rdma", "give the netdev behind this port an IP address (each one "
                "makes a RoCE v2 GID), or set llmlink.RdmaGidIndex",
                "%s port %s: %s, RoCE, but no RoCE v2 GID", dev, port, state);
        return;
    }
    char mtu[32] = "";
    snprintf(path, sizeof path, "/sys/class/net/%s/mtu", ndev);
    unsigned nmtu = read_line(d, path, mtu, sizeof mtu) ? (unsigned)strtoul(mtu, NULL, 10) : 0;
    unsigned active_mtu = ib_mtu_for(nmtu);
    if (nmtu && active_mtu < 4096)
        finding(d, "WARN", "rdma", "raise the netdev MTU (`ip link set <netdev> mtu 9000`) on "
                "both hosts and the switch, for 4096-byte RDMA MTU",
                "%s port %s: %s, RoCE, %u v2 GID(s), netdev %s MTU %u: RDMA MTU at most %u",
                dev, port, state, v2, ndev, nmtu, active_mtu);
    else
        finding(d, "OK", "rdma", NULL, "%s port %s: %s, RoCE, %u v2 GID(s), netdev %s MTU %u "
                "(RDMA MTU %u)", dev, port, state, v2, ndev[0] ? ndev : "?", nmtu, active_mtu);
}

static void check_rdma(doc_t *d)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/sys/class/infiniband", d->root);
    DIR *dd = opendir(dir);
    unsigned devices = 0;
    struct dirent *de;
    while (dd && (de = readdir(dd))) {
        if (de->d_name[0] == '.')
            continue;
        devices++;
        char pdir[1024];
        snprintf(pdir, sizeof pdir, "%s/%s/ports", dir, de->d_name);
        DIR *pd = opendir(pdir);
        struct dirent *pe;
        unsigned ports = 0;
        while (pd && (pe = readdir(pd))) {
            if (pe->d_name[0] == '.')
                continue;
            ports++;
            check_port(d, de->d_name, pe->d_name);
        }
        if (pd)
            closedir(pd);
        if (!ports)
            finding(d, "WARN", "rdma", "check the driver (dmesg)", "%s: no port", de->d_name);
    }
    if (dd)
        closedir(dd);
    if (!devices) {
        finding(d, "WARN", "rdma", "load the NIC's RDMA driver; or soft-RoCE for tests: "
                "`modprobe rdma_rxe && rdma link add rxe0 type rxe netdev <netdev>`",
                "no RDMA device (%s missing or empty): links use shm on one host and tcp "
                "between hosts", dir);
        return;
    }
    void *h = dlopen("libibverbs.so.1", RTLD_NOW | RTLD_LOCAL);
    if (h) {
        dlclose(h);
        finding(d, "OK", "verbs", NULL, "libibverbs.so.1 loads (the library opens it at init)");
    } else {
        finding(d, "FAIL", "verbs", "install libibverbs1 and the provider of the NIC "
                "(Debian: ibverbs-providers)", "libibverbs.so.1 does not load: %s", dlerror());
    }
}

/* ---- limits, shm, TLS, listen, clock ---- */

static void check_memlock(doc_t *d)
{
    struct rlimit r;
    getrlimit(RLIMIT_MEMLOCK, &r);
    char cur[64];
    if (r.rlim_cur == RLIM_INFINITY)
        snprintf(cur, sizeof cur, "unlimited");
    else
        snprintf(cur, sizeof cur, "%llu KiB", (unsigned long long)(r.rlim_cur / 1024));
    if (!d->cache_bytes) {
        finding(d, "OK", "memlock", NULL, "ulimit -l: %s (--cache-bytes N compares it with the "
                "caches RDMA will register)", cur);
        return;
    }
    if (r.rlim_cur == RLIM_INFINITY || r.rlim_cur >= d->cache_bytes) {
        finding(d, "OK", "memlock", NULL, "ulimit -l: %s, enough for %llu bytes of caches", cur,
                (unsigned long long)d->cache_bytes);
        return;
    }
    finding(d, d->rdma_ports_active ? "FAIL" : "WARN", "memlock",
            "raise it: `ulimit -l unlimited` (hard limit: /etc/security/limits.conf memlock, "
            "systemd LimitMEMLOCK=, docker --ulimit memlock=-1)",
            "ulimit -l: %s, below the %llu bytes of caches to register: RDMA registration "
            "fails%s", cur, (unsigned long long)d->cache_bytes,
            d->rdma_ports_active ? "" : " (no active RDMA port here now)");
}

static void check_ptrace(doc_t *d)
{
    uid_t uid = geteuid();
    struct passwd *pw = getpwuid(uid);
    char scope[16];
    const char *who = pw ? pw->pw_name : "?";
    if (!read_line(d, "/proc/sys/kernel/yama/ptrace_scope", scope, sizeof scope)) {
        finding(d, "OK", "shm", NULL, "Yama not active (no ptrace_scope): shm works between "
                "processes of one user (user %s, uid %u)", who, (unsigned)uid);
        return;
    }
    int s = atoi(scope);
    if (s == 0)
        finding(d, "OK", "shm", NULL, "ptrace_scope 0: shm works between processes of one user "
                "(user %s, uid %u)", who, (unsigned)uid);
    else if (uid == 0 && s < 3)
        finding(d, "OK", "shm", NULL, "ptrace_scope %d, user root: shm works (CAP_SYS_PTRACE)", s);
    else
        finding(d, "WARN", "shm", "`sysctl kernel.yama.ptrace_scope=0` (scope 3 needs a "
                "reboot), or run the engines with CAP_SYS_PTRACE",
                "ptrace_scope %d, user %s (uid %u): process_vm_readv between unrelated "
                "processes is refused, so links on this host fall back to tcp", s, who,
                (unsigned)uid);
}

static void check_ktls(doc_t *d)
{
    char ulp[256] = "";
    if (read_line(d, "/proc/sys/net/ipv4/tcp_available_ulp", ulp, sizeof ulp) &&
        strstr(ulp, "tls"))
        finding(d, "OK", "ktls", NULL, "kernel TLS available (tcp_available_ulp: %s)", ulp);
    else
        finding(d, "WARN", "ktls", "`modprobe tls` (and add tls to /etc/modules-load.d/)",
                "kernel TLS not loaded (tcp_available_ulp: %s): TLS links encrypt in user "
                "space", ulp[0] ? ulp : "none");
}

static void check_listen(doc_t *d)
{
    if (!d->listen) {
        finding(d, "SKIP", "listen", NULL, "no --listen IP:PORT given");
        return;
    }
    char ip[64];
    uint16_t port;
    cli_parse_hostport(d->listen, ip, sizeof ip, &port);
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, ip, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        len = sizeof *a4;
    } else {
        inet_pton(AF_INET6, ip, &a6->sin6_addr);
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        len = sizeof *a6;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    int err = 0;
    if (fd < 0)
        err = errno;
    else {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, 1) != 0)
            err = errno;
        close(fd);
    }
    if (!err) {
        finding(d, "OK", "listen", NULL, "%s: an engine can listen there", d->listen);
        return;
    }
    const char *fix = err == EADDRINUSE      ? "another process listens there (`ss -ltnp`): stop "
                                               "it or pick another port"
                      : err == EADDRNOTAVAIL ? "the address is not this host's (`ip addr`): use "
                                               "one of its addresses, or 0.0.0.0"
                      : err == EACCES        ? "ports below 1024 need CAP_NET_BIND_SERVICE: use a "
                                               "higher port"
                                             : "check the address";
    finding(d, "FAIL", "listen", fix, "%s: cannot listen: %s", d->listen, strerror(err));
}

static void check_clock(doc_t *d)
{
    char cs[64];
    if (!read_line(d, "/sys/devices/system/clocksource/clocksource0/current_clocksource", cs,
                   sizeof cs)) {
        finding(d, "WARN", "clock", "check /sys/devices/system/clocksource", "clock source unknown");
        return;
    }
    if (!strcmp(cs, "tsc") || !strcmp(cs, "arch_sys_counter") || !strcmp(cs, "kvm-clock"))
        finding(d, "OK", "clock", NULL, "clock source %s (clock_gettime in the vDSO)", cs);
    else
        finding(d, "WARN", "clock", "check why the kernel left tsc (dmesg | grep -i clocksource)",
                "clock source %s: every clock read is a system call; timers and the latency "
                "histogram cost more", cs);
}

static void check_nofile(doc_t *d)
{
    struct rlimit r;
    getrlimit(RLIMIT_NOFILE, &r);
    unsigned long long cur = (unsigned long long)r.rlim_cur, max = (unsigned long long)r.rlim_max;
    /* each link: its control connection and 2 x llmlink.StreamsPerLink streams */
    unsigned long long links = cur / 9;
    if (cur >= 65536)
        finding(d, "OK", "nofile", NULL, "open files: %llu (hard %llu)", cur, max);
    else
        finding(d, cur < 4096 ? "WARN" : "OK", "nofile",
                cur < 4096 ? "`ulimit -n <hard limit>` (systemd LimitNOFILE=)" : NULL,
                "open files: %llu (hard %llu): about %llu links with 4 streams each", cur, max,
                links);
}

int cli_doctor(int argc, char **argv)
{
    static const struct option lo[] = {{"cache-bytes", required_argument, NULL, 's'},
                                       {"listen", required_argument, NULL, 'l'},
                                       {"root", required_argument, NULL, 'R'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    doc_t d;
    memset(&d, 0, sizeof d);
    d.root = "";
    int ch;
    optind = 1;
    opterr = 0; /* our message, with the usage */
    while ((ch = getopt_long(argc, argv, "s:l:h", lo, NULL)) != -1) {
        char ip[64];
        uint16_t port;
        switch (ch) {
        case 's':
            if (!cli_parse_size(optarg, &d.cache_bytes))
                return cli_usage_error("doctor", usage_text, "--cache-bytes: '%s' is not a size", optarg);
            break;
        case 'l':
            if (!cli_parse_hostport(optarg, ip, sizeof ip, &port))
                return cli_usage_error("doctor", usage_text, "--listen: '%s' is not IP:PORT", optarg);
            d.listen = optarg;
            break;
        case 'R':
            d.root = optarg;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return CLI_OK;
        default:
            return cli_usage_error("doctor", usage_text, "bad option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc)
        return cli_usage_error("doctor", usage_text, "unexpected argument '%s'", argv[optind]);
    check_rdma(&d);
    check_memlock(&d);
    check_ptrace(&d);
    check_ktls(&d);
    check_listen(&d);
    check_clock(&d);
    check_nofile(&d);
    printf("%d FAIL, %d WARN\n", d.fails, d.warns);
    return d.fails ? CLI_FAIL : CLI_OK;
}
