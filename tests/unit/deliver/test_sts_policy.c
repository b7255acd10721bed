/* Unit tests for sts_policy: the MTA-STS (RFC 8461) TXT record and policy
 * parsers, with the reason given for each bad line, and the MX match. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "deliver/sts_policy.h"

struct txt_case {
    const char *txt;
    int want;
    const char *want_id;  /* want 1 */
    const char *want_why; /* want -1: a part of the reason */
};

static const struct txt_case txt_cases[] = {
    {"v=STSv1; id=20160831085700Z;", 1, "20160831085700Z", NULL},
    {"v=STSv1;id=abc", 1, "abc", NULL},
    {"v=STSv1; id=abc ; ext=1;", 1, "abc", NULL},
    {"v=STSv1; x=y; id=A1", 1, "A1", NULL},
    {"v=STSv1; id=a; id=b", 1, "a", NULL}, /* the first counts */
    {"v=spf1 -all", 0, NULL, NULL},
    {"v=STSv1", 0, NULL, NULL}, /* the ';' is part of the version */
    {"v=STSv2; id=1", 0, NULL, NULL},
    {"V=STSv1; id=1", 0, NULL, NULL},
    {"v=STSv1; ", -1, NULL, "no id"},
    {"v=STSv1; id=", -1, NULL, "1 to 32"},
    {"v=STSv1; id=123456789012345678901234567890123", -1, NULL, "1 to 32"},
    {"v=STSv1; id=12-3", -1, NULL, "letters and digits"},
    {"v=STSv1; id", -1, NULL, "name=value"},
    {"v=STSv1; =3; id=1", -1, NULL, "name=value"},
};

static void
test_txt(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(txt_cases) / sizeof(txt_cases[0]); i++) {
        const struct txt_case *c = &txt_cases[i];
        char id[STS_ID_MAX + 1], why[STS_WHY_MAX] = "";
        int rc = sts_txt_parse(c->txt, strlen(c->txt), id, why, sizeof(why));

        print_message("txt %s -> %d %s\n", c->txt, rc, why);
        assert_int_equal(rc, c->want);
        if (c->want == 1)
            assert_string_equal(id, c->want_id);
        if (c->want_why != NULL)
            assert_non_null(strstr(why, c->want_why));
    }
}

struct policy_case {
    const char *name;
    const char *text;
    int want;             /* 0 or MXD_EINVAL */
    enum sts_mode mode;   /* want 0 */
    uint32_t max_age;     /* want 0 */
    size_t nmx;           /* want 0 */
    const char *want_why; /* MXD_EINVAL: a part of the reason */
};

#define OK_HEAD "version: STSv1\nmode: enforce\n"

static const struct policy_case policy_cases[] = {
    {"rfc example",
     "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n"
     "mx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n",
     0, STS_MODE_ENFORCE, 604800, 3, NULL},
    {"lf, no final newline", OK_HEAD "max_age: 86400\nmx: mx.example.org", 0, STS_MODE_ENFORCE,
     86400, 1, NULL},
    {"testing", "version: STSv1\nmode: testing\nmx: a.example\nmax_age: 1\n", 0, STS_MODE_TESTING,
     1, 1, NULL},
    {"none without mx", "version: STSv1\nmode: none\nmax_age: 0\n", 0, STS_MODE_NONE, 0, 0, NULL},
    {"blank lines, spaces",
     "\n  version:STSv1  \n\nmode:\tenforce\nmx: A.Example.ORG.\n"
     "max_age: 10\n\n",
     0, STS_MODE_ENFORCE, 10, 1, NULL},
    {"unknown key ignored", OK_HEAD "max_age: 5\nmx: a.example\nfoo_bar: x y z\n", 0,
     STS_MODE_ENFORCE, 5, 1, NULL},
    {"first mode counts", OK_HEAD "mode: none\nmax_age: 5\nmx: a.example\n", 0, STS_MODE_ENFORCE, 5,
     1, NULL},
    {"max_age capped", OK_HEAD "max_age: 9999999999\nmx: a.example\n", 0, STS_MODE_ENFORCE,
     STS_MAX_AGE_MAX, 1, NULL},
    {"bad version", "version: STSv2\nmode: enforce\nmax_age: 5\nmx: a.example\n", MXD_EINVAL, 0, 0,
     0, "line 1: version: \"STSv2\" is not STSv1"},
    {"bad mode", "version: STSv1\nmode: strict\n", MXD_EINVAL, 0, 0, 0,
     "line 2: mode: unknown value \"strict\""},
    {"bad max_age", OK_HEAD "max_age: 1d\n", MXD_EINVAL, 0, 0, 0,
     "line 3: max_age: \"1d\" is not a number"},
    {"long max_age", OK_HEAD "max_age: 12345678901\n", MXD_EINVAL, 0, 0, 0,
     "line 3: max_age: \"12345678901\" is not 1 to 10 digits"},
    {"empty max_age", OK_HEAD "max_age:\n", MXD_EINVAL, 0, 0, 0, "line 3: max_age"},
    {"not key value", OK_HEAD "hello world\n", MXD_EINVAL, 0, 0, 0,
     "line 3: \"hello world\" is not \"key: value\""},
    {"html", "<html><body>404</body></html>\n", MXD_EINVAL, 0, 0, 0, "line 1: \"<html>"},
    {"wildcard inside", OK_HEAD "max_age: 5\nmx: a.*.example\n", MXD_EINVAL, 0, 0, 0,
     "line 4: mx: \"a.*.example\" is not a host name"},
    {"wildcard partial", OK_HEAD "max_age: 5\nmx: *mx.example\n", MXD_EINVAL, 0, 0, 0,
     "line 4: mx:"},
    {"bare wildcard", OK_HEAD "max_age: 5\nmx: *\n", MXD_EINVAL, 0, 0, 0, "line 4: mx:"},
    {"empty label", OK_HEAD "max_age: 5\nmx: a..example\n", MXD_EINVAL, 0, 0, 0, "line 4: mx:"},
    {"hyphen end", OK_HEAD "max_age: 5\nmx: a-.example\n", MXD_EINVAL, 0, 0, 0, "line 4: mx:"},
    {"underscore", OK_HEAD "max_age: 5\nmx: a_b.example\n", MXD_EINVAL, 0, 0, 0, "line 4: mx:"},
    {"control char", OK_HEAD "max_age: 5\x01\n", MXD_EINVAL, 0, 0, 0, "line 3: control character"},
    {"no version", "mode: enforce\nmax_age: 5\nmx: a.example\n", MXD_EINVAL, 0, 0, 0,
     "no version field"},
    {"no mode", "version: STSv1\nmax_age: 5\nmx: a.example\n", MXD_EINVAL, 0, 0, 0,
     "no mode field"},
    {"no max_age", OK_HEAD "mx: a.example\n", MXD_EINVAL, 0, 0, 0, "no max_age field"},
    {"no mx", OK_HEAD "max_age: 5\n", MXD_EINVAL, 0, 0, 0, "no mx field"},
    {"empty", "", MXD_EINVAL, 0, 0, 0, "no version field"},
};

