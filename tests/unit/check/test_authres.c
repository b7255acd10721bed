/* Unit tests for authres: Authentication-Results and Received-SPF
 * formatting (RFC 8601 2.2 grammar, RFC 7208 9.1) and the header filter
 * that removes fields claiming our authserv-id (RFC 8601 section 5). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "check/authres.h"

static void
test_authres_format(void **state)
{
    struct authres ar;
    struct authres_prop spf[] = {{"smtp.mailfrom", "user@example.com"}};
    struct authres_prop dkim[] = {
        {"header.d", "example.com"}, {"header.s", "sel 1"}, {"header.b", NULL}};
    struct authres_prop dmarc[] = {{"header.from", "example.com"}};
    const char *got;
    size_t len;

    (void)state;
    authres_init(&ar, "mx.example.net");
    authres_add(&ar, "spf", "pass", NULL, spf, 1);
    authres_add(&ar, "dkim", "fail", "bad (sig) \\ here\r\n", dkim, 3);
    authres_add(&ar, "dmarc", "pass", "p=reject", dmarc, 1);
    got = authres_finish(&ar, &len);
    assert_string_equal(got, "Authentication-Results: mx.example.net;\r\n"
                             "\tspf=pass smtp.mailfrom=user@example.com;\r\n"
                             "\tdkim=fail (bad \\(sig\\) \\\\ here) header.d=example.com "
                             "header.s=\"sel 1\";\r\n"
                             "\tdmarc=pass (p=reject) header.from=example.com\r\n");
    assert_int_equal(len, strlen(got));
    authres_free(&ar);
}

static void
test_authres_none_and_quoting(void **state)
{
    struct authres ar;
    struct authres_prop p[] = {{"smtp.mailfrom", "\"odd user\"@example.com"},
                               {"smtp.helo", "a;b"},
                               {"smtp.mailfrom", "@x"}};
    size_t len;

    (void)state;
    authres_init(&ar, "mx.example.net");
    assert_string_equal(authres_finish(&ar, &len),
                        "Authentication-Results: mx.example.net; none\r\n");
    authres_free(&ar);
    authres_init(&ar, "mx.example.net");
    authres_add(&ar, "spf", "none", NULL, p, 3);
    assert_string_equal(authres_finish(&ar, &len),
                        "Authentication-Results: mx.example.net;\r\n"
                        "\tspf=none smtp.mailfrom=\"\\\"odd user\\\"@example.com\" "
                        "smtp.helo=\"a;b\" smtp.mailfrom=\"@x\"\r\n");
    authres_free(&ar);
}

static void
test_authres_received_spf(void **state)
{
    char buf[512];
    size_t n;

    (void)state;
    n = authres_received_spf(buf, sizeof(buf), "fail", "mx.example.net: domain of a@b.example",
                             "192.0.2.1", "a@b.example", "helo.example", "mx.example.net",
                             "mailfrom");
    assert_string_equal(buf,
                        "Received-SPF: fail (mx.example.net: domain of a@b.example)\r\n"
                        "\tclient-ip=192.0.2.1; envelope-from=a@b.example; helo=helo.example;\r\n"
                        "\treceiver=mx.example.net; identity=mailfrom\r\n");
    assert_int_equal(n, strlen(buf));
    assert_int_equal(authres_received_spf(buf, 20, "pass", NULL, "::1", "", "h", "r", "helo"), 0);
    n = authres_received_spf(buf, sizeof(buf), "none", NULL, "::1", "postmaster@h", "h", "r",
                             "helo");
    assert_string_equal(buf, "Received-SPF: none\r\n\tclient-ip=::1; envelope-from=postmaster@h; "
                             "helo=h;\r\n\treceiver=r; identity=helo\r\n");
}

static void
test_authres_is_ours(void **state)
{
    static const struct {
        const char *field;
        bool ours;
    } cases[] = {
        {"Authentication-Results: mx.example.net; spf=pass\r\n", true},
        {"authentication-results:MX.Example.NET;none\r\n", true},
        {"Authentication-Results : mx.example.net.; none\r\n", true},
        {"Authentication-Results:\r\n (comment (nested)) mx.example.net 1; none\r\n", true},
        {"Authentication-Results: \"mx.example.net\"; none\r\n", true},
        {"Authentication-Results: mx.example.net.evil; none\r\n", false},
        {"Authentication-Results: other.example; spf=pass\r\n", false},
        {"Authentication-Results: x.mx.example.net; none\r\n", false},
        {"Authentication-Results-Original: mx.example.net; none\r\n", false},
        {"X-Authentication-Results: mx.example.net; none\r\n", false},
        {"Subject: mx.example.net\r\n", false},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bool got = authres_is_ours(cases[i].field, strlen(cases[i].field), "mx.example.net");

        if (got != cases[i].ours)
            fail_msg("case %zu (%s): got %d", i, cases[i].field, got);
    }
}

struct sink {
    char buf[256 * 1024];
    size_t len;
};

static void
sink_emit(void *arg, const char *data, size_t len)
{
    struct sink *s = arg;

    assert_true(s->len + len < sizeof(s->buf));
    memcpy(s->buf + s->len, data, len);
    s->len += len;
    s->buf[s->len] = '\0';
}

/* Runs msg through the filter split at every chunk size from 1 to 17 and
 * in one piece; every split must give want. */
