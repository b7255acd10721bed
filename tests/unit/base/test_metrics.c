/* Unit tests for metrics: counters, labelled families (escaping, the
 * series bound), histograms (cumulative buckets, sum, count), the SMTP
 * reject classification, the queue gauges, and that the whole rendering
 * is well-formed Prometheus text (format 0.0.4). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/metrics.h"

static int
reset(void **state)
{
    (void)state;
    metrics_reset();
    return 0;
}

/* The rendering contains this exact line. */
static void
assert_line(const char *text, const char *line)
{
    size_t n = strlen(line);

    for (const char *p = text; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p ? p + 1 : p) {
        if (strncmp(p, line, n) == 0 && (p[n] == '\n' || p[n] == '\0'))
            return;
    }
    fail_msg("line not found: %s\n--- in:\n%s", line, text);
}

static void
assert_no_line_prefix(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);

    for (const char *p = text; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p ? p + 1 : p) {
        if (strncmp(p, prefix, n) == 0)
            fail_msg("unexpected line starting %s", prefix);
    }
}

/* Exposition format: every sample's metric name was declared by a TYPE
 * line before it, names are [a-zA-Z_:][a-zA-Z0-9_:]*, a sample is
 * "name[{labels}] value" and the value parses as a number. */
static void
assert_well_formed(const char *text)
{
    char *copy = strdup(text);
    char *save = NULL;
    char typed[64][80];
    size_t ntyped = 0;

    assert_non_null(copy);
    assert_true(strlen(text) > 0 && text[strlen(text) - 1] == '\n');
    for (char *l = strtok_r(copy, "\n", &save); l != NULL; l = strtok_r(NULL, "\n", &save)) {
        char name[80];
        size_t n = strspn(l, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_:");
        char *sp = strrchr(l, ' ');
        char *end = NULL;
        bool found = false;

        if (strncmp(l, "# TYPE ", 7) == 0) {
            assert_true(ntyped < 64);
            sscanf(l + 7, "%79s", typed[ntyped++]);
            continue;
        }
        if (strncmp(l, "# HELP ", 7) == 0)
            continue;
        assert_true(n > 0 && !(l[0] >= '0' && l[0] <= '9'));
        assert_true(l[n] == '{' || l[n] == ' ');
        if (l[n] == '{')
            assert_non_null(strstr(l + n, "} "));
        assert_non_null(sp);
        strtod(sp + 1, &end);
        assert_true(end != sp + 1 && *end == '\0');
        snprintf(name, sizeof(name), "%.*s", (int)n, l);
        for (size_t i = 0; i < ntyped && !found; i++) {
            size_t tl = strlen(typed[i]);

            found = strcmp(name, typed[i]) == 0 ||
                    (strncmp(name, typed[i], tl) == 0 &&
                     (strcmp(name + tl, "_bucket") == 0 || strcmp(name + tl, "_sum") == 0 ||
                      strcmp(name + tl, "_count") == 0));
        }
        if (!found)
            fail_msg("sample before its TYPE: %s", l);
    }
    free(copy);
}

static void
test_metrics_counters(void **state)
{
    char *t;

    (void)state;
    metrics_add(METRICS_CONNECTIONS_TOTAL, 3);
    metrics_add(METRICS_CONNECTIONS_OPEN, 2);
    metrics_add(METRICS_CONNECTIONS_OPEN, -1);
    metrics_add(METRICS_BYTES_ACCEPTED, 12345);
    assert_int_equal(metrics_get(METRICS_CONNECTIONS_OPEN), 1);
    t = metrics_render(NULL);
    assert_line(t, "# TYPE mxd_connections_total counter");
    assert_line(t, "# TYPE mxd_connections_open gauge");
    assert_line(t, "mxd_connections_total 3");
    assert_line(t, "mxd_connections_open 1");
    assert_line(t, "mxd_bytes_accepted_total 12345");
    assert_line(t, "mxd_messages_accepted_total 0");
    /* No queue snapshot: no queue gauges. */
    assert_no_line_prefix(t, "mxd_queue_");
    assert_well_formed(t);
    free(t);
}

static void
test_metrics_families_and_escaping(void **state)
{
    char *t;

    (void)state;
    metrics_count(METRICS_F_DELIVERY_ATTEMPTS, "delivered", "lmtp:unix:/run/dovecot/lmtp");
    metrics_count(METRICS_F_DELIVERY_ATTEMPTS, "delivered", "lmtp:unix:/run/dovecot/lmtp");
    metrics_count(METRICS_F_DELIVERY_ATTEMPTS, "deferred", "backup:example.org");
    metrics_count(METRICS_F_SESSIONS_REJECTED, "a\"b\\c\nd", NULL);
    assert_int_equal(
        metrics_count_get(METRICS_F_DELIVERY_ATTEMPTS, "delivered", "lmtp:unix:/run/dovecot/lmtp"),
        2);
    assert_int_equal(metrics_count_get(METRICS_F_DELIVERY_ATTEMPTS, "bounced", "x"), 0);
    t = metrics_render(NULL);
    assert_line(t, "mxd_delivery_attempts_total{outcome=\"delivered\","
                   "destination=\"lmtp:unix:/run/dovecot/lmtp\"} 2");
    assert_line(t, "mxd_delivery_attempts_total{outcome=\"deferred\","
                   "destination=\"backup:example.org\"} 1");
    assert_line(t, "mxd_sessions_rejected_total{reason=\"a\\\"b\\\\c\\nd\"} 1");
    assert_well_formed(t);
    free(t);
}

static void
test_metrics_series_bound(void **state)
{
    char label[32];
    char *t;

    (void)state;
    for (int i = 0; i < METRICS_SERIES_MAX + 50; i++) {
        snprintf(label, sizeof(label), "9.9.%d", i);
        metrics_count(METRICS_F_RECIPIENTS_REJECTED, label, NULL);
    }
    /* The first ones have their own series, the rest share "other". */
    assert_int_equal(metrics_count_get(METRICS_F_RECIPIENTS_REJECTED, "9.9.0", NULL), 1);
    assert_int_equal(metrics_count_get(METRICS_F_RECIPIENTS_REJECTED, "other", NULL), 51);
    t = metrics_render(NULL);
    assert_line(t, "mxd_recipients_rejected_total{status=\"other\"} 51");
    assert_no_line_prefix(t, "mxd_recipients_rejected_total{status=\"9.9.300\"}");
    assert_well_formed(t);
    free(t);
}

static void
test_metrics_histogram(void **state)
{
    char *t;

    (void)state;
    metrics_observe(METRICS_H_BATCH_SIZE, 1);
    metrics_observe(METRICS_H_BATCH_SIZE, 3);
    metrics_observe(METRICS_H_BATCH_SIZE, 4);
    metrics_observe(METRICS_H_BATCH_SIZE, 1000);
    metrics_observe(METRICS_H_COMMIT_SECONDS, 0.003);
    metrics_observe(METRICS_H_COMMIT_SECONDS, -1); /* clamped to 0 */
    t = metrics_render(NULL);
    assert_line(t, "# TYPE mxd_store_batch_size histogram");
    assert_line(t, "mxd_store_batch_size_bucket{le=\"1\"} 1");
    assert_line(t, "mxd_store_batch_size_bucket{le=\"2\"} 1");
    assert_line(t, "mxd_store_batch_size_bucket{le=\"4\"} 3");
    assert_line(t, "mxd_store_batch_size_bucket{le=\"512\"} 3");
    assert_line(t, "mxd_store_batch_size_bucket{le=\"+Inf\"} 4");
    assert_line(t, "mxd_store_batch_size_sum 1008");
    assert_line(t, "mxd_store_batch_size_count 4");
    assert_line(t, "mxd_store_commit_seconds_bucket{le=\"0.0005\"} 1");
    assert_line(t, "mxd_store_commit_seconds_bucket{le=\"0.0025\"} 1");
    assert_line(t, "mxd_store_commit_seconds_bucket{le=\"0.005\"} 2");
    assert_line(t, "mxd_store_commit_seconds_sum 0.003");
    assert_line(t, "mxd_dns_lookup_seconds_count 0");
    assert_well_formed(t);
    free(t);
}

static void
test_metrics_smtp_reject(void **state)
{
    static const struct {
        const char *verb;
        int code;
        const char *reply;
    } cases[] = {
        {"RCPT", 550, "550 5.7.1 Error: relay access denied\r\n"},
        {"RCPT", 550, "550 5.1.1 Recipient address rejected: User unknown\r\n"},
        {"RCPT", 550, "550 5.1.1 Recipient address rejected: User unknown\r\n"},
        {"RCPT", 452, "452-4.5.3 Too many\r\n452 4.5.3 recipients\r\n"},
        {"RCPT", 550, "550 no enhanced code\r\n"},
        {"MAIL", 501, "501 5.5.4 not a recipient\r\n"},
        {"DATA", 421, "421 4.7.0 mx Error: too many errors\r\n"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        metrics_smtp_reject(cases[i].verb, cases[i].code, cases[i].reply, strlen(cases[i].reply));
    assert_int_equal(metrics_count_get(METRICS_F_RECIPIENTS_REJECTED, "5.7.1", NULL), 1);
    assert_int_equal(metrics_count_get(METRICS_F_RECIPIENTS_REJECTED, "5.1.1", NULL), 2);
    assert_int_equal(metrics_count_get(METRICS_F_RECIPIENTS_REJECTED, "4.5.3", NULL), 1);
    assert_int_equal(metrics_count_get(METRICS_F_RECIPIENTS_REJECTED, "550", NULL), 1);
    assert_int_equal(metrics_count_get(METRICS_F_RECIPIENTS_REJECTED, "5.5.4", NULL), 0);
    assert_int_equal(metrics_count_get(METRICS_F_SESSIONS_REJECTED, "protocol_errors", NULL), 1);
}

static void
test_metrics_queue(void **state)
{
    struct metrics_queue_row rows[3] = {
        {"example.com", "queued", 5, 0},
        {"example.org", "held", 7, 1300},
        {"example.net", "held", 1, 0}, /* no age known: no series */
    };
    struct metrics_queue q = {true, 9, 1000, 1600, rows, 3};
    struct metrics_queue bad = {false, 9, 1000, 1600, rows, 3};
    struct metrics_queue empty = {true, 0, 0, 1600, NULL, 0};
    char *t;

    (void)state;
    t = metrics_render(&q);
    assert_line(t, "mxd_queue_recipients{domain=\"example.com\",state=\"queued\"} 5");
    assert_line(t, "mxd_queue_recipients{domain=\"example.org\",state=\"held\"} 7");
    assert_line(t, "mxd_queue_messages 9");
    assert_line(t, "mxd_queue_oldest_age_seconds 600");
    assert_line(t, "mxd_queue_held_oldest_age_seconds{domain=\"example.org\"} 300");
    assert_no_line_prefix(t, "mxd_queue_held_oldest_age_seconds{domain=\"example.com\"");
    assert_no_line_prefix(t, "mxd_queue_held_oldest_age_seconds{domain=\"example.net\"");
    assert_well_formed(t);
    free(t);
    t = metrics_render(&bad);
    assert_no_line_prefix(t, "mxd_queue_");
    free(t);
    t = metrics_render(&empty);
    assert_line(t, "mxd_queue_oldest_age_seconds 0");
    assert_line(t, "mxd_queue_messages 0");
    free(t);
}

/* Issue 23: the gauges the alert rules need beside the queue's. */
static void
test_metrics_conf_gauges(void **state)
{
    const char *names[2] = {"backup.example", "b\"q.example"};
    uint64_t secs[2] = {864000, 3600};
    char *t;

    (void)state;
    metrics_set(METRICS_TLS_CERT_EXPIRY, 1900000000);
    metrics_add(METRICS_STORE_COMMIT_FAILURES, 2);
    metrics_set_lifetimes(names, secs, 2);
    t = metrics_render(NULL);
    assert_line(t, "mxd_tls_certificate_expiry_timestamp_seconds 1900000000");
    assert_line(t, "# TYPE mxd_tls_certificate_expiry_timestamp_seconds gauge");
    assert_line(t, "mxd_store_commit_failures_total 2");
    assert_line(t, "mxd_domain_lifetime_seconds{domain=\"backup.example\"} 864000");
    assert_line(t, "mxd_domain_lifetime_seconds{domain=\"b\\\"q.example\"} 3600");
    assert_well_formed(t);
    free(t);
    /* A reload replaces the list; a certificate removed reads 0. */
    metrics_set_lifetimes(names, secs, 1);
    metrics_set(METRICS_TLS_CERT_EXPIRY, 0);
    t = metrics_render(NULL);
    assert_no_line_prefix(t, "mxd_domain_lifetime_seconds{domain=\"b\\\"q");
    assert_line(t, "mxd_domain_lifetime_seconds{domain=\"backup.example\"} 864000");
    assert_line(t, "mxd_tls_certificate_expiry_timestamp_seconds 0");
    free(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_metrics_counters, reset),
        cmocka_unit_test_setup(test_metrics_families_and_escaping, reset),
        cmocka_unit_test_setup(test_metrics_series_bound, reset),
        cmocka_unit_test_setup(test_metrics_histogram, reset),
        cmocka_unit_test_setup(test_metrics_smtp_reject, reset),
        cmocka_unit_test_setup(test_metrics_queue, reset),
        cmocka_unit_test_setup(test_metrics_conf_gauges, reset),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