static void
test_policy(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(policy_cases) / sizeof(policy_cases[0]); i++) {
        const struct policy_case *c = &policy_cases[i];
        struct sts_policy p;
        char why[STS_WHY_MAX] = "";
        int rc = sts_policy_parse(c->text, strlen(c->text), &p, why, sizeof(why));

        print_message("policy %s -> %d %s\n", c->name, rc, why);
        assert_int_equal(rc, c->want);
        if (c->want == 0) {
            assert_int_equal(p.mode, c->mode);
            assert_int_equal(p.max_age, c->max_age);
            assert_int_equal(p.nmx, c->nmx);
        } else {
            assert_non_null(strstr(why, c->want_why));
        }
    }
}

static void
test_policy_limits(void **state)
{
    static char big[STS_POLICY_MAX + 2];
    struct sts_policy p;
    char why[STS_WHY_MAX];
    size_t n = 0;

    (void)state;
    n += (size_t)snprintf(big, sizeof(big), "version: STSv1\nmode: enforce\nmax_age: 5\n");
    while (n + 20 < sizeof(big))
        n += (size_t)snprintf(big + n, sizeof(big) - n, "x-pad: %010zu\n", n);
    memset(big + n, '\n', sizeof(big) - 1 - n);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(sts_policy_parse(big, STS_POLICY_MAX + 1, &p, why, sizeof(why)), MXD_EINVAL);
    assert_non_null(strstr(why, "larger than 65536"));
    /* 33 mx lines: one too many */
    n = (size_t)snprintf(big, sizeof(big), "version: STSv1\nmode: enforce\nmax_age: 5\n");
    for (int i = 0; i <= STS_MX_MAX; i++)
        n += (size_t)snprintf(big + n, sizeof(big) - n, "mx: mx%d.example\n", i);
    assert_int_equal(sts_policy_parse(big, n, &p, why, sizeof(why)), MXD_EINVAL);
    assert_non_null(strstr(why, "line 36: mx: more than 32"));
}

struct match_case {
    const char *host;
    bool want;
};

static void
test_match(void **state)
{
    static const char pol[] = "version: STSv1\nmode: enforce\nmax_age: 5\n"
                              "mx: mail.example.com\nmx: *.example.net\n";
    static const struct match_case cases[] = {
        {"mail.example.com", true},
        {"MAIL.Example.COM.", true},
        {"mx1.example.net", true},
        {"a.example.net.", true},
        {"example.net", false},
        {"a.b.example.net", false},
        {".example.net", false},
        {"mail.example.co", false},
        {"xmail.example.com", false},
        {"mail.example.com.x", false},
        {"", false},
        {".", false},
    };
    struct sts_policy p;
    char why[STS_WHY_MAX];

    (void)state;
    assert_int_equal(sts_policy_parse(pol, strlen(pol), &p, why, sizeof(why)), 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        print_message("match %s\n", cases[i].host);
        assert_int_equal(sts_policy_match(&p, cases[i].host), cases[i].want);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_txt),
        cmocka_unit_test(test_policy),
        cmocka_unit_test(test_policy_limits),
        cmocka_unit_test(test_match),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