static void
filter_check(const char *msg, const char *want, unsigned want_removed)
{
    for (size_t step = 1; step <= 18; step++) {
        struct authres_filter *f = calloc(1, sizeof(*f));
        struct sink *s = calloc(1, sizeof(*s));
        size_t len = strlen(msg), chunk = step == 18 ? len : step;

        authres_filter_init(f, "mx.example.net", sink_emit, s);
        for (size_t off = 0; off < len; off += chunk)
            authres_filter_feed(f, msg + off, off + chunk <= len ? chunk : len - off);
        authres_filter_end(f);
        if (strcmp(s->buf, want) != 0)
            fail_msg("step %zu: got\n%.300s\nwant\n%.300s", step, s->buf, want);
        assert_int_equal(f->removed, want_removed);
        authres_filter_free(f);
        free(f);
        free(s);
    }
}

static void
test_authres_filter(void **state)
{
    (void)state;
    /* Ours removed (folded, any case), others kept, body untouched. */
    filter_check("Received: from x\r\n"
                 "Authentication-Results: mx.example.net;\r\n"
                 "\tspf=pass smtp.mailfrom=a@b\r\n"
                 "AUTHENTICATION-RESULTS: other.example; dkim=pass\r\n"
                 "authentication-results: MX.EXAMPLE.NET; none\r\n"
                 "Subject: hi\r\n"
                 " continued\r\n"
                 "\r\n"
                 "Authentication-Results: mx.example.net; body line kept\r\n",
                 "Received: from x\r\n"
                 "AUTHENTICATION-RESULTS: other.example; dkim=pass\r\n"
                 "Subject: hi\r\n"
                 " continued\r\n"
                 "\r\n"
                 "Authentication-Results: mx.example.net; body line kept\r\n",
                 2);
    /* Last field of a header without body, and a message without header. */
    filter_check("Subject: x\r\nAuthentication-Results: mx.example.net; none\r\n", "Subject: x\r\n",
                 1);
    filter_check("\r\nbody\r\n", "\r\nbody\r\n", 0);
    filter_check("", "", 0);
    /* The authserv-id only on the continuation line. */
    filter_check("Authentication-Results:\r\n mx.example.net; none\r\nTo: a\r\n\r\nx",
                 "To: a\r\n\r\nx", 1);
}

static void
test_authres_filter_long_field(void **state)
{
    static char msg[3 * AUTHRES_FIELD_MAX], want[3 * AUTHRES_FIELD_MAX];
    size_t n;

    (void)state;
    /* Longer than the hold: judged on its start, dropped or passed whole. */
    n = (size_t)snprintf(msg, sizeof(msg), "Authentication-Results: mx.example.net; dkim=pass");
    for (int i = 0; i < 600; i++)
        n += (size_t)snprintf(msg + n, sizeof(msg) - n, "\r\n x=%07d", i);
    snprintf(msg + n, sizeof(msg) - n, "\r\nTo: a\r\n\r\nbody\r\n");
    filter_check(msg, "To: a\r\n\r\nbody\r\n", 1);
    memcpy(msg, "X-Long", 6);
    strcpy(want, msg);
    filter_check(msg, want, 0);
}

/* Issue 14 item 6: a field claiming our authserv-id never survives, however
 * it is shaped or fed. */
