/* common.c - what the subcommands of `llmlink` share (cli.h): messages,
 * parsing, engines, the fill pattern, caches, progress and output. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

/* ---- messages ---- */

static void vsay(const char *sub, const char *fmt, va_list ap)
{
    fprintf(stderr, "llmlink %s: ", sub);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

int cli_fail(const char *sub, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsay(sub, fmt, ap);
    va_end(ap);
    return CLI_FAIL;
}

int cli_usage_error(const char *sub, const char *usage, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsay(sub, fmt, ap);
    va_end(ap);
    fputs(usage, stderr);
    return CLI_USAGE;
}

int cli_fail_status(const char *sub, const char *what, llmlink_status_t st)
{
    const char *detail = llmlink_last_error();
    return cli_fail(sub, "%s: %s (%s)%s%s", what, llmlink_status_name(st), llmlink_strerror(st),
                    detail && *detail ? ": " : "", detail ? detail : "");
}

/* ---- parsing ---- */

bool cli_parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s || *s == '-' || *s == '+')
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

bool cli_parse_size(const char *s, uint64_t *out)
{
    if (!s || !*s || *s == '-' || *s == '+')
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return false;
    unsigned shift = 0;
    if (*end) {
        switch (*end) {
        case 'k': case 'K': shift = 10; break;
        case 'm': case 'M': shift = 20; break;
        case 'g': case 'G': shift = 30; break;
        default: return false;
        }
        end++;
        if (*end == 'i' || *end == 'I')
            end++;
        if (*end == 'b' || *end == 'B')
            end++;
        if (*end)
            return false;
    }
    if (v > (UINT64_MAX >> shift))
        return false;
    *out = (uint64_t)v << shift;
    return true;
}

bool cli_parse_sizes(const char *s, uint64_t *out, size_t max, size_t *n)
{
    char buf[512];
    if (!s || strlen(s) >= sizeof buf)
        return false;
    snprintf(buf, sizeof buf, "%s", s);
    *n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (*n == max || !cli_parse_size(tok, &out[*n]) || out[*n] == 0)
            return false;
        (*n)++;
    }
    return *n > 0;
}

bool cli_parse_hostport(const char *s, char *ip, size_t cap, uint16_t *port)
{
    const char *colon;
    size_t iplen;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return false;
        iplen = (size_t)(close - s - 1);
        s++;
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || strchr(s, ':') != colon)
            return false;
        iplen = (size_t)(colon - s);
    }
    if (iplen == 0 || iplen >= cap)
        return false;
    memcpy(ip, s, iplen);
    ip[iplen] = '\0';
    unsigned char tmp[16];
    if (inet_pton(AF_INET, ip, tmp) != 1 && inet_pton(AF_INET6, ip, tmp) != 1)
        return false;
    uint64_t p;
    if (!cli_parse_u64(colon + 1, &p) || p > 65535)
        return false;
    *port = (uint16_t)p;
    return true;
}

bool cli_parse_peer(const char *s, cli_peer_t *p)
{
    memset(p, 0, sizeof *p);
    p->text = s;
    p->id = CLI_DEFAULT_SERVE_ID;
    const char *at = strchr(s, '@');
    if (at) {
        char idbuf[32];
        size_t n = (size_t)(at - s);
        if (n == 0 || n >= sizeof idbuf)
            return false;
        memcpy(idbuf, s, n);
        idbuf[n] = '\0';
        if (!cli_parse_u64(idbuf, &p->id))
            return false;
        s = at + 1;
    }
    return cli_parse_hostport(s, p->ip, sizeof p->ip, &p->port) && p->port != 0;
}

/* ---- engines ---- */

bool cli_opts_add(cli_opts_t *o, const char *key, const char *value)
{
    if (o->n == CLI_MAX_OPTS)
        return false;
    int n = snprintf(o->buf[o->n], sizeof o->buf[o->n], "%s=%s", key, value);
    if (n < 0 || (size_t)n >= sizeof o->buf[o->n])
        return false;
    return cli_opts_add_kv(o, o->buf[o->n]);
}

bool cli_opts_add_kv(cli_opts_t *o, const char *kv)
{
    if (o->n == CLI_MAX_OPTS || strlen(kv) >= sizeof o->buf[0])
        return false;
    char *b = o->buf[o->n];
    if (b != kv)
        snprintf(b, sizeof o->buf[0], "%s", kv);
    char *eq = strchr(b, '=');
    if (!eq || eq == b)
        return false;
    *eq = '\0';
    o->o[o->n].key = b;
    o->o[o->n].value = eq + 1;
    o->n++;
    return true;
}

