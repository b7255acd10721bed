/* metrics: mxd's counters and histograms, and their rendering as
 * Prometheus text (exposition format 0.0.4). Pure: no I/O. */
#ifndef MXD_METRICS_H
#define MXD_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Plain counters and gauges: id, name, type, help. */
#define METRICS_COUNTERS(X)                                                                        \
    X(CONNECTIONS_TOTAL, "mxd_connections_total", "counter", "SMTP connections accepted")          \
    X(CONNECTIONS_OPEN, "mxd_connections_open", "gauge", "SMTP connections open now")              \
    X(MESSAGES_ACCEPTED, "mxd_messages_accepted_total", "counter",                                 \
      "Messages committed to the queue and answered 250")                                          \
    X(BYTES_ACCEPTED, "mxd_bytes_accepted_total", "counter", "Octets of accepted messages")        \
    X(MESSAGES_ACCEPTED_TLS, "mxd_messages_accepted_tls_total", "counter",                         \
      "Messages committed and answered 250 that came over TLS (STARTTLS)")                         \
    X(RELOADS, "mxd_config_reloads_total", "counter", "Configuration reloads that took effect")    \
    X(RELOAD_FAILURES, "mxd_config_reload_failures_total", "counter",                              \
      "Configuration reloads refused (the old configuration stayed)")                              \
    X(DNS_QUERIES, "mxd_dns_queries_total", "counter", "DNS queries asked of mxd's resolver")      \
    X(DNS_CACHE_HITS, "mxd_dns_cache_hits_total", "counter",                                       \
      "DNS queries an earlier answer's TTL still covered (answered from the resolver's cache "     \
      "unless it evicted them)")                                                                   \
    X(DNS_TIMEOUTS, "mxd_dns_timeouts_total", "counter",                                           \
      "DNS queries that got no answer within their time")                                          \
    X(SCREEN_RECORDED, "mxd_screen_passes_recorded_total", "counter",                              \
      "Screening passes written to the store (clients remembered for screen_ttl)")                 \
    X(STORE_COMMIT_FAILURES, "mxd_store_commit_failures_total", "counter",                         \
      "Messages whose commit to the queue failed (disk full, I/O error): the client got 451")      \
    X(STORE_BODY_FILES_MISSING, "mxd_store_body_files_missing_total", "counter",                   \
      "Queued messages whose body file (bodies/ beside the database) was missing at start-up")     \
    X(TLS_CERT_EXPIRY, "mxd_tls_certificate_expiry_timestamp_seconds", "gauge",                    \
      "When the TLS certificate in use expires, unix seconds (0: no certificate)")                 \
    X(BOUNCES_SUPPRESSED, "mxd_bounces_suppressed_total", "counter",                               \
      "DSNs not sent: bounce_policy (never, or authenticated and the return path was not)")        \
    X(CLUSTER_TAKEOVERS, "mxd_cluster_takeovers_total", "counter",                                 \
      "Recipients claimed from another cluster node's expired lease")                              \
    X(CLUSTER_DUPLICATES, "mxd_cluster_duplicates_total", "counter",                               \
      "Recipients taken over and then delivered: possibly delivered twice")
#define METRICS_C_ENUM(id, ...) METRICS_##id,
enum metrics_counter { METRICS_COUNTERS(METRICS_C_ENUM) METRICS_NCOUNTERS };
#undef METRICS_C_ENUM

/* Counters with one or two labels: id, name, label names, help. */
#define METRICS_FAMILIES(X)                                                                        \
    X(SESSIONS_REJECTED, "mxd_sessions_rejected_total", "reason", NULL,                            \
      "SMTP sessions refused or ended by mxd, by reason")                                          \
    X(RECIPIENTS_REJECTED, "mxd_recipients_rejected_total", "status", NULL,                        \
      "RCPT commands refused, by enhanced status code")                                            \
    X(RATE_LIMITED, "mxd_rate_limited_total", "rule", NULL,                                        \
      "Connections, MAIL and RCPT commands refused by a per-client rate limit, by rule")           \
    X(DELIVERY_ATTEMPTS, "mxd_delivery_attempts_total", "outcome", "destination",                  \
      "Delivery attempts per recipient, by outcome and destination")                               \
    X(OUTBOUND_TLS, "mxd_outbound_tls_total", "policy", "result",                                  \
      "Outbound STARTTLS outcomes per connection, by the policy that applied (dane, verify, "      \
      "required, opportunistic) and result (verified, encrypted, plain, failed, deferred)")        \
    X(PROXY_HEADERS, "mxd_proxy_headers_total", "result", "reason",                                \
      "PROXY protocol headers on listeners marked proxy: accepted (by version and command) "       \
      "or refused (by reason)")                                                                    \
    X(GREYLIST, "mxd_greylist_total", "action", NULL,                                              \
      "Greylisting decisions at RCPT, by action (defer, pass, skip, error)")                       \
    X(DNSBL, "mxd_dnsbl_total", "result", NULL,                                                    \
      "DNSBL screening decisions per connection, by result (pass, listed, trusted, skip, "         \
      "known)")                                                                                    \
    X(DNSBL_LISTS, "mxd_dnsbl_list_answers_total", "list", "result",                               \
      "Answers of each DNSBL or DNSWL (its public name), by result (listed, clean, error, "        \
      "timeout)")                                                                                  \
    X(FCRDNS, "mxd_fcrdns_total", "result", NULL,                                                  \
      "Forward-confirmed reverse DNS of clients, by result (confirmed, unconfirmed, tempfail)")    \
    X(MILTER, "mxd_milter_events_total", "filter", "event",                                        \
      "Content filter (milter) replies and failures, by filter and event")                         \
    X(DNS_ANSWERS, "mxd_dns_answers_total", "result", NULL,                                        \
      "DNS queries answered by mxd's resolver, by result (ok, nodata, nxdomain, servfail, "        \
      "timeout)")                                                                                  \
    X(PREGREET, "mxd_pregreet_total", "result", NULL,                                              \
      "Pre-greet tests: pass, fail (talked early), hangup, allowlisted (a DNSWL ended the "        \
      "wait), or skipped: known (remembered) or trusted")                                          \
    X(SCREEN_LOOKUPS, "mxd_screen_lookups_total", "source", "result",                              \
      "Lookups in the screening's memory, by where they were answered (cache, store) and "         \
      "what (known, unknown, error)")                                                              \
    X(RCPT_SYNCS, "mxd_recipient_syncs_total", "result", NULL,                                     \
      "Reads of recipients_source lists (recipients = sync), by result (changed, unchanged, "      \
      "failed)")                                                                                   \
    X(RCPT_UNSURE, "mxd_recipients_unsure_total", "reason", NULL,                                  \
      "RCPT answered 450 4.1.1 because the backup could not know: stale (the synced list is "      \
      "older than recipients_max_age), unverified (the primary cannot be asked and never "         \
      "answered for the address)")