static void
test_authres_issue14_long_first_line(void **state)
{
    static char msg[16384];
    size_t n;

    (void)state;
    /* One line longer than the old 4 KiB window, fed in one piece too: the
     * old filter judged it on "A" alone and passed it. */
    n = (size_t)snprintf(msg, sizeof(msg), "Authentication-Results: mx.example.net; dkim=pass x=");
    memset(msg + n, 'a', 6000);
    n += 6000;
    snprintf(msg + n, sizeof(msg) - n, "\r\nTo: a\r\n\r\nbody\r\n");
    filter_check(msg, "To: a\r\n\r\nbody\r\n", 1);
    /* The same with the authserv-id on a long continuation line. */
    n = (size_t)snprintf(msg, sizeof(msg), "Authentication-Results:\r\n mx.example.net; x=");
    memset(msg + n, 'b', 6000);
    n += 6000;
    snprintf(msg + n, sizeof(msg) - n, "\r\nTo: a\r\n\r\nbody\r\n");
    filter_check(msg, "To: a\r\n\r\nbody\r\n", 1);
}

static void
test_authres_issue14_long_comment(void **state)
{
    static char msg[16384];
    size_t n;

    (void)state;
    /* A comment before the authserv-id that fills the old window. */
    n = (size_t)snprintf(msg, sizeof(msg), "Subject: s\r\nAuthentication-Results: (");
    for (int i = 0; i < 500; i++)
        n += (size_t)snprintf(msg + n, sizeof(msg) - n, "comment \r\n ");
    snprintf(msg + n, sizeof(msg) - n, ") mx.example.net; spf=pass\r\nTo: a\r\n\r\nbody\r\n");
    filter_check(msg, "Subject: s\r\nTo: a\r\n\r\nbody\r\n", 1);
}

static void
test_authres_issue14_too_long_to_judge(void **state)
{
    char *msg = malloc(3 * AUTHRES_FIELD_MAX), *want = malloc(3 * AUTHRES_FIELD_MAX);
    size_t n;

    (void)state;
    assert_true(msg != NULL && want != NULL);
    /* An Authentication-Results field longer than the bound is removed
     * whatever it claims: it cannot be judged in bounded memory. */
    n = (size_t)snprintf(msg, 3 * AUTHRES_FIELD_MAX, "Authentication-Results: (");
    memset(msg + n, 'c', AUTHRES_FIELD_MAX + 10);
    n += AUTHRES_FIELD_MAX + 10;
    snprintf(msg + n, 3 * AUTHRES_FIELD_MAX - n, ") other.example; none\r\nTo: a\r\n\r\nx");
    filter_check(msg, "To: a\r\n\r\nx", 1);
    /* Any other field that long is kept as it is. */
    memcpy(msg, "X-Authentication-Result:", 24);
    strcpy(want, msg);
    filter_check(msg, want, 0);
    free(msg);
    free(want);
}

static void
test_authres_from(void **state)
{
    static const struct {
        const char *value;
        int n;            /* -1: malformed */
        const char *want; /* the domains, space-separated */
    } cases[] = {
        {" user@Example.COM\r\n", 1, "example.com"},
        {" \"Doe, John\" <john@sub.example.org>\r\n", 1, "sub.example.org"},
        {" John (at@home.example) <j@b.example.>\r\n", 1, "b.example"},
        {" \"a@fake.example\" <x@real.example>", 1, "real.example"},
        /* issue 14 item 7: every author counts (RFC 7489 6.6.1) */
        {" a@one.example, b@two.example", 2, "one.example two.example"},
        {" A <a@one.example>,\r\n \"B, b\" <b@Two.Example>, c@one.example", 2,
         "one.example two.example"},
        {" <a@one.example> <b@two.example>", 2, "one.example two.example"},
        {" friends: a@one.example, B <b@two.example>;, c@three.example", 3,
         "one.example two.example three.example"},
        {" <@route.example,@r2.example:a@one.example>", 1, "one.example"},
        {" a@ one . example (c)", 1, "one.example"},
        {" a@one..", 1, "one"},
        {" undisclosed:;", 0, ""},
        {" user@[192.0.2.1]", 0, ""},
        {" nobody", 0, ""},
        {"", 0, ""},
        {" a@1.x, a@2.x, a@3.x, a@4.x, a@5.x", -1, ""},
        {" a@1.x, a@2.x, a@1.x, a@2.x", 2, "1.x 2.x"},
    };
    char out[4][AUTHRES_DOMAIN_MAX];
    char *longdom = malloc(AUTHRES_DOMAIN_MAX + 16);

    (void)state;
    assert_non_null(longdom);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int n = authres_from_domains(cases[i].value, out, 4);
        char got[1024] = "";

        for (int k = 0; k < n; k++)
            snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s", k ? " " : "", out[k]);
        if (n != cases[i].n || strcmp(got, cases[i].want) != 0)
            fail_msg("case %zu (%s): n=%d got=%s", i, cases[i].value, n, got);
    }
    /* a domain that cannot be a domain name (over 255 octets) */
    strcpy(longdom, " a@");
    memset(longdom + 3, 'd', AUTHRES_DOMAIN_MAX);
    longdom[AUTHRES_DOMAIN_MAX + 3] = '\0';
    assert_int_equal(authres_from_domains(longdom, out, 4), -1);
    free(longdom);
}

