/*
 * llmlink-node - one llmlink engine in its own process, driven by line
 * commands on stdin, for the multi-process integration tests.
 *
 *   llmlink-node --role prompt|decoder|mix --cluster-id N
 *                [--listen ip:port] [--opt key=value]... [--uid N]
 *
 * --uid N: before the engine is created, drop to uid N and gid N
 * (setgroups, setresgid, setresuid): a process of another uid cannot
 * process_vm_readv a root process (EPERM), which the shm tests need.
 *
 * On start it prints "READY port=<listen port, or 0>" (or "ERR <message>"
 * and exits 1). Then one reply line per command, flushed at once.
 *
 * Links
 *   link <timeout_ms> <id>@<ip>:<port>[,<ip>:<port>...][/<local ip>[,<local ip>...]] ...
 *                         -> LINK <overall status> <per-cluster statuses...>
 *       After "/": the cluster's local_ip_infos (port 0), e.g. one per rail.
 *   unlink <timeout_ms> <force 0|1> <id>...
 *                         -> UNLINK <overall status> <per-cluster statuses...>
 *   check <id>            -> CHECK <status>
 *   stats                 -> STATS links=.. in=.. out=.. hs_now=.. hs_peak=..
 *                            accepted=.. completed=.. rejected=.. timed_out=..
 *                            proto_err=.. lost=..
 *
 * Caches (memory the node holds; see "Fill pattern" below)
 *   reg <blocks|cache> <num_tensors> <dtype> <dims> [key=<key>[,<key>...]]
 *       [seed=<n>] [mem=guard|heap] [access=none|read|write|rw]
 *                         -> REG <status> <cache_id>
 *       Registers memory the node allocates itself, filled with the pattern
 *       of seed (default 0). dims: "d0,d1,..." with d0 = blocks (blocks) or
 *       batch size (cache). dtype: fp32 fp16 bf16 int8 uint8 int16 uint16
 *       int32 uint32 int64 uint64 fp64 bool. key= may repeat (cache: key i
 *       names batch entry i; blocks: one key). mem=guard (default): one
 *       mmap, each tensor ending against a PROT_NONE page (and starting
 *       after one), so a stray access past a tensor faults; mem=heap:
 *       aligned_alloc(64) per tensor. access=: registered through the
 *       *_opts call with that llmlink_access_t (without it: the plain call).
 *   alloc <blocks|cache> <num_tensors> <dtype> <dims> [key=...] [seed=<n>] [access=..]
 *                         -> ALLOC <status> <cache_id>
 *       The same through llmlink_allocate_cache / _blocks_cache (memory
 *       zeroed by the library; filled when seed= is given).
 *   unreg <id>            -> UNREG <status>   (node memory freed on SUCCESS)
 *   dealloc <id>          -> DEALLOC <status>
 *   rmkey <key>           -> RMKEY <status>
 *   info <id>             -> INFO <blocks|cache> tensors=.. units=.. unit_bytes=..
 *                            tensor_bytes=.. allocated=0|1
 *   fill <id> <seed>      -> FILL OK
 *
 * Keys
 *   blocks:<cluster>:<model>                  LLMLINK_KEY_BLOCKS
 *   cache:<cluster>:<req>:<model>[:<prefix>]  LLMLINK_KEY_CACHE (prefix -1)
 *   idx:<cluster>:<cache_id>:<batch>          LLMLINK_KEY_ID_AND_INDEX
 *
 * Block lists: "-" (none: NULL, 0) or comma-separated items, each "N" or an
 * inclusive range "A-B" (e.g. "0-63,100,7"). Layers:
 * layers=<src_start>:<src_end>:<dst_start>:<dst_end>:<tensors_per_layer>.
 *
 * Transfers (reply: status, and on failure " | " + llmlink_last_error())
 *   pullblocks <key> <dst_cache> <src_blocks|-> <dst_blocks> [layers=..]
 *                         -> PULL <status>
 *   pullcache <key> <dst_cache> <batch> <size|-1> [layers=..]
 *                         -> PULL <status>
 *   pushblocks <key> <src_cache> <src_blocks> <dst_blocks> [layers=..]
 *                         -> PUSH <status>
 *   pushcache <key> <src_cache> <src_batch> <size|-1> [layers=..]
 *                         -> PUSH <status>
 *   pullloop <threads> <count> [for=<ms>] [dshift=<n>] <transfer command>
 *                         -> LOOP ok=<n> fail=<n> maxms=<ms> per=<ok0>,<ok1>,...
 *                            [<STATUS>=<n>...] [ | <first failure message>]
 *       Runs the transfer command <count> times in each of <threads>
 *       threads at once. A thread stops at its first failure, after count
 *       calls, or after for= ms. dshift=n: thread t adds t*n to every
 *       destination block (so threads write disjoint blocks). maxms is the
 *       slowest call, the failed ones included; per= the successful calls
 *       of each thread.
 *   xstats                -> XSTATS caches=.. transfers=.. failed=.. timed_out=..
 *                            bytes_req=.. bytes_served=.. served=.. refused=..
 *                            tcp=.. shm=.. shm_fallbacks=.. rdma=..
 *
 * Verification (what a destination cache must hold after transfers)
 *   verify <id> <seed>    -> the whole cache holds the pattern of seed
 *   verifyblocks <dst_cache> <dst_seed> <src_seed> [layers=..] [srcoff=<bytes>]
 *                <src_blocks|-> <dst_blocks> [<src_blocks|-> <dst_blocks>...]
 *       Each listed dst block holds the pattern the source had there: src
 *       seed, src tensor (layers map dst tensor -> src tensor), src byte
 *       offset src_block * block_bytes (the source block size is the
 *       destination's: they must match), or for "-" (a batch entry seen as
 *       blocks) srcoff + i * block_bytes for the i-th dst block of the list.
 *       Every other block of every tensor still holds dst_seed's pattern.
 *   verifycache <dst_cache> <dst_seed> <src_seed> <dst_batch> <src_off>
 *               <size|-1> [layers=..]
 *       Bytes [0, size) (-1: the whole entry) of entry dst_batch of each
 *       mapped tensor hold the source pattern at src offset src_off + i
 *       (src_off = src_batch * src_entry_bytes); everything else dst_seed's.
 *                         -> VERIFY OK | VERIFY BAD <n> bad of <m> checked;
 *                            first: tensor=.. offset=.. got=0x.. want=0x.. (..)
 *
 *   ping                  -> PONG
 *   quit                  -> BYE, then exit 0 after llmlink_destroy
 *
 * Fill pattern: tests/common/kvfill.h (byte = f(seed, tensor, byte offset
 * from the tensor base)).
 *
 * Statuses are printed by name (llmlink_status_name). IPv6 addresses are
 * written "[::1]:port". EOF on stdin is quit (without the BYE line). A bad
 * command answers "ERR <message>"; a line longer than LINE_MAX_LEN is
 * discarded with an ERR. Every failed library call also writes its
 * llmlink_last_error() to stderr, so test logs show the reason.
 *
 * Only the public header is used: this is what an application sees.
 */
#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "kvfill.h"
#include "llmlink.h"

#define LINE_MAX_LEN (64 * 1024)
#define MAX_OPTS 32
#define MAX_ARGS 512
#define MAX_CACHES 256
#define MAX_KEYS 4096
#define MAX_THREADS 64
#define MAX_LIST (1u << 20)

static llmlink_t *g_engine;
static uint64_t g_cluster_id;

/* ------------------------------------------------------------------ */
/* Output                                                              */
/* ------------------------------------------------------------------ */

static void reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void reply(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        /* Nobody is listening any more: leave cleanly. */
        llmlink_destroy(g_engine);
        exit(0);
    }
}

static void log_failure(const char *what)
{
    fprintf(stderr, "llmlink-node %" PRIu64 ": %s: %s\n", g_cluster_id, what,
            llmlink_last_error());
}

/* The calling thread's last error on one line (newlines become spaces). */
static void last_error_copy(char *buf, size_t len)
{
    snprintf(buf, len, "%s", llmlink_last_error());
    for (char *c = buf; *c; c++)
        if (*c == '\n' || *c == '\r')
            *c = ' ';
}

