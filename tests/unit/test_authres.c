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

#include "authres.h"

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
    char buf[16384];
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
            fail_msg("step %zu: got\n%s\nwant\n%s", step, s->buf, want);
        assert_int_equal(f->removed, want_removed);
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

static void
test_authres_from(void **state)
{
    static const struct {
        const char *value;
        const char *domain; /* NULL: none */
    } cases[] = {
        {" user@Example.COM\r\n", "example.com"},
        {" \"Doe, John\" <john@sub.example.org>\r\n", "sub.example.org"},
        {" John (at@home.example) <j@b.example.>\r\n", "b.example"},
        {" \"a@fake.example\" <x@real.example>", "real.example"},
        {" a@one.example, b@two.example", "one.example"},
        {" undisclosed:;", NULL},
        {" user@[192.0.2.1]", NULL},
        {" nobody", NULL},
        {"", NULL},
    };
    char out[AUTHRES_DOMAIN_MAX];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bool ok = authres_from_domain(cases[i].value, out, sizeof(out));

        if (ok != (cases[i].domain != NULL) || (ok && strcmp(out, cases[i].domain) != 0))
            fail_msg("case %zu (%s): ok=%d out=%s", i, cases[i].value, ok, ok ? out : "");
    }
}

static void
test_authres_filter_from(void **state)
{
    struct authres_filter f;
    struct sink s = {.len = 0};
    const char *m = "From: A <a@Example.org>\r\nFrom: b@c\r\nTo: x\r\n\r\nFrom: no@body\r\n";

    (void)state;
    authres_filter_init(&f, "mx.example.net", sink_emit, &s);
    authres_filter_feed(&f, m, strlen(m));
    authres_filter_end(&f);
    assert_int_equal(f.nfrom, 2);
    assert_string_equal(f.from, " A <a@Example.org>\r\n");
    assert_string_equal(s.buf, m);
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
        cmocka_unit_test(test_authres_from),
        cmocka_unit_test(test_authres_filter_from),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