static void
test_authres_filter_from(void **state)
{
    struct authres_filter f;
    static struct sink s;
    const char *m = "From: A <a@Example.org>\r\nFrom: b@c\r\nTo: x\r\n\r\nFrom: no@body\r\n";

    (void)state;
    memset(&f, 0, sizeof(f));
    authres_filter_init(&f, "mx.example.net", sink_emit, &s);
    authres_filter_feed(&f, m, strlen(m));
    authres_filter_end(&f);
    assert_int_equal(f.nfrom, 2);
    assert_false(f.from_overlong);
    assert_string_equal(f.from, " A <a@Example.org>\r\n");
    assert_string_equal(s.buf, m);
    authres_filter_free(&f);
}

/* Issue 14 item 7: a From: longer than the old 4 KiB copy is kept whole;
 * one longer than the bound is reported, and passed on unchanged. */
static void
test_authres_issue14_long_from(void **state)
{
    char *m = malloc(2 * AUTHRES_FIELD_MAX);
    struct authres_filter f;
    static struct sink s;
    char dom[2][AUTHRES_DOMAIN_MAX];
    size_t n;

    (void)state;
    assert_non_null(m);
    n = strlen(strcpy(m, "From: \""));
    memset(m + n, 'x', 6000);
    n += 6000;
    n += strlen(strcpy(m + n, "\" <a@protected.example>\r\nTo: y\r\n\r\nbody"));
    memset(&f, 0, sizeof(f));
    authres_filter_init(&f, "mx.example.net", sink_emit, &s);
    authres_filter_feed(&f, m, n);
    authres_filter_end(&f);
    assert_false(f.from_overlong);
    assert_int_equal(authres_from_domains(f.from, dom, 2), 1);
    assert_string_equal(dom[0], "protected.example");
    assert_memory_equal(s.buf, m, n);
    authres_filter_free(&f);

    n = strlen(strcpy(m, "From: \""));
    memset(m + n, 'x', AUTHRES_FIELD_MAX);
    n += AUTHRES_FIELD_MAX;
    n += strlen(strcpy(m + n, "\" <a@protected.example>\r\nTo: y\r\n\r\nbody"));
    s.len = 0;
    authres_filter_init(&f, "mx.example.net", sink_emit, &s);
    authres_filter_feed(&f, m, n);
    authres_filter_end(&f);
    assert_true(f.from_overlong);
    assert_int_equal(f.nfrom, 1);
    assert_memory_equal(s.buf, m, n);
    authres_filter_free(&f);
    free(m);
}

/* Issue 14 item 9: Received: fields are counted in the header only, folded
 * or not, any case. */
static void
test_authres_issue14_hop_count(void **state)
{
    const char *m = "Received: from a\r\n\tby b\r\nreceived : x\r\nX-Received: no\r\n"
                    "Subject: Received: no\r\nRECEIVED:y\r\n\r\nReceived: body\r\n";
    struct authres_filter f;
    static struct sink s;

    (void)state;
    for (size_t step = 1; step <= strlen(m); step++) {
        memset(&f, 0, sizeof(f));
        s.len = 0;
        authres_filter_init(&f, "mx.example.net", sink_emit, &s);
        for (size_t off = 0; off < strlen(m); off += step)
            authres_filter_feed(&f, m + off, off + step <= strlen(m) ? step : strlen(m) - off);
        authres_filter_end(&f);
        assert_int_equal(f.nreceived, 3);
        assert_string_equal(s.buf, m);
        authres_filter_free(&f);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_authres_format),
        cmocka_unit_test(test_authres_none_and_quoting),
        cmocka_unit_test(test_authres_received_spf),
        cmocka_unit_test(test_authres_is_ours),
        cmocka_unit_test(test_authres_filter),
        cmocka_unit_test(test_authres_filter_long_field),
        cmocka_unit_test(test_authres_issue14_long_first_line),
        cmocka_unit_test(test_authres_issue14_long_comment),
        cmocka_unit_test(test_authres_issue14_too_long_to_judge),
        cmocka_unit_test(test_authres_from),
        cmocka_unit_test(test_authres_filter_from),
        cmocka_unit_test(test_authres_issue14_long_from),
        cmocka_unit_test(test_authres_issue14_hop_count),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
