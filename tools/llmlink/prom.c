/*
 * prom.c - one engine's llmlink_metrics_t and links in the Prometheus text
 * exposition format (version 0.0.4). docs/metrics.md lists every name.
 *
 * Conventions: counters end in _total, sizes in bytes (_bytes_total),
 * durations in seconds (a histogram with cumulative le buckets, _sum,
 * _count); every label value is an enum's name (llmlink_metrics_label),
 * and every value an enum has is exported, zero or not, so that rate()
 * sees a series from its first increment. Per-link series carry
 * cluster_id and side (outbound / inbound).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static void head(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static const char *label(llmlink_metrics_label_kind_t k, uint32_t v)
{
    return llmlink_metrics_label(k, v);
}

/* The values of an enum: 0.. while it has a name. */
static uint32_t count_of(llmlink_metrics_label_kind_t k)
{
    uint32_t n = 0;
    while (label(k, n))
        n++;
    return n;
}

static void by_reason(FILE *f, const char *name, const char *help,
                      llmlink_metrics_label_kind_t k, const uint64_t *v)
{
    head(f, name, "counter", help);
    for (uint32_t i = 0; i < count_of(k); i++)
        fprintf(f, "%s{reason=\"%s\"} %" PRIu64 "\n", name, label(k, i), v[i]);
}

static void plain(FILE *f, const char *name, const char *type, const char *help, uint64_t v)
{
    head(f, name, type, help);
    fprintf(f, "%s %" PRIu64 "\n", name, v);
}

static void links_and_handshakes(FILE *f, const llmlink_metrics_t *m)
{
    plain(f, "llmlink_links_up", "gauge", "Established links now, both directions.", m->links_up);
    head(f, "llmlink_links_established_total", "counter",
         "Links made, by which end made them (side).");
    for (uint32_t s = 0; s < count_of(LLMLINK_LABEL_LINK_DIR); s++)
        fprintf(f, "llmlink_links_established_total{side=\"%s\"} %" PRIu64 "\n",
                label(LLMLINK_LABEL_LINK_DIR, s), m->links_established[s]);
    by_reason(f, "llmlink_links_closed_total", "Links ended, by reason.",
              LLMLINK_LABEL_CLOSE_REASON, m->links_closed);
    plain(f, "llmlink_handshakes_ok_total", "counter",
          "Inbound handshakes that made a link.", m->handshakes_ok);
    by_reason(f, "llmlink_handshakes_refused_total",
              "Inbound handshakes and data-stream attaches refused, by reason.",
              LLMLINK_LABEL_REFUSE_REASON, m->handshakes_refused);
    plain(f, "llmlink_handshakes_timed_out_total", "counter",
          "Inbound connections dropped before their handshake completed.",
          m->handshakes_timed_out);
    by_reason(f, "llmlink_link_failures_total",
              "Clusters of this engine's link calls that did not link, by reason.",
              LLMLINK_LABEL_REFUSE_REASON, m->link_failures);
    plain(f, "llmlink_protocol_errors_total", "counter",
          "Connections dropped for malformed frames.", m->protocol_errors);
}

static void transfers(FILE *f, const llmlink_metrics_t *m)
{
    uint32_t nd = count_of(LLMLINK_LABEL_DIR), nt = count_of(LLMLINK_LABEL_TRANSPORT),
             nr = count_of(LLMLINK_LABEL_RESULT);
    head(f, "llmlink_transfers_total", "counter",
         "This engine's transfer calls, by direction, transport and final status.");
    for (uint32_t d = 0; d < nd; d++)
        for (uint32_t t = 0; t < nt; t++)
            for (uint32_t r = 0; r < nr; r++)
                fprintf(f, "llmlink_transfers_total{direction=\"%s\",transport=\"%s\","
                           "status=\"%s\"} %" PRIu64 "\n",
                        label(LLMLINK_LABEL_DIR, d), label(LLMLINK_LABEL_TRANSPORT, t),
                        label(LLMLINK_LABEL_RESULT, r), m->transfers[d][t][r]);
    head(f, "llmlink_transfer_bytes_total", "counter",
         "Payload bytes of this engine's successful transfers.");
    for (uint32_t d = 0; d < nd; d++)
        for (uint32_t t = 0; t < nt; t++)
            fprintf(f, "llmlink_transfer_bytes_total{direction=\"%s\",transport=\"%s\"} %" PRIu64
                       "\n", label(LLMLINK_LABEL_DIR, d), label(LLMLINK_LABEL_TRANSPORT, t),
                    m->bytes[d][t]);
    head(f, "llmlink_transfer_duration_seconds", "histogram",
         "Durations of this engine's transfer calls (any status).");
    for (uint32_t d = 0; d < nd; d++) {
        const char *dn = label(LLMLINK_LABEL_DIR, d);
        uint64_t cum = 0;
        for (size_t b = 0; b < LLMLINK_METRICS_BUCKETS; b++) {
            cum += m->latency_buckets[d][b];
            fprintf(f, "llmlink_transfer_duration_seconds_bucket{direction=\"%s\",le=\"%.9g\"} %"
                       PRIu64 "\n", dn, llmlink_metrics_bucket_bound_seconds(b), cum);
        }
        fprintf(f, "llmlink_transfer_duration_seconds_bucket{direction=\"%s\",le=\"+Inf\"} %"
                   PRIu64 "\n", dn, m->latency_count[d]);
        fprintf(f, "llmlink_transfer_duration_seconds_sum{direction=\"%s\"} %.9f\n", dn,
                (double)m->latency_sum_ns[d] / 1e9);
        fprintf(f, "llmlink_transfer_duration_seconds_count{direction=\"%s\"} %" PRIu64 "\n", dn,
                m->latency_count[d]);
    }
}