llmlink_t *cli_engine(const char *sub, llmlink_role_t role, uint64_t id, const cli_opts_t *o)
{
    llmlink_t *e = NULL;
    llmlink_status_t st = llmlink_create(&e, role, id);
    if (st != LLMLINK_SUCCESS) {
        cli_fail_status(sub, "llmlink_create", st);
        return NULL;
    }
    st = llmlink_init(e, o ? o->o : NULL, o ? o->n : 0);
    if (st != LLMLINK_SUCCESS) {
        cli_fail_status(sub, "llmlink_init", st);
        llmlink_destroy(e);
        return NULL;
    }
    return e;
}

llmlink_status_t cli_link_peers(llmlink_t *e, const cli_peer_t *peers, size_t n,
                                int32_t timeout_ms, llmlink_status_t *statuses)
{
    llmlink_ip_info_t ips[LLMLINK_MAX_CLUSTERS_PER_CALL];
    llmlink_cluster_info_t c[LLMLINK_MAX_CLUSTERS_PER_CALL];
    memset(c, 0, sizeof c);
    for (size_t i = 0; i < n; i++) {
        ips[i].ip = peers[i].ip;
        ips[i].port = peers[i].port;
        c[i].remote_cluster_id = peers[i].id;
        c[i].remote_role = 0;
        c[i].remote_ip_infos = &ips[i];
        c[i].num_remote_ip_infos = 1;
    }
    return llmlink_link_clusters(e, c, n, timeout_ms, statuses);
}

/* Unlinks every peer (they are told), bounded. */
void cli_unlink_all(llmlink_t *e, bool print)
{
    llmlink_link_info_t li[LLMLINK_MAX_CLUSTERS_PER_CALL];
    for (int round = 0; round < 64; round++) {
        size_t n = 0;
        li[0].version = LLMLINK_LINK_INFO_VERSION;
        if (llmlink_get_links(e, li, LLMLINK_MAX_CLUSTERS_PER_CALL, &n) != LLMLINK_SUCCESS || !n)
            return;
        if (n > LLMLINK_MAX_CLUSTERS_PER_CALL)
            n = LLMLINK_MAX_CLUSTERS_PER_CALL;
        llmlink_cluster_info_t c[LLMLINK_MAX_CLUSTERS_PER_CALL];
        llmlink_status_t st[LLMLINK_MAX_CLUSTERS_PER_CALL];
        memset(c, 0, sizeof c);
        for (size_t i = 0; i < n; i++)
            c[i].remote_cluster_id = li[i].cluster_id;
        llmlink_unlink_clusters(e, c, n, 2000, false, st);
        for (size_t i = 0; i < n && print; i++)
            printf("unlinked cluster=%" PRIu64 " status=%s\n", li[i].cluster_id,
                   llmlink_status_name(st[i]));
    }
}

/* ---- the pattern ---- */

static uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t cli_pattern_word(uint64_t seed, uint32_t tensor, uint64_t word)
{
    return mix64(mix64(seed ^ ((uint64_t)tensor << 40) ^ 0x6c6c6d6cull) ^ word);
}

void cli_fill(uint8_t *tensor, uint64_t bytes, uint64_t seed, uint32_t t)
{
    for (uint64_t w = 0; w < bytes / 8; w++) {
        uint64_t v = cli_pattern_word(seed, t, w);
        for (int b = 0; b < 8; b++)
            tensor[w * 8 + (uint64_t)b] = (uint8_t)(v >> (8 * b));
    }
}

bool cli_check(const uint8_t *tensor, uint64_t off, uint64_t src_off, uint64_t len,
               uint64_t seed, uint32_t t)
{
    for (uint64_t i = 0; i < len / 8; i++) {
        uint64_t v = cli_pattern_word(seed, t, src_off / 8 + i);
        for (int b = 0; b < 8; b++)
            if (tensor[off + i * 8 + (uint64_t)b] != (uint8_t)(v >> (8 * b)))
                return false;
    }
    return true;
}

/* ---- caches ---- */