/* "<verb> <status>[ <extra>]" and, on failure, " | <last error>". */
static void reply_status(const char *verb, llmlink_status_t st, const char *extra)
{
    const char *sep = extra && *extra ? " " : "";
    if (st == LLMLINK_SUCCESS) {
        reply("%s %s%s%s", verb, llmlink_status_name(st), sep, extra ? extra : "");
        return;
    }
    char msg[1024];
    last_error_copy(msg, sizeof msg);
    log_failure(verb);
    reply("%s %s%s%s | %s", verb, llmlink_status_name(st), sep, extra ? extra : "", msg);
}

/* ------------------------------------------------------------------ */
/* Parsing helpers                                                     */
/* ------------------------------------------------------------------ */

/* Unsigned decimal, whole string, no sign, no overflow. */
static bool parse_u64(const char *s, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9')
        return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

static bool parse_i64(const char *s, int64_t *out)
{
    if (!s || !*s)
        return false;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

/* Signed decimal in int32 range (non-positive values pass through: the
 * library is the one that must refuse them). */
static bool parse_i32(const char *s, int32_t *out)
{
    int64_t v;
    if (!parse_i64(s, &v) || v < INT32_MIN || v > INT32_MAX)
        return false;
    *out = (int32_t)v;
    return true;
}

static bool parse_u32(const char *s, uint32_t *out)
{
    uint64_t v;
    if (!parse_u64(s, &v) || v > UINT32_MAX)
        return false;
    *out = (uint32_t)v;
    return true;
}

/* "name=value": the value when arg starts with name=, else NULL. */
static const char *opt_value(const char *arg, const char *name)
{
    size_t n = strlen(name);
    return !strncmp(arg, name, n) && arg[n] == '=' ? arg + n + 1 : NULL;
}

static llmlink_role_t parse_role(const char *s)
{
    if (!s)
        return 0;
    if (!strcmp(s, "prompt"))
        return LLMLINK_ROLE_PROMPT;
    if (!strcmp(s, "decoder"))
        return LLMLINK_ROLE_DECODER;
    if (!strcmp(s, "mix"))
        return LLMLINK_ROLE_MIX;
    return 0;
}

static const struct {
    const char *name;
    llmlink_data_type_t type;
    uint32_t size;
} k_dtypes[] = {
    {"fp32", LLMLINK_DT_FLOAT, 4},   {"float", LLMLINK_DT_FLOAT, 4},
    {"fp16", LLMLINK_DT_FLOAT16, 2}, {"float16", LLMLINK_DT_FLOAT16, 2},
    {"bf16", LLMLINK_DT_BF16, 2},    {"int8", LLMLINK_DT_INT8, 1},
    {"uint8", LLMLINK_DT_UINT8, 1},  {"int16", LLMLINK_DT_INT16, 2},
    {"uint16", LLMLINK_DT_UINT16, 2}, {"int32", LLMLINK_DT_INT32, 4},
    {"uint32", LLMLINK_DT_UINT32, 4}, {"int64", LLMLINK_DT_INT64, 8},
    {"uint64", LLMLINK_DT_UINT64, 8}, {"fp64", LLMLINK_DT_DOUBLE, 8},
    {"double", LLMLINK_DT_DOUBLE, 8}, {"bool", LLMLINK_DT_BOOL, 1},
};

static bool parse_dtype(const char *s, llmlink_data_type_t *t, uint32_t *size)
{
    for (size_t i = 0; i < sizeof k_dtypes / sizeof k_dtypes[0]; i++)
        if (!strcmp(s, k_dtypes[i].name)) {
            *t = k_dtypes[i].type;
            *size = k_dtypes[i].size;
            return true;
        }
    return false;
}

/* "d0,d1,..." into desc->shape / num_dims (values passed through as given:
 * zero or negative dims are the library's to refuse). */
static bool parse_dims(char *s, llmlink_cache_desc_t *desc)
{
    desc->num_dims = 0;
    char *save = NULL;
    for (char *tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (desc->num_dims == LLMLINK_MAX_DIMS || !parse_i64(tok, &desc->shape[desc->num_dims]))
            return false;
        desc->num_dims++;
    }
    return desc->num_dims > 0;
}

/* Splits s at ':' into at most max fields (edited in place). */
static int split_colon(char *s, char **f, int max)
{
    int n = 0;
    for (char *p = s;; p++) {
        if (n == max)
            return max + 1;
        f[n++] = p;
        p = strchr(p, ':');
        if (!p)
            return n;
        *p = '\0';
    }
}

/* A key spec (see the top of the file). The text is copied first. */
static bool parse_key(const char *spec, llmlink_cache_key_t *k)
{
    char buf[256], *f[6];
    if (strlen(spec) >= sizeof buf)
        return false;
    strcpy(buf, spec);
    int n = split_colon(buf, f, 5);
    memset(k, 0, sizeof *k);
    k->prefix_id = -1;
    if (!strcmp(f[0], "blocks") && n == 3) {
        k->type = LLMLINK_KEY_BLOCKS;
        return parse_u64(f[1], &k->cluster_id) && parse_u64(f[2], &k->model_id);
    }
    if (!strcmp(f[0], "cache") && (n == 4 || n == 5)) {
        k->type = LLMLINK_KEY_CACHE;
        return parse_u64(f[1], &k->cluster_id) && parse_u64(f[2], &k->req_id) &&
               parse_u64(f[3], &k->model_id) && (n == 4 || parse_i64(f[4], &k->prefix_id));
    }
    if (!strcmp(f[0], "idx") && n == 4) {
        k->type = LLMLINK_KEY_ID_AND_INDEX;
        return parse_u64(f[1], &k->cluster_id) && parse_i64(f[2], &k->cache_id) &&
               parse_u32(f[3], &k->batch_index);
    }
    return false;
}

/* A growable list of block indexes. */
typedef struct u64_list {
    uint64_t *v; /* NULL for "-" */
    size_t n;
    size_t cap;
} u64_list_t;

static void list_free(u64_list_t *l)
{
    free(l->v);
    memset(l, 0, sizeof *l);
}

static bool list_push(u64_list_t *l, uint64_t x)
{
    if (l->n == MAX_LIST)
        return false;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        uint64_t *v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return false;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = x;
    return true;
}

/* "-" or "N,A-B,..." (text copied first). */
static bool parse_list(const char *s, u64_list_t *l)
{
    memset(l, 0, sizeof *l);
    if (!strcmp(s, "-"))
        return true;
    char *buf = strdup(s), *save = NULL;
    if (!buf)
        return false;
    bool ok = true;
    for (char *tok = strtok_r(buf, ",", &save); tok && ok; tok = strtok_r(NULL, ",", &save)) {
        char *dash = strchr(tok, '-');
        uint64_t a, b;
        if (dash) {
            *dash = '\0';
            ok = parse_u64(tok, &a) && parse_u64(dash + 1, &b) && a <= b && b - a < MAX_LIST;
            for (uint64_t x = a; ok && x <= b; x++)
                ok = list_push(l, x);
        } else {
            ok = parse_u64(tok, &a) && list_push(l, a);
        }
    }
    free(buf);
    if (!ok || l->n == 0) {
        list_free(l);
        return false;
    }
    return true;
}

static bool parse_layers(const char *s, llmlink_layer_range_t *r)
{
    char buf[128], *f[6];
    if (strlen(s) >= sizeof buf)
        return false;
    strcpy(buf, s);
    if (split_colon(buf, f, 5) != 5)
        return false;
    return parse_i32(f[0], &r->src_start) && parse_i32(f[1], &r->src_end) &&
           parse_i32(f[2], &r->dst_start) && parse_i32(f[3], &r->dst_end) &&
           parse_u32(f[4], &r->tensors_per_layer);
}

/* ------------------------------------------------------------------ */
/* The node's caches                                                   */
/* ------------------------------------------------------------------ */

typedef struct node_cache {
    bool used;
    int64_t id;
    bool blocks;
    bool allocated; /* memory is the library's */
    bool heap;      /* reg mem=heap: one aligned_alloc per tensor */
    uint32_t ntensors;
    uint64_t tensor_bytes, units, unit_bytes;
    uint8_t **addrs;
    void *mapping; /* reg mem=guard */
    size_t mapping_len;
} node_cache_t;

static node_cache_t g_caches[MAX_CACHES];

static node_cache_t *cache_find(int64_t id)
{
    for (size_t i = 0; i < MAX_CACHES; i++)
        if (g_caches[i].used && g_caches[i].id == id)
            return &g_caches[i];
    return NULL;
}

static node_cache_t *cache_slot(void)
{
    for (size_t i = 0; i < MAX_CACHES; i++)
        if (!g_caches[i].used)
            return &g_caches[i];
    return NULL;
}

/* Frees what the node allocated (never the library's memory). */
static void cache_release(node_cache_t *c)
{
    if (!c->allocated) {
        if (c->mapping)
            munmap(c->mapping, c->mapping_len);
        if (c->heap)
            for (uint32_t t = 0; t < c->ntensors; t++)
                free(c->addrs[t]);
    }
    free(c->addrs);
    memset(c, 0, sizeof *c);
}

/*
 * The engine's threads read and write registered memory for peers (tcp
 * serving, pushes into this node), in an order that messages through other
 * processes set: this node replies, the test tells the peer, the peer
 * sends a request. ThreadSanitizer cannot see that order and would report
 * the node's own fills and verifications as races with the engine. A call
 * that takes the engine's registry lock (which its threads take around
 * every request) after a fill and before a verification makes the order
 * visible to it; without TSan it costs nothing worth mentioning.
 */
static void sync_with_engine(void)
{
    llmlink_xfer_stats_t s;
    memset(&s, 0, sizeof s);
    s.version = LLMLINK_XFER_STATS_VERSION;
    (void)llmlink_get_xfer_stats(g_engine, &s);
}

static void cache_fill(const node_cache_t *c, uint64_t seed)
{
    for (uint32_t t = 0; t < c->ntensors; t++)
        kvfill_fill(c->addrs[t], c->tensor_bytes, seed, t, 0);
    sync_with_engine();
}

/* Node memory for n tensors of bytes each (see mem= at the top). */
static bool cache_alloc_memory(node_cache_t *c, bool heap)
{
    c->addrs = calloc(c->ntensors, sizeof *c->addrs);
    if (!c->addrs)
        return false;
    if (heap) {
        c->heap = true;
        size_t sz = (size_t)((c->tensor_bytes + 63) & ~(uint64_t)63);
        for (uint32_t t = 0; t < c->ntensors; t++)
            if (!(c->addrs[t] = aligned_alloc(64, sz ? sz : 64)))
                return false;
        return true;
    }
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t span = (size_t)((c->tensor_bytes + page - 1) / page * page);
    if (span == 0)
        span = page;
    size_t len = page + (size_t)c->ntensors * (span + page);
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (m == MAP_FAILED)
        return false;
    c->mapping = m;
    c->mapping_len = len;
    uint8_t *base = m;
    mprotect(base, page, PROT_NONE);
    for (uint32_t t = 0; t < c->ntensors; t++) {
        uint8_t *start = base + page + (size_t)t * (span + page);
        /* End against the guard page after the span, 64-byte aligned. */
        size_t pad = (size_t)((span - c->tensor_bytes) & ~(uint64_t)63);
        c->addrs[t] = start + pad;
        mprotect(start + span, page, PROT_NONE);
    }
    return true;
}

/* ------------------------------------------------------------------ */
/* Commands: links                                                     */
/* ------------------------------------------------------------------ */

/* "1.2.3.4:5" or "[::1]:5", edited in place: *ip points into text. */
static bool parse_endpoint(char *text, llmlink_ip_info_t *out)
{
    char *port;
    if (text[0] == '[') {
        char *close = strchr(text, ']');
        if (!close || close[1] != ':')
            return false;
        *close = '\0';
        out->ip = text + 1;
        port = close + 2;
    } else {
        char *colon = strrchr(text, ':');
        if (!colon || strchr(text, ':') != colon)
            return false;
        *colon = '\0';
        out->ip = text;
        port = colon + 1;
    }
    uint64_t p;
    if (!*out->ip || !parse_u64(port, &p) || p > 65535)
        return false;
    out->port = (uint16_t)p;
    return true;
}

static void print_statuses(const char *verb, llmlink_status_t overall,
                           const llmlink_status_t *st, size_t n)
{
    char line[1024];
    size_t off = (size_t)snprintf(line, sizeof line, "%s %s", verb, llmlink_status_name(overall));
    for (size_t i = 0; i < n && off < sizeof line; i++)
        off += (size_t)snprintf(line + off, sizeof line - off, " %s",
                                llmlink_status_name(st[i]));
    reply("%s", line);
}

/* link <timeout_ms> <id>@<ep>[,<ep>...] ... */
static void cmd_link(char **argv, int argc)
{
    static llmlink_ip_info_t ips[LLMLINK_MAX_CLUSTERS_PER_CALL][LLMLINK_MAX_IP_INFOS];
    static llmlink_ip_info_t lips[LLMLINK_MAX_CLUSTERS_PER_CALL][LLMLINK_MAX_IP_INFOS];
    llmlink_cluster_info_t ci[LLMLINK_MAX_CLUSTERS_PER_CALL];
    llmlink_status_t st[LLMLINK_MAX_CLUSTERS_PER_CALL];
    int32_t timeout;
    if (argc < 3 || !parse_i32(argv[1], &timeout)) {
        reply("ERR usage: link <timeout_ms> <id>@<ip>:<port>[,<ip>:<port>...] ...");
        return;
    }
    size_t n = (size_t)(argc - 2);
    if (n > LLMLINK_MAX_CLUSTERS_PER_CALL) {
        reply("ERR link: at most %d clusters per command", LLMLINK_MAX_CLUSTERS_PER_CALL);
        return;
    }
    memset(ci, 0, sizeof ci);
    for (size_t i = 0; i < n; i++) {
        char *spec = argv[2 + i];
        char *at = strchr(spec, '@');
        if (!at) {
            reply("ERR link: '%s' is not <id>@<ip>:<port>", spec);
            return;
        }
        *at = '\0';
        if (!parse_u64(spec, &ci[i].remote_cluster_id)) {
            reply("ERR link: bad cluster id '%s'", spec);
            return;
        }
        size_t nl = 0;
        char *slash = strchr(at + 1, '/');
        if (slash) {
            *slash = '\0';
            for (char *save = NULL, *ip = strtok_r(slash + 1, ",", &save); ip;
                 ip = strtok_r(NULL, ",", &save)) {
                if (nl == LLMLINK_MAX_IP_INFOS) {
                    reply("ERR link: at most %d local addresses per cluster",
                          LLMLINK_MAX_IP_INFOS);
                    return;
                }
                lips[i][nl].ip = ip;
                lips[i][nl].port = 0;
                nl++;
            }
        }
        ci[i].local_ip_infos = nl ? lips[i] : NULL;
        ci[i].num_local_ip_infos = nl;
        size_t k = 0;
        for (char *save = NULL, *ep = strtok_r(at + 1, ",", &save); ep;
             ep = strtok_r(NULL, ",", &save)) {
            if (k == LLMLINK_MAX_IP_INFOS) {
                reply("ERR link: at most %d addresses per cluster", LLMLINK_MAX_IP_INFOS);
                return;
            }
            char shown[80];
            snprintf(shown, sizeof shown, "%s", ep);
            if (!parse_endpoint(ep, &ips[i][k])) {
                reply("ERR link: bad address '%s' (ip:port or [ipv6]:port)", shown);
                return;
            }
            k++;
        }
        if (k == 0) {
            reply("ERR link: cluster %" PRIu64 " has no address", ci[i].remote_cluster_id);
            return;
        }
        ci[i].remote_ip_infos = ips[i];
        ci[i].num_remote_ip_infos = k;
    }
    llmlink_status_t overall = llmlink_link_clusters(g_engine, ci, n, timeout, st);
    if (overall != LLMLINK_SUCCESS)
        log_failure("link");
    print_statuses("LINK", overall, st, n);
}

/* unlink <timeout_ms> <force 0|1> <id>... */
static void cmd_unlink(char **argv, int argc)
{
    llmlink_cluster_info_t ci[LLMLINK_MAX_CLUSTERS_PER_CALL];
    llmlink_status_t st[LLMLINK_MAX_CLUSTERS_PER_CALL];
    int32_t timeout;
    if (argc < 4 || !parse_i32(argv[1], &timeout) ||
        (strcmp(argv[2], "0") != 0 && strcmp(argv[2], "1") != 0)) {
        reply("ERR usage: unlink <timeout_ms> <force 0|1> <id>...");
        return;
    }
    bool force = argv[2][0] == '1';
    size_t n = (size_t)(argc - 3);
    if (n > LLMLINK_MAX_CLUSTERS_PER_CALL) {
        reply("ERR unlink: at most %d clusters per command", LLMLINK_MAX_CLUSTERS_PER_CALL);
        return;
    }
    memset(ci, 0, sizeof ci);
    for (size_t i = 0; i < n; i++) {
        if (!parse_u64(argv[3 + i], &ci[i].remote_cluster_id)) {
            reply("ERR unlink: bad cluster id '%s'", argv[3 + i]);
            return;
        }
    }
    llmlink_status_t overall = llmlink_unlink_clusters(g_engine, ci, n, timeout, force, st);
    if (overall != LLMLINK_SUCCESS)
        log_failure("unlink");
    print_statuses("UNLINK", overall, st, n);
}

static void cmd_check(char **argv, int argc)
{
    uint64_t id;
    if (argc != 2 || !parse_u64(argv[1], &id)) {
        reply("ERR usage: check <id>");
        return;
    }
    reply("CHECK %s", llmlink_status_name(llmlink_check_link_status(g_engine, id)));
}

static void cmd_stats(void)
{
    llmlink_stats_t s;
    memset(&s, 0, sizeof s);
    s.version = LLMLINK_STATS_VERSION;
    llmlink_status_t st = llmlink_get_stats(g_engine, &s);
    if (st != LLMLINK_SUCCESS) {
        reply("ERR stats: %s: %s", llmlink_status_name(st), llmlink_last_error());
        return;
    }
    reply("STATS links=%u in=%u out=%u hs_now=%u hs_peak=%u accepted=%" PRIu64
          " completed=%" PRIu64 " rejected=%" PRIu64 " timed_out=%" PRIu64 " proto_err=%" PRIu64
          " lost=%" PRIu64,
          s.links, s.inbound_links, s.outbound_links, s.handshakes_in_progress,
          s.handshakes_peak, s.handshakes_accepted, s.handshakes_completed,
          s.handshakes_rejected, s.handshakes_timed_out, s.protocol_errors, s.links_lost);
}

/* ------------------------------------------------------------------ */
/* Commands: caches                                                    */
/* ------------------------------------------------------------------ */

/* reg|alloc <blocks|cache> <num_tensors> <dtype> <dims> [key=..] [keys=..]
 * [seed=..] [mem=..] */
static void cmd_reg_or_alloc(char **argv, int argc, bool alloc)
{
    const char *verb = alloc ? "ALLOC" : "REG";
    static llmlink_cache_key_t keys[MAX_KEYS];
    llmlink_cache_desc_t desc;
    uint32_t elem;
    memset(&desc, 0, sizeof desc);
    if (argc < 5 || (strcmp(argv[1], "blocks") && strcmp(argv[1], "cache")) ||
        !parse_u32(argv[2], &desc.num_tensors) || !parse_dtype(argv[3], &desc.data_type, &elem) ||
        !parse_dims(argv[4], &desc)) {
        reply("ERR usage: %s <blocks|cache> <num_tensors> <dtype> <d0,d1,...> [key=<key>[,...]] "
              "[seed=<n>]%s", alloc ? "alloc" : "reg", alloc ? "" : " [mem=guard|heap]");
        return;
    }
    bool blocks = argv[1][0] == 'b';
    desc.placement = LLMLINK_PLACEMENT_HOST;
    size_t nkeys = 0;
    uint64_t seed = 0;
    bool have_seed = false, heap = false;
    llmlink_register_options_t ropts = LLMLINK_REGISTER_OPTIONS_INIT;
    const llmlink_register_options_t *opts = NULL; /* the plain calls */
    for (int i = 5; i < argc; i++) {
        const char *v;
        if ((v = opt_value(argv[i], "access"))) {
            static const char *const names[] = {"none", "read", "write", "rw"};
            uint32_t a = 0;
            while (a < 4 && strcmp(v, names[a]))
                a++;
            if (a == 4) {
                reply("ERR %s: access= is none, read, write or rw", verb);
                return;
            }
            ropts.access = a;
            opts = &ropts;
            continue;
        }
        if ((v = opt_value(argv[i], "key")) || (v = opt_value(argv[i], "keys"))) {
            char *copy = strdup(v), *save = NULL;
            bool ok = copy != NULL;
            for (char *k = copy ? strtok_r(copy, ",", &save) : NULL; k && ok;
                 k = strtok_r(NULL, ",", &save)) {
                ok = nkeys < MAX_KEYS && parse_key(k, &keys[nkeys]);
                nkeys++;
            }
            free(copy);
            if (!ok) {
                reply("ERR %s: bad key list '%.200s'", verb, v);
                return;
            }
        } else if ((v = opt_value(argv[i], "seed"))) {
            if (!parse_u64(v, &seed)) {
                reply("ERR %s: bad seed '%s'", verb, v);
                return;
            }
            have_seed = true;
        } else if (!alloc && (v = opt_value(argv[i], "mem"))) {
            if (strcmp(v, "guard") && strcmp(v, "heap")) {
                reply("ERR reg: mem= is guard or heap");
                return;
            }
            heap = !strcmp(v, "heap");
        } else {
            reply("ERR %s: unknown argument '%.64s'", verb, argv[i]);
            return;
        }
    }
    if (blocks && nkeys > 1) {
        reply("ERR %s: a blocks cache has at most one key", verb);
        return;
    }
    /* The node's own view of the sizes (the library checks them too). */
    uint64_t unit = elem;
    for (uint32_t d = 1; d < desc.num_dims; d++) {
        if (desc.shape[d] <= 0 || unit > (UINT64_C(1) << 48) / (uint64_t)desc.shape[d]) {
            unit = 0;
            break;
        }
        unit *= (uint64_t)desc.shape[d];
    }
    node_cache_t *c = cache_slot();
    if (!c) {
        reply("ERR %s: the node holds %d caches already", verb, MAX_CACHES);
        return;
    }
    bool sane = unit > 0 && desc.shape[0] > 0 && desc.num_tensors > 0 &&
                desc.num_tensors <= LLMLINK_MAX_TENSORS &&
                (uint64_t)desc.shape[0] <= (UINT64_C(1) << 48) / unit;
    int64_t id = -1;
    llmlink_status_t st;
    if (alloc) {
        uint64_t *addrs = sane ? calloc(desc.num_tensors, sizeof *addrs) : NULL;
        size_t naddrs = addrs ? desc.num_tensors : 0;
        if (blocks)
            st = llmlink_allocate_blocks_cache_opts(g_engine, &desc, nkeys ? keys : NULL, opts,
                                                    &id, addrs, naddrs);
        else
            st = llmlink_allocate_cache_opts(g_engine, &desc, nkeys ? keys : NULL, nkeys, opts,
                                             &id, addrs, naddrs);
        if (st == LLMLINK_SUCCESS && !addrs) {
            /* The library accepted what the node found insane. */
            reply("ERR alloc: library accepted a cache the node cannot map (id %" PRId64 ")", id);
            return;
        }
        if (st == LLMLINK_SUCCESS) {
            c->addrs = calloc(desc.num_tensors, sizeof *c->addrs);
            for (uint32_t t = 0; c->addrs && t < desc.num_tensors; t++)
                c->addrs[t] = (uint8_t *)(uintptr_t)addrs[t];
            c->allocated = true;
        }
        free(addrs);
    } else {
        if (!sane) {
            /* Shapes the node cannot back with memory: hand the library a
             * dummy address list so it gives its own verdict. */
            uint64_t fake[LLMLINK_MAX_TENSORS];
            size_t n = desc.num_tensors <= LLMLINK_MAX_TENSORS ? desc.num_tensors : 0;
            for (size_t t = 0; t < n; t++)
                fake[t] = 4096 * (t + 1);
            if (blocks)
                st = llmlink_register_blocks_cache(g_engine, &desc, fake, n, nkeys ? keys : NULL,
                                                   &id);
            else
                st = llmlink_register_cache(g_engine, &desc, fake, n, nkeys ? keys : NULL, nkeys,
                                            &id);
            if (st == LLMLINK_SUCCESS)
                reply("REG %s %" PRId64 " | node: registered without memory!",
                      llmlink_status_name(st), id);
            else
                reply_status("REG", st, "-1");
            return;
        }
        c->ntensors = desc.num_tensors;
        c->tensor_bytes = unit * (uint64_t)desc.shape[0];
        if (!cache_alloc_memory(c, heap)) {
            cache_release(c);
            reply("ERR reg: out of memory for %u x %" PRIu64 " bytes", desc.num_tensors,
                  unit * (uint64_t)desc.shape[0]);
            return;
        }
        cache_fill(c, seed); /* before peers can see it */
        uint64_t *addrs = calloc(desc.num_tensors, sizeof *addrs);
        for (uint32_t t = 0; addrs && t < desc.num_tensors; t++)
            addrs[t] = (uint64_t)(uintptr_t)c->addrs[t];
        if (blocks)
            st = llmlink_register_blocks_cache_opts(g_engine, &desc, addrs, desc.num_tensors,
                                                    nkeys ? keys : NULL, opts, &id);
        else
            st = llmlink_register_cache_opts(g_engine, &desc, addrs, desc.num_tensors,
                                             nkeys ? keys : NULL, nkeys, opts, &id);
        free(addrs);
        if (st != LLMLINK_SUCCESS)
            cache_release(c);
    }
    if (st != LLMLINK_SUCCESS) {
        reply_status(verb, st, "-1");
        return;
    }
    c->used = true;
    c->id = id;
    c->blocks = blocks;
    c->ntensors = desc.num_tensors;
    c->units = (uint64_t)desc.shape[0];
    c->unit_bytes = unit;
    c->tensor_bytes = unit * c->units;
    if (!c->addrs) {
        reply("ERR %s: out of memory", verb);
        return;
    }
    if (alloc && have_seed)
        cache_fill(c, seed);
    char idbuf[32];
    snprintf(idbuf, sizeof idbuf, "%" PRId64, id);
    reply_status(verb, st, idbuf);
}

static bool parse_cache_arg(const char *s, const char *verb, node_cache_t **out)
{
    int64_t id;
    if (!parse_i64(s, &id)) {
        reply("ERR %s: bad cache id '%.64s'", verb, s);
        return false;
    }
    *out = cache_find(id);
    if (!*out) {
        reply("ERR %s: the node has no cache %" PRId64, verb, id);
        return false;
    }
    return true;
}

/* unreg <id> / dealloc <id> */
static void cmd_remove(char **argv, int argc, bool dealloc)
{
    const char *verb = dealloc ? "DEALLOC" : "UNREG";
    int64_t id;
    if (argc != 2 || !parse_i64(argv[1], &id)) {
        reply("ERR usage: %s <cache_id>", dealloc ? "dealloc" : "unreg");
        return;
    }
    llmlink_status_t st = dealloc ? llmlink_deallocate_cache(g_engine, id)
                                  : llmlink_unregister_cache(g_engine, id);
    node_cache_t *c = cache_find(id);
    if (st == LLMLINK_SUCCESS && c)
        cache_release(c); /* the library no longer uses it */
    reply_status(verb, st, NULL);
}

static void cmd_rmkey(char **argv, int argc)
{
    llmlink_cache_key_t k;
    if (argc != 2 || !parse_key(argv[1], &k)) {
        reply("ERR usage: rmkey <key>");
        return;
    }
    reply_status("RMKEY", llmlink_remove_cache_key(g_engine, &k), NULL);
}

static void cmd_info(char **argv, int argc)
{
    node_cache_t *c;
    if (argc != 2) {
        reply("ERR usage: info <cache_id>");
        return;
    }
    if (!parse_cache_arg(argv[1], "info", &c))
        return;
    reply("INFO %s tensors=%u units=%" PRIu64 " unit_bytes=%" PRIu64 " tensor_bytes=%" PRIu64
          " allocated=%d",
          c->blocks ? "blocks" : "cache", c->ntensors, c->units, c->unit_bytes, c->tensor_bytes,
          c->allocated ? 1 : 0);
}

static void cmd_fill(char **argv, int argc)
{
    node_cache_t *c;
    uint64_t seed;
    if (argc != 3 || !parse_u64(argv[2], &seed)) {
        reply("ERR usage: fill <cache_id> <seed>");
        return;
    }
    if (!parse_cache_arg(argv[1], "fill", &c))
        return;
    cache_fill(c, seed);
    reply("FILL OK");
}

static void cmd_xstats(void)
{
    llmlink_xfer_stats_t s;
    memset(&s, 0, sizeof s);
    s.version = LLMLINK_XFER_STATS_VERSION;
    llmlink_status_t st = llmlink_get_xfer_stats(g_engine, &s);
    if (st != LLMLINK_SUCCESS) {
        reply_status("XSTATS", st, NULL);
        return;
    }
    reply("XSTATS caches=%u transfers=%" PRIu64 " failed=%" PRIu64 " timed_out=%" PRIu64
          " bytes_req=%" PRIu64 " bytes_served=%" PRIu64 " served=%" PRIu64 " refused=%" PRIu64
          " tcp=%" PRIu64 " shm=%" PRIu64 " shm_fallbacks=%" PRIu64 " rdma=%" PRIu64,
          s.caches, s.transfers, s.transfers_failed, s.transfers_timed_out, s.bytes_requested,
          s.bytes_served, s.requests_served, s.requests_refused, s.tcp_requests, s.shm_requests,
          s.shm_fallbacks, s.rdma_requests);
}

/* ------------------------------------------------------------------ */
/* Commands: transfers                                                 */
/* ------------------------------------------------------------------ */

typedef enum { X_PULL_BLOCKS, X_PULL_CACHE, X_PUSH_BLOCKS, X_PUSH_CACHE } xfer_kind_t;

typedef struct xfer_op {
    xfer_kind_t kind;
    llmlink_cache_key_t key;
    int64_t cache_id;   /* dst (pull) or src (push) */
    u64_list_t src, dst; /* blocks */
    uint32_t batch;     /* cache */
    int64_t size;       /* cache */
    bool has_layers;
    llmlink_layer_range_t layers;
} xfer_op_t;

static void xfer_op_free(xfer_op_t *op)
{
    list_free(&op->src);
    list_free(&op->dst);
}

static const char *xfer_verb(xfer_kind_t k)
{
    return k == X_PULL_BLOCKS || k == X_PULL_CACHE ? "PULL" : "PUSH";
}

/* Parses "<verb> <args...>" into op; on failure replies ERR and returns false. */
static bool parse_xfer(char **argv, int argc, xfer_op_t *op)
{
    memset(op, 0, sizeof *op);
    const char *v = argv[0];
    if (!strcmp(v, "pullblocks"))
        op->kind = X_PULL_BLOCKS;
    else if (!strcmp(v, "pullcache"))
        op->kind = X_PULL_CACHE;
    else if (!strcmp(v, "pushblocks"))
        op->kind = X_PUSH_BLOCKS;
    else if (!strcmp(v, "pushcache"))
        op->kind = X_PUSH_CACHE;
    else {
        reply("ERR '%.64s' is not a transfer command", v);
        return false;
    }
    bool blocks = op->kind == X_PULL_BLOCKS || op->kind == X_PUSH_BLOCKS;
    int nargs = argc;
    if (nargs > 5 && opt_value(argv[nargs - 1], "layers")) {
        if (!parse_layers(opt_value(argv[nargs - 1], "layers"), &op->layers)) {
            reply("ERR %s: layers=<s0>:<s1>:<d0>:<d1>:<tensors_per_layer>", v);
            return false;
        }
        op->has_layers = true;
        nargs--;
    }
    if (nargs != 5 || !parse_key(argv[1], &op->key) || !parse_i64(argv[2], &op->cache_id)) {
        reply("ERR usage: %s <key> <cache_id> %s [layers=s0:s1:d0:d1:tpl]", v,
              blocks ? "<src_blocks|-> <dst_blocks>" : "<batch> <size|-1>");
        return false;
    }
    if (blocks) {
        if (!parse_list(argv[3], &op->src) || !parse_list(argv[4], &op->dst)) {
            xfer_op_free(op);
            reply("ERR %s: bad block list (\"-\" or N,A-B,...)", v);
            return false;
        }
    } else if (!parse_u32(argv[3], &op->batch) || !parse_i64(argv[4], &op->size)) {
        reply("ERR %s: bad batch index or size", v);
        return false;
    }
    return true;
}

/* Runs op, with dst blocks shifted by dshift. Thread-safe. */
static llmlink_status_t run_xfer(const xfer_op_t *op, const uint64_t *dst)
{
    const llmlink_layer_range_t *lr = op->has_layers ? &op->layers : NULL;
    switch (op->kind) {
    case X_PULL_BLOCKS:
        return llmlink_pull_blocks(g_engine, &op->key, op->cache_id, op->src.v, op->src.n, dst,
                                   op->dst.n, lr);
    case X_PUSH_BLOCKS:
        return llmlink_push_blocks(g_engine, &op->key, op->cache_id, op->src.v, op->src.n, dst,
                                   op->dst.n, lr);
    case X_PULL_CACHE:
        return llmlink_pull_cache(g_engine, &op->key, op->cache_id, op->batch, op->size, lr);
    case X_PUSH_CACHE:
        return llmlink_push_cache(g_engine, &op->key, op->cache_id, op->batch, op->size, lr);
    }
    return LLMLINK_FAILED;
}

static void cmd_xfer(char **argv, int argc)
{
    xfer_op_t op;
    if (!parse_xfer(argv, argc, &op))
        return;
    llmlink_status_t st = run_xfer(&op, op.dst.v);
    reply_status(xfer_verb(op.kind), st, NULL);
    xfer_op_free(&op);
}

typedef struct loop_thread {
    pthread_t tid;
    const xfer_op_t *op;
    uint64_t *dst; /* shifted copy, or op->dst.v */
    uint64_t count;
    int64_t deadline_ms; /* 0: none */
    uint64_t ok, fail;
    llmlink_status_t fail_status;
    int64_t max_ms;
    char msg[512];
} loop_thread_t;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *loop_main(void *arg)
{
    loop_thread_t *t = arg;
    for (uint64_t i = 0; i < t->count; i++) {
        if (t->deadline_ms && now_ms() >= t->deadline_ms)
            break;
        int64_t t0 = now_ms();
        llmlink_status_t st = run_xfer(t->op, t->dst);
        int64_t ms = now_ms() - t0;
        if (ms > t->max_ms)
            t->max_ms = ms;
        if (st != LLMLINK_SUCCESS) {
            t->fail++;
            t->fail_status = st;
            last_error_copy(t->msg, sizeof t->msg);
            break;
        }
        t->ok++;
    }
    return NULL;
}

/* pullloop <threads> <count> [for=<ms>] [dshift=<n>] <transfer command...> */
static void cmd_pullloop(char **argv, int argc)
{
    uint32_t nthreads;
    uint64_t count, for_ms = 0, dshift = 0;
    if (argc < 4 || !parse_u32(argv[1], &nthreads) || nthreads < 1 || nthreads > MAX_THREADS ||
        !parse_u64(argv[2], &count)) {
        reply("ERR usage: pullloop <threads 1..%d> <count> [for=<ms>] [dshift=<n>] "
              "<pullblocks|pullcache|pushblocks|pushcache> <args...>", MAX_THREADS);
        return;
    }
    int i = 3;
    for (; i < argc && strchr(argv[i], '='); i++) {
        const char *v;
        if ((v = opt_value(argv[i], "for")) && parse_u64(v, &for_ms))
            continue;
        if ((v = opt_value(argv[i], "dshift")) && parse_u64(v, &dshift))
            continue;
        reply("ERR pullloop: bad option '%.64s' (for=<ms>, dshift=<n>)", argv[i]);
        return;
    }
    if (i == argc) {
        reply("ERR pullloop: no transfer command");
        return;
    }
    xfer_op_t op;
    if (!parse_xfer(argv + i, argc - i, &op))
        return;
    loop_thread_t th[MAX_THREADS];
    memset(th, 0, sizeof th);
    int64_t deadline = for_ms ? now_ms() + (int64_t)for_ms : 0;
    uint32_t started = 0;
    bool oom = false;
    for (uint32_t t = 0; t < nthreads; t++) {
        th[t].op = &op;
        th[t].count = count;
        th[t].deadline_ms = deadline;
        th[t].dst = op.dst.v;
        if (dshift && op.dst.n) {
            th[t].dst = malloc(op.dst.n * sizeof *th[t].dst);
            if (!th[t].dst) {
                oom = true;
                break;
            }
            for (size_t k = 0; k < op.dst.n; k++)
                th[t].dst[k] = op.dst.v[k] + (uint64_t)t * dshift;
        }
    }
    for (uint32_t t = 0; !oom && t < nthreads; t++) {
        if (pthread_create(&th[t].tid, NULL, loop_main, &th[t]) != 0)
            break;
        started++;
    }
    for (uint32_t t = 0; t < started; t++)
        pthread_join(th[t].tid, NULL);

    uint64_t ok = 0, fail = 0;
    int64_t max_ms = 0;
    struct {
        llmlink_status_t st;
        uint64_t n;
    } hist[MAX_THREADS];
    size_t nhist = 0;
    const char *first_msg = NULL;
    for (uint32_t t = 0; t < started; t++) {
        ok += th[t].ok;
        fail += th[t].fail;
        if (th[t].max_ms > max_ms)
            max_ms = th[t].max_ms;
        if (!th[t].fail)
            continue;
        if (!first_msg)
            first_msg = th[t].msg;
        size_t h = 0;
        while (h < nhist && hist[h].st != th[t].fail_status)
            h++;
        if (h == nhist) {
            hist[nhist].st = th[t].fail_status;
            hist[nhist++].n = 0;
        }
        hist[h].n++;
    }
    char line[4096];
    size_t off = (size_t)snprintf(line, sizeof line, "LOOP ok=%" PRIu64 " fail=%" PRIu64
                                  " maxms=%" PRId64, ok, fail, max_ms);
    for (uint32_t t = 0; t < started && off < sizeof line; t++)
        off += (size_t)snprintf(line + off, sizeof line - off, "%s%" PRIu64, t ? "," : " per=",
                                th[t].ok);
    for (size_t h = 0; h < nhist && off < sizeof line; h++)
        off += (size_t)snprintf(line + off, sizeof line - off, " %s=%" PRIu64,
                                llmlink_status_name(hist[h].st), hist[h].n);
    if (oom || started < nthreads)
        off += (size_t)snprintf(line + off, off < sizeof line ? sizeof line - off : 0,
                                " node_error=only_%u_threads_started", started);
    if (first_msg && off < sizeof line) {
        snprintf(line + off, sizeof line - off, " | %s", first_msg);
        fprintf(stderr, "llmlink-node %" PRIu64 ": pullloop: %s\n", g_cluster_id, first_msg);
    }
    reply("%s", line);
    for (uint32_t t = 0; t < nthreads; t++)
        if (th[t].dst != op.dst.v)
            free(th[t].dst);
    xfer_op_free(&op);
}

/* ------------------------------------------------------------------ */
/* Commands: verification                                              */
/* ------------------------------------------------------------------ */

/* Destination tensor -> source tensor, from a layers= option (or identity). */
typedef struct tensor_map {
    uint32_t dst_first, dst_count; /* mapped dst tensors */
    uint32_t src_first;
} tensor_map_t;

static bool tensor_map_of(const node_cache_t *c, const llmlink_layer_range_t *lr,
                          tensor_map_t *m, const char *verb)
{
    m->dst_first = 0;
    m->dst_count = c->ntensors;
    m->src_first = 0;
    if (!lr)
        return true;
    uint32_t tpl = lr->tensors_per_layer ? lr->tensors_per_layer : 2;
    bool src_all = lr->src_start == -1 && lr->src_end == -1;
    bool dst_all = lr->dst_start == -1 && lr->dst_end == -1;
    if (!dst_all) {
        if (lr->dst_start < 0 || lr->dst_end < lr->dst_start ||
            (uint64_t)lr->dst_end * tpl > c->ntensors) {
            reply("ERR %s: dst layers %d..%d x %u outside the cache's %u tensors", verb,
                  lr->dst_start, lr->dst_end, tpl, c->ntensors);
            return false;
        }
        m->dst_first = (uint32_t)lr->dst_start * tpl;
        m->dst_count = (uint32_t)(lr->dst_end - lr->dst_start) * tpl;
    }
    if (!src_all) {
        if (lr->src_start < 0 || lr->src_end < lr->src_start) {
            reply("ERR %s: bad src layers %d..%d", verb, lr->src_start, lr->src_end);
            return false;
        }
        m->src_first = (uint32_t)lr->src_start * tpl;
    }
    return true;
}

typedef struct verify_state {
    uint64_t checked, bad; /* ranges (blocks or entries) */
    bool have_first;
    char first[512];
} verify_state_t;

/* Checks one range of dst tensor t against (seed, src_tensor, src_off). */
static void verify_range(verify_state_t *vs, const node_cache_t *c, uint32_t t, uint64_t doff,
                         uint64_t len, uint64_t seed, uint64_t src_tensor, uint64_t src_off,
                         const char *what)
{
    if (len == 0)
        return;
    vs->checked++;
    size_t i = kvfill_check(c->addrs[t] + doff, (size_t)len, seed, src_tensor, src_off);
    if (i == KVFILL_OK)
        return;
    vs->bad++;
    if (vs->have_first)
        return;
    vs->have_first = true;
    snprintf(vs->first, sizeof vs->first,
             "tensor=%u offset=%" PRIu64 " (unit %" PRIu64 " +%" PRIu64 ") got=0x%02x want=0x%02x"
             " (%s: seed %" PRIu64 " tensor %" PRIu64 " offset %" PRIu64 ")",
             t, doff + i, (doff + i) / c->unit_bytes, (doff + i) % c->unit_bytes,
             c->addrs[t][doff + i], kvfill_byte(seed, src_tensor, src_off + i), what, seed,
             src_tensor, src_off + i);
}

static void verify_reply(const verify_state_t *vs)
{
    /* And after the reads: a later write by the engine (a peer's push into
     * the memory just checked) comes after them for TSan too. */
    sync_with_engine();
    if (vs->bad == 0)
        reply("VERIFY OK");
    else
        reply("VERIFY BAD %" PRIu64 " bad of %" PRIu64 " checked; first: %s", vs->bad,
              vs->checked, vs->first);
}

/* verify <id> <seed> */
static void cmd_verify(char **argv, int argc)
{
    sync_with_engine();
    node_cache_t *c;
    uint64_t seed;
    if (argc != 3 || !parse_u64(argv[2], &seed)) {
        reply("ERR usage: verify <cache_id> <seed>");
        return;
    }
    if (!parse_cache_arg(argv[1], "verify", &c))
        return;
    verify_state_t vs;
    memset(&vs, 0, sizeof vs);
    for (uint32_t t = 0; t < c->ntensors; t++)
        for (uint64_t u = 0; u < c->units; u++)
            verify_range(&vs, c, t, u * c->unit_bytes, c->unit_bytes, seed, t, u * c->unit_bytes,
                         "own");
    verify_reply(&vs);
}

/* verifyblocks <dst_cache> <dst_seed> <src_seed> [layers=..] [srcoff=..]
 *              <src_list|-> <dst_list> [...] */
static void cmd_verifyblocks(char **argv, int argc)
{
    sync_with_engine();
    node_cache_t *c;
    uint64_t dseed, sseed, srcoff = 0;
    llmlink_layer_range_t lr;
    bool has_layers = false;
    if (argc < 6 || !parse_u64(argv[2], &dseed) || !parse_u64(argv[3], &sseed)) {
        reply("ERR usage: verifyblocks <dst_cache> <dst_seed> <src_seed> [layers=..] "
              "[srcoff=<bytes>] <src_blocks|-> <dst_blocks> [<src_blocks|-> <dst_blocks>...]");
        return;
    }
    if (!parse_cache_arg(argv[1], "verifyblocks", &c))
        return;
    char *pos[MAX_ARGS];
    int npos = 0;
    for (int i = 4; i < argc; i++) {
        const char *v;
        if ((v = opt_value(argv[i], "layers"))) {
            if (!parse_layers(v, &lr)) {
                reply("ERR verifyblocks: bad layers=");
                return;
            }
            has_layers = true;
        } else if ((v = opt_value(argv[i], "srcoff"))) {
            if (!parse_u64(v, &srcoff)) {
                reply("ERR verifyblocks: bad srcoff=");
                return;
            }
        } else {
            pos[npos++] = argv[i];
        }
    }
    if (npos == 0 || npos % 2) {
        reply("ERR verifyblocks: block lists come in <src> <dst> pairs");
        return;
    }
    tensor_map_t m;
    if (!tensor_map_of(c, has_layers ? &lr : NULL, &m, "verifyblocks"))
        return;
    /* src_of[b]: the source byte offset dst block b must hold, or -1 (own). */
    int64_t *src_of = malloc(c->units * sizeof *src_of);
    if (!src_of) {
        reply("ERR verifyblocks: out of memory");
        return;
    }
    for (uint64_t b = 0; b < c->units; b++)
        src_of[b] = -1;
    for (int p = 0; p < npos; p += 2) {
        u64_list_t sl, dl;
        if (!parse_list(pos[p], &sl) || !parse_list(pos[p + 1], &dl) ||
            (sl.v && sl.n != dl.n) || !dl.v) {
            list_free(&sl);
            list_free(&dl);
            free(src_of);
            reply("ERR verifyblocks: pair %d: bad lists or lengths differ", p / 2);
            return;
        }
        for (size_t j = 0; j < dl.n; j++) {
            uint64_t b = dl.v[j];
            if (b >= c->units || src_of[b] >= 0) {
                reply("ERR verifyblocks: dst block %" PRIu64 " %s", b,
                      b >= c->units ? "past the end" : "listed twice");
                list_free(&sl);
                list_free(&dl);
                free(src_of);
                return;
            }
            src_of[b] = (int64_t)(sl.v ? sl.v[j] * c->unit_bytes : srcoff + j * c->unit_bytes);
        }
        list_free(&sl);
        list_free(&dl);
    }
    verify_state_t vs;
    memset(&vs, 0, sizeof vs);
    for (uint32_t t = 0; t < c->ntensors; t++) {
        bool mapped = t >= m.dst_first && t < m.dst_first + m.dst_count;
        uint64_t st = m.src_first + (t - m.dst_first);
        for (uint64_t b = 0; b < c->units; b++) {
            uint64_t off = b * c->unit_bytes;
            if (mapped && src_of[b] >= 0)
                verify_range(&vs, c, t, off, c->unit_bytes, sseed, st, (uint64_t)src_of[b],
                             "from source");
            else
                verify_range(&vs, c, t, off, c->unit_bytes, dseed, t, off, "own, untouched");
        }
    }
    free(src_of);
    verify_reply(&vs);
}

/* verifycache <dst_cache> <dst_seed> <src_seed> <dst_batch> <src_off> <size|-1> [layers=..] */
static void cmd_verifycache(char **argv, int argc)
{
    sync_with_engine();
    node_cache_t *c;
    uint64_t dseed, sseed, batch, srcoff;
    int64_t size;
    llmlink_layer_range_t lr;
    bool has_layers = argc == 8 && opt_value(argv[7], "layers");
    if ((argc != 7 && !has_layers) || !parse_u64(argv[2], &dseed) ||
        !parse_u64(argv[3], &sseed) || !parse_u64(argv[4], &batch) ||
        !parse_u64(argv[5], &srcoff) || !parse_i64(argv[6], &size) ||
        (has_layers && !parse_layers(opt_value(argv[7], "layers"), &lr))) {
        reply("ERR usage: verifycache <dst_cache> <dst_seed> <src_seed> <dst_batch> <src_off> "
              "<size|-1> [layers=..]");
        return;
    }
    if (!parse_cache_arg(argv[1], "verifycache", &c))
        return;
    uint64_t n = size < 0 ? c->unit_bytes : (uint64_t)size;
    if (batch >= c->units || n > c->unit_bytes) {
        reply("ERR verifycache: batch %" PRIu64 " / size %" PRIu64 " outside the cache", batch, n);
        return;
    }
    tensor_map_t m;
    if (!tensor_map_of(c, has_layers ? &lr : NULL, &m, "verifycache"))
        return;
    verify_state_t vs;
    memset(&vs, 0, sizeof vs);
    for (uint32_t t = 0; t < c->ntensors; t++) {
        bool mapped = t >= m.dst_first && t < m.dst_first + m.dst_count;
        uint64_t st = m.src_first + (t - m.dst_first);
        for (uint64_t u = 0; u < c->units; u++) {
            uint64_t off = u * c->unit_bytes;
            if (mapped && u == batch) {
                verify_range(&vs, c, t, off, n, sseed, st, srcoff, "from source");
                verify_range(&vs, c, t, off + n, c->unit_bytes - n, dseed, t, off + n,
                             "own, past size");
            } else {
                verify_range(&vs, c, t, off, c->unit_bytes, dseed, t, off, "own, untouched");
            }
        }
    }
    verify_reply(&vs);
}

/* ------------------------------------------------------------------ */
/* Dispatch                                                            */
/* ------------------------------------------------------------------ */

/* Returns false on quit. */
static bool handle_line(char *line)
{
    static char *argv[MAX_ARGS];
    int argc = 0;
    char *save = NULL;
    for (char *tok = strtok_r(line, " \t\r", &save); tok; tok = strtok_r(NULL, " \t\r", &save)) {
        if (argc == MAX_ARGS) {
            reply("ERR too many arguments (at most %d)", MAX_ARGS);
            return true;
        }
        argv[argc++] = tok;
    }
    if (argc == 0) {
        reply("ERR empty command");
        return true;
    }
    const char *cmd = argv[0];
    if (!strcmp(cmd, "link"))
        cmd_link(argv, argc);
    else if (!strcmp(cmd, "unlink"))
        cmd_unlink(argv, argc);
    else if (!strcmp(cmd, "check"))
        cmd_check(argv, argc);
    else if (!strcmp(cmd, "stats") && argc == 1)
        cmd_stats();
    else if (!strcmp(cmd, "reg"))
        cmd_reg_or_alloc(argv, argc, false);
    else if (!strcmp(cmd, "alloc"))
        cmd_reg_or_alloc(argv, argc, true);
    else if (!strcmp(cmd, "unreg"))
        cmd_remove(argv, argc, false);
    else if (!strcmp(cmd, "dealloc"))
        cmd_remove(argv, argc, true);
    else if (!strcmp(cmd, "rmkey"))
        cmd_rmkey(argv, argc);
    else if (!strcmp(cmd, "info"))
        cmd_info(argv, argc);
    else if (!strcmp(cmd, "fill"))
        cmd_fill(argv, argc);
    else if (!strcmp(cmd, "pullblocks") || !strcmp(cmd, "pullcache") ||
             !strcmp(cmd, "pushblocks") || !strcmp(cmd, "pushcache"))
        cmd_xfer(argv, argc);
    else if (!strcmp(cmd, "pullloop"))
        cmd_pullloop(argv, argc);
    else if (!strcmp(cmd, "xstats") && argc == 1)
        cmd_xstats();
    else if (!strcmp(cmd, "verify"))
        cmd_verify(argv, argc);
    else if (!strcmp(cmd, "verifyblocks"))
        cmd_verifyblocks(argv, argc);
    else if (!strcmp(cmd, "verifycache"))
        cmd_verifycache(argv, argc);
    else if (!strcmp(cmd, "ping") && argc == 1)
        reply("PONG");
    else if (!strcmp(cmd, "quit") && argc == 1)
        return false;
    else
        reply("ERR unknown command '%.64s' (link, unlink, check, stats, reg, alloc, unreg, "
              "dealloc, rmkey, info, fill, pullblocks, pullcache, pushblocks, pushcache, "
              "pullloop, xstats, verify, verifyblocks, verifycache, ping, quit)", cmd);
    return true;
}

static void usage_exit(const char *why)
{
    printf("ERR %s; usage: llmlink-node --role prompt|decoder|mix --cluster-id N "
           "[--listen ip:port] [--opt key=value]... [--uid N]\n", why);
    fflush(stdout);
    exit(2);
}

/* --uid: become uid/gid n before anything else exists. */
static void drop_to_uid(uint64_t n)
{
    pid_t parent = getppid();
    if (setgroups(0, NULL) != 0 || setresgid((gid_t)n, (gid_t)n, (gid_t)n) != 0 ||
        setresuid((uid_t)n, (uid_t)n, (uid_t)n) != 0) {
        printf("ERR --uid %" PRIu64 ": %s\n", n, strerror(errno));
        fflush(stdout);
        exit(1);
    }
    /* A credential change clears the parent-death signal: set it again. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        exit(1);
}

int main(int argc, char **argv)
{
    llmlink_option_t opts[MAX_OPTS + 1];
    size_t nopts = 0;
    llmlink_role_t role = 0;
    bool have_id = false, have_uid = false;
    uint64_t uid = 0;
    const char *listen = NULL;

    /* A reader that went away must not kill us mid-destroy. */
    signal(SIGPIPE, SIG_IGN);

    for (int i = 1; i < argc; i += 2) { /* every flag takes a value */
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--role")) {
            role = parse_role(v);
            if (!role)
                usage_exit("--role needs prompt, decoder or mix");
        } else if (!strcmp(a, "--cluster-id")) {
            if (!parse_u64(v, &g_cluster_id))
                usage_exit("--cluster-id needs an unsigned integer");
            have_id = true;
        } else if (!strcmp(a, "--listen")) {
            if (!v || !*v)
                usage_exit("--listen needs ip:port");
            listen = v;
        } else if (!strcmp(a, "--uid")) {
            if (!parse_u64(v, &uid) || uid > UINT32_MAX - 1)
                usage_exit("--uid needs a uid");
            have_uid = true;
        } else if (!strcmp(a, "--opt")) {
            char *eq = v ? strchr(v, '=') : NULL;
            if (!eq || eq == v)
                usage_exit("--opt needs key=value");
            if (nopts == MAX_OPTS)
                usage_exit("too many --opt");
            *eq = '\0';
            opts[nopts].key = v;
            opts[nopts].value = eq + 1;
            nopts++;
        } else {
            usage_exit("unknown argument");
        }
    }
    if (!role || !have_id)
        usage_exit("--role and --cluster-id are required");
    if (listen) {
        opts[nopts].key = "llm.listenIpInfo";
        opts[nopts].value = listen;
        nopts++;
    }
    if (have_uid)
        drop_to_uid(uid);

    llmlink_status_t st = llmlink_create(&g_engine, role, g_cluster_id);
    if (st == LLMLINK_SUCCESS)
        st = llmlink_init(g_engine, opts, nopts);
    if (st != LLMLINK_SUCCESS) {
        printf("ERR init %s: %s\n", llmlink_status_name(st), llmlink_last_error());
        fflush(stdout);
        llmlink_destroy(g_engine);
        return 1;
    }
    uint16_t port = 0;
    if (listen && role != LLMLINK_ROLE_DECODER &&
        llmlink_get_listen_port(g_engine, 0, &port) != LLMLINK_SUCCESS) {
        printf("ERR get_listen_port: %s\n", llmlink_last_error());
        fflush(stdout);
        llmlink_destroy(g_engine);
        return 1;
    }
    reply("READY port=%u", (unsigned)port);

    static char line[LINE_MAX_LEN + 2];
    bool discarding = false;
    bool bye = false;
    while (fgets(line, sizeof line, stdin)) {
        size_t len = strlen(line);
        bool whole = len > 0 && line[len - 1] == '\n';
        if (discarding) {
            /* Rest of an overlong line. */
            if (whole)
                discarding = false;
            continue;
        }
        if (!whole && len == sizeof line - 1) {
            discarding = true;
            reply("ERR line longer than %d bytes", LINE_MAX_LEN);
            continue;
        }
        if (whole)
            line[--len] = '\0';
        if (!handle_line(line)) {
            bye = true;
            break;
        }
    }
    llmlink_destroy(g_engine);
    g_engine = NULL;
    for (size_t i = 0; i < MAX_CACHES; i++)
        if (g_caches[i].used)
            cache_release(&g_caches[i]);
    if (bye)
        reply("BYE");
    return 0;
}