static void served_tasks_notifies(FILE *f, const llmlink_metrics_t *m)
{
    plain(f, "llmlink_peer_requests_served_total", "counter",
          "Peers' transfer requests this engine served.", m->requests_served);
    plain(f, "llmlink_peer_requests_refused_total", "counter",
          "Peers' transfer requests this engine refused.", m->requests_refused);
    plain(f, "llmlink_tasks_submitted_total", "counter", "Asynchronous transfer tasks submitted.",
          m->tasks_submitted);
    plain(f, "llmlink_tasks_cancelled_total", "counter", "Tasks that ended cancelled.",
          m->tasks_cancelled);
    plain(f, "llmlink_notifications_sent_total", "counter",
          "Notifications this engine sent that the peer queued.", m->notifies_sent);
    plain(f, "llmlink_notifications_received_total", "counter",
          "Notifications received and queued here.", m->notifies_received);
    plain(f, "llmlink_notifications_refused_full_total", "counter",
          "Notifications refused because a queue was full.", m->notifies_refused_full);
}

/* A label value as the format wants it: \, " and newline escaped. */
static void quoted(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            fputc('\\', f);
        if (*s == '\n') {
            fputs("\\n", f);
            continue;
        }
        fputc(*s, f);
    }
    fputc('"', f);
}

static void link_labels(FILE *f, const llmlink_link_info_t *l)
{
    fprintf(f, "cluster_id=\"%" PRIu64 "\",side=\"%s\"", l->cluster_id,
            label(LLMLINK_LABEL_LINK_DIR, l->direction));
}

static void links(FILE *f, const llmlink_link_info_t *li, size_t n)
{
    head(f, "llmlink_link_info", "gauge", "One series per live link: its transport and peer.");
    for (size_t i = 0; i < n; i++) {
        const char *t = label(LLMLINK_LABEL_TRANSPORT, li[i].transport);
        fprintf(f, "llmlink_link_info{");
        link_labels(f, &li[i]);
        fprintf(f, ",transport=\"%s\",peer=", t ? t : "none");
        quoted(f, li[i].peer);
        fprintf(f, "} 1\n");
    }
    head(f, "llmlink_link_up_since_seconds", "gauge", "When each live link was made (Unix time).");
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "llmlink_link_up_since_seconds{");
        link_labels(f, &li[i]);
        fprintf(f, "} %.3f\n", (double)li[i].up_since_ms / 1000.0);
    }
    head(f, "llmlink_link_streams", "gauge", "Data streams this engine requests on, per link.");
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "llmlink_link_streams{");
        link_labels(f, &li[i]);
        fprintf(f, "} %u\n", li[i].streams);
    }
    head(f, "llmlink_link_transfer_bytes_total", "counter",
         "Payload bytes of this engine's successful transfers over each link.");
    for (size_t i = 0; i < n; i++)
        for (int d = 0; d < 2; d++) {
            fprintf(f, "llmlink_link_transfer_bytes_total{");
            link_labels(f, &li[i]);
            fprintf(f, ",direction=\"%s\"} %" PRIu64 "\n", d ? "push" : "pull",
                    d ? li[i].bytes_pushed : li[i].bytes_pulled);
        }
    head(f, "llmlink_link_transfers_total", "counter",
         "This engine's transfer calls over each link: success, or any other status (failed).");
    for (size_t i = 0; i < n; i++)
        for (int s = 0; s < 2; s++) {
            fprintf(f, "llmlink_link_transfers_total{");
            link_labels(f, &li[i]);
            fprintf(f, ",status=\"%s\"} %" PRIu64 "\n", s ? "failed" : "success",
                    s ? li[i].transfers_failed : li[i].transfers_ok);
        }
    head(f, "llmlink_link_peer_bytes_total", "counter",
         "Bytes the peer's requests read from / wrote into this engine's caches.");
    for (size_t i = 0; i < n; i++)
        for (int d = 0; d < 2; d++) {
            fprintf(f, "llmlink_link_peer_bytes_total{");
            link_labels(f, &li[i]);
            fprintf(f, ",access=\"%s\"} %" PRIu64 "\n", d ? "write" : "read",
                    d ? li[i].peer_write_bytes : li[i].peer_read_bytes);
        }
    head(f, "llmlink_link_requests_fenced_total", "counter",
         "The peer's admitted requests that ended unfinished (fenced), per link.");
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "llmlink_link_requests_fenced_total{");
        link_labels(f, &li[i]);
        fprintf(f, "} %" PRIu64 "\n", li[i].requests_fenced);
    }
}