llmlink_cache_key_t cli_serve_key(uint64_t cluster_id, uint64_t block)
{
    llmlink_cache_key_t k;
    memset(&k, 0, sizeof k);
    k.type = LLMLINK_KEY_BLOCKS;
    k.cluster_id = cluster_id;
    k.model_id = block;
    k.prefix_id = -1;
    return k;
}

llmlink_status_t cli_cache_alloc(llmlink_t *e, cli_cache_t *c, uint32_t tensors, uint64_t block,
                                 uint64_t blocks, const llmlink_cache_key_t *key)
{
    memset(c, 0, sizeof *c);
    c->tensors = tensors;
    c->block = block;
    c->blocks = blocks;
    llmlink_cache_desc_t d;
    memset(&d, 0, sizeof d);
    d.num_tensors = tensors;
    d.data_type = LLMLINK_DT_UINT8;
    d.placement = LLMLINK_PLACEMENT_HOST;
    d.num_dims = 2;
    d.shape[0] = (int64_t)blocks;
    d.shape[1] = (int64_t)block;
    return llmlink_allocate_blocks_cache(e, &d, key, &c->id, c->addrs, CLI_MAX_TENSORS);
}

llmlink_status_t cli_cache_filled(llmlink_t *e, cli_cache_t *c, uint32_t tensors, uint64_t block,
                                  uint64_t blocks, const llmlink_cache_key_t *key, uint64_t seed)
{
    memset(c, 0, sizeof *c);
    c->tensors = tensors;
    c->block = block;
    c->blocks = blocks;
    uint64_t bytes = blocks * block;
    for (uint32_t t = 0; t < tensors; t++) {
        void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return LLMLINK_OUT_OF_MEMORY;
        cli_fill(p, bytes, seed, t);
        c->addrs[t] = (uint64_t)(uintptr_t)p;
    }
    llmlink_cache_desc_t d;
    memset(&d, 0, sizeof d);
    d.num_tensors = tensors;
    d.data_type = LLMLINK_DT_UINT8;
    d.placement = LLMLINK_PLACEMENT_HOST;
    d.num_dims = 2;
    d.shape[0] = (int64_t)blocks;
    d.shape[1] = (int64_t)block;
    return llmlink_register_blocks_cache(e, &d, c->addrs, tensors, key, &c->id);
}

/* ---- output ---- */

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void cli_progress(const char *what, uint64_t done, uint64_t total)
{
    static int last_quarter = -1;
    if (total == 0)
        return;
    unsigned pct = (unsigned)(done * 100 / total);
    if (isatty(STDERR_FILENO)) {
        char bar[41];
        unsigned fill = pct * 40 / 100;
        for (unsigned i = 0; i < 40; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[40] = '\0';
        fprintf(stderr, "\r%s [%s] %3u%%", what, bar, pct);
        if (done == total)
            fputc('\n', stderr);
        return;
    }
    int quarter = (int)(pct / 25);
    if (done == 0)
        last_quarter = -1;
    if (quarter != last_quarter) {
        fprintf(stderr, "%s: %u%% (%" PRIu64 " of %" PRIu64 ")\n", what, pct, done, total);
        last_quarter = quarter;
    }
}

const char *cli_bytes_text(uint64_t n, char *buf, size_t cap)
{
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)n;
    unsigned u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, cap, "%" PRIu64 " B", n);
    else
        snprintf(buf, cap, "%.1f %s", v, units[u]);
    return buf;
}

bool cli_metrics(llmlink_t *e, llmlink_metrics_t *m)
{
    memset(m, 0, sizeof *m);
    m->version = LLMLINK_METRICS_VERSION;
    return llmlink_get_metrics(e, m) == LLMLINK_SUCCESS;
}

const char *cli_transport_used(const llmlink_metrics_t *a, const llmlink_metrics_t *b)
{
    uint64_t most = 0;
    uint32_t best = LLMLINK_METRICS_TRANSPORT_NONE;
    for (uint32_t t = 0; t < LLMLINK_METRICS_MAX_TRANSPORTS; t++) {
        uint64_t grew = 0;
        for (int d = 0; d < LLMLINK_METRICS_MAX_DIRS; d++)
            for (int r = 0; r < LLMLINK_METRICS_MAX_RESULTS; r++)
                grew += b->transfers[d][t][r] - a->transfers[d][t][r];
        if (grew > most) {
            most = grew;
            best = t;
        }
    }
    const char *name = llmlink_metrics_label(LLMLINK_LABEL_TRANSPORT, best);
    return name ? name : "?";
}