#define METRICS_F_ENUM(id, ...) METRICS_F_##id,
enum metrics_family { METRICS_FAMILIES(METRICS_F_ENUM) METRICS_NFAMILIES };
#undef METRICS_F_ENUM

/* Histograms: id, name, help, scale (values are kept as integers of
 * 1/scale: microseconds for seconds), then the bucket bounds. */
#define METRICS_HISTOGRAMS(X)                                                                      \
    X(BATCH_SIZE, "mxd_store_batch_size", "Messages per group commit", 1, 1, 2, 4, 8, 16, 32, 64,  \
      128, 256, 512)                                                                               \
    X(COMMIT_SECONDS, "mxd_store_commit_seconds",                                                  \
      "Time from BEGIN to a durable COMMIT of one group commit", 1000000, 0.0005, 0.001, 0.0025,   \
      0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)                                                      \
    X(DNS_SECONDS, "mxd_dns_lookup_seconds", "Time from a DNS query to its answer or timeout",     \
      1000000, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)              \
    X(SPF_SECONDS, "mxd_spf_check_seconds", "Whole SPF checks, all their DNS queries included",    \
      1000000, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)                              \
    X(MILTER_SECONDS, "mxd_milter_reply_seconds",                                                  \
      "Time from a stage's command (connect, HELO, MAIL, RCPT, end of message) to a content "      \
      "filter's final reply, all filters",                                                         \
      1000000, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30)
#define METRICS_H_ENUM(id, ...) METRICS_H_##id,
enum metrics_histogram { METRICS_HISTOGRAMS(METRICS_H_ENUM) METRICS_NHISTOGRAMS };
#undef METRICS_H_ENUM

#define METRICS_LABEL_MAX  128 /* octets of one label value; longer ones are cut */
#define METRICS_SERIES_MAX 256 /* label sets per family; the rest count as "other" */

/* Any thread. n may be negative for gauges. */
void metrics_add(enum metrics_counter c, int64_t n);
/* Any thread: a gauge's value. */
void metrics_set(enum metrics_counter c, int64_t v);
uint64_t metrics_get(enum metrics_counter c);

/* One more for the series (l1[, l2]); l2 is NULL for one-label families.
 * Loop thread only (the label table is not locked). */
void metrics_count(enum metrics_family f, const char *l1, const char *l2);
/* The series' value, 0 when it was never counted. Loop thread. */
uint64_t metrics_count_get(enum metrics_family f, const char *l1, const char *l2);

/* A 4xx/5xx reply the SMTP protocol sent for verb (reply = "550 5.7.1
 * ...", len octets): RCPT refusals count by their enhanced status code
 * (RFC 3463), a 421 as a session ended for protocol errors. Loop thread. */
void metrics_smtp_reject(const char *verb, int code, const char *reply, size_t len);

/* Any thread: records one observation (seconds, or a count). */
void metrics_observe(enum metrics_histogram h, double value);

/* Queue gauges, read from the database off the loop (qstat). */
struct metrics_queue_row {
    char domain[256];
    char state[16];
    uint64_t recipients;
    int64_t oldest_received; /* held rows: the oldest message's arrival; else 0 */
};

struct metrics_queue {
    bool valid; /* false: the query failed; no queue gauges are shown */
    uint64_t messages;
    int64_t oldest_received; /* unix seconds; 0 when the queue is empty */
    int64_t now;
    struct metrics_queue_row *rows;
    size_t nrows;
};

/* The configured lifetime of each backup domain (mxd_domain_lifetime_seconds,
 * beside the held mail's age): replaces the previous list, names copied.
 * Loop thread. */
void metrics_set_lifetimes(const char *const *domains, const uint64_t *seconds, size_t n);

/* The whole exposition (caller frees); q may be NULL (no queue gauges). */
char *metrics_render(const struct metrics_queue *q);

/* For tests: every value back to zero, label tables emptied. */
void metrics_reset(void);

#endif