/* A link's per-link series with one more label, per RDMA rail: rail="0".. */
static void rail_labels(FILE *f, const llmlink_link_info_t *l, uint32_t rail)
{
    link_labels(f, l);
    fprintf(f, ",rail=\"%u\"", rail);
}

/* The RDMA rails of each link (llmlink_link_info_t version 2): every link
 * has the per-link series (0 without RDMA), each of its rails the per-rail
 * ones. */
static void rails(FILE *f, const llmlink_link_info_t *li, size_t n)
{
    head(f, "llmlink_link_rdma_rails", "gauge", "RDMA rails of each link (0: no RDMA).");
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "llmlink_link_rdma_rails{");
        link_labels(f, &li[i]);
        fprintf(f, "} %u\n", li[i].rdma_rails);
    }
    head(f, "llmlink_link_rdma_rails_up", "gauge",
         "RDMA rails of each link usable now (the others failed and wait to be re-established).");
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "llmlink_link_rdma_rails_up{");
        link_labels(f, &li[i]);
        fprintf(f, "} %u\n", li[i].rdma_rails_up);
    }
    head(f, "llmlink_link_rdma_rail_failovers_total", "counter",
         "RDMA rails that failed under a transfer whose work went on over the other rails, "
         "per link.");
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "llmlink_link_rdma_rail_failovers_total{");
        link_labels(f, &li[i]);
        fprintf(f, "} %" PRIu64 "\n", li[i].rdma_rail_failovers);
    }
    head(f, "llmlink_link_rdma_rail_repairs_total", "counter",
         "Failed RDMA rails re-established without relinking, per link.");
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "llmlink_link_rdma_rail_repairs_total{");
        link_labels(f, &li[i]);
        fprintf(f, "} %" PRIu64 "\n", li[i].rdma_rail_repairs);
    }
    head(f, "llmlink_link_rdma_rail_bytes_total", "counter",
         "Bytes this engine's requests moved over each RDMA rail of each link.");
    for (size_t i = 0; i < n; i++)
        for (uint32_t r = 0; r < li[i].rdma_rails && r < LLMLINK_MAX_RDMA_RAILS; r++) {
            fprintf(f, "llmlink_link_rdma_rail_bytes_total{");
            rail_labels(f, &li[i], r);
            fprintf(f, "} %" PRIu64 "\n", li[i].rdma_rail_bytes[r]);
        }
    head(f, "llmlink_link_rdma_rail_mtu_bytes", "gauge",
         "Path MTU of each RDMA rail of each link, in bytes.");
    for (size_t i = 0; i < n; i++)
        for (uint32_t r = 0; r < li[i].rdma_rails && r < LLMLINK_MAX_RDMA_RAILS; r++) {
            fprintf(f, "llmlink_link_rdma_rail_mtu_bytes{");
            rail_labels(f, &li[i], r);
            fprintf(f, "} %u\n", li[i].rdma_rail_mtu[r]);
        }
}

void cli_prom_render(FILE *f, const llmlink_metrics_t *m, const llmlink_link_info_t *li,
                     size_t nlinks)
{
    links_and_handshakes(f, m);
    transfers(f, m);
    served_tasks_notifies(f, m);
    links(f, li, nlinks);
    rails(f, li, nlinks);
}
